//! The session queue's consumer, which writes deliveries as PUBLISH
//! packets, and the in-flight state of QoS 1/2 deliveries until the client
//! acknowledges them.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::Notify;
use warren_core::registry::ConnStats;
use warren_core::{Consumer, Delivery, Message, Queue, Value};
use warren_net::outbox::Outbox;

use super::Conn;
use crate::codec;
use crate::mapping::{amqp_to_props, publish_qos, NO_LOCAL_HEADER, RETAIN_HEADER};
use crate::topic::{matches, swap};

/// Where an in-flight delivery came from.
pub(super) enum Sent {
    /// A queue's delivery, settled on it once acknowledged.
    Queued(Arc<Queue>, Delivery),
    /// A retained message (`retained.rs`): nothing to settle.
    Retained,
}

/// QoS 1/2 deliveries the client has not finished acknowledging.
#[derive(Default)]
pub(super) struct Inflight {
    next: u16,
    /// QoS 1/2 deliveries waiting for PUBACK / PUBREC.
    pub(super) by_id: HashMap<u16, Sent>,
    /// QoS 2 deliveries past PUBREC, waiting for PUBCOMP.
    pub(super) released: HashSet<u16>,
    /// Told when slots may have freed up (retained streams wait on it).
    pub(super) freed: Arc<Notify>,
}

impl Inflight {
    /// A packet id no in-flight delivery uses.
    pub(super) fn next_id(&mut self) -> u16 {
        loop {
            self.next = self.next.wrapping_add(1).max(1);
            let n = self.next;
            if !self.by_id.contains_key(&n) && !self.released.contains(&n) {
                return n;
            }
        }
    }
}

/// The session queue's consumer: encodes deliveries as PUBLISH packets.
pub(super) struct MqttConsumer {
    pub(super) out: Arc<Outbox>,
    pub(super) level: u8,
    pub(super) max_qos: Mutex<u8>,
    pub(super) inflight: Mutex<Inflight>,
    pub(super) receive_max: usize,
    pub(super) active: AtomicBool,
    /// The owning connection, for no-local.
    pub(super) conn_id: u64,
    /// Set once the session has a no-local subscription.
    pub(super) no_local: AtomicBool,
    pub(super) stats: Arc<ConnStats>,
    /// Filters subscribed with retain-as-published: a message published
    /// with RETAIN=1 keeps the flag when it matches one of them.
    pub(super) retain_as_published: Mutex<Vec<String>>,
}

impl MqttConsumer {
    /// The RETAIN flag of a forwarded message: set only when it was
    /// published retained and a retain-as-published subscription matches.
    /// The header is looked at first, so ordinary deliveries take no lock.
    fn retain_flag(&self, m: &Message) -> bool {
        let retained = matches!(m.header(RETAIN_HEADER), Some(Value::Bool(true)));
        if !retained {
            return false;
        }
        let topic = swap(m.routing_key());
        self.retain_as_published
            .lock()
            .iter()
            .any(|f| matches(f, &topic))
    }

    /// A message this connection published under a no-local subscription.
    fn is_own(&self, m: &Message) -> bool {
        self.no_local.load(Ordering::Relaxed)
            && m.header(NO_LOCAL_HEADER)
                .and_then(|v| v.as_i64())
                .is_some_and(|id| id as u64 == self.conn_id)
    }

    /// Raise the QoS deliveries may use to `granted`.
    pub(super) fn grant(&self, granted: u8) {
        let mut m = self.max_qos.lock();
        *m = (*m).max(granted);
    }
}

impl Consumer for MqttConsumer {
    fn offer(&self, queue: &Arc<Queue>, d: Delivery) -> Result<(), Delivery> {
        if !self.active.load(Ordering::Acquire) {
            return Err(d);
        }
        if self.is_own(&d.message) {
            // No-local: not sent back to its publisher; done with it.
            queue.settle([&d]);
            return Ok(());
        }
        let max = *self.max_qos.lock();
        let qos = if max == 0 || !d.message.persistent {
            0
        } else {
            publish_qos(&d.message).min(max)
        };
        let mut inf = self.inflight.lock();
        if qos > 0 && inf.by_id.len() + inf.released.len() >= self.receive_max {
            return Err(d);
        }
        let pkid = if qos > 0 { inf.next_id() } else { 0 };
        let level = self.level;
        let flags = (
            qos > 0 && d.redelivered,
            qos,
            level == 5 && self.retain_flag(&d.message),
        );
        let props = (level == 5).then(|| amqp_to_props(&d.message));
        let m = &d.message;
        if !self.out.try_push(queue, |o| {
            codec::write_delivery(
                o,
                level,
                flags,
                m.routing_key(),
                pkid,
                props.as_ref(),
                &m.body,
            )
        }) {
            return Err(d);
        }
        ConnStats::add(&self.stats.delivered, 1);
        if qos > 0 {
            inf.by_id.insert(pkid, Sent::Queued(queue.clone(), d));
        } else {
            queue.settle([&d]);
        }
        Ok(())
    }

    fn queue_deleted(&self, _queue: &Arc<Queue>) {
        self.active.store(false, Ordering::Release);
    }
}

impl Conn {
    /// PUBACK or PUBREC for one of our deliveries: settle it on its queue.
    pub(super) fn settle_outbound(&self, pkid: u16, released: bool) {
        let (taken, freed) = {
            let mut inf = self.consumer.inflight.lock();
            let t = inf.by_id.remove(&pkid);
            if released && t.is_some() {
                inf.released.insert(pkid);
            }
            (t, inf.freed.clone())
        };
        match taken {
            Some(Sent::Queued(q, d)) => {
                ConnStats::add(&self.registration.info.stats.acked, 1);
                q.settle([&d]);
                q.dispatch();
            }
            Some(Sent::Retained) => {
                ConnStats::add(&self.registration.info.stats.acked, 1);
                if let Some(q) = &self.queue {
                    q.dispatch();
                }
            }
            None => return,
        }
        freed.notify_waiters();
    }

    /// PUBCOMP: the QoS 2 flow of a delivery is done; its slot frees up.
    pub(super) fn on_pubcomp(&self, pkid: u16) {
        let (freed, notify) = {
            let mut inf = self.consumer.inflight.lock();
            (inf.released.remove(&pkid), inf.freed.clone())
        };
        if freed {
            notify.notify_waiters();
            let shared = self.extras.iter().flat_map(|e| e.shared_subs.values());
            for q in self.queue.iter().chain(shared) {
                q.dispatch();
            }
        }
    }

    /// Unacknowledged QoS 1/2 deliveries go back to the queue each came from.
    pub(super) fn requeue_inflight(&self) {
        let inflight: Vec<(Arc<Queue>, Delivery)> = self
            .consumer
            .inflight
            .lock()
            .by_id
            .drain()
            .filter_map(|(_, v)| match v {
                Sent::Queued(q, d) => Some((q, d)),
                Sent::Retained => None,
            })
            .collect();
        for (q, d) in inflight {
            q.requeue([d]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packet_ids_skip_zero_and_ids_in_flight() {
        let mut inf = Inflight::default();
        assert_eq!(inf.next_id(), 1);
        inf.released.insert(2);
        assert_eq!(inf.next_id(), 3);
        inf.next = u16::MAX;
        assert_eq!(inf.next_id(), 1);
    }
}
