//! Which waiting chunk takes the next free core: turns shared fairly between
//! submitters instead of first come, first served, so one submitter's long queue does
//! not hold back another's chunks.
//!
//! A chunk with its inputs waits here ([`Turns::wait`]) under its submitter. One
//! dispatcher task ([`Turns::dispatch`]) takes a compute slot from the executor
//! whenever some chunk waits, and at that moment hands it to the submitter with the
//! fewest chunks running, then the one served longest ago (a newcomer first), oldest
//! chunk first. The [`Turn`] holds the slot, and counts as running for its submitter,
//! until the kernel has returned. A waiter dropped before its turn (cancelled, handed
//! back) is skipped.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use libp2p::PeerId;
use tokio::sync::{oneshot, Notify, OwnedSemaphorePermit};

use crate::executor::Executor;

/// The queue of chunks waiting for a core. Cloning shares it.
#[derive(Clone, Default)]
pub(super) struct Turns {
    state: Arc<Mutex<State>>,
    /// Wakes the dispatcher when a chunk starts waiting.
    wake: Arc<Notify>,
}

#[derive(Default)]
struct State {
    /// Each submitter's waiting chunks, oldest first.
    waiting: HashMap<PeerId, VecDeque<oneshot::Sender<Turn>>>,
    /// Chunks running per submitter.
    running: HashMap<PeerId, usize>,
    /// When each submitter was last given a core (a count of turns given).
    served: HashMap<PeerId, u64>,
    turns: u64,
}

impl State {
    /// Drops waiters that gave up, and submitters with nothing waiting.
    fn prune(&mut self) {
        self.waiting.retain(|_, queue| {
            queue.retain(|waiter| !waiter.is_closed());
            !queue.is_empty()
        });
    }

    /// The submitter whose turn it is, with its oldest waiting chunk.
    fn next(&mut self) -> Option<(PeerId, oneshot::Sender<Turn>)> {
        self.prune();
        let peer = *self.waiting.keys().min_by_key(|peer| {
            (
                self.running.get(peer).copied().unwrap_or(0),
                self.served.get(peer).copied().unwrap_or(0),
            )
        })?;
        let waiter = self.waiting.get_mut(&peer)?.pop_front()?;
        self.turns += 1;
        self.served.insert(peer, self.turns);
        *self.running.entry(peer).or_default() += 1;
        Some((peer, waiter))
    }

    /// A turn of `peer` ended (its kernel returned, or it was never taken).
    fn ended(&mut self, peer: PeerId) {
        if let Some(count) = self.running.get_mut(&peer) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                self.running.remove(&peer);
                if !self.waiting.contains_key(&peer) {
                    self.served.remove(&peer);
                }
            }
        }
    }
}

/// A chunk's turn at a core: the executor's slot, held (and counted as running for its
/// submitter) until this is dropped.
pub(super) struct Turn {
    /// `None` only once taken back from a waiter that gave up.
    slot: Option<OwnedSemaphorePermit>,
    state: Arc<Mutex<State>>,
    peer: PeerId,
}

impl Drop for Turn {
    fn drop(&mut self) {
        lock(&self.state).ended(self.peer);
    }
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    // Every update leaves the maps consistent: a panicking holder cannot break them.
    state.lock().unwrap_or_else(|e| e.into_inner())
}

/// The dispatcher stopped (the worker service is shutting down).
#[derive(Debug, thiserror::Error)]
#[error("the worker is stopping")]
pub(super) struct Closed;

impl Turns {
    /// Waits for a turn at a core for a chunk of `peer`.
    pub async fn wait(&self, peer: PeerId) -> Result<Turn, Closed> {
        self.enqueue(peer).await.map_err(|_| Closed)
    }

    /// Queues a chunk of `peer`; its turn arrives on the receiver.
    fn enqueue(&self, peer: PeerId) -> oneshot::Receiver<Turn> {
        let (tx, rx) = oneshot::channel();
        lock(&self.state)
            .waiting
            .entry(peer)
            .or_default()
            .push_back(tx);
        self.wake.notify_one();
        rx
    }

    fn anyone_waiting(&self) -> bool {
        let mut state = lock(&self.state);
        state.prune();
        !state.waiting.is_empty()
    }

    /// Hands out the executor's slots to the waiting chunks, in turns, until aborted.
    pub async fn dispatch(self, executor: Executor) {
        loop {
            while !self.anyone_waiting() {
                self.wake.notified().await;
            }
            let Ok(mut slot) = executor.slot().await else {
                return;
            };
            // The turn is decided now that a core is free, not when the wait began: a
            // submitter that arrived meanwhile is considered.
            loop {
                let next = lock(&self.state).next();
                let Some((peer, waiter)) = next else {
                    // Everyone gave up while the slot was awaited: it goes back.
                    break;
                };
                let turn = Turn {
                    slot: Some(slot),
                    state: self.state.clone(),
                    peer,
                };
                match waiter.send(turn) {
                    Ok(()) => break,
                    // Gave up just now: the next one takes the slot (the turn, dropped,
                    // is not counted as running).
                    Err(mut turn) => match turn.slot.take() {
                        Some(taken) => slot = taken,
                        None => break,
                    },
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_newcomer_takes_the_next_core_before_a_long_queue() {
        let executor = Executor::new(1, false).expect("pool");
        let turns = Turns::default();
        let dispatch = tokio::spawn(turns.clone().dispatch(executor));
        let (flood, other) = (PeerId::random(), PeerId::random());
        let wait = Duration::from_secs(10);
        let first = tokio::time::timeout(wait, turns.wait(flood))
            .await
            .expect("the free core")
            .expect("a turn");
        let mut queued: Vec<_> = (0..3).map(|_| turns.enqueue(flood)).collect();
        let gave_up = turns.enqueue(other);
        drop(gave_up);
        let newcomer = turns.enqueue(other);
        drop(first);
        let turn = tokio::time::timeout(wait, newcomer)
            .await
            .expect("the newcomer's turn came")
            .expect("a turn");
        assert!(
            queued[0].try_recv().is_err(),
            "the long queue waits while the newcomer runs"
        );
        drop(turn);
        tokio::time::timeout(wait, &mut queued[0])
            .await
            .expect("then the queue goes on")
            .expect("a turn");
        dispatch.abort();
    }
}
