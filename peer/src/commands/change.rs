//! `idlegrid change BEFORE AFTER -o MASK.png [--local]`: what changed between two images
//! of the same scene, as a black/white mask (8-bit PNG, 255 = changed).
//!
//! Flow: load and check both images (limits, same size) → difference image → plan
//! (tables blob + row bands, from the parameters only) → execute the chunks
//! ([`execute_local`] on a rayon pool over all cores; the grid runs the very same chunks
//! on peers) → assemble → write the mask (and `--overlay`) atomically: a temporary file
//! next to the output, renamed into place at the end, so an error leaves nothing
//! half-written. One summary line goes to stdout; a progress bar to a terminal's stderr
//! for jobs longer than a second.
//!
//! `--write-sample` instead writes a generated demo pair to BEFORE and AFTER.

use std::fs::File;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::commands::common::{finish_report, run_on_grid, GridArgs, NetArgs};
use crate::commands::job_page::JobPage;
use anyhow::Context;
use idlegrid_kernels::change::{self, prep, ChangeParams, ChangePlan, Mask, Method};
use idlegrid_kernels::Spread;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use rayon::prelude::*;

/// Arguments of `idlegrid change`.
#[derive(clap::Args, Debug)]
pub struct ChangeArgs {
    /// The earlier image (png, jpeg, bmp, tiff, gif, webp; colour, grey, 16-bit or alpha).
    pub before: PathBuf,
    /// The later image, of the same size and scene.
    pub after: PathBuf,
    /// Where to write the mask (8-bit PNG, 255 = changed). Written atomically.
    #[arg(short, long, required_unless_present = "write_sample")]
    pub output: Option<PathBuf>,
    /// Method: sa (simulated annealing, default), icm, otsu, bayes, doc_literal.
    #[arg(long, default_value = "sa")]
    pub method: Method,
    /// Ising coupling β, nats per neighbour pair (0..=4) [default: 1].
    #[arg(long)]
    pub beta: Option<f64>,
    /// Annealing sweeps (sa, doc_literal) or ICM sweeps (icm) [default: 30; icm: 10].
    #[arg(long)]
    pub sweeps: Option<u32>,
    /// ICM sweeps after the annealing (sa, doc_literal) [default: 3].
    #[arg(long)]
    pub icm_sweeps: Option<u32>,
    /// Neighbourhood: 3 (3×3) or 5 (5×5).
    #[arg(long, default_value_t = 3, value_parser = parse_neighbourhood)]
    pub neighbourhood: u32,
    /// Seed of the annealing's random numbers.
    #[arg(long, default_value_t = 2005)]
    pub seed: u64,
    /// Initial split: X > SPLIT·σ(X) starts as "changed".
    #[arg(long, default_value_t = 2.0)]
    pub split: f64,
    /// Refine the class statistics by EM (`--em` or `--em=false`) [default: off; icm: on].
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub em: Option<bool>,
    /// Own rows per chunk (each chunk also computes its halo rows). An image of 12
    /// bands or more ends with three bands of ½, ¼ and ¼ of this, and its other bands
    /// share the rest, a little taller: the count stays ⌈height / N⌉.
    #[arg(long, default_value_t = change::DEFAULT_BAND_ROWS)]
    pub band_rows: u32,
    /// Also write the after-image with the changes tinted red (PNG).
    #[arg(long, value_name = "FILE")]
    pub overlay: Option<PathBuf>,
    /// Compute threads for --local [default: all cores].
    #[arg(long)]
    pub threads: Option<usize>,
    /// Write a generated demo pair to BEFORE and AFTER (and its ground truth to -o if
    /// given) instead of detecting.
    #[arg(long)]
    pub write_sample: bool,
    /// Size of the --write-sample pair.
    #[arg(long, default_value = "1024x768", value_parser = parse_size)]
    pub sample_size: (u32, u32),
    #[command(flatten)]
    pub grid: GridArgs,
    #[command(flatten)]
    pub net: NetArgs,
}

fn parse_neighbourhood(text: &str) -> Result<u32, String> {
    match text {
        "3" | "3x3" => Ok(3),
        "5" | "5x5" => Ok(5),
        _ => Err(format!("{text:?}: the neighbourhood is 3 or 5")),
    }
}

fn parse_size(text: &str) -> Result<(u32, u32), String> {
    let bad = || format!("{text:?}: expected WIDTHxHEIGHT, e.g. 1024x768");
    let (w, h) = text.split_once(['x', 'X']).ok_or_else(bad)?;
    let w: u32 = w.trim().parse().map_err(|_| bad())?;
    let h: u32 = h.trim().parse().map_err(|_| bad())?;
    if w == 0 || h == 0 || w as u64 * h as u64 > prep::MAX_PIXELS {
        return Err(format!("{text}: size out of range"));
    }
    Ok((w, h))
}

impl ChangeArgs {
    /// The job's parameters: the method's reference preset, overridden by the flags.
    pub fn params(&self) -> anyhow::Result<ChangeParams> {
        let mut p = ChangeParams::preset(self.method);
        p.radius = if self.neighbourhood == 5 { 2 } else { 1 };
        p.seed = self.seed;
        p.t_split = self.split;
        p.band_rows = self.band_rows;
        if let Some(em) = self.em {
            p.em = em;
        }
        if let Some(beta) = self.beta {
            p.beta = beta;
        }
        if let Some(s) = self.sweeps {
            if self.method == Method::Icm {
                p.icm_sweeps = s;
            } else {
                p.sweeps = s;
            }
        }
        if let Some(s) = self.icm_sweeps {
            p.icm_sweeps = s;
        }
        p.check()
            .map_err(|e| anyhow::anyhow!("invalid parameter: {e}"))?;
        Ok(p)
    }
}

pub fn run(args: ChangeArgs) -> anyhow::Result<()> {
    if args.write_sample {
        return write_sample(&args);
    }
    let page = JobPage::new(&args.grid)?;
    let result = detect(&args, &page);
    page.finish(result)
}

fn detect(args: &ChangeArgs, page: &JobPage) -> anyhow::Result<()> {
    let output = args.output.clone().context("-o/--output is required")?;
    let params = args.params()?;
    let started = Instant::now();
    // Claim the output paths first: an unwritable path fails before any work.
    let mask_file = AtomicFile::create(&output)?;
    let overlay_file = match &args.overlay {
        Some(path) => Some(AtomicFile::create(path)?),
        None => None,
    };
    let (before, after) = prep::load_pair(&args.before, &args.after)?;
    let diff = prep::difference_of(&before, &after);
    let mut plan = change::plan(&diff, &params).context("cannot plan the job")?;
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let (results, mut outcome) = if args.grid.local && !page.wanted() {
        (execute_local(&plan, threads, started)?, None)
    } else {
        let (job, blobs) = crate::jobs::change_job(&plan);
        // The job's blobs now hold the planner's bytes (kept in memory while the job
        // runs); assembling needs only the plan's bands.
        plan.blobs = Vec::new();
        let net = JobPage::net_args(&args.net, args.threads);
        let run = run_on_grid(&net, &args.grid, blobs, job, page)?;
        let results = run.outcome.results.all_bytes()?;
        (results, Some(run.into_outcome()))
    };
    let mask = plan
        .assemble(&results)
        .context("cannot assemble the mask")?;
    let mask_bytes =
        mask_png(&mask).with_context(|| format!("cannot write {}", output.display()))?;
    let overlay_bytes = match &args.overlay {
        Some(path) => Some(
            overlay_png(&after, &mask)
                .with_context(|| format!("cannot write {}", path.display()))?,
        ),
        None => None,
    };
    mask_file.commit(&mask_bytes)?;
    if let (Some(file), Some(bytes)) = (overlay_file, overlay_bytes) {
        file.commit(&bytes)?;
    }
    if let Some(outcome) = &mut outcome {
        finish_report(outcome, &output, args.grid.report.as_deref())?;
    }
    println!(
        "{}: {:.2}% of {}x{} pixels changed ({}, {} chunks) in {:.2} s",
        output.display(),
        100.0 * mask.changed_fraction(),
        mask.width,
        mask.height,
        params.method,
        plan.chunks.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Runs every chunk of `plan` on this machine, on a rayon pool of `threads` threads, and
/// returns the results in chunk order. The grid runs the same chunks through the same
/// `idlegrid_kernels::run`, so the assembled bytes are the same.
pub fn execute_local(
    plan: &ChangePlan,
    threads: usize,
    started: Instant,
) -> anyhow::Result<Vec<bytes::Bytes>> {
    let blobs: std::collections::HashMap<_, _> = plan.blobs.iter().map(|(c, b)| (*c, b)).collect();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads.max(1))
        .build()
        .context("cannot start the compute threads")?;
    let bar = LazyBar::new(plan.chunks.len() as u64, started);
    // Bands enough for every thread: each runs on one (and the change engine in its
    // cache-friendly order); fewer bands than threads spread over the pool.
    let spread = Spread::for_chunks(plan.chunks.len(), threads);
    let results = pool.install(|| {
        plan.chunks
            .par_iter()
            .enumerate()
            .map(|(i, spec)| {
                // Borrowed from the plan: the kernel reads its inputs, copying them
                // here would be a second pass over the image per job.
                let inputs: Vec<&[u8]> = spec
                    .inputs
                    .iter()
                    .map(|c| {
                        blobs
                            .get(c)
                            .map(|b| b.as_slice())
                            .with_context(|| format!("chunk {i}: blob {} missing", c.short()))
                    })
                    .collect::<anyhow::Result<_>>()?;
                let out = idlegrid_kernels::run_with(spec, &inputs, spread)
                    .with_context(|| format!("chunk {i} failed"))?;
                bar.inc();
                Ok(bytes::Bytes::from(out))
            })
            .collect::<anyhow::Result<Vec<_>>>()
    });
    bar.finish();
    results
}

/// A progress bar that appears only on a terminal and only once the job has run for
/// more than a second.
struct LazyBar {
    bar: ProgressBar,
    done: AtomicU64,
    started: Instant,
    terminal: bool,
}

impl LazyBar {
    fn new(total: u64, started: Instant) -> LazyBar {
        let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::hidden());
        if let Ok(style) = ProgressStyle::with_template(
            "{elapsed_precise} [{bar:40}] {pos}/{len} bands  eta {eta}",
        ) {
            bar.set_style(style);
        }
        LazyBar {
            bar,
            done: AtomicU64::new(0),
            started,
            terminal: std::io::stderr().is_terminal(),
        }
    }

    fn inc(&self) {
        self.done.fetch_add(1, Ordering::Relaxed);
        if self.terminal && self.bar.is_hidden() && self.started.elapsed() > Duration::from_secs(1)
        {
            self.bar.set_draw_target(ProgressDrawTarget::stderr());
        }
        self.bar.inc(1);
    }

    fn finish(&self) {
        if !self.bar.is_hidden() {
            self.bar.finish_and_clear();
        }
    }
}

/// A file written under a temporary name next to its final path and renamed into place by
/// [`AtomicFile::commit`]; dropped uncommitted, it removes the temporary file.
struct AtomicFile {
    path: PathBuf,
    tmp: PathBuf,
    file: Option<File>,
    done: bool,
}

impl AtomicFile {
    /// Creates the temporary file now, so an unwritable path fails before any work.
    fn create(path: &Path) -> anyhow::Result<AtomicFile> {
        let name = path
            .file_name()
            .with_context(|| format!("cannot write {}: not a file path", path.display()))?;
        if path.is_dir() {
            anyhow::bail!("cannot write {}: it is a directory", path.display());
        }
        let mut tmp_name = std::ffi::OsString::from(".");
        tmp_name.push(name);
        tmp_name.push(format!(".{}.tmp", std::process::id()));
        let tmp = path.with_file_name(tmp_name);
        let file =
            File::create(&tmp).with_context(|| format!("cannot write {}", path.display()))?;
        Ok(AtomicFile {
            path: path.to_path_buf(),
            tmp,
            file: Some(file),
            done: false,
        })
    }

    /// Writes `bytes`, syncs, closes and renames the file into place.
    fn commit(mut self, bytes: &[u8]) -> anyhow::Result<()> {
        let ctx = || format!("cannot write {}", self.path.display());
        if let Some(mut file) = self.file.take() {
            file.write_all(bytes).with_context(ctx)?;
            file.sync_all().with_context(ctx)?;
        }
        std::fs::rename(&self.tmp, &self.path).with_context(ctx)?;
        self.done = true;
        Ok(())
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        self.file = None;
        if !self.done {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

fn png_encoder(out: &mut Vec<u8>) -> image::codecs::png::PngEncoder<&mut Vec<u8>> {
    image::codecs::png::PngEncoder::new_with_quality(
        out,
        image::codecs::png::CompressionType::Fast,
        image::codecs::png::FilterType::Adaptive,
    )
}

/// The mask as an 8-bit grey PNG.
pub fn mask_png(mask: &Mask) -> anyhow::Result<Vec<u8>> {
    use image::ImageEncoder;
    let mut out = Vec::new();
    png_encoder(&mut out).write_image(
        &mask.pixels,
        mask.width,
        mask.height,
        image::ExtendedColorType::L8,
    )?;
    Ok(out)
}

/// The after-image with changed pixels tinted red, as an RGB PNG.
pub fn overlay_png(after: &image::DynamicImage, mask: &Mask) -> anyhow::Result<Vec<u8>> {
    use image::ImageEncoder;
    let mut rgb = after.to_rgb8();
    for (px, &m) in rgb.pixels_mut().zip(&mask.pixels) {
        if m != 0 {
            let [r, g, b] = px.0;
            px.0 = [
                ((r as u16 + 3 * 255) / 4) as u8,
                (g as u16 * 2 / 5) as u8,
                (b as u16 * 2 / 5) as u8,
            ];
        }
    }
    let mut out = Vec::new();
    png_encoder(&mut out).write_image(
        rgb.as_raw(),
        rgb.width(),
        rgb.height(),
        image::ExtendedColorType::Rgb8,
    )?;
    Ok(out)
}

/// `--write-sample`: a generated pair to BEFORE and AFTER (PNG), truth to -o if given.
fn write_sample(args: &ChangeArgs) -> anyhow::Result<()> {
    use image::ImageEncoder;
    let (w, h) = args.sample_size;
    let pair = change::sample_pair(w, h, args.seed);
    let mut files = Vec::new();
    for (path, img) in [(&args.before, &pair.before), (&args.after, &pair.after)] {
        let f = AtomicFile::create(path)?;
        let mut bytes = Vec::new();
        png_encoder(&mut bytes)
            .write_image(img.as_raw(), w, h, image::ExtendedColorType::Rgb8)
            .with_context(|| format!("cannot write {}", path.display()))?;
        files.push((f, bytes));
    }
    if let Some(path) = &args.output {
        let f = AtomicFile::create(path)?;
        let truth = Mask {
            width: w,
            height: h,
            pixels: pair.truth,
        };
        files.push((f, mask_png(&truth)?));
    }
    for (f, bytes) in files {
        f.commit(&bytes)?;
    }
    println!(
        "wrote a {w}x{h} sample pair to {} and {}",
        args.before.display(),
        args.after.display()
    );
    Ok(())
}
