//! Running one job on the grid, from the submitting peer: find peers, probe and
//! benchmark them, drive the scheduler with what happens, and hand the verified
//! results to the caller's assembler in chunk order. Kernel-agnostic: a job is a list
//! of [`TaskSpec`]s with costs (listed, or made from their index: [`ChunkList`]), a
//! calibration chunk, and the caller's assembly afterwards.
//!
//! Data flow: [`run_job`] builds a `JobLoop` (`job_loop/`), the one task that owns
//! the scheduler. Probes and benchmarks (`peer_book.rs`) and chunk runs (`runs.rs`:
//! `remote.rs` for a peer, `local.rs` for this machine, the trusted worker) are spawned
//! tasks that report back on one channel; the loop turns each report into scheduler
//! events and carries out the actions that come back. Verified results are kept as
//! they arrive (`collected.rs`) and written to the blob store and the job's result log,
//! so a resumed job reuses them; what the job learns of each peer's honesty goes to
//! the trust book (`crate::trust`), which the next job starts from.

mod chunk_list;
mod collected;
mod job_loop;
mod local;
mod peer_book;
mod progress;
pub mod remote;
pub mod report;
mod runs;
mod standing;
pub mod watch;

use std::collections::HashMap;
use std::time::Duration;

use idlegrid_protocol::TaskSpec;
use libp2p::PeerId;
use tokio::sync::mpsc;

use crate::node::Node;
pub use chunk_list::ChunkList;
pub use collected::JobResults;
use idlegrid_scheduler::{SchedulerConfig, Trust};
use job_loop::JobLoop;
pub use report::{JobReport, PeerReport};

/// A job as the grid sees it.
#[derive(Clone)]
pub struct Job {
    /// Kernel name and version every chunk uses.
    pub kernel: String,
    pub kernel_version: u32,
    /// The chunks, in output order, with their costs and units. Their input blobs must
    /// be in the node's store.
    pub chunks: ChunkList,
    /// A small fixed chunk of the same kernel, to benchmark peers.
    pub calibration: TaskSpec,
    /// Its cost in work units.
    pub calibration_cost: u64,
    /// What the progress bar counts (`rows`, `frames`; how many per chunk is in
    /// `chunks`).
    pub unit: &'static str,
}

/// How a job uses the grid. Defaults: earned trust (a peer's results are checked
/// until it has a record), one replica, no spot checks, start at once with whoever is
/// there.
#[derive(Clone, Debug)]
pub struct GridConfig {
    /// Agreeing hosts needed per chunk (`--replicas`).
    pub replicas: u32,
    /// Whose results are believed without a check (`--trust`): earned (the default)
    /// or all (a closed pool of the user's own machines).
    pub trust: Trust,
    /// Fraction of chunks recomputed locally (`--spot-check`).
    pub spot_check: f64,
    /// Remote peers to wait for before starting (`--min-peers`). Default 0.
    pub min_peers: usize,
    /// How long to wait for them (`--discover-timeout`). Default 30 s.
    pub discover_timeout: Duration,
    /// A candidate must answer its probe within this. Default 5 s.
    pub probe_timeout: Duration,
    /// Hand weights (`--weights PEER=W`), replacing benchmark scores: W is the peer's
    /// speed relative to this machine's (2 = twice as fast, 0 = not used).
    pub weights: HashMap<PeerId, f64>,
    /// Compute on this machine too. Default on. Off, under earned trust this machine
    /// still checks the results that need it (and nothing else).
    pub compute_locally: bool,
    /// Show the live progress display (on a terminal).
    pub show_progress: bool,
    /// A peer found busy (its owner's policy said no), silent or failing its benchmark
    /// is probed again after this long, so a machine that becomes idle mid-job joins
    /// in. Default 15 s.
    pub reprobe_after: Duration,
    pub scheduler: SchedulerConfig,
    /// Someone watching the job (the web page): gets its views and results as they
    /// come. Default none.
    pub watch: Option<watch::JobWatch>,
}

impl Default for GridConfig {
    fn default() -> Self {
        GridConfig {
            replicas: 1,
            trust: Trust::default(),
            spot_check: 0.0,
            min_peers: 0,
            discover_timeout: Duration::from_secs(30),
            probe_timeout: Duration::from_secs(5),
            weights: HashMap::new(),
            compute_locally: true,
            show_progress: true,
            reprobe_after: Duration::from_secs(15),
            scheduler: SchedulerConfig::default(),
            watch: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum GridError {
    #[error(
        "{found} of the {wanted} peers asked for (--min-peers) answered within {waited:?}; {why}"
    )]
    NotEnoughPeers {
        found: usize,
        wanted: usize,
        waited: Duration,
        why: String,
    },
    #[error("invalid grid settings: {0}")]
    Config(String),
    #[error("the job failed: {0}")]
    Failed(String),
    /// A chunk failed in its kernel where the job believes it (this machine, a peer
    /// with a record, or every peer there is): the input itself is bad. `chunk` is its
    /// index in the job; `reason` the kernel's last error for it.
    #[error("the job failed: chunk {chunk} fails in the kernel on {peers} peer(s): {reason}")]
    ChunkFailed {
        chunk: usize,
        peers: u32,
        reason: String,
    },
    #[error("the network task stopped")]
    Stopped,
    #[error("cannot keep this job's results: {0}")]
    Results(#[from] crate::results::ResultLogError),
}

/// A finished job: one verified result per chunk, in chunk order, and its report.
pub struct JobOutcome {
    pub results: JobResults,
    pub report: JobReport,
}

/// Runs `job` on the grid and returns its verified results in chunk order. However it
/// ends, no chunk of it runs on afterwards and its inputs are unpinned.
pub async fn run_job(node: &Node, job: Job, config: GridConfig) -> Result<JobOutcome, GridError> {
    // Subscribed before the known peers are listed, so no discovery falls between.
    let events = node.client.subscribe();
    let (reports_tx, reports) = mpsc::unbounded_channel();
    let watch = config.watch.clone();
    let outcome = async {
        let mut job_loop = JobLoop::new(node, job, config, reports_tx)?;
        job_loop.probe_known_peers().await;
        job_loop.join_this_machine().await;
        job_loop.run(events, reports).await
    }
    .await;
    if let (Some(watch), Err(e)) = (&watch, &outcome) {
        watch.failed(&e.to_string());
    }
    outcome
}
