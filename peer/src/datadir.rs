//! One peer per data dir: the lock a running peer holds on its data dir.
//!
//! A data dir holds a peer's identity and blob store. Two processes in one dir would be
//! one PeerId at two addresses (other peers would send one's chunks to the other and fetch
//! blobs from whichever answered) and two writers of one store with one size cap. So a
//! peer takes an exclusive OS lock on `<data dir>/lock` for as long as it runs and writes
//! its process id there, for the error a second process gets. The OS drops the lock when
//! the holder exits, however it exits, so a crashed peer never leaves the dir locked.
//! (`File::try_lock`: flock on Unix, LockFileEx on Windows; why the MSRV is 1.89.)

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// The lock file inside a data dir.
const LOCK_FILE: &str = "lock";

#[derive(Debug, thiserror::Error)]
pub enum DataDirError {
    #[error(
        "data dir {} is in use by another idlegrid process{}: give this one its own --data-dir",
        dir.display(),
        holder.map(|pid| format!(" (pid {pid})")).unwrap_or_default()
    )]
    InUse { dir: PathBuf, holder: Option<u32> },
    #[error("cannot lock data dir {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Held while a peer runs in a data dir; dropping it (or exiting) frees the dir.
#[derive(Debug)]
pub struct DataDirLock {
    _file: File,
}

impl DataDirLock {
    /// Takes the lock on `dir` (created if missing), or says who holds it.
    pub fn acquire(dir: &Path) -> Result<DataDirLock, DataDirError> {
        let path = dir.join(LOCK_FILE);
        let io = |source| DataDirError::Io {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(DataDirError::InUse {
                    dir: dir.to_path_buf(),
                    holder: read_holder(&mut file),
                })
            }
            Err(TryLockError::Error(e)) => return Err(io(e)),
        }
        // Ours now: say who holds it. Best effort, the lock is what counts.
        let _ = file
            .set_len(0)
            .and_then(|()| file.seek(SeekFrom::Start(0)))
            .and_then(|_| writeln!(file, "{}", std::process::id()));
        Ok(DataDirLock { _file: file })
    }
}

/// Whether a peer runs in `dir` now (for `status`): `Some(its pid, if it wrote one)`,
/// or `None` when the dir is free or has never held a peer. Nothing is created to find
/// out; a free dir is locked for the instant of the test (a peer starting in that
/// instant would be refused and can be started again).
pub fn holder(dir: &Path) -> Option<Option<u32>> {
    let mut file = File::open(dir.join(LOCK_FILE)).ok()?;
    match file.try_lock() {
        Err(TryLockError::WouldBlock) => Some(read_holder(&mut file)),
        // Free (the lock goes with this handle), or unknowable: say nothing.
        Ok(()) | Err(TryLockError::Error(_)) => None,
    }
}

/// The process id the holder wrote, if it could be read.
fn read_holder(file: &mut File) -> Option<u32> {
    let mut text = String::new();
    file.read_to_string(&mut text).ok()?;
    text.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_until_the_first_lets_go() {
        let dir = std::env::temp_dir().join(format!("idlegrid-lock-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let first = DataDirLock::acquire(&dir).unwrap();
        let err = DataDirLock::acquire(&dir).unwrap_err();
        match &err {
            DataDirError::InUse { dir: d, holder } => {
                assert_eq!(d, &dir);
                assert_eq!(*holder, Some(std::process::id()));
            }
            other => panic!("{other:?}"),
        }
        let message = err.to_string();
        assert!(message.contains(&dir.display().to_string()), "{message}");
        assert!(message.contains("--data-dir"), "{message}");
        assert_eq!(holder(&dir), Some(Some(std::process::id())));
        drop(first);
        assert_eq!(holder(&dir), None);
        let again = DataDirLock::acquire(&dir).unwrap();
        drop(again);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
