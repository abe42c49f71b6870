//! The one task that owns the `Swarm`. It turns [`Command`]s from clients into swarm
//! calls, swarm events into replies (pending replies wait in maps keyed by request or
//! query id), keeps the peer book, publishes [`PeerEvent`]s, and hands inbound requests
//! to the services on the [`Inbound`] channel. It never blocks on disk or compute.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use futures::StreamExt;
use idlegrid_protocol::{BlobRequest, BlobResponse, TaskRequest, TaskResponse, KAD_PROTOCOL};
use libp2p::multiaddr::Protocol;
use libp2p::request_response::{self, OutboundFailure, OutboundRequestId, ResponseChannel};
use libp2p::swarm::SwarmEvent;
use libp2p::{
    identify, identity, kad, mdns, noise, ping, tcp, yamux, Multiaddr, PeerId, Swarm, Transport,
};
use tokio::sync::{broadcast, mpsc, oneshot};

use super::behaviour::{Behaviour, BehaviourEvent};
use super::client::{Client, Command};
use super::{NetConfig, NetError, PeerEntry, PeerEvent, Source};

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

pub struct EventLoop {
    swarm: Swarm<Behaviour>,
    commands: mpsc::Receiver<Command>,
    inbound: mpsc::Sender<Inbound>,
    events: broadcast::Sender<PeerEvent>,
    book: HashMap<PeerId, PeerEntry>,
    pending_task: HashMap<OutboundRequestId, oneshot::Sender<Result<TaskResponse, NetError>>>,
    pending_blob: HashMap<OutboundRequestId, oneshot::Sender<Result<BlobResponse, NetError>>>,
    pending_providers: HashMap<kad::QueryId, (HashSet<PeerId>, oneshot::Sender<HashSet<PeerId>>)>,
    listen_addrs: Vec<Multiaddr>,
    listen_waiters: Vec<oneshot::Sender<Vec<Multiaddr>>>,
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
    let behaviour =
        |key: &identity::Keypair| Behaviour::new(key, &config).map_err(|e| Box::new(e) as BoxError);
    let swarm_config =
        |c: libp2p::swarm::Config| c.with_idle_connection_timeout(config.idle_connection_timeout);
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

/// Handles the request-response events both protocols share: an answer or a failure
/// goes to the waiting client, an inbound failure is logged. Returns an inbound request
/// for the caller to hand on.
fn settle<Req, Resp>(
    event: request_response::Event<Req, Resp>,
    pending: &mut HashMap<OutboundRequestId, oneshot::Sender<Result<Resp, NetError>>>,
    protocol: &str,
) -> Option<(PeerId, Req, ResponseChannel<Resp>)> {
    match event {
        request_response::Event::Message {
            peer,
            message:
                request_response::Message::Request {
                    request, channel, ..
                },
            ..
        } => Some((peer, request, channel)),
        request_response::Event::Message {
            message:
                request_response::Message::Response {
                    request_id,
                    response,
                },
            ..
        } => {
            if let Some(reply) = pending.remove(&request_id) {
                let _ = reply.send(Ok(response));
            }
            None
        }
        request_response::Event::OutboundFailure {
            peer,
            request_id,
            error,
            ..
        } => {
            if let Some(reply) = pending.remove(&request_id) {
                let _ = reply.send(Err(outbound_error(peer, error)));
            }
            None
        }
        request_response::Event::InboundFailure { peer, error, .. } => {
            // Oversized or malformed requests end here: the stream is dropped unread.
            tracing::info!("{protocol} request from {peer} refused: {error}");
            None
        }
        request_response::Event::ResponseSent { .. } => None,
    }
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
                let addrs = self
                    .book
                    .get(&peer)
                    .map(|e| e.addrs.clone())
                    .unwrap_or_default();
                let id = self
                    .swarm
                    .behaviour_mut()
                    .task
                    .send_request_with_addresses(&peer, request, addrs);
                self.pending_task.insert(id, reply);
            }
            Command::Blob {
                peer,
                request,
                reply,
            } => {
                let addrs = self
                    .book
                    .get(&peer)
                    .map(|e| e.addrs.clone())
                    .unwrap_or_default();
                let id = self
                    .swarm
                    .behaviour_mut()
                    .blob
                    .send_request_with_addresses(&peer, request, addrs);
                self.pending_blob.insert(id, reply);
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
            SwarmEvent::ConnectionEstablished {
                peer_id, endpoint, ..
            } => {
                if peer_id == *self.swarm.local_peer_id() {
                    return;
                }
                let addr = endpoint.get_remote_address().clone();
                let dialer = endpoint.is_dialer();
                let known = self.book.contains_key(&peer_id);
                let entry = self.entry(peer_id);
                entry.connected = true;
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
                num_established: 0,
                ..
            } => {
                if let Some(entry) = self.book.get_mut(&peer_id) {
                    entry.connected = false;
                }
                self.pongs.remove(&peer_id);
                self.published_rtt.remove(&peer_id);
                let _ = self.events.send(PeerEvent::Disconnected { peer: peer_id });
            }
            SwarmEvent::NewListenAddr { address, .. } => {
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

    fn on_task(&mut self, event: request_response::Event<TaskRequest, TaskResponse>) {
        let Some((peer, request, channel)) = settle(event, &mut self.pending_task, "task") else {
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
        let Some((peer, request, channel)) = settle(event, &mut self.pending_blob, "blob") else {
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
