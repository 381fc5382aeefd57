//! Messages as the core stores them. Cloning is two reference-count bumps, so
//! fanning one publish out to many queues never copies the body.

use std::sync::Arc;

use bytes::Bytes;

use crate::error::DecodeError;
use crate::props::{self, Scalars};
use crate::value::Table;

/// The longest routing key a message carries: AMQP 0-9-1 sends it as a short
/// string, so every adapter refuses a longer key or topic instead of cutting it.
pub const MAX_KEY: usize = 255;

/// One published message, shared by every queue it was routed to.
#[derive(Clone, Debug)]
pub struct Message {
    /// The exchange it was published to (shared with the exchange's name).
    pub exchange: Arc<str>,
    /// Routing key, followed by the raw AMQP properties, in one buffer.
    meta: Bytes,
    key_len: u8,
    /// The body. Small bodies share the allocation of `meta`.
    pub body: Bytes,
    /// True when delivery_mode is 2.
    pub persistent: bool,
    /// Priority property (0 when absent).
    pub priority: u8,
    /// Per-message TTL from the `expiration` property.
    pub expiration_ms: Option<u64>,
    headers: Option<(u32, u32)>,
    reply_to: Option<(u32, u32)>,
    /// Id in the message store; 0 when not stored (transient, or routed to
    /// no durable queue).
    pub store_id: u64,
}

impl Message {
    /// Build a message from its parts. `meta` holds the routing key followed
    /// by the AMQP-encoded properties; the properties are validated here.
    pub fn new(
        exchange: Arc<str>,
        meta: Bytes,
        key_len: u8,
        body: Bytes,
    ) -> Result<Message, DecodeError> {
        if meta.len() < key_len as usize {
            return Err(DecodeError::Truncated);
        }
        let Scalars {
            delivery_mode,
            priority,
            expiration_ms,
            headers,
            reply_to,
        } = props::scan(&meta[key_len as usize..])?;
        Ok(Message {
            exchange,
            meta,
            key_len,
            body,
            persistent: delivery_mode == 2,
            priority,
            expiration_ms,
            headers: headers.map(|(a, b)| (a as u32, b as u32)),
            reply_to: reply_to.map(|(a, b)| (a as u32, b as u32)),
            store_id: 0,
        })
    }

    /// Convenience constructor (refuses a key over [`MAX_KEY`] bytes) for tests and bridges that hold owned parts.
    pub fn from_parts(
        exchange: &str,
        routing_key: &str,
        properties: &[u8],
        body: Bytes,
    ) -> Result<Message, DecodeError> {
        let key = routing_key.as_bytes();
        if key.len() > MAX_KEY {
            return Err(DecodeError::RoutingKeyTooLong(key.len()));
        }
        let mut meta = Vec::with_capacity(key.len() + properties.len());
        meta.extend_from_slice(key);
        meta.extend_from_slice(properties);
        Message::new(
            Arc::from(exchange),
            Bytes::from(meta),
            key.len() as u8,
            body,
        )
    }

    /// The routing key it was published with.
    pub fn routing_key(&self) -> &str {
        // The adapters only build messages from validated UTF-8 keys.
        std::str::from_utf8(&self.meta[..self.key_len as usize]).unwrap_or("")
    }

    /// Raw routing key bytes.
    pub fn routing_key_bytes(&self) -> &[u8] {
        &self.meta[..self.key_len as usize]
    }

    /// The AMQP-encoded properties, ready to resend.
    pub fn raw_properties(&self) -> &[u8] {
        &self.meta[self.key_len as usize..]
    }

    /// Decode the headers table; only headers-type routing and bridges call
    /// this, so ordinary publishes never pay for it.
    pub fn headers(&self) -> Option<Table> {
        let (a, b) = self.headers?;
        let raw = self.raw_properties();
        Table::decode(&raw[a as usize..b as usize])
            .ok()
            .map(|(t, _)| t)
    }

    /// One header, without decoding the table (the per-delivery lookups
    /// of the MQTT adapter use this).
    pub fn header(&self, key: &str) -> Option<crate::Value> {
        let (a, b) = self.headers?;
        crate::value::find_in_table(&self.raw_properties()[a as usize..b as usize], key)
    }

    /// The reply_to property, without decoding the rest.
    pub fn reply_to(&self) -> Option<&[u8]> {
        let (a, b) = self.reply_to?;
        Some(&self.raw_properties()[a as usize..b as usize])
    }

    /// Replace the properties (direct reply-to rewriting), keeping the rest.
    pub fn with_properties(&self, properties: &[u8]) -> Result<Message, DecodeError> {
        let mut meta = Vec::with_capacity(self.key_len as usize + properties.len());
        meta.extend_from_slice(self.routing_key_bytes());
        meta.extend_from_slice(properties);
        Message::new(
            self.exchange.clone(),
            Bytes::from(meta),
            self.key_len,
            self.body.clone(),
        )
    }

    /// Key and properties as one buffer, with the key length, for storage.
    pub fn meta(&self) -> (&bytes::Bytes, u8) {
        (&self.meta, self.key_len)
    }

    /// Size counted against queue length limits.
    pub fn body_len(&self) -> usize {
        self.body.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_over_255_bytes_is_refused_not_cut() {
        let long = "k".repeat(MAX_KEY + 1);
        let err = Message::from_parts("x", &long, &[], Bytes::new()).unwrap_err();
        assert_eq!(err, DecodeError::RoutingKeyTooLong(MAX_KEY + 1));
        let edge = "k".repeat(MAX_KEY);
        let m = Message::from_parts("x", &edge, &[0, 0], Bytes::new()).unwrap();
        assert_eq!(m.routing_key(), edge);
    }
}
