//! The gate the worker asks before it accepts a chunk.
//!
//! It holds the access lists (who may submit, who is denied) and the policy's latest
//! [`Decision`], which [`Gate::watch`] refreshes every few seconds from the machine.
//! Each accepted chunk holds a [`Ticket`] until it ends, so the gate knows how many
//! are in hand. When the decision turns to stop (or on [`Gate::shutdown`]) the gate
//! refuses new chunks; chunks waiting for a core see [`Gate::stopped`] and are handed
//! back at once; after the grace period [`Gate::evicted`] fires and running chunks are
//! handed back too (the worker fails them with the reason, so submitters reassign them
//! instead of waiting for a timeout).

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use libp2p::PeerId;
use tokio::sync::watch;

use super::{decide, Decision, Policy, Sensors};

/// Refusals remembered for `status` and tests.
const REMEMBERED_REFUSALS: usize = 64;

/// A refused request: who and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub peer: PeerId,
    pub reason: String,
}

#[derive(Clone, Debug)]
struct State {
    /// What the gate goes by: the policy's decision, unless the owner paused.
    decision: Decision,
    /// The policy's latest decision.
    policy: Decision,
    /// The owner paused lending (from the web page) until resumed.
    paused: bool,
    /// Bumped at each turn from lending to stopped, so a stale grace timer does nothing.
    generation: u64,
    /// The grace period after a stop has run out: running chunks must go.
    evict: bool,
    /// Shut down for good: later policy decisions do not reopen the gate.
    closed: bool,
}

struct Inner {
    accept_from: Option<HashSet<PeerId>>,
    deny: HashSet<PeerId>,
    grace: Duration,
    state: watch::Sender<State>,
    working: watch::Sender<usize>,
    refusals: Mutex<VecDeque<Refusal>>,
}

/// Shared by the worker and the policy watcher. Cloning shares it.
#[derive(Clone)]
pub struct Gate(Arc<Inner>);

impl std::fmt::Debug for Gate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gate")
            .field("accept_from", &self.0.accept_from)
            .field("deny", &self.0.deny)
            .field("decision", &self.decision().summary())
            .finish()
    }
}

impl Default for Gate {
    fn default() -> Self {
        Gate::open()
    }
}

/// A chunk in hand; dropping it tells the gate the chunk ended.
pub struct Ticket(Gate);

impl std::fmt::Debug for Ticket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Ticket")
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.0 .0.working.send_modify(|n| *n = n.saturating_sub(1));
    }
}

impl Gate {
    /// Lends to everyone, always (submitters and tests).
    pub fn open() -> Gate {
        Gate::new(None, Vec::new(), Duration::from_secs(120))
    }

    /// `accept_from`: the only submitters whose chunks are run (None = anyone's);
    /// `deny`: peers refused outright; `grace`: how long running chunks may go on
    /// after a stop.
    pub fn new(accept_from: Option<Vec<PeerId>>, deny: Vec<PeerId>, grace: Duration) -> Gate {
        Gate(Arc::new(Inner {
            accept_from: accept_from.map(|list| list.into_iter().collect()),
            deny: deny.into_iter().collect(),
            grace,
            state: watch::Sender::new(State {
                decision: Decision::always(),
                policy: Decision::always(),
                paused: false,
                generation: 0,
                evict: false,
                closed: false,
            }),
            working: watch::Sender::new(0),
            refusals: Mutex::new(VecDeque::new()),
        }))
    }

    /// Whether `peer` may submit chunks here, ignoring the time of day.
    pub fn access(&self, peer: &PeerId) -> Result<(), String> {
        if self.0.deny.contains(peer) {
            return Err("this peer is denied by the machine's owner (--deny)".into());
        }
        match &self.0.accept_from {
            Some(allowed) if !allowed.contains(peer) => Err(
                "this volunteer accepts jobs only from its owner's list of submitters (--accept-from)"
                    .into(),
            ),
            _ => Ok(()),
        }
    }

    /// Asks to run a chunk for `peer`. The refusal reason goes back to the submitter
    /// and into the log.
    pub fn admit(&self, peer: PeerId) -> Result<Ticket, String> {
        let verdict = self.access(&peer).and_then(|()| {
            let state = self.0.state.borrow();
            if state.decision.lend {
                Ok(())
            } else {
                Err(format!("owner's policy: {}", state.decision.summary()))
            }
        });
        match verdict {
            Ok(()) => {
                self.0.working.send_modify(|n| *n += 1);
                Ok(Ticket(self.clone()))
            }
            Err(reason) => {
                let mut refusals = self.0.refusals.lock().unwrap_or_else(|e| e.into_inner());
                if refusals.len() == REMEMBERED_REFUSALS {
                    refusals.pop_front();
                }
                refusals.push_back(Refusal {
                    peer,
                    reason: reason.clone(),
                });
                Err(reason)
            }
        }
    }

    /// Whether `peer` is denied (its connections are closed).
    pub fn denies(&self, peer: &PeerId) -> bool {
        self.0.deny.contains(peer)
    }

    /// True while the policy says no new work (advertised in probes).
    pub fn busy(&self) -> bool {
        !self.0.state.borrow().decision.lend
    }

    pub fn decision(&self) -> Decision {
        self.0.state.borrow().decision.clone()
    }

    /// The latest refusals, oldest first.
    pub fn refusals(&self) -> Vec<Refusal> {
        let refusals = self.0.refusals.lock().unwrap_or_else(|e| e.into_inner());
        refusals.iter().cloned().collect()
    }

    /// Chunks accepted and not yet ended.
    pub fn working(&self) -> usize {
        *self.0.working.borrow()
    }

    /// Applies a new decision. A turn to stop starts the grace period. Must be called
    /// within a tokio runtime (the grace timer is a task).
    pub fn set(&self, decision: Decision) {
        self.apply(decision, false);
    }

    /// Pauses lending (the owner, from the web page) or resumes it; while paused the
    /// gate acts as on a policy stop, grace period included.
    pub fn set_paused(&self, paused: bool) {
        let policy = {
            let mut policy = None;
            self.0.state.send_if_modified(|state| {
                state.paused = paused;
                policy = Some(state.policy.clone());
                false
            });
            policy.unwrap_or_else(Decision::always)
        };
        self.apply(policy, false);
    }

    /// Whether the owner paused lending.
    pub fn paused(&self) -> bool {
        self.0.state.borrow().paused
    }

    fn apply(&self, decision: Decision, close: bool) {
        let mut started = None;
        self.0.state.send_if_modified(|state| {
            if state.closed {
                return false;
            }
            state.policy = decision.clone();
            let decision = if state.paused && !close {
                Decision {
                    lend: false,
                    stop_reasons: vec!["paused by the owner (from the web page)".into()],
                    notes: decision.notes,
                }
            } else {
                decision
            };
            state.closed = close;
            let was_lending = state.decision.lend;
            if decision.lend {
                state.evict = false;
            } else if was_lending {
                state.generation += 1;
                started = Some(state.generation);
            }
            state.decision = decision;
            true
        });
        if let Some(generation) = started {
            let gate = self.clone();
            let grace = self.0.grace;
            tokio::spawn(async move {
                tokio::time::sleep(grace).await;
                gate.0.state.send_if_modified(|state| {
                    let expire = state.generation == generation && !state.decision.lend;
                    if expire {
                        state.evict = true;
                    }
                    expire
                });
            });
        }
    }

    /// Stops for good: refuses new chunks, hands back queued ones at once and running
    /// ones after the grace period.
    pub fn shutdown(&self) {
        let mut decision = self.decision();
        decision.lend = false;
        decision.stop_reasons = vec!["this peer is shutting down".into()];
        self.apply(decision, true);
    }

    /// Resolves once the gate says stop.
    pub async fn stopped(&self) {
        let mut rx = self.0.state.subscribe();
        let _ = rx.wait_for(|s| !s.decision.lend).await;
    }

    /// Resolves once a stop's grace period has run out.
    pub async fn evicted(&self) {
        let mut rx = self.0.state.subscribe();
        let _ = rx.wait_for(|s| s.evict).await;
    }

    /// Waits until no chunk is in hand, or `timeout`; returns how many are left.
    pub async fn drained(&self, timeout: Duration) -> usize {
        let mut rx = self.0.working.subscribe();
        let _ = tokio::time::timeout(timeout, rx.wait_for(|n| *n == 0)).await;
        let left = *rx.borrow();
        left
    }

    /// Looks at the machine every `policy.check_every` and applies the decision,
    /// logging each change, until the gate is dropped by everyone else.
    pub fn watch(&self, policy: Policy, sensors: Sensors) -> tokio::task::JoinHandle<()> {
        let gate = Arc::downgrade(&self.0);
        tokio::spawn(async move {
            let mut sensors = sensors;
            let mut last: Option<bool> = None;
            loop {
                let looked = tokio::task::spawn_blocking(move || {
                    let seen = sensors.observe();
                    (sensors, seen)
                })
                .await;
                let Ok((back, seen)) = looked else { break };
                sensors = back;
                let decision = decide(&policy, &seen);
                let Some(inner) = gate.upgrade() else { break };
                let gate = Gate(inner);
                if last != Some(decision.lend) {
                    tracing::info!("policy: {}", decision.summary());
                    last = Some(decision.lend);
                }
                gate.set(decision);
                drop(gate);
                tokio::time::sleep(policy.check_every).await;
            }
        })
    }
}
