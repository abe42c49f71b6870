//! What the machine's owner allows of users' WebAssembly programs (`[kernels]` in the
//! config, `--no-wasm`, `--wasm-memory`, `--wasm-fuel`, `--wasm-timeout` on `serve`):
//! whether this peer runs them at all, the most memory and fuel one run may ask for,
//! and how long one run may take here. A chunk asking for more memory or fuel is
//! refused before anything is fetched (its submitter gives it to another peer); the
//! budgets themselves are the chunk's, so every peer that runs it stops it at the same
//! point. The wall-clock watchdog is this machine's: a run past it stops with no result
//! and its chunk goes to another peer.

use std::time::Duration;

use idlegrid_kernels::wasm::{self, WasmParams};
use idlegrid_protocol::TaskSpec;

/// Default cap on one run's linear memory: 1 GiB.
pub const DEFAULT_MAX_MEMORY: u64 = 1 << 30;
/// Default cap on one run's fuel: 10^13 instructions, an hour or so of compute.
pub const DEFAULT_MAX_FUEL: u64 = 10_000_000_000_000;

/// Default watchdog of one run on this machine: 10 minutes.
pub const DEFAULT_TIMEOUT: Duration = wasm::DEFAULT_WATCHDOG;

/// The owner's rules for the `wasm` kernel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WasmCaps {
    /// Run users' WebAssembly programs for others. Default on: they run in a sandbox
    /// with no files, network, clock or environment of this machine.
    pub enabled: bool,
    /// Most linear memory one run may ask for. Default [`DEFAULT_MAX_MEMORY`].
    pub max_memory: u64,
    /// Most fuel one run may ask for. Default [`DEFAULT_MAX_FUEL`].
    pub max_fuel: u64,
    /// Longest one run may take on this machine, wall clock. Default
    /// [`DEFAULT_TIMEOUT`].
    pub timeout: Duration,
}

impl Default for WasmCaps {
    fn default() -> Self {
        WasmCaps {
            enabled: true,
            max_memory: DEFAULT_MAX_MEMORY,
            max_fuel: DEFAULT_MAX_FUEL,
            timeout: DEFAULT_TIMEOUT,
        }
    }
}

impl WasmCaps {
    /// Why this peer refuses `spec` (a `wasm` chunk), if it does.
    pub fn refusal(&self, spec: &TaskSpec) -> Option<String> {
        if spec.kernel != wasm::NAME {
            return None;
        }
        if !self.enabled {
            return Some("this peer's owner does not run WebAssembly programs".into());
        }
        let params = WasmParams::from_spec(spec).ok()?;
        if params.memory > self.max_memory {
            return Some(format!(
                "the chunk asks for {} MiB of memory per run; this peer lends at most {} MiB",
                params.memory >> 20,
                self.max_memory >> 20
            ));
        }
        if params.fuel > self.max_fuel {
            return Some(format!(
                "the chunk asks for {} fuel per run; this peer lends at most {}",
                params.fuel, self.max_fuel
            ));
        }
        None
    }

    /// One line for `serve`'s banner and `status`.
    pub fn describe(&self) -> String {
        if self.enabled {
            format!(
                "WebAssembly programs: yes, sandboxed; at most {} MiB of memory, {} fuel and {} s per run",
                self.max_memory >> 20,
                self.max_fuel,
                self.timeout.as_secs()
            )
        } else {
            "WebAssembly programs: no".into()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use idlegrid_kernels::wasm::plan::{plan, PlannedRun};

    #[test]
    fn caps_refuse_what_is_over_them() {
        let module = b"\0asm\x01\0\0\0".to_vec();
        let budgets = WasmParams {
            memory: 2 << 30,
            ..WasmParams::default()
        };
        let runs = [PlannedRun {
            args: vec![],
            stdin: None,
        }];
        let spec = plan(&module, &budgets, &runs, 1).unwrap().chunks[0].clone();
        let caps = WasmCaps::default();
        assert!(caps.refusal(&spec).unwrap().contains("2048 MiB"));
        let roomy = WasmCaps {
            max_memory: 4 << 30,
            ..caps.clone()
        };
        assert_eq!(roomy.refusal(&spec), None);
        let off = WasmCaps {
            enabled: false,
            ..roomy
        };
        assert!(off.refusal(&spec).is_some());
        assert!(off.describe().ends_with("no"));
    }
}
