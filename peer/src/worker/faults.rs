//! Misbehaviour on request, for the tests that need a slow or lying worker.
//!
//! [`FaultInjection`] exists only in builds with the `fault-injection` cargo feature
//! (the integration tests and the fault suite enable it) and reaches a worker only
//! through `Node::start_with_faults`, never through [`WorkerConfig`](super::WorkerConfig).
//! The compute pipeline calls the hooks of [`FaultHook`] around each kernel run, and the
//! blob service before each piece it serves: in a normal build the hook has no fields
//! and every call is empty, so the worker checks no test flag at all.

#[cfg(feature = "fault-injection")]
pub use armed::{FaultHook, FaultInjection};
#[cfg(not(feature = "fault-injection"))]
pub use unarmed::FaultHook;

#[cfg(not(feature = "fault-injection"))]
mod unarmed {
    /// The pipeline's hooks in a normal build: they do nothing.
    #[derive(Clone, Debug)]
    pub struct FaultHook;

    impl FaultHook {
        pub fn none() -> FaultHook {
            FaultHook
        }

        pub async fn before_run(&self) -> Result<(), String> {
            Ok(())
        }

        pub fn after_run(&self, _output: &mut Vec<u8>) {}

        pub async fn before_piece(&self, _offset: u64) {}
    }
}

#[cfg(feature = "fault-injection")]
mod armed {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    /// How a test worker misbehaves. The default is an honest worker at full speed.
    #[doc(hidden)]
    #[derive(Clone, Debug, Default)]
    pub struct FaultInjection {
        /// Return wrong (but self-consistent) results.
        pub lie: bool,
        /// Sleep this long before each chunk (a slow machine).
        pub delay: Duration,
        /// The delay starts with this chunk (0 = the first): a worker that runs its
        /// benchmark at full speed and then slows down.
        pub delay_from_chunk: u64,
        /// Return results of this many bytes instead (a worker claiming a result its
        /// chunk cannot have, or a malformed one), self-consistent like a lie.
        pub result_len: Option<usize>,
        /// Hold every blob piece after a blob's first this long before serving it (a
        /// slow link), so the blobs a peer fetches from here are all in flight at once.
        pub piece_delay: Duration,
        /// Fail every chunk from this one on (0 = the first) as a kernel error would: a
        /// fake identity that passes its benchmark and then fails whatever it gets.
        pub fail_from_chunk: Option<u64>,
    }

    /// The pipeline's hooks: `None` on a peer started without faults.
    #[derive(Clone, Debug)]
    pub struct FaultHook(Option<Arc<Armed>>);

    #[derive(Debug)]
    struct Armed {
        faults: FaultInjection,
        /// Chunks started, to know when the delay begins.
        started: AtomicU64,
    }

    impl From<FaultInjection> for FaultHook {
        fn from(faults: FaultInjection) -> Self {
            FaultHook(Some(Arc::new(Armed {
                faults,
                started: AtomicU64::new(0),
            })))
        }
    }

    impl FaultHook {
        /// The hook of a worker that behaves.
        pub fn none() -> FaultHook {
            FaultHook(None)
        }

        /// Holds a chunk that is about to run for the configured delay, or fails it.
        pub async fn before_run(&self) -> Result<(), String> {
            let Some(armed) = &self.0 else { return Ok(()) };
            let n = armed.started.fetch_add(1, Ordering::Relaxed);
            let faults = &armed.faults;
            if faults.fail_from_chunk.is_some_and(|from| n >= from) {
                return Err("injected failure".to_string());
            }
            // (A zero sleep would still wait for the timer's next tick, ~1 ms.)
            if n >= faults.delay_from_chunk && !faults.delay.is_zero() {
                tokio::time::sleep(faults.delay).await;
            }
            Ok(())
        }

        /// Spoils a finished chunk's output when the worker is told to lie.
        pub fn after_run(&self, output: &mut Vec<u8>) {
            let Some(armed) = &self.0 else { return };
            if let Some(len) = armed.faults.result_len {
                output.resize(len, 0x5a);
            }
            if !armed.faults.lie {
                return;
            }
            // A consistent lie: the hash matches the wrong bytes, so only replication
            // or a spot check can catch it.
            if let Some(byte) = output.last_mut() {
                *byte ^= 0x5a;
            } else {
                output.push(0x5a);
            }
        }

        /// Holds a blob piece past the first for the configured delay.
        pub async fn before_piece(&self, offset: u64) {
            let Some(armed) = &self.0 else { return };
            if offset > 0 && !armed.faults.piece_delay.is_zero() {
                tokio::time::sleep(armed.faults.piece_delay).await;
            }
        }
    }
}
