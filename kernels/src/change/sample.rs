//! A generated before/after pair for the demo and the benchmark, and the calibration
//! chunk that times a peer on this kernel.
//!
//! The scene is built from integer hashes and plain IEEE arithmetic only (no `sin`,
//! `exp`, no library float functions), so the same call gives the same bytes on every
//! machine. Land parcels (Voronoi cells) are textured fields, bare soil, urban blocks,
//! striped crops or water, crossed by roads. Between the two dates some parcels change
//! cover, new buildings appear with their shadow and a patch is cleared: these are the
//! ground truth. The after image also gets what is not a change: a per-channel gain and
//! offset, a smooth illumination gradient, sensor noise.

use std::sync::OnceLock;

use idlegrid_protocol::{Cid, TaskSpec};
use image::RgbImage;

use super::rng::mix64;
use super::{plan, prep, ChangeParams, ChangePlan, KERNEL, VERSION};
use crate::KernelError;

/// The plan of `params` over the generated `side`² pair of `seed`: the change job the
/// benchmarks and the tests run.
pub fn sample_plan(side: u32, seed: u64, params: &ChangeParams) -> Result<ChangePlan, KernelError> {
    let pair = sample_pair(side, side, seed);
    let diff = prep::difference_of(
        &image::DynamicImage::ImageRgb8(pair.before),
        &image::DynamicImage::ImageRgb8(pair.after),
    );
    plan::plan(&diff, params)
}

/// A generated pair with its ground truth.
#[derive(Clone, Debug)]
pub struct SamplePair {
    pub before: RgbImage,
    pub after: RgbImage,
    /// 255 where the scene really changed, row-major.
    pub truth: Vec<u8>,
}

/// Cover types and their RGB tint (0..=255 scale at full texture).
const COVERS: [[f64; 3]; 5] = [
    [0.55, 0.80, 0.35], // field
    [0.85, 0.70, 0.50], // soil
    [0.80, 0.78, 0.78], // urban
    [0.70, 0.85, 0.30], // crop (striped)
    [0.20, 0.30, 0.45], // water
];

/// A hash of (seed, a, b) as a float in [0, 1).
fn unit(seed: u64, a: u64, b: u64) -> f64 {
    let h = mix64(seed ^ mix64(a.wrapping_mul(0x9E37_79B9) ^ mix64(b.wrapping_add(0x51))));
    (h >> 11) as f64 / (1u64 << 53) as f64
}

/// Smooth value noise at (x, y) with lattice `cell`, in [0, 1).
fn value_noise(seed: u64, x: f64, y: f64, cell: f64) -> f64 {
    let (gx, gy) = (x / cell, y / cell);
    let (ix, iy) = (gx.floor(), gy.floor());
    let (fx, fy) = (gx - ix, gy - iy);
    let (sx, sy) = (fx * fx * (3.0 - 2.0 * fx), fy * fy * (3.0 - 2.0 * fy));
    let (ix, iy) = (ix as i64 as u64, iy as i64 as u64);
    let v = |dx: u64, dy: u64| unit(seed, ix.wrapping_add(dx), iy.wrapping_add(dy));
    let top = v(0, 0) + (v(1, 0) - v(0, 0)) * sx;
    let bottom = v(0, 1) + (v(1, 1) - v(0, 1)) * sx;
    top + (bottom - top) * sy
}

/// Texture brightness in about [0.45, 1.05] for a cover at (x, y).
fn texture(seed: u64, cover: usize, x: f64, y: f64) -> f64 {
    let n = 0.5 * value_noise(seed, x, y, 24.0)
        + 0.3 * value_noise(seed ^ 1, x, y, 7.0)
        + 0.2 * value_noise(seed ^ 2, x, y, 2.0);
    let stripes = if cover == 3 && (x + 0.5 * y) as i64 % 8 < 3 {
        -0.15
    } else {
        0.0
    };
    0.5 + 0.55 * n + stripes
}

/// Parcel grid: one jittered Voronoi seed per `CELL × CELL` cell.
const CELL: usize = 48;

struct Parcel {
    x: f64,
    y: f64,
    cover: usize,
    /// Cover on the second date (== cover when unchanged).
    later: usize,
}

/// A deterministic `width × height` before/after pair with ground truth. About a fifth of
/// the area changes; `seed` picks the scene.
pub fn sample_pair(width: u32, height: u32, seed: u64) -> SamplePair {
    let (w, h) = (width as usize, height as usize);
    let area = (w * h) as f64;
    let (gw, gh) = (w.div_ceil(CELL), h.div_ceil(CELL));
    // One parcel per grid cell; the one in the middle always changes, about a fifth of
    // the others too.
    let middle = (gh / 2) * gw + gw / 2;
    let parcels: Vec<Parcel> = (0..gw * gh)
        .map(|i| {
            let id = i as u64;
            let cover = (unit(seed, 1, id) * 5.0) as usize % 5;
            let later = if i == middle || unit(seed, 2, id) < 0.2 {
                (cover + 1 + (unit(seed, 3, id) * 4.0) as usize % 4) % 5
            } else {
                cover
            };
            Parcel {
                x: ((i % gw) as f64 + unit(seed, 4, id)) * CELL as f64,
                y: ((i / gw) as f64 + unit(seed, 5, id)) * CELL as f64,
                cover,
                later,
            }
        })
        .collect();
    // Nearest seed among the 3 × 3 cells around a pixel's cell.
    let parcel_at = |fx: f64, fy: f64| -> &Parcel {
        let (cx, cy) = ((fx as usize / CELL) as i64, (fy as usize / CELL) as i64);
        let mut best = (f64::INFINITY, middle);
        for dy in -1..=1 {
            for dx in -1..=1 {
                let (gx, gy) = (cx + dx, cy + dy);
                if gx < 0 || gy < 0 || gx >= gw as i64 || gy >= gh as i64 {
                    continue;
                }
                let i = gy as usize * gw + gx as usize;
                let p = &parcels[i];
                let d = (p.x - fx) * (p.x - fx) + (p.y - fy) * (p.y - fy);
                if d < best.0 {
                    best = (d, i);
                }
            }
        }
        &parcels[best.1]
    };
    // New buildings: (x0, y0, x1, y1) rectangles, and a cleared disc.
    let nb = ((area / 8000.0) as u64).clamp(2, 4000);
    let buildings: Vec<[f64; 4]> = (0..nb)
        .map(|i| {
            let x0 = unit(seed, 6, i) * w as f64;
            let y0 = unit(seed, 7, i) * h as f64;
            let bw = 6.0 + unit(seed, 8, i) * 18.0;
            let bh = 6.0 + unit(seed, 9, i) * 18.0;
            [x0, y0, x0 + bw, y0 + bh]
        })
        .collect();
    // Buildings by grid row, so a pixel looks only at those that can cover it.
    let mut by_row: Vec<Vec<usize>> = vec![Vec::new(); gh];
    for (i, b) in buildings.iter().enumerate() {
        let lo = (b[1] as usize / CELL).min(gh - 1);
        let hi = ((b[3] + 4.0) as usize / CELL).min(gh - 1);
        for row in &mut by_row[lo..=hi] {
            row.push(i);
        }
    }
    let (cx, cy) = (unit(seed, 10, 0) * w as f64, unit(seed, 11, 0) * h as f64);
    let cr = (w.min(h) as f64) * 0.08;
    let gain = [
        0.92 + 0.1 * unit(seed, 12, 0),
        0.95 + 0.1 * unit(seed, 12, 1),
        0.9 + 0.1 * unit(seed, 12, 2),
    ];
    let mut before = RgbImage::new(width, height);
    let mut after = RgbImage::new(width, height);
    let mut truth = vec![0u8; w * h];
    for y in 0..h {
        for x in 0..w {
            let (fx, fy) = (x as f64 + 0.5, y as f64 + 0.5);
            let p = parcel_at(fx, fy);
            let road = (x % 97 < 3 && y % 211 > 20) || (y % 131 < 3 && x % 173 > 30);
            let mut c0 = cover_rgb(seed, p.cover, fx, fy, road);
            let mut c1 = cover_rgb(seed ^ 0xA5, p.later, fx, fy, road);
            let mut changed = p.later != p.cover && !road;
            for &i in &by_row[y / CELL] {
                let b = &buildings[i];
                if fx >= b[0] && fx < b[2] && fy >= b[1] && fy < b[3] {
                    c1 = [0.93 * 255.0, 0.55 * 255.0, 0.45 * 255.0];
                    changed = true;
                } else if fx >= b[0] + 3.0 && fx < b[2] + 3.0 && fy >= b[3] && fy < b[3] + 4.0 {
                    c1 = [c1[0] * 0.35, c1[1] * 0.35, c1[2] * 0.4];
                    changed = true;
                }
            }
            if (fx - cx) * (fx - cx) + (fy - cy) * (fy - cy) < cr * cr && !road {
                c1 = cover_rgb(seed ^ 0x5A, 1, fx, fy, false);
                changed = true;
            }
            let light = 0.9 + 0.15 * (fx / w as f64) + 0.05 * (fy / h as f64);
            for ch in 0..3 {
                let n0 = (unit(seed, 20 + ch as u64, (y * w + x) as u64) - 0.5) * 12.0;
                let n1 = (unit(seed, 30 + ch as u64, (y * w + x) as u64) - 0.5) * 12.0;
                c0[ch] += n0;
                c1[ch] = c1[ch] * gain[ch] * light + 6.0 + n1;
            }
            before.put_pixel(x as u32, y as u32, image::Rgb(c0.map(to_u8)));
            after.put_pixel(x as u32, y as u32, image::Rgb(c1.map(to_u8)));
            truth[y * w + x] = if changed { 255 } else { 0 };
        }
    }
    SamplePair {
        before,
        after,
        truth,
    }
}

fn cover_rgb(seed: u64, cover: usize, x: f64, y: f64, road: bool) -> [f64; 3] {
    if road {
        return [120.0, 118.0, 115.0];
    }
    let t = texture(seed.wrapping_add(cover as u64), cover, x, y) * 255.0;
    let tint = COVERS[cover];
    [t * tint[0], t * tint[1], t * tint[2]]
}

fn to_u8(v: f64) -> u8 {
    v.clamp(0.0, 255.0) as u8
}

/// The calibration chunk and its input blobs.
pub type Calibration = (TaskSpec, Vec<(Cid, Vec<u8>)>);

/// Side of the calibration pair.
const CALIBRATION_SIDE: u32 = 512;

/// A fixed chunk (the one band of a generated 512 × 512 pair, default `sa`: 8.7 M pixel
/// updates, about 9 ms on one AVX-512 core, 25–40 ms on an older one) and its input
/// blobs, used to time a peer on this kernel. The same on every call and machine. Small
/// on purpose: every benchmark is work on the critical path of a short job, and the
/// scheduler follows each peer's measured chunks once they come in.
pub fn calibration_task() -> Calibration {
    static TASK: OnceLock<Calibration> = OnceLock::new();
    TASK.get_or_init(|| {
        let pair = sample_pair(CALIBRATION_SIDE, CALIBRATION_SIDE, 7);
        let diff = prep::difference(
            CALIBRATION_SIDE,
            CALIBRATION_SIDE,
            &prep::grey_rgb(pair.before.as_raw(), 3),
            &prep::grey_rgb(pair.after.as_raw(), 3),
        );
        let params = ChangeParams {
            band_rows: CALIBRATION_SIDE,
            ..ChangeParams::default()
        };
        // A fixed valid input and fixed valid params: planning cannot fail here, and if
        // it ever did the calibration would be an empty (refused) chunk, not a panic.
        match plan::plan(&diff, &params) {
            Ok(plan) => match plan.chunks.into_iter().next() {
                Some(spec) => (spec, plan.blobs),
                None => (empty_spec(), Vec::new()),
            },
            Err(_) => (empty_spec(), Vec::new()),
        }
    })
    .clone()
}

fn empty_spec() -> TaskSpec {
    TaskSpec {
        kernel: KERNEL.into(),
        kernel_version: VERSION,
        params: Vec::new(),
        inputs: Vec::new(),
    }
}
