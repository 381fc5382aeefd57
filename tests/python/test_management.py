"""The HTTP management API, RabbitMQ-shaped, against what pika created."""
import pika
import pytest


def test_queues_exchanges_bindings_match_what_pika_made(broker):
    c = broker.connect()
    ch = c.channel()
    ch.queue_declare("mgmt-q", durable=True, arguments={"x-max-length": 100})
    ch.exchange_declare("mgmt-x", "topic", durable=True)
    ch.queue_bind("mgmt-q", "mgmt-x", "a.#")
    ch.confirm_delivery()
    for i in range(3):
        ch.basic_publish("mgmt-x", "a.b", str(i).encode())
    m, _, _ = ch.basic_get("mgmt-q")  # one unacked
    status, queues = broker.api("/api/queues")
    assert status == 200
    q = next(q for q in queues if q["name"] == "mgmt-q")
    assert (q["vhost"], q["durable"], q["auto_delete"], q["exclusive"]) == ("/", True, False, False)
    assert (q["messages"], q["messages_ready"], q["messages_unacknowledged"]) == (3, 2, 1)
    assert q["arguments"] == {"x-max-length": 100}
    assert q["message_stats"]["publish"] == 3
    status, vq = broker.api("/api/queues/%2F")
    assert any(x["name"] == "mgmt-q" for x in vq)
    status, xs = broker.api("/api/exchanges")
    x = next(x for x in xs if x["name"] == "mgmt-x")
    assert (x["type"], x["durable"]) == ("topic", True)
    assert any(x["name"] == "amq.topic" for x in xs)
    status, bs = broker.api("/api/bindings")
    want = {"source": "mgmt-x", "vhost": "/", "destination": "mgmt-q", "destination_type": "queue",
            "routing_key": "a.#", "arguments": {}}
    assert any(want.items() <= b.items() for b in bs)
    status, ov = broker.api("/api/overview")
    assert ov["product_name"] == "Warren" and ov["queue_totals"]["messages"] >= 3
    status, vh = broker.api("/api/vhosts")
    assert any(v["name"] == "/" for v in vh)
    status, us = broker.api("/api/users")
    assert any(u["name"] == "guest" and u["tags"] == ["administrator"] for u in us)
    assert all("password" not in u for u in us)
    ch.basic_ack(m.delivery_tag)
    c.close()


def test_wrong_credentials_get_401(broker):
    status, body = broker.api("/api/queues", password="nope")
    assert status == 401
    status, body = broker.api("/api/no-such-endpoint")
    assert status == 404
    status, _ = broker.api("/api/queues/no-such-vhost")
    assert status == 404


def test_purge_and_delete_queue_over_http(broker):
    ch = broker.connect().channel()
    ch.queue_declare("http-doomed")
    for i in range(5):
        ch.basic_publish("", "http-doomed", b"x")
    ch.confirm_delivery()
    status, _ = broker.api("/api/queues/%2F/http-doomed/contents", method="DELETE")
    assert status == 204
    assert ch.queue_declare("http-doomed", passive=True).method.message_count == 0
    status, _ = broker.api("/api/queues/%2F/http-doomed", method="DELETE")
    assert status == 204
    status, queues = broker.api("/api/queues")
    assert not any(q["name"] == "http-doomed" for q in queues)
    status, _ = broker.api("/api/queues/%2F/http-doomed", method="DELETE")
    assert status == 404


def test_queue_ttl_x_expires(broker):
    """RabbitMQ's queue TTL: an unused queue goes after x-expires ms; one
    with a consumer stays."""
    import time
    c = broker.connect()
    ch = c.channel()
    ch.queue_declare("ttl-unused", arguments={"x-expires": 300})
    ch.queue_declare("ttl-consumed", arguments={"x-expires": 300})
    ch.basic_consume("ttl-consumed", lambda *a: None, auto_ack=True)
    deadline = time.time() + 10
    while time.time() < deadline:
        names = [q["name"] for q in broker.api("/api/queues")[1]]
        if "ttl-unused" not in names:
            break
        c.process_data_events(0.05)
    assert "ttl-unused" not in names
    c.process_data_events(0.5)
    assert "ttl-consumed" in [q["name"] for q in broker.api("/api/queues")[1]]
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
        c.channel().queue_declare("ttl-bad", arguments={"x-expires": 0})
    assert e.value.reply_code == 406
    c.close()
