//! The runtime's errors, one enum per boundary: a boot or operator action
//! ([`RuntimeBootstrapError`], with [`LedgerStoreError`] for bytes that are
//! not a ledger store), the policy stack ([`RuntimePolicyError`]) and opening
//! a store ([`RuntimeOpenError`]). Every refusal they describe wrote nothing.

use crate::adoption::AdoptionError;
use crate::authority::MemoryManagerRangeAuthorityError;
use crate::image::MemoryImageError;
use crate::key::{StableKey, StableKeyError};
use crate::ledger::LedgerIntegrityError;
use crate::physical::{CommitRecoveryError, LedgerCommitError};
use crate::registry::StaticMemoryDeclarationError;
use crate::slot::IC_MEMORY_AUTHORITY_OWNER;
use crate::staging::AllocationStagingError;
use crate::validate::{AllocationReservationError, AllocationRetirementError, AllocationValidationError};

/// Why a boot (or an operator action) was refused. Nothing was written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RuntimeBootstrapError<P> {
    /// A registration failed or registered declarations conflict.
    #[error("static memory registry: {0}")]
    Registry(StaticMemoryDeclarationError),
    /// Registered ranges overlap.
    #[error("memory ranges: {0}")]
    Range(MemoryManagerRangeAuthorityError),
    /// The recovered ledger breaks an invariant.
    #[error("ledger integrity: {0}")]
    LedgerIntegrity(LedgerIntegrityError),
    /// The ledger store does not recover, or the commit failed.
    #[error("ledger commit store: {0}")]
    LedgerCommit(LedgerCommitError),
    /// The memory (or its ID 0) holds bytes that are not a ledger store.
    #[error("not a governed memory: {0}")]
    StableCellLedger(LedgerStoreError),
    /// The declarations contradict history or policy.
    #[error("layout refused: {0}")]
    Validation(AllocationValidationError<RuntimePolicyError<P>>),
    /// Staging the new generation failed.
    #[error("staging: {0}")]
    Staging(AllocationStagingError),
    /// A reservation was refused.
    #[error("reservation refused: {0}")]
    Reservation(AllocationReservationError<RuntimePolicyError<P>>),
    /// A retirement was refused.
    #[error("retirement refused: {0}")]
    Retirement(AllocationRetirementError),
    /// A runtime lock is poisoned beyond recovery.
    #[error("the runtime lock is poisoned")]
    RuntimeLockPoisoned,
}

/// Bytes that are not a ledger store: the raw image or ID 0.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LedgerStoreError {
    /// The raw memory is not a MemoryManager image.
    #[error(transparent)]
    Image(MemoryImageError),
    /// ID 0 holds foreign bytes or an unknown store version.
    #[error(transparent)]
    Store(CommitRecoveryError),
    /// ID 0 holds an ic-memory 0.5 ledger that cannot be adopted.
    #[error("ID 0 holds an ic-memory 0.5 ledger that cannot be adopted: {0}")]
    IcMemory(AdoptionError),
    /// ID 0 holds a ledger store (or its torn beginning) with no committed
    /// generation while other memories hold data: history was lost, so no
    /// layout can be checked against it.
    #[error(
        "the ledger store at ID 0 has no committed generation, but memories {memories_in_use:?} hold data; \
         refusing to start history over beside existing stores"
    )]
    LedgerMissing {
        /// IDs of the other memories in use.
        memories_in_use: Vec<u8>,
    },
}

/// The runtime's policy stack refused a declaration.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RuntimePolicyError<P> {
    /// The ID is outside the declaring crate's ranges.
    #[error(transparent)]
    Range(MemoryManagerRangeAuthorityError),
    /// A declaration whose declaring crate is unknown.
    #[error("stable key {stable_key} has no declaring crate")]
    MissingDeclarationMetadata {
        /// The key.
        stable_key: StableKey,
    },
    /// An `ic_memory.*` key declared by someone other than the governance layer.
    #[error(
        "stable key {stable_key} is reserved for {IC_MEMORY_AUTHORITY_OWNER}, but {declaring_crate} declared it"
    )]
    ReservedStableKeyAuthority {
        /// The key.
        stable_key: StableKey,
        /// Who declared it.
        declaring_crate: String,
    },
    /// The caller's policy refused.
    #[error("{0}")]
    Custom(P),
}

/// Why a store memory was not handed out.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RuntimeOpenError {
    /// No successful bootstrap yet.
    #[error("the memory runtime is not bootstrapped: call bootstrap first")]
    NotBootstrapped,
    /// The key was not declared by this binary.
    #[error("stable key {stable_key} was not validated by bootstrap")]
    StableKeyNotValidated {
        /// The key.
        stable_key: String,
    },
    /// The key was validated on another ID.
    #[error("stable key {stable_key} was validated on ID {validated_id}, not {requested_id}")]
    MemoryIdMismatch {
        /// The key.
        stable_key: String,
        /// Its validated ID.
        validated_id: u8,
        /// The ID asked for.
        requested_id: u8,
    },
    /// The default runtime was bootstrapped on another thread.
    #[error(
        "the default memory runtime belongs to the thread that bootstrapped it; use MemoryRuntime across threads"
    )]
    WrongThread,
    /// The key breaks the grammar.
    #[error(transparent)]
    InvalidStableKey(#[from] StableKeyError),
}
