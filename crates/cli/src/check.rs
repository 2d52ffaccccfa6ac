//! `holdfast check`: would the next build's layout be accepted by this image?
//!
//! [`check`] runs exactly the validation a boot would run on a read-only
//! view of the image — `MemoryRuntime::plan_layout` for a declarations file
//! in the compact form (declaring crates and ranges included, so per-crate
//! range ownership is checked as the default runtime's bootstrap checks it),
//! `MemoryRuntime::plan` for the snapshot form — and reports either what the
//! next generation would change or every conflict, each with the historical
//! record it contradicts. It never writes.

use std::path::Path;

use holdfast_memory::{
    AcceptAllPolicy, AllocationLedger, AllocationValidationError, DeclarationSnapshotError, DeclarationsFile,
    IC_MEMORY_LEDGER_STABLE_KEY, IcMemoryAdoption, LayoutChange, LayoutVerdict, MEMORY_MANAGER_LEDGER_ID,
    MemoryRuntime, RuntimeBootstrapError, RuntimePolicyError, StableKey, StaticMemoryDeclarationError,
};
use serde::Serialize;

use crate::error::CliError;
use crate::inspect::{
    ImageInfo, RecordView, open_memory_manager_image, read_header, record_view, state_name,
};

/// The largest declarations file accepted (a snapshot of 255 declarations is
/// under 100 KiB).
pub const MAX_DECLARATIONS_BYTES: u64 = 4 << 20;

/// What `check` found. Field names are part of the JSON contract.
#[derive(Debug, Serialize)]
pub struct CheckReport {
    /// The image file.
    pub image: ImageInfo,
    /// The declarations file.
    pub declarations: String,
    /// Its form: `compact` (declaring crates and ranges checked) or
    /// `snapshot` (declarations only, counted as the application's).
    pub declarations_form: &'static str,
    /// The image's current generation.
    pub current_generation: u64,
    /// Set when ID 0 holds a ledger written by ic-memory 0.5: an accepted
    /// boot first adopts it (keeping `current_generation`).
    pub adoption: Option<IcMemoryAdoption>,
    /// `accepted` or `refused`.
    pub verdict: &'static str,
    /// The generation the boot would commit; null when refused or unchanged.
    pub next_generation: Option<u64>,
    /// What an accepted boot would change.
    pub changes: Vec<ChangeView>,
    /// Why a refused boot is refused: every conflict.
    pub conflicts: Vec<ConflictView>,
}

impl CheckReport {
    /// Whether the layout would be accepted.
    pub fn accepted(&self) -> bool {
        self.conflicts.is_empty()
    }
}

/// One change the next generation would make.
#[derive(Debug, Serialize)]
pub struct ChangeView {
    /// See docs/CLI.md.
    pub kind: &'static str,
    /// The key concerned.
    pub stable_key: Option<String>,
    /// Its slot.
    pub slot: Option<String>,
    /// In words.
    pub message: String,
}

/// One reason the layout is refused.
#[derive(Debug, Serialize)]
pub struct ConflictView {
    /// See docs/CLI.md.
    pub kind: &'static str,
    /// The declared key concerned, when the conflict names one.
    pub stable_key: Option<String>,
    /// The declared slot concerned, when the conflict names one.
    pub slot: Option<String>,
    /// The historical record the declaration contradicts.
    pub recorded: Option<RecordView>,
    /// In words.
    pub message: String,
}

/// Checks the declarations in `declarations_path` against the image at
/// `image_path`. Never writes.
///
/// # Errors
/// [`CliError`] when either file cannot be read, the image is not a
/// MemoryManager image, or its ledger is missing or does not recover.
pub fn check(image_path: &Path, declarations_path: &Path) -> Result<CheckReport, CliError> {
    let file = read_declarations(declarations_path)?;
    let image = open_memory_manager_image(image_path)?;
    read_header(&image)?;
    let (declarations_form, plan) = match file {
        DeclarationsFile::Layout(layout) => (
            "compact",
            MemoryRuntime::plan_layout(&image, &layout, &AcceptAllPolicy),
        ),
        DeclarationsFile::Snapshot(snapshot) => (
            "snapshot",
            MemoryRuntime::plan(&image, snapshot, &AcceptAllPolicy),
        ),
        _ => {
            return Err(CliError::Declarations {
                path: declarations_path.to_owned(),
                reason: "it is in a form this version of holdfast reads but cannot check".into(),
            });
        }
    };
    image.check()?;
    let plan = plan.map_err(|err| match err {
        RuntimeBootstrapError::Registry(_) | RuntimeBootstrapError::Range(_) => CliError::LayoutRefused {
            path: declarations_path.to_owned(),
            reason: refused_before_reading(&err),
        },
        other => CliError::from_recovery(image_path.to_owned(), other),
    })?;
    let ledger = &plan.ledger;
    if ledger.current_generation() == 0 {
        return Err(CliError::NoLedger {
            path: image_path.to_owned(),
        });
    }
    let (next_generation, changes, conflicts) = match &plan.verdict {
        LayoutVerdict::Accepted {
            changes,
            next_generation,
            ..
        } => (
            *next_generation,
            changes.iter().map(change_view).collect(),
            Vec::new(),
        ),
        LayoutVerdict::Refused { conflicts } => (
            None,
            Vec::new(),
            conflicts
                .iter()
                .map(|conflict| conflict_view(ledger, conflict))
                .collect(),
        ),
        LayoutVerdict::CommitRefused { error } => (
            None,
            Vec::new(),
            vec![ConflictView {
                kind: "commit_refused",
                stable_key: None,
                slot: None,
                recorded: None,
                message: format!("the layout validates, but its boot would be refused: {error}"),
            }],
        ),
    };
    Ok(CheckReport {
        image: ImageInfo {
            path: image_path.display().to_string(),
            bytes: image.len_bytes(),
            bytes_read: image.bytes_read(),
        },
        declarations: declarations_path.display().to_string(),
        declarations_form,
        current_generation: ledger.current_generation(),
        adoption: plan.adoption,
        verdict: if conflicts.is_empty() {
            "accepted"
        } else {
            "refused"
        },
        next_generation,
        changes,
        conflicts,
    })
}

fn read_declarations(path: &Path) -> Result<DeclarationsFile, CliError> {
    let fail = |reason: String| CliError::Declarations {
        path: path.to_owned(),
        reason,
    };
    let metadata = std::fs::metadata(path).map_err(|err| fail(err.to_string()))?;
    if metadata.len() > MAX_DECLARATIONS_BYTES {
        return Err(fail(format!(
            "it is {} bytes, more than the {MAX_DECLARATIONS_BYTES}-byte limit",
            metadata.len()
        )));
    }
    let text = std::fs::read_to_string(path).map_err(|err| fail(err.to_string()))?;
    DeclarationsFile::from_json(&text).map_err(|err| fail(err.to_string()))
}

/// Why every boot of the build would be refused before reading memory (its
/// declarations or ranges conflict among themselves), with what to do when
/// an entry takes the ledger's own ID or key.
fn refused_before_reading(error: &RuntimeBootstrapError<std::convert::Infallible>) -> String {
    let hint = match error {
        RuntimeBootstrapError::Registry(StaticMemoryDeclarationError::Declaration(
            DeclarationSnapshotError::DuplicateSlot(slot),
        )) if slot.memory_manager_id() == Some(MEMORY_MANAGER_LEDGER_ID) => {
            "; ID 0 holds the ledger (ic_memory.ledger.v1), which every boot declares itself: give that store \
             another ID"
        }
        RuntimeBootstrapError::Registry(StaticMemoryDeclarationError::Declaration(
            DeclarationSnapshotError::DuplicateStableKey(key),
        )) if key.as_str() == IC_MEMORY_LEDGER_STABLE_KEY => {
            "; ic_memory.ledger.v1 is the ledger's own key, which every boot declares itself: do not list it"
        }
        _ => "",
    };
    format!("{error}{hint}")
}

fn change_view(change: &LayoutChange) -> ChangeView {
    let (kind, key, slot, message) = match change {
        LayoutChange::NewAllocation { stable_key, slot } => (
            "new_allocation",
            Some(stable_key),
            Some(slot),
            format!("{stable_key} is allocated {slot}"),
        ),
        LayoutChange::ActivatedReservation { stable_key, slot } => (
            "activated_reservation",
            Some(stable_key),
            Some(slot),
            format!("reserved {stable_key} on {slot} becomes active"),
        ),
        LayoutChange::Redeclared {
            stable_key,
            slot,
            last_seen_generation,
        } => (
            "redeclared",
            Some(stable_key),
            Some(slot),
            format!(
                "{stable_key}, last declared at generation {last_seen_generation}, is declared again on {slot}"
            ),
        ),
        LayoutChange::SchemaChanged { stable_key, from, to } => (
            "schema_change",
            Some(stable_key),
            None,
            format!(
                "{stable_key} schema {} → {}",
                describe_schema(from.schema_version(), from.schema_fingerprint()),
                describe_schema(to.schema_version(), to.schema_fingerprint())
            ),
        ),
        LayoutChange::LabelChanged { stable_key, from, to } => (
            "label_change",
            Some(stable_key),
            None,
            format!(
                "{stable_key} label {} → {}",
                or_none(from.as_deref()),
                or_none(to.as_deref())
            ),
        ),
        LayoutChange::OmittedKept {
            stable_key,
            slot,
            state,
        } => (
            "omitted_kept",
            Some(stable_key),
            Some(slot),
            format!(
                "{stable_key} on {slot} is not declared; it stays in history ({}), never freed",
                state_name(*state)
            ),
        ),
        LayoutChange::RuntimeFingerprintChanged { from, to } => (
            "runtime_fingerprint_change",
            None,
            None,
            format!(
                "runtime fingerprint {} → {}",
                or_none(from.as_deref()),
                or_none(to.as_deref())
            ),
        ),
        other => ("other", None, None, format!("{other:?}")),
    };
    ChangeView {
        kind,
        stable_key: key.map(ToString::to_string),
        slot: slot.map(ToString::to_string),
        message,
    }
}

fn conflict_view(
    ledger: &AllocationLedger,
    conflict: &AllocationValidationError<RuntimePolicyError<std::convert::Infallible>>,
) -> ConflictView {
    let history = ledger.allocation_history();
    let recorded = |key: &StableKey| history.record(key).map(|record| record_view(record, None));
    let (kind, stable_key, slot, recorded) = match conflict {
        AllocationValidationError::StableKeySlotConflict {
            stable_key,
            declared_slot,
            ..
        } => (
            "key_moved",
            Some(stable_key),
            Some(declared_slot),
            recorded(stable_key),
        ),
        AllocationValidationError::SlotStableKeyConflict {
            slot,
            recorded_stable_key,
            declared_stable_key,
            ..
        } => (
            "slot_reused",
            Some(declared_stable_key),
            Some(slot),
            recorded(recorded_stable_key),
        ),
        AllocationValidationError::RetiredAllocation { stable_key, .. } => {
            ("retired_key", Some(stable_key), None, recorded(stable_key))
        }
        AllocationValidationError::Policy(RuntimePolicyError::ReservedStableKeyAuthority {
            stable_key,
            ..
        }) => ("reserved_key", Some(stable_key), None, None),
        AllocationValidationError::Policy(_) => ("policy", None, None, None),
        AllocationValidationError::Snapshot(_) => ("declarations_invalid", None, None, None),
        AllocationValidationError::Compatibility(_) => ("ledger_incompatible", None, None, None),
        AllocationValidationError::LedgerIntegrity(_) => ("ledger_integrity", None, None, None),
        _ => ("other", None, None, None),
    };
    ConflictView {
        kind,
        stable_key: stable_key.map(ToString::to_string),
        slot: slot.map(ToString::to_string),
        recorded,
        message: conflict.to_string(),
    }
}

fn describe_schema(version: Option<u32>, fingerprint: Option<&str>) -> String {
    match (version, fingerprint) {
        (None, None) => "none".into(),
        (Some(v), None) => format!("v{v}"),
        (None, Some(f)) => f.to_owned(),
        (Some(v), Some(f)) => format!("v{v} ({f})"),
    }
}

fn or_none(text: Option<&str>) -> String {
    text.map_or_else(|| "none".to_owned(), |t| format!("{t:?}"))
}
