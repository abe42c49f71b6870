//! Fetching a blob from a peer over `/idlegrid/blob/1`, piece by piece, into the blob
//! store or into memory. The peer's word is checked at every step: the announced length
//! against our limit, each piece against the offset asked for and the length due there,
//! and the whole against its Cid before it is stored.
//!
//! [`Pieces`] keeps [`PIECES_IN_FLIGHT`] requests out at once and hands the pieces back
//! in order, so the link is not idle for a round trip per piece, while memory stays
//! bounded by the pieces in flight. [`fetch_blob`] streams them through the store's
//! [`BlobWriter`] (hashed and written as they come); [`fetch_bytes`] collects them.
//!
//! A worker's chunk inputs go through [`fetch_input`]: a large input that fits the
//! worker's [`MemoryBudget`] is hashed as it arrives and kept in memory, so it is never
//! written to disk only to be read back a moment later (the page-cache write was the
//! largest kernel item in a worker's profile outside the compute); small inputs, which
//! other chunks of the job often share (the change kernel's tables), and inputs the
//! budget cannot hold go to the blob store. A large input stays in
//! [`RecentInputs`] after its chunk, as long as the budget has room, because the next
//! chunks often name it too (the change kernel's neighbouring bands share their halo
//! rows); two chunks that want the same input at once fetch it once.

mod memory;

pub use memory::{MemoryBudget, RecentInputs, RECENT_INPUTS_IDLE};

use std::sync::Arc;

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::stream::{FuturesOrdered, StreamExt};
use idlegrid_protocol::{limits, BlobRequest, BlobResponse, Cid};
use libp2p::PeerId;

use crate::net::{Client, NetError};
use crate::store::{BlobStore, BlobWriter, StoreError};

/// Pieces of one blob requested at once. One at a time leaves the link idle for a
/// round trip per piece (the request out, the holder reading the piece, the answer
/// back); a few keep it busy. Bytes in flight or waiting their turn are at most this
/// many [`limits::BLOB_PIECE`]s.
pub const PIECES_IN_FLIGHT: usize = 4;

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
    #[error("peer {peer} sent blob {cid} whose bytes hash to {actual}")]
    Mismatch { peer: PeerId, cid: Cid, actual: Cid },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("storing blob {cid}: {reason}")]
    Task { cid: Cid, reason: String },
}

type Answer = (u64, Result<BlobResponse, NetError>);

/// The pieces of one blob from one peer, in order, with up to [`PIECES_IN_FLIGHT`]
/// requests out.
pub struct Pieces {
    client: Client,
    peer: PeerId,
    cid: Cid,
    max_len: u64,
    /// The blob's length, from the first answer on.
    total: Option<u64>,
    /// Next offset to ask for.
    next_offset: u64,
    /// Bytes handed out so far.
    delivered: u64,
    /// Requests out, answered in the order they were asked.
    in_flight: FuturesOrdered<BoxFuture<'static, Answer>>,
}

impl Pieces {
    /// Blobs announced over `max_len` bytes (or [`limits::MAX_BLOB`]) are refused on
    /// the first answer.
    pub fn new(client: &Client, peer: PeerId, cid: Cid, max_len: u64) -> Pieces {
        Pieces {
            client: client.clone(),
            peer,
            cid,
            max_len: max_len.min(limits::MAX_BLOB),
            total: None,
            next_offset: 0,
            delivered: 0,
            in_flight: FuturesOrdered::new(),
        }
    }

    /// The blob's length, once the first piece has arrived.
    pub fn total(&self) -> Option<u64> {
        self.total
    }

    fn ask(&mut self, offset: u64) {
        let client = self.client.clone();
        let (peer, cid) = (self.peer, self.cid);
        let request = BlobRequest {
            cid,
            offset,
            len: limits::BLOB_PIECE as u32,
        };
        self.in_flight.push_back(Box::pin(async move {
            (offset, client.blob(peer, request).await)
        }));
    }

    /// Keeps the pipeline full once the length is known.
    fn refill(&mut self) {
        let Some(total) = self.total else { return };
        while self.in_flight.len() < PIECES_IN_FLIGHT && self.next_offset < total {
            let offset = self.next_offset;
            self.next_offset = (offset + limits::BLOB_PIECE as u64).min(total);
            self.ask(offset);
        }
    }

    fn bad(&self, reason: impl Into<String>) -> FetchError {
        FetchError::BadPiece {
            peer: self.peer,
            cid: self.cid,
            reason: reason.into(),
        }
    }

    /// The next piece in order, `None` after the last. The first call may return an
    /// empty piece (an empty blob). The piece shares the buffer it was received in.
    pub async fn next(&mut self) -> Result<Option<Bytes>, FetchError> {
        if self.total == Some(self.delivered) {
            return Ok(None);
        }
        if self.in_flight.is_empty() {
            // Only before the first answer: its length sets how many pieces follow.
            self.ask(self.delivered);
        }
        let Some((offset, answer)) = self.in_flight.next().await else {
            return Err(self.bad("no piece was asked for"));
        };
        let (announced, got_offset, piece) = match answer? {
            BlobResponse::NotFound => {
                return Err(FetchError::NotFound {
                    peer: self.peer,
                    cid: self.cid,
                })
            }
            BlobResponse::Refused { reason } => {
                return Err(FetchError::Refused {
                    peer: self.peer,
                    cid: self.cid,
                    reason,
                })
            }
            BlobResponse::Piece {
                total,
                offset,
                bytes,
            } => (total, offset, bytes),
        };
        if announced > self.max_len {
            return Err(FetchError::TooLarge {
                peer: self.peer,
                cid: self.cid,
                len: announced,
                limit: self.max_len,
            });
        }
        if *self.total.get_or_insert(announced) != announced {
            return Err(self.bad("the blob's length changed between pieces"));
        }
        if got_offset != offset || offset != self.delivered {
            return Err(self.bad("piece at the wrong offset"));
        }
        // The holder answers each request with all it asked for, up to the end.
        let due = (announced.saturating_sub(offset)).min(limits::BLOB_PIECE as u64);
        if piece.len() as u64 != due {
            return Err(self.bad(format!(
                "{} bytes at offset {offset}, {due} were due",
                piece.len()
            )));
        }
        self.delivered += due;
        if self.next_offset < self.delivered {
            self.next_offset = self.delivered;
        }
        self.refill();
        Ok(Some(piece.into_bytes()))
    }
}

/// Fetches blob `cid` from `peer` into `store` unless it is already there. Returns its
/// length. Blobs over `max_len` bytes are refused before they are downloaded. The
/// pieces are hashed and written as they arrive; the blob appears in the store only
/// once all of it hashes to `cid`.
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
    let mut pieces = Pieces::new(client, peer, cid, max_len);
    let first = pieces.next().await?.unwrap_or_default();
    store_pieces(pieces, first, cid, store).await
}

/// Writes the rest of `pieces` (whose first piece is `first`) into `store`.
async fn store_pieces(
    mut pieces: Pieces,
    first: Bytes,
    cid: Cid,
    store: &BlobStore,
) -> Result<u64, FetchError> {
    let len = pieces.total().unwrap_or(0);
    let on_disk = |e: tokio::task::JoinError| FetchError::Task {
        cid,
        reason: e.to_string(),
    };
    // The store's file I/O runs on blocking threads; the next pieces keep arriving
    // meanwhile (they were asked for before this piece was handed out).
    let store = store.clone();
    let mut writer: BlobWriter = tokio::task::spawn_blocking(move || {
        let mut writer = store.writer(cid, len)?;
        writer.write(&first)?;
        Ok::<_, StoreError>(writer)
    })
    .await
    .map_err(on_disk)??;
    while let Some(piece) = pieces.next().await? {
        writer = tokio::task::spawn_blocking(move || {
            writer.write(&piece)?;
            Ok::<_, StoreError>(writer)
        })
        .await
        .map_err(on_disk)??;
    }
    tokio::task::spawn_blocking(move || writer.finish())
        .await
        .map_err(on_disk)??;
    Ok(len)
}

/// Inputs smaller than this always go to the blob store: writing them costs little, and
/// they are the ones other chunks share (the change kernel's tables, a calibration
/// chunk's inputs), which then travel once per worker instead of once per chunk.
pub const STORE_INPUTS_BELOW: u64 = 256 * 1024;

/// Where [`fetch_input`] put an input.
pub enum Fetched {
    /// In the blob store (it was there already, or was written there).
    Stored,
    /// In memory, verified against its Cid. The bytes hold their share of the
    /// [`MemoryBudget`] until the last clone of them is dropped.
    Memory(Bytes),
}

/// Drops a fetch lock from [`RecentInputs`] when its fetch is over.
struct ForgetFetchLock<'a> {
    recent: &'a RecentInputs,
    cid: Cid,
    lock: Arc<tokio::sync::Mutex<()>>,
}

impl Drop for ForgetFetchLock<'_> {
    fn drop(&mut self) {
        self.recent.fetched(&self.cid, &self.lock);
    }
}

/// Fetches chunk input `cid` from `peer`, unless this worker holds it already (in
/// `recent` or the store): into memory if it is at least [`STORE_INPUTS_BELOW`] bytes
/// and fits `budget` (after dropping older inputs from `recent` if need be), otherwise
/// into `store`. Either way it is checked against its Cid before it is handed out, and
/// one held in memory joins `recent`.
pub async fn fetch_input(
    client: &Client,
    peer: PeerId,
    cid: Cid,
    store: &BlobStore,
    max_len: u64,
    budget: &MemoryBudget,
    recent: &RecentInputs,
) -> Result<Fetched, FetchError> {
    // Most chunks name inputs this worker holds already (a module, a shared frame, a
    // reference image): those take no fetch lock. The checks are made again under the
    // lock below, for an input that arrives meanwhile.
    if let Some(input) = recent.get(&cid) {
        return Ok(Fetched::Memory(input));
    }
    if store.len_of(&cid).is_some() {
        return Ok(Fetched::Stored);
    }
    let lock = recent.fetch_lock(cid);
    // Declared before the guard of the lock, so dropped after it: the lock leaves
    // `recent` once this fetch is over, however it ends (dropped mid-way too).
    let _forget = ForgetFetchLock {
        recent,
        cid,
        lock: lock.clone(),
    };
    let _fetching = lock.lock().await;
    if let Some(input) = recent.get(&cid) {
        return Ok(Fetched::Memory(input));
    }
    if store.len_of(&cid).is_some() {
        return Ok(Fetched::Stored);
    }
    let mut pieces = Pieces::new(client, peer, cid, max_len);
    let first = pieces.next().await?.unwrap_or_default();
    let len = pieces.total().unwrap_or(0);
    let share = if len >= STORE_INPUTS_BELOW {
        recent.make_room(budget, len)
    } else {
        None
    };
    let Some(share) = share else {
        store_pieces(pieces, first, cid, store).await?;
        return Ok(Fetched::Stored);
    };
    // `Pieces` checked the length against `max_len` and each piece against its offset.
    let mut hasher = blake3::Hasher::new();
    let bytes = join_pieces(pieces, first, |piece| {
        hasher.update(piece);
    })
    .await?;
    let actual = Cid::from_hasher(&hasher);
    if actual != cid {
        return Err(FetchError::Mismatch { peer, cid, actual });
    }
    let input = memory::held(bytes, share);
    recent.insert(cid, input.clone());
    Ok(Fetched::Memory(input))
}

/// Downloads a blob into memory (not stored, not yet verified against `cid`).
pub async fn fetch_bytes(
    client: &Client,
    peer: PeerId,
    cid: Cid,
    max_len: u64,
) -> Result<Bytes, FetchError> {
    let mut pieces = Pieces::new(client, peer, cid, max_len);
    let first = pieces.next().await?.unwrap_or_default();
    join_pieces(pieces, first, |_| {}).await
}

/// The whole blob from `first` and the rest of `pieces`, each piece passed to `each`
/// as it comes. A blob of one piece (most chunk inputs, most results) is that piece as
/// it was received; a larger one is joined into a buffer of its announced length.
async fn join_pieces(
    mut pieces: Pieces,
    first: Bytes,
    mut each: impl FnMut(&[u8]),
) -> Result<Bytes, FetchError> {
    each(&first);
    let total = pieces.total().unwrap_or(0);
    if first.len() as u64 == total {
        return Ok(first);
    }
    // `Pieces` refused a length over its limit on the first answer.
    let mut joined: Vec<u8> = Vec::with_capacity(total as usize);
    joined.extend_from_slice(&first);
    while let Some(piece) = pieces.next().await? {
        each(&piece);
        joined.extend_from_slice(&piece);
    }
    Ok(Bytes::from(joined))
}
