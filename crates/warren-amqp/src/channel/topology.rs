//! Topology methods: exchange and queue declare and delete, the four
//! bind/unbind methods (one code path), queue.purge, with RabbitMQ's
//! permission rules.

use std::borrow::Cow;

use amq_protocol::protocol::{exchange, queue, AMQPClass, AMQPSoftError};
use amq_protocol::types::{FieldTable, ShortString};
use warren_core::auth::{Access, Resource};
use warren_core::vhost::{ExchangeDeclare, QueueDeclare};

use super::{Channel, Ctx};
use crate::error::{AmqpError, AmqpResult};
use crate::tables::to_table;

/// Check a permission; refusal is a 403 channel error.
pub(super) fn allow(ctx: &Ctx<'_>, access: Access, kind: Resource, name: &str) -> AmqpResult {
    ctx.guard.check(access, kind, name).map_err(AmqpError::from)
}

/// Bind or unbind.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum BindOp {
    Bind,
    Unbind,
}

/// The destination of a binding, as the method names it.
pub(super) enum Dest<'a> {
    /// exchange.bind / unbind.
    Exchange(&'a ShortString),
    /// queue.bind / unbind; empty means the last declared queue.
    Queue(&'a ShortString),
}

impl Channel {
    /// exchange.declare
    pub(super) fn exchange_declare(&mut self, ctx: &Ctx<'_>, d: exchange::Declare) -> AmqpResult {
        let name = d.exchange.as_str();
        if !d.passive {
            allow(ctx, Access::Configure, Resource::Exchange, name)?;
        }
        let decl = ExchangeDeclare {
            name: d.exchange.to_string(),
            kind: d.kind.to_string(),
            passive: d.passive,
            durable: d.durable,
            auto_delete: d.auto_delete,
            internal: d.internal,
            args: to_table(&d.arguments),
        };
        ctx.vhost.declare_exchange(&decl)?;
        self.reply_unless(
            d.nowait,
            AMQPClass::Exchange(exchange::AMQPMethod::DeclareOk(exchange::DeclareOk {})),
        );
        Ok(())
    }

    /// exchange.delete
    pub(super) fn exchange_delete(&mut self, ctx: &Ctx<'_>, d: exchange::Delete) -> AmqpResult {
        let name = d.exchange.as_str();
        allow(ctx, Access::Configure, Resource::Exchange, name)?;
        ctx.vhost.delete_exchange(name, d.if_unused)?;
        self.reply_unless(
            d.nowait,
            AMQPClass::Exchange(exchange::AMQPMethod::DeleteOk(exchange::DeleteOk {})),
        );
        Ok(())
    }

    /// exchange.bind, exchange.unbind, queue.bind and queue.unbind.
    /// RabbitMQ's rule: write on the destination, read on the source.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn binding(
        &mut self,
        ctx: &Ctx<'_>,
        op: BindOp,
        dest: Dest<'_>,
        source: &ShortString,
        key: &ShortString,
        args: &FieldTable,
        nowait: bool,
    ) -> AmqpResult {
        let (kind, name) = match dest {
            Dest::Exchange(x) => (Resource::Exchange, Cow::Borrowed(x.as_str())),
            Dest::Queue(q) => (Resource::Queue, Cow::Owned(self.queue_name(q.as_str())?)),
        };
        let (source, key) = (source.as_str(), key.as_str());
        allow(ctx, Access::Write, kind, &name)?;
        allow(ctx, Access::Read, Resource::Exchange, source)?;
        let args = to_table(args);
        let (v, conn) = (ctx.vhost, ctx.conn_id);
        let ok = match (kind, op) {
            (Resource::Queue, BindOp::Bind) => {
                v.bind_queue(&name, source, key, &args, conn)?;
                AMQPClass::Queue(queue::AMQPMethod::BindOk(queue::BindOk {}))
            }
            (Resource::Queue, BindOp::Unbind) => {
                v.unbind_queue(&name, source, key, &args, conn)?;
                AMQPClass::Queue(queue::AMQPMethod::UnbindOk(queue::UnbindOk {}))
            }
            (_, BindOp::Bind) => {
                v.bind_exchange(&name, source, key, &args)?;
                AMQPClass::Exchange(exchange::AMQPMethod::BindOk(exchange::BindOk {}))
            }
            (_, BindOp::Unbind) => {
                v.unbind_exchange(&name, source, key, &args)?;
                AMQPClass::Exchange(exchange::AMQPMethod::UnbindOk(exchange::UnbindOk {}))
            }
        };
        self.reply_unless(nowait, ok);
        Ok(())
    }

    /// queue.declare; server-named queues are named first, so the
    /// permission check sees the name.
    pub(super) fn queue_declare(&mut self, ctx: &Ctx<'_>, d: queue::Declare) -> AmqpResult {
        let server_named = d.queue.as_str().is_empty() && !d.passive;
        let name = if server_named {
            ctx.vhost.generate_name("amq.gen-")
        } else {
            d.queue.to_string()
        };
        if !d.passive {
            allow(ctx, Access::Configure, Resource::Queue, &name)?;
        }
        let decl = QueueDeclare {
            name,
            server_named,
            passive: d.passive,
            durable: d.durable,
            exclusive: d.exclusive,
            auto_delete: d.auto_delete,
            args: to_table(&d.arguments),
            home: None,
        };
        let (q, messages, consumers) = ctx.vhost.declare_queue(&decl, ctx.conn_id)?;
        self.last_queue = Some(q.name.to_string());
        self.reply_unless(
            d.nowait,
            AMQPClass::Queue(queue::AMQPMethod::DeclareOk(queue::DeclareOk {
                queue: q.name.as_ref().into(),
                message_count: messages,
                consumer_count: consumers,
            })),
        );
        Ok(())
    }

    /// queue.purge
    pub(super) fn queue_purge(&mut self, ctx: &Ctx<'_>, p: queue::Purge) -> AmqpResult {
        let qname = self.queue_name(p.queue.as_str())?;
        allow(ctx, Access::Read, Resource::Queue, &qname)?;
        let n = ctx.vhost.purge_queue(&qname, ctx.conn_id)?;
        self.reply_unless(
            p.nowait,
            AMQPClass::Queue(queue::AMQPMethod::PurgeOk(queue::PurgeOk {
                message_count: n,
            })),
        );
        Ok(())
    }

    /// queue.delete
    pub(super) fn queue_delete(&mut self, ctx: &Ctx<'_>, d: queue::Delete) -> AmqpResult {
        let qname = self.queue_name(d.queue.as_str())?;
        allow(ctx, Access::Configure, Resource::Queue, &qname)?;
        let n = ctx
            .vhost
            .delete_queue(&qname, d.if_unused, d.if_empty, ctx.conn_id)?;
        self.reply_unless(
            d.nowait,
            AMQPClass::Queue(queue::AMQPMethod::DeleteOk(queue::DeleteOk {
                message_count: n,
            })),
        );
        Ok(())
    }

    /// An empty queue name means the channel's last declared queue (spec).
    pub(super) fn queue_name(&self, name: &str) -> AmqpResult<String> {
        if !name.is_empty() {
            return Ok(name.to_string());
        }
        self.last_queue.clone().ok_or_else(|| {
            AmqpError::channel(AMQPSoftError::NOTFOUND, "no previously declared queue")
        })
    }
}
