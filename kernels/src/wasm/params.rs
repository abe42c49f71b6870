//! What a `wasm` chunk carries in its [`TaskSpec`]'s `params` (CBOR), and every check a
//! worker makes on it before fetching a byte.
//!
//! A chunk is one module (input 0) run once per [`Item`]: each item has its own
//! arguments and, optionally, one of the chunk's other inputs as its stdin. The params
//! also pin the runtime ([`RUNTIME_ID`]: a worker with another runtime or determinism
//! setting refuses the chunk) and every budget that can change the bytes: fuel and
//! memory. The wall-clock watchdog is not here: it never shapes a result, so it is each
//! machine's own ([`super::set_watchdog`]) and a rerun with another `--timeout` has the
//! same chunk ids and reuses every verified result.

use idlegrid_protocol::{limits, TaskSpec};
use serde::{Deserialize, Serialize};

use super::RUNTIME_ID;
use crate::KernelError;

/// Largest module: big enough for a C++ or Rust program with its libc, small enough
/// that compiling it stays within seconds. Checked before the module is fetched.
pub const MAX_MODULE: u64 = 64 * 1024 * 1024;
/// Largest stdin of one item.
pub const MAX_STDIN: u64 = 512 * 1024 * 1024;
/// Most module runs in one chunk (`--batch`).
pub const MAX_ITEMS: usize = 4096;
/// Most arguments of one run (argv[0] included).
pub const MAX_ARGS: usize = 1024;
/// Most environment variables of one run.
pub const MAX_ENV: usize = 256;
/// Largest linear memory a chunk may ask for: all that wasm32 can address.
pub const MAX_MEMORY: u64 = 4 * 1024 * 1024 * 1024;
/// Smallest memory a chunk may ask for: one wasm page.
pub const MIN_MEMORY: u64 = 64 * 1024;
/// Largest fuel of one run: a few hours of compute on a fast core.
pub const MAX_FUEL: u64 = 100_000_000_000_000;
/// Largest stdout of one run.
pub const MAX_OUTPUT: u64 = 512 * 1024 * 1024;

/// Default fuel of one run (`--fuel`): about 10^12 WebAssembly instructions, minutes
/// of compute.
pub const DEFAULT_FUEL: u64 = 1_000_000_000_000;
/// Default linear memory cap of one run (`--memory`).
pub const DEFAULT_MEMORY: u64 = 512 * 1024 * 1024;
/// Default stdout cap of one run.
pub const DEFAULT_MAX_OUTPUT: u64 = 256 * 1024 * 1024;

/// One run of the module in a chunk.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Item {
    /// argv[1..] (argv[0] is [`WasmParams::program`]).
    pub args: Vec<String>,
    /// Which of the chunk's inputs is this run's stdin (an index ≥ 1 into
    /// `spec.inputs`); none: an empty stdin.
    pub stdin: Option<u32>,
}

/// A `wasm` chunk's parameters.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WasmParams {
    /// The runtime and determinism settings the chunk was made for ([`RUNTIME_ID`]).
    pub runtime: String,
    /// argv[0] of every run: the module's file name, as a program sees its own name.
    pub program: String,
    /// Declared size of each input blob, in `spec.inputs` order (input 0: the module).
    pub input_lens: Vec<u64>,
    /// Environment of every run, as `NAME=value` pairs: nothing else of the host's.
    pub env: Vec<(String, String)>,
    /// Fuel of one run: running out is a failure of the program, the same everywhere.
    pub fuel: u64,
    /// Linear-memory cap of one run, in bytes.
    pub memory: u64,
    /// Stdout cap of one run, in bytes: more is a failure of the program.
    pub max_output: u64,
    /// The runs, in output order.
    pub items: Vec<Item>,
}

impl WasmParams {
    /// Decodes and validates a chunk's params against its inputs.
    pub fn from_spec(spec: &TaskSpec) -> Result<WasmParams, KernelError> {
        let params: WasmParams =
            idlegrid_protocol::decode(&spec.params, limits::MAX_TASK_PARAMS)
                .map_err(|e| KernelError::InvalidParams(format!("undecodable wasm params: {e}")))?;
        params.validate(spec.inputs.len())?;
        Ok(params)
    }

    /// The bytes that go into [`TaskSpec::params`].
    pub fn to_bytes(&self) -> Result<Vec<u8>, KernelError> {
        idlegrid_protocol::encode(self).map_err(|e| KernelError::InvalidParams(e.to_string()))
    }

    /// Every check a worker makes before it fetches or compiles anything.
    pub fn validate(&self, inputs: usize) -> Result<(), KernelError> {
        let bad = |msg: String| Err(KernelError::InvalidParams(msg));
        if self.runtime != RUNTIME_ID {
            return bad(format!(
                "chunk is for wasm runtime {:?}, this peer runs {RUNTIME_ID:?}",
                self.runtime
            ));
        }
        if inputs == 0 || self.input_lens.len() != inputs {
            return bad(format!(
                "{} declared input sizes for {inputs} inputs (the module is input 0)",
                self.input_lens.len()
            ));
        }
        if self.input_lens[0] > MAX_MODULE {
            return bad(format!(
                "a module of {} bytes, over the {MAX_MODULE} bytes a peer compiles",
                self.input_lens[0]
            ));
        }
        if let Some(len) = self.input_lens[1..].iter().find(|&&len| len > MAX_STDIN) {
            return bad(format!("an input of {len} bytes, over {MAX_STDIN}"));
        }
        if self.items.is_empty() || self.items.len() > MAX_ITEMS {
            return bad(format!(
                "{} runs in one chunk (1..={MAX_ITEMS} allowed)",
                self.items.len()
            ));
        }
        for item in &self.items {
            if item.args.len() + 1 > MAX_ARGS {
                return bad(format!("{} arguments, over {MAX_ARGS}", item.args.len()));
            }
            if let Some(stdin) = item.stdin {
                if stdin == 0 || stdin as usize >= inputs {
                    return bad(format!("stdin is input {stdin}, the chunk has {inputs}"));
                }
            }
            if item.args.iter().any(|a| a.contains('\0')) {
                return bad("an argument contains a NUL byte".into());
            }
        }
        if self.env.len() > MAX_ENV {
            return bad(format!(
                "{} environment variables, over {MAX_ENV}",
                self.env.len()
            ));
        }
        if self
            .env
            .iter()
            .any(|(k, v)| k.is_empty() || k.contains(['=', '\0']) || v.contains('\0'))
        {
            return bad("an environment variable name is empty or holds '=' or NUL".into());
        }
        if self.program.contains('\0') {
            return bad("the program name contains a NUL byte".into());
        }
        if self.fuel == 0 || self.fuel > MAX_FUEL {
            return bad(format!("fuel {} (1..={MAX_FUEL} allowed)", self.fuel));
        }
        if !(MIN_MEMORY..=MAX_MEMORY).contains(&self.memory) {
            return bad(format!(
                "memory {} bytes ({MIN_MEMORY}..={MAX_MEMORY} allowed)",
                self.memory
            ));
        }
        if self.max_output > MAX_OUTPUT {
            return bad(format!(
                "an output cap of {} bytes, over {MAX_OUTPUT}",
                self.max_output
            ));
        }
        Ok(())
    }

    /// The most bytes the chunk's result can have: each run's output with its 8-byte
    /// length.
    pub fn max_result_len(&self) -> u64 {
        (self.items.len() as u64).saturating_mul(self.max_output.saturating_add(8))
    }
}

impl Default for WasmParams {
    /// Defaults of every budget, for one run with no arguments and no stdin: a
    /// starting point for a planner, which fills in the inputs and runs.
    fn default() -> Self {
        WasmParams {
            runtime: RUNTIME_ID.to_string(),
            program: "kernel.wasm".into(),
            input_lens: Vec::new(),
            env: Vec::new(),
            fuel: DEFAULT_FUEL,
            memory: DEFAULT_MEMORY,
            max_output: DEFAULT_MAX_OUTPUT,
            items: vec![Item {
                args: Vec::new(),
                stdin: None,
            }],
        }
    }
}
