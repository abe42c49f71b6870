//! [`RangeSet`]: a set of chunk indices held as sorted, disjoint, non-adjacent ranges.
//! The scheduler keeps in it what a job has a lot of and that comes in runs: the fresh
//! chunks nobody was handed yet, the chunks an earlier run settled, and per peer the
//! settled chunks a ban of that peer would re-open. Peers work through runs of
//! consecutive chunks, so each set is a handful of ranges whatever the job's size.

use std::collections::BTreeMap;
use std::ops::Range;

use super::types::ChunkIndex;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RangeSet {
    /// Start → end (exclusive). Ranges neither overlap nor touch: inserting merges.
    ranges: BTreeMap<ChunkIndex, ChunkIndex>,
    /// Chunks in the set (the sum of the ranges' lengths), kept so `len` is O(1).
    len: u64,
}

impl RangeSet {
    /// Chunks in the set.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Ranges the set is held in (its memory).
    pub fn range_count(&self) -> usize {
        self.ranges.len()
    }

    /// The range holding `chunk`, if any.
    fn containing(&self, chunk: ChunkIndex) -> Option<Range<ChunkIndex>> {
        let (&start, &end) = self.ranges.range(..=chunk).next_back()?;
        (chunk < end).then_some(start..end)
    }

    pub fn contains(&self, chunk: ChunkIndex) -> bool {
        self.containing(chunk).is_some()
    }

    pub fn first(&self) -> Option<ChunkIndex> {
        self.ranges.keys().next().copied()
    }

    pub fn last(&self) -> Option<ChunkIndex> {
        self.ranges.values().next_back().map(|&end| end - 1)
    }

    pub fn insert(&mut self, chunk: ChunkIndex) {
        if let Some(end) = chunk.checked_add(1) {
            self.insert_range(chunk..end);
        }
    }

    /// Adds every chunk of `range`, merging with the ranges it overlaps or touches.
    pub fn insert_range(&mut self, range: Range<ChunkIndex>) {
        if range.is_empty() {
            return;
        }
        let (mut start, mut end) = (range.start, range.end);
        // A range that starts before `start` and reaches it absorbs the new one.
        if let Some((&s, &e)) = self.ranges.range(..=start).next_back() {
            if e >= start {
                start = s;
                end = end.max(e);
            }
        }
        // Every range starting within [start, end] is swallowed.
        let swallowed: Vec<(ChunkIndex, ChunkIndex)> = self
            .ranges
            .range(start..=end)
            .map(|(&s, &e)| (s, e))
            .collect();
        for (s, e) in swallowed {
            self.ranges.remove(&s);
            self.len -= u64::from(e - s);
            end = end.max(e);
        }
        self.ranges.insert(start, end);
        self.len += u64::from(end - start);
    }

    /// Takes `chunk` out; false if it was not in the set.
    pub fn remove(&mut self, chunk: ChunkIndex) -> bool {
        let Some(range) = self.containing(chunk) else {
            return false;
        };
        self.ranges.remove(&range.start);
        if range.start < chunk {
            self.ranges.insert(range.start, chunk);
        }
        if chunk + 1 < range.end {
            self.ranges.insert(chunk + 1, range.end);
        }
        self.len -= 1;
        true
    }

    /// The ranges, ascending.
    pub fn ranges(&self) -> impl DoubleEndedIterator<Item = Range<ChunkIndex>> + '_ {
        self.ranges.iter().map(|(&start, &end)| start..end)
    }

    /// The parts of the set's ranges that fall within `within`, ascending.
    pub fn overlapping(
        &self,
        within: Range<ChunkIndex>,
    ) -> impl Iterator<Item = Range<ChunkIndex>> + '_ {
        let first = self
            .containing(within.start)
            .map_or(within.start, |r| r.start);
        self.ranges
            .range(first..within.end)
            .map(move |(&start, &end)| start.max(within.start)..end.min(within.end))
            .filter(|r| !r.is_empty())
    }

    /// Every chunk, ascending.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = ChunkIndex> + '_ {
        self.ranges().flatten()
    }

    /// The chunks at or after `from`, ascending.
    pub fn iter_from(&self, from: ChunkIndex) -> impl Iterator<Item = ChunkIndex> + '_ {
        self.overlapping(from..ChunkIndex::MAX).flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inserts_merge_and_removals_split() {
        let mut set = RangeSet::default();
        for c in [5, 3, 4, 9, 10, 7] {
            set.insert(c);
        }
        assert_eq!(set.ranges().collect::<Vec<_>>(), vec![3..6, 7..8, 9..11]);
        assert_eq!(set.len(), 6);
        set.insert(6);
        set.insert(8);
        assert_eq!(set.ranges().collect::<Vec<_>>(), vec![3..11]);
        assert!(set.remove(5));
        assert!(!set.remove(5));
        assert!(!set.remove(20));
        assert_eq!(set.ranges().collect::<Vec<_>>(), vec![3..5, 6..11]);
        assert_eq!(set.len(), 7);
        assert!(set.remove(3) && set.remove(10));
        assert_eq!(set.ranges().collect::<Vec<_>>(), vec![4..5, 6..10]);
        set.insert_range(0..20);
        assert_eq!(set.ranges().collect::<Vec<_>>(), vec![0..20]);
        assert_eq!(set.len(), 20);
    }

    #[test]
    fn lookups_agree_with_a_plain_set() {
        let mut set = RangeSet::default();
        let mut plain = std::collections::BTreeSet::new();
        let mut x: u32 = 12345;
        for _ in 0..2000 {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            let c = (x >> 8) % 300;
            if x & 1 == 0 {
                set.insert(c);
                plain.insert(c);
            } else {
                assert_eq!(set.remove(c), plain.remove(&c));
            }
            assert_eq!(set.len(), plain.len() as u64);
            assert_eq!(set.first(), plain.first().copied());
            assert_eq!(set.last(), plain.last().copied());
            let from = (x >> 3) % 300;
            assert_eq!(
                set.iter_from(from).take(5).collect::<Vec<_>>(),
                plain.range(from..).take(5).copied().collect::<Vec<_>>()
            );
            let within = from..from + 40;
            assert_eq!(
                set.overlapping(within.clone())
                    .flatten()
                    .collect::<Vec<_>>(),
                plain.range(within).copied().collect::<Vec<_>>()
            );
        }
        assert_eq!(
            set.iter().collect::<Vec<_>>(),
            plain.iter().copied().collect::<Vec<_>>()
        );
    }
}
