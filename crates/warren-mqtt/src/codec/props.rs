//! The MQTT 5 properties Warren reads or writes, and their wire form.

use bytes::{BufMut, Bytes, BytesMut};

use super::read::Rd;
use super::write::{put_str, put_varint};
use super::CodecError;

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

/// The longest string or binary data an MQTT length prefix (two bytes)
/// can carry.
pub const MAX_STRING: usize = u16::MAX as usize;

/// Read a property list (length, then identifier/value pairs); properties
/// Warren does not use are skipped, unknown identifiers are malformed.
pub(super) fn decode(rd: &mut Rd<'_>) -> Result<Props, CodecError> {
    let len = rd.varint()?;
    let body = rd.take(len)?;
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

/// A string property, left out (with a debug line) when it is longer than
/// a length prefix can say: writing it would corrupt the packet.
fn put_str_prop(b: &mut BytesMut, id: u8, v: &[u8]) {
    if v.len() > MAX_STRING {
        tracing::debug!(
            property = id,
            len = v.len(),
            "MQTT property longer than 65,535 bytes left out"
        );
        return;
    }
    b.put_u8(id);
    put_str(b, v);
}

/// Write `p` as a property list (length, then the properties).
pub(super) fn encode(p: &Props, out: &mut BytesMut) {
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
        put_str_prop(&mut b, 0x03, v.as_bytes());
    }
    if let Some(v) = &p.response_topic {
        put_str_prop(&mut b, 0x08, v.as_bytes());
    }
    if let Some(v) = &p.correlation_data {
        put_str_prop(&mut b, 0x09, v);
    }
    if let Some(v) = p.session_expiry {
        b.put_u8(0x11);
        b.put_u32(v);
    }
    if let Some(v) = &p.assigned_client_id {
        put_str_prop(&mut b, 0x12, v.as_bytes());
    }
    if let Some(v) = p.server_keep_alive {
        b.put_u8(0x13);
        b.put_u16(v);
    }
    if let Some(v) = &p.reason_string {
        put_str_prop(&mut b, 0x1F, v.as_bytes());
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
        // A user property (often an AMQP header) that a length prefix
        // cannot hold is left out rather than written corrupt.
        if k.len() > MAX_STRING || v.len() > MAX_STRING {
            tracing::debug!(
                key_len = k.len(),
                value_len = v.len(),
                "MQTT user property longer than 65,535 bytes left out"
            );
            continue;
        }
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
