//! MQTT 3.1.1 load scenarios with raw framing (many packets per write), for
//! Warren and any MQTT broker (mosquitto): QoS 0 and 1, 1 -> 1 open and
//! closed loop, 100 publishers -> 1 wildcard subscriber, latency at a fixed
//! rate, idle connections.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::{Buf, BufMut, BytesMut};
use parking_lot::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::{percentile, read_until_done, wait_for_room};
use crate::mqtt_transport::{Reader, Target, Writer};
use crate::proc_stats::{self, Sample};

/// MQTT control packet types (the high nibble of the first byte).
const CONNECT: u8 = 1;
const CONNACK: u8 = 2;
pub(crate) const PUBLISH: u8 = 3;
pub(crate) const PUBACK: u8 = 4;
pub(crate) const SUBSCRIBE: u8 = 8;
pub(crate) const SUBACK: u8 = 9;
/// SUBSCRIBE's fixed-header flags (reserved bits 0010).
pub(crate) const SUBSCRIBE_FLAGS: u8 = 0x02;
/// CONNECT flags: clean session, user name, password.
const CLEAN_SESSION: u8 = 0x02;
const USER_NAME: u8 = 0x80;
const PASSWORD: u8 = 0x40;
/// Protocol level of MQTT 3.1.1.
const LEVEL_3_1_1: u8 = 4;

pub(crate) fn put_str(b: &mut BytesMut, s: &[u8]) {
    b.put_u16(s.len() as u16);
    b.put_slice(s);
}

pub(crate) fn put_len(b: &mut BytesMut, mut n: usize) {
    loop {
        let mut x = (n & 0x7f) as u8;
        n >>= 7;
        if n > 0 {
            x |= 0x80;
        }
        b.put_u8(x);
        if n == 0 {
            break;
        }
    }
}

pub(crate) fn packet(out: &mut BytesMut, first: u8, body: &[u8]) {
    out.put_u8(first);
    put_len(out, body.len());
    out.put_slice(body);
}

pub(crate) struct Conn {
    pub(crate) rd: Reader,
    pub(crate) wr: Writer,
    pub(crate) buf: BytesMut,
}

/// Write and flush (a WebSocket sends its message on flush; free on TCP).
pub(crate) async fn send(wr: &mut Writer, bytes: &[u8]) -> std::io::Result<()> {
    wr.write_all(bytes).await?;
    wr.flush().await
}

impl Conn {
    pub(crate) async fn connect(target: &Target, id: &str, user: &str, pass: &str) -> Result<Conn> {
        Conn::connect_session(target, id, (user, pass), true).await
    }

    /// CONNECT with clean session `clean` (false: a persistent session).
    pub(crate) async fn connect_session(
        target: &Target,
        id: &str,
        (user, pass): (&str, &str),
        clean: bool,
    ) -> Result<Conn> {
        let (rd, wr) = target.connect().await?;
        let mut c = Conn {
            rd,
            wr,
            buf: BytesMut::with_capacity(64 * 1024),
        };
        let mut b = BytesMut::new();
        put_str(&mut b, b"MQTT");
        b.put_u8(LEVEL_3_1_1);
        let clean = if clean { CLEAN_SESSION } else { 0 };
        b.put_u8(clean | USER_NAME | PASSWORD);
        b.put_u16(0); // no keep-alive
        put_str(&mut b, id.as_bytes());
        put_str(&mut b, user.as_bytes());
        put_str(&mut b, pass.as_bytes());
        let mut out = BytesMut::new();
        packet(&mut out, CONNECT << 4, &b);
        send(&mut c.wr, &out).await?;
        let (kind, body) = c.next_packet(Duration::from_secs(10)).await?;
        if kind != CONNACK || body.get(1) != Some(&0) {
            bail!("CONNACK refused: {body:?}");
        }
        Ok(c)
    }

    pub(crate) async fn next_packet(&mut self, wait: Duration) -> Result<(u8, Vec<u8>)> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some((first, hdr, len)) = peek(&self.buf) {
                let body = self.buf[hdr..hdr + len].to_vec();
                self.buf.advance(hdr + len);
                return Ok((first >> 4, body));
            }
            let n = tokio::time::timeout_at(deadline, self.rd.read_buf(&mut self.buf))
                .await
                .context("timeout")??;
            if n == 0 {
                bail!("broker closed the connection");
            }
        }
    }

    pub(crate) async fn subscribe(&mut self, filter: &str, qos: u8) -> Result<()> {
        let mut b = BytesMut::new();
        b.put_u16(1);
        put_str(&mut b, filter.as_bytes());
        b.put_u8(qos);
        let mut out = BytesMut::new();
        packet(&mut out, SUBSCRIBE << 4 | SUBSCRIBE_FLAGS, &b);
        send(&mut self.wr, &out).await?;
        let (kind, _) = self.next_packet(Duration::from_secs(10)).await?;
        if kind != SUBACK {
            bail!("expected SUBACK");
        }
        Ok(())
    }
}

/// (first byte, header length, body length) of a complete packet.
pub(crate) fn peek(b: &[u8]) -> Option<(u8, usize, usize)> {
    let mut len = 0usize;
    let mut i = 1;
    loop {
        let x = *b.get(i)?;
        len |= ((x & 0x7f) as usize) << (7 * (i - 1));
        i += 1;
        if x & 0x80 == 0 {
            break;
        }
    }
    (b.len() >= i + len).then_some((b[0], i, len))
}

pub(crate) fn put_publish(out: &mut BytesMut, topic: &str, qos: u8, pkid: u16, payload: &[u8]) {
    out.put_u8(PUBLISH << 4 | (qos << 1));
    let len = 2 + topic.len() + if qos > 0 { 2 } else { 0 } + payload.len();
    put_len(out, len);
    put_str(out, topic.as_bytes());
    if qos > 0 {
        out.put_u16(pkid);
    }
    out.put_slice(payload);
}

/// One MQTT scenario.
#[derive(Clone, Debug)]
pub struct Spec {
    /// Name in the output.
    pub name: &'static str,
    /// QoS of publishes and the subscription.
    pub qos: u8,
    /// Publisher connections.
    pub publishers: usize,
    /// Closed loop window (messages in flight).
    pub window: Option<u64>,
    /// Fixed total publish rate.
    pub rate: Option<u64>,
}

/// The MQTT scenarios.
pub fn scenarios() -> Vec<Spec> {
    let base = Spec {
        name: "",
        qos: 0,
        publishers: 1,
        window: None,
        rate: None,
    };
    vec![
        Spec {
            name: "mqtt-qos0-open",
            ..base.clone()
        },
        Spec {
            name: "mqtt-qos0-closed",
            window: Some(5000),
            ..base.clone()
        },
        Spec {
            name: "mqtt-qos1-open",
            qos: 1,
            ..base.clone()
        },
        Spec {
            name: "mqtt-qos1-closed",
            qos: 1,
            window: Some(5000),
            ..base.clone()
        },
        Spec {
            name: "mqtt-fanin-100pub",
            publishers: 100,
            window: Some(5000),
            ..base.clone()
        },
        Spec {
            name: "mqtt-latency-5k",
            qos: 1,
            rate: Some(5000),
            ..base
        },
    ]
}

struct Shared {
    published: AtomicU64,
    delivered: AtomicU64,
    stop: AtomicBool,
    lat: Mutex<Vec<u32>>,
    epoch: Instant,
    progress: tokio::sync::Notify,
}

/// What one run measured.
pub struct Outcome {
    /// msg/s published.
    pub published: f64,
    /// msg/s delivered.
    pub delivered: f64,
    /// Latency percentiles (us).
    pub p50: u32,
    /// p99.
    pub p99: u32,
    /// Broker CPU fraction and RSS.
    pub broker: Option<(f64, u64)>,
    /// Generator CPU fraction.
    pub own_cpu: f64,
}

async fn subscriber(mut c: Conn, qos: u8, shared: Arc<Shared>) -> Result<()> {
    let mut acks = BytesMut::new();
    let mut local = Vec::with_capacity(1 << 16);
    while !shared.stop.load(Ordering::Relaxed) {
        match tokio::time::timeout(Duration::from_millis(100), c.rd.read_buf(&mut c.buf)).await {
            Err(_) => continue,
            Ok(Ok(0)) => break,
            Ok(Err(e)) => return Err(e.into()),
            Ok(Ok(_)) => {}
        }
        let now = shared.epoch.elapsed().as_nanos() as u64;
        let mut n = 0;
        while let Some((first, hdr, len)) = peek(&c.buf) {
            if first >> 4 == PUBLISH {
                let body = &c.buf[hdr..hdr + len];
                let tl = u16::from_be_bytes([body[0], body[1]]) as usize;
                let q = (first >> 1) & 3;
                let mut p = 2 + tl;
                if q > 0 {
                    let pkid = u16::from_be_bytes([body[p], body[p + 1]]);
                    p += 2;
                    acks.put_slice(&[PUBACK << 4, 2]);
                    acks.put_u16(pkid);
                }
                if body.len() >= p + 8 && local.len() < 1 << 16 {
                    let sent = u64::from_le_bytes(body[p..p + 8].try_into()?);
                    local.push((now.saturating_sub(sent) / 1000) as u32);
                }
                n += 1;
            }
            c.buf.advance(hdr + len);
        }
        if !acks.is_empty() {
            send(&mut c.wr, &acks).await?;
            acks.clear();
        }
        shared.delivered.fetch_add(n, Ordering::Relaxed);
        shared.progress.notify_waiters();
        if local.len() >= 1 << 16 {
            shared.lat.lock().extend_from_slice(&local);
            local.clear();
        }
        let _ = qos;
    }
    shared.lat.lock().extend_from_slice(&local);
    Ok(())
}

async fn publisher(
    c: Conn,
    spec: Spec,
    topic: String,
    shared: Arc<Shared>,
    deadline: Instant,
) -> Result<()> {
    let acked = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let Conn { rd, mut wr, buf } = c;
    let reader = tokio::spawn(count_pubacks(
        rd,
        buf,
        acked.clone(),
        shared.clone(),
        done.clone(),
    ));
    let mut out = BytesMut::with_capacity(1 << 16);
    let mut payload = [0u8; 16];
    let mut sent = 0u64;
    let mut pkid = 0u16;
    let start = Instant::now();
    let per_pub = spec.rate.map(|r| r as f64 / spec.publishers as f64);
    while Instant::now() < deadline {
        let mut batch = 100u64;
        if let Some(w) = spec.window {
            let inflight = shared
                .published
                .load(Ordering::Relaxed)
                .saturating_sub(shared.delivered.load(Ordering::Relaxed));
            batch = batch.min(w.saturating_sub(inflight) / spec.publishers as u64);
        }
        if spec.qos > 0 {
            // At most 1000 unacknowledged QoS 1 publishes per connection.
            batch = batch.min(1000u64.saturating_sub(sent - acked.load(Ordering::Relaxed)));
        }
        if let Some(r) = per_pub {
            batch = batch.min(((start.elapsed().as_secs_f64() * r) as u64).saturating_sub(sent));
        }
        if batch == 0 {
            wait_for_room(spec.rate.is_some(), &shared.progress).await;
            continue;
        }
        for _ in 0..batch {
            pkid = pkid.wrapping_add(1).max(1);
            let now = shared.epoch.elapsed().as_nanos() as u64;
            payload[..8].copy_from_slice(&now.to_le_bytes());
            put_publish(&mut out, &topic, spec.qos, pkid, &payload);
        }
        send(&mut wr, &out).await?;
        out.clear();
        sent += batch;
        shared.published.fetch_add(batch, Ordering::Relaxed);
    }
    done.store(true, Ordering::Relaxed);
    let _ = reader.await;
    Ok(())
}

/// The publisher's read side: count PUBACKs until `done`.
async fn count_pubacks(
    mut rd: Reader,
    mut buf: BytesMut,
    acked: Arc<AtomicU64>,
    shared: Arc<Shared>,
    done: Arc<AtomicBool>,
) {
    while read_until_done(&mut rd, &mut buf, &done).await {
        let mut n = 0;
        while let Some((first, hdr, len)) = peek(&buf) {
            if first >> 4 == PUBACK {
                n += 1;
            }
            buf.advance(hdr + len);
        }
        acked.fetch_add(n, Ordering::Relaxed);
        shared.progress.notify_waiters();
    }
}

/// Run one scenario against `target`.
pub async fn run(
    target: &Target,
    user: &str,
    pass: &str,
    pid: Option<u32>,
    seconds: u64,
    spec: &Spec,
) -> Result<Outcome> {
    let shared = Arc::new(Shared {
        published: AtomicU64::new(0),
        delivered: AtomicU64::new(0),
        stop: AtomicBool::new(false),
        lat: Mutex::new(Vec::new()),
        epoch: Instant::now(),
        progress: tokio::sync::Notify::new(),
    });
    let tag = spec.name;
    let mut sub = Conn::connect(target, &format!("{tag}-{}-sub", target.via()), user, pass).await?;
    let filter = if spec.publishers > 1 {
        format!("bench/{tag}/+/data")
    } else {
        format!("bench/{tag}")
    };
    sub.subscribe(&filter, spec.qos).await?;
    let sub_task = tokio::spawn(subscriber(sub, spec.qos, shared.clone()));
    let mut pubs = Vec::new();
    for i in 0..spec.publishers {
        pubs.push(
            Conn::connect(
                target,
                &format!("{tag}-{}-pub{i}", target.via()),
                user,
                pass,
            )
            .await?,
        );
    }
    let before = Sample::take(pid);
    let start = Instant::now();
    let deadline = start + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for (i, c) in pubs.into_iter().enumerate() {
        let topic = if spec.publishers > 1 {
            format!("bench/{tag}/{i}/data")
        } else {
            format!("bench/{tag}")
        };
        tasks.push(tokio::spawn(publisher(
            c,
            spec.clone(),
            topic,
            shared.clone(),
            deadline,
        )));
    }
    tokio::time::sleep_until(deadline.into()).await;
    let secs = start.elapsed().as_secs_f64();
    let delivered = shared.delivered.load(Ordering::Relaxed);
    let after = Sample::take(pid);
    for t in tasks {
        t.await??;
    }
    shared.stop.store(true, Ordering::Relaxed);
    sub_task.await??;
    let mut lat = std::mem::take(&mut *shared.lat.lock());
    lat.sort_unstable();
    Ok(Outcome {
        published: shared.published.load(Ordering::Relaxed) as f64 / secs,
        delivered: delivered as f64 / secs,
        p50: percentile(&lat, 0.5),
        p99: percentile(&lat, 0.99),
        broker: proc_stats::broker_usage(&before, &after, secs),
        own_cpu: proc_stats::own_cpu(&before, &after, secs),
    })
}

/// Open `n` idle MQTT connections and report broker RSS per connection.
pub async fn idle(
    target: &Target,
    user: &str,
    pass: &str,
    pid: Option<u32>,
    n: usize,
) -> Result<Option<f64>> {
    let before = Sample::take(pid);
    let mut conns = Vec::with_capacity(n);
    for i in 0..n {
        conns.push(Conn::connect(target, &format!("idle-{}-{i}", target.via()), user, pass).await?);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = Sample::take(pid);
    drop(conns);
    Ok(match (before.broker_rss, after.broker_rss) {
        (Some(a), Some(b)) => Some(b.saturating_sub(a) as f64 / 1024.0 / n as f64),
        _ => None,
    })
}
