//! Quality of the `change` kernel next to the numpy reference's figures:
//! kappa, F1, false alarms and missed alarms for every real pair in
//! `../shared/data/change` and for the reference's synthetic pair.
//!
//! `cargo run --release -p idlegrid-kernels --example change_quality [-- --all-methods]`
//!
//! The reference's figures come from `shared/reference/change/expected_results.json`
//! (kappa/F1) and `kernels/tests/fixtures/real_pairs_expected.json` (written by
//! `kernels/tests/reference/real_pairs_sa.py`; it also has the false/missed alarms).
//! Since the masks are bit-identical, the two sides' figures are equal.

use std::path::{Path, PathBuf};

use idlegrid_kernels::change::{self, prep, ChangeParams, Method};
use serde_json::Value;

/// Confusion counts and the reference's `metrics`.
struct Metrics {
    kappa: f64,
    f1: f64,
    fa: u64,
    ma: u64,
}

fn metrics(pred: &[u8], gt: &[u8]) -> Metrics {
    let (mut tp, mut fp, mut fn_, mut tn) = (0u64, 0u64, 0u64, 0u64);
    for (&p, &g) in pred.iter().zip(gt) {
        match (p > 0, g > 0) {
            (true, true) => tp += 1,
            (true, false) => fp += 1,
            (false, true) => fn_ += 1,
            (false, false) => tn += 1,
        }
    }
    let n = (tp + fp + fn_ + tn) as f64;
    let (tpf, fpf, fnf, tnf) = (tp as f64, fp as f64, fn_ as f64, tn as f64);
    let pcc = (tpf + tnf) / n;
    let pe = ((tpf + fpf) * (tpf + fnf) + (fnf + tnf) * (fpf + tnf)) / (n * n);
    let kappa = if pe < 1.0 {
        (pcc - pe) / (1.0 - pe)
    } else {
        0.0
    };
    let prec = if tp + fp > 0 { tpf / (tpf + fpf) } else { 0.0 };
    let rec = if tp + fn_ > 0 { tpf / (tpf + fnf) } else { 0.0 };
    let f1 = if prec + rec > 0.0 {
        2.0 * prec * rec / (prec + rec)
    } else {
        0.0
    };
    Metrics {
        kappa,
        f1,
        fa: fp,
        ma: fn_,
    }
}

/// Ground truth: first channel, 255 = changed.
fn truth(path: &Path) -> Result<Vec<u8>, String> {
    let img = prep::load_image(path).map_err(|e| e.to_string())?;
    Ok(match img {
        image::DynamicImage::ImageLuma8(g) => g.into_raw(),
        other => other.to_rgb8().pixels().map(|p| p.0[0]).collect(),
    })
}

fn detect(before: &Path, after: &Path, method: Method) -> Result<Vec<u8>, String> {
    let (a, b) = prep::load_pair(before, after).map_err(|e| e.to_string())?;
    let diff = prep::difference_of(&a, &b);
    let plan = change::plan(&diff, &ChangeParams::preset(method)).map_err(|e| e.to_string())?;
    let blobs: std::collections::HashMap<_, _> = plan.blobs.iter().cloned().collect();
    let mut results = Vec::new();
    for spec in &plan.chunks {
        let inputs: Vec<Vec<u8>> = spec.inputs.iter().map(|c| blobs[c].clone()).collect();
        results.push(idlegrid_kernels::run(spec, &inputs).map_err(|e| e.to_string())?);
    }
    Ok(plan.assemble(&results).map_err(|e| e.to_string())?.pixels)
}

fn read_json(path: &Path) -> Result<Value, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// Reference method row name of a method.
fn ref_name(m: Method) -> &'static str {
    match m {
        Method::Sa => "sa",
        Method::Icm => "icm_em",
        Method::Otsu => "otsu",
        Method::Bayes => "bayes_doc",
        Method::DocLiteral => "doc_literal",
    }
}

fn main() -> Result<(), String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let data = root.join("../../shared/data/change");
    let fixtures = root.join("tests/fixtures");
    let expected = read_json(&fixtures.join("synthetic_expected.json"))?;
    let real = read_json(&fixtures.join("real_pairs_expected.json"))?;
    let methods: Vec<Method> = if std::env::args().any(|a| a == "--all-methods") {
        vec![
            Method::Sa,
            Method::Icm,
            Method::Otsu,
            Method::Bayes,
            Method::DocLiteral,
        ]
    } else {
        vec![Method::Sa]
    };
    let mut pairs: Vec<(String, PathBuf, PathBuf, PathBuf)> = Vec::new();
    let mut names: Vec<_> = std::fs::read_dir(data.join("sztaki"))
        .map_err(|e| format!("{}: {e}", data.display()))?
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect();
    names.sort();
    for n in names {
        let d = data.join("sztaki").join(&n);
        pairs.push((
            format!("sztaki/{n}"),
            d.join("im1.png"),
            d.join("im2.png"),
            d.join("gt.png"),
        ));
    }
    let d = data.join("ottawa");
    pairs.push((
        "ottawa".into(),
        d.join("im1.png"),
        d.join("im2.png"),
        d.join("gt.png"),
    ));
    pairs.push((
        "synthetic 512²".into(),
        fixtures.join("synth_t1.png"),
        fixtures.join("synth_t2.png"),
        fixtures.join("synth_gt.png"),
    ));
    for m in methods {
        println!("\nmethod {m} (reference row `{}`)\n", ref_name(m));
        println!("| pair | kappa | F1 | false alarms | missed alarms | reference kappa | reference F1 | reference FA / MA |");
        println!("|---|---|---|---|---|---|---|---|");
        let (mut sk, mut sf, mut n) = (0.0, 0.0, 0usize);
        for (tag, a, b, g) in &pairs {
            let mask = detect(a, b, m)?;
            let q = metrics(&mask, &truth(g)?);
            let (rk, rf, rfa, rma) = if tag.starts_with("synthetic") {
                let r = &expected["synthetic_results"][ref_name(m)];
                (
                    r["kappa"].as_f64(),
                    r["F1"].as_f64(),
                    r["FP_false_alarms"].as_u64(),
                    r["FN_missed"].as_u64(),
                )
            } else {
                let r = &real[tag][ref_name(m)];
                (
                    r["kappa"].as_f64(),
                    r["F1"].as_f64(),
                    r["FA"].as_u64(),
                    r["MA"].as_u64(),
                )
            };
            let opt = |v: Option<f64>| v.map_or("—".into(), |v| format!("{v:.4}"));
            let opt_u = |v: Option<u64>| v.map_or("—".into(), |v| v.to_string());
            println!(
                "| {tag} | {:.4} | {:.4} | {} | {} | {} | {} | {} / {} |",
                q.kappa,
                q.f1,
                q.fa,
                q.ma,
                opt(rk),
                opt(rf),
                opt_u(rfa),
                opt_u(rma)
            );
            if tag.starts_with("sztaki") {
                sk += q.kappa;
                sf += q.f1;
                n += 1;
            }
        }
        if n > 0 {
            let mean = &expected["sztaki_mean"][ref_name(m)];
            println!(
                "| SZTAKI mean ({n}) | {:.4} | {:.4} | | | {:.4} | {:.4} | |",
                sk / n as f64,
                sf / n as f64,
                mean["mean_kappa"].as_f64().unwrap_or(f64::NAN),
                mean["mean_F1"].as_f64().unwrap_or(f64::NAN)
            );
        }
    }
    Ok(())
}
