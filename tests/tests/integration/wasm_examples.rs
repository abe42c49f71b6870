//! The repository's WebAssembly examples (examples/wasm), built from their C sources
//! with Debian's clang, wasi-libc and wasm-ld (scripts/test.sh installs them), run on
//! the grid with `idlegrid run`: the ray tracer renders an animation whose frames the
//! video kernel encodes into an MP4, and the statistics job joins one CSV line per
//! file. The renderer compiled natively writes the same PNG bytes as its wasm build.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::*;
use idlegrid::commands::common::store_blobs;
use idlegrid::commands::run::{self, Outputs, RunPlan, RunSpec};
use idlegrid::grid::{self, GridConfig};
use idlegrid::worker::WorkerConfig;
use idlegrid_kernels::wasm::WasmParams;

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/wasm")
}

/// `clang ARGS`, failing with the packages to install when the toolchain is missing.
fn clang(args: &[&str]) {
    let status = Command::new("clang").args(args).status().unwrap_or_else(|e| {
        panic!("clang not found ({e}): install clang lld wasi-libc libclang-rt-dev-wasm32 (scripts/test.sh --packages)")
    });
    assert!(
        status.success(),
        "clang {args:?} failed: are lld, wasi-libc and libclang-rt-dev-wasm32 installed? (scripts/test.sh --packages)"
    );
}

/// Builds examples/wasm/NAME/NAME.c to wasm in `dir`.
fn build(name: &str, dir: &Path) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let source = examples().join(format!("{name}/{name}.c"));
    let out = dir.join(format!("{name}.wasm"));
    clang(&[
        "--target=wasm32-wasi",
        "-O2",
        "-ffp-contract=off",
        source.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    out
}

async fn grid_results(submitter: &idlegrid::node::Node, plan: &RunPlan) -> Vec<Vec<u8>> {
    let (job, blobs) = run::grid_job(plan).unwrap();
    let _resident = store_blobs(submitter, blobs).await.unwrap();
    let config = GridConfig {
        min_peers: 2,
        show_progress: false,
        ..GridConfig::default()
    };
    let outcome = tokio::time::timeout(TIMEOUT, grid::run_job(submitter, job, config))
        .await
        .expect("job timed out")
        .expect("job succeeds");
    fetch_results(&outcome.results)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn wasm_examples_render_an_animation_into_an_mp4_and_join_file_statistics() {
    let dir = temp_dir("wasm-examples");
    let render = build("render", &dir);
    let stats = build("stats", &dir);
    let (_workers, addrs) = workers(2, |_| WorkerConfig::default()).await;
    let submitter = start(
        "wasm-examples-submitter",
        false,
        WorkerConfig::default(),
        addrs,
    )
    .await;

    // Six frames of 96x64, one chunk each, on the grid; then the frames to an MP4.
    let frames = dir.join("frames");
    let spec = RunSpec {
        module: render.clone(),
        inputs: Vec::new(),
        range: Some(0..6),
        args_template: "{i} {count} 96 64".into(),
        output: frames.join("frame_{i:05}.png").display().to_string(),
        batch: 1,
        join: false,
        budgets: WasmParams::default(),
    };
    let plan = run::plan_run(&spec).unwrap();
    let local = run::execute_local(&plan, 2).unwrap();
    let remote = grid_results(&submitter, &plan).await;
    assert_eq!(
        remote, local,
        "frames rendered on the grid differ from local ones"
    );
    run::write_outputs(&plan, |i| Ok(remote[i].clone())).unwrap();
    assert!(
        matches!(plan.outputs, Outputs::Each { .. }),
        "one file per frame"
    );
    assert_eq!(plan.output_path(5).unwrap(), frames.join("frame_00005.png"));
    let frame = image::open(plan.output_path(2).unwrap()).expect("a PNG the image crate reads");
    assert_eq!((frame.width(), frame.height()), (96, 64));

    // The same C compiled natively writes the same bytes.
    let native = dir.join("render-native");
    clang(&[
        "-O2",
        "-ffp-contract=off",
        examples().join("render/render.c").to_str().unwrap(),
        "-o",
        native.to_str().unwrap(),
        "-lm",
    ]);
    let out = Command::new(&native)
        .args(["2", "6", "96", "64"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(
        out.stdout,
        std::fs::read(plan.output_path(2).unwrap()).unwrap(),
        "native and wasm frames differ"
    );

    use idlegrid_kernels::video::{self, VideoSettings};
    let settings = VideoSettings {
        segment_frames: 3,
        ..VideoSettings::default()
    };
    let video_plan = video::plan(std::slice::from_ref(&frames), settings)
        .expect("the video kernel reads the frames");
    assert_eq!(video_plan.frames.len(), 6);
    let segments: Vec<PathBuf> = video_plan
        .chunks
        .iter()
        .map(|chunk| {
            let bytes = video::encode_segment_files(&video_plan, chunk, &|| {}).unwrap();
            let path = dir.join(format!("segment{}.h264", chunk.index));
            std::fs::write(&path, bytes).unwrap();
            path
        })
        .collect();
    let mp4 = dir.join("animation.mp4");
    let report = video::assemble_files(&video_plan.assembly(), &segments, &mp4).unwrap();
    assert_eq!(report.frames, 6);

    // Statistics of the kernels' fixture images, joined into one CSV in input order.
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../kernels/tests/fixtures");
    let inputs: Vec<PathBuf> = ["synth_t1.png", "synth_t2.png", "synth_gt.png"]
        .iter()
        .map(|f| fixtures.join(f))
        .collect();
    let spec = RunSpec {
        module: stats,
        inputs: inputs.clone(),
        range: None,
        args_template: "{name}".into(),
        output: dir.join("stats/all.csv").display().to_string(),
        batch: 2,
        join: true,
        budgets: WasmParams::default(),
    };
    let plan = run::plan_run(&spec).unwrap();
    assert_eq!(plan.runs.chunk_count(), 2, "3 files in batches of 2");
    let local = run::execute_local(&plan, 1).unwrap();
    let remote = grid_results(&submitter, &plan).await;
    assert_eq!(remote, local);
    run::write_outputs(&plan, |i| Ok(remote[i].clone())).unwrap();
    let csv = std::fs::read_to_string(dir.join("stats/all.csv")).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 3, "{csv}");
    for (line, file) in lines.iter().zip(&inputs) {
        let name = file.file_name().unwrap().to_str().unwrap();
        let len = std::fs::metadata(file).unwrap().len();
        assert!(line.starts_with(&format!("{name},{len},")), "{line}");
    }
}
