//! `/idlegrid/task/1` requests, as a worker reads them from any peer: the bounded
//! decoder, then the kernel's own validation of a `Run`'s spec (what a worker checks
//! before it fetches any input).
#![no_main]

use idlegrid_protocol::TaskRequest;
use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    if let Some(TaskRequest::Run { spec }) = common::decode_and_round_trip::<TaskRequest>(data) {
        let _ = idlegrid_kernels::validate(&spec);
        let _ = spec.id();
    }
});
