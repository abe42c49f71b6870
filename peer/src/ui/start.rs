//! Starting a job from the page (loopback only, see `super::access`). For a change
//! detection the two images are uploaded one by one (`PUT /api/uploads/{slot}?name=FILE`,
//! streamed to a file under the data dir, at most [`MAX_UPLOAD`] bytes each); a video
//! names a folder of frames on this machine. `POST /api/jobs` then starts the job with
//! the same parameters, planner and checks as `idlegrid change` or `idlegrid video`
//! (the command line's own argument parser makes them), so it has the same chunk ids
//! and writes the same output. Several jobs may run at once; each one's output (mask
//! or MP4) is downloadable at the end (`GET /api/jobs/{id}/output`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use clap::Parser;
use futures::StreamExt;
use tokio::io::AsyncWriteExt;

use super::hub::Output;
use super::Hub;
use crate::commands::change::{mask_png, ChangeArgs};
use crate::grid::{self, GridConfig};
use crate::node::Node;

/// Largest upload, in bytes.
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
    if !matches!(slot.as_str(), "before" | "after") {
        return bad(StatusCode::NOT_FOUND, "uploads are `before` or `after`");
    }
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
    match save(body, &path).await {
        Ok(len) => (StatusCode::OK, format!("{name}: {len} bytes")).into_response(),
        Err(why) => {
            let _ = tokio::fs::remove_file(&path).await;
            bad(StatusCode::BAD_REQUEST, format!("{name}: {why}"))
        }
    }
}

/// Streams `body` into `path`, refusing more than [`MAX_UPLOAD`] bytes.
async fn save(body: Body, path: &Path) -> Result<u64, String> {
    let mut file = tokio::fs::File::create(path)
        .await
        .map_err(|e| format!("cannot keep the upload: {e}"))?;
    let mut stream = body.into_data_stream();
    let mut len = 0u64;
    while let Some(piece) = stream.next().await {
        let piece = piece.map_err(|e| format!("upload cut short: {e}"))?;
        len += piece.len() as u64;
        if len > MAX_UPLOAD {
            return Err(format!(
                "larger than the page takes ({} MiB); use `idlegrid change` for it",
                MAX_UPLOAD >> 20
            ));
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

/// `POST /api/jobs` body.
#[derive(serde::Deserialize)]
pub struct StartRequest {
    /// `change` (on the uploaded pair) or `video`.
    kernel: String,
    /// change: method (sa, icm, otsu, bayes, doc_literal); default sa.
    method: Option<String>,
    /// change: own rows per chunk.
    band_rows: Option<u32>,
    /// video: a folder of frames on this machine (or a glob).
    frames: Option<String>,
    /// video: frame rate (30, 29.97, 30000/1001).
    fps: Option<String>,
    /// video: quantiser 0..=51.
    qp: Option<u8>,
    /// video: frames per segment.
    segment_frames: Option<u32>,
}

#[derive(clap::Parser)]
struct VideoCommand {
    #[command(flatten)]
    args: crate::commands::video::VideoArgs,
}

/// Starts a video job on the frames `request` names.
async fn start_video(hub: Arc<Hub>, submit: &Submitter, request: StartRequest) -> Response {
    use idlegrid_kernels::video::{self, VideoSettings};
    let Some(frames) = request.frames.filter(|f| !f.trim().is_empty()) else {
        return bad(StatusCode::BAD_REQUEST, "name the folder of frames");
    };
    let mut argv: Vec<String> = vec![
        "video".into(),
        frames.clone(),
        "-o".into(),
        "out.mp4".into(),
    ];
    if let Some(fps) = &request.fps {
        argv.extend(["--fps".into(), fps.clone()]);
    }
    if let Some(qp) = request.qp {
        argv.extend(["--qp".into(), qp.to_string()]);
    }
    if let Some(n) = request.segment_frames {
        argv.extend(["--segment-frames".into(), n.to_string()]);
    }
    let args = match VideoCommand::try_parse_from(&argv) {
        Ok(c) => c.args,
        Err(e) => return bad(StatusCode::BAD_REQUEST, e.to_string()),
    };
    let settings = VideoSettings {
        qp: args.qp,
        fps: args.fps,
        segment_frames: args.segment_frames,
    };
    if let Err(e) = settings.validate() {
        return bad(StatusCode::BAD_REQUEST, e.to_string());
    }
    let paths = args.frames.clone();
    let planned = tokio::task::spawn_blocking(move || video::plan(&paths, settings)).await;
    let plan = match planned {
        Ok(Ok(plan)) => plan,
        Ok(Err(e)) => return bad(StatusCode::BAD_REQUEST, e.to_string()),
        Err(e) => return bad(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    let (job, blobs) = match crate::jobs::video_job(&plan) {
        Ok(j) => j,
        Err(e) => return bad(StatusCode::BAD_REQUEST, e.to_string()),
    };
    let node = submit.node.clone();
    let resident = match crate::commands::common::store_blobs(&node, blobs).await {
        Ok(r) => r,
        Err(e) => return bad(StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}")),
    };
    let (watch, entry) = hub.add_job(format!("video {frames}"), &job);
    let id = entry.id;
    if let Err(e) = tokio::fs::create_dir_all(&submit.dir).await {
        return bad(StatusCode::INTERNAL_SERVER_ERROR, e.to_string());
    }
    let path = submit.dir.join(format!("job-{id}.mp4"));
    tokio::spawn(async move {
        let config = GridConfig {
            show_progress: false,
            watch: Some(watch.clone()),
            ..GridConfig::default()
        };
        let outcome = grid::run_job(&node, job, config).await;
        drop(resident);
        let Ok(outcome) = outcome else { return };
        let written = tokio::task::spawn_blocking(move || -> anyhow::Result<PathBuf> {
            let mut assembler = video::Assembler::create(&path, plan.assembly())?;
            for index in 0..outcome.results.len() {
                assembler.push(index as u32, &outcome.results.bytes(index)?)?;
            }
            assembler.finish()?;
            Ok(path)
        })
        .await;
        match written {
            Ok(Ok(path)) => {
                *entry.output.lock().unwrap_or_else(|e| e.into_inner()) = Some(Output {
                    path,
                    content_type: "video/mp4",
                    file_name: format!("job-{id}.mp4"),
                });
            }
            Ok(Err(e)) => watch.failed(&format!("cannot write the MP4: {e:#}")),
            Err(e) => watch.failed(&e.to_string()),
        }
    });
    (StatusCode::OK, Json(serde_json::json!({ "id": id }))).into_response()
}

/// The one file uploaded to `slot`.
fn uploaded(dir: &Path, slot: &str) -> Result<PathBuf, String> {
    std::fs::read_dir(dir.join(slot))
        .ok()
        .and_then(|mut d| d.next())
        .and_then(|e| e.ok())
        .map(|e| e.path())
        .ok_or_else(|| format!("no `{slot}` image uploaded yet"))
}

#[derive(clap::Parser)]
struct ChangeCommand {
    #[command(flatten)]
    args: ChangeArgs,
}

/// `POST /api/jobs`: starts a change job on the uploaded pair; answers its id.
pub async fn start_job(State(hub): State<Arc<Hub>>, Json(request): Json<StartRequest>) -> Response {
    let Some(submit) = hub.submit.as_ref() else {
        return bad(StatusCode::CONFLICT, NO_SUBMITTER);
    };
    match request.kernel.as_str() {
        "change" => {}
        "video" => return start_video(hub.clone(), submit, request).await,
        other => {
            return bad(
                StatusCode::BAD_REQUEST,
                format!("the page starts `change` and `video` jobs, not `{other}`"),
            )
        }
    }
    let (before, after) = match (
        uploaded(&submit.dir, "before"),
        uploaded(&submit.dir, "after"),
    ) {
        (Ok(b), Ok(a)) => (b, a),
        (Err(e), _) | (_, Err(e)) => return bad(StatusCode::BAD_REQUEST, e),
    };
    let mut argv: Vec<String> = vec![
        "change".into(),
        before.display().to_string(),
        after.display().to_string(),
        "-o".into(),
        "mask.png".into(),
    ];
    if let Some(method) = &request.method {
        argv.extend(["--method".into(), method.clone()]);
    }
    if let Some(rows) = request.band_rows {
        argv.extend(["--band-rows".into(), rows.to_string()]);
    }
    let params = match ChangeCommand::try_parse_from(&argv)
        .map_err(|e| e.to_string())
        .and_then(|c| c.args.params().map_err(|e| e.to_string()))
    {
        Ok(p) => p,
        Err(e) => return bad(StatusCode::BAD_REQUEST, e),
    };
    let dir = submit.dir.clone();
    let planned = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
        use idlegrid_kernels::change::{self, prep};
        let (b, a) = prep::load_pair(&before, &after).map_err(|e| {
            // Name the files as the user did, not by where the page keeps them.
            let text = e.to_string();
            anyhow::anyhow!(
                "{}",
                text.replace(&format!("{}/", dir.join("before").display()), "")
                    .replace(&format!("{}/", dir.join("after").display()), "")
            )
        })?;
        let diff = prep::difference_of(&b, &a);
        let plan = change::plan(&diff, &params)?;
        let names = format!(
            "change {} {}",
            before.file_name().unwrap_or_default().to_string_lossy(),
            after.file_name().unwrap_or_default().to_string_lossy()
        );
        Ok((plan, names))
    })
    .await;
    let (mut plan, title) = match planned {
        Ok(Ok(p)) => p,
        Ok(Err(e)) => return bad(StatusCode::BAD_REQUEST, format!("{e:#}")),
        Err(e) => return bad(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    let (job, blobs) = crate::jobs::change_job(&plan);
    plan.blobs = Vec::new();
    let node = submit.node.clone();
    let resident = match crate::commands::common::store_blobs(&node, blobs).await {
        Ok(r) => r,
        Err(e) => return bad(StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}")),
    };
    let (watch, entry) = hub.add_job(title, &job);
    let id = entry.id;
    let out_dir = submit.dir.clone();
    tokio::spawn(async move {
        let config = GridConfig {
            show_progress: false,
            watch: Some(watch.clone()),
            ..GridConfig::default()
        };
        let outcome = grid::run_job(&node, job, config).await;
        drop(resident);
        let Ok(outcome) = outcome else { return };
        let path = out_dir.join(format!("job-{id}-mask.png"));
        let written = tokio::task::spawn_blocking(move || -> anyhow::Result<PathBuf> {
            let results = outcome.results.all_bytes()?;
            let mask = plan.assemble(&results)?;
            std::fs::write(&path, mask_png(&mask)?)?;
            Ok(path)
        })
        .await;
        match written {
            Ok(Ok(path)) => {
                *entry.output.lock().unwrap_or_else(|e| e.into_inner()) = Some(Output {
                    path,
                    content_type: "image/png",
                    file_name: format!("job-{id}-mask.png"),
                });
            }
            Ok(Err(e)) => watch.failed(&format!("cannot write the mask: {e:#}")),
            Err(e) => watch.failed(&e.to_string()),
        }
    });
    (StatusCode::OK, Json(serde_json::json!({ "id": id }))).into_response()
}

/// `GET /api/jobs/{id}/output`: the finished output of a job started from the page.
pub async fn get_output(State(hub): State<Arc<Hub>>, UrlPath(id): UrlPath<u64>) -> Response {
    let output = hub
        .job(id)
        .and_then(|j| j.output.lock().unwrap_or_else(|e| e.into_inner()).clone());
    let Some(output) = output else {
        return bad(StatusCode::NOT_FOUND, "no output yet");
    };
    match tokio::fs::read(&output.path).await {
        Ok(bytes) => (
            [
                (header::CONTENT_TYPE, output.content_type.to_string()),
                (
                    header::CONTENT_DISPOSITION,
                    format!("attachment; filename=\"{}\"", output.file_name),
                ),
            ],
            bytes,
        )
            .into_response(),
        Err(e) => bad(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
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
}
