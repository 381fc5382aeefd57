//! Live connections and channels, for the management API and metrics.
//! Connections register once they are authenticated and deregister when
//! they end; the registry lock is taken only then and by listings, never
//! per message. Each connection counts its own traffic in [`ConnStats`]
//! (uncontended atomics); totals add the counts of ended connections.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use tokio::sync::Notify;

/// Message counters of one connection (or, summed, of the broker).
#[derive(Debug, Default)]
pub struct ConnStats {
    /// Messages received from the client.
    pub published: AtomicU64,
    /// Messages sent to the client (deliveries and gets).
    pub delivered: AtomicU64,
    /// Acknowledgements received.
    pub acked: AtomicU64,
    /// Publisher confirms (and MQTT PUBACK/PUBREC) sent.
    pub confirmed: AtomicU64,
    /// When the connection last read from its socket, on its adapter's
    /// keep-alive clock (MQTT's sweeper reads it; milliseconds).
    pub last_read_ms: AtomicU64,
}

/// A plain copy of [`ConnStats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    /// Messages received from clients.
    pub published: u64,
    /// Messages sent to clients.
    pub delivered: u64,
    /// Acknowledgements received.
    pub acked: u64,
    /// Confirms sent.
    pub confirmed: u64,
}

impl ConnStats {
    /// Count one more (Relaxed: these are statistics).
    #[inline]
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Current values.
    pub fn totals(&self) -> Totals {
        Totals {
            published: self.published.load(Ordering::Relaxed),
            delivered: self.delivered.load(Ordering::Relaxed),
            acked: self.acked.load(Ordering::Relaxed),
            confirmed: self.confirmed.load(Ordering::Relaxed),
        }
    }

    fn absorb(&self, t: Totals) {
        Self::add(&self.published, t.published);
        Self::add(&self.delivered, t.delivered);
        Self::add(&self.acked, t.acked);
        Self::add(&self.confirmed, t.confirmed);
    }
}

impl std::ops::AddAssign for Totals {
    fn add_assign(&mut self, o: Totals) {
        self.published += o.published;
        self.delivered += o.delivered;
        self.acked += o.acked;
        self.confirmed += o.confirmed;
    }
}

/// What a channel reports about itself.
#[derive(Clone, Debug, Default)]
pub struct ChannelSnapshot {
    /// Channel number.
    pub number: u16,
    /// Broker-unique channel id (consumers name their channel by it).
    pub uid: u64,
    /// Per-consumer prefetch for new consumers.
    pub prefetch: u32,
    /// Channel-wide prefetch.
    pub global_prefetch: u32,
    /// Delivered, not yet acknowledged.
    pub unacked: usize,
    /// Consumers on the channel.
    pub consumers: usize,
    /// Confirm mode.
    pub confirm: bool,
    /// Transactional.
    pub transactional: bool,
}

/// Implemented by protocol channels so listings can read their state.
pub trait ChannelView: Send + Sync {
    /// The channel's current state.
    fn snapshot(&self) -> ChannelSnapshot;
}

/// One live client connection.
pub struct ConnectionInfo {
    /// Broker-unique id.
    pub id: u64,
    /// "AMQP 0-9-1", "MQTT 3.1.1", "MQTT 5.0", "Web MQTT 3.1.1" or "Web MQTT 5.0".
    pub protocol: &'static str,
    /// Client address.
    pub peer: SocketAddr,
    /// Our address.
    pub local: SocketAddr,
    /// Authenticated user (shared with the connection's guard).
    pub user: Arc<str>,
    /// Vhost (shared with the connection's guard).
    pub vhost: Arc<str>,
    /// AMQP connection_name / product, or the MQTT client id.
    pub client: String,
    /// Milliseconds since the epoch.
    pub connected_at: u64,
    /// Traffic counters.
    pub stats: Arc<ConnStats>,
    /// Over TLS (RabbitMQ's `ssl` in connection listings).
    pub tls: bool,
    channels: Mutex<BTreeMap<u16, Arc<dyn ChannelView>>>,
    close_requested: AtomicBool,
    close: Notify,
    close_reason: Mutex<String>,
}

impl ConnectionInfo {
    /// Describe a connection about to be registered.
    pub fn new(
        id: u64,
        protocol: &'static str,
        (peer, local): (SocketAddr, SocketAddr),
        user: Arc<str>,
        vhost: Arc<str>,
        client: String,
    ) -> ConnectionInfo {
        ConnectionInfo {
            id,
            protocol,
            peer,
            local,
            user,
            vhost,
            client,
            connected_at: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            stats: Arc::default(),
            tls: false,
            channels: Mutex::new(BTreeMap::new()),
            close_requested: AtomicBool::new(false),
            close: Notify::new(),
            close_reason: Mutex::new(String::new()),
        }
    }

    /// Mark the connection as one over TLS.
    pub fn over_tls(mut self, tls: bool) -> ConnectionInfo {
        self.tls = tls;
        self
    }

    /// RabbitMQ-style name, "peer -> local" (made on demand: idle
    /// connections should not carry it).
    pub fn name(&self) -> String {
        format!("{} -> {}", self.peer, self.local)
    }

    /// A channel opened.
    pub fn add_channel(&self, number: u16, view: Arc<dyn ChannelView>) {
        self.channels.lock().insert(number, view);
    }

    /// A channel closed.
    pub fn remove_channel(&self, number: u16) {
        self.channels.lock().remove(&number);
    }

    /// Snapshots of the open channels, by number.
    pub fn channels(&self) -> Vec<ChannelSnapshot> {
        let views: Vec<_> = self.channels.lock().values().cloned().collect();
        views.iter().map(|v| v.snapshot()).collect()
    }

    /// Ask the connection to close (operator request, vhost deleted).
    pub fn request_close(&self, reason: &str) {
        *self.close_reason.lock() = reason.to_string();
        self.close_requested.store(true, Ordering::Release);
        self.close.notify_one();
    }

    /// A close was requested.
    pub fn close_was_requested(&self) -> bool {
        self.close_requested.load(Ordering::Acquire)
    }

    /// Resolves once a close was requested; returns the reason.
    pub async fn close_requested(&self) -> String {
        loop {
            let notified = self.close.notified();
            if self.close_requested.load(Ordering::Acquire) {
                return self.close_reason.lock().clone();
            }
            notified.await;
        }
    }
}

/// Every live connection, plus the counters of those that ended.
#[derive(Default)]
pub struct Registry {
    conns: Mutex<BTreeMap<u64, Arc<ConnectionInfo>>>,
    retired: ConnStats,
}

/// Deregisters its connection when dropped.
pub struct Registration {
    registry: Arc<Registry>,
    /// The registered connection.
    pub info: Arc<ConnectionInfo>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.registry.conns.lock().remove(&self.info.id);
        self.registry.retired.absorb(self.info.stats.totals());
    }
}

impl Registry {
    /// Register a connection until the returned guard drops.
    pub fn register(self: &Arc<Self>, info: ConnectionInfo) -> Registration {
        let info = Arc::new(info);
        self.conns.lock().insert(info.id, info.clone());
        Registration {
            registry: self.clone(),
            info,
        }
    }

    /// Live connections, oldest first.
    pub fn list(&self) -> Vec<Arc<ConnectionInfo>> {
        self.conns.lock().values().cloned().collect()
    }

    /// The connection with this RabbitMQ-style name.
    pub fn by_name(&self, name: &str) -> Option<Arc<ConnectionInfo>> {
        self.conns
            .lock()
            .values()
            .find(|c| c.name() == name)
            .cloned()
    }

    /// Counters over the broker's lifetime.
    pub fn totals(&self) -> Totals {
        let mut t = self.retired.totals();
        for c in self.list() {
            t += c.stats.totals();
        }
        t
    }
}
