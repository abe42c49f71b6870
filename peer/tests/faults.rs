//! The fault suite: real `idlegrid` processes in network namespaces joined by a bridge,
//! struck while a change job runs, each scenario ending by comparing the grid's mask
//! byte for byte with a `--local` run of the same job.
//!
//! Scenarios: a worker killed (SIGKILL) mid-chunk; a worker frozen (SIGSTOP) and later
//! resumed (SIGCONT); a worker's link cut mid-job and restored; a slow peer (200 ms
//! each way, 10 Mbit/s) that must get less work and cost at most 1.2× in job time; a
//! lying worker caught by `--replicas 2` and by `--spot-check`, and banned; and the
//! submitting peer killed mid-job and started again with the same command, which must
//! reuse what it had finished (`chunks_reused` in its report).
//!
//! Workers misbehave through the hidden `serve --fault-*` flags of the
//! `fault-injection` build (a `cargo test --workspace` enables it; alone:
//! `cargo test --release -p idlegrid --features fault-injection --test faults`).
//! Shaping uses `tc netem` where the kernel has it; a kernel without `sch_netem` (some
//! virtual machines' kernels) gets the same 200 ms from a delay line in this process — the worker's cable cut in two, each half a TAP device, every Ethernet
//! frame handed across 200 ms late — and the 10 Mbit/s from `tc tbf`.
//!
//! Needs root and iproute2; without them every test prints why and passes vacuously.
//! Scenarios run one at a time (they share two cores and measure time), every wait
//! has a timeout, and every process and namespace is removed on drop, failed or not.

#[cfg(not(feature = "fault-injection"))]
#[test]
fn fault_suite_needs_the_fault_injection_feature() {
    println!(
        "SKIPPED: built without the fault-injection feature; run \
         `cargo test --release -p idlegrid --features fault-injection --test faults`"
    );
}

#[cfg(feature = "fault-injection")]
#[path = "integration/support/mod.rs"]
mod support;

#[cfg(feature = "fault-injection")]
mod suite {
    use std::io::{Read, Write};
    use std::os::fd::AsRawFd;
    use std::path::{Path, PathBuf};
    use std::process::{Child, Command, ExitStatus, Stdio};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{mpsc, Arc, Mutex, OnceLock};
    use std::time::{Duration, Instant};

    use super::support::{can_make_namespaces, ip, temp_dir, write_sample, BIN};

    /// The job every scenario runs: 256 bands of 16 rows, ~10 M pixel updates each
    /// (a few seconds on one core: long enough to strike mid-job).
    const SAMPLE: &str = "2048x4096";
    const BAND_ROWS: &str = "16";
    const CHUNKS: usize = 256;
    /// Port every worker listens on, inside its own namespace.
    const PORT: u16 = 4001;
    /// Longest any one job may take before the scenario fails.
    const JOB_TIMEOUT: Duration = Duration::from_secs(120);

    /// One scenario at a time: they share the machine's cores and some measure time.
    static SERIAL: Mutex<()> = Mutex::new(());

    /// Polls `done` every 50 ms until it holds or `timeout` passes.
    fn wait_until(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
        let started = Instant::now();
        while started.elapsed() < timeout {
            if done() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        done()
    }

    /// Chunks whose verified result the result logs in `dir` hold now.
    fn results_logged(dir: &Path) -> usize {
        std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|entry| idlegrid::results::ResultLog::chunks_recorded(&entry.path()).unwrap_or(0))
            .sum()
    }

    /// A bridge namespace and host namespaces on 10.232.0.0/24; processes spawned in
    /// them; everything removed on drop.
    struct Lan {
        prefix: String,
        hosts: Vec<String>,
        procs: Vec<Child>,
        delay_lines: Vec<DelayLine>,
    }

    impl Lan {
        fn new(n: usize, tag: &str) -> Result<Lan, String> {
            let prefix = format!("igf{}{tag}", std::process::id() % 100_000);
            let mut lan = Lan {
                prefix: prefix.clone(),
                hosts: Vec::new(),
                procs: Vec::new(),
                delay_lines: Vec::new(),
            };
            let bridge = lan.bridge();
            ip(&["netns", "add", &bridge])?;
            ip(&["-n", &bridge, "link", "add", "br0", "type", "bridge"])?;
            ip(&["-n", &bridge, "link", "set", "br0", "up"])?;
            for i in 0..n {
                let host = format!("{prefix}h{i}");
                ip(&["netns", "add", &host])?;
                lan.hosts.push(host.clone());
                let (inside, outside) = (lan.inside(i), lan.outside(i));
                ip(&[
                    "link", "add", &inside, "type", "veth", "peer", "name", &outside,
                ])?;
                ip(&["link", "set", &inside, "netns", &host])?;
                ip(&["link", "set", &outside, "netns", &bridge])?;
                ip(&["-n", &bridge, "link", "set", &outside, "master", "br0"])?;
                ip(&["-n", &bridge, "link", "set", &outside, "up"])?;
                ip(&[
                    "-n",
                    &host,
                    "addr",
                    "add",
                    &format!("{}/24", addr(i)),
                    "dev",
                    &inside,
                ])?;
                ip(&["-n", &host, "link", "set", &inside, "up"])?;
                ip(&["-n", &host, "link", "set", "lo", "up"])?;
            }
            Ok(lan)
        }

        fn bridge(&self) -> String {
            format!("{}br", self.prefix)
        }
        fn inside(&self, i: usize) -> String {
            format!("{}i{i}", self.prefix)
        }
        fn outside(&self, i: usize) -> String {
            format!("{}o{i}", self.prefix)
        }

        /// Starts `idlegrid ARGS` in host `host`; returns its handle.
        fn spawn(&mut self, host: usize, args: &[&str], log: &Path) -> usize {
            let out = std::fs::File::create(log).expect("log file");
            let err = out.try_clone().expect("log file");
            // `ip netns exec` execs the command in place: the child's pid is idlegrid's.
            let child = Command::new("ip")
                .args(["netns", "exec", &self.hosts[host], BIN])
                .args(args)
                // The worker's debug lines tell when it holds a chunk (`wait_worker_busy`).
                .env(
                    "IDLEGRID_LOG",
                    "warn,libp2p_kad=error,idlegrid::worker=debug",
                )
                .stdout(Stdio::from(out))
                .stderr(Stdio::from(err))
                .spawn()
                .expect("spawn idlegrid");
            self.procs.push(child);
            self.procs.len() - 1
        }

        fn signal(&self, proc: usize, signal: libc::c_int) {
            let pid = self.procs[proc].id() as libc::pid_t;
            // SAFETY: kill has no memory preconditions; the pid is our own child, not yet
            // reaped (we only reap in `wait` and on drop).
            let rc = unsafe { libc::kill(pid, signal) };
            assert_eq!(rc, 0, "kill({pid}, {signal}) failed");
        }

        /// Waits for `proc` to exit, at most `timeout`.
        fn wait(&mut self, proc: usize, timeout: Duration) -> Option<ExitStatus> {
            let child = &mut self.procs[proc];
            let started = Instant::now();
            loop {
                if let Ok(Some(status)) = child.try_wait() {
                    return Some(status);
                }
                if started.elapsed() > timeout {
                    return None;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }

        /// Cuts (or restores) host `i`'s cable at the bridge.
        fn link(&self, i: usize, up: bool) {
            let state = if up { "up" } else { "down" };
            ip(&["-n", &self.bridge(), "link", "set", &self.outside(i), state]).expect("link");
        }

        /// Shapes both directions of host `i`'s cable: `delay` each way and `rate`.
        /// Returns how (netem, or a TAP delay line plus tbf).
        fn slow_down(&mut self, i: usize, delay: Duration, rate: &str) -> String {
            let delay_ms = format!("{}ms", delay.as_millis());
            let netem = |ns: &str, dev: &str| {
                ip(&[
                    "netns", "exec", ns, "tc", "qdisc", "replace", "dev", dev, "root", "netem",
                    "delay", &delay_ms, "rate", rate,
                ])
            };
            if netem(&self.hosts[i], &self.inside(i)).is_ok() {
                netem(&self.bridge(), &self.outside(i)).expect("netem on the bridge side");
                return "tc netem".into();
            }
            // No netem: the cable (a veth pair) is replaced by two TAP devices with the
            // same names, one in the host (with its address), one on the bridge, and
            // this process carries every frame across, `delay` late. A TAP device has no
            // offloads, so the kernel hands it checksummed frames of at most one MTU.
            let (host, bridge) = (self.hosts[i].clone(), self.bridge());
            let (inside, outside) = (self.inside(i), self.outside(i));
            ip(&["-n", &host, "link", "del", &inside]).expect("remove the veth");
            let near = tap_in(&host, &inside).expect("TAP device in the host");
            let far = tap_in(&bridge, &outside).expect("TAP device on the bridge");
            let cidr = format!("{}/24", addr(i));
            ip(&["-n", &host, "addr", "add", &cidr, "dev", &inside]).expect("address");
            ip(&["-n", &host, "link", "set", &inside, "up"]).expect("link up");
            ip(&["-n", &bridge, "link", "set", &outside, "master", "br0"]).expect("bridge");
            ip(&["-n", &bridge, "link", "set", &outside, "up"]).expect("link up");
            // The rate on each device's egress, i.e. before the delay, both ways.
            let tbf = |ns: &str, dev: &str| {
                ip(&[
                    "netns", "exec", ns, "tc", "qdisc", "replace", "dev", dev, "root", "tbf",
                    "rate", rate, "burst", "32kbit", "latency", "400ms",
                ])
                .expect("tc tbf")
            };
            tbf(&host, &inside);
            tbf(&bridge, &outside);
            self.delay_lines.push(DelayLine::start(near, far, delay));
            "tc tbf + a TAP delay line (no sch_netem in this kernel)".into()
        }
    }

    impl Drop for Lan {
        fn drop(&mut self) {
            for child in &mut self.procs {
                // A frozen process must be thawed to die promptly on every kernel.
                // SAFETY: as in `signal`; errors (already exited) are ignored.
                unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGCONT) };
                let _ = child.kill();
                let _ = child.wait();
            }
            for line in &mut self.delay_lines {
                line.stop();
            }
            for host in &self.hosts {
                let _ = ip(&["netns", "delete", host]);
            }
            let _ = ip(&["netns", "delete", &self.bridge()]);
        }
    }

    fn addr(i: usize) -> String {
        format!("10.232.0.{}", i + 10)
    }

    /// Opens a TAP device named `name` in namespace `ns` (frames without a packet
    /// info header). It lives as long as the returned file.
    fn tap_in(ns: &str, name: &str) -> Result<std::fs::File, String> {
        /// `struct ifreq` as TUNSETIFF reads it: the name, then the flags.
        #[repr(C)]
        struct IfReq {
            name: [u8; 16],
            flags: libc::c_short,
            _rest: [u8; 22],
        }
        const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
        const IFF_TAP: libc::c_short = 0x0002;
        const IFF_NO_PI: libc::c_short = 0x1000;
        let (ns_path, name) = (format!("/var/run/netns/{ns}"), name.to_string());
        // A TUN/TAP device is made in the namespace its file was opened in: open it
        // on a thread of its own that first enters `ns` (setns affects one thread).
        std::thread::spawn(move || {
            let netns = std::fs::File::open(&ns_path).map_err(|e| format!("{ns_path}: {e}"))?;
            // SAFETY: a valid fd of a network namespace file and the matching flag.
            if unsafe { libc::setns(netns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return Err(format!(
                    "setns {ns_path}: {}",
                    std::io::Error::last_os_error()
                ));
            }
            let tun = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/net/tun")
                .map_err(|e| format!("/dev/net/tun: {e}"))?;
            let mut req = IfReq {
                name: [0; 16],
                flags: IFF_TAP | IFF_NO_PI,
                _rest: [0; 22],
            };
            let bytes = name.as_bytes();
            if bytes.len() >= req.name.len() {
                return Err(format!("interface name {name} is too long"));
            }
            req.name[..bytes.len()].copy_from_slice(bytes);
            // SAFETY: TUNSETIFF reads a `struct ifreq`, which `req` lays out, and the fd
            // is an open /dev/net/tun.
            if unsafe { libc::ioctl(tun.as_raw_fd(), TUNSETIFF, &mut req) } != 0 {
                return Err(format!(
                    "TUNSETIFF {name}: {}",
                    std::io::Error::last_os_error()
                ));
            }
            Ok(tun)
        })
        .join()
        .map_err(|_| "the TAP thread panicked".to_string())?
    }

    /// Two TAP devices joined by this process: each Ethernet frame read from one is
    /// written to the other `delay` after it arrived, in order. Everything below IP
    /// sees the delay (TCP's handshake, round-trip estimate, slow start, ARP), as it
    /// would with netem.
    struct DelayLine {
        stop: Arc<AtomicBool>,
        threads: Vec<std::thread::JoinHandle<()>>,
    }

    impl DelayLine {
        fn start(a: std::fs::File, b: std::fs::File, delay: Duration) -> DelayLine {
            let stop = Arc::new(AtomicBool::new(false));
            let (a, b) = (Arc::new(a), Arc::new(b));
            let mut threads = Vec::new();
            for (from, to) in [(a.clone(), b.clone()), (b, a)] {
                let (tx, rx) = mpsc::channel::<(Instant, Vec<u8>)>();
                let stop_reading = stop.clone();
                threads.push(std::thread::spawn(move || {
                    let mut buf = vec![0u8; 65536];
                    while !stop_reading.load(Ordering::Relaxed) {
                        let mut pfd = libc::pollfd {
                            fd: from.as_raw_fd(),
                            events: libc::POLLIN,
                            revents: 0,
                        };
                        // SAFETY: one valid pollfd; a timeout so the stop flag is seen.
                        if unsafe { libc::poll(&mut pfd, 1, 50) } <= 0 {
                            continue;
                        }
                        match (&*from).read(&mut buf) {
                            Ok(n) if n > 0 => {
                                if tx
                                    .send((Instant::now() + delay, buf[..n].to_vec()))
                                    .is_err()
                                {
                                    break;
                                }
                            }
                            _ => break,
                        }
                    }
                }));
                let stop_writing = stop.clone();
                threads.push(std::thread::spawn(move || loop {
                    match rx.recv_timeout(Duration::from_millis(50)) {
                        Ok((due, frame)) => {
                            std::thread::sleep(due.saturating_duration_since(Instant::now()));
                            // A frame the device refuses is lost, as on a wire.
                            let _ = (&*to).write(&frame);
                        }
                        Err(mpsc::RecvTimeoutError::Timeout) => {
                            if stop_writing.load(Ordering::Relaxed) {
                                break;
                            }
                        }
                        Err(mpsc::RecvTimeoutError::Disconnected) => break,
                    }
                }));
            }
            DelayLine { stop, threads }
        }

        fn stop(&mut self) {
            self.stop.store(true, Ordering::Relaxed);
            for thread in self.threads.drain(..) {
                let _ = thread.join();
            }
        }
    }

    /// The inputs every scenario shares and the `--local` mask they must all equal.
    struct Fixture {
        dir: PathBuf,
        before: String,
        after: String,
        local_mask: Vec<u8>,
    }

    fn fixture() -> &'static Fixture {
        static FIXTURE: OnceLock<Fixture> = OnceLock::new();
        FIXTURE.get_or_init(|| {
            let dir = temp_dir("faults", "fixture");
            let (before, after) = write_sample(&dir, SAMPLE);
            let local = dir.join("local.png").to_string_lossy().into_owned();
            let out = Command::new(BIN)
                .args(["change", &before, &after, "-o", &local, "--local"])
                .args(["--band-rows", BAND_ROWS])
                .output()
                .expect("local run");
            assert!(out.status.success(), "{out:?}");
            let local_mask = std::fs::read(&local).expect("local mask");
            Fixture {
                dir,
                before,
                after,
                local_mask,
            }
        })
    }

    /// One scenario: its directory, its LAN, its workers.
    struct Scenario {
        name: &'static str,
        dir: PathBuf,
        lan: Lan,
        workers: Vec<Worker>,
        /// `--min-peers` of the next job; default: every worker.
        min_peers: Option<usize>,
        logs: Vec<PathBuf>,
    }

    impl Drop for Scenario {
        fn drop(&mut self) {
            // The peers' blob stores take over a gigabyte per scenario: kept only to
            // look into a failure.
            if std::thread::panicking() {
                eprintln!("{}: files kept in {}", self.name, self.dir.display());
            } else {
                let _ = std::fs::remove_dir_all(&self.dir);
            }
        }
    }

    #[derive(Clone)]
    struct Worker {
        proc: usize,
        host: usize,
        log: PathBuf,
        peer_id: String,
        dial: String,
    }

    /// The submitter's host; workers are hosts 1...
    const SUBMITTER: usize = 0;

    impl Scenario {
        /// A LAN of one submitter host and `workers` worker hosts; `None` (after
        /// printing why) where namespaces cannot be made.
        fn new(name: &'static str, tag: &str, workers: usize) -> Option<Scenario> {
            if let Err(why) = can_make_namespaces() {
                println!("SKIPPED {name}: cannot create network namespaces here ({why})");
                return None;
            }
            let dir = fixture().dir.join(name);
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).expect("scenario dir");
            let lan = match Lan::new(workers + 1, tag) {
                Ok(lan) => lan,
                Err(why) => {
                    println!("SKIPPED {name}: cannot create network namespaces here ({why})");
                    return None;
                }
            };
            Some(Scenario {
                name,
                dir,
                lan,
                workers: Vec::new(),
                min_peers: None,
                logs: Vec::new(),
            })
        }

        fn path(&self, name: &str) -> String {
            self.dir.join(name).to_string_lossy().into_owned()
        }

        /// Starts a worker on the next host with extra `serve` flags and waits until it
        /// listens.
        fn worker(&mut self, extra: &[&str]) -> usize {
            let n = self.workers.len();
            let host = n + 1;
            let data = self.dir.join(format!("worker{n}"));
            let log = self.dir.join(format!("worker{n}.log"));
            let data_arg = data.to_string_lossy().into_owned();
            let listen = format!("/ip4/0.0.0.0/tcp/{PORT}");
            let mut args = vec![
                "serve",
                "--cores",
                "1",
                "--no-mdns",
                "--normal-priority",
                "--listen",
                &listen,
                "--data-dir",
                &data_arg,
            ];
            args.extend_from_slice(extra);
            let proc = self.lan.spawn(host, &args, &log);
            self.logs.push(log.clone());
            let mut peer_id = String::new();
            let started = wait_until(Duration::from_secs(20), || {
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                if !text.contains("listening on") {
                    return false;
                }
                peer_id = text
                    .lines()
                    .find_map(|l| l.split(" as ").nth(1))
                    .unwrap_or_default()
                    .trim()
                    .to_string();
                !peer_id.is_empty()
            });
            assert!(started, "worker {n} did not start:\n{}", self.logs());
            self.workers.push(Worker {
                proc,
                host,
                log,
                dial: format!("/ip4/{}/tcp/{PORT}", addr(host)),
                peer_id,
            });
            n
        }

        /// The submitter's command line: the shared job, dialling every worker.
        fn submit_args(&self, tag: &str, extra: &[&str]) -> Vec<String> {
            let f = fixture();
            let mut args: Vec<String> = [
                "change",
                &f.before,
                &f.after,
                "-o",
                &self.path(&format!("{tag}.png")),
                "--band-rows",
                BAND_ROWS,
                "--cores",
                "1",
                "--no-mdns",
                "--min-peers",
                &self.min_peers.unwrap_or(self.workers.len()).to_string(),
                "--discover-timeout",
                "30s",
                "--report",
                &self.path(&format!("{tag}.json")),
                "--data-dir",
                &self.path(&format!("{tag}-data")),
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            for w in &self.workers {
                args.push("--peer".into());
                args.push(format!("{}/p2p/{}", w.dial, w.peer_id));
            }
            // The scenarios time how faults are handled, so the workers' results are
            // taken as a closed pool's (no checks) unless a scenario says otherwise.
            if !extra.contains(&"--trust") {
                args.extend(["--trust".to_string(), "all".to_string()]);
            }
            args.extend(extra.iter().map(|s| s.to_string()));
            args
        }

        /// Starts the submitter (host 0); returns its process handle.
        fn start_job(&mut self, tag: &str, extra: &[&str]) -> usize {
            let args = self.submit_args(tag, extra);
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let log = self.dir.join(format!("{tag}.log"));
            self.logs.push(log.clone());
            self.lan.spawn(SUBMITTER, &args, &log)
        }

        /// Verified results the submitter of job `tag` has recorded so far.
        fn verified(&self, tag: &str) -> usize {
            results_logged(&self.dir.join(format!("{tag}-data/submit/results")))
        }

        /// Chunks worker `w` has fetched the inputs of (its calibration chunk first), by
        /// its log. Inputs can be held in memory, so its blob store does not tell.
        fn worker_chunks_held(&self, w: usize) -> usize {
            std::fs::read_to_string(&self.workers[w].log)
                .unwrap_or_default()
                .lines()
                .filter(|l| l.contains("has its inputs"))
                .count()
        }

        /// Waits until worker `w` is computing job chunks: it has fetched the inputs of
        /// its calibration chunk and of at least `bands` bands.
        fn wait_worker_busy(&self, w: usize, bands: usize) {
            let busy = wait_until(Duration::from_secs(60), || {
                self.worker_chunks_held(w) > bands
            });
            assert!(
                busy,
                "{}: worker {w} never got {bands} chunk(s):\n{}",
                self.name,
                self.logs()
            );
        }

        /// Waits for the job to end; checks its exit, its mask against the local one,
        /// and returns its report and how long it ran.
        fn finish_job(&mut self, proc: usize, tag: &str) -> serde_json::Value {
            let status = self.lan.wait(proc, JOB_TIMEOUT);
            assert!(
                status.is_some_and(|s| s.success()),
                "{}: job {tag} ended with {status:?}:\n{}",
                self.name,
                self.logs()
            );
            let mask = std::fs::read(self.path(&format!("{tag}.png"))).expect("grid mask");
            assert!(
                mask == fixture().local_mask,
                "{}: the grid's mask differs from the local one:\n{}",
                self.name,
                self.logs()
            );
            let report = std::fs::read(self.path(&format!("{tag}.json"))).expect("report");
            serde_json::from_slice(&report).expect("report json")
        }

        fn logs(&self) -> String {
            self.logs
                .iter()
                .map(|p| {
                    let text = std::fs::read_to_string(p).unwrap_or_default();
                    let tail: Vec<&str> = text.lines().rev().take(40).collect();
                    let tail: Vec<&str> = tail.into_iter().rev().collect();
                    format!("--- {}\n{}", p.display(), tail.join("\n"))
                })
                .collect::<Vec<_>>()
                .join("\n")
        }
    }

    /// The report line of worker `w`.
    fn peer<'a>(report: &'a serde_json::Value, s: &Scenario, w: usize) -> &'a serde_json::Value {
        let id = &s.workers[w].peer_id;
        report["peers"]
            .as_array()
            .and_then(|peers| peers.iter().find(|p| p["peer_id"] == id.as_str()))
            .unwrap_or_else(|| {
                panic!(
                    "{}: worker {w} ({id}) not in the report: {report:#}",
                    s.name
                )
            })
    }

    fn chunks_done(report: &serde_json::Value, s: &Scenario, w: usize) -> u64 {
        peer(report, s, w)["chunks_done"].as_u64().unwrap_or(0)
    }

    impl Scenario {
        /// Two workers that hold each chunk 300 ms (after a full-speed benchmark), a
        /// job started on them, and worker 0 holding a chunk: ready to strike. Returns
        /// the job and how many chunks were verified at that moment.
        fn job_with_worker_0_busy(&mut self) -> (usize, usize) {
            self.worker(&slow_after_bench("300ms"));
            self.worker(&slow_after_bench("300ms"));
            let job = self.start_job("job", &[]);
            self.wait_worker_busy(0, 1);
            let at = self.verified("job");
            (job, at)
        }
    }

    fn serial() -> std::sync::MutexGuard<'static, ()> {
        SERIAL.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Workers that benchmark at full speed, then take `ms` per chunk: they hold work
    /// long enough to be struck mid-chunk.
    fn slow_after_bench(ms: &str) -> [&str; 4] {
        ["--fault-delay", ms, "--fault-delay-from-chunk", "1"]
    }

    #[test]
    fn worker_killed_mid_chunk() {
        let _serial = serial();
        let Some(mut s) = Scenario::new("killed", "k", 2) else {
            return;
        };
        let (job, at) = s.job_with_worker_0_busy();
        s.lan.signal(s.workers[0].proc, libc::SIGKILL);
        let report = s.finish_job(job, "job");
        let victim = peer(&report, &s, 0);
        println!(
            "{}: killed worker 0 at {at}/{CHUNKS} verified; job {:.1} s; victim {victim}",
            s.name, report["elapsed_seconds"]
        );
        assert_eq!(victim["left"], true, "{report:#}");
    }

    #[test]
    fn worker_frozen_and_resumed() {
        let _serial = serial();
        let Some(mut s) = Scenario::new("frozen", "f", 2) else {
            return;
        };
        let (job, at) = s.job_with_worker_0_busy();
        s.lan.signal(s.workers[0].proc, libc::SIGSTOP);
        let frozen = Instant::now();
        // The job must go on without it: wait for progress, then thaw it mid-job.
        let progressed = wait_until(Duration::from_secs(30), || s.verified("job") >= at + 32);
        s.lan.signal(s.workers[0].proc, libc::SIGCONT);
        let thawed_at = s.verified("job");
        let report = s.finish_job(job, "job");
        println!(
            "{}: froze worker 0 at {at}/{CHUNKS} verified, thawed after {:.1} s at {thawed_at} \
             (progress while frozen: {progressed}); job {:.1} s; victim {}",
            s.name,
            frozen.elapsed().as_secs_f64(),
            report["elapsed_seconds"],
            peer(&report, &s, 0)
        );
        assert!(
            progressed,
            "no progress while a worker was frozen:\n{}",
            s.logs()
        );
    }

    #[test]
    fn link_cut_mid_job_and_restored() {
        let _serial = serial();
        let Some(mut s) = Scenario::new("partition", "p", 2) else {
            return;
        };
        let (job, at) = s.job_with_worker_0_busy();
        let host = s.workers[0].host;
        s.lan.link(host, false);
        let progressed = wait_until(Duration::from_secs(30), || s.verified("job") >= at + 32);
        s.lan.link(host, true);
        let restored_at = s.verified("job");
        let report = s.finish_job(job, "job");
        println!(
            "{}: cut worker 0's link at {at}/{CHUNKS} verified, restored at {restored_at} \
             (progress while cut: {progressed}); job {:.1} s; victim {}",
            s.name,
            report["elapsed_seconds"],
            peer(&report, &s, 0)
        );
        assert!(
            progressed,
            "no progress while a link was cut:\n{}",
            s.logs()
        );
    }

    /// An honest worker and a liar (`--fault-lie`); the job runs with `checks`, and
    /// the liar must be banned, the honest one not (and the mask, as in every
    /// scenario, equal the local one).
    fn liar_is_caught(name: &'static str, tag: &str, checks: &[&str]) {
        let _serial = serial();
        let Some(mut s) = Scenario::new(name, tag, 2) else {
            return;
        };
        s.worker(&[]);
        s.worker(&["--fault-lie"]);
        let job = s.start_job("job", checks);
        let report = s.finish_job(job, "job");
        let liar = peer(&report, &s, 1);
        println!(
            "{}: job {:.1} s; liar {liar}",
            s.name, report["elapsed_seconds"]
        );
        assert_eq!(liar["banned"], true, "{report:#}");
        assert_eq!(peer(&report, &s, 0)["banned"], false, "{report:#}");
    }

    #[test]
    fn lying_worker_caught_by_replicas_and_banned() {
        liar_is_caught("liar-replicas", "r", &["--replicas", "2"]);
    }

    #[test]
    fn lying_worker_caught_by_spot_checks_and_banned() {
        liar_is_caught("liar-spot", "c", &["--spot-check", "0.25"]);
    }

    #[test]
    fn lying_worker_caught_by_earned_trust_the_default() {
        liar_is_caught("liar-earned", "e", &["--trust", "earned"]);
    }

    #[test]
    fn submitter_killed_mid_job_resumes_with_finished_chunks() {
        let _serial = serial();
        let Some(mut s) = Scenario::new("resume", "s", 2) else {
            return;
        };
        s.worker(&slow_after_bench("200ms"));
        s.worker(&slow_after_bench("200ms"));
        let first = s.start_job("job", &[]);
        let midway = wait_until(Duration::from_secs(60), || s.verified("job") >= CHUNKS / 3);
        assert!(midway, "the job never got a third done:\n{}", s.logs());
        s.lan.signal(first, libc::SIGKILL);
        assert!(s.lan.wait(first, Duration::from_secs(10)).is_some());
        let finished = s.verified("job");
        assert!(
            finished < CHUNKS,
            "the job finished before it could be killed; make it longer"
        );
        // The same command again, same data dir.
        let again = s.start_job("job", &[]);
        let report = s.finish_job(again, "job");
        let reused = report["chunks_reused"].as_u64().unwrap_or(0) as usize;
        let computed: u64 = report["peers"]
            .as_array()
            .map(|p| {
                p.iter()
                    .map(|p| p["chunks_done"].as_u64().unwrap_or(0))
                    .sum()
            })
            .unwrap_or(0);
        println!(
            "{}: killed the submitter at {finished}/{CHUNKS} verified; the rerun reused \
             {reused}, computed {computed}, took {:.1} s",
            s.name, report["elapsed_seconds"]
        );
        assert!(reused > 0, "{report:#}");
        assert_eq!(
            reused, finished,
            "every finished chunk is reused: {report:#}"
        );
        assert!(
            computed as usize >= CHUNKS - reused,
            "computed {computed} of the {} left: {report:#}",
            CHUNKS - reused
        );
    }

    /// The PeerId the submitter of job `tag` will have (`idlegrid status` makes the
    /// identity in its data dir and prints it).
    fn submitter_id(s: &Scenario, tag: &str) -> String {
        let out = Command::new(BIN)
            .args(["status", "--data-dir", &s.path(&format!("{tag}-data"))])
            .output()
            .expect("idlegrid status");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .find_map(|l| l.strip_prefix("this machine submits as "))
            .and_then(|rest| rest.split_whitespace().next())
            .map(str::to_string)
            .unwrap_or_else(|| panic!("no submitter id in `idlegrid status`: {out:?}"))
    }

    #[test]
    fn slow_peer_gets_less_work_and_costs_little() {
        let _serial = serial();
        // Rounds without the slow peer, then with it, each on a LAN of its own with
        // fresh workers: a worker remembers the chunks it finished and answers a
        // repeated job from memory (a second round on the same workers took 4.5 s
        // instead of 15), and one that met the slow peer would tell the next
        // submitter of it (DHT).
        const ROUNDS: [(&str, &str, bool); 4] = [
            ("slow-base0", "w0", false),
            ("slow-base1", "w1", false),
            ("slow-with0", "w2", true),
            ("slow-with1", "w3", true),
        ];
        let mut baseline = f64::MAX;
        let mut with_slow = f64::MAX;
        let mut slow_chunks = Vec::new();
        let mut normal_chunks = Vec::new();
        let mut how = String::new();
        for (name, tag, far) in ROUNDS {
            let Some(mut s) = Scenario::new(name, tag, if far { 3 } else { 2 }) else {
                return;
            };
            // Each chunk costs a worker ~100 ms of (simulated) compute that does not
            // load this shared machine's cores, so the time measured is the grid's,
            // not the CPU contention of four processes on two cores. The slow peer is
            // as fast a machine as the others: only its link differs.
            let normal = ["--fault-delay", "100ms"];
            s.worker(&normal);
            s.worker(&normal);
            if far {
                s.worker(&normal);
                how = s
                    .lan
                    .slow_down(s.workers[2].host, Duration::from_millis(200), "10mbit");
            }
            // The job starts with the two normal workers (a user would not wait for a
            // far peer); the slow one joins when its benchmark is in.
            s.min_peers = Some(2);
            // The submitter's own worker computes for real, ~10x faster than these
            // workers' simulated 100 ms: it would take most of the job and make it too
            // short for a far peer to join (connection, probe and benchmark take
            // seconds over 400 ms round trips). It is left out (`--weights SELF=0`),
            // so the job (~15 s) is the remote workers' alone.
            let me = submitter_id(&s, "job");
            let weights = format!("{me}=0");
            let job = s.start_job("job", &["--weights", &weights]);
            let report = s.finish_job(job, "job");
            let elapsed = report["elapsed_seconds"].as_f64().unwrap_or(f64::MAX);
            let local = report["peers"]
                .as_array()
                .and_then(|p| p.iter().find(|p| p["role"] == "local"))
                .map_or(0, |p| p["chunks_done"].as_u64().unwrap_or(0));
            assert_eq!(local, 0, "the submitter's worker was left out: {report:#}");
            let normal = chunks_done(&report, &s, 0).min(chunks_done(&report, &s, 1));
            println!("{name}: job {elapsed:.2} s; {}", report["peers"]);
            if far {
                with_slow = with_slow.min(elapsed);
                slow_chunks.push(chunks_done(&report, &s, 2));
                normal_chunks.push(normal);
            } else {
                baseline = baseline.min(elapsed);
            }
        }
        let ratio = with_slow / baseline;
        println!(
            "slow: shaping by {how}; best of 2: {baseline:.2} s without the slow peer, \
             {with_slow:.2} s with it (×{ratio:.2}); chunks per round: slow {slow_chunks:?}, \
             the less busy normal worker {normal_chunks:?}"
        );
        for (slow, normal) in slow_chunks.iter().zip(&normal_chunks) {
            assert!(
                *slow > 0,
                "the slow peer computed nothing: it never joined in time"
            );
            assert!(
                slow < normal,
                "the slow peer got as much work as a normal one ({slow} ≥ {normal})"
            );
        }
        assert!(
            ratio <= 1.2,
            "the slow peer made the job {ratio:.2}× slower ({baseline:.2} s → {with_slow:.2} s)"
        );
    }
}
