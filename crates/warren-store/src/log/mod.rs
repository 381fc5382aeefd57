//! The message log: persistent messages of durable queues, appended to
//! numbered segment files by one writer thread that fsyncs once per batch
//! (group commit). Publishers learn that their data is on disk through the
//! `synced` sequence number, which drives publisher confirms.
//!
//! Records are framed `len: u32 | crc32(payload): u32 | payload` (layout in
//! [`record`]). Recovery stops at the first record whose length, checksum
//! or layout does not hold, truncates the file there (a torn tail after
//! kill -9) and carries on; compaction reads segments through the same walk.
//!
//! Space is reclaimed by deleting whole segments (see [`reclaim`]).
//!
//! Files: `mod.rs` the API, [`record`] the codec and the CRC-checked walk,
//! [`state`] what the mutex guards, [`live`] the index of live messages,
//! [`writer`] the writer thread, [`reclaim`] compaction and deletion,
//! [`recover`] start-up recovery, [`summary`] the per-segment summaries it
//! reads instead of records, [`ranges`] the id runs it keeps, [`tail`]
//! a recovered queue's messages read back on demand, [`metrics`] the fsync
//! histogram.

mod live;
mod metrics;
mod ranges;
mod reclaim;
mod record;
mod recover;
mod state;
mod summary;
mod tail;
mod writer;

#[cfg(test)]
mod tests;

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::{Condvar, Mutex};
use tokio::sync::watch;

use crate::StoreError;
pub use metrics::{FsyncHistogram, FSYNC_BUCKETS};
use record::{encode_marker, encode_range_marker, Enqueue, Kind};
pub use recover::{decode_segment, recover_dir, Recovery};
pub use state::IdHasher;
use state::Pending;
pub use tail::QueueTail;

/// Segments roll over at this size.
pub const SEGMENT_SIZE: u64 = 64 << 20;

/// A durable queue's identity in the log.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct QueueKey {
    /// Vhost name.
    pub vhost: String,
    /// Queue name.
    pub queue: String,
}

/// A message as recovered from the log.
#[derive(Clone, Debug)]
pub struct Recovered {
    /// Log id (also the order within each queue).
    pub id: u64,
    /// Delivered before the restart and not acknowledged.
    pub redelivered: bool,
    /// Exchange it was published to (interned: one allocation per name).
    pub exchange: Arc<str>,
    /// Routing key then AMQP properties.
    pub meta: Bytes,
    /// Length of the routing key inside `meta`.
    pub key_len: u8,
    /// Body.
    pub body: Bytes,
}

/// Group-commit state published to connections.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SyncState {
    /// Every append with a sequence number up to this is on disk.
    pub synced: u64,
    /// The last batch failed to reach disk (e.g. disk full): appends up to
    /// this sequence number are lost and must be nacked.
    pub failed: u64,
}

/// The message log.
pub struct Log {
    dir: PathBuf,
    pending: Mutex<Pending>,
    wake: Condvar,
    state: watch::Sender<SyncState>,
    next_id: AtomicU64,
    segment_size: u64,
    healthy: AtomicBool,
    /// Set after a failed write: a lost batch may have held compaction
    /// copies, so no segment is deleted again until a restart re-derives
    /// what is live.
    reclaim_disabled: AtomicBool,
    /// A segment compaction found a corrupt record in (0: none): it is not
    /// read again until a restart (recovery cuts it there).
    corrupt_segment: AtomicU64,
    /// fsync latencies, for metrics.
    pub fsync: FsyncHistogram,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

fn segment_path(dir: &Path, n: u64) -> PathBuf {
    dir.join(format!("{n:010}.seg"))
}

/// Encode an enqueue record into `out`.
///
/// The reference encoding: tests check that [`Log::enqueue`], which frames
/// the record straight into the pending buffer, writes the same bytes.
#[cfg(test)]
pub(crate) fn encode_enqueue(
    out: &mut Vec<u8>,
    id: u64,
    queues: &[QueueKey],
    exchange: &str,
    meta: &[u8],
    key_len: u8,
    body: &[u8],
) {
    Enqueue {
        id,
        queues,
        exchange,
        meta,
        key_len,
        body,
        copy: false,
    }
    .encode(out);
}

impl Log {
    /// Bytes of segment files on disk (read from the directory, for metrics).
    pub fn disk_bytes(&self) -> u64 {
        fs::read_dir(&self.dir)
            .map(|rd| {
                rd.flatten()
                    .filter(|e| e.path().extension().is_some_and(|x| x == "seg"))
                    .filter_map(|e| e.metadata().ok())
                    .map(|m| m.len())
                    .sum()
            })
            .unwrap_or(0)
    }

    /// Open (creating) the log in `dir`, recover its contents and start the
    /// writer thread.
    pub fn open(dir: &Path) -> Result<(Arc<Log>, Recovery), StoreError> {
        Self::open_with(dir, SEGMENT_SIZE)
    }

    /// [`Log::open`] with another segment size (tests use small ones).
    pub fn open_with(dir: &Path, segment_size: u64) -> Result<(Arc<Log>, Recovery), StoreError> {
        let recover::Rebuilt {
            pending,
            next_id,
            mut recovery,
        } = recover::recover(dir)?;
        if !recover::take_clean_marker(dir)? {
            // Delivered markers are written without waiting for a sync, so
            // after a crash the newest may be missing: every message that
            // may have been delivered is flagged redelivered.
            for q in recovery.queues.values_mut() {
                q.set_all_redelivered();
            }
        }
        let (state, _) = watch::channel(SyncState::default());
        let log = Arc::new(Log {
            dir: dir.to_path_buf(),
            pending: Mutex::new(pending),
            wake: Condvar::new(),
            state,
            next_id: AtomicU64::new(next_id),
            segment_size,
            healthy: AtomicBool::new(true),
            reclaim_disabled: AtomicBool::new(false),
            corrupt_segment: AtomicU64::new(0),
            fsync: FsyncHistogram::default(),
            thread: Mutex::new(None),
        });
        let writer = log.clone();
        let handle = std::thread::Builder::new()
            .name("warren-store".into())
            .spawn(move || writer.run_writer())
            .map_err(|e| StoreError::io(dir, e))?;
        *log.thread.lock() = Some(handle);
        log.delete_dead_segments();
        Ok((log, recovery))
    }

    /// A fresh message id.
    pub fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Watch group-commit progress.
    pub fn subscribe(&self) -> watch::Receiver<SyncState> {
        self.state.subscribe()
    }

    /// Current group-commit progress.
    pub fn sync_state(&self) -> SyncState {
        *self.state.borrow()
    }

    /// False after a write failed (disk full); publishes should be refused.
    pub fn healthy(&self) -> bool {
        self.healthy.load(Ordering::Acquire)
    }

    /// Append message `id` held by `queues`, encoding its record straight
    /// into the pending buffer (the checksum is taken before the lock);
    /// returns the sequence number to wait for before confirming.
    pub fn enqueue(
        &self,
        id: u64,
        queues: &[QueueKey],
        exchange: &str,
        meta: &[u8],
        key_len: u8,
        body: &[u8],
    ) -> u64 {
        let rec = Enqueue {
            id,
            queues,
            exchange,
            meta,
            key_len,
            body,
            copy: false,
        };
        let framing = rec.framing();
        self.push_message(id, queues, framing.frame_len(), |buf| {
            rec.write(buf, framing)
        })
    }

    /// Append an encoded enqueue record (see [`encode_enqueue`]) for message
    /// `id` held by `queues`; returns the sequence number to wait for.
    ///
    /// Test-only: the old two-step path, kept to compare against.
    #[cfg(test)]
    pub(crate) fn append_enqueue(&self, id: u64, queues: &[QueueKey], record: &[u8]) -> u64 {
        self.push_message(id, queues, record.len(), |buf| {
            buf.extend_from_slice(record)
        })
    }

    /// Push the enqueue record of message `id` (`len` bytes, put by
    /// `write`) and index it as held by `queues`, under one lock.
    fn push_message(
        &self,
        id: u64,
        queues: &[QueueKey],
        len: usize,
        write: impl FnOnce(&mut Vec<u8>),
    ) -> u64 {
        let mut p = self.pending.lock();
        let qs: Vec<u32> = queues.iter().map(|q| p.intern(q)).collect();
        let seq = self.push_with(&mut p, len, write);
        // After the push: the record may have opened a new segment.
        let seg = p.segment;
        p.add_live(id, seg, qs);
        seq
    }

    /// A queue let go of message `id` (ack, reject, expiry, purge...);
    /// returns the sequence number to wait for when the removal must be
    /// durable before an acknowledgement (a cleared retained message).
    pub fn append_remove(&self, id: u64, q: &QueueKey) -> u64 {
        let mut rec = Vec::with_capacity(32 + q.vhost.len() + q.queue.len());
        encode_marker(&mut rec, Kind::Remove, id, q);
        let mut p = self.pending.lock();
        p.release(id, q);
        self.push(&mut p, &rec)
    }

    /// Queue `q` let go of every id in `first..end` it held (a purge or
    /// delete of a backlog): one record per batch of ids, the index updated
    /// a batch at a time so publishers are not held up for long. Returns the
    /// sequence number of the last record.
    pub fn append_remove_range(&self, first: u64, end: u64, q: &QueueKey) -> u64 {
        /// Ids released per lock.
        const BATCH: u64 = 1 << 16;
        let mut seq = 0;
        let mut at = first;
        while at < end {
            let to = end.min(at.saturating_add(BATCH));
            let mut rec = Vec::with_capacity(40 + q.vhost.len() + q.queue.len());
            encode_range_marker(&mut rec, at, to, q);
            let mut p = self.pending.lock();
            for id in at..to {
                p.release(id, q);
            }
            seq = self.push(&mut p, &rec);
            at = to;
        }
        seq
    }

    /// Message `id` was handed to a consumer; after a restart it comes back
    /// with redelivered=true. Not waited for.
    pub fn append_delivered(&self, id: u64, q: &QueueKey) {
        let mut rec = Vec::with_capacity(32 + q.vhost.len() + q.queue.len());
        encode_marker(&mut rec, Kind::Delivered, id, q);
        let mut p = self.pending.lock();
        self.push(&mut p, &rec);
    }

    /// Flush and stop the writer thread.
    pub fn close(&self) {
        self.pending.lock().closed = true;
        self.wake.notify_one();
        let Some(h) = self.thread.lock().take() else {
            return;
        };
        let _ = h.join();
        // Everything is synced: the delivered markers on disk are exact.
        if self.healthy() {
            if let Err(e) = recover::put_clean_marker(&self.dir) {
                tracing::warn!("cannot mark the message log as cleanly closed: {e}");
            }
        }
    }
}
