//! Decoding H.264 back to pictures with OpenH264's decoder (from the same pinned sys
//! crate): used by tests (frame counts, seam PSNR) and available for spot checks. Error
//! concealment is off, so a damaged stream is an error rather than a guessed picture.
//!
//! All `unsafe` of the decoding side lives here.

use std::os::raw::{c_int, c_void};
use std::ptr;

use openh264_sys2 as sys;

use super::nal::{pictures, split};
use super::yuv::I420;
use super::VideoError;

/// An initialised OpenH264 decoder.
struct Decoder {
    raw: *mut sys::ISVCDecoder,
    vtbl: sys::ISVCDecoderVtbl,
}

fn fail(what: &str, code: impl std::fmt::Display) -> VideoError {
    VideoError::Decoder(format!("{what} failed (OpenH264 code {code})"))
}

impl Decoder {
    fn new() -> Result<Decoder, VideoError> {
        let mut raw: *mut sys::ISVCDecoder = ptr::null_mut();
        // SAFETY: writes a valid decoder pointer or returns non-zero.
        let rc = unsafe { sys::source::APILoader::WelsCreateDecoder(&mut raw) };
        if rc != 0 || raw.is_null() {
            return Err(fail("WelsCreateDecoder", rc));
        }
        // SAFETY: the decoder object's first field is its vtable.
        let vtbl = unsafe { **raw };
        let decoder = Decoder { raw, vtbl };
        let missing = || VideoError::Decoder("OpenH264 vtable entry missing".into());
        let init = decoder.vtbl.Initialize.ok_or_else(missing)?;
        let set_option = decoder.vtbl.SetOption.ok_or_else(missing)?;
        let param = sys::SDecodingParam {
            eEcActiveIdc: sys::ERROR_CON_DISABLE,
            sVideoProperty: sys::SVideoProperty {
                size: std::mem::size_of::<sys::SVideoProperty>() as u32,
                eVideoBsType: sys::VIDEO_BITSTREAM_AVC,
            },
            ..Default::default()
        };
        let mut quiet: c_int = sys::WELS_LOG_QUIET as c_int;
        let mut no_concealment: c_int = sys::ERROR_CON_DISABLE as c_int;
        // SAFETY: valid parameter block and pointers to ints alive across the calls.
        unsafe {
            set_option(
                decoder.raw,
                sys::DECODER_OPTION_TRACE_LEVEL,
                (&mut quiet as *mut c_int).cast::<c_void>(),
            );
            let rc = init(decoder.raw, &param);
            if rc != 0 {
                return Err(fail("Initialize", rc));
            }
            set_option(
                decoder.raw,
                sys::DECODER_OPTION_TRACE_LEVEL,
                (&mut quiet as *mut c_int).cast::<c_void>(),
            );
            set_option(
                decoder.raw,
                sys::DECODER_OPTION_ERROR_CON_IDC,
                (&mut no_concealment as *mut c_int).cast::<c_void>(),
            );
        }
        Ok(decoder)
    }

    /// Decodes one access unit (Annex B bytes); returns the picture if one is ready.
    fn decode(&mut self, unit: &[u8]) -> Result<Option<I420>, VideoError> {
        let len = c_int::try_from(unit.len())
            .map_err(|_| VideoError::Decoder("access unit over 2 GiB".into()))?;
        let decode = self
            .vtbl
            .DecodeFrameNoDelay
            .ok_or_else(|| VideoError::Decoder("OpenH264 vtable entry missing".into()))?;
        let mut planes: [*mut u8; 3] = [ptr::null_mut(); 3];
        let mut info = sys::SBufferInfo::default();
        // SAFETY: `unit` is readable for `len` bytes; `planes` and `info` are writable.
        let state = unsafe { decode(self.raw, unit.as_ptr(), len, planes.as_mut_ptr(), &mut info) };
        if state != sys::dsErrorFree {
            return Err(fail("DecodeFrameNoDelay", state));
        }
        picture(&planes, &info)
    }

    /// Takes a picture the decoder still holds (it may keep one back for reordering).
    fn flush(&mut self) -> Result<Option<I420>, VideoError> {
        let flush = self
            .vtbl
            .FlushFrame
            .ok_or_else(|| VideoError::Decoder("OpenH264 vtable entry missing".into()))?;
        let mut planes: [*mut u8; 3] = [ptr::null_mut(); 3];
        let mut info = sys::SBufferInfo::default();
        // SAFETY: `planes` and `info` are writable.
        let state = unsafe { flush(self.raw, planes.as_mut_ptr(), &mut info) };
        if state != sys::dsErrorFree {
            return Err(fail("FlushFrame", state));
        }
        picture(&planes, &info)
    }
}

/// Copies the picture a decode or flush call returned, if it returned one.
fn picture(planes: &[*mut u8; 3], info: &sys::SBufferInfo) -> Result<Option<I420>, VideoError> {
    if info.iBufferStatus != 1 {
        return Ok(None);
    }
    // SAFETY: with iBufferStatus 1 the union holds the system buffer description.
    let buf = unsafe { info.UsrData.sSystemBuffer };
    let (w, h) = (buf.iWidth, buf.iHeight);
    let (ys, cs) = (buf.iStride[0], buf.iStride[1]);
    if w <= 0 || h <= 0 || ys < w || cs < (w + 1) / 2 || planes.iter().any(|p| p.is_null()) {
        return Err(VideoError::Decoder(format!(
            "bad picture description {w}x{h}"
        )));
    }
    let (w, h, ys, cs) = (w as usize, h as usize, ys as usize, cs as usize);
    let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
    let copy = |plane: *mut u8, stride: usize, width: usize, height: usize| {
        let mut out = Vec::with_capacity(width * height);
        for row in 0..height {
            // SAFETY: OpenH264 owns `height` rows of `stride` bytes behind `plane`,
            // valid until the next decode call.
            let line = unsafe { std::slice::from_raw_parts(plane.add(row * stride), width) };
            out.extend_from_slice(line);
        }
        out
    };
    Ok(Some(I420 {
        width: w as u32,
        height: h as u32,
        y: copy(planes[0], ys, w, h),
        u: copy(planes[1], cs, cw, ch),
        v: copy(planes[2], cs, cw, ch),
    }))
}

impl Drop for Decoder {
    fn drop(&mut self) {
        // SAFETY: `raw` came from WelsCreateDecoder and is destroyed exactly once.
        unsafe {
            if let Some(uninit) = self.vtbl.Uninitialize {
                uninit(self.raw);
            }
            sys::source::APILoader::WelsDestroyDecoder(self.raw);
        }
    }
}

/// Decodes an Annex B H.264 stream picture by picture, calling `on_picture` with each
/// decoded picture in output order; returns the number of pictures. Any decoding error,
/// or fewer pictures out than coded pictures in, is an error.
pub fn decode_annexb(
    stream: &[u8],
    mut on_picture: impl FnMut(I420) -> Result<(), VideoError>,
) -> Result<u64, VideoError> {
    let mut decoder = Decoder::new()?;
    let mut coded = 0u64;
    let mut count = 0u64;
    let mut unit = Vec::new();
    for picture in pictures(split(stream)) {
        unit.clear();
        for nal in picture {
            unit.extend_from_slice(&[0, 0, 0, 1]);
            unit.extend_from_slice(nal.bytes);
        }
        coded += 1;
        if let Some(pic) = decoder.decode(&unit)? {
            on_picture(pic)?;
            count += 1;
        }
    }
    // Pictures held back for reordering; bounded by the pictures fed in.
    while count < coded {
        match decoder.flush()? {
            Some(pic) => {
                on_picture(pic)?;
                count += 1;
            }
            None => break,
        }
    }
    if count != coded {
        return Err(VideoError::Decoder(format!(
            "{coded} coded pictures decoded to {count} pictures"
        )));
    }
    Ok(count)
}

/// PSNR in dB of two equally sized 8-bit planes (`f64::INFINITY` when identical).
pub fn psnr(a: &[u8], b: &[u8]) -> f64 {
    let n = a.len().min(b.len()).max(1);
    let sse: u64 = a
        .iter()
        .zip(b)
        .map(|(&x, &y)| {
            let d = i64::from(x) - i64::from(y);
            (d * d) as u64
        })
        .sum();
    if sse == 0 {
        return f64::INFINITY;
    }
    10.0 * ((255.0 * 255.0) * n as f64 / sse as f64).log10()
}
