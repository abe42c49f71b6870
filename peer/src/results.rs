//! The verified results of a job, remembered across runs so that a job run again (after
//! a crash, a kill, a lost network) takes the chunks it finished from the store instead
//! of computing them again.
//!
//! One append-only log per job, `<data dir>/results/<job id>.log`, a line per event:
//! `R <chunk> <result> <how>` when a chunk's result is verified, `X <chunk>` when it is
//! withdrawn (a peer that backed it was caught lying). The last word about a chunk
//! wins. `<how>` is what the result rests on — `local` (this machine computed it),
//! `peers:N` (N hosts, one of them trusted on its record), `unchecked:N` (a trusted
//! pool) — so that a run with stronger settings reuses only what meets them and
//! computes the rest again (a line without it counts as `unchecked:1`). A line is written with one `write` call and nothing is renamed: a file per chunk
//! would cost an inode each, and on ext4 creating inodes right after others were freed
//! is slow enough to matter on jobs of small chunks. A line torn by a crash does not
//! parse and is skipped; its chunk is computed again.
//!
//! This module owns `<data dir>/results/`: nothing else reads or writes there.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use idlegrid_protocol::Cid;
use idlegrid_scheduler::VerifiedBy;

use crate::store::BlobStore;

/// The folder of the data dir that holds the result logs.
const RESULTS_DIR: &str = "results";

#[derive(Debug, thiserror::Error)]
#[error("{}: {source}", path.display())]
pub struct ResultLogError {
    path: PathBuf,
    source: std::io::Error,
}

/// The result log of one job (see the module docs).
pub struct ResultLog {
    path: PathBuf,
    file: File,
    /// What the log says of each chunk, read at open; `None` once the job took what
    /// it needs ([`ResultLog::drop_index`]).
    known: Option<HashMap<Cid, (Cid, VerifiedBy)>>,
}

/// `local`, `peers:N`, `unchecked:N`.
fn how_word(how: VerifiedBy) -> String {
    match how {
        VerifiedBy::Local => "local".to_string(),
        VerifiedBy::Peers { hosts } => format!("peers:{hosts}"),
        VerifiedBy::Unchecked { hosts } => format!("unchecked:{hosts}"),
    }
}

/// The inverse of [`how_word`]; what a line without the word (or with one not known)
/// counts as is the weakest: `unchecked:1`.
fn parse_how(word: Option<&str>) -> VerifiedBy {
    let weakest = VerifiedBy::Unchecked { hosts: 1 };
    let Some(word) = word else { return weakest };
    if word == "local" {
        return VerifiedBy::Local;
    }
    let hosts = |w: &str| w.parse::<u32>().ok();
    match word.split_once(':') {
        Some(("peers", n)) => hosts(n).map_or(weakest, |hosts| VerifiedBy::Peers { hosts }),
        Some(("unchecked", n)) => hosts(n).map_or(weakest, |hosts| VerifiedBy::Unchecked { hosts }),
        _ => weakest,
    }
}

impl ResultLog {
    /// Opens (or starts) the log of job `job` in the results dir of `data_dir`, reading
    /// what earlier runs recorded.
    pub fn open(data_dir: &Path, job: &Cid) -> Result<ResultLog, ResultLogError> {
        let dir = data_dir.join(RESULTS_DIR);
        let dir = dir.as_path();
        let path = dir.join(format!("{}.log", job.to_hex()));
        let fail = |source| ResultLogError {
            path: path.clone(),
            source,
        };
        fs::create_dir_all(dir).map_err(fail)?;
        let mut known = HashMap::new();
        let mut torn = false;
        match fs::read_to_string(&path) {
            Ok(text) => {
                torn = !text.is_empty() && !text.ends_with('\n');
                for line in text.lines() {
                    let mut words = line.split(' ');
                    let chunk = words.nth(1).and_then(Cid::from_hex);
                    match (line.as_bytes().first(), chunk) {
                        (Some(b'R'), Some(chunk)) => {
                            if let Some(result) = words.next().and_then(Cid::from_hex) {
                                known.insert(chunk, (result, parse_how(words.next())));
                            }
                        }
                        (Some(b'X'), Some(chunk)) => {
                            known.remove(&chunk);
                        }
                        _ => {}
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(fail(e)),
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(fail)?;
        let mut log = ResultLog {
            path,
            file,
            known: Some(known),
        };
        if torn {
            // End the torn line, so that the next one starts on a line of its own.
            log.append("\n".to_string())?;
        }
        Ok(log)
    }

    /// The result an earlier run (or this one) verified for `chunk`, if it was
    /// verified in a way `enough` accepts and `store` still holds its bytes.
    pub fn known(
        &self,
        chunk: &Cid,
        store: &BlobStore,
        enough: impl Fn(VerifiedBy) -> bool,
    ) -> Option<Cid> {
        self.known
            .as_ref()?
            .get(chunk)
            .filter(|(result, how)| enough(*how) && store.has(result))
            .map(|(result, _)| *result)
    }

    /// Remembers that `chunk` produced `result` (whose bytes are in the store),
    /// verified as `how` says.
    pub fn record(
        &mut self,
        chunk: &Cid,
        result: &Cid,
        how: VerifiedBy,
    ) -> Result<(), ResultLogError> {
        if let Some(known) = &mut self.known {
            known.insert(*chunk, (*result, how));
        }
        self.append(format!(
            "R {} {} {}\n",
            chunk.to_hex(),
            result.to_hex(),
            how_word(how)
        ))
    }

    /// Forgets the result of `chunk` (it was withdrawn).
    pub fn forget(&mut self, chunk: &Cid) -> Result<(), ResultLogError> {
        if let Some(known) = &mut self.known {
            if known.remove(chunk).is_none() {
                return Ok(());
            }
        }
        self.append(format!("X {}\n", chunk.to_hex()))
    }

    /// Lets go of what was read at open, once the job took what it reuses: a running
    /// job of a million chunks then keeps no index of them in memory. Lines are still
    /// appended; [`ResultLog::known`] answers `None` from now on.
    pub fn drop_index(&mut self) {
        self.known = None;
    }

    fn append(&mut self, line: String) -> Result<(), ResultLogError> {
        // One write of the whole line: with O_APPEND it lands whole at the end.
        self.file
            .write_all(line.as_bytes())
            .map_err(|source| ResultLogError {
                path: self.path.clone(),
                source,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn any(_: VerifiedBy) -> bool {
        true
    }

    #[test]
    fn a_line_without_how_counts_as_the_weakest() {
        assert_eq!(parse_how(None), VerifiedBy::Unchecked { hosts: 1 });
        assert_eq!(
            parse_how(Some("peers:x")),
            VerifiedBy::Unchecked { hosts: 1 }
        );
        for how in [
            VerifiedBy::Local,
            VerifiedBy::Peers { hosts: 3 },
            VerifiedBy::Unchecked { hosts: 2 },
        ] {
            assert_eq!(parse_how(Some(&how_word(how))), how);
        }
    }

    #[test]
    fn results_survive_a_reopen_withdrawals_too_and_a_torn_line_is_skipped() {
        let data = std::env::temp_dir().join(format!("idlegrid-results-{}", std::process::id()));
        let _ = fs::remove_dir_all(&data);
        let store = BlobStore::open(&data, 1 << 20).unwrap();
        let dir = data.join(RESULTS_DIR);
        let job = Cid::of(b"job");
        let (a, b, c) = (Cid::of(b"a"), Cid::of(b"b"), Cid::of(b"c"));
        let [ra, rb, rc] = [b"ra", b"rb", b"rc"].map(|r| store.put(r).unwrap());
        {
            let mut log = ResultLog::open(&data, &job).unwrap();
            assert_eq!(log.known(&a, &store, any), None);
            log.record(&a, &ra, VerifiedBy::Local).unwrap();
            log.record(&b, &rb, VerifiedBy::Local).unwrap();
            log.forget(&b).unwrap();
            log.record(&c, &rc, VerifiedBy::Peers { hosts: 1 }).unwrap();
            assert_eq!(log.known(&a, &store, any), Some(ra));
        }
        // A crash in the middle of a line.
        let path = dir.join(format!("{}.log", job.to_hex()));
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(format!("R {} {}", b.to_hex(), &rb.to_hex()[..10]).as_bytes())
            .unwrap();
        let mut log = ResultLog::open(&data, &job).unwrap();
        assert_eq!(log.known(&a, &store, any), Some(ra));
        assert_eq!(
            log.known(&b, &store, any),
            None,
            "withdrawn, then a torn line"
        );
        assert_eq!(log.known(&c, &store, any), Some(rc));
        // How each was verified is kept: stronger settings reuse only what meets them.
        let local_only = |how| how == VerifiedBy::Local;
        assert_eq!(log.known(&a, &store, local_only), Some(ra));
        assert_eq!(log.known(&c, &store, local_only), None);
        // What is recorded after the torn line is read back.
        log.record(&b, &rb, VerifiedBy::Unchecked { hosts: 2 })
            .unwrap();
        drop(log);
        let log = ResultLog::open(&data, &job).unwrap();
        assert_eq!(log.known(&b, &store, any), Some(rb));
        assert_eq!(
            log.known(&b, &store, |how| how == VerifiedBy::Unchecked { hosts: 2 }),
            Some(rb)
        );
        // A result whose bytes are not in the store (evicted, or a store of another
        // data dir) is not known.
        let elsewhere = BlobStore::open(&data.join("elsewhere"), 1 << 20).unwrap();
        assert_eq!(log.known(&c, &elsewhere, any), None);
        // A running job drops the index once it took what it reuses: what it records
        // and withdraws after that is still read back by the next run.
        let mut log = log;
        log.drop_index();
        assert_eq!(log.known(&a, &store, any), None, "no index kept");
        log.forget(&a).unwrap();
        log.record(&a, &ra, VerifiedBy::Peers { hosts: 2 }).unwrap();
        log.forget(&c).unwrap();
        drop(log);
        let log = ResultLog::open(&data, &job).unwrap();
        assert_eq!(
            log.known(&a, &store, |how| how == VerifiedBy::Peers { hosts: 2 }),
            Some(ra)
        );
        assert_eq!(
            log.known(&c, &store, any),
            None,
            "withdrawn without an index"
        );
        assert_eq!(log.known(&b, &store, any), Some(rb));
        // Another job has a log of its own.
        let other = ResultLog::open(&data, &Cid::of(b"other")).unwrap();
        assert_eq!(other.known(&a, &store, any), None);
        let _ = fs::remove_dir_all(&data);
    }
}
