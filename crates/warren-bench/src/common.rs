//! Pieces the AMQP and MQTT load loops share: the reader task's read,
//! the publisher's wait for room, latency percentiles.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::Notify;

/// How long a reader waits before looking at its stop flag again.
pub const READ_POLL: Duration = Duration::from_millis(100);

/// One read for a publisher's reader task (confirms, PUBACKs): true when
/// bytes arrived; false at end of stream, on an error, or when `done` is
/// set and nothing came for [`READ_POLL`].
pub async fn read_until_done<R: AsyncRead + Unpin>(
    rd: &mut R,
    buf: &mut BytesMut,
    done: &AtomicBool,
) -> bool {
    loop {
        if buf.capacity() - buf.len() < 16 * 1024 {
            buf.reserve(64 * 1024);
        }
        match tokio::time::timeout(READ_POLL, rd.read_buf(buf)).await {
            Err(_) if done.load(Ordering::Relaxed) => return false,
            Err(_) => continue,
            Ok(Ok(n)) if n > 0 => return true,
            _ => return false,
        }
    }
}

/// A publisher with no room to send waits: a fixed-rate one a short
/// sleep, a windowed one until progress (or 2 ms).
pub async fn wait_for_room(fixed_rate: bool, progress: &Notify) {
    if fixed_rate {
        tokio::time::sleep(Duration::from_micros(200)).await;
    } else {
        let _ = tokio::time::timeout(Duration::from_millis(2), progress.notified()).await;
    }
}

/// The `p` quantile (0..=1) of sorted latencies; 0 when there are none.
pub fn percentile(sorted: &[u32], p: f64) -> u32 {
    if sorted.is_empty() {
        0
    } else {
        sorted[((sorted.len() - 1) as f64 * p) as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_pick_by_rank() {
        let lat: Vec<u32> = (1..=1000).collect();
        assert_eq!(percentile(&lat, 0.5), 500);
        assert_eq!(percentile(&lat, 0.99), 990);
        assert_eq!(percentile(&lat, 0.999), 999);
        assert_eq!(percentile(&[], 0.5), 0);
    }
}
