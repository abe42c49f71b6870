//! Getting through NATs: what autonat says of our reachability, the peers that relay
//! for others (given in `NetConfig::relays`, or learnt from identify among the peers we
//! trust: the bootstrap peers and `NetConfig::trusted_peers`), the slots held on them,
//! and hole punching. When autonat says others cannot dial us, a slot is taken on
//! every known relay (on the configured ones from the start, whatever autonat says);
//! when it says they can, the slots taken on our own are given back. Requests read the
//! relays to reach a peer that cannot be dialled directly (see `requests.rs`). When
//! DCUtR's hole punching gives a direct connection, the relayed one is closed; requests
//! cut by that are sent again on the connection that remains.

use std::collections::{HashMap, HashSet};

use libp2p::core::transport::ListenerId;
use libp2p::multiaddr::Protocol;
use libp2p::{autonat, dcutr, identify, relay, Multiaddr, PeerId};

use super::peers::PeerBook;
use super::swarm::{peer_of, without_peer, PeerSwarm};
use super::{NetConfig, NetError};

pub(super) struct Nat {
    /// Our relays, with the address to reach them on: the configured ones, and the
    /// trusted peers that identify says relay for others.
    relays: HashMap<PeerId, Multiaddr>,
    /// Peers whose offer to relay is taken: the configured relays, the bootstrap peers
    /// and `NetConfig::trusted_peers`. A relay carries, and could stall or cut, every
    /// connection through it, so a stranger advertising the protocol is not one.
    trusted: HashSet<PeerId>,
    /// Slots held on relays: the listener of each `/p2p-circuit` address.
    reservations: HashMap<PeerId, ListenerId>,
    /// Relays given in the config: a slot is kept on them whatever autonat says.
    configured_relays: HashSet<PeerId>,
    /// What autonat last concluded about our reachability.
    status: autonat::NatStatus,
}

impl Nat {
    pub(super) fn new(config: &NetConfig) -> Self {
        let trusted = config
            .relays
            .iter()
            .chain(&config.bootstrap)
            .filter_map(peer_of)
            .chain(config.trusted_peers.iter().copied())
            .collect();
        Nat {
            relays: HashMap::new(),
            trusted,
            reservations: HashMap::new(),
            configured_relays: HashSet::new(),
            status: autonat::NatStatus::Unknown,
        }
    }

    /// The known relays and where to reach them.
    pub(super) fn relays(&self) -> &HashMap<PeerId, Multiaddr> {
        &self.relays
    }

    /// A relay from `NetConfig::relays`: a slot is taken on it at once and kept.
    pub(super) fn add_configured(
        &mut self,
        swarm: &mut PeerSwarm,
        addr: &Multiaddr,
    ) -> Result<(), NetError> {
        let Some(relay) = peer_of(addr) else {
            return Err(NetError::Setup(format!(
                "relay address {addr} does not end in /p2p/<PeerId>"
            )));
        };
        self.configured_relays.insert(relay);
        self.relays.insert(relay, without_peer(addr));
        self.reserve(swarm, relay);
        Ok(())
    }

    /// Takes a slot on `relay` (listens on its `/p2p-circuit` address) unless one is
    /// held already.
    fn reserve(&mut self, swarm: &mut PeerSwarm, relay: PeerId) {
        if self.reservations.contains_key(&relay) {
            return;
        }
        let Some(addr) = self.relays.get(&relay) else {
            return;
        };
        // The address may already end in the relay's id (a bootstrap address does).
        let mut circuit = addr.clone();
        if matches!(circuit.iter().last(), Some(Protocol::P2p(_))) {
            circuit.pop();
        }
        let circuit = circuit
            .with(Protocol::P2p(relay))
            .with(Protocol::P2pCircuit);
        match swarm.listen_on(circuit.clone()) {
            Ok(id) => {
                tracing::info!("asking relay {relay} for a slot ({circuit})");
                self.reservations.insert(relay, id);
            }
            Err(e) => tracing::warn!("cannot listen through relay {circuit}: {e}"),
        }
    }

    /// Notes `peer` as a relay if identify says it relays for others and it is one we
    /// trust, and takes a slot on it when we need one. Called before the book records
    /// `info`.
    pub(super) fn on_identified(
        &mut self,
        swarm: &mut PeerSwarm,
        book: &PeerBook,
        peer: PeerId,
        info: &identify::Info,
    ) {
        let relays_for_others = info.protocols.contains(&relay::HOP_PROTOCOL_NAME);
        if !relays_for_others || self.relays.contains_key(&peer) {
            return;
        }
        if !self.trusted.contains(&peer) {
            tracing::debug!(
                "{peer} relays for others; not one of ours (not a configured relay, a \
                 bootstrap peer or a trusted peer)"
            );
            return;
        }
        // Reach the relay where we reached it, else where it says it listens.
        let direct = |a: &&Multiaddr| !a.iter().any(|p| p == Protocol::P2pCircuit);
        let dialled = book.get(&peer).and_then(|e| e.addrs.iter().find(direct));
        if let Some(addr) = dialled.or(info.listen_addrs.iter().find(direct)).cloned() {
            tracing::debug!("{peer} relays for others, at {addr}");
            self.relays.insert(peer, addr);
            if self.status == autonat::NatStatus::Private {
                self.reserve(swarm, peer);
            }
        }
    }

    /// Records a change of reachability and returns the new one (the caller lets
    /// Kademlia and [`Nat::follow_reachability`] follow it).
    pub(super) fn on_autonat(&mut self, event: autonat::Event) -> Option<&autonat::NatStatus> {
        let autonat::Event::StatusChanged { old, new } = event else {
            return None;
        };
        tracing::info!("reachability: {old:?} -> {new:?}");
        self.status = new;
        Some(&self.status)
    }

    /// Takes slots on every known relay when others cannot dial us, gives back the
    /// ones taken on our own when they can.
    pub(super) fn follow_reachability(&mut self, swarm: &mut PeerSwarm) {
        match &self.status {
            autonat::NatStatus::Private => {
                let relays: Vec<PeerId> = self.relays.keys().copied().collect();
                if relays.is_empty() {
                    tracing::warn!(
                        "other peers cannot dial this one and no relay is known: only \
                         peers it dials itself can reach it (a bootstrap node relays)"
                    );
                }
                for relay in relays {
                    self.reserve(swarm, relay);
                }
            }
            autonat::NatStatus::Public(_) => {
                // Dialable directly: give back the slots we took on our own.
                let taken: Vec<PeerId> = self
                    .reservations
                    .keys()
                    .filter(|r| !self.configured_relays.contains(r))
                    .copied()
                    .collect();
                for relay in taken {
                    if let Some(id) = self.reservations.remove(&relay) {
                        swarm.remove_listener(id);
                    }
                }
            }
            autonat::NatStatus::Unknown => {}
        }
    }

    /// True when a relay newly holds a slot for us (not a renewal): the caller
    /// advertises again so the provider records carry the relayed address.
    pub(super) fn on_relay_client(&mut self, event: relay::client::Event) -> bool {
        match event {
            relay::client::Event::ReservationReqAccepted {
                relay_peer_id,
                renewal: false,
                ..
            } => {
                tracing::info!("relay {relay_peer_id} holds a slot for this peer");
                true
            }
            other => {
                tracing::debug!("relay client: {other:?}");
                false
            }
        }
    }

    /// Hole punching gave a direct connection: the relayed one has served its purpose.
    pub(super) fn on_dcutr(
        &mut self,
        swarm: &mut PeerSwarm,
        book: &mut PeerBook,
        event: dcutr::Event,
    ) {
        let peer = event.remote_peer_id;
        match event.result {
            Ok(_) => {
                // Requests still on the relayed connection are sent again on the
                // direct one (see `Outbound::settle`).
                let relayed = book.relayed_connections(&peer);
                tracing::info!("direct connection to {peer} by hole punching");
                book.set_hole_punched(&peer);
                for id in relayed {
                    swarm.close_connection(id);
                }
            }
            Err(e) => tracing::info!(
                "hole punching to {peer} failed ({e}); its traffic goes through the relay"
            ),
        }
    }

    /// A slot on a relay ends with the connection to the relay; forget it so a new one
    /// is taken when the relay is back.
    pub(super) fn on_listener_closed(
        &mut self,
        listener: ListenerId,
        reason: &dyn std::fmt::Debug,
    ) {
        let gone: Vec<PeerId> = self
            .reservations
            .iter()
            .filter(|(_, id)| **id == listener)
            .map(|(relay, _)| *relay)
            .collect();
        for relay in gone {
            self.reservations.remove(&relay);
            tracing::info!("slot on relay {relay} closed: {reason:?}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::swarm;
    use libp2p::identity::Keypair;
    use tokio::sync::broadcast;

    /// What identify says of a peer that relays for others.
    fn offers_to_relay(key: &Keypair, port: u16) -> identify::Info {
        identify::Info {
            public_key: key.public(),
            protocol_version: crate::net::protocol_version(),
            agent_version: "idlegrid/test".into(),
            listen_addrs: vec![format!("/ip4/127.0.0.1/tcp/{port}").parse().unwrap()],
            protocols: vec![relay::HOP_PROTOCOL_NAME],
            observed_addr: "/ip4/127.0.0.1/tcp/1".parse().unwrap(),
            signed_peer_record: None,
        }
    }

    #[tokio::test]
    async fn only_configured_bootstrap_and_trusted_peers_become_relays() {
        let [bootstrap, trusted, stranger] = [(); 3].map(|_| Keypair::generate_ed25519());
        let id = |k: &Keypair| k.public().to_peer_id();
        let config = NetConfig {
            listen: Vec::new(),
            mdns: false,
            bootstrap: vec![format!("/ip4/127.0.0.1/tcp/2/p2p/{}", id(&bootstrap))
                .parse()
                .unwrap()],
            trusted_peers: vec![id(&trusted)],
            ..NetConfig::default()
        };
        let mut swarm = swarm::build(Keypair::generate_ed25519(), &config).unwrap();
        let book = PeerBook::new(broadcast::channel(4).0);
        let mut nat = Nat::new(&config);
        for (i, key) in [&stranger, &bootstrap, &trusted].into_iter().enumerate() {
            nat.on_identified(
                &mut swarm,
                &book,
                id(key),
                &offers_to_relay(key, 10 + i as u16),
            );
        }
        assert!(
            !nat.relays().contains_key(&id(&stranger)),
            "a stranger offering to relay is not one of our relays"
        );
        assert!(nat.relays().contains_key(&id(&bootstrap)));
        assert!(nat.relays().contains_key(&id(&trusted)));
        assert_eq!(nat.relays().len(), 2);
    }
}
