//! Our outbound requests on one request-response protocol ([`Outbound`]), from the
//! client's command to the answer it waits for. A request goes out on the addresses
//! the peer book knows; its `oneshot` reply waits in a map keyed by request id. The
//! protocol's events settle it: an answer goes to the waiting client; a failure sends
//! the request once more if another way to the peer remains (the other connection when
//! the one it was on closed, the known relays when the peer could not be dialled),
//! else tells the client why as a [`NetError`]. A peer's request comes back out of
//! [`Outbound::settle`] for the event loop to hand to the services.

use std::collections::HashMap;

use idlegrid_protocol::{BlobRequest, BlobResponse, TaskRequest, TaskResponse};
use libp2p::request_response::{self, OutboundFailure, OutboundRequestId, ResponseChannel};
use libp2p::{Multiaddr, PeerId};
use tokio::sync::oneshot;

use super::behaviour::Behaviour;
use super::swarm::{circuit_addr, PeerSwarm};
use super::NetError;

/// How many times one request may be sent again (see [`Pending`]): once for a
/// direct dial that failed, once for a connection closed under it.
const RETRIES: u8 = 2;

/// The request-response protocols idlegrid speaks, as named in its log lines.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Wire {
    /// `/idlegrid/task/1`: probe, bench, run, poll, cancel.
    Task,
    /// `/idlegrid/blob/1`: blobs by Cid, in pieces.
    Blob,
}

impl std::fmt::Display for Wire {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Wire::Task => "task",
            Wire::Blob => "blob",
        })
    }
}

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

/// A peer's request on this protocol, with the channel to answer on.
pub(super) type InboundRequest<Req, Resp> = (PeerId, Req, ResponseChannel<Resp>);

/// The pending requests of one protocol and how to send on it.
pub(super) struct Outbound<Req, Resp> {
    wire: Wire,
    send: SendFn<Req>,
    pending: HashMap<OutboundRequestId, Pending<Req, Resp>>,
}

impl Outbound<TaskRequest, TaskResponse> {
    pub(super) fn task() -> Self {
        Outbound {
            wire: Wire::Task,
            send: send_task,
            pending: HashMap::new(),
        }
    }
}

impl Outbound<BlobRequest, BlobResponse> {
    pub(super) fn blob() -> Self {
        Outbound {
            wire: Wire::Blob,
            send: send_blob,
            pending: HashMap::new(),
        }
    }
}

impl<Req: Clone, Resp> Outbound<Req, Resp> {
    /// Sends a request to `peer` on `addrs` (the addresses the peer book knows).
    pub(super) fn request(
        &mut self,
        swarm: &mut PeerSwarm,
        peer: PeerId,
        addrs: Vec<Multiaddr>,
        request: Req,
        reply: oneshot::Sender<Result<Resp, NetError>>,
    ) {
        let id = (self.send)(swarm.behaviour_mut(), &peer, request.clone(), addrs);
        let pending = Pending {
            peer,
            request,
            reply,
            retries_left: RETRIES,
        };
        self.pending.insert(id, pending);
    }

    /// Settles a request-response event: an answer goes to the waiting client, a
    /// failed request is sent again (through `relays` if need be) or reported, an
    /// inbound failure is logged. Returns a peer's request.
    pub(super) fn settle(
        &mut self,
        swarm: &mut PeerSwarm,
        relays: &HashMap<PeerId, Multiaddr>,
        event: request_response::Event<Req, Resp>,
    ) -> Option<InboundRequest<Req, Resp>> {
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
                if let Some(waiting) = self.pending.remove(&request_id) {
                    let _ = waiting.reply.send(Ok(response));
                }
                None
            }
            request_response::Event::OutboundFailure {
                request_id, error, ..
            } => {
                if let Some(waiting) = self.pending.remove(&request_id) {
                    self.resend(swarm, relays, waiting, error);
                }
                None
            }
            request_response::Event::InboundFailure { peer, error, .. } => {
                // Oversized or malformed requests end here: the stream is dropped unread.
                tracing::info!("{} request from {peer} refused: {error}", self.wire);
                None
            }
            request_response::Event::ResponseSent { .. } => None,
        }
    }

    /// A failed request goes out again if another way to its peer remains: the other
    /// connection when the one it was on closed (a relayed one replaced by a direct
    /// one, or cut by the relay's limits), or the known relays when the peer could not
    /// be dialled. Otherwise the client learns why it failed.
    fn resend(
        &mut self,
        swarm: &mut PeerSwarm,
        relays: &HashMap<PeerId, Multiaddr>,
        mut pending: Pending<Req, Resp>,
        error: OutboundFailure,
    ) {
        let peer = pending.peer;
        let addrs = match &error {
            _ if pending.retries_left == 0 => None,
            OutboundFailure::ConnectionClosed if swarm.is_connected(&peer) => Some(Vec::new()),
            OutboundFailure::DialFailure => {
                let through_relays: Vec<Multiaddr> = relays
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
            return;
        };
        tracing::debug!("sending a request to {peer} again after {error}");
        pending.retries_left -= 1;
        let id = (self.send)(swarm.behaviour_mut(), &peer, pending.request.clone(), addrs);
        self.pending.insert(id, pending);
    }
}

fn outbound_error(peer: PeerId, error: OutboundFailure) -> NetError {
    match error {
        OutboundFailure::Timeout => NetError::Timeout { peer },
        OutboundFailure::DialFailure => NetError::Unreachable { peer },
        OutboundFailure::ConnectionClosed => NetError::ConnectionClosed { peer },
        OutboundFailure::UnsupportedProtocols => NetError::Unsupported { peer },
        OutboundFailure::Io(e) => NetError::Stream {
            peer,
            // An error of the peer's stream may quote what the peer sent.
            reason: idlegrid_protocol::printable(&e.to_string()).into_owned(),
        },
    }
}
