//! Queues: an ordered list of ready messages, the consumers that take them
//! within their credit, and the count of messages out for acknowledgement.
//!
//! Each queue has its own mutex; nothing on the publish path is global. Lock
//! order: queue -> consumer's channel -> connection outbox (see
//! docs/architecture.md). Consumers never call back into a queue while
//! holding their own locks.

//!
//! The concerns of a queue live beside this file: `args` (the `x-`
//! arguments), `ready` (the priority store, paging its tail to disk beyond
//! a window), `paged` (the page record), `restore` (messages back from the
//! log at start-up), `forget` (a purged backlog's removals, logged off the
//! lock), `dispatch` (consumers),
//! `ttl` (message expiry and its sweeper) and `expires` (the queue's own
//! `x-expires` lease); dead-lettering is [`crate::dead_letter`].

mod args;
mod dispatch;
mod expires;
mod forget;
mod paged;
mod ready;
mod remote;
mod restore;
mod ttl;

#[cfg(test)]
mod paged_tests;
#[cfg(test)]
mod tests;

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Instant;

use parking_lot::{Mutex, MutexGuard};

use warren_store::{Log, Pages, QueueKey};

pub use self::args::{Limits, Overflow};
use self::ready::Ready;
use crate::dead_letter::DeadLetters;
pub use crate::dead_letter::{DeadLetter, DeathReason};
use crate::error::{CoreError, Result};
use crate::message::Message;
use crate::tasks::TaskSlot;
use crate::value::Table;
use crate::vhost::VHost;

/// A message on its way to, or held by, a consumer.
#[derive(Clone, Debug)]
pub struct Delivery {
    /// The message, shared with other queues.
    pub message: Message,
    /// Position in this queue, so requeued messages return to their place.
    pub seq: u64,
    /// True when it was delivered before.
    pub redelivered: bool,
    expires_at: Option<Instant>,
}

impl Delivery {
    /// When the message expires in this queue (its TTL or expiration), so
    /// an adapter can pass on the time left (MQTT 5's Message Expiry
    /// Interval counts down while a message waits).
    pub fn expires_at(&self) -> Option<Instant> {
        self.expires_at
    }
}

/// A protocol adapter's receiving end of a subscription.
pub trait Consumer: Send + Sync {
    /// Take one delivery, or hand it back when out of credit (prefetch full,
    /// connection closing, outbound buffer over its limit).
    // Handing the delivery back by value avoids a per-message Box.
    #[allow(clippy::result_large_err)]
    fn offer(&self, queue: &Arc<Queue>, delivery: Delivery) -> std::result::Result<(), Delivery>;
    /// The queue went away; tell the client (AMQP basic.cancel).
    fn queue_deleted(&self, queue: &Arc<Queue>);
}

/// A consumer as registered with a queue.
#[derive(Clone)]
pub struct ConsumerSpec {
    /// Tag unique within the owning channel.
    pub tag: Arc<str>,
    /// Identifies the owning channel, so tags of different channels never clash.
    pub channel_id: u64,
    /// Messages count as acknowledged once handed over.
    pub no_ack: bool,
    /// No other consumer may share the queue.
    pub exclusive: bool,
    /// `x-priority`: higher-priority consumers get messages first; lower
    /// ones only while those have no credit (RabbitMQ's consumer priorities).
    pub priority: i32,
    /// The receiving end.
    pub consumer: Arc<dyn Consumer>,
}

/// Counters for operators.
#[derive(Clone, Copy, Debug, Default)]
pub struct QueueStats {
    /// Ready messages.
    pub ready: usize,
    /// Delivered and not yet acknowledged.
    pub unacked: usize,
    /// Registered consumers.
    pub consumers: usize,
    /// Bytes of ready bodies.
    pub ready_bytes: usize,
    /// Ready messages held in memory (the rest are paged out to disk).
    pub ready_ram: usize,
    /// Body bytes of ready messages paged out to disk.
    pub paged_bytes: usize,
    /// Messages ever enqueued.
    pub published: u64,
    /// Messages ever handed to consumers or basic.get.
    pub delivered: u64,
    /// Messages ever acknowledged.
    pub acked: u64,
}

struct Inner {
    ready: Ready,
    /// Sorted by priority, highest first.
    consumers: Vec<ConsumerSpec>,
    /// All consumers have the same priority (the common case: one group).
    uniform: bool,
    rr: usize,
    next_seq: u64,
    had_consumer: bool,
    stats: QueueStats,
}

/// A queue.
pub struct Queue {
    /// Name within its vhost.
    pub name: Arc<str>,
    /// The vhost it lives in.
    pub vhost: Arc<str>,
    /// Survives restarts.
    pub durable: bool,
    /// Connection that owns an exclusive queue.
    pub owner: Option<u64>,
    /// Deleted when its last consumer goes.
    pub auto_delete: bool,
    /// Declare arguments.
    pub args: Table,
    /// Parsed limits.
    pub limits: Limits,
    /// Internal queues (direct reply-to) are not listed.
    pub hidden: bool,
    /// The message log, for durable queues of a broker with a store.
    store: Option<(Arc<Log>, QueueKey)>,
    inner: Mutex<Inner>,
    deleted: AtomicBool,
    unacked: AtomicUsize,
    acked: AtomicU64,
    /// Current `x-expires` in ms (0: none); an MQTT session changes it.
    expires_ms: AtomicU64,
    /// When the queue was last used (ms since [`clock`]'s origin).
    last_used: AtomicU64,
    /// The `x-expires` timer task of this queue.
    expiry_timer: TaskSlot,
    /// Messages waiting to be republished to the dead-letter exchange,
    /// and the task that drains them.
    pub(crate) dead: DeadLetters,
    /// The TTL sweeper task (queues with a dead-letter exchange).
    ttl_sweeper: TaskSlot,
    /// The vhost, for dead-lettering (set when the queue is added).
    pub(crate) home: OnceLock<Weak<VHost>>,
    /// The cluster node the queue lives on, when declared in a cluster.
    home_node: Option<Arc<str>>,
    /// Set on every node but the home: this queue is its proxy.
    remote: OnceLock<crate::remote::Remote>,
}

/// Ready messages beyond which a queue with consumers asks publishers to
/// slow down. Without consumers a queue buffers freely.
pub const FLOW_BACKLOG: usize = 100_000;

/// Outcome of offering a message to a queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Enqueued {
    /// Stored or delivered.
    Accepted,
    /// Stored, but consumers are behind by more than [`FLOW_BACKLOG`]
    /// messages: the publisher should slow down (RabbitMQ's credit flow).
    Backlogged,
    /// Refused by `x-overflow: reject-publish`.
    Rejected,
}

impl Queue {
    /// A new, empty queue.
    pub fn new(
        vhost: &Arc<str>,
        name: &str,
        durable: bool,
        owner: Option<u64>,
        auto_delete: bool,
        args: Table,
    ) -> Result<Queue> {
        let limits = Limits::from_args(&args)?;
        Ok(Queue {
            name: Arc::from(name),
            vhost: vhost.clone(),
            durable,
            owner,
            auto_delete,
            args,
            limits: limits.clone(),
            hidden: false,
            store: None,
            unacked: AtomicUsize::new(0),
            acked: AtomicU64::new(0),
            expires_ms: AtomicU64::new(limits.expires.map_or(0, |d| d.as_millis() as u64)),
            last_used: AtomicU64::new(expires::clock()),
            expiry_timer: TaskSlot::default(),
            dead: DeadLetters::default(),
            ttl_sweeper: TaskSlot::default(),
            home: OnceLock::new(),
            home_node: None,
            remote: OnceLock::new(),
            inner: Mutex::new(Inner {
                ready: Ready::new(limits.max_priority),
                consumers: Vec::new(),
                uniform: true,
                rr: 0,
                next_seq: 0,
                had_consumer: false,
                stats: QueueStats::default(),
            }),
            deleted: AtomicBool::new(false),
        })
    }

    /// Attach the message log (durable queues only).
    pub fn with_store(mut self, log: Option<Arc<Log>>) -> Self {
        if self.durable {
            self.store = log.map(|l| {
                let key = QueueKey {
                    vhost: self.vhost.to_string(),
                    queue: self.name.to_string(),
                };
                (l, key)
            });
        }
        self
    }

    /// Page the ready tail beyond the window out to disk (any queue of a
    /// broker with a store).
    pub fn with_pages(self, pages: Option<Arc<Pages>>) -> Self {
        self.inner.lock().ready.set_pages(pages);
        self
    }

    /// The log and this queue's key in it, when messages here are stored.
    pub fn store(&self) -> Option<&(Arc<Log>, QueueKey)> {
        self.store.as_ref()
    }

    /// This queue no longer holds `d`: log the removal of a stored message.
    fn forget(&self, m: &Message) {
        if let (Some((log, key)), id) = (&self.store, m.store_id) {
            if id != 0 {
                log.append_remove(id, key);
            }
        }
    }

    /// `d` went to a consumer: after a crash it comes back redelivered.
    fn mark_delivered(&self, d: &Delivery) {
        if let (Some((log, key)), id) = (&self.store, d.message.store_id) {
            if id != 0 {
                log.append_delivered(id, key);
            }
        }
    }

    /// Mark as internal (not listed to operators).
    pub fn hidden(mut self) -> Self {
        self.hidden = true;
        self
    }

    /// True once deleted.
    pub fn is_deleted(&self) -> bool {
        self.deleted.load(Ordering::Acquire)
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock()
    }

    /// Whether the queue is exclusive to a connection.
    pub fn exclusive(&self) -> bool {
        self.owner.is_some()
    }

    /// Refuse access from other connections to an exclusive queue (405).
    pub fn check_owner(&self, conn: u64) -> Result<()> {
        match self.owner {
            Some(o) if o != conn => Err(CoreError::ResourceLocked(format!(
                "cannot obtain exclusive access to locked queue '{}' in vhost '{}'. It could be originally declared on another connection or the exclusive property value does not match that of the original declaration.",
                self.name, self.vhost
            ))),
            _ => Ok(()),
        }
    }

    /// Append a message and hand it to a consumer if one has credit.
    pub fn enqueue(self: &Arc<Self>, message: Message) -> Enqueued {
        if self.is_proxy() {
            return match self.forward(&message) {
                crate::remote::Forwarded::Sent(_) => Enqueued::Accepted,
                crate::remote::Forwarded::Backlogged(_) => Enqueued::Backlogged,
                crate::remote::Forwarded::Refused => Enqueued::Rejected,
            };
        }
        let mut inner = self.lock();
        if self.is_deleted() {
            self.forget(&message);
            return Enqueued::Accepted;
        }
        if let Some(max) = self.limits.max_length {
            if inner.ready.len() >= max && !self.make_room(&mut inner, |i| i.ready.len() >= max) {
                return self.refuse(message);
            }
        }
        if let Some(max) = self.limits.max_length_bytes {
            let len = message.body_len();
            if inner.ready.bytes() + len > max
                && !self.make_room(&mut inner, |i| {
                    !i.ready.is_empty() && i.ready.bytes() + len > max
                })
            {
                return self.refuse(message);
            }
        }
        let ttl = self.expiry_for(&message);
        let seq = inner.next_seq;
        inner.next_seq += 1;
        inner.stats.published += 1;
        inner.ready.push_back(Delivery {
            message,
            seq,
            redelivered: false,
            expires_at: ttl,
        });
        self.dispatch_locked(&mut inner);
        if ttl.is_some() && self.limits.dead_letter.is_some() {
            drop(inner);
            self.start_ttl_sweeper();
            inner = self.lock();
        }
        if inner.ready.len() > FLOW_BACKLOG && !inner.consumers.is_empty() {
            Enqueued::Backlogged
        } else {
            Enqueued::Accepted
        }
    }

    /// A publish refused by the overflow rule (dead-lettered with
    /// `reject-publish-dlx`).
    fn refuse(&self, message: Message) -> Enqueued {
        self.forget(&message);
        if self.limits.overflow == Overflow::RejectPublishDlx {
            self.dead_letter(message, DeathReason::MaxLen);
        }
        Enqueued::Rejected
    }

    /// Apply the overflow rule while `full` holds; false means reject.
    fn make_room(&self, inner: &mut Inner, full: impl Fn(&Inner) -> bool) -> bool {
        if self.limits.overflow != Overflow::DropHead {
            return false;
        }
        while full(inner) {
            match inner.ready.pop_front() {
                Some(d) => {
                    self.forget(&d.message);
                    self.dead_letter(d.message, DeathReason::MaxLen);
                }
                None => break,
            }
        }
        true
    }

    /// Messages rejected without requeue: dead-lettered if the queue has a
    /// DLX, then settled.
    pub fn reject<'a>(&self, deliveries: impl IntoIterator<Item = &'a Delivery>) {
        let deliveries = deliveries.into_iter();
        if self.is_proxy() {
            self.settle_remote(crate::remote::Settle::Reject, deliveries);
            return;
        }
        let mut n = 0;
        for d in deliveries {
            n += 1;
            self.forget(&d.message);
            self.dead_letter(d.message.clone(), DeathReason::Rejected);
        }
        self.unacked.fetch_sub(n, Ordering::Relaxed);
    }

    /// basic.get: the next ready message and how many remain after it.
    pub fn get(&self, no_ack: bool) -> Option<(Delivery, u32)> {
        self.touch();
        if let Some(got) = self.get_remote(no_ack) {
            return got.unwrap_or_else(|e| {
                tracing::warn!(queue = %self.name, vhost = %self.vhost, "basic.get at the queue's home failed: {e}");
                None
            });
        }
        let mut inner = self.lock();
        self.drop_expired(&mut inner);
        let d = inner.ready.pop_front()?;
        inner.stats.delivered += 1;
        if no_ack {
            self.acked.fetch_add(1, Ordering::Relaxed);
            self.forget(&d.message);
        } else {
            self.unacked.fetch_add(1, Ordering::Relaxed);
            self.mark_delivered(&d);
        }
        Some((d, inner.ready.len() as u32))
    }

    /// `n` delivered messages were acknowledged (or rejected without requeue).
    /// Delivered messages were acknowledged (or rejected without requeue).
    /// Takes no queue lock, so acks never wait behind publishers.
    pub fn settle<'a>(&self, deliveries: impl IntoIterator<Item = &'a Delivery>) {
        let deliveries = deliveries.into_iter();
        if self.is_proxy() {
            self.settle_remote(crate::remote::Settle::Ack, deliveries);
            return;
        }
        let mut n = 0;
        for d in deliveries {
            n += 1;
            self.forget(&d.message);
        }
        self.unacked.fetch_sub(n, Ordering::Relaxed);
        self.acked.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Put delivered messages back at their original positions, marked redelivered.
    pub fn requeue(self: &Arc<Self>, deliveries: impl IntoIterator<Item = Delivery>) {
        if self.is_proxy() {
            let ds: Vec<Delivery> = deliveries.into_iter().collect();
            self.settle_remote(crate::remote::Settle::Requeue, &ds);
            return;
        }
        let mut inner = self.lock();
        let mut n = 0;
        for mut d in deliveries {
            n += 1;
            if self.is_deleted() {
                self.forget(&d.message);
                continue;
            }
            d.redelivered = true;
            inner.ready.insert_by_seq(d);
        }
        self.unacked.fetch_sub(n, Ordering::Relaxed);
        self.dispatch_locked(&mut inner);
    }

    /// Drop all ready messages; returns how many.
    pub fn purge(&self) -> u32 {
        if let Some(r) = self.remote.get() {
            return r.home.purge(self).unwrap_or_else(|e| {
                tracing::warn!(queue = %self.name, vhost = %self.vhost, "purge at the queue's home failed: {e}");
                0
            });
        }
        let mut inner = self.lock();
        let n = inner.ready.len();
        let left = inner.ready.drain(|d| self.forget(&d.message));
        drop(inner);
        self.forget_later(left);
        n as u32
    }

    /// Ready message count (after dropping expired heads).
    pub fn message_count(&self) -> u32 {
        if let Some(s) = self.stats_remote() {
            return s.ready as u32;
        }
        let mut inner = self.lock();
        self.drop_expired(&mut inner);
        inner.ready.len() as u32
    }

    /// Counters for listing.
    pub fn stats(&self) -> QueueStats {
        if let Some(s) = self.stats_remote() {
            return s;
        }
        let inner = self.lock();
        QueueStats {
            ready: inner.ready.len(),
            ready_bytes: inner.ready.bytes(),
            ready_ram: inner.ready.in_ram(),
            paged_bytes: inner.ready.paged_bytes(),
            consumers: inner.consumers.len(),
            unacked: self.unacked.load(Ordering::Relaxed),
            acked: self.acked.load(Ordering::Relaxed),
            ..inner.stats
        }
    }

    /// Mark deleted, drop messages and tell consumers; returns the ready count.
    pub(crate) fn delete(self: &Arc<Self>) -> u32 {
        let (n, consumers, left) = {
            let mut inner = self.lock();
            self.unsubscribe_locked(&mut inner);
            self.deleted.store(true, Ordering::Release);
            let n = inner.ready.len() as u32;
            let left = inner.ready.drain(|d| self.forget(&d.message));
            (n, std::mem::take(&mut inner.consumers), left)
        };
        self.forget_later(left);
        for c in consumers {
            c.consumer.queue_deleted(self);
        }
        n
    }
}
