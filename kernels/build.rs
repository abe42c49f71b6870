//! Build script: warns, on every build, when OpenH264 is built without its assembly.
//!
//! The video kernel's encoder is OpenH264, compiled from source by `openh264-sys2`.
//! On x86 and x86_64 its build script assembles OpenH264's hand-written SIMD with `nasm`
//! when it finds one, and silently falls back to plain C when it does not: an encoder
//! 2-3x slower, with nothing said. Installing `nasm` afterwards changes nothing either,
//! because that build script declares no inputs to watch and cargo keeps its first
//! result until `cargo clean -p openh264-sys2` (which cleans one profile: `--release`
//! for the release one).
//!
//! This script looks for `nasm` the way `openh264-sys2` 0.9.9 does (through `nasm-rs`
//! 0.3): nothing on other architectures, nothing when `OPENH264_NO_ASM` is set (the
//! user turned the assembly off on purpose), else the path in `NASM` if set, else a file
//! `nasm` in a `PATH` directory. It only looks at the file system: `nasm-rs` also runs
//! `nasm -v` to check the version, but spawning a process on every build to catch a
//! broken or ancient `nasm` is not worth its cost.
//!
//! Re-running: when `nasm` is missing, the script watches the paths where it would be.
//! Cargo treats a watched path that does not exist as always stale, so the script runs
//! (and warns) on every build until `nasm` appears; the price is that this crate is
//! recompiled on each of those builds. When `nasm` is found, the script watches that
//! file and the variables above, and stays quiet and cached.
//!
//! Not detected: `nasm` present now but `openh264-sys2` built before it was installed.
//! That would need `openh264-sys2`'s cached build output, which cargo does not promise
//! to have produced before this script runs (the crate declares no `links`); the
//! warning printed while `nasm` was missing already says to clean it.

use std::env;
use std::path::{Path, PathBuf};

/// The variables `openh264-sys2` and `nasm-rs` read to decide on the assembly.
const WATCHED_VARS: [&str; 3] = ["PATH", "NASM", "OPENH264_NO_ASM"];

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    for var in WATCHED_VARS {
        println!("cargo:rerun-if-env-changed={var}");
    }
    let arch = env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    if !uses_nasm(&arch) || env::var_os("OPENH264_NO_ASM").is_some() {
        return;
    }
    match find_nasm() {
        Search::Found(path) => println!("cargo:rerun-if-changed={}", path.display()),
        Search::Missing { looked_in, tried } => {
            for path in &tried {
                println!("cargo:rerun-if-changed={}", path.display());
            }
            warn(&looked_in);
        }
    }
}

/// Whether `openh264-sys2` assembles OpenH264 with nasm for this target architecture.
fn uses_nasm(arch: &str) -> bool {
    matches!(arch, "x86" | "x86_64")
}

/// Where `nasm` was looked for, and the outcome.
enum Search {
    Found(PathBuf),
    Missing {
        /// Said in the warning: `PATH`, or the `NASM` setting.
        looked_in: String,
        /// Every path tried, watched so that the script runs again.
        tried: Vec<PathBuf>,
    },
}

/// Finds `nasm` as `nasm-rs` does, without running it.
fn find_nasm() -> Search {
    let exe = format!("nasm{}", env::consts::EXE_SUFFIX);
    let path_dirs: Vec<PathBuf> = env::var_os("PATH")
        .map(|p| env::split_paths(&p).collect())
        .unwrap_or_default();
    let (looked_in, tried) = match env::var_os("NASM") {
        // A bare name is found through PATH, like any command; a path is used as is.
        Some(nasm) if Path::new(&nasm).components().count() == 1 => (
            format!("NASM={} (searched in PATH)", nasm.to_string_lossy()),
            path_dirs.iter().map(|d| d.join(&nasm)).collect(),
        ),
        Some(nasm) => (
            format!("NASM={}", nasm.to_string_lossy()),
            vec![PathBuf::from(nasm)],
        ),
        None => (
            "PATH".to_string(),
            path_dirs.iter().map(|d| d.join(&exe)).collect::<Vec<_>>(),
        ),
    };
    match tried.iter().find(|p| is_executable(p)) {
        Some(found) => Search::Found(found.clone()),
        None => Search::Missing { looked_in, tried },
    }
}

#[cfg(unix)]
fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(not(unix))]
fn is_executable(path: &Path) -> bool {
    path.is_file()
}

fn warn(looked_in: &str) {
    let lines = [
        format!("nasm not found ({looked_in}): the video encoder (OpenH264, built by openh264-sys2) is built without its assembly and will be 2-3x slower."),
        "To fix: install nasm (`apt-get install nasm`), then run `cargo clean --release -p openh264-sys2` (without `--release` for a debug build) and build again: cargo keeps the encoder built without assembly until it is cleaned.".to_string(),
    ];
    for line in lines {
        println!("cargo:warning={line}");
    }
}
