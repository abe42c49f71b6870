//! `idlegrid run MODULE.wasm [FILES...] [--range A..B] [--args T] -o T [--batch N]
//! [--join concat] [--fuel N] [--memory SIZE] [--timeout D] [--local]`: the user's own
//! WebAssembly program (WASI preview 1), run once per item on the grid, sandboxed.
//!
//! Flow: [`plan_run`] reads and checks the module (size, then validity: a bad module is
//! refused here, before anything is sent), lists the items (one per range value or per
//! input file, whose bytes become that run's stdin), fills the `--args` and `-o`
//! templates, and cuts the runs into `wasm` chunks. The chunks run on this machine
//! ([`execute_local`]) or on the grid ([`grid_job`], the job's result log making a rerun
//! reuse every verified chunk), and [`write_outputs`] writes each run's stdout to its
//! file (or all of them, in order, to one file with `--join concat`): to temporary
//! names first, renamed into place only once every chunk succeeded. A chunk whose
//! program fails (trap, fuel, non-zero exit) stops the job with the item named.

use std::io::Write;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use idlegrid_kernels::wasm::{
    self, params, plan::PlannedRun, template::Fields, template::Template, WasmParams,
};
use idlegrid_kernels::{Cancel, KernelError, Spread};
use idlegrid_protocol::Cid;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use rayon::prelude::*;

use crate::commands::common::{run_on_grid, GridArgs, NetArgs};
use crate::commands::job_page::JobPage;
use crate::grid::{ChunkList, GridError, Job};
use crate::jobs::JobBlob;
use crate::units::{parse_duration, parse_size};

/// Arguments of `idlegrid run`.
#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// The program: a WebAssembly module for WASI preview 1 (wasm32-wasip1, or
    /// wasm32-wasi of clang and wasi-libc).
    pub module: PathBuf,
    /// Input files, one run each, the file on the run's stdin ({i} is its position,
    /// {name} and {stem} its file name).
    pub inputs: Vec<PathBuf>,
    /// One run per value of A..B (end excluded), with no stdin; {i} is the value.
    #[arg(long, value_name = "A..B", value_parser = parse_range, conflicts_with = "inputs")]
    pub range: Option<Range<u64>>,
    /// Each run's arguments, split at spaces (quote to keep one): e.g. "{i} 240".
    #[arg(long = "args", value_name = "TEMPLATE", default_value = "")]
    pub args_template: String,
    /// Where each run's stdout goes: e.g. "frames/frame_{i:05}.png", "out/{stem}.json";
    /// with --join concat, the one file all outputs are joined into.
    #[arg(short, long, value_name = "TEMPLATE")]
    pub output: String,
    /// Runs per chunk (many short runs: fewer, larger chunks).
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// Join every run's output, in order, into the one file -o names.
    #[arg(long, value_enum)]
    pub join: Option<Join>,
    /// Fuel of each run (about one unit per WebAssembly instruction): a run that uses it
    /// up fails, at the same point on every peer.
    #[arg(long, default_value_t = params::DEFAULT_FUEL)]
    pub fuel: u64,
    /// Linear-memory cap of each run, e.g. 512MiB (at most 4GiB).
    #[arg(long, default_value = "512MiB", value_parser = parse_size)]
    pub memory: u64,
    /// Wall-clock watchdog of each run on this machine, e.g. 10m: past it the run stops
    /// and the chunk is retried elsewhere (never a result). Volunteers apply their own
    /// (`[kernels] wasm_timeout`); it is not part of the chunk, so a rerun with another
    /// timeout reuses every verified result.
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Largest stdout of one run, e.g. 256MiB: more is a failure of the program.
    #[arg(long, default_value = "256MiB", value_parser = parse_size)]
    pub max_output: u64,
    /// An environment variable of every run, NAME=VALUE (repeatable); runs see no other.
    #[arg(long = "env", value_name = "NAME=VALUE")]
    pub env: Vec<String>,
    /// Threads for --local [default: all cores].
    #[arg(long)]
    pub threads: Option<usize>,
    #[command(flatten)]
    pub grid: GridArgs,
    #[command(flatten)]
    pub net: NetArgs,
}

/// `--join`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Join {
    /// The outputs one after the other, in item order.
    Concat,
}

fn parse_range(text: &str) -> Result<Range<u64>, String> {
    let (a, b) = text
        .split_once("..")
        .ok_or_else(|| format!("{text:?}: expected A..B, e.g. 0..240"))?;
    let num = |v: &str| {
        v.trim()
            .parse::<u64>()
            .map_err(|e| format!("{text:?}: {v:?}: {e}"))
    };
    let (a, b) = (num(a)?, num(b)?);
    if b <= a {
        return Err(format!("{text:?}: the range is empty"));
    }
    Ok(a..b)
}

/// What a job of `run` is, independent of the command line.
#[derive(Clone, Debug)]
pub struct RunSpec {
    pub module: PathBuf,
    /// Input files (one run each), or empty with `range`.
    pub inputs: Vec<PathBuf>,
    pub range: Option<Range<u64>>,
    pub args_template: String,
    pub output: String,
    pub batch: usize,
    pub join: bool,
    /// Fuel, memory, output cap and environment of every run.
    pub budgets: WasmParams,
}

impl RunArgs {
    /// The job these flags describe.
    pub fn spec(&self) -> anyhow::Result<RunSpec> {
        let env = self
            .env
            .iter()
            .map(|kv| {
                kv.split_once('=')
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .with_context(|| format!("--env {kv:?}: expected NAME=VALUE"))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(RunSpec {
            module: self.module.clone(),
            inputs: self.inputs.clone(),
            range: self.range.clone(),
            args_template: self.args_template.clone(),
            output: self.output.clone(),
            batch: self.batch,
            join: self.join == Some(Join::Concat),
            budgets: WasmParams {
                env,
                fuel: self.fuel,
                memory: self.memory,
                max_output: self.max_output,
                ..WasmParams::default()
            },
        })
    }
}

/// Where the outputs go.
#[derive(Clone, Debug)]
pub enum Outputs {
    /// One file per run, in run order.
    Each(Vec<PathBuf>),
    /// All runs' outputs joined, in run order, into one file.
    Joined(PathBuf),
}

/// A planned `run` job.
pub struct RunPlan {
    pub module: Vec<u8>,
    pub plan: wasm::plan::WasmPlan,
    /// The input files, by run (empty for a range).
    pub files: Vec<PathBuf>,
    /// How each run is named in messages: its input file, or its {i}.
    pub names: Vec<String>,
    pub outputs: Outputs,
}

/// Reads and checks the module, lists the runs and their outputs, and cuts them into
/// chunks. Every error names the file or the flag.
pub fn plan_run(spec: &RunSpec) -> anyhow::Result<RunPlan> {
    let module = read_module(&spec.module)?;
    let args: Vec<Template> = wasm::template::split_words(&spec.args_template)
        .map_err(anyhow::Error::msg)
        .context("--args")?
        .iter()
        .map(|word| Template::parse(word))
        .collect::<Result<_, _>>()
        .map_err(anyhow::Error::msg)
        .context("--args")?;
    let output = Template::parse(&spec.output)
        .map_err(anyhow::Error::msg)
        .context("-o")?;
    let mut runs = Vec::new();
    let mut names = Vec::new();
    let mut paths = Vec::new();
    let count = match &spec.range {
        Some(r) => r.end - r.start,
        None => spec.inputs.len() as u64,
    };
    anyhow::ensure!(
        count > 0,
        "nothing to run: give input files or --range A..B"
    );
    let fill = |t: &Template, fields: &Fields<'_>| t.fill(fields).map_err(anyhow::Error::msg);
    for k in 0..count {
        let file = spec.inputs.get(k as usize);
        let file_name = file.map(|f| {
            f.file_name().map_or_else(
                || f.display().to_string(),
                |n| n.to_string_lossy().into_owned(),
            )
        });
        let fields = Fields {
            i: spec.range.as_ref().map_or(k, |r| r.start + k),
            count,
            name: file_name.as_deref(),
        };
        let argv = args
            .iter()
            .map(|t| fill(t, &fields))
            .collect::<anyhow::Result<Vec<_>>>()
            .context("--args")?;
        let stdin = match file {
            Some(path) => Some(hash_file(path)?),
            None => None,
        };
        names.push(match file {
            Some(path) => format!("input {}", path.display()),
            None => format!("i = {}", fields.i),
        });
        if !spec.join {
            paths.push(PathBuf::from(fill(&output, &fields).context("-o")?));
        }
        runs.push(PlannedRun { args: argv, stdin });
    }
    let outputs = if spec.join {
        anyhow::ensure!(
            !output.uses_index() && !output.uses_names(),
            "-o {:?}: with --join concat, -o names one file (no {{i}}, {{name}} or {{stem}})",
            spec.output
        );
        Outputs::Joined(PathBuf::from(fill(&output, &Fields::default())?))
    } else {
        let mut seen = std::collections::HashSet::new();
        if let Some(dup) = paths.iter().find(|p| !seen.insert(*p)) {
            anyhow::bail!(
                "-o {:?} names {} for more than one run: use {{i}}, {{name}} or {{stem}}, \
                 or --join concat",
                spec.output,
                dup.display()
            );
        }
        Outputs::Each(paths)
    };
    let budgets = WasmParams {
        program: spec.module.file_name().map_or_else(
            || "kernel.wasm".into(),
            |n| n.to_string_lossy().into_owned(),
        ),
        ..spec.budgets.clone()
    };
    let plan = wasm::plan::plan(&module, &budgets, &runs, spec.batch)?;
    Ok(RunPlan {
        module,
        plan,
        files: spec.inputs.clone(),
        names,
        outputs,
    })
}

fn read_module(path: &Path) -> anyhow::Result<Vec<u8>> {
    let len = std::fs::metadata(path)
        .with_context(|| format!("cannot read the module {}", path.display()))?
        .len();
    anyhow::ensure!(
        len <= params::MAX_MODULE,
        "{}: a module of {len} bytes; peers compile at most {} MiB",
        path.display(),
        params::MAX_MODULE >> 20
    );
    let bytes = std::fs::read(path)
        .with_context(|| format!("cannot read the module {}", path.display()))?;
    let engine = &wasm::engine::runtime()?.engine;
    wasm::check_module(engine, &bytes).with_context(|| path.display().to_string())?;
    Ok(bytes)
}

fn hash_file(path: &Path) -> anyhow::Result<(Cid, u64)> {
    let file = std::fs::File::open(path)
        .with_context(|| format!("cannot read the input {}", path.display()))?;
    let len = file.metadata()?.len();
    anyhow::ensure!(
        len <= params::MAX_STDIN,
        "{}: {len} bytes, over the {} MiB a run's stdin may have",
        path.display(),
        params::MAX_STDIN >> 20
    );
    let mut hasher = blake3::Hasher::new();
    hasher
        .update_reader(file)
        .with_context(|| format!("cannot read the input {}", path.display()))?;
    Ok((Cid::from_hasher(&hasher), len))
}

impl RunPlan {
    /// What chunk `index` holds, for messages: its runs' names.
    pub fn describe_chunk(&self, index: usize) -> String {
        match self.plan.runs.get(index) {
            Some(r) if r.len() == 1 => self.names[r.start].clone(),
            Some(r) => format!(
                "runs {}..{} ({} .. {})",
                r.start,
                r.end,
                self.names[r.start],
                self.names[r.end - 1]
            ),
            None => format!("chunk {index}"),
        }
    }

    /// Chunk `chunk`'s framed result cut into its runs' outputs, in run order; an
    /// error names the chunk's runs.
    pub fn outputs_of<'a>(&self, chunk: usize, result: &'a [u8]) -> anyhow::Result<Vec<&'a [u8]>> {
        let runs = self.plan.runs.get(chunk).map_or(0, |r| r.len());
        let outputs = wasm::unframe(result).map_err(|e| self.explain(chunk, e))?;
        anyhow::ensure!(
            outputs.len() == runs,
            "{}: {} outputs for {runs} runs",
            self.describe_chunk(chunk),
            outputs.len()
        );
        Ok(outputs)
    }

    /// A chunk's failure, with the chunk's items named.
    pub fn explain(&self, chunk: usize, err: impl std::fmt::Display) -> anyhow::Error {
        anyhow::anyhow!("{} failed: {err}", self.describe_chunk(chunk))
    }
}

/// The grid job of a planned run: the module and the input files as blobs (the files
/// served from where they are), the first run as the calibration chunk.
pub fn grid_job(plan: &RunPlan) -> anyhow::Result<(Job, Vec<JobBlob>)> {
    let first = plan.plan.chunks.first().context("no chunks")?;
    let calibration = wasm::plan::calibration(first, rand::random())?;
    let mut blobs = vec![JobBlob::Bytes(plan.module.clone())];
    blobs.extend(plan.files.iter().cloned().map(JobBlob::File));
    let units: Vec<u64> = plan.plan.runs.iter().map(|r| r.len() as u64).collect();
    let job = Job {
        kernel: wasm::NAME.into(),
        kernel_version: wasm::VERSION,
        chunks: ChunkList::listed(plan.plan.chunks.clone(), units.clone(), units),
        calibration,
        calibration_cost: 1,
        unit: "runs",
    };
    Ok((job, blobs))
}

pub fn run(args: RunArgs) -> anyhow::Result<()> {
    let page = JobPage::new(&args.grid)?;
    let result = run_job(&args, &page);
    page.finish(result)
}

fn run_job(args: &RunArgs, page: &JobPage) -> anyhow::Result<()> {
    let started = Instant::now();
    let spec = args.spec()?;
    wasm::set_watchdog(args.timeout);
    wasm::set_cache_dir(args.net.data_dir().join("wasm-cache"));
    let plan = plan_run(&spec)?;
    let runs = plan.names.len();
    if args.grid.local && !page.wanted() {
        let threads = args
            .threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        let results = execute_local(&plan, threads)?;
        write_outputs(&plan, |i| Ok(results[i].clone()))?;
    } else {
        let (job, blobs) = grid_job(&plan)?;
        let net = JobPage::net_args(&args.net, args.threads);
        let mut grid = match run_on_grid(&net, &args.grid, blobs, job, page) {
            Ok(grid) => grid,
            Err(e) => {
                return Err(match e.downcast_ref::<GridError>() {
                    Some(GridError::ChunkFailed { chunk, reason, .. }) => {
                        plan.explain(*chunk, reason)
                    }
                    _ => e,
                })
            }
        };
        let results = &grid.outcome.results;
        write_outputs(&plan, |i| Ok(results.bytes(i)?.to_vec()))?;
        let report = &mut grid.outcome.report;
        report.output = Some(match &plan.outputs {
            Outputs::Joined(path) => path.clone(),
            Outputs::Each(paths) => paths
                .first()
                .and_then(|p| p.parent())
                .map_or_else(PathBuf::new, Path::to_path_buf),
        });
        eprint!("{}", report.table());
        if let Some(path) = &args.grid.report {
            report
                .write(path)
                .with_context(|| format!("cannot write the report {}", path.display()))?;
        }
    }
    let secs = started.elapsed().as_secs_f64();
    match &plan.outputs {
        Outputs::Joined(path) => println!(
            "wrote {}: {runs} runs joined in {secs:.1} s",
            path.display()
        ),
        Outputs::Each(paths) => println!(
            "wrote {runs} outputs ({} .. {}) in {secs:.1} s",
            paths
                .first()
                .map_or_else(String::new, |p| p.display().to_string()),
            paths
                .last()
                .map_or_else(String::new, |p| p.display().to_string()),
        ),
    }
    Ok(())
}

/// Runs every chunk on this machine, `threads` at once; the chunk results in order.
/// The first failing chunk's error names its runs.
pub fn execute_local(plan: &RunPlan, threads: usize) -> anyhow::Result<Vec<Vec<u8>>> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads.max(1))
        .thread_name(|i| format!("wasm-run-{i}"))
        .build()
        .context("cannot start the compute threads")?;
    let progress = progress_bar(plan.names.len() as u64);
    let inputs_of = |spec: &idlegrid_protocol::TaskSpec, chunk: usize| {
        let mut inputs = vec![plan.module.clone()];
        let runs = plan.plan.runs[chunk].clone();
        // The chunk's inputs after the module are its runs' files, first use first.
        let mut seen = vec![spec.inputs[0]];
        for file in plan.files.get(runs).unwrap_or_default() {
            let bytes = std::fs::read(file)
                .with_context(|| format!("cannot read the input {}", file.display()))?;
            let cid = Cid::of(&bytes);
            if !seen.contains(&cid) {
                seen.push(cid);
                inputs.push(bytes);
            }
        }
        anyhow::ensure!(
            seen == spec.inputs,
            "an input file changed while the job ran"
        );
        Ok(inputs)
    };
    let spread = Spread::for_chunks(plan.plan.chunks.len(), threads);
    let results = pool.install(|| {
        plan.plan
            .chunks
            .par_iter()
            .enumerate()
            .map(|(i, spec)| {
                let inputs = inputs_of(spec, i)?;
                let out = idlegrid_kernels::run_cancellable(spec, &inputs, spread, &Cancel::new())
                    .map_err(|e: KernelError| plan.explain(i, e))?;
                progress.inc(plan.plan.runs[i].len() as u64);
                Ok(out)
            })
            .collect::<anyhow::Result<Vec<_>>>()
    });
    progress.finish_and_clear();
    results
}

/// A temporary file beside `target` (its folder created), to be renamed onto it once
/// whole: a reader never sees half an output.
pub fn temp_beside(target: &Path) -> anyhow::Result<tempfile::NamedTempFile> {
    let dir = match target.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&dir)
        .with_context(|| format!("cannot create the folder {}", dir.display()))?;
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".part")
        .tempfile_in(&dir)
        .with_context(|| format!("cannot write into {}", dir.display()))
}

/// Writes every run's output where `plan.outputs` says, from the chunk results in
/// order (`result(i)`: chunk i's framed result). Each file is written under a
/// temporary name beside its target and renamed once every output is written: an
/// error leaves the earlier outputs as they were.
pub fn write_outputs(
    plan: &RunPlan,
    mut result: impl FnMut(usize) -> anyhow::Result<Vec<u8>>,
) -> anyhow::Result<()> {
    let mut pending: Vec<(tempfile::TempPath, PathBuf)> = Vec::new();
    let mut joined = match &plan.outputs {
        Outputs::Joined(path) => Some((temp_beside(path)?, path.clone())),
        Outputs::Each(_) => None,
    };
    for (chunk, runs) in plan.plan.runs.iter().enumerate() {
        let bytes = result(chunk)?;
        let outputs = plan.outputs_of(chunk, &bytes)?;
        for (k, out) in runs.clone().zip(outputs) {
            match (&plan.outputs, &mut joined) {
                (_, Some((file, path))) => file
                    .write_all(out)
                    .with_context(|| format!("cannot write {}", path.display()))?,
                (Outputs::Each(paths), None) => {
                    let mut file = temp_beside(&paths[k])?;
                    file.write_all(out)
                        .with_context(|| format!("cannot write {}", paths[k].display()))?;
                    pending.push((file.into_temp_path(), paths[k].clone()));
                }
                (Outputs::Joined(_), None) => {}
            }
        }
    }
    if let Some((file, path)) = joined {
        pending.push((file.into_temp_path(), path));
    }
    for (temp, target) in pending {
        temp.persist(&target)
            .with_context(|| format!("cannot write {}", target.display()))?;
    }
    Ok(())
}

fn progress_bar(total: u64) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    if let Ok(style) =
        ProgressStyle::with_template("{elapsed_precise} [{bar:40}] {pos}/{len} runs  eta {eta}")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        run: RunArgs,
    }

    /// The chunk ids of `idlegrid run MODULE --range 0..8 -o out/{i} EXTRA...`.
    fn chunk_ids(module: &Path, extra: &[&str]) -> Vec<Cid> {
        let mut argv = vec![
            "run",
            module.to_str().unwrap(),
            "--range",
            "0..8",
            "-o",
            "o/{i}",
        ];
        argv.extend_from_slice(extra);
        let spec = Cli::try_parse_from(argv).unwrap().run.spec().unwrap();
        let plan = plan_run(&spec).unwrap();
        plan.plan.chunks.iter().map(|c| c.id()).collect()
    }

    #[test]
    fn the_watchdog_is_not_part_of_the_chunks_but_the_budgets_are() {
        let dir = tempfile::tempdir().unwrap();
        let module = dir.path().join("m.wasm");
        std::fs::write(&module, b"\0asm\x01\0\0\0").unwrap();
        let ids = chunk_ids(&module, &[]);
        assert_eq!(ids.len(), 8);
        // A rerun with a longer timeout reuses every verified chunk.
        assert_eq!(chunk_ids(&module, &["--timeout", "2h"]), ids);
        // Fuel and memory decide where a program stops: another chunk.
        assert_ne!(chunk_ids(&module, &["--fuel", "1000"]), ids);
        assert_ne!(chunk_ids(&module, &["--memory", "1MiB"]), ids);
    }
}
