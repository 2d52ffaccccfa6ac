//! Diagnostics: a read-only, serializable picture of a governed memory.
//!
//! [`diagnostic_export_of`] reads any memory without writing to it: the
//! MemoryManager header, both commit slots and the ledger, joined with the
//! live size of each recorded store. It is what the runtime's diagnostics and
//! `holdfast inspect` show. Bytes it decodes are reported, never trusted: a
//! ledger is only shown when recovery accepted it.

use ic_stable_structures::Memory;
use ic_stable_structures::memory_manager::{MemoryId, MemoryManager, VirtualMemory};
use serde::Serialize;

use crate::adoption::{self, AdoptionError, ForwardedMemory, IcMemoryAdoption, IcMemorySlot, LedgerLocation};
use crate::codec::CborLedgerCodec;
use crate::image::{
    MemoryImageError, MemoryManagerHeader, RawMemoryClass, WASM_PAGE_SIZE, classify_raw_memory,
};
use crate::ledger::{AllocationLedger, AllocationRecord, GenerationRecord, LedgerIntegrityError};
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
    /// Set when ID 0 holds a ledger written by ic-memory 0.5, adopted or
    /// about to be (the records and generations above are its converted
    /// ledger, or the store's since adoption).
    pub ic_memory: Option<IcMemoryDiagnostic>,
}

/// An ic-memory 0.5 ledger at ID 0.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct IcMemoryDiagnostic {
    /// Adopted already, or adopted by the next accepted boot.
    pub state: IcMemoryLedgerState,
    /// What adoption writes (or wrote): the ic-memory generation it keeps
    /// (None for an adopted `Cell` that no longer decodes; it is never read
    /// again), the `Cell`'s length and where the holdfast store starts.
    pub adoption: IcMemoryAdoptionView,
    /// ic-memory's two commit slots (None when the `Cell` no longer decodes).
    pub slots: Option<[IcMemorySlot; 2]>,
}

/// Where an ic-memory ledger at ID 0 stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum IcMemoryLedgerState {
    /// Written by ic-memory; the next accepted boot adopts it. Nothing of it
    /// was changed yet.
    Pending,
    /// Adopted: ID 0's first byte is the adopted marker and the ledger lives
    /// in the holdfast store past the `Cell`.
    Adopted,
}

/// [`IcMemoryAdoption`] with the generation optional (see
/// [`IcMemoryDiagnostic::adoption`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct IcMemoryAdoptionView {
    /// The ic-memory ledger's generation.
    pub generation: Option<u64>,
    /// Length of the `Cell` value.
    pub cell_value_bytes: u32,
    /// Where the holdfast store starts in ID 0.
    pub forward_offset: u64,
}

impl From<IcMemoryAdoption> for IcMemoryAdoptionView {
    fn from(adoption: IcMemoryAdoption) -> Self {
        Self {
            generation: Some(adoption.generation),
            cell_value_bytes: adoption.cell_value_bytes,
            forward_offset: adoption.forward_offset,
        }
    }
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
    /// The ledger decodes but breaks a rule of a MemoryManager image's ledger
    /// (`AllocationLedger::check_memory_manager_integrity`): the runtimes
    /// refuse to boot over it.
    #[error("the ledger breaks a MemoryManager ledger's rules: {0}")]
    LedgerIntegrity(LedgerIntegrityError),
    /// ID 0 holds an ic-memory ledger that cannot be adopted.
    #[error("ID 0 holds an ic-memory 0.5 ledger that cannot be adopted: {0}")]
    Adoption(#[from] AdoptionError),
    /// The default runtime's lock was poisoned beyond recovery.
    #[error("the runtime lock is poisoned")]
    RuntimeLockPoisoned,
}

/// The commit diagnostic of `memory`, even when recovery fails. Never writes.
///
/// # Errors
/// [`RuntimeDiagnosticError::Image`] when the memory is not a MemoryManager
/// image.
///
/// For an ic-memory ledger not adopted yet there is no holdfast store: both
/// slots are absent, and `recovery_error` says why the ledger cannot be
/// adopted, if it cannot.
pub fn commit_recovery_diagnostic_of<M: Memory + Clone>(
    memory: &M,
) -> Result<CommitStoreDiagnostic, RuntimeDiagnosticError> {
    let Some((_, store, location)) = open_read_only(memory)? else {
        return Ok(empty_commit_diagnostic());
    };
    Ok(
        match adoption::read_ic_memory_ledger(&store, location, &CborLedgerCodec) {
            Ok(None) => store.physical(),
            Ok(Some(_)) => empty_commit_diagnostic(),
            Err(err) => CommitStoreDiagnostic {
                recovery_error: Some(err.to_string()),
                ..empty_commit_diagnostic()
            },
        },
    )
}

/// The full export of `memory`. Never writes.
///
/// # Errors
/// `Image` when the memory is not a MemoryManager image; `Recovery` when the
/// ledger does not recover (use [`commit_recovery_diagnostic_of`] then);
/// `Adoption` when ID 0 holds an ic-memory ledger that cannot be adopted.
pub fn diagnostic_export_of<M: Memory + Clone>(
    memory: &M,
) -> Result<DiagnosticExport, RuntimeDiagnosticError> {
    let Some((header, store, location)) = open_read_only(memory)? else {
        return Ok(export(
            &AllocationLedger::genesis(),
            empty_commit_diagnostic(),
            None,
            None,
        ));
    };
    if let Some((adoption, ledger)) = adoption::read_ic_memory_ledger(&store, location, &CborLedgerCodec)? {
        ledger
            .check_memory_manager_rules()
            .map_err(RuntimeDiagnosticError::LedgerIntegrity)?;
        let ic_memory = ic_memory_diagnostic(&store, location).map(|diagnostic| IcMemoryDiagnostic {
            adoption: adoption.into(),
            ..diagnostic
        });
        return Ok(export(
            &ledger,
            empty_commit_diagnostic(),
            Some(header),
            ic_memory,
        ));
    }
    let ledger = store.recover_or_initialize(&CborLedgerCodec, &AllocationLedger::genesis())?;
    ledger
        .check_memory_manager_rules()
        .map_err(RuntimeDiagnosticError::LedgerIntegrity)?;
    let ic_memory = ic_memory_diagnostic(&store, location);
    Ok(export(&ledger, store.physical(), Some(header), ic_memory))
}

/// What ID 0 of `memory` says about an ic-memory ledger, if it holds one.
/// Never writes, never fails: a `Cell` that does not decode shows no
/// generation and no slots.
pub(crate) fn ic_memory_diagnostic_of<M: Memory + Clone>(memory: &M) -> Option<IcMemoryDiagnostic> {
    let (_, store, location) = open_read_only(memory).ok()??;
    ic_memory_diagnostic(&store, location)
}

fn ic_memory_diagnostic<M: Memory>(
    store: &ReadOnlyStore<M>,
    location: LedgerLocation,
) -> Option<IcMemoryDiagnostic> {
    let (state, header) = match location {
        LedgerLocation::Native => return None,
        LedgerLocation::IcMemoryCell(header) => (IcMemoryLedgerState::Pending, header),
        LedgerLocation::Adopted(header) => (IcMemoryLedgerState::Adopted, header),
    };
    // After adoption the value is dead bytes, decoded here only to show
    // which generation was adopted.
    let decoded = adoption::read_cell(store.memory().inner(), header).ok();
    Some(IcMemoryDiagnostic {
        state,
        adoption: IcMemoryAdoptionView {
            generation: decoded
                .as_ref()
                .map(|ledger| ledger.ledger().current_generation()),
            cell_value_bytes: header.value_len(),
            forward_offset: header.forward_offset(),
        },
        slots: decoded.map(|ledger| *ledger.slots()),
    })
}

pub(crate) fn export(
    ledger: &AllocationLedger,
    commit: CommitStoreDiagnostic,
    memory_manager: Option<MemoryManagerHeader>,
    ic_memory: Option<IcMemoryDiagnostic>,
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
        ic_memory,
    }
}

type ReadOnlyStore<M> = LedgerCommitStore<ForwardedMemory<VirtualMemory<M>>>;

/// The header, the ledger store and where it lies in ID 0 of a
/// MemoryManager image, or None for an empty memory. `MemoryManager::init`
/// only reads an image whose header `classify_raw_memory` accepted.
fn open_read_only<M: Memory + Clone>(
    memory: &M,
) -> Result<Option<(MemoryManagerHeader, ReadOnlyStore<M>, LedgerLocation)>, RuntimeDiagnosticError> {
    match classify_raw_memory(memory)? {
        RawMemoryClass::Empty | RawMemoryClass::InterruptedInitialization => Ok(None),
        RawMemoryClass::MemoryManager(header) => {
            let manager = MemoryManager::init(memory.clone());
            let ledger_memory = manager.get(MemoryId::new(MEMORY_MANAGER_LEDGER_ID));
            let location = adoption::locate_ledger(&ledger_memory)?;
            Ok(Some((
                header,
                adoption::ledger_store(ledger_memory, location),
                location,
            )))
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
