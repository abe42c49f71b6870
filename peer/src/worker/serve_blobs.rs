//! Answers `/idlegrid/blob/1`: pieces of blobs from the [`BlobStore`], for workers
//! fetching a chunk's inputs and submitters fetching results.
//!
//! A blob is served only to a peer its store's [`Grants`](crate::store::Grants) let
//! read it (a worker this peer sent a chunk naming it, the submitter of a chunk here
//! that names it or produced it); anyone else is told the blob is not here, the same
//! answer as for a blob this peer does not have, so a stranger learns nothing.
//!
//! A request names a blob, an offset and a length; the answer is at most one bounded
//! piece, sliced from a blob held in memory when there is one, otherwise read from disk
//! on a blocking thread so the event loop never waits on the disk. The bytes served are
//! counted per requesting peer in [`Traffic`] for the job report.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use idlegrid_protocol::{limits, BlobRequest, BlobResponse};
use libp2p::PeerId;

use super::FaultHook;
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

/// The answer to one blob request from `peer`.
pub(super) async fn serve_piece(
    store: &BlobStore,
    traffic: &Traffic,
    faults: &FaultHook,
    peer: PeerId,
    request: BlobRequest,
) -> BlobResponse {
    let cid = request.cid;
    let len = (request.len as usize).min(limits::BLOB_PIECE);
    let offset = request.offset;
    if !store.grants().allows(&peer, &cid) {
        // Said at debug: a stranger asking again and again must not fill the log.
        tracing::debug!(
            "blob {} asked by {peer}, which it does not concern: answered not found",
            cid.short()
        );
        return BlobResponse::NotFound;
    }
    faults.before_piece(offset).await;
    // A piece of a blob held in memory is a slice of it: no copy, and no trip to a
    // blocking thread.
    let read = match store.resident_piece(&cid, offset, len) {
        Some(piece) => Ok(Ok(Some(piece))),
        None => {
            let store = store.clone();
            tokio::task::spawn_blocking(move || store.read_piece(&cid, offset, len)).await
        }
    };
    match read {
        Ok(Ok(Some((total, bytes)))) => {
            traffic.add(peer, bytes.len() as u64);
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
    }
}
