//! Shared set-up of the multi-peer tests: peers in one process on loopback TCP (no
//! mDNS: it does not work on 127.0.0.1), each with its own temporary data dir, and a
//! timeout on every wait.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use idlegrid::commands::common::store_blobs;
use idlegrid::grid::Job;
use idlegrid::jobs::JobBlob;
use idlegrid::net::NetConfig;
use idlegrid::node::{Node, NodeConfig};
use idlegrid::store::Resident;
use idlegrid::worker::{FaultInjection, WorkerConfig};
use idlegrid_kernels::change::{self, ChangeParams, ChangePlan};
use idlegrid_protocol::{TaskRequest, TaskResponse, TaskSpec};
use libp2p::{Multiaddr, PeerId};

/// Every wait in these tests ends by this.
pub const TIMEOUT: Duration = Duration::from_secs(120);

/// A fresh temporary directory for one peer, not created yet (see [`scratch_root`]).
pub fn temp_dir(name: &str) -> PathBuf {
    static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = scratch_root().join(format!("{name}-{n}"));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// Where this process's scratch directories go: `idlegrid-tests-<pid>` in the temp
/// dir. The first call removes the roots that earlier runs of the tests left (their
/// process is gone), so repeated runs do not fill the temp dir, while a failed run's
/// files stay for a look until the next run. Without `/proc` nothing is removed.
fn scratch_root() -> &'static Path {
    const PREFIX: &str = "idlegrid-tests-";
    static ROOT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    ROOT.get_or_init(|| {
        let tmp = std::env::temp_dir();
        if Path::new("/proc/self").exists() {
            for entry in std::fs::read_dir(&tmp).into_iter().flatten().flatten() {
                let name = entry.file_name();
                let Some(pid) = name.to_str().and_then(|n| n.strip_prefix(PREFIX)) else {
                    continue;
                };
                let gone = pid.parse::<u32>().is_ok() && !Path::new("/proc").join(pid).exists();
                if gone {
                    let _ = std::fs::remove_dir_all(entry.path());
                }
            }
        }
        tmp.join(format!("{PREFIX}{}", std::process::id()))
    })
}

fn loopback() -> Vec<Multiaddr> {
    vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()]
}

/// Logs to the test output with `IDLEGRID_LOG=info` (or any filter).
pub fn init_logging() {
    if let Ok(filter) = std::env::var("IDLEGRID_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_test_writer()
            .try_init();
    }
}

/// A test peer's worker: its config and how it misbehaves (by default it does not).
#[derive(Clone, Debug, Default)]
pub struct TestWorker {
    pub config: WorkerConfig,
    pub faults: FaultInjection,
}

impl From<WorkerConfig> for TestWorker {
    fn from(config: WorkerConfig) -> Self {
        TestWorker {
            config,
            faults: FaultInjection::default(),
        }
    }
}

/// A worker with the default config that misbehaves as `faults` says.
pub fn faulty(faults: FaultInjection) -> TestWorker {
    TestWorker {
        config: WorkerConfig::default(),
        faults,
    }
}

/// Starts a peer on loopback that dials `peers`. Test peers run the `noop` kernel for
/// others (production workers refuse it).
pub async fn start(
    name: &str,
    serve: bool,
    worker: impl Into<TestWorker>,
    peers: Vec<Multiaddr>,
) -> Node {
    start_with(name, serve, worker, peers, |_| {}).await
}

/// [`start`], with `tweak` applied to the peer's config last.
pub async fn start_with(
    name: &str,
    serve: bool,
    worker: impl Into<TestWorker>,
    peers: Vec<Multiaddr>,
    tweak: impl FnOnce(&mut NodeConfig),
) -> Node {
    init_logging();
    let TestWorker {
        config: worker,
        faults,
    } = worker.into();
    let mut config = NodeConfig::new(temp_dir(name));
    config.net = NetConfig {
        listen: loopback(),
        mdns: false,
        peers,
        ..NetConfig::default()
    };
    config.worker = WorkerConfig {
        serve,
        noop_kernel: true,
        ..worker
    };
    config.cores = 1;
    tweak(&mut config);
    tokio::time::timeout(TIMEOUT, Node::start_with_faults(config, faults))
        .await
        .expect("node start timed out")
        .expect("node starts")
}

/// Starts `n` workers (`make(i)` configures worker i) and returns them with their
/// addresses.
/// A worker that benchmarks at full speed, then holds every job chunk `delay` before
/// computing it (so a test can strike while it surely holds one), behind `gate`.
pub fn slow_after_bench(delay: Duration, gate: idlegrid::policy::Gate) -> TestWorker {
    TestWorker {
        config: WorkerConfig {
            gate,
            ..WorkerConfig::default()
        },
        faults: FaultInjection {
            delay,
            delay_from_chunk: 1,
            ..FaultInjection::default()
        },
    }
}

pub async fn workers<W: Into<TestWorker>>(
    n: usize,
    make: impl Fn(usize) -> W,
) -> (Vec<Node>, Vec<Multiaddr>) {
    let mut nodes = Vec::new();
    let mut addrs = Vec::new();
    for i in 0..n {
        let node = start(&format!("worker{i}"), true, make(i), Vec::new()).await;
        let listen = tokio::time::timeout(TIMEOUT, node.listen_addrs())
            .await
            .expect("listen timed out")
            .expect("listen addrs");
        addrs.push(listen[0].clone());
        nodes.push(node);
    }
    (nodes, addrs)
}

/// A change plan on a generated pair, small enough for a test, in many bands.
pub fn change_plan(side: u32, band_rows: u32, sweeps: u32) -> ChangePlan {
    let params = ChangeParams {
        band_rows,
        sweeps,
        ..ChangeParams::default()
    };
    change::sample_plan(side, 11, &params).expect("plan")
}

/// The plan's chunks computed here, without any network: the reference output.
pub fn local_results(plan: &ChangePlan) -> Vec<Vec<u8>> {
    let blobs: std::collections::HashMap<_, _> = plan.blobs.iter().cloned().collect();
    plan.chunks
        .iter()
        .map(|spec| {
            let inputs: Vec<Vec<u8>> = spec.inputs.iter().map(|c| blobs[c].clone()).collect();
            idlegrid_kernels::run(spec, &inputs).expect("local run")
        })
        .collect()
}

/// Puts a job's blobs into a submitter's store; they stay in its memory too until the
/// returned set is dropped (hold it while the job runs, as the `change` command does).
pub async fn prepare(node: &Node, plan: &ChangePlan) -> (Job, Resident) {
    let (job, blobs): (Job, Vec<JobBlob>) = idlegrid::jobs::change_job(plan);
    let resident = store_blobs(node, blobs).await.expect("store blobs");
    (job, resident)
}

/// The job's mask, assembled from the results the submitter verified.
pub fn assembled(plan: &ChangePlan, outcome: &idlegrid::grid::JobOutcome) -> change::Mask {
    plan.assemble(&fetch_results(&outcome.results))
        .expect("assemble the mask")
}

/// The report's line for `peer`.
pub fn peer_line<'a>(
    report: &'a idlegrid::grid::JobReport,
    peer: &str,
) -> &'a idlegrid::grid::PeerReport {
    report
        .peers
        .iter()
        .find(|p| p.peer_id == peer)
        .unwrap_or_else(|| panic!("{peer} took no part in the job: {report:?}"))
}

/// A grid job's verified results, as its assembler gets them.
pub fn fetch_results(results: &idlegrid::grid::JobResults) -> Vec<Vec<u8>> {
    (0..results.len())
        .map(|i| results.bytes(i).expect("result held").to_vec())
        .collect()
}

/// Runs `spec` on `worker` from `client` until it is answered with something other
/// than `Accepted`/`Running`.
pub async fn run_to_end(
    client: &idlegrid::net::Client,
    worker: PeerId,
    spec: TaskSpec,
) -> TaskResponse {
    let chunk = spec.id();
    let mut request = TaskRequest::Run { spec };
    loop {
        let answer = tokio::time::timeout(TIMEOUT, client.task(worker, request.clone()))
            .await
            .expect("timed out")
            .expect("answered");
        match answer {
            TaskResponse::Accepted { .. } | TaskResponse::Running { .. } => {
                request = TaskRequest::Poll { chunk };
            }
            other => return other,
        }
    }
}

/// A job's settings when only the remote workers compute and their results are taken
/// as a closed pool's (`--trust all`): the tests of distribution and faults, where a
/// check on the submitter would only blur what is measured. No progress display.
pub fn remote_pool(min_peers: usize) -> idlegrid::grid::GridConfig {
    idlegrid::grid::GridConfig {
        min_peers,
        compute_locally: false,
        trust: idlegrid_scheduler::Trust::All,
        show_progress: false,
        ..idlegrid::grid::GridConfig::default()
    }
}

/// Bytes of the files in `dir` (a blob store's finished blobs and blobs still being
/// written); 0 if it does not exist.
pub fn dir_bytes(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}
