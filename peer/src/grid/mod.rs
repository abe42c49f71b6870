//! Running one job on the grid, from the submitting peer: find peers, probe and
//! benchmark them, drive the [`Scheduler`] with what happens, and collect verified
//! results in chunk order. Kernel-agnostic: a job is a list of [`TaskSpec`]s with
//! costs, a calibration chunk, and the caller's assembly afterwards.
//!
//! Data flow: a single task owns the scheduler. Discovery, probes, benchmarks and
//! chunk runs are spawned tasks that report back on one channel ([`Report`]); the loop
//! feeds each report to the scheduler as an event, carries out the returned actions
//! (spawn a run, cancel one, record a verified result), and ticks at the scheduler's
//! next wake-up. This machine computes too, as the trusted worker.

mod local;
mod progress;
pub mod remote;
pub mod report;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::{Duration, Instant};

use idlegrid_protocol::{Cid, TaskSpec};
use idlegrid_scheduler::{
    Action, ChunkIndex, Event, FailureKind, Outcome, Scheduler, SchedulerConfig,
};
use libp2p::PeerId;
use tokio::sync::mpsc;
use tokio::task::AbortHandle;

use crate::net::{kernel_key, PeerEvent, Route, Source};
use crate::node::Node;
use crate::results::ResultLog;
use local::{local_bench, run_local};
use progress::Progress;
pub use report::{JobReport, PeerReport};

/// A job as the grid sees it.
pub struct Job {
    /// Kernel name and version every chunk uses.
    pub kernel: String,
    pub kernel_version: u32,
    /// The chunks, in output order. Their input blobs must be in the node's store.
    pub chunks: Vec<TaskSpec>,
    /// Relative cost of each chunk, in the calibration's work units.
    pub costs: Vec<u64>,
    /// A small fixed chunk of the same kernel, to benchmark peers.
    pub calibration: TaskSpec,
    /// Its cost in work units.
    pub calibration_cost: u64,
    /// What the progress bar counts (`rows`, `frames`) and how many per chunk.
    pub unit: &'static str,
    pub units: Vec<u64>,
}

/// How a job uses the grid. Defaults: one replica, no spot checks, start at once with
/// whoever is there.
#[derive(Clone, Debug)]
pub struct GridConfig {
    /// Agreeing peers needed per chunk (`--replicas`).
    pub replicas: u32,
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
    /// Compute on this machine too. Default on.
    pub compute_locally: bool,
    /// Show the live progress display (on a terminal).
    pub show_progress: bool,
    /// A peer found busy (its owner's policy said no), silent or failing its benchmark
    /// is probed again after this long, so a machine that becomes idle mid-job joins
    /// in. Default 15 s.
    pub reprobe_after: Duration,
    pub scheduler: SchedulerConfig,
}

impl Default for GridConfig {
    fn default() -> Self {
        GridConfig {
            replicas: 1,
            spot_check: 0.0,
            min_peers: 0,
            discover_timeout: Duration::from_secs(30),
            probe_timeout: Duration::from_secs(5),
            weights: HashMap::new(),
            compute_locally: true,
            show_progress: true,
            reprobe_after: Duration::from_secs(15),
            scheduler: SchedulerConfig::default(),
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
    #[error("the network task stopped")]
    Stopped,
    #[error("cannot keep this job's results: {0}")]
    Results(#[from] crate::results::ResultLogError),
}

/// A finished job: one verified result per chunk, in chunk order.
pub struct JobOutcome {
    pub results: Vec<Cid>,
    pub report: JobReport,
}

/// What spawned tasks tell the job loop.
enum Report {
    Ready {
        peer: PeerId,
        score: f64,
        slots: u32,
    },
    Unusable {
        peer: PeerId,
        why: String,
        /// Worth probing again later ([`remote::Unusable::may_change`]).
        retry: bool,
    },
    Done {
        peer: PeerId,
        chunk: ChunkIndex,
        result: Cid,
        bytes: u64,
    },
    Failed {
        peer: PeerId,
        chunk: ChunkIndex,
        kind: FailureKind,
        why: String,
    },
}

/// Per-peer bookkeeping of the job loop (the scheduler keeps the rest).
#[derive(Default)]
struct PeerBook {
    /// This machine's benchmark score, the unit of `--weights`.
    local_score: Option<f64>,
    found_by: HashMap<PeerId, BTreeSet<Source>>,
    scores: HashMap<PeerId, f64>,
    received: HashMap<PeerId, u64>,
    /// Probing or benchmarking now.
    probing: HashSet<PeerId>,
    /// Joined the scheduler and still connected.
    joined: HashSet<PeerId>,
    /// Last reason a peer was not used (shown with --min-peers failures).
    unusable: HashMap<PeerId, String>,
    /// When each unusable peer that may change is probed again.
    reprobe_at: HashMap<PeerId, Instant>,
}

/// Runs `job` on the grid and returns its verified results in chunk order.
pub async fn run_job(node: &Node, job: Job, config: GridConfig) -> Result<JobOutcome, GridError> {
    let started = Instant::now();
    let me = node.peer_id();
    let mut events = node.client.subscribe();
    let (tx, mut rx) = mpsc::unbounded_channel::<Report>();
    let mut book = PeerBook::default();

    // Which chunks are spot-checked depends on the job (the hash of its chunk ids), so
    // a re-run checks the same ones and a peer cannot tell which from one chunk; the
    // same hash names the job's result log.
    let job_id = {
        let mut hasher = blake3::Hasher::new();
        for spec in &job.chunks {
            hasher.update(&spec.id().0);
        }
        Cid::from_hasher(&hasher)
    };
    // Chunks finished by an earlier run of the same job are taken from the store.
    let mut log = ResultLog::open(&node.store.results_dir(), &job_id)?;
    let mut results: Vec<Option<Cid>> = job
        .chunks
        .iter()
        .map(|spec| log.known(&spec.id(), &node.store))
        .collect();
    let reused = results.iter().filter(|r| r.is_some()).count();
    let todo: Vec<usize> = (0..job.chunks.len())
        .filter(|&i| results[i].is_none())
        .collect();
    node.store
        .pin(job.chunks.iter().flat_map(|s| s.inputs.iter().copied()));

    let mut sched_config = config.scheduler.clone();
    sched_config.replicas = config.replicas;
    sched_config.spot_check = config.spot_check;
    sched_config.spot_check_seed = u64::from_le_bytes(job_id.0[..8].try_into().unwrap_or([0; 8]));
    let costs: Vec<u64> = todo
        .iter()
        .map(|&i| job.costs.get(i).copied().unwrap_or(1))
        .collect();
    let total_work: f64 = costs.iter().map(|&c| c as f64).sum();
    // Replaced when the job starts (see `pipeline_for`); it sees no event before.
    let mut sched: Scheduler<PeerId> = Scheduler::new(sched_config.clone(), costs.clone())
        .map_err(|e| GridError::Config(e.to_string()))?;
    let mut sched_started = false;
    let mut dispatch_started: Option<Instant> = None;

    let mut progress = Progress::new(&job, &results, config.show_progress);
    let mut running: HashMap<(PeerId, ChunkIndex), AbortHandle> = HashMap::new();
    let mut actions = Vec::new();
    let now = |started: Instant| started.elapsed();

    // Everyone already known is a candidate; so is everyone found from now on. Their
    // probes and benchmarks start before this machine's own benchmark, so the two run
    // at the same time instead of one after the other.
    if let Ok(known) = node.client.peers().await {
        for entry in known {
            if let Some(peer) = entry.peer {
                book.found_by.entry(peer).or_default().extend(entry.sources);
                start_probe(node, &job, &config, &tx, &mut book, peer);
            }
        }
    }
    // This machine computes too: benchmark it; it joins as the trusted worker when the
    // job starts.
    let mut joins: Vec<Event<PeerId>> = Vec::new();
    if config.compute_locally {
        tracing::debug!("benchmarking this machine");
        let score = local_bench(node, &job).await;
        tracing::debug!("this machine scores {score:.0} units/s");
        book.scores.insert(me, score);
        book.local_score = Some(score);
        joins.push(Event::PeerJoined {
            peer: me,
            score,
            trusted: true,
            weight: weight_of(&config, &book, me),
        });
        joins.push(Event::PeerSlots {
            peer: me,
            slots: node.executor.cores() as u32,
        });
    }

    tracing::debug!("looking for peers");
    let providers_key = kernel_key(&job.kernel, job.kernel_version);
    let mut dht_lookup = tokio::time::interval(Duration::from_secs(5));

    let mut waiting_for_peers = config.min_peers > 0;
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        // Until the job starts (enough peers, or at once without --min-peers), joins
        // wait in `joins`; then they all go to the scheduler together.
        if !waiting_for_peers {
            if !sched_started {
                sched_started = true;
                dispatch_started = Some(Instant::now());
                let fastest = book.scores.values().copied().fold(0.0, f64::max);
                let mut start_config = sched_config.clone();
                start_config.pipeline = pipeline_for(total_work, fastest, sched_config.pipeline);
                sched = Scheduler::new(start_config, costs.clone())
                    .map_err(|e| GridError::Config(e.to_string()))?;
            }
            for join in joins.drain(..) {
                sched.handle(now(started), join, &mut actions);
            }
        }
        // Carry out what the scheduler decided.
        for action in actions.drain(..) {
            match action {
                Action::Assign { peer, chunk, .. } => {
                    let Some(&job_index) = todo.get(chunk as usize) else {
                        continue;
                    };
                    tracing::trace!(
                        "{:.3} s: chunk {job_index} to {peer}",
                        started.elapsed().as_secs_f64()
                    );
                    let spec = job.chunks[job_index].clone();
                    let handle = spawn_run(node, &tx, me, peer, chunk, spec);
                    if let Some(old) = running.insert((peer, chunk), handle) {
                        old.abort();
                    }
                }
                Action::Cancel { peer, chunk } => {
                    if let Some(handle) = running.remove(&(peer, chunk)) {
                        handle.abort();
                    }
                    if peer != me {
                        if let Some(&job_index) = todo.get(chunk as usize) {
                            let client = node.client.clone();
                            let id = job.chunks[job_index].id();
                            tokio::spawn(async move {
                                let _ = client
                                    .task(
                                        peer,
                                        idlegrid_protocol::TaskRequest::Cancel { chunk: id },
                                    )
                                    .await;
                            });
                        }
                    }
                }
                Action::Verified { chunk, result } => {
                    if let Some(&job_index) = todo.get(chunk as usize) {
                        results[job_index] = Some(result);
                        if let Err(e) = log.record(&job.chunks[job_index].id(), &result) {
                            tracing::warn!("cannot remember chunk {job_index}'s result: {e}");
                        }
                        progress.verified(job_index);
                    }
                }
                Action::Revoked { chunk } => {
                    if let Some(&job_index) = todo.get(chunk as usize) {
                        results[job_index] = None;
                        // A resumed job must not reuse a withdrawn result.
                        if let Err(e) = log.forget(&job.chunks[job_index].id()) {
                            tracing::warn!("cannot withdraw chunk {job_index}'s result: {e}");
                        }
                        progress.revoked(job_index);
                    }
                }
                Action::PeerBanned { peer, chunk } => {
                    progress.println(&format!(
                        "peer {peer} returned a wrong result for chunk {chunk}: banned for this job"
                    ));
                }
                Action::JobComplete | Action::JobFailed { .. } => {}
            }
        }
        match sched.outcome() {
            Some(Outcome::Complete) => break,
            Some(Outcome::Failed(reason)) => {
                progress.finish();
                return Err(GridError::Failed(reason.to_string()));
            }
            None => {}
        }
        if waiting_for_peers {
            let ready = book.joined.iter().filter(|p| **p != me).count();
            if ready >= config.min_peers {
                waiting_for_peers = false;
                continue;
            }
            if started.elapsed() >= config.discover_timeout {
                progress.finish();
                let why = if book.unusable.is_empty() {
                    "no other peer was found (is `idlegrid serve` running on the LAN? try --peer or --bootstrap)".to_string()
                } else {
                    book.unusable
                        .iter()
                        .map(|(p, why)| format!("{p}: {why}"))
                        .collect::<Vec<_>>()
                        .join("; ")
                };
                return Err(GridError::NotEnoughPeers {
                    found: ready,
                    wanted: config.min_peers,
                    waited: config.discover_timeout,
                    why,
                });
            }
        }
        let wake = sched
            .next_wakeup()
            .map(|at| at.saturating_sub(now(started)))
            .unwrap_or(Duration::from_secs(1));

        tokio::select! {
            report = rx.recv() => {
                let Some(report) = report else { return Err(GridError::Stopped) };
                let event = match report {
                    Report::Ready { peer, score, slots } => {
                        tracing::debug!("peer {peer} is ready: {score:.0} units/s, {slots} slots");
                        book.probing.remove(&peer);
                        book.unusable.remove(&peer);
                        book.reprobe_at.remove(&peer);
                        book.scores.insert(peer, score);
                        book.joined.insert(peer);
                        let join = Event::PeerJoined {
                            peer,
                            score,
                            trusted: false,
                            weight: weight_of(&config, &book, peer),
                        };
                        let slots = Event::PeerSlots { peer, slots: slots.max(1) };
                        if waiting_for_peers {
                            joins.push(join);
                            joins.push(slots);
                            None
                        } else {
                            sched.handle(now(started), join, &mut actions);
                            Some(slots)
                        }
                    }
                    Report::Unusable { peer, why, retry } => {
                        book.probing.remove(&peer);
                        // Said once per peer and reason, not at every probe again.
                        if book.unusable.get(&peer) != Some(&why) {
                            tracing::info!("not using peer {peer} for now: {why}");
                        }
                        book.unusable.insert(peer, why);
                        if retry {
                            book.reprobe_at.insert(peer, Instant::now() + config.reprobe_after);
                        }
                        None
                    }
                    Report::Done { peer, chunk, result, bytes } => {
                        tracing::trace!(
                            "{:.3} s: chunk {} from {peer}",
                            started.elapsed().as_secs_f64(),
                            todo.get(chunk as usize).copied().unwrap_or(usize::MAX)
                        );
                        running.remove(&(peer, chunk));
                        *book.received.entry(peer).or_default() += bytes;
                        Some(Event::ChunkDone { peer, chunk, result })
                    }
                    Report::Failed { peer, chunk, kind, why } => {
                        running.remove(&(peer, chunk));
                        tracing::info!("chunk {chunk} failed on {peer}: {kind:?}: {why}");
                        Some(Event::ChunkFailed { peer, chunk, kind })
                    }
                };
                if let Some(event) = event {
                    sched.handle(now(started), event, &mut actions);
                }
            }
            event = events.recv() => match event {
                Ok(PeerEvent::Discovered { peer, source }) => {
                    book.found_by.entry(peer).or_default().insert(source);
                    start_probe(node, &job, &config, &tx, &mut book, peer);
                }
                Ok(PeerEvent::Identified { peer, compatible: true }) => {
                    start_probe(node, &job, &config, &tx, &mut book, peer);
                }
                Ok(PeerEvent::Identified { .. }) => {}
                Ok(PeerEvent::Disconnected { peer }) => {
                    if waiting_for_peers && book.joined.remove(&peer) {
                        joins.retain(|e| !matches!(e,
                            Event::PeerJoined { peer: p, .. } | Event::PeerSlots { peer: p, .. } if *p == peer));
                    } else if book.joined.remove(&peer) {
                        sched.handle(now(started), Event::PeerLeft { peer }, &mut actions);
                    }
                }
                Ok(PeerEvent::Pinged { peer, rtt }) => {
                    if !waiting_for_peers && book.joined.contains(&peer) {
                        sched.handle(now(started), Event::PeerRtt { peer, rtt }, &mut actions);
                    }
                }
                Ok(PeerEvent::Unresponsive { peer, reason }) => {
                    if !waiting_for_peers && book.joined.contains(&peer) {
                        progress.println(&format!(
                            "peer {peer} stopped answering pings ({reason}): its chunks go to others"
                        ));
                        sched.handle(now(started), Event::PeerUnresponsive { peer }, &mut actions);
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return Err(GridError::Stopped),
            },
            _ = dht_lookup.tick() => {
                let client = node.client.clone();
                let key = providers_key.clone();
                // Found providers come back as Discovered events.
                tokio::spawn(async move { let _ = client.find_providers(key).await; });
            }
            _ = tokio::time::sleep(wake) => {
                if !waiting_for_peers {
                    sched.handle(now(started), Event::Tick, &mut actions);
                }
            }
            _ = tick.tick() => {
                progress.update(&sched, &book);
                let now = Instant::now();
                let due: Vec<PeerId> = book
                    .reprobe_at
                    .iter()
                    .filter(|(_, at)| **at <= now)
                    .map(|(peer, _)| *peer)
                    .collect();
                for peer in due {
                    book.reprobe_at.remove(&peer);
                    start_probe(node, &job, &config, &tx, &mut book, peer);
                }
            }
        }
    }
    for handle in running.values() {
        handle.abort();
    }
    progress.finish();
    node.store
        .unpin(job.chunks.iter().flat_map(|s| s.inputs.iter().copied()));

    let sent = node.traffic.snapshot();
    let routes: HashMap<PeerId, Route> = node
        .client
        .peers()
        .await
        .unwrap_or_default()
        .into_iter()
        .filter_map(|e| Some((e.peer?, e.route?)))
        .collect();
    let mut peers: Vec<PeerReport> = sched
        .peers()
        .map(|(peer, stats)| PeerReport {
            peer_id: peer.to_string(),
            role: if peer == me { "local" } else { "remote" },
            found_by: book.found_by.get(&peer).cloned().unwrap_or_default(),
            bench_score: book.scores.get(&peer).copied().unwrap_or(stats.score),
            chunks_done: stats.chunks_done,
            failures: stats.failures,
            breaker: stats.breaker.label(),
            banned: stats.banned,
            left: !stats.connected,
            route: routes.get(&peer).copied(),
            bytes_sent: sent.get(&peer).copied().unwrap_or(0),
            bytes_received: book.received.get(&peer).copied().unwrap_or(0),
        })
        .collect();
    peers.sort_by(|a, b| (a.role != "local", &a.peer_id).cmp(&(b.role != "local", &b.peer_id)));
    let results = results
        .into_iter()
        .enumerate()
        .map(|(i, r)| {
            r.ok_or_else(|| GridError::Failed(format!("chunk {i} has no verified result")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(JobOutcome {
        results,
        report: JobReport {
            kernel: job.kernel.clone(),
            output: None,
            output_blake3: None,
            chunks: job.chunks.len(),
            chunks_reused: reused,
            elapsed_seconds: started.elapsed().as_secs_f64(),
            dispatch_seconds: dispatch_started.map_or(0.0, |at| at.elapsed().as_secs_f64()),
            replicas: config.replicas,
            spot_check: config.spot_check,
            peers,
        },
    })
}

/// How much work a peer holds ahead: the configured pipeline, but at most an eighth of
/// the job's time on the fastest peer known at the start, so that on a short job the
/// first peer served does not take every chunk while the others wait (later peers
/// still pull; the floor keeps a round trip covered).
fn pipeline_for(total_work: f64, fastest_score: f64, configured: Duration) -> Duration {
    if !(fastest_score > 0.0 && total_work > 0.0) {
        return configured;
    }
    let eighth = Duration::from_secs_f64((total_work / fastest_score / 8.0).min(3600.0));
    eighth.clamp(
        Duration::from_millis(20),
        configured.max(Duration::from_millis(20)),
    )
}

/// A hand weight from `--weights` in the scheduler's unit: the flag's weight is
/// relative to this machine's benchmark score (weight 1 = as fast as this machine).
fn weight_of(config: &GridConfig, book: &PeerBook, peer: PeerId) -> Option<f64> {
    let weight = *config.weights.get(&peer)?;
    Some(weight * book.local_score.unwrap_or(1.0))
}

/// Probes and benchmarks `peer` once (unless it is already in use or being probed).
fn start_probe(
    node: &Node,
    job: &Job,
    config: &GridConfig,
    tx: &mpsc::UnboundedSender<Report>,
    book: &mut PeerBook,
    peer: PeerId,
) {
    if peer == node.peer_id() || book.joined.contains(&peer) || !book.probing.insert(peer) {
        return;
    }
    if config.weights.get(&peer) == Some(&0.0) {
        return;
    }
    let client = node.client.clone();
    let store = node.store.clone();
    let tx = tx.clone();
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
        let _ = tx.send(match outcome {
            Ok((score, slots)) => Report::Ready { peer, score, slots },
            Err(e) => Report::Unusable {
                peer,
                why: e.to_string(),
                retry: e.may_change(),
            },
        });
    });
}

/// Runs one chunk on `peer` (this machine if `peer == me`) and reports back.
fn spawn_run(
    node: &Node,
    tx: &mpsc::UnboundedSender<Report>,
    me: PeerId,
    peer: PeerId,
    chunk: ChunkIndex,
    spec: TaskSpec,
) -> AbortHandle {
    let client = node.client.clone();
    let store = node.store.clone();
    let executor = node.executor.clone();
    let tx = tx.clone();
    tokio::spawn(async move {
        let outcome = if peer == me {
            run_local(&executor, &store, spec).await
        } else {
            remote::run_chunk(&client, &store, peer, spec)
                .await
                .map(|o| (o.result, o.bytes))
        };
        let _ = tx.send(match outcome {
            Ok((result, bytes)) => Report::Done {
                peer,
                chunk,
                result,
                bytes,
            },
            Err((kind, why)) => Report::Failed {
                peer,
                chunk,
                kind,
                why,
            },
        });
    })
    .abort_handle()
}
