//! The compute pipeline of one admitted chunk: fetch its inputs, wait for its turn at a
//! core, load the inputs kept on disk, run the kernel on the
//! [`Executor`](crate::executor::Executor), keep the result.
//!
//! Inputs come from the requester, several at once, each refused if announced larger
//! than the chunk's params allow (before a byte of it is fetched): large ones into
//! memory while the [`MemoryBudget`](crate::blobs::MemoryBudget) allows (kept there for
//! the next chunks that name them), the rest into the blob store, which reserves each
//! one's size within its cap and keeps the chunk's inputs pinned until it ends. Until
//! the kernel starts, the owner's stop hands the chunk back; once it runs, the grace
//! period's end does. Its submitters' cancel drops it wherever it is. A kernel given up
//! on is told to stop through its [`Cancel`] flag and keeps its core until it has. The
//! outcome is a [`Status`] the registry keeps: small results in memory, larger ones in
//! the blob store.

use std::collections::HashMap;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use idlegrid_kernels::Cancel;
use idlegrid_protocol::{Cid, TaskSpec};
use libp2p::PeerId;
use tokio::sync::watch;

use super::registry::Status;
use super::Worker;
use crate::blobs::{fetch_input, Fetched};

/// Results this small are kept with the chunk's status and answered from memory, so a
/// tiny chunk costs no disk I/O on the worker.
pub(super) const KEEP_IN_MEMORY: usize = 64 * 1024;

/// Inputs of one chunk fetched at once (each with its own pieces in flight).
const INPUTS_IN_FLIGHT: usize = 8;
/// Stored inputs up to this many bytes in all are read on the async thread: small
/// packed records (a module, a tag), where a blocking thread's hand-off costs more
/// than the read.
const READ_INLINE: u64 = crate::store::PACKED_MAX;

/// Sets a kernel's [`Cancel`] flag when dropped: however the wait for a running kernel
/// ends (handed back, cancelled, the task dropped), the kernel stops at its next check.
/// After a kernel has returned, setting it changes nothing.
struct StopOnDrop(Cancel);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

impl Worker {
    /// Fetches the inputs (into memory or the store, each within its limit in
    /// `limits`), waits for its turn at a core, loads the stored ones, runs the kernel,
    /// keeps the result.
    pub(super) async fn compute(
        &self,
        peer: PeerId,
        spec: TaskSpec,
        limits: Vec<u64>,
        mut cancelled: watch::Receiver<bool>,
    ) -> Status {
        // Phase times for the debug log: where a chunk's time goes on this worker.
        let accepted = std::time::Instant::now();
        let chunk = spec.id();
        let gate = &self.config.gate;
        let handed_back = || Status::Failed(format!("handed back: {}", gate.decision().summary()));
        let cancelled_by = |what: &str| {
            tracing::debug!("chunk {} for {peer}: cancelled {what}", chunk.short());
            Status::Cancelled
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
        // Stored inputs stay until the chunk has run: another chunk's input arriving
        // meanwhile must not evict them.
        let _pins = self.store.pin(spec.inputs.iter().copied());
        let fetch = futures::stream::iter(spec.inputs.iter().copied().zip(limits))
            .map(|(cid, limit)| async move {
                fetch_input(
                    &self.client,
                    peer,
                    cid,
                    &self.store,
                    self.config.max_input.min(limit),
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
                Fetched::Memory(input) => input.len(),
                Fetched::Stored => 0,
            })
            .sum();
        tracing::debug!(
            "chunk {} for {peer}: has its inputs after {fetched_after:.1?} ({in_memory} bytes in memory)",
            chunk.short()
        );
        let turn = tokio::select! {
            turn = self.turns.wait(peer) => match turn {
                Ok(turn) => turn,
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
        let stop = Cancel::new();
        let _stop_on_drop = StopOnDrop(stop.clone());
        let kernel_started = std::time::Instant::now();
        let work = async {
            self.faults.before_run().await?;
            self.executor
                .run_cancellable(spec, inputs, turn, stop)
                .await
                .map_err(|e| e.to_string())
        };
        // After the grace period, or once its submitters cancel it, the chunk is given
        // up here at once; the kernel stops at its next check and frees its core then.
        let mut output = tokio::select! {
            output = work => match output {
                Ok(output) => output,
                Err(why) => return Status::Failed(why),
            },
            () = gate.evicted() => return handed_back(),
            () = cancel() => return cancelled_by("while it ran"),
        };
        self.requesters.computed(peer, kernel_started.elapsed());
        tracing::debug!(
            "chunk {} for {peer}: inputs fetched after {fetched_after:.1?}, a core after {slotted:.1?}, computed after {:.1?}",
            chunk.short(),
            accepted.elapsed()
        );
        self.faults.after_run(&mut output);
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
    /// given back when the kernel and
    /// [`RecentInputs`](crate::blobs::RecentInputs) have both let go), the stored ones
    /// read from the store on a blocking thread, each distinct blob once however often
    /// the chunk names it.
    async fn load_inputs(
        &self,
        spec: &TaskSpec,
        fetched: Vec<Fetched>,
    ) -> Result<Vec<Bytes>, String> {
        let mut read: HashMap<Cid, Option<Bytes>> = HashMap::new();
        for (input, cid) in fetched.iter().zip(&spec.inputs) {
            if let Fetched::Stored = input {
                read.insert(*cid, None);
            }
        }
        let store = self.store.clone();
        let read_all = move |read: HashMap<Cid, Option<Bytes>>| {
            read.into_keys()
                .map(|cid| match store.get(&cid) {
                    Ok(Some(bytes)) => Ok((cid, Some(bytes))),
                    Ok(None) => Err(format!("input {} vanished", cid.short())),
                    Err(e) => Err(e.to_string()),
                })
                .collect::<Result<HashMap<_, _>, String>>()
        };
        let stored_bytes: u64 = read
            .keys()
            .map(|cid| self.store.len_of(cid).unwrap_or(u64::MAX))
            .fold(0, u64::saturating_add);
        if stored_bytes <= READ_INLINE {
            // A few small packed records: a read from the page cache each, quicker
            // than handing the work to a blocking thread and waiting for its wake-up.
            read = read_all(read)?;
        } else {
            read = tokio::task::spawn_blocking(move || read_all(read))
                .await
                .map_err(|e| e.to_string())??;
        }
        fetched
            .into_iter()
            .zip(&spec.inputs)
            .map(|(input, cid)| match input {
                Fetched::Memory(bytes) => Ok(bytes),
                // Every stored input was read above; one missing fails the chunk, never
                // runs it on empty bytes.
                Fetched::Stored => read
                    .get(cid)
                    .cloned()
                    .flatten()
                    .ok_or_else(|| format!("input {} was not loaded", cid.short())),
            })
            .collect()
    }
}
