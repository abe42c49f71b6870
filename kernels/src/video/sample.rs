//! Generated frames: a sample frame folder for demos, tests and benchmarks, and the
//! fixed calibration chunk the grid uses to benchmark a peer's video speed.
//!
//! Frames are computed with integers only (gradients, a moving disc, a moving checker
//! band, a little hashed noise), so they are the same on every machine and look enough
//! like a render that the encoder does real work: motion, edges, texture.

use std::io::Cursor;
use std::path::{Path, PathBuf};

use idlegrid_protocol::{Cid, TaskSpec};
use image::codecs::png::{CompressionType, FilterType, PngEncoder};
use image::{ImageEncoder, RgbImage};
use rayon::prelude::*;

use super::params::{check_dimensions, Fps, SegmentParams, DEFAULT_QP, ENCODER_ID};
use super::{VideoError, NAME, VERSION};
use crate::KernelError;

/// Size and length of the calibration chunk: about 0.1–0.3 s of work on one core of a
/// current PC (decode, convert, encode), small enough to send to every probed peer.
pub const CALIBRATION_WIDTH: u32 = 960;
pub const CALIBRATION_HEIGHT: u32 = 540;
pub const CALIBRATION_FRAMES: u32 = 24;

/// Triangle wave with period 512 and range 0..=255: smooth, no wrap-around edge.
fn tri(v: u32) -> u32 {
    let m = v % 512;
    if m < 256 {
        m
    } else {
        511 - m
    }
}

/// A small integer hash (for deterministic noise).
fn hash(x: u32, y: u32, t: u32) -> u32 {
    let mut h =
        x.wrapping_mul(0x9E37_79B1) ^ y.wrapping_mul(0x85EB_CA77) ^ t.wrapping_mul(0xC2B2_AE3D);
    h ^= h >> 15;
    h = h.wrapping_mul(0x2C1B_3C6D);
    h ^ (h >> 12)
}

/// Demo frame number `t` of `width`x`height`, with a little per-frame noise (like a
/// render's sampling noise; it also makes the PNGs as large as real renders').
pub fn sample_frame(t: u32, width: u32, height: u32) -> RgbImage {
    frame(t, width, height, true)
}

fn frame(t: u32, width: u32, height: u32, noisy: bool) -> RgbImage {
    let (w, h) = (width.max(1), height.max(1));
    // The disc bounces left-right and up-down; the checker band scrolls.
    let cx = tri(t * 6) * w / 256;
    let cy = h / 4 + tri(t * 4 + 128) * h / 512;
    let r = (h / 6).max(2);
    RgbImage::from_fn(width, height, |x, y| {
        let noise = if noisy {
            (hash(x, y, t) & 3) as i32 - 2
        } else {
            0
        };
        let mut px = [
            tri(x * 512 / w + t * 2) as i32,
            tri(y * 384 / h + t) as i32,
            tri((x + y) * 256 / (w + h) + 200) as i32,
        ];
        let (dx, dy) = (x.abs_diff(cx), y.abs_diff(cy));
        if dx * dx + dy * dy < r * r {
            px = [230, 190 + (dx * 40 / r) as i32, 40];
        } else if y > h * 3 / 4 && y < h * 7 / 8 {
            let on = ((x + t * 3) / 16 + y / 16).is_multiple_of(2);
            px = if on { [20, 20, 30] } else { [220, 220, 210] };
        }
        image::Rgb(px.map(|c| (c + noise).clamp(0, 255) as u8))
    })
}

/// PNG bytes of one demo frame (fast compression: demo folders are made often).
pub fn sample_png(t: u32, width: u32, height: u32) -> Result<Vec<u8>, VideoError> {
    png(&sample_frame(t, width, height), CompressionType::Fast)
}

fn png(frame: &RgbImage, compression: CompressionType) -> Result<Vec<u8>, VideoError> {
    let (width, height) = frame.dimensions();
    let mut out = Vec::new();
    PngEncoder::new_with_quality(Cursor::new(&mut out), compression, FilterType::Adaptive)
        .write_image(
            frame.as_raw(),
            width,
            height,
            image::ExtendedColorType::Rgb8,
        )
        .map_err(|e| VideoError::Encoder(format!("PNG encoding of a sample frame: {e}")))?;
    Ok(out)
}

/// Writes `count` demo frames `frame_000000.png`, … into `dir` (created if missing) and
/// returns their paths in order.
pub fn write_sample_frames(
    dir: &Path,
    count: u32,
    width: u32,
    height: u32,
) -> Result<Vec<PathBuf>, VideoError> {
    check_dimensions(width, height).map_err(VideoError::InvalidSettings)?;
    std::fs::create_dir_all(dir).map_err(|e| VideoError::Output {
        path: dir.to_path_buf(),
        err: e,
    })?;
    (0..count)
        .into_par_iter()
        .map(|t| {
            let path = dir.join(format!("frame_{t:06}.png"));
            let png = sample_png(t, width, height)?;
            std::fs::write(&path, png).map_err(|e| VideoError::Output {
                path: path.clone(),
                err: e,
            })?;
            Ok(path)
        })
        .collect()
}

/// The calibration chunk: a fixed generated segment of [`CALIBRATION_FRAMES`] frames of
/// [`CALIBRATION_WIDTH`]x[`CALIBRATION_HEIGHT`] PNGs, returned with its input blobs.
/// The same on every peer, so timing it compares peers' speed, and its result can be
/// checked against a local run.
pub fn calibration_task() -> Result<(TaskSpec, Vec<Vec<u8>>), KernelError> {
    // Noise-free frames, compressed hard: the chunk is cheap to send to every peer.
    let blobs = (0..CALIBRATION_FRAMES)
        .map(|t| {
            let frame = frame(t, CALIBRATION_WIDTH, CALIBRATION_HEIGHT, false);
            png(&frame, CompressionType::Best)
        })
        .collect::<Result<Vec<_>, _>>()?;
    let params = SegmentParams {
        encoder: ENCODER_ID.into(),
        width: CALIBRATION_WIDTH,
        height: CALIBRATION_HEIGHT,
        qp: DEFAULT_QP,
        fps: Fps::default(),
        segment: 0,
        first_frame: 0,
        frame_bytes: blobs.iter().map(|b| b.len() as u64).collect(),
    };
    let spec = TaskSpec {
        kernel: NAME.into(),
        kernel_version: VERSION,
        params: params.to_bytes()?,
        inputs: blobs.iter().map(|b| Cid::of(b)).collect(),
    };
    Ok((spec, blobs))
}
