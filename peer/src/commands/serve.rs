//! `idlegrid serve`: lend this machine's idle cores to the grid until stopped.
//!
//! Starts a peer that accepts chunks, advertises its kernels in the DHT, computes at
//! the lowest OS priority, prints the addresses others can use to reach it, and stops
//! cleanly on Ctrl-C or SIGTERM.

use std::time::Duration;

use anyhow::Context;

use crate::commands::common::NetArgs;
use crate::node::Node;

/// Arguments of `idlegrid serve`.
#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    #[command(flatten)]
    pub net: NetArgs,
    /// Run compute threads at normal priority instead of the lowest.
    #[arg(long)]
    pub normal_priority: bool,
}

pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(serve(args))
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let data_dir = args.net.data_dir();
    let mut config = args.net.node_config(data_dir.clone());
    config.worker.serve = true;
    config.advertise = true;
    config.low_priority = !args.normal_priority;
    let cores = config.cores;
    let node = Node::start(config)
        .await
        .with_context(|| format!("cannot start the peer (data dir {})", data_dir.display()))?;
    let addrs = tokio::time::timeout(Duration::from_secs(10), node.listen_addrs())
        .await
        .context("the peer did not start listening within 10 s")??;
    println!(
        "idlegrid serving with {cores} core(s) as {}",
        node.peer_id()
    );
    for addr in &addrs {
        println!("  listening on {addr}");
    }
    println!("data dir {}; stop with Ctrl-C", data_dir.display());

    // Provider records expire; advertise again now and then (and soon after start,
    // when the routing table has filled from the bootstrap peers).
    let client = node.client.clone();
    let advertise = tokio::spawn(async move {
        let keys: Vec<String> = idlegrid_kernels::supported()
            .iter()
            .map(|(name, version)| crate::net::kernel_key(name, *version))
            .collect();
        let mut every = tokio::time::interval(Duration::from_secs(60));
        loop {
            every.tick().await;
            if client.provide(keys.clone()).await.is_err() {
                break;
            }
        }
    });
    wait_for_stop().await;
    advertise.abort();
    println!("stopping");
    drop(node);
    Ok(())
}

/// Resolves on Ctrl-C or SIGTERM.
async fn wait_for_stop() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
