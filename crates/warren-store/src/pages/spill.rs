//! One queue's paged-out records: appended at the tail through a small
//! buffer, read back in order in chunks, each segment file deleted once
//! read to its end.
//!
//! A record is framed `len: u32 (LE) | payload`. No checksum: the files
//! live only as long as this process and are never recovered.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;

use super::{remove_in_background, Pages};

/// The tail buffer is written out once it holds this much.
const FLUSH_AT: usize = 64 << 10;

/// Framing overhead per record.
const FRAME: usize = 4;

/// A queue's paged-out records (see the module docs).
pub struct Spill {
    pages: Arc<Pages>,
    pub(super) dir: PathBuf,
    made: bool,
    /// Framed records not yet written: the newest ones.
    tail: Vec<u8>,
    /// Tail size at which the next write is tried (doubles after a failed
    /// write, so a full disk is not retried on every push).
    flush_at: usize,
    /// Segments not yet read to their end, oldest first, with the bytes
    /// written to each; the last one is the segment being written.
    segs: VecDeque<(u64, u64)>,
    write: Option<File>,
    read: Option<(u64, File)>,
    /// Read position in the oldest segment.
    read_off: u64,
    next_seg: u64,
    records: u64,
    bytes: u64,
}

/// Records read back, in order; their payloads share one buffer.
pub struct Chunk {
    data: Bytes,
    records: usize,
}

impl Chunk {
    /// How many records it holds.
    pub fn len(&self) -> usize {
        self.records
    }

    /// True when it holds none.
    pub fn is_empty(&self) -> bool {
        self.records == 0
    }

    /// The payloads, oldest first (each a slice of the chunk's buffer).
    pub fn records(&self) -> impl Iterator<Item = Bytes> + '_ {
        let mut pos = 0;
        std::iter::from_fn(move || {
            let len = frame_len(&self.data[pos..])?;
            let start = pos + FRAME;
            pos = start + len;
            Some(self.data.slice(start..pos))
        })
    }
}

/// The payload length of the frame at the start of `buf`, when the whole
/// frame is there.
fn frame_len(buf: &[u8]) -> Option<usize> {
    let head: [u8; FRAME] = buf.get(..FRAME)?.try_into().ok()?;
    let len = u32::from_le_bytes(head) as usize;
    (buf.len() >= FRAME + len).then_some(len)
}

/// Whole frames at the start of `buf`: (count, bytes they take).
fn whole_frames(buf: &[u8]) -> (usize, usize) {
    let (mut n, mut pos) = (0, 0);
    while let Some(len) = frame_len(&buf[pos..]) {
        n += 1;
        pos += FRAME + len;
    }
    (n, pos)
}

impl Spill {
    pub(super) fn new(pages: Arc<Pages>, dir: PathBuf) -> Spill {
        Spill {
            pages,
            dir,
            made: false,
            tail: Vec::new(),
            flush_at: FLUSH_AT,
            segs: VecDeque::new(),
            write: None,
            read: None,
            read_off: 0,
            next_seg: 1,
            records: 0,
            bytes: 0,
        }
    }

    /// Records held (on disk and in the tail buffer).
    pub fn len(&self) -> u64 {
        self.records
    }

    /// True when it holds no record.
    pub fn is_empty(&self) -> bool {
        self.records == 0
    }

    /// Payload bytes held.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Append one record made of `parts`. A failed write keeps the records
    /// in memory (and is retried later), so nothing is lost; the error is
    /// returned for the caller to log.
    pub fn push(&mut self, parts: &[&[u8]]) -> io::Result<()> {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        let len32 = u32::try_from(len).map_err(|_| io::Error::other("record over 4 GiB"))?;
        self.tail.extend_from_slice(&len32.to_le_bytes());
        for p in parts {
            self.tail.extend_from_slice(p);
        }
        self.records += 1;
        self.bytes += len as u64;
        if self.tail.len() < self.flush_at {
            return Ok(());
        }
        match self.flush() {
            Ok(()) => {
                self.flush_at = FLUSH_AT;
                Ok(())
            }
            Err(e) => {
                self.flush_at = self.tail.len().saturating_mul(2);
                Err(e)
            }
        }
    }

    /// Write the tail buffer to the current segment (opening a new one
    /// when it is full). On failure the segment is cut back to where it
    /// was and the tail kept.
    fn flush(&mut self) -> io::Result<()> {
        if self.tail.is_empty() {
            return Ok(());
        }
        let full = self
            .segs
            .back()
            .is_none_or(|(_, n)| *n >= self.pages.opts.segment_size);
        if full || self.write.is_none() {
            self.open_segment()?;
        }
        let (_, written) = self.segs.back_mut().expect("a write segment");
        let file = self.write.as_mut().expect("a write segment");
        if let Err(e) = file.write_all(&self.tail) {
            let _ = file.set_len(*written);
            return Err(e);
        }
        *written += self.tail.len() as u64;
        self.pages.add_disk(self.tail.len() as u64);
        self.tail.clear();
        if self.tail.capacity() > 2 * FLUSH_AT {
            self.tail.shrink_to(FLUSH_AT);
        }
        Ok(())
    }

    fn open_segment(&mut self) -> io::Result<()> {
        if !self.made {
            fs::create_dir_all(&self.dir)?;
            self.made = true;
        }
        let n = self.next_seg;
        let file = OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(self.seg_path(n))?;
        self.next_seg += 1;
        self.segs.push_back((n, 0));
        self.write = Some(file);
        Ok(())
    }

    fn seg_path(&self, n: u64) -> PathBuf {
        self.dir.join(format!("{n:08}.page"))
    }

    /// The next records, oldest first, about `max` bytes of them (at least
    /// one record); `None` when the spill is empty.
    pub fn pop_chunk(&mut self, max: usize) -> io::Result<Option<Chunk>> {
        if self.records == 0 {
            return Ok(None);
        }
        loop {
            let Some(&(seg, written)) = self.segs.front() else {
                return Ok(Some(self.take_tail()));
            };
            if self.read_off < written {
                return self.read_from(seg, written, max).map(Some);
            }
            if self.segs.len() == 1 {
                // Everything on disk has been read; the rest is buffered.
                return Ok(Some(self.take_tail()));
            }
            self.drop_front_segment();
        }
    }

    /// The buffered records, as one chunk.
    fn take_tail(&mut self) -> Chunk {
        let data = Bytes::from(std::mem::take(&mut self.tail));
        let (records, _) = whole_frames(&data);
        self.account_read(records, &data);
        Chunk { data, records }
    }

    fn account_read(&mut self, records: usize, data: &[u8]) {
        self.records -= records as u64;
        self.bytes -= (data.len() - records * FRAME) as u64;
        if self.records == 0 {
            // Read to the end: no file is needed until the next push.
            self.write = None;
            while !self.segs.is_empty() {
                self.drop_front_segment();
            }
        }
    }

    /// Read whole records from segment `seg` (holding `written` bytes) at
    /// the read position.
    fn read_from(&mut self, seg: u64, written: u64, max: usize) -> io::Result<Chunk> {
        if self.read.as_ref().is_none_or(|(n, _)| *n != seg) {
            self.read = Some((seg, File::open(self.seg_path(seg))?));
        }
        let left = (written - self.read_off) as usize;
        let mut buf = vec![0; left.min(max.max(FRAME))];
        self.read_exact_at(&mut buf)?;
        let (mut records, mut used) = whole_frames(&buf);
        if records == 0 {
            // One record larger than `max`: read exactly that one.
            let len = u32::from_le_bytes(buf[..FRAME].try_into().expect("4 bytes")) as usize;
            if FRAME + len > left {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("page record of {len} bytes runs past its segment"),
                ));
            }
            buf = vec![0; FRAME + len];
            self.read_exact_at(&mut buf)?;
            (records, used) = (1, buf.len());
        }
        buf.truncate(used);
        self.read_off += used as u64;
        if self.read_off == written && self.segs.len() > 1 {
            self.drop_front_segment();
        }
        self.account_read(records, &buf);
        Ok(Chunk {
            data: Bytes::from(buf),
            records,
        })
    }

    fn read_exact_at(&self, buf: &mut [u8]) -> io::Result<()> {
        let (_, file) = self.read.as_ref().expect("read segment open");
        file.read_exact_at(buf, self.read_off)
    }

    /// The oldest segment has been read to its end: delete it.
    fn drop_front_segment(&mut self) {
        let Some((seg, written)) = self.segs.pop_front() else {
            return;
        };
        if self.read.as_ref().is_some_and(|(n, _)| *n == seg) {
            self.read = None;
        }
        self.read_off = 0;
        self.pages.sub_disk(written);
        let path = self.seg_path(seg);
        if let Err(e) = fs::remove_file(&path) {
            tracing::warn!("cannot remove page file {}: {e}", path.display());
        }
    }
}

impl Drop for Spill {
    fn drop(&mut self) {
        let on_disk: u64 = self.segs.iter().map(|(_, n)| n).sum();
        self.pages.sub_disk(on_disk);
        if self.made {
            remove_in_background(std::mem::take(&mut self.dir));
        }
    }
}
