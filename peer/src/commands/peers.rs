//! `idlegrid peers`: the peers this machine can see.
//!
//! Starts a short-lived, non-serving peer, looks for others for `--wait` (mDNS, the DHT
//! through bootstrap peers, `--peer`), probes each, and prints PeerId, addresses, how
//! it was found, agent version, kernels offered, RTT, from the last job this machine
//! submitted the peer's benchmark score and breaker state (`--bench` measures a fresh
//! score on the change kernel now), and its trust record: results verified in a row,
//! or banned and why. The agent strings and kernel names printed come from the peers,
//! made printable where they were received (`net`).

use std::collections::HashMap;
use std::time::Duration;

use anyhow::Context;
use libp2p::PeerId;

use crate::commands::common::{
    load_peer_memory, start_submitter, store_blobs, submit_dir, NetArgs,
};
use crate::grid::remote;
use crate::grid::report::human;
use crate::jobs::JobBlob;
use crate::net::{kernel_key, NetError};
use crate::trust::TrustBook;
use crate::units::parse_duration;
use idlegrid_scheduler::Trust;

/// Arguments of `idlegrid peers`.
#[derive(clap::Args, Debug)]
pub struct PeersArgs {
    #[command(flatten)]
    pub net: NetArgs,
    /// How long to look for peers, e.g. 3s.
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    pub wait: Duration,
    /// Benchmark every peer on the change kernel's calibration chunk now.
    #[arg(long)]
    pub bench: bool,
}

pub fn run(args: PeersArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(peers(args))
}

async fn peers(args: PeersArgs) -> anyhow::Result<()> {
    let (node, _) = start_submitter(&args.net).await?;
    for (name, version) in idlegrid_kernels::supported() {
        let client = node.client.clone();
        tokio::spawn(async move {
            let _ = client.find_providers(kernel_key(&name, version)).await;
        });
    }
    tokio::time::sleep(args.wait).await;

    let (calibration, blobs) = idlegrid_kernels::change::calibration_task();
    // The calibration chunk's inputs stay in memory while the peers are benchmarked.
    let _resident = if args.bench {
        Some(
            store_blobs(
                &node,
                blobs.into_iter().map(|(_, b)| JobBlob::Bytes(b)).collect(),
            )
            .await?,
        )
    } else {
        None
    };
    // What the last jobs learnt of each peer (a second job at once keeps its own).
    let memory = load_peer_memory(&submit_dir(&args.net, 0));
    let trust = TrustBook::open(&submit_dir(&args.net, 0));
    let entries = node.client.peers().await?;
    let mut probes = Vec::new();
    for entry in entries {
        let Some(peer) = entry.peer else { continue };
        let client = node.client.clone();
        let store = node.store.clone();
        let calibration = calibration.clone();
        let bench = args.bench;
        probes.push(tokio::spawn(async move {
            let probe = remote::probe(&client, peer, Duration::from_secs(5)).await;
            let score = match (&probe, bench) {
                (Ok(_), true) => {
                    let cost = crate::jobs::change_cost(&calibration);
                    remote::bench(&client, &store, peer, &calibration, cost)
                        .await
                        .ok()
                }
                _ => None,
            };
            (entry, peer, probe, score)
        }));
    }
    let rtts: HashMap<PeerId, Option<Duration>> = node
        .client
        .peers()
        .await?
        .into_iter()
        .filter_map(|e| e.peer.map(|p| (p, e.rtt)))
        .collect();
    let mut rows = Vec::new();
    for probe in probes {
        rows.push(probe.await?);
    }
    print_bans(&trust);
    if rows.is_empty() {
        println!(
            "no peers found in {:?} (mDNS {}; give --peer or --bootstrap to look beyond the LAN)",
            args.wait,
            if args.net.no_mdns { "off" } else { "on" }
        );
        return Ok(());
    }
    println!(
        "{:<54} {:<8} {:<16} {:<20} {:>9} {:>8} {:<12} {:<9} {:<10} address",
        "peer", "found", "agent", "kernels", "score/s", "rtt", "route", "breaker", "trust"
    );
    rows.sort_by_key(|(_, peer, _, _)| *peer);
    for (entry, peer, probe, fresh_score) in rows {
        let found = entry
            .sources
            .iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>()
            .join("+");
        let (agent, kernels) = match &probe {
            Ok(info) => (
                info.agent.clone(),
                if info.kernels.is_empty() {
                    "(not serving)".to_string()
                } else {
                    info.kernels
                        .iter()
                        .map(|(k, v)| format!("{k}/{v}"))
                        .collect::<Vec<_>>()
                        .join(",")
                },
            ),
            Err(remote::Unusable::Net(NetError::Busy { .. })) => (
                entry.agent.clone().unwrap_or_else(|| "?".into()),
                "busy (too many requests queued)".to_string(),
            ),
            Err(e) => (
                entry.agent.clone().unwrap_or_else(|| "?".into()),
                format!("unreachable: {e}"),
            ),
        };
        let remembered = memory.get(&peer.to_string());
        let score = fresh_score
            .or(remembered.map(|m| m.bench_score))
            .map_or("-".to_string(), human);
        let rtt = rtts
            .get(&peer)
            .copied()
            .flatten()
            .or(entry.rtt)
            .map_or("-".to_string(), |d| {
                format!("{:.1}ms", d.as_secs_f64() * 1e3)
            });
        let breaker = remembered.map_or("-", |m| m.breaker.as_str());
        let route = entry.route.map_or("-".to_string(), |r| r.to_string());
        let address = entry
            .addrs
            .first()
            .map_or("-".to_string(), |a| a.to_string());
        let standing = trust_word(&trust, &peer);
        println!(
            "{:<54} {:<8} {:<16} {:<20} {:>9} {:>8} {:<12} {:<9} {:<10} {}",
            peer, found, agent, kernels, score, rtt, route, breaker, standing, address
        );
    }
    Ok(())
}

/// `banned`, `trusted:N` (N results verified in a row, enough to be believed) or
/// `new:N/10`.
fn trust_word(book: &TrustBook, peer: &PeerId) -> String {
    let after = Trust::default().after();
    match book.get(peer) {
        Some(r) if r.banned.is_some() => "banned".to_string(),
        Some(r) if r.in_a_row >= after => format!("trusted:{}", r.in_a_row),
        Some(r) => format!("new:{}/{after}", r.in_a_row),
        None => format!("new:0/{after}"),
    }
}

/// The peers this machine banned, seen now or not, with the evidence.
fn print_bans(book: &TrustBook) {
    for (peer, record) in book.records() {
        if let Some(ban) = &record.banned {
            println!(
                "banned {peer}: returned {} for chunk {} where this machine computed {}",
                ban.claimed.get(..16).unwrap_or(&ban.claimed),
                ban.chunk.get(..16).unwrap_or(&ban.chunk),
                ban.settled.get(..16).unwrap_or(&ban.settled),
            );
        }
    }
}
