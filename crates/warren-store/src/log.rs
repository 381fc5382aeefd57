//! The message log: persistent messages of durable queues, appended to
//! numbered segment files by one writer thread that fsyncs once per batch
//! (group commit). Publishers learn that their data is on disk through the
//! `synced` sequence number, which drives publisher confirms.
//!
//! Record layout: `len: u32 | crc32(payload): u32 | payload`, where the
//! payload starts with a kind byte. Recovery stops at the first record whose
//! length or checksum does not hold, truncates the file there (a torn tail
//! after kill -9) and carries on.
//!
//! Space is reclaimed by deleting whole segments: a segment goes once every
//! message enqueued in it has been removed and every older segment is gone.
//! Deleting only such a prefix keeps recovery sound: a removal record always
//! lives in the same or a later segment than the message it removes.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::{Condvar, Mutex};
use tokio::sync::watch;

use crate::StoreError;

/// Segments roll over at this size.
pub const SEGMENT_SIZE: u64 = 64 << 20;

const ENQUEUE: u8 = 1;
const REMOVE: u8 = 2;
const DELIVERED: u8 = 3;

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

/// Where a stored message lives and which queues still hold it.
struct Live {
    seg: u64,
    /// Interned queue keys (see `Pending::keys`).
    queues: Vec<u32>,
}

/// Message counts of one segment.
#[derive(Clone, Copy, Debug, Default)]
struct SegStat {
    live: u64,
    total: u64,
}

struct Pending {
    /// (segment number, bytes) chunks not yet written.
    chunks: Vec<(u64, Vec<u8>)>,
    seq: u64,
    segment: u64,
    segment_bytes: u64,
    index: IdMap<Live>,
    segs: BTreeMap<u64, SegStat>,
    keys: HashMap<QueueKey, u32>,
    key_names: Vec<QueueKey>,
    closed: bool,
}

impl Pending {
    fn intern(&mut self, k: &QueueKey) -> u32 {
        if let Some(i) = self.keys.get(k) {
            return *i;
        }
        let i = self.key_names.len() as u32;
        self.key_names.push(k.clone());
        self.keys.insert(k.clone(), i);
        i
    }

    fn add_live(&mut self, id: u64, seg: u64, queues: Vec<u32>) {
        let st = self.segs.entry(seg).or_default();
        st.live += 1;
        st.total += 1;
        self.index.insert(id, Live { seg, queues });
    }
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
    /// fsync latencies, for metrics.
    pub fsync: FsyncHistogram,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

/// Upper bounds (seconds) of the fsync latency buckets.
pub const FSYNC_BUCKETS: [f64; 12] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];

/// A Prometheus-style histogram of fsync latencies, written by the log's
/// writer thread and read by metrics scrapes without a lock.
#[derive(Default)]
pub struct FsyncHistogram {
    /// Cumulative-ready counts per bucket of [`FSYNC_BUCKETS`] (not cumulative).
    buckets: [AtomicU64; 12],
    count: AtomicU64,
    sum_nanos: AtomicU64,
}

impl FsyncHistogram {
    fn record(&self, d: Duration) {
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

fn segment_path(dir: &Path, n: u64) -> PathBuf {
    dir.join(format!("{n:010}.seg"))
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    let b = &s.as_bytes()[..s.len().min(u16::MAX as usize)];
    out.extend_from_slice(&(b.len() as u16).to_be_bytes());
    out.extend_from_slice(b);
}

fn frame(out: &mut [u8], payload_start: usize) {
    let len = (out.len() - payload_start) as u32;
    let crc = crc32fast::hash(&out[payload_start..]);
    out[payload_start - 8..payload_start - 4].copy_from_slice(&len.to_be_bytes());
    out[payload_start - 4..payload_start].copy_from_slice(&crc.to_be_bytes());
}

fn begin(out: &mut Vec<u8>, kind: u8) -> usize {
    out.extend_from_slice(&[0u8; 8]);
    let start = out.len();
    out.push(kind);
    start
}

/// Encode an enqueue record into `out`.
pub fn encode_enqueue(
    out: &mut Vec<u8>,
    id: u64,
    queues: &[QueueKey],
    exchange: &str,
    meta: &[u8],
    key_len: u8,
    body: &[u8],
) {
    let start = begin(out, ENQUEUE);
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(&(queues.len() as u16).to_be_bytes());
    for q in queues {
        put_str(out, &q.vhost);
        put_str(out, &q.queue);
    }
    put_str(out, exchange);
    out.push(key_len);
    out.extend_from_slice(&(meta.len() as u32).to_be_bytes());
    out.extend_from_slice(meta);
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(body);
    frame(out, start);
}

fn encode_marker(out: &mut Vec<u8>, kind: u8, id: u64, q: &QueueKey) {
    let start = begin(out, kind);
    out.extend_from_slice(&id.to_be_bytes());
    put_str(out, &q.vhost);
    put_str(out, &q.queue);
    frame(out, start);
}

struct Cur<'a> {
    b: &'a [u8],
    p: usize,
}

impl<'a> Cur<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let s = self.b.get(self.p..self.p.checked_add(n)?)?;
        self.p += n;
        Some(s)
    }
    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_be_bytes(self.take(2)?.try_into().ok()?))
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_be_bytes(self.take(4)?.try_into().ok()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_be_bytes(self.take(8)?.try_into().ok()?))
    }
}

/// What recovery found.
pub struct Recovery {
    /// Live messages per queue, in id order.
    pub queues: HashMap<QueueKey, Vec<Recovered>>,
    /// Records read.
    pub records: u64,
    /// Bytes truncated from torn or corrupt tails.
    pub truncated: u64,
    /// Time taken.
    pub elapsed: Duration,
}

struct Entry {
    seg: u64,
    /// Interned queue keys still holding the message.
    queues: Vec<u32>,
    delivered: Vec<u32>,
    msg: Recovered,
}

/// Hashes message ids (sequential u64s) with one multiply instead of SipHash.
#[derive(Default, Clone, Copy)]
pub struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

type IdMap<V> = HashMap<u64, V, std::hash::BuildHasherDefault<IdHasher>>;

/// Message ids count up from 1, so no log reaches this one: an enqueue
/// record with a higher id is corrupt (and would overflow the next id).
const ID_LIMIT: u64 = 1 << 63;

/// How far past twice the number of entries it holds the recovery vector
/// may grow for one id; ids further out go to the map.
const DENSE_SLACK: usize = 4096;

/// Recovery state: live entries and interned names.
#[derive(Default)]
struct Scan {
    /// Entries by `id - base`: ids are handed out sequentially, so a vector
    /// beats a map.
    entries: Vec<Option<Entry>>,
    /// Entries ever put in `entries`: bounds its length (see [`Scan::insert`]).
    filled: usize,
    base: u64,
    /// Entries with ids below `base` (compaction copies of old messages) or
    /// too far above the vector's end (an id gap, or a corrupt record that
    /// passed the checksum): an id must not size the vector.
    sparse: IdMap<Entry>,
    keys: Vec<QueueKey>,
    key_ids: HashMap<Box<[u8]>, u32>,
    exchanges: HashMap<Box<[u8]>, Arc<str>>,
    lookup: Vec<u8>,
    max_id: u64,
}

impl Scan {
    /// Keep the message of an enqueue record. A second copy of a message
    /// (compaction) is ignored: the first one plus the removals after it say
    /// which queues hold it.
    fn insert(&mut self, id: u64, entry: Entry) {
        if self.entries.is_empty() {
            self.base = id;
        }
        if self.sparse.contains_key(&id) {
            return;
        }
        // The vector grows to at most twice the entries put in it plus
        // DENSE_SLACK, so its size follows the records read, not the ids.
        let dense = id
            .checked_sub(self.base)
            .and_then(|d| usize::try_from(d).ok())
            .filter(|&i| i <= 2 * self.filled + DENSE_SLACK);
        match dense {
            Some(i) => {
                if i >= self.entries.len() {
                    self.entries.resize_with(i + 1, || None);
                }
                let slot = &mut self.entries[i];
                if slot.is_none() {
                    *slot = Some(entry);
                    self.filled += 1;
                }
            }
            None => {
                self.sparse.insert(id, entry);
            }
        }
    }

    /// Apply a removal or delivered marker to message `id`, wherever it is
    /// kept; `f` says whether the entry is now dead.
    fn mark(&mut self, id: u64, f: impl FnOnce(&mut Entry) -> bool) {
        let dense = id
            .checked_sub(self.base)
            .and_then(|d| usize::try_from(d).ok())
            .and_then(|i| self.entries.get_mut(i))
            .filter(|slot| slot.is_some());
        if let Some(slot) = dense {
            if slot.as_mut().is_some_and(f) {
                *slot = None;
            }
        } else if self.sparse.get_mut(&id).is_some_and(f) {
            self.sparse.remove(&id);
        }
    }

    fn key(&mut self, vhost: &[u8], queue: &[u8]) -> Option<u32> {
        // Length-prefixed, not NUL-separated: names may hold NULs, and
        // ("v", "\0q") must not meet ("v\0", "q").
        self.lookup.clear();
        self.lookup
            .extend_from_slice(&(vhost.len() as u64).to_be_bytes());
        self.lookup.extend_from_slice(vhost);
        self.lookup.extend_from_slice(queue);
        if let Some(k) = self.key_ids.get(self.lookup.as_slice()) {
            return Some(*k);
        }
        let k = QueueKey {
            vhost: String::from_utf8(vhost.to_vec()).ok()?,
            queue: String::from_utf8(queue.to_vec()).ok()?,
        };
        let id = self.keys.len() as u32;
        self.keys.push(k);
        self.key_ids.insert(self.lookup.as_slice().into(), id);
        Some(id)
    }

    fn exchange(&mut self, name: &[u8]) -> Option<Arc<str>> {
        if let Some(x) = self.exchanges.get(name) {
            return Some(x.clone());
        }
        let x: Arc<str> = Arc::from(std::str::from_utf8(name).ok()?);
        self.exchanges.insert(name.into(), x.clone());
        Some(x)
    }
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
        let Rebuilt {
            index,
            segs,
            keys,
            key_names,
            segment,
            next_id,
            mut recovery,
        } = recover(dir)?;
        if !take_clean_marker(dir)? {
            // Delivered markers are written without waiting for a sync, so
            // after a crash the newest may be missing: every message that
            // may have been delivered is flagged redelivered.
            for m in recovery.queues.values_mut().flatten() {
                m.redelivered = true;
            }
        }
        let (state, _) = watch::channel(SyncState::default());
        let log = Arc::new(Log {
            dir: dir.to_path_buf(),
            pending: Mutex::new(Pending {
                chunks: Vec::new(),
                seq: 0,
                segment,
                segment_bytes: 0,
                index,
                segs,
                keys,
                key_names,
                closed: false,
            }),
            wake: Condvar::new(),
            state,
            next_id: AtomicU64::new(next_id),
            segment_size,
            healthy: AtomicBool::new(true),
            reclaim_disabled: AtomicBool::new(false),
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

    /// Append an encoded enqueue record (see [`encode_enqueue`]) for message
    /// `id` held by `queues`; returns the sequence number to wait for.
    pub fn append_enqueue(&self, id: u64, queues: &[QueueKey], record: &[u8]) -> u64 {
        let mut p = self.pending.lock();
        let qs: Vec<u32> = queues.iter().map(|q| p.intern(q)).collect();
        let seq = self.push(&mut p, record);
        // After push: the record may have opened a new segment.
        let seg = p.segment;
        p.add_live(id, seg, qs);
        seq
    }

    /// A queue let go of message `id` (ack, reject, expiry, purge...).
    pub fn append_remove(&self, id: u64, q: &QueueKey) {
        let mut rec = Vec::with_capacity(32 + q.vhost.len() + q.queue.len());
        encode_marker(&mut rec, REMOVE, id, q);
        let mut p = self.pending.lock();
        if let Some(&k) = p.keys.get(q) {
            let mut dead = None;
            if let Some(l) = p.index.get_mut(&id) {
                l.queues.retain(|x| *x != k);
                if l.queues.is_empty() {
                    dead = Some(l.seg);
                }
            }
            if let Some(seg) = dead {
                p.index.remove(&id);
                if let Some(st) = p.segs.get_mut(&seg) {
                    st.live -= 1;
                }
            }
        }
        self.push(&mut p, &rec);
    }

    /// Message `id` was handed to a consumer; after a restart it comes back
    /// with redelivered=true. Not waited for.
    pub fn append_delivered(&self, id: u64, q: &QueueKey) {
        let mut rec = Vec::with_capacity(32 + q.vhost.len() + q.queue.len());
        encode_marker(&mut rec, DELIVERED, id, q);
        let mut p = self.pending.lock();
        self.push(&mut p, &rec);
    }

    fn push(&self, p: &mut Pending, record: &[u8]) -> u64 {
        if p.segment_bytes > 0 && p.segment_bytes + record.len() as u64 > self.segment_size {
            p.segment += 1;
            p.segment_bytes = 0;
            let seg = p.segment;
            p.segs.entry(seg).or_default();
        }
        p.segment_bytes += record.len() as u64;
        let seg = p.segment;
        match p.chunks.last_mut() {
            Some((s, buf)) if *s == seg => buf.extend_from_slice(record),
            _ => p.chunks.push((seg, record.to_vec())),
        }
        let was_idle = p.chunks.len() == 1 && p.chunks[0].1.len() == record.len();
        p.seq += 1;
        if was_idle {
            self.wake.notify_one();
        }
        p.seq
    }

    fn run_writer(self: Arc<Self>) {
        let mut files: BTreeMap<u64, File> = BTreeMap::new();
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
            self.delete_dead_segments_with(&mut files);
            // Copies made now are written by the next batch; the segment
            // they came from is deleted only after that batch succeeded.
            self.compact_one();
        }
    }

    /// Copy the live messages of the oldest segment forward when few are
    /// left, so that one long-lived message does not pin every segment
    /// after it. Ids (and so queue order) are kept.
    fn compact_one(&self) {
        if self.reclaim_disabled.load(Ordering::Acquire) {
            return;
        }
        let (seg, ids) = {
            let p = self.pending.lock();
            let Some((&seg, st)) = p.segs.iter().next() else {
                return;
            };
            if seg >= p.segment || st.live == 0 {
                return;
            }
            // Worth it when most of it is dead, or when it pins dead
            // segments behind it (prefix deletion cannot pass it).
            let pins = p
                .segs
                .iter()
                .nth(1)
                .is_some_and(|(s, st)| *s < p.segment && st.live == 0);
            if st.live * 4 > st.total && !pins {
                return;
            }
            let mut ids: Vec<u64> = p
                .index
                .iter()
                .filter(|(_, l)| l.seg == seg)
                .map(|(id, _)| *id)
                .collect();
            ids.sort_unstable();
            (seg, ids)
        };
        let path = segment_path(&self.dir, seg);
        let Ok(data) = fs::read(&path) else { return };
        let mut pos = 0usize;
        let mut rec = Vec::new();
        let mut copied = 0;
        while pos + 8 <= data.len() {
            let len = u32::from_be_bytes(data[pos..pos + 4].try_into().expect("4")) as usize;
            let end = pos + 8 + len;
            if len == 0 || end > data.len() {
                break;
            }
            let payload = &data[pos + 8..end];
            pos = end;
            if payload[0] != ENQUEUE {
                continue;
            }
            let id = u64::from_be_bytes(payload[1..9].try_into().expect("8"));
            if ids.binary_search(&id).is_err() {
                continue;
            }
            let Some(m) = parse_enqueue(payload) else {
                continue;
            };
            let mut p = self.pending.lock();
            let Some(queues) = p
                .index
                .get(&id)
                .filter(|l| l.seg == seg)
                .map(|l| l.queues.clone())
            else {
                continue;
            };
            let keys: Vec<QueueKey> = queues
                .iter()
                .map(|k| p.key_names[*k as usize].clone())
                .collect();
            rec.clear();
            encode_enqueue(&mut rec, id, &keys, m.0, m.1, m.2, m.3);
            self.push(&mut p, &rec);
            let new_seg = p.segment;
            if let Some(st) = p.segs.get_mut(&seg) {
                st.live -= 1;
            }
            p.add_live(id, new_seg, queues);
            copied += 1;
        }
        if copied > 0 {
            tracing::info!(
                segment = seg,
                messages = copied,
                "message store: compacted segment"
            );
        }
    }

    fn write_batch(
        &self,
        files: &mut BTreeMap<u64, File>,
        chunks: Vec<(u64, Vec<u8>)>,
    ) -> Result<(), StoreError> {
        let mut touched = Vec::new();
        for (seg, bytes) in chunks {
            if !files.contains_key(&seg) {
                // A new segment: make the previous ones durable and closed.
                for (_, f) in std::mem::take(files) {
                    f.sync_data().map_err(|e| StoreError::io(&self.dir, e))?;
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

    fn delete_dead_segments(&self) {
        self.delete_dead_segments_with(&mut BTreeMap::new());
    }

    fn delete_dead_segments_with(&self, files: &mut BTreeMap<u64, File>) {
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
            match fs::remove_file(&path) {
                Ok(()) => tracing::debug!(segment = seg, "message store segment reclaimed"),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => tracing::warn!("cannot delete {}: {e}", path.display()),
            }
        }
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
            if let Err(e) = put_clean_marker(&self.dir) {
                tracing::warn!("cannot mark the message log as cleanly closed: {e}");
            }
        }
    }
}

/// Written after a clean close; its absence at start-up means a crash.
const CLEAN_MARKER: &str = "CLEAN_SHUTDOWN";

fn put_clean_marker(dir: &Path) -> std::io::Result<()> {
    File::create(dir.join(CLEAN_MARKER))?.sync_all()?;
    File::open(dir)?.sync_all()
}

/// True when the last run closed the log cleanly. The marker is removed
/// (durably) so that a crash of this run is not taken for a clean close.
fn take_clean_marker(dir: &Path) -> Result<bool, StoreError> {
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

/// The log's state rebuilt by recovery, before its writer starts.
struct Rebuilt {
    index: IdMap<Live>,
    segs: BTreeMap<u64, SegStat>,
    keys: HashMap<QueueKey, u32>,
    key_names: Vec<QueueKey>,
    /// The segment new records go to.
    segment: u64,
    next_id: u64,
    recovery: Recovery,
}

/// Read every segment of `dir` (truncating torn or corrupt tails) and
/// rebuild the index and the live messages per queue.
fn recover(dir: &Path) -> Result<Rebuilt, StoreError> {
    fs::create_dir_all(dir).map_err(|e| StoreError::io(dir, e))?;
    let started = Instant::now();
    let mut segments: Vec<u64> = fs::read_dir(dir)
        .map_err(|e| StoreError::io(dir, e))?
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str()?.strip_suffix(".seg")?.parse().ok())
        .collect();
    segments.sort_unstable();
    let mut scan = Scan::default();
    let mut records = 0u64;
    let mut truncated = 0u64;
    for &seg in &segments {
        let path = segment_path(dir, seg);
        let (n, cut) = read_segment(&path, seg, &mut scan)?;
        records += n;
        truncated += cut;
    }
    let max_id = scan.max_id;
    // Rebuild the index and live counts from what survived.
    let mut index = IdMap::default();
    index.reserve(scan.entries.len());
    // Totals are unknown after a restart; count live ones as the total.
    let mut segs: BTreeMap<u64, SegStat> =
        segments.iter().map(|s| (*s, SegStat::default())).collect();
    let mut by_key: Vec<Vec<Recovered>> = vec![Vec::new(); scan.keys.len()];
    // Entries kept in the map (ids below the first segment's first id,
    // copies made by compaction, or far above it) merge in id order.
    let mut sparse: Vec<Entry> = scan.sparse.into_values().collect();
    sparse.sort_unstable_by_key(|e| e.msg.id);
    let mut sparse = sparse.into_iter().peekable();
    let mut dense = scan.entries.into_iter().flatten().peekable();
    let in_order = std::iter::from_fn(|| match (sparse.peek(), dense.peek()) {
        (Some(a), Some(b)) if a.msg.id > b.msg.id => dense.next(),
        (Some(_), _) => sparse.next(),
        (None, _) => dense.next(),
    });
    for e in in_order {
        let id = e.msg.id;
        if e.queues.is_empty() {
            continue;
        }
        let st = segs.entry(e.seg).or_default();
        st.live += 1;
        st.total += 1;
        index.insert(
            id,
            Live {
                seg: e.seg,
                queues: e.queues.clone(),
            },
        );
        for &q in &e.queues {
            let mut m = e.msg.clone();
            m.redelivered = e.delivered.contains(&q);
            by_key[q as usize].push(m);
        }
    }
    let mut queues = HashMap::new();
    // Entries were visited in id order, so each list is already sorted.
    let key_names = scan.keys.clone();
    let keys: HashMap<QueueKey, u32> = key_names
        .iter()
        .enumerate()
        .map(|(i, k)| (k.clone(), i as u32))
        .collect();
    for (k, v) in scan.keys.into_iter().zip(by_key) {
        if !v.is_empty() {
            queues.insert(k, v);
        }
    }
    let segment = segments.last().map_or(1, |s| s + 1);
    Ok(Rebuilt {
        index,
        segs,
        keys,
        key_names,
        segment,
        next_id: max_id + 1,
        recovery: Recovery {
            queues,
            records,
            truncated,
            elapsed: started.elapsed(),
        },
    })
}

/// Recovery alone, for the fuzz targets in `fuzz/`: what [`Log::open`]
/// does to `dir` (reading, truncating and rebuilding) without starting a
/// log. Returns what was recovered and the next message id.
#[doc(hidden)]
pub fn recover_dir(dir: &Path) -> Result<(Recovery, u64), StoreError> {
    recover(dir).map(|r| (r.recovery, r.next_id))
}

/// The exchange, meta, key length and body of an enqueue payload.
fn parse_enqueue(payload: &[u8]) -> Option<(&str, &[u8], u8, &[u8])> {
    let mut c = Cur { b: payload, p: 9 };
    let n = c.u16()? as usize;
    for _ in 0..n * 2 {
        let l = c.u16()? as usize;
        c.take(l)?;
    }
    let xl = c.u16()? as usize;
    let exchange = std::str::from_utf8(c.take(xl)?).ok()?;
    let key_len = *c.take(1)?.first()?;
    let ml = c.u32()? as usize;
    let meta = c.take(ml)?;
    let bl = c.u32()? as usize;
    let body = c.take(bl)?;
    Some((exchange, meta, key_len, body))
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
    let (records, pos) = scan_records(&data, seg, scan);
    // Drop the scanned pages from our resident set; slices that are read
    // later fault them back in from the page cache.
    // SAFETY: a shared, read-only file mapping: DONTNEED only discards
    // resident pages, whose contents come back from the file on access.
    let _ = unsafe { map.unchecked_advise(memmap2::UncheckedAdvice::DontNeed) };
    let cut = (size - pos) as u64;
    if cut > 0 {
        tracing::warn!(
            "message store: {} has a torn or corrupt record at byte {pos}; truncating {cut} bytes",
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

/// Apply the records of one segment to `scan`: the number of records read
/// and the offset of the first byte that does not start a whole, valid
/// record (where recovery cuts the file).
fn scan_records(data: &Bytes, seg: u64, scan: &mut Scan) -> (u64, usize) {
    let size = data.len();
    let mut pos = 0usize;
    let mut records = 0u64;
    while pos + 8 <= size {
        let len = u32::from_be_bytes(data[pos..pos + 4].try_into().expect("4")) as usize;
        let crc = u32::from_be_bytes(data[pos + 4..pos + 8].try_into().expect("4"));
        let end = pos + 8 + len;
        if len == 0 || end > size || crc32fast::hash(&data[pos + 8..end]) != crc {
            break;
        }
        if apply(data, pos + 8, end, seg, scan).is_none() {
            break;
        }
        records += 1;
        pos = end;
    }
    (records, pos)
}

/// Recovery's record decoder over an in-memory segment, for the fuzz
/// targets in `fuzz/`: applies the records as [`Log::open`] does (length,
/// checksum, record layout) and returns the number of records read and the
/// offset where recovery would cut the file. Also runs compaction's decoder
/// on every enqueue record recovery accepted, and panics if it disagrees.
#[doc(hidden)]
pub fn decode_segment(data: &[u8]) -> (u64, usize) {
    let data = Bytes::copy_from_slice(data);
    let mut scan = Scan::default();
    let (records, cut) = scan_records(&data, 1, &mut scan);
    let mut pos = 0;
    while pos < cut {
        let len = u32::from_be_bytes(data[pos..pos + 4].try_into().expect("4")) as usize;
        let payload = &data[pos + 8..pos + 8 + len];
        if payload[0] == ENQUEUE {
            assert!(
                parse_enqueue(payload).is_some(),
                "compaction rejects an enqueue record that recovery accepted"
            );
        }
        pos += 8 + len;
    }
    (records, cut)
}

fn apply(data: &Bytes, start: usize, end: usize, seg: u64, scan: &mut Scan) -> Option<()> {
    let payload = &data[start..end];
    let mut c = Cur { b: payload, p: 1 };
    let short = |c: &mut Cur<'_>| -> Option<(usize, usize)> {
        let n = c.u16()? as usize;
        let at = c.p;
        c.take(n)?;
        Some((at, n))
    };
    match payload[0] {
        ENQUEUE => {
            let id = c.u64()?;
            if id >= ID_LIMIT {
                return None;
            }
            let n = c.u16()? as usize;
            let mut queues = Vec::with_capacity(n);
            for _ in 0..n {
                let (va, vn) = short(&mut c)?;
                let (qa, qn) = short(&mut c)?;
                queues.push(scan.key(&payload[va..va + vn], &payload[qa..qa + qn])?);
            }
            // The broker never lists a queue twice; a record that does must
            // not recover the message twice into it.
            if queues.len() > 1 {
                queues.sort_unstable();
                queues.dedup();
            }
            let (xa, xn) = short(&mut c)?;
            let exchange = scan.exchange(&payload[xa..xa + xn])?;
            let key_len = *c.take(1)?.first()?;
            let ml = c.u32()? as usize;
            let ma = c.p;
            c.take(ml)?;
            let bl = c.u32()? as usize;
            let ba = c.p;
            c.take(bl)?;
            scan.max_id = scan.max_id.max(id);
            let entry = Entry {
                seg,
                queues,
                delivered: Vec::new(),
                msg: Recovered {
                    id,
                    redelivered: false,
                    exchange,
                    meta: data.slice(start + ma..start + ma + ml),
                    key_len,
                    body: data.slice(start + ba..start + ba + bl),
                },
            };
            scan.insert(id, entry);
        }
        kind @ (REMOVE | DELIVERED) => {
            let id = c.u64()?;
            let (va, vn) = short(&mut c)?;
            let (qa, qn) = short(&mut c)?;
            let q = scan.key(&payload[va..va + vn], &payload[qa..qa + qn])?;
            let remove = kind == REMOVE;
            scan.mark(id, |e: &mut Entry| {
                if remove {
                    e.queues.retain(|x| *x != q);
                } else if !e.delivered.contains(&q) {
                    e.delivered.push(q);
                }
                remove && e.queues.is_empty()
            });
        }
        _ => return None,
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(q: &str) -> QueueKey {
        QueueKey {
            vhost: "/".into(),
            queue: q.into(),
        }
    }

    fn sync(log: &Log, seq: u64) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while log.sync_state().synced < seq {
            assert!(Instant::now() < deadline, "not synced");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    fn segments(dir: &Path) -> Vec<u64> {
        let mut v: Vec<u64> = fs::read_dir(dir)
            .unwrap()
            .filter_map(|e| {
                e.ok()?
                    .file_name()
                    .to_str()?
                    .strip_suffix(".seg")?
                    .parse()
                    .ok()
            })
            .collect();
        v.sort();
        v
    }

    /// Found by the `store_record` and `store_recover` fuzz targets: an
    /// enqueue record whose id lies far past the others (here 2^44, between
    /// ids 1 and 2; the fuzzer's had 2^52 and u64::MAX) made recovery size
    /// its id-indexed vector by the id, a multi-petabyte allocation that
    /// aborted the broker at start-up. Three records: id 1, 2^44, 2, each
    /// held by queue "/" "q", empty exchange, meta and body.
    const FAR_APART_IDS: &[u8] = b"\x00\x00\x00\x1c\x1b\xac\x7f\xdf\x01\x00\x00\x00\x00\x00\x00\x00\x01\x00\x01\x00\x01/\x00\x01q\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\
        \x00\x00\x00\x1c&\xdcc\xf7\x01\x00\x00\x10\x00\x00\x00\x00\x00\x00\x01\x00\x01/\x00\x01q\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\
        \x00\x00\x00\x1c\xb4\x052\x15\x01\x00\x00\x00\x00\x00\x00\x00\x02\x00\x01\x00\x01/\x00\x01q\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00";

    #[test]
    fn fuzz_regression_far_apart_ids_do_not_size_recovery() {
        assert_eq!(decode_segment(FAR_APART_IDS), (3, FAR_APART_IDS.len()));
        let dir = std::env::temp_dir().join(format!("warren-log-far-ids-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        fs::write(segment_path(&dir, 1), FAR_APART_IDS).unwrap();
        let (log, rec) = Log::open_with(&dir, 4096).unwrap();
        assert_eq!((rec.records, rec.truncated), (3, 0));
        let ids: Vec<u64> = rec.queues[&key("q")].iter().map(|m| m.id).collect();
        assert_eq!(ids, [1, 2, 1 << 44], "recovered in id order");
        assert!(log.next_id() > 1 << 44);
        log.close();
        let _ = fs::remove_dir_all(&dir);
    }

    /// Found by the `store_recover` fuzz target: an enqueue record that
    /// lists the same queue twice (the broker de-duplicates, so only a
    /// corrupt record does) recovered the message twice into that queue.
    /// One record: id 7, queues "/" "q" and "/" "q", empty exchange, meta, body.
    const SAME_QUEUE_TWICE: &[u8] =
        b"\x00\x00\x00\x22Iz\x9e~\x01\x00\x00\x00\x00\x00\x00\x00\x07\x00\x02\x00\x01/\x00\x01q\x00\x01/\x00\x01q\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00";

    #[test]
    fn fuzz_regression_queue_listed_twice_recovers_once() {
        assert_eq!(
            decode_segment(SAME_QUEUE_TWICE),
            (1, SAME_QUEUE_TWICE.len())
        );
        let dir = std::env::temp_dir().join(format!("warren-log-twice-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        fs::write(segment_path(&dir, 1), SAME_QUEUE_TWICE).unwrap();
        let (log, rec) = Log::open_with(&dir, 4096).unwrap();
        let ids: Vec<u64> = rec.queues[&key("q")].iter().map(|m| m.id).collect();
        assert_eq!(ids, [7]);
        log.close();
        let _ = fs::remove_dir_all(&dir);
    }

    /// Found by the `store_recover` fuzz target: an enqueue record with id
    /// u64::MAX overflowed the next message id (a panic in debug builds, ids
    /// handed out again from 0 in release). Two records: id 3 and id
    /// u64::MAX, each held by "/" "q"; the second is corrupt and cut.
    const ID_AT_U64_MAX: &[u8] = b"\x00\x00\x00\x1c\xd1b\x09S\x01\x00\x00\x00\x00\x00\x00\x00\x03\x00\x01\x00\x01/\x00\x01q\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\
        \x00\x00\x00\x1c\x16\x112n\x01\xff\xff\xff\xff\xff\xff\xff\xff\x00\x01\x00\x01/\x00\x01q\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00";

    #[test]
    fn fuzz_regression_id_at_u64_max_is_corrupt() {
        assert_eq!(decode_segment(ID_AT_U64_MAX), (1, 36));
        let dir = std::env::temp_dir().join(format!("warren-log-max-id-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        fs::write(segment_path(&dir, 1), ID_AT_U64_MAX).unwrap();
        let (log, rec) = Log::open_with(&dir, 4096).unwrap();
        assert_eq!((rec.records, rec.truncated), (1, 36));
        assert_eq!(rec.queues[&key("q")].len(), 1);
        assert_eq!(log.next_id(), 4);
        log.close();
        let _ = fs::remove_dir_all(&dir);
    }

    /// Found by the `store_recover` fuzz target (as a second recovery that
    /// disagreed with the first): recovery interned queue names as
    /// `vhost NUL queue`, so ("v", "\0q") and ("v\0", "q") were one queue
    /// and one queue's messages came back in the other. Two records: id 1
    /// held by ("v", "\0q"), id 2 by ("v\0", "q").
    const NUL_IN_NAMES: &[u8] = b"\x00\x00\x00\x1du\xbb\x07L\x01\x00\x00\x00\x00\x00\x00\x00\x01\x00\x01\x00\x01v\x00\x02\x00q\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\
        \x00\x00\x00\x1da\xc7\xc3\x03\x01\x00\x00\x00\x00\x00\x00\x00\x02\x00\x01\x00\x02v\x00\x00\x01q\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00";

    #[test]
    fn fuzz_regression_names_with_nul_stay_apart() {
        let dir = std::env::temp_dir().join(format!("warren-log-nul-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        fs::write(segment_path(&dir, 1), NUL_IN_NAMES).unwrap();
        let (log, rec) = Log::open_with(&dir, 4096).unwrap();
        let ids = |vhost: &str, queue: &str| -> Vec<u64> {
            let k = QueueKey {
                vhost: vhost.into(),
                queue: queue.into(),
            };
            rec.queues[&k].iter().map(|m| m.id).collect()
        };
        assert_eq!(ids("v", "\0q"), [1]);
        assert_eq!(ids("v\0", "q"), [2]);
        log.close();
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn long_lived_message_is_copied_forward_and_old_segments_reclaimed() {
        let dir = std::env::temp_dir().join(format!("warren-log-compact-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        {
            let (log, _) = Log::open_with(&dir, 4096).unwrap();
            let mut rec = Vec::new();
            // One message that is never acked, then churn that is.
            let keeper = log.next_id();
            encode_enqueue(&mut rec, keeper, &[key("q")], "x", b"kprops", 1, b"keep me");
            let mut last = log.append_enqueue(keeper, &[key("q")], &rec);
            for i in 0..400u32 {
                let id = log.next_id();
                rec.clear();
                encode_enqueue(&mut rec, id, &[key("q")], "x", b"k", 1, &[i as u8; 64]);
                last = log.append_enqueue(id, &[key("q")], &rec);
                log.append_remove(id, &key("q"));
                if i % 50 == 0 {
                    sync(&log, last);
                }
            }
            sync(&log, last);
            // Let the writer run a few more rounds (compaction copies, then deletion).
            for _ in 0..3 {
                log.append_delivered(keeper, &key("q"));
                let seq = log.pending.lock().seq;
                sync(&log, seq);
            }
            let segs = segments(&dir);
            assert!(
                !segs.contains(&1),
                "the pinned first segment should be gone: {segs:?}"
            );
            assert!(
                segs.len() <= 3,
                "dead segments should be reclaimed: {segs:?}"
            );
            log.close();
        }
        let (log, rec) = Log::open_with(&dir, 4096).unwrap();
        let q = &rec.queues[&key("q")];
        assert_eq!(q.len(), 1);
        assert_eq!(&q[0].body[..], b"keep me");
        assert!(q[0].redelivered);
        log.close();
        let _ = fs::remove_dir_all(&dir);
    }
}
