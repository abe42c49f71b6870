//! The `wasm` kernel: a user's own WebAssembly program (WASI preview 1) runs on the
//! grid, sandboxed and deterministic, and its outputs are verified like any kernel's.
//!
//! A chunk ([`params::WasmParams`]) names the module (input 0, a content-addressed
//! blob), the chunk's other inputs (each run's stdin), and one or more runs with their
//! arguments. A worker refuses a chunk made for another runtime ([`RUNTIME_ID`]), gets
//! the module compiled from its own cache or compiler ([`engine`]), and runs it once
//! per item in a fresh sandbox ([`instance`], with the host of [`wasi`]): stdin is the
//! item's input, stdout is its output, nothing else of the host is reachable. The
//! chunk's result is every run's output in order, each with its length ([`frame`],
//! [`unframe`]).
//!
//! The kernel's identity is (blake3 of the module, [`RUNTIME_ID`]): the module is an
//! input, so it is part of every chunk's id, and the runtime's version and settings are
//! in the params. Fuel and the memory cap are in the params too: they decide where a
//! program stops, the same on every peer. The wall-clock watchdog only stops a run
//! (never a result), so it is the running machine's own setting ([`set_watchdog`]),
//! not the chunk's.

pub mod engine;
pub mod instance;
pub mod nan;
pub mod params;
pub mod plan;
pub mod template;
pub mod wasi;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use idlegrid_protocol::TaskSpec;
use rayon::prelude::*;

use crate::{Cancel, KernelError, Spread};
pub use engine::{check_module, set_cache_dir};
pub use instance::RunError;
pub use params::{Item, WasmParams};

/// Kernel name in a [`TaskSpec`].
pub const NAME: &str = "wasm";
/// Kernel version: bump it when a chunk's params or result layout or the host's answers
/// change.
pub const VERSION: u32 = 2;

/// Default watchdog: ten minutes of wall-clock time per run.
pub const DEFAULT_WATCHDOG: Duration = Duration::from_secs(10 * 60);
/// Longest watchdog: a day.
pub const MAX_WATCHDOG: Duration = Duration::from_secs(24 * 3600);

/// The watchdog of every run on this machine, in milliseconds.
static WATCHDOG_MS: AtomicU64 = AtomicU64::new(DEFAULT_WATCHDOG.as_millis() as u64);

/// How long one run may take on this machine, wall clock, before it is stopped without
/// a result (the submitter gives the chunk to another peer): `idlegrid run --timeout`
/// on a submitter, `[kernels] wasm_timeout` on a volunteer. Clamped to 1 ms..=a day.
pub fn set_watchdog(timeout: Duration) {
    let ms = timeout
        .clamp(Duration::from_millis(1), MAX_WATCHDOG)
        .as_millis();
    WATCHDOG_MS.store(ms as u64, Ordering::Relaxed);
}

/// The watchdog [`set_watchdog`] set.
pub fn watchdog() -> Duration {
    Duration::from_millis(WATCHDOG_MS.load(Ordering::Relaxed))
}

/// The runtime and every setting that can change a module's output or where it stops:
/// wasmtime's exact version (pinned in Cargo.toml), Cranelift at speed, the rewrite
/// that canonicalises NaNs where their bits are seen ([`nan`]), no relaxed SIMD, no
/// threads, the wasm stack cap, fuel metering, and this host's WASI answers. A chunk
/// made for another id is refused.
pub const RUNTIME_ID: &str = "wasmtime-48.0.8/cranelift-speed/idlegrid-nan-seen-v1/\
                              no-relaxed-simd/no-threads/stack-1m/fuel/idlegrid-wasi-p1-v1";

/// Checks a chunk's params before anything is fetched.
pub fn validate(spec: &TaskSpec) -> Result<(), KernelError> {
    WasmParams::from_spec(spec).map(|_| ())
}

/// Exactly the declared size of each input.
pub fn input_limits(spec: &TaskSpec) -> Result<Vec<u64>, KernelError> {
    Ok(WasmParams::from_spec(spec)?.input_lens)
}

/// Each run's output cap plus its length prefix.
pub fn max_result_len(spec: &TaskSpec) -> Result<u64, KernelError> {
    Ok(WasmParams::from_spec(spec)?.max_result_len())
}

/// One framed output per run, each within the output cap.
pub fn check_result(spec: &TaskSpec, result: &[u8]) -> Result<(), String> {
    let params = WasmParams::from_spec(spec).map_err(|e| e.to_string())?;
    let outputs = unframe(result)?;
    if outputs.len() != params.items.len() {
        return Err(format!(
            "{} outputs, the chunk has {} runs",
            outputs.len(),
            params.items.len()
        ));
    }
    if let Some(out) = outputs.iter().find(|o| o.len() as u64 > params.max_output) {
        return Err(format!(
            "an output of {} bytes, over the cap of {}",
            out.len(),
            params.max_output
        ));
    }
    Ok(())
}

/// Runs every item of the chunk; the result is their outputs, framed. The runs of a
/// chunk that has the pool to itself spread over it (same bytes either way).
pub fn run(
    spec: &TaskSpec,
    inputs: &[&[u8]],
    spread: Spread,
    cancel: &Cancel,
) -> Result<Vec<u8>, KernelError> {
    let params = WasmParams::from_spec(spec)?;
    for (i, (input, &declared)) in inputs.iter().zip(&params.input_lens).enumerate() {
        if input.len() as u64 != declared {
            return Err(KernelError::InvalidInput(format!(
                "input {i} has {} bytes, the chunk declares {declared}",
                input.len()
            )));
        }
    }
    let module = inputs
        .first()
        .ok_or_else(|| KernelError::InvalidInput("no module".into()))?;
    let runtime = engine::runtime()?;
    let compiled = runtime.module(*blake3::hash(module).as_bytes(), module)?;
    let chunk_id = spec.id();
    let one = |(index, item): (usize, &Item)| -> Result<Vec<u8>, KernelError> {
        let mut args = Vec::with_capacity(item.args.len() + 1);
        args.push(params.program.clone());
        args.extend(item.args.iter().cloned());
        let stdin: &[u8] = match item.stdin {
            Some(i) => inputs.get(i as usize).copied().unwrap_or_default(),
            None => &[],
        };
        let mut seed = chunk_id.0.to_vec();
        seed.extend_from_slice(&(index as u64).to_le_bytes());
        let run = instance::RunSpec {
            args,
            env: &params.env,
            stdin,
            fuel: params.fuel,
            memory: params.memory,
            max_output: params.max_output,
            timeout: watchdog(),
            seed,
        };
        instance::run(&compiled, run, cancel).map_err(|e| match e {
            RunError::Cancelled => KernelError::Cancelled,
            RunError::TimedOut(after) => KernelError::TimedOut(format!(
                "the wasm watchdog stopped run {index} after {after:?}"
            )),
            RunError::Runtime(why) => KernelError::Failed(why),
            program @ RunError::Program { .. } => KernelError::Program(format!(
                "run {index} of the chunk (args {:?}) {program}",
                item.args
            )),
        })
    };
    let outputs: Vec<Vec<u8>> = if spread == Spread::Pool && params.items.len() > 1 {
        params
            .items
            .par_iter()
            .enumerate()
            .map(one)
            .collect::<Result<_, _>>()?
    } else {
        params
            .items
            .iter()
            .enumerate()
            .map(one)
            .collect::<Result<_, _>>()?
    };
    Ok(frame(&outputs))
}

/// A chunk's result: each output as its length (u64, little-endian) and its bytes.
pub fn frame<B: AsRef<[u8]>>(outputs: &[B]) -> Vec<u8> {
    let total: usize = outputs.iter().map(|o| o.as_ref().len() + 8).sum();
    let mut out = Vec::with_capacity(total);
    for o in outputs {
        out.extend_from_slice(&(o.as_ref().len() as u64).to_le_bytes());
        out.extend_from_slice(o.as_ref());
    }
    out
}

/// The outputs of a framed result, borrowed from it; an error says where the framing
/// breaks.
pub fn unframe(mut result: &[u8]) -> Result<Vec<&[u8]>, String> {
    let mut outputs = Vec::new();
    while !result.is_empty() {
        if result.len() < 8 {
            return Err(format!(
                "output {}: a length prefix cut short",
                outputs.len()
            ));
        }
        let mut len = [0u8; 8];
        len.copy_from_slice(&result[..8]);
        let len = u64::from_le_bytes(len);
        let rest = &result[8..];
        if len > rest.len() as u64 {
            return Err(format!(
                "output {} claims {len} bytes, {} are left",
                outputs.len(),
                rest.len()
            ));
        }
        let (out, tail) = rest.split_at(len as usize);
        outputs.push(out);
        result = tail;
    }
    Ok(outputs)
}
