//! One AMQP channel: the methods of the exchange, queue, basic, tx and
//! confirm classes, content assembly for publishes, publisher confirms and
//! acknowledgements. Owned by the connection's reader task; the part that
//! queues touch lives in [`ChannelShared`].

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;

use amq_protocol::protocol::{basic, confirm, exchange, queue, tx, AMQPClass};
use amq_protocol::types::{AMQPValue, FieldTable};
use bytes::{BufMut, Bytes, BytesMut};
use warren_core::auth::{Access, Guard, Resource};
use warren_core::props::Properties;
use warren_core::queue::ConsumerSpec;
use warren_core::registry::ConnStats;
use warren_core::vhost::{ExchangeDeclare, QueueDeclare};
use warren_core::SyncState;
use warren_core::{Exchange, Message, Queue, RouteScratch, Table, VHost, Value};

use crate::codec::{self, Settle};
use crate::deliveries::{AmqpConsumer, ChannelShared, ConsumerState, Unacked};
use crate::error::{AmqpError, AmqpResult};
use crate::Config;

/// Bodies up to this size share one allocation with key and properties.
const INLINE_BODY: usize = 16 * 1024;
/// The pseudo-queue of RabbitMQ's direct reply-to.
pub const REPLY_TO: &str = "amq.rabbitmq.reply-to";

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

/// Check a permission; refusal is a 403 channel error.
fn allow(ctx: &Ctx<'_>, access: Access, kind: Resource, name: &str) -> AmqpResult {
    ctx.guard.check(access, kind, name).map_err(AmqpError::from)
}

/// RabbitMQ's rule for (un)binding: write on the destination, read on the
/// source exchange.
fn allow_binding(ctx: &Ctx<'_>, dest_kind: Resource, dest: &str, source: &str) -> AmqpResult {
    allow(ctx, Access::Write, dest_kind, dest)?;
    allow(ctx, Access::Read, Resource::Exchange, source)
}

struct Pending {
    exchange: Vec<u8>,
    key_len: usize,
    mandatory: bool,
    /// Header seen: properties length and body size.
    header: Option<(usize, usize)>,
    /// Key, properties and (inline) body.
    meta: BytesMut,
    /// Large bodies, separately.
    body: Option<BytesMut>,
    zero_copy: Option<Bytes>,
    received: usize,
}

#[derive(Default)]
struct RouteCache {
    exchange: Option<Arc<Exchange>>,
    generation: u64,
    key: Vec<u8>,
    queues: Vec<Arc<Queue>>,
}

/// What happens to settled deliveries.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Ack,
    Requeue,
    /// Rejected without requeue: dropped, or dead-lettered.
    Reject,
}

/// Why a publish's confirm cannot be sent right away.
#[derive(Clone, Copy, Debug)]
enum Wait {
    /// On disk once the store's synced sequence reaches this.
    Sync(u64),
    /// Refused by a queue (reject-publish).
    Nack,
}

struct TxBuffer {
    publishes: Vec<(Arc<Exchange>, Message, bool)>,
    settles: Vec<Settle>,
}

/// Reader-side state of one channel.
pub struct Channel {
    /// State shared with consumers.
    pub shared: Arc<ChannelShared>,
    /// channel.close was sent; waiting for close-ok.
    pub closing: bool,
    consumers: HashMap<Arc<str>, Arc<ConsumerState>>,
    prefetch: u32,
    confirm: bool,
    publish_seq: u64,
    /// Every confirm up to this tag has been sent.
    confirm_sent: u64,
    /// Publishes whose confirm is not a plain immediate ack: waiting for the
    /// store's group commit, or to be nacked. In tag order.
    confirm_waits: VecDeque<(u64, Wait)>,
    tx: Option<TxBuffer>,
    pending: Option<Pending>,
    exchange_cache: Option<(Arc<Exchange>, u64)>,
    cache: RouteCache,
    scratch: RouteScratch,
    settled: Vec<Unacked>,
    last_queue: Option<String>,
    reply_queue: Option<Arc<Queue>>,
    /// Set when a publish hit a backlogged queue; the connection pauses
    /// reading briefly (flow control) and clears it.
    pub backlogged: bool,
}

fn to_value(v: &AMQPValue) -> Value {
    match v {
        AMQPValue::Boolean(b) => Value::Bool(*b),
        AMQPValue::ShortShortInt(x) => Value::I8(*x),
        AMQPValue::ShortShortUInt(x) => Value::U8(*x),
        AMQPValue::ShortInt(x) => Value::I16(*x),
        AMQPValue::ShortUInt(x) => Value::U16(*x),
        AMQPValue::LongInt(x) => Value::I32(*x),
        AMQPValue::LongUInt(x) => Value::U32(*x),
        AMQPValue::LongLongInt(x) => Value::I64(*x),
        AMQPValue::Float(x) => Value::F32(*x),
        AMQPValue::Double(x) => Value::F64(*x),
        AMQPValue::DecimalValue(d) => Value::Decimal(d.scale, d.value),
        AMQPValue::ShortString(s) => Value::str(s.as_str()),
        AMQPValue::LongString(s) => Value::Str(Bytes::copy_from_slice(s.as_bytes())),
        AMQPValue::FieldArray(a) => Value::Array(a.as_slice().iter().map(to_value).collect()),
        AMQPValue::Timestamp(t) => Value::Timestamp(*t),
        AMQPValue::FieldTable(t) => Value::Table(to_table(t)),
        AMQPValue::ByteArray(b) => Value::Bytes(Bytes::copy_from_slice(b.as_slice())),
        AMQPValue::Void => Value::Void,
    }
}

/// Convert declare/bind arguments to the core's table type.
pub fn to_table(t: &FieldTable) -> Table {
    Table(
        t.inner()
            .iter()
            .map(|(k, v)| (k.to_string(), to_value(v)))
            .collect(),
    )
}

impl Channel {
    /// A freshly opened channel.
    pub fn new(shared: Arc<ChannelShared>) -> Channel {
        Channel {
            shared,
            closing: false,
            consumers: HashMap::new(),
            prefetch: 0,
            confirm: false,
            publish_seq: 0,
            confirm_sent: 0,
            confirm_waits: VecDeque::new(),
            tx: None,
            pending: None,
            exchange_cache: None,
            cache: RouteCache::default(),
            scratch: RouteScratch::default(),
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

    // ---- content assembly -------------------------------------------------

    /// basic.publish method frame (hand-parsed).
    pub fn on_publish(&mut self, p: codec::Publish<'_>) -> AmqpResult {
        if p.immediate {
            return Err(AmqpError::connection(540, "immediate=true").on(60, 40));
        }
        let mut exchange = Vec::with_capacity(p.exchange.len());
        exchange.extend_from_slice(p.exchange);
        let mut meta = BytesMut::new();
        meta.put_slice(p.routing_key);
        self.pending = Some(Pending {
            exchange,
            key_len: p.routing_key.len(),
            mandatory: p.mandatory,
            header: None,
            meta,
            body: None,
            zero_copy: None,
            received: 0,
        });
        Ok(())
    }

    /// Content header frame.
    pub fn on_header(&mut self, ctx: &Ctx<'_>, payload: &[u8]) -> AmqpResult {
        let Some(p) = self.pending.as_mut() else {
            return Err(AmqpError::connection(
                505,
                "unexpected content header frame",
            ));
        };
        if p.header.is_some() {
            return Err(AmqpError::connection(
                505,
                "unexpected content header frame",
            ));
        }
        let (class, size, props) =
            codec::parse_content_header(payload).map_err(|e| AmqpError::connection(502, e))?;
        if class != 60 {
            return Err(AmqpError::connection(
                505,
                format!("content header for class {class}"),
            ));
        }
        let size = size as usize;
        if size > ctx.cfg.max_message_size {
            self.pending = None;
            return Err(AmqpError::channel(
                406,
                format!(
                    "message size {size} is larger than configured max size {}",
                    ctx.cfg.max_message_size
                ),
            )
            .on(60, 40));
        }
        let inline = size <= INLINE_BODY;
        p.meta.reserve(props.len() + if inline { size } else { 0 });
        p.meta.put_slice(props);
        p.header = Some((props.len(), size));
        if size == 0 {
            return self.complete(ctx);
        }
        Ok(())
    }

    /// Content body frame, copied.
    pub fn on_body(&mut self, ctx: &Ctx<'_>, payload: &[u8]) -> AmqpResult {
        let p = self.body_target(payload.len())?;
        let size = p.header.expect("checked").1;
        if size <= INLINE_BODY {
            p.meta.put_slice(payload);
        } else {
            p.body
                .get_or_insert_with(|| BytesMut::with_capacity(size))
                .put_slice(payload);
        }
        p.received += payload.len();
        if p.received == size {
            return self.complete(ctx);
        }
        Ok(())
    }

    /// Content body frame carrying a whole large body, without copying.
    pub fn on_body_bytes(&mut self, ctx: &Ctx<'_>, payload: Bytes) -> AmqpResult {
        let p = self.body_target(payload.len())?;
        let size = p.header.expect("checked").1;
        if p.received == 0 && payload.len() == size && size > INLINE_BODY {
            p.received = size;
            p.zero_copy = Some(payload);
            return self.complete(ctx);
        }
        self.on_body(ctx, &payload)
    }

    fn body_target(&mut self, len: usize) -> AmqpResult<&mut Pending> {
        let Some(p) = self.pending.as_mut() else {
            return Err(AmqpError::connection(505, "unexpected content body frame"));
        };
        let Some((_, size)) = p.header else {
            return Err(AmqpError::connection(
                505,
                "content body frame before content header",
            ));
        };
        if p.received + len > size {
            return Err(AmqpError::connection(
                501,
                "content body exceeds the size in its header",
            ));
        }
        Ok(p)
    }

    /// The exchange of a publish, with the write permission checked; the
    /// last one is cached until it is deleted or permissions change.
    fn lookup_exchange(&mut self, ctx: &Ctx<'_>, name: &[u8]) -> AmqpResult<Arc<Exchange>> {
        if let Some((x, generation)) = &self.exchange_cache {
            if x.name.as_bytes() == name && !x.is_deleted() && *generation == ctx.guard.generation()
            {
                return Ok(x.clone());
            }
        }
        let name = std::str::from_utf8(name)
            .map_err(|_| AmqpError::connection(502, "exchange name is not UTF-8"))?;
        let generation = ctx.guard.generation();
        let x = ctx
            .vhost
            .exchange(name)
            .map_err(|e| AmqpError::from(e).on(60, 40))?;
        allow(ctx, Access::Write, Resource::Exchange, name).map_err(|e| e.on(60, 40))?;
        self.exchange_cache = Some((x.clone(), generation));
        Ok(x)
    }

    fn complete(&mut self, ctx: &Ctx<'_>) -> AmqpResult {
        let p = self.pending.take().expect("pending publish");
        let (props_len, _) = p.header.expect("header seen");
        let x = self.lookup_exchange(ctx, &p.exchange)?;
        if x.internal {
            return Err(AmqpError::channel(
                403,
                format!(
                    "cannot publish to internal exchange '{}' in vhost '{}'",
                    x.name, ctx.vhost.name
                ),
            )
            .on(60, 40));
        }
        if std::str::from_utf8(&p.meta[..p.key_len]).is_err() {
            return Err(AmqpError::connection(502, "routing key is not UTF-8"));
        }
        let head = p.key_len + props_len;
        let all = p.meta.freeze();
        let body = match (p.zero_copy, p.body) {
            (Some(b), _) => b,
            (None, Some(b)) => b.freeze(),
            (None, None) => all.slice(head..),
        };
        let mut msg = Message::new(x.name.clone(), all.slice(..head), p.key_len as u8, body)
            .map_err(|e| AmqpError::connection(502, format!("invalid content header: {e}")))?;
        if msg.reply_to() == Some(REPLY_TO.as_bytes()) {
            msg = self.rewrite_reply_to(msg)?;
        }
        if let Some(tx) = self.tx.as_mut() {
            tx.publishes.push((x, msg, p.mandatory));
            return Ok(());
        }
        self.route(ctx, &x, msg, p.mandatory)
    }

    fn rewrite_reply_to(&self, msg: Message) -> AmqpResult<Message> {
        let Some(q) = &self.reply_queue else {
            return Err(AmqpError::channel(406, "fast reply consumer does not exist").on(60, 40));
        };
        let mut props = Properties::decode(msg.raw_properties())
            .map_err(|e| AmqpError::connection(502, format!("invalid content header: {e}")))?;
        props.reply_to = Some(q.name.to_string());
        msg.with_properties(&props.encode())
            .map_err(|e| AmqpError::connection(502, format!("invalid content header: {e}")))
    }

    fn route(
        &mut self,
        ctx: &Ctx<'_>,
        x: &Arc<Exchange>,
        msg: Message,
        mandatory: bool,
    ) -> AmqpResult {
        let cached = self
            .cache
            .exchange
            .as_ref()
            .is_some_and(|c| Arc::ptr_eq(c, x))
            && self.cache.generation == x.generation()
            && self.cache.key == msg.routing_key_bytes();
        if !cached {
            let generation = x.generation();
            ctx.vhost
                .resolve(x, &msg, &mut self.scratch)
                .map_err(|e| AmqpError::from(e).on(60, 40))?;
            if x.key_only && self.scratch.cacheable {
                self.cache.exchange = Some(x.clone());
                self.cache.generation = generation;
                self.cache.key.clear();
                self.cache.key.extend_from_slice(msg.routing_key_bytes());
                std::mem::swap(&mut self.cache.queues, &mut self.scratch.queues);
            } else {
                self.cache.exchange = None;
                std::mem::swap(&mut self.cache.queues, &mut self.scratch.queues);
            }
        }
        ConnStats::add(&self.shared.stats.published, 1);
        let unroutable = self.cache.queues.is_empty();
        let returned = if unroutable && mandatory {
            Some(msg.clone())
        } else {
            None
        };
        if msg.persistent && !ctx.vhost.store_healthy() {
            return Err(AmqpError::channel(
                506,
                "cannot write to the message store (disk full?); persistent publishes are refused",
            )
            .on(60, 40));
        }
        let routed = ctx.vhost.deliver(&self.cache.queues, msg);
        self.backlogged |= routed.backlogged;
        if let Some(m) = returned {
            let n = self.shared.number;
            let fm = self.shared.frame_max;
            self.shared.out.push(|out| {
                codec::write_return(
                    out,
                    n,
                    312,
                    "NO_ROUTE",
                    m.exchange.as_bytes(),
                    m.routing_key_bytes(),
                );
                codec::write_content(out, n, m.raw_properties(), &m.body, fm);
            });
        }
        if self.confirm {
            self.publish_seq += 1;
            if routed.rejected {
                self.confirm_waits.push_back((self.publish_seq, Wait::Nack));
            } else if let Some(seq) = routed.sync_seq {
                self.confirm_waits
                    .push_back((self.publish_seq, Wait::Sync(seq)));
            }
        }
        Ok(())
    }

    /// Send the confirms decided so far: one multiple-ack for each run of
    /// positive outcomes, a nack for each refused or lost publish. A
    /// persistent message is confirmed only once the store has synced it.
    pub fn flush_confirms(&mut self, sync: SyncState) {
        let n = self.shared.number;
        loop {
            let (upto, nack) = match self.confirm_waits.front() {
                None => (self.publish_seq, None),
                Some(&(tag, Wait::Sync(s))) if s <= sync.synced && s > sync.failed => {
                    self.confirm_waits.pop_front();
                    let _ = tag;
                    continue;
                }
                Some(&(tag, Wait::Sync(s))) if s <= sync.failed => (tag - 1, Some(tag)),
                Some(&(tag, Wait::Nack)) => (tag - 1, Some(tag)),
                Some(&(tag, Wait::Sync(_))) => (tag - 1, None),
            };
            if upto > self.confirm_sent {
                let multiple = upto > self.confirm_sent + 1;
                self.shared
                    .out
                    .push(|out| codec::write_confirm(out, n, upto, multiple, true));
                ConnStats::add(&self.shared.stats.confirmed, upto - self.confirm_sent);
                self.confirm_sent = upto;
            }
            match nack {
                Some(tag) => {
                    self.shared
                        .out
                        .push(|out| codec::write_confirm(out, n, tag, false, false));
                    self.confirm_sent = tag;
                    self.confirm_waits.pop_front();
                }
                None => return,
            }
        }
    }

    /// Whether some confirm is still owed to the client.
    pub fn has_pending_confirms(&self) -> bool {
        self.publish_seq > self.confirm_sent
    }

    // ---- acknowledgements -------------------------------------------------

    /// basic.ack / nack / reject from the client.
    pub fn on_settle(&mut self, s: Settle) -> AmqpResult {
        if let Some(tx) = self.tx.as_mut() {
            tx.settles.push(s);
            return Ok(());
        }
        self.settle(s)
    }

    fn settle(&mut self, s: Settle) -> AmqpResult {
        let method = match (s.negative, s.requeue || s.multiple) {
            (false, _) => 80,
            _ => 120,
        };
        {
            let mut st = self.shared.state.lock();
            if s.multiple {
                if s.tag == 0 {
                    self.settled.extend(st.unacked.drain(..));
                } else {
                    while st.unacked.front().is_some_and(|u| u.tag <= s.tag) {
                        self.settled.push(st.unacked.pop_front().expect("front"));
                    }
                    if self.settled.is_empty() {
                        return Err(AmqpError::channel(
                            406,
                            format!("unknown delivery tag {}", s.tag),
                        )
                        .on(60, method));
                    }
                }
            } else {
                match st.unacked.binary_search_by_key(&s.tag, |u| u.tag) {
                    Ok(i) => self.settled.push(st.unacked.remove(i).expect("index")),
                    Err(_) => {
                        return Err(AmqpError::channel(
                            406,
                            format!("unknown delivery tag {}", s.tag),
                        )
                        .on(60, method))
                    }
                }
            }
        }
        let mut settled = std::mem::take(&mut self.settled);
        if !s.negative {
            ConnStats::add(&self.shared.stats.acked, settled.len() as u64);
        }
        let outcome = match (s.negative, s.requeue) {
            (false, _) => Outcome::Ack,
            (true, true) => Outcome::Requeue,
            (true, false) => Outcome::Reject,
        };
        self.release(&mut settled, outcome);
        self.settled = settled;
        Ok(())
    }

    /// Return credit and settle or requeue messages taken off `unacked`.
    fn release(&self, settled: &mut Vec<Unacked>, outcome: Outcome) {
        for u in settled.iter() {
            if let Some(c) = &u.consumer {
                c.unacked.fetch_sub(1, Ordering::Relaxed);
            }
        }
        let mut i = 0;
        while i < settled.len() {
            let q = settled[i].queue.clone();
            let mut j = i + 1;
            while j < settled.len() && Arc::ptr_eq(&settled[j].queue, &q) {
                j += 1;
            }
            match outcome {
                Outcome::Requeue => q.requeue(settled[i..j].iter().map(|u| u.delivery.clone())),
                Outcome::Ack => q.settle(settled[i..j].iter().map(|u| &u.delivery)),
                // Dead-lettered when the queue has a DLX.
                Outcome::Reject => q.reject(settled[i..j].iter().map(|u| &u.delivery)),
            }
            i = j;
        }
        settled.clear();
        // Freed credit may let consumers of this channel take more.
        let global = self.shared.state.lock().global_prefetch > 0;
        let mut seen: Vec<*const Queue> = Vec::new();
        for c in self.consumers.values() {
            if !c.no_ack && (global || c.prefetch > 0) && !seen.contains(&Arc::as_ptr(&c.queue)) {
                seen.push(Arc::as_ptr(&c.queue));
                c.queue.dispatch();
            }
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

    // ---- control-plane methods -------------------------------------------

    /// Any method other than publish/ack/nack/reject.
    pub fn on_method(&mut self, ctx: &Ctx<'_>, m: AMQPClass) -> AmqpResult {
        let (class, method) = (m.get_amqp_class_id(), m.get_amqp_method_id());
        self.method(ctx, m).map_err(|e| e.on(class, method))
    }

    fn method(&mut self, ctx: &Ctx<'_>, m: AMQPClass) -> AmqpResult {
        let conn = ctx.conn_id;
        match m {
            AMQPClass::Exchange(exchange::AMQPMethod::Declare(d)) => {
                if !d.passive {
                    allow(
                        ctx,
                        Access::Configure,
                        Resource::Exchange,
                        d.exchange.as_str(),
                    )?;
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
            }
            AMQPClass::Exchange(exchange::AMQPMethod::Delete(d)) => {
                allow(
                    ctx,
                    Access::Configure,
                    Resource::Exchange,
                    d.exchange.as_str(),
                )?;
                ctx.vhost
                    .delete_exchange(d.exchange.as_str(), d.if_unused)?;
                self.reply_unless(
                    d.nowait,
                    AMQPClass::Exchange(exchange::AMQPMethod::DeleteOk(exchange::DeleteOk {})),
                );
            }
            AMQPClass::Exchange(exchange::AMQPMethod::Bind(b)) => {
                allow_binding(
                    ctx,
                    Resource::Exchange,
                    b.destination.as_str(),
                    b.source.as_str(),
                )?;
                ctx.vhost.bind_exchange(
                    b.destination.as_str(),
                    b.source.as_str(),
                    b.routing_key.as_str(),
                    &to_table(&b.arguments),
                )?;
                self.reply_unless(
                    b.nowait,
                    AMQPClass::Exchange(exchange::AMQPMethod::BindOk(exchange::BindOk {})),
                );
            }
            AMQPClass::Exchange(exchange::AMQPMethod::Unbind(b)) => {
                allow_binding(
                    ctx,
                    Resource::Exchange,
                    b.destination.as_str(),
                    b.source.as_str(),
                )?;
                ctx.vhost.unbind_exchange(
                    b.destination.as_str(),
                    b.source.as_str(),
                    b.routing_key.as_str(),
                    &to_table(&b.arguments),
                )?;
                self.reply_unless(
                    b.nowait,
                    AMQPClass::Exchange(exchange::AMQPMethod::UnbindOk(exchange::UnbindOk {})),
                );
            }
            AMQPClass::Queue(queue::AMQPMethod::Declare(d)) => {
                // Server-named queues are named first, so the check sees the name.
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
                };
                let (q, messages, consumers) = ctx.vhost.declare_queue(&decl, conn)?;
                self.last_queue = Some(q.name.to_string());
                self.reply_unless(
                    d.nowait,
                    AMQPClass::Queue(queue::AMQPMethod::DeclareOk(queue::DeclareOk {
                        queue: q.name.as_ref().into(),
                        message_count: messages,
                        consumer_count: consumers,
                    })),
                );
            }
            AMQPClass::Queue(queue::AMQPMethod::Bind(b)) => {
                let qname = self.queue_name(b.queue.as_str())?;
                allow_binding(ctx, Resource::Queue, &qname, b.exchange.as_str())?;
                ctx.vhost.bind_queue(
                    &qname,
                    b.exchange.as_str(),
                    b.routing_key.as_str(),
                    &to_table(&b.arguments),
                    conn,
                )?;
                self.reply_unless(
                    b.nowait,
                    AMQPClass::Queue(queue::AMQPMethod::BindOk(queue::BindOk {})),
                );
            }
            AMQPClass::Queue(queue::AMQPMethod::Unbind(b)) => {
                let qname = self.queue_name(b.queue.as_str())?;
                allow_binding(ctx, Resource::Queue, &qname, b.exchange.as_str())?;
                ctx.vhost.unbind_queue(
                    &qname,
                    b.exchange.as_str(),
                    b.routing_key.as_str(),
                    &to_table(&b.arguments),
                    conn,
                )?;
                self.reply(AMQPClass::Queue(queue::AMQPMethod::UnbindOk(
                    queue::UnbindOk {},
                )));
            }
            AMQPClass::Queue(queue::AMQPMethod::Purge(p)) => {
                let qname = self.queue_name(p.queue.as_str())?;
                allow(ctx, Access::Read, Resource::Queue, &qname)?;
                let n = ctx.vhost.purge_queue(&qname, conn)?;
                self.reply_unless(
                    p.nowait,
                    AMQPClass::Queue(queue::AMQPMethod::PurgeOk(queue::PurgeOk {
                        message_count: n,
                    })),
                );
            }
            AMQPClass::Queue(queue::AMQPMethod::Delete(d)) => {
                let qname = self.queue_name(d.queue.as_str())?;
                allow(ctx, Access::Configure, Resource::Queue, &qname)?;
                let n = ctx
                    .vhost
                    .delete_queue(&qname, d.if_unused, d.if_empty, conn)?;
                self.reply_unless(
                    d.nowait,
                    AMQPClass::Queue(queue::AMQPMethod::DeleteOk(queue::DeleteOk {
                        message_count: n,
                    })),
                );
            }
            AMQPClass::Basic(basic::AMQPMethod::Qos(q)) => {
                if q.prefetch_count == 0 && q.global {
                    self.shared.state.lock().global_prefetch = 0;
                } else if q.global {
                    self.shared.state.lock().global_prefetch = q.prefetch_count as u32;
                } else {
                    self.prefetch = q.prefetch_count as u32;
                    self.shared.prefetch.store(self.prefetch, Ordering::Relaxed);
                }
                self.reply(AMQPClass::Basic(basic::AMQPMethod::QosOk(basic::QosOk {})));
                for c in self.consumers.values() {
                    c.queue.dispatch();
                }
            }
            AMQPClass::Basic(basic::AMQPMethod::Consume(c)) => self.consume(ctx, c)?,
            AMQPClass::Basic(basic::AMQPMethod::Cancel(c)) => {
                if let Some(cs) = self.consumers.remove(c.consumer_tag.as_str()) {
                    self.shared.consumers.fetch_sub(1, Ordering::Relaxed);
                    cs.active.store(false, Ordering::Release);
                    if cs.queue.remove_consumer(self.shared.uid, &cs.tag) {
                        ctx.vhost.remove_queue(&cs.queue);
                    }
                    if self
                        .reply_queue
                        .as_ref()
                        .is_some_and(|q| Arc::ptr_eq(q, &cs.queue))
                    {
                        if let Some(q) = self.reply_queue.take() {
                            ctx.vhost.remove_queue(&q);
                        }
                    }
                }
                self.reply_unless(
                    c.nowait,
                    AMQPClass::Basic(basic::AMQPMethod::CancelOk(basic::CancelOk {
                        consumer_tag: c.consumer_tag,
                    })),
                );
            }
            AMQPClass::Basic(basic::AMQPMethod::Get(g)) => {
                self.get(ctx, &g.queue.to_string(), g.no_ack)?
            }
            AMQPClass::Basic(basic::AMQPMethod::Recover(r)) => {
                self.recover(r.requeue)?;
                self.reply(AMQPClass::Basic(basic::AMQPMethod::RecoverOk(
                    basic::RecoverOk {},
                )));
            }
            AMQPClass::Basic(basic::AMQPMethod::RecoverAsync(r)) => self.recover(r.requeue)?,
            AMQPClass::Tx(tx::AMQPMethod::Select(_)) => {
                if self.confirm {
                    return Err(AmqpError::channel(
                        406,
                        "cannot switch from confirm to tx mode",
                    ));
                }
                if self.tx.is_none() {
                    self.shared.mode.store(2, Ordering::Relaxed);
                    self.tx = Some(TxBuffer {
                        publishes: Vec::new(),
                        settles: Vec::new(),
                    });
                }
                self.reply(AMQPClass::Tx(tx::AMQPMethod::SelectOk(tx::SelectOk {})));
            }
            AMQPClass::Tx(tx::AMQPMethod::Commit(_)) => {
                let Some(buf) = self.tx.as_mut() else {
                    return Err(AmqpError::channel(406, "channel is not transactional"));
                };
                let publishes = std::mem::take(&mut buf.publishes);
                let settles = std::mem::take(&mut buf.settles);
                for (x, msg, mandatory) in publishes {
                    self.route(ctx, &x, msg, mandatory)?;
                }
                for s in settles {
                    self.settle(s)?;
                }
                self.reply(AMQPClass::Tx(tx::AMQPMethod::CommitOk(tx::CommitOk {})));
            }
            AMQPClass::Tx(tx::AMQPMethod::Rollback(_)) => {
                let Some(buf) = self.tx.as_mut() else {
                    return Err(AmqpError::channel(406, "channel is not transactional"));
                };
                buf.publishes.clear();
                buf.settles.clear();
                self.reply(AMQPClass::Tx(tx::AMQPMethod::RollbackOk(tx::RollbackOk {})));
            }
            AMQPClass::Confirm(confirm::AMQPMethod::Select(s)) => {
                if self.tx.is_some() {
                    return Err(AmqpError::channel(
                        406,
                        "cannot switch from tx to confirm mode",
                    ));
                }
                self.confirm = true;
                self.shared.mode.store(1, Ordering::Relaxed);
                self.reply_unless(
                    s.nowait,
                    AMQPClass::Confirm(confirm::AMQPMethod::SelectOk(confirm::SelectOk {})),
                );
            }
            other => {
                return Err(AmqpError::connection(
                    540,
                    format!(
                        "method {}.{} is not implemented",
                        other.get_amqp_class_id(),
                        other.get_amqp_method_id()
                    ),
                ))
            }
        }
        Ok(())
    }

    /// An empty queue name means the channel's last declared queue (spec).
    fn queue_name(&self, name: &str) -> AmqpResult<String> {
        if !name.is_empty() {
            return Ok(name.to_string());
        }
        self.last_queue
            .clone()
            .ok_or_else(|| AmqpError::channel(404, "no previously declared queue"))
    }

    fn consume(&mut self, ctx: &Ctx<'_>, c: basic::Consume) -> AmqpResult {
        let tag: Arc<str> = if c.consumer_tag.as_str().is_empty() {
            Arc::from(ctx.vhost.generate_name("amq.ctag-"))
        } else {
            Arc::from(c.consumer_tag.as_str())
        };
        if self.consumers.contains_key(&tag) {
            return Err(AmqpError::connection(
                530,
                format!("attempt to reuse consumer tag '{tag}'"),
            ));
        }
        let q = if c.queue.as_str() == REPLY_TO {
            self.reply_consumer_queue(ctx, c.no_ack)?
        } else {
            let name = self.queue_name(c.queue.as_str())?;
            allow(ctx, Access::Read, Resource::Queue, &name)?;
            let q = ctx.vhost.queue(&name)?;
            q.check_owner(ctx.conn_id)?;
            q
        };
        let state = Arc::new(ConsumerState {
            tag: tag.clone(),
            queue: q.clone(),
            no_ack: c.no_ack,
            prefetch: self.prefetch,
            unacked: AtomicU32::new(0),
            active: AtomicBool::new(false),
        });
        let consumer = Arc::new(AmqpConsumer {
            channel: self.shared.clone(),
            state: state.clone(),
        });
        let priority = match to_table(&c.arguments).get("x-priority") {
            None => 0,
            Some(v) => v
                .as_i64()
                .and_then(|p| i32::try_from(p).ok())
                .ok_or_else(|| {
                    AmqpError::channel(406, format!("invalid arg 'x-priority' for consumer: {v:?}"))
                })?,
        };
        q.add_consumer(ConsumerSpec {
            tag: tag.clone(),
            channel_id: self.shared.uid,
            no_ack: c.no_ack,
            exclusive: c.exclusive,
            priority,
            consumer,
        })?;
        self.consumers.insert(tag.clone(), state.clone());
        self.shared.consumers.fetch_add(1, Ordering::Relaxed);
        self.reply_unless(
            c.nowait,
            AMQPClass::Basic(basic::AMQPMethod::ConsumeOk(basic::ConsumeOk {
                consumer_tag: tag.as_ref().into(),
            })),
        );
        // Deliveries start only after consume-ok is in the outbox.
        state.active.store(true, Ordering::Release);
        q.dispatch();
        Ok(())
    }

    fn reply_consumer_queue(&mut self, ctx: &Ctx<'_>, no_ack: bool) -> AmqpResult<Arc<Queue>> {
        if !no_ack {
            return Err(AmqpError::channel(406, "reply consumer cannot acknowledge"));
        }
        if self.reply_queue.is_some() {
            return Err(AmqpError::channel(406, "reply consumer already set"));
        }
        let name = ctx.vhost.generate_name(&format!("{REPLY_TO}."));
        let q = Queue::new(
            &ctx.vhost.name,
            &name,
            false,
            Some(ctx.conn_id),
            false,
            Table::default(),
        )?
        .hidden();
        let q = ctx.vhost.add_hidden_queue(q)?;
        self.reply_queue = Some(q.clone());
        Ok(q)
    }

    fn get(&mut self, ctx: &Ctx<'_>, name: &str, no_ack: bool) -> AmqpResult {
        let name = self.queue_name(name)?;
        allow(ctx, Access::Read, Resource::Queue, &name)?;
        let q = ctx.vhost.queue(&name)?;
        q.check_owner(ctx.conn_id)?;
        let n = self.shared.number;
        let Some((d, remaining)) = q.get(no_ack) else {
            self.reply(AMQPClass::Basic(basic::AMQPMethod::GetEmpty(
                basic::GetEmpty {},
            )));
            return Ok(());
        };
        let mut st = self.shared.state.lock();
        let tag = st.next_tag;
        st.next_tag += 1;
        ConnStats::add(&self.shared.stats.delivered, 1);
        let m = &d.message;
        let fm = self.shared.frame_max;
        self.shared.out.push(|out| {
            codec::write_get_ok(
                out,
                n,
                tag,
                d.redelivered,
                m.exchange.as_bytes(),
                m.routing_key_bytes(),
                remaining,
            );
            codec::write_content(out, n, m.raw_properties(), &m.body, fm);
        });
        if !no_ack {
            st.unacked.push_back(Unacked {
                tag,
                queue: q,
                delivery: d,
                consumer: None,
            });
        }
        Ok(())
    }

    fn recover(&mut self, requeue: bool) -> AmqpResult {
        if !requeue {
            return Err(AmqpError::connection(540, "requeue=false"));
        }
        let mut all: Vec<Unacked> = self.shared.state.lock().unacked.drain(..).collect();
        self.release(&mut all, Outcome::Requeue);
        Ok(())
    }
}
