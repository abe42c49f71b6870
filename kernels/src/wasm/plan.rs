//! Submitter side: a module and a list of runs become `wasm` chunks.
//!
//! Each run ([`PlannedRun`]) has its arguments and maybe a stdin blob (an input file,
//! by [`Cid`]). Runs are cut into chunks of `batch` consecutive runs; a chunk's inputs
//! are the module, then each distinct stdin blob of its runs. [`chunk`] makes one
//! chunk's spec from its runs alone, so a job of a million runs can make each chunk
//! when it is needed; [`plan`] makes them all. A chunk depends only on the module, its
//! runs and the budgets, so a rerun makes the same chunk ids and reuses every verified
//! result.

use std::ops::Range;

use idlegrid_protocol::{Cid, TaskSpec};

use super::params::{Item, WasmParams, MAX_ITEMS};
use super::{NAME, VERSION};
use crate::KernelError;

/// One run of the module, as the user's job describes it.
#[derive(Clone, Debug)]
pub struct PlannedRun {
    /// argv[1..].
    pub args: Vec<String>,
    /// Its stdin blob and that blob's size.
    pub stdin: Option<(Cid, u64)>,
}

/// The module every chunk of a job runs (input 0): what a chunk names of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ModuleRef {
    pub cid: Cid,
    /// Its size in bytes, declared in every chunk so a worker can refuse it unfetched.
    pub len: u64,
}

impl ModuleRef {
    pub fn of(module: &[u8]) -> ModuleRef {
        ModuleRef {
            cid: Cid::of(module),
            len: module.len() as u64,
        }
    }
}

/// A planned job: its chunks, and which runs each one holds.
#[derive(Clone, Debug)]
pub struct WasmPlan {
    pub chunks: Vec<TaskSpec>,
    pub runs: Vec<Range<usize>>,
}

/// Refuses a number of runs per chunk that no worker accepts.
pub fn check_batch(batch: usize) -> Result<(), KernelError> {
    if batch == 0 || batch > MAX_ITEMS {
        return Err(KernelError::InvalidParams(format!(
            "--batch {batch}: 1..={MAX_ITEMS} runs per chunk"
        )));
    }
    Ok(())
}

/// Cuts `runs` into chunks of `batch` (see [`chunk`]). The module is checked by size
/// here; whether it is valid wasm is the caller's first check ([`super::check_module`]).
pub fn plan(
    module: &[u8],
    budgets: &WasmParams,
    runs: &[PlannedRun],
    batch: usize,
) -> Result<WasmPlan, KernelError> {
    if runs.is_empty() {
        return Err(KernelError::InvalidParams("the job has no runs".into()));
    }
    check_batch(batch)?;
    let module = ModuleRef::of(module);
    let mut chunks = Vec::new();
    let mut ranges = Vec::new();
    let mut start = 0;
    while start < runs.len() {
        let end = (start + batch).min(runs.len());
        chunks.push(chunk(
            module,
            budgets,
            runs[start..end].iter().cloned(),
            start,
        )?);
        ranges.push(start..end);
        start = end;
    }
    Ok(WasmPlan {
        chunks,
        runs: ranges,
    })
}

/// The spec of the chunk holding `runs`, the job's runs from index `first` on (named
/// in errors); `budgets` gives the program name, environment, fuel, memory and output
/// cap of every run (its `items` and `input_lens` are replaced). The spec is checked as
/// a worker checks it, so a bad job fails on the submitter, not on the grid.
pub fn chunk(
    module: ModuleRef,
    budgets: &WasmParams,
    runs: impl IntoIterator<Item = PlannedRun>,
    first: usize,
) -> Result<TaskSpec, KernelError> {
    let mut inputs = vec![module.cid];
    let mut input_lens = vec![module.len];
    let mut items = Vec::new();
    for run in runs {
        let stdin = match run.stdin {
            Some((cid, len)) => {
                let at = match inputs.iter().position(|c| *c == cid) {
                    Some(at) if at > 0 => at,
                    _ => {
                        inputs.push(cid);
                        input_lens.push(len);
                        inputs.len() - 1
                    }
                };
                Some(at as u32)
            }
            None => None,
        };
        items.push(Item {
            args: run.args,
            stdin,
        });
    }
    let end = first + items.len();
    let params = WasmParams {
        input_lens,
        items,
        ..budgets.clone()
    };
    let spec = TaskSpec {
        kernel: NAME.into(),
        kernel_version: VERSION,
        params: params.to_bytes()?,
        inputs,
    };
    crate::validate(&spec).map_err(|e| match e {
        KernelError::InvalidParams(why) => KernelError::InvalidParams(format!(
            "runs {first}..{end}: {why} (a smaller --batch or shorter arguments may help)"
        )),
        other => other,
    })?;
    Ok(spec)
}

/// A job's calibration chunk: the first run of its first chunk, made distinct per job
/// by `nonce` in its environment (a worker answers a chunk it already finished from
/// memory, which would score it by a round trip alone). Its output is never used.
pub fn calibration(first: &TaskSpec, nonce: u64) -> Result<TaskSpec, KernelError> {
    let mut params = WasmParams::from_spec(first)?;
    params.items.truncate(1);
    params
        .env
        .push(("IDLEGRID_CALIBRATION".into(), nonce.to_string()));
    let keep = params.items[0].stdin;
    let mut inputs = vec![first.inputs[0]];
    let mut lens = vec![params.input_lens[0]];
    if let Some(i) = keep {
        inputs.push(first.inputs[i as usize]);
        lens.push(params.input_lens[i as usize]);
        params.items[0].stdin = Some(1);
    }
    params.input_lens = lens;
    Ok(TaskSpec {
        kernel: NAME.into(),
        kernel_version: VERSION,
        params: params.to_bytes()?,
        inputs,
    })
}
