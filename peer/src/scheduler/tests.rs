//! Unit tests of the scheduler: pure, in made-up time, one behaviour each.

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
}

impl Harness {
    fn new(config: SchedulerConfig, costs: Vec<u64>) -> Self {
        Harness {
            s: Scheduler::new(config, costs).expect("valid config"),
            now: Duration::ZERO,
            working: Vec::new(),
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
                _ => {}
            }
        }
        out
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
            Action::Verified { chunk, result } => Some((*chunk, *result)),
            _ => None,
        })
        .collect()
}

fn complete(actions: &[Action<u32>]) -> bool {
    actions.contains(&Action::JobComplete)
}

/// Fine chunks: the pipeline is sized by speed, so the first split follows the scores.
fn fine_config() -> SchedulerConfig {
    SchedulerConfig {
        max_in_flight: 1000,
        ..SchedulerConfig::default()
    }
}

#[test]
fn first_assignment_is_weighted_by_score_and_hand_weights_override() {
    let mut h = Harness::new(fine_config(), vec![1; 1000]);
    // pipeline 2 s: 2 s × 10 units/s = 20 chunks; 2 s × 30 = 60.
    let a = h.join(1, 10.0);
    let b = h.join(2, 30.0);
    assert_eq!(assigned(&a, 1).len(), 20);
    assert_eq!(assigned(&b, 2).len(), 60);
    let c = h.ev(Event::PeerJoined {
        peer: 3,
        score: 30.0,
        trusted: false,
        weight: Some(5.0),
    });
    assert_eq!(assigned(&c, 3).len(), 10);
    // Weight 0 excludes a peer.
    let d = h.ev(Event::PeerJoined {
        peer: 4,
        score: 30.0,
        trusted: false,
        weight: Some(0.0),
    });
    assert!(assigned(&d, 4).is_empty());
    // Chunks go out in plan order, each once.
    let mut all: Vec<ChunkIndex> = [a, b, c]
        .iter()
        .flat_map(|x| {
            assigned(x, 0)
                .into_iter()
                .chain(assigned(x, 1))
                .chain(assigned(x, 2))
                .chain(assigned(x, 3))
        })
        .collect();
    all.sort_unstable();
    assert_eq!(all, (0..90).collect::<Vec<_>>());
}

#[test]
fn peers_pull_one_chunk_per_answer() {
    let mut h = Harness::new(SchedulerConfig::default(), vec![100; 10]);
    let a = h.join(1, 10.0);
    assert_eq!(assigned(&a, 1), vec![0, 1], "min_in_flight copies at first");
    h.now = secs(10);
    let out = h.done(1, 0, good(0));
    assert_eq!(verified(&out), vec![(0, good(0))]);
    assert_eq!(assigned(&out, 1), vec![2]);
    assert_eq!(h.s.peer_stats(&1).map(|s| s.in_flight), Some(2));
    assert_eq!(h.s.progress().verified, 1);
}

#[test]
fn an_expired_deadline_requeues_the_chunk_and_counts_a_failure() {
    // No speculation, which would duplicate the overdue chunk before its deadline.
    let config = SchedulerConfig {
        speculative_copies: 0,
        ..SchedulerConfig::default()
    };
    let mut h = Harness::new(config, vec![100; 4]);
    let a = h.join(1, 10.0);
    assert_eq!(assigned(&a, 1), vec![0, 1]);
    // Chunk 0: 10 s expected, deadline 3 × 10 s = 30 s.
    let deadline = a
        .iter()
        .find_map(|x| match x {
            Action::Assign {
                chunk: 0, deadline, ..
            } => Some(*deadline),
            _ => None,
        })
        .expect("chunk 0 assigned");
    assert_eq!(deadline, secs(30));
    let b = h.join(2, 10.0);
    assert_eq!(assigned(&b, 2), vec![2, 3]);
    h.now = secs(10);
    h.done(2, 2, good(2));
    assert_eq!(h.s.next_wakeup(), Some(secs(30)));
    assert!(h.tick_at(secs(29)).is_empty());
    let out = h.tick_at(secs(30));
    assert!(out.contains(&Action::Cancel { peer: 1, chunk: 0 }));
    assert_eq!(h.s.peer_stats(&1).map(|s| s.failures), Some(1));
    assert_eq!(h.s.progress().requeued, 1);
    assert!(
        assigned(&out, 1).is_empty(),
        "not back to the peer that timed out"
    );
    assert_eq!(assigned(&out, 2), vec![0], "another peer takes it");
    // A late answer from the first peer still counts, and wins the race.
    h.now = secs(31);
    let late = h.done(1, 0, good(0));
    assert_eq!(verified(&late), vec![(0, good(0))]);
    assert!(late.contains(&Action::Cancel { peer: 2, chunk: 0 }));
}

#[test]
fn breaker_opens_probes_half_open_and_closes() {
    let config = SchedulerConfig {
        breaker_threshold: 2,
        breaker_cooldown: secs(10),
        ..SchedulerConfig::default()
    };
    let mut h = Harness::new(config, vec![10; 20]);
    let a = h.join(1, 10.0);
    assert_eq!(assigned(&a, 1), vec![0, 1]);
    let out = h.fail(1, 0, FailureKind::Transport);
    assert_eq!(
        h.s.peer_stats(&1).map(|s| s.breaker),
        Some(BreakerState::Closed {
            consecutive_failures: 1
        })
    );
    assert_eq!(assigned(&out, 1), vec![0], "the retry goes first");
    let out = h.fail(1, 1, FailureKind::Refused);
    assert_eq!(
        h.s.peer_stats(&1).map(|s| s.breaker),
        Some(BreakerState::Open { until: secs(10) })
    );
    assert!(out.contains(&Action::Cancel { peer: 1, chunk: 0 }));
    assert!(assigned(&out, 1).is_empty());
    assert_eq!(h.s.peer_stats(&1).map(|s| s.in_flight), Some(0));
    assert_eq!(h.s.next_wakeup(), Some(secs(10)));
    assert!(h.tick_at(secs(9)).is_empty());
    let out = h.tick_at(secs(10));
    assert_eq!(
        h.s.peer_stats(&1).map(|s| s.breaker),
        Some(BreakerState::HalfOpen)
    );
    let probe = assigned(&out, 1);
    assert_eq!(probe.len(), 1, "exactly one probe when half-open");
    // A failed probe re-opens with a doubled cool-down.
    h.now = secs(11);
    h.fail(1, probe[0], FailureKind::Timeout);
    assert_eq!(
        h.s.peer_stats(&1).map(|s| s.breaker),
        Some(BreakerState::Open { until: secs(31) })
    );
    let out = h.tick_at(secs(31));
    let probe = assigned(&out, 1);
    assert_eq!(probe.len(), 1);
    h.now = secs(32);
    let out = h.done(1, probe[0], good(probe[0]));
    assert_eq!(
        h.s.peer_stats(&1).map(|s| s.breaker),
        Some(BreakerState::Closed {
            consecutive_failures: 0
        })
    );
    assert_eq!(assigned(&out, 1).len(), 2, "closed again: a full pipeline");
}

#[test]
fn idle_fast_peer_duplicates_the_slowest_outstanding_chunk() {
    let mut h = Harness::new(SchedulerConfig::default(), vec![100; 3]);
    // The slow peer takes two chunks (100 s each), the fast one the last (1 s).
    let slow = h.join(1, 1.0);
    assert_eq!(assigned(&slow, 1), vec![0, 1]);
    let fast = h.join(2, 100.0);
    // Nothing else pending: its second slot duplicates the chunk expected last.
    assert_eq!(speculative(&fast, 2), vec![1]);
    assert_eq!(assigned(&fast, 2), vec![2, 1]);
    h.now = secs(1);
    let out = h.done(2, 2, good(2));
    assert_eq!(speculative(&out, 2), vec![0]);
    assert_eq!(h.s.progress().speculative, 2);
    h.now = secs(2);
    let out = h.done(2, 1, good(1));
    assert_eq!(verified(&out), vec![(1, good(1))]);
    assert!(
        out.contains(&Action::Cancel { peer: 1, chunk: 1 }),
        "the loser is cancelled"
    );
    h.now = secs(3);
    let out = h.done(2, 0, good(0));
    assert!(out.contains(&Action::Cancel { peer: 1, chunk: 0 }));
    assert!(complete(&out));
}

#[test]
fn speculation_is_skipped_when_it_would_not_be_faster() {
    let mut h = Harness::new(SchedulerConfig::default(), vec![100; 3]);
    let fast = h.join(1, 100.0);
    assert_eq!(assigned(&fast, 1), vec![0, 1]);
    let slow = h.join(2, 1.0);
    assert_eq!(assigned(&slow, 2), vec![2]);
    // The slow peer is idle below its pipeline, but duplicating the fast peer's
    // chunks (1–2 s left) would take it 100 s more.
    assert_eq!(h.s.progress().speculative, 0);
}

#[test]
fn replicas_settle_by_majority_and_ban_the_minority() {
    let config = SchedulerConfig {
        replicas: 2,
        min_in_flight: 1,
        ..SchedulerConfig::default()
    };
    let mut h = Harness::new(config, vec![10; 1]);
    let a = h.join(1, 10.0);
    let b = h.join(2, 10.0);
    assert_eq!(assigned(&a, 1), vec![0]);
    assert_eq!(assigned(&b, 2), vec![0], "two distinct peers get the chunk");
    let c = h.join(3, 10.0);
    // Fully assigned; the third peer may only speculate, and it would not be faster.
    assert!(assigned(&c, 3).is_empty());
    h.now = secs(1);
    let out = h.done(1, 0, good(0));
    assert!(verified(&out).is_empty(), "one vote of two");
    let out = h.done(2, 0, lie(2, 0));
    assert!(verified(&out).is_empty(), "a tie settles nothing");
    assert_eq!(h.s.progress().disputes, 1);
    assert_eq!(assigned(&out, 3), vec![0], "a third opinion is asked");
    h.now = secs(2);
    let out = h.done(3, 0, good(0));
    assert_eq!(verified(&out), vec![(0, good(0))]);
    assert!(out.contains(&Action::PeerBanned { peer: 2, chunk: 0 }));
    assert!(complete(&out));
    assert_eq!(h.s.peer_stats(&2).map(|s| s.banned), Some(true));
}

#[test]
fn the_trusted_worker_settles_a_dispute_alone() {
    let config = SchedulerConfig {
        replicas: 2,
        min_in_flight: 1,
        ..SchedulerConfig::default()
    };
    let mut h = Harness::new(config, vec![10; 2]);
    h.join(1, 10.0);
    h.join(2, 10.0);
    // Both remotes took chunk 0 and then 1 is pending for the trusted worker.
    let t = h.join_trusted(9, 10.0);
    assert_eq!(assigned(&t, 9), vec![1]);
    h.now = secs(1);
    let out = h.done(9, 1, good(1));
    assert_eq!(
        verified(&out),
        vec![(1, good(1))],
        "one trusted vote suffices"
    );
    h.done(1, 0, lie(1, 0));
    let out = h.done(2, 0, good(0));
    assert!(verified(&out).is_empty());
    assert_eq!(
        assigned(&out, 9),
        vec![0],
        "the dispute goes to the trusted worker"
    );
    let out = h.done(9, 0, good(0));
    assert_eq!(verified(&out), vec![(0, good(0))]);
    assert!(out.contains(&Action::PeerBanned { peer: 1, chunk: 0 }));
    assert!(complete(&out));
}

#[test]
fn a_caught_liar_is_banned_and_every_result_it_backed_is_redone() {
    // Replicas 1 and spot checks on every chunk: the liar's results are accepted
    // first, then the trusted worker's check catches it.
    let config = SchedulerConfig {
        spot_check: 1.0,
        min_in_flight: 3,
        ..SchedulerConfig::default()
    };
    let mut h = Harness::new(config, vec![10; 4]);
    let l = h.join(1, 10.0);
    assert_eq!(assigned(&l, 1), vec![0, 1, 2]);
    h.now = secs(1);
    let out = h.done(1, 0, lie(1, 0));
    assert_eq!(verified(&out), vec![(0, lie(1, 0))], "accepted for now");
    let out = h.done(1, 1, lie(1, 1));
    assert_eq!(verified(&out), vec![(1, lie(1, 1))]);
    let t = h.join_trusted(9, 10.0);
    assert_eq!(
        assigned(&t, 9),
        vec![0, 1],
        "spot checks of answered chunks first"
    );
    let out = h.done(9, 0, good(0));
    assert!(out.contains(&Action::PeerBanned { peer: 1, chunk: 0 }));
    let revoked: Vec<_> = out
        .iter()
        .filter_map(|a| match a {
            Action::Revoked { chunk } => Some(*chunk),
            _ => None,
        })
        .collect();
    assert_eq!(
        revoked,
        vec![0, 1],
        "its other accepted result is withdrawn too"
    );
    assert!(out.contains(&Action::Cancel { peer: 1, chunk: 2 }));
    assert!(verified(&out).contains(&(0, good(0))));
    let all = h.run(&[]);
    assert!(complete(&all));
    for c in 0..4 {
        assert_eq!(h.s.verified_result(c), Some(good(c)));
    }
    assert_eq!(h.s.progress().banned_peers, 1);
    assert_eq!(h.s.progress().spot_checks_pending, 0);
}

#[test]
fn spot_checks_are_a_deterministic_fraction() {
    let config = SchedulerConfig {
        spot_check: 0.1,
        spot_check_seed: 42,
        ..SchedulerConfig::default()
    };
    let a: Scheduler<u32> = Scheduler::new(config.clone(), vec![1; 10_000]).expect("valid");
    let b: Scheduler<u32> = Scheduler::new(config.clone(), vec![1; 10_000]).expect("valid");
    let picked: Vec<_> = (0..10_000).filter(|&c| a.is_spot_checked(c)).collect();
    let again: Vec<_> = (0..10_000).filter(|&c| b.is_spot_checked(c)).collect();
    assert_eq!(picked, again);
    assert!(
        (900..1100).contains(&picked.len()),
        "{} of 10000",
        picked.len()
    );
    assert_eq!(a.progress().spot_checks as usize, picked.len());
    let other = SchedulerConfig {
        spot_check_seed: 43,
        ..config
    };
    let c: Scheduler<u32> = Scheduler::new(other, vec![1; 10_000]).expect("valid");
    let moved = (0..10_000)
        .filter(|&i| c.is_spot_checked(i))
        .collect::<Vec<_>>();
    assert_ne!(picked, moved, "the seed chooses");
}

#[test]
fn a_spot_check_catches_a_lie_a_single_replica_accepted() {
    let config = SchedulerConfig {
        spot_check: 1.0,
        ..SchedulerConfig::default()
    };
    let mut h = Harness::new(config, vec![10; 1]);
    h.join_trusted(9, 0.001); // too slow to be given ordinary work first
    let out = h.join(1, 10.0);
    assert_eq!(assigned(&out, 1), vec![0]);
    h.now = secs(1);
    let out = h.done(1, 0, lie(1, 0));
    assert!(!complete(&out), "the job waits for the spot check");
    let all = h.run(&[]);
    assert!(complete(&all));
    assert_eq!(h.s.verified_result(0), Some(good(0)));
    assert_eq!(h.s.peer_stats(&1).map(|s| s.banned), Some(true));
}

#[test]
fn a_peer_lost_mid_chunk_gives_its_chunks_back_without_a_breaker_failure() {
    let mut h = Harness::new(SchedulerConfig::default(), vec![10; 4]);
    let a = h.join(1, 10.0);
    assert_eq!(assigned(&a, 1), vec![0, 1]);
    let b = h.join(2, 10.0);
    assert_eq!(assigned(&b, 2), vec![2, 3]);
    h.now = secs(1);
    let out = h.ev(Event::PeerLeft { peer: 1 });
    assert!(assigned(&out, 1).is_empty());
    let stats = h.s.peer_stats(&1).expect("known");
    assert_eq!(stats.failures, 0);
    assert!(!stats.connected);
    assert_eq!(h.s.progress().requeued, 2);
    let out = h.done(2, 2, good(2));
    assert_eq!(
        assigned(&out, 2),
        vec![0],
        "the lost chunks go to the peer left"
    );
    let all = h.run(&[]);
    assert!(complete(&all));
    assert_eq!(h.s.peer_stats(&2).map(|s| s.chunks_done), Some(4));
}

#[test]
fn the_job_finishes_on_the_trusted_worker_when_every_remote_dies() {
    let config = SchedulerConfig {
        replicas: 2,
        ..SchedulerConfig::default()
    };
    let mut h = Harness::new(config, vec![10; 50]);
    let mut first = h.join_trusted(0, 1.0);
    for p in 1..=5 {
        first.extend(h.join(p, 100.0));
    }
    assert!(!assigned(&first, 3).is_empty());
    h.now = secs(1);
    for p in 1..=5 {
        h.ev(Event::PeerLeft { peer: p });
    }
    let all = h.run(&[]);
    assert!(complete(&all));
    assert_eq!(h.s.progress().verified, 50);
    assert_eq!(h.s.peer_stats(&0).map(|s| s.chunks_done), Some(50));
}

#[test]
fn the_job_finishes_correctly_when_every_remote_lies() {
    let config = SchedulerConfig {
        replicas: 2,
        ..SchedulerConfig::default()
    };
    let mut h = Harness::new(config, vec![10; 30]);
    h.join_trusted(0, 10.0);
    for p in 1..=6 {
        h.join(p, 10.0);
    }
    let all = h.run(&[1, 2, 3, 4, 5, 6]);
    assert!(complete(&all));
    for c in 0..30 {
        assert_eq!(h.s.verified_result(c), Some(good(c)), "chunk {c}");
    }
    // Every remote ends banned: liars disagree with each other, the trusted worker
    // settles, and whoever contradicted it is caught.
    let banned = (1..=6)
        .filter(|p| h.s.peer_stats(p).is_some_and(|s| s.banned))
        .count();
    assert_eq!(banned, 6);
}

#[test]
fn no_usable_peer_for_the_grace_period_fails_the_job() {
    let mut h = Harness::new(SchedulerConfig::default(), vec![10; 2]);
    assert_eq!(h.s.next_wakeup(), Some(secs(60)));
    assert!(h.tick_at(secs(59)).is_empty());
    let out = h.tick_at(secs(60));
    assert_eq!(
        out,
        vec![Action::JobFailed {
            reason: JobFailure::NoPeers {
                waited: secs(60),
                remaining: 2
            }
        }]
    );
    assert!(h.join(1, 10.0).is_empty(), "nothing after the end");
}

#[test]
fn a_chunk_the_kernel_fails_everywhere_fails_the_job() {
    let config = SchedulerConfig {
        poison_threshold: 2,
        min_in_flight: 1,
        max_in_flight: 1,
        breaker_threshold: 10,
        ..SchedulerConfig::default()
    };
    let mut h = Harness::new(config, vec![10; 2]);
    h.join(1, 10.0);
    h.join(2, 10.0);
    let out = h.fail(1, 0, FailureKind::Kernel);
    assert!(!out.iter().any(|a| matches!(a, Action::JobFailed { .. })));
    assert!(
        assigned(&out, 1).is_empty(),
        "not back to the peer it failed on"
    );
    let out = h.done(2, 1, good(1));
    assert_eq!(assigned(&out, 2), vec![0]);
    let out = h.fail(2, 0, FailureKind::Kernel);
    assert!(out.contains(&Action::JobFailed {
        reason: JobFailure::PoisonChunk { chunk: 0, peers: 2 }
    }));
}

#[test]
fn an_empty_plan_completes_at_once() {
    let mut h = Harness::new(SchedulerConfig::default(), Vec::new());
    assert_eq!(h.ev(Event::Tick), vec![Action::JobComplete]);
    assert_eq!(h.s.outcome(), Some(Outcome::Complete));
}

#[test]
fn bad_configurations_are_refused() {
    let bad = |c: SchedulerConfig| Scheduler::<u32>::new(c, vec![1]).err();
    let d = SchedulerConfig::default;
    assert_eq!(
        bad(SchedulerConfig { replicas: 0, ..d() }),
        Some(ConfigError::NoReplicas)
    );
    assert_eq!(
        bad(SchedulerConfig {
            spot_check: 1.5,
            ..d()
        }),
        Some(ConfigError::SpotCheckRange(1.5))
    );
    assert_eq!(
        bad(SchedulerConfig {
            deadline_floor: secs(10),
            deadline_ceiling: secs(5),
            ..d()
        }),
        Some(ConfigError::DeadlineBounds {
            floor: secs(10),
            ceiling: secs(5)
        })
    );
    assert_eq!(bad(d()), None);
}

#[test]
fn unknown_peers_and_chunks_are_ignored() {
    let mut h = Harness::new(SchedulerConfig::default(), vec![10; 2]);
    assert!(h.done(7, 0, good(0)).is_empty());
    h.join(1, 10.0);
    assert!(h.done(1, 99, good(0)).is_empty());
    assert!(h.fail(1, 99, FailureKind::Kernel).is_empty());
    assert_eq!(h.s.progress().verified, 0);
}

#[test]
fn an_answer_to_a_chunk_never_sent_is_ignored() {
    let mut h = Harness::new(SchedulerConfig::default(), vec![10; 4]);
    let a = h.join(1, 10.0);
    assert_eq!(assigned(&a, 1), vec![0, 1]);
    h.join(2, 10.0);
    // Peer 1 was never sent chunk 2 (peer 2 was): its "answer" settles nothing.
    assert!(h.done(1, 2, lie(1, 2)).is_empty());
    assert_eq!(h.s.verified_result(2), None);
    assert_eq!(h.s.peer_stats(&1).map(|s| s.chunks_done), Some(0));
}

#[test]
fn a_slow_trusted_worker_still_gets_its_spot_checks_among_many_idle_peers() {
    // Ten fast remotes idle with nothing to do must not crowd out the trusted worker,
    // the only one that may do the spot check.
    let config = SchedulerConfig {
        spot_check: 1.0,
        min_in_flight: 1,
        ..SchedulerConfig::default()
    };
    let mut h = Harness::new(config, vec![10; 1]);
    for p in 1..=10 {
        h.join(p, 1000.0);
    }
    h.join_trusted(0, 0.001);
    h.now = secs(1);
    let out = h.done(1, 0, good(0));
    assert_eq!(verified(&out), vec![(0, good(0))]);
    assert_eq!(
        assigned(&out, 0),
        vec![0],
        "the check goes to the trusted worker"
    );
    assert!(!complete(&out));
    let out = h.done(0, 0, good(0));
    assert!(complete(&out));
}

impl<P: Copy + Eq + std::hash::Hash + Ord + std::fmt::Debug> Scheduler<P> {
    /// Every piece of mirrored bookkeeping agrees with the state it mirrors.
    fn check_invariants(&self) {
        let copies: usize = self.chunks.iter().map(|c| c.copies.len()).sum();
        let booked: usize = self.peers.iter().map(|p| p.in_flight.len()).sum();
        assert_eq!(copies, booked, "copies vs peers' in-flight lists");
        assert_eq!(copies as u32, self.progress.in_flight);
        let verified = self.chunks.iter().filter(|c| c.verified.is_some()).count();
        assert_eq!(verified as u32, self.progress.verified);
        for (i, c) in self.chunks.iter().enumerate() {
            let i = i as ChunkIndex;
            for (k, copy) in c.copies.iter().enumerate() {
                assert!(
                    !c.copies[..k].iter().any(|o| o.peer == copy.peer),
                    "two copies on one peer"
                );
                let peer = &self.peers[copy.peer as usize];
                assert!(peer.in_flight.contains(&i));
                assert!(!peer.banned, "a banned peer holds a copy");
            }
            for v in &c.votes {
                assert!(
                    !self.peers[v.peer as usize].banned,
                    "a banned peer's vote stands"
                );
            }
            let decision = c.tally(self.config.replicas).decision;
            assert_eq!(c.verified, decision, "chunk {i}: verified vs its votes");
            match c.slot {
                Slot::None => {}
                Slot::Pending(class) => assert!(self.queues.pending.contains(&(class, i))),
                Slot::Outstanding(eta) => assert!(self.queues.outstanding.contains(&(eta, i))),
            }
        }
        let slots = self.chunks.iter().filter(|c| c.slot != Slot::None).count();
        assert_eq!(
            slots,
            self.queues.pending.len() + self.queues.outstanding.len()
        );
        let usable = self.peers.iter().filter(|p| p.usable()).count() as u32;
        assert_eq!(usable, self.usable_peers);
        for (ix, p) in self.peers.iter().enumerate() {
            let key = p.hungry_key.map(|k| (std::cmp::Reverse(k), ix as PeerIx));
            match key {
                Some(key) => assert!(self.queues.hungry.contains(&key)),
                None => assert!(!self.queues.hungry.iter().any(|e| e.1 == ix as PeerIx)),
            }
        }
    }
}

#[test]
fn random_event_storms_keep_the_books_straight_and_finish_correctly() {
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};
    for seed in 0..40u64 {
        let mut rng = StdRng::seed_from_u64(seed);
        let replicas = rng.gen_range(1..=3);
        let config = SchedulerConfig {
            replicas,
            spot_check: if rng.gen_bool(0.5) { 0.3 } else { 0.0 },
            breaker_threshold: rng.gen_range(1..=3),
            breaker_cooldown: secs(5),
            // Storms empty the grid for long spells; that failure has its own test.
            no_peer_grace: secs(365 * 24 * 3600),
            ..SchedulerConfig::default()
        };
        let costs = (0..30).map(|_| rng.gen_range(1..100)).collect();
        let mut h = Harness::new(config, costs);
        let liars = [5u32, 6];
        let kinds = [
            FailureKind::Timeout,
            FailureKind::Transport,
            FailureKind::Refused,
            FailureKind::BadHash,
        ];
        for _ in 0..600 {
            let peer = rng.gen_range(0..8u32);
            match rng.gen_range(0..10) {
                0 => {
                    h.ev(Event::PeerJoined {
                        peer,
                        score: rng.gen_range(0.5..50.0),
                        trusted: peer == 0,
                        weight: None,
                    });
                }
                1 => {
                    h.ev(Event::PeerLeft { peer });
                }
                2 if !h.working.is_empty() => {
                    let (p, c) = h.working[rng.gen_range(0..h.working.len())];
                    h.fail(p, c, kinds[rng.gen_range(0..kinds.len())]);
                }
                3 => {
                    h.now += Duration::from_millis(rng.gen_range(0..60_000));
                    h.ev(Event::Tick);
                }
                4 => {
                    // Unsolicited or stale answers, honest or not (the trusted
                    // worker is honest by definition).
                    let c = rng.gen_range(0..30);
                    let honest = peer == 0 || rng.gen_bool(0.5);
                    let r = if honest { good(c) } else { lie(peer, c) };
                    h.done(peer, c, r);
                }
                _ if !h.working.is_empty() => {
                    let (p, c) = h.working[rng.gen_range(0..h.working.len())];
                    h.now += Duration::from_millis(rng.gen_range(0..2_000));
                    let r = if liars.contains(&p) {
                        lie(p, c)
                    } else {
                        good(c)
                    };
                    h.done(p, c, r);
                }
                _ => {}
            }
            h.s.check_invariants();
            if h.s.outcome().is_some() {
                break;
            }
        }
        if h.s.outcome().is_none() {
            // The storm is over: everyone but the trusted worker leaves; it finishes.
            h.join_trusted(0, 10.0);
            for p in 1..8 {
                h.ev(Event::PeerLeft { peer: p });
            }
            h.run(&[]);
            h.s.check_invariants();
        }
        assert_eq!(h.s.outcome(), Some(Outcome::Complete), "seed {seed}");
        if replicas >= 2 {
            for c in 0..30 {
                assert_eq!(
                    h.s.verified_result(c),
                    Some(good(c)),
                    "seed {seed} chunk {c}"
                );
            }
        }
    }
}
