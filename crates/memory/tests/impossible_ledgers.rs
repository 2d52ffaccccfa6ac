//! Ledgers no runtime can write, committed with valid checksums: recovery
//! refuses each with the integrity rule it breaks, and the runtime's boot,
//! check and plan refuse it and write nothing. And the converse: every
//! ledger the runtime writes — random boots with schemas, labels and
//! fingerprints, reservations and retirements — passes every rule, the
//! MemoryManager ones included.
//!
//! The forged ledgers are the real codec's encoding of a ledger the runtime
//! would commit next, with one field changed in the CBOR (the envelope
//! length fixed up), committed by the real commit store: its checksum,
//! header and presence marker are all valid, so only the integrity rules
//! stand between the bytes and a boot.

mod common;

use common::{CutMemory, image, memory_from};
use holdfast_memory::stable_structures::memory_manager::{MemoryId, MemoryManager};
use holdfast_memory::stable_structures::{Memory, VectorMemory};
use holdfast_memory::{
    AcceptAllPolicy, AllocationDeclaration, AllocationLedger, AllocationRetirement, AllocationSlotDescriptor,
    CborLedgerCodec, CommitRecoveryError, DeclarationSnapshot, LedgerCodec, LedgerCommitStore,
    LedgerDecodeError, LedgerIntegrityError, MemoryRuntime, RuntimeBootstrapError, SchemaMetadata, StableKey,
};
use proptest::prelude::*;

/// Generation 2's layout: the users store of generation 1 plus orders,
/// with schema version 1.
fn v2() -> DeclarationSnapshot {
    DeclarationSnapshot::new(vec![
        AllocationDeclaration::memory_manager("app.users.v1", 100, "Users").unwrap(),
        AllocationDeclaration::memory_manager_with_schema(
            "app.orders.v1",
            101,
            "Orders",
            SchemaMetadata::new(Some(1), None).unwrap(),
        )
        .unwrap(),
    ])
    .unwrap()
    .with_runtime_fingerprint("b2")
    .unwrap()
}

/// A memory at generation 1, written by the runtime.
fn generation_1() -> Vec<u8> {
    let memory = VectorMemory::default();
    let v1 = DeclarationSnapshot::new(vec![
        AllocationDeclaration::memory_manager("app.users.v1", 100, "Users").unwrap(),
    ])
    .unwrap()
    .with_runtime_fingerprint("b1")
    .unwrap();
    MemoryRuntime::bootstrap(memory.clone(), v1, &AcceptAllPolicy).expect("v1 boots");
    image(&memory)
}

/// Generation 2 as the runtime would commit it (a fixed commit time, so
/// the bytes are known).
fn generation_2(memory: &VectorMemory) -> AllocationLedger {
    let (ledger, validated) = MemoryRuntime::check(memory, v2(), &AcceptAllPolicy).expect("v2 validates");
    ledger
        .stage_validated_generation(&validated, Some(7))
        .expect("stages")
}

/// Encodes whatever it was given as fixed bytes: the commit store checks
/// the (valid) ledger it is handed, then seals these bytes as its payload.
struct Forged(Vec<u8>);

impl LedgerCodec for Forged {
    fn encode(&self, _: &AllocationLedger) -> Vec<u8> {
        self.0.clone()
    }
    fn decode(&self, bytes: &[u8]) -> Result<AllocationLedger, LedgerDecodeError> {
        CborLedgerCodec.decode(bytes)
    }
}

/// `encoded` with its one occurrence of `from` replaced by `to`, the
/// envelope's CBOR length adjusted.
fn replaced(encoded: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let at: Vec<usize> = (0..=encoded.len() - from.len())
        .filter(|&i| &encoded[i..i + from.len()] == from)
        .collect();
    assert_eq!(
        at.len(),
        1,
        "{from:02x?} must occur exactly once in {encoded:02x?}"
    );
    let mut bytes = encoded[..at[0]].to_vec();
    bytes.extend_from_slice(to);
    bytes.extend_from_slice(&encoded[at[0] + from.len()..]);
    let len = u32::try_from(bytes.len() - 10).unwrap();
    bytes[6..10].copy_from_slice(&len.to_le_bytes());
    bytes
}

fn key(text: &str) -> StableKey {
    StableKey::parse(text).unwrap()
}

/// Text as CBOR (short strings only): its head, then its bytes.
fn text(value: &str) -> Vec<u8> {
    let mut bytes = vec![0x60 + u8::try_from(value.len()).unwrap()];
    bytes.extend_from_slice(value.as_bytes());
    bytes
}

#[test]
fn a_ledger_no_runtime_can_write_is_refused_by_recovery_and_by_the_boot_which_writes_nothing() {
    let base = generation_1();
    let valid = generation_2(&memory_from(&base));
    let encoded = CborLedgerCodec.encode(&valid);
    // Generation 2's record: [2, parent 1, "b2", 3 declarations, at 7].
    let generation_2_record = [&[0x85, 0x02, 0x01][..], &text("b2"), &[0x03, 0x07]].concat();
    let cases: Vec<(&str, Vec<u8>, LedgerIntegrityError)> = vec![
        (
            "governance record relabelled",
            replaced(&encoded, &text("MemoryLayoutLedger"), &text("MemoryLayoutLedgex")),
            LedgerIntegrityError::GovernanceRecordRelabelled {
                label: "MemoryLayoutLedgex".into(),
            },
        ),
        (
            "ledger key renamed",
            replaced(
                &encoded,
                &text("ic_memory.ledger.v1"),
                &text("ic_memory.ledgex.v1"),
            ),
            LedgerIntegrityError::LedgerKeyRenamed {
                stable_key: key("ic_memory.ledgex.v1"),
            },
        ),
        (
            "a second ic_memory key",
            replaced(&encoded, &text("app.orders.v1"), &text("ic_memory.x.v1")),
            LedgerIntegrityError::ReservedStableKey {
                stable_key: key("ic_memory.x.v1"),
                slot: AllocationSlotDescriptor::memory_manager(101).unwrap(),
            },
        ),
        (
            "an application key on a governance ID",
            replaced(&encoded, &[0x82, 0x00, 0x18, 0x65], &[0x82, 0x00, 0x05]),
            LedgerIntegrityError::GovernanceRangeSlot {
                stable_key: key("app.orders.v1"),
                id: 5,
            },
        ),
        (
            "a schema history starting empty",
            // orders' only entry: [generation 2, version 1, no fingerprint].
            replaced(
                &encoded,
                &[0x81, 0x83, 0x02, 0x01, 0xf6],
                &[0x81, 0x83, 0x02, 0xf6, 0xf6],
            ),
            LedgerIntegrityError::SchemaHistoryStartsEmpty {
                stable_key: key("app.orders.v1"),
                generation: 2,
            },
        ),
        (
            "a declaration count the records do not show",
            replaced(
                &encoded,
                &generation_2_record,
                &[&[0x85, 0x02, 0x01][..], &text("b2"), &[0x04, 0x07]].concat(),
            ),
            LedgerIntegrityError::DeclarationCountMismatch {
                generation: 2,
                declaration_count: 4,
                recorded: 3,
            },
        ),
        (
            "an ANSI escape in the runtime fingerprint",
            replaced(&encoded, &text("b2"), &text("\u{1b}[31m")),
            LedgerIntegrityError::InvalidRuntimeFingerprint {
                generation: 2,
                len: 5,
            },
        ),
    ];
    for (what, bytes, expected) in cases {
        let memory = memory_from(&base);
        let mut store = LedgerCommitStore::new(MemoryManager::init(memory.clone()).get(MemoryId::new(0)));
        store
            .commit(&Forged(bytes), &valid)
            .unwrap_or_else(|err| panic!("{what}: the forged slot is committed: {err}"));
        let forged = image(&memory);

        let store = LedgerCommitStore::new(MemoryManager::init(memory.clone()).get(MemoryId::new(0)));
        match store.recover(&CborLedgerCodec) {
            Err(CommitRecoveryError::Decode {
                error: LedgerDecodeError::Integrity(found),
                ..
            }) => assert_eq!(found, expected, "{what}: recovery"),
            other => panic!("{what}: recovery returned {other:?}"),
        }
        let refused = |result: RuntimeBootstrapError<std::convert::Infallible>| match result {
            RuntimeBootstrapError::LedgerIntegrity(found) => assert_eq!(found, expected, "{what}"),
            other => panic!("{what}: {other:?}"),
        };
        let counting = CutMemory::counting(&memory);
        refused(
            MemoryRuntime::bootstrap(counting.clone(), v2(), &AcceptAllPolicy)
                .expect_err("the boot refuses the forged ledger"),
        );
        assert_eq!(counting.written.get(), 0, "{what}: the refused boot wrote");
        assert_eq!(
            image(&memory),
            forged,
            "{what}: the refused boot changed the image"
        );
        refused(MemoryRuntime::check(&memory, v2(), &AcceptAllPolicy).expect_err("check refuses"));
        refused(MemoryRuntime::plan(&memory, v2(), &AcceptAllPolicy).expect_err("plan refuses"));
        assert_eq!(image(&memory), forged, "{what}: check or plan changed the image");
    }
    // The unforged bytes of the same generation boot: the refusals above
    // are the changed field's, not the forging's.
    let memory = memory_from(&base);
    let mut store = LedgerCommitStore::new(MemoryManager::init(memory.clone()).get(MemoryId::new(0)));
    store.commit(&Forged(encoded), &valid).expect("commits");
    let runtime = MemoryRuntime::bootstrap(memory, v2(), &AcceptAllPolicy).expect("boots");
    assert_eq!(runtime.validated().generation(), 2);
}

/// A slot of another substrate is a valid ledger in the generic model (the
/// commit store alone recovers it), but no MemoryManager runtime writes one:
/// the runtime's recovery applies the MemoryManager rules and refuses it.
#[test]
fn a_ledger_with_another_substrates_slot_is_refused_by_the_memory_manager_runtime() {
    let base = generation_1();
    let valid = generation_2(&memory_from(&base));
    let encoded = CborLedgerCodec.encode(&valid);
    // orders on MemoryManager ID 101 → [1, "other", 1, 101]: another
    // substrate's numeric ID.
    let bytes = replaced(
        &encoded,
        &[0x82, 0x00, 0x18, 0x65],
        &[&[0x84, 0x01][..], &text("other"), &[0x01, 0x18, 0x65]].concat(),
    );
    let memory = memory_from(&base);
    let mut store = LedgerCommitStore::new(MemoryManager::init(memory.clone()).get(MemoryId::new(0)));
    store
        .commit(&Forged(bytes), &valid)
        .expect("the forged slot is committed");
    let forged = image(&memory);
    let store = LedgerCommitStore::new(MemoryManager::init(memory.clone()).get(MemoryId::new(0)));
    let generic = store
        .recover(&CborLedgerCodec)
        .expect("the generic rules accept it")
        .unwrap();
    let slot = generic
        .allocation_history()
        .record(&key("app.orders.v1"))
        .unwrap()
        .slot()
        .clone();
    assert_eq!(slot.memory_manager_id(), None);
    let expected = LedgerIntegrityError::NotMemoryManagerSlot {
        stable_key: key("app.orders.v1"),
        slot,
    };
    let counting = CutMemory::counting(&memory);
    match MemoryRuntime::bootstrap(counting.clone(), v2(), &AcceptAllPolicy) {
        Err(RuntimeBootstrapError::LedgerIntegrity(found)) => assert_eq!(found, expected),
        other => panic!("{other:?}"),
    }
    assert_eq!(counting.written.get(), 0);
    match MemoryRuntime::plan(&memory, v2(), &AcceptAllPolicy) {
        Err(RuntimeBootstrapError::LedgerIntegrity(found)) => assert_eq!(found, expected),
        other => panic!("{other:?}"),
    }
    assert_eq!(image(&memory), forged);
}

#[derive(Clone, Debug)]
enum Op {
    /// (key, ID, schema version or none) per store, and a fingerprint.
    Boot(Vec<(usize, u8, Option<u32>)>, Option<u8>),
    Reserve(Vec<(usize, u8, Option<u32>)>),
    Retire(usize, u8),
}

const KEYS: [&str; 5] = ["app.a.v1", "app.b.v1", "app.c.v1", "app.d.v1", "app.e.v1"];

fn op() -> impl Strategy<Value = Op> {
    let store = (0..KEYS.len(), 100u8..105, proptest::option::of(1u32..3));
    prop_oneof![
        4 => (proptest::collection::vec(store.clone(), 0..5), proptest::option::of(0u8..2))
            .prop_map(|(stores, fingerprint)| Op::Boot(stores, fingerprint)),
        1 => proptest::collection::vec(store, 0..3).prop_map(Op::Reserve),
        1 => (0..KEYS.len(), 100u8..105).prop_map(|(k, id)| Op::Retire(k, id)),
    ]
}

fn declarations(stores: &[(usize, u8, Option<u32>)]) -> Vec<AllocationDeclaration> {
    stores
        .iter()
        .map(|&(k, id, version)| {
            let schema = SchemaMetadata::new(version, None).unwrap();
            // The label follows the schema, so labels change too.
            let label = format!("Store {}", version.unwrap_or(0));
            AllocationDeclaration::memory_manager_with_schema(KEYS[k], id, label, schema).unwrap()
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Whatever the runtime accepts, what it wrote passes every rule a
    /// MemoryManager image's ledger must (which is what recovery checks).
    #[test]
    fn every_ledger_the_runtime_writes_passes_every_integrity_rule(ops in proptest::collection::vec(op(), 1..16)) {
        let memory = VectorMemory::default();
        for op in &ops {
            match op {
                Op::Boot(stores, fingerprint) => {
                    let Ok(snapshot) = DeclarationSnapshot::new(declarations(stores)) else { continue };
                    let snapshot = match fingerprint {
                        Some(f) => snapshot.with_runtime_fingerprint(format!("build-{f}")).unwrap(),
                        None => snapshot,
                    };
                    let _ = MemoryRuntime::bootstrap(memory.clone(), snapshot, &AcceptAllPolicy);
                }
                Op::Reserve(stores) => {
                    let _ = MemoryRuntime::reserve(memory.clone(), declarations(stores), &AcceptAllPolicy);
                }
                Op::Retire(k, id) => {
                    let slot = AllocationSlotDescriptor::memory_manager(*id).unwrap();
                    let _ = MemoryRuntime::retire(memory.clone(), AllocationRetirement::new(KEYS[*k], slot).unwrap());
                }
            }
            if memory.size() == 0 {
                continue;
            }
            let (ledger, _) = MemoryRuntime::check(&memory, DeclarationSnapshot::new(vec![]).unwrap(), &AcceptAllPolicy)
                .expect("what the runtime wrote recovers");
            prop_assert_eq!(ledger.check_memory_manager_integrity(), Ok(()), "after {:?}", op);
        }
    }
}
