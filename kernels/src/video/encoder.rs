//! One OpenH264 encoder instance, driven directly through `openh264-sys2` so that the
//! settings that decide the output bytes are all ours: rate control off with a fixed
//! QP, CABAC (High profile), one thread, one slice, no frame skipping, no scene-change
//! or periodic keyframes, no adaptive quantisation or background detection (both
//! would move QP away from the fixed value), constant SPS/PPS ids. A fresh encoder
//! starts with an IDR picture, so one encoder per segment gives a closed GOP.
//!
//! All `unsafe` of the encoding side lives here; the rest of the kernel sees
//! [`Encoder::new`], [`Encoder::encode`] and `Drop`.

use std::os::raw::{c_int, c_void};
use std::ptr;

use openh264_sys2 as sys;

use super::params::Fps;
use super::yuv::I420;
use super::VideoError;

/// The settings that reach the encoder (from a chunk's params).
#[derive(Clone, Copy, Debug)]
pub struct EncoderConfig {
    /// Even picture size (after padding).
    pub width: u32,
    pub height: u32,
    pub qp: u8,
    pub fps: Fps,
}

/// Kind of an encoded picture.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PictureKind {
    Idr,
    P,
}

/// An initialised OpenH264 encoder.
pub struct Encoder {
    raw: *mut sys::ISVCEncoder,
    vtbl: sys::ISVCEncoderVtbl,
    config: EncoderConfig,
    frames: u64,
    /// The encoder's output description; large (128 layers), so boxed once.
    info: Box<sys::SFrameBSInfo>,
    /// The parameters given to `InitializeExt`, kept to switch QP after the IDR.
    params: Box<sys::SEncParamExt>,
}

/// The IDR picture is coded this much below the segment's QP (x264's `ipratio` 1.4 is
/// about 3): at one QP for all pictures an IDR comes out ~2 dB worse than the P
/// pictures around it, which would make every seam a visible dip.
pub const IDR_QP_OFFSET: u8 = 3;

fn fail(what: &str, code: c_int) -> VideoError {
    VideoError::Encoder(format!("{what} failed (OpenH264 code {code})"))
}

/// The OpenH264 release linked into this build, e.g. `(2, 7, 0)`.
pub fn codec_version() -> (u32, u32, u32) {
    // SAFETY: a pure function of the static library, no arguments.
    let v = unsafe { sys::source::APILoader::WelsGetCodecVersion() };
    (v.uMajor, v.uMinor, v.uRevision)
}

impl Encoder {
    pub fn new(config: EncoderConfig) -> Result<Encoder, VideoError> {
        if !config.width.is_multiple_of(2)
            || !config.height.is_multiple_of(2)
            || config.width == 0
            || config.height == 0
        {
            return Err(VideoError::Encoder(format!(
                "picture size {}x{} is not even",
                config.width, config.height
            )));
        }
        let mut raw: *mut sys::ISVCEncoder = ptr::null_mut();
        // SAFETY: WelsCreateSVCEncoder writes a valid encoder pointer or returns non-zero.
        let rc = unsafe { sys::source::APILoader::WelsCreateSVCEncoder(&mut raw) };
        if rc != 0 || raw.is_null() {
            return Err(fail("WelsCreateSVCEncoder", rc));
        }
        // SAFETY: `raw` points to the encoder object whose first field is its vtable.
        let vtbl = unsafe { **raw };
        let mut encoder = Encoder {
            raw,
            vtbl,
            config,
            frames: 0,
            info: Box::default(),
            params: Box::default(),
        };
        encoder.initialise()?;
        Ok(encoder)
    }

    fn initialise(&mut self) -> Result<(), VideoError> {
        let c = self.config;
        let missing = || VideoError::Encoder("OpenH264 vtable entry missing".into());
        let get_default = self.vtbl.GetDefaultParams.ok_or_else(missing)?;
        let init = self.vtbl.InitializeExt.ok_or_else(missing)?;
        let set_option = self.vtbl.SetOption.ok_or_else(missing)?;

        let mut p = sys::SEncParamExt::default();
        // SAFETY: `p` is a valid, writable SEncParamExt.
        let rc = unsafe { get_default(self.raw, &mut p) };
        if rc != 0 {
            return Err(fail("GetDefaultParams", rc));
        }
        p.iUsageType = sys::CAMERA_VIDEO_REAL_TIME;
        p.iPicWidth = c.width as c_int;
        p.iPicHeight = c.height as c_int;
        p.iRCMode = sys::RC_OFF_MODE;
        // Only used for the level in the SPS (OpenH264 clips it to 1..=60).
        p.fMaxFrameRate = c.fps.as_f32().clamp(1.0, 60.0);
        p.iTemporalLayerNum = 1;
        p.iSpatialLayerNum = 1;
        p.iComplexityMode = sys::LOW_COMPLEXITY;
        p.uiIntraPeriod = 0;
        p.iNumRefFrame = 1;
        p.eSpsPpsIdStrategy = sys::CONSTANT_ID;
        p.bPrefixNalAddingCtrl = false;
        p.bEnableSSEI = false;
        p.bSimulcastAVC = false;
        p.iPaddingFlag = 0;
        p.iEntropyCodingModeFlag = 1;
        p.bEnableFrameSkip = false;
        let idr_qp = c_int::from(c.qp.saturating_sub(IDR_QP_OFFSET));
        p.iMinQp = idr_qp;
        p.iMaxQp = idr_qp;
        p.bEnableLongTermReference = false;
        p.iMultipleThreadIdc = 1;
        p.bUseLoadBalancing = false;
        p.iLoopFilterDisableIdc = 0;
        p.bEnableDenoise = false;
        p.bEnableBackgroundDetection = false;
        p.bEnableAdaptiveQuant = false;
        p.bEnableFrameCroppingFlag = true;
        p.bEnableSceneChangeDetect = false;
        p.bPsnrY = false;
        p.bPsnrU = false;
        p.bPsnrV = false;
        let layer = &mut p.sSpatialLayers[0];
        layer.iVideoWidth = c.width as c_int;
        layer.iVideoHeight = c.height as c_int;
        layer.fFrameRate = p.fMaxFrameRate;
        layer.iDLayerQp = idr_qp;
        layer.uiProfileIdc = sys::PRO_HIGH;
        layer.uiLevelIdc = 0;
        layer.sSliceArgument.uiSliceMode = sys::SM_SINGLE_SLICE;
        layer.sSliceArgument.uiSliceNum = 1;
        // VUI: sRGB sources, converted with the BT.601 matrix into limited range.
        layer.bVideoSignalTypePresent = true;
        layer.uiVideoFormat = sys::VF_UNDEF as u8;
        layer.bFullRange = false;
        layer.bColorDescriptionPresent = true;
        layer.uiColorPrimaries = sys::CP_BT709 as u8;
        layer.uiTransferCharacteristics = sys::TRC_IEC61966_2_1 as u8;
        layer.uiColorMatrix = sys::CM_SMPTE170M as u8;

        let mut quiet: c_int = sys::WELS_LOG_QUIET as c_int;
        // SAFETY: the option takes a pointer to an int that outlives the call. Before
        // initialisation it only silences the initialisation's own logging.
        unsafe {
            set_option(
                self.raw,
                sys::ENCODER_OPTION_TRACE_LEVEL,
                (&mut quiet as *mut c_int).cast::<c_void>(),
            );
        }
        // SAFETY: `p` is a fully initialised parameter block.
        let rc = unsafe { init(self.raw, &p) };
        if rc != 0 {
            return Err(fail("InitializeExt", rc));
        }
        let mut format: c_int = sys::videoFormatI420 as c_int;
        // SAFETY: as above, pointers to ints that live across the calls.
        let rc = unsafe {
            set_option(
                self.raw,
                sys::ENCODER_OPTION_TRACE_LEVEL,
                (&mut quiet as *mut c_int).cast::<c_void>(),
            );
            set_option(
                self.raw,
                sys::ENCODER_OPTION_DATAFORMAT,
                (&mut format as *mut c_int).cast::<c_void>(),
            )
        };
        if rc != 0 {
            return Err(fail("SetOption(DATAFORMAT)", rc));
        }
        *self.params = p;
        Ok(())
    }

    /// After the IDR: the segment's own QP for every P picture. Only QP changes, which
    /// OpenH264 applies without a reset (no new parameter sets, no new IDR).
    fn switch_to_p_qp(&mut self) -> Result<(), VideoError> {
        let set_option = self
            .vtbl
            .SetOption
            .ok_or_else(|| VideoError::Encoder("OpenH264 vtable entry missing".into()))?;
        let qp = c_int::from(self.config.qp);
        self.params.iMinQp = qp;
        self.params.iMaxQp = qp;
        self.params.sSpatialLayers[0].iDLayerQp = qp;
        // SAFETY: the option reads a whole SEncParamExt, which `params` is.
        let rc = unsafe {
            set_option(
                self.raw,
                sys::ENCODER_OPTION_SVC_ENCODE_PARAM_EXT,
                (&mut *self.params as *mut sys::SEncParamExt).cast::<c_void>(),
            )
        };
        if rc != 0 {
            return Err(fail("SetOption(SVC_ENCODE_PARAM_EXT)", rc));
        }
        Ok(())
    }

    /// Encodes `picture` and appends its NAL units (Annex B) to `out`. The first picture
    /// is an IDR (with SPS and PPS before it), every later one a P picture; anything
    /// else (a skipped frame, an unexpected keyframe) is an error, never silent.
    pub fn encode(
        &mut self,
        picture: &mut I420,
        out: &mut Vec<u8>,
    ) -> Result<PictureKind, VideoError> {
        let c = self.config;
        if (picture.width, picture.height) != (c.width, c.height)
            || picture.y.len() != (c.width * c.height) as usize
            || picture.u.len() != (c.width * c.height / 4) as usize
            || picture.v.len() != picture.u.len()
        {
            return Err(VideoError::Encoder(format!(
                "picture of {}x{} given to an encoder of {}x{}",
                picture.width, picture.height, c.width, c.height
            )));
        }
        let encode = self
            .vtbl
            .EncodeFrame
            .ok_or_else(|| VideoError::Encoder("OpenH264 vtable entry missing".into()))?;
        // Timestamps in ms; they only order frames (rate control is off).
        let timestamp = self
            .frames
            .saturating_mul(1000)
            .saturating_mul(u64::from(c.fps.den))
            / u64::from(c.fps.num.max(1));
        let source = sys::SSourcePicture {
            iColorFormat: sys::videoFormatI420 as c_int,
            iStride: [
                c.width as c_int,
                (c.width / 2) as c_int,
                (c.width / 2) as c_int,
                0,
            ],
            pData: [
                picture.y.as_mut_ptr(),
                picture.u.as_mut_ptr(),
                picture.v.as_mut_ptr(),
                ptr::null_mut(),
            ],
            iPicWidth: c.width as c_int,
            iPicHeight: c.height as c_int,
            uiTimeStamp: timestamp.min(i64::MAX as u64) as i64,
            bPsnrY: false,
            bPsnrU: false,
            bPsnrV: false,
        };
        *self.info = sys::SFrameBSInfo::default();
        // SAFETY: `source` points into `picture`'s planes, sized for the configured
        // picture (checked above) and alive for the call; `info` is writable.
        let rc = unsafe { encode(self.raw, &source, &mut *self.info) };
        if rc != 0 {
            return Err(fail("EncodeFrame", rc));
        }
        let kind = match (self.frames, self.info.eFrameType) {
            (0, sys::videoFrameTypeIDR) => PictureKind::Idr,
            (n, sys::videoFrameTypeP) if n > 0 => PictureKind::P,
            (n, t) => {
                return Err(VideoError::Encoder(format!(
                    "picture {n} came out as frame type {t} (expected {})",
                    if n == 0 { "IDR" } else { "P" }
                )))
            }
        };
        let layers = usize::try_from(self.info.iLayerNum).unwrap_or(0);
        if layers == 0 || layers > self.info.sLayerInfo.len() {
            return Err(VideoError::Encoder(format!(
                "{layers} layers in one picture"
            )));
        }
        for layer in &self.info.sLayerInfo[..layers] {
            let nals = usize::try_from(layer.iNalCount).unwrap_or(0);
            if nals == 0 || layer.pNalLengthInByte.is_null() || layer.pBsBuf.is_null() {
                return Err(VideoError::Encoder("empty layer in encoder output".into()));
            }
            // SAFETY: OpenH264 guarantees `iNalCount` lengths behind `pNalLengthInByte`.
            let lengths = unsafe { std::slice::from_raw_parts(layer.pNalLengthInByte, nals) };
            let mut total = 0usize;
            for &len in lengths {
                total = total
                    .checked_add(usize::try_from(len).map_err(|_| fail("NAL length", len))?)
                    .ok_or_else(|| VideoError::Encoder("NAL lengths overflow".into()))?;
            }
            // SAFETY: the layer's NAL units are contiguous in `pBsBuf`, `total` bytes.
            let bytes = unsafe { std::slice::from_raw_parts(layer.pBsBuf, total) };
            out.extend_from_slice(bytes);
        }
        if self.frames == 0 && IDR_QP_OFFSET > 0 {
            self.switch_to_p_qp()?;
        }
        self.frames += 1;
        Ok(kind)
    }
}

impl Drop for Encoder {
    fn drop(&mut self) {
        // SAFETY: `raw` came from WelsCreateSVCEncoder and is destroyed exactly once.
        unsafe {
            if let Some(uninit) = self.vtbl.Uninitialize {
                uninit(self.raw);
            }
            sys::source::APILoader::WelsDestroySVCEncoder(self.raw);
        }
    }
}
