//! Coordinator-side floating point: everything of the change kernel that is not integer.
//!
//! Data flow: the whole image's 256-bin histogram of X = |YA − YB| goes in; out come the
//! integer look-up tables a worker needs ([`Luts`]: the data term `F`, the window
//! probability `q16`, the doc-literal gauge, the coupling `B`) and the per-sweep u32
//! Metropolis acceptance tables. Nothing here runs on a worker, so the chunk results never
//! depend on a worker's floating point; they depend on these tables, computed once by the
//! submitter and shipped in one blob.
//!
//! Every formula follows the reference (`cdref.py`) operation by operation, in the same
//! order, because the tables must equal the reference's bit for bit: numpy's `round` is
//! round-half-even ([`f64::round_ties_even`]), numpy's `sum` of a float array is a pairwise
//! sum with eight accumulators ([`np_sum`]), Python's `int / int` is a correctly rounded
//! division (exact here: every count is below 2^53). `exp`, `ln`, `powf` come from the
//! platform libm; numpy on an AVX-512 machine uses its own vector `exp`, which differs from
//! libm by one ulp on a few percent of arguments. The tests in `kernels/tests` show those
//! differences and that they move no table entry.

use super::{Method, Schedule};

/// Energy units per nat of the corrected model (`Q` of the reference).
pub const Q: f64 = 64.0;
/// Clamp of the data term, in nats (`HMAX`).
pub const HMAX: f64 = 16.0;
/// Probabilities are quantised to this many steps for the window initialisation (`P16`).
pub const P16: f64 = 65535.0;
/// Smallest class standard deviation, in grey levels.
pub const SIGMA_FLOOR: f64 = 0.5;
/// Most EM iterations and the convergence tolerance (`em_refine` defaults).
const EM_ITERS: usize = 300;
const EM_TOL: f64 = 1e-10;

/// The two-Gaussian model: prior, mean and standard deviation of "change" (c) and
/// "no change" (n).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Classes {
    pub pc: f64,
    pub mc: f64,
    pub sc: f64,
    pub pn: f64,
    pub mn: f64,
    pub sn: f64,
}

/// numpy's `np.add.reduce` of a contiguous float64 array: pairwise summation, blocks of at
/// most 128 summed with eight interleaved accumulators, started from the identity 0.0.
pub fn np_sum(a: &[f64]) -> f64 {
    0.0 + pairwise(a)
}

fn pairwise(a: &[f64]) -> f64 {
    let n = a.len();
    if n < 8 {
        let mut res = 0.0;
        for &v in a {
            res += v;
        }
        res
    } else if n <= 128 {
        let mut r = [0.0f64; 8];
        r.copy_from_slice(&a[..8]);
        let full = n - n % 8;
        let mut i = 8;
        while i < full {
            for j in 0..8 {
                r[j] += a[i + j];
            }
            i += 8;
        }
        let mut res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
        for &v in &a[full..] {
            res += v;
        }
        res
    } else {
        let mut n2 = n / 2;
        n2 -= n2 % 8;
        pairwise(&a[..n2]) + pairwise(&a[n2..])
    }
}

/// Count, mean and population standard deviation (floored) of the grey levels selected
/// by `sel`, exactly as `_moments`.
fn moments(h: &[u64; 256], sel: impl Fn(usize) -> bool) -> (u64, f64, f64) {
    let (mut n, mut s1, mut s2) = (0u64, 0u64, 0u64);
    for (v, &c) in h.iter().enumerate() {
        if sel(v) {
            let v = v as u64;
            n += c;
            s1 += c * v;
            s2 += c * v * v;
        }
    }
    if n == 0 {
        return (0, 0.0, SIGMA_FLOOR);
    }
    let m = s1 as f64 / n as f64;
    let var = (s2 as f64 / n as f64 - m * m).max(0.0);
    (n, m, var.sqrt().max(SIGMA_FLOOR))
}

/// The document's split: σ = std(X), change set X > T·σ, class moments.
pub fn doc_split(h: &[u64; 256], t_split: f64) -> Classes {
    let total: u64 = h.iter().sum();
    let (_, _, sigma) = moments(h, |_| true);
    let limit = t_split * sigma;
    let is_change = |v: usize| (v as f64) > limit;
    let (nc, mc, sc) = moments(h, is_change);
    let (nn, mn, sn) = moments(h, |v| !is_change(v));
    Classes {
        pc: nc as f64 / total as f64,
        mc,
        sc,
        pn: nn as f64 / total as f64,
        mn,
        sn,
    }
}

/// `(v - m) / s` squared for v = 0..255, as numpy computes `((v - m) / s) ** 2`.
fn z2(m: f64, s: f64) -> [f64; 256] {
    let mut out = [0.0; 256];
    for (v, o) in out.iter_mut().enumerate() {
        let z = (v as f64 - m) / s;
        *o = z * z;
    }
    out
}

/// EM for a two-Gaussian mixture on the histogram (Bruzzone & Prieto 2000), `em_refine`.
pub fn em_refine(h: &[u64; 256], c: Classes) -> Classes {
    let hf: Vec<f64> = h.iter().map(|&x| x as f64).collect();
    let total = np_sum(&hf);
    let Classes {
        mut pc,
        mut mc,
        mut sc,
        mut pn,
        mut mn,
        mut sn,
    } = c;
    if pc <= 0.0 || pn <= 0.0 {
        return c;
    }
    let mut wc = [0.0f64; 256];
    let mut wn = [0.0f64; 256];
    let mut tmp = [0.0f64; 256];
    for _ in 0..EM_ITERS {
        let zc = z2(mc, sc);
        let zn = z2(mn, sn);
        let kc = pc / sc;
        let kn = pn / sn;
        for v in 0..256 {
            let lc = kc * (-0.5 * zc[v]).exp();
            let ln = kn * (-0.5 * zn[v]).exp();
            let mut tot = lc + ln;
            if tot == 0.0 {
                tot = 1e-300;
            }
            wc[v] = hf[v] * lc / tot;
            wn[v] = hf[v] * ln / tot;
        }
        let w_c = np_sum(&wc);
        let w_n = np_sum(&wn);
        if w_c < 1.0 || w_n < 1.0 {
            break;
        }
        for v in 0..256 {
            tmp[v] = wc[v] * v as f64;
        }
        let mc2 = np_sum(&tmp) / w_c;
        for v in 0..256 {
            tmp[v] = wn[v] * v as f64;
        }
        let mn2 = np_sum(&tmp) / w_n;
        for v in 0..256 {
            let d = v as f64 - mc2;
            tmp[v] = wc[v] * (d * d);
        }
        let sc2 = (np_sum(&tmp) / w_c).sqrt().max(SIGMA_FLOOR);
        for v in 0..256 {
            let d = v as f64 - mn2;
            tmp[v] = wn[v] * (d * d);
        }
        let sn2 = (np_sum(&tmp) / w_n).sqrt().max(SIGMA_FLOOR);
        let pc2 = w_c / total;
        let pn2 = w_n / total;
        let delta = (mc2 - mc).abs()
            + (mn2 - mn).abs()
            + (sc2 - sc).abs()
            + (sn2 - sn).abs()
            + (pc2 - pc).abs();
        (pc, mc, sc, pn, mn, sn) = (pc2, mc2, sc2, pn2, mn2, sn2);
        if delta < EM_TOL {
            break;
        }
    }
    if mc < mn {
        (pc, mc, sc, pn, mn, sn) = (pn, mn, sn, pc, mc, sc);
    }
    Classes {
        pc,
        mc,
        sc,
        pn,
        mn,
        sn,
    }
}

/// Log-likelihood ratio ln[pc N(v;mc,sc)] − ln[pn N(v;mn,sn)], made non-decreasing in v
/// when `monotone` (`llr_lut`).
pub fn llr(c: &Classes, monotone: bool) -> [f64; 256] {
    let ac = c.pc.max(1e-12).ln() - c.sc.ln();
    let an = c.pn.max(1e-12).ln() - c.sn.ln();
    let zc = z2(c.mc, c.sc);
    let zn = z2(c.mn, c.sn);
    let mut out = [0.0f64; 256];
    for v in 0..256 {
        out[v] = (ac - 0.5 * zc[v]) - (an - 0.5 * zn[v]);
    }
    if monotone {
        let k = c.mn.round_ties_even().clamp(0.0, 255.0) as usize;
        let pivot = out[k];
        for x in &mut out[..k] {
            *x = x.min(pivot);
        }
        for v in 1..256 {
            out[v] = out[v].max(out[v - 1]);
        }
    }
    out
}

/// The integer tables a worker uses, derived from the histogram.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Luts {
    /// Data term per grey level, in 1/64 nat: `round(clamp(llr/2, ±16)·64)`.
    pub f: [i32; 256],
    /// Change probability per grey level, quantised to 0..=65535 (window init).
    pub q16: [u32; 256],
    /// doc_literal only: the document's data sign p = ±1 per grey level (τ = p·s gauge).
    pub gauge: Option<[i8; 256]>,
    /// Ising coupling in 1/64 nat per neighbour (1 for doc_literal).
    pub b: i32,
}

/// numpy's `np.round(x)` (half to even), as an integer.
fn np_round(x: f64) -> i64 {
    x.round_ties_even() as i64
}

/// The document's pX = pXc + pXn, min-max normalised over the grey levels present.
fn doc_sum(c: &Classes, h: &[u64; 256]) -> [f64; 256] {
    let k = 1.0 / (2.0 * std::f64::consts::PI).sqrt();
    let zc = z2(c.mc, c.sc);
    let zn = z2(c.mn, c.sn);
    let mut px = [0.0f64; 256];
    for v in 0..256 {
        let pxc = k / c.sc * (-0.5 * zc[v]).exp();
        let pxn = k / c.sn * (-0.5 * zn[v]).exp();
        px[v] = pxc + pxn;
    }
    let present = || (0..256).filter(|&v| h[v] > 0).map(|v| px[v]);
    let lo = present().fold(f64::INFINITY, f64::min);
    let hi = present().fold(f64::NEG_INFINITY, f64::max);
    let mut out = [0.0f64; 256];
    if hi > lo {
        for v in 0..256 {
            out[v] = (px[v] - lo) / (hi - lo);
        }
    }
    out
}

/// Otsu's threshold on the histogram; change iff X > t (`otsu_threshold`).
pub fn otsu_threshold(h: &[u64; 256]) -> u8 {
    let hf: Vec<f64> = h.iter().map(|&x| x as f64).collect();
    let total = np_sum(&hf);
    let mut w0 = [0.0f64; 256];
    let mut m0 = [0.0f64; 256];
    let (mut a, mut b) = (0.0f64, 0.0f64);
    for v in 0..256 {
        a += hf[v];
        b += hf[v] * v as f64;
        w0[v] = a;
        m0[v] = b;
    }
    let mt = m0[255];
    let mut best = 0usize;
    let mut best_val = f64::NEG_INFINITY;
    for v in 0..256 {
        let w1 = total - w0[v];
        let d = mt * w0[v] / total - m0[v];
        let mut between = d * d / (w0[v] * w1);
        if !between.is_finite() {
            between = -1.0;
        }
        if between > best_val {
            best_val = between;
            best = v;
        }
    }
    best as u8
}

/// Builds the worker tables of `method` from the whole image's histogram (`prepare`).
/// Also returns the class model used (for reports), if the method has one.
pub fn luts(
    h: &[u64; 256],
    method: Method,
    t_split: f64,
    em: bool,
    beta: f64,
    doc_p_threshold: f64,
) -> (Luts, Option<Classes>) {
    if method == Method::Otsu {
        let t = otsu_threshold(h) as usize;
        let mut f = [0i32; 256];
        for (v, x) in f.iter_mut().enumerate() {
            *x = if v > t { 1 } else { -1 };
        }
        let luts = Luts {
            f,
            q16: [0; 256],
            gauge: None,
            b: 0,
        };
        return (luts, None);
    }
    let c0 = doc_split(h, t_split);
    let c = if em { em_refine(h, c0) } else { c0 };
    if method == Method::DocLiteral {
        let px = doc_sum(&c, h);
        let mut q16 = [0u32; 256];
        let mut gauge = [0i8; 256];
        for v in 0..256 {
            q16[v] = np_round(px[v] * P16) as u32;
            gauge[v] = if px[v] < doc_p_threshold { -1 } else { 1 };
        }
        let luts = Luts {
            f: [0; 256],
            q16,
            gauge: Some(gauge),
            b: 1,
        };
        return (luts, Some(c));
    }
    let l = llr(&c, true);
    let mut f = [0i32; 256];
    let mut q16 = [0u32; 256];
    for v in 0..256 {
        f[v] = np_round((l[v] / 2.0).clamp(-HMAX, HMAX) * Q) as i32;
        let post = 1.0 / (1.0 + (-(l[v].clamp(-700.0, 700.0))).exp());
        q16[v] = np_round(post * P16) as u32;
    }
    let luts = Luts {
        f,
        q16,
        gauge: None,
        b: np_round(beta * Q) as i32,
    };
    (luts, Some(c))
}

/// The annealing temperatures, one per sweep (`temperature_schedule`).
pub fn temperatures(schedule: Schedule, t0: f64, alpha: f64, sweeps: u32) -> Vec<f64> {
    match schedule {
        Schedule::Geom => (0..sweeps).map(|k| t0 * alpha.powf(k as f64)).collect(),
        Schedule::Log => (1..=sweeps).map(|k| t0 / (1.0 + k as f64).ln()).collect(),
    }
}

/// One Metropolis acceptance table: `min(2^32 − 1, ⌊exp(−d·unit/T)·2^32⌋)` for
/// d = 0..=dmax (`accept_table`), with trailing zeros cut off: an entry past the end of
/// a table is 0, so a worker treats `d >= len` as "never accept".
///
/// The table stops at its first zero: consecutive arguments differ by unit/T ≥ 10⁻⁸
/// (T ≤ 1.5·10⁶ is enforced by `ChangeParams::check`), so the exact exp falls by a factor
/// of at least 1 − 10⁻⁸ per entry, millions of ulps, while libm errs by under one ulp: the
/// computed values fall too, and after a zero every later entry is zero. For x ≥ 0,
/// `floor(x)` is the truncating cast.
pub fn accept_table(t: f64, unit: f64, dmax: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for d in 0..=dmax {
        let e = (-(d as f64) * unit / t).exp();
        let v = ((e * 4294967296.0) as u64).min(4294967295) as u32;
        if v == 0 {
            break;
        }
        out.push(v);
    }
    out
}

/// The largest |dE| a table must cover: 2·(max|F| + B·neighbours).
pub fn dmax(f: &[i32; 256], b: i32, radius: u32) -> u32 {
    let fmax = f.iter().map(|x| x.unsigned_abs()).max().unwrap_or(0);
    let nn = (2 * radius + 1) * (2 * radius + 1) - 1;
    2 * (fmax + b.unsigned_abs() * nn)
}
