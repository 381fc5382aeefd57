//! Configuration: embedded defaults, then config/warren.toml (or --config),
//! then WARREN_<SECTION>__<KEY> environment variables, then command-line
//! flags. The key names are a contract that tools and tests rely on.

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Errors while loading configuration.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// The file named with --config does not exist.
    #[error("configuration file {0} not found")]
    Missing(PathBuf),
    /// Parsing or type errors, with the key named by the config crate.
    #[error("invalid configuration: {0}")]
    Invalid(#[from] config::ConfigError),
}

/// The whole configuration.
#[derive(Clone, Debug, Deserialize)]
pub struct Settings {
    /// AMQP listener.
    pub amqp: Amqp,
    /// MQTT listeners (TCP and WebSocket).
    pub mqtt: Mqtt,
    /// Management HTTP listener.
    pub http: Http,
    /// Certificates for the TLS listeners.
    pub tls: Tls,
    /// Storage.
    pub store: Store,
    /// The memory alarm.
    pub memory: Memory,
    /// The disk alarm.
    pub disk: Disk,
    /// Exchange-type plugins.
    pub plugins: Plugins,
    /// Node-wide limits.
    pub limits: Limits,
    /// The user created on first start.
    pub default_user: DefaultUser,
    /// Token login (RabbitMQ's `auth_oauth2.*`).
    pub auth_oauth2: AuthOAuth2,
    /// Clustering (off unless `cluster.bind` is set).
    pub cluster: Cluster,
}

/// The `[cluster]` section.
#[derive(Clone, Debug, Deserialize)]
pub struct Cluster {
    /// The cluster's name.
    pub name: String,
    /// This node's name; empty: `warren@<bind>`.
    pub node_name: String,
    /// The cluster listener; empty: clustering off.
    pub bind: String,
    /// The address peers use; empty: `bind`.
    pub advertise: String,
    /// Founding members' cluster addresses.
    pub seeds: Vec<String>,
    /// The shared secret's file.
    pub secret_file: String,
    /// Raft heartbeat period.
    pub heartbeat_ms: u64,
    /// Raft election timeout (lower bound).
    pub election_timeout_ms: u64,
    /// How long a change waits for its commit.
    pub commit_timeout_ms: u64,
    /// Raft entries between snapshots.
    pub snapshot_logs: u64,
}

/// OAuth 2 token login; on when a signing key or a JWKS file is given.
#[derive(Clone, Debug, Deserialize)]
pub struct AuthOAuth2 {
    /// The audience tokens must carry and the prefix of their scopes.
    pub resource_server_id: String,
    /// Key id -> PEM file.
    #[serde(default)]
    pub signing_keys: std::collections::BTreeMap<String, PathBuf>,
    /// A JWKS file; empty: none.
    pub jwks_file: String,
    /// The key of tokens without a kid; empty: none.
    pub default_key: String,
    /// Claims tried for the user name.
    pub preferred_username_claims: Vec<String>,
    /// More scope claims (space-separated paths); empty: none.
    pub additional_scopes_key: String,
    /// Check `aud`.
    pub verify_aud: bool,
    /// Try internal users before tokens.
    pub internal_users: bool,
}

impl AuthOAuth2 {
    /// The core's settings, when token login is configured.
    pub fn settings(&self) -> Option<warren_core::auth::oauth2::OAuth2Settings> {
        if self.signing_keys.is_empty() && self.jwks_file.is_empty() {
            return None;
        }
        let some = |s: &str| (!s.is_empty()).then(|| s.to_string());
        Some(warren_core::auth::oauth2::OAuth2Settings {
            resource_server_id: self.resource_server_id.clone(),
            signing_keys: self.signing_keys.clone().into_iter().collect(),
            jwks_file: some(&self.jwks_file).map(PathBuf::from),
            default_key: some(&self.default_key),
            preferred_username_claims: self.preferred_username_claims.clone(),
            additional_scopes_key: some(&self.additional_scopes_key),
            verify_aud: self.verify_aud,
        })
    }
}

/// AMQP listener settings.
#[derive(Clone, Debug, Deserialize)]
pub struct Amqp {
    /// address:port; port 0 picks a free port.
    pub bind: String,
    /// Largest frame (bytes).
    pub frame_max: u32,
    /// Proposed heartbeat (seconds, 0 = off).
    pub heartbeat: u16,
    /// Most channels open at once per connection (RabbitMQ's channel_max).
    pub channel_max: u16,
    /// Largest message body (bytes).
    pub max_message_size: usize,
    /// address:port of AMQPS; served only when `tls.cert_file` is set.
    pub tls_bind: String,
}

/// MQTT listener settings.
#[derive(Clone, Debug, Deserialize)]
pub struct Mqtt {
    /// address:port of MQTT over TCP.
    pub bind: String,
    /// address:port of MQTT over WebSocket (path `/ws`, RabbitMQ's Web
    /// MQTT); empty: no WebSocket listener.
    pub ws_bind: String,
    /// Longest keep alive (seconds) an MQTT 5 client may use; longer or
    /// none is answered with this as Server Keep Alive. 0: no limit.
    pub max_keep_alive: u16,
    /// address:port of MQTT over TLS; served only when `tls.cert_file` is set.
    pub tls_bind: String,
    /// address:port of MQTT over WebSocket over TLS (wss); likewise.
    pub wss_bind: String,
    /// A TLS client sending no user name and password logs in as its
    /// verified certificate's CN (RabbitMQ's `mqtt.ssl_cert_login`).
    pub ssl_cert_login: bool,
}

/// The management listener.
#[derive(Clone, Debug, Deserialize)]
pub struct Http {
    /// address:port.
    pub bind: String,
    /// address:port of HTTPS; served only when `tls.cert_file` is set.
    pub tls_bind: String,
}

/// TLS certificates (RabbitMQ's `ssl_options`); reloaded on SIGHUP.
#[derive(Clone, Debug, Deserialize)]
pub struct Tls {
    /// Server certificate chain (PEM); empty: no TLS listener starts.
    pub cert_file: String,
    /// Server private key (PEM).
    pub key_file: String,
    /// CA certificates (PEM) client certificates are verified against.
    pub ca_file: String,
    /// Ask clients for a certificate and verify it (RabbitMQ's verify_peer).
    pub verify_peer: bool,
    /// With verify_peer: refuse clients that present no certificate.
    pub fail_if_no_peer_cert: bool,
}

impl Tls {
    /// The files, when a certificate is configured.
    pub fn files(&self) -> Option<warren_net::tls::TlsFiles> {
        if self.cert_file.is_empty() {
            return None;
        }
        let path = |s: &str| (!s.is_empty()).then(|| PathBuf::from(s));
        Some(warren_net::tls::TlsFiles {
            cert_file: PathBuf::from(&self.cert_file),
            // An empty key file is reported by name when it is read.
            key_file: PathBuf::from(&self.key_file),
            ca_file: path(&self.ca_file),
            verify_peer: self.verify_peer,
            fail_if_no_peer_cert: self.fail_if_no_peer_cert,
        })
    }
}

/// Storage settings.
#[derive(Clone, Debug, Deserialize)]
pub struct Store {
    /// Data directory.
    pub dir: PathBuf,
    /// Ready messages a queue keeps in memory; the rest are paged to disk.
    pub page_window_messages: usize,
    /// Ready body bytes a queue keeps in memory; the rest are paged to disk.
    pub page_window_bytes: usize,
}

impl Store {
    /// The queues' paging window.
    pub fn paging(&self) -> warren_store::PageOptions {
        warren_store::PageOptions {
            window_messages: self.page_window_messages.max(1),
            window_bytes: self.page_window_bytes.max(1),
            ..warren_store::PageOptions::default()
        }
    }
}

/// Memory alarm settings (RabbitMQ's vm_memory_high_watermark).
#[derive(Clone, Debug, Deserialize)]
pub struct Memory {
    /// Fraction of RAM (or of the cgroup limit, when lower).
    pub high_watermark: f64,
    /// Absolute limit in bytes; wins over the fraction when set.
    #[serde(default)]
    pub high_watermark_bytes: Option<u64>,
}

/// Disk alarm settings (RabbitMQ's disk_free_limit).
#[derive(Clone, Debug, Deserialize)]
pub struct Disk {
    /// Free bytes below which publishers are blocked.
    pub free_limit_bytes: u64,
}

/// Node-wide limits (per-vhost and per-user ones are set at run time
/// through the management API, as in RabbitMQ).
#[derive(Clone, Debug, Deserialize)]
pub struct Limits {
    /// Most client connections, AMQP and MQTT together, open at once;
    /// None for RabbitMQ's `connection_max = infinity`.
    #[serde(deserialize_with = "count_or_infinity")]
    pub connection_max: Option<u64>,
}

/// A count, or "infinity" for none (RabbitMQ's spelling).
fn count_or_infinity<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Count(u64),
        Word(String),
    }
    match Raw::deserialize(d)? {
        Raw::Count(n) => Ok(Some(n)),
        Raw::Word(w) if w == "infinity" => Ok(None),
        Raw::Word(w) => w.parse().map(Some).map_err(|_| {
            serde::de::Error::custom(format!("expected a count or \"infinity\", got '{w}'"))
        }),
    }
}

/// Plugin settings.
#[derive(Clone, Debug, Deserialize)]
pub struct Plugins {
    /// Directory scanned for exchange-type libraries.
    pub dir: PathBuf,
    /// When non-empty, only these plugin names are loaded.
    #[serde(default)]
    pub enabled: Vec<String>,
}

/// Default user.
#[derive(Clone, Debug, Deserialize)]
pub struct DefaultUser {
    /// Login.
    pub name: String,
    /// Password (hashed in memory at start-up).
    pub password: String,
    /// Allowed from loopback addresses only, as RabbitMQ's guest.
    pub loopback_only: bool,
}

/// The defaults compiled into the binary; config/warren.toml documents them.
pub const DEFAULTS: &str = include_str!("../../../config/warren.toml");

/// Flags that override everything else.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    /// --amqp-bind
    pub amqp_bind: Option<String>,
    /// --mqtt-bind
    pub mqtt_bind: Option<String>,
    /// --mqtt-ws-bind
    pub mqtt_ws_bind: Option<String>,
    /// --http-bind
    pub http_bind: Option<String>,
    /// --data-dir
    pub data_dir: Option<PathBuf>,
    /// --plugins-dir
    pub plugins_dir: Option<PathBuf>,
}

impl Settings {
    /// Load with the documented precedence. `file` is --config; without it
    /// config/warren.toml is read when present.
    pub fn load(file: Option<&Path>, flags: &Overrides) -> Result<Settings, SettingsError> {
        let mut b = config::Config::builder()
            .add_source(config::File::from_str(DEFAULTS, config::FileFormat::Toml));
        match file {
            Some(p) if !p.exists() => return Err(SettingsError::Missing(p.to_path_buf())),
            Some(p) => b = b.add_source(config::File::from(p)),
            None => {
                let p = Path::new("config/warren.toml");
                if p.exists() {
                    b = b.add_source(config::File::from(p));
                }
            }
        }
        b = b.add_source(
            config::Environment::with_prefix("WARREN")
                .prefix_separator("_")
                .separator("__")
                .try_parsing(true)
                // WARREN_PLUGINS__ENABLED=consistent-hash,random
                .list_separator(",")
                .with_list_parse_key("plugins.enabled")
                .with_list_parse_key("cluster.seeds")
                .with_list_parse_key("auth_oauth2.preferred_username_claims"),
        );
        let set = |b: config::ConfigBuilder<config::builder::DefaultState>,
                   k: &str,
                   v: &Option<String>| match v {
            Some(v) => b.set_override(k, v.as_str()),
            None => Ok(b),
        };
        b = set(b, "amqp.bind", &flags.amqp_bind)?;
        b = set(b, "mqtt.bind", &flags.mqtt_bind)?;
        b = set(b, "mqtt.ws_bind", &flags.mqtt_ws_bind)?;
        b = set(b, "http.bind", &flags.http_bind)?;
        b = set(
            b,
            "store.dir",
            &flags.data_dir.as_ref().map(|p| p.display().to_string()),
        )?;
        b = set(
            b,
            "plugins.dir",
            &flags.plugins_dir.as_ref().map(|p| p.display().to_string()),
        )?;
        Ok(b.build()?.try_deserialize()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_parse_and_flags_win() {
        let s = Settings::load(None, &Overrides::default()).unwrap();
        assert_eq!(s.amqp.frame_max, 131072);
        assert_eq!(s.default_user.name, "guest");
        assert_eq!(s.memory.high_watermark, 0.4);
        assert_eq!(s.memory.high_watermark_bytes, None);
        assert_eq!(s.disk.free_limit_bytes, 50_000_000);
        assert_eq!(s.mqtt.ws_bind, "0.0.0.0:15675");
        assert_eq!(s.amqp.tls_bind, "0.0.0.0:5671");
        assert_eq!(s.mqtt.tls_bind, "0.0.0.0:8883");
        assert_eq!(s.mqtt.wss_bind, "0.0.0.0:15676");
        assert_eq!(s.http.tls_bind, "0.0.0.0:15671");
        assert!(s.tls.files().is_none(), "no TLS listener by default");
        assert!(!s.tls.verify_peer && !s.mqtt.ssl_cert_login);
        assert!(
            s.auth_oauth2.settings().is_none(),
            "no token login by default"
        );
        assert_eq!(s.auth_oauth2.resource_server_id, "rabbitmq");
        let s = Settings::load(
            None,
            &Overrides {
                amqp_bind: Some("127.0.0.1:0".into()),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(s.amqp.bind, "127.0.0.1:0");
    }

    #[test]
    fn connection_max_is_infinity_or_a_count() {
        let s = Settings::load(None, &Overrides::default()).unwrap();
        assert_eq!(s.limits.connection_max, None, "the default is no limit");
        let dir = std::env::temp_dir().join(format!("warren-settings-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("limits.toml");
        for (text, want) in [
            ("10", Some(Some(10))),
            ("\"infinity\"", Some(None)),
            ("\"lots\"", None),
        ] {
            std::fs::write(&file, format!("[limits]\nconnection_max = {text}\n")).unwrap();
            let got = Settings::load(Some(&file), &Overrides::default()).ok();
            assert_eq!(got.map(|s| s.limits.connection_max), want, "{text}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn missing_file_is_an_error() {
        let e = Settings::load(
            Some(Path::new("/nonexistent/warren.toml")),
            &Overrides::default(),
        );
        assert!(matches!(e, Err(SettingsError::Missing(_))));
    }
}
