//! Routing: from an exchange to the set of queues a message reaches
//! (exchange-to-exchange bindings and alternate exchanges followed, cycles
//! cut), then one enqueue per queue. The publish hot path: no allocation,
//! no lock but each exchange's read lock and each queue's own.

use std::sync::Arc;

use smallvec::SmallVec;
use warren_store::QueueKey;

use super::VHost;
use crate::error::Result;
use crate::exchange::{BindingId, Destination, Exchange};
use crate::message::Message;
use crate::queue::{Enqueued, Queue};
use crate::remote::{Forwarded, RemoteSeq};

/// Scratch space for routing, owned by a channel so publishing never allocates.
#[derive(Default)]
pub struct RouteScratch {
    ids: Vec<BindingId>,
    dests: Vec<Destination>,
    seen: Vec<*const Exchange>,
    /// The queues the last `resolve` found, without duplicates.
    pub queues: Vec<Arc<Queue>>,
    /// False when the result depended on exchange-to-exchange bindings and
    /// so may not be cached under the source exchange's generation alone.
    pub cacheable: bool,
}

// SAFETY: the raw pointers in `seen` are only compared, never dereferenced.
unsafe impl Send for RouteScratch {}

/// What a publish did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Routed {
    /// Queues that accepted the message.
    pub queues: usize,
    /// A queue refused it (`x-overflow: reject-publish`): confirm with a nack.
    pub rejected: bool,
    /// A queue's consumers are far behind: the publisher should pause.
    pub backlogged: bool,
    /// The message went to the store; confirm once this sequence is synced.
    pub sync_seq: Option<u64>,
    /// Forwarded to queues homed on other nodes: confirm once each link's
    /// home has (see [`crate::remote`]). Inline for up to two homes.
    pub remote: SmallVec<[RemoteSeq; 2]>,
    /// Not forwarded to a queue's home node: unreachable, or the link over
    /// its limit (the publish is also `rejected`, so it is nacked).
    pub unreachable: bool,
}

impl Routed {
    /// Account for a local queue's answer.
    fn tally(&mut self, e: Enqueued) {
        match e {
            Enqueued::Accepted => self.queues += 1,
            Enqueued::Backlogged => {
                self.queues += 1;
                self.backlogged = true;
            }
            Enqueued::Rejected => self.rejected = true,
        }
    }

    /// Account for a publish forwarded to a queue's home.
    fn forwarded(&mut self, f: Forwarded) {
        match f {
            Forwarded::Sent(s) => {
                self.queues += 1;
                self.wait_remote(s);
            }
            Forwarded::Backlogged(s) => {
                self.queues += 1;
                self.backlogged = true;
                self.wait_remote(s);
            }
            Forwarded::Refused => {
                self.rejected = true;
                self.unreachable = true;
            }
        }
    }

    /// Wait for `s` too (one entry per link: later sequences cover earlier).
    fn wait_remote(&mut self, s: RemoteSeq) {
        match self.remote.iter_mut().find(|r| r.link == s.link) {
            Some(r) => r.seq = r.seq.max(s.seq),
            None => self.remote.push(s),
        }
    }
}

impl VHost {
    /// Find the queues a message reaches from `exchange`, following
    /// exchange-to-exchange bindings (cycles are cut). Fills `scratch.queues`.
    pub fn resolve(
        &self,
        exchange: &Arc<Exchange>,
        msg: &Message,
        scratch: &mut RouteScratch,
    ) -> Result<()> {
        scratch.queues.clear();
        scratch.dests.clear();
        scratch.seen.clear();
        scratch.cacheable = true;
        scratch.seen.push(Arc::as_ptr(exchange));
        exchange.route_into(msg, &mut scratch.ids, &mut scratch.dests)?;
        // The alternate exchange being tried (none at first: no Arc clone
        // on the common path).
        let mut hop: Option<Arc<Exchange>> = None;
        loop {
            while let Some(d) = scratch.dests.pop() {
                match d {
                    Destination::Queue(q) => {
                        if !scratch.queues.iter().any(|x| Arc::ptr_eq(x, &q)) {
                            scratch.queues.push(q);
                        }
                    }
                    Destination::Exchange(x) => {
                        scratch.cacheable = false;
                        let p = Arc::as_ptr(&x);
                        if !scratch.seen.contains(&p) {
                            scratch.seen.push(p);
                            x.route_into(msg, &mut scratch.ids, &mut scratch.dests)?;
                        }
                    }
                }
            }
            // Unroutable: RabbitMQ's alternate exchange takes it (and its
            // own alternate, in turn). Its bindings are not covered by the
            // channel's route cache, so such results are not cached.
            if !scratch.queues.is_empty() {
                return Ok(());
            }
            let current = hop.as_ref().unwrap_or(exchange);
            let Some(ae) = current
                .args
                .get("alternate-exchange")
                .and_then(|v| v.as_str())
            else {
                return Ok(());
            };
            scratch.cacheable = false;
            let Ok(next) = self.exchange(ae) else {
                tracing::debug!(vhost = %self.name, exchange = %current.name, "alternate exchange '{ae}' does not exist");
                return Ok(());
            };
            let p = Arc::as_ptr(&next);
            if scratch.seen.contains(&p) {
                return Ok(());
            }
            scratch.seen.push(p);
            next.route_into(msg, &mut scratch.ids, &mut scratch.dests)?;
            hop = Some(next);
        }
    }

    /// Hand one message to each queue; the body is shared, never copied.
    /// A persistent message bound for durable queues is appended to the
    /// store first, so its removal can never reach the log before it.
    pub fn deliver(&self, queues: &[Arc<Queue>], mut msg: Message) -> Routed {
        let mut r = Routed::default();
        if msg.persistent {
            if let Some(log) = &self.log {
                let keys: Vec<QueueKey> = queues
                    .iter()
                    .filter(|q| !q.is_proxy())
                    .filter_map(|q| q.store().map(|(_, k)| k.clone()))
                    .collect();
                if !keys.is_empty() {
                    let id = log.next_id();
                    msg.store_id = id;
                    let (meta, key_len) = msg.meta();
                    r.sync_seq =
                        Some(log.enqueue(id, &keys, &msg.exchange, meta, key_len, &msg.body));
                }
            }
        }
        let Some((last, rest)) = queues.split_last() else {
            return r;
        };
        for q in rest {
            if q.is_proxy() {
                r.forwarded(q.forward(&msg));
            } else {
                r.tally(q.enqueue(msg.clone()));
            }
        }
        if last.is_proxy() {
            r.forwarded(last.forward(&msg));
        } else {
            r.tally(last.enqueue(msg));
        }
        r
    }

    /// Route and enqueue in one call, for callers without a route cache.
    pub fn publish(
        &self,
        exchange: &Arc<Exchange>,
        msg: Message,
        scratch: &mut RouteScratch,
    ) -> Result<Routed> {
        self.resolve(exchange, &msg, scratch)?;
        Ok(self.deliver(&scratch.queues, msg))
    }
}
