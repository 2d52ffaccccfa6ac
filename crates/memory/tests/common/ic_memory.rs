//! Images written by the published ic-memory 0.5.1: each action runs the
//! sequence its runtime runs over the default memory (load the MemoryManager,
//! preflight ID 0, `Cell::init` the `StableCellLedgerRecord` at ID 0, drive
//! `AllocationBootstrap` on a copy of the record, `Cell::set` it back on
//! success), here over a caller's `VectorMemory` so that tests and benchmarks
//! can produce many images. Only ic-memory's own code writes these bytes.
#![allow(dead_code, reason = "each test binary uses a different subset")]

use std::convert::Infallible;

use ic_memory::stable_structures::Cell;
use ic_memory::stable_structures::memory_manager::{MemoryId, MemoryManager};
use ic_memory::stable_structures::{Memory, VectorMemory};
use ic_memory::{
    AllocationBootstrap, AllocationDeclaration, AllocationHistory, AllocationLedger, AllocationPolicy,
    AllocationRetirement, AllocationSlotDescriptor, CURRENT_LEDGER_SCHEMA_VERSION,
    CURRENT_PHYSICAL_FORMAT_ID, CborLedgerCodec, DeclarationSnapshot, IC_MEMORY_LEDGER_LABEL,
    IC_MEMORY_LEDGER_STABLE_KEY, SchemaMetadata, StableCellLedgerRecord, StableKey,
};

/// One declaration of an ic-memory boot: key, MemoryManager ID, schema
/// version and fingerprint.
#[derive(Clone, Debug)]
pub(crate) struct IcDecl {
    pub(crate) key: String,
    pub(crate) id: u8,
    pub(crate) schema_version: Option<u32>,
    pub(crate) schema_fingerprint: Option<String>,
}

/// A declaration without schema metadata.
pub(crate) fn decl(key: &str, id: u8) -> IcDecl {
    IcDecl {
        key: key.to_owned(),
        id,
        schema_version: None,
        schema_fingerprint: None,
    }
}

/// A declaration with a schema version and optional fingerprint.
pub(crate) fn decl_schema(key: &str, id: u8, version: u32, fingerprint: Option<&str>) -> IcDecl {
    IcDecl {
        key: key.to_owned(),
        id,
        schema_version: Some(version),
        schema_fingerprint: fingerprint.map(str::to_owned),
    }
}

/// The policy of a runtime with no user ranges and no framework policy.
pub(crate) struct AcceptAll;

impl AllocationPolicy for AcceptAll {
    type Error = Infallible;
    fn validate_key(&self, _: &StableKey) -> Result<(), Infallible> {
        Ok(())
    }
    fn validate_slot(&self, _: &StableKey, _: &AllocationSlotDescriptor) -> Result<(), Infallible> {
        Ok(())
    }
    fn validate_reserved_slot(&self, _: &StableKey, _: &AllocationSlotDescriptor) -> Result<(), Infallible> {
        Ok(())
    }
}

/// A framework policy that refuses every key (as a range or namespace rule
/// would refuse a misplaced one).
pub(crate) struct RefuseAll;

impl AllocationPolicy for RefuseAll {
    type Error = &'static str;
    fn validate_key(&self, _: &StableKey) -> Result<(), &'static str> {
        Err("refused by policy")
    }
    fn validate_slot(&self, _: &StableKey, _: &AllocationSlotDescriptor) -> Result<(), &'static str> {
        Err("refused by policy")
    }
    fn validate_reserved_slot(
        &self,
        _: &StableKey,
        _: &AllocationSlotDescriptor,
    ) -> Result<(), &'static str> {
        Err("refused by policy")
    }
}

fn declaration(decl: &IcDecl) -> AllocationDeclaration {
    let schema = SchemaMetadata::new(decl.schema_version, decl.schema_fingerprint.clone())
        .expect("test schema metadata is valid");
    AllocationDeclaration::memory_manager_with_schema(&decl.key, decl.id, "Store", schema)
        .expect("test declaration is valid")
}

/// The snapshot ic-memory's runtime builds: its ledger declaration first,
/// then the application's.
pub(crate) fn snapshot(decls: &[IcDecl], fingerprint: Option<&str>) -> DeclarationSnapshot {
    let mut declarations = vec![
        AllocationDeclaration::memory_manager(IC_MEMORY_LEDGER_STABLE_KEY, 0, IC_MEMORY_LEDGER_LABEL)
            .expect("the ledger's declaration is valid"),
    ];
    declarations.extend(decls.iter().map(declaration));
    let snapshot = DeclarationSnapshot::new(declarations).expect("unique test declarations");
    match fingerprint {
        Some(fingerprint) => snapshot
            .with_runtime_fingerprint(fingerprint)
            .expect("valid test fingerprint"),
        None => snapshot,
    }
}

fn genesis() -> AllocationLedger {
    AllocationLedger::new(
        CURRENT_LEDGER_SCHEMA_VERSION,
        CURRENT_PHYSICAL_FORMAT_ID,
        0,
        AllocationHistory::default(),
    )
    .expect("the genesis ledger is valid")
}

/// Runs `action` on the ledger record of the Cell at ID 0 of `memory` and
/// writes the record back only when it succeeded, as ic-memory's runtime
/// does.
fn with_ledger_cell<T>(
    memory: &VectorMemory,
    action: impl FnOnce(&mut StableCellLedgerRecord) -> Result<T, String>,
) -> Result<T, String> {
    let manager = MemoryManager::init(memory.clone());
    let ledger_memory = manager.get(MemoryId::new(0));
    ic_memory::validate_stable_cell_ledger_memory(&ledger_memory).map_err(|err| err.to_string())?;
    let mut cell = Cell::init(ledger_memory, StableCellLedgerRecord::default());
    let mut record = cell.get().clone();
    let result = action(&mut record)?;
    cell.set(record);
    Ok(result)
}

/// One boot of `decls` (plus the ledger's own declaration) as ic-memory's
/// runtime does it; returns the committed generation or ic-memory's refusal.
pub(crate) fn ic_boot(
    memory: &VectorMemory,
    decls: &[IcDecl],
    fingerprint: Option<&str>,
    committed_at: Option<u64>,
) -> Result<u64, String> {
    with_ledger_cell(memory, |record| {
        let mut bootstrap = AllocationBootstrap::new(record.store_mut());
        let commit = bootstrap
            .initialize_validate_and_commit(
                &CborLedgerCodec,
                &genesis(),
                snapshot(decls, fingerprint),
                &AcceptAll,
                committed_at,
            )
            .map_err(|err| err.to_string())?;
        Ok(commit.ledger.current_generation())
    })
}

/// A boot that ic-memory's validation refuses (every key refused by the
/// policy): on an empty memory it still leaves the `Cell` that `Cell::init`
/// wrote, holding an empty commit store.
pub(crate) fn ic_boot_refused(memory: &VectorMemory, decls: &[IcDecl]) -> String {
    with_ledger_cell(memory, |record| {
        AllocationBootstrap::new(record.store_mut())
            .initialize_validate_and_commit(
                &CborLedgerCodec,
                &genesis(),
                snapshot(decls, None),
                &RefuseAll,
                None,
            )
            .map(|_| ())
            .map_err(|err| err.to_string())
    })
    .expect_err("the policy refuses every key")
}

/// Reserves `decls` through ic-memory's `reserve_and_commit`.
pub(crate) fn ic_reserve(memory: &VectorMemory, decls: &[IcDecl]) -> Result<u64, String> {
    with_ledger_cell(memory, |record| {
        let reservations: Vec<_> = decls.iter().map(declaration).collect();
        let ledger = AllocationBootstrap::new(record.store_mut())
            .reserve_and_commit(&CborLedgerCodec, &reservations, &AcceptAll, None)
            .map_err(|err| err.to_string())?;
        Ok(ledger.current_generation())
    })
}

/// Retires `key` on `id` through ic-memory's `retire_and_commit`.
pub(crate) fn ic_retire(memory: &VectorMemory, key: &str, id: u8) -> Result<u64, String> {
    with_ledger_cell(memory, |record| {
        let slot = AllocationSlotDescriptor::memory_manager(id).expect("usable test ID");
        let retirement = AllocationRetirement::new(key, slot).expect("valid test key");
        let ledger = AllocationBootstrap::new(record.store_mut())
            .retire_and_commit(&CborLedgerCodec, &retirement, None)
            .map_err(|err| err.to_string())?;
        Ok(ledger.current_generation())
    })
}

/// The ledger ic-memory itself recovers from `memory` (read-only).
pub(crate) fn ic_recover(memory: &VectorMemory) -> AllocationLedger {
    let manager = MemoryManager::init(memory.clone());
    let ledger_memory = manager.get(MemoryId::new(0));
    let payload = ic_memory::decode_stable_cell_payload(&ledger_memory).expect("an ic-memory Cell");
    let record = ic_memory::decode_stable_cell_ledger_record(&payload).expect("an ic-memory record");
    record
        .store()
        .recover(&CborLedgerCodec)
        .expect("ic-memory recovers its own ledger")
}

/// Grows store `id` of `memory` by one page and writes `bytes` at its start,
/// as an application opening its validated memory would.
pub(crate) fn write_store(memory: &VectorMemory, id: u8, bytes: &[u8]) {
    let manager = MemoryManager::init(memory.clone());
    let store = manager.get(MemoryId::new(id));
    if store.size() == 0 {
        assert_eq!(store.grow(1), 0, "test store grows");
    }
    store.write(0, bytes);
}
