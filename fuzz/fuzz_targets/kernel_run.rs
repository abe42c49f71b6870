//! The kernels' `run` on hostile params and inputs of a tiny size: what a worker does
//! with a chunk that passed validation and whose input blobs match their Cids (a
//! hostile submitter controls both). Sizes stay tiny so that one execution takes
//! microseconds, not so that anything is skipped: every check runs on every input.
//!
//! change: a real plan of a tiny image pair built from the fuzz bytes (so the tables
//! and band blobs are usually well-formed and the engine runs), then optionally one
//! byte of the params or of one blob flipped. video: params naming a few frames whose
//! bytes come from the fuzzer (the image decoders' limits are what is exercised).
//! noop: any tag and inputs.
//!
//! Everything runs on a one-thread rayon pool: on images this small the change
//! engine's parallel phases are a few rows each, and handing them to other threads
//! (futex wake-ups, work stealing) cost more than the work itself — most of each
//! execution in a profile. The code run is the same; that the output does not depend
//! on the thread count is shown by the kernels' own tests.
#![no_main]

use idlegrid_kernels::change::{self, ChangeParams, Method};
use idlegrid_kernels::video::{Fps, SegmentParams, ENCODER_ID};
use idlegrid_protocol::{Cid, TaskSpec};
use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

/// Largest image side in the change case. Every path of the worker (bands clipped at
/// either edge or not, halos, 1–3 column classes, every sweep kind) is reached at this
/// size; larger images only made each execution longer (24 ran at half the speed).
const SIDE: u32 = 12;

fn change_case(u: &mut Unstructured) -> Result<Option<(TaskSpec, Vec<Vec<u8>>)>> {
    let width = u.int_in_range(1..=SIDE)?;
    let height = u.int_in_range(1..=SIDE)?;
    let n = (width * height) as usize;
    let before: Vec<u8> = (0..n).map(|_| u.arbitrary()).collect::<Result<_>>()?;
    let after: Vec<u8> = (0..n).map(|_| u.arbitrary()).collect::<Result<_>>()?;
    let method = *u.choose(&[
        Method::Sa,
        Method::Icm,
        Method::Otsu,
        Method::Bayes,
        Method::DocLiteral,
    ])?;
    let mut params = ChangeParams::preset(method);
    params.radius = u.int_in_range(1..=2)?;
    params.window_radius = u.int_in_range(0..=3)?;
    params.beta = f64::from(u.int_in_range(0u8..=40)?) / 10.0;
    params.sweeps = u.int_in_range(0..=6)?;
    params.icm_sweeps = u.int_in_range(0..=3)?;
    params.seed = u.arbitrary()?;
    params.band_rows = u.int_in_range(1..=SIDE)?;
    if params.check().is_err() {
        return Ok(None);
    }
    let diff = change::difference(width, height, &before, &after);
    let Ok(plan) = change::plan(&diff, &params) else {
        return Ok(None);
    };
    if plan.chunks.is_empty() {
        return Ok(None);
    }
    let mut spec = u.choose(&plan.chunks)?.clone();
    let blob = |cid: &Cid| {
        plan.blobs
            .iter()
            .find(|(c, _)| c == cid)
            .map(|(_, b)| b.clone())
    };
    let mut inputs: Vec<Vec<u8>> = spec.inputs.iter().filter_map(blob).collect();
    // Flip one byte somewhere (or nothing): a hostile submitter's small lie.
    match u.int_in_range(0u8..=2)? {
        1 if !spec.params.is_empty() => {
            let i = u.choose_index(spec.params.len())?;
            spec.params[i] ^= u.int_in_range(1u8..=255)?;
        }
        2 if !inputs.is_empty() => {
            let which = u.choose_index(inputs.len())?;
            if !inputs[which].is_empty() {
                let i = u.choose_index(inputs[which].len())?;
                inputs[which][i] ^= u.int_in_range(1u8..=255)?;
            }
        }
        _ => {}
    }
    spec.inputs = inputs.iter().map(|b| Cid::of(b)).collect();
    Ok(Some((spec, inputs)))
}

fn video_case(u: &mut Unstructured) -> Result<Option<(TaskSpec, Vec<Vec<u8>>)>> {
    let frames = u.int_in_range(1usize..=3)?;
    let mut inputs = Vec::with_capacity(frames);
    for _ in 0..frames {
        let len = u.int_in_range(1usize..=256)?;
        inputs.push(u.bytes(len)?.to_vec());
    }
    let params = SegmentParams {
        encoder: ENCODER_ID.into(),
        width: u.int_in_range(1..=16)?,
        height: u.int_in_range(1..=16)?,
        qp: u.int_in_range(0..=51)?,
        fps: Fps::default(),
        segment: u.arbitrary()?,
        first_frame: u.int_in_range(0..=1000)?,
        frame_bytes: inputs.iter().map(|b| b.len() as u64).collect(),
    };
    let Ok(params) = params.to_bytes() else {
        return Ok(None);
    };
    let spec = TaskSpec {
        kernel: idlegrid_kernels::video::NAME.into(),
        kernel_version: idlegrid_kernels::video::VERSION,
        params,
        inputs: inputs.iter().map(|b| Cid::of(b)).collect(),
    };
    Ok(Some((spec, inputs)))
}

fn noop_case(u: &mut Unstructured) -> Result<Option<(TaskSpec, Vec<Vec<u8>>)>> {
    let tag_len = u.int_in_range(0usize..=80)?;
    let tag = u.bytes(tag_len)?.to_vec();
    let inputs: Vec<Vec<u8>> = u.arbitrary()?;
    let spec = TaskSpec {
        kernel: idlegrid_kernels::noop::NAME.into(),
        kernel_version: idlegrid_kernels::noop::VERSION,
        params: tag,
        inputs: inputs.iter().map(|b| Cid::of(b)).collect(),
    };
    Ok(Some((spec, inputs)))
}

/// The one-thread pool every execution runs in (`None` if it cannot be built: then
/// the global pool is used, slower but the same checks).
fn pool() -> Option<&'static rayon::ThreadPool> {
    static POOL: OnceLock<Option<rayon::ThreadPool>> = OnceLock::new();
    POOL.get_or_init(|| rayon::ThreadPoolBuilder::new().num_threads(1).build().ok())
        .as_ref()
}

fuzz_target!(|data: &[u8]| {
    match pool() {
        Some(pool) => pool.install(|| one(data)),
        None => one(data),
    }
});

fn one(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let case = match u.int_in_range(0u8..=2) {
        Ok(0) => change_case(&mut u),
        Ok(1) => video_case(&mut u),
        Ok(_) => noop_case(&mut u),
        Err(_) => return,
    };
    let Ok(Some((spec, inputs))) = case else {
        return;
    };
    let first = idlegrid_kernels::run(&spec, &inputs);
    // Deterministic on hostile input too: the same bytes give the same answer.
    if let Ok(output) = &first {
        let again = idlegrid_kernels::run(&spec, &inputs).expect("second run of an accepted chunk");
        assert_eq!(&again, output, "kernel output is not deterministic");
    }
}
