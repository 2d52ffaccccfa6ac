//! The process-wide runtime composes declarations from several crates and
//! refuses every conflict with its typed error, before touching memory.

use holdfast_memory::runtime::{TEST_RUNTIME_LOCK, reset_for_tests};
use holdfast_memory::{
    AllocationValidationError, DeclarationSnapshotError, MemoryManagerRangeAuthorityError,
    MemoryManagerRangeMode, RuntimeBootstrapError, RuntimePolicyError, StaticMemoryDeclarationError,
    bootstrap_default_memory_manager, register_static_memory_manager_declaration as declare,
    register_static_memory_manager_range as range,
};

fn fresh() -> std::sync::MutexGuard<'static, ()> {
    let guard = TEST_RUNTIME_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    reset_for_tests();
    guard
}

#[test]
fn declarations_of_two_crates_in_their_own_ranges_compose() {
    let _g = fresh();
    range(100, 109, "crate_a", MemoryManagerRangeMode::Reserved, None).unwrap();
    range(110, 119, "crate_b", MemoryManagerRangeMode::Reserved, None).unwrap();
    declare(100, "crate_a", "A", "a.users.v1").unwrap();
    declare(110, "crate_b", "B", "b.users.v1").unwrap();
    let validated = bootstrap_default_memory_manager().unwrap();
    assert_eq!(validated.declarations().len(), 3);
    assert_eq!(
        bootstrap_default_memory_manager().unwrap(),
        validated,
        "bootstrap is idempotent"
    );
}

#[test]
fn overlapping_ranges_are_refused() {
    let _g = fresh();
    range(100, 109, "crate_a", MemoryManagerRangeMode::Reserved, None).unwrap();
    range(105, 119, "crate_b", MemoryManagerRangeMode::Reserved, None).unwrap();
    let err = bootstrap_default_memory_manager().unwrap_err();
    assert!(
        matches!(
            err,
            RuntimeBootstrapError::Range(MemoryManagerRangeAuthorityError::OverlappingRanges { .. })
        ),
        "{err:?}"
    );
    assert!(!holdfast_memory::is_default_memory_manager_bootstrapped());
}

#[test]
fn duplicate_keys_and_ids_are_refused_at_bootstrap() {
    let _g = fresh();
    declare(100, "crate_a", "A", "a.users.v1").unwrap();
    declare(100, "crate_b", "B", "b.users.v1").unwrap();
    let err = bootstrap_default_memory_manager().unwrap_err();
    assert!(
        matches!(
            err,
            RuntimeBootstrapError::Registry(StaticMemoryDeclarationError::Declaration(
                DeclarationSnapshotError::DuplicateSlot(_)
            ))
        ),
        "{err:?}"
    );
    reset_for_tests();
    declare(100, "crate_a", "A", "a.users.v1").unwrap();
    declare(101, "crate_b", "B", "a.users.v1").unwrap();
    let err = bootstrap_default_memory_manager().unwrap_err();
    assert!(
        matches!(
            err,
            RuntimeBootstrapError::Registry(StaticMemoryDeclarationError::Declaration(
                DeclarationSnapshotError::DuplicateStableKey(_)
            ))
        ),
        "{err:?}"
    );
}

#[test]
fn an_id_outside_every_range_is_unclaimed_when_user_ranges_exist() {
    let _g = fresh();
    range(100, 109, "crate_a", MemoryManagerRangeMode::Reserved, None).unwrap();
    declare(150, "crate_a", "A", "a.users.v1").unwrap();
    let err = bootstrap_default_memory_manager().unwrap_err();
    assert!(
        matches!(
            err,
            RuntimeBootstrapError::Validation(AllocationValidationError::Policy(RuntimePolicyError::Range(
                MemoryManagerRangeAuthorityError::UnclaimedId { id: 150 }
            )))
        ),
        "{err:?}"
    );
}

#[test]
fn governance_keys_and_ids_are_refused_to_applications() {
    let _g = fresh();
    declare(100, "crate_a", "A", "ic_memory.mine.v1").unwrap();
    let err = bootstrap_default_memory_manager().unwrap_err();
    assert!(
        matches!(
            err,
            RuntimeBootstrapError::Validation(AllocationValidationError::Policy(
                RuntimePolicyError::ReservedStableKeyAuthority { .. }
            ))
        ),
        "{err:?}"
    );
    reset_for_tests();
    declare(3, "crate_a", "A", "a.users.v1").unwrap();
    let err = bootstrap_default_memory_manager().unwrap_err();
    assert!(
        matches!(
            err,
            RuntimeBootstrapError::Validation(AllocationValidationError::Policy(RuntimePolicyError::Range(
                MemoryManagerRangeAuthorityError::ReservedForOtherAuthority { id: 3, .. }
            )))
        ),
        "{err:?}"
    );
}

#[test]
fn malformed_registrations_are_refused_on_the_spot() {
    let _g = fresh();
    assert!(matches!(
        declare(255, "c", "L", "a.v1"),
        Err(StaticMemoryDeclarationError::Declaration(
            DeclarationSnapshotError::InvalidSlot(_)
        ))
    ));
    assert!(matches!(
        declare(100, "c", "L", "A.v1"),
        Err(StaticMemoryDeclarationError::Declaration(
            DeclarationSnapshotError::InvalidStableKey(_)
        ))
    ));
    assert!(matches!(
        range(9, 3, "c", MemoryManagerRangeMode::Allowed, None),
        Err(StaticMemoryDeclarationError::Range(_))
    ));
}

#[test]
fn an_application_bootstraps_and_opens_without_any_framework() {
    let _g = fresh();
    declare(100, "app", "Users", "app.users.v1").unwrap();
    assert_eq!(
        holdfast_memory::open_default_memory_manager_memory("app.users.v1", 100).err(),
        Some(holdfast_memory::RuntimeOpenError::NotBootstrapped)
    );
    bootstrap_default_memory_manager().unwrap();
    holdfast_memory::open_default_memory_manager_memory("app.users.v1", 100).unwrap();
}

/// Exports the registry with `write_static_declarations_json`, reads the
/// file back, plans it over an empty memory with `plan_layout`, then
/// bootstraps the default runtime (over its own empty memory) and asserts
/// both reach one verdict, refusals with the identical error. Returns the
/// verdict in words.
fn exported_plan_matches_bootstrap(case: &str) -> String {
    use holdfast_memory::stable_structures::VectorMemory;
    use holdfast_memory::{AcceptAllPolicy, DeclaredLayout, LayoutVerdict, MemoryRuntime};

    let path = std::env::temp_dir().join(format!("holdfast-layout-{case}-{}.json", std::process::id()));
    holdfast_memory::write_static_declarations_json(&path).unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    assert!(text.contains("\"format\": \"holdfast-declarations/1\""), "{text}");
    let layout = DeclaredLayout::from_json(&text).unwrap();
    assert_eq!(Ok(&layout), holdfast_memory::collect_static_layout().as_ref());
    let planned = MemoryRuntime::plan_layout(&VectorMemory::default(), &layout, &AcceptAllPolicy);
    let booted = bootstrap_default_memory_manager();
    match (planned, booted) {
        (Ok(plan), Ok(validated)) => match plan.verdict {
            LayoutVerdict::Accepted {
                validated: planned,
                next_generation,
                ..
            } => {
                assert_eq!(planned.declarations(), validated.declarations(), "{case}");
                assert_eq!(next_generation, Some(validated.generation()), "{case}");
                "accepted".into()
            }
            other => panic!("{case}: plan {other:?}, bootstrap accepted"),
        },
        (Ok(plan), Err(RuntimeBootstrapError::Validation(error))) => match plan.verdict {
            LayoutVerdict::Refused { conflicts } => {
                assert_eq!(conflicts.first(), Some(&error), "{case}");
                format!("refused: {error}")
            }
            other => panic!("{case}: plan {other:?}, bootstrap refused with {error:?}"),
        },
        (Err(planned), Err(booted)) => {
            assert_eq!(format!("{planned:?}"), format!("{booted:?}"), "{case}");
            format!("refused before reading memory: {booted}")
        }
        (planned, booted) => panic!("{case}: plan {planned:?} but bootstrap {booted:?}"),
    }
}

#[test]
fn an_exported_layout_is_planned_offline_exactly_as_bootstrap_decides() {
    let _g = fresh();
    let cases: [(&str, fn(), &str); 8] = [
        (
            "composes",
            || {
                range(
                    100,
                    109,
                    "crate_a",
                    MemoryManagerRangeMode::Reserved,
                    Some("a".into()),
                )
                .unwrap();
                range(110, 119, "crate_b", MemoryManagerRangeMode::Allowed, None).unwrap();
                declare(100, "crate_a", "A", "a.users.v1").unwrap();
                declare(110, "crate_b", "B", "b.users.v1").unwrap();
                declare(111, "crate_a", "A2", "a.orders.v1").unwrap();
            },
            "accepted",
        ),
        (
            "other_crates_range",
            || {
                range(100, 109, "crate_a", MemoryManagerRangeMode::Reserved, None).unwrap();
                range(110, 119, "crate_b", MemoryManagerRangeMode::Reserved, None).unwrap();
                declare(105, "crate_b", "B", "b.users.v1").unwrap();
            },
            "refused: policy refused the declaration: MemoryManager ID 105 is reserved for crate_a, not crate_b",
        ),
        (
            "unclaimed",
            || {
                range(100, 109, "crate_a", MemoryManagerRangeMode::Reserved, None).unwrap();
                declare(150, "crate_a", "A", "a.users.v1").unwrap();
            },
            "refused: policy refused the declaration: MemoryManager ID 150 is not covered by any registered range",
        ),
        (
            "governance_key",
            || declare(100, "crate_a", "A", "ic_memory.mine.v1").unwrap(),
            "refused: policy refused the declaration: stable key ic_memory.mine.v1 is reserved for ic-memory, but crate_a declared it",
        ),
        (
            "governance_range",
            || declare(3, "crate_a", "A", "a.users.v1").unwrap(),
            "refused: policy refused the declaration: MemoryManager ID 3 is reserved for ic-memory, not crate_a",
        ),
        (
            "overlap",
            || {
                range(100, 109, "crate_a", MemoryManagerRangeMode::Reserved, None).unwrap();
                range(105, 119, "crate_b", MemoryManagerRangeMode::Reserved, None).unwrap();
            },
            "refused before reading memory: memory ranges: range 100..=109 of crate_a overlaps 105..=119 of crate_b",
        ),
        (
            "duplicate_id",
            || {
                declare(100, "crate_a", "A", "a.users.v1").unwrap();
                declare(100, "crate_b", "B", "b.users.v1").unwrap();
            },
            "refused before reading memory: static memory registry: MemoryManager ID 100 is declared twice",
        ),
        (
            "ledger_id",
            || declare(0, "crate_a", "A", "a.users.v1").unwrap(),
            "refused before reading memory: static memory registry: MemoryManager ID 0 is declared twice",
        ),
    ];
    for (case, register, verdict) in cases {
        reset_for_tests();
        register();
        assert_eq!(exported_plan_matches_bootstrap(case), verdict, "{case}");
    }
}
