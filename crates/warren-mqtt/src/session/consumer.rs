//! The session queue's consumer, which writes deliveries as PUBLISH
//! packets, and the in-flight state of QoS 1/2 deliveries until the client
//! acknowledges them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::sync::Notify;
use warren_core::registry::ConnStats;
use warren_core::retained::time_left;
use warren_core::session_ids::IdKind;
use warren_core::{Consumer, Delivery, Message, Queue, Value};
use warren_net::outbox::Outbox;

use super::aliases::{Alias, OutAliases};
use super::pending::{Resend, Resends};
use super::retained::retained_props;
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

/// Retained resends due now, with their packet ids, in order.
type Due = Vec<(u16, Box<RetainedSent>)>;

/// One in-flight delivery and its place in the order of sending, which a
/// resumed session repeats (MQTT-4.6.0-1).
pub(super) struct Entry {
    order: u64,
    pub(super) sent: Sent,
}

/// QoS 1/2 deliveries the client has not finished acknowledging: one map
/// for both steps, so an idle connection carries one empty map, not two.
#[derive(Default)]
pub(super) struct Inflight {
    next: u16,
    /// PUBLISHes sent so far (the next one's `Entry::order`).
    sent: u64,
    /// By packet id: waiting for PUBACK / PUBREC, or (QoS 2) for PUBCOMP.
    by_id: HashMap<u16, Entry>,
    /// What few connections need (boxed: the consumer of every idle
    /// connection would carry it).
    rare: Option<Box<Rare>>,
}

/// The parts of [`Inflight`] most connections never use.
#[derive(Default)]
struct Rare {
    /// Told when slots may have freed up; made by the first retained
    /// stream that waits on it.
    freed: Option<Arc<Notify>>,
    /// What the last connection left unacknowledged and this one has not
    /// sent again yet, in the order first sent; their ids are kept for
    /// them (MQTT-4.4.0-1). At most Receive Maximum entries.
    resends: Resends,
}

impl Inflight {
    /// A packet id no in-flight delivery uses, nor one kept for a
    /// delivery still to be sent again (the client may still hold it for
    /// QoS 2).
    pub(super) fn next_id(&mut self) -> u16 {
        loop {
            self.next = self.next.wrapping_add(1).max(1);
            let n = self.next;
            let kept = self.resends().iter().any(|r| r.id() == n);
            if !self.by_id.contains_key(&n) && !kept {
                return n;
            }
        }
    }

    /// Deliveries in flight (each takes a Receive Maximum slot).
    pub(super) fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Put a delivery in flight under `id`, as the latest sent.
    pub(super) fn insert(&mut self, id: u16, sent: Sent) {
        let order = self.sent;
        self.sent += 1;
        self.by_id.insert(id, Entry { order, sent });
    }

    /// Take the delivery in flight under `id`.
    pub(super) fn remove(&mut self, id: u16) -> Option<Sent> {
        self.by_id.remove(&id).map(|e| e.sent)
    }

    /// Whether `id` waits for PUBCOMP.
    fn is_released(&self, id: u16) -> bool {
        matches!(
            self.by_id.get(&id),
            Some(Entry {
                sent: Sent::Released,
                ..
            })
        )
    }

    /// Everything in flight, in the order sent (the map is emptied).
    fn take_in_order(&mut self) -> Vec<(u16, Sent)> {
        let mut all: Vec<(u16, Entry)> = self.by_id.drain().collect();
        all.sort_unstable_by_key(|(_, e)| e.order);
        all.into_iter().map(|(id, e)| (id, e.sent)).collect()
    }

    /// Hold what the last connection left for this one to send again.
    pub(super) fn keep_resends(&mut self, resends: Resends) {
        if !resends.is_empty() {
            *self.resends_mut() = resends;
        }
    }

    /// The resends still to make, in order.
    fn resends(&self) -> &[Resend] {
        self.rare.as_ref().map_or(&[], |r| &r.resends)
    }

    fn resends_mut(&mut self) -> &mut Resends {
        &mut self.rare.get_or_insert_with(Box::default).resends
    }

    /// The id the session queue's requeued delivery at position `seq` had,
    /// when it is one to send again, and the retained resends first sent
    /// before it (taken out, in order: they go first).
    fn resend_of(&mut self, seq: u64) -> Option<(u16, Due)> {
        let at = |r: &Resend| matches!(r, Resend::Queued { seq: s, .. } if *s == seq);
        let k = self.resends().iter().position(at)?;
        let id = self.resends()[k].id();
        Some((id, self.retained_before(k)))
    }

    /// The retained resends among the first `k` kept (taken out, in order).
    fn retained_before(&mut self, mut k: usize) -> Due {
        let mut due = Vec::new();
        let mut i = 0;
        while i < k {
            if matches!(self.resends()[i], Resend::Retained { .. }) {
                if let Resend::Retained { id, sent } = self.resends_mut().remove(i) {
                    due.push((id, sent));
                }
                k -= 1;
            } else {
                i += 1;
            }
        }
        due
    }

    /// The retained resends first sent before any requeued delivery
    /// (taken out, in order).
    pub(super) fn leading_retained(&mut self) -> Due {
        let k = self
            .resends()
            .iter()
            .position(|r| matches!(r, Resend::Queued { .. }))
            .unwrap_or(self.resends().len());
        self.retained_before(k)
    }

    /// The resend of the session queue's delivery at `seq` (if it was one)
    /// is done.
    fn resent_if(&mut self, seq: Option<u64>) {
        let Some(seq) = seq else {
            return;
        };
        let resends = self.resends_mut();
        resends.retain(|r| !matches!(r, Resend::Queued { seq: s, .. } if *s == seq));
        if resends.is_empty() {
            // Its buffer goes too: most connections never need one.
            *resends = Vec::new();
        }
    }

    /// What a retained stream waits on for free slots.
    pub(super) fn freed(&mut self) -> Arc<Notify> {
        let rare = self.rare.get_or_insert_with(Box::default);
        rare.freed.get_or_insert_with(Arc::default).clone()
    }

    /// Wake a waiting retained stream, if there is one.
    fn notify_freed(&self) {
        if let Some(n) = self.rare.as_ref().and_then(|r| r.freed.as_ref()) {
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

impl MqttConsumer {
    /// The packet id of a delivery of `qos` (0 for QoS 0), and the queue
    /// position when it is a requeued delivery of the last connection:
    /// then it gets the id it had (MQTT-4.4.0-1), and the retained
    /// resends first sent before it are written now (MQTT-4.6.0-1).
    fn packet_id(
        &self,
        inf: &mut Inflight,
        queue: &Queue,
        d: &Delivery,
        qos: u8,
    ) -> (u16, Option<u64>) {
        let again = d.redelivered
            && !inf.resends().is_empty()
            && queue.name.starts_with(SESSION_QUEUE_PREFIX);
        let resend = again.then(|| inf.resend_of(d.seq)).flatten();
        let Some((id, due)) = resend else {
            return (if qos > 0 { inf.next_id() } else { 0 }, None);
        };
        for (id, r) in due {
            self.write_resent(inf, id, r);
        }
        let id = match qos {
            0 => 0,
            _ if inf.by_id.contains_key(&id) => inf.next_id(),
            _ => id,
        };
        (id, Some(d.seq))
    }

    /// Send again a retained delivery the last connection left
    /// unacknowledged: its packet id, DUP=1, RETAIN=1, the expiry interval
    /// left (MQTT-4.4.0-1), unless it expired meanwhile (MQTT-3.3.2-5).
    pub(super) fn write_resent(&self, inf: &mut Inflight, pkid: u16, r: Box<RetainedSent>) {
        let left = time_left(&r.message);
        if left == Some(Duration::ZERO) {
            return;
        }
        let (m, level) = (&r.message, self.level);
        let props = (level == 5).then(|| retained_props(m, left, r.sub_id));
        let mut fits = true;
        self.out.push(|o| {
            let (key, body) = (m.routing_key(), &m.body);
            let flags = (true, r.qos, true);
            fits = codec::write_delivery(
                o,
                level,
                flags,
                key,
                pkid,
                props.as_ref(),
                body,
                self.max_packet,
            );
        });
        if fits {
            inf.insert(pkid, Sent::Retained(r));
        }
    }

    /// Once the session queue has delivered what it could at resume: the
    /// retained resends not yet written (first sent after every requeued
    /// delivery, or before one the queue no longer has) go now.
    pub(super) fn flush_resends(&self) {
        let mut inf = self.inflight.lock();
        if inf.resends().is_empty() {
            return;
        }
        let n = inf.resends().len();
        for (id, r) in inf.retained_before(n) {
            self.write_resent(&mut inf, id, r);
        }
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
        if qos > 0 && inf.len() >= self.receive_max {
            return Err(d);
        }
        let (pkid, resend) = self.packet_id(&mut inf, queue, &d, qos);
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
                inf.resent_if(resend);
                queue.settle([&d]);
                return Ok(());
            }
            Ok(true) => {}
        }
        inf.resent_if(resend);
        ConnStats::add(&self.stats.delivered, 1);
        if qos > 0 {
            inf.insert(pkid, Sent::Queued(queue.clone(), d));
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
            match inf.remove(pkid) {
                // A repeated PUBREC: the flow already moved on.
                Some(Sent::Released) => {
                    inf.insert(pkid, Sent::Released);
                    return;
                }
                Some(t) => {
                    if released {
                        inf.insert(pkid, Sent::Released);
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
            ids.add(self.client_id(), IdKind::Released, pkid);
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
            let done = inf.is_released(pkid);
            if done {
                inf.remove(pkid);
                inf.notify_freed();
            }
            done
        };
        if freed && self.persistent {
            let ids = &self.vhost.session_ids;
            ids.remove(self.client_id(), IdKind::Released, pkid);
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
    /// returned in the order first sent (the session keeps it in
    /// `PendingResends`): resends this connection had not made yet, then
    /// its own retained deliveries and session queue deliveries. QoS 2
    /// ones past PUBREC are in the vhost's session ids already
    /// (persistent sessions) or go with the session.
    pub(super) fn requeue_inflight(&self) -> Resends {
        let mut back = Vec::new();
        let (mut kept, all) = {
            let mut inf = self.consumer.inflight.lock();
            let left = inf.rare.as_mut().map(|r| std::mem::take(&mut r.resends));
            (left.unwrap_or_default(), inf.take_in_order())
        };
        for (id, sent) in all {
            match sent {
                Sent::Queued(q, d) => {
                    if q.name.starts_with(SESSION_QUEUE_PREFIX) {
                        kept.push(Resend::Queued { seq: d.seq, id });
                    }
                    back.push((q, d));
                }
                Sent::Retained(sent) => kept.push(Resend::Retained { id, sent }),
                Sent::Released => {}
            }
        }
        for (q, d) in back {
            q.requeue([d]);
        }
        kept
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::pending::tests::sent;

    #[test]
    fn packet_ids_skip_zero_and_ids_in_flight() {
        let mut inf = Inflight::default();
        assert_eq!(inf.next_id(), 1);
        inf.insert(2, Sent::Released);
        assert_eq!(inf.next_id(), 3);
        inf.next = u16::MAX;
        assert_eq!(inf.next_id(), 1);
    }

    #[test]
    fn ids_kept_for_resends_are_not_given_to_new_ones() {
        let mut inf = Inflight::default();
        inf.keep_resends(vec![
            Resend::Queued { seq: 10, id: 1 },
            Resend::Retained {
                id: 3,
                sent: sent(1),
            },
        ]);
        assert_eq!(inf.next_id(), 2);
        assert_eq!(inf.next_id(), 4);
    }

    #[test]
    fn retained_resends_go_before_the_queued_ones_sent_after_them() {
        let mut inf = Inflight::default();
        inf.keep_resends(vec![
            Resend::Retained {
                id: 5,
                sent: sent(1),
            },
            Resend::Queued { seq: 10, id: 6 },
            Resend::Retained {
                id: 7,
                sent: sent(1),
            },
            Resend::Queued { seq: 11, id: 8 },
            Resend::Retained {
                id: 9,
                sent: sent(1),
            },
        ]);
        assert!(inf.resend_of(99).is_none(), "not a resend");
        let (id, due) = inf.resend_of(10).unwrap();
        let due: Vec<u16> = due.iter().map(|(id, _)| *id).collect();
        assert_eq!((id, due), (6, vec![5]));
        inf.resent_if(Some(10));
        let (id, due) = inf.resend_of(11).unwrap();
        assert_eq!((id, due.len()), (8, 1));
        inf.resent_if(Some(11));
        let rest: Vec<u16> = inf.retained_before(1).iter().map(|(id, _)| *id).collect();
        assert_eq!(rest, vec![9]);
        assert!(inf.resends().is_empty());
    }

    #[test]
    fn in_flight_deliveries_come_out_in_the_order_sent() {
        let mut inf = Inflight::default();
        for id in [40, 3, 17, 1] {
            inf.insert(id, Sent::Released);
        }
        let ids: Vec<u16> = inf.take_in_order().iter().map(|(id, _)| *id).collect();
        assert_eq!(ids, vec![40, 3, 17, 1]);
        assert_eq!(inf.len(), 0);
    }
}
