//! Consumers of a queue and dispatch: priority groups, round-robin within
//! a group, credit refusals handed back by value.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use super::{ConsumerSpec, Delivery, Inner, Queue};
use crate::dead_letter::DeathReason;
use crate::error::{CoreError, Result};

impl Queue {
    /// Hand ready messages to consumers with credit; call after credit grows.
    pub fn dispatch(self: &Arc<Self>) {
        let mut inner = self.lock();
        self.dispatch_locked(&mut inner);
    }

    pub(super) fn dispatch_locked(self: &Arc<Self>, inner: &mut Inner) {
        if inner.consumers.is_empty() {
            return;
        }
        self.drop_expired(inner);
        'next: while let Some(mut d) = inner.ready.pop_front() {
            if d.expires_at.is_some_and(|at| at <= Instant::now()) {
                self.forget(&d.message);
                self.dead_letter(d.message, DeathReason::Expired);
                continue;
            }
            // Priority groups, highest first; round-robin within a group.
            let n = inner.consumers.len();
            let mut start = 0;
            while start < n {
                let end = if inner.uniform {
                    n
                } else {
                    let p = inner.consumers[start].priority;
                    start
                        + inner.consumers[start..]
                            .iter()
                            .take_while(|c| c.priority == p)
                            .count()
                };
                let group = end - start;
                for i in 0..group {
                    let idx = start + (inner.rr + i) % group;
                    match self.offer_to(inner, idx, d) {
                        Ok(()) => {
                            inner.rr = (idx - start + 1) % group;
                            continue 'next;
                        }
                        Err(back) => d = back,
                    }
                }
                start = end;
            }
            inner.ready.push_front(d);
            break;
        }
        self.top_up(inner);
    }

    /// Offer `d` to consumer `idx`; on success account for the delivery.
    #[allow(clippy::result_large_err)]
    fn offer_to(
        self: &Arc<Self>,
        inner: &mut Inner,
        idx: usize,
        d: Delivery,
    ) -> std::result::Result<(), Delivery> {
        let c = &inner.consumers[idx];
        let no_ack = c.no_ack;
        // Log before handing over: afterwards the delivery is gone.
        let stored = d.message.store_id != 0 && self.store.is_some();
        let for_log = stored.then(|| d.clone());
        let seq = d.seq;
        c.consumer.offer(self, d)?;
        inner.stats.delivered += 1;
        if no_ack {
            self.acked.fetch_add(1, Ordering::Relaxed);
            self.settled_on_handover(seq);
        } else {
            self.unacked.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(d) = for_log {
            if no_ack {
                self.forget(&d.message);
            } else {
                self.mark_delivered(&d);
            }
        }
        Ok(())
    }

    /// Register a consumer (RabbitMQ's exclusivity rules: 403 on conflict).
    pub fn add_consumer(self: &Arc<Self>, spec: ConsumerSpec) -> Result<()> {
        self.touch();
        let mut inner = self.lock();
        if self.is_deleted() {
            return Err(CoreError::NotFound(format!(
                "no queue '{}' in vhost '{}'",
                self.name, self.vhost
            )));
        }
        // RabbitMQ answers both conflicts with the same text.
        if inner.consumers.iter().any(|c| c.exclusive)
            || (spec.exclusive && !inner.consumers.is_empty())
        {
            return Err(CoreError::AccessRefused(format!(
                "queue '{}' in vhost '{}' in exclusive use",
                self.name, self.vhost
            )));
        }
        let pos = inner
            .consumers
            .partition_point(|c| c.priority >= spec.priority);
        inner.consumers.insert(pos, spec);
        inner.uniform = inner
            .consumers
            .windows(2)
            .all(|w| w[0].priority == w[1].priority);
        inner.had_consumer = true;
        self.subscribe_locked(&inner);
        self.dispatch_locked(&mut inner);
        Ok(())
    }

    /// Remove a consumer. Returns true when an auto-delete queue lost its
    /// last consumer and must now be deleted.
    pub fn remove_consumer(&self, channel_id: u64, tag: &str) -> bool {
        self.touch();
        let mut inner = self.lock();
        let before = inner.consumers.len();
        inner
            .consumers
            .retain(|c| !(c.channel_id == channel_id && &*c.tag == tag));
        inner.uniform = inner
            .consumers
            .windows(2)
            .all(|w| w[0].priority == w[1].priority);
        if inner.rr >= inner.consumers.len() {
            inner.rr = 0;
        }
        if inner.consumers.is_empty() {
            self.unsubscribe_locked(&mut inner);
        }
        before != inner.consumers.len()
            && inner.consumers.is_empty()
            && inner.had_consumer
            && self.auto_delete
    }

    /// The registered consumers: (tag, channel id, no_ack, exclusive).
    pub fn consumers(&self) -> Vec<(Arc<str>, u64, bool, bool)> {
        self.lock()
            .consumers
            .iter()
            .map(|c| (c.tag.clone(), c.channel_id, c.no_ack, c.exclusive))
            .collect()
    }

    /// Consumer count.
    pub fn consumer_count(&self) -> u32 {
        if let Some(s) = self.stats_remote() {
            return s.consumers as u32;
        }
        self.lock().consumers.len() as u32
    }
}
