//! Where chunks are computed on this machine: `cores` chunk threads, a dedicated rayon
//! pool of `cores` threads for the kernels that parallelise inside a chunk, and a
//! semaphore that bounds how many chunks run at once. The worker service and the
//! submitter's own local worker share this one path, so a chunk computes the same way
//! whoever asked for it. A chunk run with [`Executor::run_cancellable`] keeps its slot
//! until its kernel has returned, even when whoever awaited it has gone: a chunk given
//! up on stops at the kernel's next check of its [`Cancel`] flag, and only then frees
//! its core.
//!
//! Chunks start on the chunk threads, which sleep on a condition variable between
//! chunks. A rayon thread that runs out of work spins, yielding, before it sleeps: with
//! thousands of tiny chunks a second handed to the pool, its threads spent the two
//! cores' time in `sched_yield` beside the tokio threads that had the work. Only a
//! chunk that spreads ([`idlegrid_kernels::spreads`], given [`Spread::Pool`]) enters
//! the pool.

use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use idlegrid_kernels::{Cancel, KernelError, Spread};
use idlegrid_protocol::TaskSpec;
use tokio::sync::Semaphore;

#[derive(Debug, thiserror::Error)]
pub enum ExecutorError {
    #[error("cannot start {threads} compute threads: {reason}")]
    Pool { threads: usize, reason: String },
}

/// A bounded compute pool. Cloning shares it; its threads end when the last clone is
/// dropped.
#[derive(Clone)]
pub struct Executor {
    pool: Arc<rayon::ThreadPool>,
    chunks: Arc<ChunkThreads>,
    slots: Arc<Semaphore>,
    cores: usize,
}

type Job = Box<dyn FnOnce() + Send>;

/// Chunks waiting for a chunk thread, and whether the executor is gone.
#[derive(Default)]
struct Jobs {
    waiting: VecDeque<Job>,
    closed: bool,
}

#[derive(Default)]
struct JobQueue {
    jobs: Mutex<Jobs>,
    ready: Condvar,
}

impl JobQueue {
    fn lock(&self) -> MutexGuard<'_, Jobs> {
        self.jobs.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn push(&self, job: Job) {
        self.lock().waiting.push_back(job);
        self.ready.notify_one();
    }

    /// The next chunk to run; `None` once the executor is gone. Sleeps while there is
    /// none.
    fn next(&self) -> Option<Job> {
        let mut jobs = self.lock();
        loop {
            if let Some(job) = jobs.waiting.pop_front() {
                return Some(job);
            }
            if jobs.closed {
                return None;
            }
            jobs = self.ready.wait(jobs).unwrap_or_else(|e| e.into_inner());
        }
    }
}

/// The chunk threads' queue; dropping it (with the last executor clone) ends them.
struct ChunkThreads(Arc<JobQueue>);

impl Drop for ChunkThreads {
    fn drop(&mut self) {
        self.0.lock().closed = true;
        self.0.ready.notify_all();
    }
}

impl Executor {
    /// A pool of `cores` threads running at most `cores` chunks at once. With
    /// `low_priority`, its threads ask the OS for the lowest scheduling priority, so
    /// the machine's owner never feels them.
    pub fn new(cores: usize, low_priority: bool) -> Result<Executor, ExecutorError> {
        let cores = cores.max(1);
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(cores)
            .thread_name(|i| format!("idlegrid-compute-{i}"))
            .start_handler(move |_| {
                if low_priority {
                    crate::priority::lower_current_thread();
                }
            })
            .build()
            .map_err(|e| ExecutorError::Pool {
                threads: cores,
                reason: e.to_string(),
            })?;
        let queue = Arc::new(JobQueue::default());
        // Dropped (and the threads told to end) if a spawn below fails.
        let chunks = Arc::new(ChunkThreads(queue.clone()));
        for i in 0..cores {
            let queue = queue.clone();
            std::thread::Builder::new()
                .name(format!("idlegrid-chunk-{i}"))
                .spawn(move || {
                    if low_priority {
                        crate::priority::lower_current_thread();
                    }
                    while let Some(job) = queue.next() {
                        job();
                    }
                })
                .map_err(|e| ExecutorError::Pool {
                    threads: cores,
                    reason: e.to_string(),
                })?;
        }
        Ok(Executor {
            pool: Arc::new(pool),
            chunks,
            slots: Arc::new(Semaphore::new(cores)),
            cores,
        })
    }

    pub fn cores(&self) -> usize {
        self.cores
    }

    /// Chunks running right now.
    pub fn running(&self) -> usize {
        self.cores - self.slots.available_permits()
    }

    /// Waits for a free compute slot; the chunk holding it runs next. Taken before the
    /// inputs are read into memory, so waiting chunks hold no memory.
    pub async fn slot(&self) -> Result<tokio::sync::OwnedSemaphorePermit, KernelError> {
        self.slots
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| KernelError::Failed("compute pool closed".into()))
    }

    /// Runs one chunk on the pool once a slot is free.
    pub async fn run<B: AsRef<[u8]> + Send + Sync + 'static>(
        &self,
        spec: TaskSpec,
        inputs: Vec<B>,
    ) -> Result<Vec<u8>, KernelError> {
        let _slot = self.slot().await?;
        self.run_in_slot(spec, inputs).await
    }

    /// Runs one chunk on the pool; the caller holds a [`Executor::slot`].
    pub async fn run_in_slot<B: AsRef<[u8]> + Send + Sync + 'static>(
        &self,
        spec: TaskSpec,
        inputs: Vec<B>,
    ) -> Result<Vec<u8>, KernelError> {
        self.run_cancellable(spec, inputs, (), Cancel::new()).await
    }

    /// Runs one chunk on the pool, stopping it once `cancel` is set. `hold` (the
    /// chunk's slot) is dropped when the kernel returns, not when this future is: a
    /// chunk whose caller gave up keeps its core until it has stopped, so the pool is
    /// never given more chunks than it has threads.
    pub async fn run_cancellable<B: AsRef<[u8]> + Send + Sync + 'static, H: Send + 'static>(
        &self,
        spec: TaskSpec,
        inputs: Vec<B>,
        hold: H,
        cancel: Cancel,
    ) -> Result<Vec<u8>, KernelError> {
        // Onto a chunk thread, with the answer on a oneshot. A kernel must not panic;
        // if one ever does, the chunk fails instead of the process.
        // A chunk that starts beside others stays on its thread (the cores are busy
        // anyway, and its kernel then takes its most cache-friendly order); one that
        // starts alone may spread over the idle cores, if there are several.
        let spread = if self.running() > 1 || self.cores == 1 {
            Spread::OneThread
        } else {
            Spread::Pool
        };
        let (tx, rx) = tokio::sync::oneshot::channel();
        let pool = self.pool.clone();
        self.chunks.0.push(Box::new(move || {
            let run = || idlegrid_kernels::run_cancellable(&spec, &inputs, spread, &cancel);
            let result = std::panic::catch_unwind(AssertUnwindSafe(|| {
                if spread == Spread::Pool && idlegrid_kernels::spreads(&spec) {
                    pool.install(run)
                } else {
                    run()
                }
            }))
            .unwrap_or_else(|_| Err(KernelError::Failed("the kernel panicked".into())));
            drop(hold);
            let _ = tx.send(result);
        }));
        rx.await
            .map_err(|_| KernelError::Failed("the compute pool stopped".into()))?
    }
}
