//! The `video` kernel: a folder of frames becomes one H.264 MP4, its segments encoded on
//! different peers.
//!
//! Data flow, submitter side: [`frames`] lists the user's frames (folder, glob or files,
//! natural sort) and [`plan`] reads each frame's header and hashes it streaming, then
//! cuts the frame list into fixed-size ranges. Each range is one chunk: a [`TaskSpec`]
//! whose inputs are the frames' blobs (the frame files themselves, by [`Cid`]) and whose
//! params ([`params::SegmentParams`]) carry the encoder id and every setting.
//!
//! Worker side: [`worker`] decodes the chunk's frames one at a time, converts them to
//! YUV 4:2:0 ([`yuv`]) and encodes one closed-GOP H.264 segment with OpenH264
//! ([`encoder`]): fixed QP, CABAC, one thread, one slice, one IDR at the start. The
//! segment is a pure function of the chunk's bytes.
//!
//! Submitter side again: [`assemble`] checks each segment ([`nal`]: SPS, PPS, IDR first,
//! parameter sets equal to segment 0's, frame count as planned) and muxes them, in index
//! order, into an MP4 written atomically. [`decoder`] decodes a stream back (tests and
//! spot checks), [`sample`] makes demo frames and the calibration chunk.
//!
//! [`Cid`]: idlegrid_protocol::Cid

pub mod assemble;
pub mod decoder;
pub mod encoder;
pub mod frames;
pub mod nal;
pub mod params;
pub mod plan;
pub mod sample;
pub mod worker;
pub mod yuv;

use std::path::PathBuf;

use idlegrid_protocol::TaskSpec;

use crate::{Cancel, KernelError};

pub use assemble::{assemble_files, Assembler, AssemblyPlan, AssemblyReport};
pub use frames::{list_frames, natural_cmp};
pub use params::{Fps, SegmentParams, VideoSettings, ENCODER_ID};
pub use plan::{plan, plan_frames, Chunk, FrameFile, VideoPlan};
pub use sample::{calibration_task, write_sample_frames};
pub use worker::encode_segment_files;

/// Kernel name in a [`TaskSpec`].
pub const NAME: &str = "video";
/// Kernel version: bump it whenever the bytes of a segment for the same input could
/// change (conversion, encoder settings, segment layout).
pub const VERSION: u32 = 1;

/// Everything that can go wrong in the video kernel, each expected condition its own
/// variant. Messages name the file (or the frame number, on a worker that has no file
/// names) and the problem.
#[derive(Debug, thiserror::Error)]
pub enum VideoError {
    #[error("{0}: no such file or folder")]
    NotFound(PathBuf),
    #[error("no frames found in {origin}: expected png, jpeg, bmp, tiff, gif or webp files")]
    NoFrames { origin: String },
    #[error("bad glob pattern {pattern:?}: {reason}")]
    BadPattern { pattern: String, reason: String },
    #[error("{0}: not a supported frame format (png, jpeg, bmp, tiff, gif, webp)")]
    Unsupported(PathBuf),
    #[error("cannot read {path}: {err}")]
    Unreadable {
        path: PathBuf,
        /// Not a `#[source]`: the message already includes it once.
        err: std::io::Error,
    },
    #[error("{path}: not a valid image: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error(
        "{path} is {width}x{height}, but the first frame {first} is {want_width}x{want_height}: \
         all frames must have the same size"
    )]
    SizeMismatch {
        path: PathBuf,
        width: u32,
        height: u32,
        first: PathBuf,
        want_width: u32,
        want_height: u32,
    },
    #[error("{path}: {reason}")]
    FrameTooLarge { path: PathBuf, reason: String },
    #[error("invalid video settings: {0}")]
    InvalidSettings(String),
    /// A frame failed on a worker, which knows frames by number, not by file name;
    /// [`VideoPlan::explain`] turns this into an error naming the file.
    #[error("frame #{frame}: {reason}")]
    Frame { frame: u64, reason: String },
    #[error("H.264 encoder: {0}")]
    Encoder(String),
    #[error("H.264 decoder: {0}")]
    Decoder(String),
    #[error("segment {index}: {reason}")]
    Segment { index: u32, reason: String },
    #[error("cannot write {path}: {err}")]
    Output {
        path: PathBuf,
        /// Not a `#[source]`: the message already includes it once.
        err: std::io::Error,
    },
    #[error("MP4 muxer: {0}")]
    Mux(String),
    /// The worker set the chunk's cancel flag while it was encoding.
    #[error("stopped: the chunk was cancelled while it ran")]
    Cancelled,
}

impl From<VideoError> for KernelError {
    fn from(err: VideoError) -> Self {
        match err {
            VideoError::InvalidSettings(msg) => KernelError::InvalidParams(msg),
            VideoError::Cancelled => KernelError::Cancelled,
            e @ (VideoError::Frame { .. }
            | VideoError::Corrupt { .. }
            | VideoError::SizeMismatch { .. }
            | VideoError::FrameTooLarge { .. }
            | VideoError::Unsupported(_)) => KernelError::InvalidInput(e.to_string()),
            e => KernelError::Failed(e.to_string()),
        }
    }
}

/// Registry entry: checks a video chunk's params before any input is fetched.
pub fn validate(spec: &TaskSpec) -> Result<(), KernelError> {
    SegmentParams::from_spec(spec)?;
    Ok(())
}

/// Registry entry: encodes one segment from its frame blobs (in `spec.inputs` order),
/// stopping between frames once `cancel` is set.
pub fn run(spec: &TaskSpec, inputs: &[&[u8]], cancel: &Cancel) -> Result<Vec<u8>, KernelError> {
    Ok(worker::run_blobs(spec, inputs, cancel)?)
}

/// Each frame's largest size: exactly what the chunk declares for it (the worker checks
/// the declared size again before decoding; [`SegmentParams::validate`] bounds the
/// declaration by the frame's pixel count).
pub fn input_limits(spec: &TaskSpec) -> Result<Vec<u64>, KernelError> {
    Ok(SegmentParams::from_spec(spec)?.frame_bytes)
}

/// A generous bound on a segment's size: [`params::max_segment_bytes`].
pub fn max_result_len(spec: &TaskSpec) -> Result<u64, KernelError> {
    let params = SegmentParams::from_spec(spec)?;
    Ok(params::max_segment_bytes(
        params.width,
        params.height,
        spec.inputs.len() as u64,
    ))
}

/// A segment as workers make them ([`nal::check_segment`]: SPS, PPS and an IDR first,
/// no other IDR or parameter set), with one picture per input frame. That its
/// parameter sets equal segment 0's is checked when the segments are joined.
pub fn check_result(spec: &TaskSpec, result: &[u8]) -> Result<(), String> {
    let info = nal::check_segment(result)?;
    if info.frames as usize != spec.inputs.len() {
        return Err(format!(
            "a segment of {} pictures, the chunk has {} frames",
            info.frames,
            spec.inputs.len()
        ));
    }
    Ok(())
}
