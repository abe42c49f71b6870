//! `idlegrid video FRAMES -o OUT.mp4 [--fps 30] [--qp 22] [--segment-frames N] [--local]`:
//! a folder of frames (or a quoted glob, or the frame files) becomes one H.264 MP4.
//!
//! Flow: plan (list, check headers, hash streaming, cut into segments) → execute the
//! chunks ([`execute_local`] on a rayon pool here; the grid runs the same chunks on
//! peers) → join the segment files by index into the MP4. Segment files live in a
//! temporary folder next to the output and the MP4 is written to a temporary file that
//! is renamed into place at the end, so an error leaves neither behind.
//!
//! `--write-sample COUNT` instead writes generated demo frames into FRAMES.

use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::commands::common::{finish_report, run_on_grid, GridArgs, NetArgs};
use crate::commands::job_page::JobPage;
use anyhow::Context;
use idlegrid_kernels::video::{
    self,
    params::{DEFAULT_QP, DEFAULT_SEGMENT_FRAMES},
    Fps, VideoError, VideoPlan, VideoSettings,
};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use rayon::prelude::*;

/// Arguments of `idlegrid video`.
#[derive(clap::Args, Debug)]
pub struct VideoArgs {
    /// A folder of frames (png, jpeg, bmp, tiff, gif, webp; natural order: frame_2
    /// before frame_10), a quoted glob pattern such as "shots/*.png", or frame files.
    #[arg(required = true, value_name = "FRAMES")]
    pub frames: Vec<PathBuf>,
    /// Where to write the video (MP4, H.264). Written atomically.
    #[arg(short, long, required_unless_present = "write_sample")]
    pub output: Option<PathBuf>,
    /// Frame rate: 30, 29.97 or 30000/1001.
    #[arg(long, default_value = "30")]
    pub fps: Fps,
    /// Fixed quantiser, 0 (best) ..= 51 (smallest).
    #[arg(long, default_value_t = DEFAULT_QP, value_parser = clap::value_parser!(u8).range(0..=51))]
    pub qp: u8,
    /// Frames per segment (one chunk of work; each starts with a keyframe), 2..=1024.
    #[arg(long, default_value_t = DEFAULT_SEGMENT_FRAMES)]
    pub segment_frames: u32,
    /// Encoder threads for --local (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Write COUNT generated demo frames into the FRAMES folder instead of encoding.
    #[arg(long, value_name = "COUNT")]
    pub write_sample: Option<u32>,
    /// Size of the demo frames of --write-sample.
    #[arg(long, default_value = "1920x1080", value_parser = parse_size)]
    pub sample_size: (u32, u32),
    #[command(flatten)]
    pub grid: GridArgs,
    #[command(flatten)]
    pub net: NetArgs,
}

fn parse_size(text: &str) -> Result<(u32, u32), String> {
    let (w, h) = text
        .split_once(['x', 'X'])
        .ok_or_else(|| format!("{text:?}: expected WIDTHxHEIGHT, e.g. 1920x1080"))?;
    let parse = |v: &str| {
        v.trim()
            .parse::<u32>()
            .map_err(|e| format!("{text:?}: {e}"))
    };
    Ok((parse(w)?, parse(h)?))
}

pub fn run(args: VideoArgs) -> anyhow::Result<()> {
    if let Some(count) = args.write_sample {
        return write_sample(&args, count);
    }
    let page = JobPage::new(&args.grid)?;
    let result = encode(&args, &page);
    page.finish(result)
}

fn encode(args: &VideoArgs, page: &JobPage) -> anyhow::Result<()> {
    let output = args
        .output
        .clone()
        .context("an output file is needed: -o OUT.mp4")?;
    let settings = VideoSettings {
        qp: args.qp,
        fps: args.fps,
        segment_frames: args.segment_frames,
    };
    settings.validate()?;
    let started = Instant::now();
    // Temporary segment folder next to the output: checks that the output's folder is
    // writable before any work, and is removed on drop, on success or error.
    let segment_dir = temp_dir_near(&output)?;
    let plan = video::plan(&args.frames, settings)?;
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let report = if args.grid.local && !page.wanted() {
        let progress = progress_bar(plan.frame_count());
        let segments = execute_local(&plan, segment_dir.path(), threads, &|| progress.inc(1));
        progress.finish_and_clear();
        let segments = segments?;
        video::assemble_files(&plan.assembly(), &segments, &output)?
    } else {
        execute_on_grid(args, &plan, &output, page)?
    };
    drop(segment_dir);
    let secs = started.elapsed().as_secs_f64();
    let assembly = plan.assembly();
    println!(
        "wrote {}: {} frames, {}x{}{}, {} fps, {:.1} MB in {:.1} s ({:.1} frames/s)",
        output.display(),
        report.frames,
        assembly.width,
        assembly.height,
        if (assembly.width, assembly.height) != (plan.width, plan.height) {
            " (padded to even)"
        } else {
            ""
        },
        plan.settings.fps,
        report.bytes as f64 / 1e6,
        secs,
        report.frames as f64 / secs.max(1e-9)
    );
    Ok(())
}

/// Runs the plan's chunks on the grid, then joins the verified segments in index order
/// straight from the blob store, one segment in memory at a time.
fn execute_on_grid(
    args: &VideoArgs,
    plan: &VideoPlan,
    output: &Path,
    page: &JobPage,
) -> anyhow::Result<video::AssemblyReport> {
    // Claims the output (and checks it is writable) before any work is sent out.
    let mut assembler = video::Assembler::create(output, plan.assembly())?;
    let (job, blobs) = crate::jobs::video_job(plan)?;
    let net = JobPage::net_args(&args.net, args.threads);
    let mut run = run_on_grid(&net, &args.grid, blobs, job, page)?;
    for index in 0..run.outcome.results.len() {
        assembler.push(index as u32, &run.outcome.results.bytes(index)?)?;
    }
    let report = assembler.finish()?;
    finish_report(&mut run.outcome, output, args.grid.report.as_deref())?;
    Ok(report)
}

/// Runs every chunk of `plan` on this machine on a pool of `threads`, writing segment
/// `i` to `dir/segment_{i}.h264`; returns the segment files by index. Frames are read
/// from their files one at a time; `on_frame` is called per encoded frame.
pub fn execute_local(
    plan: &VideoPlan,
    dir: &Path,
    threads: usize,
    on_frame: &(dyn Fn() + Sync),
) -> Result<Vec<PathBuf>, VideoError> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads.max(1))
        .thread_name(|i| format!("video-encoder-{i}"))
        .build()
        .map_err(|e| VideoError::Encoder(format!("cannot start encoder threads: {e}")))?;
    pool.install(|| {
        plan.chunks
            .par_iter()
            .map(|chunk| {
                let segment = video::encode_segment_files(plan, chunk, on_frame)?;
                let path = dir.join(format!("segment_{:06}.h264", chunk.index));
                std::fs::write(&path, &segment).map_err(|err| VideoError::Output {
                    path: path.clone(),
                    err,
                })?;
                Ok(path)
            })
            .collect()
    })
}

fn temp_dir_near(output: &Path) -> anyhow::Result<tempfile::TempDir> {
    let dir = video::assemble::output_dir(output)?;
    let name = output
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    tempfile::Builder::new()
        .prefix(&format!(".{name}.segments."))
        .tempdir_in(dir)
        .map_err(|err| VideoError::Output {
            path: output.to_path_buf(),
            err,
        })
        .map_err(Into::into)
}

fn progress_bar(total: u64) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template(
        "{elapsed_precise} [{bar:40}] {pos}/{len} frames  {per_sec}  eta {eta}",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

fn write_sample(args: &VideoArgs, count: u32) -> anyhow::Result<()> {
    let [dir] = args.frames.as_slice() else {
        anyhow::bail!("--write-sample takes one folder to write the frames into");
    };
    let (w, h) = args.sample_size;
    let paths = video::write_sample_frames(dir, count, w, h)?;
    println!(
        "wrote {} demo frames of {w}x{h} into {}",
        paths.len(),
        dir.display()
    );
    Ok(())
}
