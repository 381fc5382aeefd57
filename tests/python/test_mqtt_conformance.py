"""The server-side normative statements of MQTT 5.0 (and 3.1.1 where it differs)
for CONNECT, PUBLISH, SUBSCRIBE, UNSUBSCRIBE, PINGREQ and DISCONNECT that no other
test file checks, each on the wire with raw packets (mqtt_raw). Every test names
the statements it checks; the list with the other files' is in the MQTT notes."""
import socket
import struct

import pytest

import mqtt_raw as r
from mqtt_raw import Raw, packet, props, string
from test_mqtt5 import wait_closed

PROTOCOL_ERROR, MALFORMED, TOPIC_ALIAS_INVALID = 0x82, 0x81, 0x94


def connect_packet(client_id, level=5, flags=0x02, connect_props=b"\x00", will=None,
                   user=None, password=None, first=0x10, tail=b""):
    """A CONNECT as given (flags byte taken as is); `will`: (props, topic, payload)."""
    body = string(b"MQTT") + bytes([level, flags]) + struct.pack(">H", 60)
    if level == 5:
        body += connect_props
    body += string(client_id)
    if will is not None:
        wprops, topic, payload = will
        body += (wprops if level == 5 else b"") + string(topic) + string(payload)
    if user is not None:
        body += string(user)
    if password is not None:
        body += string(password)
    return packet(first, body + tail)


def raw_socket(broker, data):
    s = socket.create_connection(("127.0.0.1", broker.mqtt_port), timeout=10)
    s.sendall(data)
    return s


def answer(s):
    """Every byte the server sends until it closes."""
    data = b""
    try:
        while chunk := s.recv(256):
            data += chunk
    except ConnectionResetError:
        pass
    s.close()
    return data


def closed_silently(s):
    """True when the server closes without sending a byte (no CONNACK)."""
    return answer(s) == b""


def closed_after_connack(s):
    """The CONNACK's return code (3.1.1) once the server has also closed."""
    data = answer(s)
    assert data[:3] == b"\x20\x02\x00" and len(data) == 4, data  # Session Present 0
    return data[3]


def refused(s, level):
    """How a bad CONNECT of `level` is answered before the close: None for
    no CONNACK (3.1.1, MQTT-3.1.4-1), else the v5 CONNACK's reason code
    (MQTT-3.1.4-1 with 4.13.1: the server MAY send CONNACK 0x80 or more
    first; Session Present 0 by MQTT-3.2.2-6, no properties)."""
    data = answer(s)
    if level != 5:
        assert data == b"", data
        return None
    assert data[:3] == b"\x20\x03\x00" and data[4:] == b"\x00", data
    return data[3]


def bad_connect(level, code):
    """What a bad CONNECT of `level` must get: v5 CONNACK `code`, 3.1.1 a close."""
    return code if level == 5 else None


@pytest.mark.parametrize("level", [4, 5])
def test_connect_reserved_flag_and_fixed_header_flags_are_malformed(broker, level):
    """MQTT-3.1.2-3: the reserved Connect Flag must be 0; MQTT-2.1.3-1 (3.1.1:
    MQTT-2.2.2-1/2): the CONNECT fixed-header flags are 0. Either makes the
    CONNECT malformed: v5 CONNACK 0x81 then close, 3.1.1 closed without
    CONNACK (its MQTT-3.1.4-1)."""
    want = bad_connect(level, MALFORMED)
    assert refused(raw_socket(broker, connect_packet(b"rsv-flag", level, flags=0x03)), level) == want
    assert refused(raw_socket(broker, connect_packet(b"rsv-hdr", level, first=0x11)), level) == want
    # The same CONNECT without the bits is accepted.
    Raw(broker.mqtt_port, b"rsv-ok", level=level).close()


@pytest.mark.parametrize("level", [4, 5])
def test_will_flags_must_agree_with_the_will_flag(broker, level):
    """MQTT-3.1.2-11/-13/-15: without the Will Flag, Will QoS and Will Retain are
    0; MQTT-3.1.2-12: Will QoS 3 is malformed. v5 CONNACK 0x81, 3.1.1 closed."""
    want = bad_connect(level, MALFORMED)
    for flags in (0x02 | 0x08, 0x02 | 0x20):  # QoS 1 bit / retain, no will flag
        assert refused(raw_socket(broker, connect_packet(b"will-flags", level, flags)), level) == want
    will = (b"\x00", b"w/t", b"bye")
    bad_qos = connect_packet(b"will-qos3", level, flags=0x02 | 0x04 | 0x18, will=will)
    assert refused(raw_socket(broker, bad_qos), level) == want


@pytest.mark.parametrize("level", [4, 5])
def test_bytes_after_the_connect_payload_are_malformed(broker, level):
    """3.1.3 / MQTT-1.5.5-1 framing: the payload holds exactly the fields the
    flags announce; trailing bytes make the CONNECT malformed (v5 0x81)."""
    tail = connect_packet(b"tail", level, tail=b"\x00\x01x")
    assert refused(raw_socket(broker, tail), level) == bad_connect(level, MALFORMED)


@pytest.mark.parametrize("level", [4, 5])
def test_invalid_utf8_or_a_misplaced_property_in_connect_is_malformed(broker, level):
    """MQTT-1.5.4-1: a UTF-8 string (here the client id) that is not valid
    UTF-8 is malformed; 2.2.2.2: a property not defined for CONNECT (Topic
    Alias) too (v5 only). v5 CONNACK 0x81, 3.1.1 closed."""
    bad_id = connect_packet(b"\xff\xfe", level)
    assert refused(raw_socket(broker, bad_id), level) == bad_connect(level, MALFORMED)
    if level == 5:
        alias = connect_packet(b"conn-alias", connect_props=props((r.TOPIC_ALIAS, 1)))
        assert refused(raw_socket(broker, alias), 5) == MALFORMED


@pytest.mark.parametrize("bad", [
    ((r.SESSION_EXPIRY, 1), (r.SESSION_EXPIRY, 2)),
    ((r.RECEIVE_MAXIMUM, 0),),
    ((r.MAXIMUM_PACKET_SIZE, 0),),
    ((0x19, 2),),
], ids=["property-twice", "receive-maximum-0", "maximum-packet-size-0", "request-response-2"])
def test_v5_connect_property_rules_are_protocol_errors_answered_0x82(broker, bad):
    """2.2.2.2: a property given twice; MQTT-3.1.2 (3.1.2.11.3/.4/.6): Receive
    Maximum 0, Maximum Packet Size 0, Request Response Information other than
    0/1 are protocol errors: CONNACK 0x82 (4.13.1), then the close
    (MQTT-3.1.4-1). With 1 the server may answer without Response
    Information, which Warren does (it offers none)."""
    s = raw_socket(broker, connect_packet(b"conn-proto", connect_props=props(*bad)))
    assert refused(s, 5) == PROTOCOL_ERROR
    c = Raw(broker.mqtt_port, b"rri-1", connect_props=[(0x19, 1)])
    assert 0x1A not in c.connack_props
    c.close()


def test_v5_connect_over_the_maximum_packet_size_is_0x95(broker):
    """3.2.2.2: CONNACK 0x95 (Packet too large) for a CONNECT over the
    server's limit (16 MiB here), told from its fixed header and first
    bytes, before the rest is read; 3.1.1 is closed."""
    start = string(b"MQTT") + bytes([5, 0x02]) + struct.pack(">H", 60)
    big = bytes([0x10]) + r.varint(17 << 20) + start
    assert refused(raw_socket(broker, big), 5) == 0x95
    start4 = string(b"MQTT") + bytes([4, 0x02]) + struct.pack(">H", 60)
    assert refused(raw_socket(broker, bytes([0x10]) + r.varint(17 << 20) + start4), 4) is None


@pytest.mark.parametrize("name,level", [(b"MQTT", 3), (b"MQTT", 6), (b"MQTT", 0), (b"MQIsdp", 4)])
def test_unsupported_protocol_level_gets_return_code_1(broker, name, level):
    """3.1.1 MQTT-3.1.2-2: an unsupported Protocol Level gets CONNACK 0x01
    (unacceptable protocol level), then the close; 5.0 MQTT-3.1.2-2 allows
    a CONNACK before the close, and the 3.1.1 form is what a client of an
    unknown level can read (as mosquitto 2.0 answers). MQIsdp goes only
    with level 3."""
    body = string(name) + bytes([level, 0x02]) + struct.pack(">H", 60) + string(b"lvl")
    assert closed_after_connack(raw_socket(broker, packet(0x10, body))) == 0x01


def test_unknown_protocol_name_is_closed_without_connack(broker):
    """MQTT-3.1.2-1 (3.1.1 MQTT-3.1.2-1): a Protocol Name other than MQTT
    (or MQIsdp for 3.1) is not processed further; nothing is answered."""
    for level in (4, 5):
        body = string(b"XYZW") + bytes([level, 0x02]) + struct.pack(">H", 60)
        body += (b"\x00" if level == 5 else b"") + string(b"name")
        assert closed_silently(raw_socket(broker, packet(0x10, body)))


def test_v311_password_without_user_name_is_malformed(broker):
    """3.1.1 MQTT-3.1.2-22: the Password Flag needs the User Name Flag; the
    CONNECT is malformed and closed (5.0 allows it and answers 0x86)."""
    assert closed_silently(raw_socket(broker, connect_packet(
        b"pw-only", 4, flags=0x02 | 0x40, password=b"guest")))
    s = raw_socket(broker, connect_packet(b"pw-only5", 5, flags=0x02 | 0x40, password=b"guest"))
    ack = s.recv(64)
    assert ack[0] == 0x20 and ack[3] == 0x86, ack
    s.close()


def test_v311_empty_client_id_needs_a_clean_session(broker):
    """3.1.1 MQTT-3.1.3-8: a zero-byte client id with CleanSession 0 gets
    CONNACK 0x02 (identifier rejected), then the connection is closed
    (MQTT-3.2.2-5: a refusing CONNACK has Session Present 0)."""
    s = raw_socket(broker, connect_packet(b"", 4, flags=0x00))
    assert closed_after_connack(s) == 0x02
    # With CleanSession 1 the server assigns one (MQTT-3.1.3-6).
    Raw(broker.mqtt_port, b"", level=4, clean=True).close()


@pytest.mark.parametrize("level", [4, 5])
def test_first_packet_must_be_connect(broker, level):
    """MQTT-3.1.0-1 (3.1.1 MQTT-3.1.0-1): any other first packet closes the
    connection without an answer."""
    sub = packet(0x82, struct.pack(">H", 1) + (b"\x00" if level == 5 else b"") + string("t") + b"\x00")
    assert closed_silently(raw_socket(broker, sub))
    pub = packet(0x30, string("t") + b"x")
    assert closed_silently(raw_socket(broker, pub))


def test_second_connect_is_a_protocol_error(broker):
    """MQTT-3.1.0-2: a second CONNECT is a protocol error: v5 DISCONNECT 0x82,
    3.1.1 closes (it has no DISCONNECT from the server)."""
    c = Raw(broker.mqtt_port, b"twice-5")
    c.send(connect_packet(b"twice-5"))
    assert c.disconnect_reason() == PROTOCOL_ERROR
    c = Raw(broker.mqtt_port, b"twice-4", level=4)
    c.send(connect_packet(b"twice-4", 4))
    with pytest.raises((EOFError, ConnectionResetError)):
        c.read()


def test_request_problem_information_0_keeps_reason_strings_off_acks(broker):
    """MQTT-3.1.2-29: with Request Problem Information 0 the server sends no
    Reason String or User Property except on PUBLISH, CONNACK and DISCONNECT;
    the acknowledgements still carry their reason codes (0x10, 0x8F, 0x11)."""
    c = Raw(broker.mqtt_port, b"rpi-0", connect_props=[(0x17, 0)])
    c.publish("rpi/nobody", b"x", qos=1, pkid=5)
    _, ack = c.expect(r.PUBACK)
    assert ack[:3] == struct.pack(">H", 5) + b"\x10"
    assert ack[3:] in (b"", b"\x00"), ack
    body = struct.pack(">H", 6) + b"\x00" + string("a/#/b") + b"\x00"
    c.send(packet(0x82, body))
    _, suback = c.expect(r.SUBACK)
    assert suback == struct.pack(">H", 6) + b"\x00\x8f", suback
    c.send(packet(0xA2, struct.pack(">H", 7) + b"\x00" + string("never/subscribed")))
    _, unsuback = c.expect(r.UNSUBACK)
    assert unsuback == struct.pack(">H", 7) + b"\x00\x11", unsuback
    c.disconnect()


@pytest.mark.parametrize("level", [4, 5])
def test_publish_with_qos_3_is_malformed(broker, level):
    """MQTT-3.3.1-4: a PUBLISH with both QoS bits set is malformed: v5
    DISCONNECT 0x81, 3.1.1 closed."""
    c = Raw(broker.mqtt_port, f"qos3-{level}".encode(), level=level)
    body = string("t") + struct.pack(">H", 1) + (b"\x00" if level == 5 else b"") + b"x"
    c.send(packet(0x36, body))
    if level == 5:
        assert c.disconnect_reason() == MALFORMED
    else:
        with pytest.raises((EOFError, ConnectionResetError)):
            c.read()


@pytest.mark.parametrize("topic", ["a/#", "+", "a/+/b"])
def test_wildcards_in_a_publish_topic_close_a_v311_session(broker, topic):
    """MQTT-3.3.2-2: the Topic Name of a PUBLISH has no wildcards; 3.1.1 can
    only close (5.0 sends DISCONNECT 0x90: test_mqtt.py)."""
    c = Raw(broker.mqtt_port, b"wild-311", level=4)
    c.publish(topic, b"x")
    with pytest.raises((EOFError, ConnectionResetError)):
        c.read()


@pytest.mark.parametrize("alias", [0, 65])
def test_topic_alias_0_or_over_the_maximum_is_0x94(broker, alias):
    """MQTT-3.3.2-8: Topic Alias 0 is not permitted; MQTT-3.3.2-9/-10 (the
    server announced Topic Alias Maximum 64): a greater alias. Both end the
    connection with DISCONNECT 0x94 (Topic Alias invalid)."""
    c = Raw(broker.mqtt_port, f"alias-{alias}".encode())
    assert c.connack_props[r.TOPIC_ALIAS_MAXIMUM] == 64
    c.publish("alias/t", b"x", pub_props=[(r.TOPIC_ALIAS, alias)])
    assert c.disconnect_reason() == TOPIC_ALIAS_INVALID


def test_property_of_another_packet_type_is_malformed(broker):
    """2.2.2.2: a property identifier not valid for the packet type (Session
    Expiry Interval in a PUBLISH) makes it malformed: DISCONNECT 0x81."""
    c = Raw(broker.mqtt_port, b"prop-misplaced")
    c.publish("t", b"x", pub_props=[(r.SESSION_EXPIRY, 10)])
    assert c.disconnect_reason() == MALFORMED


def test_non_minimal_remaining_length_is_malformed(broker):
    """MQTT-1.5.5-1: a Variable Byte Integer uses the fewest bytes; PINGREQ
    with its remaining length 0 in two bytes is malformed (0x81)."""
    c = Raw(broker.mqtt_port, b"varint")
    c.send(b"\xc0\x00")
    assert c.expect(r.PINGRESP) == (0xD0, b"")  # MQTT-3.12.4-1
    c.send(b"\xc0\x80\x00")
    assert c.disconnect_reason() == MALFORMED


def test_nul_in_a_topic_is_malformed(broker):
    """MQTT-1.5.4-2: a UTF-8 string must not hold U+0000: DISCONNECT 0x81."""
    c = Raw(broker.mqtt_port, b"nul-topic")
    c.publish("a\x00b", b"x")
    assert c.disconnect_reason() == MALFORMED


@pytest.mark.parametrize("kind", [0x82, 0xA2], ids=["SUBSCRIBE", "UNSUBSCRIBE"])
def test_subscribe_or_unsubscribe_without_filters_is_a_protocol_error(broker, kind):
    """MQTT-3.8.3-2 / MQTT-3.10.3-2: at least one topic filter; none is a
    protocol error (v5: DISCONNECT 0x82)."""
    c = Raw(broker.mqtt_port, b"no-filters")
    c.send(packet(kind, struct.pack(">H", 1) + b"\x00"))
    assert c.disconnect_reason() == PROTOCOL_ERROR


@pytest.mark.parametrize("level", [4, 5])
def test_subscribe_with_wrong_fixed_header_flags_is_malformed(broker, level):
    """MQTT-3.8.1-1 (and MQTT-3.10.1-1 for UNSUBSCRIBE): the fixed-header flags
    are 0b0010; otherwise malformed: v5 DISCONNECT 0x81, 3.1.1 closed."""
    c = Raw(broker.mqtt_port, f"sub-flags-{level}".encode(), level=level)
    body = struct.pack(">H", 1) + (b"\x00" if level == 5 else b"") + string("t") + b"\x00"
    c.send(packet(0x80, body))
    if level == 5:
        assert c.disconnect_reason() == MALFORMED
    else:
        with pytest.raises((EOFError, ConnectionResetError)):
            c.read()


def will_connect(client_id, topic, payload):
    """A v5 CONNECT with a QoS 0 will."""
    return connect_packet(client_id, 5, flags=0x02 | 0x04, will=(b"\x00", topic, payload))


def test_disconnect_0x04_publishes_the_will_and_0x00_discards_it(broker):
    """MQTT-3.14.4-3 / MQTT-3.1.2-10: after DISCONNECT 0x00 the will is
    discarded unpublished; reason 0x04 (Disconnect with Will Message) asks
    the server to publish it (3.14.2.1)."""
    watcher = Raw(broker.mqtt_port, b"will-watch")
    assert watcher.subscribe(1, ("willd/#", 0)) == [0]
    s = raw_socket(broker, will_connect(b"will-normal", b"willd/normal", b"gone"))
    assert s.recv(64)[0] == 0x20
    s.sendall(b"\xe0\x00")  # DISCONNECT, normal
    s.close()
    assert wait_closed(broker, "will-normal")
    s = raw_socket(broker, will_connect(b"will-asked", b"willd/asked", b"asked"))
    assert s.recv(64)[0] == 0x20
    s.sendall(b"\xe0\x02\x04\x00")  # DISCONNECT 0x04 with no properties
    s.close()
    # Only the asked-for will arrives, then the marker: nothing of the first.
    p = watcher.publish_in()
    assert (p.topic, p.payload) == ("willd/asked", b"asked")
    pub = Raw(broker.mqtt_port, b"will-marker")
    pub.publish("willd/marker", b"m")
    pub.disconnect()
    assert watcher.publish_in().topic == "willd/marker"
    watcher.disconnect()


def test_qos2_publish_refused_with_a_failure_code_frees_its_packet_id(broker):
    """MQTT-4.3.3-9 / MQTT-4.4.0-2: a PUBREC of 0x80 or more (0x97: the queue
    refused it) ends the QoS 2 flow, so the packet id is free: a new PUBLISH
    with it is a new message and is routed (not taken for a resend)."""
    ch = broker.connect().channel()
    ch.queue_declare("q2-full", arguments={"x-max-length": 1, "x-overflow": "reject-publish"})
    ch.queue_bind("q2-full", "amq.topic", "q2full.t")
    c = Raw(broker.mqtt_port, b"q2-full")
    c.publish("q2full/t", b"1", qos=2, pkid=1)
    _, rec = c.expect(r.PUBREC)
    assert rec[:2] == struct.pack(">H", 1) and rec[2:3] in (b"", b"\x00")
    c.ack(r.PUBREL, 1)
    c.expect(r.PUBCOMP)
    c.publish("q2full/t", b"2", qos=2, pkid=2)
    _, rec = c.expect(r.PUBREC)
    assert rec[2] == 0x97
    ch.queue_purge("q2-full")
    c.publish("q2full/t", b"3", qos=2, pkid=2)
    _, rec = c.expect(r.PUBREC)
    assert rec[2:3] in (b"", b"\x00"), rec
    c.ack(r.PUBREL, 2)
    _, comp = c.expect(r.PUBCOMP)
    assert comp[2:3] in (b"", b"\x00"), comp
    _, _, body = ch.basic_get("q2-full", auto_ack=True)
    assert body == b"3"
    ch.queue_delete("q2-full")
    c.disconnect()


@pytest.mark.parametrize("level,options", [(5, 0x40), (5, 0x80), (4, 0x04)])
def test_reserved_subscription_option_bits_are_malformed(broker, level, options):
    """MQTT-3.8.3-5: bits 6 and 7 of the Subscription Options are 0 (v5:
    DISCONNECT 0x81); 3.1.1 MQTT-3-8.3-4: bits 2-7 of the Requested QoS byte
    are 0 (closed)."""
    c = Raw(broker.mqtt_port, f"sub-opts-{level}-{options}".encode(), level=level)
    body = struct.pack(">H", 1) + (b"\x00" if level == 5 else b"") + string("t") + bytes([options])
    c.send(packet(0x82, body))
    if level == 5:
        assert c.disconnect_reason() == MALFORMED
    else:
        with pytest.raises((EOFError, ConnectionResetError)):
            c.read()


def test_unsubscribe_with_wrong_fixed_header_flags_is_malformed(broker):
    """MQTT-3.10.1-1: UNSUBSCRIBE flags are 0b0010; otherwise malformed (0x81)."""
    c = Raw(broker.mqtt_port, b"unsub-flags")
    c.send(packet(0xA0, struct.pack(">H", 1) + b"\x00" + string("t")))
    assert c.disconnect_reason() == MALFORMED


@pytest.mark.parametrize("shared", ["$share//t", "$share/g+/t", "$share/g#/t", "$share/g"])
def test_invalid_share_names_are_refused_with_0x8f(broker, shared):
    """MQTT-4.8.2-1: a ShareName has at least one character; MQTT-4.8.2-2: it
    holds no '/', '+' or '#', and a '/' and a filter follow it. Otherwise the
    filter is invalid: SUBACK 0x8F, the connection stays."""
    c = Raw(broker.mqtt_port, b"share-name")
    assert c.subscribe(1, (shared, 1)) == [0x8F]
    c.send(b"\xc0\x00")
    c.expect(r.PINGRESP)
    c.disconnect()


def test_takeover_sends_disconnect_0x8e_to_the_old_connection(broker):
    """MQTT-3.1.4-3: a CONNECT with the client id of a connected client ends
    the existing connection, with DISCONNECT 0x8E (Session taken over) in v5."""
    old = Raw(broker.mqtt_port, b"taken")
    new = Raw(broker.mqtt_port, b"taken")
    assert old.disconnect_reason() == 0x8E
    new.send(b"\xc0\x00")
    new.expect(r.PINGRESP)
    new.disconnect()
