//! The scale simulator behind `idlegrid simulate`: the very same [`Scheduler`] the
//! event loop drives, fed by thousands of virtual peers in virtual time (docs/design.md,
//! "The scheduler is a state machine").
//!
//! [`world`] draws the plan and the peers (speeds spread over a factor, latency and
//! bandwidth, deaths noticed or silent, liars alone or in Sybil groups, newcomers
//! without a record) from one seed; [`engine`] runs the
//! discrete-event loop around the scheduler; [`report`] turns what it measured into
//! the printed figures and the one-line JSON. Same seed, same figures (except the
//! real-time cost per event).

pub mod engine;
pub mod report;
pub mod world;

#[cfg(test)]
mod tests;

use rand::rngs::StdRng;
use rand::SeedableRng;

use crate::{ConfigError, Scheduler, SchedulerConfig};

pub use report::SimReport;

/// One simulated job.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Peers, the submitting peer's own (trusted) worker included.
    pub peers: u32,
    pub chunks: u32,
    pub seed: u64,
    /// Fraction of remote peers that die mid-job (half noticed, half silent).
    pub fail: f64,
    /// Fraction of remote peers that return wrong results.
    pub byzantine: f64,
    /// Fraction of a liar's answers that are wrong.
    pub lie_rate: f64,
    /// Fraction of remote peers without a record of verified results (newcomers);
    /// the others start trusted, having earned it in earlier jobs — so a liar among
    /// them is a peer that turned after earning trust. Matters under earned trust
    /// only. Default 0: a grid already in use.
    pub new_peers: f64,
    /// Liars come in groups of this many keys on one host, returning the same wrong
    /// bytes (a Sybil attack on `replicas`). Default 1.
    pub sybil: u32,
    /// Fastest peer / slowest peer.
    pub speed_spread: f64,
    pub replicas: u32,
    pub spot_check: f64,
    /// The rest of the scheduler's knobs (replicas and spot checks are taken from the
    /// fields above).
    pub scheduler: SchedulerConfig,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            peers: 1000,
            chunks: 100_000,
            seed: 7,
            fail: 0.0,
            byzantine: 0.0,
            lie_rate: 0.5,
            new_peers: 0.0,
            sybil: 1,
            speed_spread: 10.0,
            replicas: 1,
            spot_check: 0.0,
            scheduler: SchedulerConfig::default(),
        }
    }
}

/// Why a simulation could not run.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("the simulation needs at least one peer (the local worker)")]
    NoPeers,
    #[error("{name} = {value} is not within 0..=1")]
    Fraction { name: &'static str, value: f64 },
    #[error("speed spread {0} must be a finite number >= 1")]
    Spread(f64),
    #[error(transparent)]
    Scheduler(#[from] ConfigError),
}

/// Runs one simulated job and reports its figures.
pub fn run(config: &SimConfig) -> Result<SimReport, SimError> {
    if config.peers == 0 {
        return Err(SimError::NoPeers);
    }
    for (name, value) in [
        ("fail", config.fail),
        ("byzantine", config.byzantine),
        ("lie rate", config.lie_rate),
        ("new peers", config.new_peers),
    ] {
        if !(0.0..=1.0).contains(&value) {
            return Err(SimError::Fraction { name, value });
        }
    }
    if !(config.speed_spread.is_finite() && config.speed_spread >= 1.0) {
        return Err(SimError::Spread(config.speed_spread));
    }
    let scheduler_config = scheduler_config(config);
    let mut rng = StdRng::seed_from_u64(config.seed);
    let world = world::World::generate(config, &mut rng);
    let sched: Scheduler<u32> = Scheduler::new(scheduler_config, world.costs.clone())?;
    let spot_work = (0..config.chunks)
        .filter(|&c| sched.is_spot_checked(c))
        .map(|c| world.costs[c as usize])
        .sum();
    let measured = engine::run(config, &world, sched);
    Ok(SimReport::new(config, &world, &measured, spot_work))
}

/// The scheduler's configuration for a simulated job: its knobs, with replicas and
/// spot checks from the job and the seeds drawn from its seed.
fn scheduler_config(config: &SimConfig) -> SchedulerConfig {
    SchedulerConfig {
        replicas: config.replicas,
        spot_check: config.spot_check,
        spot_check_seed: config.seed,
        audit_seed: config.seed ^ 0xA0D1_7000,
        ..config.scheduler.clone()
    }
}
