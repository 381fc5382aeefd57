//! Declare and delete: exchange.declare and queue.declare with RabbitMQ's
//! checks (reserved names, passive misses, equivalence on redeclare, the
//! vhost's queue limit), their deletes, purge and internal queues.

use std::fmt::Display;
use std::sync::Arc;

use super::{reserved, Topology, VHost};
use crate::error::{CoreError, Result};
use crate::exchange::{Binding, Destination, Exchange};
use crate::queue::Queue;
use crate::replicate::Change;
use crate::value::{Table, Value};

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
    /// The cluster node it lives on (a replicated declare names it; none
    /// means this node).
    pub home: Option<String>,
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

/// The entity being redeclared, for RabbitMQ's "inequivalent arg" 406.
struct Redeclare<'a> {
    what: &'static str,
    name: &'a str,
    vhost: &'a str,
}

impl Redeclare<'_> {
    /// 406 unless the declared value `got` is the current `cur`.
    fn same<T: PartialEq + Display>(&self, field: &str, got: T, cur: T) -> Result<()> {
        if got == cur {
            Ok(())
        } else {
            Err(self.differs(field, got, cur))
        }
    }

    fn differs(&self, field: &str, got: impl Display, cur: impl Display) -> CoreError {
        CoreError::PreconditionFailed(format!(
            "inequivalent arg '{field}' for {} '{}' in vhost '{}': received '{got}' but current is '{cur}'",
            self.what, self.name, self.vhost
        ))
    }
}

impl VHost {
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
            self.check_exchange_equivalent(x, d)?;
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
        if d.durable {
            if let Some(r) = self.proposer() {
                drop(topo);
                r.commit(Change::DeclareExchange(self.exchange_def(d)))?;
                return self.exchange(&d.name);
            }
        }
        topo.exchanges.insert(d.name.clone(), x.clone());
        drop(topo);
        tracing::debug!(vhost = %self.name, exchange = %d.name, kind = %d.kind, "exchange declared");
        if x.durable {
            self.changed();
        }
        Ok(x)
    }

    /// A redeclare must match the exchange's type and flags (406).
    fn check_exchange_equivalent(&self, x: &Exchange, d: &ExchangeDeclare) -> Result<()> {
        let r = Redeclare {
            what: "exchange",
            name: &d.name,
            vhost: &self.name,
        };
        r.same("type", &d.kind, &x.kind)?;
        r.same("durable", d.durable, x.durable)?;
        r.same("auto_delete", d.auto_delete, x.auto_delete)?;
        r.same("internal", d.internal, x.internal)
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
        if x.durable {
            if let Some(r) = self.proposer() {
                drop(topo);
                let (vhost, name) = (self.name.to_string(), name.to_string());
                return r.commit(Change::DeleteExchange { vhost, name });
            }
        }
        Self::remove_exchanges(&mut topo, vec![x.name.to_string()]);
        drop(topo);
        if x.durable {
            self.changed();
        }
        Ok(())
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
        // The retained store's pseudo-queue in the log: never a queue, even
        // from recovered definitions, or its key would be shared.
        if name == crate::retained::RETAINED_QUEUE || name == crate::session_ids::SESSION_IDS_QUEUE
        {
            return Err(CoreError::AccessRefused(format!(
                "queue name '{name}' is reserved for MQTT session state"
            )));
        }
        if reserved(&name) && !d.name.is_empty() && !d.server_named {
            return Err(CoreError::AccessRefused(format!(
                "queue name '{name}' contains reserved prefix 'amq.*'"
            )));
        }
        self.check_queue_limit(&topo, &name)?;
        let owner = d.exclusive.then_some(conn);
        let q = self.new_queue(&name, d, owner)?;
        if q.durable && owner.is_none() {
            if let Some(r) = self.proposer() {
                drop(topo);
                r.commit(Change::DeclareQueue(self.queue_def(&name, d)))?;
                let q = self.queue(&name)?;
                let (m, c) = (q.message_count(), q.consumer_count());
                return Ok((q, m, c));
            }
        }
        self.insert_queue(&mut topo, q.clone())?;
        drop(topo);
        self.watch_expiry(&q);
        tracing::debug!(vhost = %self.name, queue = %name, "queue declared");
        if q.durable {
            self.changed();
        }
        Ok((q, 0, 0))
    }

    /// The queue a declare makes: a proxy when it lives on another node.
    fn new_queue(&self, name: &str, d: &QueueDeclare, owner: Option<u64>) -> Result<Arc<Queue>> {
        let q = Queue::new(
            &self.name,
            name,
            d.durable,
            owner,
            d.auto_delete,
            d.args.clone(),
        )?
        .with_home(d.home.as_deref());
        let link = self
            .cluster_link()
            .filter(|l| d.home.as_deref().is_some_and(|h| h != l.node()));
        let Some(link) = link else {
            return Ok(Arc::new(
                q.with_store(self.log.clone())
                    .with_pages(self.pages.clone()),
            ));
        };
        let home = link.home(d.home.as_deref().unwrap_or_default());
        let made = q.make_proxy(home);
        debug_assert!(made, "a new queue is empty");
        Ok(Arc::new(q))
    }

    /// A redeclare must match the queue's flags and the arguments RabbitMQ
    /// compares (406).
    fn check_equivalent(&self, q: &Queue, d: &QueueDeclare) -> Result<()> {
        let r = Redeclare {
            what: "queue",
            name: &q.name,
            vhost: &self.name,
        };
        r.same("durable", d.durable, q.durable)?;
        r.same("exclusive", d.exclusive, q.exclusive())?;
        r.same("auto_delete", d.auto_delete, q.auto_delete)?;
        for k in EQUIVALENT_QUEUE_ARGS {
            let (got, cur) = (d.args.get(k), q.args.get(k));
            if !same_value(got, cur) {
                let show = |v: Option<&Value>| v.map_or("none".to_string(), |v| format!("{v:?}"));
                return Err(r.differs(k, show(got), show(cur)));
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
        if q.durable && !q.exclusive() {
            if let Some(r) = self.proposer() {
                let dropped = q.message_count();
                let (vhost, name) = (self.name.to_string(), name.to_string());
                r.commit(Change::DeleteQueue { vhost, name })?;
                return Ok(dropped);
            }
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
        Self::drop_bindings_to(&topo, &Destination::Queue(q.clone()), &mut emptied);
        Self::remove_exchanges(&mut topo, emptied);
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

    /// Start the `x-expires` timer of `q` unless one runs: the queue is
    /// deleted once it has had no consumer, redeclare or get for its
    /// expiry period (RabbitMQ's queue TTL). After a restart the period
    /// counts from recovery, as in RabbitMQ.
    pub fn watch_expiry(&self, q: &Arc<Queue>) {
        q.start_expiry_timer(&self.me);
    }
}
