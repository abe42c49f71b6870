//! The scheduler's vocabulary: the events it is fed, the actions it answers with, and
//! the read-only views (per-peer stats, job progress) the progress display and the
//! `--report` file are built from.
//!
//! Everything here is plain data. The event loop translates swarm events into
//! [`Event`]s and [`Action`]s back into requests; the simulator does the same with
//! virtual peers. Neither knows how the scheduler decides.

use std::time::Duration;

use idlegrid_protocol::Cid;

/// Index of a chunk in the job's plan: `0..n`. The plan is fixed before any peer is
/// known (docs/design.md: "the chunk plan depends only on inputs and parameters"), so an
/// index names the same work for the whole job.
pub type ChunkIndex = u32;

/// Why a chunk failed on a peer. All kinds send the chunk back to the queue and count
/// one failure on the peer's circuit breaker; a kernel error also counts towards
/// declaring the chunk itself poisoned (bad input that every peer fails on).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FailureKind {
    /// No answer before the deadline the event loop was given (or its own transport
    /// timeout). The scheduler also raises this itself on [`Event::Tick`].
    Timeout,
    /// The connection or the stream broke.
    Transport,
    /// The peer declined the task (busy, outside its lending window, policy).
    Refused,
    /// The result's bytes did not hash to the Cid the peer claimed: corruption in
    /// transit or a broken worker. Not proof of lying (that needs a *consistent* wrong
    /// answer), so it counts on the breaker instead of banning.
    BadHash,
    /// The kernel reported an error running the chunk.
    Kernel,
}

/// What happened. Each event is handed to [`crate::Scheduler::handle`]
/// together with the current time.
#[derive(Clone, Debug, PartialEq)]
pub enum Event<P> {
    /// A peer is ready to take work: probed, benchmarked on the job's kernel.
    /// Sending it again for a known peer updates score/weight and reconnects it (a
    /// banned peer stays banned).
    PeerJoined {
        peer: P,
        /// Benchmark score in work units per second (the same units as chunk costs).
        /// Sizes the first assignment and the first deadlines until a measured speed
        /// replaces it.
        score: f64,
        /// The submitting peer's own worker: its results are believed without replicas
        /// and settle disputes; it is never banned and its breaker never opens. At most
        /// one is expected, but more are accepted.
        trusted: bool,
        /// Hand override of `score` from `--weights` (same unit, work units/s).
        /// `Some(0.0)` excludes the peer from the job.
        weight: Option<f64>,
    },
    /// The peer runs `slots` chunks side by side (its cores, from its probe answer).
    /// It is then kept at least `slots + 1` chunks in flight, its `score` and measured
    /// speed are read as the whole peer's throughput, and one chunk is expected to take
    /// `slots` times its share of it. Without this event a peer counts as one slot.
    /// Sent for an unknown peer, it is ignored (send it after `PeerJoined`).
    PeerSlots { peer: P, slots: u32 },
    /// What the submitter knows of a peer beyond this job: the network host it
    /// connects from (`host`, any stable key: peers with the same one are one vote
    /// towards `replicas`) and how many of its results in a row earlier jobs verified
    /// (`vouched`, see [`crate::config::Trust::Earned`]). Without this event a peer is
    /// a host of its own with no record. Send it after `PeerJoined`; ignored for an
    /// unknown peer and for the trusted worker.
    PeerStanding { peer: P, host: u64, vouched: u32 },
    /// The peer disconnected or was lost (connection closed). Its chunks in flight go
    /// back to the queue; this does not count on its breaker.
    PeerLeft { peer: P },
    /// The peer answered a ping in `rtt`. Its deadline floor becomes at least
    /// [`crate::SchedulerConfig::rtt_round_trips`] times the latest RTT.
    /// Ignored for an unknown peer.
    PeerRtt { peer: P, rtt: std::time::Duration },
    /// The peer did not answer a ping (timeout or broken stream) on a connection that
    /// is still open: it is frozen, overloaded or cut off. A connection that cannot
    /// carry a ping carries no results either, so its breaker opens at once (one
    /// failure; a later ping failure while open changes nothing) and its chunks in
    /// flight go back to the queue now instead of at their deadlines. After the
    /// cool-down one probe chunk decides, as for any open breaker. Ignored for the
    /// trusted worker and for unknown peers.
    PeerUnresponsive { peer: P },
    /// A peer answered a chunk with a result whose bytes the event loop has already
    /// hashed and found equal to `result`. (A mismatch is
    /// [`FailureKind::BadHash`].) Late answers, after a cancel or a timeout, are still
    /// welcome: they count as votes. An answer to a chunk never sent to that peer is
    /// ignored.
    ChunkDone {
        peer: P,
        chunk: ChunkIndex,
        result: Cid,
    },
    /// A chunk failed on a peer.
    ChunkFailed {
        peer: P,
        chunk: ChunkIndex,
        kind: FailureKind,
    },
    /// Time passed. Call it at [`crate::Scheduler::next_wakeup`] (or more
    /// often): deadlines expire, breakers leave their cool-down, idle peers pull.
    Tick,
}

/// What the scheduler wants done. Returned in order; act on them in that order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action<P> {
    /// Send chunk `chunk` to `peer`. `deadline` (time since job start) is when the
    /// scheduler will give up on it by itself; the event loop may use it to size its
    /// own request timeout (for the trusted worker it is the ceiling: its copies never
    /// expire, it reports its own errors). `speculative` marks a duplicate of a slow
    /// outstanding chunk.
    Assign {
        peer: P,
        chunk: ChunkIndex,
        deadline: Duration,
        speculative: bool,
    },
    /// Stop waiting for `chunk` on `peer` (another copy won, the peer timed out, its
    /// breaker opened, or it was banned). Best effort: a result that arrives anyway may
    /// still be fed back as [`Event::ChunkDone`].
    Cancel { peer: P, chunk: ChunkIndex },
    /// The chunk's result is settled: the output may be assembled from `result`.
    /// `how` says what it rests on (the result log keeps it).
    Verified {
        chunk: ChunkIndex,
        result: Cid,
        how: VerifiedBy,
    },
    /// `peer`'s result for `chunk` was confirmed by someone else: the trusted worker,
    /// or a believed peer on another host. One more verified result in its record.
    Confirmed { peer: P, chunk: ChunkIndex },
    /// A previously [`Action::Verified`] result is withdrawn: a peer that backed it was
    /// caught lying, or a later answer disputes it. Drop it; a new `Verified` for the
    /// chunk follows before [`Action::JobComplete`].
    Revoked { chunk: ChunkIndex },
    /// The peer returned a result (`claimed`) that contradicts the settled one
    /// (`settled`) of `chunk`: the evidence. It gets no more work in this job, and
    /// every result of it that nobody else confirmed is withdrawn and computed again.
    PeerBanned {
        peer: P,
        chunk: ChunkIndex,
        claimed: Cid,
        settled: Cid,
    },
    /// Every chunk is verified (and every spot check done). Sent once; later events
    /// produce no actions.
    JobComplete,
    /// The job cannot finish. Sent once; later events produce no actions.
    JobFailed { reason: JobFailure },
}

/// What a settled result rests on, weakest last.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum VerifiedBy {
    /// The trusted worker computed it (alone, or matching a remote result).
    Local,
    /// `hosts` distinct hosts returned it, at least one of them believed
    /// (earned trust, unaudited): a single believed peer is `hosts: 1`.
    Peers { hosts: u32 },
    /// `hosts` distinct hosts returned it and nothing was checked
    /// ([`crate::config::Trust::All`]).
    Unchecked { hosts: u32 },
}

/// Why a job failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum JobFailure {
    /// No usable peer (connected, not banned, not excluded by weight 0) for
    /// [`crate::SchedulerConfig::no_peer_grace`] while work remained. Cannot
    /// happen while a trusted local worker is joined.
    #[error("no usable peer for {waited:?} with {remaining} chunks left")]
    NoPeers { waited: Duration, remaining: u32 },
    /// The kernel failed on this chunk on the trusted worker, or on
    /// [`crate::SchedulerConfig::poison_threshold`] distinct peers: the
    /// input itself is bad, and retrying elsewhere would not help.
    #[error("chunk {chunk} fails in the kernel on {peers} peer(s)")]
    PoisonChunk { chunk: ChunkIndex, peers: u32 },
    /// Under earned trust a result needed a check (no peer with a record vouched for
    /// it, or answers disagreed) and no trusted worker is left to make it.
    #[error(
        "chunk {chunk}'s result cannot be verified: no peer with a record vouches for it and \
         this machine does not compute (run without --no-compute, or --trust all for a pool \
         you own)"
    )]
    Unverifiable { chunk: ChunkIndex },
}

/// A peer's circuit breaker, as shown in `peers`, the progress display and the report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BreakerState {
    /// Healthy: gets work. Carries the current run of consecutive failures.
    Closed { consecutive_failures: u32 },
    /// Too many consecutive failures: gets no work until `until`.
    Open { until: Duration },
    /// Cool-down over: one probe chunk decides (success closes, failure re-opens with
    /// a doubled cool-down).
    HalfOpen,
}

impl BreakerState {
    /// A short word for displays: `closed`, `open`, `half-open`.
    pub fn label(&self) -> &'static str {
        match self {
            BreakerState::Closed { .. } => "closed",
            BreakerState::Open { .. } => "open",
            BreakerState::HalfOpen => "half-open",
        }
    }
}

/// A chunk's state as displays show it ([`crate::Scheduler::chunk_view`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChunkView<P> {
    /// In the queue; `retried`: it came back at least once (a failure, a timeout, a
    /// peer lost or banned).
    Waiting { retried: bool },
    /// Assigned: `peer` holds the oldest copy; more than one copy means a speculative
    /// duplicate or a replica.
    Running { peer: P, copies: u32 },
    /// Its result is settled.
    Verified,
}

/// One peer's figures for reports and the progress display.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PeerStats {
    /// Benchmark score given at join (work units/s).
    pub score: f64,
    /// Hand weight given at join, if any.
    pub weight: Option<f64>,
    /// Speed measured from its answers (work units/s), once it has answered.
    pub measured_speed: Option<f64>,
    /// Results it returned (every answer with a good hash, whether or not it won).
    pub chunks_done: u64,
    /// Failures of any kind, timeouts included.
    pub failures: u64,
    pub breaker: BreakerState,
    /// Chunks currently assigned to it.
    pub in_flight: u32,
    pub trusted: bool,
    /// Caught returning a wrong result: gets nothing more in this job.
    pub banned: bool,
    /// Its results verified in a row (its record from earlier jobs, plus this job's).
    pub vouched: u32,
    /// Its results in this job that someone else confirmed (the trusted worker, or a
    /// believed peer on another host).
    pub confirmed: u64,
    /// Its results in this job believed on its record alone, unaudited.
    pub believed: u64,
    /// Joined and not left.
    pub connected: bool,
}

/// Job-wide figures.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Progress {
    /// Chunks in the plan.
    pub total: u32,
    /// Chunks whose result is settled now.
    pub verified: u32,
    /// Copies currently assigned to peers.
    pub in_flight: u32,
    /// Assignments made (every copy, first or not).
    pub assignments: u64,
    /// Of which speculative duplicates near the end.
    pub speculative: u64,
    /// Copies sent back to the queue (timeout, failure, peer lost, breaker opened,
    /// peer banned).
    pub requeued: u64,
    /// Verified results withdrawn (a backer banned, or a dispute).
    pub revoked: u64,
    /// Chunks on which two different results were seen.
    pub disputes: u64,
    /// Peers banned for lying.
    pub banned_peers: u32,
    /// Remote results handed to the trusted worker to check (earned trust: a result
    /// from a peer without a record, an audit, a disagreement or a suspect failure).
    pub checks: u64,
    /// Spot checks scheduled on the trusted worker, and still to do.
    pub spot_checks: u32,
    pub spot_checks_pending: u32,
}

/// The plan's chunk costs in work units (e.g. pixels × sweeps; 0 is taken as 1): one
/// per chunk, or the same for all (a generated job of a million chunks has no list to
/// hold).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Costs {
    Each(Vec<u64>),
    Same { chunks: u32, cost: u64 },
}

impl From<Vec<u64>> for Costs {
    fn from(costs: Vec<u64>) -> Self {
        Costs::Each(costs)
    }
}

impl Costs {
    /// Chunks in the plan.
    pub fn len(&self) -> usize {
        match self {
            Costs::Each(costs) => costs.len(),
            Costs::Same { chunks, .. } => *chunks as usize,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Chunk `chunk`'s cost (at least 1; 1 for an index outside the plan).
    pub fn cost(&self, chunk: ChunkIndex) -> u64 {
        let cost = match self {
            Costs::Each(costs) => costs.get(chunk as usize).copied().unwrap_or(1),
            Costs::Same { cost, .. } => *cost,
        };
        cost.max(1)
    }

    /// The mean cost of a chunk (1 for an empty plan).
    pub fn mean(&self) -> f64 {
        match self {
            Costs::Each(costs) if !costs.is_empty() => {
                let sum: f64 = costs.iter().map(|&c| c.max(1) as f64).sum();
                sum / costs.len() as f64
            }
            Costs::Same { chunks, cost } if *chunks > 0 => (*cost).max(1) as f64,
            _ => 1.0,
        }
    }
}

/// Sizes of what the scheduler holds ([`crate::Scheduler::footprint`]), for tests and
/// benchmarks of its memory: all of them follow the chunks in play and the peers, not
/// the plan's size.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Footprint {
    /// Chunks with a state: handed out and not yet retired.
    pub live_chunks: usize,
    /// Ranges holding the fresh chunks nobody was handed yet.
    pub fresh_ranges: usize,
    /// Entries of the pending queue (pending chunks that have a state).
    pub pending_entries: usize,
    /// Ranges of the chunks an earlier run settled.
    pub done_ranges: usize,
    /// Ranges, over all peers, of the retired chunks a ban would re-tally.
    pub revocation_ranges: usize,
    /// The most ranges one peer's revocation sets hold.
    pub revocation_ranges_max: usize,
    /// Chunks in play listed under their voters, over all peers.
    pub voted_entries: usize,
    /// Chunks in play listed under the peers whose answer they may still get.
    pub awaited_entries: usize,
    pub peers: usize,
}
