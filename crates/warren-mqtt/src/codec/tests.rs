//! Byte-for-byte and round-trip tests of the codec.

use super::*;
use bytes::{Bytes, BytesMut};

#[test]
fn delivery_writer_matches_publish_encoding() {
    for level in [4u8, 5] {
        for qos in [0u8, 1, 2] {
            let props = Props {
                content_type: Some("text/plain".into()),
                user: vec![("k".into(), "v".into())],
                ..Default::default()
            };
            let p = Publish {
                dup: qos > 0,
                qos,
                retain: true,
                topic: "sensors/room.1/temp".into(),
                pkid: if qos > 0 { 7 } else { 0 },
                props: if level == 5 {
                    props.clone()
                } else {
                    Props::default()
                },
                payload: Bytes::from_static(b"21.5"),
            };
            let mut a = BytesMut::new();
            write_publish(&mut a, level, &p);
            let mut b = BytesMut::new();
            assert!(write_delivery(
                &mut b,
                level,
                (p.dup, qos, true),
                "sensors.room/1.temp",
                p.pkid,
                Some(&props),
                b"21.5",
                a.len(),
            ));
            assert_eq!(a, b, "level {level} qos {qos}");
            // One byte over the client's Maximum Packet Size: not written.
            let mut c = BytesMut::new();
            assert!(!write_delivery(
                &mut c,
                level,
                (p.dup, qos, true),
                "sensors.room/1.temp",
                p.pkid,
                Some(&props),
                b"21.5",
                a.len() - 1,
            ));
            assert!(c.is_empty());
        }
    }
}

#[test]
fn publish_roundtrip_v5_and_v4() {
    for level in [4u8, 5] {
        let p = Publish {
            dup: false,
            qos: 1,
            retain: true,
            topic: "a/b".into(),
            pkid: 7,
            props: if level == 5 {
                Props {
                    content_type: Some("text/plain".into()),
                    user: vec![("k".into(), "v".into())],
                    ..Default::default()
                }
            } else {
                Props::default()
            },
            payload: Bytes::from_static(b"hello"),
        };
        let mut out = BytesMut::new();
        write_publish(&mut out, level, &p);
        let got = read(&mut out, level, 1 << 20).unwrap();
        assert_eq!(got, Packet::Publish(p));
        assert!(out.is_empty());
    }
}

#[test]
fn incomplete_and_garbage() {
    let mut b = BytesMut::from(&[0x30u8, 10, 0, 3][..]);
    assert_eq!(read(&mut b, 4, 1024), Err(CodecError::Incomplete));
    let mut b = BytesMut::from(&[0x30u8, 0xff, 0xff, 0xff, 0xff, 0x01][..]);
    assert_eq!(read(&mut b, 4, usize::MAX), Err(CodecError::BadLength));
    let mut b = BytesMut::from(&[0x30u8, 0x80, 0x80, 0x01][..]);
    assert!(matches!(
        read(&mut b, 4, 1024),
        Err(CodecError::TooLarge(_))
    ));
    for n in 0..200u32 {
        let v: Vec<u8> = (0..(n % 40 + 2)).map(|i| (i * 37 + n * 11) as u8).collect();
        let mut b = BytesMut::from(&v[..]);
        let _ = read(&mut b, (n % 2 + 4) as u8, 1024);
    }
}

#[test]
fn overlong_user_property_is_left_out_and_the_publish_stays_decodable() {
    let long = "x".repeat(70_000);
    let p = Publish {
        dup: false,
        qos: 1,
        retain: false,
        topic: "a/b".into(),
        pkid: 3,
        props: Props {
            content_type: Some("text/plain".into()),
            user: vec![
                ("short".into(), "kept".into()),
                ("long".into(), long.clone()),
                (long, "v".into()),
            ],
            ..Default::default()
        },
        payload: Bytes::from_static(b"body"),
    };
    let mut out = BytesMut::new();
    write_publish(&mut out, 5, &p);
    let Packet::Publish(got) = read(&mut out, 5, 1 << 20).unwrap() else {
        panic!("not a PUBLISH");
    };
    assert!(out.is_empty());
    assert_eq!(
        got.props.user,
        vec![("short".to_string(), "kept".to_string())]
    );
    assert_eq!(got.props.content_type.as_deref(), Some("text/plain"));
    assert_eq!(
        (&got.topic[..], got.pkid, &got.payload[..]),
        ("a/b", 3, &b"body"[..])
    );

    // The delivery writer shares the property encoder.
    let mut d = BytesMut::new();
    write_delivery(
        &mut d,
        5,
        (false, 1, false),
        "a.b",
        3,
        Some(&p.props),
        b"body",
        usize::MAX,
    );
    let Packet::Publish(got) = read(&mut d, 5, 1 << 20).unwrap() else {
        panic!("not a PUBLISH");
    };
    assert_eq!(got.props.user.len(), 1);
}

#[test]
fn acks_carry_typed_codes() {
    use crate::reason::ReasonCode;
    let mut out = BytesMut::new();
    write_ack(
        &mut out,
        5,
        AckKind::PubAck,
        9,
        ReasonCode::TopicNameInvalid,
    );
    write_ack(&mut out, 5, AckKind::PubRel, 9, ReasonCode::Success);
    write_ack(&mut out, 4, AckKind::PubRec, 9, ReasonCode::NotAuthorized);
    assert_eq!(
        &out[..],
        &[0x40, 3, 0, 9, 0x90, 0x62, 2, 0, 9, 0x50, 2, 0, 9][..]
    );
}

fn read_bytes(bytes: &[u8], level: u8) -> Result<Packet, CodecError> {
    read(&mut BytesMut::from(bytes), level, 1 << 20)
}

#[test]
fn reserved_fixed_header_flags_are_malformed() {
    // MQTT-2.1.3-1: PINGREQ, PUBACK and DISCONNECT have flags 0.
    assert!(matches!(read_bytes(b"\xc0\x00", 5), Ok(Packet::PingReq)));
    for bad in [&b"\xc1\x00"[..], b"\x41\x02\x00\x01", b"\xe8\x00"] {
        assert!(
            matches!(read_bytes(bad, 5), Err(CodecError::Malformed(_))),
            "{bad:?}"
        );
    }
    // SUBSCRIBE must have 0b0010 (3.1.1 too).
    let sub = b"\x80\x06\x00\x01\x00\x01t\x00";
    assert!(matches!(read_bytes(sub, 4), Err(CodecError::Malformed(_))));
}

#[test]
fn non_minimal_lengths_and_empty_subscribe_are_refused() {
    // MQTT-1.5.5-1: PINGREQ with remaining length 0 in two bytes.
    assert!(matches!(
        read_bytes(b"\xc0\x80\x00", 5),
        Err(CodecError::BadLength)
    ));
    // MQTT-3.8.3-2 / 3.10.3-2: no filters is a protocol error.
    let sub = b"\x82\x03\x00\x01\x00";
    assert!(matches!(read_bytes(sub, 5), Err(CodecError::Protocol(_))));
    let unsub = b"\xa2\x03\x00\x01\x00";
    assert!(matches!(read_bytes(unsub, 5), Err(CodecError::Protocol(_))));
    // MQTT-2.2.1-3: packet id 0.
    let sub0 = b"\x82\x07\x00\x00\x00\x00\x01t\x00";
    assert!(matches!(read_bytes(sub0, 5), Err(CodecError::Malformed(_))));
}

#[test]
fn a_property_of_another_packet_type_is_malformed() {
    // 2.2.2.2: Session Expiry Interval (0x11) is not a PUBLISH property.
    let p = b"\x30\x0a\x00\x01t\x05\x11\x00\x00\x00\x05x";
    assert!(matches!(read_bytes(p, 5), Err(CodecError::Malformed(_))));
    // Content Type (0x03) is.
    let ok = b"\x30\x08\x00\x01t\x03\x03\x00\x00x";
    assert!(matches!(read_bytes(ok, 5), Ok(Packet::Publish(_))));
}

#[test]
fn connect_level_is_read_from_the_first_bytes() {
    // Fixed header, then "MQTT" and the level; enough for a refusal.
    assert_eq!(connect_level(b"\x10\x10\x00\x04MQTT\x05"), Some(5));
    assert_eq!(connect_level(b"\x10\x10\x00\x04MQTT\x04\x02"), Some(4));
    assert_eq!(connect_level(b"\x11\x80\x01\x00\x06MQIsdp\x03"), Some(4));
    assert_eq!(connect_level(b"\x10\x10\x00\x04MQTT\x07"), Some(4));
    // Not yet there, another protocol, another packet.
    assert_eq!(connect_level(b"\x10\x10\x00\x04MQT"), None);
    assert_eq!(connect_level(b"\x10\x10\x00\x04XYZW\x05"), None);
    assert_eq!(connect_level(b"\x82\x10\x00\x04MQTT\x05"), None);
}
