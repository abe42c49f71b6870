//! Per-chunk state: the copies in flight (who, since when, expected when, deadline) and
//! the standing votes (who answered what). A chunk's verdict is a function of its votes
//! only ([`ChunkState::decide`]), so re-checking after a ban is "drop the banned
//! peer's votes and decide again".

use idlegrid_protocol::Cid;

use super::{Micros, PeerIx};

/// One copy of a chunk assigned to a peer.
#[derive(Clone, Copy, Debug)]
pub struct InFlight {
    pub peer: PeerIx,
    /// Unique per assignment, so a stale deadline entry never hits a newer copy.
    pub id: u64,
    pub assigned: Micros,
    /// When the peer is expected to answer (its queue ahead included).
    pub eta: Micros,
}

/// One answer, from a peer that is not banned.
#[derive(Clone, Copy, Debug)]
pub struct Vote {
    pub peer: PeerIx,
    pub cid: Cid,
    pub trusted: bool,
}

/// Where a chunk sits in the queues, so it can be found and moved in O(log n).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Slot {
    None,
    /// In the pending queue with this class (0 = retry, served first; 1 = fresh).
    Pending(u8),
    /// Fully assigned but unverified, a speculation candidate keyed by its eta.
    Outstanding(Micros),
}

#[derive(Clone, Debug)]
pub struct ChunkState {
    pub cost: u64,
    /// Chosen for a spot check by the trusted worker.
    pub spot_check: bool,
    /// The trusted worker has answered it (the spot check, if any, is done).
    pub trusted_voted: bool,
    pub verified: Option<Cid>,
    pub copies: Vec<InFlight>,
    pub votes: Vec<Vote>,
    /// Went back to the queue at least once: served before fresh chunks.
    pub retried: bool,
    /// One of the small chunks that end the plan (`dispatch::tail_start`): served
    /// after the others, largest first, so that peers end the job on small chunks.
    pub tail: bool,
    /// Two different answers were seen.
    pub disputed: bool,
    /// Distinct peers on which the kernel failed.
    pub kernel_failures: Vec<PeerIx>,
    /// The last peer it failed or timed out on: it goes elsewhere first.
    pub last_failed: Option<PeerIx>,
    /// Every peer ever sent a copy: only their answers count (a late one is welcome,
    /// an unsolicited one is not — it would let one liar settle chunks at will).
    pub sent_to: Vec<PeerIx>,
    pub slot: Slot,
}

/// The verdict of a chunk's votes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tally {
    /// The settled result, if the votes settle it.
    pub decision: Option<Cid>,
    /// Votes for the most voted result.
    pub top: u32,
}

impl ChunkState {
    pub fn new(cost: u64, spot_check: bool, tail: bool) -> Self {
        ChunkState {
            cost,
            spot_check,
            tail,
            trusted_voted: false,
            verified: None,
            copies: Vec::new(),
            votes: Vec::new(),
            retried: false,
            disputed: false,
            kernel_failures: Vec::new(),
            last_failed: None,
            sent_to: Vec::new(),
            slot: Slot::None,
        }
    }

    /// The trusted worker's answer wins outright; otherwise a result needs `replicas`
    /// votes and strictly more than any other result (so a tie is never settled, and a
    /// contradicted result needs at least two backers).
    pub fn tally(&self, replicas: u32) -> Tally {
        if let Some(v) = self.votes.iter().find(|v| v.trusted) {
            return Tally {
                decision: Some(v.cid),
                top: u32::MAX,
            };
        }
        let mut top: Option<(Cid, u32)> = None;
        let mut second = 0u32;
        for (i, v) in self.votes.iter().enumerate() {
            // Count each distinct result once, at its first vote.
            if self.votes[..i].iter().any(|w| w.cid == v.cid) {
                continue;
            }
            let n = self.votes.iter().filter(|w| w.cid == v.cid).count() as u32;
            match top {
                Some((_, t)) if n <= t => second = second.max(n),
                Some((_, t)) => {
                    second = t;
                    top = Some((v.cid, n));
                }
                None => top = Some((v.cid, n)),
            }
        }
        match top {
            Some((cid, n)) if n >= replicas && n > second => Tally {
                decision: Some(cid),
                top: n,
            },
            Some((_, n)) => Tally {
                decision: None,
                top: n,
            },
            None => Tally {
                decision: None,
                top: 0,
            },
        }
    }

    /// Copies still wanted in flight for the chunk to be settled (0 once verified).
    pub fn needed(&self, replicas: u32) -> u32 {
        if self.verified.is_some() {
            return 0;
        }
        let tally = self.tally(replicas);
        if tally.decision.is_some() {
            0
        } else {
            replicas.saturating_sub(tally.top).max(1)
        }
    }

    /// The peer has a copy in flight or a standing vote: it must not get another copy.
    pub fn held_by(&self, peer: PeerIx) -> bool {
        self.copies.iter().any(|c| c.peer == peer) || self.votes.iter().any(|v| v.peer == peer)
    }

    /// The peer should not be given a copy: it holds one, or — when `others` says
    /// other peers could take it — it failed this chunk before.
    pub fn shuns(&self, peer: PeerIx, others: bool) -> bool {
        self.held_by(peer)
            || (others && (self.last_failed == Some(peer) || self.kernel_failures.contains(&peer)))
    }

    /// When the chunk is expected to be settled: the `needed`-th earliest eta among
    /// its copies (the latest, if there are fewer).
    pub fn eta(&self, needed: u32) -> Option<Micros> {
        let mut etas: Vec<Micros> = self.copies.iter().map(|c| c.eta).collect();
        if etas.is_empty() {
            return None;
        }
        etas.sort_unstable();
        let k = (needed.max(1) as usize).min(etas.len());
        Some(etas[k - 1])
    }

    /// Takes the peer's copy out, if it has one.
    pub fn take_copy(&mut self, peer: PeerIx) -> Option<InFlight> {
        let pos = self.copies.iter().position(|c| c.peer == peer)?;
        Some(self.copies.swap_remove(pos))
    }
}
