//! Receiving a blob piece by piece into the store: hashed and written to a temp file as
//! it arrives, checked against its claimed id and length, and only then renamed into
//! the store's directory. A blob small enough to be packed is gathered in memory instead
//! and appended to a pack segment once checked: no file of its own. The writer holds
//! the store's reservation of the blob's room until then, and gives it back if the blob
//! never arrives whole.

use std::fs;
use std::io::Write;
use std::path::PathBuf;

use idlegrid_protocol::Cid;

use super::{io_err, BlobStore, StoreError};

/// A blob arriving in pieces, in order: each piece is hashed and written to a temp
/// file as it comes, so a large blob never sits whole in memory.
/// [`BlobWriter::finish`] checks the length and the hash against the claimed id before
/// the blob appears in the store; a writer dropped unfinished removes its temp file.
pub struct BlobWriter {
    pub(super) store: BlobStore,
    pub(super) cid: Cid,
    pub(super) len: u64,
    pub(super) written: u64,
    pub(super) hasher: blake3::Hasher,
    /// None once finished (or failed).
    pub(super) sink: Option<Sink>,
    pub(super) tmp: PathBuf,
    /// Bytes of the store's cap reserved for this blob: its room on disk.
    pub(super) room: u64,
    /// Whether `room` is still reserved.
    pub(super) reserved: bool,
}

/// Where the bytes of a blob arriving go until it is whole.
pub(super) enum Sink {
    /// A temp file, renamed into the store at the end.
    File(fs::File),
    /// Memory, for a blob to be packed (at most [`PACKED_MAX`](super::PACKED_MAX) bytes).
    Packed(Vec<u8>),
}

impl BlobWriter {
    /// Appends the next piece.
    pub fn write(&mut self, piece: &[u8]) -> Result<(), StoreError> {
        let got = self.written + piece.len() as u64;
        if got > self.len {
            return Err(StoreError::Length {
                cid: self.cid,
                expected: self.len,
                got,
            });
        }
        let Some(sink) = self.sink.as_mut() else {
            return Err(StoreError::Io {
                path: self.tmp.clone(),
                source: std::io::Error::other("blob writer already finished"),
            });
        };
        self.hasher.update(piece);
        match sink {
            Sink::File(file) => file.write_all(piece).map_err(io_err(&self.tmp))?,
            Sink::Packed(bytes) => bytes.extend_from_slice(piece),
        }
        self.written = got;
        Ok(())
    }

    /// Checks the whole blob against its id and moves it into the store.
    pub fn finish(mut self) -> Result<(), StoreError> {
        if self.written != self.len {
            return Err(StoreError::Length {
                cid: self.cid,
                expected: self.len,
                got: self.written,
            });
        }
        let actual = Cid::from_hasher(&self.hasher);
        if actual != self.cid {
            return Err(StoreError::HashMismatch {
                claimed: self.cid,
                actual,
            });
        }
        match self.sink.take() {
            Some(Sink::Packed(bytes)) => {
                self.reserved = false;
                self.store.settle_packed(self.cid, &bytes)
            }
            Some(Sink::File(file)) => {
                // Closed before the rename.
                drop(file);
                let path = self.store.path_of(&self.cid);
                fs::rename(&self.tmp, &path).map_err(io_err(&path))?;
                self.reserved = false;
                self.store.settle(self.cid, self.len);
                Ok(())
            }
            None => Err(StoreError::Io {
                path: self.tmp.clone(),
                source: std::io::Error::other("blob writer already finished"),
            }),
        }
    }
}

impl Drop for BlobWriter {
    fn drop(&mut self) {
        // Unfinished, failed or refused: the temp file goes. (After a successful finish
        // it has been renamed and this removes nothing; a packed blob had none.)
        if !matches!(self.sink, Some(Sink::Packed(_))) && !self.tmp.as_os_str().is_empty() {
            let _ = fs::remove_file(&self.tmp);
        }
        if self.reserved {
            self.store.release(self.room);
        }
    }
}
