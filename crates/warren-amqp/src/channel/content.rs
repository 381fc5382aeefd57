//! Content assembly: a basic.publish method frame, its content header and
//! body frames gathered into one message. Small bodies share one allocation
//! with the routing key and properties; a large body arriving in one frame
//! is taken from the read buffer without a copy.

use amq_protocol::protocol::{AMQPHardError, AMQPSoftError};
use bytes::{BufMut, Bytes, BytesMut};
use warren_core::Message;

use super::{Channel, Ctx};
use crate::codec::{self, ids};
use crate::error::{AmqpError, AmqpResult};

/// Bodies up to this size share one allocation with key and properties.
const INLINE_BODY: usize = 16 * 1024;

/// A publish waiting for its content.
pub(super) struct Pending {
    /// The exchange name then the routing key, in the channel's reused
    /// buffer: until the header says how large the message is.
    names: Vec<u8>,
    exchange_len: usize,
    key_len: usize,
    mandatory: bool,
    /// Header seen: properties length and body size.
    header: Option<(usize, usize)>,
    /// Key, properties and (inline) body: allocated once, at the header.
    meta: BytesMut,
    /// Large bodies, separately.
    body: Option<BytesMut>,
    zero_copy: Option<Bytes>,
    received: usize,
}

/// A publish with all its content: the parts of a [`Message`].
pub(super) struct Assembled {
    /// The exchange name (then the key): the buffer goes back for reuse.
    pub names: Vec<u8>,
    pub exchange_len: usize,
    pub key_len: usize,
    pub mandatory: bool,
    /// Routing key then properties.
    pub head: Bytes,
    pub body: Bytes,
}

impl Pending {
    /// Start assembling `p`; `names` is a spare buffer for its names.
    fn new(p: &codec::Publish<'_>, mut names: Vec<u8>) -> Pending {
        names.clear();
        names.extend_from_slice(p.exchange);
        names.extend_from_slice(p.routing_key);
        Pending {
            names,
            exchange_len: p.exchange.len(),
            key_len: p.routing_key.len(),
            mandatory: p.mandatory,
            header: None,
            meta: BytesMut::new(),
            body: None,
            zero_copy: None,
            received: 0,
        }
    }

    /// Record the header's properties and body size; true when the body
    /// is empty, so the message is complete.
    fn set_header(&mut self, props: &[u8], size: usize) -> bool {
        let inline = size <= INLINE_BODY;
        let key = &self.names[self.exchange_len..];
        self.meta =
            BytesMut::with_capacity(key.len() + props.len() + if inline { size } else { 0 });
        self.meta.put_slice(key);
        self.meta.put_slice(props);
        self.header = Some((props.len(), size));
        size == 0
    }

    /// Refuse a body frame before the header or beyond the body size.
    fn check_body(&self, len: usize) -> AmqpResult<usize> {
        let Some((_, size)) = self.header else {
            return Err(AmqpError::connection(
                AMQPHardError::UNEXPECTEDFRAME,
                "content body frame before content header",
            ));
        };
        if self.received + len > size {
            return Err(AmqpError::connection(
                AMQPHardError::FRAMEERROR,
                "content body exceeds the size in its header",
            ));
        }
        Ok(size)
    }

    /// Append a checked body frame; true when the body is complete.
    fn push_body(&mut self, size: usize, payload: &[u8]) -> bool {
        if size <= INLINE_BODY {
            self.meta.put_slice(payload);
        } else {
            self.body
                .get_or_insert_with(|| BytesMut::with_capacity(size))
                .put_slice(payload);
        }
        self.received += payload.len();
        self.received == size
    }

    /// Take a checked body frame that is the whole large body as it is;
    /// gives it back when it is not.
    fn take_whole(&mut self, size: usize, payload: Bytes) -> Result<(), Bytes> {
        if self.received == 0 && payload.len() == size && size > INLINE_BODY {
            self.received = size;
            self.zero_copy = Some(payload);
            return Ok(());
        }
        Err(payload)
    }

    fn finish(self) -> Assembled {
        let (props_len, _) = self.header.expect("header seen");
        let head_len = self.key_len + props_len;
        let all = self.meta.freeze();
        let body = match (self.zero_copy, self.body) {
            (Some(b), _) => b,
            (None, Some(b)) => b.freeze(),
            (None, None) => all.slice(head_len..),
        };
        Assembled {
            names: self.names,
            exchange_len: self.exchange_len,
            key_len: self.key_len,
            mandatory: self.mandatory,
            head: all.slice(..head_len),
            body,
        }
    }
}

/// A content header or body where none may come.
fn unexpected(what: &str) -> AmqpError {
    AmqpError::connection(
        AMQPHardError::UNEXPECTEDFRAME,
        format!("unexpected content {what} frame"),
    )
}

impl Channel {
    /// basic.publish method frame (hand-parsed).
    pub fn on_publish(&mut self, p: codec::Publish<'_>) -> AmqpResult {
        if p.immediate {
            return Err(
                AmqpError::connection(AMQPHardError::NOTIMPLEMENTED, "immediate=true")
                    .on(ids::BASIC_PUBLISH),
            );
        }
        let spare = std::mem::take(&mut self.spare_names);
        self.pending = Some(Pending::new(&p, spare));
        Ok(())
    }

    /// Content header frame.
    pub fn on_header(&mut self, ctx: &Ctx<'_>, payload: &[u8]) -> AmqpResult {
        let Some(p) = self.pending.as_mut().filter(|p| p.header.is_none()) else {
            return Err(unexpected("header"));
        };
        let (class, size, props) = codec::parse_content_header(payload)
            .map_err(|e| AmqpError::connection(AMQPHardError::SYNTAXERROR, e))?;
        if class != ids::class::BASIC {
            return Err(AmqpError::connection(
                AMQPHardError::UNEXPECTEDFRAME,
                format!("content header for class {class}"),
            ));
        }
        let size = size as usize;
        let max = ctx.cfg.max_message_size;
        if size > max {
            self.pending = None;
            return Err(AmqpError::channel(
                AMQPSoftError::PRECONDITIONFAILED,
                format!("message size {size} is larger than configured max size {max}"),
            )
            .on(ids::BASIC_PUBLISH));
        }
        if p.set_header(props, size) {
            return self.complete(ctx);
        }
        Ok(())
    }

    /// Content body frame, copied.
    pub fn on_body(&mut self, ctx: &Ctx<'_>, payload: &[u8]) -> AmqpResult {
        let p = self.pending.as_mut().ok_or_else(|| unexpected("body"))?;
        let size = p.check_body(payload.len())?;
        if p.push_body(size, payload) {
            return self.complete(ctx);
        }
        Ok(())
    }

    /// Content body frame carrying a whole large body, without copying.
    pub fn on_body_bytes(&mut self, ctx: &Ctx<'_>, payload: Bytes) -> AmqpResult {
        let p = self.pending.as_mut().ok_or_else(|| unexpected("body"))?;
        let size = p.check_body(payload.len())?;
        match p.take_whole(size, payload) {
            Ok(()) => self.complete(ctx),
            Err(payload) => self.on_body(ctx, &payload),
        }
    }

    /// The content is all there: build the message and publish it (or
    /// hold it in the transaction).
    fn complete(&mut self, ctx: &Ctx<'_>) -> AmqpResult {
        let mut a = self.pending.take().expect("pending publish").finish();
        let x = self.lookup_exchange(ctx, &a.names[..a.exchange_len])?;
        self.spare_names = std::mem::take(&mut a.names);
        if x.internal {
            return Err(AmqpError::channel(
                AMQPSoftError::ACCESSREFUSED,
                format!(
                    "cannot publish to internal exchange '{}' in vhost '{}'",
                    x.name, ctx.vhost.name
                ),
            )
            .on(ids::BASIC_PUBLISH));
        }
        if std::str::from_utf8(&a.head[..a.key_len]).is_err() {
            return Err(AmqpError::connection(
                AMQPHardError::SYNTAXERROR,
                "routing key is not UTF-8",
            ));
        }
        let mut msg = Message::new(x.name.clone(), a.head, a.key_len as u8, a.body)
            .map_err(invalid_header)?;
        if msg.reply_to() == Some(super::REPLY_TO.as_bytes()) {
            msg = self.rewrite_reply_to(msg)?;
        }
        if let Some(tx) = self.tx.as_mut() {
            tx.publishes.push((x, msg, a.mandatory));
            return Ok(());
        }
        self.route(ctx, &x, msg, a.mandatory)
    }
}

/// A content header whose properties the core cannot read.
pub(super) fn invalid_header(e: impl std::fmt::Display) -> AmqpError {
    AmqpError::connection(
        AMQPHardError::SYNTAXERROR,
        format!("invalid content header: {e}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn publish() -> Pending {
        // A stale spare buffer: its old bytes must not leak into the names.
        Pending::new(
            &codec::Publish {
                exchange: b"x",
                routing_key: b"key",
                mandatory: true,
                immediate: false,
            },
            b"stale".to_vec(),
        )
    }

    #[test]
    fn small_body_shares_one_buffer_with_key_and_properties() {
        let mut p = publish();
        assert!(p.check_body(1).is_err(), "body before header");
        assert!(!p.set_header(b"PP", 5));
        let size = p.check_body(3).unwrap();
        assert!(!p.push_body(size, b"abc"));
        assert!(p.check_body(3).is_err(), "beyond the header's size");
        assert!(p.push_body(size, b"de"));
        let a = p.finish();
        assert_eq!(
            (&a.names[..a.exchange_len], a.key_len, a.mandatory),
            (&b"x"[..], 3, true)
        );
        assert_eq!((&a.head[..], &a.body[..]), (&b"keyPP"[..], &b"abcde"[..]));
        assert_eq!(
            a.body.as_ptr(),
            a.head[a.head.len()..].as_ptr(),
            "one allocation"
        );
    }

    #[test]
    fn empty_body_completes_at_the_header() {
        let mut p = publish();
        assert!(p.set_header(b"", 0));
        let a = p.finish();
        assert_eq!((&a.head[..], a.body.len()), (&b"key"[..], 0));
    }

    #[test]
    fn large_body_in_frames_or_taken_whole() {
        let size = INLINE_BODY + 10;
        let body: Vec<u8> = (0..size).map(|i| i as u8).collect();
        let mut p = publish();
        p.set_header(b"P", size);
        let (first, rest) = body.split_at(100);
        let whole = p.take_whole(size, Bytes::copy_from_slice(first));
        assert!(whole.is_err(), "a part is not the whole body");
        assert!(!p.push_body(size, first));
        assert!(p.push_body(size, rest));
        assert_eq!(&p.finish().body[..], &body[..]);

        let mut p = publish();
        p.set_header(b"P", size);
        let frame = Bytes::from(body.clone());
        let ptr = frame.as_ptr();
        assert!(p.take_whole(size, frame).is_ok());
        let a = p.finish();
        assert_eq!(
            (a.body.as_ptr(), &a.head[..]),
            (ptr, &b"keyP"[..]),
            "not copied"
        );
    }
}
