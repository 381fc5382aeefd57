//! The AMQP 0-9-1 adapter of Warren: listener, connection and channel state
//! machines and the codec. It turns methods into calls on the routing core
//! and core deliveries into frames; see docs/architecture.md for the path of
//! one message.

#![deny(missing_docs)]

pub mod channel;
pub mod channels;
pub mod codec;
pub mod connection;
pub mod deliveries;
pub mod error;
pub mod tables;

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use warren_core::Broker;
use warren_net::tls::TlsAcceptor;

/// Listener settings negotiated with or enforced on clients.
#[derive(Clone, Debug)]
pub struct Config {
    /// Largest frame we accept and propose (connection.tune).
    pub frame_max: u32,
    /// Most channels open at once per connection, proposed in
    /// connection.tune (RabbitMQ's channel_max: it limits how many, not
    /// which numbers; 0 means no limit).
    pub channel_max: u16,
    /// Proposed heartbeat in seconds; 0 disables.
    pub heartbeat: u16,
    /// Largest message body accepted.
    pub max_message_size: usize,
    /// Users that may only connect from loopback (RabbitMQ's loopback_users).
    pub loopback_users: Vec<String>,
    /// Time allowed from accept to connection.open.
    pub handshake_timeout: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            frame_max: 131_072,
            channel_max: 2047,
            heartbeat: 60,
            max_message_size: 128 << 20,
            loopback_users: vec!["guest".into()],
            handshake_timeout: Duration::from_secs(10),
        }
    }
}

/// Accept connections until `shutdown` turns true, then ask every open
/// connection to close (320 CONNECTION_FORCED) and wait for them briefly.
pub async fn serve(
    listener: TcpListener,
    broker: Arc<Broker>,
    cfg: Config,
    shutdown: watch::Receiver<bool>,
) {
    let cfg = Arc::new(cfg);
    warren_net::listener::accept_loop(listener, "AMQP", shutdown, |stream, peer, shutdown| {
        connection::handle(stream, peer, broker.clone(), cfg.clone(), shutdown)
    })
    .await;
}

/// Accept AMQPS connections (the TLS handshake, then the same connection as
/// over TCP) until `shutdown` turns true.
pub async fn serve_tls(
    listener: TcpListener,
    acceptor: Arc<TlsAcceptor>,
    broker: Arc<Broker>,
    cfg: Config,
    shutdown: watch::Receiver<bool>,
) {
    let cfg = Arc::new(cfg);
    warren_net::listener::accept_loop(listener, "AMQPS", shutdown, |stream, peer, shutdown| {
        let (broker, cfg, acceptor) = (broker.clone(), cfg.clone(), acceptor.clone());
        async move {
            let Some(t) = acceptor.accept(stream, peer).await else {
                return;
            };
            drop(acceptor);
            connection::handle(t, peer, broker, cfg, shutdown).await;
        }
    })
    .await;
}
