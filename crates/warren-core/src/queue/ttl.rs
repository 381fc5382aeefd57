//! Message TTL (`x-message-ttl` and per-message expiration): when a message
//! expires, dropping expired heads, and the sweeper task that moves expired
//! messages of a queue with a dead-letter exchange on in time.

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use super::{Inner, Queue};
use crate::dead_letter::DeathReason;
use crate::message::Message;

impl Queue {
    /// When a message enqueued now expires: the shorter of the queue's
    /// `x-message-ttl` and the message's expiration.
    pub(super) fn expiry_for(&self, message: &Message) -> Option<Instant> {
        expiry_from(Instant::now(), self.limits.message_ttl, message)
    }

    pub(super) fn drop_expired(&self, inner: &mut Inner) {
        let mut now = None;
        while let Some(front) = inner.ready.front() {
            let Some(at) = front.expires_at else { break };
            let now = *now.get_or_insert_with(Instant::now);
            if at > now {
                break;
            }
            let d = inner.ready.pop_front().expect("front exists");
            self.forget(&d.message);
            self.dead_letter(d.message, DeathReason::Expired);
        }
    }

    /// Drop expired messages now (the TTL sweeper of a queue with a DLX);
    /// returns when the next head expires, if one will.
    pub(crate) fn sweep_expired(&self) -> Option<Instant> {
        let mut inner = self.lock();
        self.drop_expired(&mut inner);
        inner.ready.front().and_then(|d| d.expires_at)
    }

    /// Expiry is otherwise lazy (a message nobody can see may stay until
    /// the queue is touched); with a DLX the expired message must move on
    /// in time, so a task sleeps until the head's expiry.
    pub(super) fn start_ttl_sweeper(self: &Arc<Self>) {
        self.ttl_sweeper
            .spawn(|| Some(sweep_until_empty(Arc::downgrade(self))));
    }
}

/// When a message that arrived at `from` expires, under a queue TTL of
/// `ttl`: the shorter of that and the message's expiration.
pub(super) fn expiry_from(
    from: Instant,
    ttl: Option<Duration>,
    message: &Message,
) -> Option<Instant> {
    match (ttl, message.expiration_ms) {
        (None, None) => None,
        (a, b) => {
            let b = b.map(Duration::from_millis);
            // A TTL too large to represent never expires.
            from.checked_add(a.unwrap_or(Duration::MAX).min(b.unwrap_or(Duration::MAX)))
        }
    }
}

/// The sweeper task: drop expired heads, sleep until the next expires, and
/// end once no ready message has a TTL.
async fn sweep_until_empty(me: Weak<Queue>) {
    loop {
        let Some(q) = me.upgrade() else { return };
        if q.is_deleted() {
            return;
        }
        match q.sweep_expired() {
            Some(at) => {
                drop(q);
                tokio::time::sleep_until(at.into()).await;
            }
            None => {
                // A message with a TTL may have come in meanwhile.
                let again = || {
                    q.lock()
                        .ready
                        .front()
                        .is_some_and(|d| d.expires_at.is_some())
                };
                if !q.ttl_sweeper.release_unless(again) {
                    return;
                }
            }
        }
    }
}
