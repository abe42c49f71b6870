//! The `noop` kernel: does no work on purpose. Its output is the blake3 hash of its
//! inputs (deterministic, 32 bytes), so a job of `noop` chunks measures the grid's own
//! per-chunk overhead and blob throughput, with the kernel's cost taken out.
//!
//! It accepts any inputs, so a worker that ran it for anyone would store and serve
//! whatever bytes a peer planted: workers run it only when their configuration says so
//! (tests and benchmarks).

use idlegrid_protocol::TaskSpec;

use crate::KernelError;

pub const NAME: &str = "noop";
pub const VERSION: u32 = 1;

/// Largest input a noop chunk may name: what the tests and benchmarks need (a few
/// pieces, to exercise multi-piece fetches), far below a real kernel's inputs.
pub const MAX_INPUT: u64 = 16 * 1024 * 1024;

/// The length of every noop result (a blake3 hash).
pub const RESULT_LEN: u64 = 32;

/// A noop chunk carries no parameters beyond an optional tag (so many distinct chunks
/// can be made over the same inputs).
pub fn validate(spec: &TaskSpec) -> Result<(), KernelError> {
    if spec.params.len() > 64 {
        return Err(KernelError::InvalidParams(format!(
            "noop takes at most a 64-byte tag, got {} bytes",
            spec.params.len()
        )));
    }
    Ok(())
}

/// blake3 over the tag and every input, in order.
pub fn run(spec: &TaskSpec, inputs: &[&[u8]]) -> Result<Vec<u8>, KernelError> {
    let mut hasher = blake3::Hasher::new();
    hasher.update(&spec.params);
    for input in inputs {
        hasher.update(&(input.len() as u64).to_le_bytes());
        hasher.update(input);
    }
    Ok(hasher.finalize().as_bytes().to_vec())
}

/// A noop result is one blake3 hash.
pub fn check_result(result: &[u8]) -> Result<(), String> {
    if result.len() as u64 != RESULT_LEN {
        return Err(format!(
            "{} bytes, a noop result is {RESULT_LEN}",
            result.len()
        ));
    }
    Ok(())
}

/// A noop chunk named by `tag` over the given input blobs.
pub fn task(tag: u64, inputs: Vec<idlegrid_protocol::Cid>) -> TaskSpec {
    TaskSpec {
        kernel: NAME.into(),
        kernel_version: VERSION,
        params: tag.to_le_bytes().to_vec(),
        inputs,
    }
}
