//! The owner's policy: when this machine lends its cores, to whom, and how much.
//!
//! Data flows one way: [`config`] reads the TOML file (and `serve`'s flags override it)
//! into a [`Policy`]; [`sense`] observes the machine (local time, idleness, other
//! programs' CPU load, our memory) into an [`Observation`]; [`decide`] — a pure
//! function, unit-tested with made-up observations — says lend or stop, and why; the
//! [`Gate`] holds the latest decision and the access lists, and the worker asks it
//! before accepting a chunk. When the decision turns to stop, the gate refuses new
//! chunks at once, hands back chunks still waiting for a core, and after the grace
//! period fails the running ones so their submitters reassign them.

pub mod config;
mod gate;
pub mod sense;
pub mod windows;

use std::time::Duration;

pub use config::{ConfigError, PolicyFile};
pub use gate::{Gate, Refusal, Ticket};
pub use sense::{Clock, IdleSource, Idleness};
pub use windows::{LocalTime, Window};

/// What to assume when idleness cannot be determined.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum WhenUnknown {
    /// Lend as if nobody were there (machines without a seat: servers, containers).
    Idle,
    /// Do not lend (desk machines where logind is missing for some reason).
    Busy,
}

/// The owner's rules, validated.
#[derive(Clone, Debug, PartialEq)]
pub struct Policy {
    /// Lend only within these windows; empty = at any time.
    pub windows: Vec<Window>,
    /// Lend only after this long without keyboard or mouse input; None = regardless.
    pub idle_after: Option<Duration>,
    /// What to assume when idleness cannot be determined.
    pub when_unknown: WhenUnknown,
    /// Stop lending while other programs use more than this fraction of all CPUs.
    pub max_other_load: Option<f64>,
    /// Stop taking chunks while this process uses more memory than this (bytes).
    pub max_memory: Option<u64>,
    /// How often the machine is looked at.
    pub check_every: Duration,
    /// How long running chunks may go on after the policy says stop.
    pub grace: Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            windows: Vec::new(),
            idle_after: None,
            when_unknown: WhenUnknown::Idle,
            max_other_load: None,
            max_memory: None,
            check_every: Duration::from_secs(15),
            grace: Duration::from_secs(120),
        }
    }
}

/// What the policy looked at.
#[derive(Clone, Debug, PartialEq)]
pub struct Observation {
    pub now: LocalTime,
    pub idleness: Idleness,
    /// Other programs' share of all CPUs since the last look, 0..1.
    pub other_load: Option<f64>,
    /// This process's resident memory in bytes.
    pub own_memory: Option<u64>,
}

/// The policy's verdict and its reasons.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    pub lend: bool,
    /// Why not (every rule that says stop), empty when lending.
    pub stop_reasons: Vec<String>,
    /// What was checked and what was assumed, for `idlegrid status`.
    pub notes: Vec<String>,
}

impl Decision {
    /// Lending without rules (submitters, tests).
    pub fn always() -> Decision {
        Decision {
            lend: true,
            stop_reasons: Vec::new(),
            notes: vec!["no policy: lends whenever it runs".into()],
        }
    }

    /// One line: "lending" or "not lending: reason; reason".
    pub fn summary(&self) -> String {
        if self.lend {
            "lending".into()
        } else {
            format!("not lending: {}", self.stop_reasons.join("; "))
        }
    }
}

fn mib(bytes: u64) -> String {
    format!("{} MiB", bytes / (1 << 20))
}

/// Applies the policy to one observation. Pure: no clock, no files.
pub fn decide(policy: &Policy, seen: &Observation) -> Decision {
    let mut stop = Vec::new();
    let mut notes = Vec::new();

    if policy.windows.is_empty() {
        notes.push(format!(
            "time {}: no time windows, any time is fine",
            seen.now
        ));
    } else if let Some(w) = policy.windows.iter().find(|w| w.contains(seen.now)) {
        notes.push(format!("time {} is within window \"{w}\"", seen.now));
    } else {
        let all: Vec<String> = policy.windows.iter().map(|w| format!("\"{w}\"")).collect();
        stop.push(format!(
            "time {} is outside the lending windows {}",
            seen.now,
            all.join(", ")
        ));
    }

    if let Some(after) = policy.idle_after {
        let minutes = after.as_secs() / 60;
        match &seen.idleness {
            Idleness::IdleFor { idle, source } if *idle >= after => notes.push(format!(
                "idle for {} min (by {source}), at least {minutes} min needed",
                idle.as_secs() / 60
            )),
            Idleness::IdleFor { idle, source } => stop.push(format!(
                "the owner was active {} min ago (by {source}); lends after {minutes} min idle",
                idle.as_secs() / 60
            )),
            Idleness::Active { source } => {
                stop.push(format!("the owner is using the machine (by {source})"))
            }
            Idleness::NoSession => notes.push("nobody is logged in: idle".into()),
            Idleness::Unknown { why } => match policy.when_unknown {
                WhenUnknown::Idle => notes.push(format!(
                    "idleness cannot be determined ({why}); assumed idle (when_unknown = \"idle\")"
                )),
                WhenUnknown::Busy => stop.push(format!(
                    "idleness cannot be determined ({why}); assumed in use (when_unknown = \"busy\")"
                )),
            },
        }
    } else {
        notes.push("idleness not required".into());
    }

    if let Some(max) = policy.max_other_load {
        match seen.other_load {
            Some(load) if load > max => stop.push(format!(
                "other programs use {:.0}% of the CPUs (limit {:.0}%)",
                load * 100.0,
                max * 100.0
            )),
            Some(load) => notes.push(format!(
                "other programs use {:.0}% of the CPUs (limit {:.0}%)",
                load * 100.0,
                max * 100.0
            )),
            None => notes.push("CPU load not measured yet (or unreadable): not limiting".into()),
        }
    }

    if let Some(max) = policy.max_memory {
        match seen.own_memory {
            Some(used) if used > max => stop.push(format!(
                "idlegrid uses {} of memory (limit {})",
                mib(used),
                mib(max)
            )),
            Some(used) => notes.push(format!("idlegrid uses {} (limit {})", mib(used), mib(max))),
            None => notes.push("own memory unreadable: not limiting".into()),
        }
    }

    Decision {
        lend: stop.is_empty(),
        stop_reasons: stop,
        notes,
    }
}

/// Looks at the machine through injectable sources, keeping the last CPU sample so
/// each look measures the load since the previous one.
pub struct Sensors {
    pub clock: Box<dyn Clock>,
    pub idle: Box<dyn IdleSource>,
    last_cpu: Option<sense::CpuSample>,
}

impl Sensors {
    pub fn new(clock: Box<dyn Clock>, idle: Box<dyn IdleSource>) -> Sensors {
        Sensors {
            clock,
            idle,
            last_cpu: None,
        }
    }

    /// The real machine.
    pub fn system() -> Sensors {
        Sensors::new(Box::new(sense::SystemClock), Box::new(sense::SystemIdle))
    }

    pub fn observe(&mut self) -> Observation {
        let sample = sense::cpu_sample();
        let other_load = match (self.last_cpu, sample) {
            (Some(before), Some(after)) => sense::other_load(before, after),
            _ => None,
        };
        self.last_cpu = sample;
        Observation {
            now: self.clock.now(),
            idleness: self.idle.idleness(),
            other_load,
            own_memory: sense::own_memory(),
        }
    }
}

#[cfg(test)]
mod tests;
