//! The one wasmtime engine of this process, its determinism settings, and the cache of
//! compiled modules.
//!
//! The engine is built once ([`runtime`]) with the settings that [`super::RUNTIME_ID`]
//! names: Cranelift, relaxed SIMD off, no threads (the build has no threads support), a pinned maximum wasm stack, fuel metering, and epoch
//! interruption ticked by one background thread (the watchdog and the cancel check;
//! never a result).
//!
//! A module is compiled at most once per process and per machine: [`Runtime::module`]
//! looks in memory, then in the cache folder ([`set_cache_dir`]: the worker's data
//! dir), keyed by (module hash, the engine's `precompile_compatibility_hash`), and only
//! then compiles, on a thread of its own with a time cap, the module as [`super::nan`]
//! rewrites it (NaNs canonical wherever their bits can be seen). Cached artifacts are only
//! ever written by this machine's own compiler: nothing compiled comes from a peer.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use wasmtime::{Config, Engine, InstancePre, Linker, Module, OptLevel, Strategy};

use super::wasi::{self, Host};
use crate::KernelError;

/// Maximum stack of wasm code: the same on every peer, so a deep recursion overflows
/// (a trap) at the same depth everywhere on one architecture.
pub const MAX_WASM_STACK: usize = 1024 * 1024;
/// How often the watchdog thread ticks the engine's epoch; each tick lets a running
/// module check its cancel flag and its timeout.
pub const EPOCH_TICK: Duration = Duration::from_millis(20);
/// Longest a module may take to compile before its chunk is given up (the compile
/// finishes in the background and fills the cache).
pub const COMPILE_CAP: Duration = Duration::from_secs(120);
/// Compiled modules kept in memory.
const IN_MEMORY: usize = 32;

/// A compiled module, ready to instantiate with the WASI host linked.
pub type Compiled = InstancePre<Host>;

/// A module's compiled form once made; its lock makes a second chunk of the module
/// wait for the first one's compile instead of compiling too.
type Slot = Arc<Mutex<Option<Arc<Compiled>>>>;

/// The slots by module hash, and their hashes oldest first (to evict).
type Modules = (HashMap<[u8; 32], Slot>, Vec<[u8; 32]>);

/// The engine, the linker with the WASI host, and the compiled modules.
pub struct Runtime {
    pub engine: Engine,
    linker: Linker<Host>,
    /// Compatibility hash of the engine: the cache key's second half.
    compat: String,
    /// Per module hash: its compiled form once made. The inner lock makes a second
    /// chunk of a module wait for the first one's compile instead of compiling too.
    modules: Mutex<Modules>,
}

static RUNTIME: OnceLock<Result<Runtime, String>> = OnceLock::new();
static CACHE_DIR: OnceLock<PathBuf> = OnceLock::new();

/// Where compiled modules are cached on disk (the first call wins; without it they are
/// cached in memory only).
pub fn set_cache_dir(dir: PathBuf) {
    let _ = CACHE_DIR.set(dir);
}

/// The process's runtime, built on first use.
pub fn runtime() -> Result<&'static Runtime, KernelError> {
    RUNTIME
        .get_or_init(Runtime::new)
        .as_ref()
        .map_err(|e| KernelError::Failed(format!("cannot start the wasm runtime: {e}")))
}

/// The engine settings that make a module's output a function of its bytes (with the
/// module rewritten by [`super::nan`]: Cranelift's own NaN canonicalisation, after every
/// float operation, stays off).
pub fn config() -> Config {
    let mut config = Config::new();
    config
        .strategy(Strategy::Cranelift)
        .cranelift_opt_level(OptLevel::Speed)
        .cranelift_nan_canonicalization(false)
        .wasm_relaxed_simd(false)
        .relaxed_simd_deterministic(true)
        .max_wasm_stack(MAX_WASM_STACK)
        .consume_fuel(true)
        .epoch_interruption(true)
        .parallel_compilation(true);
    config
}

impl Runtime {
    fn new() -> Result<Runtime, String> {
        let engine = Engine::new(&config()).map_err(|e| e.to_string())?;
        let mut linker = Linker::new(&engine);
        wasi::define(&mut linker).map_err(|e| e.to_string())?;
        let mut hasher = std::hash::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        // The rewrite is not an engine setting: its version is in RUNTIME_ID.
        super::RUNTIME_ID.hash(&mut hasher);
        let compat = format!("{:016x}", hasher.finish());
        let ticker = engine.weak();
        std::thread::Builder::new()
            .name("idlegrid-wasm-epoch".into())
            .spawn(move || {
                while let Some(engine) = ticker.upgrade() {
                    engine.increment_epoch();
                    drop(engine);
                    std::thread::sleep(EPOCH_TICK);
                }
            })
            .map_err(|e| format!("cannot start the watchdog thread: {e}"))?;
        Ok(Runtime {
            engine,
            linker,
            compat,
            modules: Mutex::new((HashMap::new(), Vec::new())),
        })
    }

    /// `bytes` (a module whose blake3 is `hash`) compiled and linked: from memory, the
    /// cache folder, or compiled now.
    pub fn module(
        &'static self,
        hash: [u8; 32],
        bytes: &[u8],
    ) -> Result<Arc<Compiled>, KernelError> {
        let slot = {
            let mut guard = self.modules.lock().unwrap_or_else(|e| e.into_inner());
            let (map, order) = &mut *guard;
            if let Some(slot) = map.get(&hash) {
                slot.clone()
            } else {
                if order.len() >= IN_MEMORY {
                    let oldest = order.remove(0);
                    map.remove(&oldest);
                }
                order.push(hash);
                map.entry(hash).or_default().clone()
            }
        };
        let mut slot = slot.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(compiled) = &*slot {
            return Ok(compiled.clone());
        }
        let module = match self.load_cached(&hash) {
            Some(module) => module,
            None => self.compile(hash, bytes)?,
        };
        let compiled = Arc::new(self.linker.instantiate_pre(&module).map_err(|e| {
            KernelError::InvalidInput(format!("the module cannot be linked: {e:#}"))
        })?);
        *slot = Some(compiled.clone());
        Ok(compiled)
    }

    fn cache_path(&self, hash: &[u8; 32]) -> Option<PathBuf> {
        let hex: String = hash.iter().map(|b| format!("{b:02x}")).collect();
        CACHE_DIR
            .get()
            .map(|dir| dir.join(format!("{hex}-{}.cwasm", self.compat)))
    }

    fn load_cached(&self, hash: &[u8; 32]) -> Option<Module> {
        let path = self.cache_path(hash)?;
        if !path.is_file() {
            return None;
        }
        // SAFETY: the file is in this peer's own data dir, written (atomically, by
        // rename) only by `store_cached` from this engine's own compile of the module
        // with this hash; wasmtime checks its header against the engine's version and
        // settings and refuses a mismatch. Nothing a peer sends is ever written there.
        match unsafe { Module::deserialize_file(&self.engine, &path) } {
            Ok(module) => Some(module),
            Err(e) => {
                tracing::warn!("ignoring the compiled module {}: {e}", path.display());
                None
            }
        }
    }

    /// Validates, then compiles on a thread of its own, waiting at most
    /// [`COMPILE_CAP`]. A malformed module is refused before any compiling.
    fn compile(&'static self, hash: [u8; 32], bytes: &[u8]) -> Result<Module, KernelError> {
        check_module(&self.engine, bytes)?;
        let (tx, rx) = std::sync::mpsc::channel();
        let bytes = super::nan::canonicalise(bytes)?;
        let path = self.cache_path(&hash);
        std::thread::Builder::new()
            .name("idlegrid-wasm-compile".into())
            .spawn(move || {
                let result = Module::from_binary(&self.engine, &bytes);
                if let (Ok(module), Some(path)) = (&result, &path) {
                    store_cached(module, path);
                }
                let _ = tx.send(result.map_err(|e| e.to_string()));
            })
            .map_err(|e| KernelError::Failed(format!("cannot start a compile thread: {e}")))?;
        match rx.recv_timeout(COMPILE_CAP) {
            Ok(Ok(module)) => Ok(module),
            Ok(Err(e)) => Err(KernelError::InvalidInput(format!(
                "the module does not compile: {e}"
            ))),
            Err(_) => Err(KernelError::Failed(format!(
                "the module took more than {} s to compile",
                COMPILE_CAP.as_secs()
            ))),
        }
    }
}

/// Refuses what is not a valid WebAssembly module, before compiling: the error says
/// what is wrong (not wasm at all, a component, an invalid body).
pub fn check_module(engine: &Engine, bytes: &[u8]) -> Result<(), KernelError> {
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        return Err(KernelError::InvalidInput(
            "the module is not WebAssembly (no \\0asm header)".into(),
        ));
    }
    if bytes[4..8] != [1, 0, 0, 0] {
        return Err(KernelError::InvalidInput(
            "not a core WebAssembly module of version 1 (a component? build for \
             wasm32-wasip1, not wasip2)"
                .into(),
        ));
    }
    Module::validate(engine, bytes)
        .map_err(|e| KernelError::InvalidInput(format!("the module is not valid: {e:#}")))
}

/// Writes a compiled module to the cache folder (to a temporary name, then renamed, so
/// a reader never sees half a file). Best effort: a failure only costs a recompile.
fn store_cached(module: &Module, path: &Path) {
    let Some(dir) = path.parent() else { return };
    let result = module
        .serialize()
        .map_err(|e| e.to_string())
        .and_then(|bytes| {
            std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
            let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(|e| e.to_string())?;
            std::io::Write::write_all(&mut tmp, &bytes).map_err(|e| e.to_string())?;
            tmp.persist(path).map_err(|e| e.to_string())?;
            Ok(())
        });
    if let Err(e) = result {
        tracing::warn!("cannot cache the compiled module {}: {e}", path.display());
    }
}
