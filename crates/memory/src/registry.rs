//! The static registry: declarations and ranges registered before bootstrap.
//!
//! One per process. Crates register from static constructors (the macros of
//! this crate expand to `ctor` constructors; on `wasm32-unknown-unknown` they
//! run when the embedder calls `__wasm_call_ctors`, which the Internet
//! Computer does before `canister_init`/`canister_post_upgrade`). Registration
//! checks only the entry it receives; conflicts between entries are found by
//! bootstrap, which seals the registry. Failures inside a static constructor
//! cannot be returned, so they are kept and reported by bootstrap as
//! `RuntimeBootstrapError::Registry`. Every lock recovers from poisoning.

use std::sync::{Mutex, MutexGuard, PoisonError};

use serde::Serialize;

use crate::authority::{MemoryManagerIdRange, MemoryManagerRangeAuthorityError, MemoryManagerRangeMode};
use crate::declaration::{
    AllocationDeclaration, DeclarationSnapshot, DeclarationSnapshotError, SchemaMetadata,
};
use crate::declarations_file::{DeclaredAllocation, DeclaredLayout, DeclaredRange};
use crate::slot::{
    IC_MEMORY_AUTHORITY_OWNER, IC_MEMORY_LEDGER_LABEL, IC_MEMORY_LEDGER_STABLE_KEY, MEMORY_MANAGER_LEDGER_ID,
};

/// One registered declaration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct StaticMemoryDeclaration {
    /// MemoryManager ID.
    pub id: u8,
    /// The crate that registered it (`CARGO_PKG_NAME`).
    pub declaring_crate: String,
    /// The label.
    pub label: String,
    /// The stable key.
    pub stable_key: String,
    /// Schema metadata.
    pub schema: SchemaMetadata,
}

/// One registered range.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct StaticMemoryRangeDeclaration {
    /// First ID.
    pub start: u8,
    /// Last ID.
    pub end: u8,
    /// The owning crate.
    pub declaring_crate: String,
    /// The mode.
    pub mode: MemoryManagerRangeMode,
    /// Why.
    pub purpose: Option<String>,
}

/// Why a registration was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StaticMemoryDeclarationError {
    /// The registry was sealed by bootstrap.
    #[error("the static memory registry is sealed: register before bootstrap")]
    RegistrySealed,
    /// The declaration is malformed (or conflicts with another, at bootstrap).
    #[error(transparent)]
    Declaration(DeclarationSnapshotError),
    /// The range is malformed.
    #[error(transparent)]
    Range(MemoryManagerRangeAuthorityError),
    /// The declaring crate name is empty.
    #[error("the declaring crate name is empty")]
    EmptyDeclaringCrate,
}

#[derive(Default)]
pub(crate) struct Registry {
    pub(crate) declarations: Vec<StaticMemoryDeclaration>,
    pub(crate) ranges: Vec<StaticMemoryRangeDeclaration>,
    pub(crate) sealed: bool,
    pub(crate) deferred_errors: Vec<StaticMemoryDeclarationError>,
    pub(crate) eager_init: Vec<fn()>,
}

static REGISTRY: Mutex<Registry> = Mutex::new(Registry {
    declarations: Vec::new(),
    ranges: Vec::new(),
    sealed: false,
    deferred_errors: Vec::new(),
    eager_init: Vec::new(),
});

pub(crate) fn registry() -> MutexGuard<'static, Registry> {
    REGISTRY.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Registers a MemoryManager declaration.
///
/// # Errors
/// `RegistrySealed` after bootstrap; `Declaration(..)` for a malformed key,
/// label or the sentinel ID; `EmptyDeclaringCrate`.
pub fn register_static_memory_manager_declaration(
    id: u8,
    declaring_crate: impl Into<String>,
    label: impl Into<String>,
    stable_key: impl Into<String>,
) -> Result<(), StaticMemoryDeclarationError> {
    register_static_memory_manager_declaration_with_schema(
        id,
        declaring_crate,
        label,
        stable_key,
        SchemaMetadata::none(),
    )
}

/// Registers a MemoryManager declaration with schema metadata.
///
/// # Errors
/// As [`register_static_memory_manager_declaration`].
pub fn register_static_memory_manager_declaration_with_schema(
    id: u8,
    declaring_crate: impl Into<String>,
    label: impl Into<String>,
    stable_key: impl Into<String>,
    schema: SchemaMetadata,
) -> Result<(), StaticMemoryDeclarationError> {
    let entry = StaticMemoryDeclaration {
        id,
        declaring_crate: declaring_crate.into(),
        label: label.into(),
        stable_key: stable_key.into(),
        schema,
    };
    if entry.declaring_crate.is_empty() {
        return Err(StaticMemoryDeclarationError::EmptyDeclaringCrate);
    }
    entry
        .to_declaration()
        .map_err(StaticMemoryDeclarationError::Declaration)?;
    let mut registry = registry();
    if registry.sealed {
        return Err(StaticMemoryDeclarationError::RegistrySealed);
    }
    registry.declarations.push(entry);
    Ok(())
}

/// Registers a range of MemoryManager IDs owned by `declaring_crate`.
///
/// # Errors
/// `RegistrySealed`, `Range(InvalidRange)` or `EmptyDeclaringCrate`.
pub fn register_static_memory_manager_range(
    start: u8,
    end: u8,
    declaring_crate: impl Into<String>,
    mode: MemoryManagerRangeMode,
    purpose: Option<String>,
) -> Result<(), StaticMemoryDeclarationError> {
    MemoryManagerIdRange::new(start, end).map_err(StaticMemoryDeclarationError::Range)?;
    let declaring_crate = declaring_crate.into();
    if declaring_crate.is_empty() {
        return Err(StaticMemoryDeclarationError::EmptyDeclaringCrate);
    }
    let mut registry = registry();
    if registry.sealed {
        return Err(StaticMemoryDeclarationError::RegistrySealed);
    }
    registry.ranges.push(StaticMemoryRangeDeclaration {
        start,
        end,
        declaring_crate,
        mode,
        purpose,
    });
    Ok(())
}

/// Every registered declaration, in registration order.
pub fn static_memory_declarations() -> Vec<StaticMemoryDeclaration> {
    registry().declarations.clone()
}

/// Every registered range, in registration order.
pub fn static_memory_range_declarations() -> Vec<StaticMemoryRangeDeclaration> {
    registry().ranges.clone()
}

/// The snapshot the next bootstrap would validate: the ledger's own
/// declaration, then every registered declaration. It leaves out who
/// declared what and the ranges; [`collect_static_layout`] keeps them, and
/// is what [`write_static_declarations_json`] exports for `holdfast check`.
///
/// # Errors
/// The first registration error kept from a static constructor, or
/// `Declaration(..)` for duplicates.
pub fn collect_static_declarations() -> Result<DeclarationSnapshot, StaticMemoryDeclarationError> {
    let layout = collect_static_layout()?;
    let (snapshot, _) = snapshot_with_authorities(layout.declarations())?;
    Ok(snapshot)
}

/// The layout the next bootstrap of the default runtime starts from: every
/// registered declaration with its declaring crate and every registered
/// range, in registration order (the ledger's own declaration is not listed:
/// bootstrap adds it). Conflicts between entries are not checked here; they
/// are what bootstrap (and `MemoryRuntime::plan_layout`) refuse.
///
/// # Errors
/// The first registration error kept from a static constructor.
pub fn collect_static_layout() -> Result<DeclaredLayout, StaticMemoryDeclarationError> {
    let registry = registry();
    if let Some(err) = registry.deferred_errors.first() {
        return Err(err.clone());
    }
    static_layout(&registry.declarations, &registry.ranges)
}

/// Writes [`collect_static_layout`] in the compact declarations-file form
/// (docs/CLI.md) to `path`: the one call a canister project needs in a
/// native test or helper binary to produce the file `holdfast check
/// --declarations` reads. Declaring crates and ranges are included, so
/// `check` re-checks per-crate range ownership offline too. The text is read
/// back before it is written, so only a file `check` can read is written.
///
/// # Errors
/// The collection error, a registered name the file form cannot carry (a
/// crate name or purpose that is not 1..=256 bytes of printable ASCII), or
/// the I/O error, as text.
pub fn write_static_declarations_json(path: impl AsRef<std::path::Path>) -> Result<(), String> {
    let layout = collect_static_layout().map_err(|err| err.to_string())?;
    let text = layout.to_json();
    DeclaredLayout::from_json(&text)
        .map_err(|err| format!("the registered layout cannot be written as a declarations file: {err}"))?;
    std::fs::write(path.as_ref(), text)
        .map_err(|err| format!("cannot write {}: {err}", path.as_ref().display()))
}

/// The layout of registered `entries` and `ranges`, exactly as registered.
///
/// # Errors
/// `Declaration(..)` or `Range(..)` for an entry registration would have
/// refused (never for entries that came through registration).
pub(crate) fn static_layout(
    entries: &[StaticMemoryDeclaration],
    ranges: &[StaticMemoryRangeDeclaration],
) -> Result<DeclaredLayout, StaticMemoryDeclarationError> {
    let ranges = ranges
        .iter()
        .map(|range| {
            let ids = MemoryManagerIdRange::new(range.start, range.end)
                .map_err(StaticMemoryDeclarationError::Range)?;
            Ok(DeclaredRange::registered(
                ids,
                range.declaring_crate.clone(),
                range.mode,
                range.purpose.clone(),
            ))
        })
        .collect::<Result<Vec<_>, StaticMemoryDeclarationError>>()?;
    let declarations = entries
        .iter()
        .map(|entry| {
            let declaration = entry
                .to_declaration()
                .map_err(StaticMemoryDeclarationError::Declaration)?;
            Ok(DeclaredAllocation::registered(
                declaration,
                entry.declaring_crate.clone(),
            ))
        })
        .collect::<Result<Vec<_>, StaticMemoryDeclarationError>>()?;
    Ok(DeclaredLayout::new(declarations, ranges))
}

impl StaticMemoryDeclaration {
    fn to_declaration(&self) -> Result<AllocationDeclaration, DeclarationSnapshotError> {
        AllocationDeclaration::memory_manager_with_schema(
            &self.stable_key,
            self.id,
            &self.label,
            self.schema.clone(),
        )
    }
}

/// The ledger's own declaration, declared by the governance owner.
pub(crate) fn ledger_declaration() -> AllocationDeclaration {
    AllocationDeclaration::memory_manager(
        IC_MEMORY_LEDGER_STABLE_KEY,
        MEMORY_MANAGER_LEDGER_ID,
        IC_MEMORY_LEDGER_LABEL,
    )
    .expect("the ledger's own key, ID and label are valid constants")
}

/// The snapshot of declared `entries` with the ledger's own first, and the
/// declaring crate of each declaration (same order).
///
/// # Errors
/// `Declaration(..)` for duplicates (an entry on ID 0 or with the ledger's
/// key duplicates the ledger's own declaration).
pub(crate) fn snapshot_with_authorities(
    entries: &[DeclaredAllocation],
) -> Result<(DeclarationSnapshot, Vec<String>), StaticMemoryDeclarationError> {
    let mut declarations = vec![ledger_declaration()];
    let mut authorities = vec![IC_MEMORY_AUTHORITY_OWNER.to_owned()];
    for entry in entries {
        declarations.push(entry.declaration().clone());
        authorities.push(entry.declared_by().to_owned());
    }
    let snapshot =
        DeclarationSnapshot::new(declarations).map_err(StaticMemoryDeclarationError::Declaration)?;
    Ok((snapshot, authorities))
}

/// Called by the macros from static constructors: keeps a failure for
/// bootstrap to report instead of panicking before `main`.
#[doc(hidden)]
pub fn __register_declaration_from_macro(id: u8, declaring_crate: &str, label: &str, stable_key: &str) {
    if let Err(err) = register_static_memory_manager_declaration(id, declaring_crate, label, stable_key) {
        registry().deferred_errors.push(err);
    }
}

/// Called by `ic_memory_range!` from a static constructor.
#[doc(hidden)]
pub fn __register_range_from_macro(start: u8, end: u8, declaring_crate: &str, mode: MemoryManagerRangeMode) {
    if let Err(err) = register_static_memory_manager_range(start, end, declaring_crate, mode, None) {
        registry().deferred_errors.push(err);
    }
}
