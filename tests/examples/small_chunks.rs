//! Small chunks at full speed: jobs of `noop` chunks (no work, 32-byte results) on two
//! workers, each worker a process of its own (this example started again with
//! `--worker`), the submitter in this process computing nothing, all on loopback TCP.
//!
//! For each run it prints the chunks per second and the CPU time the three processes
//! spent per chunk, user and kernel (from `/proc/<pid>/stat`), then the slowest,
//! median and fastest run. With `--compare` it runs the same number of no-op tasks on
//! two workers in Ray and in Dask distributed (`compare/*.py` beside this file), when
//! their Python packages are installed, and says so when they are not.
//!
//! Run: `cargo run --release -p idlegrid-tests --example small_chunks -- [--runs 10]
//! [--chunks 20000] [--compare] [--million | --one-job N]`
//!
//! `--one-job N` runs one job of N chunks instead, then the same job again (which
//! reuses every result from the job's result log), and prints both times and the
//! submitter's peak memory (`VmHWM`). `--million` does that for jobs of 10,000,
//! 100,000 and 1,000,000 chunks, each in a process of its own, and prints how the
//! submitter's peak memory grows with the chunks.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use idlegrid::grid::{self, GridConfig, Job};
use idlegrid::net::NetConfig;
use idlegrid::node::{Node, NodeConfig};
use idlegrid_scheduler::Trust;
use libp2p::Multiaddr;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

fn node_config(dir: PathBuf, serve: bool) -> Result<NodeConfig> {
    let mut config = NodeConfig::new(dir);
    config.net = NetConfig {
        listen: vec!["/ip4/127.0.0.1/tcp/0".parse()?],
        mdns: false,
        ..NetConfig::default()
    };
    config.worker.serve = serve;
    config.worker.noop_kernel = true;
    config.cores = 1;
    Ok(config)
}

/// `--worker DIR`: a worker node; prints its address, runs until stdin closes.
async fn worker(dir: PathBuf) -> Result<()> {
    let node = Node::start(node_config(dir, true)?).await?;
    let addr = node.listen_addrs().await?[0].clone();
    println!("{addr}/p2p/{}", node.peer_id());
    std::io::stdout().flush()?;
    tokio::task::spawn_blocking(|| {
        let mut line = String::new();
        while std::io::stdin().read_line(&mut line).is_ok_and(|n| n > 0) {}
    })
    .await?;
    Ok(())
}

/// A worker process and its address.
struct WorkerProcess {
    child: Child,
    addr: Multiaddr,
}

fn spawn_worker(dir: &Path) -> Result<WorkerProcess> {
    let mut child = Command::new(std::env::current_exe()?)
        .arg("--worker")
        .arg(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let stdout = child.stdout.take().ok_or("worker without stdout")?;
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line)?;
    let addr = line.trim().parse()?;
    Ok(WorkerProcess { child, addr })
}

/// User and kernel CPU seconds a process has used, from `/proc/<pid>/stat`.
fn cpu_of(pid: &str) -> Result<(f64, f64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces) in parentheses.
    let after = stat.rsplit_once(')').ok_or("odd /proc stat")?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = 100.0; // USER_HZ on Linux
    let user: f64 = fields.get(11).ok_or("no utime")?.parse()?;
    let system: f64 = fields.get(12).ok_or("no stime")?.parse()?;
    Ok((user / ticks, system / ticks))
}

fn cpu_of_all(pids: &[String]) -> Result<(f64, f64)> {
    let mut total = (0.0, 0.0);
    for pid in pids {
        let (u, s) = cpu_of(pid)?;
        total.0 += u;
        total.1 += s;
    }
    Ok(total)
}

fn peak_memory_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// A job of `chunks` noop chunks numbered from `first` (so every run's chunks are new).
fn noop_job(first: u64, chunks: usize) -> Job {
    idlegrid::jobs::noop_job(first..first + chunks as u64, Vec::new())
}

fn remote_only() -> GridConfig {
    GridConfig {
        trust: Trust::All,
        min_peers: 2,
        compute_locally: false,
        show_progress: false,
        ..GridConfig::default()
    }
}

/// Runs a Python comparison script if its package imports; its last line is a rate.
fn compare(name: &str, module: &str, script: &str, tasks: usize) {
    let importable = Command::new("python3")
        .args(["-c", &format!("import {module}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !importable {
        println!("{name}: not installed (pip install {module}); skipped");
        return;
    }
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples/compare")
        .join(script);
    match Command::new("python3")
        .arg(&path)
        .arg(tasks.to_string())
        .output()
    {
        Ok(out) if out.status.success() => {
            let text = String::from_utf8_lossy(&out.stdout);
            println!("{name}: {}", text.lines().last().unwrap_or("no output"));
        }
        Ok(out) => println!(
            "{name}: failed: {}",
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .last()
                .unwrap_or("")
        ),
        Err(e) => println!("{name}: cannot run python3: {e}"),
    }
}

/// Runs `--one-job N` for each size, each in a process of its own (a process's peak
/// memory only grows), and prints the submitter's peak memory against the chunks.
fn sizes(sizes: &[usize]) -> Result<()> {
    let exe = std::env::current_exe()?;
    let mut rows = Vec::new();
    for &chunks in sizes {
        let out = Command::new(&exe)
            .args(["--one-job", &chunks.to_string()])
            .stderr(Stdio::inherit())
            .output()?;
        let text = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            return Err(format!("the job of {chunks} chunks failed: {text}").into());
        }
        let figures: Vec<f64> = text
            .lines()
            .find_map(|l| l.strip_prefix("figures: "))
            .ok_or("no figures printed")?
            .split(' ')
            .map(str::parse)
            .collect::<std::result::Result<_, _>>()?;
        let [_, secs, rerun, peak_kib] = figures[..] else {
            return Err("four figures expected".into());
        };
        rows.push((chunks, secs, rerun, peak_kib));
    }
    println!("chunks     job (s)  chunks/s  rerun (s)  peak (MiB)  bytes per chunk over the smallest job");
    let (first_chunks, _, _, first_peak) = rows[0];
    for &(chunks, secs, rerun, peak_kib) in &rows {
        let growth = (peak_kib - first_peak) * 1024.0 / (chunks - first_chunks).max(1) as f64;
        println!(
            "{chunks:>9}  {secs:>7.1}  {:>8.0}  {rerun:>9.1}  {:>10.1}  {}",
            chunks as f64 / secs,
            peak_kib / 1024.0,
            if chunks == first_chunks {
                "-".to_string()
            } else {
                format!("{growth:.1}")
            }
        );
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let (mut runs, mut chunks, mut with_compare) = (10usize, 20_000usize, false);
    let mut one_job: Option<usize> = None;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--worker" => return worker(PathBuf::from(args.next().ok_or("--worker DIR")?)).await,
            "--runs" => runs = args.next().ok_or("--runs N")?.parse()?,
            "--chunks" => chunks = args.next().ok_or("--chunks N")?.parse()?,
            "--compare" => with_compare = true,
            "--million" => return sizes(&[10_000, 100_000, 1_000_000]),
            "--one-job" => one_job = Some(args.next().ok_or("--one-job N")?.parse()?),
            other => return Err(format!("unknown argument {other:?}").into()),
        }
    }
    let root = std::env::temp_dir().join(format!("idlegrid-small-chunks-{}", std::process::id()));
    let mut workers = vec![
        spawn_worker(&root.join("w1"))?,
        spawn_worker(&root.join("w2"))?,
    ];
    let node = Node::start(node_config(root.join("s"), false)?).await?;
    for w in &workers {
        node.client.dial(w.addr.clone()).await?;
    }
    let mut pids: Vec<String> = workers.iter().map(|w| w.child.id().to_string()).collect();
    pids.push(std::process::id().to_string());

    if let Some(chunks) = one_job {
        let started = Instant::now();
        let outcome = grid::run_job(&node, noop_job(0, chunks), remote_only()).await?;
        let elapsed = started.elapsed().as_secs_f64();
        assert_eq!(outcome.results.len(), chunks);
        drop(outcome);
        let started = Instant::now();
        let again = grid::run_job(&node, noop_job(0, chunks), remote_only()).await?;
        let rerun = started.elapsed().as_secs_f64();
        assert_eq!(
            again.report.chunks_reused, chunks,
            "a rerun reuses every result"
        );
        drop(again);
        let peak = peak_memory_kib().unwrap_or(0);
        println!(
            "{chunks} noop chunks on 2 worker processes: {elapsed:.1} s ({:.0} chunks/s); \
             again, every result reused: {rerun:.1} s; submitter peak memory {} MiB",
            chunks as f64 / elapsed,
            peak / 1024
        );
        println!("figures: {chunks} {elapsed} {rerun} {peak}");
    } else {
        println!("{runs} runs of {chunks} noop chunks on 2 worker processes, the submitter computing nothing:");
        let mut rates = Vec::new();
        for run in 0..runs {
            let before = cpu_of_all(&pids)?;
            let started = Instant::now();
            let job = noop_job((run * chunks) as u64, chunks);
            let outcome = grid::run_job(&node, job, remote_only()).await?;
            let elapsed = started.elapsed().as_secs_f64();
            assert_eq!(outcome.results.len(), chunks);
            let after = cpu_of_all(&pids)?;
            let per_chunk = |a: f64, b: f64| (a - b) / chunks as f64 * 1e6;
            let rate = chunks as f64 / elapsed;
            println!(
                "  run {:2}: {rate:6.0} chunks/s; CPU per chunk: user {:.0} µs, kernel {:.0} µs",
                run + 1,
                per_chunk(after.0, before.0),
                per_chunk(after.1, before.1)
            );
            rates.push(rate);
        }
        rates.sort_by(f64::total_cmp);
        let median = rates[rates.len() / 2];
        println!(
            "chunks/s: slowest {:.0}, median {median:.0}, fastest {:.0}; slowest/median {:.2}",
            rates[0],
            rates[rates.len() - 1],
            rates[0] / median
        );
    }
    drop(node);
    for w in &mut workers {
        drop(w.child.stdin.take());
        let _ = tokio::time::timeout(Duration::from_secs(10), async {
            while w.child.try_wait().ok().flatten().is_none() {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await;
        let _ = w.child.kill();
    }
    let _ = std::fs::remove_dir_all(&root);
    if with_compare {
        let tasks = 10_000;
        println!("{tasks} no-op tasks on 2 workers, same machine:");
        compare("Ray", "ray", "ray_noop.py", tasks);
        compare("Dask distributed", "distributed", "dask_noop.py", tasks);
    }
    Ok(())
}
