//! The chunk runs of one job: each is a spawned task that runs a chunk on a remote peer
//! (send, long-poll, fetch and check the result) or on this machine, and reports back
//! to the job loop as a [`Report`]. [`Runs`] holds them; whatever ends the job, dropping
//! it stops every run still going and asks its remote peer to drop the chunk, so no
//! volunteer computes for a job that is over.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use idlegrid_protocol::{Cid, TaskRequest, TaskSpec};
use libp2p::PeerId;
use tokio::sync::mpsc;
use tokio::task::AbortHandle;

use super::local::run_local;
use super::remote;
use crate::executor::Executor;
use crate::net::Client;
use crate::node::Node;
use crate::store::BlobStore;
use idlegrid_scheduler::{ChunkIndex, FailureKind};

/// What spawned tasks tell the job loop.
pub(super) enum Report {
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
        /// The result's bytes, already checked against `result`.
        bytes: Bytes,
        /// Bytes that crossed the network for it (0 when computed here).
        received: u64,
    },
    Failed {
        peer: PeerId,
        chunk: ChunkIndex,
        kind: FailureKind,
        why: String,
    },
}

/// A chunk run in progress.
struct Running {
    task: AbortHandle,
    /// The chunk's id, to ask a remote peer to drop it.
    chunk: Cid,
}

/// The runs in progress, stopped when this is dropped.
pub(super) struct Runs {
    client: Client,
    store: BlobStore,
    executor: Executor,
    me: PeerId,
    reports: mpsc::UnboundedSender<Report>,
    running: HashMap<(PeerId, ChunkIndex), Running>,
    /// The node's count of live run tasks ([`Node::chunk_runs`]).
    live: Arc<AtomicUsize>,
}

/// Counts a run task as live for as long as its future exists: finished or aborted,
/// the count goes down when the future is dropped.
struct Live(Arc<AtomicUsize>);

impl Live {
    fn new(count: &Arc<AtomicUsize>) -> Live {
        count.fetch_add(1, Ordering::Relaxed);
        Live(count.clone())
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Runs {
    pub fn new(node: &Node, reports: mpsc::UnboundedSender<Report>) -> Runs {
        Runs {
            client: node.client.clone(),
            store: node.store.clone(),
            executor: node.executor.clone(),
            me: node.peer_id(),
            reports,
            running: HashMap::new(),
            live: node.chunk_runs.clone(),
        }
    }

    /// Runs chunk `chunk` (`spec`) on `peer`, this machine if `peer` is this peer.
    pub fn spawn(&mut self, peer: PeerId, chunk: ChunkIndex, spec: TaskSpec) {
        let client = self.client.clone();
        let store = self.store.clone();
        let executor = self.executor.clone();
        let reports = self.reports.clone();
        let local = peer == self.me;
        let id = spec.id();
        let live = Live::new(&self.live);
        let task = tokio::spawn(async move {
            let _live = live;
            let outcome = if local {
                run_local(&executor, &store, spec)
                    .await
                    .map(|(result, bytes)| (result, bytes, 0))
            } else {
                remote::run_chunk(&client, &store, peer, spec)
                    .await
                    .map(|o| (o.result, o.bytes, o.received))
            };
            let _ = reports.send(match outcome {
                Ok((result, bytes, received)) => Report::Done {
                    peer,
                    chunk,
                    result,
                    bytes,
                    received,
                },
                Err((kind, why)) => Report::Failed {
                    peer,
                    chunk,
                    kind,
                    why,
                },
            });
        })
        .abort_handle();
        let run = Running { task, chunk: id };
        if let Some(old) = self.running.insert((peer, chunk), run) {
            old.task.abort();
        }
    }

    /// A run reported back: it is over.
    pub fn ended(&mut self, peer: PeerId, chunk: ChunkIndex) {
        self.running.remove(&(peer, chunk));
    }

    /// Stops one run: its task, and the remote peer's work on it.
    pub fn stop(&mut self, peer: PeerId, chunk: ChunkIndex) {
        let Some(run) = self.running.remove(&(peer, chunk)) else {
            return;
        };
        run.task.abort();
        if peer == self.me {
            return;
        }
        let client = self.client.clone();
        let request = TaskRequest::Cancel { chunk: run.chunk };
        // Outside a runtime (the job's future dropped as its runtime shuts down) the
        // peer finds out by itself when no poll comes.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let _ = client.task(peer, request).await;
            });
        }
    }

    /// Stops every run.
    pub fn stop_all(&mut self) {
        let runs: Vec<_> = self.running.keys().copied().collect();
        for (peer, chunk) in runs {
            self.stop(peer, chunk);
        }
    }
}

impl Drop for Runs {
    fn drop(&mut self) {
        self.stop_all();
    }
}
