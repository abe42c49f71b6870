//! Adapters from a kernel's plan to the grid's kernel-agnostic [`Job`]: the chunk
//! list, each chunk's cost in work units, the calibration chunk, the blobs to put in
//! the store, and what the progress bar counts.

use idlegrid_kernels::change::{self, ChangePlan};
use idlegrid_kernels::video::{self, VideoPlan};
use idlegrid_kernels::KernelError;
use idlegrid_protocol::TaskSpec;

use crate::commands::common::JobBlob;
use crate::grid::Job;

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

/// The grid job of a planned change detection, with the blobs it needs (the plan's
/// tables and bands, and the calibration chunk's inputs).
pub fn change_job(plan: &ChangePlan) -> (Job, Vec<JobBlob>) {
    let (calibration, calibration_blobs) = change::calibration_task();
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
        costs: plan.chunks.iter().map(change_cost).collect(),
        calibration_cost: change_cost(&calibration),
        calibration,
        chunks: plan.chunks.clone(),
        unit: "rows",
        units: plan.bands.iter().map(|(a, b)| u64::from(b - a)).collect(),
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
    let mut blobs: Vec<JobBlob> = plan
        .blobs()
        .into_iter()
        .map(|(_, path)| JobBlob::File(path))
        .collect();
    blobs.extend(calibration_blobs.into_iter().map(JobBlob::Bytes));
    let chunks: Vec<TaskSpec> = plan.chunks.iter().map(|c| c.spec.clone()).collect();
    let job = Job {
        kernel: video::NAME.to_string(),
        kernel_version: video::VERSION,
        costs: chunks.iter().map(video_cost).collect(),
        calibration_cost: video_cost(&calibration),
        calibration,
        unit: "frames",
        units: plan
            .chunks
            .iter()
            .map(|c| (c.frames.end - c.frames.start) as u64)
            .collect(),
        chunks,
    };
    Ok((job, blobs))
}
