//! Randomized event storms: after every event, every mirrored index must agree with
//! the state it mirrors, and the job must still finish correctly.

use std::time::Duration;

use super::*;
use crate::chunks::Slot;
use crate::PeerIx;

impl<P: Copy + Eq + std::hash::Hash + Ord + std::fmt::Debug> Scheduler<P> {
    /// Every piece of mirrored bookkeeping agrees with the state it mirrors.
    fn check_invariants(&self) {
        let copies: usize = self.chunks.values().map(|c| c.copies.len()).sum();
        let booked: usize = self.peers.iter().map(|p| p.in_flight.len()).sum();
        assert_eq!(copies, booked, "copies vs peers' in-flight lists");
        assert_eq!(copies as u32, self.progress.in_flight);
        // A chunk without a state that is not fresh is settled.
        let fresh = (0..self.plan_len())
            .filter(|&i| self.queues.pending.fresh_class_of(i).is_some())
            .count();
        let settled_elsewhere = self.plan_len() as usize - fresh - self.chunks.len();
        let verified = self
            .chunks
            .values()
            .filter(|c| c.verified.is_some())
            .count();
        assert_eq!(
            (verified + settled_elsewhere) as u32,
            self.progress.verified + self.done.len() as u32,
            "settled chunks vs progress"
        );
        for (&i, c) in &self.chunks {
            assert!(
                self.queues.pending.fresh_class_of(i).is_none(),
                "chunk {i} is both in play and fresh"
            );
            for (k, copy) in c.copies.iter().enumerate() {
                assert!(
                    !c.copies[..k].iter().any(|o| o.peer == copy.peer),
                    "two copies on one peer"
                );
                let peer = &self.peers[copy.peer as usize];
                assert!(peer.in_flight.contains(&i));
                assert!(!peer.banned, "a banned peer holds a copy");
            }
            for v in &c.votes {
                assert!(
                    !self.peers[v.peer as usize].banned,
                    "a banned peer's vote stands"
                );
            }
            let decision = c.tally(self.rule()).decision.map(|(cid, _)| cid);
            assert_eq!(c.verified, decision, "chunk {i}: verified vs its votes");
            match c.slot {
                Slot::None => {}
                Slot::Pending(class) => assert!(self.queues.pending.entries.contains(&(class, i))),
                Slot::Outstanding(eta) => assert!(self.queues.outstanding.contains(&(eta, i))),
            }
            for p in &self.peers {
                assert!(
                    !p.backs.believed.contains(i) && !p.backs.unbelieved.contains(i),
                    "chunk {i} in play is still noted as retired"
                );
            }
        }
        let slots = self
            .chunks
            .values()
            .filter(|c| c.slot != Slot::None)
            .count();
        assert_eq!(
            slots,
            self.queues.pending.entries.len() + self.queues.outstanding.len()
        );
        for p in self.peers.iter().filter(|p| p.banned) {
            assert!(
                p.backs.is_empty(),
                "a banned peer still backs retired chunks"
            );
        }
        let usable = self.peers.iter().filter(|p| p.usable()).count() as u32;
        assert_eq!(usable, self.usable_peers);
        for (ix, p) in self.peers.iter().enumerate() {
            let key = p.hungry_key.map(|k| (std::cmp::Reverse(k), ix as PeerIx));
            match key {
                Some(key) => assert!(self.queues.hungry.contains(&key)),
                None => assert!(!self.queues.hungry.iter().any(|e| e.1 == ix as PeerIx)),
            }
        }
    }
}

#[test]
fn random_event_storms_keep_the_books_straight_and_finish_correctly() {
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};
    for seed in 0..40u64 {
        let mut rng = StdRng::seed_from_u64(seed);
        let replicas = rng.gen_range(1..=3);
        let config = SchedulerConfig {
            replicas,
            spot_check: if rng.gen_bool(0.5) { 0.3 } else { 0.0 },
            breaker_threshold: rng.gen_range(1..=3),
            breaker_cooldown: secs(5),
            // Storms empty the grid for long spells; that failure has its own test.
            no_peer_grace: secs(365 * 24 * 3600),
            ..SchedulerConfig::default()
        };
        let costs = (0..30).map(|_| rng.gen_range(1..100)).collect();
        let mut h = Harness::pool(config, costs);
        let liars = [5u32, 6];
        let kinds = [
            FailureKind::Timeout,
            FailureKind::Transport,
            FailureKind::Refused,
            FailureKind::BadHash,
        ];
        for _ in 0..600 {
            let peer = rng.gen_range(0..8u32);
            match rng.gen_range(0..10) {
                0 => {
                    h.ev(Event::PeerJoined {
                        peer,
                        score: rng.gen_range(0.5..50.0),
                        trusted: peer == 0,
                        weight: None,
                    });
                }
                1 => {
                    h.ev(Event::PeerLeft { peer });
                }
                2 if !h.working.is_empty() => {
                    let (p, c) = h.working[rng.gen_range(0..h.working.len())];
                    h.fail(p, c, kinds[rng.gen_range(0..kinds.len())]);
                }
                3 => {
                    h.now += Duration::from_millis(rng.gen_range(0..60_000));
                    h.ev(Event::Tick);
                }
                4 => {
                    // Unsolicited or stale answers, honest or not (the trusted
                    // worker is honest by definition).
                    let c = rng.gen_range(0..30);
                    let honest = peer == 0 || rng.gen_bool(0.5);
                    let r = if honest { good(c) } else { lie(peer, c) };
                    h.done(peer, c, r);
                }
                _ if !h.working.is_empty() => {
                    let (p, c) = h.working[rng.gen_range(0..h.working.len())];
                    h.now += Duration::from_millis(rng.gen_range(0..2_000));
                    let r = if liars.contains(&p) {
                        lie(p, c)
                    } else {
                        good(c)
                    };
                    h.done(p, c, r);
                }
                _ => {}
            }
            h.s.check_invariants();
            if h.s.outcome().is_some() {
                break;
            }
        }
        if h.s.outcome().is_none() {
            // The storm is over: everyone but the trusted worker leaves; it finishes.
            h.join_trusted(0, 10.0);
            for p in 1..8 {
                h.ev(Event::PeerLeft { peer: p });
            }
            h.run(&[]);
            h.s.check_invariants();
        }
        assert_eq!(h.s.outcome(), Some(Outcome::Complete), "seed {seed}");
        if replicas >= 2 {
            for c in 0..30 {
                assert_eq!(h.verified_result(c), Some(good(c)), "seed {seed} chunk {c}");
            }
        }
    }
}
