//! Jobs of many small chunks: chunks waiting for the same worker travel together in
//! one `RunMany` (never more than the worker offers, never to a worker that offers
//! none), and their small results are written inside the job's result log, where a
//! rerun finds them, after a restart and after a crash tore the log's last record.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::common::*;
use idlegrid::grid::{self, GridConfig, Job};
use idlegrid::net::{self, Client, Inbound, NetConfig};
use idlegrid_kernels::noop;
use idlegrid_protocol::message::PeerInfo;
use idlegrid_protocol::{BlobResponse, Cid, TaskRequest, TaskResponse, TaskSpec};
use libp2p::{identity, Multiaddr};

async fn bare_peer() -> (Client, tokio::sync::mpsc::Receiver<Inbound>, Multiaddr) {
    init_logging();
    let config = NetConfig {
        listen: vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()],
        mdns: false,
        ..NetConfig::default()
    };
    let (client, inbound, event_loop) =
        net::spawn(identity::Keypair::generate_ed25519(), config).expect("network starts");
    tokio::spawn(event_loop.run());
    let addr = tokio::time::timeout(TIMEOUT, client.listen_addrs())
        .await
        .expect("listen timed out")
        .expect("listen addrs")[0]
        .clone();
    (client, inbound, addr)
}

fn done(spec: &TaskSpec) -> TaskResponse {
    let bytes = idlegrid_kernels::run::<Vec<u8>>(spec, &[]).expect("noop runs");
    TaskResponse::Done {
        chunk: spec.id(),
        result: Cid::of(&bytes),
        len: bytes.len() as u64,
        inline: bytes.into(),
    }
}

/// What the hand-made worker saw: requests carrying chunks, and the largest batch.
#[derive(Default)]
struct Seen {
    requests: AtomicUsize,
    chunks: AtomicUsize,
    largest: AtomicUsize,
}

/// A worker that offers batches of `offer` chunks and answers each request after
/// `delay`, so chunks pile up behind the requests in flight.
async fn batching_worker(offer: u32, delay: Duration, seen: Arc<Seen>) -> Multiaddr {
    let (client, mut inbound, addr) = bare_peer().await;
    tokio::spawn(async move {
        while let Some(request) = inbound.recv().await {
            let Inbound::Task {
                request, channel, ..
            } = request
            else {
                if let Inbound::Blob { channel, .. } = request {
                    client.respond_blob(channel, BlobResponse::NotFound).await;
                }
                continue;
            };
            let (client, seen) = (client.clone(), seen.clone());
            tokio::spawn(async move {
                let specs = match request {
                    TaskRequest::Probe => {
                        let info = PeerInfo {
                            agent: net::agent_version(),
                            kernels: vec![(noop::NAME.into(), noop::VERSION)],
                            slots: 1,
                            running: 0,
                            busy: false,
                            batch: offer,
                        };
                        client
                            .respond_task(channel, TaskResponse::Probe(info))
                            .await;
                        return;
                    }
                    TaskRequest::Run { spec } => vec![spec],
                    TaskRequest::RunMany { specs } => {
                        assert!(offer > 1, "sent a batch it never offered");
                        specs
                    }
                    TaskRequest::Poll { chunk } | TaskRequest::Cancel { chunk } => {
                        client
                            .respond_task(channel, TaskResponse::Unknown { chunk })
                            .await;
                        return;
                    }
                };
                seen.requests.fetch_add(1, Ordering::SeqCst);
                seen.chunks.fetch_add(specs.len(), Ordering::SeqCst);
                seen.largest.fetch_max(specs.len(), Ordering::SeqCst);
                tokio::time::sleep(delay).await;
                let response = if specs.len() == 1 {
                    done(&specs[0])
                } else {
                    TaskResponse::Many {
                        answers: specs.iter().map(done).collect(),
                    }
                };
                client.respond_task(channel, response).await;
            });
        }
    });
    addr
}

/// Sends `count` chunks to the worker at `addr` at once, through [`Client::run`], and
/// checks each answer is its own chunk's result.
async fn run_many_at_once(addr: Multiaddr, count: u64) {
    let (client, _inbound, _) = bare_peer().await;
    let Some(libp2p::multiaddr::Protocol::P2p(peer)) = addr.iter().last() else {
        panic!("{addr} without the worker's id");
    };
    client.dial(addr.clone()).await.expect("dials");
    match tokio::time::timeout(TIMEOUT, client.task(peer, TaskRequest::Probe)).await {
        Ok(Ok(TaskResponse::Probe(_))) => {}
        other => panic!("probe: {other:?}"),
    }
    let runs = (0..count).map(|i| {
        let (client, spec) = (client.clone(), noop::task(i, Vec::new()));
        tokio::spawn(async move {
            let answer = tokio::time::timeout(TIMEOUT, client.run(peer, spec.clone()))
                .await
                .expect("answered in time")
                .expect("answered");
            assert_eq!(answer, done(&spec), "each chunk gets its own answer");
        })
    });
    for run in futures::future::join_all(runs).await {
        run.expect("run task");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn chunks_waiting_for_a_worker_go_together_up_to_what_it_offers() {
    let seen = Arc::new(Seen::default());
    let addr = batching_worker(8, Duration::from_millis(30), seen.clone()).await;
    run_many_at_once(addr, 60).await;
    let (requests, chunks, largest) = (
        seen.requests.load(Ordering::SeqCst),
        seen.chunks.load(Ordering::SeqCst),
        seen.largest.load(Ordering::SeqCst),
    );
    assert_eq!(chunks, 60, "every chunk sent once");
    assert_eq!(largest, 8, "batches fill up to the offer, never past it");
    // The first two go at once, alone; the other 58 wait and go eight at a time.
    assert!(
        requests <= 2 + 58_usize.div_ceil(8),
        "{requests} requests for 60 chunks: they did not travel together"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_worker_that_offers_no_batches_gets_one_run_per_chunk() {
    let seen = Arc::new(Seen::default());
    let addr = batching_worker(0, Duration::from_millis(5), seen.clone()).await;
    run_many_at_once(addr, 20).await;
    assert_eq!(seen.requests.load(Ordering::SeqCst), 20);
    assert_eq!(seen.largest.load(Ordering::SeqCst), 1);
}

fn noop_job(chunks: u64) -> Job {
    idlegrid::jobs::noop_job(0..chunks, Vec::new())
}

async fn run_here(data_dir: &std::path::Path, chunks: u64) -> (grid::JobOutcome, Vec<Vec<u8>>) {
    let dir = data_dir.to_path_buf();
    let node = start_with(
        "small-chunks",
        true,
        idlegrid::worker::WorkerConfig::default(),
        Vec::new(),
        move |config| config.data_dir = dir,
    )
    .await;
    let config = GridConfig {
        show_progress: false,
        ..GridConfig::default()
    };
    let outcome = tokio::time::timeout(TIMEOUT, grid::run_job(&node, noop_job(chunks), config))
        .await
        .expect("job timed out")
        .expect("job runs");
    let results = fetch_results(&outcome.results);
    (outcome, results)
}

/// Bytes of every file under `dir`.
fn bytes_under(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .map(|e| e.unwrap())
                .map(|e| match e.file_type().unwrap().is_dir() {
                    true => bytes_under(&e.path()),
                    false => e.metadata().unwrap().len(),
                })
                .sum()
        })
        .unwrap_or(0)
}

/// 2,000 results of 32 bytes: written inside the job's result log (one file; nothing
/// in the blob store), reused by a rerun after a restart, and after a crash tore the
/// log's last record only that chunk is computed again; the results are the same
/// bytes every time.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn small_results_are_logged_and_reused_after_a_restart_and_a_torn_tail() {
    let data_dir = temp_dir("small-results");
    let chunks = 2_000;
    let (first, expected) = run_here(&data_dir, chunks).await;
    assert_eq!(expected.len(), chunks as usize);
    let logs: Vec<_> = std::fs::read_dir(data_dir.join("results"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(logs.len(), 1, "one result log: {logs:?}");
    let stored = bytes_under(&data_dir.join("blobs"));
    assert!(stored < 1024, "{stored} bytes in the blob store");
    assert_eq!(first.report.chunks_reused, 0);

    let (second, results) = run_here(&data_dir, chunks).await;
    assert_eq!(second.report.chunks_reused, chunks as usize, "all reused");
    assert_eq!(results, expected);

    // A crash in the middle of the last append: its record is torn.
    let len = std::fs::metadata(&logs[0]).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&logs[0])
        .unwrap()
        .set_len(len - 10)
        .unwrap();
    let (third, results) = run_here(&data_dir, chunks).await;
    assert_eq!(
        third.report.chunks_reused,
        chunks as usize - 1,
        "only the torn result is computed again"
    );
    assert_eq!(results, expected);
    let _ = std::fs::remove_dir_all(&data_dir);
}
