//! The `retained` MQTT scenario (issue 12): fill N retained topics
//! `sensors/<i/1000>/<i>`, then measure the latency of a SUBSCRIBE to one
//! exact topic until its retained message arrives, and the rate at which a
//! SUBSCRIBE to `#` streams all of them (with the broker's RSS meanwhile).
//! Raw MQTT 3.1.1 framing, so it runs against any broker (mosquitto).

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::{Buf, BufMut, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::percentile;
use crate::mqtt::{
    packet, peek, put_len, put_str, Conn, PUBACK, PUBLISH, SUBSCRIBE, SUBSCRIBE_FLAGS,
};
use crate::mqtt_transport::Target;
use crate::proc_stats::Sample;

/// PUBLISH flag bit RETAIN.
const RETAIN: u8 = 0x01;
/// PUBLISH QoS 1 flag bits.
const QOS1: u8 = 1 << 1;
/// Publishes written per batch while filling.
const BATCH: u64 = 2000;
/// How long the `#` stream may take before the run fails.
const STREAM_LIMIT: Duration = Duration::from_secs(300);

/// What the scenario measured.
pub struct Outcome {
    /// Retained topics filled.
    pub topics: u64,
    /// msg/s while filling (until the final PUBACK).
    pub fill_rate: f64,
    /// Exact-topic SUBSCRIBE -> retained PUBLISH, p50 and p99 (us).
    pub exact: (u32, u32),
    /// Subscribes measured.
    pub subscribes: usize,
    /// msg/s of the `#` stream (SUBSCRIBE written to last message read).
    pub all_rate: f64,
    /// Broker RSS after the fill and the highest seen during the stream.
    pub rss: Option<(u64, u64)>,
}

fn topic(i: u64) -> String {
    format!("sensors/{}/{i}", i / 1000)
}

fn put_retained(out: &mut BytesMut, topic: &str, qos1: Option<u16>, payload: &[u8]) {
    let flags = RETAIN | if qos1.is_some() { QOS1 } else { 0 };
    out.put_u8(PUBLISH << 4 | flags);
    let len = 2 + topic.len() + if qos1.is_some() { 2 } else { 0 } + payload.len();
    put_len(out, len);
    put_str(out, topic.as_bytes());
    if let Some(id) = qos1 {
        out.put_u16(id);
    }
    out.put_slice(payload);
}

/// Publish `n` retained QoS 0 messages, then one QoS 1 whose PUBACK says
/// every earlier one was handled (one connection: in order).
async fn fill(c: &mut Conn, n: u64) -> Result<f64> {
    let start = Instant::now();
    let mut out = BytesMut::with_capacity(1 << 20);
    let mut i = 0;
    while i + 1 < n {
        let end = (i + BATCH).min(n - 1);
        for j in i..end {
            put_retained(&mut out, &topic(j), None, &j.to_be_bytes());
        }
        c.wr.write_all(&out).await?;
        out.clear();
        i = end;
    }
    put_retained(&mut out, &topic(n - 1), Some(1), &(n - 1).to_be_bytes());
    c.wr.write_all(&out).await?;
    loop {
        let (kind, _) = c.next_packet(Duration::from_secs(300)).await?;
        if kind == PUBACK {
            break;
        }
    }
    Ok(n as f64 / start.elapsed().as_secs_f64())
}

fn subscribe_packet(pkid: u16, filter: &str) -> BytesMut {
    let mut b = BytesMut::new();
    b.put_u16(pkid);
    put_str(&mut b, filter.as_bytes());
    b.put_u8(0);
    let mut out = BytesMut::new();
    packet(&mut out, SUBSCRIBE << 4 | SUBSCRIBE_FLAGS, &b);
    out
}

/// SUBSCRIBE to `count` exact topics spread over the `n` filled, each
/// timed until its retained PUBLISH arrives.
async fn exact(c: &mut Conn, n: u64, count: usize) -> Result<(u32, u32)> {
    let mut lat = Vec::with_capacity(count);
    for k in 0..count as u64 {
        let i = k.wrapping_mul(7919) % n;
        let pkid = (k % 65535 + 1) as u16;
        let sub = subscribe_packet(pkid, &topic(i));
        let t = Instant::now();
        c.wr.write_all(&sub).await?;
        loop {
            let (kind, _) = c.next_packet(Duration::from_secs(10)).await?;
            if kind == PUBLISH {
                break;
            }
        }
        lat.push(t.elapsed().as_micros().min(u128::from(u32::MAX)) as u32);
    }
    lat.sort_unstable();
    Ok((percentile(&lat, 0.5), percentile(&lat, 0.99)))
}

/// SUBSCRIBE to `#` and count PUBLISH packets until `n` came; returns the
/// rate and the highest broker RSS seen.
async fn everything(c: &mut Conn, n: u64, pid: Option<u32>) -> Result<(f64, Option<u64>)> {
    let start = Instant::now();
    c.wr.write_all(&subscribe_packet(1, "#")).await?;
    let mut seen = 0u64;
    let mut peak = Sample::take(pid).broker_rss;
    let mut next_sample = 65_536;
    while seen < n {
        while let Some((first, hdr, len)) = peek(&c.buf) {
            if first >> 4 == PUBLISH {
                seen += 1;
            }
            c.buf.advance(hdr + len);
        }
        if seen >= n {
            break;
        }
        if seen >= next_sample {
            next_sample += 65_536;
            peak = peak.max(Sample::take(pid).broker_rss);
        }
        if start.elapsed() > STREAM_LIMIT {
            bail!("only {seen} of {n} retained messages in {STREAM_LIMIT:?}");
        }
        if c.buf.capacity() - c.buf.len() < 64 * 1024 {
            c.buf.reserve(256 * 1024);
        }
        let got = tokio::time::timeout(Duration::from_secs(10), c.rd.read_buf(&mut c.buf))
            .await
            .context("no retained message for 10 s")??;
        if got == 0 {
            bail!("broker closed the connection after {seen} messages");
        }
    }
    let rate = n as f64 / start.elapsed().as_secs_f64();
    Ok((rate, peak.max(Sample::take(pid).broker_rss)))
}

/// Run the scenario: fill, exact subscribes, `#`.
pub async fn run(
    addr: &str,
    (user, pass): (&str, &str),
    pid: Option<u32>,
    n: u64,
    subscribes: usize,
) -> Result<Outcome> {
    if n == 0 {
        bail!("--retained must be at least 1");
    }
    let target = Target {
        addr: addr.to_string(),
        ws: false,
    };
    let mut p = Conn::connect(&target, "bench-retained-fill", user, pass).await?;
    let fill_rate = fill(&mut p, n).await?;
    let after_fill = Sample::take(pid).broker_rss;
    let mut s = Conn::connect(&target, "bench-retained-exact", user, pass).await?;
    let exact = exact(&mut s, n, subscribes).await?;
    let mut all = Conn::connect(&target, "bench-retained-all", user, pass).await?;
    let (all_rate, peak) = everything(&mut all, n, pid).await?;
    Ok(Outcome {
        topics: n,
        fill_rate,
        exact,
        subscribes,
        all_rate,
        rss: after_fill.zip(peak),
    })
}
