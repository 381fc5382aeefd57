//! Recovery: read every segment at start-up through the CRC-checked
//! [`Records`] walk, cut each file at its first torn or corrupt record, and
//! rebuild which messages each queue holds and the log's index, without
//! keeping the messages themselves.
//!
//! What a queue holds is kept as runs of ids ([`IdRanges`]) plus the byte
//! spans of its records in each segment; the messages are read back later,
//! a chunk at a time, by the queue's [`QueueTail`]. So recovery's memory
//! follows the number of runs and segments, not of messages. Only a
//! compaction copy whose original segment is gone is kept as a message
//! (`early`): its place in the queue is by id, not where the copy sits.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::fs::{self, File, OpenOptions};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::live::LiveIndex;
use super::ranges::IdRanges;
use super::record::{EnqueueView, Marker, Record, RecordError, Records};
use super::state::{Pending, SegStat};
use super::summary::Summary;
use super::tail::{Pins, QueueTail, Span};
use super::{segment_path, QueueKey, Recovered};
use crate::StoreError;

/// Written after a clean close; its absence at start-up means a crash.
const CLEAN_MARKER: &str = "CLEAN_SHUTDOWN";

/// What recovery found.
pub struct Recovery {
    /// What each queue holds, to be read back in order.
    pub queues: HashMap<QueueKey, QueueTail>,
    /// Records read (or applied from summaries).
    pub records: u64,
    /// Segments recovered from their summaries rather than their records.
    pub summarized: u64,
    /// Bytes truncated from torn or corrupt tails.
    pub truncated: u64,
    /// Time taken.
    pub elapsed: Duration,
}

impl Recovery {
    /// Every message queue `key` holds, read back at once: for the small
    /// stores (retained messages, session ids) and tests; a queue takes its
    /// [`QueueTail`] instead and reads it a chunk at a time.
    pub fn take(&mut self, key: &QueueKey) -> Vec<Recovered> {
        self.queues
            .remove(key)
            .map(|mut t| t.read_all())
            .unwrap_or_default()
    }
}

/// What one queue holds, as the scan goes.
#[derive(Default)]
struct QueueScan {
    /// Ids held.
    live: IdRanges,
    /// Held ids handed to a consumer before the stop.
    delivered: IdRanges,
    /// Where its records are, per segment in log order.
    spans: Vec<Span>,
    /// Compaction copies seen first (their originals are gone).
    early: Vec<Recovered>,
    /// Body bytes and count of the records in `spans`.
    bytes: u64,
    count: u64,
}

/// Which segment each id was first seen in: runs of consecutive ids of
/// one segment (`start -> (end, segment)`).
#[derive(Default)]
struct Seen {
    runs: BTreeMap<u64, (u64, u64)>,
}

impl Seen {
    /// Note `id` in `seg`; false when it was seen before.
    fn insert(&mut self, id: u64, seg: u64) -> bool {
        let Some(next) = id.checked_add(1) else {
            return false;
        };
        let mut extended = false;
        if let Some((_, (end, s))) = self.runs.range_mut(..=id).next_back() {
            if id < *end {
                return false;
            }
            if *end == id && *s == seg {
                *end = next;
                extended = true;
            }
        }
        let after = self.runs.get(&next).copied().filter(|(_, s)| *s == seg);
        match (extended, after) {
            (true, Some((e, _))) => {
                self.runs.remove(&next);
                if let Some((_, (end, _))) = self.runs.range_mut(..=id).next_back() {
                    *end = e;
                }
            }
            (true, None) => {}
            (false, Some((e, _))) => {
                self.runs.remove(&next);
                self.runs.insert(id, (e, seg));
            }
            (false, None) => {
                self.runs.insert(id, (next, seg));
            }
        }
        true
    }

    /// True when some id of `first..end` was seen.
    fn any_in(&self, first: u64, end: u64) -> bool {
        let before = self.runs.range(..first).next_back();
        before.is_some_and(|(_, (e, _))| *e > first) || self.runs.range(first..end).next().is_some()
    }

    /// Note the unseen ids `first..end` in `seg`.
    fn insert_run(&mut self, first: u64, end: u64, seg: u64) {
        let (mut s, mut e) = (first, end);
        if let Some((&ps, &(pe, pseg))) = self.runs.range(..first).next_back() {
            if pe == first && pseg == seg {
                self.runs.remove(&ps);
                s = ps;
            }
        }
        if let Some(&(ne, nseg)) = self.runs.get(&end) {
            if nseg == seg {
                self.runs.remove(&end);
                e = ne;
            }
        }
        self.runs.insert(s, (e, seg));
    }

    /// The parts of `first..end` seen, with their segments.
    fn segments_in(&self, first: u64, end: u64) -> Vec<(u64, u64, u64)> {
        let mut out = Vec::new();
        if let Some((s, (e, seg))) = self.runs.range(..first).next_back() {
            if *e > first {
                out.push((first.max(*s), end.min(*e), *seg));
            }
        }
        for (s, (e, seg)) in self.runs.range(first..end) {
            out.push((*s, end.min(*e), *seg));
        }
        out
    }

    fn segment_of(&self, id: u64) -> Option<u64> {
        let (_, (end, seg)) = self.runs.range(..=id).next_back()?;
        (id < *end).then_some(*seg)
    }
}

/// Recovery state: what each queue holds and interned names.
#[derive(Default)]
struct Scan {
    queues: Vec<QueueScan>,
    seen: Seen,
    keys: Vec<QueueKey>,
    key_ids: HashMap<Box<[u8]>, u32>,
    exchanges: HashMap<Box<[u8]>, Arc<str>>,
    lookup: Vec<u8>,
    max_id: u64,
}

impl Scan {
    /// Intern a queue name; `vhost` and `queue` are UTF-8 (checked by the
    /// record decoder), so the conversion below loses nothing.
    fn key(&mut self, vhost: &[u8], queue: &[u8]) -> u32 {
        // Length-prefixed, not NUL-separated: names may hold NULs, and
        // ("v", "\0q") must not meet ("v\0", "q").
        self.lookup.clear();
        self.lookup
            .extend_from_slice(&(vhost.len() as u64).to_be_bytes());
        self.lookup.extend_from_slice(vhost);
        self.lookup.extend_from_slice(queue);
        if let Some(k) = self.key_ids.get(self.lookup.as_slice()) {
            return *k;
        }
        let k = QueueKey {
            vhost: String::from_utf8_lossy(vhost).into_owned(),
            queue: String::from_utf8_lossy(queue).into_owned(),
        };
        let id = self.keys.len() as u32;
        self.keys.push(k);
        self.queues.push(QueueScan::default());
        self.key_ids.insert(self.lookup.as_slice().into(), id);
        id
    }

    fn exchange(&mut self, name: &str) -> Arc<str> {
        if let Some(x) = self.exchanges.get(name.as_bytes()) {
            return x.clone();
        }
        let x: Arc<str> = Arc::from(name);
        self.exchanges.insert(name.as_bytes().into(), x.clone());
        x
    }

    /// Apply one record of segment `seg`, whose frame is `frame` in `data`.
    fn apply(&mut self, data: &Bytes, seg: u64, frame: (u64, u64), rec: Record<'_>) {
        match rec {
            Record::Enqueue(m) => self.enqueue(data, seg, frame, m),
            Record::Remove(m) => self.marker(m, true),
            Record::Delivered(m) => self.marker(m, false),
            Record::RemoveRange(m, end) => {
                let k = self.key(m.vhost, m.queue) as usize;
                let qs = &mut self.queues[k];
                qs.live.remove_range(m.id, end);
                qs.delivered.remove_range(m.id, end);
            }
        }
    }

    /// Keep the message of an enqueue record. A second record of a
    /// message (a compaction copy) is ignored: the first one plus the
    /// removals after it say which queues hold it.
    fn enqueue(&mut self, data: &Bytes, seg: u64, frame: (u64, u64), m: EnqueueView<'_>) {
        self.max_id = self.max_id.max(m.id);
        if !self.seen.insert(m.id, seg) {
            return;
        }
        let mut queues = Vec::with_capacity(m.queues.len());
        for (vhost, queue) in m.queues.iter() {
            queues.push(self.key(vhost, queue));
        }
        // The broker never lists a queue twice; a record that does must
        // not recover the message twice into it.
        if queues.len() > 1 {
            queues.sort_unstable();
            queues.dedup();
        }
        let early = m.copy.then(|| Recovered {
            id: m.id,
            redelivered: false,
            exchange: self.exchange(m.exchange),
            meta: data.slice_ref(m.meta),
            key_len: m.key_len,
            body: data.slice_ref(m.body),
        });
        for q in queues {
            let qs = &mut self.queues[q as usize];
            qs.live.insert(m.id);
            match &early {
                Some(e) => qs.early.push(e.clone()),
                None => qs.note_span(seg, frame, m.id, m.body.len()),
            }
        }
    }

    fn marker(&mut self, m: Marker<'_>, remove: bool) {
        let q = self.key(m.vhost, m.queue) as usize;
        let qs = &mut self.queues[q];
        if remove {
            qs.live.remove(m.id);
            qs.delivered.remove(m.id);
        } else if qs.live.contains(m.id) {
            qs.delivered.insert(m.id);
        }
    }
}

impl Scan {
    /// Apply segment `seg`'s summary instead of its records; false (and
    /// nothing applied) when it names ids already seen (the segment is
    /// then read record by record, which sorts that out).
    fn apply_summary(&mut self, seg: u64, sum: &Summary) -> bool {
        if sum.enqueued.iter().any(|&(a, b)| self.seen.any_in(a, b)) {
            return false;
        }
        for &(a, b) in &sum.enqueued {
            self.seen.insert_run(a, b, seg);
        }
        self.max_id = self.max_id.max(sum.max_id);
        let keys: Vec<usize> = sum
            .queues
            .iter()
            .map(|q| self.key(q.vhost.as_bytes(), q.queue.as_bytes()) as usize)
            .collect();
        for (q, &k) in sum.queues.iter().zip(&keys) {
            let qs = &mut self.queues[k];
            for &(a, b) in &q.ids {
                qs.live.insert_run(a, b);
            }
            if let Some(span) = q.span {
                qs.spans.push(Span { seg, ..span });
            }
            qs.count += q.count;
            qs.bytes += q.bytes;
        }
        for (q, &k) in sum.queues.iter().zip(&keys) {
            let qs = &mut self.queues[k];
            for &(a, b) in &q.removed {
                qs.live.remove_range(a, b);
                qs.delivered.remove_range(a, b);
            }
        }
        for (q, &k) in sum.queues.iter().zip(&keys) {
            let qs = &mut self.queues[k];
            for &(a, b) in &q.delivered {
                for (x, y) in qs.live.overlapping(a, b) {
                    qs.delivered.insert_run(x, y);
                }
            }
        }
        true
    }
}

impl QueueScan {
    /// One of its records, at `frame` in segment `seg`.
    fn note_span(&mut self, seg: u64, (start, end): (u64, u64), id: u64, body: usize) {
        self.count += 1;
        self.bytes += body as u64;
        match self.spans.last_mut() {
            Some(s) if s.seg == seg => {
                s.end = end;
                s.min_id = s.min_id.min(id);
                s.max_id = s.max_id.max(id);
            }
            _ => self.spans.push(Span {
                seg,
                start,
                end,
                min_id: id,
                max_id: id,
            }),
        }
    }
}

/// The log's state rebuilt by recovery, before its writer starts.
pub(super) struct Rebuilt {
    /// Nothing pending yet; new records go to a new segment.
    pub pending: Pending,
    pub next_id: u64,
    pub recovery: Recovery,
}

/// Segment numbers in `dir`, ascending.
fn list_segments(dir: &Path) -> Result<Vec<u64>, StoreError> {
    let mut segments: Vec<u64> = fs::read_dir(dir)
        .map_err(|e| StoreError::io(dir, e))?
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str()?.strip_suffix(".seg")?.parse().ok())
        .collect();
    segments.sort_unstable();
    Ok(segments)
}

/// Read every segment of `dir` (truncating torn or corrupt tails) and
/// rebuild the index and what each queue holds.
pub(super) fn recover(dir: &Path) -> Result<Rebuilt, StoreError> {
    fs::create_dir_all(dir).map_err(|e| StoreError::io(dir, e))?;
    let started = Instant::now();
    let segments = list_segments(dir)?;
    let mut scan = Scan::default();
    let mut records = 0u64;
    let mut truncated = 0u64;
    let mut summarized = 0u64;
    for &seg in &segments {
        let path = segment_path(dir, seg);
        let len = fs::metadata(&path).map_or(0, |m| m.len());
        if let Some(sum) = Summary::read(dir, seg, len) {
            if scan.apply_summary(seg, &sum) {
                records += sum.records;
                summarized += 1;
                continue;
            }
        }
        let (n, cut) = read_segment(&path, seg, &mut scan)?;
        records += n;
        truncated += cut;
    }
    remove_stale_summaries(dir, &segments);
    tracing::debug!(segments = segments.len(), summarized, "message log scanned");
    let next_id = scan.max_id + 1;
    let segment = segments.last().map_or(1, |s| s + 1);
    // Totals are unknown after a restart; count live ones as the total.
    let mut segs: BTreeMap<u64, SegStat> =
        segments.iter().map(|s| (*s, SegStat::default())).collect();
    let index = rebuild_index(&scan, &mut segs);
    let key_names = scan.keys.clone();
    let keys: HashMap<QueueKey, u32> = key_names
        .iter()
        .enumerate()
        .map(|(i, k)| (k.clone(), i as u32))
        .collect();
    let pins = Arc::new(Pins::default());
    let queues = scan
        .keys
        .into_iter()
        .zip(scan.queues)
        .filter(|(_, q)| !q.live.is_empty())
        .map(|(k, q)| {
            let tail = into_tail(dir, &k, q, &pins);
            (k, tail)
        })
        .collect();
    Ok(Rebuilt {
        pending: Pending {
            chunks: Vec::new(),
            seq: 0,
            segment,
            segment_bytes: 0,
            index,
            segs,
            keys,
            key_names,
            closed: false,
            pins: pins.clone(),
        },
        next_id,
        recovery: Recovery {
            queues,
            records,
            summarized,
            truncated,
            elapsed: started.elapsed(),
        },
    })
}

/// Delete summaries whose segment is gone, and half-written ones.
fn remove_stale_summaries(dir: &Path, segments: &[u64]) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let name = name.to_string_lossy();
        let stale = name.ends_with(".sum.tmp")
            || name
                .strip_suffix(".sum")
                .and_then(|n| n.parse::<u64>().ok())
                .is_some_and(|n| segments.binary_search(&n).is_err());
        if stale {
            let _ = fs::remove_file(e.path());
        }
    }
}

/// What queue `key` holds, as the reader that brings it back.
fn into_tail(dir: &Path, key: &QueueKey, mut q: QueueScan, pins: &Arc<Pins>) -> QueueTail {
    let live = &mut q.live;
    q.early.retain(|m| live.contains(m.id));
    for m in &mut q.early {
        live.remove(m.id);
        m.redelivered = q.delivered.contains(m.id);
    }
    q.early.sort_unstable_by_key(|m| m.id);
    q.spans.retain(|s| live.any_in(s.min_id, s.max_id));
    let bytes = match q.count {
        0 => 0,
        n => (q.bytes as u128 * u128::from(live.len()) / u128::from(n)) as u64,
    };
    QueueTail::new(
        dir,
        key.clone(),
        q.spans,
        q.live,
        q.delivered,
        q.early,
        bytes,
        pins.clone(),
    )
}

/// Every message some queue holds, in id order, into the log's index and
/// the live counts of `segs`.
fn rebuild_index(scan: &Scan, segs: &mut BTreeMap<u64, SegStat>) -> LiveIndex {
    let mut index = LiveIndex::default();
    let mut add = |id: u64, holders: Vec<u32>| {
        let Some(seg) = scan.seen.segment_of(id) else {
            return;
        };
        let st = segs.entry(seg).or_default();
        st.live += 1;
        st.total += 1;
        index.insert(id, seg, holders);
    };
    let held: Vec<(u32, &IdRanges)> = (0u32..)
        .zip(&scan.queues)
        .filter(|(_, q)| !q.live.is_empty())
        .map(|(k, q)| (k, &q.live))
        .collect();
    if let [(k, live)] = held[..] {
        for (first, end) in live.runs() {
            for (a, b, seg) in scan.seen.segments_in(first, end) {
                let st = segs.entry(seg).or_default();
                st.live += b - a;
                st.total += b - a;
                index.insert_run(a, b, seg, k);
            }
        }
        return index;
    }
    // Several queues: merge their ids, collecting each id's holders.
    let mut iters: Vec<_> = held.iter().map(|(_, l)| l.ids()).collect();
    let mut heap = BinaryHeap::new();
    for (i, it) in iters.iter_mut().enumerate() {
        if let Some(id) = it.next() {
            heap.push(Reverse((id, i)));
        }
    }
    while let Some(Reverse((id, i))) = heap.pop() {
        let mut holders = vec![held[i].0];
        if let Some(n) = iters[i].next() {
            heap.push(Reverse((n, i)));
        }
        while let Some(Reverse((same, j))) = heap.peek().copied() {
            if same != id {
                break;
            }
            heap.pop();
            holders.push(held[j].0);
            if let Some(n) = iters[j].next() {
                heap.push(Reverse((n, j)));
            }
        }
        add(id, holders);
    }
    index
}

/// A read-only mapping of a sealed segment. Recovered message bodies are
/// slices of it, so they cost no heap and, once recovery is done, no resident
/// memory until a consumer reads them (the page cache serves them).
struct Mapped(Arc<memmap2::Mmap>);

impl AsRef<[u8]> for Mapped {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

/// Read one segment; truncates a torn or corrupt tail. Segments are never
/// written again after a restart (new writes go to a new segment), so the
/// mapping stays valid; truncation only cuts bytes no slice refers to.
fn read_segment(path: &Path, seg: u64, scan: &mut Scan) -> Result<(u64, u64), StoreError> {
    let file = File::open(path).map_err(|e| StoreError::io(path, e))?;
    if file.metadata().map_err(|e| StoreError::io(path, e))?.len() == 0 {
        return Ok((0, 0));
    }
    // SAFETY: the file is private to this process (the data directory is
    // locked) and no one writes to or shrinks the mapped range while mapped.
    let map = Arc::new(unsafe { memmap2::Mmap::map(&file) }.map_err(|e| StoreError::io(path, e))?);
    let data = Bytes::from_owner(Mapped(map.clone()));
    let size = data.len();
    let (records, pos, why) = scan_records(&data, seg, scan);
    // Drop the scanned pages from our resident set; slices that are read
    // later fault them back in from the page cache.
    // SAFETY: a shared, read-only file mapping: DONTNEED only discards
    // resident pages, whose contents come back from the file on access.
    let _ = unsafe { map.unchecked_advise(memmap2::UncheckedAdvice::DontNeed) };
    let cut = (size - pos) as u64;
    if cut > 0 {
        let why = why.map_or_else(String::new, |w| format!(" ({w})"));
        tracing::warn!(
            "message store: {} has a torn or corrupt record at byte {pos}{why}; truncating {cut} bytes",
            path.display()
        );
        let f = OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(|e| StoreError::io(path, e))?;
        f.set_len(pos as u64).map_err(|e| StoreError::io(path, e))?;
        f.sync_all().map_err(|e| StoreError::io(path, e))?;
    }
    Ok((records, cut))
}

/// Apply the records of one segment to `scan`: the number of records read,
/// the offset of the first byte that does not start a whole, valid record
/// (where recovery cuts the file) and why the walk stopped there.
fn scan_records(data: &Bytes, seg: u64, scan: &mut Scan) -> (u64, usize, Option<RecordError>) {
    let mut walk = Records::new(data);
    let mut records = 0u64;
    let mut at = 0u64;
    while let Some((_, rec)) = walk.next() {
        let end = walk.valid_to() as u64;
        scan.apply(data, seg, (at, end), rec);
        at = end;
        records += 1;
    }
    (records, walk.valid_to(), walk.stopped())
}

/// Recovery alone, for the fuzz targets in `fuzz/`: what [`Log::open`]
/// does to `dir` (reading, truncating and rebuilding) without starting a
/// log. Returns what was recovered and the next message id.
///
/// [`Log::open`]: super::Log::open
#[doc(hidden)]
pub fn recover_dir(dir: &Path) -> Result<(Recovery, u64), StoreError> {
    recover(dir).map(|r| (r.recovery, r.next_id))
}

/// Recovery's record decoder over an in-memory segment, for the fuzz
/// targets in `fuzz/`: applies the records as [`Log::open`] does (length,
/// checksum, record layout) and returns the number of records read and the
/// offset where recovery would cut the file. Compaction walks segments
/// through the same [`Records`] iterator, so it stops at the same offset;
/// this also checks that compaction's copy of every enqueue record recovery
/// accepted decodes to the same message, and panics if not.
///
/// [`Log::open`]: super::Log::open
#[doc(hidden)]
pub fn decode_segment(data: &[u8]) -> (u64, usize) {
    let data = Bytes::copy_from_slice(data);
    let mut scan = Scan::default();
    let (records, cut, _) = scan_records(&data, 1, &mut scan);
    for (_, rec) in Records::new(&data) {
        if let Record::Enqueue(m) = rec {
            assert_copy_round_trips(&m);
        }
    }
    (records, cut)
}

/// Compaction's copy of `m` (for all its queues) decodes to `m` again.
fn assert_copy_round_trips(m: &EnqueueView<'_>) {
    let keys: Vec<QueueKey> = m
        .queues
        .iter()
        .map(|(v, q)| QueueKey {
            vhost: String::from_utf8_lossy(v).into_owned(),
            queue: String::from_utf8_lossy(q).into_owned(),
        })
        .collect();
    let mut copy = Vec::new();
    m.with_queues(&keys).encode(&mut copy);
    let mut walk = Records::new(&copy);
    let Some((_, Record::Enqueue(c))) = walk.next() else {
        panic!("compaction's copy of message {} does not decode", m.id);
    };
    let same = (c.id, c.exchange, c.key_len, c.meta, c.body)
        == (m.id, m.exchange, m.key_len, m.meta, m.body)
        && c.queues.iter().eq(m.queues.iter());
    assert!(
        same && walk.next().is_none(),
        "compaction's copy of message {} differs",
        m.id
    );
}

pub(super) fn put_clean_marker(dir: &Path) -> std::io::Result<()> {
    File::create(dir.join(CLEAN_MARKER))?.sync_all()?;
    File::open(dir)?.sync_all()
}

/// True when the last run closed the log cleanly. The marker is removed
/// (durably) so that a crash of this run is not taken for a clean close.
pub(super) fn take_clean_marker(dir: &Path) -> Result<bool, StoreError> {
    let path = dir.join(CLEAN_MARKER);
    match fs::remove_file(&path) {
        Ok(()) => {
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| StoreError::io(dir, e))?;
            Ok(true)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(StoreError::io(&path, e)),
    }
}
