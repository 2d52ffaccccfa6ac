//! Decoding allocates at most in proportion to its input: a 120-byte input
//! that declares 2³²−1 horizon entries is refused without a large allocation
//! (spec §7). dhat's global allocator measures it, so this file is its own
//! test binary with a single test.
#![cfg(feature = "compute")]

use holdfast_compute::{Bytes, SnapshotError, StateSnapshot};

#[global_allocator]
static ALLOCATOR: dhat::Alloc = dhat::Alloc;

#[test]
fn huge_count_no_alloc() {
    let _profiler = dhat::Profiler::builder().testing().build();
    let mut bytes = vec![0u8; 120];
    bytes[..8].copy_from_slice(&StateSnapshot::MAGIC);
    bytes[8..10].copy_from_slice(&1u16.to_le_bytes());
    bytes[100..104].copy_from_slice(&u32::MAX.to_le_bytes());
    let input = Bytes::from(bytes);
    // Cloning a vector-backed `Bytes` allocates its shared header once; do
    // that outside the measured region.
    let shared = input.clone();

    let before = dhat::HeapStats::get();
    let refused = StateSnapshot::decode(shared);
    let copied = StateSnapshot::from_bytes(&input);
    let after = dhat::HeapStats::get();

    let expected = SnapshotError::Truncated {
        needed: 104 + 16 * u64::from(u32::MAX),
        available: 120,
    };
    assert_eq!(refused, Err(expected.clone()));
    assert_eq!(copied, Err(expected));
    assert_eq!(after.total_blocks - before.total_blocks, 0, "refusing allocated");
    assert_eq!(
        after.max_bytes, before.max_bytes,
        "the heap peak grew while refusing"
    );
}
