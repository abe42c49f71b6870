//! TaskSpec validation: the structural checks of the protocol crate and every kernel's
//! parameter decoder and checks (`idlegrid_kernels::validate`).
//!
//! The first byte picks how the rest is read: as a whole CBOR `TaskSpec`, or as the
//! `params` of a spec for one of the registered kernels (the fastest way to reach each
//! kernel's own parameter decoder, which a whole random spec rarely names correctly).
#![no_main]

use idlegrid_protocol::{limits, Cid, TaskSpec};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let kernels = idlegrid_kernels::supported();
    let spec = match pick as usize % (kernels.len() + 1) {
        0 => match idlegrid_protocol::decode::<TaskSpec>(rest, limits::MAX_TASK_REQUEST) {
            Ok(spec) => spec,
            Err(_) => return,
        },
        k => {
            let (name, version) = kernels[k - 1].clone();
            // The input count matters to the video kernel (one per frame); take it from
            // the top bits of the selector byte.
            let inputs = (0..(pick >> 4) as usize)
                .map(|i| Cid::of(&[i as u8]))
                .collect();
            TaskSpec {
                kernel: name,
                kernel_version: version,
                params: rest.to_vec(),
                inputs,
            }
        }
    };
    let structural = spec.validate();
    let kernel = idlegrid_kernels::validate(&spec);
    // The kernel check includes the structural one.
    if structural.is_err() {
        assert!(
            kernel.is_err(),
            "kernel accepted a structurally invalid spec"
        );
    }
});
