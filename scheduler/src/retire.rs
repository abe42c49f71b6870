//! Chunks leaving play and coming back. A settled chunk's state is dropped once nothing
//! but a ban can change it ([`ChunkState::retirable`]); what a ban needs of it is then
//! kept per peer: the ranges of retired chunks its vote backs, believed or not
//! ([`Backed`]). A retired chunk settled by the trusted worker is recorded nowhere: the
//! trusted worker is never banned, so that result stands for good.
//!
//! A ban re-tallies each retired chunk the banned peer backed from the other backers
//! left (their hosts and whether they were believed): one that is still settled stays
//! retired; one that is not comes back into play as a state with no result and no
//! votes — revoked, counted back and queued for the trusted worker first, as any
//! revoked chunk is. A retired chunk keeps no votes, so the other backers' go with it
//! and the chunk is computed again.
//!
//! [`Backed`]: super::peers::Backed

use std::collections::HashMap;
use std::fmt::Debug;
use std::hash::Hash;

use idlegrid_protocol::Cid;

use super::chunks::{tally, ChunkState, Vote, VoteStanding};
use super::peers::Backed;
use super::types::{Action, ChunkIndex};
use super::{PeerIx, Scheduler};

/// How far a peer's list of voted or awaited chunks may outgrow the chunks in play
/// before the entries no longer true are dropped (see `note_vote`).
const LIST_SLACK: usize = 64;

impl<P: Copy + Eq + Hash + Ord + Debug> Scheduler<P> {
    /// Retires every chunk changed in this event that nothing but a ban can change
    /// any more.
    pub(super) fn retire_touched(&mut self) {
        let mut touched = std::mem::take(&mut self.touched);
        for &chunk in &touched {
            let retirable = self.chunks.get(&chunk).is_some_and(ChunkState::retirable)
                && !self.queues.spot.contains(&chunk)
                && !self.queues.disputes.contains(&chunk);
            if retirable {
                if let Some(state) = self.chunks.remove(&chunk) {
                    self.record_backers(chunk, &state);
                }
            }
        }
        touched.clear();
        self.touched = touched;
    }

    /// Notes under each backer of a chunk being retired that its vote backs it.
    fn record_backers(&mut self, chunk: ChunkIndex, state: &ChunkState) {
        if state.votes.iter().any(|v| v.trusted) {
            // The trusted worker's result: no ban can revoke it.
            return;
        }
        // Under earned trust with one replica, agreeing votes settle a chunk exactly
        // when one of them is believed: the others change no re-tally, and an audited
        // peer's chunks, checked by whoever was free, would only scatter its ranges.
        let rule = self.rule();
        let unbelieved_count = rule.replicas > 1 || rule.trust_all;
        for vote in &state.votes {
            // Every vote left agrees with the result: whoever contradicted it was banned
            // and lost its votes.
            if Some(vote.cid) != state.verified || !(vote.believed || unbelieved_count) {
                continue;
            }
            let backs = &mut self.peers[vote.peer as usize].backs;
            if vote.believed {
                backs.believed.insert(chunk);
            } else {
                backs.unbelieved.insert(chunk);
            }
        }
    }

    /// Lists a new vote of peer `ix` on `chunk`, for its ban. Entries of chunks retired
    /// since are dropped whenever the list outgrows the chunks in play, so its length
    /// follows them (amortised O(1) per vote).
    pub(super) fn note_vote(&mut self, ix: PeerIx, chunk: ChunkIndex) {
        let limit = 2 * self.chunks.len() + LIST_SLACK;
        let chunks = &self.chunks;
        push_pruned(&mut self.peers[ix as usize].voted, chunk, limit, |c| {
            chunks
                .get(c)
                .is_some_and(|state| state.votes.iter().any(|v| v.peer == ix))
        });
    }

    /// Lists under peer `ix` a chunk newly waiting for its answer, pruned as in
    /// `note_vote`.
    pub(super) fn note_awaited(&mut self, ix: PeerIx, chunk: ChunkIndex) {
        let limit = 2 * self.chunks.len() + LIST_SLACK;
        let chunks = &self.chunks;
        push_pruned(&mut self.peers[ix as usize].awaited, chunk, limit, |c| {
            chunks
                .get(c)
                .is_some_and(|state| state.awaited.contains(&ix))
        });
    }

    /// Peer `ix` will not answer any more (gone or banned): no chunk waits for it.
    pub(super) fn stop_awaiting_everywhere(&mut self, ix: PeerIx) {
        for chunk in std::mem::take(&mut self.peers[ix as usize].awaited) {
            if let Some(state) = self.chunks.get_mut(&chunk) {
                if state.awaited.contains(&ix) {
                    state.stop_awaiting(ix);
                    self.touched.push(chunk);
                }
            }
        }
    }

    /// Peer `ix` is banned: each retired chunk it backed (`backs`, already taken from
    /// it) is tallied again from its other backers, and comes back into play without
    /// a result if they do not settle it.
    pub(super) fn reopen_backed(&mut self, ix: PeerIx, backs: &Backed, out: &mut Vec<Action<P>>) {
        if backs.is_empty() {
            return;
        }
        // Who else backs each of these chunks, and whether believed: the overlaps of
        // the other peers' ranges with the banned peer's.
        let mut others: HashMap<ChunkIndex, Vec<(PeerIx, bool)>> = HashMap::new();
        let mine: Vec<std::ops::Range<ChunkIndex>> = backs
            .believed
            .ranges()
            .chain(backs.unbelieved.ranges())
            .collect();
        for (p, peer) in self.peers.iter().enumerate() {
            if p == ix as usize || peer.backs.is_empty() {
                continue;
            }
            for (believed, set) in [
                (true, &peer.backs.believed),
                (false, &peer.backs.unbelieved),
            ] {
                for range in &mine {
                    for part in set.overlapping(range.clone()) {
                        for chunk in part {
                            others
                                .entry(chunk)
                                .or_default()
                                .push((p as PeerIx, believed));
                        }
                    }
                }
            }
        }
        let mut chunks: Vec<ChunkIndex> = backs
            .believed
            .iter()
            .chain(backs.unbelieved.iter())
            .collect();
        chunks.sort_unstable();
        let rule = self.rule();
        for chunk in chunks {
            let backers = others.remove(&chunk).unwrap_or_default();
            // Every backer voted the same result; which one does not matter here.
            let votes: Vec<Vote> = backers
                .iter()
                .map(|&(peer, believed)| Vote {
                    peer,
                    cid: Cid([0; 32]),
                    trusted: false,
                    host: self.peers[peer as usize].host,
                    believed,
                    standing: VoteStanding::Open,
                })
                .collect();
            if tally(&votes, rule).decision.is_some() {
                continue;
            }
            for &(peer, _) in &backers {
                self.peers[peer as usize].backs.remove(chunk);
            }
            self.reopen(chunk, out);
        }
    }

    /// Brings a retired chunk back into play without its result: revoked, counted
    /// back, marked retried and queued, the trusted worker's dispute queue included —
    /// what `settle` does to a chunk in play whose result lost its backing.
    fn reopen(&mut self, chunk: ChunkIndex, out: &mut Vec<Action<P>>) {
        let mut state = self.new_state(chunk);
        state.retried = true;
        self.chunks.insert(chunk, state);
        self.progress.verified -= 1;
        self.progress.revoked += 1;
        self.queues.disputes.insert(chunk);
        out.push(Action::Revoked { chunk });
        self.refresh_chunk(chunk);
    }
}

/// Pushes onto a peer's list of chunks in play, first dropping the entries no longer
/// true (`holds` false) once the list reaches `limit`: the list then stays within
/// twice the chunks in play, at an amortised O(1) per push.
fn push_pruned(
    list: &mut Vec<ChunkIndex>,
    chunk: ChunkIndex,
    limit: usize,
    holds: impl Fn(&ChunkIndex) -> bool,
) {
    if list.len() >= limit {
        list.retain(holds);
    }
    list.push(chunk);
}
