//! Earned trust on real peers: a liar caught on its first result and banned across
//! jobs, trust earned in one job making the next one cheaper, a worker that turns liar
//! after earning trust caught by an audit, and a rerun with stronger settings
//! recomputing what a weaker run left in the result log.

use crate::common::*;
use idlegrid::grid::{self, GridConfig};
use idlegrid::trust::TrustBook;
use idlegrid::worker::FaultInjection;
use idlegrid_scheduler::Trust;

async fn run(node: &idlegrid::node::Node, job: grid::Job, config: GridConfig) -> grid::JobOutcome {
    tokio::time::timeout(TIMEOUT, grid::run_job(node, job, config))
        .await
        .expect("job timed out")
        .expect("job succeeds")
}

fn quiet(config: GridConfig) -> GridConfig {
    GridConfig {
        show_progress: false,
        ..config
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_liar_from_its_first_result_gets_nothing_in_and_stays_banned_in_the_next_job() {
    let plan = change_plan(128, 8, 64);
    let expected = plan.assemble(&local_results(&plan)).unwrap();
    let (workers, addrs) = workers(2, |i| {
        faulty(FaultInjection {
            lie: i == 0,
            ..FaultInjection::default()
        })
    })
    .await;
    let liar = workers[0].peer_id();
    let submitter = start(
        "trust-liar",
        false,
        idlegrid::worker::WorkerConfig::default(),
        addrs,
    )
    .await;
    let (job, _resident) = prepare(&submitter, &plan).await;
    // Earned trust, this machine only checking. (Computing at normal priority beside
    // workers at the lowest one, on a loaded machine it could finish every chunk before
    // the liar answered one, and the liar would go uncaught.)
    let outcome = run(
        &submitter,
        job,
        quiet(GridConfig {
            min_peers: 2,
            compute_locally: false,
            ..GridConfig::default()
        }),
    )
    .await;
    assert_eq!(
        assembled(&plan, &outcome),
        expected,
        "a lie reached the output"
    );
    assert_eq!(outcome.report.trust, "earned");
    let line = peer_line(&outcome.report, &liar.to_string());
    assert!(line.banned, "liar not banned: {:?}", outcome.report);
    assert_eq!(
        line.results_believed, 0,
        "nothing of the liar's was taken on trust"
    );
    let honest = peer_line(&outcome.report, &workers[1].peer_id().to_string());
    assert!(!honest.banned);
    // Checked until ten of its results were (earned trust's default); only later ones
    // may be believed.
    assert!(
        honest.results_believed == 0 || honest.results_confirmed >= 10,
        "a newcomer's first ten results are all checked: {honest:?}"
    );

    // The ban is on disk, with its evidence, and the next job does not use the liar.
    let book = TrustBook::open(submitter.data_dir());
    let ban = book.ban_of(&liar).expect("the ban is remembered");
    assert_ne!(ban.claimed, ban.settled);
    drop(book);
    let plan2 = change_plan(96, 8, 4);
    let expected2 = plan2.assemble(&local_results(&plan2)).unwrap();
    let (job2, _resident2) = prepare(&submitter, &plan2).await;
    // The defaults, this machine computing too. Only the honest worker counts now
    // (the probe of the banned one says why).
    let config = quiet(GridConfig {
        min_peers: 1,
        ..GridConfig::default()
    });
    let outcome2 = run(&submitter, job2, config).await;
    assert_eq!(assembled(&plan2, &outcome2), expected2);
    assert!(
        !outcome2
            .report
            .peers
            .iter()
            .any(|p| p.peer_id == liar.to_string()),
        "a banned peer takes no part: {:?}",
        outcome2.report
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn trust_earned_in_one_job_makes_the_next_one_cheaper() {
    let (workers, addrs) = workers(2, |_| idlegrid::worker::WorkerConfig::default()).await;
    let submitter = start(
        "trust-earned",
        false,
        idlegrid::worker::WorkerConfig::default(),
        addrs,
    )
    .await;
    // This machine only checks: every chunk is computed remotely.
    let config = quiet(GridConfig {
        min_peers: 2,
        compute_locally: false,
        ..GridConfig::default()
    });
    let plan = change_plan(96, 2, 1);
    let (job, _resident) = prepare(&submitter, &plan).await;
    let first = run(&submitter, job, config.clone()).await;
    assert_eq!(
        assembled(&plan, &first),
        plan.assemble(&local_results(&plan)).unwrap()
    );
    // Newcomers: each worker's first ten results are checked (then it has earned
    // trust, and is audited).
    for w in &workers {
        let line = peer_line(&first.report, &w.peer_id().to_string());
        assert!(
            line.results_confirmed >= line.chunks_done.min(10),
            "{line:?}"
        );
        assert_eq!(line.verified_in_a_row as u64, line.results_confirmed);
    }
    assert!(first.report.checks >= 10);

    let plan2 = change_plan(100, 2, 1);
    let (job2, _resident2) = prepare(&submitter, &plan2).await;
    let second = run(&submitter, job2, config).await;
    assert_eq!(
        assembled(&plan2, &second),
        plan2.assemble(&local_results(&plan2)).unwrap()
    );
    let chunks2 = plan2.chunks.len() as u64;
    assert!(
        second.report.checks * 2 < chunks2,
        "with a record, most results are believed: {} checks of {chunks2}: {:?}",
        second.report.checks,
        second.report
    );
    let believed: u64 = second.report.peers.iter().map(|p| p.results_believed).sum();
    assert!(believed > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rerun_with_stronger_settings_recomputes_what_a_trusted_pool_left() {
    let plan = change_plan(96, 8, 2);
    let expected = plan.assemble(&local_results(&plan)).unwrap();
    let (_workers, addrs) = workers(2, |_| idlegrid::worker::WorkerConfig::default()).await;
    let submitter = start(
        "trust-rerun",
        false,
        idlegrid::worker::WorkerConfig::default(),
        addrs,
    )
    .await;
    let (job, _resident) = prepare(&submitter, &plan).await;
    let pool = quiet(GridConfig {
        min_peers: 2,
        compute_locally: false,
        trust: Trust::All,
        ..GridConfig::default()
    });
    let first = run(&submitter, job.clone(), pool).await;
    assert_eq!(assembled(&plan, &first), expected);
    assert_eq!(first.report.checks, 0);

    let earned = quiet(GridConfig {
        min_peers: 2,
        compute_locally: false,
        ..GridConfig::default()
    });
    let second = run(&submitter, job.clone(), earned.clone()).await;
    assert_eq!(
        second.report.chunks_reused, 0,
        "unchecked results are not reused"
    );
    assert_eq!(assembled(&plan, &second), expected);

    let third = run(&submitter, job, earned).await;
    assert_eq!(
        third.report.chunks_reused,
        plan.chunks.len(),
        "verified results are"
    );
    assert_eq!(assembled(&plan, &third), expected);
}

/// A worker earns trust honestly in one job, then comes back under the same identity
/// and lies on every chunk: audits catch it, it is banned, and every lie it got in is
/// withdrawn (the mask equals the local run's).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_worker_that_turns_liar_after_earning_trust_is_caught_by_an_audit() {
    let (mut workers, addrs) = workers(1, |_| idlegrid::worker::WorkerConfig::default()).await;
    let submitter = start(
        "trust-turncoat",
        false,
        idlegrid::worker::WorkerConfig::default(),
        addrs,
    )
    .await;
    let honest_job = quiet(GridConfig {
        min_peers: 1,
        compute_locally: false,
        ..GridConfig::default()
    });
    let plan = change_plan(96, 2, 1);
    let (job, _resident) = prepare(&submitter, &plan).await;
    let first = run(&submitter, job, honest_job).await;
    let worker = workers.remove(0);
    let id = worker.peer_id();
    let earned = peer_line(&first.report, &id.to_string()).verified_in_a_row;
    assert!(earned >= 10, "it earned trust: {earned} verified in a row");

    // The same identity, now lying.
    let dir = worker.data_dir().to_path_buf();
    drop(worker);
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let turned = start_with(
        "trust-turncoat-again",
        true,
        faulty(FaultInjection {
            lie: true,
            ..FaultInjection::default()
        }),
        Vec::new(),
        |config| config.data_dir = dir,
    )
    .await;
    assert_eq!(turned.peer_id(), id);
    let addr = tokio::time::timeout(TIMEOUT, turned.listen_addrs())
        .await
        .unwrap()
        .unwrap()[0]
        .clone();
    submitter.client.dial(addr).await.unwrap();

    let plan2 = change_plan(160, 2, 1);
    let expected = plan2.assemble(&local_results(&plan2)).unwrap();
    let (job2, _resident2) = prepare(&submitter, &plan2).await;
    // This machine only checks, and the turned worker is weighted twenty times the
    // honest newcomer beside it, so it is sent most of the 80 chunks until it is
    // caught: the chance that none of its answers is audited is about 0.9^70. (A job
    // that sends a trusted liar only a few chunks can end with a few of its lies
    // believed and no audit drawn: earned trust bounds the share of a trusted peer's
    // lies that are believed, not what one job lets through.)
    let (honest, honest_addrs) =
        crate::common::workers(1, |_| idlegrid::worker::WorkerConfig::default()).await;
    submitter
        .client
        .dial(honest_addrs[0].clone())
        .await
        .unwrap();
    let second = run(
        &submitter,
        job2,
        quiet(GridConfig {
            min_peers: 2,
            compute_locally: false,
            weights: [(id, 20.0), (honest[0].peer_id(), 1.0)]
                .into_iter()
                .collect(),
            ..GridConfig::default()
        }),
    )
    .await;
    assert_eq!(
        assembled(&plan2, &second),
        expected,
        "a lie stayed in the output"
    );
    let line = peer_line(&second.report, &id.to_string());
    assert!(line.banned, "the turned worker is banned: {line:?}");
    // One result in ten at least is audited: more than 150 lies believed before one is
    // checked would have a chance of 0.9^150, about 1e-7.
    assert!(line.results_believed < 150, "{line:?}");
    println!(
        "a worker that turned after {earned} verified results: {} of its results believed before \
         the audit that caught it",
        line.results_believed
    );
}
