//! `/idlegrid/blob/1` responses, as a peer fetching an input or a result reads them.
#![no_main]

use idlegrid_protocol::BlobResponse;
use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let _ = common::decode_and_round_trip::<BlobResponse>(data);
});
