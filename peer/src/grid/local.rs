//! This machine as the job's trusted worker: its benchmark and its chunk runs, through
//! the same executor and blob store as any worker's, without the network.

use std::time::Instant;

use bytes::Bytes;
use idlegrid_protocol::{Cid, TaskSpec};

use super::Job;
use crate::executor::Executor;
use crate::node::Node;
use crate::results::INLINE_MAX;
use crate::store::BlobStore;
use idlegrid_scheduler::FailureKind;

/// Times the calibration chunk on this machine.
pub(super) async fn local_bench(node: &Node, job: &Job) -> f64 {
    let started = Instant::now();
    match local_inputs(&node.store, &job.calibration).await {
        Ok(inputs) => {
            if let Err(e) = node.executor.run(job.calibration.clone(), inputs).await {
                tracing::warn!("local benchmark failed: {e}");
            }
        }
        Err(e) => tracing::warn!("local benchmark inputs: {e}"),
    }
    job.calibration_cost as f64 / started.elapsed().as_secs_f64().max(1e-3)
}

/// Computes a chunk on this machine (the trusted worker) and stores its result if it
/// is too large to go inside the job's result log; returns the result's id and bytes.
pub(super) async fn run_local(
    executor: &Executor,
    store: &BlobStore,
    spec: TaskSpec,
) -> Result<(Cid, Bytes), (FailureKind, String)> {
    let inputs = local_inputs(store, &spec)
        .await
        .map_err(|e| (FailureKind::Transport, e))?;
    let output = executor.run(spec, inputs).await.map_err(|e| match e {
        idlegrid_kernels::KernelError::TimedOut(_) => (FailureKind::Timeout, e.to_string()),
        e => (FailureKind::Kernel, e.to_string()),
    })?;
    let output = Bytes::from(output);
    if output.len() as u64 <= INLINE_MAX {
        // Kept inside the job's result log once verified: the store needs no copy.
        return Ok((Cid::of(&output), output));
    }
    let store = store.clone();
    tokio::task::spawn_blocking(move || store.put(&output).map(|cid| (cid, output)))
        .await
        .map_err(|e| (FailureKind::Transport, e.to_string()))?
        .map_err(|e| (FailureKind::Transport, e.to_string()))
}

/// A chunk's inputs from this machine's store: shared from memory when they are the
/// job's resident blobs (see `store_blobs`), else read from their files.
async fn local_inputs(store: &BlobStore, spec: &TaskSpec) -> Result<Vec<Bytes>, String> {
    let store = store.clone();
    let cids = spec.inputs.clone();
    tokio::task::spawn_blocking(move || {
        cids.iter()
            .map(|cid| match store.get(cid) {
                Ok(Some(bytes)) => Ok(bytes),
                Ok(None) => Err(format!("input blob {} is not in the store", cid.short())),
                Err(e) => Err(e.to_string()),
            })
            .collect()
    })
    .await
    .map_err(|e| e.to_string())?
}
