//! Times the `change` kernel on one image pair (the Rust half of
//! `scripts/bench-change.sh`).
//!
//! `cargo run --release -p idlegrid-kernels --example change_bench -- BEFORE AFTER
//! [--method sa] [--threads N] [--repeat R] [--band-rows N]`
//!
//! Prints, for the whole job as one band (the numpy reference's way) and in the default
//! bands: the best wall time of R runs, with one thread also the mean CPU time per run
//! (robust on a machine shared with other work), Mpix/s and pixel updates per second (on
//! wall time), and the mask's SHA-256 (the numpy reference prints the same hash).
//! `CHANGE_PROFILE=1` prints the CPU time of planning and of running one chunk instead;
//! `CHANGE_CALIBRATION=1` times the calibration chunk (no arguments needed).

use std::path::PathBuf;
use std::time::Instant;

use idlegrid_kernels::change::{self, prep, ChangeParams, Method};
use idlegrid_kernels::Spread;
use rayon::prelude::*;
use sha2::Digest;

struct Args {
    before: PathBuf,
    after: PathBuf,
    method: Method,
    threads: usize,
    repeat: usize,
    band_rows: u32,
}

fn parse() -> Result<Args, String> {
    let mut it = std::env::args().skip(1);
    let mut pos = Vec::new();
    let mut a = Args {
        before: PathBuf::new(),
        after: PathBuf::new(),
        method: Method::Sa,
        threads: 1,
        repeat: 3,
        band_rows: change::DEFAULT_BAND_ROWS,
    };
    while let Some(x) = it.next() {
        let mut val = || it.next().ok_or(format!("{x} needs a value"));
        match x.as_str() {
            "--method" => a.method = val()?.parse()?,
            "--threads" => a.threads = val()?.parse().map_err(|e| format!("{e}"))?,
            "--repeat" => a.repeat = val()?.parse().map_err(|e| format!("{e}"))?,
            "--band-rows" => a.band_rows = val()?.parse().map_err(|e| format!("{e}"))?,
            _ => pos.push(PathBuf::from(x)),
        }
    }
    let [before, after] = <[PathBuf; 2]>::try_from(pos).map_err(|_| "need BEFORE AFTER")?;
    a.before = before;
    a.after = after;
    Ok(a)
}

fn run_job(diff: &prep::Difference, params: &ChangeParams) -> Result<Vec<u8>, String> {
    let plan = change::plan(diff, params).map_err(|e| e.to_string())?;
    let blobs: std::collections::HashMap<_, _> = plan.blobs.iter().cloned().collect();
    // As `idlegrid change --local` runs them: a band per thread when there are enough.
    let spread = Spread::for_chunks(plan.chunks.len(), rayon::current_num_threads());
    let results: Result<Vec<Vec<u8>>, String> = plan
        .chunks
        .par_iter()
        .map(|spec| {
            let inputs: Vec<Vec<u8>> = spec.inputs.iter().map(|c| blobs[c].clone()).collect();
            idlegrid_kernels::run_with(spec, &inputs, spread).map_err(|e| e.to_string())
        })
        .collect();
    Ok(plan.assemble(&results?).map_err(|e| e.to_string())?.pixels)
}

/// CPU time of this thread in seconds (Linux), to time pieces on a busy machine.
fn thread_cpu() -> f64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(f64::NAN, |ns| ns / 1e9)
}

/// Single-threaded CPU time of plan and of run (one band), mean of `repeat` each.
fn profile(diff: &prep::Difference, params: &ChangeParams, repeat: usize) -> Result<(), String> {
    let p = ChangeParams {
        band_rows: u32::MAX,
        ..params.clone()
    };
    let t0 = thread_cpu();
    for _ in 0..repeat {
        std::hint::black_box(change::plan(diff, &p).map_err(|e| e.to_string())?);
    }
    let plan_t = (thread_cpu() - t0) / repeat as f64;
    let plan = change::plan(diff, &p).map_err(|e| e.to_string())?;
    let blobs: std::collections::HashMap<_, _> = plan.blobs.iter().cloned().collect();
    let inputs: Vec<Vec<u8>> = plan.chunks[0]
        .inputs
        .iter()
        .map(|c| blobs[c].clone())
        .collect();
    let t0 = thread_cpu();
    for _ in 0..repeat {
        std::hint::black_box(change::run(&plan.chunks[0], &inputs).map_err(|e| e.to_string())?);
    }
    let run_t = (thread_cpu() - t0) / repeat as f64;
    let npix = diff.x.len() as f64 * (p.sweeps + p.icm_sweeps) as f64;
    println!(
        "cpu per job: plan {:.2} ms, run {:.2} ms ({:.0} M pixel-updates/s/core)",
        plan_t * 1e3,
        run_t * 1e3,
        npix / run_t / 1e6
    );
    Ok(())
}

fn main() -> Result<(), String> {
    if std::env::var_os("CHANGE_CALIBRATION").is_some() {
        let t = Instant::now();
        let (spec, blobs) = change::calibration_task();
        let made = t.elapsed().as_secs_f64();
        let map: std::collections::HashMap<_, _> = blobs.into_iter().collect();
        let inputs: Vec<Vec<u8>> = spec.inputs.iter().map(|c| map[c].clone()).collect();
        let t = Instant::now();
        idlegrid_kernels::run(&spec, &inputs).map_err(|e| e.to_string())?;
        println!(
            "calibration chunk: made in {made:.3} s, ran in {:.3} s",
            t.elapsed().as_secs_f64()
        );
        return Ok(());
    }
    let a = parse()?;
    let (x, y) = prep::load_pair(&a.before, &a.after).map_err(|e| e.to_string())?;
    if std::env::var_os("CHANGE_PROFILE").is_some() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .map_err(|e| e.to_string())?;
        let diff = prep::difference_of(&x, &y);
        return pool.install(|| profile(&diff, &ChangeParams::preset(a.method), a.repeat));
    }
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(a.threads)
        .build()
        .map_err(|e| e.to_string())?;
    let params = ChangeParams::preset(a.method);
    let sweeps = match a.method {
        Method::Sa | Method::DocLiteral => params.sweeps + params.icm_sweeps,
        Method::Icm => params.icm_sweeps,
        _ => 0,
    };
    for (label, rows) in [("one-band", u32::MAX), ("bands", a.band_rows)] {
        let p = ChangeParams {
            band_rows: rows,
            ..params.clone()
        };
        // Inside the pool: with one thread, all the work runs on the thread measured.
        let (best, cpu, mask) = pool.install(|| -> Result<(f64, f64, Vec<u8>), String> {
            let mut best = f64::INFINITY;
            let mut mask = Vec::new();
            let cpu0 = thread_cpu();
            for _ in 0..a.repeat {
                let t = Instant::now();
                let diff = prep::difference_of(&x, &y);
                mask = run_job(&diff, &p)?;
                best = best.min(t.elapsed().as_secs_f64());
            }
            Ok((best, (thread_cpu() - cpu0) / a.repeat as f64, mask))
        })?;
        let npix = mask.len() as f64;
        // CPU time is that of the calling pool thread: the whole job's only with 1 thread.
        let cpu = if a.threads == 1 { cpu } else { f64::NAN };
        println!(
            "rust {} {label} threads={} wall={:.4} cpu={:.4} Mpix/s={:.2} Mupdates/s={:.1} mask={}",
            a.method,
            a.threads,
            best,
            cpu,
            npix / best / 1e6,
            npix * sweeps as f64 / best / 1e6,
            sha2::Sha256::digest(&mask)
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        );
    }
    Ok(())
}
