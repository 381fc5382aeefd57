//! The part of a channel that queues touch: delivery tags, unacknowledged
//! messages and prefetch credit. Queues call [`AmqpConsumer::offer`] with
//! their own lock held, so this state has its own small mutex (lock order:
//! queue -> channel deliveries -> outbox) and never calls back into a queue.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU8, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use warren_core::registry::{ChannelSnapshot, ChannelView, ConnStats};
use warren_core::{Consumer, Delivery, Queue};

use crate::codec;
use warren_net::outbox::Outbox;

/// A message delivered on this channel and not yet settled.
pub struct Unacked {
    /// Channel-scoped delivery tag.
    pub tag: u64,
    /// Where it came from, for settle and requeue.
    pub queue: Arc<Queue>,
    /// The delivery itself.
    pub delivery: Delivery,
    /// The consumer whose credit it uses (none for basic.get).
    pub consumer: Option<Arc<ConsumerState>>,
}

/// Per-consumer flags and credit.
pub struct ConsumerState {
    /// Consumer tag.
    pub tag: Arc<str>,
    /// Queue it consumes from.
    pub queue: Arc<Queue>,
    /// Auto-ack mode.
    pub no_ack: bool,
    /// Per-consumer prefetch (0 = unlimited).
    pub prefetch: u32,
    /// Deliveries outstanding against `prefetch`.
    pub unacked: AtomicU32,
    /// False until consume-ok is written, and after cancel.
    pub active: AtomicBool,
}

/// Mutable delivery state of one channel.
pub struct State {
    /// Next delivery tag to hand out.
    pub next_tag: u64,
    /// Outstanding deliveries, in tag order.
    pub unacked: VecDeque<Unacked>,
    /// Channel-wide prefetch from basic.qos(global=true); 0 = unlimited.
    pub global_prefetch: u32,
    /// Set when the channel closes; offers are refused from then on.
    pub closed: bool,
}

/// Values of [`ChannelShared::mode`], mirrored for listings.
pub mod mode {
    /// Neither confirm nor tx.
    pub const PLAIN: u8 = 0;
    /// confirm.select received.
    pub const CONFIRM: u8 = 1;
    /// tx.select received.
    pub const TX: u8 = 2;
}

/// Shared between the channel (reader task) and its consumers (queue side).
pub struct ChannelShared {
    /// Channel number on the wire.
    pub number: u16,
    /// Broker-unique id, used to scope consumer tags in queues.
    pub uid: u64,
    /// Negotiated frame_max, for splitting bodies.
    pub frame_max: usize,
    /// The connection's outbound buffer.
    pub out: Arc<Outbox>,
    /// Delivery state.
    pub state: Mutex<State>,
    /// Whether the client understands server-sent basic.cancel.
    pub cancel_notify: bool,
    /// The connection's traffic counters.
    pub stats: Arc<ConnStats>,
    /// Reader-side facts mirrored for listings: prefetch, consumer count,
    /// and mode.
    pub prefetch: AtomicU32,
    /// Consumers on this channel.
    pub consumers: AtomicU32,
    /// One of [`mode`]: plain, confirm or transactional.
    pub mode: AtomicU8,
}

impl ChannelView for ChannelShared {
    fn snapshot(&self) -> ChannelSnapshot {
        let st = self.state.lock();
        let mode = self.mode.load(Ordering::Relaxed);
        ChannelSnapshot {
            number: self.number,
            uid: self.uid,
            prefetch: self.prefetch.load(Ordering::Relaxed),
            global_prefetch: st.global_prefetch,
            unacked: st.unacked.len(),
            consumers: self.consumers.load(Ordering::Relaxed) as usize,
            confirm: mode == self::mode::CONFIRM,
            transactional: mode == self::mode::TX,
        }
    }
}

impl ChannelShared {
    /// Fresh state for a newly opened channel.
    pub fn new(
        number: u16,
        uid: u64,
        frame_max: usize,
        out: Arc<Outbox>,
        cancel_notify: bool,
        stats: Arc<ConnStats>,
    ) -> Self {
        ChannelShared {
            number,
            uid,
            frame_max,
            out,
            state: Mutex::new(State {
                next_tag: 1,
                unacked: VecDeque::new(),
                global_prefetch: 0,
                closed: false,
            }),
            cancel_notify,
            stats,
            prefetch: AtomicU32::new(0),
            consumers: AtomicU32::new(0),
            mode: AtomicU8::new(mode::PLAIN),
        }
    }
}

/// A basic.consume subscription as the core sees it.
pub struct AmqpConsumer {
    /// The channel it delivers on.
    pub channel: Arc<ChannelShared>,
    /// Its flags and credit.
    pub state: Arc<ConsumerState>,
}

impl Consumer for AmqpConsumer {
    fn offer(&self, queue: &Arc<Queue>, d: Delivery) -> Result<(), Delivery> {
        let cs = &self.state;
        if !cs.active.load(Ordering::Acquire) {
            return Err(d);
        }
        // Lock-free early refusal: publishers probing a full consumer must
        // not contend with that consumer's acks.
        if !cs.no_ack && cs.prefetch > 0 && cs.unacked.load(Ordering::Relaxed) >= cs.prefetch {
            return Err(d);
        }
        let ch = &self.channel;
        let mut st = ch.state.lock();
        if st.closed {
            return Err(d);
        }
        if !cs.no_ack {
            if cs.prefetch > 0 && cs.unacked.load(Ordering::Relaxed) >= cs.prefetch {
                return Err(d);
            }
            if st.global_prefetch > 0 && st.unacked.len() >= st.global_prefetch as usize {
                return Err(d);
            }
        }
        let tag = st.next_tag;
        let m = &d.message;
        let written = ch.out.try_push(queue, |out| {
            codec::write_deliver(
                out,
                ch.number,
                cs.tag.as_bytes(),
                tag,
                d.redelivered,
                m.exchange.as_bytes(),
                m.routing_key_bytes(),
            );
            codec::write_content(out, ch.number, m.raw_properties(), &m.body, ch.frame_max);
        });
        if !written {
            return Err(d);
        }
        st.next_tag += 1;
        ConnStats::add(&ch.stats.delivered, 1);
        if !cs.no_ack {
            cs.unacked.fetch_add(1, Ordering::Relaxed);
            st.unacked.push_back(Unacked {
                tag,
                queue: queue.clone(),
                delivery: d,
                consumer: Some(cs.clone()),
            });
        }
        Ok(())
    }

    fn queue_deleted(&self, _queue: &Arc<Queue>) {
        let was_active = self.state.active.swap(false, Ordering::AcqRel);
        if was_active && self.channel.cancel_notify && !self.channel.state.lock().closed {
            let number = self.channel.number;
            let tag = self.state.tag.clone();
            self.channel.out.push(|out| {
                crate::codec::write_method(
                    out,
                    number,
                    amq_protocol::protocol::AMQPClass::Basic(
                        amq_protocol::protocol::basic::AMQPMethod::Cancel(
                            amq_protocol::protocol::basic::Cancel {
                                consumer_tag: tag.as_ref().into(),
                                nowait: true,
                            },
                        ),
                    ),
                )
            });
        }
    }
}
