//! One peer per data dir: a second `serve` on a dir in use is refused with a message that
//! names the dir and the holder, and two jobs submitted from one machine at once run as
//! two peers, each in its own submit dir.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use clap::Parser;
use idlegrid::commands::common::{start_submitter, NetArgs};

use crate::support::temp_dir;

fn serve(data_dir: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_idlegrid"));
    cmd.args(["serve", "--no-mdns", "--cores", "1", "--listen"])
        .arg("/ip4/127.0.0.1/tcp/0")
        .arg("--data-dir")
        .arg(data_dir);
    cmd
}

/// Kills the first `serve` whatever the test does.
struct Running(Child);
impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_second_serve_on_a_data_dir_in_use_is_refused() {
    let dir = temp_dir("datadir", "serve");
    let mut first = serve(&dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = first.id();
    let stdout = first.stdout.take().unwrap();
    let first = Running(first);
    // `serve` prints its data dir once its peer runs (and holds the dir).
    let (lines, said) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = said
            .recv_timeout(left)
            .expect("the first serve never said it runs");
        if line.contains("stop with Ctrl-C") {
            break;
        }
    }
    let second = serve(&dir).output().unwrap();
    assert!(!second.status.success());
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(
        stderr.contains(&format!("data dir {} is in use", dir.display())),
        "{stderr}"
    );
    assert!(stderr.contains(&format!("(pid {pid})")), "{stderr}");
    assert!(stderr.contains("--data-dir"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    drop(first);
    let _ = std::fs::remove_dir_all(&dir);
}

#[derive(Parser)]
struct Flags {
    #[command(flatten)]
    net: NetArgs,
}

#[tokio::test]
async fn two_jobs_from_one_data_dir_submit_as_two_peers() {
    let dir = temp_dir("datadir", "submit");
    let flags = Flags::parse_from([
        "test".as_ref(),
        "--no-mdns".as_ref(),
        "--listen".as_ref(),
        "/ip4/127.0.0.1/tcp/0".as_ref(),
        "--data-dir".as_ref(),
        dir.as_os_str(),
    ]);
    let wait = Duration::from_secs(30);
    let (first, first_dir) = tokio::time::timeout(wait, start_submitter(&flags.net))
        .await
        .unwrap()
        .unwrap();
    let (second, second_dir) = tokio::time::timeout(wait, start_submitter(&flags.net))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first_dir, dir.join("submit"));
    assert_eq!(second_dir, dir.join("submit-2"));
    assert_ne!(first.peer_id(), second.peer_id());
    // The first dir is free again once its job ends.
    drop(first);
    let (third, third_dir) = tokio::time::timeout(wait, start_submitter(&flags.net))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(third_dir, dir.join("submit"));
    drop((second, third));
    let _ = std::fs::remove_dir_all(&dir);
}
