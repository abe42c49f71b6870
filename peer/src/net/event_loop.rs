//! The one task that owns the `Swarm`. It turns [`Command`]s from clients into swarm
//! calls, swarm events into replies (pending replies wait in maps keyed by request or
//! query id), keeps the peer book, publishes [`PeerEvent`]s, and hands inbound requests
//! to the services on the [`Inbound`] channel. It never blocks on disk or compute.
//!
//! It also finds a way through NATs: when autonat says others cannot dial us, it takes
//! a slot on every known relay peer (or on `NetConfig::relays` from the start); a
//! request to a peer that cannot be dialled directly is sent once more through the
//! known relays; when DCUtR's hole punching gives a direct connection, the relayed one
//! is closed, and requests cut by that (or by a relay's limits) are sent again on the
//! connection that remains.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use futures::StreamExt;
use idlegrid_protocol::{BlobRequest, BlobResponse, TaskRequest, TaskResponse, KAD_PROTOCOL};
use libp2p::core::transport::ListenerId;
use libp2p::multiaddr::Protocol;
use libp2p::request_response::{self, OutboundFailure, OutboundRequestId, ResponseChannel};
use libp2p::swarm::{ConnectionId, SwarmEvent};
use libp2p::{
    autonat, dcutr, identify, identity, kad, mdns, noise, ping, relay, tcp, yamux, Multiaddr,
    PeerId, Swarm, Transport,
};
use tokio::sync::{broadcast, mpsc, oneshot};

use super::behaviour::{Behaviour, BehaviourEvent};
use super::client::{Client, Command};
use super::{NetConfig, NetError, PeerEntry, PeerEvent, Route, Source};

/// An inbound request for the worker or blob service, with the channel to answer on.
pub enum Inbound {
    Task {
        peer: PeerId,
        request: TaskRequest,
        channel: ResponseChannel<TaskResponse>,
    },
    Blob {
        peer: PeerId,
        request: BlobRequest,
        channel: ResponseChannel<BlobResponse>,
    },
}

/// Inbound requests queued for the services before new ones are refused as busy.
const INBOUND_QUEUE: usize = 1024;

/// An outbound request waiting for its answer. The request is kept so it can be sent
/// once more when its connection closed under it while another one to the same peer
/// remains, or when the peer could not be dialled directly but may be through a relay.
/// Every request idlegrid sends can be repeated safely (a worker knows a `Run` it
/// already has by the chunk's id).
struct Pending<Req, Resp> {
    peer: PeerId,
    request: Req,
    reply: oneshot::Sender<Result<Resp, NetError>>,
    retries_left: u8,
}

/// How many times one request may be sent again (see [`Pending`]): once for a
/// direct dial that failed, once for a connection closed under it.
const RETRIES: u8 = 2;

type PendingMap<Req, Resp> = HashMap<OutboundRequestId, Pending<Req, Resp>>;

pub struct EventLoop {
    swarm: Swarm<Behaviour>,
    commands: mpsc::Receiver<Command>,
    inbound: mpsc::Sender<Inbound>,
    events: broadcast::Sender<PeerEvent>,
    book: HashMap<PeerId, PeerEntry>,
    pending_task: PendingMap<TaskRequest, TaskResponse>,
    pending_blob: PendingMap<BlobRequest, BlobResponse>,
    pending_providers: HashMap<kad::QueryId, (HashSet<PeerId>, oneshot::Sender<HashSet<PeerId>>)>,
    listen_addrs: Vec<Multiaddr>,
    listen_waiters: Vec<oneshot::Sender<Vec<Multiaddr>>>,
    /// Open connections per peer, and whether each goes through a relay.
    connections: HashMap<PeerId, HashMap<ConnectionId, bool>>,
    /// Peers that relay for others (identify lists the relay hop protocol), with the
    /// address to reach them on.
    relays: HashMap<PeerId, Multiaddr>,
    /// Slots held on relays: the listener of each `/p2p-circuit` address.
    reservations: HashMap<PeerId, ListenerId>,
    /// Relays given in the config: a slot is kept on them whatever autonat says.
    configured_relays: HashSet<PeerId>,
    /// What autonat last concluded about our reachability.
    nat: autonat::NatStatus,
    /// Kernel keys this peer advertises, again whenever its addresses change.
    provided: Vec<String>,
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
}

/// Builds the swarm, starts listening and dialling, and returns the client, the inbound
/// request stream, and the loop to run (`tokio::spawn(event_loop.run())`).
pub fn spawn(
    key: identity::Keypair,
    config: NetConfig,
) -> Result<(Client, mpsc::Receiver<Inbound>, EventLoop), NetError> {
    let setup = |e: &dyn std::fmt::Display| NetError::Setup(e.to_string());
    let local_peer_id = key.public().to_peer_id();
    type BoxError = Box<dyn std::error::Error + Send + Sync>;
    let behaviour = |key: &identity::Keypair, relay_client| {
        Behaviour::new(key, &config, relay_client).map_err(|e| Box::new(e) as BoxError)
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
    let mut swarm = match config.swarm_key {
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

    let (command_tx, command_rx) = mpsc::channel(256);
    let (inbound_tx, inbound_rx) = mpsc::channel(INBOUND_QUEUE);
    let (events, _) = broadcast::channel(1024);
    let mut event_loop = EventLoop {
        swarm,
        commands: command_rx,
        inbound: inbound_tx,
        events: events.clone(),
        book: HashMap::new(),
        pending_task: HashMap::new(),
        pending_blob: HashMap::new(),
        pending_providers: HashMap::new(),
        listen_addrs: Vec::new(),
        listen_waiters: Vec::new(),
        connections: HashMap::new(),
        relays: HashMap::new(),
        reservations: HashMap::new(),
        configured_relays: HashSet::new(),
        nat: autonat::NatStatus::Unknown,
        provided: Vec::new(),
        pongs: HashMap::new(),
        published_rtt: HashMap::new(),
        silence: config.ping_interval + config.ping_timeout,
        ping_interval: config.ping_interval,
    };
    // Bootstrap peers are tried one at a time by the node (see `node::join`); Kademlia
    // bootstraps by itself as soon as one is in its routing table.
    for addr in &config.peers {
        event_loop.dial(addr.clone())?;
    }
    for addr in &config.relays {
        let Some(relay) = peer_of(addr) else {
            return Err(NetError::Setup(format!(
                "relay address {addr} does not end in /p2p/<PeerId>"
            )));
        };
        event_loop.configured_relays.insert(relay);
        event_loop.relays.insert(relay, without_peer(addr));
        event_loop.reserve(relay);
    }
    let client = Client {
        commands: command_tx,
        events,
        local_peer_id,
    };
    Ok((client, inbound_rx, event_loop))
}

fn peer_of(addr: &Multiaddr) -> Option<PeerId> {
    addr.iter().find_map(|p| match p {
        Protocol::P2p(peer) => Some(peer),
        _ => None,
    })
}

fn without_peer(addr: &Multiaddr) -> Multiaddr {
    addr.iter()
        .filter(|p| !matches!(p, Protocol::P2p(_)))
        .collect()
}

/// Why an inbound request is refused when the services' queue is full.
const BUSY: &str = "too many requests queued; try later";

/// What a request-response event leaves for the caller to do.
enum Settled<Req, Resp> {
    Nothing,
    /// A peer's request, for the services.
    Inbound(PeerId, Req, ResponseChannel<Resp>),
    /// One of our requests failed: send it again or tell the client.
    Failed(Pending<Req, Resp>, OutboundFailure),
}

/// Handles the request-response events both protocols share: an answer goes to the
/// waiting client, an inbound failure is logged.
fn settle<Req, Resp>(
    event: request_response::Event<Req, Resp>,
    pending: &mut PendingMap<Req, Resp>,
    protocol: &str,
) -> Settled<Req, Resp> {
    match event {
        request_response::Event::Message {
            peer,
            message:
                request_response::Message::Request {
                    request, channel, ..
                },
            ..
        } => Settled::Inbound(peer, request, channel),
        request_response::Event::Message {
            message:
                request_response::Message::Response {
                    request_id,
                    response,
                },
            ..
        } => {
            if let Some(waiting) = pending.remove(&request_id) {
                let _ = waiting.reply.send(Ok(response));
            }
            Settled::Nothing
        }
        request_response::Event::OutboundFailure {
            request_id, error, ..
        } => match pending.remove(&request_id) {
            Some(waiting) => Settled::Failed(waiting, error),
            None => Settled::Nothing,
        },
        request_response::Event::InboundFailure { peer, error, .. } => {
            // Oversized or malformed requests end here: the stream is dropped unread.
            tracing::info!("{protocol} request from {peer} refused: {error}");
            Settled::Nothing
        }
        request_response::Event::ResponseSent { .. } => Settled::Nothing,
    }
}

/// How a request goes out on one of the two protocols.
type SendFn<Req> = fn(&mut Behaviour, &PeerId, Req, Vec<Multiaddr>) -> OutboundRequestId;

fn send_task(
    b: &mut Behaviour,
    p: &PeerId,
    r: TaskRequest,
    a: Vec<Multiaddr>,
) -> OutboundRequestId {
    b.task.send_request_with_addresses(p, r, a)
}

fn send_blob(
    b: &mut Behaviour,
    p: &PeerId,
    r: BlobRequest,
    a: Vec<Multiaddr>,
) -> OutboundRequestId {
    b.blob.send_request_with_addresses(p, r, a)
}

/// The `/p2p-circuit` address of `peer` through `relay` reached at `relay_addr`.
fn circuit_addr(relay_addr: &Multiaddr, relay: PeerId, peer: PeerId) -> Multiaddr {
    relay_addr
        .clone()
        .with(Protocol::P2p(relay))
        .with(Protocol::P2pCircuit)
        .with(Protocol::P2p(peer))
}

/// Whether a ping's RTT differs enough from the one last published to publish it:
/// by a quarter and by more than a millisecond (LAN round trips jitter by fractions of
/// one, which no deadline cares about).
fn rtt_moved(last: Duration, now: Duration) -> bool {
    let delta = last.abs_diff(now);
    delta > Duration::from_millis(1) && delta.as_secs_f64() > last.as_secs_f64() / 4.0
}

fn outbound_error(peer: PeerId, error: OutboundFailure) -> NetError {
    match error {
        OutboundFailure::Timeout => NetError::Timeout { peer },
        OutboundFailure::DialFailure => NetError::Unreachable { peer },
        OutboundFailure::ConnectionClosed => NetError::ConnectionClosed { peer },
        OutboundFailure::UnsupportedProtocols => NetError::Unsupported { peer },
        OutboundFailure::Io(e) => NetError::Stream {
            peer,
            reason: e.to_string(),
        },
    }
}

impl EventLoop {
    /// Runs until every client is dropped.
    pub async fn run(mut self) {
        let mut pings = tokio::time::interval(self.ping_interval.max(Duration::from_millis(50)));
        pings.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                event = self.swarm.select_next_some() => self.handle_event(event),
                command = self.commands.recv() => match command {
                    Some(command) => self.handle_command(command),
                    None => break,
                },
                _ = pings.tick() => self.check_silence(),
            }
        }
    }

    /// Reports peers whose pings have gone unanswered for too long. libp2p's ping
    /// keeps its first failure to itself and then waits out a 10 s stream negotiation
    /// before it reports one, so the silence is measured here from its answers.
    fn check_silence(&mut self) {
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

    fn entry(&mut self, peer: PeerId) -> &mut PeerEntry {
        self.book.entry(peer).or_insert_with(|| PeerEntry {
            peer: Some(peer),
            ..Default::default()
        })
    }

    /// Records that `peer` is at `addr`, found by `source`; publishes it if new.
    fn learn(&mut self, peer: PeerId, addr: Option<Multiaddr>, source: Source) {
        if peer == *self.swarm.local_peer_id() {
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
            self.swarm.add_peer_address(peer, addr);
        }
        if new_source {
            let _ = self.events.send(PeerEvent::Discovered { peer, source });
        }
    }

    fn dial(&mut self, addr: Multiaddr) -> Result<(), NetError> {
        if let Some(peer) = peer_of(&addr) {
            let bare = without_peer(&addr);
            self.learn(peer, Some(bare.clone()), Source::Given);
            self.swarm.behaviour_mut().kad.add_address(&peer, bare);
        }
        self.swarm.dial(addr.clone()).map_err(|e| NetError::Stream {
            peer: peer_of(&addr).unwrap_or(*self.swarm.local_peer_id()),
            reason: format!("cannot dial {addr}: {e}"),
        })
    }

    fn handle_command(&mut self, command: Command) {
        match command {
            Command::Dial { addr, reply } => {
                let _ = reply.send(self.dial(addr));
            }
            Command::Task {
                peer,
                request,
                reply,
            } => {
                let (id, pending) = self.request(peer, request, reply, send_task);
                self.pending_task.insert(id, pending);
            }
            Command::Blob {
                peer,
                request,
                reply,
            } => {
                let (id, pending) = self.request(peer, request, reply, send_blob);
                self.pending_blob.insert(id, pending);
            }
            Command::RespondTask { channel, response } => {
                // Err means the requester gave up (timeout, closed): nothing to do.
                let _ = self
                    .swarm
                    .behaviour_mut()
                    .task
                    .send_response(channel, response);
            }
            Command::RespondBlob { channel, response } => {
                let _ = self
                    .swarm
                    .behaviour_mut()
                    .blob
                    .send_response(channel, response);
            }
            Command::Peers { reply } => {
                let _ = reply.send(self.book.values().cloned().collect());
            }
            Command::ListenAddrs { reply } => {
                if self.listen_addrs.is_empty() {
                    self.listen_waiters.push(reply);
                } else {
                    let _ = reply.send(self.full_listen_addrs());
                }
            }
            Command::Provide { keys } => {
                for key in &keys {
                    if !self.provided.contains(key) {
                        self.provided.push(key.clone());
                    }
                }
                for key in keys {
                    if let Err(e) = self
                        .swarm
                        .behaviour_mut()
                        .kad
                        .start_providing(kad::RecordKey::new(&key))
                    {
                        tracing::warn!("cannot advertise {key} in the DHT: {e}");
                    }
                }
            }
            Command::FindProviders { key, reply } => {
                let id = self
                    .swarm
                    .behaviour_mut()
                    .kad
                    .get_providers(kad::RecordKey::new(&key));
                self.pending_providers.insert(id, (HashSet::new(), reply));
            }
        }
    }

    /// Sends a request to `peer` on the addresses we know of it.
    fn request<Req: Clone, Resp>(
        &mut self,
        peer: PeerId,
        request: Req,
        reply: oneshot::Sender<Result<Resp, NetError>>,
        send: SendFn<Req>,
    ) -> (OutboundRequestId, Pending<Req, Resp>) {
        let addrs = self
            .book
            .get(&peer)
            .map(|e| e.addrs.clone())
            .unwrap_or_default();
        let id = send(self.swarm.behaviour_mut(), &peer, request.clone(), addrs);
        let pending = Pending {
            peer,
            request,
            reply,
            retries_left: RETRIES,
        };
        (id, pending)
    }

    /// A failed request goes out again if another way to its peer remains: the other
    /// connection when the one it was on closed (a relayed one replaced by a direct
    /// one, or cut by the relay's limits), or the known relays when the peer could not
    /// be dialled. Otherwise the client learns why it failed.
    fn resend<Req: Clone, Resp>(
        &mut self,
        mut pending: Pending<Req, Resp>,
        error: OutboundFailure,
        send: SendFn<Req>,
    ) -> Option<(OutboundRequestId, Pending<Req, Resp>)> {
        let peer = pending.peer;
        let addrs = match &error {
            _ if pending.retries_left == 0 => None,
            OutboundFailure::ConnectionClosed if self.swarm.is_connected(&peer) => Some(Vec::new()),
            OutboundFailure::DialFailure => {
                let through_relays: Vec<Multiaddr> = self
                    .relays
                    .iter()
                    .filter(|(relay, _)| **relay != peer)
                    .map(|(relay, addr)| circuit_addr(addr, *relay, peer))
                    .collect();
                (!through_relays.is_empty()).then_some(through_relays)
            }
            _ => None,
        };
        let Some(addrs) = addrs else {
            let _ = pending.reply.send(Err(outbound_error(peer, error)));
            return None;
        };
        tracing::debug!("sending a request to {peer} again after {error}");
        pending.retries_left -= 1;
        let id = send(
            self.swarm.behaviour_mut(),
            &peer,
            pending.request.clone(),
            addrs,
        );
        Some((id, pending))
    }

    fn full_listen_addrs(&self) -> Vec<Multiaddr> {
        let me = *self.swarm.local_peer_id();
        self.listen_addrs
            .iter()
            .map(|a| a.clone().with(Protocol::P2p(me)))
            .collect()
    }

    fn handle_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::Behaviour(BehaviourEvent::Task(event)) => self.on_task(event),
            SwarmEvent::Behaviour(BehaviourEvent::Blob(event)) => self.on_blob(event),
            SwarmEvent::Behaviour(BehaviourEvent::Mdns(mdns::Event::Discovered(found))) => {
                for (peer, addr) in found {
                    self.learn(peer, Some(addr.clone()), Source::Mdns);
                    self.swarm.behaviour_mut().kad.add_address(&peer, addr);
                    if !self.swarm.is_connected(&peer) {
                        let _ = self.swarm.dial(peer);
                    }
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Mdns(mdns::Event::Expired(gone))) => {
                for (peer, addr) in gone {
                    if let Some(entry) = self.book.get_mut(&peer) {
                        entry.addrs.retain(|a| a != &addr);
                    }
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Received {
                peer_id,
                info,
                ..
            })) => self.on_identified(peer_id, info),
            SwarmEvent::Behaviour(BehaviourEvent::Ping(ping::Event { peer, result, .. })) => {
                // Both outcomes go to whoever runs a job (its scheduler's breakers and
                // deadlines); libp2p's ping does not close the connection on failure,
                // so a frozen peer would otherwise only show when a request times out.
                let event = match result {
                    Ok(rtt) => {
                        if let Some(entry) = self.book.get_mut(&peer) {
                            entry.rtt = Some(rtt);
                        }
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
            SwarmEvent::Behaviour(BehaviourEvent::Kad(event)) => self.on_kad(event),
            SwarmEvent::Behaviour(BehaviourEvent::Autonat(event)) => self.on_autonat(event),
            SwarmEvent::Behaviour(BehaviourEvent::RelayClient(event)) => {
                self.on_relay_client(event)
            }
            SwarmEvent::Behaviour(BehaviourEvent::RelayServer(event)) => {
                tracing::debug!("relay: {event:?}");
            }
            SwarmEvent::Behaviour(BehaviourEvent::Dcutr(event)) => self.on_dcutr(event),
            SwarmEvent::ConnectionEstablished {
                peer_id,
                endpoint,
                connection_id,
                ..
            } => {
                if peer_id == *self.swarm.local_peer_id() {
                    return;
                }
                let relayed = endpoint.is_relayed();
                self.connections
                    .entry(peer_id)
                    .or_default()
                    .insert(connection_id, relayed);
                let addr = endpoint.get_remote_address().clone();
                let dialer = endpoint.is_dialer();
                let known = self.book.contains_key(&peer_id);
                self.entry(peer_id).connected = true;
                self.update_route(peer_id);
                let entry = self.entry(peer_id);
                if !known {
                    // We only dial unknown peers on the DHT's behalf (its queries
                    // connect to the peers it learns of); a peer that dialled us found
                    // us itself. Either way identify will tell what it is.
                    let source = if dialer { Source::Dht } else { Source::Given };
                    entry.sources.insert(source);
                    if dialer {
                        entry.addrs.push(addr);
                    }
                    let _ = self.events.send(PeerEvent::Discovered {
                        peer: peer_id,
                        source,
                    });
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                connection_id,
                num_established,
                ..
            } => {
                if let Some(connections) = self.connections.get_mut(&peer_id) {
                    connections.remove(&connection_id);
                }
                if num_established == 0 {
                    self.connections.remove(&peer_id);
                }
                if let Some(entry) = self.book.get_mut(&peer_id) {
                    entry.connected = num_established > 0;
                }
                self.update_route(peer_id);
                if num_established == 0 {
                    self.pongs.remove(&peer_id);
                    self.published_rtt.remove(&peer_id);
                    let _ = self.events.send(PeerEvent::Disconnected { peer: peer_id });
                }
            }
            SwarmEvent::ListenerClosed {
                listener_id,
                reason,
                ..
            } => {
                // A slot on a relay ends with the connection to the relay; forget it so
                // a new one is taken when the relay is back.
                let gone: Vec<PeerId> = self
                    .reservations
                    .iter()
                    .filter(|(_, id)| **id == listener_id)
                    .map(|(relay, _)| *relay)
                    .collect();
                for relay in gone {
                    self.reservations.remove(&relay);
                    tracing::info!("slot on relay {relay} closed: {reason:?}");
                }
            }
            SwarmEvent::NewListenAddr { address, .. } => {
                if address.iter().any(|p| p == Protocol::P2pCircuit) {
                    // Reachable through a relay: not one of our own sockets, so it is
                    // not handed to `listen_addrs` waiters (tests and bootstrap
                    // nodes print those).
                    tracing::info!("reachable through relay at {address}");
                    return;
                }
                tracing::info!("listening on {address}");
                self.listen_addrs.push(address);
                let addrs = self.full_listen_addrs();
                for waiter in self.listen_waiters.drain(..) {
                    let _ = waiter.send(addrs.clone());
                }
            }
            SwarmEvent::OutgoingConnectionError { peer_id, error, .. } => {
                tracing::debug!("dial to {peer_id:?} failed: {error}");
            }
            _ => {}
        }
    }

    fn on_identified(&mut self, peer: PeerId, info: identify::Info) {
        let relays_for_others = info.protocols.contains(&relay::HOP_PROTOCOL_NAME);
        if relays_for_others && !self.relays.contains_key(&peer) {
            // Reach the relay where we reached it, else where it says it listens.
            let direct = |a: &&Multiaddr| !a.iter().any(|p| p == Protocol::P2pCircuit);
            let dialled = self
                .book
                .get(&peer)
                .and_then(|e| e.addrs.iter().find(direct));
            if let Some(addr) = dialled.or(info.listen_addrs.iter().find(direct)).cloned() {
                tracing::debug!("{peer} relays for others, at {addr}");
                self.relays.insert(peer, addr);
                if self.nat == autonat::NatStatus::Private {
                    self.reserve(peer);
                }
            }
        }
        let speaks_kad = info.protocols.iter().any(|p| p.as_ref() == KAD_PROTOCOL);
        if speaks_kad {
            for addr in &info.listen_addrs {
                self.swarm
                    .behaviour_mut()
                    .kad
                    .add_address(&peer, addr.clone());
            }
        }
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

    /// Settles a request-response event of either protocol (`pending` picks its map):
    /// failed requests are sent again or reported; returns a peer's request.
    fn settle<Req: Clone, Resp>(
        &mut self,
        event: request_response::Event<Req, Resp>,
        pending: fn(&mut EventLoop) -> &mut PendingMap<Req, Resp>,
        send: SendFn<Req>,
        protocol: &str,
    ) -> Option<(PeerId, Req, ResponseChannel<Resp>)> {
        match settle(event, pending(self), protocol) {
            Settled::Nothing => None,
            Settled::Failed(waiting, error) => {
                if let Some((id, waiting)) = self.resend(waiting, error, send) {
                    pending(self).insert(id, waiting);
                }
                None
            }
            Settled::Inbound(peer, request, channel) => Some((peer, request, channel)),
        }
    }

    fn on_task(&mut self, event: request_response::Event<TaskRequest, TaskResponse>) {
        let Some((peer, request, channel)) =
            self.settle(event, |l| &mut l.pending_task, send_task, "task")
        else {
            return;
        };
        let inbound = Inbound::Task {
            peer,
            request,
            channel,
        };
        if let Err(mpsc::error::TrySendError::Full(Inbound::Task {
            request, channel, ..
        })) = self.inbound.try_send(inbound)
        {
            let chunk = match &request {
                TaskRequest::Run { spec } => spec.id(),
                TaskRequest::Poll { chunk } | TaskRequest::Cancel { chunk } => *chunk,
                TaskRequest::Probe => idlegrid_protocol::Cid([0; 32]),
            };
            let _ = self.swarm.behaviour_mut().task.send_response(
                channel,
                TaskResponse::Refused {
                    chunk,
                    reason: BUSY.into(),
                },
            );
        }
    }

    fn on_blob(&mut self, event: request_response::Event<BlobRequest, BlobResponse>) {
        let Some((peer, request, channel)) =
            self.settle(event, |l| &mut l.pending_blob, send_blob, "blob")
        else {
            return;
        };
        if let Err(mpsc::error::TrySendError::Full(Inbound::Blob { channel, .. })) =
            self.inbound.try_send(Inbound::Blob {
                peer,
                request,
                channel,
            })
        {
            let _ = self.swarm.behaviour_mut().blob.send_response(
                channel,
                BlobResponse::Refused {
                    reason: BUSY.into(),
                },
            );
        }
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

    /// Takes a slot on `relay` (listens on its `/p2p-circuit` address) unless one is
    /// held already.
    fn reserve(&mut self, relay: PeerId) {
        if self.reservations.contains_key(&relay) {
            return;
        }
        let Some(addr) = self.relays.get(&relay) else {
            return;
        };
        let circuit = addr
            .clone()
            .with(Protocol::P2p(relay))
            .with(Protocol::P2pCircuit);
        match self.swarm.listen_on(circuit.clone()) {
            Ok(id) => {
                tracing::info!("asking relay {relay} for a slot ({circuit})");
                self.reservations.insert(relay, id);
            }
            Err(e) => tracing::warn!("cannot listen through relay {circuit}: {e}"),
        }
    }

    fn on_autonat(&mut self, event: autonat::Event) {
        let autonat::Event::StatusChanged { old, new } = event else {
            return;
        };
        tracing::info!("reachability: {old:?} -> {new:?}");
        self.nat = new;
        // A peer others cannot dial would only slow their DHT queries down: it asks
        // but does not answer until it is reachable again.
        let mode = match &self.nat {
            autonat::NatStatus::Private => kad::Mode::Client,
            _ => kad::Mode::Server,
        };
        self.swarm.behaviour_mut().kad.set_mode(Some(mode));
        match &self.nat {
            autonat::NatStatus::Private => {
                let relays: Vec<PeerId> = self.relays.keys().copied().collect();
                if relays.is_empty() {
                    tracing::warn!(
                        "other peers cannot dial this one and no relay is known: only \
                         peers it dials itself can reach it (a bootstrap node relays)"
                    );
                }
                for relay in relays {
                    self.reserve(relay);
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
                        self.swarm.remove_listener(id);
                    }
                }
            }
            autonat::NatStatus::Unknown => {}
        }
    }

    fn on_relay_client(&mut self, event: relay::client::Event) {
        match event {
            relay::client::Event::ReservationReqAccepted {
                relay_peer_id,
                renewal: false,
                ..
            } => {
                tracing::info!("relay {relay_peer_id} holds a slot for this peer");
                // Advertise again so the provider records carry the relayed address.
                for key in self.provided.clone() {
                    let _ = self
                        .swarm
                        .behaviour_mut()
                        .kad
                        .start_providing(kad::RecordKey::new(&key));
                }
            }
            other => tracing::debug!("relay client: {other:?}"),
        }
    }

    fn on_dcutr(&mut self, event: dcutr::Event) {
        let peer = event.remote_peer_id;
        match event.result {
            Ok(_) => {
                // The relayed connection has served its purpose; requests still on it
                // are sent again on the direct one (see `resend`).
                let relayed: Vec<ConnectionId> = self
                    .connections
                    .get(&peer)
                    .map(|c| c.iter().filter(|(_, r)| **r).map(|(id, _)| *id).collect())
                    .unwrap_or_default();
                tracing::info!("direct connection to {peer} by hole punching");
                self.entry(peer).hole_punched = true;
                for id in relayed {
                    self.swarm.close_connection(id);
                }
            }
            Err(e) => tracing::info!(
                "hole punching to {peer} failed ({e}); its traffic goes through the relay"
            ),
        }
    }

    fn on_kad(&mut self, event: kad::Event) {
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
                    self.learn(*peer, None, Source::Dht);
                    if !self.swarm.is_connected(peer) {
                        let _ = self.swarm.dial(*peer);
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
                    self.learn(peer, Some(addr.clone()), Source::Dht);
                }
            }
            _ => {}
        }
    }
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
