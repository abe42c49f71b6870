//! `idlegrid run` as a user runs it, on this machine (`--local`; the grid path of the
//! same job is tested with the grid): outputs named by the template in folders it
//! creates, joined with `--join concat`, one per input file with the file on stdin; a
//! program that fails on one input stops the job naming that input, with a non-zero
//! exit and earlier outputs untouched; a file that is not a module, or a bad template,
//! is one clear error before anything runs.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::support::temp_dir;

/// Writes argv[1] then its stdin to stdout; exits with code 3 and a message on stderr
/// when argv[1] is "bad".
const ECHO: &str = r#"(module
  (import "wasi_snapshot_preview1" "fd_write" (func $w (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_read" (func $r (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "args_sizes_get" (func $sizes (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "args_get" (func $args (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (data (i32.const 900) "no good\n")
  (func $out (param $fd i32) (param $p i32) (param $l i32)
    (i32.store (i32.const 0) (local.get $p))
    (i32.store (i32.const 4) (local.get $l))
    (drop (call $w (local.get $fd) (i32.const 0) (i32.const 1) (i32.const 8))))
  (func (export "_start") (local $a i32) (local $n i32)
    (drop (call $sizes (i32.const 100) (i32.const 104)))
    (drop (call $args (i32.const 200) (i32.const 1024)))
    (if (i32.ge_u (i32.load (i32.const 100)) (i32.const 2)) (then
      (local.set $a (i32.load (i32.const 204)))
      (if (i32.eq (i32.load (local.get $a)) (i32.const 0x00646162)) (then ;; "bad\0"
        (call $out (i32.const 2) (i32.const 900) (i32.const 8))
        (call $exit (i32.const 3))))
      (call $out (i32.const 1) (local.get $a)
        (i32.sub (i32.sub (i32.add (i32.const 1024) (i32.load (i32.const 104))) (local.get $a)) (i32.const 1)))))
    (block $done (loop $more
      (i32.store (i32.const 16) (i32.const 4096))
      (i32.store (i32.const 20) (i32.const 4096))
      (drop (call $r (i32.const 0) (i32.const 16) (i32.const 1) (i32.const 24)))
      (local.set $n (i32.load (i32.const 24)))
      (br_if $done (i32.eqz (local.get $n)))
      (call $out (i32.const 1) (i32.const 4096) (local.get $n))
      (br $more)))))"#;

fn module(dir: &Path) -> PathBuf {
    let path = dir.join("echo.wasm");
    std::fs::write(&path, wat::parse_str(ECHO).unwrap()).unwrap();
    path
}

fn run(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_idlegrid"))
        .arg("run")
        .args(args)
        .args(["--local", "--data-dir"])
        .arg(dir.join("data"))
        .output()
        .unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn run_local_writes_outputs_by_template_joined_and_per_file() {
    let dir = temp_dir("run-cli", "ok");
    let m = module(&dir);
    let m = m.to_str().unwrap();
    let out = dir.join("new/folder/f_{i:03}_of_{count}.txt");
    let o = run(
        &dir,
        &[
            m,
            "--range",
            "8..11",
            "--args",
            "x{i}",
            "-o",
            out.to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    for i in 8..11 {
        let file = dir.join(format!("new/folder/f_{i:03}_of_3.txt"));
        assert_eq!(std::fs::read_to_string(file).unwrap(), format!("x{i}"));
    }
    let joined = dir.join("all.txt");
    let o = run(
        &dir,
        &[
            m,
            "--range",
            "0..5",
            "--batch",
            "2",
            "--args",
            "{i},",
            "-o",
            joined.to_str().unwrap(),
            "--join",
            "concat",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(std::fs::read_to_string(&joined).unwrap(), "0,1,2,3,4,");
    // One run per file, the file on stdin, outputs named after it.
    let (a, b) = (dir.join("a.txt"), dir.join("b.dat"));
    std::fs::write(&a, "alpha").unwrap();
    std::fs::write(&b, "beta").unwrap();
    let out = dir.join("out/{stem}.echo");
    let o = run(
        &dir,
        &[
            m,
            a.to_str().unwrap(),
            b.to_str().unwrap(),
            "--args",
            "{name}:",
            "-o",
            out.to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        std::fs::read_to_string(dir.join("out/a.echo")).unwrap(),
        "a.txt:alpha"
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("out/b.echo")).unwrap(),
        "b.dat:beta"
    );
    // A second run of the same job compiles nothing: the module is in the cache.
    let cache: Vec<_> = std::fs::read_dir(dir.join("data/wasm-cache"))
        .unwrap()
        .collect();
    assert_eq!(cache.len(), 1);
}

#[test]
fn run_local_failures_name_the_input_and_leave_outputs_alone() {
    let dir = temp_dir("run-cli", "fail");
    let m = module(&dir);
    let m = m.to_str().unwrap();
    let (good, bad) = (dir.join("good.txt"), dir.join("bad.txt"));
    std::fs::write(&good, "fine").unwrap();
    std::fs::write(&bad, "whatever").unwrap();
    std::fs::create_dir_all(dir.join("out")).unwrap();
    std::fs::write(dir.join("out/good.txt"), "earlier").unwrap();
    let out = dir.join("out/{name}");
    // The argument "bad" makes the program exit 3; {stem} of bad.txt is "bad".
    let o = run(
        &dir,
        &[
            m,
            good.to_str().unwrap(),
            bad.to_str().unwrap(),
            "--args",
            "{stem}",
            "-o",
            out.to_str().unwrap(),
        ],
    );
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(
        err.contains(&format!("input {} failed", bad.display())),
        "{err}"
    );
    assert!(
        err.contains("exited with code 3") && err.contains("no good"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(
        std::fs::read_to_string(dir.join("out/good.txt")).unwrap(),
        "earlier"
    );
    let left: Vec<_> = std::fs::read_dir(dir.join("out")).unwrap().collect();
    assert_eq!(left.len(), 1, "no temporary left behind");

    // Not a module; a bad template; one output for many runs: each one clear error.
    let text = dir.join("notes.wasm");
    std::fs::write(&text, "hello").unwrap();
    let o = run(
        &dir,
        &[text.to_str().unwrap(), "--range", "0..2", "-o", "x{i}"],
    );
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("notes.wasm") && stderr(&o).contains("not WebAssembly"),
        "{}",
        stderr(&o)
    );
    let o = run(&dir, &[m, "--range", "0..2", "-o", "x{j}"]);
    assert!(stderr(&o).contains("unknown field {j}"), "{}", stderr(&o));
    let o = run(&dir, &[m, "--range", "0..2", "-o", "same.txt"]);
    assert!(stderr(&o).contains("more than one run"), "{}", stderr(&o));
}
