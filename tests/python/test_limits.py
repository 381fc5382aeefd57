"""Operator limits as RabbitMQ 3.10 has them, with real clients: vhost
max-connections and max-queues, user max-connections and max-channels, the
node-wide connection_max, and the negotiated channel_max (how many channels,
not which numbers). Refusals are checked by code and RabbitMQ's text; AMQP
with pika, MQTT with paho (v5: 0x97) and a raw socket (3.1.1: 3, server unavailable; RabbitMQ sends 5)."""
import json
import os
import queue
import socket
import struct
import subprocess

import paho.mqtt.client as mqtt
import pika
import pytest

from conftest import CTL, Broker

ALL = {"configure": ".*", "write": ".*", "read": ".*"}


def ok(result, *codes):
    status, body = result
    assert status in (codes or (200, 201, 204)), (status, body)
    return body


def add_vhost(b, vhost, users=("guest",)):
    ok(b.api(f"/api/vhosts/{vhost}", method="PUT"))
    for u in users:
        ok(b.api(f"/api/permissions/{vhost}/{u}", method="PUT", body=ALL))


def add_user(b, user, vhosts=("/",)):
    ok(b.api(f"/api/users/{user}", method="PUT", body={"password": "pw", "tags": ""}))
    for v in vhosts:
        ok(b.api(f"/api/permissions/{v.replace('/', '%2F')}/{user}", method="PUT", body=ALL))


def amqp(b, vhost="/", user="guest", password="guest", **kw):
    creds = pika.PlainCredentials(user, password)
    return b.connect(virtual_host=vhost, credentials=creds, **kw)


def refused_open(b, **kw):
    """connection.open refused: the 530 text pika reports."""
    with pytest.raises(pika.exceptions.ProbableAccessDeniedError) as e:
        amqp(b, **kw)
    return str(e.value)


def ctl(b, *args, check=True):
    env = dict(os.environ, WARRENCTL_URL=f"http://127.0.0.1:{b.http_port}")
    r = subprocess.run([CTL, *args], capture_output=True, text=True, env=env, timeout=60)
    if check:
        assert r.returncode == 0, r.stderr
    return r


def mqtt5_connack(b, client_id, username=None, clean=True, expiry=None):
    """CONNECT with paho (MQTT 5); returns (reason code value, client)."""
    from paho.mqtt.properties import Properties
    from paho.mqtt.packettypes import PacketTypes
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    got = queue.Queue()
    c.on_connect = lambda cl, u, f, rc, p=None: got.put(rc)
    if username:
        c.username_pw_set(username, "guest" if username.endswith("guest") else "pw")
    props = None
    if expiry is not None:
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = expiry
    c.connect("127.0.0.1", b.mqtt_port, 30, clean_start=clean, properties=props)
    c.loop_start()
    rc = got.get(timeout=10)
    return rc.value, c


def eventually(cond, timeout=10):
    """Poll `cond` (each call is an API round trip) until true or timeout."""
    import time
    deadline = time.time() + timeout
    while time.time() < deadline:
        if cond():
            return True
    return False


def stop(c):
    c.disconnect()
    c.loop_stop()


def mqtt5_subscribe(c, topic):
    done = queue.Queue()
    c.on_subscribe = lambda cl, u, mid, codes, p=None: done.put(codes)
    c.subscribe(topic, 1)
    return [r.value for r in done.get(timeout=10)]


def packet(first, body):
    return bytes([first, len(body)]) + body  # bodies here are < 128 bytes


def mqtt_str(s):
    return struct.pack(">H", len(s)) + s


def read_exact(s, n):
    out = b""
    while len(out) < n:
        chunk = s.recv(n - len(out))
        assert chunk, "closed early"
        out += chunk
    return out


def mqtt311(b, client_id, username=None, subscribe=None):
    """A raw MQTT 3.1.1 session: (CONNACK return code, SUBACK code or None)."""
    s = socket.create_connection(("127.0.0.1", b.mqtt_port), timeout=10)
    flags = 0x02 | (0xC0 if username else 0)
    body = mqtt_str(b"MQTT") + bytes([4, flags]) + struct.pack(">H", 30) + mqtt_str(client_id)
    if username:
        body += mqtt_str(username.encode()) + mqtt_str(b"guest")
    s.sendall(packet(0x10, body))
    connack = read_exact(s, 4)
    assert connack[:2] == b"\x20\x02", connack
    suback = None
    if subscribe and connack[3] == 0:
        s.sendall(packet(0x82, struct.pack(">H", 1) + mqtt_str(subscribe) + b"\x01"))
        suback = read_exact(s, 5)[4]
    s.close()
    return connack[3], suback


def test_vhost_connection_limit_refuses_connection_open_with_530(broker):
    add_vhost(broker, "lim-conn")
    ok(broker.api("/api/vhost-limits/lim-conn/max-connections", method="PUT", body={"value": 2}))
    assert ok(broker.api("/api/vhost-limits/lim-conn")) == [
        {"vhost": "lim-conn", "value": {"max-connections": 2}}]
    assert {"vhost": "lim-conn", "value": {"max-connections": 2}} in ok(broker.api("/api/vhost-limits"))
    first, second = amqp(broker, "lim-conn"), amqp(broker, "lim-conn")
    text = refused_open(broker, vhost="lim-conn")
    assert "530" in text and ("NOT_ALLOWED - access to vhost 'lim-conn' refused for user 'guest': "
                              "connection limit (2) is reached") in text
    assert broker.wait_log("AMQP connection refused: access to vhost 'lim-conn'")
    # Other vhosts are not affected; a closed connection frees its place.
    amqp(broker).close()
    first.close()
    third = amqp(broker, "lim-conn")
    # MQTT sessions count too: the vhost is full again.
    rc, c = mqtt5_connack(broker, "lim-conn-dev", username="lim-conn:guest")
    assert rc == 0x97
    stop(c)
    # 3.1.1 has no quota code: 3, server unavailable.
    assert mqtt311(broker, b"lim-conn-311", username="lim-conn:guest") == (3, None)
    # A negative value means no limit, as in RabbitMQ; it is listed as set.
    ok(broker.api("/api/vhost-limits/lim-conn/max-connections", method="PUT", body={"value": -1}))
    assert ok(broker.api("/api/vhost-limits/lim-conn")) == [
        {"vhost": "lim-conn", "value": {"max-connections": -1}}]
    extra = [amqp(broker, "lim-conn") for _ in range(2)]
    ok(broker.api("/api/vhost-limits/lim-conn/max-connections", method="DELETE"))
    assert ok(broker.api("/api/vhost-limits/lim-conn")) == []
    for c in [second, third, *extra]:
        c.close()


def test_mqtt_session_holds_its_place_until_it_disconnects(broker):
    add_vhost(broker, "lim-mqtt")
    ok(broker.api("/api/vhost-limits/lim-mqtt/max-connections", method="PUT", body={"value": 1}))
    rc, device = mqtt5_connack(broker, "lim-mqtt-dev", username="lim-mqtt:guest")
    assert rc == 0
    text = refused_open(broker, vhost="lim-mqtt")
    assert "connection limit (1) is reached" in text
    rc, again = mqtt5_connack(broker, "lim-mqtt-other", username="lim-mqtt:guest")
    assert rc == 0x97
    stop(again)
    assert broker.wait_log("MQTT connection refused: access to vhost 'lim-mqtt'")
    stop(device)
    # MQTT has no DISCONNECT acknowledgement: watch the broker's connection
    # list until the session is gone, then its place is free.
    assert eventually(lambda: not any(
        c.get("vhost") == "lim-mqtt" for c in ok(broker.api("/api/connections"))))
    amqp(broker, "lim-mqtt").close()


def test_user_connection_and_channel_limits(broker):
    add_user(broker, "lim-user")
    ok(broker.api("/api/user-limits/lim-user/max-connections", method="PUT", body={"value": 1}))
    ok(broker.api("/api/user-limits/lim-user/max-channels", method="PUT", body={"value": 2}))
    assert ok(broker.api("/api/user-limits/lim-user")) == [
        {"user": "lim-user", "value": {"max-channels": 2, "max-connections": 1}}]
    assert ok(broker.api("/api/users/lim-user"))["limits"] == {"max-channels": 2, "max-connections": 1}
    c = amqp(broker, user="lim-user", password="pw")
    text = refused_open(broker, user="lim-user", password="pw")
    assert ("NOT_ALLOWED - connection refused for user 'lim-user': "
            "user connection limit (1) is reached") in text
    rc, m = mqtt5_connack(broker, "lim-user-dev", username="lim-user")
    assert rc == 0x97
    stop(m)
    c.channel(), c.channel()
    with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as e:
        c.channel()
    assert e.value.reply_code == 530
    assert e.value.reply_text == ("NOT_ALLOWED - number of channels opened for user 'lim-user' "
                                  "has reached the maximum allowed user limit of (2)")
    assert broker.wait_log("channel.open refused: number of channels opened for user 'lim-user'")
    ok(broker.api("/api/user-limits/lim-user/all", method="DELETE"))
    assert ok(broker.api("/api/user-limits/lim-user")) == []
    cs = [amqp(broker, user="lim-user", password="pw") for _ in range(2)]
    assert len([cs[0].channel() for _ in range(3)]) == 3
    for x in cs:
        x.close()


def test_unknown_limit_names_and_bad_values_are_400(broker):
    status, body = broker.api("/api/vhost-limits/%2F/max-foo", method="PUT", body={"value": 1})
    assert status == 400 and "max-foo" in body["reason"]
    status, body = broker.api("/api/vhost-limits/%2F/max-queues", method="PUT", body={"value": "x"})
    assert status == 400 and "max-queues should be a number" in body["reason"]
    assert broker.api("/api/user-limits/nobody/max-channels", method="PUT", body={"value": 1})[0] == 404
    assert broker.api("/api/vhost-limits/no-such-vhost")[0] == 404
    add_user(broker, "lim-reader")
    ok(broker.api("/api/users/lim-reader", method="PUT", body={"password": "pw", "tags": "monitoring"}))
    status, _ = broker.api("/api/vhost-limits/%2F/max-queues", method="PUT", body={"value": 1},
                           user="lim-reader", password="pw")
    assert status == 403, "setting limits needs administrator"
    assert ok(broker.api("/api/vhost-limits/%2F")) == []
    # PUT /api/users takes limits in the same body, as RabbitMQ's does.
    ok(broker.api("/api/users/lim-body", method="PUT",
                  body={"password": "pw", "tags": "", "limits": {"max-connections": 3}}))
    assert ok(broker.api("/api/user-limits/lim-body")) == [
        {"user": "lim-body", "value": {"max-connections": 3}}]
    status, body = broker.api("/api/users/lim-body", method="PUT",
                              body={"password": "pw", "tags": "", "limits": {"max-queues": 3}})
    assert status == 400 and "Unrecognised terms [max-queues] in user-limits" in body["reason"]


def test_queue_limit_refuses_declare_and_counts_mqtt_sessions(broker):
    add_vhost(broker, "lim-q")
    ok(broker.api("/api/vhost-limits/lim-q/max-queues", method="PUT", body={"value": 2}))
    c = amqp(broker, "lim-q")
    ch = c.channel()
    ch.queue_declare("q1")
    ch.queue_declare("q2")
    ch.queue_declare("q1")  # an existing queue is no new queue
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
        ch.queue_declare("q3")
    assert e.value.reply_code == 406
    assert e.value.reply_text == ("PRECONDITION_FAILED - cannot declare queue 'q3': "
                                  "queue limit in vhost 'lim-q' (2) is reached")
    assert broker.wait_log("cannot declare queue 'q3'")
    ch = c.channel()
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
        ch.queue_declare("", exclusive=True)
    assert e.value.reply_code == 406
    # MQTT: the session queue is refused at SUBSCRIBE (0x97 in 5.0, 0x80 in 3.1.1)
    # and a persistent session at CONNECT.
    rc, m = mqtt5_connack(broker, "lim-q-dev", username="lim-q:guest")
    assert rc == 0
    assert mqtt5_subscribe(m, "a/b") == [0x97]
    assert mqtt311(broker, b"lim-q-311", username="lim-q:guest", subscribe=b"a/b") == (0, 0x80)
    rc, p = mqtt5_connack(broker, "lim-q-keep", username="lim-q:guest", clean=False, expiry=600)
    assert rc == 0x97
    stop(p)
    # Once a queue goes, the MQTT session queue takes the free place.
    c.channel().queue_delete("q2")
    assert mqtt5_subscribe(m, "a/b") == [1]
    assert "mqtt-subscription-lim-q-dev" in [q["name"] for q in ok(broker.api("/api/queues/lim-q"))]
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
        c.channel().queue_declare("q2")
    assert "queue limit in vhost 'lim-q' (2)" in e.value.reply_text
    stop(m)
    c.close()


def test_channel_max_limits_how_many_channels_not_their_numbers(broker):
    c = broker.connect(channel_max=2)
    high = c.channel(channel_number=65535)
    high.queue_declare("on-65535", auto_delete=True)
    high.basic_publish("", "on-65535", b"hi")
    assert high.basic_get("on-65535", auto_ack=True)[2] == b"hi"
    c.channel(channel_number=300)
    numbers = [ch["number"] for ch in ok(broker.api("/api/channels"))]
    assert 65535 in numbers and 300 in numbers
    with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as e:
        c.channel(channel_number=7)
    assert e.value.reply_code == 530
    assert e.value.reply_text == ("NOT_ALLOWED - number of channels opened (2) has reached "
                                  "the negotiated channel_max (2)")
    assert broker.wait_log("channel.open refused: number of channels opened (2)")
    # With the default channel_max (2047), channel 65535 is fine too (aiormq uses it).
    d = broker.connect()
    d.channel(channel_number=65535).queue_declare("", exclusive=True)
    d.close()


def test_connection_max_refuses_amqp_and_mqtt(tmp_path):
    b = Broker(tmp_path, {"WARREN_LIMITS__CONNECTION_MAX": "2"})
    try:
        assert b.wait_log("node connection limit (connection_max): 2")
        first, second = b.connect(), b.connect()
        text = refused_open(b)
        assert "530" in text and "NOT_ALLOWED - connection refused: node connection limit (2) is reached" in text
        rc, m = mqtt5_connack(b, "node-dev")
        assert rc == 0x97
        stop(m)
        assert mqtt311(b, b"node-311") == (3, None)
        assert b.wait_log("MQTT connection refused: connection refused: node connection limit (2)")
        first.close()
        assert mqtt311(b, b"node-311-ok") == (0, None)
        second.close()
    finally:
        b.stop()


def test_limits_with_warrenctl_survive_restart_and_round_trip_definitions(tmp_path):
    b = Broker(tmp_path / "one")
    try:
        add_vhost(b, "ops")
        add_user(b, "ops-user", vhosts=("ops",))
        ctl(b, "set_vhost_limits", "-p", "ops", '{"max-connections": 1, "max-queues": 10}')
        ctl(b, "set_user_limits", "ops-user", '{"max-connections": 5}')
        ctl(b, "set_user_limits", "ops-user", '{"max-channels": 7}')  # merged
        assert json.loads(ctl(b, "list_vhost_limits", "-p", "ops").stdout) == {
            "max-connections": 1, "max-queues": 10}
        table = ctl(b, "list_vhost_limits", "--global").stdout.splitlines()
        assert table[0].split() == ["vhost", "limits"] and table[1].startswith("ops ")
        assert json.loads(ctl(b, "list_user_limits", "ops-user").stdout) == {
            "max-channels": 7, "max-connections": 5}
        r = ctl(b, "set_vhost_limits", "-p", "ops", '{"max-conns": 1}', check=False)
        assert r.returncode == 1 and "max-conns" in r.stderr
        assert ctl(b, "set_vhost_limits", "-p", "ops", "not json", check=False).returncode == 64
        # set_vhost_limits replaces the whole set, as in rabbitmqctl.
        ctl(b, "set_vhost_limits", "-p", "ops", '{"max-connections": 1}')
        b.restart()
        assert ok(b.api("/api/vhost-limits/ops")) == [{"vhost": "ops", "value": {"max-connections": 1}}]
        assert ok(b.api("/api/user-limits/ops-user")) == [
            {"user": "ops-user", "value": {"max-channels": 7, "max-connections": 5}}]
        held = amqp(b, "ops", user="ops-user", password="pw")
        assert "connection limit (1) is reached" in refused_open(b, vhost="ops", user="ops-user", password="pw")
        held.close()
        defs = ok(b.api("/api/definitions"))
    finally:
        b.stop()
    # RabbitMQ 3.10's format: vhost limits as parameters, user limits on the user.
    assert {"vhost": "ops", "component": "vhost-limits", "name": "limits",
            "value": {"max-connections": 1}} in defs["parameters"]
    [user] = [u for u in defs["users"] if u["name"] == "ops-user"]
    assert user["limits"] == {"max-channels": 7, "max-connections": 5}
    c = Broker(tmp_path / "two")
    try:
        ok(c.api("/api/definitions", method="POST", body=defs))
        assert ok(c.api("/api/vhost-limits")) == [{"vhost": "ops", "value": {"max-connections": 1}}]
        assert json.loads(ctl(c, "list_user_limits", "ops-user").stdout)["max-connections"] == 5
        ctl(c, "clear_vhost_limits", "-p", "ops")
        ctl(c, "clear_user_limits", "ops-user", "max-channels")
        assert json.loads(ctl(c, "list_user_limits", "ops-user").stdout) == {"max-connections": 5}
        ctl(c, "clear_user_limits", "ops-user")
        assert ok(c.api("/api/vhost-limits")) == [] and ok(c.api("/api/user-limits")) == []
        c.restart()
        assert ok(c.api("/api/vhost-limits")) == [] and ok(c.api("/api/user-limits")) == []
    finally:
        c.stop()
