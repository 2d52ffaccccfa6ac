//! Torn writes: a commit cut short after any number of written bytes recovers
//! to exactly the old generation, and to the new one only once the presence
//! marker landed (the commit then only writes the two copies of the
//! high-water mark). Never garbage, never an error.

mod common;

use common::{CutMemory, layout};
use holdfast_memory::physical::HIGH_WATER_LEN;
use holdfast_memory::{AcceptAllPolicy, MemoryRuntime};

/// Boots `entries` over a copy of `start` cut after `budget` bytes; returns
/// the bytes left behind and how many bytes the boot wrote.
fn cut_boot(start: &[u8], entries: &[(&str, u8)], budget: Option<u64>) -> CutMemory {
    let memory = CutMemory::new(start, budget);
    let result = MemoryRuntime::bootstrap(memory.clone(), layout(entries), &AcceptAllPolicy);
    assert!(
        result.is_ok(),
        "the boot itself cannot see the cut: {:?}",
        result.err()
    );
    memory
}

fn generation_after_recovery(memory: &CutMemory) -> u64 {
    let (ledger, _) = MemoryRuntime::check(memory, layout(&[]), &AcceptAllPolicy).expect("memory recovers");
    ledger.current_generation()
}

/// Cuts at every byte of the commit store's writes, and at every 127th byte
/// (plus both ends) of the MemoryManager's own bulk writes, which are single
/// sequential copies.
fn cut_points(total: u64, dense_from: u64) -> impl Iterator<Item = u64> {
    (0..dense_from)
        .filter(move |cut| cut % 127 == 0 || *cut + 1 == dense_from)
        .chain(dense_from..=total)
}

fn assert_every_cut_recovers(start: &[u8], entries: &[(&str, u8)], old: u64, dense_from: u64) {
    let total = cut_boot(start, entries, None).written.get();
    let marker_landed = total - 2 * HIGH_WATER_LEN;
    let mut checked = 0;
    for cut in cut_points(total, dense_from) {
        let memory = cut_boot(start, entries, Some(cut));
        let recovered = CutMemory::new(&memory.bytes.borrow(), None);
        let expected = if cut < marker_landed { old } else { old + 1 };
        assert_eq!(
            generation_after_recovery(&recovered),
            expected,
            "cut after {cut} of {total} bytes"
        );
        assert_eq!(recovered.written.get(), 0, "recovery wrote after a cut at {cut}");
        // The memory left behind boots normally: the interrupted commit is
        // simply done again.
        let rebooted = MemoryRuntime::bootstrap(recovered, layout(entries), &AcceptAllPolicy)
            .unwrap_or_else(|err| panic!("reboot after a cut at {cut}: {err}"));
        assert_eq!(rebooted.validated().generation(), old + 1, "cut at {cut}");
        checked += 1;
    }
    assert!(checked > 150, "only {checked} cut points were exercised");
}

#[test]
fn first_boot_cut_anywhere_recovers_to_nothing_or_generation_one() {
    // Dense from the end of the MemoryManager's 34,848-byte initialisation.
    assert_every_cut_recovers(&[], &[("app.users.v1", 100)], 0, 34_000);
}

#[test]
fn second_commit_cut_anywhere_recovers_to_generation_one_or_two() {
    let start = cut_boot(&[], &[("app.users.v1", 100)], None)
        .bytes
        .borrow()
        .clone();
    assert_every_cut_recovers(&start, &[("app.users.v1", 100), ("app.orders.v1", 101)], 1, 0);
}

#[test]
fn third_commit_reusing_the_first_payload_area_recovers_to_two_or_three() {
    let one = cut_boot(&[], &[("app.users.v1", 100)], None)
        .bytes
        .borrow()
        .clone();
    let two = cut_boot(&one, &[("app.users.v1", 100), ("app.orders.v1", 101)], None)
        .bytes
        .borrow()
        .clone();
    let three = [
        ("app.users.v1", 100),
        ("app.orders.v1", 101),
        ("app.audit.v1", 102),
    ];
    assert_every_cut_recovers(&two, &three, 2, 0);
}
