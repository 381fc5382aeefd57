//! What a resumed session must send again with the packet identifiers
//! its last connection used (MQTT-4.4.0-1), kept here per (vhost, client
//! id) between the connections: retained messages sent at QoS 1/2 and not
//! acknowledged (they are in no queue, so the message itself is kept), and
//! the ids of queue deliveries not acknowledged (requeued, so only their
//! queue position and id are kept). Held in memory: after a restart they
//! are sent again under new ids (the QoS 2 ids a session holds are kept
//! through the log instead, in the vhost's `session_ids`).

use std::collections::HashMap;

use parking_lot::Mutex;

use super::consumer::RetainedSent;
use crate::takeover::Key;

/// What one session's last connection left unacknowledged.
#[derive(Default)]
pub(super) struct Resends {
    /// Retained deliveries, by packet id (lowest first).
    pub(super) retained: Vec<(u16, Box<RetainedSent>)>,
    /// The session queue position of each requeued delivery and its id.
    pub(super) queued: Vec<(u64, u16)>,
}

impl Resends {
    fn is_empty(&self) -> bool {
        self.retained.is_empty() && self.queued.is_empty()
    }
}

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
        let retained = vec![(3, sent(1)), (9, sent(2))];
        let queued = vec![(40, 4)];
        p.keep(k.clone(), Resends { retained, queued });
        let r = p.take(&k);
        let ids: Vec<u16> = r.retained.iter().map(|(id, _)| *id).collect();
        assert_eq!((ids, r.queued), (vec![3, 9], vec![(40, 4)]));
        assert!(p.take(&k).is_empty());
        let retained = vec![(1, sent(1))];
        p.keep(
            k.clone(),
            Resends {
                retained,
                queued: vec![],
            },
        );
        p.keep(k.clone(), Resends::default());
        assert!(p.take(&k).is_empty());
    }
}
