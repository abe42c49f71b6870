//! A worker too busy to take a request: its network part answers a probe with `Busy`
//! (a request about a chunk with a refusal naming the chunk) when its services' queue
//! is full, and a job probes it again later, so it still gets work in that job.
//!
//! The worker here is the network part alone (`net::spawn`) with a small service the
//! test drives: it answers probes and runs `noop` chunks (which need no inputs), and the
//! test decides when it starts taking requests off the queue.

use std::time::Duration;

use crate::common::*;
use idlegrid::grid::{self, GridConfig};
use idlegrid::net::{self, Client, Inbound, NetConfig, NetError};
use idlegrid::worker::WorkerConfig;
use idlegrid_kernels::noop;
use idlegrid_protocol::message::PeerInfo;
use idlegrid_protocol::{BlobResponse, Cid, TaskRequest, TaskResponse};
use libp2p::{identity, Multiaddr, PeerId};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// The network part of a worker whose requests wait in its queue until [`serve`]
/// takes them.
struct BareWorker {
    client: Client,
    inbound: mpsc::Receiver<Inbound>,
    addr: Multiaddr,
    _event_loop: JoinHandle<()>,
}

impl BareWorker {
    async fn start(inbound_queue: usize) -> BareWorker {
        init_logging();
        let config = NetConfig {
            listen: vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()],
            mdns: false,
            inbound_queue,
            ..NetConfig::default()
        };
        let (client, inbound, event_loop) =
            net::spawn(identity::Keypair::generate_ed25519(), config).expect("network starts");
        let event_loop = tokio::spawn(event_loop.run());
        let addr = tokio::time::timeout(TIMEOUT, client.listen_addrs())
            .await
            .expect("listen timed out")
            .expect("listen addrs")[0]
            .clone();
        BareWorker {
            client,
            inbound,
            addr,
            _event_loop: event_loop,
        }
    }
}

/// Takes the worker's requests off its queue and answers them: a probe with the noop
/// kernel, a noop chunk with its result.
async fn serve(client: Client, mut inbound: mpsc::Receiver<Inbound>) {
    while let Some(request) = inbound.recv().await {
        match request {
            Inbound::Task {
                request, channel, ..
            } => {
                let response = match request {
                    // It offers no batches: it is sent one `Run` per chunk.
                    TaskRequest::Probe => TaskResponse::Probe(PeerInfo {
                        batch: 0,
                        agent: net::agent_version(),
                        kernels: vec![(noop::NAME.into(), noop::VERSION)],
                        slots: 1,
                        running: 0,
                        busy: false,
                    }),
                    TaskRequest::Run { spec } => {
                        let chunk = spec.id();
                        match idlegrid_kernels::run::<Vec<u8>>(&spec, &[]) {
                            Ok(bytes) => TaskResponse::Done {
                                chunk,
                                result: Cid::of(&bytes),
                                len: bytes.len() as u64,
                                inline: bytes.into(),
                            },
                            Err(e) => TaskResponse::Failed {
                                chunk,
                                reason: e.to_string(),
                            },
                        }
                    }
                    TaskRequest::Poll { chunk } | TaskRequest::Cancel { chunk } => {
                        TaskResponse::Unknown { chunk }
                    }
                    TaskRequest::RunMany { .. } => panic!("sent a batch it never offered"),
                };
                client.respond_task(channel, response).await;
            }
            Inbound::Blob { channel, .. } => {
                client.respond_blob(channel, BlobResponse::NotFound).await
            }
        }
    }
}

/// Waits until `node` has identified `peer` as an idlegrid worker.
async fn wait_identified(node: &idlegrid::node::Node, peer: PeerId) {
    tokio::time::timeout(TIMEOUT, async {
        loop {
            let peers = node.client.peers().await.expect("peers");
            if peers
                .iter()
                .any(|e| e.peer == Some(peer) && e.is_compatible())
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the worker was never identified");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_worker_busy_at_probe_time_gets_work_later_in_the_same_job() {
    let BareWorker {
        client: worker_client,
        inbound,
        addr,
        _event_loop,
    } = BareWorker::start(1).await;
    let worker = worker_client.local_peer_id();
    let submitter = start("submitter", false, WorkerConfig::default(), vec![addr]).await;
    wait_identified(&submitter, worker).await;

    // One request waiting in the worker's queue fills it.
    let filler = {
        let client = submitter.client.clone();
        tokio::spawn(async move { client.task(worker, TaskRequest::Probe).await })
    };
    tokio::time::timeout(TIMEOUT, async {
        while inbound.is_empty() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the first request never reached the worker's queue");

    // Full: a probe is answered at once as busy, a chunk is refused by its id.
    let probe = tokio::time::timeout(
        Duration::from_secs(5),
        submitter.client.task(worker, TaskRequest::Probe),
    )
    .await
    .expect("a busy worker answers at once");
    assert!(
        matches!(probe, Err(NetError::Busy { peer }) if peer == worker),
        "{probe:?}"
    );
    let spec = noop::task(1, Vec::new());
    let run = tokio::time::timeout(
        Duration::from_secs(5),
        submitter
            .client
            .task(worker, TaskRequest::Run { spec: spec.clone() }),
    )
    .await
    .expect("a busy worker answers at once");
    assert!(
        matches!(&run, Ok(TaskResponse::Refused { chunk, .. }) if *chunk == spec.id()),
        "{run:?}"
    );

    // The job starts while the worker is busy (its first probe is answered so at
    // once); 2 s later the worker takes requests again. The job has no other peer and
    // does not compute here, so it completes only if it asks the worker again.
    let chunks: Vec<_> = (0..16).map(|tag| noop::task(tag, Vec::new())).collect();
    let expected: Vec<Vec<u8>> = chunks
        .iter()
        .map(|spec| idlegrid_kernels::run::<Vec<u8>>(spec, &[]).unwrap())
        .collect();
    let n = chunks.len();
    let job = grid::Job {
        kernel: noop::NAME.into(),
        kernel_version: noop::VERSION,
        unit: "chunks",
        calibration: noop::task(1000, Vec::new()),
        calibration_cost: 1,
        chunks: chunks.into(),
    };
    let config = GridConfig {
        discover_timeout: Duration::from_secs(20),
        reprobe_after: Duration::from_millis(300),
        ..remote_pool(1)
    };
    let server = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(2)).await;
        serve(worker_client, inbound).await
    });
    let outcome = tokio::time::timeout(TIMEOUT, grid::run_job(&submitter, job, config))
        .await
        .expect("job timed out")
        .expect("the job completes on the worker once it has room");
    assert_eq!(fetch_results(&outcome.results), expected);
    // Every chunk came from it (nobody else computes); a chunk refused while it was
    // busy and sent again may be answered twice, so it answered at least that many.
    assert!(
        peer_line(&outcome.report, &worker.to_string()).chunks_done >= n as u64,
        "{:?}",
        outcome.report
    );
    let _ = filler.await;
    server.abort();
}
