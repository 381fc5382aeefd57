//! A queue's ready messages: one FIFO, or one per priority level for a
//! queue with `x-max-priority`.

use std::collections::VecDeque;

use super::Delivery;

/// Ready messages: one FIFO, or one per priority level for a queue with
/// `x-max-priority` (highest level first, FIFO within a level).
pub(super) struct Ready {
    levels: Vec<VecDeque<Delivery>>,
    len: usize,
}

impl Ready {
    pub(super) fn new(max_priority: u8) -> Ready {
        Ready {
            levels: (0..=max_priority).map(|_| VecDeque::new()).collect(),
            len: 0,
        }
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

    pub(super) fn reserve(&mut self, n: usize) {
        if let [only] = &mut self.levels[..] {
            only.reserve(n);
        }
    }

    #[inline]
    pub(super) fn push_back(&mut self, d: Delivery) {
        let l = self.level(&d);
        self.levels[l].push_back(d);
        self.len += 1;
    }

    /// Put back what was just popped.
    #[inline]
    pub(super) fn push_front(&mut self, d: Delivery) {
        let l = self.level(&d);
        self.levels[l].push_front(d);
        self.len += 1;
    }

    /// A requeued delivery goes back to its original position in its level.
    pub(super) fn insert_by_seq(&mut self, d: Delivery) {
        let l = self.level(&d);
        let level = &mut self.levels[l];
        let pos = level.partition_point(|x| x.seq < d.seq);
        level.insert(pos, d);
        self.len += 1;
    }

    #[inline]
    pub(super) fn front(&self) -> Option<&Delivery> {
        self.levels.iter().rev().find_map(|l| l.front())
    }

    #[inline]
    pub(super) fn pop_front(&mut self) -> Option<Delivery> {
        let level = self.levels.iter_mut().rev().find(|l| !l.is_empty())?;
        let d = level.pop_front()?;
        shrink(level);
        self.len -= 1;
        Some(d)
    }

    pub(super) fn drain(&mut self) -> impl Iterator<Item = Delivery> + '_ {
        self.len = 0;
        self.levels.iter_mut().rev().flat_map(|l| {
            let all = std::mem::take(l);
            all.into_iter()
        })
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
