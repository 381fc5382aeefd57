//! Writes the committed seed corpora under `fuzz/seeds/<target>/`: valid
//! AMQP frames, MQTT packets and store segments made with the crates' own
//! writers (hand-built bytes only where Warren has no writer, such as the
//! MQTT packets a client sends), each checked by reading it back.
//!
//! Run from `fuzz/`: `cargo run --example gen_seeds` (a plain build; it does
//! not need cargo-fuzz). The output is deterministic.

use std::fs;
use std::path::{Path, PathBuf};

use amq_protocol::frame::{gen_frame, AMQPFrame, WriteContext};
use amq_protocol::protocol::{basic, channel, confirm, connection, exchange, queue, tx, AMQPClass};
use amq_protocol::types::{AMQPValue, DecimalValue, FieldArray, FieldTable, LongString};
use bytes::{BufMut, Bytes, BytesMut};
use warren_amqp::codec;
use warren_core::props::Properties;
use warren_core::{Table, Value};
use warren_mqtt::codec as mqtt;
use warren_store::{Log, QueueKey};

fn main() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("seeds");
    amqp(&root.join("amqp_frame"));
    mqtt_v4(&root.join("mqtt_v4"));
    mqtt_v5(&root.join("mqtt_v5"));
    store(&root);
    println!("seeds written under {}", root.display());
}

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    fs::create_dir_all(dir).unwrap();
    fs::write(dir.join(name), bytes).unwrap();
}

// ---------------------------------------------------------------- AMQP

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

fn props() -> Vec<u8> {
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

fn amqp(dir: &Path) {
    // Handshake (PLAIN), queue declare/bind with arguments, consume.
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
    write(dir, "handshake_declare_consume", &out);

    // AMQPLAIN login: the response is a table without its length prefix.
    let mut login = BytesMut::new();
    Table(vec![
        ("LOGIN".into(), Value::str("guest")),
        ("PASSWORD".into(), Value::str("guest")),
    ])
    .encode(&mut login);
    let mut out = BytesMut::new();
    handshake(&mut out, "AMQPLAIN", login[4..].to_vec());
    write(dir, "amqplain_login", &out);

    // Headers exchange declare and bind.
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
    write(dir, "headers_exchange", &out);

    // Arguments nested just past codec::MAX_TABLE_DEPTH (refused by the
    // guard, read by amq-protocol alone).
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
    write(dir, "nested_arguments", &out);

    // Publish with full properties, a body split over frames, heartbeat,
    // settles, confirm and tx selection, closes.
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
    write(dir, "publish_settle_close", &out);

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

// ---------------------------------------------------------------- MQTT

fn put_str(b: &mut BytesMut, s: &[u8]) {
    b.put_u16(s.len() as u16);
    b.put_slice(s);
}

fn put_varint(out: &mut BytesMut, mut v: usize) {
    loop {
        let mut byte = (v & 0x7f) as u8;
        v >>= 7;
        if v > 0 {
            byte |= 0x80;
        }
        out.put_u8(byte);
        if v == 0 {
            break;
        }
    }
}

fn packet(out: &mut BytesMut, first: u8, body: &[u8]) {
    out.put_u8(first);
    put_varint(out, body.len());
    out.put_slice(body);
}

/// v5 properties block: (id, raw value bytes).
fn props5(items: &[(u8, &[u8])]) -> BytesMut {
    let mut b = BytesMut::new();
    for (id, v) in items {
        b.put_u8(*id);
        b.put_slice(v);
    }
    let mut out = BytesMut::new();
    put_varint(&mut out, b.len());
    out.put_slice(&b);
    out
}

fn s(v: &str) -> Vec<u8> {
    let mut b = BytesMut::new();
    put_str(&mut b, v.as_bytes());
    b.to_vec()
}

/// A will: v5 properties, topic, payload.
type Will<'a> = (Option<&'a [u8]>, &'a str, &'a [u8]);

#[allow(clippy::too_many_arguments)]
fn connect(
    out: &mut BytesMut,
    name: &str,
    level: u8,
    flags: u8,
    props: Option<&[u8]>,
    client_id: &str,
    will: Option<Will<'_>>,
    user: Option<(&str, &[u8])>,
) {
    let mut b = BytesMut::new();
    put_str(&mut b, name.as_bytes());
    b.put_u8(level);
    b.put_u8(flags);
    b.put_u16(60);
    if let Some(p) = props {
        b.put_slice(p);
    }
    put_str(&mut b, client_id.as_bytes());
    if let Some((wp, topic, payload)) = will {
        if let Some(p) = wp {
            b.put_slice(p);
        }
        put_str(&mut b, topic.as_bytes());
        put_str(&mut b, payload);
    }
    if let Some((u, p)) = user {
        put_str(&mut b, u.as_bytes());
        put_str(&mut b, p);
    }
    packet(out, 0x10, &b);
}

fn subscribe(out: &mut BytesMut, pkid: u16, props: Option<&[u8]>, filters: &[(&str, u8)]) {
    let mut b = BytesMut::new();
    b.put_u16(pkid);
    if let Some(p) = props {
        b.put_slice(p);
    }
    for (f, o) in filters {
        put_str(&mut b, f.as_bytes());
        b.put_u8(*o);
    }
    packet(out, 0x82, &b);
}

fn unsubscribe(out: &mut BytesMut, pkid: u16, props: Option<&[u8]>, filters: &[&str]) {
    let mut b = BytesMut::new();
    b.put_u16(pkid);
    if let Some(p) = props {
        b.put_slice(p);
    }
    for f in filters {
        put_str(&mut b, f.as_bytes());
    }
    packet(out, 0xA2, &b);
}

fn publish(
    out: &mut BytesMut,
    level: u8,
    qos: u8,
    topic: &str,
    pkid: u16,
    props: mqtt::Props,
    payload: &[u8],
) {
    mqtt::write_publish(
        out,
        level,
        &mqtt::Publish {
            dup: false,
            qos,
            retain: qos == 1,
            topic: topic.into(),
            pkid,
            props,
            payload: Bytes::copy_from_slice(payload),
        },
    );
}

/// Read every packet back as the session does: the first at level 0.
fn check_mqtt(dir: &Path, level: u8) {
    for e in fs::read_dir(dir).unwrap() {
        let path = e.unwrap().path();
        let mut buf = BytesMut::from(&fs::read(&path).unwrap()[..]);
        let mut l = 0;
        while !buf.is_empty() {
            let p = mqtt::read(&mut buf, l, 16 << 20)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            if let mqtt::Packet::Connect(c) = &p {
                assert_eq!(c.level, level);
            }
            l = level;
        }
    }
}

fn mqtt_v4(dir: &Path) {
    let mut out = BytesMut::new();
    connect(
        &mut out,
        "MQTT",
        4,
        0xC2,
        None,
        "client-1",
        None,
        Some(("guest", b"guest")),
    );
    subscribe(&mut out, 1, None, &[("sensors/+/temp", 1), ("alerts/#", 0)]);
    publish(
        &mut out,
        4,
        0,
        "sensors/room1/temp",
        0,
        mqtt::Props::default(),
        b"21.5",
    );
    publish(
        &mut out,
        4,
        1,
        "sensors/room2/temp",
        7,
        mqtt::Props::default(),
        b"19",
    );
    mqtt::write_ack(&mut out, 4, 4, 7, 0);
    out.put_slice(&[0xC0, 0]); // PINGREQ
    unsubscribe(&mut out, 2, None, &["alerts/#"]);
    out.put_slice(&[0xE0, 0]); // DISCONNECT
    write(dir, "session", &out);

    // MQTT 3.1 (MQIsdp, level 3) with a will, QoS 2 flow.
    let mut out = BytesMut::new();
    connect(
        &mut out,
        "MQIsdp",
        3,
        0x04 | 0x08 | 0x20 | 0x02,
        None,
        "old-client",
        Some((None, "clients/old/status", b"offline")),
        None,
    );
    publish(
        &mut out,
        4,
        2,
        "a/b",
        9,
        mqtt::Props::default(),
        b"exactly once",
    );
    mqtt::write_ack(&mut out, 4, 5, 9, 0);
    mqtt::write_ack(&mut out, 4, 6, 9, 0);
    mqtt::write_ack(&mut out, 4, 7, 9, 0);
    write(dir, "v31_will_qos2", &out);

    // A publish above the zero-copy threshold (16 KiB).
    let mut out = BytesMut::new();
    connect(&mut out, "MQTT", 4, 0x02, None, "", None, None);
    publish(
        &mut out,
        4,
        1,
        "big",
        1,
        mqtt::Props::default(),
        &vec![0x5a; 17 * 1024],
    );
    write(dir, "large_publish", &out);
    check_mqtt(dir, 4);
}

fn mqtt_v5(dir: &Path) {
    let mut out = BytesMut::new();
    let cprops = props5(&[
        (0x11, &3600u32.to_be_bytes()),
        (0x21, &20u16.to_be_bytes()),
        (0x22, &10u16.to_be_bytes()),
        (0x27, &(1u32 << 20).to_be_bytes()),
        (0x26, &[s("k"), s("v")].concat()),
        (0x17, &[1]),
        (0x19, &[1]),
    ]);
    let wprops = props5(&[
        (0x18, &5u32.to_be_bytes()),
        (0x01, &[1]),
        (0x02, &30u32.to_be_bytes()),
        (0x03, &s("text/plain")),
    ]);
    connect(
        &mut out,
        "MQTT",
        5,
        0xC0 | 0x04 | 0x08 | 0x02,
        Some(&cprops),
        "client-5",
        Some((Some(&wprops), "clients/5/status", b"gone")),
        Some(("guest", b"guest")),
    );
    let sprops = props5(&[(0x0B, &[0x81, 0x01]), (0x26, &[s("a"), s("b")].concat())]);
    subscribe(
        &mut out,
        1,
        Some(&sprops),
        &[
            ("sensors/+/temp", 0x01 | 0x04 | 0x08 | 0x10),
            ("$share/g/jobs/#", 2),
        ],
    );
    publish(
        &mut out,
        5,
        1,
        "rpc/request",
        3,
        mqtt::Props {
            payload_format: Some(1),
            message_expiry: Some(60),
            content_type: Some("application/json".into()),
            response_topic: Some("rpc/reply".into()),
            correlation_data: Some(Bytes::from_static(b"\x01\x02")),
            user: vec![("trace".into(), "abc".into())],
            ..Default::default()
        },
        b"{\"x\":1}",
    );
    // A topic alias set, then used with an empty topic.
    let mut b = BytesMut::new();
    put_str(&mut b, b"sensors/room1/temp");
    b.put_slice(&props5(&[(0x23, &1u16.to_be_bytes())]));
    b.put_slice(b"20");
    packet(&mut out, 0x30, &b);
    let mut b = BytesMut::new();
    put_str(&mut b, b"");
    b.put_slice(&props5(&[(0x23, &1u16.to_be_bytes())]));
    b.put_slice(b"21");
    packet(&mut out, 0x30, &b);
    mqtt::write_ack(&mut out, 5, 4, 3, 0x10);
    // PUBREL with reason code and a reason string.
    let mut b = BytesMut::new();
    b.put_u16(4);
    b.put_u8(0x92);
    b.put_slice(&props5(&[(0x1F, &s("unknown id"))]));
    packet(&mut out, 0x62, &b);
    unsubscribe(&mut out, 2, Some(&props5(&[])), &["sensors/+/temp"]);
    out.put_slice(&[0xC0, 0]);
    out.put_slice(&[0xF0, 1, 0x18]); // AUTH, continue authentication
    let mut b = BytesMut::new();
    b.put_u8(0x04);
    b.put_slice(&props5(&[(0x11, &0u32.to_be_bytes()), (0x1F, &s("bye"))]));
    packet(&mut out, 0xE0, &b);
    write(dir, "session", &out);

    let mut out = BytesMut::new();
    connect(
        &mut out,
        "MQTT",
        5,
        0x02,
        Some(&props5(&[])),
        "",
        None,
        None,
    );
    publish(&mut out, 5, 2, "a/b", 1, mqtt::Props::default(), b"");
    mqtt::write_ack(&mut out, 5, 5, 1, 0);
    mqtt::write_ack(&mut out, 5, 7, 1, 0x92);
    write(dir, "minimal_qos2", &out);
    check_mqtt(dir, 5);
}

// ---------------------------------------------------------------- store

fn key(vhost: &str, queue: &str) -> QueueKey {
    QueueKey {
        vhost: vhost.into(),
        queue: queue.into(),
    }
}

/// A segment written by the log itself.
fn segment(f: impl FnOnce(&Log)) -> Vec<u8> {
    let dir = std::env::temp_dir().join(format!("warren-gen-seeds-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    let (log, rec) = Log::open_with(&dir, 1 << 20).unwrap();
    assert!(rec.queues.is_empty());
    f(&log);
    log.close();
    let mut segs: Vec<_> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    segs.sort();
    assert_eq!(segs.len(), 1, "{segs:?}");
    let bytes = fs::read(&segs[0]).unwrap();
    let _ = fs::remove_dir_all(&dir);
    bytes
}

fn enqueue(
    log: &Log,
    queues: &[QueueKey],
    exchange: &str,
    key: &str,
    props: &[u8],
    body: &[u8],
) -> u64 {
    let id = log.next_id();
    let mut meta = key.as_bytes().to_vec();
    meta.extend_from_slice(props);
    let mut rec = Vec::new();
    warren_store::log::encode_enqueue(&mut rec, id, queues, exchange, &meta, key.len() as u8, body);
    log.append_enqueue(id, queues, &rec);
    id
}

fn store(root: &Path) {
    let props = props();
    let a = segment(|log| {
        let q1 = key("/", "q1");
        let q2 = key("/", "q2");
        let m1 = enqueue(
            log,
            std::slice::from_ref(&q1),
            "amq.direct",
            "q1",
            &props,
            b"first",
        );
        let m2 = enqueue(
            log,
            &[q1.clone(), q2.clone()],
            "amq.topic",
            "a.b",
            &[0, 0],
            b"second",
        );
        enqueue(log, std::slice::from_ref(&q2), "", "q2", &props, b"");
        log.append_remove(m1, &q1);
        log.append_delivered(m2, &q2);
        log.append_remove(m2, &q1);
    });
    let b = segment(|log| {
        let q = key("team", "work\u{e9}");
        for i in 0..4u8 {
            let id = enqueue(
                log,
                std::slice::from_ref(&q),
                "jobs",
                "job",
                &props,
                &[i; 32],
            );
            if i % 2 == 0 {
                log.append_delivered(id, &q);
            } else {
                log.append_remove(id, &q);
            }
        }
    });
    for (name, seg) in [("three_messages", &a), ("one_queue_churn", &b)] {
        assert_eq!(warren_store::log::decode_segment(seg).1, seg.len());
        write(&root.join("store_record"), name, seg);
        // store_recover: a control byte (see its source), then the segment.
        write(
            &root.join("store_recover"),
            name,
            &[[0u8].as_slice(), seg].concat(),
        );
        write(
            &root.join("store_recover"),
            &format!("{name}_split"),
            &[[2u8].as_slice(), seg].concat(),
        );
        write(
            &root.join("store_recover"),
            &format!("{name}_open"),
            &[[4u8].as_slice(), seg].concat(),
        );
    }
    // A torn tail, as after kill -9 mid-write.
    let torn = &a[..a.len() - 5];
    write(&root.join("store_record"), "torn_tail", torn);
    write(
        &root.join("store_recover"),
        "torn_tail",
        &[[0u8].as_slice(), torn].concat(),
    );
}
