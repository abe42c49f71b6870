//! The simulator on small cases: jobs complete, no wrong result survives, the figures
//! are consistent and reproducible.

use super::*;

fn small(peers: u32, chunks: u32) -> SimConfig {
    SimConfig {
        peers,
        chunks,
        ..SimConfig::default()
    }
}

#[test]
fn a_healthy_grid_completes_near_the_ideal() {
    let r = run(&small(20, 500)).expect("runs");
    assert!(r.completed, "{r}");
    assert_eq!(r.wrong_accepted, 0);
    // The ideal is a bound but for its last-chunk term: never far below it.
    assert!(r.makespan_ratio > 0.95, "{r}");
    assert!(r.makespan_ratio < 1.5, "{r}");
}

#[test]
fn dying_and_lying_peers_with_replicas_leave_no_wrong_result() {
    for seed in 1..=5 {
        let config = SimConfig {
            fail: 0.3,
            byzantine: 0.2,
            replicas: 2,
            seed,
            ..small(30, 400)
        };
        let r = run(&config).expect("runs");
        assert!(r.completed, "seed {seed}: {r}");
        assert_eq!(r.wrong_accepted, 0, "seed {seed}: {r}");
        assert_eq!(r.honest_banned, 0, "seed {seed}: {r}");
        assert!(r.lying_peers == 0 || r.liars_banned > 0, "seed {seed}: {r}");
    }
}

#[test]
fn spot_checks_catch_liars_without_replicas() {
    let config = SimConfig {
        byzantine: 0.3,
        lie_rate: 1.0,
        spot_check: 0.2,
        ..small(10, 300)
    };
    let r = run(&config).expect("runs");
    assert!(r.completed, "{r}");
    assert_eq!(r.wrong_accepted, 0, "{r}");
    assert!(r.revoked > 0, "accepted lies were withdrawn: {r}");
}

#[test]
fn without_checks_lies_get_through() {
    // The control for the tests around it: they are not vacuous. A trusted pool
    // (`--trust all`) checks nothing.
    let mut config = SimConfig {
        byzantine: 0.3,
        lie_rate: 1.0,
        ..small(10, 300)
    };
    config.scheduler.trust = crate::Trust::All;
    let r = run(&config).expect("runs");
    assert!(r.completed, "{r}");
    assert!(r.wrong_accepted > 0, "{r}");
}

#[test]
fn earned_trust_catches_peers_that_turn_liar_within_fifty_answers() {
    // Every peer starts with a record (trust earned in earlier jobs); a fifth of them
    // now lie on every chunk.
    for seed in 1..=5 {
        let config = SimConfig {
            byzantine: 0.2,
            lie_rate: 1.0,
            seed,
            ..small(40, 2000)
        };
        let r = run(&config).expect("runs");
        assert!(r.completed, "seed {seed}: {r}");
        assert_eq!(r.wrong_accepted, 0, "seed {seed}: {r}");
        assert_eq!(r.honest_banned, 0, "seed {seed}: {r}");
        assert_eq!(r.liars_banned, r.lying_peers, "seed {seed}: {r}");
        assert_eq!(r.liars_banned_after_50, 0, "seed {seed}: {r}");
    }
}

#[test]
fn newcomers_that_lie_are_banned_on_their_first_checked_result() {
    let config = SimConfig {
        byzantine: 0.3,
        lie_rate: 1.0,
        new_peers: 1.0,
        ..small(10, 300)
    };
    let r = run(&config).expect("runs");
    assert!(r.completed, "{r}");
    assert_eq!(r.wrong_accepted, 0, "{r}");
    assert_eq!(
        r.wrong_ever_verified, 0,
        "nothing of theirs was ever believed: {r}"
    );
    assert_eq!(r.liars_banned, r.lying_peers, "{r}");
}

#[test]
fn a_sybil_group_on_one_host_cannot_outvote_replicas() {
    // Liars in groups of four keys on one host, agreeing on the same wrong bytes, in
    // a trusted pool where replicas are the only defence.
    for seed in 1..=3 {
        let mut config = SimConfig {
            byzantine: 0.4,
            lie_rate: 1.0,
            sybil: 4,
            replicas: 2,
            seed,
            ..small(30, 300)
        };
        config.scheduler.trust = crate::Trust::All;
        let r = run(&config).expect("runs");
        assert!(r.completed, "seed {seed}: {r}");
        assert_eq!(r.wrong_accepted, 0, "seed {seed}: {r}");
        assert_eq!(r.honest_banned, 0, "seed {seed}: {r}");
    }
}

#[test]
fn the_local_worker_alone_finishes_when_every_remote_dies() {
    let config = SimConfig {
        fail: 1.0,
        replicas: 2,
        ..small(8, 100)
    };
    let r = run(&config).expect("runs");
    assert!(r.completed, "{r}");
    assert_eq!(r.wrong_accepted, 0);
    assert_eq!(r.dying_peers, 7);
}

#[test]
fn the_same_seed_gives_the_same_figures() {
    let config = SimConfig {
        fail: 0.2,
        byzantine: 0.1,
        replicas: 2,
        ..small(15, 200)
    };
    let a = run(&config).expect("runs");
    let b = run(&config).expect("runs");
    assert_eq!(a.makespan_s, b.makespan_s);
    assert_eq!(a.computed, b.computed);
    assert_eq!(a.assignments, b.assignments);
}

#[test]
fn the_json_line_has_the_promised_keys() {
    let r = run(&small(3, 10)).expect("runs");
    let json = r.to_json();
    assert!(!json.contains('\n'));
    for key in [
        "\"makespan_ratio\":",
        "\"wrong_accepted\":0,",
        "\"completed\":true,",
    ] {
        assert!(json.contains(key), "{key} in {json}");
    }
}

#[test]
fn bad_parameters_are_refused() {
    assert!(matches!(run(&small(0, 10)), Err(SimError::NoPeers)));
    let config = SimConfig {
        fail: 2.0,
        ..small(3, 10)
    };
    assert!(matches!(run(&config), Err(SimError::Fraction { .. })));
}

#[test]
fn one_cost_for_all_runs_as_the_list_of_it() {
    // A generated plan of one cost needs no list: `Costs::Same` must schedule exactly
    // as the list would, failures, lies, replicas and spot checks included.
    let config = SimConfig {
        fail: 0.2,
        byzantine: 0.1,
        replicas: 2,
        spot_check: 0.1,
        ..small(15, 400)
    };
    let mut rng = StdRng::seed_from_u64(config.seed);
    let mut world = world::World::generate(&config, &mut rng);
    world.costs = vec![12_000; config.chunks as usize];
    let report = |sched: Scheduler<u32>| {
        let spot_work = (0..config.chunks)
            .filter(|&c| sched.is_spot_checked(c))
            .map(|c| world.costs[c as usize])
            .sum();
        let measured = engine::run(&config, &world, sched);
        let mut report = SimReport::new(&config, &world, &measured, spot_work);
        // Real time is the one figure a seed does not fix.
        report.ns_per_event = 0.0;
        report.wall_s = 0.0;
        report
    };
    let each =
        report(Scheduler::new(scheduler_config(&config), world.costs.clone()).expect("valid"));
    let same = report(
        Scheduler::new(
            scheduler_config(&config),
            crate::Costs::Same {
                chunks: config.chunks,
                cost: 12_000,
            },
        )
        .expect("valid"),
    );
    assert!(each.completed, "{each}");
    assert_eq!(each, same);
}
