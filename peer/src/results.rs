//! The verified results of a job, remembered across runs so that a job run again (after
//! a crash, a kill, a lost network) takes the chunks it finished instead of computing
//! them again, and read back by the job's assembler when it ends.
//!
//! One append-only file per job, `<data dir>/results/<job id>.results`, a record per
//! event: a result verified for a chunk (`R`), or a chunk's result withdrawn (`X`, a
//! peer that backed it was caught lying). The last record about a chunk wins. A result
//! of at most [`INLINE_MAX`] bytes is written inside its record; a larger one is a blob
//! in the store, and the record names it. Each record is written with one `write`, so
//! a job of a million small chunks costs a million short appends, not a file each.
//!
//! In memory the log keeps one number per chunk: where its result's record starts. No
//! result id, no bytes, no index by hash: a running job of a million chunks holds 8 MB
//! here, and reads a result back with one `pread` (its id checked against its bytes)
//! when the job assembles.
//!
//! A record, integers little-endian:
//! ```text
//! R  chunk:u32  result:[32]  how:u8  hosts:u32  len:u64  inline:u8  check:[8]  bytes (len, if inline)
//! X  chunk:u32  check:[8]
//! ```
//! `chunk` is the chunk's index in its job (the log is named by the job's id, the hash
//! of all its chunk ids in order, so an index names one chunk); `how` is what the
//! result rests on (`local`, `peers:N`, `unchecked:N`: [`VerifiedBy`]), so a run with
//! stronger settings reuses only what meets them; `check` is the start of the blake3
//! hash of the record's fields before it. Reading at open stops at the first record
//! that is cut short or whose check fails (a crash in the middle of an append) and
//! cuts the file there, so the next record starts on a whole one; its chunk, and any
//! after it, are computed again. An inline result whose bytes do not hash to its id,
//! or a stored one the store no longer holds, is not reused.
//!
//! This module owns `<data dir>/results/`: nothing else reads or writes there.

use std::fs::{self, File, OpenOptions};
use std::io::{BufReader, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use idlegrid_protocol::Cid;
use idlegrid_scheduler::VerifiedBy;

use crate::store::{BlobStore, PACKED_MAX};

/// The folder of the data dir that holds the result logs.
const RESULTS_DIR: &str = "results";

/// Results up to this many bytes are written inside their record; larger ones are
/// blobs in the store (one file each, worth it at that size).
pub const INLINE_MAX: u64 = PACKED_MAX;

const VERIFIED: u8 = b'R';
const WITHDRAWN: u8 = b'X';
/// Bytes of an `R` record before its result bytes.
const VERIFIED_HEAD: usize = 1 + 4 + 32 + 1 + 4 + 8 + 1 + 8;
/// Bytes of an `X` record.
const WITHDRAWN_LEN: usize = 1 + 4 + 8;

#[derive(Debug, thiserror::Error)]
#[error("{}: {source}", path.display())]
pub struct ResultLogError {
    path: PathBuf,
    source: std::io::Error,
}

/// One chunk's recorded result, as read back.
pub struct Recorded {
    pub result: Cid,
    pub how: VerifiedBy,
    /// The bytes, if they are inside the record (checked against `result`); else the
    /// result is a blob in the store.
    pub bytes: Option<Bytes>,
}

/// The result log of one job (see the module docs).
pub struct ResultLog {
    path: PathBuf,
    file: File,
    /// Where the file ends: the next record's offset.
    end: u64,
    /// Per chunk, 1 + the offset of the record of its result; 0 for none.
    slots: Vec<u64>,
    /// The results read at open that are blobs in the store (large ones), until the
    /// job takes them to pin ([`ResultLog::take_stored`]).
    stored: Vec<Cid>,
}

fn how_code(how: VerifiedBy) -> (u8, u32) {
    match how {
        VerifiedBy::Local => (0, 0),
        VerifiedBy::Peers { hosts } => (1, hosts),
        VerifiedBy::Unchecked { hosts } => (2, hosts),
    }
}

fn how_of(code: u8, hosts: u32) -> Option<VerifiedBy> {
    match code {
        0 => Some(VerifiedBy::Local),
        1 => Some(VerifiedBy::Peers { hosts }),
        2 => Some(VerifiedBy::Unchecked { hosts }),
        _ => None,
    }
}

fn check_of(fields: &[u8]) -> [u8; 8] {
    let mut check = [0u8; 8];
    check.copy_from_slice(&blake3::hash(fields).as_bytes()[..8]);
    check
}

/// The fixed fields of an `R` record.
struct Head {
    chunk: u32,
    result: Cid,
    how: VerifiedBy,
    len: u64,
    inline: bool,
}

impl Head {
    fn encode(&self) -> [u8; VERIFIED_HEAD] {
        let mut head = [0u8; VERIFIED_HEAD];
        let (code, hosts) = how_code(self.how);
        head[0] = VERIFIED;
        head[1..5].copy_from_slice(&self.chunk.to_le_bytes());
        head[5..37].copy_from_slice(&self.result.0);
        head[37] = code;
        head[38..42].copy_from_slice(&hosts.to_le_bytes());
        head[42..50].copy_from_slice(&self.len.to_le_bytes());
        head[50] = u8::from(self.inline);
        let check = check_of(&head[..51]);
        head[51..].copy_from_slice(&check);
        head
    }

    /// The fields of a whole `R` head, if its check holds.
    fn decode(head: &[u8; VERIFIED_HEAD]) -> Option<Head> {
        if head[0] != VERIFIED || check_of(&head[..51])[..] != head[51..] {
            return None;
        }
        let u32_at = |at: usize| head[at..at + 4].try_into().ok().map(u32::from_le_bytes);
        let mut result = [0u8; 32];
        result.copy_from_slice(&head[5..37]);
        Some(Head {
            chunk: u32_at(1)?,
            result: Cid(result),
            how: how_of(head[37], u32_at(38)?)?,
            len: u64::from_le_bytes(head[42..50].try_into().ok()?),
            inline: head[50] == 1,
        })
    }
}

fn withdrawn_record(chunk: u32) -> [u8; WITHDRAWN_LEN] {
    let mut record = [0u8; WITHDRAWN_LEN];
    record[0] = WITHDRAWN;
    record[1..5].copy_from_slice(&chunk.to_le_bytes());
    let check = check_of(&record[..5]);
    record[5..].copy_from_slice(&check);
    record
}

/// Where the log of job `job` is kept.
fn log_path(data_dir: &Path, job: &Cid) -> PathBuf {
    data_dir
        .join(RESULTS_DIR)
        .join(format!("{}.results", job.to_hex()))
}

/// Reads exactly `buf`, or says the file ended first.
fn read_whole(reader: &mut impl Read, buf: &mut [u8]) -> std::io::Result<bool> {
    match reader.read_exact(buf) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(false),
        Err(e) => Err(e),
    }
}

impl ResultLog {
    /// Opens (or starts) the log of job `job`, of `chunks` chunks, in the results dir
    /// of `data_dir`, taking what earlier runs recorded: a chunk's result is reused if
    /// it was verified in a way `enough` accepts and its bytes are at hand (inside the
    /// record, hashing to the result's id, or in `store`).
    pub fn open(
        data_dir: &Path,
        job: &Cid,
        chunks: usize,
        store: &BlobStore,
        enough: impl Fn(VerifiedBy) -> bool,
    ) -> Result<ResultLog, ResultLogError> {
        let path = log_path(data_dir, job);
        let dir = data_dir.join(RESULTS_DIR);
        let fail = |source| ResultLogError {
            path: path.clone(),
            source,
        };
        fs::create_dir_all(&dir).map_err(fail)?;
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)
            .map_err(fail)?;
        let mut slots = vec![0u64; chunks];
        // Large results by the record that names them: kept if it is still the chunk's.
        let mut stored = Vec::new();
        let usable =
            |head: &Head, inline: bool| enough(head.how) && (inline || store.has(&head.result));
        let whole = Self::read_records(&file, usable, |chunk, at, stored_result| {
            if let Some(slot) = slots.get_mut(chunk) {
                *slot = at.map_or(0, |at| at + 1);
                if let (Some(at), Some(result)) = (at, stored_result) {
                    stored.push((chunk, at, result));
                }
            }
        })
        .map_err(fail)?;
        let stored = stored
            .into_iter()
            .filter(|&(chunk, at, _)| slots[chunk] == at + 1)
            .map(|(_, _, result)| result)
            .collect();
        let len = file.metadata().map_err(fail)?.len();
        if whole < len {
            tracing::info!(
                "{}: the last {} bytes are not a whole record (an append cut short): \
                 their results are computed again",
                path.display(),
                len - whole
            );
            file.set_len(whole).map_err(fail)?;
        }
        Ok(ResultLog {
            path,
            file,
            end: whole,
            slots,
            stored,
        })
    }

    /// Reads the records in order, telling `found` each chunk's record offset if its
    /// result may be reused (`None`: withdrawn, or not reusable: `usable` says of a
    /// recorded result whether its bytes are at hand, the inline ones being checked
    /// already) and, for a result that is a blob in the store, its id; returns where the
    /// whole records end.
    fn read_records(
        file: &File,
        usable: impl Fn(&Head, bool) -> bool,
        mut found: impl FnMut(usize, Option<u64>, Option<Cid>),
    ) -> std::io::Result<u64> {
        let mut reader = BufReader::with_capacity(1 << 16, file);
        let mut at = 0u64;
        let mut bytes = Vec::new();
        loop {
            let mut tag = [0u8; 1];
            if !read_whole(&mut reader, &mut tag)? {
                return Ok(at);
            }
            match tag[0] {
                VERIFIED => {
                    let mut head = [0u8; VERIFIED_HEAD];
                    head[0] = VERIFIED;
                    if !read_whole(&mut reader, &mut head[1..])? {
                        return Ok(at);
                    }
                    let Some(fields) = Head::decode(&head) else {
                        return Ok(at);
                    };
                    let mut record_len = VERIFIED_HEAD as u64;
                    let mut intact = true;
                    if fields.inline {
                        if fields.len > INLINE_MAX {
                            return Ok(at);
                        }
                        bytes.resize(fields.len as usize, 0);
                        if !read_whole(&mut reader, &mut bytes)? {
                            return Ok(at);
                        }
                        record_len += fields.len;
                        intact = Cid::of(&bytes) == fields.result;
                    }
                    let reused = intact && usable(&fields, fields.inline);
                    let stored = (!fields.inline).then_some(fields.result);
                    found(fields.chunk as usize, reused.then_some(at), stored);
                    at += record_len;
                }
                WITHDRAWN => {
                    let mut record = [0u8; WITHDRAWN_LEN];
                    record[0] = WITHDRAWN;
                    if !read_whole(&mut reader, &mut record[1..])? {
                        return Ok(at);
                    }
                    if check_of(&record[..5])[..] != record[5..] {
                        return Ok(at);
                    }
                    let chunk = u32::from_le_bytes([record[1], record[2], record[3], record[4]]);
                    found(chunk as usize, None, None);
                    at += WITHDRAWN_LEN as u64;
                }
                _ => return Ok(at),
            }
        }
    }

    /// How many chunks the result log at `path` holds a result for, read without
    /// changing it (a job may be appending to it): for a look from outside the job.
    pub fn chunks_recorded(path: &Path) -> std::io::Result<usize> {
        let file = File::open(path)?;
        let mut held = std::collections::BTreeSet::new();
        Self::read_records(
            &file,
            |_, _| true,
            |chunk, at, _| {
                match at {
                    Some(_) => held.insert(chunk),
                    None => held.remove(&chunk),
                };
            },
        )?;
        Ok(held.len())
    }

    /// The reused results that are blobs in the store, for the job to pin (given once).
    pub fn take_stored(&mut self) -> Vec<Cid> {
        std::mem::take(&mut self.stored)
    }

    /// Chunks in the job.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Whether chunk `chunk` has a result recorded.
    pub fn is_set(&self, chunk: usize) -> bool {
        self.slots.get(chunk).is_some_and(|&s| s != 0)
    }

    /// The chunks that have a result, in order.
    pub fn set_chunks(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.slots.len()).filter(|&i| self.slots[i] != 0)
    }

    /// Remembers that chunk `chunk` produced `result`, verified as `how` says. `bytes`
    /// (hashing to `result`) go inside the record if they are small enough; otherwise
    /// the result must be a blob in the store.
    pub fn record(
        &mut self,
        chunk: usize,
        result: &Cid,
        how: VerifiedBy,
        bytes: Option<&[u8]>,
    ) -> Result<(), ResultLogError> {
        let Ok(index) = u32::try_from(chunk) else {
            return Err(self.error(std::io::Error::other(format!(
                "chunk {chunk} is past the log's range"
            ))));
        };
        let inline = bytes.filter(|b| b.len() as u64 <= INLINE_MAX);
        let head = Head {
            chunk: index,
            result: *result,
            how,
            len: bytes.map_or(0, |b| b.len() as u64),
            inline: inline.is_some(),
        };
        let mut record = Vec::with_capacity(VERIFIED_HEAD + inline.map_or(0, <[u8]>::len));
        record.extend_from_slice(&head.encode());
        record.extend_from_slice(inline.unwrap_or_default());
        let at = self.append(&record)?;
        if let Some(slot) = self.slots.get_mut(chunk) {
            *slot = at + 1;
        }
        Ok(())
    }

    /// Forgets the result of chunk `chunk` (it was withdrawn).
    pub fn forget(&mut self, chunk: usize) -> Result<(), ResultLogError> {
        if !self.is_set(chunk) {
            return Ok(());
        }
        let Ok(index) = u32::try_from(chunk) else {
            return Ok(());
        };
        self.append(&withdrawn_record(index))?;
        if let Some(slot) = self.slots.get_mut(chunk) {
            *slot = 0;
        }
        Ok(())
    }

    /// Chunk `chunk`'s recorded result, its bytes with it if they are inside the
    /// record (checked against its id).
    pub fn read(&self, chunk: usize) -> Result<Option<Recorded>, ResultLogError> {
        let Some(&slot) = self.slots.get(chunk).filter(|&&s| s != 0) else {
            return Ok(None);
        };
        let at = slot - 1;
        let mut head = [0u8; VERIFIED_HEAD];
        self.file
            .read_exact_at(&mut head, at)
            .map_err(|e| self.error(e))?;
        let damaged = |what: &str| {
            self.error(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("chunk {chunk}'s record at byte {at} {what}"),
            ))
        };
        let fields = Head::decode(&head).ok_or_else(|| damaged("is damaged"))?;
        if fields.chunk as usize != chunk {
            return Err(damaged("names another chunk"));
        }
        let bytes = if fields.inline {
            let mut bytes = vec![0u8; fields.len as usize];
            self.file
                .read_exact_at(&mut bytes, at + VERIFIED_HEAD as u64)
                .map_err(|e| self.error(e))?;
            if Cid::of(&bytes) != fields.result {
                return Err(damaged("holds bytes that do not hash to its result"));
            }
            Some(Bytes::from(bytes))
        } else {
            None
        };
        Ok(Some(Recorded {
            result: fields.result,
            how: fields.how,
            bytes,
        }))
    }

    /// Appends one record with one `write`; returns its offset.
    fn append(&mut self, record: &[u8]) -> Result<u64, ResultLogError> {
        let at = self.end;
        self.file.write_all(record).map_err(|e| self.error(e))?;
        self.end += record.len() as u64;
        Ok(at)
    }

    fn error(&self, source: std::io::Error) -> ResultLogError {
        ResultLogError {
            path: self.path.clone(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn any(_: VerifiedBy) -> bool {
        true
    }

    fn result_of(log: &ResultLog, chunk: usize) -> Option<(Cid, VerifiedBy, Option<Vec<u8>>)> {
        log.read(chunk)
            .unwrap()
            .map(|r| (r.result, r.how, r.bytes.map(|b| b.to_vec())))
    }

    /// A fresh data dir with a store, a job id and where that job's log is.
    fn fresh() -> (tempfile::TempDir, BlobStore, Cid, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path(), 1 << 20).unwrap();
        let job = Cid::of(b"job");
        let path = log_path(dir.path(), &job);
        (dir, store, job, path)
    }

    #[test]
    fn results_survive_a_reopen_withdrawals_too_and_a_torn_record_is_cut() {
        let (dir, store, job, path) = fresh();
        let data = dir.path();
        let large = vec![9u8; INLINE_MAX as usize + 1];
        let large_cid = store.put(&large).unwrap();
        let (ra, rb, rc) = (b"ra".to_vec(), b"rb".to_vec(), b"rc".to_vec());
        let [ca, cb, cc] = [&ra, &rb, &rc].map(|r| Cid::of(r));
        {
            let mut log = ResultLog::open(data, &job, 5, &store, any).unwrap();
            assert!(!log.is_set(0));
            log.record(0, &ca, VerifiedBy::Local, Some(&ra)).unwrap();
            log.record(1, &cb, VerifiedBy::Local, Some(&rb)).unwrap();
            log.forget(1).unwrap();
            log.record(2, &cc, VerifiedBy::Peers { hosts: 1 }, Some(&rc))
                .unwrap();
            log.record(3, &large_cid, VerifiedBy::Local, Some(&large))
                .unwrap();
            assert_eq!(
                result_of(&log, 0),
                Some((ca, VerifiedBy::Local, Some(ra.clone())))
            );
            assert_eq!(
                result_of(&log, 3),
                Some((large_cid, VerifiedBy::Local, None)),
                "a large result stays in the store"
            );
        }
        // A crash in the middle of an append.
        let whole = fs::metadata(&path).unwrap().len();
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        let torn = Head {
            chunk: 1,
            result: cb,
            how: VerifiedBy::Local,
            len: 2,
            inline: true,
        }
        .encode();
        file.write_all(&torn[..30]).unwrap();
        drop(file);
        let mut log = ResultLog::open(data, &job, 5, &store, any).unwrap();
        assert_eq!(fs::metadata(&path).unwrap().len(), whole, "torn tail cut");
        assert_eq!(
            log.take_stored(),
            vec![large_cid],
            "the large result, to pin"
        );
        assert_eq!(log.set_chunks().collect::<Vec<_>>(), vec![0, 2, 3]);
        assert!(!log.is_set(1), "withdrawn, then a torn record");
        // How each was verified is kept: stronger settings reuse only what meets them.
        let local_only =
            ResultLog::open(data, &job, 5, &store, |how| how == VerifiedBy::Local).unwrap();
        assert_eq!(local_only.set_chunks().collect::<Vec<_>>(), vec![0, 3]);
        drop(local_only);
        // What is recorded after the torn record is read back.
        log.record(1, &cb, VerifiedBy::Unchecked { hosts: 2 }, Some(&rb))
            .unwrap();
        log.forget(2).unwrap();
        drop(log);
        let log = ResultLog::open(data, &job, 5, &store, any).unwrap();
        assert_eq!(
            result_of(&log, 1),
            Some((cb, VerifiedBy::Unchecked { hosts: 2 }, Some(rb.clone())))
        );
        assert!(!log.is_set(2), "withdrawn");
        // A result whose bytes are not at hand (a store of another data dir) is not
        // reused; an inline one needs no store.
        let elsewhere = BlobStore::open(&data.join("elsewhere"), 1 << 20).unwrap();
        drop(log);
        let log = ResultLog::open(data, &job, 5, &elsewhere, any).unwrap();
        assert_eq!(log.set_chunks().collect::<Vec<_>>(), vec![0, 1]);
        drop(log);
        // A record past the job's chunks (a log of another plan) is ignored.
        let log = ResultLog::open(data, &job, 1, &store, any).unwrap();
        assert_eq!(log.set_chunks().collect::<Vec<_>>(), vec![0]);
        // Another job has a log of its own.
        let other = ResultLog::open(data, &Cid::of(b"other"), 5, &store, any).unwrap();
        assert_eq!(other.set_chunks().count(), 0);
    }

    #[test]
    fn damaged_bytes_are_not_reused_and_are_refused_when_read() {
        let (dir, store, job, path) = fresh();
        let data = dir.path();
        let mut log = ResultLog::open(data, &job, 2, &store, any).unwrap();
        for (chunk, bytes) in [(0, b"first"), (1, b"other")] {
            log.record(chunk, &Cid::of(bytes), VerifiedBy::Local, Some(bytes))
                .unwrap();
        }
        // One bit of the first result's bytes flips on disk.
        let file = OpenOptions::new().write(true).open(&path).unwrap();
        file.write_all_at(b"F", VERIFIED_HEAD as u64).unwrap();
        let err = log.read(0).err().expect("refused");
        assert!(err.to_string().contains("do not hash"), "{err}");
        drop(log);
        let log = ResultLog::open(data, &job, 2, &store, any).unwrap();
        assert_eq!(
            log.set_chunks().collect::<Vec<_>>(),
            vec![1],
            "the damaged one is computed again, the next one reused"
        );
    }
}
