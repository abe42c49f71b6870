//! The figures of a simulated job: for people (`Display`) and for scripts (one JSON
//! object on one line, written by hand — the workspace has no JSON crate and this is
//! a flat object of numbers, booleans and one string).

use std::fmt;

use super::engine::{truth, Measured};
use super::world::World;
use super::SimConfig;
use crate::Outcome;

/// What `idlegrid simulate` prints.
#[derive(Clone, Debug, PartialEq)]
pub struct SimReport {
    pub peers: u32,
    pub chunks: u32,
    pub seed: u64,
    pub replicas: u32,
    pub dying_peers: u32,
    pub lying_peers: u32,
    pub completed: bool,
    /// Why it failed, if it did.
    pub failure: Option<String>,
    /// Virtual seconds from start to the last verified chunk.
    pub makespan_s: f64,
    /// Virtual seconds the honest capacity needed at best (see `World::ideal`).
    pub ideal_s: f64,
    pub makespan_ratio: f64,
    /// Virtual seconds until 50 %, 90 % and 99 % of the chunks were verified: the
    /// gap between the last and the makespan is the tail.
    pub milestones_s: [f64; 3],
    /// Copies handed out beyond `chunks × replicas`: retries after failures and deaths,
    /// speculative duplicates, extra opinions for disputes and re-checks (less the
    /// copies saved where the trusted worker's single answer settled a chunk).
    pub chunks_recomputed: u64,
    /// Copies whose computation completed (answered, lost in a death or not).
    pub computed: u64,
    pub assignments: u64,
    pub speculative: u64,
    pub requeued: u64,
    pub revoked: u64,
    pub disputes: u64,
    /// Chunks whose final result is wrong.
    pub wrong_accepted: u64,
    /// Chunks whose result was wrong at some point (later revoked or not).
    pub wrong_ever_verified: u64,
    pub liars_banned: u32,
    pub honest_banned: u32,
    /// Remote results that needed a check (earned trust), by the trusted worker or a
    /// peer with a record.
    pub checks: u64,
    /// Over the liars banned: the most answers one gave before it was banned, and how
    /// many gave more than 50.
    pub liar_answers_at_ban_max: u64,
    pub liars_banned_after_50: u32,
    /// Scheduler calls.
    pub events: u64,
    /// Real time per scheduler call, nanoseconds.
    pub ns_per_event: f64,
    /// Real time of the whole simulation, seconds.
    pub wall_s: f64,
}

impl SimReport {
    pub fn new(config: &SimConfig, world: &World, m: &Measured, spot_work: u64) -> SimReport {
        let ideal = world.ideal(config.replicas, spot_work);
        let wrong_accepted = m
            .final_results
            .iter()
            .enumerate()
            .filter(|(i, r)| r.is_some_and(|cid| cid != truth(*i as u32)))
            .count() as u64;
        let needed = u64::from(config.chunks) * u64::from(config.replicas);
        let makespan_s = m.makespan as f64 / 1e6;
        let ideal_s = ideal as f64 / 1e6;
        SimReport {
            peers: config.peers,
            chunks: config.chunks,
            seed: config.seed,
            replicas: config.replicas,
            dying_peers: world.peers.iter().filter(|p| p.dies.is_some()).count() as u32,
            lying_peers: world.peers.iter().filter(|p| p.lie_rate > 0.0).count() as u32,
            completed: m.outcome == Some(Outcome::Complete),
            failure: match m.outcome {
                Some(Outcome::Failed(reason)) => Some(reason.to_string()),
                Some(Outcome::Complete) => None,
                None => Some("did not finish within the virtual horizon".to_string()),
            },
            makespan_s,
            ideal_s,
            milestones_s: m.milestones.map(|t| t.map_or(f64::NAN, |t| t as f64 / 1e6)),
            makespan_ratio: if ideal_s > 0.0 {
                makespan_s / ideal_s
            } else {
                0.0
            },
            chunks_recomputed: m.assignments.saturating_sub(needed),
            computed: m.computed,
            assignments: m.assignments,
            speculative: m.speculative,
            requeued: m.requeued,
            revoked: m.revoked,
            disputes: m.disputes,
            wrong_accepted,
            wrong_ever_verified: m.wrong_ever_verified,
            liars_banned: m.liars_banned,
            honest_banned: m.honest_banned,
            checks: m.checks,
            liar_answers_at_ban_max: m.liar_answers_at_ban.iter().copied().max().unwrap_or(0),
            liars_banned_after_50: m.liar_answers_at_ban.iter().filter(|&&a| a > 50).count() as u32,
            events: m.events,
            ns_per_event: if m.events > 0 {
                m.scheduler_time.as_nanos() as f64 / m.events as f64
            } else {
                0.0
            },
            wall_s: m.wall.as_secs_f64(),
        }
    }

    /// One JSON object, one line.
    pub fn to_json(&self) -> String {
        let failure = match &self.failure {
            Some(f) => format!("\"{}\"", escape(f)),
            None => "null".to_string(),
        };
        format!(
            concat!(
                "{{\"peers\":{},\"chunks\":{},\"seed\":{},\"replicas\":{},",
                "\"dying_peers\":{},\"lying_peers\":{},\"completed\":{},\"failure\":{},",
                "\"makespan_s\":{},\"ideal_s\":{},\"makespan_ratio\":{},",
                "\"chunks_recomputed\":{},\"computed\":{},\"assignments\":{},",
                "\"speculative\":{},\"requeued\":{},\"revoked\":{},\"disputes\":{},",
                "\"wrong_accepted\":{},\"wrong_ever_verified\":{},\"liars_banned\":{},",
                "\"honest_banned\":{},\"checks\":{},\"liar_answers_at_ban_max\":{},",
                "\"liars_banned_after_50\":{},\"events\":{},\"ns_per_event\":{},\"wall_s\":{}}}"
            ),
            self.peers,
            self.chunks,
            self.seed,
            self.replicas,
            self.dying_peers,
            self.lying_peers,
            self.completed,
            failure,
            num(self.makespan_s),
            num(self.ideal_s),
            num(self.makespan_ratio),
            self.chunks_recomputed,
            self.computed,
            self.assignments,
            self.speculative,
            self.requeued,
            self.revoked,
            self.disputes,
            self.wrong_accepted,
            self.wrong_ever_verified,
            self.liars_banned,
            self.honest_banned,
            self.checks,
            self.liar_answers_at_ban_max,
            self.liars_banned_after_50,
            self.events,
            num(self.ns_per_event),
            num(self.wall_s),
        )
    }
}

/// A JSON number (JSON has no NaN or infinity).
fn num(x: f64) -> String {
    if x.is_finite() {
        format!("{:.4}", x)
    } else {
        "null".to_string()
    }
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

impl fmt::Display for SimReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "simulated {} peers ({} die mid-job, {} lie), {} chunks, replicas {}, seed {}",
            self.peers, self.dying_peers, self.lying_peers, self.chunks, self.replicas, self.seed
        )?;
        match &self.failure {
            None => writeln!(f, "completed:           yes")?,
            Some(why) => writeln!(f, "completed:           NO — {why}")?,
        }
        writeln!(f, "makespan:            {:.1} s (virtual)", self.makespan_s)?;
        writeln!(
            f,
            "ideal:               {:.1} s (honest capacity over time, + the last chunk)",
            self.ideal_s
        )?;
        writeln!(f, "ratio:               {:.3}", self.makespan_ratio)?;
        let [m50, m90, m99] = self.milestones_s;
        writeln!(
            f,
            "verified 50/90/99 %: {m50:.1} / {m90:.1} / {m99:.1} s (the rest is the tail)"
        )?;
        writeln!(
            f,
            "chunks recomputed:   {} (copies computed {}, assigned {}: {} speculative, {} requeued)",
            self.chunks_recomputed, self.computed, self.assignments, self.speculative, self.requeued
        )?;
        writeln!(
            f,
            "wrong accepted:      {} (ever verified wrong {}, revoked {}, disputes {})",
            self.wrong_accepted, self.wrong_ever_verified, self.revoked, self.disputes
        )?;
        writeln!(
            f,
            "banned:              {} liars, {} honest; a liar gave at most {} answers before \
             its ban ({} more than 50)",
            self.liars_banned,
            self.honest_banned,
            self.liar_answers_at_ban_max,
            self.liars_banned_after_50
        )?;
        writeln!(
            f,
            "checks:              {} remote results checked (by the local worker or a peer \
             with a record)",
            self.checks
        )?;
        write!(
            f,
            "scheduler cost:      {:.0} ns per event ({} events); {:.2} s real time in all",
            self.ns_per_event, self.events, self.wall_s
        )
    }
}
