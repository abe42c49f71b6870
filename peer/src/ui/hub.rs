//! What the page reads: the node's handles (network client, blob store, traffic
//! counters), the jobs watched on this peer (each through the view its job loop
//! publishes, [`crate::grid::watch`]) and, on a volunteer, its gate and settings.
//! The hub holds handles and receivers only; every figure comes from its owner when
//! the page asks.

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
use crate::worker::Traffic;

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
    /// The finished output (jobs started from the page), for download.
    pub output: Mutex<Option<Output>>,
}

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
            output: Mutex::new(None),
        });
        let mut results = feed.results;
        let store = self.store.clone();
        tokio::spawn(async move {
            while let Some(event) = results.recv().await {
                if let (Some(thumbnail), ResultEvent::Verified { chunk, .. }) = (&thumbnail, &event)
                {
                    thumbnail.verified(*chunk);
                }
                let Some(partial) = &partial else { continue };
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
                partial.apply(event);
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
