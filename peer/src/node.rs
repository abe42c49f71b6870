//! A running peer: identity, network task, blob store, compute pool and worker
//! service, started together and stopped together. Both `serve` and every submitting
//! command start one; tests start several in one process.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use idlegrid_bootstrap::{peers, BootstrapError};
use tokio::sync::broadcast;

use libp2p::{Multiaddr, PeerId};
use tokio::task::JoinHandle;

use crate::datadir::{DataDirError, DataDirLock};
use crate::executor::{Executor, ExecutorError};
use crate::net::{self, Client, NetConfig, NetError, PeerEvent};
use crate::store::{BlobStore, StoreError};
use crate::trust::TrustBook;
use crate::worker::{self, FaultHook, Requesters, Traffic, WorkerConfig};

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
    DataDir(#[from] DataDirError),
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
    /// Whom this peer's worker computes for.
    pub requesters: Requesters,
    /// Chunk runs this peer's jobs have going, here or on other peers.
    pub(crate) chunk_runs: Arc<AtomicUsize>,
    tasks: Vec<JoinHandle<()>>,
    /// Where this peer keeps its state.
    data_dir: PathBuf,
    /// This peer's hold on its data dir, let go when it stops.
    _data_dir_lock: DataDirLock,
}

impl Node {
    pub async fn start(config: NodeConfig) -> Result<Node, NodeError> {
        Node::launch(config, FaultHook::none()).await
    }

    /// A peer whose worker misbehaves as `faults` says (tests of slow and lying peers).
    #[cfg(feature = "fault-injection")]
    #[doc(hidden)]
    pub async fn start_with_faults(
        config: NodeConfig,
        faults: worker::FaultInjection,
    ) -> Result<Node, NodeError> {
        Node::launch(config, faults.into()).await
    }

    async fn launch(config: NodeConfig, faults: FaultHook) -> Result<Node, NodeError> {
        let data_dir = DataDirLock::acquire(&config.data_dir)?;
        let key = idlegrid_bootstrap::load_or_create_identity(&config.data_dir)?;
        let store = BlobStore::open(&config.data_dir, config.store_cap)?;
        // Compiled WebAssembly modules are cached beside the store (the first peer of
        // a process names the folder; the cache is keyed by what compiled them).
        idlegrid_kernels::wasm::set_cache_dir(config.data_dir.join("wasm-cache"));
        let executor = Executor::new(config.cores, config.low_priority)?;
        let mut net_config = config.net.clone();
        // Peers that earned trust in this data dir's jobs may relay for it too.
        net_config
            .trusted_peers
            .extend(TrustBook::open(&config.data_dir).trusted());
        let (client, inbound, event_loop) = net::spawn(key, net_config)?;
        let traffic = Traffic::default();
        let requesters = Requesters::default();
        let mut tasks = vec![tokio::spawn(event_loop.run())];
        if !config.net.bootstrap.is_empty() {
            let (client, list) = (client.clone(), config.net.bootstrap.clone());
            tasks.push(tokio::spawn(async move {
                // The outcome is logged; the peer runs on with whoever it finds.
                let _ = join(client, list).await;
            }));
        }
        tasks.push(tokio::spawn(worker::serve(
            client.clone(),
            store.clone(),
            executor.clone(),
            config.worker.clone(),
            worker::Counters {
                traffic: traffic.clone(),
                requesters: requesters.clone(),
            },
            inbound,
            faults,
        )));
        if config.advertise && config.worker.serve {
            let keys = worker::kernels(&config.worker)
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
            requesters,
            chunk_runs: Arc::default(),
            tasks,
            data_dir: config.data_dir.clone(),
            _data_dir_lock: data_dir,
        })
    }

    pub fn peer_id(&self) -> PeerId {
        self.client.local_peer_id()
    }

    /// How many chunk runs this peer's jobs have going, on this machine or on other
    /// peers (none once every job it submitted has ended, however it ended).
    pub fn chunk_runs(&self) -> usize {
        self.chunk_runs.load(Ordering::Relaxed)
    }

    /// Where this peer keeps its identity, blob store and result logs.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Listen addresses with `/p2p/<PeerId>`, once the first is bound.
    pub async fn listen_addrs(&self) -> Result<Vec<Multiaddr>, NetError> {
        self.client.listen_addrs().await
    }
}

/// How long one bootstrap peer has to connect and identify itself (the
/// image-difference grid's liveness check also allowed 5 s).
pub const BOOTSTRAP_TRY: Duration = Duration::from_secs(5);

/// Dials the bootstrap peers one after the other until one connects and identifies
/// itself, and says which answered or why none did.
pub async fn join(client: Client, list: Vec<Multiaddr>) -> Result<Multiaddr, BootstrapError> {
    let result = peers::try_in_order(&list, |addr| {
        let client = client.clone();
        async move {
            let target = peers::peer_id(&addr).ok_or("no /p2p/<PeerId>")?;
            let mut events = client.subscribe();
            client.dial(addr).await.map_err(|e| e.to_string())?;
            let answered = async {
                loop {
                    match events.recv().await {
                        Ok(PeerEvent::Identified { peer, .. }) if peer == target => return Ok(()),
                        Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                        Err(broadcast::error::RecvError::Closed) => {
                            return Err("the network task stopped".to_string())
                        }
                    }
                }
            };
            tokio::time::timeout(BOOTSTRAP_TRY, answered)
                .await
                .map_err(|_| format!("no answer within {BOOTSTRAP_TRY:?}"))?
        }
    })
    .await;
    match &result {
        Ok(addr) => tracing::info!("joined the DHT through bootstrap peer {addr}"),
        Err(e) => tracing::warn!("{e}"),
    }
    result
}

impl Drop for Node {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}
