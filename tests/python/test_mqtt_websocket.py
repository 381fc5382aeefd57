"""MQTT over WebSocket (RabbitMQ's Web MQTT: path /ws, subprotocol mqtt): paho-mqtt
with transport="websockets" for 3.1.1 and 5.0, interop with pika and with MQTT over
TCP, and the WebSocket layer itself driven by hand (upgrade checks, pings, packets
split across frames, text frames, oversized frames, close)."""
import base64
import os
import queue
import socket
import struct
import time

import paho.mqtt.client as mqtt
import pytest

from test_mqtt import Client, mqtt_packet, mqtt_str

# WebSocket opcodes and close codes (RFC 6455).
OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
CLOSE_NORMAL, CLOSE_UNSUPPORTED, CLOSE_TOO_BIG = 1000, 1003, 1009


class WsClient(Client):
    """The paho client of test_mqtt, over WebSocket."""

    def __init__(self, broker, client_id="", v5=False):
        proto = mqtt.MQTTv5 if v5 else mqtt.MQTTv311
        self.v5 = v5
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                             protocol=proto, transport="websockets")
        self.c.ws_set_options(path="/ws")
        self.messages, self.connected, self.disconnected = queue.Queue(), queue.Queue(), queue.Queue()
        self.c.on_message = lambda c, u, m: self.messages.put(m)
        self.c.on_connect = lambda c, u, f, rc, p=None: self.connected.put((f, rc))
        self.c.on_disconnect = lambda c, u, f, rc, p=None: self.disconnected.put(rc)
        self.c.connect("127.0.0.1", broker.ws_port, 30)
        self.c.loop_start()
        self.flags, self.rc = self.connected.get(timeout=10)
        assert not self.rc.is_failure, self.rc


@pytest.mark.parametrize("v5", [False, True], ids=["3.1.1", "5.0"])
def test_ws_subscribe_publish_qos0_and_qos1(broker, v5):
    tag = "v5" if v5 else "v4"
    c = WsClient(broker, f"ws-pubsub-{tag}", v5=v5)
    assert c.sub(f"ws/{tag}/+", qos=1)[0].value == 1
    c.pub(f"ws/{tag}/zero", b"q0", qos=0)
    c.pub(f"ws/{tag}/one", b"q1", qos=1)
    got = {m.topic: (m.payload, m.qos) for m in (c.get(), c.get())}
    assert got == {f"ws/{tag}/zero": (b"q0", 0), f"ws/{tag}/one": (b"q1", 1)}
    # Listings say which transport the session uses.
    want = "Web MQTT 5.0" if v5 else "Web MQTT 3.1.1"
    deadline = time.time() + 10
    protocols = []
    while time.time() < deadline and want not in protocols:
        protocols = [x["protocol"] for x in broker.api("/api/connections")[1]]
    assert want in protocols
    c.close()


@pytest.mark.parametrize("v5", [False, True], ids=["3.1.1", "5.0"])
def test_ws_interop_with_amqp_and_mqtt_over_tcp(broker, v5):
    tag = "v5" if v5 else "v4"
    ch = broker.connect().channel()
    q = ch.queue_declare("", exclusive=True).method.queue
    ch.queue_bind(q, "amq.topic", f"web.{tag}.#")
    ws = WsClient(broker, f"ws-interop-{tag}", v5=v5)
    tcp = Client(broker, f"tcp-interop-{tag}", v5=v5)
    tcp.sub(f"web/{tag}/#", qos=1)
    ws.sub(f"in/{tag}", qos=1)
    ws.pub(f"web/{tag}/dev1", b"from websocket", qos=1)
    method, props, body = next(ch.consume(q, auto_ack=True, inactivity_timeout=10))
    assert (method.routing_key, body, props.delivery_mode) == (f"web.{tag}.dev1", b"from websocket", 2)
    ch.cancel()
    m = tcp.get()
    assert (m.topic, m.payload) == (f"web/{tag}/dev1", b"from websocket")
    ch.basic_publish("amq.topic", f"in.{tag}", b"from pika")
    m = ws.get()
    assert (m.topic, m.payload) == (f"in/{tag}", b"from pika")
    tcp.pub(f"in/{tag}", b"from tcp", qos=1)
    assert ws.get().payload == b"from tcp"
    ws.close()
    tcp.close()


def test_ws_and_tcp_share_sessions_takeover(broker):
    """One client id is one session whichever transport it uses."""
    ws = WsClient(broker, "ws-takeover")
    tcp = Client(broker, "ws-takeover")
    ws.disconnected.get(timeout=10)
    assert broker.wait_log("session taken over by a new connection")
    tcp.close()


# --- the WebSocket layer by hand -------------------------------------------------


def upgrade(broker, path="/ws", protocols="mqtt"):
    """Send an upgrade request; returns (socket, status line, headers dict)."""
    s = socket.create_connection(("127.0.0.1", broker.ws_port), timeout=10)
    key = base64.b64encode(os.urandom(16)).decode()
    lines = [f"GET {path} HTTP/1.1", f"Host: 127.0.0.1:{broker.ws_port}", "Upgrade: websocket",
             "Connection: Upgrade", f"Sec-WebSocket-Key: {key}", "Sec-WebSocket-Version: 13"]
    if protocols is not None:
        lines.append(f"Sec-WebSocket-Protocol: {protocols}")
    s.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = s.recv(1)
        if not chunk:
            break
        head += chunk
    status, *rest = head.decode().split("\r\n")
    headers = {k.lower(): v.strip() for k, v in (h.split(":", 1) for h in rest if ":" in h)}
    return s, status, headers


def frame(op, payload=b"", fin=True):
    """A client frame (masked, as RFC 6455 requires)."""
    mask = os.urandom(4)
    n = len(payload)
    head = bytes([(0x80 if fin else 0) | op])
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 65536:
        head += bytes([0x80 | 126]) + struct.pack(">H", n)
    else:
        head += bytes([0x80 | 127]) + struct.pack(">Q", n)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def recv_exact(s, n):
    out = b""
    while len(out) < n:
        chunk = s.recv(n - len(out))
        if not chunk:
            raise ConnectionError(f"closed after {len(out)} of {n} bytes")
        out += chunk
    return out


def read_frame(s):
    """One server frame: (opcode, payload). Server frames are not masked."""
    b0, b1 = recv_exact(s, 2)
    assert b1 & 0x80 == 0, "server frames must not be masked"
    n = b1 & 0x7F
    if n == 126:
        n = struct.unpack(">H", recv_exact(s, 2))[0]
    elif n == 127:
        n = struct.unpack(">Q", recv_exact(s, 8))[0]
    return b0 & 0x0F, recv_exact(s, n)


class MqttOverWs:
    """MQTT bytes from the broker's binary frames, as one stream."""

    def __init__(self, s):
        self.s, self.buf, self.control = s, b"", []

    def packet(self):
        while True:
            if len(self.buf) >= 2:
                n, mult, i = 0, 1, 1
                while i < len(self.buf) and i < 5:
                    n += (self.buf[i] & 0x7F) * mult
                    mult *= 128
                    i += 1
                    if self.buf[i - 1] & 0x80 == 0:
                        if len(self.buf) >= i + n:
                            p, self.buf = self.buf[: i + n], self.buf[i + n:]
                            return p
                        break
            op, payload = read_frame(self.s)
            if op in (OP_BINARY, OP_CONT):
                self.buf += payload
            else:
                self.control.append((op, payload))
                if op == OP_CLOSE:
                    raise ConnectionError("closed")


def wait_line(broker, *parts, timeout=5):
    """True once one log line holds every part."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if any(all(p in line for p in parts) for line in list(broker.lines)):
            return True
        time.sleep(0.02)
    return False


def connect_packet(client_id, level=4):
    body = mqtt_str(b"MQTT") + bytes([level, 0x02]) + struct.pack(">H", 30)
    if level == 5:
        body += b"\x00"
    return mqtt_packet(0x10, body + mqtt_str(client_id.encode()))


def test_upgrade_checks_path_and_subprotocol(broker):
    s, status, _ = upgrade(broker, path="/mqtt")
    assert " 404 " in status, status
    s.close()
    assert broker.wait_log("no endpoint at path '/mqtt'")
    s, status, _ = upgrade(broker, protocols=None)
    assert " 400 " in status, status
    s.close()
    s, status, _ = upgrade(broker, protocols="chat, superchat")
    assert " 400 " in status, status
    s.close()
    assert broker.wait_log("subprotocol offered")
    for offered, chosen in [("mqtt", "mqtt"), ("chat, mqttv3.1", "mqttv3.1"), ("mqtt, mqttv3.1", "mqtt")]:
        s, status, headers = upgrade(broker, protocols=offered)
        assert " 101 " in status, status
        assert headers.get("sec-websocket-protocol") == chosen, (offered, headers)
        s.close()


def test_packets_split_across_frames_pings_and_close(broker):
    s, status, _ = upgrade(broker)
    assert " 101 " in status
    conn = MqttOverWs(s)
    c = connect_packet("ws-raw-split")
    # CONNECT in three frames of one fragmented message, then a whole message
    # carrying two packets; a ping in the middle of the fragments is answered.
    s.sendall(frame(OP_BINARY, c[:3], fin=False) + frame(OP_PING, b"are you there")
              + frame(OP_CONT, c[3:7], fin=False) + frame(OP_CONT, c[7:]))
    assert conn.packet() == b"\x20\x02\x00\x00"  # CONNACK, accepted
    sub = mqtt_packet(0x82, struct.pack(">H", 7) + mqtt_str(b"raw/t") + b"\x00")
    pub = mqtt_packet(0x30, mqtt_str(b"raw/t") + b"payload-1")
    # SUBSCRIBE and the first half of a PUBLISH in one message, its rest in the next.
    s.sendall(frame(OP_BINARY, sub + pub[:5]) + frame(OP_BINARY, pub[5:] + b"\xc0\x00"))
    assert conn.packet() == b"\x90\x03\x00\x07\x00"  # SUBACK granted QoS 0
    assert conn.packet() == pub
    assert conn.packet() == b"\xd0\x00"  # PINGRESP
    assert (OP_PONG, b"are you there") in conn.control
    # A close frame is answered with one, and the session ends.
    s.sendall(frame(OP_CLOSE, struct.pack(">H", CLOSE_NORMAL)))
    op, payload = read_frame(s)
    assert op == OP_CLOSE
    assert wait_line(broker, "MQTT connection closed", "client_id=ws-raw-split")
    s.close()


def test_text_frame_is_closed_with_1003(broker):
    s, status, _ = upgrade(broker)
    assert " 101 " in status
    s.sendall(frame(OP_BINARY, connect_packet("ws-raw-text")))
    conn = MqttOverWs(s)
    assert conn.packet()[:2] == b"\x20\x02"
    s.sendall(frame(OP_TEXT, b"hello"))
    op, payload = read_frame(s)
    assert op == OP_CLOSE
    assert struct.unpack(">H", payload[:2])[0] == CLOSE_UNSUPPORTED
    assert broker.wait_log("WebSocket text frame")
    s.close()


def test_oversized_frame_is_closed_with_1009(broker):
    s, status, _ = upgrade(broker)
    assert " 101 " in status
    # Only the header of a 64 MiB frame: refused before any payload arrives.
    s.sendall(bytes([0x80 | OP_BINARY, 0x80 | 127]) + struct.pack(">Q", 64 << 20) + os.urandom(4))
    op, payload = read_frame(s)
    assert op == OP_CLOSE
    assert struct.unpack(">H", payload[:2])[0] == CLOSE_TOO_BIG
    s.close()


def big_frame(op, payload):
    """A client frame masked with the zero key: RFC 6455 still sees it masked,
    and megabytes need no byte-by-byte XOR here."""
    return bytes([0x80 | op, 0x80 | 127]) + struct.pack(">Q", len(payload)) + b"\0\0\0\0" + payload


@pytest.mark.parametrize("whole", [False, True], ids=["header-only", "whole-packet"])
def test_too_large_packet_gets_disconnect_0x95_as_over_tcp(broker, whole):
    """MQTT 5 3.1.2.11.4 and 4.13.1: a packet over the server's Maximum Packet Size (16 MiB)
    is answered with DISCONNECT 0x95 (Packet too large) then the WebSocket close,
    whether its fixed header arrives alone or the whole packet in one message (the
    WebSocket message limit sits above the MQTT packet limit)."""
    s, status, _ = upgrade(broker)
    assert " 101 " in status
    s.sendall(frame(OP_BINARY, connect_packet(f"ws-too-large-{whole}", level=5)))
    conn = MqttOverWs(s)
    ack = conn.packet()
    assert (ack[0], ack[3]) == (0x20, 0), ack  # CONNACK, accepted
    body = mqtt_str(b"big/t") + b"\x00" + b"x" * ((16 << 20) + 16)
    pub = mqtt_packet(0x30, body)
    s.sendall(big_frame(OP_BINARY, pub if whole else pub[:5]))
    p = conn.packet()
    assert (p[0], p[2]) == (0xE0, 0x95), p[:8]
    with pytest.raises(ConnectionError):
        conn.packet()
    assert any(op == OP_CLOSE for op, _ in conn.control)
    s.close()


def test_v5_shutdown_sends_disconnect_then_close(tmp_path):
    from conftest import Broker
    b = Broker(tmp_path)
    try:
        s, status, _ = upgrade(b)
        assert " 101 " in status
        s.sendall(frame(OP_BINARY, connect_packet("ws-raw-shutdown", level=5)))
        conn = MqttOverWs(s)
        assert conn.packet()[0] == 0x20
        b.proc.send_signal(15)
        p = conn.packet()
        assert (p[0], p[2]) == (0xE0, 0x8B), p  # DISCONNECT, 0x8B server shutting down
        op, _ = read_frame(s)
        assert op == OP_CLOSE
        s.close()
        assert b.proc.wait(15) == 0
    finally:
        b.stop()
