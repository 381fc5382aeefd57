//! The Warren broker process: configuration, listeners and shutdown. Tests
//! start it in-process through [`start`]; the binary wraps the same call.

#![deny(missing_docs)]

mod cluster;
pub mod plugins;
pub mod resources;
pub mod settings;
mod tls;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use warren_core::Broker;
use warren_net::tls::{TlsAcceptor, TlsError};

pub use tls::TlsAddrs;
use tls::{TlsListeners, TlsPort};

pub use settings::{Overrides, Settings};

/// Errors while starting the broker.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A listener could not bind its address.
    #[error("cannot bind {what} listener on {addr}: {source}")]
    Bind {
        /// Which listener.
        what: &'static str,
        /// The configured address.
        addr: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The data directory cannot be opened (in use, unreadable).
    #[error("cannot open the data directory: {0}")]
    Store(#[from] warren_store::StoreError),
    /// A TLS certificate, key or CA file is missing or unusable.
    #[error("TLS configuration: {0}")]
    Tls(#[from] TlsError),
    /// An OAuth 2 signing key or JWKS file is missing or unusable.
    #[error("auth_oauth2 configuration: {0}")]
    OAuth2(#[from] warren_core::auth::oauth2::KeyError),
    /// The cluster settings are unusable or its listener or state failed.
    #[error("cluster: {0}")]
    Cluster(#[from] warren_cluster::ClusterError),
}

/// A started broker.
pub struct Running {
    /// The broker state, for in-process inspection.
    pub broker: Arc<Broker>,
    /// Where the AMQP listener bound.
    pub amqp_addr: SocketAddr,
    /// Where the MQTT listener bound.
    pub mqtt_addr: SocketAddr,
    /// Where the MQTT-over-WebSocket listener bound (None: disabled).
    pub mqtt_ws_addr: Option<SocketAddr>,
    /// Where the management HTTP listener bound.
    pub http_addr: SocketAddr,
    /// Where the TLS listeners bound (None: no certificate, or disabled).
    pub tls_addrs: TlsAddrs,
    /// Exchange-type plugins that loaded.
    pub plugins: Vec<plugins::LoadedPlugin>,
    /// This node's part of the cluster, when clustering is configured.
    pub cluster: Option<Arc<warren_cluster::Cluster>>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    store: Arc<warren_store::Store>,
    /// Every TLS listener's acceptor, reloaded together.
    acceptors: Vec<Arc<TlsAcceptor>>,
}

impl Running {
    /// Read the TLS files again (SIGHUP): new connections get the new
    /// certificate, open ones stay up. On error every listener keeps the
    /// certificate it had.
    pub fn reload_tls(&self) -> Result<usize, TlsError> {
        // Check every one first, so that a broken file changes nothing.
        for a in &self.acceptors {
            a.check()?;
        }
        for a in &self.acceptors {
            a.reload()?;
        }
        Ok(self.acceptors.len())
    }

    /// Close client connections (320) and stop the listeners.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
        // Flush the log and release the data directory lock.
        let store = self.store.clone();
        let _ = tokio::task::spawn_blocking(move || store.close()).await;
        drop(self.broker);
    }
}

/// Bind the listeners and start serving.
pub async fn start(settings: &Settings) -> Result<Running, StartError> {
    let oauth2 = oauth2(settings)?;
    let opened = warren_store::Store::open_with(&settings.store.dir, settings.store.paging())?;
    let store = opened.store.clone();
    tracing::info!("data directory {}", settings.store.dir.display());
    let (broker, plugins) = build_broker(settings, opened);
    if let Some(backend) = oauth2 {
        broker.set_oauth2(backend);
    }
    resources::spawn(
        broker.alarms.clone(),
        &settings.memory,
        &settings.disk,
        settings.store.dir.clone(),
    );
    let cluster = cluster::start(settings, &broker).await?;
    let (tx, rx) = watch::channel(false);
    // A bad certificate stops start-up before any listener binds.
    let mut tls = TlsListeners::new(settings)?;
    let (amqp_listener, amqp_addr) = bind("AMQP", &settings.amqp.bind).await?;
    let amqp = tokio::spawn(warren_amqp::serve(
        amqp_listener,
        broker.clone(),
        amqp_config(settings),
        rx.clone(),
    ));
    let mut tasks = vec![amqp];
    if let Some((l, acceptor)) = tls.bind(TlsPort::Amqp, &settings.amqp.tls_bind).await? {
        let cfg = amqp_config(settings);
        let serve = warren_amqp::serve_tls(l, acceptor, broker.clone(), cfg, rx.clone());
        tasks.push(tokio::spawn(serve));
    }
    let (http_listener, http_addr) = bind("HTTP", &settings.http.bind).await?;
    let (mqtt_listeners, mqtt_addr, mqtt_ws_addr) = bind_mqtt(settings, &mut tls).await?;
    let https = tls.bind(TlsPort::Http, &settings.http.tls_bind).await?;
    let mut listeners = vec![
        ("amqp", amqp_addr),
        ("mqtt", mqtt_addr),
        ("http", http_addr),
    ];
    // RabbitMQ's name for the Web MQTT listener.
    listeners.extend(mqtt_ws_addr.map(|a| ("http/web-mqtt", a)));
    listeners.extend(tls.named());
    let mgmt_state = mgmt_state(&broker, &plugins, listeners);
    let http = tokio::spawn(warren_mgmt::serve(
        http_listener,
        https,
        mgmt_state,
        rx.clone(),
    ));
    let mqtt = tokio::spawn(warren_mqtt::serve(
        mqtt_listeners,
        broker.clone(),
        mqtt_config(settings),
        rx,
    ));
    Ok(Running {
        broker,
        amqp_addr,
        plugins,
        cluster,
        shutdown: tx,
        http_addr,
        mqtt_addr,
        mqtt_ws_addr,
        tls_addrs: tls.addrs,
        tasks: {
            tasks.extend([http, mqtt]);
            tasks
        },
        store,
        acceptors: tls.acceptors,
    })
}

/// The MQTT listeners (TCP, WebSocket, TLS, wss) and the plain ones'
/// addresses.
async fn bind_mqtt(
    settings: &Settings,
    tls: &mut TlsListeners,
) -> Result<(warren_mqtt::Listeners, SocketAddr, Option<SocketAddr>), StartError> {
    let (tcp, addr) = bind("MQTT", &settings.mqtt.bind).await?;
    let (ws, ws_addr) = match settings.mqtt.ws_bind.as_str() {
        "" => (None, None),
        addr => {
            let (l, a) = bind("MQTT WebSocket", addr).await?;
            (Some(l), Some(a))
        }
    };
    let listeners = warren_mqtt::Listeners {
        tcp,
        ws,
        tls: tls.bind(TlsPort::Mqtt, &settings.mqtt.tls_bind).await?,
        wss: tls.bind(TlsPort::MqttWss, &settings.mqtt.wss_bind).await?,
    };
    Ok((listeners, addr, ws_addr))
}

/// The broker over the opened store: plugins loaded, definitions
/// recovered (or the default user created on a fresh directory), node
/// limits applied.
fn build_broker(
    settings: &Settings,
    opened: warren_store::Opened,
) -> (Arc<Broker>, Vec<plugins::LoadedPlugin>) {
    let broker = Broker::new(Some(opened.store));
    // Plugin types must exist before durable exchanges of those types come back.
    let plugins = plugins::load_dir(
        &settings.plugins.dir,
        &settings.plugins.enabled,
        &broker.types,
    );
    match &opened.definitions {
        Some(defs) => broker.recover(defs, opened.recovery),
        None => {
            broker.recover(&Default::default(), opened.recovery);
            create_default_user(&broker, &settings.default_user);
        }
    }
    if let Some(max) = settings.limits.connection_max {
        tracing::info!("node connection limit (connection_max): {max}");
        let max = i64::try_from(max).unwrap_or(i64::MAX);
        broker.limits.connection_max.set(Some(max));
    }
    (broker, plugins)
}

/// Token login, when `auth_oauth2` names keys: loaded once, before the
/// store opens or any listener binds (an unusable key file stops the start).
fn oauth2(
    settings: &Settings,
) -> Result<Option<warren_core::auth::login::OAuth2Backend>, StartError> {
    let Some(cfg) = settings.auth_oauth2.settings() else {
        return Ok(None);
    };
    let verifier = warren_core::auth::oauth2::TokenVerifier::load(cfg)?;
    let internal_users = settings.auth_oauth2.internal_users;
    tracing::info!(
        resource_server_id = verifier.resource_server_id(),
        internal_users,
        "OAuth 2 token login enabled"
    );
    Ok(Some(warren_core::auth::login::OAuth2Backend {
        verifier,
        internal_users,
    }))
}

/// First start on this directory: create the default user, as RabbitMQ does.
fn create_default_user(broker: &Broker, u: &settings::DefaultUser) {
    broker.put_user(&u.name, &u.password, vec!["administrator".into()]);
    if let Err(e) = broker.set_permissions("/", &u.name, warren_core::auth::Permission::all()) {
        tracing::error!("cannot grant the default user its permissions: {e}");
    }
}

/// Bind one listener; `what` names it in the log and in the error.
pub(crate) async fn bind(
    what: &'static str,
    addr: &str,
) -> Result<(TcpListener, SocketAddr), StartError> {
    let error = |source| StartError::Bind {
        what,
        addr: addr.to_string(),
        source,
    };
    let listener = TcpListener::bind(addr).await.map_err(error)?;
    let local = listener.local_addr().map_err(error)?;
    tracing::info!("{what} listener bound on {local}");
    Ok((listener, local))
}

/// The default user, when it may log in from loopback only.
fn loopback_users(u: &settings::DefaultUser) -> Vec<String> {
    if u.loopback_only {
        vec![u.name.clone()]
    } else {
        Vec::new()
    }
}

fn amqp_config(settings: &Settings) -> warren_amqp::Config {
    warren_amqp::Config {
        frame_max: settings.amqp.frame_max,
        channel_max: settings.amqp.channel_max,
        heartbeat: settings.amqp.heartbeat,
        max_message_size: settings.amqp.max_message_size,
        loopback_users: loopback_users(&settings.default_user),
        ..Default::default()
    }
}

fn mqtt_config(settings: &Settings) -> warren_mqtt::Config {
    warren_mqtt::Config {
        anonymous_user: settings.default_user.name.clone(),
        loopback_users: loopback_users(&settings.default_user),
        max_keep_alive: settings.mqtt.max_keep_alive,
        ssl_cert_login: settings.mqtt.ssl_cert_login,
        ..Default::default()
    }
}

/// What the management API reads: the broker, its plugins, its listeners.
fn mgmt_state(
    broker: &Arc<Broker>,
    plugins: &[plugins::LoadedPlugin],
    listeners: Vec<(&'static str, SocketAddr)>,
) -> warren_mgmt::MgmtState {
    let infos = plugins
        .iter()
        .map(|p| warren_mgmt::PluginInfo {
            name: p.name.clone(),
            version: p.version.clone(),
            file: p.file.display().to_string(),
            exchange_types: p.types.clone(),
        })
        .collect();
    warren_mgmt::MgmtState::new(broker.clone(), infos, listeners)
}
