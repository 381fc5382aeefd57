//! The MQTT 3.1.1 / 5.0 adapter of Warren, over the same routing core as
//! AMQP: MQTT publishes reach AMQP queues bound to `amq.topic` and AMQP
//! publishes to `amq.topic` reach MQTT subscribers (see `mapping.rs` for
//! the mapping).
//!
//! `codec` reads and writes packets with the codes of `reason`; `session`
//! serves one connection over the routing core, using the topic rules of
//! `topic`, the property `mapping`, the listener-wide `takeover` registry,
//! and `will` for wills. Retained messages live in the vhost's retained
//! store (`warren_core::retained`), durable and indexed by topic.
//! `websocket` is the Web MQTT listener: the same sessions over WebSocket
//! (path `/ws`, subprotocol `mqtt`). Over TLS (8883, and WebSocket over
//! TLS) the sessions are the same, over `warren_net::tls`.

#![deny(missing_docs)]

pub mod codec;
pub mod keepalive;
pub mod mapping;
pub mod reason;
pub mod session;
pub mod takeover;
pub mod topic;
pub mod websocket;
pub mod will;

use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;
use warren_core::Broker;
use warren_net::tls::TlsAcceptor;

/// Listener settings.
#[derive(Clone, Debug)]
pub struct Config {
    /// Exchange MQTT publishes go to and subscriptions bind to.
    pub exchange: String,
    /// Largest packet accepted.
    pub max_packet_size: usize,
    /// Users allowed only from loopback.
    pub loopback_users: Vec<String>,
    /// Clients without credentials are accepted from loopback.
    pub allow_anonymous_loopback: bool,
    /// The user whose permissions anonymous clients get (RabbitMQ's
    /// `mqtt.default_user`).
    pub anonymous_user: String,
    /// Unacknowledged QoS 1 deliveries per session.
    pub receive_maximum: u16,
    /// Topic aliases a client may use (v5), and at most how many the
    /// server uses towards a client.
    pub topic_alias_maximum: u16,
    /// Longest keep alive (seconds) a v5 client may ask for; a longer one,
    /// or none, is answered with this as Server Keep Alive. 0: no limit.
    pub max_keep_alive: u16,
    /// A client that sends no user name and password over TLS logs in as
    /// its certificate's CN (RabbitMQ's `mqtt.ssl_cert_login`).
    pub ssl_cert_login: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            exchange: "amq.topic".into(),
            max_packet_size: 16 << 20,
            loopback_users: vec!["guest".into()],
            allow_anonymous_loopback: true,
            anonymous_user: "guest".into(),
            receive_maximum: 100,
            topic_alias_maximum: 64,
            max_keep_alive: 0,
            ssl_cert_login: false,
        }
    }
}

/// The sockets MQTT is served on; all share one session state (takeover,
/// retained messages), so a client id is one session whichever it uses.
pub struct Listeners {
    /// Plain MQTT over TCP.
    pub tcp: TcpListener,
    /// MQTT over WebSocket (RabbitMQ's Web MQTT), when enabled.
    pub ws: Option<TcpListener>,
    /// MQTT over TLS (8883), when a certificate is configured.
    pub tls: Option<(TcpListener, Arc<TlsAcceptor>)>,
    /// MQTT over WebSocket over TLS (15676), likewise.
    pub wss: Option<(TcpListener, Arc<TlsAcceptor>)>,
}

/// Accept MQTT connections until `shutdown` turns true.
pub async fn serve(
    listeners: Listeners,
    broker: Arc<Broker>,
    cfg: Config,
    shutdown: watch::Receiver<bool>,
) {
    let cfg = Arc::new(cfg);
    let shared = Arc::new(session::Shared::new(
        broker.alarms.clone(),
        broker.sync_watch(),
    ));
    let mut others = Vec::new();
    if let Some(ws) = listeners.ws {
        let (broker, cfg, shared) = (broker.clone(), cfg.clone(), shared.clone());
        let web = websocket::serve(ws, None, broker, cfg, shared, shutdown.clone());
        others.push(tokio::spawn(web));
    }
    if let Some((wss, acceptor)) = listeners.wss {
        let (broker, cfg, shared) = (broker.clone(), cfg.clone(), shared.clone());
        let web = websocket::serve(wss, Some(acceptor), broker, cfg, shared, shutdown.clone());
        others.push(tokio::spawn(web));
    }
    if let Some((tls, acceptor)) = listeners.tls {
        let (broker, cfg, shared) = (broker.clone(), cfg.clone(), shared.clone());
        others.push(tokio::spawn(serve_tls(
            tls,
            acceptor,
            broker,
            cfg,
            shared,
            shutdown.clone(),
        )));
    }
    let sweeper = {
        let (shared, shutdown) = (shared.clone(), shutdown.clone());
        tokio::spawn(async move { shared.keepalive.run(shutdown).await })
    };
    // At shutdown every session is asked to close (v5: DISCONNECT 0x8B);
    // the accept loops then wait for them to finish.
    let closer = {
        let (shared, mut shutdown) = (shared.clone(), shutdown.clone());
        tokio::spawn(async move {
            let _ = shutdown.wait_for(|s| *s).await;
            shared.takeover.close_all(takeover::SHUTTING_DOWN);
        })
    };
    let remote = tokio::spawn(takeovers_from_other_nodes(broker.clone(), shared.clone()));
    let tcp = listeners.tcp;
    warren_net::listener::accept_loop(tcp, "MQTT", shutdown, |stream, peer, shutdown| {
        session::handle(
            stream,
            peer,
            broker.clone(),
            cfg.clone(),
            shared.clone(),
            shutdown,
        )
    })
    .await;
    for t in others {
        let _ = t.await;
    }
    let _ = closer.await;
    let _ = sweeper.await;
    remote.abort();
}

/// In a cluster: a client id that connects on another node ends its
/// session here, as a second connection on this node would.
async fn takeovers_from_other_nodes(broker: Arc<Broker>, shared: Arc<session::Shared>) {
    use tokio::sync::broadcast::error::RecvError;
    use warren_core::replicate::Notice;
    let mut notices = broker.notices();
    loop {
        match notices.recv().await {
            Ok(Notice::MqttClientConnected {
                vhost,
                client_id,
                node,
            }) => {
                shared
                    .takeover
                    .taken_elsewhere(&takeover::Key::new(&vhost, &client_id), &node);
            }
            Ok(_) => {}
            Err(RecvError::Lagged(n)) => tracing::warn!("{n} cluster notices missed"),
            Err(RecvError::Closed) => return,
        }
    }
}

/// MQTT over TLS: the handshake, then the same session as over TCP.
async fn serve_tls(
    listener: TcpListener,
    acceptor: Arc<TlsAcceptor>,
    broker: Arc<Broker>,
    cfg: Arc<Config>,
    shared: Arc<session::Shared>,
    shutdown: watch::Receiver<bool>,
) {
    warren_net::listener::accept_loop(listener, "MQTT TLS", shutdown, |stream, peer, shutdown| {
        let (broker, cfg, shared, acceptor) = (
            broker.clone(),
            cfg.clone(),
            shared.clone(),
            acceptor.clone(),
        );
        async move {
            let Some(t) = acceptor.accept(stream, peer).await else {
                return;
            };
            drop(acceptor);
            session::handle(t, peer, broker, cfg, shared, shutdown).await;
        }
    })
    .await;
}
