"""Users, vhosts and per-vhost permissions, enforced on AMQP (pika) and MQTT
(paho-mqtt), set through the management API and kept across restarts."""
import queue as queue_mod

import paho.mqtt.client as mqtt
import pika
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from conftest import Broker


@pytest.fixture(scope="module")
def pbroker(tmp_path_factory):
    b = Broker(tmp_path_factory.mktemp("perm"))
    assert b.api("/api/vhosts/team", method="PUT")[0] == 201
    assert b.api("/api/vhosts/iot", method="PUT")[0] == 201
    assert b.api("/api/users/alice", method="PUT", body={"password": "alicepw", "tags": ""})[0] == 201
    # alice: configure and read only her own resources, write to them and amq.default.
    assert b.api("/api/permissions/team/alice", method="PUT", body={
        "configure": "^alice-", "write": "^(alice-|amq\\.default$)", "read": "^alice-"})[0] == 201
    assert b.api("/api/users/dev", method="PUT", body={"password": "devpw", "tags": []})[0] == 201
    # dev (an MQTT device): may publish to amq.topic but not subscribe (no
    # configure on any queue).
    assert b.api("/api/permissions/iot/dev", method="PUT", body={
        "configure": "", "write": "^amq\\.topic$", "read": ".*"})[0] == 201
    yield b
    b.stop()


def alice(b, vhost="team"):
    return pika.BlockingConnection(pika.ConnectionParameters(
        "127.0.0.1", b.amqp_port, vhost, pika.PlainCredentials("alice", "alicepw")))


def refused(code, fn):
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
        fn()
    assert e.value.reply_code == code, e.value
    return e.value.reply_text


def check_alice_rights(b):
    c = alice(b)
    ch = c.channel()
    ch.queue_declare("alice-q")
    ch.exchange_declare("alice-x", "direct")
    ch.queue_bind("alice-q", "alice-x", "k")
    ch.confirm_delivery()
    ch.basic_publish("alice-x", "k", b"via own exchange")
    ch.basic_publish("", "alice-q", b"via default exchange")
    assert ch.queue_declare("alice-q", passive=True).method.message_count == 2
    m, _, body = ch.basic_get("alice-q", auto_ack=True)
    assert body == b"via own exchange"
    text = refused(403, lambda: ch.queue_declare("bob-q"))
    assert text == "ACCESS_REFUSED - access to queue 'bob-q' in vhost 'team' refused for user 'alice'"
    ch = c.channel()
    refused(403, lambda: ch.exchange_declare("bob-x", "fanout"))
    ch = c.channel()
    # Publishing needs write on the exchange.
    ch.basic_publish("amq.fanout", "", b"nope")
    refused(403, lambda: ch.queue_declare("alice-q", passive=True))
    ch = c.channel()
    # Binding a queue to amq.direct needs read on amq.direct.
    refused(403, lambda: ch.queue_bind("alice-q", "amq.direct", "k"))
    c.close()
    return b


def test_amqp_permissions_allowed_and_refused(pbroker):
    check_alice_rights(pbroker)
    assert pbroker.wait_log("configure access to queue 'bob-q' refused")


def test_consume_get_purge_need_read(pbroker):
    # guest (administrator, all rights in /) makes a queue in team through the API;
    # alice may not read it.
    assert pbroker.api("/api/permissions/team/guest", method="PUT",
                       body={"configure": ".*", "write": ".*", "read": ".*"})[0] == 201
    g = pbroker.connect(virtual_host="team")
    g.channel().queue_declare("shared-q")
    g.close()
    c = alice(pbroker)
    for op in (lambda ch: ch.basic_get("shared-q"),
               lambda ch: ch.basic_consume("shared-q", lambda *a: None),
               lambda ch: ch.queue_purge("shared-q"),
               lambda ch: ch.queue_delete("shared-q")):
        ch = c.channel()
        refused(403, lambda: op(ch))
    c.close()


def test_vhost_without_permissions_is_refused_with_530(pbroker):
    with pytest.raises(pika.exceptions.ProbableAccessDeniedError) as e:
        alice(pbroker, vhost="iot")
    assert "530" in str(e.value) and "access to vhost 'iot' refused for user 'alice'" in str(e.value)
    with pytest.raises(pika.exceptions.ProbableAccessDeniedError):
        alice(pbroker, vhost="no-such-vhost")


def test_permission_changes_apply_to_open_connections(pbroker):
    c = alice(pbroker)
    ch = c.channel()
    ch.queue_declare("alice-live")
    assert pbroker.api("/api/permissions/team/alice", method="PUT", body={
        "configure": "^nothing$", "write": "^(alice-|amq\\.default$)", "read": "^alice-"})[0] == 204
    refused(403, lambda: ch.queue_declare("alice-live2"))
    assert pbroker.api("/api/permissions/team/alice", method="PUT", body={
        "configure": "^alice-", "write": "^(alice-|amq\\.default$)", "read": "^alice-"})[0] == 204
    ch = c.channel()
    ch.queue_declare("alice-live2")
    c.close()


def mqtt_client(b, user, password, v5=True):
    proto = mqtt.MQTTv5 if v5 else mqtt.MQTTv311
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"perm-{user}-{v5}", protocol=proto)
    c.username_pw_set(user, password)
    events = queue_mod.Queue()
    c.on_connect = lambda cl, ud, flags, rc, props=None: events.put(("connack", rc))
    c.on_subscribe = lambda cl, ud, mid, rcs, props=None: events.put(("suback", rcs))
    c.on_publish = lambda cl, ud, mid, rc, props=None: events.put(("puback", rc))
    c.on_disconnect = lambda cl, ud, flags, rc, props=None: events.put(("disconnect", rc))
    c.connect("127.0.0.1", b.mqtt_port, keepalive=30)
    c.loop_start()
    return c, events


def next_event(events, kind):
    while True:
        ev = events.get(timeout=10)
        if ev[0] == kind:
            return ev[1]


def test_mqtt_vhost_user_publish_allowed_subscribe_refused(pbroker):
    # An AMQP consumer in vhost iot sees what the device publishes.
    assert pbroker.api("/api/permissions/iot/guest", method="PUT",
                       body={"configure": ".*", "write": ".*", "read": ".*"})[0] == 201
    g = pbroker.connect(virtual_host="iot")
    gch = g.channel()
    q = gch.queue_declare("", exclusive=True).method.queue
    gch.queue_bind(q, "amq.topic", "sensors.#")

    c, ev = mqtt_client(pbroker, "iot:dev", "devpw", v5=True)
    assert next_event(ev, "connack").value == 0
    c.subscribe("sensors/#", qos=1)
    assert [r.value for r in next_event(ev, "suback")] == [0x87]
    info = c.publish("sensors/room1/temp", b"21.5", qos=1)
    info.wait_for_publish(10)
    assert next_event(ev, "puback").value == 0
    for _ in range(50):
        m, _, body = gch.basic_get(q, auto_ack=True)
        if m:
            break
        g.sleep(0.1)
    assert body == b"21.5"
    c.loop_stop()
    c.disconnect()
    g.close()

    # 3.1.1: a refused subscription is 0x80 in SUBACK.
    c, ev = mqtt_client(pbroker, "iot:dev", "devpw", v5=False)
    assert next_event(ev, "connack") == 0
    c.subscribe("sensors/#", qos=1)
    assert [int(r.value) if hasattr(r, "value") else int(r) for r in next_event(ev, "suback")] == [0x80]
    c.loop_stop()
    c.disconnect()


def test_mqtt_publish_refused_gets_0x87(pbroker):
    # Only read on amq.topic: QoS 1 publish is answered with PUBACK 0x87 (v5).
    assert pbroker.api("/api/users/reader", method="PUT", body={"password": "r", "tags": ""})[0] == 201
    assert pbroker.api("/api/permissions/iot/reader", method="PUT",
                       body={"configure": ".*", "write": "^mqtt-", "read": ".*"})[0] == 201
    c, ev = mqtt_client(pbroker, "iot:reader", "r", v5=True)
    assert next_event(ev, "connack").value == 0
    c.publish("sensors/room1/temp", b"x", qos=1)
    assert next_event(ev, "puback").value == 0x87
    c.loop_stop()
    c.disconnect()
    assert pbroker.wait_log("write access to exchange 'amq.topic' refused")


def test_mqtt_connect_without_vhost_permission(pbroker):
    c, ev = mqtt_client(pbroker, "team:dev", "devpw", v5=True)
    assert next_event(ev, "connack").value == 0x87
    c.loop_stop()
    c, ev = mqtt_client(pbroker, "team:dev", "devpw", v5=False)
    # paho reports 3.1.1's CONNACK return code 5 as "Not authorized".
    assert str(next_event(ev, "connack")) == "Not authorized"
    c.loop_stop()


def test_users_permissions_survive_restart_and_delete(pbroker):
    pbroker.restart()
    check_alice_rights(pbroker)
    status, perms = pbroker.api("/api/permissions")
    assert {"user": "alice", "vhost": "team", "configure": "^alice-",
            "write": "^(alice-|amq\\.default$)", "read": "^alice-"} in perms
    # Passwords are stored hashed, never in clear.
    defs = (pbroker.tmp_path / "data" / "definitions.json").read_text()
    assert "alicepw" not in defs and "alicepw" not in pbroker.log()
    # Deleting the user closes its connections and refuses new ones.
    c = alice(pbroker)
    assert pbroker.api("/api/users/alice", method="DELETE")[0] == 204
    for _ in range(100):
        if not c.is_open:
            break
        try:
            c.process_data_events(0.05)
        except pika.exceptions.ConnectionClosedByBroker as e:
            assert e.reply_code == 320
            break
    assert not c.is_open
    with pytest.raises(pika.exceptions.ProbableAuthenticationError):
        alice(pbroker)
    # Deleting a vhost removes its queues and permissions.
    assert pbroker.api("/api/vhosts/team", method="DELETE")[0] == 204
    status, queues = pbroker.api("/api/queues")
    assert not any(q["vhost"] == "team" for q in queues)
    assert not any(p["vhost"] == "team" for p in pbroker.api("/api/permissions")[1])
    pbroker.restart()
    assert not any(v["name"] == "team" for v in pbroker.api("/api/vhosts")[1])


def test_only_administrators_manage_users(pbroker):
    assert pbroker.api("/api/users/mon", method="PUT", body={"password": "m", "tags": "monitoring"})[0] == 201
    status, _ = pbroker.api("/api/overview", user="mon", password="m")
    assert status == 200
    status, _ = pbroker.api("/api/users", user="mon", password="m")
    assert status == 403
    status, _ = pbroker.api("/api/users/x", user="mon", password="m", method="PUT", body={"password": "x"})
    assert status == 403
    status, _ = pbroker.api("/api/queues/%2F/q", user="mon", password="m", method="PUT", body={})
    assert status == 403
