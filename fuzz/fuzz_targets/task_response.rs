//! `/idlegrid/task/1` responses, as a submitter reads them from a worker.
#![no_main]

use idlegrid_protocol::TaskResponse;
use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let _ = common::decode_and_round_trip::<TaskResponse>(data);
});
