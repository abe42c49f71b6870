//! Two machines on one LAN share work with no configuration: real `idlegrid`
//! processes in network namespaces joined by a bridge find each other by mDNS (which
//! does not work on 127.0.0.1) and run a change job whose mask equals the local run's.
//!
//! Needs root and iproute2; without them the test prints why and passes vacuously. CI
//! runs as root. Every process is killed and every namespace deleted on the way out,
//! failed or not; every wait has a timeout.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::{assert_same_as_local, can_make_namespaces, ip, temp_dir, write_sample, BIN};

/// Namespaces, veths and processes of one test, removed on drop.
struct Lan {
    prefix: String,
    hosts: Vec<String>,
    children: Vec<Child>,
}

impl Lan {
    /// A bridge namespace and `n` host namespaces on 10.231.0.0/24.
    fn new(n: usize) -> Result<Lan, String> {
        let prefix = format!("igt{}", std::process::id() % 100_000);
        let mut lan = Lan {
            prefix: prefix.clone(),
            hosts: Vec::new(),
            children: Vec::new(),
        };
        let bridge_ns = format!("{prefix}br");
        ip(&["netns", "add", &bridge_ns])?;
        ip(&["-n", &bridge_ns, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &bridge_ns, "link", "set", "br0", "up"])?;
        for i in 0..n {
            let host = format!("{prefix}h{i}");
            ip(&["netns", "add", &host])?;
            lan.hosts.push(host.clone());
            let (inside, outside) = (format!("{prefix}i{i}"), format!("{prefix}o{i}"));
            ip(&[
                "link", "add", &inside, "type", "veth", "peer", "name", &outside,
            ])?;
            ip(&["link", "set", &inside, "netns", &host])?;
            ip(&["link", "set", &outside, "netns", &bridge_ns])?;
            ip(&["-n", &bridge_ns, "link", "set", &outside, "master", "br0"])?;
            ip(&["-n", &bridge_ns, "link", "set", &outside, "up"])?;
            let addr = format!("10.231.0.{}/24", i + 10);
            ip(&["-n", &host, "addr", "add", &addr, "dev", &inside])?;
            ip(&["-n", &host, "link", "set", &inside, "up"])?;
            ip(&["-n", &host, "link", "set", "lo", "up"])?;
        }
        Ok(lan)
    }

    fn spawn(&mut self, host: usize, args: &[&str], log: &Path) -> Result<(), String> {
        let log = std::fs::File::create(log).map_err(|e| e.to_string())?;
        let err = log.try_clone().map_err(|e| e.to_string())?;
        let child = Command::new("ip")
            .args(["netns", "exec", &self.hosts[host], BIN])
            .args(args)
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(err))
            .spawn()
            .map_err(|e| e.to_string())?;
        self.children.push(child);
        Ok(())
    }

    fn run(&self, host: usize, args: &[&str], timeout: Duration) -> Result<String, String> {
        let mut child = Command::new("timeout")
            .arg(timeout.as_secs().to_string())
            .args(["ip", "netns", "exec", &self.hosts[host], BIN])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| e.to_string())?;
        let started = Instant::now();
        loop {
            if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
                let out = child.wait_with_output().map_err(|e| e.to_string())?;
                let text = format!(
                    "{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
                return if status.success() {
                    Ok(text)
                } else {
                    Err(format!("{args:?} failed ({status}):\n{text}"))
                };
            }
            if started.elapsed() > timeout + Duration::from_secs(5) {
                let _ = child.kill();
                return Err(format!("{args:?} did not finish in {timeout:?}"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        for host in &self.hosts {
            let _ = ip(&["netns", "delete", host]);
        }
        let _ = ip(&["netns", "delete", &format!("{}br", self.prefix)]);
    }
}

#[test]
fn peers_on_one_lan_find_each_other_by_mdns_and_share_a_job() {
    if let Err(why) = can_make_namespaces() {
        println!("SKIPPED: cannot create network namespaces here ({why})");
        return;
    }
    let dir = temp_dir("lan", "mdns");
    let mut lan = match Lan::new(3) {
        Ok(lan) => lan,
        Err(why) => {
            println!("SKIPPED: cannot create network namespaces here ({why})");
            return;
        }
    };
    let path = |name: &str| dir.join(name).to_string_lossy().into_owned();
    let (before, after) = write_sample(&dir, "512x1536");

    for worker in 0..2 {
        let data = path(&format!("worker{worker}"));
        let log = dir.join(format!("worker{worker}.log"));
        lan.spawn(
            worker,
            &["serve", "--cores", "1", "--data-dir", &data],
            &log,
        )
        .expect("start worker");
    }
    let grid_mask = path("grid.png");
    let report = path("report.json");
    let result = lan.run(
        2,
        &[
            "change",
            &before,
            &after,
            "-o",
            &grid_mask,
            "--band-rows",
            "16",
            "--min-peers",
            "2",
            // This machine alone finishes so small a job before a worker's first
            // answer comes back when the machine is busy: it only checks here, so the
            // workers do the job.
            "--no-compute",
            "--discover-timeout",
            "60s",
            "--report",
            &report,
            "--data-dir",
            &path("submitter"),
        ],
        Duration::from_secs(120),
    );
    let logs = || {
        (0..2)
            .map(|w| {
                std::fs::read_to_string(dir.join(format!("worker{w}.log"))).unwrap_or_default()
            })
            .collect::<Vec<_>>()
            .join("\n---\n")
    };
    if let Err(e) = &result {
        panic!("grid job failed: {e}\nworker logs:\n{}", logs());
    }

    assert_same_as_local(&before, &after, "16", &grid_mask);
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&report).expect("report")).expect("report json");
    let peers = report["peers"].as_array().expect("peers");
    let by_mdns: Vec<_> = peers
        .iter()
        .filter(|p| p["role"] == "remote")
        .filter(|p| {
            p["found_by"]
                .as_array()
                .is_some_and(|s| s.iter().any(|s| s == "mdns"))
        })
        .collect();
    assert_eq!(by_mdns.len(), 2, "both workers found by mDNS: {report:#}");
    let remote_chunks: u64 = by_mdns
        .iter()
        .map(|p| p["chunks_done"].as_u64().unwrap_or(0))
        .sum();
    assert!(
        remote_chunks > 0,
        "the workers computed nothing: {report:#}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
