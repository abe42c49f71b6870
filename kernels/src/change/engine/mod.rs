//! The worker engine: integer-only labelling of one row band of the difference image.
//!
//! Input: the band's X rows (its own rows plus halo), its global position, and the job's
//! integer tables ([`Program`]). Steps, exactly as the reference's `detect_band`:
//! initial spins (window majority of `q16`, or the sign of `F`), then the sweeps, each
//! made of colour phases (a, b) with global row class a and column class b, in which every
//! pixel takes one Metropolis step (annealing sweeps) or one ICM step (T = 0). Pixels of a
//! phase never neighbour each other, so the order inside a phase is free: rows of a phase
//! run on rayon threads and columns are vectorised, without changing a bit. On one thread
//! the phases instead sweep down the band a group at a time, each a few rows behind the
//! one before (`Sweeps::run_wavefront`), which keeps the rows in work in the cache.
//! Either way a phase updates only the rows the band's own rows still depend on
//! (`Sweeps::cone`): the halo is the reach of the first sweeps, the last ones need only
//! the own rows and a few around them. Between phases (and, on one thread, between the
//! rows of a wavefront) the engine checks its [`Cancel`] flag, so a band handed back
//! stops within one phase's work instead of computing to the end.
//!
//! Layout: spins are stored *de-interleaved by column class*: row `y`, class `c` holds the
//! pixels `x = j·m + c` contiguously, with one zero guard cell on each side and `r` zero
//! guard rows above and below the band (outside the band or the image a spin counts 0).
//! A phase then reads and writes contiguous slices, which the compiler vectorises. The
//! hot loop ([`super::sweep`]) is compiled for AVX-512 and AVX2 too and chosen at run time.

use std::ops::Range;

use rayon::prelude::*;

use super::rng::Rng;
use super::sweep::{self, RowJob};
use crate::{Cancel, Cancelled, Spread};

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

/// In which order a band's pixel updates run. Both give the same bits: the pixels of a
/// phase never neighbour each other, and each draw is keyed by its pixel and sweep.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Order {
    /// Each phase over the whole band before the next, the rows of a phase on the rayon
    /// threads: for a band that has several threads to itself.
    PhaseByPhase,
    /// On the calling thread, a group of phases swept down the band together (see
    /// [`Sweeps::run_wavefront`]): the rows in work stay in the core's cache instead of
    /// the whole band streaming through it once per phase. On one core of the
    /// development machine (2 MiB L2): 4–7 % faster for the 256-row bands of a
    /// 6144-wide image (7 MB of spins and data term each), 35–40 % for a whole-image
    /// band.
    Wavefront,
}

impl Order {
    /// Wavefront when the band runs on one thread: its caller says so (other bands keep
    /// the pool's other threads busy) or the pool has one thread (a `--cores 1` peer).
    /// Else phase by phase, spreading the band over the pool: a band alone on several
    /// cores finishes sooner that way.
    fn for_band(spread: Spread) -> Order {
        if spread == Spread::OneThread || rayon::current_num_threads() == 1 {
            Order::Wavefront
        } else {
            Order::PhaseByPhase
        }
    }
}

/// Labels a band: returns its spins. The rows `own` (local) come out as over the whole
/// band; the halo rows are updated only as far as `own` depends on them, so they hold
/// no meaningful labels at the end. `Err(Cancelled)` once `cancel` is set.
pub fn solve(
    band: &Band,
    prog: &Program,
    spread: Spread,
    own: Range<usize>,
    cancel: &Cancel,
) -> Result<Spins, Cancelled> {
    let order = Order::for_band(spread);
    solve_grouped(
        band,
        prog,
        order,
        wavefront_group(band.width, prog.radius),
        own,
        cancel,
    )
}

/// [`solve`] in `order`, with `group` phases per wavefront group.
fn solve_grouped(
    band: &Band,
    prog: &Program,
    order: Order,
    group: usize,
    own: Range<usize>,
    cancel: &Cancel,
) -> Result<Spins, Cancelled> {
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
    let phases: Vec<Phase> = (0..total)
        .flat_map(|k| (0..m).flat_map(move |a| (0..m.min(w)).map(move |b| Phase { k, a, b })))
        .collect();
    let ctx = Sweeps {
        band,
        prog,
        fd: &fd,
        cw,
        rng: &rng,
        npix,
        engine,
    };
    let cone = ctx.cone(m, r, &phases, own);
    match order {
        Order::Wavefront => ctx.run_wavefront(&mut sp, &phases, &cone, group, cancel)?,
        Order::PhaseByPhase => ctx.run_phase_by_phase(&mut sp, &phases, &cone, cancel)?,
    }
    if let Some(g) = prog.gauge {
        apply_gauge(&mut sp, band, g);
    }
    Ok(sp)
}

/// One colour phase: sweep `k`, global row class `a`, column class `b`.
#[derive(Clone, Copy)]
struct Phase {
    k: usize,
    a: usize,
    b: usize,
}

/// What every phase of a band reads.
struct Sweeps<'a> {
    band: &'a Band<'a>,
    prog: &'a Program<'a>,
    fd: &'a [i16],
    cw: usize,
    rng: &'a Rng,
    npix: u64,
    engine: sweep::Engine,
}

impl Sweeps<'_> {
    fn job<'s>(&'s self, sp: &'s Spins, ph: Phase, ly: usize) -> RowJob<'s> {
        let (m, w) = (sp.m, self.band.width);
        let cnt = sp.count(ph.b);
        RowJob {
            s: &sp.s,
            m,
            r: sp.r,
            pw: sp.pw,
            ly,
            b: ph.b,
            cnt,
            f: &self.fd[(ly * m + ph.b) * self.cw..][..cnt],
            coupling: self.prog.b,
            thr: self.prog.thresholds.get(ph.k).map(|t| t.as_slice()),
            rng: self.rng,
            counter0: Rng::counter(
                ph.k as u64,
                self.npix,
                ((self.band.y0 + ly) * w + ph.b) as u64,
            ),
            stride: m as u64,
        }
    }

    /// Local row of the first row of class `a`.
    fn first_row(&self, m: usize, a: usize) -> usize {
        (a + m - self.band.y0 % m) % m
    }

    /// The rows each phase updates: those of its class inside the rows whose values
    /// still matter to `own` once it is done. Walking the phases backwards from the
    /// last, that set starts as `own` and grows by `r` rows beyond the first and last
    /// row a phase updates (the rows it reads). A row outside it at some phase is never
    /// read, then or later, by anything that reaches `own`, so skipping its update
    /// changes no bit of `own`: about half the halo's work (the halo is the cone's
    /// full reach, needed only at the first sweeps).
    fn cone(&self, m: usize, r: usize, phases: &[Phase], own: Range<usize>) -> Vec<Range<usize>> {
        let rows = self.band.rows;
        let (mut lo, mut hi) = (own.start.min(rows), own.end.min(rows));
        let mut update = vec![0..0; phases.len()];
        for (i, ph) in phases.iter().enumerate().rev() {
            update[i] = lo..hi;
            // The first and last row of the phase's class in lo..hi.
            let first = self.first_row(m, ph.a);
            let start = if lo <= first {
                first
            } else {
                first + (lo - first).div_ceil(m) * m
            };
            if start < hi {
                let last = start + (hi - 1 - start) / m * m;
                lo = lo.min(start.saturating_sub(r));
                hi = hi.max((last + r + 1).min(rows));
            }
        }
        update
    }

    /// Each phase over the whole band before the next, rows on rayon threads.
    fn run_phase_by_phase(
        &self,
        sp: &mut Spins,
        phases: &[Phase],
        cone: &[Range<usize>],
        cancel: &Cancel,
    ) -> Result<(), Cancelled> {
        let (m, rows, cw) = (sp.m, self.band.rows, self.cw);
        let mut scratch = vec![0i8; rows.div_ceil(m) * cw];
        for (&ph, update) in phases.iter().zip(cone) {
            cancel.check()?;
            let ly0 = self.first_row(m, ph.a);
            let lys: Vec<usize> = (ly0..rows)
                .step_by(m)
                .filter(|ly| update.contains(ly))
                .collect();
            if lys.is_empty() {
                continue;
            }
            // A few tasks per thread: a phase is only tens of microseconds of work.
            let min_len = lys.len().div_ceil(2 * rayon::current_num_threads()).max(4);
            let cnt = sp.count(ph.b);
            let out = &mut scratch[..lys.len() * cw];
            let spins = &*sp;
            out.par_chunks_mut(cw)
                .zip(lys.par_iter())
                .with_min_len(min_len)
                .for_each(|(dst, &ly)| {
                    self.engine.row(&self.job(spins, ph, ly), &mut dst[..cnt]);
                });
            for (i, &ly) in lys.iter().enumerate() {
                let start = sp.at(ly, ph.b);
                sp.s[start..start + cnt].copy_from_slice(&out[i * cw..i * cw + cnt]);
            }
        }
        Ok(())
    }

    /// The same updates on one thread, `group` phases at a time swept down the band
    /// together: at each step, phase g of the group updates the row `r` rows above the
    /// one phase g − 1 has just updated. When phase g updates row y it reads rows
    /// y − r ..= y + r: phase g − 1 has passed row y + r and will not come back (so they
    /// hold what phase g − 1 left, as phase by phase), and phase g + 1 has updated rows
    /// up to y − r − 1 only, reading nothing beyond row y − 1 (so it has not seen row y
    /// before phase g changes it). The rows in flight, about `group · r`, stay in the
    /// core's cache instead of the whole band streaming through it once per phase.
    fn run_wavefront(
        &self,
        sp: &mut Spins,
        phases: &[Phase],
        cone: &[Range<usize>],
        group: usize,
        cancel: &Cancel,
    ) -> Result<(), Cancelled> {
        let (m, r, rows) = (sp.m, sp.r, self.band.rows);
        let lag = r;
        let group = group.max(1);
        let mut row_out = vec![0i8; self.cw];
        for (chunk, updates) in phases.chunks(group).zip(cone.chunks(group)) {
            let steps = rows + (chunk.len() - 1) * lag;
            for step in 0..steps {
                // A group can span the whole annealing on a narrow image: checked per
                // step (one relaxed load a row) so a stop is never a long wait.
                cancel.check()?;
                for (g, (&ph, update)) in chunk.iter().zip(updates).enumerate() {
                    let Some(ly) = step.checked_sub(g * lag) else {
                        break;
                    };
                    if !update.contains(&ly) || ly % m != self.first_row(m, ph.a) {
                        continue;
                    }
                    let cnt = sp.count(ph.b);
                    self.engine.row(&self.job(sp, ph, ly), &mut row_out[..cnt]);
                    let start = sp.at(ly, ph.b);
                    sp.s[start..start + cnt].copy_from_slice(&row_out[..cnt]);
                }
            }
        }
        Ok(())
    }
}

/// Bytes of rows a wavefront group keeps in flight: well inside the L2 cache of one core
/// of any x86-64 or ARM server of the last years (1–2 MiB), with room for the rest.
/// Budgets of 256 KiB to 3 MiB measured the same within the noise on the development
/// machine (2 MiB L2); the whole band phase by phase (7 MB here) is what costs.
const WAVEFRONT_BYTES: usize = 768 * 1024;

/// Phases swept together by [`Sweeps::run_wavefront`]: as many as keep the rows in
/// flight (`group · r` plus the `2r` rows read around them; spins and data term, about
/// 3 bytes a pixel) within [`WAVEFRONT_BYTES`].
fn wavefront_group(width: usize, r: usize) -> usize {
    let rows_in_flight = WAVEFRONT_BYTES / (3 * width.max(1));
    (rows_in_flight.saturating_sub(2 * r) / r.max(1)).max(1)
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

#[cfg(test)]
mod tests;
