//! Exchanges and exchange types. Built-in types and plugin types implement the
//! same two traits, so the rest of the core sees one kind of exchange type.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::RwLock;

use crate::error::{CoreError, Result};
use crate::message::Message;
use crate::queue::Queue;
use crate::value::Table;

pub mod direct;
pub mod fanout;
pub mod headers;
pub mod topic;

/// Identifies one binding inside one exchange; routers answer with these.
pub type BindingId = u32;

/// What a router may look at when choosing bindings.
pub struct RouteInput<'a> {
    /// The routing key as published.
    pub routing_key: &'a [u8],
    /// The message, for routers that read headers or the body length.
    pub message: Option<&'a Message>,
}

/// Per-exchange routing state created by an [`ExchangeType`].
pub trait ExchangeRouter: Send + Sync {
    /// Add a binding. Errors refuse the binding (e.g. bad arguments).
    fn bind(&mut self, id: BindingId, key: &str, args: &Table) -> Result<()>;
    /// Remove a binding added earlier with the same id.
    fn unbind(&mut self, id: BindingId, key: &str, args: &Table);
    /// Append the ids of matching bindings to `out`; duplicates are removed by the caller.
    fn route(&self, input: &RouteInput<'_>, out: &mut Vec<BindingId>) -> Result<()>;
}

/// A named routing algorithm that exchanges are declared with.
pub trait ExchangeType: Send + Sync {
    /// The `type` clients pass to exchange.declare.
    fn name(&self) -> &str;
    /// Fresh routing state for one exchange, given its declare arguments.
    fn create(&self, args: &Table) -> Result<Box<dyn ExchangeRouter>>;
    /// True when routing depends on the routing key alone, which lets
    /// adapters cache the result per key until the bindings change.
    fn routes_by_key_only(&self) -> bool {
        false
    }
}

/// Registry of exchange types, built-ins first; plugin types refuse to shadow them.
#[derive(Default)]
pub struct TypeRegistry {
    types: RwLock<HashMap<String, Arc<dyn ExchangeType>>>,
}

impl TypeRegistry {
    /// A registry holding direct, fanout, topic and headers.
    pub fn with_builtins() -> Self {
        let r = TypeRegistry::default();
        for t in [
            Arc::new(direct::Direct) as Arc<dyn ExchangeType>,
            Arc::new(fanout::Fanout),
            Arc::new(topic::Topic),
            Arc::new(headers::Headers),
        ] {
            r.register(t).expect("builtin names are distinct");
        }
        r
    }

    /// Add a type; a clash with an existing name is an error naming it.
    pub fn register(&self, t: Arc<dyn ExchangeType>) -> Result<()> {
        let mut types = self.types.write();
        let name = t.name().to_string();
        if types.contains_key(&name) {
            return Err(CoreError::PreconditionFailed(format!(
                "exchange type '{name}' is already registered"
            )));
        }
        types.insert(name, t);
        Ok(())
    }

    /// Look a type up by name.
    pub fn get(&self, name: &str) -> Option<Arc<dyn ExchangeType>> {
        self.types.read().get(name).cloned()
    }

    /// Names of all registered types, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.types.read().keys().cloned().collect();
        v.sort();
        v
    }
}

/// Where a binding leads.
#[derive(Clone)]
pub enum Destination {
    /// A queue.
    Queue(Arc<Queue>),
    /// Another exchange (exchange-to-exchange binding).
    Exchange(Arc<Exchange>),
}

impl Destination {
    /// The destination's name.
    pub fn name(&self) -> &str {
        match self {
            Destination::Queue(q) => &q.name,
            Destination::Exchange(e) => &e.name,
        }
    }
    /// Whether the destination survives restarts.
    pub fn durable(&self) -> bool {
        match self {
            Destination::Queue(q) => q.durable,
            Destination::Exchange(e) => e.durable,
        }
    }

    /// Whether both name the same queue or exchange.
    pub fn same(&self, other: &Destination) -> bool {
        match (self, other) {
            (Destination::Queue(a), Destination::Queue(b)) => Arc::ptr_eq(a, b),
            (Destination::Exchange(a), Destination::Exchange(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

/// One binding as stored by its source exchange.
#[derive(Clone)]
pub struct Binding {
    /// Target of the binding.
    pub dest: Destination,
    /// Binding key.
    pub key: String,
    /// Binding arguments.
    pub args: Table,
}

struct Inner {
    router: Box<dyn ExchangeRouter>,
    slots: Vec<Option<Binding>>,
    free: Vec<BindingId>,
    live: usize,
}

/// An exchange. Routing takes only this exchange's read lock, so publishers
/// to different exchanges never contend, and publishers to one share it.
pub struct Exchange {
    /// Name within its vhost.
    pub name: Arc<str>,
    /// Type name.
    pub kind: String,
    /// Survives restarts.
    pub durable: bool,
    /// Deleted when its last binding goes.
    pub auto_delete: bool,
    /// Refuses direct publishes.
    pub internal: bool,
    /// Declare arguments.
    pub args: Table,
    /// Routing depends only on the key (see [`ExchangeType::routes_by_key_only`]).
    pub key_only: bool,
    inner: RwLock<Inner>,
    generation: AtomicU64,
    deleted: AtomicBool,
}

impl Exchange {
    /// Create an exchange of type `kind`.
    pub fn new(
        name: &str,
        kind: &Arc<dyn ExchangeType>,
        durable: bool,
        auto_delete: bool,
        internal: bool,
        args: Table,
    ) -> Result<Exchange> {
        let router = kind.create(&args)?;
        Ok(Exchange {
            name: Arc::from(name),
            kind: kind.name().to_string(),
            durable,
            auto_delete,
            internal,
            args,
            key_only: kind.routes_by_key_only(),
            inner: RwLock::new(Inner {
                router,
                slots: Vec::new(),
                free: Vec::new(),
                live: 0,
            }),
            generation: AtomicU64::new(0),
            deleted: AtomicBool::new(false),
        })
    }

    /// Changes whenever bindings change, so route caches know they are stale.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// True once deleted; holders of an `Arc` must look the name up again.
    pub fn is_deleted(&self) -> bool {
        self.deleted.load(Ordering::Acquire)
    }

    pub(crate) fn mark_deleted(&self) {
        self.deleted.store(true, Ordering::Release);
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// Add a binding; returns false when an identical one existed.
    pub(crate) fn add_binding(&self, b: Binding) -> Result<bool> {
        let mut inner = self.inner.write();
        let exists = inner
            .slots
            .iter()
            .flatten()
            .any(|x| x.dest.same(&b.dest) && x.key == b.key && x.args == b.args);
        if exists {
            return Ok(false);
        }
        let id = match inner.free.pop() {
            Some(id) => id,
            None => {
                inner.slots.push(None);
                (inner.slots.len() - 1) as BindingId
            }
        };
        if let Err(e) = inner.router.bind(id, &b.key, &b.args) {
            inner.free.push(id);
            return Err(e);
        }
        inner.slots[id as usize] = Some(b);
        inner.live += 1;
        self.generation.fetch_add(1, Ordering::AcqRel);
        Ok(true)
    }

    /// Remove bindings matching `pred`; returns how many bindings are left.
    pub(crate) fn remove_bindings(&self, mut pred: impl FnMut(&Binding) -> bool) -> (usize, usize) {
        let mut inner = self.inner.write();
        let mut removed = 0;
        let Inner {
            router,
            slots,
            free,
            live,
        } = &mut *inner;
        for (id, slot) in slots.iter_mut().enumerate() {
            if slot.as_ref().is_some_and(&mut pred) {
                let b = slot.take().expect("checked");
                router.unbind(id as BindingId, &b.key, &b.args);
                free.push(id as BindingId);
                *live -= 1;
                removed += 1;
            }
        }
        if removed > 0 {
            self.generation.fetch_add(1, Ordering::AcqRel);
        }
        (removed, *live)
    }

    /// Number of bindings with this exchange as source.
    pub fn binding_count(&self) -> usize {
        self.inner.read().live
    }

    /// (key, arguments) of the bindings to `queue` (a scan under the read
    /// lock, cloning only those).
    pub fn bindings_to_queue(&self, queue: &Arc<Queue>) -> Vec<(String, Table)> {
        self.inner
            .read()
            .slots
            .iter()
            .flatten()
            .filter(|b| matches!(&b.dest, Destination::Queue(q) if Arc::ptr_eq(q, queue)))
            .map(|b| (b.key.clone(), b.args.clone()))
            .collect()
    }

    /// Snapshot of all bindings, for listing.
    pub fn bindings(&self) -> Vec<Binding> {
        self.inner.read().slots.iter().flatten().cloned().collect()
    }

    /// Append the destinations a message routes to. `ids` is caller scratch.
    pub fn route_into(
        &self,
        msg: &Message,
        ids: &mut Vec<BindingId>,
        out: &mut Vec<Destination>,
    ) -> Result<()> {
        let inner = self.inner.read();
        ids.clear();
        let input = RouteInput {
            routing_key: msg.routing_key_bytes(),
            message: Some(msg),
        };
        inner.router.route(&input, ids)?;
        for id in ids.iter() {
            match inner.slots.get(*id as usize) {
                Some(Some(b)) => out.push(b.dest.clone()),
                _ => {
                    return Err(CoreError::Internal(format!(
                        "exchange '{}' routed to unknown binding {id}",
                        self.name
                    )))
                }
            }
        }
        Ok(())
    }
}
