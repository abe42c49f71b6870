//! The worker service: answers `/idlegrid/task/1` and `/idlegrid/blob/1` requests that
//! the event loop hands over on its inbound channel.
//!
//! A `Run` is validated (kernel, version, params) and answered at once with `Accepted`
//! or a `Refused` that says why; the chunk then fetches its missing inputs from the
//! requester, several at once (large ones into memory while the [`MemoryBudget`]
//! allows, kept there for the next chunks that name them; the rest into the blob
//! store), waits for a compute slot and runs on the [`Executor`]. Each chunk's
//! status sits behind a `watch` channel, so a `Poll` is a long poll: it is answered the
//! moment the chunk finishes, or after `keepalive` with `Running`. Every request thus
//! completes within seconds even when a chunk computes for minutes.
//!
//! Blob requests are served from the [`BlobStore`] in bounded pieces, on blocking
//! threads so the event loop never waits on the disk.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use idlegrid_protocol::{limits, BlobResponse, Cid, TaskRequest, TaskResponse};
use libp2p::PeerId;
use tokio::sync::{mpsc, watch};

use crate::blobs::{fetch_input, Fetched, Input, MemoryBudget, RecentInputs, RECENT_INPUTS_IDLE};
use crate::executor::Executor;
use crate::net::{agent_version, Client, Inbound};
use crate::policy::Gate;
use crate::store::BlobStore;

/// Blob bytes this peer served, per requesting peer (for the job report).
#[derive(Clone, Default)]
pub struct Traffic(Arc<Mutex<HashMap<PeerId, u64>>>);

impl Traffic {
    fn add(&self, peer: PeerId, bytes: u64) {
        *self
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(peer)
            .or_default() += bytes;
    }

    /// Bytes served so far, per peer.
    pub fn snapshot(&self) -> HashMap<PeerId, u64> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

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
    /// Test builds only: return wrong (but self-consistent) results.
    #[cfg(feature = "fault-injection")]
    pub lie: bool,
    /// Test builds only: sleep this long before each chunk (a slow machine).
    #[cfg(feature = "fault-injection")]
    pub delay: Duration,
    /// Test builds only: the delay starts with this chunk (0 = the first); a worker that
    /// runs its benchmark at full speed and then slows down.
    #[cfg(feature = "fault-injection")]
    pub delay_from_chunk: u64,
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
            #[cfg(feature = "fault-injection")]
            lie: false,
            #[cfg(feature = "fault-injection")]
            delay: Duration::ZERO,
            #[cfg(feature = "fault-injection")]
            delay_from_chunk: 0,
        }
    }
}

/// Where a chunk stands on this worker.
#[derive(Clone, Debug)]
enum Status {
    Working,
    /// `small` holds results up to [`KEEP_IN_MEMORY`] bytes (they skip the disk);
    /// larger ones are in the blob store.
    Done {
        result: Cid,
        len: u64,
        small: Option<Bytes>,
    },
    Failed(String),
}

/// Why a chunk its submitter cancelled did not finish.
const CANCELLED: &str = "cancelled by its submitter";

/// The way to stop one run of a chunk before its kernel starts.
struct Cancel {
    peer: PeerId,
    run: u64,
    switch: watch::Sender<bool>,
}

/// Results this small are kept with the chunk's status and answered from memory, so a
/// tiny chunk costs no disk I/O on the worker.
const KEEP_IN_MEMORY: usize = 64 * 1024;

struct Chunks {
    status: HashMap<Cid, watch::Receiver<Status>>,
    /// Chunks not finished: who asked for each (only they may cancel it) and the switch
    /// that stops it while it is still fetching its inputs or waiting for a core.
    cancels: HashMap<Cid, Cancel>,
    /// Tells one run of a chunk from a later run of the same chunk.
    next_run: u64,
    /// Finished chunks in completion order, to forget the oldest.
    finished: VecDeque<Cid>,
    /// Chunks accepted and not finished (queued or running).
    working: usize,
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
    chunks: Arc<Mutex<Chunks>>,
    traffic: Traffic,
    /// Chunks started (for the test-only delay).
    #[cfg(feature = "fault-injection")]
    computed: Arc<std::sync::atomic::AtomicU64>,
}

/// Inputs of one chunk fetched at once (each with its own pieces in flight).
const INPUTS_IN_FLIGHT: usize = 8;

/// Serves inbound requests until the event loop closes the channel.
pub async fn serve(
    client: Client,
    store: BlobStore,
    executor: Executor,
    config: WorkerConfig,
    traffic: Traffic,
    mut inbound: mpsc::Receiver<Inbound>,
) {
    let worker = Worker {
        client,
        store,
        executor,
        memory: MemoryBudget::new(config.memory_inputs),
        recent: RecentInputs::default(),
        config,
        traffic,
        #[cfg(feature = "fault-injection")]
        computed: Arc::default(),
        chunks: Arc::new(Mutex::new(Chunks {
            status: HashMap::new(),
            cancels: HashMap::new(),
            next_run: 0,
            finished: VecDeque::new(),
            working: 0,
        })),
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
        match request {
            Inbound::Task {
                peer,
                request,
                channel,
            } => {
                let worker = worker.clone();
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
                let worker = worker.clone();
                tokio::spawn(async move {
                    let store = worker.store.clone();
                    let cid = request.cid;
                    let len = (request.len as usize).min(limits::BLOB_PIECE);
                    let offset = request.offset;
                    // A piece of a blob held in memory is a slice of it: no copy, and
                    // no trip to a blocking thread.
                    let read = match store.resident_piece(&cid, offset, len) {
                        Some(piece) => Ok(Ok(Some(piece))),
                        None => {
                            tokio::task::spawn_blocking(move || store.read_piece(&cid, offset, len))
                                .await
                        }
                    };
                    let response = match read {
                        Ok(Ok(Some((total, bytes)))) => {
                            worker.traffic.add(peer, bytes.len() as u64);
                            BlobResponse::Piece {
                                total,
                                offset,
                                bytes: bytes.into(),
                            }
                        }
                        Ok(Ok(None)) => BlobResponse::NotFound,
                        Ok(Err(e)) => {
                            tracing::warn!("blob {} for {peer}: {e}", cid.short());
                            BlobResponse::Refused {
                                reason: "cannot read the blob".into(),
                            }
                        }
                        Err(e) => BlobResponse::Refused {
                            reason: format!("blob read failed: {e}"),
                        },
                    };
                    worker.client.respond_blob(channel, response).await;
                });
            }
        }
    }
    expiry.abort();
}

impl Worker {
    fn lock(&self) -> std::sync::MutexGuard<'_, Chunks> {
        self.chunks.lock().unwrap_or_else(|e| e.into_inner())
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
                let mut chunks = self.lock();
                chunks.status.remove(&chunk);
                if let Entry::Occupied(run) = chunks.cancels.entry(chunk) {
                    if run.get().peer == peer {
                        let _ = run.remove().switch.send(true);
                    }
                }
                TaskResponse::Unknown { chunk }
            }
        }
    }

    fn on_run(&self, peer: PeerId, spec: idlegrid_protocol::TaskSpec) -> TaskResponse {
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
        let (tx, rx) = watch::channel(Status::Working);
        let (switch, cancelled) = watch::channel(false);
        let run;
        {
            let mut chunks = self.lock();
            // A chunk known here is answered from its status, unless it failed: then it
            // is tried again. Its failure may have been the requester's (an input it
            // could not serve, a connection it closed at the end of its job), and the
            // same chunk from another submitter — the calibration chunk every job
            // benchmarks with — must not inherit that failure.
            let failed = |rx: &watch::Receiver<Status>| matches!(*rx.borrow(), Status::Failed(_));
            match chunks.status.get(&chunk) {
                Some(rx) if !failed(rx) => return TaskResponse::Accepted { chunk },
                _ => {}
            }
            if chunks.working >= self.executor.cores() + self.config.queue {
                let working = chunks.working;
                return refuse(format!("busy: {working} chunks running or queued"));
            }
            chunks.status.insert(chunk, rx);
            run = chunks.next_run;
            chunks.next_run += 1;
            chunks.cancels.insert(chunk, Cancel { peer, run, switch });
            chunks.working += 1;
        }
        let worker = self.clone();
        tokio::spawn(async move {
            let status = worker.compute(peer, spec, cancelled).await;
            match &status {
                // Said at debug where it stopped: a job's end cancels its queued chunks.
                Status::Failed(reason) if reason == CANCELLED => {}
                Status::Failed(reason) => {
                    tracing::info!("chunk {} for {peer} failed: {reason}", chunk.short());
                }
                _ => {}
            }
            let _ = tx.send(status);
            drop(ticket);
            let mut chunks = worker.lock();
            chunks.working = chunks.working.saturating_sub(1);
            if chunks.cancels.get(&chunk).is_some_and(|c| c.run == run) {
                chunks.cancels.remove(&chunk);
            }
            chunks.finished.push_back(chunk);
            if chunks.finished.len() > worker.config.remember {
                if let Some(old) = chunks.finished.pop_front() {
                    // Not if the chunk was started again since (a retried failure).
                    let working =
                        |rx: &watch::Receiver<Status>| matches!(*rx.borrow(), Status::Working);
                    if !chunks.status.get(&old).is_some_and(working) {
                        chunks.status.remove(&old);
                    }
                }
            }
        });
        TaskResponse::Accepted { chunk }
    }

    /// Fetches the inputs (into memory or the store), waits for a compute slot, loads
    /// the stored ones, runs the kernel, keeps the result.
    async fn compute(
        &self,
        peer: PeerId,
        spec: idlegrid_protocol::TaskSpec,
        mut cancelled: watch::Receiver<bool>,
    ) -> Status {
        // Phase times for the debug log: where a chunk's time goes on this worker.
        let accepted = std::time::Instant::now();
        let chunk = spec.id();
        let gate = &self.config.gate;
        let handed_back = || Status::Failed(format!("handed back: {}", gate.decision().summary()));
        let cancelled_by = |what: &str| {
            tracing::debug!("chunk {} for {peer}: cancelled {what}", chunk.short());
            Status::Failed(CANCELLED.into())
        };
        // Resolves once the submitter cancels this run (never if the switch is gone
        // without being thrown: the run finished or was replaced).
        let mut cancel = async move || {
            if cancelled.wait_for(|&c| c).await.is_err() {
                std::future::pending::<()>().await;
            }
        };
        // Several inputs at once: a chunk naming many small ones (the change kernel's
        // pieces of a band, a video segment's frames) would otherwise pay a round trip
        // per input, seconds on a far link.
        let fetch = futures::stream::iter(spec.inputs.iter().copied())
            .map(|cid| async move {
                fetch_input(
                    &self.client,
                    peer,
                    cid,
                    &self.store,
                    self.config.max_input,
                    &self.memory,
                    &self.recent,
                )
                .await
                .map_err(|e| format!("input {}: {e}", cid.short()))
            })
            .buffered(INPUTS_IN_FLIGHT)
            .try_collect::<Vec<Fetched>>();
        // A chunk still fetching its inputs has not started: a stop hands it back at
        // once, like a chunk waiting for a core, instead of holding it (and the stop)
        // until a slow transfer ends or times out. A dropped fetch removes its partial
        // file and gives its memory back.
        let fetched = tokio::select! {
            fetched = fetch => match fetched {
                Ok(fetched) => fetched,
                Err(why) => return Status::Failed(why),
            },
            () = gate.stopped() => return handed_back(),
            () = cancel() => return cancelled_by("while fetching its inputs"),
        };
        let fetched_after = accepted.elapsed();
        let in_memory: usize = fetched
            .iter()
            .map(|f| match f {
                Fetched::Memory(input) => input.bytes().len(),
                Fetched::Stored => 0,
            })
            .sum();
        tracing::debug!(
            "chunk {} for {peer}: has its inputs after {fetched_after:.1?} ({in_memory} bytes in memory)",
            chunk.short()
        );
        let slot = tokio::select! {
            slot = self.executor.slot() => match slot {
                Ok(slot) => slot,
                Err(e) => return Status::Failed(e.to_string()),
            },
            () = gate.stopped() => return handed_back(),
            () = cancel() => return cancelled_by("while waiting for a core"),
        };
        let slotted = accepted.elapsed();
        let inputs = match self.load_inputs(&spec, fetched).await {
            Ok(loaded) => loaded,
            Err(why) => return Status::Failed(why),
        };
        let work = async {
            #[cfg(feature = "fault-injection")]
            {
                let n = self
                    .computed
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                // (A zero sleep would still wait for the timer's next tick, ~1 ms.)
                if n >= self.config.delay_from_chunk && !self.config.delay.is_zero() {
                    tokio::time::sleep(self.config.delay).await;
                }
            }
            self.executor.run_in_slot(spec, inputs).await
        };
        // A kernel cannot be interrupted mid-chunk: after the grace period its answer
        // is no longer awaited and the chunk goes back to its submitter.
        #[allow(unused_mut)]
        let mut output = tokio::select! {
            output = work => match output {
                Ok(output) => output,
                Err(e) => return Status::Failed(e.to_string()),
            },
            () = gate.evicted() => return handed_back(),
        };
        drop(slot);
        tracing::debug!(
            "chunk {} for {peer}: inputs fetched after {fetched_after:.1?}, a core after {slotted:.1?}, computed after {:.1?}",
            chunk.short(),
            accepted.elapsed()
        );
        #[cfg(feature = "fault-injection")]
        if self.config.lie {
            // A consistent lie: the hash matches the wrong bytes, so only replication
            // or a spot check can catch it.
            if let Some(byte) = output.last_mut() {
                *byte ^= 0x5a;
            } else {
                output.push(0x5a);
            }
        }
        let len = output.len() as u64;
        if output.len() <= KEEP_IN_MEMORY {
            return Status::Done {
                result: Cid::of(&output),
                len,
                small: Some(Bytes::from(output)),
            };
        }
        let store = self.store.clone();
        match tokio::task::spawn_blocking(move || store.put(&output)).await {
            Ok(Ok(result)) => Status::Done {
                result,
                len,
                small: None,
            },
            Ok(Err(e)) => Status::Failed(e.to_string()),
            Err(e) => Status::Failed(e.to_string()),
        }
    }

    /// The chunk's inputs in order: those held in memory as they are (their memory is
    /// given back when the kernel and [`RecentInputs`] have both let go), the stored
    /// ones read from the store (on a blocking thread).
    async fn load_inputs(
        &self,
        spec: &idlegrid_protocol::TaskSpec,
        fetched: Vec<Fetched>,
    ) -> Result<Vec<Input>, String> {
        let mut slots: Vec<Option<Input>> = Vec::with_capacity(fetched.len());
        let mut to_read = Vec::new();
        for (i, (input, cid)) in fetched.into_iter().zip(&spec.inputs).enumerate() {
            match input {
                Fetched::Memory(input) => slots.push(Some(Input::Memory(input))),
                Fetched::Stored => {
                    slots.push(None);
                    to_read.push((i, *cid));
                }
            }
        }
        if !to_read.is_empty() {
            let store = self.store.clone();
            let read = tokio::task::spawn_blocking(move || {
                to_read
                    .into_iter()
                    .map(|(i, cid)| match store.get(&cid) {
                        Ok(Some(bytes)) => Ok((i, bytes)),
                        Ok(None) => Err(format!("input {} vanished", cid.short())),
                        Err(e) => Err(e.to_string()),
                    })
                    .collect::<Result<Vec<_>, String>>()
            })
            .await
            .map_err(|e| e.to_string())??;
            for (i, bytes) in read {
                slots[i] = Some(Input::Read(bytes));
            }
        }
        // Every slot is filled above; an empty one must fail the chunk, never run it on
        // empty bytes.
        let inputs = slots
            .into_iter()
            .zip(&spec.inputs)
            .map(|(bytes, cid)| {
                bytes.ok_or_else(|| format!("input {} was not loaded", cid.short()))
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok(inputs)
    }

    /// The chunk's final answer if it finishes within `wait`; `None` while it is still
    /// working. A chunk this worker does not know is answered `Unknown`.
    async fn answer_within(&self, chunk: Cid, wait: Duration) -> Option<TaskResponse> {
        let Some(mut status) = self.lock().status.get(&chunk).cloned() else {
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
            Status::Done { result, len, small } => {
                let inline = if let Some(bytes) = small {
                    bytes
                } else if len as usize <= limits::MAX_INLINE_RESULT {
                    let store = self.store.clone();
                    match tokio::task::spawn_blocking(move || store.get(&result)).await {
                        Ok(Ok(Some(bytes))) => Bytes::from(bytes),
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
