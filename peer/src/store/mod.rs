//! The on-disk, content-addressed blob store every peer keeps in its data dir.
//!
//! Blobs live in `<data dir>/blobs/<hex cid>`, written to a temp file and renamed, and
//! only after their bytes hash to the claimed id, so a blob file is always whole and
//! always correct. Blobs of at most [`PACKED_MAX`] bytes get no file of their own: they
//! are records of append-only pack segments in the same directory (`pack`). Inputs
//! that already sit on the user's disk (video frames) are not copied: they are
//! registered as file-backed blobs after a streaming hash.
//! Which result each finished chunk produced is kept apart, by `crate::results`.
//!
//! A size cap bounds the blob directory: when a write would pass it, the least recently
//! written blobs that no running job has pinned ([`BlobStore::pin`]) are evicted first.
//! A blob received piece by piece ([`BlobStore::writer`]) reserves its announced size
//! before its first byte is written, so many blobs arriving at once cannot pass the cap
//! together; a write that finds no room even after eviction is refused
//! ([`StoreError::Full`]). The reservation turns into the blob's size when it is in
//! place, and is released if the write fails or is dropped.
//!
//! [`Grants`] says which peer may read which blob: a store serves its blobs only to
//! the peers they concern.
//!
//! Every read hands out [`Bytes`]: shared from memory for a resident blob, read from its
//! file otherwise; callers never care which.
//!
//! A submitter also keeps the blobs its planner made in memory while their job runs
//! ([`BlobStore::put_resident`]): its own chunks and the pieces it serves to workers are
//! then read from memory, not from their files. The files are still written, for a
//! resumed job and for a serve on the same data dir.

mod grants;
mod pack;
mod read;
mod room;
mod writer;

pub use grants::{Grant, Grants};
pub use pack::PACKED_MAX;
pub use writer::BlobWriter;
use writer::Sink;

use pack::{footprint, PackedAt, Packs};

use std::collections::HashMap;
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use idlegrid_protocol::{limits, Cid};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("blob store {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("blob bytes hash to {actual}, not the claimed {claimed}")]
    HashMismatch { claimed: Cid, actual: Cid },
    #[error("blob of {len} bytes is over the {limit}-byte limit")]
    TooLarge { len: u64, limit: u64 },
    #[error(
        "blob store is full: {needed} more bytes needed, cap {cap} bytes, of which {held} \
         are blobs in use and {reserved} are reserved by blobs still arriving"
    )]
    Full {
        needed: u64,
        cap: u64,
        held: u64,
        reserved: u64,
    },
    #[error("blob {cid} was announced as {expected} bytes, {got} arrived")]
    Length { cid: Cid, expected: u64, got: u64 },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Where a blob's bytes are.
#[derive(Clone, Debug)]
enum Location {
    /// In the store's own directory, a file of its own.
    Owned,
    /// In the store's own directory, a record of a pack segment.
    Packed(PackedAt),
    /// A user's file, hashed when registered.
    File(PathBuf),
}

struct Index {
    /// Blob id → (location, length).
    blobs: HashMap<Cid, (Location, u64)>,
    /// Owned blobs in write order, oldest first (eviction order).
    order: Vec<Cid>,
    /// Bytes held in the store's directory: blob files and pack segments, with their
    /// dead records.
    owned_bytes: u64,
    /// The segments small blobs are packed in.
    packs: Packs,
    /// Bytes promised to blobs still arriving ([`BlobWriter`]s): counted against the cap
    /// like held bytes, never evicted.
    reserved: u64,
    /// Blobs a running job needs, with how many [`Pins`] hold each: never evicted.
    pinned: HashMap<Cid, usize>,
    /// Blobs also held in memory, with how many [`Resident`] sets hold each.
    resident: HashMap<Cid, (Bytes, usize)>,
}

/// Blobs kept from eviction by [`BlobStore::pin`] until this is dropped. Counted: a
/// blob two jobs pin stays pinned until both have let go.
#[must_use = "the blobs may be evicted once this is dropped: hold it while their job runs"]
pub struct Pins {
    store: BlobStore,
    cids: Vec<Cid>,
}

impl Drop for Pins {
    fn drop(&mut self) {
        let mut index = self.store.index();
        for cid in &self.cids {
            if let Some(holders) = index.pinned.get_mut(cid) {
                *holders -= 1;
                if *holders == 0 {
                    index.pinned.remove(cid);
                }
            }
        }
    }
}

/// Blobs kept in memory by [`BlobStore::put_resident`] until this is dropped.
#[must_use = "the blobs leave memory when this is dropped: hold it while their job runs"]
pub struct Resident {
    store: BlobStore,
    cids: Vec<Cid>,
    bytes: u64,
}

impl Resident {
    /// An empty set, to add blobs to.
    pub fn new(store: &BlobStore) -> Resident {
        Resident {
            store: store.clone(),
            cids: Vec::new(),
            bytes: 0,
        }
    }

    /// Bytes this set keeps in memory.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

impl Drop for Resident {
    fn drop(&mut self) {
        let mut index = self.store.index();
        for cid in &self.cids {
            if let Some((_, holders)) = index.resident.get_mut(cid) {
                *holders -= 1;
                if *holders == 0 {
                    index.resident.remove(cid);
                }
            }
        }
    }
}

/// A cloneable handle to the store; all methods are blocking file I/O (call them from
/// `spawn_blocking` in async code).
#[derive(Clone)]
pub struct BlobStore {
    root: PathBuf,
    cap: u64,
    /// Blobs up to this many bytes are packed ([`PACKED_MAX`]; 0 in tests of the files).
    packed_max: u64,
    index: Arc<Mutex<Index>>,
    grants: Grants,
}

impl BlobStore {
    /// Opens (or creates) the store under `data_dir`, holding at most `cap` bytes of
    /// owned blobs.
    pub fn open(data_dir: &Path, cap: u64) -> Result<BlobStore, StoreError> {
        Self::open_packing(data_dir, cap, PACKED_MAX)
    }

    /// [`BlobStore::open`], packing blobs of at most `packed_max` bytes.
    fn open_packing(data_dir: &Path, cap: u64, packed_max: u64) -> Result<BlobStore, StoreError> {
        let root = data_dir.join("blobs");
        fs::create_dir_all(&root).map_err(io_err(&root))?;
        let mut found = Vec::new();
        let mut segments = Vec::new();
        for entry in fs::read_dir(&root).map_err(io_err(&root))? {
            let entry = entry.map_err(io_err(&root))?;
            let name = entry.file_name();
            let name = name.to_str().unwrap_or_default();
            if let Some(segment) = pack::segment_id(name) {
                segments.push(segment);
                continue;
            }
            let Some(cid) = Cid::from_hex(name) else {
                // Leftover temp file from a crash: remove it.
                let _ = fs::remove_file(entry.path());
                continue;
            };
            let meta = entry.metadata().map_err(io_err(&entry.path()))?;
            found.push((meta.modified().ok(), cid, Location::Owned, meta.len()));
        }
        let (packs, packed) = Packs::open(&root, segments, cap)?;
        let mut index = Index {
            blobs: HashMap::new(),
            order: Vec::new(),
            owned_bytes: packs.size(),
            packs,
            reserved: 0,
            pinned: HashMap::new(),
            resident: HashMap::new(),
        };
        found.extend(
            packed
                .into_iter()
                .map(|p| (p.modified, p.cid, Location::Packed(p.at), p.len)),
        );
        // Oldest first; a segment's records keep their order (the sort is stable).
        found.sort_by_key(|(modified, ..)| *modified);
        for (_, cid, location, len) in found {
            if index.blobs.contains_key(&cid) {
                // A second copy (two writers raced): its record stays dead.
                continue;
            }
            match location {
                Location::Packed(at) => index.packs.keep(at, len),
                _ => index.owned_bytes += len,
            }
            index.blobs.insert(cid, (location, len));
            index.order.push(cid);
        }
        Ok(BlobStore {
            root,
            cap,
            packed_max,
            index: Arc::new(Mutex::new(index)),
            grants: Grants::default(),
        })
    }

    /// Who may read which blob of this store (see [`Grants`]).
    pub fn grants(&self) -> &Grants {
        &self.grants
    }

    fn index(&self) -> MutexGuard<'_, Index> {
        // A panic while holding the lock cannot leave the index inconsistent in a way
        // that matters (worst case a blob is listed that a reader then fails to open).
        self.index.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn path_of(&self, cid: &Cid) -> PathBuf {
        self.root.join(cid.to_hex())
    }

    /// Stores `bytes` and returns their id.
    pub fn put(&self, bytes: &[u8]) -> Result<Cid, StoreError> {
        let cid = Cid::of(bytes);
        self.write_owned(cid, bytes)?;
        Ok(cid)
    }

    /// Stores `bytes` and keeps them in memory as part of `set`, until it is dropped.
    pub fn put_resident(&self, bytes: Vec<u8>, set: &mut Resident) -> Result<Cid, StoreError> {
        let cid = self.put(&bytes)?;
        let len = bytes.len() as u64;
        let mut index = self.index();
        let entry = index
            .resident
            .entry(cid)
            .or_insert_with(|| (Bytes::from(bytes), 0));
        entry.1 += 1;
        set.cids.push(cid);
        set.bytes += len;
        Ok(cid)
    }

    fn resident(&self, cid: &Cid) -> Option<Bytes> {
        self.index()
            .resident
            .get(cid)
            .map(|(bytes, _)| bytes.clone())
    }

    /// Stores `bytes` that a peer claims are blob `cid`, after checking the claim.
    pub fn put_verified(&self, cid: Cid, bytes: &[u8]) -> Result<(), StoreError> {
        let actual = Cid::of(bytes);
        if actual != cid {
            return Err(StoreError::HashMismatch {
                claimed: cid,
                actual,
            });
        }
        self.write_owned(cid, bytes)
    }

    fn write_owned(&self, cid: Cid, bytes: &[u8]) -> Result<(), StoreError> {
        let len = bytes.len() as u64;
        if len > limits::MAX_BLOB {
            return Err(StoreError::TooLarge {
                len,
                limit: limits::MAX_BLOB,
            });
        }
        if self.has(&cid) {
            return Ok(());
        }
        if len <= self.packed_max {
            return self.pack(cid, bytes);
        }
        // Reserved while the file is written, so a blob arriving meanwhile sees it.
        self.reserve(len)?;
        let path = self.path_of(&cid);
        let tmp = self.temp_path(&cid);
        let write = || -> std::io::Result<()> {
            let mut file = fs::File::create(&tmp)?;
            file.write_all(bytes)?;
            fs::rename(&tmp, &path)
        };
        if let Err(source) = write() {
            let _ = fs::remove_file(&tmp);
            self.release(len);
            return Err(StoreError::Io { path, source });
        }
        self.settle(cid, len);
        Ok(())
    }

    /// Appends a small blob to the active pack segment, room made for it first.
    fn pack(&self, cid: Cid, bytes: &[u8]) -> Result<(), StoreError> {
        let mut index = self.index();
        if index.blobs.contains_key(&cid) {
            return Ok(());
        }
        self.make_room(&mut index, footprint(bytes.len() as u64))?;
        Self::append_packed(&mut index, cid, bytes)
    }

    fn append_packed(index: &mut Index, cid: Cid, bytes: &[u8]) -> Result<(), StoreError> {
        let len = bytes.len() as u64;
        let at = index.packs.append(&cid, bytes)?;
        index.owned_bytes += footprint(len);
        index.blobs.insert(cid, (Location::Packed(at), len));
        index.order.push(cid);
        Ok(())
    }

    /// Disk bytes a blob of `len` bytes takes here, and whether it is packed.
    pub(super) fn room_for(&self, len: u64) -> (u64, bool) {
        if len <= self.packed_max {
            (footprint(len), true)
        } else {
            (len, false)
        }
    }

    /// A small blob received by a [`BlobWriter`] that reserved its [`footprint`]: packed,
    /// the reservation turned into its size.
    pub(super) fn settle_packed(&self, cid: Cid, bytes: &[u8]) -> Result<(), StoreError> {
        let mut index = self.index();
        index.reserved = index.reserved.saturating_sub(footprint(bytes.len() as u64));
        if index.blobs.contains_key(&cid) {
            return Ok(());
        }
        Self::append_packed(&mut index, cid, bytes)
    }

    /// A temp file name unique per write, so two writers of the same blob never share
    /// one (a leftover is removed at the next `open`: its name is not a Cid).
    pub(super) fn temp_path(&self, cid: &Cid) -> PathBuf {
        static WRITES: AtomicU64 = AtomicU64::new(0);
        self.root.join(format!(
            ".{}.{}.{}.tmp",
            cid.short(),
            std::process::id(),
            WRITES.fetch_add(1, Ordering::Relaxed)
        ))
    }

    /// A reserved blob of `len` bytes is in place: its reservation becomes its size
    /// (nothing is added for a blob another writer put in place first).
    pub(super) fn settle(&self, cid: Cid, len: u64) {
        let mut index = self.index();
        index.reserved = index.reserved.saturating_sub(len);
        if index.blobs.insert(cid, (Location::Owned, len)).is_none() {
            index.order.push(cid);
            index.owned_bytes += len;
        }
    }

    /// Gives back a reservation of `len` bytes whose blob never arrived.
    pub(super) fn release(&self, len: u64) {
        let mut index = self.index();
        index.reserved = index.reserved.saturating_sub(len);
    }

    /// Starts receiving blob `cid` of `len` bytes piece by piece (see [`BlobWriter`]):
    /// `len` bytes are reserved now (evicting unpinned blobs if need be), or the blob
    /// is refused with [`StoreError::Full`].
    pub fn writer(&self, cid: Cid, len: u64) -> Result<BlobWriter, StoreError> {
        if len > limits::MAX_BLOB {
            return Err(StoreError::TooLarge {
                len,
                limit: limits::MAX_BLOB,
            });
        }
        let (room, packed) = self.room_for(len);
        self.reserve(room)?;
        let (sink, tmp) = if packed {
            (
                Sink::Packed(Vec::with_capacity(len as usize)),
                PathBuf::new(),
            )
        } else {
            let tmp = self.temp_path(&cid);
            match fs::File::create(&tmp) {
                Ok(file) => (Sink::File(file), tmp),
                Err(source) => {
                    self.release(room);
                    return Err(StoreError::Io { path: tmp, source });
                }
            }
        };
        Ok(BlobWriter {
            store: self.clone(),
            cid,
            len,
            written: 0,
            hasher: blake3::Hasher::new(),
            sink: Some(sink),
            tmp,
            room,
            reserved: true,
        })
    }

    /// Bytes held in the store's directory and bytes reserved by blobs still arriving.
    pub fn usage(&self) -> (u64, u64) {
        let index = self.index();
        (index.owned_bytes, index.reserved)
    }

    /// Registers a user's file as blob; returns its id (hashing it streaming, so a
    /// large file is never held in memory).
    pub fn register_file(&self, path: &Path) -> Result<(Cid, u64), StoreError> {
        let mut file = fs::File::open(path).map_err(io_err(path))?;
        let mut hasher = blake3::Hasher::new();
        let mut buf = vec![0u8; 256 * 1024];
        let mut len = 0u64;
        loop {
            let n = file.read(&mut buf).map_err(io_err(path))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            len += n as u64;
        }
        let cid = Cid::from_hasher(&hasher);
        self.index()
            .blobs
            .entry(cid)
            .or_insert((Location::File(path.to_path_buf()), len));
        Ok((cid, len))
    }

    pub fn has(&self, cid: &Cid) -> bool {
        self.index().blobs.contains_key(cid)
    }

    /// Length of a blob, if held.
    pub fn len_of(&self, cid: &Cid) -> Option<u64> {
        self.index().blobs.get(cid).map(|(_, len)| *len)
    }

    fn forget(&self, cid: &Cid) {
        let mut index = self.index();
        if matches!(
            index.blobs.get(cid),
            Some((Location::Owned | Location::Packed(_), _))
        ) {
            self.remove_owned(&mut index, cid);
            index.order.retain(|c| c != cid);
        }
    }

    /// Keeps these blobs from eviction until the returned [`Pins`] is dropped.
    pub fn pin(&self, cids: impl IntoIterator<Item = Cid>) -> Pins {
        let cids: Vec<Cid> = cids.into_iter().collect();
        let mut index = self.index();
        for cid in &cids {
            *index.pinned.entry(*cid).or_default() += 1;
        }
        Pins {
            store: self.clone(),
            cids,
        }
    }

    /// Whether some job holds `cid` pinned.
    pub fn is_pinned(&self, cid: &Cid) -> bool {
        self.index().pinned.contains_key(cid)
    }
}

#[cfg(test)]
mod tests;
