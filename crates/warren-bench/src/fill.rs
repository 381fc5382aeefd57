//! `--fill N`: leave N persistent messages queued in `bench.fill`, for
//! recovery measurements.

use std::time::Instant;

use anyhow::Result;
use bytes::BytesMut;
use tokio::io::AsyncWriteExt;

use crate::amqp::{self, Client};
use crate::args::Args;

/// Publishes unconfirmed at any time, at most.
const OUTSTANDING: u64 = 1000;

/// Publish `n` persistent messages with confirms ([`OUTSTANDING`] at a
/// time) and leave them queued.
pub async fn run_fill(args: &Args, n: u64) -> Result<()> {
    let mut c = Client::connect(&args.addr, &args.user, &args.password).await?;
    c.queue("bench.fill", true).await?;
    c.confirm_select().await?;
    let start = Instant::now();
    publish_confirmed(
        &mut c,
        "bench.fill",
        &[7u8; 16],
        true,
        n,
        OUTSTANDING,
        || {},
    )
    .await?;
    println!(
        "filled bench.fill with {n} persistent messages in {:.1?}",
        start.elapsed()
    );
    Ok(())
}

/// Publish `n` messages to `queue` with confirms, at most `outstanding`
/// unconfirmed at a time; `after_read` runs after each read (sampling).
pub(crate) async fn publish_confirmed(
    c: &mut Client,
    queue: &str,
    body: &[u8],
    persistent: bool,
    n: u64,
    outstanding: u64,
    mut after_read: impl FnMut(),
) -> Result<()> {
    let mut out = BytesMut::with_capacity(1 << 20);
    let (mut sent, mut acked) = (0u64, 0u64);
    while acked < n {
        while sent < n && sent - acked < outstanding {
            amqp::put_publish(&mut out, "", queue, body, persistent);
            sent += 1;
        }
        if !out.is_empty() {
            c.wr.write_all(&out).await?;
            out.clear();
        }
        if !c.fill().await? {
            anyhow::bail!("broker closed the connection");
        }
        acked = take_confirms(&mut c.buf, acked)?;
        after_read();
    }
    Ok(())
}

/// Consume the whole frames in `buf`; the confirmed count after them.
fn take_confirms(buf: &mut BytesMut, mut acked: u64) -> Result<u64> {
    use warren_amqp::codec;
    loop {
        let Some(f) =
            codec::peek_frame(buf, amqp::FRAME_MAX + 8).map_err(|e| anyhow::anyhow!("{e}"))?
        else {
            return Ok(acked);
        };
        let total = f.size + codec::FRAME_OVERHEAD;
        let p = &buf[7..7 + f.size];
        if codec::method_id(p) == Some(amqp::BASIC_ACK) {
            let s = codec::parse_settle(p, amqp::BASIC_ACK.1)?;
            acked = if s.multiple { s.tag } else { acked.max(s.tag) };
        } else if codec::method_id(p) == Some(amqp::BASIC_NACK) {
            anyhow::bail!("broker nacked a publish");
        }
        bytes::Buf::advance(buf, total);
    }
}
