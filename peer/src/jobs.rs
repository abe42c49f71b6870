//! Adapters from a kernel's plan to the grid's kernel-agnostic [`Job`]: the chunk
//! list, each chunk's cost in work units, the calibration chunk, the blobs to put in
//! the store, and what the progress bar counts.

use std::ops::Range;
use std::path::PathBuf;

use idlegrid_kernels::change::{self, ChangePlan};
use idlegrid_kernels::video::{self, VideoPlan};
use idlegrid_kernels::{noop, KernelError};
use idlegrid_protocol::{Cid, TaskSpec};

use crate::grid::{ChunkList, Job};

/// The blobs a planned job needs in the store before it runs.
pub enum JobBlob {
    /// Bytes made by the planner (change: tables and bands).
    Bytes(Vec<u8>),
    /// A user's file, served from where it is (video frames).
    File(PathBuf),
}

/// Work units of a change chunk: pixels of its extended band times passes over them.
pub fn change_cost(spec: &TaskSpec) -> u64 {
    match change::chunk::band_params(spec) {
        Ok(p) => {
            let rows = u64::from(p.ext_end.saturating_sub(p.ext_start));
            let passes = u64::from(p.anneal_sweeps) + u64::from(p.icm_sweeps) + 1;
            rows * u64::from(p.width) * passes
        }
        Err(_) => 1,
    }
}

/// A nonce for this job's calibration chunk.
///
/// Each job benchmarks peers with its own variant of the kernel's calibration chunk:
/// the same inputs and the same work, but another RNG seed (change) or segment index
/// (video), hence another chunk id. A worker remembers the chunks it finished and
/// answers a repeated one from memory in one round trip; with one fixed calibration
/// chunk, every job after a worker's first would score it by that round trip alone
/// (scores 3-4x too high were seen) and load it accordingly. The calibration's output
/// is never used, so the nonce changes nothing a job produces.
fn calibration_nonce() -> u64 {
    rand::random()
}

/// The change calibration chunk with `seed` (the fixed chunk if it cannot be re-made,
/// which only a broken build could cause).
fn reseed_change(spec: TaskSpec, seed: u64) -> TaskSpec {
    let Ok(mut params) = change::chunk::band_params(&spec) else {
        return spec;
    };
    params.seed = seed;
    match idlegrid_protocol::encode(&params) {
        Ok(bytes) => TaskSpec {
            params: bytes,
            ..spec
        },
        Err(_) => spec,
    }
}

/// The video calibration chunk as segment `segment` (see [`calibration_nonce`]).
fn renumber_video(spec: TaskSpec, segment: u32) -> TaskSpec {
    let Ok(mut params) = video::SegmentParams::from_spec(&spec) else {
        return spec;
    };
    params.segment = segment;
    match params.to_bytes() {
        Ok(bytes) => TaskSpec {
            params: bytes,
            ..spec
        },
        Err(_) => spec,
    }
}

/// The grid job of a planned change detection, with the blobs it needs (the plan's
/// tables and bands, and the calibration chunk's inputs).
pub fn change_job(plan: &ChangePlan) -> (Job, Vec<JobBlob>) {
    let (calibration, calibration_blobs) = change::calibration_task();
    let calibration = reseed_change(calibration, calibration_nonce());
    let mut blobs: Vec<JobBlob> = plan
        .blobs
        .iter()
        .map(|(_, bytes)| JobBlob::Bytes(bytes.clone()))
        .collect();
    blobs.extend(
        calibration_blobs
            .into_iter()
            .map(|(_, bytes)| JobBlob::Bytes(bytes)),
    );
    let job = Job {
        kernel: change::KERNEL.to_string(),
        kernel_version: change::VERSION,
        chunks: ChunkList::listed(
            plan.chunks.clone(),
            plan.chunks.iter().map(change_cost).collect(),
            plan.bands.iter().map(|(a, b)| u64::from(b - a)).collect(),
        ),
        calibration_cost: change_cost(&calibration),
        calibration,
        unit: "rows",
    };
    (job, blobs)
}

/// Work units of a video chunk: pixels encoded (frames × width × height).
pub fn video_cost(spec: &TaskSpec) -> u64 {
    match video::SegmentParams::from_spec(spec) {
        Ok(p) => p.frame_bytes.len() as u64 * u64::from(p.width) * u64::from(p.height),
        Err(_) => 1,
    }
}

/// The grid job of a planned video: the frame files are served from where they are
/// (file-backed blobs), the calibration chunk's frames from memory.
pub fn video_job(plan: &VideoPlan) -> Result<(Job, Vec<JobBlob>), KernelError> {
    let (calibration, calibration_blobs) = video::calibration_task()?;
    let calibration = renumber_video(calibration, calibration_nonce() as u32);
    let mut blobs: Vec<JobBlob> = plan
        .blobs()
        .into_iter()
        .map(|(_, path)| JobBlob::File(path))
        .collect();
    blobs.extend(calibration_blobs.into_iter().map(JobBlob::Bytes));
    let specs: Vec<TaskSpec> = plan.chunks.iter().map(|c| c.spec.clone()).collect();
    let costs = specs.iter().map(video_cost).collect();
    let frames = plan
        .chunks
        .iter()
        .map(|c| (c.frames.end - c.frames.start) as u64)
        .collect();
    let job = Job {
        kernel: video::NAME.to_string(),
        kernel_version: video::VERSION,
        chunks: ChunkList::listed(specs, costs, frames),
        calibration_cost: video_cost(&calibration),
        calibration,
        unit: "frames",
    };
    Ok((job, blobs))
}

/// A job of `noop` chunks numbered `ids`, each naming `inputs`, their specs made as
/// they are needed: what measures the grid's own cost per chunk (benchmarks, tests of
/// scale). No blobs besides `inputs`, which must be in the store.
pub fn noop_job(ids: Range<u64>, inputs: Vec<Cid>) -> Job {
    let first = ids.start;
    let len = ids.end.saturating_sub(ids.start) as usize;
    Job {
        kernel: noop::NAME.into(),
        kernel_version: noop::VERSION,
        chunks: ChunkList::made(len, 1, 1, move |i| {
            noop::task(first + i as u64, inputs.clone())
        }),
        calibration: noop::task(u64::MAX, Vec::new()),
        calibration_cost: 1,
        unit: "chunks",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_job_benchmarks_with_a_new_chunk_of_the_same_work() {
        let (fixed, blobs) = change::calibration_task();
        let a = reseed_change(fixed.clone(), 1);
        let b = reseed_change(fixed.clone(), 2);
        assert_ne!(a.id(), b.id());
        assert_eq!(a.inputs, fixed.inputs);
        assert_eq!(change_cost(&a), change_cost(&fixed));
        let inputs: Vec<Vec<u8>> = blobs.into_iter().map(|(_, bytes)| bytes).collect();
        assert!(idlegrid_kernels::run(&a, &inputs).is_ok());

        let (fixed, frames) = video::calibration_task().expect("video calibration");
        let a = renumber_video(fixed.clone(), 1);
        let b = renumber_video(fixed.clone(), 2);
        assert_ne!(a.id(), b.id());
        assert_eq!(a.inputs, fixed.inputs);
        assert_eq!(video_cost(&a), video_cost(&fixed));
        assert!(idlegrid_kernels::run(&a, &frames).is_ok());
    }
}
