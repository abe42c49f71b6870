//! Two volunteers behind two different NATs work together: real `idlegrid` processes in
//! network namespaces, each private LAN behind a router namespace that masquerades
//! (iptables MASQUERADE) and drops unsolicited inbound traffic, with a bootstrap node
//! (which relays) on the "internet" between them.
//!
//! ```text
//!   worker 192.168.10.2 ── router A (NAT) ─┐
//!                                          ├─ 10.232.0.0/24 ── bootstrap + relay 10.232.0.1
//!   submitter 192.168.20.2 ── router B (NAT) ┘
//! ```
//!
//! The worker learns from autonat that it cannot be dialled, takes a slot on the
//! relay, and the submitter reaches it through the relay; DCUtR then punches a direct
//! hole. A second test forbids the routers to talk to each other, so hole punching
//! cannot work and the whole job goes through the relay. Both compare the mask with a
//! local run.
//!
//! Needs root, iproute2 and iptables; without them the tests print why and pass
//! vacuously. CI runs as root and installs iptables. Every process is killed and every
//! namespace deleted on the way out, failed or not; every wait has a timeout.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::{
    assert_same_as_local, can_make_namespaces, ip, run, temp_dir, write_sample, BIN,
};

/// Runs `command` inside namespace `ns`.
fn in_ns(ns: &str, command: &[&str]) -> Result<(), String> {
    let mut args = vec!["netns", "exec", ns];
    args.extend_from_slice(command);
    ip(&args)
}

/// The namespaces and processes of one test, removed on drop.
struct Internet {
    prefix: String,
    namespaces: Vec<String>,
    children: Vec<Child>,
}

/// The two NATed sites.
const SITES: [(&str, &str, &str); 2] = [
    // (site, router's internet address, LAN prefix)
    ("a", "10.232.0.2", "192.168.10"),
    ("b", "10.232.0.3", "192.168.20"),
];
const RELAY_IP: &str = "10.232.0.1";

impl Internet {
    /// The namespace called `name` in this test.
    fn ns(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    fn add_ns(&mut self, name: &str) -> Result<String, String> {
        let ns = self.ns(name);
        ip(&["netns", "add", &ns])?;
        self.namespaces.push(ns.clone());
        ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// A veth pair: `a_if` in `a`, `b_if` in `b`, both up.
    fn link(&self, a: &str, a_if: &str, b: &str, b_if: &str) -> Result<(), String> {
        let (tmp_a, tmp_b) = (
            format!("{}x{a_if}", self.prefix),
            format!("{}y{b_if}", self.prefix),
        );
        ip(&[
            "link", "add", &tmp_a, "type", "veth", "peer", "name", &tmp_b,
        ])?;
        ip(&["link", "set", &tmp_a, "netns", a])?;
        ip(&["link", "set", &tmp_b, "netns", b])?;
        ip(&["-n", a, "link", "set", &tmp_a, "name", a_if])?;
        ip(&["-n", b, "link", "set", &tmp_b, "name", b_if])?;
        ip(&["-n", a, "link", "set", a_if, "up"])?;
        ip(&["-n", b, "link", "set", b_if, "up"])
    }

    /// The internet (a bridge), the relay on it, and two sites behind NAT routers.
    /// With `routers_isolated` the routers drop traffic to each other, so only the
    /// relay connects the sites.
    fn new(tag: &str, routers_isolated: bool) -> Result<Internet, String> {
        let mut net = Internet {
            prefix: format!("ign{}{tag}", std::process::id() % 100_000),
            namespaces: Vec::new(),
            children: Vec::new(),
        };
        let wan = net.add_ns("wan")?;
        ip(&["-n", &wan, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &wan, "link", "set", "br0", "up"])?;

        let relay = net.add_ns("relay")?;
        net.link(&relay, "eth0", &wan, "relay")?;
        ip(&["-n", &wan, "link", "set", "relay", "master", "br0"])?;
        ip(&[
            "-n",
            &relay,
            "addr",
            "add",
            &format!("{RELAY_IP}/24"),
            "dev",
            "eth0",
        ])?;

        for (site, router_ip, lan) in SITES {
            let router = net.add_ns(&format!("r{site}"))?;
            let host = net.add_ns(&format!("h{site}"))?;
            let port = format!("r{site}");
            net.link(&router, "wan0", &wan, &port)?;
            ip(&["-n", &wan, "link", "set", &port, "master", "br0"])?;
            ip(&[
                "-n",
                &router,
                "addr",
                "add",
                &format!("{router_ip}/24"),
                "dev",
                "wan0",
            ])?;
            net.link(&router, "lan0", &host, "eth0")?;
            ip(&[
                "-n",
                &router,
                "addr",
                "add",
                &format!("{lan}.1/24"),
                "dev",
                "lan0",
            ])?;
            ip(&[
                "-n",
                &host,
                "addr",
                "add",
                &format!("{lan}.2/24"),
                "dev",
                "eth0",
            ])?;
            ip(&[
                "-n",
                &host,
                "route",
                "add",
                "default",
                "via",
                &format!("{lan}.1"),
            ])?;
            in_ns(&router, &["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"])?;
            let iptables = |rule: &[&str]| {
                let mut command = vec!["iptables"];
                command.extend_from_slice(rule);
                in_ns(&router, &command)
            };
            iptables(&[
                "-t",
                "nat",
                "-A",
                "POSTROUTING",
                "-o",
                "wan0",
                "-j",
                "MASQUERADE",
            ])?;
            if routers_isolated {
                for (other, other_ip, _) in SITES {
                    if other != site {
                        iptables(&["-A", "FORWARD", "-d", other_ip, "-j", "DROP"])?;
                    }
                }
            }
            // A home router: answers to what went out come in, nothing else does,
            // neither to the LAN nor to the router itself (which would answer a
            // stray SYN with a reset, unlike real routers, and end hole punching).
            for chain in ["FORWARD", "INPUT"] {
                iptables(&[
                    "-A",
                    chain,
                    "-i",
                    "wan0",
                    "-m",
                    "conntrack",
                    "--ctstate",
                    "ESTABLISHED,RELATED",
                    "-j",
                    "ACCEPT",
                ])?;
                iptables(&["-A", chain, "-i", "wan0", "-j", "DROP"])?;
            }
        }
        Ok(net)
    }

    fn spawn(&mut self, ns: &str, args: &[&str], log: &Path) -> Result<(), String> {
        let log = std::fs::File::create(log).map_err(|e| e.to_string())?;
        let err = log.try_clone().map_err(|e| e.to_string())?;
        let child = Command::new("ip")
            .args(["netns", "exec", ns, BIN])
            .args(args)
            .env("IDLEGRID_LOG", log_filter())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(err))
            .spawn()
            .map_err(|e| e.to_string())?;
        self.children.push(child);
        Ok(())
    }
}

impl Drop for Internet {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        for ns in self.namespaces.iter().rev() {
            let _ = ip(&["netns", "delete", ns]);
        }
    }
}

/// What the peers log: enough to see reachability, slots and hole punching
/// (`IDLEGRID_NAT_LOG` overrides it when digging).
fn log_filter() -> String {
    std::env::var("IDLEGRID_NAT_LOG").unwrap_or_else(|_| "info,libp2p_kad=error".into())
}

fn prerequisites() -> Result<(), String> {
    can_make_namespaces()?;
    run("iptables", &["--version"]).map_err(|e| format!("iptables missing: {e}"))?;
    Ok(())
}

/// Waits until `log` holds a line containing `needle`; returns that line.
fn wait_for_line(log: &Path, needle: &str, timeout: Duration) -> Result<String, String> {
    let started = Instant::now();
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if let Some(line) = text.lines().find(|l| l.contains(needle)) {
            return Ok(line.to_string());
        }
        if started.elapsed() > timeout {
            return Err(format!(
                "no {needle:?} in {} within {timeout:?}:\n{text}",
                log.display()
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs `idlegrid ARGS` in `ns` to the end, killed after `timeout`.
fn run_in(ns: &str, args: &[&str], timeout: Duration) -> Result<String, String> {
    let out = Command::new("timeout")
        .arg(timeout.as_secs().to_string())
        .args(["ip", "netns", "exec", ns, BIN])
        .args(args)
        .env("IDLEGRID_LOG", log_filter())
        .output()
        .map_err(|e| e.to_string())?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() {
        Ok(text)
    } else {
        Err(format!("{args:?} failed ({}):\n{text}", out.status))
    }
}

/// Runs a change job from site b with its only worker at site a; returns the
/// worker's line of the report.
fn job_across_two_nats(tag: &str, routers_isolated: bool) -> Option<serde_json::Value> {
    if let Err(why) = prerequisites() {
        println!("SKIPPED: cannot build NATed namespaces here ({why})");
        return None;
    }
    let dir = temp_dir("nat", tag);
    let mut net = match Internet::new(tag, routers_isolated) {
        Ok(net) => net,
        Err(why) => {
            println!("SKIPPED: cannot build NATed namespaces here ({why})");
            return None;
        }
    };
    let path = |name: &str| dir.join(name).to_string_lossy().into_owned();
    let (before, after) = write_sample(&dir, "512x1024");

    let relay_log = dir.join("relay.log");
    let relay_ns = net.ns("relay");
    net.spawn(
        &relay_ns,
        &[
            "serve",
            "--bootstrap-node",
            "--no-mdns",
            "--listen",
            "/ip4/0.0.0.0/tcp/4001",
            "--listen",
            "/ip4/0.0.0.0/udp/4001/quic-v1",
            "--data-dir",
            &path("relay"),
        ],
        &relay_log,
    )
    .expect("start the relay");
    let line = wait_for_line(
        &relay_log,
        "idlegrid bootstrap node",
        Duration::from_secs(20),
    )
    .expect("relay up");
    let relay_id = line
        .rsplit(' ')
        .next()
        .unwrap_or_default()
        .trim()
        .to_string();
    let bootstrap = format!("/ip4/{RELAY_IP}/tcp/4001/p2p/{relay_id}");

    let worker_log = dir.join("worker.log");
    let worker_ns = net.ns("ha");
    net.spawn(
        &worker_ns,
        &[
            "serve",
            "--no-mdns",
            "--cores",
            "1",
            "--bootstrap",
            &bootstrap,
            "--data-dir",
            &path("worker"),
        ],
        &worker_log,
    )
    .expect("start the worker");
    let logs = || {
        format!(
            "relay log:\n{}\n---\nworker log:\n{}",
            std::fs::read_to_string(&relay_log).unwrap_or_default(),
            std::fs::read_to_string(&worker_log).unwrap_or_default()
        )
    };
    // The worker must find out by itself (autonat) that it needs the relay.
    if let Err(e) = wait_for_line(
        &worker_log,
        "holds a slot for this peer",
        Duration::from_secs(60),
    ) {
        panic!("the worker took no slot on the relay: {e}\n{}", logs());
    }

    let grid_mask = path("grid.png");
    let report = path("report.json");
    let submitter_ns = net.ns("hb");
    let result = run_in(
        &submitter_ns,
        &[
            "change",
            &before,
            &after,
            "-o",
            &grid_mask,
            "--band-rows",
            "16",
            "--no-mdns",
            "--cores",
            "1",
            "--bootstrap",
            &bootstrap,
            // The worker behind the NAT does all the work, so every chunk crosses.
            "--no-compute",
            "--discover-timeout",
            "60s",
            "--report",
            &report,
            "--data-dir",
            &path("submitter"),
        ],
        Duration::from_secs(150),
    );
    let submitter_output = match result {
        Ok(text) => text,
        Err(e) => panic!("the job across two NATs failed: {e}\n{}", logs()),
    };

    assert_same_as_local(&before, &after, "16", &grid_mask);
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&report).expect("report")).expect("report json");
    let worker = report["peers"]
        .as_array()
        .and_then(|peers| peers.iter().find(|p| p["role"] == "remote"))
        .cloned();
    let Some(worker) = worker else {
        panic!("the worker behind NAT never joined: {report:#}\n{}", logs());
    };
    assert_eq!(
        worker["chunks_done"],
        report["chunks"],
        "the worker behind NAT computed every chunk: {report:#}\n{}",
        logs()
    );
    println!(
        "{tag}: {} chunks in {:.1} s; worker behind NAT: {worker}",
        report["chunks"], report["elapsed_seconds"]
    );
    if std::env::var_os("IDLEGRID_NAT_LOGS").is_some() {
        println!("{}\n---\nsubmitter:\n{submitter_output}", logs());
    }
    Some(worker)
}

#[test]
fn volunteers_behind_two_nats_meet_through_a_relay_and_hole_punch() {
    let Some(worker) = job_across_two_nats("p", false) else {
        return;
    };
    assert_eq!(
        worker["route"], "hole-punched",
        "DCUtR did not connect the two NATed peers directly: {worker}"
    );
}

#[test]
fn when_hole_punching_cannot_work_the_job_goes_through_the_relay() {
    let Some(worker) = job_across_two_nats("r", true) else {
        return;
    };
    assert_eq!(
        worker["route"], "relayed",
        "the worker should have been reached through the relay only: {worker}"
    );
}
