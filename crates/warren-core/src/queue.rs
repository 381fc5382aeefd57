//! Queues: an ordered list of ready messages, the consumers that take them
//! within their credit, and the count of messages out for acknowledgement.
//!
//! Each queue has its own mutex; nothing on the publish path is global. Lock
//! order: queue -> consumer's channel -> connection outbox (see
//! docs/architecture.md). Consumers never call back into a queue while
//! holding their own locks.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Mutex, MutexGuard};

use warren_store::{Log, QueueKey};

use crate::error::{CoreError, Result};
use crate::message::Message;
use crate::value::{Table, Value};

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

/// What happens when a queue reaches its length limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Overflow {
    /// Drop the oldest ready message (RabbitMQ's default).
    DropHead,
    /// Refuse the new message (publisher gets a nack).
    RejectPublish,
    /// Refuse it and dead-letter it (reason `maxlen`).
    RejectPublishDlx,
}

/// Limits from the queue's `x-` arguments.
#[derive(Clone, Debug)]
pub struct Limits {
    /// `x-message-ttl`.
    pub message_ttl: Option<Duration>,
    /// `x-max-length`.
    pub max_length: Option<usize>,
    /// `x-max-length-bytes`.
    pub max_length_bytes: Option<usize>,
    /// `x-overflow`.
    pub overflow: Overflow,
    /// `x-expires`: the queue is deleted after being unused this long.
    pub expires: Option<Duration>,
    /// `x-dead-letter-exchange` and `x-dead-letter-routing-key`.
    pub dead_letter: Option<DeadLetter>,
    /// `x-max-priority`: 0 for a plain FIFO queue.
    pub max_priority: u8,
}

/// Where a queue's dead letters go (RabbitMQ's DLX arguments).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeadLetter {
    /// Exchange to republish to (`""` is the default exchange).
    pub exchange: String,
    /// Routing key to use instead of the message's own.
    pub routing_key: Option<String>,
}

/// Why a message was dead-lettered (the `reason` of its `x-death` entry).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeathReason {
    /// basic.reject or basic.nack with requeue=false.
    Rejected,
    /// Its TTL passed.
    Expired,
    /// Dropped from the head by `x-max-length(-bytes)`.
    MaxLen,
}

impl DeathReason {
    /// RabbitMQ's word for it.
    pub fn as_str(self) -> &'static str {
        match self {
            DeathReason::Rejected => "rejected",
            DeathReason::Expired => "expired",
            DeathReason::MaxLen => "maxlen",
        }
    }
}

impl Limits {
    /// Read and validate RabbitMQ's queue arguments.
    pub fn from_args(args: &Table) -> Result<Limits> {
        let int = |k: &str| -> Result<Option<i64>> {
            match args.get(k) {
                None => Ok(None),
                Some(v) => match v.as_i64() {
                    Some(n) if n >= 0 => Ok(Some(n)),
                    _ => Err(CoreError::PreconditionFailed(format!(
                        "invalid arg '{k}' for queue: {v:?}"
                    ))),
                },
            }
        };
        let overflow = match args.get("x-overflow") {
            None => Overflow::DropHead,
            Some(v) => match v.as_str() {
                Some("drop-head") => Overflow::DropHead,
                Some("reject-publish") => Overflow::RejectPublish,
                Some("reject-publish-dlx") => Overflow::RejectPublishDlx,
                _ => {
                    return Err(CoreError::PreconditionFailed(format!(
                        "invalid arg 'x-overflow' for queue: {v:?}"
                    )))
                }
            },
        };
        let expires = match int("x-expires")? {
            Some(0) => {
                return Err(CoreError::PreconditionFailed(
                    "invalid arg 'x-expires' for queue: must be positive".into(),
                ))
            }
            other => other.map(|n| Duration::from_millis(n as u64)),
        };
        let text = |k: &str| -> Result<Option<String>> {
            match args.get(k) {
                None => Ok(None),
                Some(v) => v.as_str().map(|s| Some(s.to_string())).ok_or_else(|| {
                    CoreError::PreconditionFailed(format!("invalid arg '{k}' for queue: {v:?}"))
                }),
            }
        };
        let dead_letter = match (
            text("x-dead-letter-exchange")?,
            text("x-dead-letter-routing-key")?,
        ) {
            (Some(exchange), routing_key) => Some(DeadLetter {
                exchange,
                routing_key,
            }),
            (None, Some(_)) => return Err(CoreError::PreconditionFailed(
                "invalid arg 'x-dead-letter-routing-key' for queue: needs x-dead-letter-exchange"
                    .into(),
            )),
            (None, None) => None,
        };
        let max_priority = match int("x-max-priority")? {
            None => 0,
            Some(n @ 1..=255) => n as u8,
            Some(_) => {
                return Err(CoreError::PreconditionFailed(
                    "invalid arg 'x-max-priority' for queue: must be between 1 and 255".into(),
                ))
            }
        };
        Ok(Limits {
            max_priority,
            dead_letter,
            expires,
            message_ttl: int("x-message-ttl")?.map(|n| Duration::from_millis(n as u64)),
            max_length: int("x-max-length")?.map(|n| n as usize),
            max_length_bytes: int("x-max-length-bytes")?.map(|n| n as usize),
            overflow,
        })
    }
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
    /// Messages ever enqueued.
    pub published: u64,
    /// Messages ever handed to consumers or basic.get.
    pub delivered: u64,
    /// Messages ever acknowledged.
    pub acked: u64,
}

/// Ready messages: one FIFO, or one per priority level for a queue with
/// `x-max-priority` (highest level first, FIFO within a level).
struct Ready {
    levels: Vec<VecDeque<Delivery>>,
    len: usize,
}

impl Ready {
    fn new(max_priority: u8) -> Ready {
        Ready {
            levels: (0..=max_priority).map(|_| VecDeque::new()).collect(),
            len: 0,
        }
    }

    /// The level of a message: its priority, capped at the queue's maximum.
    fn level(&self, d: &Delivery) -> usize {
        (d.message.priority as usize).min(self.levels.len() - 1)
    }

    fn len(&self) -> usize {
        self.len
    }

    fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn reserve(&mut self, n: usize) {
        if let [only] = &mut self.levels[..] {
            only.reserve(n);
        }
    }

    fn push_back(&mut self, d: Delivery) {
        let l = self.level(&d);
        self.levels[l].push_back(d);
        self.len += 1;
    }

    /// Put back what was just popped.
    fn push_front(&mut self, d: Delivery) {
        let l = self.level(&d);
        self.levels[l].push_front(d);
        self.len += 1;
    }

    /// A requeued delivery goes back to its original position in its level.
    fn insert_by_seq(&mut self, d: Delivery) {
        let l = self.level(&d);
        let level = &mut self.levels[l];
        let pos = level.partition_point(|x| x.seq < d.seq);
        level.insert(pos, d);
        self.len += 1;
    }

    fn front(&self) -> Option<&Delivery> {
        self.levels.iter().rev().find_map(|l| l.front())
    }

    fn pop_front(&mut self) -> Option<Delivery> {
        let level = self.levels.iter_mut().rev().find(|l| !l.is_empty())?;
        let d = level.pop_front()?;
        shrink(level);
        self.len -= 1;
        Some(d)
    }

    fn drain(&mut self) -> impl Iterator<Item = Delivery> + '_ {
        self.len = 0;
        self.levels.iter_mut().rev().flat_map(|l| {
            let all = std::mem::take(l);
            all.into_iter()
        })
    }
}

/// Capacity below which a level's buffer is never shrunk.
const SHRINK_MIN: usize = 4096;

/// Halve a level's buffer once it is three-quarters empty, so that a
/// drained backlog gives its memory back (amortised O(1) per pop).
fn shrink(level: &mut VecDeque<Delivery>) {
    let cap = level.capacity();
    if cap > SHRINK_MIN && level.len() < cap / 4 {
        level.shrink_to(cap / 2);
    }
}

struct Inner {
    ready: Ready,
    ready_bytes: usize,
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
    /// An expiry timer task runs for this queue.
    pub(crate) expiry_timer: AtomicBool,
    /// Messages waiting to be republished to the dead-letter exchange.
    dead: Mutex<Vec<(Message, DeathReason)>>,
    /// A task drains `dead` (or the TTL sweeper runs) for this queue.
    pub(crate) dead_letter_task: AtomicBool,
    pub(crate) ttl_sweeper: AtomicBool,
    /// The vhost, for dead-lettering (set when the queue is added).
    pub(crate) home: std::sync::OnceLock<std::sync::Weak<crate::VHost>>,
}

/// Milliseconds since the first call (a process-wide monotonic origin).
fn clock() -> u64 {
    static ORIGIN: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    ORIGIN.get_or_init(Instant::now).elapsed().as_millis() as u64
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
            last_used: AtomicU64::new(clock()),
            expiry_timer: AtomicBool::new(false),
            dead: Mutex::new(Vec::new()),
            dead_letter_task: AtomicBool::new(false),
            ttl_sweeper: AtomicBool::new(false),
            home: std::sync::OnceLock::new(),
            inner: Mutex::new(Inner {
                ready: Ready::new(limits.max_priority),
                ready_bytes: 0,
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

    /// When a message enqueued now expires: the shorter of the queue's
    /// `x-message-ttl` and the message's expiration.
    fn expiry_for(&self, message: &Message) -> Option<Instant> {
        match (self.limits.message_ttl, message.expiration_ms) {
            (None, None) => None,
            (a, b) => {
                let b = b.map(Duration::from_millis);
                // A TTL too large to represent never expires.
                Instant::now()
                    .checked_add(a.unwrap_or(Duration::MAX).min(b.unwrap_or(Duration::MAX)))
            }
        }
    }

    /// Put recovered messages back, in order, without logging them again.
    /// TTLs count again from the restart (the log keeps no arrival time).
    pub fn restore(self: &Arc<Self>, messages: impl IntoIterator<Item = (Message, bool)>) {
        let mut inner = self.lock();
        let messages = messages.into_iter();
        inner.ready.reserve(messages.size_hint().1.unwrap_or(0));
        for (message, redelivered) in messages {
            let seq = inner.next_seq;
            inner.next_seq += 1;
            inner.ready_bytes += message.body_len();
            let expires_at = self.expiry_for(&message);
            inner.ready.push_back(Delivery {
                message,
                seq,
                redelivered,
                expires_at,
            });
        }
        let sweep = self.limits.dead_letter.is_some()
            && inner.ready.front().is_some_and(|d| d.expires_at.is_some());
        drop(inner);
        if sweep {
            self.start_ttl_sweeper();
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
            if inner.ready_bytes + len > max
                && !self.make_room(&mut inner, |i| {
                    !i.ready.is_empty() && i.ready_bytes + len > max
                })
            {
                return self.refuse(message);
            }
        }
        let ttl = self.expiry_for(&message);
        let seq = inner.next_seq;
        inner.next_seq += 1;
        inner.stats.published += 1;
        inner.ready_bytes += message.body_len();
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
                    inner.ready_bytes -= d.message.body_len();
                    self.forget(&d.message);
                    self.dead_letter(d.message, DeathReason::MaxLen);
                }
                None => break,
            }
        }
        true
    }

    fn drop_expired(&self, inner: &mut Inner) {
        let mut now = None;
        while let Some(front) = inner.ready.front() {
            let Some(at) = front.expires_at else { break };
            let now = *now.get_or_insert_with(Instant::now);
            if at > now {
                break;
            }
            let d = inner.ready.pop_front().expect("front exists");
            inner.ready_bytes -= d.message.body_len();
            self.forget(&d.message);
            self.dead_letter(d.message, DeathReason::Expired);
        }
    }

    /// Hand a dropped message to the dead-letter exchange, if the queue has
    /// one. Called under the queue lock, so the message only goes on a list
    /// here; a task republishes it outside every lock.
    fn dead_letter(&self, m: Message, reason: DeathReason) {
        if self.limits.dead_letter.is_none() {
            return;
        }
        self.dead.lock().push((m, reason));
        if !self.dead_letter_task.swap(true, Ordering::AcqRel) {
            match (
                tokio::runtime::Handle::try_current(),
                self.home.get().cloned(),
            ) {
                (Ok(rt), Some(home)) => {
                    let name = self.name.clone();
                    rt.spawn(async move {
                        if let Some(v) = home.upgrade() {
                            v.drain_dead_letters(&name);
                        }
                    });
                }
                _ => {
                    self.dead.lock().clear();
                    self.dead_letter_task.store(false, Ordering::Release);
                }
            }
        }
    }

    /// Take the pending dead letters (the drain task).
    pub(crate) fn take_dead_letters(&self) -> Vec<(Message, DeathReason)> {
        std::mem::take(&mut *self.dead.lock())
    }

    /// More dead letters came while the drain task finished: true when
    /// this caller must drain again.
    pub(crate) fn dead_letters_pending(&self) -> bool {
        self.dead_letter_task.store(false, Ordering::Release);
        !self.dead.lock().is_empty() && !self.dead_letter_task.swap(true, Ordering::AcqRel)
    }

    /// Messages rejected without requeue: dead-lettered if the queue has a
    /// DLX, then settled.
    pub fn reject<'a>(&self, deliveries: impl IntoIterator<Item = &'a Delivery>) {
        let mut n = 0;
        for d in deliveries {
            n += 1;
            self.forget(&d.message);
            self.dead_letter(d.message.clone(), DeathReason::Rejected);
        }
        self.unacked.fetch_sub(n, Ordering::Relaxed);
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
    fn start_ttl_sweeper(self: &Arc<Self>) {
        if self.ttl_sweeper.swap(true, Ordering::AcqRel) {
            return;
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            self.ttl_sweeper.store(false, Ordering::Release);
            return;
        };
        let me = Arc::downgrade(self);
        rt.spawn(async move {
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
                        q.ttl_sweeper.store(false, Ordering::Release);
                        // A message with a TTL may have come in meanwhile.
                        let again = q
                            .lock()
                            .ready
                            .front()
                            .is_some_and(|d| d.expires_at.is_some());
                        if !again || q.ttl_sweeper.swap(true, Ordering::AcqRel) {
                            return;
                        }
                    }
                }
            }
        });
    }

    /// Hand ready messages to consumers with credit; call after credit grows.
    pub fn dispatch(self: &Arc<Self>) {
        let mut inner = self.lock();
        self.dispatch_locked(&mut inner);
    }

    fn dispatch_locked(self: &Arc<Self>, inner: &mut Inner) {
        if inner.consumers.is_empty() {
            return;
        }
        self.drop_expired(inner);
        'next: while let Some(mut d) = inner.ready.pop_front() {
            if d.expires_at.is_some_and(|at| at <= Instant::now()) {
                inner.ready_bytes -= d.message.body_len();
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
    }

    /// Offer `d` to consumer `idx`; on success account for the delivery.
    #[allow(clippy::result_large_err)]
    fn offer_to(
        self: &Arc<Self>,
        inner: &mut Inner,
        idx: usize,
        d: Delivery,
    ) -> std::result::Result<(), Delivery> {
        let len = d.message.body_len();
        let c = &inner.consumers[idx];
        let no_ack = c.no_ack;
        // Log before handing over: afterwards the delivery is gone.
        let stored = d.message.store_id != 0 && self.store.is_some();
        let for_log = stored.then(|| d.clone());
        c.consumer.offer(self, d)?;
        inner.ready_bytes -= len;
        inner.stats.delivered += 1;
        if no_ack {
            self.acked.fetch_add(1, Ordering::Relaxed);
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

    /// basic.get: the next ready message and how many remain after it.
    pub fn get(&self, no_ack: bool) -> Option<(Delivery, u32)> {
        self.touch();
        let mut inner = self.lock();
        self.drop_expired(&mut inner);
        let d = inner.ready.pop_front()?;
        inner.ready_bytes -= d.message.body_len();
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
        let mut inner = self.lock();
        let mut n = 0;
        for mut d in deliveries {
            n += 1;
            if self.is_deleted() {
                self.forget(&d.message);
                continue;
            }
            d.redelivered = true;
            inner.ready_bytes += d.message.body_len();
            inner.ready.insert_by_seq(d);
        }
        self.unacked.fetch_sub(n, Ordering::Relaxed);
        self.dispatch_locked(&mut inner);
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
        before != inner.consumers.len()
            && inner.consumers.is_empty()
            && inner.had_consumer
            && self.auto_delete
    }

    /// Drop all ready messages; returns how many.
    pub fn purge(&self) -> u32 {
        let mut inner = self.lock();
        let n = inner.ready.len();
        for d in inner.ready.drain() {
            self.forget(&d.message);
        }
        inner.ready_bytes = 0;
        n as u32
    }

    /// Ready message count (after dropping expired heads).
    pub fn message_count(&self) -> u32 {
        let mut inner = self.lock();
        self.drop_expired(&mut inner);
        inner.ready.len() as u32
    }

    /// The registered consumers: (tag, channel id, no_ack, exclusive).
    pub fn consumers(&self) -> Vec<(Arc<str>, u64, bool, bool)> {
        self.lock()
            .consumers
            .iter()
            .map(|c| (c.tag.clone(), c.channel_id, c.no_ack, c.exclusive))
            .collect()
    }

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

    /// Consumer count.
    pub fn consumer_count(&self) -> u32 {
        self.lock().consumers.len() as u32
    }

    /// Counters for listing.
    pub fn stats(&self) -> QueueStats {
        let inner = self.lock();
        QueueStats {
            ready: inner.ready.len(),
            ready_bytes: inner.ready_bytes,
            consumers: inner.consumers.len(),
            unacked: self.unacked.load(Ordering::Relaxed),
            acked: self.acked.load(Ordering::Relaxed),
            ..inner.stats
        }
    }

    /// Mark deleted, drop messages and tell consumers; returns the ready count.
    pub(crate) fn delete(self: &Arc<Self>) -> u32 {
        let (n, consumers) = {
            let mut inner = self.lock();
            self.deleted.store(true, Ordering::Release);
            let n = inner.ready.len() as u32;
            for d in inner.ready.drain() {
                self.forget(&d.message);
            }
            inner.ready_bytes = 0;
            (n, std::mem::take(&mut inner.consumers))
        };
        for c in consumers {
            c.consumer.queue_deleted(self);
        }
        n
    }
}
