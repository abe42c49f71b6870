//! A wasm job started from the page: the uploaded module, run once per value of a
//! range, planned by `idlegrid run`'s own argument parser and planner (same chunk ids,
//! same outputs). Outputs go under a folder of their own in the page's folder: the
//! output template must name a path inside it. Each run's file is written as soon as
//! its chunk is verified, and listed on the page then; once the job has ended every
//! output is written again from the job's verified results (a result revoked meanwhile
//! is replaced), or, with join, the one joined file is written.

use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, OnceLock};

use axum::http::StatusCode;
use axum::response::Response;
use clap::Parser;

use super::{bad, spawn_job, uploaded, StartRequest, Submitter};
use crate::commands::run::{self, Outputs, RunArgs, RunPlan};
use crate::grid::watch::ResultEvent;
use crate::ui::hub::{Hub, JobEntry, Output, ResultHook};

#[derive(clap::Parser)]
struct RunCommand {
    #[command(flatten)]
    args: Box<RunArgs>,
}

const CONTENT_TYPE: &str = "application/octet-stream";

/// `path` inside `dir`, if it is a relative path that stays there.
fn inside(dir: &Path, path: &Path) -> Option<PathBuf> {
    let stays = path.components().any(|c| matches!(c, Component::Normal(_)))
        && path
            .components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
    stays.then(|| dir.join(path))
}

/// The plan's outputs moved into `dir`; the error names the template. A page job's
/// runs are a range, whose `{i}` and `{count}` fill in digits only (never a `/`, never
/// an empty name), so the first run's path has the same kinds of components (root,
/// `.`, `..`, names) as every other run's: checking it checks them all.
fn outputs_inside(plan: &mut RunPlan, dir: &Path, template: &str) -> Result<(), String> {
    let refuse = |path: &Path| {
        format!(
            "-o {template:?} names {}: a page job's outputs stay in its folder (a relative \
             path without `..`)",
            path.display()
        )
    };
    plan.outputs = match &plan.outputs {
        Outputs::Joined(path) => Outputs::Joined(inside(dir, path).ok_or_else(|| refuse(path))?),
        Outputs::Each { template, folder } => {
            let first = plan.output_path(0).map_err(|e| format!("{e:#}"))?;
            inside(dir, &first).ok_or_else(|| refuse(&first))?;
            Outputs::Each {
                template: template.clone(),
                folder: dir.join(folder),
            }
        }
    };
    Ok(())
}

/// The output of `path`, named for the page by its place in `dir`.
fn output(dir: &Path, path: &Path) -> Output {
    Output {
        path: path.to_path_buf(),
        content_type: CONTENT_TYPE,
        file_name: path.strip_prefix(dir).unwrap_or(path).display().to_string(),
    }
}

/// The files chunk `chunk`'s runs write (none with join).
fn chunk_paths(plan: &RunPlan, chunk: usize) -> anyhow::Result<Vec<PathBuf>> {
    match (&plan.outputs, plan.runs.of_chunk(chunk)) {
        (Outputs::Each { .. }, Some(runs)) => runs.map(|k| plan.output_path(k)).collect(),
        _ => Ok(Vec::new()),
    }
}

/// Writes the outputs of chunk `chunk`'s runs from its verified result.
fn write_chunk(plan: &RunPlan, chunk: usize, result: &[u8]) -> anyhow::Result<Vec<PathBuf>> {
    use anyhow::Context;
    use std::io::Write;
    let paths = chunk_paths(plan, chunk)?;
    for (path, bytes) in paths.iter().zip(plan.outputs_of(chunk, result)?) {
        let mut file = run::temp_beside(path)?;
        file.write_all(bytes)
            .with_context(|| format!("cannot write {}", path.display()))?;
        file.persist(path)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(paths)
}

/// Writes each run's output as its chunk is verified and lists it on the job; takes a
/// revoked chunk's outputs off the list until it is verified again.
fn live_writer(
    plan: Arc<RunPlan>,
    dir: PathBuf,
    entry: Arc<OnceLock<Arc<JobEntry>>>,
) -> ResultHook {
    Arc::new(move |event| {
        let Some(entry) = entry.get() else { return };
        match event {
            ResultEvent::Verified {
                chunk,
                bytes: Some(bytes),
                ..
            } => match write_chunk(&plan, chunk, &bytes) {
                Ok(paths) => {
                    for path in paths {
                        entry.add_output(output(&dir, &path));
                    }
                }
                Err(e) => tracing::warn!("page job {}: {e:#}", entry.id),
            },
            ResultEvent::Revoked { chunk } => match chunk_paths(&plan, chunk) {
                Ok(paths) => entry.remove_outputs(&paths),
                Err(e) => tracing::warn!("page job {}: {e:#}", entry.id),
            },
            ResultEvent::Verified { .. } => {}
        }
    })
}

/// Plans the job on the uploaded module and starts it; its id, or the answer to give.
pub(super) async fn start(
    hub: &Arc<Hub>,
    submit: &Submitter,
    request: StartRequest,
) -> Result<u64, Response> {
    let module =
        uploaded(&submit.dir, "module", "module").map_err(|e| bad(StatusCode::BAD_REQUEST, e))?;
    let Some(range) = request.range.filter(|r| !r.trim().is_empty()) else {
        return Err(bad(
            StatusCode::BAD_REQUEST,
            "give the runs' range A..B, e.g. 0..8",
        ));
    };
    // `--flag=value`: a value starting with `-` stays a value.
    let mut argv: Vec<String> = vec![
        "run".into(),
        module.display().to_string(),
        format!("--range={range}"),
        format!("--args={}", request.args.unwrap_or_default()),
    ];
    if let Some(output) = &request.output {
        argv.push(format!("--output={output}"));
    }
    if request.join {
        argv.push("--join=concat".into());
    }
    if let Some(fuel) = request.fuel.filter(|f| !f.trim().is_empty()) {
        argv.push(format!("--fuel={fuel}"));
    }
    if let Some(memory) = request.memory.filter(|m| !m.trim().is_empty()) {
        argv.push(format!("--memory={memory}"));
    }
    let args = RunCommand::try_parse_from(&argv)
        .map_err(|e| bad(StatusCode::BAD_REQUEST, e.to_string()))?
        .args;
    let template = args.output.clone();
    let spec = args
        .spec()
        .map_err(|e| bad(StatusCode::BAD_REQUEST, format!("{e:#}")))?;
    let module_dir = submit.dir.join("module");
    let planned = tokio::task::spawn_blocking(move || {
        // Name the module as the user did, not by where the page keeps it.
        run::plan_run(&spec)
            .map_err(|e| format!("{e:#}").replace(&format!("{}/", module_dir.display()), ""))
    })
    .await;
    let mut plan = match planned {
        Ok(Ok(plan)) => plan,
        Ok(Err(e)) => return Err(bad(StatusCode::BAD_REQUEST, e)),
        Err(e) => return Err(bad(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())),
    };
    let dir = tempfile::Builder::new()
        .prefix("wasm-job-")
        .tempdir_in(&submit.dir)
        .map(|d| d.keep())
        .map_err(|e| {
            bad(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("cannot make the job's folder: {e}"),
            )
        })?;
    if let Err(e) = outputs_inside(&mut plan, &dir, &template) {
        let _ = std::fs::remove_dir(&dir);
        return Err(bad(StatusCode::BAD_REQUEST, e));
    }
    let (job, blobs) =
        run::grid_job(&plan).map_err(|e| bad(StatusCode::BAD_REQUEST, format!("{e:#}")))?;
    let node = submit.node.clone();
    let resident = crate::commands::common::store_blobs(&node, blobs)
        .await
        .map_err(|e| bad(StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}")))?;
    let name = module
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let plan = Arc::new(plan);
    let cell = Arc::new(OnceLock::new());
    // Joined outputs are written once, at the end; each run's own file as it comes.
    let hook = matches!(plan.outputs, Outputs::Each { .. })
        .then(|| live_writer(plan.clone(), dir.clone(), cell.clone()));
    let (watch, entry) = hub.add_job_with(format!("run {name} {range}"), &job, hook);
    let _ = cell.set(entry.clone());
    let id = entry.id;
    spawn_job(node, job, (watch, entry), resident, move |outcome| {
        let results = &outcome.results;
        run::write_outputs(&plan, |i| Ok(results.bytes(i)?.to_vec()))?;
        Ok(match &plan.outputs {
            Outputs::Joined(path) => vec![output(&dir, path)],
            // The page lists each run's file: as many as the runs, by nature.
            Outputs::Each { .. } => (0..plan.runs.count())
                .map(|k| Ok(output(&dir, &plan.output_path(k)?)))
                .collect::<anyhow::Result<_>>()?,
        })
    });
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outputs_stay_inside() {
        let dir = Path::new("/data/job");
        assert_eq!(inside(dir, Path::new("a/b.txt")), Some(dir.join("a/b.txt")));
        assert_eq!(inside(dir, Path::new("./b.txt")), Some(dir.join("b.txt")));
        assert_eq!(inside(dir, Path::new("../b.txt")), None);
        assert_eq!(inside(dir, Path::new("a/../../b")), None);
        assert_eq!(inside(dir, Path::new("/etc/passwd")), None);
        assert_eq!(inside(dir, Path::new("")), None);
        assert_eq!(inside(dir, Path::new(".")), None);
    }
}
