//! `idlegrid run MODULE.wasm [FILES...] [--range A..B] [--args T] -o T [--batch N]
//! [--join concat] [--fuel N] [--memory SIZE] [--timeout D] [--local]`: the user's own
//! WebAssembly program (WASI preview 1), run once per item on the grid, sandboxed.
//!
//! Flow: [`plan_run`] reads and checks the module (size, then validity: a bad module is
//! refused here, before anything is sent), describes the runs by rule ([`Runs`]: one
//! per range value or per input file, whose bytes become that run's stdin, hashed
//! once), and checks the `--args` and `-o` templates and the `wasm` chunks, so every
//! error is found before anything runs. Run k's arguments and output path and chunk
//! c's spec are made from k and c when needed: a range of a million runs holds
//! nothing per run. The chunks run on this machine
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
use idlegrid_kernels::wasm::{self, params, WasmParams};
use idlegrid_kernels::{Cancel, KernelError, Spread};
use idlegrid_protocol::{Cid, TaskSpec};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use rayon::prelude::*;

use crate::commands::common::{run_on_grid, GridArgs, NetArgs};
use crate::commands::job_page::JobPage;
use crate::grid::{ChunkList, GridError, Job};
use crate::jobs::JobBlob;
use crate::units::{parse_duration, parse_size};

mod plan;

pub use plan::{plan_run, Outputs, RunPlan, RunSpec, Runs};

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

/// A chunk every worker refuses (its params do not decode), so that the chunk fails
/// and the job stops naming it: what the grid gets for a chunk whose spec cannot be
/// made. That never happens to a planned job, whose templates and chunks
/// [`plan_run`] checked, but the grid's chunk list must not panic.
fn refused_chunk(runs: &Runs) -> TaskSpec {
    TaskSpec {
        kernel: wasm::NAME.into(),
        kernel_version: wasm::VERSION,
        params: Vec::new(),
        inputs: vec![runs.module.cid],
    }
}

/// The grid job of a planned run: the module and the input files as blobs (the files
/// served from where they are), the first run as the calibration chunk, and the chunks
/// made from the plan's rule as the grid needs them.
pub fn grid_job(plan: &RunPlan) -> anyhow::Result<(Job, Vec<JobBlob>)> {
    let first = plan.runs.chunk_spec(0)?;
    let calibration = wasm::plan::calibration(&first, rand::random())?;
    let mut blobs = vec![JobBlob::Bytes(plan.module.clone())];
    blobs.extend(plan.runs.files().iter().cloned().map(JobBlob::File));
    let (units_of, make) = (plan.runs.clone(), plan.runs.clone());
    // Every chunk costs a full batch, the last one too: a cost only weighs chunks
    // against each other, and one chunk counted a little high changes nothing.
    let chunks = ChunkList::made_with_units(
        plan.runs.chunk_count(),
        plan.runs.batch as u64,
        move |c| units_of.of_chunk(c).map_or(0, |r| r.len() as u64),
        move |c| make.chunk_spec(c).unwrap_or_else(|_| refused_chunk(&make)),
    );
    let job = Job {
        kernel: wasm::NAME.into(),
        kernel_version: wasm::VERSION,
        chunks,
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
    let runs = plan.runs.count();
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
            Outputs::Each { .. } => plan
                .output_path(0)?
                .parent()
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
        Outputs::Each { .. } => println!(
            "wrote {runs} outputs ({} .. {}) in {secs:.1} s",
            plan.output_path(0)?.display(),
            plan.output_path(runs - 1)?.display(),
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
    let progress = progress_bar(plan.runs.count() as u64);
    let inputs_of = |spec: &TaskSpec, runs: Range<usize>| {
        let mut inputs = vec![plan.module.clone()];
        // The chunk's inputs after the module are its runs' files, first use first.
        let mut seen = vec![spec.inputs[0]];
        for file in plan.runs.files().get(runs).unwrap_or_default() {
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
    let chunks = plan.runs.chunk_count();
    let spread = Spread::for_chunks(chunks, threads);
    let results = pool.install(|| {
        (0..chunks)
            .into_par_iter()
            .map(|i| {
                let spec = plan.runs.chunk_spec(i)?;
                let runs = plan.runs.of_chunk(i).unwrap_or_default();
                let count = runs.len() as u64;
                let inputs = inputs_of(&spec, runs)?;
                let out = idlegrid_kernels::run_cancellable(&spec, &inputs, spread, &Cancel::new())
                    .map_err(|e: KernelError| plan.explain(i, e))?;
                progress.inc(count);
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
        Outputs::Each { .. } => None,
    };
    for chunk in 0..plan.runs.chunk_count() {
        let bytes = result(chunk)?;
        let outputs = plan.outputs_of(chunk, &bytes)?;
        let runs = plan.runs.of_chunk(chunk).unwrap_or_default();
        for (k, out) in runs.zip(outputs) {
            match &mut joined {
                Some((file, path)) => file
                    .write_all(out)
                    .with_context(|| format!("cannot write {}", path.display()))?,
                None => {
                    let path = plan.output_path(k)?;
                    let mut file = temp_beside(&path)?;
                    file.write_all(out)
                        .with_context(|| format!("cannot write {}", path.display()))?;
                    pending.push((file.into_temp_path(), path));
                }
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
    use super::plan::Items;
    use super::*;
    use clap::Parser;
    use idlegrid_kernels::wasm::plan::PlannedRun;
    use idlegrid_kernels::wasm::template::{Fields, Template};

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
        (0..plan.runs.chunk_count())
            .map(|c| plan.runs.chunk_spec(c).unwrap().id())
            .collect()
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

    fn empty_module(dir: &Path) -> PathBuf {
        let module = dir.join("m.wasm");
        std::fs::write(&module, b"\0asm\x01\0\0\0").unwrap();
        module
    }

    fn spec_of(argv: &[&str]) -> RunSpec {
        let argv = std::iter::once("run").chain(argv.iter().copied());
        Cli::try_parse_from(argv).unwrap().run.spec().unwrap()
    }

    /// The chunk ids of `spec` as the listed planner makes them: every run's arguments
    /// and stdin listed first, then cut into chunks.
    fn listed_ids(spec: &RunSpec) -> Vec<Cid> {
        let module = std::fs::read(&spec.module).unwrap();
        let args: Vec<Template> = wasm::template::split_words(&spec.args_template)
            .unwrap()
            .iter()
            .map(|word| Template::parse(word).unwrap())
            .collect();
        let count = match &spec.range {
            Some(r) => r.end - r.start,
            None => spec.inputs.len() as u64,
        };
        let runs: Vec<PlannedRun> = (0..count)
            .map(|k| {
                let file = spec.inputs.get(k as usize);
                let name = file.map(|f| f.file_name().unwrap().to_string_lossy().into_owned());
                let fields = Fields {
                    i: spec.range.as_ref().map_or(k, |r| r.start + k),
                    count,
                    name: name.as_deref(),
                };
                PlannedRun {
                    args: args.iter().map(|t| t.fill(&fields).unwrap()).collect(),
                    stdin: file.map(|f| {
                        let bytes = std::fs::read(f).unwrap();
                        (Cid::of(&bytes), bytes.len() as u64)
                    }),
                }
            })
            .collect();
        let budgets = WasmParams {
            program: "m.wasm".into(),
            ..spec.budgets.clone()
        };
        wasm::plan::plan(&module, &budgets, &runs, spec.batch)
            .unwrap()
            .chunks
            .iter()
            .map(|c| c.id())
            .collect()
    }

    /// The chunk ids and units of the grid job of `spec`, its chunks made as needed.
    fn made_ids(spec: &RunSpec) -> (Vec<Cid>, Vec<u64>) {
        let plan = plan_run(spec).unwrap();
        let (job, _) = grid_job(&plan).unwrap();
        let units = (0..job.chunks.len()).map(|c| job.chunks.units(c)).collect();
        (job.chunks.specs().map(|c| c.id()).collect(), units)
    }

    #[test]
    fn made_chunks_are_the_listed_planners_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let module = empty_module(dir.path());
        let module = module.to_str().unwrap();
        // 11 runs in chunks of 4: the last holds 3.
        let range = spec_of(&[
            module,
            "--range",
            "3..14",
            "--batch",
            "4",
            "--args",
            "{i} of {count} x{i:03}",
            "-o",
            "o/{i}",
        ]);
        let (ids, units) = made_ids(&range);
        assert_eq!(ids, listed_ids(&range));
        assert_eq!(units, [4, 4, 3]);
        // 5 files in chunks of 2, two of them alike (one stdin input for both).
        let files: Vec<String> = ["a.txt", "b.txt", "c.dat", "d.txt", "e.txt"]
            .iter()
            .enumerate()
            .map(|(k, name)| {
                let path = dir.path().join(name);
                std::fs::write(&path, format!("seed {}", k.min(1))).unwrap();
                path.to_str().unwrap().to_string()
            })
            .collect();
        let mut argv = vec![module, "--batch", "2", "--args", "{name} {stem} {i}"];
        argv.extend(files.iter().map(String::as_str));
        argv.extend(["-o", "out/{stem}.txt"]);
        let over_files = spec_of(&argv);
        let (ids, units) = made_ids(&over_files);
        assert_eq!(ids, listed_ids(&over_files));
        assert_eq!(units, [2, 2, 1]);
    }

    #[test]
    fn a_sweep_of_a_million_runs_holds_nothing_per_run() {
        let dir = tempfile::tempdir().unwrap();
        let module = empty_module(dir.path());
        let spec = spec_of(&[
            module.to_str().unwrap(),
            "--range",
            "0..1000000",
            "--args",
            "{i} {count}",
            "--join",
            "concat",
            "-o",
            "all.txt",
        ]);
        let plan = plan_run(&spec).unwrap();
        // Everything the plan holds is of a size independent of the runs.
        assert!(matches!(plan.runs.items, Items::Range(_)));
        assert!(matches!(&plan.outputs, Outputs::Joined(p) if p == Path::new("all.txt")));
        assert_eq!(plan.runs.args.len(), 2);
        assert_eq!(plan.runs.count(), 1_000_000);
        assert_eq!(plan.runs.chunk_count(), 1_000_000);
        let (job, blobs) = grid_job(&plan).unwrap();
        assert_eq!(blobs.len(), 1, "the module alone");
        assert_eq!(job.chunks.len(), 1_000_000);
        assert_eq!(job.chunks.same_cost(), Some(1));
        // Any chunk is made on demand, the same each time.
        let last = job.chunks.spec(999_999).unwrap();
        assert_eq!(last.id(), plan.runs.chunk_spec(999_999).unwrap().id());
        let params = WasmParams::from_spec(&last).unwrap();
        assert_eq!(params.items[0].args, ["999999", "1000000"]);
        assert_eq!(plan.describe_chunk(999_999), "i = 999999");
    }

    #[test]
    fn every_error_of_a_run_is_found_at_plan_time() {
        let dir = tempfile::tempdir().unwrap();
        let module = empty_module(dir.path());
        let module = module.to_str().unwrap();
        let error = |extra: &[&str]| {
            let mut argv = vec![module, "--range", "0..300"];
            argv.extend_from_slice(extra);
            match plan_run(&spec_of(&argv)) {
                Ok(_) => String::new(),
                Err(e) => format!("{e:#}"),
            }
        };
        assert!(error(&["-o", "o/{i}", "--args", "{name}"]).contains("--args"));
        assert!(error(&["-o", "o/{stem}"]).contains("-o"));
        let dup = error(&["-o", "o/{count}"]);
        assert!(dup.contains("for more than one run"), "{dup}");
        assert_eq!(error(&["-o", "o/{i}"]), "");
        // A thousand arguments of {i} per run: chunks of 16 runs of one or two digits
        // fit a chunk's params, those of six digits do not. The last chunk, of 3 runs,
        // fits; the last full one does not.
        let args = "{i} ".repeat(1000);
        let argv = [
            module,
            "--range",
            "0..100003",
            "--batch",
            "16",
            "--args",
            &args,
        ];
        let mut argv = argv.to_vec();
        argv.extend(["-o", "o/{i}"]);
        let too_long = format!("{:#}", plan_run(&spec_of(&argv)).err().unwrap());
        assert!(too_long.contains("runs 99984..100000"), "{too_long}");
        assert!(too_long.contains("--batch"), "{too_long}");
        argv[4] = "1";
        assert!(plan_run(&spec_of(&argv)).is_ok(), "one run per chunk fits");
        // One run: a template without {i} names one file.
        let argv = [module, "--range", "5..6", "-o", "one.txt"];
        assert!(plan_run(&spec_of(&argv)).is_ok());
    }
}
