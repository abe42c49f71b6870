//! Results and what to believe.
//!
//! An answer is a vote. A chunk is settled by the trusted worker's vote, or by
//! `replicas` agreeing hosts that outnumber every other answer and include a believed
//! vote ([`ChunkState::tally`]). Under earned trust ([`Trust::Earned`]) a vote is
//! believed only from a peer with a record of verified results, and even then an
//! audit drawn in secret when the result arrives may decide to check it; a result no
//! one believes, and every disagreement, goes to the trusted worker. Each result that
//! someone else confirms adds to its peer's record ([`Action::Confirmed`]).
//!
//! Whoever voted against a settled result is banned; banning drops all its votes and
//! settles each of those chunks again, which revokes any result that no longer has
//! enough backers and sends the chunk back to the queue — so no wrong result survives
//! a caught liar. A chunk in play has its votes in its state; a retired one is
//! re-tallied from the ranges of retired chunks each peer backs (`retire`). The trusted worker also pulls ordinary work, so a job finishes on it
//! alone if every remote peer dies or lies.
//!
//! [`ChunkState::tally`]: super::chunks::ChunkState::tally

use std::fmt::Debug;
use std::hash::Hash;

use idlegrid_protocol::Cid;

use super::breaker::Tripped;
use super::chunks::{push_tight, Check, Vote, VoteStanding};
use super::config::{SchedulerConfig, Trust};
use super::draw::{mix, pair, unit};
use super::types::{Action, ChunkIndex, FailureKind, JobFailure};
use super::{Outcome, PeerIx, Scheduler};

/// Whether chunk `chunk` is spot-checked: a fixed hash of (seed, index) below the
/// fraction. Deterministic, so a re-run checks the same chunks; unpredictable to a
/// peer that does not know the seed.
pub fn is_spot_checked(config: &SchedulerConfig, chunk: ChunkIndex) -> bool {
    if config.spot_check <= 0.0 {
        return false;
    }
    unit(config.spot_check_seed ^ mix(u64::from(chunk))) < config.spot_check
}

/// A uniform draw in [0, 1) from (seed, peer, chunk): a fixed function, so the
/// scheduler stays deterministic, but of a seed the peer does not know.
fn audit_draw(seed: u64, peer: PeerIx, chunk: ChunkIndex) -> f64 {
    unit(seed ^ mix(pair(peer, chunk)))
}

impl<P: Copy + Eq + Hash + Ord + Debug> Scheduler<P> {
    /// A peer answered `chunk` with `cid` (hash already checked by the event loop).
    pub(super) fn on_done(
        &mut self,
        key: P,
        chunk: ChunkIndex,
        cid: Cid,
        out: &mut Vec<Action<P>>,
    ) {
        let Some(&ix) = self.index.get(&key) else {
            return;
        };
        if self.peers[ix as usize].banned {
            return;
        }
        // A chunk not in play is fresh (never sent) or settled with every answer it
        // was sent for in (see `ChunkState::awaited`).
        let Some(state) = self.chunks.get_mut(&chunk) else {
            tracing::debug!(peer = ?key, chunk, "ignoring an answer to a chunk not in play");
            return;
        };
        if !state.sent_to.contains(&ix) {
            tracing::debug!(peer = ?key, chunk, "ignoring an answer to a chunk never sent");
            return;
        }
        state.stop_awaiting(ix);
        let cost = state.cost;
        let copy = self.drop_copy(ix, chunk);
        let alpha = self.config.speed_smoothing;
        let now = self.now;
        let peer = &mut self.peers[ix as usize];
        peer.chunks_done += 1;
        peer.breaker.on_success();
        let assigned = match copy {
            Some(copy) => Some(copy.assigned),
            None => peer.take_timed_out(chunk),
        };
        if let Some(assigned) = assigned {
            peer.record_answer(now, cost, assigned, alpha);
        }
        self.add_vote(ix, chunk, cid, out);
        self.refresh_chunk(chunk);
        self.refresh_peer(ix);
    }

    /// A peer failed `chunk`: back to the queue, one failure on its breaker, and for a
    /// kernel error one step towards declaring the chunk poisoned.
    pub(super) fn on_failed(
        &mut self,
        key: P,
        chunk: ChunkIndex,
        kind: FailureKind,
        out: &mut Vec<Action<P>>,
    ) {
        let Some(&ix) = self.index.get(&key) else {
            return;
        };
        let Some(state) = self.chunks.get_mut(&chunk) else {
            return;
        };
        // The peer gave up on it: no late answer will come.
        state.stop_awaiting(ix);
        self.touched.push(chunk);
        // A failure for a copy already given up on (timed out, cancelled) was counted.
        if self.drop_copy(ix, chunk).is_none() {
            return;
        }
        if kind == FailureKind::Kernel {
            let trusted = self.peers[ix as usize].trusted;
            if let Some(state) = self.chunks.get_mut(&chunk) {
                if !state.kernel_failures.contains(&ix) {
                    push_tight(&mut state.kernel_failures, ix);
                }
            }
            let hosts = self.failed_hosts(chunk);
            // Poisoned if it failed on enough hosts, or on every peer there is.
            let enough = self.config.poison_threshold.min(self.usable_peers.max(1));
            if trusted {
                self.fail(
                    JobFailure::PoisonChunk {
                        chunk,
                        peers: hosts,
                    },
                    out,
                );
                return;
            }
            if hosts >= enough {
                if self.config.trust == Trust::All || self.usable_trusted == 0 {
                    self.fail(
                        JobFailure::PoisonChunk {
                            chunk,
                            peers: hosts,
                        },
                        out,
                    );
                    return;
                }
                // Strangers' failures do not end a job this machine can still compute:
                // its own worker decides.
                self.request_check(chunk, Check::ByLocal);
            }
        }
        if let Some(state) = self.chunks.get_mut(&chunk) {
            state.last_failed = Some(ix);
        }
        self.count_failure(ix, out);
        self.requeue(chunk);
        self.refresh_peer(ix);
    }

    /// One failure on a peer's breaker; if it opens, its copies go back to the queue.
    pub(super) fn count_failure(&mut self, ix: PeerIx, out: &mut Vec<Action<P>>) {
        let now = self.now;
        let peer = &mut self.peers[ix as usize];
        peer.failures += 1;
        if let Tripped::OpenUntil(until) = peer.breaker.on_failure(now, &self.config) {
            self.queues.cooldowns.push(std::cmp::Reverse((until, ix)));
            self.withdraw_all(ix, true, out);
        }
        self.refresh_peer(ix);
    }

    /// Takes every copy away from a peer and requeues the chunks; `cancel` tells the
    /// event loop to stop waiting (not needed for a peer that is gone).
    pub(super) fn withdraw_all(&mut self, ix: PeerIx, cancel: bool, out: &mut Vec<Action<P>>) {
        let chunks = self.peers[ix as usize].in_flight.clone();
        let key = self.peers[ix as usize].key;
        for chunk in chunks {
            if self.drop_copy(ix, chunk).is_some() {
                if cancel {
                    out.push(Action::Cancel { peer: key, chunk });
                }
                self.requeue(chunk);
            }
        }
    }

    /// Distinct hosts on which the kernel failed this chunk.
    fn failed_hosts(&self, chunk: ChunkIndex) -> u32 {
        let Some(state) = self.chunks.get(&chunk) else {
            return 0;
        };
        let failures = &state.kernel_failures;
        failures
            .iter()
            .enumerate()
            .filter(|(i, &p)| {
                let host = self.peers[p as usize].host;
                !failures[..*i]
                    .iter()
                    .any(|&q| self.peers[q as usize].host == host)
            })
            .count() as u32
    }

    /// Whether a peer may make the check a chunk waits for: the trusted worker, any
    /// peer in a trusted pool, a peer with a record under earned trust.
    pub(super) fn may_check(&self, ix: PeerIx) -> bool {
        let peer = &self.peers[ix as usize];
        match self.config.trust {
            Trust::All => true,
            Trust::Earned { after, .. } => peer.trusted || peer.vouched >= after.max(1),
        }
    }

    /// Whether a remote peer's result is believed on its own: always in a trusted
    /// pool; under earned trust only from a peer with `after` verified results in a
    /// row, and then unless the audit draw picks it (probability
    /// max(1/in_a_row, floor)).
    fn believes(&self, ix: PeerIx, chunk: ChunkIndex) -> bool {
        let peer = &self.peers[ix as usize];
        match self.config.trust {
            Trust::All => true,
            Trust::Earned { after, audit_floor } => {
                if peer.vouched < after.max(1) {
                    return false;
                }
                let audit = (1.0 / f64::from(peer.vouched)).max(audit_floor);
                audit_draw(self.config.audit_seed, ix, chunk) >= audit
            }
        }
    }

    /// Marks a chunk as waiting for a check (counted once per chunk). One only the
    /// trusted worker may make goes to its own queue, served before anything else; one
    /// a peer with a record may make too waits in the pending queue's check class,
    /// which those peers and the trusted worker take first.
    pub(super) fn request_check(&mut self, chunk: ChunkIndex, by: Check) {
        let Some(state) = self.chunks.get_mut(&chunk) else {
            return;
        };
        if state.trusted_voted {
            return;
        }
        if !state.check_requested {
            state.check_requested = true;
            self.progress.checks += 1;
        }
        if by == Check::ByLocal {
            self.queues.spot.insert(chunk);
        }
    }

    /// Records a vote and settles the chunk.
    fn add_vote(&mut self, ix: PeerIx, chunk: ChunkIndex, cid: Cid, out: &mut Vec<Action<P>>) {
        let trusted = self.peers[ix as usize].trusted;
        let host = self.peers[ix as usize].host;
        let believed = trusted || self.believes(ix, chunk);
        let Some(state) = self.chunks.get_mut(&chunk) else {
            return;
        };
        // One vote per peer: a repeated answer adds nothing (and a peer that changes
        // its mind is not allowed to).
        if state.votes.iter().any(|v| v.peer == ix) {
            return;
        }
        let first_cid = state.votes.first().map(|v| v.cid);
        push_tight(
            &mut state.votes,
            Vote {
                peer: ix,
                cid,
                trusted,
                host,
                believed,
                standing: VoteStanding::Open,
            },
        );
        self.note_vote(ix, chunk);
        let Some(state) = self.chunks.get_mut(&chunk) else {
            return;
        };
        if trusted && !state.trusted_voted {
            state.trusted_voted = true;
            if state.spot_check {
                self.progress.spot_checks_pending =
                    self.progress.spot_checks_pending.saturating_sub(1);
            }
        }
        if first_cid.is_some_and(|f| f != cid) && !state.disputed {
            state.disputed = true;
            self.progress.disputes += 1;
            self.queues.disputes.insert(chunk);
        }
        if state.spot_check && !state.trusted_voted && !trusted {
            // Something to check has arrived.
            self.queues.spot.insert(chunk);
        }
        self.settle(chunk, out);
        self.run_bans(out);
    }

    /// Decides a chunk again from its votes: verify, revoke or replace its result, and
    /// queue the bans of whoever contradicts it.
    pub(super) fn settle(&mut self, chunk: ChunkIndex, out: &mut Vec<Action<P>>) {
        let rule = self.rule();
        let Some(state) = self.chunks.get_mut(&chunk) else {
            return;
        };
        let tally = state.tally(rule);
        let before = state.verified;
        match (before, tally.decision) {
            (None, None) => {}
            (Some(_), None) => {
                state.verified = None;
                state.retried = true;
                self.progress.verified -= 1;
                self.progress.revoked += 1;
                self.queues.disputes.insert(chunk);
                out.push(Action::Revoked { chunk });
            }
            (before, Some((cid, how))) => {
                if before != Some(cid) {
                    if before.is_some() {
                        self.progress.revoked += 1;
                        out.push(Action::Revoked { chunk });
                    } else {
                        self.progress.verified += 1;
                    }
                    if let Some(state) = self.chunks.get_mut(&chunk) {
                        state.verified = Some(cid);
                    }
                    out.push(Action::Verified {
                        chunk,
                        result: cid,
                        how,
                    });
                    self.cancel_losers(chunk, out);
                }
                self.count_standings(chunk, cid, out);
                if let Some(state) = self.chunks.get(&chunk) {
                    for v in &state.votes {
                        if v.cid != cid && !v.trusted {
                            self.ban_queue.push((v.peer, chunk, v.cid, cid));
                        }
                    }
                }
            }
        }
        let check = if tally.decision.is_some() {
            Check::None
        } else {
            tally.check
        };
        if let Some(state) = self.chunks.get_mut(&chunk) {
            state.check = check;
        }
        if check != Check::None {
            if self.usable_trusted == 0 {
                // Nobody is left who could settle it for sure; waiting might never end.
                self.fail(JobFailure::Unverifiable { chunk }, out);
            } else {
                self.request_check(chunk, check);
            }
        }
        self.refresh_chunk(chunk);
    }

    /// The chunk settled on `cid`: each remote vote for it is confirmed if someone
    /// else vouches for the same bytes (the trusted worker, or a believed vote from
    /// another host) — one more verified result in that peer's record — or else it
    /// stands on its own credit.
    fn count_standings(&mut self, chunk: ChunkIndex, cid: Cid, out: &mut Vec<Action<P>>) {
        let Some(state) = self.chunks.get(&chunk) else {
            return;
        };
        let votes = &state.votes;
        let mut changes = Vec::new();
        for (i, v) in votes.iter().enumerate() {
            if v.trusted || v.cid != cid || v.standing == VoteStanding::Confirmed {
                continue;
            }
            let confirmed = votes.iter().any(|w| {
                w.cid == cid && (w.trusted || (w.believed && w.host != v.host && w.peer != v.peer))
            });
            if confirmed {
                changes.push((i, VoteStanding::Confirmed));
            } else if v.standing == VoteStanding::Open {
                changes.push((i, VoteStanding::Believed));
            }
        }
        for (i, standing) in changes {
            let Some(vote) = self
                .chunks
                .get_mut(&chunk)
                .and_then(|state| state.votes.get_mut(i))
            else {
                continue;
            };
            let was = vote.standing;
            vote.standing = standing;
            let ix = vote.peer;
            let peer = &mut self.peers[ix as usize];
            if was == VoteStanding::Believed {
                peer.believed = peer.believed.saturating_sub(1);
            }
            match standing {
                VoteStanding::Confirmed => {
                    peer.confirmed += 1;
                    peer.vouched = peer.vouched.saturating_add(1);
                    out.push(Action::Confirmed {
                        peer: peer.key,
                        chunk,
                    });
                }
                VoteStanding::Believed => peer.believed += 1,
                VoteStanding::Open => {}
            }
        }
    }

    /// The chunk is settled: every other copy lost the race. A spot check's copy on
    /// the trusted worker is kept — it is the check.
    fn cancel_losers(&mut self, chunk: ChunkIndex, out: &mut Vec<Action<P>>) {
        let Some(state) = self.chunks.get(&chunk) else {
            return;
        };
        let keep_trusted = state.spot_check && !state.trusted_voted;
        let losers: Vec<PeerIx> = state
            .copies
            .iter()
            .map(|c| c.peer)
            .filter(|&p| !(keep_trusted && self.peers[p as usize].trusted))
            .collect();
        for ix in losers {
            if self.drop_copy(ix, chunk).is_some() {
                out.push(Action::Cancel {
                    peer: self.peers[ix as usize].key,
                    chunk,
                });
                self.refresh_peer(ix);
            }
        }
    }

    /// Carries out queued bans, including those their re-checks cause.
    fn run_bans(&mut self, out: &mut Vec<Action<P>>) {
        while let Some((ix, evidence, claimed, settled)) = self.ban_queue.pop() {
            self.ban(ix, evidence, claimed, settled, out);
        }
    }

    /// Bans a peer caught lying on `evidence` (it `claimed` what contradicts the
    /// `settled` result): no more work, its copies requeued, its votes dropped and
    /// their chunks settled again.
    fn ban(
        &mut self,
        ix: PeerIx,
        evidence: ChunkIndex,
        claimed: Cid,
        settled: Cid,
        out: &mut Vec<Action<P>>,
    ) {
        let peer = &mut self.peers[ix as usize];
        if peer.banned || peer.trusted {
            return;
        }
        let was_usable = peer.usable();
        peer.banned = true;
        let key = peer.key;
        self.progress.banned_peers += 1;
        out.push(Action::PeerBanned {
            peer: key,
            chunk: evidence,
            claimed,
            settled,
        });
        self.usable_changed(ix, was_usable);
        self.withdraw_all(ix, true, out);
        self.stop_awaiting_everywhere(ix);
        // The chunks in play it voted on, in the order it voted.
        let voted = std::mem::take(&mut self.peers[ix as usize].voted);
        for chunk in voted {
            let Some(state) = self.chunks.get_mut(&chunk) else {
                continue;
            };
            let before = state.votes.len();
            state.votes.retain(|v| v.peer != ix);
            if state.votes.len() == before {
                // Listed twice (retired and back in play since), or its vote went
                // with the result it backed: nothing of it to drop.
                continue;
            }
            self.settle(chunk, out);
        }
        // The retired chunks it backed.
        let backs = std::mem::take(&mut self.peers[ix as usize].backs);
        self.reopen_backed(ix, &backs, out);
        self.refresh_peer(ix);
    }

    /// Ends the job with a failure.
    pub(super) fn fail(&mut self, reason: JobFailure, out: &mut Vec<Action<P>>) {
        if self.outcome.is_none() {
            self.outcome = Some(Outcome::Failed(reason));
            out.push(Action::JobFailed { reason });
        }
    }
}
