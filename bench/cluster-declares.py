#!/usr/bin/env python3
"""Definition changes per second through a cluster: durable queue.declare
(each one a replicated change), from one connection one at a time (latency:
every declare waits for its commit) and from CONNS connections spread over
the nodes at once (throughput). Then the queues are deleted.

Usage: bench/cluster-declares.py LABEL N CONNS PORT [PORT...]
Prints one line per phase: label, phase, declares/s, p50 and p99 latency."""
import statistics
import sys
import threading
import time

import pika


def declare_all(port, names, lat):
    conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", port, heartbeat=0))
    ch = conn.channel()
    for n in names:
        t = time.perf_counter()
        ch.queue_declare(n, durable=True)
        lat.append(time.perf_counter() - t)
    conn.close()


def delete_all(port, names):
    conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", port, heartbeat=0))
    ch = conn.channel()
    for n in names:
        ch.queue_delete(n)
    conn.close()


def report(label, phase, n, secs, lat):
    lat = sorted(lat)
    p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))]
    print(f"{label:<24} {phase:<22} {n / secs:>9.0f} declares/s  p50 {statistics.median(lat) * 1000:6.2f} ms  p99 {p99 * 1000:6.2f} ms",
          flush=True)


def main():
    label, n, conns, ports = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), [int(p) for p in sys.argv[4:]]
    # One connection, one node (a follower or the leader: whichever is first).
    names = [f"bench.decl.seq.{i}" for i in range(n)]
    lat = []
    t = time.perf_counter()
    declare_all(ports[0], names, lat)
    report(label, "1 conn", n, time.perf_counter() - t, lat)
    delete_all(ports[0], names)
    # CONNS connections over every node.
    per = n // conns
    lat, threads = [], []
    batches = [[f"bench.decl.par.{c}.{i}" for i in range(per)] for c in range(conns)]
    t = time.perf_counter()
    for c in range(conns):
        th = threading.Thread(target=declare_all, args=(ports[c % len(ports)], batches[c], lat))
        th.start()
        threads.append(th)
    for th in threads:
        th.join(600)
    report(label, f"{conns} conns, all nodes", per * conns, time.perf_counter() - t, lat)
    for c in range(conns):
        delete_all(ports[c % len(ports)], batches[c])


if __name__ == "__main__":
    main()
