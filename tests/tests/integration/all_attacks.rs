//! Every attack at once. A volunteer runs in a process of its own (this test binary
//! started again, see [`volunteer_in_its_own_process`]) with a 4 MiB disk cap and a
//! 256 MiB memory cap, inputs going through its disk. While an honest submitter runs a
//! change job on it, on a liar and on three fake identities that fail every chunk (this
//! machine only checking their results), a hostile peer floods the volunteer with large
//! chunks, plants a `noop` chunk, announces an input larger than its chunk allows,
//! reads the honest submitter's input it was never given and polls its chunk. At the
//! end: the job's mask equals the local run's, the liar is banned, every attack got a
//! refusal, and the volunteer's peak memory (`VmHWM`) and blob folder stayed within its
//! caps.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::common::*;
use idlegrid::blobs::fetch_bytes;
use idlegrid::grid::{self, remote::run_chunk, GridConfig};
use idlegrid::net::NetConfig;
use idlegrid::node::{Node, NodeConfig};
use idlegrid::worker::{FaultInjection, WorkerConfig};
use idlegrid_kernels::change::{self, ChangeParams};
use idlegrid_kernels::noop;
use idlegrid_protocol::{TaskRequest, TaskResponse, TaskSpec};
use libp2p::{Multiaddr, PeerId};

/// The volunteer's caps.
const DISK: u64 = 4 << 20;
const MEMORY: u64 = 256 << 20;

/// Set in the volunteer's process: its data dir.
const VOLUNTEER_DIR: &str = "IDLEGRID_TEST_VOLUNTEER_DIR";

/// The volunteer's side: run by the test below in a process of its own (and a no-op
/// otherwise). It serves with the caps above until its parent closes its stdin, or
/// three minutes at most.
#[test]
#[ignore = "started by all_attacks_at_once_leave_the_output_and_the_volunteer_s_caps_intact"]
fn volunteer_in_its_own_process() {
    let Ok(dir) = std::env::var(VOLUNTEER_DIR) else {
        return;
    };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let mut config = NodeConfig::new(dir.into());
        config.net = NetConfig {
            listen: vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()],
            mdns: false,
            max_memory: Some(MEMORY as usize),
            ..NetConfig::default()
        };
        config.store_cap = DISK;
        // Inputs through the disk, so that the disk cap is what holds them; a
        // production worker in all else (no noop).
        config.worker = WorkerConfig {
            memory_inputs: 0,
            ..WorkerConfig::default()
        };
        config.cores = 1;
        let node = Node::start(config).await.unwrap();
        let addr = node.listen_addrs().await.unwrap()[0].clone();
        println!("VOLUNTEER {addr} {}", node.peer_id());
        // Until the parent goes away (its end of stdin closes) or the time is up.
        let stdin_closed = tokio::task::spawn_blocking(|| {
            let mut line = String::new();
            while std::io::stdin().read_line(&mut line).is_ok_and(|n| n > 0) {}
        });
        let _ = tokio::time::timeout(Duration::from_secs(180), stdin_closed).await;
    });
}

/// The volunteer's process; killed when dropped.
struct Volunteer {
    child: Child,
    addr: Multiaddr,
    peer: PeerId,
    dir: std::path::PathBuf,
}

impl Volunteer {
    fn start() -> Volunteer {
        let dir = temp_dir("attacked-volunteer");
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "all_attacks::volunteer_in_its_own_process",
                "--exact",
                "--ignored",
                "--nocapture",
            ])
            .env(VOLUNTEER_DIR, &dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the volunteer's process");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(rest) = line.strip_prefix("VOLUNTEER ") {
                    let _ = tx.send(rest.to_string());
                }
            }
        });
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("the volunteer says where it listens");
        let (addr, peer) = line.split_once(' ').unwrap();
        Volunteer {
            child,
            addr: addr.parse().unwrap(),
            peer: peer.parse().unwrap(),
            dir,
        }
    }

    /// Its peak resident memory so far, from the kernel.
    fn peak_memory(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("the volunteer's status");
        let kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmHWM in the status");
        kib * 1024
    }

    fn blob_bytes(&self) -> u64 {
        dir_bytes(&self.dir.join("blobs"))
    }
}

impl Drop for Volunteer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn ask(client: &idlegrid::net::Client, peer: PeerId, request: TaskRequest) -> TaskResponse {
    tokio::time::timeout(TIMEOUT, client.task(peer, request))
        .await
        .expect("request timed out")
        .expect("answered")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn all_attacks_at_once_leave_the_output_and_the_volunteer_s_caps_intact() {
    let volunteer = Volunteer::start();
    // A liar, and three fake identities that pass their benchmark and then fail
    // whatever they get.
    let (liars, mut addrs) = workers(4, |i| {
        faulty(FaultInjection {
            lie: i == 0,
            fail_from_chunk: (i > 0).then_some(1),
            ..FaultInjection::default()
        })
    })
    .await;
    addrs.push(volunteer.addr.clone());
    let honest = start("attacked-submitter", false, WorkerConfig::default(), addrs).await;
    let hostile = start(
        "hostile-submitter",
        false,
        WorkerConfig::default(),
        vec![volunteer.addr.clone()],
    )
    .await;

    // The peak of the volunteer's blob folder, sampled all along.
    let peak_disk = Arc::new(Mutex::new(0u64));
    let sampler = {
        let (peak, blobs) = (peak_disk.clone(), volunteer.dir.join("blobs"));
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

    // The honest job, under earned trust. This machine only checks (`--no-compute`):
    // computing at normal priority beside workers at the lowest one, on a loaded
    // machine it could finish every chunk before the liar or a fake identity answered
    // one, and then neither would be caught. Checking only, it leaves every chunk to
    // the peers, each of which gets work in the first round.
    let plan = change_plan(256, 16, 64);
    let expected = plan.assemble(&local_results(&plan)).unwrap();
    let (job, _resident) = prepare(&honest, &plan).await;
    let job_run = {
        let config = GridConfig {
            min_peers: 5,
            compute_locally: false,
            show_progress: false,
            ..GridConfig::default()
        };
        let honest = &honest;
        async move {
            tokio::time::timeout(TIMEOUT, grid::run_job(honest, job, config))
                .await
                .expect("the job timed out")
                .expect("the job succeeds")
        }
    };

    // The attacks, all at once beside it.
    let v = volunteer.peer;
    let attacks = async {
        // A flood of large chunks: 8 bands of a 2048² pair, about 5 MiB of inputs
        // between them against a 4 MiB disk.
        let params = ChangeParams {
            band_rows: 256,
            sweeps: 1,
            ..ChangeParams::default()
        };
        let flood = change::sample_plan(2048, 9, &params).unwrap();
        for (cid, bytes) in &flood.blobs {
            assert_eq!(hostile.store.put(bytes).unwrap(), *cid);
        }
        let flooded = futures::future::join_all(
            flood
                .chunks
                .iter()
                .map(|spec| run_chunk(&hostile.client, &hostile.store, v, spec.clone())),
        );
        // A noop chunk planting bytes on the volunteer.
        let planted = hostile.store.put(b"bytes to be served again").unwrap();
        let noop_spec = noop::task(1, vec![planted]);
        let _g = hostile.store.grants().grant(v, [planted]);
        let noop_answer = ask(&hostile.client, v, TaskRequest::Run { spec: noop_spec }).await;
        // An input announced larger than its chunk allows: a band whose piece is 3 MiB.
        let big = hostile.store.put(&vec![7u8; 3 << 20]).unwrap();
        let mut oversized: TaskSpec = flood.chunks[0].clone();
        // (Its first input is the tables blob; the band's pieces follow.)
        let piece = oversized.inputs.len() - 1;
        oversized.inputs[piece] = big;
        let oversized_answer = run_chunk(&hostile.client, &hostile.store, v, oversized).await;
        // The honest submitter's input, never given to the hostile peer, and a poll of
        // the honest job's chunk on the volunteer.
        let stolen = fetch_bytes(
            &hostile.client,
            honest.peer_id(),
            plan.chunks[0].inputs[0],
            1 << 30,
        )
        .await;
        let polled = ask(
            &hostile.client,
            v,
            TaskRequest::Poll {
                chunk: plan.chunks[0].id(),
            },
        )
        .await;
        (flooded.await, noop_answer, oversized_answer, stolen, polled)
    };
    let (outcome, (flooded, noop_answer, oversized_answer, stolen, polled)) =
        tokio::join!(job_run, attacks);
    sampler.abort();

    // The output, and the liar.
    assert_eq!(
        assembled(&plan, &outcome),
        expected,
        "a lie or an attack reached the output"
    );
    let liar = peer_line(&outcome.report, &liars[0].peer_id().to_string());
    assert!(liar.banned, "the liar is banned: {:?}", outcome.report);
    for failing in &liars[1..] {
        let line = peer_line(&outcome.report, &failing.peer_id().to_string());
        assert!(
            line.failures > 0 && line.chunks_done == 0,
            "a fake identity failed what it got, and the job went on: {line:?}"
        );
    }

    // Every attack was refused.
    assert!(
        matches!(noop_answer, TaskResponse::Refused { .. }),
        "a production volunteer refuses noop: {noop_answer:?}"
    );
    let Err((_, reason)) = oversized_answer else {
        panic!("an input larger than its chunk allows was computed");
    };
    assert!(
        reason.contains("over the") && reason.contains("limit"),
        "{reason}"
    );
    assert!(stolen.is_err(), "a stranger read the submitter's input");
    assert!(
        matches!(polled, TaskResponse::Unknown { .. }),
        "a stranger's poll of another's chunk: {polled:?}"
    );
    for answer in &flooded {
        if let Err((_, reason)) = answer {
            assert!(
                reason.contains("full") || reason.contains("busy") || reason.contains("refused"),
                "a flooded chunk fails for room, not otherwise: {reason}"
            );
        }
    }

    // The volunteer's caps.
    let peak_disk = (*peak_disk.lock().unwrap()).max(volunteer.blob_bytes());
    assert!(
        peak_disk <= DISK,
        "the volunteer's blobs reached {peak_disk} bytes, over {DISK}"
    );
    let peak_memory = volunteer.peak_memory();
    assert!(
        peak_memory <= MEMORY,
        "the volunteer's peak memory was {peak_memory} bytes, over its {MEMORY}-byte cap"
    );
    println!(
        "all attacks at once: volunteer peak memory {:.1} MiB of {} MiB, blobs {:.2} MiB of {} MiB; \
         {} of {} flooded chunks computed",
        peak_memory as f64 / (1 << 20) as f64,
        MEMORY >> 20,
        peak_disk as f64 / (1 << 20) as f64,
        DISK >> 20,
        flooded.iter().filter(|a| a.is_ok()).count(),
        flooded.len()
    );
}
