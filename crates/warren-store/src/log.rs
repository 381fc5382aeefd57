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
use std::io::{BufReader, Read, Seek, SeekFrom, Write};
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
    /// Exchange it was published to.
    pub exchange: String,
    /// Routing key then AMQP properties.
    pub meta: Bytes,
    /// Length of the routing key inside `meta`.
    pub key_len: u8,
    /// Body.
    pub body: Bytes,
}

struct Pending {
    /// (segment number, bytes) chunks not yet written.
    chunks: Vec<(u64, Vec<u8>)>,
    seq: u64,
    segment: u64,
    segment_bytes: u64,
    /// id -> (segment, queues still holding it)
    index: HashMap<u64, (u64, u32)>,
    /// segment -> messages still live in it
    live: BTreeMap<u64, u64>,
    closed: bool,
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
    healthy: AtomicBool,
    /// fsync latencies in microseconds, for metrics.
    pub fsync_micros: Mutex<Vec<u32>>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
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
    fn str(&mut self) -> Option<String> {
        let n = self.u16()? as usize;
        String::from_utf8(self.take(n)?.to_vec()).ok()
    }
    fn key(&mut self) -> Option<QueueKey> {
        Some(QueueKey {
            vhost: self.str()?,
            queue: self.str()?,
        })
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
    queues: Vec<QueueKey>,
    delivered: Vec<QueueKey>,
    msg: Recovered,
}

impl Log {
    /// Open (creating) the log in `dir`, recover its contents and start the
    /// writer thread.
    pub fn open(dir: &Path) -> Result<(Arc<Log>, Recovery), StoreError> {
        fs::create_dir_all(dir).map_err(|e| StoreError::io(dir, e))?;
        let started = Instant::now();
        let mut segments: Vec<u64> = fs::read_dir(dir)
            .map_err(|e| StoreError::io(dir, e))?
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().to_str()?.strip_suffix(".seg")?.parse().ok())
            .collect();
        segments.sort_unstable();
        let mut entries: HashMap<u64, Entry> = HashMap::new();
        let mut records = 0u64;
        let mut truncated = 0u64;
        let mut max_id = 0u64;
        for &seg in &segments {
            let path = segment_path(dir, seg);
            let (n, cut) = read_segment(&path, seg, &mut entries, &mut max_id)?;
            records += n;
            truncated += cut;
        }
        // Rebuild the index and live counts from what survived.
        let mut index = HashMap::new();
        let mut live: BTreeMap<u64, u64> = segments.iter().map(|s| (*s, 0)).collect();
        let mut queues: HashMap<QueueKey, Vec<Recovered>> = HashMap::new();
        for (id, e) in entries {
            if e.queues.is_empty() {
                continue;
            }
            index.insert(id, (e.seg, e.queues.len() as u32));
            *live.entry(e.seg).or_default() += 1;
            for q in e.queues {
                let mut m = e.msg.clone();
                m.redelivered = e.delivered.contains(&q);
                queues.entry(q).or_default().push(m);
            }
        }
        for v in queues.values_mut() {
            v.sort_unstable_by_key(|m| m.id);
        }
        let segment = segments.last().map_or(1, |s| s + 1);
        let (state, _) = watch::channel(SyncState::default());
        let log = Arc::new(Log {
            dir: dir.to_path_buf(),
            pending: Mutex::new(Pending {
                chunks: Vec::new(),
                seq: 0,
                segment,
                segment_bytes: 0,
                index,
                live,
                closed: false,
            }),
            wake: Condvar::new(),
            state,
            next_id: AtomicU64::new(max_id + 1),
            healthy: AtomicBool::new(true),
            fsync_micros: Mutex::new(Vec::new()),
            thread: Mutex::new(None),
        });
        let writer = log.clone();
        let handle = std::thread::Builder::new()
            .name("warren-store".into())
            .spawn(move || writer.run_writer())
            .map_err(|e| StoreError::io(dir, e))?;
        *log.thread.lock() = Some(handle);
        log.delete_dead_segments();
        Ok((
            log,
            Recovery {
                queues,
                records,
                truncated,
                elapsed: started.elapsed(),
            },
        ))
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

    /// Append an encoded enqueue record for message `id` held by `queues`
    /// queues; returns the sequence number to wait for.
    pub fn append_enqueue(&self, id: u64, queues: u32, record: &[u8]) -> u64 {
        let mut p = self.pending.lock();
        let seg = p.segment;
        p.index.insert(id, (seg, queues));
        *p.live.entry(seg).or_default() += 1;
        self.push(&mut p, record)
    }

    /// A queue let go of message `id` (ack, reject, expiry, purge...).
    pub fn append_remove(&self, id: u64, q: &QueueKey) {
        let mut rec = Vec::with_capacity(32 + q.vhost.len() + q.queue.len());
        encode_marker(&mut rec, REMOVE, id, q);
        let mut p = self.pending.lock();
        if let Some((seg, refs)) = p.index.get_mut(&id) {
            *refs -= 1;
            if *refs == 0 {
                let seg = *seg;
                p.index.remove(&id);
                if let Some(l) = p.live.get_mut(&seg) {
                    *l -= 1;
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
        if p.segment_bytes > 0 && p.segment_bytes + record.len() as u64 > SEGMENT_SIZE {
            p.segment += 1;
            p.segment_bytes = 0;
            let seg = p.segment;
            p.live.entry(seg).or_insert(0);
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
                    self.state.send_modify(|s| {
                        s.failed = seq;
                        s.synced = seq;
                    });
                }
            }
            self.delete_dead_segments_with(&mut files);
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
        let mut lat = self.fsync_micros.lock();
        if lat.len() < 100_000 {
            lat.push(t.elapsed().as_micros() as u32);
        }
        Ok(())
    }

    fn delete_dead_segments(&self) {
        self.delete_dead_segments_with(&mut BTreeMap::new());
    }

    fn delete_dead_segments_with(&self, files: &mut BTreeMap<u64, File>) {
        let dead: Vec<u64> = {
            let mut p = self.pending.lock();
            let current = p.segment;
            let mut dead = Vec::new();
            for (&seg, &live) in p.live.iter() {
                if seg >= current || live > 0 {
                    break;
                }
                dead.push(seg);
            }
            for s in &dead {
                p.live.remove(s);
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
        if let Some(h) = self.thread.lock().take() {
            let _ = h.join();
        }
    }
}

/// Read one segment into `entries`; truncates a torn or corrupt tail.
fn read_segment(
    path: &Path,
    seg: u64,
    entries: &mut HashMap<u64, Entry>,
    max_id: &mut u64,
) -> Result<(u64, u64), StoreError> {
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| StoreError::io(path, e))?;
    let size = f.metadata().map_err(|e| StoreError::io(path, e))?.len();
    let mut r = BufReader::with_capacity(1 << 20, &mut f);
    let mut pos = 0u64;
    let mut records = 0u64;
    let mut header = [0u8; 8];
    let mut payload = Vec::new();
    let good_end = loop {
        if pos == size {
            break pos;
        }
        if size - pos < 8 || r.read_exact(&mut header).is_err() {
            break pos;
        }
        let len = u32::from_be_bytes(header[..4].try_into().expect("4")) as u64;
        let crc = u32::from_be_bytes(header[4..].try_into().expect("4"));
        if len == 0 || pos + 8 + len > size {
            break pos;
        }
        payload.resize(len as usize, 0);
        if r.read_exact(&mut payload).is_err() || crc32fast::hash(&payload) != crc {
            break pos;
        }
        if !apply(&payload, seg, entries, max_id) {
            break pos;
        }
        records += 1;
        pos += 8 + len;
    };
    drop(r);
    let cut = size - good_end;
    if cut > 0 {
        tracing::warn!(
            "message store: {} has a torn or corrupt record at byte {good_end}; truncating {cut} bytes",
            path.display()
        );
        f.set_len(good_end).map_err(|e| StoreError::io(path, e))?;
        f.seek(SeekFrom::End(0))
            .map_err(|e| StoreError::io(path, e))?;
        f.sync_all().map_err(|e| StoreError::io(path, e))?;
    }
    Ok((records, cut))
}

fn apply(payload: &[u8], seg: u64, entries: &mut HashMap<u64, Entry>, max_id: &mut u64) -> bool {
    let mut c = Cur { b: payload, p: 1 };
    let parsed = (|| -> Option<()> {
        match payload[0] {
            ENQUEUE => {
                let id = c.u64()?;
                let n = c.u16()? as usize;
                let mut queues = Vec::with_capacity(n);
                for _ in 0..n {
                    queues.push(c.key()?);
                }
                let exchange = c.str()?;
                let key_len = *c.take(1)?.first()?;
                let ml = c.u32()? as usize;
                let meta = Bytes::copy_from_slice(c.take(ml)?);
                let bl = c.u32()? as usize;
                let body = Bytes::copy_from_slice(c.take(bl)?);
                *max_id = (*max_id).max(id);
                // A copy of a message already seen (compaction) is ignored.
                entries.entry(id).or_insert(Entry {
                    seg,
                    queues,
                    delivered: Vec::new(),
                    msg: Recovered {
                        id,
                        redelivered: false,
                        exchange,
                        meta,
                        key_len,
                        body,
                    },
                });
            }
            REMOVE | DELIVERED => {
                let id = c.u64()?;
                let q = c.key()?;
                if let Some(e) = entries.get_mut(&id) {
                    if payload[0] == REMOVE {
                        e.queues.retain(|x| x != &q);
                        if e.queues.is_empty() {
                            entries.remove(&id);
                        }
                    } else if !e.delivered.contains(&q) {
                        e.delivered.push(q);
                    }
                }
            }
            _ => return None,
        }
        Some(())
    })();
    parsed.is_some()
}
