//! Segment summaries: once a segment is sealed (the writer moved on to the
//! next), a background thread walks it once and writes `NNNNNNNNNN.sum`
//! beside it: per queue, the runs of ids enqueued, removed and delivered in
//! it and the byte span of its records. Start-up applies a summary instead
//! of reading the segment's records, so recovery reads a few runs per
//! segment rather than every record, and its time follows the number of
//! segments.
//!
//! A summary is only a shortcut: one that is missing, fails its checksum,
//! names another segment length, or overlaps ids already seen, is ignored
//! and the segment is read as before. A segment holding a compaction copy
//! gets none (a copy's place in its queue needs the record itself). Applying
//! a segment's enqueues, then its removals, then its delivered markers gives
//! what the record walk gives: within a segment a message's enqueue comes
//! before its markers, and a removal clears its delivered flag either way.
//!
//! Layout (big-endian): `magic: 8 | segment length: u64 | records: u64 |
//! max id: u64 | enqueued runs | queue count: u32 | per queue (vhost: str16,
//! queue: str16, span: 4 x u64 (start, end, min id, max id; all 0 when it
//! has none), count: u64, body bytes: u64, id runs, removed runs, delivered
//! runs) | crc32 of all before: u32`; runs are `n: u32 | n x (first, end)`.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use parking_lot::Mutex;

use super::ranges::IdRanges;
use super::record::{Record, Records};
use super::tail::Span;

const MAGIC: &[u8; 8] = b"WSUM\x00\x00\x00\x01";

/// The summarizer drops the pages it walked every this many bytes.
const DROP_EVERY: usize = 4 << 20;

/// What one queue did in a segment.
#[derive(Default, Debug, PartialEq, Eq)]
pub(crate) struct QueueSummary {
    pub vhost: String,
    pub queue: String,
    pub span: Option<Span>,
    pub count: u64,
    pub bytes: u64,
    pub ids: Vec<(u64, u64)>,
    pub removed: Vec<(u64, u64)>,
    pub delivered: Vec<(u64, u64)>,
}

/// What a segment holds, in runs (see the module docs).
#[derive(Default, Debug, PartialEq, Eq)]
pub(crate) struct Summary {
    pub len: u64,
    pub records: u64,
    pub max_id: u64,
    pub enqueued: Vec<(u64, u64)>,
    pub queues: Vec<QueueSummary>,
}

/// Append `id` to runs kept in arrival order.
fn push_run(runs: &mut Vec<(u64, u64)>, id: u64) {
    match runs.last_mut() {
        Some((_, end)) if *end == id => *end += 1,
        _ => runs.push((id, id + 1)),
    }
}

pub(crate) fn summary_path(dir: &Path, seg: u64) -> PathBuf {
    dir.join(format!("{seg:010}.sum"))
}

impl Summary {
    /// Summarize a whole, valid segment; `None` when it holds a compaction
    /// copy or a record that does not hold (it is then always read).
    #[cfg(test)]
    pub fn of(data: &[u8]) -> Option<Summary> {
        Summary::of_with(data, |_| {})
    }

    /// [`Summary::of`], telling `behind` how far the walk got after each
    /// record (so the caller can drop what was read from memory).
    pub fn of_with(data: &[u8], mut behind: impl FnMut(usize)) -> Option<Summary> {
        let mut s = Summary {
            len: data.len() as u64,
            ..Summary::default()
        };
        let mut at: HashMap<(Vec<u8>, Vec<u8>), usize> = HashMap::new();
        let mut queue = |s: &mut Summary, v: &[u8], q: &[u8]| -> usize {
            *at.entry((v.to_vec(), q.to_vec())).or_insert_with(|| {
                s.queues.push(QueueSummary {
                    vhost: String::from_utf8_lossy(v).into_owned(),
                    queue: String::from_utf8_lossy(q).into_owned(),
                    ..QueueSummary::default()
                });
                s.queues.len() - 1
            })
        };
        // Ids enqueued and ids named by markers so far: a second enqueue
        // of an id, or an enqueue after a marker naming it (neither is
        // written by the broker), is left to the record walk, whose order
        // a summary does not keep.
        let mut ids = IdRanges::default();
        let mut marked = IdRanges::default();
        let mut walk = Records::new(data);
        let mut from = 0u64;
        while let Some((_, rec)) = walk.next() {
            let end = walk.valid_to() as u64;
            behind(walk.valid_to());
            s.records += 1;
            match rec {
                Record::Enqueue(m) if m.copy => return None,
                Record::Enqueue(m) => {
                    if !ids.insert(m.id) || marked.contains(m.id) {
                        return None;
                    }
                    s.max_id = s.max_id.max(m.id);
                    push_run(&mut s.enqueued, m.id);
                    let mut seen = Vec::with_capacity(m.queues.len());
                    for (v, q) in m.queues.iter() {
                        let i = queue(&mut s, v, q);
                        if seen.contains(&i) {
                            continue;
                        }
                        seen.push(i);
                        let qs = &mut s.queues[i];
                        push_run(&mut qs.ids, m.id);
                        qs.count += 1;
                        qs.bytes += m.body.len() as u64;
                        let span = qs.span.get_or_insert(Span {
                            seg: 0,
                            start: from,
                            end,
                            min_id: m.id,
                            max_id: m.id,
                        });
                        span.end = end;
                        span.min_id = span.min_id.min(m.id);
                        span.max_id = span.max_id.max(m.id);
                    }
                }
                Record::Remove(m) => {
                    marked.insert(m.id);
                    let i = queue(&mut s, m.vhost, m.queue);
                    push_run(&mut s.queues[i].removed, m.id);
                }
                Record::RemoveRange(m, last) => {
                    let i = queue(&mut s, m.vhost, m.queue);
                    if m.id < last {
                        s.queues[i].removed.push((m.id, last));
                        marked.insert_run(m.id, last);
                    }
                }
                Record::Delivered(m) => {
                    marked.insert(m.id);
                    let i = queue(&mut s, m.vhost, m.queue);
                    push_run(&mut s.queues[i].delivered, m.id);
                }
            }
            from = end;
        }
        (walk.stopped().is_none() && from == s.len).then_some(s)
    }

    fn encode(&self) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        for n in [self.len, self.records, self.max_id] {
            out.extend_from_slice(&n.to_be_bytes());
        }
        put_runs(&mut out, &self.enqueued);
        out.extend_from_slice(&(self.queues.len() as u32).to_be_bytes());
        for q in &self.queues {
            put_str(&mut out, &q.vhost);
            put_str(&mut out, &q.queue);
            let s = q.span.unwrap_or(Span {
                seg: 0,
                start: 0,
                end: 0,
                min_id: 0,
                max_id: 0,
            });
            for n in [s.start, s.end, s.min_id, s.max_id, q.count, q.bytes] {
                out.extend_from_slice(&n.to_be_bytes());
            }
            put_runs(&mut out, &q.ids);
            put_runs(&mut out, &q.removed);
            put_runs(&mut out, &q.delivered);
        }
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_be_bytes());
        out
    }

    fn decode(b: &[u8]) -> Option<Summary> {
        let (body, crc) = b.split_at_checked(b.len().checked_sub(4)?)?;
        if crc32fast::hash(body).to_be_bytes() != crc || !body.starts_with(MAGIC) {
            return None;
        }
        let mut c = Cur(&body[MAGIC.len()..]);
        let mut s = Summary {
            len: c.u64()?,
            records: c.u64()?,
            max_id: c.u64()?,
            enqueued: c.runs()?,
            queues: Vec::new(),
        };
        for _ in 0..c.u32()? {
            let vhost = c.str()?;
            let queue = c.str()?;
            let (start, end, min_id, max_id) = (c.u64()?, c.u64()?, c.u64()?, c.u64()?);
            let span = (end > start).then_some(Span {
                seg: 0,
                start,
                end,
                min_id,
                max_id,
            });
            s.queues.push(QueueSummary {
                vhost,
                queue,
                span,
                count: c.u64()?,
                bytes: c.u64()?,
                ids: c.runs()?,
                removed: c.runs()?,
                delivered: c.runs()?,
            });
        }
        c.0.is_empty().then_some(s)
    }

    /// The summary of segment `seg` of `dir`, if there is a usable one for
    /// a segment of `len` bytes.
    pub fn read(dir: &Path, seg: u64, len: u64) -> Option<Summary> {
        let b = fs::read(summary_path(dir, seg)).ok()?;
        Summary::decode(&b).filter(|s| s.len == len)
    }
}

/// Summarize sealed segment `seg` of `dir` and write its summary durably
/// (temporary file, fsync, rename). Failures only cost start-up time, so
/// they are logged at debug level.
pub(crate) fn write_summary(dir: &Path, seg: u64) {
    // One at a time: each walks a whole segment.
    static ONE: Mutex<()> = Mutex::new(());
    let _one = ONE.lock();
    let path = super::segment_path(dir, seg);
    let Ok(file) = File::open(&path) else { return };
    // SAFETY: a sealed segment is never written again, and only shrunk by
    // recovery at start-up, before any summarizer runs.
    let Ok(map) = (unsafe { memmap2::Mmap::map(&file) }) else {
        return;
    };
    // Drop the pages walked from the resident set as the walk goes, so a
    // summary costs a few MiB of RSS, not the segment's size.
    let mut dropped = 0usize;
    let s = Summary::of_with(&map, |pos| {
        let upto = pos & !(DROP_EVERY - 1);
        if upto > dropped {
            // SAFETY: a read-only file mapping: DONTNEED only discards
            // resident pages, which come back from the file if read again.
            let _ = unsafe {
                map.unchecked_advise_range(
                    memmap2::UncheckedAdvice::DontNeed,
                    dropped,
                    upto - dropped,
                )
            };
            dropped = upto;
        }
    });
    // SAFETY: as above.
    let _ = unsafe { map.unchecked_advise(memmap2::UncheckedAdvice::DontNeed) };
    let Some(s) = s else { return };
    let tmp = dir.join(format!("{seg:010}.sum.tmp"));
    let done = File::create(&tmp)
        .and_then(|mut f| {
            f.write_all(&s.encode())?;
            f.sync_all()
        })
        .and_then(|()| fs::rename(&tmp, summary_path(dir, seg)));
    if let Err(e) = done {
        tracing::debug!("no summary for {}: {e}", path.display());
        let _ = fs::remove_file(&tmp);
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    let b = &s.as_bytes()[..s.len().min(u16::MAX as usize)];
    out.extend_from_slice(&(b.len() as u16).to_be_bytes());
    out.extend_from_slice(b);
}

fn put_runs(out: &mut Vec<u8>, runs: &[(u64, u64)]) {
    out.extend_from_slice(&(runs.len() as u32).to_be_bytes());
    for (a, b) in runs {
        out.extend_from_slice(&a.to_be_bytes());
        out.extend_from_slice(&b.to_be_bytes());
    }
}

struct Cur<'a>(&'a [u8]);

impl Cur<'_> {
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        let (a, b) = self.0.split_at_checked(n)?;
        self.0 = b;
        Some(a)
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_be_bytes(self.take(4)?.try_into().ok()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_be_bytes(self.take(8)?.try_into().ok()?))
    }
    fn str(&mut self) -> Option<String> {
        let n = u16::from_be_bytes(self.take(2)?.try_into().ok()?) as usize;
        String::from_utf8(self.take(n)?.to_vec()).ok()
    }
    fn runs(&mut self) -> Option<Vec<(u64, u64)>> {
        let n = self.u32()? as usize;
        if n > self.0.len() / 16 {
            return None;
        }
        (0..n)
            .map(|_| Some((self.u64()?, self.u64()?)))
            .filter(|r| r.is_none_or(|(a, b)| a < b))
            .collect::<Option<Vec<_>>>()
            .filter(|v| v.len() == n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::record::{encode_marker, Enqueue, Kind};
    use crate::log::QueueKey;

    #[test]
    fn a_segment_summarizes_and_round_trips() {
        let q = QueueKey {
            vhost: "/".into(),
            queue: "q".into(),
        };
        let mut seg = Vec::new();
        for id in 1..=10u64 {
            Enqueue {
                id,
                queues: std::slice::from_ref(&q),
                exchange: "",
                meta: b"k",
                key_len: 1,
                body: b"body",
                copy: false,
            }
            .encode(&mut seg);
        }
        encode_marker(&mut seg, Kind::Delivered, 2, &q);
        encode_marker(&mut seg, Kind::Remove, 3, &q);
        encode_marker(&mut seg, Kind::Remove, 4, &q);
        let s = Summary::of(&seg).expect("summary");
        assert_eq!(
            (s.records, s.max_id, s.enqueued.clone()),
            (13, 10, vec![(1, 11)])
        );
        let qs = &s.queues[0];
        assert_eq!((qs.count, qs.bytes), (10, 40));
        assert_eq!(
            (qs.removed.clone(), qs.delivered.clone()),
            (vec![(3, 5)], vec![(2, 3)])
        );
        assert_eq!(Summary::decode(&s.encode()), Some(s));
        let mut bad = Summary::of(&seg).unwrap().encode();
        bad[20] ^= 1;
        assert_eq!(Summary::decode(&bad), None, "checksum");
    }
}
