//! Bindings: queue.bind/unbind, exchange.bind/unbind and MQTT's
//! resubscribe, their listing, and the removal of every binding to a
//! deleted queue or exchange (with RabbitMQ's auto-delete cascade).

use parking_lot::RwLockWriteGuard;
use std::sync::Arc;

use warren_store::BindingDef;

use super::definitions::args_from_b64;
use super::{Topology, VHost};
use crate::error::{CoreError, Result};
use crate::exchange::{Binding, Destination, Exchange};
use crate::queue::Queue;
use crate::replicate::{Change, Replicate};
use crate::value::Table;

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

/// The far end of a binding being made or removed.
#[derive(Clone, Copy)]
enum Target<'a> {
    /// A queue; with the connection asking, when an exclusive queue's
    /// owner must be checked.
    Queue(&'a str, Option<u64>),
    /// An exchange (exchange-to-exchange binding).
    Exchange(&'a str),
}

impl VHost {
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
            Self::remove_exchanges(&mut topo, vec![source.name.to_string()]);
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
        let to = Target::Queue(queue, Some(conn));
        self.link(exchange, to, key, args)
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
        let to = Target::Queue(queue, Some(conn));
        self.unlink(exchange, to, key, |a| a == args)
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
        let to = Target::Queue(queue, None);
        self.unlink(exchange, to, key, |a| Some(a) != keep)
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
        self.link(source, Target::Exchange(destination), key, args)
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
        let to = Target::Exchange(destination);
        self.unlink(source, to, key, |a| a == args)
    }

    /// Look both ends of a binding up: the destination first, then the
    /// source (so a missing queue is reported before a missing exchange),
    /// then the exclusive queue's owner.
    fn ends(
        &self,
        topo: &Topology,
        source: &str,
        to: Target<'_>,
    ) -> Result<(Arc<Exchange>, Destination)> {
        match to {
            Target::Queue(name, conn) => {
                let q = self.find_queue(topo, name)?;
                let x = self.find_exchange(topo, source)?;
                if let Some(conn) = conn {
                    q.check_owner(conn)?;
                }
                Ok((x, Destination::Queue(q)))
            }
            Target::Exchange(name) => {
                let d = self.find_exchange(topo, name)?;
                Ok((self.find_exchange(topo, source)?, Destination::Exchange(d)))
            }
        }
    }

    /// Bind `source` to `to` (the topology read lock only for the lookup).
    fn link(&self, source: &str, to: Target<'_>, key: &str, args: &Table) -> Result<()> {
        let topo = self.topology.read();
        let (x, dest) = self.ends(&topo, source, to)?;
        drop(topo);
        if x.durable && dest.durable() {
            if let Some(r) = self.proposer() {
                return r.commit(Change::Bind(self.binding_def(&x, &dest, key, args)));
            }
        }
        self.bind(x, dest, key, args)
    }

    /// Unbind `source` from `to` under the topology write lock, which an
    /// auto-delete of the source needs.
    fn unlink(
        &self,
        source: &str,
        to: Target<'_>,
        key: &str,
        args: impl Fn(&Table) -> bool,
    ) -> Result<()> {
        let topo = self.topology.write();
        let (x, dest) = self.ends(&topo, source, to)?;
        if x.durable && dest.durable() {
            if let Some(r) = self.proposer() {
                drop(topo);
                return self.propose_unbind(r.as_ref(), &x, &dest, key, args);
            }
        }
        self.unbind(topo, x, dest, key, args);
        Ok(())
    }

    /// In a cluster: one replicated unbind per matching binding, with its
    /// exact arguments, so every node removes the same ones.
    fn propose_unbind(
        &self,
        r: &dyn Replicate,
        x: &Arc<Exchange>,
        dest: &Destination,
        key: &str,
        args: impl Fn(&Table) -> bool,
    ) -> Result<()> {
        let matching: Vec<Table> = x
            .bindings()
            .into_iter()
            .filter(|b| b.dest.same(dest) && b.key == key && args(&b.args))
            .map(|b| b.args.clone())
            .collect();
        for a in matching {
            r.commit(Change::Unbind(self.binding_def(x, dest, key, &a)))?;
        }
        Ok(())
    }

    /// Add the binding a committed [`Change::Bind`] names.
    pub(crate) fn bind_def(&self, b: &BindingDef) -> Result<()> {
        let args = args_from_b64(&b.arguments);
        if b.destination_type == "exchange" {
            self.bind_exchange(&b.destination, &b.source, &b.routing_key, &args)
        } else {
            self.bind_queue(&b.destination, &b.source, &b.routing_key, &args, 0)
        }
    }

    /// Remove the binding a committed [`Change::Unbind`] names.
    pub(crate) fn unbind_def(&self, b: &BindingDef) -> Result<()> {
        let args = args_from_b64(&b.arguments);
        if b.destination_type == "exchange" {
            self.unbind_exchange(&b.destination, &b.source, &b.routing_key, &args)
        } else {
            self.unbind_queue(&b.destination, &b.source, &b.routing_key, &args, 0)
        }
    }

    /// Remove every binding that leads to `dest`; the auto-delete
    /// exchanges this leaves without bindings are added to `emptied`.
    pub(super) fn drop_bindings_to(topo: &Topology, dest: &Destination, emptied: &mut Vec<String>) {
        for x in topo.exchanges.values() {
            let (removed, left) = x.remove_bindings(|b| b.dest.same(dest));
            if removed > 0 && left == 0 && x.auto_delete {
                emptied.push(x.name.to_string());
            }
        }
    }

    /// Delete the exchanges `names` with the bindings from and to them; an
    /// auto-delete exchange this leaves without bindings goes in turn.
    pub(super) fn remove_exchanges(topo: &mut Topology, mut names: Vec<String>) {
        while let Some(n) = names.pop() {
            if let Some(x) = topo.exchanges.remove(&n) {
                x.mark_deleted();
                Self::drop_bindings_to(topo, &Destination::Exchange(x.clone()), &mut names);
                x.remove_bindings(|_| true);
            }
        }
    }
}
