//! AMQP 0-9-1 framing. Control-plane methods go through amq-protocol's
//! generated parser and generator; the per-message path (publish, content
//! header, body, deliver, get-ok, return, ack/nack/reject) is framed by hand
//! on byte slices so that a message costs no allocation beyond its body.
//! The hand framing is checked byte for byte against amq-protocol in tests.

use amq_protocol::frame::{gen_frame, AMQPFrame, WriteContext};
use amq_protocol::protocol::AMQPClass;
use bytes::{BufMut, BytesMut};

/// Frame type octets.
pub const FRAME_METHOD: u8 = 1;
/// Content header frame.
pub const FRAME_HEADER: u8 = 2;
/// Content body frame.
pub const FRAME_BODY: u8 = 3;
/// Heartbeat frame.
pub const FRAME_HEARTBEAT: u8 = 8;
/// Every frame ends with this octet.
pub const FRAME_END: u8 = 0xCE;
/// Frame header (type, channel, size) plus end octet.
pub const FRAME_OVERHEAD: usize = 8;

/// The protocol header a client sends first.
pub const PROTOCOL_HEADER: &[u8; 8] = b"AMQP\x00\x00\x09\x01";

/// A complete frame located in the read buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawFrame {
    /// Frame type octet.
    pub kind: u8,
    /// Channel number.
    pub channel: u16,
    /// Payload length.
    pub size: usize,
}

/// Why a frame could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    /// The declared size exceeds the negotiated frame_max.
    #[error("frame size {size} exceeds frame_max {max}")]
    TooLarge {
        /// Declared payload size.
        size: usize,
        /// Negotiated limit.
        max: usize,
    },
    /// The frame does not end with 0xCE.
    #[error("frame end octet missing")]
    BadEnd,
    /// A frame type octet the spec does not define.
    #[error("unknown frame type {0}")]
    BadType(u8),
}

/// Locate the next frame: `Ok(None)` until the buffer holds all of it.
pub fn peek_frame(buf: &[u8], frame_max: usize) -> Result<Option<RawFrame>, FrameError> {
    if buf.len() < 7 {
        return Ok(None);
    }
    let kind = buf[0];
    if !matches!(
        kind,
        FRAME_METHOD | FRAME_HEADER | FRAME_BODY | FRAME_HEARTBEAT
    ) {
        return Err(FrameError::BadType(kind));
    }
    let channel = u16::from_be_bytes([buf[1], buf[2]]);
    let size = u32::from_be_bytes([buf[3], buf[4], buf[5], buf[6]]) as usize;
    if size + FRAME_OVERHEAD > frame_max {
        return Err(FrameError::TooLarge {
            size,
            max: frame_max,
        });
    }
    if buf.len() < size + FRAME_OVERHEAD {
        return Ok(None);
    }
    if buf[7 + size] != FRAME_END {
        return Err(FrameError::BadEnd);
    }
    Ok(Some(RawFrame {
        kind,
        channel,
        size,
    }))
}

/// A malformed method or content payload.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("malformed {0}")]
pub struct SyntaxError(pub &'static str);

struct Cur<'a> {
    b: &'a [u8],
    p: usize,
    what: &'static str,
}

impl<'a> Cur<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], SyntaxError> {
        let s = self
            .b
            .get(self.p..self.p + n)
            .ok_or(SyntaxError(self.what))?;
        self.p += n;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, SyntaxError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, SyntaxError> {
        let s = self.take(2)?;
        Ok(u16::from_be_bytes([s[0], s[1]]))
    }
    fn u64(&mut self) -> Result<u64, SyntaxError> {
        Ok(u64::from_be_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }
    fn short(&mut self) -> Result<&'a [u8], SyntaxError> {
        let n = self.u8()? as usize;
        self.take(n)
    }
}

/// Class and method ids of a method frame payload.
pub fn method_id(payload: &[u8]) -> Option<(u16, u16)> {
    if payload.len() < 4 {
        return None;
    }
    Some((
        u16::from_be_bytes([payload[0], payload[1]]),
        u16::from_be_bytes([payload[2], payload[3]]),
    ))
}

/// basic.publish arguments, borrowed from the frame.
#[derive(Debug, PartialEq, Eq)]
pub struct Publish<'a> {
    /// Exchange name.
    pub exchange: &'a [u8],
    /// Routing key.
    pub routing_key: &'a [u8],
    /// Return when unroutable.
    pub mandatory: bool,
    /// Unsupported by RabbitMQ 3.x; refused with 540.
    pub immediate: bool,
}

/// Parse a basic.publish payload (class 60, method 40).
pub fn parse_publish(payload: &[u8]) -> Result<Publish<'_>, SyntaxError> {
    let mut c = Cur {
        b: payload,
        p: 4,
        what: "basic.publish",
    };
    c.u16()?; // reserved
    let exchange = c.short()?;
    let routing_key = c.short()?;
    let bits = c.u8()?;
    Ok(Publish {
        exchange,
        routing_key,
        mandatory: bits & 1 != 0,
        immediate: bits & 2 != 0,
    })
}

/// basic.ack / basic.nack / basic.reject from a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settle {
    /// Delivery tag.
    pub tag: u64,
    /// Covers every tag up to `tag`.
    pub multiple: bool,
    /// Requeue instead of discarding (nack and reject).
    pub requeue: bool,
    /// False for ack.
    pub negative: bool,
}

/// Parse ack (60,80), reject (60,90) or nack (60,120).
pub fn parse_settle(payload: &[u8], method: u16) -> Result<Settle, SyntaxError> {
    let mut c = Cur {
        b: payload,
        p: 4,
        what: "basic.ack",
    };
    let tag = c.u64()?;
    let bits = c.u8()?;
    Ok(match method {
        80 => Settle {
            tag,
            multiple: bits & 1 != 0,
            requeue: false,
            negative: false,
        },
        90 => Settle {
            tag,
            multiple: false,
            requeue: bits & 1 != 0,
            negative: true,
        },
        _ => Settle {
            tag,
            multiple: bits & 1 != 0,
            requeue: bits & 2 != 0,
            negative: true,
        },
    })
}

/// Content header: class, body size and the raw property bytes.
pub fn parse_content_header(payload: &[u8]) -> Result<(u16, u64, &[u8]), SyntaxError> {
    let mut c = Cur {
        b: payload,
        p: 0,
        what: "content header",
    };
    let class = c.u16()?;
    c.u16()?; // weight
    let size = c.u64()?;
    Ok((class, size, &payload[c.p..]))
}

/// Deepest nesting of field tables and arrays accepted in method arguments,
/// as in warren-core's own table reader.
pub const MAX_TABLE_DEPTH: usize = 64;

/// amq-protocol's `parse_class` for a control-plane method payload, after
/// [`check_table_depth`]: amq-protocol's field-table parser recurses once
/// per nesting level, and a 25 KB queue.declare (or connection.start-ok,
/// before login) of nested arrays overflows a 2 MiB worker stack, which
/// aborts the whole broker.
pub fn parse_class(payload: &[u8]) -> Result<(&[u8], AMQPClass), SyntaxError> {
    check_table_depth(payload)?;
    amq_protocol::protocol::parse_class(payload).map_err(|_| SyntaxError("method arguments"))
}

/// Refuse a method whose field-table argument nests tables and arrays more
/// than [`MAX_TABLE_DEPTH`] deep, without recursing. Payloads that are
/// malformed before the table, or inside it before that depth, pass: the
/// parser refuses them itself, at a point no deeper than this walk got.
pub fn check_table_depth(payload: &[u8]) -> Result<(), SyntaxError> {
    // What precedes the arguments table, per method (see amq-protocol's
    // generated parsers): 2 = reserved short, s = short string, b = one
    // octet (bits or a version number).
    let before: &[u8] = match method_id(payload) {
        Some((10, 10)) => b"bb",         // connection.start
        Some((10, 11)) => b"",           // connection.start-ok
        Some((40, 10)) => b"2ssb",       // exchange.declare
        Some((40, 30 | 40)) => b"2sssb", // exchange.bind / unbind
        Some((50, 10)) => b"2sb",        // queue.declare
        Some((50, 20)) => b"2sssb",      // queue.bind
        Some((50, 50)) => b"2sss",       // queue.unbind
        Some((60, 20)) => b"2ssb",       // basic.consume
        _ => return Ok(()),
    };
    let mut c = Cur {
        b: payload,
        p: 4,
        what: "method arguments",
    };
    for op in before {
        let skipped = match op {
            b'2' => c.u16().map(|_| ()),
            b's' => c.short().map(|_| ()),
            _ => c.u8().map(|_| ()),
        };
        if skipped.is_err() {
            return Ok(());
        }
    }
    if table_depth(&payload[c.p..]) > MAX_TABLE_DEPTH {
        return Err(SyntaxError("field table nesting"));
    }
    Ok(())
}

/// How deep the field table at the start of `b` (with its length prefix)
/// nests, walking it in the parser's order with an explicit stack; the walk
/// stops at the first malformed element, or once past [`MAX_TABLE_DEPTH`].
/// Type octets as amq-protocol reads them.
fn table_depth(b: &[u8]) -> usize {
    let mut c = Cur {
        b,
        p: 0,
        what: "field table",
    };
    let long = |c: &mut Cur<'_>| -> Option<usize> {
        let s = c.take(4).ok()?;
        Some(u32::from_be_bytes([s[0], s[1], s[2], s[3]]) as usize)
    };
    // (end of the table or array, whether it is a table: keyed entries).
    let mut open: Vec<(usize, bool)> = Vec::new();
    let Some(n) = long(&mut c) else { return 0 };
    open.push((c.p.saturating_add(n), true));
    let mut deepest = 1;
    while let Some(&(end, keyed)) = open.last() {
        if c.p >= end {
            if c.p > end {
                break; // an element overran its container: malformed
            }
            open.pop();
            continue;
        }
        if keyed && c.short().is_err() {
            break;
        }
        let Ok(kind) = c.u8() else { break };
        let fixed = match kind {
            b't' | b'b' | b'B' => 1,
            b's' | b'U' | b'u' => 2,
            b'I' | b'i' | b'f' => 4,
            b'L' | b'l' | b'd' | b'T' => 8,
            b'D' => 5,
            b'V' => 0,
            b'S' | b'x' => match long(&mut c) {
                Some(n) => n,
                None => break,
            },
            b'A' | b'F' => {
                let Some(n) = long(&mut c) else { break };
                open.push((c.p.saturating_add(n), kind == b'F'));
                deepest = deepest.max(open.len());
                if deepest > MAX_TABLE_DEPTH {
                    break;
                }
                continue;
            }
            _ => break,
        };
        if c.take(fixed).is_err() {
            break;
        }
    }
    deepest
}

fn put_short(out: &mut BytesMut, s: &[u8]) {
    let s = &s[..s.len().min(255)];
    out.put_u8(s.len() as u8);
    out.put_slice(s);
}

/// Start a frame; returns the offset of its size field for [`end_frame`].
fn begin_frame(out: &mut BytesMut, kind: u8, channel: u16) -> usize {
    out.put_u8(kind);
    out.put_u16(channel);
    let at = out.len();
    out.put_u32(0);
    at
}

fn end_frame(out: &mut BytesMut, at: usize) {
    let size = (out.len() - at - 4) as u32;
    out[at..at + 4].copy_from_slice(&size.to_be_bytes());
    out.put_u8(FRAME_END);
}

/// Append a content header and body frames split at `frame_max`.
pub fn write_content(
    out: &mut BytesMut,
    channel: u16,
    props: &[u8],
    body: &[u8],
    frame_max: usize,
) {
    let at = begin_frame(out, FRAME_HEADER, channel);
    out.put_u16(60);
    out.put_u16(0);
    out.put_u64(body.len() as u64);
    out.put_slice(props);
    end_frame(out, at);
    let chunk = frame_max.saturating_sub(FRAME_OVERHEAD).max(1);
    out.reserve(body.len() + body.len().div_ceil(chunk) * FRAME_OVERHEAD);
    for part in body.chunks(chunk) {
        out.put_u8(FRAME_BODY);
        out.put_u16(channel);
        out.put_u32(part.len() as u32);
        out.put_slice(part);
        out.put_u8(FRAME_END);
    }
}

/// Append basic.deliver (60,60).
pub fn write_deliver(
    out: &mut BytesMut,
    channel: u16,
    consumer_tag: &[u8],
    delivery_tag: u64,
    redelivered: bool,
    exchange: &[u8],
    routing_key: &[u8],
) {
    let at = begin_frame(out, FRAME_METHOD, channel);
    out.put_u16(60);
    out.put_u16(60);
    put_short(out, consumer_tag);
    out.put_u64(delivery_tag);
    out.put_u8(u8::from(redelivered));
    put_short(out, exchange);
    put_short(out, routing_key);
    end_frame(out, at);
}

/// Append basic.get-ok (60,71).
pub fn write_get_ok(
    out: &mut BytesMut,
    channel: u16,
    delivery_tag: u64,
    redelivered: bool,
    exchange: &[u8],
    routing_key: &[u8],
    message_count: u32,
) {
    let at = begin_frame(out, FRAME_METHOD, channel);
    out.put_u16(60);
    out.put_u16(71);
    out.put_u64(delivery_tag);
    out.put_u8(u8::from(redelivered));
    put_short(out, exchange);
    put_short(out, routing_key);
    out.put_u32(message_count);
    end_frame(out, at);
}

/// Append basic.return (60,50).
pub fn write_return(
    out: &mut BytesMut,
    channel: u16,
    code: u16,
    text: &str,
    exchange: &[u8],
    routing_key: &[u8],
) {
    let at = begin_frame(out, FRAME_METHOD, channel);
    out.put_u16(60);
    out.put_u16(50);
    out.put_u16(code);
    put_short(out, text.as_bytes());
    put_short(out, exchange);
    put_short(out, routing_key);
    end_frame(out, at);
}

/// Append a publisher confirm: basic.ack (60,80) or basic.nack (60,120).
pub fn write_confirm(out: &mut BytesMut, channel: u16, tag: u64, multiple: bool, ack: bool) {
    let at = begin_frame(out, FRAME_METHOD, channel);
    out.put_u16(60);
    out.put_u16(if ack { 80 } else { 120 });
    out.put_u64(tag);
    out.put_u8(u8::from(multiple));
    end_frame(out, at);
}

/// Append a heartbeat frame.
pub fn write_heartbeat(out: &mut BytesMut) {
    out.put_slice(&[FRAME_HEARTBEAT, 0, 0, 0, 0, 0, 0, FRAME_END]);
}

/// Append any control-plane method, generated by amq-protocol.
pub fn write_method(out: &mut BytesMut, channel: u16, method: AMQPClass) {
    let frame = AMQPFrame::Method(channel, method);
    let result = gen_frame(&frame)(WriteContext::from(Vec::with_capacity(128)));
    match result {
        Ok(ctx) => out.put_slice(&ctx.write),
        Err(e) => tracing::error!(error = %e, "failed to encode {frame}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use amq_protocol::frame::parse_frame;
    use amq_protocol::protocol::{basic, BasicProperties};
    use amq_protocol::types::{AMQPValue, FieldTable, LongString};

    fn reference(frame: AMQPFrame) -> Vec<u8> {
        gen_frame(&frame)(WriteContext::from(Vec::new()))
            .unwrap()
            .write
    }

    #[test]
    fn deliver_matches_amq_protocol() {
        let mut out = BytesMut::new();
        write_deliver(&mut out, 7, b"ctag", 12345678901, true, b"ex", b"a.b.c");
        let want = reference(AMQPFrame::Method(
            7,
            AMQPClass::Basic(basic::AMQPMethod::Deliver(basic::Deliver {
                consumer_tag: "ctag".into(),
                delivery_tag: 12345678901,
                redelivered: true,
                exchange: "ex".into(),
                routing_key: "a.b.c".into(),
            })),
        ));
        assert_eq!(&out[..], &want[..]);
    }

    #[test]
    fn get_ok_return_and_confirms_match_amq_protocol() {
        let mut out = BytesMut::new();
        write_get_ok(&mut out, 1, 9, false, b"", b"q", 3);
        let want = reference(AMQPFrame::Method(
            1,
            AMQPClass::Basic(basic::AMQPMethod::GetOk(basic::GetOk {
                delivery_tag: 9,
                redelivered: false,
                exchange: "".into(),
                routing_key: "q".into(),
                message_count: 3,
            })),
        ));
        assert_eq!(&out[..], &want[..]);

        let mut out = BytesMut::new();
        write_return(&mut out, 2, 312, "NO_ROUTE", b"x", b"k");
        let want = reference(AMQPFrame::Method(
            2,
            AMQPClass::Basic(basic::AMQPMethod::Return(basic::Return {
                reply_code: 312,
                reply_text: "NO_ROUTE".into(),
                exchange: "x".into(),
                routing_key: "k".into(),
            })),
        ));
        assert_eq!(&out[..], &want[..]);

        for (ack, multiple) in [(true, true), (false, false)] {
            let mut out = BytesMut::new();
            write_confirm(&mut out, 3, 77, multiple, ack);
            let method = if ack {
                basic::AMQPMethod::Ack(basic::Ack {
                    delivery_tag: 77,
                    multiple,
                })
            } else {
                basic::AMQPMethod::Nack(basic::Nack {
                    delivery_tag: 77,
                    multiple,
                    requeue: false,
                })
            };
            assert_eq!(
                &out[..],
                &reference(AMQPFrame::Method(3, AMQPClass::Basic(method)))[..]
            );
        }
    }

    #[test]
    fn content_matches_amq_protocol() {
        let mut headers = FieldTable::default();
        headers.insert("k".into(), AMQPValue::LongString(LongString::from("v")));
        let props = BasicProperties::default()
            .with_content_type("text/plain".into())
            .with_delivery_mode(2)
            .with_headers(headers)
            .with_correlation_id("c1".into())
            .with_reply_to("rq".into());
        let header = reference(AMQPFrame::Header(
            5,
            amq_protocol::frame::AMQPContentHeader {
                class_id: 60,
                body_size: 10,
                properties: props.clone(),
            },
        ));
        // Property bytes start after type(1) channel(2) size(4) class(2) weight(2) size(8).
        let raw_props = &header[19..header.len() - 1];
        let body = b"0123456789";
        let mut out = BytesMut::new();
        write_content(&mut out, 5, raw_props, body, 4 + FRAME_OVERHEAD);
        let mut want = header.clone();
        for part in body.chunks(4) {
            want.extend(reference(AMQPFrame::Body(5, part.to_vec())));
        }
        assert_eq!(&out[..], &want[..]);
        // And our parser reads what amq-protocol wrote.
        let f = peek_frame(&header, 1 << 20).unwrap().unwrap();
        let (class, size, p) = parse_content_header(&header[7..7 + f.size]).unwrap();
        assert_eq!((class, size, p), (60, 10, raw_props));
        let ours = warren_core::props::Properties::decode(p).unwrap();
        assert_eq!(ours.correlation_id.as_deref(), Some("c1"));
        assert_eq!(ours.headers.unwrap().get("k").unwrap().as_str(), Some("v"));
    }

    #[test]
    fn publish_and_ack_parse_what_amq_protocol_writes() {
        let frame = reference(AMQPFrame::Method(
            1,
            AMQPClass::Basic(basic::AMQPMethod::Publish(basic::Publish {
                exchange: "amq.topic".into(),
                routing_key: "a.b".into(),
                mandatory: true,
                immediate: false,
            })),
        ));
        let f = peek_frame(&frame, 1 << 20).unwrap().unwrap();
        assert_eq!(f.kind, FRAME_METHOD);
        let p = parse_publish(&frame[7..7 + f.size]).unwrap();
        assert_eq!(
            p,
            Publish {
                exchange: b"amq.topic",
                routing_key: b"a.b",
                mandatory: true,
                immediate: false
            }
        );
        let frame = reference(AMQPFrame::Method(
            1,
            AMQPClass::Basic(basic::AMQPMethod::Nack(basic::Nack {
                delivery_tag: 5,
                multiple: true,
                requeue: true,
            })),
        ));
        let s = parse_settle(&frame[7..frame.len() - 1], 120).unwrap();
        assert_eq!(
            s,
            Settle {
                tag: 5,
                multiple: true,
                requeue: true,
                negative: true
            }
        );
        assert!(parse_frame(&frame[..]).is_ok());
    }

    /// Arguments whose "k" entry is an array nested `levels` deep, so the
    /// table as a whole nests `levels + 1` deep.
    fn nested_args(levels: usize) -> FieldTable {
        let mut v = AMQPValue::Void;
        for _ in 0..levels {
            v = AMQPValue::FieldArray(vec![v].into());
        }
        let mut t = FieldTable::default();
        t.insert(
            "x-match".into(),
            AMQPValue::LongString(LongString::from("all")),
        );
        t.insert("k".into(), v);
        t
    }

    fn method_payload(m: AMQPClass) -> Vec<u8> {
        let f = reference(AMQPFrame::Method(1, m));
        f[7..f.len() - 1].to_vec()
    }

    #[test]
    fn table_depth_limit_applies_to_every_method_with_a_table() {
        use amq_protocol::protocol::{connection, exchange, queue};
        let methods = |args: FieldTable| {
            vec![
                AMQPClass::Connection(connection::AMQPMethod::Start(connection::Start {
                    version_major: 0,
                    version_minor: 9,
                    server_properties: args.clone(),
                    mechanisms: "PLAIN".into(),
                    locales: "en_US".into(),
                })),
                AMQPClass::Connection(connection::AMQPMethod::StartOk(connection::StartOk {
                    client_properties: args.clone(),
                    mechanism: "PLAIN".into(),
                    response: "\0guest\0guest".into(),
                    locale: "en_US".into(),
                })),
                AMQPClass::Exchange(exchange::AMQPMethod::Declare(exchange::Declare {
                    exchange: "x".into(),
                    kind: "headers".into(),
                    arguments: args.clone(),
                    ..Default::default()
                })),
                AMQPClass::Exchange(exchange::AMQPMethod::Bind(exchange::Bind {
                    destination: "d".into(),
                    source: "s".into(),
                    routing_key: "k".into(),
                    arguments: args.clone(),
                    ..Default::default()
                })),
                AMQPClass::Exchange(exchange::AMQPMethod::Unbind(exchange::Unbind {
                    destination: "d".into(),
                    source: "s".into(),
                    routing_key: "k".into(),
                    arguments: args.clone(),
                    ..Default::default()
                })),
                AMQPClass::Queue(queue::AMQPMethod::Declare(queue::Declare {
                    queue: "q".into(),
                    arguments: args.clone(),
                    ..Default::default()
                })),
                AMQPClass::Queue(queue::AMQPMethod::Bind(queue::Bind {
                    queue: "q".into(),
                    exchange: "x".into(),
                    routing_key: "k".into(),
                    arguments: args.clone(),
                    ..Default::default()
                })),
                AMQPClass::Queue(queue::AMQPMethod::Unbind(queue::Unbind {
                    queue: "q".into(),
                    exchange: "x".into(),
                    routing_key: "k".into(),
                    arguments: args.clone(),
                })),
                AMQPClass::Basic(basic::AMQPMethod::Consume(basic::Consume {
                    queue: "q".into(),
                    consumer_tag: "c".into(),
                    arguments: args,
                    ..Default::default()
                })),
            ]
        };
        for m in methods(nested_args(MAX_TABLE_DEPTH - 1)) {
            let p = method_payload(m.clone());
            assert_eq!(parse_class(&p).map(|(_, got)| got), Ok(m));
        }
        for m in methods(nested_args(MAX_TABLE_DEPTH)) {
            let p = method_payload(m.clone());
            assert_eq!(
                parse_class(&p).map(|_| ()),
                Err(SyntaxError("field table nesting")),
                "{m:?}"
            );
        }
    }

    /// A 25 KB queue.declare whose arguments nest 5000 arrays deep: handed
    /// to amq-protocol's recursive parser it overflowed a 2 MiB tokio
    /// worker stack and aborted the broker (connection.start-ok, parsed
    /// before login, did the same). The walk is iterative: a 64 KiB stack
    /// is plenty.
    #[test]
    fn deeply_nested_arguments_are_refused_without_recursion() {
        let mut inner = vec![b'V'];
        for _ in 0..5000 {
            let mut v = vec![b'A'];
            v.extend_from_slice(&(inner.len() as u32).to_be_bytes());
            v.extend_from_slice(&inner);
            inner = v;
        }
        // queue.declare: ids, reserved, queue "q", bits, then { "": nested }.
        let mut p = vec![0, 50, 0, 10, 0, 0, 1, b'q', 0];
        p.extend_from_slice(&((inner.len() + 1) as u32).to_be_bytes());
        p.push(0);
        p.extend_from_slice(&inner);
        assert!(p.len() < 131_072 - FRAME_OVERHEAD);
        let got = std::thread::Builder::new()
            .stack_size(64 << 10)
            .spawn(move || parse_class(&p).map(|_| ()))
            .unwrap()
            .join()
            .unwrap();
        assert_eq!(got, Err(SyntaxError("field table nesting")));
        // Malformed before the table or inside it: left to the parser.
        assert!(check_table_depth(&[0, 50, 0, 10, 0]).is_ok());
        assert!(check_table_depth(&[0, 50, 0, 10, 0, 0, 1, b'q', 0, 0, 0, 9, 9]).is_ok());
        assert!(parse_class(&[0, 50, 0, 10, 0, 0, 1, b'q', 0, 0, 0, 9, 9]).is_err());
    }

    #[test]
    fn frame_errors() {
        assert_eq!(peek_frame(&[1, 0, 0, 0, 0], 4096), Ok(None));
        assert_eq!(
            peek_frame(&[9, 0, 0, 0, 0, 0, 0, 0xCE], 4096),
            Err(FrameError::BadType(9))
        );
        assert_eq!(
            peek_frame(&[8, 0, 0, 0, 0, 0, 0, 0xCD], 4096),
            Err(FrameError::BadEnd)
        );
        assert!(matches!(
            peek_frame(&[3, 0, 1, 0, 1, 0, 0], 4096),
            Err(FrameError::TooLarge { .. })
        ));
        assert!(parse_publish(&[0, 60, 0, 40, 0]).is_err());
    }
}
