//! [`MemoryRuntime`]: the governed runtime over any `Memory`, and the
//! read-only recovery and the commit every boot and operator action share.
//!
//! Recovery never writes; a commit happens only after validation and staging
//! succeeded, and an empty memory gets its MemoryManager header only then.
//! A store's `VirtualMemory` is handed out only for a key validated on
//! exactly that ID.

use std::convert::Infallible;

use ic_stable_structures::Memory;
use ic_stable_structures::memory_manager::{MemoryId, MemoryManager, VirtualMemory};

use super::APPLICATION_AUTHORITY;
use super::error::{LedgerStoreError, RuntimeBootstrapError, RuntimeOpenError, RuntimePolicyError};
use super::policy::{RuntimePolicy, governance_authority};
use crate::adoption::{self, ForwardedMemory, IcMemoryAdoption, LedgerLocation};
use crate::authority::MemoryManagerRangeAuthority;
use crate::codec::{CborLedgerCodec, LedgerCodec, LedgerDecodeError, MAX_ENCODED_LEDGER_LEN};
use crate::declaration::{AllocationDeclaration, DeclarationSnapshot};
use crate::diagnostics::{
    DiagnosticExport, RuntimeDiagnosticError, commit_recovery_diagnostic_of, export, ic_memory_diagnostic_of,
};
use crate::image::{
    MemoryManagerHeader, RawGrowingMemory, RawMemoryClass, classify_raw_memory, clear_interrupted_grows,
};
use crate::key::StableKey;
use crate::ledger::{AllocationLedger, AllocationRetirement};
use crate::physical::{CommitRecoveryError, LedgerCommitError, LedgerCommitStore};
use crate::registry::ledger_declaration;
use crate::slot::{AllocationSlotDescriptor, IC_MEMORY_AUTHORITY_OWNER, MEMORY_MANAGER_LEDGER_ID};
use crate::staging::LayoutChange;
use crate::validate::{
    AllocationPolicy, AllocationValidationError, ValidatedAllocations, allocation_conflicts,
    validate_allocations,
};

/// What a boot would do: see [`MemoryRuntime::plan`].
#[derive(Debug)]
pub struct LayoutPlan<P> {
    /// The ledger the boot would start from.
    pub ledger: AllocationLedger,
    /// Set when ID 0 holds an ic-memory 0.5 ledger (converted into
    /// `ledger`): an accepted boot first adopts it.
    pub adoption: Option<IcMemoryAdoption>,
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
    /// The layout validates, but the boot's commit would be refused before
    /// writing: the new generation cannot be staged (`Staging`) or its
    /// encoded ledger is above the format's limit
    /// (`LedgerCommit(LedgerTooLarge)`). `error` is what the boot returns.
    CommitRefused {
        /// The boot's error.
        error: RuntimeBootstrapError<P>,
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
    /// ID 0 holds an ic-memory 0.5 ledger, adopted by the next write.
    IcMemoryCell,
}

type LedgerStore<M> = LedgerCommitStore<ForwardedMemory<RawGrowingMemory<M>>>;

/// What recovery opened, kept for the commit that may follow.
struct Recovered<M: Memory + Clone> {
    /// The loaded MemoryManager and its ledger store (which remembers the
    /// slot layout it verified, so the commit does not read it again); None
    /// while the memory has no MemoryManager.
    opened: Option<(MemoryManager<M>, LedgerStore<M>)>,
    origin: LedgerOrigin,
    /// The checked header of a MemoryManager image, kept to clear a torn
    /// bucket allocation once the action is accepted.
    header: Option<MemoryManagerHeader>,
    /// Where ID 0's ledger lives.
    location: LedgerLocation,
    /// For [`LedgerOrigin::IcMemoryCell`]: what adoption writes.
    adopting: Option<(IcMemoryAdoption, AllocationLedger)>,
}

impl<M: Memory + Clone> Recovered<M> {
    /// Called once an action was accepted, before anything is committed or
    /// handed out: clears what interrupted grows left in the bucket table and reloads the
    /// MemoryManager from the repaired table, so no store can ever be given a
    /// bucket another memory also lists. Does nothing on a sound image.
    fn repaired_for_use(self, memory: &M) -> Self {
        let Some(header) = self.header.as_ref().filter(|h| h.has_interrupted_grow()) else {
            return self;
        };
        clear_interrupted_grows(memory, header);
        let location = self.location;
        Self {
            opened: self.opened.map(|_| open_ledger_store(memory, location)),
            header: None,
            ..self
        }
    }
}

/// Loads the MemoryManager over `memory` and its ID 0.
/// PRECONDITION: `memory` is empty or passed `classify_raw_memory`.
fn load_ledger_memory<M: Memory + Clone>(memory: &M) -> (MemoryManager<M>, RawGrowingMemory<M>) {
    let manager = MemoryManager::init(memory.clone());
    let ledger_memory = RawGrowingMemory::new(
        memory.clone(),
        MEMORY_MANAGER_LEDGER_ID,
        manager.get(MemoryId::new(MEMORY_MANAGER_LEDGER_ID)),
    );
    (manager, ledger_memory)
}

/// Loads the MemoryManager over `memory` and the ledger store at `location`
/// of its ID 0. PRECONDITION: as [`load_ledger_memory`].
fn open_ledger_store<M: Memory + Clone>(
    memory: &M,
    location: LedgerLocation,
) -> (MemoryManager<M>, LedgerStore<M>) {
    let (manager, ledger_memory) = load_ledger_memory(memory);
    (manager, adoption::ledger_store(ledger_memory, location))
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
    /// [`RuntimeBootstrapError`]. Every refusal — recovery, registry, range,
    /// validation, staging, a ledger too large or failing integrity — writes
    /// nothing. Only a commit that fails while growing the ledger's memory
    /// (`LedgerCommit(GrowFailed)`) may have written: the inactive slot's
    /// marker, and a torn bucket-table entry cleared; the authoritative
    /// generation is untouched either way.
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
        commit(&memory, recovered, Some(&staged))?;
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
        commit(&memory, recovered, Some(&staged))?;
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
            LayoutVerdict::CommitRefused { error } => Err(error),
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
        Self::plan_prepared(memory, snapshot, authorities, &governance_authority(), policy)
    }

    /// [`Self::plan`] of a prepared snapshot: `authorities` names the
    /// declaring crate of each declaration (same order) and `authority` is
    /// the range table, as [`Self::boot`] takes them.
    pub(super) fn plan_prepared<P: AllocationPolicy>(
        memory: &M,
        snapshot: DeclarationSnapshot,
        authorities: Vec<String>,
        authority: &MemoryManagerRangeAuthority,
        policy: &P,
    ) -> Result<LayoutPlan<P::Error>, RuntimeBootstrapError<P::Error>> {
        let (ledger, recovered) = recover::<M, P::Error>(memory)?;
        let stored_len = recovered
            .opened
            .as_ref()
            .and_then(|(_, store)| store.authoritative_payload_len());
        let adoption = recovered.adopting.map(|(adoption, _)| adoption);
        let runtime_policy = RuntimePolicy::new(authority, snapshot.declarations(), &authorities, policy);
        let conflicts = allocation_conflicts(&ledger, &snapshot, &runtime_policy);
        if !conflicts.is_empty() {
            return Ok(LayoutPlan {
                ledger,
                adoption,
                verdict: LayoutVerdict::Refused { conflicts },
            });
        }
        let validated = validate_allocations(&ledger, snapshot, &runtime_policy)
            .map_err(RuntimeBootstrapError::Validation)?;
        let next_generation = (!ledger.is_unchanged_by(&validated)).then(|| ledger.current_generation() + 1);
        if next_generation.is_some()
            && let Some(error) = commit_refusal(&ledger, &validated, stored_len)
        {
            return Ok(LayoutPlan {
                ledger,
                adoption,
                verdict: LayoutVerdict::CommitRefused { error },
            });
        }
        let changes = ledger.changes_for(&validated);
        Ok(LayoutPlan {
            ledger,
            adoption,
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
        Ok(export(
            &self.ledger,
            commit,
            header,
            ic_memory_diagnostic_of(&self.memory),
        ))
    }

    /// Gives the memory back (store handles opened earlier stay valid).
    pub fn into_memory(self) -> M {
        self.memory
    }

    pub(super) fn boot<P: AllocationPolicy>(
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
            let manager = commit(&memory, recovered, None)?;
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
        let manager = commit(&memory, recovered, Some(&staged))?;
        let validated = validated.bound_to(staged.current_generation());
        Ok(Self {
            memory,
            manager,
            ledger: staged,
            validated,
        })
    }
}

/// Adds the ledger's own declaration in front and names every declaration's
/// authority. A caller's declaration identical to the ledger's own counts as
/// the governance layer's. A caller's declaration that takes the ledger's key
/// or ID 0 with anything else keeps the application's authority and the
/// ledger's own is not added beside it (that would make the snapshot hold a
/// duplicate): the policy stack then refuses it — an `ic_memory.*` key from
/// the application, or an ID in the governance range — so such a boot is
/// refused with a typed error, never accepted and never a panic.
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
    let ledger_key_or_slot_taken = list
        .iter()
        .any(|d| d.stable_key() == ledger.stable_key() || d.slot() == ledger.slot());
    if !ledger_key_or_slot_taken {
        list.insert(0, ledger);
        authorities.insert(0, IC_MEMORY_AUTHORITY_OWNER.to_owned());
    }
    let snapshot = DeclarationSnapshot::new(list)
        .expect("the ledger's declaration is added only when its key and its slot are free");
    let snapshot = match fingerprint {
        Some(f) => snapshot
            .with_runtime_fingerprint(f)
            .expect("the fingerprint was valid before"),
        None => snapshot,
    };
    (snapshot, authorities)
}

/// What the commit of `validated` over `ledger` would refuse before writing
/// anything, found the way the boot finds it: staging, the integrity rules,
/// then the encoded size (with a commit time, which the boot also records,
/// so the size is exact).
///
/// `stored_len` is the length of `ledger`'s own encoding when the store just
/// verified it. When even the most the new generation can add keeps it under
/// the limit and the generation counter has room, none of the three can
/// refuse: `ledger` passed the integrity rules at recovery and the runtime's
/// policy stack admits only MemoryManager slots and always declares the
/// ledger, so staging `validated` keeps every rule. The work — a copy of the
/// ledger, its checks and an encoding — is then skipped.
fn commit_refusal<P>(
    ledger: &AllocationLedger,
    validated: &ValidatedAllocations,
    stored_len: Option<u64>,
) -> Option<RuntimeBootstrapError<P>> {
    if let (Some(stored), Some(growth)) = (stored_len, most_a_generation_adds(validated))
        && stored + growth <= MAX_ENCODED_LEDGER_LEN as u64
        && ledger.current_generation() < u64::MAX
    {
        return None;
    }
    let staged = match ledger.stage_validated_generation(validated, committed_at()) {
        Ok(staged) => staged,
        Err(err) => return Some(RuntimeBootstrapError::Staging(err)),
    };
    if let Err(err) = staged.check_memory_manager_integrity() {
        return Some(RuntimeBootstrapError::LedgerIntegrity(err));
    }
    let len = CborLedgerCodec.encode(&staged).len();
    (len > MAX_ENCODED_LEDGER_LEN).then_some(RuntimeBootstrapError::LedgerCommit(
        LedgerCommitError::LedgerTooLarge { len },
    ))
}

/// An upper bound on the bytes committing `validated` adds to the encoded
/// ledger; None when a declaration is not on a MemoryManager slot (whose
/// encoding this bound does not cover). Per generation: its record (array
/// head, generation, parent, fingerprint, count, commit time: at most 36
/// bytes besides the fingerprint) and the list heads that may widen (8 each).
/// Per declaration, a new record at most: heads, key, a two-byte slot,
/// state, two generations, null, label, one schema entry — 52 bytes besides
/// its three texts; a known record adds less (a wider last-seen generation,
/// a label, one schema entry).
fn most_a_generation_adds(validated: &ValidatedAllocations) -> Option<u64> {
    let fingerprint = validated.runtime_fingerprint().map_or(0, str::len) as u64;
    validated
        .declarations()
        .iter()
        .try_fold(36 + 16 + fingerprint, |bytes, declaration| {
            declaration.slot().memory_manager_id()?;
            let texts = declaration.stable_key().as_str().len()
                + declaration.label().map_or(0, str::len)
                + declaration.schema().schema_fingerprint().map_or(0, str::len);
            Some(bytes + 52 + texts as u64)
        })
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
                header: None,
                location: LedgerLocation::Native,
                adopting: None,
            };
            return Ok((AllocationLedger::genesis(), recovered));
        }
        Ok(RawMemoryClass::InterruptedInitialization) => {
            let recovered = Recovered {
                opened: None,
                origin: LedgerOrigin::InterruptedMemoryManagerInitialization,
                header: None,
                location: LedgerLocation::Native,
                adopting: None,
            };
            return Ok((AllocationLedger::genesis(), recovered));
        }
        Ok(RawMemoryClass::MemoryManager(header)) => header,
    };
    // Safe to load: `classify_raw_memory` checked every field `init` trusts,
    // and loading an existing MemoryManager reads without writing.
    let (manager, ledger_memory) = load_ledger_memory(memory);
    let location = adoption::locate_ledger(&ledger_memory).map_err(adoption_error)?;
    let store = adoption::ledger_store(ledger_memory, location);
    let ic_memory =
        adoption::read_ic_memory_ledger(&store, location, &CborLedgerCodec).map_err(adoption_error)?;
    let origin = match store.classify() {
        // The store past an ic-memory `Cell` is adoption's to write.
        _ if ic_memory.is_some() => LedgerOrigin::IcMemoryCell,
        Ok(_) => LedgerOrigin::Store,
        Err(_)
            if location == LedgerLocation::Native
                && store.holds_only_a_torn_store_header()
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
    let recovered = match (origin, &ic_memory) {
        (LedgerOrigin::Store, _) => store.recover(&CborLedgerCodec).map_err(recovery_error)?,
        (_, Some((_, converted))) if converted.current_generation() > 0 => Some(converted.clone()),
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
    // A MemoryManager image's ledger (native or adopted) meets the stricter
    // rules of that substrate: only its slots, and every boot declared the
    // ledger itself. (Decoding or converting it checked the rest.)
    ledger
        .check_memory_manager_rules()
        .map_err(RuntimeBootstrapError::LedgerIntegrity)?;
    let recovered = Recovered {
        opened: Some((manager, store)),
        origin,
        header: Some(header),
        location,
        adopting: ic_memory,
    };
    Ok((ledger, recovered))
}

fn adoption_error<P>(err: adoption::AdoptionError) -> RuntimeBootstrapError<P> {
    RuntimeBootstrapError::StableCellLedger(LedgerStoreError::IcMemory(err))
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

/// Commits `staged` (None: an unchanged boot, nothing to commit), creating
/// the MemoryManager first when the memory was empty and adopting an
/// ic-memory ledger first when ID 0 holds one (only now, after everything
/// was validated).
fn commit<M: Memory + Clone, P>(
    memory: &M,
    recovered: Recovered<M>,
    staged: Option<&AllocationLedger>,
) -> Result<MemoryManager<M>, RuntimeBootstrapError<P>> {
    // Recovery would refuse anything else, so nothing else is written; this
    // comes before the first write of the boot.
    if let Some(staged) = staged {
        staged
            .check_memory_manager_integrity()
            .map_err(RuntimeBootstrapError::LedgerIntegrity)?;
    }
    let recovered = recovered.repaired_for_use(memory);
    if recovered.origin == LedgerOrigin::InterruptedMemoryManagerInitialization {
        // Clear the torn magic so `init` writes a fresh header instead of
        // loading a half-written one. Only reached after validation passed.
        memory.write(0, &[0; 3]);
    }
    let (manager, mut store) = match (recovered.opened, staged) {
        (Some(opened), _) => opened,
        (None, Some(_)) => open_ledger_store(memory, LedgerLocation::Native),
        (None, None) => {
            unreachable!("an unchanged ledger has a committed generation, so the memory has a MemoryManager")
        }
    };
    if let Some((_, converted)) = &recovered.adopting {
        adoption::adopt(&mut store, &CborLedgerCodec, converted, staged)
            .map_err(RuntimeBootstrapError::LedgerCommit)?;
    }
    let Some(staged) = staged else {
        return Ok(manager);
    };
    let result = match recovered.origin {
        LedgerOrigin::InterruptedInitialization => {
            store.commit_over_interrupted_initialization(&CborLedgerCodec, staged)
        }
        LedgerOrigin::EmptyMemory
        | LedgerOrigin::InterruptedMemoryManagerInitialization
        | LedgerOrigin::Store
        | LedgerOrigin::IcMemoryCell => store.commit(&CborLedgerCodec, staged),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::declaration::SchemaMetadata;
    use crate::validate::AcceptAllPolicy;

    /// A declaration with every text at its longest.
    fn widest(index: usize, id: u8, round: u32) -> AllocationDeclaration {
        let key = format!("app.{}{index:03}.v1", "k".repeat(128 - 11));
        let schema = SchemaMetadata::new(
            Some(u32::MAX - round),
            Some(format!("{round:04}{}", "s".repeat(252))),
        )
        .expect("a valid schema");
        AllocationDeclaration::memory_manager_with_schema(
            key,
            id,
            format!("{round:04}{}", "L".repeat(252)),
            schema,
        )
        .expect("a valid declaration")
    }

    /// Each round adds new stores and changes every known store's label and
    /// schema with the longest texts the grammar allows; the encoded ledger
    /// never grows by more than the bound `plan` trusts to skip encoding.
    #[test]
    fn a_generation_never_adds_more_than_the_bound_plan_trusts() {
        let mut ledger = AllocationLedger::genesis();
        let mut stores = 0;
        for round in 0..6u32 {
            stores += 40;
            let declarations = (0..stores)
                .map(|index| widest(index, 10 + u8::try_from(index).expect("under 245 stores"), round))
                .collect();
            let snapshot = DeclarationSnapshot::new(declarations)
                .expect("unique")
                .with_runtime_fingerprint(format!("{round:04}{}", "f".repeat(252)))
                .expect("a valid fingerprint");
            let validated = validate_allocations(&ledger, snapshot, &AcceptAllPolicy).expect("validates");
            let bound = most_a_generation_adds(&validated).expect("MemoryManager slots");
            let before = CborLedgerCodec.encode(&ledger).len() as u64;
            ledger = ledger
                .into_validated_generation(&validated, Some(u64::MAX))
                .expect("stages");
            let after = CborLedgerCodec.encode(&ledger).len() as u64;
            assert!(
                after - before <= bound,
                "round {round}: grew {} > {bound}",
                after - before
            );
        }
    }
}
