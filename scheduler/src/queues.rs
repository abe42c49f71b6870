//! The indexed queues that keep every event O(log n) in chunks and peers, so the same
//! scheduler serves 3 peers on a LAN and 10,000 in the simulator:
//!
//! - `pending`: chunks that want another copy, retries first, then by index
//!   ([`Pending`]: the fresh chunks nobody was handed yet as ranges, the others one
//!   entry each);
//! - `outstanding`: chunks fully assigned but unsettled, ordered by expected finish —
//!   the candidates for speculation (both ends are used: most overdue, latest);
//! - `spot` and `disputes`: chunks for the trusted worker — spot checks whose remote
//!   answer is in (only it can do them), and disputed or revoked chunks (it settles
//!   them at once, though a third remote opinion may settle them first);
//! - `hungry`: peers below their pipeline target, fastest first;
//! - `deadlines` and `cooldowns`: timers, as heaps with lazy deletion (an entry whose
//!   copy or breaker state is gone is skipped when it surfaces).
//!
//! Membership in `pending`'s entries, in `outstanding` and in `hungry` is mirrored in
//! the chunk's [`Slot`] and the peer's `hungry_key`, which is what makes removal cheap.
//! A fresh chunk held in `pending`'s ranges has no state at all: the scheduler gives it
//! one when it first hands it out ([`Pending::take_fresh`]).

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap};
use std::iter::Peekable;

use super::chunks::Slot;
use super::ranges::RangeSet;
use super::types::ChunkIndex;
use super::{Micros, PeerIx};

#[derive(Debug, Default)]
pub struct Queues {
    pub pending: Pending,
    pub outstanding: BTreeSet<(Micros, ChunkIndex)>,
    pub spot: BTreeSet<ChunkIndex>,
    pub disputes: BTreeSet<ChunkIndex>,
    /// (Reverse(speed bits), peer): iteration yields the fastest first.
    pub hungry: BTreeSet<(Reverse<u64>, PeerIx)>,
    /// (deadline, chunk, copy id).
    pub deadlines: BinaryHeap<Reverse<(Micros, ChunkIndex, u64)>>,
    /// (end of cool-down, peer).
    pub cooldowns: BinaryHeap<Reverse<(Micros, PeerIx)>>,
}

impl Queues {
    /// Moves a chunk from wherever it is to `to`.
    pub fn move_chunk(&mut self, chunk: ChunkIndex, from: Slot, to: Slot) {
        if from == to {
            return;
        }
        match from {
            Slot::None => {}
            Slot::Pending(class) => {
                self.pending.entries.remove(&(class, chunk));
            }
            Slot::Outstanding(eta) => {
                self.outstanding.remove(&(eta, chunk));
            }
        }
        match to {
            Slot::None => {}
            Slot::Pending(class) => {
                self.pending.entries.insert((class, chunk));
            }
            Slot::Outstanding(eta) => {
                self.outstanding.insert((eta, chunk));
            }
        }
    }

    /// Puts a peer in (Some(key)) or out of (None) the hungry set.
    pub fn set_hungry(&mut self, peer: PeerIx, from: Option<u64>, to: Option<u64>) {
        if from == to {
            return;
        }
        if let Some(key) = from {
            self.hungry.remove(&(Reverse(key), peer));
        }
        if let Some(key) = to {
            self.hungry.insert((Reverse(key), peer));
        }
    }

    /// The earliest timer, stale or not (the scheduler trims stale tops after each
    /// event, so this is exact between events).
    pub fn next_timer(&self) -> Option<Micros> {
        let deadline = self.deadlines.peek().map(|Reverse((t, _, _))| *t);
        let cooldown = self.cooldowns.peek().map(|Reverse((t, _))| *t);
        match (deadline, cooldown) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// The pending queue, ordered by (class, index). The fresh chunks of a class that
/// nobody was handed yet are held as ranges (`fresh`, one set per fresh class), so a
/// job of a million chunks costs a few ranges here; every other pending chunk has a
/// state and one entry (`entries`). A chunk is in one or the other, never both, and
/// every question below is answered over both as one ordered set.
#[derive(Debug, Default)]
pub struct Pending {
    /// Chunks with a state, by (class, index).
    pub entries: BTreeSet<(u8, ChunkIndex)>,
    /// Fresh chunks without a state: (class, its chunks), for each class that has any.
    fresh: Vec<(u8, RangeSet)>,
}

impl Pending {
    /// Adds fresh chunks of `class` that have no state.
    pub fn add_fresh(&mut self, class: u8, chunks: RangeSet) {
        match self.fresh.iter_mut().find(|(c, _)| *c == class) {
            Some((_, set)) => {
                for range in chunks.ranges() {
                    set.insert_range(range);
                }
            }
            None => {
                self.fresh.push((class, chunks));
                self.fresh.sort_by_key(|(c, _)| *c);
            }
        }
    }

    fn fresh_of(&self, class: u8) -> Option<&RangeSet> {
        self.fresh.iter().find(|(c, _)| *c == class).map(|(_, s)| s)
    }

    /// Whether `chunk` is a fresh chunk of `class` without a state.
    pub fn is_fresh(&self, class: u8, chunk: ChunkIndex) -> bool {
        self.fresh_of(class).is_some_and(|s| s.contains(chunk))
    }

    /// The class of `chunk` if it is a fresh chunk without a state.
    pub fn fresh_class_of(&self, chunk: ChunkIndex) -> Option<u8> {
        self.fresh
            .iter()
            .find(|(_, s)| s.contains(chunk))
            .map(|(c, _)| *c)
    }

    /// Takes a fresh chunk out of the ranges and lists it as an entry of its class,
    /// where the state it is about to get says it is (`Slot::Pending(class)`).
    pub fn take_fresh(&mut self, class: u8, chunk: ChunkIndex) -> bool {
        let taken = self
            .fresh
            .iter_mut()
            .find(|(c, _)| *c == class)
            .is_some_and(|(_, s)| s.remove(chunk));
        if taken {
            self.entries.insert((class, chunk));
        }
        taken
    }

    /// Pending chunks, entries and ranged ones.
    pub fn len(&self) -> usize {
        let fresh: u64 = self.fresh.iter().map(|(_, s)| s.len()).sum();
        self.entries.len() + fresh as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn contains(&self, class: u8, chunk: ChunkIndex) -> bool {
        self.entries.contains(&(class, chunk)) || self.is_fresh(class, chunk)
    }

    /// The first pending chunk in (class, index) order.
    pub fn first(&self) -> Option<(u8, ChunkIndex)> {
        let entry = self.entries.first().copied();
        let fresh = self
            .fresh
            .iter()
            .find_map(|(c, s)| s.first().map(|first| (*c, first)));
        match (entry, fresh) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The chunks of `class` at or after `from`, ascending.
    pub fn class_from(&self, class: u8, from: ChunkIndex) -> impl Iterator<Item = ChunkIndex> + '_ {
        let entries = self
            .entries
            .range((class, from)..=(class, ChunkIndex::MAX))
            .map(|&(_, c)| c);
        let fresh = self
            .fresh_of(class)
            .into_iter()
            .flat_map(move |s| s.iter_from(from));
        Merged {
            a: entries.peekable(),
            b: fresh.peekable(),
        }
    }

    /// The chunks of `class`, ascending.
    pub fn class(&self, class: u8) -> impl Iterator<Item = ChunkIndex> + '_ {
        self.class_from(class, 0)
    }

    /// The last chunk of `class`.
    pub fn last_of_class(&self, class: u8) -> Option<ChunkIndex> {
        let entry = self
            .entries
            .range((class, 0)..=(class, ChunkIndex::MAX))
            .next_back()
            .map(|&(_, c)| c);
        let fresh = self.fresh_of(class).and_then(|s| s.last());
        entry.max(fresh)
    }

    /// Every pending chunk in (class, index) order.
    pub fn iter(&self) -> impl Iterator<Item = (u8, ChunkIndex)> + '_ {
        std::iter::successors(self.first().map(|(class, _)| class), |&class| {
            self.next_class(class)
        })
        .flat_map(move |class| self.class(class).map(move |chunk| (class, chunk)))
    }

    /// The first class after `class` that has a pending chunk.
    fn next_class(&self, class: u8) -> Option<u8> {
        let after = class.checked_add(1)?;
        let entry = self.entries.range((after, 0)..).next().map(|&(c, _)| c);
        let fresh = self
            .fresh
            .iter()
            .find(|(c, s)| *c >= after && !s.is_empty())
            .map(|(c, _)| *c);
        match (entry, fresh) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Ranges holding fresh chunks (for [`crate::Footprint`]).
    pub fn fresh_ranges(&self) -> usize {
        self.fresh.iter().map(|(_, s)| s.range_count()).sum()
    }
}

/// Two ascending iterators over disjoint chunks, merged into one ascending one.
struct Merged<A: Iterator<Item = ChunkIndex>, B: Iterator<Item = ChunkIndex>> {
    a: Peekable<A>,
    b: Peekable<B>,
}

impl<A: Iterator<Item = ChunkIndex>, B: Iterator<Item = ChunkIndex>> Iterator for Merged<A, B> {
    type Item = ChunkIndex;

    fn next(&mut self) -> Option<ChunkIndex> {
        match (self.a.peek(), self.b.peek()) {
            (Some(a), Some(b)) if a <= b => self.a.next(),
            (Some(_), Some(_)) => self.b.next(),
            (Some(_), None) => self.a.next(),
            (None, _) => self.b.next(),
        }
    }
}
