//! Believing results: replicas and majority, the trusted worker, bans with re-check,
//! spot checks, unsolicited answers.

use super::*;

#[test]
fn replicas_settle_by_majority_and_ban_the_minority() {
    let config = SchedulerConfig {
        replicas: 2,
        min_in_flight: 1,
        ..SchedulerConfig::default()
    };
    let mut h = Harness::pool(config, vec![10; 1]);
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
    assert!(banned(&out).contains(&(2, 0)));
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
    let mut h = Harness::pool(config, vec![10; 2]);
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
    assert!(banned(&out).contains(&(1, 0)));
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
    let mut h = Harness::pool(config, vec![10; 4]);
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
    assert!(banned(&out).contains(&(1, 0)));
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
        assert_eq!(h.verified_result(c), Some(good(c)));
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
    let mut h = Harness::pool(config, vec![10; 1]);
    h.join_trusted(9, 0.001); // too slow to be given ordinary work first
    let out = h.join(1, 10.0);
    assert_eq!(assigned(&out, 1), vec![0]);
    h.now = secs(1);
    let out = h.done(1, 0, lie(1, 0));
    assert!(!complete(&out), "the job waits for the spot check");
    let all = h.run(&[]);
    assert!(complete(&all));
    assert_eq!(h.verified_result(0), Some(good(0)));
    assert_eq!(h.s.peer_stats(&1).map(|s| s.banned), Some(true));
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
    let mut h = Harness::pool(config, vec![10; 1]);
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

#[test]
fn an_answer_to_a_chunk_never_sent_is_ignored() {
    let mut h = Harness::pool(SchedulerConfig::default(), vec![10; 4]);
    let a = h.join(1, 10.0);
    assert_eq!(assigned(&a, 1), vec![0, 1]);
    h.join(2, 10.0);
    // Peer 1 was never sent chunk 2 (peer 2 was): its "answer" settles nothing.
    assert!(h.done(1, 2, lie(1, 2)).is_empty());
    assert_eq!(h.verified_result(2), None);
    assert_eq!(h.s.peer_stats(&1).map(|s| s.chunks_done), Some(0));
}
