//! `warren`: run the broker.

mod alloc;

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use warren::{Overrides, Settings};

/// Warren message broker (AMQP 0-9-1 and MQTT over one routing core).
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Configuration file (default: config/warren.toml when present).
    #[arg(long)]
    config: Option<PathBuf>,
    /// AMQP listen address (overrides amqp.bind).
    #[arg(long)]
    amqp_bind: Option<String>,
    /// MQTT listen address (overrides mqtt.bind).
    #[arg(long)]
    mqtt_bind: Option<String>,
    /// MQTT-over-WebSocket listen address (overrides mqtt.ws_bind; empty: off).
    #[arg(long)]
    mqtt_ws_bind: Option<String>,
    /// Management HTTP listen address (overrides http.bind).
    #[arg(long)]
    http_bind: Option<String>,
    /// Data directory (overrides store.dir).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Plugin directory (overrides plugins.dir).
    #[arg(long)]
    plugins_dir: Option<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            // openraft narrates every vote at info; its warnings are what operators need.
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,openraft=warn".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let args = Args::parse();
    let flags = Overrides {
        amqp_bind: args.amqp_bind,
        mqtt_bind: args.mqtt_bind,
        mqtt_ws_bind: args.mqtt_ws_bind,
        http_bind: args.http_bind,
        data_dir: args.data_dir,
        plugins_dir: args.plugins_dir,
    };
    let settings =
        Settings::load(args.config.as_deref(), &flags).context("loading configuration")?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let running = warren::start(&settings).await?;
        tracing::info!("Warren {} started", env!("CARGO_PKG_VERSION"));
        wait_for_signal(&running).await;
        tracing::info!("shutting down");
        running.shutdown().await;
        tracing::info!("stopped");
        anyhow::Ok(())
    })
}

/// Until SIGINT or SIGTERM; SIGHUP reloads the TLS certificates.
async fn wait_for_signal(running: &warren::Running) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut hup = signal(SignalKind::hangup()).expect("SIGHUP handler");
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return,
            _ = term.recv() => return,
            _ = hup.recv() => match running.reload_tls() {
                Ok(0) => tracing::info!("SIGHUP: no TLS listener to reload"),
                Ok(n) => tracing::info!("SIGHUP: TLS certificates reloaded ({n} listeners); new connections use them"),
                Err(e) => tracing::error!("SIGHUP: TLS certificates not reloaded, the old ones stay: {e}"),
            },
        }
    }
}
