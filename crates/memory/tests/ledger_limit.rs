//! Near the ledger's size limit, `plan` and `check` give the boot's exact
//! verdict: a layout that validates but whose new generation would not fit
//! is refused by both, with the error the boot returns, and nothing is
//! written.

mod common;

use common::{CutMemory, image};
use holdfast_memory::codec::MAX_ENCODED_LEDGER_LEN;
use holdfast_memory::stable_structures::memory_manager::{MemoryId, MemoryManager};
use holdfast_memory::stable_structures::{Memory, VectorMemory};
use holdfast_memory::{
    AcceptAllPolicy, AllocationLedger, CborLedgerCodec, DeclarationCollector, DeclarationSnapshot,
    LayoutVerdict, LedgerCodec, LedgerCommitError, MemoryRuntime, RuntimeBootstrapError,
    validate_allocations,
};

/// The layout every generation declares, with a 200-byte build fingerprint
/// that changes each time (so each boot commits a generation).
fn build(number: usize) -> DeclarationSnapshot {
    DeclarationCollector::new()
        .with_memory_manager("ic_memory.ledger.v1", 0, "MemoryLayoutLedger")
        .unwrap()
        .with_memory_manager("app.users.v1", 100, "Users")
        .unwrap()
        .seal()
        .unwrap()
        .with_runtime_fingerprint(format!("build-{number:08}-{}", "f".repeat(185)))
        .unwrap()
}

fn next_generation(ledger: AllocationLedger) -> AllocationLedger {
    let number = ledger.current_generation() as usize + 1;
    let validated = validate_allocations(&ledger, build(number), &AcceptAllPolicy).unwrap();
    ledger
        .into_validated_generation(&validated, Some(1_700_000_000_000_000_000))
        .unwrap()
}

/// A ledger whose next generation would not fit, staged in memory (the way
/// ten thousand boots would have built it, without writing it ten thousand
/// times).
fn ledger_one_generation_short_of_the_limit() -> AllocationLedger {
    let mut ledger = AllocationLedger::genesis();
    loop {
        let len = CborLedgerCodec.encode(&ledger).len();
        let room = MAX_ENCODED_LEDGER_LEN - len;
        // A generation costs about 230 bytes; close in fast, then one at a time.
        let step = (room / 230).saturating_sub(4).max(1);
        let mut candidate = ledger.clone();
        for _ in 0..step {
            candidate = next_generation(candidate);
        }
        if CborLedgerCodec.encode(&candidate).len() > MAX_ENCODED_LEDGER_LEN {
            return ledger;
        }
        ledger = candidate;
    }
}

/// An image whose ledger store holds `ledger` in slot 0, sealed as a commit
/// would seal it.
fn image_holding(ledger: &AllocationLedger) -> VectorMemory {
    let memory = VectorMemory::default();
    let manager = MemoryManager::init(memory.clone());
    let id0 = manager.get(MemoryId::new(0));
    let payload = CborLedgerCodec.encode(ledger);
    id0.grow((128 + payload.len() as u64).div_ceil(65536));
    let mut store = [0u8; 32];
    store[..8].copy_from_slice(b"HFLEDGER");
    store[8] = 1;
    id0.write(0, &store);
    id0.write(128, &payload);
    let mut slot = [0u8; 32];
    slot[0] = 0xC5;
    slot[8..16].copy_from_slice(&ledger.current_generation().to_le_bytes());
    slot[16..24].copy_from_slice(&128u64.to_le_bytes());
    slot[24..28].copy_from_slice(&(payload.len() as u32).to_le_bytes());
    let crc = crc32c::crc32c_append(crc32c::crc32c(&slot[1..28]), &payload);
    slot[28..32].copy_from_slice(&crc.to_le_bytes());
    id0.write(32, &slot);
    memory
}

#[test]
fn plan_and_check_refuse_a_boot_whose_ledger_would_pass_the_size_limit_as_the_boot_does() {
    let ledger = ledger_one_generation_short_of_the_limit();
    let memory = image_holding(&ledger);
    let next = build(ledger.current_generation() as usize + 1);

    // The unchanged layout still boots and writes nothing.
    let same = build(ledger.current_generation() as usize);
    let plan = MemoryRuntime::plan(&memory, same, &AcceptAllPolicy).unwrap();
    assert!(matches!(
        plan.verdict,
        LayoutVerdict::Accepted {
            next_generation: None,
            ..
        }
    ));

    let plan = MemoryRuntime::plan(&memory, next.clone(), &AcceptAllPolicy).unwrap();
    let LayoutVerdict::CommitRefused {
        error: RuntimeBootstrapError::LedgerCommit(LedgerCommitError::LedgerTooLarge { len: planned }),
    } = plan.verdict
    else {
        panic!("plan must refuse the commit: {:?}", plan.verdict);
    };
    assert!(planned > MAX_ENCODED_LEDGER_LEN);
    assert!(matches!(
        MemoryRuntime::check(&memory, next.clone(), &AcceptAllPolicy),
        Err(RuntimeBootstrapError::LedgerCommit(LedgerCommitError::LedgerTooLarge { len })) if len == planned
    ));

    let before = image(&memory);
    let counting = CutMemory::counting(&memory);
    let booted = MemoryRuntime::bootstrap(counting.clone(), next, &AcceptAllPolicy);
    assert!(
        matches!(
            booted,
            Err(RuntimeBootstrapError::LedgerCommit(LedgerCommitError::LedgerTooLarge { len })) if len == planned
        ),
        "{booted:?}"
    );
    assert_eq!(counting.written.get(), 0);
    assert_eq!(image(&memory), before);
}
