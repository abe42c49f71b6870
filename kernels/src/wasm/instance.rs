//! One run of a module: a fresh store with the run's fuel, memory cap and WASI host,
//! its `_start` called, and how it ended turned into output bytes or an error.
//!
//! How a run can end, and what each means to the grid:
//! - `_start` returns or the module calls `proc_exit(0)`: its stdout is the output;
//! - a trap (out of fuel, out of bounds, unreachable, stack overflow...), a non-zero
//!   exit, stdout past its cap, memory refused at instantiation: a deterministic
//!   failure of the program ([`RunError::Program`]), the same on every honest peer;
//! - the cancel flag or the watchdog's timeout, seen at an epoch tick: no output, and
//!   no verdict on the program ([`RunError::Cancelled`], [`RunError::TimedOut`]).

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::{Store, StoreLimitsBuilder, Trap, UpdateDeadline};

use super::engine::{runtime, Compiled};
use super::wasi::{Host, HostExit};
use crate::Cancel;

/// What one run is given.
pub struct RunSpec<'a> {
    /// argv, argv[0] first.
    pub args: Vec<String>,
    pub env: &'a [(String, String)],
    pub stdin: &'a [u8],
    pub fuel: u64,
    pub memory: u64,
    pub max_output: u64,
    pub timeout: Duration,
    /// Keys the run's random numbers (the chunk's id and the run's index).
    pub seed: Vec<u8>,
}

/// Why a run gave no output.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The program failed, the same way on any peer: exit code or trap, and the end of
    /// what it wrote to stderr.
    #[error("{what}{}", stderr_note(.stderr))]
    Program { what: String, stderr: String },
    #[error("stopped: the chunk was cancelled while it ran")]
    Cancelled,
    #[error("stopped by the watchdog after {0:?} (not a result: the chunk is retried)")]
    TimedOut(Duration),
    /// The runtime itself failed (not the program's doing).
    #[error("wasm runtime: {0}")]
    Runtime(String),
}

fn stderr_note(stderr: &str) -> String {
    let tail = stderr.trim_end();
    if tail.is_empty() {
        String::new()
    } else {
        format!("; its stderr ends with:\n{tail}")
    }
}

const RUNNING: u8 = 0;
const CANCELLED: u8 = 1;
const TIMED_OUT: u8 = 2;

/// Runs `compiled` once as `spec` says.
pub fn run(compiled: &Compiled, spec: RunSpec<'_>, cancel: &Cancel) -> Result<Vec<u8>, RunError> {
    let runtime = runtime().map_err(|e| RunError::Runtime(e.to_string()))?;
    let limits = StoreLimitsBuilder::new()
        .memory_size(usize::try_from(spec.memory).unwrap_or(usize::MAX))
        .instances(1)
        .memories(1)
        .tables(4)
        .table_elements(1 << 20)
        .build();
    let host = Host::new(
        spec.args,
        spec.env,
        spec.stdin.to_vec(),
        spec.max_output,
        &spec.seed,
        limits,
    );
    let mut store = Store::new(&runtime.engine, host);
    store.limiter(|host| &mut host.limits);
    store
        .set_fuel(spec.fuel)
        .map_err(|e| RunError::Runtime(e.to_string()))?;
    // The epoch only stops a run (cancel, watchdog); a run that goes on is unchanged.
    let stop = Arc::new(AtomicU8::new(RUNNING));
    let started = Instant::now();
    let (cancel_flag, timeout, seen) = (cancel.clone(), spec.timeout, stop.clone());
    store.set_epoch_deadline(1);
    store.epoch_deadline_callback(move |_| {
        if cancel_flag.is_cancelled() {
            seen.store(CANCELLED, Ordering::Relaxed);
            return Ok(UpdateDeadline::Interrupt);
        }
        if started.elapsed() > timeout {
            seen.store(TIMED_OUT, Ordering::Relaxed);
            return Ok(UpdateDeadline::Interrupt);
        }
        Ok(UpdateDeadline::Continue(1))
    });
    let program = |what: String, store: &Store<Host>| RunError::Program {
        what,
        stderr: store.data().stderr_tail(),
    };
    let instance = match compiled.instantiate(&mut store) {
        Ok(instance) => instance,
        Err(e) => return Err(program(format!("cannot start: {e:#}"), &store)),
    };
    let start = match instance.get_typed_func::<(), ()>(&mut store, "_start") {
        Ok(start) => start,
        Err(_) => {
            return Err(program(
                "the module exports no `_start() -> ()`: build it as a WASI command \
                 (a program with main)"
                    .into(),
                &store,
            ))
        }
    };
    let outcome = start.call(&mut store, ());
    match stop.load(Ordering::Relaxed) {
        CANCELLED => return Err(RunError::Cancelled),
        TIMED_OUT => return Err(RunError::TimedOut(timeout)),
        _ => {}
    }
    match outcome {
        Ok(()) => Ok(store.data_mut().take_stdout()),
        Err(e) => match e.downcast_ref::<HostExit>() {
            Some(HostExit::Exit(0)) => Ok(store.data_mut().take_stdout()),
            Some(exit) => Err(program(exit.to_string(), &store)),
            None => match e.downcast_ref::<Trap>() {
                Some(Trap::OutOfFuel) => Err(program(
                    format!("ran out of fuel (--fuel {})", spec.fuel),
                    &store,
                )),
                Some(trap) => Err(program(format!("trapped: {trap}"), &store)),
                None => Err(program(format!("failed: {e:#}"), &store)),
            },
        },
    }
}
