//! QoS 2 publish rate, clean against persistent sessions
//! (`mqtt-qos2-clean`, `mqtt-qos2-persistent`): each publisher keeps up to
//! 100 QoS 2 flows in flight (Warren's default Receive Maximum), answers
//! PUBREC with PUBREL, and counts a message once its PUBCOMP arrives. A
//! persistent session (clean session 0) makes Warren hold each packet id
//! through its log, so the PUBREC waits for the disk; a clean one keeps it
//! in memory.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use bytes::{Buf, BufMut, BytesMut};
use tokio::io::AsyncReadExt;

use crate::mqtt::{peek, put_publish, send, Conn, PUBLISH};
use crate::mqtt_transport::Target;
use crate::proc_stats::{self, Sample};

const PUBREC: u8 = 5;
const PUBREL: u8 = 6;
const PUBCOMP: u8 = 7;
/// QoS 2 flows in flight per publisher.
const WINDOW: usize = 100;

/// What one run measured: completed flows per second, broker CPU and RSS.
pub struct Outcome {
    /// msg/s whose PUBCOMP arrived before the deadline.
    pub rate: f64,
    /// Broker CPU fraction and RSS.
    pub broker: Option<(f64, u64)>,
}

/// Run `publishers` QoS 2 publishers for `seconds`.
pub async fn run(
    target: &Target,
    creds: (&str, &str),
    pid: Option<u32>,
    (seconds, publishers, persistent): (u64, usize, bool),
) -> Result<Outcome> {
    let kind = if persistent { "persistent" } else { "clean" };
    let mut conns = Vec::new();
    for i in 0..publishers {
        let id = format!("qos2-{kind}-{}-{i}", target.via());
        conns.push(Conn::connect_session(target, &id, creds, !persistent).await?);
    }
    let before = Sample::take(pid);
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for (i, c) in conns.into_iter().enumerate() {
        let topic = format!("bench/qos2/{kind}/{i}");
        tasks.push(tokio::spawn(publish(c, topic, deadline)));
    }
    let mut done = 0u64;
    for t in tasks {
        done += t.await??;
    }
    let after = Sample::take(pid);
    let secs = seconds as f64;
    Ok(Outcome {
        rate: done as f64 / secs,
        broker: proc_stats::broker_usage(&before, &after, secs),
    })
}

/// One publisher until `deadline`; the flows completed by then.
async fn publish(mut c: Conn, topic: String, deadline: Instant) -> Result<u64> {
    let (mut inflight, mut done, mut pkid) = (0usize, 0u64, 0u16);
    let mut out = BytesMut::with_capacity(1 << 14);
    let payload = [7u8; 16];
    while Instant::now() < deadline {
        while inflight < WINDOW {
            pkid = pkid.wrapping_add(1).max(1);
            put_publish(&mut out, &topic, 2, pkid, &payload);
            inflight += 1;
        }
        if !out.is_empty() {
            send(&mut c.wr, &out).await?;
            out.clear();
        }
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, c.rd.read_buf(&mut c.buf)).await {
            Err(_) => break,
            Ok(Ok(0)) => bail!("connection closed"),
            Ok(Err(e)) => return Err(e.into()),
            Ok(Ok(_)) => {}
        }
        while let Some((first, hdr, len)) = peek(&c.buf) {
            let id = u16::from_be_bytes([c.buf[hdr], c.buf[hdr + 1]]);
            match first >> 4 {
                PUBREC => {
                    out.put_slice(&[PUBREL << 4 | 2, 2]);
                    out.put_u16(id);
                }
                PUBCOMP => {
                    inflight -= 1;
                    done += 1;
                }
                PUBLISH => bail!("unexpected PUBLISH"),
                _ => {}
            }
            c.buf.advance(hdr + len);
        }
    }
    Ok(done)
}
