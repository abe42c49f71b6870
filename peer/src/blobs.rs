//! Fetching a blob from a peer over `/idlegrid/blob/1`, piece by piece, into the blob
//! store. The peer's word is checked at every step: the announced length against our
//! limit, each piece against the offset asked for, and the whole against its Cid before
//! it is stored.

use idlegrid_protocol::{limits, BlobRequest, BlobResponse, Cid};
use libp2p::PeerId;

use crate::net::{Client, NetError};
use crate::store::{BlobStore, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error(transparent)]
    Net(#[from] NetError),
    #[error("peer {peer} does not have blob {cid}")]
    NotFound { peer: PeerId, cid: Cid },
    #[error("peer {peer} refused blob {cid}: {reason}")]
    Refused {
        peer: PeerId,
        cid: Cid,
        reason: String,
    },
    #[error("peer {peer} announced blob {cid} of {len} bytes, over the {limit}-byte limit")]
    TooLarge {
        peer: PeerId,
        cid: Cid,
        len: u64,
        limit: u64,
    },
    #[error("peer {peer} sent an inconsistent piece of blob {cid}: {reason}")]
    BadPiece {
        peer: PeerId,
        cid: Cid,
        reason: String,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Fetches blob `cid` from `peer` into `store` unless it is already there. Returns its
/// length. Blobs over `max_len` bytes are refused before they are downloaded.
pub async fn fetch_blob(
    client: &Client,
    peer: PeerId,
    cid: Cid,
    store: &BlobStore,
    max_len: u64,
) -> Result<u64, FetchError> {
    if let Some(len) = store.len_of(&cid) {
        return Ok(len);
    }
    let bytes = fetch_bytes(client, peer, cid, max_len).await?;
    let len = bytes.len() as u64;
    let store = store.clone();
    tokio::task::spawn_blocking(move || store.put_verified(cid, &bytes))
        .await
        .map_err(|e| FetchError::BadPiece {
            peer,
            cid,
            reason: e.to_string(),
        })??;
    Ok(len)
}

/// Downloads a blob into memory (not stored, not yet verified against `cid`).
pub async fn fetch_bytes(
    client: &Client,
    peer: PeerId,
    cid: Cid,
    max_len: u64,
) -> Result<Vec<u8>, FetchError> {
    let max_len = max_len.min(limits::MAX_BLOB);
    let mut bytes: Vec<u8> = Vec::new();
    let mut total: Option<u64> = None;
    loop {
        let offset = bytes.len() as u64;
        if total == Some(offset) {
            return Ok(bytes);
        }
        let request = BlobRequest {
            cid,
            offset,
            len: limits::BLOB_PIECE as u32,
        };
        match client.blob(peer, request).await? {
            BlobResponse::NotFound => return Err(FetchError::NotFound { peer, cid }),
            BlobResponse::Refused { reason } => {
                return Err(FetchError::Refused { peer, cid, reason })
            }
            BlobResponse::Piece {
                total: announced,
                offset: got_offset,
                bytes: piece,
            } => {
                if announced > max_len {
                    return Err(FetchError::TooLarge {
                        peer,
                        cid,
                        len: announced,
                        limit: max_len,
                    });
                }
                let bad = |reason: &str| FetchError::BadPiece {
                    peer,
                    cid,
                    reason: reason.to_string(),
                };
                if *total.get_or_insert(announced) != announced {
                    return Err(bad("the blob's length changed between pieces"));
                }
                if got_offset != offset {
                    return Err(bad("piece at the wrong offset"));
                }
                if piece.is_empty() && offset < announced {
                    return Err(bad("empty piece before the end"));
                }
                if bytes.is_empty() {
                    bytes.reserve_exact(announced as usize);
                }
                bytes.extend_from_slice(&piece);
                if bytes.len() as u64 > announced {
                    return Err(bad("more bytes than announced"));
                }
            }
        }
    }
}
