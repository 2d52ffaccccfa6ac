//! Hostile input, by structure: ledger payloads, commit stores and whole
//! MemoryManager images changed knowing their layout — CBOR items, slot
//! headers, presence markers, the high-water mark, header fields, the bucket
//! table, the size — with every checksum re-sealed so the checks behind it
//! are reached, never make a call panic, accept a ledger the bytes do not
//! say, or write when it must not (issue 11).
//!
//! The machinery is `holdfast_memory::fuzzing`; these tests run it at a size
//! a debug build finishes in seconds. The release campaign of 1,000,000
//! cases is `examples/campaign.rs` (figures in docs/BENCHMARKS.md), and the
//! cargo-fuzz targets under `fuzz/` call the same functions.

use holdfast_memory::fuzzing::{
    BaseKind, Call, CampaignConfig, CampaignReport, Category, Entropy, payload_case, replay_case,
    run_campaign, run_case,
};
use proptest::prelude::*;

/// The bases a debug build can afford many cases of (the near-bound image
/// costs a 3 MiB decode per call; it has its own test below).
const CHEAP_BASES: [BaseKind; 3] = [BaseKind::Small, BaseKind::ManyGenerations, BaseKind::MultiStore];

/// Asserts that no call of the campaign failed: no panic, no wrong ledger,
/// no write by a read-only call or a refused boot, no store damaged by an
/// accepted boot, no verdict of `plan` other than the boot's.
fn assert_no_failures(report: &CampaignReport) {
    for category in Category::ALL.into_iter().filter(|category| category.is_failure()) {
        assert_eq!(
            report.total(category),
            0,
            "{} outcomes:\n{report}",
            category.name()
        );
    }
    assert!(report.distinct.is_empty(), "{report}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    /// The decoder's own promises, asserted in full: a mutated, re-sealed
    /// payload is refused, or decodes to a ledger that passes the integrity
    /// rules and re-encodes to exactly the bytes it came from.
    #[test]
    fn mutated_ledger_payloads_are_refused_or_decode_to_exactly_what_they_encode(seed in any::<u64>()) {
        let result = payload_case(&mut Entropy::from_seed(seed));
        prop_assert!(result.is_ok(), "{}", result.unwrap_err());
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn mutated_images_never_panic_write_damage_a_store_or_yield_a_wrong_ledger(
        seed in any::<u64>(),
        base in prop::sample::select(CHEAP_BASES.to_vec()),
    ) {
        let report = run_case(base, seed);
        prop_assert!(report.findings.is_empty(), "{report}");
    }
}

/// The campaign CI runs: 2,500 cases of seed 11 over the cheap bases on two
/// threads (5-10 s in a debug build, where each of the ten MemoryManager
/// loads a case makes costs about 0.3 ms unoptimised; the release campaign
/// runs 1,000,000 of the same kind of cases, the near-bound image's among
/// them).
#[test]
fn a_short_campaign_finds_no_failure_and_reaches_every_verdict() {
    let report = run_campaign(&CampaignConfig {
        cases: 2_500,
        seed: 11,
        threads: 2,
        bases: CHEAP_BASES.to_vec(),
    });
    assert_no_failures(&report);
    // The campaign reaches every kind of answer, for every call: it is not
    // all refusals (the mutations must not only break the checksums) nor
    // all acceptances (they must reach the checks).
    for call in Call::ALL {
        for category in [
            Category::AcceptedIdentical,
            Category::AcceptedChanged,
            Category::RefusedTyped,
        ] {
            assert!(
                report.per_call.get(&(call, category)).is_some_and(|&n| n > 0),
                "no {} outcome of {}:\n{report}",
                category.name(),
                call.name()
            );
        }
    }
    assert_eq!(report.cases, 2_500);
}

#[test]
fn the_near_bound_base_holds_a_ledger_within_two_generations_of_the_3_mib_bound_and_survives_mutation() {
    let base = BaseKind::NearBound.image();
    let len = base.payload().len();
    let bound = holdfast_memory::codec::MAX_ENCODED_LEDGER_LEN + holdfast_memory::codec::LEDGER_ENVELOPE_LEN;
    assert!(
        len <= bound && len + 120_000 > bound,
        "the near-bound ledger is {len} bytes"
    );
    for case in 0..6 {
        let report = replay_case(11, case, &[BaseKind::NearBound]);
        assert!(report.findings.is_empty(), "{report}");
    }
}

/// A case replays from its seed alone: the same mutations and outcomes.
#[test]
fn a_case_replays_identically_from_its_seed() {
    let first = replay_case(11, 1234, &CHEAP_BASES);
    let again = replay_case(11, 1234, &CHEAP_BASES);
    assert_eq!(first.log, again.log);
    assert_eq!(first.outcomes, again.outcomes);
    assert!(!first.log.is_empty(), "a case always mutates something");
}
