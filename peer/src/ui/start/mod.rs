//! Starting a job from the page (loopback only, see `super::access`). Files are
//! uploaded one by one (`PUT /api/uploads/{slot}?name=FILE`, streamed to a file under
//! the data dir, bounded): the two images of a change detection ([`change`]) or the
//! module of a wasm job ([`wasm`]); a video names a folder of frames on this machine
//! ([`video`]). `POST /api/jobs` then starts the job with the same parameters, planner
//! and checks as `idlegrid change`, `idlegrid video` or `idlegrid run` (the command
//! line's own argument parser makes them), so it has the same chunk ids and writes
//! the same outputs, always under the page's folder in the data dir. Several jobs may
//! run at once; each one's outputs are listed on the job and downloadable
//! (`GET /api/jobs/{id}/outputs/{n}`, `GET /api/jobs/{id}/output` for the first).

mod change;
mod video;
mod wasm;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::StreamExt;
use tokio::io::AsyncWriteExt;

use super::hub::{JobEntry, Output};
use super::Hub;
use crate::grid::watch::JobWatch;
use crate::grid::{self, GridConfig, Job, JobOutcome};
use crate::node::Node;
use crate::store::Resident;

/// Largest image upload, in bytes.
pub const MAX_UPLOAD: u64 = 512 << 20;

/// What a page needs to start jobs: the peer to submit from and where uploads go.
pub struct Submitter {
    pub node: Arc<Node>,
    pub dir: PathBuf,
}

/// A page that may start jobs from `node` (`idlegrid ui`); uploads and outputs go
/// under `dir`.
pub fn hub_with_submitter(
    node: Arc<Node>,
    volunteer: Option<super::hub::Volunteer>,
    dir: PathBuf,
) -> Arc<Hub> {
    let submit = Submitter {
        node: node.clone(),
        dir,
    };
    Arc::new(Hub::new(&node, volunteer, Some(submit)))
}

fn bad(status: StatusCode, why: impl Into<String>) -> Response {
    (status, why.into()).into_response()
}

/// Why this page cannot start jobs, if it cannot.
const NO_SUBMITTER: &str = "this page cannot start jobs: start it with `idlegrid ui`";

/// A file name the user gave, reduced to a safe base name.
fn safe_name(name: &str) -> Option<String> {
    let base = name.rsplit(['/', '\\']).next()?;
    let clean: String = base
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        .take(100)
        .collect();
    (!clean.is_empty() && !clean.starts_with('.')).then_some(clean)
}

#[derive(serde::Deserialize)]
pub struct UploadQuery {
    name: String,
}

/// Upload slots and the most bytes each takes, with what to say past it.
fn slot_limit(slot: &str) -> Option<(u64, String)> {
    match slot {
        "before" | "after" => Some((
            MAX_UPLOAD,
            format!(
                "larger than the page takes ({} MiB); use `idlegrid change` for it",
                MAX_UPLOAD >> 20
            ),
        )),
        "module" => {
            let max = idlegrid_kernels::wasm::params::MAX_MODULE;
            Some((
                max,
                // The command line's words for a module too large (`idlegrid run`).
                format!(
                    "a module of more than {max} bytes; peers compile at most {} MiB",
                    max >> 20
                ),
            ))
        }
        _ => None,
    }
}

/// `PUT /api/uploads/{slot}?name=FILE`: the body, streamed to `<dir>/<slot>/FILE`.
pub async fn upload(
    State(hub): State<Arc<Hub>>,
    UrlPath(slot): UrlPath<String>,
    Query(query): Query<UploadQuery>,
    body: Body,
) -> Response {
    let Some(submit) = hub.submit.as_ref() else {
        return bad(StatusCode::CONFLICT, NO_SUBMITTER);
    };
    let Some((limit, too_large)) = slot_limit(&slot) else {
        return bad(
            StatusCode::NOT_FOUND,
            "uploads are `before`, `after` or `module`",
        );
    };
    let Some(name) = safe_name(&query.name) else {
        return bad(StatusCode::BAD_REQUEST, "the file needs a name");
    };
    let dir = submit.dir.join(&slot);
    let _ = tokio::fs::remove_dir_all(&dir).await;
    if let Err(e) = tokio::fs::create_dir_all(&dir).await {
        return bad(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot keep the upload: {e}"),
        );
    }
    let path = dir.join(&name);
    match save(body, &path, limit, &too_large).await {
        Ok(len) => (StatusCode::OK, format!("{name}: {len} bytes")).into_response(),
        Err(why) => {
            let _ = tokio::fs::remove_file(&path).await;
            bad(StatusCode::BAD_REQUEST, format!("{name}: {why}"))
        }
    }
}

/// Streams `body` into `path`, refusing more than `limit` bytes.
async fn save(body: Body, path: &Path, limit: u64, too_large: &str) -> Result<u64, String> {
    let mut file = tokio::fs::File::create(path)
        .await
        .map_err(|e| format!("cannot keep the upload: {e}"))?;
    let mut stream = body.into_data_stream();
    let mut len = 0u64;
    while let Some(piece) = stream.next().await {
        let piece = piece.map_err(|e| format!("upload cut short: {e}"))?;
        len += piece.len() as u64;
        if len > limit {
            return Err(too_large.to_string());
        }
        file.write_all(&piece)
            .await
            .map_err(|e| format!("cannot keep the upload: {e}"))?;
    }
    file.flush()
        .await
        .map_err(|e| format!("cannot keep the upload: {e}"))?;
    Ok(len)
}

/// The one file uploaded to `slot`.
fn uploaded(dir: &Path, slot: &str, what: &str) -> Result<PathBuf, String> {
    std::fs::read_dir(dir.join(slot))
        .ok()
        .and_then(|mut d| d.next())
        .and_then(|e| e.ok())
        .map(|e| e.path())
        .ok_or_else(|| format!("no {what} uploaded yet"))
}

/// `POST /api/jobs` body. Only `kernel` is required; the rest are the few options of
/// each kernel that matter, spelled as the command line's flags.
#[derive(serde::Deserialize)]
pub struct StartRequest {
    /// `change` (on the uploaded pair), `video` or `wasm` (the uploaded module).
    kernel: String,
    /// change: method (sa, icm, otsu, bayes, doc_literal); default sa.
    method: Option<String>,
    /// change: own rows per chunk.
    band_rows: Option<u32>,
    /// change: also write the overlay (`--overlay`).
    #[serde(default)]
    overlay: bool,
    /// video: a folder of frames on this machine (or a glob).
    frames: Option<String>,
    /// video: frame rate (30, 29.97, 30000/1001).
    fps: Option<String>,
    /// video: quantiser 0..=51.
    qp: Option<u8>,
    /// video: frames per segment.
    segment_frames: Option<u32>,
    /// wasm: the runs, `A..B` (`--range`).
    range: Option<String>,
    /// wasm: each run's arguments (`--args`).
    args: Option<String>,
    /// wasm: each run's output file, or the joined file (`-o`), inside the job's folder.
    output: Option<String>,
    /// wasm: join every run's output into the one file `output` names
    /// (`--join concat`).
    #[serde(default)]
    join: bool,
    /// wasm: fuel of each run (`--fuel`).
    fuel: Option<String>,
    /// wasm: memory cap of each run, e.g. 64MiB (`--memory`).
    memory: Option<String>,
}

/// `POST /api/jobs`: starts a job; answers its id, or 400 with the command line's error.
pub async fn start_job(State(hub): State<Arc<Hub>>, Json(request): Json<StartRequest>) -> Response {
    let Some(submit) = hub.submit.as_ref() else {
        return bad(StatusCode::CONFLICT, NO_SUBMITTER);
    };
    let started = match request.kernel.as_str() {
        "change" => change::start(&hub, submit, request).await,
        "video" => video::start(&hub, submit, request).await,
        "wasm" => wasm::start(&hub, submit, request).await,
        other => Err(bad(
            StatusCode::BAD_REQUEST,
            format!("the page starts `change`, `video` and `wasm` jobs, not `{other}`"),
        )),
    };
    match started {
        Ok(id) => (StatusCode::OK, Json(serde_json::json!({ "id": id }))).into_response(),
        Err(response) => response,
    }
}

/// Runs `job` on the grid from `node` in a task of its own; when it has ended well,
/// `write` makes its output files (on a blocking thread) and they are listed for
/// download. A failure to write fails the job on the page.
fn spawn_job<W>(
    node: Arc<Node>,
    job: Job,
    (watch, entry): (JobWatch, Arc<JobEntry>),
    resident: Resident,
    write: W,
) where
    W: FnOnce(JobOutcome) -> anyhow::Result<Vec<Output>> + Send + 'static,
{
    tokio::spawn(async move {
        let config = GridConfig {
            show_progress: false,
            watch: Some(watch.clone()),
            ..GridConfig::default()
        };
        let outcome = grid::run_job(&node, job, config).await;
        drop(resident);
        // A failed job is shown failed by the job loop itself.
        let Ok(outcome) = outcome else { return };
        match tokio::task::spawn_blocking(move || write(outcome)).await {
            Ok(Ok(outputs)) => {
                for output in outputs {
                    entry.add_output(output);
                }
            }
            Ok(Err(e)) => watch.failed(&format!("{e:#}")),
            Err(e) => watch.failed(&e.to_string()),
        }
    });
}

/// Serves `output` as a download.
async fn download(output: Output) -> Response {
    let name = Path::new(&output.file_name)
        .file_name()
        .and_then(|n| safe_name(&n.to_string_lossy()))
        .unwrap_or_else(|| "output".into());
    match tokio::fs::read(&output.path).await {
        Ok(bytes) => (
            [
                (header::CONTENT_TYPE, output.content_type.to_string()),
                (
                    header::CONTENT_DISPOSITION,
                    format!("attachment; filename=\"{name}\""),
                ),
            ],
            bytes,
        )
            .into_response(),
        Err(e) => bad(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// `GET /api/jobs/{id}/output`: the first output of a job started from the page.
pub async fn get_output(State(hub): State<Arc<Hub>>, UrlPath(id): UrlPath<u64>) -> Response {
    match hub.job(id).and_then(|j| j.output(0)) {
        Some(output) => download(output).await,
        None => bad(StatusCode::NOT_FOUND, "no output yet"),
    }
}

/// `GET /api/jobs/{id}/outputs/{n}`: output `n` (in the order written).
pub async fn get_nth_output(
    State(hub): State<Arc<Hub>>,
    UrlPath((id, n)): UrlPath<(u64, usize)>,
) -> Response {
    match hub.job(id).and_then(|j| j.output(n)) {
        Some(output) => download(output).await,
        None => bad(StatusCode::NOT_FOUND, "no such output (yet)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(safe_name("a.png").as_deref(), Some("a.png"));
        assert_eq!(safe_name("../../etc/passwd").as_deref(), Some("passwd"));
        assert_eq!(safe_name("C:\\x\\b b.png").as_deref(), Some("bb.png"));
        assert_eq!(safe_name(".."), None);
        assert_eq!(safe_name(""), None);
    }

    #[tokio::test]
    async fn uploads_are_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.wasm");
        let (limit, too_large) = slot_limit("module").unwrap();
        assert_eq!(limit, idlegrid_kernels::wasm::params::MAX_MODULE);
        let body = Body::from(vec![0u8; 10]);
        assert_eq!(save(body, &path, 10, &too_large).await, Ok(10));
        let body = Body::from(vec![0u8; 11]);
        let refused = save(body, &path, 10, &too_large).await.unwrap_err();
        assert!(refused.contains("peers compile at most"), "{refused}");
        assert!(slot_limit("../etc").is_none());
    }
}
