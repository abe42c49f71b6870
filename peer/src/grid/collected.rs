//! A job's verified results, kept for its caller's assembler in the job's result log
//! (`crate::results`): a small result inside its record, a large one as a blob in the
//! store, pinned there until the results are dropped so that the job's own later writes
//! cannot evict it before it is assembled. Nothing per chunk stays in memory but the
//! log's offset of its record; answers to chunks in play are held until one of them is
//! verified.

use std::collections::HashMap;

use bytes::Bytes;
use idlegrid_protocol::Cid;
use idlegrid_scheduler::VerifiedBy;

use super::GridError;
use crate::results::{Recorded, ResultLog, INLINE_MAX};
use crate::store::{BlobStore, Pins};

/// The results of a running job, by chunk; a chunk's may be withdrawn again.
pub(super) struct Collecting {
    store: BlobStore,
    log: ResultLog,
    /// The large results (blobs in the store) verified so far or reused.
    pins: Vec<Pins>,
    /// Answers to chunks not settled yet, with their bytes, until one is verified; and
    /// the result of a chunk withdrawn, in case the chunk settles on it again.
    answers: HashMap<usize, Vec<(Cid, Bytes)>>,
}

impl Collecting {
    /// The results `log` holds already (an earlier run's) are taken as they are.
    pub fn new(store: &BlobStore, mut log: ResultLog) -> Collecting {
        Collecting {
            pins: vec![store.pin(log.take_stored())],
            store: store.clone(),
            log,
            answers: HashMap::new(),
        }
    }

    /// A peer answered chunk `chunk` with `bytes` (hashing to `cid`): kept until the
    /// chunk is settled. An answer to a settled chunk is dropped if it agrees, kept if
    /// it does not (a spot check that caught a liar): the result is about to be
    /// withdrawn and the chunk to settle on this one.
    pub fn answered(&mut self, chunk: usize, cid: Cid, bytes: Bytes) {
        if self.log.is_set(chunk) {
            // A late copy or a spot check: only a different answer can matter.
            let settled = self.log.read(chunk).ok().flatten().map(|r| r.result);
            if settled == Some(cid) {
                return;
            }
        }
        self.answers.entry(chunk).or_default().push((cid, bytes));
    }

    /// Chunk `chunk`'s result is verified as `cid` (resting on `how`): recorded in the
    /// log, the other answers dropped. Returns its bytes.
    pub fn verified(
        &mut self,
        chunk: usize,
        cid: Cid,
        how: VerifiedBy,
    ) -> Result<Bytes, GridError> {
        let answer = self.answers.remove(&chunk).and_then(|answers| {
            answers
                .into_iter()
                .find_map(|(answer, bytes)| (answer == cid).then_some(bytes))
        });
        let bytes = match answer {
            Some(bytes) => bytes,
            // Its bytes were not kept in memory: a large result is in the store.
            None => self.store.get(&cid).ok().flatten().ok_or_else(|| {
                GridError::Failed(format!(
                    "chunk {chunk}'s verified result {} is neither held nor in the blob store",
                    cid.short()
                ))
            })?,
        };
        if bytes.len() as u64 > INLINE_MAX {
            self.pins.push(self.store.pin([cid]));
        }
        self.log.record(chunk, &cid, how, Some(&bytes))?;
        Ok(bytes)
    }

    /// Chunk `chunk`'s result was withdrawn: its bytes wait with the answers, in case
    /// the chunk settles on them again.
    pub fn revoked(&mut self, chunk: usize) -> Result<(), GridError> {
        if let Some(Recorded {
            result,
            bytes: Some(bytes),
            ..
        }) = self.log.read(chunk)?
        {
            self.answers.entry(chunk).or_default().push((result, bytes));
        }
        self.log.forget(chunk)?;
        Ok(())
    }

    pub fn is_set(&self, chunk: usize) -> bool {
        self.log.is_set(chunk)
    }

    /// The chunks with a result, in order.
    pub fn set_chunks(&self) -> impl Iterator<Item = usize> + '_ {
        self.log.set_chunks()
    }

    /// Chunk `chunk`'s result id, if it has one.
    pub fn result_of(&self, chunk: usize) -> Result<Option<Cid>, GridError> {
        Ok(self.log.read(chunk)?.map(|r| r.result))
    }

    /// Every chunk's result, or which chunk has none.
    pub fn finish(self) -> Result<JobResults, GridError> {
        if let Some(missing) = (0..self.log.len()).find(|&i| !self.log.is_set(i)) {
            return Err(GridError::Failed(format!(
                "chunk {missing} has no verified result"
            )));
        }
        Ok(JobResults {
            log: self.log,
            store: self.store,
            _pins: self.pins,
        })
    }
}

/// A finished job's verified results, one per chunk, in chunk order, read back from
/// the job's result log (and the blob store, for large ones) as the assembler asks.
pub struct JobResults {
    log: ResultLog,
    store: BlobStore,
    _pins: Vec<Pins>,
}

impl JobResults {
    pub fn len(&self) -> usize {
        self.log.len()
    }

    pub fn is_empty(&self) -> bool {
        self.log.is_empty()
    }

    /// Chunk `chunk`'s result id.
    pub fn cid(&self, chunk: usize) -> Result<Cid, GridError> {
        Ok(self.recorded(chunk)?.result)
    }

    fn recorded(&self, chunk: usize) -> Result<Recorded, GridError> {
        self.log
            .read(chunk)?
            .ok_or_else(|| GridError::Failed(format!("chunk {chunk}'s result is not held")))
    }

    /// Chunk `chunk`'s result bytes, checked against its id (blocking file I/O: call it
    /// off the async runtime).
    pub fn bytes(&self, chunk: usize) -> Result<Bytes, GridError> {
        let recorded = self.recorded(chunk)?;
        if let Some(bytes) = recorded.bytes {
            return Ok(bytes);
        }
        let cid = recorded.result;
        self.store
            .get(&cid)
            .map_err(|e| GridError::Failed(format!("chunk {chunk}'s result: {e}")))?
            .ok_or_else(|| {
                GridError::Failed(format!(
                    "chunk {chunk}'s result {} is missing from the blob store",
                    cid.short()
                ))
            })
    }

    /// Every result's bytes, in chunk order (blocking, as [`JobResults::bytes`]).
    pub fn all_bytes(&self) -> Result<Vec<Bytes>, GridError> {
        (0..self.len()).map(|i| self.bytes(i)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spot_check_that_disagrees_with_a_settled_result_replaces_it() {
        let data = tempfile::tempdir().unwrap();
        let store = BlobStore::open(data.path(), 1 << 20).unwrap();
        let log = ResultLog::open(data.path(), &Cid::of(b"job"), 2, &store, |_| true).unwrap();
        let mut results = Collecting::new(&store, log);
        let (lie, truth) = (Bytes::from_static(b"lie"), Bytes::from_static(b"truth"));
        let (lie_cid, truth_cid) = (Cid::of(&lie), Cid::of(&truth));
        results.answered(0, lie_cid, lie.clone());
        let peers = VerifiedBy::Unchecked { hosts: 1 };
        assert_eq!(results.verified(0, lie_cid, peers).unwrap(), lie);
        // The trusted worker's spot check comes in after the chunk settled.
        results.answered(0, truth_cid, truth.clone());
        results.answered(0, lie_cid, lie.clone());
        results.revoked(0).unwrap();
        assert!(!results.is_set(0));
        assert_eq!(
            results.verified(0, truth_cid, VerifiedBy::Local).unwrap(),
            truth
        );
        results.answered(1, truth_cid, truth.clone());
        results.verified(1, truth_cid, VerifiedBy::Local).unwrap();
        let done = results.finish().unwrap();
        assert_eq!(done.all_bytes().unwrap(), vec![truth.clone(), truth]);
        assert_eq!(done.cid(0).unwrap(), truth_cid);
    }
}
