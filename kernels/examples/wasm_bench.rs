//! Times the `wasm` kernel: per-chunk overhead with a compiled (cached) module, the
//! example renderer in wasm against the same C built natively, fuel metering's cost,
//! and compile time cold against loading from the cache.
//!
//! `cargo run --release -p idlegrid-kernels --example wasm_bench -- RENDER.wasm
//! RENDER_NATIVE [EMPTY_C.wasm] [--frames N] [--size WxH] [--chunks N]`
//!
//! RENDER.wasm and RENDER_NATIVE are examples/wasm/render/render.c built with
//! `clang --target=wasm32-wasi -O2 -ffp-contract=off` and `clang -O2 -ffp-contract=off
//! -lm`; EMPTY_C.wasm is any C program whose main returns at once (wasi-libc's start-up
//! included). `scripts/bench-wasm.sh` builds them and runs this.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use idlegrid_kernels::wasm::{self, engine, plan::PlannedRun, wasi::Host, WasmParams};
use wasmtime::{Engine, Linker, Module, Store, StoreLimitsBuilder};

struct Args {
    render: PathBuf,
    native: PathBuf,
    empty_c: Option<PathBuf>,
    frames: u64,
    size: (u32, u32),
    chunks: usize,
}

fn args() -> Args {
    let mut positional = Vec::new();
    let mut out = Args {
        render: PathBuf::new(),
        native: PathBuf::new(),
        empty_c: None,
        frames: 8,
        size: (640, 480),
        chunks: 2000,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--frames" => out.frames = it.next().and_then(|v| v.parse().ok()).unwrap_or(8),
            "--chunks" => out.chunks = it.next().and_then(|v| v.parse().ok()).unwrap_or(2000),
            "--size" => {
                let v = it.next().unwrap_or_default();
                let (w, h) = v.split_once('x').expect("--size WxH");
                out.size = (w.parse().unwrap(), h.parse().unwrap());
            }
            _ => positional.push(PathBuf::from(a)),
        }
    }
    assert!(
        positional.len() >= 2,
        "usage: wasm_bench RENDER.wasm RENDER_NATIVE [EMPTY_C.wasm]"
    );
    out.render = positional[0].clone();
    out.native = positional[1].clone();
    out.empty_c = positional.get(2).cloned();
    out
}

/// One chunk of one run of `module` with `args`, as a planner makes it.
fn chunk(module: &[u8], args: Vec<String>) -> idlegrid_protocol::TaskSpec {
    let runs = [PlannedRun { args, stdin: None }];
    wasm::plan::plan(module, &WasmParams::default(), &runs, 1)
        .unwrap()
        .chunks[0]
        .clone()
}

/// Per-chunk time of `n` distinct chunks (different arguments) of `module`, through the
/// kernel's entry point, once the module is compiled: median and mean in µs.
fn overhead(name: &str, module: &[u8], n: usize) {
    let specs: Vec<_> = (0..n).map(|i| chunk(module, vec![i.to_string()])).collect();
    idlegrid_kernels::run(&specs[0], &[module]).unwrap();
    let mut times: Vec<Duration> = specs
        .iter()
        .map(|spec| {
            let t = Instant::now();
            idlegrid_kernels::run(spec, &[module]).unwrap();
            t.elapsed()
        })
        .collect();
    times.sort();
    let mean = times.iter().sum::<Duration>() / n as u32;
    println!(
        "overhead {name}: {n} chunks, median {:.0} µs, mean {:.0} µs, p99 {:.0} µs per chunk",
        times[n / 2].as_secs_f64() * 1e6,
        mean.as_secs_f64() * 1e6,
        times[n * 99 / 100].as_secs_f64() * 1e6
    );
}

/// Runs `module` once with `args` on an engine of `fuel` on or off (otherwise the
/// kernel's settings); returns stdout and the time of the call alone.
fn run_direct(
    engine: &Engine,
    module: &Module,
    args: &[String],
    fuel: bool,
) -> (Vec<u8>, Duration) {
    let mut linker = Linker::new(engine);
    wasm::wasi::define(&mut linker).unwrap();
    let limits = StoreLimitsBuilder::new().memory_size(512 << 20).build();
    let host = Host::new(args.to_vec(), &[], Vec::new(), 1 << 30, b"bench", limits);
    let mut store = Store::new(engine, host);
    store.limiter(|h| &mut h.limits);
    if fuel {
        store.set_fuel(u64::MAX / 2).unwrap();
    }
    store.set_epoch_deadline(u64::MAX / 2);
    let instance = linker.instantiate(&mut store, module).unwrap();
    let start = instance
        .get_typed_func::<(), ()>(&mut store, "_start")
        .unwrap();
    let t = Instant::now();
    match start.call(&mut store, ()) {
        Ok(()) => {}
        Err(e) => assert!(
            matches!(
                e.downcast_ref::<wasm::wasi::HostExit>(),
                Some(wasm::wasi::HostExit::Exit(0))
            ),
            "{e:?}"
        ),
    }
    let elapsed = t.elapsed();
    (store.data_mut().take_stdout(), elapsed)
}

fn main() {
    let a = args();
    let render = std::fs::read(&a.render).unwrap();
    let runtime = engine::runtime().unwrap();

    // Compile time: cold, then from a serialized artifact (what the cache holds).
    for (name, bytes) in [
        ("render", Some(render.clone())),
        (
            "empty C",
            a.empty_c.as_ref().map(|p| std::fs::read(p).unwrap()),
        ),
    ] {
        let Some(bytes) = bytes else { continue };
        let t = Instant::now();
        let module = Module::from_binary(&runtime.engine, &bytes).unwrap();
        let cold = t.elapsed();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.cwasm");
        std::fs::write(&path, module.serialize().unwrap()).unwrap();
        let t = Instant::now();
        // SAFETY: written just above by this engine.
        let _cached = unsafe { Module::deserialize_file(&runtime.engine, &path) }.unwrap();
        let warm = t.elapsed();
        println!(
            "compile {name} ({} KiB): cold {:.1} ms, from the cache {:.2} ms",
            bytes.len() / 1024,
            cold.as_secs_f64() * 1e3,
            warm.as_secs_f64() * 1e3
        );
    }

    // Per-chunk overhead of a compiled module: an empty _start, and C's empty main.
    let empty = wat::parse_str(r#"(module (memory (export "memory") 1) (func (export "_start")))"#)
        .unwrap();
    overhead("empty _start (wat)", &empty, a.chunks);
    if let Some(path) = &a.empty_c {
        overhead(
            "empty main (C, wasi-libc)",
            &std::fs::read(path).unwrap(),
            a.chunks,
        );
    }

    // The renderer: frames 0..N at WxH. The module as the kernel rewrites it (NaNs
    // canonical where seen) with the kernel's settings (fuel on), the same without
    // fuel, Cranelift's canonicalisation after every float operation instead of the
    // rewrite (for comparison), and neither (not deterministic); and the native build.
    let (w, h) = a.size;
    let t = Instant::now();
    let rewritten = wasm::nan::canonicalise(&render).unwrap();
    println!(
        "NaN rewrite of the renderer: {:.1} ms, {} to {} bytes",
        t.elapsed().as_secs_f64() * 1e3,
        render.len(),
        rewritten.len()
    );
    let mut nofuel_config = engine::config();
    nofuel_config.consume_fuel(false);
    let nofuel = Engine::new(&nofuel_config).unwrap();
    let nofuel_module = Module::from_binary(&nofuel, &rewritten).unwrap();
    let fuel_module = Module::from_binary(&runtime.engine, &rewritten).unwrap();
    let mut every_op_config = engine::config();
    every_op_config.cranelift_nan_canonicalization(true);
    let every_op = Engine::new(&every_op_config).unwrap();
    let every_op_module = Module::from_binary(&every_op, &render).unwrap();
    let mut bare_config = engine::config();
    bare_config.consume_fuel(false);
    let bare = Engine::new(&bare_config).unwrap();
    let bare_module = Module::from_binary(&bare, &render).unwrap();
    let mut t_every_op = Duration::ZERO;
    let mut t_bare = Duration::ZERO;
    let (mut t_kernel, mut t_fuel, mut t_nofuel, mut t_native) = (
        Duration::ZERO,
        Duration::ZERO,
        Duration::ZERO,
        Duration::ZERO,
    );
    for frame in 0..a.frames {
        let args: Vec<String> = [
            "render".to_string(),
            frame.to_string(),
            a.frames.to_string(),
            w.to_string(),
            h.to_string(),
        ]
        .to_vec();
        let spec = chunk(&render, args[1..].to_vec());
        let t = Instant::now();
        let framed = idlegrid_kernels::run(&spec, &[&render]).unwrap();
        t_kernel += t.elapsed();
        let kernel_png = wasm::unframe(&framed).unwrap()[0].to_vec();
        let (png_fuel, d) = run_direct(&runtime.engine, &fuel_module, &args, true);
        t_fuel += d;
        let (png_nofuel, d) = run_direct(&nofuel, &nofuel_module, &args, false);
        t_nofuel += d;
        let (png_every_op, d) = run_direct(&every_op, &every_op_module, &args, true);
        t_every_op += d;
        let (_, d) = run_direct(&bare, &bare_module, &args, false);
        t_bare += d;
        let t = Instant::now();
        let native = Command::new(&a.native).args(&args[1..]).output().unwrap();
        t_native += t.elapsed();
        assert!(native.status.success());
        assert_eq!(
            kernel_png, native.stdout,
            "frame {frame}: wasm and native differ"
        );
        assert_eq!(png_fuel, native.stdout);
        assert_eq!(png_nofuel, native.stdout);
        assert_eq!(png_every_op, native.stdout);
    }
    let per = |d: Duration| d.as_secs_f64() * 1e3 / a.frames as f64;
    println!(
        "render {} frames of {w}x{h}, ms per frame: native {:.1}; wasm with fuel {:.1} ({:.2}x native); \
         wasm without fuel {:.1} ({:.2}x native; fuel costs {:.1}%); through the kernel's entry point {:.1} (same bytes as native); \
         for comparison, Cranelift's canonicalisation after every float operation instead of the rewrite, fuel on {:.1} ({:.2}x native); \
         for information, the module unrewritten without fuel {:.1} ({:.2}x native)",
        a.frames,
        per(t_native),
        per(t_fuel),
        per(t_fuel) / per(t_native),
        per(t_nofuel),
        per(t_nofuel) / per(t_native),
        (per(t_fuel) / per(t_nofuel) - 1.0) * 100.0,
        per(t_kernel),
        per(t_every_op),
        per(t_every_op) / per(t_native),
        per(t_bare),
        per(t_bare) / per(t_native),
    );
}
