//! The `change` kernel: what changed between two co-registered images of one scene, as a
//! black/white mask (255 = changed).
//!
//! It is the method `sa` of `shared/reference/change` (the 2005 image-difference grid's
//! simulated annealing on a Markov random field, with the original text's two
//! mathematical errors corrected), bit-exact with the numpy reference, plus the
//! comparison methods `icm`, `otsu`, `bayes` and `doc_literal`.
//!
//! Data flow:
//! - submitter: [`prep`] turns the images into grey levels, the difference image X and its
//!   histogram; [`model`] turns the histogram into integer tables (all floating point of
//!   the job happens there, once); [`plan`](plan::plan) cuts X into fixed-height row
//!   bands with the exact halo and makes one shared [`tables`] blob plus the pieces of X
//!   the bands share, each band's [`params`] saying which rows it owns and computes;
//! - worker: [`worker`] validates a band's params, blobs and tables and runs [`engine`]
//!   (integer only, [`sweep`] is its hot loop, [`rng`] its random numbers) on it,
//!   returning only the band's own rows of the mask, bit-packed;
//! - submitter: [`assemble`] unpacks the bands' results and joins them in order.
//!
//! [`sample`] makes a deterministic demo pair and the calibration chunk.

pub mod assemble;
pub mod engine;
pub mod model;
pub mod params;
pub mod plan;
pub mod prep;
pub mod rng;
pub mod sample;
mod sweep;
pub mod tables;
pub mod worker;

pub use assemble::{Mask, PackedMaskError};
pub use params::{check_result, halo_rows, input_limits, max_result_len, validate};
pub use plan::{band_layout, plan, ChangePlan, TAPER_FROM_BANDS};
pub use prep::{difference, grey, histogram, Difference, MAX_PIXELS};
pub use sample::{calibration_task, sample_pair, sample_plan, SamplePair};
pub use worker::run;

/// A chunk's life under one path: its params and checks, planning, running, and its
/// packed result.
pub mod chunk {
    pub use super::assemble::{pack_mask, packed_len, unpack_mask_into, Mask};
    pub use super::params::{band_params, halo_rows, validate, BandParams};
    pub use super::plan::{band_layout, plan, ChangePlan, TAPER_FROM_BANDS};
    pub use super::tables::MAX_TABLES_BLOB;
    pub use super::worker::run;
    pub use super::{KERNEL, VERSION};
}

/// Kernel name in a [`TaskSpec`](idlegrid_protocol::TaskSpec).
pub const KERNEL: &str = "change";
/// Kernel version: bump when a chunk's output bytes or its inputs' layout change. 2:
/// the result is the bit-packed mask (version 1 sent one byte per pixel). 3: a band's
/// rows come in pieces shared with its neighbours (version 2 sent one blob per band).
pub const VERSION: u32 = 3;

use std::fmt;
use std::str::FromStr;

/// The labelling method.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// Corrected method of the 2005 grid: LLR data term + Ising prior, simulated annealing
    /// from a window initialisation, ICM finish. The default.
    Sa,
    /// Bayes decision + Ising prior, ICM sweeps only (Bruzzone & Prieto 2000 style).
    Icm,
    /// Otsu threshold on X: no model, no context.
    Otsu,
    /// Per-pixel Bayes decision (LLR > 0), no context.
    Bayes,
    /// The 2005 document as written (for comparison: it does not work).
    DocLiteral,
}

impl Method {
    pub fn name(self) -> &'static str {
        match self {
            Method::Sa => "sa",
            Method::Icm => "icm",
            Method::Otsu => "otsu",
            Method::Bayes => "bayes",
            Method::DocLiteral => "doc_literal",
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Method {
    type Err = String;
    fn from_str(s: &str) -> Result<Method, String> {
        match s {
            "sa" => Ok(Method::Sa),
            "icm" => Ok(Method::Icm),
            "otsu" => Ok(Method::Otsu),
            "bayes" => Ok(Method::Bayes),
            "doc_literal" | "doc-literal" => Ok(Method::DocLiteral),
            _ => Err(format!(
                "unknown method {s:?} (sa, icm, otsu, bayes, doc_literal)"
            )),
        }
    }
}

/// Temperature schedule of the annealing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Schedule {
    /// T_k = T0·α^k.
    Geom,
    /// T_k = T0 / ln(1 + k), k ≥ 1 (Geman & Geman).
    Log,
}

/// Parameters of a change job. [`Default`] is the reference's `sa` (its recommended
/// method); [`ChangeParams::preset`] gives the reference's settings of each method.
#[derive(Clone, Debug, PartialEq)]
pub struct ChangeParams {
    pub method: Method,
    /// The document's split: X > t_split·σ(X) starts as "change".
    pub t_split: f64,
    /// Refine the split's class statistics by EM.
    pub em: bool,
    /// Neighbourhood radius: 1 → 3×3, 2 → 5×5.
    pub radius: u32,
    /// Radius of the initialisation window (sa, doc_literal).
    pub window_radius: u32,
    /// Ising coupling, nats per neighbour pair.
    pub beta: f64,
    pub schedule: Schedule,
    /// First annealing temperature.
    pub t0: f64,
    /// Geometric cooling factor.
    pub alpha: f64,
    /// Annealing sweeps (sa, doc_literal).
    pub sweeps: u32,
    /// ICM sweeps (after the annealing for sa/doc_literal; all of icm).
    pub icm_sweeps: u32,
    /// doc_literal's threshold on the normalised mixture density.
    pub doc_p_threshold: f64,
    /// Seed of the counter-based RNG.
    pub seed: u64,
    /// Own rows per band (chunk). Part of the job's parameters, so the plan never depends
    /// on the peers. The image is cut into `⌈height / band_rows⌉` bands; a long job ends
    /// with smaller ones (see [`band_layout`]).
    pub band_rows: u32,
}

/// Default own rows per band: large enough that the halo (67 rows each side for 3×3 sa)
/// costs little, small enough that a big image gives many chunks.
pub const DEFAULT_BAND_ROWS: u32 = 512;

impl Default for ChangeParams {
    fn default() -> ChangeParams {
        ChangeParams {
            method: Method::Sa,
            t_split: 2.0,
            em: false,
            radius: 1,
            window_radius: 1,
            beta: 1.0,
            schedule: Schedule::Geom,
            t0: 2.0,
            alpha: 0.85,
            sweeps: 30,
            icm_sweeps: 3,
            doc_p_threshold: 0.05,
            seed: 2005,
            band_rows: DEFAULT_BAND_ROWS,
        }
    }
}

/// Largest accepted coupling β: keeps the acceptance tables small.
pub const MAX_BETA: f64 = 4.0;
/// Most annealing or ICM sweeps a job may ask for.
pub const MAX_SWEEPS: u32 = 1000;
/// Largest initialisation window radius.
pub const MAX_WINDOW_RADIUS: u32 = 8;

impl ChangeParams {
    /// The reference's settings for `method` (`run_benchmark.METHODS`): `sa` and
    /// `doc_literal` use the document's split, `icm` is `icm_em` (EM, 10 ICM sweeps),
    /// `bayes` is `bayes_doc`.
    pub fn preset(method: Method) -> ChangeParams {
        let base = ChangeParams {
            method,
            ..ChangeParams::default()
        };
        match method {
            Method::Icm => ChangeParams {
                em: true,
                icm_sweeps: 10,
                ..base
            },
            _ => base,
        }
    }

    /// Checks ranges; the message says which parameter is wrong.
    pub fn check(&self) -> Result<(), String> {
        let finite_pos = |v: f64| v.is_finite() && v > 0.0;
        if !(1..=2).contains(&self.radius) {
            return Err(format!("neighbourhood radius {} (1 or 2)", self.radius));
        }
        if self.window_radius > MAX_WINDOW_RADIUS {
            return Err(format!(
                "window radius {} (0..={MAX_WINDOW_RADIUS})",
                self.window_radius
            ));
        }
        if !(self.beta.is_finite() && (0.0..=MAX_BETA).contains(&self.beta)) {
            return Err(format!("beta {} (0..={MAX_BETA})", self.beta));
        }
        if !finite_pos(self.t_split) || self.t_split > 255.0 {
            return Err(format!("split {} (0 < T ≤ 255)", self.t_split));
        }
        if !finite_pos(self.t0) || self.t0 > 1e6 {
            return Err(format!("T0 {} (0 < T0 ≤ 1e6)", self.t0));
        }
        if !(finite_pos(self.alpha) && self.alpha <= 1.0) {
            return Err(format!("alpha {} (0 < α ≤ 1)", self.alpha));
        }
        if self.sweeps > MAX_SWEEPS || self.icm_sweeps > MAX_SWEEPS {
            return Err(format!("sweeps above {MAX_SWEEPS}"));
        }
        if !self.doc_p_threshold.is_finite() {
            return Err("doc_literal threshold is not finite".into());
        }
        if self.band_rows == 0 {
            return Err("band rows must be at least 1".into());
        }
        Ok(())
    }
}
