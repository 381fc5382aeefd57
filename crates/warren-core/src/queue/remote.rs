//! A queue's proxy on a node other than its home (see [`crate::remote`]):
//! publishes and settlements go to the home, deliveries from it wait in the
//! proxy's ready list for local consumers, within the credit it granted.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::{Delivery, Inner, Queue, QueueStats};
use crate::message::Message;
use crate::remote::{Forwarded, Home, Remote, Settle, Subscription, WINDOW};
use crate::Result;

impl Delivery {
    /// A delivery that came from the queue's home, by its sequence there.
    pub fn from_home(message: Message, seq: u64, redelivered: bool) -> Delivery {
        Delivery {
            message,
            seq,
            redelivered,
            expires_at: None,
        }
    }
}

impl Queue {
    /// The node this queue lives on, when it was declared in a cluster.
    pub fn home_node(&self) -> Option<&str> {
        self.home_node.as_deref()
    }

    /// Record the node the queue lives on (from its definition).
    pub fn with_home(mut self, node: Option<&str>) -> Self {
        self.home_node = node.map(Arc::from);
        self
    }

    /// True when the queue lives on another node and this is its proxy.
    pub fn is_proxy(&self) -> bool {
        self.remote.get().is_some()
    }

    /// Turn this queue into a proxy of its home. Refused (false) for a
    /// queue that holds messages here (recovered from before it had a home).
    pub(crate) fn make_proxy(&self, home: Arc<dyn Home>) -> bool {
        if !self.lock().ready.is_empty() {
            return false;
        }
        self.remote
            .set(Remote {
                home,
                state: parking_lot::Mutex::new(Subscription::default()),
                stats: parking_lot::Mutex::new(QueueStats::default()),
            })
            .is_ok()
    }

    /// Forward a publish to the home.
    pub(crate) fn forward(&self, msg: &Message) -> Forwarded {
        match self.remote.get() {
            Some(r) => r.home.publish(self, msg),
            None => Forwarded::Refused,
        }
    }

    /// A delivery from the home arrived for this proxy's subscription.
    pub fn remote_delivered(self: &Arc<Self>, d: Delivery) {
        let mut inner = self.lock();
        if let Some(r) = self.remote.get() {
            let mut s = r.state.lock();
            s.credit_out = s.credit_out.saturating_sub(1);
        }
        inner.stats.published += 1;
        inner.ready.push_back(d);
        self.dispatch_locked(&mut inner);
    }

    /// The home's counters arrived.
    pub fn remote_stats(&self, stats: QueueStats) {
        if let Some(r) = self.remote.get() {
            *r.stats.lock() = stats;
        }
    }

    /// The link to the home dropped: the home requeues what it sent, so
    /// what waits here is dropped and the subscription is over.
    pub fn remote_lost(&self) {
        let mut inner = self.lock();
        if let Some(r) = self.remote.get() {
            *r.state.lock() = Subscription::default();
            inner.ready.drain(|_| {});
        }
    }

    /// The link is back: subscribe again if local consumers wait.
    pub fn remote_resume(self: &Arc<Self>) {
        let mut inner = self.lock();
        if !inner.consumers.is_empty() {
            self.subscribe_locked(&inner);
            self.dispatch_locked(&mut inner);
        }
    }

    /// Subscribe at the home unless already subscribed.
    pub(super) fn subscribe_locked(self: &Arc<Self>, _inner: &Inner) {
        let Some(r) = self.remote.get() else { return };
        let mut s = r.state.lock();
        if s.id == 0 {
            s.id = r.home.subscribe(self, WINDOW);
            s.credit_out = if s.id == 0 { 0 } else { WINDOW };
        }
    }

    /// The last local consumer left: end the subscription and hand back
    /// what the home sent that nobody took.
    pub(super) fn unsubscribe_locked(&self, inner: &mut Inner) {
        let Some(r) = self.remote.get() else { return };
        let mut s = r.state.lock();
        if s.id == 0 {
            return;
        }
        r.home.unsubscribe(s.id);
        let mut back = Vec::new();
        inner.ready.drain(|d| back.push(d.seq));
        if !back.is_empty() {
            r.home.settle(self, Settle::Requeue, &back);
        }
        *s = Subscription::default();
    }

    /// After a dispatch: grant the home credit for what consumers took, in
    /// batches of at least half the window.
    pub(super) fn top_up(&self, inner: &Inner) {
        let Some(r) = self.remote.get() else { return };
        let mut s = r.state.lock();
        if s.id == 0 {
            return;
        }
        let held = inner.ready.len() as u32 + s.credit_out;
        if held <= WINDOW / 2 {
            let n = WINDOW - held;
            s.credit_out += n;
            r.home.credit(s.id, n);
        }
    }

    /// Settle deliveries at the home; false when this is not a proxy.
    pub(super) fn settle_remote<'a>(
        &self,
        how: Settle,
        deliveries: impl IntoIterator<Item = &'a Delivery>,
    ) -> bool {
        let Some(r) = self.remote.get() else {
            return false;
        };
        let seqs: Vec<u64> = deliveries.into_iter().map(|d| d.seq).collect();
        self.unacked.fetch_sub(seqs.len(), Ordering::Relaxed);
        if how == Settle::Ack {
            self.acked.fetch_add(seqs.len() as u64, Ordering::Relaxed);
        }
        r.home.settle(self, how, &seqs);
        true
    }

    /// A delivery went to a local no-ack consumer: acknowledged at the home.
    pub(super) fn settled_on_handover(&self, seq: u64) {
        if let Some(r) = self.remote.get() {
            r.home.settle(self, Settle::Ack, &[seq]);
        }
    }

    /// basic.get through the home, when this is a proxy.
    pub(super) fn get_remote(&self, no_ack: bool) -> Option<Result<Option<(Delivery, u32)>>> {
        let r = self.remote.get()?;
        let got = r.home.get(self, no_ack);
        if let Ok(Some(_)) = &got {
            if !no_ack {
                self.unacked.fetch_add(1, Ordering::Relaxed);
            }
        }
        Some(got)
    }

    /// The home's counters, with this node's own consumers, for a proxy.
    pub(super) fn stats_remote(&self) -> Option<QueueStats> {
        self.remote.get().map(|r| *r.stats.lock())
    }
}
