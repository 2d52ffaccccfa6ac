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
