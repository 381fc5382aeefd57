//! Which stored messages are live, in which segment, held by which queues:
//! a dense window of 8-byte slots indexed by message id, from the oldest
//! live id to the newest.
//!
//! Ids are handed out in sequence and a queue mostly lets go of its
//! messages in order, so a window over ids costs 8 bytes per id between the
//! oldest live message and the newest one (a hash map entry cost about 100
//! bytes with its slack). A message held by more than one queue keeps its
//! queue list in a side map. Dead slots at the front are dropped as they
//! appear; a long-lived message keeps the slots after it, dead or not, which
//! is the price of the dense layout.

use std::collections::VecDeque;

use super::state::IdMap;

/// The slot's holder when no queue holds the message (or no message has
/// that id yet).
const DEAD: u32 = u32::MAX;
/// The slot's holder when several queues hold it (see `LiveIndex::many`).
const MANY: u32 = u32::MAX - 1;

#[derive(Clone, Copy)]
struct Slot {
    seg: u32,
    holder: u32,
}

/// The most empty slots an insert may add to reach its id.
const MAX_GAP: u64 = 1 << 20;

const EMPTY: Slot = Slot {
    seg: 0,
    holder: DEAD,
};

/// See the module docs.
#[derive(Default)]
pub(crate) struct LiveIndex {
    /// Id of `slots[0]`.
    base: u64,
    slots: VecDeque<Slot>,
    many: IdMap<Vec<u32>>,
    /// Slots of ids far outside the window.
    far: IdMap<Slot>,
    live: usize,
}

impl LiveIndex {
    /// Live messages.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.live
    }

    /// Message `id` is in segment `seg`, held by `queues` (interned keys,
    /// fewer than `u32::MAX - 1` of them). Replaces what was there.
    pub fn insert(&mut self, id: u64, seg: u64, queues: Vec<u32>) {
        if queues.is_empty() {
            return;
        }
        if self.slot(id).is_some() {
            self.live -= 1;
            self.many.remove(&id);
        }
        let holder = match queues[..] {
            [one] => one,
            _ => {
                self.many.insert(id, queues);
                MANY
            }
        };
        let slot = Slot {
            seg: u32::try_from(seg).unwrap_or(u32::MAX),
            holder,
        };
        self.live += 1;
        match self.slot_for(id) {
            Some(i) => self.slots[i] = slot,
            None => {
                self.far.insert(id, slot);
            }
        }
    }

    /// The position of `id`'s slot, growing the window to reach it; `None`
    /// when it is too far away.
    fn slot_for(&mut self, id: u64) -> Option<usize> {
        if self.slots.is_empty() && !self.far.contains_key(&id) {
            self.base = id;
        }
        let end = self.base.saturating_add(self.slots.len() as u64);
        let too_far = id.saturating_add(MAX_GAP) < self.base || id >= end.saturating_add(MAX_GAP);
        if too_far || self.far.contains_key(&id) {
            return None;
        }
        while id < self.base {
            // An id handed out before the front was trimmed, pushed late.
            self.slots.push_front(EMPTY);
            self.base -= 1;
        }
        let i = (id - self.base) as usize;
        if i >= self.slots.len() {
            self.slots.resize(i + 1, EMPTY);
        }
        Some(i)
    }

    /// Index of `id` in the window, if it is inside it.
    fn pos(&self, id: u64) -> Option<usize> {
        let i = usize::try_from(id.checked_sub(self.base)?).ok()?;
        (i < self.slots.len()).then_some(i)
    }

    fn slot(&self, id: u64) -> Option<Slot> {
        let s = match self.pos(id) {
            Some(i) => self.slots[i],
            None => *self.far.get(&id)?,
        };
        (s.holder != DEAD).then_some(s)
    }

    /// Segment and holders of live message `id`.
    pub fn get(&self, id: u64) -> Option<(u64, Vec<u32>)> {
        let s = self.slot(id)?;
        let queues = match s.holder {
            MANY => self.many.get(&id).cloned().unwrap_or_default(),
            one => vec![one],
        };
        Some((u64::from(s.seg), queues))
    }

    /// Queue `k` let go of message `id`; returns the message's segment when
    /// that was its last queue (it is dead now).
    pub fn release(&mut self, id: u64, k: u32) -> Option<u64> {
        let s = self.slot(id)?;
        match s.holder {
            MANY => {
                let holders = self.many.get_mut(&id)?;
                holders.retain(|x| *x != k);
                if !holders.is_empty() {
                    return None;
                }
                self.many.remove(&id);
            }
            one if one == k => {}
            _ => return None,
        }
        self.live -= 1;
        match self.pos(id) {
            Some(i) if !self.far.contains_key(&id) => {
                self.slots[i].holder = DEAD;
                self.trim();
            }
            _ => {
                self.far.remove(&id);
            }
        }
        Some(u64::from(s.seg))
    }

    /// Drop dead slots at the front, and give memory back once the window
    /// has shrunk to a quarter of its buffer.
    fn trim(&mut self) {
        while self.slots.front().is_some_and(|s| s.holder == DEAD) {
            self.slots.pop_front();
            self.base += 1;
        }
        let cap = self.slots.capacity();
        if cap > 4096 && self.slots.len() < cap / 4 {
            self.slots.shrink_to(cap / 2);
        }
    }

    /// Live ids in segment `seg`, ascending.
    pub fn ids_in(&self, seg: u64) -> Vec<u64> {
        let seg = u32::try_from(seg).unwrap_or(u32::MAX);
        let mut ids: Vec<u64> = (self.base..)
            .zip(self.slots.iter())
            .chain(self.far.iter().map(|(id, s)| (*id, s)))
            .filter(|(_, s)| s.holder != DEAD && s.seg == seg)
            .map(|(id, _)| id)
            .collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_die_with_their_last_queue_and_the_window_follows() {
        let mut ix = LiveIndex::default();
        for id in 10..20 {
            ix.insert(id, 1, vec![0]);
        }
        ix.insert(20, 2, vec![0, 1]);
        assert_eq!(ix.len(), 11);
        assert_eq!(ix.release(10, 1), None, "not a holder");
        assert_eq!(ix.release(10, 0), Some(1));
        assert_eq!(ix.release(10, 0), None, "released twice counts once");
        assert_eq!(ix.base, 11);
        assert_eq!(ix.release(20, 0), None, "still held by queue 1");
        assert_eq!(ix.get(20), Some((2, vec![1])));
        assert_eq!(ix.release(20, 1), Some(2));
        assert_eq!(ix.ids_in(1), (11..20).collect::<Vec<_>>());
        for id in 11..20 {
            ix.release(id, 0);
        }
        assert_eq!((ix.len(), ix.slots.len()), (0, 0));
    }

    #[test]
    fn ids_arrive_out_of_order_and_with_gaps() {
        let mut ix = LiveIndex::default();
        ix.insert(5, 1, vec![3]);
        ix.insert(9, 1, vec![3]);
        ix.insert(2, 1, vec![3]);
        assert_eq!(ix.ids_in(1), vec![2, 5, 9]);
        assert_eq!(ix.get(7), None);
        assert_eq!(ix.release(7, 3), None);
        ix.insert(5, 4, vec![3]);
        assert_eq!((ix.len(), ix.get(5)), (3, Some((4, vec![3]))));
    }

    #[test]
    fn a_far_id_does_not_grow_the_window() {
        let mut ix = LiveIndex::default();
        ix.insert(1, 1, vec![0]);
        ix.insert(u64::MAX - 1, 2, vec![0]);
        ix.insert(u64::MAX / 2, 2, vec![0, 1]);
        assert!(ix.slots.len() < 10);
        assert_eq!(ix.ids_in(2), vec![u64::MAX / 2, u64::MAX - 1]);
        assert_eq!(ix.release(u64::MAX - 1, 0), Some(2));
        assert_eq!(ix.release(u64::MAX / 2, 0), None);
        assert_eq!(ix.release(u64::MAX / 2, 1), Some(2));
        assert_eq!((ix.len(), ix.far.len()), (1, 0));
    }
}
