//! A small blocking client for the management API.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use serde_json::Value;
use ureq::tls::{Certificate, PemItem, RootCerts, TlsConfig};

/// Why a call failed; each maps to an exit code as rabbitmqctl's do.
#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    /// Nothing answered at the URL.
    #[error("cannot reach the Warren management API at {url}: {why}\nIs the broker running, and is --url (or WARRENCTL_URL) right?")]
    Unreachable {
        /// The base URL tried.
        url: String,
        /// The transport error.
        why: String,
    },
    /// 401: wrong user or password.
    #[error("authentication failed for user '{0}' (check --user/--password or WARRENCTL_USER/WARRENCTL_PASSWORD)")]
    Auth(String),
    /// Any other refusal by the API, with its reason.
    #[error("{status}: {reason}")]
    Api {
        /// HTTP status.
        status: u16,
        /// The API's reason text.
        reason: String,
    },
    /// Bad input on our side (a file that is not JSON, say).
    #[error("{0}")]
    Usage(String),
}

impl CtlError {
    /// rabbitmqctl's exit codes: 69 unavailable, 77 no permission, 64 usage, 1 other.
    pub fn exit_code(&self) -> i32 {
        match self {
            CtlError::Unreachable { .. } => 69,
            CtlError::Auth(_) => 77,
            CtlError::Api { status: 403, .. } => 77,
            CtlError::Api { .. } => 1,
            CtlError::Usage(_) => 64,
        }
    }
}

/// Percent-encode one path segment (vhost `/` becomes `%2F`).
pub fn seg(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// TLS that trusts the CA certificates of a PEM file (and no others).
fn ca_config(path: &Path) -> Result<TlsConfig, CtlError> {
    let usage = |why: String| CtlError::Usage(format!("--cacert {}: {why}", path.display()));
    let pem = std::fs::read(path).map_err(|e| usage(e.to_string()))?;
    let certs: Vec<Certificate<'static>> = ureq::tls::parse_pem(&pem)
        .filter_map(|item| match item {
            Ok(PemItem::Certificate(c)) => Some(Ok(c)),
            Ok(_) => None,
            Err(e) => Some(Err(e)),
        })
        .collect::<Result<_, _>>()
        .map_err(|e| usage(e.to_string()))?;
    if certs.is_empty() {
        return Err(usage("no PEM certificate in the file".into()));
    }
    Ok(TlsConfig::builder()
        .root_certs(RootCerts::Specific(Arc::new(certs)))
        .build())
}

/// The management API at one URL, with one login.
pub struct Client {
    base: String,
    user: String,
    auth: String,
    agent: ureq::Agent,
}

impl Client {
    /// A client; nothing is sent until the first call. For an `https://`
    /// URL the server's certificate is verified against `cacert` (a PEM
    /// file) when given, the public web roots otherwise.
    pub fn new(
        url: &str,
        user: &str,
        password: &str,
        cacert: Option<&Path>,
    ) -> Result<Client, CtlError> {
        let mut config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(60)));
        if let Some(path) = cacert {
            config = config.tls_config(ca_config(path)?);
        }
        let agent: ureq::Agent = config.build().into();
        Ok(Client {
            base: url.trim_end_matches('/').to_string(),
            user: user.into(),
            auth: format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
            ),
            agent,
        })
    }

    /// Send one request; JSON in, JSON (or null for 204) out.
    pub fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value, CtlError> {
        let url = format!("{}{path}", self.base);
        let unreachable = |e: ureq::Error| CtlError::Unreachable {
            url: self.base.clone(),
            why: e.to_string(),
        };
        let result = match (method, body) {
            ("GET", _) => self
                .agent
                .get(&url)
                .header("Authorization", &self.auth)
                .call(),
            ("DELETE", _) => self
                .agent
                .delete(&url)
                .header("Authorization", &self.auth)
                .call(),
            (m, b) => {
                let text = b.map(Value::to_string).unwrap_or_else(|| "{}".into());
                let req = match m {
                    "PUT" => self.agent.put(&url),
                    _ => self.agent.post(&url),
                };
                req.header("Authorization", &self.auth)
                    .header("Content-Type", "application/json")
                    .send(text)
            }
        };
        let mut resp = result.map_err(unreachable)?;
        let status = resp.status().as_u16();
        let text = resp
            .body_mut()
            .with_config()
            .limit(1 << 30)
            .read_to_string()
            .unwrap_or_default();
        let json: Value = if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        match status {
            200..=299 => Ok(json),
            401 => Err(CtlError::Auth(self.user.clone())),
            _ => Err(CtlError::Api {
                status,
                reason: json
                    .get("reason")
                    .and_then(|r| r.as_str())
                    .map(String::from)
                    .unwrap_or_else(|| json.to_string()),
            }),
        }
    }

    /// GET.
    pub fn get(&self, path: &str) -> Result<Value, CtlError> {
        self.call("GET", path, None)
    }
}
