//! The session queue's consumer, which writes deliveries as PUBLISH
//! packets, and the in-flight state of QoS 1/2 deliveries until the client
//! acknowledges them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use parking_lot::Mutex;
use tokio::sync::Notify;
use warren_core::registry::ConnStats;
use warren_core::session_ids::IdKind;
use warren_core::{Consumer, Delivery, Message, Queue, Value};
use warren_net::outbox::Outbox;

use super::aliases::{Alias, OutAliases};
use super::pending::Resends;
use super::subscriptions::{Options, Subs};
use super::{Conn, SESSION_QUEUE_PREFIX};
use crate::codec::{self, Props};
use crate::mapping::{amqp_to_props, publish_qos, NO_LOCAL_HEADER, RETAIN_HEADER};

/// Where an in-flight delivery came from.
pub(super) enum Sent {
    /// A queue's delivery, settled on it once acknowledged.
    Queued(Arc<Queue>, Delivery),
    /// A retained message (`retained.rs`): nothing to settle, but kept
    /// to be sent again if the session resumes before it is acknowledged.
    Retained(Box<RetainedSent>),
    /// A QoS 2 delivery past PUBREC, waiting for PUBCOMP (already settled).
    Released,
}

/// A retained message in flight: what its PUBLISH is made of again.
pub(super) struct RetainedSent {
    pub(super) message: Message,
    pub(super) qos: u8,
    /// The Subscription Identifier of the subscription it was sent for.
    pub(super) sub_id: Option<u32>,
}

/// QoS 1/2 deliveries the client has not finished acknowledging: one map
/// for both steps, so an idle connection carries one empty map, not two.
#[derive(Default)]
pub(super) struct Inflight {
    next: u16,
    /// By packet id: waiting for PUBACK / PUBREC, or (QoS 2) for PUBCOMP.
    pub(super) by_id: HashMap<u16, Sent>,
    /// Told when slots may have freed up; made by the first retained
    /// stream that waits on it (few connections ever have one).
    freed: Option<Arc<Notify>>,
    /// (session queue position, the packet id its delivery had on the
    /// last connection) of requeued deliveries not yet sent again; those
    /// ids are kept for them (MQTT-4.4.0-1). At most Receive Maximum
    /// entries, and empty (no allocation) for most connections.
    original: Vec<(u64, u16)>,
}

impl Inflight {
    /// A packet id no in-flight delivery uses, nor one kept for a
    /// requeued delivery (the client may still hold it for QoS 2).
    pub(super) fn next_id(&mut self) -> u16 {
        loop {
            self.next = self.next.wrapping_add(1).max(1);
            let n = self.next;
            let kept = self.original.iter().any(|&(_, id)| id == n);
            if !self.by_id.contains_key(&n) && !kept {
                return n;
            }
        }
    }

    /// Keep the ids requeued deliveries had (see `original`).
    pub(super) fn keep_original(&mut self, queued: Vec<(u64, u16)>) {
        if !queued.is_empty() {
            self.original = queued;
        }
    }

    /// The packet id for a delivery: the one it had before, when it is a
    /// requeued delivery of the session queue and the id is free.
    fn id_for(&mut self, session_queue: bool, d: &Delivery) -> u16 {
        if session_queue && d.redelivered && !self.original.is_empty() {
            if let Some(i) = self.original.iter().position(|&(seq, _)| seq == d.seq) {
                let (_, id) = self.original.swap_remove(i);
                if self.original.is_empty() {
                    // Its buffer goes too: most connections never need one.
                    self.original = Vec::new();
                }
                if !self.by_id.contains_key(&id) {
                    return id;
                }
            }
        }
        self.next_id()
    }

    /// What a retained stream waits on for free slots.
    pub(super) fn freed(&mut self) -> Arc<Notify> {
        self.freed.get_or_insert_with(Arc::default).clone()
    }

    /// Wake a waiting retained stream, if there is one.
    fn notify_freed(&self) {
        if let Some(n) = &self.freed {
            n.notify_waiters();
        }
    }
}

/// The session queue's consumer: encodes deliveries as PUBLISH packets.
pub(super) struct MqttConsumer {
    pub(super) out: Arc<Outbox>,
    pub(super) level: u8,
    /// The subscriptions' delivery options.
    pub(super) subs: Mutex<Subs>,
    pub(super) inflight: Mutex<Inflight>,
    pub(super) receive_max: usize,
    pub(super) active: AtomicBool,
    /// The owning connection, for no-local.
    pub(super) conn_id: u64,
    /// Set once the session has a no-local subscription.
    pub(super) no_local: AtomicBool,
    pub(super) stats: Arc<ConnStats>,
    /// The client's Maximum Packet Size: larger deliveries are dropped for
    /// it (MQTT-3.1.2-25), not sent.
    pub(super) max_packet: usize,
    /// Topic aliases, when the client accepts any (boxed: most do not,
    /// and idle connections should not pay for the map).
    pub(super) aliases: Option<Box<Mutex<OutAliases>>>,
}

impl MqttConsumer {
    /// A message this connection published under a no-local subscription.
    fn is_own(&self, m: &Message) -> bool {
        self.no_local.load(Ordering::Relaxed)
            && m.header(NO_LOCAL_HEADER)
                .and_then(|v| v.as_i64())
                .is_some_and(|id| id as u64 == self.conn_id)
    }

    /// The options of a delivery from `queue` (the session queue or a
    /// shared group's), with the matching subscriptions' identifiers.
    fn options(&self, queue: &Queue, key: &str, ids: &mut Vec<u32>) -> Option<Options> {
        let subs = self.subs.lock();
        if queue.name.starts_with(SESSION_QUEUE_PREFIX) {
            subs.for_session(key, ids)
        } else {
            subs.for_shared_queue(&queue.name, key, ids)
        }
    }

    /// The v5 properties of a delivery: the message's, with the time left
    /// of its expiry and the subscription identifiers.
    fn props(&self, d: &Delivery, ids: Vec<u32>) -> Props {
        let mut p = amqp_to_props(&d.message);
        if let Some(at) = d.expires_at() {
            let left = at.saturating_duration_since(Instant::now());
            // Rounded up: an interval of 0 would mean "no expiry" to nobody,
            // but a message sent with 0 s left expires at once.
            p.message_expiry =
                Some(left.as_millis().div_ceil(1000).min(u128::from(u32::MAX)) as u32);
        }
        p.subscription_ids = ids;
        p
    }

    /// Write one delivery; Err when the outbox is full (hand it back),
    /// Ok(false) when it is larger than the client accepts. The v5
    /// properties are passed by reference: a `Props` is large, and moving
    /// one (even `None`) per delivery showed up as memcpy in profiles.
    fn write(
        &self,
        queue: &Arc<Queue>,
        d: &Delivery,
        flags: (bool, u8, bool),
        pkid: u16,
        mut props: Option<&mut Props>,
    ) -> Result<bool, ()> {
        let m = &d.message;
        let key = m.routing_key();
        let mut aliases = self.aliases.as_ref().map(|a| a.lock());
        let alias = aliases.as_mut().map_or(Alias::None, |a| a.lookup(key));
        let topic = match (alias, props.as_deref_mut()) {
            (Alias::Known(a), Some(p)) => {
                p.topic_alias = Some(a);
                ""
            }
            (Alias::New(a), Some(p)) => {
                p.topic_alias = Some(a);
                key
            }
            _ => key,
        };
        let mut fits = true;
        let level = self.level;
        let props = props.as_deref();
        let pushed = self.out.try_push(queue, |o| {
            fits = codec::write_delivery(
                o,
                level,
                flags,
                topic,
                pkid,
                props,
                &m.body,
                self.max_packet,
            );
        });
        if !pushed || !fits {
            if let Some(a) = aliases.as_mut() {
                a.unassign(key, alias);
            }
        }
        if !pushed {
            return Err(());
        }
        Ok(fits)
    }
}

impl Consumer for MqttConsumer {
    fn offer(&self, queue: &Arc<Queue>, d: Delivery) -> Result<(), Delivery> {
        if !self.active.load(Ordering::Acquire) {
            return Err(d);
        }
        let mut ids = Vec::new();
        let opts = match self.options(queue, d.message.routing_key(), &mut ids) {
            // No-local: not sent back to its publisher; done with it.
            Some(_) if self.is_own(&d.message) => None,
            o => o,
        };
        let Some(opts) = opts else {
            // No subscription takes it by MQTT's rules (no-local, a `$`
            // topic under a wildcard): done with it.
            queue.settle([&d]);
            return Ok(());
        };
        let qos = if opts.qos == 0 || !d.message.persistent {
            0
        } else {
            publish_qos(&d.message).min(opts.qos)
        };
        let mut inf = self.inflight.lock();
        if qos > 0 && inf.by_id.len() >= self.receive_max {
            return Err(d);
        }
        let session_queue = queue.name.starts_with(SESSION_QUEUE_PREFIX);
        let pkid = if qos > 0 {
            inf.id_for(session_queue, &d)
        } else {
            0
        };
        let level = self.level;
        let retain = level == 5
            && opts.retain_as_published
            && matches!(d.message.header(RETAIN_HEADER), Some(Value::Bool(true)));
        let mut props = (level == 5).then(|| self.props(&d, ids));
        let flags = (qos > 0 && d.redelivered, qos, retain);
        match self.write(queue, &d, flags, pkid, props.as_mut()) {
            Err(()) => return Err(d),
            Ok(false) => {
                tracing::debug!(
                    size_limit = self.max_packet,
                    "MQTT delivery larger than the client's Maximum Packet Size dropped"
                );
                queue.settle([&d]);
                return Ok(());
            }
            Ok(true) => {}
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
        let taken = {
            let mut inf = self.consumer.inflight.lock();
            match inf.by_id.remove(&pkid) {
                // A repeated PUBREC: the flow already moved on.
                Some(Sent::Released) => {
                    inf.by_id.insert(pkid, Sent::Released);
                    return;
                }
                Some(t) => {
                    if released {
                        inf.by_id.insert(pkid, Sent::Released);
                    } else {
                        inf.notify_freed();
                    }
                    t
                }
                None => return,
            }
        };
        if released && self.persistent {
            // Kept through the log: a resumed session, after a restart
            // too, sends this PUBREL again (MQTT-4.4.0-1).
            let ids = &self.vhost.session_ids;
            ids.add(&self.client_id, IdKind::Released, pkid);
        }
        match taken {
            Sent::Queued(q, d) => {
                ConnStats::add(&self.registration.info.stats.acked, 1);
                q.settle([&d]);
                q.dispatch();
            }
            Sent::Retained(_) => {
                ConnStats::add(&self.registration.info.stats.acked, 1);
                if let Some(q) = &self.queue {
                    q.dispatch();
                }
            }
            Sent::Released => {}
        }
    }

    /// PUBCOMP: the QoS 2 flow of a delivery is done; its slot frees up.
    pub(super) fn on_pubcomp(&self, pkid: u16) {
        let freed = {
            let mut inf = self.consumer.inflight.lock();
            let done = matches!(inf.by_id.get(&pkid), Some(Sent::Released));
            if done {
                inf.by_id.remove(&pkid);
                inf.notify_freed();
            }
            done
        };
        if freed && self.persistent {
            let ids = &self.vhost.session_ids;
            ids.remove(&self.client_id, IdKind::Released, pkid);
        }
        if freed {
            let shared = self.extras.iter().flat_map(|e| e.shared_subs.values());
            for q in self.queue.iter().chain(shared) {
                q.dispatch();
            }
        }
    }

    /// Unacknowledged QoS 1/2 deliveries go back to the queue each came
    /// from; what a resumed session sends again under the same ids is
    /// returned (the session keeps it in `PendingResends`): the retained
    /// ones, and the ids of the session queue's. QoS 2 ones past PUBREC
    /// are in the vhost's session ids already (persistent sessions) or go
    /// with the session.
    pub(super) fn requeue_inflight(&self) -> Resends {
        let mut back = Vec::new();
        let mut kept = Resends::default();
        let all = std::mem::take(&mut self.consumer.inflight.lock().by_id);
        for (id, sent) in all {
            match sent {
                Sent::Queued(q, d) => {
                    if q.name.starts_with(SESSION_QUEUE_PREFIX) {
                        kept.queued.push((d.seq, id));
                    }
                    back.push((q, d));
                }
                Sent::Retained(r) => kept.retained.push((id, r)),
                Sent::Released => {}
            }
        }
        for (q, d) in back {
            q.requeue([d]);
        }
        kept.retained.sort_unstable_by_key(|(id, _)| *id);
        kept
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packet_ids_skip_zero_and_ids_in_flight() {
        let mut inf = Inflight::default();
        assert_eq!(inf.next_id(), 1);
        inf.by_id.insert(2, Sent::Released);
        assert_eq!(inf.next_id(), 3);
        inf.next = u16::MAX;
        assert_eq!(inf.next_id(), 1);
    }

    #[test]
    fn ids_kept_for_requeued_deliveries_are_not_given_to_new_ones() {
        let mut inf = Inflight::default();
        inf.keep_original(vec![(10, 1), (11, 3)]);
        assert_eq!(inf.next_id(), 2);
        assert_eq!(inf.next_id(), 4);
        inf.keep_original(vec![]);
        assert_eq!(inf.original.len(), 2, "an empty list keeps what was kept");
    }
}
