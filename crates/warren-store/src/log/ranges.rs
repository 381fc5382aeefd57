//! A set of message ids kept as runs of consecutive ids, so that what
//! recovery tracks for a queue of a hundred million messages published in
//! order costs a few runs, not a hundred million entries.

use std::collections::BTreeMap;

/// Ids as disjoint, non-adjacent runs `start..end` (end exclusive).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct IdRanges {
    runs: BTreeMap<u64, u64>,
    len: u64,
}

impl IdRanges {
    /// Ids held.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// True when it holds no id.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The run holding `id`, if any.
    fn run_of(&self, id: u64) -> Option<(u64, u64)> {
        let (&s, &e) = self.runs.range(..=id).next_back()?;
        (id < e).then_some((s, e))
    }

    /// True when `id` is held.
    pub fn contains(&self, id: u64) -> bool {
        self.run_of(id).is_some()
    }

    /// Add `id`; false when it was already there. Appending just past the
    /// last run (ids in order) is the fast case.
    pub fn insert(&mut self, id: u64) -> bool {
        let Some(end) = id.checked_add(1) else {
            return false;
        };
        let before = self.runs.range_mut(..=id).next_back();
        let joins_before = match before {
            Some((_, e)) if id < *e => return false,
            Some((_, e)) if *e == id => {
                *e = end;
                true
            }
            _ => false,
        };
        self.len += 1;
        let after = self.runs.get(&end).copied();
        match (joins_before, after) {
            (true, Some(after_end)) => {
                self.runs.remove(&end);
                let (_, e) = self.runs.range_mut(..=id).next_back().expect("joined");
                *e = after_end;
            }
            (true, None) => {}
            (false, Some(after_end)) => {
                self.runs.remove(&end);
                self.runs.insert(id, after_end);
            }
            (false, None) => {
                self.runs.insert(id, end);
            }
        }
        true
    }

    /// Add every id in `first..end`.
    pub fn insert_run(&mut self, first: u64, end: u64) {
        if first >= end {
            return;
        }
        let (mut s, mut e) = (first, end);
        // Runs that overlap or touch `first..end`, merged into one.
        let touching: Vec<(u64, u64)> = self
            .runs
            .range(..=end)
            .rev()
            .take_while(|(_, re)| **re >= first)
            .map(|(a, b)| (*a, *b))
            .collect();
        for (a, b) in touching {
            self.runs.remove(&a);
            self.len -= b - a;
            s = s.min(a);
            e = e.max(b);
        }
        self.runs.insert(s, e);
        self.len += e - s;
    }

    /// The parts of `first..end` that are held, as runs.
    pub fn overlapping(&self, first: u64, end: u64) -> Vec<(u64, u64)> {
        let mut out = Vec::new();
        if let Some((s, e)) = self.runs.range(..first).next_back() {
            if *e > first {
                out.push((first.max(*s), end.min(*e)));
            }
        }
        for (s, e) in self.runs.range(first..end) {
            out.push((*s, end.min(*e)));
        }
        out
    }

    /// Drop `id`; false when it was not there.
    pub fn remove(&mut self, id: u64) -> bool {
        let Some((s, e)) = self.run_of(id) else {
            return false;
        };
        self.len -= 1;
        self.runs.remove(&s);
        if s < id {
            self.runs.insert(s, id);
        }
        if id + 1 < e {
            self.runs.insert(id + 1, e);
        }
        true
    }

    /// Drop every id in `first..end`.
    pub fn remove_range(&mut self, first: u64, end: u64) {
        if first >= end {
            return;
        }
        // Runs overlapping the range: the one starting before it, and
        // those starting inside it.
        let mut hit: Vec<(u64, u64)> = self
            .runs
            .range(..first)
            .next_back()
            .map(|(s, e)| (*s, *e))
            .filter(|(_, e)| *e > first)
            .into_iter()
            .collect();
        hit.extend(self.runs.range(first..end).map(|(s, e)| (*s, *e)));
        for (s, e) in hit {
            self.runs.remove(&s);
            self.len -= e - s;
            if s < first {
                self.runs.insert(s, first);
                self.len += first - s;
            }
            if e > end {
                self.runs.insert(end, e);
                self.len += e - end;
            }
        }
    }

    /// True when some id in `lo..=hi` is held.
    pub fn any_in(&self, lo: u64, hi: u64) -> bool {
        if self.contains(lo) {
            return true;
        }
        self.runs.range(lo..=hi).next().is_some()
    }

    /// The runs, ascending.
    pub fn runs(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.runs.iter().map(|(s, e)| (*s, *e))
    }

    /// Every id, ascending.
    pub fn ids(&self) -> impl Iterator<Item = u64> + '_ {
        self.runs().flat_map(|(s, e)| s..e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_merge_split_and_count() {
        let mut r = IdRanges::default();
        for id in [1, 2, 3, 5, 7, 6] {
            assert!(r.insert(id));
        }
        assert!(!r.insert(2), "already held");
        assert_eq!(r.runs().collect::<Vec<_>>(), [(1, 4), (5, 8)]);
        assert!(r.insert(4));
        assert_eq!(r.runs().collect::<Vec<_>>(), [(1, 8)]);
        assert!(r.remove(4) && !r.remove(4));
        assert_eq!(r.runs().collect::<Vec<_>>(), [(1, 4), (5, 8)]);
        assert!(r.remove(1) && r.remove(7));
        assert_eq!(r.ids().collect::<Vec<_>>(), [2, 3, 5, 6]);
        assert_eq!(r.len(), 4);
        assert!(r.any_in(4, 5) && !r.any_in(7, 100) && r.any_in(0, 2));
        assert!(!r.insert(u64::MAX), "the last id cannot be held");
        for id in 10..20 {
            r.insert(id);
        }
        r.remove_range(3, 12);
        assert_eq!(r.runs().collect::<Vec<_>>(), [(2, 3), (12, 20)]);
        r.remove_range(15, 16);
        r.remove_range(30, 10);
        assert_eq!(r.runs().collect::<Vec<_>>(), [(2, 3), (12, 15), (16, 20)]);
        assert_eq!(r.len(), 8);
        r.insert_run(14, 17);
        assert_eq!(r.runs().collect::<Vec<_>>(), [(2, 3), (12, 20)]);
        r.insert_run(3, 5);
        r.insert_run(40, 50);
        assert_eq!(r.runs().collect::<Vec<_>>(), [(2, 5), (12, 20), (40, 50)]);
        assert_eq!(r.len(), 21);
        assert_eq!(r.overlapping(4, 45), [(4, 5), (12, 20), (40, 45)]);
    }
}
