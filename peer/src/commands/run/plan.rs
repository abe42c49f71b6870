//! A `run` job planned: the module read and checked, the runs described by rule
//! ([`Runs`]: one per range value or per input file, hashed once), the `--args` and
//! `-o` templates and the chunks checked, so that every error is found before anything
//! runs. Run k's arguments, name and output path and chunk c's spec are made from k
//! and c when needed: a range of a million runs holds nothing per run.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use idlegrid_kernels::wasm::{
    self, params,
    plan::{ModuleRef, PlannedRun},
    template::Fields,
    template::Template,
    WasmParams,
};
use idlegrid_protocol::{Cid, TaskSpec};

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

/// Where the outputs go.
#[derive(Clone, Debug)]
pub enum Outputs {
    /// One file per run, in run order: the `-o` template filled with the run's fields,
    /// under `folder` (empty: where the template says). Each path is made when it is
    /// needed ([`RunPlan::output_path`]).
    Each { template: Template, folder: PathBuf },
    /// All runs' outputs joined, in run order, into one file.
    Joined(PathBuf),
}

/// What the runs are: values of a range, or input files.
pub(super) enum Items {
    /// Run k has `{i}` = `start + k` and no stdin.
    Range(Range<u64>),
    /// Run k reads `files[k]` on its stdin, whose id and size are `stdins[k]`: all a
    /// chunk names of it, hashed once at plan time.
    Files {
        files: Vec<PathBuf>,
        stdins: Vec<(Cid, u64)>,
    },
}

/// A job's runs and chunks by rule: run k's arguments, stdin and name, and chunk c's
/// spec, are made from k and c when asked for, so a range of a million runs holds
/// nothing per run. Chunk c holds runs `c*batch..min((c+1)*batch, count)`.
pub struct Runs {
    pub(super) module: ModuleRef,
    /// argv[0], environment, fuel, memory and output cap of every run.
    budgets: WasmParams,
    /// `--args`, one template per argument.
    pub(super) args: Vec<Template>,
    pub(super) items: Items,
    count: usize,
    /// Runs per chunk (the last chunk may hold fewer).
    pub(super) batch: usize,
}

impl Runs {
    pub fn count(&self) -> usize {
        self.count
    }

    pub fn chunk_count(&self) -> usize {
        self.count.div_ceil(self.batch)
    }

    /// The runs chunk `chunk` holds.
    pub fn of_chunk(&self, chunk: usize) -> Option<Range<usize>> {
        let start = chunk.checked_mul(self.batch)?;
        (start < self.count).then(|| start..(start + self.batch).min(self.count))
    }

    /// Run `run`'s input file's name ({name}), for jobs over files.
    fn file_name(&self, run: usize) -> Option<String> {
        match &self.items {
            Items::Files { files, .. } => files.get(run).map(|f| {
                f.file_name().map_or_else(
                    || f.display().to_string(),
                    |n| n.to_string_lossy().into_owned(),
                )
            }),
            Items::Range(_) => None,
        }
    }

    /// Run `run`'s {i}: the range value, or the input file's position.
    fn index(&self, run: usize) -> u64 {
        match &self.items {
            Items::Range(range) => range.start + run as u64,
            Items::Files { .. } => run as u64,
        }
    }

    /// `template` filled with run `run`'s fields.
    fn fill(&self, template: &Template, run: usize) -> anyhow::Result<String> {
        let name = self.file_name(run);
        let fields = Fields {
            i: self.index(run),
            count: self.count as u64,
            name: name.as_deref(),
        };
        template.fill(&fields).map_err(anyhow::Error::msg)
    }

    /// Run `run`'s arguments (argv[1..]).
    pub fn args_of(&self, run: usize) -> anyhow::Result<Vec<String>> {
        self.args
            .iter()
            .map(|t| self.fill(t, run))
            .collect::<anyhow::Result<_>>()
            .context("--args")
    }

    /// Run `run`'s stdin blob and its size.
    fn stdin_of(&self, run: usize) -> Option<(Cid, u64)> {
        match &self.items {
            Items::Files { stdins, .. } => stdins.get(run).copied(),
            Items::Range(_) => None,
        }
    }

    /// How run `run` is named in messages: its input file, or its {i}.
    pub fn name_of(&self, run: usize) -> String {
        match &self.items {
            Items::Files { files, .. } => match files.get(run) {
                Some(path) => format!("input {}", path.display()),
                None => format!("run {run}"),
            },
            Items::Range(_) => format!("i = {}", self.index(run)),
        }
    }

    /// The input files, by run (none for a range).
    pub fn files(&self) -> &[PathBuf] {
        match &self.items {
            Items::Files { files, .. } => files,
            Items::Range(_) => &[],
        }
    }

    /// Chunk `chunk`'s spec, checked as a worker checks it.
    pub fn chunk_spec(&self, chunk: usize) -> anyhow::Result<TaskSpec> {
        let runs = self
            .of_chunk(chunk)
            .with_context(|| format!("the job has no chunk {chunk}"))?;
        let planned = runs
            .clone()
            .map(|k| {
                Ok(PlannedRun {
                    args: self.args_of(k)?,
                    stdin: self.stdin_of(k),
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(wasm::plan::chunk(
            self.module,
            &self.budgets,
            planned,
            runs.start,
        )?)
    }

    /// The chunks the plan checks before anything runs: every chunk of a job over
    /// files (its files are listed anyway); of a range, the first, the last full and
    /// the last. A range's arguments only grow with {i}'s digits (padding never
    /// shrinks), so no run's arguments are longer than the last run's and no full
    /// chunk is larger than the last full one; every other check a worker makes is the
    /// same for every chunk.
    fn chunks_to_check(&self) -> Vec<usize> {
        let chunks = self.chunk_count();
        match self.items {
            Items::Files { .. } => (0..chunks).collect(),
            Items::Range(_) => {
                let last_full = (self.count / self.batch).saturating_sub(1);
                let mut picked = vec![0, last_full, chunks.saturating_sub(1)];
                picked.dedup();
                picked
            }
        }
    }
}

/// A planned `run` job.
pub struct RunPlan {
    pub module: Vec<u8>,
    /// Shared with the grid's chunk list, which makes each chunk from it.
    pub runs: Arc<Runs>,
    pub outputs: Outputs,
}

/// Reads and checks the module, lists the runs and their outputs, and checks their
/// chunks. Every error names the file or the flag, and every error a run or a chunk
/// could have is found here, before anything runs.
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
    let count = match &spec.range {
        Some(r) => r.end - r.start,
        None => spec.inputs.len() as u64,
    };
    anyhow::ensure!(
        count > 0,
        "nothing to run: give input files or --range A..B"
    );
    let count = usize::try_from(count)
        .ok()
        .with_context(|| format!("{count} runs: too many for this machine"))?;
    wasm::plan::check_batch(spec.batch)?;
    let budgets = WasmParams {
        program: spec.module.file_name().map_or_else(
            || "kernel.wasm".into(),
            |n| n.to_string_lossy().into_owned(),
        ),
        ..spec.budgets.clone()
    };
    let mut runs = Runs {
        module: ModuleRef::of(&module),
        budgets,
        args,
        items: match &spec.range {
            Some(range) => Items::Range(range.clone()),
            None => Items::Files {
                files: spec.inputs.clone(),
                // Hashed below, run by run.
                stdins: Vec::new(),
            },
        },
        count,
        batch: spec.batch,
    };
    // Per run, in run order: its arguments, its stdin, its output path. A range's
    // templates fail the same way for every run ({name} without files is their only
    // error), so its first run stands for all; a job over files checks each file.
    let checked = match &runs.items {
        Items::Range(_) => 1,
        Items::Files { .. } => count,
    };
    let mut paths = std::collections::HashSet::new();
    let mut stdins = Vec::new();
    for k in 0..checked {
        runs.args_of(k)?;
        if let Some(path) = spec.inputs.get(k) {
            stdins.push(hash_file(path)?);
        }
        if !spec.join {
            let path = PathBuf::from(runs.fill(&output, k).context("-o")?);
            let unique = match &runs.items {
                // {i} differs from run to run, and so does every path it fills.
                Items::Range(_) => output.uses_index() || count == 1,
                Items::Files { .. } => paths.insert(path.clone()),
            };
            anyhow::ensure!(
                unique,
                "-o {:?} names {} for more than one run: use {{i}}, {{name}} or {{stem}}, \
                 or --join concat",
                spec.output,
                path.display()
            );
        }
    }
    if let Items::Files { stdins: all, .. } = &mut runs.items {
        *all = stdins;
    }
    let outputs = if spec.join {
        anyhow::ensure!(
            !output.uses_index() && !output.uses_names(),
            "-o {:?}: with --join concat, -o names one file (no {{i}}, {{name}} or {{stem}})",
            spec.output
        );
        Outputs::Joined(PathBuf::from(
            output
                .fill(&Fields::default())
                .map_err(anyhow::Error::msg)?,
        ))
    } else {
        Outputs::Each {
            template: output,
            folder: PathBuf::new(),
        }
    };
    for chunk in runs.chunks_to_check() {
        runs.chunk_spec(chunk)?;
    }
    Ok(RunPlan {
        module,
        runs: Arc::new(runs),
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
    /// Where run `run`'s output goes: its own file, or the one joined file.
    pub fn output_path(&self, run: usize) -> anyhow::Result<PathBuf> {
        match &self.outputs {
            Outputs::Each { template, folder } => {
                Ok(folder.join(self.runs.fill(template, run).context("-o")?))
            }
            Outputs::Joined(path) => Ok(path.clone()),
        }
    }

    /// What chunk `index` holds, for messages: its runs' names.
    pub fn describe_chunk(&self, index: usize) -> String {
        match self.runs.of_chunk(index) {
            Some(r) if r.len() == 1 => self.runs.name_of(r.start),
            Some(r) => format!(
                "runs {}..{} ({} .. {})",
                r.start,
                r.end,
                self.runs.name_of(r.start),
                self.runs.name_of(r.end - 1)
            ),
            None => format!("chunk {index}"),
        }
    }

    /// Chunk `chunk`'s framed result cut into its runs' outputs, in run order; an
    /// error names the chunk's runs.
    pub fn outputs_of<'a>(&self, chunk: usize, result: &'a [u8]) -> anyhow::Result<Vec<&'a [u8]>> {
        let runs = self.runs.of_chunk(chunk).map_or(0, |r| r.len());
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
