//! Hostile bytes never make a decoder allocate beyond the limits: a counting global
//! allocator records the largest single allocation and the peak of live bytes while
//! each wire type decodes arbitrary input, and both must stay within a small multiple
//! of the input's length (a decoder may copy what it was given, never what a length
//! prefix merely claims), and so within the message's size limit.
//!
//! Its own test binary because the global allocator is process-wide; only the measuring
//! thread's allocations are counted, so tests running in parallel cannot blur the figures.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use idlegrid_protocol::{limits, BlobRequest, BlobResponse, TaskRequest, TaskResponse, TaskSpec};
use proptest::prelude::*;

struct Counting;

// Only the measuring thread's allocations count: the test harness runs other tests (and
// proptest generates their inputs) on other threads at the same time. A decoder runs on
// the calling thread and frees nothing it did not allocate, so a per-thread balance
// measured from zero is exact.
thread_local! {
    static TRACKING: Cell<bool> = const { Cell::new(false) };
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

fn tracking() -> bool {
    TRACKING.try_with(Cell::get).unwrap_or(false)
}

fn grow(bytes: usize) {
    let live = LIVE.with(|l| {
        l.set(l.get() + bytes as isize);
        l.get()
    });
    PEAK.with(|p| p.set(p.get().max(live)));
}

fn shrink(bytes: usize) {
    LIVE.with(|l| l.set(l.get() - bytes as isize));
}

fn largest(bytes: usize) {
    LARGEST.with(|l| l.set(l.get().max(bytes)));
}

// SAFETY: forwards every call to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if tracking() {
            grow(layout.size());
            largest(layout.size());
        }
        // SAFETY: same layout contract as our caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if tracking() {
            shrink(layout.size());
        }
        // SAFETY: `ptr` came from `alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if tracking() {
            if new_size > layout.size() {
                grow(new_size - layout.size());
            } else {
                shrink(layout.size() - new_size);
            }
            largest(new_size);
        }
        // SAFETY: forwarded unchanged.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// (largest single allocation, peak live bytes above the start) while `f` runs on this
/// thread.
fn measure(f: impl FnOnce()) -> (usize, usize) {
    LIVE.with(|l| l.set(0));
    PEAK.with(|p| p.set(0));
    LARGEST.with(|l| l.set(0));
    TRACKING.with(|t| t.set(true));
    f();
    TRACKING.with(|t| t.set(false));
    (
        LARGEST.with(Cell::get),
        PEAK.with(Cell::get).max(0) as usize,
    )
}

/// Decodes `bytes` as every wire type (and validates what decodes).
fn decode_all(bytes: &[u8]) {
    use idlegrid_protocol::decode;
    let _ = decode::<TaskRequest>(bytes, limits::MAX_TASK_REQUEST).map(|m| m.validate());
    let _ = decode::<TaskResponse>(bytes, limits::MAX_TASK_RESPONSE).map(|m| m.validate());
    let _ = decode::<BlobRequest>(bytes, limits::MAX_BLOB_REQUEST).map(|m| m.validate());
    let _ = decode::<BlobResponse>(bytes, limits::MAX_BLOB_RESPONSE).map(|m| m.validate());
    let _ = decode::<TaskSpec>(bytes, limits::MAX_TASK_REQUEST).map(|m| m.validate());
}

/// What a decoder may allocate for `len` input bytes: a few copies of the input plus
/// small fixed overhead (collections of 32-byte Cids grow by doubling).
fn allowance(len: usize) -> usize {
    8 * len + 16 * 1024
}

/// A CBOR head of major type `major` declaring `len` (8-byte argument).
fn head(major: u8, len: u64) -> Vec<u8> {
    let mut b = vec![(major << 5) | 27];
    b.extend_from_slice(&len.to_be_bytes());
    b
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_bytes_allocate_within_the_input_size(
        bytes in proptest::collection::vec(any::<u8>(), 0..4096)
    ) {
        let (largest, peak) = measure(|| decode_all(&bytes));
        prop_assert!(peak <= allowance(bytes.len()), "peak {peak} for {} bytes", bytes.len());
        prop_assert!(largest <= allowance(bytes.len()));
    }

    /// Valid messages with a huge length claimed somewhere inside: byte strings,
    /// text strings, arrays and maps, at a random position.
    #[test]
    fn claimed_lengths_are_not_allocated(
        major in prop_oneof![Just(2u8), Just(3u8), Just(4u8), Just(5u8)],
        claimed in 1u64 << 16..1u64 << 62,
        at in 0usize..64,
        tail in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        let spec = TaskSpec {
            kernel: "change".into(),
            kernel_version: 1,
            params: vec![7; 40],
            inputs: vec![idlegrid_protocol::Cid::of(b"a")],
        };
        let mut bytes = idlegrid_protocol::encode(&TaskRequest::Run { spec }).unwrap();
        let at = at.min(bytes.len());
        bytes.truncate(at);
        bytes.extend(head(major, claimed));
        bytes.extend(&tail);
        let (largest, peak) = measure(|| decode_all(&bytes));
        prop_assert!(peak <= allowance(bytes.len()), "peak {peak} for {} bytes", bytes.len());
        prop_assert!(largest <= allowance(bytes.len()));
    }
}

/// Input over a message's limit is refused before any parsing, whatever it holds.
#[test]
fn oversized_input_allocates_nothing() {
    let big = vec![0x5a; limits::MAX_BLOB_RESPONSE + 1];
    let (largest, peak) = measure(|| {
        let r = idlegrid_protocol::decode::<BlobResponse>(&big, limits::MAX_BLOB_RESPONSE);
        assert!(r.is_err());
    });
    // The error message is the only allocation.
    assert!(
        largest < 1024 && peak < 1024,
        "largest {largest}, peak {peak}"
    );
}
