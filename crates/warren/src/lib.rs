//! The Warren broker process: configuration, listeners and shutdown. Tests
//! start it in-process through [`start`]; the binary wraps the same call.

#![deny(missing_docs)]

pub mod plugins;
pub mod resources;
pub mod settings;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use warren_core::Broker;

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
}

/// A started broker.
pub struct Running {
    /// The broker state, for in-process inspection.
    pub broker: Arc<Broker>,
    /// Where the AMQP listener bound.
    pub amqp_addr: SocketAddr,
    /// Where the MQTT listener bound.
    pub mqtt_addr: SocketAddr,
    /// Where the management HTTP listener bound.
    pub http_addr: SocketAddr,
    /// Exchange-type plugins that loaded.
    pub plugins: Vec<plugins::LoadedPlugin>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    store: Arc<warren_store::Store>,
}

impl Running {
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
    let opened = warren_store::Store::open(&settings.store.dir)?;
    let store = opened.store.clone();
    tracing::info!("data directory {}", settings.store.dir.display());
    let broker = Broker::new(Some(opened.store));
    // Plugin types must exist before durable exchanges of those types come back.
    let plugins = plugins::load_dir(
        &settings.plugins.dir,
        &settings.plugins.enabled,
        &broker.types,
    );
    let u = &settings.default_user;
    match &opened.definitions {
        Some(defs) => broker.recover(defs, opened.recovery),
        None => {
            // First start on this directory: create the default user, as RabbitMQ does.
            broker.recover(&Default::default(), opened.recovery);
            broker.put_user(&u.name, &u.password, vec!["administrator".into()]);
            if let Err(e) =
                broker.set_permissions("/", &u.name, warren_core::auth::Permission::all())
            {
                tracing::error!("cannot grant the default user its permissions: {e}");
            }
        }
    }
    if let Some(max) = settings.limits.connection_max {
        tracing::info!("node connection limit (connection_max): {max}");
        let max = i64::try_from(max).unwrap_or(i64::MAX);
        broker.limits.connection_max.set(Some(max));
    }
    resources::spawn(
        broker.alarms.clone(),
        &settings.memory,
        &settings.disk,
        settings.store.dir.clone(),
    );
    let (tx, rx) = watch::channel(false);
    let listener = TcpListener::bind(&settings.amqp.bind)
        .await
        .map_err(|source| StartError::Bind {
            what: "AMQP",
            addr: settings.amqp.bind.clone(),
            source,
        })?;
    let amqp_addr = listener.local_addr().map_err(|source| StartError::Bind {
        what: "AMQP",
        addr: settings.amqp.bind.clone(),
        source,
    })?;
    tracing::info!("AMQP listener bound on {amqp_addr}");
    let cfg = warren_amqp::Config {
        frame_max: settings.amqp.frame_max,
        channel_max: settings.amqp.channel_max,
        heartbeat: settings.amqp.heartbeat,
        max_message_size: settings.amqp.max_message_size,
        loopback_users: if u.loopback_only {
            vec![u.name.clone()]
        } else {
            Vec::new()
        },
        ..Default::default()
    };
    let amqp = tokio::spawn(warren_amqp::serve(
        listener,
        broker.clone(),
        cfg,
        rx.clone(),
    ));
    let http_listener = TcpListener::bind(&settings.http.bind)
        .await
        .map_err(|source| StartError::Bind {
            what: "HTTP",
            addr: settings.http.bind.clone(),
            source,
        })?;
    let http_addr = http_listener
        .local_addr()
        .map_err(|source| StartError::Bind {
            what: "HTTP",
            addr: settings.http.bind.clone(),
            source,
        })?;
    tracing::info!("HTTP listener bound on {http_addr}");
    let mqtt_listener = TcpListener::bind(&settings.mqtt.bind)
        .await
        .map_err(|source| StartError::Bind {
            what: "MQTT",
            addr: settings.mqtt.bind.clone(),
            source,
        })?;
    let mqtt_addr = mqtt_listener
        .local_addr()
        .map_err(|source| StartError::Bind {
            what: "MQTT",
            addr: settings.mqtt.bind.clone(),
            source,
        })?;
    tracing::info!("MQTT listener bound on {mqtt_addr}");
    let mgmt_state = warren_mgmt::MgmtState::new(
        broker.clone(),
        plugins
            .iter()
            .map(|p| warren_mgmt::PluginInfo {
                name: p.name.clone(),
                version: p.version.clone(),
                file: p.file.display().to_string(),
                exchange_types: p.types.clone(),
            })
            .collect(),
        vec![
            ("amqp", amqp_addr),
            ("mqtt", mqtt_addr),
            ("http", http_addr),
        ],
    );
    let http = tokio::spawn(warren_mgmt::serve(http_listener, mgmt_state, rx.clone()));
    let mqtt_cfg = warren_mqtt::Config {
        anonymous_user: u.name.clone(),
        loopback_users: if u.loopback_only {
            vec![u.name.clone()]
        } else {
            Vec::new()
        },
        ..Default::default()
    };
    let mqtt = tokio::spawn(warren_mqtt::serve(
        mqtt_listener,
        broker.clone(),
        mqtt_cfg,
        rx,
    ));
    Ok(Running {
        broker,
        amqp_addr,
        plugins,
        shutdown: tx,
        http_addr,
        mqtt_addr,
        tasks: vec![amqp, http, mqtt],
        store,
    })
}
