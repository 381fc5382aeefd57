//! One MQTT connection over the routing core, following RabbitMQ's MQTT
//! plugin conventions: a PUBLISH goes to `amq.topic` (configurable) with the
//! topic as routing key (`/` and `.` swapped, so the mapping is reversible);
//! each session owns a queue `mqtt-subscription-<client id>` whose bindings
//! are its subscriptions (`+` -> `*`, `#` -> `#`). QoS 1/2 publishes are
//! persistent messages; a session with clean_session=false keeps a durable
//! queue, so its subscriptions and queued messages survive disconnects and
//! restarts.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use parking_lot::Mutex;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::sync::watch;
use warren_core::alarm::Alarms;
use warren_core::auth::{Access, Guard, Resource};
use warren_core::limits::ConnectionLease;
use warren_core::props::Properties;
use warren_core::queue::ConsumerSpec;
use warren_core::registry::{ConnStats, ConnectionInfo, Registration};
use warren_core::vhost::QueueDeclare;
use warren_core::{
    Broker, Consumer, CoreError, Delivery, Message, Queue, RouteScratch, Table, VHost, Value,
};
use warren_net::outbox::Outbox;

use crate::codec::{self, CodecError, Connect, Packet, Props, Publish};
use crate::reason::{QUOTA_EXCEEDED, UNSPECIFIED_ERROR, V4_SERVER_UNAVAILABLE, V4_SUBACK_FAILURE};
use crate::Config;

/// State shared by all MQTT connections of a listener.
#[derive(Default)]
pub struct Shared {
    /// Per (vhost, client id): the live connection (for takeover) and the
    /// epoch of the latest one. Timers (session expiry, will delay) act
    /// only if no newer connection came since; an entry goes once its
    /// connection ended and no timer needs it.
    sessions: Mutex<HashMap<(String, String), Slot>>,
    next_epoch: std::sync::atomic::AtomicU64,
    retained: Mutex<HashMap<(String, String), Message>>,
    /// The outbox keep-alive setting of every MQTT connection (none).
    no_heartbeat: Arc<Mutex<Option<Duration>>>,
    /// The broker's memory and disk alarms: publishers are not read while one is on.
    alarms: Arc<Alarms>,
    /// Woken whenever a connection has finished its clean-up, for
    /// [`Shared::take_over`].
    ended: tokio::sync::Notify,
}

struct Slot {
    conn: Option<Arc<ConnectionInfo>>,
    epoch: u64,
}

type Key = (String, String);

impl Shared {
    /// State for one listener, watching the broker's alarms.
    pub fn new(alarms: Arc<Alarms>) -> Self {
        Shared {
            alarms,
            ..Default::default()
        }
    }

    /// A connection of `key` starts: it takes over an older one.
    fn attach(&self, key: Key, me: &Arc<ConnectionInfo>) -> u64 {
        let epoch = self.next_epoch.fetch_add(1, Ordering::Relaxed) + 1;
        let old = self.sessions.lock().insert(
            key,
            Slot {
                conn: Some(me.clone()),
                epoch,
            },
        );
        if let Some(Slot {
            conn: Some(old), ..
        }) = old
        {
            // Client-id takeover: the older connection is disconnected.
            old.request_close(TAKEOVER);
        }
        epoch
    }

    /// The connection of `epoch` ended and has cleaned up its session.
    fn detach(&self, key: &Key, epoch: u64) {
        if let Some(s) = self.sessions.lock().get_mut(key) {
            if s.epoch == epoch {
                s.conn = None;
            }
        }
        self.ended.notify_waiters();
    }

    /// Before a new connection of `key` looks at its session: close the
    /// live one, if any, and wait until it has cleaned up, so that the new
    /// one sees the session as the old one left it (a v5 session with
    /// expiry 0 is gone, in-flight messages are back in the queue).
    async fn take_over(&self, key: &Key) {
        for _ in 0..TAKEOVER_ROUNDS {
            let notified = self.ended.notified();
            tokio::pin!(notified);
            // Registered before the check, so a detach in between wakes it.
            notified.as_mut().enable();
            let live = self.sessions.lock().get(key).and_then(|s| s.conn.clone());
            let Some(old) = live else {
                return;
            };
            old.request_close(TAKEOVER);
            if tokio::time::timeout(TAKEOVER_WAIT, notified).await.is_err() {
                tracing::warn!(client_id = %key.1, "previous connection did not end in time; taking over anyway");
                return;
            }
        }
    }

    /// No newer connection of this client id came since `epoch`.
    fn is_latest(&self, key: &Key, epoch: u64) -> bool {
        self.sessions
            .lock()
            .get(key)
            .is_none_or(|s| s.epoch == epoch)
    }

    /// Drop the entry of an ended connection nobody waits on any more.
    fn forget(&self, key: &Key, epoch: u64) {
        let mut m = self.sessions.lock();
        if m.get(key)
            .is_some_and(|s| s.epoch == epoch && s.conn.is_none())
        {
            m.remove(key);
        }
    }
}

/// Swap `/` and `.`: MQTT topic <-> AMQP routing key.
pub fn swap(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '/' => '.',
            '.' => '/',
            c => c,
        })
        .collect()
}

/// An MQTT filter as a topic-exchange binding key.
pub fn filter_to_key(f: &str) -> String {
    swap(f)
        .split('.')
        .map(|w| if w == "+" { "*" } else { w })
        .collect::<Vec<_>>()
        .join(".")
}

/// A valid topic name for PUBLISH: no wildcards, not empty.
pub fn valid_topic(t: &str) -> bool {
    !t.is_empty() && !t.contains(['+', '#']) && t.len() <= 65535
}

/// A valid topic filter: `#` only as the whole last level, `+` only whole.
pub fn valid_filter(f: &str) -> bool {
    if f.is_empty() {
        return false;
    }
    let levels: Vec<&str> = f.split('/').collect();
    for (i, l) in levels.iter().enumerate() {
        if l.contains('#') && (*l != "#" || i != levels.len() - 1) {
            return false;
        }
        if l.contains('+') && *l != "+" {
            return false;
        }
    }
    true
}

/// MQTT matching of a topic against a filter (for retained messages).
pub fn matches(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false;
    }
    let mut f = filter.split('/');
    let mut t = topic.split('/');
    loop {
        match (f.next(), t.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

struct Inflight {
    next: u16,
    /// QoS 1/2 deliveries waiting for PUBACK / PUBREC.
    by_id: HashMap<u16, (Arc<Queue>, Delivery)>,
    /// QoS 2 deliveries past PUBREC, waiting for PUBCOMP.
    released: HashSet<u16>,
}

/// Header carrying the MQTT QoS of a publish across AMQP (RabbitMQ's name).
const QOS_HEADER: &str = "x-mqtt-publish-qos";
/// Header naming the connection that published a message, set only when
/// that connection has a no-local subscription matching the topic.
const NO_LOCAL_HEADER: &str = "x-mqtt-no-local";
/// Binding argument holding the QoS granted to a subscription.
const GRANTED_QOS: &str = "x-mqtt-qos";
/// Header marking a message published with RETAIN=1, for subscriptions
/// with retain-as-published.
const RETAIN_HEADER: &str = "x-mqtt-retain";

/// The QoS a message was published with: the header if set, else 1 for
/// persistent and 0 for transient AMQP messages.
fn publish_qos(m: &Message) -> u8 {
    if !m.persistent {
        return 0;
    }
    m.header(QOS_HEADER)
        .and_then(|v| v.as_i64())
        .map_or(1, |q| q.clamp(1, 2) as u8)
}

/// The session queue's consumer: encodes deliveries as PUBLISH packets.
struct MqttConsumer {
    out: Arc<Outbox>,
    level: u8,
    max_qos: Mutex<u8>,
    inflight: Mutex<Inflight>,
    receive_max: usize,
    active: AtomicBool,
    /// The owning connection, for no-local.
    conn_id: u64,
    /// Set once the session has a no-local subscription.
    no_local: AtomicBool,
    stats: Arc<ConnStats>,
    /// Filters subscribed with retain-as-published: a message published
    /// with RETAIN=1 keeps the flag when it matches one of them.
    retain_as_published: Mutex<Vec<String>>,
}

impl MqttConsumer {
    /// The RETAIN flag of a forwarded message: set only when it was
    /// published retained and a retain-as-published subscription matches.
    /// The header is looked at first, so ordinary deliveries take no lock.
    fn retain_flag(&self, m: &Message) -> bool {
        let retained = matches!(m.header(RETAIN_HEADER), Some(Value::Bool(true)));
        if !retained {
            return false;
        }
        let topic = swap(m.routing_key());
        self.retain_as_published
            .lock()
            .iter()
            .any(|f| matches(f, &topic))
    }

    /// A message this connection published under a no-local subscription.
    fn is_own(&self, m: &Message) -> bool {
        self.no_local.load(Ordering::Relaxed)
            && m.header(NO_LOCAL_HEADER)
                .and_then(|v| v.as_i64())
                .is_some_and(|id| id as u64 == self.conn_id)
    }
}

impl Consumer for MqttConsumer {
    fn offer(&self, queue: &Arc<Queue>, d: Delivery) -> Result<(), Delivery> {
        if !self.active.load(Ordering::Acquire) {
            return Err(d);
        }
        if self.is_own(&d.message) {
            // No-local: not sent back to its publisher; done with it.
            queue.settle([&d]);
            return Ok(());
        }
        let max = *self.max_qos.lock();
        let qos = if max == 0 || !d.message.persistent {
            0
        } else {
            publish_qos(&d.message).min(max)
        };
        let mut inf = self.inflight.lock();
        if qos > 0 && inf.by_id.len() + inf.released.len() >= self.receive_max {
            return Err(d);
        }
        let pkid = if qos > 0 {
            loop {
                inf.next = inf.next.wrapping_add(1).max(1);
                let n = inf.next;
                if !inf.by_id.contains_key(&n) && !inf.released.contains(&n) {
                    break n;
                }
            }
        } else {
            0
        };
        let level = self.level;
        let flags = (
            qos > 0 && d.redelivered,
            qos,
            level == 5 && self.retain_flag(&d.message),
        );
        let props = (level == 5).then(|| amqp_to_props(&d.message));
        let m = &d.message;
        if !self.out.try_push(queue, |o| {
            codec::write_delivery(
                o,
                level,
                flags,
                m.routing_key(),
                pkid,
                props.as_ref(),
                &m.body,
            )
        }) {
            return Err(d);
        }
        ConnStats::add(&self.stats.delivered, 1);
        if qos > 0 {
            inf.by_id.insert(pkid, (queue.clone(), d));
        } else {
            queue.settle([&d]);
        }
        Ok(())
    }

    fn queue_deleted(&self, _queue: &Arc<Queue>) {
        self.active.store(false, Ordering::Release);
    }
}

/// MQTT 5 properties from an AMQP message, as RabbitMQ maps them.
fn amqp_to_props(m: &Message) -> Props {
    let Ok(p) = Properties::decode(m.raw_properties()) else {
        return Props::default();
    };
    let mut out = Props {
        content_type: p.content_type,
        correlation_data: p.correlation_id.map(Bytes::from),
        message_expiry: p
            .expiration
            .and_then(|e| e.parse::<u64>().ok())
            .map(|ms| (ms / 1000) as u32),
        ..Default::default()
    };
    if let Some(h) = p.headers {
        for (k, v) in h.iter() {
            if k == "x-reply-to-topic" {
                out.response_topic = v.as_str().map(String::from);
            } else if k == QOS_HEADER || k == NO_LOCAL_HEADER || k == RETAIN_HEADER {
                continue;
            } else if let Some(s) = v.as_str() {
                out.user.push((k.to_string(), s.to_string()));
            } else if let Some(i) = v.as_i64() {
                out.user.push((k.to_string(), i.to_string()));
            }
        }
    }
    out
}

/// No MQTT 5 property that maps to an AMQP one.
fn is_plain(p: &Props) -> bool {
    p.content_type.is_none()
        && p.correlation_data.is_none()
        && p.message_expiry.is_none()
        && p.response_topic.is_none()
        && p.user.is_empty()
}

/// What [`props_to_amqp`] encodes for a publish without MQTT 5 properties,
/// written directly: delivery_mode, and for QoS 1/2 the
/// `x-mqtt-publish-qos` header.
fn plain_props(out: &mut BytesMut, qos: u8) {
    use bytes::BufMut;
    if qos == 0 {
        out.put_u16(0x1000); // delivery_mode
        out.put_u8(1);
    } else {
        out.put_u16(0x3000); // headers, delivery_mode
        out.put_u32(1 + QOS_HEADER.len() as u32 + 2);
        out.put_u8(QOS_HEADER.len() as u8);
        out.put_slice(QOS_HEADER.as_bytes());
        out.put_u8(b'B');
        out.put_u8(qos);
        out.put_u8(2);
    }
}

/// AMQP properties for an MQTT publish: QoS 0/1+ -> delivery_mode 1/2, and
/// the MQTT 5 properties RabbitMQ maps.
fn props_to_amqp(p: &Publish, no_local_conn: Option<u64>) -> Bytes {
    let mut headers = Table::default();
    for (k, v) in &p.props.user {
        headers.insert(k, Value::str(v));
    }
    if let Some(t) = &p.props.response_topic {
        headers.insert("x-reply-to-topic", Value::str(t));
    }
    if p.qos > 0 {
        headers.insert(QOS_HEADER, Value::U8(p.qos));
    }
    if let Some(id) = no_local_conn {
        headers.insert(NO_LOCAL_HEADER, Value::I64(id as i64));
    }
    if p.retain {
        headers.insert(RETAIN_HEADER, Value::Bool(true));
    }
    Properties {
        delivery_mode: Some(if p.qos > 0 { 2 } else { 1 }),
        content_type: p.props.content_type.clone(),
        correlation_id: p
            .props
            .correlation_data
            .as_ref()
            .map(|c| String::from_utf8_lossy(c).into_owned()),
        expiration: p
            .props
            .message_expiry
            .map(|s| (u64::from(s) * 1000).to_string()),
        headers: (!headers.is_empty()).then_some(headers),
        ..Default::default()
    }
    .encode()
}

/// Publish a will message (now, or from a will-delay timer).
fn publish_will(vhost: &VHost, cfg: &Config, shared: &Shared, client_id: &str, w: &codec::Will) {
    let p = Publish {
        dup: false,
        qos: w.qos,
        retain: w.retain,
        topic: w.topic.clone(),
        pkid: 0,
        props: w.props.clone(),
        payload: w.payload.clone(),
    };
    if !valid_topic(&p.topic) {
        return;
    }
    let props = props_to_amqp(&p, None);
    let Ok(msg) = Message::from_parts(&cfg.exchange, &swap(&p.topic), &props, p.payload.clone())
    else {
        return;
    };
    if p.retain {
        let key = (vhost.name.to_string(), p.topic.clone());
        let mut r = shared.retained.lock();
        if p.payload.is_empty() {
            r.remove(&key);
        } else {
            r.insert(key, msg.clone());
        }
    }
    let routed = vhost
        .exchange(&cfg.exchange)
        .and_then(|x| vhost.publish(&x, msg, &mut RouteScratch::default()));
    match routed {
        Ok(_) => tracing::info!(client_id, topic = %p.topic, "MQTT will published"),
        Err(e) => tracing::warn!(client_id, "MQTT will not published: {e}"),
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
    /// Filters subscribed on this connection (retain handling 1).
    subscriptions: HashSet<String>,
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
    peer: SocketAddr,
    level: u8,
    vhost: Arc<VHost>,
    client_id: String,
    queue: Option<Arc<Queue>>,
    /// The session outlives the connection (durable queue).
    persistent: bool,
    /// Subscription and alias state, allocated at first use: devices that
    /// only publish (or sit idle) do without.
    extras: Option<Box<Extras>>,
    /// How long the session lives after disconnect (None: forever).
    expiry: Option<Duration>,
    consumer: Arc<MqttConsumer>,
    consumer_tag: Arc<str>,
    conn_id: u64,
    scratch: RouteScratch,
    /// A publish reached a queue whose consumers are far behind: pause
    /// reading briefly (the same flow control as AMQP publishers get).
    backlogged: bool,
    sync_rx: Option<watch::Receiver<warren_core::SyncState>>,
    guard: Guard,
    /// Permission generation at which publishing was last found allowed.
    publish_ok: Option<u64>,
    registration: Registration,
    /// (store sequence, PUBACK or PUBREC, packet id) to send once synced.
    ack_after_sync: Option<(u64, u8, u16)>,
    /// The MQTT exchange, looked up at the first publish.
    exchange: Option<Arc<warren_core::Exchange>>,
    /// The session's place in the node, vhost and user connection counts
    /// (RabbitMQ counts MQTT connections too), until cleanup.
    lease: Option<ConnectionLease>,
    /// Set by the first PUBLISH: alarms block only publishers.
    published: bool,
}

/// The close reason that marks a client-id takeover.
const TAKEOVER: &str = "session taken over";
/// How long a new connection waits for the one it takes over to end.
const TAKEOVER_WAIT: Duration = Duration::from_secs(5);
/// Connections of one client id a new one waits out (each may be replaced
/// by a newer one while it waits).
const TAKEOVER_ROUNDS: usize = 4;

/// What the session loop does after handling buffered packets.
enum Step {
    /// Read more from the socket.
    Read,
    /// Wait for the store, then acknowledge (`ack_after_sync`).
    Sync,
    /// The connection ends.
    End(End),
}

/// What the handshake hands to the session loop.
struct Accepted {
    // Boxed: moved-from locals keep their space in the task's future.
    conn: Box<Conn>,
    rd: tokio::net::tcp::OwnedReadHalf,
    buf: BytesMut,
    keep_alive: u16,
    will: Option<Box<codec::Will>>,
}

/// Serve one MQTT connection.
pub async fn handle(
    stream: TcpStream,
    peer: SocketAddr,
    broker: Arc<Broker>,
    cfg: Arc<Config>,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) {
    // The handshake runs in its own boxed future, freed once it is done:
    // an idle connection's task then holds only the session loop's state
    // (this matters at 10,000s of idle devices).
    // Boxed in a statement of its own: a temporary in the awaiting
    // statement would keep its full size in this task's state.
    let handshaking = Box::pin(handshake(stream, peer, &broker, &cfg, &shared));
    let Some(Accepted {
        mut conn,
        mut rd,
        mut buf,
        keep_alive,
        will,
    }) = handshaking.await
    else {
        return;
    };
    let out = conn.out.clone();
    let me = conn.registration.info.clone();
    let epoch = shared.attach((conn.vhost.name.to_string(), conn.client_id.clone()), &me);
    drop(me);
    let keep_alive = (keep_alive > 0).then(|| Duration::from_millis(u64::from(keep_alive) * 1500));
    let end = conn.run(&mut rd, &mut buf, keep_alive, &mut shutdown).await;
    // Built again rather than kept: an idle connection holds less.
    let key = (conn.vhost.name.to_string(), conn.client_id.clone());
    // The session is left as it should be found before anyone is told.
    conn.cleanup();
    shared.detach(&key, epoch);
    let mut timers = false;
    if let End::Abnormal(why) = &end {
        tracing::info!(peer = %peer, client_id = %conn.client_id, "MQTT connection closed abnormally: {why}");
        if let Some(w) = will {
            // v5 will delay, bounded by the session's expiry; a reconnect
            // of the same client id within the delay cancels the will.
            let mut delay = Duration::from_secs(u64::from(w.props.will_delay.unwrap_or(0)));
            if let Some(e) = conn.expiry {
                delay = delay.min(e);
            }
            if delay.is_zero() {
                publish_will(&conn.vhost, &cfg, &shared, &conn.client_id, &w);
            } else {
                let (vhost, cfg, shared, id) = (
                    conn.vhost.clone(),
                    cfg.clone(),
                    shared.clone(),
                    conn.client_id.clone(),
                );
                let key = key.clone();
                timers = true;
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    if shared.is_latest(&key, epoch) {
                        publish_will(&vhost, &cfg, &shared, &id, &w);
                    }
                    shared.forget(&key, epoch);
                });
            }
        }
    } else {
        tracing::info!(peer = %peer, client_id = %conn.client_id, "MQTT connection closed");
    }
    if !timers {
        shared.forget(&key, epoch);
    }
    out.close();
    // Boxed so its timer is not part of every idle connection's task.
    let flushing = Box::pin(tokio::time::timeout(Duration::from_secs(5), async move {
        out.flushed().await
    }));
    let _ = flushing.await;
}

/// Read CONNECT (within 10 s) and accept or refuse it.
async fn handshake(
    stream: TcpStream,
    peer: SocketAddr,
    broker: &Arc<Broker>,
    cfg: &Arc<Config>,
    shared: &Arc<Shared>,
) -> Option<Accepted> {
    let _ = stream.set_nodelay(true);
    let local = stream.local_addr().unwrap_or(peer);
    let (mut rd, wr) = stream.into_split();
    // MQTT servers send no keep-alives: one shared "none" for every connection.
    let out = Outbox::new(Box::new(wr), shared.no_heartbeat.clone(), |_| {});
    // Small to start: idle devices are the common case; it grows on demand.
    let mut buf = BytesMut::with_capacity(128);
    // The first packet must be CONNECT, within the handshake timeout.
    let first = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match codec::read(&mut buf, 0, cfg.max_packet_size) {
                Err(CodecError::Incomplete) => {}
                other => return other.map_err(|e| e.to_string()),
            }
            match rd.read_buf(&mut buf).await {
                Ok(0) | Err(_) => return Err("closed before CONNECT".to_string()),
                Ok(_) => {}
            }
        }
    })
    .await;
    let connect = match first {
        Ok(Ok(Packet::Connect(c))) => *c,
        Ok(Ok(other)) => {
            tracing::warn!(peer = %peer, "MQTT: first packet was not CONNECT ({other:?}); closing");
            out.close();
            return None;
        }
        Ok(Err(e)) => {
            tracing::warn!(peer = %peer, "MQTT: bad CONNECT: {e}; closing");
            if e.contains("protocol level") {
                // 3.1.1 answer: unacceptable protocol version.
                out.push(|o| codec::write_connack(o, 4, false, 1, &Props::default()));
            }
            out.close();
            let _ = out.flushed().await;
            return None;
        }
        Err(_) => {
            tracing::warn!(peer = %peer, "MQTT: no CONNECT within 10 s; closing");
            out.close();
            return None;
        }
    };
    let Some(conn) = accept(broker, cfg, shared, &out, (peer, local), &connect).await else {
        out.close();
        let _ = tokio::time::timeout(Duration::from_secs(5), out.flushed()).await;
        return None;
    };
    Some(Accepted {
        conn: Box::new(conn),
        rd,
        buf,
        keep_alive: connect.keep_alive,
        will: connect.will.map(Box::new),
    })
}

async fn accept(
    broker: &Arc<Broker>,
    cfg: &Arc<Config>,
    shared: &Arc<Shared>,
    out: &Arc<Outbox>,
    (peer, local): (SocketAddr, SocketAddr),
    c: &Connect,
) -> Option<Conn> {
    let level = c.level;
    let refuse = |v4: u8, v5: u8, why: &str| {
        tracing::warn!(peer = %peer, client_id = %c.client_id, "MQTT connection refused: {why}");
        out.push(|o| {
            codec::write_connack(
                o,
                level,
                false,
                if level == 5 { v5 } else { v4 },
                &Props::default(),
            )
        });
        None
    };
    // Username may carry the vhost as `vhost:user`, as in RabbitMQ.
    let (vhost_name, user) = match &c.username {
        Some(u) => match u.split_once(':') {
            Some((v, u)) => (v.to_string(), Some(u.to_string())),
            None => ("/".to_string(), Some(u.clone())),
        },
        None => ("/".to_string(), None),
    };
    match (&user, &c.password) {
        (Some(u), Some(p)) => {
            if broker
                .users
                .authenticate(u, &String::from_utf8_lossy(p))
                .is_err()
            {
                return refuse(4, 0x86, "bad user name or password");
            }
            if cfg.loopback_users.contains(u) && !peer.ip().is_loopback() {
                return refuse(
                    5,
                    0x87,
                    &format!("user '{u}' can only connect via localhost"),
                );
            }
        }
        (None, None) if cfg.allow_anonymous_loopback && peer.ip().is_loopback() => {}
        (None, None) => return refuse(5, 0x87, "anonymous access is only allowed from loopback"),
        _ => return refuse(4, 0x86, "password without user name or the reverse"),
    }
    let Some(vhost) = broker.vhost(&vhost_name) else {
        return refuse(5, 0x87, &format!("vhost '{vhost_name}' not found"));
    };
    // Authenticated: the connection this one replaces ends first (and
    // gives back its connection-limit lease).
    if !c.client_id.is_empty() {
        let key = (vhost.name.to_string(), c.client_id.clone());
        shared.take_over(&key).await;
    }
    let user = user.unwrap_or_else(|| cfg.anonymous_user.clone());
    let lease = match broker.limits.admit((&vhost.name, &vhost.limits), &user) {
        Ok(l) => l,
        Err(e) => return refuse_for_limit(out, peer, c, (&user, &vhost_name), &e),
    };
    let guard = match broker.users.guard(&vhost_name, &user) {
        Ok(g) => g,
        Err(e) => return refuse(5, 0x87, &e.to_string()),
    };
    let mut props = Props::default();
    let client_id = if c.client_id.is_empty() {
        if level == 4 && !c.clean {
            return refuse(2, 0x85, "empty client id requires clean session");
        }
        let id = vhost.generate_name("warren-");
        props.assigned_client_id = Some(id.clone());
        id
    } else {
        c.client_id.clone()
    };
    // When the session ends after disconnect: 3.1.1 clean -> at once,
    // not clean -> never; 5.0 -> the session expiry interval (0 = at once,
    // 0xFFFFFFFF = never).
    let expiry = if level == 5 {
        match c.props.session_expiry.unwrap_or(0) {
            u32::MAX => None,
            s => Some(Duration::from_secs(u64::from(s))),
        }
    } else if c.clean {
        Some(Duration::ZERO)
    } else {
        None
    };
    let persistent = expiry != Some(Duration::ZERO);
    let qname = format!("mqtt-subscription-{client_id}");
    if persistent
        && guard
            .check(Access::Configure, Resource::Queue, &qname)
            .is_err()
    {
        return refuse(
            5,
            0x87,
            &format!("no permission to configure queue '{qname}'"),
        );
    }
    let existed = vhost.queue(&qname).is_ok();
    if c.clean && existed {
        let _ = vhost.delete_queue(&qname, false, false, 0);
    }
    let session_present = !c.clean && existed;
    if persistent {
        // Asked before CONNACK: the session queue is made after it.
        if let Err(e) = vhost.may_declare_queue(&qname) {
            return refuse_for_limit(out, peer, c, (&user, &vhost_name), &e);
        }
    }
    if level == 5 {
        props.receive_maximum = Some(cfg.receive_maximum);
        props.retain_available = Some(1);
        props.shared_available = Some(1);
        props.topic_alias_maximum = Some(cfg.topic_alias_maximum);
        props.maximum_packet_size = Some(cfg.max_packet_size as u32);
    }
    out.push(|o| codec::write_connack(o, level, session_present, 0, &props));
    tracing::info!(peer = %peer, client_id = %client_id, vhost = %vhost_name, level, "MQTT connection opened");
    let receive_max = c
        .props
        .receive_maximum
        .map_or(cfg.receive_maximum, |r| r.min(cfg.receive_maximum)) as usize;
    let conn_id = broker.next_id();
    let registration = broker.registry.register(ConnectionInfo::new(
        conn_id,
        if level == 5 { "MQTT 5.0" } else { "MQTT 3.1.1" },
        (peer, local),
        guard.user.clone(),
        guard.vhost.clone(),
        client_id.clone(),
    ));
    let consumer = Arc::new(MqttConsumer {
        stats: registration.info.stats.clone(),
        out: out.clone(),
        level,
        max_qos: Mutex::new(0),
        inflight: Mutex::new(Inflight {
            next: 0,
            by_id: HashMap::new(),
            released: HashSet::new(),
        }),
        receive_max: receive_max.max(1),
        active: AtomicBool::new(true),
        conn_id,
        no_local: AtomicBool::new(false),
        retain_as_published: Mutex::new(Vec::new()),
    });

    let tag: Arc<str> = Arc::from("mqtt");
    let mut conn = Conn {
        cfg: cfg.clone(),
        shared: shared.clone(),
        out: out.clone(),
        peer,
        level,
        vhost,
        client_id,
        queue: None,
        persistent,
        extras: None,
        expiry,
        consumer,
        consumer_tag: tag,
        conn_id,
        scratch: RouteScratch::default(),
        backlogged: false,
        published: false,
        sync_rx: broker.sync_watch(),
        guard,
        publish_ok: None,
        registration,
        ack_after_sync: None,
        exchange: None,
        lease: Some(lease),
    };
    if session_present {
        // A persistent session delivers at the QoS its subscriptions were
        // granted (kept on their bindings; 1 for bindings made before that).
        let granted = match (conn.vhost.queue(&qname), conn.vhost.exchange(&cfg.exchange)) {
            (Ok(q), Ok(x)) => x
                .bindings_to_queue(&q)
                .iter()
                .map(|(_, args)| {
                    args.get(GRANTED_QOS)
                        .and_then(|v| v.as_i64())
                        .map_or(1, |v| v.clamp(0, 2) as u8)
                })
                .max()
                .unwrap_or(0),
            _ => 1,
        };
        *conn.consumer.max_qos.lock() = granted;
    }
    // A clean session gets its queue at its first SUBSCRIBE, so devices
    // that only publish cost no queue; a persistent one needs it now.
    if persistent {
        if let Err(e) = conn.ensure_queue() {
            let (v4, v5) = match e {
                CoreError::LimitReached(_) => (V4_SERVER_UNAVAILABLE, QUOTA_EXCEEDED),
                _ => (V4_SERVER_UNAVAILABLE, UNSPECIFIED_ERROR),
            };
            return refuse(v4, v5, &format!("session queue: {e}"));
        }
    }
    Some(conn)
}

/// Refuse a CONNECT because a limit is reached: CONNACK 0x97 quota
/// exceeded (5.0) or 3 server unavailable (3.1.1, which has no quota code;
/// RabbitMQ answers 5 "not authorised", which tells a device its
/// credentials are wrong when they are not).
fn refuse_for_limit(
    out: &Outbox,
    peer: SocketAddr,
    c: &Connect,
    (user, vhost): (&str, &str),
    why: &dyn std::fmt::Display,
) -> Option<Conn> {
    tracing::warn!(peer = %peer, user, vhost, client_id = %c.client_id, "MQTT connection refused: {why}");
    let code = if c.level == 5 {
        QUOTA_EXCEEDED
    } else {
        V4_SERVER_UNAVAILABLE
    };
    out.push(|o| codec::write_connack(o, c.level, false, code, &Props::default()));
    None
}

impl Conn {
    fn ext(&mut self) -> &mut Extras {
        self.extras.get_or_insert_with(Box::default)
    }

    /// The session queue `mqtt-subscription-<client id>`, declared and
    /// consumed on first use.
    fn ensure_queue(&mut self) -> warren_core::Result<Arc<Queue>> {
        if let Some(q) = &self.queue {
            return Ok(q.clone());
        }
        let name = format!("mqtt-subscription-{}", self.client_id);
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
            tag: self.consumer_tag.clone(),
            channel_id: self.conn_id,
            no_ack: false,
            exclusive: false,
            priority: 0,
            consumer,
        })?;
        self.queue = Some(q.clone());
        Ok(q)
    }

    async fn run(
        &mut self,
        rd: &mut tokio::net::tcp::OwnedReadHalf,
        buf: &mut BytesMut,
        keep_alive: Option<Duration>,
        shutdown: &mut watch::Receiver<bool>,
    ) -> End {
        // Small while idle; doubles while a busy client keeps filling it.
        let mut read_hint = 128usize;
        let info = self.registration.info.clone();
        loop {
            match self.drain(buf) {
                Step::End(end) => return end,
                Step::Sync => {
                    if let Some((seq, kind, pkid)) = self.ack_after_sync.take() {
                        if let Some(rx) = self.sync_rx.as_mut() {
                            let _ = rx.wait_for(|s| s.synced >= seq).await;
                        }
                        let level = self.level;
                        self.out.push(|o| codec::write_ack(o, level, kind, pkid, 0));
                        ConnStats::add(&self.registration.info.stats.confirmed, 1);
                    }
                    continue;
                }
                Step::Read => {}
            }
            if self.blocked() {
                // Not read while an alarm is on (nor is keep-alive counted).
                tracing::info!(peer = %self.peer, client_id = %self.client_id, "blocking MQTT publisher: {}", self.shared.alarms.current().reason());
                let mut alarms = self.shared.alarms.subscribe();
                tokio::select! {
                    _ = alarms.wait_for(|a| !a.any()) => {}
                    _ = info.close_requested() => return End::Clean,
                    _ = shutdown.changed() => return End::Clean,
                }
                tracing::info!(peer = %self.peer, client_id = %self.client_id, "unblocking MQTT publisher");
                continue;
            }
            warren_net::pace_publisher(std::mem::take(&mut self.backlogged)).await;
            // The read size doubles while a busy client keeps filling it;
            // idle clients keep a small buffer.
            if buf.capacity() - buf.len() < read_hint / 2 {
                buf.reserve(read_hint);
            }
            let spare = buf.capacity() - buf.len();
            let read = async {
                match keep_alive {
                    Some(t) => tokio::time::timeout(t, rd.read_buf(buf))
                        .await
                        .map_err(|_| ()),
                    None => Ok(rd.read_buf(buf).await),
                }
            };
            tokio::select! {
                r = read => match r {
                    Err(()) => return End::Abnormal("keep-alive timeout".into()),
                    Ok(Ok(0)) => return End::Abnormal("socket closed without DISCONNECT".into()),
                    Ok(Err(e)) => return End::Abnormal(e.to_string()),
                    Ok(Ok(n)) => {
                        if n >= spare {
                            read_hint = (read_hint * 2).min(256 * 1024);
                        }
                    }
                },
                reason = info.close_requested() => {
                    if reason == TAKEOVER {
                        if self.level == 5 {
                            self.out.push(|o| codec::write_disconnect(o, 0x8E, "session taken over"));
                        }
                        return End::Abnormal("session taken over by a new connection".into());
                    }
                    tracing::info!(peer = %self.peer, client_id = %self.client_id, "closing MQTT connection: {reason}");
                    if self.level == 5 {
                        self.out.push(|o| codec::write_disconnect(o, 0x98, &reason));
                    }
                    return End::Clean;
                }
                _ = shutdown.changed() => {
                    if self.level == 5 {
                        self.out.push(|o| codec::write_disconnect(o, 0x8B, "server shutting down"));
                    }
                    return End::Clean;
                }
            }
        }
    }

    /// Handle the complete packets in `buf`, without awaiting (so that no
    /// packet is held in the session loop's future).
    fn drain(&mut self, buf: &mut BytesMut) -> Step {
        loop {
            if self.blocked() {
                return Step::Read;
            }
            match codec::read(buf, self.level, self.cfg.max_packet_size) {
                Ok(p) => {
                    self.published |= matches!(p, Packet::Publish(_));
                    if let Some(end) = self.on_packet(p) {
                        return Step::End(end);
                    }
                    if self.ack_after_sync.is_some() {
                        return Step::Sync;
                    }
                }
                Err(CodecError::Incomplete) => return Step::Read,
                Err(e) => return Step::End(self.protocol_error(&e)),
            }
        }
    }

    /// A connection that has published is blocked while an alarm is on.
    fn blocked(&self) -> bool {
        self.published && self.shared.alarms.blocking()
    }

    fn protocol_error(&self, e: &CodecError) -> End {
        tracing::warn!(peer = %self.peer, client_id = %self.client_id, "MQTT protocol error: {e}");
        if self.level == 5 {
            let code = match e {
                CodecError::TooLarge(_) => 0x95,
                _ => 0x81,
            };
            let text = e.to_string();
            self.out.push(|o| codec::write_disconnect(o, code, &text));
        }
        End::Abnormal(e.to_string())
    }

    fn disconnect_with(&self, code: u8, why: &str) -> Option<End> {
        tracing::warn!(peer = %self.peer, client_id = %self.client_id, "MQTT: {why}; disconnecting");
        if self.level == 5 {
            self.out.push(|o| codec::write_disconnect(o, code, why));
        }
        Some(End::Abnormal(why.to_string()))
    }

    /// Handle one packet. Not async, so the session loop's future stays
    /// small; a QoS 1/2 publish whose acknowledgement must wait for the
    /// store leaves it in `ack_after_sync` for the loop to send.
    fn on_packet(&mut self, p: Packet) -> Option<End> {
        let level = self.level;
        match p {
            Packet::Connect(_) => return self.disconnect_with(0x82, "second CONNECT"),
            Packet::Publish(mut p) => {
                if let Some(alias) = p.props.topic_alias {
                    if alias == 0 || alias > self.cfg.topic_alias_maximum {
                        return self.disconnect_with(0x94, "topic alias out of range");
                    }
                    if p.topic.is_empty() {
                        match self.ext().aliases.get(&alias) {
                            Some(t) => p.topic = t.clone(),
                            None => return self.disconnect_with(0x82, "unknown topic alias"),
                        }
                    } else {
                        let topic = p.topic.clone();
                        self.ext().aliases.insert(alias, topic);
                    }
                }
                if !valid_topic(&p.topic) {
                    return self.disconnect_with(0x90, "invalid topic name in PUBLISH");
                }
                if let Err(e) = self.may_publish() {
                    // 3.1.1 has no way to say "not authorized" but closing;
                    // 5.0 answers QoS 1/2 with 0x87 and keeps the connection.
                    if level == 5 && p.qos > 0 {
                        let kind = if p.qos == 1 { 4 } else { 5 };
                        self.out
                            .push(|o| codec::write_ack(o, level, kind, p.pkid, 0x87));
                        return None;
                    }
                    return self.disconnect_with(0x87, &e.to_string());
                }
                if p.qos == 2 && !self.ext().qos2_seen.insert(p.pkid) {
                    // A resent QoS 2 publish before PUBREL: route it once only.
                    self.out.push(|o| codec::write_ack(o, level, 5, p.pkid, 0));
                    return None;
                }
                let sync = match self.route(&p) {
                    Ok(s) => s,
                    Err(why) => return self.disconnect_with(0x80, &why),
                };
                if p.retain {
                    self.retain(&p);
                }
                if let Some(seq) = sync.filter(|_| p.qos > 0) {
                    // QoS 1/2 acknowledgement only once the message is on disk.
                    self.ack_after_sync = Some((seq, if p.qos == 1 { 4 } else { 5 }, p.pkid));
                    return None;
                }
                match p.qos {
                    1 => self.out.push(|o| codec::write_ack(o, level, 4, p.pkid, 0)),
                    2 => self.out.push(|o| codec::write_ack(o, level, 5, p.pkid, 0)),
                    _ => {}
                }
                if p.qos > 0 {
                    ConnStats::add(&self.registration.info.stats.confirmed, 1);
                }
            }
            Packet::PubRel(pkid, _) => {
                if let Some(e) = self.extras.as_mut() {
                    e.qos2_seen.remove(&pkid);
                }
                self.out.push(|o| codec::write_ack(o, level, 7, pkid, 0));
            }
            Packet::PubAck(pkid, _) => self.settle_outbound(pkid, false),
            Packet::PubRec(pkid, _) => {
                // QoS 2, step 2: the client has the message; it will not be
                // sent again, only PUBREL until PUBCOMP.
                self.settle_outbound(pkid, true);
                self.out.push(|o| codec::write_ack(o, level, 6, pkid, 0));
            }
            Packet::PubComp(pkid, _) => {
                let freed = self.consumer.inflight.lock().released.remove(&pkid);
                if freed {
                    let shared = self.extras.iter().flat_map(|e| e.shared_subs.values());
                    for q in self.queue.iter().chain(shared) {
                        q.dispatch();
                    }
                }
            }
            Packet::Subscribe(pkid, filters) => {
                let mut codes = Vec::with_capacity(filters.len());
                let mut existed = Vec::with_capacity(filters.len());
                for f in &filters {
                    existed.push(self.ext().subscriptions.contains(&f.filter));
                    let code = self.subscribe(f);
                    if code < 0x80 {
                        {
                            let c = &self.consumer;
                            let mut rap = c.retain_as_published.lock();
                            rap.retain(|x| x != &f.filter);
                            if f.retain_as_published && !f.filter.starts_with("$share/") {
                                rap.push(f.filter.clone());
                            }
                        }
                        let ext = self.ext();
                        ext.subscriptions.insert(f.filter.clone());
                        ext.no_local.retain(|x| x != &f.filter);
                        if f.no_local && !f.filter.starts_with("$share/") {
                            ext.no_local.push(f.filter.clone());
                            {
                                let c = &self.consumer;
                                c.no_local.store(true, Ordering::Relaxed);
                            }
                        }
                    }
                    codes.push(code);
                }
                self.out
                    .push(|o| codec::write_suback(o, level, pkid, &codes));
                for (f, existed) in filters.iter().zip(existed) {
                    // Retain handling: 0 always, 1 only for a new
                    // subscription, 2 never; never for shared subscriptions.
                    let send = match f.retain_handling {
                        0 => true,
                        1 => !existed,
                        _ => false,
                    };
                    if send && !f.filter.starts_with("$share/") {
                        self.send_retained(&f.filter);
                    }
                }
                if let Some(q) = &self.queue {
                    q.dispatch();
                }
            }
            Packet::Unsubscribe(pkid, filters) => {
                for f in &filters {
                    let ext = self.ext();
                    ext.subscriptions.remove(f);
                    ext.no_local.retain(|x| x != f);
                    {
                        let c = &self.consumer;
                        c.retain_as_published.lock().retain(|x| x != f);
                    }
                }
                for f in &filters {
                    if let Some(q) = self.ext().shared_subs.remove(f) {
                        self.leave_shared(&q, f);
                    }
                }
                if let (Some(q), Ok(x)) = (&self.queue, self.vhost.exchange(&self.cfg.exchange)) {
                    for f in filters.iter().filter(|f| !f.starts_with("$share/")) {
                        let _ = self.vhost.unbind_queue_except(
                            &q.name,
                            &x.name,
                            &filter_to_key(f),
                            None,
                        );
                    }
                }
                let n = filters.len();
                self.out.push(|o| codec::write_unsuback(o, level, pkid, n));
            }
            Packet::PingReq => self.out.push(codec::write_pingresp),
            Packet::Disconnect(code, _) => {
                // v5 reason 0x04: disconnect with will message.
                return Some(if code == 0x04 {
                    End::Abnormal("client asked for its will".into())
                } else {
                    End::Clean
                });
            }
            Packet::Auth(_) => {
                return self.disconnect_with(0x8C, "enhanced authentication is not supported")
            }
        }
        None
    }

    /// PUBACK or PUBREC for one of our deliveries: settle it on its queue.
    fn settle_outbound(&self, pkid: u16, released: bool) {
        let taken = {
            let mut inf = self.consumer.inflight.lock();
            let t = inf.by_id.remove(&pkid);
            if released && t.is_some() {
                inf.released.insert(pkid);
            }
            t
        };
        if let Some((q, d)) = taken {
            ConnStats::add(&self.registration.info.stats.acked, 1);
            q.settle([&d]);
            q.dispatch();
        }
    }

    fn subscribe(&mut self, f: &codec::Filter) -> u8 {
        let failure = if self.level == 5 { 0x8F } else { 0x80 };
        if let Some(rest) = f.filter.strip_prefix("$share/") {
            return self.subscribe_shared(f, rest);
        }
        if !valid_filter(&f.filter) {
            tracing::warn!(client_id = %self.client_id, filter = %f.filter, "MQTT: invalid topic filter");
            return failure;
        }
        let qname = format!("mqtt-subscription-{}", self.client_id);
        if !self.may_subscribe(&qname) {
            return self.not_authorized();
        }
        let q = match self.ensure_queue() {
            Ok(q) => q,
            Err(e) => return self.queue_refused(&e),
        };
        let Ok(x) = self.vhost.exchange(&self.cfg.exchange) else {
            return 0x80;
        };
        // The granted QoS rides on the binding, so it is stored with the
        // session and comes back after a reconnect or a restart.
        let granted = f.qos.min(2);
        let mut args = Table::default();
        args.insert(GRANTED_QOS, Value::U8(granted));
        let key = filter_to_key(&f.filter);
        if let Err(e) = self.vhost.bind_queue(&q.name, &x.name, &key, &args, 0) {
            tracing::warn!(client_id = %self.client_id, "MQTT subscribe failed: {e}");
            return 0x80;
        }
        // A resubscription replaces the old one: new binding first, then
        // the old one goes, so the flow of messages is not interrupted.
        let _ = self
            .vhost
            .unbind_queue_except(&q.name, &x.name, &key, Some(&args));
        let mut m = self.consumer.max_qos.lock();
        *m = (*m).max(granted);
        granted
    }

    /// `$share/group/filter`: members of a group consume one shared queue,
    /// so each message goes to one of them (round-robin, within credit).
    fn subscribe_shared(&mut self, f: &codec::Filter, rest: &str) -> u8 {
        let failure = if self.level == 5 { 0x8F } else { 0x80 };
        let Some((group, filter)) = rest.split_once('/') else {
            return failure;
        };
        if group.is_empty() || group.contains(['+', '#']) || !valid_filter(filter) {
            return failure;
        }
        if self.ext().shared_subs.contains_key(&f.filter) {
            return f.qos.min(2);
        }
        let Ok(x) = self.vhost.exchange(&self.cfg.exchange) else {
            return 0x80;
        };
        let name = format!("mqtt-shared-{group}-{filter}");
        if !self.may_subscribe(&name) {
            return self.not_authorized();
        }
        let decl = QueueDeclare {
            name: name.clone(),
            auto_delete: true,
            ..Default::default()
        };
        let q = match self.vhost.declare_queue(&decl, 0) {
            Ok((q, _, _)) => q,
            Err(e) => return self.queue_refused(&e),
        };
        if self
            .vhost
            .bind_queue(&name, &x.name, &filter_to_key(filter), &Table::default(), 0)
            .is_err()
        {
            return 0x80;
        }
        let consumer = self.consumer.clone();
        let spec = ConsumerSpec {
            tag: Arc::from(f.filter.as_str()),
            channel_id: self.conn_id,
            no_ack: false,
            exclusive: false,
            priority: 0,
            consumer,
        };
        if q.add_consumer(spec).is_err() {
            return 0x80;
        }
        self.ext().shared_subs.insert(f.filter.clone(), q);
        let granted = f.qos.min(2);
        let mut m = self.consumer.max_qos.lock();
        *m = (*m).max(granted);
        granted
    }

    /// RabbitMQ's rule for a subscription: configure and write on the
    /// queue, read on the exchange.
    /// SUBACK code for a subscription whose queue could not be made: 0x97
    /// quota exceeded (5.0) when the vhost's `max-queues` refused it.
    fn queue_refused(&self, e: &CoreError) -> u8 {
        tracing::warn!(peer = %self.peer, user = %self.guard.user, vhost = %self.vhost.name, client_id = %self.client_id, "MQTT subscribe failed: {e}");
        match e {
            CoreError::LimitReached(_) if self.level == 5 => QUOTA_EXCEEDED,
            _ => V4_SUBACK_FAILURE,
        }
    }

    fn may_subscribe(&self, queue: &str) -> bool {
        let g = &self.guard;
        g.check(Access::Configure, Resource::Queue, queue).is_ok()
            && g.check(Access::Write, Resource::Queue, queue).is_ok()
            && g.check(Access::Read, Resource::Exchange, &self.cfg.exchange)
                .is_ok()
    }

    fn not_authorized(&self) -> u8 {
        if self.level == 5 {
            0x87
        } else {
            0x80
        }
    }

    /// Write permission on the MQTT exchange, re-checked when permissions change.
    fn may_publish(&mut self) -> warren_core::Result<()> {
        let generation = self.guard.generation();
        if self.publish_ok == Some(generation) {
            return Ok(());
        }
        self.guard
            .check(Access::Write, Resource::Exchange, &self.cfg.exchange)?;
        self.publish_ok = Some(generation);
        Ok(())
    }

    fn leave_shared(&self, q: &Arc<Queue>, filter: &str) {
        if q.remove_consumer(self.conn_id, filter) {
            self.vhost.remove_queue(q);
        }
    }

    fn message(&self, topic: &str, p: &Publish) -> Result<Message, String> {
        let own = self
            .extras
            .iter()
            .flat_map(|e| e.no_local.iter())
            .any(|f| matches(f, topic))
            .then_some(self.conn_id);
        let exchange: Arc<str> = match &self.exchange {
            Some(x) => x.name.clone(),
            None => Arc::from(self.cfg.exchange.as_str()),
        };
        let key_len = topic.len().min(255);
        let mut meta = BytesMut::with_capacity(key_len + 32);
        // The routing key is the topic with `/` and `.` swapped.
        meta.extend(topic.as_bytes()[..key_len].iter().map(|b| match b {
            b'/' => b'.',
            b'.' => b'/',
            other => *other,
        }));
        if own.is_none() && !p.retain && is_plain(&p.props) {
            // The common publish: no table or property struct is built.
            plain_props(&mut meta, p.qos);
        } else {
            meta.extend_from_slice(&props_to_amqp(p, own));
        }
        Message::new(exchange, meta.freeze(), key_len as u8, p.payload.clone())
            .map_err(|e| e.to_string())
    }

    /// Route a PUBLISH; returns the store sequence to wait for, if any.
    fn route(&mut self, p: &Publish) -> Result<Option<u64>, String> {
        // The MQTT exchange is looked up once, not per message (the lookup
        // takes the vhost's topology lock).
        if self.exchange.as_ref().is_none_or(|x| x.is_deleted()) {
            self.exchange = Some(
                self.vhost
                    .exchange(&self.cfg.exchange)
                    .map_err(|e| e.to_string())?,
            );
        }
        let msg = self.message(&p.topic, p)?;
        ConnStats::add(&self.registration.info.stats.published, 1);
        let x = self.exchange.as_ref().expect("looked up above");
        let routed = self
            .vhost
            .publish(x, msg, &mut self.scratch)
            .map_err(|e| e.to_string())?;
        self.backlogged |= routed.backlogged;
        Ok(routed.sync_seq)
    }

    fn retain(&self, p: &Publish) {
        let key = (self.vhost.name.to_string(), p.topic.clone());
        let mut r = self.shared.retained.lock();
        if p.payload.is_empty() {
            r.remove(&key);
        } else if let Ok(m) = self.message(&p.topic, p) {
            r.insert(key, m);
        }
    }

    fn send_retained(&self, filter: &str) {
        let found: Vec<Message> = {
            let r = self.shared.retained.lock();
            r.iter()
                .filter(|((v, t), _)| **v == *self.vhost.name && matches(filter, t))
                .map(|(_, m)| m.clone())
                .collect()
        };
        let level = self.level;
        for m in found {
            let p = Publish {
                dup: false,
                qos: 0,
                retain: true,
                topic: swap(m.routing_key()),
                pkid: 0,
                props: if level == 5 {
                    amqp_to_props(&m)
                } else {
                    Props::default()
                },
                payload: m.body.clone(),
            };
            self.out.push(|o| codec::write_publish(o, level, &p));
        }
    }

    /// Release the session's consumers; a clean session's queue goes.
    fn cleanup(&mut self) {
        // Given back first: a client may reconnect while this one flushes.
        self.lease = None;
        {
            let c = &self.consumer;
            c.active.store(false, Ordering::Release);
        }
        let groups = self
            .extras
            .as_mut()
            .map(|e| std::mem::take(&mut e.shared_subs))
            .unwrap_or_default();
        for (filter, q) in groups {
            self.leave_shared(&q, &filter);
        }
        if let Some(q) = &self.queue {
            q.remove_consumer(self.conn_id, &self.consumer_tag);
        }
        // Unacknowledged QoS 1 deliveries go back to the queue each came from.
        let inflight: Vec<(Arc<Queue>, Delivery)> = self
            .consumer
            .inflight
            .lock()
            .by_id
            .drain()
            .map(|(_, v)| v)
            .collect();
        for (q, d) in inflight {
            q.requeue([d]);
        }
        let Some(q) = self.queue.take() else {
            return;
        };
        // A session that ends with its connection loses its queue now;
        // otherwise the queue's x-expires (see ensure_queue) applies.
        if self.expiry == Some(Duration::ZERO) {
            self.vhost.remove_queue(&q);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_properties_match_the_general_encoding() {
        for qos in [0u8, 1, 2] {
            let p = Publish {
                dup: false,
                qos,
                retain: false,
                topic: "a/b".into(),
                pkid: 1,
                props: Props::default(),
                payload: Bytes::from_static(b"x"),
            };
            let mut fast = BytesMut::new();
            plain_props(&mut fast, qos);
            assert_eq!(&fast[..], &props_to_amqp(&p, None)[..], "qos {qos}");
        }
    }

    #[test]
    fn topic_and_filter_rules() {
        assert_eq!(swap("sensors/room1/temp"), "sensors.room1.temp");
        assert_eq!(swap("v1.2/x"), "v1/2.x");
        assert_eq!(filter_to_key("sensors/+/temp"), "sensors.*.temp");
        assert_eq!(filter_to_key("a/#"), "a.#");
        for ok in ["a", "a/+/b", "#", "+", "a/#", "/a", "a//b"] {
            assert!(valid_filter(ok), "{ok}");
        }
        for bad in ["", "a/#/b", "a+", "a/b#", "#/a"] {
            assert!(!valid_filter(bad), "{bad}");
        }
        assert!(valid_topic("a/b") && !valid_topic("a/+") && !valid_topic("") && !valid_topic("#"));
        assert!(matches("a/+/c", "a/b/c") && matches("a/#", "a") && matches("#", "x/y"));
        assert!(!matches("a/+", "a/b/c") && !matches("+/x", "$SYS/x") && !matches("a/b", "a"));
    }
}
