"""Durability: durable definitions and persistent messages survive a clean
restart and kill -9; confirmed messages are never lost; a torn log tail is
truncated at start-up."""
import os
import subprocess
import threading
import time
from pathlib import Path

import pika
import pytest

from conftest import BIN, Broker, drain

PERSISTENT = pika.BasicProperties(delivery_mode=pika.DeliveryMode.Persistent)


@pytest.fixture
def fresh(tmp_path):
    b = Broker(tmp_path)
    yield b
    b.stop()


def test_durable_queue_and_persistent_message_survive_restart(fresh):
    c = fresh.connect()
    ch = c.channel()
    ch.queue_declare(queue="task_queue", durable=True)
    ch.queue_declare(queue="transient_queue", durable=False)
    ch.exchange_declare("durable_x", "topic", durable=True)
    ch.exchange_declare("transient_x", "fanout", durable=False)
    ch.queue_bind("task_queue", "durable_x", "jobs.#")
    ch.confirm_delivery()
    ch.basic_publish("", "task_queue", b"persistent", PERSISTENT)
    ch.basic_publish("", "task_queue", b"transient", pika.BasicProperties(delivery_mode=1))
    ch.basic_publish("", "transient_queue", b"lost on restart", PERSISTENT)
    c.close()
    fresh.restart()
    ch = fresh.connect().channel()
    assert ch.queue_declare(queue="task_queue", passive=True).method.message_count == 1
    m, props, body = ch.basic_get("task_queue", auto_ack=True)
    assert body == b"persistent" and props.delivery_mode == 2
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
        ch.queue_declare(queue="transient_queue", passive=True)
    assert e.value.reply_code == 404
    ch = fresh.connect().channel()
    ch.exchange_declare("durable_x", "topic", passive=True)
    with pytest.raises(pika.exceptions.ChannelClosedByBroker):
        ch.exchange_declare("transient_x", "fanout", passive=True)
    # The durable binding came back too.
    ch = fresh.connect().channel()
    ch.confirm_delivery()
    ch.basic_publish("durable_x", "jobs.nightly", b"via binding", PERSISTENT, mandatory=True)
    assert ch.basic_get("task_queue", auto_ack=True)[2] == b"via binding"
    assert fresh.wait_log("recovered")


def test_ten_thousand_messages_half_acked_then_restart(fresh):
    c = fresh.connect()
    ch = c.channel()
    ch.queue_declare(queue="bulk", durable=True)
    ch.confirm_delivery()
    for i in range(10_000):
        ch.basic_publish("", "bulk", str(i).encode(), PERSISTENT)
    # Ack exactly the first half (manual acks, prefetch bounded).
    ch.basic_qos(prefetch_count=500)
    acked = 0
    for method, props, body in ch.consume("bulk", inactivity_timeout=5):
        assert method is not None
        assert body == str(acked).encode()
        ch.basic_ack(method.delivery_tag)
        acked += 1
        if acked == 5000:
            break
    ch.cancel()  # unacked prefetched messages go back, in order
    c.close()
    fresh.restart()
    ch = fresh.connect().channel()
    assert ch.queue_declare(queue="bulk", passive=True).method.message_count == 5000
    got = drain(ch, "bulk", 5000, timeout=30)
    assert got == [str(i).encode() for i in range(5000, 10_000)]


def test_delivered_unacked_come_back_redelivered(fresh):
    """After a clean stop the flags are exact. After kill -9 every recovered
    message is flagged redelivered ("may have been delivered", as AMQP
    defines the flag): delivered markers are not fsynced before a delivery
    goes out, so the newest may be missing after a crash."""
    def fill(name):
        ch = fresh.connect().channel()
        ch.queue_declare(queue=name, durable=True)
        ch.confirm_delivery()
        for i in range(3):
            ch.basic_publish("", name, str(i).encode(), PERSISTENT)
        m, _, body = ch.basic_get(name)  # delivered, never acked
        assert body == b"0"

    def flags(name):
        ch = fresh.connect().channel()
        seen = []
        for _ in range(3):
            m, _, body = ch.basic_get(name, auto_ack=True)
            seen.append((body, m.redelivered))
        return seen

    fill("inflight-clean")
    fresh.restart()
    assert flags("inflight-clean") == [(b"0", True), (b"1", False), (b"2", False)]
    fill("inflight")
    fresh.kill9()
    fresh.start()
    assert flags("inflight") == [(b"0", True), (b"1", True), (b"2", True)]
    # The crash flag lasts one recovery: after a clean stop it is exact again.
    fill("inflight-after")
    fresh.restart()
    assert flags("inflight-after") == [(b"0", True), (b"1", False), (b"2", False)]


def publisher(port, stop, confirmed, worker):
    """Publish with confirms until the broker dies; record confirmed bodies."""
    try:
        c = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", port))
        ch = c.channel()
        ch.confirm_delivery()
        i = 0
        while not stop.is_set():
            body = f"{worker}-{i}".encode()
            ch.basic_publish("", "crash", body, PERSISTENT)  # returns once confirmed
            confirmed.append(body)
            i += 1
    except Exception:
        pass  # the broker was killed


def test_kill_minus_9_loses_no_confirmed_message(fresh):
    c = fresh.connect()
    c.channel().queue_declare(queue="crash", durable=True)
    c.close()
    stop = threading.Event()
    confirmed = {w: [] for w in range(4)}
    threads = [threading.Thread(target=publisher, args=(fresh.amqp_port, stop, confirmed[w], w))
               for w in range(4)]
    for t in threads:
        t.start()
    deadline = time.time() + 10
    while sum(len(v) for v in confirmed.values()) < 2000 and time.time() < deadline:
        time.sleep(0.05)
    fresh.kill9()
    stop.set()
    for t in threads:
        t.join(10)
    total_confirmed = sum(len(v) for v in confirmed.values())
    assert total_confirmed >= 2000, "publishers made too little progress before the kill"
    fresh.start()
    ch = fresh.connect().channel()
    count = ch.queue_declare(queue="crash", passive=True).method.message_count
    got = drain(ch, "crash", count, timeout=60)
    assert len(got) == count
    assert len(set(got)) == len(got), "duplicates after recovery"
    got_set = set(got)
    for w, bodies in confirmed.items():
        missing = [b for b in bodies if b not in got_set]
        assert not missing, f"confirmed but lost: {missing[:5]}"
        # Per publisher, recovered messages keep publish order.
        mine = [b for b in got if b.startswith(f"{w}-".encode())]
        assert mine == sorted(mine, key=lambda b: int(b.split(b"-")[1]))


def test_corrupt_tail_is_truncated_and_the_rest_recovered(fresh):
    c = fresh.connect()
    ch = c.channel()
    ch.queue_declare(queue="tail", durable=True)
    ch.confirm_delivery()
    for i in range(100):
        ch.basic_publish("", "tail", str(i).encode(), PERSISTENT)
    c.close()
    fresh.stop()
    segs = sorted((Path(fresh.tmp_path) / "data" / "messages").glob("*.seg"))
    newest = segs[-1]
    data = bytearray(newest.read_bytes())
    # Tear the last record and garble bytes inside the one before it.
    data = data[:-3]
    data[-30] ^= 0xFF
    newest.write_bytes(bytes(data))
    fresh.start()
    ch = fresh.connect().channel()
    got = drain(ch, "tail", 98, timeout=10)
    assert got == [str(i).encode() for i in range(98)]
    assert ch.basic_get("tail")[0] is None
    assert fresh.wait_log("truncating")


def test_second_broker_on_same_directory_is_refused(fresh):
    env = dict(os.environ, WARREN_AMQP__BIND="127.0.0.1:0", WARREN_STORE__DIR=str(Path(fresh.tmp_path) / "data"))
    p = subprocess.run([BIN], env=env, capture_output=True, text=True, timeout=30)
    assert p.returncode != 0
    assert "in use by another Warren process" in p.stderr
    # The first broker is unaffected.
    fresh.connect().channel().queue_declare(queue="", exclusive=True)


def test_large_persistent_message_round_trips(fresh):
    c = fresh.connect()
    ch = c.channel()
    ch.queue_declare(queue="large", durable=True)
    ch.confirm_delivery()
    body = os.urandom(1 << 20) * 64  # 64 MiB
    ch.basic_publish("", "large", body, PERSISTENT)
    c.close()
    fresh.restart()
    ch = fresh.connect().channel()
    m, _, got = ch.basic_get("large", auto_ack=True)
    assert len(got) == len(body) and got == body


def test_full_disk_refuses_persistent_publishes_clearly(tmp_path, small_disk):
    # The disk alarm (on at once on a 6 MiB disk) is set off here: this test
    # is about the store's own answer when a write finds the disk full.
    b = Broker(tmp_path, {"WARREN_STORE__DIR": str(small_disk / "data"), "WARREN_DISK__FREE_LIMIT_BYTES": "0"})
    try:
        c = b.connect()
        ch = c.channel()
        ch.queue_declare(queue="full", durable=True)
        ch.confirm_delivery()
        confirmed = 0
        body = b"x" * (512 * 1024)
        with pytest.raises((pika.exceptions.NackError, pika.exceptions.ChannelClosedByBroker)) as e:
            for _ in range(40):  # 20 MiB into a 6 MiB disk
                ch.basic_publish("", "full", body, PERSISTENT)
                confirmed += 1
        assert 0 < confirmed < 12
        if isinstance(e.value, pika.exceptions.ChannelClosedByBroker):
            assert e.value.reply_code == 506
        assert b.wait_log("message store write failed")
        # Nothing confirmed was lost, and the broker still serves.
        ch = b.connect().channel()
        assert ch.queue_declare(queue="full", passive=True).method.message_count >= confirmed
        ch.queue_declare(queue="still-works")
        ch.basic_publish("", "still-works", b"transient")
        assert ch.basic_get("still-works", auto_ack=True)[2] == b"transient"
    finally:
        b.stop()


def test_ttl_counts_again_after_restart_and_dead_letters(fresh):
    """Stored messages keep their TTL across a restart (counted from the
    restart, since the log keeps no arrival time); with a DLX they move on
    when it passes."""
    c = fresh.connect()
    ch = c.channel()
    ch.queue_declare("after-dead", durable=True)
    ch.queue_declare("after-wait", durable=True, arguments={
        "x-message-ttl": 2000, "x-dead-letter-exchange": "",
        "x-dead-letter-routing-key": "after-dead"})
    ch.confirm_delivery()
    ch.basic_publish("", "after-wait", b"later", pika.BasicProperties(delivery_mode=2))
    c.close()
    fresh.restart()
    c = fresh.connect()
    ch = c.channel()
    assert ch.queue_declare("after-wait", passive=True).method.message_count == 1
    for method, props, body in ch.consume("after-dead", auto_ack=True, inactivity_timeout=15):
        break
    ch.cancel()
    assert method is not None, "the restored message never expired"
    assert body == b"later" and props.headers["x-death"][0]["reason"] == "expired"
    assert ch.queue_declare("after-wait", passive=True).method.message_count == 0
    c.close()
