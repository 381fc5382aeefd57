"""The operator surface: warrenctl against what pika created, connections,
channels and consumers over HTTP, publish/get, definitions import (a real
RabbitMQ 3.10.8 export) and round trip, /metrics parsed as Prometheus text,
and the web page rendered by headless Chromium."""
import base64
import hashlib
import json
import os
import subprocess
import time
import urllib.parse
from pathlib import Path

import paho.mqtt.client as mqtt
import pika
import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import CTL, Broker

FIXTURE = Path(__file__).parent / "fixtures" / "rabbitmq-3.10.8-definitions.json"


def ctl(b, *args, check=True, **env):
    e = dict(os.environ)
    e.update({"WARRENCTL_URL": f"http://127.0.0.1:{b.http_port}"})
    e.update(env)
    r = subprocess.run([CTL, *args], capture_output=True, text=True, env=e, timeout=60)
    if check:
        assert r.returncode == 0, r.stderr
    return r


def test_warrenctl_list_queues_matches_pika(broker):
    c = broker.connect()
    ch = c.channel()
    ch.queue_declare("ctl-a", durable=True)
    ch.queue_declare("ctl-b")
    ch.confirm_delivery()
    for i in range(5):
        ch.basic_publish("", "ctl-a", b"a%d" % i)
    for i in range(2):
        ch.basic_publish("", "ctl-b", b"b")
    ch.basic_qos(prefetch_count=2)
    got = []
    ch.basic_consume("ctl-a", lambda ch_, m, p, body: got.append(m))
    deadline = time.time() + 10
    while len(got) < 2 and time.time() < deadline:
        c.process_data_events(0.05)
    assert len(got) == 2  # 2 unacked (prefetch), 3 ready

    out = ctl(broker, "list_queues").stdout.splitlines()
    assert out[0].split() == ["name", "messages"]
    rows = {line.split()[0]: line.split()[1:] for line in out[1:]}
    assert rows["ctl-a"] == ["5"] and rows["ctl-b"] == ["2"]

    r = ctl(broker, "list_queues", "name", "messages_ready", "messages_unacknowledged",
            "consumers", "durable", "--format", "json")
    rows = {q["name"]: q for q in json.loads(r.stdout)}
    assert rows["ctl-a"] == {"name": "ctl-a", "messages_ready": 3, "messages_unacknowledged": 2,
                             "consumers": 1, "durable": True}
    assert rows["ctl-b"]["messages_ready"] == 2 and rows["ctl-b"]["consumers"] == 0
    # The same numbers pika sees.
    assert ch.queue_declare("ctl-b", passive=True).method.message_count == 2

    ch.exchange_declare("ctl-x", "topic", durable=True)
    ch.queue_bind("ctl-a", "ctl-x", "orders.#")
    xs = {x["name"]: x["type"] for x in json.loads(ctl(broker, "list_exchanges", "--format", "json").stdout)}
    assert xs["ctl-x"] == "topic" and xs["amq.fanout"] == "fanout"
    out = ctl(broker, "list_exchanges").stdout.splitlines()
    assert out[0].split() == ["name", "type"] and any(l.split() == ["ctl-x", "topic"] for l in out)
    bs = json.loads(ctl(broker, "list_bindings", "--format", "json").stdout)
    assert {"source_name": "ctl-x", "source_kind": "exchange", "destination_name": "ctl-a",
            "destination_kind": "queue", "routing_key": "orders.#", "arguments": {}} in bs
    consumers = json.loads(ctl(broker, "list_consumers", "--format", "json").stdout)
    mine = [x for x in consumers if x["queue_name"] == "ctl-a"]
    assert len(mine) == 1 and mine[0]["ack_required"] is True and mine[0]["prefetch_count"] == 2
    conns = ctl(broker, "list_connections", "user", "protocol", "vhost").stdout
    assert "guest" in conns and "AMQP 0-9-1" in conns
    ctl(broker, "purge_queue", "ctl-b")
    assert ch.queue_declare("ctl-b", passive=True).method.message_count == 0
    ctl(broker, "delete_queue", "ctl-b")
    with pytest.raises(pika.exceptions.ChannelClosedByBroker):
        ch.queue_declare("ctl-b", passive=True)
    c.close()


def test_warrenctl_users_vhosts_permissions(broker):
    ctl(broker, "add_user", "ops", "opspw")
    r = ctl(broker, "add_user", "ops", "opspw", check=False)
    assert r.returncode != 0 and "already exists" in r.stderr
    ctl(broker, "set_user_tags", "ops", "monitoring")
    ctl(broker, "add_vhost", "ops-vh")
    ctl(broker, "-p", "ops-vh", "set_permissions", "ops", "^ops-", ".*", ".*")
    perms = json.loads(ctl(broker, "-p", "ops-vh", "list_permissions", "--format", "json").stdout)
    assert perms == [{"user": "ops", "configure": "^ops-", "write": ".*", "read": ".*"}]
    users = json.loads(ctl(broker, "list_users", "--format", "json").stdout)
    assert {"user": "ops", "tags": ["monitoring"]} in users
    assert "ops-vh" in ctl(broker, "list_vhosts").stdout
    # The new user logs in over AMQP in its vhost, within its permissions.
    c = pika.BlockingConnection(pika.ConnectionParameters(
        "127.0.0.1", broker.amqp_port, "ops-vh", pika.PlainCredentials("ops", "opspw")))
    c.channel().queue_declare("ops-q")
    c.close()
    ctl(broker, "change_password", "ops", "newpw")
    with pytest.raises(pika.exceptions.ProbableAuthenticationError):
        pika.BlockingConnection(pika.ConnectionParameters(
            "127.0.0.1", broker.amqp_port, "ops-vh", pika.PlainCredentials("ops", "opspw")))
    # Tags survive a password change; the monitoring user can read the API.
    assert ctl(broker, "list_queues", "-p", "ops-vh", WARRENCTL_USER="ops",
               WARRENCTL_PASSWORD="newpw").stdout.split()[2] == "ops-q"
    r = ctl(broker, "list_users", check=False, WARRENCTL_USER="ops", WARRENCTL_PASSWORD="newpw")
    assert r.returncode == 77  # monitoring is not administrator
    ctl(broker, "-p", "ops-vh", "clear_permissions", "ops")
    ctl(broker, "delete_vhost", "ops-vh")
    ctl(broker, "delete_user", "ops")
    assert "ops" not in [u["user"] for u in json.loads(
        ctl(broker, "list_users", "--format", "json").stdout)]


def test_warrenctl_errors_are_clear(broker):
    r = ctl(broker, "list_queues", check=False, WARRENCTL_URL="http://127.0.0.1:1")
    assert r.returncode == 69 and "cannot reach the Warren management API" in r.stderr
    r = ctl(broker, "list_queues", "--password", "wrong", check=False)
    assert r.returncode == 77 and "authentication failed" in r.stderr
    r = ctl(broker, "purge_queue", "no-such-queue", check=False)
    assert r.returncode == 1 and "no-such-queue" in r.stderr
    status = ctl(broker, "status").stdout
    assert "Warren" in status and "amqp on 127.0.0.1" in status
    s, nodes = broker.api("/api/nodes")
    assert s == 200 and nodes[0]["running"] is True
    assert nodes[0]["mem_used"] > 1 << 20 and nodes[0]["fd_used"] > 3
    assert "Memory used (bytes): " in status and "File descriptors: " in status


def test_connections_channels_consumers_over_http(broker):
    c = broker.connect(client_properties={"connection_name": "orders-service"})
    ch = c.channel()
    ch.confirm_delivery()
    ch.basic_qos(prefetch_count=7)
    q = ch.queue_declare("", exclusive=True).method.queue
    ch.basic_consume(q, lambda *a: None, consumer_tag="orders-consumer")
    m = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="ops-device", protocol=mqtt.MQTTv5)
    m.connect("127.0.0.1", broker.mqtt_port)
    m.loop_start()
    deadline = time.time() + 10
    conns = []
    while time.time() < deadline:
        conns = broker.api("/api/connections")[1]
        if any(x["protocol"] == "MQTT 5.0" for x in conns):
            break
        time.sleep(0.05)
    amqp = [x for x in conns if x["client_properties"]["connection_name"] == "orders-service"]
    assert len(amqp) == 1 and amqp[0]["protocol"] == "AMQP 0-9-1" and amqp[0]["user"] == "guest"
    assert amqp[0]["channels"] == 1
    dev = [x for x in conns if x["client_properties"]["connection_name"] == "ops-device"]
    assert len(dev) == 1 and dev[0]["protocol"] == "MQTT 5.0"
    chans = [x for x in broker.api("/api/channels")[1]
             if x["connection_details"]["name"] == amqp[0]["name"]]
    assert len(chans) == 1
    assert (chans[0]["prefetch_count"], chans[0]["confirm"], chans[0]["consumer_count"]) == (7, True, 1)
    cons = [x for x in broker.api("/api/consumers")[1] if x["consumer_tag"] == "orders-consumer"]
    assert cons[0]["queue"]["name"] == q
    assert cons[0]["channel_details"]["connection_name"] == amqp[0]["name"]
    # An operator closes the AMQP connection: the client gets 320.
    name = urllib.parse.quote(amqp[0]["name"], safe="")
    assert broker.api(f"/api/connections/{name}", method="DELETE")[0] == 204
    with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as e:
        for _ in range(100):
            c.process_data_events(0.05)
    assert e.value.reply_code == 320
    assert e.value.reply_text == "CONNECTION_FORCED - Closed via management plugin"
    m.loop_stop()
    m.disconnect()


def test_declare_publish_get_over_http(broker):
    assert broker.api("/api/exchanges/%2F/http-x", method="PUT",
                      body={"type": "topic", "durable": True})[0] == 201
    assert broker.api("/api/queues/%2F/http-q", method="PUT",
                      body={"durable": True, "arguments": {"x-max-length": 10}})[0] == 201
    assert broker.api("/api/queues/%2F/http-q", method="PUT", body={"durable": True,
                      "arguments": {"x-max-length": 10}})[0] == 204
    assert broker.api("/api/bindings/%2F/e/http-x/q/http-q", method="POST",
                      body={"routing_key": "a.*"})[0] == 201
    s, r = broker.api("/api/exchanges/%2F/http-x/publish", method="POST", body={
        "routing_key": "a.b", "payload": "hello", "payload_encoding": "string",
        "properties": {"delivery_mode": 2, "headers": {"k": "v"}, "correlation_id": "c1"}})
    assert (s, r) == (200, {"routed": True})
    s, r = broker.api("/api/exchanges/%2F/http-x/publish", method="POST",
                      body={"routing_key": "zzz", "payload": "x", "payload_encoding": "string"})
    assert r == {"routed": False}
    # A key longer than AMQP allows (255 bytes) is refused, not cut to fit.
    s, r = broker.api("/api/exchanges/%2F/http-x/publish", method="POST",
                      body={"routing_key": "a." + "b" * 300, "payload": "x",
                            "payload_encoding": "string"})
    assert s == 400 and "255" in str(r)
    # So are queue, exchange and vhost names over 255 bytes: the store's
    # records and AMQP clients could not carry them.
    long = "n" * 300
    for path in (f"/api/queues/%2F/{long}", f"/api/exchanges/%2F/{long}", f"/api/vhosts/{long}"):
        body = {"type": "direct"} if "exchanges" in path else {}
        s, r = broker.api(path, method="PUT", body=body)
        assert s == 400 and "255" in str(r), (path, s, r)
    # pika sees the message with its properties.
    c = broker.connect()
    ch = c.channel()
    m, props, body = ch.basic_get("http-q")
    assert body == b"hello" and props.headers == {"k": "v"} and props.correlation_id == "c1"
    ch.basic_nack(m.delivery_tag, requeue=True)
    # A synchronous method after the nack: once it answers, the nack was handled.
    assert ch.queue_declare("http-q", passive=True).method.message_count == 1
    s, msgs = broker.api("/api/queues/%2F/http-q/get", method="POST",
                         body={"count": 5, "ackmode": "ack_requeue_true", "encoding": "auto"})
    assert s == 200 and len(msgs) == 1
    assert msgs[0]["payload"] == "hello" and msgs[0]["redelivered"] is True
    assert msgs[0]["properties"]["correlation_id"] == "c1"
    # requeued: still there; ack_requeue_false takes it.
    assert broker.api("/api/queues/%2F/http-q", method="GET")[1]["messages"] == 1
    broker.api("/api/queues/%2F/http-q/get", method="POST", body={"count": 1, "ackmode": "ack_requeue_false"})
    assert broker.api("/api/queues/%2F/http-q")[1]["messages"] == 0
    assert broker.api("/api/exchanges/%2F/http-x", method="DELETE")[0] == 204
    assert broker.api("/api/exchanges/%2F/http-x", method="DELETE")[0] == 404
    assert broker.api("/api/exchanges/%2F/amq.direct", method="DELETE")[0] == 403
    c.close()


def test_rabbitmq_definitions_import(tmp_path):
    b = Broker(tmp_path)
    try:
        defs = json.loads(FIXTURE.read_text())
        s, r = b.api("/api/definitions", method="POST", body=defs)
        assert s == 204, r
        # alice logs in with her RabbitMQ password (hash imported, never re-hashed).
        c = pika.BlockingConnection(pika.ConnectionParameters(
            "127.0.0.1", b.amqp_port, "iot", pika.PlainCredentials("alice", "test12")))
        ch = c.channel()
        ch.confirm_delivery()
        ch.basic_publish("alice-events", "orders.new", b"o1")
        ch.basic_publish("amq.topic", "sensors.r1.temp", b"t1")
        q = ch.queue_declare("alice-inbox", passive=True)
        assert q.method.message_count == 2
        # Her permissions came too: she may not configure outside ^alice-.
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
            ch.queue_declare("other")
        assert e.value.reply_code == 403
        c.close()
        s, queues = b.api("/api/queues/iot")
        q = next(x for x in queues if x["name"] == "alice-inbox")
        assert q["arguments"] == {"x-max-length": 1000, "x-message-ttl": 60000}
        s, users = b.api("/api/users")
        assert next(u for u in users if u["name"] == "alice")["tags"] == ["monitoring"]
        # Export, then import into a fresh broker: the same definitions.
        s, exported = b.api("/api/definitions")
        b.restart()
        assert b.api("/api/definitions")[1] == exported
    finally:
        b.stop()
    fresh = Broker(tmp_path / "fresh")
    try:
        assert fresh.api("/api/definitions", method="POST", body=exported)[0] == 204
        again = fresh.api("/api/definitions")[1]
        for key in ("users", "vhosts", "permissions", "queues", "exchanges", "bindings"):
            norm = lambda xs: sorted(json.dumps(x, sort_keys=True) for x in xs)
            assert norm(again[key]) == norm(exported[key]), key
        # Through warrenctl too: export to a file and import it back.
        path = tmp_path / "out.json"
        ctl(fresh, "export_definitions", str(path))
        assert json.loads(path.read_text())["queues"] == again["queues"]
        ctl(fresh, "import_definitions", str(path))
        # RabbitMQ's other scheme, salted SHA-512, logs in too.
        salt = b"\x01\x02\x03\x04"
        h512 = base64.b64encode(salt + hashlib.sha512(salt + b"pw512").digest()).decode()
        assert fresh.api("/api/definitions", method="POST", body={
            "users": [{"name": "u512", "password_hash": h512, "tags": [],
                       "hashing_algorithm": "rabbit_password_hashing_sha512"}],
            "permissions": [{"user": "u512", "vhost": "/", "configure": ".*",
                             "write": ".*", "read": ".*"}]})[0] == 204
        pika.BlockingConnection(pika.ConnectionParameters(
            "127.0.0.1", fresh.amqp_port, "/", pika.PlainCredentials("u512", "pw512"))).close()
        bad = tmp_path / "bad.json"
        bad.write_text(json.dumps({"users": [{"name": "x", "password_hash": "abc",
                                              "hashing_algorithm": "rabbit_password_hashing_md5"}]}))
        r = ctl(fresh, "import_definitions", str(bad), check=False)
        assert r.returncode == 1 and "rabbit_password_hashing_md5" in r.stderr
    finally:
        fresh.stop()


def metrics(b):
    s, text = b.text("/metrics")
    assert s == 200
    out = {}
    for fam in text_string_to_metric_families(text):
        for sample in fam.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def test_metrics_scraped_and_parsed(tmp_path):
    b = Broker(tmp_path)
    try:
        c = b.connect()
        ch = c.channel()
        ch.queue_declare("m-q", durable=True)
        ch.confirm_delivery()
        for i in range(20):
            ch.basic_publish("", "m-q", b"x" * 100, pika.BasicProperties(delivery_mode=2))
        for _ in range(5):
            m, _, _ = ch.basic_get("m-q")
            ch.basic_ack(m.delivery_tag)
        mq = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="metrics-dev", protocol=mqtt.MQTTv311)
        mq.connect("127.0.0.1", b.mqtt_port)
        mq.loop_start()
        deadline = time.time() + 10
        while time.time() < deadline:
            m = metrics(b)
            if m.get(("warren_connections", (("protocol", "MQTT 3.1.1"),))) == 1:
                break
            time.sleep(0.05)
        q = (("queue", "m-q"), ("vhost", "/"))
        assert m[("warren_queue_messages_ready", q)] == 15
        assert m[("warren_queue_messages_published_total", q)] == 20
        assert m[("warren_queue_messages_acked_total", q)] == 5
        assert m[("warren_connections", (("protocol", "AMQP 0-9-1"),))] == 1
        assert m[("warren_connections", (("protocol", "MQTT 3.1.1"),))] == 1
        assert m[("warren_channels", (("protocol", "AMQP 0-9-1"),))] == 1
        assert m[("warren_messages_published_total", ())] == 20
        assert m[("warren_messages_confirmed_total", ())] == 20
        assert m[("warren_messages_delivered_total", ())] == 5
        assert m[("warren_messages_acked_total", ())] == 5
        assert m[("warren_store_bytes", ())] > 20 * 100
        # Persistent publishes were fsynced: the histogram counted them.
        count = m[("warren_store_fsync_seconds_count", ())]
        assert count >= 1
        assert m[("warren_store_fsync_seconds_bucket", (("le", "+Inf"),))] == count
        assert m[("process_resident_memory_bytes", ())] > 1 << 20
        assert m[("process_open_fds", ())] > 3
        # Rates: a steady publisher shows up in the per-queue publish rate.
        deadline = time.time() + 10
        rate = 0
        while time.time() < deadline and rate == 0:
            for i in range(50):
                ch.basic_publish("", "m-q", b"r")
            c.process_data_events(0.2)
            rate = metrics(b)[("warren_queue_publish_rate", q)]
        assert rate > 0
        s, queue = b.api("/api/queues/%2F/m-q")
        assert queue["message_stats"]["publish_details"]["rate"] >= 0
        mq.loop_stop()
        mq.disconnect()
        c.close()
    finally:
        b.stop()


def test_web_page_lists_queue_in_headless_chromium(broker, tmp_path):
    c = broker.connect()
    c.channel().queue_declare("queue-made-by-pika")
    url = f"http://guest:guest@127.0.0.1:{broker.http_port}/"
    dom = ""
    for _ in range(3):
        r = subprocess.run(
            ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
             f"--user-data-dir={tmp_path}/profile", "--virtual-time-budget=10000", "--dump-dom", url],
            capture_output=True, text=True, timeout=120)
        dom = r.stdout
        if "queue-made-by-pika" in dom:
            break
    assert "<td>queue-made-by-pika</td>" in dom, dom[-2000:]
    assert "user guest" in dom
    # Without a login the page is refused (the browser then asks for one).
    status, _ = broker.text("/")
    assert status == 401
    c.close()
