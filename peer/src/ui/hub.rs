//! What the page reads: the node's handles (network client, blob store, traffic
//! counters, the worker's tally of whom it computes for), the jobs watched on this peer (each through the view its job loop
//! publishes, [`crate::grid::watch`]) and, on a volunteer, its gate and settings.
//! The hub holds handles and receivers only; every figure comes from its owner when
//! the page asks. Each job's verified results go, as they settle, to what paints its
//! output so far (a change mask, a video thumbnail) and to a page job's [`ResultHook`]
//! (a wasm job writing each run's file); the files a page job wrote are listed on its
//! entry ([`Outputs`]) for download.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use libp2p::PeerId;
use tokio::sync::watch;

use super::partial::Partial;
use super::thumbnail::Thumbnail;
use crate::grid::watch::{JobView, JobWatch, ResultEvent};
use crate::grid::Job;
use crate::net::Client;
use crate::node::Node;
use crate::policy::Gate;
use crate::store::BlobStore;
use crate::worker::{Requesters, Traffic};

/// A volunteer's side: its gate (policy decision, chunks in hand, refusals) and its
/// settings as `idlegrid status` words them.
pub struct Volunteer {
    pub gate: Gate,
    pub settings: Vec<String>,
}

/// One job shown on the page.
pub struct JobEntry {
    pub id: u64,
    /// What started it, e.g. `change a.png b.png`.
    pub title: String,
    pub views: watch::Receiver<Arc<JobView>>,
    pub watch: JobWatch,
    /// A change job's mask so far.
    pub partial: Option<Arc<Partial>>,
    /// A video job's newest segment.
    pub thumbnail: Option<Arc<Thumbnail>>,
    /// The files written for a job started from the page, for download.
    pub outputs: Mutex<Outputs>,
}

/// Outputs listed in the state document at most (the newest): a wasm job may write
/// one file per run, and every state event carries the list.
pub const OUTPUTS_LISTED: usize = 100;

impl JobEntry {
    fn outputs(&self) -> std::sync::MutexGuard<'_, Outputs> {
        self.outputs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Lists `output` for download (once per file: written again, it stays listed).
    pub fn add_output(&self, output: Output) {
        self.outputs().add(output);
    }

    /// Takes the files of `paths` off the list (their content was revoked).
    pub fn remove_outputs(&self, paths: &[PathBuf]) {
        self.outputs().remove(paths);
    }

    /// Output `n`, in the order written.
    pub fn output(&self, n: usize) -> Option<Output> {
        self.outputs().list.get(n).cloned()
    }

    /// How many outputs are listed, and the newest [`OUTPUTS_LISTED`] with their
    /// numbers.
    pub fn listed_outputs(&self) -> (usize, Vec<(usize, String)>) {
        let outputs = self.outputs();
        let total = outputs.list.len();
        let from = total.saturating_sub(OUTPUTS_LISTED);
        let newest = outputs.list[from..]
            .iter()
            .enumerate()
            .map(|(i, o)| (from + i, o.file_name.clone()))
            .collect();
        (total, newest)
    }
}

/// A job's downloadable files, in the order written.
#[derive(Default)]
pub struct Outputs {
    list: Vec<Output>,
    paths: std::collections::HashSet<PathBuf>,
}

impl Outputs {
    fn add(&mut self, output: Output) {
        if self.paths.insert(output.path.clone()) {
            self.list.push(output);
        }
    }

    fn remove(&mut self, paths: &[PathBuf]) {
        for path in paths {
            self.paths.remove(path);
        }
        self.list.retain(|o| self.paths.contains(&o.path));
    }
}

/// Called with each verified (or revoked) result of a job, its bytes read: a page job
/// that writes files as results arrive (a wasm job's outputs). Runs on a blocking
/// thread.
pub type ResultHook = Arc<dyn Fn(ResultEvent) + Send + Sync>;

/// A job's output file and how to name it for the browser.
#[derive(Clone, Debug)]
pub struct Output {
    pub path: PathBuf,
    pub content_type: &'static str,
    pub file_name: String,
}

/// The page's view of one peer. See the module header.
pub struct Hub {
    pub me: PeerId,
    pub(super) client: Client,
    pub(super) traffic: Traffic,
    pub(super) requesters: Requesters,
    pub(super) store: BlobStore,
    pub(super) cores: usize,
    chunk_runs: Arc<AtomicUsize>,
    pub(super) volunteer: Option<Volunteer>,
    jobs: Mutex<Vec<Arc<JobEntry>>>,
    next_id: AtomicU64,
    pub(super) started: Instant,
    /// Jobs may be started from the page (see `super::start`).
    pub(super) submit: Option<super::start::Submitter>,
}

impl Hub {
    /// A hub for `node`; `volunteer` on a peer that lends.
    pub fn for_node(node: &Node, volunteer: Option<Volunteer>) -> Arc<Hub> {
        Arc::new(Hub::new(node, volunteer, None))
    }

    pub(super) fn new(
        node: &Node,
        volunteer: Option<Volunteer>,
        submit: Option<super::start::Submitter>,
    ) -> Hub {
        Hub {
            me: node.peer_id(),
            client: node.client.clone(),
            traffic: node.traffic.clone(),
            requesters: node.requesters.clone(),
            store: node.store.clone(),
            cores: node.executor.cores(),
            chunk_runs: node.chunk_runs.clone(),
            volunteer,
            jobs: Mutex::new(Vec::new()),
            next_id: AtomicU64::new(1),
            started: Instant::now(),
            submit,
        }
    }

    /// Shows `job` on the page: returns the watch to give its grid config.
    pub fn add_job(&self, title: String, job: &Job) -> (JobWatch, Arc<JobEntry>) {
        self.add_job_with(title, job, None)
    }

    /// [`Hub::add_job`], with `hook` called with each result as it settles.
    pub fn add_job_with(
        &self,
        title: String,
        job: &Job,
        hook: Option<ResultHook>,
    ) -> (JobWatch, Arc<JobEntry>) {
        let (watch, feed) = JobWatch::new(job);
        let partial = Partial::for_job(job).map(Arc::new);
        let thumbnail = Thumbnail::for_job(job).map(Arc::new);
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let entry = Arc::new(JobEntry {
            id,
            title,
            views: feed.views,
            watch: watch.clone(),
            partial: partial.clone(),
            thumbnail: thumbnail.clone(),
            outputs: Mutex::new(Outputs::default()),
        });
        let mut results = feed.results;
        let store = self.store.clone();
        tokio::spawn(async move {
            while let Some(event) = results.recv().await {
                if let (Some(thumbnail), ResultEvent::Verified { chunk, .. }) = (&thumbnail, &event)
                {
                    thumbnail.verified(*chunk);
                }
                if partial.is_none() && hook.is_none() {
                    continue;
                }
                let event = match event {
                    ResultEvent::Verified {
                        chunk,
                        cid,
                        bytes: None,
                    } => {
                        let store = store.clone();
                        let read = tokio::task::spawn_blocking(move || store.get(&cid)).await;
                        match read {
                            Ok(Ok(Some(bytes))) => ResultEvent::Verified {
                                chunk,
                                cid,
                                bytes: Some(bytes),
                            },
                            _ => continue,
                        }
                    }
                    other => other,
                };
                if let Some(hook) = &hook {
                    let (hook, event) = (hook.clone(), event.clone());
                    let _ = tokio::task::spawn_blocking(move || hook(event)).await;
                }
                if let Some(partial) = &partial {
                    partial.apply(event);
                }
            }
        });
        self.jobs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(entry.clone());
        (watch, entry)
    }

    /// The jobs shown, oldest first.
    pub fn jobs(&self) -> Vec<Arc<JobEntry>> {
        self.jobs.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn job(&self, id: u64) -> Option<Arc<JobEntry>> {
        self.jobs().into_iter().find(|j| j.id == id)
    }

    /// Chunk runs this peer's jobs have going (`Node::chunk_runs`).
    pub fn chunk_runs(&self) -> usize {
        self.chunk_runs.load(Ordering::Relaxed)
    }
}
