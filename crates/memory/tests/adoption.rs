//! Adoption of ic-memory 0.5 ledgers: images written by the published
//! ic-memory 0.5.1 (its own code, driven as its runtime drives it) are
//! read, checked, planned and booted by holdfast. Every record, state,
//! generation and schema entry survives the conversion; a boot that
//! contradicts the ic-memory history is refused exactly as against
//! holdfast's own ledger and writes nothing; the conversion is crash-safe at
//! every byte; and after it the memory behaves like any holdfast memory.

mod common;
#[path = "common/ic_memory.rs"]
mod ic_images;

use std::convert::Infallible;

use common::{CutMemory, image, memory_from};
use holdfast_memory::adoption::ADOPTED_MARKER;
use holdfast_memory::physical::HIGH_WATER_LEN;
use holdfast_memory::stable_structures::memory_manager::{MemoryId, MemoryManager};
use holdfast_memory::stable_structures::{Memory, VectorMemory};
use holdfast_memory::{
    AcceptAllPolicy, AdoptionError, AllocationDeclaration, AllocationLedger, AllocationRecord,
    AllocationRetirement, AllocationSlotDescriptor, AllocationState, AllocationValidationError,
    CborLedgerCodec, CommitRecoveryError, DeclarationSnapshot, IcMemoryLedgerState, LayoutVerdict,
    LedgerCommitStore, LedgerIntegrityError, LedgerStoreError, MemoryRuntime, RuntimeBootstrapError,
    SchemaMetadata, decode_ic_memory_cell_value, diagnostic_export_of,
};
use ic_images::{
    decl, decl_schema, ic_boot, ic_boot_refused, ic_recover, ic_reserve, ic_retire, write_store,
};
use ic_memory::stable_structures::Storable;
use ic_memory::{LedgerCodec as _, StableCellLedgerRecord};
use proptest::prelude::*;

/// The value of the `Cell` at ID 0 of `memory`.
fn cell_value(memory: &VectorMemory) -> Vec<u8> {
    let manager = MemoryManager::init(memory.clone());
    let id0 = manager.get(MemoryId::new(0));
    let mut header = [0u8; 8];
    id0.read(0, &mut header);
    assert_eq!(&header[..4], b"SCL\x01", "ID 0 holds an ic-memory Cell");
    let len = u32::from_le_bytes(header[4..8].try_into().expect("4 bytes"));
    let mut value = vec![0u8; len as usize];
    id0.read(8, &mut value);
    value
}

fn state_name(state: AllocationState) -> &'static str {
    match state {
        AllocationState::Reserved => "Reserved",
        AllocationState::Active => "Active",
        AllocationState::Retired => "Retired",
    }
}

/// Asserts that `converted` holds exactly what ic-memory recovers from the
/// same bytes: every record (key, ID, state, generations, schema history
/// without its leading empty entry), every generation record (parent 0 where
/// ic-memory recorded none) and the current generation; no labels.
fn assert_same_history(ic: &ic_memory::AllocationLedger, converted: &AllocationLedger) {
    assert_eq!(converted.current_generation(), ic.current_generation());
    let ic_records = ic.allocation_history().records();
    let records = converted.allocation_history().records();
    assert_eq!(records.len(), ic_records.len());
    for (record, ic_record) in records.iter().zip(ic_records) {
        let key = ic_record.stable_key().as_str();
        assert_eq!(record.stable_key().as_str(), key);
        assert_eq!(
            record.slot().memory_manager_id(),
            Some(ic_record.slot().memory_manager_id().expect("MemoryManager slot")),
            "{key}"
        );
        assert_eq!(
            state_name(record.state()),
            format!("{:?}", ic_record.state()),
            "{key}"
        );
        assert_eq!(record.first_generation(), ic_record.first_generation(), "{key}");
        assert_eq!(
            record.last_seen_generation(),
            ic_record.last_seen_generation(),
            "{key}"
        );
        assert_eq!(
            record.retired_generation(),
            ic_record.retired_generation(),
            "{key}"
        );
        assert_eq!(record.label(), None, "{key}");
        let ic_schema: Vec<_> = ic_record
            .schema_history()
            .iter()
            .enumerate()
            .filter(|(index, entry)| {
                *index > 0
                    || entry.schema().schema_version.is_some()
                    || entry.schema().schema_fingerprint.is_some()
            })
            .map(|(_, entry)| {
                (
                    entry.generation(),
                    entry.schema().schema_version,
                    entry.schema().schema_fingerprint.clone(),
                )
            })
            .collect();
        let schema: Vec<_> = record
            .schema_history()
            .iter()
            .map(|entry| {
                (
                    entry.generation(),
                    entry.schema().schema_version(),
                    entry.schema().schema_fingerprint().map(str::to_owned),
                )
            })
            .collect();
        assert_eq!(schema, ic_schema, "{key}");
    }
    let ic_generations = ic.allocation_history().generations();
    let generations = converted.allocation_history().generations();
    assert_eq!(generations.len(), ic_generations.len());
    for (generation, ic_generation) in generations.iter().zip(ic_generations) {
        assert_eq!(generation.generation(), ic_generation.generation());
        assert_eq!(
            generation.parent_generation(),
            ic_generation.parent_generation().unwrap_or(0)
        );
        assert_eq!(
            generation.runtime_fingerprint(),
            ic_generation.runtime_fingerprint()
        );
        assert_eq!(generation.declaration_count(), ic_generation.declaration_count());
        assert_eq!(generation.committed_at(), ic_generation.committed_at());
    }
}

/// An ic-memory history with reservations, retirements, schema changes and
/// fingerprints: generations 1..=8.
fn varied_history(memory: &VectorMemory) {
    let users = decl("app.users.v1", 10);
    let orders = decl_schema("app.orders.v1", 11, 1, Some("orders-a"));
    assert_eq!(
        ic_boot(
            memory,
            &[users.clone(), orders.clone()],
            Some("build-1"),
            Some(100)
        ),
        Ok(1)
    );
    assert_eq!(
        ic_reserve(
            memory,
            &[decl("app.audit.v1", 12), decl_schema("app.later.v1", 13, 4, None)]
        ),
        Ok(2)
    );
    let orders2 = decl_schema("app.orders.v1", 11, 2, Some("orders-b"));
    let audit = decl_schema("app.audit.v1", 12, 1, None);
    assert_eq!(
        ic_boot(
            memory,
            &[users.clone(), orders2.clone(), audit.clone()],
            Some("build-2"),
            Some(200)
        ),
        Ok(3)
    );
    assert_eq!(ic_retire(memory, "app.users.v1", 10), Ok(4));
    assert_eq!(
        ic_boot(memory, &[orders2.clone(), audit.clone()], None, None),
        Ok(5)
    );
    let orders3 = decl("app.orders.v1", 11);
    assert_eq!(
        ic_boot(memory, &[orders3, audit.clone()], Some("build-3"), Some(300)),
        Ok(6)
    );
    assert_eq!(ic_retire(memory, "app.later.v1", 13), Ok(7));
    assert_eq!(
        ic_boot(memory, &[orders2, audit], Some("build-3"), Some(400)),
        Ok(8)
    );
}

#[test]
fn a_varied_ic_memory_history_converts_record_for_record() {
    let memory = VectorMemory::default();
    varied_history(&memory);
    let adopted = decode_ic_memory_cell_value(&cell_value(&memory)).expect("the ledger converts");
    assert_same_history(&ic_recover(&memory), adopted.ledger());
    let ledger = adopted.ledger();
    let record = |key: &str| record_of(ledger, key);
    // Spot checks of what the assertion above covers, spelled out.
    assert_eq!(record("app.users.v1").state(), AllocationState::Retired);
    assert_eq!(record("app.users.v1").retired_generation(), Some(4));
    assert_eq!(record("app.later.v1").state(), AllocationState::Retired);
    assert_eq!(record("app.audit.v1").state(), AllocationState::Active);
    assert_eq!(record("app.orders.v1").schema_history().len(), 4);
    assert!(record("app.users.v1").schema_history().is_empty());
}

#[test]
fn an_ic_memory_cell_written_but_never_committed_converts_to_genesis() {
    let memory = VectorMemory::default();
    // A first boot ic-memory refuses still leaves the Cell that `Cell::init`
    // wrote, holding an empty commit store.
    ic_boot_refused(&memory, &[decl("app.a.v1", 10)]);
    let adopted = decode_ic_memory_cell_value(&cell_value(&memory)).expect("an empty store converts");
    assert_eq!(adopted.authoritative_slot(), None);
    assert_eq!(adopted.ledger(), &AllocationLedger::genesis());
}

#[test]
fn a_damaged_ic_memory_slot_is_refused_instead_of_falling_back() {
    let memory = VectorMemory::default();
    ic_boot(&memory, &[decl("app.users.v1", 10)], None, None).expect("boot 1");
    ic_boot(&memory, &[decl("app.users.v1", 10)], None, None).expect("boot 2");
    let mut value = cell_value(&memory);
    // The checksum of slot 0 (generation 2) follows its 8-byte text key.
    let at = value
        .windows(8)
        .position(|w| w == b"checksum")
        .expect("a checksum field")
        + 8
        + 1;
    value[at + 3] ^= 0x01;
    assert_eq!(
        decode_ic_memory_cell_value(&value),
        Err(AdoptionError::SlotDoesNotValidate {
            slot: 0,
            generation: 2
        })
    );
}

/// A holdfast snapshot: (key, ID, schema version, schema fingerprint), all
/// labelled "Store".
fn layout(
    entries: &[(&str, u8, Option<u32>, Option<&str>)],
    fingerprint: Option<&str>,
) -> DeclarationSnapshot {
    let declarations = entries
        .iter()
        .map(|(key, id, version, fingerprint)| {
            let schema = SchemaMetadata::new(*version, fingerprint.map(str::to_owned)).expect("valid schema");
            AllocationDeclaration::memory_manager_with_schema(key, *id, "Store", schema)
                .expect("valid declaration")
        })
        .collect();
    let snapshot = DeclarationSnapshot::new(declarations).expect("unique declarations");
    match fingerprint {
        Some(fingerprint) => snapshot
            .with_runtime_fingerprint(fingerprint)
            .expect("valid fingerprint"),
        None => snapshot,
    }
}

/// The layout that continues [`varied_history`] unchanged.
fn continuing_layout() -> DeclarationSnapshot {
    layout(
        &[
            ("app.orders.v1", 11, Some(2), Some("orders-b")),
            ("app.audit.v1", 12, Some(1), None),
        ],
        Some("holdfast-1"),
    )
}

/// The first eight bytes of ID 0 and the bytes of the `Cell` value.
fn id0_cell(memory: &VectorMemory) -> ([u8; 8], Vec<u8>) {
    let manager = MemoryManager::init(memory.clone());
    let id0 = manager.get(MemoryId::new(0));
    let mut header = [0u8; 8];
    id0.read(0, &mut header);
    let len = u32::from_le_bytes(header[4..8].try_into().expect("4 bytes"));
    let mut value = vec![0u8; len as usize];
    id0.read(8, &mut value);
    (header, value)
}

/// The record of `key` in `ledger`.
fn record_of<'a>(ledger: &'a AllocationLedger, key: &str) -> &'a AllocationRecord {
    ledger
        .allocation_history()
        .records()
        .iter()
        .find(|r| r.stable_key().as_str() == key)
        .expect("recorded")
}

type BootResult = Result<MemoryRuntime<VectorMemory>, RuntimeBootstrapError<Infallible>>;

fn boot_error(result: BootResult) -> String {
    format!("{:?}", result.expect_err("the boot is refused"))
}

/// One store, `app.a.v1` on ID 10.
fn app_a_layout() -> DeclarationSnapshot {
    layout(&[("app.a.v1", 10, None, None)], None)
}

/// The ic-memory adoption error that refuses a boot of `memory` with
/// `snapshot`; panics naming any other outcome.
fn adoption_refusal(memory: &VectorMemory, snapshot: DeclarationSnapshot) -> AdoptionError {
    match MemoryRuntime::bootstrap(memory.clone(), snapshot, &AcceptAllPolicy) {
        Err(RuntimeBootstrapError::StableCellLedger(LedgerStoreError::IcMemory(error))) => error,
        other => panic!("expected an ic-memory adoption refusal: {other:?}"),
    }
}

#[test]
fn an_accepted_boot_adopts_the_ic_memory_ledger_and_keeps_every_fact() {
    let memory = VectorMemory::default();
    varied_history(&memory);
    write_store(&memory, 11, b"orders");
    let converted = decode_ic_memory_cell_value(&cell_value(&memory))
        .expect("converts")
        .into_ledger();
    let (cell_header, cell) = id0_cell(&memory);

    let runtime = MemoryRuntime::bootstrap(memory.clone(), continuing_layout(), &AcceptAllPolicy)
        .expect("a boot that continues the ic-memory history is accepted");
    assert_eq!(runtime.validated().generation(), 9);
    let mut orders = [0u8; 6];
    runtime
        .open("app.orders.v1", 11)
        .expect("validated")
        .read(0, &mut orders);
    assert_eq!(
        &orders, b"orders",
        "the store's bytes are where ic-memory left them"
    );

    // Only byte 0 of the Cell changed.
    let (header, value) = id0_cell(&memory);
    assert_eq!(header[0], ADOPTED_MARKER);
    assert_eq!(header[1..], cell_header[1..]);
    assert_eq!(value, cell);

    // Generations 1..=8 and every record survive; generation 9 is the boot's
    // and records the labels.
    let ledger = common::recovered_ledger(&memory);
    assert_eq!(ledger.current_generation(), 9);
    let generations = ledger.allocation_history().generations();
    assert_eq!(generations[..8], *converted.allocation_history().generations());
    assert_eq!(generations[8].runtime_fingerprint(), Some("holdfast-1"));
    for (record, before) in ledger
        .allocation_history()
        .records()
        .iter()
        .zip(converted.allocation_history().records())
    {
        assert_eq!(record.stable_key(), before.stable_key());
        assert_eq!(record.slot(), before.slot());
        assert_eq!(record.first_generation(), before.first_generation());
        assert_eq!(record.retired_generation(), before.retired_generation());
        assert_eq!(record.schema_history(), before.schema_history());
        if before.state() == AllocationState::Retired {
            assert_eq!(record, before, "a retired record is never touched again");
        } else {
            assert_eq!(record.last_seen_generation(), 9);
        }
    }
    assert_eq!(
        ledger.allocation_history().records().len(),
        converted.allocation_history().records().len()
    );
}

#[test]
fn after_adoption_an_unchanged_boot_writes_nothing() {
    let memory = VectorMemory::default();
    varied_history(&memory);
    MemoryRuntime::bootstrap(memory.clone(), continuing_layout(), &AcceptAllPolicy).expect("adopts");
    let before = image(&memory);
    let runtime =
        MemoryRuntime::bootstrap(memory.clone(), continuing_layout(), &AcceptAllPolicy).expect("boots again");
    assert_eq!(runtime.validated().generation(), 9);
    assert_eq!(image(&memory), before, "no growth on a no-op boot");
    // And a changed boot commits on the adopted store like any other.
    let next = layout(
        &[
            ("app.orders.v1", 11, Some(2), Some("orders-b")),
            ("app.audit.v1", 12, Some(1), None),
            ("app.new.v1", 14, None, None),
        ],
        Some("holdfast-2"),
    );
    let runtime = MemoryRuntime::bootstrap(memory.clone(), next, &AcceptAllPolicy).expect("boots");
    assert_eq!(runtime.validated().generation(), 10);
    assert_eq!(common::recovered_ledger(&memory).current_generation(), 10);
}

#[test]
fn plan_and_check_say_adoption_would_happen_and_write_nothing() {
    let memory = VectorMemory::default();
    varied_history(&memory);
    let before = image(&memory);
    let plan = MemoryRuntime::plan(&memory, continuing_layout(), &AcceptAllPolicy).expect("plans");
    let adoption = plan.adoption.expect("ID 0 holds an ic-memory ledger");
    assert_eq!(adoption.generation, 8);
    assert_eq!(
        adoption.to_string(),
        format!(
            "adopts an ic-memory 0.5 ledger at generation 8 (its holdfast store will start at byte {} of ID 0)",
            adoption.forward_offset
        )
    );
    assert!(matches!(
        plan.verdict,
        LayoutVerdict::Accepted {
            next_generation: Some(9),
            ..
        }
    ));
    let (ledger, validated) =
        MemoryRuntime::check(&memory, continuing_layout(), &AcceptAllPolicy).expect("checks");
    assert_eq!(ledger.current_generation(), 8);
    assert_eq!(validated.generation(), 8);
    let export = diagnostic_export_of(&memory).expect("exports");
    let ic_memory = export.ic_memory.expect("an ic-memory ledger");
    assert_eq!(ic_memory.state, IcMemoryLedgerState::Pending);
    assert_eq!(ic_memory.adoption.generation, Some(8));
    assert_eq!(export.current_generation, 8);
    assert_eq!(
        image(&memory),
        before,
        "plan, check and diagnostics write nothing"
    );

    MemoryRuntime::bootstrap(memory.clone(), continuing_layout(), &AcceptAllPolicy).expect("adopts");
    let plan = MemoryRuntime::plan(&memory, continuing_layout(), &AcceptAllPolicy).expect("plans");
    assert_eq!(plan.adoption, None, "adopted already");
    let export = diagnostic_export_of(&memory).expect("exports");
    let ic_memory = export.ic_memory.expect("adopted from ic-memory");
    assert_eq!(ic_memory.state, IcMemoryLedgerState::Adopted);
    assert_eq!(ic_memory.adoption.generation, Some(8));
    assert_eq!(export.current_generation, 9);
}

#[test]
fn a_boot_contradicting_the_ic_memory_history_is_refused_as_against_holdfasts_own_and_writes_nothing() {
    let pending = VectorMemory::default();
    varied_history(&pending);
    let adopted = memory_from(&image(&pending));
    MemoryRuntime::bootstrap(adopted.clone(), continuing_layout(), &AcceptAllPolicy).expect("adopts");
    let contradicting = [
        // A retired key declared again.
        layout(&[("app.users.v1", 10, None, None)], None),
        // An active key moved to another ID.
        layout(&[("app.orders.v1", 12, None, None)], None),
        // A new key on a retired key's ID.
        layout(&[("app.fresh.v1", 13, None, None)], None),
        // A new key on a live key's ID.
        layout(&[("app.fresh.v1", 11, None, None)], None),
    ];
    let pending_bytes = image(&pending);
    let adopted_bytes = image(&adopted);
    for snapshot in contradicting {
        let on_pending = MemoryRuntime::bootstrap(pending.clone(), snapshot.clone(), &AcceptAllPolicy);
        let on_adopted = MemoryRuntime::bootstrap(adopted.clone(), snapshot.clone(), &AcceptAllPolicy);
        let (on_pending, on_adopted) = (boot_error(on_pending), boot_error(on_adopted));
        assert_eq!(on_pending, on_adopted, "{snapshot:?}");
        assert!(on_pending.starts_with("Validation("), "{on_pending}");
        assert_eq!(image(&pending), pending_bytes, "a refused boot writes nothing");
        assert_eq!(image(&adopted), adopted_bytes, "a refused boot writes nothing");
        let plan = MemoryRuntime::plan(&pending, snapshot, &AcceptAllPolicy).expect("plans");
        assert!(matches!(plan.verdict, LayoutVerdict::Refused { .. }));
    }
    let retired = MemoryRuntime::bootstrap(
        pending.clone(),
        layout(&[("app.users.v1", 10, None, None)], None),
        &AcceptAllPolicy,
    );
    assert!(matches!(
        retired,
        Err(RuntimeBootstrapError::Validation(
            AllocationValidationError::RetiredAllocation { .. }
        ))
    ));
}

#[test]
fn a_reservation_or_retirement_over_an_ic_memory_ledger_adopts_it_first() {
    let memory = VectorMemory::default();
    varied_history(&memory);
    let reservation = AllocationDeclaration::memory_manager("app.next.v1", 20, "Next").expect("valid");
    assert_eq!(
        MemoryRuntime::reserve(memory.clone(), vec![reservation], &AcceptAllPolicy).expect("reserves"),
        9
    );
    assert_eq!(id0_cell(&memory).0[0], ADOPTED_MARKER);
    let retirement = AllocationRetirement::new(
        "app.audit.v1",
        AllocationSlotDescriptor::memory_manager(12).expect("usable"),
    )
    .expect("valid");
    assert_eq!(
        MemoryRuntime::retire(memory.clone(), retirement).expect("retires"),
        10
    );
    let ledger = common::recovered_ledger(&memory);
    let record = |key: &str| record_of(&ledger, key);
    assert_eq!(record("app.next.v1").state(), AllocationState::Reserved);
    assert_eq!(record("app.audit.v1").retired_generation(), Some(10));
    assert_eq!(record("app.users.v1").retired_generation(), Some(4));
}

#[test]
fn an_ic_memory_cell_that_never_committed_is_adopted_from_genesis() {
    let memory = VectorMemory::default();
    ic_boot_refused(&memory, &[decl("app.a.v1", 10)]);
    let plan = MemoryRuntime::plan(&memory, app_a_layout(), &AcceptAllPolicy).expect("plans");
    assert_eq!(plan.adoption.map(|a| a.generation), Some(0));
    let runtime = MemoryRuntime::bootstrap(memory.clone(), app_a_layout(), &AcceptAllPolicy).expect("boots");
    assert_eq!(runtime.validated().generation(), 1);
    assert_eq!(common::recovered_ledger(&memory).current_generation(), 1);
    assert_eq!(id0_cell(&memory).0[0], ADOPTED_MARKER);
}

#[test]
fn an_ic_memory_history_holdfast_refuses_is_not_adopted_and_nothing_is_written() {
    let memory = VectorMemory::default();
    ic_boot(&memory, &[decl("app.a.v1", 10)], None, None).expect("boots");
    // ic-memory 0.5.1 accepts retiring its own ledger key.
    assert_eq!(ic_retire(&memory, "ic_memory.ledger.v1", 0), Ok(2));
    let before = image(&memory);
    let error = adoption_refusal(&memory, app_a_layout());
    assert!(
        matches!(
            error,
            AdoptionError::Integrity(LedgerIntegrityError::GovernanceRecordAltered {
                state: AllocationState::Retired,
                ..
            })
        ),
        "{error:?}"
    );
    assert_eq!(image(&memory), before);
}

#[test]
fn byte_0_turned_back_into_a_cell_after_later_commits_is_refused_not_adopted_again() {
    let memory = VectorMemory::default();
    varied_history(&memory);
    MemoryRuntime::bootstrap(memory.clone(), continuing_layout(), &AcceptAllPolicy).expect("adopts");
    let manager = MemoryManager::init(memory.clone());
    manager.get(MemoryId::new(0)).write(0, b"S");
    let error = adoption_refusal(&memory, continuing_layout());
    assert!(
        matches!(
            error,
            AdoptionError::ForwardedStoreAhead {
                cell_generation: 8,
                store_generation: 9
            }
        ),
        "{error:?}"
    );
}

#[test]
fn an_adopted_marker_with_no_store_past_the_cell_is_refused() {
    let memory = VectorMemory::default();
    ic_boot(&memory, &[decl("app.a.v1", 10)], None, None).expect("boots");
    let manager = MemoryManager::init(memory.clone());
    let id0 = manager.get(MemoryId::new(0));
    assert_eq!(
        id0.size(),
        1,
        "the Cell fits in ID 0's one page, so the store would start at page 1"
    );
    id0.write(0, &[ADOPTED_MARKER]);
    let error = adoption_refusal(&memory, app_a_layout());
    assert!(
        matches!(
            error,
            AdoptionError::ForwardedStoreMissing {
                forward_offset: 65536,
                memory_bytes: 65536
            }
        ),
        "{error:?}"
    );
}

/// Cuts an adopting boot after every byte it writes (the MemoryManager's
/// grow of ID 0, the store past the `Cell`, the flip of byte 0, then the
/// boot's own commit) and checks what recovery gives each time.
#[test]
fn an_adopting_boot_cut_at_any_byte_leaves_the_ic_memory_ledger_or_the_converted_one() {
    let start = VectorMemory::default();
    ic_boot(
        &start,
        &[
            decl("app.users.v1", 10),
            decl_schema("app.orders.v1", 11, 1, None),
        ],
        Some("b1"),
        None,
    )
    .expect("boot 1");
    ic_reserve(&start, &[decl("app.audit.v1", 12)]).expect("reserve");
    ic_retire(&start, "app.users.v1", 10).expect("retire");
    let start = image(&start);
    let entries = [
        ("app.orders.v1", 11, Some(1), None),
        ("app.audit.v1", 12, None, None),
    ];
    let boot = |budget: Option<u64>| {
        let memory = CutMemory::new(&start, budget);
        let result = MemoryRuntime::bootstrap(memory.clone(), layout(&entries, None), &AcceptAllPolicy);
        // Past the cut the process is dead: the boot may read back a store
        // whose writes were dropped and stop; it writes nothing more then,
        // exactly as a process that died at the cut.
        assert!(result.is_ok() || budget.is_some(), "{:?}", result.err());
        memory
    };
    let total = boot(None).written.get();
    let cell = id0_cell(&memory_from(&start));
    let (mut pending, mut converted, mut committed) = (0, 0, 0);
    for cut in 0..=total {
        let memory = boot(Some(cut));
        let left = CutMemory::new(&memory.bytes.borrow(), None);
        let plan = MemoryRuntime::plan(&left, layout(&entries, None), &AcceptAllPolicy)
            .unwrap_or_else(|err| panic!("recovery after a cut at {cut} of {total}: {err}"));
        assert_eq!(left.written.get(), 0, "recovery wrote after a cut at {cut}");
        match (plan.adoption, plan.ledger.current_generation()) {
            (Some(adoption), 3) => {
                assert_eq!(adoption.generation, 3);
                assert_eq!(
                    id0_cell(&left.bytes),
                    cell,
                    "the Cell is untouched until it is adopted"
                );
                pending += 1;
            }
            (None, 3 | 4) => {
                let (header, value) = id0_cell(&left.bytes);
                assert_eq!(
                    (header[0], &header[1..], &value),
                    (ADOPTED_MARKER, &cell.0[1..], &cell.1)
                );
                if plan.ledger.current_generation() == 3 {
                    converted += 1;
                } else {
                    committed += 1;
                }
            }
            other => panic!("a cut at {cut} of {total} left {other:?}"),
        }
        // The memory left behind boots to the same generation 4.
        let rebooted = MemoryRuntime::bootstrap(left, layout(&entries, None), &AcceptAllPolicy)
            .unwrap_or_else(|err| panic!("reboot after a cut at {cut}: {err}"));
        assert_eq!(rebooted.validated().generation(), 4, "cut at {cut}");
    }
    // Once the marker landed, the store at F holds the converted ledger
    // until the boot's own commit lands.
    // The boot's own commit is complete once its presence marker landed;
    // only the high-water mark's two copies follow it.
    assert_eq!(
        committed,
        1 + 2 * HIGH_WATER_LEN,
        "{pending} {converted} {committed}"
    );
    assert!(
        pending > 128 && converted > 128,
        "{pending} {converted} {committed}"
    );
    assert_eq!(pending + converted + committed, total + 1);
}

#[test]
fn a_long_ic_memory_history_converts_and_is_adopted() {
    let memory = VectorMemory::default();
    let mut keys: Vec<(String, u8, u32)> = Vec::new();
    let (mut generation, mut next_id) = (0, 10u8);
    for round in 0..300u32 {
        // Every 7th round a new key, every 11th a schema change, every
        // 13th a reservation, every 17th a retirement of the oldest live key.
        if round % 7 == 0 {
            keys.push((format!("app.k{round}.v1"), next_id, 1));
            next_id += 1;
        }
        if round % 11 == 0
            && let Some(key) = keys.last_mut()
        {
            key.2 += 1;
        }
        generation = if round % 13 == 5 {
            let reserved = format!("app.r{round}.v1");
            let generation = ic_reserve(&memory, &[decl(&reserved, next_id)]).expect("reserves");
            keys.push((reserved, next_id, 1));
            next_id += 1;
            generation
        } else if round % 17 == 16 && keys.len() > 1 {
            let (key, id, _) = keys.remove(0);
            ic_retire(&memory, &key, id).expect("retires")
        } else {
            let decls: Vec<_> = keys
                .iter()
                .map(|(key, id, version)| decl_schema(key, *id, *version, Some(&format!("fp{version}"))))
                .collect();
            ic_boot(
                &memory,
                &decls,
                Some(&format!("build-{round}")),
                Some(u64::from(round)),
            )
            .expect("boots")
        };
    }
    assert_eq!(generation, 300);
    let adopted = decode_ic_memory_cell_value(&cell_value(&memory)).expect("converts");
    assert_same_history(&ic_recover(&memory), adopted.ledger());
    let entries: Vec<(String, u8, u32, String)> = keys
        .iter()
        .map(|(key, id, version)| (key.clone(), *id, *version, format!("fp{version}")))
        .collect();
    let entries: Vec<(&str, u8, Option<u32>, Option<&str>)> = entries
        .iter()
        .map(|(key, id, version, fingerprint)| {
            (key.as_str(), *id, Some(*version), Some(fingerprint.as_str()))
        })
        .collect();
    let runtime = MemoryRuntime::bootstrap(
        memory.clone(),
        layout(&entries, Some("holdfast")),
        &AcceptAllPolicy,
    )
    .expect("the history's own layout is accepted");
    assert_eq!(runtime.validated().generation(), 301);
    let ledger = common::recovered_ledger(&memory);
    assert_eq!(
        ledger.allocation_history().generations()[..300],
        *adopted.ledger().allocation_history().generations()
    );
}

/// A codec that writes given bytes as a ledger's payload, so that ic-memory
/// itself seals (checksums) a payload the test chose.
struct Sealed {
    payload: Vec<u8>,
    ledger: ic_memory::AllocationLedger,
}

impl ic_memory::LedgerCodec for Sealed {
    type Error = ();
    fn encode(&self, _: &ic_memory::AllocationLedger) -> Result<Vec<u8>, ()> {
        Ok(self.payload.clone())
    }
    fn decode(&self, _: &[u8]) -> Result<ic_memory::AllocationLedger, ()> {
        Ok(self.ledger.clone())
    }
}

/// The `Cell` value ic-memory writes for a store whose only slot holds
/// `payload`, sealed at `ledger`'s generation.
fn sealed_cell_value(ledger: &ic_memory::AllocationLedger, payload: Vec<u8>) -> Vec<u8> {
    let mut store = ic_memory::LedgerCommitStore::default();
    store
        .commit(
            ledger,
            &Sealed {
                payload,
                ledger: ledger.clone(),
            },
        )
        .expect("ic-memory seals the payload");
    StableCellLedgerRecord::new(store).to_bytes().into_owned()
}

/// The ledger ic-memory reads from `payload`, which holdfast accepted:
/// ic-memory must decode it and accept its integrity too.
fn ic_memory_accepts(payload: &[u8]) -> ic_memory::AllocationLedger {
    let read = ic_memory::CborLedgerCodec
        .decode(payload)
        .expect("holdfast accepted a payload ic-memory cannot decode");
    read.validate_committed_integrity()
        .expect("holdfast accepted a ledger ic-memory would refuse");
    read
}

fn varied_ledger() -> (ic_memory::AllocationLedger, Vec<u8>) {
    let memory = VectorMemory::default();
    varied_history(&memory);
    let ledger = ic_recover(&memory);
    let payload = ic_memory::CborLedgerCodec.encode(&ledger).expect("encodes");
    (ledger, payload)
}

/// The number of values in `value` (map keys are not counted: they are
/// field names, whose mutations the byte-level property covers).
fn node_count(value: &ciborium::Value) -> usize {
    1 + match value {
        ciborium::Value::Array(items) => items.iter().map(node_count).sum(),
        ciborium::Value::Map(entries) => entries.iter().map(|(_, item)| node_count(item)).sum(),
        _ => 0,
    }
}

/// The `n`-th value of `value` in pre-order (as [`node_count`] counts).
fn nth_node(value: &mut ciborium::Value, n: usize) -> Result<&mut ciborium::Value, usize> {
    if n == 0 {
        return Ok(value);
    }
    let mut n = n - 1;
    match value {
        ciborium::Value::Array(items) => {
            for item in items {
                match nth_node(item, n) {
                    Ok(found) => return Ok(found),
                    Err(rest) => n = rest,
                }
            }
        }
        ciborium::Value::Map(entries) => {
            for (_, item) in entries {
                match nth_node(item, n) {
                    Ok(found) => return Ok(found),
                    Err(rest) => n = rest,
                }
            }
        }
        _ => {}
    }
    Err(n)
}

/// Every text value in `value`: keys, states, variant names, fingerprints.
fn texts(value: &ciborium::Value, out: &mut Vec<String>) {
    match value {
        ciborium::Value::Text(text) => out.push(text.clone()),
        ciborium::Value::Array(items) => items.iter().for_each(|item| texts(item, out)),
        ciborium::Value::Map(entries) => entries.iter().for_each(|(_, item)| texts(item, out)),
        _ => {}
    }
}

/// One structure-aware edit of `node`: an integer moved to an edge, a text
/// swapped for another text of the same ledger, null and values exchanged,
/// a list item or map entry dropped, duplicated or swapped.
fn mutate_node(node: &mut ciborium::Value, choice: u8, pool: &[String]) {
    use ciborium::Value;
    let pick = usize::from(choice);
    match node {
        Value::Integer(integer) => {
            let n = i128::from(*integer);
            let candidates = [
                0,
                1,
                n - 1,
                n + 1,
                n + 2,
                255,
                256,
                i128::from(u32::MAX),
                i128::from(u64::MAX),
            ];
            let next = candidates[pick % candidates.len()];
            *node = ciborium::value::Integer::try_from(next).map_or(Value::Null, Value::Integer);
        }
        Value::Text(text) => {
            *text = match pick % 3 {
                0 => pool[pick % pool.len()].clone(),
                1 => format!("{text}x"),
                _ => text.to_uppercase(),
            };
        }
        Value::Null => *node = Value::Integer((pick % 4).into()),
        Value::Array(items) if !items.is_empty() => {
            let at = pick % items.len();
            match pick % 3 {
                0 => {
                    items.remove(at);
                }
                1 => items.insert(at, items[at].clone()),
                _ => {
                    let last = items.len() - 1;
                    items.swap(at, last);
                }
            }
        }
        Value::Map(entries) if entries.len() > 1 => {
            let at = pick % entries.len();
            match pick % 3 {
                0 => {
                    entries.remove(at);
                }
                1 => entries.push(entries[at].clone()),
                _ => {
                    let last = entries.len() - 1;
                    let value = entries[at].1.clone();
                    entries[at].1 = entries[last].1.clone();
                    entries[last].1 = value;
                }
            }
        }
        _ => *node = Value::Null,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Structure-aware: the ic-memory ledger as a CBOR tree, one to three
    /// of its values changed, re-encoded and re-sealed by ic-memory. Never a
    /// panic; whatever holdfast accepts is exactly what ic-memory reads from
    /// the same bytes, and a ledger ic-memory itself would accept.
    #[test]
    fn a_ledger_with_changed_values_is_refused_or_read_exactly_as_ic_memory_reads_it(
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
    ) {
        let (ledger, payload) = varied_ledger();
        let mut tree: ciborium::Value = ciborium::from_reader(payload.as_slice()).expect("CBOR");
        let mut pool = Vec::new();
        texts(&tree, &mut pool);
        for (position, choice) in edits {
            let n = position.index(node_count(&tree));
            let node = nth_node(&mut tree, n).expect("n is below the node count");
            mutate_node(node, choice, &pool);
        }
        let mut payload = Vec::new();
        ciborium::into_writer(&tree, &mut payload).expect("encodes");
        let value = sealed_cell_value(&ledger, payload.clone());
        if let Ok(adopted) = decode_ic_memory_cell_value(&value) {
            let read = ic_memory_accepts(&payload);
            assert_same_history(&read, adopted.ledger());
        }
    }

    /// Structure-aware: a mutated ledger payload, re-sealed by ic-memory so
    /// that the decoder itself is reached. Never a panic; and whatever is
    /// accepted is exactly what ic-memory reads from the same bytes, and a
    /// ledger ic-memory itself would accept.
    #[test]
    fn a_mutated_resealed_ic_memory_ledger_is_refused_or_read_exactly_as_ic_memory_reads_it(
        edits in prop::collection::vec((any::<prop::sample::Index>(), 0u8..4, any::<u8>()), 1..4),
    ) {
        let (ledger, mut payload) = varied_ledger();
        for (position, action, value) in edits {
            let at = position.index(payload.len());
            match action {
                0 => payload[at] ^= 1 << (value % 8),
                1 => payload[at] = value,
                2 => payload.truncate(at),
                _ => payload.insert(at, value),
            }
            if payload.is_empty() {
                payload.push(value);
            }
        }
        let value = sealed_cell_value(&ledger, payload.clone());
        if let Ok(adopted) = decode_ic_memory_cell_value(&value) {
            let read = ic_memory_accepts(&payload);
            prop_assert_eq!(read.current_generation(), ledger.current_generation());
            assert_same_history(&read, adopted.ledger());
        }
    }

    /// Raw mutations of a whole `Cell` value (not re-sealed): never a panic,
    /// and a changed value is never read as another ledger.
    #[test]
    fn a_mutated_cell_value_never_panics_or_yields_another_ledger(
        edits in prop::collection::vec((any::<prop::sample::Index>(), 0u8..3, any::<u8>()), 1..4),
    ) {
        let memory = VectorMemory::default();
        ic_boot(&memory, &[decl("app.users.v1", 10)], None, None).expect("boot 1");
        ic_boot(&memory, &[decl_schema("app.users.v1", 10, 2, None)], None, None).expect("boot 2");
        let original = cell_value(&memory);
        let expected = decode_ic_memory_cell_value(&original).expect("converts").into_ledger();
        let mut value = original.clone();
        for (position, action, byte) in edits {
            let at = position.index(value.len());
            match action {
                0 => value[at] ^= 1 << (byte % 8),
                1 => value[at] = byte,
                _ => value.truncate(at.max(1)),
            }
        }
        if let Ok(adopted) = decode_ic_memory_cell_value(&value) {
            // Only the unsealed parts (map framing the decoder accepts in any
            // order, or a slot that is not authoritative) can change and
            // still decode; the authoritative ledger must be the same.
            prop_assert_eq!(adopted.ledger(), &expected);
        }
    }
}

/// The process-wide default runtime (as a canister uses it) adopts too: its
/// boot is the same recovery and commit.
#[cfg(feature = "test-support")]
#[test]
fn the_default_runtime_adopts_an_ic_memory_ledger() {
    let _lock = holdfast_memory::TEST_RUNTIME_LOCK
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let memory = VectorMemory::default();
    varied_history(&memory);
    holdfast_memory::reset_for_tests_with_memory(memory.clone());
    let schema = |version, fingerprint: Option<&str>| {
        SchemaMetadata::new(Some(version), fingerprint.map(str::to_owned)).expect("valid schema")
    };
    holdfast_memory::register_static_memory_manager_declaration_with_schema(
        11,
        "app",
        "Orders",
        "app.orders.v1",
        schema(2, Some("orders-b")),
    )
    .expect("registers");
    holdfast_memory::register_static_memory_manager_declaration_with_schema(
        12,
        "app",
        "Audit",
        "app.audit.v1",
        schema(1, None),
    )
    .expect("registers");
    let validated = holdfast_memory::bootstrap_default_memory_manager().expect("the default runtime adopts");
    assert_eq!(validated.generation(), 9);
    assert_eq!(id0_cell(&memory).0[0], ADOPTED_MARKER);
    assert_eq!(common::recovered_ledger(&memory).current_generation(), 9);
    holdfast_memory::reset_for_tests();
}

#[test]
fn a_commit_store_opened_directly_on_an_ic_memory_cell_names_it() {
    let memory = VectorMemory::default();
    ic_boot(&memory, &[decl("app.users.v1", 10)], None, None).expect("boots");
    let manager = MemoryManager::init(memory.clone());
    let store = LedgerCommitStore::new(manager.get(MemoryId::new(0)));
    assert_eq!(
        store.recover(&CborLedgerCodec),
        Err(CommitRecoveryError::IcMemoryLedger)
    );
    MemoryRuntime::bootstrap(
        memory.clone(),
        layout(&[("app.users.v1", 10, None, None)], None),
        &AcceptAllPolicy,
    )
    .expect("adopts");
    let store = LedgerCommitStore::new(manager.get(MemoryId::new(0)));
    assert_eq!(
        store.recover(&CborLedgerCodec),
        Err(CommitRecoveryError::IcMemoryLedger),
        "an adopted Cell still starts ID 0"
    );
}
