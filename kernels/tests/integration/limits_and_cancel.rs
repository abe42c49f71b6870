//! What the grid asks of every kernel besides running it: the largest input a chunk's
//! params allow (`input_limits`, before a worker fetches), the largest and the
//! well-formed result (`max_result_len`, `check_result`, before a submitter accepts),
//! and stopping a running chunk (`run_cancellable`) without changing a bit of what
//! finishes.

use std::collections::HashMap;

use idlegrid_kernels::change::{self, ChangeParams};
use idlegrid_kernels::video::{self, sample, Fps, SegmentParams, ENCODER_ID};
use idlegrid_kernels::{noop, Cancel, KernelError, Spread};
use idlegrid_protocol::{Cid, TaskSpec};

fn change_plan(side: u32, band_rows: u32, sweeps: u32) -> change::ChangePlan {
    let params = ChangeParams {
        band_rows,
        sweeps,
        ..ChangeParams::default()
    };
    change::sample_plan(side, 3, &params).unwrap()
}

fn inputs_of(plan: &change::ChangePlan, spec: &TaskSpec) -> Vec<Vec<u8>> {
    let blobs: HashMap<_, _> = plan.blobs.iter().cloned().collect();
    spec.inputs.iter().map(|c| blobs[c].clone()).collect()
}

#[test]
fn change_limits_are_exact_for_pieces_and_results() {
    let plan = change_plan(48, 16, 3);
    for spec in &plan.chunks {
        let inputs = inputs_of(&plan, spec);
        let limits = idlegrid_kernels::input_limits(spec).unwrap();
        assert_eq!(limits.len(), inputs.len());
        assert!(inputs[0].len() as u64 <= limits[0], "the tables fit");
        for (piece, limit) in inputs[1..].iter().zip(&limits[1..]) {
            assert_eq!(piece.len() as u64, *limit, "a piece's limit is its size");
        }
        assert_eq!(
            idlegrid_kernels::input_limit(spec, inputs.len()),
            None,
            "no such input"
        );
        let result = idlegrid_kernels::run(spec, &inputs).unwrap();
        assert_eq!(result.len() as u64, idlegrid_kernels::max_result_len(spec));
        idlegrid_kernels::check_result(spec, &result).unwrap();
        let mut short = result.clone();
        short.pop();
        assert!(idlegrid_kernels::check_result(spec, &short).is_err());
        let mut long = result;
        long.push(0);
        assert!(idlegrid_kernels::check_result(spec, &long).is_err());
    }
    // A spec no peer would run bounds nothing: no result of it is acceptable.
    let mut broken = plan.chunks[0].clone();
    broken.params = vec![1, 2, 3];
    assert_eq!(idlegrid_kernels::max_result_len(&broken), 0);
    assert!(idlegrid_kernels::input_limits(&broken).is_err());
    assert!(idlegrid_kernels::check_result(&broken, &[]).is_err());
}

#[test]
fn noop_limits() {
    let spec = noop::task(1, vec![Cid::of(b"x")]);
    assert_eq!(
        idlegrid_kernels::input_limits(&spec).unwrap(),
        vec![noop::MAX_INPUT]
    );
    let result = idlegrid_kernels::run(&spec, &[b"x"]).unwrap();
    assert_eq!(result.len() as u64, idlegrid_kernels::max_result_len(&spec));
    idlegrid_kernels::check_result(&spec, &result).unwrap();
    assert!(idlegrid_kernels::check_result(&spec, &result[1..]).is_err());
}

fn video_chunk(frames: u32) -> (TaskSpec, Vec<Vec<u8>>) {
    let blobs: Vec<Vec<u8>> = (0..frames)
        .map(|i| sample::sample_png(i, 32, 32).unwrap())
        .collect();
    let params = SegmentParams {
        encoder: ENCODER_ID.into(),
        width: 32,
        height: 32,
        qp: 22,
        fps: Fps::default(),
        segment: 0,
        first_frame: 0,
        frame_bytes: blobs.iter().map(|b| b.len() as u64).collect(),
    };
    let spec = TaskSpec {
        kernel: video::NAME.into(),
        kernel_version: video::VERSION,
        params: params.to_bytes().unwrap(),
        inputs: blobs.iter().map(|b| Cid::of(b)).collect(),
    };
    (spec, blobs)
}

#[test]
fn video_limits_bound_frames_and_check_segments() {
    let (spec, blobs) = video_chunk(3);
    let limits = idlegrid_kernels::input_limits(&spec).unwrap();
    let sizes: Vec<u64> = blobs.iter().map(|b| b.len() as u64).collect();
    assert_eq!(limits, sizes, "a frame's limit is its declared size");
    let segment = idlegrid_kernels::run(&spec, &blobs).unwrap();
    assert!(segment.len() as u64 <= idlegrid_kernels::max_result_len(&spec));
    idlegrid_kernels::check_result(&spec, &segment).unwrap();
    // Cut after the first picture: the frame count is wrong.
    let (two, two_blobs) = video_chunk(2);
    let other = idlegrid_kernels::run(&two, &two_blobs).unwrap();
    let reason = idlegrid_kernels::check_result(&spec, &other).unwrap_err();
    assert!(reason.contains("pictures"), "{reason}");
    // Not a segment at all, and a segment that lost its parameter sets.
    assert!(idlegrid_kernels::check_result(&spec, &[0u8; 64]).is_err());
    assert!(idlegrid_kernels::check_result(&spec, &segment[8..]).is_err());

    // A frame declared far larger than a 32x32 picture can be is refused up front.
    let mut params: SegmentParams = idlegrid_protocol::decode(&spec.params, 1 << 20).unwrap();
    params.frame_bytes[1] = video::params::max_frame_bytes(32, 32) + 1;
    let inflated = TaskSpec {
        params: params.to_bytes().unwrap(),
        ..spec.clone()
    };
    let err = idlegrid_kernels::validate(&inflated).unwrap_err();
    assert!(err.to_string().contains("32x32"), "{err}");
}

#[test]
fn a_cancelled_kernel_stops_and_an_uncancelled_one_gives_the_same_bytes() {
    let plan = change_plan(40, 40, 4);
    let spec = &plan.chunks[0];
    let inputs = inputs_of(&plan, spec);
    let cancel = Cancel::new();
    for spread in [Spread::Pool, Spread::OneThread] {
        assert_eq!(
            idlegrid_kernels::run_cancellable(spec, &inputs, spread, &cancel).unwrap(),
            idlegrid_kernels::run(spec, &inputs).unwrap()
        );
    }
    cancel.cancel();
    for spread in [Spread::Pool, Spread::OneThread] {
        let err = idlegrid_kernels::run_cancellable(spec, &inputs, spread, &cancel).unwrap_err();
        assert!(matches!(err, KernelError::Cancelled), "{err}");
    }

    let (spec, blobs) = video_chunk(2);
    let err = idlegrid_kernels::run_cancellable(&spec, &blobs, Spread::Pool, &cancel).unwrap_err();
    assert!(matches!(err, KernelError::Cancelled), "{err}");
}
