//! Who may read which blob of this peer's store over `/idlegrid/blob/1`.
//!
//! A blob is served only to a peer it concerns: a worker this peer sent a chunk naming
//! it as an input (granted by the submitter while that chunk's run lasts), or the
//! submitter of a chunk this peer computes, for the chunk's inputs and its result
//! (granted by the worker while it remembers the chunk). Each grant is a [`Grant`]
//! guard held by whoever made it; the table counts holders per (peer, blob), so it only
//! ever holds what live guards hold, and dropping a guard takes its entries away.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use idlegrid_protocol::Cid;
use libp2p::PeerId;

/// The grants of one store. Cloning shares it.
#[derive(Clone, Default)]
pub struct Grants(Arc<Mutex<HashMap<(PeerId, Cid), usize>>>);

impl Grants {
    fn table(&self) -> MutexGuard<'_, HashMap<(PeerId, Cid), usize>> {
        // Every update is one counted insert or remove: a panicking holder cannot leave
        // the table inconsistent.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Lets `peer` read `cids` until the returned guard is dropped.
    pub fn grant(&self, peer: PeerId, cids: impl IntoIterator<Item = Cid>) -> Grant {
        let mut grant = self.empty();
        for cid in cids {
            grant.add(peer, cid);
        }
        grant
    }

    /// A guard granting nothing yet, to [`Grant::add`] to.
    pub fn empty(&self) -> Grant {
        Grant {
            grants: self.clone(),
            entries: Vec::new(),
        }
    }

    /// Whether some live grant lets `peer` read `cid`.
    pub fn allows(&self, peer: &PeerId, cid: &Cid) -> bool {
        self.table().contains_key(&(*peer, *cid))
    }

    /// (peer, blob) pairs granted now (for tests of the table's bound).
    pub fn len(&self) -> usize {
        self.table().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Blobs some peers may read, until this is dropped.
#[must_use = "the grant ends when this is dropped: hold it while the peer needs the blobs"]
pub struct Grant {
    grants: Grants,
    entries: Vec<(PeerId, Cid)>,
}

impl Grant {
    /// Lets `peer` read `cid` too, for as long as this guard lives.
    pub fn add(&mut self, peer: PeerId, cid: Cid) {
        *self.grants.table().entry((peer, cid)).or_default() += 1;
        self.entries.push((peer, cid));
    }
}

impl Drop for Grant {
    fn drop(&mut self) {
        let mut table = self.grants.table();
        for key in &self.entries {
            if let Some(holders) = table.get_mut(key) {
                *holders -= 1;
                if *holders == 0 {
                    table.remove(key);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_grant_lasts_as_long_as_its_last_guard() {
        let grants = Grants::default();
        let (a, b) = (PeerId::random(), PeerId::random());
        let cid = Cid::of(b"blob");
        let first = grants.grant(a, [cid, cid]);
        let second = grants.grant(a, [cid]);
        assert!(grants.allows(&a, &cid));
        assert!(!grants.allows(&b, &cid), "only the peer it was granted to");
        drop(first);
        assert!(grants.allows(&a, &cid), "the second guard still holds it");
        drop(second);
        assert!(!grants.allows(&a, &cid));
        assert!(grants.is_empty(), "nothing left behind");
    }
}
