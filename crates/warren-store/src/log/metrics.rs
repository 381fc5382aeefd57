//! fsync latency histogram: written by the writer thread after every batch,
//! read by metrics scrapes without a lock.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds (seconds) of the fsync latency buckets.
pub const FSYNC_BUCKETS: [f64; 12] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];

/// A Prometheus-style histogram of fsync latencies, written by the log's
/// writer thread and read by metrics scrapes without a lock.
#[derive(Default)]
pub struct FsyncHistogram {
    /// Counts per bucket of [`FSYNC_BUCKETS`] (not cumulative).
    buckets: [AtomicU64; 12],
    count: AtomicU64,
    sum_nanos: AtomicU64,
}

impl FsyncHistogram {
    pub(crate) fn record(&self, d: Duration) {
        let secs = d.as_secs_f64();
        if let Some(i) = FSYNC_BUCKETS.iter().position(|b| secs <= *b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_nanos
            .fetch_add(d.as_nanos() as u64, Ordering::Relaxed);
    }

    /// Cumulative counts per bucket bound, the total count and the sum in seconds.
    pub fn snapshot(&self) -> (Vec<(f64, u64)>, u64, f64) {
        let mut acc = 0;
        let buckets = FSYNC_BUCKETS
            .iter()
            .zip(&self.buckets)
            .map(|(b, c)| {
                acc += c.load(Ordering::Relaxed);
                (*b, acc)
            })
            .collect();
        (
            buckets,
            self.count.load(Ordering::Relaxed),
            self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_is_cumulative_and_sums_seconds() {
        let h = FsyncHistogram::default();
        h.record(Duration::from_micros(50));
        h.record(Duration::from_millis(3));
        h.record(Duration::from_secs(2)); // past the last bound: counted, no bucket
        let (buckets, count, sum) = h.snapshot();
        assert_eq!(count, 3);
        assert!((sum - 2.00305).abs() < 1e-9);
        assert_eq!(buckets[0], (0.0001, 1));
        assert_eq!(buckets[5], (0.005, 2));
        assert_eq!(buckets[11], (1.0, 2));
    }
}
