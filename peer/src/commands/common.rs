//! Command-line pieces shared by the commands that start a peer: network and data-dir
//! flags, grid flags (`--replicas`, `--min-peers`, ...), their parsing, and `submit`,
//! which runs a planned job on the grid and reports who computed what.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use libp2p::{Multiaddr, PeerId};

use crate::commands::job_page::JobPage;
use crate::datadir::DataDirError;
use crate::grid::{self, GridConfig, Job, JobOutcome};
use crate::jobs::JobBlob;
use crate::net::NetConfig;
use crate::node::{Node, NodeConfig, NodeError};
use crate::store::Resident;
use crate::units::parse_duration;
use idlegrid_scheduler::Trust;

/// Flags of every command that starts a peer.
#[derive(clap::Args, Debug, Clone)]
pub struct NetArgs {
    /// Where this peer keeps its identity key and blob store
    /// [default: $XDG_DATA_HOME/idlegrid or ~/.local/share/idlegrid].
    #[arg(long, env = "IDLEGRID_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Dial this peer directly (repeatable), e.g. /ip4/10.0.0.5/tcp/4001/p2p/12D3Koo...
    #[arg(long = "peer", value_name = "MULTIADDR")]
    pub peers: Vec<Multiaddr>,
    /// A Kademlia bootstrap peer (repeatable), ending in /p2p/<PeerId>. Tried in order
    /// before those in IDLEGRID_BOOTSTRAP (comma-separated) and the config file.
    #[arg(long = "bootstrap", value_name = "MULTIADDR")]
    pub bootstrap: Vec<Multiaddr>,
    /// Join only a private pool: peers holding this pre-shared key file
    /// (`idlegrid keygen swarm-key FILE`). TCP only: QUIC is off with a key.
    #[arg(long, env = "IDLEGRID_SWARM_KEY", value_name = "FILE", value_parser = read_swarm_key)]
    pub swarm_key: Option<libp2p::pnet::PreSharedKey>,
    /// Address to listen on (repeatable) [default: all IPv4 interfaces, TCP and QUIC,
    /// OS-chosen ports].
    #[arg(long = "listen", value_name = "MULTIADDR")]
    pub listen: Vec<Multiaddr>,
    /// Do not use mDNS to find peers on the LAN.
    #[arg(long)]
    pub no_mdns: bool,
    /// A relay peer to hold a slot on from the start (repeatable), ending in
    /// /p2p/<PeerId>: peers that cannot dial this one reach it through the relay.
    /// Without it a slot is taken on a known relay once autonat finds this peer
    /// unreachable.
    #[arg(long = "relay", value_name = "MULTIADDR")]
    pub relays: Vec<Multiaddr>,
    /// Compute threads on this machine [default: all cores].
    #[arg(long)]
    pub cores: Option<usize>,
}

impl NetArgs {
    /// The data dir: the flag, or the XDG default.
    pub fn data_dir(&self) -> PathBuf {
        if let Some(dir) = &self.data_dir {
            return dir.clone();
        }
        if let Some(xdg) = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
            return PathBuf::from(xdg).join("idlegrid");
        }
        match std::env::var_os("HOME") {
            Some(home) => PathBuf::from(home).join(".local/share/idlegrid"),
            None => PathBuf::from(".idlegrid"),
        }
    }

    /// A node config for a peer keeping its state in `data_dir`.
    pub fn node_config(&self, data_dir: PathBuf) -> NodeConfig {
        let mut config = NodeConfig::new(data_dir);
        config.net = NetConfig {
            mdns: !self.no_mdns,
            peers: self.peers.clone(),
            bootstrap: self.bootstrap_list(),
            swarm_key: self.swarm_key,
            relays: self.relays.clone(),
            ..NetConfig::default()
        };
        if !self.listen.is_empty() {
            config.net.listen = self.listen.clone();
        }
        if let Some(cores) = self.cores {
            config.cores = cores.max(1);
        }
        config
    }
}

impl NetArgs {
    /// `--bootstrap` flags, then `IDLEGRID_BOOTSTRAP`; a bad entry in the variable is
    /// skipped with a warning naming it.
    pub fn bootstrap_list(&self) -> Vec<Multiaddr> {
        use idlegrid_bootstrap::{peers, BOOTSTRAP_ENV};
        let env = match std::env::var(BOOTSTRAP_ENV) {
            Ok(text) => peers::parse_list(BOOTSTRAP_ENV, &text).unwrap_or_else(|e| {
                tracing::warn!("ignoring {BOOTSTRAP_ENV}: {e}");
                Vec::new()
            }),
            Err(_) => Vec::new(),
        };
        peers::merge(&[self.bootstrap.clone(), env])
    }
}

/// Reads a pre-shared key file (`--swarm-key`).
pub fn read_swarm_key(path: &str) -> Result<libp2p::pnet::PreSharedKey, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {path}: {e}"))?;
    text.parse().map_err(|e| {
        format!(
            "{path} is not a swarm key file ({e}); make one with `idlegrid keygen swarm-key FILE`"
        )
    })
}

/// Flags of every command that submits a job.
#[derive(clap::Args, Debug, Clone)]
pub struct GridArgs {
    /// Compute on this machine only, without the network (with --ui: through the
    /// same scheduler, on a peer that neither listens nor looks for others).
    #[arg(long)]
    pub local: bool,
    /// Distinct hosts that must return the same result for a chunk to count (peers
    /// on one machine are one host).
    #[arg(long, default_value_t = 1)]
    pub replicas: u32,
    /// Whose results are believed without a check. `earned`: a peer's results are
    /// recomputed here (or matched by a peer that earned trust) until 10 in a row were
    /// right, then audited at random (at least 1 in 10); a peer caught once is banned
    /// for good. `all`: a closed pool of your own machines, nothing checked unless
    /// --spot-check asks.
    #[arg(long, value_enum, default_value_t = TrustArg::Earned)]
    pub trust: TrustArg,
    /// Fraction of chunks (0 to 1) recomputed on this machine to catch lying peers.
    #[arg(long, default_value_t = 0.0)]
    pub spot_check: f64,
    /// Wait for this many remote peers before starting.
    #[arg(long, default_value_t = 0)]
    pub min_peers: usize,
    /// Leave the computing to remote peers (a laptop on battery, a busy desk machine):
    /// this machine only hands out chunks, checks and joins the results (under
    /// --trust earned it still recomputes the results that need checking). Implies
    /// --min-peers 1 at least.
    #[arg(long, conflicts_with = "local")]
    pub no_compute: bool,
    /// How long to wait for --min-peers, e.g. 30s or 2m.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub discover_timeout: Duration,
    /// Hand weights instead of benchmark scores: PEERID=W,... where W is the peer's
    /// speed relative to this machine (2 = twice as fast; 0 excludes the peer).
    #[arg(long, value_parser = parse_weights)]
    pub weights: Option<Weights>,
    /// Write a JSON report of the job (per peer: chunks, score, failures, breaker, bytes).
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
    #[command(flatten)]
    pub ui: crate::ui::UiArgs,
    /// With --ui: close the page when the command ends, instead of keeping it up
    /// until Ctrl-C (for scripts).
    #[arg(long)]
    pub ui_no_wait: bool,
}

/// `--trust`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum TrustArg {
    Earned,
    All,
}

/// Parsed `--weights`.
#[derive(Clone, Debug)]
pub struct Weights(pub HashMap<PeerId, f64>);

/// Parses `PEERID=W,PEERID=W`.
pub fn parse_weights(text: &str) -> Result<Weights, String> {
    let mut weights = HashMap::new();
    for item in text.split(',').filter(|s| !s.trim().is_empty()) {
        let (peer, weight) = item
            .split_once('=')
            .ok_or_else(|| format!("{item:?} is not PEERID=WEIGHT"))?;
        let peer: PeerId = peer
            .trim()
            .parse()
            .map_err(|_| format!("{peer:?} is not a PeerId"))?;
        let weight: f64 = weight
            .trim()
            .parse()
            .map_err(|_| format!("weight {weight:?} of {peer} is not a number"))?;
        if !(weight.is_finite() && weight >= 0.0) {
            return Err(format!("weight {weight} of {peer} must be >= 0"));
        }
        weights.insert(peer, weight);
    }
    Ok(Weights(weights))
}

impl GridArgs {
    pub fn grid_config(&self) -> anyhow::Result<GridConfig> {
        if self.replicas == 0 {
            anyhow::bail!("--replicas must be at least 1");
        }
        if !(0.0..=1.0).contains(&self.spot_check) {
            anyhow::bail!(
                "--spot-check must be between 0 and 1, not {}",
                self.spot_check
            );
        }
        if self.no_compute && self.spot_check > 0.0 && self.trust == TrustArg::All {
            anyhow::bail!(
                "--spot-check recomputes chunks on this machine, so it cannot go with \
                 --no-compute --trust all"
            );
        }
        Ok(GridConfig {
            replicas: self.replicas,
            trust: match self.trust {
                TrustArg::Earned => Trust::default(),
                TrustArg::All => Trust::All,
            },
            spot_check: self.spot_check,
            min_peers: if self.no_compute {
                self.min_peers.max(1)
            } else {
                self.min_peers
            },
            compute_locally: !self.no_compute,
            discover_timeout: self.discover_timeout,
            weights: self.weights.clone().map(|w| w.0).unwrap_or_default(),
            ..GridConfig::default()
        })
    }
}

/// Starts a submitting peer, stores the job's blobs, runs the job on the grid, prints
/// who computed what, and returns the verified results in chunk order. The peer keeps
/// its state in `<data dir>/submit`, apart from a `serve` on the same machine.
pub async fn submit(
    net: &NetArgs,
    grid_args: &GridArgs,
    blobs: Vec<JobBlob>,
    job: Job,
    page: &JobPage,
) -> anyhow::Result<(JobOutcome, Node)> {
    let mut config = grid_args.grid_config()?;
    let (node, data_dir) = start_peer(net, grid_args.local).await?;
    config.watch = page.open(&node, &job).await?;
    let _resident = store_blobs(&node, blobs).await?;
    let outcome = grid::run_job(&node, job, config).await?;
    save_peer_memory(&data_dir, &outcome.report);
    Ok((outcome, node))
}

/// Data dirs a submitting peer may use beside `serve`'s: `<data dir>/submit`, then, while
/// another job (or `peers`) runs from it, `submit-2` … `submit-8`, each with its own
/// identity, so two jobs from one machine are two peers to the grid.
const SUBMIT_DIRS: usize = 8;

/// The submit dir of try `i` (0-based); 0 is the one `peers` reads its memory from.
pub fn submit_dir(net: &NetArgs, i: usize) -> PathBuf {
    match i {
        0 => net.data_dir().join("submit"),
        _ => net.data_dir().join(format!("submit-{}", i + 1)),
    }
}

/// Starts a peer that submits (serves nothing) in the first free submit dir.
pub async fn start_submitter(net: &NetArgs) -> anyhow::Result<(Node, PathBuf)> {
    start_peer(net, false).await
}

/// [`start_submitter`]; `alone`: a peer that neither listens, nor looks for others,
/// nor dials anyone (`--local --ui`: the job runs on this machine through the
/// scheduler, so the page shows it).
async fn start_peer(net: &NetArgs, alone: bool) -> anyhow::Result<(Node, PathBuf)> {
    for i in 0..SUBMIT_DIRS {
        let data_dir = submit_dir(net, i);
        let mut node_config = net.node_config(data_dir.clone());
        node_config.worker.serve = false;
        if alone {
            node_config.net.listen = Vec::new();
            node_config.net.mdns = false;
            node_config.net.peers = Vec::new();
            node_config.net.bootstrap = Vec::new();
            node_config.net.relays = Vec::new();
        }
        match Node::start(node_config).await {
            Ok(node) => {
                if i > 0 {
                    eprintln!(
                        "{} is in use by another job from this machine; this one submits from {}",
                        submit_dir(net, 0).display(),
                        data_dir.display()
                    );
                }
                return Ok((node, data_dir));
            }
            Err(NodeError::DataDir(DataDirError::InUse { .. })) => continue,
            Err(e) => {
                return Err(anyhow::Error::new(e).context(format!(
                    "cannot start the peer (data dir {})",
                    data_dir.display()
                )))
            }
        }
    }
    anyhow::bail!(
        "{} and the {} next to it are all in use by other jobs from this machine: wait for one \
         to end, or give this one its own --data-dir",
        submit_dir(net, 0).display(),
        SUBMIT_DIRS - 1
    )
}

/// What `peers` shows of a peer from the last job this machine submitted.
#[derive(serde::Serialize, serde::Deserialize, Clone, Debug)]
pub struct RememberedPeer {
    pub bench_score: f64,
    pub breaker: String,
    pub chunks_done: u64,
    pub failures: u64,
}

const PEER_MEMORY: &str = "peers.json";

/// Remembers each peer's score and breaker after a job (best effort).
fn save_peer_memory(data_dir: &Path, report: &grid::JobReport) {
    let mut memory = load_peer_memory(data_dir);
    for peer in report
        .peers
        .iter()
        .filter(|p| p.role == grid::report::Role::Remote)
    {
        memory.insert(
            peer.peer_id.clone(),
            RememberedPeer {
                bench_score: peer.bench_score,
                breaker: peer.breaker.to_string(),
                chunks_done: peer.chunks_done,
                failures: peer.failures,
            },
        );
    }
    if let Ok(json) = serde_json::to_vec_pretty(&memory) {
        let path = data_dir.join(PEER_MEMORY);
        let tmp = path.with_extension("json.tmp");
        if std::fs::write(&tmp, json)
            .and_then(|_| std::fs::rename(&tmp, &path))
            .is_err()
        {
            tracing::warn!("cannot save {}", path.display());
        }
    }
}

/// The peers remembered from earlier jobs, by PeerId text.
pub fn load_peer_memory(data_dir: &Path) -> HashMap<String, RememberedPeer> {
    std::fs::read(data_dir.join(PEER_MEMORY))
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or_default()
}

/// Most bytes of a job's planner-made blobs a submitter keeps in memory while the job
/// runs (see [`store_blobs`]); past it they are read from the store's files.
pub const RESIDENT_BUDGET: u64 = 1 << 30;

/// Puts a job's blobs into the node's store. The planner's blobs (the change kernel's
/// tables and pieces: already in memory) stay in memory too, within
/// [`RESIDENT_BUDGET`], until the returned set is dropped: hold it while the job runs,
/// and this machine's own chunks and the pieces it serves are read from memory, not
/// from their files.
pub async fn store_blobs(node: &Node, blobs: Vec<JobBlob>) -> anyhow::Result<Resident> {
    let store = node.store.clone();
    tokio::task::spawn_blocking(move || -> anyhow::Result<Resident> {
        let mut resident = Resident::new(&store);
        for blob in blobs {
            match blob {
                JobBlob::Bytes(bytes)
                    if resident.bytes() + bytes.len() as u64 <= RESIDENT_BUDGET =>
                {
                    store.put_resident(bytes, &mut resident)?;
                }
                JobBlob::Bytes(bytes) => {
                    store.put(&bytes)?;
                }
                JobBlob::File(path) => {
                    store.register_file(&path)?;
                }
            }
        }
        Ok(resident)
    })
    .await?
}

/// A job run on the grid from a synchronous command. The submitting peer (and so its
/// hold on its data dir) stays up until this is dropped, so the results the outcome
/// reads from the blob store stay there while the command assembles them.
pub struct GridRun {
    pub outcome: JobOutcome,
    // Dropped in this order: the peer stops, then its runtime.
    _node: Node,
    _runtime: tokio::runtime::Runtime,
}

impl GridRun {
    /// The outcome alone, once every result the command needs has been read.
    pub fn into_outcome(self) -> JobOutcome {
        self.outcome
    }
}

/// Runs a planned job on the grid from a synchronous command: starts a runtime and a
/// submitting peer, and runs the job; the outcome's results are then read in chunk
/// order, off the runtime.
pub fn run_on_grid(
    net: &NetArgs,
    grid_args: &GridArgs,
    blobs: Vec<JobBlob>,
    job: Job,
    page: &JobPage,
) -> anyhow::Result<GridRun> {
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    let (outcome, node) = runtime.block_on(submit(net, grid_args, blobs, job, page))?;
    Ok(GridRun {
        outcome,
        _node: node,
        _runtime: runtime,
    })
}

/// Writes the report (if asked) with the output's path and hash, and prints the table.
pub fn finish_report(
    outcome: &mut JobOutcome,
    output: &Path,
    report_path: Option<&Path>,
) -> anyhow::Result<()> {
    outcome.report.output = Some(output.to_path_buf());
    let mut hasher = blake3::Hasher::new();
    std::fs::File::open(output)
        .and_then(|file| hasher.update_reader(file).map(|_| ()))
        .with_context(|| format!("cannot read back the output {}", output.display()))?;
    outcome.report.output_blake3 = Some(hasher.finalize().to_hex().to_string());
    eprint!("{}", outcome.report.table());
    if let Some(path) = report_path {
        outcome
            .report
            .write(path)
            .with_context(|| format!("cannot write the report {}", path.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights() {
        let peer = PeerId::random();
        let parsed = parse_weights(&format!("{peer}=2.5")).unwrap();
        assert_eq!(parsed.0.get(&peer), Some(&2.5));
        assert!(parse_weights("nope=1").is_err());
        assert!(parse_weights(&format!("{peer}=-1")).is_err());
    }
}
