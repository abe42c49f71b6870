//! A change detection started from the page, on the two uploaded images: the mask,
//! and the overlay when asked (`--overlay`), written under the page's folder.

use std::path::PathBuf;
use std::sync::Arc;

use axum::http::StatusCode;
use axum::response::Response;
use clap::Parser;

use super::{bad, spawn_job, uploaded, StartRequest, Submitter};
use crate::commands::change::{mask_png, overlay_png, ChangeArgs};
use crate::ui::hub::{Hub, Output};

#[derive(clap::Parser)]
struct ChangeCommand {
    #[command(flatten)]
    args: ChangeArgs,
}

/// Plans the job on the uploaded pair and starts it; its id, or the answer to give.
pub(super) async fn start(
    hub: &Arc<Hub>,
    submit: &Submitter,
    request: StartRequest,
) -> Result<u64, Response> {
    let (before, after) = match (
        uploaded(&submit.dir, "before", "`before` image"),
        uploaded(&submit.dir, "after", "`after` image"),
    ) {
        (Ok(b), Ok(a)) => (b, a),
        (Err(e), _) | (_, Err(e)) => return Err(bad(StatusCode::BAD_REQUEST, e)),
    };
    let mut argv: Vec<String> = vec![
        "change".into(),
        before.display().to_string(),
        after.display().to_string(),
        "-o".into(),
        "mask.png".into(),
    ];
    if let Some(method) = &request.method {
        argv.push(format!("--method={method}"));
    }
    if let Some(rows) = request.band_rows {
        argv.push(format!("--band-rows={rows}"));
    }
    if request.overlay {
        argv.push("--overlay=overlay.png".into());
    }
    let (params, overlay) = match ChangeCommand::try_parse_from(&argv)
        .map_err(|e| e.to_string())
        .and_then(|c| {
            let params = c.args.params().map_err(|e| e.to_string())?;
            Ok((params, c.args.overlay.is_some()))
        }) {
        Ok(p) => p,
        Err(e) => return Err(bad(StatusCode::BAD_REQUEST, e)),
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
        // The overlay tints the after-image: kept only when it is wanted.
        Ok((plan, names, overlay.then_some(a)))
    })
    .await;
    let (mut plan, title, after) = match planned {
        Ok(Ok(p)) => p,
        Ok(Err(e)) => return Err(bad(StatusCode::BAD_REQUEST, format!("{e:#}"))),
        Err(e) => return Err(bad(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())),
    };
    let (job, blobs) = crate::jobs::change_job(&plan);
    plan.blobs = Vec::new();
    let node = submit.node.clone();
    let resident = match crate::commands::common::store_blobs(&node, blobs).await {
        Ok(r) => r,
        Err(e) => return Err(bad(StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}"))),
    };
    let (watch, entry) = hub.add_job(title, &job);
    let id = entry.id;
    let out_dir = submit.dir.clone();
    spawn_job(node, job, (watch, entry), resident, move |outcome| {
        use anyhow::Context;
        let results = outcome.results.all_bytes()?;
        let mask = plan.assemble(&results)?;
        let mut outputs = Vec::new();
        let mut write = |name: String, bytes: Vec<u8>| -> anyhow::Result<()> {
            let path: PathBuf = out_dir.join(&name);
            std::fs::write(&path, bytes).with_context(|| format!("cannot write {name}"))?;
            outputs.push(Output {
                path,
                content_type: "image/png",
                file_name: name,
            });
            Ok(())
        };
        write(format!("job-{id}-mask.png"), mask_png(&mask)?)?;
        if let Some(after) = &after {
            write(
                format!("job-{id}-overlay.png"),
                overlay_png(after, &mask).context("cannot make the overlay")?,
            )?;
        }
        Ok(outputs)
    });
    Ok(id)
}
