"""Durability of a queue deeper than its in-memory window: kill -9 during a
fill and during a drain loses no confirmed message, keeps the queue's order
and sets redelivered flags right; after a restart the backlog is read back
from the message log (more than one segment of it) as consumers reach it,
and a purge or delete of it is logged without reading it back.

The broker runs with a window of 100 messages; bodies of 8 KiB make 10,000
messages span two 64 MiB log segments."""
import threading
import time
import urllib.parse

import pika
import pytest

from conftest import Broker

WINDOW = 100
BODY = 8 << 10
PERSISTENT = pika.BasicProperties(delivery_mode=pika.DeliveryMode.Persistent)


@pytest.fixture
def deep(tmp_path):
    b = Broker(tmp_path, {"WARREN_STORE__PAGE_WINDOW_MESSAGES": str(WINDOW)})
    yield b
    b.stop()


def body(worker, i):
    head = f"{worker}-{i}-".encode()
    return head + b"x" * (BODY - len(head))


def key(b):
    w, i, _ = b.split(b"-", 2)
    return int(w), int(i)


def queue_info(b, name):
    status, q = b.api(f"/api/queues/{urllib.parse.quote('/', safe='')}/{name}")
    assert status == 200, q
    return q


def publisher(port, stop, confirmed, worker, limit):
    """Publish with confirms until stopped, killed or at `limit`."""
    try:
        c = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", port))
        ch = c.channel()
        ch.confirm_delivery()
        for i in range(limit):
            if stop.is_set():
                break
            ch.basic_publish("", "deep", body(worker, i), PERSISTENT)  # returns once confirmed
            confirmed.append(body(worker, i))
        c.close()
    except Exception:
        pass  # the broker was killed


def fill(b, workers, limit, until=None, kill=False):
    """Publish from `workers` threads; with `kill`, kill -9 the broker once
    `until` messages are confirmed. Returns the confirmed bodies per worker."""
    stop = threading.Event()
    confirmed = {w: [] for w in range(workers)}
    threads = [threading.Thread(target=publisher, args=(b.amqp_port, stop, confirmed[w], w, limit))
               for w in range(workers)]
    for t in threads:
        t.start()
    if kill:
        deadline = time.time() + 120
        while sum(map(len, confirmed.values())) < until and time.time() < deadline:
            time.sleep(0.02)
        b.kill9()
        stop.set()
    for t in threads:
        t.join(120)
    return confirmed


def take(ch, n, ack=True, prefetch=200, timeout=60):
    """Consume n messages (acked unless `ack` is false); returns
    (body, redelivered, delivery tag)."""
    ch.basic_qos(prefetch_count=prefetch)
    out = []
    deadline = time.time() + timeout
    for method, _props, b in ch.consume("deep", inactivity_timeout=2):
        if method is None:
            if time.time() > deadline:
                break
            continue
        out.append((b, method.redelivered, method.delivery_tag))
        if ack:
            ch.basic_ack(method.delivery_tag)
        if len(out) == n:
            break
    return out


def declare(b):
    c = b.connect()
    c.channel().queue_declare(queue="deep", durable=True)
    c.close()


def test_kill9_during_a_deep_fill_loses_no_confirmed_message(deep):
    declare(deep)
    confirmed = fill(deep, workers=3, limit=5000, until=10_000, kill=True)
    total = sum(map(len, confirmed.values()))
    assert total >= 10_000, "publishers made too little progress before the kill"
    deep.start()
    q = queue_info(deep, "deep")
    assert q["messages"] >= total
    assert q["messages_ready_ram"] <= WINDOW + 64, "the backlog stays in the log"
    c = deep.connect()
    got = take(c.channel(), q["messages"])
    assert len(got) == q["messages"]
    bodies = [b for b, _, _ in got]
    assert len(set(bodies)) == len(bodies), "duplicates after recovery"
    seen = set(bodies)
    for w, sent in confirmed.items():
        missing = [key(b) for b in sent if b not in seen]
        assert not missing, f"confirmed but lost: {missing[:5]}"
        mine = [key(b)[1] for b in bodies if key(b)[0] == w]
        assert mine == sorted(mine), f"publisher {w}'s messages out of order"
    # After kill -9 every recovered message may have been delivered.
    assert all(r for _, r, _ in got)
    c.close()
    assert queue_info(deep, "deep")["messages"] == 0


def test_deep_drain_then_clean_stop_and_kill9_keeps_order_and_flags(deep):
    declare(deep)
    n = 10_000
    confirmed = fill(deep, workers=1, limit=n)[0]
    assert len(confirmed) == n
    deep.restart()
    # Read 3,000 back from the log (acked) and 200 more left unacked.
    c = deep.connect()
    ch = c.channel()
    acked = take(ch, 3000)
    held = take(ch, 200, ack=False)
    assert [b for b, _, _ in acked + held] == confirmed[:3200]
    assert not any(r for _, r, _ in acked + held)
    c.close()  # the 200 go back, redelivered
    deep.restart()
    c = deep.connect()
    ch = c.channel()
    assert queue_info(deep, "deep")["messages"] == n - 3000
    again = take(ch, 2000)
    assert [b for b, _, _ in again] == confirmed[3000:5000]
    assert [r for _, r, _ in again] == [True] * 200 + [False] * 1800
    # kill -9 mid-drain, with deliveries out and unacked: nothing not acked
    # is lost, order is kept, and everything is flagged redelivered.
    out = take(ch, 150, ack=False)  # within the prefetch of 200
    assert [b for b, _, _ in out] == confirmed[5000:5150]
    deep.kill9()
    deep.start()
    c = deep.connect()
    left = queue_info(deep, "deep")["messages"]
    rest = take(c.channel(), left)
    bodies = [b for b, _, _ in rest]
    # Acks are not waited for on disk: a few acked just before the kill
    # may come back, but only from the front, and nothing after it is lost.
    assert bodies == confirmed[n - len(bodies):]
    assert len(bodies) >= n - 5000
    assert all(r for _, r, _ in rest)
    c.close()


def test_purge_and_delete_of_a_recovered_backlog_last_and_spare_other_queues(deep):
    """A backlog read from the log after a restart is purged or deleted
    without being read back; the removals are in the log (a restart brings
    nothing back), the page directory and log shrink, and another queue
    keeps its messages."""
    c = deep.connect()
    ch = c.channel()
    for q in ("deep", "gone", "other"):
        ch.queue_declare(queue=q, durable=True)
    ch.confirm_delivery()
    for i in range(3000):
        for q in ("deep", "gone", "other"):
            ch.basic_publish("", q, body(0, i)[:64], PERSISTENT)
    c.close()
    deep.restart()
    c = deep.connect()
    ch = c.channel()
    assert ch.queue_purge("deep").method.message_count == 3000
    assert ch.queue_delete("gone").method.message_count == 3000
    assert ch.queue_declare(queue="other", passive=True).method.message_count == 3000
    c.close()
    deep.restart()
    c = deep.connect()
    ch = c.channel()
    assert ch.queue_declare(queue="deep", passive=True).method.message_count == 0
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
        ch.queue_declare(queue="gone", passive=True)
    assert e.value.reply_code == 404
    c.close()
    c = deep.connect()
    ch = c.channel()
    ch.basic_qos(prefetch_count=500)
    bodies = []
    for method, _props, b in ch.consume("other", inactivity_timeout=5):
        if method is None:
            break
        bodies.append(b)
        ch.basic_ack(method.delivery_tag)
        if len(bodies) == 3000:
            break
    assert bodies == [body(0, i)[:64] for i in range(3000)]
    c.close()
