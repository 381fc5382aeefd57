//! Definition records for the store: the vhost's durable exchanges,
//! queues and bindings, arguments encoded as base64 AMQP tables.

use warren_store::{BindingDef, ExchangeDef, QueueDef};

use super::{ExchangeDeclare, QueueDeclare, VHost};
use crate::exchange::{Destination, Exchange};
use crate::value::Table;

pub(crate) fn args_b64(t: &Table) -> String {
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

impl VHost {
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
                home: q.home_node().map(str::to_string),
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
}

/// The declare a durable exchange's record stands for (recovery, and a
/// committed cluster change).
pub fn exchange_declare_of(x: &ExchangeDef) -> ExchangeDeclare {
    ExchangeDeclare {
        name: x.name.clone(),
        kind: x.kind.clone(),
        passive: false,
        durable: true,
        auto_delete: x.auto_delete,
        internal: x.internal,
        args: args_from_b64(&x.arguments),
    }
}

/// The declare a durable queue's record stands for.
pub fn queue_declare_of(q: &QueueDef) -> QueueDeclare {
    QueueDeclare {
        name: q.name.clone(),
        passive: false,
        durable: true,
        exclusive: false,
        auto_delete: q.auto_delete,
        args: args_from_b64(&q.arguments),
        // Recorded names were accepted once; amq.gen- ones included.
        server_named: true,
        home: q.home.clone(),
    }
}

impl VHost {
    /// The record of a binding from `x` to `dest`.
    pub(crate) fn binding_def(
        &self,
        x: &Exchange,
        dest: &Destination,
        key: &str,
        args: &Table,
    ) -> BindingDef {
        BindingDef {
            vhost: self.name.to_string(),
            source: x.name.to_string(),
            destination: dest.name().to_string(),
            destination_type: match dest {
                Destination::Queue(_) => "queue".into(),
                Destination::Exchange(_) => "exchange".into(),
            },
            routing_key: key.to_string(),
            arguments: args_b64(args),
        }
    }

    /// The record of a declare about to be replicated.
    pub(crate) fn exchange_def(&self, d: &ExchangeDeclare) -> ExchangeDef {
        ExchangeDef {
            vhost: self.name.to_string(),
            name: d.name.clone(),
            kind: d.kind.clone(),
            auto_delete: d.auto_delete,
            internal: d.internal,
            arguments: args_b64(&d.args),
        }
    }

    /// The record of a queue declare about to be replicated.
    pub(crate) fn queue_def(&self, name: &str, d: &QueueDeclare) -> QueueDef {
        QueueDef {
            vhost: self.name.to_string(),
            name: name.to_string(),
            auto_delete: d.auto_delete,
            arguments: args_b64(&d.args),
            // Declared here: it lives here, unless the declare names a home.
            home: d
                .home
                .clone()
                .or_else(|| self.cluster_link().map(|l| l.node().to_string())),
        }
    }
}
