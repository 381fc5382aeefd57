//! How an MQTT publish becomes an AMQP message and back, as RabbitMQ's MQTT
//! plugin maps them: QoS 0 / 1+ is delivery_mode 1 / 2, the QoS rides in a
//! header, and the MQTT 5 properties map to AMQP properties and headers.

use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use warren_core::props::Properties;
use warren_core::retained::DEADLINE_HEADER;
use warren_core::{DecodeError, Message, Table, Value};

use crate::codec::{Props, Publish};
use crate::topic::{fits_routing_key, swap_byte};

/// Header carrying the MQTT QoS of a publish across AMQP (RabbitMQ's name;
/// the retained store reads it too).
pub const QOS_HEADER: &str = warren_core::retained::QOS_HEADER;
/// Header naming the connection that published a message, set only when
/// that connection has a no-local subscription matching the topic.
pub const NO_LOCAL_HEADER: &str = "x-mqtt-no-local";
/// Binding argument holding the QoS granted to a subscription.
pub const GRANTED_QOS: &str = "x-mqtt-qos";
/// Binding argument holding a subscription's v5 Subscription Identifier.
pub const SUBSCRIPTION_ID: &str = "x-mqtt-subscription-id";
/// Binding argument set for a subscription with retain-as-published.
pub const RETAIN_AS_PUBLISHED: &str = "x-mqtt-retain-as-published";
/// Header carrying a v5 Payload Format Indicator of 1 (UTF-8 payload).
pub const PAYLOAD_FORMAT_HEADER: &str = "x-mqtt-payload-format-indicator";
/// Header marking a message published with RETAIN=1, for subscriptions
/// with retain-as-published.
pub const RETAIN_HEADER: &str = "x-mqtt-retain";
/// Header carrying a v5 response topic (RabbitMQ's name).
const REPLY_TO_TOPIC_HEADER: &str = "x-reply-to-topic";

/// AMQP basic-properties flag bits (0-9-1 spec 4.2.6.1) that
/// [`plain_props`] writes by hand.
const FLAG_HEADERS: u16 = 1 << 13;
/// See [`FLAG_HEADERS`].
const FLAG_DELIVERY_MODE: u16 = 1 << 12;
/// AMQP field type of a short-short unsigned integer (RabbitMQ's `B`).
const FIELD_U8: u8 = b'B';

/// The QoS a message was published with: the header if set, else 1 for
/// persistent and 0 for transient AMQP messages.
pub fn publish_qos(m: &Message) -> u8 {
    if !m.persistent {
        return 0;
    }
    m.header(QOS_HEADER)
        .and_then(|v| v.as_i64())
        .map_or(1, |q| q.clamp(1, 2) as u8)
}

/// MQTT 5 properties from an AMQP message, as RabbitMQ maps them. A
/// header too long for MQTT is left out by the codec's property writer.
pub fn amqp_to_props(m: &Message) -> Props {
    let Ok(p) = Properties::decode(m.raw_properties()) else {
        return Props::default();
    };
    let mut out = Props {
        content_type: p.content_type,
        correlation_data: p.correlation_id.map(Bytes::from),
        message_expiry: p
            .expiration
            .and_then(|e| e.parse::<u64>().ok())
            .map(|ms| (ms / 1000) as u32),
        ..Default::default()
    };
    if let Some(h) = p.headers {
        for (k, v) in h.iter() {
            if k == REPLY_TO_TOPIC_HEADER {
                out.response_topic = v.as_str().map(String::from);
            } else if k == PAYLOAD_FORMAT_HEADER {
                out.payload_format = v.as_i64().filter(|&f| f == 1).map(|_| 1);
            } else if k == QOS_HEADER
                || k == NO_LOCAL_HEADER
                || k == RETAIN_HEADER
                || k == DEADLINE_HEADER
            {
                continue;
            } else if let Value::Array(items) = v {
                // A user property given more than once (see add_user_property).
                let strings = items.iter().filter_map(|i| i.as_str());
                out.user
                    .extend(strings.map(|s| (k.to_string(), s.to_string())));
            } else if let Some(s) = v.as_str() {
                out.user.push((k.to_string(), s.to_string()));
            } else if let Some(i) = v.as_i64() {
                out.user.push((k.to_string(), i.to_string()));
            }
        }
    }
    out
}

/// No MQTT 5 property that maps to an AMQP one.
pub fn is_plain(p: &Props) -> bool {
    p.content_type.is_none()
        && p.payload_format.is_none()
        && p.correlation_data.is_none()
        && p.message_expiry.is_none()
        && p.response_topic.is_none()
        && p.user.is_empty()
}

/// What [`props_to_amqp`] encodes for a publish without MQTT 5 properties,
/// written directly: delivery_mode, and for QoS 1/2 the
/// `x-mqtt-publish-qos` header.
pub fn plain_props(out: &mut BytesMut, qos: u8) {
    if qos == 0 {
        out.put_u16(FLAG_DELIVERY_MODE);
        out.put_u8(1);
    } else {
        out.put_u16(FLAG_HEADERS | FLAG_DELIVERY_MODE);
        // Table length: name length byte, name, type, value.
        out.put_u32(1 + QOS_HEADER.len() as u32 + 2);
        out.put_u8(QOS_HEADER.len() as u8);
        out.put_slice(QOS_HEADER.as_bytes());
        out.put_u8(FIELD_U8);
        out.put_u8(qos);
        out.put_u8(2);
    }
}

/// A v5 user property as an AMQP header. MQTT allows a name more than
/// once and the server must forward all of them (MQTT-3.3.2-17/18); an AMQP
/// table holds a name once, so repeats become an array under it.
fn add_user_property(headers: &mut Table, k: &str, v: &str) {
    match headers.0.iter_mut().find(|(name, _)| name == k) {
        Some((_, Value::Array(items))) => items.push(Value::str(v)),
        Some((_, first)) => {
            let first = std::mem::replace(first, Value::Void);
            headers.insert(k, Value::Array(vec![first, Value::str(v)]));
        }
        None => headers.insert(k, Value::str(v)),
    }
}

/// AMQP properties for an MQTT publish: QoS 0/1+ -> delivery_mode 1/2, and
/// the MQTT 5 properties RabbitMQ maps.
pub fn props_to_amqp(p: &Publish, no_local_conn: Option<u64>) -> Bytes {
    let mut headers = Table::default();
    for (k, v) in &p.props.user {
        add_user_property(&mut headers, k, v);
    }
    if let Some(t) = &p.props.response_topic {
        headers.insert(REPLY_TO_TOPIC_HEADER, Value::str(t));
    }
    if p.props.payload_format == Some(1) {
        headers.insert(PAYLOAD_FORMAT_HEADER, Value::U8(1));
    }
    if p.qos > 0 {
        headers.insert(QOS_HEADER, Value::U8(p.qos));
    }
    if let Some(id) = no_local_conn {
        headers.insert(NO_LOCAL_HEADER, Value::I64(id as i64));
    }
    if p.retain {
        headers.insert(RETAIN_HEADER, Value::Bool(true));
    }
    Properties {
        delivery_mode: Some(if p.qos > 0 { 2 } else { 1 }),
        content_type: p.props.content_type.clone(),
        correlation_id: p
            .props
            .correlation_data
            .as_ref()
            .map(|c| String::from_utf8_lossy(c).into_owned()),
        expiration: p
            .props
            .message_expiry
            .map(|s| (u64::from(s) * 1000).to_string()),
        headers: (!headers.is_empty()).then_some(headers),
        ..Default::default()
    }
    .encode()
}

/// The AMQP message for a PUBLISH to `exchange`: the routing key is the
/// topic with `/` and `.` swapped, written with the properties into one
/// buffer. `own` is the publishing connection when a no-local subscription
/// of its own matches. A topic over 255 bytes is refused, never cut.
pub fn message(exchange: Arc<str>, p: &Publish, own: Option<u64>) -> Result<Message, DecodeError> {
    let topic = p.topic.as_bytes();
    if !fits_routing_key(&p.topic) {
        return Err(DecodeError::RoutingKeyTooLong(topic.len()));
    }
    let mut meta = BytesMut::with_capacity(topic.len() + 32);
    // Copied, then swapped in place: `extend` over a byte iterator
    // re-checks the capacity per byte (300+ instructions a message).
    meta.extend_from_slice(topic);
    for b in meta.iter_mut() {
        *b = swap_byte(*b);
    }
    if own.is_none() && !p.retain && is_plain(&p.props) {
        // The common publish: no table or property struct is built.
        plain_props(&mut meta, p.qos);
    } else {
        meta.extend_from_slice(&props_to_amqp(p, own));
    }
    Message::new(
        exchange,
        meta.freeze(),
        topic.len() as u8,
        p.payload.clone(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use warren_core::message::MAX_KEY;

    fn publish(qos: u8, retain: bool, topic: &str, props: Props) -> Publish {
        Publish {
            dup: false,
            qos,
            retain,
            topic: topic.into(),
            pkid: 1,
            props,
            payload: Bytes::from_static(b"x"),
        }
    }

    #[test]
    fn plain_properties_match_the_general_encoding() {
        for qos in [0u8, 1, 2] {
            let p = publish(qos, false, "a/b", Props::default());
            let mut fast = BytesMut::new();
            plain_props(&mut fast, qos);
            assert_eq!(&fast[..], &props_to_amqp(&p, None)[..], "qos {qos}");
        }
    }

    #[test]
    fn message_swaps_the_topic_and_keeps_qos() {
        let m = message(
            Arc::from("amq.topic"),
            &publish(2, false, "a/b.c", Props::default()),
            None,
        )
        .unwrap();
        assert_eq!(m.routing_key(), "a.b/c");
        assert!(m.persistent);
        assert_eq!(publish_qos(&m), 2);
        let m = message(
            Arc::from("amq.topic"),
            &publish(0, false, "t", Props::default()),
            None,
        )
        .unwrap();
        assert!(!m.persistent && publish_qos(&m) == 0);
    }

    #[test]
    fn long_topic_is_refused_not_cut() {
        let x: Arc<str> = Arc::from("amq.topic");
        let edge = "t".repeat(MAX_KEY);
        let m = message(x.clone(), &publish(1, false, &edge, Props::default()), None).unwrap();
        assert_eq!(m.routing_key(), edge);
        let long = "t".repeat(MAX_KEY + 1);
        let err = message(x, &publish(1, false, &long, Props::default()), None).unwrap_err();
        assert_eq!(err, DecodeError::RoutingKeyTooLong(MAX_KEY + 1));
    }

    #[test]
    fn v5_properties_round_trip_through_amqp() {
        let props = Props {
            content_type: Some("text/plain".into()),
            response_topic: Some("r/t".into()),
            correlation_data: Some(Bytes::from_static(b"c1")),
            message_expiry: Some(7),
            payload_format: Some(1),
            user: vec![
                ("k".into(), "v".into()),
                ("twice".into(), "1".into()),
                ("twice".into(), "2".into()),
            ],
            ..Default::default()
        };
        let m = message(
            Arc::from("amq.topic"),
            &publish(1, true, "a", props.clone()),
            Some(9),
        )
        .unwrap();
        let back = amqp_to_props(&m);
        assert_eq!(back.content_type, props.content_type);
        assert_eq!(back.response_topic, props.response_topic);
        assert_eq!(back.correlation_data, props.correlation_data);
        assert_eq!(back.message_expiry, Some(7));
        assert_eq!(back.payload_format, Some(1));
        // The adapter's own headers are not user properties.
        assert_eq!(back.user, props.user);
        assert!(matches!(m.header(RETAIN_HEADER), Some(Value::Bool(true))));
        assert_eq!(m.header(NO_LOCAL_HEADER).and_then(|v| v.as_i64()), Some(9));
    }
}
