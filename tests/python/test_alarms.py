"""Memory and disk alarms, as RabbitMQ raises them: publishing connections
get connection.blocked and are not read, consumers keep flowing, and
connection.unblocked follows when the alarm clears."""
import queue
import time

import paho.mqtt.client as mqtt
import pika
import pytest

from conftest import Broker

MIB = 1 << 20
BODY = b"m" * 4096


class Watch:
    """Records connection.blocked / unblocked on a pika connection."""

    def __init__(self, conn):
        self.events = []
        conn.add_on_connection_blocked_callback(
            lambda c, f: self.events.append(("blocked", f.method.reason))
        )
        conn.add_on_connection_unblocked_callback(lambda c, f: self.events.append(("unblocked", None)))


def node(b):
    status, nodes = b.api("/api/nodes")
    assert status == 200
    return nodes[0]


def wait_for(conn, cond, timeout):
    deadline = time.time() + timeout
    while time.time() < deadline:
        conn.process_data_events(0.05)
        if cond():
            return True
    return False


def test_memory_alarm_blocks_publishers_and_clears_after_drain(tmp_path):
    limit = 160 * MIB
    # The backlog must grow in memory to reach the limit, so queues keep it
    # all there instead of paging it out to disk beyond their window.
    b = Broker(tmp_path, {"WARREN_MEMORY__HIGH_WATERMARK_BYTES": str(limit),
                          "WARREN_STORE__PAGE_WINDOW_MESSAGES": str(10**9),
                          "WARREN_STORE__PAGE_WINDOW_BYTES": str(10**12)})
    try:
        n = node(b)
        assert n["mem_limit"] == limit
        assert n["mem_used"] < limit - 64 * MIB, f"idle broker already uses {n['mem_used']} bytes"
        assert n["mem_alarm"] is False
        pub = b.connect(heartbeat=0)
        watch = Watch(pub)
        ch = pub.channel()
        ch.queue_declare("alarm-q")
        # Publish 4 KiB messages (at most 400 MiB) until the broker says blocked.
        sent = 0
        deadline = time.time() + 120
        while not watch.events and sent < 100_000 and time.time() < deadline:
            for _ in range(50):
                ch.basic_publish("", "alarm-q", BODY)
            sent += 50
            pub.process_data_events(0)
        assert wait_for(pub, lambda: watch.events, 10), f"no connection.blocked after {sent} messages"
        assert watch.events[0] == ("blocked", "low on memory")
        n = node(b)
        assert n["mem_alarm"] is True and n["mem_used"] > limit
        status, metrics = b.text("/metrics")
        assert "rabbitmq_alarms_memory_used_watermark 1" in metrics
        assert b.wait_log("memory resource limit alarm set")
        # A connection that only consumes is not blocked: it drains the queue.
        con = b.connect(heartbeat=0)
        cch = con.channel()
        got = 0
        for method, _, _ in cch.consume("alarm-q", auto_ack=True, inactivity_timeout=2):
            if method is None:
                break
            got += 1
        cch.cancel()
        assert got > 1000, f"only {got} messages drained"
        # With the backlog gone, memory goes back and the publisher is unblocked.
        assert wait_for(pub, lambda: ("unblocked", None) in watch.events, 30), (
            f"still blocked; {node(b)}; {[l for l in b.lines if 'block' in l or 'alarm' in l]}"
        )
        assert node(b)["mem_alarm"] is False
        assert b.wait_log("memory resource limit alarm cleared")
        # The publishes that waited unread are taken now, and new ones flow.
        ch.basic_publish("", "alarm-q", b"after")
        bodies = []
        for method, _, body in cch.consume("alarm-q", auto_ack=True, inactivity_timeout=5):
            if method is None:
                break
            bodies.append(body)
            if body == b"after":
                break
        cch.cancel()
        assert bodies and bodies[-1] == b"after"
        assert got + len(bodies) - 1 == sent, "a publish was lost while blocked"
        pub.close()
        con.close()
    finally:
        b.stop()


def test_disk_alarm_blocks_amqp_and_mqtt_publishers_only(tmp_path):
    b = Broker(tmp_path, {"WARREN_DISK__FREE_LIMIT_BYTES": str(10**18)})
    try:
        n = node(b)
        assert n["disk_free_alarm"] is True and n["disk_free_limit"] == 10**18
        assert n["disk_free"] > 0
        pub = b.connect(heartbeat=0)
        watch = Watch(pub)
        ch = pub.channel()
        ch.queue_declare("disk-q")
        ch.basic_publish("", "disk-q", b"x")
        assert wait_for(pub, lambda: watch.events, 10)
        assert watch.events == [("blocked", "low on disk")]
        # The message that was published is not taken while blocked, and
        # another connection that does not publish still works.
        other = b.connect().channel()
        assert other.queue_declare("disk-q", passive=True).method.message_count == 0
        assert other.basic_get("disk-q")[0] is None
        # MQTT: a publisher's socket is not read, so its PUBACK does not come.
        acked = queue.Queue()
        m = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="alarm-pub")
        m.on_publish = lambda *a: acked.put(True)
        m.connect("127.0.0.1", b.mqtt_port, 30)
        m.loop_start()
        # As for AMQP, the publish that finds the alarm on is taken; the
        # connection is not read after it.
        m.publish("alarm/t", b"1", qos=1)
        assert b.wait_log("blocking MQTT publisher")
        acked.get(timeout=5)
        m.publish("alarm/t", b"2", qos=1)
        with pytest.raises(queue.Empty):
            acked.get(timeout=1)
        m.disconnect()
        m.loop_stop()
        # No pub.close(): a blocked connection is not read, so its
        # connection.close would wait (as with RabbitMQ); stopping the
        # broker closes it with 320.
    finally:
        b.stop()


def test_small_disk_raises_the_disk_alarm_at_start(tmp_path, small_disk):
    """With the default 50 MB limit, a 6 MiB filesystem is below it."""
    b = Broker(tmp_path, {"WARREN_STORE__DIR": str(small_disk / "data")})
    try:
        n = node(b)
        assert n["disk_free_alarm"] is True and n["disk_free_limit"] == 50_000_000
        assert n["disk_free"] <= 6 * MIB
        assert b.wait_log("disk resource limit alarm set")
    finally:
        b.stop()
