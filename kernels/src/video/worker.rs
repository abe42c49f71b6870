//! The worker side: one chunk's frames → one H.264 segment.
//!
//! Frames are taken one at a time: each is checked against its declared size and its
//! content id, decoded (only the supported formats, with size limits), converted to
//! I420 and fed to a fresh [`Encoder`]. So a worker holds its chunk's compressed input
//! (or, for a local run from files, nothing but the current frame) plus one decoded
//! picture. The output is a function of the chunk's bytes only. Between frames the
//! encoder checks its [`Cancel`] flag, so a chunk handed back stops within one frame.

use std::borrow::Cow;
use std::io::{Cursor, Read};

use idlegrid_protocol::{limits, Cid, TaskSpec};
use image::ImageReader;

use super::encoder::{Encoder, EncoderConfig};
use super::frames::is_supported_format;
use super::params::SegmentParams;
use super::plan::{Chunk, VideoPlan};
use super::yuv::rgb_to_i420;
use super::VideoError;
use crate::Cancel;

/// Largest allocation the image decoder may make for one frame (an 8192x8192 RGBA16
/// image is 512 MiB; our frames are limited to H.264 level 5.2 sizes, far below).
const MAX_DECODE_ALLOC: u64 = 512 * 1024 * 1024;

/// Encodes the chunk `spec` from its input blobs, in `spec.inputs` order (what a peer
/// runs for the grid), stopping between frames once `cancel` is set.
pub fn run_blobs(
    spec: &TaskSpec,
    inputs: &[&[u8]],
    cancel: &Cancel,
) -> Result<Vec<u8>, VideoError> {
    let params = SegmentParams::from_spec(spec)?;
    if inputs.len() != spec.inputs.len() {
        return Err(VideoError::InvalidSettings(format!(
            "{} input blobs for {} inputs",
            inputs.len(),
            spec.inputs.len()
        )));
    }
    encode_segment(
        spec,
        &params,
        |i| Ok(Cow::Borrowed(inputs[i])),
        &|| {},
        cancel,
    )
}

/// Encodes `chunk` of `plan` reading its frames from their files one at a time (the
/// `--local` path: the same bytes as [`run_blobs`] on the frames' blobs). Errors name
/// the frame's file. `on_frame` is called after each encoded frame (progress).
pub fn encode_segment_files(
    plan: &VideoPlan,
    chunk: &Chunk,
    on_frame: &(dyn Fn() + Sync),
) -> Result<Vec<u8>, VideoError> {
    let params = SegmentParams::from_spec(&chunk.spec)?;
    let frames = plan.chunk_frames(chunk);
    if frames.len() != chunk.spec.inputs.len() {
        return Err(VideoError::InvalidSettings(format!(
            "chunk {} names {} frames but covers {}",
            chunk.index,
            chunk.spec.inputs.len(),
            frames.len()
        )));
    }
    let read = |i: usize| {
        let frame = &frames[i];
        let unreadable = |err| VideoError::Unreadable {
            path: frame.path.clone(),
            err,
        };
        let file = std::fs::File::open(&frame.path).map_err(unreadable)?;
        // Read at most one byte more than planned: a file that grew is caught below
        // without reading all of it.
        let mut bytes = Vec::with_capacity(frame.bytes as usize);
        file.take(frame.bytes.saturating_add(1))
            .read_to_end(&mut bytes)
            .map_err(unreadable)?;
        Ok(Cow::Owned(bytes))
    };
    encode_segment(&chunk.spec, &params, read, on_frame, &Cancel::new())
        .map_err(|e| plan.explain(e))
}

/// The segment encoder proper. `frame(i)` yields the bytes of input `i`.
fn encode_segment<'a>(
    spec: &TaskSpec,
    params: &SegmentParams,
    mut frame: impl FnMut(usize) -> Result<Cow<'a, [u8]>, VideoError>,
    on_frame: &(dyn Fn() + Sync),
    cancel: &Cancel,
) -> Result<Vec<u8>, VideoError> {
    let mut encoder = Encoder::new(EncoderConfig {
        width: params.width.next_multiple_of(2),
        height: params.height.next_multiple_of(2),
        qp: params.qp,
        fps: params.fps,
    })?;
    let mut out = Vec::new();
    for (i, (&cid, &declared)) in spec.inputs.iter().zip(&params.frame_bytes).enumerate() {
        let number = params.first_frame + i as u64;
        let bad = |reason: String| VideoError::Frame {
            frame: number,
            reason,
        };
        if cancel.is_cancelled() {
            return Err(VideoError::Cancelled);
        }
        let bytes = frame(i)?;
        if bytes.len() as u64 != declared {
            return Err(bad(format!(
                "is {} bytes, the chunk declares {declared} (changed since it was planned?)",
                bytes.len()
            )));
        }
        if Cid::of(&bytes) != cid {
            return Err(bad(format!(
                "does not match its content id {} (changed since it was planned?)",
                cid.short()
            )));
        }
        let rgb = decode_frame(&bytes, params.width, params.height).map_err(bad)?;
        drop(bytes);
        let mut picture = rgb_to_i420(&rgb, params.width, params.height)
            .ok_or_else(|| bad("decoded to an unexpected buffer size".into()))?;
        drop(rgb);
        encoder.encode(&mut picture, &mut out)?;
        if out.len() as u64 > limits::MAX_BLOB {
            return Err(VideoError::Encoder(format!(
                "segment {} is over the {}-byte blob limit",
                params.segment,
                limits::MAX_BLOB
            )));
        }
        on_frame();
    }
    Ok(out)
}

/// Decodes one frame to tightly packed RGB8, refusing unsupported formats and any size
/// other than `width`x`height`.
fn decode_frame(bytes: &[u8], width: u32, height: u32) -> Result<Vec<u8>, String> {
    let mut reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| e.to_string())?;
    match reader.format() {
        Some(format) if is_supported_format(format) => {}
        _ => return Err("not a png, jpeg, bmp, tiff, gif or webp image".into()),
    }
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(width);
    limits.max_image_height = Some(height);
    limits.max_alloc = Some(MAX_DECODE_ALLOC);
    reader.limits(limits);
    let image = reader
        .decode()
        .map_err(|e| format!("not a valid image: {e}"))?;
    if (image.width(), image.height()) != (width, height) {
        return Err(format!(
            "is {}x{}, the job's frames are {width}x{height}",
            image.width(),
            image.height()
        ));
    }
    Ok(image.into_rgb8().into_raw())
}
