//! The grid end to end, in one process: real peers on loopback TCP, real protocols.
//! The most important property: a job's output is byte-identical to the local run,
//! whatever the peers did.

use std::time::Duration;

use crate::common::*;
use idlegrid::grid::{self, GridConfig};
use idlegrid::policy::Gate;
use idlegrid::worker::{FaultInjection, WorkerConfig};
use idlegrid_scheduler::Trust;

/// Runs a job to its end, within the test timeout.
async fn run(
    submitter: &idlegrid::node::Node,
    job: grid::Job,
    config: GridConfig,
) -> grid::JobOutcome {
    tokio::time::timeout(TIMEOUT, grid::run_job(submitter, job, config))
        .await
        .expect("job timed out")
        .expect("job succeeds")
}

/// Joins segments into an MP4 at `path` (checking each, as the assembler does) and
/// returns its bytes.
fn join_mp4(
    plan: &idlegrid_kernels::video::VideoPlan,
    path: &std::path::Path,
    segments: &[Vec<u8>],
) -> Vec<u8> {
    let mut assembler = idlegrid_kernels::video::Assembler::create(path, plan.assembly()).unwrap();
    for (i, segment) in segments.iter().enumerate() {
        assembler.push(i as u32, segment).unwrap();
    }
    let report = assembler.finish().unwrap();
    assert_eq!(report.frames as usize, plan.frames.len());
    std::fs::read(path).unwrap()
}

fn remote_chunks(report: &grid::JobReport) -> Vec<u64> {
    report
        .peers
        .iter()
        .filter(|p| p.role == grid::report::Role::Remote)
        .map(|p| p.chunks_done)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn distributed_output_equals_local_output() {
    let plan = change_plan(160, 8, 6);
    let expected = plan.assemble(&local_results(&plan)).unwrap();

    let (_workers, addrs) = workers(3, |_| WorkerConfig::default()).await;
    let submitter = start("submitter", false, WorkerConfig::default(), addrs).await;
    let (job, _resident) = prepare(&submitter, &plan).await;
    // Only the three workers compute (the submitter's own worker would finish a job
    // this small alone); the other tests mix in the local worker.
    let config = GridConfig {
        min_peers: 3,
        compute_locally: false,
        show_progress: false,
        ..GridConfig::default()
    };
    let outcome = run(&submitter, job, config).await;
    let mask = assembled(&plan, &outcome);
    assert_eq!(
        mask, expected,
        "distributed mask differs from the local one"
    );
    let remote = remote_chunks(&outcome.report);
    assert_eq!(
        remote.len(),
        3,
        "all three workers joined: {:?}",
        outcome.report
    );
    assert!(
        remote.iter().sum::<u64>() > 0,
        "remote peers computed nothing: {:?}",
        outcome.report
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lying_worker_is_caught_by_replicas_and_banned() {
    let plan = change_plan(128, 8, 4);
    let expected = plan.assemble(&local_results(&plan)).unwrap();

    let (workers, addrs) = workers(3, |i| {
        faulty(FaultInjection {
            lie: i == 0,
            ..FaultInjection::default()
        })
    })
    .await;
    let liar = workers[0].peer_id().to_string();
    let submitter = start("submitter", false, WorkerConfig::default(), addrs).await;
    let (job, _resident) = prepare(&submitter, &plan).await;
    // Only remote peers compute, so every chunk needs two of them to agree and the
    // liar's answers are votes (a trusted local result would settle chunks alone).
    let config = GridConfig {
        replicas: 2,
        ..remote_pool(3)
    };
    let outcome = run(&submitter, job, config).await;
    let mask = assembled(&plan, &outcome);
    assert_eq!(mask, expected, "a lie reached the output");
    let liar_report = peer_line(&outcome.report, &liar);
    assert!(liar_report.banned, "liar not banned: {:?}", outcome.report);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn worker_killed_mid_job_does_not_change_the_output() {
    let plan = change_plan(160, 4, 8);
    let expected = plan.assemble(&local_results(&plan)).unwrap();

    // The doomed worker benchmarks fast, then is slow, so it surely holds chunks when
    // it dies.
    let (mut workers, addrs) = workers(2, |i| match i {
        0 => slow_after_bench(Duration::from_secs(3), Gate::open()),
        _ => WorkerConfig::default().into(),
    })
    .await;
    let doomed = workers.remove(0);
    let doomed_id = doomed.peer_id().to_string();
    let submitter = start("submitter", false, WorkerConfig::default(), addrs).await;
    let (job, _resident) = prepare(&submitter, &plan).await;
    // Remote peers only: the submitter's own worker could finish this job before the
    // doomed worker holds a chunk.
    let config = remote_pool(2);
    // Killed as soon as it has fetched the inputs of a chunk it accepted.
    let pieces: Vec<_> = plan
        .chunks
        .iter()
        .flat_map(|c| c.inputs[1..].to_vec())
        .collect();
    let killer = tokio::spawn(async move {
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        while !pieces.iter().any(|cid| doomed.store.has(cid)) {
            assert!(tokio::time::Instant::now() < deadline, "never got a chunk");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        drop(doomed);
    });
    let outcome = run(&submitter, job, config).await;
    killer.await.unwrap();
    let mask = assembled(&plan, &outcome);
    assert_eq!(mask, expected);
    let dead = peer_line(&outcome.report, &doomed_id);
    assert!(
        dead.left,
        "the report shows the worker left: {:?}",
        outcome.report
    );
    assert_eq!(dead.chunks_done, 0, "{:?}", outcome.report);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slow_worker_gets_fewer_chunks() {
    let plan = change_plan(160, 4, 4);
    let expected = plan.assemble(&local_results(&plan)).unwrap();

    let (workers, addrs) = workers(2, |i| {
        faulty(FaultInjection {
            delay: if i == 0 {
                Duration::from_millis(400)
            } else {
                Duration::ZERO
            },
            ..FaultInjection::default()
        })
    })
    .await;
    let slow = workers[0].peer_id().to_string();
    let fast = workers[1].peer_id().to_string();
    let submitter = start("submitter", false, WorkerConfig::default(), addrs).await;
    let (job, _resident) = prepare(&submitter, &plan).await;
    let config = remote_pool(2);
    let outcome = run(&submitter, job, config).await;
    let mask = assembled(&plan, &outcome);
    assert_eq!(mask, expected);
    let chunks = |id: &str| {
        outcome
            .report
            .peers
            .iter()
            .find(|p| p.peer_id == id)
            .map_or(0, |p| p.chunks_done)
    };
    assert!(
        chunks(&slow) < chunks(&fast),
        "slow {} vs fast {}: {:?}",
        chunks(&slow),
        chunks(&fast),
        outcome.report
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn video_encoded_by_workers_equals_the_local_encode() {
    use idlegrid_kernels::video::{self, VideoSettings};

    let frames_dir = temp_dir("frames");
    let frames = video::write_sample_frames(&frames_dir, 36, 320, 180).unwrap();
    let settings = VideoSettings {
        segment_frames: 6,
        ..VideoSettings::default()
    };
    let plan = video::plan_frames(frames, settings).unwrap();
    let local: Vec<Vec<u8>> = plan
        .chunks
        .iter()
        .map(|chunk| video::encode_segment_files(&plan, chunk, &|| {}).unwrap())
        .collect();

    let (_workers, addrs) = workers(2, |_| WorkerConfig::default()).await;
    let submitter = start("submitter", false, WorkerConfig::default(), addrs).await;
    let (job, blobs) = idlegrid::jobs::video_job(&plan).unwrap();
    let _resident = idlegrid::commands::common::store_blobs(&submitter, blobs)
        .await
        .unwrap();
    let config = remote_pool(2);
    let outcome = run(&submitter, job, config).await;
    let segments = fetch_results(&outcome.results);
    assert_eq!(segments.len(), local.len());
    for (i, (remote, here)) in segments.iter().zip(&local).enumerate() {
        assert!(remote == here, "segment {i} encoded by a worker differs");
    }
    // And the joined MP4s are the same file.
    let out_dir = temp_dir("mp4");
    std::fs::create_dir_all(&out_dir).unwrap();
    assert_eq!(
        join_mp4(&plan, &out_dir.join("grid.mp4"), &segments),
        join_mp4(&plan, &out_dir.join("local.mp4"), &local)
    );
}

/// The distributed renderer's scenario: thousands of frames, a few peers, one of them
/// dying mid-way; the MP4 is identical to a local encode and plays (every segment is
/// checked by the assembler: SPS/PPS/IDR first, the planned frame count).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn renderer_scenario_thousands_of_frames_one_peer_dies() {
    use idlegrid_kernels::video::{self, VideoSettings};

    let frames_dir = temp_dir("render");
    let frames = video::write_sample_frames(&frames_dir, 2000, 64, 48).unwrap();
    let plan = video::plan_frames(
        frames,
        VideoSettings {
            segment_frames: 40,
            ..VideoSettings::default()
        },
    )
    .unwrap();
    let local: Vec<Vec<u8>> = plan
        .chunks
        .iter()
        .map(|chunk| video::encode_segment_files(&plan, chunk, &|| {}).unwrap())
        .collect();

    let (mut workers, addrs) = workers(3, |i| {
        faulty(FaultInjection {
            // The doomed worker benchmarks fast, then slows down, so it holds segments
            // when it dies.
            delay: if i == 0 {
                Duration::from_secs(2)
            } else {
                Duration::ZERO
            },
            delay_from_chunk: 1,
            ..FaultInjection::default()
        })
    })
    .await;
    let doomed = workers.remove(0);
    let doomed_id = doomed.peer_id().to_string();
    let submitter = start("submitter", false, WorkerConfig::default(), addrs).await;
    let (job, blobs) = idlegrid::jobs::video_job(&plan).unwrap();
    let frame_cids: Vec<_> = plan.frames.iter().map(|f| f.cid).collect();
    let _resident = idlegrid::commands::common::store_blobs(&submitter, blobs)
        .await
        .unwrap();
    let killer = tokio::spawn(async move {
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        while !frame_cids.iter().any(|cid| doomed.store.has(cid)) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "never got a segment"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        drop(doomed);
    });
    let config = GridConfig {
        trust: Trust::All,
        min_peers: 3,
        show_progress: false,
        ..GridConfig::default()
    };
    let outcome = run(&submitter, job, config).await;
    killer.await.unwrap();
    let segments = fetch_results(&outcome.results);
    let out_dir = temp_dir("render-mp4");
    std::fs::create_dir_all(&out_dir).unwrap();
    let grid_mp4 = out_dir.join("grid.mp4");
    assert_eq!(
        join_mp4(&plan, &grid_mp4, &segments),
        join_mp4(&plan, &out_dir.join("local.mp4"), &local)
    );
    let dead = peer_line(&outcome.report, &doomed_id);
    assert!(dead.left, "{:?}", outcome.report);
    let _ = std::fs::remove_dir_all(&frames_dir);
}

/// A worker whose owner's policy says no when the job starts is probed again, and
/// joins in once the policy lets it lend: a machine that becomes idle mid-job helps.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_worker_busy_at_the_start_joins_when_it_becomes_free() {
    let plan = change_plan(160, 4, 4);
    let expected = plan.assemble(&local_results(&plan)).unwrap();

    let late_gate = Gate::open();
    let mut no = idlegrid::policy::Decision::always();
    no.lend = false;
    no.stop_reasons = vec!["the test's owner is at the keyboard".into()];
    late_gate.set(no);
    let gates = [Gate::open(), late_gate.clone()];
    // The worker that lends from the start holds each chunk 200 ms: alone it needs 8 s
    // for the 40 chunks. The other opens after 3 s, past the moments other events
    // (identify after autonat's first round) would make the submitter look again.
    let (workers, addrs) = workers(2, |i| {
        slow_after_bench(
            if i == 0 {
                Duration::from_millis(200)
            } else {
                Duration::ZERO
            },
            gates[i].clone(),
        )
    })
    .await;
    let late = workers[1].peer_id().to_string();
    let submitter = start("submitter", false, WorkerConfig::default(), addrs).await;
    let (job, _resident) = prepare(&submitter, &plan).await;
    let config = GridConfig {
        reprobe_after: Duration::from_millis(200),
        ..remote_pool(1)
    };
    let opener = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(3)).await;
        late_gate.set(idlegrid::policy::Decision::always());
    });
    let outcome = run(&submitter, job, config).await;
    opener.await.unwrap();
    let mask = assembled(&plan, &outcome);
    assert_eq!(mask, expected);
    assert!(
        peer_line(&outcome.report, &late).chunks_done > 0,
        "the worker that became free computed nothing ({late}): {:?}",
        outcome.report
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failed_job_leaves_no_pinned_input_and_no_chunk_running() {
    // The worker holds every chunk after its benchmark for a minute, so it surely has
    // some when the job fails.
    let (_workers, addrs) = workers(1, |_| {
        slow_after_bench(Duration::from_secs(60), Gate::default())
    })
    .await;
    let submitter = start("submitter", false, WorkerConfig::default(), addrs).await;
    let input = submitter.store.put(&[7u8; 1000]).unwrap();
    let mut chunks: Vec<_> = (0..24)
        .map(|tag| idlegrid_kernels::noop::task(tag, vec![input]))
        .collect();
    // The last chunk is one the kernel refuses: it fails on this machine, the trusted
    // worker, and that fails the job (the input itself is bad).
    chunks.push(idlegrid_protocol::TaskSpec {
        params: vec![0; 65],
        ..idlegrid_kernels::noop::task(99, vec![input])
    });
    let n = chunks.len();
    let job = grid::Job {
        kernel: idlegrid_kernels::noop::NAME.into(),
        kernel_version: idlegrid_kernels::noop::VERSION,
        unit: "chunks",
        calibration: idlegrid_kernels::noop::task(1000, vec![input]),
        calibration_cost: 1,
        chunks: chunks.into(),
    };
    let config = GridConfig {
        // Dispatching starts once the worker joined, so it takes its share.
        min_peers: 1,
        show_progress: false,
        ..GridConfig::default()
    };
    let failed = tokio::time::timeout(TIMEOUT, grid::run_job(&submitter, job, config))
        .await
        .expect("job timed out");
    assert!(
        matches!(failed, Err(grid::GridError::ChunkFailed { chunk, .. }) if chunk == n - 1),
        "the refused chunk fails the job, named by its index in the job"
    );
    assert!(!submitter.store.is_pinned(&input), "the input is unpinned");
    // Aborted tasks are dropped at their next poll: give them a moment.
    for _ in 0..100 {
        if submitter.chunk_runs() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(submitter.chunk_runs(), 0, "no chunk run goes on");
}
