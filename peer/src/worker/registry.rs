//! The chunk registry: every chunk this worker accepted, where each stands, who asked
//! for it, what they may read, and the switch that cancels it.
//!
//! A `Run` is admitted here (or found already known, or refused as busy); the admitted
//! run gets the sending half of its status channel and the receiving half of its cancel
//! switch, and hands both back through [`Registry::finish`] when it ends. Each status
//! sits behind a `watch` channel, so a poll waits on it without holding the registry's
//! lock. Finished statuses are remembered for late polls, the oldest forgotten first.
//!
//! A chunk belongs to the peers that submitted it (two jobs may run the same chunk): only
//! they may poll it, only they may cancel it (it stops once none of them wants it), and
//! only they may read its inputs from this peer while it works, and its result until
//! it is forgotten, through [`Grant`]s the chunk holds. So the grants a worker keeps
//! are bounded by its queue (inputs) and the statuses it remembers (one result each).
//!
//! The queue is shared fairly: while several submitters want chunks here (running,
//! queued, or refused lately), each may hold at most its share of the capacity.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use bytes::Bytes;
use idlegrid_protocol::Cid;
use libp2p::PeerId;
use tokio::sync::watch;

use crate::store::{Grant, Grants};

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
    /// Its submitters cancelled it.
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

    fn result(&self) -> Option<Cid> {
        match self {
            Status::Done { result, .. } => Some(*result),
            _ => None,
        }
    }
}

/// What the submitter of a cancelled chunk reads as its failure.
pub(super) const CANCELLED: &str = "cancelled by its submitter";

/// Most peers one chunk is known to at once: the replicas and speculative copies of a
/// few jobs sharing a chunk (a calibration chunk) stay well below.
pub(super) const MAX_SUBMITTERS: usize = 16;

/// How long a submitter refused as busy still counts as wanting a share of the queue.
const ASKING: Duration = Duration::from_secs(10);

/// Most refused submitters remembered: the oldest is forgotten first.
const MAX_ASKING: usize = 256;

/// A chunk known here.
struct Known {
    /// Who asked for it, first to last; only they may poll or cancel it.
    submitters: Vec<PeerId>,
    status: watch::Receiver<Status>,
    /// Its inputs while it works (emptied when it ends).
    inputs: Vec<Cid>,
    /// Its inputs, readable by its submitters while it works.
    inputs_grant: Option<Grant>,
    /// Its result once done, readable by its submitters until it is forgotten.
    grant: Grant,
    /// Whether the result has been added to `grant`.
    result_granted: bool,
}

impl Known {
    /// The chunk ended: its inputs are no longer readable through it, and every
    /// submitter may read its result, if it has one.
    fn ended(&mut self) {
        self.inputs = Vec::new();
        self.inputs_grant = None;
        self.grant_result();
    }

    fn grant_result(&mut self) {
        if self.result_granted {
            return;
        }
        let Some(result) = self.status.borrow().result() else {
            return;
        };
        for peer in &self.submitters {
            self.grant.add(*peer, result);
        }
        self.result_granted = true;
    }

    /// Adds `peer` as a submitter with what it may read; false if there is no room.
    fn add_submitter(&mut self, peer: PeerId) -> bool {
        if self.submitters.contains(&peer) {
            return true;
        }
        if self.submitters.len() >= MAX_SUBMITTERS {
            return false;
        }
        self.submitters.push(peer);
        if let Some(grant) = self.inputs_grant.as_mut() {
            for cid in &self.inputs {
                grant.add(peer, *cid);
            }
        }
        if self.result_granted {
            if let Some(result) = self.status.borrow().result() {
                self.grant.add(peer, result);
            }
        }
        true
    }
}

/// The way to stop one run of a chunk.
struct Cancel {
    run: u64,
    switch: watch::Sender<bool>,
}

/// What became of a `Run` request.
pub(super) enum Admission {
    /// Known here and not failed: it is answered from its status.
    Known,
    /// Refused: this many chunks are running or queued already (`share`: the most this
    /// submitter may hold while others want chunks run here, when that is what it hit).
    Busy {
        working: usize,
        share: Option<usize>,
    },
    /// Refused: this many submitters want the chunk already.
    Crowded(usize),
    /// A new run of the chunk, to be computed.
    Started(Run),
}

/// One admitted run of a chunk, held by the task that computes it.
pub(super) struct Run {
    /// Tells this run from a later run of the same chunk.
    pub id: u64,
    /// Where the run says how it ended.
    pub status: watch::Sender<Status>,
    /// Turns true once the submitters cancel this run.
    pub cancelled: watch::Receiver<bool>,
}

pub(super) struct Registry {
    known: HashMap<Cid, Known>,
    /// Chunks not finished, each with the switch that stops it.
    cancels: HashMap<Cid, Cancel>,
    next_run: u64,
    /// Finished chunks in completion order, to forget the oldest.
    finished: VecDeque<Cid>,
    /// Chunks accepted and not finished (queued or running).
    working: usize,
    /// Of those, how many each submitter started.
    working_for: HashMap<PeerId, usize>,
    /// Submitters refused as busy lately, with when: they count for the fair share.
    asking: HashMap<PeerId, Instant>,
    /// Finished chunks whose status is kept for late polls.
    remember: usize,
    /// Where the chunks' grants go.
    grants: Grants,
}

impl Registry {
    pub fn new(remember: usize, grants: Grants) -> Registry {
        Registry {
            known: HashMap::new(),
            cancels: HashMap::new(),
            next_run: 0,
            finished: VecDeque::new(),
            working: 0,
            working_for: HashMap::new(),
            asking: HashMap::new(),
            remember,
            grants,
        }
    }

    /// The most chunks `peer` may hold of `capacity` now: all of it while no one else
    /// wants chunks run here, else an even share among everyone who does.
    fn share(&mut self, peer: PeerId, capacity: usize, now: Instant) -> Option<usize> {
        self.asking
            .retain(|_, asked| now.saturating_duration_since(*asked) < ASKING);
        let others = self
            .working_for
            .keys()
            .chain(self.asking.keys())
            .filter(|p| **p != peer)
            .collect::<std::collections::HashSet<_>>()
            .len();
        (others > 0).then(|| capacity.div_ceil(others + 1).max(1))
    }

    fn remember_asking(&mut self, peer: PeerId, now: Instant) {
        if self.asking.len() >= MAX_ASKING && !self.asking.contains_key(&peer) {
            let oldest = self
                .asking
                .iter()
                .min_by_key(|(_, at)| **at)
                .map(|(p, _)| *p);
            if let Some(oldest) = oldest {
                self.asking.remove(&oldest);
            }
        }
        self.asking.insert(peer, now);
    }

    /// Admits a run of `chunk` (naming `inputs`) for `peer` while fewer than `capacity`
    /// chunks are queued or running and `peer` holds less than its fair share. A chunk
    /// already known and not failed is not run again: `peer` joins its submitters. A
    /// chunk that ended without a result (failed or cancelled) is run again: a peer that
    /// could not serve an input must not poison the chunk for everyone, and a failure
    /// in this worker (a full disk) may not repeat.
    pub fn admit(
        &mut self,
        chunk: Cid,
        inputs: &[Cid],
        peer: PeerId,
        capacity: usize,
        now: Instant,
    ) -> Admission {
        if let Some(known) = self.known.get_mut(&chunk) {
            if !known.status.borrow().ended_without_result() {
                return if known.add_submitter(peer) {
                    Admission::Known
                } else {
                    Admission::Crowded(known.submitters.len())
                };
            }
        }
        let share = self.share(peer, capacity, now);
        let holds = self.working_for.get(&peer).copied().unwrap_or(0);
        if self.working >= capacity || share.is_some_and(|share| holds >= share) {
            self.remember_asking(peer, now);
            return Admission::Busy {
                working: self.working,
                share: share.filter(|&share| holds >= share),
            };
        }
        self.asking.remove(&peer);
        let (status, rx) = watch::channel(Status::Working);
        let (switch, cancelled) = watch::channel(false);
        let run = self.next_run;
        self.next_run += 1;
        self.known.insert(
            chunk,
            Known {
                submitters: vec![peer],
                status: rx,
                inputs: inputs.to_vec(),
                inputs_grant: Some(self.grants.grant(peer, inputs.iter().copied())),
                grant: self.grants.empty(),
                result_granted: false,
            },
        );
        self.cancels.insert(chunk, Cancel { run, switch });
        self.working += 1;
        *self.working_for.entry(peer).or_default() += 1;
        Admission::Started(Run {
            id: run,
            status,
            cancelled,
        })
    }

    /// Books the end of run `run` of `chunk`, started for `peer` (its status already
    /// sent): its submitters may now read its result, no longer its inputs.
    pub fn finish(&mut self, chunk: Cid, run: u64, peer: PeerId) {
        self.working = self.working.saturating_sub(1);
        if let Entry::Occupied(mut count) = self.working_for.entry(peer) {
            *count.get_mut() -= 1;
            if *count.get() == 0 {
                count.remove();
            }
        }
        if let Entry::Occupied(cancel) = self.cancels.entry(chunk) {
            if cancel.get().run == run {
                cancel.remove();
            }
        }
        if let Some(known) = self.known.get_mut(&chunk) {
            // Not a later run's entry, still working (a retried failure).
            if !known.status.borrow().is_working() {
                known.ended();
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

    /// `peer` no longer wants `chunk`: if it is one of its submitters it is one no
    /// longer, and once none is left the chunk is forgotten and its run told to stop
    /// (wherever it is: fetching, waiting for a core, or computing). A cancel from
    /// anyone else changes nothing. Says whether it acted.
    pub fn cancel(&mut self, chunk: Cid, peer: PeerId) -> bool {
        let Entry::Occupied(mut known) = self.known.entry(chunk) else {
            return false;
        };
        let submitters = &mut known.get_mut().submitters;
        let Some(at) = submitters.iter().position(|p| *p == peer) else {
            return false;
        };
        submitters.remove(at);
        if !submitters.is_empty() {
            return true;
        }
        known.remove();
        if let Some(cancel) = self.cancels.remove(&chunk) {
            // The run may have ended already and dropped its receiver.
            let _ = cancel.switch.send(true);
        }
        true
    }

    /// The status of `chunk`, if this worker knows it and `peer` submitted it.
    pub fn status(&self, chunk: &Cid, peer: &PeerId) -> Option<watch::Receiver<Status>> {
        self.known
            .get(chunk)
            .filter(|known| known.submitters.contains(peer))
            .map(|known| known.status.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(n: u8) -> Cid {
        Cid::of(&[n])
    }

    fn registry(remember: usize) -> Registry {
        Registry::new(remember, Grants::default())
    }

    fn admit(registry: &mut Registry, n: u8, peer: PeerId, capacity: usize) -> Admission {
        registry.admit(chunk(n), &[chunk(100 + n)], peer, capacity, Instant::now())
    }

    fn started(admission: Admission) -> Run {
        match admission {
            Admission::Started(run) => run,
            Admission::Known => panic!("expected a new run, the chunk was known"),
            Admission::Busy { working, .. } => panic!("expected a new run, busy with {working}"),
            Admission::Crowded(n) => panic!("expected a new run, {n} submitters"),
        }
    }

    fn end(registry: &mut Registry, n: u8, run: Run, peer: PeerId, status: Status) {
        let _ = run.status.send(status);
        registry.finish(chunk(n), run.id, peer);
    }

    #[test]
    fn a_chunk_belongs_to_its_submitters_until_the_last_lets_go() {
        let (submitter, stranger, second) = (PeerId::random(), PeerId::random(), PeerId::random());
        let mut registry = registry(16);
        let run = started(admit(&mut registry, 1, submitter, 4));

        assert!(!registry.cancel(chunk(1), stranger));
        assert!(
            registry.status(&chunk(1), &submitter).is_some(),
            "the status is kept"
        );
        assert!(
            registry.status(&chunk(1), &stranger).is_none(),
            "a stranger cannot poll it"
        );
        assert!(!*run.cancelled.borrow(), "the run goes on");

        // A second job's submitter of the same chunk shares it.
        assert!(matches!(
            admit(&mut registry, 1, second, 4),
            Admission::Known
        ));
        assert!(registry.status(&chunk(1), &second).is_some());
        assert!(registry.cancel(chunk(1), submitter));
        assert!(
            !*run.cancelled.borrow(),
            "the other submitter still wants it"
        );
        assert!(registry.status(&chunk(1), &submitter).is_none());
        assert!(registry.status(&chunk(1), &second).is_some());
        assert!(registry.cancel(chunk(1), second));
        assert!(*run.cancelled.borrow(), "the run is told to stop");
        assert!(registry.status(&chunk(1), &second).is_none());
    }

    #[test]
    fn a_finished_chunk_is_cancelled_only_by_its_submitter() {
        let (submitter, stranger) = (PeerId::random(), PeerId::random());
        let mut registry = registry(16);
        let run = started(admit(&mut registry, 1, submitter, 4));
        end(
            &mut registry,
            1,
            run,
            submitter,
            Status::Failed("no".into()),
        );

        assert!(!registry.cancel(chunk(1), stranger));
        assert!(registry.status(&chunk(1), &submitter).is_some());
        assert!(registry.cancel(chunk(1), submitter));
        assert!(registry.status(&chunk(1), &submitter).is_none());
    }

    #[test]
    fn submitters_read_the_inputs_while_it_works_and_the_result_until_it_is_forgotten() {
        let (submitter, second, stranger) = (PeerId::random(), PeerId::random(), PeerId::random());
        let grants = Grants::default();
        let mut registry = Registry::new(1, grants.clone());
        let (input, result) = (chunk(101), chunk(9));
        let run = started(admit(&mut registry, 1, submitter, 4));
        assert!(grants.allows(&submitter, &input));
        assert!(!grants.allows(&submitter, &result), "no result yet");
        assert!(matches!(
            admit(&mut registry, 1, second, 4),
            Admission::Known
        ));
        assert!(
            grants.allows(&second, &input),
            "a second submitter reads it too"
        );
        let done = Status::Done {
            result,
            len: 1,
            small: None,
        };
        end(&mut registry, 1, run, submitter, done);
        assert!(grants.allows(&submitter, &result) && grants.allows(&second, &result));
        assert!(
            !grants.allows(&submitter, &input) && !grants.allows(&second, &input),
            "a finished chunk's inputs are not read through it"
        );
        let third = PeerId::random();
        assert!(matches!(
            admit(&mut registry, 1, third, 4),
            Admission::Known
        ));
        assert!(grants.allows(&third, &result) && !grants.allows(&third, &input));
        assert!(!grants.allows(&stranger, &input) && !grants.allows(&stranger, &result));
        // Forgotten (the registry remembers one finished chunk): nothing is granted.
        let other = started(admit(&mut registry, 2, submitter, 4));
        end(
            &mut registry,
            2,
            other,
            submitter,
            Status::Failed("no".into()),
        );
        assert!(grants.is_empty(), "nothing is left granted");
    }

    #[test]
    fn a_chunk_that_ended_without_a_result_runs_again() {
        let peer = PeerId::random();
        let mut registry = registry(16);
        for status in [Status::Failed("input gone".into()), Status::Cancelled] {
            let run = started(admit(&mut registry, 1, peer, 4));
            end(&mut registry, 1, run, peer, status);
        }
        let run = started(admit(&mut registry, 1, peer, 4));
        let done = Status::Done {
            result: chunk(9),
            len: 1,
            small: None,
        };
        end(&mut registry, 1, run, peer, done);
        assert!(matches!(admit(&mut registry, 1, peer, 4), Admission::Known));
    }

    #[test]
    fn chunks_beyond_capacity_are_refused_until_one_finishes() {
        let peer = PeerId::random();
        let mut registry = registry(16);
        let first = started(admit(&mut registry, 1, peer, 2));
        let _second = started(admit(&mut registry, 2, peer, 2));
        assert!(matches!(
            admit(&mut registry, 3, peer, 2),
            Admission::Busy {
                working: 2,
                share: None
            }
        ));
        end(&mut registry, 1, first, peer, Status::Failed("done".into()));
        started(admit(&mut registry, 3, peer, 2));
    }

    /// One submitter may fill the queue alone; once another asks, it gets no more than
    /// its share, so the room that comes free goes to the other.
    #[test]
    fn a_submitter_holds_no_more_than_its_share_once_another_asks() {
        let (flood, other) = (PeerId::random(), PeerId::random());
        let mut registry = registry(16);
        let mut runs: Vec<(u8, Run)> = (1..=4)
            .map(|n| (n, started(admit(&mut registry, n, flood, 4))))
            .collect();
        assert!(matches!(
            admit(&mut registry, 50, other, 4),
            Admission::Busy { share: None, .. }
        ));
        let (n, run) = runs.remove(0);
        end(&mut registry, n, run, flood, Status::Failed("done".into()));
        assert!(
            matches!(
                admit(&mut registry, 5, flood, 4),
                Admission::Busy { share: Some(2), .. }
            ),
            "over its share while the other waits"
        );
        started(admit(&mut registry, 50, other, 4));
        let (n, run) = runs.remove(0);
        end(&mut registry, n, run, flood, Status::Failed("done".into()));
        assert!(
            matches!(admit(&mut registry, 5, flood, 4), Admission::Busy { .. }),
            "still over: it holds 2 of its 2"
        );
        started(admit(&mut registry, 51, other, 4));
    }

    #[test]
    fn the_oldest_finished_status_is_forgotten_first() {
        let peer = PeerId::random();
        let mut registry = registry(2);
        for n in 1..=3 {
            let run = started(admit(&mut registry, n, peer, 4));
            end(&mut registry, n, run, peer, Status::Failed("done".into()));
        }
        assert!(registry.status(&chunk(1), &peer).is_none());
        assert!(registry.status(&chunk(2), &peer).is_some());
        assert!(registry.status(&chunk(3), &peer).is_some());
    }

    #[test]
    fn a_chunk_started_again_is_not_forgotten_while_it_works() {
        let peer = PeerId::random();
        let mut registry = registry(1);
        let run = started(admit(&mut registry, 1, peer, 4));
        end(
            &mut registry,
            1,
            run,
            peer,
            Status::Failed("input gone".into()),
        );
        let _again = started(admit(&mut registry, 1, peer, 4));
        let other = started(admit(&mut registry, 2, peer, 4));
        end(&mut registry, 2, other, peer, Status::Failed("no".into()));
        assert!(registry.status(&chunk(1), &peer).is_some(), "still working");
    }
}
