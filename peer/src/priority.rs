//! Lowest OS scheduling priority for compute threads (docs/lending.md:
//! the owner never feels them). On Linux a thread gets `SCHED_IDLE`, which runs only
//! when nothing else wants the CPU; if that is refused it falls back to nice 19.
//! Elsewhere this does nothing.

/// Lowers the calling thread's priority as far as the OS allows. Best effort: a
/// refusal leaves the thread at normal priority and is logged.
pub fn lower_current_thread() {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: plain syscalls on the calling thread with a valid, zeroed param.
        let ok = unsafe {
            let param = libc::sched_param { sched_priority: 0 };
            libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) == 0
        };
        if !ok {
            // SAFETY: setpriority on the calling thread (tid 0 = self).
            let niced = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, 19) == 0 };
            if !niced {
                tracing::warn!("could not lower the priority of a compute thread");
            }
        }
    }
}
