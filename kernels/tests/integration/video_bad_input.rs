//! Bad input to the video kernel: a user's broken frame folder gets one clear error
//! naming the file; a hostile or mistaken peer's chunk, blobs or segments get a
//! `KernelError`/`VideoError`, never a panic; a failed assembly leaves no file behind.

use std::path::{Path, PathBuf};

use crate::video_common::*;
use idlegrid_kernels::video::{
    self, nal, params::ENCODER_ID, sample, Assembler, AssemblyPlan, Fps, SegmentParams, VideoError,
};
use idlegrid_kernels::KernelError;
use idlegrid_protocol::{Cid, TaskSpec};
use proptest::prelude::*;

fn names(err: &VideoError, path: &Path) -> bool {
    err.to_string().contains(&path.display().to_string())
}

#[test]
fn video_empty_folder_and_missing_folder() {
    let dir = tempfile::tempdir().unwrap();
    let err = video::plan(&[dir.path().to_path_buf()], settings(8)).unwrap_err();
    assert!(matches!(err, VideoError::NoFrames { .. }), "{err}");
    assert!(names(&err, dir.path()), "{err}");
    let missing = dir.path().join("nope");
    let err = video::plan(std::slice::from_ref(&missing), settings(8)).unwrap_err();
    assert!(matches!(err, VideoError::NotFound(_)), "{err}");
    let pattern = dir.path().join("*.png");
    let err = video::plan(&[pattern], settings(8)).unwrap_err();
    assert!(matches!(err, VideoError::NoFrames { .. }), "{err}");
}

#[test]
fn video_unsupported_file_mixed_in_is_named() {
    let (_dir, frames) = frames(3, 32, 32);
    let stray = frames.join("notes.txt");
    std::fs::write(&stray, "hello").unwrap();
    // Hidden files and sub-folders are skipped, not errors.
    std::fs::write(frames.join(".DS_Store"), "x").unwrap();
    std::fs::create_dir(frames.join("thumbs")).unwrap();
    let err = video::plan(std::slice::from_ref(&frames), settings(8)).unwrap_err();
    assert!(matches!(err, VideoError::Unsupported(_)), "{err}");
    assert!(names(&err, &stray), "{err}");
    std::fs::remove_file(&stray).unwrap();
    assert_eq!(video::plan(&[frames], settings(8)).unwrap().frames.len(), 3);
}

#[test]
fn video_a_text_file_named_png_is_named() {
    let (_dir, frames) = frames(3, 32, 32);
    let fake = frames.join("frame_000001.png");
    std::fs::write(&fake, "not a png at all").unwrap();
    let err = video::plan(&[frames], settings(8)).unwrap_err();
    assert!(names(&err, &fake), "{err}");
}

#[test]
fn video_corrupt_frame_data_is_named_when_encoding() {
    // A valid header with broken image data passes planning (headers only) and is
    // caught by the worker; the local run names the file.
    let (_dir, frames) = frames(6, 64, 48);
    let victim = frames.join("frame_000004.png");
    let mut bytes = std::fs::read(&victim).unwrap();
    let keep = bytes.len() / 2;
    bytes.truncate(keep);
    std::fs::write(&victim, &bytes).unwrap();
    let plan = video::plan(&[frames], settings(4)).unwrap();
    let chunk = &plan.chunks[1];
    let err = video::encode_segment_files(&plan, chunk, &|| {}).unwrap_err();
    assert!(matches!(err, VideoError::Corrupt { .. }), "{err}");
    assert!(names(&err, &victim), "{err}");
    // On a peer, the same chunk fails as invalid input naming the frame number.
    let blobs: Vec<Vec<u8>> = plan
        .chunk_frames(chunk)
        .iter()
        .map(|f| std::fs::read(&f.path).unwrap())
        .collect();
    let err = idlegrid_kernels::run(&chunk.spec, &blobs).unwrap_err();
    assert!(matches!(err, KernelError::InvalidInput(_)), "{err}");
    assert!(err.to_string().contains("frame #4"), "{err}");
}

#[test]
fn video_unreadable_frame_is_named() {
    let (_dir, frames) = frames(3, 32, 32);
    let dangling = frames.join("frame_000001.png");
    std::fs::remove_file(&dangling).unwrap();
    std::os::unix::fs::symlink(frames.join("gone.png"), &dangling).unwrap();
    let err = video::plan(&[frames], settings(8)).unwrap_err();
    assert!(matches!(err, VideoError::Unreadable { .. }), "{err}");
    assert!(names(&err, &dangling), "{err}");
}

#[test]
fn video_a_frame_changed_after_planning_is_caught() {
    let (_dir, frames) = frames(4, 32, 32);
    let plan = video::plan(std::slice::from_ref(&frames), settings(4)).unwrap();
    let changed = frames.join("frame_000002.png");
    std::fs::write(&changed, sample::sample_png(99, 32, 32).unwrap()).unwrap();
    let err = video::encode_segment_files(&plan, &plan.chunks[0], &|| {}).unwrap_err();
    assert!(names(&err, &changed), "{err}");
    assert!(err.to_string().contains("planned"), "{err}");
}

#[test]
fn video_different_sizes_name_the_first_that_differs() {
    let (_dir, frames) = frames(8, 64, 48);
    // Frames 3 and 6 are of another size; natural order puts frame_3 first.
    let odd_one = frames.join("frame_000003.png");
    std::fs::write(&odd_one, sample::sample_png(3, 48, 48).unwrap()).unwrap();
    std::fs::write(
        frames.join("frame_000006.png"),
        sample::sample_png(6, 32, 32).unwrap(),
    )
    .unwrap();
    let err = video::plan(&[frames], settings(8)).unwrap_err();
    match &err {
        VideoError::SizeMismatch {
            path,
            width,
            height,
            want_width,
            want_height,
            ..
        } => {
            assert_eq!(path, &odd_one);
            assert_eq!(
                (*width, *height, *want_width, *want_height),
                (48, 48, 64, 48)
            );
        }
        other => panic!("wrong error: {other}"),
    }
    assert!(err.to_string().contains("frame_000000.png"), "{err}");
}

#[test]
fn video_glob_and_file_lists_are_naturally_sorted() {
    let dir = tempfile::tempdir().unwrap();
    for n in [10, 2, 1] {
        std::fs::write(
            dir.path().join(format!("shot_{n}.png")),
            sample::sample_png(n, 16, 16).unwrap(),
        )
        .unwrap();
    }
    std::fs::write(dir.path().join("other.txt"), "x").unwrap();
    let plan = video::plan(&[dir.path().join("shot_*.png")], settings(8)).unwrap();
    let names: Vec<String> = plan
        .frames
        .iter()
        .map(|f| f.path.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["shot_1.png", "shot_2.png", "shot_10.png"]);
    let files: Vec<PathBuf> = ["shot_10.png", "shot_1.png"]
        .iter()
        .map(|n| dir.path().join(n))
        .collect();
    let plan = video::plan(&files, settings(8)).unwrap();
    assert!(plan.frames[0].path.ends_with("shot_1.png"));
    let err = video::plan(&[dir.path().join("other.txt")], settings(8)).unwrap_err();
    assert!(matches!(err, VideoError::Unsupported(_)), "{err}");
}

/// A valid one-frame chunk of a 32x32 PNG, to be spoiled by each hostile case.
fn good_chunk() -> (TaskSpec, SegmentParams, Vec<Vec<u8>>) {
    let blob = sample::sample_png(0, 32, 32).unwrap();
    let params = SegmentParams {
        encoder: ENCODER_ID.into(),
        width: 32,
        height: 32,
        qp: 22,
        fps: Fps::default(),
        segment: 0,
        first_frame: 0,
        frame_bytes: vec![blob.len() as u64],
    };
    let spec = TaskSpec {
        kernel: video::NAME.into(),
        kernel_version: video::VERSION,
        params: params.to_bytes().unwrap(),
        inputs: vec![Cid::of(&blob)],
    };
    (spec, params, vec![blob])
}

fn with_params(spec: &TaskSpec, params: &SegmentParams) -> TaskSpec {
    TaskSpec {
        params: params.to_bytes().unwrap(),
        ..spec.clone()
    }
}

#[test]
fn video_hostile_chunks_are_refused_without_panicking() {
    let (spec, params, blobs) = good_chunk();
    assert!(idlegrid_kernels::run(&spec, &blobs).is_ok());

    let refused_params: Vec<SegmentParams> = vec![
        SegmentParams {
            encoder: "openh264-2.6.0/other".into(),
            ..params.clone()
        },
        SegmentParams {
            qp: 52,
            ..params.clone()
        },
        SegmentParams {
            width: 100_000,
            ..params.clone()
        },
        SegmentParams {
            frame_bytes: vec![],
            ..params.clone()
        },
        SegmentParams {
            frame_bytes: vec![u64::MAX],
            ..params.clone()
        },
    ];
    for bad in &refused_params {
        let spec = with_params(&spec, bad);
        assert!(
            matches!(
                idlegrid_kernels::validate(&spec),
                Err(KernelError::InvalidParams(_))
            ),
            "{bad:?} passed validation"
        );
        assert!(idlegrid_kernels::run(&spec, &blobs).is_err());
    }
    // Undecodable params.
    let garbage = TaskSpec {
        params: vec![0xff; 10],
        ..spec.clone()
    };
    assert!(idlegrid_kernels::validate(&garbage).is_err());

    // Blobs that do not match what the chunk declares.
    let other = sample::sample_png(1, 32, 32).unwrap();
    assert!(
        idlegrid_kernels::run(&spec, &[other]).is_err(),
        "wrong content"
    );
    assert!(
        idlegrid_kernels::run(&spec, &[] as &[Vec<u8>]).is_err(),
        "missing blob"
    );
    // A frame of another size than declared, with consistent size and Cid.
    let big = sample::sample_png(0, 48, 32).unwrap();
    let spec_big = TaskSpec {
        inputs: vec![Cid::of(&big)],
        params: SegmentParams {
            frame_bytes: vec![big.len() as u64],
            ..params.clone()
        }
        .to_bytes()
        .unwrap(),
        ..spec.clone()
    };
    let err = idlegrid_kernels::run(&spec_big, &[big]).unwrap_err();
    assert!(matches!(err, KernelError::InvalidInput(_)), "{err}");
    // Garbage and a GIF-looking header that is not an image, with matching Cids.
    for junk in [vec![0u8; 100], b"GIF89a\x20\x00\x20\x00junk".to_vec()] {
        let spec_junk = TaskSpec {
            inputs: vec![Cid::of(&junk)],
            params: SegmentParams {
                frame_bytes: vec![junk.len() as u64],
                ..params.clone()
            }
            .to_bytes()
            .unwrap(),
            ..spec.clone()
        };
        assert!(idlegrid_kernels::run(&spec_junk, &[junk]).is_err());
    }
}

fn segment(frames: u32, size: (u32, u32), qp: u8) -> Vec<u8> {
    let blobs: Vec<Vec<u8>> = (0..frames)
        .map(|t| sample::sample_png(t, size.0, size.1).unwrap())
        .collect();
    let params = SegmentParams {
        encoder: ENCODER_ID.into(),
        width: size.0,
        height: size.1,
        qp,
        fps: Fps::default(),
        segment: 0,
        first_frame: 0,
        frame_bytes: blobs.iter().map(|b| b.len() as u64).collect(),
    };
    let spec = TaskSpec {
        kernel: video::NAME.into(),
        kernel_version: video::VERSION,
        params: params.to_bytes().unwrap(),
        inputs: blobs.iter().map(|b| Cid::of(b)).collect(),
    };
    idlegrid_kernels::run(&spec, &blobs).unwrap()
}

fn plan_of(segment_frames: Vec<u32>) -> AssemblyPlan {
    AssemblyPlan {
        width: 64,
        height: 48,
        fps: Fps::default(),
        segment_frames,
    }
}

/// Runs a failing assembly and checks nothing is left in `dir` afterwards.
fn assert_refused_and_clean(dir: &Path, result: Result<(), VideoError>) {
    let err = result.expect_err("assembly should have failed");
    println!("refused: {err}");
    let left: Vec<_> = std::fs::read_dir(dir).unwrap().collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn video_assembly_refuses_bad_segments_and_leaves_nothing() {
    let a = segment(3, (64, 48), 22);
    let other_size = segment(3, (48, 64), 22);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.mp4");

    // Out of order.
    assert_refused_and_clean(dir.path(), {
        let mut asm = Assembler::create(&out, plan_of(vec![3, 3])).unwrap();
        asm.push(1, &a)
    });
    // Frame count other than planned.
    assert_refused_and_clean(dir.path(), {
        let mut asm = Assembler::create(&out, plan_of(vec![4])).unwrap();
        asm.push(0, &a)
    });
    // SPS differing from segment 0's.
    assert_refused_and_clean(dir.path(), {
        let mut asm = Assembler::create(&out, plan_of(vec![3, 3])).unwrap();
        asm.push(0, &a).and_then(|()| asm.push(1, &other_size))
    });
    // Not starting with SPS, PPS, IDR: the segment without its first picture.
    let pics = nal::pictures(nal::split(&a));
    let mut headless = Vec::new();
    for nal in pics[1..].iter().flatten() {
        headless.extend_from_slice(&[0, 0, 0, 1]);
        headless.extend_from_slice(nal.bytes);
    }
    assert_refused_and_clean(dir.path(), {
        let mut asm = Assembler::create(&out, plan_of(vec![2])).unwrap();
        asm.push(0, &headless)
    });
    // A segment missing at the end.
    assert_refused_and_clean(dir.path(), {
        let mut asm = Assembler::create(&out, plan_of(vec![3, 3])).unwrap();
        asm.push(0, &a).and_then(|()| asm.finish().map(drop))
    });
    // The good case still works in the same folder, also after a refused segment (a
    // peer's bad answer) was replaced by a good one.
    let mut asm = Assembler::create(&out, plan_of(vec![3, 3])).unwrap();
    asm.push(0, &a).unwrap();
    assert!(asm.push(1, &other_size).is_err());
    asm.push(1, &a).unwrap();
    let report = asm.finish().unwrap();
    assert_eq!(report.frames, 6);
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    assert_eq!(ffprobe(&out).0, 6);
}

#[test]
fn video_unwritable_output_fails_before_any_work() {
    let dir = tempfile::tempdir().unwrap();
    let blocker = dir.path().join("a-file");
    std::fs::write(&blocker, "x").unwrap();
    // The output's folder is a file: nothing can be created there.
    let err = Assembler::create(&blocker.join("out.mp4"), plan_of(vec![1])).err();
    assert!(matches!(err, Some(VideoError::Output { .. })), "{err:?}");
    let err = Assembler::create(&dir.path().join("missing/out.mp4"), plan_of(vec![1])).err();
    assert!(matches!(err, Some(VideoError::Output { .. })), "{err:?}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn video_random_segments_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = nal::check_segment(&bytes);
        let _ = video::decoder::decode_annexb(&bytes, |_| Ok(()));
        let dir = tempfile::tempdir().unwrap();
        let mut asm = Assembler::create(&dir.path().join("x.mp4"), plan_of(vec![1])).unwrap();
        let _ = asm.push(0, &bytes);
    }

    #[test]
    fn video_random_params_and_blobs_never_panic(
        params in proptest::collection::vec(any::<u8>(), 0..256),
        blob in proptest::collection::vec(any::<u8>(), 0..256),
    ) {
        let spec = TaskSpec {
            kernel: video::NAME.into(),
            kernel_version: video::VERSION,
            params,
            inputs: vec![Cid::of(&blob)],
        };
        let _ = idlegrid_kernels::validate(&spec);
        let _ = idlegrid_kernels::run(&spec, &[blob]);
    }

    #[test]
    fn video_mangled_real_segments_never_panic(flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8)) {
        let good = REAL_SEGMENT.with(|s| s.clone());
        let mut bytes = good;
        for (at, value) in flips {
            let i = at % bytes.len();
            bytes[i] = value;
        }
        let _ = nal::check_segment(&bytes);
        let _ = video::decoder::decode_annexb(&bytes, |_| Ok(()));
    }
}

thread_local! {
    static REAL_SEGMENT: Vec<u8> = segment(3, (64, 48), 22);
}
