//! Per-chunk state of a chunk in play: the copies in flight (who, since when, expected
//! when, deadline) and the standing votes (who answered what). A chunk's verdict is a
//! function of its votes only ([`tally`]), so re-checking after a ban is "drop the
//! banned peer's votes and decide again".
//!
//! Only chunks in play have a state (`Scheduler::chunks`, a map by index): a fresh
//! chunk gets one when it is first handed out, and a settled one gives it up once
//! nothing but a ban can change it any more ([`ChunkState::retirable`]); what a ban
//! needs of it then is kept per peer as ranges (`PeerState::backs`). A chunk's
//! constants (cost, spot check, tail) are functions of its index, copied into its
//! state for convenience.

use idlegrid_protocol::Cid;

use super::types::VerifiedBy;

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
    /// The network host it came from: votes from one host count once.
    pub host: u64,
    /// Believed on its own (trusted pool, or a peer with a record that was not drawn
    /// for an audit). A result backed only by votes that are not believed waits for a
    /// check.
    pub believed: bool,
    /// What became of it once its result settled.
    pub standing: VoteStanding,
}

/// A vote's standing once its chunk settled on its result.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VoteStanding {
    /// Not counted yet.
    Open,
    /// The result settled on this vote's credit alone.
    Believed,
    /// Someone else (the trusted worker, a believed peer on another host) returned
    /// the same result.
    Confirmed,
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
    /// Handed to the trusted worker to check a remote result (counted once).
    pub check_requested: bool,
    /// The check it waits for now.
    pub check: Check,
    /// Distinct peers on which the kernel failed.
    pub kernel_failures: Vec<PeerIx>,
    /// The last peer it failed or timed out on: it goes elsewhere first.
    pub last_failed: Option<PeerIx>,
    /// Every peer ever sent a copy: only their answers count (a late one is welcome,
    /// an unsolicited one is not — it would let one liar settle chunks at will).
    pub sent_to: Vec<PeerIx>,
    /// The peers of `sent_to` whose answer may still come: no vote yet, and neither a
    /// reported failure since their last copy nor gone or banned. A late answer is a
    /// vote ([`Event::ChunkDone`]), so a settled chunk keeps its state until this is
    /// empty.
    ///
    /// [`Event::ChunkDone`]: super::types::Event::ChunkDone
    pub awaited: Vec<PeerIx>,
    pub slot: Slot,
}

/// The verdict of a chunk's votes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tally {
    /// The settled result, if the votes settle it, and what it rests on.
    pub decision: Option<(Cid, VerifiedBy)>,
    /// Distinct hosts behind the most backed result.
    pub top: u32,
    /// Who may settle it now, under earned trust.
    pub check: Check,
}

/// A check a chunk waits for (earned trust).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Check {
    None,
    /// Enough hosts agree but none is believed: a copy from the trusted worker or
    /// from a peer that earned trust (on another host) settles it.
    ByVouched,
    /// The answers disagree: only the trusted worker settles it, so that a ban always
    /// rests on this machine's own computation.
    ByLocal,
}

/// How a tally weighs votes: `replicas` hosts, and whether every vote is believed
/// ([`Trust::All`](super::config::Trust::All)) or disagreements go to the trusted
/// worker (earned trust).
#[derive(Clone, Copy, Debug)]
pub struct Rule {
    pub replicas: u32,
    pub trust_all: bool,
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
            check_requested: false,
            check: Check::None,
            kernel_failures: Vec::new(),
            last_failed: None,
            sent_to: Vec::new(),
            awaited: Vec::new(),
            slot: Slot::None,
        }
    }

    /// The verdict of this chunk's votes ([`tally`]).
    pub fn tally(&self, rule: Rule) -> Tally {
        tally(&self.votes, rule)
    }

    /// Nothing but a ban can change this chunk any more: it is settled, has no copy
    /// out, waits for no answer, no check and no spot check, and is in no queue of
    /// its own (the caller knows the trusted worker's queues). Its state can go.
    pub fn retirable(&self) -> bool {
        self.verified.is_some()
            && self.copies.is_empty()
            && self.awaited.is_empty()
            && self.slot == Slot::None
            && self.check == Check::None
            && (!self.spot_check || self.trusted_voted)
    }

    /// Stops waiting for `peer`'s answer.
    pub fn stop_awaiting(&mut self, peer: PeerIx) {
        if let Some(pos) = self.awaited.iter().position(|&p| p == peer) {
            self.awaited.swap_remove(pos);
            if self.awaited.is_empty() {
                self.awaited = Vec::new();
            }
        }
    }

    /// Copies still wanted in flight for the chunk to be settled: 0 once verified; for
    /// a check by a peer that earned trust, one; 0 while it waits for the trusted
    /// worker to settle a disagreement (`checkable`: one is joined).
    pub fn needed(&self, rule: Rule, checkable: bool) -> u32 {
        if self.verified.is_some() {
            return 0;
        }
        let tally = self.tally(rule);
        match (tally.decision, tally.check) {
            (Some(_), _) => 0,
            (None, Check::ByLocal) if checkable => 0,
            (None, Check::ByVouched) => 1,
            _ => rule.replicas.saturating_sub(tally.top).max(1),
        }
    }

    /// The peer has a copy in flight or a standing vote: it must not get another copy.
    pub fn held_by(&self, peer: PeerIx) -> bool {
        self.copies.iter().any(|c| c.peer == peer) || self.votes.iter().any(|v| v.peer == peer)
    }

    /// The peer should not be given a copy: it holds one, or — when `others` says
    /// other peers could take it — it failed this chunk before, or the chunk waits for
    /// a check that this peer (`may_check` false) cannot make.
    pub fn shuns(&self, peer: PeerIx, others: bool, may_check: bool) -> bool {
        self.held_by(peer)
            || (self.check != Check::None && !may_check)
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

    /// Takes the peer's copy out, if it has one. A chunk with no copy left holds no
    /// room for one: a settled chunk may stay in play a while (an answer awaited)
    /// with no copy out.
    pub fn take_copy(&mut self, peer: PeerIx) -> Option<InFlight> {
        let pos = self.copies.iter().position(|c| c.peer == peer)?;
        let copy = self.copies.swap_remove(pos);
        if self.copies.is_empty() {
            self.copies = Vec::new();
        }
        Some(copy)
    }
}

/// The trusted worker's answer wins outright. Otherwise a result needs `replicas`
/// distinct hosts behind it, strictly more than any other result has (so a tie is
/// never settled), and at least one believed vote; under earned trust a
/// disagreement is left to the trusted worker.
pub fn tally(votes: &[Vote], rule: Rule) -> Tally {
    if let Some(v) = votes.iter().find(|v| v.trusted) {
        return Tally {
            decision: Some((v.cid, VerifiedBy::Local)),
            top: u32::MAX,
            check: Check::None,
        };
    }
    // The most backed result (by distinct hosts), whether one of its votes is
    // believed, the runner-up's hosts, and how many distinct results there are.
    // No allocation: a chunk has a handful of votes and this runs on every change.
    let mut top: Option<(Cid, u32, bool)> = None;
    let mut second = 0u32;
    let mut distinct = 0usize;
    for (i, v) in votes.iter().enumerate() {
        if votes[..i].iter().any(|w| w.cid == v.cid) {
            continue;
        }
        distinct += 1;
        let backers = || votes.iter().enumerate().filter(|(_, w)| w.cid == v.cid);
        let hosts = backers()
            .filter(|&(j, w)| {
                !votes[..j]
                    .iter()
                    .any(|x| x.cid == v.cid && x.host == w.host)
            })
            .count() as u32;
        let believed = backers().any(|(_, w)| w.believed);
        match top {
            Some((_, t, _)) if hosts <= t => second = second.max(hosts),
            Some((_, t, _)) => {
                second = t;
                top = Some((v.cid, hosts, believed));
            }
            None => top = Some((v.cid, hosts, believed)),
        }
    }
    let Some((cid, top, believed)) = top else {
        return Tally {
            decision: None,
            top: 0,
            check: Check::None,
        };
    };
    let contested = distinct > 1;
    let enough = top >= rule.replicas && top > second;
    if rule.trust_all {
        return Tally {
            decision: enough.then_some((cid, VerifiedBy::Unchecked { hosts: top })),
            top,
            check: Check::None,
        };
    }
    let settled = enough && believed && !contested;
    let check = if contested {
        Check::ByLocal
    } else if enough && !believed {
        Check::ByVouched
    } else {
        Check::None
    };
    Tally {
        decision: settled.then_some((cid, VerifiedBy::Peers { hosts: top })),
        top,
        check,
    }
}

/// Pushes onto one of a chunk's lists (copies, votes, peers sent to, failures), which
/// nearly always hold one or two: room for one more at a time up to four, not the
/// four a `Vec` makes room for at its first push. Over the thousands of chunks in
/// play of a large grid, that spare room would be most of their memory.
pub fn push_tight<T>(list: &mut Vec<T>, item: T) {
    if list.len() == list.capacity() && list.len() < 4 {
        list.reserve_exact(1);
    }
    list.push(item);
}
