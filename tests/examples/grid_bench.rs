//! Benchmarks of the grid itself, on loopback in one process:
//!
//! 1. per-chunk overhead: a job of `noop` chunks (no work, 32-byte results) on two
//!    workers — chunks per second through probe, dispatch, long-poll and verification;
//! 2. blob throughput: one 256 MiB blob fetched from a peer in 1 MiB pieces, into
//!    memory (the figure), into the blob store, and dropped on arrival;
//! 3. speedup of the change kernel with two peers of one core each over one peer, two
//!    ways: the submitter computing with one worker beside it against the submitter
//!    alone (`peers`: what a user sees when a second machine joins), and two remote
//!    workers against one, the submitter computing nothing (`workers`: every band
//!    crosses the network).
//!
//! Run: `cargo run --release -p idlegrid-tests --example grid_bench`
//!
//! Arguments (all optional): the parts to run (`overhead`, `blob`, `change`; default
//! all), `--side N` (the change pair's side, default 6144), `--repeat N` (change runs
//! per set-up, default 1), `--band-rows N` (default 256: 24 bands of 6144 rows),
//! `--setup peers|workers|both` (default both). For the change kernel it prints the whole job and the
//! dispatch (first chunk out to last result in), the chunks and bytes each worker got,
//! and where the process's CPU time went: the workers' compute threads and everything
//! else (network, hashing, disk, polling). `IDLEGRID_LOG=idlegrid::grid=trace` logs a
//! timeline: when each chunk went out to which peer and when its result came back.

use std::time::{Duration, Instant};

use idlegrid::blobs::{fetch_blob, fetch_bytes, Pieces, PIECES_IN_FLIGHT};
use idlegrid::commands::common::store_blobs;
use idlegrid::grid::{self, GridConfig, Job};
use idlegrid::jobs::JobBlob;
use idlegrid::net::NetConfig;
use idlegrid::node::{Node, NodeConfig};
use idlegrid_kernels::change::{self, ChangeParams};
use idlegrid_scheduler::Trust;
use libp2p::Multiaddr;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// Prefix of this run's node directories in the temp dir (removed at the end).
fn node_dir_prefix() -> String {
    format!("idlegrid-bench-{}-", std::process::id())
}

/// Removes the node directories this run made (each node's blob store holds copies of
/// the job's inputs: tens of megabytes a node).
fn remove_node_dirs() {
    let prefix = node_dir_prefix();
    if let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) {
        for entry in entries.flatten() {
            if entry.file_name().to_string_lossy().starts_with(&prefix) {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
}

async fn start(name: &str, serve: bool) -> Result<(Node, Multiaddr)> {
    let dir = std::env::temp_dir().join(format!("{}{name}", node_dir_prefix()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut config = NodeConfig::new(dir);
    config.net = NetConfig {
        listen: vec!["/ip4/127.0.0.1/tcp/0".parse()?],
        mdns: false,
        ..NetConfig::default()
    };
    config.worker.serve = serve;
    // The overhead benchmark's chunks are noop chunks.
    config.worker.noop_kernel = true;
    config.cores = 1;
    let node = Node::start(config).await?;
    let addr = node.listen_addrs().await?[0].clone();
    Ok((node, addr))
}

async fn submitter(name: &str, peers: &[Multiaddr]) -> Result<Node> {
    let (node, _) = start(name, false).await?;
    for addr in peers {
        node.client.dial(addr.clone()).await?;
    }
    Ok(node)
}

fn remote_only(min_peers: usize) -> GridConfig {
    GridConfig {
        trust: Trust::All,
        min_peers,
        compute_locally: false,
        show_progress: false,
        ..GridConfig::default()
    }
}

/// A job of `chunks` noop chunks (no inputs, 32-byte results).
fn noop_job(chunks: usize) -> Job {
    idlegrid::jobs::noop_job(0..chunks as u64, Vec::new())
}

async fn overhead(chunks: usize) -> Result<f64> {
    let (_w1, a1) = start("noop-w1", true).await?;
    let (_w2, a2) = start("noop-w2", true).await?;
    let node = submitter("noop-s", &[a1, a2]).await?;
    let job = noop_job(chunks);
    let started = Instant::now();
    let outcome = grid::run_job(&node, job, remote_only(2)).await?;
    let elapsed = started.elapsed().as_secs_f64();
    assert_eq!(outcome.results.len(), chunks);
    Ok(chunks as f64 / elapsed)
}

/// The same noop job on this machine's own worker only: the grid loop, scheduler and
/// store without the network, to tell where the per-chunk time goes.
async fn overhead_local(chunks: usize) -> Result<f64> {
    let node = submitter("noop-local", &[]).await?;
    let job = noop_job(chunks);
    let config = GridConfig {
        trust: Trust::All,
        show_progress: false,
        ..GridConfig::default()
    };
    let started = Instant::now();
    grid::run_job(&node, job, config).await?;
    Ok(chunks as f64 / started.elapsed().as_secs_f64())
}

/// Bare request-response rate: `Probe`s to one worker, 64 at a time.
async fn probe_rate(requests: usize) -> Result<f64> {
    let (worker, addr) = start("probe-w", true).await?;
    let node = submitter("probe-s", &[addr]).await?;
    let peer = worker.peer_id();
    node.client
        .task(peer, idlegrid_protocol::TaskRequest::Probe)
        .await?;
    let started = Instant::now();
    let mut pending = futures::stream::FuturesUnordered::new();
    let mut sent = 0;
    let mut done = 0;
    while done < requests {
        while sent < requests && pending.len() < 64 {
            let client = node.client.clone();
            pending.push(async move {
                client
                    .task(peer, idlegrid_protocol::TaskRequest::Probe)
                    .await
            });
            sent += 1;
        }
        if let Some(answer) = futures::StreamExt::next(&mut pending).await {
            answer?;
            done += 1;
        }
    }
    Ok(requests as f64 / started.elapsed().as_secs_f64())
}

/// Where a fetched blob goes in the throughput benchmark.
#[derive(Clone, Copy, Debug)]
enum Sink {
    /// Into memory (`fetch_bytes`), then checked against its Cid (untimed).
    Memory,
    /// Into the fetching peer's blob store (`fetch_blob`: hashed and written as the
    /// pieces come, verified before it appears): what a worker does with its inputs.
    Store,
    /// Pieces received and dropped: the transfer alone.
    Wire,
}

/// MB/s of fetching one `bytes`-byte blob from a peer over loopback TCP, and the CPU
/// seconds both peers spent per GB (a figure other load on the machine barely moves).
async fn blob_throughput(bytes: usize, sink: Sink) -> Result<(f64, f64)> {
    let (holder, addr) = start("blob-w", true).await?;
    let blob: Vec<u8> = (0..bytes)
        .map(|i| ((i * 2654435761usize) >> 13) as u8)
        .collect();
    let cid = holder.store.put(&blob)?;
    drop(blob);
    let node = submitter("blob-s", &[addr]).await?;
    // A peer serves a blob only to whom it concerns.
    let _grant = holder.store.grants().grant(node.peer_id(), [cid]);
    // Warm the connection up with a first small fetch.
    let _ = node.client.peers().await?;
    let cpu_before = cpu_seconds().1;
    let started = Instant::now();
    let per_gb = |cpu_before: f64| (cpu_seconds().1 - cpu_before) / (bytes as f64 / 1e9);
    match sink {
        Sink::Memory => {
            let fetched = fetch_bytes(&node.client, holder.peer_id(), cid, bytes as u64).await?;
            let elapsed = started.elapsed().as_secs_f64();
            let cpu = per_gb(cpu_before);
            assert_eq!(idlegrid_protocol::Cid::of(&fetched), cid);
            return Ok((bytes as f64 / elapsed / 1e6, cpu));
        }
        Sink::Store => {
            fetch_blob(
                &node.client,
                holder.peer_id(),
                cid,
                &node.store,
                bytes as u64,
            )
            .await?;
        }
        Sink::Wire => {
            let mut pieces = Pieces::new(&node.client, holder.peer_id(), cid, bytes as u64);
            let mut got = 0;
            while let Some(piece) = pieces.next().await? {
                got += piece.len();
            }
            assert_eq!(got, bytes);
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    Ok((bytes as f64 / elapsed / 1e6, per_gb(cpu_before)))
}

/// CPU seconds of this process so far: the compute pools' threads (named
/// `idlegrid-compute-*`, from their `schedstat`) and all threads, exited ones included
/// (`CLOCK_PROCESS_CPUTIME_ID`).
fn cpu_seconds() -> (f64, f64) {
    // Nanoseconds on the CPU, not clock ticks: the ticks of `/proc/*/stat` are 10 ms,
    // as large as the differences being measured.
    let on_cpu = |schedstat: &str| -> Option<f64> {
        let ns: f64 = schedstat.split_whitespace().next()?.parse().ok()?;
        Some(ns / 1e9)
    };
    let mut total = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec it is given.
    let total = if unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut total) } == 0 {
        total.tv_sec as f64 + total.tv_nsec as f64 / 1e9
    } else {
        0.0
    };
    let mut compute = 0.0;
    if let Ok(tasks) = std::fs::read_dir("/proc/self/task") {
        for task in tasks.flatten() {
            let name = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
            if name.starts_with("idlegrid-comput") {
                if let Some(t) = std::fs::read_to_string(task.path().join("schedstat"))
                    .ok()
                    .and_then(|s| on_cpu(&s))
                {
                    compute += t;
                }
            }
        }
    }
    (compute, total)
}

/// With `IDLEGRID_PERF_CTL=FIFO`, tells `perf record --control fifo:FIFO -D -1` to
/// sample only while a change job runs (not while the bench makes the image pair).
fn perf_control(command: &str) {
    if let Ok(fifo) = std::env::var("IDLEGRID_PERF_CTL") {
        let _ = std::fs::write(fifo, format!("{command}\n"));
    }
}

struct ChangeRun {
    whole: Duration,
    dispatch: Duration,
}

/// The change job's plan on a generated `side`² pair (made once per run of the bench).
fn change_plan(side: u32, band_rows: u32) -> Result<change::ChangePlan> {
    let params = ChangeParams {
        band_rows,
        ..ChangeParams::default()
    };
    Ok(change::sample_plan(side, 3, &params)?)
}

/// Runs the change job on `workers` remote workers of one core each; with
/// `submitter_computes` the submitter computes too (on one core), else it only
/// coordinates.
async fn change_on(
    workers: usize,
    submitter_computes: bool,
    plan: &change::ChangePlan,
) -> Result<ChangeRun> {
    let mut nodes = Vec::new();
    let mut addrs = Vec::new();
    let tag = if submitter_computes { "p" } else { "w" };
    for i in 0..workers {
        let (node, addr) = start(&format!("change-{tag}{workers}-w{i}"), true).await?;
        nodes.push(node);
        addrs.push(addr);
    }
    let node = submitter(&format!("change-{tag}{workers}-s"), &addrs).await?;
    let (job, blobs): (Job, Vec<JobBlob>) = idlegrid::jobs::change_job(plan);
    // Held while the job runs, as the `change` command holds it.
    let _resident = store_blobs(&node, blobs).await?;
    // A computing submitter starts at once, as a user's job does (`--min-peers 0`),
    // and the worker joins as soon as it has been benchmarked; a submitter that only
    // coordinates waits for its workers.
    let config = if submitter_computes {
        GridConfig {
            trust: Trust::All,
            show_progress: false,
            ..GridConfig::default()
        }
    } else {
        remote_only(workers)
    };
    perf_control("enable");
    let (compute_before, total_before) = cpu_seconds();
    let started = Instant::now();
    let outcome = grid::run_job(&node, job, config).await?;
    let elapsed = started.elapsed();
    perf_control("disable");
    let (compute_after, total_after) = cpu_seconds();
    assert_eq!(outcome.results.len(), plan.chunks.len());
    let remote_chunks: u64 = outcome.report.remote_chunks();
    if workers > 0 && remote_chunks == 0 {
        return Err(
            "no worker computed a chunk: the figure would be of the submitter alone".into(),
        );
    }
    let shares: Vec<String> = outcome
        .report
        .peers
        .iter()
        .map(|p| {
            if p.role == idlegrid::grid::report::Role::Remote {
                format!(
                    "{} chunks, {:.1} MB sent to it",
                    p.chunks_done,
                    p.bytes_sent as f64 / 1e6
                )
            } else {
                format!("{} chunks", p.chunks_done)
            }
        })
        .collect();
    let compute = compute_after - compute_before;
    let other = (total_after - total_before) - compute;
    let who = if submitter_computes {
        format!("submitter + {workers} worker(s)")
    } else {
        format!("{workers} worker(s)")
    };
    println!(
        "  {who}: {} chunks in {:.3} s, dispatch {:.3} s ({}); CPU: compute threads {compute:.3} s, everything else {other:.3} s",
        plan.chunks.len(),
        elapsed.as_secs_f64(),
        outcome.report.dispatch_seconds,
        shares.join(", ")
    );
    Ok(ChangeRun {
        whole: elapsed,
        dispatch: Duration::from_secs_f64(outcome.report.dispatch_seconds),
    })
}

#[tokio::main]
async fn main() -> Result<()> {
    let outcome = run().await;
    remove_node_dirs();
    outcome
}

async fn run() -> Result<()> {
    // `IDLEGRID_LOG=idlegrid=debug` shows where each chunk's time goes.
    if let Ok(filter) = std::env::var("IDLEGRID_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .try_init();
    }
    let mut parts = Vec::new();
    let mut side = 6144u32;
    let mut repeat = 1usize;
    let mut band_rows = 256u32;
    let mut setup = "both".to_string();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--side" => side = args.next().ok_or("--side N")?.parse()?,
            "--band-rows" => band_rows = args.next().ok_or("--band-rows N")?.parse()?,
            "--repeat" => repeat = args.next().ok_or("--repeat N")?.parse()?,
            "--setup" => setup = args.next().ok_or("--setup peers|workers|both")?,
            "overhead" | "blob" | "change" => parts.push(arg),
            other => return Err(format!("unknown argument {other:?}").into()),
        }
    }
    let all = parts.is_empty();
    let wants = |part: &str| all || parts.iter().any(|p| p == part);

    if wants("overhead") {
        let chunks = 5000;
        let rate = overhead(chunks).await?;
        println!("per-chunk overhead: {chunks} noop chunks on 2 workers: {rate:.0} chunks/s (target >= 2000)");
        let probes = probe_rate(5000).await?;
        println!("  bare request-response round trips (Probe), 64 in flight: {probes:.0}/s");
        let local = overhead_local(chunks).await?;
        println!(
            "  the same job on this machine's own worker only (no network): {local:.0} chunks/s"
        );
    }

    if wants("blob") {
        let size = 256 << 20;
        for _ in 0..repeat {
            let (mbps, cpu) = blob_throughput(size, Sink::Memory).await?;
            println!(
                "blob throughput: {} MiB over loopback in 1 MiB pieces, {PIECES_IN_FLIGHT} in flight: {mbps:.0} MB/s (target >= 300), {cpu:.2} CPU-s/GB",
                size >> 20
            );
            let (store, store_cpu) = blob_throughput(size, Sink::Store).await?;
            let (wire, wire_cpu) = blob_throughput(size, Sink::Wire).await?;
            println!("  into the blob store (hashed, written): {store:.0} MB/s, {store_cpu:.2} CPU-s/GB; pieces dropped on arrival: {wire:.0} MB/s, {wire_cpu:.2} CPU-s/GB");
        }
    }

    if wants("change") {
        if !matches!(setup.as_str(), "peers" | "workers" | "both") {
            return Err(format!("--setup {setup:?}: peers, workers or both").into());
        }
        let plan = change_plan(side, band_rows)?;
        let speedup = |what: &str, one: &ChangeRun, two: &ChangeRun| {
            println!(
                "change kernel, {side}x{side}, bands of {band_rows} rows, {what}: whole job {:.2} s -> {:.2} s, speedup {:.2}x; dispatch {:.2} s -> {:.2} s, speedup {:.2}x (target >= 1.8)",
                one.whole.as_secs_f64(),
                two.whole.as_secs_f64(),
                one.whole.as_secs_f64() / two.whole.as_secs_f64(),
                one.dispatch.as_secs_f64(),
                two.dispatch.as_secs_f64(),
                one.dispatch.as_secs_f64() / two.dispatch.as_secs_f64(),
            );
        };
        for _ in 0..repeat {
            if setup != "workers" {
                let one = change_on(0, true, &plan).await?;
                let two = change_on(1, true, &plan).await?;
                speedup("1 peer (the submitter, 1 core) -> 2 peers (the submitter and a worker, 1 core each)", &one, &two);
            }
            if setup != "peers" {
                let one = change_on(1, false, &plan).await?;
                let two = change_on(2, false, &plan).await?;
                speedup(
                    "submitter not computing, 1 worker (1 core) -> 2 workers (1 core each)",
                    &one,
                    &two,
                );
            }
        }
    }
    Ok(())
}
