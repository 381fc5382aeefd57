//! Retained messages (MQTT's RETAIN=1): the last one per topic of a vhost,
//! indexed by topic level ([`trie`]) and written through the message log.
//!
//! Durability reuses the log unchanged: every vhost's retained messages
//! are held by one pseudo-queue key, [`RETAINED_QUEUE`] (an `amq.` name, so
//! no client can declare a queue of that name). Keeping a message appends
//! an enqueue record for that key, replacing or clearing one appends the
//! removal of the old record; compaction and recovery then work as for
//! queues, and recovery hands these messages to [`Retained::restore`]
//! instead of a queue. The pseudo-queue is no [`crate::Queue`], so it shows
//! in no listing.
//!
//! Topics are kept in routing-key form (an MQTT topic with `/` and `.`
//! swapped, as the MQTT adapter routes them; [`key_of`], [`topic_of`]).
//! A message with an expiration keeps its absolute deadline in the
//! [`DEADLINE_HEADER`] header, so that it also expires across a restart.

pub mod trie;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use parking_lot::RwLock;
use warren_store::{Log, QueueKey, Recovered};

use crate::message::Message;
use crate::props::Properties;
use crate::value::Value;
use trie::Trie;

/// The pseudo-queue name holding a vhost's retained messages in the log.
pub const RETAINED_QUEUE: &str = "amq.mqtt.retained";

/// Header holding a retained message's deadline (ms since the Unix epoch).
pub const DEADLINE_HEADER: &str = "x-retained-deadline";

/// Header carrying the MQTT QoS of a publish (RabbitMQ's name).
pub const QOS_HEADER: &str = "x-mqtt-publish-qos";

/// MQTT topic from routing key, or back: `/` and `.` swapped.
pub fn topic_of(key: &str) -> String {
    key.chars()
        .map(|c| match c {
            '/' => '.',
            '.' => '/',
            c => c,
        })
        .collect()
}

/// See [`topic_of`]; the swap is its own inverse.
pub fn key_of(topic: &str) -> String {
    topic_of(topic)
}

/// Milliseconds since the Unix epoch.
fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// One retained message, compact: a million of them are held for a long
/// time, so key, properties and body share one allocation of their own
/// (never a slice pinning a read buffer or a recovered segment), and the
/// [`Message`] is rebuilt when one is sent.
struct Entry {
    exchange: Arc<str>,
    /// Routing key, properties, body.
    data: Bytes,
    /// Bytes of key and properties at the start of `data`.
    meta_len: u32,
    key_len: u8,
    store_id: u64,
    /// Ms since the epoch after which it is gone.
    deadline: Option<u64>,
}

impl Entry {
    fn new(m: &Message, deadline: Option<u64>) -> Entry {
        let (meta, key_len) = m.meta();
        let mut data = Vec::with_capacity(meta.len() + m.body.len());
        data.extend_from_slice(meta);
        data.extend_from_slice(&m.body);
        Entry {
            exchange: m.exchange.clone(),
            data: Bytes::from(data),
            meta_len: meta.len() as u32,
            key_len,
            store_id: m.store_id,
            deadline,
        }
    }

    /// The routing key (the topic in key form).
    fn key(&self) -> &str {
        // Kept from a message, whose key is UTF-8.
        std::str::from_utf8(&self.data[..self.key_len as usize]).unwrap_or_default()
    }

    fn message(&self) -> Option<Message> {
        let at = self.meta_len as usize;
        let meta = self.data.slice(..at);
        let mut m = Message::new(
            self.exchange.clone(),
            meta,
            self.key_len,
            self.data.slice(at..),
        )
        .ok()?;
        m.store_id = self.store_id;
        Some(m)
    }

    fn expired(&self, now: u64) -> bool {
        self.deadline.is_some_and(|d| d <= now)
    }

    fn hit(&self, now: u64) -> Option<Hit> {
        Some(Hit {
            message: self.message()?,
            remaining: self
                .deadline
                .map(|d| Duration::from_millis(d.saturating_sub(now))),
        })
    }
}

/// A retained message found by a lookup.
#[derive(Clone, Debug)]
pub struct Hit {
    /// The message (its routing key is the topic in key form).
    pub message: Message,
    /// Time left before it expires, if it does.
    pub remaining: Option<Duration>,
}

impl Hit {
    /// The MQTT QoS it was published with (0 for a transient message).
    pub fn qos(&self) -> u8 {
        if !self.message.persistent {
            return 0;
        }
        self.message
            .header(QOS_HEADER)
            .and_then(|v| v.as_i64())
            .map_or(1, |q| q.clamp(1, 2) as u8)
    }
}

/// One page of a lookup.
pub struct Chunk {
    /// The messages, in topic order.
    pub hits: Vec<Hit>,
    /// Where to go on from ([`Retained::chunk`]'s `after`), when the page
    /// was full.
    pub next: Option<String>,
}

/// The retained messages of one vhost.
pub struct Retained {
    trie: RwLock<Trie<Entry>>,
    /// The log and the vhost's pseudo-queue key in it.
    store: Option<(Arc<Log>, QueueKey)>,
}

impl Retained {
    /// The retained store of `vhost`, written through `log` if given.
    pub fn new(vhost: &str, log: Option<Arc<Log>>) -> Retained {
        Retained {
            trie: RwLock::new(Trie::default()),
            store: log.map(|l| {
                let key = QueueKey {
                    vhost: vhost.to_string(),
                    queue: RETAINED_QUEUE.to_string(),
                };
                (l, key)
            }),
        }
    }

    /// Topics held (expired ones not yet removed included).
    pub fn len(&self) -> usize {
        self.trie.read().len()
    }

    /// True when no topic is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Keep `msg` as the retained message of its routing key; an empty
    /// body clears the topic instead. Returns the log sequence to wait for
    /// before acknowledging the publish, when stored.
    pub fn put(&self, msg: Message) -> Option<u64> {
        if msg.body.is_empty() {
            let key = msg.routing_key().to_string();
            return self.clear(&key).1;
        }
        let now = now_ms();
        let (mut message, deadline) = with_deadline(msg, now);
        let mut trie = self.trie.write();
        let mut seq = None;
        if let Some((log, key)) = &self.store {
            let id = log.next_id();
            message.store_id = id;
            let (meta, key_len) = message.meta();
            seq = Some(log.enqueue(
                id,
                std::slice::from_ref(key),
                &message.exchange,
                meta,
                key_len,
                &message.body,
            ));
        }
        let topic = message.routing_key().to_string();
        let old = trie.insert(&topic, Entry::new(&message, deadline));
        self.forget(old.as_ref());
        seq
    }

    /// Clear `key` (a topic in key form): whether it held a message, and
    /// the log sequence to wait for before that is durable.
    pub fn clear(&self, key: &str) -> (bool, Option<u64>) {
        let old = self.trie.write().remove(key);
        (old.is_some(), self.forget(old.as_ref()))
    }

    /// Log the removal of a replaced or cleared message.
    fn forget(&self, old: Option<&Entry>) -> Option<u64> {
        let (log, key) = self.store.as_ref()?;
        let id = old?.store_id;
        (id != 0).then(|| log.append_remove(id, key))
    }

    /// Up to `max` messages matching `filter` (an MQTT filter in key form,
    /// see [`trie`]) after the topic `after`; expired ones are removed on
    /// the way. `system`: wildcards match `$` topics too (listings).
    pub fn chunk(&self, filter: &str, after: Option<&str>, max: usize, system: bool) -> Chunk {
        let now = now_ms();
        let max = max.max(1);
        let mut hits = Vec::with_capacity(max.min(256));
        let mut expired = Vec::new();
        let mut last: Option<&Entry> = None;
        let trie = self.trie.read();
        let done = trie.walk(filter, after, system, &mut |e: &Entry| {
            last = Some(e);
            if e.expired(now) {
                expired.push(e.key().to_string());
                // Expired entries count toward the page: a walk over
                // millions of them still returns between pages.
                return hits.len() + expired.len() < max;
            }
            hits.extend(e.hit(now));
            hits.len() + expired.len() < max
        });
        let next = (!done).then(|| last.map(|e| e.key().to_string())).flatten();
        drop(trie);
        self.drop_expired(&expired, now);
        Chunk { hits, next }
    }

    /// Remove the topics found expired (unless replaced meanwhile).
    fn drop_expired(&self, keys: &[String], now: u64) {
        if keys.is_empty() {
            return;
        }
        let mut trie = self.trie.write();
        for k in keys {
            if trie.get(k).is_some_and(|e| e.expired(now)) {
                let old = trie.remove(k);
                self.forget(old.as_ref());
            }
        }
    }

    /// Up to `take` retained messages of the vhost after skipping `skip`,
    /// in topic order, `$` topics included (listings).
    pub fn range(&self, skip: usize, take: usize) -> Vec<Hit> {
        let mut after: Option<String> = None;
        let mut skip = skip;
        // Skipping walks bounded chunks, never the whole trie under the lock.
        while skip > 0 {
            let c = self.chunk(trie::REST, after.as_deref(), skip.min(1024), true);
            skip -= c.hits.len().min(skip);
            match c.next {
                Some(n) => after = Some(n),
                None => return Vec::new(),
            }
        }
        if take == 0 {
            return Vec::new();
        }
        let mut out = Vec::new();
        while out.len() < take {
            let c = self.chunk(trie::REST, after.as_deref(), take - out.len(), true);
            out.extend(c.hits);
            match c.next {
                Some(n) => after = Some(n),
                None => break,
            }
        }
        out
    }

    /// Every retained message goes (the vhost is deleted).
    pub fn drop_all(&self) {
        let all = self.trie.write().take_all();
        for e in &all {
            self.forget(Some(e));
        }
    }

    /// Messages recovered from the log for this vhost's pseudo-queue, in
    /// log order: the newest per topic is kept, older copies and expired
    /// messages are removed from the log.
    pub fn restore(&self, recovered: Vec<Recovered>) -> usize {
        let now = now_ms();
        let mut trie = self.trie.write();
        for r in recovered {
            let id = r.id;
            let Ok(mut message) = Message::new(r.exchange, r.meta, r.key_len, r.body) else {
                self.forget_id(id);
                continue;
            };
            message.store_id = id;
            let deadline = stored_deadline(&message);
            let entry = Entry::new(&message, deadline);
            if entry.expired(now) {
                self.forget_id(id);
                continue;
            }
            let topic = message.routing_key().to_string();
            let old = trie.insert(&topic, entry);
            self.forget(old.as_ref());
        }
        trie.len()
    }

    fn forget_id(&self, id: u64) {
        if let Some((log, key)) = &self.store {
            log.append_remove(id, key);
        }
    }
}

/// The message to keep for `msg` and its deadline: a message with an
/// expiration gets [`DEADLINE_HEADER`], so the deadline is stored with it.
fn with_deadline(msg: Message, now: u64) -> (Message, Option<u64>) {
    let Some(ttl) = msg.expiration_ms else {
        return (msg, None);
    };
    let deadline = now.saturating_add(ttl);
    let Ok(mut p) = Properties::decode(msg.raw_properties()) else {
        return (msg, Some(deadline));
    };
    p.headers
        .get_or_insert_with(Default::default)
        .insert(DEADLINE_HEADER, Value::I64(deadline as i64));
    match msg.with_properties(&p.encode()) {
        Ok(m) => (m, Some(deadline)),
        Err(_) => (msg, Some(deadline)),
    }
}

/// Time left before a retained message (as a lookup returned it) expires,
/// from its stored deadline; None when it does not expire. For sending it
/// again later with the interval then left.
pub fn time_left(m: &Message) -> Option<Duration> {
    let d = stored_deadline(m)?;
    Some(Duration::from_millis(d.saturating_sub(now_ms())))
}

/// The deadline a recovered message was stored with.
fn stored_deadline(m: &Message) -> Option<u64> {
    let d = m.header(DEADLINE_HEADER)?.as_i64()?;
    Some(d.max(0) as u64)
}

#[cfg(test)]
mod tests;
