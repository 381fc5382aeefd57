//! MQTT 3.1.1 (level 4) and 5.0 (level 5) packets, server side: one
//! [`Packet`] enum for both versions with optional v5 properties, read from a
//! byte buffer with an "incomplete" answer that drives the read loop, payloads
//! as `Bytes`. The shape follows rumqttd's protocol module; mqttbytes itself
//! has been frozen at 0.6 since 2022, so Warren keeps its own codec.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Why a packet could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum CodecError {
    /// Need more bytes.
    #[error("incomplete packet")]
    Incomplete,
    /// Remaining length encoding over 4 bytes.
    #[error("malformed remaining length")]
    BadLength,
    /// Larger than the configured maximum packet size.
    #[error("packet of {0} bytes exceeds the maximum packet size")]
    TooLarge(usize),
    /// Structure does not match the packet type.
    #[error("malformed packet: {0}")]
    Malformed(&'static str),
    /// Reserved or unknown packet type.
    #[error("unknown packet type {0}")]
    UnknownType(u8),
    /// CONNECT with an unsupported protocol level.
    #[error("unsupported protocol level {0}")]
    BadProtocol(u8),
}

/// MQTT 5 properties Warren reads or writes; others are skipped.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Props {
    /// 0x01
    pub payload_format: Option<u8>,
    /// 0x02, seconds
    pub message_expiry: Option<u32>,
    /// 0x03
    pub content_type: Option<String>,
    /// 0x08
    pub response_topic: Option<String>,
    /// 0x09
    pub correlation_data: Option<Bytes>,
    /// 0x11, seconds
    pub session_expiry: Option<u32>,
    /// 0x12
    pub assigned_client_id: Option<String>,
    /// 0x13
    pub server_keep_alive: Option<u16>,
    /// 0x18, seconds
    pub will_delay: Option<u32>,
    /// 0x1F
    pub reason_string: Option<String>,
    /// 0x21
    pub receive_maximum: Option<u16>,
    /// 0x22
    pub topic_alias_maximum: Option<u16>,
    /// 0x23
    pub topic_alias: Option<u16>,
    /// 0x24
    pub maximum_qos: Option<u8>,
    /// 0x25
    pub retain_available: Option<u8>,
    /// 0x26
    pub user: Vec<(String, String)>,
    /// 0x27
    pub maximum_packet_size: Option<u32>,
    /// 0x28
    pub wildcard_available: Option<u8>,
    /// 0x2A
    pub shared_available: Option<u8>,
}

/// A will message from CONNECT.
#[derive(Clone, Debug, PartialEq)]
pub struct Will {
    /// Topic.
    pub topic: String,
    /// Payload.
    pub payload: Bytes,
    /// QoS 0-2.
    pub qos: u8,
    /// Retain flag.
    pub retain: bool,
    /// Will properties (v5).
    pub props: Props,
}

/// CONNECT.
#[derive(Clone, Debug, PartialEq)]
pub struct Connect {
    /// 4 (3.1.1) or 5; 3 (3.1) is treated as 4.
    pub level: u8,
    /// Clean session (v4) / clean start (v5).
    pub clean: bool,
    /// Seconds.
    pub keep_alive: u16,
    /// Client identifier (may be empty).
    pub client_id: String,
    /// Will.
    pub will: Option<Will>,
    /// Username.
    pub username: Option<String>,
    /// Password.
    pub password: Option<Bytes>,
    /// Properties (v5).
    pub props: Props,
}

/// PUBLISH.
#[derive(Clone, Debug, PartialEq)]
pub struct Publish {
    /// Redelivery flag.
    pub dup: bool,
    /// 0, 1 or 2.
    pub qos: u8,
    /// Retain flag.
    pub retain: bool,
    /// Topic name (empty when a v5 topic alias stands for it).
    pub topic: String,
    /// Present for QoS > 0.
    pub pkid: u16,
    /// Properties (v5).
    pub props: Props,
    /// Payload.
    pub payload: Bytes,
}

/// One SUBSCRIBE entry.
#[derive(Clone, Debug, PartialEq)]
pub struct Filter {
    /// Topic filter.
    pub filter: String,
    /// Maximum QoS.
    pub qos: u8,
    /// v5 no-local.
    pub no_local: bool,
    /// v5 retain-as-published.
    pub retain_as_published: bool,
    /// v5 retain handling (0, 1, 2).
    pub retain_handling: u8,
}

/// Packets a server receives.
#[derive(Clone, Debug, PartialEq)]
pub enum Packet {
    /// CONNECT (boxed: it is large and comes once per connection)
    Connect(Box<Connect>),
    /// PUBLISH
    Publish(Publish),
    /// PUBACK (packet id, reason)
    PubAck(u16, u8),
    /// PUBREC
    PubRec(u16, u8),
    /// PUBREL
    PubRel(u16, u8),
    /// PUBCOMP
    PubComp(u16, u8),
    /// SUBSCRIBE (packet id, filters)
    Subscribe(u16, Vec<Filter>),
    /// UNSUBSCRIBE (packet id, filters)
    Unsubscribe(u16, Vec<String>),
    /// PINGREQ
    PingReq,
    /// DISCONNECT (reason code, properties)
    Disconnect(u8, Props),
    /// AUTH (v5): reason code
    Auth(u8),
}

struct Rd<'a> {
    b: &'a [u8],
    p: usize,
}

impl<'a> Rd<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], CodecError> {
        let end = self
            .p
            .checked_add(n)
            .ok_or(CodecError::Malformed("length"))?;
        let s = self
            .b
            .get(self.p..end)
            .ok_or(CodecError::Malformed("truncated"))?;
        self.p = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, CodecError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, CodecError> {
        let s = self.take(2)?;
        Ok(u16::from_be_bytes([s[0], s[1]]))
    }
    fn u32(&mut self) -> Result<u32, CodecError> {
        let s = self.take(4)?;
        Ok(u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
    }
    fn bin(&mut self) -> Result<&'a [u8], CodecError> {
        let n = self.u16()? as usize;
        self.take(n)
    }
    fn string(&mut self) -> Result<String, CodecError> {
        let b = self.bin()?;
        let s =
            std::str::from_utf8(b).map_err(|_| CodecError::Malformed("invalid UTF-8 string"))?;
        if s.contains('\0') {
            return Err(CodecError::Malformed("NUL in string"));
        }
        Ok(s.to_string())
    }
    fn varint(&mut self) -> Result<usize, CodecError> {
        let mut v = 0usize;
        for i in 0..4 {
            let b = self.u8()?;
            v |= ((b & 0x7f) as usize) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(CodecError::BadLength)
    }
    fn rest(&self) -> &'a [u8] {
        &self.b[self.p..]
    }
    fn done(&self) -> bool {
        self.p >= self.b.len()
    }

    fn props(&mut self) -> Result<Props, CodecError> {
        let len = self.varint()?;
        let body = self.take(len)?;
        let mut r = Rd { b: body, p: 0 };
        let mut p = Props::default();
        while !r.done() {
            let id = r.varint()?;
            match id {
                0x01 => p.payload_format = Some(r.u8()?),
                0x02 => p.message_expiry = Some(r.u32()?),
                0x03 => p.content_type = Some(r.string()?),
                0x08 => p.response_topic = Some(r.string()?),
                0x09 => p.correlation_data = Some(Bytes::copy_from_slice(r.bin()?)),
                0x0B => {
                    r.varint()?;
                }
                0x11 => p.session_expiry = Some(r.u32()?),
                0x12 => p.assigned_client_id = Some(r.string()?),
                0x13 => p.server_keep_alive = Some(r.u16()?),
                0x15 | 0x1A | 0x1C => {
                    r.string()?;
                }
                0x16 => {
                    r.bin()?;
                }
                0x17 | 0x19 | 0x24 | 0x25 | 0x28 | 0x29 | 0x2A => {
                    r.u8()?;
                }
                0x18 => p.will_delay = Some(r.u32()?),
                0x1F => p.reason_string = Some(r.string()?),
                0x21 => p.receive_maximum = Some(r.u16()?),
                0x22 => p.topic_alias_maximum = Some(r.u16()?),
                0x23 => p.topic_alias = Some(r.u16()?),
                0x26 => {
                    let k = r.string()?;
                    let v = r.string()?;
                    p.user.push((k, v));
                }
                0x27 => p.maximum_packet_size = Some(r.u32()?),
                _ => return Err(CodecError::Malformed("unknown property")),
            }
        }
        Ok(p)
    }
}

/// Read one packet. `level` is the connection's protocol level (0 before
/// CONNECT; CONNECT carries its own). Consumes the packet from `buf`.
pub fn read(buf: &mut BytesMut, level: u8, max_size: usize) -> Result<Packet, CodecError> {
    if buf.len() < 2 {
        return Err(CodecError::Incomplete);
    }
    let mut len = 0usize;
    let mut hdr = 1;
    loop {
        let Some(&b) = buf.get(hdr) else {
            return Err(CodecError::Incomplete);
        };
        len |= ((b & 0x7f) as usize) << (7 * (hdr - 1));
        hdr += 1;
        if b & 0x80 == 0 {
            break;
        }
        if hdr > 4 {
            return Err(CodecError::BadLength);
        }
    }
    if hdr + len > max_size {
        return Err(CodecError::TooLarge(hdr + len));
    }
    if buf.len() < hdr + len {
        return Err(CodecError::Incomplete);
    }
    let first = buf[0];
    // Small packets are copied out so that the read buffer is reused; only
    // large payloads are sliced out of it (a slice pins its whole chunk).
    let body = if len < ZERO_COPY_MIN {
        let b = Bytes::copy_from_slice(&buf[hdr..hdr + len]);
        buf.advance(hdr + len);
        b
    } else {
        let mut frame = buf.split_to(hdr + len);
        frame.advance(hdr);
        frame.freeze()
    };
    parse(first, body, level)
}

/// Packets at least this large keep their payload in the read buffer.
const ZERO_COPY_MIN: usize = 16 * 1024;

fn parse(first: u8, body: Bytes, level: u8) -> Result<Packet, CodecError> {
    let kind = first >> 4;
    let flags = first & 0x0f;
    let v5 = level == 5;
    let mut r = Rd { b: &body, p: 0 };
    let reason_and_props = |r: &mut Rd<'_>| -> Result<u8, CodecError> {
        if v5 && !r.done() {
            let code = r.u8()?;
            if !r.done() {
                r.props()?;
            }
            Ok(code)
        } else {
            Ok(0)
        }
    };
    Ok(match kind {
        1 => Packet::Connect(Box::new(connect(&mut r)?)),
        3 => {
            let qos = (flags >> 1) & 3;
            if qos == 3 {
                return Err(CodecError::Malformed("QoS 3"));
            }
            let topic = r.string()?;
            let pkid = if qos > 0 { r.u16()? } else { 0 };
            if qos > 0 && pkid == 0 {
                return Err(CodecError::Malformed("packet id 0"));
            }
            let props = if v5 { r.props()? } else { Props::default() };
            let start = r.p;
            Packet::Publish(Publish {
                dup: flags & 8 != 0,
                qos,
                retain: flags & 1 != 0,
                topic,
                pkid,
                props,
                payload: body.slice(start..),
            })
        }
        4 => Packet::PubAck(r.u16()?, reason_and_props(&mut r)?),
        5 => Packet::PubRec(r.u16()?, reason_and_props(&mut r)?),
        6 => {
            if flags != 2 {
                return Err(CodecError::Malformed("PUBREL flags"));
            }
            Packet::PubRel(r.u16()?, reason_and_props(&mut r)?)
        }
        7 => Packet::PubComp(r.u16()?, reason_and_props(&mut r)?),
        8 => {
            if flags != 2 {
                return Err(CodecError::Malformed("SUBSCRIBE flags"));
            }
            let pkid = r.u16()?;
            if v5 {
                r.props()?;
            }
            let mut filters = Vec::new();
            while !r.done() {
                let filter = r.string()?;
                let o = r.u8()?;
                if o & 0xC0 != 0 || (!v5 && o & 0xFC != 0) {
                    return Err(CodecError::Malformed("subscription options"));
                }
                filters.push(Filter {
                    filter,
                    qos: o & 3,
                    no_local: o & 4 != 0,
                    retain_as_published: o & 8 != 0,
                    retain_handling: (o >> 4) & 3,
                });
            }
            if filters.is_empty() {
                return Err(CodecError::Malformed("SUBSCRIBE without filters"));
            }
            Packet::Subscribe(pkid, filters)
        }
        10 => {
            if flags != 2 {
                return Err(CodecError::Malformed("UNSUBSCRIBE flags"));
            }
            let pkid = r.u16()?;
            if v5 {
                r.props()?;
            }
            let mut filters = Vec::new();
            while !r.done() {
                filters.push(r.string()?);
            }
            if filters.is_empty() {
                return Err(CodecError::Malformed("UNSUBSCRIBE without filters"));
            }
            Packet::Unsubscribe(pkid, filters)
        }
        12 => Packet::PingReq,
        14 => {
            let (code, props) = if v5 && !r.done() {
                let c = r.u8()?;
                let p = if r.done() {
                    Props::default()
                } else {
                    r.props()?
                };
                (c, p)
            } else {
                (0, Props::default())
            };
            Packet::Disconnect(code, props)
        }
        15 if v5 => Packet::Auth(if r.done() { 0 } else { r.u8()? }),
        other => return Err(CodecError::UnknownType(other)),
    })
}

fn connect(r: &mut Rd<'_>) -> Result<Connect, CodecError> {
    let name = r.bin()?;
    let level = r.u8()?;
    match (name, level) {
        (b"MQTT", 4 | 5) | (b"MQIsdp", 3) => {}
        (b"MQTT" | b"MQIsdp", l) => return Err(CodecError::BadProtocol(l)),
        _ => return Err(CodecError::Malformed("protocol name")),
    }
    let level = if level == 3 { 4 } else { level };
    let flags = r.u8()?;
    if flags & 1 != 0 {
        return Err(CodecError::Malformed("reserved connect flag"));
    }
    let keep_alive = r.u16()?;
    let props = if level == 5 {
        r.props()?
    } else {
        Props::default()
    };
    let client_id = r.string()?;
    let will = if flags & 4 != 0 {
        let wp = if level == 5 {
            r.props()?
        } else {
            Props::default()
        };
        let topic = r.string()?;
        let payload = Bytes::copy_from_slice(r.bin()?);
        let qos = (flags >> 3) & 3;
        if qos == 3 {
            return Err(CodecError::Malformed("will QoS 3"));
        }
        Some(Will {
            topic,
            payload,
            qos,
            retain: flags & 0x20 != 0,
            props: wp,
        })
    } else {
        if flags & 0x38 != 0 {
            return Err(CodecError::Malformed("will flags without will"));
        }
        None
    };
    let username = if flags & 0x80 != 0 {
        Some(r.string()?)
    } else {
        None
    };
    let password = if flags & 0x40 != 0 {
        Some(Bytes::copy_from_slice(r.bin()?))
    } else {
        None
    };
    let _ = r.rest();
    Ok(Connect {
        level,
        clean: flags & 2 != 0,
        keep_alive,
        client_id,
        will,
        username,
        password,
        props,
    })
}

fn put_varint(out: &mut BytesMut, mut v: usize) {
    loop {
        let mut b = (v & 0x7f) as u8;
        v >>= 7;
        if v > 0 {
            b |= 0x80;
        }
        out.put_u8(b);
        if v == 0 {
            break;
        }
    }
}

fn put_str(out: &mut BytesMut, s: &[u8]) {
    out.put_u16(s.len() as u16);
    out.put_slice(s);
}

fn encode_props(p: &Props, out: &mut BytesMut) {
    let mut b = BytesMut::new();
    if let Some(v) = p.payload_format {
        b.put_u8(0x01);
        b.put_u8(v);
    }
    if let Some(v) = p.message_expiry {
        b.put_u8(0x02);
        b.put_u32(v);
    }
    if let Some(v) = &p.content_type {
        b.put_u8(0x03);
        put_str(&mut b, v.as_bytes());
    }
    if let Some(v) = &p.response_topic {
        b.put_u8(0x08);
        put_str(&mut b, v.as_bytes());
    }
    if let Some(v) = &p.correlation_data {
        b.put_u8(0x09);
        put_str(&mut b, v);
    }
    if let Some(v) = p.session_expiry {
        b.put_u8(0x11);
        b.put_u32(v);
    }
    if let Some(v) = &p.assigned_client_id {
        b.put_u8(0x12);
        put_str(&mut b, v.as_bytes());
    }
    if let Some(v) = p.server_keep_alive {
        b.put_u8(0x13);
        b.put_u16(v);
    }
    if let Some(v) = &p.reason_string {
        b.put_u8(0x1F);
        put_str(&mut b, v.as_bytes());
    }
    if let Some(v) = p.receive_maximum {
        b.put_u8(0x21);
        b.put_u16(v);
    }
    if let Some(v) = p.topic_alias_maximum {
        b.put_u8(0x22);
        b.put_u16(v);
    }
    if let Some(v) = p.maximum_qos {
        b.put_u8(0x24);
        b.put_u8(v);
    }
    if let Some(v) = p.retain_available {
        b.put_u8(0x25);
        b.put_u8(v);
    }
    for (k, v) in &p.user {
        b.put_u8(0x26);
        put_str(&mut b, k.as_bytes());
        put_str(&mut b, v.as_bytes());
    }
    if let Some(v) = p.maximum_packet_size {
        b.put_u8(0x27);
        b.put_u32(v);
    }
    if let Some(v) = p.wildcard_available {
        b.put_u8(0x28);
        b.put_u8(v);
    }
    if let Some(v) = p.shared_available {
        b.put_u8(0x2A);
        b.put_u8(v);
    }
    put_varint(out, b.len());
    out.put_slice(&b);
}

fn frame(out: &mut BytesMut, first: u8, body: &[u8]) {
    out.put_u8(first);
    put_varint(out, body.len());
    out.put_slice(body);
}

/// CONNACK.
pub fn write_connack(
    out: &mut BytesMut,
    level: u8,
    session_present: bool,
    code: u8,
    props: &Props,
) {
    let mut b = BytesMut::new();
    b.put_u8(u8::from(session_present));
    b.put_u8(code);
    if level == 5 {
        encode_props(props, &mut b);
    }
    frame(out, 0x20, &b);
}

/// PUBLISH (server to client).
pub fn write_publish(out: &mut BytesMut, level: u8, p: &Publish) {
    let mut b = BytesMut::with_capacity(p.topic.len() + p.payload.len() + 16);
    put_str(&mut b, p.topic.as_bytes());
    if p.qos > 0 {
        b.put_u16(p.pkid);
    }
    if level == 5 {
        encode_props(&p.props, &mut b);
    }
    b.put_slice(&p.payload);
    let first = 0x30 | (u8::from(p.dup) << 3) | (p.qos << 1) | u8::from(p.retain);
    frame(out, first, &b);
}

/// A PUBLISH for a delivery, written straight into `out`: the topic is the
/// AMQP routing key with `.` and `/` swapped on the fly, so a 3.1.1
/// delivery allocates nothing (v5 properties use a reused scratch buffer).
#[allow(clippy::too_many_arguments)]
pub fn write_delivery(
    out: &mut BytesMut,
    level: u8,
    (dup, qos, retain): (bool, u8, bool),
    routing_key: &str,
    pkid: u16,
    props: Option<&Props>,
    payload: &[u8],
) {
    thread_local! {
        static SCRATCH: std::cell::RefCell<BytesMut> = std::cell::RefCell::new(BytesMut::new());
    }
    SCRATCH.with(|scratch| {
        let mut encoded = scratch.borrow_mut();
        encoded.clear();
        if level == 5 {
            encode_props(props.unwrap_or(&Props::default()), &mut encoded);
        }
        let len =
            2 + routing_key.len() + if qos > 0 { 2 } else { 0 } + encoded.len() + payload.len();
        out.reserve(len + 5);
        out.put_u8(0x30 | (u8::from(dup) << 3) | (qos << 1) | u8::from(retain));
        put_varint(out, len);
        out.put_u16(routing_key.len() as u16);
        for b in routing_key.bytes() {
            out.put_u8(match b {
                b'.' => b'/',
                b'/' => b'.',
                other => other,
            });
        }
        if qos > 0 {
            out.put_u16(pkid);
        }
        out.put_slice(&encoded);
        out.put_slice(payload);
    });
}

/// PUBACK / PUBREC / PUBREL / PUBCOMP with an optional v5 reason code.
pub fn write_ack(out: &mut BytesMut, level: u8, kind: u8, pkid: u16, code: u8) {
    let first = (kind << 4) | if kind == 6 { 2 } else { 0 };
    out.put_u8(first);
    if level == 5 && code != 0 {
        out.put_u8(3);
        out.put_u16(pkid);
        out.put_u8(code);
    } else {
        out.put_u8(2);
        out.put_u16(pkid);
    }
}

/// SUBACK.
pub fn write_suback(out: &mut BytesMut, level: u8, pkid: u16, codes: &[u8]) {
    let mut b = BytesMut::new();
    b.put_u16(pkid);
    if level == 5 {
        b.put_u8(0);
    }
    b.put_slice(codes);
    frame(out, 0x90, &b);
}

/// UNSUBACK.
pub fn write_unsuback(out: &mut BytesMut, level: u8, pkid: u16, count: usize) {
    let mut b = BytesMut::new();
    b.put_u16(pkid);
    if level == 5 {
        b.put_u8(0);
        for _ in 0..count {
            b.put_u8(0);
        }
    }
    frame(out, 0xB0, &b);
}

/// PINGRESP.
pub fn write_pingresp(out: &mut BytesMut) {
    out.put_slice(&[0xD0, 0]);
}

/// DISCONNECT from the server (v5 only; 3.1.1 just closes).
pub fn write_disconnect(out: &mut BytesMut, code: u8, reason: &str) {
    let mut b = BytesMut::new();
    b.put_u8(code);
    encode_props(
        &Props {
            reason_string: Some(reason.to_string()),
            ..Default::default()
        },
        &mut b,
    );
    frame(out, 0xE0, &b);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delivery_writer_matches_publish_encoding() {
        for level in [4u8, 5] {
            for qos in [0u8, 1, 2] {
                let props = Props {
                    content_type: Some("text/plain".into()),
                    user: vec![("k".into(), "v".into())],
                    ..Default::default()
                };
                let p = Publish {
                    dup: qos > 0,
                    qos,
                    retain: true,
                    topic: "sensors/room.1/temp".into(),
                    pkid: if qos > 0 { 7 } else { 0 },
                    props: if level == 5 {
                        props.clone()
                    } else {
                        Props::default()
                    },
                    payload: Bytes::from_static(b"21.5"),
                };
                let mut a = BytesMut::new();
                write_publish(&mut a, level, &p);
                let mut b = BytesMut::new();
                write_delivery(
                    &mut b,
                    level,
                    (p.dup, qos, true),
                    "sensors.room/1.temp",
                    p.pkid,
                    Some(&props),
                    b"21.5",
                );
                assert_eq!(a, b, "level {level} qos {qos}");
            }
        }
    }

    #[test]
    fn publish_roundtrip_v5_and_v4() {
        for level in [4u8, 5] {
            let p = Publish {
                dup: false,
                qos: 1,
                retain: true,
                topic: "a/b".into(),
                pkid: 7,
                props: if level == 5 {
                    Props {
                        content_type: Some("text/plain".into()),
                        user: vec![("k".into(), "v".into())],
                        ..Default::default()
                    }
                } else {
                    Props::default()
                },
                payload: Bytes::from_static(b"hello"),
            };
            let mut out = BytesMut::new();
            write_publish(&mut out, level, &p);
            let got = read(&mut out, level, 1 << 20).unwrap();
            assert_eq!(got, Packet::Publish(p));
            assert!(out.is_empty());
        }
    }

    #[test]
    fn incomplete_and_garbage() {
        let mut b = BytesMut::from(&[0x30u8, 10, 0, 3][..]);
        assert_eq!(read(&mut b, 4, 1024), Err(CodecError::Incomplete));
        let mut b = BytesMut::from(&[0x30u8, 0xff, 0xff, 0xff, 0xff, 0x01][..]);
        assert_eq!(read(&mut b, 4, usize::MAX), Err(CodecError::BadLength));
        let mut b = BytesMut::from(&[0x30u8, 0x80, 0x80, 0x01][..]);
        assert!(matches!(
            read(&mut b, 4, 1024),
            Err(CodecError::TooLarge(_))
        ));
        for n in 0..200u32 {
            let v: Vec<u8> = (0..(n % 40 + 2)).map(|i| (i * 37 + n * 11) as u8).collect();
            let mut b = BytesMut::from(&v[..]);
            let _ = read(&mut b, (n % 2 + 4) as u8, 1024);
        }
    }
}
