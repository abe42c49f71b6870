//! Planning a change job on the submitting peer: a difference image → band chunks.
//!
//! A job is cut into `⌈height / band_rows⌉` row bands (`band_rows` is a job parameter,
//! never the number of peers; see [`band_layout`] for how a long job ends with smaller
//! bands). Each band carries the exact halo of the reference's
//! [`halo_rows`](super::params::halo_rows) above and below, computes with global
//! coordinates, and returns only its own rows, so the joined mask equals the
//! whole-image mask for any band height.
//!
//! Blobs: ONE tables blob per job ([`super::tables`], shared by all its chunks, fetched
//! once per worker) and the *pieces* of X: the image cut into row ranges at every band
//! boundary and at every band's halo edge, row-major bytes. A band's rows with their
//! halo are then exactly a run of consecutive pieces, and the halo rows it shares with
//! its neighbours are the same blobs as theirs: a worker given neighbouring bands
//! fetches each shared row once instead of once per band (the halo is a third of a
//! 256-row band's bytes at the default sweeps), and no row is sent that the band does
//! not use. The chunk is `TaskSpec { kernel: "change", kernel_version: 3, params:
//! CBOR(BandParams), inputs: [tables, piece, piece, …] }`, the pieces top to bottom.
//!
//! All floating point of a job happens here, once; the plan depends on nothing but the
//! image and the parameters.

use std::collections::{BTreeSet, HashSet};
use std::ops::Range;

use idlegrid_protocol::{codec, Cid, TaskSpec};

use super::model::{self, Classes};
use super::params::{halo_rows, BandParams};
use super::prep::{Difference, MAX_PIXELS};
use super::tables::encode_tables;
use super::{ChangeParams, Method, KERNEL, VERSION};
use crate::KernelError;

/// A planned job: the blobs to publish, the chunks in order, and how to join them.
#[derive(Clone, Debug)]
pub struct ChangePlan {
    pub width: u32,
    pub height: u32,
    /// Tables blob first, then the pieces of X, each once (each named by its blake3).
    pub blobs: Vec<(Cid, Vec<u8>)>,
    /// One chunk per band, top to bottom.
    pub chunks: Vec<TaskSpec>,
    /// Own rows of each chunk, `start..end`.
    pub bands: Vec<(u32, u32)>,
    /// The class model behind the tables (None for otsu), for reports.
    pub classes: Option<Classes>,
}

/// Cuts the job on `diff` into chunks (submitter side; all floating point happens here).
pub fn plan(diff: &Difference, params: &ChangeParams) -> Result<ChangePlan, KernelError> {
    params.check().map_err(KernelError::InvalidParams)?;
    let (w, h) = (diff.width, diff.height);
    if w == 0 || h == 0 || w as u64 * h as u64 > MAX_PIXELS {
        return Err(KernelError::InvalidInput(format!(
            "image of {w}x{h} pixels (1..={MAX_PIXELS} pixels)"
        )));
    }
    if diff.x.len() != w as usize * h as usize {
        return Err(KernelError::InvalidInput(format!(
            "difference image has {} bytes for {w}x{h}",
            diff.x.len()
        )));
    }
    let hist = diff.histogram();
    let (luts, classes) = model::luts(
        &hist,
        params.method,
        params.t_split,
        params.em,
        params.beta,
        params.doc_p_threshold,
    );
    let (window, anneal, icm) = match params.method {
        Method::Sa | Method::DocLiteral => {
            (Some(params.window_radius), params.sweeps, params.icm_sweeps)
        }
        Method::Icm => (None, 0, params.icm_sweeps),
        Method::Otsu | Method::Bayes => (None, 0, 0),
    };
    let unit = if params.method == Method::DocLiteral {
        0.5
    } else {
        1.0 / model::Q
    };
    let dmax = model::dmax(&luts.f, luts.b, params.radius);
    let temps = model::temperatures(params.schedule, params.t0, params.alpha, anneal);
    let tables = encode_tables(&luts, &temps, unit, dmax)?;
    let tables_cid = Cid::of(&tables);
    let halo = halo_rows(params.radius, window, anneal as u64 + icm as u64);
    let mut plan = ChangePlan {
        width: w,
        height: h,
        blobs: vec![(tables_cid, tables)],
        chunks: Vec::new(),
        bands: Vec::new(),
        classes,
    };
    // Own rows and computed rows (own + halo, clipped) of every band.
    let bands: Vec<(u32, u32, u32, u32)> = band_layout(h, params.band_rows)
        .into_iter()
        .map(|(start, end)| {
            let ext_start = (start as u64).saturating_sub(halo) as u32;
            let ext_end = (end as u64 + halo).min(h as u64) as u32;
            (start, end, ext_start, ext_end)
        })
        .collect();
    // The pieces: X cut at every band boundary and every halo edge, so that each band's
    // computed rows are a run of whole pieces (`cuts` holds 0 and h).
    let cuts: Vec<u32> = bands
        .iter()
        .flat_map(|&(s, e, xs, xe)| [s, e, xs, xe])
        .collect::<BTreeSet<u32>>()
        .into_iter()
        .collect();
    let row_bytes = |rows: Range<u32>| {
        &diff.x[rows.start as usize * w as usize..rows.end as usize * w as usize]
    };
    let mut piece_cids = Vec::with_capacity(cuts.len().saturating_sub(1));
    let mut published = HashSet::new();
    for piece in cuts.windows(2) {
        let bytes = row_bytes(piece[0]..piece[1]);
        let cid = Cid::of(bytes);
        // Two pieces of equal bytes (a flat region) are one blob.
        if published.insert(cid) {
            plan.blobs.push((cid, bytes.to_vec()));
        }
        piece_cids.push(cid);
    }
    for (start, end, ext_start, ext_end) in bands {
        // Pieces `first..last` of `cuts` tile ext_start..ext_end exactly.
        let first = cuts.partition_point(|&c| c < ext_start);
        let last = cuts.partition_point(|&c| c < ext_end);
        let bp = BandParams {
            width: w,
            height: h,
            row_start: start,
            row_end: end,
            ext_start,
            ext_end,
            piece_rows: cuts[first..=last].windows(2).map(|p| p[1] - p[0]).collect(),
            radius: params.radius,
            window,
            anneal_sweeps: anneal,
            icm_sweeps: icm,
            seed: params.seed,
        };
        let mut inputs = Vec::with_capacity(1 + last - first);
        inputs.push(tables_cid);
        inputs.extend_from_slice(&piece_cids[first..last]);
        plan.chunks.push(TaskSpec {
            kernel: KERNEL.into(),
            kernel_version: VERSION,
            params: codec::encode(&bp).map_err(|e| KernelError::Failed(e.to_string()))?,
            inputs,
        });
        plan.bands.push((start, end));
    }
    Ok(plan)
}

/// Bands a job of at least this many has its last band's rows cut into three.
pub const TAPER_FROM_BANDS: u32 = 12;

/// The own rows of every band of a `height`-row image at `band_rows` (> 0) rows per
/// band, top to bottom: `⌈height / band_rows⌉` bands tiling the image.
///
/// A short job is cut evenly (the last band takes what is left). A job of at least
/// [`TAPER_FROM_BANDS`] bands ends with three small bands of ½, ¼ and ¼ of `band_rows`
/// (for 256: 128, 64, 64), and its other bands share the remaining rows (for a 6144-row
/// image at 256, 281 or 282 rows each instead of 256). Why: peers finish a job together
/// only to within the last chunk each of them takes, and the scheduler hands out the
/// small chunks last (`scheduler::dispatch`), so the end waits for a small band rather
/// than a whole one. Keeping the number of bands keeps the halo work, which is paid once
/// per band: smaller bands only at the end would have made every job dearer, even on
/// one machine. The mask is the same whatever the layout (each band has its exact
/// halo), and the layout depends on the parameters alone.
pub fn band_layout(height: u32, band_rows: u32) -> Vec<(u32, u32)> {
    let band_rows = band_rows.max(1);
    let count = height.div_ceil(band_rows);
    let mut rows: Vec<u32> = Vec::with_capacity(count as usize);
    let half = band_rows.div_ceil(2);
    let quarter = (band_rows - half).div_ceil(2);
    let last = band_rows - half - quarter;
    if count >= TAPER_FROM_BANDS && last > 0 {
        // The other bands share what the tail leaves, the first ones one row more.
        let others = count - 3;
        let rest = height - band_rows;
        let (base, extra) = (rest / others, rest % others);
        rows.extend((0..others).map(|i| base + u32::from(i < extra)));
        rows.extend([half, quarter, last]);
    } else {
        rows.extend((0..count).map(|i| band_rows.min(height - i * band_rows)));
    }
    let mut start = 0;
    rows.into_iter()
        .map(|n| {
            let band = (start, start + n);
            start += n;
            band
        })
        .collect()
}
