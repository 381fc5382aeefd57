//! What a protocol session reads from and writes to, whatever carries the
//! bytes: a plain TCP socket, a WebSocket ([`crate::websocket`]), TLS
//! ([`crate::tls`]) or a WebSocket over TLS. A session is generic over [`Transport`], so the plain TCP path keeps
//! its concrete read half (no box, no extra task state); only the write side
//! is boxed, as the [`Outbox`](crate::Outbox) always was.

use std::net::SocketAddr;

use tokio::io::AsyncRead;
use tokio::net::tcp::OwnedReadHalf;
use tokio::net::TcpStream;

use crate::outbox::Sink;

/// What carries a connection's bytes; listings and logs name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A plain TCP socket.
    Tcp,
    /// Binary WebSocket messages over TCP.
    WebSocket,
}

/// A connection split for a session: the read half it polls, the write
/// half its outbox owns, and its local address.
pub struct Opened<R> {
    /// The read side, polled by the session loop only.
    pub rd: R,
    /// The write side, owned by the outbox.
    pub wr: Sink,
    /// The address the client connected to (`None` if the OS cannot say).
    pub local: Option<SocketAddr>,
    /// What carries the bytes.
    pub kind: Kind,
    /// Over TLS with a client certificate the CA verified: its subject CN
    /// (certificate login: AMQP EXTERNAL, MQTT `ssl_cert_login`).
    pub cert_name: Option<String>,
    /// The bytes come over TLS (listings show it as RabbitMQ's `ssl`).
    pub tls: bool,
}

/// An accepted connection a session can serve.
pub trait Transport: Send + 'static {
    /// The read half.
    type Reader: AsyncRead + Unpin + Send + 'static;
    /// Split into read and write halves (done inside the session's
    /// handshake, so that an idle connection holds only the halves).
    fn open(self) -> Opened<Self::Reader>;
}

impl Transport for TcpStream {
    type Reader = OwnedReadHalf;

    fn open(self) -> Opened<OwnedReadHalf> {
        let _ = self.set_nodelay(true);
        let local = self.local_addr().ok();
        let (rd, wr) = self.into_split();
        Opened {
            rd,
            wr: Box::new(wr),
            local,
            kind: Kind::Tcp,
            cert_name: None,
            tls: false,
        }
    }
}
