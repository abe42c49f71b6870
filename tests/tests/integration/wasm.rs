//! Users' WebAssembly programs on the grid (`idlegrid run`), with real peers: the same
//! bytes locally, on three peers and with a worker killed mid-job; a liar on a wasm
//! chunk is caught; a program that traps on one input fails the job with that input
//! named; outputs land where the template says, and only once the job succeeded; a
//! peer whose owner turned WebAssembly off refuses such chunks.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::common::*;
use idlegrid::commands::common::store_blobs;
use idlegrid::commands::run::{self, Outputs, RunPlan, RunSpec};
use idlegrid::grid::{self, GridConfig, GridError};
use idlegrid::policy::Gate;
use idlegrid::worker::{FaultInjection, WasmCaps, WorkerConfig};
use idlegrid_kernels::wasm::WasmParams;
use idlegrid_protocol::TaskResponse;

/// A float-heavy program: parses argv[1] (or the first bytes of stdin, when it has no
/// argument) as the seed, iterates square roots, divisions and NaN-making operations
/// from it, and writes 512 doubles (4 KiB) to stdout. It traps (unreachable) when the
/// seed is `trap_at`.
fn float_module(trap_at: i64) -> Vec<u8> {
    let text = format!(
        r#"(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "args_sizes_get" (func $sizes (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "args_get" (func $args (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_read" (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 2)
  (func $digits (param $p i32) (result i64) (local $acc i64) (local $c i32)
    (block $end (loop $next
      (local.set $c (i32.load8_u (local.get $p)))
      (br_if $end (i32.lt_u (local.get $c) (i32.const 48)))
      (br_if $end (i32.gt_u (local.get $c) (i32.const 57)))
      (local.set $acc (i64.add (i64.mul (local.get $acc) (i64.const 10))
                               (i64.extend_i32_u (i32.sub (local.get $c) (i32.const 48)))))
      (local.set $p (i32.add (local.get $p) (i32.const 1)))
      (br $next)))
    (local.get $acc))
  (func $seed (result i64)
    (drop (call $sizes (i32.const 100) (i32.const 104)))
    (drop (call $args (i32.const 200) (i32.const 1024)))
    (if (result i64) (i32.ge_u (i32.load (i32.const 100)) (i32.const 2))
      (then (call $digits (i32.load (i32.const 204))))
      (else
        (i32.store (i32.const 16) (i32.const 2048))
        (i32.store (i32.const 20) (i32.const 64))
        (drop (call $fd_read (i32.const 0) (i32.const 16) (i32.const 1) (i32.const 24)))
        (i32.store8 (i32.add (i32.const 2048) (i32.load (i32.const 24))) (i32.const 0))
        (call $digits (i32.const 2048)))))
  (func (export "_start") (local $s i64) (local $x f64) (local $y f64) (local $k i32) (local $at i32)
    (local.set $s (call $seed))
    (if (i64.eq (local.get $s) (i64.const {trap_at})) (then unreachable))
    (local.set $x (f64.add (f64.mul (f64.convert_i64_s (local.get $s)) (f64.const 0.37)) (f64.const 1)))
    (local.set $at (i32.const 4096))
    (block $done (loop $more
      (local.set $k (i32.const 0))
      (block $inner (loop $iter
        (local.set $x (f64.add
          (f64.div (f64.sqrt (f64.add (f64.mul (local.get $x) (local.get $x)) (f64.const 1.5)))
                   (f64.add (local.get $x) (f64.const 0.25)))
          (f64.mul (local.get $x) (f64.const 1e-3))))
        (local.set $k (i32.add (local.get $k) (i32.const 1)))
        (br_if $iter (i32.lt_u (local.get $k) (i32.const 200)))))
      ;; NaNs from 0/0 and sqrt of a negative, mixed in where the index is odd.
      (local.set $y (f64.div (f64.sub (local.get $x) (local.get $x)) (f64.sub (local.get $x) (local.get $x))))
      (f64.store (local.get $at)
        (select (f64.min (local.get $y) (f64.sqrt (f64.neg (local.get $x)))) (local.get $x)
          (i32.and (local.get $at) (i32.const 8))))
      (local.set $at (i32.add (local.get $at) (i32.const 8)))
      (br_if $more (i32.lt_u (local.get $at) (i32.const 8192)))))
    (i32.store (i32.const 0) (i32.const 4096))
    (i32.store (i32.const 4) (i32.const 4096))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))"#
    );
    wat::parse_str(&text).expect("test module")
}

/// Writes `module` and returns a job over it: `--range` or the given input files.
fn job_spec(
    dir: &Path,
    module: &[u8],
    range: Option<std::ops::Range<u64>>,
    inputs: Vec<PathBuf>,
) -> RunSpec {
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join("floats.wasm");
    std::fs::write(&path, module).unwrap();
    RunSpec {
        module: path,
        args_template: if range.is_some() {
            "{i}".into()
        } else {
            String::new()
        },
        range,
        inputs,
        output: dir.join("out/{i:03}.bin").display().to_string(),
        batch: 1,
        join: false,
        budgets: WasmParams {
            fuel: 100_000_000,
            memory: 16 << 20,
            ..WasmParams::default()
        },
    }
}

async fn on_grid(
    submitter: &idlegrid::node::Node,
    plan: &RunPlan,
    config: GridConfig,
) -> Result<Vec<Vec<u8>>, GridError> {
    let (job, blobs) = run::grid_job(plan).unwrap();
    let _resident = store_blobs(submitter, blobs).await.unwrap();
    let outcome = tokio::time::timeout(TIMEOUT, grid::run_job(submitter, job, config))
        .await
        .expect("job timed out")?;
    Ok(fetch_results(&outcome.results))
}

fn quiet(config: GridConfig) -> GridConfig {
    GridConfig {
        show_progress: false,
        ..config
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn wasm_job_gives_the_same_bytes_locally_and_on_three_peers() {
    let dir = temp_dir("wasm-three");
    let spec = job_spec(&dir, &float_module(-1), Some(0..12), Vec::new());
    let plan = run::plan_run(&spec).unwrap();
    let local = run::execute_local(&plan, 2).unwrap();
    assert_eq!(local.len(), 12);
    let (_workers, addrs) = workers(3, |_| WorkerConfig::default()).await;
    let submitter = start("wasm-submitter", false, WorkerConfig::default(), addrs).await;
    let config = quiet(GridConfig {
        min_peers: 3,
        compute_locally: false,
        trust: idlegrid_scheduler::Trust::All,
        ..GridConfig::default()
    });
    let remote = on_grid(&submitter, &plan, config.clone()).await.unwrap();
    assert_eq!(remote, local, "the grid's bytes differ from this machine's");
    // The same job again (a rerun after a crash): every verified chunk is reused.
    let (job, blobs) = run::grid_job(&plan).unwrap();
    let _resident = store_blobs(&submitter, blobs).await.unwrap();
    let again = tokio::time::timeout(TIMEOUT, grid::run_job(&submitter, job, config))
        .await
        .expect("job timed out")
        .expect("rerun succeeds");
    assert_eq!(again.report.chunks_reused, 12, "{:?}", again.report);
    assert_eq!(fetch_results(&again.results), local);
    // The outputs, written where the template says (the folder is created).
    run::write_outputs(&plan, |i| Ok(remote[i].clone())).unwrap();
    assert!(
        matches!(plan.outputs, Outputs::Each { .. }),
        "one output per run"
    );
    let path = plan.output_path(7).unwrap();
    assert_eq!(path, dir.join("out/007.bin"));
    let seven = std::fs::read(&path).unwrap();
    assert_eq!(seven.len(), 4096);
    assert_eq!(
        seven,
        idlegrid_kernels::wasm::unframe(&local[7]).unwrap()[0],
        "output 7 is run 7's stdout"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn wasm_job_over_files_survives_a_worker_killed_mid_job() {
    let dir = temp_dir("wasm-kill");
    std::fs::create_dir_all(&dir).unwrap();
    let files: Vec<PathBuf> = (0..10)
        .map(|i| {
            let path = dir.join(format!("seed{i}.txt"));
            std::fs::write(&path, format!("{}\n", 100 + i)).unwrap();
            path
        })
        .collect();
    let spec = job_spec(&dir, &float_module(-1), None, files.clone());
    let plan = run::plan_run(&spec).unwrap();
    let local = run::execute_local(&plan, 1).unwrap();
    let (mut workers, addrs) = workers(2, |i| match i {
        0 => slow_after_bench(Duration::from_secs(3), Gate::open()),
        _ => WorkerConfig::default().into(),
    })
    .await;
    let doomed = workers.remove(0);
    let doomed_id = doomed.peer_id().to_string();
    let submitter = start("wasm-kill-submitter", false, WorkerConfig::default(), addrs).await;
    // Killed once it holds the stdin of a job chunk (the first file is the benchmark's
    // too, so not that one).
    let stdins: Vec<_> = (1..plan.runs.chunk_count())
        .map(|c| plan.runs.chunk_spec(c).unwrap().inputs[1])
        .collect();
    let killer = tokio::spawn(async move {
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        while !stdins.iter().any(|cid| doomed.store.has(cid)) {
            assert!(tokio::time::Instant::now() < deadline, "never got a chunk");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        drop(doomed);
    });
    let (job, blobs) = run::grid_job(&plan).unwrap();
    let _resident = store_blobs(&submitter, blobs).await.unwrap();
    let outcome = tokio::time::timeout(
        TIMEOUT,
        grid::run_job(&submitter, job, quiet(remote_pool(2))),
    )
    .await
    .expect("job timed out")
    .expect("job succeeds");
    killer.await.unwrap();
    assert_eq!(fetch_results(&outcome.results), local);
    let dead = peer_line(&outcome.report, &doomed_id);
    assert!(dead.left, "{:?}", outcome.report);
    // Each run read its seed from its file: run 3's output is that of seed 103.
    let by_arg = job_spec(
        &dir.join("args"),
        &float_module(-1),
        Some(103..104),
        Vec::new(),
    );
    let direct = run::execute_local(&run::plan_run(&by_arg).unwrap(), 1).unwrap();
    assert_eq!(
        idlegrid_kernels::wasm::unframe(&direct[0]).unwrap(),
        idlegrid_kernels::wasm::unframe(&local[3]).unwrap()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn wasm_liar_is_caught_and_its_lies_never_reach_the_output() {
    let dir = temp_dir("wasm-liar");
    let spec = job_spec(&dir, &float_module(-1), Some(0..8), Vec::new());
    let plan = run::plan_run(&spec).unwrap();
    let local = run::execute_local(&plan, 2).unwrap();
    let (workers, addrs) = workers(2, |i| {
        faulty(FaultInjection {
            lie: i == 0,
            ..FaultInjection::default()
        })
    })
    .await;
    let liar = workers[0].peer_id().to_string();
    let submitter = start("wasm-liar-submitter", false, WorkerConfig::default(), addrs).await;
    // The defaults: earned trust, this machine checks strangers' results.
    let config = quiet(GridConfig {
        min_peers: 2,
        ..GridConfig::default()
    });
    let (job, blobs) = run::grid_job(&plan).unwrap();
    let _resident = store_blobs(&submitter, blobs).await.unwrap();
    let outcome = tokio::time::timeout(TIMEOUT, grid::run_job(&submitter, job, config))
        .await
        .expect("job timed out")
        .expect("job succeeds");
    assert_eq!(
        fetch_results(&outcome.results),
        local,
        "a lie reached the output"
    );
    let line = peer_line(&outcome.report, &liar);
    assert!(line.banned || line.chunks_done == 0, "{:?}", outcome.report);
    assert_eq!(line.results_believed, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn wasm_program_trapping_on_one_input_fails_the_job_naming_it() {
    let dir = temp_dir("wasm-trap");
    let spec = job_spec(&dir, &float_module(5), Some(0..9), Vec::new());
    let plan = run::plan_run(&spec).unwrap();
    // An earlier output of the same name is left alone by a failed job.
    std::fs::create_dir_all(dir.join("out")).unwrap();
    std::fs::write(dir.join("out/002.bin"), b"earlier").unwrap();
    let local = run::execute_local(&plan, 2).unwrap_err().to_string();
    assert!(
        local.contains("i = 5") && local.contains("unreachable"),
        "{local}"
    );
    let (_workers, addrs) = workers(2, |_| WorkerConfig::default()).await;
    let submitter = start("wasm-trap-submitter", false, WorkerConfig::default(), addrs).await;
    let config = quiet(GridConfig {
        min_peers: 2,
        ..GridConfig::default()
    });
    let err = on_grid(&submitter, &plan, config).await.unwrap_err();
    let GridError::ChunkFailed { chunk, reason, .. } = &err else {
        panic!("not a chunk failure: {err}");
    };
    let named = plan.explain(*chunk, reason).to_string();
    assert!(named.starts_with("i = 5 failed"), "{named}");
    assert!(
        named.contains("[\"5\"]") && named.contains("unreachable"),
        "{named}"
    );
    assert_eq!(std::fs::read(dir.join("out/002.bin")).unwrap(), b"earlier");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn wasm_off_or_over_the_caps_is_refused_by_the_volunteer() {
    let dir = temp_dir("wasm-off");
    let spec = job_spec(&dir, &float_module(-1), Some(0..1), Vec::new());
    let plan = run::plan_run(&spec).unwrap();
    let off = WorkerConfig {
        wasm: WasmCaps {
            enabled: false,
            ..WasmCaps::default()
        },
        ..WorkerConfig::default()
    };
    let small = WorkerConfig {
        wasm: WasmCaps {
            max_memory: 1 << 20,
            ..WasmCaps::default()
        },
        ..WorkerConfig::default()
    };
    let (workers, addrs) = workers(2, |i| if i == 0 { off.clone() } else { small.clone() }).await;
    let submitter = start("wasm-off-submitter", false, WorkerConfig::default(), addrs).await;
    let (job, blobs) = run::grid_job(&plan).unwrap();
    let _resident = store_blobs(&submitter, blobs).await.unwrap();
    for (worker, want) in [
        (&workers[0], "does not run WebAssembly"),
        (&workers[1], "at most 1 MiB"),
    ] {
        let answer = run_to_end(
            &submitter.client,
            worker.peer_id(),
            job.chunks.spec(0).unwrap(),
        )
        .await;
        let TaskResponse::Refused { reason, .. } = answer else {
            panic!("not refused: {answer:?}");
        };
        assert!(reason.contains(want), "{reason}");
    }
}
