//! Joining segments into one MP4, on the submitting peer.
//!
//! Segments are pushed strictly by index (never by arrival order). Each is checked
//! before a byte of it is written: SPS, PPS and an IDR first; SPS and PPS equal to
//! segment 0's (they go once into the MP4's `avcC`, so every segment must be decodable
//! with them); exactly the planned number of pictures. Pictures become MP4 samples
//! (length-prefixed NAL units, parameter sets removed) with timestamps from the exact
//! frame rate.
//!
//! Muxer: the `mp4` crate, because it streams: sample data goes to disk as it comes
//! (buffered one second at a time) and only the sample tables (a few bytes per frame)
//! stay in memory until the `moov` box is written at the end; it also writes 64-bit
//! sizes and offsets past 4 GiB. `muxide` would keep every sample in memory to write a
//! fast-start file, which grows with the video. So memory stays flat in the number of
//! frames: one segment plus one second of samples.
//!
//! The file is written to a temporary file next to the output and renamed into place
//! by [`Assembler::finish`]; on any error (or a drop before `finish`) the temporary file
//! is removed, so no partial output is ever left behind.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use mp4::{AvcConfig, MediaConfig, Mp4Config, Mp4Sample, Mp4Writer, TrackConfig, TrackType};
use tempfile::NamedTempFile;

use super::nal::{check_segment, pictures, split, NAL_AUD, NAL_IDR, NAL_PPS, NAL_SPS};
use super::params::Fps;
use super::VideoError;

/// What the assembler needs from the plan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AssemblyPlan {
    /// Encoded (even) picture size.
    pub width: u32,
    pub height: u32,
    pub fps: Fps,
    /// Planned number of frames of each segment, by index.
    pub segment_frames: Vec<u32>,
}

/// What was written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AssemblyReport {
    pub frames: u64,
    pub bytes: u64,
}

/// Joins segments, pushed in index order, into an MP4 at `out`.
pub struct Assembler {
    out: PathBuf,
    plan: AssemblyPlan,
    writer: Mp4Writer<BufWriter<File>>,
    /// Removed on drop unless persisted by `finish`.
    temp: NamedTempFile,
    /// Segment 0's parameter sets, once seen.
    params: Option<(Vec<u8>, Vec<u8>)>,
    next: u32,
    frames: u64,
    timing: (u32, u32),
}

fn output_error(path: &Path, err: std::io::Error) -> VideoError {
    VideoError::Output {
        path: path.to_path_buf(),
        err,
    }
}

/// The folder `out` goes into, which must exist: temporary files are made there so that
/// the final rename is atomic.
pub fn output_dir(out: &Path) -> Result<&Path, VideoError> {
    let dir = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if !dir.is_dir() {
        return Err(output_error(
            out,
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("{} is not an existing folder", dir.display()),
            ),
        ));
    }
    Ok(dir)
}

fn mux_error(err: mp4::Error) -> VideoError {
    VideoError::Mux(err.to_string())
}

impl Assembler {
    /// Starts an MP4 for `plan` at `out`. Creates the temporary file right away, so an
    /// unwritable destination fails before any encoding work is spent.
    pub fn create(out: &Path, plan: AssemblyPlan) -> Result<Assembler, VideoError> {
        if plan.segment_frames.is_empty() || plan.segment_frames.contains(&0) {
            return Err(VideoError::InvalidSettings("no frames to assemble".into()));
        }
        let (Ok(_), Ok(_)) = (u16::try_from(plan.width), u16::try_from(plan.height)) else {
            return Err(VideoError::InvalidSettings(
                "picture size over 65535".into(),
            ));
        };
        let dir = output_dir(out)?;
        let name = out
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "video".into());
        let temp = tempfile::Builder::new()
            .prefix(&format!(".{name}."))
            .suffix(".partial")
            .tempfile_in(dir)
            .map_err(|e| output_error(out, e))?;
        let file = temp.reopen().map_err(|e| output_error(out, e))?;
        let timing = plan.fps.mp4_timing();
        let config = Mp4Config {
            major_brand: mp4::FourCC { value: *b"isom" },
            minor_version: 512,
            compatible_brands: [*b"isom", *b"iso2", *b"avc1", *b"mp41"]
                .into_iter()
                .map(|value| mp4::FourCC { value })
                .collect(),
            timescale: timing.0,
        };
        let writer = Mp4Writer::write_start(BufWriter::with_capacity(1 << 20, file), &config)
            .map_err(mux_error)?;
        Ok(Assembler {
            out: out.to_path_buf(),
            plan,
            writer,
            temp,
            params: None,
            next: 0,
            frames: 0,
            timing,
        })
    }

    /// Index of the segment [`push`](Self::push) expects next.
    pub fn next_index(&self) -> u32 {
        self.next
    }

    /// Number of segments in the plan.
    pub fn segment_count(&self) -> u32 {
        self.plan.segment_frames.len() as u32
    }

    /// Checks segment `index` and appends its pictures. Segments must come in index
    /// order; a wrong index, a malformed segment or a frame count other than planned is
    /// an error. All checks run before anything is written, so after such an error the
    /// right segment can still be pushed (e.g. recomputed by another peer); after an
    /// I/O or muxer error, drop the assembler (its temporary file goes with it).
    pub fn push(&mut self, index: u32, segment: &[u8]) -> Result<(), VideoError> {
        let bad = |reason: String| VideoError::Segment { index, reason };
        if index != self.next {
            return Err(bad(format!(
                "pushed out of order, expected segment {}",
                self.next
            )));
        }
        let Some(&planned) = self.plan.segment_frames.get(index as usize) else {
            return Err(bad(format!(
                "the plan has only {} segments",
                self.segment_count()
            )));
        };
        let info = check_segment(segment).map_err(bad)?;
        if info.frames != planned {
            return Err(bad(format!(
                "has {} frames, the plan says {planned}",
                info.frames
            )));
        }
        match &self.params {
            None => {
                let config = TrackConfig {
                    track_type: TrackType::Video,
                    timescale: self.timing.0,
                    language: "und".into(),
                    media_conf: MediaConfig::AvcConfig(AvcConfig {
                        width: self.plan.width as u16,
                        height: self.plan.height as u16,
                        seq_param_set: info.sps.clone(),
                        pic_param_set: info.pps.clone(),
                    }),
                };
                self.writer.add_track(&config).map_err(mux_error)?;
                self.params = Some((info.sps, info.pps));
            }
            Some((sps, pps)) => {
                if *sps != info.sps || *pps != info.pps {
                    return Err(bad("its SPS/PPS differ from segment 0's".into()));
                }
            }
        }
        let mut sample = Vec::new();
        for picture in pictures(split(segment)) {
            sample.clear();
            let mut sync = false;
            for nal in picture {
                match nal.kind() {
                    NAL_SPS | NAL_PPS | NAL_AUD => continue,
                    NAL_IDR => sync = true,
                    _ => {}
                }
                let len =
                    u32::try_from(nal.bytes.len()).map_err(|_| bad("NAL over 4 GiB".into()))?;
                sample.extend_from_slice(&len.to_be_bytes());
                sample.extend_from_slice(nal.bytes);
            }
            let mp4_sample = Mp4Sample {
                start_time: self.frames * u64::from(self.timing.1),
                duration: self.timing.1,
                rendering_offset: 0,
                is_sync: sync,
                bytes: Bytes::copy_from_slice(&sample),
            };
            self.writer
                .write_sample(1, &mp4_sample)
                .map_err(mux_error)?;
            self.frames += 1;
        }
        self.next += 1;
        Ok(())
    }

    /// Writes the index (`moov`), flushes, syncs and renames the file into place. All
    /// planned segments must have been pushed.
    pub fn finish(mut self) -> Result<AssemblyReport, VideoError> {
        if self.next != self.segment_count() {
            return Err(VideoError::Segment {
                index: self.next,
                reason: format!(
                    "missing: only {} of {} segments joined",
                    self.next,
                    self.segment_count()
                ),
            });
        }
        self.writer.write_end().map_err(mux_error)?;
        let out = self.out;
        let mut buffered = self.writer.into_writer();
        buffered.flush().map_err(|e| output_error(&out, e))?;
        let file = buffered
            .into_inner()
            .map_err(|e| output_error(&out, e.into_error()))?;
        file.sync_all().map_err(|e| output_error(&out, e))?;
        let bytes = file.metadata().map_err(|e| output_error(&out, e))?.len();
        drop(file);
        // Temporary files are created private (0600); a video is an ordinary file.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(self.temp.path(), std::fs::Permissions::from_mode(0o644))
                .map_err(|e| output_error(&out, e))?;
        }
        self.temp
            .persist(&out)
            .map_err(|e| output_error(&out, e.error))?;
        Ok(AssemblyReport {
            frames: self.frames,
            bytes,
        })
    }
}

/// Joins segment files (`segments[i]` is segment `i`) into `out`, reading one segment
/// at a time.
pub fn assemble_files(
    plan: &AssemblyPlan,
    segments: &[PathBuf],
    out: &Path,
) -> Result<AssemblyReport, VideoError> {
    let mut assembler = Assembler::create(out, plan.clone())?;
    for (index, path) in segments.iter().enumerate() {
        let bytes = std::fs::read(path).map_err(|err| VideoError::Unreadable {
            path: path.clone(),
            err,
        })?;
        let index = u32::try_from(index)
            .map_err(|_| VideoError::InvalidSettings("more than 2^32 segments".into()))?;
        assembler.push(index, &bytes)?;
    }
    assembler.finish()
}
