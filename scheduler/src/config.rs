//! The scheduler's knobs, with the defaults the simulator was tuned with, and their
//! validation. A bad configuration is refused when the scheduler is built, never
//! discovered mid-job.

use std::time::Duration;

/// How the scheduler hands out, times and checks chunks.
#[derive(Clone, Debug, PartialEq)]
pub struct SchedulerConfig {
    /// Agreeing results from distinct hosts needed to verify a chunk (`--replicas`):
    /// peers on one network host ([`Event::PeerStanding`]) are one vote, so one machine
    /// with many keys cannot outvote the rest. A result from the trusted local worker
    /// counts as enough on its own. Default 1.
    ///
    /// [`Event::PeerStanding`]: super::types::Event::PeerStanding
    pub replicas: u32,
    /// Whose results are believed without a check (`--trust`). Default
    /// [`Trust::Earned`] with BOINC's figures: 10 verified results in a row, then
    /// audits of at least 10 %.
    pub trust: Trust,
    /// Seed of the audit draws of [`Trust::Earned`]. Keep it secret from peers (the
    /// event loop draws it at random per job): a peer that knew it could tell which of
    /// its results will be checked. Default 0.
    pub audit_seed: u64,
    /// The trusted worker only checks results (spot checks, audits, disputes) and
    /// computes no ordinary chunk: `--no-compute` under earned trust. Default false.
    pub trusted_checks_only: bool,
    /// Fraction of chunks (0..=1) also computed by the trusted local worker
    /// (`--spot-check`). Which chunks is a deterministic function of
    /// `spot_check_seed` and the chunk index, so a re-run checks the same ones and a
    /// peer that does not know the seed cannot tell which. Default 0.
    pub spot_check: f64,
    /// Seed of the spot-check selection; the event loop can take it from the job id.
    /// Default 0.
    pub spot_check_seed: u64,
    /// Chunks kept in flight on every peer at least, so a peer never waits a round
    /// trip between two chunks. Default 2.
    pub min_in_flight: u32,
    /// Chunks in flight on one peer at most. Default 32.
    pub max_in_flight: u32,
    /// Work in flight per peer, in seconds of its (estimated) speed: a fast peer gets
    /// more chunks than a slow one. With fine chunks this is the weighted first split
    /// of the 2005 grid; with coarse chunks `min_in_flight` dominates and pulling
    /// does the balancing. Default 2 s.
    pub pipeline: Duration,
    /// A chunk's deadline is this many times its expected completion time on the peer
    /// (its queue ahead included), clamped to [`deadline_floor`, `deadline_ceiling`].
    /// Default 3.0.
    ///
    /// [`deadline_floor`]: SchedulerConfig::deadline_floor
    /// [`deadline_ceiling`]: SchedulerConfig::deadline_ceiling
    pub deadline_factor: f64,
    /// Shortest deadline: covers round trips and input fetches that a speed estimate
    /// does not see. Default 10 s.
    pub deadline_floor: Duration,
    /// Longest deadline: a peer silent this long is not coming back with the answer.
    /// Default 30 min (the renderer dropped a node after 10 min per batch).
    pub deadline_ceiling: Duration,
    /// Weight of the newest sample in the per-peer speed average (0..=1]. Default 0.3.
    pub speed_smoothing: f64,
    /// Consecutive failures that open a peer's breaker. Default 3.
    pub breaker_threshold: u32,
    /// First cool-down of an open breaker; doubled after each failed probe.
    /// Default 10 s.
    pub breaker_cooldown: Duration,
    /// Cap of the doubled cool-down. Default 5 min.
    pub breaker_max_cooldown: Duration,
    /// Speculation near the end: extra copies of one outstanding chunk beyond those it
    /// needs. 0 turns speculation off. Default 3 (tuned with the simulator: at
    /// 10,000 peers 2 leaves the last chunks on mediocre peers that were idle first).
    pub speculative_copies: u32,
    /// A speculative copy is only made if the idle peer is expected to finish it at
    /// least this much sooner (as a fraction of the remaining time) than the copies in
    /// flight. Default 0.2.
    pub speculation_gain: f64,
    /// Distinct peers on which a chunk must fail in the kernel before the job fails
    /// (a kernel error on the trusted worker fails it at once). Default 3.
    pub poison_threshold: u32,
    /// How long the job waits with no usable peer before failing. Default 60 s.
    pub no_peer_grace: Duration,
    /// Round trips a chunk costs beyond its compute (the run, polls, input pieces,
    /// the result): a peer's deadline floor is at least this many of its ping round
    /// trip times ([`Event::PeerRtt`]), so a far peer is not timed out for its
    /// distance. Default 20 (on a LAN, milliseconds: `deadline_floor` decides).
    ///
    /// [`Event::PeerRtt`]: super::types::Event::PeerRtt
    pub rtt_round_trips: u32,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            replicas: 1,
            trust: Trust::default(),
            audit_seed: 0,
            trusted_checks_only: false,
            spot_check: 0.0,
            spot_check_seed: 0,
            min_in_flight: 2,
            max_in_flight: 32,
            pipeline: Duration::from_secs(2),
            deadline_factor: 3.0,
            deadline_floor: Duration::from_secs(10),
            deadline_ceiling: Duration::from_secs(30 * 60),
            speed_smoothing: 0.3,
            breaker_threshold: 3,
            breaker_cooldown: Duration::from_secs(10),
            breaker_max_cooldown: Duration::from_secs(5 * 60),
            speculative_copies: 3,
            speculation_gain: 0.2,
            poison_threshold: 3,
            no_peer_grace: Duration::from_secs(60),
            rtt_round_trips: 20,
        }
    }
}

/// How far a remote peer's result is believed on its own.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Trust {
    /// A closed pool of the user's own machines: every answer is a vote and
    /// `replicas` agreeing hosts settle a chunk; nothing is checked unless
    /// `spot_check` asks.
    All,
    /// Adaptive trust, as BOINC does it. A peer's result settles a chunk only once it
    /// is verified — recomputed by the trusted worker, or matched by a peer whose
    /// result is believed — until `after` of its results in a row were verified
    /// (counted across jobs: [`Event::PeerStanding`]). From then on each of its results
    /// is believed with probability 1 − max(1/in_a_row, `audit_floor`) and checked
    /// otherwise; the draw is made when the result arrives, from a seed the peer does
    /// not know. A disagreement is always settled by the trusted worker, so only a
    /// result that contradicts this machine's own computation gets a peer banned.
    ///
    /// [`Event::PeerStanding`]: super::types::Event::PeerStanding
    Earned { after: u32, audit_floor: f64 },
}

impl Trust {
    /// Results verified in a row from which a peer is believed (0 in a trusted pool).
    pub fn after(&self) -> u32 {
        match self {
            Trust::All => 0,
            Trust::Earned { after, .. } => *after,
        }
    }
}

impl Default for Trust {
    fn default() -> Self {
        Trust::Earned {
            after: 10,
            audit_floor: 0.1,
        }
    }
}

/// A configuration the scheduler refuses.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum ConfigError {
    #[error("replicas must be at least 1")]
    NoReplicas,
    #[error("spot-check fraction {0} is not within 0..=1")]
    SpotCheckRange(f64),
    #[error("in-flight bounds are wrong: min {min} must be >= 1 and <= max {max}")]
    InFlightBounds { min: u32, max: u32 },
    #[error("deadline factor {0} must be a finite number >= 1")]
    DeadlineFactor(f64),
    #[error("deadline floor {floor:?} is above the ceiling {ceiling:?}")]
    DeadlineBounds { floor: Duration, ceiling: Duration },
    #[error("speed smoothing {0} is not within (0, 1]")]
    Smoothing(f64),
    #[error("breaker threshold must be at least 1")]
    BreakerThreshold,
    #[error("speculation gain {0} is not within 0..1")]
    SpeculationGain(f64),
    #[error("poison threshold must be at least 1")]
    PoisonThreshold,
    #[error("the audit floor {0} is not within (0, 1]: a trusted peer that turns would never be checked")]
    AuditFloor(f64),
    #[error("a job of {0} chunks is too large (at most u32::MAX - 1)")]
    TooManyChunks(usize),
    #[error("done chunk {chunk} is outside the plan of {chunks} chunks or not in ascending order")]
    DoneChunk { chunk: u32, chunks: u32 },
}

impl SchedulerConfig {
    /// Checks every field; the scheduler's constructor calls this.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.replicas == 0 {
            return Err(ConfigError::NoReplicas);
        }
        if !(0.0..=1.0).contains(&self.spot_check) {
            return Err(ConfigError::SpotCheckRange(self.spot_check));
        }
        if self.min_in_flight == 0 || self.min_in_flight > self.max_in_flight {
            return Err(ConfigError::InFlightBounds {
                min: self.min_in_flight,
                max: self.max_in_flight,
            });
        }
        if !(self.deadline_factor.is_finite() && self.deadline_factor >= 1.0) {
            return Err(ConfigError::DeadlineFactor(self.deadline_factor));
        }
        if self.deadline_floor > self.deadline_ceiling {
            return Err(ConfigError::DeadlineBounds {
                floor: self.deadline_floor,
                ceiling: self.deadline_ceiling,
            });
        }
        if !(self.speed_smoothing > 0.0 && self.speed_smoothing <= 1.0) {
            return Err(ConfigError::Smoothing(self.speed_smoothing));
        }
        if self.breaker_threshold == 0 {
            return Err(ConfigError::BreakerThreshold);
        }
        if !(0.0..1.0).contains(&self.speculation_gain) {
            return Err(ConfigError::SpeculationGain(self.speculation_gain));
        }
        if self.poison_threshold == 0 {
            return Err(ConfigError::PoisonThreshold);
        }
        if let Trust::Earned { audit_floor, .. } = self.trust {
            if !(audit_floor > 0.0 && audit_floor <= 1.0) {
                return Err(ConfigError::AuditFloor(audit_floor));
            }
        }
        Ok(())
    }
}
