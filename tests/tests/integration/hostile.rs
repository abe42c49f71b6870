//! A worker facing a hostile or broken peer: oversized and malformed messages, a
//! TaskSpec with absurd dimensions, an unknown kernel or version, an input blob whose
//! bytes do not match its Cid. Each is refused (or the stream dropped) with a reason,
//! nothing panics, and the worker keeps serving honest requests afterwards. [`caps`]:
//! whatever peers send, a volunteer stays within its owner's caps.

mod caps;

use std::io;
use std::time::{Duration, Instant};

use crate::common::*;
use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, StreamExt};
use idlegrid::worker::{FaultInjection, WorkerConfig};
use idlegrid_kernels::noop;
use idlegrid_protocol::{Cid, TaskRequest, TaskResponse, TaskSpec, TASK_PROTOCOL};
use libp2p::request_response::{self, ProtocolSupport};
use libp2p::swarm::SwarmEvent;
use libp2p::{noise, tcp, yamux, Multiaddr, PeerId, StreamProtocol};

/// A codec that writes whatever bytes it is given: the hostile peer's.
#[derive(Clone, Default)]
struct RawCodec;

impl request_response::Codec for RawCodec {
    type Protocol = StreamProtocol;
    type Request = Vec<u8>;
    type Response = Vec<u8>;

    async fn read_request<T: AsyncRead + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> io::Result<Vec<u8>> {
        let mut buf = Vec::new();
        io.read_to_end(&mut buf).await?;
        Ok(buf)
    }
    async fn read_response<T: AsyncRead + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> io::Result<Vec<u8>> {
        let mut buf = Vec::new();
        io.take(1 << 24).read_to_end(&mut buf).await?;
        Ok(buf)
    }
    async fn write_request<T: AsyncWrite + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: Vec<u8>,
    ) -> io::Result<()> {
        io.write_all(&req).await?;
        io.close().await
    }
    async fn write_response<T: AsyncWrite + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        res: Vec<u8>,
    ) -> io::Result<()> {
        io.write_all(&res).await?;
        io.close().await
    }
}

/// Sends raw bytes on `/idlegrid/task/1` to `peer` at `addr`; returns the raw answer or
/// the failure.
async fn send_raw(peer: PeerId, addr: Multiaddr, bytes: Vec<u8>) -> Result<Vec<u8>, String> {
    let mut swarm = libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(
            tcp::Config::default(),
            noise::Config::new,
            yamux::Config::default,
        )
        .map_err(|e| e.to_string())?
        .with_behaviour(|_| {
            request_response::Behaviour::<RawCodec>::new(
                [(
                    StreamProtocol::new(TASK_PROTOCOL),
                    ProtocolSupport::Outbound,
                )],
                request_response::Config::default().with_request_timeout(Duration::from_secs(10)),
            )
        })
        .map_err(|e| e.to_string())?
        .build();
    let id = swarm
        .behaviour_mut()
        .send_request_with_addresses(&peer, bytes, vec![addr]);
    let wait = async {
        loop {
            match swarm.select_next_some().await {
                SwarmEvent::Behaviour(request_response::Event::Message {
                    message:
                        request_response::Message::Response {
                            request_id,
                            response,
                        },
                    ..
                }) if request_id == id => {
                    // The worker closes the stream without a word on bad input.
                    return if response.is_empty() {
                        Err("stream closed without an answer".to_string())
                    } else {
                        Ok(response)
                    };
                }
                SwarmEvent::Behaviour(request_response::Event::OutboundFailure {
                    request_id,
                    error,
                    ..
                }) if request_id == id => return Err(error.to_string()),
                _ => {}
            }
        }
    };
    tokio::time::timeout(TIMEOUT, wait)
        .await
        .map_err(|_| "raw request timed out".to_string())?
}

async fn still_serves(client: &idlegrid::net::Client, worker: PeerId) {
    let answer = tokio::time::timeout(TIMEOUT, client.task(worker, TaskRequest::Probe))
        .await
        .expect("probe timed out")
        .expect("probe answered");
    assert!(matches!(answer, TaskResponse::Probe(_)), "{answer:?}");
}

async fn refusal(client: &idlegrid::net::Client, worker: PeerId, spec: TaskSpec) -> String {
    let answer = tokio::time::timeout(TIMEOUT, client.task(worker, TaskRequest::Run { spec }))
        .await
        .expect("run timed out")
        .expect("run answered");
    match answer {
        TaskResponse::Refused { reason, .. } => reason,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hostile_messages_are_refused_and_the_worker_keeps_serving() {
    let (workers, addrs) = workers(1, |_| WorkerConfig::default()).await;
    let worker = workers[0].peer_id();
    let addr = addrs[0].clone();
    let honest = start("honest", false, WorkerConfig::default(), addrs.clone()).await;

    // Oversized: past the task request limit, the worker drops the stream unread.
    let oversized = vec![0x41; idlegrid_protocol::limits::MAX_TASK_REQUEST + 1024];
    assert!(send_raw(worker, addr.clone(), oversized).await.is_err());
    still_serves(&honest.client, worker).await;

    // Malformed: not CBOR at all, and CBOR of the wrong shape.
    assert!(send_raw(worker, addr.clone(), b"\xff\xfe garbage".to_vec())
        .await
        .is_err());
    let wrong_shape = idlegrid_protocol::encode(&vec![1u32, 2, 3]).unwrap();
    assert!(send_raw(worker, addr.clone(), wrong_shape).await.is_err());
    still_serves(&honest.client, worker).await;

    // Unknown kernel, unknown version.
    let mut unknown = noop::task(1, Vec::new());
    unknown.kernel = "mine-bitcoin".into();
    assert!(refusal(&honest.client, worker, unknown)
        .await
        .contains("unknown kernel"));
    let mut future = noop::task(1, Vec::new());
    future.kernel_version = 99;
    assert!(refusal(&honest.client, worker, future)
        .await
        .contains("version"));

    // A change chunk claiming absurd dimensions.
    let plan = change_plan(64, 32, 2);
    let mut absurd = plan.chunks[0].clone();
    let mut params = idlegrid_kernels::change::chunk::band_params(&absurd).unwrap();
    params.width = 1 << 30;
    params.height = 1 << 30;
    absurd.params = idlegrid_protocol::encode(&params).unwrap();
    let reason = refusal(&honest.client, worker, absurd).await;
    assert!(!reason.is_empty());
    still_serves(&honest.client, worker).await;
}

/// A submitter whose store serves `served` under the id of other bytes, and a
/// worker: the chunk that names that input must fail on the worker with a hash error,
/// and the bytes must not land in the worker's store.
async fn mismatched_input_fails(name: &str, served: Vec<u8>) {
    let (workers, addrs) = workers(1, |_| WorkerConfig::default()).await;
    let worker = workers[0].peer_id();

    let dir = temp_dir(name);
    let claimed = Cid::of(b"what the chunk asks for");
    std::fs::create_dir_all(dir.join("blobs")).unwrap();
    std::fs::write(dir.join("blobs").join(claimed.to_hex()), served).unwrap();
    let mut config = idlegrid::node::NodeConfig::new(dir);
    config.net = idlegrid::net::NetConfig {
        listen: vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()],
        mdns: false,
        peers: addrs,
        ..Default::default()
    };
    config.worker.serve = false;
    let liar = idlegrid::node::Node::start(config).await.unwrap();
    let _grant = liar.store.grants().grant(worker, [claimed]);

    match run_to_end(&liar.client, worker, noop::task(7, vec![claimed])).await {
        TaskResponse::Failed { reason, .. } => {
            assert!(reason.contains("hash"), "{reason}")
        }
        other => panic!("expected the chunk to fail, got {other:?}"),
    }
    assert!(!workers[0].store.has(&claimed), "bad bytes were stored");
    still_serves(&liar.client, worker).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_input_blob_that_does_not_match_its_cid_fails_the_chunk() {
    // Small: fetched into the worker's blob store.
    mismatched_input_fails("liar-store", b"something else".to_vec()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_large_input_that_does_not_match_its_cid_fails_the_chunk() {
    // Large: fetched into the worker's memory, in several pieces.
    let size = idlegrid::blobs::STORE_INPUTS_BELOW as usize * 2 + 3 * 1024 * 1024 + 17;
    mismatched_input_fails("liar-memory", vec![0x5a; size]).await;
}

/// A chunk with large inputs computes the same result whether the worker keeps them in
/// memory (the default) or in its blob store (no memory for inputs, or less than the
/// input needs); only the store leaves them on the worker's disk.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn large_inputs_travel_in_memory_or_through_the_store_alike() {
    let memory = [256 << 20, 0, 1 << 20];
    let (workers, addrs) = workers(memory.len(), |i| WorkerConfig {
        memory_inputs: memory[i],
        ..WorkerConfig::default()
    })
    .await;
    let node = start("inputs", false, WorkerConfig::default(), addrs).await;
    let big: Vec<u8> = (0..5 * 1024 * 1024 + 11)
        .map(|i: u32| (i * 7 + i / 1000) as u8)
        .collect();
    let small = b"a small input".to_vec();
    let big_cid = node.store.put(&big).unwrap();
    let small_cid = node.store.put(&small).unwrap();
    let spec = noop::task(11, vec![big_cid, small_cid]);
    let expected = idlegrid_kernels::run(&spec, &[big, small]).unwrap();
    for (i, worker) in workers.iter().enumerate() {
        let _grant = node
            .store
            .grants()
            .grant(worker.peer_id(), spec.inputs.clone());
        match run_to_end(&node.client, worker.peer_id(), spec.clone()).await {
            TaskResponse::Done { result, .. } => {
                assert_eq!(result, Cid::of(&expected), "worker {i}")
            }
            other => panic!("worker {i}: expected a result, got {other:?}"),
        }
        assert!(
            worker.store.has(&small_cid),
            "worker {i}: small inputs are stored"
        );
    }
    assert!(
        !workers[0].store.has(&big_cid),
        "a large input held in memory reached the disk"
    );
    assert!(
        workers[1].store.has(&big_cid),
        "without memory for inputs they go to the store"
    );
}

/// A large input stays in the worker's memory for the next chunks that name it (the
/// change kernel's neighbouring bands share their halo rows): two chunks wanting it at
/// once, and one wanting it later, cost one transfer. When the memory budget needs the
/// room for another input, the oldest is dropped, and fetched again if named again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_large_input_is_fetched_once_for_the_chunks_that_share_it() {
    // Room for one of the two large inputs at a time.
    let (workers, addrs) = workers(1, |_| WorkerConfig {
        memory_inputs: 8 << 20,
        ..WorkerConfig::default()
    })
    .await;
    let worker = &workers[0];
    let node = start("shared-inputs", false, WorkerConfig::default(), addrs).await;
    let large = |seed: u32| -> Vec<u8> {
        (0..5 * 1024 * 1024u32)
            .map(|i| (i.wrapping_mul(seed) >> 7) as u8)
            .collect()
    };
    let (a, b) = (large(7), large(13));
    let a_cid = node.store.put(&a).unwrap();
    let b_cid = node.store.put(&b).unwrap();
    let _grant = node.store.grants().grant(worker.peer_id(), [a_cid, b_cid]);
    let sent = || {
        node.traffic
            .snapshot()
            .get(&worker.peer_id())
            .copied()
            .unwrap_or(0)
    };
    let run = |tag: u64, input: Cid, bytes: &Vec<u8>| {
        let spec = noop::task(tag, vec![input]);
        let expected = Cid::of(&idlegrid_kernels::run(&spec, std::slice::from_ref(bytes)).unwrap());
        let client = node.client.clone();
        let peer = worker.peer_id();
        async move {
            match run_to_end(&client, peer, spec).await {
                TaskResponse::Done { result, .. } => assert_eq!(result, expected, "chunk {tag}"),
                other => panic!("chunk {tag}: expected a result, got {other:?}"),
            }
        }
    };
    let len = a.len() as u64;
    tokio::join!(run(1, a_cid, &a), run(2, a_cid, &a));
    assert_eq!(sent(), len, "two chunks at once on one input fetch it once");
    run(3, a_cid, &a).await;
    assert_eq!(sent(), len, "a chunk naming a held input does not fetch it");
    run(4, b_cid, &b).await;
    assert_eq!(sent(), 2 * len);
    assert!(
        !worker.store.has(&a_cid) && !worker.store.has(&b_cid),
        "making room in memory must not send an input to disk"
    );
    run(5, a_cid, &a).await;
    assert_eq!(
        sent(),
        3 * len,
        "the input dropped for room is fetched again"
    );
}

/// A submitter that cannot serve a chunk's input makes the chunk fail on the worker;
/// the same chunk from a submitter that can is computed again, not answered with the
/// first one's failure (a hostile peer must not poison a chunk for everyone, and the
/// calibration chunk all jobs share must not fail for a job because an earlier job
/// went away mid-benchmark).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_chunk_failed_for_one_submitter_is_computed_again_for_another() {
    let (workers, addrs) = workers(1, |_| WorkerConfig::default()).await;
    let worker = workers[0].peer_id();
    let input = b"the input the chunk names".to_vec();
    let cid = Cid::of(&input);
    let spec = noop::task(9, vec![cid]);

    // First from a submitter that does not have the input.
    let without = start(
        "without-input",
        false,
        WorkerConfig::default(),
        addrs.clone(),
    )
    .await;
    match run_to_end(&without.client, worker, spec.clone()).await {
        TaskResponse::Failed { .. } => {}
        other => {
            panic!("expected the chunk to fail for a submitter without its input, got {other:?}")
        }
    }

    // Then from one that has it.
    let with = start("with-input", false, WorkerConfig::default(), addrs).await;
    with.store.put(&input).expect("store the input");
    let _grant = with.store.grants().grant(worker, [cid]);
    let expected = idlegrid_kernels::run(&spec, &[input]).expect("local run");
    match run_to_end(&with.client, worker, spec).await {
        TaskResponse::Done { result, .. } => assert_eq!(result, Cid::of(&expected)),
        other => panic!("expected the chunk to be computed again, got {other:?}"),
    }
}

/// The cores in use on `worker`, by its probe answer.
async fn running_on(client: &idlegrid::net::Client, worker: PeerId) -> u32 {
    match tokio::time::timeout(TIMEOUT, client.task(worker, TaskRequest::Probe))
        .await
        .expect("probe timed out")
        .expect("probe answered")
    {
        TaskResponse::Probe(info) => info.running,
        other => panic!("expected a probe answer, got {other:?}"),
    }
}

/// A chunk its submitter cancels while it waits for a core is dropped there: when the
/// core comes free, the cancelled chunk does not take it (and the chunk queued the same
/// way but not cancelled does).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_chunk_cancelled_while_it_waits_for_a_core_is_not_computed() {
    // One core, and every chunk holds it a while, so a second chunk surely waits.
    let (workers, addrs) = workers(1, |_| {
        faulty(FaultInjection {
            delay: Duration::from_millis(700),
            delay_from_chunk: 0,
            ..FaultInjection::default()
        })
    })
    .await;
    let worker = workers[0].peer_id();
    let node = start("cancel-queued", false, WorkerConfig::default(), addrs).await;
    let client = &node.client;
    let send = |request: TaskRequest| async move {
        tokio::time::timeout(TIMEOUT, client.task(worker, request))
            .await
            .expect("timed out")
            .expect("answered")
    };
    for cancel in [true, false] {
        let tag = if cancel { 10 } else { 20 };
        let (holder, waiter) = (noop::task(tag, Vec::new()), noop::task(tag + 1, Vec::new()));
        for spec in [&holder, &waiter] {
            let answer = send(TaskRequest::Run { spec: spec.clone() }).await;
            assert!(
                matches!(answer, TaskResponse::Accepted { .. }),
                "{answer:?}"
            );
        }
        assert_eq!(
            running_on(client, worker).await,
            1,
            "the first chunk holds the core"
        );
        if cancel {
            let answer = send(TaskRequest::Cancel { chunk: waiter.id() }).await;
            assert!(matches!(answer, TaskResponse::Unknown { .. }), "{answer:?}");
        }
        match run_to_end(client, worker, holder).await {
            TaskResponse::Done { .. } => {}
            other => panic!("the first chunk: expected a result, got {other:?}"),
        }
        // The core was handed to the waiting chunk (if any) as the first let it go.
        if cancel {
            // The first chunk's answer can come a moment before it lets go of the core:
            // the count must fall to 0 well within the 700 ms the cancelled chunk would
            // hold the core if it had taken it.
            let deadline = Instant::now() + Duration::from_millis(300);
            let mut busy = running_on(client, worker).await;
            while busy != 0 && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(20)).await;
                busy = running_on(client, worker).await;
            }
            assert_eq!(busy, 0, "the cancelled chunk took the core");
        } else {
            let busy = running_on(client, worker).await;
            assert_eq!(busy, 1, "the waiting chunk did not take the core");
            match run_to_end(client, worker, waiter).await {
                TaskResponse::Done { .. } => {}
                other => panic!("the waiting chunk: expected a result, got {other:?}"),
            }
        }
    }
}
