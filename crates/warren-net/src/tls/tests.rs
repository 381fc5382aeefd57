//! Certificates made with rcgen at test time; real handshakes over
//! loopback with a tokio-rustls client.

use std::path::Path;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use rustls::pki_types::ServerName;
use rustls::ClientConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::*;

/// A CA, and leaf certificates it signs.
struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().unwrap();
        let cert = p.self_signed(&key).unwrap();
        Ca { cert, key }
    }

    /// (certificate PEM, key PEM) of a leaf with this CN and SAN localhost.
    fn leaf(&self, cn: &str) -> (String, String) {
        let mut p = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        p.distinguished_name.push(DnType::CommonName, cn);
        let key = KeyPair::generate().unwrap();
        let cert = p.signed_by(&key, &self.cert, &self.key).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("warren-tls-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Server files under `d`, signed by `ca`, with `ca` as the client CA.
fn files(d: &Path, ca: &Ca, cn: &str, verify_peer: bool) -> TlsFiles {
    let (cert, key) = ca.leaf(cn);
    std::fs::write(d.join("server.pem"), cert).unwrap();
    std::fs::write(d.join("server.key"), key).unwrap();
    std::fs::write(d.join("ca.pem"), ca.cert.pem()).unwrap();
    TlsFiles {
        cert_file: d.join("server.pem"),
        key_file: d.join("server.key"),
        ca_file: Some(d.join("ca.pem")),
        verify_peer,
        fail_if_no_peer_cert: verify_peer,
    }
}

fn client(ca: &Ca, identity: Option<(String, String)>) -> tokio_rustls::TlsConnector {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    roots.add(ca.cert.der().clone()).unwrap();
    let b = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let config = match identity {
        Some((cert, key)) => {
            let certs = vec![CertificateDer::from_pem_slice(cert.as_bytes()).unwrap()];
            let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
            b.with_client_auth_cert(certs, key).unwrap()
        }
        None => b.with_no_client_auth(),
    };
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

/// Serve one connection: report the client's CN and echo one byte.
async fn serve_once(
    acceptor: Arc<TlsAcceptor>,
) -> (SocketAddr, tokio::task::JoinHandle<Option<Option<String>>>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let (s, peer) = l.accept().await.unwrap();
        let t = acceptor.accept(s, peer).await?;
        let name = t.cert_name().map(str::to_string);
        let mut o = t.open();
        let mut b = [0u8; 1];
        o.rd.read_exact(&mut b).await.ok()?;
        o.wr.write_all(&b).await.ok()?;
        o.wr.flush().await.ok()?;
        Some(name)
    });
    (addr, task)
}

/// Connect, send a byte, read it back; the server's leaf CN.
async fn round_trip(addr: SocketAddr, c: &tokio_rustls::TlsConnector) -> io::Result<String> {
    let tcp = TcpStream::connect(addr).await?;
    let mut s = c
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await?;
    s.write_all(b"x").await?;
    let mut b = [0u8; 1];
    s.read_exact(&mut b).await?;
    let leaf = s.get_ref().1.peer_certificates().unwrap()[0].clone();
    Ok(cert_common_name(&leaf).unwrap())
}

#[test]
fn bad_files_name_the_file_and_the_problem() {
    let d = dir("bad");
    let ca = Ca::new("test ca");
    let good = files(&d, &ca, "server", false);
    let missing = TlsFiles {
        cert_file: d.join("nope.pem"),
        ..good.clone()
    };
    let e = missing.server_config(true).unwrap_err().to_string();
    assert!(
        e.contains("nope.pem") && e.starts_with("cannot read"),
        "{e}"
    );
    std::fs::write(d.join("garbage.pem"), "hello").unwrap();
    let garbage = TlsFiles {
        cert_file: d.join("garbage.pem"),
        ..good.clone()
    };
    let e = garbage.server_config(true).unwrap_err().to_string();
    assert!(
        e.contains("garbage.pem") && e.contains("no certificate"),
        "{e}"
    );
    let nokey = TlsFiles {
        key_file: d.join("server.pem"),
        ..good.clone()
    };
    let e = nokey.server_config(true).unwrap_err().to_string();
    assert!(
        e.contains("server.pem") && e.contains("no private key"),
        "{e}"
    );
    // A key that is not the certificate's.
    let (_, other_key) = ca.leaf("other");
    std::fs::write(d.join("other.key"), other_key).unwrap();
    let mismatch = TlsFiles {
        key_file: d.join("other.key"),
        ..good.clone()
    };
    let e = mismatch.server_config(true).unwrap_err().to_string();
    assert!(e.contains("other.key"), "{e}");
    let no_ca = TlsFiles {
        ca_file: None,
        verify_peer: true,
        ..good.clone()
    };
    assert!(matches!(no_ca.server_config(true), Err(TlsError::NoCa)));
    assert!(good.server_config(true).is_ok());
    let _ = std::fs::remove_dir_all(&d);
}

#[tokio::test]
async fn verified_client_cert_gives_its_cn_and_unsigned_is_refused() {
    let d = dir("mtls");
    let ca = Ca::new("test ca");
    let acceptor = TlsAcceptor::new(files(&d, &ca, "server", true), true, "test").unwrap();
    let (addr, task) = serve_once(acceptor.clone()).await;
    let c = client(&ca, Some(ca.leaf("alice")));
    assert_eq!(round_trip(addr, &c).await.unwrap(), "server");
    assert_eq!(task.await.unwrap(), Some(Some("alice".to_string())));
    // A certificate from another CA: refused in the handshake.
    let rogue = Ca::new("rogue ca");
    let (addr, task) = serve_once(acceptor.clone()).await;
    let c = client(&ca, Some(rogue.leaf("mallory")));
    assert!(round_trip(addr, &c).await.is_err());
    assert_eq!(
        task.await.unwrap(),
        None,
        "the server refused the handshake"
    );
    // No certificate at all, with fail_if_no_peer_cert: refused too.
    let (addr, task) = serve_once(acceptor).await;
    assert!(round_trip(addr, &client(&ca, None)).await.is_err());
    assert_eq!(task.await.unwrap(), None);
    let _ = std::fs::remove_dir_all(&d);
}

#[tokio::test]
async fn reload_serves_the_new_certificate_to_new_connections() {
    let d = dir("reload");
    let ca = Ca::new("test ca");
    let acceptor = TlsAcceptor::new(files(&d, &ca, "first", false), true, "test").unwrap();
    let c = client(&ca, None);
    let (addr, task) = serve_once(acceptor.clone()).await;
    assert_eq!(round_trip(addr, &c).await.unwrap(), "first");
    assert_eq!(
        task.await.unwrap(),
        Some(None),
        "no client certificate asked"
    );
    files(&d, &ca, "second", false);
    acceptor.reload().unwrap();
    let (addr, task) = serve_once(acceptor.clone()).await;
    assert_eq!(round_trip(addr, &c).await.unwrap(), "second");
    task.await.unwrap();
    // A broken file on reload keeps the old configuration.
    std::fs::write(d.join("server.pem"), "broken").unwrap();
    assert!(acceptor.reload().is_err());
    let (addr, task) = serve_once(acceptor).await;
    assert_eq!(round_trip(addr, &c).await.unwrap(), "second");
    task.await.unwrap();
    let _ = std::fs::remove_dir_all(&d);
}
