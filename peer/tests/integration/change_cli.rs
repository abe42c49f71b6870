//! `idlegrid change` as a user runs it: the built binary on generated pairs in every
//! accepted format, and each kind of bad input giving one clear error that names the
//! file, a non-zero exit, no panic and nothing half-written. (The grid path of the
//! same command is tested with the grid.)

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use image::{DynamicImage, ImageFormat};

use crate::support::temp_dir;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_idlegrid"))
}

fn change(args: &[&Path]) -> Output {
    let mut c = bin();
    c.arg("change");
    for a in args {
        c.arg(a);
    }
    c.output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Only the files the test made are in `dir` (no temporaries left behind).
fn files_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn sample(dir: &Path, w: u32, h: u32) -> (PathBuf, PathBuf) {
    let pair = idlegrid_kernels::change::sample_pair(w, h, 1);
    let (a, b) = (dir.join("before.png"), dir.join("after.png"));
    pair.before.save(&a).unwrap();
    pair.after.save(&b).unwrap();
    (a, b)
}

/// Runs the detection and returns the mask pixels.
fn detect_ok(before: &Path, after: &Path, out: &Path) -> Vec<u8> {
    let o = bin()
        .args(["change", "--local", "-o"])
        .arg(out)
        .arg(before)
        .arg(after)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let summary = String::from_utf8_lossy(&o.stdout);
    assert!(
        summary.contains("% of") && summary.contains(" s"),
        "{summary}"
    );
    let mask = image::open(out).unwrap();
    assert!(
        matches!(mask, DynamicImage::ImageLuma8(_)),
        "mask is 8-bit grey"
    );
    let px = mask.into_luma8().into_raw();
    assert!(px.iter().all(|&v| v == 0 || v == 255));
    px
}

#[test]
fn detects_changes_and_writes_mask_and_overlay() {
    let dir = temp_dir("change-cli", "ok");
    let (a, b) = sample(&dir, 200, 150);
    let out = dir.join("mask.png");
    let overlay = dir.join("overlay.png");
    let o = bin()
        .args(["change", "--local", "--band-rows", "40", "-o"])
        .arg(&out)
        .arg("--overlay")
        .arg(&overlay)
        .arg(&a)
        .arg(&b)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let px = image::open(&out).unwrap().into_luma8();
    assert_eq!(px.dimensions(), (200, 150));
    assert!(px.pixels().any(|p| p.0[0] == 255));
    assert_eq!(
        image::open(&overlay).unwrap().into_rgb8().dimensions(),
        (200, 150)
    );
    // The same job in other band heights gives the same bytes.
    let whole = detect_ok(&a, &b, &dir.join("whole.png"));
    assert_eq!(whole, px.into_raw());
    assert_eq!(
        files_in(&dir),
        [
            "after.png",
            "before.png",
            "mask.png",
            "overlay.png",
            "whole.png"
        ]
    );
}

#[test]
fn reads_every_format_and_pixel_type() {
    let dir = temp_dir("change-cli", "formats");
    let pair = idlegrid_kernels::change::sample_pair(96, 64, 2);
    let reference = {
        let (a, b) = (dir.join("a.png"), dir.join("b.png"));
        pair.before.save(&a).unwrap();
        pair.after.save(&b).unwrap();
        detect_ok(&a, &b, &dir.join("ref.png"))
    };
    // Lossless formats and pixel types that keep the grey levels give the same mask.
    let (before, after) = (
        DynamicImage::ImageRgb8(pair.before.clone()),
        DynamicImage::ImageRgb8(pair.after.clone()),
    );
    for (tag, fmt, conv) in [
        ("bmp", ImageFormat::Bmp, 0),
        ("tiff", ImageFormat::Tiff, 0),
        ("webp", ImageFormat::WebP, 0),
        ("png", ImageFormat::Png, 1), // RGBA
        ("png", ImageFormat::Png, 2), // 16-bit RGB
    ] {
        let conv_img = |img: &DynamicImage| match conv {
            1 => DynamicImage::ImageRgba8(img.to_rgba8()),
            2 => DynamicImage::ImageRgb16(img.to_rgb16()),
            _ => img.clone(),
        };
        let a = dir.join(format!("a{conv}.{tag}"));
        let b = dir.join(format!("b{conv}.{tag}"));
        conv_img(&before).save_with_format(&a, fmt).unwrap();
        conv_img(&after).save_with_format(&b, fmt).unwrap();
        let got = detect_ok(&a, &b, &dir.join(format!("m{conv}{tag}.png")));
        assert_eq!(got, reference, "{tag} conv {conv}");
    }
    // Lossy or palette formats and grey images: readable, a mask of the right size.
    for (tag, fmt, grey) in [
        ("jpg", ImageFormat::Jpeg, false),
        ("gif", ImageFormat::Gif, false),
        ("png", ImageFormat::Png, true),
    ] {
        let conv = |img: &DynamicImage| {
            if grey {
                DynamicImage::ImageLuma8(img.to_luma8())
            } else if fmt == ImageFormat::Gif {
                DynamicImage::ImageRgba8(img.to_rgba8())
            } else {
                img.clone()
            }
        };
        let a = dir.join(format!("ga.{tag}"));
        let b = dir.join(format!("gb.{tag}"));
        conv(&before).save_with_format(&a, fmt).unwrap();
        conv(&after).save_with_format(&b, fmt).unwrap();
        let got = detect_ok(&a, &b, &dir.join(format!("g{tag}.png")));
        assert_eq!(got.len(), 96 * 64, "{tag}");
    }
}

/// A failed run: exit ≠ 0, one `error:` line naming `name` with `what`, no panic, no
/// output file and no temporary left.
fn assert_fails(o: &Output, name: &str, what: &str, dir: &Path, before: &[String]) {
    let err = stderr(o);
    assert!(!o.status.success(), "should fail: {err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(err.starts_with("error: "), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    assert!(err.contains(name), "names {name}: {err}");
    assert!(err.contains(what), "says {what}: {err}");
    assert_eq!(files_in(dir), before, "nothing written");
}

#[test]
fn bad_inputs_give_one_clear_error() {
    let dir = temp_dir("change-cli", "bad");
    let (a, b) = sample(&dir, 64, 48);
    let out = dir.join("mask.png");
    let small = dir.join("small.png");
    idlegrid_kernels::change::sample_pair(32, 48, 1)
        .after
        .save(&small)
        .unwrap();
    let text = dir.join("notes.png");
    std::fs::write(&text, "this is not an image\n").unwrap();
    let empty = dir.join("empty.png");
    std::fs::write(&empty, b"").unwrap();
    let huge = dir.join("huge.png");
    std::fs::write(&huge, png_header(100_000, 100_000)).unwrap();
    // Decoders refuse a 0-pixel image themselves, as an invalid image.
    let zero = dir.join("zero.png");
    std::fs::write(&zero, png_header(0, 10)).unwrap();
    let files = files_in(&dir);
    let missing = dir.join("missing.png");
    let cases: Vec<(Vec<&Path>, &Path, &str)> = vec![
        (vec![&missing, &b], &missing, "cannot open"),
        (vec![&a, &text], &text, "not a readable image"),
        (vec![&empty, &b], &empty, "not a readable image"),
        (vec![&a, &small], &small, "same size"),
        (vec![&huge, &b], &huge, "over the limit"),
        (vec![&zero, &b], &zero, "dimensions"),
    ];
    for (inputs, culprit, what) in cases {
        let mut c = bin();
        c.args(["change", "--local", "-o"]).arg(&out);
        for i in &inputs {
            c.arg(i);
        }
        let o = c.output().unwrap();
        let name = culprit.file_name().unwrap().to_string_lossy().into_owned();
        assert_fails(&o, &name, what, &dir, &files);
    }
    // An output in a folder that does not exist, and an output that is a folder.
    let nowhere = dir.join("no/such/dir/mask.png");
    let o = change(&[Path::new("--local"), Path::new("-o"), &nowhere, &a, &b]);
    assert_fails(&o, "mask.png", "cannot write", &dir, &files);
    let o = change(&[Path::new("--local"), Path::new("-o"), &dir, &a, &b]);
    assert_fails(&o, "cannot write", "directory", &dir, &files);
}

#[test]
fn bad_flags_are_refused() {
    let dir = temp_dir("change-cli", "flags");
    let (a, b) = sample(&dir, 32, 32);
    let out = dir.join("m.png");
    let files = files_in(&dir);
    for flags in [
        vec!["--beta", "99"],
        vec!["--neighbourhood", "4"],
        vec!["--method", "magic"],
        vec!["--band-rows", "0"],
    ] {
        let o = bin()
            .arg("change")
            .arg("--local")
            .args(&flags)
            .arg("-o")
            .arg(&out)
            .arg(&a)
            .arg(&b)
            .output()
            .unwrap();
        assert!(!o.status.success(), "{flags:?}");
        assert!(!stderr(&o).contains("panicked"));
        assert_eq!(files_in(&dir), files);
    }
}

/// A PNG signature and IHDR claiming `w × h` (no image data).
fn png_header(w: u32, h: u32) -> Vec<u8> {
    let mut v = vec![0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A];
    let mut chunk = b"IHDR".to_vec();
    chunk.extend_from_slice(&w.to_be_bytes());
    chunk.extend_from_slice(&h.to_be_bytes());
    chunk.extend_from_slice(&[8, 2, 0, 0, 0]);
    v.extend_from_slice(&13u32.to_be_bytes());
    v.extend_from_slice(&chunk);
    v.extend_from_slice(&crc32(&chunk).to_be_bytes());
    // An empty IDAT and IEND, so a decoder reads the header and stops at the data.
    for name in [b"IDAT", b"IEND"] {
        v.extend_from_slice(&0u32.to_be_bytes());
        v.extend_from_slice(name);
        v.extend_from_slice(&crc32(name).to_be_bytes());
    }
    v
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in bytes {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}
