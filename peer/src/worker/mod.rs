//! The worker service: answers the `/idlegrid/task/1` and `/idlegrid/blob/1` requests
//! that the event loop hands over on its inbound channel, each on a task of its own.
//!
//! A `Probe` is answered from the executor and the owner's gate. A `Run` is validated
//! (kernel, version, params), admitted into the chunk [`registry`] and answered at once
//! with `Accepted` or a `Refused` that says why; the admitted chunk then goes through
//! the compute [`pipeline`] (fetch its inputs, wait for a core, run on the executor)
//! and leaves its outcome in the registry. A `Poll` is a long poll on that outcome: it
//! is answered the moment the chunk finishes, or after `keepalive` with `Running`, so
//! every request completes within seconds even when a chunk computes for minutes. A
//! `Cancel` from the chunk's submitter stops it before its kernel starts. Blob requests
//! go to [`serve_blobs`].

mod faults;
mod pipeline;
mod registry;
mod serve_blobs;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use idlegrid_protocol::{limits, Cid, TaskRequest, TaskResponse, TaskSpec};
use libp2p::PeerId;
use tokio::sync::mpsc;

pub(crate) use faults::FaultHook;
#[cfg(feature = "fault-injection")]
pub use faults::FaultInjection;
pub use serve_blobs::Traffic;

use crate::blobs::{MemoryBudget, RecentInputs, RECENT_INPUTS_IDLE};
use crate::executor::Executor;
use crate::net::{agent_version, Client, Inbound};
use crate::policy::Gate;
use crate::store::BlobStore;
use registry::{Admission, Registry, Status, CANCELLED};

/// How this peer serves others.
#[derive(Clone, Debug)]
pub struct WorkerConfig {
    /// Run chunks for other peers. False on a peer that only submits its own jobs
    /// (it still serves blobs, so workers can fetch its inputs).
    pub serve: bool,
    /// Chunks accepted beyond those running, before new ones are refused as busy.
    /// Waiting chunks hold their inputs on disk, or in memory within `memory_inputs`.
    /// Default 64.
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
        }
    }
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
    traffic: Traffic,
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
    traffic: Traffic,
    mut inbound: mpsc::Receiver<Inbound>,
    faults: FaultHook,
) {
    let worker = Worker {
        client,
        store,
        executor,
        memory: MemoryBudget::new(config.memory_inputs),
        recent: RecentInputs::default(),
        registry: Arc::new(Mutex::new(Registry::new(config.remember))),
        config,
        traffic,
        faults,
    };
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
                    let response =
                        serve_blobs::serve_piece(&worker.store, &worker.traffic, peer, request)
                            .await;
                    worker.client.respond_blob(channel, response).await;
                });
            }
        }
    }
    expiry.abort();
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
                    idlegrid_kernels::supported()
                } else {
                    Vec::new()
                },
                slots: self.executor.cores() as u32,
                running: self.executor.running() as u32,
                busy: !self.config.serve || self.config.gate.busy(),
            }),
            TaskRequest::Run { spec } => {
                let chunk = spec.id();
                match self.on_run(peer, spec) {
                    // A short chunk is answered with its result at once: one round
                    // trip instead of two.
                    TaskResponse::Accepted { .. } => self
                        .answer_within(chunk, self.config.run_grace)
                        .await
                        .unwrap_or(TaskResponse::Accepted { chunk }),
                    refused => refused,
                }
            }
            TaskRequest::Poll { chunk } => self
                .answer_within(chunk, self.config.keepalive)
                .await
                .unwrap_or(TaskResponse::Running { chunk }),
            TaskRequest::Cancel { chunk } => {
                // A chunk still fetching its inputs or waiting for a core stops there
                // (its submitter no longer wants it: the job ended, another copy won,
                // it was given to someone else). A running kernel is not interrupted
                // (kernels are pure and bounded); its result is simply not asked for.
                self.registry().cancel(chunk, peer);
                TaskResponse::Unknown { chunk }
            }
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
        if let Err(e) = idlegrid_kernels::validate(&spec) {
            return refuse(e.to_string());
        }
        let capacity = self.executor.cores() + self.config.queue;
        let admission = self.registry().admit(chunk, peer, capacity);
        let run = match admission {
            Admission::Known => return TaskResponse::Accepted { chunk },
            Admission::Busy(working) => {
                return refuse(format!("busy: {working} chunks running or queued"))
            }
            Admission::Started(run) => run,
        };
        let worker = self.clone();
        tokio::spawn(async move {
            let status = worker.compute(peer, spec, run.cancelled).await;
            match &status {
                // Said at debug where it stopped: a job's end cancels its queued chunks.
                Status::Cancelled => {}
                Status::Failed(reason) => {
                    tracing::info!("chunk {} for {peer} failed: {reason}", chunk.short());
                }
                Status::Working | Status::Done { .. } => {}
            }
            let _ = run.status.send(status);
            drop(ticket);
            worker.registry().finish(chunk, run.id);
        });
        TaskResponse::Accepted { chunk }
    }

    /// The chunk's final answer if it finishes within `wait`; `None` while it is still
    /// working. A chunk this worker does not know is answered `Unknown`.
    async fn answer_within(&self, chunk: Cid, wait: Duration) -> Option<TaskResponse> {
        let Some(mut status) = self.registry().status(&chunk) else {
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
