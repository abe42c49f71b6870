//! The peer book: what this peer knows of every other ([`PeerEntry`]: addresses, how it
//! was found, what identify said, whether and how it is connected), and the open
//! connections to each. Discovery (mDNS, the DHT, the command line, a peer that dialled
//! us), identify and the swarm's connection events write it; `peers` commands, requests
//! (the addresses to send on) and the NAT part (relayed connections) read it. Each
//! change others need to hear of is published as a [`PeerEvent`].
//!
//! Every source can name any number of peers and addresses, so the book is bounded: at
//! most [`MAX_PEERS`] peers (a new one pushes out the peer not connected that was heard
//! of longest ago; a connected peer is never pushed out) and [`MAX_ADDRS`] addresses
//! per peer (the most recently heard of, and the one a connection was made on). The
//! strings identify brings are made printable as they come in.

use std::collections::HashMap;

use idlegrid_protocol::printable;
use libp2p::core::ConnectedPoint;
use libp2p::swarm::ConnectionId;
use libp2p::{identify, Multiaddr, PeerId};
use tokio::sync::broadcast;

use super::swarm::PeerSwarm;
use super::{PeerEntry, PeerEvent, Route, Source};

/// Peers the book holds at most: four times the default connection limit, room for an
/// office grid and the DHT neighbours around it. Only while more peers than this are
/// connected at once does the book hold more (every connected one).
pub(super) const MAX_PEERS: usize = 1024;

/// Addresses kept per peer. A peer lists as many as it likes in identify and mDNS and
/// the DHT add theirs; a handful covers its interfaces, TCP and QUIC, and a relayed one.
pub(super) const MAX_ADDRS: usize = 8;

/// One peer's entry and what the bounds go by.
struct Known {
    entry: PeerEntry,
    /// When it was last heard of (the book's clock): the oldest goes first.
    seen: u64,
    /// The address we last opened a connection on: it has worked, so it stays while
    /// newer, unproven ones come and go.
    confirmed: Option<Multiaddr>,
}

pub(super) struct PeerBook {
    book: HashMap<PeerId, Known>,
    /// Counts every time a peer is heard of; orders the peers for eviction.
    clock: u64,
    /// Open connections per peer, and whether each goes through a relay.
    connections: HashMap<PeerId, HashMap<ConnectionId, bool>>,
    events: broadcast::Sender<PeerEvent>,
}

impl PeerBook {
    pub(super) fn new(events: broadcast::Sender<PeerEvent>) -> Self {
        PeerBook {
            book: HashMap::new(),
            clock: 0,
            connections: HashMap::new(),
            events,
        }
    }

    /// Every peer known, for the `peers` command.
    pub(super) fn list(&self) -> Vec<PeerEntry> {
        self.book.values().map(|k| k.entry.clone()).collect()
    }

    pub(super) fn get(&self, peer: &PeerId) -> Option<&PeerEntry> {
        self.book.get(peer).map(|k| &k.entry)
    }

    /// The addresses known of `peer`, to send a request on.
    pub(super) fn addrs(&self, peer: &PeerId) -> Vec<Multiaddr> {
        self.get(peer).map(|e| e.addrs.clone()).unwrap_or_default()
    }

    /// `peer`'s entry, marked as heard of now; a new one is made if there is room (or
    /// room is made, see [`PeerBook::make_room`]) or `connected` says it must be.
    fn touch(&mut self, peer: PeerId, connected: bool) -> Option<&mut Known> {
        if !self.book.contains_key(&peer) && !self.make_room() && !connected {
            tracing::debug!("not remembering peer {peer}: the peer book is full");
            return None;
        }
        self.clock += 1;
        let seen = self.clock;
        let known = self.book.entry(peer).or_insert_with(|| Known {
            entry: PeerEntry {
                peer: Some(peer),
                ..Default::default()
            },
            seen,
            confirmed: None,
        });
        known.seen = seen;
        Some(known)
    }

    /// Whether a new peer fits, after forgetting the peer not connected that was heard
    /// of longest ago if the book is full.
    fn make_room(&mut self) -> bool {
        if self.book.len() < MAX_PEERS {
            return true;
        }
        let oldest = self
            .book
            .iter()
            .filter(|(_, k)| !k.entry.connected)
            .min_by_key(|(_, k)| k.seen)
            .map(|(peer, _)| *peer);
        match oldest {
            Some(peer) => {
                self.book.remove(&peer);
                tracing::trace!("forgot peer {peer} to make room in the peer book");
                true
            }
            None => false,
        }
    }

    /// Records that `peer` is at `addr`, found by `source`; publishes it if new.
    pub(super) fn learn(
        &mut self,
        swarm: &mut PeerSwarm,
        peer: PeerId,
        addr: Option<Multiaddr>,
        source: Source,
    ) {
        if peer == *swarm.local_peer_id() {
            return;
        }
        let (new_source, kept) = self.record(peer, addr.clone(), source);
        if let (Some(addr), true) = (addr, kept) {
            swarm.add_peer_address(peer, addr);
        }
        if new_source {
            let _ = self.events.send(PeerEvent::Discovered { peer, source });
        }
    }

    /// The book's part of [`PeerBook::learn`]: whether `source` is new for `peer`, and
    /// whether `addr` was kept.
    fn record(&mut self, peer: PeerId, addr: Option<Multiaddr>, source: Source) -> (bool, bool) {
        let Some(known) = self.touch(peer, false) else {
            return (false, false);
        };
        let new_source = known.entry.sources.insert(source);
        let kept = addr.is_some_and(|addr| remember_addr(known, peer, addr));
        (new_source, kept)
    }

    /// mDNS no longer sees `peer` at these addresses.
    pub(super) fn on_mdns_expired(&mut self, gone: Vec<(PeerId, Multiaddr)>) {
        for (peer, addr) in gone {
            if let Some(known) = self.book.get_mut(&peer) {
                known.entry.addrs.retain(|a| a != &addr);
                if known.confirmed.as_ref() == Some(&addr) {
                    known.confirmed = None;
                }
            }
        }
    }

    /// Records what identify told of `peer` (its strings made printable) and publishes
    /// whether it is one of ours.
    pub(super) fn on_identified(&mut self, peer: PeerId, info: identify::Info) {
        // identify comes over a connection, so the peer is kept whatever the bound.
        let Some(known) = self.touch(peer, true) else {
            return;
        };
        let entry = &mut known.entry;
        entry.agent = Some(printable(&info.agent_version).into_owned());
        entry.protocol_version = Some(printable(&info.protocol_version).into_owned());
        entry.protocols = info
            .protocols
            .iter()
            .map(|p| printable(p.as_ref()).into_owned())
            .collect();
        let compatible = entry.is_compatible();
        if !compatible {
            tracing::info!(
                "skipping peer {peer}: agent {:?}, protocol {:?} (incompatible)",
                entry.agent,
                entry.protocol_version
            );
        }
        // Ahead of the addresses heard of before, in the peer's own order.
        for addr in info.listen_addrs.into_iter().take(MAX_ADDRS).rev() {
            remember_addr(known, peer, addr);
        }
        let _ = self.events.send(PeerEvent::Identified { peer, compatible });
    }

    /// Hole punching gave a direct connection to `peer`.
    pub(super) fn set_hole_punched(&mut self, peer: &PeerId) {
        if let Some(known) = self.book.get_mut(peer) {
            known.entry.hole_punched = true;
        }
    }

    /// The last ping round trip to `peer`.
    pub(super) fn set_rtt(&mut self, peer: &PeerId, rtt: std::time::Duration) {
        if let Some(known) = self.book.get_mut(peer) {
            known.entry.rtt = Some(rtt);
        }
    }

    /// A connection to `peer` opened; a peer not known before is published as found.
    pub(super) fn on_connected(
        &mut self,
        peer: PeerId,
        connection: ConnectionId,
        endpoint: &ConnectedPoint,
    ) {
        let relayed = endpoint.is_relayed();
        self.connections
            .entry(peer)
            .or_default()
            .insert(connection, relayed);
        let addr = endpoint.get_remote_address().clone();
        let dialer = endpoint.is_dialer();
        let known_before = self.book.contains_key(&peer);
        let Some(known) = self.touch(peer, true) else {
            return;
        };
        known.entry.connected = true;
        known.entry.connected_from = Some(addr.clone());
        if dialer && (!known_before || known.entry.addrs.contains(&addr)) {
            // Where we reached it: proven to work, kept first.
            known.confirmed = Some(addr.clone());
            remember_addr(known, peer, addr);
        }
        if !known_before {
            // We only dial unknown peers on the DHT's behalf (its queries
            // connect to the peers it learns of); a peer that dialled us found
            // us itself. Either way identify will tell what it is.
            let source = if dialer { Source::Dht } else { Source::Given };
            known.entry.sources.insert(source);
            let _ = self.events.send(PeerEvent::Discovered { peer, source });
        }
        self.update_route(peer);
    }

    /// A connection to `peer` closed, `remaining` are still open; the last one's end
    /// is published.
    pub(super) fn on_closed(&mut self, peer: PeerId, connection: ConnectionId, remaining: u32) {
        if let Some(connections) = self.connections.get_mut(&peer) {
            connections.remove(&connection);
        }
        if remaining == 0 {
            self.connections.remove(&peer);
        }
        if let Some(known) = self.book.get_mut(&peer) {
            known.entry.connected = remaining > 0;
        }
        self.update_route(peer);
        if remaining == 0 {
            let _ = self.events.send(PeerEvent::Disconnected { peer });
        }
    }

    /// The open connections to `peer` that go through a relay.
    pub(super) fn relayed_connections(&self, peer: &PeerId) -> Vec<ConnectionId> {
        self.connections
            .get(peer)
            .map(|c| c.iter().filter(|(_, r)| **r).map(|(id, _)| *id).collect())
            .unwrap_or_default()
    }

    /// Direct if any connection to `peer` is, relayed if all are, none if there is none.
    fn update_route(&mut self, peer: PeerId) {
        let route = match self.connections.get(&peer) {
            Some(c) if c.values().any(|relayed| !relayed) => Some(Route::Direct),
            Some(c) if !c.is_empty() => Some(Route::Relayed),
            _ => None,
        };
        if let Some(Known { entry, .. }) = self.book.get_mut(&peer) {
            entry.route = match route {
                Some(Route::Direct) if entry.hole_punched => Some(Route::HolePunched),
                other => other,
            };
        }
    }
}

/// Puts `addr` first in `peer`'s addresses (it is the latest heard of) and drops the
/// oldest past [`MAX_ADDRS`], never the confirmed one. An address whose text holds a
/// control character is no address a peer really listens on: it is not kept (it would
/// reach `idlegrid peers` and the logs). Returns whether `addr` was kept.
fn remember_addr(known: &mut Known, peer: PeerId, addr: Multiaddr) -> bool {
    if matches!(printable(&addr.to_string()), std::borrow::Cow::Owned(_)) {
        tracing::debug!("peer {peer} gave an address that cannot be printed; not kept");
        return false;
    }
    let addrs = &mut known.entry.addrs;
    addrs.retain(|a| a != &addr);
    addrs.insert(0, addr);
    while addrs.len() > MAX_ADDRS {
        let last_unconfirmed = addrs
            .iter()
            .rposition(|a| Some(a) != known.confirmed.as_ref())
            .unwrap_or(addrs.len() - 1);
        addrs.remove(last_unconfirmed);
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use libp2p::core::{transport::PortUse, Endpoint};
    use libp2p::{identity, StreamProtocol};

    fn book() -> PeerBook {
        PeerBook::new(broadcast::channel(16).0)
    }

    fn addr(i: usize) -> Multiaddr {
        format!(
            "/ip4/10.{}.{}.{}/tcp/4001",
            i >> 16 & 255,
            i >> 8 & 255,
            i & 255
        )
        .parse()
        .unwrap()
    }

    fn dialled(address: Multiaddr) -> ConnectedPoint {
        ConnectedPoint::Dialer {
            address,
            role_override: Endpoint::Dialer,
            port_use: PortUse::Reuse,
        }
    }

    fn identify_info(agent: &str, listen_addrs: Vec<Multiaddr>) -> identify::Info {
        identify::Info {
            public_key: identity::Keypair::generate_ed25519().public(),
            protocol_version: crate::net::protocol_version(),
            agent_version: agent.into(),
            listen_addrs,
            protocols: vec![StreamProtocol::new(idlegrid_protocol::TASK_PROTOCOL)],
            observed_addr: addr(0),
            signed_peer_record: None,
        }
    }

    #[test]
    fn many_peers_keep_the_book_at_its_bound_and_connected_peers_stay() {
        let mut book = book();
        let connected = PeerId::random();
        book.on_connected(connected, ConnectionId::new_unchecked(1), &dialled(addr(1)));
        let given = PeerId::random();
        book.record(given, Some(addr(2)), Source::Given);
        for i in 0..3 * MAX_PEERS {
            let source = [Source::Mdns, Source::Dht][i % 2];
            book.record(PeerId::random(), Some(addr(i)), source);
            assert!(book.book.len() <= MAX_PEERS);
        }
        assert_eq!(book.book.len(), MAX_PEERS);
        assert!(
            book.get(&connected).is_some(),
            "a connected peer is never evicted"
        );
        assert!(
            book.get(&given).is_none(),
            "the oldest unconnected peer went first"
        );
        // Once it disconnects it is one more peer heard of long ago.
        book.on_closed(connected, ConnectionId::new_unchecked(1), 0);
        book.record(PeerId::random(), None, Source::Dht);
        assert!(book.get(&connected).is_none());
    }

    #[test]
    fn a_book_full_of_connected_peers_keeps_them_all_and_takes_no_stranger() {
        let mut book = book();
        let peers: Vec<PeerId> = (0..MAX_PEERS).map(|_| PeerId::random()).collect();
        for (i, peer) in peers.iter().enumerate() {
            let endpoint = dialled(addr(i));
            book.on_connected(*peer, ConnectionId::new_unchecked(i), &endpoint);
        }
        let stranger = PeerId::random();
        assert_eq!(
            book.record(stranger, Some(addr(9)), Source::Mdns),
            (false, false)
        );
        assert!(book.get(&stranger).is_none());
        // A peer that connects is remembered whatever the bound.
        let caller = PeerId::random();
        let endpoint = ConnectedPoint::Listener {
            local_addr: addr(0),
            send_back_addr: addr(1),
        };
        book.on_connected(caller, ConnectionId::new_unchecked(MAX_PEERS), &endpoint);
        assert!(book.get(&caller).is_some());
        assert!(peers.iter().all(|p| book.get(p).is_some()));
    }

    #[test]
    fn addresses_are_bounded_keeping_the_newest_and_the_confirmed_one() {
        let mut book = book();
        let peer = PeerId::random();
        let confirmed = addr(1);
        book.on_connected(
            peer,
            ConnectionId::new_unchecked(1),
            &dialled(confirmed.clone()),
        );
        // mDNS and the DHT name it at many addresses, identify lists many more.
        for i in 100..200 {
            book.record(peer, Some(addr(i)), Source::Mdns);
        }
        for i in 200..300 {
            book.record(peer, Some(addr(i)), Source::Dht);
        }
        book.on_identified(
            peer,
            identify_info("idlegrid/0.1.0", (300..1300).map(addr).collect()),
        );
        let addrs = book.addrs(&peer);
        assert_eq!(addrs.len(), MAX_ADDRS);
        assert!(addrs.contains(&confirmed), "the address that worked stays");
        assert_eq!(addrs[0], addr(300), "the newest come first");
        assert!(!addrs.contains(&addr(150)) && !addrs.contains(&addr(250)));
    }

    #[test]
    fn identify_strings_are_printable_and_bad_addresses_are_dropped() {
        let mut book = book();
        let peer = PeerId::random();
        let weird: Multiaddr = "/dns4/a\u{1b}[2Jb/tcp/1".parse().unwrap();
        book.on_identified(
            peer,
            identify_info("evil\u{1b}]0;title\u{7}\u{202e}", vec![weird, addr(5)]),
        );
        let entry = book.get(&peer).unwrap();
        let agent = entry.agent.as_deref().unwrap();
        assert!(!agent.chars().any(idlegrid_protocol::text::is_unprintable));
        assert_eq!(entry.addrs, vec![addr(5)]);
    }
}
