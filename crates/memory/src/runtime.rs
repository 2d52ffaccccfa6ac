//! The runtime: recover → declare → validate → commit → only then open.
//!
//! [`MemoryRuntime`] runs that ordering over any `Memory` (a `FileMemory`, a
//! shared `VectorMemory`, a raw image) and is the only way to get a store's
//! `VirtualMemory` from it: `open` hands out a memory only for a key that was
//! validated on exactly that ID. The process-wide default runtime (the
//! functions of this module) does the same over the canister's
//! `DefaultMemoryImpl` with declarations from the static registry.
//!
//! A refused boot writes nothing anywhere in the memory: memory that does not
//! hold a MemoryManager is never initialised over, an empty memory gets its
//! MemoryManager header only after validation succeeded, and the ledger is
//! committed only after validation and staging succeeded.
//!
//! Natively the default memory is per thread (ic-stable-structures'
//! `MemoryManager` is neither `Send` nor `Sync`); the registry is per process.
//! Multi-threaded programs use `MemoryRuntime`.

use std::cell::RefCell;
use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};
use std::thread::ThreadId;

use ic_stable_structures::memory_manager::{MemoryId, MemoryManager, VirtualMemory};
use ic_stable_structures::{DefaultMemoryImpl, Memory};
use rustc_hash::FxHashMap as HashMap;

use crate::authority::{
    MemoryManagerRangeAuthority, MemoryManagerRangeAuthorityError, memory_manager_governance_range,
};
use crate::codec::{CborLedgerCodec, LedgerDecodeError};
use crate::declaration::{AllocationDeclaration, DeclarationSnapshot};
use crate::diagnostics::{
    DiagnosticExport, RuntimeDiagnosticError, commit_recovery_diagnostic_of, diagnostic_export_of, export,
};
use crate::image::{MemoryImageError, RawMemoryClass, classify_raw_memory};
use crate::key::{StableKey, StableKeyError};
use crate::ledger::{
    AllocationLedger, AllocationRetirement, AllocationStagingError, LayoutChange, LedgerIntegrityError,
};
use crate::physical::{CommitRecoveryError, CommitStoreDiagnostic, LedgerCommitError, LedgerCommitStore};
use crate::registry::{self, StaticMemoryDeclarationError, ledger_declaration, snapshot_with_authorities};
use crate::slot::{AllocationSlotDescriptor, IC_MEMORY_AUTHORITY_OWNER, MEMORY_MANAGER_LEDGER_ID};
use crate::validate::{
    AcceptAllPolicy, AllocationPolicy, AllocationReservationError, AllocationRetirementError,
    AllocationValidationError, ValidatedAllocations, allocation_conflicts, validate_allocations,
};

/// The authority name of declarations given to [`MemoryRuntime`] directly.
pub const APPLICATION_AUTHORITY: &str = "application";

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

/// What a boot would do: see [`MemoryRuntime::plan`].
#[derive(Debug)]
pub struct LayoutPlan<P> {
    /// The ledger the boot would start from.
    pub ledger: AllocationLedger,
    /// Accepted or refused.
    pub verdict: LayoutVerdict<P>,
}

/// The verdict of a planned boot.
#[derive(Debug)]
pub enum LayoutVerdict<P> {
    /// The boot would succeed.
    Accepted {
        /// The declarations it would validate.
        validated: ValidatedAllocations,
        /// What it would change (omitted keys included, as kept).
        changes: Vec<LayoutChange>,
        /// The generation it would commit; None when nothing changed.
        next_generation: Option<u64>,
    },
    /// The boot would be refused; nothing would be written.
    Refused {
        /// Every conflict, in the order the boot checks them.
        conflicts: Vec<AllocationValidationError<RuntimePolicyError<P>>>,
    },
}

/// The governed runtime over one memory. See the module docs.
pub struct MemoryRuntime<M: Memory + Clone> {
    memory: M,
    manager: MemoryManager<M>,
    ledger: AllocationLedger,
    validated: ValidatedAllocations,
}

impl<M: Memory + Clone> std::fmt::Debug for MemoryRuntime<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryRuntime")
            .field("generation", &self.ledger.current_generation())
            .field("validated", &self.validated)
            .finish_non_exhaustive()
    }
}

/// Where the ledger came from before this boot.
#[derive(Clone, Copy, PartialEq, Eq)]
enum LedgerOrigin {
    /// The raw memory was empty.
    EmptyMemory,
    /// The raw memory holds a MemoryManager initialisation cut short.
    InterruptedMemoryManagerInitialization,
    /// ID 0 holds a ledger store (or was never allocated).
    Store,
    /// ID 0 holds a torn store header (or zeros) and no other memory is in
    /// use: the trace of a first commit cut short after ID 0 grew.
    InterruptedInitialization,
}

type LedgerStore<M> = LedgerCommitStore<VirtualMemory<M>>;

/// What recovery opened, kept for the commit that may follow.
struct Recovered<M: Memory> {
    /// The loaded MemoryManager and its ledger store (which remembers the
    /// slot layout it verified, so the commit does not read it again); None
    /// while the memory has no MemoryManager.
    opened: Option<(MemoryManager<M>, LedgerStore<M>)>,
    origin: LedgerOrigin,
}

impl<M: Memory + Clone> MemoryRuntime<M> {
    /// Boots `declarations` over `memory`: recovers the ledger, validates the
    /// declarations (plus the ledger's own at ID 0) against history, the
    /// governance range and `policy`, commits a new generation when anything
    /// changed, and only then allows `open`.
    ///
    /// ```
    /// use holdfast_memory::{AcceptAllPolicy, DeclarationCollector, MemoryRuntime};
    /// use holdfast_memory::stable_structures::{Memory, VectorMemory};
    ///
    /// let memory = VectorMemory::default();
    /// let v1 = DeclarationCollector::new()
    ///     .with_memory_manager("app.users.v1", 100, "Users").unwrap()
    ///     .seal().unwrap();
    /// let runtime = MemoryRuntime::bootstrap(memory.clone(), v1, &AcceptAllPolicy).unwrap();
    /// assert_eq!(runtime.validated().generation(), 1);
    /// let users = runtime.open("app.users.v1", 100).unwrap();
    /// users.grow(1);
    /// ```
    ///
    /// # Errors
    /// [`RuntimeBootstrapError`]; the memory is unchanged on every error.
    pub fn bootstrap<P: AllocationPolicy>(
        memory: M,
        declarations: DeclarationSnapshot,
        policy: &P,
    ) -> Result<Self, RuntimeBootstrapError<P::Error>> {
        let (snapshot, authorities) = with_ledger_declaration(declarations);
        let authority = governance_authority();
        Self::boot(memory, snapshot, authorities, &authority, policy)
    }

    /// Reserves `reservations` over `memory` in a new generation, or refuses
    /// and writes nothing. Returns the new generation.
    ///
    /// # Errors
    /// `Reservation(..)` with the [`AllocationReservationError`] variant, or
    /// the recovery errors of [`Self::bootstrap`].
    pub fn reserve<P: AllocationPolicy>(
        memory: M,
        reservations: Vec<AllocationDeclaration>,
        policy: &P,
    ) -> Result<u64, RuntimeBootstrapError<P::Error>> {
        let (ledger, recovered) = recover(&memory)?;
        let authorities = vec![APPLICATION_AUTHORITY.to_owned(); reservations.len()];
        let authority = governance_authority();
        let runtime_policy = RuntimePolicy::new(&authority, &reservations, &authorities, policy);
        let staged = ledger
            .stage_reservation_generation(&reservations, &runtime_policy, committed_at())
            .map_err(RuntimeBootstrapError::Reservation)?;
        commit(&memory, recovered, &staged)?;
        Ok(staged.current_generation())
    }

    /// Retires one key over `memory` in a new generation, or refuses and
    /// writes nothing. Returns the new generation.
    ///
    /// # Errors
    /// `Retirement(..)` with the [`AllocationRetirementError`] variant, or
    /// the recovery errors of [`Self::bootstrap`].
    pub fn retire(
        memory: M,
        retirement: AllocationRetirement,
    ) -> Result<u64, RuntimeBootstrapError<Infallible>> {
        let (ledger, recovered) = recover(&memory)?;
        let staged = ledger
            .stage_retirement_generation(&retirement, committed_at())
            .map_err(RuntimeBootstrapError::Retirement)?;
        commit(&memory, recovered, &staged)?;
        Ok(staged.current_generation())
    }

    /// Runs exactly the validation a boot of `declarations` would run, on a
    /// read-only view: nothing is written. Returns the ledger the boot would
    /// start from and the validated declarations.
    ///
    /// # Errors
    /// As [`Self::bootstrap`] (the first conflict, for a refused layout).
    pub fn check<P: AllocationPolicy>(
        memory: &M,
        declarations: DeclarationSnapshot,
        policy: &P,
    ) -> Result<(AllocationLedger, ValidatedAllocations), RuntimeBootstrapError<P::Error>> {
        let plan = Self::plan(memory, declarations, policy)?;
        match plan.verdict {
            LayoutVerdict::Accepted { validated, .. } => Ok((plan.ledger, validated)),
            LayoutVerdict::Refused { conflicts } => Err(RuntimeBootstrapError::Validation(
                conflicts
                    .into_iter()
                    .next()
                    .expect("a refused layout has at least one conflict"),
            )),
        }
    }

    /// What a boot of `declarations` would do, computed on a read-only view
    /// (nothing is written): accepted with the changes it would commit, or
    /// refused with every conflict. The validation is the boot's own.
    ///
    /// # Errors
    /// The recovery errors of [`Self::bootstrap`]: the memory cannot be read
    /// as a governed memory.
    pub fn plan<P: AllocationPolicy>(
        memory: &M,
        declarations: DeclarationSnapshot,
        policy: &P,
    ) -> Result<LayoutPlan<P::Error>, RuntimeBootstrapError<P::Error>> {
        let (snapshot, authorities) = with_ledger_declaration(declarations);
        let (ledger, _) = recover::<M, P::Error>(memory)?;
        let authority = governance_authority();
        let runtime_policy = RuntimePolicy::new(&authority, snapshot.declarations(), &authorities, policy);
        let conflicts = allocation_conflicts(&ledger, &snapshot, &runtime_policy);
        if !conflicts.is_empty() {
            return Ok(LayoutPlan {
                ledger,
                verdict: LayoutVerdict::Refused { conflicts },
            });
        }
        let validated = validate_allocations(&ledger, snapshot, &runtime_policy)
            .map_err(RuntimeBootstrapError::Validation)?;
        let next_generation = (!ledger.is_unchanged_by(&validated)).then(|| ledger.current_generation() + 1);
        let changes = ledger.changes_for(&validated);
        Ok(LayoutPlan {
            ledger,
            verdict: LayoutVerdict::Accepted {
                validated,
                changes,
                next_generation,
            },
        })
    }
    /// Opens the memory of `stable_key`, which must have been validated on
    /// exactly `id`.
    ///
    /// # Errors
    /// `InvalidStableKey`, `StableKeyNotValidated` or `MemoryIdMismatch`.
    pub fn open(&self, stable_key: &str, id: u8) -> Result<VirtualMemory<M>, RuntimeOpenError> {
        let key = StableKey::parse(stable_key)?;
        let validated_id = self
            .validated
            .slot_for(&key)
            .and_then(AllocationSlotDescriptor::memory_manager_id)
            .ok_or_else(|| RuntimeOpenError::StableKeyNotValidated {
                stable_key: stable_key.to_owned(),
            })?;
        if validated_id != id {
            return Err(RuntimeOpenError::MemoryIdMismatch {
                stable_key: stable_key.to_owned(),
                validated_id,
                requested_id: id,
            });
        }
        Ok(self.manager.get(MemoryId::new(id)))
    }

    /// The validated declarations, bound to the committed generation.
    pub fn validated(&self) -> &ValidatedAllocations {
        &self.validated
    }

    /// The authoritative ledger.
    pub fn ledger(&self) -> &AllocationLedger {
        &self.ledger
    }

    /// Everything known about the memory.
    ///
    /// # Errors
    /// [`RuntimeDiagnosticError`] if the memory changed under the runtime so
    /// that it no longer reads.
    pub fn diagnostic_export(&self) -> Result<DiagnosticExport, RuntimeDiagnosticError> {
        let commit = commit_recovery_diagnostic_of(&self.memory)?;
        let header = match classify_raw_memory(&self.memory)? {
            RawMemoryClass::MemoryManager(header) => Some(header),
            RawMemoryClass::Empty | RawMemoryClass::InterruptedInitialization => None,
        };
        Ok(export(&self.ledger, commit, header))
    }

    /// Gives the memory back (store handles opened earlier stay valid).
    pub fn into_memory(self) -> M {
        self.memory
    }

    fn boot<P: AllocationPolicy>(
        memory: M,
        snapshot: DeclarationSnapshot,
        authorities: Vec<String>,
        authority: &MemoryManagerRangeAuthority,
        policy: &P,
    ) -> Result<Self, RuntimeBootstrapError<P::Error>> {
        let (ledger, recovered) = recover(&memory)?;
        let runtime_policy = RuntimePolicy::new(authority, snapshot.declarations(), &authorities, policy);
        let validated = validate_allocations(&ledger, snapshot, &runtime_policy)
            .map_err(RuntimeBootstrapError::Validation)?;
        if ledger.is_unchanged_by(&validated) {
            let (manager, _) = recovered
                .opened
                .expect("an unchanged ledger has a committed generation, so the memory has a MemoryManager");
            return Ok(Self {
                memory,
                manager,
                ledger,
                validated,
            });
        }
        let staged = ledger
            .into_validated_generation(&validated, committed_at())
            .map_err(RuntimeBootstrapError::Staging)?;
        let manager = commit(&memory, recovered, &staged)?;
        let validated = validated.bound_to(staged.current_generation());
        Ok(Self {
            memory,
            manager,
            ledger: staged,
            validated,
        })
    }
}

fn governance_authority() -> MemoryManagerRangeAuthority {
    let mut authority = MemoryManagerRangeAuthority::new();
    authority
        .reserve(
            memory_manager_governance_range(),
            IC_MEMORY_AUTHORITY_OWNER,
            Some("allocation governance".into()),
        )
        .expect("an empty table has no overlap");
    authority
}

/// Adds the ledger's own declaration in front (unless the caller already
/// declared it) and names every declaration's authority.
fn with_ledger_declaration(declarations: DeclarationSnapshot) -> (DeclarationSnapshot, Vec<String>) {
    let ledger = ledger_declaration();
    let fingerprint = declarations.runtime_fingerprint().map(str::to_owned);
    let (mut list, _) = declarations.into_parts();
    let mut authorities: Vec<String> = list
        .iter()
        .map(|d| {
            if d == &ledger {
                IC_MEMORY_AUTHORITY_OWNER
            } else {
                APPLICATION_AUTHORITY
            }
            .to_owned()
        })
        .collect();
    if !list.contains(&ledger) {
        list.insert(0, ledger);
        authorities.insert(0, IC_MEMORY_AUTHORITY_OWNER.to_owned());
    }
    let snapshot =
        DeclarationSnapshot::new(list).expect("adding the ledger's own declaration keeps keys unique");
    let snapshot = match fingerprint {
        Some(f) => snapshot
            .with_runtime_fingerprint(f)
            .expect("the fingerprint was valid before"),
        None => snapshot,
    };
    (snapshot, authorities)
}

/// Reads the ledger without writing anything.
fn recover<M: Memory + Clone, P>(
    memory: &M,
) -> Result<(AllocationLedger, Recovered<M>), RuntimeBootstrapError<P>> {
    let header = match classify_raw_memory(memory) {
        Err(err) => {
            return Err(RuntimeBootstrapError::StableCellLedger(LedgerStoreError::Image(
                err,
            )));
        }
        Ok(RawMemoryClass::Empty) => {
            let recovered = Recovered {
                opened: None,
                origin: LedgerOrigin::EmptyMemory,
            };
            return Ok((AllocationLedger::genesis(), recovered));
        }
        Ok(RawMemoryClass::InterruptedInitialization) => {
            let recovered = Recovered {
                opened: None,
                origin: LedgerOrigin::InterruptedMemoryManagerInitialization,
            };
            return Ok((AllocationLedger::genesis(), recovered));
        }
        Ok(RawMemoryClass::MemoryManager(header)) => header,
    };
    // Safe to load: `classify_raw_memory` checked every field `init` trusts,
    // and loading an existing MemoryManager reads without writing.
    let manager = MemoryManager::init(memory.clone());
    let store = LedgerCommitStore::new(manager.get(MemoryId::new(MEMORY_MANAGER_LEDGER_ID)));
    let origin = match store.classify() {
        Ok(_) => LedgerOrigin::Store,
        Err(_)
            if store.holds_only_a_torn_store_header()
                && header.memories_in_use().all(|id| id == MEMORY_MANAGER_LEDGER_ID) =>
        {
            LedgerOrigin::InterruptedInitialization
        }
        Err(err) => {
            return Err(RuntimeBootstrapError::StableCellLedger(LedgerStoreError::Store(
                err,
            )));
        }
    };
    let recovered = match origin {
        LedgerOrigin::Store => store.recover(&CborLedgerCodec).map_err(recovery_error)?,
        _ => None,
    };
    let others: Vec<u8> = header
        .memories_in_use()
        .filter(|&id| id != MEMORY_MANAGER_LEDGER_ID)
        .collect();
    let id0_allocated = header.memory_size_bytes(MEMORY_MANAGER_LEDGER_ID) > 0;
    if recovered.is_none() && id0_allocated && !others.is_empty() {
        return Err(RuntimeBootstrapError::StableCellLedger(
            LedgerStoreError::LedgerMissing {
                memories_in_use: others,
            },
        ));
    }
    let ledger = recovered.unwrap_or_else(AllocationLedger::genesis);
    let recovered = Recovered {
        opened: Some((manager, store)),
        origin,
    };
    Ok((ledger, recovered))
}

fn recovery_error<P>(err: CommitRecoveryError) -> RuntimeBootstrapError<P> {
    match err {
        CommitRecoveryError::Decode {
            error: LedgerDecodeError::Integrity(integrity),
            ..
        } => RuntimeBootstrapError::LedgerIntegrity(integrity),
        other => RuntimeBootstrapError::LedgerCommit(LedgerCommitError::Recovery(other)),
    }
}

/// Commits `staged`, creating the MemoryManager first when the memory was
/// empty (only now, after everything was validated).
fn commit<M: Memory + Clone, P>(
    memory: &M,
    recovered: Recovered<M>,
    staged: &AllocationLedger,
) -> Result<MemoryManager<M>, RuntimeBootstrapError<P>> {
    if recovered.origin == LedgerOrigin::InterruptedMemoryManagerInitialization {
        // Clear the torn magic so `init` writes a fresh header instead of
        // loading a half-written one. Only reached after validation passed.
        memory.write(0, &[0; 3]);
    }
    let (manager, mut store) = recovered.opened.unwrap_or_else(|| {
        let manager = MemoryManager::init(memory.clone());
        let store = LedgerCommitStore::new(manager.get(MemoryId::new(MEMORY_MANAGER_LEDGER_ID)));
        (manager, store)
    });
    let result = match recovered.origin {
        LedgerOrigin::InterruptedInitialization => {
            store.commit_over_interrupted_initialization(&CborLedgerCodec, staged)
        }
        LedgerOrigin::EmptyMemory
        | LedgerOrigin::InterruptedMemoryManagerInitialization
        | LedgerOrigin::Store => store.commit(&CborLedgerCodec, staged),
    };
    result.map_err(RuntimeBootstrapError::LedgerCommit)?;
    Ok(manager)
}

/// Nanoseconds since the Unix epoch natively; unknown on wasm32, where the
/// canister's clock is not reachable from this crate.
fn committed_at() -> Option<u64> {
    #[cfg(not(target_family = "wasm"))]
    {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .ok()
            .and_then(|d| u64::try_from(d.as_nanos()).ok())
    }
    #[cfg(target_family = "wasm")]
    {
        None
    }
}

/// The policy stack: governance keys, range authority, then the caller's.
struct RuntimePolicy<'a, P> {
    authority: &'a MemoryManagerRangeAuthority,
    declaring_crates: HashMap<StableKey, String>,
    user: &'a P,
}

impl<'a, P: AllocationPolicy> RuntimePolicy<'a, P> {
    fn new(
        authority: &'a MemoryManagerRangeAuthority,
        declarations: &[AllocationDeclaration],
        authorities: &[String],
        user: &'a P,
    ) -> Self {
        let declaring_crates = declarations
            .iter()
            .map(|declaration| declaration.stable_key().clone())
            .zip(authorities.iter().cloned())
            .collect();
        Self {
            authority,
            declaring_crates,
            user,
        }
    }

    fn declaring_crate(&self, key: &StableKey) -> Result<&str, RuntimePolicyError<P::Error>> {
        self.declaring_crates.get(key).map(String::as_str).ok_or_else(|| {
            RuntimePolicyError::MissingDeclarationMetadata {
                stable_key: key.clone(),
            }
        })
    }

    fn check_range(
        &self,
        key: &StableKey,
        slot: &AllocationSlotDescriptor,
    ) -> Result<(), RuntimePolicyError<P::Error>> {
        let declaring_crate = self.declaring_crate(key)?;
        let Some(id) = slot.memory_manager_id() else {
            return Err(RuntimePolicyError::Range(
                MemoryManagerRangeAuthorityError::NotMemoryManagerSlot { slot: slot.clone() },
            ));
        };
        if self.authority.has_user_ranges() || self.authority.authority_for_id(id).is_some() {
            self.authority
                .validate_id_authority(id, declaring_crate)
                .map_err(RuntimePolicyError::Range)?;
        }
        Ok(())
    }
}

impl<P: AllocationPolicy> AllocationPolicy for RuntimePolicy<'_, P> {
    type Error = RuntimePolicyError<P::Error>;

    fn validate_key(&self, key: &StableKey) -> Result<(), Self::Error> {
        let declaring_crate = self.declaring_crate(key)?;
        if key.is_ic_memory_key() && declaring_crate != IC_MEMORY_AUTHORITY_OWNER {
            return Err(RuntimePolicyError::ReservedStableKeyAuthority {
                stable_key: key.clone(),
                declaring_crate: declaring_crate.to_owned(),
            });
        }
        self.user.validate_key(key).map_err(RuntimePolicyError::Custom)
    }

    fn validate_slot(&self, key: &StableKey, slot: &AllocationSlotDescriptor) -> Result<(), Self::Error> {
        self.check_range(key, slot)?;
        self.user
            .validate_slot(key, slot)
            .map_err(RuntimePolicyError::Custom)
    }

    fn validate_reserved_slot(
        &self,
        key: &StableKey,
        slot: &AllocationSlotDescriptor,
    ) -> Result<(), Self::Error> {
        self.check_range(key, slot)?;
        self.user
            .validate_reserved_slot(key, slot)
            .map_err(RuntimePolicyError::Custom)
    }
}

// ---- the process-wide default runtime ---------------------------------------

thread_local! {
    static DEFAULT_MEMORY: RefCell<DefaultMemoryImpl> = RefCell::new(DefaultMemoryImpl::default());
    static DEFAULT_RUNTIME: RefCell<Option<MemoryRuntime<DefaultMemoryImpl>>> = const { RefCell::new(None) };
}

static BOOTSTRAPPED: AtomicBool = AtomicBool::new(false);
static BOOTSTRAP_LOCK: Mutex<()> = Mutex::new(());
static PUBLISHED: Mutex<Option<(ThreadId, ValidatedAllocations)>> = Mutex::new(None);

/// Serializes tests that bootstrap the process-wide default runtime.
#[cfg(feature = "test-support")]
pub static TEST_RUNTIME_LOCK: Mutex<()> = Mutex::new(());

/// Clears the registry, the eager-init queue, the published allocations and
/// this thread's runtime, and gives the default runtime a fresh, empty memory.
#[cfg(feature = "test-support")]
pub fn reset_for_tests() {
    let _bootstrap = BOOTSTRAP_LOCK.lock().unwrap_or_else(PoisonError::into_inner);
    *registry::registry() = registry::Registry::default();
    *PUBLISHED.lock().unwrap_or_else(PoisonError::into_inner) = None;
    BOOTSTRAPPED.store(false, Ordering::SeqCst);
    DEFAULT_RUNTIME.with(|runtime| *runtime.borrow_mut() = None);
    DEFAULT_MEMORY.with(|memory| *memory.borrow_mut() = DefaultMemoryImpl::default());
}

/// Bootstraps the default runtime with no extra policy.
///
/// # Errors
/// As [`bootstrap_default_memory_manager_with_policy`].
pub fn bootstrap_default_memory_manager() -> Result<ValidatedAllocations, RuntimeBootstrapError<Infallible>> {
    bootstrap_default_memory_manager_with_policy(&AcceptAllPolicy)
}

/// Bootstraps the default runtime: runs eager-init hooks, seals the registry,
/// builds the range table and the snapshot before touching memory, then
/// recovers, validates, commits and publishes. Idempotent once it succeeded.
///
/// # Errors
/// [`RuntimeBootstrapError`]; memory is unchanged on every error.
pub fn bootstrap_default_memory_manager_with_policy<P: AllocationPolicy>(
    policy: &P,
) -> Result<ValidatedAllocations, RuntimeBootstrapError<P::Error>> {
    let _bootstrap = BOOTSTRAP_LOCK.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some((_, validated)) = PUBLISHED.lock().unwrap_or_else(PoisonError::into_inner).as_ref() {
        return Ok(validated.clone());
    }
    run_eager_init_hooks();
    let (entries, ranges) = {
        let mut registry = registry::registry();
        registry.sealed = true;
        if let Some(err) = registry.deferred_errors.first() {
            return Err(RuntimeBootstrapError::Registry(err.clone()));
        }
        (registry.declarations.clone(), registry.ranges.clone())
    };
    let mut authority = governance_authority();
    for range in &ranges {
        let ids = crate::authority::MemoryManagerIdRange::new(range.start, range.end)
            .map_err(RuntimeBootstrapError::Range)?;
        let record = crate::authority::MemoryManagerAuthorityRecord::new(
            ids,
            range.declaring_crate.clone(),
            range.mode,
            range.purpose.clone(),
        );
        authority = MemoryManagerRangeAuthority::from_records(
            authority.authorities().iter().cloned().chain([record]),
        )
        .map_err(RuntimeBootstrapError::Range)?;
    }
    let (snapshot, authorities) =
        snapshot_with_authorities(&entries).map_err(RuntimeBootstrapError::Registry)?;
    let memory = DEFAULT_MEMORY.with(|memory| memory.borrow().clone());
    let runtime = MemoryRuntime::boot(memory, snapshot, authorities, &authority, policy)?;
    let validated = runtime.validated().clone();
    DEFAULT_RUNTIME.with(|slot| *slot.borrow_mut() = Some(runtime));
    *PUBLISHED.lock().unwrap_or_else(PoisonError::into_inner) =
        Some((std::thread::current().id(), validated.clone()));
    BOOTSTRAPPED.store(true, Ordering::SeqCst);
    Ok(validated)
}

fn run_eager_init_hooks() {
    loop {
        let hooks = std::mem::take(&mut registry::registry().eager_init);
        if hooks.is_empty() {
            return;
        }
        for hook in hooks {
            hook();
        }
    }
}

/// Opens the memory of `stable_key` on `id` from the default runtime.
///
/// # Errors
/// `NotBootstrapped`, `WrongThread`, or the errors of [`MemoryRuntime::open`].
pub fn open_default_memory_manager_memory(
    stable_key: &str,
    id: u8,
) -> Result<VirtualMemory<DefaultMemoryImpl>, RuntimeOpenError> {
    if !BOOTSTRAPPED.load(Ordering::SeqCst) {
        return Err(RuntimeOpenError::NotBootstrapped);
    }
    let owner = PUBLISHED
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .as_ref()
        .map(|(thread, _)| *thread);
    if owner != Some(std::thread::current().id()) {
        return Err(RuntimeOpenError::WrongThread);
    }
    DEFAULT_RUNTIME.with(|runtime| match runtime.borrow().as_ref() {
        Some(runtime) => runtime.open(stable_key, id),
        None => Err(RuntimeOpenError::NotBootstrapped),
    })
}

/// The published validated allocations.
///
/// # Errors
/// [`RuntimeOpenError::NotBootstrapped`].
pub fn validated_allocations() -> Result<ValidatedAllocations, RuntimeOpenError> {
    PUBLISHED
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .as_ref()
        .map(|(_, validated)| validated.clone())
        .ok_or(RuntimeOpenError::NotBootstrapped)
}

/// Whether the default runtime has bootstrapped successfully.
pub fn is_default_memory_manager_bootstrapped() -> bool {
    BOOTSTRAPPED.load(Ordering::SeqCst)
}

/// Queues `hook` to run at the start of bootstrap, before the registry is
/// sealed (a hook may register declarations).
///
/// # Panics
/// With a message containing "after runtime bootstrap" when called after
/// bootstrap: the hook could no longer run before sealing.
pub fn defer_eager_init(hook: fn()) {
    assert!(
        !BOOTSTRAPPED.load(Ordering::SeqCst),
        "defer_eager_init called after runtime bootstrap: eager-init hooks must be queued before bootstrap"
    );
    registry::registry().eager_init.push(hook);
}

/// The default runtime's diagnostics (read-only; also before bootstrap).
///
/// # Errors
/// [`RuntimeDiagnosticError`].
pub fn default_memory_manager_diagnostic_export() -> Result<DiagnosticExport, RuntimeDiagnosticError> {
    let memory = DEFAULT_MEMORY.with(|memory| memory.borrow().clone());
    diagnostic_export_of(&memory)
}

/// The default memory's commit diagnostic, even when bootstrap failed.
///
/// # Errors
/// [`RuntimeDiagnosticError::Image`] when the memory is not a MemoryManager.
pub fn default_memory_manager_commit_recovery_diagnostic()
-> Result<CommitStoreDiagnostic, RuntimeDiagnosticError> {
    let memory = DEFAULT_MEMORY.with(|memory| memory.borrow().clone());
    commit_recovery_diagnostic_of(&memory)
}
