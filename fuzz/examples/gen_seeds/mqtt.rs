//! Seeds for `mqtt_v4` and `mqtt_v5`: the packets a client sends, built by
//! hand (Warren writes only the server's), each read back by the codec.

use std::fs;
use std::path::Path;

use bytes::{BufMut, Bytes, BytesMut};
use warren_mqtt::codec as mqtt;
use warren_mqtt::codec::AckKind;
use warren_mqtt::reason::ReasonCode;

use crate::write;

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

pub(crate) fn mqtt_v4(dir: &Path) {
    write(dir, "session", &v4_session());
    write(dir, "v31_will_qos2", &v4_v31_will_qos2());
    write(dir, "large_publish", &v4_large_publish());
    check_mqtt(dir, 4);
}

fn v4_session() -> BytesMut {
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
    mqtt::write_ack(&mut out, 4, AckKind::PubAck, 7, ReasonCode::Success);
    out.put_slice(&[0xC0, 0]); // PINGREQ
    unsubscribe(&mut out, 2, None, &["alerts/#"]);
    out.put_slice(&[0xE0, 0]); // DISCONNECT
    out
}

/// MQTT 3.1 (MQIsdp, level 3) with a will, QoS 2 flow.
fn v4_v31_will_qos2() -> BytesMut {
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
    mqtt::write_ack(&mut out, 4, AckKind::PubRec, 9, ReasonCode::Success);
    mqtt::write_ack(&mut out, 4, AckKind::PubRel, 9, ReasonCode::Success);
    mqtt::write_ack(&mut out, 4, AckKind::PubComp, 9, ReasonCode::Success);
    out
}

/// A publish above the zero-copy threshold (16 KiB).
fn v4_large_publish() -> BytesMut {
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
    out
}

pub(crate) fn mqtt_v5(dir: &Path) {
    write(dir, "session", &v5_session());
    write(dir, "minimal_qos2", &v5_minimal_qos2());
    check_mqtt(dir, 5);
}

fn v5_session() -> BytesMut {
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
    alias_pubrel_close(&mut out);
    out
}

/// The rest of the v5 session: topic alias, PUBREL with a reason, AUTH, DISCONNECT.
fn alias_pubrel_close(out: &mut BytesMut) {
    // A topic alias set, then used with an empty topic.
    let mut b = BytesMut::new();
    put_str(&mut b, b"sensors/room1/temp");
    b.put_slice(&props5(&[(0x23, &1u16.to_be_bytes())]));
    b.put_slice(b"20");
    packet(out, 0x30, &b);
    let mut b = BytesMut::new();
    put_str(&mut b, b"");
    b.put_slice(&props5(&[(0x23, &1u16.to_be_bytes())]));
    b.put_slice(b"21");
    packet(out, 0x30, &b);
    mqtt::write_ack(out, 5, AckKind::PubAck, 3, ReasonCode::NoMatchingSubscribers);
    // PUBREL with reason code and a reason string.
    let mut b = BytesMut::new();
    b.put_u16(4);
    b.put_u8(0x92);
    b.put_slice(&props5(&[(0x1F, &s("unknown id"))]));
    packet(out, 0x62, &b);
    unsubscribe(out, 2, Some(&props5(&[])), &["sensors/+/temp"]);
    out.put_slice(&[0xC0, 0]);
    out.put_slice(&[0xF0, 1, 0x18]); // AUTH, continue authentication
    let mut b = BytesMut::new();
    b.put_u8(0x04);
    b.put_slice(&props5(&[(0x11, &0u32.to_be_bytes()), (0x1F, &s("bye"))]));
    packet(out, 0xE0, &b);
}

fn v5_minimal_qos2() -> BytesMut {
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
    mqtt::write_ack(&mut out, 5, AckKind::PubRec, 1, ReasonCode::Success);
    mqtt::write_ack(&mut out, 5, AckKind::PubComp, 1, ReasonCode::PacketIdentifierNotFound);
    out
}
