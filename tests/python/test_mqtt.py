"""MQTT 3.1.1 and 5.0 with paho-mqtt, and interop with pika through amq.topic."""
import queue
import socket
import struct
import time

import paho.mqtt.client as mqtt
import pika
import pytest
from paho.mqtt.properties import Properties
from paho.mqtt.packettypes import PacketTypes

from conftest import drain
from mqtt_raw import packet as mqtt_packet
from mqtt_raw import string as mqtt_str


class Client:
    """A paho client whose received messages land in a queue."""

    def __init__(self, broker, client_id="", v5=False, clean=True, will=None, user=None, password=None):
        self.v5 = v5
        proto = mqtt.MQTTv5 if v5 else mqtt.MQTTv311
        kw = {"clean_session": clean} if not v5 else {}
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=proto, **kw)
        self.messages = queue.Queue()
        self.connected = queue.Queue()
        self.disconnected = queue.Queue()
        self.c.on_message = lambda c, u, m: self.messages.put(m)
        self.c.on_connect = lambda c, u, f, rc, p=None: self.connected.put((f, rc))
        self.c.on_disconnect = lambda c, u, f, rc, p=None: self.disconnected.put(rc)
        if will:
            self.c.will_set(*will)
        if user:
            self.c.username_pw_set(user, password)
        if v5:
            self.c.connect("127.0.0.1", broker.mqtt_port, 30, clean_start=clean)
        else:
            self.c.connect("127.0.0.1", broker.mqtt_port, 30)
        self.c.loop_start()
        flags, rc = self.connected.get(timeout=10)
        self.flags, self.rc = flags, rc

    def sub(self, topic, qos=1):
        done = queue.Queue()
        self.c.on_subscribe = lambda c, u, mid, codes, p=None: done.put(codes)
        self.c.subscribe(topic, qos)
        return done.get(timeout=10)

    def unsub(self, topic):
        done = queue.Queue()
        self.c.on_unsubscribe = lambda c, u, mid, codes=None, p=None: done.put(mid)
        self.c.unsubscribe(topic)
        return done.get(timeout=10)

    def pub(self, topic, payload, qos=1, retain=False, properties=None):
        info = self.c.publish(topic, payload, qos=qos, retain=retain, properties=properties)
        info.wait_for_publish(10)
        assert info.is_published()

    def get(self, timeout=10):
        return self.messages.get(timeout=timeout)

    def none(self, wait=0.3):
        with pytest.raises(queue.Empty):
            self.messages.get(timeout=wait)

    def close(self):
        self.c.disconnect()
        self.c.loop_stop()


def test_mqtt_publish_reaches_amqp_queue_on_amq_topic(broker):
    ch = broker.connect().channel()
    q = ch.queue_declare("", exclusive=True).method.queue
    ch.queue_bind(q, "amq.topic", "sensors.*.temp")
    m = Client(broker, "sensor-1")
    m.pub("sensors/room1/temp", b"21.5", qos=1)
    m.pub("sensors/room1/hum", b"40", qos=1)
    method, props, body = next(ch.consume(q, auto_ack=True, inactivity_timeout=10))
    assert (method.routing_key, body, props.delivery_mode) == ("sensors.room1.temp", b"21.5", 2)
    ch.cancel()
    assert ch.basic_get(q)[0] is None
    m.close()


def test_amqp_publish_reaches_mqtt_wildcard_subscriber(broker):
    m = Client(broker, "dashboard")
    assert m.sub("sensors/+/hum", qos=1)[0].value == 1
    ch = broker.connect().channel()
    ch.basic_publish("amq.topic", "sensors.room2.hum", b"55", pika.BasicProperties(delivery_mode=2))
    msg = m.get()
    assert (msg.topic, msg.payload, msg.qos) == ("sensors/room2/hum", b"55", 1)
    # Dots in MQTT topics survive the round trip ('.' <-> '/').
    m.sub("v1.2/#", qos=0)
    p = Client(broker, "pub-dots")
    p.pub("v1.2/status", b"ok", qos=0)
    msg = m.get()
    assert (msg.topic, msg.payload) == ("v1.2/status", b"ok")
    m.close(); p.close()


def test_mqtt_to_mqtt_qos_levels_and_wildcards(broker):
    sub = Client(broker, "sub-all")
    codes = sub.sub("home/#", qos=2)
    assert codes[0].value == 2
    pub = Client(broker, "pub-all")
    for qos in (0, 1, 2):
        pub.pub(f"home/kitchen/q{qos}", f"m{qos}".encode(), qos=qos)
    # Delivered at min(publish QoS, granted QoS): 0, 1 and a full QoS 2 flow.
    got = sorted(((m.payload, m.qos) for m in (sub.get(), sub.get(), sub.get())))
    assert got == [(b"m0", 0), (b"m1", 1), (b"m2", 2)]
    sub.none()
    sub.close(); pub.close()


def test_retained_messages(broker):
    pub = Client(broker, "retainer")
    pub.pub("status/door", b"open", qos=1, retain=True)
    pub.pub("status/door", b"closed", qos=1, retain=True)  # replaces
    pub.pub("status/window", b"shut", qos=1, retain=True)
    sub = Client(broker, "late-joiner")
    assert sub.sub("status/+", qos=1)[0].value == 1
    got = {(m.topic, m.payload, m.retain) for m in (sub.get(), sub.get())}
    assert got == {("status/door", b"closed", True), ("status/window", b"shut", True)}
    pub.pub("status/door", b"", qos=1, retain=True)  # clears
    live = sub.get()
    assert (live.topic, live.payload, live.retain) == ("status/door", b"", False)
    sub2 = Client(broker, "later-joiner")
    sub2.sub("status/door", qos=1)
    sub2.none()
    for c in (pub, sub, sub2):
        c.close()


def test_will_on_abnormal_disconnect(broker):
    watcher = Client(broker, "watcher")
    watcher.sub("clients/+/status", qos=1)
    doomed = Client(broker, "doomed", will=("clients/doomed/status", b"offline", 1, False))
    doomed.c.loop_stop()
    doomed.c.socket().close()  # no DISCONNECT
    msg = watcher.get()
    assert (msg.topic, msg.payload) == ("clients/doomed/status", b"offline")
    # A clean DISCONNECT sends no will.
    polite = Client(broker, "polite", will=("clients/polite/status", b"offline", 1, False))
    polite.close()
    watcher.none(0.5)
    watcher.close()


def test_client_id_takeover_disconnects_the_first(broker):
    first = Client(broker, "same-id")
    second = Client(broker, "same-id")
    first.disconnected.get(timeout=10)
    assert second.rc == 0
    second.close()


def test_wrong_password_and_bad_packets(broker):
    bad = Client(broker, "intruder", user="guest", password="wrong")
    # paho reports the 3.1.1 return code 4 as the v5 code 0x86.
    assert bad.rc.value == 0x86 and str(bad.rc) == "Bad user name or password"
    bad.c.loop_stop()
    bad5 = Client(broker, "intruder5", v5=True, user="guest", password="wrong")
    assert bad5.rc.value == 0x86
    bad5.c.loop_stop()
    good = Client(broker, "guest-ok", user="guest", password="guest")
    assert good.rc.value == 0
    good.close()
    # A first packet that is not CONNECT: the connection is closed.
    s = socket.create_connection(("127.0.0.1", broker.mqtt_port), timeout=5)
    s.sendall(b"\xc0\x00")  # PINGREQ
    assert s.recv(10) == b""
    s.close()
    # MQTT 5 PUBLISH to a wildcard topic: DISCONNECT with 0x90.
    s = socket.create_connection(("127.0.0.1", broker.mqtt_port), timeout=5)
    connect = b"\x00\x04MQTT\x05\x02\x00\x3c\x00" + b"\x00\x03bad"
    s.sendall(bytes([0x10, len(connect)]) + connect)
    ack = s.recv(64)
    assert ack[0] == 0x20 and ack[3] == 0
    topic = b"a/+/b"
    body = struct.pack(">H", len(topic)) + topic + b"\x00" + b"x"
    s.sendall(bytes([0x30, len(body)]) + body)
    data = s.recv(256)
    assert data[0] == 0xE0 and data[2] == 0x90
    s.close()
    assert broker.wait_log("invalid topic name in PUBLISH")
    # Others are unaffected.
    ok = Client(broker, "after-bad")
    assert ok.sub("after/bad", qos=1)[0].value == 1
    ok.pub("after/bad", b"fine")
    assert ok.get().payload == b"fine"
    ok.close()


def test_mqtt5_properties_map_to_amqp_and_back(broker):
    ch = broker.connect().channel()
    q = ch.queue_declare("", exclusive=True).method.queue
    ch.queue_bind(q, "amq.topic", "rpc.request")
    c = Client(broker, "v5-client", v5=True)
    props = Properties(PacketTypes.PUBLISH)
    props.ContentType = "application/json"
    props.ResponseTopic = "rpc/reply"
    props.CorrelationData = b"corr-7"
    props.UserProperty = [("tenant", "acme")]
    c.pub("rpc/request", b"{}", qos=1, properties=props)
    method, p, body = next(ch.consume(q, auto_ack=True, inactivity_timeout=10))
    ch.cancel()
    assert p.content_type == "application/json"
    assert p.correlation_id == "corr-7"
    assert p.headers["x-reply-to-topic"] == "rpc/reply"
    assert p.headers["tenant"] == "acme"
    # And back: an AMQP reply reaches the v5 client with MQTT properties.
    c.sub("rpc/reply", qos=1)
    ch.basic_publish("amq.topic", "rpc.reply", b"[]", pika.BasicProperties(
        content_type="application/json", correlation_id="corr-7", delivery_mode=2, headers={"tenant": "acme"}))
    m = c.get()
    assert m.payload == b"[]"
    assert m.properties.ContentType == "application/json"
    assert m.properties.CorrelationData == b"corr-7"
    assert ("tenant", "acme") in m.properties.UserProperty
    c.close()


def test_persistent_session_survives_broker_restart(tmp_path):
    from conftest import Broker
    b = Broker(tmp_path)
    try:
        c = Client(b, "field-device", clean=False)
        c.sub("cmd/field-device/#", qos=1)
        c.close()
        ch = b.connect().channel()
        ch.confirm_delivery()
        ch.basic_publish("amq.topic", "cmd.field-device.reboot", b"now", pika.BasicProperties(delivery_mode=2))
        b.restart()
        c = Client(b, "field-device", clean=False)
        assert c.flags.session_present
        m = c.get()
        assert (m.topic, m.payload, m.qos) == ("cmd/field-device/reboot", b"now", 1)
        c.close()
    finally:
        b.stop()


def test_persistent_session_keeps_granted_qos2_across_restart(tmp_path):
    from conftest import Broker
    b = Broker(tmp_path)
    try:
        # v5: a session expiry interval keeps the session after disconnect.
        props = Properties(PacketTypes.CONNECT)
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="qos2-device", protocol=mqtt.MQTTv5)
        props.SessionExpiryInterval = 3600
        got = queue.Queue()
        c.on_message = lambda cl, u, m: got.put(m)
        done = queue.Queue()
        c.on_subscribe = lambda cl, u, mid, codes, p=None: done.put(codes)
        c.connect("127.0.0.1", b.mqtt_port, 30, clean_start=True, properties=props)
        c.loop_start()
        c.subscribe("orders/#", qos=2)
        assert [r.value for r in done.get(timeout=10)] == [2]
        c.subscribe("orders/#", qos=2)  # a resubscription replaces, it does not add
        assert [r.value for r in done.get(timeout=10)] == [2]
        c.disconnect()
        c.loop_stop()
        status, bindings = b.api("/api/bindings/%2F")
        mine = [x for x in bindings if x["destination"] == "mqtt-subscription-qos2-device"
                and x["source"] == "amq.topic"]
        assert len(mine) == 1 and mine[0]["arguments"] == {"x-mqtt-qos": 2}
        pub = Client(b, "qos2-pub", v5=True)
        pub.pub("orders/1", b"exactly once", qos=2)
        pub.close()
        b.restart()
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="qos2-device", protocol=mqtt.MQTTv5)
        c.on_message = lambda cl, u, m: got.put(m)
        flags = queue.Queue()
        c.on_connect = lambda cl, u, f, rc, p=None: flags.put(f)
        c.connect("127.0.0.1", b.mqtt_port, 30, clean_start=False, properties=props)
        c.loop_start()
        assert flags.get(timeout=10).session_present
        m = got.get(timeout=10)
        # Delivered at the QoS 2 granted before the restart, not downgraded.
        assert (m.topic, m.payload, m.qos) == ("orders/1", b"exactly once", 2)
        c.disconnect()
        c.loop_stop()
    finally:
        b.stop()


def test_shared_subscriptions_split_work_across_the_group(broker):
    a = Client(broker, "worker-a", v5=True)
    b = Client(broker, "worker-b", v5=True)
    watcher = Client(broker, "watcher-all")
    assert a.sub("$share/workers/jobs/#", qos=1)[0].value == 1
    assert b.sub("$share/workers/jobs/#", qos=1)[0].value == 1
    watcher.sub("jobs/#", qos=1)
    pub = Client(broker, "job-source")
    for i in range(20):
        pub.pub(f"jobs/{i}", str(i).encode(), qos=1)
    seen_all = sorted(int(watcher.get().payload) for _ in range(20))
    assert seen_all == list(range(20))
    got_a, got_b = [], []
    deadline = time.time() + 10
    while len(got_a) + len(got_b) < 20 and time.time() < deadline:
        for c, acc in ((a, got_a), (b, got_b)):
            try:
                acc.append(int(c.messages.get(timeout=0.05).payload))
            except queue.Empty:
                pass
    assert sorted(got_a + got_b) == list(range(20)), "each message exactly once in the group"
    assert got_a and got_b, "both members got work"
    # Leaving the group: the other member gets everything.
    a.unsub("$share/workers/jobs/#")  # returns once UNSUBACK arrived
    for i in range(5):
        pub.pub(f"jobs/x{i}", b"later", qos=1)
    assert [b.get().payload for _ in range(5)] == [b"later"] * 5
    for c in (a, b, watcher, pub):
        c.close()


def test_mosquitto_clients_interoperate(broker):
    """mosquitto_sub/mosquitto_pub (MQTT 3.1.1 and 5) against Warren."""
    import shutil
    import subprocess
    if not shutil.which("mosquitto_sub"):
        pytest.fail("mosquitto-clients not installed (tests/run.sh installs them)")
    port = str(broker.mqtt_port)
    for version in ("mqttv311", "mqttv5"):
        sub = subprocess.Popen(
            ["mosquitto_sub", "-h", "127.0.0.1", "-p", port, "-V", version, "-t", "cli/+/reading",
             "-q", "1", "-C", "2", "-W", "15", "-v", "-u", "guest", "-P", "guest"],
            stdout=subprocess.PIPE, text=True)
        # The subscription exists once the broker has bound the session queue.
        ch = broker.connect().channel()
        deadline = time.time() + 10
        while time.time() < deadline:
            status, bindings = broker.api("/api/bindings")
            if any(b["routing_key"] == "cli.*.reading" for b in bindings):
                break
            time.sleep(0.05)
        subprocess.run(["mosquitto_pub", "-h", "127.0.0.1", "-p", port, "-V", version, "-t", "cli/a/reading",
                        "-m", "1.5", "-q", "1", "-u", "guest", "-P", "guest"], check=True, timeout=15)
        ch.basic_publish("amq.topic", "cli.b.reading", b"2.5", pika.BasicProperties(delivery_mode=2))
        out, _ = sub.communicate(timeout=20)
        assert sub.returncode == 0
        assert sorted(out.split("\n")[:2]) == ["cli/a/reading 1.5", "cli/b/reading 2.5"], out


def v5_client(broker, client_id, clean, expiry=None, will=None, will_delay=None):
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    got = queue.Queue()
    c.on_connect = lambda cl, u, f, rc, p=None: got.put((f, rc))
    props = None
    if expiry is not None:
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = expiry
    if will:
        wp = None
        if will_delay is not None:
            wp = Properties(PacketTypes.WILLMESSAGE)
            wp.WillDelayInterval = will_delay
        c.will_set(*will, properties=wp)
    c.connect("127.0.0.1", broker.mqtt_port, 30, clean_start=clean, properties=props)
    c.loop_start()
    flags, rc = got.get(timeout=10)
    return c, flags


def test_mqtt5_session_expiry(broker):
    # Expiry 0: the session ends with the connection even without clean start.
    c, _ = v5_client(broker, "short-lived", clean=False, expiry=0)
    c.subscribe("x/y", 1)
    c.disconnect(); c.loop_stop()
    c, flags = v5_client(broker, "short-lived", clean=False, expiry=0)
    assert not flags.session_present
    c.disconnect(); c.loop_stop()
    # Expiry 60 s: the session is still there on reconnect.
    c, _ = v5_client(broker, "long-lived", clean=False, expiry=60)
    c.disconnect(); c.loop_stop()
    c, flags = v5_client(broker, "long-lived", clean=False, expiry=60)
    assert flags.session_present
    c.disconnect(); c.loop_stop()
    # Expiry 1 s: gone after it elapses (polled through the management API).
    c, _ = v5_client(broker, "brief", clean=False, expiry=1)
    c.disconnect(); c.loop_stop()
    deadline = time.time() + 10
    while time.time() < deadline:
        _, queues = broker.api("/api/queues")
        if not any(q["name"] == "mqtt-subscription-brief" for q in queues):
            break
        time.sleep(0.1)
    else:
        pytest.fail("session with expiry 1 s was not removed")


def test_mqtt5_session_expiry_survives_restart(tmp_path):
    from conftest import Broker
    b = Broker(tmp_path)
    try:
        for cid, expiry in (("expiring", 2), ("forever", 0xFFFFFFFF)):
            c, _ = v5_client(b, cid, clean=False, expiry=expiry)
            subacks = queue.Queue()
            c.on_subscribe = lambda cl, u, mid, codes, p=None: subacks.put(codes)
            c.subscribe(cid[0] + "/#", 1)
            subacks.get(timeout=10)
            c.disconnect(); c.loop_stop()
        b.restart()
        # The expiry is kept with the session (the queue's x-expires): the
        # expiring session still goes, counting from the restart.
        _, q = b.api("/api/queues/%2F/mqtt-subscription-expiring")
        assert q["arguments"] == {"x-expires": 2000}
        deadline = time.time() + 15
        while time.time() < deadline:
            _, queues = b.api("/api/queues")
            if not any(x["name"] == "mqtt-subscription-expiring" for x in queues):
                break
            time.sleep(0.1)
        else:
            pytest.fail("expired session outlived the restart")
        assert any(x["name"] == "mqtt-subscription-forever" for x in b.api("/api/queues")[1])
        # Reconnecting with another expiry changes it (and it is saved).
        c, flags = v5_client(b, "forever", clean=False, expiry=3600)
        assert flags.session_present
        c.disconnect(); c.loop_stop()
        _, q = b.api("/api/queues/%2F/mqtt-subscription-forever")
        assert q["arguments"] == {"x-expires": 3600000}
    finally:
        b.stop()


def test_mqtt5_will_delay_and_cancel_on_reconnect(broker):
    watcher = Client(broker, "delay-watcher")
    watcher.sub("wills/#", qos=1)
    c, _ = v5_client(broker, "delayed", clean=True, expiry=30, will=("wills/delayed", b"gone", 1, False), will_delay=1)
    c.loop_stop()
    start = time.time()
    c.socket().close()
    msg = watcher.get(timeout=10)
    assert msg.payload == b"gone" and time.time() - start >= 0.9
    # Reconnecting within the delay cancels the will.
    c, _ = v5_client(broker, "comeback", clean=True, expiry=30, will=("wills/comeback", b"gone", 1, False), will_delay=2)
    c.loop_stop()
    c.socket().close()
    c2, _ = v5_client(broker, "comeback", clean=False, expiry=30)
    watcher.none(3)
    c2.disconnect(); c2.loop_stop()
    watcher.close()


def raw_connect(broker, client_id, level=4, clean=True, props=b""):
    s = socket.create_connection(("127.0.0.1", broker.mqtt_port), timeout=5)
    flags = 0x02 if clean else 0
    body = mqtt_str(b"MQTT") + bytes([level, flags]) + struct.pack(">H", 60)
    if level == 5:
        body += bytes([len(props)]) + props
    body += mqtt_str(client_id)
    s.sendall(mqtt_packet(0x10, body))
    kind, ack = read_packet(s)  # exactly the CONNACK; more may follow
    assert kind == 0x20
    return s, bytes([kind, len(ack)]) + ack


def read_packet(s):
    first = s.recv(1)
    if not first:
        return None, b""
    mult, length = 1, 0
    while True:
        b = s.recv(1)[0]
        length += (b & 0x7F) * mult
        mult *= 128
        if not b & 0x80:
            break
    body = b""
    while len(body) < length:
        body += s.recv(length - len(body))
    return first[0], body


def test_unacked_qos1_is_redelivered_with_dup_on_reconnect(broker):
    s, _ = raw_connect(broker, b"dup-client", clean=False)
    s.sendall(mqtt_packet(0x82, struct.pack(">H", 1) + mqtt_str(b"dup/t") + b"\x01"))
    kind, _ = read_packet(s)
    assert kind == 0x90
    ch = broker.connect().channel()
    ch.basic_publish("amq.topic", "dup.t", b"once", pika.BasicProperties(delivery_mode=2))
    first, body = read_packet(s)
    assert first & 0xF0 == 0x30 and (first >> 1) & 3 == 1 and not first & 0x08
    s.close()  # never PUBACKed
    s, ack = raw_connect(broker, b"dup-client", clean=False)
    assert ack[2] == 1  # session present
    first, body = read_packet(s)
    assert first & 0x08, "redelivery carries DUP"
    assert body.endswith(b"once")
    pkid = body[2 + 5:2 + 5 + 2]
    s.sendall(bytes([0x40, 2]) + pkid)
    s.close()


def test_oversized_packet_gets_0x95_and_topic_alias_works(broker):
    s, ack = raw_connect(broker, b"big-sender", level=5)
    # A PUBLISH claiming 20 MiB (limit 16 MiB): DISCONNECT 0x95.
    s.sendall(bytes([0x30, 0x80, 0x80, 0x80, 0x0A]))
    kind, body = read_packet(s)
    assert kind == 0xE0 and body[0] == 0x95
    s.close()
    assert broker.wait_log("exceeds the maximum packet size")
    # Topic alias: first PUBLISH sets alias 1, the second uses it alone.
    watcher = Client(broker, "alias-watcher")
    watcher.sub("alias/topic", qos=0)
    s, _ = raw_connect(broker, b"aliaser", level=5)
    alias = b"\x03\x23\x00\x01"  # properties: length 3, topic alias = 1
    s.sendall(mqtt_packet(0x30, mqtt_str(b"alias/topic") + alias + b"one"))
    s.sendall(mqtt_packet(0x30, mqtt_str(b"") + alias + b"two"))
    assert [watcher.get().payload, watcher.get().payload] == [b"one", b"two"]
    # An alias never set: DISCONNECT with 0x82 (protocol error).
    s.sendall(mqtt_packet(0x30, mqtt_str(b"") + b"\x03\x23\x00\x02" + b"x"))
    kind, body = read_packet(s)
    assert kind == 0xE0 and body[0] == 0x82
    s.close()
    watcher.close()


def test_mqtt5_no_local_and_retain_handling(broker):
    from paho.mqtt.subscribeoptions import SubscribeOptions
    c = Client(broker, "chatty", v5=True)
    done = queue.Queue()
    c.c.on_subscribe = lambda cl, u, mid, codes, p=None: done.put(codes)
    c.c.subscribe("chat/room", options=SubscribeOptions(qos=1, noLocal=True))
    assert done.get(timeout=10)[0].value == 1
    other = Client(broker, "listener", v5=True)
    other.sub("chat/room", qos=1)
    c.pub("chat/room", b"mine", qos=1)
    assert other.get().payload == b"mine"
    c.none(0.5)  # not echoed to its publisher
    Client(broker, "someone-else").pub("chat/room", b"theirs", qos=1)
    assert c.get().payload == b"theirs"
    # Retain handling 1: retained sent for a new subscription only.
    Client(broker, "retainer-rh").pub("rh/topic", b"kept", qos=1, retain=True)
    r = Client(broker, "rh-sub", v5=True)
    r.c.on_subscribe = lambda cl, u, mid, codes, p=None: done.put(codes)
    r.c.subscribe("rh/topic", options=SubscribeOptions(qos=1, retainHandling=1))
    done.get(timeout=10)
    assert r.get().payload == b"kept"
    r.c.subscribe("rh/topic", options=SubscribeOptions(qos=1, retainHandling=1))
    done.get(timeout=10)
    r.none(0.5)
    r.c.subscribe("rh/topic", options=SubscribeOptions(qos=1, retainHandling=0))
    done.get(timeout=10)
    assert r.get().payload == b"kept"
    for x in (c, other, r):
        x.close()


def test_mqtt5_retain_as_published(broker):
    from paho.mqtt.subscribeoptions import SubscribeOptions
    done = queue.Queue()
    keep = Client(broker, "rap-keep", v5=True)
    keep.c.on_subscribe = lambda cl, u, mid, codes, p=None: done.put(codes)
    keep.c.subscribe("rap/#", options=SubscribeOptions(qos=1, retainAsPublished=True, retainHandling=2))
    done.get(timeout=10)
    plain = Client(broker, "rap-plain", v5=True)
    plain.c.on_subscribe = lambda cl, u, mid, codes, p=None: done.put(codes)
    plain.c.subscribe("rap/#", options=SubscribeOptions(qos=1, retainHandling=2))
    done.get(timeout=10)
    pub = Client(broker, "rap-pub", v5=True)
    pub.pub("rap/a", b"retained", qos=1, retain=True)
    pub.pub("rap/a", b"not retained", qos=1, retain=False)
    # retain-as-published: the flag is passed on as the publisher set it.
    m1, m2 = keep.get(), keep.get()
    assert (m1.payload, m1.retain) == (b"retained", True)
    assert (m2.payload, m2.retain) == (b"not retained", False)
    # Without it, forwarded messages have RETAIN=0 (MQTT-3.3.1-12).
    m1, m2 = plain.get(), plain.get()
    assert (m1.payload, m1.retain) == (b"retained", False)
    assert (m2.payload, m2.retain) == (b"not retained", False)
    # A 3.1.1 subscriber never sees the flag on forwarded messages.
    v3 = Client(broker, "rap-v3")
    v3.sub("rap/#")
    v3.get()  # the retained message, sent on subscribe with RETAIN=1
    pub.pub("rap/a", b"again", qos=1, retain=True)
    m = v3.get()
    assert (m.payload, m.retain) == (b"again", False)
    pub.pub("rap/a", b"", qos=1, retain=True)  # clear the retained message
    for x in (keep, plain, pub, v3):
        x.close()
