//! The retained-message store of a listener: the last retained message per
//! (vhost, topic), sent to new matching subscriptions. Publishes and wills
//! both go through [`Retained::upsert`].

use std::collections::HashMap;

use parking_lot::Mutex;
use warren_core::Message;

use crate::topic::matches;

/// Retained messages by (vhost, MQTT topic).
#[derive(Default)]
pub struct Retained {
    map: Mutex<HashMap<(String, String), Message>>,
}

impl Retained {
    /// Keep `msg` as the retained message of `topic`; a message with an
    /// empty body clears the topic instead (MQTT's rule for RETAIN=1).
    pub fn upsert(&self, vhost: &str, topic: &str, msg: Message) {
        let key = (vhost.to_string(), topic.to_string());
        let mut map = self.map.lock();
        if msg.body.is_empty() {
            map.remove(&key);
        } else {
            map.insert(key, msg);
        }
    }

    /// The retained messages of `vhost` whose topic matches `filter`
    /// (cloned out, so the lock is not held while they are sent).
    pub fn matching(&self, vhost: &str, filter: &str) -> Vec<Message> {
        self.map
            .lock()
            .iter()
            .filter(|((v, t), _)| v == vhost && matches(filter, t))
            .map(|(_, m)| m.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn msg(key: &str, body: &'static [u8]) -> Message {
        Message::from_parts("amq.topic", key, &[0, 0], Bytes::from_static(body)).unwrap()
    }

    #[test]
    fn upsert_replaces_and_empty_body_clears() {
        let r = Retained::default();
        r.upsert("/", "a/b", msg("a.b", b"1"));
        r.upsert("/", "a/b", msg("a.b", b"2"));
        r.upsert("other", "a/b", msg("a.b", b"3"));
        let got = r.matching("/", "a/+");
        assert_eq!(got.len(), 1);
        assert_eq!(&got[0].body[..], b"2");
        r.upsert("/", "a/b", msg("a.b", b""));
        assert!(r.matching("/", "#").is_empty());
        assert_eq!(r.matching("other", "#").len(), 1);
    }
}
