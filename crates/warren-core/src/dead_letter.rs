//! Dead-lettering (RabbitMQ's DLX): a queue parks the messages it drops
//! (rejected, expired, over its length limit) under its own lock; a task
//! then republishes them, outside every lock, to the queue's dead-letter
//! exchange with `x-death` headers.

use std::sync::Arc;

use parking_lot::Mutex;

use crate::error::{CoreError, Result};
use crate::message::Message;
use crate::props::Properties;
use crate::queue::Queue;
use crate::tasks::{Spawn, TaskSlot};
use crate::value::{Table, Value};
use crate::vhost::{RouteScratch, VHost};

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

/// A queue's dead letters waiting for republishing, and the one task that
/// drains them. `pending` is taken under `Queue.inner` or alone, never
/// holding anything else.
#[derive(Default)]
pub(crate) struct DeadLetters {
    pending: Mutex<Vec<(Message, DeathReason)>>,
    task: TaskSlot,
}

impl DeadLetters {
    /// Take the pending dead letters (the drain task).
    fn take(&self) -> Vec<(Message, DeathReason)> {
        std::mem::take(&mut *self.pending.lock())
    }

    /// The drain task is done: true when more dead letters came meanwhile
    /// and this caller must drain again.
    fn more(&self) -> bool {
        self.task.release_unless(|| !self.pending.lock().is_empty())
    }
}

impl Queue {
    /// Hand a dropped message to the dead-letter exchange, if the queue has
    /// one. Called under the queue lock, so the message only goes on a list
    /// here; a task republishes it outside every lock.
    pub(crate) fn dead_letter(&self, m: Message, reason: DeathReason) {
        if self.limits.dead_letter.is_none() {
            return;
        }
        self.dead.pending.lock().push((m, reason));
        let started = self.dead.task.spawn(|| {
            let home = self.home.get().cloned()?;
            let name = self.name.clone();
            Some(async move {
                if let Some(v) = home.upgrade() {
                    v.drain_dead_letters(&name);
                }
            })
        });
        if started == Spawn::Unable {
            self.dead.pending.lock().clear();
        }
    }
}

impl VHost {
    /// Republish the dead letters of queue `name` to its dead-letter
    /// exchange (the queue's drain task; runs outside every lock).
    pub(crate) fn drain_dead_letters(&self, name: &str) {
        let Ok(q) = self.queue(name) else { return };
        let Some(dl) = q.limits.dead_letter.clone() else {
            return;
        };
        let mut scratch = RouteScratch::default();
        loop {
            for (m, reason) in q.dead.take() {
                if let Err(e) = self.republish_dead(&q, &dl, m, reason, &mut scratch) {
                    tracing::debug!(queue = %q.name, "dead letter dropped: {e}");
                }
            }
            if !q.dead.more() {
                return;
            }
        }
    }

    /// One dead letter: `x-death` and `x-first-death-*` headers as RabbitMQ
    /// writes them, the per-message TTL removed, then routed through the
    /// DLX. A message that would expire round the same queue forever
    /// (a cycle with no rejection in it) is dropped, as RabbitMQ does.
    fn republish_dead(
        &self,
        q: &Arc<Queue>,
        dl: &DeadLetter,
        m: Message,
        reason: DeathReason,
        scratch: &mut RouteScratch,
    ) -> Result<()> {
        let x = self.exchange(&dl.exchange)?;
        let mut props = Properties::decode(m.raw_properties())
            .map_err(|e| CoreError::Internal(format!("bad properties: {e}")))?;
        let mut headers = props.headers.take().unwrap_or_default();
        let death = Death {
            queue: &q.name,
            reason,
            message: &m,
            original_expiration: props.expiration.as_deref(),
        };
        if !death.record(&mut headers) {
            tracing::warn!(queue = %q.name, "dead-letter cycle without rejection: message dropped");
            return Ok(());
        }
        props.headers = Some(headers);
        props.expiration = None;
        let key = dl.routing_key.as_deref().unwrap_or(m.routing_key());
        let msg = Message::from_parts(&x.name, key, &props.encode(), m.body.clone())
            .map_err(|e| CoreError::Internal(format!("dead letter: {e}")))?;
        self.publish(&x, msg, scratch)?;
        Ok(())
    }
}

/// One death of a message, to be written into its headers.
struct Death<'a> {
    queue: &'a str,
    reason: DeathReason,
    message: &'a Message,
    original_expiration: Option<&'a str>,
}

fn text_field(t: &Table, k: &str) -> Option<String> {
    t.get(k).and_then(|v| v.as_str()).map(String::from)
}

impl Death<'_> {
    /// Update `x-death` (one entry per queue and reason, newest first, with
    /// a count) and set the `x-first-death-*` headers once. False: this is
    /// an automatic cycle (no rejection anywhere) and the message must go.
    fn record(&self, headers: &mut Table) -> bool {
        let mut deaths = match headers.get("x-death") {
            Some(Value::Array(a)) => a.clone(),
            _ => Vec::new(),
        };
        let Some(count) = self.count(&mut deaths) else {
            return false;
        };
        deaths.insert(0, Value::Table(self.entry(count)));
        let (reason, exchange) = (self.reason.as_str(), &*self.message.exchange);
        if headers.get("x-first-death-reason").is_none() {
            headers.insert("x-first-death-reason", Value::str(reason));
            headers.insert("x-first-death-queue", Value::str(self.queue));
            headers.insert("x-first-death-exchange", Value::str(exchange));
        }
        headers.insert("x-death", Value::Array(deaths));
        true
    }

    /// Remove this queue and reason's earlier entry from `deaths` and
    /// return the new count; `None` for an automatic cycle.
    fn count(&self, deaths: &mut Vec<Value>) -> Option<i64> {
        let same = |v: &Value| match v {
            Value::Table(t) => {
                text_field(t, "queue").as_deref() == Some(self.queue)
                    && text_field(t, "reason").as_deref() == Some(self.reason.as_str())
            }
            _ => false,
        };
        let automatic = deaths.iter().all(|d| match d {
            Value::Table(t) => text_field(t, "reason").as_deref() != Some("rejected"),
            _ => true,
        });
        let Some(i) = deaths.iter().position(same) else {
            return Some(1);
        };
        if self.reason != DeathReason::Rejected && automatic {
            return None;
        }
        Some(match deaths.remove(i) {
            Value::Table(t) => t.get("count").and_then(|c| c.as_i64()).unwrap_or(1) + 1,
            _ => 1,
        })
    }

    /// The new `x-death` entry.
    fn entry(&self, count: i64) -> Table {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let m = self.message;
        let mut death = Table::default();
        death.insert("count", Value::I64(count));
        death.insert("reason", Value::str(self.reason.as_str()));
        death.insert("queue", Value::str(self.queue));
        death.insert("time", Value::Timestamp(now));
        death.insert("exchange", Value::str(&m.exchange));
        death.insert(
            "routing-keys",
            Value::Array(vec![Value::str(m.routing_key())]),
        );
        if let Some(exp) = self.original_expiration {
            death.insert("original-expiration", Value::str(exp));
        }
        death
    }
}

#[cfg(test)]
mod tests;
