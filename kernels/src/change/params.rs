//! A change chunk's parameters: what travels in its [`TaskSpec`]'s `params` (CBOR), and
//! the checks a worker makes on them before it fetches any input.
//!
//! [`BandParams`] names one row band of the image: its own rows (the rows it returns),
//! the rows it computes (own rows plus the halo, clipped at the image), the rows of each
//! input piece, and the sweeps and seed of the run. The planner writes it
//! ([`super::plan`]); [`band_params`] decodes it on a worker and refuses anything a
//! correct planner could not have written — in particular a halo other than the exact
//! [`halo_rows`] the parameters imply, since a band with a short halo would return a
//! mask that differs from the whole-image mask. Errors are [`KernelError`]s, never
//! panics. The params also say how large each input and the result can be
//! ([`input_limits`], [`max_result_len`], [`check_result`]), so a worker bounds what it
//! fetches and a submitter what it accepts.

use idlegrid_protocol::{codec, limits, TaskSpec};
use serde::{Deserialize, Serialize};

use super::assemble::packed_len;
use super::prep::MAX_PIXELS;
use super::tables::MAX_TABLES_BLOB;
use super::{MAX_SWEEPS, MAX_WINDOW_RADIUS};
use crate::KernelError;

/// What a band chunk's `params` hold (CBOR). Rows are global.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BandParams {
    /// Image size: the RNG counter and the colour classes are global.
    pub width: u32,
    pub height: u32,
    /// The band's own rows, `row_start..row_end`: the rows it returns.
    pub row_start: u32,
    pub row_end: u32,
    /// Rows the band computes, own rows plus halo clipped at the image.
    pub ext_start: u32,
    pub ext_end: u32,
    /// Rows in each input piece after the tables, top to bottom: they add up to
    /// `ext_end - ext_start`.
    pub piece_rows: Vec<u32>,
    /// Neighbourhood radius (1 or 2).
    pub radius: u32,
    /// Initialisation window radius, or None to start from the sign of F.
    pub window: Option<u32>,
    /// Annealing sweeps (= number of acceptance tables), then ICM sweeps.
    pub anneal_sweeps: u32,
    pub icm_sweeps: u32,
    pub seed: u64,
}

/// `halo_rows` of the reference: the exact row reach of the dependency cone of the
/// colour-phase schedule, per (row class, column class), updated in phase order.
pub fn halo_rows(radius: u32, window: Option<u32>, sweeps: u64) -> u64 {
    let r = radius as i64;
    let m = (radius + 1) as usize;
    let mut reach = vec![window.unwrap_or(0) as u64; m * m];
    for _ in 0..sweeps {
        for a in 0..m {
            for b in 0..m {
                let mut best = reach[a * m + b];
                for dy in -r..=r {
                    for dx in -r..=r {
                        let ya = (a as i64 + dy).rem_euclid(m as i64) as usize;
                        let xb = (b as i64 + dx).rem_euclid(m as i64) as usize;
                        best = best.max(dy.unsigned_abs() + reach[ya * m + xb]);
                    }
                }
                reach[a * m + b] = best;
            }
        }
    }
    reach.into_iter().max().unwrap_or(0)
}

fn invalid(msg: impl Into<String>) -> KernelError {
    KernelError::InvalidParams(msg.into())
}

/// Decodes and checks a chunk's params (no inputs needed).
pub fn band_params(spec: &TaskSpec) -> Result<BandParams, KernelError> {
    let p: BandParams = codec::decode(&spec.params, limits::MAX_TASK_PARAMS)
        .map_err(|e| invalid(format!("params: {e}")))?;
    if spec.inputs.len() != 1 + p.piece_rows.len() {
        return Err(invalid(format!(
            "{} inputs, a change chunk with {} pieces has {} (tables, then the pieces)",
            spec.inputs.len(),
            p.piece_rows.len(),
            1 + p.piece_rows.len()
        )));
    }
    if p.width == 0 || p.height == 0 || p.width as u64 * p.height as u64 > MAX_PIXELS {
        return Err(invalid(format!(
            "image of {}x{} (1..={MAX_PIXELS} pixels)",
            p.width, p.height
        )));
    }
    if !(p.row_start < p.row_end && p.row_end <= p.height) {
        return Err(invalid(format!(
            "own rows {}..{} of a {}-row image",
            p.row_start, p.row_end, p.height
        )));
    }
    if !(1..=2).contains(&p.radius) {
        return Err(invalid(format!("radius {}", p.radius)));
    }
    if p.window.is_some_and(|r| r > MAX_WINDOW_RADIUS) {
        return Err(invalid("window radius out of range"));
    }
    if p.anneal_sweeps > MAX_SWEEPS || p.icm_sweeps > MAX_SWEEPS {
        return Err(invalid("too many sweeps"));
    }
    let halo = halo_rows(
        p.radius,
        p.window,
        p.anneal_sweeps as u64 + p.icm_sweeps as u64,
    );
    let want_start = (p.row_start as u64).saturating_sub(halo);
    let want_end = (p.row_end as u64 + halo).min(p.height as u64);
    if p.ext_start as u64 != want_start || p.ext_end as u64 != want_end {
        return Err(invalid(format!(
            "band rows {}..{} but own rows {}..{} with halo {halo} need {want_start}..{want_end}",
            p.ext_start, p.ext_end, p.row_start, p.row_end
        )));
    }
    if p.piece_rows.contains(&0) {
        return Err(invalid("an input piece of 0 rows"));
    }
    let piece_total: u64 = p.piece_rows.iter().map(|&r| r as u64).sum();
    if piece_total != (p.ext_end - p.ext_start) as u64 {
        return Err(invalid(format!(
            "pieces of {piece_total} rows for band rows {}..{}",
            p.ext_start, p.ext_end
        )));
    }
    Ok(p)
}

/// The registry's check of a chunk before any input is fetched.
pub fn validate(spec: &TaskSpec) -> Result<(), KernelError> {
    band_params(spec).map(|_| ())
}

/// Each input's largest size: the tables blob within [`MAX_TABLES_BLOB`], each piece
/// exactly its rows times the image width.
pub fn input_limits(spec: &TaskSpec) -> Result<Vec<u64>, KernelError> {
    let p = band_params(spec)?;
    Ok(std::iter::once(MAX_TABLES_BLOB as u64)
        .chain(
            p.piece_rows
                .iter()
                .map(|&rows| rows as u64 * p.width as u64),
        )
        .collect())
}

/// A band's result: its own rows of the mask, packed one bit a pixel.
pub fn max_result_len(spec: &TaskSpec) -> Result<u64, KernelError> {
    let p = band_params(spec)?;
    Ok(packed_len(p.width as usize * (p.row_end - p.row_start) as usize) as u64)
}

/// A band's result is exactly its packed own rows.
pub fn check_result(spec: &TaskSpec, result: &[u8]) -> Result<(), String> {
    let want = max_result_len(spec).map_err(|e| e.to_string())?;
    if result.len() as u64 != want {
        return Err(format!(
            "a packed band mask of {} bytes, this band's is {want}",
            result.len()
        ));
    }
    Ok(())
}
