//! The web page (`--ui`, `idlegrid ui`): an HTTP server on the peer's own tokio
//! runtime that shows what this machine sees of the grid, live, and (from loopback)
//! starts jobs.
//!
//! Layout: [`hub`] holds what the page reads (the node's handles, the jobs watched
//! through [`crate::grid::watch`], the volunteer's gate) and builds the state JSON
//! ([`state`]); [`events`] streams it as server-sent events, coalesced; [`partial`]
//! paints a change job's mask as its bands are verified, [`thumbnail`] shows a video
//! job's newest segment; [`assets`] serves the page
//! (HTML, CSS, JavaScript inside the binary); [`start`] takes uploads and starts jobs;
//! [`logtail`] keeps the last warnings for the page.
//!
//! Security: the server binds 127.0.0.1:7878 unless `--ui-listen` says otherwise. A
//! request other than GET/HEAD from a non-loopback address is refused unless
//! `--ui-listen` opened the page to the network; pausing lending and starting jobs
//! are refused from anywhere but loopback, always ([`access`]).

pub mod access;
mod assets;
mod events;
pub mod hub;
pub mod logtail;
pub mod partial;
mod start;
mod state;
pub mod thumbnail;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use axum::routing::{get, post, put};
use axum::Router;

pub use hub::{Hub, Volunteer};
pub use start::{hub_with_submitter, Submitter, MAX_UPLOAD};

/// Where the page listens when `--ui-listen` is not given.
pub const DEFAULT_LISTEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 7878);

/// `--ui` and `--ui-listen`, shared by the commands that can show the page.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct UiArgs {
    /// Show this peer's live web page at http://127.0.0.1:7878 (the address is printed).
    #[arg(long)]
    pub ui: bool,
    /// Serve the page on this address instead (implies --ui), e.g. 0.0.0.0:7878 to open
    /// it to the LAN: others may look; only this machine may pause it or start jobs.
    #[arg(long, value_name = "ADDR")]
    pub ui_listen: Option<SocketAddr>,
}

impl UiArgs {
    /// The page's settings, if it is wanted.
    pub fn config(&self) -> Option<UiConfig> {
        if !self.ui && self.ui_listen.is_none() {
            return None;
        }
        Some(match self.ui_listen {
            Some(addr) => UiConfig {
                listen: addr,
                open: !addr.ip().is_loopback(),
            },
            None => UiConfig::default(),
        })
    }
}

/// How the page is served.
#[derive(Clone, Copy, Debug)]
pub struct UiConfig {
    /// Default 127.0.0.1:7878.
    pub listen: SocketAddr,
    /// Opened to the network by `--ui-listen`: requests other than GET are taken from
    /// other hosts too (pause and job starts stay loopback-only). Default off.
    pub open: bool,
}

impl Default for UiConfig {
    fn default() -> Self {
        UiConfig {
            listen: DEFAULT_LISTEN,
            open: false,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum UiError {
    #[error("cannot serve the web page on {addr}: {source} (choose another with --ui-listen)")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// A page being served. Dropping it stops the server.
pub struct Page {
    pub addr: SocketAddr,
    pub hub: Arc<Hub>,
    task: tokio::task::JoinHandle<()>,
}

impl Page {
    /// Binds `config.listen` and serves `hub` on the current tokio runtime.
    pub async fn start(config: UiConfig, hub: Arc<Hub>) -> Result<Page, UiError> {
        let bind = |source| UiError::Bind {
            addr: config.listen,
            source,
        };
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(bind)?;
        let addr = listener.local_addr().map_err(bind)?;
        if config.open {
            tracing::warn!(
                "the web page is open to the network on {addr}: anyone who can reach it sees \
                 this machine's peers and jobs (pausing and starting jobs stay loopback-only)"
            );
        }
        let app = router(hub.clone(), config.open);
        let task = tokio::spawn(async move {
            let service = app.into_make_service_with_connect_info::<SocketAddr>();
            if let Err(e) = axum::serve(listener, service).await {
                tracing::warn!("the web page stopped: {e}");
            }
        });
        Ok(Page { addr, hub, task })
    }

    /// The page's address, for people: `http://127.0.0.1:7878/`.
    pub fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }
}

impl Drop for Page {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn router(hub: Arc<Hub>, open: bool) -> Router {
    Router::new()
        .route("/", get(assets::index))
        .route("/app.js", get(assets::script))
        .route("/style.css", get(assets::style))
        .route("/api/state", get(state::get_state))
        .route("/api/events", get(events::stream))
        .route("/api/jobs/{id}/partial.png", get(partial::get_png))
        .route("/api/jobs/{id}/thumbnail.png", get(thumbnail::get_png))
        .route("/api/jobs/{id}/report.json", get(state::get_report))
        .route("/api/jobs/{id}/output", get(start::get_output))
        .route("/api/jobs/{id}/outputs/{n}", get(start::get_nth_output))
        .route("/api/pause", post(state::pause))
        .route("/api/resume", post(state::resume))
        .route("/api/uploads/{name}", put(start::upload))
        .route("/api/jobs", post(start::start_job))
        .layer(axum::middleware::from_fn_with_state(
            access::Rules { open },
            access::check,
        ))
        .with_state(hub)
}
