//! Start-up: a queue takes back what it held from the message log. A plain
//! FIFO queue keeps the recovered messages as a tail read from the log on
//! demand (RAM follows the window, not the backlog; the log segments are
//! not copied to page files); a priority queue, or one with
//! `x-max-length-bytes` (which needs exact body sizes), reads them all back
//! now, chunk by chunk, paging beyond its window as usual.

use std::sync::Arc;
use std::time::Instant;

use warren_store::QueueTail;

use super::{Delivery, Queue};
use crate::message::Message;

/// Bytes of log records read at a time when reading a tail back at once.
const READ_CHUNK: usize = 1 << 20;

impl Queue {
    /// Put recovered messages back, in order, without logging them again.
    /// TTLs count again from the restart (the log keeps no arrival time).
    pub fn restore(self: &Arc<Self>, messages: impl IntoIterator<Item = (Message, bool)>) {
        let mut inner = self.lock();
        let messages = messages.into_iter();
        inner.ready.reserve(messages.size_hint().1.unwrap_or(0));
        for (message, redelivered) in messages {
            let seq = inner.next_seq;
            inner.next_seq += 1;
            let expires_at = self.expiry_for(&message);
            inner.ready.push_back(Delivery {
                message,
                seq,
                redelivered,
                expires_at,
            });
        }
        drop(inner);
        self.sweep_if_expiring();
    }

    /// Take back what the log says this queue held (see the module docs).
    pub fn restore_tail(self: &Arc<Self>, mut tail: QueueTail) {
        let lazy = self.limits.max_priority == 0 && self.limits.max_length_bytes.is_none();
        let mut inner = self.lock();
        if lazy && inner.ready.pages_out() {
            let base = inner.next_seq;
            inner.next_seq += tail.len() as u64;
            let ttl = self.limits.message_ttl;
            inner.ready.attach_tail(tail, base, ttl, Instant::now());
            drop(inner);
            self.sweep_if_expiring();
            return;
        }
        drop(inner);
        loop {
            let chunk = match tail.pop_chunk(READ_CHUNK) {
                Ok(c) if c.is_empty() => return,
                Ok(c) => c,
                Err(e) => {
                    tracing::error!(
                        "queue '{}' in vhost '{}': cannot read its messages back from the log: {e}",
                        self.name,
                        self.vhost
                    );
                    return;
                }
            };
            self.restore(chunk.into_iter().filter_map(|m| {
                let mut msg = Message::new(m.exchange, m.meta, m.key_len, m.body).ok()?;
                msg.store_id = m.id;
                Some((msg, m.redelivered))
            }));
        }
    }

    /// A queue with a dead-letter exchange whose head has a TTL needs its
    /// sweeper running.
    fn sweep_if_expiring(self: &Arc<Self>) {
        let sweep = self.limits.dead_letter.is_some()
            && self
                .lock()
                .ready
                .front()
                .is_some_and(|d| d.expires_at.is_some());
        if sweep {
            self.start_ttl_sweeper();
        }
    }
}
