//! Which stored messages are live, in which segment, held by which queues:
//! a dense window of blocks of 64 ids, from the oldest live id to the
//! newest.
//!
//! Ids are handed out in sequence and a queue mostly lets go of its
//! messages in order. A block whose live ids share one segment and one
//! holder (a deep queue filled by its publishers: the usual case) is a
//! bitmap plus that segment and holder, 24 bytes per 64 ids; a block mixing
//! segments or holders (queues published to in turn) keeps an 8-byte slot
//! per id. So 100 million messages of one queue cost about 40 MB, where a
//! slot per id cost 800 MB and a hash map entry about 100 bytes. A message
//! held by more than one queue keeps its queue list in a side map. Dead
//! blocks at the front are dropped as they appear; a long-lived message
//! keeps the blocks after it, dead or not, which is the price of the dense
//! layout.

use std::collections::VecDeque;

use super::state::IdMap;

/// The slot's holder when no queue holds the message (or no message has
/// that id yet).
const DEAD: u32 = u32::MAX;
/// The slot's holder when several queues hold it (see `LiveIndex::many`).
const MANY: u32 = u32::MAX - 1;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Slot {
    seg: u32,
    holder: u32,
}

/// The most empty ids an insert may add to the window to reach its id.
const MAX_GAP: u64 = 1 << 20;

/// Ids per block.
const BLOCK: u64 = 64;

const EMPTY: Slot = Slot {
    seg: 0,
    holder: DEAD,
};

/// 64 consecutive ids.
#[derive(Clone)]
enum Block {
    /// Every live id of the block (a bit each in `live`) is in one
    /// segment and has one holder.
    Same { slot: Slot, live: u64 },
    /// A slot per id.
    Mixed(Box<[Slot; BLOCK as usize]>),
}

const EMPTY_BLOCK: Block = Block::Same {
    slot: EMPTY,
    live: 0,
};

impl Block {
    fn get(&self, bit: u32) -> Option<Slot> {
        let s = match self {
            Block::Same { slot, live } => (live >> bit & 1 == 1).then_some(*slot)?,
            Block::Mixed(slots) => slots[bit as usize],
        };
        (s.holder != DEAD).then_some(s)
    }

    fn set(&mut self, bit: u32, new: Slot) {
        match self {
            Block::Same { slot, live } if *live == 0 || *slot == new => {
                *slot = new;
                *live |= 1 << bit;
            }
            Block::Same { slot, live } => {
                let mut slots = Box::new([EMPTY; BLOCK as usize]);
                for (i, s) in slots.iter_mut().enumerate() {
                    if *live >> i & 1 == 1 {
                        *s = *slot;
                    }
                }
                slots[bit as usize] = new;
                *self = Block::Mixed(slots);
            }
            Block::Mixed(slots) => slots[bit as usize] = new,
        }
    }

    fn clear(&mut self, bit: u32) {
        match self {
            Block::Same { live, .. } => *live &= !(1 << bit),
            Block::Mixed(slots) => {
                slots[bit as usize].holder = DEAD;
                if slots.iter().all(|s| s.holder == DEAD) {
                    *self = EMPTY_BLOCK;
                }
            }
        }
    }

    fn is_empty(&self) -> bool {
        matches!(self, Block::Same { live: 0, .. })
    }
}

/// See the module docs.
#[derive(Default)]
pub(crate) struct LiveIndex {
    /// Id of the first slot of `blocks[0]` (a multiple of [`BLOCK`]).
    base: u64,
    blocks: VecDeque<Block>,
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
            Some((b, bit)) => self.blocks[b].set(bit, slot),
            None => {
                self.far.insert(id, slot);
            }
        }
    }

    /// Messages `first..end` are in segment `seg`, held by queue `holder`
    /// alone (recovery's runs): a bitmap operation per block where the
    /// block is free or agrees, one insert per id elsewhere.
    pub fn insert_run(&mut self, first: u64, end: u64, seg: u64, holder: u32) {
        let slot = Slot {
            seg: u32::try_from(seg).unwrap_or(u32::MAX),
            holder,
        };
        let mut id = first;
        while id < end {
            let stop = end.min(id.saturating_add(1 << 16));
            if self.slot_for(id).is_none() || self.slot_for(stop - 1).is_none() {
                for x in id..stop {
                    self.insert(x, seg, vec![holder]);
                }
                id = stop;
                continue;
            }
            while id < stop {
                let (b, bit) = self.pos(id).expect("the window reaches it");
                let n = (BLOCK - u64::from(bit)).min(stop - id);
                let mask = if n == BLOCK {
                    u64::MAX
                } else {
                    ((1u64 << n) - 1) << bit
                };
                match &mut self.blocks[b] {
                    Block::Same { slot: s, live }
                        if *live & mask == 0 && (*live == 0 || *s == slot) =>
                    {
                        *s = slot;
                        *live |= mask;
                        self.live += n as usize;
                    }
                    _ => {
                        for x in id..id + n {
                            self.insert(x, seg, vec![holder]);
                        }
                    }
                }
                id += n;
            }
        }
    }

    /// The block and bit of `id`, growing the window to reach it; `None`
    /// when it is too far away.
    fn slot_for(&mut self, id: u64) -> Option<(usize, u32)> {
        if self.blocks.is_empty() && !self.far.contains_key(&id) {
            self.base = id - id % BLOCK;
        }
        let end = self.base.saturating_add(self.blocks.len() as u64 * BLOCK);
        let too_far = id.saturating_add(MAX_GAP) < self.base || id >= end.saturating_add(MAX_GAP);
        if too_far || self.far.contains_key(&id) {
            return None;
        }
        while id < self.base {
            // An id handed out before the front was trimmed, pushed late.
            self.blocks.push_front(EMPTY_BLOCK);
            self.base -= BLOCK;
        }
        let b = ((id - self.base) / BLOCK) as usize;
        if b >= self.blocks.len() {
            self.blocks.resize(b + 1, EMPTY_BLOCK);
        }
        Some((b, (id % BLOCK) as u32))
    }

    /// Block and bit of `id`, if it is inside the window.
    fn pos(&self, id: u64) -> Option<(usize, u32)> {
        let d = id.checked_sub(self.base)?;
        let b = usize::try_from(d / BLOCK).ok()?;
        (b < self.blocks.len()).then_some((b, (id % BLOCK) as u32))
    }

    fn slot(&self, id: u64) -> Option<Slot> {
        if let Some(s) = self.far.get(&id) {
            return (s.holder != DEAD).then_some(*s);
        }
        let (b, bit) = self.pos(id)?;
        self.blocks[b].get(bit)
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
        if self.far.remove(&id).is_none() {
            if let Some((b, bit)) = self.pos(id) {
                self.blocks[b].clear(bit);
                self.trim();
            }
        }
        Some(u64::from(s.seg))
    }

    /// Drop dead blocks at the front, and give memory back once the window
    /// has shrunk to a quarter of its buffer.
    fn trim(&mut self) {
        while self.blocks.front().is_some_and(Block::is_empty) {
            self.blocks.pop_front();
            self.base += BLOCK;
        }
        let cap = self.blocks.capacity();
        if cap > 256 && self.blocks.len() < cap / 4 {
            self.blocks.shrink_to(cap / 2);
        }
    }

    /// Live ids in segment `seg`, ascending.
    pub fn ids_in(&self, seg: u64) -> Vec<u64> {
        let seg = u32::try_from(seg).unwrap_or(u32::MAX);
        let mut ids: Vec<u64> = Vec::new();
        for (i, b) in self.blocks.iter().enumerate() {
            let first = self.base + i as u64 * BLOCK;
            match b {
                Block::Same { slot, live } if slot.seg == seg && *live != 0 => {
                    ids.extend((0..BLOCK).filter(|j| live >> j & 1 == 1).map(|j| first + j));
                }
                Block::Same { .. } => {}
                Block::Mixed(slots) => ids.extend(
                    (first..)
                        .zip(slots.iter())
                        .filter(|(_, s)| s.holder != DEAD && s.seg == seg)
                        .map(|(id, _)| id),
                ),
            }
        }
        ids.extend(
            self.far
                .iter()
                .filter(|(_, s)| s.holder != DEAD && s.seg == seg)
                .map(|(id, _)| *id),
        );
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
        assert_eq!(ix.slot(10), None);
        assert_eq!(ix.release(20, 0), None, "still held by queue 1");
        assert_eq!(ix.get(20), Some((2, vec![1])));
        assert_eq!(ix.release(20, 1), Some(2));
        assert_eq!(ix.ids_in(1), (11..20).collect::<Vec<_>>());
        for id in 11..20 {
            ix.release(id, 0);
        }
        assert_eq!((ix.len(), ix.blocks.len()), (0, 0));
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
        assert!(ix.blocks.len() < 10);
        assert_eq!(ix.ids_in(2), vec![u64::MAX / 2, u64::MAX - 1]);
        assert_eq!(ix.release(u64::MAX - 1, 0), Some(2));
        assert_eq!(ix.release(u64::MAX / 2, 0), None);
        assert_eq!(ix.release(u64::MAX / 2, 1), Some(2));
        assert_eq!((ix.len(), ix.far.len()), (1, 0));
    }

    #[test]
    fn blocks_stay_compact_for_one_queue_and_mix_for_several() {
        let mut ix = LiveIndex::default();
        for id in 1..=10_000u64 {
            ix.insert(id, 1 + id / 5000, vec![0]);
        }
        assert!(
            ix.blocks
                .iter()
                .filter(|b| matches!(b, Block::Mixed(_)))
                .count()
                <= 2
        );
        for id in 10_001..=12_000u64 {
            ix.insert(id, 3, vec![(id % 2) as u32]);
        }
        assert_eq!(ix.ids_in(3), (10_000..=12_000).collect::<Vec<_>>());
        assert_eq!(ix.get(10_002), Some((3, vec![0])));
        assert_eq!(ix.get(10_003), Some((3, vec![1])));
        assert_eq!(ix.release(10_003, 0), None, "not its holder");
        for id in 1..=12_000u64 {
            let seg = if id > 10_000 { 3 } else { 1 + id / 5000 };
            assert_eq!(
                ix.release(id, (id > 10_000 && id % 2 == 1) as u32),
                Some(seg),
                "{id}"
            );
        }
        assert_eq!((ix.len(), ix.blocks.len()), (0, 0));
    }

    #[test]
    fn a_run_is_what_its_ids_one_by_one_are() {
        let (mut one, mut run) = (LiveIndex::default(), LiveIndex::default());
        for (a, b, seg) in [(5u64, 300u64, 1u64), (300, 70_000, 2), (70_000, 70_001, 3)] {
            for id in a..b {
                one.insert(id, seg, vec![4]);
            }
            run.insert_run(a, b, seg, 4);
        }
        run.insert(100, 9, vec![1, 4]);
        one.insert(100, 9, vec![1, 4]);
        run.insert_run(90, 110, 1, 4);
        for id in 90..110 {
            one.insert(id, 1, vec![4]);
        }
        assert_eq!(one.len(), run.len());
        for seg in 1..=3 {
            assert_eq!(one.ids_in(seg), run.ids_in(seg));
        }
        assert_eq!(run.get(100), Some((1, vec![4])));
    }
}
