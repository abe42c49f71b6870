//! The hot loop of the engine: one row of one colour phase.
//!
//! For each pixel of the row's class-b slice: the neighbour sum `n` (guard cells count 0),
//! `dE = 2·s·(F + B·n)`, and the decision — ICM flips iff dE < 0; Metropolis flips iff
//! dE ≤ 0 or `u < thr[dE]`, with `u` the pixel's counter-based draw. The draw costs two
//! 64-bit multiplies, so it is made only where it can matter: when the table entry is
//! neither absent nor zero. Pixels are taken in blocks of [`BLK`] so the neighbour sums and
//! energies stay in registers/L1 and the block loops vectorise.
//!
//! The same generic body is compiled three times (baseline x86-64 / other targets, AVX2,
//! AVX-512) and the best one the CPU supports is chosen once per band at run time, so the
//! binary stays portable. All three compute the same integers: the choice changes speed,
//! never a bit.

use super::rng::{Rng, GAMMA};

/// Pixels per block of the row loop.
const BLK: usize = 128;

/// One row of one phase: what to read and where its counter starts.
pub struct RowJob<'a> {
    /// All spins of the band (see `engine::Spins`).
    pub s: &'a [i8],
    pub m: usize,
    pub r: usize,
    /// Length of one class row including guard cells.
    pub pw: usize,
    /// Local row.
    pub ly: usize,
    /// Column class being updated.
    pub b: usize,
    /// Pixels of class b in the row.
    pub cnt: usize,
    /// Data term of those pixels.
    pub f: &'a [i16],
    /// Coupling B.
    pub coupling: i32,
    /// Acceptance table of this sweep, or None for an ICM sweep.
    pub thr: Option<&'a [u32]>,
    pub rng: &'a Rng,
    /// RNG counter of the row's first class-b pixel; pixel j adds `j·stride`.
    pub counter0: u64,
    pub stride: u64,
}

/// Which compiled variant of the row loop runs.
#[derive(Clone, Copy, Debug)]
pub enum Engine {
    Portable,
    #[cfg(target_arch = "x86_64")]
    Avx2,
    #[cfg(target_arch = "x86_64")]
    Avx512,
}

impl Engine {
    /// The fastest variant this CPU supports.
    pub fn detect() -> Engine {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f")
                && std::arch::is_x86_feature_detected!("avx512bw")
                && std::arch::is_x86_feature_detected!("avx512dq")
                && std::arch::is_x86_feature_detected!("avx512vl")
            {
                return Engine::Avx512;
            }
            if std::arch::is_x86_feature_detected!("avx2") {
                return Engine::Avx2;
            }
        }
        Engine::Portable
    }

    /// Computes the new spins of the row's class-b pixels into `out` (length `cnt`).
    pub fn row(self, job: &RowJob, out: &mut [i8]) {
        match self {
            Engine::Portable => row_generic(job, out),
            // SAFETY: the variant was chosen by `detect` only if the CPU has the features
            // the function is compiled for.
            #[cfg(target_arch = "x86_64")]
            Engine::Avx2 => unsafe { row_avx2(job, out) },
            #[cfg(target_arch = "x86_64")]
            Engine::Avx512 => unsafe { row_avx512(job, out) },
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,bmi1,bmi2,fma,popcnt")]
unsafe fn row_avx2(job: &RowJob, out: &mut [i8]) {
    row_generic(job, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,bmi1,bmi2,fma,popcnt")]
unsafe fn row_avx512(job: &RowJob, out: &mut [i8]) {
    row_generic(job, out)
}

#[inline(always)]
fn row_generic(job: &RowJob, out: &mut [i8]) {
    let (m, r, pw) = (job.m, job.r, job.pw);
    let self_base = ((job.ly + r) * m + job.b) * pw + 1;
    let mut j0 = 0;
    while j0 < job.cnt {
        let len = BLK.min(job.cnt - j0);
        let mut n = [0i8; BLK];
        let n = &mut n[..len];
        for prow in job.ly..=job.ly + 2 * r {
            for dx in 0..=2 * r {
                // Column class and guard-cell offset of neighbour column x + dx − r.
                let c = job.b + m + dx - r;
                let (pl, off) = (c % m, c / m);
                let start = (prow * m + pl) * pw + off + j0;
                let src = &job.s[start..start + len];
                for (a, &v) in n.iter_mut().zip(src) {
                    *a += v;
                }
            }
        }
        let own = &job.s[self_base + j0..self_base + j0 + len];
        let f = &job.f[j0..j0 + len];
        // |dE| ≤ 2·(1024 + 256·24) = 14336: i16 lanes (twice as many per vector) are
        // exact because the worker refused any table with |F| > 1024 or B > 256.
        let mut de = [0i16; BLK];
        let de = &mut de[..len];
        let coupling = job.coupling as i16;
        for i in 0..len {
            let s = own[i] as i16;
            let nb = (n[i] as i16) - s;
            de[i] = 2 * s * (f[i] + coupling * nb);
        }
        let dst = &mut out[j0..j0 + len];
        match job.thr {
            None => {
                for i in 0..len {
                    let s = own[i];
                    dst[i] = if de[i] < 0 { -s } else { s };
                }
            }
            Some(thr) => {
                let c0 = job
                    .counter0
                    .wrapping_add((j0 as u64).wrapping_mul(job.stride));
                let z0 = job.rng.state(c0);
                let zstep = GAMMA.wrapping_mul(job.stride);
                // Pixels whose decision needs a draw (dE > 0 inside the table).
                let tlen = thr.len().min(i16::MAX as usize) as i16;
                let mut need = 0usize;
                for &d in de.iter() {
                    need += (d > 0 && d < tlen) as usize;
                }
                if need == 0 {
                    // No pixel of the block can be accepted uphill: flip iff dE ≤ 0.
                    for i in 0..len {
                        let s = own[i];
                        dst[i] = if de[i] <= 0 { -s } else { s };
                    }
                } else if need * 4 >= len {
                    // Most pixels need a draw: draw for all, branch-free (vectorises).
                    let last = thr.len().saturating_sub(1);
                    let mut z = z0;
                    for i in 0..len {
                        let s = own[i];
                        let d = de[i];
                        let idx = (d.max(0) as usize).min(last);
                        let t = if d < tlen {
                            thr.get(idx).copied().unwrap_or(0)
                        } else {
                            0
                        };
                        let u = Rng::output(z);
                        z = z.wrapping_add(zstep);
                        let flip = (d <= 0) | (u < t);
                        dst[i] = if flip { -s } else { s };
                    }
                } else {
                    for i in 0..len {
                        let s = own[i];
                        let d = de[i];
                        let flip = if d <= 0 {
                            true
                        } else {
                            match thr.get(d as usize) {
                                Some(&t) if t != 0 => {
                                    let z = z0.wrapping_add((i as u64).wrapping_mul(zstep));
                                    Rng::output(z) < t
                                }
                                _ => false,
                            }
                        };
                        dst[i] = if flip { -s } else { s };
                    }
                }
            }
        }
        j0 += len;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::change::rng::mix64;

    /// Every variant this CPU can run, the portable one first.
    fn variants() -> Vec<Engine> {
        #[allow(unused_mut)]
        let mut v = vec![Engine::Portable];
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx2") {
                v.push(Engine::Avx2);
            }
            if matches!(Engine::detect(), Engine::Avx512) {
                v.push(Engine::Avx512);
            }
        }
        v
    }

    /// Random rows through every variant, every decision path (ICM, no candidate, few,
    /// many), both radii: the same bits.
    #[test]
    fn all_variants_compute_the_same_rows() {
        let rng = Rng::new(99);
        for r in 1..=2usize {
            let m = r + 1;
            let cnt = 301;
            let pw = cnt + 2;
            let rows = 2 * r + 1;
            let mut s = vec![0i8; rows * m * pw];
            for (i, v) in s.iter_mut().enumerate() {
                let j = i % pw;
                if j >= 1 && j <= cnt {
                    *v = if mix64(i as u64 ^ 0x55) & 1 == 0 {
                        1
                    } else {
                        -1
                    };
                }
            }
            let f: Vec<i16> = (0..cnt)
                .map(|j| (mix64(j as u64) % 2049) as i16 - 1024)
                .collect();
            let tables: Vec<Vec<u32>> = [0usize, 3, 200, 14337]
                .iter()
                .map(|&n| (0..n).map(|d| u32::MAX >> (d % 31)).collect())
                .collect();
            let mut thrs: Vec<Option<&[u32]>> = vec![None];
            thrs.extend(tables.iter().map(|t| Some(t.as_slice())));
            for thr in thrs {
                let job = RowJob {
                    s: &s,
                    m,
                    r,
                    pw,
                    ly: 0,
                    b: 1,
                    cnt,
                    f: &f,
                    coupling: 256,
                    thr,
                    rng: &rng,
                    counter0: 12345,
                    stride: m as u64,
                };
                let mut want = vec![0i8; cnt];
                Engine::Portable.row(&job, &mut want);
                assert!(want.iter().all(|&v| v == 1 || v == -1));
                for e in variants() {
                    let mut got = vec![0i8; cnt];
                    e.row(&job, &mut got);
                    assert_eq!(got, want, "{e:?}, r = {r}");
                }
            }
        }
    }
}
