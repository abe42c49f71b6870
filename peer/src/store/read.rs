//! Reading blobs back: the whole of one (shared from memory when resident, else from
//! its file or pack segment, each packed record checked against its id) or a piece of
//! one, for a peer fetching it. The look-up is made under the store's lock and the read
//! outside it.

use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;

use bytes::Bytes;
use idlegrid_protocol::Cid;

use super::pack::{self, PackedAt};
use super::{io_err, BlobStore, Location, StoreError};

/// Where to read a blob's bytes, looked up under the lock and read outside it.
enum Source {
    File(PathBuf),
    Packed(pack::SegmentReader, PackedAt),
}

impl BlobStore {
    fn location(&self, cid: &Cid) -> Option<(Source, u64)> {
        let mut index = self.index();
        let (location, len) = index.blobs.get(cid)?.clone();
        Some(match location {
            Location::Owned => (Source::File(self.path_of(cid)), len),
            Location::File(path) => (Source::File(path), len),
            Location::Packed(at) => (Source::Packed(index.packs.segment(at.segment), at), len),
        })
    }

    /// The whole blob, shared from memory when it is resident, else read from its file
    /// or pack segment; `None` if it is not held.
    pub fn get(&self, cid: &Cid) -> Result<Option<Bytes>, StoreError> {
        if let Some(bytes) = self.resident(cid) {
            return Ok(Some(bytes));
        }
        // A packed blob's segment may be compacted between the look-up and the read:
        // then it is looked up again at its new place.
        for _ in 0..3 {
            let Some((source, len)) = self.location(cid) else {
                return Ok(None);
            };
            let path = match source {
                Source::File(path) => path,
                Source::Packed(segment, at) => match pack::read(&segment, at, len, cid) {
                    Ok(Some(bytes)) => return Ok(Some(bytes)),
                    Ok(None) => continue,
                    Err(e @ StoreError::HashMismatch { .. }) => {
                        tracing::warn!(
                            "blob store: the record of {} in {} is damaged ({e}); dropping it",
                            cid.short(),
                            segment.path.display()
                        );
                        self.forget(cid);
                        return Ok(None);
                    }
                    Err(e) => return Err(e),
                },
            };
            return match fs::read(&path) {
                Ok(bytes) => Ok(Some(Bytes::from(bytes))),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    self.forget(cid);
                    Ok(None)
                }
                Err(source) => Err(StoreError::Io { path, source }),
            };
        }
        Ok(None)
    }

    /// [`BlobStore::read_piece`] of a resident blob, shared from memory without touching
    /// the disk (so async code may call it); `None` if the blob is not resident.
    pub fn resident_piece(&self, cid: &Cid, offset: u64, max: usize) -> Option<(u64, Bytes)> {
        let bytes = self.resident(cid)?;
        let total = bytes.len();
        let start = (offset.min(total as u64)) as usize;
        let end = start + (total - start).min(max);
        Some((total as u64, bytes.slice(start..end)))
    }

    /// Up to `max` bytes of a blob from `offset`, with the blob's total length.
    pub fn read_piece(
        &self,
        cid: &Cid,
        offset: u64,
        max: usize,
    ) -> Result<Option<(u64, Bytes)>, StoreError> {
        if let Some(piece) = self.resident_piece(cid, offset, max) {
            return Ok(Some(piece));
        }
        let Some((source, total)) = self.location(cid) else {
            return Ok(None);
        };
        let path = match source {
            Source::File(path) => path,
            Source::Packed(..) => {
                // At most PACKED_MAX bytes: read whole, checked, then cut.
                let Some(bytes) = self.get(cid)? else {
                    return Ok(None);
                };
                let start = (offset.min(total)) as usize;
                let end = start + (bytes.len() - start).min(max);
                return Ok(Some((total, bytes.slice(start..end))));
            }
        };
        let want = (total.saturating_sub(offset)).min(max as u64) as usize;
        let mut file = match fs::File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                self.forget(cid);
                return Ok(None);
            }
            Err(source) => return Err(StoreError::Io { path, source }),
        };
        // Read into spare capacity: a zeroed buffer would cost a pass over the piece.
        let mut bytes = Vec::with_capacity(want);
        file.seek(SeekFrom::Start(offset))
            .and_then(|_| (&mut file).take(want as u64).read_to_end(&mut bytes))
            .map_err(io_err(&path))?;
        if bytes.len() != want {
            return Err(StoreError::Io {
                path,
                source: std::io::ErrorKind::UnexpectedEof.into(),
            });
        }
        Ok(Some((total, Bytes::from(bytes))))
    }
}
