"""MQTT session state across connections and broker restarts, on the wire
(mqtt_raw): what a resumed session gets back under MQTT-4.4.0-1 (PUBRELs,
unacknowledged queue and retained deliveries with their packet ids and DUP=1)
and the QoS 2 packet ids a persistent session holds through a clean restart
and kill -9."""
import struct

import mqtt_raw as r
from conftest import Broker
from mqtt_raw import Raw
from test_mqtt5 import QOS1, QOS2, amqp_publish, wait_closed


def test_pubrel_is_sent_again_when_the_session_resumes(broker):
    """MQTT-4.4.0-1: unacknowledged PUBRELs are resent with their ids."""
    expiry = [(r.SESSION_EXPIRY, 300)]
    c = Raw(broker.mqtt_port, b"pubrel-resume", connect_props=expiry)
    c.subscribe(1, ("prr/#", QOS2))
    pub = Raw(broker.mqtt_port, b"pubrel-resume-pub")
    pub.publish("prr/t", b"x", qos=QOS2, pkid=1)
    pub.expect(r.PUBREC)
    pub.close()
    p = c.publish_in()
    assert p.qos == 2
    c.ack(r.PUBREC, p.pkid)
    _, body = c.expect(r.PUBREL)
    c.close()  # before PUBCOMP
    c = Raw(broker.mqtt_port, b"pubrel-resume", clean=False, connect_props=expiry)
    assert c.session_present
    _, body = c.expect(r.PUBREL)
    assert body[:2] == struct.pack(">H", p.pkid)
    c.ack(r.PUBCOMP, p.pkid)
    # The message itself is not sent again.
    amqp_publish(broker, "prr.t", b"next")
    assert c.publish_in().payload == b"next"
    c.disconnect(disc_props=[(r.SESSION_EXPIRY, 0)])


def test_unacked_retained_deliveries_are_resent_with_dup_when_the_session_resumes(broker):
    """MQTT-4.4.0-1: retained QoS 1 and QoS 2 deliveries the client had not
    acknowledged are sent again on resume, with their packet ids and DUP=1
    (RETAIN=1 and the Subscription Identifier kept); once acknowledged they
    are not sent a third time."""
    pub = Raw(broker.mqtt_port, b"ret-resume-pub")
    pub.publish("rres/a", b"one", qos=QOS1, pkid=1, retain=True)
    pub.expect(r.PUBACK)
    pub.publish("rres/b", b"two", qos=QOS2, pkid=2, retain=True)
    pub.expect(r.PUBREC)
    pub.ack(r.PUBREL, 2)
    pub.expect(r.PUBCOMP)
    pub.close()
    expiry = [(r.SESSION_EXPIRY, 300)]
    c = Raw(broker.mqtt_port, b"ret-resume", connect_props=expiry)
    assert c.subscribe(1, ("rres/#", QOS2), sub_props=[(r.SUBSCRIPTION_ID, 7)]) == [QOS2]
    first = [c.publish_in(), c.publish_in()]
    assert [(p.topic, p.qos, p.dup, p.retain) for p in first] == [
        ("rres/a", 1, False, True), ("rres/b", 2, False, True)]
    c.close()  # neither acknowledged
    c = Raw(broker.mqtt_port, b"ret-resume", clean=False, connect_props=expiry)
    assert c.session_present
    again = [c.publish_in(), c.publish_in()]
    assert [(p.topic, p.payload, p.pkid, p.qos, p.dup, p.retain) for p in again] == [
        (p.topic, p.payload, p.pkid, p.qos, True, True) for p in first]
    assert all(p.props[r.SUBSCRIPTION_ID] == [7] for p in again)
    c.ack(r.PUBACK, again[0].pkid)
    c.ack(r.PUBREC, again[1].pkid)
    _, body = c.expect(r.PUBREL)
    assert body[:2] == struct.pack(">H", again[1].pkid)
    c.ack(r.PUBCOMP, again[1].pkid)
    c.close()
    c = Raw(broker.mqtt_port, b"ret-resume", clean=False, connect_props=expiry)
    assert c.session_present
    # Acknowledged ones are not sent again: the next packet is a new message.
    amqp_publish(broker, "rres.c", b"next")
    p = c.publish_in()
    assert (p.topic, p.payload, p.dup, p.retain) == ("rres/c", b"next", False, False)
    c.ack(r.PUBACK, p.pkid)
    c.disconnect(disc_props=[(r.SESSION_EXPIRY, 0)])
    for t in ("rres/a", "rres/b"):
        amqp_clear = Raw(broker.mqtt_port, b"ret-resume-clear")
        amqp_clear.publish(t, b"", qos=0, retain=True)
        amqp_clear.disconnect()


def test_qos2_state_of_a_persistent_session_survives_a_clean_restart(tmp_path):
    """MQTT-4.4.0-1 and 4.3.3 across a broker restart. Outbound: a delivery
    the client PUBRECed gets its PUBREL again after the restart. Inbound: a
    QoS 2 PUBLISH answered with PUBREC is still known, so its resend with
    DUP=1 is not routed twice, and its PUBREL gets PUBCOMP 0x00, not 0x92."""
    b = Broker(tmp_path)
    try:
        expiry = [(r.SESSION_EXPIRY, 3600)]
        sub = Raw(b.mqtt_port, b"q2r-sub", connect_props=expiry)
        assert sub.subscribe(1, ("q2r/#", QOS2)) == [QOS2]
        pub = Raw(b.mqtt_port, b"q2r-pub", connect_props=expiry)
        pub.publish("q2r/t", b"once", qos=QOS2, pkid=42)
        _, rec = pub.expect(r.PUBREC)
        assert rec[:2] == struct.pack(">H", 42)
        p = sub.publish_in()
        assert (p.payload, p.qos) == (b"once", 2)
        sub.ack(r.PUBREC, p.pkid)
        sub.expect(r.PUBREL)
        pub.close()  # before PUBREL
        sub.close()  # before PUBCOMP
        b.restart()
        sub = Raw(b.mqtt_port, b"q2r-sub", clean=False, connect_props=expiry)
        assert sub.session_present
        _, body = sub.expect(r.PUBREL)
        assert body[:2] == struct.pack(">H", p.pkid)
        pub = Raw(b.mqtt_port, b"q2r-pub", clean=False, connect_props=expiry)
        assert pub.session_present
        pub.publish("q2r/t", b"once", qos=QOS2, pkid=42, dup=True)
        _, rec = pub.expect(r.PUBREC)
        assert rec[:2] == struct.pack(">H", 42) and rec[2:3] in (b"", b"\x00")
        pub.ack(r.PUBREL, 42)
        _, comp = pub.expect(r.PUBCOMP)
        assert comp[:2] == struct.pack(">H", 42) and comp[2:3] in (b"", b"\x00"), comp
        # Released now: a second PUBREL for it is unknown.
        pub.ack(r.PUBREL, 42)
        _, comp = pub.expect(r.PUBCOMP)
        assert comp[2] == 0x92
        sub.ack(r.PUBCOMP, p.pkid)
        # The resent PUBLISH was not routed: the next delivery is a new message.
        pub.publish("q2r/t", b"after", qos=QOS1, pkid=43)
        pub.expect(r.PUBACK)
        n = sub.publish_in()
        assert (n.payload, n.dup) == (b"after", False)
        sub.ack(r.PUBACK, n.pkid)
        sub.disconnect(disc_props=[(r.SESSION_EXPIRY, 0)])
        pub.disconnect(disc_props=[(r.SESSION_EXPIRY, 0)])
    finally:
        b.stop()


def test_unacked_queue_deliveries_keep_their_packet_ids_on_resume(broker):
    """MQTT-4.4.0-1: a resumed session sends unacknowledged PUBLISH packets
    again with DUP=1 and their original Packet Identifiers (a QoS 2 client
    holds the id until PUBREL, so a new id would be a second message to it)."""
    expiry = [(r.SESSION_EXPIRY, 300)]
    c = Raw(broker.mqtt_port, b"orig-ids", connect_props=expiry)
    assert c.subscribe(1, ("orig/#", QOS2)) == [QOS2]
    pub = Raw(broker.mqtt_port, b"orig-ids-pub")
    pub.publish("orig/x", b"x", qos=QOS1, pkid=1)
    pub.expect(r.PUBACK)
    x = c.publish_in()
    c.ack(r.PUBACK, x.pkid)  # moves the id counter on: a fresh one would differ
    pub.publish("orig/a", b"a", qos=QOS2, pkid=2)
    pub.expect(r.PUBREC)
    pub.ack(r.PUBREL, 2)
    pub.expect(r.PUBCOMP)
    pub.publish("orig/b", b"b", qos=QOS1, pkid=3)
    pub.expect(r.PUBACK)
    first = [c.publish_in(), c.publish_in()]
    assert [p.payload for p in first] == [b"a", b"b"]
    assert x.pkid not in [p.pkid for p in first]
    c.close()  # neither acknowledged
    c = Raw(broker.mqtt_port, b"orig-ids", clean=False, connect_props=expiry)
    assert c.session_present
    again = [c.publish_in(), c.publish_in()]
    assert [(p.payload, p.pkid, p.qos, p.dup) for p in again] == [
        (p.payload, p.pkid, p.qos, True) for p in first]
    c.ack(r.PUBREC, again[0].pkid)
    c.expect(r.PUBREL)
    c.ack(r.PUBCOMP, again[0].pkid)
    c.ack(r.PUBACK, again[1].pkid)
    pub.publish("orig/c", b"c", qos=QOS1, pkid=4)
    pub.expect(r.PUBACK)
    n = c.publish_in()
    assert (n.payload, n.dup) == (b"c", False)
    c.ack(r.PUBACK, n.pkid)
    pub.disconnect()
    c.disconnect(disc_props=[(r.SESSION_EXPIRY, 0)])


def test_inbound_qos2_state_survives_kill9_once_pubrec_was_sent(tmp_path):
    """MQTT-4.3.3-8 through a crash: PUBREC waits for the group commit of the
    held packet id, so after kill -9 a resend with DUP=1 is still not routed
    twice and its PUBREL gets PUBCOMP 0x00."""
    b = Broker(tmp_path)
    try:
        expiry = [(r.SESSION_EXPIRY, 3600)]
        ch = b.connect().channel()
        ch.queue_declare("q2-crash", durable=True)
        ch.queue_bind("q2-crash", "amq.topic", "q2crash.t")
        ch.connection.close()
        pub = Raw(b.mqtt_port, b"q2-crash-pub", connect_props=expiry)
        pub.publish("q2crash/t", b"once", qos=QOS2, pkid=9)
        pub.expect(r.PUBREC)
        pub.close()
        b.kill9()
        b.start()
        pub = Raw(b.mqtt_port, b"q2-crash-pub", clean=False, connect_props=expiry)
        assert pub.session_present
        pub.publish("q2crash/t", b"once", qos=QOS2, pkid=9, dup=True)
        _, rec = pub.expect(r.PUBREC)
        assert rec[:2] == struct.pack(">H", 9) and rec[2:3] in (b"", b"\x00")
        pub.ack(r.PUBREL, 9)
        _, comp = pub.expect(r.PUBCOMP)
        assert comp[2:3] in (b"", b"\x00"), comp
        ch = b.connect().channel()
        assert ch.queue_declare("q2-crash", passive=True).method.message_count == 1
        ch.connection.close()
        pub.disconnect(disc_props=[(r.SESSION_EXPIRY, 0)])
    finally:
        b.stop()


def retain(broker, topic, payload, pkid):
    """Publish a retained QoS 1 message (PUBACK after it is stored)."""
    c = Raw(broker.mqtt_port, b"ord-retainer")
    c.publish(topic, payload, qos=QOS1, pkid=pkid, retain=True)
    c.expect(r.PUBACK)
    c.disconnect()


def clear_retained(broker, *topics):
    c = Raw(broker.mqtt_port, b"ord-retainer")
    for t in topics:
        c.publish(t, b"", retain=True)
    c.disconnect()


def test_resends_on_resume_keep_the_order_first_sent(broker):
    """MQTT-4.6.0-1 with MQTT-4.4.0-1: the PUBLISHes a resumed session sends
    again come in the order they were first sent, retained deliveries and
    queue deliveries interleaved (retained r1, queued q1, retained r2,
    queued q2), each with its packet id and DUP=1."""
    retain(broker, "ord1/r1", b"r1", 1)
    retain(broker, "ord2/r2", b"r2", 2)
    expiry = [(r.SESSION_EXPIRY, 300)]
    c = Raw(broker.mqtt_port, b"ord-sub", connect_props=expiry)
    assert c.subscribe(1, ("ord1/#", QOS1)) == [QOS1]
    first = [c.publish_in()]  # r1, retained
    amqp_publish(broker, "ord1.q1", b"q1")
    first.append(c.publish_in())
    assert c.subscribe(2, ("ord2/#", QOS1)) == [QOS1]
    first.append(c.publish_in())  # r2, retained
    amqp_publish(broker, "ord2.q2", b"q2")
    first.append(c.publish_in())
    assert [(p.payload, p.retain) for p in first] == [
        (b"r1", True), (b"q1", False), (b"r2", True), (b"q2", False)]
    c.close()  # none acknowledged
    c = Raw(broker.mqtt_port, b"ord-sub", clean=False, connect_props=expiry)
    assert c.session_present
    again = [c.publish_in() for _ in first]
    assert [(p.payload, p.pkid, p.dup, p.retain) for p in again] == [
        (p.payload, p.pkid, True, p.retain) for p in first]
    for p in again:
        c.ack(r.PUBACK, p.pkid)
    c.disconnect(disc_props=[(r.SESSION_EXPIRY, 0)])
    clear_retained(broker, "ord1/r1", "ord2/r2")


def test_retained_resends_still_go_when_the_queued_ones_are_gone(broker):
    """MQTT-4.4.0-1: when the session queue no longer has the requeued
    deliveries between them (purged from AMQP meanwhile), the retained
    deliveries left unacknowledged are still sent again, in their order."""
    retain(broker, "ordp1/r1", b"r1", 1)
    retain(broker, "ordp2/r2", b"r2", 2)
    expiry = [(r.SESSION_EXPIRY, 300)]
    c = Raw(broker.mqtt_port, b"ordp-sub", connect_props=expiry)
    assert c.subscribe(1, ("ordp1/#", QOS1)) == [QOS1]
    r1 = c.publish_in()
    amqp_publish(broker, "ordp1.q1", b"q1")
    assert c.publish_in().payload == b"q1"
    assert c.subscribe(2, ("ordp2/#", QOS1)) == [QOS1]
    r2 = c.publish_in()
    c.close()
    # Gone from the listing once its deliveries are back in the queue.
    assert wait_closed(broker, "ordp-sub")
    status, _ = broker.api("/api/queues/%2F/mqtt-subscription-ordp-sub/contents", method="DELETE")
    assert status in (200, 204)
    c = Raw(broker.mqtt_port, b"ordp-sub", clean=False, connect_props=expiry)
    assert c.session_present
    again = [c.publish_in(), c.publish_in()]
    assert [(p.payload, p.pkid, p.dup) for p in again] == [
        (b"r1", r1.pkid, True), (b"r2", r2.pkid, True)]
    for p in again:
        c.ack(r.PUBACK, p.pkid)
    # Nothing else comes: the next packet is the answer to a ping.
    c.send(b"\xc0\x00")
    c.expect(r.PINGRESP)
    c.disconnect(disc_props=[(r.SESSION_EXPIRY, 0)])
    clear_retained(broker, "ordp1/r1", "ordp2/r2")


def test_unacked_delivery_of_a_persistent_session_survives_kill9(tmp_path):
    """MQTT-4.1.0-1 / MQTT-3.1.2-4 through a crash, the part Warren keeps:
    a QoS 1 delivery the client had not acknowledged when the broker was
    killed (-9) is in the session queue after recovery and is sent again
    when the session resumes (Session Present 1). Its original packet id is
    not kept across the restart (see the MQTT notes in architecture.md)."""
    b = Broker(tmp_path)
    try:
        expiry = [(r.SESSION_EXPIRY, 3600)]
        c = Raw(b.mqtt_port, b"k9-sub", connect_props=expiry)
        assert c.subscribe(1, ("k9/#", QOS1)) == [QOS1]
        pub = Raw(b.mqtt_port, b"k9-pub")
        pub.publish("k9/t", b"keep", qos=QOS1, pkid=1)
        pub.expect(r.PUBACK)  # after the sync: on disk
        first = c.publish_in()
        assert (first.payload, first.qos) == (b"keep", 1)
        b.kill9()  # before the PUBACK
        b.start()
        c = Raw(b.mqtt_port, b"k9-sub", clean=False, connect_props=expiry)
        assert c.session_present
        again = c.publish_in()
        assert (again.topic, again.payload, again.qos) == ("k9/t", b"keep", 1)
        c.ack(r.PUBACK, again.pkid)
        c.disconnect(disc_props=[(r.SESSION_EXPIRY, 0)])
    finally:
        b.stop()


def test_acknowledgements_waiting_for_the_disk_keep_the_publish_order(broker):
    """MQTT-4.3.2 / 4.3.3 with the fsync rule: QoS 1 and QoS 2 publishes of a
    persistent session to a durable queue, written in one go, are
    acknowledged after the store's sync, all of them, each once, in the
    order they were published (the acknowledgements of one read wait for
    one sync together)."""
    ch = broker.connect().channel()
    ch.queue_declare("ack-order", durable=True)
    ch.queue_bind("ack-order", "amq.topic", "ackord.t")
    c = Raw(broker.mqtt_port, b"ack-order", connect_props=[(r.SESSION_EXPIRY, 300)])
    burst = b""
    for i in range(1, 41):
        qos = QOS2 if i % 4 == 0 else QOS1
        first = (r.PUBLISH << 4) | (qos << 1)
        body = r.string("ackord/t") + struct.pack(">H", i) + b"\x00" + b"m%d" % i
        burst += r.packet(first, body)
    c.send(burst)
    acks = []
    for _ in range(40):
        kind, _, body = c.read()
        acks.append((kind, struct.unpack(">H", body[:2])[0]))
    assert acks == [(r.PUBREC if i % 4 == 0 else r.PUBACK, i) for i in range(1, 41)]
    for i in range(4, 41, 4):
        c.ack(r.PUBREL, i)
        c.expect(r.PUBCOMP)
    assert ch.queue_declare("ack-order", passive=True).method.message_count == 40
    ch.queue_delete("ack-order")
    ch.connection.close()
    c.disconnect(disc_props=[(r.SESSION_EXPIRY, 0)])
