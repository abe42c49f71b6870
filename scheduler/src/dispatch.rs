//! Handing out copies: the pull (a hungry peer takes a pending chunk it does not already
//! hold: retries first, then the chunk after its last one, or else the middle of the
//! longest run of free chunks), the trusted worker's own queue (spot checks and
//! disputes before anything else), and speculation once nothing is pending (an idle
//! peer duplicates the most overdue outstanding chunk, or the one expected to finish
//! last if it would finish it clearly sooner).
//!
//! Why runs: neighbouring chunks often share inputs (the change kernel's bands share
//! their halo rows, a third of a band's bytes), and a worker keeps recent inputs, so a
//! peer that works through consecutive chunks fetches each shared input once. Peers
//! start far from each other (the first at the first chunk, each next one in the middle
//! of the longest free run) and meet only where their runs end.
//!
//! Why the tail goes last: the small chunks that end a plan ([`tail_start`]) wait until
//! no other fresh chunk is left, and then go largest first, so that the peers' last
//! chunks are small and they finish close together. Near the end (no more chunks left
//! to hand out than peers, or only the tail) every peer keeps only its least pipeline,
//! so the last chunks go to the peers that are about to be free.
//!
//! Also the bookkeeping every state change ends with: [`Scheduler::refresh_chunk`]
//! puts a chunk in the queue its state calls for, [`Scheduler::refresh_peer`] does the
//! same for a peer and the hungry set.

use std::fmt::Debug;
use std::hash::Hash;

use super::chunks::{push_tight, Check, ChunkState, InFlight, Slot};
use super::types::{Action, ChunkIndex, Costs};
use super::{from_micros, to_micros, Micros, PeerIx, Scheduler};

/// Pending chunks a peer looks at before giving up (it holds all of them: it answered
/// or is computing them). Keeps a pull O(log n) even in odd corners.
const SCAN_LIMIT: usize = 64;

/// Up to this many pending chunks, a peer that starts or whose run has been taken looks
/// at all of them for the longest free run; past it (a large job, thousands of peers)
/// it takes the middle of the pending range instead, so a jump stays O(log n).
const RUN_SCAN_LIMIT: usize = 64;

/// The pending queue's class of fresh chunks (0 is retries, served first).
pub(super) const FRESH: u8 = 1;
/// The class of fresh tail chunks, served after all others.
pub(super) const TAIL: u8 = 2;
/// Chunks waiting for a check by a peer that earned trust: those peers take them
/// first, the others never (see `Check::ByVouched`).
const CHECK: u8 = 3;

/// A chunk is small when it costs less than this fraction of the plan's largest: the
/// change kernel's tapered last bands and a short last video segment are, a change band
/// at the image's edge (one halo instead of two, about 0.85 of one inside) is not.
const TAIL_BELOW: f64 = 0.75;

/// Where a plan's tail starts: the index after its last chunk that is not small (the
/// plan's length if its last chunk is not small). The tail is what a kernel cuts small
/// on purpose at the end of its plan; small chunks elsewhere are ordinary chunks.
///
/// Why tail chunks go last: peers finish a job together only to within the last chunk
/// each takes. Handing the small chunks out last, largest first (the classic
/// longest-first rule), leaves the end waiting for a small chunk, not a whole one.
///
/// Chunks of one cost ([`Costs::Same`]) are all large: no tail.
pub(super) fn tail_start(costs: &Costs) -> usize {
    let costs = match costs {
        Costs::Each(costs) => costs,
        Costs::Same { chunks, .. } => return *chunks as usize,
    };
    let largest = costs.iter().copied().max().unwrap_or(0).max(1) as f64;
    costs
        .iter()
        .rposition(|&cost| cost.max(1) as f64 >= TAIL_BELOW * largest)
        .map_or(0, |last_large| last_large + 1)
}

/// The pending class of a chunk that has not failed yet.
pub(super) fn fresh_class(state: &ChunkState) -> u8 {
    if state.tail {
        TAIL
    } else {
        FRESH
    }
}

/// Expected time left of an outstanding chunk: until its eta, or — overdue — as long
/// as it is already late (see `pick_speculative`).
fn time_left(eta: Micros, now: Micros) -> Micros {
    eta.abs_diff(now)
}

/// Hungry peers tried in one dispatch round without result before the round stops:
/// past a few, the rest are slower and hold the same chunks.
const FRUITLESS_LIMIT: usize = 8;

impl<P: Copy + Eq + Hash + Ord + Debug> Scheduler<P> {
    /// Gives work to hungry peers, fastest first, while there is any to give.
    pub(super) fn dispatch(&mut self, out: &mut Vec<Action<P>>) {
        // The trusted workers first for spot checks and for results that wait for a
        // check: they may be too slow to come up among the first hungry peers below,
        // and those may be peers that cannot make the checks. (Disputes can wait for
        // their turn: remote peers can settle those too.)
        if !self.queues.spot.is_empty() || self.has_pending(CHECK) {
            for i in 0..self.trusted_peers.len() {
                let ix = self.trusted_peers[i];
                while self.peers[ix as usize].hungry(&self.config, self.mean_cost, self.endgame()) {
                    let Some(chunk) = self.pick_trusted(ix, false).or_else(|| self.pick_check(ix))
                    else {
                        break;
                    };
                    self.assign(ix, chunk, false, out);
                }
                self.refresh_peer(ix);
            }
        }
        let mut fruitless = 0;
        let mut cursor: Option<(std::cmp::Reverse<u64>, PeerIx)> = None;
        loop {
            if self.queues.pending.is_empty()
                && self.queues.outstanding.is_empty()
                && self.queues.spot.is_empty()
                && self.queues.disputes.is_empty()
            {
                return;
            }
            let next = match cursor {
                None => self.queues.hungry.iter().next().copied(),
                Some(c) => self
                    .queues
                    .hungry
                    .range((std::ops::Bound::Excluded(c), std::ops::Bound::Unbounded))
                    .next()
                    .copied(),
            };
            let Some(entry) = next else { return };
            cursor = Some(entry);
            if self.fill(entry.1, out) {
                fruitless = 0;
            } else {
                fruitless += 1;
                if fruitless >= FRUITLESS_LIMIT {
                    return;
                }
            }
        }
    }

    /// No more chunks are left to hand out than there are usable peers, or only the
    /// tail is: pipelines shrink to their least (see `PeerState::target`), so that a
    /// peer with chunks queued does not take the small last ones early.
    fn endgame(&self) -> bool {
        let pending = &self.queues.pending;
        pending.len() <= self.usable_peers as usize
            || pending.first().is_some_and(|(class, _)| class >= TAIL)
    }

    /// Gives a hungry peer copies up to its pipeline target; false if it got none.
    fn fill(&mut self, ix: PeerIx, out: &mut Vec<Action<P>>) -> bool {
        let mut gave = false;
        while self.peers[ix as usize].hungry(&self.config, self.mean_cost, self.endgame()) {
            let pick = self
                .pick_pending(ix)
                .map(|c| (c, false))
                .or_else(|| self.pick_speculative(ix).map(|c| (c, true)));
            let Some((chunk, speculative)) = pick else {
                break;
            };
            self.assign(ix, chunk, speculative, out);
            gave = true;
        }
        self.refresh_peer(ix);
        gave
    }

    /// The first chunk this peer should compute from the queues, if any.
    fn pick_pending(&mut self, ix: PeerIx) -> Option<ChunkIndex> {
        if self.peers[ix as usize].trusted {
            if let Some(chunk) = self.pick_trusted(ix, true) {
                return Some(chunk);
            }
        }
        let others = self.usable_peers > 1;
        let may_check = self.may_check(ix);
        if may_check {
            if let Some(chunk) = self.pick_check(ix) {
                return Some(chunk);
            }
        }
        if self.peers[ix as usize].trusted && self.config.trusted_checks_only {
            return None;
        }
        let retries_waiting = self
            .queues
            .pending
            .first()
            .is_some_and(|(class, _)| class < FRESH);
        if !retries_waiting {
            // The tail only once no other fresh chunk is left.
            let class = if self.has_pending(FRESH) { FRESH } else { TAIL };
            if let Some(chunk) = self.next_in_run(ix, class) {
                if !self.shuns(chunk, ix, others, may_check) {
                    return Some(chunk);
                }
            }
        }
        self.queues
            .pending
            .iter()
            .take(SCAN_LIMIT)
            .map(|(_, c)| c)
            .find(|&c| !self.shuns(c, ix, others, may_check))
    }

    /// Whether peer `ix` should not be given a copy of `chunk` (see
    /// `ChunkState::shuns`). A fresh chunk without a state is held by nobody and
    /// failed nowhere.
    fn shuns(&self, chunk: ChunkIndex, ix: PeerIx, others: bool, may_check: bool) -> bool {
        self.chunks
            .get(&chunk)
            .is_some_and(|state| state.shuns(ix, others, may_check))
    }

    /// A chunk waiting for a check that peer `ix` (which may make checks) does not
    /// already hold.
    fn pick_check(&self, ix: PeerIx) -> Option<ChunkIndex> {
        let others = self.usable_peers > 1;
        self.queues
            .pending
            .class(CHECK)
            .take(SCAN_LIMIT)
            .find(|&c| !self.shuns(c, ix, others, true))
    }

    /// Whether a chunk of pending class `class` is waiting.
    fn has_pending(&self, class: u8) -> bool {
        self.queues.pending.class(class).next().is_some()
    }

    /// Where peer `ix` goes on among the fresh chunks of `class`: the one after its
    /// last pick if that is still pending. Else, among tail chunks, the costliest;
    /// among the others, the start of the longest run of consecutive pending chunks if
    /// nothing before it was handed out (the job's first chunks), else that run's
    /// middle — another peer is working its way into it from below. (With more than
    /// [`RUN_SCAN_LIMIT`] pending, the pending range stands for the run.)
    fn next_in_run(&self, ix: PeerIx, class: u8) -> Option<ChunkIndex> {
        let pending = &self.queues.pending;
        if let Some(last) = self.peers[ix as usize].last_pick {
            let next = last.checked_add(1)?;
            if pending.contains(class, next) {
                return Some(next);
            }
        }
        let fresh = || pending.class(class);
        if class == TAIL {
            // Among the small chunks, the largest first: the smallest decide the end.
            return fresh()
                .take(RUN_SCAN_LIMIT)
                .min_by_key(|&c| (std::cmp::Reverse(self.costs.cost(c)), c));
        }
        let first = fresh().next()?;
        if first == 0 {
            return Some(0);
        }
        if pending.len() > RUN_SCAN_LIMIT {
            let last = pending.last_of_class(class).unwrap_or(first);
            let middle = first + (last - first) / 2;
            return pending.class_from(class, middle).next();
        }
        // Longest run of the fresh pending chunks: (start, length).
        let mut best: Option<(ChunkIndex, u64)> = None;
        let mut run: Option<(ChunkIndex, u64)> = None;
        for chunk in fresh() {
            run = match run {
                Some((start, len)) if start as u64 + len == chunk as u64 => Some((start, len + 1)),
                _ => Some((chunk, 1)),
            };
            if let Some(current) = run {
                if best.is_none_or(|(_, len)| current.1 > len) {
                    best = Some(current);
                }
            }
        }
        let (start, len) = best?;
        ChunkIndex::try_from(start as u64 + len / 2).ok()
    }

    /// The trusted worker's own queues: a spot check whose remote answer is in or a
    /// remote result to check (earned trust), then
    /// (with `disputes`) a disputed or revoked chunk still unsettled. Entries no
    /// longer needed are dropped here.
    fn pick_trusted(&mut self, ix: PeerIx, disputes: bool) -> Option<ChunkIndex> {
        while let Some(&chunk) = self.queues.spot.iter().next() {
            self.queues.spot.remove(&chunk);
            self.touched.push(chunk);
            let Some(state) = self.chunks.get(&chunk) else {
                continue;
            };
            let wanted = state.spot_check || state.verified.is_none();
            if wanted && !state.trusted_voted && !state.copies.iter().any(|c| c.peer == ix) {
                return Some(chunk);
            }
        }
        while let Some(&chunk) = self.queues.disputes.iter().next().filter(|_| disputes) {
            self.queues.disputes.remove(&chunk);
            self.touched.push(chunk);
            let Some(state) = self.chunks.get(&chunk) else {
                continue;
            };
            if state.verified.is_none() && !state.held_by(ix) {
                return Some(chunk);
            }
        }
        None
    }

    /// A speculative duplicate for an idle peer: the outstanding chunk with the most
    /// time left, if this peer would finish it `speculation_gain` sooner. Time left is
    /// `eta - now` for a copy on schedule; for an overdue one it is taken to be as
    /// long as it is already late (the later, the likelier it never comes — a frozen
    /// peer), so overdue chunks are duplicated first but only by peers fast enough to
    /// help. Both ends of the eta order are looked at: the most overdue and the latest.
    fn pick_speculative(&self, ix: PeerIx) -> Option<ChunkIndex> {
        if self.config.speculative_copies == 0 || !self.queues.pending.is_empty() {
            return None;
        }
        if self.peers[ix as usize].trusted && self.config.trusted_checks_only {
            // It computes checks only, not duplicates of others' chunks.
            return None;
        }
        let now = self.now;
        let peer = &self.peers[ix as usize];
        let keep = 1.0 - self.config.speculation_gain;
        let may_check = self.may_check(ix);
        // Whether the peer would finish first is known from the queue's entry and the
        // chunk's cost; only then is the chunk's state looked up (a lookup per entry
        // scanned, in eta order, was most of this scan's time).
        let helps = |&&(eta, c): &&(Micros, ChunkIndex)| {
            let mine = peer.eta_for(now, self.costs.cost(c)).saturating_sub(now) as f64;
            mine < keep * time_left(eta, now) as f64
                && self
                    .chunks
                    .get(&c)
                    .is_some_and(|state| !state.shuns(ix, false, may_check))
        };
        let overdue = self
            .queues
            .outstanding
            .iter()
            .take_while(|&&(eta, _)| eta < now)
            .take(SCAN_LIMIT)
            .find(helps);
        let latest = self
            .queues
            .outstanding
            .iter()
            .rev()
            .take_while(|&&(eta, _)| eta >= now)
            .take(SCAN_LIMIT)
            .find(helps);
        match (overdue, latest) {
            (Some(a), Some(b)) => {
                let pick = if time_left(a.0, now) >= time_left(b.0, now) {
                    a
                } else {
                    b
                };
                Some(pick.1)
            }
            (a, b) => a.or(b).map(|e| e.1),
        }
    }

    /// Sends a copy of `chunk` to peer `ix`.
    pub(super) fn assign(
        &mut self,
        ix: PeerIx,
        chunk: ChunkIndex,
        speculative: bool,
        out: &mut Vec<Action<P>>,
    ) {
        if !self.bring_into_play(chunk) {
            return;
        }
        let now = self.now;
        let cost = self.costs.cost(chunk);
        let peer = &mut self.peers[ix as usize];
        let eta = peer.eta_for(now, cost);
        let expected = eta.saturating_sub(now) as f64 * self.config.deadline_factor;
        let ceiling = to_micros(self.config.deadline_ceiling);
        let floor = peer.deadline_floor(&self.config).min(ceiling);
        let allowed = if peer.trusted {
            ceiling
        } else {
            (expected.min(u64::MAX as f64 / 2.0) as Micros).clamp(floor, ceiling)
        };
        let deadline = now.saturating_add(allowed);
        peer.add_copy(chunk, cost, now);
        if !speculative {
            peer.last_pick = Some(chunk);
        }
        let trusted = peer.trusted;
        let key = peer.key;
        let id = self.next_copy_id;
        self.next_copy_id += 1;
        let Some(state) = self.chunks.get_mut(&chunk) else {
            return;
        };
        if !state.sent_to.contains(&ix) {
            push_tight(&mut state.sent_to, ix);
        }
        let newly_awaited = !state.awaited.contains(&ix);
        if newly_awaited {
            push_tight(&mut state.awaited, ix);
        }
        push_tight(
            &mut state.copies,
            InFlight {
                peer: ix,
                id,
                assigned: now,
                eta,
            },
        );
        if !trusted {
            // The trusted worker runs in-process and reports its own errors.
            self.queues
                .deadlines
                .push(std::cmp::Reverse((deadline, chunk, id)));
        }
        self.progress.assignments += 1;
        self.progress.in_flight += 1;
        if speculative {
            self.progress.speculative += 1;
        }
        if newly_awaited {
            self.note_awaited(ix, chunk);
        }
        out.push(Action::Assign {
            peer: key,
            chunk,
            deadline: from_micros(deadline),
            speculative,
        });
        self.refresh_chunk(chunk);
    }

    /// Takes peer `ix`'s copy of `chunk` back, if it has one, and unbooks it.
    pub(super) fn drop_copy(&mut self, ix: PeerIx, chunk: ChunkIndex) -> Option<InFlight> {
        let state = self.chunks.get_mut(&chunk)?;
        let copy = state.take_copy(ix)?;
        self.touched.push(chunk);
        let cost = state.cost;
        self.peers[ix as usize].remove_copy(chunk, cost, self.now);
        self.progress.in_flight = self.progress.in_flight.saturating_sub(1);
        Some(copy)
    }

    /// A copy went back to the queue (failure, timeout, peer lost, breaker, ban).
    pub(super) fn requeue(&mut self, chunk: ChunkIndex) {
        self.progress.requeued += 1;
        if let Some(state) = self.chunks.get_mut(&chunk) {
            state.retried = true;
        }
        self.refresh_chunk(chunk);
    }

    /// Puts a chunk in the queue its state calls for: pending if it wants more copies,
    /// outstanding if it could take a speculative one, nowhere otherwise.
    pub(super) fn refresh_chunk(&mut self, chunk: ChunkIndex) {
        let rule = self.rule();
        let checkable = self.usable_trusted > 0;
        let spec = self.config.speculative_copies;
        let Some(state) = self.chunks.get(&chunk) else {
            return;
        };
        let needed = state.needed(rule, checkable);
        let copies = state.copies.len() as u32;
        let to = if needed == 0 {
            Slot::None
        } else if copies < needed {
            Slot::Pending(if state.check != Check::None {
                CHECK
            } else if state.retried {
                0
            } else {
                fresh_class(state)
            })
        } else if copies < needed + spec {
            state.eta(needed).map_or(Slot::None, Slot::Outstanding)
        } else {
            Slot::None
        };
        let from = state.slot;
        self.queues.move_chunk(chunk, from, to);
        if let Some(state) = self.chunks.get_mut(&chunk) {
            state.slot = to;
        }
        self.touched.push(chunk);
    }

    /// Gives a fresh chunk its state as it is first handed out (it moves from the
    /// pending queue's ranges to an entry of its own); true if the chunk is in play.
    fn bring_into_play(&mut self, chunk: ChunkIndex) -> bool {
        if self.chunks.contains_key(&chunk) {
            return true;
        }
        let Some(class) = self.queues.pending.fresh_class_of(chunk) else {
            return false;
        };
        self.queues.pending.take_fresh(class, chunk);
        let mut state = self.new_state(chunk);
        state.slot = Slot::Pending(class);
        self.chunks.insert(chunk, state);
        true
    }

    /// Puts a peer in or out of the hungry set (re-keyed by its current speed).
    pub(super) fn refresh_peer(&mut self, ix: PeerIx) {
        let peer = &self.peers[ix as usize];
        let to = peer
            .hungry(&self.config, self.mean_cost, self.endgame())
            .then(|| peer.speed.to_bits());
        let from = peer.hungry_key;
        self.queues.set_hungry(ix, from, to);
        self.peers[ix as usize].hungry_key = to;
    }
}
