//! Stopping a chunk while its kernel runs. A [`Cancel`] is a shared flag: the worker
//! that handed the chunk to the kernel sets it (its submitter no longer wants the
//! chunk, or the owner's policy took the machine back), and the kernel checks it at
//! points where stopping costs nothing — between the change kernel's sweeps, between the
//! video kernel's frames — and returns [`KernelError::Cancelled`](crate::KernelError).
//! Checking never changes a bit of the output: a kernel either finishes as it would
//! have, or returns no output at all.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// A cancellation flag shared between a kernel run and whoever may stop it. Cloning
/// shares it; the default is a flag nobody has set.
#[derive(Clone, Debug, Default)]
pub struct Cancel(Arc<AtomicBool>);

impl Cancel {
    /// A flag nobody has set.
    pub fn new() -> Cancel {
        Cancel::default()
    }

    /// Asks the kernel running with this flag to stop at its next check.
    pub fn cancel(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    /// `Err(Cancelled)` once the flag is set: the kernel's check point.
    pub(crate) fn check(&self) -> Result<(), Cancelled> {
        if self.is_cancelled() {
            Err(Cancelled)
        } else {
            Ok(())
        }
    }
}

/// A kernel stopped because its [`Cancel`] was set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cancelled;

impl From<Cancelled> for crate::KernelError {
    fn from(_: Cancelled) -> Self {
        crate::KernelError::Cancelled
    }
}
