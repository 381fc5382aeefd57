//! Recovery: read every segment at start-up through the CRC-checked
//! [`Records`] walk, cut each file at its first torn or corrupt record, and
//! rebuild the live messages per queue and the log's index.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File, OpenOptions};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::live::LiveIndex;
use super::record::{EnqueueView, Marker, Record, RecordError, Records};
use super::state::{IdMap, Pending, SegStat};
use super::{segment_path, QueueKey, Recovered};
use crate::StoreError;

/// How far past twice the number of entries it holds the recovery vector
/// may grow for one id; ids further out go to the map.
const DENSE_SLACK: usize = 4096;

/// Written after a clean close; its absence at start-up means a crash.
const CLEAN_MARKER: &str = "CLEAN_SHUTDOWN";

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

    /// Apply one record of segment `seg`, whose bytes are `data`.
    fn apply(&mut self, data: &Bytes, seg: u64, rec: Record<'_>) {
        match rec {
            Record::Enqueue(m) => self.enqueue(data, seg, m),
            Record::Remove(m) => self.marker(m, true),
            Record::Delivered(m) => self.marker(m, false),
        }
    }

    fn enqueue(&mut self, data: &Bytes, seg: u64, m: EnqueueView<'_>) {
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
        self.max_id = self.max_id.max(m.id);
        let entry = Entry {
            seg,
            queues,
            delivered: Vec::new(),
            msg: Recovered {
                id: m.id,
                redelivered: false,
                exchange: self.exchange(m.exchange),
                meta: data.slice_ref(m.meta),
                key_len: m.key_len,
                body: data.slice_ref(m.body),
            },
        };
        self.insert(m.id, entry);
    }

    fn marker(&mut self, m: Marker<'_>, remove: bool) {
        let q = self.key(m.vhost, m.queue);
        self.mark(m.id, |e: &mut Entry| {
            if remove {
                e.queues.retain(|x| *x != q);
            } else if !e.delivered.contains(&q) {
                e.delivered.push(q);
            }
            remove && e.queues.is_empty()
        });
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
/// rebuild the index and the live messages per queue.
pub(super) fn recover(dir: &Path) -> Result<Rebuilt, StoreError> {
    fs::create_dir_all(dir).map_err(|e| StoreError::io(dir, e))?;
    let started = Instant::now();
    let segments = list_segments(dir)?;
    let mut scan = Scan::default();
    let mut records = 0u64;
    let mut truncated = 0u64;
    for &seg in &segments {
        let path = segment_path(dir, seg);
        let (n, cut) = read_segment(&path, seg, &mut scan)?;
        records += n;
        truncated += cut;
    }
    let next_id = scan.max_id + 1;
    let segment = segments.last().map_or(1, |s| s + 1);
    // Totals are unknown after a restart; count live ones as the total.
    let mut segs: BTreeMap<u64, SegStat> =
        segments.iter().map(|s| (*s, SegStat::default())).collect();
    let (index, by_key) = rebuild(&mut scan, &mut segs);
    let key_names = scan.keys.clone();
    let keys: HashMap<QueueKey, u32> = key_names
        .iter()
        .enumerate()
        .map(|(i, k)| (k.clone(), i as u32))
        .collect();
    let queues = scan
        .keys
        .into_iter()
        .zip(by_key)
        .filter(|(_, v)| !v.is_empty())
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
        },
        next_id,
        recovery: Recovery {
            queues,
            records,
            truncated,
            elapsed: started.elapsed(),
        },
    })
}

/// Visit the surviving entries in id order: fill the index and the live
/// counts in `segs`, and return the index with the messages per interned
/// queue key (each list sorted, since entries come in id order).
fn rebuild(scan: &mut Scan, segs: &mut BTreeMap<u64, SegStat>) -> (LiveIndex, Vec<Vec<Recovered>>) {
    let mut index = LiveIndex::default();
    let mut by_key: Vec<Vec<Recovered>> = vec![Vec::new(); scan.keys.len()];
    // Entries kept in the map (ids below the first segment's first id,
    // copies made by compaction, or far above it) merge in id order.
    let mut sparse: Vec<Entry> = std::mem::take(&mut scan.sparse).into_values().collect();
    sparse.sort_unstable_by_key(|e| e.msg.id);
    let mut sparse = sparse.into_iter().peekable();
    let mut dense = std::mem::take(&mut scan.entries)
        .into_iter()
        .flatten()
        .peekable();
    let in_order = std::iter::from_fn(|| match (sparse.peek(), dense.peek()) {
        (Some(a), Some(b)) if a.msg.id > b.msg.id => dense.next(),
        (Some(_), _) => sparse.next(),
        (None, _) => dense.next(),
    });
    for e in in_order {
        if e.queues.is_empty() {
            continue;
        }
        let st = segs.entry(e.seg).or_default();
        st.live += 1;
        st.total += 1;
        index.insert(e.msg.id, e.seg, e.queues.clone());
        for &q in &e.queues {
            let mut m = e.msg.clone();
            m.redelivered = e.delivered.contains(&q);
            by_key[q as usize].push(m);
        }
    }
    (index, by_key)
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
    for (_, rec) in walk.by_ref() {
        scan.apply(data, seg, rec);
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
