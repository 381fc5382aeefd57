//! What a queue held at start-up, read back from the log's segments a
//! chunk at a time: recovery leaves each queue a [`QueueTail`] (its live
//! ids as runs, and where its records are) instead of its messages, so a
//! backlog of any length costs memory for its runs, and the messages past
//! a queue's window are read from the log itself rather than written again
//! to page files.
//!
//! The segments a tail still has to read are pinned ([`Pins`]): compaction
//! does not copy them away and delete them under the reader. A segment is
//! only deleted once nothing in it is live, and a tail's unread messages are
//! live until the queue takes them.

use std::collections::{BTreeMap, VecDeque};
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::Mutex;

use super::ranges::IdRanges;
use super::record::{Record, RecordError, Records, HEADER};
use super::{segment_path, QueueKey, Recovered};

/// Segments some tail still reads, with how many tails read each.
#[derive(Default)]
pub(crate) struct Pins(Mutex<BTreeMap<u64, usize>>);

impl Pins {
    fn pin(&self, seg: u64) {
        *self.0.lock().entry(seg).or_default() += 1;
    }

    fn unpin(&self, seg: u64) {
        let mut m = self.0.lock();
        if let Some(n) = m.get_mut(&seg) {
            *n -= 1;
            if *n == 0 {
                m.remove(&seg);
            }
        }
    }

    /// True while a tail still has to read `seg`.
    pub(crate) fn pinned(&self, seg: u64) -> bool {
        self.0.lock().contains_key(&seg)
    }
}

/// The byte range of a segment holding a queue's records (among others'),
/// and the ids of its records there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Span {
    pub seg: u64,
    pub start: u64,
    pub end: u64,
    pub min_id: u64,
    pub max_id: u64,
}

/// A recovered queue's messages, read back in order (see the module docs).
pub struct QueueTail {
    key: QueueKey,
    dir: PathBuf,
    spans: VecDeque<Span>,
    /// Ids not yet read back (the early ones excluded).
    live: IdRanges,
    delivered: IdRanges,
    all_redelivered: bool,
    /// Compaction copies whose originals are gone, by id: merged in by id.
    early: VecDeque<Recovered>,
    bytes: u64,
    pins: Arc<Pins>,
    file: Option<(u64, File)>,
    exchange: Option<Arc<str>>,
}

impl QueueTail {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        dir: &Path,
        key: QueueKey,
        spans: Vec<Span>,
        live: IdRanges,
        delivered: IdRanges,
        early: Vec<Recovered>,
        bytes: u64,
        pins: Arc<Pins>,
    ) -> QueueTail {
        for s in &spans {
            pins.pin(s.seg);
        }
        QueueTail {
            key,
            dir: dir.to_path_buf(),
            spans: spans.into(),
            live,
            delivered,
            all_redelivered: false,
            early: early.into(),
            bytes,
            pins,
            file: None,
            exchange: None,
        }
    }

    /// Messages not yet read back.
    pub fn len(&self) -> usize {
        (self.live.len() as usize) + self.early.len()
    }

    /// True when everything has been read back.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Body bytes not yet read back: an estimate (recovery does not keep
    /// the size of each message), exact when nothing was removed.
    pub fn bytes_estimate(&self) -> u64 {
        self.bytes
    }

    /// Every message comes back redelivered (after a crash the newest
    /// delivered markers may be missing).
    pub(crate) fn set_all_redelivered(&mut self) {
        self.all_redelivered = true;
        for m in &mut self.early {
            m.redelivered = true;
        }
    }

    /// Ids of the messages not yet read back (a purge logs their removal
    /// without reading them).
    pub fn ids(&self) -> impl Iterator<Item = u64> + '_ {
        self.live.ids().chain(self.early.iter().map(|m| m.id))
    }

    /// The ids not yet read back as runs `first..end`, then the early ones
    /// one by one (as runs of one).
    pub fn id_runs(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.live
            .runs()
            .chain(self.early.iter().map(|m| (m.id, m.id + 1)))
    }

    /// The next messages in queue order, about `max` bytes of records read
    /// (at least one message); empty once everything was read back.
    pub fn pop_chunk(&mut self, max: usize) -> io::Result<Vec<Recovered>> {
        let mut out = Vec::new();
        while out.is_empty() && !self.live.is_empty() {
            let Some(span) = self.spans.front().copied() else {
                let n = self.live.len();
                self.live = IdRanges::default();
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{n} recovered messages not found in the log"),
                ));
            };
            if span.start >= span.end {
                self.pins.unpin(span.seg);
                self.spans.pop_front();
                continue;
            }
            let used = self.read_span(span, max, &mut out)?;
            self.spans[0].start += used;
        }
        if self.live.is_empty() {
            for s in self.spans.drain(..) {
                self.pins.unpin(s.seg);
            }
            self.file = None;
        }
        Ok(self.merge_early(out))
    }

    /// Early messages go before the first read-back one with a higher id
    /// (all of them once nothing else is left).
    fn merge_early(&mut self, lazy: Vec<Recovered>) -> Vec<Recovered> {
        if self.early.is_empty() {
            return lazy;
        }
        let mut out = Vec::with_capacity(lazy.len() + 1);
        for m in lazy {
            while self.early.front().is_some_and(|e| e.id < m.id) {
                out.extend(self.early.pop_front());
            }
            out.push(m);
        }
        if self.live.is_empty() {
            out.extend(self.early.drain(..));
        }
        out
    }

    /// Read the records of `span` from its start, about `max` bytes (one
    /// whole record at least), keeping this queue's live ones in `out`;
    /// returns the bytes consumed.
    fn read_span(&mut self, span: Span, max: usize, out: &mut Vec<Recovered>) -> io::Result<u64> {
        let left = span.end - span.start;
        let want = left.min(max.max(HEADER) as u64) as usize;
        let mut data = self.read_at(span.seg, span.start, want)?;
        let whole = first_frame_len(&data)?;
        if whole > data.len() {
            if whole as u64 > left {
                return Err(corrupt(span.seg, span.start, "record runs past its span"));
            }
            data = self.read_at(span.seg, span.start, whole)?;
        }
        let data = Bytes::from(data);
        let mut walk = Records::new(&data);
        for (_, rec) in walk.by_ref() {
            let Record::Enqueue(m) = rec else { continue };
            let mine = m
                .queues
                .iter()
                .any(|(v, q)| v == self.key.vhost.as_bytes() && q == self.key.queue.as_bytes());
            if !mine || !self.live.remove(m.id) {
                continue;
            }
            self.bytes = self.bytes.saturating_sub(m.body.len() as u64);
            let exchange = self.exchange(m.exchange);
            out.push(Recovered {
                id: m.id,
                redelivered: self.all_redelivered || self.delivered.remove(m.id),
                exchange,
                meta: data.slice_ref(m.meta),
                key_len: m.key_len,
                body: data.slice_ref(m.body),
            });
        }
        match walk.stopped() {
            None | Some(RecordError::Torn) if walk.valid_to() > 0 => Ok(walk.valid_to() as u64),
            why => Err(corrupt(
                span.seg,
                span.start + walk.valid_to() as u64,
                &why.map_or("no whole record".into(), |w| w.to_string()),
            )),
        }
    }

    fn read_at(&mut self, seg: u64, at: u64, len: usize) -> io::Result<Vec<u8>> {
        if self.file.as_ref().is_none_or(|(n, _)| *n != seg) {
            self.file = Some((seg, File::open(segment_path(&self.dir, seg))?));
        }
        let (_, f) = self.file.as_ref().expect("opened above");
        let mut buf = vec![0; len];
        f.read_exact_at(&mut buf, at)?;
        Ok(buf)
    }

    fn exchange(&mut self, name: &str) -> Arc<str> {
        match &self.exchange {
            Some(x) if &**x == name => x.clone(),
            _ => {
                let x: Arc<str> = Arc::from(name);
                self.exchange = Some(x.clone());
                x
            }
        }
    }

    /// Everything left, read back at once (small stores such as retained
    /// messages, and tests). A read failure is logged and ends the list.
    pub fn read_all(&mut self) -> Vec<Recovered> {
        let mut all = Vec::new();
        loop {
            match self.pop_chunk(1 << 20) {
                Ok(chunk) if chunk.is_empty() => return all,
                Ok(chunk) => all.extend(chunk),
                Err(e) => {
                    tracing::error!(
                        "cannot read back the messages of queue '{}' in vhost '{}': {e}",
                        self.key.queue,
                        self.key.vhost
                    );
                    return all;
                }
            }
        }
    }
}

impl Drop for QueueTail {
    fn drop(&mut self) {
        for s in self.spans.drain(..) {
            self.pins.unpin(s.seg);
        }
    }
}

/// The whole frame length of the record at the start of `data`.
fn first_frame_len(data: &[u8]) -> io::Result<usize> {
    let head: [u8; 4] = data
        .get(..4)
        .and_then(|h| h.try_into().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "short span"))?;
    Ok(HEADER + u32::from_be_bytes(head) as usize)
}

fn corrupt(seg: u64, at: u64, why: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("segment {seg} at byte {at}: {why}"),
    )
}
