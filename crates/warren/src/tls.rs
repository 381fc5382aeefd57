//! The TLS listeners of the binary: the certificate files checked once at
//! start-up, one acceptor per listener (kept for SIGHUP reload), and where
//! each bound.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use warren_net::tls::TlsAcceptor;

use crate::{bind, Settings, StartError};

/// Where the TLS listeners bound.
#[derive(Clone, Copy, Debug, Default)]
pub struct TlsAddrs {
    /// AMQPS.
    pub amqp: Option<SocketAddr>,
    /// MQTT over TLS.
    pub mqtt: Option<SocketAddr>,
    /// MQTT over WebSocket over TLS.
    pub mqtt_wss: Option<SocketAddr>,
    /// HTTPS management.
    pub http: Option<SocketAddr>,
}

/// One of the TLS listeners.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TlsPort {
    Amqp,
    Mqtt,
    MqttWss,
    Http,
}

impl TlsPort {
    /// Names it in the "bound on" log line.
    fn what(self) -> &'static str {
        match self {
            TlsPort::Amqp => "AMQP TLS",
            TlsPort::Mqtt => "MQTT TLS",
            TlsPort::MqttWss => "MQTT WebSocket TLS",
            TlsPort::Http => "HTTP TLS",
        }
    }

    /// Names it in handshake logs.
    fn proto(self) -> &'static str {
        match self {
            TlsPort::Amqp => "AMQPS",
            TlsPort::Mqtt => "MQTT TLS",
            TlsPort::MqttWss => "MQTT WebSocket TLS",
            TlsPort::Http => "HTTPS",
        }
    }
}

/// The TLS listeners being bound: the certificate files (None: no TLS),
/// the acceptors made so far and where they bound.
pub(crate) struct TlsListeners {
    files: Option<warren_net::tls::TlsFiles>,
    pub(crate) acceptors: Vec<Arc<TlsAcceptor>>,
    pub(crate) addrs: TlsAddrs,
}

impl TlsListeners {
    /// Check the files once up front (both kinds of configuration).
    pub(crate) fn new(settings: &Settings) -> Result<TlsListeners, StartError> {
        let files = settings.tls.files();
        if let Some(f) = &files {
            f.server_config(true)?;
            tracing::info!("TLS certificate {}", f.cert_file.display());
        }
        Ok(TlsListeners {
            files,
            acceptors: Vec::new(),
            addrs: TlsAddrs::default(),
        })
    }

    /// Bind one TLS listener unless TLS is off or `addr` is empty.
    pub(crate) async fn bind(
        &mut self,
        port: TlsPort,
        addr: &str,
    ) -> Result<Option<(TcpListener, Arc<TlsAcceptor>)>, StartError> {
        let Some(files) = &self.files else {
            return Ok(None);
        };
        if addr.is_empty() {
            return Ok(None);
        }
        // The management API asks for no client certificate.
        let client_auth = port != TlsPort::Http;
        let acceptor = TlsAcceptor::new(files.clone(), client_auth, port.proto())?;
        let (l, local) = bind(port.what(), addr).await?;
        let a = &mut self.addrs;
        *match port {
            TlsPort::Amqp => &mut a.amqp,
            TlsPort::Mqtt => &mut a.mqtt,
            TlsPort::MqttWss => &mut a.mqtt_wss,
            TlsPort::Http => &mut a.http,
        } = Some(local);
        self.acceptors.push(acceptor.clone());
        Ok(Some((l, acceptor)))
    }

    /// The listeners under RabbitMQ's names, for /api/overview.
    pub(crate) fn named(&self) -> Vec<(&'static str, SocketAddr)> {
        let a = &self.addrs;
        [
            ("amqp/ssl", a.amqp),
            ("mqtt/ssl", a.mqtt),
            ("https/web-mqtt", a.mqtt_wss),
            ("https", a.http),
        ]
        .into_iter()
        .filter_map(|(n, a)| a.map(|a| (n, a)))
        .collect()
    }
}
