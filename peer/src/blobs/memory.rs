//! The memory a worker lends to chunk inputs: a [`MemoryBudget`] of bytes that inputs
//! held in memory take a share of, and [`RecentInputs`], the large inputs fetched
//! lately, kept for the next chunks that name them. An input in memory is a [`Bytes`]
//! whose owner holds its share, so the share returns to the budget exactly when the last
//! user of the input lets go.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use idlegrid_protocol::Cid;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Bytes of chunk inputs a worker may hold in memory at once (see [`fetch_input`]).
/// Cloning shares it.
#[derive(Clone)]
pub struct MemoryBudget {
    /// Free KiB (a permit a KiB: a semaphore takes at most `u32::MAX` permits at once).
    kib: Arc<Semaphore>,
}

impl MemoryBudget {
    pub fn new(bytes: u64) -> MemoryBudget {
        let kib = (bytes / 1024).min(Semaphore::MAX_PERMITS as u64) as usize;
        MemoryBudget {
            kib: Arc::new(Semaphore::new(kib)),
        }
    }

    /// A share of `bytes` if that much is free now; it returns when dropped.
    fn try_take(&self, bytes: u64) -> Option<MemoryShare> {
        let kib = u32::try_from(bytes.div_ceil(1024)).ok()?;
        self.kib
            .clone()
            .try_acquire_many_owned(kib)
            .ok()
            .map(MemoryShare)
    }
}

/// Bytes taken from a [`MemoryBudget`], given back when this is dropped.
pub struct MemoryShare(#[allow(dead_code)] OwnedSemaphorePermit);

/// A verified input's bytes with their share of the [`MemoryBudget`]: the owner behind
/// the [`Bytes`] that [`held`] hands out, so the share goes back to the budget when the
/// last chunk using the input and [`RecentInputs`] have let go.
struct MemoryInput {
    bytes: Bytes,
    _share: MemoryShare,
}

impl AsRef<[u8]> for MemoryInput {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}

/// `bytes`, holding `share` for as long as any clone of them lives.
pub(super) fn held(bytes: Bytes, share: MemoryShare) -> Bytes {
    Bytes::from_owner(MemoryInput {
        bytes,
        _share: share,
    })
}

/// The large inputs a worker fetched lately, kept in memory for the next chunks that
/// name them: the least recently used is dropped first when the budget needs room, and
/// any left unused for [`RECENT_INPUTS_IDLE`] is dropped by [`RecentInputs::expire`],
/// so a machine lent for one job does not keep its inputs in memory after it. Cloning
/// shares it.
#[derive(Clone, Default)]
pub struct RecentInputs {
    inner: Arc<Mutex<Recent>>,
}

/// How long an input unused by any new chunk stays in [`RecentInputs`].
pub const RECENT_INPUTS_IDLE: std::time::Duration = std::time::Duration::from_secs(30);

#[derive(Default)]
struct Recent {
    /// Each input with the last time a chunk asked for it (the oldest goes first).
    inputs: HashMap<Cid, (Bytes, std::time::Instant)>,
    /// Inputs being fetched: a second chunk wanting one waits for the first's fetch.
    fetching: HashMap<Cid, Arc<tokio::sync::Mutex<()>>>,
}

impl RecentInputs {
    fn lock(&self) -> std::sync::MutexGuard<'_, Recent> {
        // The map stays consistent whatever a panicking holder did (every update is one
        // insert or remove), so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The input, if it is held; it becomes the most recently used.
    pub(super) fn get(&self, cid: &Cid) -> Option<Bytes> {
        let mut recent = self.lock();
        let (input, used) = recent.inputs.get_mut(cid)?;
        *used = std::time::Instant::now();
        Some(input.clone())
    }

    pub(super) fn insert(&self, cid: Cid, input: Bytes) {
        self.lock()
            .inputs
            .insert(cid, (input, std::time::Instant::now()));
    }

    /// Drops the inputs no chunk has asked for in the last `idle`.
    pub fn expire(&self, idle: std::time::Duration) {
        let mut recent = self.lock();
        let now = std::time::Instant::now();
        recent
            .inputs
            .retain(|_, (_, used)| now.saturating_duration_since(*used) < idle);
    }

    /// Forgets the least recently used input; false if none is held. Its memory returns
    /// to the budget once no chunk is using it.
    fn evict_oldest(&self) -> bool {
        let mut recent = self.lock();
        let oldest = recent
            .inputs
            .iter()
            .min_by_key(|(_, (_, used))| *used)
            .map(|(cid, _)| *cid);
        oldest.is_some_and(|cid| recent.inputs.remove(&cid).is_some())
    }

    /// Bytes held (some may also be in use by running chunks).
    #[cfg(test)]
    fn bytes(&self) -> u64 {
        self.lock()
            .inputs
            .values()
            .map(|(input, _)| input.len() as u64)
            .sum()
    }

    /// The lock that makes concurrent fetches of `cid` one fetch.
    pub(super) fn fetch_lock(&self, cid: Cid) -> Arc<tokio::sync::Mutex<()>> {
        self.lock().fetching.entry(cid).or_default().clone()
    }

    /// Drops `cid`'s fetch lock `lock` once its fetch is over (waiters keep their
    /// clones), unless a later fetch has made a new one.
    pub(super) fn fetched(&self, cid: &Cid, lock: &Arc<tokio::sync::Mutex<()>>) {
        let mut recent = self.lock();
        if recent
            .fetching
            .get(cid)
            .is_some_and(|l| Arc::ptr_eq(l, lock))
        {
            recent.fetching.remove(cid);
        }
    }

    /// A share of `bytes` of `budget`, dropping held inputs, oldest first, until the
    /// budget has room; None if it has none even with nothing held.
    pub(super) fn make_room(&self, budget: &MemoryBudget, bytes: u64) -> Option<MemoryShare> {
        loop {
            if let Some(share) = budget.try_take(bytes) {
                return Some(share);
            }
            if !self.evict_oldest() {
                return None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hold(recent: &RecentInputs, budget: &MemoryBudget, seed: u8, len: usize) -> Cid {
        let bytes = Bytes::from(vec![seed; len]);
        let cid = Cid::of(&bytes);
        let share = recent.make_room(budget, len as u64).expect("room");
        recent.insert(cid, super::held(bytes, share));
        cid
    }

    #[test]
    fn recent_inputs_make_room_oldest_first_and_expire() {
        let budget = MemoryBudget::new(3 << 20);
        let recent = RecentInputs::default();
        let a = hold(&recent, &budget, 1, 1 << 20);
        let b = hold(&recent, &budget, 2, 1 << 20);
        let _c = hold(&recent, &budget, 3, 1 << 20);
        // `a` used again: `b` is now the oldest and goes for `d`.
        let in_use = recent.get(&a).expect("held");
        let d = hold(&recent, &budget, 4, 1 << 20);
        assert!(recent.get(&b).is_none() && recent.get(&d).is_some());
        assert_eq!(recent.bytes(), 3 << 20);
        // Dropped from the cache while a chunk still uses it: its memory stays taken
        // until the chunk lets go.
        recent.expire(std::time::Duration::ZERO);
        assert_eq!(recent.bytes(), 0);
        assert!(budget.try_take(3 << 20).is_none());
        drop(in_use);
        assert!(budget.try_take(3 << 20).is_some());
        // Nothing held and no room: no share, no loop.
        let _all = budget.try_take(3 << 20);
        assert!(recent.make_room(&budget, 1).is_none());
    }
}
