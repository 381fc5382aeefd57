//! Seeds for `amqp_frame`: handshakes and channel traffic written with
//! amq-protocol and Warren's own AMQP writers.

use std::fs;
use std::path::Path;

use amq_protocol::frame::{gen_frame, AMQPFrame, WriteContext};
use amq_protocol::protocol::{basic, channel, confirm, connection, exchange, queue, tx, AMQPClass};
use amq_protocol::types::{AMQPValue, DecimalValue, FieldArray, FieldTable, LongString};
use bytes::BytesMut;
use warren_amqp::codec;
use warren_core::props::Properties;
use warren_core::{Table, Value};

use crate::write;

fn method(out: &mut BytesMut, ch: u16, m: AMQPClass) {
    codec::write_method(out, ch, m);
}

fn amqp_args() -> FieldTable {
    let mut nested = FieldTable::default();
    nested.insert("n".into(), AMQPValue::LongLongInt(-5));
    let mut t = FieldTable::default();
    t.insert("x-message-ttl".into(), AMQPValue::LongInt(60_000));
    t.insert("x-max-length".into(), AMQPValue::ShortShortUInt(10));
    t.insert(
        "x-queue-mode".into(),
        AMQPValue::LongString(LongString::from("lazy")),
    );
    t.insert(
        "x-dead-letter-exchange".into(),
        AMQPValue::LongString(LongString::from("dlx")),
    );
    t.insert("nested".into(), AMQPValue::FieldTable(nested));
    t.insert(
        "list".into(),
        AMQPValue::FieldArray(FieldArray::from(vec![
            AMQPValue::Boolean(true),
            AMQPValue::Double(1.5),
            AMQPValue::DecimalValue(DecimalValue {
                scale: 2,
                value: 314,
            }),
            AMQPValue::Timestamp(1_700_000_000),
            AMQPValue::Void,
        ])),
    );
    t
}

fn client_properties() -> FieldTable {
    let mut caps = FieldTable::default();
    for c in ["publisher_confirms", "basic.nack", "consumer_cancel_notify"] {
        caps.insert(c.into(), AMQPValue::Boolean(true));
    }
    let mut t = FieldTable::default();
    t.insert(
        "product".into(),
        AMQPValue::LongString(LongString::from("pika")),
    );
    t.insert("capabilities".into(), AMQPValue::FieldTable(caps));
    t
}

fn handshake(out: &mut BytesMut, mechanism: &str, response: Vec<u8>) {
    method(
        out,
        0,
        AMQPClass::Connection(connection::AMQPMethod::StartOk(connection::StartOk {
            client_properties: client_properties(),
            mechanism: mechanism.into(),
            response: LongString::from(response),
            locale: "en_US".into(),
        })),
    );
    method(
        out,
        0,
        AMQPClass::Connection(connection::AMQPMethod::TuneOk(connection::TuneOk {
            channel_max: 2047,
            frame_max: 131_072,
            heartbeat: 60,
        })),
    );
    method(
        out,
        0,
        AMQPClass::Connection(connection::AMQPMethod::Open(connection::Open {
            virtual_host: "/".into(),
        })),
    );
    method(
        out,
        1,
        AMQPClass::Channel(channel::AMQPMethod::Open(channel::Open {})),
    );
}

pub(crate) fn props() -> Vec<u8> {
    let mut h = Table::default();
    h.insert("x-match", Value::str("all"));
    h.insert("n", Value::I32(7));
    h.insert(
        "f",
        Value::Table(Table(vec![("b".into(), Value::Bool(true))])),
    );
    h.insert("a", Value::Array(vec![Value::U8(1), Value::str("two")]));
    Properties {
        content_type: Some("text/plain".into()),
        content_encoding: Some("utf-8".into()),
        headers: Some(h),
        delivery_mode: Some(2),
        priority: Some(3),
        correlation_id: Some("c1".into()),
        reply_to: Some("amq.rabbitmq.reply-to".into()),
        expiration: Some("60000".into()),
        message_id: Some("m1".into()),
        timestamp: Some(1_700_000_000),
        kind: Some("t".into()),
        user_id: Some("guest".into()),
        app_id: Some("app".into()),
        cluster_id: None,
    }
    .encode()
    .to_vec()
}

pub(crate) fn amqp(dir: &Path) {
    let seeds: [(&str, fn() -> BytesMut); 5] = [
        ("handshake_declare_consume", handshake_declare_consume),
        ("amqplain_login", amqplain_login),
        ("headers_exchange", headers_exchange),
        ("nested_arguments", nested_arguments),
        ("publish_settle_close", publish_settle_close),
    ];
    for (name, seed) in seeds {
        write(dir, name, &seed());
    }
    // Check: every seed is a sequence of whole frames amq-protocol reads.
    for e in fs::read_dir(dir).unwrap() {
        let b = fs::read(e.unwrap().path()).unwrap();
        let mut rest = &b[..];
        while !rest.is_empty() {
            let f = codec::peek_frame(rest, 131_072)
                .unwrap()
                .expect("whole frame");
            let n = f.size + codec::FRAME_OVERHEAD;
            amq_protocol::frame::parse_frame(&rest[..n]).expect("amq-protocol reads it");
            rest = &rest[n..];
        }
    }
    // The reference generator also writes a protocol header; keep one
    // amq-protocol frame as generated, for variety.
    let hb = gen_frame(&AMQPFrame::Heartbeat)(WriteContext::from(Vec::new()))
        .unwrap()
        .write;
    write(dir, "heartbeat", &hb);
}

/// Handshake (PLAIN), queue declare/bind with arguments, consume.
fn handshake_declare_consume() -> BytesMut {
    let mut out = BytesMut::new();
    handshake(&mut out, "PLAIN", b"\0guest\0guest".to_vec());
    method(
        &mut out,
        1,
        AMQPClass::Queue(queue::AMQPMethod::Declare(queue::Declare {
            queue: "q1".into(),
            durable: true,
            arguments: amqp_args(),
            ..Default::default()
        })),
    );
    method(
        &mut out,
        1,
        AMQPClass::Queue(queue::AMQPMethod::Bind(queue::Bind {
            queue: "q1".into(),
            exchange: "amq.topic".into(),
            routing_key: "a.*.c".into(),
            arguments: amqp_args(),
            ..Default::default()
        })),
    );
    method(
        &mut out,
        1,
        AMQPClass::Basic(basic::AMQPMethod::Qos(basic::Qos {
            prefetch_count: 10,
            global: false,
        })),
    );
    let mut prio = FieldTable::default();
    prio.insert("x-priority".into(), AMQPValue::ShortInt(5));
    method(
        &mut out,
        1,
        AMQPClass::Basic(basic::AMQPMethod::Consume(basic::Consume {
            queue: "q1".into(),
            consumer_tag: "ctag".into(),
            arguments: prio,
            ..Default::default()
        })),
    );
    out
}

/// AMQPLAIN login: the response is a table without its length prefix.
fn amqplain_login() -> BytesMut {
    let mut login = BytesMut::new();
    Table(vec![
        ("LOGIN".into(), Value::str("guest")),
        ("PASSWORD".into(), Value::str("guest")),
    ])
    .encode(&mut login);
    let mut out = BytesMut::new();
    handshake(&mut out, "AMQPLAIN", login[4..].to_vec());
    out
}

/// Headers exchange declare and bind.
fn headers_exchange() -> BytesMut {
    let mut out = BytesMut::new();
    let mut m = FieldTable::default();
    m.insert(
        "x-match".into(),
        AMQPValue::LongString(LongString::from("any")),
    );
    m.insert("k".into(), AMQPValue::LongString(LongString::from("v")));
    method(
        &mut out,
        1,
        AMQPClass::Exchange(exchange::AMQPMethod::Declare(exchange::Declare {
            exchange: "hx".into(),
            kind: "headers".into(),
            durable: true,
            arguments: amqp_args(),
            ..Default::default()
        })),
    );
    method(
        &mut out,
        1,
        AMQPClass::Exchange(exchange::AMQPMethod::Bind(exchange::Bind {
            destination: "dst".into(),
            source: "hx".into(),
            routing_key: "".into(),
            arguments: m.clone(),
            ..Default::default()
        })),
    );
    method(
        &mut out,
        1,
        AMQPClass::Queue(queue::AMQPMethod::Unbind(queue::Unbind {
            queue: "q1".into(),
            exchange: "hx".into(),
            routing_key: "".into(),
            arguments: m,
        })),
    );
    out
}

/// Arguments nested just past codec::MAX_TABLE_DEPTH (refused by the
/// guard, read by amq-protocol alone).
fn nested_arguments() -> BytesMut {
    let mut v = AMQPValue::Void;
    for i in 0..codec::MAX_TABLE_DEPTH + 2 {
        v = if i % 2 == 0 {
            AMQPValue::FieldArray(FieldArray::from(vec![v]))
        } else {
            let mut t = FieldTable::default();
            t.insert("t".into(), v);
            AMQPValue::FieldTable(t)
        };
    }
    let mut deep = FieldTable::default();
    deep.insert("deep".into(), v);
    let mut out = BytesMut::new();
    method(
        &mut out,
        1,
        AMQPClass::Queue(queue::AMQPMethod::Declare(queue::Declare {
            queue: "deep".into(),
            arguments: deep,
            ..Default::default()
        })),
    );
    out
}

/// Publish with full properties, a body split over frames, heartbeat,
/// settles, confirm and tx selection, closes.
fn publish_settle_close() -> BytesMut {
    let mut out = BytesMut::new();
    method(
        &mut out,
        1,
        AMQPClass::Confirm(confirm::AMQPMethod::Select(confirm::Select {
            nowait: false,
        })),
    );
    method(
        &mut out,
        1,
        AMQPClass::Basic(basic::AMQPMethod::Publish(basic::Publish {
            exchange: "amq.topic".into(),
            routing_key: "a.b.c".into(),
            mandatory: true,
            immediate: false,
        })),
    );
    codec::write_content(&mut out, 1, &props(), b"hello, warren body", 16);
    codec::write_heartbeat(&mut out);
    method(
        &mut out,
        1,
        AMQPClass::Basic(basic::AMQPMethod::Publish(basic::Publish {
            exchange: "".into(),
            routing_key: "q1".into(),
            mandatory: false,
            immediate: false,
        })),
    );
    codec::write_content(&mut out, 1, &[0, 0], b"", 131_072);
    codec::write_confirm(&mut out, 1, 1, true, true);
    codec::write_confirm(&mut out, 1, 2, false, false);
    method(
        &mut out,
        1,
        AMQPClass::Basic(basic::AMQPMethod::Reject(basic::Reject {
            delivery_tag: 3,
            requeue: true,
        })),
    );
    method(
        &mut out,
        2,
        AMQPClass::Tx(tx::AMQPMethod::Select(tx::Select {})),
    );
    method(
        &mut out,
        1,
        AMQPClass::Channel(channel::AMQPMethod::Close(channel::Close {
            reply_code: 200,
            reply_text: "bye".into(),
            class_id: 0,
            method_id: 0,
        })),
    );
    method(
        &mut out,
        0,
        AMQPClass::Connection(connection::AMQPMethod::Close(connection::Close {
            reply_code: 200,
            reply_text: "bye".into(),
            class_id: 0,
            method_id: 0,
        })),
    );
    out
}
