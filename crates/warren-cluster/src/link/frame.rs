//! The message link's frames: a u32 length, a kind byte, then the fields,
//! binary (messages are the hot path; JSON is for the rare Raft requests).
//! Encoders write straight into a link's outbox; the decoder borrows
//! bodies from the read buffer without copying.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::error::ClusterError;

/// The largest message frame either side accepts.
pub const MAX_LINK_FRAME: usize = 256 << 20;

/// A frame kind, as its byte on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// Dialer to home: a message for a queue.
    Publish = 1,
    /// Dialer to home: start deliveries from a queue.
    Subscribe = 2,
    /// Dialer to home: stop deliveries.
    Unsubscribe = 3,
    /// Dialer to home: more credit for a subscription.
    Credit = 4,
    /// Dialer to home: ack, requeue or reject deliveries.
    Settle = 5,
    /// Dialer to home: basic.get.
    Get = 6,
    /// Dialer to home: queue.purge.
    Purge = 7,
    /// Home to dialer: publishes up to a sequence are in (synced if durable).
    Confirm = 20,
    /// Home to dialer: a publish was refused.
    Nack = 21,
    /// Home to dialer: a message for a subscription.
    Deliver = 22,
    /// Home to dialer: the answer to a get.
    Got = 23,
    /// Home to dialer: the answer to a purge.
    Purged = 24,
    /// Home to dialer: a queue's counters.
    Stats = 25,
    /// Home to dialer: a subscription is over; nothing more comes on it.
    Ended = 26,
}

impl Kind {
    fn of(b: u8) -> Option<Kind> {
        use Kind::*;
        Some(match b {
            1 => Publish,
            2 => Subscribe,
            3 => Unsubscribe,
            4 => Credit,
            5 => Settle,
            6 => Get,
            7 => Purge,
            20 => Confirm,
            21 => Nack,
            22 => Deliver,
            23 => Got,
            24 => Purged,
            25 => Stats,
            26 => Ended,
            _ => return None,
        })
    }
}

/// How deliveries are settled, as its byte on the wire.
pub mod how {
    /// Acknowledged.
    pub const ACK: u8 = 0;
    /// Requeued.
    pub const REQUEUE: u8 = 1;
    /// Rejected (dead-lettered).
    pub const REJECT: u8 = 2;
}

/// A message as frames carry it: the parts a core `Message` is rebuilt from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Carried {
    /// The exchange it was published to.
    pub exchange: Bytes,
    /// Length of the routing key at the start of `meta`.
    pub key_len: u8,
    /// Routing key then raw AMQP properties.
    pub meta: Bytes,
    /// The body.
    pub body: Bytes,
}

/// A queue's counters, as its home sends them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Ready messages.
    pub ready: u64,
    /// Out for acknowledgement.
    pub unacked: u64,
    /// Consumers (a subscribing node counts as one).
    pub consumers: u64,
    /// Bytes of ready bodies.
    pub ready_bytes: u64,
    /// Ever enqueued.
    pub published: u64,
    /// Ever delivered.
    pub delivered: u64,
    /// Ever acknowledged.
    pub acked: u64,
}

impl From<warren_core::queue::QueueStats> for Counters {
    fn from(s: warren_core::queue::QueueStats) -> Counters {
        Counters {
            ready: s.ready as u64,
            unacked: s.unacked as u64,
            consumers: s.consumers as u64,
            ready_bytes: s.ready_bytes as u64,
            published: s.published,
            delivered: s.delivered,
            acked: s.acked,
        }
    }
}

impl From<Counters> for warren_core::queue::QueueStats {
    fn from(c: Counters) -> Self {
        warren_core::queue::QueueStats {
            ready: c.ready as usize,
            unacked: c.unacked as usize,
            consumers: c.consumers as usize,
            ready_bytes: c.ready_bytes as usize,
            published: c.published,
            delivered: c.delivered,
            acked: c.acked,
            ..Default::default()
        }
    }
}

/// One decoded frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// See [`Kind::Publish`].
    Publish {
        /// The dialer's sequence, confirmed back.
        seq: u64,
        /// Vhost.
        vhost: Bytes,
        /// Queue.
        queue: Bytes,
        /// The message.
        msg: Carried,
    },
    /// See [`Kind::Subscribe`].
    Subscribe {
        /// The dialer's id for it.
        sub: u32,
        /// Credit to begin with.
        credit: u32,
        /// Vhost.
        vhost: Bytes,
        /// Queue.
        queue: Bytes,
    },
    /// See [`Kind::Unsubscribe`].
    Unsubscribe {
        /// The subscription.
        sub: u32,
    },
    /// See [`Kind::Credit`].
    Credit {
        /// The subscription.
        sub: u32,
        /// More messages it may send.
        n: u32,
    },
    /// See [`Kind::Settle`].
    Settle {
        /// One of [`how`].
        how: u8,
        /// Vhost.
        vhost: Bytes,
        /// Queue.
        queue: Bytes,
        /// The deliveries' sequences in the home queue.
        seqs: Vec<u64>,
    },
    /// See [`Kind::Get`].
    Get {
        /// Request id.
        req: u32,
        /// Settled on handover.
        no_ack: bool,
        /// Vhost.
        vhost: Bytes,
        /// Queue.
        queue: Bytes,
    },
    /// See [`Kind::Purge`].
    Purge {
        /// Request id.
        req: u32,
        /// Vhost.
        vhost: Bytes,
        /// Queue.
        queue: Bytes,
    },
    /// See [`Kind::Confirm`].
    Confirm {
        /// Every publish up to this sequence.
        upto: u64,
    },
    /// See [`Kind::Nack`].
    Nack {
        /// The publish refused.
        seq: u64,
    },
    /// See [`Kind::Deliver`].
    Deliver {
        /// The subscription.
        sub: u32,
        /// Sequence in the home queue.
        seq: u64,
        /// Delivered before.
        redelivered: bool,
        /// The message.
        msg: Carried,
    },
    /// See [`Kind::Got`].
    Got {
        /// Request id.
        req: u32,
        /// The message (none: the queue was empty or is gone).
        got: Option<(u64, bool, u32, Carried)>,
    },
    /// See [`Kind::Purged`].
    Purged {
        /// Request id.
        req: u32,
        /// Messages dropped (none: no such queue).
        count: Option<u32>,
    },
    /// See [`Kind::Stats`].
    Stats {
        /// Vhost.
        vhost: Bytes,
        /// Queue.
        queue: Bytes,
        /// Its counters.
        counters: Counters,
    },
    /// See [`Kind::Ended`].
    Ended {
        /// The subscription.
        sub: u32,
    },
}

/// Start a frame of `kind` in `out`; returns where its length goes.
fn begin(out: &mut BytesMut, kind: Kind) -> usize {
    let at = out.len();
    out.put_u32(0);
    out.put_u8(kind as u8);
    at
}

/// Fill in the length of the frame begun at `at`.
fn end(out: &mut BytesMut, at: usize) {
    let len = (out.len() - at - 4) as u32;
    out[at..at + 4].copy_from_slice(&len.to_be_bytes());
}

fn put_short(out: &mut BytesMut, s: &[u8]) {
    let n = s.len().min(u16::MAX as usize);
    out.put_u16(n as u16);
    out.put_slice(&s[..n]);
}

fn put_long(out: &mut BytesMut, s: &[u8]) {
    out.put_u32(s.len() as u32);
    out.put_slice(s);
}

fn put_message(out: &mut BytesMut, m: &warren_core::message::Message) {
    let (meta, key_len) = m.meta();
    put_short(out, m.exchange.as_bytes());
    out.put_u8(key_len);
    put_long(out, meta);
    put_long(out, &m.body);
}

/// Encode a publish.
pub fn publish(
    out: &mut BytesMut,
    seq: u64,
    vhost: &str,
    queue: &str,
    m: &warren_core::message::Message,
) {
    let at = begin(out, Kind::Publish);
    out.put_u64(seq);
    put_short(out, vhost.as_bytes());
    put_short(out, queue.as_bytes());
    put_message(out, m);
    end(out, at);
}

/// Encode a subscribe.
pub fn subscribe(out: &mut BytesMut, sub: u32, credit: u32, vhost: &str, queue: &str) {
    let at = begin(out, Kind::Subscribe);
    out.put_u32(sub);
    out.put_u32(credit);
    put_short(out, vhost.as_bytes());
    put_short(out, queue.as_bytes());
    end(out, at);
}

/// Encode a frame that carries one subscription id (unsubscribe, ended).
pub fn sub_only(out: &mut BytesMut, kind: Kind, sub: u32) {
    let at = begin(out, kind);
    out.put_u32(sub);
    end(out, at);
}

/// Encode a credit grant.
pub fn credit(out: &mut BytesMut, sub: u32, n: u32) {
    let at = begin(out, Kind::Credit);
    out.put_u32(sub);
    out.put_u32(n);
    end(out, at);
}

/// Encode a settlement.
pub fn settle(out: &mut BytesMut, how: u8, vhost: &str, queue: &str, seqs: &[u64]) {
    let at = begin(out, Kind::Settle);
    out.put_u8(how);
    put_short(out, vhost.as_bytes());
    put_short(out, queue.as_bytes());
    out.put_u32(seqs.len() as u32);
    for s in seqs {
        out.put_u64(*s);
    }
    end(out, at);
}

/// Encode a get or a purge request.
pub fn request(out: &mut BytesMut, kind: Kind, req: u32, no_ack: bool, vhost: &str, queue: &str) {
    let at = begin(out, kind);
    out.put_u32(req);
    if kind == Kind::Get {
        out.put_u8(no_ack as u8);
    }
    put_short(out, vhost.as_bytes());
    put_short(out, queue.as_bytes());
    end(out, at);
}

/// Encode a confirm or a nack.
pub fn confirm(out: &mut BytesMut, kind: Kind, seq: u64) {
    let at = begin(out, kind);
    out.put_u64(seq);
    end(out, at);
}

/// Encode a delivery.
pub fn deliver(
    out: &mut BytesMut,
    sub: u32,
    seq: u64,
    redelivered: bool,
    m: &warren_core::message::Message,
) {
    let at = begin(out, Kind::Deliver);
    out.put_u32(sub);
    out.put_u64(seq);
    out.put_u8(redelivered as u8);
    put_message(out, m);
    end(out, at);
}

/// Encode the answer to a get.
pub fn got(
    out: &mut BytesMut,
    req: u32,
    got: Option<(u64, bool, u32, &warren_core::message::Message)>,
) {
    let at = begin(out, Kind::Got);
    out.put_u32(req);
    match got {
        None => out.put_u8(0),
        Some((seq, redelivered, remaining, m)) => {
            out.put_u8(1);
            out.put_u64(seq);
            out.put_u8(redelivered as u8);
            out.put_u32(remaining);
            put_message(out, m);
        }
    }
    end(out, at);
}

/// Encode the answer to a purge.
pub fn purged(out: &mut BytesMut, req: u32, count: Option<u32>) {
    let at = begin(out, Kind::Purged);
    out.put_u32(req);
    match count {
        None => out.put_u8(0),
        Some(n) => {
            out.put_u8(1);
            out.put_u32(n);
        }
    }
    end(out, at);
}

/// Encode a queue's counters.
pub fn stats(out: &mut BytesMut, vhost: &str, queue: &str, c: &Counters) {
    let at = begin(out, Kind::Stats);
    put_short(out, vhost.as_bytes());
    put_short(out, queue.as_bytes());
    for v in [
        c.ready,
        c.unacked,
        c.consumers,
        c.ready_bytes,
        c.published,
        c.delivered,
        c.acked,
    ] {
        out.put_u64(v);
    }
    end(out, at);
}

/// Split the next whole frame off `buf`: its kind byte and fields, sharing
/// the buffer. `None`: more bytes are needed.
pub fn split(buf: &mut BytesMut) -> Result<Option<Bytes>, ClusterError> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let len = u32::from_be_bytes(buf[..4].try_into().expect("4 bytes")) as usize;
    if len > MAX_LINK_FRAME {
        return Err(ClusterError::FrameTooLarge(len));
    }
    if buf.len() < 4 + len {
        buf.reserve(4 + len - buf.len());
        return Ok(None);
    }
    buf.advance(4);
    Ok(Some(buf.split_to(len).freeze()))
}

/// A reader over one frame's fields; every read checks what is left.
struct Fields(Bytes);

impl Fields {
    fn need(&self, n: usize) -> Result<(), ClusterError> {
        if self.0.remaining() < n {
            return Err(ClusterError::Link("truncated frame"));
        }
        Ok(())
    }
    fn u8(&mut self) -> Result<u8, ClusterError> {
        self.need(1)?;
        Ok(self.0.get_u8())
    }
    fn u32(&mut self) -> Result<u32, ClusterError> {
        self.need(4)?;
        Ok(self.0.get_u32())
    }
    fn u64(&mut self) -> Result<u64, ClusterError> {
        self.need(8)?;
        Ok(self.0.get_u64())
    }
    fn take(&mut self, n: usize) -> Result<Bytes, ClusterError> {
        self.need(n)?;
        Ok(self.0.split_to(n))
    }
    fn short(&mut self) -> Result<Bytes, ClusterError> {
        self.need(2)?;
        let n = self.0.get_u16() as usize;
        self.take(n)
    }
    fn long(&mut self) -> Result<Bytes, ClusterError> {
        let n = self.u32()? as usize;
        self.take(n)
    }
    fn message(&mut self) -> Result<Carried, ClusterError> {
        Ok(Carried {
            exchange: self.short()?,
            key_len: self.u8()?,
            meta: self.long()?,
            body: self.long()?,
        })
    }
    fn done(&self) -> Result<(), ClusterError> {
        if self.0.has_remaining() {
            return Err(ClusterError::Link("trailing bytes in frame"));
        }
        Ok(())
    }
}

/// Decode one frame (as split off by [`split`]).
pub fn decode(frame: Bytes) -> Result<Frame, ClusterError> {
    let mut f = Fields(frame);
    let kind = Kind::of(f.u8()?).ok_or(ClusterError::Link("unknown frame kind"))?;
    let frame = match kind {
        Kind::Publish => Frame::Publish {
            seq: f.u64()?,
            vhost: f.short()?,
            queue: f.short()?,
            msg: f.message()?,
        },
        Kind::Subscribe => Frame::Subscribe {
            sub: f.u32()?,
            credit: f.u32()?,
            vhost: f.short()?,
            queue: f.short()?,
        },
        Kind::Unsubscribe => Frame::Unsubscribe { sub: f.u32()? },
        Kind::Ended => Frame::Ended { sub: f.u32()? },
        Kind::Credit => Frame::Credit {
            sub: f.u32()?,
            n: f.u32()?,
        },
        Kind::Settle => {
            let how = f.u8()?;
            let vhost = f.short()?;
            let queue = f.short()?;
            let n = f.u32()? as usize;
            f.need(n.saturating_mul(8))?;
            let seqs = (0..n).map(|_| f.0.get_u64()).collect();
            Frame::Settle {
                how,
                vhost,
                queue,
                seqs,
            }
        }
        Kind::Get => Frame::Get {
            req: f.u32()?,
            no_ack: f.u8()? != 0,
            vhost: f.short()?,
            queue: f.short()?,
        },
        Kind::Purge => Frame::Purge {
            req: f.u32()?,
            vhost: f.short()?,
            queue: f.short()?,
        },
        Kind::Confirm => Frame::Confirm { upto: f.u64()? },
        Kind::Nack => Frame::Nack { seq: f.u64()? },
        Kind::Deliver => Frame::Deliver {
            sub: f.u32()?,
            seq: f.u64()?,
            redelivered: f.u8()? != 0,
            msg: f.message()?,
        },
        Kind::Got => {
            let req = f.u32()?;
            let got = match f.u8()? {
                0 => None,
                _ => Some((f.u64()?, f.u8()? != 0, f.u32()?, f.message()?)),
            };
            Frame::Got { req, got }
        }
        Kind::Purged => {
            let req = f.u32()?;
            let count = match f.u8()? {
                0 => None,
                _ => Some(f.u32()?),
            };
            Frame::Purged { req, count }
        }
        Kind::Stats => {
            let vhost = f.short()?;
            let queue = f.short()?;
            let mut c = [0u64; 7];
            for v in &mut c {
                *v = f.u64()?;
            }
            let [ready, unacked, consumers, ready_bytes, published, delivered, acked] = c;
            Frame::Stats {
                vhost,
                queue,
                counters: Counters {
                    ready,
                    unacked,
                    consumers,
                    ready_bytes,
                    published,
                    delivered,
                    acked,
                },
            }
        }
    };
    f.done()?;
    Ok(frame)
}

/// Rebuild a core message from what a frame carried.
pub fn message(c: Carried) -> Result<warren_core::message::Message, ClusterError> {
    let exchange = std::str::from_utf8(&c.exchange)
        .map_err(|_| ClusterError::Link("exchange name is not UTF-8"))?;
    warren_core::message::Message::new(exchange.into(), c.meta, c.key_len, c.body)
        .map_err(|_| ClusterError::Link("message properties do not decode"))
}

/// A name from a frame, as UTF-8.
pub fn name(b: &Bytes) -> Result<&str, ClusterError> {
    std::str::from_utf8(b).map_err(|_| ClusterError::Link("name is not UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(out: &mut BytesMut) -> Frame {
        let f = split(out).unwrap().expect("whole frame");
        assert!(out.is_empty());
        decode(f).unwrap()
    }

    #[test]
    fn frames_decode_as_encoded() {
        let m = warren_core::message::Message::from_parts("amq.topic", "a.b", &[0, 0], "hi".into())
            .unwrap();
        let mut out = BytesMut::new();
        publish(&mut out, 7, "/", "q", &m);
        match roundtrip(&mut out) {
            Frame::Publish {
                seq,
                vhost,
                queue,
                msg,
            } => {
                assert_eq!((seq, &vhost[..], &queue[..]), (7, &b"/"[..], &b"q"[..]));
                let back = message(msg).unwrap();
                assert_eq!(back.routing_key(), "a.b");
                assert_eq!(&back.body[..], b"hi");
                assert_eq!(&*back.exchange, "amq.topic");
            }
            other => panic!("{other:?}"),
        }
        settle(&mut out, how::REQUEUE, "/", "q", &[1, 5]);
        assert_eq!(
            roundtrip(&mut out),
            Frame::Settle {
                how: how::REQUEUE,
                vhost: "/".into(),
                queue: "q".into(),
                seqs: vec![1, 5]
            }
        );
        got(&mut out, 3, Some((9, true, 2, &m)));
        assert!(matches!(
            roundtrip(&mut out),
            Frame::Got {
                req: 3,
                got: Some((9, true, 2, _))
            }
        ));
    }

    #[test]
    fn bad_frames_are_errors_not_panics() {
        for bytes in [
            &[0u8, 0, 0, 1, 99][..],
            &[0, 0, 0, 2, 1, 0],
            &[0, 0, 0, 5, 5, 0, 0, 1, 0],
        ] {
            let mut b = BytesMut::from(bytes);
            let f = split(&mut b).unwrap().unwrap();
            assert!(decode(f).is_err());
        }
        let mut huge = BytesMut::from(&[0xff, 0xff, 0xff, 0xff][..]);
        assert!(split(&mut huge).is_err());
        // A settle claiming more sequences than it holds.
        let mut b = BytesMut::new();
        settle(&mut b, how::ACK, "/", "q", &[1]);
        b[4 + 1 + 2 + 1 + 2 + 1 + 3] = 9;
        let f = split(&mut b).unwrap().unwrap();
        assert!(decode(f).is_err());
    }
}
