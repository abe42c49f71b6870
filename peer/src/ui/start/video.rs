//! A video encode started from the page, of a folder of frames on this machine: the
//! MP4, written under the page's folder.

use std::sync::Arc;

use axum::http::StatusCode;
use axum::response::Response;
use clap::Parser;

use super::{bad, spawn_job, StartRequest, Submitter};
use crate::ui::hub::{Hub, Output};

#[derive(clap::Parser)]
struct VideoCommand {
    #[command(flatten)]
    args: crate::commands::video::VideoArgs,
}

/// Plans the job on the frames `request` names and starts it; its id, or the answer
/// to give.
pub(super) async fn start(
    hub: &Arc<Hub>,
    submit: &Submitter,
    request: StartRequest,
) -> Result<u64, Response> {
    use idlegrid_kernels::video::{self, VideoSettings};
    let Some(frames) = request.frames.filter(|f| !f.trim().is_empty()) else {
        return Err(bad(StatusCode::BAD_REQUEST, "name the folder of frames"));
    };
    let mut argv: Vec<String> = vec![
        "video".into(),
        frames.clone(),
        "-o".into(),
        "out.mp4".into(),
    ];
    if let Some(fps) = &request.fps {
        argv.push(format!("--fps={fps}"));
    }
    if let Some(qp) = request.qp {
        argv.push(format!("--qp={qp}"));
    }
    if let Some(n) = request.segment_frames {
        argv.push(format!("--segment-frames={n}"));
    }
    let args = match VideoCommand::try_parse_from(&argv) {
        Ok(c) => c.args,
        Err(e) => return Err(bad(StatusCode::BAD_REQUEST, e.to_string())),
    };
    let settings = VideoSettings {
        qp: args.qp,
        fps: args.fps,
        segment_frames: args.segment_frames,
    };
    if let Err(e) = settings.validate() {
        return Err(bad(StatusCode::BAD_REQUEST, e.to_string()));
    }
    let paths = args.frames.clone();
    let planned = tokio::task::spawn_blocking(move || video::plan(&paths, settings)).await;
    let plan = match planned {
        Ok(Ok(plan)) => plan,
        Ok(Err(e)) => return Err(bad(StatusCode::BAD_REQUEST, e.to_string())),
        Err(e) => return Err(bad(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())),
    };
    let (job, blobs) = match crate::jobs::video_job(&plan) {
        Ok(j) => j,
        Err(e) => return Err(bad(StatusCode::BAD_REQUEST, e.to_string())),
    };
    let node = submit.node.clone();
    let resident = match crate::commands::common::store_blobs(&node, blobs).await {
        Ok(r) => r,
        Err(e) => return Err(bad(StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}"))),
    };
    if let Err(e) = tokio::fs::create_dir_all(&submit.dir).await {
        return Err(bad(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()));
    }
    let (watch, entry) = hub.add_job(format!("video {frames}"), &job);
    let id = entry.id;
    let name = format!("job-{id}.mp4");
    let path = submit.dir.join(&name);
    spawn_job(node, job, (watch, entry), resident, move |outcome| {
        use anyhow::Context;
        let write = || -> anyhow::Result<()> {
            let mut assembler = video::Assembler::create(&path, plan.assembly())?;
            for index in 0..outcome.results.len() {
                assembler.push(index as u32, &outcome.results.bytes(index)?)?;
            }
            assembler.finish()?;
            Ok(())
        };
        write().context("cannot write the MP4")?;
        Ok(vec![Output {
            path,
            content_type: "video/mp4",
            file_name: name,
        }])
    });
    Ok(id)
}
