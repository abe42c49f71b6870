//! The `wasm` kernel on small modules written in the WebAssembly text format: output
//! bytes are a function of the chunk (arguments, stdin, the chunk's random seed), NaNs
//! are canonical, fuel and memory caps stop a program where the params say, the
//! sandbox gives nothing of the host, bad modules are refused before compiling, and a
//! failing program's error names its arguments, exit code or trap and stderr.

use idlegrid_kernels::wasm::{self, params::WasmParams, plan::PlannedRun, RUNTIME_ID};
use idlegrid_kernels::{Cancel, KernelError, Spread};
use idlegrid_protocol::{Cid, TaskSpec};

/// `$out(ptr, len)` writes memory to stdout; `$err` to stderr.
const PRELUDE: &str = r#"
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func $write (param $fd i32) (param $p i32) (param $l i32)
    (i32.store (i32.const 0) (local.get $p))
    (i32.store (i32.const 4) (local.get $l))
    (drop (call $fd_write (local.get $fd) (i32.const 0) (i32.const 1) (i32.const 8))))
  (func $out (param $p i32) (param $l i32) (call $write (i32.const 1) (local.get $p) (local.get $l)))
  (func $err (param $p i32) (param $l i32) (call $write (i32.const 2) (local.get $p) (local.get $l)))
"#;

fn module(imports: &str, body: &str) -> Vec<u8> {
    let text = format!("(module {imports} {PRELUDE} {body})");
    wat::parse_str(&text).unwrap_or_else(|e| panic!("bad test module: {e}\n{text}"))
}

/// Writes its arguments (NUL-terminated, as args_get lays them out) and then its stdin.
fn echo() -> Vec<u8> {
    module(
        r#"
  (import "wasi_snapshot_preview1" "args_sizes_get" (func $sizes (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "args_get" (func $args (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_read" (func $fd_read (param i32 i32 i32 i32) (result i32)))"#,
        r#"
  (func (export "_start") (local $n i32)
    (drop (call $sizes (i32.const 100) (i32.const 104)))
    (drop (call $args (i32.const 200) (i32.const 1024)))
    (call $out (i32.const 1024) (i32.load (i32.const 104)))
    (block $done (loop $more
      (i32.store (i32.const 16) (i32.const 8192))
      (i32.store (i32.const 20) (i32.const 4096))
      (drop (call $fd_read (i32.const 0) (i32.const 16) (i32.const 1) (i32.const 24)))
      (local.set $n (i32.load (i32.const 24)))
      (br_if $done (i32.eqz (local.get $n)))
      (call $out (i32.const 8192) (local.get $n))
      (br $more))))"#,
    )
}

fn budgets() -> WasmParams {
    WasmParams {
        program: "test.wasm".into(),
        fuel: 10_000_000,
        memory: 4 * 1024 * 1024,
        ..WasmParams::default()
    }
}

fn runs(args: &[&[&str]]) -> Vec<PlannedRun> {
    args.iter()
        .map(|a| PlannedRun {
            args: a.iter().map(|s| s.to_string()).collect(),
            stdin: None,
        })
        .collect()
}

fn one_chunk(module: &[u8], budgets: &WasmParams, runs: &[PlannedRun]) -> TaskSpec {
    let plan = wasm::plan::plan(module, budgets, runs, runs.len()).expect("plan");
    assert_eq!(plan.chunks.len(), 1);
    plan.chunks[0].clone()
}

fn run(spec: &TaskSpec, inputs: &[&[u8]]) -> Result<Vec<u8>, KernelError> {
    idlegrid_kernels::run(spec, inputs)
}

fn run_one(module: &[u8], budgets: &WasmParams, args: &[&str]) -> Result<Vec<u8>, KernelError> {
    let spec = one_chunk(module, budgets, &runs(&[args]));
    let out = run(&spec, &[module])?;
    idlegrid_kernels::check_result(&spec, &out).expect("well-formed result");
    Ok(wasm::unframe(&out).expect("framed")[0].to_vec())
}

#[test]
fn wasm_args_and_stdin_in_batch_and_same_bytes_every_time() {
    let m = echo();
    let (a, b) = (b"first input".to_vec(), vec![7u8; 10_000]);
    let runs = vec![
        PlannedRun {
            args: vec!["0".into(), "x y".into()],
            stdin: Some((Cid::of(&a), a.len() as u64)),
        },
        PlannedRun {
            args: vec!["1".into()],
            stdin: Some((Cid::of(&b), b.len() as u64)),
        },
        PlannedRun {
            args: vec!["2".into()],
            stdin: Some((Cid::of(&a), a.len() as u64)),
        },
    ];
    let spec = one_chunk(&m, &budgets(), &runs);
    assert_eq!(spec.inputs.len(), 3, "the module and two distinct stdins");
    let inputs: [&[u8]; 3] = [&m, &a, &b];
    let out = run(&spec, &inputs).unwrap();
    let outputs = wasm::unframe(&out).unwrap();
    assert_eq!(
        outputs[0],
        [b"test.wasm\0" as &[u8], b"0\0x y\0", &a].concat()
    );
    assert_eq!(outputs[1], [b"test.wasm\0" as &[u8], b"1\0", &b].concat());
    assert_eq!(outputs[2], [b"test.wasm\0" as &[u8], b"2\0", &a].concat());
    // On one thread or spread over the pool, again and again: the same bytes.
    for spread in [Spread::OneThread, Spread::Pool, Spread::OneThread] {
        let again =
            idlegrid_kernels::run_cancellable(&spec, &inputs, spread, &Cancel::new()).unwrap();
        assert_eq!(again, out);
    }
    idlegrid_kernels::check_result(&spec, &out).unwrap();
    assert!(idlegrid_kernels::check_result(&spec, &out[..out.len() - 1]).is_err());
    // A chunk of another runtime is refused before anything runs.
    let mut params = WasmParams::from_spec(&spec).unwrap();
    params.runtime = "wasmtime-1.0/other".into();
    let other = TaskSpec {
        params: params.to_bytes().unwrap(),
        ..spec.clone()
    };
    let err = idlegrid_kernels::validate(&other).unwrap_err().to_string();
    assert!(err.contains(RUNTIME_ID) && err.contains("other"), "{err}");
}

#[test]
fn wasm_floats_are_canonical_nans_and_exact_bits() {
    // NaNs made by arithmetic, seen through a store, a reinterpret, a copysign and a
    // vector: all canonical (on x86 unrewritten, 0/0 is a negative NaN and a payload
    // propagates). A NaN loaded and stored, or stored as a constant, keeps its bits.
    // Exact arithmetic is untouched.
    let m = module(
        "",
        r#"
  (func (export "_start") (local $z f64) (local $zf f32)
    (local.set $z (f64.const 0))
    (local.set $zf (f32.const 0))
    (f64.store (i32.const 1000) (f64.div (local.get $z) (local.get $z)))
    (f64.store (i32.const 1008) (f64.sqrt (f64.const -1)))
    (f64.store (i32.const 1016) (f64.mul (f64.const inf) (local.get $z)))
    (f64.store (i32.const 1024) (f64.add (f64.const -nan:0x1234) (f64.const 1)))
    (f64.store (i32.const 1032) (f64.min (f64.const nan:0x4) (f64.const 1)))
    (f32.store (i32.const 1040) (f32.div (local.get $zf) (local.get $zf)))
    (f32.store (i32.const 1044) (f32.neg (f32.sqrt (f32.const -2))))
    (f64.store (i32.const 1048)
      (f64.add (f64.mul (f64.const 0.1) (f64.const 3.3)) (f64.const 1e-17)))
    (f64.store (i32.const 1056) (f64.sqrt (f64.const 2)))
    (f32.store (i32.const 1064) (f32.demote_f64 (f64.const 0.1)))
    (i32.store (i32.const 1068) (i32.reinterpret_f32 (f32.div (local.get $zf) (local.get $zf))))
    (f64.store (i32.const 1072) (f64.copysign (f64.const 1) (f64.div (local.get $z) (local.get $z))))
    (i64.store (i32.const 2000) (i64.const 0xfff0000000001234))
    (f64.store (i32.const 1080) (f64.load (i32.const 2000)))
    (f32.store (i32.const 1088) (f32.const -nan:0x1))
    (f32.store (i32.const 1092) (f32.add (f32.const nan:0x1) (local.get $zf)))
    (v128.store (i32.const 1096) (f32x4.div (v128.const i64x2 0 0) (v128.const i64x2 0 0)))
    (v128.store (i32.const 1112) (f64x2.splat (f64.div (local.get $z) (local.get $z))))
    (call $out (i32.const 1000) (i32.const 128)))"#,
    );
    let out = run_one(&m, &budgets(), &[]).unwrap();
    let f64_at = |at: usize| u64::from_le_bytes(out[at..at + 8].try_into().unwrap());
    let f32_at = |at: usize| u32::from_le_bytes(out[at..at + 4].try_into().unwrap());
    const NAN64: u64 = 0x7ff8_0000_0000_0000;
    const NAN32: u32 = 0x7fc0_0000;
    for at in [0, 8, 16, 24, 32] {
        assert_eq!(f64_at(at), NAN64, "f64 NaN at {at} not canonical");
    }
    assert_eq!(f32_at(40), NAN32);
    // The sign of a NaN is canonical too where it is seen.
    assert_eq!(f32_at(44), NAN32);
    assert_eq!(f64_at(48), (0.1f64 * 3.3 + 1e-17).to_bits());
    assert_eq!(f64_at(56), 2f64.sqrt().to_bits());
    assert_eq!(f32_at(64), (0.1f64 as f32).to_bits());
    assert_eq!(f32_at(68), NAN32, "reinterpret sees a canonical NaN");
    assert_eq!(
        f64_at(72),
        1f64.to_bits(),
        "copysign takes a canonical NaN's sign"
    );
    assert_eq!(
        f64_at(80),
        0xfff0_0000_0000_1234,
        "a loaded NaN is stored as it was"
    );
    assert_eq!(f32_at(88), 0xff80_0001, "a constant NaN is stored as it is");
    assert_eq!(
        f32_at(92),
        NAN32,
        "a signalling NaN's payload does not propagate"
    );
    for at in [96, 100, 104, 108] {
        assert_eq!(f32_at(at), NAN32, "f32x4 lane at {at} not canonical");
    }
    assert_eq!(
        (f64_at(112), f64_at(120)),
        (NAN64, NAN64),
        "f64x2.splat of a NaN"
    );
}

#[test]
fn wasm_infinite_loop_stops_at_its_fuel() {
    let m = module("", r#"(func (export "_start") (loop $l (br $l)))"#);
    let err = run_one(&m, &budgets(), &["7"]).unwrap_err();
    assert!(matches!(err, KernelError::Program(_)), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("ran out of fuel (--fuel 10000000)"), "{msg}");
    assert!(msg.contains("[\"7\"]"), "the arguments are named: {msg}");
}

#[test]
fn wasm_memory_hog_stops_at_its_cap() {
    // Grows one page at a time until refused, then writes the pages it ended with.
    let m = module(
        "",
        r#"
  (func (export "_start")
    (block $full (loop $grow
      (br_if $full (i32.eq (memory.grow (i32.const 1)) (i32.const -1)))
      (br $grow)))
    (i32.store (i32.const 100) (memory.size))
    (call $out (i32.const 100) (i32.const 4)))"#,
    );
    let mut b = budgets();
    b.memory = 1024 * 1024;
    let out = run_one(&m, &b, &[]).unwrap();
    assert_eq!(
        u32::from_le_bytes(out[..4].try_into().unwrap()),
        16,
        "1 MiB = 16 pages"
    );
    // A module that declares more memory than the cap cannot start at all.
    let big = wat::parse_str(r#"(module (memory (export "memory") 100) (func (export "_start")))"#)
        .unwrap();
    let err = run_one(&big, &b, &[]).unwrap_err().to_string();
    assert!(err.contains("cannot start"), "{err}");
}

#[test]
fn wasm_sandbox_gives_nothing_of_the_host() {
    // Tries to open a file (through fd 3, the first preopen a libc would look for),
    // lists preopens, reads the clock, counts the environment, draws random bytes,
    // writes to fd 5: every answer goes to stdout.
    let m = module(
        r#"
  (import "wasi_snapshot_preview1" "path_open" (func $open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_prestat_get" (func $prestat (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "clock_time_get" (func $clock (param i32 i64 i32) (result i32)))
  (import "wasi_snapshot_preview1" "environ_sizes_get" (func $env (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "random_get" (func $random (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "poll_oneoff" (func $poll (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "sock_accept" (func $accept (param i32 i32 i32) (result i32)))"#,
        r#"
  (data (i32.const 500) "/etc/passwd")
  (func (export "_start")
    (i32.store (i32.const 1000) (call $open (i32.const 3) (i32.const 0) (i32.const 500) (i32.const 11)
      (i32.const 0) (i64.const -1) (i64.const -1) (i32.const 0) (i32.const 600)))
    (i32.store (i32.const 1004) (call $prestat (i32.const 3) (i32.const 600)))
    (i32.store (i32.const 1008) (call $clock (i32.const 0) (i64.const 1) (i32.const 1040)))
    (i32.store (i32.const 1012) (call $env (i32.const 1048) (i32.const 1052)))
    (i32.store (i32.const 1016) (call $random (i32.const 1056) (i32.const 16)))
    (i32.store (i32.const 1020) (call $poll (i32.const 0) (i32.const 0) (i32.const 1) (i32.const 600)))
    (i32.store (i32.const 1024) (call $accept (i32.const 3) (i32.const 0) (i32.const 600)))
    (i32.store (i32.const 1028) (call $fd_write (i32.const 5) (i32.const 0) (i32.const 0) (i32.const 600)))
    (i32.store (i32.const 1032) (call $fd_write (i32.const 2) (i32.const 0) (i32.const 5000) (i32.const 600)))
    (call $out (i32.const 1000) (i32.const 72)))"#,
    );
    let out = run_one(&m, &budgets(), &[]).unwrap();
    let u32_at = |at: usize| u32::from_le_bytes(out[at..at + 4].try_into().unwrap());
    const EBADF: u32 = 8;
    assert_eq!(u32_at(0), EBADF, "path_open");
    assert_eq!(u32_at(4), EBADF, "no preopened directory");
    assert_eq!(u32_at(8), 0, "clock_time_get answers");
    assert_eq!(
        u64::from_le_bytes(out[40..48].try_into().unwrap()),
        wasm::wasi::FIXED_TIME_NS,
        "with the fixed time"
    );
    assert_eq!(u32_at(12), 0);
    assert_eq!((u32_at(48), u32_at(52)), (0, 0), "an empty environment");
    assert_eq!(u32_at(16), 0, "random_get answers");
    assert_ne!(&out[56..72], &[0u8; 16], "with bytes");
    assert_eq!(u32_at(20), 58, "poll_oneoff (sleeping) is not supported");
    assert_eq!(u32_at(24), EBADF, "no sockets");
    assert_eq!(u32_at(28), EBADF, "no other descriptors");
    assert_eq!(
        u32_at(32),
        28,
        "more iovecs than IOV_MAX: EINVAL, nothing allocated"
    );
    // The random bytes come from the chunk: the same chunk draws the same bytes, a
    // chunk with other arguments other bytes.
    assert_eq!(run_one(&m, &budgets(), &[]).unwrap(), out);
    let other = run_one(&m, &budgets(), &["x"]).unwrap();
    assert_ne!(&other[56..72], &out[56..72]);
}

#[test]
fn wasm_failing_program_is_named_with_exit_code_and_stderr() {
    let m = module(
        r#"(import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))"#,
        r#"
  (data (i32.const 500) "cannot parse frame 12\n")
  (func (export "_start")
    (call $err (i32.const 500) (i32.const 22))
    (call $exit (i32.const 3)))"#,
    );
    let err = run_one(&m, &budgets(), &["12", "240"]).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, KernelError::Program(_)), "{err:?}");
    assert!(msg.contains("exited with code 3"), "{msg}");
    assert!(msg.contains("cannot parse frame 12"), "{msg}");
    assert!(msg.contains("[\"12\", \"240\"]"), "{msg}");
    // exit(0) is a success with what was written.
    let ok = module(
        r#"(import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))"#,
        r#"(data (i32.const 500) "ok")
  (func (export "_start") (call $out (i32.const 500) (i32.const 2)) (call $exit (i32.const 0)))"#,
    );
    assert_eq!(run_one(&ok, &budgets(), &[]).unwrap(), b"ok");
    // A trap names itself.
    let trap = module("", r#"(func (export "_start") unreachable)"#);
    let msg = run_one(&trap, &budgets(), &[]).unwrap_err().to_string();
    assert!(
        msg.contains("trapped") && msg.contains("unreachable"),
        "{msg}"
    );
    // Stdout past the cap is the program's failure too.
    let loud = module(
        "",
        r#"(func (export "_start") (loop $l (call $out (i32.const 0) (i32.const 1000)) (br $l)))"#,
    );
    let mut b = budgets();
    b.max_output = 10_000;
    let msg = run_one(&loud, &b, &[]).unwrap_err().to_string();
    assert!(msg.contains("more than 10000 bytes to stdout"), "{msg}");
}

#[test]
fn wasm_bad_modules_are_refused_before_compiling() {
    let b = budgets();
    // Declared over the size cap: refused from the params alone, before a fetch.
    let small = echo();
    let spec = one_chunk(&small, &b, &runs(&[&[]]));
    let mut params = WasmParams::from_spec(&spec).unwrap();
    params.input_lens[0] = wasm::params::MAX_MODULE + 1;
    let huge = TaskSpec {
        params: params.to_bytes().unwrap(),
        ..spec.clone()
    };
    let err = idlegrid_kernels::input_limits(&huge)
        .unwrap_err()
        .to_string();
    assert!(err.contains("over the"), "{err}");
    // Not wasm, a component, and an invalid body: each said plainly.
    for (bytes, want) in [
        (b"#!/bin/sh\necho hi\n".to_vec(), "not WebAssembly"),
        (
            b"\0asm\x0d\0\x01\0".to_vec(),
            "not a core WebAssembly module",
        ),
        (
            [b"\0asm\x01\0\0\0" as &[u8], &[1, 5, 1, 0x60, 0, 0, 0xff]].concat(),
            "not valid",
        ),
    ] {
        let spec = one_chunk(&bytes, &b, &runs(&[&[]]));
        let err = run(&spec, &[&bytes]).unwrap_err();
        assert!(matches!(err, KernelError::InvalidInput(_)), "{err:?}");
        assert!(err.to_string().contains(want), "{err} (wanted {want:?})");
    }
    // Bytes that are not the declared size are refused too.
    let err = run(&spec, &[&small[..small.len() - 1]])
        .unwrap_err()
        .to_string();
    assert!(err.contains("declares"), "{err}");
    // Imports from outside WASI preview 1 cannot be satisfied.
    let env = wat::parse_str(
        r#"(module (import "env" "system" (func (param i32))) (func (export "_start")))"#,
    )
    .unwrap();
    let err = run_one(&env, &b, &[]).unwrap_err().to_string();
    assert!(err.contains("system"), "{err}");
}

#[test]
fn wasm_watchdog_and_cancel_stop_a_run_without_a_verdict() {
    let m = module("", r#"(func (export "_start") (loop $l (br $l)))"#);
    let mut b = budgets();
    b.fuel = wasm::params::MAX_FUEL;
    // The watchdog is this machine's (the other tests' runs take milliseconds, well
    // inside 200 ms).
    wasm::set_watchdog(std::time::Duration::from_millis(200));
    let err = run_one(&m, &b, &[]).unwrap_err();
    wasm::set_watchdog(wasm::DEFAULT_WATCHDOG);
    assert!(matches!(err, KernelError::TimedOut(_)), "{err:?}");
    assert!(err.to_string().starts_with(idlegrid_kernels::TIMED_OUT));
    let spec = one_chunk(&m, &b, &runs(&[&[]]));
    let cancel = Cancel::new();
    let stopper = cancel.clone();
    std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(100));
        stopper.cancel();
    });
    let err =
        idlegrid_kernels::run_cancellable(&spec, &[&m], Spread::OneThread, &cancel).unwrap_err();
    assert!(matches!(err, KernelError::Cancelled), "{err:?}");
}
