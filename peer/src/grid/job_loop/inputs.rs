//! The job loop's inputs: reports of probes, benchmarks and chunk runs, the network's
//! peer events, and the ticks that redraw the display and probe peers again.

use std::time::Instant;

use idlegrid_scheduler::{Event, FailureKind};
use libp2p::PeerId;

use super::{JobLoop, Phase};
use crate::grid::runs::Report;
use crate::grid::standing::{ban_reason, host_key};
use crate::net::PeerEvent;

impl JobLoop<'_> {
    /// A peer cannot be used now (`retry`: ask it again later).
    pub(super) fn report_unusable(&mut self, peer: PeerId, why: String, retry: bool) {
        self.book.probing.remove(&peer);
        // Said once per peer and reason, not at every probe again.
        if self.book.unusable.get(&peer) != Some(&why) {
            tracing::info!("not using peer {peer} for now: {why}");
        }
        self.book.unusable.insert(peer, why);
        if retry {
            self.book
                .reprobe_at
                .insert(peer, Instant::now() + self.config.reprobe_after);
        }
    }

    /// The network host `peer` connects from, as a key ([`host_key`]).
    pub(super) async fn host_of(&self, peer: PeerId) -> u64 {
        let entries = self.node.client.peers().await.unwrap_or_default();
        let addr = entries
            .into_iter()
            .find(|e| e.peer == Some(peer))
            .and_then(|e| e.connected_from);
        host_key(peer, addr.as_ref())
    }

    pub(super) async fn on_report(&mut self, report: Report) {
        match report {
            Report::Ready { peer, score, slots } => {
                tracing::debug!("peer {peer} is ready: {score:.0} units/s, {slots} slots");
                let host = self.host_of(peer).await;
                self.book.probing.remove(&peer);
                self.book.unusable.remove(&peer);
                self.book.reprobe_at.remove(&peer);
                self.book.scores.insert(peer, score);
                self.book.joined.insert(peer);
                let join = Event::PeerJoined {
                    peer,
                    score,
                    trusted: false,
                    weight: self.book.weight_of(&self.config, peer),
                };
                let slots = Event::PeerSlots {
                    peer,
                    slots: slots.max(1),
                };
                let standing = Event::PeerStanding {
                    peer,
                    host,
                    vouched: self.trust.in_a_row(&peer),
                };
                self.join([join, slots, standing]);
            }
            Report::Unusable { peer, why, retry } => self.report_unusable(peer, why, retry),
            Report::Done {
                peer,
                chunk,
                result,
                bytes,
                received,
            } => {
                tracing::trace!(
                    "{:.3} s: chunk {} from {peer}",
                    self.started.elapsed().as_secs_f64(),
                    chunk
                );
                self.runs.ended(peer, chunk);
                *self.book.received.entry(peer).or_default() += received;
                self.results.answered(chunk as usize, result, bytes);
                self.handle(Event::ChunkDone {
                    peer,
                    chunk,
                    result,
                });
            }
            Report::Failed {
                peer,
                chunk,
                kind,
                why,
            } => {
                self.runs.ended(peer, chunk);
                tracing::info!("chunk {chunk} failed on {peer}: {kind:?}: {why}");
                if kind == FailureKind::Kernel {
                    self.kernel_errors.insert(chunk, why);
                }
                self.handle(Event::ChunkFailed { peer, chunk, kind });
            }
        }
    }

    pub(super) fn on_peer_event(&mut self, event: PeerEvent) {
        let dispatching = matches!(self.phase, Phase::Dispatching { .. });
        match event {
            PeerEvent::Discovered { peer, source } => {
                self.book.found_by.entry(peer).or_default().insert(source);
                self.probe(peer);
            }
            PeerEvent::Identified {
                peer,
                compatible: true,
            } => self.probe(peer),
            PeerEvent::Identified { .. } => {}
            PeerEvent::Disconnected { peer } => {
                if !self.book.joined.remove(&peer) {
                    return;
                }
                match &mut self.phase {
                    Phase::Gathering { joins } => joins.retain(|e| {
                        !matches!(e,
                            Event::PeerJoined { peer: p, .. }
                            | Event::PeerSlots { peer: p, .. }
                            | Event::PeerStanding { peer: p, .. }
                                if *p == peer)
                    }),
                    Phase::Dispatching { .. } => self.handle(Event::PeerLeft { peer }),
                }
            }
            PeerEvent::Pinged { peer, rtt } => {
                if dispatching && self.book.joined.contains(&peer) {
                    self.handle(Event::PeerRtt { peer, rtt });
                }
            }
            PeerEvent::Unresponsive { peer, reason } => {
                if dispatching && self.book.joined.contains(&peer) {
                    self.progress.println(&format!(
                        "peer {peer} stopped answering pings ({reason}): its chunks go to others"
                    ));
                    self.handle(Event::PeerUnresponsive { peer });
                }
            }
        }
    }

    /// Redraws the progress display and probes again the peers whose time has come.
    pub(super) fn on_tick(&mut self) {
        if let Phase::Dispatching { sched, .. } = &self.phase {
            self.progress.update(sched, &self.book);
        }
        self.publish(false);
        for peer in self.book.due_for_reprobe(Instant::now()) {
            self.probe(peer);
        }
    }

    /// Probes and benchmarks a candidate; a peer banned by an earlier job is not asked
    /// (said once, with the evidence).
    pub(super) fn probe(&mut self, peer: PeerId) {
        if let Some(ban) = self.trust.ban_of(&peer) {
            let why = ban_reason(ban);
            self.report_unusable(peer, why, false);
            return;
        }
        self.book
            .start_probe(self.node, &self.job, &self.config, &self.reports, peer);
    }
}
