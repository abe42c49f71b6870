//! The scheduler: who computes which chunk, when to give up on a peer, and which result
//! to believe. A pure state machine (docs/design.md, "The scheduler is a state machine"): it
//! holds no sockets and no clock. The event loop (and the simulator, with thousands of
//! virtual peers) feeds it [`Event`]s with the current time and carries out the
//! [`Action`]s it returns.
//!
//! Time is a [`Duration`] since the job started, passed with every call; the scheduler
//! never reads a clock, so the same code runs in real and in virtual time.
//!
//! How it decides:
//! - every peer keeps a small pipeline of chunks in flight, sized in seconds of its
//!   estimated speed, so the first assignment is weighted by benchmark scores (or hand
//!   weights) and later ones are pulled as peers finish;
//! - each copy has a deadline from the peer's speed (floor, ceiling); on expiry the
//!   copy goes back to the queue and the peer's [`breaker`] counts a failure;
//! - a peer that stops answering pings ([`Event::PeerUnresponsive`]) has its breaker
//!   opened at once and its copies requeued; its ping RTT ([`Event::PeerRtt`]) raises
//!   its deadline floor to a number of round trips;
//! - the small chunks that end a plan go out last, largest first, and near the end
//!   every peer holds only its least pipeline, so peers finish close together;
//! - when nothing is left to hand out, idle peers duplicate the outstanding chunks
//!   expected to finish last (speculation); the first verified answer wins;
//! - a chunk is verified by the trusted local worker, or by `replicas` agreeing hosts
//!   of which one is believed: under earned trust ([`Trust`]) a peer is believed only
//!   once its results were verified ten times in a row, and audited after that;
//!   whoever contradicts a settled result is banned and every result of it nobody
//!   else confirmed is re-checked ([`verify`]).
//!
//! Driving it:
//! ```text
//! let mut sched = Scheduler::new(SchedulerConfig::default(), costs)?;
//! let mut actions = Vec::new();
//! sched.handle(now, Event::PeerJoined { peer, score, trusted, weight: None }, &mut actions);
//! for action in actions.drain(..) { /* send, cancel, assemble, report */ }
//! // ... on every swarm event, and at sched.next_wakeup(): sched.handle(now, Event::Tick, ..)
//! ```
//!
//! `handle` appends to the vector it is given (reuse one, drained after each call);
//! there is one method for all events so that the event loop and the simulator cannot
//! drift apart.
//!
//! What it holds follows the chunks in play and the peers, not the plan:
//! - the fresh chunks nobody was handed yet are ranges in the pending queue, and the
//!   chunks an earlier run settled ([`Scheduler::with_done`]) are ranges too;
//! - a chunk gets a state when it is first handed out, in a map by index, and gives
//!   it up (is retired) once nothing but a ban can change it: settled, no copy out, no
//!   answer still awaited, no check or spot check to come, in no queue. A chunk with
//!   no state that is not fresh is settled;
//! - what a ban needs of a retired chunk is kept per peer, as ranges of the retired
//!   chunks its vote backs; a ban re-tallies those without the banned peer's vote, and
//!   one no longer settled comes back into play with no result, is revoked and
//!   computed again (see `verify` and `retire`). A peer that works through a run of
//!   its own adds one range; where peers take turns in one run (a peer jumping into
//!   a run another works through, a check by whoever was free), each stretch a peer
//!   took is a range of its own — about a B-tree entry, where a state costs hundreds
//!   of bytes;
//! - each peer lists the chunks in play it voted on and those awaiting its answer, so
//!   that its ban or leaving visits only these; the lists are pruned as they outgrow
//!   twice the chunks in play;
//! - a chunk's cost, spot check and tail membership are functions of its index
//!   ([`Costs`], `verify::is_spot_checked`, the plan's tail start).
//!
//! [`Scheduler::footprint`] gives these sizes.
//!
//! Modules: public [`types`] (events, actions, views), [`config`], [`breaker`]; private
//! `peers` (speed, pipeline, deadlines), `chunks` (copies and votes of a chunk in
//! play), `queues` (the indexed queues that keep every event O(log n)), `ranges` (the
//! range sets), `dispatch` (pull and speculation), `verify` (results, quorum, bans),
//! `retire` (dropping settled chunks' states, and bringing them back on a ban),
//! `events` (joins, leaves, ticks, the end); and [`sim`], the scale simulator that
//! drives this scheduler in virtual time.
//!
//! Nothing here touches the network or an async runtime (the dependencies are the
//! protocol crate for `Cid`, thiserror, and rand for the simulator's seeded draws), so
//! the crate builds and tests on its own.

pub mod breaker;
mod chunks;
pub mod config;
mod dispatch;
mod draw;
mod events;
mod peers;
mod queues;
mod ranges;
mod retire;
pub mod sim;
pub mod types;
mod verify;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::fmt::Debug;
use std::hash::Hash;
use std::time::Duration;

use idlegrid_protocol::Cid;

pub use breaker::Breaker;
pub use config::Trust;
pub use config::{ConfigError, SchedulerConfig};
pub use types::{
    Action, BreakerState, ChunkIndex, ChunkView, Costs, Event, FailureKind, Footprint, JobFailure,
    PeerStats, Progress, VerifiedBy,
};

use chunks::ChunkState;
use peers::PeerState;
use queues::Queues;
use ranges::RangeSet;

/// Internal time: microseconds since job start. Compact heap keys, exact arithmetic.
pub(crate) type Micros = u64;

pub(crate) fn to_micros(d: Duration) -> Micros {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

pub(crate) fn from_micros(us: Micros) -> Duration {
    Duration::from_micros(us)
}

/// Dense index of a peer inside the scheduler (join order).
pub(crate) type PeerIx = u32;

/// How a finished job ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Complete,
    Failed(JobFailure),
}

/// The scheduler of one job. `P` is the peer key: libp2p's `PeerId` in the event
/// loop, a `u32` in the simulator.
#[derive(Debug)]
pub struct Scheduler<P> {
    config: SchedulerConfig,
    /// The plan's chunk costs; the plan is `0..costs.len()`.
    costs: Costs,
    /// Where the plan's tail of small chunks starts (`dispatch::tail_start`).
    tail_from: ChunkIndex,
    /// Chunks an earlier run settled: never handed out.
    done: RangeSet,
    /// The chunks in play, by index. A chunk of the plan that has no state here is
    /// fresh (in the pending queue's ranges) or settled.
    chunks: HashMap<ChunkIndex, ChunkState>,
    /// Chunks whose state changed during the current event: at its end, those that
    /// nothing but a ban can change any more are retired.
    touched: Vec<ChunkIndex>,
    /// Mean chunk cost, to turn the pipeline's seconds into a chunk count.
    mean_cost: f64,
    peers: Vec<PeerState<P>>,
    index: HashMap<P, PeerIx>,
    queues: Queues,
    progress: Progress,
    /// Since when no usable peer has been joined (None while one is).
    peerless_since: Option<Micros>,
    outcome: Option<Outcome>,
    /// The latest `now` seen; events never move time backwards.
    now: Micros,
    /// Id of the next copy handed out.
    next_copy_id: u64,
    /// Bans decided but not yet carried out (a ban's re-checks can decide more):
    /// the peer, the chunk, what it claimed and what was settled.
    ban_queue: Vec<(PeerIx, ChunkIndex, Cid, Cid)>,
    /// Peers that may get work, and how many of them are trusted.
    usable_peers: u32,
    usable_trusted: u32,
    /// The trusted workers (normally one), served first by `dispatch`.
    trusted_peers: Vec<PeerIx>,
}

impl<P: Copy + Eq + Hash + Ord + Debug> Scheduler<P> {
    /// A scheduler for a plan of `costs.len()` chunks, chunk `i` costing `costs[i]`
    /// work units relative to the others (e.g. pixels × sweeps; 0 is treated as 1): a
    /// `Vec<u64>`, or [`Costs::Same`]. The plan never changes afterwards. An empty plan
    /// completes on the first event.
    pub fn new(config: SchedulerConfig, costs: impl Into<Costs>) -> Result<Self, ConfigError> {
        Self::with_done(config, costs, std::iter::empty())
    }

    /// A scheduler for a plan of which the chunks `done` (ascending) were settled by
    /// an earlier run: they are never handed out, not counted in [`Progress::total`]
    /// nor in the spot checks, shown as [`ChunkView::Verified`] and never revoked, so
    /// that scheduler indices stay the job's own chunk indices.
    pub fn with_done(
        config: SchedulerConfig,
        costs: impl Into<Costs>,
        done: impl IntoIterator<Item = ChunkIndex>,
    ) -> Result<Self, ConfigError> {
        config.validate()?;
        let costs = costs.into();
        if costs.len() >= u32::MAX as usize {
            return Err(ConfigError::TooManyChunks(costs.len()));
        }
        let plan = costs.len() as ChunkIndex;
        let mut done_set = RangeSet::default();
        let mut previous: Option<ChunkIndex> = None;
        for chunk in done {
            if chunk >= plan || previous.is_some_and(|p| chunk <= p) {
                return Err(ConfigError::DoneChunk {
                    chunk,
                    chunks: plan,
                });
            }
            done_set.insert(chunk);
            previous = Some(chunk);
        }
        let tail_from = dispatch::tail_start(&costs) as ChunkIndex;
        // The chunks to do: the plan less the done ranges, each split at the tail.
        let mut fresh = RangeSet::default();
        let mut tail = RangeSet::default();
        let mut start = 0;
        for gap in done_set.ranges().chain(std::iter::once(plan..plan)) {
            let todo = start..gap.start;
            fresh.insert_range(todo.start..todo.end.min(tail_from));
            tail.insert_range(todo.start.max(tail_from)..todo.end);
            start = gap.end;
        }
        let spot_checks = if config.spot_check > 0.0 {
            fresh
                .iter()
                .chain(tail.iter())
                .filter(|&chunk| verify::is_spot_checked(&config, chunk))
                .count() as u32
        } else {
            0
        };
        let total = plan - done_set.len() as ChunkIndex;
        let mut queues = Queues::default();
        queues.pending.add_fresh(dispatch::FRESH, fresh);
        queues.pending.add_fresh(dispatch::TAIL, tail);
        Ok(Scheduler {
            config,
            mean_cost: costs.mean(),
            costs,
            tail_from,
            done: done_set,
            chunks: HashMap::new(),
            touched: Vec::new(),
            peers: Vec::new(),
            index: HashMap::new(),
            queues,
            progress: Progress {
                total,
                spot_checks,
                spot_checks_pending: spot_checks,
                ..Progress::default()
            },
            peerless_since: Some(0),
            outcome: None,
            now: 0,
            next_copy_id: 0,
            ban_queue: Vec::new(),
            usable_peers: 0,
            usable_trusted: 0,
            trusted_peers: Vec::new(),
        })
    }

    /// Chunks in the plan (done ones included).
    fn plan_len(&self) -> ChunkIndex {
        self.costs.len() as ChunkIndex
    }

    /// A fresh state for chunk `chunk`, its constants drawn from its index.
    fn new_state(&self, chunk: ChunkIndex) -> ChunkState {
        ChunkState::new(
            self.costs.cost(chunk),
            verify::is_spot_checked(&self.config, chunk),
            chunk >= self.tail_from,
        )
    }

    /// Sizes of what the scheduler holds, for tests and benchmarks of its memory.
    pub fn footprint(&self) -> Footprint {
        Footprint {
            live_chunks: self.chunks.len(),
            fresh_ranges: self.queues.pending.fresh_ranges(),
            pending_entries: self.queues.pending.entries.len(),
            done_ranges: self.done.range_count(),
            revocation_ranges: self.peers.iter().map(|p| p.backs.range_count()).sum(),
            revocation_ranges_max: self
                .peers
                .iter()
                .map(|p| p.backs.range_count())
                .max()
                .unwrap_or(0),
            voted_entries: self.peers.iter().map(|p| p.voted.len()).sum(),
            awaited_entries: self.peers.iter().map(|p| p.awaited.len()).sum(),
            peers: self.peers.len(),
        }
    }

    /// Feeds one event at time `now` (since job start) and appends the resulting
    /// actions to `out` (it does not clear it). `now` earlier than a previous call is
    /// taken as that previous time. After [`Action::JobComplete`] or
    /// [`Action::JobFailed`] nothing more is appended.
    pub fn handle(&mut self, now: Duration, event: Event<P>, out: &mut Vec<Action<P>>) {
        if self.outcome.is_some() {
            return;
        }
        self.now = self.now.max(to_micros(now));
        match event {
            Event::PeerJoined {
                peer,
                score,
                trusted,
                weight,
            } => self.on_joined(peer, score, trusted, weight),
            Event::PeerLeft { peer } => self.on_left(peer, out),
            Event::ChunkDone {
                peer,
                chunk,
                result,
            } => self.on_done(peer, chunk, result, out),
            Event::ChunkFailed { peer, chunk, kind } => self.on_failed(peer, chunk, kind, out),
            Event::PeerSlots { peer, slots } => self.on_slots(peer, slots),
            Event::PeerStanding {
                peer,
                host,
                vouched,
            } => self.on_standing(peer, host, vouched),
            Event::PeerRtt { peer, rtt } => self.on_rtt(peer, rtt),
            Event::PeerUnresponsive { peer } => self.on_unresponsive(peer, out),
            Event::Tick => self.on_tick(out),
        }
        if self.outcome.is_none() {
            self.dispatch(out);
            self.check_end(out);
        }
        self.retire_touched();
        self.trim_stale();
    }

    /// When the next [`Event::Tick`] is due (the earliest deadline, breaker cool-down
    /// or no-peer grace end), or `None` if nothing is timed. Ticking more often is
    /// harmless.
    pub fn next_wakeup(&self) -> Option<Duration> {
        if self.outcome.is_some() {
            return None;
        }
        let mut next = self.queues.next_timer();
        if let Some(since) = self.peerless_since {
            let grace = since.saturating_add(to_micros(self.config.no_peer_grace));
            next = Some(next.map_or(grace, |n| n.min(grace)));
        }
        next.map(from_micros)
    }

    /// Job-wide figures for the progress display.
    pub fn progress(&self) -> Progress {
        self.progress
    }

    /// How the job ended, once it has.
    pub fn outcome(&self) -> Option<Outcome> {
        self.outcome
    }

    /// One peer's figures, if it ever joined.
    pub fn peer_stats(&self, peer: &P) -> Option<PeerStats> {
        let ix = *self.index.get(peer)?;
        self.peers.get(ix as usize).map(|p| p.stats())
    }

    /// Every peer that ever joined, in join order, with its figures.
    pub fn peers(&self) -> impl Iterator<Item = (P, PeerStats)> + '_ {
        self.peers.iter().map(|p| (p.key, p.stats()))
    }

    /// The settled result of a chunk in play, if any. A retired chunk's result is not
    /// kept (the event loop has it from [`Action::Verified`]): `None` for it as for a
    /// chunk that is not settled; [`Scheduler::chunk_view`] tells them apart.
    pub fn verified_result(&self, chunk: ChunkIndex) -> Option<Cid> {
        self.chunks.get(&chunk).and_then(|c| c.verified)
    }

    /// What chunk `chunk` is doing now, for displays (the web page's chunk map).
    pub fn chunk_view(&self, chunk: ChunkIndex) -> Option<ChunkView<P>> {
        if chunk >= self.plan_len() {
            return None;
        }
        let Some(state) = self.chunks.get(&chunk) else {
            // No state: fresh, or settled (retired, or done by an earlier run).
            return Some(match self.queues.pending.fresh_class_of(chunk) {
                Some(_) => ChunkView::Waiting { retried: false },
                None => ChunkView::Verified,
            });
        };
        if state.verified.is_some() {
            return Some(ChunkView::Verified);
        }
        let Some(first) = state.copies.first() else {
            return Some(ChunkView::Waiting {
                retried: state.retried,
            });
        };
        let peer = self.peers.get(first.peer as usize)?.key;
        Some(ChunkView::Running {
            peer,
            copies: state.copies.len() as u32,
        })
    }

    /// How votes are weighed in this job.
    pub(crate) fn rule(&self) -> chunks::Rule {
        chunks::Rule {
            replicas: self.config.replicas,
            trust_all: self.config.trust == Trust::All,
        }
    }

    /// Whether the trusted worker recomputes this chunk as a spot check.
    /// A chunk done by an earlier run is not.
    pub fn is_spot_checked(&self, chunk: ChunkIndex) -> bool {
        chunk < self.plan_len()
            && !self.done.contains(chunk)
            && verify::is_spot_checked(&self.config, chunk)
    }

    /// The configuration in use.
    pub fn config(&self) -> &SchedulerConfig {
        &self.config
    }
}
