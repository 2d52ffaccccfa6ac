//! `holdfast inspect`: everything an image holds about its layout history.
//!
//! [`inspect`] reads an image through [`ImageFile`] (read-only, positioned
//! reads of the header, the bucket table and the ledger's pages only) and
//! builds an [`InspectReport`]: the MemoryManager header, both commit slots,
//! the allocation table, the generation history and warnings. The report is
//! plain data with stable serde names (documented in docs/CLI.md); rendering
//! is `render`'s job. This module never writes and never trusts a byte that
//! holdfast-memory's recovery did not accept.

use std::path::Path;

use holdfast_memory::stable_structures::Memory;
use holdfast_memory::{
    AllocationRecord, AllocationState, CommitStoreDiagnostic, DiagnosticExport, GenerationRecord,
    IcMemoryDiagnostic, IcMemoryLedgerState, IcMemorySlot, MEMORY_MANAGER_GOVERNANCE_MAX_ID,
    MEMORY_MANAGER_LEDGER_ID, MemoryManagerHeader, RawMemoryClass, RuntimeDiagnosticError, SlotDiagnostic,
    classify_raw_memory, commit_recovery_diagnostic_of, diagnostic_export_of,
};
use serde::Serialize;

use crate::error::{CliError, commit_recovery_reason};
use crate::image_file::ImageFile;
use crate::timeline::{TimelineGeneration, timeline};

/// How many of the latest generations a report lists.
pub const RECENT_GENERATIONS: usize = 5;

/// What `inspect` found. Field names are part of the JSON contract.
#[derive(Debug, Serialize)]
pub struct InspectReport {
    /// The image file.
    pub image: ImageInfo,
    /// The MemoryManager header.
    pub memory_manager: MemoryManagerView,
    /// The two commit slots of the ledger store.
    pub commit_store: CommitStoreView,
    /// The recovered ledger; null when it does not recover.
    pub ledger: Option<LedgerView>,
    /// Why there is no ledger to show (missing, or does not recover); null
    /// when it recovered.
    pub ledger_error: Option<String>,
    /// Set when ID 0 holds a ledger written by ic-memory 0.5 (adopted at the
    /// next boot, or already): `ledger` is then its converted history.
    pub ic_memory: Option<IcMemoryView>,
    /// Things a person should look at.
    pub warnings: Vec<Warning>,
}

/// A ledger written by ic-memory 0.5 at ID 0.
#[derive(Debug, Serialize)]
pub struct IcMemoryView {
    /// `pending` (holdfast-memory adopts it at the next boot) or `adopted`.
    pub state: &'static str,
    /// The ic-memory ledger's generation, which adoption keeps (null for an
    /// adopted `Cell` that no longer decodes).
    pub generation: Option<u64>,
    /// Bytes of ic-memory's `Cell` value at ID 0.
    pub cell_value_bytes: u32,
    /// Where holdfast's store starts (or will start) in ID 0.
    pub forward_offset: u64,
    /// ic-memory's two commit slots: `absent` or `valid` with a generation
    /// (empty when the `Cell` no longer decodes).
    pub slots: Vec<IcMemorySlotView>,
    /// In words.
    pub message: String,
}

/// One of ic-memory's commit slots.
#[derive(Debug, Serialize)]
pub struct IcMemorySlotView {
    /// 0 or 1.
    pub slot: usize,
    /// `absent` or `valid`.
    pub state: &'static str,
    /// Generation of a valid slot.
    pub generation: Option<u64>,
    /// Payload bytes of a valid slot.
    pub payload_bytes: Option<u64>,
}

/// The image file.
#[derive(Debug, Serialize)]
pub struct ImageInfo {
    /// Path as given.
    pub path: String,
    /// Size in bytes.
    pub bytes: u64,
    /// Bytes actually read to build the report.
    pub bytes_read: u64,
}

/// The MemoryManager header.
#[derive(Debug, Serialize)]
pub struct MemoryManagerView {
    /// Layout version (1).
    pub layout_version: u8,
    /// Bucket size in 64 KiB pages.
    pub bucket_size_in_pages: u16,
    /// Buckets allocated.
    pub allocated_buckets: u16,
    /// Every virtual memory with a nonzero size.
    pub memories: Vec<MemoryView>,
}

/// One virtual memory in use.
#[derive(Debug, Serialize)]
pub struct MemoryView {
    /// MemoryManager ID.
    pub id: u8,
    /// Size in pages.
    pub pages: u64,
    /// Size in bytes.
    pub bytes: u64,
    /// Buckets it owns.
    pub buckets: u16,
}

/// Both commit slots and which is authoritative.
#[derive(Debug, Serialize)]
pub struct CommitStoreView {
    /// Slot 0 and slot 1.
    pub slots: [SlotView; 2],
    /// The slot recovery uses.
    pub authoritative_slot: Option<usize>,
    /// Its generation.
    pub authoritative_generation: Option<u64>,
    /// Why recovery fails, if it does.
    pub recovery_error: Option<String>,
}

/// One commit slot.
#[derive(Debug, Serialize)]
pub struct SlotView {
    /// 0 or 1.
    pub slot: usize,
    /// `absent`, `valid` or `corrupt`.
    pub state: &'static str,
    /// Generation in a valid slot.
    pub generation: Option<u64>,
    /// Payload bytes of a valid slot.
    pub payload_bytes: Option<u32>,
    /// Why a corrupt slot is corrupt.
    pub corruption: Option<String>,
}

/// The recovered ledger.
#[derive(Debug, Serialize)]
pub struct LedgerView {
    /// Current generation.
    pub current_generation: u64,
    /// Every allocation record.
    pub records: Vec<RecordView>,
    /// Number of committed generations.
    pub generation_count: usize,
    /// The latest generations, newest last.
    pub recent_generations: Vec<GenerationView>,
    /// Every committed generation, oldest first, with the key events the
    /// ledger records in it.
    pub timeline: Vec<TimelineGeneration>,
}

/// One allocation record and its live size.
#[derive(Debug, Serialize)]
pub struct RecordView {
    /// Stable key.
    pub stable_key: String,
    /// MemoryManager ID (null for other substrates).
    pub memory_id: Option<u8>,
    /// The slot as text.
    pub slot: String,
    /// `reserved`, `active` or `retired`.
    pub state: &'static str,
    /// First generation.
    pub first_generation: u64,
    /// Last generation that declared it.
    pub last_seen_generation: u64,
    /// Generation that retired it.
    pub retired_generation: Option<u64>,
    /// Latest label.
    pub label: Option<String>,
    /// Latest schema version.
    pub schema_version: Option<u32>,
    /// Latest schema fingerprint.
    pub schema_fingerprint: Option<String>,
    /// Number of schema-history entries.
    pub schema_changes: usize,
    /// Every schema-history entry, oldest first.
    pub schema_history: Vec<SchemaView>,
    /// Live size in pages (null for other substrates).
    pub live_pages: Option<u64>,
    /// Live size in bytes.
    pub live_bytes: Option<u64>,
}

/// One schema-history entry: the schema a key had from `generation` on.
#[derive(Debug, Serialize)]
pub struct SchemaView {
    /// The generation that committed it.
    pub generation: u64,
    /// Schema version.
    pub schema_version: Option<u32>,
    /// Schema fingerprint.
    pub schema_fingerprint: Option<String>,
}

/// One committed generation.
#[derive(Debug, Serialize)]
pub struct GenerationView {
    /// Generation.
    pub generation: u64,
    /// Parent generation.
    pub parent: u64,
    /// Runtime fingerprint of the binary that committed it.
    pub runtime_fingerprint: Option<String>,
    /// Declarations (or reservations, retirements) it committed.
    pub declaration_count: u32,
    /// Commit time, nanoseconds since the Unix epoch, when known.
    pub committed_at: Option<u64>,
}

/// Something a person should look at.
#[derive(Debug, Serialize)]
pub struct Warning {
    /// Machine-readable kind (see docs/CLI.md).
    pub kind: &'static str,
    /// The memory concerned, if any.
    pub memory_id: Option<u8>,
    /// What was found and why it matters.
    pub message: String,
}

/// Reads `path` and reports what it holds. Never writes.
///
/// # Errors
/// [`CliError`] when the file is missing, too small, not a MemoryManager
/// image, or unreadable. A ledger that does not recover is not an error here:
/// the report carries `ledger_error` (the caller exits 2 after showing it).
pub fn inspect(path: &Path) -> Result<InspectReport, CliError> {
    let image = open_memory_manager_image(path)?;
    let header = read_header(&image)?;
    let commit = commit_recovery_diagnostic_of(&image).map_err(|err| diagnostic_error(&image, err))?;
    image.check()?;
    let (ledger, ledger_error) = match recover_export(&image) {
        Ok(export) => (Some(export), None),
        Err(error @ (CliError::Ledger { .. } | CliError::NoLedger { .. } | CliError::IcMemory { .. })) => {
            (None, Some(error.to_string()))
        }
        Err(other) => return Err(other),
    };
    let ic_memory = ledger
        .as_ref()
        .and_then(|export| export.ic_memory.as_ref())
        .map(ic_memory_view);
    let warnings = warnings(&header, ledger.as_ref(), image.len_bytes());
    Ok(InspectReport {
        image: ImageInfo {
            path: path.display().to_string(),
            bytes: image.len_bytes(),
            bytes_read: image.bytes_read(),
        },
        memory_manager: memory_manager_view(&header),
        commit_store: commit_store_view(&commit),
        ledger: ledger.map(|export| ledger_view(&export)),
        ledger_error,
        ic_memory,
        warnings,
    })
}

fn ic_memory_view(diagnostic: &IcMemoryDiagnostic) -> IcMemoryView {
    let adoption = &diagnostic.adoption;
    let generation = adoption.generation.map_or_else(
        || "an unknown generation".to_owned(),
        |g| format!("generation {g}"),
    );
    let (state, message) = match diagnostic.state {
        IcMemoryLedgerState::Pending => (
            "pending",
            format!(
                "ID 0 holds a ledger written by ic-memory 0.5 ({} bytes, at {generation}). holdfast-memory \
                 reads it as its own history and adopts it at the next boot it accepts: it writes its own \
                 store at byte {} of ID 0 and then marks the ic-memory Cell as adopted, keeping every record, \
                 generation and schema entry. Nothing has been changed yet.",
                adoption.cell_value_bytes, adoption.forward_offset
            ),
        ),
        IcMemoryLedgerState::Adopted => (
            "adopted",
            format!(
                "ID 0 held a ledger written by ic-memory 0.5 ({generation}); holdfast-memory adopted it and \
                 keeps its history in its own store at byte {} of ID 0.",
                adoption.forward_offset
            ),
        ),
    };
    let slots = diagnostic
        .slots
        .iter()
        .flat_map(|slots| slots.iter().enumerate())
        .map(|(slot, diagnostic)| match diagnostic {
            IcMemorySlot::Absent => IcMemorySlotView {
                slot,
                state: "absent",
                generation: None,
                payload_bytes: None,
            },
            IcMemorySlot::Valid {
                generation,
                payload_bytes,
            } => IcMemorySlotView {
                slot,
                state: "valid",
                generation: Some(*generation),
                payload_bytes: Some(*payload_bytes),
            },
        })
        .collect();
    IcMemoryView {
        state,
        generation: adoption.generation,
        cell_value_bytes: adoption.cell_value_bytes,
        forward_offset: adoption.forward_offset,
        slots,
        message,
    }
}

/// Opens `path` and checks it can hold a MemoryManager at all.
pub(crate) fn open_memory_manager_image(path: &Path) -> Result<ImageFile, CliError> {
    let image = ImageFile::open(path)?;
    if image.size() == 0 {
        return Err(CliError::TooSmall {
            path: path.to_owned(),
            bytes: image.len_bytes(),
        });
    }
    Ok(image)
}

pub(crate) fn read_header(image: &ImageFile) -> Result<MemoryManagerHeader, CliError> {
    let class = classify_raw_memory(image);
    image.check()?;
    let path = image.path().to_owned();
    match class {
        Ok(RawMemoryClass::MemoryManager(header)) => Ok(header),
        Ok(RawMemoryClass::InterruptedInitialization) => Err(CliError::InterruptedInitialization { path }),
        Ok(RawMemoryClass::Empty) => Err(CliError::TooSmall { path, bytes: 0 }),
        Err(error) => Err(CliError::NotMemoryManager { path, error }),
    }
}

/// The ledger export, or why there is none.
fn recover_export(image: &ImageFile) -> Result<DiagnosticExport, CliError> {
    let export = diagnostic_export_of(image).map_err(|err| diagnostic_error(image, err))?;
    image.check()?;
    let pending_adoption = export
        .ic_memory
        .as_ref()
        .is_some_and(|ic_memory| ic_memory.state == IcMemoryLedgerState::Pending);
    if export.commit.authoritative_generation.is_none() && !pending_adoption {
        return Err(CliError::NoLedger {
            path: image.path().to_owned(),
        });
    }
    Ok(export)
}

fn diagnostic_error(image: &ImageFile, err: RuntimeDiagnosticError) -> CliError {
    if let Err(read) = image.check() {
        return read;
    }
    let path = image.path().to_owned();
    match err {
        RuntimeDiagnosticError::Image(error) => CliError::NotMemoryManager { path, error },
        RuntimeDiagnosticError::Recovery(error) => CliError::Ledger {
            path,
            reason: commit_recovery_reason(&error),
        },
        RuntimeDiagnosticError::Adoption(error) => CliError::IcMemory { path, error },
        other => CliError::Ledger {
            path,
            reason: other.to_string(),
        },
    }
}

fn memory_manager_view(header: &MemoryManagerHeader) -> MemoryManagerView {
    MemoryManagerView {
        layout_version: header.layout_version,
        bucket_size_in_pages: header.bucket_size_in_pages,
        allocated_buckets: header.allocated_buckets,
        memories: header
            .memories_in_use()
            .map(|id| MemoryView {
                id,
                pages: header.memory_sizes_in_pages[usize::from(id)],
                bytes: header.memory_size_bytes(id),
                buckets: header.buckets_per_memory[usize::from(id)],
            })
            .collect(),
    }
}

fn commit_store_view(commit: &CommitStoreDiagnostic) -> CommitStoreView {
    let slot = |index: usize, diagnostic: &SlotDiagnostic| match diagnostic {
        SlotDiagnostic::Absent => SlotView {
            slot: index,
            state: "absent",
            generation: None,
            payload_bytes: None,
            corruption: None,
        },
        SlotDiagnostic::Valid {
            generation,
            payload_len,
            ..
        } => SlotView {
            slot: index,
            state: "valid",
            generation: Some(*generation),
            payload_bytes: Some(*payload_len),
            corruption: None,
        },
        SlotDiagnostic::Corrupt { corruption } => SlotView {
            slot: index,
            state: "corrupt",
            generation: None,
            payload_bytes: None,
            corruption: Some(corruption.to_string()),
        },
    };
    CommitStoreView {
        slots: [slot(0, &commit.slot0), slot(1, &commit.slot1)],
        authoritative_slot: commit.authoritative_slot,
        authoritative_generation: commit.authoritative_generation,
        recovery_error: commit.recovery_error.clone(),
    }
}

fn ledger_view(export: &DiagnosticExport) -> LedgerView {
    let generations = &export.generations;
    LedgerView {
        current_generation: export.current_generation,
        records: export
            .records
            .iter()
            .map(|record| record_view(&record.allocation, record.memory_size.map(|size| size.pages)))
            .collect(),
        generation_count: generations.len(),
        recent_generations: generations[generations.len().saturating_sub(RECENT_GENERATIONS)..]
            .iter()
            .map(generation_view)
            .collect(),
        timeline: timeline(
            export.records.iter().map(|record| &record.allocation),
            generations,
        ),
    }
}

pub(crate) fn record_view(record: &AllocationRecord, live_pages: Option<u64>) -> RecordView {
    let schema = record.current_schema();
    RecordView {
        stable_key: record.stable_key().to_string(),
        memory_id: record.slot().memory_manager_id(),
        slot: record.slot().to_string(),
        state: state_name(record.state()),
        first_generation: record.first_generation(),
        last_seen_generation: record.last_seen_generation(),
        retired_generation: record.retired_generation(),
        label: record.label().map(str::to_owned),
        schema_version: schema.schema_version(),
        schema_fingerprint: schema.schema_fingerprint().map(str::to_owned),
        schema_changes: record.schema_history().len(),
        schema_history: record
            .schema_history()
            .iter()
            .map(|entry| SchemaView {
                generation: entry.generation(),
                schema_version: entry.schema().schema_version(),
                schema_fingerprint: entry.schema().schema_fingerprint().map(str::to_owned),
            })
            .collect(),
        live_pages,
        live_bytes: live_pages.map(|pages| pages * 65536),
    }
}

pub(crate) fn generation_view(record: &GenerationRecord) -> GenerationView {
    GenerationView {
        generation: record.generation(),
        parent: record.parent_generation(),
        runtime_fingerprint: record.runtime_fingerprint().map(str::to_owned),
        declaration_count: record.declaration_count(),
        committed_at: record.committed_at(),
    }
}

pub(crate) fn state_name(state: AllocationState) -> &'static str {
    match state {
        AllocationState::Reserved => "reserved",
        AllocationState::Active => "active",
        AllocationState::Retired => "retired",
    }
}

fn warnings(
    header: &MemoryManagerHeader,
    ledger: Option<&DiagnosticExport>,
    file_bytes: u64,
) -> Vec<Warning> {
    let mut warnings = Vec::new();
    if !file_bytes.is_multiple_of(65536) {
        warnings.push(Warning {
            kind: "partial_page",
            memory_id: None,
            message: format!(
                "the file ends with {} bytes of a partial page, which no memory can use; the image may be truncated",
                file_bytes % 65536
            ),
        });
    }
    if let Some((bucket, owner)) = header.interrupted_grow_bucket {
        warnings.push(Warning {
            kind: "interrupted_grow_bucket",
            memory_id: Some(owner),
            message: format!(
                "bucket {bucket} is counted for memory {owner}, whose size does not reach it: a grow was \
                 interrupted while saving the header; the next accepted boot clears the entry before any \
                 store opens"
            ),
        });
    }
    if let Some(owner) = header.torn_bucket_allocation {
        warnings.push(Warning {
            kind: "torn_bucket_allocation",
            memory_id: Some(owner),
            message: format!(
                "bucket {} is marked for memory {owner} but not counted as allocated: a grow was interrupted; \
                 the next accepted boot clears the entry before any store opens (loaded as it is, the bucket \
                 could be handed to two memories)",
                header.allocated_buckets
            ),
        });
    }
    let Some(export) = ledger else {
        return warnings;
    };
    let record_on = |id: u8| {
        export
            .records
            .iter()
            .find(|record| record.allocation.slot().memory_manager_id() == Some(id))
    };
    for id in header.memories_in_use() {
        let record = record_on(id);
        if record.is_none() && id > MEMORY_MANAGER_GOVERNANCE_MAX_ID {
            warnings.push(Warning {
                kind: "unowned_memory",
                memory_id: Some(id),
                message: format!(
                    "memory {id} holds {} bytes but no ledger record owns it: a store was opened without \
                     being declared",
                    header.memory_size_bytes(id)
                ),
            });
        }
        let governed = record.is_some_and(|r| r.allocation.stable_key().is_ic_memory_key());
        if id <= MEMORY_MANAGER_GOVERNANCE_MAX_ID && id != MEMORY_MANAGER_LEDGER_ID && !governed {
            warnings.push(Warning {
                kind: "governance_range_in_use",
                memory_id: Some(id),
                message: format!(
                    "memory {id} is in the governance range 0..=9 and holds {} bytes, but the governance layer \
                     does not own it",
                    header.memory_size_bytes(id)
                ),
            });
        }
        if let Some(record) = record.filter(|r| r.allocation.state() == AllocationState::Retired) {
            warnings.push(Warning {
                kind: "retired_memory_has_data",
                memory_id: Some(id),
                message: format!(
                    "{} was retired at generation {} but its memory still holds {} bytes (they are never reused)",
                    record.allocation.stable_key(),
                    record.allocation.retired_generation().unwrap_or_default(),
                    header.memory_size_bytes(id)
                ),
            });
        }
    }
    for record in &export.records {
        let empty = record.memory_size.is_some_and(|size| size.pages == 0);
        if empty && record.allocation.state() == AllocationState::Active {
            warnings.push(Warning {
                kind: "empty_record",
                memory_id: record.allocation.slot().memory_manager_id(),
                message: format!(
                    "{} is active but its memory is empty (declared, never written)",
                    record.allocation.stable_key()
                ),
            });
        }
    }
    warnings
}
