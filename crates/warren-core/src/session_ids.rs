//! Packet identifiers an MQTT persistent session holds between its
//! connections and across restarts: inbound QoS 2 publishes answered with
//! PUBREC and waiting for the client's PUBREL (so a resent PUBLISH is not
//! routed twice and its PUBREL gets PUBCOMP 0x00), and outbound QoS 2
//! deliveries the client PUBRECed whose PUBREL waits for PUBCOMP (sent
//! again when the session resumes, MQTT-4.4.0-1).
//!
//! Durability reuses the log as the retained store does: one pseudo-queue
//! key per vhost, [`SESSION_IDS_QUEUE`], holds one tiny enqueue record per
//! held id (routing key: the client id; body: kind and packet id), and
//! letting the id go appends its removal. Compaction and recovery need
//! nothing new; recovery hands the records to [`SessionIds::restore`].

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use warren_store::{Log, QueueKey, Recovered};

/// The pseudo-queue name holding a vhost's session ids in the log.
pub const SESSION_IDS_QUEUE: &str = "amq.mqtt.session-ids";

/// Which step of a QoS 2 flow a held packet id stands for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IdKind {
    /// A client's QoS 2 PUBLISH was routed and PUBRECed; PUBREL is due.
    Received,
    /// The client PUBRECed a delivery; our PUBREL waits for PUBCOMP.
    Released,
}

impl IdKind {
    fn byte(self) -> u8 {
        match self {
            IdKind::Received => 1,
            IdKind::Released => 2,
        }
    }

    fn from_byte(b: u8) -> Option<IdKind> {
        match b {
            1 => Some(IdKind::Received),
            2 => Some(IdKind::Released),
            _ => None,
        }
    }
}

/// One held id and the log record that keeps it.
struct Held {
    kind: IdKind,
    pkid: u16,
    store_id: u64,
}

/// The held packet ids of a vhost's persistent sessions, by client id.
pub struct SessionIds {
    by_client: Mutex<HashMap<String, Vec<Held>>>,
    /// The log and the vhost's pseudo-queue key in it.
    store: Option<(Arc<Log>, QueueKey)>,
}

impl SessionIds {
    /// The session ids of `vhost`, written through `log` if given.
    pub fn new(vhost: &str, log: Option<Arc<Log>>) -> SessionIds {
        SessionIds {
            by_client: Mutex::default(),
            store: log.map(|l| {
                let key = QueueKey {
                    vhost: vhost.to_string(),
                    queue: SESSION_IDS_QUEUE.to_string(),
                };
                (l, key)
            }),
        }
    }

    /// Hold `pkid` of `kind` for `client`. Returns the log sequence to
    /// wait for before the client may rely on it (None: already held, or
    /// no log).
    pub fn add(&self, client: &str, kind: IdKind, pkid: u16) -> Option<u64> {
        let mut m = self.by_client.lock();
        let held = m.entry(client.to_string()).or_default();
        if held.iter().any(|h| h.kind == kind && h.pkid == pkid) {
            return None;
        }
        let mut store_id = 0;
        let mut seq = None;
        // A client id is at most 237 bytes (its session queue name is a
        // short string); a longer one is only held in memory, as is every
        // id while the log cannot write (disk full: nothing would sync).
        let store = self.store.as_ref().filter(|(log, _)| log.healthy());
        if let (Some((log, key)), Ok(key_len)) = (store, u8::try_from(client.len())) {
            store_id = log.next_id();
            let [hi, lo] = pkid.to_be_bytes();
            let body = [kind.byte(), hi, lo];
            let queues = std::slice::from_ref(key);
            seq = Some(log.enqueue(store_id, queues, "", client.as_bytes(), key_len, &body));
        }
        held.push(Held {
            kind,
            pkid,
            store_id,
        });
        seq
    }

    /// Let `pkid` of `kind` go; false when it was not held.
    pub fn remove(&self, client: &str, kind: IdKind, pkid: u16) -> bool {
        let mut m = self.by_client.lock();
        let Some(held) = m.get_mut(client) else {
            return false;
        };
        let Some(i) = held.iter().position(|h| h.kind == kind && h.pkid == pkid) else {
            return false;
        };
        let h = held.swap_remove(i);
        if held.is_empty() {
            m.remove(client);
        }
        self.forget(h.store_id);
        true
    }

    /// The ids of `kind` held for `client`, lowest first.
    pub fn ids(&self, client: &str, kind: IdKind) -> Vec<u16> {
        let m = self.by_client.lock();
        let mut ids: Vec<u16> = m
            .get(client)
            .into_iter()
            .flatten()
            .filter(|h| h.kind == kind)
            .map(|h| h.pkid)
            .collect();
        ids.sort_unstable();
        ids
    }

    /// Every id of `client` goes (its session ended or starts clean).
    pub fn clear(&self, client: &str) {
        let held = self.by_client.lock().remove(client);
        for h in held.into_iter().flatten() {
            self.forget(h.store_id);
        }
    }

    /// Every id goes (the vhost is deleted).
    pub fn drop_all(&self) {
        let all = std::mem::take(&mut *self.by_client.lock());
        for h in all.into_values().flatten() {
            self.forget(h.store_id);
        }
    }

    /// Records recovered from the log for this vhost's pseudo-queue;
    /// unreadable ones and repeats are removed from the log. Returns how
    /// many ids are held.
    pub fn restore(&self, recovered: Vec<Recovered>) -> usize {
        let mut m = self.by_client.lock();
        let mut n = 0;
        for r in recovered {
            let Some((client, held)) = decode(&r) else {
                self.forget(r.id);
                continue;
            };
            let list = m.entry(client).or_default();
            if list
                .iter()
                .any(|h| h.kind == held.kind && h.pkid == held.pkid)
            {
                self.forget(r.id);
                continue;
            }
            list.push(held);
            n += 1;
        }
        n
    }

    /// Log the removal of record `id` (0: never logged).
    fn forget(&self, id: u64) {
        if let (Some((log, key)), true) = (&self.store, id != 0) {
            log.append_remove(id, key);
        }
    }
}

/// The client id and held id of a recovered record.
fn decode(r: &Recovered) -> Option<(String, Held)> {
    let client = r.meta.get(..usize::from(r.key_len))?;
    let client = std::str::from_utf8(client).ok()?.to_string();
    let [kind, hi, lo] = r.body[..] else {
        return None;
    };
    let held = Held {
        kind: IdKind::from_byte(kind)?,
        pkid: u16::from_be_bytes([hi, lo]),
        store_id: r.id,
    };
    Some((client, held))
}

#[cfg(test)]
mod tests;
