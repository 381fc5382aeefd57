"""MQTT 5.0 (and 3.1) as the specification says, checked on the wire with a
raw client (mqtt_raw) and with paho-mqtt. Each test names the statements
it checks."""
import queue
import struct
import time

import paho.mqtt.client as mqtt
import pika
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

import mqtt_raw as r
from conftest import Broker
from mqtt_raw import Raw

QOS1 = 1
QOS2 = 2


def amqp_publish(broker, key, body, persistent=True, **props):
    c = broker.connect()
    ch = c.channel()
    ch.confirm_delivery()
    ch.basic_publish("amq.topic", key, body,
                     pika.BasicProperties(delivery_mode=2 if persistent else 1, **props))
    c.close()


def wait_closed(broker, client_id, timeout=10):
    """True once the broker has logged the end of `client_id`'s connection."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if any("MQTT connection closed" in line and f"client_id={client_id}\n" in line
               for line in broker.lines):
            return True
        time.sleep(0.02)
    return False


def test_connack_announces_the_servers_capabilities(broker):
    c = Raw(broker.mqtt_port, b"caps")
    p = c.connack_props
    assert p[r.RECEIVE_MAXIMUM] == 100
    assert p[r.TOPIC_ALIAS_MAXIMUM] == 64
    assert p[r.MAXIMUM_PACKET_SIZE] == 16 << 20
    assert p[r.RETAIN_AVAILABLE] == 1
    assert p[r.WILDCARD_AVAILABLE] == 1
    assert p[r.SUBSCRIPTION_IDS_AVAILABLE] == 1
    assert p[r.SHARED_AVAILABLE] == 1
    # QoS 2 is supported, so Maximum QoS is absent (3.2.2.3.4 allows only 0 or 1).
    assert r.MAXIMUM_QOS not in p
    # No server keep alive unless one is configured.
    assert r.SERVER_KEEP_ALIVE not in p
    c.close()


def test_subscription_identifiers_come_back_on_matching_publishes(broker):
    c = Raw(broker.mqtt_port, b"subid")
    assert c.subscribe(1, ("id/#", QOS1), sub_props=[(r.SUBSCRIPTION_ID, 7)]) == [1]
    assert c.subscribe(2, ("id/+", QOS1), sub_props=[(r.SUBSCRIPTION_ID, 268_435_455)]) == [1]
    assert c.subscribe(3, ("id/x/y", QOS1)) == [1]
    amqp_publish(broker, "id.x", b"both")
    p = c.publish_in()
    assert p.payload == b"both"
    assert sorted(p.props[r.SUBSCRIPTION_ID]) == [7, 268_435_455]
    c.ack(r.PUBACK, p.pkid)
    amqp_publish(broker, "id.x.y", b"one")
    p = c.publish_in()
    # id/x/y has no identifier; id/# has 7 (MQTT-3.3.4-3: one per matching subscription that has one).
    assert p.payload == b"one" and p.props[r.SUBSCRIPTION_ID] == [7]
    c.ack(r.PUBACK, p.pkid)
    c.close()


def test_subscription_identifiers_survive_a_reconnect(broker):
    expiry = [(r.SESSION_EXPIRY, 300)]
    c = Raw(broker.mqtt_port, b"subid-keep", clean=True, connect_props=expiry)
    c.subscribe(1, ("keep/+", QOS1), sub_props=[(r.SUBSCRIPTION_ID, 42)])
    c.disconnect()
    amqp_publish(broker, "keep.a", b"offline")
    c = Raw(broker.mqtt_port, b"subid-keep", clean=False, connect_props=expiry)
    assert c.session_present
    p = c.publish_in()
    assert (p.payload, p.props[r.SUBSCRIPTION_ID]) == (b"offline", [42])
    c.ack(r.PUBACK, p.pkid)
    c.disconnect(disc_props=[(r.SESSION_EXPIRY, 0)])


def test_subscription_identifier_zero_is_a_protocol_error(broker):
    c = Raw(broker.mqtt_port, b"subid-zero")
    body = b"\x00\x01" + b"\x02\x0b\x00" + r.string("z/#") + b"\x01"
    c.send(r.packet(0x82, body))
    assert c.disconnect_reason() == 0x82
    assert c.closed()
    assert broker.wait_log("subscription identifier 0")


def test_dollar_topics_do_not_match_leading_wildcards(broker):
    """MQTT-4.7.2-1."""
    c = Raw(broker.mqtt_port, b"dollar")
    assert c.subscribe(1, ("#", QOS1), ("+/status", QOS1)) == [1, 1]
    amqp_publish(broker, "$SYS.status", b"hidden")
    amqp_publish(broker, "dev.status", b"seen")
    p = c.publish_in()
    assert (p.topic, p.payload) == ("dev/status", b"seen")
    c.ack(r.PUBACK, p.pkid)
    assert c.subscribe(2, ("$SYS/#", QOS1)) == [1]
    amqp_publish(broker, "$SYS.status", b"now")
    p = c.publish_in()
    assert (p.topic, p.payload) == ("$SYS/status", b"now")
    c.ack(r.PUBACK, p.pkid)
    c.close()


def test_each_subscription_delivers_at_its_own_granted_qos(broker):
    """3.3.4: min(publish QoS, the granted QoS of the matching subscriptions)."""
    c = Raw(broker.mqtt_port, b"perqos")
    assert c.subscribe(1, ("low/#", 0), ("high/#", QOS2)) == [0, 2]
    pub = Raw(broker.mqtt_port, b"perqos-pub")
    pub.publish("low/a", b"l", qos=QOS1, pkid=1)
    pub.expect(r.PUBACK)
    p = c.publish_in()
    assert (p.topic, p.qos) == ("low/a", 0)
    pub.publish("high/a", b"h", qos=QOS1, pkid=2)
    pub.expect(r.PUBACK)
    p = c.publish_in()
    assert (p.topic, p.qos) == ("high/a", 1)
    c.ack(r.PUBACK, p.pkid)
    pub.close()
    c.close()


def test_payload_format_indicator_is_forwarded_and_checked(broker):
    c = Raw(broker.mqtt_port, b"pfi")
    c.subscribe(1, ("pfi/#", QOS1))
    ch = broker.connect().channel()
    q = ch.queue_declare("", exclusive=True).method.queue
    ch.queue_bind(q, "amq.topic", "pfi.*")
    pub = Raw(broker.mqtt_port, b"pfi-pub")
    pub.publish("pfi/t", "héllo".encode(), qos=QOS1, pkid=1, pub_props=[(r.PAYLOAD_FORMAT, 1)])
    pub.expect(r.PUBACK)
    p = c.publish_in()
    assert p.props.get(r.PAYLOAD_FORMAT) == 1
    c.ack(r.PUBACK, p.pkid)
    method, props, body = next(ch.consume(q, auto_ack=True, inactivity_timeout=10))
    assert props.headers["x-mqtt-payload-format-indicator"] == 1
    # Says UTF-8, is not: PUBACK 0x99, nothing routed (3.3.2.3.2).
    pub.publish("pfi/t", b"\xff\xfe", qos=QOS1, pkid=2, pub_props=[(r.PAYLOAD_FORMAT, 1)])
    _, ack = pub.expect(r.PUBACK)
    assert ack[2] == 0x99
    pub.publish("pfi/t", b"after", qos=QOS1, pkid=3)
    pub.expect(r.PUBACK)
    assert c.publish_in().payload == b"after"
    # A value other than 0 or 1 is a protocol error.
    pub.publish("pfi/t", b"x", qos=0, pub_props=[(r.PAYLOAD_FORMAT, 2)])
    assert pub.disconnect_reason() == 0x82
    c.close()


def test_message_expiry_counts_down_while_queued_and_drops_expired(broker):
    """3.3.2.3.3: the interval sent is the received one minus the time waited."""
    expiry = [(r.SESSION_EXPIRY, 300)]
    c = Raw(broker.mqtt_port, b"expiring", connect_props=expiry)
    c.subscribe(1, ("exp/#", QOS1))
    c.disconnect()
    pub = Raw(broker.mqtt_port, b"expiring-pub")
    pub.publish("exp/long", b"long", qos=QOS1, pkid=1, pub_props=[(r.MESSAGE_EXPIRY, 60)])
    pub.expect(r.PUBACK)
    pub.publish("exp/short", b"short", qos=QOS1, pkid=2, pub_props=[(r.MESSAGE_EXPIRY, 1)])
    pub.expect(r.PUBACK)
    pub.close()
    time.sleep(2.2)  # the time being measured: the short one's interval passes
    c = Raw(broker.mqtt_port, b"expiring", clean=False, connect_props=expiry)
    p = c.publish_in()
    assert p.payload == b"long"
    assert 50 <= p.props[r.MESSAGE_EXPIRY] <= 58, p.props
    c.ack(r.PUBACK, p.pkid)
    amqp_publish(broker, "exp.marker", b"marker")
    # The expired message is never sent: the next one is the marker.
    assert c.publish_in().payload == b"marker"
    c.disconnect(disc_props=[(r.SESSION_EXPIRY, 0)])


def test_deliveries_over_the_clients_maximum_packet_size_are_dropped(broker):
    """MQTT-3.1.2-24/25: never send a packet larger than the client's limit."""
    c = Raw(broker.mqtt_port, b"small", connect_props=[(r.MAXIMUM_PACKET_SIZE, 100)])
    c.subscribe(1, ("mps/#", QOS1))
    amqp_publish(broker, "mps.t", b"x" * 200)
    amqp_publish(broker, "mps.t", b"fits")
    p = c.publish_in()
    assert p.payload == b"fits"
    c.ack(r.PUBACK, p.pkid)
    ch = broker.connect().channel()
    # Dropped, not left in the queue to block the ones after it.
    assert ch.queue_declare("mqtt-subscription-small", passive=True).method.message_count == 0
    c.close()


def test_server_to_client_topic_aliases(broker):
    """3.3.2.3.4: within the client's Topic Alias Maximum."""
    c = Raw(broker.mqtt_port, b"aliased", connect_props=[(r.TOPIC_ALIAS_MAXIMUM, 1)])
    c.subscribe(1, ("al/#", 0))
    for key in ["al.one", "al.one", "al.two"]:
        amqp_publish(broker, key, key.encode(), persistent=False)
    first, second, third = c.publish_in(), c.publish_in(), c.publish_in()
    assert (first.topic, first.props.get(r.TOPIC_ALIAS)) == ("al/one", 1)
    assert (second.topic, second.props.get(r.TOPIC_ALIAS), second.payload) == ("", 1, b"al.one")
    # Only one alias allowed: the next topic goes in full, without one.
    assert (third.topic, third.props.get(r.TOPIC_ALIAS)) == ("al/two", None)
    c.close()
    # A client that allows none gets none.
    c = Raw(broker.mqtt_port, b"unaliased")
    c.subscribe(1, ("al/#", 0))
    amqp_publish(broker, "al.one", b"x", persistent=False)
    amqp_publish(broker, "al.one", b"y", persistent=False)
    assert [c.publish_in().topic for _ in range(2)] == ["al/one", "al/one"]
    c.close()


def test_suback_and_unsuback_reason_codes(broker):
    c = Raw(broker.mqtt_port, b"codes")
    codes = c.subscribe(1, ("ok/#", QOS1), ("bad/#/x", QOS1), ("", QOS1), ("$share/g/ok", 0),
                        ("$share//x", 0), ("a+b", 0))
    assert codes == [1, 0x8F, 0x8F, 0, 0x8F, 0x8F]
    assert c.unsubscribe(2, "ok/#", "never/subscribed", "$share/g/ok") == [0, 0x11, 0]
    c.close()
    # 3.1.1 has one failure code.
    c = Raw(broker.mqtt_port, b"codes4", level=4)
    assert c.subscribe(1, ("ok/#", QOS1), ("bad/#/x", QOS1), ("", 0)) == [1, 0x80, 0x80]
    c.close()


def test_no_local_on_a_shared_subscription_is_a_protocol_error(broker):
    c = Raw(broker.mqtt_port, b"nl-shared")
    body = b"\x00\x01\x00" + r.string("$share/g/t") + bytes([0x04 | 1])
    c.send(r.packet(0x82, body))
    assert c.disconnect_reason() == 0x82


def test_subscription_options_qos3_and_retain_handling3_are_malformed(broker):
    for options in (0x03, 0x30):
        c = Raw(broker.mqtt_port, b"opts")
        c.send(r.packet(0x82, b"\x00\x01\x00" + r.string("t") + bytes([options])))
        assert c.disconnect_reason() == 0x81


def test_offline_messages_of_an_expiring_session_arrive_in_order_with_dup_for_unacked(broker):
    expiry = [(r.SESSION_EXPIRY, 300)]
    c = Raw(broker.mqtt_port, b"offline5", connect_props=expiry)
    c.subscribe(1, ("off/#", QOS2))
    amqp_publish(broker, "off.t", b"m0")
    p = c.publish_in()
    assert p.payload == b"m0" and not p.dup
    c.close()  # never acknowledged: comes back with DUP
    # Published once the broker has seen the close, so that none of them
    # was sent to the dead connection (which would rightly set DUP too).
    assert wait_closed(broker, "offline5")
    for i in range(1, 4):
        amqp_publish(broker, "off.t", f"m{i}".encode())
    c = Raw(broker.mqtt_port, b"offline5", clean=False, connect_props=expiry)
    assert c.session_present
    got = []
    for _ in range(4):
        p = c.publish_in()
        got.append((p.payload, p.dup))
        c.ack(r.PUBACK, p.pkid)
    assert got == [(b"m0", True), (b"m1", False), (b"m2", False), (b"m3", False)]
    c.disconnect(disc_props=[(r.SESSION_EXPIRY, 0)])
    # Expiry set to 0 on DISCONNECT ends the session (3.14.2.2.2).
    c = Raw(broker.mqtt_port, b"offline5", clean=False, connect_props=expiry)
    assert not c.session_present
    c.disconnect(disc_props=[(r.SESSION_EXPIRY, 0)])


def test_session_expiry_on_disconnect_after_zero_is_a_protocol_error(broker):
    """MQTT-3.14.2-2."""
    c = Raw(broker.mqtt_port, b"exp-zero")
    c.send(r.packet(0xE0, b"\x00" + r.props((r.SESSION_EXPIRY, 30))))
    assert c.disconnect_reason() == 0x82


def test_client_ids_empty_and_assigned(broker):
    c = Raw(broker.mqtt_port, b"", clean=False, expect_ok=False)
    assert c.code == 0x85
    c.close()
    c = Raw(broker.mqtt_port, b"", clean=True)
    assigned = c.connack_props[r.ASSIGNED_CLIENT_ID]
    assert assigned
    c.close()


def test_enhanced_authentication_method_is_refused(broker):
    c = Raw(broker.mqtt_port, b"scram", connect_props=[(r.AUTH_METHOD, "SCRAM-SHA-1")],
            expect_ok=False)
    assert c.code == 0x8C
    assert c.closed()


def test_receive_maximum_server_side_is_enforced_with_0x93(broker):
    """MQTT-3.3.4-8: more QoS 2 publishes unacknowledged than announced."""
    c = Raw(broker.mqtt_port, b"flood")
    limit = c.connack_props[r.RECEIVE_MAXIMUM]
    for i in range(1, limit + 1):
        c.publish("flood/t", b"x", qos=QOS2, pkid=i)
        c.expect(r.PUBREC)
    c.publish("flood/t", b"x", qos=QOS2, pkid=limit + 1)
    assert c.disconnect_reason() == 0x93
    assert broker.wait_log("Receive Maximum")


def test_receive_maximum_of_the_client_bounds_deliveries_in_flight(broker):
    c = Raw(broker.mqtt_port, b"slow", connect_props=[(r.RECEIVE_MAXIMUM, 2)])
    c.subscribe(1, ("rm/#", QOS1))
    for i in range(4):
        amqp_publish(broker, "rm.t", f"{i}".encode())
    a, b = c.publish_in(), c.publish_in()
    c.s.settimeout(0.5)
    with pytest.raises(TimeoutError):
        c.read()
    c.s.settimeout(10)
    c.ack(r.PUBACK, a.pkid)
    assert c.publish_in().payload == b"2"
    c.close()


def test_pubrel_for_an_unknown_packet_id_gets_0x92(broker):
    c = Raw(broker.mqtt_port, b"pubrel")
    c.ack(r.PUBREL, 77)
    _, body = c.expect(r.PUBCOMP)
    assert body[2] == 0x92
    c.close()


def test_protocol_errors_in_publish(broker):
    # A property given twice.
    c = Raw(broker.mqtt_port, b"twice")
    c.publish("t", b"x", pub_props=[(r.CONTENT_TYPE, "a"), (r.CONTENT_TYPE, "b")])
    assert c.disconnect_reason() == 0x82
    # A subscription identifier from the client (MQTT-3.3.4-6).
    c = Raw(broker.mqtt_port, b"subid-pub")
    c.publish("t", b"x", pub_props=[(r.SUBSCRIPTION_ID, 3)])
    assert c.disconnect_reason() == 0x82
    # DUP on QoS 0 (MQTT-3.3.1-2).
    c = Raw(broker.mqtt_port, b"dup0")
    c.publish("t", b"x", qos=0, dup=True)
    assert c.disconnect_reason() == 0x81
    # A response topic with a wildcard (MQTT-3.3.2-14).
    c = Raw(broker.mqtt_port, b"resp")
    c.publish("t", b"x", pub_props=[(r.RESPONSE_TOPIC, "r/#")])
    assert c.disconnect_reason() == 0x82
    assert broker.wait_log("invalid response topic")


def test_mqtt_3_1_mqisdp_clients_connect_publish_and_subscribe(broker):
    """Protocol level 3, as RabbitMQ and mosquitto accept it."""
    c = Raw(broker.mqtt_port, b"old-device", level=3, name=b"MQIsdp")
    assert c.subscribe(1, ("legacy/#", QOS1)) == [1]
    c.publish("legacy/t", b"hello", qos=QOS1, pkid=5)
    # Our PUBACK and our own message may come in either order.
    got = {}
    for _ in range(2):
        kind, first, body = c.read()
        got[kind] = (first, body)
    assert got[r.PUBACK][1] == b"\x00\x05"
    p = r.Publish(*got[r.PUBLISH], v5=False)
    assert (p.topic, p.payload, p.qos) == ("legacy/t", b"hello", 1)
    c.ack(r.PUBACK, p.pkid)
    c.close()


def test_paho_v5_sees_identifiers_and_format_indicator(broker):
    got, subacked = queue.Queue(), queue.Queue()
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="paho5", protocol=mqtt.MQTTv5)
    c.on_message = lambda cl, u, m: got.put(m)
    c.on_subscribe = lambda cl, u, mid, codes, p: subacked.put(codes)
    c.connect("127.0.0.1", broker.mqtt_port, 30)
    c.loop_start()
    sp = Properties(PacketTypes.SUBSCRIBE)
    sp.SubscriptionIdentifier = 5
    c.subscribe("paho5/#", qos=1, properties=sp)
    subacked.get(timeout=10)
    pp = Properties(PacketTypes.PUBLISH)
    pp.PayloadFormatIndicator = 1
    pp.MessageExpiryInterval = 30
    c.publish("paho5/t", "text", qos=1, properties=pp).wait_for_publish(10)
    m = got.get(timeout=10)
    c.disconnect()
    c.loop_stop()
    props = m.properties
    assert props.SubscriptionIdentifier == [5]
    assert props.PayloadFormatIndicator == 1
    assert 0 < props.MessageExpiryInterval <= 30


@pytest.fixture(scope="module")
def keepalive_broker(tmp_path_factory):
    b = Broker(tmp_path_factory.mktemp("keepalive"), {"WARREN_MQTT__MAX_KEEP_ALIVE": "2"})
    yield b
    b.stop()


def test_server_keep_alive_is_announced_and_enforced(keepalive_broker):
    """3.2.2.3.14: the client must use the Server Keep Alive; the server
    closes after 1.5 times it without a packet (MQTT-3.1.2-22)."""
    c = Raw(keepalive_broker.mqtt_port, b"ka", keep_alive=600)
    assert c.connack_props[r.SERVER_KEEP_ALIVE] == 2
    started = time.time()
    assert c.disconnect_reason() == 0x8D  # keep alive timeout
    assert 2.5 <= time.time() - started < 8
    assert c.closed()
    c = Raw(keepalive_broker.mqtt_port, b"ka-ok", keep_alive=1)
    assert r.SERVER_KEEP_ALIVE not in c.connack_props
    c.close()


def test_puback_says_no_matching_subscribers_and_quota_exceeded(broker):
    """RabbitMQ's MQTT 5 answers: 0x10 when nothing took the message, 0x97
    when a queue refused it (x-overflow reject-publish)."""
    c = Raw(broker.mqtt_port, b"nomatch")
    c.publish("nobody/listens", b"x", qos=QOS1, pkid=1)
    _, ack = c.expect(r.PUBACK)
    assert ack[2] == 0x10
    ch = broker.connect().channel()
    ch.queue_declare("full-q", arguments={"x-max-length": 1, "x-overflow": "reject-publish"})
    ch.queue_bind("full-q", "amq.topic", "full.t")
    c.publish("full/t", b"1", qos=QOS1, pkid=2)
    _, ack = c.expect(r.PUBACK)
    assert ack == b"\x00\x02"  # success, no code
    c.publish("full/t", b"2", qos=QOS1, pkid=3)
    _, ack = c.expect(r.PUBACK)
    assert ack[2] == 0x97
    ch.queue_delete("full-q")
    c.close()


def test_pubrec_with_a_failure_code_ends_the_qos2_flow(broker):
    """4.3.3: no PUBREL after a PUBREC of 0x80 or more; the id is free."""
    c = Raw(broker.mqtt_port, b"rec-fail", connect_props=[(r.RECEIVE_MAXIMUM, 1)])
    c.subscribe(1, ("recf/#", QOS2))
    amqp_publish(broker, "recf.t", b"a")
    amqp_publish(broker, "recf.t", b"b")
    p = c.publish_in()
    assert p.payload == b"a"
    c.send(r.packet(0x50, struct.pack(">HB", p.pkid, 0x80)))
    # The next message comes (the slot is free), and no PUBREL comes first.
    q = c.publish_in()
    assert q.payload == b"b"
    c.ack(r.PUBREC, q.pkid)
    _, body = c.expect(r.PUBREL)
    assert body[:2] == struct.pack(">H", q.pkid)
    c.ack(r.PUBCOMP, q.pkid)
    c.close()


def test_auth_without_a_method_and_publish_without_topic_are_protocol_errors(broker):
    c = Raw(broker.mqtt_port, b"auth")
    c.send(bytes([0xF0, 1, 0x18]))
    assert c.disconnect_reason() == 0x82
    c = Raw(broker.mqtt_port, b"notopic")
    c.publish("", b"x")
    assert c.disconnect_reason() == 0x82
    assert broker.wait_log("PUBLISH without a topic")


def test_repeated_user_properties_are_all_forwarded(broker):
    """MQTT-3.3.2-17/18."""
    c = Raw(broker.mqtt_port, b"users")
    c.subscribe(1, ("up/#", 0))
    ch = broker.connect().channel()
    q = ch.queue_declare("", exclusive=True).method.queue
    ch.queue_bind(q, "amq.topic", "up.t")
    pub = Raw(broker.mqtt_port, b"users-pub")
    pairs = [(r.USER_PROPERTY, ("k", "1")), (r.USER_PROPERTY, ("other", "x")),
             (r.USER_PROPERTY, ("k", "2"))]
    pub.publish("up/t", b"x", qos=QOS1, pkid=1, pub_props=pairs)
    pub.expect(r.PUBACK)
    p = c.publish_in()
    assert sorted(p.props[r.USER_PROPERTY]) == [("k", "1"), ("k", "2"), ("other", "x")]
    method, props, body = next(ch.consume(q, auto_ack=True, inactivity_timeout=10))
    assert props.headers["k"] == [b"1", b"2"] or props.headers["k"] == ["1", "2"]
    pub.close()
    c.close()


def test_a_will_with_an_invalid_topic_is_refused_at_connect(broker):
    body = r.string(b"MQTT") + bytes([5, 0x04 | 0x02]) + struct.pack(">H", 60) + b"\x00"
    body += r.string(b"bad-will") + b"\x00" + r.string(b"status/#") + r.string(b"gone")
    s = Raw.__new__(Raw)
    s.level = 5
    import socket
    s.s = socket.create_connection(("127.0.0.1", broker.mqtt_port), timeout=10)
    s.send(r.packet(0x10, body))
    _, ack = s.expect(r.CONNACK)
    assert ack[1] == 0x90
    assert s.closed()
    assert broker.wait_log("invalid will topic")


def test_retained_messages_carry_the_subscription_identifier_and_respect_packet_size(broker):
    pub = Raw(broker.mqtt_port, b"ret-pub")
    pub.publish("retid/small", b"s", qos=QOS1, pkid=1, retain=True)
    pub.expect(r.PUBACK)
    pub.publish("retid/big", b"b" * 300, qos=QOS1, pkid=2, retain=True)
    pub.expect(r.PUBACK)
    c = Raw(broker.mqtt_port, b"ret-sub", connect_props=[(r.MAXIMUM_PACKET_SIZE, 120)])
    assert c.subscribe(1, ("retid/#", QOS1), sub_props=[(r.SUBSCRIPTION_ID, 11)]) == [1]
    p = c.publish_in()
    assert (p.topic, p.retain, p.props[r.SUBSCRIPTION_ID]) == ("retid/small", True, [11])
    c.ack(r.PUBACK, p.pkid)
    # The big one is over the client's limit: never sent; the next packet is ours.
    amqp_publish(broker, "retid.after", b"after")
    assert c.publish_in().payload == b"after"
    for t in ("retid/small", "retid/big"):
        pub.publish(t, b"", qos=QOS1, pkid=3, retain=True)
        pub.expect(r.PUBACK)
    pub.close()
    c.close()
