//! What a job knows of each peer beyond the scheduler's view: how it was found, its
//! benchmark score, whether it is being probed, joined or unusable (and when to ask it
//! again), and the bytes it sent. Probing a peer is a spawned task that reports back to
//! the job loop as a [`Report`].

use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::Instant;

use libp2p::PeerId;
use tokio::sync::mpsc;

use super::runs::Report;
use super::{remote, GridConfig, Job};
use crate::net::Source;
use crate::node::Node;

/// Per-peer bookkeeping of a job (the scheduler keeps the rest).
#[derive(Default)]
pub(super) struct PeerBook {
    /// This machine's benchmark score, the unit of `--weights`.
    pub local_score: Option<f64>,
    pub found_by: HashMap<PeerId, BTreeSet<Source>>,
    pub scores: HashMap<PeerId, f64>,
    pub received: HashMap<PeerId, u64>,
    /// Probing or benchmarking now.
    pub probing: HashSet<PeerId>,
    /// Joined the job and still connected.
    pub joined: HashSet<PeerId>,
    /// Last reason a peer was not used (shown with --min-peers failures).
    pub unusable: HashMap<PeerId, String>,
    /// When each unusable peer that may change is probed again.
    pub reprobe_at: HashMap<PeerId, Instant>,
}

impl PeerBook {
    /// A hand weight from `--weights` in the scheduler's unit: the flag's weight is
    /// relative to this machine's benchmark score (weight 1 = as fast as this machine).
    pub fn weight_of(&self, config: &GridConfig, peer: PeerId) -> Option<f64> {
        let weight = *config.weights.get(&peer)?;
        Some(weight * self.local_score.unwrap_or(1.0))
    }

    /// Remote peers that joined the job.
    pub fn remote_joined(&self, me: PeerId) -> usize {
        self.joined.iter().filter(|p| **p != me).count()
    }

    /// Why each unusable peer was not used, for a `--min-peers` failure.
    pub fn why_not_enough(&self) -> String {
        if self.unusable.is_empty() {
            return "no other peer was found (is `idlegrid serve` running on the LAN? try --peer \
                    or --bootstrap)"
                .to_string();
        }
        self.unusable
            .iter()
            .map(|(p, why)| format!("{p}: {why}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// The peers whose time to be probed again has come; they leave the list.
    pub fn due_for_reprobe(&mut self, now: Instant) -> Vec<PeerId> {
        let due: Vec<PeerId> = self
            .reprobe_at
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(peer, _)| *peer)
            .collect();
        for peer in &due {
            self.reprobe_at.remove(peer);
        }
        due
    }

    /// Probes and benchmarks `peer` once (unless it is this machine, already in the job,
    /// being probed, or weighted 0); the outcome comes back on `reports`.
    pub fn start_probe(
        &mut self,
        node: &Node,
        job: &Job,
        config: &GridConfig,
        reports: &mpsc::UnboundedSender<Report>,
        peer: PeerId,
    ) {
        if peer == node.peer_id() || self.joined.contains(&peer) || !self.probing.insert(peer) {
            return;
        }
        if config.weights.get(&peer) == Some(&0.0) {
            return;
        }
        let client = node.client.clone();
        let store = node.store.clone();
        let reports = reports.clone();
        let calibration = job.calibration.clone();
        let cost = job.calibration_cost;
        let (kernel, version) = (job.kernel.clone(), job.kernel_version);
        let timeout = config.probe_timeout;
        tokio::spawn(async move {
            let outcome = async {
                let info = remote::probe(&client, peer, timeout).await?;
                remote::check_offer(&info, &kernel, version)?;
                let score = remote::bench(&client, &store, peer, &calibration, cost).await?;
                Ok::<_, remote::Unusable>((score, info.slots))
            }
            .await;
            let _ = reports.send(match outcome {
                Ok((score, slots)) => Report::Ready { peer, score, slots },
                Err(e) => Report::Unusable {
                    peer,
                    why: e.to_string(),
                    retry: e.may_change(),
                },
            });
        });
    }
}
