//! Planning a video job on the submitting peer: frames → chunks.
//!
//! For every frame, in order, the planner reads only the image header (its size) and
//! hashes the file streaming, so it never holds a frame in memory. The frame list is then
//! cut into fixed ranges of `segment_frames` frames; each range becomes one chunk whose
//! inputs are the frame files' [`Cid`]s. The plan depends on nothing but the frames'
//! bytes and the settings, so every run of the same job makes the same chunks.
//!
//! The frame files themselves are the input blobs: [`VideoPlan::blobs`] lists them as
//! (Cid, path) pairs for a blob store that serves files from disk.

use std::ops::Range;
use std::path::{Path, PathBuf};

use idlegrid_protocol::{Cid, TaskSpec};
use rayon::prelude::*;

use super::assemble::AssemblyPlan;
use super::frames::list_frames;
use super::params::{check_dimensions, max_frame_bytes, SegmentParams, VideoSettings, ENCODER_ID};
use super::{VideoError, NAME, VERSION};

/// One input frame: its file, its content id and its size.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FrameFile {
    pub path: PathBuf,
    pub cid: Cid,
    pub bytes: u64,
}

/// One chunk of a video job: segment `index`, made of `frames`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chunk {
    pub index: u32,
    /// What a worker receives: `inputs` are the frames' Cids in order.
    pub spec: TaskSpec,
    /// Positions of this chunk's frames in [`VideoPlan::frames`].
    pub frames: Range<usize>,
}

/// The whole job: frames, settings and chunks.
#[derive(Clone, Debug)]
pub struct VideoPlan {
    /// Source frame size (the encoded picture is padded to even sizes).
    pub width: u32,
    pub height: u32,
    pub settings: VideoSettings,
    pub frames: Vec<FrameFile>,
    pub chunks: Vec<Chunk>,
}

/// Lists the frames named by `args` (folder, glob or files) and plans them.
pub fn plan(args: &[PathBuf], settings: VideoSettings) -> Result<VideoPlan, VideoError> {
    plan_frames(list_frames(args)?, settings)
}

/// Plans an ordered list of frame files: checks every header (same size for all, within
/// the encoder's limits), hashes every file, and cuts the list into chunks.
pub fn plan_frames(paths: Vec<PathBuf>, settings: VideoSettings) -> Result<VideoPlan, VideoError> {
    settings.validate()?;
    let Some(first) = paths.first() else {
        return Err(VideoError::NoFrames {
            origin: "an empty frame list".into(),
        });
    };
    let first = first.clone();
    // Headers and hashes in parallel; collect keeps the order, so the first error (and
    // the first frame of a different size) is the first in frame order.
    let probed: Vec<Result<Probed, VideoError>> = paths.into_par_iter().map(probe).collect();
    let mut frames = Vec::with_capacity(probed.len());
    let mut size = None;
    for result in probed {
        let ((w, h), frame) = result?;
        match size {
            None => {
                check_dimensions(w, h).map_err(|reason| VideoError::Corrupt {
                    path: frame.path.clone(),
                    reason,
                })?;
                size = Some((w, h));
            }
            Some((want_width, want_height)) if (w, h) != (want_width, want_height) => {
                return Err(VideoError::SizeMismatch {
                    path: frame.path,
                    width: w,
                    height: h,
                    first,
                    want_width,
                    want_height,
                });
            }
            Some(_) => {}
        }
        frames.push(frame);
    }
    let (width, height) = size.unwrap_or((0, 0));
    let chunks = make_chunks(&frames, width, height, &settings)?;
    Ok(VideoPlan {
        width,
        height,
        settings,
        frames,
        chunks,
    })
}

/// A frame's (width, height) and file.
type Probed = ((u32, u32), FrameFile);

/// Reads `path`'s image header and hashes its bytes (streaming, 64 KiB at a time).
fn probe(path: PathBuf) -> Result<Probed, VideoError> {
    let unreadable = |err| VideoError::Unreadable {
        path: path.clone(),
        err,
    };
    let reader = image::ImageReader::open(&path)
        .map_err(unreadable)?
        .with_guessed_format()
        .map_err(unreadable)?;
    match reader.format() {
        Some(format) if super::frames::is_supported_format(format) => {}
        _ => return Err(VideoError::Unsupported(path)),
    }
    let dims = reader.into_dimensions().map_err(|e| VideoError::Corrupt {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    let file = std::fs::File::open(&path).map_err(unreadable)?;
    let mut hasher = blake3::Hasher::new();
    let bytes = std::io::copy(
        &mut std::io::BufReader::with_capacity(1 << 16, file),
        &mut hasher,
    )
    .map_err(unreadable)?;
    let most = max_frame_bytes(dims.0, dims.1);
    if bytes > most {
        return Err(VideoError::FrameTooLarge {
            path,
            reason: format!(
                "{bytes} bytes is over the {most}-byte limit of a {}x{} frame",
                dims.0, dims.1
            ),
        });
    }
    let cid = Cid::from_hasher(&hasher);
    Ok((dims, FrameFile { path, cid, bytes }))
}

fn make_chunks(
    frames: &[FrameFile],
    width: u32,
    height: u32,
    settings: &VideoSettings,
) -> Result<Vec<Chunk>, VideoError> {
    let per = settings.segment_frames as usize;
    let mut chunks = Vec::with_capacity(frames.len().div_ceil(per));
    for (index, start) in (0..frames.len()).step_by(per).enumerate() {
        let range = start..(start + per).min(frames.len());
        let slice = &frames[range.clone()];
        let index = u32::try_from(index)
            .map_err(|_| VideoError::InvalidSettings("more than 2^32 segments".into()))?;
        let params = SegmentParams {
            encoder: ENCODER_ID.into(),
            width,
            height,
            qp: settings.qp,
            fps: settings.fps,
            segment: index,
            first_frame: start as u64,
            frame_bytes: slice.iter().map(|f| f.bytes).collect(),
        };
        params.validate(slice.len())?;
        let spec = TaskSpec {
            kernel: NAME.into(),
            kernel_version: VERSION,
            params: params.to_bytes()?,
            inputs: slice.iter().map(|f| f.cid).collect(),
        };
        chunks.push(Chunk {
            index,
            spec,
            frames: range,
        });
    }
    Ok(chunks)
}

impl VideoPlan {
    /// Number of frames in the job (and in the output video).
    pub fn frame_count(&self) -> u64 {
        self.frames.len() as u64
    }

    /// The frames of chunk `chunk`.
    pub fn chunk_frames(&self, chunk: &Chunk) -> &[FrameFile] {
        self.frames.get(chunk.frames.clone()).unwrap_or(&[])
    }

    /// The file-backed input blobs of the job as (Cid, path), each Cid once (identical
    /// frames share a blob). A blob store can serve a Cid straight from its file.
    pub fn blobs(&self) -> Vec<(Cid, PathBuf)> {
        let mut seen = std::collections::HashSet::with_capacity(self.frames.len());
        self.frames
            .iter()
            .filter(|f| seen.insert(f.cid))
            .map(|f| (f.cid, f.path.clone()))
            .collect()
    }

    /// What [`super::Assembler`] needs to check and mux the segments.
    pub fn assembly(&self) -> AssemblyPlan {
        AssemblyPlan {
            width: self.width.next_multiple_of(2),
            height: self.height.next_multiple_of(2),
            fps: self.settings.fps,
            segment_frames: self.chunks.iter().map(|c| c.frames.len() as u32).collect(),
        }
    }

    /// The file behind job-wide frame number `frame`.
    pub fn frame_path(&self, frame: u64) -> Option<&Path> {
        let i = usize::try_from(frame).ok()?;
        self.frames.get(i).map(|f| f.path.as_path())
    }

    /// Turns a worker's [`VideoError::Frame`] (frames by number) into an error that
    /// names the file; other errors pass through.
    pub fn explain(&self, err: VideoError) -> VideoError {
        match err {
            VideoError::Frame { frame, reason } => match self.frame_path(frame) {
                Some(path) => VideoError::Corrupt {
                    path: path.to_path_buf(),
                    reason,
                },
                None => VideoError::Frame { frame, reason },
            },
            other => other,
        }
    }
}
