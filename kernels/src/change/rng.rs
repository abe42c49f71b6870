//! The counter-based random numbers of the annealing: one u32 per (seed, sweep, global
//! pixel index), so a pixel's draw is the same whichever peer, band or thread computes it.
//!
//! `u = mix64(mix64(seed) + γ·n) >> 32` with `n = k·H·W + y·W + x + 1` (wrapping u64):
//! the n-th output of SplitMix64 started from `mix64(seed)`.

/// SplitMix64's increment γ.
pub const GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;
const M1: u64 = 0xBF58_476D_1CE4_E5B9;
const M2: u64 = 0x94D0_49BB_1331_11EB;

/// The SplitMix64 finaliser.
#[inline(always)]
pub fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(M1);
    z = (z ^ (z >> 27)).wrapping_mul(M2);
    z ^ (z >> 31)
}

/// The generator of one job: its seed, mixed once.
#[derive(Clone, Copy, Debug)]
pub struct Rng {
    base: u64,
}

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng { base: mix64(seed) }
    }

    /// The counter of pixel `idx` (= y·W + x) in sweep `k` of an image of `npix` pixels.
    #[inline(always)]
    pub fn counter(k: u64, npix: u64, idx: u64) -> u64 {
        k.wrapping_mul(npix).wrapping_add(idx).wrapping_add(1)
    }

    /// The u32 drawn for counter `n`.
    #[inline(always)]
    pub fn draw(&self, n: u64) -> u32 {
        Rng::output(self.state(n))
    }

    /// The generator state before the output of counter `n`: consecutive counters differ
    /// by γ, so a row's states are an arithmetic sequence (which vectorises).
    #[inline(always)]
    pub fn state(&self, n: u64) -> u64 {
        self.base.wrapping_add(GAMMA.wrapping_mul(n))
    }

    /// The u32 output of a generator state.
    #[inline(always)]
    pub fn output(z: u64) -> u32 {
        (mix64(z) >> 32) as u32
    }

    /// The u32 of pixel `idx` in sweep `k`.
    pub fn at(&self, k: u64, npix: u64, idx: u64) -> u32 {
        self.draw(Rng::counter(k, npix, idx))
    }
}
