//! Room within the store's cap: reserving it for a blob about to be written, evicting
//! the oldest unpinned blobs to make it, and compacting pack segments whose dead
//! records hold it. Everything but `reserve` is called with the index already locked.

use std::fs;

use idlegrid_protocol::Cid;

use super::pack::{self, footprint, PackedAt};
use super::{BlobStore, Index, Location, StoreError};

impl BlobStore {
    /// Reserves `incoming` bytes, evicting unpinned owned blobs, oldest first, until
    /// they fit beside the blobs held and the reservations already made.
    pub(super) fn reserve(&self, incoming: u64) -> Result<(), StoreError> {
        let mut index = self.index();
        self.make_room(&mut index, incoming)?;
        index.reserved += incoming;
        Ok(())
    }

    /// Makes room for `incoming` more bytes within the cap: evicts unpinned owned blobs,
    /// oldest first, until they would fit once the dead records of the pack segments
    /// are given back, then compacts segments until they fit on disk.
    pub(super) fn make_room(&self, index: &mut Index, incoming: u64) -> Result<(), StoreError> {
        let over = |index: &Index, free: u64| {
            index
                .owned_bytes
                .saturating_sub(free)
                .saturating_add(index.reserved)
                .saturating_add(incoming)
                > self.cap
        };
        if over(index, index.packs.dead()) {
            let mut keep = Vec::with_capacity(index.order.len());
            let order = std::mem::take(&mut index.order);
            for cid in order {
                if !over(index, index.packs.dead()) || index.pinned.contains_key(&cid) {
                    keep.push(cid);
                    continue;
                }
                self.remove_owned(index, &cid);
            }
            index.order = keep;
        }
        while over(index, 0) {
            let Some(segment) = index.packs.best_to_compact() else {
                break;
            };
            self.compact(index, segment)?;
        }
        if over(index, 0) {
            return Err(StoreError::Full {
                needed: incoming,
                cap: self.cap,
                held: index.owned_bytes,
                reserved: index.reserved,
            });
        }
        Ok(())
    }

    /// Drops an owned blob from the index and its bytes from the disk (a packed one's
    /// record turns dead; its segment goes with its last live record). The caller
    /// takes it out of `order`.
    pub(super) fn remove_owned(&self, index: &mut Index, cid: &Cid) {
        match index.blobs.remove(cid) {
            Some((Location::Owned, len)) => {
                let _ = fs::remove_file(self.path_of(cid));
                index.owned_bytes = index.owned_bytes.saturating_sub(len);
            }
            Some((Location::Packed(at), len)) => {
                let freed = index.packs.kill(at, len);
                index.owned_bytes = index.owned_bytes.saturating_sub(freed);
            }
            Some(other @ (Location::File(_), _)) => {
                index.blobs.insert(*cid, other);
            }
            None => {}
        }
    }

    /// Moves the live records of pack segment `segment` to the active segment and
    /// deletes it, giving back its dead records' bytes. The segment is read into memory
    /// and deleted before its live records are written again, so the disk never holds
    /// both (a compaction never needs room it does not free). A crash in between loses
    /// those records; the store is a cache of content-addressed bytes, and what a job
    /// misses it fetches or computes again.
    fn compact(&self, index: &mut Index, segment: u32) -> Result<(), StoreError> {
        let bytes = index.packs.read_segment(segment)?;
        let live: Vec<(Cid, u64, u64)> = pack::segment_records(&bytes)
            .into_iter()
            .filter(|(cid, offset, _)| {
                let here = PackedAt {
                    segment,
                    offset: *offset,
                };
                matches!(index.blobs.get(cid), Some((Location::Packed(at), _)) if *at == here)
            })
            .collect();
        let freed = index.packs.compacted(segment);
        index.owned_bytes = index.owned_bytes.saturating_sub(freed);
        for (cid, offset, len) in live {
            let blob = &bytes[offset as usize..(offset + len) as usize];
            match index.packs.append(&cid, blob) {
                Ok(at) => {
                    index.owned_bytes += footprint(len);
                    index.blobs.insert(cid, (Location::Packed(at), len));
                }
                Err(e) => {
                    index.blobs.remove(&cid);
                    index.order.retain(|c| *c != cid);
                    return Err(e);
                }
            }
        }
        Ok(())
    }
}
