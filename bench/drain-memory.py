#!/usr/bin/env python3
"""Fill one queue with transient messages, drain it (purge, then a second
fill consumed by a consumer), and print the broker's RSS at each phase and
each second for 30 s after each drain (issue 10: memory goes back after a
backlog drains).

usage: drain-memory.py PORT PID [TOTAL_MIB] [BODY_BYTES]
"""
import sys
import time

import pika

port, pid = int(sys.argv[1]), int(sys.argv[2])
total = int(sys.argv[3]) * (1 << 20) if len(sys.argv) > 3 else 3 << 30
size = int(sys.argv[4]) if len(sys.argv) > 4 else 4096
n = total // size
body = b"x" * size


def rss_mib():
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def fill(ch):
    t = time.time()
    for i in range(n):
        ch.basic_publish("", "drain.q", body)
    # Wait until the broker has taken every message.
    while ch.queue_declare("drain.q", passive=True).method.message_count < n:
        time.sleep(0.2)
    return time.time() - t


def settle(label):
    samples = []
    for s in range(31):
        samples.append(rss_mib())
        if s < 30:
            time.sleep(1)
    print(f"{label}: RSS at 0/5/10/20/30 s after: "
          + " / ".join(f"{samples[i]:.0f}" for i in (0, 5, 10, 20, 30)) + " MiB")
    return samples[-1]


conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", port, heartbeat=0))
ch = conn.channel()
ch.queue_declare("drain.q")
print(f"idle RSS {rss_mib():.0f} MiB; {n} messages of {size} B = {n * size >> 20} MiB")
secs = fill(ch)
print(f"filled in {secs:.1f} s; RSS {rss_mib():.0f} MiB")
ch.queue_purge("drain.q")
settle("purged")
secs = fill(ch)
print(f"filled again in {secs:.1f} s; RSS {rss_mib():.0f} MiB")
got = 0
for m, _, _ in ch.consume("drain.q", auto_ack=True, inactivity_timeout=5):
    if m is None:
        break
    got += 1
ch.cancel()
assert got == n, (got, n)
settle("consumed")
conn.close()
