//! Pieces shared by the tests that run real `idlegrid` processes in network
//! namespaces (`lan_mdns.rs`, `nat.rs`, and the fault suite `tests/faults.rs`, which
//! includes this file): running `ip`, the root check, a generated pair and the
//! comparison of a grid job's mask with a local run's; and every test's scratch dirs.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

pub const BIN: &str = env!("CARGO_BIN_EXE_idlegrid");

/// Runs `program ARGS`; its stdout, or an error naming the command and its stderr.
pub fn run(program: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

pub fn ip(args: &[&str]) -> Result<(), String> {
    run("ip", args).map(drop)
}

/// Root and iproute2, or why not.
pub fn can_make_namespaces() -> Result<(), String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err("not root".into());
    }
    ip(&["-V"]).map_err(|e| format!("iproute2 missing: {e}"))
}

/// An empty scratch directory for one test (see [`scratch_root`]).
pub fn temp_dir(suite: &str, name: &str) -> PathBuf {
    let dir = scratch_root().join(format!("{suite}-{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// Where this process's scratch directories go: `idlegrid-tests-<pid>` in the temp
/// dir. The first call removes the roots that earlier runs of the tests left (their
/// process is gone), so repeated runs do not fill the temp dir, while a failed run's
/// files stay for a look until the next run. Without `/proc` nothing is removed.
fn scratch_root() -> &'static Path {
    const PREFIX: &str = "idlegrid-tests-";
    static ROOT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    ROOT.get_or_init(|| {
        let tmp = std::env::temp_dir();
        if Path::new("/proc/self").exists() {
            for entry in std::fs::read_dir(&tmp).into_iter().flatten().flatten() {
                let name = entry.file_name();
                let Some(pid) = name.to_str().and_then(|n| n.strip_prefix(PREFIX)) else {
                    continue;
                };
                let gone = pid.parse::<u32>().is_ok() && !Path::new("/proc").join(pid).exists();
                if gone {
                    let _ = std::fs::remove_dir_all(entry.path());
                }
            }
        }
        tmp.join(format!("{PREFIX}{}", std::process::id()))
    })
}

/// Writes a generated before/after pair of `size` (e.g. `512x1024`) into `dir`.
pub fn write_sample(dir: &std::path::Path, size: &str) -> (String, String) {
    let path = |name: &str| dir.join(name).to_string_lossy().into_owned();
    let (before, after) = (path("before.png"), path("after.png"));
    let out = Command::new(BIN)
        .args([
            "change",
            "--write-sample",
            &before,
            &after,
            "--sample-size",
            size,
        ])
        .output()
        .expect("write sample");
    assert!(out.status.success(), "{out:?}");
    (before, after)
}

/// Runs the same change job `--local` and asserts its mask equals `grid_mask`.
pub fn assert_same_as_local(before: &str, after: &str, band_rows: &str, grid_mask: &str) {
    let local_mask = format!("{grid_mask}.local.png");
    let out = Command::new(BIN)
        .args(["change", before, after, "-o", &local_mask, "--local"])
        .args(["--band-rows", band_rows])
        .output()
        .expect("local run");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        std::fs::read(grid_mask).expect("grid mask"),
        std::fs::read(&local_mask).expect("local mask"),
        "the grid job's mask {grid_mask} differs from the local run's"
    );
}
