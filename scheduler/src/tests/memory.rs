//! The scheduler's memory follows the chunks in play, not the plan: fresh chunks are
//! ranges, settled ones are retired, a ban still reaches a retired result, and chunks
//! an earlier run settled are never handed out.

use super::*;

impl Harness {
    /// A harness around a scheduler built by hand.
    fn of(s: Scheduler<u32>) -> Self {
        Harness {
            s,
            now: Duration::ZERO,
            working: Vec::new(),
            results: std::collections::HashMap::new(),
        }
    }
}

/// Runs a trusted pool of `peers` equal peers through `chunks` chunks, checking at
/// every step that only the chunks in play have a state; returns the most ranges one
/// peer's revocation sets held.
fn large_job(peers: u32, chunks: u32) -> usize {
    let mut h = Harness::pool(SchedulerConfig::default(), vec![10; chunks as usize]);
    for p in 1..=peers {
        h.join(p, 1000.0);
    }
    let mut steps = 0u32;
    let mut done = false;
    let mut ranges = 0;
    let mut most_live = 0;
    while let Some(&(peer, chunk)) = h.working.first() {
        steps += 1;
        assert!(steps < 2 * chunks, "no progress");
        h.now += Duration::from_millis(10);
        done |= complete(&h.done(peer, chunk, good(chunk)));
        let footprint = h.s.footprint();
        // In play: the copies out, plus the few settled chunks a cancelled copy may
        // still answer (speculation at the end).
        assert!(
            footprint.live_chunks <= h.working.len() + 32,
            "step {steps}: {footprint:?} with {} copies out",
            h.working.len()
        );
        assert!(footprint.fresh_ranges <= 8, "step {steps}: {footprint:?}");
        assert!(
            footprint.pending_entries <= 8,
            "step {steps}: {footprint:?}"
        );
        // Each peer's lists of voted and awaited chunks in play are pruned as they
        // outgrow twice the chunks in play at a push (within an event there can be a
        // few more in play than after it).
        most_live = most_live.max(footprint.live_chunks);
        let list_bound = peers as usize * (2 * (most_live + 4) + 64);
        assert!(
            footprint.voted_entries <= list_bound && footprint.awaited_entries <= list_bound,
            "step {steps}: {footprint:?}"
        );
        ranges = ranges.max(footprint.revocation_ranges_max);
    }
    assert!(done);
    assert_eq!(h.s.progress().verified, chunks);
    for c in [0, 1, chunks / 2, chunks - 1] {
        assert_eq!(h.s.chunk_view(c), Some(ChunkView::Verified));
        assert_eq!(h.verified_result(c), Some(good(c)));
    }
    ranges
}

#[test]
fn a_large_job_holds_state_only_for_the_chunks_in_play() {
    // Two peers work through runs of their own: a few ranges each.
    let ranges = large_job(2, 200_000);
    assert!(ranges <= 8, "{ranges} ranges");
}

#[test]
fn peers_that_leapfrog_hold_a_range_per_block() {
    // With more than RUN_SCAN_LIMIT pending, a peer whose run was taken jumps to the
    // middle of the whole pending range, not of the longest free run: two of three
    // equal peers land in one run and take turns at it in blocks of their pipeline
    // (32), so a peer's revocation sets hold one range per block it took.
    let chunks = 200_000;
    let ranges = large_job(3, chunks);
    assert!(ranges as u32 <= chunks / 64 + 8, "{ranges} ranges");
}

#[test]
fn a_ban_revokes_and_redoes_the_liars_retired_results() {
    // A trusted pool believes the liar; spot checks on the trusted worker (which
    // computes nothing else) catch it after many of its results were settled and
    // retired.
    let config = SchedulerConfig {
        trust: Trust::All,
        spot_check: 0.02,
        spot_check_seed: 3,
        trusted_checks_only: true,
        ..SchedulerConfig::default()
    };
    let chunks = 2_000u32;
    let mut h = Harness::new(config, vec![10; chunks as usize]);
    h.join_trusted(9, 1.0);
    h.join(1, 1000.0);
    let mut lies_settled = std::collections::BTreeSet::new();
    let mut revoked = std::collections::BTreeSet::new();
    let mut retired_at_ban = None;
    let mut all = Vec::new();
    while let Some(&(peer, chunk)) = h.working.first() {
        h.now += Duration::from_millis(100);
        let result = if peer == 1 {
            lie(1, chunk)
        } else {
            good(chunk)
        };
        let before = h.s.footprint();
        let out = h.done(peer, chunk, result);
        for action in &out {
            match action {
                Action::Verified { chunk, result, .. } if *result != good(*chunk) => {
                    lies_settled.insert(*chunk);
                }
                Action::Revoked { chunk } => {
                    revoked.insert(*chunk);
                }
                Action::PeerBanned { peer: 1, .. } => retired_at_ban = Some(before),
                _ => {}
            }
        }
        all.extend(out);
    }
    let retired_at_ban: Footprint = retired_at_ban.expect("the liar is caught");
    assert!(
        retired_at_ban.revocation_ranges > 0 && retired_at_ban.live_chunks < lies_settled.len(),
        "its results were retired before the ban: {retired_at_ban:?}, {} lies settled",
        lies_settled.len()
    );
    assert!(lies_settled.len() > 20, "{}", lies_settled.len());
    assert!(
        lies_settled.is_subset(&revoked),
        "every lie settled is revoked"
    );
    assert_eq!(
        h.s.footprint().revocation_ranges,
        0,
        "a banned peer backs nothing"
    );
    // Nobody but the checking worker is left; an honest peer joins and finishes.
    h.join(2, 1000.0);
    all.extend(h.run(&[]));
    assert!(complete(&all));
    for c in 0..chunks {
        assert_eq!(h.verified_result(c), Some(good(c)), "chunk {c}");
    }
    assert_eq!(h.s.progress().verified, chunks);
    assert_eq!(h.s.progress().banned_peers, 1);
}

#[test]
fn a_settled_chunk_that_awaits_a_peer_is_retired_when_the_peer_leaves() {
    // Peer 1's copy times out and the trusted worker settles the chunk: it stays in
    // play while peer 1 might still answer, and is retired once peer 1 leaves.
    let config = SchedulerConfig {
        trust: Trust::All,
        min_in_flight: 1,
        max_in_flight: 1,
        speculative_copies: 0,
        ..SchedulerConfig::default()
    };
    let mut h = Harness::new(config, vec![10; 3]);
    h.join_trusted(9, 10.0);
    let first = h.join(1, 10.0);
    let late = assigned(&first, 1)[0];
    h.tick_at(secs(3600));
    assert!(
        !h.working.contains(&(1, late)),
        "peer 1's copy timed out: {:?}",
        h.working
    );
    // The trusted worker answers until it has settled the chunk peer 1 held.
    while h.verified_result(late).is_none() {
        let &(peer, chunk) = h
            .working
            .iter()
            .find(|w| w.0 == 9)
            .expect("the trusted worker has work");
        h.now += Duration::from_millis(100);
        h.done(peer, chunk, good(chunk));
    }
    assert!(
        h.s.chunks.contains_key(&late),
        "a settled chunk that awaits an answer stays in play"
    );
    h.now += Duration::from_millis(100);
    h.ev(Event::PeerLeft { peer: 1 });
    assert!(
        !h.s.chunks.contains_key(&late),
        "retired once the peer it awaited left: {:?}",
        h.s.footprint()
    );
    let rest = h.run(&[]);
    assert!(complete(&rest), "{rest:?}");
}

#[test]
fn a_retired_result_two_hosts_backed_is_revoked_when_one_is_banned() {
    // Replicas 2: each of two agreeing hosts confirms the other; banning one leaves
    // one host behind the result, too few, as for a chunk in play.
    let config = SchedulerConfig {
        trust: Trust::All,
        replicas: 2,
        min_in_flight: 1,
        max_in_flight: 1,
        speculative_copies: 0,
        ..SchedulerConfig::default()
    };
    let mut h = Harness::new(config, vec![10; 3]);
    h.join(1, 10.0);
    h.join(2, 10.0);
    h.now = secs(1);
    let out = h.done(1, 0, good(0));
    assert!(verified(&out).is_empty());
    let out = h.done(2, 0, good(0));
    assert_eq!(verified(&out), vec![(0, good(0))]);
    assert!(!h.s.chunks.contains_key(&0), "chunk 0 is retired");
    // Peer 2 lies on chunk 1 against peer 3 and a trusted answer: it is banned.
    h.join(3, 10.0);
    h.join_trusted(9, 10.0);
    let rest = h.run(&[2]);
    assert!(banned(&rest).iter().any(|&(p, _)| p == 2), "{rest:?}");
    assert!(rest.contains(&Action::Revoked { chunk: 0 }), "{rest:?}");
    assert!(complete(&rest) || complete(&h.run(&[])));
    assert_eq!(h.verified_result(0), Some(good(0)));
}

#[test]
fn chunks_an_earlier_run_settled_are_never_handed_out() {
    let config = SchedulerConfig {
        trust: Trust::All,
        spot_check: 0.3,
        ..SchedulerConfig::default()
    };
    let done: Vec<ChunkIndex> = (0..30).chain(50..60).chain([99]).collect();
    let s = Scheduler::with_done(config.clone(), vec![10; 100], done.clone()).expect("valid");
    let spot_checks = (0..100)
        .filter(|c| !done.contains(c) && crate::verify::is_spot_checked(&config, *c))
        .count() as u32;
    assert_eq!(s.progress().total, 59);
    assert_eq!(s.progress().spot_checks, spot_checks);
    for &c in &done {
        assert_eq!(s.chunk_view(c), Some(ChunkView::Verified), "chunk {c}");
        assert!(!s.is_spot_checked(c));
    }
    assert_eq!(
        s.chunk_view(30),
        Some(ChunkView::Waiting { retried: false })
    );
    assert_eq!(s.chunk_view(100), None);
    assert_eq!(s.footprint().done_ranges, 3);
    let mut h = Harness::of(s);
    let mut all = h.join_trusted(0, 10.0);
    all.extend(h.join(1, 10.0));
    all.extend(h.run(&[]));
    assert!(complete(&all));
    let handed: std::collections::BTreeSet<ChunkIndex> = all
        .iter()
        .filter_map(|a| match a {
            Action::Assign { chunk, .. } => Some(*chunk),
            _ => None,
        })
        .collect();
    let todo: std::collections::BTreeSet<ChunkIndex> =
        (0..100).filter(|c| !done.contains(c)).collect();
    assert_eq!(handed, todo, "exactly the chunks to do");
    assert_eq!(h.s.progress().verified, 59);
    assert_eq!(h.s.progress().spot_checks_pending, 0);
    for c in 0..100 {
        assert_eq!(h.s.chunk_view(c), Some(ChunkView::Verified), "chunk {c}");
    }
}

#[test]
fn done_chunks_out_of_order_or_outside_the_plan_are_refused() {
    let config = SchedulerConfig::default();
    let err = |done: Vec<ChunkIndex>| {
        Scheduler::<u32>::with_done(config.clone(), vec![10; 10], done).err()
    };
    assert_eq!(
        err(vec![3, 2]),
        Some(ConfigError::DoneChunk {
            chunk: 2,
            chunks: 10
        })
    );
    assert_eq!(
        err(vec![4, 4]),
        Some(ConfigError::DoneChunk {
            chunk: 4,
            chunks: 10
        })
    );
    assert_eq!(
        err(vec![10]),
        Some(ConfigError::DoneChunk {
            chunk: 10,
            chunks: 10
        })
    );
    assert_eq!(err((0..10).collect()), None);
    let all_done = Scheduler::<u32>::with_done(config, vec![10; 10], 0..10).expect("valid");
    let mut h = Harness::of(all_done);
    assert!(complete(&h.join(1, 10.0)), "nothing left to do");
}

#[test]
fn one_cost_for_all_is_the_list_of_it() {
    let config = SchedulerConfig {
        trust: Trust::All,
        ..SchedulerConfig::default()
    };
    let same: Scheduler<u32> = Scheduler::new(
        config.clone(),
        Costs::Same {
            chunks: 50,
            cost: 7,
        },
    )
    .expect("valid");
    let each: Scheduler<u32> = Scheduler::new(config, vec![7; 50]).expect("valid");
    assert_eq!(same.mean_cost, each.mean_cost);
    assert_eq!(same.tail_from, each.tail_from);
    assert_eq!(same.progress(), each.progress());
    let (mut a, mut b) = (Harness::of(same), Harness::of(each));
    let mut run_a = a.join(1, 3.0);
    run_a.extend(a.join(2, 5.0));
    run_a.extend(a.run(&[]));
    let mut run_b = b.join(1, 3.0);
    run_b.extend(b.join(2, 5.0));
    run_b.extend(b.run(&[]));
    assert_eq!(run_a, run_b);
    assert!(complete(&run_a));
}
