//! Unit tests of the scheduler: pure, in made-up time, one behaviour each. This file
//! holds the fake-peer harness; the tests are grouped by concern below.

mod dispatch;
mod lifecycle;
mod memory;
mod ping;
mod storm;
mod trust;
mod verify;

use std::time::Duration;

use idlegrid_protocol::Cid;

use super::*;

/// The honest result of a chunk.
fn good(chunk: ChunkIndex) -> Cid {
    Cid::of(&chunk.to_le_bytes())
}

/// A lie, different per liar.
fn lie(peer: u32, chunk: ChunkIndex) -> Cid {
    Cid::of(format!("lie {peer} {chunk}").as_bytes())
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

struct Harness {
    s: Scheduler<u32>,
    now: Duration,
    /// Copies the fake peers are working on, oldest first (assigns minus cancels).
    working: Vec<(u32, ChunkIndex)>,
    /// Each chunk's settled result as the actions tell it (`Verified` minus
    /// `Revoked`): what the event loop assembles from.
    results: std::collections::HashMap<ChunkIndex, Cid>,
}

impl Harness {
    /// A scheduler in a trusted pool (`Trust::All`): the tests of dispatch, timing and
    /// replicas, where any answer is a vote.
    fn pool(config: SchedulerConfig, costs: Vec<u64>) -> Self {
        Harness::new(
            SchedulerConfig {
                trust: Trust::All,
                ..config
            },
            costs,
        )
    }

    /// A scheduler with the configuration as given (earned trust by default).
    fn new(config: SchedulerConfig, costs: Vec<u64>) -> Self {
        Harness {
            s: Scheduler::new(config, costs).expect("valid config"),
            now: Duration::ZERO,
            working: Vec::new(),
            results: std::collections::HashMap::new(),
        }
    }

    fn ev(&mut self, event: Event<u32>) -> Vec<Action<u32>> {
        let mut out = Vec::new();
        match &event {
            Event::PeerLeft { peer } => self.working.retain(|w| w.0 != *peer),
            Event::ChunkDone { peer, chunk, .. } | Event::ChunkFailed { peer, chunk, .. } => {
                self.working.retain(|w| *w != (*peer, *chunk))
            }
            _ => {}
        }
        self.s.handle(self.now, event, &mut out);
        for action in &out {
            match action {
                Action::Assign { peer, chunk, .. } => self.working.push((*peer, *chunk)),
                Action::Cancel { peer, chunk } => self.working.retain(|w| *w != (*peer, *chunk)),
                Action::Verified { chunk, result, .. } => {
                    self.results.insert(*chunk, *result);
                }
                Action::Revoked { chunk } => {
                    self.results.remove(chunk);
                }
                _ => {}
            }
        }
        out
    }

    /// A chunk's settled result, from the actions; for a chunk still in play the
    /// scheduler's own answer must agree.
    fn verified_result(&self, chunk: ChunkIndex) -> Option<Cid> {
        let result = self.results.get(&chunk).copied();
        if self.s.chunks.contains_key(&chunk) {
            assert_eq!(self.s.verified_result(chunk), result, "chunk {chunk}");
        }
        result
    }

    fn join(&mut self, peer: u32, score: f64) -> Vec<Action<u32>> {
        self.ev(Event::PeerJoined {
            peer,
            score,
            trusted: false,
            weight: None,
        })
    }

    fn join_trusted(&mut self, peer: u32, score: f64) -> Vec<Action<u32>> {
        self.ev(Event::PeerJoined {
            peer,
            score,
            trusted: true,
            weight: None,
        })
    }

    fn done(&mut self, peer: u32, chunk: ChunkIndex, result: Cid) -> Vec<Action<u32>> {
        self.ev(Event::ChunkDone {
            peer,
            chunk,
            result,
        })
    }

    fn fail(&mut self, peer: u32, chunk: ChunkIndex, kind: FailureKind) -> Vec<Action<u32>> {
        self.ev(Event::ChunkFailed { peer, chunk, kind })
    }

    fn tick_at(&mut self, at: Duration) -> Vec<Action<u32>> {
        self.now = at;
        self.ev(Event::Tick)
    }

    /// Answers every copy being worked on, oldest first, honestly unless the peer is
    /// one of `liars`, until none is left; returns every action seen.
    fn run(&mut self, liars: &[u32]) -> Vec<Action<u32>> {
        let mut all = Vec::new();
        let mut rounds = 0;
        while !self.working.is_empty() {
            let (peer, chunk) = self.working[0];
            rounds += 1;
            assert!(rounds < 100_000, "no progress");
            self.now += Duration::from_millis(100);
            let result = if liars.contains(&peer) {
                lie(peer, chunk)
            } else {
                good(chunk)
            };
            all.extend(self.done(peer, chunk, result));
        }
        all
    }
}

fn assigned(actions: &[Action<u32>], who: u32) -> Vec<ChunkIndex> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Assign { peer, chunk, .. } if *peer == who => Some(*chunk),
            _ => None,
        })
        .collect()
}

fn speculative(actions: &[Action<u32>], who: u32) -> Vec<ChunkIndex> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Assign {
                peer,
                chunk,
                speculative: true,
                ..
            } if *peer == who => Some(*chunk),
            _ => None,
        })
        .collect()
}

fn verified(actions: &[Action<u32>]) -> Vec<(ChunkIndex, Cid)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Verified { chunk, result, .. } => Some((*chunk, *result)),
            _ => None,
        })
        .collect()
}

fn complete(actions: &[Action<u32>]) -> bool {
    actions.contains(&Action::JobComplete)
}

/// The (peer, evidence chunk) of every ban in `actions`.
fn banned(actions: &[Action<u32>]) -> Vec<(u32, ChunkIndex)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::PeerBanned { peer, chunk, .. } => Some((*peer, *chunk)),
            _ => None,
        })
        .collect()
}
