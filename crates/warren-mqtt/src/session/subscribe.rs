//! SUBSCRIBE and UNSUBSCRIBE: bindings of the session queue (the granted
//! QoS rides on the binding), `$share/group/filter` shared queues,
//! no-local and retain-as-published state; the retained messages for new
//! subscriptions are sent by `retained.rs`.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use warren_core::auth::{Access, Resource};
use warren_core::queue::ConsumerSpec;
use warren_core::vhost::QueueDeclare;
use warren_core::{CoreError, Queue, Table};

use super::subscriptions::Sub;
use super::{session_queue_name, Conn, End};
use crate::codec::{self, Filter, Subscribe};
use crate::reason::ReasonCode;
use crate::topic::{filter_to_key, shared_rest, valid_filter};

impl Conn {
    /// SUBSCRIBE: subscribe each filter, answer SUBACK, then send the
    /// retained messages its retain handling asks for.
    pub(super) fn on_subscribe(&mut self, s: &Subscribe) -> Option<End> {
        if s.filters
            .iter()
            .any(|f| f.no_local && shared_rest(&f.filter).is_some())
        {
            // MQTT-3.8.3-4: No Local on a shared subscription.
            return Some(self.disconnect(
                ReasonCode::ProtocolError,
                "no-local on a shared subscription",
            ));
        }
        let mut codes = Vec::with_capacity(s.filters.len());
        let mut existed = Vec::with_capacity(s.filters.len());
        for f in &s.filters {
            existed.push(self.consumer.subs.lock().contains(&f.filter));
            let code = self.subscribe(f, s.id);
            if !code.is_failure() {
                self.remember_no_local(f);
            }
            codes.push(code);
        }
        let (level, pkid) = (self.level, s.pkid);
        self.out
            .push(|o| codec::write_suback(o, level, pkid, &codes));
        for ((f, existed), code) in s.filters.iter().zip(existed).zip(&codes) {
            // Retain handling: 0 always, 1 only for a new
            // subscription, 2 never; never for shared subscriptions
            // nor refused ones.
            let send = match f.retain_handling {
                0 => true,
                1 => !existed,
                _ => false,
            };
            if send && !code.is_failure() && shared_rest(&f.filter).is_none() {
                self.send_retained(&f.filter, f.qos.min(2), s.id);
            }
        }
        if let Some(q) = &self.queue {
            q.dispatch();
        }
        None
    }

    /// The no-local option of a granted subscription (a resubscription
    /// replaces it); the other options live in the consumer's [`Sub`]s.
    fn remember_no_local(&mut self, f: &Filter) {
        let ordinary = shared_rest(&f.filter).is_none();
        let ext = self.ext();
        ext.no_local.retain(|x| x != &f.filter);
        if f.no_local && ordinary {
            ext.no_local.push(f.filter.clone());
            self.consumer.no_local.store(true, Ordering::Relaxed);
        }
    }

    /// UNSUBSCRIBE: forget the filters' options, leave shared groups,
    /// remove the bindings, answer UNSUBACK (5.0: 0x11 for a filter that
    /// had no subscription).
    pub(super) fn on_unsubscribe(&mut self, pkid: u16, filters: &[String]) {
        let mut codes = Vec::with_capacity(filters.len());
        for f in filters {
            let existed = self.consumer.subs.lock().remove(f);
            codes.push(if existed {
                ReasonCode::Success
            } else {
                ReasonCode::NoSubscriptionExisted
            });
            if let Some(e) = self.extras.as_mut() {
                e.no_local.retain(|x| x != f);
            }
        }
        for f in filters {
            if let Some(q) = self.ext().shared_subs.remove(f) {
                self.leave_shared(&q, f);
            }
        }
        if let (Some(q), Ok(x)) = (&self.queue, self.vhost.exchange(&self.cfg.exchange)) {
            for f in filters.iter().filter(|f| shared_rest(f).is_none()) {
                let _ = self
                    .vhost
                    .unbind_queue_except(&q.name, &x.name, &filter_to_key(f), None);
            }
        }
        let level = self.level;
        self.out
            .push(|o| codec::write_unsuback(o, level, pkid, &codes));
    }

    /// Subscribe one filter; the granted QoS or a failure code.
    fn subscribe(&mut self, f: &Filter, id: Option<u32>) -> ReasonCode {
        if let Some(rest) = shared_rest(&f.filter) {
            return self.subscribe_shared(f, rest, id);
        }
        if !valid_filter(&f.filter) {
            tracing::warn!(client_id = %self.client_id(), filter = %f.filter, "MQTT: invalid topic filter");
            return self.filter_invalid();
        }
        let qname = session_queue_name(self.client_id());
        if !self.may_subscribe(&qname) {
            return self.not_authorized();
        }
        let q = match self.ensure_queue() {
            Ok(q) => q,
            Err(e) => return self.queue_refused(&e),
        };
        let Ok(x) = self.vhost.exchange(&self.cfg.exchange) else {
            return ReasonCode::UnspecifiedError;
        };
        // The options ride on the binding, so they are stored with the
        // session and come back after a reconnect or a restart.
        let sub = Sub::granted(f, f.qos.min(2), id);
        let args = sub.binding_args();
        let key = filter_to_key(&f.filter);
        if let Err(e) = self.vhost.bind_queue(&q.name, &x.name, &key, &args, 0) {
            tracing::warn!(client_id = %self.client_id(), "MQTT subscribe failed: {e}");
            return ReasonCode::UnspecifiedError;
        }
        // A resubscription replaces the old one: new binding first, then
        // the old one goes, so the flow of messages is not interrupted.
        let _ = self
            .vhost
            .unbind_queue_except(&q.name, &x.name, &key, Some(&args));
        let granted = sub.qos;
        self.consumer.subs.lock().set(sub);
        ReasonCode::granted(granted)
    }

    /// `$share/group/filter`: members of a group consume one shared queue,
    /// so each message goes to one of them (round-robin, within credit).
    fn subscribe_shared(&mut self, f: &Filter, rest: &str, id: Option<u32>) -> ReasonCode {
        let Some((group, filter)) = rest.split_once('/') else {
            return self.filter_invalid();
        };
        if group.is_empty() || group.contains(['+', '#']) || !valid_filter(filter) {
            return self.filter_invalid();
        }
        if self.ext().shared_subs.contains_key(&f.filter) {
            // Already a member: the new options replace the old.
            let mut subs = self.consumer.subs.lock();
            let queue = subs.get(&f.filter).and_then(|s| s.shared_queue.clone());
            let mut sub = Sub::granted(f, f.qos.min(2), id);
            sub.shared_queue = queue;
            subs.set(sub);
            return ReasonCode::granted(f.qos.min(2));
        }
        let Ok(x) = self.vhost.exchange(&self.cfg.exchange) else {
            return ReasonCode::UnspecifiedError;
        };
        let name = format!("mqtt-shared-{group}-{filter}");
        if !self.may_subscribe(&name) {
            return self.not_authorized();
        }
        let decl = QueueDeclare {
            name: name.clone(),
            auto_delete: true,
            ..Default::default()
        };
        let q = match self.vhost.declare_queue(&decl, 0) {
            Ok((q, _, _)) => q,
            Err(e) => return self.queue_refused(&e),
        };
        if self
            .vhost
            .bind_queue(&name, &x.name, &filter_to_key(filter), &Table::default(), 0)
            .is_err()
        {
            return ReasonCode::UnspecifiedError;
        }
        let spec = ConsumerSpec {
            tag: Arc::from(f.filter.as_str()),
            channel_id: self.conn_id(),
            no_ack: false,
            exclusive: false,
            priority: 0,
            consumer: self.consumer.clone(),
        };
        if q.add_consumer(spec).is_err() {
            return ReasonCode::UnspecifiedError;
        }
        self.ext().shared_subs.insert(f.filter.clone(), q);
        let mut sub = Sub::granted(f, f.qos.min(2), id);
        sub.shared_queue = Some(name.into());
        let granted = sub.qos;
        self.consumer.subs.lock().set(sub);
        ReasonCode::granted(granted)
    }

    /// SUBACK code for a subscription whose queue could not be made: 0x97
    /// quota exceeded (5.0) when the vhost's `max-queues` refused it.
    fn queue_refused(&self, e: &CoreError) -> ReasonCode {
        tracing::warn!(peer = %self.peer(), user = %self.guard.user, vhost = %self.vhost.name, client_id = %self.client_id(), "MQTT subscribe failed: {e}");
        match e {
            CoreError::LimitReached(_) if self.level == 5 => ReasonCode::QuotaExceeded,
            _ => ReasonCode::V4_SUBACK_FAILURE,
        }
    }

    /// RabbitMQ's rule for a subscription: configure and write on the
    /// queue, read on the exchange.
    fn may_subscribe(&self, queue: &str) -> bool {
        let g = &self.guard;
        g.check(Access::Configure, Resource::Queue, queue).is_ok()
            && g.check(Access::Write, Resource::Queue, queue).is_ok()
            && g.check(Access::Read, Resource::Exchange, &self.cfg.exchange)
                .is_ok()
    }

    /// SUBACK code for a subscription refused by permissions.
    fn not_authorized(&self) -> ReasonCode {
        self.failure(ReasonCode::NotAuthorized)
    }

    /// SUBACK code for an invalid filter.
    fn filter_invalid(&self) -> ReasonCode {
        self.failure(ReasonCode::TopicFilterInvalid)
    }

    /// `code` for 5.0; 3.1.1 has only the one failure code.
    fn failure(&self, code: ReasonCode) -> ReasonCode {
        if self.level == 5 {
            code
        } else {
            ReasonCode::V4_SUBACK_FAILURE
        }
    }

    /// Stop consuming a shared group's queue; the last member removes it.
    pub(super) fn leave_shared(&self, q: &Arc<Queue>, filter: &str) {
        if q.remove_consumer(self.conn_id(), filter) {
            self.vhost.remove_queue(q);
        }
    }
}
