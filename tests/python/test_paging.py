"""Backlogs larger than the in-memory window: a queue keeps its head in
memory and pages the rest to disk, invisibly to clients (order, priorities,
redelivery, TTL, restarts), and operators see how much is paged out.

The broker runs with a window of 100 messages so that small tests page."""
import os
import subprocess
import time
import urllib.parse

import paho.mqtt.client as mqtt
import pika
import pytest

from conftest import CTL, Broker

WINDOW = 100
PERSISTENT = pika.BasicProperties(delivery_mode=pika.DeliveryMode.Persistent)


@pytest.fixture
def paged(tmp_path):
    b = Broker(tmp_path, {"WARREN_STORE__PAGE_WINDOW_MESSAGES": str(WINDOW)})
    yield b
    b.stop()


def queue_info(b, name, vhost="/"):
    status, q = b.api(f"/api/queues/{urllib.parse.quote(vhost, safe='')}/{name}")
    assert status == 200, q
    return q


def page_bytes(b):
    for line in b.text("/metrics")[1].splitlines():
        if line.startswith("warren_store_page_bytes "):
            return float(line.split()[1])
    raise AssertionError("no warren_store_page_bytes in /metrics")


def wait_for(what, cond, timeout=20):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def publish(ch, queue, bodies, props=None):
    ch.confirm_delivery()
    for body in bodies:
        ch.basic_publish("", queue, body, props)


def consume_all(ch, queue, n, prefetch=500, timeout=60):
    """Consume n messages with manual acks; returns (body, redelivered)."""
    ch.basic_qos(prefetch_count=prefetch)
    out = []
    deadline = time.time() + timeout
    for method, _props, body in ch.consume(queue, inactivity_timeout=2):
        if method is None:
            if time.time() > deadline:
                break
            continue
        out.append((body, method.redelivered))
        ch.basic_ack(method.delivery_tag)
        if len(out) == n:
            break
    ch.cancel()
    return out


def test_a_deep_queue_pages_out_and_drains_in_order(paged):
    c = paged.connect()
    ch = c.channel()
    ch.queue_declare(queue="deep")
    n = 20_000
    publish(ch, "deep", (b"m%015d" % i for i in range(n)))
    q = queue_info(paged, "deep")
    assert q["messages"] == n
    assert q["messages_ready_ram"] == WINDOW
    assert q["messages_paged_out"] == n - WINDOW
    assert q["message_bytes_paged_out"] == (n - WINDOW) * 16
    assert page_bytes(paged) >= (n - WINDOW) * 16
    got = consume_all(ch, "deep", n)
    assert [b for b, _ in got] == [b"m%015d" % i for i in range(n)]
    assert not any(r for _, r in got)
    q = queue_info(paged, "deep")
    assert (q["messages"], q["messages_paged_out"], q["message_bytes_paged_out"]) == (0, 0, 0)
    wait_for("page files deleted", lambda: page_bytes(paged) == 0)
    c.close()


def test_warrenctl_lists_paged_out_columns(paged):
    c = paged.connect()
    ch = c.channel()
    ch.queue_declare(queue="listed")
    publish(ch, "listed", (b"x" * 10 for _ in range(1000)))
    c.close()
    env = dict(os.environ, WARRENCTL_URL=f"http://127.0.0.1:{paged.http_port}")
    out = subprocess.run(
        [CTL, "list_queues", "name", "messages_ready_ram", "messages_paged_out", "message_bytes_paged_out"],
        capture_output=True, text=True, timeout=30, env=env,
    )
    assert out.returncode == 0, out.stderr
    row = [line.split() for line in out.stdout.splitlines() if line.startswith("listed")]
    assert row == [["listed", str(WINDOW), str(1000 - WINDOW), str((1000 - WINDOW) * 10)]]


def test_persistent_paged_messages_survive_a_restart_and_kill9(paged):
    c = paged.connect()
    ch = c.channel()
    ch.queue_declare(queue="durable-deep", durable=True)
    publish(ch, "durable-deep", (b"p%d" % i for i in range(3000)), PERSISTENT)
    ch.queue_declare(queue="transient-deep", durable=True)
    publish(ch, "transient-deep", (b"t%d" % i for i in range(3000)))
    assert queue_info(paged, "durable-deep")["messages_paged_out"] == 3000 - WINDOW
    c.close()
    paged.restart()
    # Transient messages are dropped on restart, paged or not (RabbitMQ does too).
    assert queue_info(paged, "transient-deep")["messages"] == 0
    q = queue_info(paged, "durable-deep")
    # After a restart the backlog stays in the message log and is read back
    # as consumers reach it: at most the window is in memory.
    assert q["messages"] == 3000 and q["messages_paged_out"] >= 3000 - WINDOW
    # Take half (acked), then kill -9: the other half comes back, in order.
    c = paged.connect()
    ch = c.channel()
    got = consume_all(ch, "durable-deep", 1500)
    assert [b for b, _ in got] == [b"p%d" % i for i in range(1500)]
    c.close()
    paged.kill9()
    paged.start()
    c = paged.connect()
    got = consume_all(c.channel(), "durable-deep", 1500)
    assert [b for b, _ in got] == [b"p%d" % i for i in range(1500, 3000)]
    assert queue_info(paged, "durable-deep")["messages"] == 0
    c.close()


def test_priorities_on_a_paged_queue(paged):
    c = paged.connect()
    ch = c.channel()
    ch.queue_declare(queue="prio", arguments={"x-max-priority": 5})
    ch.confirm_delivery()
    sent = []
    for i in range(2000):
        p = (i * 7) % 6
        ch.basic_publish("", "prio", b"%d-%d" % (p, i), pika.BasicProperties(priority=p))
        sent.append((p, i))
    assert queue_info(paged, "prio")["messages_paged_out"] > 0
    got = consume_all(ch, "prio", 2000)
    want = sorted(sent, key=lambda t: (-t[0], t[1]))
    assert [b for b, _ in got] == [b"%d-%d" % t for t in want]
    c.close()


def test_requeued_messages_come_back_first_and_marked_redelivered(paged):
    c = paged.connect()
    ch = c.channel()
    ch.queue_declare(queue="requeue")
    publish(ch, "requeue", (b"r%d" % i for i in range(1000)))
    taker = c.channel()
    taker.basic_qos(prefetch_count=10)
    taken = []
    for method, _p, body in taker.consume("requeue", inactivity_timeout=5):
        assert method is not None, "no delivery within 5 s"
        taken.append(body)
        if len(taken) == 10:
            break
    taker.close()  # the 10 unacked go back
    got = consume_all(ch, "requeue", 1000)
    assert [b for b, _ in got] == [b"r%d" % i for i in range(1000)]
    assert [r for _, r in got[:10]] == [True] * 10
    assert not any(r for _, r in got[10:])
    c.close()


def test_paged_messages_expire_and_dead_letter_on_time(paged):
    c = paged.connect()
    ch = c.channel()
    ch.queue_declare(queue="dlq")
    ch.queue_declare(queue="wait", arguments={
        "x-message-ttl": 300, "x-dead-letter-exchange": "", "x-dead-letter-routing-key": "dlq"})
    publish(ch, "wait", (b"w%d" % i for i in range(1000)))
    assert queue_info(paged, "wait")["messages_paged_out"] > 0
    wait_for("all moved to the dead-letter queue",
             lambda: queue_info(paged, "dlq")["messages"] == 1000, timeout=30)
    assert queue_info(paged, "wait")["messages"] == 0
    got = consume_all(ch, "dlq", 1000)
    assert [b for b, _ in got] == [b"w%d" % i for i in range(1000)]
    c.close()


def test_deleting_a_paged_queue_gives_the_disk_back(paged):
    c = paged.connect()
    ch = c.channel()
    ch.queue_declare(queue="big")
    publish(ch, "big", (b"b" * 1024 for _ in range(5000)))
    assert page_bytes(paged) > 4000 * 1024
    ch.queue_delete("big")
    wait_for("page bytes back to 0", lambda: page_bytes(paged) == 0)
    data = paged.tmp_path / "data" / "pages"
    wait_for("page directory empty", lambda: not any(data.iterdir()))
    c.close()


def test_an_offline_mqtt_session_pages_its_backlog(paged):
    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="deep-dev",
                      protocol=mqtt.MQTTv311, clean_session=False)
    sub.connect("127.0.0.1", paged.mqtt_port)
    sub.loop_start()
    r = sub.subscribe("deep/#", qos=1)
    assert r[0] == mqtt.MQTT_ERR_SUCCESS
    wait_for("subscription", lambda: any(
        q["name"].startswith("mqtt-subscription-deep-dev") for q in paged.api("/api/queues")[1]))
    sub.disconnect()
    sub.loop_stop()
    c = paged.connect()
    ch = c.channel()
    ch.confirm_delivery()
    for i in range(2000):
        ch.basic_publish("amq.topic", "deep.t", b"d%d" % i, pika.BasicProperties(delivery_mode=2))
    c.close()
    qname = next(q["name"] for q in paged.api("/api/queues")[1] if q["name"].startswith("mqtt-subscription-deep-dev"))
    assert queue_info(paged, qname)["messages_paged_out"] > 0
    got = []
    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="deep-dev",
                      protocol=mqtt.MQTTv311, clean_session=False)
    sub.on_message = lambda _c, _u, m: got.append(m.payload)
    sub.connect("127.0.0.1", paged.mqtt_port)
    sub.loop_start()
    try:
        wait_for("all 2000 MQTT messages", lambda: len(got) >= 2000, timeout=60)
    finally:
        sub.disconnect()
        sub.loop_stop()
    assert got == [b"d%d" % i for i in range(2000)]
