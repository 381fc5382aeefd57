//! The routing core of Warren: vhosts, exchanges, queues, bindings, messages,
//! consumers and acknowledgements. It knows no protocol and no socket; the
//! AMQP and MQTT adapters drive it through [`VHost`] and the [`Consumer`] trait.

#![deny(missing_docs)]

pub mod auth;
pub mod error;
pub mod exchange;
pub mod message;
pub mod props;
pub mod queue;
pub mod value;
pub mod vhost;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::RwLock;

pub use error::{CoreError, DecodeError, Result};
pub use exchange::{Exchange, ExchangeRouter, ExchangeType, TypeRegistry};
pub use message::Message;
pub use queue::{Consumer, ConsumerSpec, Delivery, Queue};
pub use value::{Table, Value};
pub use vhost::{RouteScratch, Routed, VHost};

/// The broker: every vhost, the users and the exchange types.
pub struct Broker {
    vhosts: RwLock<HashMap<String, Arc<VHost>>>,
    /// The user database.
    pub users: auth::Users,
    /// Exchange types, built-in and from plugins.
    pub types: Arc<TypeRegistry>,
    next_id: AtomicU64,
}

impl Default for Broker {
    fn default() -> Self {
        Self::new()
    }
}

impl Broker {
    /// A broker with the built-in exchange types and the default vhost `/`.
    pub fn new() -> Broker {
        let b = Broker {
            vhosts: RwLock::new(HashMap::new()),
            users: auth::Users::default(),
            types: Arc::new(TypeRegistry::with_builtins()),
            next_id: AtomicU64::new(1),
        };
        b.add_vhost("/");
        b
    }

    /// Create a vhost if missing and return it.
    pub fn add_vhost(&self, name: &str) -> Arc<VHost> {
        self.vhosts
            .write()
            .entry(name.to_string())
            .or_insert_with(|| Arc::new(VHost::new(name, self.types.clone())))
            .clone()
    }

    /// Look a vhost up.
    pub fn vhost(&self, name: &str) -> Option<Arc<VHost>> {
        self.vhosts.read().get(name).cloned()
    }

    /// All vhosts, sorted by name.
    pub fn vhosts(&self) -> Vec<Arc<VHost>> {
        let mut v: Vec<_> = self.vhosts.read().values().cloned().collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// A process-unique id for connections and channels.
    pub fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }
}
