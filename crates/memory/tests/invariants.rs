//! One test per invariant of the specification (§3), through the runtime over
//! a shared memory, as a binary sequence would exercise them. Refusals are
//! checked for their exact variant and for leaving every byte unchanged.

mod common;

use std::convert::Infallible;

use common::{boot, image, layout, recovered_ledger};
use holdfast_memory::runtime::APPLICATION_AUTHORITY;
use holdfast_memory::stable_structures::VectorMemory;
use holdfast_memory::{
    AcceptAllPolicy, AllocationDeclaration, AllocationHistory, AllocationLedger, AllocationReservationError,
    AllocationRetirement, AllocationRetirementError, AllocationSlotDescriptor, AllocationStagingError,
    AllocationState, AllocationValidationError, DeclarationSnapshot, DeclarationSnapshotError,
    GenerationRecord, LayoutVerdict, LedgerIntegrityError, MemoryManagerRangeAuthorityError, MemoryRuntime,
    RuntimeBootstrapError, RuntimePolicyError, SchemaMetadata, StableKey, validate_allocations,
};

fn key(text: &str) -> StableKey {
    StableKey::parse(text).unwrap()
}

fn slot(id: u8) -> AllocationSlotDescriptor {
    AllocationSlotDescriptor::memory_manager(id).unwrap()
}

fn reserve(memory: &VectorMemory, entries: &[(&str, u8)]) -> Result<u64, RuntimeBootstrapError<Infallible>> {
    let reservations = entries
        .iter()
        .map(|(k, id)| AllocationDeclaration::memory_manager(k, *id, "Store").unwrap())
        .collect();
    MemoryRuntime::reserve(memory.clone(), reservations, &AcceptAllPolicy)
}

fn retire(memory: &VectorMemory, stable_key: &str, id: u8) -> Result<u64, RuntimeBootstrapError<Infallible>> {
    MemoryRuntime::retire(
        memory.clone(),
        AllocationRetirement::new(stable_key, slot(id)).unwrap(),
    )
}

/// Runs `refused`, asserts it was refused, and that memory is unchanged.
fn refused<T: std::fmt::Debug, E>(memory: &VectorMemory, refused: impl FnOnce() -> Result<T, E>) -> E {
    let before = image(memory);
    let err = refused().expect_err("must be refused");
    assert_eq!(image(memory), before, "a refusal wrote to memory");
    err
}

/// Asserts that `$action` is refused with an error matching `$pattern` and
/// leaves memory unchanged.
macro_rules! assert_refused {
    ($memory:expr, $action:expr, $pattern:pat) => {{
        let err = refused($memory, || $action);
        assert!(matches!(err, $pattern), "{err:?}");
    }};
}

fn record_state(memory: &VectorMemory, stable_key: &str) -> (AllocationState, u64, Option<u64>) {
    let ledger = recovered_ledger(memory);
    let record = ledger.allocation_history().record(&key(stable_key)).unwrap();
    (
        record.state(),
        record.last_seen_generation(),
        record.retired_generation(),
    )
}

#[test]
fn invariant_1_a_committed_key_reopens_on_its_slot_and_new_keys_take_new_slots() {
    let memory = VectorMemory::default();
    boot(&memory, &[("app.users.v1", 100)]).unwrap();
    let again = boot(&memory, &[("app.users.v1", 100), ("app.users.v2", 101)]).unwrap();
    assert_eq!(again.validated().generation(), 2);
    assert!(again.open("app.users.v1", 100).is_ok());
    assert!(again.open("app.users.v2", 101).is_ok());
}

#[test]
fn invariant_2_an_active_key_never_moves() {
    let memory = VectorMemory::default();
    boot(&memory, &[("app.users.v1", 100)]).unwrap();
    let err = refused(&memory, || boot(&memory, &[("app.users.v1", 150)]));
    assert!(
        matches!(
            err,
            RuntimeBootstrapError::Validation(AllocationValidationError::StableKeySlotConflict { ref recorded_slot, ref declared_slot, .. })
                if *recorded_slot == slot(100) && *declared_slot == slot(150)
        ),
        "{err:?}"
    );
}

#[test]
fn invariant_3_slot_reuse_by_new_key_is_refused_whatever_the_holder_state() {
    let memory = VectorMemory::default();
    boot(&memory, &[("app.active.v1", 100), ("app.retired.v1", 101)]).unwrap();
    reserve(&memory, &[("app.reserved.v1", 102)]).unwrap();
    retire(&memory, "app.retired.v1", 101).unwrap();
    for (id, state) in [
        (100, AllocationState::Active),
        (101, AllocationState::Retired),
        (102, AllocationState::Reserved),
    ] {
        let err = refused(&memory, || boot(&memory, &[("app.intruder.v1", id)]));
        match err {
            RuntimeBootstrapError::Validation(AllocationValidationError::SlotStableKeyConflict {
                recorded_state,
                declared_stable_key,
                ..
            }) => {
                assert_eq!(recorded_state, state);
                assert_eq!(declared_stable_key, key("app.intruder.v1"));
            }
            other => panic!("ID {id}: {other:?}"),
        }
    }
}

#[test]
fn invariant_4_retirement_is_a_tombstone_never_a_free_list() {
    let memory = VectorMemory::default();
    boot(&memory, &[("app.users.v1", 100), ("app.orders.v1", 101)]).unwrap();
    assert_refused!(
        &memory,
        retire(&memory, "app.users.v1", 101),
        RuntimeBootstrapError::Retirement(AllocationRetirementError::SlotMismatch { .. })
    );
    assert_eq!(retire(&memory, "app.users.v1", 100).unwrap(), 2);
    assert_eq!(
        record_state(&memory, "app.users.v1"),
        (AllocationState::Retired, 1, Some(2))
    );
    assert_eq!(
        record_state(&memory, "app.orders.v1").2,
        None,
        "only retired records carry a retired generation"
    );
    // Wrong slot is reported before the state, even for a retired key.
    assert_refused!(
        &memory,
        retire(&memory, "app.users.v1", 101),
        RuntimeBootstrapError::Retirement(AllocationRetirementError::SlotMismatch { .. })
    );
    assert_refused!(
        &memory,
        retire(&memory, "app.users.v1", 100),
        RuntimeBootstrapError::Retirement(AllocationRetirementError::AlreadyRetired {
            retired_generation: 2,
            ..
        })
    );
    assert_refused!(
        &memory,
        boot(&memory, &[("app.users.v1", 100)]),
        RuntimeBootstrapError::Validation(AllocationValidationError::RetiredAllocation {
            retired_generation: 2,
            ..
        })
    );
    let err = refused(&memory, || boot(&memory, &[("app.users.v1", 102)]));
    assert!(
        matches!(
            err,
            RuntimeBootstrapError::Validation(AllocationValidationError::RetiredAllocation { .. })
        ),
        "a retired key is refused whatever its slot: {err:?}"
    );
    assert_refused!(
        &memory,
        boot(&memory, &[("app.accounts.v1", 100)]),
        RuntimeBootstrapError::Validation(AllocationValidationError::SlotStableKeyConflict {
            recorded_state: AllocationState::Retired,
            ..
        })
    );
    assert_refused!(
        &memory,
        retire(&memory, "app.unknown.v1", 120),
        RuntimeBootstrapError::Retirement(AllocationRetirementError::UnknownStableKey { .. })
    );
}

#[test]
fn invariant_5_omission_is_not_retirement() {
    let memory = VectorMemory::default();
    boot(&memory, &[("app.users.v1", 100), ("app.orders.v1", 101)]).unwrap();
    boot(&memory, &[("app.users.v1", 100)]).unwrap();
    assert_eq!(
        record_state(&memory, "app.orders.v1"),
        (AllocationState::Active, 1, None)
    );
    assert_refused!(
        &memory,
        boot(&memory, &[("app.users.v1", 100), ("app.audit.v1", 101)]),
        RuntimeBootstrapError::Validation(AllocationValidationError::SlotStableKeyConflict { .. })
    );
    boot(&memory, &[("app.users.v1", 100), ("app.orders.v1", 101)]).unwrap();
    assert_eq!(
        record_state(&memory, "app.orders.v1"),
        (AllocationState::Active, 3, None)
    );
}

#[test]
fn invariant_6_a_reservation_is_staging_until_declared() {
    let memory = VectorMemory::default();
    boot(&memory, &[("app.users.v1", 100)]).unwrap();
    assert_eq!(reserve(&memory, &[("app.later.v1", 110)]).unwrap(), 2);
    assert_eq!(
        record_state(&memory, "app.later.v1"),
        (AllocationState::Reserved, 2, None)
    );
    assert_eq!(
        reserve(&memory, &[("app.later.v1", 110)]).unwrap(),
        3,
        "re-reserving refreshes"
    );
    assert_eq!(
        record_state(&memory, "app.later.v1"),
        (AllocationState::Reserved, 3, None)
    );
    assert_refused!(
        &memory,
        reserve(&memory, &[("app.later.v1", 111)]),
        RuntimeBootstrapError::Reservation(AllocationReservationError::StableKeySlotConflict { .. })
    );
    assert_refused!(
        &memory,
        reserve(&memory, &[("app.users.v1", 100)]),
        RuntimeBootstrapError::Reservation(AllocationReservationError::ActiveAllocation { .. })
    );
    assert_refused!(
        &memory,
        boot(&memory, &[("app.users.v1", 100), ("app.later.v1", 112)]),
        RuntimeBootstrapError::Validation(AllocationValidationError::StableKeySlotConflict { .. })
    );
    boot(&memory, &[("app.users.v1", 100), ("app.later.v1", 110)]).unwrap();
    assert_eq!(
        record_state(&memory, "app.later.v1"),
        (AllocationState::Active, 4, None)
    );
    retire(&memory, "app.later.v1", 110).unwrap();
    assert_refused!(
        &memory,
        reserve(&memory, &[("app.later.v1", 110)]),
        RuntimeBootstrapError::Reservation(AllocationReservationError::RetiredAllocation { .. })
    );
}

#[test]
fn invariant_7_a_schema_change_appends_a_schema_history_entry() {
    let memory = VectorMemory::default();
    let with = |version| {
        let schema = SchemaMetadata::new(Some(version), Some(format!("sha256:{version}"))).unwrap();
        DeclarationSnapshot::new(vec![
            AllocationDeclaration::memory_manager_with_schema("app.users.v1", 100, "Users", schema).unwrap(),
        ])
        .unwrap()
    };
    MemoryRuntime::bootstrap(memory.clone(), with(1), &AcceptAllPolicy).unwrap();
    let unchanged = MemoryRuntime::bootstrap(memory.clone(), with(1), &AcceptAllPolicy).unwrap();
    assert_eq!(
        unchanged.validated().generation(),
        1,
        "the same schema changes nothing"
    );
    let runtime = MemoryRuntime::bootstrap(memory.clone(), with(2), &AcceptAllPolicy).unwrap();
    let record = runtime
        .ledger()
        .allocation_history()
        .record(&key("app.users.v1"))
        .unwrap()
        .clone();
    let history: Vec<(u64, Option<u32>)> = record
        .schema_history()
        .iter()
        .map(|e| (e.generation(), e.schema().schema_version()))
        .collect();
    assert_eq!(history, [(1, Some(1)), (2, Some(2))]);
    assert!(matches!(
        SchemaMetadata::new(Some(0), None),
        Err(DeclarationSnapshotError::InvalidSchema { .. })
    ));
}

#[test]
fn invariant_7a_the_governance_key_is_never_retired_or_reserved_and_always_declared() {
    let memory = VectorMemory::default();
    let runtime = boot(&memory, &[("app.users.v1", 100)]).unwrap();
    let keys: Vec<&str> = runtime
        .validated()
        .declarations()
        .iter()
        .map(|d| d.stable_key().as_str())
        .collect();
    assert_eq!(
        keys,
        ["ic_memory.ledger.v1", "app.users.v1"],
        "the omitted ledger key is completed"
    );
    drop(runtime);
    assert_refused!(
        &memory,
        retire(&memory, "ic_memory.ledger.v1", 0),
        RuntimeBootstrapError::Retirement(AllocationRetirementError::GovernanceAllocation { .. })
    );
    assert_refused!(
        &memory,
        reserve(&memory, &[("ic_memory.ledger.v1", 0)]),
        RuntimeBootstrapError::Reservation(AllocationReservationError::GovernanceAllocation { .. })
    );
    assert_refused!(
        &memory,
        reserve(&memory, &[("app.a.v1", 120), ("app.b.v1", 120)]),
        RuntimeBootstrapError::Reservation(AllocationReservationError::Batch(
            DeclarationSnapshotError::DuplicateSlot(_)
        ))
    );
    assert_refused!(
        &memory,
        reserve(&memory, &[("app.a.v1", 120), ("app.a.v1", 121)]),
        RuntimeBootstrapError::Reservation(AllocationReservationError::Batch(
            DeclarationSnapshotError::DuplicateStableKey(_)
        ))
    );
    // Still bootable after every refusal.
    assert_eq!(
        boot(&memory, &[("app.users.v1", 100)])
            .unwrap()
            .validated()
            .generation(),
        1
    );
}

/// A caller's declaration on the ledger's key or ID 0 that is not the
/// ledger's own declaration is a typed refusal of boot, check and plan alike
/// (it used to panic while the ledger's own declaration was added beside it).
#[test]
fn invariant_7a_a_declaration_taking_the_ledgers_key_or_id_is_refused_not_a_panic() {
    let memory = VectorMemory::default();
    boot(&memory, &[("app.users.v1", 100)]).unwrap();
    let cases = [
        AllocationDeclaration::memory_manager("app.other.v1", 0, "Other").unwrap(),
        AllocationDeclaration::memory_manager("ic_memory.ledger.v1", 0, "Relabelled").unwrap(),
        AllocationDeclaration::memory_manager("ic_memory.ledger.v1", 7, "MemoryLayoutLedger").unwrap(),
    ];
    for declaration in cases {
        let snapshot = || {
            DeclarationSnapshot::new(vec![
                declaration.clone(),
                AllocationDeclaration::memory_manager("app.users.v1", 100, "Store").unwrap(),
            ])
            .unwrap()
        };
        let expected_policy_error =
            |err: &AllocationValidationError<RuntimePolicyError<Infallible>>| match err {
                AllocationValidationError::Policy(RuntimePolicyError::ReservedStableKeyAuthority {
                    stable_key,
                    declaring_crate,
                }) => {
                    stable_key.as_str() == "ic_memory.ledger.v1" && declaring_crate == APPLICATION_AUTHORITY
                }
                AllocationValidationError::Policy(RuntimePolicyError::Range(
                    MemoryManagerRangeAuthorityError::ReservedForOtherAuthority { id: 0, .. },
                )) => declaration.stable_key().as_str() == "app.other.v1",
                _ => false,
            };
        let err = refused(&memory, || {
            MemoryRuntime::bootstrap(memory.clone(), snapshot(), &AcceptAllPolicy)
        });
        let RuntimeBootstrapError::Validation(validation) = &err else {
            panic!("{declaration:?}: {err:?}");
        };
        assert!(expected_policy_error(validation), "{declaration:?}: {err:?}");
        let plan = MemoryRuntime::plan(&memory, snapshot(), &AcceptAllPolicy).unwrap();
        let LayoutVerdict::Refused { conflicts } = plan.verdict else {
            panic!("{declaration:?}: plan accepted");
        };
        assert_eq!(conflicts.len(), 1, "{conflicts:?}");
        assert!(expected_policy_error(&conflicts[0]), "{conflicts:?}");
    }
}

#[test]
fn invariant_7b_refusals_write_nothing_even_on_an_empty_store() {
    let memory = VectorMemory::default();
    refused(&memory, || boot(&memory, &[("app.users.v1", 3)]));
    refused(&memory, || reserve(&memory, &[("app.users.v1", 3)]));
    refused(&memory, || retire(&memory, "app.users.v1", 100));
    assert_eq!(image(&memory).len(), 0);
}

#[test]
fn invariant_8_a_validated_set_binds_to_exactly_one_generation() {
    let genesis = AllocationLedger::genesis();
    let validated =
        validate_allocations(&genesis, layout(&[("app.users.v1", 100)]), &AcceptAllPolicy).unwrap();
    assert_eq!(validated.generation(), 0);
    let one = genesis.stage_validated_generation(&validated, None).unwrap();
    assert_eq!(
        one.stage_validated_generation(&validated, None),
        Err(AllocationStagingError::StaleValidatedGeneration {
            validated_generation: 0,
            current_generation: 1
        })
    );
}

#[test]
fn invariant_10_physical_and_logical_generations_agree() {
    let memory = VectorMemory::default();
    for generation in 1..=3u8 {
        let runtime = boot(
            &memory,
            &[
                ("app.users.v1", 100),
                (&format!("app.s{generation}.v1"), 100 + generation),
            ],
        )
        .unwrap();
        let export = runtime.diagnostic_export().unwrap();
        assert_eq!(
            export.commit.authoritative_generation,
            Some(u64::from(generation))
        );
        assert_eq!(export.current_generation, u64::from(generation));
    }
}

#[test]
fn invariant_11_generation_records_form_a_parent_linked_chain() {
    // Empty generations (declaration count 0), so only the chain is at issue.
    let record = |g, parent| GenerationRecord::new(g, parent, None, 0, None);
    assert_eq!(
        AllocationLedger::new(
            2,
            AllocationHistory::new(vec![], vec![record(1, 0), record(3, 1)])
        ),
        Err(LedgerIntegrityError::GenerationChainBroken {
            index: 1,
            expected: 2,
            found: 3,
            parent: 1
        })
    );
    assert_eq!(
        AllocationLedger::new(
            2,
            AllocationHistory::new(vec![], vec![record(1, 0), record(2, 0)])
        ),
        Err(LedgerIntegrityError::GenerationChainBroken {
            index: 1,
            expected: 2,
            found: 2,
            parent: 0
        })
    );
    assert_eq!(
        AllocationLedger::new(2, AllocationHistory::new(vec![], vec![record(1, 0)])),
        Err(LedgerIntegrityError::CurrentGenerationMissing {
            current: 2,
            recorded: 1
        })
    );
    assert!(
        AllocationLedger::new(
            2,
            AllocationHistory::new(vec![], vec![record(1, 0), record(2, 1)])
        )
        .is_ok()
    );
}
