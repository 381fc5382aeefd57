//! `--deep N`: fill one queue with N messages and no consumer, then drain
//! it, printing msg/s, the broker's RSS (peak while filling, idle, peak
//! while draining) and the data directory's size at each phase: the
//! backlog benchmark (a queue's length should cost disk, not RAM).

use std::path::Path;
use std::time::{Duration, Instant};

use amq_protocol::types::{AMQPValue, FieldTable};
use anyhow::Result;
use bytes::BytesMut;
use tokio::io::AsyncWriteExt;

use crate::amqp::{self, Client, Event};
use crate::args::Args;
use crate::fill::publish_confirmed;

/// Publishes unconfirmed at any time, at most.
const OUTSTANDING: u64 = 4000;
/// Consumer prefetch while draining; acks go out every half of it.
const PREFETCH: u16 = 2000;
/// The queue filled and drained.
const QUEUE: &str = "bench.deep";

/// Peak RSS seen while a phase runs, sampled between reads.
struct Peak {
    pid: Option<u32>,
    max: u64,
    last: Instant,
}

impl Peak {
    fn new(pid: Option<u32>) -> Peak {
        let mut p = Peak {
            pid,
            max: 0,
            last: Instant::now(),
        };
        p.sample();
        p
    }

    fn sample(&mut self) {
        let rss = crate::proc_stats::Sample::take(self.pid).broker_rss;
        self.max = self.max.max(rss.unwrap_or(0));
        self.last = Instant::now();
    }

    fn maybe(&mut self) {
        if self.last.elapsed() > Duration::from_millis(100) {
            self.sample();
        }
    }
}

fn mib(b: u64) -> f64 {
    b as f64 / f64::from(1 << 20)
}

fn dir_bytes(dir: &Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return 0;
    };
    rd.flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_bytes(&e.path()),
            _ => e.metadata().map(|m| m.len()).unwrap_or(0),
        })
        .sum()
}

fn report(args: &Args, phase: &str, n: u64, secs: f64, peak: &Peak) {
    let disk = args.data_dir.as_deref().map_or(String::new(), |d| {
        format!(", data dir {:.0} MiB", mib(dir_bytes(Path::new(d))))
    });
    println!(
        "{} {phase}: {n} msgs in {secs:.1} s = {:.0} msg/s, peak RSS {:.0} MiB{disk}",
        args.label,
        n as f64 / secs,
        mib(peak.max)
    );
}

/// `k=v,k=v` as declare arguments (long strings, or integers when they parse).
fn queue_args(spec: &str) -> Result<FieldTable> {
    let mut t = FieldTable::default();
    for kv in spec.split(',').filter(|s| !s.is_empty()) {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("queue argument {kv:?} is not k=v"))?;
        let v = match v.parse::<i64>() {
            Ok(n) => AMQPValue::LongLongInt(n),
            Err(_) => AMQPValue::LongString(v.into()),
        };
        t.insert(k.into(), v);
    }
    Ok(t)
}

/// Fill, idle 5 s, drain; see the module docs.
pub async fn run_deep(args: &Args, n: u64) -> Result<()> {
    let mut c = Client::connect(&args.addr, &args.user, &args.password).await?;
    c.declare(QUEUE, args.persistent, queue_args(&args.queue_args)?)
        .await?;
    if args.drain_only {
        return drain(args, &mut c, n).await;
    }
    c.confirm_select().await?;
    let body = vec![7u8; args.body_size];
    let mut peak = Peak::new(args.pid);
    let start = Instant::now();
    publish_confirmed(
        &mut c,
        QUEUE,
        &body,
        args.persistent,
        n,
        OUTSTANDING,
        || peak.maybe(),
    )
    .await?;
    report(args, "fill", n, start.elapsed().as_secs_f64(), &peak);
    tokio::time::sleep(Duration::from_secs(5)).await;
    let idle = Peak::new(args.pid);
    report(args, "idle (5 s after)", 0, 1.0, &idle);
    if args.no_drain {
        return Ok(());
    }
    drain(args, &mut c, n).await
}

/// Consume `n` messages with manual acks (multiple, every half prefetch).
async fn drain(args: &Args, c: &mut Client, n: u64) -> Result<()> {
    c.consume(QUEUE, false, PREFETCH).await?;
    let mut peak = Peak::new(args.pid);
    let start = Instant::now();
    let (mut got, mut last_acked) = (0u64, 0u64);
    let mut out = BytesMut::with_capacity(64);
    loop {
        // Deliveries may already be buffered behind consume-ok.
        let mut tag = 0;
        while let Some((ev, total)) = c.next_event()? {
            if let Event::Deliver(t) = ev {
                got += 1;
                tag = t;
            }
            bytes::Buf::advance(&mut c.buf, total);
        }
        if tag > 0 && (tag - last_acked >= u64::from(PREFETCH / 2) || got == n) {
            amqp::put_ack(&mut out, tag, true);
            c.wr.write_all(&out).await?;
            out.clear();
            last_acked = tag;
        }
        peak.maybe();
        if got >= n {
            break;
        }
        if !c.fill().await? {
            anyhow::bail!("broker closed the connection");
        }
    }
    report(args, "drain", n, start.elapsed().as_secs_f64(), &peak);
    Ok(())
}
