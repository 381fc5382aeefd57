//! Reclaiming space: whole segments are deleted once every message enqueued
//! in them is removed and every older segment is gone (a removal always
//! lives in the same or a later segment than its message, so deleting only
//! such a prefix keeps recovery sound). Compaction copies the few live
//! messages of the oldest segment forward so one long-lived message does
//! not pin every segment after it.
//!
//! Compaction reads a segment through the same CRC-checked [`Records`]
//! walk as recovery and stops where recovery would cut the file: a corrupt
//! record, and whatever follows it, is never written forward as if valid.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::sync::atomic::Ordering;

use super::record::{EnqueueView, Record, Records};
use super::{segment_path, Log, QueueKey};

impl Log {
    pub(super) fn delete_dead_segments(&self) {
        self.delete_dead_segments_with(&mut BTreeMap::new());
    }

    /// Delete the prefix of sealed segments that hold no live message,
    /// closing their files in `files` first.
    pub(super) fn delete_dead_segments_with(&self, files: &mut BTreeMap<u64, File>) {
        if self.reclaim_disabled.load(Ordering::Acquire) {
            return;
        }
        let dead: Vec<u64> = {
            let mut p = self.pending.lock();
            let current = p.segment;
            let mut dead = Vec::new();
            for (&seg, st) in p.segs.iter() {
                if seg >= current || st.live > 0 {
                    break;
                }
                dead.push(seg);
            }
            for s in &dead {
                p.segs.remove(s);
            }
            dead
        };
        for seg in dead {
            files.remove(&seg);
            let path = segment_path(&self.dir, seg);
            let _ = fs::remove_file(super::summary::summary_path(&self.dir, seg));
            match fs::remove_file(&path) {
                Ok(()) => tracing::debug!(segment = seg, "message store segment reclaimed"),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => tracing::warn!("cannot delete {}: {e}", path.display()),
            }
        }
    }

    /// Copy the live messages of the oldest segment forward when few are
    /// left, so that one long-lived message does not pin every segment
    /// after it. Ids (and so queue order) are kept.
    pub(super) fn compact_one(&self) {
        if self.reclaim_disabled.load(Ordering::Acquire) {
            return;
        }
        let Some((seg, ids)) = self.compaction_candidate() else {
            return;
        };
        let path = segment_path(&self.dir, seg);
        let Ok(data) = fs::read(&path) else { return };
        let mut records = Records::new(&data);
        let mut copied = 0;
        for (_, rec) in records.by_ref() {
            let Record::Enqueue(m) = rec else { continue };
            if ids.binary_search(&m.id).is_ok() && self.copy_forward(seg, &m) {
                copied += 1;
            }
        }
        if copied > 0 {
            tracing::info!(
                segment = seg,
                messages = copied,
                "message store: compacted segment"
            );
        }
        if let Some(why) = records.stopped() {
            // Left pinned: recovery will cut it at the same byte.
            self.corrupt_segment.store(seg, Ordering::Relaxed);
            tracing::warn!(
                "message store: {} has a corrupt record at byte {} ({why}); \
                 the live messages after it are not compacted",
                path.display(),
                records.valid_to()
            );
        }
    }

    /// The oldest sealed segment and its live ids (sorted), when it is
    /// mostly dead or pins dead segments behind it.
    fn compaction_candidate(&self) -> Option<(u64, Vec<u64>)> {
        let p = self.pending.lock();
        let (&seg, st) = p.segs.iter().next()?;
        // A segment found corrupt waits for restart to cut it; checked
        // before the index scan, which holds the lock publishers need.
        if seg >= p.segment
            || st.live == 0
            || self.corrupt_segment.load(Ordering::Relaxed) == seg
            || p.pins.pinned(seg)
        {
            return None;
        }
        // Worth it when most of it is dead, or when it pins dead
        // segments behind it (prefix deletion cannot pass it).
        let pins = p
            .segs
            .iter()
            .nth(1)
            .is_some_and(|(s, st)| *s < p.segment && st.live == 0);
        if st.live * 4 > st.total && !pins {
            return None;
        }
        Some((seg, p.index.ids_in(seg)))
    }

    /// Append a copy of message `m` of segment `seg` for the queues still
    /// holding it, and move it to the copy's segment. False when it is no
    /// longer live in `seg`.
    fn copy_forward(&self, seg: u64, m: &EnqueueView<'_>) -> bool {
        let mut p = self.pending.lock();
        let Some(queues) = p.index.get(m.id).filter(|(s, _)| *s == seg).map(|(_, q)| q) else {
            return false;
        };
        let keys: Vec<QueueKey> = queues
            .iter()
            .map(|k| p.key_names[*k as usize].clone())
            .collect();
        let copy = m.with_queues(&keys);
        self.push_with(&mut p, copy.frame_len(), |buf| copy.encode(buf));
        let new_seg = p.segment;
        if let Some(st) = p.segs.get_mut(&seg) {
            st.live -= 1;
        }
        p.add_live(m.id, new_seg, queues);
        true
    }
}
