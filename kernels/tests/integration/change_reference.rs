//! Bit-exactness of the `change` kernel against the numpy reference
//! (`shared/reference/change`): RNG vectors, look-up and acceptance tables, and the mask
//! SHA-256 of every method on the reference's synthetic pair and of every real pair in
//! `../shared/data/change` (read in place, never copied).
//!
//! Fixtures (kernels/tests/fixtures): the reference's synthetic pair (`synth_*.png`, its
//! pixel hashes are checked against the reference's record), its `spec_*.json` dumps
//! (`run.sh --dump-spec`), `rng_vectors.json`, the reference's `expected_results.json`
//! (as `synthetic_expected.json`), and `real_pairs_expected.json`, written by
//! `kernels/tests/reference/real_pairs_sa.py` from the unmodified reference.

use std::path::{Path, PathBuf};

use idlegrid_kernels::change::{self, model, prep, ChangeParams, Method};
use idlegrid_kernels::Spread;
use rayon::prelude::*;
use serde_json::Value;
use sha2::{Digest, Sha256};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn shared_data() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/change")
}

fn json(name: &str) -> Value {
    let text = std::fs::read_to_string(fixtures().join(name)).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The reference's parameters of each of its method rows.
fn reference_params(name: &str) -> ChangeParams {
    match name {
        "sa" => ChangeParams::preset(Method::Sa),
        "icm_em" => ChangeParams::preset(Method::Icm),
        "otsu" => ChangeParams::preset(Method::Otsu),
        "bayes_doc" => ChangeParams::preset(Method::Bayes),
        "doc_literal" => ChangeParams::preset(Method::DocLiteral),
        _ => panic!("no such method row {name}"),
    }
}

/// Runs a job through plan → registry run → assemble, as the grid does, three ways: on
/// a one-thread pool (each band in wavefront order, as a `--cores 1` peer runs it), on a
/// two-thread pool with each band spread over both (phase by phase), and on a
/// two-thread pool with each band on one thread (wavefront, as `--local` and a busy
/// worker run them). All three must be the mask.
fn detect(diff: &prep::Difference, params: &ChangeParams) -> Vec<u8> {
    let plan = change::plan(diff, params).unwrap();
    let blobs: std::collections::HashMap<_, _> = plan.blobs.iter().cloned().collect();
    let on_threads = |threads: usize, spread: Spread| -> Vec<u8> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        let results: Vec<Vec<u8>> = pool.install(|| {
            plan.chunks
                .par_iter()
                .map(|spec| {
                    let inputs: Vec<Vec<u8>> =
                        spec.inputs.iter().map(|c| blobs[c].clone()).collect();
                    idlegrid_kernels::run_with(spec, &inputs, spread).unwrap()
                })
                .collect()
        });
        plan.assemble(&results).unwrap().pixels
    };
    let one_thread = on_threads(1, Spread::Pool);
    assert!(
        on_threads(2, Spread::Pool) == one_thread,
        "phase by phase on two threads disagrees with the wavefront"
    );
    assert!(
        on_threads(2, Spread::OneThread) == one_thread,
        "bands side by side in wavefront order disagree with one thread"
    );
    one_thread
}

fn load_diff(a: &Path, b: &Path) -> prep::Difference {
    let (a, b) = prep::load_pair(a, b).unwrap();
    prep::difference_of(&a, &b)
}

fn synth_diff() -> prep::Difference {
    load_diff(
        &fixtures().join("synth_t1.png"),
        &fixtures().join("synth_t2.png"),
    )
}

#[test]
fn synthetic_fixtures_are_the_reference_pair() {
    let want = &json("synthetic_expected.json")["synthetic"];
    for (file, key) in [
        ("synth_t1.png", "sha256_t1"),
        ("synth_t2.png", "sha256_t2"),
        ("synth_gt.png", "sha256_gt"),
    ] {
        let img = prep::load_image(&fixtures().join(file)).unwrap();
        assert_eq!(
            sha256(img.as_bytes()),
            want[key].as_str().unwrap(),
            "{file}"
        );
    }
}

#[test]
fn rng_matches_reference_vectors() {
    let v = json("rng_vectors.json");
    let rng = change::rng::Rng::new(2005);
    for k in 0..2u64 {
        let want: Vec<u64> = v[format!("seed=2005,k={k},npix=262144")]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap())
            .collect();
        let got: Vec<u64> = (0..4).map(|i| rng.at(k, 262144, i) as u64).collect();
        assert_eq!(got, want, "k = {k}");
    }
}

fn ints(v: &Value) -> Vec<i64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_i64().unwrap())
        .collect()
}

/// F, q16, B, the temperatures and every acceptance table equal the reference's dump.
fn check_spec(file: &str, method: Method) {
    let spec = json(file);
    let p = &spec["params"];
    let params = reference_params(match file {
        "spec_sa.json" => "sa",
        "spec_icm_em.json" => "icm_em",
        _ => "doc_literal",
    });
    assert_eq!(p["em"].as_bool().unwrap(), params.em);
    let hist_v = ints(&spec["hist"]);
    let mut hist = [0u64; 256];
    for (h, &v) in hist.iter_mut().zip(&hist_v) {
        *h = v as u64;
    }
    let (luts, classes) = model::luts(&hist, method, 2.0, params.em, 1.0, 0.05);
    let c = classes.unwrap();
    let want_c = &spec["classes"];
    for (name, got) in [("pc", c.pc), ("mc", c.mc), ("sc", c.sc), ("pn", c.pn)] {
        let want = want_c[name].as_f64().unwrap();
        if params.em {
            // numpy's vector exp differs from libm by an ulp here and there; EM
            // carries that into the last bits of the classes (not into the tables).
            assert!((got - want).abs() <= 1e-12 * want.abs().max(1.0), "{name}");
        } else {
            assert_eq!(got, want, "{name}");
        }
    }
    let q16: Vec<i64> = luts.q16.iter().map(|&v| v as i64).collect();
    assert_eq!(q16, ints(&spec["q16"]), "q16");
    if method == Method::DocLiteral {
        let g: Vec<i64> = luts.gauge.unwrap().iter().map(|&v| v as i64).collect();
        assert_eq!(g, ints(&spec["pdata"]), "pdata");
    } else {
        let f: Vec<i64> = luts.f.iter().map(|&v| v as i64).collect();
        assert_eq!(f, ints(&spec["F"]), "F");
        assert_eq!(luts.b as i64, spec["B"].as_i64().unwrap(), "B");
    }
    let temps = model::temperatures(change::Schedule::Geom, 2.0, 0.85, 30);
    let want_t: Vec<f64> = spec["temps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_f64().unwrap())
        .collect();
    let unit = spec["unit"].as_f64().unwrap();
    if method == Method::Icm {
        assert!(want_t.is_empty());
        return;
    }
    assert_eq!(temps, want_t, "temperatures");
    let dmax = model::dmax(&luts.f, luts.b, 1);
    let tables = spec["accept_u32"].as_array().unwrap();
    assert_eq!(tables.len(), 30);
    for (k, (want, &t)) in tables.iter().zip(&temps).enumerate() {
        let want = ints(want);
        assert_eq!(want.len(), dmax as usize + 1, "table {k} size");
        let mut got: Vec<i64> = model::accept_table(t, unit, dmax)
            .iter()
            .map(|&v| v as i64)
            .collect();
        got.resize(want.len(), 0);
        assert_eq!(got, want, "acceptance table of sweep {k}");
    }
}

#[test]
fn tables_equal_reference_spec_sa() {
    check_spec("spec_sa.json", Method::Sa);
}

#[test]
fn tables_equal_reference_spec_icm_em() {
    check_spec("spec_icm_em.json", Method::Icm);
}

#[test]
fn tables_equal_reference_spec_doc_literal() {
    check_spec("spec_doc_literal.json", Method::DocLiteral);
}

#[test]
fn synthetic_pair_masks_equal_reference() {
    let want = &json("synthetic_expected.json")["synthetic_results"];
    let diff = synth_diff();
    for name in ["otsu", "bayes_doc", "icm_em", "doc_literal", "sa"] {
        let params = ChangeParams {
            band_rows: diff.height,
            ..reference_params(name)
        };
        let mask = detect(&diff, &params);
        assert_eq!(
            sha256(&mask),
            want[name]["sha256"].as_str().unwrap(),
            "method {name}"
        );
    }
}

#[test]
fn synthetic_pair_in_bands_equals_reference() {
    let want = &json("synthetic_expected.json")["synthetic_results"];
    let diff = synth_diff();
    for (name, rows) in [
        ("sa", 100),
        ("sa", 37),
        ("icm_em", 50),
        ("doc_literal", 200),
    ] {
        let params = ChangeParams {
            band_rows: rows,
            ..reference_params(name)
        };
        let mask = detect(&diff, &params);
        assert_eq!(
            sha256(&mask),
            want[name]["sha256"].as_str().unwrap(),
            "method {name}, bands of {rows} rows"
        );
    }
}

/// Every real pair of shared/data/change: the mask of each method equals the
/// reference's (sa with the default band height, so in several bands).
#[test]
fn real_pairs_masks_equal_reference() {
    let want = json("real_pairs_expected.json");
    let want = want.as_object().unwrap();
    let root = shared_data();
    let mut pairs: Vec<(String, PathBuf)> = std::fs::read_dir(root.join("sztaki"))
        .unwrap_or_else(|e| panic!("{}: {e} (shared data missing?)", root.display()))
        .map(|e| {
            let e = e.unwrap();
            (
                format!("sztaki/{}", e.file_name().to_string_lossy()),
                e.path(),
            )
        })
        .collect();
    pairs.push(("ottawa".into(), root.join("ottawa")));
    assert_eq!(pairs.len(), want.len(), "pairs on disk vs fixture");
    for (tag, dir) in pairs {
        let diff = load_diff(&dir.join("im1.png"), &dir.join("im2.png"));
        let row = &want[&tag];
        for name in ["sa", "icm_em", "otsu", "bayes_doc", "doc_literal"] {
            let params = ChangeParams {
                band_rows: 256,
                ..reference_params(name)
            };
            let mask = detect(&diff, &params);
            assert_eq!(
                sha256(&mask),
                row[name]["sha256"].as_str().unwrap(),
                "{tag} method {name}"
            );
        }
    }
}

/// numpy (AVX-512) and libm disagree on `exp` by one ulp at thousands of acceptance-table
/// arguments (found by `kernels/tests/reference/exp_ulp.py`); the kernel uses libm. This
/// shows the differences and that none of them moves a table entry
/// `min(2^32 − 1, ⌊exp·2^32⌋)`, here and (per the script's scan) in any table the CLI
/// can reach.
#[test]
fn exp_ulp_differences_move_no_entry() {
    let fx = json("exp_ulp.json");
    let diffs = fx["default_sa_ulp_differences"].as_array().unwrap();
    assert!(diffs.len() > 1000, "the difference exists");
    assert_eq!(fx["scan"]["moved_entries"].as_array().unwrap().len(), 0);
    let temps = model::temperatures(change::Schedule::Geom, 2.0, 0.85, 30);
    let entry = |e: f64| (e * 4294967296.0).floor().min(4294967295.0) as u64;
    for d in diffs {
        let (k, dd, ulps) = (
            d[0].as_u64().unwrap() as usize,
            d[1].as_u64().unwrap(),
            d[2].as_i64().unwrap(),
        );
        let ours = (-(dd as f64) * (1.0 / 64.0) / temps[k]).exp();
        let numpy = f64::from_bits((ours.to_bits() as i64 + ulps) as u64);
        assert_ne!(ours, numpy);
        assert_eq!(entry(ours), entry(numpy), "sweep {k}, dE {dd}");
        let table = model::accept_table(temps[k], 1.0 / 64.0, 3072);
        assert_eq!(
            table.get(dd as usize).copied().unwrap_or(0) as u64,
            entry(ours)
        );
    }
}
