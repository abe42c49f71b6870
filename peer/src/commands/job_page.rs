//! The web page of a job started on the command line (`change`, `video`, `run` with
//! `--ui`). The page is served on a runtime of its own, so it outlives the job's peer:
//! when the job has ended (well or not) and the command has written its output and
//! said what it says, the page stays up, showing the finished job and its report,
//! until Ctrl-C or SIGTERM; the command then exits with the job's status. With
//! `--ui-no-wait` it closes as the command ends instead (scripts).

use std::sync::Mutex;

use anyhow::Context;

use crate::commands::common::{GridArgs, NetArgs};
use crate::grid::watch::JobWatch;
use crate::grid::Job;
use crate::node::Node;
use crate::ui::{Hub, Page, UiConfig};

/// A command's error already printed (before its page was kept up): `main` exits
/// non-zero without printing it again.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Reported(pub String);

/// The page of one command's job, if `--ui` asked for it. Create it in the command's
/// synchronous code and end it with [`JobPage::finish`].
pub struct JobPage {
    config: Option<UiConfig>,
    /// Keep the page up after the job (no `--ui-no-wait`).
    wait: bool,
    page: Mutex<Option<Page>>,
    /// The page's own runtime (declared after `page`, so dropped after it).
    runtime: Option<tokio::runtime::Runtime>,
}

impl JobPage {
    /// No page unless `args` asks for one (`--ui`, `--ui-listen`).
    pub fn new(args: &GridArgs) -> anyhow::Result<JobPage> {
        let config = args.ui.config();
        let runtime = match config {
            Some(_) => Some(
                tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(1)
                    .thread_name("idlegrid-page")
                    .enable_all()
                    .build()
                    .context("cannot start the web page's runtime")?,
            ),
            None => None,
        };
        Ok(JobPage {
            config,
            wait: !args.ui_no_wait,
            page: Mutex::new(None),
            runtime,
        })
    }

    /// Whether `--ui` asked for a page.
    pub fn wanted(&self) -> bool {
        self.config.is_some()
    }

    /// The network flags of a job that may run `--local` with the page: `threads`
    /// (`--threads`) become the peer's cores.
    pub fn net_args(net: &NetArgs, threads: Option<usize>) -> NetArgs {
        let mut net = net.clone();
        net.cores = threads.or(net.cores);
        net
    }

    /// Serves the page of `node` and shows `job` on it (called by the job's peer once
    /// it has started); the watch to give the job's grid config, or None without `--ui`.
    pub async fn open(&self, node: &Node, job: &Job) -> anyhow::Result<Option<JobWatch>> {
        let (Some(config), Some(runtime)) = (self.config, &self.runtime) else {
            return Ok(None);
        };
        let hub = Hub::for_node(node, None);
        let page = runtime
            .spawn(Page::start(config, hub.clone()))
            .await
            .context("the web page did not start")??;
        eprintln!("the job's page: {}", page.url());
        // The page's own tasks for the job (painting the mask as results arrive) run
        // on the page's runtime, so they finish even after the job's runtime is gone.
        let (watch, _) = {
            let _on_page_runtime = runtime.enter();
            hub.add_job(job.kernel.clone(), job)
        };
        *self.page.lock().unwrap_or_else(|e| e.into_inner()) = Some(page);
        Ok(Some(watch))
    }

    /// Ends the command: with a page open (and no `--ui-no-wait`), says that the page
    /// stays up and waits for Ctrl-C or SIGTERM; then hands back `result` (an error
    /// already printed as [`Reported`]).
    pub fn finish<T>(self, result: anyhow::Result<T>) -> anyhow::Result<T> {
        let url = self
            .page
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(Page::url);
        let (Some(url), Some(runtime), true) = (url, &self.runtime, self.wait) else {
            return result;
        };
        let result = result.map_err(|e| {
            let text = format!("{e:#}");
            eprintln!("error: {text}");
            anyhow::Error::new(Reported(text))
        });
        let ended = if result.is_ok() { "ended" } else { "failed" };
        runtime.block_on(async {
            // Listening before the line is printed: a Ctrl-C right after it is ours.
            match Signals::listen() {
                Ok(mut signals) => {
                    eprintln!("the job {ended}; its page stays up at {url}: Ctrl-C quits");
                    signals.next().await;
                }
                Err(e) => {
                    eprintln!("the job {ended}; cannot wait for Ctrl-C ({e}), so its page closes")
                }
            }
        });
        result
    }
}

/// SIGINT and SIGTERM, caught from creation on.
struct Signals {
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
}

impl Signals {
    fn listen() -> std::io::Result<Signals> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Ok(Signals {
                interrupt: signal(SignalKind::interrupt())?,
                terminate: signal(SignalKind::terminate())?,
            })
        }
        #[cfg(not(unix))]
        Ok(Signals {})
    }

    async fn next(&mut self) {
        #[cfg(unix)]
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
