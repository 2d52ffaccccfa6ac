//! Upgrade simulations over one shared memory: every release either reopens
//! history or is refused before anything is opened, and a refusal writes
//! nothing anywhere in the memory.

mod common;

use common::{boot, image, layout};
use holdfast_memory::stable_structures::{Memory, StableBTreeMap, VectorMemory};
use holdfast_memory::{
    AcceptAllPolicy, AllocationSlotDescriptor, AllocationValidationError, LedgerStoreError, MemoryImageError,
    MemoryRuntime, RuntimeBootstrapError, RuntimeOpenError, StableKey,
};

const V1: &[(&str, u8)] = &[("app.users.v1", 100), ("app.orders.v1", 101)];
const V2: &[(&str, u8)] = &[
    ("app.users.v1", 100),
    ("app.orders.v1", 101),
    ("app.audit.v1", 102),
];
const V3_SWAPPED: &[(&str, u8)] = &[
    ("app.users.v1", 101),
    ("app.orders.v1", 100),
    ("app.audit.v1", 102),
];
const V3_FIXED: &[(&str, u8)] = &[
    ("app.users.v1", 100),
    ("app.orders.v1", 101),
    ("app.audit.v1", 102),
    ("app.sessions.v1", 103),
];

#[test]
fn three_releases_with_a_drifted_one_refused_and_v1_data_still_readable() {
    let memory = VectorMemory::default();

    let v1 = boot(&memory, V1).expect("v1 boots");
    assert_eq!(v1.validated().generation(), 1);
    let mut users: StableBTreeMap<u64, u64, _> = StableBTreeMap::init(v1.open("app.users.v1", 100).unwrap());
    users.insert(7, 700);
    let mut orders: StableBTreeMap<u64, u64, _> =
        StableBTreeMap::init(v1.open("app.orders.v1", 101).unwrap());
    orders.insert(1, 11);
    drop((users, orders, v1));

    let v2 = boot(&memory, V2).expect("v2 adds a store");
    assert_eq!(v2.validated().generation(), 2);
    drop(v2);

    let before = image(&memory);
    let err = boot(&memory, V3_SWAPPED).expect_err("v3 swaps two IDs");
    match err {
        RuntimeBootstrapError::Validation(AllocationValidationError::StableKeySlotConflict {
            stable_key,
            recorded_slot,
            declared_slot,
        }) => {
            assert_eq!(stable_key, StableKey::parse("app.users.v1").unwrap());
            assert_eq!(
                recorded_slot,
                AllocationSlotDescriptor::memory_manager(100).unwrap()
            );
            assert_eq!(
                declared_slot,
                AllocationSlotDescriptor::memory_manager(101).unwrap()
            );
        }
        other => panic!("unexpected refusal {other:?}"),
    }
    assert_eq!(image(&memory), before, "a refused boot writes nothing");
    let again = boot(&memory, V3_SWAPPED).expect_err("the refusal is sticky");
    assert!(matches!(
        again,
        RuntimeBootstrapError::Validation(AllocationValidationError::StableKeySlotConflict { .. })
    ));

    let v3 = boot(&memory, V3_FIXED).expect("the fixed release boots");
    assert_eq!(v3.validated().generation(), 3);
    let users: StableBTreeMap<u64, u64, _> = StableBTreeMap::init(v3.open("app.users.v1", 100).unwrap());
    let orders: StableBTreeMap<u64, u64, _> = StableBTreeMap::init(v3.open("app.orders.v1", 101).unwrap());
    assert_eq!(users.get(&7), Some(700));
    assert_eq!(orders.get(&1), Some(11));
}

#[test]
fn refused_first_boot_leaves_an_empty_memory_at_size_zero() {
    let memory = VectorMemory::default();
    let err = boot(&memory, &[("app.users.v1", 5)]).expect_err("ID 5 is in the governance range");
    assert!(
        matches!(
            err,
            RuntimeBootstrapError::Validation(AllocationValidationError::Policy(_))
        ),
        "{err:?}"
    );
    assert_eq!(memory.size(), 0);
}

#[test]
fn unchanged_reboot_binds_to_the_current_generation_and_writes_nothing() {
    let memory = VectorMemory::default();
    boot(&memory, V2).unwrap();
    let before = image(&memory);
    let again = boot(&memory, V2).unwrap();
    assert_eq!(again.validated().generation(), 1);
    assert_eq!(image(&memory), before);
}

#[test]
fn a_label_change_commits_a_generation() {
    let memory = VectorMemory::default();
    boot(&memory, V1).unwrap();
    let relabelled = holdfast_memory::DeclarationCollector::new()
        .with_memory_manager("app.users.v1", 100, "Accounts")
        .unwrap()
        .with_memory_manager("app.orders.v1", 101, "Store")
        .unwrap()
        .seal()
        .unwrap();
    let runtime = MemoryRuntime::bootstrap(memory.clone(), relabelled, &AcceptAllPolicy).unwrap();
    assert_eq!(runtime.validated().generation(), 2);
    let record = runtime
        .ledger()
        .allocation_history()
        .record(&StableKey::parse("app.users.v1").unwrap())
        .unwrap();
    assert_eq!(record.label(), Some("Accounts"));
}

#[test]
fn foreign_bytes_are_refused_and_left_untouched() {
    let memory = VectorMemory::default();
    memory.grow(1);
    memory.write(0, b"WAS here");
    let before = image(&memory);
    let err = boot(&memory, V1).err().unwrap();
    assert!(
        matches!(
            &err,
            RuntimeBootstrapError::StableCellLedger(LedgerStoreError::Image(MemoryImageError::NotMemoryManager { first_bytes }))
                if first_bytes == b"WAS here"
        ),
        "{err:?}"
    );
    assert_eq!(image(&memory), before);
}

#[test]
fn application_bytes_at_id_zero_are_refused_and_left_untouched() {
    use holdfast_memory::stable_structures::memory_manager::{MemoryId, MemoryManager};
    let memory = VectorMemory::default();
    let manager = MemoryManager::init(memory.clone());
    let id0 = manager.get(MemoryId::new(0));
    id0.grow(1);
    id0.write(0, b"app data");
    drop((id0, manager));
    let before = image(&memory);
    let err = boot(&memory, V1).err().unwrap();
    assert!(
        matches!(&err, RuntimeBootstrapError::StableCellLedger(LedgerStoreError::Store(
            holdfast_memory::CommitRecoveryError::ForeignStore { first_bytes })) if first_bytes == b"app data"),
        "{err:?}"
    );
    assert_eq!(image(&memory), before);
}

#[test]
fn zeroed_id_zero_beside_other_stores_is_foreign() {
    use holdfast_memory::stable_structures::memory_manager::{MemoryId, MemoryManager};
    let memory = VectorMemory::default();
    let manager = MemoryManager::init(memory.clone());
    manager.get(MemoryId::new(0)).grow(1);
    manager.get(MemoryId::new(100)).grow(1);
    drop(manager);
    let before = image(&memory);
    let err = boot(&memory, V1).err().unwrap();
    assert!(
        matches!(
            &err,
            RuntimeBootstrapError::StableCellLedger(LedgerStoreError::Store(
                holdfast_memory::CommitRecoveryError::ForeignStore { .. }
            ))
        ),
        "{err:?}"
    );
    assert_eq!(image(&memory), before);
}

#[test]
fn open_refuses_unvalidated_keys_and_wrong_ids() {
    let memory = VectorMemory::default();
    let runtime = boot(&memory, V1).unwrap();
    assert_eq!(
        runtime.open("app.audit.v1", 102).err(),
        Some(RuntimeOpenError::StableKeyNotValidated {
            stable_key: "app.audit.v1".into()
        })
    );
    assert_eq!(
        runtime.open("app.users.v1", 101).err(),
        Some(RuntimeOpenError::MemoryIdMismatch {
            stable_key: "app.users.v1".into(),
            validated_id: 100,
            requested_id: 101
        })
    );
    assert!(
        runtime.open("ic_memory.ledger.v1", 0).is_ok(),
        "the ledger's own declaration is validated"
    );
}

#[test]
fn diagnostics_report_live_memory_sizes() {
    let memory = VectorMemory::default();
    let runtime = boot(&memory, V1).unwrap();
    runtime.open("app.users.v1", 100).unwrap().grow(3);
    let export = runtime.diagnostic_export().unwrap();
    let users = export
        .records
        .iter()
        .find(|r| r.allocation.stable_key().as_str() == "app.users.v1")
        .unwrap();
    assert_eq!(
        users.memory_size,
        Some(holdfast_memory::DiagnosticMemorySize {
            pages: 3,
            bytes: 3 * 65536
        })
    );
    assert_eq!(export.current_generation, 1);
    assert_eq!(export.commit.authoritative_generation, Some(1));
}

#[test]
fn declarations_exported_as_json_check_the_same_as_a_boot() {
    let memory = VectorMemory::default();
    boot(&memory, V1).unwrap();
    let json = layout(V3_SWAPPED).to_json();
    let offline = holdfast_memory::DeclarationSnapshot::from_json(&json).unwrap();
    let before = image(&memory);
    let err = MemoryRuntime::check(&memory, offline, &AcceptAllPolicy)
        .err()
        .unwrap();
    assert!(matches!(
        err,
        RuntimeBootstrapError::Validation(AllocationValidationError::StableKeySlotConflict { .. })
    ));
    assert_eq!(image(&memory), before);
}

#[test]
fn a_plan_lists_every_conflict_and_every_change_without_writing() {
    use holdfast_memory::{LayoutChange, LayoutVerdict};
    let memory = VectorMemory::default();
    boot(&memory, V2).unwrap();
    let before = image(&memory);
    let plan = MemoryRuntime::plan(&memory, layout(V3_SWAPPED), &AcceptAllPolicy).unwrap();
    let LayoutVerdict::Refused { conflicts } = plan.verdict else {
        panic!("the swap is refused")
    };
    let keys: Vec<String> = conflicts
        .iter()
        .map(|conflict| match conflict {
            AllocationValidationError::StableKeySlotConflict { stable_key, .. } => stable_key.to_string(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        keys,
        ["app.users.v1", "app.orders.v1"],
        "both moved keys are reported"
    );

    let plan = MemoryRuntime::plan(
        &memory,
        layout(&[("app.users.v1", 100), ("app.new.v1", 110)]),
        &AcceptAllPolicy,
    )
    .unwrap();
    let LayoutVerdict::Accepted {
        changes,
        next_generation,
        ..
    } = plan.verdict
    else {
        panic!("accepted")
    };
    assert_eq!(next_generation, Some(2));
    let slot = |id| AllocationSlotDescriptor::memory_manager(id).unwrap();
    assert_eq!(
        changes,
        [
            LayoutChange::NewAllocation {
                stable_key: StableKey::parse("app.new.v1").unwrap(),
                slot: slot(110)
            },
            LayoutChange::OmittedKept {
                stable_key: StableKey::parse("app.orders.v1").unwrap(),
                slot: slot(101),
                state: holdfast_memory::AllocationState::Active
            },
            LayoutChange::OmittedKept {
                stable_key: StableKey::parse("app.audit.v1").unwrap(),
                slot: slot(102),
                state: holdfast_memory::AllocationState::Active
            },
        ]
    );
    assert_eq!(image(&memory), before);
}
