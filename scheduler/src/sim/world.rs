//! The virtual grid: the chunk plan and the peers, drawn from one seeded RNG, and the
//! ideal makespan they allow.
//!
//! Units: work units for chunk costs, work units per second for speeds (the scheduler's
//! units), microseconds for time. A chunk costs 6,000–18,000 units; a peer's speed is
//! log-uniform over `[1,000, 1,000 × spread]` and shared by its 1–4 cores (one chunk per
//! core), so with the default spread of 10 a chunk takes 0.6–72 s on one core, about
//! 10 s on a typical one.

use rand::rngs::StdRng;
use rand::Rng;

use super::SimConfig;
use crate::draw::{mix, unit};

/// Mean chunk cost in work units.
pub const MEAN_COST: f64 = 12_000.0;
/// Speed of the slowest peer, work units/s.
pub const BASE_SPEED: f64 = 1_000.0;

/// One virtual peer. Index 0 is the submitting peer's own worker: trusted, honest,
/// never dies, no network in between.
#[derive(Clone, Debug)]
pub struct VirtualPeer {
    /// True compute speed of the whole peer, work units/s (all cores).
    pub speed: f64,
    /// Chunks it computes side by side, each at `speed / cores`.
    pub cores: u32,
    /// What its benchmark claimed (the true speed with ±25 % noise).
    pub score: f64,
    /// One-way latency, µs.
    pub latency: u64,
    /// Link bandwidth, bytes/s.
    pub bandwidth: f64,
    /// When it joins the job (after its probe and benchmark), µs.
    pub joins: u64,
    /// When it dies, µs, if it does.
    pub dies: Option<u64>,
    /// Whether its death is noticed (connection closed, ping failure) and after how
    /// long; a silent death (a frozen machine) is only seen through deadlines.
    pub death_noticed_after: Option<u64>,
    /// Fraction of its answers that are wrong (0 for honest peers).
    pub lie_rate: f64,
    pub trusted: bool,
    /// Its network host: a Sybil group of liars shares one.
    pub host: u64,
    /// Its record of verified results in a row when the job starts.
    pub vouched: u32,
}

/// The record a peer that earned trust in earlier jobs starts with.
pub const EARNED_RECORD: u32 = 10;

impl VirtualPeer {
    /// Transfer time of `bytes` over its link, latency included, µs.
    pub fn transfer(&self, bytes: u64) -> u64 {
        self.latency + (bytes as f64 / self.bandwidth * 1e6) as u64
    }

    /// Compute time of one chunk of `cost` work units on one core, µs.
    pub fn compute(&self, cost: u64) -> u64 {
        (cost as f64 * f64::from(self.cores) / self.speed * 1e6).ceil() as u64
    }
}

/// The plan and the peers of one simulated job.
#[derive(Clone, Debug)]
pub struct World {
    pub costs: Vec<u64>,
    pub peers: Vec<VirtualPeer>,
}

impl World {
    /// Draws the plan and the peers from `config` (deterministic in the seed).
    pub fn generate(config: &SimConfig, rng: &mut StdRng) -> World {
        let costs: Vec<u64> = (0..config.chunks)
            .map(|_| (MEAN_COST * rng.gen_range(0.5..1.5)) as u64)
            .collect();
        let spread = config.speed_spread.max(1.0);
        let total_work: f64 = costs.iter().map(|&c| c as f64).sum::<f64>() * config.replicas as f64;
        // Typical (geometric mean) speed, for the local worker and the death window.
        let typical = BASE_SPEED * spread.sqrt();
        let mean_speed = BASE_SPEED * (spread - 1.0) / spread.ln().max(f64::EPSILON);
        let mean_speed = if spread > 1.0 { mean_speed } else { BASE_SPEED };
        let expected_makespan = total_work / (mean_speed * config.peers.max(1) as f64);
        let mut peers = Vec::with_capacity(config.peers as usize);
        peers.push(VirtualPeer {
            speed: typical,
            score: typical,
            cores: 2,
            latency: 0,
            bandwidth: f64::INFINITY,
            joins: 0,
            dies: None,
            death_noticed_after: None,
            lie_rate: 0.0,
            trusted: true,
            host: 0,
            vouched: 0,
        });
        // The host of the Sybil group being filled, and how many keys it has.
        let mut sybil_host: Option<(u64, u32)> = None;
        for index in 1..config.peers {
            let speed = BASE_SPEED * spread.powf(rng.gen_range(0.0..1.0));
            let score = speed * rng.gen_range(0.8..1.25);
            let cores = rng.gen_range(1..=4);
            let latency = (1_000.0 * 100f64.powf(rng.gen_range(0.0..1.0))) as u64;
            let mbit = 10.0 * 100f64.powf(rng.gen_range(0.0..1.0));
            let joins = rng.gen_range(0..2_000_000);
            let dies = rng.gen_bool(config.fail.clamp(0.0, 1.0));
            let death = rng.gen_range(0.0..1.0) * expected_makespan;
            let noticed = rng.gen_bool(0.5);
            let notice_delay = rng.gen_range(2_000_000..20_000_000);
            let byzantine = rng.gen_bool(config.byzantine.clamp(0.0, 1.0));
            // Drawn apart from the main stream, so a seed draws the same peers whatever
            // the share of newcomers.
            let newcomer =
                unit(config.seed ^ 0x4E45_5743 ^ mix(u64::from(index))) < config.new_peers;
            let mut host = u64::from(index);
            if byzantine && config.sybil > 1 {
                host = match sybil_host {
                    Some((h, n)) if n < config.sybil => {
                        sybil_host = Some((h, n + 1));
                        h
                    }
                    _ => {
                        sybil_host = Some((host, 1));
                        host
                    }
                };
            }
            peers.push(VirtualPeer {
                speed,
                score,
                cores,
                latency,
                bandwidth: mbit * 1e6 / 8.0,
                joins,
                dies: dies.then_some(joins + (death * 1e6) as u64),
                death_noticed_after: (dies && noticed).then_some(notice_delay),
                lie_rate: if byzantine { config.lie_rate } else { 0.0 },
                trusted: false,
                host,
                vouched: if newcomer { 0 } else { EARNED_RECORD },
            });
        }
        World { costs, peers }
    }

    /// The ideal makespan, µs: the time at which the honest peers' combined capacity
    /// (each from its join to its death) has verified the plan — a chunk done remotely
    /// takes `replicas` computations, one done by the trusted local worker takes one, so
    /// a remote peer counts for `speed / replicas` — and the trusted worker alone has
    /// done `spot_work` (the spot checks, which only it can do); plus the largest chunk
    /// on the fastest honest peer, the chunk that is unavoidably last. (That last term
    /// makes it the target rather than a strict bound: a run whose work divides evenly
    /// can come in a little under it.)
    pub fn ideal(&self, replicas: u32, spot_work: u64) -> u64 {
        let work: f64 = self.costs.iter().map(|&c| c as f64).sum::<f64>();
        let replicas = f64::from(replicas.max(1));
        // Capacity changes: +speed at join, -speed at death (verified work per second).
        let mut steps: Vec<(u64, f64)> = Vec::new();
        // Fastest single-chunk speed: one core of a peer.
        let mut fastest = 0.0f64;
        let mut local = 0.0f64;
        for p in self.peers.iter().filter(|p| p.lie_rate == 0.0) {
            let capacity = if p.trusted {
                local = local.max(p.speed);
                p.speed
            } else {
                p.speed / replicas
            };
            steps.push((p.joins, capacity));
            if let Some(d) = p.dies {
                steps.push((d, -capacity));
            } else {
                fastest = fastest.max(p.speed / f64::from(p.cores.max(1)));
            }
        }
        steps.sort_by_key(|s| s.0);
        let (mut t, mut speed, mut left) = (0u64, 0.0f64, work);
        for (at, delta) in steps {
            let span = (at - t) as f64 / 1e6;
            if speed > 0.0 && speed * span >= left {
                break;
            }
            left -= speed * span;
            t = at;
            speed += delta;
        }
        let fluid = if speed > 0.0 {
            t + (left / speed * 1e6) as u64
        } else {
            u64::MAX / 2
        };
        let spot = if local > 0.0 {
            (spot_work as f64 / local * 1e6) as u64
        } else {
            0
        };
        let largest = self.costs.iter().copied().max().unwrap_or(0) as f64;
        let last = if fastest > 0.0 {
            (largest / fastest * 1e6) as u64
        } else {
            0
        };
        fluid.max(spot).saturating_add(last)
    }
}
