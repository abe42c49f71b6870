//! Talking to one remote worker about one chunk: probe it, benchmark it, run a chunk
//! on it (accept, long-poll, fetch and verify the result). Every failure is classified
//! as the scheduler's [`FailureKind`], so the breaker sees what really happened.

use std::time::{Duration, Instant};

use bytes::Bytes;
use idlegrid_protocol::message::PeerInfo;
use idlegrid_protocol::{Cid, Payload, TaskRequest, TaskResponse, TaskSpec};
use idlegrid_scheduler::FailureKind;
use libp2p::PeerId;

use crate::blobs::fetch_bytes;
use crate::net::{Client, NetError};
use crate::results::INLINE_MAX;
use crate::store::BlobStore;

/// Why a peer is not used for a job.
#[derive(Debug, thiserror::Error)]
pub enum Unusable {
    #[error("did not answer the probe within {0:?}")]
    ProbeTimeout(Duration),
    #[error("{0}")]
    Net(#[from] NetError),
    #[error("does not run kernel {kernel} version {version} (runs {offered})")]
    NoKernel {
        kernel: String,
        version: u32,
        offered: String,
    },
    #[error("is busy (its owner's policy says no work now)")]
    Busy,
    #[error("answered the probe with something else")]
    Confused,
    #[error("benchmark failed: {0:?}")]
    Bench(FailureKind),
}

impl Unusable {
    /// Whether asking again later may find the peer usable: its owner's policy may open,
    /// a slow or unreachable peer may come back. A peer that does not run the kernel, or
    /// does not speak the protocol, will not change within a job.
    pub fn may_change(&self) -> bool {
        !matches!(self, Unusable::NoKernel { .. } | Unusable::Confused)
    }
}

/// Liveness and capability probe, answered within `timeout` or the peer is skipped.
pub async fn probe(client: &Client, peer: PeerId, timeout: Duration) -> Result<PeerInfo, Unusable> {
    match tokio::time::timeout(timeout, client.task(peer, TaskRequest::Probe)).await {
        Err(_) => Err(Unusable::ProbeTimeout(timeout)),
        Ok(Err(e)) => Err(Unusable::Net(e)),
        Ok(Ok(TaskResponse::Probe(info))) => Ok(info),
        Ok(Ok(_)) => Err(Unusable::Confused),
    }
}

/// Checks a probe answer against the job's kernel.
pub fn check_offer(info: &PeerInfo, kernel: &str, version: u32) -> Result<(), Unusable> {
    if info.busy {
        return Err(Unusable::Busy);
    }
    if !info
        .kernels
        .iter()
        .any(|(k, v)| k == kernel && *v == version)
    {
        let offered = info
            .kernels
            .iter()
            .map(|(k, v)| format!("{k}/{v}"))
            .collect::<Vec<_>>()
            .join(", ");
        return Err(Unusable::NoKernel {
            kernel: kernel.to_string(),
            version,
            offered: if offered.is_empty() {
                "nothing".into()
            } else {
                offered
            },
        });
    }
    Ok(())
}

/// Runs the calibration chunk on the peer; its score is `cost` work units per second
/// of wall time, network included (that is what the job will see too).
pub async fn bench(
    client: &Client,
    store: &BlobStore,
    peer: PeerId,
    spec: &TaskSpec,
    cost: u64,
) -> Result<f64, Unusable> {
    let started = Instant::now();
    run_chunk(client, store, peer, spec.clone())
        .await
        .map_err(|(kind, _)| Unusable::Bench(kind))?;
    Ok(cost as f64 / started.elapsed().as_secs_f64().max(1e-3))
}

/// What a chunk run brought back: the result's id and its bytes (checked against the
/// id), and how many bytes crossed the network for it.
pub struct ChunkOutcome {
    pub result: Cid,
    pub bytes: Bytes,
    pub received: u64,
}

fn classify(e: &NetError) -> FailureKind {
    match e {
        NetError::Timeout { .. } => FailureKind::Timeout,
        _ => FailureKind::Transport,
    }
}

/// Sends the chunk, polls until it is done, fetches the result if it did not come
/// inline, checks it hashes to the id the worker claims, and stores it.
pub async fn run_chunk(
    client: &Client,
    store: &BlobStore,
    peer: PeerId,
    spec: TaskSpec,
) -> Result<ChunkOutcome, (FailureKind, String)> {
    let chunk = spec.id();
    // The worker may read the chunk's inputs from this peer while the run lasts.
    let _inputs = store.grants().grant(peer, spec.inputs.iter().copied());
    let mut answer = client.run(peer, spec.clone()).await;
    loop {
        match answer {
            Ok(TaskResponse::Accepted { .. } | TaskResponse::Running { .. }) => {
                answer = client.task(peer, TaskRequest::Poll { chunk }).await;
            }
            Ok(TaskResponse::Refused { reason, .. }) => return Err((FailureKind::Refused, reason)),
            Ok(TaskResponse::Done {
                result,
                len,
                inline,
                ..
            }) => return receive_result(client, store, peer, &spec, result, len, inline).await,
            // A worker's watchdog is no verdict on the chunk: retried like a timeout.
            Ok(TaskResponse::Failed { reason, .. })
                if reason.starts_with(idlegrid_kernels::TIMED_OUT) =>
            {
                return Err((FailureKind::Timeout, reason))
            }
            Ok(TaskResponse::Failed { reason, .. }) => return Err((FailureKind::Kernel, reason)),
            Ok(TaskResponse::Unknown { .. }) => {
                return Err((
                    FailureKind::Transport,
                    "the worker forgot the chunk (restarted?)".into(),
                ))
            }
            Ok(other) => {
                return Err((
                    FailureKind::Transport,
                    format!("unexpected answer: {other:?}"),
                ))
            }
            Err(e) => return Err((classify(&e), e.to_string())),
        }
    }
}

async fn receive_result(
    client: &Client,
    store: &BlobStore,
    peer: PeerId,
    spec: &TaskSpec,
    result: Cid,
    len: u64,
    inline: Payload,
) -> Result<ChunkOutcome, (FailureKind, String)> {
    let max = idlegrid_kernels::max_result_len(spec);
    if len > max {
        return Err((
            FailureKind::BadHash,
            format!("claimed a result of {len} bytes; this chunk's cannot pass {max}"),
        ));
    }
    let bytes = if inline.is_empty() && len > 0 {
        fetch_bytes(client, peer, result, len)
            .await
            .map_err(|e| (FailureKind::Transport, e.to_string()))?
    } else if inline.len() as u64 <= INLINE_MAX {
        // An inline result is a slice of the whole response it came in (with a batch's,
        // a few kilobytes); kept for the job's end, it would keep that buffer alive.
        Bytes::copy_from_slice(&inline.into_bytes())
    } else {
        inline.into_bytes()
    };
    if bytes.len() as u64 != len || Cid::of(&bytes) != result {
        return Err((
            FailureKind::BadHash,
            format!("result bytes do not hash to the claimed {}", result.short()),
        ));
    }
    if let Err(why) = idlegrid_kernels::check_result(spec, &bytes) {
        return Err((FailureKind::BadHash, format!("malformed result: {why}")));
    }
    let received = bytes.len() as u64;
    if received > INLINE_MAX {
        // Too large to go inside the job's result log: a blob of the store.
        let store = store.clone();
        let bytes = bytes.clone();
        tokio::task::spawn_blocking(move || store.put_verified(result, &bytes))
            .await
            .map_err(|e| (FailureKind::Transport, e.to_string()))?
            .map_err(|e| (FailureKind::Transport, e.to_string()))?;
    }
    Ok(ChunkOutcome {
        result,
        bytes,
        received,
    })
}
