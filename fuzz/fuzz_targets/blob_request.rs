//! `/idlegrid/blob/1` requests, as any peer reads them.
#![no_main]

use idlegrid_protocol::BlobRequest;
use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let _ = common::decode_and_round_trip::<BlobRequest>(data);
});
