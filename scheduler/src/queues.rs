//! The indexed queues that keep every event O(log n) in chunks and peers, so the same
//! scheduler serves 3 peers on a LAN and 10,000 in the simulator:
//!
//! - `pending`: chunks that want another copy, retries first, then by index;
//! - `outstanding`: chunks fully assigned but unsettled, ordered by expected finish —
//!   the candidates for speculation (both ends are used: most overdue, latest);
//! - `spot` and `disputes`: chunks for the trusted worker — spot checks whose remote
//!   answer is in (only it can do them), and disputed or revoked chunks (it settles
//!   them at once, though a third remote opinion may settle them first);
//! - `hungry`: peers below their pipeline target, fastest first;
//! - `deadlines` and `cooldowns`: timers, as heaps with lazy deletion (an entry whose
//!   copy or breaker state is gone is skipped when it surfaces).
//!
//! Membership in `pending`/`outstanding` and `hungry` is mirrored in the chunk's
//! [`Slot`] and the peer's `hungry_key`, which is what makes removal cheap.

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap};

use super::chunks::Slot;
use super::types::ChunkIndex;
use super::{Micros, PeerIx};

#[derive(Debug, Default)]
pub struct Queues {
    pub pending: BTreeSet<(u8, ChunkIndex)>,
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
                self.pending.remove(&(class, chunk));
            }
            Slot::Outstanding(eta) => {
                self.outstanding.remove(&(eta, chunk));
            }
        }
        match to {
            Slot::None => {}
            Slot::Pending(class) => {
                self.pending.insert((class, chunk));
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
