//! The per-message methods, framed by hand on byte slices: basic.publish
//! and the client's ack, nack and reject parsed; deliver, get-ok, return
//! and publisher confirms written. Checked byte for byte against
//! amq-protocol in the tests.

use bytes::{BufMut, BytesMut};

use super::frame::{begin_frame, end_frame, FRAME_METHOD};
use super::ids::{self, MethodId};
use super::{put_short, Cur, SyntaxError};

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
        m if m == ids::BASIC_ACK.method => Settle {
            tag,
            multiple: bits & 1 != 0,
            requeue: false,
            negative: false,
        },
        m if m == ids::BASIC_REJECT.method => Settle {
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

fn put_method_id(out: &mut BytesMut, id: MethodId) {
    out.put_u16(id.class);
    out.put_u16(id.method);
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
    put_method_id(out, ids::BASIC_DELIVER);
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
    put_method_id(out, ids::BASIC_GET_OK);
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
    put_method_id(out, ids::BASIC_RETURN);
    out.put_u16(code);
    put_short(out, text.as_bytes());
    put_short(out, exchange);
    put_short(out, routing_key);
    end_frame(out, at);
}

/// Append a publisher confirm: basic.ack (60,80) or basic.nack (60,120).
pub fn write_confirm(out: &mut BytesMut, channel: u16, tag: u64, multiple: bool, ack: bool) {
    let at = begin_frame(out, FRAME_METHOD, channel);
    put_method_id(out, if ack { ids::BASIC_ACK } else { ids::BASIC_NACK });
    out.put_u64(tag);
    out.put_u8(u8::from(multiple));
    end_frame(out, at);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::peek_frame;
    use crate::codec::tests::reference;
    use amq_protocol::frame::{parse_frame, AMQPFrame};
    use amq_protocol::protocol::{basic, AMQPClass};

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
        let s = parse_settle(&frame[7..frame.len() - 1], ids::BASIC_NACK.method).unwrap();
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
}
