//! The peer book: what this peer knows of every other ([`PeerEntry`]: addresses, how it
//! was found, what identify said, whether and how it is connected), and the open
//! connections to each. Discovery (mDNS, the DHT, the command line, a peer that dialled
//! us), identify and the swarm's connection events write it; `peers` commands, requests
//! (the addresses to send on) and the NAT part (relayed connections) read it. Each
//! change others need to hear of is published as a [`PeerEvent`].

use std::collections::HashMap;

use libp2p::core::ConnectedPoint;
use libp2p::swarm::ConnectionId;
use libp2p::{identify, Multiaddr, PeerId};
use tokio::sync::broadcast;

use super::swarm::PeerSwarm;
use super::{PeerEntry, PeerEvent, Route, Source};

pub(super) struct PeerBook {
    book: HashMap<PeerId, PeerEntry>,
    /// Open connections per peer, and whether each goes through a relay.
    connections: HashMap<PeerId, HashMap<ConnectionId, bool>>,
    events: broadcast::Sender<PeerEvent>,
}

impl PeerBook {
    pub(super) fn new(events: broadcast::Sender<PeerEvent>) -> Self {
        PeerBook {
            book: HashMap::new(),
            connections: HashMap::new(),
            events,
        }
    }

    /// Every peer known, for the `peers` command.
    pub(super) fn list(&self) -> Vec<PeerEntry> {
        self.book.values().cloned().collect()
    }

    pub(super) fn get(&self, peer: &PeerId) -> Option<&PeerEntry> {
        self.book.get(peer)
    }

    /// The addresses known of `peer`, to send a request on.
    pub(super) fn addrs(&self, peer: &PeerId) -> Vec<Multiaddr> {
        self.book
            .get(peer)
            .map(|e| e.addrs.clone())
            .unwrap_or_default()
    }

    pub(super) fn entry(&mut self, peer: PeerId) -> &mut PeerEntry {
        self.book.entry(peer).or_insert_with(|| PeerEntry {
            peer: Some(peer),
            ..Default::default()
        })
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
        let entry = self.entry(peer);
        let new_source = entry.sources.insert(source);
        if let Some(addr) = &addr {
            if !entry.addrs.contains(addr) {
                entry.addrs.push(addr.clone());
            }
        }
        if let Some(addr) = addr {
            swarm.add_peer_address(peer, addr);
        }
        if new_source {
            let _ = self.events.send(PeerEvent::Discovered { peer, source });
        }
    }

    /// mDNS no longer sees `peer` at these addresses.
    pub(super) fn on_mdns_expired(&mut self, gone: Vec<(PeerId, Multiaddr)>) {
        for (peer, addr) in gone {
            if let Some(entry) = self.book.get_mut(&peer) {
                entry.addrs.retain(|a| a != &addr);
            }
        }
    }

    /// Records what identify told of `peer` and publishes whether it is one of ours.
    pub(super) fn on_identified(&mut self, peer: PeerId, info: identify::Info) {
        let entry = self.entry(peer);
        entry.agent = Some(info.agent_version);
        entry.protocol_version = Some(info.protocol_version);
        entry.protocols = info.protocols.iter().map(|p| p.to_string()).collect();
        for addr in info.listen_addrs {
            if !entry.addrs.contains(&addr) {
                entry.addrs.push(addr);
            }
        }
        let compatible = entry.is_compatible();
        if !compatible {
            tracing::info!(
                "skipping peer {peer}: agent {:?}, protocol {:?} (incompatible)",
                entry.agent,
                entry.protocol_version
            );
        }
        let _ = self.events.send(PeerEvent::Identified { peer, compatible });
    }

    /// The last ping round trip to `peer`.
    pub(super) fn set_rtt(&mut self, peer: &PeerId, rtt: std::time::Duration) {
        if let Some(entry) = self.book.get_mut(peer) {
            entry.rtt = Some(rtt);
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
        let known = self.book.contains_key(&peer);
        let entry = self.entry(peer);
        entry.connected = true;
        entry.connected_from = Some(addr.clone());
        self.update_route(peer);
        let entry = self.entry(peer);
        if !known {
            // We only dial unknown peers on the DHT's behalf (its queries
            // connect to the peers it learns of); a peer that dialled us found
            // us itself. Either way identify will tell what it is.
            let source = if dialer { Source::Dht } else { Source::Given };
            entry.sources.insert(source);
            if dialer {
                entry.addrs.push(addr);
            }
            let _ = self.events.send(PeerEvent::Discovered { peer, source });
        }
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
        if let Some(entry) = self.book.get_mut(&peer) {
            entry.connected = remaining > 0;
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
        if let Some(entry) = self.book.get_mut(&peer) {
            entry.route = match route {
                Some(Route::Direct) if entry.hole_punched => Some(Route::HolePunched),
                other => other,
            };
        }
    }
}
