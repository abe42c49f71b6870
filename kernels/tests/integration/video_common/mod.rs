//! Helpers shared by the video kernel's integration tests: generated frame folders,
//! local and "distributed" runs of a plan, reading an MP4 back, and ffprobe/ffmpeg.

#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use idlegrid_kernels::video::{self, decoder, Assembler, Fps, VideoPlan, VideoSettings};
use idlegrid_protocol::Cid;
use rayon::prelude::*;

/// A fresh temporary folder with `count` demo frames of `w`x`h`.
pub fn frames(count: u32, w: u32, h: u32) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let frames = dir.path().join("frames");
    video::write_sample_frames(&frames, count, w, h).unwrap();
    (dir, frames)
}

pub fn settings(segment_frames: u32) -> VideoSettings {
    VideoSettings {
        qp: 22,
        fps: Fps::default(),
        segment_frames,
    }
}

/// Encodes every chunk from the frame files on a pool of `threads` and assembles.
pub fn run_local(plan: &VideoPlan, threads: usize, out: &Path) {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap();
    let segments: Vec<Vec<u8>> = pool.install(|| {
        plan.chunks
            .par_iter()
            .map(|c| video::encode_segment_files(plan, c, &|| {}).unwrap())
            .collect()
    });
    let mut asm = Assembler::create(out, plan.assembly()).unwrap();
    for (i, s) in segments.iter().enumerate() {
        asm.push(i as u32, s).unwrap();
    }
    asm.finish().unwrap();
}

/// Runs every chunk as a remote peer would: blobs fetched by Cid from the plan's
/// file-backed blob list, `kernels::run` on each, chunks in reverse order; returns the
/// segments by index.
pub fn run_as_peers(plan: &VideoPlan) -> Vec<Vec<u8>> {
    let store: HashMap<Cid, PathBuf> = plan.blobs().into_iter().collect();
    let mut segments = vec![Vec::new(); plan.chunks.len()];
    for chunk in plan.chunks.iter().rev() {
        idlegrid_kernels::validate(&chunk.spec).unwrap();
        let blobs: Vec<Vec<u8>> = chunk
            .spec
            .inputs
            .iter()
            .map(|cid| std::fs::read(&store[cid]).unwrap())
            .collect();
        segments[chunk.index as usize] = idlegrid_kernels::run(&chunk.spec, &blobs).unwrap();
    }
    segments
}

/// The H.264 samples of an MP4's first track, converted back to Annex B.
pub fn mp4_to_annexb(path: &Path) -> (Vec<u8>, u64, u32) {
    let file = std::fs::File::open(path).unwrap();
    let size = file.metadata().unwrap().len();
    let mut reader = mp4::Mp4Reader::read_header(std::io::BufReader::new(file), size).unwrap();
    let track_id = *reader.tracks().keys().next().unwrap();
    let track = &reader.tracks()[&track_id];
    let (sps, pps) = (
        track.sequence_parameter_set().unwrap().to_vec(),
        track.picture_parameter_set().unwrap().to_vec(),
    );
    let timescale = track.timescale();
    let count = reader.sample_count(track_id).unwrap();
    let mut out = Vec::new();
    for nal in [&sps, &pps] {
        out.extend_from_slice(&[0, 0, 0, 1]);
        out.extend_from_slice(nal);
    }
    let mut durations = 0u64;
    for id in 1..=count {
        let sample = reader.read_sample(track_id, id).unwrap().unwrap();
        durations += u64::from(sample.duration);
        let mut rest = &sample.bytes[..];
        while rest.len() >= 4 {
            let len = u32::from_be_bytes(rest[..4].try_into().unwrap()) as usize;
            out.extend_from_slice(&[0, 0, 0, 1]);
            out.extend_from_slice(&rest[4..4 + len]);
            rest = &rest[4 + len..];
        }
        assert!(rest.is_empty(), "sample {id} has trailing bytes");
    }
    (out, durations, timescale)
}

/// Decodes an Annex B stream in Rust; returns the pictures' sizes.
pub fn decode_count(stream: &[u8]) -> (u64, (u32, u32)) {
    let mut size = (0, 0);
    let n = decoder::decode_annexb(stream, |p| {
        size = (p.width, p.height);
        Ok(())
    })
    .unwrap();
    (n, size)
}

fn tool(name: &str) -> Command {
    // CI installs ffmpeg (which brings ffprobe); a missing tool fails the test loudly.
    let probe = Command::new(name).arg("-version").output();
    assert!(
        probe.is_ok_and(|o| o.status.success()),
        "{name} is needed by this test: apt-get install ffmpeg"
    );
    Command::new(name)
}

/// (frame count by decoding, width, height) per ffprobe.
pub fn ffprobe(path: &Path) -> (u64, u32, u32) {
    let out = tool("ffprobe")
        .args([
            "-v",
            "error",
            "-count_frames",
            "-select_streams",
            "v:0",
            "-show_entries",
            "stream=nb_read_frames,width,height",
            "-of",
            "csv=p=0",
        ])
        .arg(path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ffprobe failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let fields: Vec<&str> = text.trim().split(',').collect();
    assert_eq!(fields.len(), 3, "ffprobe said {text:?}");
    (
        fields[2].parse().unwrap(),
        fields[0].parse().unwrap(),
        fields[1].parse().unwrap(),
    )
}

/// Decodes the whole file with ffmpeg; panics with ffmpeg's messages on any error.
pub fn ffmpeg_decodes_cleanly(path: &Path) {
    let out = tool("ffmpeg")
        .args(["-v", "error", "-xerror", "-i"])
        .arg(path)
        .args(["-f", "null", "-"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stderr.trim().is_empty(),
        "ffmpeg decoding {} reported: {stderr}",
        path.display()
    );
}
