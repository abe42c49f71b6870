//! The one task that owns the `Swarm`. Its `select!` loop takes swarm events, client
//! [`Command`]s and the ping-silence tick, and hands each to the part that owns that
//! concern, lending it the swarm: the peer book ([`PeerBook`]) and ping liveness
//! ([`Liveness`]), outbound requests and their retries ([`Outbound`]), NATs ([`Nat`]:
//! autonat, relays, hole punching) and Kademlia ([`Kad`]). Inbound requests go to the
//! services on the [`Inbound`] channel; peer changes are published as [`PeerEvent`](super::PeerEvent)s.
//! It never blocks on disk or compute.

use futures::StreamExt;
use idlegrid_protocol::{BlobRequest, BlobResponse, TaskRequest, TaskResponse};
use libp2p::request_response::{self, ResponseChannel};
use libp2p::swarm::SwarmEvent;
use libp2p::{identify, identity, mdns, Multiaddr, PeerId};
use tokio::sync::{broadcast, mpsc};

use super::behaviour::BehaviourEvent;
use super::client::{Client, Command};
use super::kad::Kad;
use super::liveness::Liveness;
use super::nat::Nat;
use super::peers::PeerBook;
use super::requests::Outbound;
use super::swarm::{self, peer_of, without_peer, Listening, PeerSwarm};
use super::{NetConfig, NetError, Source};

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

/// Why an inbound request about a chunk or a blob is refused when the services' queue
/// is full (a probe is answered `TaskResponse::Busy`).
const BUSY: &str = "too many requests queued; try later";

pub struct EventLoop {
    swarm: PeerSwarm,
    commands: mpsc::Receiver<Command>,
    inbound: mpsc::Sender<Inbound>,
    book: PeerBook,
    liveness: Liveness,
    tasks: Outbound<TaskRequest, TaskResponse>,
    blobs: Outbound<BlobRequest, BlobResponse>,
    nat: Nat,
    kad: Kad,
    listening: Listening,
    /// Inbound requests answered as busy since the services' queue filled up: said when
    /// it fills and when it is half empty again, not once per request.
    answered_busy: u64,
}

/// Builds the swarm, starts listening and dialling, and returns the client, the inbound
/// request stream, and the loop to run (`tokio::spawn(event_loop.run())`).
pub fn spawn(
    key: identity::Keypair,
    config: NetConfig,
) -> Result<(Client, mpsc::Receiver<Inbound>, EventLoop), NetError> {
    let local_peer_id = key.public().to_peer_id();
    let mut swarm = swarm::build(key, &config)?;
    swarm::listen(&mut swarm, &config)?;

    let (command_tx, command_rx) = mpsc::channel(256);
    let (inbound_tx, inbound_rx) = mpsc::channel(config.inbound_queue.max(1));
    let (events, _) = broadcast::channel(1024);
    let mut event_loop = EventLoop {
        swarm,
        commands: command_rx,
        inbound: inbound_tx,
        book: PeerBook::new(events.clone()),
        liveness: Liveness::new(&config, events.clone()),
        tasks: Outbound::task(),
        blobs: Outbound::blob(),
        nat: Nat::new(&config),
        kad: Kad::new(),
        listening: Listening::default(),
        answered_busy: 0,
    };
    // Bootstrap peers are tried one at a time by the node (see `node::join`); Kademlia
    // bootstraps by itself as soon as one is in its routing table.
    for addr in &config.peers {
        event_loop.dial(addr.clone())?;
    }
    for addr in &config.relays {
        event_loop.nat.add_configured(&mut event_loop.swarm, addr)?;
    }
    let client = Client {
        commands: command_tx,
        events,
        local_peer_id,
        batches: Default::default(),
    };
    Ok((client, inbound_rx, event_loop))
}

impl EventLoop {
    /// Runs until every client is dropped.
    pub async fn run(mut self) {
        let mut pings = tokio::time::interval(self.liveness.check_interval());
        pings.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                event = self.swarm.select_next_some() => self.handle_event(event),
                command = self.commands.recv() => match command {
                    Some(command) => self.handle_command(command),
                    None => break,
                },
                _ = pings.tick() => self.liveness.check_silence(),
            }
        }
    }

    fn dial(&mut self, addr: Multiaddr) -> Result<(), NetError> {
        if let Some(peer) = peer_of(&addr) {
            let bare = without_peer(&addr);
            self.book
                .learn(&mut self.swarm, peer, Some(bare.clone()), Source::Given);
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
                let addrs = self.book.addrs(&peer);
                self.tasks
                    .request(&mut self.swarm, peer, addrs, request, reply);
            }
            Command::Blob {
                peer,
                request,
                reply,
            } => {
                let addrs = self.book.addrs(&peer);
                self.blobs
                    .request(&mut self.swarm, peer, addrs, request, reply);
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
                let _ = reply.send(self.book.list());
            }
            Command::ListenAddrs { reply } => {
                self.listening.ask(*self.swarm.local_peer_id(), reply);
            }
            Command::Provide { keys } => self.kad.provide(&mut self.swarm, keys),
            Command::FindProviders { key, reply } => {
                self.kad.find_providers(&mut self.swarm, key, reply)
            }
        }
    }

    fn handle_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        let swarm = &mut self.swarm;
        match event {
            SwarmEvent::Behaviour(BehaviourEvent::Task(event)) => self.on_task(event),
            SwarmEvent::Behaviour(BehaviourEvent::Blob(event)) => self.on_blob(event),
            SwarmEvent::Behaviour(BehaviourEvent::Mdns(mdns::Event::Discovered(found))) => {
                for (peer, addr) in found {
                    self.book
                        .learn(swarm, peer, Some(addr.clone()), Source::Mdns);
                    swarm.behaviour_mut().kad.add_address(&peer, addr);
                    if !swarm.is_connected(&peer) {
                        let _ = swarm.dial(peer);
                    }
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Mdns(mdns::Event::Expired(gone))) => {
                self.book.on_mdns_expired(gone)
            }
            SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Received {
                peer_id,
                info,
                ..
            })) => {
                self.nat.on_identified(swarm, &self.book, peer_id, &info);
                self.kad.on_identified(swarm, peer_id, &info);
                self.book.on_identified(peer_id, info);
            }
            SwarmEvent::Behaviour(BehaviourEvent::Ping(event)) => {
                self.liveness.on_ping(&mut self.book, event)
            }
            SwarmEvent::Behaviour(BehaviourEvent::Kad(event)) => {
                self.kad.on_event(swarm, &mut self.book, event)
            }
            SwarmEvent::Behaviour(BehaviourEvent::Autonat(event)) => {
                let Some(status) = self.nat.on_autonat(event) else {
                    return;
                };
                self.kad.follow_reachability(swarm, status);
                self.nat.follow_reachability(swarm);
            }
            SwarmEvent::Behaviour(BehaviourEvent::RelayClient(event)) => {
                let new_slot = self.nat.on_relay_client(event);
                if new_slot {
                    self.kad.advertise_again(swarm);
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::RelayServer(event)) => {
                tracing::debug!("relay: {event:?}");
            }
            SwarmEvent::Behaviour(BehaviourEvent::Dcutr(event)) => {
                self.nat.on_dcutr(swarm, &mut self.book, event)
            }
            SwarmEvent::ConnectionEstablished {
                peer_id,
                endpoint,
                connection_id,
                ..
            } if peer_id != *swarm.local_peer_id() => {
                self.book.on_connected(peer_id, connection_id, &endpoint)
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                connection_id,
                num_established,
                ..
            } => {
                if num_established == 0 {
                    self.liveness.forget(&peer_id);
                }
                self.book.on_closed(peer_id, connection_id, num_established);
            }
            SwarmEvent::ListenerClosed {
                listener_id,
                reason,
                ..
            } => self.nat.on_listener_closed(listener_id, &reason),
            SwarmEvent::NewListenAddr { address, .. } => {
                self.listening.on_new_addr(*swarm.local_peer_id(), address)
            }
            SwarmEvent::OutgoingConnectionError { peer_id, error, .. } => {
                tracing::debug!("dial to {peer_id:?} failed: {error}");
            }
            _ => {}
        }
    }

    /// Settles a task-protocol event; a peer's request goes to the worker, or is
    /// answered as busy when its queue is full: a probe with `Busy` (the asker probes
    /// again later), a request about a chunk with a refusal naming the chunk.
    fn on_task(&mut self, event: request_response::Event<TaskRequest, TaskResponse>) {
        let Some((peer, request, channel)) =
            self.tasks.settle(&mut self.swarm, self.nat.relays(), event)
        else {
            return;
        };
        let inbound = Inbound::Task {
            peer,
            request,
            channel,
        };
        let Err(mpsc::error::TrySendError::Full(Inbound::Task {
            request, channel, ..
        })) = self.inbound.try_send(inbound)
        else {
            self.queue_has_room();
            return;
        };
        self.queue_full(peer);
        let response = match request {
            TaskRequest::Probe => TaskResponse::Busy,
            TaskRequest::Run { spec } => busy_refusal(spec.id()),
            TaskRequest::Poll { chunk } | TaskRequest::Cancel { chunk } => busy_refusal(chunk),
            TaskRequest::RunMany { specs } => TaskResponse::Many {
                answers: specs.iter().map(|spec| busy_refusal(spec.id())).collect(),
            },
        };
        let _ = self
            .swarm
            .behaviour_mut()
            .task
            .send_response(channel, response);
    }

    /// Settles a blob-protocol event; a peer's request goes to the blob service, or
    /// is refused as busy when its queue is full.
    fn on_blob(&mut self, event: request_response::Event<BlobRequest, BlobResponse>) {
        let Some((peer, request, channel)) =
            self.blobs.settle(&mut self.swarm, self.nat.relays(), event)
        else {
            return;
        };
        let Err(mpsc::error::TrySendError::Full(Inbound::Blob { channel, .. })) =
            self.inbound.try_send(Inbound::Blob {
                peer,
                request,
                channel,
            })
        else {
            self.queue_has_room();
            return;
        };
        self.queue_full(peer);
        let _ = self.swarm.behaviour_mut().blob.send_response(
            channel,
            BlobResponse::Refused {
                reason: BUSY.into(),
            },
        );
    }

    fn queue_full(&mut self, peer: PeerId) {
        if self.answered_busy == 0 {
            tracing::warn!(
                "too many requests queued for this peer's services: answering requests \
                 as busy (the first from {peer})"
            );
        }
        self.answered_busy += 1;
    }

    /// Half empty, not merely one slot free: a queue at its bound would else be said
    /// full and free again at every request.
    fn queue_has_room(&mut self) {
        if self.answered_busy > 0 && self.inbound.capacity() * 2 >= self.inbound.max_capacity() {
            tracing::info!(
                "the services' queue has room again ({} requests were answered as busy)",
                self.answered_busy
            );
            self.answered_busy = 0;
        }
    }
}

fn busy_refusal(chunk: idlegrid_protocol::Cid) -> TaskResponse {
    TaskResponse::Refused {
        chunk,
        reason: BUSY.into(),
    }
}
