//! `idlegrid serve`: lend this machine's idle cores to the grid until stopped.
//!
//! Resolves the owner's settings (config file, then flags), starts a peer that accepts
//! chunks only when the policy and the access lists allow, advertises its kernels in
//! the DHT, computes at the lowest OS priority, prints the addresses others can use to
//! reach it, and on Ctrl-C or SIGTERM stops taking chunks, lets running ones finish
//! within the grace period and hands the rest back before it exits. With
//! `--bootstrap-node` it computes nothing and only serves the DHT.

use std::time::Duration;

use anyhow::Context;
use libp2p::multiaddr::Protocol;
use libp2p::Multiaddr;

use crate::commands::common::NetArgs;
use crate::commands::status::{PolicyArgs, Settings};
use crate::node::Node;
use crate::policy::{Gate, Sensors};

/// Arguments of `idlegrid serve`.
#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    #[command(flatten)]
    pub net: NetArgs,
    #[command(flatten)]
    pub policy: PolicyArgs,
    /// Run compute threads at normal priority instead of the lowest.
    #[arg(long)]
    pub normal_priority: bool,
    /// Run a long-lived bootstrap node: a DHT server that computes nothing and prints
    /// the multiaddrs others should use (give it a fixed --listen port).
    #[arg(long)]
    pub bootstrap_node: bool,
    /// Relay for peers behind NATs (a bootstrap node always does): they hold slots
    /// here and reach each other through this peer until hole punching connects them.
    #[arg(long)]
    pub relay_server: bool,
    #[command(flatten)]
    pub ui: crate::ui::UiArgs,
    /// Test builds only (fault suite): a misbehaving worker, see [`FaultArgs`].
    #[cfg(feature = "fault-injection")]
    #[command(flatten)]
    pub fault: FaultArgs,
}

/// Hidden flags of test builds (cargo feature `fault-injection`) that make a real
/// `serve` process misbehave, so the fault suite can run it in a network namespace.
#[cfg(feature = "fault-injection")]
#[derive(clap::Args, Debug)]
pub struct FaultArgs {
    /// Return wrong (but self-consistent) results.
    #[arg(long, hide = true)]
    pub fault_lie: bool,
    /// Sleep this long before each chunk, e.g. 300ms.
    #[arg(long, hide = true, value_parser = crate::units::parse_duration)]
    pub fault_delay: Option<Duration>,
    /// The delay starts with this chunk (0 = the first, which is usually the benchmark).
    #[arg(long, hide = true, default_value_t = 0)]
    pub fault_delay_from_chunk: u64,
}

#[cfg(feature = "fault-injection")]
impl FaultArgs {
    fn injection(&self) -> crate::worker::FaultInjection {
        crate::worker::FaultInjection {
            lie: self.fault_lie,
            delay: self.fault_delay.unwrap_or_default(),
            delay_from_chunk: self.fault_delay_from_chunk,
            ..crate::worker::FaultInjection::default()
        }
    }
}

pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(serve(args))
}

/// After the chunks are drained, how long answers to the last polls and result
/// fetches may take before the connections close.
const LINGER: Duration = Duration::from_secs(2);

/// Addresses worth telling others: not the unspecified or loopback ones.
fn public_addrs(addrs: &[Multiaddr]) -> Vec<Multiaddr> {
    addrs
        .iter()
        .filter(|a| {
            !a.iter().any(|p| match p {
                Protocol::Ip4(ip) => ip.is_loopback() || ip.is_unspecified(),
                Protocol::Ip6(ip) => ip.is_loopback() || ip.is_unspecified(),
                _ => false,
            })
        })
        .cloned()
        .collect()
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let mut settings = Settings::resolve(&args.policy, &args.net)?;
    settings.relay_server |= args.bootstrap_node || args.relay_server;
    let data_dir = args.net.data_dir();
    let mut config = args.net.node_config(data_dir.clone());
    config.worker.serve = !args.bootstrap_node;
    config.advertise = !args.bootstrap_node;
    config.low_priority = !args.normal_priority;
    if let Some(cores) = settings.cores {
        config.cores = cores.max(1);
    }
    if let Some(disk) = settings.disk {
        config.store_cap = disk;
    }
    if let Some(max_input) = settings.max_input {
        config.worker.max_input = max_input;
    }
    if args.net.listen.is_empty() && !settings.listen.is_empty() {
        config.net.listen = settings.listen.clone();
    }
    config.net.bootstrap = settings.bootstrap.clone();
    config.net.relays = settings.relays.clone();
    config.net.relay_server = settings.relay_server;
    config.net.swarm_key = settings.swarm_key;
    config.net.deny = settings.deny.clone();
    if let Some(n) = settings.max_connections {
        config.net.max_connections = n;
    }
    if let Some(n) = settings.max_connections_per_peer {
        config.net.max_connections_per_peer = n;
    }
    config.net.max_memory = settings
        .policy
        .max_memory
        .and_then(|m| usize::try_from(m).ok());
    // Inputs held in memory count against the owner's cap: at most a quarter of it, the
    // rest goes through the blob store on disk.
    if let Some(max_memory) = settings.policy.max_memory {
        config.worker.memory_inputs = config.worker.memory_inputs.min(max_memory / 4);
    }
    let gate = Gate::new(
        settings.accept_from.clone(),
        settings.deny.clone(),
        settings.policy.grace,
    );
    config.worker.gate = gate.clone();
    config.worker.wasm = settings.wasm.clone();
    idlegrid_kernels::wasm::set_watchdog(settings.wasm.timeout);
    let cores = config.cores;
    let kernels = crate::worker::kernels(&config.worker);
    #[cfg(not(feature = "fault-injection"))]
    let started = Node::start(config).await;
    #[cfg(feature = "fault-injection")]
    let started = Node::start_with_faults(config, args.fault.injection()).await;
    let node = started
        .with_context(|| format!("cannot start the peer (data dir {})", data_dir.display()))?;
    let addrs = tokio::time::timeout(Duration::from_secs(10), node.listen_addrs())
        .await
        .context("the peer did not start listening within 10 s")??;
    if args.bootstrap_node {
        println!("idlegrid bootstrap node {}", node.peer_id());
        let all = node.listen_addrs().await?;
        let public = public_addrs(&all);
        let shown = if public.is_empty() { &all } else { &public };
        println!("others should use one of these (--bootstrap, IDLEGRID_BOOTSTRAP or network.bootstrap):");
        for addr in shown {
            println!("  {addr}");
        }
    } else {
        println!(
            "idlegrid serving with {cores} core(s) as {}",
            node.peer_id()
        );
        for addr in &addrs {
            println!("  listening on {addr}");
        }
        for line in settings.describe() {
            println!("{line}");
        }
    }
    let _page = match args.ui.config() {
        Some(ui) => {
            let volunteer = crate::ui::Volunteer {
                gate: gate.clone(),
                settings: settings.describe(),
            };
            let page = crate::ui::Page::start(ui, crate::ui::Hub::for_node(&node, Some(volunteer)))
                .await?;
            println!("web page: {}", page.url());
            Some(page)
        }
        None => None,
    };
    println!("data dir {}; stop with Ctrl-C", data_dir.display());

    let watcher =
        (!args.bootstrap_node).then(|| gate.watch(settings.policy.clone(), Sensors::system()));
    // Provider records expire; advertise again now and then (and soon after start,
    // when the routing table has filled from the bootstrap peers).
    let client = node.client.clone();
    let advertise = (!args.bootstrap_node).then(|| {
        tokio::spawn(async move {
            let keys: Vec<String> = kernels
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
        })
    });
    wait_for_stop().await;
    if let Some(task) = advertise {
        task.abort();
    }
    if let Some(task) = watcher {
        task.abort();
    }
    hand_back(&gate, settings.policy.grace).await;
    drop(node);
    Ok(())
}

/// Stops taking chunks, lets running ones finish within `grace`, hands back the rest
/// (their submitters get a failure with the reason and reassign them at once), and
/// leaves a moment for the last answers to go out.
pub async fn hand_back(gate: &Gate, grace: Duration) {
    let working = gate.working();
    gate.shutdown();
    if working > 0 {
        println!("stopping: {working} chunk(s) in hand; running ones may finish within {grace:?}");
        tracing::info!("stopping with {working} chunk(s) in hand (grace {grace:?})");
    } else {
        println!("stopping");
    }
    // Past the grace period the gate evicts running chunks; each then fails at once.
    let left = gate.drained(grace + LINGER).await;
    if left > 0 {
        tracing::warn!("{left} chunk(s) did not end within the grace period");
    }
    if working > 0 {
        tokio::time::sleep(LINGER).await;
    }
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn wait_for_stop() {
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
