//! The worker engine: integer-only labelling of one row band of the difference image.
//!
//! Input: the band's X rows (its own rows plus halo), its global position, and the job's
//! integer tables ([`Program`]). Steps, exactly as the reference's `detect_band`:
//! initial spins (window majority of `q16`, or the sign of `F`), then the sweeps, each
//! made of colour phases (a, b) with global row class a and column class b, in which every
//! pixel takes one Metropolis step (annealing sweeps) or one ICM step (T = 0). Pixels of a
//! phase never neighbour each other, so the order inside a phase is free: rows of a phase
//! run on rayon threads and columns are vectorised, without changing a bit.
//!
//! Layout: spins are stored *de-interleaved by column class*: row `y`, class `c` holds the
//! pixels `x = j·m + c` contiguously, with one zero guard cell on each side and `r` zero
//! guard rows above and below the band (outside the band or the image a spin counts 0).
//! A phase then reads and writes contiguous slices, which the compiler vectorises. The
//! hot loop ([`super::sweep`]) is compiled for AVX-512 and AVX2 too and chosen at run time.

use rayon::prelude::*;

use super::rng::Rng;
use super::sweep::{self, RowJob};

/// How the spins start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Init {
    /// s = +1 iff F[X] > 0 (icm, bayes, otsu).
    Sign,
    /// s = +1 iff the mean of q16 over the (2r+1)² window, clipped at the band and image
    /// edges, is above one half (sa, doc_literal).
    Window(usize),
}

/// Everything a band needs that is the same for the whole job (validated by the caller).
pub struct Program<'a> {
    /// Data term per grey level, |F| ≤ 1024.
    pub f: &'a [i32; 256],
    /// Window probability per grey level, ≤ 65535.
    pub q16: &'a [u32; 256],
    /// doc_literal's gauge p = ±1 per grey level: the engine runs on τ = p·s.
    pub gauge: Option<&'a [i8; 256]>,
    /// Coupling per neighbour.
    pub b: i32,
    /// Neighbourhood radius r (1 → 3×3, 2 → 5×5).
    pub radius: usize,
    pub init: Init,
    /// One acceptance table per annealing sweep (entries past the end are 0).
    pub thresholds: &'a [Vec<u32>],
    /// ICM sweeps after the annealing.
    pub icm_sweeps: u32,
    pub seed: u64,
}

/// One band of the image.
pub struct Band<'a> {
    /// X values of the band's rows, row-major, `rows × width`.
    pub x: &'a [u8],
    pub width: usize,
    pub rows: usize,
    /// Global row of the band's first row (colour classes and RNG use global rows).
    pub y0: usize,
    /// Height of the whole image (the RNG counter spans the whole image).
    pub height: usize,
}

/// The spins of a band, de-interleaved (see the module header).
pub struct Spins {
    /// Period of the colour classes, r + 1.
    m: usize,
    r: usize,
    width: usize,
    /// Length of one class row including its two guard cells.
    pw: usize,
    /// Spins, `(rows + 2r) × m × pw`.
    s: Vec<i8>,
}

impl Spins {
    fn new(width: usize, rows: usize, r: usize) -> Spins {
        let m = r + 1;
        let pw = width.div_ceil(m) + 2;
        Spins {
            m,
            r,
            width,
            pw,
            s: vec![0; (rows + 2 * r) * m * pw],
        }
    }

    /// Index of pixel (local row `ly`, column `x`).
    #[inline]
    fn at(&self, ly: usize, x: usize) -> usize {
        ((ly + self.r) * self.m + x % self.m) * self.pw + 1 + x / self.m
    }

    /// Number of pixels of column class `c` in a row.
    fn count(&self, c: usize) -> usize {
        (self.width + self.m - 1 - c) / self.m
    }

    /// The spins of class `c` in local row `ly` (guard cells excluded).
    fn class_row(&self, ly: usize, c: usize) -> &[i8] {
        let start = ((ly + self.r) * self.m + c) * self.pw + 1;
        &self.s[start..start + self.count(c)]
    }

    /// Mutable [`Spins::class_row`].
    fn class_row_mut(&mut self, ly: usize, c: usize) -> &mut [i8] {
        let start = ((ly + self.r) * self.m + c) * self.pw + 1;
        let n = self.count(c);
        &mut self.s[start..start + n]
    }

    /// The mask bytes (255 = changed) of local rows `lo..hi`, row-major.
    pub fn mask_rows(&self, lo: usize, hi: usize) -> Vec<u8> {
        let w = self.width;
        let mut out = vec![0u8; (hi - lo) * w];
        for (ly, row) in (lo..hi).zip(out.chunks_exact_mut(w.max(1))) {
            for c in 0..self.m.min(w) {
                for (d, &s) in row[c..]
                    .iter_mut()
                    .step_by(self.m)
                    .zip(self.class_row(ly, c))
                {
                    *d = if s > 0 { 255 } else { 0 };
                }
            }
        }
        out
    }
}

/// Labels a band: returns its spins (all rows, halo included).
pub fn solve(band: &Band, prog: &Program) -> Spins {
    let (w, rows, r) = (band.width, band.rows, prog.radius);
    let mut sp = Spins::new(w, rows, r);
    let m = sp.m;
    initialise(&mut sp, band, prog);
    // Data term, de-interleaved like the spins (no guard cells).
    let cw = w.div_ceil(m);
    let mut fd = vec![0i16; rows * m * cw];
    for ly in 0..rows {
        let xrow = &band.x[ly * w..(ly + 1) * w];
        for c in 0..m.min(w) {
            let dst = &mut fd[(ly * m + c) * cw..(ly * m + c + 1) * cw];
            for (d, &v) in dst.iter_mut().zip(xrow[c..].iter().step_by(m)) {
                *d = prog.f[v as usize] as i16;
            }
        }
    }
    let rng = Rng::new(prog.seed);
    let npix = (band.height as u64).wrapping_mul(w as u64);
    let anneal = prog.thresholds.len();
    let total = anneal + prog.icm_sweeps as usize;
    let engine = sweep::Engine::detect();
    let mut scratch = vec![0i8; rows.div_ceil(m) * cw];
    for k in 0..total {
        let thr = prog.thresholds.get(k).map(|t| t.as_slice());
        for a in 0..m {
            let ly0 = (a + m - band.y0 % m) % m;
            if ly0 >= rows {
                continue;
            }
            let lys: Vec<usize> = (ly0..rows).step_by(m).collect();
            // A few tasks per thread: a phase is only tens of microseconds of work.
            let min_len = lys.len().div_ceil(2 * rayon::current_num_threads()).max(4);
            for b in 0..m.min(w) {
                let cnt = sp.count(b);
                let out = &mut scratch[..lys.len() * cw];
                let spins = &sp;
                out.par_chunks_mut(cw)
                    .zip(lys.par_iter())
                    .with_min_len(min_len)
                    .for_each(|(dst, &ly)| {
                        let job = RowJob {
                            s: &spins.s,
                            m,
                            r,
                            pw: spins.pw,
                            ly,
                            b,
                            cnt,
                            f: &fd[(ly * m + b) * cw..][..cnt],
                            coupling: prog.b,
                            thr,
                            rng: &rng,
                            counter0: Rng::counter(k as u64, npix, ((band.y0 + ly) * w + b) as u64),
                            stride: m as u64,
                        };
                        engine.row(&job, &mut dst[..cnt]);
                    });
                for (i, &ly) in lys.iter().enumerate() {
                    let start = sp.at(ly, b);
                    sp.s[start..start + cnt].copy_from_slice(&out[i * cw..i * cw + cnt]);
                }
            }
        }
    }
    if let Some(g) = prog.gauge {
        apply_gauge(&mut sp, band, g);
    }
    sp
}

/// Initial spins, then τ = p·s for doc_literal.
fn initialise(sp: &mut Spins, band: &Band, prog: &Program) {
    let (w, rows) = (band.width, band.rows);
    match prog.init {
        Init::Sign => {
            for ly in 0..rows {
                let xrow = &band.x[ly * w..(ly + 1) * w];
                for c in 0..sp.m.min(w) {
                    let m = sp.m;
                    let dst = sp.class_row_mut(ly, c);
                    for (d, &v) in dst.iter_mut().zip(xrow[c..].iter().step_by(m)) {
                        *d = if prog.f[v as usize] > 0 { 1 } else { -1 };
                    }
                }
            }
        }
        Init::Window(rw) => {
            // Vertical window sums (clipped at the band), then horizontal (clipped at
            // the image); the count of window pixels is the product of the two spans.
            // q16 ≤ 65535 and at most 17² terms: u32 sums cannot overflow.
            let q: Vec<u32> = band.x.iter().map(|&v| prog.q16[v as usize]).collect();
            let mut col = vec![0u32; w];
            let mut row = vec![0i8; w];
            for ly in 0..rows {
                let lo = ly.saturating_sub(rw);
                let hi = (ly + rw + 1).min(rows);
                col.fill(0);
                for yy in lo..hi {
                    for (c, &v) in col.iter_mut().zip(&q[yy * w..(yy + 1) * w]) {
                        *c += v;
                    }
                }
                let vcnt = (hi - lo) as u64;
                for (x, out) in row.iter_mut().enumerate() {
                    let xlo = x.saturating_sub(rw);
                    let xhi = (x + rw + 1).min(w);
                    let sum: u64 = col[xlo..xhi].iter().map(|&v| v as u64).sum();
                    let cnt = vcnt * (xhi - xlo) as u64;
                    *out = if 2 * sum > cnt * 65535 { 1 } else { -1 };
                }
                let m = sp.m;
                for c in 0..m.min(w) {
                    let dst = sp.class_row_mut(ly, c);
                    for (d, &v) in dst.iter_mut().zip(row[c..].iter().step_by(m)) {
                        *d = v;
                    }
                }
            }
        }
    }
    if let Some(g) = prog.gauge {
        apply_gauge(sp, band, g);
    }
}

/// Multiplies every spin by the gauge sign of its grey level (an involution).
fn apply_gauge(sp: &mut Spins, band: &Band, g: &[i8; 256]) {
    let w = band.width;
    for ly in 0..band.rows {
        let xrow = &band.x[ly * w..(ly + 1) * w];
        for c in 0..sp.m.min(w) {
            let m = sp.m;
            let dst = sp.class_row_mut(ly, c);
            for (d, &v) in dst.iter_mut().zip(xrow[c..].iter().step_by(m)) {
                *d *= g[v as usize];
            }
        }
    }
}
