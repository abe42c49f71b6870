//! Hostile bytes at every decoder a peer exposes, as property tests: whatever bytes
//! arrive, `decode_message` (the bounded, validating decoder every inbound message of
//! both protocols goes through) returns a value or an error, never panics; a value
//! that decodes re-encodes to itself; and any `Run` spec or kernel params that get
//! through go on to `idlegrid_kernels::validate` without panicking either. The
//! allocation bound is checked in protocol/tests/decode_allocations.rs; the same
//! targets run under libFuzzer in fuzz/.

use idlegrid::net::codec::{decode_message, WireMessage};
use idlegrid_protocol::{
    encode, BlobRequest, BlobResponse, Cid, TaskRequest, TaskResponse, TaskSpec,
};
use proptest::prelude::*;

fn round_trips<M: WireMessage + PartialEq + std::fmt::Debug>(bytes: &[u8]) -> Option<M> {
    let message = decode_message::<M>(bytes).ok()?;
    let again = decode_message::<M>(&encode(&message).expect("re-encode")).expect("re-decode");
    assert_eq!(again, message);
    Some(message)
}

fn all_decoders(bytes: &[u8]) {
    if let Some(TaskRequest::Run { spec }) = round_trips::<TaskRequest>(bytes) {
        let _ = idlegrid_kernels::validate(&spec);
    }
    let _ = round_trips::<TaskResponse>(bytes);
    let _ = round_trips::<BlobRequest>(bytes);
    let _ = round_trips::<BlobResponse>(bytes);
}

/// Real messages, to mutate: a change and a noop chunk and answers about them.
fn seeds() -> Vec<Vec<u8>> {
    let (change, _) = idlegrid_kernels::change::calibration_task();
    let noop = idlegrid_kernels::noop::task(1, vec![Cid::of(b"x")]);
    let c = change.id();
    vec![
        encode(&TaskRequest::Run {
            spec: change.clone(),
        })
        .unwrap(),
        encode(&TaskRequest::Run { spec: noop }).unwrap(),
        encode(&TaskRequest::Poll { chunk: c }).unwrap(),
        encode(&TaskResponse::Done {
            chunk: c,
            result: Cid::of(b"r"),
            len: 1,
            inline: vec![1].into(),
        })
        .unwrap(),
        encode(&BlobRequest {
            cid: c,
            offset: 3,
            len: 9,
        })
        .unwrap(),
        encode(&BlobResponse::Piece {
            total: 4,
            offset: 1,
            bytes: vec![1, 2, 3].into(),
        })
        .unwrap(),
    ]
}

proptest! {
    #[test]
    fn arbitrary_bytes_decode_or_fail_cleanly(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        all_decoders(&bytes);
    }

    /// Real messages with bytes flipped, cut or appended: deep into every decoder.
    #[test]
    fn mutated_messages_decode_or_fail_cleanly(
        which in 0usize..6,
        flips in proptest::collection::vec((any::<prop::sample::Index>(), 1u8..=255), 0..6),
        cut in any::<prop::sample::Index>(),
        extra in proptest::collection::vec(any::<u8>(), 0..16),
    ) {
        let mut bytes = seeds()[which].clone();
        for (at, x) in flips {
            let i = at.index(bytes.len());
            bytes[i] ^= x;
        }
        bytes.truncate(cut.index(bytes.len() + 1));
        bytes.extend(extra);
        all_decoders(&bytes);
    }

    /// Arbitrary params for every kernel this peer runs, with 0 to 3 inputs.
    #[test]
    fn arbitrary_kernel_params_are_validated_cleanly(
        kernel in 0usize..3,
        params in proptest::collection::vec(any::<u8>(), 0..512),
        inputs in 0usize..4,
    ) {
        let kernels = idlegrid_kernels::supported();
        let (name, version) = kernels[kernel % kernels.len()].clone();
        let spec = TaskSpec {
            kernel: name,
            kernel_version: version,
            params,
            inputs: (0..inputs).map(|i| Cid::of(&[i as u8])).collect(),
        };
        let _ = idlegrid_kernels::validate(&spec);
    }
}
