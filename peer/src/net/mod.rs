//! The network: one task (the [`EventLoop`]) owns the libp2p `Swarm`; everything else
//! talks to it through a cloneable [`Client`] that sends commands with `oneshot`
//! replies. Inbound requests leave the loop on a channel ([`Inbound`]) for the worker
//! and blob services, which answer through the client. Peer discovery is published on a
//! broadcast channel of [`PeerEvent`]s and kept in a [`PeerEntry`] book.
//!
//! The event loop keeps only the `select!` loop and the dispatch; each concern is a
//! part it lends the swarm to: `swarm` (building it, listen addresses), `requests`
//! (outbound requests, their retries through relays or after hole punching), `peers`
//! (the peer book), `liveness` (pings), `nat` (autonat, relays, DCUtR) and `kad`
//! (provider records, lookups, DHT mode).

mod batch;
mod behaviour;
mod client;
pub use client::kernel_key;
pub mod codec;
mod event_loop;
mod kad;
mod liveness;
mod nat;
mod peers;
mod requests;
mod swarm;

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::time::Duration;

use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};

pub use behaviour::{agent_version, protocol_version};
pub use client::Client;
pub use event_loop::{spawn, EventLoop, Inbound};

/// How the network part of a peer is set up. Defaults suit a LAN.
#[derive(Clone, Debug)]
pub struct NetConfig {
    /// Addresses to listen on. Default: every IPv4 interface, TCP and QUIC, on a port the
    /// OS picks.
    pub listen: Vec<Multiaddr>,
    /// Find peers on the LAN by mDNS. Default on. mDNS needs a multicast-capable,
    /// non-loopback interface.
    pub mdns: bool,
    /// Kademlia bootstrap peers (`/ip4/…/tcp/…/p2p/<PeerId>`), tried in order after
    /// start until one answers (`node::join`).
    pub bootstrap: Vec<Multiaddr>,
    /// Peers to dial directly (no discovery needed: loopback, tests, no multicast).
    pub peers: Vec<Multiaddr>,
    /// Timeout of one request-response exchange. Default 10 s. Long chunks are not cut
    /// by it: a worker answers `Run` at once and each poll within its keep-alive.
    pub request_timeout: Duration,
    /// How long an unused connection stays open. Default 60 s.
    pub idle_connection_timeout: Duration,
    /// How often each connection is pinged. Default 2 s: the RTT is shown in `peers`
    /// and feeds the job's scheduler (deadline floors).
    pub ping_interval: Duration,
    /// A ping unanswered this long fails. A peer that answered pings before and then
    /// none for `ping_interval + ping_timeout` is reported unresponsive: a running job
    /// opens its breaker and hands its chunks to others. Default 5 s, the probe's
    /// timeout: a connection that cannot carry a 40-byte ping that fast is not
    /// computing for us. (On a slow link, blob pieces in flight queue ahead of a ping:
    /// 4 × 1 MiB take 3.4 s at 10 Mbit/s.)
    pub ping_timeout: Duration,
    /// A private pool's pre-shared key (libp2p pnet): only peers holding the same key
    /// can connect. pnet works over TCP only, so with a key QUIC is off (QUIC listen
    /// addresses are skipped with a warning). Default none.
    pub swarm_key: Option<libp2p::pnet::PreSharedKey>,
    /// Peers refused at connection time (their connections are closed). Default none.
    pub deny: Vec<PeerId>,
    /// Established connections in total, and per peer. Defaults 256 and 8: enough for
    /// an office grid, a bound against a peer that opens connections in a loop.
    pub max_connections: u32,
    pub max_connections_per_peer: u32,
    /// New connections are refused while this process's resident memory is above
    /// this many bytes. Default none.
    pub max_memory: Option<usize>,
    /// Relay peers (`/ip4/…/tcp/…/p2p/<PeerId>`) to reserve a slot on at once, so
    /// peers that cannot dial us reach us through them. Default none: a slot is taken
    /// by itself on a known relay when autonat finds this peer unreachable.
    pub relays: Vec<Multiaddr>,
    /// Peers trusted beyond the configured ones: when identify says one relays for
    /// others, it becomes one of our relays, as the configured relays and the
    /// bootstrap peers do. Any other peer offering to relay is not taken: a relay sees
    /// (and could stall) every relayed connection. Default none.
    pub trusted_peers: Vec<PeerId>,
    /// Inbound requests queued for the worker and blob services before new ones are
    /// answered as busy (a probe with `Busy`, a request about a chunk or a blob with a
    /// refusal). Default 1024.
    pub inbound_queue: usize,
    /// Relay for others (circuit relay v2): peers behind NATs reserve slots here and
    /// reach each other through it until hole punching connects them directly. On for
    /// `serve --bootstrap-node`, off otherwise (a volunteer lends cores, not bandwidth).
    pub relay_server: bool,
    /// Relayed connections through this peer at once. Default 64.
    pub relay_max_circuits: usize,
    /// A relayed connection is closed after this long. Default 30 min.
    pub relay_max_circuit_duration: Duration,
    /// ... or after carrying this many bytes. Default 1 GiB: enough for a job's
    /// chunks when hole punching fails (libp2p's default, 128 KiB, is meant only for
    /// the hole-punching handshake).
    pub relay_max_circuit_bytes: u64,
}

impl Default for NetConfig {
    fn default() -> Self {
        NetConfig {
            listen: vec![
                Multiaddr::empty()
                    .with(Protocol::Ip4(Ipv4Addr::UNSPECIFIED))
                    .with(Protocol::Tcp(0)),
                Multiaddr::empty()
                    .with(Protocol::Ip4(Ipv4Addr::UNSPECIFIED))
                    .with(Protocol::Udp(0))
                    .with(Protocol::QuicV1),
            ],
            mdns: true,
            bootstrap: Vec::new(),
            peers: Vec::new(),
            request_timeout: Duration::from_secs(10),
            idle_connection_timeout: Duration::from_secs(60),
            ping_interval: Duration::from_secs(2),
            ping_timeout: Duration::from_secs(5),
            swarm_key: None,
            deny: Vec::new(),
            max_connections: 256,
            max_connections_per_peer: 8,
            max_memory: None,
            relays: Vec::new(),
            trusted_peers: Vec::new(),
            inbound_queue: 1024,
            relay_server: false,
            relay_max_circuits: 64,
            relay_max_circuit_duration: Duration::from_secs(30 * 60),
            relay_max_circuit_bytes: 1 << 30,
        }
    }
}

/// How a peer was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// mDNS on the LAN.
    Mdns,
    /// A Kademlia provider record or routing-table entry.
    Dht,
    /// Given on the command line (`--peer`, `--bootstrap`) or a connection it opened to us.
    Given,
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Source::Mdns => "mDNS",
            Source::Dht => "DHT",
            Source::Given => "given",
        })
    }
}

/// What this peer knows of another.
#[derive(Clone, Debug, Default)]
pub struct PeerEntry {
    pub peer: Option<PeerId>,
    pub addrs: Vec<Multiaddr>,
    pub sources: BTreeSet<Source>,
    /// identify's agent string, once identified.
    pub agent: Option<String>,
    /// identify's protocol version; only `protocol_version()` is compatible.
    pub protocol_version: Option<String>,
    /// Protocols the peer speaks (from identify).
    pub protocols: Vec<String>,
    /// Last ping round trip.
    pub rtt: Option<Duration>,
    pub connected: bool,
    /// How we are connected to it now (none when not connected).
    pub route: Option<Route>,
    /// A direct connection to it was made by hole punching (DCUtR).
    pub hole_punched: bool,
    /// The remote address of its latest connection, as this peer saw it (not what the
    /// peer claims): a job counts the peers behind one network host as one vote.
    pub connected_from: Option<Multiaddr>,
}

/// How a connection reaches a peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Route {
    /// A connection of our own (on a LAN, or to a reachable peer).
    Direct,
    /// A direct connection made by hole punching through NATs (DCUtR).
    HolePunched,
    /// Through a relay peer (circuit relay v2).
    Relayed,
}

impl std::fmt::Display for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Route::Direct => "direct",
            Route::HolePunched => "hole-punched",
            Route::Relayed => "relayed",
        })
    }
}

impl PeerEntry {
    /// Identified as an idlegrid peer of our protocol version that serves tasks.
    pub fn is_compatible(&self) -> bool {
        self.protocol_version.as_deref() == Some(protocol_version().as_str())
            && self
                .protocols
                .iter()
                .any(|p| p == idlegrid_protocol::TASK_PROTOCOL)
    }
}

/// What the event loop publishes about peers.
#[derive(Clone, Debug)]
pub enum PeerEvent {
    Discovered {
        peer: PeerId,
        source: Source,
    },
    /// identify answered; `compatible` says whether it speaks our protocols.
    Identified {
        peer: PeerId,
        compatible: bool,
    },
    Disconnected {
        peer: PeerId,
    },
    /// A ping was answered in `rtt` (published when the RTT moved by a quarter and a
    /// millisecond since the last one published, and for the first).
    Pinged {
        peer: PeerId,
        rtt: Duration,
    },
    /// A ping went unanswered (timeout or broken stream) on a connection still open.
    Unresponsive {
        peer: PeerId,
        reason: String,
    },
}

/// Why a request to a peer failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum NetError {
    #[error("peer {peer} did not answer in time")]
    Timeout { peer: PeerId },
    #[error("could not reach peer {peer}")]
    Unreachable { peer: PeerId },
    #[error("connection to peer {peer} closed")]
    ConnectionClosed { peer: PeerId },
    #[error("peer {peer} does not speak idlegrid's protocols")]
    Unsupported { peer: PeerId },
    /// The peer answered that it has too many requests queued to take this one.
    #[error("peer {peer} is busy (too many requests queued); ask again later")]
    Busy { peer: PeerId },
    #[error("peer {peer}: {reason}")]
    Stream { peer: PeerId, reason: String },
    #[error("the network task has stopped")]
    Stopped,
    #[error("cannot listen on {addr}: {reason}")]
    Listen { addr: Multiaddr, reason: String },
    #[error("cannot set up the network: {0}")]
    Setup(String),
}
