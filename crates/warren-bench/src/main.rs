//! warren-bench: a load generator for AMQP brokers (Warren, RabbitMQ, any
//! other). Reports msg/s, latency percentiles, broker CPU and RSS (given its
//! pid) and the generator's own CPU, so a run says who the bottleneck was.

mod amqp;
mod mqtt;
mod proc_stats;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use bytes::BytesMut;
use clap::Parser;
use parking_lot::Mutex;
use tokio::io::AsyncWriteExt;

use amqp::{Client, Event};
use proc_stats::Sample;

#[derive(Parser, Debug, Clone)]
#[command(about = "Load generator for AMQP brokers")]
struct Args {
    /// Broker address.
    #[arg(long, default_value = "127.0.0.1:5672")]
    addr: String,
    /// Broker pid, for CPU and RSS figures.
    #[arg(long)]
    pid: Option<u32>,
    /// Username.
    #[arg(long, default_value = "guest")]
    user: String,
    /// Password.
    #[arg(long, default_value = "guest")]
    password: String,
    /// Seconds per scenario.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Scenarios to run (comma separated); `all` runs every one.
    #[arg(long, default_value = "all")]
    scenarios: String,
    /// Label for the broker column in the output.
    #[arg(long, default_value = "broker")]
    label: String,
    /// Connections for the idle scenario.
    #[arg(long, default_value_t = 1000)]
    idle_connections: usize,
    /// Speak MQTT (3.1.1) instead of AMQP: runs the mqtt-* scenarios.
    #[arg(long)]
    mqtt: bool,
    /// Instead of scenarios: leave this many persistent 16-byte messages in
    /// the durable queue `bench.fill` (for recovery measurements).
    #[arg(long)]
    fill: Option<u64>,
}

#[derive(Clone, Debug)]
struct Spec {
    name: &'static str,
    exchange: &'static str,
    kind: &'static str,
    queues: usize,
    bindings_per_queue: usize,
    no_ack: bool,
    prefetch: u16,
    /// Closed loop: at most this many messages in flight.
    window: Option<u64>,
    /// Fixed publish rate (msg/s).
    rate: Option<u64>,
    body: usize,
    persistent: bool,
    publishers: usize,
    /// Outstanding publisher confirms per publisher (None: no confirms).
    confirms: Option<u64>,
    durable: bool,
}

const BASE: Spec = Spec {
    name: "",
    exchange: "",
    kind: "",
    queues: 1,
    bindings_per_queue: 0,
    no_ack: true,
    prefetch: 0,
    window: None,
    rate: None,
    body: 16,
    persistent: false,
    publishers: 1,
    confirms: None,
    durable: false,
};

fn scenarios() -> Vec<Spec> {
    vec![
        Spec {
            name: "1to1-autoack-open",
            ..BASE
        },
        Spec {
            name: "1to1-autoack-closed",
            window: Some(5000),
            ..BASE
        },
        Spec {
            name: "1to1-ack-p100-open",
            no_ack: false,
            prefetch: 100,
            ..BASE
        },
        Spec {
            name: "1to1-ack-p100-closed",
            no_ack: false,
            prefetch: 100,
            window: Some(5000),
            ..BASE
        },
        Spec {
            name: "fanout-4",
            exchange: "bench.fanout",
            kind: "fanout",
            queues: 4,
            bindings_per_queue: 1,
            window: Some(5000),
            ..BASE
        },
        Spec {
            name: "topic-1000-bindings",
            exchange: "bench.topic",
            kind: "topic",
            queues: 4,
            bindings_per_queue: 250,
            window: Some(5000),
            ..BASE
        },
        Spec {
            name: "topic-100k-bindings",
            exchange: "bench.topic",
            kind: "topic",
            queues: 4,
            bindings_per_queue: 25_000,
            window: Some(5000),
            ..BASE
        },
        Spec {
            name: "latency-5k",
            rate: Some(5000),
            ..BASE
        },
        Spec {
            name: "direct-100keys",
            exchange: "bench.direct",
            kind: "direct",
            bindings_per_queue: 100,
            window: Some(5000),
            ..BASE
        },
        Spec {
            name: "plugin-direct-100keys",
            exchange: "bench.plugin-direct",
            kind: "x-plugin-direct",
            bindings_per_queue: 100,
            window: Some(5000),
            ..BASE
        },
        Spec {
            name: "persistent-16b-1pub",
            persistent: true,
            durable: true,
            confirms: Some(100),
            no_ack: false,
            prefetch: 100,
            ..BASE
        },
        Spec {
            name: "persistent-16b-8pub",
            persistent: true,
            durable: true,
            confirms: Some(100),
            publishers: 8,
            no_ack: false,
            prefetch: 100,
            ..BASE
        },
        Spec {
            name: "persistent-1k-1pub",
            persistent: true,
            durable: true,
            confirms: Some(100),
            body: 1024,
            no_ack: false,
            prefetch: 100,
            ..BASE
        },
        Spec {
            name: "persistent-1k-8pub",
            persistent: true,
            durable: true,
            confirms: Some(100),
            body: 1024,
            publishers: 8,
            no_ack: false,
            prefetch: 100,
            ..BASE
        },
    ]
}

/// Routing keys: topic bindings mix `*` and `#`; publishes match one queue each.
fn binding_key(spec: &Spec, q: usize, b: usize) -> String {
    match spec.kind {
        "topic" => match b % 3 {
            0 => format!("metrics.q{q}.b{b}.*"),
            1 => format!("metrics.q{q}.b{b}.#"),
            _ => format!("*.q{q}.b{b}.x"),
        },
        // Many keys per queue, published in rotation, so that the channel's
        // one-entry route cache always misses and routing itself is measured.
        "direct" | "x-plugin-direct" => format!("k{q}.{b}"),
        _ => String::new(),
    }
}

fn publish_key(spec: &Spec, n: u64, queue_names: &[String]) -> String {
    match spec.kind {
        "topic" => {
            let q = (n as usize) % spec.queues;
            let b = (n as usize / spec.queues) % spec.bindings_per_queue;
            format!("metrics.q{q}.b{b}.x")
        }
        "fanout" => String::new(),
        "direct" | "x-plugin-direct" => {
            let q = (n as usize) % spec.queues;
            let b = (n as usize / spec.queues) % spec.bindings_per_queue;
            format!("k{q}.{b}")
        }
        _ => queue_names[0].clone(),
    }
}

struct Shared {
    published: AtomicU64,
    delivered: AtomicU64,
    confirmed: AtomicU64,
    stop: AtomicBool,
    latencies: Mutex<Vec<u32>>,
    epoch: Instant,
    /// Signalled when deliveries or confirms make progress, so a publisher
    /// waiting for window room sleeps instead of spinning.
    progress: tokio::sync::Notify,
}

async fn run_consumer(args: Args, spec: Spec, queue: String, shared: Arc<Shared>) -> Result<()> {
    let mut c = Client::connect(&args.addr, &args.user, &args.password).await?;
    c.consume(&queue, spec.no_ack, spec.prefetch).await?;
    let ack_every = (spec.prefetch as u64 / 2).max(1);
    let mut since_ack = 0u64;
    let mut last_tag = 0u64;
    let mut out = BytesMut::new();
    let mut local = Vec::with_capacity(1 << 16);
    while !shared.stop.load(Ordering::Relaxed) {
        let more = tokio::time::timeout(Duration::from_millis(100), c.fill()).await;
        match more {
            Err(_) => continue,
            Ok(Ok(true)) => {}
            Ok(Ok(false)) => break,
            Ok(Err(e)) => return Err(e),
        }
        let now = shared.epoch.elapsed().as_nanos() as u64;
        let mut n = 0u64;
        while let Some((ev, used)) = c.next_event()? {
            match ev {
                Event::Deliver(tag) => last_tag = tag,
                Event::Body(b) if b.len() >= 8 => {
                    n += 1;
                    let sent = u64::from_le_bytes(b[..8].try_into()?);
                    if local.len() < 1 << 16 {
                        local.push(((now.saturating_sub(sent)) / 1000) as u32);
                    }
                }
                _ => {}
            }
            bytes::Buf::advance(&mut c.buf, used);
        }
        shared.delivered.fetch_add(n, Ordering::Relaxed);
        shared.progress.notify_waiters();
        if !spec.no_ack {
            since_ack += n;
            if since_ack >= ack_every && last_tag > 0 {
                amqp::put_ack(&mut out, last_tag, true);
                c.wr.write_all(&out).await?;
                out.clear();
                since_ack = 0;
            }
        }
        if local.len() >= 1 << 16 {
            let mut l = shared.latencies.lock();
            if l.len() < 20_000_000 {
                l.extend_from_slice(&local);
            }
            local.clear();
        }
    }
    shared.latencies.lock().extend_from_slice(&local);
    Ok(())
}

async fn run_publisher(
    args: Args,
    spec: Spec,
    queue_names: Vec<String>,
    shared: Arc<Shared>,
    deadline: Instant,
) -> Result<()> {
    let mut c = Client::connect(&args.addr, &args.user, &args.password).await?;
    let fanout = if spec.kind == "fanout" {
        spec.queues as u64
    } else {
        1
    };
    let confirmed_local = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    if spec.confirms.is_some() {
        c.confirm_select().await?;
    }
    let Client {
        mut rd,
        mut wr,
        mut buf,
    } = c;
    // Confirms arrive on the read side; count them in a task of their own.
    let reader = {
        let confirmed_local = confirmed_local.clone();
        let shared = shared.clone();
        let done = done.clone();
        tokio::spawn(async move {
            let mut c2 = ReadOnly {
                rd: &mut rd,
                buf: &mut buf,
            };
            let mut acked = 0u64;
            loop {
                match tokio::time::timeout(Duration::from_millis(100), c2.fill()).await {
                    Err(_) if done.load(Ordering::Relaxed) => break,
                    Err(_) => continue,
                    Ok(Ok(true)) => {}
                    _ => break,
                }
                while let Some((tag, multiple, used)) = c2.next_confirm() {
                    let newly = if multiple {
                        tag.saturating_sub(acked)
                    } else {
                        1
                    };
                    acked = acked.max(tag);
                    confirmed_local.fetch_add(newly, Ordering::Relaxed);
                    shared.confirmed.fetch_add(newly, Ordering::Relaxed);
                    shared.progress.notify_waiters();
                    bytes::Buf::advance(c2.buf, used);
                }
            }
        })
    };
    let mut out = BytesMut::with_capacity(1 << 20);
    let mut body = vec![0u8; spec.body.max(8)];
    let mut sent = 0u64;
    let start = Instant::now();
    let per_pub_rate = spec.rate.map(|r| r as f64 / spec.publishers as f64);
    while Instant::now() < deadline {
        let mut batch = 200u64;
        if let Some(w) = spec.window {
            let in_flight = shared.published.load(Ordering::Relaxed) * fanout
                - shared.delivered.load(Ordering::Relaxed);
            let room = (w * fanout).saturating_sub(in_flight) / fanout;
            batch = batch.min(room / spec.publishers as u64);
        }
        if let Some(o) = spec.confirms {
            batch = batch.min(o.saturating_sub(sent - confirmed_local.load(Ordering::Relaxed)));
        }
        if let Some(r) = per_pub_rate {
            let due = (start.elapsed().as_secs_f64() * r) as u64;
            batch = batch.min(due.saturating_sub(sent));
        }
        if batch == 0 {
            if spec.rate.is_some() {
                tokio::time::sleep(Duration::from_micros(200)).await;
            } else {
                let _ = tokio::time::timeout(Duration::from_millis(2), shared.progress.notified())
                    .await;
            }
            continue;
        }
        for _ in 0..batch {
            let key = publish_key(&spec, sent, &queue_names);
            let now = shared.epoch.elapsed().as_nanos() as u64;
            body[..8].copy_from_slice(&now.to_le_bytes());
            amqp::put_publish(&mut out, spec.exchange, &key, &body, spec.persistent);
            sent += 1;
        }
        wr.write_all(&out).await?;
        out.clear();
        shared.published.fetch_add(batch, Ordering::Relaxed);
    }
    // Let outstanding confirms arrive before the reader stops.
    if spec.confirms.is_some() {
        let until = Instant::now() + Duration::from_secs(10);
        while confirmed_local.load(Ordering::Relaxed) < sent && Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    done.store(true, Ordering::Relaxed);
    let _ = reader.await;
    Ok(())
}

struct ReadOnly<'a> {
    rd: &'a mut tokio::net::tcp::OwnedReadHalf,
    buf: &'a mut BytesMut,
}

impl ReadOnly<'_> {
    async fn fill(&mut self) -> Result<bool> {
        use tokio::io::AsyncReadExt;
        if self.buf.capacity() - self.buf.len() < 16 * 1024 {
            self.buf.reserve(64 * 1024);
        }
        Ok(self.rd.read_buf(self.buf).await? > 0)
    }

    fn next_confirm(&mut self) -> Option<(u64, bool, usize)> {
        loop {
            let f = warren_amqp::codec::peek_frame(self.buf, amqp::FRAME_MAX + 8).ok()??;
            let total = f.size + warren_amqp::codec::FRAME_OVERHEAD;
            let p = &self.buf[7..7 + f.size];
            if f.kind == warren_amqp::codec::FRAME_METHOD
                && warren_amqp::codec::method_id(p) == Some((60, 80))
            {
                let s = warren_amqp::codec::parse_settle(p, 80).ok()?;
                return Some((s.tag, s.multiple, total));
            }
            bytes::Buf::advance(self.buf, total);
        }
    }
}

struct Outcome {
    published: u64,
    delivered: u64,
    confirmed: u64,
    secs: f64,
    p50: u32,
    p99: u32,
    p999: u32,
    broker: Option<(f64, u64)>,
    own_cpu: f64,
}

async fn run_scenario(args: &Args, spec: &Spec) -> Result<Outcome> {
    let mut setup = Client::connect(&args.addr, &args.user, &args.password).await?;
    let queue_names: Vec<String> = (0..spec.queues)
        .map(|i| format!("bench.{}.{i}", spec.name))
        .collect();
    if !spec.exchange.is_empty() {
        setup.exchange(spec.exchange, spec.kind).await?;
    }
    for (i, q) in queue_names.iter().enumerate() {
        setup.queue(q, spec.durable).await?;
        for b in 0..spec.bindings_per_queue {
            setup
                .bind(q, spec.exchange, &binding_key(spec, i, b))
                .await?;
        }
    }
    let shared = Arc::new(Shared {
        published: AtomicU64::new(0),
        delivered: AtomicU64::new(0),
        confirmed: AtomicU64::new(0),
        stop: AtomicBool::new(false),
        latencies: Mutex::new(Vec::new()),
        epoch: Instant::now(),
        progress: tokio::sync::Notify::new(),
    });
    let mut consumers = Vec::new();
    for q in &queue_names {
        consumers.push(tokio::spawn(run_consumer(
            args.clone(),
            spec.clone(),
            q.clone(),
            shared.clone(),
        )));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = Sample::take(args.pid);
    let start = Instant::now();
    let deadline = start + Duration::from_secs(args.seconds);
    let mut pubs = Vec::new();
    for _ in 0..spec.publishers {
        pubs.push(tokio::spawn(run_publisher(
            args.clone(),
            spec.clone(),
            queue_names.clone(),
            shared.clone(),
            deadline,
        )));
    }
    tokio::time::sleep_until(deadline.into()).await;
    let delivered_in_window = shared.delivered.load(Ordering::Relaxed);
    let secs = start.elapsed().as_secs_f64();
    let after = Sample::take(args.pid);
    for p in pubs {
        p.await??;
    }
    shared.stop.store(true, Ordering::Relaxed);
    for c in consumers {
        c.await??;
    }
    for q in &queue_names {
        setup.delete_queue(q).await?;
    }
    let mut lat = std::mem::take(&mut *shared.latencies.lock());
    lat.sort_unstable();
    let pct = |p: f64| {
        if lat.is_empty() {
            0
        } else {
            lat[((lat.len() - 1) as f64 * p) as usize]
        }
    };
    Ok(Outcome {
        published: shared.published.load(Ordering::Relaxed),
        delivered: delivered_in_window,
        confirmed: shared.confirmed.load(Ordering::Relaxed),
        secs,
        p50: pct(0.5),
        p99: pct(0.99),
        p999: pct(0.999),
        broker: proc_stats::broker_usage(&before, &after, secs),
        own_cpu: proc_stats::own_cpu(&before, &after, secs),
    })
}

async fn run_mqtt(args: &Args) -> Result<()> {
    let wanted: Vec<&str> = args.scenarios.split(',').collect();
    let all = wanted.contains(&"all");
    println!("| broker | scenario | published msg/s | delivered msg/s | p50 us | p99 us | broker CPU | broker RSS MiB | generator CPU |");
    println!("|---|---|---|---|---|---|---|---|---|");
    for spec in mqtt::scenarios() {
        if !all && !wanted.contains(&spec.name) {
            continue;
        }
        match mqtt::run(
            &args.addr,
            &args.user,
            &args.password,
            args.pid,
            args.seconds,
            &spec,
        )
        .await
        {
            Ok(o) => {
                let (cpu, rss) = o
                    .broker
                    .map(|(c, r)| {
                        (
                            format!("{:.0}%", c * 100.0),
                            format!("{:.0}", r as f64 / 1048576.0),
                        )
                    })
                    .unwrap_or(("-".into(), "-".into()));
                println!(
                    "| {} | {} | {:.0} | {:.0} | {} | {} | {} | {} | {:.0}% |",
                    args.label,
                    spec.name,
                    o.published,
                    o.delivered,
                    o.p50,
                    o.p99,
                    cpu,
                    rss,
                    o.own_cpu * 100.0
                );
            }
            Err(e) => println!("| {} | {} | failed: {e:#} |", args.label, spec.name),
        }
    }
    if all || wanted.contains(&"mqtt-idle") {
        match mqtt::idle(
            &args.addr,
            &args.user,
            &args.password,
            args.pid,
            args.idle_connections,
        )
        .await?
        {
            Some(kib) => println!(
                "| {} | mqtt-idle | {} connections | {kib:.1} KiB per connection |",
                args.label, args.idle_connections
            ),
            None => println!("| {} | mqtt-idle | (pass --pid for RSS) |", args.label),
        }
    }
    Ok(())
}

/// Publish `n` persistent messages with confirms (1000 outstanding) and
/// leave them queued.
async fn run_fill(args: &Args, n: u64) -> Result<()> {
    let mut c = Client::connect(&args.addr, &args.user, &args.password).await?;
    c.queue("bench.fill", true).await?;
    c.confirm_select().await?;
    let start = Instant::now();
    let mut out = BytesMut::with_capacity(1 << 20);
    let (mut sent, mut acked) = (0u64, 0u64);
    let body = [7u8; 16];
    while acked < n {
        while sent < n && sent - acked < 1000 {
            amqp::put_publish(&mut out, "", "bench.fill", &body, true);
            sent += 1;
        }
        if !out.is_empty() {
            c.wr.write_all(&out).await?;
            out.clear();
        }
        if !c.fill().await? {
            anyhow::bail!("broker closed the connection");
        }
        loop {
            let Some(f) = warren_amqp::codec::peek_frame(&c.buf, amqp::FRAME_MAX + 8)
                .map_err(|e| anyhow::anyhow!("{e}"))?
            else {
                break;
            };
            let total = f.size + warren_amqp::codec::FRAME_OVERHEAD;
            let p = &c.buf[7..7 + f.size];
            if warren_amqp::codec::method_id(p) == Some((60, 80)) {
                let s = warren_amqp::codec::parse_settle(p, 80)?;
                acked = if s.multiple { s.tag } else { acked.max(s.tag) };
            } else if warren_amqp::codec::method_id(p) == Some((60, 120)) {
                anyhow::bail!("broker nacked a publish");
            }
            bytes::Buf::advance(&mut c.buf, total);
        }
    }
    println!(
        "filled bench.fill with {n} persistent messages in {:.1?}",
        start.elapsed()
    );
    Ok(())
}

async fn run_idle(args: &Args) -> Result<()> {
    let before = Sample::take(args.pid);
    let mut conns = Vec::with_capacity(args.idle_connections);
    for _ in 0..args.idle_connections {
        conns.push(Client::connect(&args.addr, &args.user, &args.password).await?);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = Sample::take(args.pid);
    match (before.broker_rss, after.broker_rss) {
        (Some(a), Some(b)) => println!(
            "| {} | idle-connections | {} connections | RSS +{:.1} MiB | {:.1} KiB per connection |",
            args.label,
            args.idle_connections,
            (b.saturating_sub(a)) as f64 / 1048576.0,
            (b.saturating_sub(a)) as f64 / 1024.0 / args.idle_connections as f64
        ),
        _ => println!("| {} | idle-connections | {} opened | (pass --pid for RSS) |", args.label, args.idle_connections),
    }
    drop(conns);
    Ok(())
}

fn main() -> Result<()> {
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async {
        if let Some(n) = args.fill {
            return run_fill(&args, n).await;
        }
        if args.mqtt {
            return run_mqtt(&args).await;
        }
        let wanted: Vec<&str> = args.scenarios.split(',').collect();
        let all = wanted.contains(&"all");
        println!("| broker | scenario | published msg/s | delivered msg/s | confirmed msg/s | p50 us | p99 us | p99.9 us | broker CPU | broker RSS MiB | generator CPU |");
        println!("|---|---|---|---|---|---|---|---|---|---|---|");
        for spec in scenarios() {
            if !all && !wanted.contains(&spec.name) {
                continue;
            }
            match run_scenario(&args, &spec).await {
                Ok(o) => {
                    let (cpu, rss) = o
                        .broker
                        .map(|(c, r)| (format!("{:.0}%", c * 100.0), format!("{:.0}", r as f64 / 1048576.0)))
                        .unwrap_or(("-".into(), "-".into()));
                    println!(
                        "| {} | {} | {:.0} | {:.0} | {} | {} | {} | {} | {} | {} | {:.0}% |",
                        args.label,
                        spec.name,
                        o.published as f64 / o.secs,
                        o.delivered as f64 / o.secs,
                        if spec.confirms.is_some() { format!("{:.0}", o.confirmed as f64 / o.secs) } else { "-".into() },
                        o.p50,
                        o.p99,
                        o.p999,
                        cpu,
                        rss,
                        o.own_cpu * 100.0
                    );
                }
                Err(e) => println!("| {} | {} | failed: {e:#} |", args.label, spec.name),
            }
        }
        if all || wanted.contains(&"idle-connections") {
            run_idle(&args).await?;
        }
        anyhow::Ok(())
    })
}
