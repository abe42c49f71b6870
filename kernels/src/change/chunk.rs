//! Chunks of a change job: `plan` (submitter), `run` (any peer), `assemble` (submitter).
//!
//! A job is cut into `⌈height / band_rows⌉` row bands (`band_rows` is a job parameter,
//! never the number of peers; see [`band_layout`] for how a long job ends with smaller
//! bands). Each band carries the exact halo of the reference's `halo_rows` above and
//! below, computes with global coordinates, and returns only its own rows, so the joined
//! mask equals the whole-image mask for any band height.
//!
//! Blobs: ONE tables blob per job (the integer tables of [`super::model`], shared by all
//! its chunks, fetched once per worker) and the *pieces* of X: the image cut into row
//! ranges at every band boundary and at every band's halo edge, row-major bytes. A
//! band's rows with their halo are then exactly a run of consecutive pieces, and the
//! halo rows it shares with its neighbours are the same blobs as theirs: a worker given
//! neighbouring bands fetches each shared row once instead of once per band (the halo
//! is a third of a 256-row band's bytes at the default sweeps), and no row is sent
//! that the band does not use. The chunk is
//! `TaskSpec { kernel: "change", kernel_version: 3, params: CBOR(BandParams),
//! inputs: [tables, piece, piece, …] }`, the pieces top to bottom.
//!
//! A chunk's result is its own rows' mask packed one bit per pixel ([`pack_mask`]):
//! pixels row-major as one bit stream, least significant bit first, 1 = changed, the
//! last byte's unused bits zero. That is an eighth of the bytes a worker sends back,
//! hashes and stores; [`ChangePlan::assemble`] unpacks it into the 0/255 mask.
//!
//! A worker trusts nothing: [`validate`] checks the params (sizes, ranges, that the halo
//! is exactly the one the parameters imply) before any fetch, and [`run`] checks the
//! blobs' lengths and every table's size and range before any work. Errors are
//! [`KernelError`]s, never panics.

use idlegrid_protocol::{codec, Cid, TaskSpec};
use serde::{Deserialize, Serialize};

use super::engine::{self, Band, Init, Program};
use super::model::{self, Classes};
use super::prep::{Difference, MAX_PIXELS};
use super::{ChangeParams, Method, MAX_SWEEPS, MAX_WINDOW_RADIUS};
use crate::{KernelError, Spread};

/// Kernel name in a [`TaskSpec`].
pub const KERNEL: &str = "change";
/// Kernel version: bump when a chunk's output bytes or its inputs' layout change. 2:
/// the result is the bit-packed mask (version 1 sent one byte per pixel). 3: a band's
/// rows come in pieces shared with its neighbours (version 2 sent one blob per band).
pub const VERSION: u32 = 3;
/// Largest tables blob (1000 sweeps of 5×5 tables at the largest β fit).
pub const MAX_TABLES_BLOB: usize = 64 * 1024 * 1024;
/// Largest |F|: the data-term clamp, 16 nats at 64 units per nat.
const MAX_F: i32 = 1024;
/// Largest coupling B (β ≤ 4 at 64 units per nat).
const MAX_B: u32 = 256;

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

/// The tables blob (CBOR); integers are little-endian packed bytes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct TablesWire {
    /// F per grey level, 256 × i16.
    #[serde(with = "serde_bytes")]
    f: Vec<u8>,
    /// q16 per grey level, 256 × u16.
    #[serde(with = "serde_bytes")]
    q16: Vec<u8>,
    /// Empty, or doc_literal's gauge: 256 × i8, each ±1.
    #[serde(with = "serde_bytes")]
    gauge: Vec<u8>,
    /// Coupling B.
    b: u32,
    /// One acceptance table per annealing sweep, u32 each, trailing zeros cut.
    thresholds: Vec<serde_bytes::ByteBuf>,
}

/// Decoded, validated tables.
struct Tables {
    f: [i32; 256],
    q16: [u32; 256],
    gauge: Option<[i8; 256]>,
    b: i32,
    thresholds: Vec<Vec<u32>>,
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
pub fn unpack_mask_into(packed: &[u8], pixels: usize, out: &mut Vec<u8>) -> Result<(), String> {
    if packed.len() != packed_len(pixels) {
        return Err(format!(
            "{} bytes, {pixels} pixels packed need {}",
            packed.len(),
            packed_len(pixels)
        ));
    }
    let tail = pixels % 8;
    if tail != 0 && packed.last().is_some_and(|&b| b >> tail != 0) {
        return Err("unused bits of the last byte are set".into());
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
    pub fn assemble(&self, results: &[Vec<u8>]) -> Result<Mask, KernelError> {
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
            unpack_mask_into(res, (b - a) as usize * w, &mut pixels).map_err(|why| {
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

fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>, KernelError> {
    codec::encode(v).map_err(|e| KernelError::Failed(e.to_string()))
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
    let wire = TablesWire {
        f: luts
            .f
            .iter()
            .flat_map(|&v| (v as i16).to_le_bytes())
            .collect(),
        q16: luts
            .q16
            .iter()
            .flat_map(|&v| (v as u16).to_le_bytes())
            .collect(),
        gauge: luts
            .gauge
            .map(|g| g.iter().map(|&v| v as u8).collect())
            .unwrap_or_default(),
        b: luts.b as u32,
        thresholds: temps
            .iter()
            .map(|&t| {
                let tab = model::accept_table(t, unit, dmax);
                let mut bytes = Vec::with_capacity(4 * tab.len());
                for v in tab {
                    bytes.extend_from_slice(&v.to_le_bytes());
                }
                serde_bytes::ByteBuf::from(bytes)
            })
            .collect(),
    };
    let tables = encode(&wire)?;
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
        .collect::<std::collections::BTreeSet<u32>>()
        .into_iter()
        .collect();
    let row_bytes = |rows: std::ops::Range<u32>| {
        &diff.x[rows.start as usize * w as usize..rows.end as usize * w as usize]
    };
    let mut piece_cids = Vec::with_capacity(cuts.len().saturating_sub(1));
    let mut published = std::collections::HashSet::new();
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
            params: encode(&bp)?,
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

fn invalid(msg: impl Into<String>) -> KernelError {
    KernelError::InvalidParams(msg.into())
}

/// Decodes and checks a chunk's params (no inputs needed).
pub fn band_params(spec: &TaskSpec) -> Result<BandParams, KernelError> {
    let p: BandParams = codec::decode(&spec.params, idlegrid_protocol::limits::MAX_TASK_PARAMS)
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

fn bad_input(msg: impl Into<String>) -> KernelError {
    KernelError::InvalidInput(msg.into())
}

/// Decodes and checks the tables blob against the chunk's params.
fn decode_tables(bytes: &[u8], p: &BandParams) -> Result<Tables, KernelError> {
    let wire: TablesWire =
        codec::decode(bytes, MAX_TABLES_BLOB).map_err(|e| bad_input(format!("tables: {e}")))?;
    if wire.f.len() != 512 || wire.q16.len() != 512 {
        return Err(bad_input("tables: F and q16 must have 256 entries"));
    }
    let mut f = [0i32; 256];
    let mut q16 = [0u32; 256];
    for v in 0..256 {
        f[v] = i16::from_le_bytes([wire.f[2 * v], wire.f[2 * v + 1]]) as i32;
        q16[v] = u16::from_le_bytes([wire.q16[2 * v], wire.q16[2 * v + 1]]) as u32;
        if f[v].abs() > MAX_F {
            return Err(bad_input(format!("tables: F[{v}] = {} out of range", f[v])));
        }
    }
    let gauge = match wire.gauge.len() {
        0 => None,
        256 => {
            let mut g = [0i8; 256];
            for (d, &s) in g.iter_mut().zip(&wire.gauge) {
                *d = match s {
                    1 => 1,
                    0xFF => -1,
                    _ => return Err(bad_input("tables: gauge entries must be ±1")),
                };
            }
            Some(g)
        }
        n => return Err(bad_input(format!("tables: gauge of {n} entries"))),
    };
    if wire.b > MAX_B {
        return Err(bad_input(format!("tables: B = {} out of range", wire.b)));
    }
    let b = wire.b as i32;
    if wire.thresholds.len() != p.anneal_sweeps as usize {
        return Err(bad_input(format!(
            "tables: {} acceptance tables for {} annealing sweeps",
            wire.thresholds.len(),
            p.anneal_sweeps
        )));
    }
    let dmax = model::dmax(&f, b, p.radius) as usize;
    let mut thresholds = Vec::with_capacity(wire.thresholds.len());
    for (k, t) in wire.thresholds.iter().enumerate() {
        if t.len() % 4 != 0 || t.len() / 4 > dmax + 1 {
            return Err(bad_input(format!(
                "tables: acceptance table {k} has {} bytes",
                t.len()
            )));
        }
        thresholds.push(
            t.chunks_exact(4)
                .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        );
    }
    Ok(Tables {
        f,
        q16,
        gauge,
        b,
        thresholds,
    })
}

/// Runs one band chunk: `inputs` = [tables blob, the band's pieces top to bottom].
/// Returns the band's own rows of the mask, packed ([`pack_mask`]).
pub fn run<B: AsRef<[u8]>>(spec: &TaskSpec, inputs: &[B]) -> Result<Vec<u8>, KernelError> {
    let inputs: Vec<&[u8]> = inputs.iter().map(AsRef::as_ref).collect();
    run_band(spec, &inputs, Spread::Pool)
}

/// [`run`] on borrowed blobs (the registry's entry).
pub(crate) fn run_band(
    spec: &TaskSpec,
    inputs: &[&[u8]],
    spread: Spread,
) -> Result<Vec<u8>, KernelError> {
    let p = band_params(spec)?;
    let Some((tables, pieces)) = inputs.split_first() else {
        return Err(bad_input("no input blobs"));
    };
    if pieces.len() != p.piece_rows.len() {
        return Err(bad_input(format!(
            "{} input pieces, the params name {}",
            pieces.len(),
            p.piece_rows.len()
        )));
    }
    if inputs
        .iter()
        .zip(&spec.inputs)
        .any(|(b, cid)| Cid::of(b) != *cid)
    {
        return Err(bad_input("an input blob does not match its content id"));
    }
    let t = decode_tables(tables, &p)?;
    let w = p.width as usize;
    let rows = (p.ext_end - p.ext_start) as usize;
    let mut row = p.ext_start;
    for (i, (piece, &n)) in pieces.iter().zip(&p.piece_rows).enumerate() {
        if piece.len() != n as usize * w {
            return Err(bad_input(format!(
                "input piece {i} (rows {row}..{}) of {} bytes, width {w} needs {}",
                row + n,
                piece.len(),
                n as usize * w
            )));
        }
        row += n;
    }
    // The engine reads the band as one slice; one piece is used as it is.
    let joined: Vec<u8>;
    let band: &[u8] = match pieces {
        [one] => one,
        _ => {
            joined = pieces.concat();
            &joined
        }
    };
    let prog = Program {
        f: &t.f,
        q16: &t.q16,
        gauge: t.gauge.as_ref(),
        b: t.b,
        radius: p.radius as usize,
        init: p.window.map_or(Init::Sign, |r| Init::Window(r as usize)),
        thresholds: &t.thresholds,
        icm_sweeps: p.icm_sweeps,
        seed: p.seed,
    };
    let b = Band {
        x: band,
        width: w,
        rows,
        y0: p.ext_start as usize,
        height: p.height as usize,
    };
    let lo = (p.row_start - p.ext_start) as usize;
    let hi = (p.row_end - p.ext_start) as usize;
    let spins = engine::solve(&b, &prog, spread, lo..hi);
    Ok(pack_mask(&spins.mask_rows(lo, hi)))
}
