"""A raw MQTT client over a socket, for tests that check bytes on the wire:
packets are built and parsed here, MQTT 5 properties included."""
import socket
import struct

# MQTT 5.0 property identifiers (spec table 2-4).
PAYLOAD_FORMAT = 0x01
MESSAGE_EXPIRY = 0x02
CONTENT_TYPE = 0x03
RESPONSE_TOPIC = 0x08
CORRELATION_DATA = 0x09
SUBSCRIPTION_ID = 0x0B
SESSION_EXPIRY = 0x11
ASSIGNED_CLIENT_ID = 0x12
SERVER_KEEP_ALIVE = 0x13
AUTH_METHOD = 0x15
REASON_STRING = 0x1F
RECEIVE_MAXIMUM = 0x21
TOPIC_ALIAS_MAXIMUM = 0x22
TOPIC_ALIAS = 0x23
MAXIMUM_QOS = 0x24
RETAIN_AVAILABLE = 0x25
USER_PROPERTY = 0x26
MAXIMUM_PACKET_SIZE = 0x27
WILDCARD_AVAILABLE = 0x28
SUBSCRIPTION_IDS_AVAILABLE = 0x29
SHARED_AVAILABLE = 0x2A

BYTE = {PAYLOAD_FORMAT, MAXIMUM_QOS, RETAIN_AVAILABLE, WILDCARD_AVAILABLE,
        SUBSCRIPTION_IDS_AVAILABLE, SHARED_AVAILABLE, 0x17, 0x19}
TWO = {SERVER_KEEP_ALIVE, RECEIVE_MAXIMUM, TOPIC_ALIAS_MAXIMUM, TOPIC_ALIAS}
FOUR = {MESSAGE_EXPIRY, SESSION_EXPIRY, MAXIMUM_PACKET_SIZE, 0x18}
STRING = {CONTENT_TYPE, RESPONSE_TOPIC, ASSIGNED_CLIENT_ID, AUTH_METHOD, REASON_STRING, 0x1A, 0x1C}
BINARY = {CORRELATION_DATA, 0x16}

CONNECT, CONNACK, PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP = 1, 2, 3, 4, 5, 6, 7
SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK, PINGREQ, PINGRESP, DISCONNECT = 8, 9, 10, 11, 12, 13, 14


def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def packet(first, body):
    return bytes([first]) + varint(len(body)) + body


def string(s):
    if isinstance(s, str):
        s = s.encode()
    return struct.pack(">H", len(s)) + s


def prop(pid, value):
    """One property: identifier then value by the identifier's type."""
    if pid in BYTE:
        return bytes([pid, value])
    if pid in TWO:
        return bytes([pid]) + struct.pack(">H", value)
    if pid in FOUR:
        return bytes([pid]) + struct.pack(">I", value)
    if pid == SUBSCRIPTION_ID:
        return bytes([pid]) + varint(value)
    if pid in STRING or pid in BINARY:
        return bytes([pid]) + string(value)
    if pid == USER_PROPERTY:
        return bytes([pid]) + string(value[0]) + string(value[1])
    raise ValueError(pid)


def props(*pairs):
    """A property list from (identifier, value) pairs."""
    body = b"".join(prop(p, v) for p, v in pairs)
    return varint(len(body)) + body


def read_varint(b, i):
    n, shift = 0, 0
    while True:
        c = b[i]
        i += 1
        n |= (c & 0x7F) << shift
        shift += 7
        if not c & 0x80:
            return n, i


def parse_props(b, i):
    """Properties at b[i:]: a dict (lists for repeatable ones) and the end."""
    n, i = read_varint(b, i)
    end = i + n
    out = {}
    while i < end:
        pid = b[i]
        i += 1
        if pid in BYTE:
            v = b[i]; i += 1
        elif pid in TWO:
            v = struct.unpack(">H", b[i:i + 2])[0]; i += 2
        elif pid in FOUR:
            v = struct.unpack(">I", b[i:i + 4])[0]; i += 4
        elif pid == SUBSCRIPTION_ID:
            v, i = read_varint(b, i)
            out.setdefault(pid, []).append(v)
            continue
        elif pid in STRING or pid in BINARY:
            ln = struct.unpack(">H", b[i:i + 2])[0]
            v = bytes(b[i + 2:i + 2 + ln]); i += 2 + ln
            if pid in STRING:
                v = v.decode()
        elif pid == USER_PROPERTY:
            kl = struct.unpack(">H", b[i:i + 2])[0]
            k = b[i + 2:i + 2 + kl].decode(); i += 2 + kl
            vl = struct.unpack(">H", b[i:i + 2])[0]
            v = b[i + 2:i + 2 + vl].decode(); i += 2 + vl
            out.setdefault(pid, []).append((k, v))
            continue
        else:
            raise ValueError(f"property {pid:#x}")
        out[pid] = v
    return out, end


class Publish:
    def __init__(self, first, body, v5):
        self.dup = bool(first & 0x08)
        self.qos = (first >> 1) & 3
        self.retain = bool(first & 1)
        tl = struct.unpack(">H", body[:2])[0]
        self.topic = body[2:2 + tl].decode()
        i = 2 + tl
        self.pkid = None
        if self.qos:
            self.pkid = struct.unpack(">H", body[i:i + 2])[0]
            i += 2
        self.props = {}
        if v5:
            self.props, i = parse_props(body, i)
        self.payload = bytes(body[i:])


class Raw:
    """One MQTT connection; `level` 5 parses properties."""

    def __init__(self, port, client_id, level=5, clean=True, connect_props=(), keep_alive=60,
                 name=b"MQTT", user=None, password=None, expect_ok=True, timeout=10):
        self.level = level
        self.s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        flags = (0x02 if clean else 0) | (0x80 if user else 0) | (0x40 if password else 0)
        body = string(name) + bytes([level, flags]) + struct.pack(">H", keep_alive)
        if level == 5:
            body += props(*connect_props)
        body += string(client_id)
        if user:
            body += string(user)
        if password:
            body += string(password)
        self.send(packet(CONNECT << 4, body))
        kind, _, ack = self.read()
        assert kind == CONNACK, kind
        self.session_present = bool(ack[0] & 1)
        self.code = ack[1]
        self.connack_props = parse_props(ack, 2)[0] if level == 5 and len(ack) > 2 else {}
        if expect_ok:
            assert self.code == 0, f"CONNACK {self.code:#x}"

    def send(self, data):
        self.s.sendall(data)

    def _exact(self, n):
        data = b""
        while len(data) < n:
            chunk = self.s.recv(n - len(data))
            if not chunk:
                raise EOFError("closed")
            data += chunk
        return data

    def read(self):
        """(packet type, flags, body) of the next packet; EOFError when closed."""
        first = self._exact(1)[0]
        n, shift = 0, 0
        while True:
            c = self._exact(1)[0]
            n |= (c & 0x7F) << shift
            shift += 7
            if not c & 0x80:
                break
        return first >> 4, first, self._exact(n)

    def expect(self, kind):
        k, first, body = self.read()
        assert k == kind, f"expected packet type {kind}, got {k} {body!r}"
        return first, body

    def publish_in(self):
        first, body = self.expect(PUBLISH)
        return Publish(first, body, self.level == 5)

    def closed(self):
        """True once the server has closed (reading any packets before it)."""
        try:
            while True:
                self.read()
        except (EOFError, ConnectionResetError):
            return True

    def disconnect_reason(self):
        """The reason code of the server's DISCONNECT (packets before it skipped)."""
        while True:
            k, _, body = self.read()
            if k == DISCONNECT:
                return body[0] if body else 0

    def subscribe(self, pkid, *filters, sub_props=()):
        """filters: (filter, options byte) pairs; returns the SUBACK codes."""
        body = struct.pack(">H", pkid)
        if self.level == 5:
            body += props(*sub_props)
        for f, o in filters:
            body += string(f) + bytes([o])
        self.send(packet(0x82, body))
        _, ack = self.expect(SUBACK)
        i = 2
        if self.level == 5:
            _, i = parse_props(ack, 2)
        return list(ack[i:])

    def unsubscribe(self, pkid, *filters):
        body = struct.pack(">H", pkid) + (b"\x00" if self.level == 5 else b"")
        body += b"".join(string(f) for f in filters)
        self.send(packet(0xA2, body))
        _, ack = self.expect(UNSUBACK)
        return list(ack[3:]) if self.level == 5 else []

    def publish(self, topic, payload, qos=0, pkid=1, pub_props=(), dup=False, retain=False):
        first = (PUBLISH << 4) | (0x08 if dup else 0) | (qos << 1) | (1 if retain else 0)
        body = string(topic)
        if qos:
            body += struct.pack(">H", pkid)
        if self.level == 5:
            body += props(*pub_props)
        self.send(packet(first, body + payload))

    def ack(self, kind, pkid):
        first = (kind << 4) | (2 if kind == PUBREL else 0)
        self.send(packet(first, struct.pack(">H", pkid)))

    def disconnect(self, code=0, disc_props=()):
        body = b""
        if self.level == 5 and (code or disc_props):
            body = bytes([code]) + props(*disc_props)
        self.send(packet(DISCONNECT << 4, body))
        self.s.close()

    def close(self):
        self.s.close()
