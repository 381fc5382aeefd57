//! `x-expires`: a queue's lease, renewed by use, and the timer task that
//! deletes the queue once the lease runs out (RabbitMQ's queue TTL).

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use super::Queue;
use crate::value::{Table, Value};
use crate::vhost::VHost;

/// Milliseconds since the first call (a process-wide monotonic origin).
pub(super) fn clock() -> u64 {
    static ORIGIN: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    ORIGIN.get_or_init(Instant::now).elapsed().as_millis() as u64
}

impl Queue {
    /// Renew the `x-expires` lease (redeclare, consume, get, cancel).
    pub fn touch(&self) {
        self.last_used.store(clock(), Ordering::Relaxed);
    }

    /// The `x-expires` period now in force.
    pub fn expires(&self) -> Option<Duration> {
        match self.expires_ms.load(Ordering::Relaxed) {
            0 => None,
            ms => Some(Duration::from_millis(ms)),
        }
    }

    /// Change the `x-expires` period (an MQTT session's expiry interval
    /// changes at each connect); kept in the definitions. Call
    /// [`crate::VHost::watch_expiry`] after it.
    pub fn set_expires(&self, d: Option<Duration>) {
        self.expires_ms.store(
            d.map_or(0, |d| d.as_millis().max(1) as u64),
            Ordering::Relaxed,
        );
        self.touch();
    }

    /// How long the queue has been unused; None while it has consumers.
    pub fn unused_for(&self) -> Option<Duration> {
        if !self.lock().consumers.is_empty() {
            return None;
        }
        let since = clock().saturating_sub(self.last_used.load(Ordering::Relaxed));
        Some(Duration::from_millis(since))
    }

    /// The declare arguments with `x-expires` as it is now, for definitions.
    pub fn current_args(&self) -> Table {
        let mut args = self.args.clone();
        match self.expires() {
            Some(d) => args.insert("x-expires", Value::I64(d.as_millis() as i64)),
            None => args.0.retain(|(k, _)| k != "x-expires"),
        }
        args
    }

    /// Start the `x-expires` timer unless one runs; `home` removes the
    /// queue when it fires.
    pub(crate) fn start_expiry_timer(self: &Arc<Self>, home: &Weak<VHost>) {
        if self.expires().is_none() {
            return;
        }
        self.expiry_timer
            .spawn(|| Some(expire_when_unused(home.clone(), Arc::downgrade(self))));
    }
}

/// The timer task: sleep until the lease would run out, then delete the
/// queue if it is still unused; end when the queue or its vhost goes, or
/// when `x-expires` is cleared.
async fn expire_when_unused(vhost: Weak<VHost>, queue: Weak<Queue>) {
    loop {
        let (Some(q), Some(v)) = (queue.upgrade(), vhost.upgrade()) else {
            return;
        };
        if q.is_deleted() {
            return;
        }
        let Some(period) = q.expires() else {
            // An x-expires set again meanwhile keeps this task going.
            if q.expiry_timer.release_unless(|| q.expires().is_some()) {
                continue;
            }
            return;
        };
        let wait = match q.unused_for() {
            Some(idle) if idle >= period => {
                tracing::info!(vhost = %v.name, queue = %q.name, "queue expired (unused for {period:?})");
                v.remove_queue(&q);
                return;
            }
            Some(idle) => period - idle,
            None => period,
        };
        drop((q, v));
        tokio::time::sleep(wait).await;
    }
}
