//! QoS 2 deliveries a connection left between PUBREC and PUBCOMP: the
//! message is settled, but the client still waits for our PUBREL. When the
//! session is resumed, the server must send those PUBRELs again with their
//! packet identifiers (MQTT-4.4.0-1), so their ids are kept here, per
//! (vhost, client id), between the connections. They are held in memory:
//! after a restart the client's PUBREC state is answered by its own resend
//! (a PUBREC for an unknown id is ignored).

use std::collections::HashMap;

use parking_lot::Mutex;

use crate::takeover::Key;

/// Packet ids awaiting PUBCOMP, by session.
#[derive(Default)]
pub struct PendingReleases {
    by_session: Mutex<HashMap<Key, Vec<u16>>>,
}

impl PendingReleases {
    /// Keep `ids` for the next connection of `key` (none: forget it).
    pub fn keep(&self, key: Key, ids: Vec<u16>) {
        let mut m = self.by_session.lock();
        if ids.is_empty() {
            m.remove(&key);
        } else {
            m.insert(key, ids);
        }
    }

    /// The ids kept for `key`, taken out.
    pub fn take(&self, key: &Key) -> Vec<u16> {
        self.by_session.lock().remove(key).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_kept_once_per_session() {
        let p = PendingReleases::default();
        let k = ("/".to_string(), "c".to_string());
        p.keep(k.clone(), vec![3, 9]);
        assert_eq!(p.take(&k), vec![3, 9]);
        assert!(p.take(&k).is_empty());
        p.keep(k.clone(), vec![1]);
        p.keep(k.clone(), vec![]);
        assert!(p.take(&k).is_empty());
    }
}
