//! `idlegrid video` as a user runs it: a demo folder becomes an MP4 with every frame;
//! folder, glob and thread count give the same bytes; bad input gets one clear error
//! naming the file, a non-zero exit, and leaves no partial output or temporary file.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn idlegrid(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_idlegrid"))
        .arg("video")
        .args(args)
        .output()
        .expect("run idlegrid")
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 temp path")
}

/// A temp dir with `frames/` holding `count` demo frames of `w`x`h`, made by the CLI.
fn demo(count: u32, w: u32, h: u32) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let frames = dir.path().join("frames");
    let size = format!("{w}x{h}");
    let out = idlegrid(&[
        s(&frames),
        "--write-sample",
        &count.to_string(),
        "--sample-size",
        &size,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (dir, frames)
}

fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn ffprobe_frames(path: &Path) -> u64 {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-count_frames", "-select_streams", "v:0"])
        .args(["-show_entries", "stream=nb_read_frames", "-of", "csv=p=0"])
        .arg(path)
        .output()
        .expect("ffprobe is needed by this test: apt-get install ffmpeg");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

#[test]
fn folder_glob_and_thread_counts_give_the_same_complete_video() {
    let (dir, frames) = demo(21, 96, 64);
    let a = dir.path().join("a.mp4");
    let b = dir.path().join("b.mp4");
    let out = idlegrid(&[
        s(&frames),
        "-o",
        s(&a),
        "--local",
        "--segment-frames",
        "8",
        "--fps",
        "24",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("21 frames"));
    let pattern = frames.join("frame_*.png");
    let out = idlegrid(&[
        s(&pattern),
        "-o",
        s(&b),
        "--local",
        "--segment-frames",
        "8",
        "--fps",
        "24",
        "--threads",
        "1",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
    assert_eq!(ffprobe_frames(&a), 21);
    // Only the outputs and the frames: temporary segments and files are gone.
    assert_eq!(entries(dir.path()), ["a.mp4", "b.mp4", "frames"]);
}

/// Runs a failing encode into `dir/out.mp4`, which holds "old" before: checks the exit
/// code, that stderr names `culprit`, that "old" is untouched and nothing else is left.
fn fails_cleanly(dir: &Path, frames_arg: &str, culprit: &str) {
    let out_path = dir.join("out.mp4");
    std::fs::write(&out_path, "old").unwrap();
    let before = entries(dir);
    let out = idlegrid(&[frames_arg, "-o", s(&out_path), "--local"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "succeeded on bad input");
    assert!(
        stderr.contains(culprit),
        "error does not name {culprit}: {stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(
        std::fs::read(&out_path).unwrap(),
        b"old",
        "output clobbered"
    );
    assert_eq!(entries(dir), before, "files left behind");
}

#[test]
fn bad_frame_folders_fail_with_the_file_named_and_nothing_left() {
    // Empty folder.
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    fails_cleanly(dir.path(), s(&empty), "no frames");

    // Unsupported file mixed in.
    let (dir, frames) = demo(4, 32, 32);
    std::fs::write(frames.join("readme.txt"), "x").unwrap();
    fails_cleanly(dir.path(), s(&frames), "readme.txt");

    // Frames of different sizes: the first that differs is named.
    let (dir, frames) = demo(6, 32, 32);
    let other = idlegrid_kernels::video::sample::sample_png(0, 40, 32).unwrap();
    std::fs::write(frames.join("frame_000002.png"), &other).unwrap();
    std::fs::write(frames.join("frame_000004.png"), &other).unwrap();
    fails_cleanly(dir.path(), s(&frames), "frame_000002.png");

    // A frame whose data is corrupt past a valid header: found while encoding, after
    // the temporary segment folder exists; it must still be removed.
    let (dir, frames) = demo(10, 64, 48);
    let victim = frames.join("frame_000007.png");
    let bytes = std::fs::read(&victim).unwrap();
    std::fs::write(&victim, &bytes[..bytes.len() / 2]).unwrap();
    fails_cleanly(dir.path(), s(&frames), "frame_000007.png");

    // An unreadable frame (a dangling link).
    let (dir, frames) = demo(3, 32, 32);
    let link = frames.join("frame_000001.png");
    std::fs::remove_file(&link).unwrap();
    std::os::unix::fs::symlink(dir.path().join("nowhere.png"), &link).unwrap();
    fails_cleanly(dir.path(), s(&frames), "frame_000001.png");
}

#[test]
fn unwritable_output_and_grid_mode_fail_clearly() {
    let (dir, frames) = demo(3, 32, 32);
    let blocker = dir.path().join("not-a-dir");
    std::fs::write(&blocker, "x").unwrap();
    for out_path in [blocker.join("out.mp4"), dir.path().join("missing/out.mp4")] {
        let out = idlegrid(&[s(&frames), "-o", s(&out_path), "--local"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert!(stderr.contains("cannot write"), "{stderr}");
        assert!(!out_path.exists());
    }
    // On the grid with no peer to be found (mDNS off, loopback only): a clear error
    // after the discovery timeout, and no output left behind.
    let data = tempfile::tempdir().unwrap();
    let out = idlegrid(&[
        s(&frames),
        "-o",
        s(&dir.path().join("x.mp4")),
        "--min-peers",
        "1",
        "--discover-timeout",
        "1s",
        "--no-mdns",
        "--listen",
        "/ip4/127.0.0.1/tcp/0",
        "--data-dir",
        s(data.path()),
    ]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--min-peers"), "{stderr}");
    assert_eq!(entries(dir.path()), ["frames", "not-a-dir"]);
    // Settings outside their ranges are refused by the command line itself.
    for bad in [["--qp", "52"], ["--fps", "0"], ["--segment-frames", "1"]] {
        let out = idlegrid(&[s(&frames), "-o", "x.mp4", "--local", bad[0], bad[1]]);
        assert!(!out.status.success(), "{bad:?} accepted");
    }
}
