//! A change chunk's result and joining the results into the mask, on the submitter.
//!
//! A chunk's result is its own rows' mask packed one bit per pixel ([`pack_mask`], on
//! the worker): pixels row-major as one bit stream, least significant bit first, 1 =
//! changed, the last byte's unused bits zero. That is an eighth of the bytes a worker
//! sends back, hashes and stores. [`ChangePlan::assemble`] takes the results in chunk
//! order (never arrival order), checks each one's length and padding against its
//! band's rows ([`unpack_mask_into`]) and unpacks them into the 0/255 [`Mask`].

use super::plan::ChangePlan;
use crate::KernelError;

/// The final mask of a job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mask {
    pub width: u32,
    pub height: u32,
    /// Row-major, 255 = changed, 0 = unchanged.
    pub pixels: Vec<u8>,
}

impl Mask {
    /// Fraction of pixels marked changed.
    pub fn changed_fraction(&self) -> f64 {
        let n = self.pixels.iter().filter(|&&p| p != 0).count();
        n as f64 / self.pixels.len().max(1) as f64
    }
}

/// Why a packed mask was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PackedMaskError {
    #[error("{got} bytes, {pixels} pixels packed need {want}")]
    Length {
        got: usize,
        pixels: usize,
        want: usize,
    },
    #[error("unused bits of the last byte are set")]
    UnusedBitsSet,
}

/// Bytes of a packed mask of `pixels` pixels.
pub fn packed_len(pixels: usize) -> usize {
    pixels.div_ceil(8)
}

/// Packs a 0/255 mask (any non-zero byte counts as changed) one bit per pixel, least
/// significant bit first; the last byte's unused bits are zero.
pub fn pack_mask(mask: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(packed_len(mask.len()));
    let mut eights = mask.chunks_exact(8);
    for eight in &mut eights {
        let mut byte = 0u8;
        for (bit, &p) in eight.iter().enumerate() {
            byte |= u8::from(p != 0) << bit;
        }
        out.push(byte);
    }
    let rest = eights.remainder();
    if !rest.is_empty() {
        let mut byte = 0u8;
        for (bit, &p) in rest.iter().enumerate() {
            byte |= u8::from(p != 0) << bit;
        }
        out.push(byte);
    }
    out
}

/// Appends the `pixels` pixels packed in `packed` to `out` as 0/255 bytes. `packed`
/// must be exactly [`packed_len`] bytes with its unused bits zero: a result that could
/// be written two ways would make two honest peers disagree by hash.
pub fn unpack_mask_into(
    packed: &[u8],
    pixels: usize,
    out: &mut Vec<u8>,
) -> Result<(), PackedMaskError> {
    if packed.len() != packed_len(pixels) {
        return Err(PackedMaskError::Length {
            got: packed.len(),
            pixels,
            want: packed_len(pixels),
        });
    }
    let tail = pixels % 8;
    if tail != 0 && packed.last().is_some_and(|&b| b >> tail != 0) {
        return Err(PackedMaskError::UnusedBitsSet);
    }
    out.reserve(pixels);
    let whole = pixels / 8;
    for &byte in &packed[..whole] {
        for bit in 0..8 {
            out.push(if byte >> bit & 1 == 1 { 255 } else { 0 });
        }
    }
    if let Some(&byte) = packed.get(whole) {
        for bit in 0..tail {
            out.push(if byte >> bit & 1 == 1 { 255 } else { 0 });
        }
    }
    Ok(())
}

impl ChangePlan {
    /// Joins the chunk results (in chunk order, each a packed mask of its own rows)
    /// into the mask, checking each length.
    pub fn assemble<R: AsRef<[u8]>>(&self, results: &[R]) -> Result<Mask, KernelError> {
        if results.len() != self.chunks.len() {
            return Err(KernelError::InvalidInput(format!(
                "{} results for {} chunks",
                results.len(),
                self.chunks.len()
            )));
        }
        let w = self.width as usize;
        let mut pixels = Vec::with_capacity(w * self.height as usize);
        for (i, (res, &(a, b))) in results.iter().zip(&self.bands).enumerate() {
            unpack_mask_into(res.as_ref(), (b - a) as usize * w, &mut pixels).map_err(|why| {
                KernelError::InvalidInput(format!("result of chunk {i} (rows {a}..{b}): {why}"))
            })?;
        }
        Ok(Mask {
            width: self.width,
            height: self.height,
            pixels,
        })
    }
}
