//! What this peer, as a submitter, has learnt of other peers' honesty, across jobs: per
//! PeerId, how many of its results in a row were verified (the record that earned
//! trust, [`Trust::Earned`](idlegrid_scheduler::Trust::Earned)), how many in all and
//! when last, and a ban with its evidence once it was caught returning a wrong result.
//!
//! Kept in `<data dir>/trust.json`, read when a job starts and written whole (to a
//! temporary name, then renamed) when a job ends and at once after a ban, so a crash
//! never leaves half a file. A file that does not parse is moved aside with a warning
//! and the book starts empty: that costs checks (every peer is a newcomer again), never
//! safety. The book is bounded: past [`MAX_RECORDS`] peers, the records not banned that
//! were verified longest ago are forgotten first.
//!
//! This module owns `<data dir>/trust.json`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use idlegrid_protocol::Cid;
use idlegrid_scheduler::Trust;
use libp2p::PeerId;
use serde::{Deserialize, Serialize};

/// The file in the data dir.
pub const TRUST_FILE: &str = "trust.json";

/// Peers remembered at most; bans count too (they are kept before any other record).
pub const MAX_RECORDS: usize = 10_000;

/// One peer's record.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrustRecord {
    /// Its results verified in a row (by this machine, or matched by a peer with a
    /// record on another host). A ban ends it.
    pub in_a_row: u32,
    /// Its results verified in all.
    pub verified: u64,
    /// When its latest result was verified, seconds since the Unix epoch.
    pub last_verified: Option<u64>,
    pub banned: Option<Ban>,
}

/// Why a peer is banned: the chunk and the two results, enough to check the claim.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ban {
    /// Seconds since the Unix epoch.
    pub at: u64,
    /// The chunk's id (blake3 of its task spec).
    pub chunk: String,
    /// What the peer returned.
    pub claimed: String,
    /// What this machine computed.
    pub settled: String,
    pub reason: String,
}

/// The trust book of one data dir.
#[derive(Debug)]
pub struct TrustBook {
    path: PathBuf,
    records: BTreeMap<String, TrustRecord>,
    dirty: bool,
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl TrustBook {
    /// Reads the book of `data_dir` (empty if there is none yet).
    pub fn open(data_dir: &Path) -> TrustBook {
        let path = data_dir.join(TRUST_FILE);
        let records = match std::fs::read(&path) {
            Ok(bytes) => match serde_json::from_slice(&bytes) {
                Ok(records) => records,
                Err(e) => {
                    let aside = path.with_extension("json.unreadable");
                    tracing::warn!(
                        "{} is not a trust book ({e}); moved to {} and starting afresh: every \
                         peer's results are checked again until it earns trust",
                        path.display(),
                        aside.display()
                    );
                    let _ = std::fs::rename(&path, &aside);
                    BTreeMap::new()
                }
            },
            Err(_) => BTreeMap::new(),
        };
        TrustBook {
            path,
            records,
            dirty: false,
        }
    }

    /// A peer's record, if it has one.
    pub fn get(&self, peer: &PeerId) -> Option<&TrustRecord> {
        self.records.get(&peer.to_string())
    }

    /// Every record, by PeerId text.
    pub fn records(&self) -> impl Iterator<Item = (&String, &TrustRecord)> {
        self.records.iter()
    }

    /// Its results verified in a row (0 without a record, or banned).
    pub fn in_a_row(&self, peer: &PeerId) -> u32 {
        self.get(peer)
            .filter(|r| r.banned.is_none())
            .map_or(0, |r| r.in_a_row)
    }

    /// The peers not banned that earned trust (by default's count of results verified
    /// in a row).
    pub fn trusted(&self) -> Vec<PeerId> {
        let after = Trust::default().after();
        self.records
            .iter()
            .filter(|(_, r)| r.banned.is_none() && r.in_a_row >= after)
            .filter_map(|(peer, _)| peer.parse().ok())
            .collect()
    }

    /// The ban of a banned peer.
    pub fn ban_of(&self, peer: &PeerId) -> Option<&Ban> {
        self.get(peer).and_then(|r| r.banned.as_ref())
    }

    /// One more result of `peer` verified.
    pub fn confirmed(&mut self, peer: &PeerId) {
        let record = self.records.entry(peer.to_string()).or_default();
        if record.banned.is_some() {
            return;
        }
        record.in_a_row = record.in_a_row.saturating_add(1);
        record.verified = record.verified.saturating_add(1);
        record.last_verified = Some(now_secs());
        self.dirty = true;
    }

    /// `peer` returned `claimed` for `chunk` where this machine computed `settled`.
    /// Saved at once: a ban must survive a crash.
    pub fn ban(&mut self, peer: &PeerId, chunk: &Cid, claimed: &Cid, settled: &Cid) {
        let record = self.records.entry(peer.to_string()).or_default();
        record.in_a_row = 0;
        record.banned = Some(Ban {
            at: now_secs(),
            chunk: chunk.to_hex(),
            claimed: claimed.to_hex(),
            settled: settled.to_hex(),
            reason: "returned a result that differs from this machine's computation".into(),
        });
        self.dirty = true;
        self.save();
    }

    /// Writes the book if it changed. A failure is logged, not fatal: the job's output
    /// does not depend on it.
    pub fn save(&mut self) {
        if !self.dirty {
            return;
        }
        self.bound();
        let written = serde_json::to_vec_pretty(&self.records)
            .map_err(std::io::Error::other)
            .and_then(|json| {
                let tmp = self.path.with_extension("json.tmp");
                std::fs::write(&tmp, json).and_then(|_| std::fs::rename(&tmp, &self.path))
            });
        match written {
            Ok(()) => self.dirty = false,
            Err(e) => tracing::warn!("cannot save {}: {e}", self.path.display()),
        }
    }

    /// Forgets the records verified longest ago beyond [`MAX_RECORDS`], bans last.
    fn bound(&mut self) {
        let excess = self.records.len().saturating_sub(MAX_RECORDS);
        if excess == 0 {
            return;
        }
        let mut by_age: Vec<(bool, u64, String)> = self
            .records
            .iter()
            .map(|(k, r)| (r.banned.is_some(), r.last_verified.unwrap_or(0), k.clone()))
            .collect();
        by_age.sort();
        for (_, _, key) in by_age.into_iter().take(excess) {
            self.records.remove(&key);
        }
    }
}

impl Drop for TrustBook {
    fn drop(&mut self) {
        self.save();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("idlegrid-trust-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn records_and_bans_survive_a_reopen() {
        let dir = dir("reopen");
        let (a, b) = (PeerId::random(), PeerId::random());
        {
            let mut book = TrustBook::open(&dir);
            for _ in 0..12 {
                book.confirmed(&a);
            }
            book.confirmed(&b);
            book.ban(&b, &Cid::of(b"chunk"), &Cid::of(b"lie"), &Cid::of(b"truth"));
        }
        let book = TrustBook::open(&dir);
        assert_eq!(book.in_a_row(&a), 12);
        assert_eq!(book.trusted(), vec![a], "a banned peer is not trusted");
        assert_eq!(book.get(&a).unwrap().verified, 12);
        assert_eq!(book.in_a_row(&b), 0, "a banned peer has no standing");
        let ban = book.ban_of(&b).unwrap();
        assert_eq!(ban.claimed, Cid::of(b"lie").to_hex());
        assert_eq!(ban.settled, Cid::of(b"truth").to_hex());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn an_unreadable_book_is_moved_aside_and_starts_empty() {
        let dir = dir("garbage");
        std::fs::write(dir.join(TRUST_FILE), b"{ not json").unwrap();
        let book = TrustBook::open(&dir);
        assert_eq!(book.records().count(), 0);
        assert!(dir.join("trust.json.unreadable").exists());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_book_is_bounded_and_keeps_bans() {
        let dir = dir("bound");
        let mut book = TrustBook::open(&dir);
        let liar = PeerId::random();
        book.ban(&liar, &Cid::of(b"c"), &Cid::of(b"x"), &Cid::of(b"y"));
        for _ in 0..MAX_RECORDS + 5 {
            book.confirmed(&PeerId::random());
        }
        book.save();
        assert_eq!(book.records().count(), MAX_RECORDS);
        assert!(book.ban_of(&liar).is_some());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
