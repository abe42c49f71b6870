//! One circuit breaker per peer (the renderer guarded each node's connection the same
//! way): closed while the peer answers; open after `breaker_threshold` consecutive
//! failures, when it gets no work; half-open once the cool-down is over, when exactly
//! one probe chunk decides whether it closes again or re-opens with a doubled
//! cool-down. The trusted local worker's breaker only counts, it never opens: the job
//! must be able to finish on it alone.

use super::config::SchedulerConfig;
use super::types::BreakerState;
use super::{from_micros, to_micros, Micros};

/// A peer's breaker.
#[derive(Clone, Debug)]
pub struct Breaker {
    state: Inner,
    /// Opens in a row without a success in between: the exponent of the cool-down.
    reopens: u32,
    never_open: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Inner {
    Closed { failures: u32 },
    Open { until: Micros },
    HalfOpen,
}

/// What a failure did to the breaker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tripped {
    /// Still closed (or never opens).
    No,
    /// Now open until the given time: the peer's chunks must go back to the queue.
    OpenUntil(Micros),
}

impl Breaker {
    /// A closed breaker; `never_open` for the trusted local worker.
    pub fn new(never_open: bool) -> Self {
        Breaker {
            state: Inner::Closed { failures: 0 },
            reopens: 0,
            never_open,
        }
    }

    /// The state for displays.
    pub fn state(&self) -> BreakerState {
        match self.state {
            Inner::Closed { failures } => BreakerState::Closed {
                consecutive_failures: failures,
            },
            Inner::Open { until } => BreakerState::Open {
                until: from_micros(until),
            },
            Inner::HalfOpen => BreakerState::HalfOpen,
        }
    }

    /// How many chunks the peer may have in flight under this breaker, at most:
    /// unlimited when closed, one probe when half-open, none when open.
    pub fn in_flight_cap(&self) -> u32 {
        match self.state {
            Inner::Closed { .. } => u32::MAX,
            Inner::HalfOpen => 1,
            Inner::Open { .. } => 0,
        }
    }

    /// An answer came back: the breaker closes.
    pub fn on_success(&mut self) {
        self.state = Inner::Closed { failures: 0 };
        self.reopens = 0;
    }

    /// A failure at `now`.
    pub fn on_failure(&mut self, now: Micros, config: &SchedulerConfig) -> Tripped {
        match self.state {
            Inner::Closed { failures } => {
                let failures = failures.saturating_add(1);
                if failures >= config.breaker_threshold && !self.never_open {
                    self.open(now, config)
                } else {
                    self.state = Inner::Closed { failures };
                    Tripped::No
                }
            }
            Inner::HalfOpen => self.open(now, config),
            // Late failures of copies sent before it opened change nothing.
            Inner::Open { .. } => Tripped::No,
        }
    }

    /// Opens at once, whatever the count (the peer stopped answering pings). An open
    /// breaker stays as it is; one that never opens only counts.
    pub fn trip(&mut self, now: Micros, config: &SchedulerConfig) -> Tripped {
        match self.state {
            _ if self.never_open => Tripped::No,
            Inner::Open { .. } => Tripped::No,
            Inner::Closed { .. } | Inner::HalfOpen => self.open(now, config),
        }
    }

    /// Moves an open breaker whose cool-down ended by `now` to half-open. True if it
    /// did (the peer may get a probe).
    pub fn poll(&mut self, now: Micros) -> bool {
        match self.state {
            Inner::Open { until } if until <= now => {
                self.state = Inner::HalfOpen;
                true
            }
            _ => false,
        }
    }

    /// The end of the cool-down, if open.
    pub fn open_until(&self) -> Option<Micros> {
        match self.state {
            Inner::Open { until } => Some(until),
            _ => None,
        }
    }

    fn open(&mut self, now: Micros, config: &SchedulerConfig) -> Tripped {
        let base = to_micros(config.breaker_cooldown);
        let cap = to_micros(config.breaker_max_cooldown).max(base);
        let cooldown = base.saturating_mul(1u64 << self.reopens.min(20)).min(cap);
        self.reopens = self.reopens.saturating_add(1);
        let until = now.saturating_add(cooldown);
        self.state = Inner::Open { until };
        Tripped::OpenUntil(until)
    }
}
