//! Small blobs packed together: the results and small inputs of jobs of many tiny
//! chunks would otherwise cost an inode each, and creating, renaming and deleting many
//! small files in one directory serialises on its lock and on ext4's inode allocator
//! (the largest kernel cost of a job of small chunks before blobs were packed).
//!
//! A blob of at most [`PACKED_MAX`] bytes is appended, with one `write`, as a record
//! `<32-byte id><4-byte little-endian length><bytes>` to the active segment,
//! `<data dir>/blobs/<number>.pack`; a segment is closed once it reaches its target
//! size and the next record starts a new one. Nothing is renamed and nothing is written
//! twice. Every record is checked against its id when the store opens and again when it
//! is read, so a record torn by a crash or damaged on disk is never served: a torn tail
//! is cut off at open, a damaged record is left out of the index (its bytes are dead).
//!
//! Evicting a packed blob only marks its record dead; a segment whose records are all
//! dead is deleted, and [`Packs`] keeps the dead bytes so the store can compact a
//! segment (move its live records to the active segment, delete it) when the cap needs
//! them back. The store's lock is held around every call here.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use idlegrid_protocol::Cid;

use super::{io_err, StoreError};

/// Largest blob packed; larger ones get a file of their own.
pub const PACKED_MAX: u64 = 64 * 1024;

/// Bytes of a record before the blob's own: its id and length.
pub const RECORD_HEADER: u64 = 32 + 4;

/// The largest target size of a segment: compacting one then moves at most this much.
const SEGMENT_MAX: u64 = 16 << 20;

/// Disk bytes a packed blob of `len` bytes takes.
pub fn footprint(len: u64) -> u64 {
    RECORD_HEADER + len
}

/// Where a packed blob's bytes are: its segment and the offset of its bytes there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PackedAt {
    pub segment: u32,
    pub offset: u64,
}

/// A packed blob found when the store opened.
pub struct Found {
    pub cid: Cid,
    pub at: PackedAt,
    pub len: u64,
    pub modified: Option<std::time::SystemTime>,
}

#[derive(Debug, Default)]
struct Segment {
    /// Bytes of its file.
    size: u64,
    /// Records still in the index, and their footprints.
    live: u64,
    live_bytes: u64,
}

/// The store's pack segments (see the module docs).
pub struct Packs {
    dir: PathBuf,
    segments: BTreeMap<u32, Segment>,
    /// The segment appended to, with its file open for appending.
    active: Option<(u32, File)>,
    next: u32,
    target: u64,
    /// Bytes of records no longer in the index, over every segment.
    dead: u64,
    /// Segments open for reading, so a read of a small blob is one `pread` rather than
    /// an open, a read and a close (a chunk's small input is read once per chunk).
    /// At most [`READERS_OPEN`]; a deleted segment's is dropped.
    readers: HashMap<u32, Arc<File>>,
}

/// Most segments kept open for reading.
const READERS_OPEN: usize = 64;

fn segment_name(id: u32) -> String {
    format!("{id:010}.pack")
}

/// The segment number of a file name of the store's directory, if it is one.
pub fn segment_id(name: &str) -> Option<u32> {
    let digits = name.strip_suffix(".pack")?;
    (digits.len() == 10 && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok())
        .flatten()
}

/// Splits a segment's bytes into its records, up to the first that is torn (its length
/// is impossible or runs past the end): returns the records whose bytes hash to their
/// id, and the length of the whole records. A record that does not hash to its id is
/// left out (its bytes count as dead).
fn records(bytes: &[u8]) -> (Vec<(Cid, u64, u64)>, u64) {
    let mut found = Vec::new();
    let mut pos = 0usize;
    while let Some(header) = bytes.get(pos..pos + RECORD_HEADER as usize) {
        let (id, len) = header.split_at(32);
        let mut len_bytes = [0u8; 4];
        len_bytes.copy_from_slice(len);
        let len = u64::from(u32::from_le_bytes(len_bytes));
        let start = pos + RECORD_HEADER as usize;
        let Some(blob) = (len <= PACKED_MAX)
            .then(|| bytes.get(start..start + len as usize))
            .flatten()
        else {
            break;
        };
        let mut claimed = [0u8; 32];
        claimed.copy_from_slice(id);
        let cid = Cid(claimed);
        if Cid::of(blob) == cid {
            found.push((cid, start as u64, len));
        }
        pos = start + len as usize;
    }
    (found, pos as u64)
}

impl Packs {
    /// Reads the segments in `dir`, cutting off torn or damaged tails; returns every
    /// sound record, oldest segment first. `cap` sets the segments' target size: a
    /// sixteenth of the cap, between one largest record and [`SEGMENT_MAX`].
    pub fn open(dir: &Path, ids: Vec<u32>, cap: u64) -> Result<(Packs, Vec<Found>), StoreError> {
        let mut packs = Packs {
            dir: dir.to_path_buf(),
            segments: BTreeMap::new(),
            readers: HashMap::new(),
            active: None,
            next: 0,
            target: (cap / 16).clamp(footprint(PACKED_MAX), SEGMENT_MAX),
            dead: 0,
        };
        let mut found = Vec::new();
        let mut ids = ids;
        ids.sort_unstable();
        for id in ids {
            let path = packs.path(id);
            let bytes = fs::read(&path).map_err(io_err(&path))?;
            let (records, sound) = records(&bytes);
            if sound < bytes.len() as u64 {
                tracing::warn!(
                    "blob store: {} has {} torn or damaged bytes at its end; cutting them off",
                    path.display(),
                    bytes.len() as u64 - sound
                );
                let file = OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map_err(io_err(&path))?;
                file.set_len(sound).map_err(io_err(&path))?;
            }
            let modified = fs::metadata(&path).and_then(|m| m.modified()).ok();
            packs.segments.insert(
                id,
                Segment {
                    size: sound,
                    ..Segment::default()
                },
            );
            packs.dead += sound;
            packs.next = packs.next.max(id.saturating_add(1));
            found.extend(records.into_iter().map(|(cid, offset, len)| Found {
                cid,
                at: PackedAt {
                    segment: id,
                    offset,
                },
                len,
                modified,
            }));
        }
        Ok((packs, found))
    }

    fn path(&self, id: u32) -> PathBuf {
        self.dir.join(segment_name(id))
    }

    /// Disk bytes of every segment.
    pub fn size(&self) -> u64 {
        self.segments.values().map(|s| s.size).sum()
    }

    /// Bytes a compaction of every segment would give back.
    pub fn dead(&self) -> u64 {
        self.dead
    }

    /// Counts a record found at open (or appended) as live.
    pub fn keep(&mut self, at: PackedAt, len: u64) {
        if let Some(segment) = self.segments.get_mut(&at.segment) {
            segment.live += 1;
            segment.live_bytes += footprint(len);
            self.dead = self.dead.saturating_sub(footprint(len));
        }
    }

    /// Appends blob `cid` (its `bytes`) to the active segment, starting a new one if
    /// there is none or it is full. The caller adds [`footprint`] to what the store
    /// holds.
    pub fn append(&mut self, cid: &Cid, bytes: &[u8]) -> Result<PackedAt, StoreError> {
        let full = |size: u64| size >= self.target;
        let active = match &self.active {
            Some((id, _)) if !full(self.segments.get(id).map_or(0, |s| s.size)) => *id,
            _ => self.start_segment()?,
        };
        let path = self.path(active);
        let Some((_, file)) = self.active.as_mut() else {
            return Err(StoreError::Io {
                path,
                source: std::io::Error::other("no active pack segment"),
            });
        };
        let segment = self.segments.entry(active).or_default();
        let mut record = Vec::with_capacity(footprint(bytes.len() as u64) as usize);
        record.extend_from_slice(&cid.0);
        record.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
        record.extend_from_slice(bytes);
        // One write of the whole record: with O_APPEND it lands whole at the end.
        if let Err(source) = file.write_all(&record) {
            // A partial record would shift every later one: start afresh in a new
            // segment, and let the next open cut this one's tail.
            self.active = None;
            return Err(StoreError::Io { path, source });
        }
        let at = PackedAt {
            segment: active,
            offset: segment.size + RECORD_HEADER,
        };
        segment.size += record.len() as u64;
        segment.live += 1;
        segment.live_bytes += record.len() as u64;
        Ok(at)
    }

    fn start_segment(&mut self) -> Result<u32, StoreError> {
        let id = self.next;
        let path = self.path(id);
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io_err(&path))?;
        self.next = id.saturating_add(1);
        self.segments.insert(id, Segment::default());
        self.active = Some((id, file));
        Ok(id)
    }

    /// The record of a blob of `len` bytes at `at` is no longer in the index. Returns the
    /// disk bytes given back: its whole segment's, if that was its last live record.
    pub fn kill(&mut self, at: PackedAt, len: u64) -> u64 {
        let Some(segment) = self.segments.get_mut(&at.segment) else {
            return 0;
        };
        segment.live = segment.live.saturating_sub(1);
        segment.live_bytes = segment.live_bytes.saturating_sub(footprint(len));
        self.dead += footprint(len);
        if segment.live > 0 {
            return 0;
        }
        self.delete(at.segment)
    }

    /// Deletes a segment (its live records moved or dead); returns its disk bytes.
    fn delete(&mut self, id: u32) -> u64 {
        let Some(segment) = self.segments.remove(&id) else {
            return 0;
        };
        self.retire(id);
        self.readers.remove(&id);
        self.dead = self.dead.saturating_sub(segment.size - segment.live_bytes);
        let _ = fs::remove_file(self.path(id));
        segment.size
    }

    /// The segment whose compaction gives back the most bytes; `None` when no segment
    /// has dead records.
    pub fn best_to_compact(&self) -> Option<u32> {
        self.segments
            .iter()
            .map(|(id, s)| (*id, s.size - s.live_bytes))
            .filter(|(_, dead)| *dead > 0)
            .max_by_key(|(_, dead)| *dead)
            .map(|(id, _)| id)
    }

    /// Stops appending to segment `id`: it is about to be compacted.
    pub fn retire(&mut self, id: u32) {
        if self
            .active
            .as_ref()
            .is_some_and(|(active, _)| *active == id)
        {
            self.active = None;
        }
    }

    /// Reads a whole segment, for a compaction.
    pub fn read_segment(&self, id: u32) -> Result<Vec<u8>, StoreError> {
        let path = self.path(id);
        fs::read(&path).map_err(io_err(&path))
    }

    /// Deletes segment `id` for a compaction (its live records are about to be
    /// appended anew). Returns its disk bytes.
    pub fn compacted(&mut self, id: u32) -> u64 {
        if let Some(segment) = self.segments.get_mut(&id) {
            // Its live records now live elsewhere: all of it is dead.
            self.dead += segment.live_bytes;
            segment.live_bytes = 0;
            segment.live = 0;
        }
        self.delete(id)
    }

    /// Where segment `id` is on disk and, when it could be opened, the segment open
    /// for reading: to read a record outside the store's lock.
    pub fn segment(&mut self, id: u32) -> SegmentReader {
        let path = self.path(id);
        let file = match self.readers.get(&id) {
            Some(file) => Some(file.clone()),
            None if self.segments.contains_key(&id) => File::open(&path).ok().map(|file| {
                if self.readers.len() >= READERS_OPEN {
                    self.readers.clear();
                }
                let file = Arc::new(file);
                self.readers.insert(id, file.clone());
                file
            }),
            None => None,
        };
        SegmentReader { path, file }
    }
}

/// A segment to read records from: its path, and the file if it is open.
#[derive(Clone, Debug)]
pub struct SegmentReader {
    pub path: PathBuf,
    file: Option<Arc<File>>,
}

/// Reads a packed blob of `len` bytes at `at` from its segment and checks it against
/// `cid`. `Ok(None)` if the segment is gone (compacted or deleted meanwhile); a record
/// that does not hash to its id is an error. (A segment deleted after it was opened
/// still reads as it was: the record is checked against its id all the same.)
pub fn read(
    segment: &SegmentReader,
    at: PackedAt,
    len: u64,
    cid: &Cid,
) -> Result<Option<Bytes>, StoreError> {
    let path = &segment.path;
    let opened;
    let file = match &segment.file {
        Some(file) => &**file,
        None => match File::open(path) {
            Ok(file) => {
                opened = file;
                &opened
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(StoreError::Io {
                    path: path.to_path_buf(),
                    source,
                })
            }
        },
    };
    let mut bytes = vec![0u8; len as usize];
    file.read_exact_at(&mut bytes, at.offset)
        .map_err(io_err(path))?;
    let actual = Cid::of(&bytes);
    if actual != *cid {
        return Err(StoreError::HashMismatch {
            claimed: *cid,
            actual,
        });
    }
    Ok(Some(Bytes::from(bytes)))
}

/// The records of a segment's bytes (for a compaction): (id, offset of the bytes,
/// length), up to the first unsound one.
pub fn segment_records(bytes: &[u8]) -> Vec<(Cid, u64, u64)> {
    records(bytes).0
}
