//! MQTT topic rules: validity of topic names and filters, matching, and the
//! mapping to AMQP routing and binding keys (`/` and `.` swapped, `+` ->
//! `*`, `#` -> `#`, as in RabbitMQ's MQTT plugin).

use warren_core::message::MAX_KEY;

use crate::codec::AckKind;
use crate::reason::ReasonCode;

/// Swap `/` and `.`: MQTT topic <-> AMQP routing key.
pub fn swap(s: &str) -> String {
    s.chars()
        .map(|c| match u8::try_from(c) {
            Ok(b) => char::from(swap_byte(b)),
            Err(_) => c,
        })
        .collect()
}

/// One byte of a topic as a routing-key byte (and back): `/` and `.` swapped.
#[inline]
pub fn swap_byte(b: u8) -> u8 {
    match b {
        b'/' => b'.',
        b'.' => b'/',
        other => other,
    }
}

/// An MQTT filter as a topic-exchange binding key.
pub fn filter_to_key(f: &str) -> String {
    swap(f)
        .split('.')
        .map(|w| if w == "+" { "*" } else { w })
        .collect::<Vec<_>>()
        .join(".")
}

/// A valid topic name for PUBLISH: no wildcards, not empty.
pub fn valid_topic(t: &str) -> bool {
    !t.is_empty() && !t.contains(['+', '#']) && t.len() <= 65535
}

/// A topic short enough to be an AMQP routing key (a short string of at
/// most 255 bytes): a longer one is refused, never cut, since a cut key
/// routes the message under another topic.
pub fn fits_routing_key(t: &str) -> bool {
    t.len() <= MAX_KEY
}

/// A valid topic filter: `#` only as the whole last level, `+` only whole.
pub fn valid_filter(f: &str) -> bool {
    if f.is_empty() {
        return false;
    }
    let levels: Vec<&str> = f.split('/').collect();
    for (i, l) in levels.iter().enumerate() {
        if l.contains('#') && (*l != "#" || i != levels.len() - 1) {
            return false;
        }
        if l.contains('+') && *l != "+" {
            return false;
        }
    }
    true
}

/// MQTT matching of a topic against a filter (for retained messages).
pub fn matches(filter: &str, topic: &str) -> bool {
    match_levels(filter, topic, '/', |f, t| f == t)
}

/// [`matches`] against a topic given as its AMQP routing key (`/` and `.`
/// swapped), comparing byte by byte so a delivery allocates nothing.
pub fn matches_key(filter: &str, key: &str) -> bool {
    match_levels(filter, key, '.', same_level)
}

/// The one matcher: `topic`'s levels are split at `separator` and compared
/// with `same`; `+` takes one level, `#` the rest, and a `$` topic is not
/// matched by a leading wildcard (MQTT-4.7.2-1).
fn match_levels(
    filter: &str,
    topic: &str,
    separator: char,
    same: impl Fn(&str, &str) -> bool,
) -> bool {
    if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false;
    }
    let mut f = filter.split('/');
    let mut t = topic.split(separator);
    loop {
        match (f.next(), t.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(a), Some(b)) if same(a, b) => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// One filter level equal to one routing-key level (whose `/` are the
/// topic's `.`).
fn same_level(filter_level: &str, key_level: &str) -> bool {
    filter_level.len() == key_level.len()
        && filter_level
            .bytes()
            .zip(key_level.bytes())
            .all(|(a, b)| a == swap_byte(b))
}

/// A binding key made by [`filter_to_key`] back as the MQTT filter.
pub fn key_to_filter(key: &str) -> String {
    key.split('.')
        .map(|w| if w == "*" { "+".to_string() } else { swap(w) })
        .collect::<Vec<_>>()
        .join("/")
}

/// The part of a `$share/group/filter` subscription after `$share/`, or
/// None for an ordinary one.
pub fn shared_rest(filter: &str) -> Option<&str> {
    filter.strip_prefix("$share/")
}

/// How the adapter answers a topic too long to be an AMQP routing key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// v5 QoS 1/2: this acknowledgement with this reason, nothing routed;
    /// the connection stays.
    Ack(AckKind, ReasonCode),
    /// v5 QoS 0 (which has no acknowledgement): DISCONNECT with this reason.
    Disconnect(ReasonCode),
    /// v5 will topic: CONNACK with this reason.
    Connack(ReasonCode),
    /// 3.1.1 has no reason codes: the connection is closed.
    Close,
}

/// The answer to a PUBLISH of `qos` whose topic cannot be a routing key, or
/// None when it can.
pub fn publish_refusal(level: u8, qos: u8, topic: &str) -> Option<Refusal> {
    if fits_routing_key(topic) {
        return None;
    }
    Some(match (level, qos) {
        (5, 0) => Refusal::Disconnect(ReasonCode::TopicNameInvalid),
        (5, q) => Refusal::Ack(AckKind::for_qos(q), ReasonCode::TopicNameInvalid),
        _ => Refusal::Close,
    })
}

/// The answer to a CONNECT whose will topic is not a valid topic name or
/// cannot be a routing key, or None when it is fine. MQTT 5.0 lists 0x90
/// Topic Name invalid among the CONNACK reason codes for exactly this: a
/// will topic the server does not accept.
pub fn will_refusal(level: u8, topic: &str) -> Option<Refusal> {
    if fits_routing_key(topic) && valid_topic(topic) {
        return None;
    }
    Some(if level == 5 {
        Refusal::Connack(ReasonCode::TopicNameInvalid)
    } else {
        Refusal::Close
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_and_filter_rules() {
        assert_eq!(swap("sensors/room1/temp"), "sensors.room1.temp");
        assert_eq!(swap("v1.2/x"), "v1/2.x");
        assert_eq!(filter_to_key("sensors/+/temp"), "sensors.*.temp");
        assert_eq!(filter_to_key("a/#"), "a.#");
        for ok in ["a", "a/+/b", "#", "+", "a/#", "/a", "a//b"] {
            assert!(valid_filter(ok), "{ok}");
        }
        for bad in ["", "a/#/b", "a+", "a/b#", "#/a"] {
            assert!(!valid_filter(bad), "{bad}");
        }
        assert!(valid_topic("a/b") && !valid_topic("a/+") && !valid_topic("") && !valid_topic("#"));
        assert!(matches("a/+/c", "a/b/c") && matches("a/#", "a") && matches("#", "x/y"));
        assert!(!matches("a/+", "a/b/c") && !matches("+/x", "$SYS/x") && !matches("a/b", "a"));
    }

    #[test]
    fn matching_on_routing_keys_agrees_with_topics() {
        let topics = [
            "a/b/c", "a", "a/b.c", "$SYS/x", "$SYS/x/y", "/a", "a//b", "a/b",
        ];
        let filters = [
            "a/+/c", "a/#", "#", "+", "+/x", "$SYS/#", "$SYS/+", "a/b.c", "a/b", "+/+", "/+",
            "a//b", "a/+/+",
        ];
        for t in topics {
            for f in filters {
                assert_eq!(matches_key(f, &swap(t)), matches(f, t), "{f} vs {t}");
            }
        }
        assert!(!matches_key("#", "$SYS.x") && matches_key("$SYS/#", "$SYS.x"));
        for f in ["sensors/+/temp", "a/#", "v1.2/+", "+"] {
            assert_eq!(key_to_filter(&filter_to_key(f)), f);
        }
    }

    #[test]
    fn routing_key_length_and_byte_swap() {
        assert!(fits_routing_key(&"t".repeat(255)));
        assert!(!fits_routing_key(&"t".repeat(256)));
        let swapped: Vec<u8> = b"a/b.c".iter().map(|&b| swap_byte(b)).collect();
        assert_eq!(swapped, swap("a/b.c").into_bytes());
        assert_eq!(shared_rest("$share/g/a/b"), Some("g/a/b"));
        assert_eq!(shared_rest("a/b"), None);
    }

    #[test]
    fn topics_over_255_bytes_are_refused_by_level_and_qos() {
        let ok = "t".repeat(255);
        let long = "t".repeat(256);
        for level in [4, 5] {
            for qos in 0..3 {
                assert_eq!(publish_refusal(level, qos, &ok), None);
            }
            assert_eq!(will_refusal(level, &ok), None);
        }
        let invalid = ReasonCode::TopicNameInvalid;
        assert_eq!(
            publish_refusal(5, 0, &long),
            Some(Refusal::Disconnect(invalid))
        );
        assert_eq!(
            publish_refusal(5, 1, &long),
            Some(Refusal::Ack(AckKind::PubAck, invalid))
        );
        assert_eq!(
            publish_refusal(5, 2, &long),
            Some(Refusal::Ack(AckKind::PubRec, invalid))
        );
        for qos in 0..3 {
            assert_eq!(publish_refusal(4, qos, &long), Some(Refusal::Close));
        }
        assert_eq!(will_refusal(5, &long), Some(Refusal::Connack(invalid)));
        assert_eq!(will_refusal(5, "a/+"), Some(Refusal::Connack(invalid)));
        assert_eq!(will_refusal(4, ""), Some(Refusal::Close));
        assert_eq!(will_refusal(4, &long), Some(Refusal::Close));
    }
}
