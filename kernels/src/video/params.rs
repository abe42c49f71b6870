//! The video kernel's settings and the chunk parameters a worker receives.
//!
//! [`VideoSettings`] is what the user chooses (QP, frame rate, segment length).
//! [`SegmentParams`] is what travels in a [`TaskSpec`]'s `params` (CBOR): the encoder
//! id, the frame size, QP and frame rate, the segment's position and the declared size
//! of every input blob. A worker decodes and validates it before fetching any input, and
//! refuses a chunk made for another encoder build ([`ENCODER_ID`]) so that segments of
//! different builds never mix in one file.

use std::fmt;
use std::str::FromStr;

use idlegrid_protocol::{limits, TaskSpec};
use serde::{Deserialize, Serialize};

use super::VideoError;

/// Identifies the exact bytes a worker produces: OpenH264 release, the sys crate that
/// bundles it, and our colour conversion. Part of every chunk's params; a worker whose
/// build differs refuses the chunk.
pub const ENCODER_ID: &str = "openh264-2.7.0/openh264-sys2-0.9.9/bt601-limited-box420/v1";

/// Default quantiser: visually clean (≥ 38 dB on typical renders) at a moderate size.
pub const DEFAULT_QP: u8 = 22;
/// Default frames per segment (chunk). Each segment starts with an IDR frame, so longer
/// segments compress better; shorter ones spread over more peers and bound a worker's
/// memory (a worker holds one segment's input blobs).
pub const DEFAULT_SEGMENT_FRAMES: u32 = 60;
/// Largest segment: bounds a worker's input and the chunk's `inputs` list.
pub const MAX_SEGMENT_FRAMES: u32 = 1024;
/// Largest frame dimension accepted.
pub const MAX_DIMENSION: u32 = 8192;
/// Largest frame area: H.264 level 5.2's frame size (36,864 macroblocks), e.g. 4096x2304.
pub const MAX_PIXELS: u64 = 36_864 * 256;
/// Largest single frame file (a 16-bit uncompressed 4K TIFF is ~50 MB).
pub const MAX_FRAME_BYTES: u64 = 256 * 1024 * 1024;
/// Largest total input of one segment: what a worker may have to hold at once.
pub const MAX_SEGMENT_INPUT_BYTES: u64 = 1024 * 1024 * 1024;
/// Largest QP of H.264.
pub const MAX_QP: u8 = 51;

/// A frame rate as an exact fraction, so MP4 timestamps do not drift (29.97 is
/// 2997/100, `30000/1001` is NTSC).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fps {
    pub num: u32,
    pub den: u32,
}

/// Largest numerator or denominator of a frame rate.
const MAX_FPS_TERM: u32 = 1_000_000;

impl Fps {
    /// `num/den` frames per second, validated: both terms in 1..=1,000,000 and the rate
    /// between 0.01 and 1000 fps.
    pub fn new(num: u32, den: u32) -> Result<Fps, VideoError> {
        let bad = |why: &str| VideoError::InvalidSettings(format!("frame rate {num}/{den}: {why}"));
        if num == 0 || den == 0 || num > MAX_FPS_TERM || den > MAX_FPS_TERM {
            return Err(bad("terms must be in 1..=1000000"));
        }
        if u64::from(num) > 1000 * u64::from(den) || 100 * u64::from(num) < u64::from(den) {
            return Err(bad("must be between 0.01 and 1000 fps"));
        }
        let g = gcd(num, den);
        Ok(Fps {
            num: num / g,
            den: den / g,
        })
    }

    /// The rate as a float, for the encoder's level choice only (never reaches timing).
    pub fn as_f32(self) -> f32 {
        self.num as f32 / self.den as f32
    }

    /// MP4 timescale and per-frame duration: exact, with at least millisecond resolution.
    pub fn mp4_timing(self) -> (u32, u32) {
        // Terms are ≤ 1e6, so scaling by 1000 stays below u32::MAX.
        let k = if self.num < 1000 { 1000 } else { 1 };
        (self.num * k, self.den * k)
    }
}

fn gcd(mut a: u32, mut b: u32) -> u32 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a.max(1)
}

impl Default for Fps {
    fn default() -> Self {
        Fps { num: 30, den: 1 }
    }
}

impl fmt::Display for Fps {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.den == 1 {
            write!(f, "{}", self.num)
        } else {
            write!(f, "{}/{}", self.num, self.den)
        }
    }
}

impl FromStr for Fps {
    type Err = VideoError;

    /// Parses `30`, `29.97` (up to 3 decimals) or `30000/1001`.
    fn from_str(text: &str) -> Result<Fps, VideoError> {
        let bad = || {
            VideoError::InvalidSettings(format!(
                "frame rate {text:?}: expected e.g. 30, 29.97 or 30000/1001"
            ))
        };
        let text = text.trim();
        if let Some((n, d)) = text.split_once('/') {
            let num = n.trim().parse().map_err(|_| bad())?;
            let den = d.trim().parse().map_err(|_| bad())?;
            return Fps::new(num, den);
        }
        let (int, frac) = text.split_once('.').unwrap_or((text, ""));
        if frac.len() > 3
            || !int.bytes().all(|b| b.is_ascii_digit())
            || !frac.bytes().all(|b| b.is_ascii_digit())
            || (int.is_empty() && frac.is_empty())
        {
            return Err(bad());
        }
        let den = 10u32.pow(frac.len() as u32);
        let int: u32 = if int.is_empty() {
            0
        } else {
            int.parse().map_err(|_| bad())?
        };
        let frac: u32 = if frac.is_empty() {
            0
        } else {
            frac.parse().map_err(|_| bad())?
        };
        let num = int
            .checked_mul(den)
            .and_then(|n| n.checked_add(frac))
            .ok_or_else(bad)?;
        Fps::new(num, den)
    }
}

/// What the user chooses for a job.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VideoSettings {
    /// Fixed quantiser, 0..=51 (lower is better quality, larger files).
    pub qp: u8,
    /// Playback frame rate written into the MP4.
    pub fps: Fps,
    /// Frames per segment (chunk), 2..=1024: two so that consecutive IDR pictures never
    /// meet (their `idr_pic_id`s would be equal, which H.264 forbids).
    pub segment_frames: u32,
}

impl Default for VideoSettings {
    fn default() -> Self {
        VideoSettings {
            qp: DEFAULT_QP,
            fps: Fps::default(),
            segment_frames: DEFAULT_SEGMENT_FRAMES,
        }
    }
}

impl VideoSettings {
    pub fn validate(&self) -> Result<(), VideoError> {
        if self.qp > MAX_QP {
            return Err(VideoError::InvalidSettings(format!(
                "QP {} is outside 0..={MAX_QP}",
                self.qp
            )));
        }
        if !(2..=MAX_SEGMENT_FRAMES).contains(&self.segment_frames) {
            return Err(VideoError::InvalidSettings(format!(
                "{} frames per segment is outside 2..={MAX_SEGMENT_FRAMES}",
                self.segment_frames
            )));
        }
        Fps::new(self.fps.num, self.fps.den)?;
        Ok(())
    }
}

/// Largest frame file a chunk may declare for frames of `width`x`height`: 16-bit RGBA
/// stored uncompressed (8 bytes a pixel, the largest of the supported formats' pixel
/// layouts) plus room for headers and metadata, within [`MAX_FRAME_BYTES`]. A worker
/// refuses a chunk declaring more before it fetches anything.
pub fn max_frame_bytes(width: u32, height: u32) -> u64 {
    const METADATA: u64 = 4 * 1024 * 1024;
    (u64::from(width) * u64::from(height) * 8 + METADATA).min(MAX_FRAME_BYTES)
}

/// A generous bound on the size of a segment of `frames` frames of `width`x`height`:
/// four bytes a (padded) pixel per frame, more than twice raw I420 (an encoder at QP 0
/// on noise stays near raw), plus headers. The submitter refuses a claimed result
/// beyond it before fetching it.
pub fn max_segment_bytes(width: u32, height: u32, frames: u64) -> u64 {
    let pixels = u64::from(width.next_multiple_of(16)) * u64::from(height.next_multiple_of(16));
    frames
        .saturating_mul(pixels * 4 + 64 * 1024)
        .saturating_add(64 * 1024)
        .min(limits::MAX_BLOB)
}

/// Checks a frame size against the encoder's limits.
pub fn check_dimensions(width: u32, height: u32) -> Result<(), String> {
    if width == 0 || height == 0 || width > MAX_DIMENSION || height > MAX_DIMENSION {
        return Err(format!(
            "{width}x{height} is outside 1..={MAX_DIMENSION} in width or height"
        ));
    }
    let padded = u64::from(width.next_multiple_of(16)) * u64::from(height.next_multiple_of(16));
    if padded > MAX_PIXELS {
        return Err(format!(
            "{width}x{height} is larger than H.264 level 5.2 allows ({MAX_PIXELS} pixels)"
        ));
    }
    Ok(())
}

/// The params of one video chunk, as CBOR in [`TaskSpec::params`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentParams {
    /// Must equal this build's [`ENCODER_ID`].
    pub encoder: String,
    /// Frame size of the source images (before even padding).
    pub width: u32,
    pub height: u32,
    pub qp: u8,
    pub fps: Fps,
    /// Segment index in the job: segments are joined by this, never by arrival order.
    pub segment: u32,
    /// Job-wide number of the segment's first frame, so errors can name the frame.
    pub first_frame: u64,
    /// Declared byte size of each input blob, checked before decoding and used to
    /// refuse an oversized chunk before fetching it.
    pub frame_bytes: Vec<u64>,
}

impl SegmentParams {
    /// Decodes and validates the params of `spec` (kernel name and version are checked
    /// by the registry).
    pub fn from_spec(spec: &TaskSpec) -> Result<SegmentParams, VideoError> {
        let params: SegmentParams =
            idlegrid_protocol::decode(&spec.params, limits::MAX_TASK_PARAMS)
                .map_err(|e| VideoError::InvalidSettings(format!("undecodable params: {e}")))?;
        params.validate(spec.inputs.len())?;
        Ok(params)
    }

    /// Encodes to the bytes that go into [`TaskSpec::params`].
    pub fn to_bytes(&self) -> Result<Vec<u8>, VideoError> {
        idlegrid_protocol::encode(self).map_err(|e| VideoError::InvalidSettings(e.to_string()))
    }

    /// Every check a worker makes before it fetches or decodes anything.
    pub fn validate(&self, inputs: usize) -> Result<(), VideoError> {
        let bad = |msg: String| Err(VideoError::InvalidSettings(msg));
        if self.encoder != ENCODER_ID {
            return bad(format!(
                "chunk is for encoder {:?}, this peer runs {ENCODER_ID:?}",
                self.encoder
            ));
        }
        check_dimensions(self.width, self.height).map_err(VideoError::InvalidSettings)?;
        if self.qp > MAX_QP {
            return bad(format!("QP {} is outside 0..={MAX_QP}", self.qp));
        }
        Fps::new(self.fps.num, self.fps.den)?;
        if inputs == 0 || inputs > MAX_SEGMENT_FRAMES as usize {
            return bad(format!(
                "{inputs} frames in a segment (1..={MAX_SEGMENT_FRAMES} allowed)"
            ));
        }
        if self.frame_bytes.len() != inputs {
            return bad(format!(
                "{} frame sizes declared for {inputs} inputs",
                self.frame_bytes.len()
            ));
        }
        let mut total = 0u64;
        let most = max_frame_bytes(self.width, self.height);
        for (i, &len) in self.frame_bytes.iter().enumerate() {
            if len == 0 || len > most {
                return bad(format!(
                    "frame #{} declared as {len} bytes (1..={most} allowed for a {}x{} frame)",
                    self.first_frame.saturating_add(i as u64),
                    self.width,
                    self.height
                ));
            }
            total = total.saturating_add(len);
        }
        if total > MAX_SEGMENT_INPUT_BYTES {
            return bad(format!(
                "segment input of {total} bytes is over the {MAX_SEGMENT_INPUT_BYTES}-byte limit"
            ));
        }
        if self.first_frame.checked_add(inputs as u64).is_none() {
            return bad("frame numbers overflow".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fps_parses_integers_decimals_and_fractions() {
        assert_eq!("30".parse::<Fps>().unwrap(), Fps { num: 30, den: 1 });
        assert_eq!(
            "29.97".parse::<Fps>().unwrap(),
            Fps {
                num: 2997,
                den: 100
            }
        );
        assert_eq!(
            "30000/1001".parse::<Fps>().unwrap(),
            Fps {
                num: 30000,
                den: 1001
            }
        );
        assert_eq!("60/2".parse::<Fps>().unwrap(), Fps { num: 30, den: 1 });
        assert_eq!("0.5".parse::<Fps>().unwrap(), Fps { num: 1, den: 2 });
        for bad in [
            "", "0", "-1", "abc", "1.2345", "30/0", "5000", "1e3", ".", "0.001",
        ] {
            assert!(bad.parse::<Fps>().is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn mp4_timing_is_exact() {
        assert_eq!(Fps { num: 30, den: 1 }.mp4_timing(), (30_000, 1000));
        assert_eq!(
            Fps {
                num: 30000,
                den: 1001
            }
            .mp4_timing(),
            (30000, 1001)
        );
    }

    fn params() -> SegmentParams {
        SegmentParams {
            encoder: ENCODER_ID.into(),
            width: 64,
            height: 48,
            qp: 22,
            fps: Fps::default(),
            segment: 0,
            first_frame: 0,
            frame_bytes: vec![100, 200],
        }
    }

    #[test]
    fn validation_refuses_what_a_peer_could_lie_about() {
        assert!(params().validate(2).is_ok());
        assert!(params().validate(3).is_err(), "count mismatch");
        let cases: [fn(&mut SegmentParams); 9] = [
            |p| p.encoder = "openh264-2.6.0".into(),
            |p| p.width = 0,
            |p| p.height = MAX_DIMENSION + 1,
            |p| (p.width, p.height) = (8192, 8192),
            |p| p.qp = 52,
            |p| p.fps = Fps { num: 0, den: 1 },
            |p| p.frame_bytes = vec![0, 1],
            |p| p.frame_bytes = vec![max_frame_bytes(64, 48) + 1, 1],
            |p| p.first_frame = u64::MAX,
        ];
        for (i, case) in cases.iter().enumerate() {
            let mut p = params();
            case(&mut p);
            assert!(p.validate(2).is_err(), "case {i} accepted");
        }
    }

    #[test]
    fn settings_validation() {
        assert!(VideoSettings::default().validate().is_ok());
        let s = VideoSettings {
            segment_frames: 1,
            ..Default::default()
        };
        assert!(s.validate().is_err());
        let s = VideoSettings {
            qp: 60,
            ..Default::default()
        };
        assert!(s.validate().is_err());
    }
}
