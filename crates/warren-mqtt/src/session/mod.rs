//! One MQTT connection over the routing core, following RabbitMQ's MQTT
//! plugin conventions: a PUBLISH goes to `amq.topic` (configurable) with the
//! topic as routing key (`/` and `.` swapped, so the mapping is reversible);
//! each session owns a queue `mqtt-subscription-<client id>` whose bindings
//! are its subscriptions (`+` -> `*`, `#` -> `#`). QoS 1/2 publishes are
//! persistent messages; a session with clean_session=false keeps a durable
//! queue, so its subscriptions and queued messages survive disconnects and
//! restarts.
//!
//! `connect.rs` is the CONNECT handshake (`login.rs` its credentials), `read_loop.rs` the session loop,
//! `dispatch.rs` hands each packet to `publish.rs` or `subscribe.rs`,
//! `consumer.rs` writes deliveries back out, and `retained.rs` sends the
//! retained messages of new subscriptions.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::watch;
use warren_core::alarm::Alarms;
use warren_core::auth::Guard;
use warren_core::limits::ConnectionLease;
use warren_core::queue::ConsumerSpec;
use warren_core::registry::Registration;
use warren_core::vhost::QueueDeclare;
use warren_core::{Broker, Queue, SyncState, Table, VHost, Value};
use warren_net::outbox::Outbox;
use warren_net::transport::Transport;

use crate::keepalive::{KeepAlive, Watch};
use crate::takeover::Takeover;
use crate::{will, Config};

mod aliases;
mod connect;
mod consumer;
mod dispatch;
mod login;
mod pending;
mod publish;
mod read_loop;
mod retained;
mod setup;
mod subscribe;
mod subscriptions;

use consumer::MqttConsumer;

pub use crate::topic::{filter_to_key, matches, swap, valid_filter, valid_topic};

/// State shared by all MQTT connections of a listener.
#[derive(Default)]
pub struct Shared {
    /// The live connection and latest epoch of every client id.
    pub(crate) takeover: Takeover,
    /// Retained deliveries to send again when a session resumes.
    pending: pending::PendingResends,
    /// Keep-alive of every connection, from one sweeper.
    pub(crate) keepalive: KeepAlive,
    /// The outbox keep-alive setting of every MQTT connection (none).
    no_heartbeat: Arc<Mutex<Option<Duration>>>,
    /// The broker's memory and disk alarms: publishers are not read while one is on.
    alarms: Arc<Alarms>,
    /// The store's sync progress, cloned for each publishing connection.
    sync: Option<watch::Receiver<SyncState>>,
    /// The consumer tag of every session (one allocation, not one each).
    consumer_tag: Arc<str>,
}

impl Shared {
    /// State for one listener, watching the broker's alarms and (for the
    /// acknowledgements of persistent messages) its store's syncs.
    pub fn new(alarms: Arc<Alarms>, sync: Option<watch::Receiver<SyncState>>) -> Self {
        Shared {
            alarms,
            sync,
            consumer_tag: Arc::from("mqtt"),
            ..Default::default()
        }
    }
}

/// Why a connection ended; wills are published unless it was clean.
#[derive(Debug)]
enum End {
    Clean,
    Abnormal(String),
}

/// Per-connection state that many connections never need.
#[derive(Default)]
struct Extras {
    /// Filters subscribed with no-local.
    no_local: Vec<String>,
    aliases: HashMap<u16, String>,
    qos2_seen: HashSet<u16>,
    /// `$share/group/filter` -> the group's shared queue this session consumes.
    shared_subs: HashMap<String, Arc<Queue>>,
}

struct Conn {
    cfg: Arc<Config>,
    shared: Arc<Shared>,
    out: Arc<Outbox>,
    level: u8,
    vhost: Arc<VHost>,
    queue: Option<Arc<Queue>>,
    /// The session outlives the connection (durable queue).
    persistent: bool,
    /// Subscription and alias state, allocated at first use: devices that
    /// only publish (or sit idle) do without.
    extras: Option<Box<Extras>>,
    /// How long the session lives after disconnect (None: forever).
    expiry: Option<Duration>,
    consumer: Arc<MqttConsumer>,
    /// What publishing needs, made at the first PUBLISH.
    publisher: Option<Box<publish::Publisher>>,
    /// A publish reached a queue whose consumers are far behind: pause
    /// reading briefly (the same flow control as AMQP publishers get).
    backlogged: bool,
    guard: Guard,
    registration: Registration,
    /// The session's place in the node, vhost and user connection counts
    /// (RabbitMQ counts MQTT connections too), until cleanup.
    lease: Option<ConnectionLease>,
    /// Closes the connection when its OAuth 2 token expires (token logins).
    expiry_timer: Option<warren_core::auth::login::ExpiryTimer>,
    /// Set by the first PUBLISH: alarms block only publishers.
    published: bool,
    /// The connection's place in the keep-alive sweeper, if it has one.
    keepalive: Option<Watch>,
    /// The will from CONNECT (kept here, not in the task's state).
    will: Option<Box<crate::codec::Will>>,
    /// This connection's takeover epoch.
    epoch: u64,
}

/// What a session queue's name starts with; the client id follows.
const SESSION_QUEUE_PREFIX: &str = "mqtt-subscription-";

/// The session queue of a client id.
fn session_queue_name(client_id: &str) -> String {
    format!("{SESSION_QUEUE_PREFIX}{client_id}")
}

/// Serve one MQTT connection, over TCP or a WebSocket (or any [`Transport`]).
///
/// Not an `async fn`: its arguments would stay in the task's state for the
/// connection's life. They go into the boxed handshake, freed once it is
/// done, and the task keeps only what the session loop needs (this matters
/// at 10,000s of idle devices). Server shutdown reaches the session as a
/// close request (see `Takeover::close_all`), so `shutdown` is not kept.
pub fn handle<T: Transport>(
    transport: T,
    peer: SocketAddr,
    broker: Arc<Broker>,
    cfg: Arc<Config>,
    shared: Arc<Shared>,
    shutdown: watch::Receiver<bool>,
) -> impl std::future::Future<Output = ()> + Send {
    drop(shutdown);
    let handshaking = Box::pin(connect::handshake(
        transport,
        peer,
        broker,
        cfg.clone(),
        shared.clone(),
    ));
    // The session after CONNACK: the loop, then the clean-up and the
    // will. Written inline (not an async fn taking `Accepted`), since an
    // async fn keeps a moved-from copy of its arguments in its state.
    async move {
        let Some(connect::Accepted {
            mut conn,
            mut rd,
            mut buf,
            keep_alive,
        }) = handshaking.await
        else {
            return;
        };
        conn.start(keep_alive);
        let end = conn.run(&mut rd, &mut buf).await;
        // Nothing but the flush is kept across the last wait.
        drop((rd, buf));
        let out = conn.finish(end);
        // Boxed so its timer is not part of every idle connection's task.
        let flushing = Box::pin(tokio::time::timeout(Duration::from_secs(5), async move {
            out.flushed().await
        }));
        let _ = flushing.await;
    }
}

impl Conn {
    /// After CONNACK: the takeover entry and the keep-alive watch.
    fn start(&mut self, keep_alive: u16) {
        let shared = self.shared.clone();
        self.epoch = shared.takeover.attach(
            crate::takeover::Key::new(&self.vhost.name, self.client_id()),
            &self.registration.info,
        );
        if keep_alive > 0 {
            let limit = Duration::from_millis(u64::from(keep_alive) * 1500);
            self.keepalive = Some(shared.keepalive.watch(&self.registration.info, limit));
        }
    }

    /// The session loop ended with `end`: clean up, keep what a resumed
    /// session needs, publish the will if due, and close the outbox (its
    /// flush is awaited by the caller).
    fn finish(mut self: Box<Conn>, end: End) -> Arc<Outbox> {
        let (shared, cfg) = (self.shared.clone(), self.cfg.clone());
        if let Some(w) = self.keepalive.take() {
            shared.keepalive.unwatch(w);
        }
        // Built again rather than kept: an idle connection holds less.
        let key = crate::takeover::Key::new(&self.vhost.name, self.client_id());
        // The session is left as it should be found before anyone is told.
        let resends = self.cleanup();
        if self.persistent && self.expiry != Some(Duration::ZERO) {
            shared.pending.keep(key.clone(), resends);
        } else {
            // The session ends with this connection (a clean one, or
            // DISCONNECT set its expiry to 0): so do the ids it held.
            self.vhost.session_ids.clear(self.client_id());
        }
        let epoch = self.epoch;
        shared.takeover.detach(&key, epoch);
        let mut timers = false;
        let peer = self.peer();
        if let End::Abnormal(why) = &end {
            tracing::info!(peer = %peer, client_id = %self.client_id(), "MQTT connection closed abnormally: {why}");
            if let Some(w) = self.will.take() {
                let owner = will::Owner {
                    vhost: self.vhost.clone(),
                    client_id: self.client_id().to_string(),
                    expiry: self.expiry,
                    key: key.clone(),
                    epoch,
                };
                timers = will::on_abnormal_end(w, owner, &cfg, &shared);
            }
        } else {
            tracing::info!(peer = %peer, client_id = %self.client_id(), "MQTT connection closed");
        }
        if !timers {
            shared.takeover.forget(&key, epoch);
        }
        let out = self.out.clone();
        drop(self);
        out.close();
        out
    }
}

impl Conn {
    /// The client id (kept once, in the registry entry).
    fn client_id(&self) -> &str {
        &self.registration.info.client
    }

    /// The broker-unique connection id (the registry entry's).
    fn conn_id(&self) -> u64 {
        self.registration.info.id
    }

    /// The client's address (kept once, in the registry entry).
    fn peer(&self) -> SocketAddr {
        self.registration.info.peer
    }

    fn ext(&mut self) -> &mut Extras {
        self.extras.get_or_insert_with(Box::default)
    }

    /// The session queue `mqtt-subscription-<client id>`, declared and
    /// consumed on first use.
    fn ensure_queue(&mut self) -> warren_core::Result<Arc<Queue>> {
        if let Some(q) = &self.queue {
            return Ok(q.clone());
        }
        let name = session_queue_name(self.client_id());
        // A persistent session's expiry is the queue's x-expires, so the
        // core deletes it when unused that long, also after a restart.
        let expires = self.expiry.filter(|_| self.persistent);
        let q = match self.vhost.queue(&name) {
            Ok(q) => {
                if q.durable && q.expires() != expires {
                    q.set_expires(expires);
                    self.vhost.queue_changed(&q);
                }
                q
            }
            Err(_) => {
                let mut args = Table::default();
                if let Some(d) = expires {
                    args.insert("x-expires", Value::I64(d.as_millis().max(1) as i64));
                }
                let decl = QueueDeclare {
                    name,
                    durable: self.persistent,
                    auto_delete: false,
                    args,
                    ..Default::default()
                };
                self.vhost.declare_queue(&decl, 0)?.0
            }
        };
        self.vhost.watch_expiry(&q);
        let consumer = self.consumer.clone();
        q.add_consumer(ConsumerSpec {
            tag: self.shared.consumer_tag.clone(),
            channel_id: self.conn_id(),
            no_ack: false,
            exclusive: false,
            priority: 0,
            consumer,
        })?;
        self.queue = Some(q.clone());
        Ok(q)
    }

    /// Release the session's consumers; a clean session's queue goes.
    /// Returns the retained deliveries still unacknowledged.
    fn cleanup(&mut self) -> pending::Resends {
        // Given back first: a client may reconnect while this one flushes.
        self.lease = None;
        self.consumer.active.store(false, Ordering::Release);
        let groups = self
            .extras
            .as_mut()
            .map(|e| std::mem::take(&mut e.shared_subs))
            .unwrap_or_default();
        for (filter, q) in groups {
            self.leave_shared(&q, &filter);
        }
        if let Some(q) = &self.queue {
            q.remove_consumer(self.conn_id(), &self.shared.consumer_tag);
        }
        let resends = self.requeue_inflight();
        let Some(q) = self.queue.take() else {
            return resends;
        };
        // A session that ends with its connection loses its queue now;
        // otherwise the queue's x-expires (see ensure_queue) applies.
        if self.expiry == Some(Duration::ZERO) {
            self.vhost.remove_queue(&q);
        }
        resends
    }
}
