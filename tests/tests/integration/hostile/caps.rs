//! A volunteer's memory, disk and cores stay within its owner's caps whatever peers
//! send: inputs arriving at once never pass the disk cap, an input larger than its
//! chunk allows is refused before it is fetched, a production worker refuses the noop
//! kernel, blobs and chunk statuses go only to the peers they concern, one submitter's
//! flood leaves room and turns for another, a chunk given up on stops computing, and a
//! submitter refuses a result its chunk cannot have.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::*;
use idlegrid::blobs::fetch_bytes;
use idlegrid::grid::remote::run_chunk;
use idlegrid::node::Node;
use idlegrid::policy::{Decision, Gate};
use idlegrid::worker::{FaultInjection, WorkerConfig};
use idlegrid_kernels::noop;
use idlegrid_protocol::{limits, Cid, TaskRequest, TaskResponse, TaskSpec};
use idlegrid_scheduler::FailureKind;
use libp2p::PeerId;

async fn addr_of(node: &Node) -> libp2p::Multiaddr {
    tokio::time::timeout(TIMEOUT, node.listen_addrs())
        .await
        .expect("listen timed out")
        .expect("listen addrs")[0]
        .clone()
}

async fn ask(client: &idlegrid::net::Client, worker: PeerId, request: TaskRequest) -> TaskResponse {
    tokio::time::timeout(TIMEOUT, client.task(worker, request))
        .await
        .expect("request timed out")
        .expect("answered")
}

/// Six chunks at once, each naming a distinct 1.5 MiB input, on a worker lending 4 MiB
/// of disk and no memory for inputs: the submitter's slow link keeps every input in
/// flight together. The blobs arriving reserve their size, so the worker's disk never
/// holds more than its cap; the chunks that find no room fail saying the store is full.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn inputs_arriving_at_once_stay_within_the_disk_cap() {
    const CAP: u64 = 4 << 20;
    let worker = start_with(
        "small-disk",
        true,
        WorkerConfig {
            memory_inputs: 0,
            ..WorkerConfig::default()
        },
        Vec::new(),
        |config| config.store_cap = CAP,
    )
    .await;
    let slow = faulty(FaultInjection {
        piece_delay: Duration::from_millis(800),
        ..FaultInjection::default()
    });
    let submitter = start("slow-link", false, slow, vec![addr_of(&worker).await]).await;
    let specs: Vec<TaskSpec> = (0..6u8)
        .map(|i| {
            let blob = vec![i; 3 << 19];
            noop::task(i as u64, vec![submitter.store.put(&blob).unwrap()])
        })
        .collect();
    let _grant = submitter.store.grants().grant(
        worker.peer_id(),
        specs.iter().flat_map(|s| s.inputs.clone()),
    );
    let blobs = worker.data_dir().join("blobs");
    let peak = Arc::new(Mutex::new(0u64));
    let sampler = {
        let (peak, blobs) = (peak.clone(), blobs.clone());
        tokio::spawn(async move {
            loop {
                let now = dir_bytes(&blobs);
                {
                    let mut peak = peak.lock().unwrap();
                    *peak = (*peak).max(now);
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };
    let answers = futures::future::join_all(
        specs
            .iter()
            .map(|spec| run_to_end(&submitter.client, worker.peer_id(), spec.clone())),
    )
    .await;
    sampler.abort();
    let peak = (*peak.lock().unwrap()).max(dir_bytes(&blobs));
    assert!(
        peak <= CAP,
        "the worker's disk held {peak} bytes, over its {CAP}-byte cap"
    );
    let done = answers
        .iter()
        .filter(|a| matches!(a, TaskResponse::Done { .. }))
        .count();
    assert!(done >= 2, "the cap holds two inputs at once: {answers:?}");
    for answer in &answers {
        match answer {
            TaskResponse::Done { .. } => {}
            TaskResponse::Failed { reason, .. } => {
                assert!(reason.contains("blob store is full"), "{reason}")
            }
            other => panic!("expected a result or a failure, got {other:?}"),
        }
    }
}

/// A change chunk whose band piece is announced larger than its rows times the width:
/// the worker refuses it on the first piece's announcement instead of fetching it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_input_larger_than_its_chunk_allows_is_refused_before_it_is_fetched() {
    let (workers, addrs) = workers(1, |_| WorkerConfig::default()).await;
    let worker = &workers[0];
    let submitter = start("inflated", false, WorkerConfig::default(), addrs).await;
    let plan = change_plan(64, 64, 2);
    for (cid, bytes) in &plan.blobs {
        assert_eq!(submitter.store.put(bytes).unwrap(), *cid);
    }
    let big = vec![7u8; 3 << 20];
    let big_cid = submitter.store.put(&big).unwrap();
    let mut spec = plan.chunks[0].clone();
    spec.inputs[1] = big_cid;
    let _grant = submitter
        .store
        .grants()
        .grant(worker.peer_id(), spec.inputs.clone());
    match run_to_end(&submitter.client, worker.peer_id(), spec).await {
        TaskResponse::Failed { reason, .. } => {
            assert!(reason.contains("limit"), "{reason}")
        }
        other => panic!("expected the chunk to fail, got {other:?}"),
    }
    let sent = submitter
        .traffic
        .snapshot()
        .get(&worker.peer_id())
        .copied()
        .unwrap_or(0);
    assert!(
        sent <= limits::BLOB_PIECE as u64 * 2,
        "{sent} bytes of the oversized input crossed: it was fetched"
    );
    assert!(!worker.store.has(&big_cid));
}

/// A worker as `serve` starts it does not run noop chunks (they would let any peer park
/// bytes on it), and does not offer the kernel in its probe answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_production_worker_refuses_the_noop_kernel() {
    let worker = start_with(
        "production",
        true,
        WorkerConfig::default(),
        Vec::new(),
        |c| c.worker.noop_kernel = false,
    )
    .await;
    let submitter = start(
        "asker",
        false,
        WorkerConfig::default(),
        vec![addr_of(&worker).await],
    )
    .await;
    match ask(
        &submitter.client,
        worker.peer_id(),
        TaskRequest::Run {
            spec: noop::task(1, Vec::new()),
        },
    )
    .await
    {
        TaskResponse::Refused { reason, .. } => assert!(reason.contains("noop"), "{reason}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    match ask(&submitter.client, worker.peer_id(), TaskRequest::Probe).await {
        TaskResponse::Probe(info) => {
            assert!(!info.kernels.is_empty());
            assert!(
                info.kernels.iter().all(|(name, _)| name != noop::NAME),
                "{:?}",
                info.kernels
            );
        }
        other => panic!("expected a probe answer, got {other:?}"),
    }
}

/// A stranger connected to both a submitter and its worker can read neither the
/// submitter's inputs nor the worker's copy of them nor the chunk's result, and its
/// poll of the chunk is answered as for an unknown chunk; the submitter and the worker
/// read what concerns them (the worker the inputs, the submitter the result). The
/// submitter's grants last as long as its chunk runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn blobs_and_chunk_status_go_only_to_whom_they_concern() {
    // Results of 200 kB: over what is answered inline, so the worker stores them.
    let big_results = faulty(FaultInjection {
        result_len: Some(200_000),
        ..FaultInjection::default()
    });
    let (workers, addrs) = workers(2, |i| match i {
        0 => big_results.clone(),
        _ => WorkerConfig::default().into(),
    })
    .await;
    let (worker, honest) = (workers[0].peer_id(), workers[1].peer_id());
    let submitter = start("owner", false, WorkerConfig::default(), addrs.clone()).await;
    let mut stranger_peers = addrs;
    stranger_peers.push(addr_of(&submitter).await);
    let stranger = start("stranger", false, WorkerConfig::default(), stranger_peers).await;

    let input = submitter.store.put(&[9u8; 1000]).unwrap();
    let spec = noop::task(1, vec![input]);
    let grant = submitter.store.grants().grant(worker, [input]);
    let result = match run_to_end(&submitter.client, worker, spec.clone()).await {
        TaskResponse::Done { result, .. } => result,
        other => panic!("expected a result, got {other:?}"),
    };
    let fetch = |node: &Node, from: PeerId, cid: Cid| {
        let client = node.client.clone();
        async move {
            tokio::time::timeout(TIMEOUT, fetch_bytes(&client, from, cid, 1 << 20))
                .await
                .expect("fetch timed out")
        }
    };
    for (from, cid, what) in [
        (submitter.peer_id(), input, "the submitter's input"),
        (worker, input, "the worker's copy of the input"),
        (worker, result, "the chunk's result"),
    ] {
        match fetch(&stranger, from, cid).await {
            Err(idlegrid::blobs::FetchError::NotFound { .. }) => {}
            other => panic!("a stranger asked for {what}: {other:?}"),
        }
    }
    let bytes = fetch(&submitter, worker, result)
        .await
        .expect("the submitter reads its chunk's result");
    assert_eq!(Cid::of(&bytes), result);
    match ask(
        &stranger.client,
        worker,
        TaskRequest::Poll { chunk: spec.id() },
    )
    .await
    {
        TaskResponse::Unknown { .. } => {}
        other => panic!("a stranger polled the chunk: {other:?}"),
    }
    assert!(matches!(
        ask(
            &submitter.client,
            worker,
            TaskRequest::Poll { chunk: spec.id() }
        )
        .await,
        TaskResponse::Done { .. }
    ));
    drop(grant);
    assert!(submitter.store.grants().is_empty());

    // Through the grid's own path the grant is made and dropped with the run.
    let spec = noop::task(2, vec![input]);
    let outcome = tokio::time::timeout(
        TIMEOUT,
        run_chunk(&submitter.client, &submitter.store, honest, spec),
    )
    .await
    .expect("run timed out");
    assert!(outcome.is_ok(), "{:?}", outcome.err());
    assert!(
        submitter.store.grants().is_empty(),
        "the grant ended with the run"
    );
    match fetch(&stranger, submitter.peer_id(), input).await {
        Err(idlegrid::blobs::FetchError::NotFound { .. }) => {}
        other => panic!("a stranger asked for the input after the run: {other:?}"),
    }
}

/// One submitter floods a one-core worker with 1-second chunks, as fast as it can and
/// for the whole test. Another submitter still gets its chunks accepted soon (the
/// flooder is held to its share once the other asks, so the next room is the other's)
/// and computed next (turns go round the submitters, not first come first served):
/// while one of its chunks is refused, and again while it waits, at most the flooder's
/// chunk already running and one more finish.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_flooding_submitter_leaves_room_and_turns_for_another() {
    let (workers, addrs) = workers(1, |_| TestWorker {
        config: WorkerConfig {
            queue: 4,
            ..WorkerConfig::default()
        },
        faults: FaultInjection {
            delay: Duration::from_secs(1),
            ..FaultInjection::default()
        },
    })
    .await;
    let worker = workers[0].peer_id();
    let flooder = start("flooder", false, WorkerConfig::default(), addrs.clone()).await;
    let other = start("other", false, WorkerConfig::default(), addrs).await;

    let finished: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (full_tx, full_rx) = tokio::sync::oneshot::channel::<()>();
    let flood = {
        let (client, finished, stop) = (flooder.client.clone(), finished.clone(), stop.clone());
        tokio::spawn(async move {
            let mut full = Some(full_tx);
            let mut tag = 1000;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let spec = noop::task(tag, Vec::new());
                match ask(&client, worker, TaskRequest::Run { spec: spec.clone() }).await {
                    TaskResponse::Refused { .. } => {
                        if let Some(full) = full.take() {
                            let _ = full.send(());
                        }
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                    _ => {
                        tag += 1;
                        let (client, finished) = (client.clone(), finished.clone());
                        tokio::spawn(async move {
                            if let TaskResponse::Done { .. } =
                                run_to_end(&client, worker, spec).await
                            {
                                finished.lock().unwrap().push(Instant::now());
                            }
                        });
                    }
                }
            }
        })
    };
    tokio::time::timeout(TIMEOUT, full_rx)
        .await
        .expect("the flooder never filled the queue")
        .expect("the flooder stopped");

    let finished_between = |from: Instant, to: Instant| {
        finished
            .lock()
            .unwrap()
            .iter()
            .filter(|t| **t > from && **t < to)
            .count()
    };
    for tag in 0..3 {
        let spec = noop::task(tag, Vec::new());
        let asked = Instant::now();
        let deadline = asked + Duration::from_secs(15);
        let run = || TaskRequest::Run { spec: spec.clone() };
        while let TaskResponse::Refused { reason, .. } = ask(&other.client, worker, run()).await {
            assert!(
                Instant::now() < deadline,
                "chunk {tag} refused for 15 s while another submitter floods: {reason}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let accepted = Instant::now();
        let refused = finished_between(asked, accepted);
        assert!(
            refused <= 2,
            "chunk {tag} was refused while {refused} of the flooder's chunks were computed"
        );
        match run_to_end(&other.client, worker, spec).await {
            TaskResponse::Done { .. } => {}
            other => panic!("chunk {tag}: expected a result, got {other:?}"),
        }
        let passed = finished_between(accepted, Instant::now());
        assert!(
            passed <= 2,
            "chunk {tag} waited while {passed} of the flooder's chunks were computed"
        );
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    tokio::time::timeout(TIMEOUT, flood)
        .await
        .expect("the flood did not stop")
        .expect("the flood task");
}

async fn running_on(client: &idlegrid::net::Client, worker: PeerId) -> u32 {
    match ask(client, worker, TaskRequest::Probe).await {
        TaskResponse::Probe(info) => info.running,
        other => panic!("expected a probe answer, got {other:?}"),
    }
}

/// Waits until `worker` runs a chunk, then a little longer so its kernel computes.
async fn until_running(client: &idlegrid::net::Client, worker: PeerId) {
    let deadline = Instant::now() + TIMEOUT;
    while running_on(client, worker).await == 0 {
        assert!(Instant::now() < deadline, "the chunk never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
}

/// A one-core worker computing a chunk of tens of seconds gives it up twice: handed
/// back after its owner's grace period, then cancelled by its submitter. Each time its
/// kernel stops and frees the core: a short chunk sent next is computed at once, not
/// after the long one.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_chunk_given_up_stops_computing_and_frees_its_core() {
    let gate = Gate::new(None, Vec::new(), Duration::from_millis(300));
    let (workers, addrs) = workers(1, |_| WorkerConfig {
        gate: gate.clone(),
        ..WorkerConfig::default()
    })
    .await;
    let worker = workers[0].peer_id();
    let submitter = start("long-chunk", false, WorkerConfig::default(), addrs).await;
    // One band of 4096² pixels and 2000 sweeps: tens of seconds on one core.
    let params = idlegrid_kernels::change::ChangeParams {
        band_rows: 4096,
        sweeps: 1000,
        icm_sweeps: 1000,
        ..idlegrid_kernels::change::ChangeParams::default()
    };
    let plan = idlegrid_kernels::change::sample_plan(4096, 5, &params).expect("plan");
    assert_eq!(plan.chunks.len(), 1);
    for (cid, bytes) in &plan.blobs {
        assert_eq!(submitter.store.put(bytes).unwrap(), *cid);
    }
    let long = plan.chunks[0].clone();
    let _grant = submitter.store.grants().grant(worker, long.inputs.clone());
    let client = &submitter.client;
    let short_is_computed_at_once = |tag: u64| async move {
        let short = noop::task(tag, Vec::new());
        match tokio::time::timeout(Duration::from_secs(10), run_to_end(client, worker, short)).await
        {
            Ok(TaskResponse::Done { .. }) => {}
            Ok(other) => panic!("the short chunk: expected a result, got {other:?}"),
            Err(_) => panic!("the short chunk waited 10 s: the given-up chunk kept the core"),
        }
    };

    // Handed back after the grace period.
    assert!(matches!(
        ask(client, worker, TaskRequest::Run { spec: long.clone() }).await,
        TaskResponse::Accepted { .. }
    ));
    until_running(client, worker).await;
    gate.set(Decision {
        lend: false,
        stop_reasons: vec!["the owner is back".into()],
        notes: Vec::new(),
    });
    let answer = loop {
        match ask(client, worker, TaskRequest::Poll { chunk: long.id() }).await {
            TaskResponse::Running { .. } => continue,
            other => break other,
        }
    };
    match answer {
        TaskResponse::Failed { reason, .. } => assert!(reason.contains("handed back"), "{reason}"),
        other => panic!("expected the chunk handed back, got {other:?}"),
    }
    gate.set(Decision::always());
    short_is_computed_at_once(1).await;

    // Cancelled by its submitter while it runs.
    assert!(matches!(
        ask(client, worker, TaskRequest::Run { spec: long.clone() }).await,
        TaskResponse::Accepted { .. }
    ));
    until_running(client, worker).await;
    ask(client, worker, TaskRequest::Cancel { chunk: long.id() }).await;
    short_is_computed_at_once(2).await;
}

/// A worker claiming a result longer than its chunk's can be is refused before the
/// result is fetched; one returning a result of the wrong form is refused before it is
/// believed. Both count as that worker's failure and leave nothing in the store.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_result_its_chunk_cannot_have_is_refused() {
    let lengths = [2 << 20, 31];
    let (workers, addrs) = workers(lengths.len(), |i| {
        faulty(FaultInjection {
            result_len: Some(lengths[i]),
            ..FaultInjection::default()
        })
    })
    .await;
    let submitter = start("careful", false, WorkerConfig::default(), addrs).await;
    for (worker, want) in workers
        .iter()
        .zip(["claimed a result of", "malformed result"])
    {
        let spec = noop::task(5, Vec::new());
        let outcome = tokio::time::timeout(
            TIMEOUT,
            run_chunk(&submitter.client, &submitter.store, worker.peer_id(), spec),
        )
        .await
        .expect("run timed out");
        match outcome {
            Err((FailureKind::BadHash, reason)) => assert!(reason.contains(want), "{reason}"),
            Err(other) => panic!("expected a bad result, got {other:?}"),
            Ok(got) => panic!("a result of {} bytes was accepted", got.bytes.len()),
        }
    }
    for worker in &workers {
        let sent = worker.traffic.snapshot().values().sum::<u64>();
        assert_eq!(sent, 0, "the result was fetched from the worker");
    }
}
