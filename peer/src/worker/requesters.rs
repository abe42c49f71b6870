//! Whom this worker computes for: per requesting peer, the chunks it started here,
//! how they ended, the kernel time they took and the result bytes they made. The
//! worker counts a chunk when its `Run` starts a run (`Worker::on_run`) and when the
//! run ends; the web page's volunteer panel reads [`Requesters::snapshot`].
//!
//! Bounded: at most [`MAX_REQUESTERS`] peers are kept. A peer that starts work when
//! the table is full takes the place of the one least recently active with no chunk in
//! hand, so a stream of one-off identities cannot grow it, and the peers that matter
//! now are the ones kept.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use libp2p::PeerId;

/// Requesting peers kept at most.
pub const MAX_REQUESTERS: usize = 64;

/// How one requester's chunks went here.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Tally {
    /// Chunks run to a result.
    pub done: u64,
    /// Chunks that failed here (kernel error, inputs not fetched, handed back).
    pub failed: u64,
    /// Chunks its submitter cancelled (another copy won, the job ended).
    pub cancelled: u64,
    /// Chunks accepted and not yet ended.
    pub in_hand: u64,
    /// Kernel time of its chunks, summed (about one core's CPU time each).
    pub compute_ms: u64,
    /// Bytes of the results made for it.
    pub result_bytes: u64,
}

/// How a chunk run ended, for [`Requesters::ended`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ended {
    Done { result_bytes: u64 },
    Failed,
    Cancelled,
}

struct Entry {
    tally: Tally,
    last: Instant,
}

/// The tally of every requester kept (see the module header). Cloning shares it.
#[derive(Clone, Default)]
pub struct Requesters(Arc<Mutex<HashMap<PeerId, Entry>>>);

impl Requesters {
    fn with<R>(&self, f: impl FnOnce(&mut HashMap<PeerId, Entry>) -> R) -> R {
        f(&mut self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// A chunk for `peer` started here.
    pub fn started(&self, peer: PeerId) {
        let now = Instant::now();
        self.with(|map| {
            if !map.contains_key(&peer) && map.len() >= MAX_REQUESTERS {
                let idle = map
                    .iter()
                    .filter(|(_, e)| e.tally.in_hand == 0)
                    .min_by_key(|(_, e)| e.last)
                    .map(|(p, _)| *p);
                match idle {
                    Some(old) => {
                        map.remove(&old);
                    }
                    // Every kept peer has chunks in hand: this one is not counted.
                    None => return,
                }
            }
            let entry = map.entry(peer).or_insert_with(|| Entry {
                tally: Tally::default(),
                last: now,
            });
            entry.tally.in_hand += 1;
            entry.last = now;
        });
    }

    /// The kernel ran `took` for a chunk of `peer`.
    pub fn computed(&self, peer: PeerId, took: Duration) {
        self.with(|map| {
            if let Some(entry) = map.get_mut(&peer) {
                let ms = u64::try_from(took.as_millis()).unwrap_or(u64::MAX);
                entry.tally.compute_ms = entry.tally.compute_ms.saturating_add(ms);
            }
        });
    }

    /// A chunk of `peer` that [`started`](Self::started) ended.
    pub fn ended(&self, peer: PeerId, how: Ended) {
        self.with(|map| {
            let Some(entry) = map.get_mut(&peer) else {
                return;
            };
            let t = &mut entry.tally;
            t.in_hand = t.in_hand.saturating_sub(1);
            match how {
                Ended::Done { result_bytes } => {
                    t.done += 1;
                    t.result_bytes = t.result_bytes.saturating_add(result_bytes);
                }
                Ended::Failed => t.failed += 1,
                Ended::Cancelled => t.cancelled += 1,
            }
            entry.last = Instant::now();
        });
    }

    /// Every requester kept, most recently active first, with how long ago that was.
    pub fn snapshot(&self) -> Vec<(PeerId, Tally, Duration)> {
        let mut all: Vec<_> = self.with(|map| {
            map.iter()
                .map(|(p, e)| (*p, e.tally.clone(), e.last.elapsed()))
                .collect()
        });
        all.sort_by_key(|(_, _, ago)| *ago);
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_bounds() {
        let r = Requesters::default();
        let a = PeerId::random();
        r.started(a);
        r.started(a);
        r.computed(a, Duration::from_millis(30));
        r.ended(a, Ended::Done { result_bytes: 10 });
        r.ended(a, Ended::Failed);
        let (peer, tally, _) = r.snapshot().remove(0);
        assert_eq!(peer, a);
        assert_eq!(
            tally,
            Tally {
                done: 1,
                failed: 1,
                cancelled: 0,
                in_hand: 0,
                compute_ms: 30,
                result_bytes: 10
            }
        );
        // A busy peer stays; idle ones make room for newcomers.
        let busy = PeerId::random();
        r.started(busy);
        for _ in 0..MAX_REQUESTERS * 2 {
            let p = PeerId::random();
            r.started(p);
            r.ended(p, Ended::Cancelled);
        }
        let all = r.snapshot();
        assert_eq!(all.len(), MAX_REQUESTERS);
        assert!(all.iter().any(|(p, t, _)| *p == busy && t.in_hand == 1));
        assert!(!all.iter().any(|(p, _, _)| *p == a));
    }
}
