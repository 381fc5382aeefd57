"""Fields that one protocol allows and the other cannot carry: refused with
the protocol's answer, never cut or corrupted on the way across."""
import queue
import socket
import struct

import pika
import pytest

from test_mqtt import Client, mqtt_packet, mqtt_str, raw_connect, read_packet

PUBACK = 0x40
DISCONNECT = 0xE0
TOPIC_NAME_INVALID = 0x90
LONG_TOPIC = b"long/" + b"t" * 300  # AMQP routing keys stop at 255 bytes


def publish_qos1(topic, pkid, payload, v5=True):
    props = b"\x00" if v5 else b""
    return mqtt_packet(0x32, mqtt_str(topic) + struct.pack(">H", pkid) + props + payload)


def test_v5_qos1_long_topic_gets_0x90_and_routes_nowhere(broker):
    watcher = Client(broker, "long-watcher")
    watcher.sub("long/#", qos=1)
    s, _ = raw_connect(broker, b"long-v5", level=5)
    s.sendall(publish_qos1(LONG_TOPIC, 7, b"cut?"))
    kind, body = read_packet(s)
    assert kind == PUBACK and body[:2] == struct.pack(">H", 7)
    assert body[2] == TOPIC_NAME_INVALID
    # The connection goes on: a topic within the limit is accepted.
    s.sendall(publish_qos1(b"long/ok", 8, b"fine"))
    kind, body = read_packet(s)
    assert kind == PUBACK and body[:2] == struct.pack(">H", 8)
    assert len(body) == 2 or body[2] == 0
    assert watcher.get().payload == b"fine"
    watcher.none()
    s.close()
    watcher.close()
    assert broker.wait_log("longer than 255")


def test_v5_qos0_long_topic_disconnects_with_0x90(broker):
    s, _ = raw_connect(broker, b"long-v5-q0", level=5)
    s.sendall(mqtt_packet(0x30, mqtt_str(LONG_TOPIC) + b"\x00" + b"x"))
    kind, body = read_packet(s)
    assert kind == DISCONNECT and body[0] == TOPIC_NAME_INVALID
    s.close()


def test_v311_long_topic_closes_the_connection(broker):
    s, _ = raw_connect(broker, b"long-v4", level=4)
    s.sendall(publish_qos1(LONG_TOPIC, 3, b"x", v5=False))
    s.settimeout(5)
    try:
        first = s.recv(1)
    except ConnectionResetError:
        first = b""
    assert first == b"", "a 3.1.1 client has no reason code: the broker closes"
    s.close()


def test_amqp_header_too_long_for_a_user_property_is_left_out(broker):
    got = queue.Queue()
    c = Client(broker, "big-header-reader", v5=True)
    c.c.on_message = lambda cl, u, m: got.put(m)
    c.sub("big/hdr", qos=1)
    ch = broker.connect().channel()
    headers = {"small": "kept", "huge": "h" * 70_000}
    ch.basic_publish("amq.topic", "big.hdr", b"body", pika.BasicProperties(headers=headers))
    m = got.get(timeout=10)
    assert m.payload == b"body"
    props = dict(getattr(m.properties, "UserProperty", []))
    assert props.get("small") == "kept"
    assert "huge" not in props
    # The stream stays in step: the next message decodes too.
    ch.basic_publish("amq.topic", "big.hdr", b"next")
    assert got.get(timeout=10).payload == b"next"
    c.close()


def test_v5_will_with_long_topic_gets_connack_0x90(broker):
    s = socket.create_connection(("127.0.0.1", broker.mqtt_port), timeout=5)
    will_flag, will_qos1, clean = 0x04, 0x08, 0x02
    body = mqtt_str(b"MQTT") + bytes([5, will_flag | will_qos1 | clean]) + struct.pack(">H", 60)
    body += b"\x00"  # no CONNECT properties
    body += mqtt_str(b"long-will")
    body += b"\x00" + mqtt_str(LONG_TOPIC) + mqtt_str(b"gone")  # will properties, topic, payload
    s.sendall(mqtt_packet(0x10, body))
    kind, ack = read_packet(s)
    assert kind == 0x20 and ack[1] == TOPIC_NAME_INVALID
    s.close()


@pytest.mark.parametrize("level,code", [(5, 0x85), (4, 0x02)])
def test_client_id_too_long_for_a_queue_name_is_refused(broker, level, code):
    # The session queue is `mqtt-subscription-<client id>`; queue names stop at 255 bytes.
    s = socket.create_connection(("127.0.0.1", broker.mqtt_port), timeout=5)
    body = mqtt_str(b"MQTT") + bytes([level, 0x02]) + struct.pack(">H", 60)
    if level == 5:
        body += b"\x00"
    body += mqtt_str(b"c" * 300)
    s.sendall(mqtt_packet(0x10, body))
    kind, ack = read_packet(s)
    assert kind == 0x20 and ack[1] == code
    s.close()
    # A long id that still fits is accepted.
    s, ack = raw_connect(broker, b"c" * 200, level=level)
    assert ack[3] == 0
    s.close()


def test_mqtt_user_property_name_too_long_for_an_amqp_header_is_left_out(broker):
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties
    ch = broker.connect().channel()
    q = ch.queue_declare("", exclusive=True).method.queue
    ch.queue_bind(q, "amq.topic", "prop.names")
    c = Client(broker, "long-prop-name", v5=True)
    props = Properties(PacketTypes.PUBLISH)
    props.UserProperty = [("n" * 300, "dropped"), ("small", "ok")]
    c.pub("prop/names", b"payload", qos=1, properties=props)  # PUBACK: routed
    got = ch.basic_get(q, auto_ack=True)
    assert got[0] is not None, "the message reaches the AMQP queue"
    _, props_in, body = got
    assert body == b"payload"
    assert props_in.headers.get("small") == "ok"
    assert not any(len(k) > 255 for k in props_in.headers)
    c.close()


def test_long_client_id_with_a_wrong_password_is_refused_for_the_password(broker):
    # Authentication comes first: a bad password answers 0x86 whatever the id.
    s = socket.create_connection(("127.0.0.1", broker.mqtt_port), timeout=5)
    user_pass_clean = 0x80 | 0x40 | 0x02
    body = mqtt_str(b"MQTT") + bytes([5, user_pass_clean]) + struct.pack(">H", 60) + b"\x00"
    body += mqtt_str(b"c" * 300) + mqtt_str(b"guest") + mqtt_str(b"wrong")
    s.sendall(mqtt_packet(0x10, body))
    kind, ack = read_packet(s)
    assert kind == 0x20 and ack[1] == 0x86
    s.close()
