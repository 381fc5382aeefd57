//! Writing the packets a server sends.

use bytes::{BufMut, BytesMut};

use super::{kind, props, AckKind, Props, Publish, SessionProps};
use crate::reason::{ConnackCode, ReasonCode};
use crate::topic::swap_byte;

/// A variable byte integer (remaining length, property list length).
pub(super) fn put_varint(out: &mut BytesMut, mut v: usize) {
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

/// A length-prefixed string or binary value. The caller makes sure it fits
/// ([`props::MAX_STRING`]): a longer one would corrupt the packet.
pub(super) fn put_str(out: &mut BytesMut, s: &[u8]) {
    debug_assert!(
        s.len() <= props::MAX_STRING,
        "MQTT string of {} bytes",
        s.len()
    );
    out.put_u16(s.len() as u16);
    out.put_slice(s);
}

fn frame(out: &mut BytesMut, first: u8, body: &[u8]) {
    out.put_u8(first);
    put_varint(out, body.len());
    out.put_slice(body);
}

/// A PUBLISH's first byte: type, DUP, QoS and RETAIN.
fn publish_first_byte(dup: bool, qos: u8, retain: bool) -> u8 {
    (kind::PUBLISH << 4) | (u8::from(dup) << 3) | (qos << 1) | u8::from(retain)
}

/// CONNACK, with the return code (3.1.1) or reason code (5.0) of `code`.
pub fn write_connack(
    out: &mut BytesMut,
    level: u8,
    session_present: bool,
    code: ConnackCode,
    props: &Props,
) {
    let mut b = BytesMut::new();
    b.put_u8(u8::from(session_present));
    b.put_u8(code.for_level(level));
    if level == 5 {
        props::encode(props, &mut b);
    }
    frame(out, kind::CONNACK << 4, &b);
}

/// PUBLISH (server to client).
pub fn write_publish(out: &mut BytesMut, level: u8, p: &Publish) {
    let mut b = BytesMut::with_capacity(p.topic.len() + p.payload.len() + 16);
    put_str(&mut b, p.topic.as_bytes());
    if p.qos > 0 {
        b.put_u16(p.pkid);
    }
    if level == 5 {
        props::encode(&p.props, &mut b);
    }
    b.put_slice(&p.payload);
    let first = publish_first_byte(p.dup, p.qos, p.retain);
    frame(out, first, &b);
}

/// A PUBLISH for a delivery, written straight into `out`: the topic is the
/// AMQP routing key with `.` and `/` swapped on the fly, so a 3.1.1
/// delivery allocates nothing (v5 properties use a reused scratch buffer).
/// An empty `routing_key` writes an empty topic (a v5 topic alias stands
/// for it). A packet larger than `max_size` (the client's Maximum Packet
/// Size) is not written, and false is returned.
#[allow(clippy::too_many_arguments)]
pub fn write_delivery(
    out: &mut BytesMut,
    level: u8,
    (dup, qos, retain): (bool, u8, bool),
    routing_key: &str,
    pkid: u16,
    props: Option<&Props>,
    payload: &[u8],
    max_size: usize,
) -> bool {
    thread_local! {
        static SCRATCH: std::cell::RefCell<BytesMut> = std::cell::RefCell::new(BytesMut::new());
    }
    SCRATCH.with(|scratch| {
        let mut encoded = scratch.borrow_mut();
        encoded.clear();
        if level == 5 {
            props::encode(props.unwrap_or(&Props::default()), &mut encoded);
        }
        let len =
            2 + routing_key.len() + if qos > 0 { 2 } else { 0 } + encoded.len() + payload.len();
        if 1 + varint_len(len) + len > max_size {
            return false;
        }
        out.reserve(len + 5);
        out.put_u8(publish_first_byte(dup, qos, retain));
        put_varint(out, len);
        // A message's routing key is at most MAX_KEY (255) bytes, so the
        // two-byte length always holds it.
        debug_assert!(routing_key.len() <= warren_core::message::MAX_KEY);
        out.put_u16(routing_key.len() as u16);
        // Copied, then swapped in place: `put_u8` per byte re-checked the
        // capacity each time (about 15 instructions a byte in callgrind).
        let start = out.len();
        out.put_slice(routing_key.as_bytes());
        for b in &mut out[start..] {
            *b = swap_byte(*b);
        }
        if qos > 0 {
            out.put_u16(pkid);
        }
        out.put_slice(&encoded);
        out.put_slice(payload);
        true
    })
}

/// Bytes of a variable byte integer holding `v`.
fn varint_len(v: usize) -> usize {
    match v {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}

/// PUBACK / PUBREC / PUBREL / PUBCOMP with an optional v5 reason code
/// (left out when it is success, and always for 3.1.1).
pub fn write_ack(out: &mut BytesMut, level: u8, kind: AckKind, pkid: u16, code: ReasonCode) {
    let first = ((kind as u8) << 4) | if kind == AckKind::PubRel { 2 } else { 0 };
    out.put_u8(first);
    if level == 5 && code != ReasonCode::Success {
        out.put_u8(3);
        out.put_u16(pkid);
        out.put_u8(code.code());
    } else {
        out.put_u8(2);
        out.put_u16(pkid);
    }
}

/// SUBACK: one granted QoS or failure code per filter.
pub fn write_suback(out: &mut BytesMut, level: u8, pkid: u16, codes: &[ReasonCode]) {
    let mut b = BytesMut::new();
    b.put_u16(pkid);
    if level == 5 {
        // An empty property list.
        b.put_u8(0);
    }
    for c in codes {
        b.put_u8(c.code());
    }
    frame(out, kind::SUBACK << 4, &b);
}

/// UNSUBACK, with one reason code per filter for 5.0 (3.1.1 has none).
pub fn write_unsuback(out: &mut BytesMut, level: u8, pkid: u16, codes: &[ReasonCode]) {
    let mut b = BytesMut::new();
    b.put_u16(pkid);
    if level == 5 {
        // An empty property list, then the codes.
        b.put_u8(0);
        for c in codes {
            b.put_u8(c.code());
        }
    }
    frame(out, kind::UNSUBACK << 4, &b);
}

/// PINGRESP.
pub fn write_pingresp(out: &mut BytesMut) {
    out.put_slice(&[kind::PINGRESP << 4, 0]);
}

/// DISCONNECT from the server (v5 only; 3.1.1 just closes); an empty
/// `reason` sends no reason string.
pub fn write_disconnect(out: &mut BytesMut, code: ReasonCode, reason: &str) {
    let mut b = BytesMut::new();
    b.put_u8(code.code());
    props::encode(
        &Props {
            session: (!reason.is_empty()).then(|| {
                Box::new(SessionProps {
                    reason_string: Some(reason.to_string()),
                    ..Default::default()
                })
            }),
            ..Default::default()
        },
        &mut b,
    );
    frame(out, kind::DISCONNECT << 4, &b);
}
