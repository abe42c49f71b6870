//! The worker service: answers the `/idlegrid/task/1` and `/idlegrid/blob/1` requests
//! that the event loop hands over on its inbound channel, each on a task of its own.
//!
//! A `Probe` is answered from the executor and the owner's gate. A `Run` is validated
//! (kernel, version, params, the largest size each input may have), admitted into the
//! chunk [`registry`] within the submitter's fair share of the queue, and answered at
//! once with `Accepted` or a `Refused` that says why; the admitted chunk then goes
//! through the compute [`pipeline`] (fetch its inputs, wait for its [`turns`] at a core,
//! run on the executor) and leaves its outcome in the registry. A `Poll` from one of
//! the chunk's submitters is a long poll on that outcome: it is answered the moment the
//! chunk finishes, or after `keepalive` with `Running`, so every request completes
//! within seconds even when a chunk computes for minutes; anyone else is answered
//! `Unknown`. A `Cancel` from a submitter stops the chunk, its kernel too if it runs.
//! Blob requests go to [`serve_blobs`], which serves a blob only to the peers it
//! concerns. Whom the chunks are run for is counted in [`requesters`] (the web page's
//! volunteer panel shows it).

mod faults;
mod pipeline;
mod registry;
mod requesters;
mod serve_blobs;
mod turns;
mod wasm_caps;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use idlegrid_protocol::{limits, Cid, TaskRequest, TaskResponse, TaskSpec};
use libp2p::PeerId;
use tokio::sync::mpsc;

pub(crate) use faults::FaultHook;
#[cfg(feature = "fault-injection")]
pub use faults::FaultInjection;
pub use requesters::{Requesters, Tally, MAX_REQUESTERS};
pub use serve_blobs::Traffic;
pub use wasm_caps::WasmCaps;

use crate::blobs::{MemoryBudget, RecentInputs, RECENT_INPUTS_IDLE};
use crate::executor::Executor;
use crate::net::{agent_version, Client, Inbound};
use crate::policy::Gate;
use crate::store::BlobStore;
use registry::{Admission, Registry, Status, CANCELLED};
use requesters::Ended;
use turns::Turns;

/// How this peer serves others.
#[derive(Clone, Debug)]
pub struct WorkerConfig {
    /// Run chunks for other peers. False on a peer that only submits its own jobs
    /// (it still serves blobs, so workers can fetch its inputs).
    pub serve: bool,
    /// Chunks accepted beyond those running, before new ones are refused as busy.
    /// Waiting chunks hold their inputs on disk, or in memory within `memory_inputs`.
    /// Shared fairly: while several submitters want chunks run here, each may hold at
    /// most its share of the running and queued chunks, and waiting chunks take the
    /// cores in turns across submitters. Default 64.
    pub queue: usize,
    /// How long a poll is held before answering `Running`. Default 2 s; must stay well
    /// under the request timeout.
    pub keepalive: Duration,
    /// Largest single input blob this peer will fetch. Default 512 MiB.
    pub max_input: u64,
    /// Bytes of fetched chunk inputs held in memory at once, instead of being written
    /// to the blob store and read back: from their arrival until their chunk has run,
    /// and after that for the next chunks that name them, until newer inputs need the
    /// room. Inputs beyond it go to the store. Default 256 MiB; 0 sends every input to
    /// disk.
    pub memory_inputs: u64,
    /// Finished chunk statuses remembered for late polls. Default 4096.
    pub remember: usize,
    /// The owner's policy and access lists, asked before each chunk is accepted; its
    /// stop hands queued chunks back and, after the grace period, running ones.
    /// Default: open to everyone, always.
    pub gate: Gate,
    /// How long a `Run` is held for the chunk's result before answering `Accepted`:
    /// a short chunk costs one round trip instead of two. Default 50 ms.
    pub run_grace: Duration,
    /// Most chunks taken in one `RunMany`, as offered to submitters in the probe
    /// answer: small chunks then travel many to a request. Default 64; 0 or 1 asks for
    /// one `Run` per chunk.
    pub batch: u32,
    /// Run the `noop` kernel for other peers. It computes nothing from inputs of any
    /// size, so a worker running it would store and serve whatever a peer sent: only
    /// tests and benchmarks turn it on. Default off.
    pub noop_kernel: bool,
    /// What the owner allows of users' WebAssembly programs (the `wasm` kernel).
    /// Default: run them, within 1 GiB and 10^13 fuel per run.
    pub wasm: WasmCaps,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            serve: true,
            queue: 64,
            keepalive: Duration::from_secs(2),
            max_input: 512 * 1024 * 1024,
            memory_inputs: 256 * 1024 * 1024,
            remember: 4096,
            gate: Gate::open(),
            run_grace: Duration::from_millis(50),
            batch: 64,
            noop_kernel: false,
            wasm: WasmCaps::default(),
        }
    }
}

/// The kernels a worker with `config` runs for others, as (name, version): what it
/// answers a probe with and advertises.
pub fn kernels(config: &WorkerConfig) -> Vec<(String, u32)> {
    idlegrid_kernels::supported()
        .into_iter()
        .filter(|(name, _)| config.noop_kernel || name != idlegrid_kernels::noop::NAME)
        .filter(|(name, _)| config.wasm.enabled || name != idlegrid_kernels::wasm::NAME)
        .collect()
}

/// What the worker counts, shared with its node: the blob bytes it served each peer,
/// and whom it computes for.
#[derive(Clone, Default)]
pub(crate) struct Counters {
    pub traffic: Traffic,
    pub requesters: Requesters,
}

#[derive(Clone)]
struct Worker {
    client: Client,
    store: BlobStore,
    executor: Executor,
    config: WorkerConfig,
    /// What is left of `config.memory_inputs`.
    memory: MemoryBudget,
    /// Inputs kept in memory for the next chunks that name them.
    recent: RecentInputs,
    registry: Arc<Mutex<Registry>>,
    /// The order in which waiting chunks take the cores.
    turns: Turns,
    traffic: Traffic,
    /// Whom this worker computes for (the web page's volunteer panel).
    requesters: Requesters,
    /// Called around each kernel run; does nothing outside fault-injection tests.
    faults: FaultHook,
}

/// Serves inbound requests until the event loop closes the channel; `faults` are the
/// pipeline's hooks (armed only in fault-injection tests).
pub(crate) async fn serve(
    client: Client,
    store: BlobStore,
    executor: Executor,
    config: WorkerConfig,
    counters: Counters,
    mut inbound: mpsc::Receiver<Inbound>,
    faults: FaultHook,
) {
    let turns = Turns::default();
    let worker = Worker {
        client,
        memory: MemoryBudget::new(config.memory_inputs),
        recent: RecentInputs::default(),
        registry: Arc::new(Mutex::new(Registry::new(
            config.remember,
            store.grants().clone(),
        ))),
        store,
        executor: executor.clone(),
        config,
        turns: turns.clone(),
        traffic: counters.traffic,
        requesters: counters.requesters,
        faults,
    };
    let dispatch = tokio::spawn(turns.dispatch(executor));
    // Inputs kept for the next chunks go once no chunk has wanted them for a while.
    let recent = worker.recent.clone();
    let expiry = tokio::spawn(async move {
        let mut every = tokio::time::interval(RECENT_INPUTS_IDLE / 3);
        loop {
            every.tick().await;
            recent.expire(RECENT_INPUTS_IDLE);
        }
    });
    while let Some(request) = inbound.recv().await {
        let worker = worker.clone();
        match request {
            Inbound::Task {
                peer,
                request,
                channel,
            } => {
                tokio::spawn(async move {
                    let response = worker.on_task(peer, request).await;
                    worker.client.respond_task(channel, response).await;
                });
            }
            Inbound::Blob {
                peer,
                request,
                channel,
            } => {
                tokio::spawn(async move {
                    let response = serve_blobs::serve_piece(
                        &worker.store,
                        &worker.traffic,
                        &worker.faults,
                        peer,
                        request,
                    )
                    .await;
                    worker.client.respond_blob(channel, response).await;
                });
            }
        }
    }
    expiry.abort();
    dispatch.abort();
}

impl Worker {
    fn registry(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn on_task(&self, peer: PeerId, request: TaskRequest) -> TaskResponse {
        match request {
            TaskRequest::Probe => TaskResponse::Probe(idlegrid_protocol::message::PeerInfo {
                agent: agent_version(),
                kernels: if self.config.serve {
                    kernels(&self.config)
                } else {
                    Vec::new()
                },
                slots: self.executor.cores() as u32,
                running: self.executor.running() as u32,
                busy: !self.config.serve || self.config.gate.busy(),
                batch: self.config.batch,
            }),
            TaskRequest::Run { spec } => self.run_within_grace(peer, spec).await,
            TaskRequest::RunMany { specs } => {
                let answers = futures::future::join_all(
                    specs
                        .into_iter()
                        .map(|spec| self.run_within_grace(peer, spec)),
                )
                .await;
                TaskResponse::Many {
                    answers: fit_response(answers),
                }
            }
            TaskRequest::Poll { chunk } => self
                .answer_within(chunk, peer, self.config.keepalive)
                .await
                .unwrap_or(TaskResponse::Running { chunk }),
            TaskRequest::Cancel { chunk } => {
                // The submitter no longer wants it (the job ended, another copy won, it
                // was given to someone else): once no submitter wants it, it stops
                // wherever it is, a running kernel at its next check.
                self.registry().cancel(chunk, peer);
                TaskResponse::Unknown { chunk }
            }
        }
    }

    /// Admits a chunk and, if it finishes within the run grace, answers with its
    /// result: a short chunk costs one round trip instead of two.
    async fn run_within_grace(&self, peer: PeerId, spec: TaskSpec) -> TaskResponse {
        let chunk = spec.id();
        match self.on_run(peer, spec) {
            TaskResponse::Accepted { .. } => self
                .answer_within(chunk, peer, self.config.run_grace)
                .await
                .unwrap_or(TaskResponse::Accepted { chunk }),
            refused => refused,
        }
    }

    fn on_run(&self, peer: PeerId, spec: TaskSpec) -> TaskResponse {
        let chunk = spec.id();
        let refuse = |reason: String| {
            tracing::info!("refused chunk {} from {peer}: {reason}", chunk.short());
            TaskResponse::Refused { chunk, reason }
        };
        if !self.config.serve {
            return refuse("this peer does not lend its cores (not serving)".into());
        }
        let ticket = match self.config.gate.admit(peer) {
            Ok(ticket) => ticket,
            Err(reason) => return refuse(reason),
        };
        if spec.kernel == idlegrid_kernels::noop::NAME && !self.config.noop_kernel {
            return refuse(
                "kernel noop is for tests and benchmarks; this peer does not run it for others"
                    .into(),
            );
        }
        if let Some(reason) = self.config.wasm.refusal(&spec) {
            return refuse(reason);
        }
        // Validates the chunk too: nothing is fetched for a chunk refused here.
        let limits = match idlegrid_kernels::input_limits(&spec) {
            Ok(limits) => limits,
            Err(e) => return refuse(e.to_string()),
        };
        let capacity = self.executor.cores() + self.config.queue;
        let admission = self.registry().admit(
            chunk,
            &spec.inputs,
            peer,
            capacity,
            std::time::Instant::now(),
        );
        let run = match admission {
            Admission::Known => return TaskResponse::Accepted { chunk },
            Admission::Busy { working, share } => {
                return refuse(match share {
                    Some(share) => format!(
                        "busy: {working} chunks running or queued; other submitters are \
                         waiting and {share} of them are this peer's share"
                    ),
                    None => format!("busy: {working} chunks running or queued"),
                })
            }
            Admission::Crowded(submitters) => {
                return refuse(format!(
                    "busy: {submitters} submitters already want this chunk"
                ))
            }
            Admission::Started(run) => run,
        };
        self.requesters.started(peer);
        let worker = self.clone();
        tokio::spawn(async move {
            let status = worker.compute(peer, spec, limits, run.cancelled).await;
            let ended = match &status {
                // Said at debug where it stopped: a job's end cancels its queued chunks.
                Status::Cancelled => Ended::Cancelled,
                Status::Failed(reason) => {
                    tracing::info!("chunk {} for {peer} failed: {reason}", chunk.short());
                    Ended::Failed
                }
                // A run's status is final when compute returns; never Working here.
                Status::Working => Ended::Failed,
                Status::Done { len, .. } => Ended::Done { result_bytes: *len },
            };
            worker.requesters.ended(peer, ended);
            let _ = run.status.send(status);
            drop(ticket);
            worker.registry().finish(chunk, run.id, peer);
        });
        TaskResponse::Accepted { chunk }
    }

    /// The chunk's final answer to `peer` if it finishes within `wait`; `None` while it
    /// is still working. A chunk this worker does not know, or that `peer` did not
    /// submit, is answered `Unknown`.
    async fn answer_within(
        &self,
        chunk: Cid,
        peer: PeerId,
        wait: Duration,
    ) -> Option<TaskResponse> {
        let Some(mut status) = self.registry().status(&chunk, &peer) else {
            return Some(TaskResponse::Unknown { chunk });
        };
        if matches!(*status.borrow(), Status::Working) && !wait.is_zero() {
            let _ = tokio::time::timeout(wait, status.wait_for(|s| !matches!(s, Status::Working)))
                .await;
        }
        let current = status.borrow().clone();
        Some(match current {
            Status::Working => return None,
            Status::Failed(reason) => TaskResponse::Failed { chunk, reason },
            Status::Cancelled => TaskResponse::Failed {
                chunk,
                reason: CANCELLED.into(),
            },
            Status::Done { result, len, small } => {
                let inline = if let Some(bytes) = small {
                    bytes
                } else if len as usize <= limits::MAX_INLINE_RESULT {
                    let store = self.store.clone();
                    match tokio::task::spawn_blocking(move || store.get(&result)).await {
                        Ok(Ok(Some(bytes))) => bytes,
                        _ => Bytes::new(),
                    }
                } else {
                    Bytes::new()
                };
                TaskResponse::Done {
                    chunk,
                    result,
                    len,
                    inline: inline.into(),
                }
            }
        })
    }
}

/// Bytes of inline results one `Many` may carry, under [`limits::MAX_TASK_RESPONSE`]
/// with room for the answers' own fields.
const MANY_INLINE: usize = limits::MAX_TASK_RESPONSE / 2;

/// A batch's answers within one response: a finished chunk whose inline result no
/// longer fits is answered `Accepted` instead, and its submitter's poll then brings the
/// result alone.
fn fit_response(answers: Vec<TaskResponse>) -> Vec<TaskResponse> {
    let mut inline = 0;
    answers
        .into_iter()
        .map(|answer| match answer {
            TaskResponse::Done {
                chunk,
                inline: ref bytes,
                ..
            } => {
                inline += bytes.len();
                if inline > MANY_INLINE {
                    TaskResponse::Accepted { chunk }
                } else {
                    answer
                }
            }
            answer => answer,
        })
        .collect()
}
