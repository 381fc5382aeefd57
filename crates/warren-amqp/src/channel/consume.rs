//! Consuming: basic.qos, basic.consume, basic.cancel and basic.get.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;

use amq_protocol::protocol::{basic, AMQPClass, AMQPHardError, AMQPSoftError};
use warren_core::auth::{Access, Resource};
use warren_core::queue::ConsumerSpec;
use warren_core::registry::ConnStats;
use warren_core::{Queue, Value};

use super::topology::allow;
use super::{Channel, Ctx, REPLY_TO};
use crate::codec;
use crate::deliveries::{AmqpConsumer, ConsumerState, Unacked};
use crate::error::{AmqpError, AmqpResult};
use crate::tables::to_table;

impl Channel {
    /// basic.qos: per-consumer (the default) or channel-wide prefetch.
    pub(super) fn qos(&mut self, q: basic::Qos) -> AmqpResult {
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
        Ok(())
    }

    /// basic.consume
    pub(super) fn consume(&mut self, ctx: &Ctx<'_>, c: basic::Consume) -> AmqpResult {
        let tag: Arc<str> = if c.consumer_tag.as_str().is_empty() {
            Arc::from(ctx.vhost.generate_name("amq.ctag-"))
        } else {
            Arc::from(c.consumer_tag.as_str())
        };
        if self.consumers.contains_key(&tag) {
            return Err(AmqpError::connection(
                AMQPHardError::NOTALLOWED,
                format!("attempt to reuse consumer tag '{tag}'"),
            ));
        }
        let q = if c.queue.as_str() == REPLY_TO {
            self.reply_consumer_queue(ctx, c.no_ack)?
        } else {
            self.readable_queue(ctx, c.queue.as_str())?
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
            Some(v) => consumer_priority(v)?,
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

    /// The queue `name` (empty: the last declared), readable by the user
    /// and not another connection's exclusive queue.
    fn readable_queue(&self, ctx: &Ctx<'_>, name: &str) -> AmqpResult<Arc<Queue>> {
        let name = self.queue_name(name)?;
        allow(ctx, Access::Read, Resource::Queue, &name)?;
        let q = ctx.vhost.queue(&name)?;
        q.check_owner(ctx.conn_id)?;
        Ok(q)
    }

    /// basic.cancel
    pub(super) fn cancel(&mut self, ctx: &Ctx<'_>, c: basic::Cancel) -> AmqpResult {
        if let Some(cs) = self.consumers.remove(c.consumer_tag.as_str()) {
            self.shared.consumers.fetch_sub(1, Ordering::Relaxed);
            cs.active.store(false, Ordering::Release);
            if cs.queue.remove_consumer(self.shared.uid, &cs.tag) {
                ctx.vhost.remove_queue(&cs.queue);
            }
            self.drop_reply_queue_of(ctx, &cs.queue);
        }
        self.reply_unless(
            c.nowait,
            AMQPClass::Basic(basic::AMQPMethod::CancelOk(basic::CancelOk {
                consumer_tag: c.consumer_tag,
            })),
        );
        Ok(())
    }

    /// basic.get: get-ok with the message, or get-empty.
    pub(super) fn get(&mut self, ctx: &Ctx<'_>, name: &str, no_ack: bool) -> AmqpResult {
        let q = self.readable_queue(ctx, name)?;
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
}

/// A consumer's `x-priority` argument: an integer that fits an i32.
fn consumer_priority(v: &Value) -> AmqpResult<i32> {
    v.as_i64()
        .and_then(|p| i32::try_from(p).ok())
        .ok_or_else(|| {
            AmqpError::channel(
                AMQPSoftError::PRECONDITIONFAILED,
                format!("invalid arg 'x-priority' for consumer: {v:?}"),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consumer_priority_must_fit_an_i32() {
        assert_eq!(consumer_priority(&Value::I16(-5)).unwrap(), -5);
        assert_eq!(consumer_priority(&Value::I64(7)).unwrap(), 7);
        let e = consumer_priority(&Value::I64(1 << 40)).unwrap_err();
        assert_eq!(e.code(), 406);
        assert!(consumer_priority(&Value::str("high")).is_err());
    }
}
