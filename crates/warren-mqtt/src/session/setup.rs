//! The session state a CONNACK starts: the `Conn` and its consumer, sized
//! by what the client announced (Receive Maximum, Maximum Packet Size,
//! Topic Alias Maximum), and what a resumed session gets back (its
//! subscriptions' options, the PUBRELs left unanswered, the QoS 2 ids it
//! received, the PUBLISHes left unacknowledged).

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use warren_core::auth::Guard;
use warren_core::registry::ConnectionInfo;
use warren_core::session_ids::IdKind;
use warren_core::VHost;
use warren_net::transport::Kind;

use super::aliases::OutAliases;
use super::connect::Ctx;
use super::consumer::{Inflight, MqttConsumer, Sent};
use super::subscriptions::{Sub, Subs};
use super::{session_queue_name, Conn};
use crate::codec::{self, AckKind, Connect};
use crate::reason::ReasonCode;

/// The protocol as listings show it (RabbitMQ's names: "Web MQTT 3.1.1").
fn protocol_label(kind: Kind, level: u8) -> &'static str {
    match (kind, level == 5) {
        (Kind::WebSocket, true) => "Web MQTT 5.0",
        (Kind::WebSocket, false) => "Web MQTT 3.1.1",
        (_, true) => "MQTT 5.0",
        (_, false) => "MQTT 3.1.1",
    }
}

/// The connection's state once CONNACK is sent.
pub(super) fn new_conn(
    ctx: &Ctx<'_>,
    c: &Connect,
    (vhost, client_id): (Arc<VHost>, String),
    guard: Guard,
    expiry: Option<Duration>,
) -> Conn {
    let (broker, cfg, level) = (ctx.broker, ctx.cfg, c.level);
    // The client's Receive Maximum bounds our QoS 1/2 deliveries in flight
    // (MQTT-3.3.4-9); the configured one caps it, to bound memory.
    let receive_max = c
        .props
        .session()
        .receive_maximum
        .map_or(cfg.receive_maximum, |r| r.min(cfg.receive_maximum)) as usize;
    let max_packet = c
        .props
        .session()
        .maximum_packet_size
        .map_or(usize::MAX, |m| m as usize);
    let aliases = c
        .props
        .session()
        .topic_alias_maximum
        .map(|m| m.min(cfg.topic_alias_maximum))
        .filter(|&m| m > 0)
        .map(|m| Box::new(Mutex::new(OutAliases::new(m))));
    let conn_id = broker.next_id();
    let registration = broker.registry.register(
        ConnectionInfo::new(
            conn_id,
            protocol_label(ctx.kind, level),
            (ctx.peer, ctx.local),
            guard.user.clone(),
            guard.vhost.clone(),
            client_id,
        )
        .over_tls(ctx.tls),
    );
    let consumer = Arc::new(MqttConsumer {
        stats: registration.info.stats.clone(),
        out: ctx.out.clone(),
        level,
        subs: Mutex::new(Subs::default()),
        inflight: Mutex::new(Inflight::default()),
        receive_max: receive_max.max(1),
        active: AtomicBool::new(true),
        conn_id,
        no_local: AtomicBool::new(false),
        max_packet,
        aliases,
    });
    Conn {
        cfg: cfg.clone(),
        shared: ctx.shared.clone(),
        out: ctx.out.clone(),
        level,
        vhost,
        queue: None,
        persistent: expiry != Some(Duration::ZERO),
        extras: None,
        expiry,
        consumer,
        publisher: None,
        backlogged: false,
        published: false,
        guard,
        registration,
        lease: None,
        expiry_timer: None,
        keepalive: None,
        will: None,
        epoch: 0,
    }
}

impl Conn {
    /// What a session gets back when it resumes (`present`): its
    /// subscriptions' options, the QoS 2 ids it holds (in the vhost's
    /// session ids, through restarts) and the PUBLISHes left
    /// unacknowledged. A session not present starts with none of them.
    pub(super) fn resume(&mut self, present: bool) {
        let key = crate::takeover::Key::new(&self.vhost.name, self.client_id());
        let resends = self.shared.pending.take(&key);
        let vhost = self.vhost.clone();
        let ids = &vhost.session_ids;
        if !present {
            ids.clear(self.client_id());
            return;
        }
        self.restore_subscriptions();
        self.resend_pubrels(ids.ids(self.client_id(), IdKind::Released));
        let received = ids.ids(self.client_id(), IdKind::Received);
        if !received.is_empty() {
            self.ext().qos2_seen.extend(received);
        }
        // MQTT-4.4.0-1 with MQTT-4.6.0-1: the PUBLISHes left unacknowledged
        // go again in the order first sent. The retained ones sent before
        // the first requeued delivery go now; the queue's redeliveries
        // bring the rest (`MqttConsumer::packet_id`), and `flush_resends`
        // what is left after the queue's first dispatch.
        let mut inf = self.consumer.inflight.lock();
        inf.keep_resends(resends);
        for (id, r) in inf.leading_retained() {
            self.consumer.write_resent(&mut inf, id, r);
        }
    }

    /// MQTT-4.4.0-1: a resumed session sends again the PUBRELs its last
    /// connection had not seen completed, with their packet ids.
    fn resend_pubrels(&self, ids: Vec<u16>) {
        let level = self.level;
        let mut inf = self.consumer.inflight.lock();
        for id in ids {
            inf.insert(id, Sent::Released);
            self.out
                .push(|o| codec::write_ack(o, level, AckKind::PubRel, id, ReasonCode::Success));
        }
    }

    /// A persistent session delivers with the options its subscriptions
    /// were granted, kept on their bindings.
    pub(super) fn restore_subscriptions(&self) {
        let qname = session_queue_name(self.client_id());
        let (Ok(q), Ok(x)) = (
            self.vhost.queue(&qname),
            self.vhost.exchange(&self.cfg.exchange),
        ) else {
            return;
        };
        let mut subs = self.consumer.subs.lock();
        for (key, args) in x.bindings_to_queue(&q) {
            subs.set(Sub::from_binding(&key, &args));
        }
    }
}
