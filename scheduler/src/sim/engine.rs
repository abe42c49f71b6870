//! The discrete-event loop: virtual time, one event queue, the virtual workers, and the
//! real [`Scheduler`] in the middle.
//!
//! Flow of one copy: the scheduler's `Assign` becomes an `Arrive` at the worker after
//! the input's transfer time; the worker computes its queue on its cores, one chunk
//! per core (`Computed`); the answer travels back (`Answer`) and is fed to the scheduler as
//! `ChunkDone`. `Cancel` drops the copy at the worker (a running one frees the worker).
//! A death stops the worker; a noticed death reaches the scheduler as `PeerLeft`
//! later. Ticks are scheduled at the scheduler's `next_wakeup`.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::time::{Duration, Instant};

use idlegrid_protocol::Cid;

use super::world::World;
use super::SimConfig;
use crate::draw::{pair, unit};
use crate::{Action, ChunkIndex, Event, FailureKind, Outcome, Scheduler};

/// Bytes of a chunk's inputs and of its result on the wire.
const INPUT_BYTES: u64 = 1 << 20;
const RESULT_BYTES: u64 = 256 << 10;

/// Fraction of copies lost to a transient transport error.
const TRANSIENT: f64 = 0.002;

/// Give up after this much virtual time (a stuck job, not a slow one).
const HORIZON: u64 = 30 * 24 * 3600 * 1_000_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum SimEvent {
    Join(u32),
    Die(u32),
    Noticed(u32),
    /// A copy's input reached the worker (token identifies the assignment).
    Arrive {
        peer: u32,
        chunk: ChunkIndex,
        token: u64,
    },
    /// One of the worker's running chunks finished (`run` tells which; an aborted run
    /// is no longer in the worker's list and is ignored).
    Computed {
        peer: u32,
        run: u64,
    },
    Answer {
        peer: u32,
        chunk: ChunkIndex,
        wrong: bool,
    },
    Failed {
        peer: u32,
        chunk: ChunkIndex,
    },
    Tick,
}

#[derive(Default)]
struct Worker {
    alive: bool,
    /// Live assignments: chunk and token; a cancel removes the entry.
    live: Vec<(ChunkIndex, u64)>,
    queue: VecDeque<ChunkIndex>,
    /// Chunks computing now, at most its cores, with their run ids.
    running: Vec<(ChunkIndex, u64)>,
}

/// What a run measured.
#[derive(Clone, Debug, Default)]
pub struct Measured {
    pub makespan: u64,
    pub outcome: Option<Outcome>,
    pub final_results: Vec<Option<Cid>>,
    pub wrong_ever_verified: u64,
    pub honest_banned: u32,
    pub liars_banned: u32,
    pub computed: u64,
    pub events: u64,
    pub scheduler_time: Duration,
    pub wall: Duration,
    pub assignments: u64,
    pub speculative: u64,
    pub requeued: u64,
    pub revoked: u64,
    pub disputes: u64,
    /// Remote results that needed a check.
    pub checks: u64,
    /// Answers each peer gave so far.
    pub answers: Vec<u64>,
    /// For each liar banned: the answers it had given when it was banned.
    pub liar_answers_at_ban: Vec<u64>,
    /// Chunks verified right now (revocations subtract).
    pub verified: u64,
    /// When 50 %, 90 % and 99 % of the chunks were first verified, µs.
    pub milestones: [Option<u64>; 3],
}

/// The correct result of a chunk.
pub fn truth(chunk: ChunkIndex) -> Cid {
    let mut bytes = [0u8; 32];
    bytes[..4].copy_from_slice(&chunk.to_le_bytes());
    Cid(bytes)
}

/// A wrong result, the same for every liar on one host (a Sybil group colludes) and
/// different across hosts.
fn lie(host: u64, chunk: ChunkIndex) -> Cid {
    let mut bytes = [0u8; 32];
    bytes[..4].copy_from_slice(&chunk.to_le_bytes());
    bytes[4..12].copy_from_slice(&host.to_le_bytes());
    bytes[8] = 1;
    Cid(bytes)
}

/// Whether `peer` lies on `chunk`: a fixed hash below its lie rate.
fn lies(seed: u64, peer: u32, chunk: ChunkIndex, rate: f64) -> bool {
    if rate <= 0.0 {
        return false;
    }
    unit(seed ^ pair(peer, chunk)) < rate
}

struct Engine<'a> {
    config: &'a SimConfig,
    world: &'a World,
    sched: Scheduler<u32>,
    queue: BinaryHeap<Reverse<(u64, u64, SimEvent)>>,
    seq: u64,
    now: u64,
    workers: Vec<Worker>,
    next_token: u64,
    tick_at: Option<u64>,
    actions: Vec<Action<u32>>,
    m: Measured,
}

/// Runs one job over the world; the scheduler is built with `sched`.
pub fn run(config: &SimConfig, world: &World, sched: Scheduler<u32>) -> Measured {
    let started = Instant::now();
    let mut engine = Engine {
        config,
        world,
        sched,
        queue: BinaryHeap::new(),
        seq: 0,
        now: 0,
        workers: (0..world.peers.len()).map(|_| Worker::default()).collect(),
        next_token: 0,
        tick_at: None,
        actions: Vec::new(),
        m: Measured {
            final_results: vec![None; world.costs.len()],
            answers: vec![0; world.peers.len()],
            ..Measured::default()
        },
    };
    for (i, p) in world.peers.iter().enumerate() {
        engine.push(p.joins, SimEvent::Join(i as u32));
        if let Some(d) = p.dies {
            engine.push(d, SimEvent::Die(i as u32));
        }
    }
    engine.push(0, SimEvent::Tick);
    while let Some(Reverse((at, _, event))) = engine.queue.pop() {
        if at > HORIZON {
            break;
        }
        engine.now = at;
        engine.step(event);
        if engine.m.outcome.is_some() {
            break;
        }
    }
    let progress = engine.sched.progress();
    let mut m = engine.m;
    m.assignments = progress.assignments;
    m.speculative = progress.speculative;
    m.requeued = progress.requeued;
    m.revoked = progress.revoked;
    m.disputes = progress.disputes;
    m.checks = progress.checks;
    m.wall = started.elapsed();
    m
}

impl Engine<'_> {
    fn push(&mut self, at: u64, event: SimEvent) {
        self.seq += 1;
        self.queue.push(Reverse((at, self.seq, event)));
    }

    fn feed(&mut self, event: Event<u32>) {
        let t = Instant::now();
        self.sched
            .handle(Duration::from_micros(self.now), event, &mut self.actions);
        self.m.scheduler_time += t.elapsed();
        self.m.events += 1;
        let actions = std::mem::take(&mut self.actions);
        for action in &actions {
            self.act(action);
        }
        self.actions = actions;
        self.actions.clear();
        if let Some(next) = self.sched.next_wakeup() {
            let next = (next.as_micros() as u64).max(self.now);
            if self.tick_at.is_none_or(|t| next < t || t < self.now) {
                self.tick_at = Some(next);
                self.push(next, SimEvent::Tick);
            }
        }
    }

    fn step(&mut self, event: SimEvent) {
        match event {
            SimEvent::Join(p) => {
                self.workers[p as usize].alive = true;
                let peer = &self.world.peers[p as usize];
                let slots = peer.cores;
                self.feed(Event::PeerJoined {
                    peer: p,
                    score: peer.score,
                    trusted: peer.trusted,
                    weight: None,
                });
                self.feed(Event::PeerSlots { peer: p, slots });
                self.feed(Event::PeerStanding {
                    peer: p,
                    host: peer.host,
                    vouched: peer.vouched,
                });
            }
            SimEvent::Die(p) => {
                let w = &mut self.workers[p as usize];
                w.alive = false;
                w.live.clear();
                w.queue.clear();
                w.running.clear();
                if let Some(after) = self.world.peers[p as usize].death_noticed_after {
                    self.push(self.now + after, SimEvent::Noticed(p));
                }
            }
            SimEvent::Noticed(p) => self.feed(Event::PeerLeft { peer: p }),
            SimEvent::Arrive { peer, chunk, token } => {
                let w = &mut self.workers[peer as usize];
                if !w.alive || !w.live.contains(&(chunk, token)) {
                    return;
                }
                w.queue.push_back(chunk);
                self.start_next(peer);
            }
            SimEvent::Computed { peer, run } => {
                let w = &mut self.workers[peer as usize];
                let Some(pos) = w.running.iter().position(|r| r.1 == run) else {
                    return;
                };
                let (chunk, _) = w.running.swap_remove(pos);
                w.live.retain(|l| l.0 != chunk);
                self.m.computed += 1;
                let vp = &self.world.peers[peer as usize];
                let wrong = lies(self.config.seed, peer, chunk, vp.lie_rate);
                let back = vp.transfer(RESULT_BYTES);
                self.push(self.now + back, SimEvent::Answer { peer, chunk, wrong });
                self.start_next(peer);
            }
            SimEvent::Answer { peer, chunk, wrong } => {
                self.m.answers[peer as usize] += 1;
                let result = if wrong {
                    lie(self.world.peers[peer as usize].host, chunk)
                } else {
                    truth(chunk)
                };
                self.feed(Event::ChunkDone {
                    peer,
                    chunk,
                    result,
                });
            }
            SimEvent::Failed { peer, chunk } => self.feed(Event::ChunkFailed {
                peer,
                chunk,
                kind: FailureKind::Transport,
            }),
            SimEvent::Tick => {
                if self.tick_at == Some(self.now) {
                    self.tick_at = None;
                }
                self.feed(Event::Tick);
            }
        }
    }

    /// Starts queued chunks while the worker has a free core.
    fn start_next(&mut self, peer: u32) {
        let cores = self.world.peers[peer as usize].cores as usize;
        while self.workers[peer as usize].running.len() < cores {
            let w = &mut self.workers[peer as usize];
            let Some(chunk) = w.queue.pop_front() else {
                return;
            };
            if !w.live.iter().any(|l| l.0 == chunk) {
                continue;
            }
            self.next_token += 1;
            let run = self.next_token;
            w.running.push((chunk, run));
            let took = self.world.peers[peer as usize].compute(self.world.costs[chunk as usize]);
            self.push(self.now + took, SimEvent::Computed { peer, run });
        }
    }

    fn act(&mut self, action: &Action<u32>) {
        match *action {
            Action::Assign { peer, chunk, .. } => {
                let vp = &self.world.peers[peer as usize];
                let w = &mut self.workers[peer as usize];
                if !w.alive {
                    return; // lost in the void: only a deadline will tell
                }
                self.next_token += 1;
                let token = self.next_token;
                w.live.push((chunk, token));
                let there = vp.transfer(INPUT_BYTES);
                let transient = !vp.trusted
                    && lies(
                        self.config.seed ^ 0x5EED,
                        peer,
                        chunk.wrapping_add(token as u32),
                        TRANSIENT,
                    );
                if transient {
                    w.live.retain(|l| l.1 != token);
                    self.push(self.now + 2 * there, SimEvent::Failed { peer, chunk });
                } else {
                    self.push(self.now + there, SimEvent::Arrive { peer, chunk, token });
                }
            }
            Action::Cancel { peer, chunk } => {
                let w = &mut self.workers[peer as usize];
                w.live.retain(|l| l.0 != chunk);
                if let Some(pos) = w.running.iter().position(|r| r.0 == chunk) {
                    w.running.swap_remove(pos);
                    self.start_next(peer);
                }
            }
            Action::Verified { chunk, result, .. } => {
                if result != truth(chunk) {
                    self.m.wrong_ever_verified += 1;
                }
                self.m.final_results[chunk as usize] = Some(result);
                self.m.verified += 1;
                let total = self.world.costs.len() as u64;
                for (slot, pct) in self.m.milestones.iter_mut().zip([50, 90, 99]) {
                    if slot.is_none() && self.m.verified * 100 >= total * pct {
                        *slot = Some(self.now);
                    }
                }
            }
            Action::Revoked { chunk } => {
                self.m.final_results[chunk as usize] = None;
                self.m.verified = self.m.verified.saturating_sub(1);
            }
            Action::PeerBanned { peer, .. } => {
                if self.world.peers[peer as usize].lie_rate > 0.0 {
                    self.m.liars_banned += 1;
                    let answers = self.m.answers[peer as usize];
                    self.m.liar_answers_at_ban.push(answers);
                } else {
                    self.m.honest_banned += 1;
                }
            }
            Action::Confirmed { .. } => {}
            Action::JobComplete => {
                self.m.outcome = Some(Outcome::Complete);
                self.m.makespan = self.now;
            }
            Action::JobFailed { reason } => {
                self.m.outcome = Some(Outcome::Failed(reason));
                self.m.makespan = self.now;
            }
        }
    }
}
