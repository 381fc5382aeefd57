//! The HTTP management API (default port 15672): RabbitMQ-shaped JSON so
//! that scripts written for RabbitMQ's management plugin keep working, a
//! Prometheus endpoint and a small web page. Authentication is HTTP basic
//! auth against the broker's users and their tags, as in RabbitMQ:
//! `monitoring` and `management` read, `management` changes queues and
//! exchanges within the user's vhost permissions, `administrator` does
//! everything, including users, vhosts, permissions and definitions.

#![deny(missing_docs)]

mod admin;
mod auth;
mod cluster;
mod definitions;
mod error;
mod https;
mod json;
mod limits;
mod listing;
mod metrics;
mod process;
mod rates;
mod retained;
mod routes;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::watch;
use warren_core::Broker;
use warren_net::tls::TlsAcceptor;

pub(crate) use error::ApiError;
pub use json::{json_to_table, table_json, value_json};
pub use rates::Rates;
pub use routes::router;

/// A loaded exchange-type plugin, as listed by `/api/plugins`.
#[derive(Clone, Debug, Serialize)]
pub struct PluginInfo {
    /// Plugin name.
    pub name: String,
    /// Plugin version.
    pub version: String,
    /// Library file.
    pub file: String,
    /// Exchange types it registered.
    pub exchange_types: Vec<String>,
}

/// What the handlers read.
#[derive(Clone)]
pub struct MgmtState {
    /// The broker.
    pub broker: Arc<Broker>,
    /// Loaded plugins.
    pub plugins: Arc<Vec<PluginInfo>>,
    /// Message rates, sampled in the background.
    pub rates: Arc<Rates>,
    /// Listener addresses, for /api/overview.
    pub listeners: Arc<Vec<(&'static str, SocketAddr)>>,
    /// When the broker started, for uptime.
    pub started: Instant,
}

impl MgmtState {
    /// State for a broker with its plugins and listener addresses.
    pub fn new(
        broker: Arc<Broker>,
        plugins: Vec<PluginInfo>,
        listeners: Vec<(&'static str, SocketAddr)>,
    ) -> MgmtState {
        MgmtState {
            broker,
            plugins: Arc::new(plugins),
            rates: Arc::default(),
            listeners: Arc::new(listeners),
            started: Instant::now(),
        }
    }
}

/// Serve on `listener` (and over TLS on `tls`, when configured) until
/// `shutdown` turns true; message rates are sampled meanwhile.
pub async fn serve(
    listener: TcpListener,
    tls: Option<(TcpListener, Arc<TlsAcceptor>)>,
    state: MgmtState,
    shutdown: watch::Receiver<bool>,
) {
    let sampler = tokio::spawn(rates::run(state.clone(), shutdown.clone()));
    let app = router(state);
    let https = tls.map(|(l, acceptor)| {
        let (app, shutdown) = (app.clone(), shutdown.clone());
        tokio::spawn(async move {
            let (incoming, accept) = match https::incoming(l, acceptor, shutdown.clone()) {
                Ok(x) => x,
                Err(e) => return tracing::error!("HTTPS listener failed: {e}"),
            };
            let r = axum::serve(incoming, app)
                .with_graceful_shutdown(stopped(shutdown))
                .await;
            if let Err(e) = r {
                tracing::error!("HTTPS management listener failed: {e}");
            }
            let _ = accept.await;
        })
    });
    let r = axum::serve(listener, app)
        .with_graceful_shutdown(stopped(shutdown))
        .await;
    if let Err(e) = r {
        tracing::error!("management listener failed: {e}");
    }
    if let Some(https) = https {
        let _ = https.await;
    }
    sampler.abort();
}

/// Resolves once `shutdown` changes (turns true).
async fn stopped(mut shutdown: watch::Receiver<bool>) {
    let _ = shutdown.changed().await;
}

/// The listener's local address, for the start-up log.
pub fn local_addr(l: &TcpListener) -> std::io::Result<SocketAddr> {
    l.local_addr()
}
