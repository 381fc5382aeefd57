//! AMQP 0-9-1 frames as the broker's reader decodes them: `peek_frame` over
//! the read buffer, then per frame what `connection.rs` `on_frame` does with
//! the payload: the hand parsers of the hot path (`parse_publish`,
//! `parse_settle`, `parse_content_header`), amq-protocol's `parse_class` for
//! every other method (behind Warren's nesting guard, `codec::parse_class`,
//! and checked against amq-protocol's parser alone), field tables converted to `warren_core::Table`
//! (`channel::to_table`, and `Table::decode` as the AMQPLAIN login uses it)
//! and content-header properties read as `Message::new` and the bridges read
//! them (`props::scan`, `Properties::decode`, header lookups).
//!
//! Besides "no panic", it checks that the hand parsers agree with
//! amq-protocol wherever amq-protocol accepts a method, and that converted
//! tables and decoded properties re-encode stably.
#![no_main]

use amq_protocol::protocol::{basic, connection, exchange, queue, AMQPClass};
use amq_protocol::types::{AMQPValue, FieldTable};
use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use warren_amqp::channel::to_table;
use warren_amqp::codec::{
    method_id, parse_class, parse_content_header, parse_publish, parse_settle, peek_frame,
    FRAME_HEADER, FRAME_METHOD, FRAME_OVERHEAD, MAX_TABLE_DEPTH,
};
use warren_core::props::{self, Properties};
use warren_core::value::find_in_table;
use warren_core::{Message, Table};

/// The broker's default frame_max (amqp.frame_max).
const FRAME_MAX: usize = 131_072;

fuzz_target!(|data: &[u8]| {
    let mut buf = data;
    while let Ok(Some(f)) = peek_frame(buf, FRAME_MAX) {
        let payload = &buf[7..7 + f.size];
        match f.kind {
            FRAME_METHOD => method(payload),
            FRAME_HEADER => header(payload),
            _ => {}
        }
        buf = &buf[f.size + FRAME_OVERHEAD..];
    }
});

fn method(payload: &[u8]) {
    let Some((class, id)) = method_id(payload) else {
        return;
    };
    let ours_publish = (class, id) == (60, 40);
    let publish = ours_publish.then(|| parse_publish(payload));
    let settle = (class == 60 && matches!(id, 80 | 90 | 120)).then(|| parse_settle(payload, id));
    // The AMQPLAIN response is read as a table without its length prefix;
    // any bytes may arrive there.
    table_bytes(payload.get(4..).unwrap_or_default());
    // amq-protocol's parser alone, and behind Warren's nesting guard.
    let raw = amq_protocol::protocol::parse_class(payload);
    let guarded = parse_class(payload);
    let m = match (raw, guarded) {
        (Ok(_), Ok((_, m))) => m,
        (Ok((_, m)), Err(_)) => {
            let depth = arguments(&m).map_or(0, table_depth);
            assert!(
                depth > MAX_TABLE_DEPTH,
                "the guard refused a table {depth} deep"
            );
            return;
        }
        (Err(_), Ok(_)) => panic!("the guard accepted what amq-protocol refuses"),
        (Err(_), Err(_)) => return,
    };
    if let Some(t) = arguments(&m) {
        field_table(t);
    }
    match &m {
        AMQPClass::Basic(basic::AMQPMethod::Publish(p)) => {
            let ours = publish
                .expect("class 60.40")
                .expect("parse_publish refuses what amq-protocol accepts");
            assert_eq!(ours.exchange, p.exchange.as_str().as_bytes());
            assert_eq!(ours.routing_key, p.routing_key.as_str().as_bytes());
            assert_eq!(ours.mandatory, p.mandatory);
            assert_eq!(ours.immediate, p.immediate);
        }
        AMQPClass::Basic(basic::AMQPMethod::Ack(a)) => {
            let s = settle.expect("60.80").expect("parse_settle refuses an ack");
            assert_eq!(
                (s.tag, s.multiple, s.negative),
                (a.delivery_tag, a.multiple, false)
            );
        }
        AMQPClass::Basic(basic::AMQPMethod::Reject(r)) => {
            let s = settle
                .expect("60.90")
                .expect("parse_settle refuses a reject");
            assert_eq!(
                (s.tag, s.requeue, s.negative),
                (r.delivery_tag, r.requeue, true)
            );
        }
        AMQPClass::Basic(basic::AMQPMethod::Nack(n)) => {
            let s = settle
                .expect("60.120")
                .expect("parse_settle refuses a nack");
            assert_eq!(
                (s.tag, s.multiple, s.requeue, s.negative),
                (n.delivery_tag, n.multiple, n.requeue, true)
            );
        }
        AMQPClass::Connection(connection::AMQPMethod::StartOk(s))
            if s.mechanism.as_str() == "AMQPLAIN" =>
        {
            // As connection.rs frames it for Table::decode.
            let raw = s.response.as_bytes();
            let mut framed = Vec::with_capacity(raw.len() + 4);
            framed.extend_from_slice(&(raw.len() as u32).to_be_bytes());
            framed.extend_from_slice(raw);
            table_bytes(&framed);
        }
        _ => {}
    }
}

/// The field-table argument of a method, if it has one.
fn arguments(m: &AMQPClass) -> Option<&FieldTable> {
    Some(match m {
        AMQPClass::Basic(basic::AMQPMethod::Consume(c)) => &c.arguments,
        AMQPClass::Exchange(exchange::AMQPMethod::Declare(d)) => &d.arguments,
        AMQPClass::Exchange(exchange::AMQPMethod::Bind(b)) => &b.arguments,
        AMQPClass::Exchange(exchange::AMQPMethod::Unbind(b)) => &b.arguments,
        AMQPClass::Queue(queue::AMQPMethod::Declare(d)) => &d.arguments,
        AMQPClass::Queue(queue::AMQPMethod::Bind(b)) => &b.arguments,
        AMQPClass::Queue(queue::AMQPMethod::Unbind(b)) => &b.arguments,
        AMQPClass::Connection(connection::AMQPMethod::Start(s)) => &s.server_properties,
        AMQPClass::Connection(connection::AMQPMethod::StartOk(s)) => &s.client_properties,
        _ => return None,
    })
}

/// Nesting depth of a table (1 for a flat one).
fn table_depth(t: &FieldTable) -> usize {
    fn value(v: &AMQPValue) -> usize {
        match v {
            AMQPValue::FieldTable(t) => table_depth(t),
            AMQPValue::FieldArray(a) => 1 + a.as_slice().iter().map(value).max().unwrap_or(0),
            _ => 0,
        }
    }
    1 + t.inner().values().map(value).max().unwrap_or(0)
}

/// A field table from amq-protocol, converted as declare/bind/consume do.
fn field_table(t: &FieldTable) {
    let table = to_table(t);
    let mut enc = BytesMut::new();
    table.encode(&mut enc);
    let (back, used) = Table::decode(&enc).expect("a converted table re-decodes");
    assert_eq!(used, enc.len());
    let mut again = BytesMut::new();
    back.encode(&mut again);
    assert_eq!(enc, again, "table encoding is not stable");
    for (k, _) in table.iter() {
        assert!(find_in_table(&enc, k).is_some(), "key {k:?} not found");
    }
}

/// Wire bytes read by warren-core's own table reader.
fn table_bytes(b: &[u8]) {
    if let Ok((t, used)) = Table::decode(b) {
        assert!(used <= b.len());
        let mut enc = BytesMut::new();
        t.encode(&mut enc);
        let (back, _) = Table::decode(&enc).expect("an encoded table re-decodes");
        let mut again = BytesMut::new();
        back.encode(&mut again);
        assert_eq!(enc, again, "table encoding is not stable");
    }
    let _ = find_in_table(b, "x-match");
}

fn header(payload: &[u8]) {
    let Ok((_class, _size, raw)) = parse_content_header(payload) else {
        return;
    };
    // The channel builds the message from routing key + raw properties;
    // Message::new scans them (props::scan).
    let scanned = props::scan(raw);
    if let Ok(m) = Message::from_parts("amq.topic", "a.b", raw, Bytes::new()) {
        assert!(scanned.is_ok());
        let _ = m.headers();
        let _ = m.header("x-match");
        let _ = m.reply_to();
    }
    if let Ok(p) = Properties::decode(raw) {
        let enc = p.encode();
        let back = Properties::decode(&enc).expect("encoded properties re-decode");
        assert_eq!(enc, back.encode(), "properties encoding is not stable");
    }
}
