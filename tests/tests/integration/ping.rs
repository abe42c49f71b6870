//! A worker that stops answering pings mid-job, in one process on loopback: its
//! connection goes through a TCP relay that the test freezes (bytes stop flowing, the
//! sockets stay open, as with a frozen process or a cut cable). Requests to it would
//! only time out after minutes here, deadlines too, and speculation is off: the chunks
//! it holds can only come back because the submitter's pings go unanswered.

use std::sync::Arc;
use std::time::Duration;

use crate::common::*;
use idlegrid::grid::{self, GridConfig};
use idlegrid::net::NetConfig;
use idlegrid::node::{Node, NodeConfig};
use idlegrid::policy::Gate;
use idlegrid::worker::WorkerConfig;
use idlegrid_scheduler::SchedulerConfig;
use libp2p::multiaddr::Protocol;
use libp2p::Multiaddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// Forwards TCP connections from a local port to `target` until frozen; frozen, it
/// reads nothing more (the sockets stay open, so neither end sees a close).
struct Relay {
    addr: std::net::SocketAddr,
    frozen: watch::Sender<bool>,
}

impl Relay {
    async fn start(target: std::net::SocketAddr) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (frozen, _) = watch::channel(false);
        let gate = frozen.clone();
        tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let Ok(outbound) = TcpStream::connect(target).await else {
                    continue;
                };
                let (ri, wi) = inbound.into_split();
                let (ro, wo) = outbound.into_split();
                tokio::spawn(pump(ri, wo, gate.subscribe()));
                tokio::spawn(pump(ro, wi, gate.subscribe()));
            }
        });
        Relay { addr, frozen }
    }

    fn freeze(&self) {
        self.frozen.send_replace(true);
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut frozen: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        // Frozen: wait (for ever, in this test) before reading anything more.
        if frozen.wait_for(|f| !*f).await.is_err() {
            return;
        }
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if *frozen.borrow() {
            // Frozen while reading: these bytes never arrive either.
            std::future::pending::<()>().await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

fn socket_of(addr: &Multiaddr) -> std::net::SocketAddr {
    let mut ip = None;
    let mut port = None;
    for p in addr.iter() {
        match p {
            Protocol::Ip4(a) => ip = Some(std::net::IpAddr::V4(a)),
            Protocol::Tcp(p) => port = Some(p),
            _ => {}
        }
    }
    std::net::SocketAddr::new(ip.unwrap(), port.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_worker_that_stops_answering_pings_loses_its_chunks_at_once() {
    let plan = change_plan(160, 4, 6);
    let expected = plan.assemble(&local_results(&plan)).unwrap();

    // Worker 1 computes each job chunk slowly (after a full-speed benchmark), so it
    // holds chunks when it is frozen; worker 0 is normal.
    let slow_gate = Gate::open();
    let (workers, addrs) = workers(2, |i| match i {
        1 => slow_after_bench(Duration::from_millis(300), slow_gate.clone()),
        _ => WorkerConfig::default().into(),
    })
    .await;
    let frozen_peer = workers[1].peer_id();
    let relay = Relay::start(socket_of(&addrs[1])).await;
    let through_relay: Multiaddr = format!("/ip4/127.0.0.1/tcp/{}", relay.addr.port())
        .parse::<Multiaddr>()
        .unwrap()
        .with(Protocol::P2p(frozen_peer));

    // The submitter pings every 200 ms and gives up on a ping after 1 s; its requests
    // would wait 10 minutes.
    let mut config = NodeConfig::new(temp_dir("submitter"));
    config.net = NetConfig {
        listen: vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()],
        mdns: false,
        peers: vec![addrs[0].clone(), through_relay],
        request_timeout: Duration::from_secs(600),
        ping_interval: Duration::from_millis(200),
        ping_timeout: Duration::from_secs(1),
        ..NetConfig::default()
    };
    config.worker.serve = false;
    config.cores = 1;
    let submitter: Arc<Node> = Arc::new(
        tokio::time::timeout(TIMEOUT, Node::start(config))
            .await
            .expect("node start timed out")
            .expect("node starts"),
    );
    let (job, _resident) = prepare(&submitter, &plan).await;
    let grid_config = GridConfig {
        scheduler: SchedulerConfig {
            // Neither a deadline nor speculation may take the frozen worker's chunks
            // back within the test: only its unanswered pings can.
            deadline_floor: Duration::from_secs(600),
            speculative_copies: 0,
            ..SchedulerConfig::default()
        },
        ..remote_pool(2)
    };

    // Freeze the relay once the slow worker holds a chunk of the job.
    let gate = slow_gate.clone();
    let store = workers[1].store.clone();
    let pieces: Vec<_> = plan
        .chunks
        .iter()
        .flat_map(|c| c.inputs[1..].to_vec())
        .collect();
    let freezer = tokio::spawn(async move {
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        while !pieces.iter().any(|cid| store.has(cid)) || gate.working() == 0 {
            assert!(tokio::time::Instant::now() < deadline, "never got a chunk");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        relay.freeze();
        relay
    });
    let outcome = tokio::time::timeout(TIMEOUT, grid::run_job(&submitter, job, grid_config))
        .await
        .expect("job timed out: the frozen worker's chunks never came back")
        .expect("job succeeds");
    let _relay = freezer.await.unwrap();

    let mask = assembled(&plan, &outcome);
    assert_eq!(mask, expected);
    let report = outcome
        .report
        .peers
        .iter()
        .find(|p| p.peer_id == frozen_peer.to_string())
        .expect("the frozen worker took part");
    assert!(report.failures >= 1, "{report:?}");
    // Open (or half-open, if the job outlasted the cool-down and its probe is out).
    assert_ne!(report.breaker, "closed", "{report:?}");
    assert!(
        !report.left,
        "still connected (frozen, not gone): {report:?}"
    );
}
