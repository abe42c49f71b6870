//! The composed libp2p behaviour of an idlegrid peer and how it is configured.
//!
//! Two request-response protocols carry the work (`/idlegrid/task/1`, `/idlegrid/blob/1`);
//! mDNS finds peers on the LAN, Kademlia (under our own protocol name, server mode) finds
//! them beyond it through bootstrap peers and provider records, identify tells each
//! peer's agent and protocols, ping measures round trips and keeps idle links honest.
//! Beyond a NAT: autonat learns whether others can dial us, the relay client reserves a
//! slot on a relay peer when they cannot (and dials others through one), DCUtR turns a
//! relayed connection into a direct one by hole punching, and a peer started with
//! `relay_server` relays for others.
//! Three guards come first: a block list (`--deny`), connection limits in total and
//! per peer, and a memory limit above which new connections are refused.

use std::time::Duration;

use idlegrid_protocol::{BLOB_PROTOCOL, KAD_PROTOCOL, PROTOCOL_VERSION, TASK_PROTOCOL};
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::swarm::NetworkBehaviour;
use libp2p::{
    allow_block_list, autonat, connection_limits, dcutr, identify, identity, kad, mdns,
    memory_connection_limits, ping, relay, request_response, StreamProtocol,
};

use super::codec::{BlobCodec, TaskCodec};
use super::NetConfig;

/// The agent string peers see in identify.
pub fn agent_version() -> String {
    format!("idlegrid/{}", env!("CARGO_PKG_VERSION"))
}

/// identify's protocol version: peers with another one are skipped as incompatible.
pub fn protocol_version() -> String {
    format!("/idlegrid/{PROTOCOL_VERSION}")
}

#[derive(NetworkBehaviour)]
pub struct Behaviour {
    pub blocked: allow_block_list::Behaviour<allow_block_list::BlockedPeers>,
    pub limits: connection_limits::Behaviour,
    pub memory: Toggle<memory_connection_limits::Behaviour>,
    pub task: request_response::Behaviour<TaskCodec>,
    pub blob: request_response::Behaviour<BlobCodec>,
    pub kad: kad::Behaviour<kad::store::MemoryStore>,
    pub mdns: Toggle<mdns::tokio::Behaviour>,
    pub identify: identify::Behaviour,
    pub ping: ping::Behaviour,
    pub autonat: autonat::Behaviour,
    pub relay_client: relay::client::Behaviour,
    pub relay_server: Toggle<relay::Behaviour>,
    pub dcutr: dcutr::Behaviour,
}

impl Behaviour {
    pub fn new(
        key: &identity::Keypair,
        config: &NetConfig,
        relay_client: relay::client::Behaviour,
    ) -> std::io::Result<Behaviour> {
        let peer_id = key.public().to_peer_id();
        let rr_config = request_response::Config::default()
            .with_request_timeout(config.request_timeout)
            .with_max_concurrent_streams(256);
        let task = request_response::Behaviour::with_codec(
            TaskCodec::default(),
            [(
                StreamProtocol::new(TASK_PROTOCOL),
                request_response::ProtocolSupport::Full,
            )],
            rr_config.clone(),
        );
        let blob = request_response::Behaviour::with_codec(
            BlobCodec::default(),
            [(
                StreamProtocol::new(BLOB_PROTOCOL),
                request_response::ProtocolSupport::Full,
            )],
            rr_config,
        );

        let mut kad_config = kad::Config::new(StreamProtocol::new(KAD_PROTOCOL));
        // Provider records say "this peer runs kernel K now": short-lived, so a peer
        // that went away stops being advertised within minutes.
        kad_config
            .set_provider_record_ttl(Some(Duration::from_secs(10 * 60)))
            .set_provider_publication_interval(Some(Duration::from_secs(4 * 60)))
            .set_query_timeout(Duration::from_secs(20));
        let mut kad =
            kad::Behaviour::with_config(peer_id, kad::store::MemoryStore::new(peer_id), kad_config);
        // On a LAN every peer is reachable: answer DHT queries from the start instead
        // of waiting for an external address to be confirmed.
        kad.set_mode(Some(kad::Mode::Server));

        let mdns = if config.mdns {
            let mdns_config = mdns::Config {
                // Ask again every few seconds so a peer started later is found soon.
                query_interval: Duration::from_secs(5),
                ..Default::default()
            };
            Some(mdns::tokio::Behaviour::new(mdns_config, peer_id)?)
        } else {
            None
        };

        let identify = identify::Behaviour::new(
            identify::Config::new(protocol_version(), key.public())
                .with_agent_version(agent_version()),
        );
        let ping = ping::Behaviour::new(
            ping::Config::new()
                .with_interval(config.ping_interval)
                .with_timeout(config.ping_timeout),
        );

        let mut blocked = allow_block_list::Behaviour::default();
        for peer in &config.deny {
            blocked.block_peer(*peer);
        }
        let limits = connection_limits::Behaviour::new(
            connection_limits::ConnectionLimits::default()
                .with_max_established(Some(config.max_connections))
                .with_max_established_per_peer(Some(config.max_connections_per_peer)),
        );
        let memory = config
            .max_memory
            .map(memory_connection_limits::Behaviour::with_max_bytes);

        let autonat = autonat::Behaviour::new(
            peer_id,
            autonat::Config {
                // Learn soon after joining whether we need a relay (default 15 s).
                boot_delay: Duration::from_secs(2),
                retry_interval: Duration::from_secs(30),
                // Offices and labs number their machines privately: a peer on
                // 10.x or 192.168.x is a valid judge of our reachability.
                only_global_ips: false,
                ..Default::default()
            },
        );
        let relay_server = config.relay_server.then(|| {
            relay::Behaviour::new(
                peer_id,
                relay::Config {
                    max_circuits: config.relay_max_circuits,
                    max_circuits_per_peer: config.relay_max_circuits.min(16),
                    max_circuit_duration: config.relay_max_circuit_duration,
                    max_circuit_bytes: config.relay_max_circuit_bytes,
                    ..Default::default()
                },
            )
        });

        Ok(Behaviour {
            blocked,
            limits,
            memory: memory.into(),
            task,
            blob,
            kad,
            mdns: mdns.into(),
            identify,
            ping,
            autonat,
            relay_client,
            relay_server: relay_server.into(),
            dcutr: dcutr::Behaviour::new(peer_id),
        })
    }
}
