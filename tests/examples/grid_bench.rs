//! Benchmarks of the grid itself, on loopback in one process:
//!
//! 1. per-chunk overhead: a job of `noop` chunks (no work, 32-byte results) on two
//!    workers — chunks per second through probe, dispatch, long-poll and verification;
//! 2. blob throughput: one 256 MiB blob fetched from a peer in 1 MiB pieces;
//! 3. speedup of the change kernel on two workers of one core each over one worker.
//!
//! Run: `cargo run --release -p idlegrid-tests --example grid_bench`

use std::time::{Duration, Instant};

use idlegrid::blobs::fetch_bytes;
use idlegrid::commands::common::{store_blobs, JobBlob};
use idlegrid::grid::{self, GridConfig, Job};
use idlegrid::net::NetConfig;
use idlegrid::node::{Node, NodeConfig};
use idlegrid_kernels::change::{self, ChangeParams};
use idlegrid_kernels::noop;
use libp2p::Multiaddr;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

async fn start(name: &str, serve: bool) -> Result<(Node, Multiaddr)> {
    let dir = std::env::temp_dir().join(format!("idlegrid-bench-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut config = NodeConfig::new(dir);
    config.net = NetConfig {
        listen: vec!["/ip4/127.0.0.1/tcp/0".parse()?],
        mdns: false,
        ..NetConfig::default()
    };
    config.worker.serve = serve;
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
        min_peers,
        compute_locally: false,
        show_progress: false,
        ..GridConfig::default()
    }
}

/// A job of `chunks` noop chunks (no inputs, 32-byte results).
fn noop_job(chunks: usize) -> Job {
    Job {
        kernel: noop::NAME.into(),
        kernel_version: noop::VERSION,
        chunks: (0..chunks as u64)
            .map(|i| noop::task(i, Vec::new()))
            .collect(),
        costs: vec![1; chunks],
        calibration: noop::task(u64::MAX, Vec::new()),
        calibration_cost: 1,
        unit: "chunks",
        units: vec![1; chunks],
    }
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

async fn blob_throughput(bytes: usize) -> Result<f64> {
    let (holder, addr) = start("blob-w", true).await?;
    let blob: Vec<u8> = (0..bytes)
        .map(|i| ((i * 2654435761usize) >> 13) as u8)
        .collect();
    let cid = holder.store.put(&blob)?;
    let node = submitter("blob-s", &[addr]).await?;
    // Warm the connection up with a first small fetch.
    let _ = node.client.peers().await?;
    let started = Instant::now();
    let fetched = fetch_bytes(&node.client, holder.peer_id(), cid, bytes as u64).await?;
    let elapsed = started.elapsed().as_secs_f64();
    assert_eq!(idlegrid_protocol::Cid::of(&fetched), cid);
    Ok(bytes as f64 / elapsed / 1e6)
}

async fn change_on(workers: usize) -> Result<Duration> {
    let pair = change::sample_pair(6144, 6144, 3);
    let diff = change::prep::difference_of(
        &image::DynamicImage::ImageRgb8(pair.before),
        &image::DynamicImage::ImageRgb8(pair.after),
    );
    let plan = change::plan(
        &diff,
        &ChangeParams {
            band_rows: 256,
            ..ChangeParams::default()
        },
    )?;
    let mut nodes = Vec::new();
    let mut addrs = Vec::new();
    for i in 0..workers {
        let (node, addr) = start(&format!("change-{workers}-w{i}"), true).await?;
        nodes.push(node);
        addrs.push(addr);
    }
    let node = submitter(&format!("change-{workers}-s"), &addrs).await?;
    let (job, blobs): (Job, Vec<JobBlob>) = idlegrid::jobs::change_job(&plan);
    store_blobs(&node, blobs).await?;
    let started = Instant::now();
    let outcome = grid::run_job(&node, job, remote_only(workers)).await?;
    let elapsed = started.elapsed();
    assert_eq!(outcome.results.len(), plan.chunks.len());
    let shares: Vec<String> = outcome
        .report
        .peers
        .iter()
        .map(|p| format!("{} chunks", p.chunks_done))
        .collect();
    println!(
        "  {workers} worker(s): {} chunks in {:.2} s ({})",
        plan.chunks.len(),
        elapsed.as_secs_f64(),
        shares.join(", ")
    );
    Ok(elapsed)
}

#[tokio::main]
async fn main() -> Result<()> {
    let chunks = 5000;
    let rate = overhead(chunks).await?;
    println!("per-chunk overhead: {chunks} noop chunks on 2 workers: {rate:.0} chunks/s (target >= 2000)");

    let probes = probe_rate(5000).await?;
    println!("  bare request-response round trips (Probe), 64 in flight: {probes:.0}/s");
    let local = overhead_local(chunks).await?;
    println!("  the same job on this machine's own worker only (no network): {local:.0} chunks/s");

    let size = 256 << 20;
    let mbps = blob_throughput(size).await?;
    println!(
        "blob throughput: {} MiB over loopback: {mbps:.0} MB/s (target >= 300)",
        size >> 20
    );

    let one = change_on(1).await?;
    let two = change_on(2).await?;
    println!(
        "change kernel, 6144x6144, 1 worker (1 core): {:.2} s; 2 workers (1 core each): {:.2} s; speedup {:.2}x (target >= 1.8)",
        one.as_secs_f64(),
        two.as_secs_f64(),
        one.as_secs_f64() / two.as_secs_f64()
    );
    Ok(())
}
