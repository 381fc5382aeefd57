//! The accept loop every protocol listener shares: spawn one task per
//! connection, stop accepting on shutdown, then give open connections a few
//! seconds to close (they watch the same shutdown signal).

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// Accept until `shutdown` turns true; `handle` serves one connection.
pub async fn accept_loop<F, Fut>(
    listener: TcpListener,
    protocol: &'static str,
    mut shutdown: watch::Receiver<bool>,
    mut handle: F,
) where
    F: FnMut(TcpStream, SocketAddr, watch::Receiver<bool>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            r = listener.accept() => match r {
                Ok((stream, peer)) => {
                    tasks.spawn(handle(stream, peer, shutdown.clone()));
                }
                Err(e) => {
                    // Out of file descriptors and the like: back off briefly.
                    tracing::warn!(error = %e, "{protocol} accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            _ = shutdown.changed() => break,
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
        }
    }
    drop(listener);
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
}
