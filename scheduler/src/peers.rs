//! Per-peer state: what it has in flight, how fast it is, its breaker, whether it may
//! get work. Speed starts at the benchmark score (or the hand weight) and follows the
//! measured service times (a moving average), so the pipeline depth and the deadlines
//! adapt to what the peer really does rather than to what it claimed.

use super::breaker::Breaker;
use super::config::SchedulerConfig;
use super::ranges::RangeSet;
use super::types::{ChunkIndex, PeerStats};
use super::Micros;

/// Slowest speed the scheduler reasons with, so that a zero or garbage score yields
/// ceiling deadlines instead of divisions by zero.
const MIN_SPEED: f64 = 1e-6;

/// Timed-out copies remembered per peer, to measure late answers.
const TIMED_OUT_MEMORY: usize = 8;

#[derive(Clone, Debug)]
pub struct PeerState<P> {
    pub key: P,
    pub score: f64,
    pub weight: Option<f64>,
    /// Work units per second: the score (or weight) until measured.
    pub speed: f64,
    pub measured: bool,
    /// Chunks it runs side by side (its cores), from [`Event::PeerSlots`].
    ///
    /// [`Event::PeerSlots`]: super::types::Event::PeerSlots
    pub slots: u32,
    /// Moving averages of answered work (units) and its service time (s).
    pub avg_work: f64,
    pub avg_time: f64,
    pub trusted: bool,
    pub banned: bool,
    pub connected: bool,
    /// The network host it connects from ([`Event::PeerStanding`]); a host of its own
    /// until told.
    ///
    /// [`Event::PeerStanding`]: super::types::Event::PeerStanding
    pub host: u64,
    /// Its results verified in a row: its record, plus this job's confirmations.
    pub vouched: u32,
    /// Its results this job that others confirmed, and that were believed unaudited.
    pub confirmed: u64,
    pub believed: u64,
    pub breaker: Breaker,
    /// Chunks it has a copy of.
    pub in_flight: Vec<ChunkIndex>,
    /// The last chunk it was handed from the pending queue: it goes on with the next
    /// one while that is free (see `Scheduler::pick_pending`).
    pub last_pick: Option<ChunkIndex>,
    /// Sum of their costs.
    pub in_flight_work: u64,
    /// When its queue of copies is expected to drain.
    pub busy_until: Micros,
    /// When it last answered: a copy's service starts no earlier than this.
    pub last_done: Micros,
    pub chunks_done: u64,
    pub failures: u64,
    /// Chunks in play on which it has a standing vote, in the order it voted, for the
    /// re-check when it is banned. Entries of chunks retired since are dropped as the
    /// list grows (`Scheduler::note_vote`), so it stays as long as the chunks in play.
    pub voted: Vec<ChunkIndex>,
    /// Chunks in play that may still get its answer (`ChunkState::awaited`), in the
    /// order it was sent them, so that its leaving or ban visits only these. Pruned
    /// as `voted` is.
    pub awaited: Vec<ChunkIndex>,
    /// Retired chunks its vote backs (settled with no trusted vote among theirs): a
    /// ban re-tallies them without it ([`Backed`]).
    pub backs: Backed,
    /// Its key in the hungry set, when in it.
    pub hungry_key: Option<u64>,
    /// Copies it timed out on, with when they were assigned (the latest few).
    pub timed_out: Vec<(ChunkIndex, Micros)>,
    /// Its latest ping round trip, once known.
    pub rtt: Option<Micros>,
}

/// The retired chunks a peer's vote backs, by whether the vote was believed. A retired
/// chunk's votes all agree (whoever contradicted its result was banned) and none is the
/// trusted worker's (that one is never revoked), so its tally without a banned peer
/// is known from who else backs it and how: the peers' hosts and these two sets.
/// Peers work through runs of consecutive chunks, so the sets are a few ranges; each
/// audit the trusted worker settled leaves a hole.
#[derive(Clone, Debug, Default)]
pub struct Backed {
    pub believed: RangeSet,
    pub unbelieved: RangeSet,
}

impl Backed {
    pub fn is_empty(&self) -> bool {
        self.believed.is_empty() && self.unbelieved.is_empty()
    }

    pub fn range_count(&self) -> usize {
        self.believed.range_count() + self.unbelieved.range_count()
    }

    /// Forgets `chunk` (it is back in play).
    pub fn remove(&mut self, chunk: ChunkIndex) {
        self.believed.remove(chunk);
        self.unbelieved.remove(chunk);
    }
}

impl<P: Copy> PeerState<P> {
    pub fn new(key: P, host: u64, score: f64, trusted: bool, weight: Option<f64>) -> Self {
        let mut peer = PeerState {
            key,
            score,
            weight,
            speed: MIN_SPEED,
            measured: false,
            slots: 1,
            avg_work: 0.0,
            avg_time: 0.0,
            trusted,
            banned: false,
            connected: true,
            host,
            vouched: 0,
            confirmed: 0,
            believed: 0,
            breaker: Breaker::new(trusted),
            in_flight: Vec::new(),
            last_pick: None,
            in_flight_work: 0,
            busy_until: 0,
            last_done: 0,
            chunks_done: 0,
            failures: 0,
            voted: Vec::new(),
            awaited: Vec::new(),
            backs: Backed::default(),
            hungry_key: None,
            timed_out: Vec::new(),
            rtt: None,
        };
        peer.rejoin(score, weight);
        peer
    }

    /// A (re)join with a fresh benchmark: the claimed speed applies until measured.
    pub fn rejoin(&mut self, score: f64, weight: Option<f64>) {
        self.score = score;
        self.weight = weight;
        self.connected = true;
        if !self.measured {
            self.speed = sane(weight.unwrap_or(score));
        }
    }

    /// Connected, not banned, not excluded by a hand weight of 0.
    pub fn usable(&self) -> bool {
        self.connected && !self.banned && self.weight.is_none_or(|w| w > 0.0)
    }

    /// Copies it should have in flight: `pipeline` seconds of its speed in chunks of
    /// the mean cost, within the configured bounds and its breaker's cap.
    /// A peer that runs several chunks side by side gets at least one more than it
    /// runs, so that no slot waits a round trip. In the `endgame` (few chunks or only
    /// the small last ones left to hand out) it keeps only that least: the last chunks
    /// go to whoever is about to be free, not to whoever asked first.
    pub fn target(&self, config: &SchedulerConfig, mean_cost: f64, endgame: bool) -> u32 {
        let chunks = (self.speed * config.pipeline.as_secs_f64() / mean_cost).ceil();
        let chunks = if chunks.is_finite() { chunks } else { 0.0 };
        let at_least = config.min_in_flight.max(self.slots.saturating_add(1));
        let chunks = if endgame { 0 } else { chunks as u32 };
        let wanted = chunks.max(at_least).min(config.max_in_flight);
        wanted.min(self.breaker.in_flight_cap())
    }

    /// Wants another copy now.
    pub fn hungry(&self, config: &SchedulerConfig, mean_cost: f64, endgame: bool) -> bool {
        self.usable() && (self.in_flight.len() as u32) < self.target(config, mean_cost, endgame)
    }

    /// Its shortest deadline: the configured floor, or more for a far peer (a chunk
    /// costs a few round trips whatever its compute).
    pub fn deadline_floor(&self, config: &SchedulerConfig) -> Micros {
        let floor = super::to_micros(config.deadline_floor);
        let rtts = self
            .rtt
            .unwrap_or(0)
            .saturating_mul(u64::from(config.rtt_round_trips));
        floor.max(rtts)
    }

    /// Microseconds it should take for `cost` work units.
    pub fn duration(&self, cost: u64) -> Micros {
        let secs = cost as f64 / self.speed;
        if secs.is_finite() {
            (secs * 1e6).min(u64::MAX as f64 / 2.0) as Micros
        } else {
            u64::MAX / 2
        }
    }

    /// The eta of a copy of `cost` assigned at `now`, behind its queue.
    /// The queue drains at the peer's whole speed, but one chunk runs on one slot: the
    /// copies already there run in waves of `slots`, and this one comes after them,
    /// taking `slots` times its share of the speed. (Running chunks are counted as not
    /// started: an estimate on the late side, which is the safe side for deadlines.)
    pub fn eta_for(&self, now: Micros, cost: u64) -> Micros {
        let queued = self.busy_until.max(now).saturating_add(self.duration(cost));
        let slots = u64::from(self.slots.max(1));
        if slots == 1 {
            return queued;
        }
        let waves = self.in_flight.len() as u64 / slots + 1;
        let on_one_slot = self.duration(cost).saturating_mul(slots);
        queued.max(now.saturating_add(on_one_slot.saturating_mul(waves)))
    }

    /// Books a copy: its queue grows.
    pub fn add_copy(&mut self, chunk: ChunkIndex, cost: u64, now: Micros) {
        self.in_flight.push(chunk);
        self.in_flight_work = self.in_flight_work.saturating_add(cost);
        self.busy_until = self.busy_until.max(now).saturating_add(self.duration(cost));
    }

    /// Unbooks a copy (answered, failed, cancelled): its queue shrinks.
    pub fn remove_copy(&mut self, chunk: ChunkIndex, cost: u64, now: Micros) {
        if let Some(pos) = self.in_flight.iter().position(|&c| c == chunk) {
            self.in_flight.swap_remove(pos);
            self.in_flight_work = self.in_flight_work.saturating_sub(cost);
        }
        self.busy_until = now.saturating_add(self.duration(self.in_flight_work));
    }

    /// An answer at `now` for a copy of `cost` assigned at `assigned`: the service time
    /// runs from when the peer could start it (after its previous answer) to now. The
    /// speed is the ratio of the moving averages of work and of service time, not the
    /// average of per-answer ratios: a worker running chunks side by side answers them
    /// nearly together, and the second one's near-zero service time must count as a
    /// bonus to throughput, not as an absurd speed sample.
    pub fn record_answer(&mut self, now: Micros, cost: u64, assigned: Micros, alpha: f64) {
        let start = assigned.max(self.last_done);
        self.last_done = now;
        let service = now.saturating_sub(start) as f64 / 1e6;
        let work = cost as f64;
        if self.measured {
            self.avg_work = alpha * work + (1.0 - alpha) * self.avg_work;
            self.avg_time = alpha * service + (1.0 - alpha) * self.avg_time;
        } else {
            // The first real measurement beats any benchmark claim; until some time
            // has been seen, work piles up.
            self.avg_work += work;
            self.avg_time += service;
        }
        if self.avg_time > 0.0 {
            self.speed = sane(self.avg_work / self.avg_time);
            self.measured = true;
        }
    }

    /// A copy was given up on at its deadline. Its speed is left alone (lowering it
    /// would lengthen the next deadline, and a dead peer's probes would then wait
    /// longer and longer); the copy is remembered instead, so that a late answer
    /// still measures how slow the peer really is.
    pub fn record_timeout(&mut self, chunk: ChunkIndex, assigned: Micros) {
        if self.timed_out.len() >= TIMED_OUT_MEMORY {
            self.timed_out.remove(0);
        }
        self.timed_out.push((chunk, assigned));
    }

    /// When a copy of `chunk` it timed out on was assigned, forgetting it.
    pub fn take_timed_out(&mut self, chunk: ChunkIndex) -> Option<Micros> {
        let pos = self.timed_out.iter().position(|t| t.0 == chunk)?;
        Some(self.timed_out.swap_remove(pos).1)
    }

    /// The figures for reports.
    pub fn stats(&self) -> PeerStats {
        PeerStats {
            score: self.score,
            weight: self.weight,
            measured_speed: self.measured.then_some(self.speed),
            chunks_done: self.chunks_done,
            failures: self.failures,
            breaker: self.breaker.state(),
            in_flight: self.in_flight.len() as u32,
            trusted: self.trusted,
            banned: self.banned,
            connected: self.connected,
            vouched: self.vouched,
            confirmed: self.confirmed,
            believed: self.believed,
        }
    }
}

fn sane(speed: f64) -> f64 {
    if speed.is_finite() && speed > MIN_SPEED {
        speed
    } else {
        MIN_SPEED
    }
}
