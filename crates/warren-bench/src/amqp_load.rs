//! Running one AMQP scenario: declare its topology, start a consumer per
//! queue and the publishers, measure for the set time, tear down.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use bytes::BytesMut;
use parking_lot::Mutex;
use tokio::io::AsyncWriteExt;

use crate::amqp::{self, Client, Event};
use crate::args::Args;
use crate::common::{percentile, read_until_done, wait_for_room};
use crate::mqtt_transport::{Reader, Writer};
use crate::proc_stats::{self, Sample};
use crate::scenarios::{binding_key, publish_key, Spec};

/// Latencies a consumer keeps locally before handing them over.
const LOCAL_LATENCIES: usize = 1 << 16;
/// Latencies kept in all, at most.
const MAX_LATENCIES: usize = 20_000_000;

/// Counters the tasks of one run share.
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

/// What one AMQP run measured.
pub struct Outcome {
    /// Messages published.
    pub published: u64,
    /// Messages delivered within the measured time.
    pub delivered: u64,
    /// Publisher confirms received.
    pub confirmed: u64,
    /// The measured time.
    pub secs: f64,
    /// Latency percentiles (us).
    pub p50: u32,
    /// p99.
    pub p99: u32,
    /// p99.9.
    pub p999: u32,
    /// Broker CPU fraction and RSS.
    pub broker: Option<(f64, u64)>,
    /// Generator CPU fraction.
    pub own_cpu: f64,
}

async fn run_consumer(args: Args, spec: Spec, queue: String, shared: Arc<Shared>) -> Result<()> {
    let mut c = Client::connect(&args.addr, &args.user, &args.password).await?;
    c.consume(&queue, spec.no_ack, spec.prefetch).await?;
    let ack_every = (spec.prefetch as u64 / 2).max(1);
    let mut since_ack = 0u64;
    let mut last_tag = 0u64;
    let mut out = BytesMut::new();
    let mut local = Vec::with_capacity(LOCAL_LATENCIES);
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
                    if local.len() < LOCAL_LATENCIES {
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
        if local.len() >= LOCAL_LATENCIES {
            let mut l = shared.latencies.lock();
            if l.len() < MAX_LATENCIES {
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
    let confirmed_local = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    if spec.confirms.is_some() {
        c.confirm_select().await?;
    }
    let Client { rd, mut wr, buf } = c;
    // Confirms arrive on the read side; count them in a task of their own.
    let reader = tokio::spawn(count_confirms(
        rd,
        buf,
        confirmed_local.clone(),
        shared.clone(),
        done.clone(),
    ));
    let sent = publish_until(
        &mut wr,
        &spec,
        &queue_names,
        &shared,
        &confirmed_local,
        deadline,
    )
    .await?;
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

/// Publish in batches as the window, confirms and rate allow, until the
/// deadline; returns how many were sent.
async fn publish_until(
    wr: &mut Writer,
    spec: &Spec,
    queue_names: &[String],
    shared: &Shared,
    confirmed_local: &AtomicU64,
    deadline: Instant,
) -> Result<u64> {
    let fanout = if spec.kind == "fanout" {
        spec.queues as u64
    } else {
        1
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
            wait_for_room(spec.rate.is_some(), &shared.progress).await;
            continue;
        }
        for _ in 0..batch {
            let key = publish_key(spec, sent, queue_names);
            let now = shared.epoch.elapsed().as_nanos() as u64;
            body[..8].copy_from_slice(&now.to_le_bytes());
            amqp::put_publish(&mut out, spec.exchange, &key, &body, spec.persistent);
            sent += 1;
        }
        wr.write_all(&out).await?;
        out.clear();
        shared.published.fetch_add(batch, Ordering::Relaxed);
    }
    Ok(sent)
}

/// The publisher's read side: count basic.ack confirms until `done`.
async fn count_confirms(
    mut rd: Reader,
    mut buf: BytesMut,
    confirmed_local: Arc<AtomicU64>,
    shared: Arc<Shared>,
    done: Arc<AtomicBool>,
) {
    let mut acked = 0u64;
    while read_until_done(&mut rd, &mut buf, &done).await {
        while let Some((tag, multiple, used)) = next_confirm(&mut buf) {
            let newly = if multiple {
                tag.saturating_sub(acked)
            } else {
                1
            };
            acked = acked.max(tag);
            confirmed_local.fetch_add(newly, Ordering::Relaxed);
            shared.confirmed.fetch_add(newly, Ordering::Relaxed);
            shared.progress.notify_waiters();
            bytes::Buf::advance(&mut buf, used);
        }
    }
}

/// The next basic.ack in `buf` (tag, multiple, frame size), skipping
/// other frames; None until a whole frame is there.
fn next_confirm(buf: &mut BytesMut) -> Option<(u64, bool, usize)> {
    loop {
        let f = warren_amqp::codec::peek_frame(buf, amqp::FRAME_MAX + 8).ok()??;
        let total = f.size + warren_amqp::codec::FRAME_OVERHEAD;
        let p = &buf[7..7 + f.size];
        if f.kind == warren_amqp::codec::FRAME_METHOD
            && warren_amqp::codec::method_id(p) == Some(amqp::BASIC_ACK)
        {
            let s = warren_amqp::codec::parse_settle(p, amqp::BASIC_ACK.1).ok()?;
            return Some((s.tag, s.multiple, total));
        }
        bytes::Buf::advance(buf, total);
    }
}

/// Declare the scenario's exchange, queues and bindings; returns the queue names.
async fn declare(setup: &mut Client, spec: &Spec) -> Result<Vec<String>> {
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
    Ok(queue_names)
}

/// Run one scenario for `args.seconds` and measure it.
pub async fn run_scenario(args: &Args, spec: &Spec) -> Result<Outcome> {
    let mut setup = Client::connect(&args.addr, &args.user, &args.password).await?;
    let queue_names = declare(&mut setup, spec).await?;
    let shared = Arc::new(Shared {
        published: AtomicU64::new(0),
        delivered: AtomicU64::new(0),
        confirmed: AtomicU64::new(0),
        stop: AtomicBool::new(false),
        latencies: Mutex::new(Vec::new()),
        epoch: Instant::now(),
        progress: tokio::sync::Notify::new(),
    });
    let consumers: Vec<_> = queue_names
        .iter()
        .map(|q| {
            let consumer = run_consumer(args.clone(), spec.clone(), q.clone(), shared.clone());
            tokio::spawn(consumer)
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = Sample::take(args.pid);
    let start = Instant::now();
    let deadline = start + Duration::from_secs(args.seconds);
    let pubs: Vec<_> = (0..spec.publishers)
        .map(|_| {
            let publisher = run_publisher(
                args.clone(),
                spec.clone(),
                queue_names.clone(),
                shared.clone(),
                deadline,
            );
            tokio::spawn(publisher)
        })
        .collect();
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
    Ok(Outcome {
        published: shared.published.load(Ordering::Relaxed),
        delivered: delivered_in_window,
        confirmed: shared.confirmed.load(Ordering::Relaxed),
        secs,
        p50: percentile(&lat, 0.5),
        p99: percentile(&lat, 0.99),
        p999: percentile(&lat, 0.999),
        broker: proc_stats::broker_usage(&before, &after, secs),
        own_cpu: proc_stats::own_cpu(&before, &after, secs),
    })
}

/// Open `args.idle_connections` AMQP connections and hold them for 2 s;
/// the broker's RSS before and after, when its pid is known.
pub async fn run_idle(args: &Args) -> Result<Option<(u64, u64)>> {
    let before = Sample::take(args.pid);
    let mut conns = Vec::with_capacity(args.idle_connections);
    for _ in 0..args.idle_connections {
        conns.push(Client::connect(&args.addr, &args.user, &args.password).await?);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = Sample::take(args.pid);
    let rss = before.broker_rss.zip(after.broker_rss);
    drop(conns);
    Ok(rss)
}
