//! One AMQP connection. The reader task owns all channel state; a separate
//! writer task drains the [`Outbox`].
//!
//! - `handshake`: protocol header, connection.start to open, login, limits
//! - `secret`: connection.update-secret (credential rotation)
//! - `read`: the read loop, frames in slices, dispatch by frame type
//! - `heartbeat`: heartbeat negotiation and the read timeouts it implies
//! - `flow`: alarm blocking, publisher pacing, confirms flushed per slice
//! - `lifecycle`: channel.open, close, flow
//! - `close`: exceptions, connection.close, cleanup

mod close;
mod flow;
mod handshake;
mod heartbeat;
mod lifecycle;
mod read;
mod secret;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use amq_protocol::protocol::AMQPClass;
use parking_lot::Mutex;
use tokio::sync::watch;
use warren_core::alarm::Alarms;
use warren_core::auth::login::ExpiryTimer;
use warren_core::auth::oauth2::TokenGrant;
use warren_core::auth::Guard;
use warren_core::limits::ConnectionLease;
use warren_core::registry::Registration;
use warren_core::{Broker, VHost};

use crate::channel::{Channel, Ctx};
use crate::channels::Channels;
use crate::codec::{self, FrameError};
use crate::Config;
use warren_net::outbox::Outbox;
use warren_net::transport::{Opened, Transport};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    StartOk,
    TuneOk,
    Open,
    Running,
    /// connection.close sent; waiting for close-ok.
    Closing,
    Done,
}

/// What connection.open establishes and every channel needs.
struct Session {
    vhost: Arc<VHost>,
    guard: Guard,
    conn_id: u64,
    cfg: Arc<Config>,
}

impl Session {
    /// The channel context: the one place a [`Ctx`] is built.
    fn ctx(&self) -> Ctx<'_> {
        Ctx {
            vhost: &self.vhost,
            conn_id: self.conn_id,
            cfg: &self.cfg,
            guard: &self.guard,
        }
    }
}

struct Conn {
    broker: Arc<Broker>,
    cfg: Arc<Config>,
    id: u64,
    peer: SocketAddr,
    out: Arc<Outbox>,
    phase: Phase,
    local: SocketAddr,
    user: String,
    /// connection_name or product from the client's properties.
    client: String,
    /// Set by connection.open.
    session: Option<Session>,
    registration: Option<Registration>,
    frame_max: usize,
    channel_max: u16,
    heartbeat: Arc<Mutex<Option<Duration>>>,
    read_timeout: Option<Duration>,
    channels: Channels<Channel>,
    /// The connection's place in the node, vhost and user connection
    /// counts, from connection.open until cleanup.
    lease: Option<ConnectionLease>,
    cancel_notify: bool,
    /// Memory and disk alarms: a publishing connection is not read while one is on.
    alarms: Arc<Alarms>,
    /// Set by the first basic.publish: only publishers are blocked by alarms.
    published: bool,
    /// The client understands connection.blocked (its capabilities say so).
    blocked_notify: bool,
    /// connection.blocked was sent and unblocked not yet.
    blocked_sent: bool,
    /// Over TLS with a verified client certificate: its subject CN, the
    /// user of the EXTERNAL mechanism (offered only then).
    cert_name: Option<String>,
    /// The token of an OAuth 2 login (its scopes are the guard's rights),
    /// replaced by update-secret.
    token: Option<TokenGrant>,
    /// Closes the connection when the token expires (from connection.open).
    expiry: Option<ExpiryTimer>,
    /// Over TLS (listed as `ssl`).
    tls: bool,
}

/// Serve one accepted connection (TCP, or TLS) until it closes.
pub async fn handle<T: Transport>(
    transport: T,
    peer: SocketAddr,
    broker: Arc<Broker>,
    cfg: Arc<Config>,
    shutdown: watch::Receiver<bool>,
) {
    let Opened {
        mut rd,
        wr,
        local,
        cert_name,
        tls,
        ..
    } = transport.open();
    let local = local.unwrap_or(peer);
    let heartbeat = Arc::new(Mutex::new(None));
    let out = Outbox::new(wr, heartbeat.clone(), codec::write_heartbeat);
    let mut conn = Conn {
        id: broker.next_id(),
        alarms: broker.alarms.clone(),
        published: false,
        blocked_notify: false,
        blocked_sent: false,
        broker,
        frame_max: cfg.frame_max as usize,
        channel_max: cfg.channel_max,
        cfg,
        peer,
        local,
        out: out.clone(),
        phase: Phase::StartOk,
        user: String::new(),
        client: String::new(),
        session: None,
        registration: None,
        heartbeat,
        read_timeout: None,
        channels: Channels::default(),
        lease: None,
        cancel_notify: false,
        cert_name,
        token: None,
        expiry: None,
        tls,
    };
    tracing::debug!(peer = %peer, "accepting AMQP connection");
    if let Err(e) = conn.run(&mut rd, shutdown).await {
        tracing::info!(peer = %peer, user = %conn.user, "AMQP connection closed: {e}");
    } else if !conn.user.is_empty() {
        tracing::info!(peer = %peer, user = %conn.user, "AMQP connection closed");
    }
    conn.cleanup();
    conn.registration = None;
    out.close();
    let _ = tokio::time::timeout(Duration::from_secs(5), out.flushed()).await;
}

/// Why the read loop ended early.
#[derive(Debug, thiserror::Error)]
enum End {
    #[error("socket error: {0}")]
    Io(#[from] std::io::Error),
    #[error("client closed the socket")]
    Eof,
    #[error("missed heartbeats from client")]
    Timeout,
    #[error("bad protocol header")]
    BadHeader,
    /// A frame that cannot be read; the stream cannot be re-synchronised.
    #[error("{0}")]
    Frame(#[from] FrameError),
}

impl Conn {
    fn send0(&self, m: AMQPClass) {
        self.send(0, m);
    }

    fn send(&self, channel: u16, m: AMQPClass) {
        self.out.push(|o| codec::write_method(o, channel, m));
    }
}

/// A reply text or client name cut to a short string's 255 bytes, on a
/// character boundary.
fn truncate(s: &str) -> &str {
    if s.len() <= 255 {
        return s;
    }
    let mut end = 255;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncate_keeps_whole_characters() {
        assert_eq!(truncate("short"), "short");
        let long = "é".repeat(200); // 400 bytes
        let cut = truncate(&long);
        assert_eq!(cut.len(), 254);
        assert!(cut.chars().all(|c| c == 'é'));
    }
}
