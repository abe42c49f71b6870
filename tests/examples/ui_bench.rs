//! What the web page costs a job: the wall time of a job of `noop` chunks on two
//! workers (in one process, loopback TCP) three ways, interleaved: without the page,
//! with the page up and nobody looking, and with one client reading its live stream
//! (`/api/events`, as an open browser tab does; the browser's own rendering is not
//! in it). Prints the medians and the size of the stream's updates (each one the
//! whole state document; the chunk map in it run-length encoded).
//!
//! Run: `cargo run --release -p idlegrid-tests --example ui_bench -- --chunks 100000 --repeat 3`

use std::sync::{Arc, Mutex};
use std::time::Instant;

use idlegrid::grid::{self, GridConfig, Job};
use idlegrid::net::NetConfig;
use idlegrid::node::{Node, NodeConfig};
use idlegrid::ui::{Hub, Page, UiConfig};

use idlegrid_scheduler::Trust;
use libp2p::Multiaddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// Each run's peers keep their blob stores here: `IDLEGRID_BENCH_DIR`, or the temp
/// dir. Every verified result is a file, and on ext4 a directory of 100,000 files
/// deleted after one run slows the file creations of the next ones (the figures
/// drift from run to run): point it at a tmpfs such as /dev/shm.
fn dir(name: &str) -> std::path::PathBuf {
    let base = std::env::var_os("IDLEGRID_BENCH_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    base.join(format!("idlegrid-ui-bench-{}-{name}", std::process::id()))
}

async fn start(name: &str, serve: bool) -> Result<(Node, Multiaddr)> {
    let dir = dir(name);
    let _ = std::fs::remove_dir_all(&dir);
    let mut config = NodeConfig::new(dir);
    config.net = NetConfig {
        listen: vec!["/ip4/127.0.0.1/tcp/0".parse()?],
        mdns: false,
        ..NetConfig::default()
    };
    config.worker.serve = serve;
    config.worker.noop_kernel = true;
    config.cores = 1;
    let node = Node::start(config).await?;
    let addr = node.listen_addrs().await?[0].clone();
    Ok((node, addr))
}

/// `chunks` noop chunks; `salt` makes each run's chunk ids new (nothing reused).
fn noop_job(chunks: usize, salt: u64) -> Job {
    let base = salt << 32;
    idlegrid::jobs::noop_job(base..base + chunks as u64, Vec::new())
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum Ui {
    Off,
    Unwatched,
    Watched,
}

/// What the stream reader saw: update sizes (bytes of each event's data) and the
/// longest chunk map.
#[derive(Default, Debug)]
struct Stream {
    sizes: Vec<usize>,
    longest_map: usize,
}

/// Reads the page's event stream into `seen` until aborted.
async fn read_stream(addr: std::net::SocketAddr, seen: Arc<Mutex<Stream>>) -> Result<()> {
    let mut tcp = tokio::net::TcpStream::connect(addr).await?;
    tcp.write_all(
        format!("GET /api/events HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n")
            .as_bytes(),
    )
    .await?;
    let mut buffer = Vec::new();
    let mut piece = vec![0u8; 1 << 16];
    loop {
        let n = tcp.read(&mut piece).await?;
        if n == 0 {
            return Ok(());
        }
        buffer.extend_from_slice(&piece[..n]);
        // Events end with a blank line; `data:` lines hold the JSON.
        while let Some(end) = buffer.windows(2).position(|w| w == b"\n\n") {
            let event: Vec<u8> = buffer.drain(..end + 2).collect();
            let text = String::from_utf8_lossy(&event);
            for line in text.lines() {
                if let Some(data) = line.strip_prefix("data: ") {
                    let mut seen = seen.lock().unwrap_or_else(|e| e.into_inner());
                    seen.sizes.push(data.len());
                    if let Ok(state) = serde_json::from_str::<serde_json::Value>(data) {
                        for job in state["jobs"].as_array().into_iter().flatten() {
                            let map = job["map"].as_str().map_or(0, str::len);
                            seen.longest_map = seen.longest_map.max(map);
                        }
                    }
                }
            }
        }
    }
}

async fn run(chunks: usize, page: Ui, salt: u64) -> Result<(f64, f64, Stream)> {
    // Fresh peers each run: a worker's memory of finished chunks and its blob store
    // grow with every job, and would slow the later runs.
    let (_w1, a1) = start(&format!("w1-{salt}"), true).await?;
    let (_w2, a2) = start(&format!("w2-{salt}"), true).await?;
    let workers = [a1, a2];
    let (node, _) = start(&format!("s{salt}"), false).await?;
    for addr in &workers {
        node.client.dial(addr.clone()).await?;
    }
    let job = noop_job(chunks, salt);
    let mut config = GridConfig {
        trust: Trust::All,
        min_peers: workers.len(),
        compute_locally: false,
        show_progress: false,
        ..GridConfig::default()
    };
    let shown = match page {
        Ui::Off => None,
        _ => {
            let ui = UiConfig {
                listen: "127.0.0.1:0".parse()?,
                open: false,
            };
            let page = Page::start(ui, Hub::for_node(&node, None)).await?;
            config.watch = Some(page.hub.add_job("bench".into(), &job).0);
            Some(page)
        }
    };
    let seen = Arc::new(Mutex::new(Stream::default()));
    let reader = match (&shown, page) {
        (Some(p), Ui::Watched) => Some(tokio::spawn(read_stream(p.addr, seen.clone()))),
        _ => None,
    };
    let started = Instant::now();
    let cpu_before = cpu_seconds();
    grid::run_job(&node, job, config).await?;
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu_before;
    // The last update (the report) goes out within a stream tick.
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    drop(shown);
    if let Some(task) = reader {
        task.abort();
    }
    let seen = std::mem::take(&mut *seen.lock().unwrap_or_else(|e| e.into_inner()));
    for name in [
        format!("s{salt}"),
        format!("w1-{salt}"),
        format!("w2-{salt}"),
    ] {
        let _ = std::fs::remove_dir_all(dir(&name));
    }
    Ok((elapsed, cpu, seen))
}

/// CPU seconds this process used so far (all peers run in it): a figure other load on
/// the machine moves less than the wall time.
fn cpu_seconds() -> f64 {
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

#[tokio::main]
async fn main() -> Result<()> {
    let mut chunks = 100_000;
    let mut repeat = 3;
    let mut only = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--chunks" => chunks = args.next().ok_or("--chunks N")?.parse()?,
            "--repeat" => repeat = args.next().ok_or("--repeat N")?.parse()?,
            // One set-up only (for a profiler): off, unwatched or watched.
            "--only" => only = args.next(),
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    let mut times = [Vec::new(), Vec::new(), Vec::new()];
    let mut cpus = [Vec::new(), Vec::new(), Vec::new()];
    let mut sizes = Vec::new();
    let mut longest_map = 0;
    let mut salt = 1;
    for round in 0..repeat {
        // Each round starts with another set-up, so none is always first.
        for step in 0..3 {
            let k = (step + round) % 3;
            let page = [Ui::Off, Ui::Unwatched, Ui::Watched][k];
            if only
                .as_ref()
                .is_some_and(|o| !format!("{page:?}").eq_ignore_ascii_case(o))
            {
                continue;
            }
            let (secs, cpu, seen) = run(chunks, page, salt).await?;
            salt += 1;
            println!(
                "round {round} {page:?}: {secs:.2} s ({:.0} chunks/s), {cpu:.2} CPU-s{}",
                chunks as f64 / secs,
                if page == Ui::Watched {
                    format!(
                        ", {} updates, largest {} bytes",
                        seen.sizes.len(),
                        seen.sizes.iter().max().unwrap_or(&0)
                    )
                } else {
                    String::new()
                }
            );
            times[k].push(secs);
            cpus[k].push(cpu);
            longest_map = longest_map.max(seen.longest_map);
            sizes.extend(seen.sizes);
        }
    }
    if only.is_some() {
        return Ok(());
    }
    let [none, unwatched, watched] = times.map(median);
    let [cpu_none, cpu_unwatched, cpu_watched] = cpus.map(median);
    let change = |x: f64, base: f64| 100.0 * (x / base - 1.0);
    println!("{chunks} noop chunks on 2 workers, median of {repeat} (wall; CPU of the process):");
    println!("  no page          {none:.2} s; {cpu_none:.2} CPU-s");
    println!(
        "  page, unwatched  {unwatched:.2} s ({:+.1} %); {cpu_unwatched:.2} CPU-s ({:+.1} %)",
        change(unwatched, none),
        change(cpu_unwatched, cpu_none)
    );
    println!(
        "  page, watched    {watched:.2} s ({:+.1} %); {cpu_watched:.2} CPU-s ({:+.1} %)",
        change(watched, none),
        change(cpu_watched, cpu_none)
    );
    sizes.sort_unstable();
    if !sizes.is_empty() {
        println!(
            "  updates: {} in all, median {} bytes, largest {} bytes; longest chunk map {} bytes",
            sizes.len(),
            sizes[sizes.len() / 2],
            sizes[sizes.len() - 1],
            longest_map
        );
    }
    Ok(())
}
