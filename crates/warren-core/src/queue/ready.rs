//! A queue's ready messages: one FIFO, or one per priority level for a
//! queue with `x-max-priority`, each an in-memory head with, once the
//! queue's window is full, a tail paged out to disk.
//!
//! Paging keeps order: once a level has anything paged, new messages go to
//! the end of its page files, and the head is refilled from them (oldest
//! first) when it runs dry. Everything consumers, TTL, max-length and
//! requeue touch is in the head, so those rules work unchanged on a paged
//! queue: a requeued message was delivered from the head, so its position
//! is always before anything paged.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use warren_store::pages::{Pages, Spill};
use warren_store::QueueTail;

use super::paged::{self, Decoder, MAX_PAGED_BODY};
use super::ttl::expiry_from;
use super::Delivery;
use crate::message::Message;

/// Bytes read back from page files at a time.
pub(super) const READ_CHUNK: usize = 256 << 10;

/// What a queue held at start-up, still in the message log: read back
/// before anything paged since (it is older).
struct LogTail {
    tail: QueueTail,
    /// Queue position of the next message read back (positions were
    /// reserved for all of them at start-up).
    next_seq: u64,
    /// The queue's TTL, counted from `from` (the restart).
    ttl: Option<Duration>,
    from: Instant,
}

/// One priority level: the head in memory, then (if any) the tail left in
/// the message log at start-up, then the tail paged out since.
struct Level {
    ram: VecDeque<Delivery>,
    log: Option<LogTail>,
    paged: Option<Spill>,
    /// Paged messages that are also in the message log.
    paged_stored: usize,
}

impl Level {
    fn new() -> Level {
        Level {
            ram: VecDeque::new(),
            log: None,
            paged: None,
            paged_stored: 0,
        }
    }

    fn paged_len(&self) -> usize {
        self.paged.as_ref().map_or(0, |s| s.len() as usize)
            + self.log.as_ref().map_or(0, |t| t.tail.len())
    }

    fn is_empty(&self) -> bool {
        self.ram.is_empty() && self.paged_len() == 0
    }
}

/// Ready messages: one FIFO, or one per priority level for a queue with
/// `x-max-priority` (highest level first, FIFO within a level).
pub(super) struct Ready {
    levels: Vec<Level>,
    len: usize,
    /// Messages and body bytes in memory, over all levels.
    ram: usize,
    ram_bytes: usize,
    /// Body bytes paged out.
    paged_bytes: usize,
    pages: Option<Arc<Pages>>,
    decoder: Decoder,
}

impl Ready {
    pub(super) fn new(max_priority: u8) -> Ready {
        paged::init_clock();
        Ready {
            levels: (0..=max_priority).map(|_| Level::new()).collect(),
            len: 0,
            ram: 0,
            ram_bytes: 0,
            paged_bytes: 0,
            pages: None,
            decoder: Decoder::default(),
        }
    }

    /// Page the tail beyond the window out to `pages`.
    pub(super) fn set_pages(&mut self, pages: Option<Arc<Pages>>) {
        self.pages = pages;
    }

    /// True when the tail beyond the window goes to disk.
    pub(super) fn pages_out(&self) -> bool {
        self.pages.is_some()
    }

    /// Take what the queue held at start-up as a tail read back from the
    /// log on demand (a FIFO queue: one level), at positions from `seq`.
    pub(super) fn attach_tail(
        &mut self,
        tail: QueueTail,
        seq: u64,
        ttl: Option<Duration>,
        from: Instant,
    ) {
        self.len += tail.len();
        self.levels[0].log = Some(LogTail {
            tail,
            next_seq: seq,
            ttl,
            from,
        });
    }

    /// The level of a message: its priority, capped at the queue's maximum.
    #[inline]
    fn level(&self, d: &Delivery) -> usize {
        (d.message.priority as usize).min(self.levels.len() - 1)
    }

    #[inline]
    pub(super) fn len(&self) -> usize {
        self.len
    }

    #[inline]
    pub(super) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Messages in memory (the rest are paged out).
    pub(super) fn in_ram(&self) -> usize {
        self.ram
    }

    /// Body bytes paged out (to page files, or left in the log at
    /// start-up: an estimate for those).
    pub(super) fn paged_bytes(&self) -> usize {
        self.paged_bytes + self.tail_bytes()
    }

    /// Body bytes of all ready messages.
    #[inline]
    pub(super) fn bytes(&self) -> usize {
        self.ram_bytes + self.paged_bytes + self.tail_bytes()
    }

    /// Estimated body bytes still in the log's tail.
    #[inline]
    fn tail_bytes(&self) -> usize {
        match &self.levels[0].log {
            None => 0,
            Some(t) => usize::try_from(t.tail.bytes_estimate()).unwrap_or(usize::MAX),
        }
    }

    pub(super) fn reserve(&mut self, n: usize) {
        let cap = self
            .pages
            .as_ref()
            .map_or(n, |p| n.min(p.options().window_messages));
        if let [only] = &mut self.levels[..] {
            only.ram.reserve(cap);
        }
    }

    #[inline]
    pub(super) fn push_back(&mut self, d: Delivery) {
        let l = self.level(&d);
        self.len += 1;
        if self.must_page(l, &d) {
            if let Err(d) = self.page_out(l, d) {
                self.keep(l, d, false);
            }
            return;
        }
        self.keep(l, d, false);
    }

    /// Hold `d` in memory, at the back or front of its level.
    #[inline]
    fn keep(&mut self, l: usize, d: Delivery, front: bool) {
        self.ram += 1;
        self.ram_bytes += d.message.body_len();
        if front {
            self.levels[l].ram.push_front(d);
        } else {
            self.levels[l].ram.push_back(d);
        }
    }

    /// A new message goes to disk when its level already pages (order) or
    /// the window is full.
    #[inline]
    fn must_page(&self, l: usize, d: &Delivery) -> bool {
        let Some(p) = &self.pages else {
            return false;
        };
        let o = p.options();
        (self.levels[l].paged_len() > 0
            || self.ram >= o.window_messages
            || self.ram_bytes >= o.window_bytes)
            && d.message.body_len() < MAX_PAGED_BODY
    }

    /// Append `d` to its level's page files; hands it back if it cannot be.
    #[allow(clippy::result_large_err)]
    fn page_out(&mut self, l: usize, d: Delivery) -> Result<(), Delivery> {
        let Some(pages) = &self.pages else {
            return Err(d);
        };
        let level = &mut self.levels[l];
        level.paged_stored += usize::from(d.message.store_id != 0);
        let spill = level.paged.get_or_insert_with(|| pages.spill());
        let (meta, _) = d.message.meta();
        let parts: [&[u8]; 4] = [
            &paged::header(&d),
            d.message.exchange.as_bytes(),
            meta,
            &d.message.body,
        ];
        if let Err(e) = spill.push(&parts) {
            // The record is kept in the spill's buffer; only the write
            // failed (disk full), and is retried later.
            tracing::warn!("cannot write a queue's page file (kept in memory): {e}");
        }
        self.paged_bytes += d.message.body_len();
        Ok(())
    }

    /// Put back what was just popped.
    #[inline]
    pub(super) fn push_front(&mut self, d: Delivery) {
        let l = self.level(&d);
        self.len += 1;
        self.keep(l, d, true);
    }

    /// A requeued delivery goes back to its original position in its level
    /// (in memory: it came from the head, before anything paged).
    pub(super) fn insert_by_seq(&mut self, d: Delivery) {
        let l = self.level(&d);
        self.len += 1;
        self.ram += 1;
        self.ram_bytes += d.message.body_len();
        let level = &mut self.levels[l].ram;
        let pos = level.partition_point(|x| x.seq < d.seq);
        level.insert(pos, d);
    }

    /// The highest level holding a message, with its head in memory.
    #[inline]
    fn head_level(&mut self) -> Option<usize> {
        let l = self.levels.iter().rposition(|l| !l.is_empty())?;
        if self.levels[l].ram.is_empty() {
            self.refill(l);
            if self.levels[l].ram.is_empty() {
                // The page files failed; what they held was dropped.
                return self.head_level();
            }
        }
        Some(l)
    }

    #[inline]
    pub(super) fn front(&mut self) -> Option<&Delivery> {
        let l = self.head_level()?;
        self.levels[l].ram.front()
    }

    #[inline]
    pub(super) fn pop_front(&mut self) -> Option<Delivery> {
        let l = self.head_level()?;
        let level = &mut self.levels[l].ram;
        let d = level.pop_front()?;
        shrink(level);
        self.len -= 1;
        self.ram -= 1;
        self.ram_bytes -= d.message.body_len();
        Some(d)
    }

    /// Read the next chunk of level `l`'s page files into its head. A read
    /// or decode failure drops the rest of that level's paged messages
    /// (logged; persistent ones are still in the message log).
    fn refill(&mut self, l: usize) {
        if self.levels[l]
            .log
            .as_ref()
            .is_some_and(|t| !t.tail.is_empty())
        {
            return self.refill_from_log(l);
        }
        let Some(spill) = self.levels[l].paged.as_mut() else {
            return;
        };
        let failed = match spill.pop_chunk(READ_CHUNK) {
            Ok(None) => None,
            Ok(Some(chunk)) => {
                let mut err = None;
                for rec in chunk.records() {
                    match self.decoder.decode(rec) {
                        Ok(d) => {
                            self.paged_bytes -= d.message.body_len();
                            self.levels[l].paged_stored -= usize::from(d.message.store_id != 0);
                            self.ram += 1;
                            self.ram_bytes += d.message.body_len();
                            self.levels[l].ram.push_back(d);
                        }
                        Err(e) => {
                            err = Some(e.to_string());
                            self.len -= 1;
                        }
                    }
                }
                err
            }
            Err(e) => Some(e.to_string()),
        };
        if let Some(e) = failed {
            self.lose_paged(l, &e);
        }
    }

    /// Read the next chunk of what level `l` held at start-up into its
    /// head. A failure drops the rest of that tail from memory (logged; the
    /// messages stay in the log and come back at the next restart).
    fn refill_from_log(&mut self, l: usize) {
        let level = &mut self.levels[l];
        let Some(t) = level.log.as_mut() else {
            return;
        };
        let chunk = match t.tail.pop_chunk(READ_CHUNK) {
            Ok(c) => c,
            Err(e) => {
                let lost = t.tail.len();
                self.len -= lost;
                level.log = None;
                tracing::error!(
                    "a queue's recovered messages cannot be read back from the log ({e}): {lost} dropped from memory until the next restart"
                );
                return;
            }
        };
        for m in chunk {
            let body = m.body.len();
            let Ok(mut message) = Message::new(m.exchange, m.meta, m.key_len, m.body) else {
                self.len -= 1;
                continue;
            };
            message.store_id = m.id;
            let seq = t.next_seq;
            t.next_seq += 1;
            let expires_at = expiry_from(t.from, t.ttl, &message);
            self.ram += 1;
            self.ram_bytes += body;
            level.ram.push_back(Delivery {
                message,
                seq,
                redelivered: m.redelivered,
                expires_at,
            });
        }
        if t.tail.is_empty() {
            level.log = None;
        }
    }

    /// Give up on level `l`'s page files.
    fn lose_paged(&mut self, l: usize, why: &str) {
        let level = &mut self.levels[l];
        level.paged_stored = 0;
        let Some(spill) = level.paged.take() else {
            return;
        };
        tracing::error!(
            "a queue's page file failed ({why}): {} paged messages dropped from memory",
            spill.len()
        );
        self.len -= spill.len() as usize;
        self.paged_bytes = self.paged_bytes.saturating_sub(spill.bytes() as usize);
    }

    /// Empty the store, handing `visit` every message in memory. What is
    /// on disk and in the message log (the log's tail, page files holding
    /// persistent messages) is handed back unread, for the caller to log
    /// its removal off the queue's lock; page files of transient messages
    /// only are dropped (deleted in the background).
    pub(super) fn drain(&mut self, mut visit: impl FnMut(Delivery)) -> Leftovers {
        let mut left = Leftovers::default();
        for level in self.levels.iter_mut().rev() {
            for d in std::mem::take(&mut level.ram) {
                visit(d);
            }
            left.tails.extend(level.log.take().map(|t| t.tail));
            let stored = std::mem::take(&mut level.paged_stored);
            if let Some(spill) = level.paged.take().filter(|_| stored > 0) {
                left.spills.push(spill);
            }
        }
        self.len = 0;
        self.ram = 0;
        self.ram_bytes = 0;
        self.paged_bytes = 0;
        left
    }
}

/// What a purge or delete took out of the ready store still unread: log
/// tails and page files with persistent messages, whose removal from the
/// message log is still to be logged ([`super::forget`]).
#[derive(Default)]
pub(super) struct Leftovers {
    pub(super) tails: Vec<QueueTail>,
    pub(super) spills: Vec<Spill>,
}

impl Leftovers {
    pub(super) fn is_empty(&self) -> bool {
        self.tails.is_empty() && self.spills.is_empty()
    }

    /// Messages in them (stored or not).
    pub(super) fn len(&self) -> usize {
        let tails: usize = self.tails.iter().map(|t| t.len()).sum();
        tails + self.spills.iter().map(|s| s.len() as usize).sum::<usize>()
    }
}

/// Capacity below which a level's buffer is never shrunk.
const SHRINK_MIN: usize = 4096;

/// Halve a level's buffer once it is three-quarters empty, so that a
/// drained backlog gives its memory back (amortised O(1) per pop).
fn shrink(level: &mut VecDeque<Delivery>) {
    let cap = level.capacity();
    if cap > SHRINK_MIN && level.len() < cap / 4 {
        level.shrink_to(cap / 2);
    }
}
