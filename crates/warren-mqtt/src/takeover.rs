//! The takeover registry: per (vhost, client id), the live connection and
//! the epoch of the latest one. A new connection of a client id closes the
//! old one and waits until it has cleaned up; will-delay and session-expiry
//! timers act only if no newer connection came since.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use warren_core::registry::ConnectionInfo;

/// The close reason that marks a client-id takeover.
pub const TAKEOVER: &str = "session taken over";
/// The close reason of every session when the server shuts down.
pub const SHUTTING_DOWN: &str = "server shutting down";
/// How long a new connection waits for the one it takes over to end.
const TAKEOVER_WAIT: Duration = Duration::from_secs(5);
/// Connections of one client id a new one waits out (each may be replaced
/// by a newer one while it waits).
const TAKEOVER_ROUNDS: usize = 4;

/// (vhost name, client id) as one string, `vhost NUL client id`: one
/// 16-byte key and one allocation per session, not two `String`s (an
/// MQTT client id holds no NUL, so the split is unambiguous).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Key(Box<str>);

impl Key {
    /// The key of `client_id` in `vhost`.
    pub fn new(vhost: &str, client_id: &str) -> Key {
        Key(format!("{vhost}\0{client_id}").into_boxed_str())
    }

    /// The client id part.
    pub fn client_id(&self) -> &str {
        self.0.rsplit_once('\0').map_or(&self.0, |(_, c)| c)
    }
}

struct Slot {
    conn: Option<Arc<ConnectionInfo>>,
    epoch: u64,
}

/// The live connection and latest epoch of every client id.
#[derive(Default)]
pub struct Takeover {
    /// An entry goes once its connection ended and no timer needs it.
    sessions: Mutex<HashMap<Key, Slot>>,
    next_epoch: AtomicU64,
    /// Set by [`close_all`](Self::close_all): a session attaching later is
    /// asked to close at once.
    closing: std::sync::atomic::AtomicBool,
    /// Woken whenever a connection has finished its clean-up, for
    /// [`Takeover::take_over`].
    ended: tokio::sync::Notify,
}

impl Takeover {
    /// A connection of `key` starts: it takes over an older one.
    pub fn attach(&self, key: Key, me: &Arc<ConnectionInfo>) -> u64 {
        let epoch = self.next_epoch.fetch_add(1, Ordering::Relaxed) + 1;
        let old = self.sessions.lock().insert(
            key,
            Slot {
                conn: Some(me.clone()),
                epoch,
            },
        );
        if let Some(Slot {
            conn: Some(old), ..
        }) = old
        {
            // Client-id takeover: the older connection is disconnected.
            old.request_close(TAKEOVER);
        }
        // Checked after the insert: a close_all either saw this session or
        // had set the flag before it.
        if self.closing.load(Ordering::Acquire) {
            me.request_close(SHUTTING_DOWN);
        }
        epoch
    }

    /// The connection of `epoch` ended and has cleaned up its session.
    pub fn detach(&self, key: &Key, epoch: u64) {
        if let Some(s) = self.sessions.lock().get_mut(key) {
            if s.epoch == epoch {
                s.conn = None;
            }
        }
        self.ended.notify_waiters();
    }

    /// Before a new connection of `key` looks at its session: close the
    /// live one, if any, and wait until it has cleaned up, so that the new
    /// one sees the session as the old one left it (a v5 session with
    /// expiry 0 is gone, in-flight messages are back in the queue).
    pub async fn take_over(&self, key: &Key) {
        for _ in 0..TAKEOVER_ROUNDS {
            let notified = self.ended.notified();
            tokio::pin!(notified);
            // Registered before the check, so a detach in between wakes it.
            notified.as_mut().enable();
            let live = self.sessions.lock().get(key).and_then(|s| s.conn.clone());
            let Some(old) = live else {
                return;
            };
            old.request_close(TAKEOVER);
            if tokio::time::timeout(TAKEOVER_WAIT, notified).await.is_err() {
                tracing::warn!(client_id = %key.client_id(), "previous connection did not end in time; taking over anyway");
                return;
            }
        }
    }

    /// The client id connected on another node: its session here ends.
    pub fn taken_elsewhere(&self, key: &Key, node: &str) {
        let live = self.sessions.lock().get(key).and_then(|s| s.conn.clone());
        if let Some(old) = live {
            tracing::info!(client_id = %key.client_id(), node, "MQTT client connected on another node; ending its session here");
            old.request_close(TAKEOVER);
        }
    }

    /// Ask every live connection to close with `reason` (server shutdown:
    /// sessions hold no shutdown receiver of their own).
    pub fn close_all(&self, reason: &str) {
        self.closing.store(true, Ordering::Release);
        let live: Vec<Arc<ConnectionInfo>> = self
            .sessions
            .lock()
            .values()
            .filter_map(|s| s.conn.clone())
            .collect();
        for c in live {
            c.request_close(reason);
        }
    }

    /// No newer connection of this client id came since `epoch`.
    pub fn is_latest(&self, key: &Key, epoch: u64) -> bool {
        self.sessions
            .lock()
            .get(key)
            .is_none_or(|s| s.epoch == epoch)
    }

    /// Drop the entry of an ended connection nobody waits on any more.
    pub fn forget(&self, key: &Key, epoch: u64) {
        let mut m = self.sessions.lock();
        if m.get(key)
            .is_some_and(|s| s.epoch == epoch && s.conn.is_none())
        {
            m.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_keeps_its_client_id_apart() {
        let k = Key::new("/", "dev-1");
        assert_eq!(k.client_id(), "dev-1");
        assert_ne!(Key::new("a", "bc"), Key::new("ab", "c"));
    }
}
