//! Earned trust: newcomers checked until they have a record, audits after it, bans
//! only on the trusted worker's word, one vote per host, strangers' failures not
//! poisoning a job.

use super::*;

fn standing(h: &mut Harness, peer: u32, host: u64, vouched: u32) {
    h.ev(Event::PeerStanding {
        peer,
        host,
        vouched,
    });
}

fn confirmed(actions: &[Action<u32>]) -> Vec<(u32, ChunkIndex)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Confirmed { peer, chunk } => Some((*peer, *chunk)),
            _ => None,
        })
        .collect()
}

fn how(actions: &[Action<u32>], chunk: ChunkIndex) -> Option<VerifiedBy> {
    actions.iter().find_map(|a| match a {
        Action::Verified { chunk: c, how, .. } if *c == chunk => Some(*how),
        _ => None,
    })
}

#[test]
fn a_newcomers_result_waits_for_the_local_check_and_counts_towards_its_record() {
    let config = SchedulerConfig {
        min_in_flight: 1,
        speculative_copies: 0,
        ..SchedulerConfig::default()
    };
    let mut h = Harness::new(config, vec![10; 2]);
    let out = h.join(1, 10.0);
    assert_eq!(assigned(&out, 1), vec![0, 1]);
    let t = h.join_trusted(9, 10.0);
    assert!(assigned(&t, 9).is_empty());
    h.now = secs(1);
    let out = h.done(1, 0, good(0));
    assert!(verified(&out).is_empty(), "a stranger's word is not enough");
    assert_eq!(h.s.progress().checks, 1);
    assert_eq!(assigned(&out, 9), vec![0], "this machine checks it");
    let out = h.done(9, 0, good(0));
    assert_eq!(how(&out, 0), Some(VerifiedBy::Local));
    assert_eq!(confirmed(&out), vec![(1, 0)]);
    let stats = h.s.peer_stats(&1).unwrap();
    assert_eq!((stats.vouched, stats.confirmed, stats.believed), (1, 1, 0));
}

#[test]
fn a_newcomer_that_lies_from_its_first_result_never_gets_a_wrong_chunk_in() {
    let config = SchedulerConfig {
        min_in_flight: 4,
        ..SchedulerConfig::default()
    };
    let mut h = Harness::new(config, vec![10; 8]);
    h.join_trusted(9, 10.0);
    h.join(1, 10.0);
    let all = h.run(&[1]);
    assert!(complete(&all));
    for (chunk, result) in verified(&all) {
        assert_eq!(result, good(chunk), "chunk {chunk} verified wrong");
    }
    let bans: Vec<_> = all
        .iter()
        .filter_map(|a| match a {
            Action::PeerBanned {
                peer,
                chunk,
                claimed,
                settled,
            } => Some((*peer, *chunk, *claimed, *settled)),
            _ => None,
        })
        .collect();
    assert_eq!(bans.len(), 1, "banned once, on its first checked result");
    let (peer, chunk, claimed, settled) = bans[0];
    assert_eq!(peer, 1);
    assert_eq!(
        (claimed, settled),
        (lie(1, chunk), good(chunk)),
        "the evidence"
    );
}

#[test]
fn a_peer_is_believed_after_ten_checked_results_and_audited_after_that() {
    let config = SchedulerConfig {
        min_in_flight: 2,
        max_in_flight: 2,
        audit_seed: 42,
        ..SchedulerConfig::default()
    };
    let chunks = 2000;
    let mut h = Harness::new(config, vec![10; chunks]);
    h.join_trusted(9, 0.001);
    h.join(1, 1000.0);
    let all = h.run(&[]);
    assert!(complete(&all));
    let stats = h.s.peer_stats(&1).unwrap();
    let answered = stats.confirmed + stats.believed;
    assert!(answered > 500, "the peer did many chunks: {answered}");
    // Ten checks to earn trust, then about one in ten.
    let expected = 10.0 + 0.1 * (answered - 10) as f64;
    let checks = h.s.progress().checks as f64;
    assert!(
        (expected * 0.75..expected * 1.25).contains(&checks),
        "{checks} checks for {answered} results (expected about {expected})"
    );
    assert_eq!(stats.confirmed as f64, checks, "every check confirmed it");
}

#[test]
fn a_trusted_peer_that_turns_is_caught_and_its_unconfirmed_results_are_redone() {
    let config = SchedulerConfig {
        min_in_flight: 2,
        max_in_flight: 2,
        audit_seed: 7,
        ..SchedulerConfig::default()
    };
    let chunks = 400;
    let mut h = Harness::new(config, vec![10; chunks]);
    h.join_trusted(9, 0.001);
    h.join(1, 1000.0);
    standing(&mut h, 1, 1, 50);
    let all = h.run(&[1]);
    assert!(complete(&all));
    for c in 0..chunks as u32 {
        assert_eq!(h.verified_result(c), Some(good(c)), "chunk {c}");
    }
    let stats = h.s.peer_stats(&1).unwrap();
    assert!(stats.banned);
    let believed_wrong = verified(&all)
        .iter()
        .filter(|(c, r)| *r != good(*c))
        .count();
    let revoked = all
        .iter()
        .filter(|a| matches!(a, Action::Revoked { .. }))
        .count();
    assert_eq!(
        believed_wrong, revoked,
        "every wrong result it got in is withdrawn"
    );
    assert!(
        believed_wrong < 50,
        "caught within 50 results at a 10 % audit rate (it got {believed_wrong} in first)"
    );
}

#[test]
fn one_host_with_many_keys_is_one_vote() {
    let config = SchedulerConfig {
        replicas: 2,
        min_in_flight: 1,
        trust: Trust::All,
        ..SchedulerConfig::default()
    };
    let mut h = Harness::new(config, vec![10; 1]);
    h.join(1, 10.0);
    standing(&mut h, 1, 7, 0);
    h.join(2, 10.0);
    standing(&mut h, 2, 7, 0);
    h.now = secs(1);
    // Two keys of one host agree on a lie: one vote, not two.
    h.done(1, 0, lie(7, 0));
    let out = h.done(2, 0, lie(7, 0));
    assert!(
        verified(&out).is_empty(),
        "one host cannot settle replicas 2"
    );
    let out = h.join(3, 10.0);
    assert_eq!(assigned(&out, 3), vec![0], "another host is asked");
    standing(&mut h, 3, 8, 0);
    let out = h.done(3, 0, good(0));
    assert!(verified(&out).is_empty(), "one host against one: a tie");
    h.join(4, 10.0);
    standing(&mut h, 4, 9, 0);
    let all = h.run(&[]);
    assert_eq!(h.verified_result(0), Some(good(0)));
    let bans = banned(&all);
    assert!(bans.contains(&(1, 0)) && bans.contains(&(2, 0)));
}

#[test]
fn a_disagreement_is_settled_by_the_local_worker_not_by_a_strangers_word() {
    let config = SchedulerConfig {
        replicas: 2,
        min_in_flight: 1,
        ..SchedulerConfig::default()
    };
    let mut h = Harness::new(config, vec![10; 1]);
    h.join(1, 10.0);
    standing(&mut h, 1, 1, 1000);
    h.join(2, 10.0);
    standing(&mut h, 2, 2, 0);
    // This machine joins with nothing left to hand out.
    let t = h.join_trusted(9, 10.0);
    assert!(assigned(&t, 9).is_empty());
    h.now = secs(1);
    // The peer with a long record lies; the newcomer is right.
    let out = h.done(1, 0, lie(1, 0));
    assert!(verified(&out).is_empty());
    let out = h.done(2, 0, good(0));
    assert!(
        verified(&out).is_empty(),
        "a disagreement waits for this machine"
    );
    assert!(
        banned(&out).is_empty(),
        "nobody is banned on a stranger's word"
    );
    assert_eq!(assigned(&out, 9), vec![0], "this machine settles it");
    let out = h.done(9, 0, good(0));
    assert_eq!(verified(&out), vec![(0, good(0))]);
    assert_eq!(banned(&out), vec![(1, 0)]);
    assert_eq!(confirmed(&out), vec![(2, 0)]);
    assert!(complete(&out));
}

#[test]
fn strangers_failing_a_chunk_do_not_fail_a_job_this_machine_can_compute() {
    let config = SchedulerConfig {
        min_in_flight: 1,
        max_in_flight: 1,
        ..SchedulerConfig::default()
    };
    let mut h = Harness::new(config, vec![10; 2]);
    for p in 1..=3 {
        h.join(p, 1000.0);
    }
    h.join_trusted(9, 0.01);
    // Three fake identities fail whatever they get.
    let mut all = Vec::new();
    for _ in 0..20 {
        let Some(&(peer, chunk)) = h.working.iter().find(|w| w.0 != 9) else {
            break;
        };
        h.now += Duration::from_millis(10);
        all.extend(h.fail(peer, chunk, FailureKind::Kernel));
    }
    assert!(
        !all.iter().any(|a| matches!(a, Action::JobFailed { .. })),
        "three strangers cannot fail the job"
    );
    all.extend(h.run(&[]));
    assert!(complete(&all));
    assert_eq!(h.verified_result(0), Some(good(0)));
    assert_eq!(h.verified_result(1), Some(good(1)));
}

#[test]
fn without_a_trusted_worker_an_unverifiable_result_fails_the_job_with_its_reason() {
    let mut h = Harness::new(SchedulerConfig::default(), vec![10; 1]);
    h.join(1, 10.0);
    h.now = secs(1);
    let out = h.done(1, 0, good(0));
    assert!(out.contains(&Action::JobFailed {
        reason: JobFailure::Unverifiable { chunk: 0 }
    }));
}

#[test]
fn a_trusted_worker_that_only_checks_computes_no_ordinary_chunk() {
    let config = SchedulerConfig {
        trusted_checks_only: true,
        min_in_flight: 2,
        ..SchedulerConfig::default()
    };
    let mut h = Harness::new(config, vec![10; 6]);
    let t = h.join_trusted(9, 1000.0);
    assert!(assigned(&t, 9).is_empty());
    h.join(1, 10.0);
    let all = h.run(&[]);
    assert!(complete(&all));
    // Every chunk was computed by the peer and checked here (it has no record), and
    // nothing else: no speculative duplicate either.
    assert_eq!(h.s.peer_stats(&1).unwrap().confirmed, 6);
    assert_eq!(h.s.progress().checks, 6);
    assert_eq!(h.s.peer_stats(&9).unwrap().chunks_done, 6);
}
