//! TLS under any listener (rustls, ring provider; TLS 1.2 and 1.3 only).
//!
//! A [`TlsAcceptor`] holds the server configuration built from the PEM
//! files of [`TlsFiles`] behind a lock taken once per handshake, so
//! [`TlsAcceptor::reload`] (SIGHUP) swaps in new certificates for new
//! connections while open ones keep the configuration they shook hands
//! with. [`TlsTransport`] is the accepted connection as a session's
//! [`Transport`]: the stream split with `tokio::io::split`, and the subject
//! CN of a client certificate the CA verified, for certificate login.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::RwLock;
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite, ReadHalf};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

use crate::transport::{Kind, Opened, Transport};

/// How long a client has to complete the TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the certificate, key and CA come from, and whether clients must
/// present a certificate (RabbitMQ's `ssl_options`).
#[derive(Clone, Debug)]
pub struct TlsFiles {
    /// The server's certificate chain (PEM), leaf first.
    pub cert_file: PathBuf,
    /// The server's private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// CA certificates client certificates are verified against (PEM).
    pub ca_file: Option<PathBuf>,
    /// Ask clients for a certificate and verify it against `ca_file`
    /// (RabbitMQ's `verify_peer`; off is `verify_none`).
    pub verify_peer: bool,
    /// With `verify_peer`: refuse a client that presents no certificate.
    pub fail_if_no_peer_cert: bool,
}

/// Why a TLS configuration cannot be built; each names the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The file cannot be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// The file is not the PEM expected.
    #[error("{}: {what}", path.display())]
    Pem {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        what: String,
    },
    /// rustls refused the certificate and key (a key that does not match
    /// the certificate, an unsupported key type).
    #[error("certificate {} with key {}: {source}", cert.display(), key.display())]
    Key {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// rustls' reason.
        source: rustls::Error,
    },
    /// The CA certificates cannot verify clients.
    #[error("{}: CA certificates unusable: {why}", path.display())]
    Ca {
        /// The CA file.
        path: PathBuf,
        /// The reason.
        why: String,
    },
    /// `verify_peer` without a CA to verify against.
    #[error("tls.verify_peer is on but tls.ca_file is not set")]
    NoCa,
}

impl TlsFiles {
    /// Build the server configuration; `client_auth` false builds one that
    /// asks for no client certificate (the management API's).
    pub fn server_config(&self, client_auth: bool) -> Result<Arc<ServerConfig>, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let certs = read_certs(&self.cert_file)?;
        let key = read_key(&self.key_file)?;
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .expect("ring supports TLS 1.2 and 1.3");
        let builder = if client_auth && self.verify_peer {
            let ca = self.ca_file.as_deref().ok_or(TlsError::NoCa)?;
            let mut roots = RootCertStore::empty();
            for c in read_certs(ca)? {
                roots.add(c).map_err(|e| TlsError::Ca {
                    path: ca.to_path_buf(),
                    why: e.to_string(),
                })?;
            }
            let mut v = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            if !self.fail_if_no_peer_cert {
                v = v.allow_unauthenticated();
            }
            let verifier = v.build().map_err(|e| TlsError::Ca {
                path: ca.to_path_buf(),
                why: e.to_string(),
            })?;
            builder.with_client_cert_verifier(verifier)
        } else {
            builder.with_no_client_auth()
        };
        let config = builder
            .with_single_cert(certs, key)
            .map_err(|source| TlsError::Key {
                cert: self.cert_file.clone(),
                key: self.key_file.clone(),
                source,
            })?;
        Ok(Arc::new(config))
    }
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn pem_error(path: &Path, e: pem::Error) -> TlsError {
    TlsError::Pem {
        path: path.to_path_buf(),
        what: format!("not valid PEM ({e})"),
    }
}

/// Every certificate in a PEM file (at least one).
fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(path, e))?;
    if certs.is_empty() {
        return Err(TlsError::Pem {
            path: path.to_path_buf(),
            what: "no certificate found (expected a PEM 'BEGIN CERTIFICATE' block)".into(),
        });
    }
    Ok(certs)
}

/// The first private key in a PEM file.
fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read(path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| match e {
        pem::Error::NoItemsFound => TlsError::Pem {
            path: path.to_path_buf(),
            what: "no private key found (expected a PEM 'BEGIN PRIVATE KEY' block)".into(),
        },
        e => pem_error(path, e),
    })
}

/// Accepts TLS on one listener; the configuration can be swapped.
pub struct TlsAcceptor {
    files: TlsFiles,
    client_auth: bool,
    current: RwLock<tokio_rustls::TlsAcceptor>,
    /// Names the listener in logs ("AMQPS").
    what: &'static str,
}

impl TlsAcceptor {
    /// Load the files (errors name the file and the problem).
    pub fn new(
        files: TlsFiles,
        client_auth: bool,
        what: &'static str,
    ) -> Result<Arc<TlsAcceptor>, TlsError> {
        let config = files.server_config(client_auth)?;
        Ok(Arc::new(TlsAcceptor {
            files,
            client_auth,
            current: RwLock::new(config.into()),
            what,
        }))
    }

    /// Read the files and build a configuration, without using it.
    pub fn check(&self) -> Result<(), TlsError> {
        self.files.server_config(self.client_auth).map(drop)
    }

    /// Read the files again; new handshakes use the new configuration,
    /// open connections keep theirs. On error the old one stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let config = self.files.server_config(self.client_auth)?;
        *self.current.write() = config.into();
        Ok(())
    }

    /// The TLS handshake (within [`HANDSHAKE_TIMEOUT`]); a failure (an
    /// unknown CA, an old protocol version) is logged and the socket closed.
    pub async fn handshake(
        &self,
        stream: TcpStream,
        peer: SocketAddr,
    ) -> Option<TlsStream<TcpStream>> {
        let _ = stream.set_nodelay(true);
        let acceptor = self.current.read().clone();
        match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
            Ok(Ok(s)) => Some(s),
            Ok(Err(e)) => {
                tracing::warn!(peer = %peer, "{}: TLS handshake failed: {e}", self.what);
                None
            }
            Err(_) => {
                tracing::warn!(peer = %peer, "{}: no TLS handshake within {} s; closing", self.what, HANDSHAKE_TIMEOUT.as_secs());
                None
            }
        }
    }

    /// Handshake and wrap as a session's transport.
    pub async fn accept(
        &self,
        stream: TcpStream,
        peer: SocketAddr,
    ) -> Option<TlsTransport<TcpStream>> {
        let local = stream.local_addr().ok();
        let stream = self.handshake(stream, peer).await?;
        Some(TlsTransport::new(stream, local))
    }
}

/// The subject CN of the client's (verified) certificate, if it sent one.
pub fn peer_cert_name<S>(stream: &TlsStream<S>) -> Option<String> {
    let leaf = stream.get_ref().1.peer_certificates()?.first()?;
    cert_common_name(leaf)
}

/// The first subject CN of a DER certificate.
pub fn cert_common_name(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let cn = cert.subject().iter_common_name().next()?;
    cn.as_str().ok().map(str::to_string)
}

/// An accepted TLS connection, before the session splits it.
pub struct TlsTransport<S> {
    stream: TlsStream<S>,
    local: Option<SocketAddr>,
    cert_name: Option<String>,
}

impl<S> TlsTransport<S> {
    /// Wrap a handshaken stream; `local` is the address connected to.
    pub fn new(stream: TlsStream<S>, local: Option<SocketAddr>) -> Self {
        let cert_name = peer_cert_name(&stream);
        TlsTransport {
            stream,
            local,
            cert_name,
        }
    }

    /// The verified client certificate's subject CN.
    pub fn cert_name(&self) -> Option<&str> {
        self.cert_name.as_deref()
    }
}

impl<S> Transport for TlsTransport<S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Reader = ReadHalf<TlsStream<S>>;

    fn open(self) -> Opened<Self::Reader> {
        let (rd, wr) = tokio::io::split(self.stream);
        Opened {
            rd,
            wr: Box::new(wr),
            local: self.local,
            kind: Kind::Tcp,
            cert_name: self.cert_name,
            tls: true,
        }
    }
}

#[cfg(test)]
mod tests;
