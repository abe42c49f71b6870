//! Building the `Swarm`: the transports (TCP + Noise + Yamux and QUIC, or TCP behind a
//! pre-shared key in a private pool), the relay client, the composed [`Behaviour`] and
//! the swarm's own settings, then the listeners of `NetConfig::listen`. Also the
//! addresses this peer listens on ([`Listening`]): the event loop records each new one
//! and answers the clients that asked before the first was known. The address helpers
//! at the end are the forms the other parts dial (`/p2p/<PeerId>` and `/p2p-circuit`).

use libp2p::multiaddr::Protocol;
use libp2p::{identity, noise, tcp, yamux, Multiaddr, PeerId, Swarm, Transport};
use tokio::sync::oneshot;

use super::behaviour::Behaviour;
use super::{NetConfig, NetError};

/// The swarm every part of the network works on; only the event loop owns it.
pub(super) type PeerSwarm = Swarm<Behaviour>;

/// Builds the swarm with the transports `config` asks for (see the module header).
pub(super) fn build(key: identity::Keypair, config: &NetConfig) -> Result<PeerSwarm, NetError> {
    let setup = |e: &dyn std::fmt::Display| NetError::Setup(e.to_string());
    type BoxError = Box<dyn std::error::Error + Send + Sync>;
    let behaviour = |key: &identity::Keypair, relay_client| {
        Behaviour::new(key, config, relay_client).map_err(|e| Box::new(e) as BoxError)
    };
    // Every request-response exchange opens a new substream, and multistream-select
    // (V1, libp2p's default) waits for the listener to confirm the protocol before the
    // request is sent: one more round trip per probe, run, poll and blob piece. V1Lazy
    // sends the request with the proposal (we always propose exactly one protocol).
    // On a LAN that is nothing; for a far peer (400 ms round trips) it cut the
    // benchmark and every chunk by a round trip per message. A listener accepts both.
    let swarm_config = |c: libp2p::swarm::Config| {
        c.with_idle_connection_timeout(config.idle_connection_timeout)
            .with_substream_upgrade_protocol_override(libp2p::core::upgrade::Version::V1Lazy)
    };
    let swarm = match config.swarm_key {
        None => libp2p::SwarmBuilder::with_existing_identity(key)
            .with_tokio()
            .with_tcp(
                tcp::Config::default().nodelay(true),
                noise::Config::new,
                yamux::Config::default,
            )
            .map_err(|e| setup(&e))?
            .with_quic()
            .with_relay_client(noise::Config::new, yamux::Config::default)
            .map_err(|e| setup(&e))?
            .with_behaviour(behaviour)
            .map_err(|e| setup(&e))?
            .with_swarm_config(swarm_config)
            .build(),
        Some(psk) => {
            // A private pool: every TCP connection first proves the pre-shared key
            // (pnet), then runs Noise and Yamux as usual. pnet cannot wrap QUIC.
            tracing::info!(
                "private pool (swarm key fingerprint {}): TCP only, QUIC is off because libp2p's pnet does not work over QUIC",
                psk.fingerprint()
            );
            libp2p::SwarmBuilder::with_existing_identity(key)
                .with_tokio()
                .with_other_transport(|key| -> Result<_, BoxError> {
                    let noise = noise::Config::new(key)?;
                    Ok(
                        tcp::tokio::Transport::new(tcp::Config::default().nodelay(true))
                            .and_then(move |socket, _| {
                                libp2p::pnet::PnetConfig::new(psk).handshake(socket)
                            })
                            .upgrade(libp2p::core::upgrade::Version::V1Lazy)
                            .authenticate(noise)
                            .multiplex(yamux::Config::default())
                            .timeout(std::time::Duration::from_secs(20)),
                    )
                })
                .map_err(|e| setup(&e))?
                .with_relay_client(noise::Config::new, yamux::Config::default)
                .map_err(|e| setup(&e))?
                .with_behaviour(behaviour)
                .map_err(|e| setup(&e))?
                .with_swarm_config(swarm_config)
                .build()
        }
    };
    Ok(swarm)
}

/// Listens on every address of `NetConfig::listen`, skipping QUIC in a private pool.
pub(super) fn listen(swarm: &mut PeerSwarm, config: &NetConfig) -> Result<(), NetError> {
    for addr in &config.listen {
        let quic = addr
            .iter()
            .any(|p| matches!(p, Protocol::QuicV1 | Protocol::Quic));
        if config.swarm_key.is_some() && quic {
            tracing::warn!(
                "not listening on {addr}: QUIC is off in a private pool (pnet is TCP only)"
            );
            continue;
        }
        swarm
            .listen_on(addr.clone())
            .map_err(|e| NetError::Listen {
                addr: addr.clone(),
                reason: e.to_string(),
            })?;
    }
    Ok(())
}

/// The addresses this peer listens on, and the clients waiting for the first one.
#[derive(Default)]
pub(super) struct Listening {
    addrs: Vec<Multiaddr>,
    waiters: Vec<oneshot::Sender<Vec<Multiaddr>>>,
}

impl Listening {
    /// Answers with the listen addresses, or once the first is known.
    pub(super) fn ask(&mut self, me: PeerId, reply: oneshot::Sender<Vec<Multiaddr>>) {
        if self.addrs.is_empty() {
            self.waiters.push(reply);
        } else {
            let _ = reply.send(self.full(me));
        }
    }

    /// Records a new listen address. One reachable through a relay is not one of our
    /// own sockets, so it is not handed to the waiters (tests and bootstrap nodes print
    /// those).
    pub(super) fn on_new_addr(&mut self, me: PeerId, address: Multiaddr) {
        if address.iter().any(|p| p == Protocol::P2pCircuit) {
            tracing::info!("reachable through relay at {address}");
            return;
        }
        tracing::info!("listening on {address}");
        self.addrs.push(address);
        let addrs = self.full(me);
        for waiter in self.waiters.drain(..) {
            let _ = waiter.send(addrs.clone());
        }
    }

    /// The listen addresses with this peer's `/p2p/<PeerId>`.
    fn full(&self, me: PeerId) -> Vec<Multiaddr> {
        self.addrs
            .iter()
            .map(|a| a.clone().with(Protocol::P2p(me)))
            .collect()
    }
}

/// The peer an address ends in (`/p2p/<PeerId>`), if it names one.
pub(super) fn peer_of(addr: &Multiaddr) -> Option<PeerId> {
    addr.iter().find_map(|p| match p {
        Protocol::P2p(peer) => Some(peer),
        _ => None,
    })
}

/// The address without its `/p2p/<PeerId>`: where the peer is, not who.
pub(super) fn without_peer(addr: &Multiaddr) -> Multiaddr {
    addr.iter()
        .filter(|p| !matches!(p, Protocol::P2p(_)))
        .collect()
}

/// The `/p2p-circuit` address of `peer` through `relay` reached at `relay_addr`.
pub(super) fn circuit_addr(relay_addr: &Multiaddr, relay: PeerId, peer: PeerId) -> Multiaddr {
    relay_addr
        .clone()
        .with(Protocol::P2p(relay))
        .with(Protocol::P2pCircuit)
        .with(Protocol::P2p(peer))
}
