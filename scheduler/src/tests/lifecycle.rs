//! A job's life as a whole: finishing on the trusted worker alone, failing for want of
//! peers or on a poisoned chunk, bad configurations, stray events.

use super::*;

#[test]
fn the_job_finishes_on_the_trusted_worker_when_every_remote_dies() {
    let config = SchedulerConfig {
        replicas: 2,
        ..SchedulerConfig::default()
    };
    let mut h = Harness::pool(config, vec![10; 50]);
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
    let mut h = Harness::pool(config, vec![10; 30]);
    h.join_trusted(0, 10.0);
    for p in 1..=6 {
        h.join(p, 10.0);
    }
    let all = h.run(&[1, 2, 3, 4, 5, 6]);
    assert!(complete(&all));
    for c in 0..30 {
        assert_eq!(h.verified_result(c), Some(good(c)), "chunk {c}");
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
    let mut h = Harness::pool(SchedulerConfig::default(), vec![10; 2]);
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
    let mut h = Harness::pool(config, vec![10; 2]);
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
    let mut h = Harness::pool(SchedulerConfig::default(), Vec::new());
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
    let mut h = Harness::pool(SchedulerConfig::default(), vec![10; 2]);
    assert!(h.done(7, 0, good(0)).is_empty());
    h.join(1, 10.0);
    assert!(h.done(1, 99, good(0)).is_empty());
    assert!(h.fail(1, 99, FailureKind::Kernel).is_empty());
    assert_eq!(h.s.progress().verified, 0);
}

#[test]
fn a_finished_chunk_keeps_no_spare_room() {
    // A chunk in play keeps its votes and whom it was sent to with no room for more,
    // and no room for copies once none is out; a settled one that nothing but a ban
    // can change gives up its state.
    let config = SchedulerConfig {
        replicas: 2,
        ..SchedulerConfig::default()
    };
    let mut h = Harness::pool(config, vec![10; 40]);
    let mut first = h.join_trusted(0, 1.0);
    for p in 1..=3 {
        first.extend(h.join(p, 100.0));
    }
    assert!(!assigned(&first, 1).is_empty());
    assert!(complete(&h.run(&[])));
    for (i, state) in &h.s.chunks {
        assert!(state.verified.is_some(), "chunk {i}");
        assert_eq!(state.copies.capacity(), 0, "chunk {i}'s copies");
        assert_eq!(
            state.votes.capacity(),
            state.votes.len(),
            "chunk {i}'s votes"
        );
        assert_eq!(state.sent_to.capacity(), state.sent_to.len(), "chunk {i}");
        assert!(!state.votes.is_empty(), "chunk {i}");
    }
    // Only chunks some cancelled copy may still answer are left in play.
    let awaited =
        h.s.chunks
            .values()
            .filter(|c| !c.awaited.is_empty())
            .count();
    assert_eq!(h.s.chunks.len(), awaited, "{:?}", h.s.footprint());
    for c in 0..40 {
        assert_eq!(h.s.chunk_view(c), Some(ChunkView::Verified));
    }
}
