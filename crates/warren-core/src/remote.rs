//! Queues homed on another cluster node. A classic queue lives on the node
//! that declared it (as in RabbitMQ); every other node holds a proxy of it
//! that forwards publishes, subscriptions, acknowledgements and basic.get
//! over the cluster link to the home node. The cluster crate implements
//! [`Link`] and [`Home`]; adapters see an ordinary [`Queue`] either way.
//!
//! A proxy with local consumers subscribes at the home node and grants it
//! credit: the home sends at most [`WINDOW`] messages that no local
//! consumer has taken yet, so a proxy's memory stays bounded and messages
//! are not stranded on a node whose consumers are slow.

use std::sync::{Arc, OnceLock};

use crate::message::Message;
use crate::queue::{Delivery, Queue, QueueStats};
use crate::{Result, SyncState};

/// Messages the home may send a proxy beyond what its consumers took.
pub const WINDOW: u32 = 256;

/// The cluster's message link, installed once on the broker.
pub trait Link: Send + Sync {
    /// This node's name, as queue records name their home.
    fn node(&self) -> &str;
    /// The link to `node`, made on first use (a queue's proxy keeps it).
    fn home(&self, node: &str) -> Arc<dyn Home>;
    /// Bumped whenever a home confirms or refuses forwarded publishes, so
    /// that a connection waiting for remote confirms wakes up.
    fn confirmations(&self) -> tokio::sync::watch::Receiver<u64>;
    /// The confirm progress of the link with this index (see [`Home::index`]).
    fn synced(&self, index: u16) -> SyncState;
}

/// What became of a publish forwarded to its queue's home.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Forwarded {
    /// On its way; confirmed once the link's synced sequence reaches `seq`.
    Sent(RemoteSeq),
    /// Sent, but the link is backed up: the publisher should slow down.
    Backlogged(RemoteSeq),
    /// Not sent (the home is unreachable, or the link over its hard limit).
    Refused,
}

/// A forwarded publish, as its confirm is tracked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RemoteSeq {
    /// The link ([`Home::index`]).
    pub link: u16,
    /// The publish's sequence on that link.
    pub seq: u64,
}

/// How a proxy settles deliveries at the home.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Settle {
    /// Acknowledged.
    Ack,
    /// Back to the queue, redelivered.
    Requeue,
    /// Rejected without requeue (dead-lettered at the home).
    Reject,
}

/// One other node, as the proxies of the queues homed there use it. Calls
/// never block on the network except [`Home::get`] and [`Home::purge`]
/// (synchronous in AMQP); they may be made with a queue's lock held.
pub trait Home: Send + Sync {
    /// The link's index, for confirms ([`Link::synced`]).
    fn index(&self) -> u16;
    /// Forward a publish to `queue`.
    fn publish(&self, queue: &Queue, msg: &Message) -> Forwarded;
    /// Ask for deliveries from `queue`, `credit` to begin with; returns
    /// the subscription id (0: the home is unreachable).
    fn subscribe(&self, queue: &Arc<Queue>, credit: u32) -> u32;
    /// End a subscription (the deliveries out stay to be settled).
    fn unsubscribe(&self, sub: u32);
    /// Let the home send `n` more messages on `sub`.
    fn credit(&self, sub: u32, n: u32);
    /// Settle deliveries from `queue` (by subscription or basic.get), by
    /// their sequence in the home queue.
    fn settle(&self, queue: &Queue, how: Settle, seqs: &[u64]);
    /// basic.get at the home: the message and how many remain.
    fn get(&self, queue: &Queue, no_ack: bool) -> Result<Option<(Delivery, u32)>>;
    /// queue.purge at the home: how many were dropped.
    fn purge(&self, queue: &Queue) -> Result<u32>;
}

/// A proxy's tie to the home of its queue.
pub(crate) struct Remote {
    /// The home node's link.
    pub home: Arc<dyn Home>,
    /// Progress of the subscription, under the queue's lock.
    pub state: parking_lot::Mutex<Subscription>,
    /// The home's counters, as it last sent them.
    pub stats: parking_lot::Mutex<QueueStats>,
}

/// A proxy's subscription at the home.
#[derive(Default)]
pub(crate) struct Subscription {
    /// Its id (0: not subscribed).
    pub id: u32,
    /// Credit granted and not yet used by the home.
    pub credit_out: u32,
}

/// The slot the cluster installs its [`Link`] into, shared by the broker
/// and every vhost.
pub(crate) type LinkSlot = Arc<OnceLock<Arc<dyn Link>>>;

impl crate::Broker {
    /// Install the cluster's message link. Queues recovered with a home
    /// elsewhere become proxies of it (one that still holds messages here,
    /// from before it had a home, stays local and says so).
    pub fn set_link(&self, link: Arc<dyn Link>) {
        if self.link.set(link.clone()).is_err() {
            tracing::warn!("a cluster link was already installed");
            return;
        }
        for v in self.vhosts() {
            for q in v.queues() {
                let Some(h) = q.home_node().filter(|h| *h != link.node()) else {
                    continue;
                };
                if !q.make_proxy(link.home(h)) {
                    tracing::warn!(vhost = %v.name, queue = %q.name, home = h, "queue holds messages on this node; kept here instead of at its home");
                }
            }
        }
    }

    /// The cluster's message link, when clustered.
    pub fn link(&self) -> Option<&Arc<dyn Link>> {
        self.link.get()
    }
}
