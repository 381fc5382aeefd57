//! How a ready message is written to, and read back from, its queue's page
//! files ([`warren_store::pages`]): the record layout and its decoding.
//!
//! Record: `seq u64 | store_id u64 | expires u64 | redelivered u8 |
//! key_len u8 | exchange_len u8 | meta_len u32 | exchange | meta | body`,
//! little-endian. `expires` is nanoseconds after a process-wide origin
//! plus one (0: never); page files do not outlive the process, so a
//! monotonic clock is enough.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::Delivery;
use crate::message::Message;

/// Bytes before the exchange name.
const HEADER: usize = 8 + 8 + 8 + 1 + 1 + 1 + 4;

/// Bodies this large stay in memory: a record's length is a u32.
pub(super) const MAX_PAGED_BODY: usize = 1 << 30;

/// Why a record could not be read back (a bug or a damaged file: the
/// messages of the spill are then dropped from memory, with an error logged;
/// persistent ones are still in the message log).
#[derive(Debug, thiserror::Error)]
pub(super) enum PageError {
    /// Shorter than its own lengths say.
    #[error("page record truncated")]
    Truncated,
    /// The exchange name is not UTF-8.
    #[error("page record has a bad exchange name")]
    Exchange,
    /// The properties do not decode.
    #[error("page record has bad properties: {0}")]
    Properties(#[from] crate::error::DecodeError),
}

fn origin() -> Instant {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    *ORIGIN.get_or_init(Instant::now)
}

/// Fix the clock origin before any expiry time exists.
pub(super) fn init_clock() {
    origin();
}

fn encode_expiry(at: Option<Instant>) -> u64 {
    at.map_or(0, |at| {
        let ns = at.saturating_duration_since(origin()).as_nanos();
        u64::try_from(ns).unwrap_or(u64::MAX - 1) + 1
    })
}

fn decode_expiry(v: u64) -> Option<Instant> {
    match v {
        0 => None,
        ns => origin().checked_add(Duration::from_nanos(ns - 1)),
    }
}

/// The fixed part of `d`'s record; the exchange, meta and body follow it.
pub(super) fn header(d: &Delivery) -> [u8; HEADER] {
    let m = &d.message;
    let (meta, key_len) = m.meta();
    let mut h = [0u8; HEADER];
    h[0..8].copy_from_slice(&d.seq.to_le_bytes());
    h[8..16].copy_from_slice(&m.store_id.to_le_bytes());
    h[16..24].copy_from_slice(&encode_expiry(d.expires_at).to_le_bytes());
    h[24] = u8::from(d.redelivered);
    h[25] = key_len;
    // Exchange names are short strings (at most 255 bytes).
    h[26] = m.exchange.len() as u8;
    h[27..31].copy_from_slice(&(meta.len() as u32).to_le_bytes());
    h
}

/// The message-log id of a record (0: transient), read without decoding
/// the rest.
pub(super) fn store_id(rec: &[u8]) -> u64 {
    rec.get(8..16)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u64::from_le_bytes)
}

/// Reads records back, reusing the last exchange name so that a chunk of
/// messages from one exchange costs one name, not one per message.
#[derive(Default)]
pub(super) struct Decoder {
    exchange: Option<Arc<str>>,
}

impl Decoder {
    pub(super) fn decode(&mut self, rec: Bytes) -> Result<Delivery, PageError> {
        let h = rec.get(..HEADER).ok_or(PageError::Truncated)?;
        let u64_at = |i: usize| u64::from_le_bytes(h[i..i + 8].try_into().expect("8 bytes"));
        let (seq, store_id, expires) = (u64_at(0), u64_at(8), u64_at(16));
        let redelivered = h[24] != 0;
        let key_len = h[25];
        let ex_len = h[26] as usize;
        let meta_len = u32::from_le_bytes(h[27..31].try_into().expect("4 bytes")) as usize;
        let meta_at = HEADER + ex_len;
        let body_at = meta_at + meta_len;
        if rec.len() < body_at {
            return Err(PageError::Truncated);
        }
        let exchange = self.exchange(&rec[HEADER..meta_at])?;
        let meta = rec.slice(meta_at..body_at);
        let body = rec.slice(body_at..);
        let mut message = Message::new(exchange, meta, key_len, body)?;
        message.store_id = store_id;
        Ok(Delivery {
            message,
            seq,
            redelivered,
            expires_at: decode_expiry(expires),
        })
    }

    fn exchange(&mut self, name: &[u8]) -> Result<Arc<str>, PageError> {
        if let Some(x) = &self.exchange {
            if x.as_bytes() == name {
                return Ok(x.clone());
            }
        }
        let x: Arc<str> = Arc::from(std::str::from_utf8(name).map_err(|_| PageError::Exchange)?);
        self.exchange = Some(x.clone());
        Ok(x)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_delivery_survives_the_round_trip() {
        init_clock();
        let mut m = Message::from_parts("amq.topic", "a.b", &[0x08, 0, 2], Bytes::from("body"))
            .expect("message");
        m.store_id = 42;
        let d = Delivery {
            message: m,
            seq: 7,
            redelivered: true,
            expires_at: Some(Instant::now() + Duration::from_secs(5)),
        };
        let (meta, _) = d.message.meta();
        let rec = [
            &header(&d)[..],
            d.message.exchange.as_bytes(),
            meta,
            &d.message.body,
        ]
        .concat();
        let back = Decoder::default().decode(Bytes::from(rec)).unwrap();
        assert_eq!(back.seq, 7);
        assert!(back.redelivered);
        assert_eq!(back.message.store_id, 42);
        assert_eq!(back.message.routing_key(), "a.b");
        assert_eq!(&*back.message.exchange, "amq.topic");
        assert_eq!(&back.message.body[..], b"body");
        assert_eq!(back.message.priority, 2);
        let drift = back.expires_at.unwrap() - d.expires_at.unwrap();
        assert!(drift < Duration::from_micros(1));
    }

    #[test]
    fn a_short_record_is_an_error_not_a_panic() {
        for n in [0, 10, HEADER, HEADER + 3] {
            let mut rec = vec![0u8; n];
            if n >= HEADER {
                rec[26] = 200;
            }
            assert!(Decoder::default().decode(Bytes::from(rec)).is_err());
        }
    }
}
