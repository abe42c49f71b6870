//! Chunks sent to a worker several to a request. Every request costs a stream of its
//! own (open, protocol negotiation, frames each way, a close), which for a chunk of a
//! millisecond or less is most of its cost; a `RunMany` of 32 chunks pays it once.
//!
//! [`Client::run`] sends a chunk at once if fewer than [`BATCHES_IN_FLIGHT`] requests
//! to its worker are out; otherwise it waits in the worker's outbox, and the next
//! request to go takes everything waiting there (up to what the worker offers and what
//! fits a request). So a lone chunk never waits for company, and a deep pipeline of
//! small chunks travels in few requests. Only workers whose probe answer offered
//! batches ([`PeerInfo::batch`](idlegrid_protocol::message::PeerInfo::batch)) are sent
//! one; the others get one `Run` per chunk, as before batches existed.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use idlegrid_protocol::{limits, TaskRequest, TaskResponse, TaskSpec};
use libp2p::PeerId;
use tokio::sync::oneshot;

use super::{Client, NetError};

/// Requests with chunks out to one worker at once; the rest wait to go together.
const BATCHES_IN_FLIGHT: usize = 2;

/// Encoded bytes a batch may take, under [`limits::MAX_TASK_REQUEST`] with room for
/// the framing the estimate leaves out.
const BATCH_BYTES: usize = limits::MAX_TASK_REQUEST * 3 / 4;

/// Workers remembered; past this the oldest entries go (a forgotten worker is sent one
/// `Run` per chunk until its next probe).
const MAX_WORKERS: usize = 4096;

type Answer = oneshot::Sender<Result<TaskResponse, NetError>>;

/// Chunks to send together, each with where its answer goes.
type Batch = Vec<(TaskSpec, Answer)>;

#[derive(Default)]
struct Outbox {
    /// Most chunks the worker takes in one request (0 or 1: no batches).
    offered: u32,
    waiting: VecDeque<(TaskSpec, Answer)>,
    in_flight: usize,
}

/// Every worker's outbox (see the module docs).
#[derive(Default)]
pub(crate) struct Batches {
    outboxes: Mutex<HashMap<PeerId, Outbox>>,
}

/// A rough upper bound of a spec's encoded size.
fn encoded_size(spec: &TaskSpec) -> usize {
    64 + spec.kernel.len() + spec.params.len() + spec.inputs.len() * 36
}

impl Batches {
    fn outboxes(&self) -> MutexGuard<'_, HashMap<PeerId, Outbox>> {
        self.outboxes.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Remembers what a worker's probe answer offered.
    pub(crate) fn offered(&self, peer: PeerId, batch: u32) {
        let mut outboxes = self.outboxes();
        if outboxes.len() >= MAX_WORKERS && !outboxes.contains_key(&peer) {
            // Forget a worker with nothing going on.
            if let Some(idle) = outboxes
                .iter()
                .find(|(_, o)| o.in_flight == 0 && o.waiting.is_empty())
                .map(|(p, _)| *p)
            {
                outboxes.remove(&idle);
            } else {
                return;
            }
        }
        outboxes.entry(peer).or_default().offered = batch.min(limits::MAX_BATCH as u32);
    }

    /// Queues `spec` for `peer`. Returns the batch to send now, if a request may go,
    /// or `Err(spec)` if the worker takes no batches.
    fn enqueue(
        &self,
        peer: PeerId,
        spec: TaskSpec,
        answer: Answer,
    ) -> Result<Option<Batch>, (TaskSpec, Answer)> {
        let mut outboxes = self.outboxes();
        let Some(outbox) = outboxes.get_mut(&peer).filter(|o| o.offered > 1) else {
            return Err((spec, answer));
        };
        outbox.waiting.push_back((spec, answer));
        if outbox.in_flight >= BATCHES_IN_FLIGHT {
            return Ok(None);
        }
        outbox.in_flight += 1;
        Ok(Some(Self::take(outbox)))
    }

    /// The next batch from an outbox: the chunks waiting, oldest first, up to what the
    /// worker offered and what fits a request. Chunks whose caller gave up are dropped.
    fn take(outbox: &mut Outbox) -> Batch {
        let mut batch = Vec::new();
        let mut bytes = 0;
        while let Some((spec, answer)) = outbox.waiting.pop_front() {
            if answer.is_closed() {
                continue;
            }
            let size = encoded_size(&spec);
            let full = batch.len() >= outbox.offered.max(1) as usize
                || (!batch.is_empty() && bytes + size > BATCH_BYTES);
            if full {
                outbox.waiting.push_front((spec, answer));
                break;
            }
            bytes += size;
            batch.push((spec, answer));
        }
        batch
    }

    /// A request to `peer` came back: the next batch to send on the same turn, or
    /// `None` (and one request fewer in flight) if nothing waits.
    fn next(&self, peer: PeerId) -> Option<Batch> {
        let mut outboxes = self.outboxes();
        let outbox = outboxes.get_mut(&peer)?;
        let batch = Self::take(outbox);
        if batch.is_empty() {
            outbox.in_flight = outbox.in_flight.saturating_sub(1);
            return None;
        }
        Some(batch)
    }
}

impl Client {
    /// Sends chunk `spec` to `peer` to run (a `Run`, alone or in a `RunMany` with other
    /// chunks for the same worker; see the module docs) and returns its answer.
    pub async fn run(&self, peer: PeerId, spec: TaskSpec) -> Result<TaskResponse, NetError> {
        let (answer, answered) = oneshot::channel();
        match self.batches.enqueue(peer, spec, answer) {
            Err((spec, _)) => return self.task(peer, TaskRequest::Run { spec }).await,
            Ok(Some(batch)) => {
                // On a task of its own: the caller may be dropped while the batch
                // carries other callers' chunks.
                tokio::spawn(self.clone().send_batches(peer, batch));
            }
            Ok(None) => {}
        }
        answered.await.map_err(|_| NetError::Stopped)?
    }

    /// Sends `batch`, hands out its answers, and goes on with what waits meanwhile.
    async fn send_batches(self, peer: PeerId, mut batch: Batch) {
        loop {
            let (specs, answers): (Vec<TaskSpec>, Vec<Answer>) = batch.into_iter().unzip();
            let count = specs.len();
            let outcome = match specs.len() {
                0 => Ok(Vec::new()),
                1 => {
                    let spec = specs.into_iter().next();
                    match spec {
                        Some(spec) => self
                            .task(peer, TaskRequest::Run { spec })
                            .await
                            .map(|answer| vec![answer]),
                        None => Ok(Vec::new()),
                    }
                }
                _ => match self.task(peer, TaskRequest::RunMany { specs }).await {
                    Ok(TaskResponse::Many { answers }) if answers.len() == count => Ok(answers),
                    Ok(other) => Err(NetError::Stream {
                        peer,
                        reason: format!(
                            "answered a batch of {count} chunks with {}",
                            match other {
                                TaskResponse::Many { answers } =>
                                    format!("{} answers", answers.len()),
                                other => format!("{other:?}"),
                            }
                        ),
                    }),
                    Err(e) => Err(e),
                },
            };
            match outcome {
                Ok(results) => {
                    for (answer, result) in answers.into_iter().zip(results) {
                        let _ = answer.send(Ok(result));
                    }
                }
                Err(e) => {
                    for answer in answers {
                        let _ = answer.send(Err(e.clone()));
                    }
                }
            }
            match self.batches.next(peer) {
                Some(next) => batch = next,
                None => return,
            }
        }
    }
}

/// Shared by every clone of a [`Client`].
pub(crate) type SharedBatches = Arc<Batches>;
