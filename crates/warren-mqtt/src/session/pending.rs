//! Retained messages a connection sent at QoS 1/2 and the client had not
//! acknowledged when the connection ended. They are in no queue (nothing
//! requeues them), yet a resumed session must send them again with their
//! packet identifiers and DUP=1 (MQTT-4.4.0-1), so they are kept here, per
//! (vhost, client id), between the connections. Held in memory: after a
//! restart they are not resent (the QoS 2 ids a session holds are kept
//! through the log instead, in the vhost's `session_ids`).

use std::collections::HashMap;

use parking_lot::Mutex;

use super::consumer::RetainedSent;
use crate::takeover::Key;

/// Retained deliveries in flight, by packet id, per session.
pub(super) type Resends = Vec<(u16, Box<RetainedSent>)>;

/// Retained deliveries to send again, by session.
#[derive(Default)]
pub struct PendingResends {
    by_session: Mutex<HashMap<Key, Resends>>,
}

impl PendingResends {
    /// Keep `sent` for the next connection of `key` (none: forget it).
    pub(super) fn keep(&self, key: Key, sent: Resends) {
        let mut m = self.by_session.lock();
        if sent.is_empty() {
            m.remove(&key);
        } else {
            m.insert(key, sent);
        }
    }

    /// What was kept for `key`, taken out.
    pub(super) fn take(&self, key: &Key) -> Resends {
        self.by_session.lock().remove(key).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use warren_core::Message;

    fn sent(qos: u8) -> Box<RetainedSent> {
        let m = Message::from_parts("amq.topic", "a", &[0, 0], Default::default()).unwrap();
        Box::new(RetainedSent {
            message: m,
            qos,
            sub_id: None,
        })
    }

    #[test]
    fn resends_are_kept_once_per_session() {
        let p = PendingResends::default();
        let k = ("/".to_string(), "c".to_string());
        p.keep(k.clone(), vec![(3, sent(1)), (9, sent(2))]);
        let ids: Vec<u16> = p.take(&k).iter().map(|(id, _)| *id).collect();
        assert_eq!(ids, [3, 9]);
        assert!(p.take(&k).is_empty());
        p.keep(k.clone(), vec![(1, sent(1))]);
        p.keep(k.clone(), vec![]);
        assert!(p.take(&k).is_empty());
    }
}
