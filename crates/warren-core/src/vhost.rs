//! A virtual host: its exchanges, queues and bindings, and the publish entry
//! point every protocol adapter calls.
//!
//! Topology changes take the vhost's `topology` lock; publishing only reads
//! the exchange's own lock and then each queue's lock, never the topology
//! lock once the adapter has cached the exchange.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use parking_lot::{RwLock, RwLockWriteGuard};
use warren_store::{BindingDef, ExchangeDef, Log, QueueDef, QueueKey};

use crate::error::{CoreError, Result};
use crate::exchange::{Binding, BindingId, Destination, Exchange, TypeRegistry};
use crate::limits::VhostLimits;
use crate::message::Message;
use crate::props::Properties;
use crate::queue::{DeadLetter, DeathReason, Enqueued, Queue};
use crate::value::{Table, Value};

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
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Routed {
    /// Queues that accepted the message.
    pub queues: usize,
    /// A queue refused it (`x-overflow: reject-publish`): confirm with a nack.
    pub rejected: bool,
    /// A queue's consumers are far behind: the publisher should pause.
    pub backlogged: bool,
    /// The message went to the store; confirm once this sequence is synced.
    pub sync_seq: Option<u64>,
}

/// Parameters of queue.declare.
#[derive(Clone, Debug, Default)]
pub struct QueueDeclare {
    /// Empty means "make up a name".
    pub name: String,
    /// Only check existence.
    pub passive: bool,
    /// Survives restarts.
    pub durable: bool,
    /// Owned by the declaring connection.
    pub exclusive: bool,
    /// Deleted after its last consumer.
    pub auto_delete: bool,
    /// `x-` arguments.
    pub args: Table,
    /// The name was made up by the server (it may use the `amq.` prefix).
    pub server_named: bool,
}

/// Parameters of exchange.declare.
#[derive(Clone, Debug, Default)]
pub struct ExchangeDeclare {
    /// Exchange name.
    pub name: String,
    /// Type name.
    pub kind: String,
    /// Only check existence.
    pub passive: bool,
    /// Survives restarts.
    pub durable: bool,
    /// Deleted after its last binding.
    pub auto_delete: bool,
    /// Not publishable by clients.
    pub internal: bool,
    /// Arguments.
    pub args: Table,
}

/// One binding, as listed to operators.
#[derive(Clone, Debug, PartialEq)]
pub struct BindingInfo {
    /// Source exchange.
    pub source: String,
    /// Destination name.
    pub destination: String,
    /// "queue" or "exchange".
    pub destination_kind: &'static str,
    /// Binding key.
    pub key: String,
    /// Binding arguments.
    pub args: Table,
}

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
    on_change: Option<DefinitionsHook>,
    topology: RwLock<Topology>,
    name_counter: AtomicU64,
    /// Itself, for timers (set by [`VHost::new_shared`]).
    me: Weak<VHost>,
    /// RabbitMQ's vhost limits and the vhost's connection count; shared
    /// with the connections' leases.
    pub limits: Arc<VhostLimits>,
}

/// Called, without locks held, after a durable definition changed.
pub type DefinitionsHook = Arc<dyn Fn() + Send + Sync>;

fn args_b64(t: &Table) -> String {
    use base64::Engine;
    let mut b = bytes::BytesMut::new();
    t.encode(&mut b);
    base64::engine::general_purpose::STANDARD.encode(&b)
}

/// Decode arguments stored by [`VHost::durable_definitions`].
pub fn args_from_b64(s: &str) -> Table {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .ok()
        .and_then(|b| Table::decode(&b).ok())
        .map(|(t, _)| t)
        .unwrap_or_default()
}

/// Queue arguments whose values must match on redeclare, as in RabbitMQ.
const EQUIVALENT_QUEUE_ARGS: &[&str] = &[
    "x-message-ttl",
    "x-expires",
    "x-max-length",
    "x-max-length-bytes",
    "x-overflow",
    "x-dead-letter-exchange",
    "x-dead-letter-routing-key",
    "x-max-priority",
    "x-queue-type",
    "x-single-active-consumer",
];

fn same_value(a: Option<&Value>, b: Option<&Value>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => match (a.as_i64(), b.as_i64()) {
            (Some(x), Some(y)) => x == y,
            _ => a == b,
        },
        _ => false,
    }
}

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
        on_change: Option<DefinitionsHook>,
    ) -> VHost {
        let v = VHost {
            name: Arc::from(name),
            types,
            log,
            on_change,
            topology: RwLock::new(Topology::default()),
            name_counter: AtomicU64::new(0),
            me: Weak::new(),
            limits: Arc::default(),
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

    /// [`VHost::new`] behind an `Arc` that knows itself (queue timers need it).
    pub fn new_shared(
        name: &str,
        types: Arc<TypeRegistry>,
        log: Option<Arc<Log>>,
        on_change: Option<DefinitionsHook>,
    ) -> Arc<VHost> {
        Arc::new_cyclic(|me| {
            let mut v = VHost::new(name, types, log, on_change);
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

    /// Durable exchanges, queues and bindings, for the store.
    pub fn durable_definitions(&self) -> (Vec<ExchangeDef>, Vec<QueueDef>, Vec<BindingDef>) {
        let topo = self.topology.read();
        let vhost = self.name.to_string();
        let mut xs: Vec<ExchangeDef> = topo
            .exchanges
            .values()
            .filter(|x| x.durable && !x.name.is_empty() && !self.is_predeclared(&x.name))
            .map(|x| ExchangeDef {
                vhost: vhost.clone(),
                name: x.name.to_string(),
                kind: x.kind.clone(),
                auto_delete: x.auto_delete,
                internal: x.internal,
                arguments: args_b64(&x.args),
            })
            .collect();
        xs.sort_by(|a, b| a.name.cmp(&b.name));
        let mut qs: Vec<QueueDef> = topo
            .queues
            .values()
            .filter(|q| q.durable && !q.hidden)
            .map(|q| QueueDef {
                vhost: vhost.clone(),
                name: q.name.to_string(),
                auto_delete: q.auto_delete,
                arguments: args_b64(&q.current_args()),
            })
            .collect();
        qs.sort_by(|a, b| a.name.cmp(&b.name));
        let mut bs = Vec::new();
        for x in topo.exchanges.values() {
            if x.name.is_empty() || !x.durable {
                continue;
            }
            for b in x.bindings() {
                let (durable, kind) = match &b.dest {
                    Destination::Queue(q) => (q.durable, "queue"),
                    Destination::Exchange(e) => (e.durable, "exchange"),
                };
                if durable {
                    bs.push(BindingDef {
                        vhost: vhost.clone(),
                        source: x.name.to_string(),
                        destination: b.dest.name().to_string(),
                        destination_type: kind.into(),
                        routing_key: b.key.clone(),
                        arguments: args_b64(&b.args),
                    });
                }
            }
        }
        bs.sort_by(|a, b| {
            (&a.source, &a.destination, &a.routing_key).cmp(&(
                &b.source,
                &b.destination,
                &b.routing_key,
            ))
        });
        (xs, qs, bs)
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

    /// All bindings, default-exchange ones included, as RabbitMQ lists them.
    pub fn bindings(&self) -> Vec<BindingInfo> {
        let mut out = Vec::new();
        for x in self.exchanges() {
            for b in x.bindings() {
                if matches!(&b.dest, Destination::Queue(q) if q.hidden) {
                    continue;
                }
                out.push(BindingInfo {
                    source: x.name.to_string(),
                    destination: b.dest.name().to_string(),
                    destination_kind: match b.dest {
                        Destination::Queue(_) => "queue",
                        Destination::Exchange(_) => "exchange",
                    },
                    key: b.key,
                    args: b.args,
                });
            }
        }
        out
    }

    /// exchange.declare with RabbitMQ's checks (403 reserved names, 404
    /// passive miss, 406 inequivalent, 503 unknown type).
    pub fn declare_exchange(&self, d: &ExchangeDeclare) -> Result<Arc<Exchange>> {
        if d.name.is_empty() {
            return Err(CoreError::AccessRefused(
                "operation not permitted on the default exchange".into(),
            ));
        }
        if d.passive {
            return self.exchange(&d.name);
        }
        let kind = self.types.get(&d.kind).ok_or_else(|| {
            CoreError::CommandInvalid(format!("invalid exchange type '{}'", d.kind))
        })?;
        let mut topo = self.topology.write();
        if let Some(x) = topo.exchanges.get(&d.name) {
            let ineq = |field: &str, got: String, cur: String| {
                CoreError::PreconditionFailed(format!(
                    "inequivalent arg '{field}' for exchange '{}' in vhost '{}': received '{got}' but current is '{cur}'",
                    d.name, self.name
                ))
            };
            if x.kind != d.kind {
                return Err(ineq("type", d.kind.clone(), x.kind.clone()));
            }
            if x.durable != d.durable {
                return Err(ineq(
                    "durable",
                    d.durable.to_string(),
                    x.durable.to_string(),
                ));
            }
            if x.auto_delete != d.auto_delete {
                return Err(ineq(
                    "auto_delete",
                    d.auto_delete.to_string(),
                    x.auto_delete.to_string(),
                ));
            }
            if x.internal != d.internal {
                return Err(ineq(
                    "internal",
                    d.internal.to_string(),
                    x.internal.to_string(),
                ));
            }
            return Ok(x.clone());
        }
        if reserved(&d.name) {
            return Err(CoreError::AccessRefused(format!(
                "exchange name '{}' contains reserved prefix 'amq.*'",
                d.name
            )));
        }
        let x = Arc::new(Exchange::new(
            &d.name,
            &kind,
            d.durable,
            d.auto_delete,
            d.internal,
            d.args.clone(),
        )?);
        topo.exchanges.insert(d.name.clone(), x.clone());
        drop(topo);
        tracing::debug!(vhost = %self.name, exchange = %d.name, kind = %d.kind, "exchange declared");
        if x.durable {
            self.changed();
        }
        Ok(x)
    }

    /// exchange.delete; deleting a missing exchange succeeds, as in RabbitMQ 3.x.
    pub fn delete_exchange(&self, name: &str, if_unused: bool) -> Result<()> {
        if name.is_empty() || (reserved(name) && self.is_predeclared(name)) {
            return Err(CoreError::AccessRefused(format!(
                "operation not permitted on the {} exchange",
                if name.is_empty() {
                    "default".to_string()
                } else {
                    format!("'{name}'")
                }
            )));
        }
        let mut topo = self.topology.write();
        let Some(x) = topo.exchanges.get(name).cloned() else {
            return Ok(());
        };
        if if_unused && x.binding_count() > 0 {
            return Err(CoreError::PreconditionFailed(format!(
                "exchange '{name}' in vhost '{}' in use",
                self.name
            )));
        }
        topo.exchanges.remove(name);
        x.mark_deleted();
        // Bindings that lead to the deleted exchange go too.
        let mut emptied = Vec::new();
        for other in topo.exchanges.values() {
            let (removed, left) = other.remove_bindings(
                |b| matches!(&b.dest, Destination::Exchange(e) if Arc::ptr_eq(e, &x)),
            );
            if removed > 0 && left == 0 && other.auto_delete {
                emptied.push(other.name.to_string());
            }
        }
        x.remove_bindings(|_| true);
        Self::auto_delete_exchanges(&mut topo, emptied);
        drop(topo);
        if x.durable {
            self.changed();
        }
        Ok(())
    }

    fn is_predeclared(&self, name: &str) -> bool {
        matches!(
            name,
            "amq.direct" | "amq.fanout" | "amq.topic" | "amq.headers" | "amq.match"
        )
    }

    fn auto_delete_exchanges(topo: &mut Topology, mut names: Vec<String>) {
        while let Some(n) = names.pop() {
            if let Some(x) = topo.exchanges.remove(&n) {
                x.mark_deleted();
                for other in topo.exchanges.values() {
                    let (removed, left) = other.remove_bindings(
                        |b| matches!(&b.dest, Destination::Exchange(e) if Arc::ptr_eq(e, &x)),
                    );
                    if removed > 0 && left == 0 && other.auto_delete {
                        names.push(other.name.to_string());
                    }
                }
                x.remove_bindings(|_| true);
            }
        }
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

    /// queue.declare. Returns the queue, its ready count and consumer count.
    pub fn declare_queue(&self, d: &QueueDeclare, conn: u64) -> Result<(Arc<Queue>, u32, u32)> {
        if d.passive && !d.name.is_empty() {
            let q = self.queue(&d.name)?;
            q.check_owner(conn)?;
            let (m, c) = (q.message_count(), q.consumer_count());
            return Ok((q, m, c));
        }
        let name = if d.name.is_empty() {
            self.generate_name("amq.gen-")
        } else {
            d.name.clone()
        };
        let mut topo = self.topology.write();
        if let Some(q) = topo.queues.get(&name).cloned() {
            drop(topo);
            q.check_owner(conn)?;
            self.check_equivalent(&q, d)?;
            q.touch();
            let (m, c) = (q.message_count(), q.consumer_count());
            return Ok((q, m, c));
        }
        if reserved(&name) && !d.name.is_empty() && !d.server_named {
            return Err(CoreError::AccessRefused(format!(
                "queue name '{name}' contains reserved prefix 'amq.*'"
            )));
        }
        self.check_queue_limit(&topo, &name)?;
        let owner = d.exclusive.then_some(conn);
        let q = Arc::new(
            Queue::new(
                &self.name,
                &name,
                d.durable,
                owner,
                d.auto_delete,
                d.args.clone(),
            )?
            .with_store(self.log.clone()),
        );
        self.insert_queue(&mut topo, q.clone())?;
        drop(topo);
        self.watch_expiry(&q);
        tracing::debug!(vhost = %self.name, queue = %name, "queue declared");
        if q.durable {
            self.changed();
        }
        Ok((q, 0, 0))
    }

    /// Start the `x-expires` timer of `q` unless one runs: the queue is
    /// deleted once it has had no consumer, redeclare or get for its
    /// expiry period (RabbitMQ's queue TTL). After a restart the period
    /// counts from recovery, as in RabbitMQ.
    pub fn watch_expiry(&self, q: &Arc<Queue>) {
        if q.expires().is_none() || q.expiry_timer.swap(true, Ordering::AcqRel) {
            return;
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            q.expiry_timer.store(false, Ordering::Release);
            return;
        };
        let (vhost, queue) = (self.me.clone(), Arc::downgrade(q));
        rt.spawn(async move {
            loop {
                let (Some(q), Some(v)) = (queue.upgrade(), vhost.upgrade()) else {
                    return;
                };
                if q.is_deleted() {
                    return;
                }
                let Some(period) = q.expires() else {
                    q.expiry_timer.store(false, Ordering::Release);
                    return;
                };
                let wait = match q.unused_for() {
                    Some(idle) if idle >= period => {
                        tracing::info!(vhost = %v.name, queue = %q.name, "queue expired (unused for {period:?})");
                        v.remove_queue(&q);
                        return;
                    }
                    Some(idle) => period - idle,
                    None => period,
                };
                drop((q, v));
                tokio::time::sleep(wait).await;
            }
        });
    }

    /// Republish the dead letters of queue `name` to its dead-letter
    /// exchange (the queue's drain task; runs outside every lock).
    pub(crate) fn drain_dead_letters(&self, name: &str) {
        let Ok(q) = self.queue(name) else { return };
        let Some(dl) = q.limits.dead_letter.clone() else {
            return;
        };
        let mut scratch = RouteScratch::default();
        loop {
            for (m, reason) in q.take_dead_letters() {
                if let Err(e) = self.republish_dead(&q, &dl, m, reason, &mut scratch) {
                    tracing::debug!(queue = %q.name, "dead letter dropped: {e}");
                }
            }
            if !q.dead_letters_pending() {
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
        q: &Queue,
        dl: &DeadLetter,
        m: Message,
        reason: DeathReason,
        scratch: &mut RouteScratch,
    ) -> Result<()> {
        let x = self.exchange(&dl.exchange)?;
        let mut props = Properties::decode(m.raw_properties())
            .map_err(|e| CoreError::Internal(format!("bad properties: {e}")))?;
        let mut headers = props.headers.take().unwrap_or_default();
        let mut deaths = match headers.get("x-death") {
            Some(Value::Array(a)) => a.clone(),
            _ => Vec::new(),
        };
        let field = |t: &Table, k: &str| t.get(k).and_then(|v| v.as_str()).map(String::from);
        let same = |v: &Value| match v {
            Value::Table(t) => {
                field(t, "queue").as_deref() == Some(&*q.name)
                    && field(t, "reason").as_deref() == Some(reason.as_str())
            }
            _ => false,
        };
        let automatic = deaths.iter().all(|d| match d {
            Value::Table(t) => field(t, "reason").as_deref() != Some("rejected"),
            _ => true,
        });
        let count = match deaths.iter().position(same) {
            Some(i) => {
                if reason != DeathReason::Rejected && automatic {
                    tracing::warn!(queue = %q.name, "dead-letter cycle without rejection: message dropped");
                    return Ok(());
                }
                let old = deaths.remove(i);
                match old {
                    Value::Table(t) => t.get("count").and_then(|c| c.as_i64()).unwrap_or(1) + 1,
                    _ => 1,
                }
            }
            None => 1,
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let mut death = Table::default();
        death.insert("count", Value::I64(count));
        death.insert("reason", Value::str(reason.as_str()));
        death.insert("queue", Value::str(&q.name));
        death.insert("time", Value::Timestamp(now));
        death.insert("exchange", Value::str(&m.exchange));
        death.insert(
            "routing-keys",
            Value::Array(vec![Value::str(m.routing_key())]),
        );
        if let Some(exp) = &props.expiration {
            death.insert("original-expiration", Value::str(exp));
        }
        deaths.insert(0, Value::Table(death));
        if headers.get("x-first-death-reason").is_none() {
            headers.insert("x-first-death-reason", Value::str(reason.as_str()));
            headers.insert("x-first-death-queue", Value::str(&q.name));
            headers.insert("x-first-death-exchange", Value::str(&m.exchange));
        }
        headers.insert("x-death", Value::Array(deaths));
        props.headers = Some(headers);
        props.expiration = None;
        let key = dl.routing_key.as_deref().unwrap_or(m.routing_key());
        let msg = Message::from_parts(&x.name, key, &props.encode(), m.body.clone())
            .map_err(|e| CoreError::Internal(format!("dead letter: {e}")))?;
        self.publish(&x, msg, scratch)?;
        Ok(())
    }

    /// A durable queue's settings changed (its `x-expires`): save definitions.
    pub fn queue_changed(&self, q: &Queue) {
        if q.durable {
            self.changed();
        }
    }

    /// Add an internal queue (direct reply-to) under a fixed name.
    pub fn add_hidden_queue(&self, q: Queue) -> Result<Arc<Queue>> {
        let q = Arc::new(q);
        let mut topo = self.topology.write();
        self.insert_queue(&mut topo, q.clone())?;
        Ok(q)
    }

    /// Whether declaring `name` now would be refused by `max-queues` (an
    /// existing queue never is): MQTT asks before it answers CONNACK.
    pub fn may_declare_queue(&self, name: &str) -> Result<()> {
        let topo = self.topology.read();
        if topo.queues.contains_key(name) {
            return Ok(());
        }
        self.check_queue_limit(&topo, name)
    }

    /// RabbitMQ's `max-queues`: a new queue is refused once the vhost has
    /// that many (hidden direct reply-to queues are not counted).
    fn check_queue_limit(&self, topo: &Topology, name: &str) -> Result<()> {
        let existing = || topo.queues.values().filter(|q| !q.hidden).count();
        self.limits.check_new_queue(existing).map_err(|limit| {
            CoreError::LimitReached(format!(
                "cannot declare queue '{name}': queue limit in vhost '{}' ({limit}) is reached",
                self.name
            ))
        })
    }

    fn insert_queue(&self, topo: &mut Topology, q: Arc<Queue>) -> Result<()> {
        let _ = q.home.set(self.me.clone());
        let default = topo.exchanges.get("").expect("default exchange").clone();
        default.add_binding(Binding {
            dest: Destination::Queue(q.clone()),
            key: q.name.to_string(),
            args: Table::default(),
        })?;
        topo.queues.insert(q.name.to_string(), q);
        Ok(())
    }

    fn check_equivalent(&self, q: &Queue, d: &QueueDeclare) -> Result<()> {
        let ineq = |field: &str, got: String, cur: String| {
            CoreError::PreconditionFailed(format!(
                "inequivalent arg '{field}' for queue '{}' in vhost '{}': received '{got}' but current is '{cur}'",
                q.name, self.name
            ))
        };
        if q.durable != d.durable {
            return Err(ineq(
                "durable",
                d.durable.to_string(),
                q.durable.to_string(),
            ));
        }
        if q.exclusive() != d.exclusive {
            return Err(ineq(
                "exclusive",
                d.exclusive.to_string(),
                q.exclusive().to_string(),
            ));
        }
        if q.auto_delete != d.auto_delete {
            return Err(ineq(
                "auto_delete",
                d.auto_delete.to_string(),
                q.auto_delete.to_string(),
            ));
        }
        for k in EQUIVALENT_QUEUE_ARGS {
            let (got, cur) = (d.args.get(k), q.args.get(k));
            if !same_value(got, cur) {
                let show = |v: Option<&Value>| v.map_or("none".to_string(), |v| format!("{v:?}"));
                return Err(ineq(k, show(got), show(cur)));
            }
        }
        Ok(())
    }

    /// queue.delete; returns the number of ready messages dropped.
    pub fn delete_queue(
        &self,
        name: &str,
        if_unused: bool,
        if_empty: bool,
        conn: u64,
    ) -> Result<u32> {
        let Ok(q) = self.queue(name) else {
            return Ok(0);
        };
        q.check_owner(conn)?;
        if if_unused && q.consumer_count() > 0 {
            return Err(CoreError::PreconditionFailed(format!(
                "queue '{name}' in vhost '{}' in use",
                self.name
            )));
        }
        if if_empty && q.message_count() > 0 {
            return Err(CoreError::PreconditionFailed(format!(
                "queue '{name}' in vhost '{}' is not empty",
                self.name
            )));
        }
        Ok(self.remove_queue(&q))
    }

    /// Delete a queue unconditionally (auto-delete, exclusive owner gone).
    pub fn remove_queue(&self, q: &Arc<Queue>) -> u32 {
        let mut topo = self.topology.write();
        match topo.queues.get(&*q.name) {
            Some(cur) if Arc::ptr_eq(cur, q) => {
                topo.queues.remove(&*q.name);
            }
            _ => return 0,
        }
        let mut emptied = Vec::new();
        for x in topo.exchanges.values() {
            let (removed, left) = x
                .remove_bindings(|b| matches!(&b.dest, Destination::Queue(d) if Arc::ptr_eq(d, q)));
            if removed > 0 && left == 0 && x.auto_delete {
                emptied.push(x.name.to_string());
            }
        }
        Self::auto_delete_exchanges(&mut topo, emptied);
        drop(topo);
        tracing::debug!(vhost = %self.name, queue = %q.name, "queue deleted");
        let n = q.delete();
        if q.durable {
            self.changed();
        }
        n
    }

    /// queue.purge.
    pub fn purge_queue(&self, name: &str, conn: u64) -> Result<u32> {
        let q = self.queue(name)?;
        q.check_owner(conn)?;
        Ok(q.purge())
    }

    fn check_binding_source(&self, name: &str) -> Result<()> {
        if name.is_empty() {
            return Err(CoreError::AccessRefused(
                "operation not permitted on the default exchange".into(),
            ));
        }
        Ok(())
    }

    fn find_queue(&self, topo: &Topology, name: &str) -> Result<Arc<Queue>> {
        topo.queues
            .get(name)
            .cloned()
            .ok_or_else(|| self.no_queue(name))
    }

    fn find_exchange(&self, topo: &Topology, name: &str) -> Result<Arc<Exchange>> {
        topo.exchanges
            .get(name)
            .cloned()
            .ok_or_else(|| self.no_exchange(name))
    }

    /// Add a binding; durable definitions are saved when both ends are durable.
    fn bind(
        &self,
        source: Arc<Exchange>,
        dest: Destination,
        key: &str,
        args: &Table,
    ) -> Result<()> {
        let durable = source.durable && dest.durable();
        let added = source.add_binding(Binding {
            dest,
            key: key.to_string(),
            args: args.clone(),
        })?;
        if added && durable {
            self.changed();
        }
        Ok(())
    }

    /// Remove a binding (missing is not an error); an auto-delete source
    /// left without bindings goes too.
    fn unbind(
        &self,
        mut topo: RwLockWriteGuard<'_, Topology>,
        source: Arc<Exchange>,
        dest: Destination,
        key: &str,
        args: impl Fn(&Table) -> bool,
    ) {
        let (removed, left) =
            source.remove_bindings(|b| b.dest.same(&dest) && b.key == key && args(&b.args));
        if removed > 0 && left == 0 && source.auto_delete {
            Self::auto_delete_exchanges(&mut topo, vec![source.name.to_string()]);
        }
        drop(topo);
        if removed > 0 && source.durable && dest.durable() {
            self.changed();
        }
    }

    /// queue.bind.
    pub fn bind_queue(
        &self,
        queue: &str,
        exchange: &str,
        key: &str,
        args: &Table,
        conn: u64,
    ) -> Result<()> {
        self.check_binding_source(exchange)?;
        let topo = self.topology.read();
        let q = self.find_queue(&topo, queue)?;
        let x = self.find_exchange(&topo, exchange)?;
        drop(topo);
        q.check_owner(conn)?;
        self.bind(x, Destination::Queue(q), key, args)
    }

    /// queue.unbind; a missing binding is not an error.
    pub fn unbind_queue(
        &self,
        queue: &str,
        exchange: &str,
        key: &str,
        args: &Table,
        conn: u64,
    ) -> Result<()> {
        self.check_binding_source(exchange)?;
        let topo = self.topology.write();
        let q = self.find_queue(&topo, queue)?;
        let x = self.find_exchange(&topo, exchange)?;
        q.check_owner(conn)?;
        self.unbind(topo, x, Destination::Queue(q), key, |a| a == args);
        Ok(())
    }

    /// Remove the bindings from `exchange` to `queue` with `key` whose
    /// arguments are not `keep` (all of them with `None`): an MQTT
    /// resubscribe binds the new arguments first, then drops the old, so
    /// no message falls between.
    pub fn unbind_queue_except(
        &self,
        queue: &str,
        exchange: &str,
        key: &str,
        keep: Option<&Table>,
    ) -> Result<()> {
        let topo = self.topology.write();
        let q = self.find_queue(&topo, queue)?;
        let x = self.find_exchange(&topo, exchange)?;
        self.unbind(topo, x, Destination::Queue(q), key, |a| Some(a) != keep);
        Ok(())
    }

    /// exchange.bind: messages routed by `source` also go through `destination`.
    pub fn bind_exchange(
        &self,
        destination: &str,
        source: &str,
        key: &str,
        args: &Table,
    ) -> Result<()> {
        self.check_binding_source(source)?;
        self.check_binding_source(destination)?;
        let topo = self.topology.read();
        let d = self.find_exchange(&topo, destination)?;
        let s = self.find_exchange(&topo, source)?;
        drop(topo);
        self.bind(s, Destination::Exchange(d), key, args)
    }

    /// exchange.unbind.
    pub fn unbind_exchange(
        &self,
        destination: &str,
        source: &str,
        key: &str,
        args: &Table,
    ) -> Result<()> {
        self.check_binding_source(source)?;
        self.check_binding_source(destination)?;
        let topo = self.topology.write();
        let d = self.find_exchange(&topo, destination)?;
        let s = self.find_exchange(&topo, source)?;
        self.unbind(topo, s, Destination::Exchange(d), key, |a| a == args);
        Ok(())
    }

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
                    .filter_map(|q| q.store().map(|(_, k)| k.clone()))
                    .collect();
                if !keys.is_empty() {
                    let id = log.next_id();
                    msg.store_id = id;
                    let (meta, key_len) = msg.meta();
                    let mut rec = Vec::with_capacity(64 + meta.len() + msg.body.len());
                    warren_store::log::encode_enqueue(
                        &mut rec,
                        id,
                        &keys,
                        &msg.exchange,
                        meta,
                        key_len,
                        &msg.body,
                    );
                    r.sync_seq = Some(log.append_enqueue(id, &keys, &rec));
                }
            }
        }
        let Some((last, rest)) = queues.split_last() else {
            return r;
        };
        let mut tally = |e: Enqueued| match e {
            Enqueued::Accepted => r.queues += 1,
            Enqueued::Backlogged => {
                r.queues += 1;
                r.backlogged = true;
            }
            Enqueued::Rejected => r.rejected = true,
        };
        for q in rest {
            tally(q.enqueue(msg.clone()));
        }
        tally(last.enqueue(msg));
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
