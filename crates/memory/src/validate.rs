//! Validation: a binary's declarations against history and policy.
//!
//! [`validate_allocations`] is the only way to obtain a
//! [`ValidatedAllocations`], and staging a new generation requires one, so
//! "committed a layout that was never checked" cannot be written. This
//! module reads the ledger and never writes anything; its error enums are
//! also the refusals of reservations and retirements, whose history checks
//! live with the ledger.
//!
//! Check order (the first failure wins): compatibility, committed integrity,
//! snapshot uniqueness, then for each declaration in list order: policy key,
//! policy slot, governance (only the ledger's own declaration may use an
//! `ic_memory.*` key or MemoryManager ID 0..=9), history claim (key first:
//! retired, then moved; then slot: held by another key).

use std::convert::Infallible;

use rustc_hash::FxHashMap as HashMap;

use crate::declaration::{
    AllocationDeclaration, DeclarationSnapshot, DeclarationSnapshotError, check_unique,
};
use crate::key::StableKey;
use crate::ledger::{
    AllocationLedger, AllocationRecord, AllocationState, LedgerCompatibility, LedgerIntegrityError,
    governance_violation,
};
use crate::slot::AllocationSlotDescriptor;

/// Caller-supplied rules consulted during validation, reservation and
/// retirement. The three methods are the only required items.
pub trait AllocationPolicy {
    /// The policy's own error.
    type Error;
    /// Whether `key` may be declared at all.
    ///
    /// # Errors
    /// The policy's reason to refuse.
    fn validate_key(&self, key: &StableKey) -> Result<(), Self::Error>;
    /// Whether `key` may be declared on `slot`.
    ///
    /// # Errors
    /// The policy's reason to refuse.
    fn validate_slot(&self, key: &StableKey, slot: &AllocationSlotDescriptor) -> Result<(), Self::Error>;
    /// Whether `key` may be reserved on `slot`.
    ///
    /// # Errors
    /// The policy's reason to refuse.
    fn validate_reserved_slot(
        &self,
        key: &StableKey,
        slot: &AllocationSlotDescriptor,
    ) -> Result<(), Self::Error>;
}

/// A policy that accepts every key and slot; history still applies.
#[derive(Clone, Copy, Debug, Default)]
pub struct AcceptAllPolicy;

impl AllocationPolicy for AcceptAllPolicy {
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

/// Declarations that passed validation against one committed generation.
///
/// Opaque: it can only be produced by [`validate_allocations`] (or by a
/// commit that rebinds it to the generation it committed), so holding one
/// proves the check ran. It cannot be built outside this crate:
///
/// ```compile_fail
/// let forged = holdfast_memory::ValidatedAllocations {
///     generation: 0,
///     declarations: Vec::new(),
///     runtime_fingerprint: None,
/// };
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValidatedAllocations {
    generation: u64,
    declarations: Vec<AllocationDeclaration>,
    runtime_fingerprint: Option<String>,
}

impl ValidatedAllocations {
    /// The committed generation these declarations are bound to.
    pub fn generation(&self) -> u64 {
        self.generation
    }
    /// The validated declarations, in declaration order.
    pub fn declarations(&self) -> &[AllocationDeclaration] {
        &self.declarations
    }
    /// The runtime fingerprint of the binary that declared them.
    pub fn runtime_fingerprint(&self) -> Option<&str> {
        self.runtime_fingerprint.as_deref()
    }
    /// The slot validated for `key`, if `key` was declared.
    pub fn slot_for(&self, key: &StableKey) -> Option<&AllocationSlotDescriptor> {
        self.declarations
            .iter()
            .find(|declaration| declaration.stable_key() == key)
            .map(AllocationDeclaration::slot)
    }
    /// An empty set bound to `generation`, for tests that must reach states
    /// no valid ledger can produce.
    #[cfg(test)]
    pub(crate) fn for_tests(generation: u64) -> Self {
        Self {
            generation,
            declarations: Vec::new(),
            runtime_fingerprint: None,
        }
    }

    /// The same set bound to `generation`: only a commit of that generation
    /// (or the proof that nothing changed) may call this.
    pub(crate) fn bound_to(mut self, generation: u64) -> Self {
        self.generation = generation;
        self
    }
}

/// Why a binary's declarations are refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AllocationValidationError<P> {
    /// The ledger is of a format this build does not read.
    #[error(transparent)]
    Compatibility(LedgerCompatibility),
    /// The committed ledger breaks an invariant.
    #[error(transparent)]
    LedgerIntegrity(LedgerIntegrityError),
    /// The snapshot itself is malformed.
    #[error(transparent)]
    Snapshot(DeclarationSnapshotError),
    /// The policy refused a declaration.
    #[error("policy refused the declaration: {0}")]
    Policy(P),
    /// A known key declared on another slot than history records.
    #[error(
        "stable key {stable_key} is recorded on {recorded_slot} but declared on {declared_slot}: \
         a key never moves; declare a new key (for example a new version) instead"
    )]
    StableKeySlotConflict {
        /// The key.
        stable_key: StableKey,
        /// Where history has it.
        recorded_slot: AllocationSlotDescriptor,
        /// Where the binary declares it.
        declared_slot: AllocationSlotDescriptor,
    },
    /// A slot that history records for another key.
    #[error(
        "{slot} belongs to {recorded_stable_key} ({recorded_state:?}) but is declared for \
         {declared_stable_key}: a slot is never reused by another key"
    )]
    SlotStableKeyConflict {
        /// The slot.
        slot: AllocationSlotDescriptor,
        /// The key history records there.
        recorded_stable_key: StableKey,
        /// That record's state.
        recorded_state: AllocationState,
        /// The key the binary declares there.
        declared_stable_key: StableKey,
    },
    /// A declaration on the governance layer's ground — an `ic_memory.*`
    /// key or MemoryManager ID 0..=9 — other than the ledger's own
    /// (`ic_memory.ledger.v1` on ID 0, labelled `MemoryLayoutLedger` or
    /// unlabelled, without schema). The runtimes' policy stack refuses these
    /// first; this keeps every policy, [`AcceptAllPolicy`] included, from
    /// staging a ledger that [`AllocationLedger::check_integrity`] refuses.
    #[error(
        "stable key {stable_key} on {slot}: the ic_memory.* keys and MemoryManager IDs 0..=9 belong to the \
         governance layer, and only its ledger (ic_memory.ledger.v1 on ID 0, label MemoryLayoutLedger, no \
         schema) may be declared there"
    )]
    GovernanceAllocation {
        /// The key.
        stable_key: StableKey,
        /// The slot declared.
        slot: AllocationSlotDescriptor,
    },
    /// A retired key declared again.
    #[error(
        "stable key {stable_key} on {slot} was retired at generation {retired_generation} and can never be declared again"
    )]
    RetiredAllocation {
        /// The key.
        stable_key: StableKey,
        /// Its recorded slot.
        slot: AllocationSlotDescriptor,
        /// When it was retired.
        retired_generation: u64,
    },
}

/// Why a reservation is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AllocationReservationError<P> {
    /// The batch has a duplicate key or slot; nothing was staged.
    #[error("reservation batch: {0}")]
    Batch(DeclarationSnapshotError),
    /// The governance layer's own keys cannot be reserved.
    #[error("{stable_key} belongs to the governance layer and cannot be reserved")]
    GovernanceAllocation {
        /// The key.
        stable_key: StableKey,
    },
    /// The policy refused.
    #[error("policy refused the reservation: {0}")]
    Policy(P),
    /// A reservation on the governance range: MemoryManager IDs 0..=9
    /// hold only the governance layer's own stores.
    #[error("{slot} is in the governance range 0..=9 and cannot be reserved for {stable_key}")]
    GovernanceSlot {
        /// The key.
        stable_key: StableKey,
        /// The slot requested.
        slot: AllocationSlotDescriptor,
    },
    /// A known key reserved on another slot.
    #[error("stable key {stable_key} is recorded on {recorded_slot}, not {requested_slot}")]
    StableKeySlotConflict {
        /// The key.
        stable_key: StableKey,
        /// Where history has it.
        recorded_slot: AllocationSlotDescriptor,
        /// Where the reservation puts it.
        requested_slot: AllocationSlotDescriptor,
    },
    /// A slot held by another key.
    #[error(
        "{slot} belongs to {recorded_stable_key} ({recorded_state:?}); it cannot be reserved for {requested_stable_key}"
    )]
    SlotStableKeyConflict {
        /// The slot.
        slot: AllocationSlotDescriptor,
        /// The key history records there.
        recorded_stable_key: StableKey,
        /// That record's state.
        recorded_state: AllocationState,
        /// The key requested.
        requested_stable_key: StableKey,
    },
    /// The key is already active.
    #[error("stable key {stable_key} is already active on {slot}")]
    ActiveAllocation {
        /// The key.
        stable_key: StableKey,
        /// Its slot.
        slot: AllocationSlotDescriptor,
    },
    /// The key is retired.
    #[error("stable key {stable_key} on {slot} was retired at generation {retired_generation}")]
    RetiredAllocation {
        /// The key.
        stable_key: StableKey,
        /// Its slot.
        slot: AllocationSlotDescriptor,
        /// When it was retired.
        retired_generation: u64,
    },
    /// The generation counter would overflow.
    #[error("generation {current_generation} is the last one a u64 can count")]
    GenerationOverflow {
        /// The current generation.
        current_generation: u64,
    },
}

/// Why a retirement is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AllocationRetirementError {
    /// The governance layer's own keys cannot be retired.
    #[error("{stable_key} belongs to the governance layer and can never be retired")]
    GovernanceAllocation {
        /// The key.
        stable_key: StableKey,
    },
    /// History has no such key.
    #[error("stable key {stable_key} has no record to retire")]
    UnknownStableKey {
        /// The key.
        stable_key: StableKey,
    },
    /// The retirement names another slot than history records.
    #[error("stable key {stable_key} is recorded on {recorded_slot}, not {requested_slot}")]
    SlotMismatch {
        /// The key.
        stable_key: StableKey,
        /// Where history has it.
        recorded_slot: AllocationSlotDescriptor,
        /// Where the retirement says it is.
        requested_slot: AllocationSlotDescriptor,
    },
    /// The key is already retired.
    #[error("stable key {stable_key} was already retired at generation {retired_generation}")]
    AlreadyRetired {
        /// The key.
        stable_key: StableKey,
        /// When.
        retired_generation: u64,
    },
    /// The generation counter would overflow.
    #[error("generation {current_generation} is the last one a u64 can count")]
    GenerationOverflow {
        /// The current generation.
        current_generation: u64,
    },
}

/// Validates `snapshot` against `ledger`'s history and `policy`.
///
/// Pure: reads only its arguments. The result is bound to the ledger's
/// current generation.
///
/// # Errors
/// The first [`AllocationValidationError`] in the order of the module docs.
pub fn validate_allocations<P: AllocationPolicy>(
    ledger: &AllocationLedger,
    snapshot: DeclarationSnapshot,
    policy: &P,
) -> Result<ValidatedAllocations, AllocationValidationError<P::Error>> {
    if let Some(first) = allocation_conflicts(ledger, &snapshot, policy).into_iter().next() {
        return Err(first);
    }
    let (declarations, runtime_fingerprint) = snapshot.into_parts();
    Ok(ValidatedAllocations {
        generation: ledger.current_generation(),
        declarations,
        runtime_fingerprint,
    })
}

/// Every reason [`validate_allocations`] would refuse `snapshot`, in the
/// order it checks them; empty exactly when it accepts. A ledger or snapshot
/// that is unusable as a whole (compatibility, integrity, duplicates) gives
/// that one error; otherwise each declaration contributes its first failure
/// (policy key, policy slot, history claim), so a person sees every conflict
/// at once (`holdfast check`).
pub fn allocation_conflicts<P: AllocationPolicy>(
    ledger: &AllocationLedger,
    snapshot: &DeclarationSnapshot,
    policy: &P,
) -> Vec<AllocationValidationError<P::Error>> {
    if let Err(err) = ledger.check_compatibility() {
        return vec![AllocationValidationError::Compatibility(err)];
    }
    if let Err(err) = ledger.check_integrity() {
        return vec![AllocationValidationError::LedgerIntegrity(err)];
    }
    if let Err(err) = check_unique(snapshot.declarations()) {
        return vec![AllocationValidationError::Snapshot(err)];
    }
    let history = HistoryIndex::of(ledger);
    snapshot
        .declarations()
        .iter()
        .filter_map(|declaration| {
            let key = declaration.stable_key();
            policy
                .validate_key(key)
                .and_then(|()| policy.validate_slot(key, declaration.slot()))
                .map_err(AllocationValidationError::Policy)
                .and_then(|()| check_governance(declaration))
                .and_then(|()| history.check_claim(declaration))
                .err()
        })
        .collect()
}
/// Refuses a declaration whose record would break a governance rule of
/// [`AllocationLedger::check_integrity`] (the same function decides both).
fn check_governance<P>(declaration: &AllocationDeclaration) -> Result<(), AllocationValidationError<P>> {
    let violation = governance_violation(
        declaration.stable_key(),
        declaration.slot(),
        AllocationState::Active,
        declaration.label(),
        usize::from(!declaration.schema().is_empty()),
    );
    match violation {
        Some(_) => Err(AllocationValidationError::GovernanceAllocation {
            stable_key: declaration.stable_key().clone(),
            slot: declaration.slot().clone(),
        }),
        None => Ok(()),
    }
}

/// History indexed by key and by slot, so each claim is checked in O(1).
struct HistoryIndex<'a> {
    records: &'a [AllocationRecord],
    by_key: HashMap<&'a StableKey, usize>,
    by_slot: HashMap<&'a AllocationSlotDescriptor, usize>,
}

impl<'a> HistoryIndex<'a> {
    fn of(ledger: &'a AllocationLedger) -> Self {
        let history = ledger.allocation_history();
        Self {
            records: history.records(),
            by_key: history.positions_by_key(),
            by_slot: history.positions_by_slot(),
        }
    }

    /// The history claim: the key first (retired, then moved), then the slot
    /// (held by another key).
    fn check_claim<P>(
        &self,
        declaration: &AllocationDeclaration,
    ) -> Result<(), AllocationValidationError<P>> {
        let key = declaration.stable_key();
        if let Some(&position) = self.by_key.get(key) {
            let record = &self.records[position];
            if record.state() == AllocationState::Retired {
                return Err(AllocationValidationError::RetiredAllocation {
                    stable_key: key.clone(),
                    slot: record.slot().clone(),
                    retired_generation: record.retired_generation().unwrap_or_default(),
                });
            }
            if record.slot() != declaration.slot() {
                return Err(AllocationValidationError::StableKeySlotConflict {
                    stable_key: key.clone(),
                    recorded_slot: record.slot().clone(),
                    declared_slot: declaration.slot().clone(),
                });
            }
            return Ok(());
        }
        if let Some(&position) = self.by_slot.get(declaration.slot()) {
            let holder = &self.records[position];
            return Err(AllocationValidationError::SlotStableKeyConflict {
                slot: declaration.slot().clone(),
                recorded_stable_key: holder.stable_key().clone(),
                recorded_state: holder.state(),
                declared_stable_key: key.clone(),
            });
        }
        Ok(())
    }
}
