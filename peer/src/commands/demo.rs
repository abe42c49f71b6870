//! `idlegrid demo`: the whole grid on one machine, with nothing but the repository.
//!
//! Starts a few worker peers in this process (each lending one core, on loopback, as
//! `idlegrid serve` would on a LAN), then a submitting peer that knows only the first
//! worker's address: it finds the others through the DHT, probes and benchmarks them,
//! and runs a change detection on a generated before/after pair through the grid. It
//! then checks the mask is byte-identical to a local run and shows who computed what.
//! mDNS stays off: on one machine it would only see loopback, and the demo must not
//! send multicast to the LAN.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use libp2p::Multiaddr;

use crate::commands::change::{mask_png, overlay_png};
use crate::commands::common::store_blobs;
use crate::grid::{self, GridConfig};
use crate::net::NetConfig;
use crate::node::{Node, NodeConfig};
use idlegrid_kernels::change::{self, ChangeParams};

/// Arguments of `idlegrid demo`.
#[derive(clap::Args, Debug)]
pub struct DemoArgs {
    /// Worker peers to start.
    #[arg(long, default_value_t = 3)]
    pub workers: usize,
    /// Width and height of the generated image pair.
    #[arg(long, default_value_t = 640)]
    pub size: u32,
    /// Where to write before.png, after.png, mask.png, overlay.png and report.json.
    #[arg(long, default_value = "idlegrid-demo")]
    pub out: PathBuf,
}

pub fn run(args: DemoArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(demo(args))
}

fn loopback() -> anyhow::Result<Vec<Multiaddr>> {
    Ok(vec!["/ip4/127.0.0.1/tcp/0".parse()?])
}

async fn start_peer(
    data_dir: PathBuf,
    serve: bool,
    bootstrap: Vec<Multiaddr>,
) -> anyhow::Result<Node> {
    let mut config = NodeConfig::new(data_dir);
    config.net = NetConfig {
        listen: loopback()?,
        mdns: false,
        bootstrap,
        ..NetConfig::default()
    };
    config.worker.serve = serve;
    config.advertise = serve;
    config.cores = 1;
    Ok(Node::start(config).await?)
}

async fn demo(args: DemoArgs) -> anyhow::Result<()> {
    if args.workers == 0 || args.workers > 16 {
        anyhow::bail!("--workers must be between 1 and 16");
    }
    if !(64..=4096).contains(&args.size) {
        anyhow::bail!("--size must be between 64 and 4096");
    }
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    let scratch = std::env::temp_dir().join(format!("idlegrid-demo-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);

    // Workers: the first is everyone's bootstrap peer, as a long-lived office PC would be.
    let mut workers = Vec::new();
    let mut bootstrap = Vec::new();
    for i in 0..args.workers {
        let node = start_peer(scratch.join(format!("worker{i}")), true, bootstrap.clone()).await?;
        let addrs = tokio::time::timeout(Duration::from_secs(10), node.listen_addrs())
            .await
            .context("a worker did not start listening")??;
        println!("worker {i}: {} on {}", node.peer_id(), addrs[0]);
        if i == 0 {
            bootstrap = addrs;
        }
        workers.push(node);
    }
    // Advertise again now that the workers know each other.
    for worker in &workers {
        // What a worker of the default config serves (not the test-only noop).
        let keys = crate::worker::kernels(&crate::worker::WorkerConfig::default())
            .iter()
            .map(|(name, version)| crate::net::kernel_key(name, *version))
            .collect();
        worker.client.provide(keys).await?;
    }

    let pair = change::sample_pair(args.size, args.size, 2005);
    let before = image::DynamicImage::ImageRgb8(pair.before);
    let after = image::DynamicImage::ImageRgb8(pair.after);
    before.save(args.out.join("before.png"))?;
    after.save(args.out.join("after.png"))?;
    let diff = change::prep::difference_of(&before, &after);
    let params = ChangeParams {
        band_rows: 32,
        ..ChangeParams::default()
    };
    let plan = change::plan(&diff, &params)?;
    let rows = |&(start, end): &(u32, u32)| end - start;
    println!(
        "job: change detection on a generated {0}x{0} pair, {1} chunks of {2}–{3} rows",
        args.size,
        plan.chunks.len(),
        plan.bands.iter().map(rows).min().unwrap_or(0),
        plan.bands.iter().map(rows).max().unwrap_or(0),
    );

    let submitter = start_peer(scratch.join("submitter"), false, bootstrap).await?;
    println!(
        "submitter {} knows only worker 0; finding the others through the DHT...",
        submitter.peer_id()
    );
    let (job, blobs) = crate::jobs::change_job(&plan);
    let _resident = store_blobs(&submitter, blobs).await?;
    // The workers run in this process, on this machine: the user's own, so their
    // results are taken as a closed pool's are, not recomputed (`--trust all`).
    println!(
        "the workers are this machine's own: their results are trusted (--trust all), not \
         recomputed"
    );
    let config = GridConfig {
        min_peers: args.workers,
        discover_timeout: Duration::from_secs(60),
        trust: idlegrid_scheduler::Trust::All,
        ..GridConfig::default()
    };
    let started = Instant::now();
    let outcome = grid::run_job(&submitter, job, config).await?;
    let elapsed = started.elapsed();
    let results = tokio::task::block_in_place(|| outcome.results.all_bytes())?;
    let mask = plan.assemble(&results)?;
    let png = mask_png(&mask)?;
    std::fs::write(args.out.join("mask.png"), &png)?;
    std::fs::write(args.out.join("overlay.png"), overlay_png(&after, &mask)?)?;
    outcome.report.write(&args.out.join("report.json"))?;

    println!("\nwho computed what:");
    print!("{}", outcome.report.table());
    let remote: u64 = outcome.report.remote_chunks();
    println!(
        "{} chunks in {:.2} s, {} of them by remote peers; changed {:.1}% of the pixels",
        plan.chunks.len(),
        elapsed.as_secs_f64(),
        remote,
        100.0 * mask.changed_fraction()
    );

    // The invariant, shown: the same job on this machine alone gives the same bytes.
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let local = crate::commands::change::execute_local(&plan, threads, Instant::now())?;
    let local_png = mask_png(&plan.assemble(&local)?)?;
    let same = local_png == png;
    println!(
        "mask blake3 {} — {} the local run's",
        blake3::hash(&png).to_hex(),
        if same {
            "identical to"
        } else {
            "DIFFERENT from"
        }
    );
    println!(
        "wrote {}/{{before,after,mask,overlay}}.png and report.json",
        args.out.display()
    );
    drop(submitter);
    drop(workers);
    let _ = std::fs::remove_dir_all(&scratch);
    if !same {
        anyhow::bail!("the grid's mask differs from the local one");
    }
    Ok(())
}
