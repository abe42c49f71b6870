//! idlegrid's kernels: pure, deterministic compute with no networking.
//!
//! Each kernel owns three steps. `plan` (submitter side) turns the user's inputs and
//! parameters into chunks: [`TaskSpec`]s plus the blobs they name. `run` (any peer)
//! turns one chunk and its input blobs into output bytes. `assemble` (submitter side)
//! joins the outputs in chunk order into the final file. The chunk plan depends only on
//! the inputs and parameters, never on how many peers there are, and `run` is a pure
//! function of its bytes: that is what makes a job's output byte-identical however many
//! peers computed it.
//!
//! The grid only ever calls the kernel-agnostic entries here: [`validate`] and
//! [`input_limits`] before a worker fetches anything, [`run_cancellable`] (or [`run`]) to
//! compute, and [`max_result_len`] and [`check_result`] on the submitter before it
//! fetches and accepts a worker's result.

mod cancel;
pub mod change;
pub mod noop;
pub mod video;
pub mod wasm;

use idlegrid_protocol::{limits, TaskSpec};

pub use cancel::{Cancel, Cancelled};

/// Why a kernel refused or failed a chunk. Every variant is an expected condition a
/// hostile or mistaken peer can cause, so none of them panics.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error("unknown kernel {name:?}")]
    UnknownKernel { name: String },
    #[error("kernel {name} version {got} is not the version this peer runs ({want})")]
    WrongVersion { name: String, got: u32, want: u32 },
    #[error("invalid parameters: {0}")]
    InvalidParams(String),
    #[error("invalid input: {0}")]
    InvalidInput(String),
    #[error("{0}")]
    Failed(String),
    /// Its [`Cancel`] flag was set while it ran: no output, by request.
    #[error("stopped: the chunk was cancelled while it ran")]
    Cancelled,
    /// A user's program (the `wasm` kernel) failed: it trapped, ran out of fuel or
    /// exited non-zero. Deterministic: an honest peer fails the same way.
    #[error("the program failed: {0}")]
    Program(String),
    /// A watchdog stopped the chunk on this machine: no verdict on the chunk, which
    /// another peer may finish. Its message starts with [`TIMED_OUT`].
    #[error("timed out: {0}")]
    TimedOut(String),
}

/// How the message of [`KernelError::TimedOut`] starts, so a submitter can tell a
/// worker's watchdog from a failure of the chunk.
pub const TIMED_OUT: &str = "timed out: ";

/// The kernels this build runs, as (name, version): what a worker advertises.
pub fn supported() -> Vec<(String, u32)> {
    Kernel::ALL
        .iter()
        .map(|k| (k.name().to_string(), k.version()))
        .collect()
}

/// Whether a chunk may spread over the rayon pool it runs on. The output is the same
/// either way; only the speed differs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Spread {
    /// Over the pool's threads where the kernel can: for a chunk that has the pool to
    /// itself (the last chunk of a job, a job of one chunk).
    #[default]
    Pool,
    /// On the calling thread only, for a chunk that runs beside others keeping the
    /// pool's other threads busy: a kernel then takes its most cache-friendly order
    /// (the change engine's wavefront), which also leaves the memory bus to the others.
    OneThread,
}

impl Spread {
    /// For the chunks of a job run `chunks` at once on a pool of `threads` (`--local`):
    /// one thread each when there are enough to keep every thread busy.
    pub fn for_chunks(chunks: usize, threads: usize) -> Spread {
        if chunks >= threads.max(1) {
            Spread::OneThread
        } else {
            Spread::Pool
        }
    }
}

/// A kernel this build runs. A chunk names its kernel by a string on the wire; it is
/// turned into this once ([`Kernel::from_name`]) and everything after steers by it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kernel {
    Change,
    Video,
    Noop,
    Wasm,
}

impl Kernel {
    /// Every kernel, in the order a worker advertises them.
    pub const ALL: [Kernel; 4] = [Kernel::Change, Kernel::Video, Kernel::Noop, Kernel::Wasm];

    /// The kernel's name in a [`TaskSpec`].
    pub fn name(self) -> &'static str {
        match self {
            Kernel::Change => change::KERNEL,
            Kernel::Video => video::NAME,
            Kernel::Noop => noop::NAME,
            Kernel::Wasm => wasm::NAME,
        }
    }

    /// The version of the kernel this build runs: a chunk of another version is refused.
    pub fn version(self) -> u32 {
        match self {
            Kernel::Change => change::VERSION,
            Kernel::Video => video::VERSION,
            Kernel::Noop => noop::VERSION,
            Kernel::Wasm => wasm::VERSION,
        }
    }

    /// The kernel a [`TaskSpec`] names, if this build has it.
    pub fn from_name(name: &str) -> Option<Kernel> {
        Kernel::ALL.into_iter().find(|k| k.name() == name)
    }

    /// Checks params and declared input lengths before any input is fetched.
    fn validate(self, spec: &TaskSpec) -> Result<(), KernelError> {
        match self {
            Kernel::Change => change::validate(spec),
            Kernel::Video => video::validate(spec),
            Kernel::Noop => noop::validate(spec),
            Kernel::Wasm => wasm::validate(spec),
        }
    }

    /// One chunk and its inputs to the output bytes.
    fn run(
        self,
        spec: &TaskSpec,
        inputs: &[&[u8]],
        spread: Spread,
        cancel: &Cancel,
    ) -> Result<Vec<u8>, KernelError> {
        match self {
            Kernel::Change => change::worker::run_band(spec, inputs, spread, cancel),
            Kernel::Video => video::run(spec, inputs, cancel),
            Kernel::Noop => noop::run(spec, inputs),
            Kernel::Wasm => wasm::run(spec, inputs, spread, cancel),
        }
    }

    fn input_limits(self, spec: &TaskSpec) -> Result<Vec<u64>, KernelError> {
        match self {
            Kernel::Change => change::input_limits(spec),
            Kernel::Video => video::input_limits(spec),
            Kernel::Noop => Ok(vec![noop::MAX_INPUT; spec.inputs.len()]),
            Kernel::Wasm => wasm::input_limits(spec),
        }
    }

    fn max_result_len(self, spec: &TaskSpec) -> Result<u64, KernelError> {
        match self {
            Kernel::Change => change::max_result_len(spec),
            Kernel::Video => video::max_result_len(spec),
            Kernel::Noop => Ok(noop::RESULT_LEN),
            Kernel::Wasm => wasm::max_result_len(spec),
        }
    }

    fn check_result(self, spec: &TaskSpec, result: &[u8]) -> Result<(), String> {
        match self {
            Kernel::Change => change::check_result(spec, result),
            Kernel::Video => video::check_result(spec, result),
            Kernel::Noop => noop::check_result(result),
            Kernel::Wasm => wasm::check_result(spec, result),
        }
    }
}

fn lookup(spec: &TaskSpec) -> Result<Kernel, KernelError> {
    let kernel = Kernel::from_name(&spec.kernel).ok_or_else(|| KernelError::UnknownKernel {
        name: spec.kernel.clone(),
    })?;
    if kernel.version() != spec.kernel_version {
        return Err(KernelError::WrongVersion {
            name: spec.kernel.clone(),
            got: spec.kernel_version,
            want: kernel.version(),
        });
    }
    Ok(kernel)
}

/// Checks that this peer can run `spec` and that its parameters are sane (dimensions,
/// counts, ranges), before any work or any input fetch starts.
pub fn validate(spec: &TaskSpec) -> Result<(), KernelError> {
    spec.validate()
        .map_err(|e| KernelError::InvalidParams(e.to_string()))?;
    lookup(spec)?.validate(spec)
}

/// Runs one chunk on its input blobs (in `spec.inputs` order). Deterministic: the same
/// spec and input bytes give the same output bytes on every machine. The blobs may be
/// owned or shared (a worker hands the same cached input to neighbouring chunks).
pub fn run<B: AsRef<[u8]>>(spec: &TaskSpec, inputs: &[B]) -> Result<Vec<u8>, KernelError> {
    run_with(spec, inputs, Spread::Pool)
}

/// [`run`], saying whether the chunk may spread over the pool (see [`Spread`]).
pub fn run_with<B: AsRef<[u8]>>(
    spec: &TaskSpec,
    inputs: &[B],
    spread: Spread,
) -> Result<Vec<u8>, KernelError> {
    run_cancellable(spec, inputs, spread, &Cancel::new())
}

/// [`run_with`], stopping with [`KernelError::Cancelled`] soon after `cancel` is set
/// (between sweeps, between frames). Output bytes are those of [`run`] whenever it
/// finishes.
pub fn run_cancellable<B: AsRef<[u8]>>(
    spec: &TaskSpec,
    inputs: &[B],
    spread: Spread,
    cancel: &Cancel,
) -> Result<Vec<u8>, KernelError> {
    validate(spec)?;
    if inputs.len() != spec.inputs.len() {
        return Err(KernelError::InvalidInput(format!(
            "{} input blobs given, the spec names {}",
            inputs.len(),
            spec.inputs.len()
        )));
    }
    let inputs: Vec<&[u8]> = inputs.iter().map(AsRef::as_ref).collect();
    lookup(spec)?.run(spec, &inputs, spread, cancel)
}

/// Whether `spec`'s kernel spreads a chunk over a rayon pool when given
/// [`Spread::Pool`] (only the change engine does): the others run on the calling thread
/// whatever the spread, so a caller need not hand them to a pool.
pub fn spreads(spec: &TaskSpec) -> bool {
    Kernel::from_name(&spec.kernel) == Some(Kernel::Change)
}

/// The most bytes each input of `spec` (in `spec.inputs` order) can have in a chunk
/// its kernel would run, from the chunk's own parameters: a worker refuses an input
/// announced larger before fetching a byte of it. Exact where the parameters say the
/// size (a change band's pieces, a video chunk's declared frames), a bound otherwise.
/// Fails like [`validate`] on a chunk this peer would refuse.
pub fn input_limits(spec: &TaskSpec) -> Result<Vec<u64>, KernelError> {
    validate(spec)?;
    let kernel = lookup(spec)?;
    let limits = kernel.input_limits(spec)?;
    if limits.len() != spec.inputs.len() {
        return Err(KernelError::InvalidParams(format!(
            "{} input limits for {} inputs",
            limits.len(),
            spec.inputs.len()
        )));
    }
    Ok(limits
        .into_iter()
        .map(|limit| limit.min(limits::MAX_BLOB))
        .collect())
}

/// The input limit of input `index` of `spec` (see [`input_limits`]); `None` if the
/// chunk would be refused or has no such input.
pub fn input_limit(spec: &TaskSpec, index: usize) -> Option<u64> {
    input_limits(spec).ok()?.get(index).copied()
}

/// The most bytes a correct result of `spec` can have: the submitter refuses a
/// worker's claim of a longer one before fetching or allocating it. 0 for a chunk this
/// peer would refuse to run (no result of it is acceptable).
pub fn max_result_len(spec: &TaskSpec) -> u64 {
    validate(spec)
        .and_then(|()| lookup(spec))
        .and_then(|kernel| kernel.max_result_len(spec))
        .map_or(0, |len| len.min(limits::MAX_BLOB))
}

/// Whether `result` is well-formed for `spec` (a change band's exact packed length, a
/// video segment's SPS, PPS, IDR and frame count): checked by the submitter on every
/// result a worker returns, before it is believed. The message says what is wrong.
pub fn check_result(spec: &TaskSpec, result: &[u8]) -> Result<(), String> {
    let kernel = validate(spec)
        .and_then(|()| lookup(spec))
        .map_err(|e| e.to_string())?;
    let max = max_result_len(spec);
    if result.len() as u64 > max {
        return Err(format!(
            "{} bytes, over the {max} bytes a result of this chunk can have",
            result.len()
        ));
    }
    kernel.check_result(spec, result)
}
