//! Kademlia: the kernel keys this peer advertises as provider records, the provider
//! lookups clients wait on (their replies keyed by query id), the routing table fed by
//! identify, and the DHT mode, which follows reachability (a peer others cannot dial
//! asks but does not answer). Peers the DHT finds go into the peer book as discovered
//! and are dialled, so identify tells what they are.

use std::collections::{HashMap, HashSet};

use idlegrid_protocol::KAD_PROTOCOL;
use libp2p::{autonat, identify, kad, PeerId, StreamProtocol};
use tokio::sync::oneshot;

use super::peers::PeerBook;
use super::swarm::PeerSwarm;
use super::Source;

/// Our Kademlia protocol, as identify lists it.
const KAD: StreamProtocol = StreamProtocol::new(KAD_PROTOCOL);

type ProvidersReply = oneshot::Sender<HashSet<PeerId>>;

pub(super) struct Kad {
    /// Kernel keys this peer advertises, again whenever its addresses change.
    provided: Vec<String>,
    /// Provider lookups under way: the providers found so far and who waits for them.
    pending_providers: HashMap<kad::QueryId, (HashSet<PeerId>, ProvidersReply)>,
}

impl Kad {
    pub(super) fn new() -> Self {
        Kad {
            provided: Vec::new(),
            pending_providers: HashMap::new(),
        }
    }

    /// Advertises that this peer runs the kernels of `keys`, and remembers them.
    pub(super) fn provide(&mut self, swarm: &mut PeerSwarm, keys: Vec<String>) {
        for key in &keys {
            if !self.provided.contains(key) {
                self.provided.push(key.clone());
            }
        }
        for key in keys {
            if let Err(e) = swarm
                .behaviour_mut()
                .kad
                .start_providing(kad::RecordKey::new(&key))
            {
                tracing::warn!("cannot advertise {key} in the DHT: {e}");
            }
        }
    }

    /// Advertises every key again, so the provider records carry a new address.
    pub(super) fn advertise_again(&mut self, swarm: &mut PeerSwarm) {
        for key in &self.provided {
            let _ = swarm
                .behaviour_mut()
                .kad
                .start_providing(kad::RecordKey::new(key));
        }
    }

    /// Starts a lookup of who advertises `key`; `reply` gets them when it ends.
    pub(super) fn find_providers(
        &mut self,
        swarm: &mut PeerSwarm,
        key: String,
        reply: ProvidersReply,
    ) {
        let id = swarm
            .behaviour_mut()
            .kad
            .get_providers(kad::RecordKey::new(&key));
        self.pending_providers.insert(id, (HashSet::new(), reply));
    }

    /// A peer others cannot dial would only slow their DHT queries down: it asks but
    /// does not answer until it is reachable again.
    pub(super) fn follow_reachability(&self, swarm: &mut PeerSwarm, status: &autonat::NatStatus) {
        let mode = match status {
            autonat::NatStatus::Private => kad::Mode::Client,
            _ => kad::Mode::Server,
        };
        swarm.behaviour_mut().kad.set_mode(Some(mode));
    }

    /// Feeds the routing table with the addresses of a peer that speaks our DHT.
    pub(super) fn on_identified(&self, swarm: &mut PeerSwarm, peer: PeerId, info: &identify::Info) {
        if info.protocols.contains(&KAD) {
            for addr in &info.listen_addrs {
                swarm.behaviour_mut().kad.add_address(&peer, addr.clone());
            }
        }
    }

    pub(super) fn on_event(
        &mut self,
        swarm: &mut PeerSwarm,
        book: &mut PeerBook,
        event: kad::Event,
    ) {
        match event {
            kad::Event::OutboundQueryProgressed {
                id,
                result: kad::QueryResult::GetProviders(result),
                step,
                ..
            } => {
                let mut found = Vec::new();
                let finished = match result {
                    Ok(kad::GetProvidersOk::FoundProviders { providers, .. }) => {
                        found.extend(providers);
                        step.last
                    }
                    Ok(kad::GetProvidersOk::FinishedWithNoAdditionalRecord { .. }) => true,
                    Err(e) => {
                        tracing::debug!("provider lookup: {e}");
                        true
                    }
                };
                for peer in &found {
                    book.learn(swarm, *peer, None, Source::Dht);
                    if !swarm.is_connected(peer) {
                        let _ = swarm.dial(*peer);
                    }
                }
                if let Some((acc, _)) = self.pending_providers.get_mut(&id) {
                    acc.extend(found);
                }
                if finished {
                    if let Some((acc, reply)) = self.pending_providers.remove(&id) {
                        let _ = reply.send(acc);
                    }
                }
            }
            kad::Event::RoutingUpdated {
                peer, addresses, ..
            } => {
                for addr in addresses.iter() {
                    book.learn(swarm, peer, Some(addr.clone()), Source::Dht);
                }
            }
            _ => {}
        }
    }
}
