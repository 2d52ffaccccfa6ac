//! `holdfast-memory`: stable-memory allocation governance.
//!
//! A long-lived program keeps several durable stores in one stable memory,
//! each in its own slot (a `MemoryManager` virtual memory, ID 0..=254). The
//! mapping "store X lives in slot N" otherwise exists only in source code: a
//! release that maps `app.users.v1` to another store's slot compiles, installs
//! and reads the wrong bytes. This crate records the mapping durably, in a
//! ledger at ID 0 of the same memory, and refuses any binary whose layout
//! contradicts history **before any store is opened**.
//!
//! The order is fixed: recover the ledger → declare → validate against
//! history and policy → commit the new generation → only then open handles.
//! [`MemoryRuntime`] (any memory) and the default runtime (the canister's
//! memory, declarations from the static registry and the macros) both follow
//! it; the only way to get a store's memory from them is to name a key that
//! was validated on that ID.
//!
//! The public names mirror ic-memory 0.5, so code written against it compiles
//! with `ic-memory = { package = "holdfast-memory", .. }`.
//!
//! Modules, from the bottom up: [`key`] (stable-key grammar), [`slot`] (slots
//! and MemoryManager ID rules), [`declaration`] (what a binary declares),
//! [`ledger`] (durable history and its integrity rules), [`validate`]
//! (declarations against history and policy), [`staging`] (generation N+1
//! from N), [`codec`] (ledger bytes), [`physical`] (the
//! two-slot commit store), [`image`] (raw MemoryManager images),
//! [`adoption`] (ic-memory 0.5 ledgers at ID 0), [`authority`] (ID ranges),
//! [`declarations_file`] (a build's layout as a file, with declaring crates
//! and ranges), [`bootstrap`], [`registry`], [`runtime`],
//! [`diagnostics`]. docs/FORMAT.md describes every byte.
//!
//! Non-goals: cryptographic tamper resistance, malicious controllers,
//! authorization, schema migration, data validation, management-canister
//! lifecycle and disaster recovery. The checksum detects torn writes and
//! accidental corruption only.
#![forbid(unsafe_code)]

pub mod adoption;
pub mod authority;
pub mod bootstrap;
pub mod codec;
pub mod declaration;
pub mod declarations_file;
pub mod diagnostics;
#[doc(hidden)]
pub mod fuzzing;
pub mod image;
pub mod key;
pub mod ledger;
pub mod physical;
pub mod registry;
pub mod runtime;
pub mod slot;
pub mod staging;
pub mod validate;

pub use ic_stable_structures as stable_structures;

pub use adoption::{
    AdoptionError, IcMemoryAdoption, IcMemoryCellHeader, IcMemoryLedger, IcMemorySlot,
    decode_ic_memory_cell_value,
};
pub use authority::{
    MemoryManagerAuthorityRecord, MemoryManagerIdRange, MemoryManagerRangeAuthority,
    MemoryManagerRangeAuthorityError, MemoryManagerRangeMode, memory_manager_governance_range,
};
pub use bootstrap::{
    AllocationBootstrap, AllocationSession, AllocationSessionError, AllocationSubstrate, BootstrapCommit,
    BootstrapError,
};
pub use codec::{CborLedgerCodec, LedgerCodec, LedgerDecodeError};
pub use declaration::{
    AllocationDeclaration, DeclarationCollector, DeclarationSnapshot, DeclarationSnapshotError,
    SchemaMetadata,
};
pub use declarations_file::{
    DECLARATIONS_FORMAT, DeclarationsFile, DeclarationsFileError, DeclaredAllocation, DeclaredLayout,
    DeclaredLayoutError, DeclaredRange,
};
pub use diagnostics::{
    DiagnosticExport, DiagnosticMemorySize, DiagnosticRecord, IcMemoryAdoptionView, IcMemoryDiagnostic,
    IcMemoryLedgerState, RuntimeDiagnosticError, commit_recovery_diagnostic_of, diagnostic_export_of,
};
pub use image::{MemoryImageError, MemoryManagerHeader, RawMemoryClass, classify_raw_memory};
pub use key::{StableKey, StableKeyError, is_ic_memory_stable_key};
pub use ledger::{
    AllocationHistory, AllocationLedger, AllocationRecord, AllocationRetirement, AllocationState,
    CURRENT_LEDGER_SCHEMA_VERSION, CURRENT_PHYSICAL_FORMAT_ID, GenerationRecord, LedgerCompatibility,
    LedgerIntegrityError, SchemaMetadataRecord,
};
pub use physical::{
    CommitRecoveryError, CommitStoreDiagnostic, LedgerCommitError, LedgerCommitStore, SlotCorruption,
    SlotDiagnostic,
};
pub use registry::{
    StaticMemoryDeclaration, StaticMemoryDeclarationError, StaticMemoryRangeDeclaration,
    collect_static_declarations, collect_static_layout, register_static_memory_manager_declaration,
    register_static_memory_manager_declaration_with_schema, register_static_memory_manager_range,
    static_memory_declarations, static_memory_range_declarations, write_static_declarations_json,
};
pub use runtime::{
    LayoutPlan, LayoutVerdict, LedgerStoreError, MemoryRuntime, RuntimeBootstrapError, RuntimeOpenError,
    RuntimePolicyError, bootstrap_default_memory_manager, bootstrap_default_memory_manager_with_policy,
    default_memory_manager_commit_recovery_diagnostic, default_memory_manager_diagnostic_export,
    defer_eager_init, is_default_memory_manager_bootstrapped, open_default_memory_manager_memory,
    validated_allocations,
};
#[cfg(feature = "test-support")]
pub use runtime::{TEST_RUNTIME_LOCK, reset_for_tests, reset_for_tests_with_memory};
pub use slot::{
    AllocationSlot, AllocationSlotDescriptor, AllocationSlotError, IC_MEMORY_AUTHORITY_OWNER,
    IC_MEMORY_LEDGER_LABEL, IC_MEMORY_LEDGER_STABLE_KEY, MEMORY_MANAGER_GOVERNANCE_MAX_ID,
    MEMORY_MANAGER_INVALID_ID, MEMORY_MANAGER_LEDGER_ID, MEMORY_MANAGER_MAX_ID, MEMORY_MANAGER_MIN_ID,
};
pub use staging::{AllocationStagingError, LayoutChange};
pub use validate::{
    AcceptAllPolicy, AllocationPolicy, AllocationReservationError, AllocationRetirementError,
    AllocationValidationError, ValidatedAllocations, allocation_conflicts, validate_allocations,
};

/// What the macros expand to; not part of the API.
#[doc(hidden)]
pub mod __private {
    pub use crate::registry::{__register_declaration_from_macro, __register_range_from_macro};
    pub use ctor;
}

/// Registers a MemoryManager ID range owned by the expanding crate, at
/// static-initialisation time. `mode` is `Reserved` (default) or `Allowed`.
///
/// ```ignore
/// holdfast_memory::ic_memory_range!(start = 100, end = 109);
/// holdfast_memory::ic_memory_range!(start = 110, end = 119, mode = Allowed);
/// ```
#[macro_export]
macro_rules! ic_memory_range {
    (start = $start:expr, end = $end:expr $(,)?) => {
        $crate::ic_memory_range!(start = $start, end = $end, mode = Reserved);
    };
    (start = $start:expr, end = $end:expr, mode = $mode:ident $(,)?) => {
        const _: () = {
            $crate::__private::ctor::declarative::ctor! {
                #[ctor(unsafe, crate_path = $crate::__private::ctor)]
                fn __holdfast_register_range() {
                    $crate::__private::__register_range_from_macro(
                        $start,
                        $end,
                        ::core::env!("CARGO_PKG_NAME"),
                        $crate::MemoryManagerRangeMode::$mode,
                    );
                }
            }
        };
    };
}

/// Registers a declaration at static-initialisation time without opening it.
/// The label is the type's name (`ty = T`) or given (`label = ".."`).
#[macro_export]
macro_rules! ic_memory_declaration {
    (key = $key:literal, ty = $ty:path, id = $id:expr $(,)?) => {
        $crate::ic_memory_declaration!(key = $key, label = ::core::stringify!($ty), id = $id);
    };
    (key = $key:literal, label = $label:expr, id = $id:expr $(,)?) => {
        const _: () = {
            $crate::__private::ctor::declarative::ctor! {
                #[ctor(unsafe, crate_path = $crate::__private::ctor)]
                fn __holdfast_register_declaration() {
                    $crate::__private::__register_declaration_from_macro(
                        $id,
                        ::core::env!("CARGO_PKG_NAME"),
                        $label,
                        $key,
                    );
                }
            }
        };
    };
}

/// Registers a declaration at static-initialisation time and, where the
/// expression is evaluated (after bootstrap), opens its validated memory from
/// the default runtime.
///
/// # Panics
/// When evaluated before bootstrap or with a key or ID bootstrap did not
/// validate: opening an ungoverned memory is never an option.
#[macro_export]
macro_rules! ic_memory_key {
    ($key:literal, $ty:path, $id:expr $(,)?) => {
        $crate::ic_memory_key!(key = $key, ty = $ty, id = $id)
    };
    (key = $key:literal, ty = $ty:path, id = $id:expr $(,)?) => {
        $crate::ic_memory_key!(key = $key, label = ::core::stringify!($ty), id = $id)
    };
    (key = $key:literal, label = $label:expr, id = $id:expr $(,)?) => {{
        $crate::ic_memory_declaration!(key = $key, label = $label, id = $id);
        match $crate::open_default_memory_manager_memory($key, $id) {
            ::core::result::Result::Ok(memory) => memory,
            ::core::result::Result::Err(err) => ::core::panic!("cannot open stable memory {}: {}", $key, err),
        }
    }};
}

/// Queues a block to run at the start of bootstrap, before the registry is
/// sealed.
#[macro_export]
macro_rules! eager_init {
    ($body:block) => {
        const _: () = {
            fn __holdfast_eager_init() $body
            $crate::__private::ctor::declarative::ctor! {
                #[ctor(unsafe, crate_path = $crate::__private::ctor)]
                fn __holdfast_register_eager_init() {
                    $crate::defer_eager_init(__holdfast_eager_init);
                }
            }
        };
    };
}
