//! TLS for the generator (`--tls-ca FILE`): every AMQP connection and every
//! MQTT TCP connection is made over TLS (rustls, ring, server name
//! `localhost`) to the same address flags, so a TLS run and a plain run
//! differ only in the transport. Also the handshake-rate scenario.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use crate::mqtt_transport::{Reader, Writer};

/// The connector, when `--tls-ca` was given.
static CONNECTOR: OnceLock<TlsConnector> = OnceLock::new();

/// Trust the CA certificates of `ca_file` for every connection from now on.
pub fn enable(ca_file: &str) -> Result<()> {
    let pem = std::fs::read(ca_file).with_context(|| format!("reading {ca_file}"))?;
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(&pem) {
        roots.add(c.with_context(|| format!("{ca_file}: bad PEM"))?)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let _ = CONNECTOR.set(TlsConnector::from(Arc::new(config)));
    Ok(())
}

/// Whether connections go over TLS.
pub fn on() -> bool {
    CONNECTOR.get().is_some()
}

/// The handshake over a connected socket.
async fn handshake(s: TcpStream) -> Result<TlsStream<TcpStream>> {
    let c = CONNECTOR.get().expect("TLS enabled");
    let name = ServerName::try_from("localhost")?;
    c.connect(name, s).await.context("TLS handshake")
}

/// Split a socket, over TLS when enabled.
pub async fn split(s: TcpStream) -> Result<(Reader, Writer)> {
    if !on() {
        let (rd, wr) = s.into_split();
        return Ok((Box::new(rd), Box::new(wr)));
    }
    let (rd, wr): (ReadHalf<_>, WriteHalf<_>) = tokio::io::split(handshake(s).await?);
    Ok((Box::new(rd), Box::new(wr)))
}

/// New TLS connections per second over `seconds`, from `parallel` loops
/// (connect, full handshake, close; no session resumption).
pub async fn handshake_rate(addr: &str, seconds: u64, parallel: usize) -> Result<f64> {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let start = Instant::now();
    let mut loops = tokio::task::JoinSet::new();
    for _ in 0..parallel {
        let addr = addr.to_string();
        loops.spawn(async move {
            let mut n = 0u64;
            while Instant::now() < deadline {
                let s = TcpStream::connect(&addr).await?;
                s.set_nodelay(true)?;
                let mut t = handshake(s).await?;
                let _ = t.shutdown().await;
                n += 1;
            }
            anyhow::Ok(n)
        });
    }
    let mut total = 0;
    while let Some(r) = loops.join_next().await {
        total += r??;
    }
    Ok(total as f64 / start.elapsed().as_secs_f64())
}
