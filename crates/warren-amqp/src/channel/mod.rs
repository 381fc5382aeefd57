//! One AMQP channel: the reader-side state of a channel and the dispatch
//! of its methods to one file per concern. Owned by the connection's
//! reader task; the part that queues touch lives in [`ChannelShared`].
//!
//! - `content`: a publish's method, header and body frames assembled into a message
//! - `publish`: exchange lookup, the route cache, returns
//! - `confirms`: publisher-confirm bookkeeping
//! - `settle`: ack, nack, reject, recover
//! - `topology`: exchange and queue declare, delete, bind, unbind, purge
//! - `consume`: qos, consume, cancel, get
//! - `reply_to`: RabbitMQ's direct reply-to
//! - `tx`: transactions

mod confirms;
mod consume;
mod content;
mod publish;
mod reply_to;
mod settle;
mod topology;
mod tx;

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use amq_protocol::protocol::AMQPHardError;
use amq_protocol::protocol::{basic, confirm, exchange, queue, tx as txm, AMQPClass};
use warren_core::auth::Guard;
use warren_core::VHost;

use crate::codec::{self, MethodId};
use crate::deliveries::{ChannelShared, ConsumerState, Unacked};
use crate::error::{AmqpError, AmqpResult};
use crate::Config;

use confirms::Confirms;
use content::Pending;
use publish::Router;
use settle::Outcome;
use topology::{BindOp, Dest};
use tx::TxBuffer;

pub use crate::tables::to_table;
pub use reply_to::REPLY_TO;

/// What a channel needs from its connection.
pub struct Ctx<'a> {
    /// The connection's vhost.
    pub vhost: &'a Arc<VHost>,
    /// Connection id (owner of exclusive queues).
    pub conn_id: u64,
    /// Listener configuration.
    pub cfg: &'a Config,
    /// The user's rights in the vhost.
    pub guard: &'a Guard,
}

/// Reader-side state of one channel.
pub struct Channel {
    /// State shared with consumers.
    pub shared: Arc<ChannelShared>,
    /// channel.close was sent; waiting for close-ok.
    pub closing: bool,
    consumers: HashMap<Arc<str>, Arc<ConsumerState>>,
    prefetch: u32,
    confirms: Confirms,
    tx: Option<TxBuffer>,
    pending: Option<Pending>,
    /// The names buffer of the last publish, reused by the next so that a
    /// publish allocates only its message buffer.
    spare_names: Vec<u8>,
    router: Router,
    /// Reused buffer of deliveries being settled.
    settled: Vec<Unacked>,
    last_queue: Option<String>,
    reply_queue: Option<Arc<warren_core::Queue>>,
    /// Set when a publish hit a backlogged queue; the connection pauses
    /// reading briefly (flow control) and clears it.
    pub backlogged: bool,
}

impl Channel {
    /// A freshly opened channel.
    pub fn new(shared: Arc<ChannelShared>) -> Channel {
        Channel {
            shared,
            closing: false,
            consumers: HashMap::new(),
            prefetch: 0,
            confirms: Confirms::default(),
            tx: None,
            pending: None,
            spare_names: Vec::new(),
            router: Router::default(),
            settled: Vec::new(),
            last_queue: None,
            reply_queue: None,
            backlogged: false,
        }
    }

    /// Reply unless the client asked for `nowait`.
    fn reply_unless(&self, nowait: bool, m: AMQPClass) {
        if !nowait {
            self.reply(m);
        }
    }

    fn reply(&self, m: AMQPClass) {
        let n = self.shared.number;
        self.shared.out.push(|out| codec::write_method(out, n, m));
    }

    /// True while a publish waits for its header or body frames.
    pub fn expects_content(&self) -> bool {
        self.pending.is_some()
    }

    /// Any method other than publish/ack/nack/reject.
    pub fn on_method(&mut self, ctx: &Ctx<'_>, m: AMQPClass) -> AmqpResult {
        let id = MethodId::of(&m);
        self.method(ctx, m).map_err(|e| e.on(id))
    }

    /// Dispatch one control-plane method to its concern.
    fn method(&mut self, ctx: &Ctx<'_>, m: AMQPClass) -> AmqpResult {
        use AMQPClass::{Basic, Confirm, Exchange, Queue, Tx};
        match m {
            Exchange(exchange::AMQPMethod::Declare(d)) => self.exchange_declare(ctx, d),
            Exchange(exchange::AMQPMethod::Delete(d)) => self.exchange_delete(ctx, d),
            Exchange(exchange::AMQPMethod::Bind(b)) => {
                let to = Dest::Exchange(&b.destination);
                self.binding(
                    ctx,
                    BindOp::Bind,
                    to,
                    &b.source,
                    &b.routing_key,
                    &b.arguments,
                    b.nowait,
                )
            }
            Exchange(exchange::AMQPMethod::Unbind(b)) => {
                let to = Dest::Exchange(&b.destination);
                self.binding(
                    ctx,
                    BindOp::Unbind,
                    to,
                    &b.source,
                    &b.routing_key,
                    &b.arguments,
                    b.nowait,
                )
            }
            Queue(queue::AMQPMethod::Declare(d)) => self.queue_declare(ctx, d),
            Queue(queue::AMQPMethod::Bind(b)) => {
                let to = Dest::Queue(&b.queue);
                self.binding(
                    ctx,
                    BindOp::Bind,
                    to,
                    &b.exchange,
                    &b.routing_key,
                    &b.arguments,
                    b.nowait,
                )
            }
            Queue(queue::AMQPMethod::Unbind(b)) => {
                // queue.unbind has no nowait: it is always answered.
                let to = Dest::Queue(&b.queue);
                self.binding(
                    ctx,
                    BindOp::Unbind,
                    to,
                    &b.exchange,
                    &b.routing_key,
                    &b.arguments,
                    false,
                )
            }
            Queue(queue::AMQPMethod::Purge(p)) => self.queue_purge(ctx, p),
            Queue(queue::AMQPMethod::Delete(d)) => self.queue_delete(ctx, d),
            Basic(basic::AMQPMethod::Qos(q)) => self.qos(q),
            Basic(basic::AMQPMethod::Consume(c)) => self.consume(ctx, c),
            Basic(basic::AMQPMethod::Cancel(c)) => self.cancel(ctx, c),
            Basic(basic::AMQPMethod::Get(g)) => self.get(ctx, g.queue.as_str(), g.no_ack),
            Basic(basic::AMQPMethod::Recover(r)) => self.recover_sync(r.requeue),
            Basic(basic::AMQPMethod::RecoverAsync(r)) => self.recover(r.requeue),
            Tx(txm::AMQPMethod::Select(_)) => self.tx_select(),
            Tx(txm::AMQPMethod::Commit(_)) => self.tx_commit(ctx),
            Tx(txm::AMQPMethod::Rollback(_)) => self.tx_rollback(),
            Confirm(confirm::AMQPMethod::Select(s)) => self.confirm_select(s.nowait),
            other => Err(AmqpError::connection(
                AMQPHardError::NOTIMPLEMENTED,
                format!("method {} is not implemented", MethodId::of(&other)),
            )),
        }
    }

    /// Close: cancel consumers, requeue unacked messages, drop reply queue.
    pub fn shutdown(&mut self, ctx: &Ctx<'_>) {
        let mut unacked: Vec<Unacked> = {
            let mut st = self.shared.state.lock();
            st.closed = true;
            st.unacked.drain(..).collect()
        };
        for (tag, c) in self.consumers.drain() {
            c.active.store(false, Ordering::Release);
            if c.queue.remove_consumer(self.shared.uid, &tag) {
                ctx.vhost.remove_queue(&c.queue);
            }
        }
        self.release(&mut unacked, Outcome::Requeue);
        if let Some(q) = self.reply_queue.take() {
            ctx.vhost.remove_queue(&q);
        }
        self.pending = None;
    }
}
