//! What earned trust costs on an honest grid: the submitter (computing, one core) and
//! two workers (one core each) on loopback run two change jobs in a row under
//! `--trust earned` — the first with peers new to the submitter, the second once they
//! have a record — and the same two jobs on a fresh submitter under `--trust all`.
//! For each it prints the copies computed per chunk (every answer counted, checks and
//! speculative duplicates included), the checks, and the wall time.
//!
//! Run: `cargo run --release -p idlegrid-tests --example trust_cost -- [--side N]
//! [--band-rows N] [--sweeps N]` (defaults 512, 8, 8: 64 chunks a job).

use std::time::Instant;

use idlegrid::commands::common::store_blobs;
use idlegrid::grid::{self, GridConfig};
use idlegrid::net::NetConfig;
use idlegrid::node::{Node, NodeConfig};
use idlegrid_kernels::change::{self, ChangeParams};
use idlegrid_scheduler::Trust;
use libp2p::Multiaddr;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

fn dir(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("idlegrid-trust-cost-{}-{name}", std::process::id()))
}

async fn start(name: &str, serve: bool, peers: Vec<Multiaddr>) -> Result<Node> {
    let dir = dir(name);
    let _ = std::fs::remove_dir_all(&dir);
    let mut config = NodeConfig::new(dir);
    config.net = NetConfig {
        listen: vec!["/ip4/127.0.0.1/tcp/0".parse()?],
        mdns: false,
        peers,
        ..NetConfig::default()
    };
    config.worker.serve = serve;
    config.cores = 1;
    Ok(Node::start(config).await?)
}

fn plan(side: u32, seed: u64, band_rows: u32, sweeps: u32) -> Result<change::ChangePlan> {
    let params = ChangeParams {
        band_rows,
        sweeps,
        ..ChangeParams::default()
    };
    Ok(change::sample_plan(side, seed, &params)?)
}

/// Runs one job; prints and returns (copies per chunk, checks, seconds).
async fn job(
    submitter: &Node,
    label: &str,
    plan: &change::ChangePlan,
    trust: Trust,
) -> Result<(f64, u64, f64)> {
    let (job, blobs) = idlegrid::jobs::change_job(plan);
    let _resident = store_blobs(submitter, blobs).await?;
    let config = GridConfig {
        min_peers: 2,
        trust,
        show_progress: false,
        ..GridConfig::default()
    };
    let started = Instant::now();
    let outcome = grid::run_job(submitter, job, config).await?;
    let seconds = started.elapsed().as_secs_f64();
    let chunks = plan.chunks.len() as f64;
    let copies: u64 = outcome.report.peers.iter().map(|p| p.chunks_done).sum();
    let per_chunk = copies as f64 / chunks;
    println!(
        "{label:<34} {:>6} chunks  {per_chunk:>5.3} copies/chunk  {:>4} checks  {seconds:>6.2} s",
        plan.chunks.len(),
        outcome.report.checks
    );
    Ok((per_chunk, outcome.report.checks, seconds))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let mut side = 512;
    let mut band_rows = 8;
    let mut sweeps = 8;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || -> Result<u32> { Ok(args.next().ok_or("a value")?.parse()?) };
        match arg.as_str() {
            "--side" => side = value()?,
            "--band-rows" => band_rows = value()?,
            "--sweeps" => sweeps = value()?,
            other => return Err(format!("unknown argument {other:?}").into()),
        }
    }
    let first = plan(side, 11, band_rows, sweeps)?;
    let second = plan(side, 12, band_rows, sweeps)?;
    let w0 = start("w0", true, Vec::new()).await?;
    let w1 = start("w1", true, Vec::new()).await?;
    let mut addrs = Vec::new();
    for w in [&w0, &w1] {
        addrs.push(w.listen_addrs().await?[0].clone());
    }
    let earned = start("earned", false, addrs.clone()).await?;
    let e1 = job(&earned, "earned, peers new", &first, Trust::default()).await?;
    let e2 = job(
        &earned,
        "earned, peers with a record",
        &second,
        Trust::default(),
    )
    .await?;
    let pool = start("pool", false, addrs).await?;
    let p1 = job(&pool, "all (a trusted pool)", &first, Trust::All).await?;
    let p2 = job(&pool, "all (a trusted pool), again", &second, Trust::All).await?;
    println!(
        "extra compute over a trusted pool: first job {:+.1} %, later job {:+.1} %; \
         wall time {:.2}x and {:.2}x",
        (e1.0 / p1.0 - 1.0) * 100.0,
        (e2.0 / p2.0 - 1.0) * 100.0,
        e1.2 / p1.2,
        e2.2 / p2.2
    );
    for name in ["w0", "w1", "earned", "pool"] {
        let _ = std::fs::remove_dir_all(dir(name));
    }
    Ok(())
}
