//! The CONNECT handshake: read CONNECT within 10 s, authenticate, take over
//! an older connection of the client id, admit it under the connection
//! limits, set up the session and answer CONNACK.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt};
use warren_core::auth::login::ExpiryTimer;
use warren_core::auth::{Access, Guard, Resource};
use warren_core::message::MAX_KEY;
use warren_core::{Broker, CoreError, VHost};
use warren_net::outbox::Outbox;
use warren_net::transport::{Kind, Opened, Transport};

use super::login::authenticate;
use super::setup::new_conn;
use super::{session_queue_name, Conn, Shared, SESSION_QUEUE_PREFIX};
use crate::codec::{self, CodecError, Connect, Packet, Props};
use crate::reason::{ConnackCode, ConnectReturn, ReasonCode};
use crate::topic::{valid_topic, will_refusal, Refusal};
use crate::Config;

/// What the handshake hands to the session loop.
pub(super) struct Accepted<R> {
    // Boxed: moved-from locals keep their space in the task's future.
    pub(super) conn: Box<Conn>,
    pub(super) rd: R,
    pub(super) buf: BytesMut,
    pub(super) keep_alive: u16,
}

/// Why no CONNECT could be read.
#[derive(Debug, thiserror::Error)]
enum ReadError {
    /// The bytes were not a packet; `level` is what its first bytes
    /// announced, when they did (see [`codec::connect_level`]).
    #[error("{err}")]
    Codec { err: CodecError, level: Option<u8> },
    /// The client went away first.
    #[error("closed before CONNECT")]
    Closed,
}

/// Why a CONNECT is refused.
#[derive(Debug, thiserror::Error)]
pub(super) enum Refused {
    /// Answered with CONNACK `code`.
    #[error("{why}")]
    Connack { code: ConnackCode, why: String },
    /// A connection or queue limit is reached (logged with user and vhost).
    #[error("{why}")]
    Limit {
        user: String,
        vhost: String,
        why: String,
    },
    /// 3.1.1 has no code for it: closed without CONNACK.
    #[error("{0}")]
    Close(String),
}

impl Refused {
    pub(super) fn connack(v4: ConnectReturn, v5: ReasonCode, why: impl Into<String>) -> Refused {
        Refused::Connack {
            code: ConnackCode::new(v4, v5),
            why: why.into(),
        }
    }
}

/// A reached limit: CONNACK 0x97 quota exceeded (5.0) or 3 server
/// unavailable (3.1.1, which has no quota code; RabbitMQ answers 5 "not
/// authorised", which tells a device its credentials are wrong when they
/// are not).
const LIMIT: ConnackCode =
    ConnackCode::new(ConnectReturn::ServerUnavailable, ReasonCode::QuotaExceeded);
/// Not authorized (3.1.1: 5).
pub(super) const NOT_AUTHORIZED: (ConnectReturn, ReasonCode) =
    (ConnectReturn::NotAuthorized, ReasonCode::NotAuthorized);
/// Bad user name or password (3.1.1: 4).
pub(super) const BAD_CREDENTIALS: (ConnectReturn, ReasonCode) = (
    ConnectReturn::BadUserNameOrPassword,
    ReasonCode::BadUserNameOrPassword,
);

/// What every step of the handshake needs.
pub(super) struct Ctx<'a> {
    pub(super) broker: &'a Arc<Broker>,
    pub(super) cfg: &'a Arc<Config>,
    pub(super) shared: &'a Arc<Shared>,
    pub(super) out: &'a Arc<Outbox>,
    pub(super) peer: SocketAddr,
    pub(super) local: SocketAddr,
    pub(super) kind: Kind,
    /// The verified client certificate's CN (TLS), for `ssl_cert_login`.
    pub(super) cert_name: Option<String>,
    /// Over TLS (listed as `ssl`).
    pub(super) tls: bool,
}

/// Read CONNECT (within 10 s) and accept or refuse it. It owns what it
/// is given, so the session's task need not keep them (see `handle`).
pub(super) async fn handshake<T: Transport>(
    transport: T,
    peer: SocketAddr,
    broker: Arc<Broker>,
    cfg: Arc<Config>,
    shared: Arc<Shared>,
) -> Option<Accepted<T::Reader>> {
    let (broker, cfg, shared) = (&broker, &cfg, &shared);
    let Opened {
        mut rd,
        wr,
        local,
        kind,
        cert_name,
        tls,
    } = transport.open();
    let local = local.unwrap_or(peer);
    // MQTT servers send no keep-alives: one shared "none" for every connection.
    let out = Outbox::new(wr, shared.no_heartbeat.clone(), |_| {});
    // Small to start: idle devices are the common case; it grows on demand.
    let mut buf = BytesMut::with_capacity(64);
    // The first packet must be CONNECT, within the handshake timeout.
    let first = tokio::time::timeout(
        Duration::from_secs(10),
        read_connect(&mut rd, &mut buf, cfg.max_packet_size),
    )
    .await;
    let connect = match first {
        Ok(Ok(Packet::Connect(c))) => *c,
        Ok(Ok(other)) => {
            tracing::warn!(peer = %peer, "MQTT: first packet was not CONNECT ({other:?}); closing");
            out.close();
            return None;
        }
        Ok(Err(e)) => {
            let answer = match &e {
                ReadError::Codec { err, level } => bad_connect_answer(err, *level),
                ReadError::Closed => None,
            };
            match answer {
                Some((level, code)) => {
                    let byte = code.for_level(level);
                    tracing::warn!(peer = %peer, "MQTT: bad CONNECT: {e}; CONNACK {byte:#04x}, closing");
                    out.push(|o| codec::write_connack(o, level, false, code, &Props::default()));
                }
                None => tracing::warn!(peer = %peer, "MQTT: bad CONNECT: {e}; closing"),
            }
            out.close();
            let _ = tokio::time::timeout(Duration::from_secs(5), out.flushed()).await;
            return None;
        }
        Err(_) => {
            tracing::warn!(peer = %peer, "MQTT: no CONNECT within 10 s; closing");
            out.close();
            return None;
        }
    };
    let ctx = Ctx {
        broker,
        cfg,
        shared,
        out: &out,
        peer,
        local,
        kind,
        cert_name,
        tls,
    };
    let Some(conn) = accept(&ctx, &connect).await else {
        out.close();
        let _ = tokio::time::timeout(Duration::from_secs(5), out.flushed()).await;
        return None;
    };
    let keep_alive = effective_keep_alive(cfg, &connect);
    let mut conn = Box::new(conn);
    conn.will = connect.will.map(Box::new);
    Some(Accepted {
        conn,
        rd,
        buf,
        keep_alive,
    })
}

/// Read until one packet is complete.
async fn read_connect(
    rd: &mut (impl AsyncRead + Unpin),
    buf: &mut BytesMut,
    max_packet_size: usize,
) -> Result<Packet, ReadError> {
    loop {
        // Looked at before `read`, which consumes a packet it fails on.
        let level = codec::connect_level(buf);
        match codec::read(buf, 0, max_packet_size) {
            Err(CodecError::Incomplete) => {}
            Err(err) => return Err(ReadError::Codec { err, level }),
            Ok(p) => return Ok(p),
        }
        match rd.read_buf(buf).await {
            Ok(0) | Err(_) => return Err(ReadError::Closed),
            Ok(_) => {}
        }
    }
}

/// The CONNACK (protocol level to write it in, code) for a CONNECT that
/// could not be read, or None to close without one. An unsupported
/// protocol level gets the 3.1.1 return code 0x01 (3.1.1 MQTT-3.1.2-2;
/// 5.0 MQTT-3.1.2-2 allows it, and mosquitto answers so). A v5 CONNECT
/// that is malformed or breaks a protocol rule gets 0x81 / 0x82 (0x95 when
/// too large) before the close that MQTT-3.1.4-1 requires, as 4.13.1
/// allows (mosquitto 2.0 closes without one). 3.1.1 must close without
/// CONNACK (its MQTT-3.1.4-1), and a packet that names no MQTT protocol
/// level cannot be answered in one.
fn bad_connect_answer(e: &CodecError, level: Option<u8>) -> Option<(u8, ConnackCode)> {
    let v5 = match e {
        CodecError::BadProtocol(_) => {
            let code = ConnackCode::new(
                ConnectReturn::UnacceptableProtocolVersion,
                ReasonCode::UnsupportedProtocolVersion,
            );
            return Some((4, code));
        }
        _ if level != Some(5) => return None,
        CodecError::Malformed(_) | CodecError::BadLength => ReasonCode::MalformedPacket,
        CodecError::Protocol(_) => ReasonCode::ProtocolError,
        CodecError::TooLarge(_) => ReasonCode::PacketTooLarge,
        _ => return None,
    };
    Some((5, ConnackCode::v5_only(v5)))
}

/// Admit the connection, or answer the refusal (and log it).
async fn accept(ctx: &Ctx<'_>, c: &Connect) -> Option<Conn> {
    let e = match admit(ctx, c).await {
        Ok(conn) => return Some(conn),
        Err(e) => e,
    };
    let (peer, client_id) = (ctx.peer, &c.client_id);
    let code = match &e {
        Refused::Connack { code, .. } => {
            tracing::warn!(peer = %peer, client_id = %client_id, "MQTT connection refused: {e}");
            *code
        }
        Refused::Limit { user, vhost, .. } => {
            tracing::warn!(peer = %peer, user, vhost, client_id = %client_id, "MQTT connection refused: {e}");
            LIMIT
        }
        Refused::Close(_) => {
            tracing::warn!(peer = %peer, client_id = %client_id, "MQTT connection refused, closing: {e}");
            return None;
        }
    };
    ctx.out
        .push(|o| codec::write_connack(o, c.level, false, code, &Props::default()));
    None
}

/// The session queue is named after the client id, and queue names (AMQP
/// short strings) stop at 255 bytes: a longer id is refused, not cut.
fn check_client_id(c: &Connect) -> Result<(), Refused> {
    if SESSION_QUEUE_PREFIX.len() + c.client_id.len() <= MAX_KEY {
        return Ok(());
    }
    Err(Refused::connack(
        ConnectReturn::IdentifierRejected,
        ReasonCode::ClientIdentifierNotValid,
        format!("client id of {} bytes is too long", c.client_id.len()),
    ))
}

/// The client's own id, or (for an empty one, which 3.1.1 allows only with
/// a clean session) a generated id the CONNACK assigns.
fn choose_client_id(c: &Connect, vhost: &VHost, props: &mut Props) -> Result<String, Refused> {
    if !c.client_id.is_empty() {
        return Ok(c.client_id.clone());
    }
    if !c.clean {
        // 3.1.1: MQTT-3.1.3-8. 5.0 allows either answer (3.1.3.1; mosquitto
        // 2.0 assigns an id), but a session under a name the client does
        // not know yet could never be resumed, so it is refused with 0x85.
        return Err(Refused::connack(
            ConnectReturn::IdentifierRejected,
            ReasonCode::ClientIdentifierNotValid,
            "empty client id requires clean session",
        ));
    }
    let id = vhost.generate_name("warren-");
    props.session_mut().assigned_client_id = Some(id.clone());
    Ok(id)
}

/// The steps of CONNECT in order; the first that fails refuses it.
async fn admit(ctx: &Ctx<'_>, c: &Connect) -> Result<Conn, Refused> {
    let level = c.level;
    if let Some(method) = &c.props.session().authentication_method {
        // Enhanced authentication (AUTH exchanges) is not offered.
        return Err(Refused::connack(
            ConnectReturn::NotAuthorized,
            ReasonCode::BadAuthenticationMethod,
            format!("authentication method '{method}' is not supported"),
        ));
    }
    check_will(c)?;
    let (vhost, user, token) = authenticate(ctx, c)?;
    // Authenticated: the connection this one replaces ends first (and
    // gives back its connection-limit lease).
    if !c.client_id.is_empty() {
        let key = crate::takeover::Key::new(&vhost.name, &c.client_id);
        ctx.shared.takeover.take_over(&key).await;
        if let Some(cluster) = ctx.broker.cluster() {
            cluster.broadcast(warren_core::replicate::Notice::MqttClientConnected {
                vhost: vhost.name.to_string(),
                client_id: c.client_id.clone(),
                node: String::new(),
            });
        }
    }
    let user = user.unwrap_or_else(|| ctx.cfg.anonymous_user.clone());
    let limit = |e: &dyn std::fmt::Display| Refused::Limit {
        user: user.clone(),
        vhost: vhost.name.to_string(),
        why: e.to_string(),
    };
    let broker = ctx.broker;
    let lease = broker
        .limits
        .admit((&vhost.name, &vhost.limits), &user)
        .map_err(|e| limit(&e))?;
    let guard = match &token {
        Some(grant) => broker.token_guard(grant, &vhost.name),
        None => broker.users.guard(&vhost.name, &user),
    }
    .map_err(|e| {
        let (v4, v5) = NOT_AUTHORIZED;
        Refused::connack(v4, v5, e.to_string())
    })?;
    let mut props = Props::default();
    check_client_id(c)?;
    let client_id = choose_client_id(c, &vhost, &mut props)?;
    let expiry = session_expiry(c);
    let persistent = expiry != Some(Duration::ZERO);
    let session_present =
        prepare_queue(&vhost, &guard, c, &client_id, persistent).map_err(|e| match e {
            QueueCheck::Refused(r) => r,
            QueueCheck::Limit(e) => limit(&e),
        })?;
    if level == 5 {
        capabilities(ctx.cfg, c, &mut props);
    }
    ctx.out
        .push(|o| codec::write_connack(o, level, session_present, ConnackCode::ACCEPTED, &props));
    tracing::info!(peer = %ctx.peer, client_id = %client_id, vhost = %vhost.name, level, "MQTT connection opened");
    let mut conn = new_conn(ctx, c, (vhost, client_id), guard, expiry);
    conn.lease = Some(lease);
    conn.expiry_timer = token.map(|g| ExpiryTimer::start(&conn.registration.info, g.time_left()));
    conn.resume(session_present);
    // A clean session gets its queue at its first SUBSCRIBE, so devices
    // that only publish cost no queue; a persistent one needs it now.
    if persistent {
        conn.ensure_queue().map_err(|e| {
            let v5 = match e {
                CoreError::LimitReached(_) => ReasonCode::QuotaExceeded,
                _ => ReasonCode::UnspecifiedError,
            };
            Refused::connack(
                ConnectReturn::ServerUnavailable,
                v5,
                format!("session queue: {e}"),
            )
        })?;
    }
    conn.consumer.flush_resends();
    Ok(conn)
}

/// The CONNACK properties that tell a v5 client what the server offers.
/// Maximum QoS is left out: QoS 2 is supported, and the property may only
/// say 0 or 1 (3.2.2.3.4).
fn capabilities(cfg: &Config, c: &Connect, props: &mut Props) {
    let props = props.session_mut();
    props.receive_maximum = Some(cfg.receive_maximum);
    props.retain_available = Some(1);
    props.wildcard_available = Some(1);
    props.subscription_ids_available = Some(1);
    props.shared_available = Some(1);
    props.topic_alias_maximum = Some(cfg.topic_alias_maximum);
    props.maximum_packet_size = Some(u32::try_from(cfg.max_packet_size).unwrap_or(u32::MAX));
    props.server_keep_alive = server_keep_alive(cfg.max_keep_alive, c.keep_alive);
}

/// The Server Keep Alive to answer a client asking for `asked` seconds (0:
/// none) when the server allows at most `max` (0: any): `max` when the
/// client asks for more or for none, else nothing (the client's stands).
fn server_keep_alive(max: u16, asked: u16) -> Option<u16> {
    (max > 0 && (asked == 0 || asked > max)).then_some(max)
}

/// The keep alive the server holds the client to: the Server Keep Alive
/// if the CONNACK sent one (5.0 only; 3.1.1 cannot be told), else the
/// client's own.
fn effective_keep_alive(cfg: &Config, c: &Connect) -> u16 {
    let server = server_keep_alive(cfg.max_keep_alive, c.keep_alive);
    server.filter(|_| c.level == 5).unwrap_or(c.keep_alive)
}

/// A will topic that is not a valid topic name (empty, wildcards) or
/// cannot be an AMQP routing key is refused now rather than dropped when
/// the will would be published.
fn check_will(c: &Connect) -> Result<(), Refused> {
    let Some(w) = &c.will else {
        return Ok(());
    };
    let why = || {
        if valid_topic(&w.topic) {
            format!("will topic of {} bytes is longer than 255", w.topic.len())
        } else {
            format!("invalid will topic '{}'", w.topic)
        }
    };
    match will_refusal(c.level, &w.topic) {
        None => Ok(()),
        Some(Refusal::Connack(code)) => Err(Refused::Connack {
            code: ConnackCode::v5_only(code),
            why: why(),
        }),
        Some(_) => Err(Refused::Close(why())),
    }
}

/// When the session ends after disconnect: 3.1.1 clean -> at once, not
/// clean -> never (None); 5.0 -> the session expiry interval (0 = at once,
/// 0xFFFFFFFF = never).
fn session_expiry(c: &Connect) -> Option<Duration> {
    if c.level == 5 {
        match c.props.session().session_expiry.unwrap_or(0) {
            u32::MAX => None,
            s => Some(Duration::from_secs(u64::from(s))),
        }
    } else if c.clean {
        Some(Duration::ZERO)
    } else {
        None
    }
}

/// Why the session queue may not be used.
enum QueueCheck {
    Refused(Refused),
    Limit(CoreError),
}

/// Check and tidy the session queue before CONNACK: permission for a
/// persistent session, a clean start drops the old queue, and the vhost's
/// queue limit. True when a session is present.
fn prepare_queue(
    vhost: &VHost,
    guard: &Guard,
    c: &Connect,
    client_id: &str,
    persistent: bool,
) -> Result<bool, QueueCheck> {
    let qname = session_queue_name(client_id);
    if persistent
        && guard
            .check(Access::Configure, Resource::Queue, &qname)
            .is_err()
    {
        let (v4, v5) = NOT_AUTHORIZED;
        let why = format!("no permission to configure queue '{qname}'");
        return Err(QueueCheck::Refused(Refused::connack(v4, v5, why)));
    }
    let existed = vhost.queue(&qname).is_ok();
    if c.clean && existed {
        let _ = vhost.delete_queue(&qname, false, false, 0);
    }
    if persistent {
        // Asked before CONNACK: the session queue is made after it.
        vhost.may_declare_queue(&qname).map_err(QueueCheck::Limit)?;
    }
    Ok(!c.clean && existed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_connect_is_answered_by_level() {
        let v5 = |e, l| bad_connect_answer(&e, l).map(|(lv, c)| (lv, c.for_level(lv)));
        assert_eq!(v5(CodecError::Malformed("x"), Some(5)), Some((5, 0x81)));
        assert_eq!(v5(CodecError::BadLength, Some(5)), Some((5, 0x81)));
        assert_eq!(v5(CodecError::Protocol("x"), Some(5)), Some((5, 0x82)));
        assert_eq!(v5(CodecError::TooLarge(9), Some(5)), Some((5, 0x95)));
        assert_eq!(v5(CodecError::BadProtocol(6), Some(4)), Some((4, 0x01)));
        assert_eq!(v5(CodecError::Malformed("x"), Some(4)), None);
        assert_eq!(v5(CodecError::Malformed("x"), None), None);
        assert_eq!(v5(CodecError::UnknownType(0), Some(5)), None);
    }

    fn connect(level: u8, clean: bool, expiry: Option<u32>, will_topic: Option<&str>) -> Connect {
        Connect {
            level,
            clean,
            keep_alive: 0,
            client_id: "c".into(),
            will: will_topic.map(|t| crate::codec::Will {
                topic: t.into(),
                payload: bytes::Bytes::new(),
                qos: 0,
                retain: false,
                props: Props::default(),
            }),
            username: None,
            password: None,
            props: Props {
                session: Some(Box::new(crate::codec::SessionProps {
                    session_expiry: expiry,
                    ..Default::default()
                })),
                ..Default::default()
            },
        }
    }

    #[test]
    fn session_expiry_by_level() {
        assert_eq!(
            session_expiry(&connect(4, true, None, None)),
            Some(Duration::ZERO)
        );
        assert_eq!(session_expiry(&connect(4, false, None, None)), None);
        assert_eq!(
            session_expiry(&connect(5, false, None, None)),
            Some(Duration::ZERO)
        );
        assert_eq!(
            session_expiry(&connect(5, true, Some(30), None)),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            session_expiry(&connect(5, true, Some(u32::MAX), None)),
            None
        );
    }

    #[test]
    fn server_keep_alive_only_when_the_client_asks_more_than_allowed() {
        assert_eq!(server_keep_alive(0, 0), None);
        assert_eq!(server_keep_alive(0, 900), None);
        assert_eq!(server_keep_alive(60, 30), None);
        assert_eq!(server_keep_alive(60, 60), None);
        assert_eq!(server_keep_alive(60, 61), Some(60));
        assert_eq!(server_keep_alive(60, 0), Some(60));
    }

    #[test]
    fn long_will_topic_is_refused() {
        let long = "w".repeat(256);
        assert!(check_will(&connect(5, true, None, Some("a/b"))).is_ok());
        match check_will(&connect(5, true, None, Some(&long))) {
            Err(Refused::Connack { code, .. }) => {
                assert_eq!(code.for_level(5), ReasonCode::TopicNameInvalid.code())
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            check_will(&connect(4, true, None, Some(&long))),
            Err(Refused::Close(_))
        ));
    }
}
