//! The record codec: how one record is framed and laid out on disk, and the
//! one CRC-checked walk over a segment that recovery and reclaim share.
//!
//! Frame: `len: u32 | crc32(payload): u32 | payload` (big-endian), where the
//! payload starts with a [`Kind`] byte:
//! - enqueue: `id: u64 | n: u16 | n × (vhost: str16, queue: str16) |
//!   exchange: str16 | key_len: u8 | meta: bytes32 | body: bytes32 |
//!   [copy: u8]`; the optional last byte is 1 in compaction's copies (so
//!   recovery can tell a copy from the original without an index)
//! - remove and delivered: `id: u64 | vhost: str16 | queue: str16`
//! - remove range: `first: u64 | end: u64 | vhost: str16 | queue: str16`,
//!   one queue letting go of every id in `first..end` it holds (a purge or
//!   delete of a backlog costs one record per run of ids, not per message).
//!   A broker from before this record stops reading a segment at it.
//!
//! `str16` is a u16 length then that many bytes of UTF-8, `bytes32` a u32
//! length then the bytes. Bytes after the last field of a payload are ignored.

use super::QueueKey;

/// Bytes of a frame header (length and checksum) before the payload.
pub(crate) const HEADER: usize = 8;

/// Message ids count up from 1, so no log reaches this one: an enqueue
/// record with a higher id is corrupt (and would overflow the next id).
pub(crate) const ID_LIMIT: u64 = 1 << 63;

/// The trailing byte of an enqueue record that is compaction's copy.
const COPY: u8 = 1;

/// The kind byte that starts every payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Kind {
    /// A message and the queues holding it.
    Enqueue = 1,
    /// One queue let go of a message.
    Remove = 2,
    /// A message was handed to a consumer of one queue.
    Delivered = 3,
    /// One queue let go of a run of ids.
    RemoveRange = 4,
}

/// Why a walk over a segment stopped before its end: where recovery cuts
/// the file, and past which reclaim copies nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum RecordError {
    /// The frame header or payload runs past the end of the segment, or
    /// its length is zero (a torn tail after kill -9).
    #[error("torn record")]
    Torn,
    /// The payload does not match its checksum.
    #[error("checksum mismatch")]
    Checksum,
    /// A field runs past the end of the payload.
    #[error("field past the end of the record")]
    Short,
    /// The kind byte names no record kind.
    #[error("unknown record kind {0}")]
    UnknownKind(u8),
    /// An enqueue record's id is at or above [`ID_LIMIT`].
    #[error("message id {0} out of range")]
    IdOutOfRange(u64),
    /// A name is not UTF-8.
    #[error("name is not UTF-8")]
    NotUtf8,
}

/// Where encoders put bytes: a buffer, a checksum or a length count, so
/// that one encoder yields a record's length, checksum and bytes alike.
pub(crate) trait Sink {
    /// Take the next bytes of the payload.
    fn put(&mut self, b: &[u8]);
}

impl Sink for Vec<u8> {
    #[inline]
    fn put(&mut self, b: &[u8]) {
        self.extend_from_slice(b);
    }
}

impl Sink for crc32fast::Hasher {
    #[inline]
    fn put(&mut self, b: &[u8]) {
        self.update(b);
    }
}

/// Counts the bytes it is given.
struct Count(usize);

impl Sink for Count {
    #[inline]
    fn put(&mut self, b: &[u8]) {
        self.0 += b.len();
    }
}

/// Names longer than a u16 are cut (the layout has no room for more).
fn put_str(out: &mut impl Sink, s: &str) {
    let b = &s.as_bytes()[..s.len().min(u16::MAX as usize)];
    out.put(&(b.len() as u16).to_be_bytes());
    out.put(b);
}

/// Reserve a frame header in `out`; returns where the payload starts, for
/// [`seal`].
fn begin(out: &mut Vec<u8>) -> usize {
    out.extend_from_slice(&[0u8; HEADER]);
    out.len()
}

/// Fill in the header reserved by [`begin`] for the payload written since.
fn seal(out: &mut [u8], payload_start: usize) {
    let len = (out.len() - payload_start) as u32;
    let crc = crc32fast::hash(&out[payload_start..]);
    out[payload_start - HEADER..payload_start - 4].copy_from_slice(&len.to_be_bytes());
    out[payload_start - 4..payload_start].copy_from_slice(&crc.to_be_bytes());
}

/// An enqueue record to encode: a message and the queues holding it.
pub(crate) struct Enqueue<'a> {
    pub id: u64,
    pub queues: &'a [QueueKey],
    pub exchange: &'a str,
    pub meta: &'a [u8],
    pub key_len: u8,
    pub body: &'a [u8],
    /// Compaction's copy of a message whose original is in an older segment.
    pub copy: bool,
}

/// A payload's length and checksum, known before its bytes are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Framing {
    /// Payload length.
    pub len: u32,
    /// crc32 of the payload.
    pub crc: u32,
}

impl Framing {
    /// Bytes of the whole frame.
    pub fn frame_len(self) -> usize {
        HEADER + self.len as usize
    }
}

impl Enqueue<'_> {
    /// The payload, kind byte first, into any sink.
    fn payload(&self, s: &mut impl Sink) {
        s.put(&[Kind::Enqueue as u8]);
        s.put(&self.id.to_be_bytes());
        s.put(&(self.queues.len() as u16).to_be_bytes());
        for q in self.queues {
            put_str(s, &q.vhost);
            put_str(s, &q.queue);
        }
        put_str(s, self.exchange);
        s.put(&[self.key_len]);
        s.put(&(self.meta.len() as u32).to_be_bytes());
        s.put(self.meta);
        s.put(&(self.body.len() as u32).to_be_bytes());
        s.put(self.body);
        if self.copy {
            s.put(&[COPY]);
        }
    }

    /// Bytes of the whole frame.
    pub fn frame_len(&self) -> usize {
        let mut n = Count(0);
        self.payload(&mut n);
        HEADER + n.0
    }

    /// Length and checksum of the payload, computed without writing it
    /// anywhere (so that [`Enqueue::write`] can run under a lock while the
    /// checksum is taken outside it).
    pub fn framing(&self) -> Framing {
        let mut crc = crc32fast::Hasher::new();
        self.payload(&mut crc);
        Framing {
            len: (self.frame_len() - HEADER) as u32,
            crc: crc.finalize(),
        }
    }

    /// Append the whole frame, header from `framing` (of this record).
    pub fn write(&self, out: &mut Vec<u8>, framing: Framing) {
        out.reserve(framing.frame_len());
        out.extend_from_slice(&framing.len.to_be_bytes());
        out.extend_from_slice(&framing.crc.to_be_bytes());
        self.payload(out);
    }

    /// Append the whole frame, checksumming the bytes as written.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let start = begin(out);
        self.payload(out);
        seal(out, start);
    }
}

/// Append a remove or delivered record for message `id` in queue `q`.
pub(crate) fn encode_marker(out: &mut Vec<u8>, kind: Kind, id: u64, q: &QueueKey) {
    let start = begin(out);
    out.push(kind as u8);
    out.extend_from_slice(&id.to_be_bytes());
    put_str(out, &q.vhost);
    put_str(out, &q.queue);
    seal(out, start);
}

/// Append a remove-range record: queue `q` lets go of `first..end`.
pub(crate) fn encode_range_marker(out: &mut Vec<u8>, first: u64, end: u64, q: &QueueKey) {
    let start = begin(out);
    out.push(Kind::RemoveRange as u8);
    out.extend_from_slice(&first.to_be_bytes());
    out.extend_from_slice(&end.to_be_bytes());
    put_str(out, &q.vhost);
    put_str(out, &q.queue);
    seal(out, start);
}

impl TryFrom<u8> for Kind {
    type Error = RecordError;

    fn try_from(b: u8) -> Result<Self, RecordError> {
        match b {
            1 => Ok(Kind::Enqueue),
            2 => Ok(Kind::Remove),
            3 => Ok(Kind::Delivered),
            4 => Ok(Kind::RemoveRange),
            k => Err(RecordError::UnknownKind(k)),
        }
    }
}

/// A cursor over a payload.
struct Cur<'a> {
    b: &'a [u8],
    p: usize,
}

impl<'a> Cur<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], RecordError> {
        let end = self.p.checked_add(n).ok_or(RecordError::Short)?;
        let s = self.b.get(self.p..end).ok_or(RecordError::Short)?;
        self.p = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, RecordError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, RecordError> {
        Ok(u16::from_be_bytes(self.take(2)?.try_into().expect("2")))
    }
    fn u32(&mut self) -> Result<u32, RecordError> {
        Ok(u32::from_be_bytes(self.take(4)?.try_into().expect("4")))
    }
    fn u64(&mut self) -> Result<u64, RecordError> {
        Ok(u64::from_be_bytes(self.take(8)?.try_into().expect("8")))
    }
    /// A `str16`, checked to be UTF-8 and returned as bytes.
    fn name(&mut self) -> Result<&'a [u8], RecordError> {
        let n = self.u16()? as usize;
        let b = self.take(n)?;
        std::str::from_utf8(b).map_err(|_| RecordError::NotUtf8)?;
        Ok(b)
    }
    fn bytes32(&mut self) -> Result<&'a [u8], RecordError> {
        let n = self.u32()? as usize;
        self.take(n)
    }
}

/// A decoded record, borrowing the segment's bytes.
#[derive(Debug)]
pub(crate) enum Record<'a> {
    /// A message and the queues holding it.
    Enqueue(EnqueueView<'a>),
    /// A queue let go of a message.
    Remove(Marker<'a>),
    /// A message was handed to a consumer of a queue.
    Delivered(Marker<'a>),
    /// A queue let go of the ids `id..end` (`Marker::id` is the first).
    RemoveRange(Marker<'a>, u64),
}

/// A decoded enqueue record; every name in it is UTF-8.
#[derive(Debug)]
pub(crate) struct EnqueueView<'a> {
    pub id: u64,
    pub queues: Names<'a>,
    pub exchange: &'a str,
    pub key_len: u8,
    pub meta: &'a [u8],
    pub body: &'a [u8],
    /// A compaction copy (see [`Enqueue::copy`]).
    pub copy: bool,
}

impl<'a> EnqueueView<'a> {
    /// This message as a record to write again for `queues` (compaction's
    /// copy: the queues still holding it).
    pub fn with_queues<'b>(&self, queues: &'b [QueueKey]) -> Enqueue<'b>
    where
        'a: 'b,
    {
        Enqueue {
            id: self.id,
            queues,
            exchange: self.exchange,
            meta: self.meta,
            key_len: self.key_len,
            body: self.body,
            copy: true,
        }
    }
}

/// The queue list of a decoded enqueue record, already checked.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Names<'a> {
    n: usize,
    bytes: &'a [u8],
}

impl<'a> Names<'a> {
    /// Number of (vhost, queue) pairs.
    pub fn len(&self) -> usize {
        self.n
    }

    /// The (vhost, queue) pairs as UTF-8 bytes, in record order.
    pub fn iter(&self) -> impl Iterator<Item = (&'a [u8], &'a [u8])> + 'a {
        let mut c = Cur {
            b: self.bytes,
            p: 0,
        };
        (0..self.n).map(move |_| {
            // Checked by `decode`: these cannot fail.
            let v = c.name().unwrap_or_default();
            let q = c.name().unwrap_or_default();
            (v, q)
        })
    }
}

/// A decoded remove or delivered record.
#[derive(Debug)]
pub(crate) struct Marker<'a> {
    pub id: u64,
    pub vhost: &'a [u8],
    pub queue: &'a [u8],
}

/// Decode one payload (kind byte first). The one decoder of the log:
/// recovery and reclaim both see records only through it.
pub(crate) fn decode(payload: &[u8]) -> Result<Record<'_>, RecordError> {
    let mut c = Cur { b: payload, p: 0 };
    let kind = Kind::try_from(c.u8()?)?;
    let id = c.u64()?;
    Ok(match kind {
        Kind::Enqueue => Record::Enqueue(decode_enqueue(id, &mut c)?),
        Kind::Remove => Record::Remove(decode_marker(id, &mut c)?),
        Kind::Delivered => Record::Delivered(decode_marker(id, &mut c)?),
        Kind::RemoveRange => {
            let end = c.u64()?;
            Record::RemoveRange(decode_marker(id, &mut c)?, end)
        }
    })
}

/// The rest of a remove or delivered payload after its id.
fn decode_marker<'a>(id: u64, c: &mut Cur<'a>) -> Result<Marker<'a>, RecordError> {
    Ok(Marker {
        id,
        vhost: c.name()?,
        queue: c.name()?,
    })
}

/// The rest of an enqueue payload after its id.
fn decode_enqueue<'a>(id: u64, c: &mut Cur<'a>) -> Result<EnqueueView<'a>, RecordError> {
    if id >= ID_LIMIT {
        return Err(RecordError::IdOutOfRange(id));
    }
    let n = c.u16()? as usize;
    let names_at = c.p;
    for _ in 0..n {
        c.name()?;
        c.name()?;
    }
    let queues = Names {
        n,
        bytes: &c.b[names_at..c.p],
    };
    let exchange = std::str::from_utf8(c.name()?).map_err(|_| RecordError::NotUtf8)?;
    let key_len = c.u8()?;
    let meta = c.bytes32()?;
    let body = c.bytes32()?;
    let copy = c.b.get(c.p) == Some(&COPY);
    Ok(EnqueueView {
        id,
        queues,
        exchange,
        key_len,
        meta,
        body,
        copy,
    })
}

/// The records of one segment, in order, each length- and CRC-checked and
/// decoded. Stops at the first frame that is torn, fails its checksum or
/// does not decode; [`Records::valid_to`] then says where the valid prefix
/// ends and [`Records::stopped`] why.
pub(crate) struct Records<'a> {
    data: &'a [u8],
    pos: usize,
    stopped: Option<RecordError>,
}

impl<'a> Records<'a> {
    /// Walk `data`, a whole segment, from its start.
    pub fn new(data: &'a [u8]) -> Self {
        Records {
            data,
            pos: 0,
            stopped: None,
        }
    }

    /// Offset of the first byte that does not belong to a valid record
    /// read so far (the segment's length once the walk got to the end).
    pub fn valid_to(&self) -> usize {
        self.pos
    }

    /// Why the walk stopped short of the end, if it did.
    pub fn stopped(&self) -> Option<RecordError> {
        self.stopped
    }

    fn frame(&self) -> Result<(usize, usize), RecordError> {
        let d = &self.data[self.pos..];
        if d.len() < HEADER {
            return Err(RecordError::Torn);
        }
        let len = u32::from_be_bytes(d[..4].try_into().expect("4")) as usize;
        let crc = u32::from_be_bytes(d[4..8].try_into().expect("4"));
        if len == 0 || len > d.len() - HEADER {
            return Err(RecordError::Torn);
        }
        let start = self.pos + HEADER;
        if crc32fast::hash(&self.data[start..start + len]) != crc {
            return Err(RecordError::Checksum);
        }
        Ok((start, start + len))
    }
}

impl<'a> Iterator for Records<'a> {
    /// The offset of the payload in the segment, and the record.
    type Item = (usize, Record<'a>);

    fn next(&mut self) -> Option<Self::Item> {
        if self.stopped.is_some() || self.pos == self.data.len() {
            return None;
        }
        let data = self.data;
        match self
            .frame()
            .and_then(|(s, e)| Ok((s, e, decode(&data[s..e])?)))
        {
            Ok((start, end, rec)) => {
                self.pos = end;
                Some((start, rec))
            }
            Err(e) => {
                self.stopped = Some(e);
                None
            }
        }
    }
}

#[cfg(test)]
#[path = "record_tests.rs"]
mod tests;
