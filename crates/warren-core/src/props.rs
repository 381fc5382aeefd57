//! Message properties. The canonical form inside Warren is the AMQP 0-9-1
//! basic-properties encoding (flags word + fields), as in RabbitMQ: AMQP
//! deliveries resend those bytes untouched, and only the few fields the core
//! needs (persistence, expiry, headers) are read, without allocating.

use bytes::{BufMut, Bytes, BytesMut};

use crate::error::DecodeError;
use crate::value::{Reader, Table};

const CONTENT_TYPE: u16 = 1 << 15;
const CONTENT_ENCODING: u16 = 1 << 14;
const HEADERS: u16 = 1 << 13;
const DELIVERY_MODE: u16 = 1 << 12;
const PRIORITY: u16 = 1 << 11;
const CORRELATION_ID: u16 = 1 << 10;
const REPLY_TO: u16 = 1 << 9;
const EXPIRATION: u16 = 1 << 8;
const MESSAGE_ID: u16 = 1 << 7;
const TIMESTAMP: u16 = 1 << 6;
const TYPE: u16 = 1 << 5;
const USER_ID: u16 = 1 << 4;
const APP_ID: u16 = 1 << 3;
const CLUSTER_ID: u16 = 1 << 2;

/// The fields the core acts on, read from raw properties without allocating.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Scalars {
    /// 2 means persistent.
    pub delivery_mode: u8,
    /// Message priority, 0 when absent.
    pub priority: u8,
    /// Per-message TTL in milliseconds (the `expiration` property).
    pub expiration_ms: Option<u64>,
    /// Byte range of the headers table (with its length prefix), if present.
    pub headers: Option<(usize, usize)>,
    /// Byte range of the reply_to text, if present.
    pub reply_to: Option<(usize, usize)>,
}

/// Read the scalars the router and queues need. Fails on malformed input so
/// the adapter can answer with a frame error instead of storing garbage.
pub fn scan(raw: &[u8]) -> Result<Scalars, DecodeError> {
    let mut r = Reader::new(raw);
    let flags = read_flags(&mut r)?;
    let mut s = Scalars::default();
    if flags & CONTENT_TYPE != 0 {
        r.short_str()?;
    }
    if flags & CONTENT_ENCODING != 0 {
        r.short_str()?;
    }
    if flags & HEADERS != 0 {
        let start = r.pos;
        r.long_bytes()?;
        s.headers = Some((start, r.pos));
    }
    if flags & DELIVERY_MODE != 0 {
        s.delivery_mode = r.u8()?;
    }
    if flags & PRIORITY != 0 {
        s.priority = r.u8()?;
    }
    if flags & CORRELATION_ID != 0 {
        r.short_str()?;
    }
    if flags & REPLY_TO != 0 {
        let v = r.short_str()?;
        s.reply_to = Some((r.pos - v.len(), r.pos));
    }
    if flags & EXPIRATION != 0 {
        let e = r.short_str()?;
        let text = std::str::from_utf8(e).map_err(|_| DecodeError::BadExpiration)?;
        s.expiration_ms = Some(text.parse().map_err(|_| DecodeError::BadExpiration)?);
    }
    if flags & MESSAGE_ID != 0 {
        r.short_str()?;
    }
    if flags & TIMESTAMP != 0 {
        r.u64()?;
    }
    for f in [TYPE, USER_ID, APP_ID, CLUSTER_ID] {
        if flags & f != 0 {
            r.short_str()?;
        }
    }
    Ok(s)
}

fn read_flags(r: &mut Reader<'_>) -> Result<u16, DecodeError> {
    let flags = r.u16()?;
    // Bit 0 announces another flags word; no defined property lives there.
    let mut more = flags & 1 != 0;
    while more {
        more = r.u16()? & 1 != 0;
    }
    Ok(flags)
}

/// All basic properties, owned. Used off the hot path: direct reply-to
/// rewriting, the management API and protocol bridges.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Properties {
    /// MIME type of the body.
    pub content_type: Option<String>,
    /// Encoding of the body.
    pub content_encoding: Option<String>,
    /// Application headers.
    pub headers: Option<Table>,
    /// 1 transient, 2 persistent.
    pub delivery_mode: Option<u8>,
    /// 0..9.
    pub priority: Option<u8>,
    /// RPC correlation.
    pub correlation_id: Option<String>,
    /// RPC reply address.
    pub reply_to: Option<String>,
    /// TTL in milliseconds, as text.
    pub expiration: Option<String>,
    /// Application message id.
    pub message_id: Option<String>,
    /// Seconds since the epoch.
    pub timestamp: Option<u64>,
    /// Application message type.
    pub kind: Option<String>,
    /// Validated user id.
    pub user_id: Option<String>,
    /// Producing application.
    pub app_id: Option<String>,
    /// Deprecated cluster id.
    pub cluster_id: Option<String>,
}

fn text(b: &[u8]) -> Result<String, DecodeError> {
    Ok(std::str::from_utf8(b)
        .map_err(|_| DecodeError::BadUtf8)?
        .to_string())
}

impl Properties {
    /// Decode the AMQP wire form.
    pub fn decode(raw: &[u8]) -> Result<Properties, DecodeError> {
        let mut r = Reader::new(raw);
        let flags = read_flags(&mut r)?;
        let mut p = Properties::default();
        let s = |r: &mut Reader<'_>, bit: u16| -> Result<Option<String>, DecodeError> {
            if flags & bit != 0 {
                Ok(Some(text(r.short_str()?)?))
            } else {
                Ok(None)
            }
        };
        p.content_type = s(&mut r, CONTENT_TYPE)?;
        p.content_encoding = s(&mut r, CONTENT_ENCODING)?;
        if flags & HEADERS != 0 {
            p.headers = Some(r.table()?);
        }
        if flags & DELIVERY_MODE != 0 {
            p.delivery_mode = Some(r.u8()?);
        }
        if flags & PRIORITY != 0 {
            p.priority = Some(r.u8()?);
        }
        p.correlation_id = s(&mut r, CORRELATION_ID)?;
        p.reply_to = s(&mut r, REPLY_TO)?;
        p.expiration = s(&mut r, EXPIRATION)?;
        p.message_id = s(&mut r, MESSAGE_ID)?;
        if flags & TIMESTAMP != 0 {
            p.timestamp = Some(r.u64()?);
        }
        p.kind = s(&mut r, TYPE)?;
        p.user_id = s(&mut r, USER_ID)?;
        p.app_id = s(&mut r, APP_ID)?;
        p.cluster_id = s(&mut r, CLUSTER_ID)?;
        Ok(p)
    }

    /// Encode to the AMQP wire form.
    pub fn encode(&self) -> Bytes {
        fn short(out: &mut BytesMut, flags: &mut u16, bit: u16, v: &Option<String>) {
            if let Some(v) = v {
                *flags |= bit;
                let b = &v.as_bytes()[..v.len().min(255)];
                out.put_u8(b.len() as u8);
                out.put_slice(b);
            }
        }
        let mut out = BytesMut::with_capacity(64);
        let mut flags = 0u16;
        out.put_u16(0);
        short(&mut out, &mut flags, CONTENT_TYPE, &self.content_type);
        short(
            &mut out,
            &mut flags,
            CONTENT_ENCODING,
            &self.content_encoding,
        );
        if let Some(h) = &self.headers {
            flags |= HEADERS;
            h.encode(&mut out);
        }
        if let Some(d) = self.delivery_mode {
            flags |= DELIVERY_MODE;
            out.put_u8(d);
        }
        if let Some(p) = self.priority {
            flags |= PRIORITY;
            out.put_u8(p);
        }
        short(&mut out, &mut flags, CORRELATION_ID, &self.correlation_id);
        short(&mut out, &mut flags, REPLY_TO, &self.reply_to);
        short(&mut out, &mut flags, EXPIRATION, &self.expiration);
        short(&mut out, &mut flags, MESSAGE_ID, &self.message_id);
        if let Some(t) = self.timestamp {
            flags |= TIMESTAMP;
            out.put_u64(t);
        }
        short(&mut out, &mut flags, TYPE, &self.kind);
        short(&mut out, &mut flags, USER_ID, &self.user_id);
        short(&mut out, &mut flags, APP_ID, &self.app_id);
        short(&mut out, &mut flags, CLUSTER_ID, &self.cluster_id);
        out[0..2].copy_from_slice(&flags.to_be_bytes());
        out.freeze()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value::Value;

    #[test]
    fn roundtrip_and_scan() {
        let mut h = Table::default();
        h.insert("x", Value::I32(7));
        let p = Properties {
            content_type: Some("text/plain".into()),
            headers: Some(h),
            delivery_mode: Some(2),
            priority: Some(3),
            reply_to: Some("r".into()),
            expiration: Some("1500".into()),
            timestamp: Some(42),
            app_id: Some("app".into()),
            ..Default::default()
        };
        let raw = p.encode();
        assert_eq!(Properties::decode(&raw).unwrap(), p);
        let s = scan(&raw).unwrap();
        assert_eq!(s.delivery_mode, 2);
        assert_eq!(s.priority, 3);
        assert_eq!(s.expiration_ms, Some(1500));
        let (a, b) = s.headers.unwrap();
        assert_eq!(Table::decode(&raw[a..b]).unwrap().0, p.headers.unwrap());
    }

    #[test]
    fn garbage_does_not_panic() {
        for n in 0..64u8 {
            let v: Vec<u8> = (0..n).map(|i| i.wrapping_mul(37) ^ 0xff).collect();
            let _ = scan(&v);
            let _ = Properties::decode(&v);
        }
    }
}
