//! The command line.

use clap::Parser;

/// What to run, against which broker.
#[derive(Parser, Debug, Clone)]
#[command(about = "Load generator for AMQP brokers")]
pub struct Args {
    /// Broker address.
    #[arg(long, default_value = "127.0.0.1:5672")]
    pub addr: String,
    /// Broker pid, for CPU and RSS figures.
    #[arg(long)]
    pub pid: Option<u32>,
    /// Username.
    #[arg(long, default_value = "guest")]
    pub user: String,
    /// Password.
    #[arg(long, default_value = "guest")]
    pub password: String,
    /// Seconds per scenario.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Scenarios to run (comma separated); `all` runs every one.
    #[arg(long, default_value = "all")]
    pub scenarios: String,
    /// Label for the broker column in the output.
    #[arg(long, default_value = "broker")]
    pub label: String,
    /// Connections for the idle scenario.
    #[arg(long, default_value_t = 1000)]
    pub idle_connections: usize,
    /// Speak MQTT (3.1.1) instead of AMQP: runs the mqtt-* scenarios.
    #[arg(long)]
    pub mqtt: bool,
    /// Publisher connections of the mqtt-qos2-* scenarios (named only).
    #[arg(long, default_value_t = 1)]
    pub publishers: usize,
    /// Retained topics the `retained` MQTT scenario fills.
    #[arg(long, default_value_t = 1_000_000)]
    pub retained: u64,
    /// Exact-topic SUBSCRIBEs the `retained` scenario times.
    #[arg(long, default_value_t = 1000)]
    pub subscribes: usize,
    /// With --mqtt: also run every scenario over WebSocket (ws://ADDR/ws),
    /// right after the same scenario over TCP.
    #[arg(long)]
    pub ws_addr: Option<String>,
    /// Connect over TLS (AMQPS; MQTT over TLS with --mqtt), trusting the
    /// CA certificates of this PEM file; the server name is `localhost`.
    #[arg(long)]
    pub tls_ca: Option<String>,
    /// Instead of scenarios: leave this many persistent 16-byte messages in
    /// the durable queue `bench.fill` (for recovery measurements).
    #[arg(long)]
    pub fill: Option<u64>,
    /// Instead of scenarios: fill the queue `bench.deep` with this many
    /// messages (no consumer), then drain it, reporting msg/s, broker RSS
    /// (needs --pid) and the data directory's size (with --data-dir).
    #[arg(long)]
    pub deep: Option<u64>,
    /// Body size of the --deep messages.
    #[arg(long, default_value_t = 16)]
    pub body_size: usize,
    /// --deep: persistent messages in a durable queue.
    #[arg(long)]
    pub persistent: bool,
    /// --deep: stop after the fill (leave the backlog, e.g. for a restart).
    #[arg(long)]
    pub no_drain: bool,
    /// --deep: declare arguments of the queue, `k=v,k=v` (e.g.
    /// `x-queue-mode=lazy` or `x-queue-version=2` on RabbitMQ).
    #[arg(long, default_value = "")]
    pub queue_args: String,
    /// --deep: only drain N messages already in the queue (after a restart).
    #[arg(long)]
    pub drain_only: bool,
    /// --deep: the broker's data directory, whose size is reported.
    #[arg(long)]
    pub data_dir: Option<String>,
}
