//! A job's verified results, handed to its caller's assembler: the bytes as they
//! arrived (from the network or this machine's own kernel), kept in memory up to
//! [`RESULTS_IN_MEMORY`]; past that, and for results an earlier run of the job
//! verified, only their id, and the bytes are read back from the blob store, where every
//! verified result is written so that a resumed job can reuse it. A result held by id is
//! pinned there until the results are dropped, so the job's own later writes cannot
//! evict it before it is assembled.

use std::collections::HashMap;

use bytes::Bytes;
use idlegrid_protocol::Cid;

use super::GridError;
use crate::store::{BlobStore, Pins};

/// Bytes of verified results a job keeps in memory for its assembler.
pub const RESULTS_IN_MEMORY: u64 = 512 << 20;

/// One chunk's verified result.
enum Held {
    Memory { cid: Cid, bytes: Bytes },
    Stored { cid: Cid, _pin: Pins },
}

impl Held {
    fn stored(store: &BlobStore, cid: Cid) -> Held {
        Held::Stored {
            cid,
            _pin: store.pin([cid]),
        }
    }

    fn cid(&self) -> Cid {
        match self {
            Held::Memory { cid, .. } | Held::Stored { cid, .. } => *cid,
        }
    }
}

/// The results of a running job, in chunk order; a chunk's may be withdrawn again.
pub(super) struct Collecting {
    store: BlobStore,
    slots: Vec<Option<Held>>,
    in_memory: u64,
    /// Answers to chunks not settled yet, with their bytes, until one is verified.
    answers: HashMap<usize, Vec<(Cid, Bytes)>>,
}

impl Collecting {
    /// Room for `chunks` results, the ones an earlier run verified already filled in.
    pub fn new(store: &BlobStore, known: Vec<Option<Cid>>) -> Collecting {
        Collecting {
            slots: known
                .into_iter()
                .map(|r| r.map(|cid| Held::stored(store, cid)))
                .collect(),
            store: store.clone(),
            in_memory: 0,
            answers: HashMap::new(),
        }
    }

    /// A peer answered chunk `chunk` with `bytes` (hashing to `cid`): kept until the
    /// chunk is settled, unless it is already.
    pub fn answered(&mut self, chunk: usize, cid: Cid, bytes: Bytes) {
        if !self.is_set(chunk) {
            self.answers.entry(chunk).or_default().push((cid, bytes));
        }
    }

    /// Chunk `chunk`'s result is verified as `cid`: the bytes of the answer that gave
    /// it are kept, the other answers dropped.
    pub fn verified(&mut self, chunk: usize, cid: Cid) {
        let bytes = self.answers.remove(&chunk).and_then(|answers| {
            answers
                .into_iter()
                .find_map(|(answer, bytes)| (answer == cid).then_some(bytes))
        });
        self.set(chunk, cid, bytes);
    }

    pub fn is_set(&self, chunk: usize) -> bool {
        matches!(self.slots.get(chunk), Some(Some(_)))
    }

    /// Chunk `chunk`'s verified result bytes, if held in memory.
    pub fn bytes_of(&self, chunk: usize) -> Option<Bytes> {
        match self.slots.get(chunk) {
            Some(Some(Held::Memory { bytes, .. })) => Some(bytes.clone()),
            _ => None,
        }
    }

    pub fn set_count(&self) -> usize {
        self.slots.iter().filter(|s| s.is_some()).count()
    }

    /// Chunk `chunk`'s result is `cid`; its bytes, if still at hand, stay in memory
    /// while the budget allows.
    fn set(&mut self, chunk: usize, cid: Cid, bytes: Option<Bytes>) {
        self.clear(chunk);
        let held = match bytes {
            Some(bytes) if self.in_memory + bytes.len() as u64 <= RESULTS_IN_MEMORY => {
                self.in_memory += bytes.len() as u64;
                Held::Memory { cid, bytes }
            }
            _ => Held::stored(&self.store, cid),
        };
        if let Some(slot) = self.slots.get_mut(chunk) {
            *slot = Some(held);
        }
    }

    /// Chunk `chunk`'s result was withdrawn.
    pub fn clear(&mut self, chunk: usize) {
        if let Some(Some(Held::Memory { bytes, .. })) = self.slots.get_mut(chunk).map(Option::take)
        {
            self.in_memory -= bytes.len() as u64;
        }
    }

    /// Every chunk's result, or which chunk has none.
    pub fn finish(self) -> Result<JobResults, GridError> {
        let held = self
            .slots
            .into_iter()
            .enumerate()
            .map(|(i, r)| {
                r.ok_or_else(|| GridError::Failed(format!("chunk {i} has no verified result")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(JobResults {
            held,
            store: self.store,
        })
    }
}

/// A finished job's verified results, one per chunk, in chunk order.
pub struct JobResults {
    held: Vec<Held>,
    store: BlobStore,
}

impl JobResults {
    pub fn len(&self) -> usize {
        self.held.len()
    }

    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }

    /// The result ids, in chunk order.
    pub fn cids(&self) -> Vec<Cid> {
        self.held.iter().map(Held::cid).collect()
    }

    /// Chunk `chunk`'s result bytes: shared from memory, else read from the blob store
    /// (blocking file I/O: call it off the async runtime).
    pub fn bytes(&self, chunk: usize) -> Result<Bytes, GridError> {
        let missing = || GridError::Failed(format!("chunk {chunk}'s result is not held"));
        match self.held.get(chunk).ok_or_else(missing)? {
            Held::Memory { bytes, .. } => Ok(bytes.clone()),
            Held::Stored { cid, .. } => self
                .store
                .get(cid)
                .map_err(|e| GridError::Failed(format!("chunk {chunk}'s result: {e}")))?
                .ok_or_else(|| {
                    GridError::Failed(format!(
                        "chunk {chunk}'s result {} is missing from the blob store",
                        cid.short()
                    ))
                }),
        }
    }

    /// Every result's bytes, in chunk order (blocking, as [`JobResults::bytes`]).
    pub fn all_bytes(&self) -> Result<Vec<Bytes>, GridError> {
        (0..self.len()).map(|i| self.bytes(i)).collect()
    }
}
