//! Measures the submitter's join alone (scripts/bench-video.sh runs it under
//! `/usr/bin/time -v`): encodes one segment from a frame folder, then joins COPIES
//! copies of it into one MP4, the way a submitter joins segments that came back from
//! peers, one segment file at a time.
//!
//! ```text
//! cargo run --release -p idlegrid-kernels --example video_join -- encode FRAMES N QP SEG.h264
//! cargo run --release -p idlegrid-kernels --example video_join -- join SEG.h264 N COPIES WxH OUT.mp4
//! ```

use std::path::PathBuf;
use std::process::ExitCode;

use idlegrid_kernels::video::{self, AssemblyPlan, Fps, VideoSettings};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn number(text: &str) -> Result<u32, String> {
    text.parse().map_err(|e| format!("{text:?}: {e}"))
}

fn run(args: &[String]) -> Result<(), String> {
    match args {
        [mode, frames, n, qp, out] if mode == "encode" => {
            let n = number(n)?;
            let settings = VideoSettings {
                segment_frames: n,
                qp: u8::try_from(number(qp)?).map_err(|e| e.to_string())?,
                ..VideoSettings::default()
            };
            let mut paths =
                video::list_frames(&[PathBuf::from(frames)]).map_err(|e| e.to_string())?;
            paths.truncate(n as usize);
            let plan = video::plan_frames(paths, settings).map_err(|e| e.to_string())?;
            let chunk = plan.chunks.first().ok_or("no frames")?;
            let segment =
                video::encode_segment_files(&plan, chunk, &|| {}).map_err(|e| e.to_string())?;
            std::fs::write(out, &segment).map_err(|e| e.to_string())?;
            let (w, h) = (plan.assembly().width, plan.assembly().height);
            println!(
                "{out}: {} frames of {w}x{h}, {} bytes",
                chunk.frames.len(),
                segment.len()
            );
            Ok(())
        }
        [mode, segment, n, copies, size, out] if mode == "join" => {
            let (w, h) = size.split_once('x').ok_or("size must be WxH")?;
            let plan = AssemblyPlan {
                width: number(w)?,
                height: number(h)?,
                fps: Fps::default(),
                segment_frames: vec![number(n)?; number(copies)? as usize],
            };
            let segments = vec![PathBuf::from(segment); plan.segment_frames.len()];
            let report =
                video::assemble_files(&plan, &segments, out.as_ref()).map_err(|e| e.to_string())?;
            println!("{out}: {} frames, {} bytes", report.frames, report.bytes);
            Ok(())
        }
        _ => Err(
            "usage: video_join encode FRAMES N QP SEG.h264 | join SEG.h264 N COPIES WxH OUT.mp4"
                .into(),
        ),
    }
}
