//! PUBLISH from the client: topic aliases, topic and permission checks, the
//! QoS 2 duplicate filter, routing into the core, retained messages, and
//! the QoS 1/2 acknowledgement (after the store has synced, if needed).

use std::sync::Arc;

use tokio::sync::watch;
use warren_core::auth::{Access, Resource};
use warren_core::registry::ConnStats;
use warren_core::remote::RemoteSeq;
use warren_core::session_ids::IdKind;
use warren_core::vhost::Routed;
use warren_core::{CoreError, DecodeError, Exchange, RouteScratch, SyncState};

use super::{Conn, End};
use crate::codec::{self, AckKind, Publish};
use crate::mapping;
use crate::reason::ReasonCode;
use crate::topic::{matches, publish_refusal, valid_topic, Refusal};

/// What publishing needs, made at a connection's first PUBLISH: devices
/// that sit idle or only subscribe do without (in `Conn` its 170 bytes
/// would be part of every connection).
pub(super) struct Publisher {
    /// Routing scratch space.
    scratch: RouteScratch,
    /// The MQTT exchange, looked up once.
    exchange: Option<Arc<Exchange>>,
    /// Permission generation at which publishing was last found allowed.
    publish_ok: Option<u64>,
    /// Acknowledgements (PUBACK or PUBREC, packet id, code) to send, in
    /// order, once the store has synced up to `sync_seq`: every publish
    /// already read waits for one sync, not one each.
    pub(super) pending: Vec<(AckKind, u16, ReasonCode)>,
    /// The store sequence `pending` waits for.
    pub(super) sync_seq: u64,
    /// And the confirms of the homes of queues on other cluster nodes it
    /// waits for (one per link: the highest sequence).
    pub(super) remote: Vec<RemoteSeq>,
    /// The store's sync progress (none without a store).
    pub(super) sync_rx: Option<watch::Receiver<SyncState>>,
}

/// Why a PUBLISH could not be routed.
#[derive(Debug, thiserror::Error)]
pub(super) enum PublishError {
    /// The core refused (no exchange, a queue refused it, ...).
    #[error(transparent)]
    Core(#[from] CoreError),
    /// The publish does not make a valid AMQP message.
    #[error(transparent)]
    Message(#[from] DecodeError),
}

impl Conn {
    /// Handle a client PUBLISH.
    pub(super) fn on_publish(&mut self, mut p: Publish) -> Option<End> {
        let level = self.level;
        if let Some(end) = self.check_v5_rules(&p) {
            return Some(end);
        }
        if let Err(end) = self.resolve_alias(&mut p) {
            return Some(end);
        }
        if p.topic.is_empty() {
            // Neither a topic nor an alias standing for one (3.3.2.1).
            return Some(self.disconnect(ReasonCode::ProtocolError, "PUBLISH without a topic"));
        }
        if !valid_topic(&p.topic) {
            return Some(self.disconnect(
                ReasonCode::TopicNameInvalid,
                "invalid topic name in PUBLISH",
            ));
        }
        if let Some(r) = publish_refusal(level, p.qos, &p.topic) {
            return self.refuse_topic(r, &p);
        }
        if let Err(e) = self.may_publish() {
            // 3.1.1 has no way to say "not authorized" but closing;
            // 5.0 answers QoS 1/2 with 0x87 and keeps the connection.
            if level == 5 && p.qos > 0 {
                let kind = AckKind::for_qos(p.qos);
                self.ack(kind, p.pkid, ReasonCode::NotAuthorized, None);
                return None;
            }
            return Some(self.disconnect(ReasonCode::NotAuthorized, &e.to_string()));
        }
        if let Some(end) = self.check_payload_format(&p) {
            return end;
        }
        if p.qos == 2 && !self.ext().qos2_seen.insert(p.pkid) {
            // A resent QoS 2 publish before PUBREL: route it once only.
            self.ack(AckKind::PubRec, p.pkid, ReasonCode::Success, None);
            return None;
        }
        let (mut sync, code) = match self.route(&p) {
            Ok(r) => r,
            Err(e) => return Some(self.disconnect(ReasonCode::UnspecifiedError, &e.to_string())),
        };
        if p.qos == 0 {
            return None;
        }
        if p.qos == 2 && code.is_failure() {
            // A PUBREC of 0x80 or more ends the flow: no PUBREL follows,
            // and the id is free for a new message (MQTT-4.3.3-9, 4.4.0-2).
            if let Some(e) = self.extras.as_mut() {
                e.qos2_seen.remove(&p.pkid);
            }
        } else if p.qos == 2 && self.persistent {
            // Held through the log, and PUBREC waits for it: a resend
            // after a restart is still known (routed once, PUBREL -> 0x00).
            let held = self
                .vhost
                .session_ids
                .add(self.client_id(), IdKind::Received, p.pkid);
            sync = sync.max(held);
        }
        self.ack(AckKind::for_qos(p.qos), p.pkid, code, sync);
        None
    }

    /// Acknowledge a publish: now, or (when it waits for the store sync
    /// `sync`, or an earlier one waits) after the pending ones, so that
    /// acknowledgements keep the order of the publishes.
    fn ack(&mut self, kind: AckKind, pkid: u16, code: ReasonCode, sync: Option<u64>) {
        let waiting = self
            .publisher
            .as_ref()
            .is_some_and(|p| !p.pending.is_empty() || !p.remote.is_empty());
        if sync.is_none() && !waiting {
            let level = self.level;
            self.out
                .push(|o| codec::write_ack(o, level, kind, pkid, code));
            ConnStats::add(&self.registration.info.stats.confirmed, 1);
            return;
        }
        // QoS 1/2 acknowledgement only once the message is on disk.
        let pb = self.publisher();
        pb.pending.push((kind, pkid, code));
        pb.sync_seq = pb.sync_seq.max(sync.unwrap_or(0));
    }

    /// The 5.0 rules a PUBLISH from a client breaks with a DISCONNECT:
    /// a Subscription Identifier (MQTT-3.3.4-6), a Response Topic with
    /// wildcards (MQTT-3.3.2-14), or one more QoS 2 publish in flight than
    /// the Receive Maximum the server announced (0x93, MQTT-3.3.4-8).
    fn check_v5_rules(&mut self, p: &Publish) -> Option<End> {
        if self.level != 5 {
            return None;
        }
        if !p.props.subscription_ids.is_empty() {
            return Some(self.disconnect(
                ReasonCode::ProtocolError,
                "subscription identifier in a PUBLISH from the client",
            ));
        }
        if p.props
            .response_topic
            .as_deref()
            .is_some_and(|t| !valid_topic(t))
        {
            return Some(self.disconnect(ReasonCode::ProtocolError, "invalid response topic"));
        }
        let max = usize::from(self.cfg.receive_maximum);
        let pending = self.extras.as_ref().map_or(0, |e| e.qos2_seen.len());
        let resent = self
            .extras
            .as_ref()
            .is_some_and(|e| e.qos2_seen.contains(&p.pkid));
        if p.qos == 2 && !resent && pending >= max {
            return Some(self.disconnect(
                ReasonCode::ReceiveMaximumExceeded,
                "more QoS 2 publishes in flight than the Receive Maximum",
            ));
        }
        None
    }

    /// A v5 publish whose Payload Format Indicator says UTF-8 but whose
    /// payload is not: QoS 1/2 get 0x99 with nothing routed, QoS 0 (which
    /// has no acknowledgement) a DISCONNECT.
    fn check_payload_format(&self, p: &Publish) -> Option<Option<End>> {
        if p.props.payload_format != Some(1) || std::str::from_utf8(&p.payload).is_ok() {
            return None;
        }
        let why = "payload is not UTF-8 but its format indicator says so";
        if p.qos == 0 {
            return Some(Some(self.disconnect(ReasonCode::PayloadFormatInvalid, why)));
        }
        tracing::warn!(peer = %self.peer(), client_id = %self.client_id(), "MQTT: {why}; PUBLISH refused");
        let (level, kind) = (self.level, AckKind::for_qos(p.qos));
        self.out
            .push(|o| codec::write_ack(o, level, kind, p.pkid, ReasonCode::PayloadFormatInvalid));
        Some(None)
    }

    /// A v5 topic alias: an empty topic takes the alias's, a topic sets it.
    fn resolve_alias(&mut self, p: &mut Publish) -> Result<(), End> {
        let Some(alias) = p.props.topic_alias else {
            return Ok(());
        };
        if alias == 0 || alias > self.cfg.topic_alias_maximum {
            return Err(self.disconnect(ReasonCode::TopicAliasInvalid, "topic alias out of range"));
        }
        if p.topic.is_empty() {
            match self.ext().aliases.get(&alias) {
                Some(t) => p.topic = t.clone(),
                None => {
                    return Err(self.disconnect(ReasonCode::ProtocolError, "unknown topic alias"))
                }
            }
        } else {
            let topic = p.topic.clone();
            self.ext().aliases.insert(alias, topic);
        }
        Ok(())
    }

    /// A topic too long for a routing key: nothing is routed, and the
    /// client is told as [`publish_refusal`] decided.
    fn refuse_topic(&self, r: Refusal, p: &Publish) -> Option<End> {
        let why = format!("topic of {} bytes is longer than 255", p.topic.len());
        match r {
            Refusal::Ack(kind, code) => {
                tracing::warn!(peer = %self.peer(), client_id = %self.client_id(), "MQTT: {why}; PUBLISH refused");
                let level = self.level;
                self.out
                    .push(|o| codec::write_ack(o, level, kind, p.pkid, code));
                None
            }
            Refusal::Disconnect(code) => Some(self.disconnect(code, &why)),
            Refusal::Connack(_) | Refusal::Close => {
                Some(self.disconnect(ReasonCode::TopicNameInvalid, &why))
            }
        }
    }

    /// The publishing state, made at the first PUBLISH.
    fn publisher(&mut self) -> &mut Publisher {
        let sync = &self.shared.sync;
        self.publisher.get_or_insert_with(|| {
            Box::new(Publisher {
                scratch: RouteScratch::default(),
                exchange: None,
                publish_ok: None,
                pending: Vec::new(),
                sync_seq: 0,
                remote: Vec::new(),
                sync_rx: sync.clone(),
            })
        })
    }

    /// Write permission on the MQTT exchange, re-checked when permissions change.
    fn may_publish(&mut self) -> warren_core::Result<()> {
        let generation = self.guard.generation();
        if self.publisher().publish_ok == Some(generation) {
            return Ok(());
        }
        self.guard
            .check(Access::Write, Resource::Exchange, &self.cfg.exchange)?;
        self.publisher().publish_ok = Some(generation);
        Ok(())
    }

    /// This connection's id when one of its no-local subscriptions matches
    /// `p` (the message then carries it in the no-local header).
    fn no_local_owner(&self, p: &Publish) -> Option<u64> {
        self.extras
            .iter()
            .flat_map(|e| e.no_local.iter())
            .any(|f| matches(f, &p.topic))
            .then_some(self.conn_id())
    }

    /// Route a PUBLISH (and keep it if retained); returns the store
    /// sequence to wait for, if any, and the acknowledgement's code.
    fn route(&mut self, p: &Publish) -> Result<(Option<u64>, ReasonCode), PublishError> {
        let own = self.no_local_owner(p);
        self.publisher();
        let pb = self.publisher.as_deref_mut().expect("made above");
        // The MQTT exchange is looked up once, not per message (the lookup
        // takes the vhost's topology lock).
        if pb.exchange.as_ref().is_none_or(|x| x.is_deleted()) {
            pb.exchange = Some(self.vhost.exchange(&self.cfg.exchange)?);
        }
        let x = pb.exchange.as_ref().expect("looked up above");
        let msg = mapping::message(x.name.clone(), p, own)?;
        ConnStats::add(&self.registration.info.stats.published, 1);
        // A clone is two reference counts; taken only for RETAIN=1.
        let retained = p.retain.then(|| msg.clone());
        let routed = self.vhost.publish(x, msg, &mut pb.scratch)?;
        self.backlogged |= routed.backlogged;
        if p.qos > 0 {
            for r in &routed.remote {
                match pb.remote.iter_mut().find(|w| w.link == r.link) {
                    Some(w) => w.seq = w.seq.max(r.seq),
                    None => pb.remote.push(*r),
                }
            }
        }
        // The retained copy is stored too (every QoS, as mosquitto and
        // RabbitMQ do); the acknowledgement waits for the later record.
        let kept = retained.and_then(|m| self.vhost.retained.put(m));
        Ok((routed.sync_seq.max(kept), ack_code(&routed, p.retain)))
    }
}

/// The v5 acknowledgement of a routed publish, as RabbitMQ answers: 0x97
/// when a queue refused it (`x-overflow: reject-publish`), 0x10 when no
/// subscription took it (a retained one is still kept, so that is success).
fn ack_code(routed: &Routed, retained: bool) -> ReasonCode {
    if routed.unreachable {
        // A queue's home node is down: not a quota, an error.
        ReasonCode::UnspecifiedError
    } else if routed.rejected {
        ReasonCode::QuotaExceeded
    } else if routed.queues == 0 && !retained {
        ReasonCode::NoMatchingSubscribers
    } else {
        ReasonCode::Success
    }
}
