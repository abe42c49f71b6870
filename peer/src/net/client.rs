//! The cloneable handle everyone but the event loop uses to reach the network. Each
//! method sends one [`Command`] with a `oneshot` for the answer; if the event loop has
//! stopped, the method says so instead of hanging.

use std::collections::HashSet;

use idlegrid_protocol::{BlobRequest, BlobResponse, TaskRequest, TaskResponse};
use libp2p::request_response::ResponseChannel;
use libp2p::{Multiaddr, PeerId};
use tokio::sync::{broadcast, mpsc, oneshot};

use super::{NetError, PeerEntry, PeerEvent};

/// What the client asks of the event loop.
pub(crate) enum Command {
    Dial {
        addr: Multiaddr,
        reply: oneshot::Sender<Result<(), NetError>>,
    },
    Task {
        peer: PeerId,
        request: TaskRequest,
        reply: oneshot::Sender<Result<TaskResponse, NetError>>,
    },
    Blob {
        peer: PeerId,
        request: BlobRequest,
        reply: oneshot::Sender<Result<BlobResponse, NetError>>,
    },
    RespondTask {
        channel: ResponseChannel<TaskResponse>,
        response: TaskResponse,
    },
    RespondBlob {
        channel: ResponseChannel<BlobResponse>,
        response: BlobResponse,
    },
    Peers {
        reply: oneshot::Sender<Vec<PeerEntry>>,
    },
    ListenAddrs {
        reply: oneshot::Sender<Vec<Multiaddr>>,
    },
    /// Advertise in the DHT that this peer runs these kernels.
    Provide { keys: Vec<String> },
    /// Look up who advertises a kernel; found peers are also published as discovered.
    FindProviders {
        key: String,
        reply: oneshot::Sender<HashSet<PeerId>>,
    },
}

/// Handle to the network task.
#[derive(Clone)]
pub struct Client {
    pub(crate) commands: mpsc::Sender<Command>,
    pub(crate) events: broadcast::Sender<PeerEvent>,
    pub(crate) local_peer_id: PeerId,
    /// Chunks waiting to go to each worker together ([`Client::run`]).
    pub(crate) batches: super::batch::SharedBatches,
}

impl Client {
    pub fn local_peer_id(&self) -> PeerId {
        self.local_peer_id
    }

    /// Peer events from now on (discovered, identified, disconnected).
    pub fn subscribe(&self) -> broadcast::Receiver<PeerEvent> {
        self.events.subscribe()
    }

    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, NetError> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(make(tx))
            .await
            .map_err(|_| NetError::Stopped)?;
        rx.await.map_err(|_| NetError::Stopped)
    }

    /// Dials an address (with or without `/p2p/<PeerId>`).
    pub async fn dial(&self, addr: Multiaddr) -> Result<(), NetError> {
        self.ask(|reply| Command::Dial { addr, reply }).await?
    }

    /// Sends a task request and waits for the answer. A peer too busy to take it
    /// ([`TaskResponse::Busy`]) is [`NetError::Busy`]: like a timeout, the request
    /// was not served, and every caller can tell it from an answer.
    pub async fn task(&self, peer: PeerId, request: TaskRequest) -> Result<TaskResponse, NetError> {
        let answer = self
            .ask(|reply| Command::Task {
                peer,
                request,
                reply,
            })
            .await??;
        match answer {
            TaskResponse::Busy => Err(NetError::Busy { peer }),
            TaskResponse::Probe(info) => {
                self.batches.offered(peer, info.batch);
                Ok(TaskResponse::Probe(info))
            }
            answer => Ok(answer),
        }
    }

    pub async fn blob(&self, peer: PeerId, request: BlobRequest) -> Result<BlobResponse, NetError> {
        self.ask(|reply| Command::Blob {
            peer,
            request,
            reply,
        })
        .await?
    }

    pub async fn respond_task(
        &self,
        channel: ResponseChannel<TaskResponse>,
        response: TaskResponse,
    ) {
        // If the loop has stopped there is nobody left to answer to.
        let _ = self
            .commands
            .send(Command::RespondTask { channel, response })
            .await;
    }

    pub async fn respond_blob(
        &self,
        channel: ResponseChannel<BlobResponse>,
        response: BlobResponse,
    ) {
        let _ = self
            .commands
            .send(Command::RespondBlob { channel, response })
            .await;
    }

    /// Every peer this node knows of.
    pub async fn peers(&self) -> Result<Vec<PeerEntry>, NetError> {
        self.ask(|reply| Command::Peers { reply }).await
    }

    /// The addresses this node listens on, with its `/p2p/<PeerId>`.
    pub async fn listen_addrs(&self) -> Result<Vec<Multiaddr>, NetError> {
        self.ask(|reply| Command::ListenAddrs { reply }).await
    }

    pub async fn provide(&self, keys: Vec<String>) -> Result<(), NetError> {
        self.commands
            .send(Command::Provide { keys })
            .await
            .map_err(|_| NetError::Stopped)
    }

    pub async fn find_providers(&self, key: String) -> Result<HashSet<PeerId>, NetError> {
        self.ask(|reply| Command::FindProviders { key, reply })
            .await
    }
}

/// The DHT key under which workers advertise a kernel.
pub fn kernel_key(name: &str, version: u32) -> String {
    format!("/idlegrid/kernel/{name}/{version}")
}
