//! Peers coming and going, time passing, and the end of the job: joins and leaves,
//! deadline expiry, breaker cool-downs, the no-peer grace, and the completion check.

use std::cmp::Reverse;
use std::fmt::Debug;
use std::hash::Hash;

use super::breaker::Tripped;
use super::peers::PeerState;
use super::types::{Action, JobFailure};
use super::{from_micros, to_micros, Outcome, PeerIx, Scheduler};

impl<P: Copy + Eq + Hash + Ord + Debug> Scheduler<P> {
    /// A peer joined (or rejoined with a fresh benchmark).
    pub(super) fn on_joined(&mut self, key: P, score: f64, trusted: bool, weight: Option<f64>) {
        let ix = match self.index.get(&key) {
            Some(&ix) => {
                let was_usable = self.peers[ix as usize].usable();
                self.peers[ix as usize].rejoin(score, weight);
                self.usable_changed(ix, was_usable);
                ix
            }
            None => {
                let ix = self.peers.len() as PeerIx;
                // A host of its own until `PeerStanding` says otherwise (keys far above
                // any a caller would derive from an address).
                let host = u64::MAX - u64::from(ix);
                self.peers
                    .push(PeerState::new(key, host, score, trusted, weight));
                self.index.insert(key, ix);
                if trusted {
                    self.trusted_peers.push(ix);
                }
                self.usable_changed(ix, false);
                ix
            }
        };
        self.refresh_peer(ix);
    }

    /// What the submitter knows of a peer from outside the job: its host and record.
    pub(super) fn on_standing(&mut self, key: P, host: u64, vouched: u32) {
        let Some(&ix) = self.index.get(&key) else {
            return;
        };
        let peer = &mut self.peers[ix as usize];
        if !peer.trusted {
            peer.host = host;
            peer.vouched = vouched;
        }
    }

    /// A peer told how many chunks it runs side by side.
    pub(super) fn on_slots(&mut self, key: P, slots: u32) {
        let Some(&ix) = self.index.get(&key) else {
            return;
        };
        self.peers[ix as usize].slots = slots.max(1);
        self.refresh_peer(ix);
    }

    /// A peer is gone: its copies go back to the queue (no breaker failure — leaving
    /// is not misbehaving, and a peer that comes back starts clean of it).
    pub(super) fn on_left(&mut self, key: P, out: &mut Vec<Action<P>>) {
        let Some(&ix) = self.index.get(&key) else {
            return;
        };
        let was_usable = self.peers[ix as usize].usable();
        self.peers[ix as usize].connected = false;
        self.usable_changed(ix, was_usable);
        self.withdraw_all(ix, false, out);
        // Its late answers are lost with the connection.
        self.stop_awaiting_everywhere(ix);
        self.refresh_peer(ix);
    }

    /// A ping answer: the peer's latest round trip (it sets its deadline floor).
    pub(super) fn on_rtt(&mut self, key: P, rtt: std::time::Duration) {
        if let Some(&ix) = self.index.get(&key) {
            self.peers[ix as usize].rtt = Some(to_micros(rtt));
        }
    }

    /// A ping went unanswered on an open connection: the breaker opens now and the
    /// peer's copies go back to the queue (see [`Event::PeerUnresponsive`]).
    ///
    /// [`Event::PeerUnresponsive`]: super::types::Event::PeerUnresponsive
    pub(super) fn on_unresponsive(&mut self, key: P, out: &mut Vec<Action<P>>) {
        let Some(&ix) = self.index.get(&key) else {
            return;
        };
        let now = self.now;
        let peer = &mut self.peers[ix as usize];
        if peer.trusted {
            return;
        }
        if let Tripped::OpenUntil(until) = peer.breaker.trip(now, &self.config) {
            peer.failures += 1;
            self.queues.cooldowns.push(Reverse((until, ix)));
            self.withdraw_all(ix, true, out);
        }
        self.refresh_peer(ix);
    }

    /// Time passed: expire deadlines, end cool-downs, and give up if peerless too long.
    pub(super) fn on_tick(&mut self, out: &mut Vec<Action<P>>) {
        let now = self.now;
        while let Some(&Reverse((deadline, chunk, id))) = self.queues.deadlines.peek() {
            if deadline > now {
                break;
            }
            self.queues.deadlines.pop();
            let Some(copy) = self
                .chunks
                .get(&chunk)
                .and_then(|state| state.copies.iter().find(|c| c.id == id))
                .copied()
            else {
                continue;
            };
            let ix = copy.peer;
            if self.drop_copy(ix, chunk).is_none() {
                continue;
            }
            self.peers[ix as usize].record_timeout(chunk, copy.assigned);
            out.push(Action::Cancel {
                peer: self.peers[ix as usize].key,
                chunk,
            });
            if let Some(state) = self.chunks.get_mut(&chunk) {
                state.last_failed = Some(ix);
            }
            self.count_failure(ix, out);
            self.requeue(chunk);
        }
        while let Some(&Reverse((until, ix))) = self.queues.cooldowns.peek() {
            if until > now {
                break;
            }
            self.queues.cooldowns.pop();
            if self.peers[ix as usize].breaker.poll(now) {
                self.refresh_peer(ix);
            }
        }
        if let Some(since) = self.peerless_since {
            let waited = now.saturating_sub(since);
            if waited >= to_micros(self.config.no_peer_grace) {
                let remaining = self.progress.total - self.progress.verified;
                self.fail(
                    JobFailure::NoPeers {
                        waited: from_micros(waited),
                        remaining,
                    },
                    out,
                );
            }
        }
    }

    /// Keeps the usable-peer counts (and the peerless clock) right after a peer's
    /// connected/banned state changed.
    pub(super) fn usable_changed(&mut self, ix: PeerIx, was_usable: bool) {
        let peer = &self.peers[ix as usize];
        let is_usable = peer.usable();
        let trusted = peer.trusted;
        if is_usable == was_usable {
            return;
        }
        // A trusted worker that only checks computes no ordinary chunk: it does not
        // keep a job without peers alive.
        let computes = u32::from(!(trusted && self.config.trusted_checks_only));
        if is_usable {
            self.usable_peers += computes;
            self.usable_trusted += u32::from(trusted);
        } else {
            self.usable_peers -= computes;
            self.usable_trusted -= u32::from(trusted);
        }
        self.peerless_since = if self.usable_peers == 0 {
            Some(self.peerless_since.unwrap_or(self.now))
        } else {
            None
        };
    }

    /// Completes the job once every chunk is verified and every spot check done (spot
    /// checks are waived if no trusted worker is left to do them).
    pub(super) fn check_end(&mut self, out: &mut Vec<Action<P>>) {
        if self.outcome.is_some() || self.progress.verified < self.progress.total {
            return;
        }
        if self.progress.spot_checks_pending > 0 && self.usable_trusted > 0 {
            return;
        }
        // Nothing is needed any more: stop every copy still out.
        for ix in 0..self.peers.len() as PeerIx {
            let chunks = self.peers[ix as usize].in_flight.clone();
            for chunk in chunks {
                if self.drop_copy(ix, chunk).is_some() {
                    out.push(Action::Cancel {
                        peer: self.peers[ix as usize].key,
                        chunk,
                    });
                }
            }
        }
        self.outcome = Some(Outcome::Complete);
        out.push(Action::JobComplete);
    }

    /// Pops timer entries that no longer mean anything, so that `next_wakeup` is exact.
    pub(super) fn trim_stale(&mut self) {
        while let Some(&Reverse((_, chunk, id))) = self.queues.deadlines.peek() {
            if self
                .chunks
                .get(&chunk)
                .is_some_and(|state| state.copies.iter().any(|c| c.id == id))
            {
                break;
            }
            self.queues.deadlines.pop();
        }
        while let Some(&Reverse((until, ix))) = self.queues.cooldowns.peek() {
            if self.peers[ix as usize].breaker.open_until() == Some(until) {
                break;
            }
            self.queues.cooldowns.pop();
        }
    }
}
