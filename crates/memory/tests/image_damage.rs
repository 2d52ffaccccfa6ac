//! Damage to the MemoryManager's own header and bucket table, which no
//! checksum covers: each is judged from the bytes, refused with a typed error
//! or repaired on an accepted boot, and never becomes a wrong ledger, a
//! panic inside ic-stable-structures, or a bucket shared by two memories.

mod common;

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use common::{CutMemory, boot, image, layout, memory_from};
use holdfast_memory::stable_structures::memory_manager::MemoryManager;
use holdfast_memory::stable_structures::{Memory, VectorMemory};
use holdfast_memory::{
    AcceptAllPolicy, LedgerCommitError, LedgerStoreError, MemoryImageError, MemoryRuntime, RawMemoryClass,
    RuntimeBootstrapError, classify_raw_memory,
};

const PAGE: u64 = 65536;
/// Where the MemoryManager keeps the size of memory `id` (u64 LE).
fn size_field(id: u8) -> usize {
    40 + 8 * usize::from(id)
}
/// Where the MemoryManager keeps the owner of bucket `index`.
fn bucket_entry(index: u16) -> usize {
    2080 + usize::from(index)
}

/// Asserts a boot of `entries` over `bytes` is refused with the image error
/// `expected`, writing nothing; returns nothing else.
fn assert_boot_refused_as(bytes: &[u8], entries: &[(&str, u8)], expected: &MemoryImageError) {
    let memory = CutMemory::new(bytes, None);
    let err = MemoryRuntime::bootstrap(memory.clone(), layout(entries), &AcceptAllPolicy).unwrap_err();
    match err {
        RuntimeBootstrapError::StableCellLedger(LedgerStoreError::Image(found)) => {
            assert_eq!(&found, expected)
        }
        other => panic!("expected {expected:?}, got {other:?}"),
    }
    assert_eq!(memory.written.get(), 0, "a refused boot wrote");
}

#[test]
fn an_id0_size_read_as_zero_is_refused_instead_of_hiding_the_ledger() {
    // Beside stores that hold data, and alone (then ID 0's bucket is the last
    // one allocated, which is also what a cut grow leaves — but it holds the
    // ledger, so it is not mistaken for one).
    for entries in [&[("app.users.v1", 100)][..], &[][..]] {
        let memory = VectorMemory::default();
        let runtime = boot(&memory, entries).unwrap();
        if !entries.is_empty() {
            runtime.open("app.users.v1", 100).unwrap().grow(1);
        }
        drop(runtime);
        let mut bytes = image(&memory);
        bytes[size_field(0)] = 0;
        let expected = MemoryImageError::MemoryOwnsUnusedBuckets {
            id: 0,
            pages: 0,
            owned: 1,
            bucket_size_in_pages: 128,
        };
        assert_eq!(classify_raw_memory(&memory_from(&bytes)), Err(expected.clone()));
        // The layout that would have been accepted over a hidden ledger: a
        // new key on the ID whose store holds data.
        assert_boot_refused_as(&bytes, &[("app.intruder.v1", 100)], &expected);
    }
}

#[test]
fn a_header_counting_buckets_beyond_the_image_is_refused_before_any_grow() {
    let memory = VectorMemory::default();
    boot(&memory, &[("app.users.v1", 100)]).unwrap();
    let mut bytes = image(&memory);
    let raw_pages = bytes.len() as u64 / PAGE;
    bytes[4..6].copy_from_slice(&1000u16.to_le_bytes());
    // The table entries past the real count stay unallocated, so only the
    // count itself lies.
    let expected = MemoryImageError::BucketsBeyondImage {
        allocated_buckets: 1000,
        bucket_size_in_pages: 128,
        end_page: 1 + 1000 * 128,
        raw_pages,
    };
    assert_eq!(classify_raw_memory(&memory_from(&bytes)), Err(expected.clone()));
    assert_boot_refused_as(
        &bytes,
        &[("app.users.v1", 100), ("app.orders.v1", 101)],
        &expected,
    );
}

/// A memory whose raw size may not pass `limit` pages.
#[derive(Clone)]
struct CappedMemory {
    inner: VectorMemory,
    limit: Rc<Cell<u64>>,
}

impl Memory for CappedMemory {
    fn size(&self) -> u64 {
        self.inner.size()
    }
    fn grow(&self, pages: u64) -> i64 {
        if self.inner.size() + pages > self.limit.get() {
            return -1;
        }
        self.inner.grow(pages)
    }
    fn read(&self, offset: u64, dst: &mut [u8]) {
        self.inner.read(offset, dst)
    }
    fn write(&self, offset: u64, src: &[u8]) {
        self.inner.write(offset, src)
    }
}

#[test]
fn a_ledger_that_cannot_grow_the_raw_memory_is_grow_failed_not_a_panic() {
    // One-page buckets, so the ledger's memory needs a new bucket (and the
    // raw memory a new page) as soon as it passes 64 KiB.
    let memory = CappedMemory {
        inner: Rc::new(RefCell::new(Vec::new())),
        limit: Rc::new(Cell::new(u64::MAX)),
    };
    drop(MemoryManager::init_with_bucket_size(memory.clone(), 1));
    let long_label = "L".repeat(250);
    let mut keys = Vec::new();
    let refused = (0..200u8).find_map(|n| {
        keys.push((format!("app.store{n}.v1"), 10 + n));
        let mut collector = holdfast_memory::DeclarationCollector::new();
        for (key, id) in &keys {
            collector = collector.with_memory_manager(key, *id, &long_label).unwrap();
        }
        // From now on the raw memory may not grow.
        memory.limit.set(memory.size());
        MemoryRuntime::bootstrap(memory.clone(), collector.seal().unwrap(), &AcceptAllPolicy)
            .err()
            .map(|err| (err, image(&memory.inner)))
    });
    let (err, _) = refused.expect("the ledger outgrew its first 64 KiB bucket");
    assert!(
        matches!(
            err,
            RuntimeBootstrapError::LedgerCommit(LedgerCommitError::GrowFailed { .. })
        ),
        "{err:?}"
    );
    // The store is still sound: the generation before the failed one recovers.
    memory.limit.set(u64::MAX);
    let (ledger, _) = MemoryRuntime::check(&memory, layout(&[]), &AcceptAllPolicy).unwrap();
    assert_eq!(ledger.current_generation(), keys.len() as u64 - 1);
}

#[test]
fn a_torn_bucket_allocation_is_cleared_by_an_accepted_boot_so_no_bucket_is_shared() {
    let memory = VectorMemory::default();
    let runtime = boot(&memory, &[("app.users.v1", 100), ("app.orders.v1", 101)]).unwrap();
    runtime.open("app.users.v1", 100).unwrap().grow(1);
    drop(runtime);
    let RawMemoryClass::MemoryManager(header) = classify_raw_memory(&memory).unwrap() else {
        panic!("a MemoryManager image");
    };
    // A grow of memory 100 cut after writing its next bucket's table entry,
    // before saving the header.
    let torn = header.allocated_buckets;
    memory.borrow_mut()[bucket_entry(torn)] = 100;
    let RawMemoryClass::MemoryManager(header) = classify_raw_memory(&memory).unwrap() else {
        panic!("still a MemoryManager image");
    };
    assert_eq!(header.torn_bucket_allocation, Some(100));

    // Read-only calls report it and write nothing.
    let counting = CutMemory::counting(&memory);
    MemoryRuntime::check(&counting, layout(&[("app.users.v1", 100)]), &AcceptAllPolicy).unwrap();
    assert_eq!(counting.written.get(), 0);

    // An unchanged boot is accepted and clears the entry.
    let runtime = boot(&memory, &[("app.users.v1", 100), ("app.orders.v1", 101)]).unwrap();
    assert_eq!(memory.borrow()[bucket_entry(torn)], 255);
    // Memory 101 now takes that bucket; memory 100 grows into a bucket of its
    // own. Had memory 100 kept listing the torn bucket, its second bucket
    // would be memory 101's first and this write would land in it.
    let orders = runtime.open("app.orders.v1", 101).unwrap();
    orders.grow(1);
    orders.write(0, b"orders");
    let users = runtime.open("app.users.v1", 100).unwrap();
    users.grow(128);
    users.write(128 * PAGE, b"USERS!");
    let mut read = [0u8; 6];
    orders.read(0, &mut read);
    assert_eq!(&read, b"orders");
    assert!(
        matches!(classify_raw_memory(&memory), Ok(RawMemoryClass::MemoryManager(h)) if h.torn_bucket_allocation.is_none())
    );
}

/// An image with data in two stores besides the ledger (three buckets).
fn three_bucket_image() -> Vec<u8> {
    let memory = VectorMemory::default();
    let runtime = boot(&memory, &[("app.users.v1", 100), ("app.orders.v1", 101)]).unwrap();
    runtime.open("app.users.v1", 100).unwrap().grow(1);
    runtime.open("app.orders.v1", 101).unwrap().grow(1);
    drop(runtime);
    image(&memory)
}

// Found by the hostile-input campaign (seed 11): each used to panic, hide the
// ledger, brick the image after one boot, or move every store.

#[test]
fn a_count_one_short_of_a_bucket_in_use_is_refused_not_an_underflow() {
    let mut bytes = three_bucket_image();
    bytes[4..6].copy_from_slice(&2u16.to_le_bytes());
    let expected = MemoryImageError::BucketPastCountInUse {
        bucket: 2,
        owner: 101,
        in_use: true,
    };
    assert_eq!(classify_raw_memory(&memory_from(&bytes)), Err(expected.clone()));
    assert_boot_refused_as(&bytes, &[("app.users.v1", 100)], &expected);
}

#[test]
fn a_ledger_bucket_past_the_count_is_refused_not_read_as_a_torn_grow() {
    // Two faults: ID 0's size read as 0 and the count one lower make the
    // ledger's only bucket look like a grow cut after its table write — but
    // that bucket would be zeros, and this one holds the ledger.
    let memory = VectorMemory::default();
    boot(&memory, &[]).unwrap();
    let mut bytes = image(&memory);
    bytes[size_field(0)] = 0;
    bytes[4..6].copy_from_slice(&0u16.to_le_bytes());
    let expected = MemoryImageError::BucketPastCountInUse {
        bucket: 0,
        owner: 0,
        in_use: false,
    };
    assert_eq!(classify_raw_memory(&memory_from(&bytes)), Err(expected.clone()));
    assert_boot_refused_as(&bytes, &[("app.users.v1", 100)], &expected);
}

#[test]
fn a_grow_cut_while_saving_its_header_boots_and_keeps_booting() {
    // The first boot's grow of ID 0 cut after the count landed and before
    // the size did: ID 0 owns a zeroed bucket its size (0) does not need.
    let memory = VectorMemory::default();
    boot(&memory, &[]).unwrap();
    let mut bytes = image(&memory);
    bytes[size_field(0)] = 0;
    bytes[PAGE as usize..2 * PAGE as usize].fill(0);
    let RawMemoryClass::MemoryManager(header) = classify_raw_memory(&memory_from(&bytes)).unwrap() else {
        panic!("a MemoryManager image");
    };
    assert_eq!(header.interrupted_grow_bucket, Some((0, 0)));
    let memory = memory_from(&bytes);
    let entries = [("app.users.v1", 100)];
    assert_eq!(boot(&memory, &entries).unwrap().validated().generation(), 1);
    // Before, the boot took a second bucket for ID 0 and left the first
    // listed: the next boot refused the image for ever.
    let again = boot(&memory, &entries).unwrap();
    assert_eq!(again.validated().generation(), 1);
    let RawMemoryClass::MemoryManager(header) = classify_raw_memory(&memory).unwrap() else {
        panic!("a MemoryManager image");
    };
    assert!(!header.has_interrupted_grow());
    assert_eq!(header.buckets_per_memory[0], 1);
}

#[test]
fn a_changed_bucket_size_is_refused_instead_of_moving_every_store() {
    let bytes = three_bucket_image();
    let raw_pages = bytes.len() as u64 / PAGE;
    for size in [127u16, 64, 1] {
        let mut damaged = bytes.clone();
        damaged[6..8].copy_from_slice(&size.to_le_bytes());
        let expected = MemoryImageError::ImageLargerThanBuckets {
            raw_pages,
            expected_pages: 1 + 3 * u64::from(size),
            allocated_buckets: 3,
            bucket_size_in_pages: size,
        };
        assert_eq!(
            classify_raw_memory(&memory_from(&damaged)),
            Err(expected.clone()),
            "bucket size {size}"
        );
        assert_boot_refused_as(&damaged, &[("app.users.v1", 100)], &expected);
    }
}
