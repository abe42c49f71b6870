//! A running peer: identity, network task, blob store, compute pool and worker
//! service, started together and stopped together. Both `serve` and every submitting
//! command start one; tests start several in one process.

use std::path::PathBuf;

use libp2p::{Multiaddr, PeerId};
use tokio::task::JoinHandle;

use crate::executor::{Executor, ExecutorError};
use crate::net::{self, Client, NetConfig, NetError};
use crate::store::{BlobStore, StoreError};
use crate::worker::{self, Traffic, WorkerConfig};

/// Everything a peer needs to start.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// Identity key, blob store and remembered results live here.
    pub data_dir: PathBuf,
    pub net: NetConfig,
    pub worker: WorkerConfig,
    /// Compute threads (`--cores`). Default: every core.
    pub cores: usize,
    /// Blob store cap in bytes. Default 4 GiB.
    pub store_cap: u64,
    /// Run compute threads at the lowest OS priority. Default on for `serve`.
    pub low_priority: bool,
    /// Advertise the kernels this peer runs in the DHT (volunteers do).
    pub advertise: bool,
}

impl NodeConfig {
    /// Defaults for a peer keeping its state in `data_dir`.
    pub fn new(data_dir: PathBuf) -> NodeConfig {
        NodeConfig {
            data_dir,
            net: NetConfig::default(),
            worker: WorkerConfig::default(),
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            store_cap: 4 << 30,
            low_priority: false,
            advertise: false,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Identity(#[from] idlegrid_bootstrap::IdentityError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Net(#[from] NetError),
    #[error(transparent)]
    Executor(#[from] ExecutorError),
}

/// A started peer. Dropping it stops its tasks and closes its connections.
pub struct Node {
    pub client: Client,
    pub store: BlobStore,
    pub executor: Executor,
    /// Blob bytes served to each peer.
    pub traffic: Traffic,
    tasks: Vec<JoinHandle<()>>,
}

impl Node {
    pub async fn start(config: NodeConfig) -> Result<Node, NodeError> {
        let key = idlegrid_bootstrap::load_or_create_identity(&config.data_dir)?;
        let store = BlobStore::open(&config.data_dir, config.store_cap)?;
        let executor = Executor::new(config.cores, config.low_priority)?;
        let (client, inbound, event_loop) = net::spawn(key, config.net.clone())?;
        let traffic = Traffic::default();
        let mut tasks = vec![tokio::spawn(event_loop.run())];
        tasks.push(tokio::spawn(worker::serve(
            client.clone(),
            store.clone(),
            executor.clone(),
            config.worker.clone(),
            traffic.clone(),
            inbound,
        )));
        if config.advertise && config.worker.serve {
            let keys = idlegrid_kernels::supported()
                .iter()
                .map(|(name, version)| net::kernel_key(name, *version))
                .collect();
            client.provide(keys).await?;
        }
        Ok(Node {
            client,
            store,
            executor,
            traffic,
            tasks,
        })
    }

    pub fn peer_id(&self) -> PeerId {
        self.client.local_peer_id()
    }

    /// Listen addresses with `/p2p/<PeerId>`, once the first is bound.
    pub async fn listen_addrs(&self) -> Result<Vec<Multiaddr>, NetError> {
        self.client.listen_addrs().await
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}
