//! The `change` kernel's chunking: banded == whole image for any band height (property
//! test), the calibration chunk runs, and a worker refuses every malformed chunk or blob
//! with an error instead of a panic.

use std::collections::HashMap;

use idlegrid_kernels::change::{self, chunk::BandParams, prep, ChangeParams, Method};
use idlegrid_kernels::KernelError;
use idlegrid_protocol::{codec, Cid, TaskSpec};
use proptest::prelude::*;

fn run_plan(plan: &change::ChangePlan) -> Vec<u8> {
    let blobs: HashMap<_, _> = plan.blobs.iter().cloned().collect();
    let results: Vec<Vec<u8>> = plan
        .chunks
        .iter()
        .map(|spec| {
            let inputs: Vec<Vec<u8>> = spec.inputs.iter().map(|c| blobs[c].clone()).collect();
            idlegrid_kernels::run(spec, &inputs).unwrap()
        })
        .collect();
    plan.assemble(&results).unwrap().pixels
}

/// A difference image with structure (a bright blob and noise), from a seed.
fn diff_image(w: u32, h: u32, seed: u64) -> prep::Difference {
    let mut x = Vec::with_capacity((w * h) as usize);
    for y in 0..h {
        for c in 0..w {
            let r = change::rng::mix64(seed ^ ((y as u64) << 32 | c as u64));
            let blob = (c as i64 - w as i64 / 2).pow(2) + (y as i64 - h as i64 / 3).pow(2)
                < (w.min(h) as i64 / 3).pow(2);
            let v = (r % 40) as u8 + if blob { 60 } else { 0 };
            x.push(v);
        }
    }
    prep::Difference {
        width: w,
        height: h,
        x,
    }
}

fn method() -> impl Strategy<Value = Method> {
    prop_oneof![
        Just(Method::Sa),
        Just(Method::Icm),
        Just(Method::DocLiteral),
        Just(Method::Otsu),
        Just(Method::Bayes)
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn banded_mask_equals_whole_image_mask(
        w in 1u32..48, h in 1u32..90, band in 1u32..100, seed in any::<u64>(),
        m in method(), radius in 1u32..=2, sweeps in 0u32..6, icm in 0u32..3,
    ) {
        let diff = diff_image(w, h, seed);
        let params = ChangeParams {
            radius, sweeps, icm_sweeps: icm, seed,
            ..ChangeParams::preset(m)
        };
        let whole = run_plan(&change::plan(&diff, &ChangeParams { band_rows: h, ..params.clone() }).unwrap());
        let plan = change::plan(&diff, &ChangeParams { band_rows: band, ..params }).unwrap();
        prop_assert_eq!(plan.chunks.len() as u32, h.div_ceil(band));
        prop_assert_eq!(run_plan(&plan), whole);
    }

    /// The bands tile the image in `⌈h / band⌉` bands; a job of at least
    /// `TAPER_FROM_BANDS` ends with three bands of about ½, ¼ and ¼ of `band` rows
    /// and no other band is shorter than `band`; a shorter job has bands of `band`
    /// rows but the last.
    #[test]
    fn the_band_layout_tiles_the_image_and_ends_with_small_bands(
        h in 1u32..20_000, band in 1u32..1500,
    ) {
        let bands = change::band_layout(h, band);
        prop_assert_eq!(bands.len() as u32, h.div_ceil(band));
        prop_assert_eq!(bands[0].0, 0);
        prop_assert_eq!(bands[bands.len() - 1].1, h);
        prop_assert!(bands.windows(2).all(|p| p[0].1 == p[1].0));
        prop_assert!(bands.iter().all(|&(s, e)| s < e));
        let rows: Vec<u32> = bands.iter().map(|&(s, e)| e - s).collect();
        let n = rows.len();
        if n as u32 >= change::TAPER_FROM_BANDS && band >= 4 {
            let tail = &rows[n - 3..];
            prop_assert_eq!(tail.iter().sum::<u32>(), band);
            prop_assert_eq!(tail[0], band.div_ceil(2));
            prop_assert!(tail[0] >= tail[1] && tail[1] >= tail[2]);
            prop_assert!(rows[..n - 3].iter().all(|&r| r >= band));
        } else {
            prop_assert!(rows[..n - 1].iter().all(|&r| r == band));
        }
    }

    /// Whatever bytes a peer sends as params or blobs, the worker answers, never panics.
    #[test]
    fn garbage_never_panics(params in proptest::collection::vec(any::<u8>(), 0..200),
                            blob in proptest::collection::vec(any::<u8>(), 0..600)) {
        let spec = TaskSpec {
            kernel: "change".into(), kernel_version: change::VERSION, params,
            inputs: vec![Cid::of(&blob), Cid::of(&blob)],
        };
        let _ = idlegrid_kernels::validate(&spec);
        let _ = idlegrid_kernels::run(&spec, &[blob.clone(), blob]);
    }
}

/// A job long enough to end with small bands gives the whole-image mask too.
#[test]
fn a_tapered_layout_gives_the_whole_image_mask() {
    let (w, h, band) = (24u32, 130u32, 8u32);
    let diff = diff_image(w, h, 11);
    let params = ChangeParams {
        sweeps: 4,
        ..ChangeParams::default()
    };
    let plan = change::plan(
        &diff,
        &ChangeParams {
            band_rows: band,
            ..params.clone()
        },
    )
    .unwrap();
    let rows: Vec<u32> = plan.bands.iter().map(|&(s, e)| e - s).collect();
    assert_eq!(&rows[rows.len() - 3..], &[4, 2, 2], "{rows:?}");
    let whole = run_plan(
        &change::plan(
            &diff,
            &ChangeParams {
                band_rows: h,
                ..params
            },
        )
        .unwrap(),
    );
    assert_eq!(run_plan(&plan), whole);
}

/// The middle chunk of a small plan and its input blobs in order: the tables, then the
/// band's pieces (the halo reaches the whole 30-row image, so its 3 bands' pieces).
fn small_plan() -> (TaskSpec, Vec<Vec<u8>>) {
    let diff = diff_image(20, 30, 1);
    let plan = change::plan(
        &diff,
        &ChangeParams {
            band_rows: 10,
            ..ChangeParams::default()
        },
    )
    .unwrap();
    let spec = plan.chunks[1].clone();
    let blobs: HashMap<_, _> = plan.blobs.iter().cloned().collect();
    let inputs = spec.inputs.iter().map(|c| blobs[c].clone()).collect();
    (spec, inputs)
}

fn with_params(spec: &TaskSpec, edit: impl FnOnce(&mut BandParams)) -> TaskSpec {
    let mut p: BandParams = codec::decode(&spec.params, 1 << 16).unwrap();
    edit(&mut p);
    TaskSpec {
        params: codec::encode(&p).unwrap(),
        ..spec.clone()
    }
}

#[test]
fn valid_chunk_runs() {
    let (spec, inputs) = small_plan();
    assert_eq!(spec.inputs.len(), 4, "tables and 3 pieces");
    let out = idlegrid_kernels::run(&spec, &inputs).unwrap();
    assert_eq!(out.len(), 10 * 20 / 8, "one bit per pixel");
}

/// X travels once: the pieces cover the image exactly, each band's pieces are its rows
/// with halo and nothing else, and a band's halo pieces are its neighbours' own.
#[test]
fn pieces_tile_the_image_once_and_neighbours_share_their_halo() {
    let (w, h) = (16u32, 700u32);
    let diff = diff_image(w, h, 5);
    let plan = change::plan(
        &diff,
        &ChangeParams {
            band_rows: 256,
            ..ChangeParams::default()
        },
    )
    .unwrap();
    let halo = 67u32;
    let piece_bytes: usize = plan.blobs[1..].iter().map(|(_, b)| b.len()).sum();
    assert_eq!(
        piece_bytes,
        diff.x.len(),
        "every row of X in exactly one piece"
    );
    let blobs: HashMap<_, _> = plan.blobs.iter().cloned().collect();
    for (spec, &(start, end)) in plan.chunks.iter().zip(&plan.bands) {
        let p: BandParams = codec::decode(&spec.params, 1 << 16).unwrap();
        let (xs, xe) = (start.saturating_sub(halo), (end + halo).min(h));
        assert_eq!((p.ext_start, p.ext_end), (xs, xe));
        let rows: Vec<u8> = spec.inputs[1..]
            .iter()
            .flat_map(|c| blobs[c].clone())
            .collect();
        assert_eq!(rows, diff.x[(xs * w) as usize..(xe * w) as usize]);
    }
    for pair in plan.chunks.windows(2) {
        let shared = pair[0].inputs[1..]
            .iter()
            .filter(|c| pair[1].inputs.contains(c))
            .count();
        // Below: the upper band's last halo piece, its own bottom rows; above: the lower
        // band's top rows and its top halo piece.
        assert!(shared >= 2, "neighbouring bands share {shared} pieces");
    }
}

#[test]
fn packed_masks_round_trip_and_are_strict() {
    for pixels in [0usize, 1, 7, 8, 9, 200, 203] {
        let mask: Vec<u8> = (0..pixels)
            .map(|i| {
                if change::rng::mix64(i as u64).is_multiple_of(3) {
                    255
                } else {
                    0
                }
            })
            .collect();
        let packed = change::chunk::pack_mask(&mask);
        assert_eq!(packed.len(), pixels.div_ceil(8));
        let mut back = Vec::new();
        change::chunk::unpack_mask_into(&packed, pixels, &mut back).unwrap();
        assert_eq!(back, mask);
        // A set padding bit or a wrong length is refused, not silently accepted.
        if pixels % 8 != 0 {
            let mut bad = packed.clone();
            *bad.last_mut().unwrap() |= 0x80;
            assert!(change::chunk::unpack_mask_into(&bad, pixels, &mut Vec::new()).is_err());
        }
        let mut long = packed.clone();
        long.push(0);
        assert!(change::chunk::unpack_mask_into(&long, pixels, &mut Vec::new()).is_err());
    }
}

#[test]
fn wrong_halo_or_geometry_is_refused() {
    let (spec, inputs) = small_plan();
    type Edit = Box<dyn Fn(&mut BandParams)>;
    let edits: Vec<Edit> = vec![
        Box::new(|p| p.ext_start += 1),
        Box::new(|p| p.ext_end -= 1),
        Box::new(|p| p.row_end = p.height + 1),
        Box::new(|p| p.row_start = p.row_end),
        Box::new(|p| p.width = 0),
        Box::new(|p| p.height = u32::MAX),
        Box::new(|p| p.radius = 3),
        Box::new(|p| p.window = Some(100)),
        Box::new(|p| p.anneal_sweeps = 1_000_000),
        // Pieces that do not add up to the band's rows, or an empty one.
        Box::new(|p| p.piece_rows[0] += 1),
        Box::new(|p| {
            p.piece_rows[2] -= 1;
            p.piece_rows.push(1);
        }),
        Box::new(|p| p.piece_rows.insert(1, 0)),
    ];
    for (i, e) in edits.iter().enumerate() {
        let bad = with_params(&spec, e);
        let err = idlegrid_kernels::run(&bad, &inputs);
        assert!(
            matches!(err, Err(KernelError::InvalidParams(_))),
            "edit {i}: {err:?}"
        );
    }
}

#[test]
fn wrong_blobs_are_refused() {
    let (spec, inputs) = small_plan();
    // A piece of the wrong length (with a matching content id).
    let mut short = inputs.clone();
    short[2].pop();
    let spec2 = TaskSpec {
        inputs: short.iter().map(|b| Cid::of(b)).collect(),
        ..spec.clone()
    };
    assert!(matches!(
        idlegrid_kernels::run(&spec2, &short),
        Err(KernelError::InvalidInput(_))
    ));
    // A blob that does not match its id.
    let mut flipped = inputs.clone();
    flipped[3][0] ^= 1;
    assert!(matches!(
        idlegrid_kernels::run(&spec, &flipped),
        Err(KernelError::InvalidInput(_))
    ));
    // Pieces swapped (each matches some id, not the one in its place).
    let mut swapped = inputs.clone();
    swapped.swap(1, 3);
    assert!(idlegrid_kernels::run(&spec, &swapped).is_err());
    // Wrong number of blobs.
    assert!(idlegrid_kernels::run(&spec, &inputs[..2]).is_err());
    // Tables that are not tables.
    let mut junk = inputs.clone();
    junk[0] = vec![0xA5u8; 64];
    let spec3 = TaskSpec {
        inputs: junk.iter().map(|b| Cid::of(b)).collect(),
        ..spec.clone()
    };
    assert!(matches!(
        idlegrid_kernels::run(&spec3, &junk),
        Err(KernelError::InvalidInput(_))
    ));
}

#[test]
fn tables_for_other_sweep_counts_are_refused() {
    let (spec, inputs) = small_plan();
    let bad = with_params(&spec, |p| {
        p.anneal_sweeps -= 1;
        let halo =
            change::halo_rows(p.radius, p.window, (p.anneal_sweeps + p.icm_sweeps) as u64) as u32;
        p.ext_start = p.row_start.saturating_sub(halo);
        p.ext_end = (p.row_end + halo).min(p.height);
    });
    assert!(matches!(
        idlegrid_kernels::run(&bad, &inputs),
        Err(KernelError::InvalidInput(_))
    ));
}

#[test]
fn halo_rows_match_the_reference() {
    // Reference README: 3x3 with 33 sweeps: 67; 5x5: 199; icm_em (10 ICM sweeps): 20.
    assert_eq!(change::halo_rows(1, Some(1), 33), 67);
    assert_eq!(change::halo_rows(2, Some(1), 33), 199);
    assert_eq!(change::halo_rows(1, None, 10), 20);
    assert_eq!(change::halo_rows(1, None, 0), 0);
}

#[test]
fn calibration_task_runs_and_is_fixed() {
    let (spec, blobs) = change::calibration_task();
    let map: HashMap<_, _> = blobs.into_iter().collect();
    let inputs: Vec<Vec<u8>> = spec.inputs.iter().map(|c| map[c].clone()).collect();
    let a = idlegrid_kernels::run(&spec, &inputs).unwrap();
    assert_eq!(change::calibration_task().0.id(), spec.id());
    assert!(a.contains(&255) && a.contains(&0));
}

#[test]
fn sample_pair_is_deterministic_and_has_changes() {
    let a = change::sample_pair(160, 120, 3);
    let b = change::sample_pair(160, 120, 3);
    assert_eq!(a.before, b.before);
    assert_eq!(a.after, b.after);
    let frac = a.truth.iter().filter(|&&v| v == 255).count() as f64 / a.truth.len() as f64;
    assert!((0.02..0.6).contains(&frac), "changed fraction {frac}");
    assert_ne!(change::sample_pair(160, 120, 4).before, a.before);
}

#[test]
fn bad_params_are_refused_by_plan() {
    let diff = diff_image(8, 8, 0);
    for p in [
        ChangeParams {
            radius: 3,
            ..Default::default()
        },
        ChangeParams {
            beta: f64::NAN,
            ..Default::default()
        },
        ChangeParams {
            beta: 100.0,
            ..Default::default()
        },
        ChangeParams {
            sweeps: 5000,
            ..Default::default()
        },
        ChangeParams {
            band_rows: 0,
            ..Default::default()
        },
        ChangeParams {
            alpha: 1.5,
            ..Default::default()
        },
    ] {
        assert!(matches!(
            change::plan(&diff, &p),
            Err(KernelError::InvalidParams(_))
        ));
    }
}
