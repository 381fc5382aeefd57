//! The message link between nodes: how a queue's proxy on one node reaches
//! the queue on its home node (see `warren_core::remote`). Each pair of
//! nodes has two connections, one dialed by each side for what its own
//! proxies send; both prove the cluster secret first, as the Raft
//! connections do, then speak the binary frames of [`frame`].
//!
//! Batching and flow: every producer appends frames to the connection's
//! outbox and one writer task sends them, many per syscall. Deliveries are
//! bounded by the credit the proxy grants; publishes by the outbox limits
//! (slowed beyond 4 MiB buffered, refused beyond 64 MiB).

pub mod frame;
mod inbound;
mod outbound;

use std::collections::HashMap;
use std::sync::{Arc, Weak};

use parking_lot::RwLock;
use tokio::net::TcpStream;
use warren_core::queue::Queue;
use warren_core::remote::{Home, Link};
use warren_core::{Broker, SyncState};

use self::outbound::Outbound;
use crate::node::Cluster;

/// This node's links to the others.
pub struct Links {
    node: Arc<str>,
    homes: RwLock<HashMap<String, Arc<Outbound>>>,
    by_index: RwLock<Vec<Arc<Outbound>>>,
    confirmations: tokio::sync::watch::Sender<u64>,
    cluster: Weak<Cluster>,
    broker: Weak<Broker>,
    runtime: tokio::runtime::Handle,
    me: Weak<Links>,
}

impl Links {
    /// The links of `cluster`'s node; connections are made on first use.
    pub(crate) fn new(cluster: &Arc<Cluster>, broker: &Arc<Broker>) -> Arc<Links> {
        Arc::new_cyclic(|me| Links {
            node: cluster.member().name.as_str().into(),
            homes: RwLock::new(HashMap::new()),
            by_index: RwLock::new(Vec::new()),
            confirmations: tokio::sync::watch::channel(0).0,
            cluster: Arc::downgrade(cluster),
            broker: Arc::downgrade(broker),
            runtime: tokio::runtime::Handle::current(),
            me: me.clone(),
        })
    }

    /// Serve a link another node dialed (after the handshake).
    pub(crate) fn accept(&self, s: TcpStream, from: String) {
        if let Some(b) = self.broker.upgrade() {
            self.runtime
                .spawn(inbound::serve(s, from, b, self.node.clone()));
        }
    }

    /// Dial every other named member, so the first publish finds a link up.
    pub(crate) fn connect_all(&self, names: Vec<String>) {
        for n in names {
            if *n != *self.node && !n.is_empty() && !self.homes.read().contains_key(&n) {
                self.home(&n);
            }
        }
    }

    /// Wake connections waiting for remote confirms.
    fn confirmed(&self) {
        self.confirmations.send_modify(|n| *n = n.wrapping_add(1));
    }

    fn addr_of(&self, node: &str) -> Option<String> {
        self.cluster.upgrade()?.addr_of(node)
    }

    fn secret(&self) -> Vec<u8> {
        self.cluster
            .upgrade()
            .map(|c| c.secret().to_vec())
            .unwrap_or_default()
    }

    fn node_name(&self) -> &str {
        &self.node
    }

    fn queue(&self, vhost: &str, name: &str) -> Option<Arc<Queue>> {
        self.broker.upgrade()?.vhost(vhost)?.queue(name).ok()
    }
}

impl Link for Links {
    fn node(&self) -> &str {
        &self.node
    }

    fn home(&self, node: &str) -> Arc<dyn Home> {
        if let Some(o) = self.homes.read().get(node) {
            return o.clone();
        }
        let mut homes = self.homes.write();
        if let Some(o) = homes.get(node) {
            return o.clone();
        }
        let mut all = self.by_index.write();
        let o = Arc::new(Outbound::new(node, all.len() as u16, self.me.clone()));
        all.push(o.clone());
        homes.insert(node.to_string(), o.clone());
        self.runtime.spawn(o.clone().run());
        o
    }

    fn confirmations(&self) -> tokio::sync::watch::Receiver<u64> {
        self.confirmations.subscribe()
    }

    fn synced(&self, index: u16) -> SyncState {
        self.by_index
            .read()
            .get(index as usize)
            .map(|o| o.sync_state())
            .unwrap_or_default()
    }
}
