//! Corruption campaign: flipped, zeroed or truncated bytes of a stored ledger
//! recover to the right ledger or to a typed error — never a wrong ledger,
//! never a panic, never a write.

mod common;

use common::{CutMemory, boot, image, layout, memory_from};
use holdfast_memory::stable_structures::VectorMemory;
use holdfast_memory::stable_structures::memory_manager::{MemoryId, MemoryManager};
use holdfast_memory::{
    AcceptAllPolicy, AllocationLedger, CommitRecoveryError, LedgerCommitError, MemoryRuntime,
    RuntimeBootstrapError, SlotCorruption,
};
use proptest::prelude::*;

/// Raw offset of ID 0's first byte: bucket 0 starts at page 1.
const ID0: usize = 65536;

/// A memory with two committed generations (both slots present) and data in
/// an application store.
fn two_generation_image() -> (Vec<u8>, AllocationLedger) {
    use holdfast_memory::stable_structures::Memory;
    let memory = VectorMemory::default();
    boot(&memory, &[("app.users.v1", 100)])
        .unwrap()
        .open("app.users.v1", 100)
        .unwrap()
        .grow(1);
    let runtime = boot(&memory, &[("app.users.v1", 100), ("app.orders.v1", 101)]).unwrap();
    (image(&memory), runtime.ledger().clone())
}

fn recover(
    bytes: &[u8],
) -> (
    Result<AllocationLedger, RuntimeBootstrapError<std::convert::Infallible>>,
    u64,
) {
    let memory = CutMemory::new(bytes, None);
    let result = MemoryRuntime::check(&memory, layout(&[]), &AcceptAllPolicy).map(|(ledger, _)| ledger);
    (result, memory.written.get())
}

/// The byte range of ID 0 that holds the store (headers and both payloads).
fn store_len(bytes: &[u8]) -> usize {
    let memory = memory_from(bytes);
    let manager = MemoryManager::init(memory);
    let export = holdfast_memory::LedgerCommitStore::new(manager.get(MemoryId::new(0))).physical();
    let ends = [export.slot0, export.slot1].into_iter().map(|slot| match slot {
        holdfast_memory::SlotDiagnostic::Valid {
            payload_offset,
            payload_len,
            ..
        } => payload_offset as usize + payload_len as usize,
        _ => 0,
    });
    ends.max().unwrap()
}

#[test]
fn corrupt_newer_slot_fails_closed_naming_the_slot_and_never_rolls_back() {
    let (mut bytes, _) = two_generation_image();
    // Generation 2 lives in slot 1; flip a byte of its header's generation.
    let generation_byte = ID0 + 64 + 8;
    bytes[generation_byte] ^= 0x01;
    let (result, written) = recover(&bytes);
    assert_eq!(written, 0);
    match result {
        Err(RuntimeBootstrapError::LedgerCommit(LedgerCommitError::Recovery(
            CommitRecoveryError::CorruptSlot {
                slot: 1,
                corruption: SlotCorruption::ChecksumMismatch { .. },
            },
        ))) => {}
        other => panic!("expected slot 1 to be reported corrupt, got {other:?}"),
    }
    // The other slot is still readable in the diagnostic.
    let memory = memory_from(&bytes);
    let diagnostic = holdfast_memory::commit_recovery_diagnostic_of(&memory).unwrap();
    assert!(matches!(
        diagnostic.slot0,
        holdfast_memory::SlotDiagnostic::Valid { generation: 1, .. }
    ));
}

/// The presence marker is outside the checksum: one damaged byte there used
/// to make the newest slot absent and recover the generation before it, so
/// the keys of the newest generation vanished and their slots could be
/// reused. The high-water mark refuses that, naming both generations, and a
/// boot writes nothing.
#[test]
fn a_damaged_marker_of_the_newest_slot_is_refused_as_a_rollback_not_recovered_as_older() {
    let (bytes, _) = two_generation_image();
    for marker in [0x00, 0xC4, 0xFF] {
        let mut damaged = bytes.clone();
        // Generation 2 lives in slot 1, whose header starts at 64.
        damaged[ID0 + 64] = marker;
        assert_eq!(
            recovery_error(&damaged),
            CommitRecoveryError::RolledBack {
                authoritative_generation: Some(1),
                committed_generation: 2,
            }
        );
        let memory = CutMemory::new(&damaged, None);
        let refused =
            MemoryRuntime::bootstrap(memory.clone(), layout(&[("app.users.v1", 100)]), &AcceptAllPolicy);
        assert!(refused.is_err());
        assert_eq!(memory.written.get(), 0, "a refused boot wrote");
    }
    // Damage to one copy of the mark itself changes nothing.
    for copy in [96, 112] {
        let mut damaged = bytes.clone();
        damaged[ID0 + copy] ^= 0x40;
        let (result, _) = recover(&damaged);
        assert_eq!(result.unwrap().current_generation(), 2);
    }
}

/// Rewrites slot `slot`'s header to claim `generation`, with a checksum
/// that matches: a forged but self-consistent slot, which only a writer
/// other than holdfast could produce.
fn forge_slot_generation(bytes: &[u8], slot: u64, generation: u64) -> Vec<u8> {
    use holdfast_memory::stable_structures::Memory;
    let memory = memory_from(bytes);
    let manager = MemoryManager::init(memory.clone());
    let id0 = manager.get(MemoryId::new(0));
    let at = 32 + 32 * slot;
    let mut header = [0u8; 32];
    id0.read(at, &mut header);
    header[8..16].copy_from_slice(&generation.to_le_bytes());
    let offset = u64::from_le_bytes(header[16..24].try_into().unwrap());
    let len = u32::from_le_bytes(header[24..28].try_into().unwrap()) as usize;
    let mut payload = vec![0u8; len];
    id0.read(offset, &mut payload);
    let checksum = crc32c::crc32c_append(crc32c::crc32c(&header[1..28]), &payload);
    header[28..32].copy_from_slice(&checksum.to_le_bytes());
    id0.write(at, &header);
    image(&memory)
}

fn recovery_error(bytes: &[u8]) -> CommitRecoveryError {
    let (result, written) = recover(bytes);
    assert_eq!(written, 0);
    match result {
        Err(RuntimeBootstrapError::LedgerCommit(LedgerCommitError::Recovery(err))) => err,
        other => panic!("expected a recovery error, got {other:?}"),
    }
}

#[test]
fn two_valid_slots_at_one_generation_with_different_bytes_are_ambiguous() {
    let (bytes, _) = two_generation_image();
    // Slot 0 holds generation 1; make it claim generation 2 like slot 1.
    let forged = forge_slot_generation(&bytes, 0, 2);
    assert_eq!(
        recovery_error(&forged),
        CommitRecoveryError::AmbiguousSlots { generation: 2 }
    );
}

#[test]
fn a_slot_whose_header_and_ledger_generations_differ_is_refused() {
    let (bytes, _) = two_generation_image();
    let forged = forge_slot_generation(&bytes, 0, 7);
    assert_eq!(
        recovery_error(&forged),
        CommitRecoveryError::GenerationMismatch {
            slot: 0,
            header_generation: 7,
            ledger_generation: 1
        }
    );
}

#[test]
fn identical_slots_at_one_generation_recover_deterministically() {
    use holdfast_memory::stable_structures::Memory;
    let (bytes, ledger) = two_generation_image();
    let memory = memory_from(&bytes);
    let manager = MemoryManager::init(memory.clone());
    let id0 = manager.get(MemoryId::new(0));
    let mut header = [0u8; 32];
    id0.read(64, &mut header);
    id0.write(32, &header); // slot 0 now points at slot 1's payload
    let (result, written) = recover(&image(&memory));
    assert_eq!(written, 0);
    assert_eq!(result.unwrap(), ledger);
}

#[test]
fn zeroed_ledger_beside_application_data_is_foreign_not_fresh() {
    let (mut bytes, _) = two_generation_image();
    let len = store_len(&bytes);
    bytes[ID0..ID0 + len].fill(0);
    let (result, written) = recover(&bytes);
    assert_eq!(written, 0);
    assert!(
        matches!(
            result,
            Err(RuntimeBootstrapError::StableCellLedger(
                holdfast_memory::LedgerStoreError::Store(CommitRecoveryError::ForeignStore { .. })
            ))
        ),
        "{result:?}"
    );
}

#[test]
fn truncated_image_is_refused_with_a_typed_error() {
    let (bytes, _) = two_generation_image();
    let (result, _) = recover(&bytes[..65536]);
    assert!(
        matches!(result, Err(RuntimeBootstrapError::StableCellLedger(_))),
        "{result:?}"
    );
}

#[test]
fn a_changed_envelope_version_is_caught_by_the_slot_checksum() {
    let memory = VectorMemory::default();
    boot(&memory, &[("app.users.v1", 100)]).unwrap();
    let mut bytes = image(&memory);
    // Slot 0's payload starts at ID 0 offset 128 with "HFLG" and a u16 version.
    assert_eq!(
        &bytes[ID0 + 128..ID0 + 132],
        b"HFLG",
        "could not locate the envelope to corrupt"
    );
    bytes[ID0 + 132] = 9;
    let (result, written) = recover(&bytes);
    assert_eq!(written, 0);
    // The checksum covers the payload, so the slot is corrupt before the
    // envelope is ever read: the version is never trusted unchecked.
    assert!(
        matches!(
            result,
            Err(RuntimeBootstrapError::LedgerCommit(LedgerCommitError::Recovery(
                CommitRecoveryError::CorruptSlot { slot: 0, .. }
            )))
        ),
        "{result:?}"
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn flipped_zeroed_or_truncated_store_bytes_never_yield_a_wrong_ledger(
        position in any::<prop::sample::Index>(),
        action in 0u8..3,
        value in any::<u8>(),
    ) {
        let (mut bytes, ledger) = two_generation_image();
        let len = store_len(&bytes);
        let at = ID0 + position.index(len);
        match action {
            0 => bytes[at] ^= value | 1,
            1 => bytes[at] = 0,
            _ => bytes[at..ID0 + len].fill(0),
        }
        let (result, written) = recover(&bytes);
        prop_assert_eq!(written, 0);
        if let Ok(recovered) = result {
            // A damaged unused byte leaves the newest ledger; a damaged
            // marker of the newest slot is refused by the high-water mark
            // instead of rolling back to the previous generation.
            prop_assert!(
                recovered == ledger,
                "recovered a ledger at generation {}", recovered.current_generation()
            );
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_codec(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        holdfast_memory::codec::fuzzing::decode_ledger_bytes(&bytes);
    }

    #[test]
    fn arbitrary_images_never_panic_recovery(noise in proptest::collection::vec(any::<u8>(), 0..4096), at in 0usize..65536) {
        let (mut bytes, _) = two_generation_image();
        let end = (at + noise.len()).min(bytes.len());
        bytes[at..end].copy_from_slice(&noise[..end - at]);
        let (_, written) = recover(&bytes);
        prop_assert_eq!(written, 0);
    }
}
