//! `--ui` on a command that runs a job, as a user runs it: the built binary keeps its
//! page up after the job has ended (showing the finished job and its report) until
//! Ctrl-C or SIGTERM, then exits with the job's status; `--ui-no-wait` closes it with
//! the command; `--local --ui` shows the local job on the page and writes the same
//! output as `--local` alone.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::support::temp_dir;

/// Every wait here ends by this.
const WAIT: Duration = Duration::from_secs(60);

fn idlegrid(dir: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_idlegrid"));
    command
        .current_dir(dir)
        .args(args)
        .arg("--data-dir")
        .arg(dir.join("data"));
    command
}

/// A command with its page, its stderr read line by line.
struct Paged {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Paged {
    fn start(mut command: Command) -> Paged {
        let mut child = command
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        Paged {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Reads stderr until a line containing `text`; returns that line.
    fn wait_for_line(&mut self, text: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(text) {
                        return line;
                    }
                }
                Err(_) => {
                    let _ = self.child.kill();
                    panic!("no line with {text:?}; stderr so far: {:#?}", self.seen);
                }
            }
        }
    }

    fn signal(&self, signal: i32) {
        let pid = self.child.id() as i32;
        assert_eq!(unsafe { libc::kill(pid, signal) }, 0);
    }

    /// The exit code, waiting at most [`WAIT`]; the rest of stderr joins `seen`.
    fn exit_code(&mut self) -> i32 {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(2)) {
                    self.seen.push(line);
                }
                return status
                    .code()
                    .unwrap_or_else(|| panic!("ended by a signal: {status:?}"));
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("the command did not exit: {:#?}", self.seen);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// The page address in a line ending `... http://127.0.0.1:PORT/: Ctrl-C quits`.
fn page_addr(line: &str) -> String {
    let at = line.find("http://").expect("an address") + "http://".len();
    line[at..].split('/').next().unwrap().to_string()
}

/// GET `path` from the page at `addr`: the code and body.
fn get(addr: &str, path: &str) -> (u16, Vec<u8>) {
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).unwrap();
    let end = answer.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&answer[..end]).to_string();
    let code = head.split(' ').nth(1).unwrap().parse().unwrap();
    (code, answer[end + 4..].to_vec())
}

fn job_of(addr: &str) -> serde_json::Value {
    let (code, body) = get(addr, "/api/state");
    assert_eq!(code, 200);
    let state: serde_json::Value = serde_json::from_slice(&body).unwrap();
    state["jobs"][0].clone()
}

fn sample_pair(dir: &Path) {
    let status = idlegrid(
        dir,
        &[
            "change",
            "a.png",
            "b.png",
            "--write-sample",
            "--sample-size",
            "256x192",
        ],
    )
    .status()
    .unwrap();
    assert!(status.success());
}

#[test]
fn a_local_job_with_the_page_keeps_it_up_until_ctrl_c() {
    let dir = temp_dir("ui-cli", "local");
    sample_pair(&dir);
    let plain = idlegrid(
        &dir,
        &[
            "change",
            "a.png",
            "b.png",
            "-o",
            "plain.png",
            "--overlay",
            "plain-overlay.png",
            "--local",
        ],
    )
    .output()
    .unwrap();
    assert!(plain.status.success());

    let mut paged = Paged::start(idlegrid(
        &dir,
        &[
            "change",
            "a.png",
            "b.png",
            "-o",
            "paged.png",
            "--overlay",
            "paged-overlay.png",
            "--local",
            "--ui-listen",
            "127.0.0.1:0",
        ],
    ));
    let line = paged.wait_for_line("stays up");
    assert!(line.contains("Ctrl-C quits"), "{line}");
    let addr = page_addr(&line);
    // The output is written before the page waits, and is --local's.
    let read = |name: &str| std::fs::read(dir.join(name)).unwrap();
    assert!(read("paged.png") == read("plain.png"));
    assert!(read("paged-overlay.png") == read("plain-overlay.png"));
    // The page shows the finished local job, and its report.
    let job = job_of(&addr);
    assert_eq!(job["phase"], "done", "{job}");
    assert_eq!(job["units_done"], job["units_total"], "{job}");
    assert_eq!(
        job["peers"].as_array().unwrap().len(),
        1,
        "this machine alone: {job}"
    );
    let (code, report) = get(&addr, "/api/jobs/1/report.json");
    assert_eq!(code, 200);
    let report: serde_json::Value = serde_json::from_slice(&report).unwrap();
    assert_eq!(report["chunks"], job["chunks"]);
    paged.signal(libc::SIGINT);
    assert_eq!(paged.exit_code(), 0, "{:#?}", paged.seen);
}

/// Writes argv[1] to stdout; exits with code 3 when it is "bad" (see run_cli.rs).
const BAD_ON_BAD: &str = r#"(module
  (import "wasi_snapshot_preview1" "fd_write" (func $w (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "args_sizes_get" (func $sizes (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "args_get" (func $args (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (func (export "_start") (local $a i32)
    (drop (call $sizes (i32.const 100) (i32.const 104)))
    (drop (call $args (i32.const 200) (i32.const 1024)))
    (local.set $a (i32.load (i32.const 204)))
    (if (i32.eq (i32.load (local.get $a)) (i32.const 0x00646162)) (then (call $exit (i32.const 3))))
    (i32.store (i32.const 0) (local.get $a))
    (i32.store (i32.const 4) (i32.const 1))
    (drop (call $w (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))"#;

#[test]
fn a_failed_job_keeps_its_page_and_exits_non_zero_on_sigterm() {
    let dir = temp_dir("ui-cli", "failed");
    std::fs::write(dir.join("m.wasm"), wat::parse_str(BAD_ON_BAD).unwrap()).unwrap();
    let mut paged = Paged::start(idlegrid(
        &dir,
        &[
            "run",
            "m.wasm",
            "--range",
            "0..2",
            "--args",
            "bad",
            "-o",
            "out_{i}",
            "--local",
            "--ui-listen",
            "127.0.0.1:0",
        ],
    ));
    let line = paged.wait_for_line("stays up");
    assert!(line.contains("failed"), "{line}");
    let job = job_of(&page_addr(&line));
    assert_eq!(job["phase"], "failed", "{job}");
    paged.signal(libc::SIGTERM);
    assert_eq!(paged.exit_code(), 1, "{:#?}", paged.seen);
    let errors = paged
        .seen
        .iter()
        .filter(|l| l.starts_with("error:"))
        .count();
    assert_eq!(
        errors, 1,
        "the error once, before the wait: {:#?}",
        paged.seen
    );
}

#[test]
fn ui_no_wait_closes_the_page_with_the_command() {
    let dir = temp_dir("ui-cli", "no-wait");
    sample_pair(&dir);
    let mut paged = Paged::start(idlegrid(
        &dir,
        &[
            "change",
            "a.png",
            "b.png",
            "-o",
            "m.png",
            "--local",
            "--ui-listen",
            "127.0.0.1:0",
            "--ui-no-wait",
        ],
    ));
    assert_eq!(paged.exit_code(), 0, "{:#?}", paged.seen);
    assert!(paged.seen.iter().any(|l| l.contains("the job's page")));
    assert!(!paged.seen.iter().any(|l| l.contains("stays up")));
    assert!(dir.join("m.png").is_file());
}
