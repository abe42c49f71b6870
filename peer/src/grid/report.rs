//! What a job tells the user at the end: the per-peer "who computed what" table on the
//! terminal and the `--report FILE` JSON (output path and blake3, chunk count, elapsed
//! time, the trust settings and the checks they cost, and per peer: PeerId, how found,
//! benchmark score, chunks done, how its results were verified, its trust record,
//! failures, breaker state, bytes sent and received).

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use libp2p::PeerId;
use serde::Serialize;

use super::peer_book::PeerBook;
use crate::net::{Route, Source};
use idlegrid_scheduler::Scheduler;

/// Whether a report line is this machine's own worker or another peer (`local`,
/// `remote` in the JSON). This machine sorts first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Local,
    Remote,
}

/// One peer's line in the report.
#[derive(Clone, Debug, Serialize)]
pub struct PeerReport {
    pub peer_id: String,
    /// `local` for this machine's own worker.
    pub role: Role,
    pub found_by: BTreeSet<Source>,
    /// Calibration score, work units per second.
    pub bench_score: f64,
    pub chunks_done: u64,
    /// Its results in this job that someone else confirmed: recomputed by this
    /// machine, or matched by a peer with a record on another host.
    pub results_confirmed: u64,
    /// Its results in this job taken on its record alone (earned trust, not audited,
    /// or any result in a trusted pool).
    pub results_believed: u64,
    /// Its results verified in a row after the job: its standing for the next one.
    pub verified_in_a_row: u32,
    pub failures: u64,
    pub breaker: &'static str,
    pub banned: bool,
    /// Disconnected or lost before the job ended (killed, crashed, cut off).
    pub left: bool,
    /// How it was connected when the job ended: `direct`, `hole-punched` (through
    /// NATs, by DCUtR) or `relayed`; null for this machine and for peers gone.
    pub route: Option<Route>,
    /// Input bytes this peer fetched from us.
    pub bytes_sent: u64,
    /// Result bytes we received from it.
    pub bytes_received: u64,
}

/// Every peer the scheduler knew, this machine first: the scheduler's counts with what
/// the job's peer book and the network add (how found, route, bytes each way).
pub(super) fn peer_reports(
    sched: &Scheduler<PeerId>,
    book: &PeerBook,
    me: PeerId,
    routes: &HashMap<PeerId, Route>,
    sent: &HashMap<PeerId, u64>,
) -> Vec<PeerReport> {
    let mut peers: Vec<PeerReport> = sched
        .peers()
        .map(|(peer, stats)| PeerReport {
            peer_id: peer.to_string(),
            role: if peer == me {
                Role::Local
            } else {
                Role::Remote
            },
            found_by: book.found_by.get(&peer).cloned().unwrap_or_default(),
            bench_score: book.scores.get(&peer).copied().unwrap_or(stats.score),
            chunks_done: stats.chunks_done,
            results_confirmed: stats.confirmed,
            results_believed: stats.believed,
            verified_in_a_row: stats.vouched,
            failures: stats.failures,
            breaker: stats.breaker.label(),
            banned: stats.banned,
            left: !stats.connected,
            route: routes.get(&peer).copied(),
            bytes_sent: sent.get(&peer).copied().unwrap_or(0),
            bytes_received: book.received.get(&peer).copied().unwrap_or(0),
        })
        .collect();
    peers.sort_by(|a, b| (a.role, &a.peer_id).cmp(&(b.role, &b.peer_id)));
    peers
}

/// The whole job's report.
#[derive(Clone, Debug, Serialize)]
pub struct JobReport {
    pub kernel: String,
    pub output: Option<PathBuf>,
    pub output_blake3: Option<String>,
    pub chunks: usize,
    /// Chunks whose result was already in the blob store from an earlier run.
    pub chunks_reused: usize,
    pub elapsed_seconds: f64,
    /// From the start of dispatch (once `--min-peers` peers were found, probed and
    /// benchmarked; at once without it) to the end.
    pub dispatch_seconds: f64,
    pub replicas: u32,
    pub spot_check: f64,
    /// `earned` (results of peers without a record are checked) or `all` (a trusted
    /// pool: nothing is checked unless spot checks ask).
    pub trust: &'static str,
    /// Remote results that had to be checked (no record, an audit, a disagreement).
    pub checks: u64,
    pub peers: Vec<PeerReport>,
}

impl JobReport {
    /// Chunks computed by remote peers (all but this machine).
    pub fn remote_chunks(&self) -> u64 {
        self.peers
            .iter()
            .filter(|p| p.role == Role::Remote)
            .map(|p| p.chunks_done)
            .sum()
    }

    /// Writes the JSON report atomically.
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        let json = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, json)?;
        std::fs::rename(&tmp, path)
    }

    /// The "who computed what" table, a line within 100 columns (PeerIds shortened:
    /// the JSON report has them whole).
    pub fn table(&self) -> String {
        let mut out = format!(
            "{:<11} {:<10} {:>7} {:>7} {:>8} {:>8} {:<9} {:>10}\n",
            "peer", "found", "chunks", "checked", "score/s", "failures", "breaker", "received"
        );
        for p in &self.peers {
            let found = if p.role == Role::Local {
                "local".to_string()
            } else {
                p.found_by
                    .iter()
                    .map(|s| s.to_string())
                    .collect::<Vec<_>>()
                    .join("+")
            };
            // Of a remote peer's results, how many someone else confirmed.
            let checked = match p.role {
                Role::Local => "-".to_string(),
                Role::Remote => p.results_confirmed.to_string(),
            };
            out.push_str(&format!(
                "{:<11} {:<10} {:>7} {:>7} {:>8} {:>8} {:<9} {:>10}{}\n",
                short_peer(&p.peer_id),
                found,
                p.chunks_done,
                checked,
                human(p.bench_score),
                p.failures,
                p.breaker,
                bytes(p.bytes_received),
                if p.banned {
                    "  BANNED"
                } else if p.left {
                    "  LEFT"
                } else {
                    ""
                }
            ));
        }
        out
    }
}

/// A rate or count as an integer with a unit prefix: 1234567 → "1235k", 12345678 →
/// "12M" (at most four digits).
pub fn human(x: f64) -> String {
    match x {
        x if x >= 1e10 => format!("{:.0}G", x / 1e9),
        x if x >= 1e7 => format!("{:.0}M", x / 1e6),
        x if x >= 1e4 => format!("{:.0}k", x / 1e3),
        x => format!("{x:.0}"),
    }
}

/// A PeerId as displays show it: its first 6 and last 4 characters.
pub fn short_peer(id: &str) -> String {
    let chars: Vec<char> = id.chars().collect();
    if chars.len() <= 11 {
        return id.to_string();
    }
    let head: String = chars[..6].iter().collect();
    let tail: String = chars[chars.len() - 4..].iter().collect();
    format!("{head}…{tail}")
}

pub fn bytes(n: u64) -> String {
    match n {
        n if n >= 1 << 30 => format!("{:.1} GiB", n as f64 / (1u64 << 30) as f64),
        n if n >= 1 << 20 => format!("{:.1} MiB", n as f64 / (1u64 << 20) as f64),
        n if n >= 1 << 10 => format!("{:.1} KiB", n as f64 / 1024.0),
        n => format!("{n} B"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_forms() {
        let id = "12D3KooWEE3RHYQziq34gxYanNdB9ABjnex6HrPjdE9AA4Y8HwBA";
        assert_eq!(short_peer(id), "12D3Ko…HwBA");
        assert_eq!(short_peer("short"), "short");
        assert_eq!(human(999.4), "999");
        assert_eq!(human(12_345.0), "12k");
        assert_eq!(human(1_234_567.0), "1235k");
        assert_eq!(human(369_856_673.0), "370M");
    }
}
