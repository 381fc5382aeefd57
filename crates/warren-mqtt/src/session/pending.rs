//! What a resumed session must send again with the packet identifiers
//! its last connection used (MQTT-4.4.0-1), in the order it first sent
//! them (MQTT-4.6.0-1), kept here per (vhost, client id) between the
//! connections: retained messages sent at QoS 1/2 and not acknowledged
//! (they are in no queue, so the message itself is kept), and the ids of
//! queue deliveries not acknowledged (requeued, so only their queue
//! position and id are kept). Held in memory: after a restart they are
//! sent again under new ids (the QoS 2 ids a session holds are kept
//! through the log instead, in the vhost's `session_ids`).

use std::collections::HashMap;

use parking_lot::Mutex;

use super::consumer::RetainedSent;
use crate::takeover::Key;

/// One PUBLISH to send again, with the packet id it had.
pub(super) enum Resend {
    /// A requeued delivery of the session queue, at queue position `seq`:
    /// the queue delivers it again, and it gets `id` back.
    Queued { seq: u64, id: u16 },
    /// A retained delivery, written again from what was kept.
    Retained { id: u16, sent: Box<RetainedSent> },
}

impl Resend {
    /// The packet id it keeps.
    pub(super) fn id(&self) -> u16 {
        match self {
            Resend::Queued { id, .. } | Resend::Retained { id, .. } => *id,
        }
    }
}

/// What one session's last connection left unacknowledged, in the order
/// the PUBLISHes were first sent.
pub(super) type Resends = Vec<Resend>;

/// Deliveries to send again, by session.
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
pub(crate) mod tests {
    use super::*;
    use warren_core::Message;

    pub(crate) fn sent(qos: u8) -> Box<RetainedSent> {
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
        let k = Key::new("/", "c");
        let kept = vec![
            Resend::Retained {
                id: 9,
                sent: sent(2),
            },
            Resend::Queued { seq: 40, id: 4 },
            Resend::Retained {
                id: 3,
                sent: sent(1),
            },
        ];
        p.keep(k.clone(), kept);
        let ids: Vec<u16> = p.take(&k).iter().map(Resend::id).collect();
        assert_eq!(ids, vec![9, 4, 3], "kept in the order given");
        assert!(p.take(&k).is_empty());
        p.keep(
            k.clone(),
            vec![Resend::Retained {
                id: 1,
                sent: sent(1),
            }],
        );
        p.keep(k.clone(), Resends::default());
        assert!(p.take(&k).is_empty());
    }
}
