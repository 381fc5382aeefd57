//! Publishing an assembled message: the exchange lookup (cached with its
//! permission check), routing through a one-entry route cache, the
//! persistent-publish refusal while the store is unhealthy, basic.return
//! of unroutable mandatory messages, and the confirm it owes.

use std::sync::Arc;

use amq_protocol::protocol::{AMQPHardError, AMQPSoftError};
use warren_core::auth::{Access, Resource};
use warren_core::registry::ConnStats;
use warren_core::{Exchange, Message, Queue, RouteScratch};

use super::topology::allow;
use super::{Channel, Ctx};
use crate::codec::{self, ids};
use crate::error::{AmqpError, AmqpResult};

/// The last exchange published to and the last route taken.
#[derive(Default)]
pub(super) struct Router {
    /// Exchange of the last publish, and the permission generation its
    /// write check was made under.
    exchange: Option<(Arc<Exchange>, u64)>,
    cache: RouteCache,
    scratch: RouteScratch,
}

/// Queues of the last key routed through a key-only exchange.
#[derive(Default)]
struct RouteCache {
    exchange: Option<Arc<Exchange>>,
    generation: u64,
    key: Vec<u8>,
    queues: Vec<Arc<Queue>>,
}

impl Router {
    /// Resolve `msg`'s queues into `self.cache.queues`, unless the cache
    /// already holds them for this exchange, its generation and this key.
    fn resolve(&mut self, ctx: &Ctx<'_>, x: &Arc<Exchange>, msg: &Message) -> AmqpResult {
        let cache = &mut self.cache;
        let cached = cache.exchange.as_ref().is_some_and(|c| Arc::ptr_eq(c, x))
            && cache.generation == x.generation()
            && cache.key == msg.routing_key_bytes();
        if cached {
            return Ok(());
        }
        let generation = x.generation();
        ctx.vhost
            .resolve(x, msg, &mut self.scratch)
            .map_err(|e| AmqpError::from(e).on(ids::BASIC_PUBLISH))?;
        if x.key_only && self.scratch.cacheable {
            cache.exchange = Some(x.clone());
            cache.generation = generation;
            cache.key.clear();
            cache.key.extend_from_slice(msg.routing_key_bytes());
        } else {
            cache.exchange = None;
        }
        std::mem::swap(&mut cache.queues, &mut self.scratch.queues);
        Ok(())
    }
}

impl Channel {
    /// The exchange of a publish, with the write permission checked; the
    /// last one is cached until it is deleted or permissions change.
    pub(super) fn lookup_exchange(
        &mut self,
        ctx: &Ctx<'_>,
        name: &[u8],
    ) -> AmqpResult<Arc<Exchange>> {
        if let Some((x, generation)) = &self.router.exchange {
            if x.name.as_bytes() == name && !x.is_deleted() && *generation == ctx.guard.generation()
            {
                return Ok(x.clone());
            }
        }
        let name = std::str::from_utf8(name).map_err(|_| {
            AmqpError::connection(AMQPHardError::SYNTAXERROR, "exchange name is not UTF-8")
        })?;
        let generation = ctx.guard.generation();
        let x = ctx
            .vhost
            .exchange(name)
            .map_err(|e| AmqpError::from(e).on(ids::BASIC_PUBLISH))?;
        allow(ctx, Access::Write, Resource::Exchange, name)
            .map_err(|e| e.on(ids::BASIC_PUBLISH))?;
        self.router.exchange = Some((x.clone(), generation));
        Ok(x)
    }

    /// Route `msg` through `x` and deliver it to the queues found.
    pub(super) fn route(
        &mut self,
        ctx: &Ctx<'_>,
        x: &Arc<Exchange>,
        msg: Message,
        mandatory: bool,
    ) -> AmqpResult {
        self.router.resolve(ctx, x, &msg)?;
        ConnStats::add(&self.shared.stats.published, 1);
        let unroutable = self.router.cache.queues.is_empty();
        let returned = if unroutable && mandatory {
            Some(msg.clone())
        } else {
            None
        };
        if msg.persistent && !ctx.vhost.store_healthy() {
            return Err(AmqpError::channel(
                AMQPHardError::RESOURCEERROR,
                "cannot write to the message store (disk full?); persistent publishes are refused",
            )
            .on(ids::BASIC_PUBLISH));
        }
        let routed = ctx.vhost.deliver(&self.router.cache.queues, msg);
        self.backlogged |= routed.backlogged;
        if let Some(m) = returned {
            self.send_return(&m);
        }
        self.confirms.record(&routed);
        Ok(())
    }

    /// basic.return an unroutable mandatory message (312 NO_ROUTE).
    fn send_return(&self, m: &Message) {
        let n = self.shared.number;
        let fm = self.shared.frame_max;
        self.shared.out.push(|out| {
            codec::write_return(
                out,
                n,
                AMQPSoftError::NOROUTE.get_id(),
                NO_ROUTE,
                m.exchange.as_bytes(),
                m.routing_key_bytes(),
            );
            codec::write_content(out, n, m.raw_properties(), &m.body, fm);
        });
    }
}

/// The reply text of basic.return: the name of 312 NO_ROUTE, spelled as
/// `error::ReplyName` spells it (checked in the tests).
const NO_ROUTE: &str = "NO_ROUTE";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ReplyName;
    use amq_protocol::protocol::AMQPErrorKind;

    #[test]
    fn return_text_is_the_reply_name() {
        let kind = AMQPErrorKind::Soft(AMQPSoftError::NOROUTE);
        assert_eq!(ReplyName(&kind).to_string(), NO_ROUTE);
    }
}
