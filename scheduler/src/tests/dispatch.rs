//! Handing out work: the weighted first split, pulling, deadlines, breakers,
//! speculation, peers lost mid-chunk.

use super::*;

/// Fine chunks: the pipeline is sized by speed, so the first split follows the scores.
fn fine_config() -> SchedulerConfig {
    SchedulerConfig {
        max_in_flight: 1000,
        ..SchedulerConfig::default()
    }
}

#[test]
fn first_assignment_is_weighted_by_score_and_hand_weights_override() {
    let mut h = Harness::pool(fine_config(), vec![1; 1000]);
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
    // Each peer works on a run of consecutive chunks of its own: the first from the
    // start, each next one from the middle of what is pending (on a job this large, the
    // middle of the pending range).
    assert_eq!(assigned(&a, 1), (0..20).collect::<Vec<_>>());
    assert_eq!(assigned(&b, 2), (509..569).collect::<Vec<_>>());
    assert_eq!(assigned(&c, 3), (569..579).collect::<Vec<_>>());
}

#[test]
fn a_peer_goes_on_with_the_next_chunk_and_jumps_when_its_run_is_taken() {
    let mut h = Harness::pool(SchedulerConfig::default(), vec![100; 8]);
    let a = h.join(1, 10.0);
    assert_eq!(assigned(&a, 1), vec![0, 1]);
    let b = h.join(2, 10.0);
    assert_eq!(
        assigned(&b, 2),
        vec![5, 6],
        "the middle of the free run 2..=7"
    );
    h.now = secs(10);
    assert_eq!(assigned(&h.done(1, 0, good(0)), 1), vec![2]);
    assert_eq!(assigned(&h.done(2, 5, good(5)), 2), vec![7]);
    h.now = secs(20);
    assert_eq!(assigned(&h.done(1, 1, good(1)), 1), vec![3]);
    // Peer 2's run ends at the last chunk: it jumps into what is left.
    assert_eq!(assigned(&h.done(2, 6, good(6)), 2), vec![4]);
    // A retry goes before any run.
    h.now = secs(30);
    let out = h.ev(Event::ChunkFailed {
        peer: 1,
        chunk: 2,
        kind: FailureKind::Transport,
    });
    assert!(assigned(&out, 1).is_empty() && assigned(&out, 2).is_empty());
    assert_eq!(assigned(&h.done(2, 7, good(7)), 2), vec![2]);
}

#[test]
fn the_small_last_chunks_go_out_after_all_others_largest_first() {
    // A tapered plan: six chunks, then 25, 50 and 25. Chunk 1 costs 80 (like a band at
    // the image's edge: not small) and chunk 2 is small but not at the end: both are
    // ordinary chunks.
    let mut costs = vec![100, 80, 30, 100, 100, 100, 25, 50, 25];
    let mut h = Harness::pool(SchedulerConfig::default(), costs.clone());
    let a = h.join(1, 10.0);
    assert_eq!(assigned(&a, 1), vec![0, 1]);
    let b = h.join(2, 10.0);
    assert_eq!(
        assigned(&b, 2),
        vec![4, 5],
        "the middle of the free run 2..=5"
    );
    h.now = secs(10);
    assert_eq!(assigned(&h.done(1, 0, good(0)), 1), vec![2]);
    // Past peer 2's run lie only small chunks: it jumps back to the last full one.
    assert_eq!(assigned(&h.done(2, 4, good(4)), 2), vec![3]);
    // Then only the tail is left, and it goes largest first.
    assert_eq!(assigned(&h.done(2, 5, good(5)), 2), vec![7]);
    assert_eq!(assigned(&h.done(1, 1, good(1)), 1), vec![6]);
    assert_eq!(assigned(&h.done(1, 2, good(2)), 1), vec![8]);
    // A plan of equal chunks has no tail.
    costs.fill(100);
    let mut h = Harness::pool(SchedulerConfig::default(), costs);
    assert_eq!(assigned(&h.join(1, 10.0), 1), vec![0, 1]);
}

#[test]
fn near_the_end_a_peer_holds_only_its_least_pipeline() {
    // 2 s of pipeline at 200 units/s is 4 chunks of 100 in flight.
    let mut h = Harness::pool(SchedulerConfig::default(), vec![100; 10]);
    assert_eq!(assigned(&h.join(1, 200.0), 1), vec![0, 1, 2, 3]);
    assert_eq!(assigned(&h.join(2, 200.0), 2), vec![7, 8, 9, 5]);
    // Two chunks are left for two peers: the endgame. A peer with two or more in
    // flight takes no more (it would have kept four), so the last chunks wait for
    // whoever is about to be free.
    h.now = secs(1);
    assert!(assigned(&h.done(1, 0, good(0)), 1).is_empty());
    assert!(assigned(&h.done(1, 1, good(1)), 1).is_empty());
    assert_eq!(assigned(&h.done(1, 2, good(2)), 1), vec![4]);

    // Only the tail left (three small chunks for two peers): the same. The mean cost
    // is 80, so a pipeline holds 5 chunks; peer 2 stops at 3 when the tail is reached.
    let mut costs = vec![100; 8];
    costs.extend([40, 20, 20]);
    let mut h = Harness::pool(SchedulerConfig::default(), costs);
    assert_eq!(assigned(&h.join(1, 200.0), 1), vec![0, 1, 2, 3, 4]);
    assert_eq!(assigned(&h.join(2, 200.0), 2), vec![6, 7, 5]);
    h.now = secs(1);
    for chunk in 0..3 {
        assert!(assigned(&h.done(1, chunk, good(chunk)), 1).is_empty());
    }
    assert_eq!(assigned(&h.done(1, 3, good(3)), 1), vec![8]);
}

#[test]
fn peers_pull_one_chunk_per_answer() {
    let mut h = Harness::pool(SchedulerConfig::default(), vec![100; 10]);
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
    let mut h = Harness::pool(config, vec![100; 4]);
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
    // The middle of the free run 2..=3 first (peer 1 goes on into 2), then what is left.
    assert_eq!(assigned(&b, 2), vec![3, 2]);
    h.now = secs(10);
    h.done(2, 3, good(3));
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
    let mut h = Harness::pool(config, vec![10; 20]);
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
    let mut h = Harness::pool(SchedulerConfig::default(), vec![100; 3]);
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
    let mut h = Harness::pool(SchedulerConfig::default(), vec![100; 3]);
    let fast = h.join(1, 100.0);
    assert_eq!(assigned(&fast, 1), vec![0, 1]);
    let slow = h.join(2, 1.0);
    assert_eq!(assigned(&slow, 2), vec![2]);
    // The slow peer is idle below its pipeline, but duplicating the fast peer's
    // chunks (1–2 s left) would take it 100 s more.
    assert_eq!(h.s.progress().speculative, 0);
}

#[test]
fn a_peer_lost_mid_chunk_gives_its_chunks_back_without_a_breaker_failure() {
    let mut h = Harness::pool(SchedulerConfig::default(), vec![10; 4]);
    let a = h.join(1, 10.0);
    assert_eq!(assigned(&a, 1), vec![0, 1]);
    let b = h.join(2, 10.0);
    // The middle of the free run 2..=3 first (peer 1 goes on into 2), then what is left.
    assert_eq!(assigned(&b, 2), vec![3, 2]);
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
fn answers_arriving_together_measure_throughput_not_infinity() {
    // A worker running its two chunks side by side answers both after 10 s.
    let mut h = Harness::pool(SchedulerConfig::default(), vec![100; 10]);
    let a = h.join(1, 10.0);
    assert_eq!(assigned(&a, 1), vec![0, 1]);
    h.now = secs(10);
    h.done(1, 0, good(0));
    h.now = secs(10) + Duration::from_millis(1);
    h.done(1, 1, good(1));
    let speed = h.s.peer_stats(&1).and_then(|s| s.measured_speed);
    // 200 units in ~10 s: about 20 units/s (the moving average gets there over a few
    // answers), not the 30,000 a per-answer sample of 100 units in 1 ms would give.
    assert!(
        speed.is_some_and(|v| (10.0..=30.0).contains(&v)),
        "{speed:?}"
    );
}

#[test]
fn a_peer_with_several_slots_gets_one_more_chunk_than_it_runs() {
    let mut h = Harness::pool(SchedulerConfig::default(), vec![100; 20]);
    let a = h.join(1, 40.0);
    assert_eq!(assigned(&a, 1).len(), 2);
    let out = h.ev(Event::PeerSlots { peer: 1, slots: 4 });
    assert_eq!(assigned(&out, 1).len(), 3, "topped up to 4 + 1");
    // One chunk runs on one of four slots: 100 units at 10 units/s, not 40.
    let deadline = out
        .iter()
        .find_map(|x| match x {
            Action::Assign { deadline, .. } => Some(*deadline),
            _ => None,
        })
        .expect("assigned");
    assert_eq!(
        deadline,
        secs(30),
        "3 × 10 s, as for a lone chunk on one slot"
    );
    assert!(
        h.ev(Event::PeerSlots { peer: 9, slots: 4 }).is_empty(),
        "unknown peer"
    );
}
