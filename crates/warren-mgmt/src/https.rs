//! HTTPS for the management API: axum's own server over a [`Listener`]
//! whose connections come out of warren-net's TLS acceptor, so HTTPS uses
//! the same certificate files, protocol versions and SIGHUP reload as the
//! AMQP and MQTT listeners, and no second TLS stack (axum-server) is
//! needed. Handshakes run in their own tasks (warren-net's accept loop),
//! so a slow client never holds up the next accept.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::serve::Listener;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_rustls::server::TlsStream;
use warren_net::tls::TlsAcceptor;

/// Handshaken connections waiting for axum's accept.
const BACKLOG: usize = 64;

/// TLS connections, handshake done.
pub(crate) struct TlsIncoming {
    rx: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

impl Listener for TlsIncoming {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.rx.recv().await {
            Some(c) => c,
            // The accept loop stopped (shutdown): axum's graceful shutdown ends us.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local)
    }
}

/// Accept TCP on `listener` and hand TLS connections to axum through the
/// returned listener; the task ends on shutdown.
pub(crate) fn incoming(
    listener: TcpListener,
    acceptor: Arc<TlsAcceptor>,
    shutdown: watch::Receiver<bool>,
) -> io::Result<(TlsIncoming, JoinHandle<()>)> {
    let local = listener.local_addr()?;
    let (tx, rx) = mpsc::channel(BACKLOG);
    let task = tokio::spawn(warren_net::listener::accept_loop(
        listener,
        "HTTPS",
        shutdown,
        move |stream, peer, _| {
            let (tx, acceptor) = (tx.clone(), acceptor.clone());
            async move {
                if let Some(s) = acceptor.handshake(stream, peer).await {
                    let _ = tx.send((s, peer)).await;
                }
            }
        },
    ));
    Ok((TlsIncoming { rx, local }, task))
}
