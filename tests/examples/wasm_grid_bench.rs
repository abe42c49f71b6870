//! Per-chunk throughput of `wasm` chunks over the grid against the built-in `noop`
//! kernel's, on loopback in one process: two workers of one core each, the submitter
//! computing nothing and trusting them (`--trust all`), N chunks of an empty program
//! (one run each, a compiled module) against N `noop` chunks, and N `noop` chunks that
//! each name one small input (the module's bytes: the input path a wasm chunk takes,
//! without the wasm kernel). The jobs run twice, alternating, and the best of each is
//! printed.
//!
//! Run: `cargo run --release -p idlegrid-tests --example wasm_grid_bench [CHUNKS]`
//! (default 2000).

use std::time::Instant;

use idlegrid::commands::common::store_blobs;
use idlegrid::commands::run::{self, RunSpec};
use idlegrid::grid::{self, GridConfig, Job};
use idlegrid::net::NetConfig;
use idlegrid::node::{Node, NodeConfig};
use idlegrid_kernels::{noop, wasm::WasmParams};
use idlegrid_scheduler::Trust;
use libp2p::Multiaddr;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

async fn start(dir: &std::path::Path, name: &str, serve: bool) -> Result<(Node, Multiaddr)> {
    let mut config = NodeConfig::new(dir.join(name));
    config.net = NetConfig {
        listen: vec!["/ip4/127.0.0.1/tcp/0".parse()?],
        mdns: false,
        ..NetConfig::default()
    };
    config.worker.serve = serve;
    config.worker.noop_kernel = true;
    config.cores = 1;
    let node = Node::start(config).await?;
    let addr = node.listen_addrs().await?[0].clone();
    Ok((node, addr))
}

/// `chunks` noop chunks, each naming `inputs` (none, or the one small blob every
/// wasm chunk of the other job names: its module).
fn noop_job(chunks: usize, tag: u64, inputs: &[idlegrid_protocol::Cid]) -> Job {
    let first = tag * 1_000_000;
    Job {
        calibration: noop::task(u64::MAX - tag, Vec::new()),
        ..idlegrid::jobs::noop_job(first..first + chunks as u64, inputs.to_vec())
    }
}

async fn rate(node: &Node, job: Job) -> Result<f64> {
    let chunks = job.chunks.len();
    let config = GridConfig {
        trust: Trust::All,
        min_peers: 2,
        compute_locally: false,
        show_progress: false,
        ..GridConfig::default()
    };
    let started = Instant::now();
    grid::run_job(node, job, config).await?;
    Ok(chunks as f64 / started.elapsed().as_secs_f64())
}

#[tokio::main]
async fn main() -> Result<()> {
    let chunks: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(2000);
    let dir = tempfile::tempdir()?;
    let (_w1, a1) = start(dir.path(), "w1", true).await?;
    let (_w2, a2) = start(dir.path(), "w2", true).await?;
    let (node, _) = start(dir.path(), "s", false).await?;
    for addr in [a1, a2] {
        node.client.dial(addr).await?;
    }
    let module = dir.path().join("empty.wasm");
    std::fs::write(
        &module,
        wat::parse_str(r#"(module (memory (export "memory") 1) (func (export "_start")))"#)?,
    )?;
    // The module as a blob, so a noop job can name it too: the same input path as a
    // wasm chunk's, without the wasm kernel.
    let module_cid = node.store.put(&std::fs::read(&module)?)?;
    let (mut best_noop, mut best_input, mut best_wasm) = (0f64, 0f64, 0f64);
    for round in 0..2u64 {
        best_noop = best_noop.max(rate(&node, noop_job(chunks, round, &[])).await?);
        let with_input = noop_job(chunks, 100 + round, &[module_cid]);
        best_input = best_input.max(rate(&node, with_input).await?);
        // Distinct chunks each round (another range), so nothing is reused.
        let start = round * chunks as u64;
        let spec = RunSpec {
            module: module.clone(),
            inputs: Vec::new(),
            range: Some(start..start + chunks as u64),
            args_template: "{i}".into(),
            output: dir.path().join("out/{i}").display().to_string(),
            batch: 1,
            join: false,
            budgets: WasmParams::default(),
        };
        let plan = run::plan_run(&spec)?;
        let (job, blobs) = run::grid_job(&plan)?;
        let _resident = store_blobs(&node, blobs).await?;
        best_wasm = best_wasm.max(rate(&node, job).await?);
    }
    println!(
        "{chunks} chunks on 2 workers: noop {best_noop:.0} chunks/s, noop with one small \
         input {best_input:.0} chunks/s, wasm (empty program) {best_wasm:.0} chunks/s: \
         {:.2}x noop's, {:.2}x noop-with-an-input's",
        best_wasm / best_noop,
        best_wasm / best_input
    );
    Ok(())
}
