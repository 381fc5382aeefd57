//! A virtual host: its exchanges, queues and bindings, and the publish entry
//! point every protocol adapter calls.
//!
//! Topology changes take the vhost's `topology` lock; publishing only reads
//! the exchange's own lock and then each queue's lock, never the topology
//! lock once the adapter has cached the exchange.
//!
//! This file holds the vhost itself and its lookups; beside it are
//! `declare` (declare, delete, equivalence), `bindings` (bind, unbind and
//! the removal of bindings to what is deleted), `route` (resolve and
//! deliver: the publish path) and `definitions` (records for the store).
//! Dead-letter republishing is [`crate::dead_letter`]; the `x-expires`
//! timer is the queue's own.

mod bindings;
mod declare;
mod definitions;
mod route;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use parking_lot::RwLock;
use warren_store::{Log, Pages};

pub use self::bindings::BindingInfo;
pub use self::declare::{ExchangeDeclare, QueueDeclare};
pub use self::definitions::{args_from_b64, exchange_declare_of, queue_declare_of};
pub use self::route::{RouteScratch, Routed};
use crate::error::{CoreError, Result};
use crate::exchange::{Exchange, TypeRegistry};
use crate::limits::VhostLimits;
use crate::queue::Queue;
use crate::retained::Retained;
use crate::session_ids::SessionIds;
use crate::value::Table;

/// The vhost's names, under its `topology` lock.
#[derive(Default)]
struct Topology {
    exchanges: HashMap<String, Arc<Exchange>>,
    queues: HashMap<String, Arc<Queue>>,
}

/// A virtual host.
pub struct VHost {
    /// The vhost's name.
    pub name: Arc<str>,
    types: Arc<TypeRegistry>,
    log: Option<Arc<Log>>,
    /// Where queues page out the tail beyond their in-memory window.
    pages: Option<Arc<Pages>>,
    on_change: Option<DefinitionsHook>,
    topology: RwLock<Topology>,
    name_counter: AtomicU64,
    /// Itself, for timers (set by [`VHost::new_shared`]).
    me: Weak<VHost>,
    /// RabbitMQ's vhost limits and the vhost's connection count; shared
    /// with the connections' leases.
    pub limits: Arc<VhostLimits>,
    /// The vhost's retained messages (MQTT), stored through the same log.
    pub retained: Retained,
    /// Packet ids the vhost's persistent MQTT sessions hold across
    /// connections and restarts, stored through the same log.
    pub session_ids: SessionIds,
    /// The cluster's replicator slot, shared with the broker (unset for a
    /// vhost made outside a broker).
    replicator: std::sync::OnceLock<crate::replicate::Slot>,
    /// The cluster's message link slot, shared with the broker.
    link: std::sync::OnceLock<crate::remote::LinkSlot>,
}

/// Called, without locks held, after a durable definition changed.
pub type DefinitionsHook = Arc<dyn Fn() + Send + Sync>;

/// Names with the `amq.` prefix are the server's.
fn reserved(name: &str) -> bool {
    name.starts_with("amq.")
}

impl VHost {
    /// A vhost with the default and `amq.*` exchanges. `log` stores
    /// persistent messages of durable queues; `on_change` persists
    /// definitions.
    pub fn new(
        name: &str,
        types: Arc<TypeRegistry>,
        log: Option<Arc<Log>>,
        pages: Option<Arc<Pages>>,
        on_change: Option<DefinitionsHook>,
    ) -> VHost {
        let v = VHost {
            name: Arc::from(name),
            types,
            retained: Retained::new(name, log.clone()),
            session_ids: SessionIds::new(name, log.clone()),
            log,
            pages,
            on_change,
            topology: RwLock::new(Topology::default()),
            name_counter: AtomicU64::new(0),
            me: Weak::new(),
            limits: Arc::default(),
            replicator: std::sync::OnceLock::new(),
            link: std::sync::OnceLock::new(),
        };
        for (n, t) in [
            ("", "direct"),
            ("amq.direct", "direct"),
            ("amq.fanout", "fanout"),
            ("amq.topic", "topic"),
            ("amq.headers", "headers"),
            ("amq.match", "headers"),
        ] {
            let kind = v.types.get(t).expect("builtin type");
            let x = Exchange::new(n, &kind, true, false, false, Table::default())
                .expect("builtin exchange");
            v.topology
                .write()
                .exchanges
                .insert(n.to_string(), Arc::new(x));
        }
        v
    }

    /// Share the broker's replicator slot (see [`crate::replicate`]).
    pub(crate) fn set_replicator_slot(&self, slot: crate::replicate::Slot) {
        let _ = self.replicator.set(slot);
    }

    /// Share the broker's link slot (see [`crate::remote`]).
    pub(crate) fn set_link_slot(&self, slot: crate::remote::LinkSlot) {
        let _ = self.link.set(slot);
    }

    /// The cluster's message link, when clustered.
    pub fn cluster_link(&self) -> Option<&Arc<dyn crate::remote::Link>> {
        self.link.get()?.get()
    }

    /// Where to propose a durable definitions change; `None` acts locally.
    pub(crate) fn proposer(&self) -> Option<&Arc<dyn crate::replicate::Replicate>> {
        crate::replicate::proposer(self.replicator.get()?)
    }

    /// [`VHost::new`] behind an `Arc` that knows itself (queue timers need it).
    pub fn new_shared(
        name: &str,
        types: Arc<TypeRegistry>,
        log: Option<Arc<Log>>,
        pages: Option<Arc<Pages>>,
        on_change: Option<DefinitionsHook>,
    ) -> Arc<VHost> {
        Arc::new_cyclic(|me| {
            let mut v = VHost::new(name, types, log, pages, on_change);
            v.me = me.clone();
            v
        })
    }

    fn changed(&self) {
        if let Some(f) = &self.on_change {
            f();
        }
    }

    /// False when the store failed to write (e.g. disk full).
    pub fn store_healthy(&self) -> bool {
        self.log.as_ref().is_none_or(|l| l.healthy())
    }

    fn no_exchange(&self, name: &str) -> CoreError {
        CoreError::NotFound(format!("no exchange '{name}' in vhost '{}'", self.name))
    }

    fn no_queue(&self, name: &str) -> CoreError {
        CoreError::NotFound(format!("no queue '{name}' in vhost '{}'", self.name))
    }

    /// Look up an exchange.
    pub fn exchange(&self, name: &str) -> Result<Arc<Exchange>> {
        self.topology
            .read()
            .exchanges
            .get(name)
            .cloned()
            .ok_or_else(|| self.no_exchange(name))
    }

    /// Look up a queue.
    pub fn queue(&self, name: &str) -> Result<Arc<Queue>> {
        self.topology
            .read()
            .queues
            .get(name)
            .cloned()
            .ok_or_else(|| self.no_queue(name))
    }

    /// All exchanges, sorted by name.
    pub fn exchanges(&self) -> Vec<Arc<Exchange>> {
        let mut v: Vec<_> = self.topology.read().exchanges.values().cloned().collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// All listed queues, sorted by name.
    pub fn queues(&self) -> Vec<Arc<Queue>> {
        let mut v: Vec<_> = self
            .topology
            .read()
            .queues
            .values()
            .filter(|q| !q.hidden)
            .cloned()
            .collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    fn is_predeclared(&self, name: &str) -> bool {
        matches!(
            name,
            "amq.direct" | "amq.fanout" | "amq.topic" | "amq.headers" | "amq.match"
        )
    }

    /// A server-generated name, as RabbitMQ's `amq.gen-` names.
    pub fn generate_name(&self, prefix: &str) -> String {
        use std::hash::{BuildHasher, Hasher};
        let n = self.name_counter.fetch_add(1, Ordering::Relaxed);
        let mut out = String::from(prefix);
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        for round in 0..2u64 {
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u64(n);
            h.write_u64(round);
            let mut v = h.finish();
            for _ in 0..11 {
                out.push(ALPHABET[(v & 63) as usize] as char);
                v >>= 6;
            }
        }
        out
    }

    /// A connection closed: its exclusive queues go with it.
    pub fn connection_closed(&self, conn: u64) {
        let owned: Vec<Arc<Queue>> = self
            .topology
            .read()
            .queues
            .values()
            .filter(|q| q.owner == Some(conn))
            .cloned()
            .collect();
        for q in owned {
            self.remove_queue(&q);
        }
    }
}
