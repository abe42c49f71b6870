//! The chunk registry: every chunk this worker accepted, where each stands, who asked
//! for it, and the switch that cancels it.
//!
//! A `Run` is admitted here (or found already known, or refused as busy); the admitted
//! run gets the sending half of its status channel and the receiving half of its cancel
//! switch, and hands both back through [`Registry::finish`] when it ends. Each status
//! sits behind a `watch` channel, so a poll waits on it without holding the registry's
//! lock. Finished statuses are remembered for late polls, the oldest forgotten first.
//! Only a chunk's submitter may cancel it: the registry checks who asks before it
//! touches anything.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};

use bytes::Bytes;
use idlegrid_protocol::Cid;
use libp2p::PeerId;
use tokio::sync::watch;

/// Where a chunk stands on this worker.
#[derive(Clone, Debug)]
pub(super) enum Status {
    Working,
    /// `small` holds results up to [`KEEP_IN_MEMORY`](super::pipeline::KEEP_IN_MEMORY)
    /// bytes (they skip the disk); larger ones are in the blob store.
    Done {
        result: Cid,
        len: u64,
        small: Option<Bytes>,
    },
    Failed(String),
    /// Its submitter cancelled it before its kernel started.
    Cancelled,
}

impl Status {
    fn is_working(&self) -> bool {
        matches!(self, Status::Working)
    }

    /// Ended without a result: a new `Run` of the chunk tries it again.
    fn ended_without_result(&self) -> bool {
        matches!(self, Status::Failed(_) | Status::Cancelled)
    }
}

/// What the submitter of a cancelled chunk reads as its failure.
pub(super) const CANCELLED: &str = "cancelled by its submitter";

/// A chunk known here.
struct Known {
    /// Who asked for it last; only they may cancel it.
    submitter: PeerId,
    status: watch::Receiver<Status>,
}

/// The way to stop one run of a chunk before its kernel starts.
struct Cancel {
    run: u64,
    switch: watch::Sender<bool>,
}

/// What became of a `Run` request.
pub(super) enum Admission {
    /// Known here and not failed: it is answered from its status.
    Known,
    /// Refused: this many chunks are running or queued already.
    Busy(usize),
    /// A new run of the chunk, to be computed.
    Started(Run),
}

/// One admitted run of a chunk, held by the task that computes it.
pub(super) struct Run {
    /// Tells this run from a later run of the same chunk.
    pub id: u64,
    /// Where the run says how it ended.
    pub status: watch::Sender<Status>,
    /// Turns true once the submitter cancels this run.
    pub cancelled: watch::Receiver<bool>,
}

pub(super) struct Registry {
    known: HashMap<Cid, Known>,
    /// Chunks not finished, each with the switch that stops it while it is still
    /// fetching its inputs or waiting for a core.
    cancels: HashMap<Cid, Cancel>,
    next_run: u64,
    /// Finished chunks in completion order, to forget the oldest.
    finished: VecDeque<Cid>,
    /// Chunks accepted and not finished (queued or running).
    working: usize,
    /// Finished chunks whose status is kept for late polls.
    remember: usize,
}

impl Registry {
    pub fn new(remember: usize) -> Registry {
        Registry {
            known: HashMap::new(),
            cancels: HashMap::new(),
            next_run: 0,
            finished: VecDeque::new(),
            working: 0,
            remember,
        }
    }

    /// Admits a run of `chunk` for `peer` while fewer than `capacity` chunks are
    /// accepted and not finished.
    pub fn admit(&mut self, chunk: Cid, peer: PeerId, capacity: usize) -> Admission {
        // A chunk known here is answered from its status, unless it ended without a
        // result: then it is tried again. Its failure may have been the requester's (an
        // input it could not serve, a connection it closed at the end of its job), and
        // the same chunk from another submitter — the calibration chunk every job
        // benchmarks with — must not inherit that failure.
        if let Some(known) = self.known.get(&chunk) {
            if !known.status.borrow().ended_without_result() {
                return Admission::Known;
            }
        }
        if self.working >= capacity {
            return Admission::Busy(self.working);
        }
        let (status, rx) = watch::channel(Status::Working);
        let (switch, cancelled) = watch::channel(false);
        let run = self.next_run;
        self.next_run += 1;
        self.known.insert(
            chunk,
            Known {
                submitter: peer,
                status: rx,
            },
        );
        self.cancels.insert(chunk, Cancel { run, switch });
        self.working += 1;
        Admission::Started(Run {
            id: run,
            status,
            cancelled,
        })
    }

    /// Books the end of run `run` of `chunk` (its status already sent).
    pub fn finish(&mut self, chunk: Cid, run: u64) {
        self.working = self.working.saturating_sub(1);
        if let Entry::Occupied(cancel) = self.cancels.entry(chunk) {
            if cancel.get().run == run {
                cancel.remove();
            }
        }
        self.finished.push_back(chunk);
        if self.finished.len() > self.remember {
            if let Some(old) = self.finished.pop_front() {
                // Not if the chunk was started again since (a retried failure).
                if !self
                    .known
                    .get(&old)
                    .is_some_and(|known| known.status.borrow().is_working())
                {
                    self.known.remove(&old);
                }
            }
        }
    }

    /// `peer` no longer wants `chunk`: if `peer` is the one who asked for it, the chunk
    /// is forgotten and a run still fetching its inputs or waiting for a core stops
    /// there. A cancel from anyone else changes nothing. Says whether it acted.
    pub fn cancel(&mut self, chunk: Cid, peer: PeerId) -> bool {
        match self.known.entry(chunk) {
            Entry::Occupied(known) if known.get().submitter == peer => known.remove(),
            _ => return false,
        };
        if let Some(cancel) = self.cancels.remove(&chunk) {
            // The run may have ended already and dropped its receiver.
            let _ = cancel.switch.send(true);
        }
        true
    }

    /// The status of `chunk`, if this worker knows it.
    pub fn status(&self, chunk: &Cid) -> Option<watch::Receiver<Status>> {
        self.known.get(chunk).map(|known| known.status.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(n: u8) -> Cid {
        Cid::of(&[n])
    }

    fn started(admission: Admission) -> Run {
        match admission {
            Admission::Started(run) => run,
            Admission::Known => panic!("expected a new run, the chunk was known"),
            Admission::Busy(n) => panic!("expected a new run, busy with {n}"),
        }
    }

    #[test]
    fn a_cancel_from_another_peer_leaves_the_chunk_in_place() {
        let (submitter, stranger) = (PeerId::random(), PeerId::random());
        let mut registry = Registry::new(16);
        let run = started(registry.admit(chunk(1), submitter, 4));

        assert!(!registry.cancel(chunk(1), stranger));
        assert!(registry.status(&chunk(1)).is_some(), "the status is kept");
        assert!(!*run.cancelled.borrow(), "the run goes on");
        assert!(matches!(
            registry.admit(chunk(1), stranger, 4),
            Admission::Known
        ));

        assert!(registry.cancel(chunk(1), submitter));
        assert!(registry.status(&chunk(1)).is_none());
        assert!(*run.cancelled.borrow(), "the run is told to stop");
    }

    #[test]
    fn a_finished_chunk_is_cancelled_only_by_its_submitter() {
        let (submitter, stranger) = (PeerId::random(), PeerId::random());
        let mut registry = Registry::new(16);
        let run = started(registry.admit(chunk(1), submitter, 4));
        let _ = run.status.send(Status::Failed("no".into()));
        registry.finish(chunk(1), run.id);

        assert!(!registry.cancel(chunk(1), stranger));
        assert!(registry.status(&chunk(1)).is_some());
        assert!(registry.cancel(chunk(1), submitter));
        assert!(registry.status(&chunk(1)).is_none());
    }

    #[test]
    fn a_chunk_that_ended_without_a_result_runs_again() {
        let peer = PeerId::random();
        let mut registry = Registry::new(16);
        for end in [Status::Failed("input gone".into()), Status::Cancelled] {
            let run = started(registry.admit(chunk(1), peer, 4));
            let _ = run.status.send(end);
            registry.finish(chunk(1), run.id);
        }
        let run = started(registry.admit(chunk(1), peer, 4));
        let _ = run.status.send(Status::Done {
            result: chunk(9),
            len: 1,
            small: None,
        });
        registry.finish(chunk(1), run.id);
        assert!(matches!(
            registry.admit(chunk(1), peer, 4),
            Admission::Known
        ));
    }

    #[test]
    fn chunks_beyond_capacity_are_refused_until_one_finishes() {
        let peer = PeerId::random();
        let mut registry = Registry::new(16);
        let first = started(registry.admit(chunk(1), peer, 2));
        let _second = started(registry.admit(chunk(2), peer, 2));
        assert!(matches!(
            registry.admit(chunk(3), peer, 2),
            Admission::Busy(2)
        ));
        registry.finish(chunk(1), first.id);
        started(registry.admit(chunk(3), peer, 2));
    }

    #[test]
    fn the_oldest_finished_status_is_forgotten_first() {
        let peer = PeerId::random();
        let mut registry = Registry::new(2);
        for n in 1..=3 {
            let run = started(registry.admit(chunk(n), peer, 4));
            let _ = run.status.send(Status::Failed("done".into()));
            registry.finish(chunk(n), run.id);
        }
        assert!(registry.status(&chunk(1)).is_none());
        assert!(registry.status(&chunk(2)).is_some());
        assert!(registry.status(&chunk(3)).is_some());
    }

    #[test]
    fn a_chunk_started_again_is_not_forgotten_while_it_works() {
        let peer = PeerId::random();
        let mut registry = Registry::new(1);
        let run = started(registry.admit(chunk(1), peer, 4));
        let _ = run.status.send(Status::Failed("input gone".into()));
        registry.finish(chunk(1), run.id);
        let _again = started(registry.admit(chunk(1), peer, 4));
        let other = started(registry.admit(chunk(2), peer, 4));
        let _ = other.status.send(Status::Failed("no".into()));
        registry.finish(chunk(2), other.id);
        assert!(registry.status(&chunk(1)).is_some(), "still working");
    }
}
