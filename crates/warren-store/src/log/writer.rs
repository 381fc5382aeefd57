//! The writer side of the log: appending records to the pending buffer
//! under the mutex, and the writer thread that writes each batch and
//! fsyncs it once (group commit) before publishing the new `synced`.
//!
//! Ordering: records reach the files in push order, and a batch's sequence
//! number is published only after its fsync, so a removal never reaches
//! disk before its enqueue and no confirm precedes its fsync.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use super::state::Pending;
use super::{segment_path, Log};
use crate::StoreError;

/// Open segment files by number (at most the current one, in practice).
type Files = BTreeMap<u64, File>;

impl Log {
    /// Append a ready-made record; returns its sequence number.
    pub(super) fn push(&self, p: &mut Pending, record: &[u8]) -> u64 {
        self.push_with(p, record.len(), |buf| buf.extend_from_slice(record))
    }

    /// Append a record of `len` bytes that `write` puts at the end of the
    /// buffer it is given, rolling to a new segment first when the record
    /// would overflow this one; returns its sequence number.
    pub(super) fn push_with(
        &self,
        p: &mut Pending,
        len: usize,
        write: impl FnOnce(&mut Vec<u8>),
    ) -> u64 {
        if p.segment_bytes > 0 && p.segment_bytes + len as u64 > self.segment_size {
            p.segment += 1;
            p.segment_bytes = 0;
            let seg = p.segment;
            p.segs.entry(seg).or_default();
        }
        p.segment_bytes += len as u64;
        let seg = p.segment;
        if !matches!(p.chunks.last(), Some((s, _)) if *s == seg) {
            p.chunks.push((seg, Vec::with_capacity(len)));
        }
        let buf = &mut p.chunks.last_mut().expect("pushed above").1;
        let before = buf.len();
        write(buf);
        debug_assert_eq!(buf.len() - before, len, "record length");
        let was_idle = p.chunks.len() == 1 && before == 0;
        p.seq += 1;
        if was_idle {
            self.wake.notify_one();
        }
        p.seq
    }

    /// The writer thread: take what is pending, write and fsync it, publish
    /// the result, then reclaim space. Returns once closed and drained.
    pub(super) fn run_writer(self: Arc<Self>) {
        let mut files = Files::new();
        loop {
            let (chunks, seq) = {
                let mut p = self.pending.lock();
                while p.chunks.is_empty() && !p.closed {
                    self.wake.wait(&mut p);
                }
                if p.chunks.is_empty() && p.closed {
                    return;
                }
                (std::mem::take(&mut p.chunks), p.seq)
            };
            let result = self.write_batch(&mut files, chunks);
            self.publish(seq, result);
            self.delete_dead_segments_with(&mut files);
            // Copies made now are written by the next batch; the segment
            // they came from is deleted only after that batch succeeded.
            self.compact_one();
        }
    }

    /// Tell connections how the batch up to `seq` went.
    fn publish(&self, seq: u64, result: Result<(), StoreError>) {
        match result {
            Ok(()) => {
                self.healthy.store(true, Ordering::Release);
                self.state.send_modify(|s| s.synced = seq);
            }
            Err(e) => {
                tracing::error!(
                    "message store write failed, publishes are refused until it succeeds: {e}"
                );
                self.healthy.store(false, Ordering::Release);
                self.reclaim_disabled.store(true, Ordering::Release);
                self.state.send_modify(|s| {
                    s.failed = seq;
                    s.synced = seq;
                });
            }
        }
    }

    /// Write one batch in order and fsync every segment it touched.
    fn write_batch(
        &self,
        files: &mut Files,
        chunks: Vec<(u64, Vec<u8>)>,
    ) -> Result<(), StoreError> {
        let mut touched = Vec::new();
        for (seg, bytes) in chunks {
            if !files.contains_key(&seg) {
                self.open_segment(files, seg)?;
            }
            let f = files.get_mut(&seg).expect("opened above");
            let before = f
                .metadata()
                .map_err(|e| StoreError::io(&self.dir, e))?
                .len();
            if let Err(e) = f.write_all(&bytes) {
                // Cut the partial write so that later batches do not sit
                // behind a torn record (recovery stops at the first one).
                let _ = f.set_len(before);
                return Err(StoreError::io(&segment_path(&self.dir, seg), e));
            }
            if !touched.contains(&seg) {
                touched.push(seg);
            }
        }
        let t = Instant::now();
        for seg in touched {
            if let Some(f) = files.get(&seg) {
                f.sync_data().map_err(|e| StoreError::io(&self.dir, e))?;
            }
        }
        self.fsync.record(t.elapsed());
        Ok(())
    }

    /// A new segment: make the previous ones durable and closed, then
    /// create `seg` and make its directory entry durable.
    fn open_segment(&self, files: &mut Files, seg: u64) -> Result<(), StoreError> {
        for (n, f) in std::mem::take(files) {
            f.sync_data().map_err(|e| StoreError::io(&self.dir, e))?;
            // Sealed: summarize it off this thread.
            let dir = self.dir.clone();
            let _ = std::thread::Builder::new()
                .name("warren-summary".into())
                .spawn(move || super::summary::write_summary(&dir, n));
        }
        let path = segment_path(&self.dir, seg);
        let f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| StoreError::io(&path, e))?;
        if let Ok(d) = File::open(&self.dir) {
            let _ = d.sync_all();
        }
        files.insert(seg, f);
        Ok(())
    }
}
