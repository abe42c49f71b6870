//! Ping liveness: each connection is pinged every `NetConfig::ping_interval`; an
//! answer records the round trip in the peer book and is published as
//! [`PeerEvent::Pinged`] when it moved enough to matter, and a peer that answered once
//! and then stays silent for one interval plus the ping timeout is published as
//! [`PeerEvent::Unresponsive`], once per silence. Whoever runs a job listens (its
//! scheduler's breakers and deadlines): libp2p's ping does not close the connection on
//! failure, so a frozen peer would otherwise only show when a request times out.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use libp2p::{ping, PeerId};
use tokio::sync::broadcast;

use super::peers::PeerBook;
use super::{NetConfig, PeerEvent};

pub(super) struct Liveness {
    /// When each connected peer last answered a ping, and whether its silence since
    /// has been reported. Only peers that answered once are watched.
    pongs: HashMap<PeerId, (Instant, bool)>,
    /// The RTT last published per peer: a new one is published only when it moved
    /// (see `rtt_moved`), so pings do not flood the event channel and make a slow
    /// subscriber miss the events that matter.
    published_rtt: HashMap<PeerId, Duration>,
    /// Silence after which a peer is reported unresponsive: one ping interval plus
    /// the ping timeout.
    silence: Duration,
    ping_interval: Duration,
    events: broadcast::Sender<PeerEvent>,
}

impl Liveness {
    pub(super) fn new(config: &NetConfig, events: broadcast::Sender<PeerEvent>) -> Self {
        Liveness {
            pongs: HashMap::new(),
            published_rtt: HashMap::new(),
            silence: config.ping_interval + config.ping_timeout,
            ping_interval: config.ping_interval,
            events,
        }
    }

    /// How often the event loop calls [`Liveness::check_silence`].
    pub(super) fn check_interval(&self) -> Duration {
        self.ping_interval.max(Duration::from_millis(50))
    }

    /// A ping to `peer` was answered or failed.
    pub(super) fn on_ping(&mut self, book: &mut PeerBook, event: ping::Event) {
        let ping::Event { peer, result, .. } = event;
        let event = match result {
            Ok(rtt) => {
                book.set_rtt(&peer, rtt);
                self.pongs.insert(peer, (Instant::now(), false));
                let last = self.published_rtt.get(&peer).copied();
                if !last.is_none_or(|last| rtt_moved(last, rtt)) {
                    return;
                }
                self.published_rtt.insert(peer, rtt);
                PeerEvent::Pinged { peer, rtt }
            }
            Err(e) => {
                // Reported once per silence (see `check_silence`).
                match self.pongs.get_mut(&peer) {
                    Some((_, reported)) if *reported => return,
                    Some((_, reported)) => *reported = true,
                    None => {}
                }
                tracing::info!("peer {peer} did not answer a ping: {e}");
                PeerEvent::Unresponsive {
                    peer,
                    reason: e.to_string(),
                }
            }
        };
        let _ = self.events.send(event);
    }

    /// Reports peers whose pings have gone unanswered for too long. libp2p's ping
    /// keeps its first failure to itself and then waits out a 10 s stream negotiation
    /// before it reports one, so the silence is measured here from its answers.
    pub(super) fn check_silence(&mut self) {
        let now = Instant::now();
        let mut silent = Vec::new();
        for (peer, (last, reported)) in &mut self.pongs {
            let quiet = now.saturating_duration_since(*last);
            if !*reported && quiet > self.silence {
                *reported = true;
                silent.push((*peer, quiet));
            }
        }
        for (peer, quiet) in silent {
            tracing::info!("peer {peer} answered no ping for {quiet:.1?}");
            let _ = self.events.send(PeerEvent::Unresponsive {
                peer,
                reason: format!("no ping answered for {quiet:.1?}"),
            });
        }
    }

    /// The last connection to `peer` closed: nothing left to watch.
    pub(super) fn forget(&mut self, peer: &PeerId) {
        self.pongs.remove(peer);
        self.published_rtt.remove(peer);
    }
}

/// Whether a ping's RTT differs enough from the one last published to publish it:
/// by a quarter and by more than a millisecond (LAN round trips jitter by fractions of
/// one, which no deadline cares about).
fn rtt_moved(last: Duration, now: Duration) -> bool {
    let delta = last.abs_diff(now);
    delta > Duration::from_millis(1) && delta.as_secs_f64() > last.as_secs_f64() / 4.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_rtts_that_moved_are_published() {
        let ms = Duration::from_millis;
        let us = Duration::from_micros;
        assert!(
            !rtt_moved(us(300), us(900)),
            "LAN jitter under a millisecond"
        );
        assert!(!rtt_moved(ms(100), ms(120)), "a fifth is not enough");
        assert!(rtt_moved(ms(100), ms(130)));
        assert!(rtt_moved(ms(100), ms(70)));
        assert!(rtt_moved(us(500), ms(5)));
    }
}
