//! Diagnostics: a read-only, serializable picture of a governed memory.
//!
//! [`diagnostic_export_of`] reads any memory without writing to it: the
//! MemoryManager header, both commit slots and the ledger, joined with the
//! live size of each recorded store. It is what the runtime's diagnostics and
//! `holdfast inspect` show. Bytes it decodes are reported, never trusted: a
//! ledger is only shown when recovery accepted it.

use ic_stable_structures::Memory;
use ic_stable_structures::memory_manager::{MemoryId, MemoryManager};
use serde::Serialize;

use crate::codec::CborLedgerCodec;
use crate::image::{
    MemoryImageError, MemoryManagerHeader, RawMemoryClass, WASM_PAGE_SIZE, classify_raw_memory,
};
use crate::ledger::{AllocationLedger, AllocationRecord, GenerationRecord};
use crate::physical::{CommitRecoveryError, CommitStoreDiagnostic, LedgerCommitStore, SlotDiagnostic};
use crate::slot::MEMORY_MANAGER_LEDGER_ID;

/// A memory size in pages and bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct DiagnosticMemorySize {
    /// WebAssembly pages (64 KiB).
    pub pages: u64,
    /// Bytes.
    pub bytes: u64,
}

impl DiagnosticMemorySize {
    /// The size of `pages` WebAssembly pages.
    pub fn from_wasm_pages(pages: u64) -> Self {
        Self {
            pages,
            bytes: pages.saturating_mul(WASM_PAGE_SIZE),
        }
    }
}

/// One ledger record and the live size of its memory.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DiagnosticRecord {
    /// The record.
    pub allocation: AllocationRecord,
    /// The live size of its MemoryManager memory (None for other substrates).
    pub memory_size: Option<DiagnosticMemorySize>,
}

/// Everything known about a governed memory.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DiagnosticExport {
    /// The ledger's current generation (0 when no ledger was committed).
    pub current_generation: u64,
    /// Every record with its live size.
    pub records: Vec<DiagnosticRecord>,
    /// Every committed generation.
    pub generations: Vec<GenerationRecord>,
    /// The commit slots.
    pub commit: CommitStoreDiagnostic,
    /// The MemoryManager header (None for an empty memory).
    pub memory_manager: Option<MemoryManagerHeader>,
}

/// Why diagnostics could not be produced.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RuntimeDiagnosticError {
    /// The memory is not a MemoryManager image.
    #[error(transparent)]
    Image(#[from] MemoryImageError),
    /// The ledger does not recover.
    #[error(transparent)]
    Recovery(#[from] CommitRecoveryError),
    /// The default runtime's lock was poisoned beyond recovery.
    #[error("the runtime lock is poisoned")]
    RuntimeLockPoisoned,
}

/// The commit diagnostic of `memory`, even when recovery fails. Never writes.
///
/// # Errors
/// [`RuntimeDiagnosticError::Image`] when the memory is not a MemoryManager
/// image.
pub fn commit_recovery_diagnostic_of<M: Memory + Clone>(
    memory: &M,
) -> Result<CommitStoreDiagnostic, RuntimeDiagnosticError> {
    Ok(match open_read_only(memory)? {
        Some((_, store)) => store.physical(),
        None => empty_commit_diagnostic(),
    })
}

/// The full export of `memory`. Never writes.
///
/// # Errors
/// `Image` when the memory is not a MemoryManager image; `Recovery` when the
/// ledger does not recover (use [`commit_recovery_diagnostic_of`] then).
pub fn diagnostic_export_of<M: Memory + Clone>(
    memory: &M,
) -> Result<DiagnosticExport, RuntimeDiagnosticError> {
    let Some((header, store)) = open_read_only(memory)? else {
        return Ok(export(
            &AllocationLedger::genesis(),
            empty_commit_diagnostic(),
            None,
        ));
    };
    let ledger = store.recover_or_initialize(&CborLedgerCodec, &AllocationLedger::genesis())?;
    Ok(export(&ledger, store.physical(), Some(header)))
}

pub(crate) fn export(
    ledger: &AllocationLedger,
    commit: CommitStoreDiagnostic,
    memory_manager: Option<MemoryManagerHeader>,
) -> DiagnosticExport {
    let history = ledger.allocation_history();
    let records = history
        .records()
        .iter()
        .map(|record| DiagnosticRecord {
            allocation: record.clone(),
            memory_size: record.slot().memory_manager_id().map(|id| {
                let pages = memory_manager
                    .as_ref()
                    .and_then(|header| header.memory_sizes_in_pages.get(usize::from(id)).copied())
                    .unwrap_or(0);
                DiagnosticMemorySize::from_wasm_pages(pages)
            }),
        })
        .collect();
    DiagnosticExport {
        current_generation: ledger.current_generation(),
        records,
        generations: history.generations().to_vec(),
        commit,
        memory_manager,
    }
}

type ReadOnlyStore<M> = LedgerCommitStore<ic_stable_structures::memory_manager::VirtualMemory<M>>;

/// The header and the ledger store of a MemoryManager image, or None for an
/// empty memory. `MemoryManager::init` only reads an image whose header
/// `classify_raw_memory` accepted.
fn open_read_only<M: Memory + Clone>(
    memory: &M,
) -> Result<Option<(MemoryManagerHeader, ReadOnlyStore<M>)>, MemoryImageError> {
    match classify_raw_memory(memory)? {
        RawMemoryClass::Empty | RawMemoryClass::InterruptedInitialization => Ok(None),
        RawMemoryClass::MemoryManager(header) => {
            let manager = MemoryManager::init(memory.clone());
            let store = LedgerCommitStore::new(manager.get(MemoryId::new(MEMORY_MANAGER_LEDGER_ID)));
            Ok(Some((header, store)))
        }
    }
}

fn empty_commit_diagnostic() -> CommitStoreDiagnostic {
    CommitStoreDiagnostic {
        slot0: SlotDiagnostic::Absent,
        slot1: SlotDiagnostic::Absent,
        authoritative_generation: None,
        authoritative_slot: None,
        high_water_generation: None,
        recovery_error: None,
    }
}
