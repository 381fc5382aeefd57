"""Routing across nodes: a classic queue lives on the node that declared it;
clients on any node publish to it (confirms wait for the home's fsync),
consume from it (acks, requeues and rejects travel back), basic.get and
purge it, and see its counts. Three real Warren processes on 127.0.0.1,
pika and paho-mqtt clients; kill -9 of a queue's home."""
import threading
import time

import pika
import pytest

from cluster_support import Cluster, eventually, passive_ok


@pytest.fixture
def cluster(tmp_path):
    c = Cluster(tmp_path)
    c.wait_formed()
    yield c
    c.stop()


def declare_on(node, queue, **bind):
    with node.connect() as conn:
        ch = conn.channel()
        ch.queue_declare(queue, durable=True)
        if bind:
            ch.queue_bind(queue, bind["exchange"], bind["key"])


def api_queue(node, queue):
    code, body = node.api(f"/api/queues/%2F/{queue}")
    return body if code == 200 else None


def consume(node, queue, n, timeout=15, ack=True, prefetch=50):
    """Take n messages from `queue` through `node` (acked one by one)."""
    got = []
    with node.connect() as conn:
        ch = conn.channel()
        ch.basic_qos(prefetch_count=prefetch)
        deadline = time.time() + timeout
        for method, props, body in ch.consume(queue, inactivity_timeout=0.5):
            if method is not None:
                got.append((body, method.redelivered, props))
                if ack:
                    ch.basic_ack(method.delivery_tag)
            if len(got) == n or time.time() > deadline:
                break
        ch.cancel()
    return got


def test_publish_on_one_node_consume_on_the_home_and_on_a_third(cluster):
    a, b, c = cluster.nodes
    declare_on(b, "route.q", exchange="amq.topic", key="sensors.*.temp")
    for n in (a, c):
        eventually(lambda n=n: passive_ok(n, "route.q"), what="queue known everywhere")
    assert api_queue(a, "route.q")["node"] == "warren2"
    with a.connect() as conn:
        ch = conn.channel()
        ch.confirm_delivery()
        for i in range(200):
            # Raises on a nack: each confirm means the home node synced it.
            ch.basic_publish("amq.topic", f"sensors.room{i % 5}.temp", f"m{i}".encode(),
                             pika.BasicProperties(delivery_mode=2), mandatory=True)
    # The home holds them all, and the other nodes report its counts.
    assert api_queue(b, "route.q")["messages"] == 200
    for n in (a, c):
        eventually(lambda n=n: api_queue(n, "route.q")["messages"] == 200, what="counts from home")
    first = consume(b, "route.q", 100)
    assert [m[0] for m in first] == [f"m{i}".encode() for i in range(100)]
    # A consumer on a third node gets the rest, in order.
    rest = consume(c, "route.q", 100)
    assert [m[0] for m in rest] == [f"m{i}".encode() for i in range(100, 200)]
    eventually(lambda: api_queue(b, "route.q")["messages"] == 0, what="all acked at home")
    assert api_queue(b, "route.q")["messages_unacknowledged"] == 0


def test_remote_consumer_requeues_rejects_and_its_node_dropping_gives_back(cluster):
    a, b, c = cluster.nodes
    with a.connect() as conn:
        ch = conn.channel()
        ch.queue_declare("route.dlq", durable=True)
        ch.queue_declare("route.work", durable=True, arguments={
            "x-dead-letter-exchange": "", "x-dead-letter-routing-key": "route.dlq"})
        ch.confirm_delivery()
        for i in range(30):
            ch.basic_publish("", "route.work", f"w{i}".encode(), pika.BasicProperties(delivery_mode=2))
    eventually(lambda: passive_ok(c, "route.work"), what="queue on c")
    with c.connect() as conn:
        ch = conn.channel()
        ch.basic_qos(prefetch_count=10)
        seen = []
        for method, _, body in ch.consume("route.work", inactivity_timeout=5):
            assert method is not None, "no delivery through node c"
            seen.append(body)
            if body == b"w0":
                ch.basic_nack(method.delivery_tag, requeue=True)
            elif body == b"w1":
                ch.basic_reject(method.delivery_tag, requeue=False)
            elif len(seen) <= 12:
                ch.basic_ack(method.delivery_tag)
            else:
                break  # leave the rest unacked: the connection closes below
        assert b"w0" in seen and b"w1" in seen
    # w1 was dead-lettered at the home; w0 and the unacked ones came back.
    eventually(lambda: api_queue(a, "route.dlq")["messages"] == 1, what="rejected one dead-lettered")
    acked = len(seen) - 2 - (len(seen) - 12)
    left = 30 - 1 - acked
    eventually(lambda: api_queue(a, "route.work")["messages"] == left, what="unacked ones requeued")
    got = consume(b, "route.work", left)
    bodies = [m[0] for m in got]
    assert b"w0" in bodies and b"w1" not in bodies
    assert any(m[1] for m in got), "requeued messages are marked redelivered"


def test_basic_get_and_purge_through_another_node(cluster):
    a, b, _ = cluster.nodes
    declare_on(a, "route.get")
    eventually(lambda: passive_ok(b, "route.get"), what="queue on b")
    with b.connect() as conn:
        ch = conn.channel()
        ch.confirm_delivery()
        for i in range(5):
            ch.basic_publish("", "route.get", f"g{i}".encode())
        method, _, body = ch.basic_get("route.get")
        assert body == b"g0" and method.message_count == 4
        ch.basic_nack(method.delivery_tag, requeue=True)
        method, _, body = ch.basic_get("route.get", auto_ack=True)
        assert body == b"g0" and method.redelivered
        method, _, body = ch.basic_get("route.get")
        assert body == b"g1"
        ch.basic_ack(method.delivery_tag)
        assert ch.queue_purge("route.get").method.message_count == 3
        assert ch.basic_get("route.get") == (None, None, None)
    assert api_queue(a, "route.get")["messages"] == 0


def test_home_killed_publishes_nack_and_consumers_resume_when_it_is_back(cluster):
    a, b, c = cluster.nodes
    declare_on(b, "route.home")
    eventually(lambda: passive_ok(a, "route.home"), what="queue on a")
    got, stop = [], threading.Event()

    def consumer():
        # Reconnects through a on its own: node a stays up throughout.
        params = a.params()
        with pika.BlockingConnection(params) as conn:
            ch = conn.channel()
            for method, _, body in ch.consume("route.home", auto_ack=True, inactivity_timeout=0.2):
                if method is not None:
                    got.append(body)
                if stop.is_set():
                    break

    t = threading.Thread(target=consumer, daemon=True)
    t.start()
    with a.connect() as conn:
        ch = conn.channel()
        ch.confirm_delivery()
        ch.basic_publish("", "route.home", b"before")
        eventually(lambda: got == [b"before"], what="delivery through a")
        b.kill9()
        # The home is gone: a's publishes to its queue are nacked, not lost quietly.
        def nacked():
            try:
                ch.basic_publish("", "route.home", b"lost")
            except pika.exceptions.NackError:
                return True
            return False
        eventually(nacked, what="nack while the home is down")
    b.start()
    cluster.wait_formed()
    with a.connect() as conn:
        ch = conn.channel()
        ch.confirm_delivery()
        def delivered():
            ch.basic_publish("", "route.home", b"after")
            return True
        eventually(delivered, timeout=20, what="publish once the home is back")
    # The consumer on a was subscribed again when the link came back.
    eventually(lambda: b"after" in got, timeout=20, what="delivery after the home's restart")
    stop.set()
    t.join(10)


def test_mqtt_session_homed_on_one_node_resumes_on_another(cluster):
    import paho.mqtt.client as mqtt

    a, b, c = cluster.nodes
    received = []
    arrived = threading.Event()

    def client(node):
        cl = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="roamer",
                         protocol=mqtt.MQTTv311, clean_session=False)
        ok = threading.Event()
        cl.on_connect = lambda *args: ok.set()

        def on_message(_c, _u, m):
            received.append((m.topic, m.payload, m.qos))
            arrived.set()
        cl.on_message = on_message
        cl.connect("127.0.0.1", node.mqtt_port, keepalive=30)
        cl.loop_start()
        assert ok.wait(10)
        return cl

    first = client(a)
    first.subscribe("sensors/+/temp", qos=1)
    eventually(lambda: any(q["name"].startswith("mqtt-subscription-roamer")
                           for q in c.api("/api/queues")[1]), what="session queue on c")
    first.loop_stop()
    first.disconnect()
    # Published over AMQP on node b while the device is away.
    with b.connect() as conn:
        ch = conn.channel()
        ch.confirm_delivery()
        ch.basic_publish("amq.topic", "sensors.room1.temp", b"21.5", pika.BasicProperties(delivery_mode=2))
    # The device comes back on node c: its session's queue lives on a.
    second = client(c)
    try:
        assert arrived.wait(10), "queued message not delivered through node c"
        assert received[0] == ("sensors/room1/temp", b"21.5", 1)
    finally:
        second.loop_stop()
        second.disconnect()


def test_mqtt_qos1_puback_waits_for_the_home_and_reports_its_loss(cluster):
    import paho.mqtt.client as mqtt
    from paho.mqtt.reasoncodes import ReasonCode

    a, b, _ = cluster.nodes
    declare_on(b, "route.mqtt", exchange="amq.topic", key="plant.*.level")
    eventually(lambda: passive_ok(a, "route.mqtt"), what="queue on a")
    acks = {}
    acked = threading.Event()
    cl = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="plant-sensor", protocol=mqtt.MQTTv5)

    def on_publish(_c, _u, mid, rc, _props):
        acks[mid] = rc
        acked.set()
    cl.on_publish = on_publish
    ok = threading.Event()
    cl.on_connect = lambda *args: ok.set()
    cl.connect("127.0.0.1", a.mqtt_port, keepalive=30)
    cl.loop_start()
    try:
        assert ok.wait(10)
        info = cl.publish("plant/tank1/level", b"73", qos=1)
        assert acked.wait(10), "no PUBACK"
        assert acks[info.mid] == ReasonCode(mqtt.PacketTypes.PUBACK, "Success")
        # Acknowledged means the home node has it.
        assert api_queue(b, "route.mqtt")["messages"] == 1
        b.kill9()
        def refused():
            acked.clear()
            info = cl.publish("plant/tank1/level", b"74", qos=1)
            assert acked.wait(10), "no PUBACK while the home is down"
            return acks[info.mid].value == 0x80
        eventually(refused, what="PUBACK 0x80 while the home is down")
    finally:
        cl.loop_stop()
        cl.disconnect()
