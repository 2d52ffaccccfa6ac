//! Bootstrap: recover → validate → stage → commit, over one commit store.
//!
//! [`AllocationBootstrap`] is the whole ordering of the specification in one
//! place for callers that manage their own [`LedgerCommitStore`]. It commits
//! nothing when validation or staging refuses, and nothing when the validated
//! set equals the current generation's. [`AllocationSession`] then opens
//! stores only by validated key. The runtime (`runtime`) composes the same
//! steps over a MemoryManager.

use ic_stable_structures::Memory;

use crate::codec::CborLedgerCodec;
use crate::declaration::{AllocationDeclaration, DeclarationSnapshot};
use crate::key::StableKey;
use crate::ledger::{AllocationLedger, AllocationRetirement};
use crate::physical::{CommitRecoveryError, LedgerCommitError, LedgerCommitStore};
use crate::slot::AllocationSlotDescriptor;
use crate::staging::AllocationStagingError;
use crate::validate::{
    AllocationPolicy, AllocationReservationError, AllocationRetirementError, AllocationValidationError,
    ValidatedAllocations, validate_allocations,
};

/// The result of an accepted boot: the ledger now authoritative and the
/// declarations bound to its generation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BootstrapCommit {
    /// The authoritative ledger after the boot.
    pub ledger: AllocationLedger,
    /// The validated declarations, bound to `ledger`'s current generation.
    pub validated: ValidatedAllocations,
}

/// Why a boot, reservation or retirement was refused. Nothing was written
/// unless the variant says so.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BootstrapError<P> {
    /// The store did not recover, or the commit failed.
    #[error(transparent)]
    Ledger(#[from] LedgerCommitError),
    /// The declarations contradict history or policy.
    #[error(transparent)]
    Validation(AllocationValidationError<P>),
    /// The validated set could not be staged.
    #[error(transparent)]
    Staging(AllocationStagingError),
    /// A reservation was refused.
    #[error(transparent)]
    Reservation(AllocationReservationError<P>),
    /// A retirement was refused.
    #[error(transparent)]
    Retirement(AllocationRetirementError),
}

impl<P> From<CommitRecoveryError> for BootstrapError<P> {
    fn from(err: CommitRecoveryError) -> Self {
        Self::Ledger(LedgerCommitError::Recovery(err))
    }
}

/// Drives one boot over a commit store. See the module docs.
pub struct AllocationBootstrap<'a, M: Memory> {
    store: &'a mut LedgerCommitStore<M>,
    codec: CborLedgerCodec,
}

impl<'a, M: Memory> AllocationBootstrap<'a, M> {
    /// A bootstrap over `store`.
    pub fn new(store: &'a mut LedgerCommitStore<M>) -> Self {
        Self {
            store,
            codec: CborLedgerCodec,
        }
    }

    /// Recovers the ledger (or starts from `genesis`), validates `snapshot`,
    /// and commits generation N+1 unless nothing changed.
    ///
    /// # Errors
    /// [`BootstrapError`]; nothing is written on any error.
    pub fn initialize_validate_and_commit<P: AllocationPolicy>(
        &mut self,
        genesis: &AllocationLedger,
        snapshot: DeclarationSnapshot,
        policy: &P,
        committed_at: Option<u64>,
    ) -> Result<BootstrapCommit, BootstrapError<P::Error>> {
        let ledger = self.store.recover_or_initialize(&self.codec, genesis)?;
        self.validate_and_commit_over(ledger, snapshot, policy, committed_at)
    }

    /// As [`Self::initialize_validate_and_commit`] from the genesis ledger.
    ///
    /// # Errors
    /// [`BootstrapError`]; nothing is written on any error.
    pub fn validate_and_commit<P: AllocationPolicy>(
        &mut self,
        snapshot: DeclarationSnapshot,
        policy: &P,
        committed_at: Option<u64>,
    ) -> Result<BootstrapCommit, BootstrapError<P::Error>> {
        self.initialize_validate_and_commit(&AllocationLedger::genesis(), snapshot, policy, committed_at)
    }

    /// Reserves `reservations` in a new generation.
    ///
    /// # Errors
    /// [`BootstrapError::Reservation`] or `Ledger`; nothing written on error.
    pub fn reserve_and_commit<P: AllocationPolicy>(
        &mut self,
        reservations: &[AllocationDeclaration],
        policy: &P,
        committed_at: Option<u64>,
    ) -> Result<AllocationLedger, BootstrapError<P::Error>> {
        let ledger = self.recover()?;
        let staged = ledger
            .stage_reservation_generation(reservations, policy, committed_at)
            .map_err(BootstrapError::Reservation)?;
        self.store.commit(&self.codec, &staged)?;
        Ok(staged)
    }

    /// Retires one key in a new generation.
    ///
    /// # Errors
    /// [`BootstrapError::Retirement`] or `Ledger`; nothing written on error.
    pub fn retire_and_commit<P>(
        &mut self,
        retirement: &AllocationRetirement,
        committed_at: Option<u64>,
    ) -> Result<AllocationLedger, BootstrapError<P>> {
        let ledger = self.recover()?;
        let staged = ledger
            .stage_retirement_generation(retirement, committed_at)
            .map_err(BootstrapError::Retirement)?;
        self.store.commit(&self.codec, &staged)?;
        Ok(staged)
    }

    fn recover(&self) -> Result<AllocationLedger, CommitRecoveryError> {
        self.store
            .recover_or_initialize(&self.codec, &AllocationLedger::genesis())
    }

    fn validate_and_commit_over<P: AllocationPolicy>(
        &mut self,
        ledger: AllocationLedger,
        snapshot: DeclarationSnapshot,
        policy: &P,
        committed_at: Option<u64>,
    ) -> Result<BootstrapCommit, BootstrapError<P::Error>> {
        let validated =
            validate_allocations(&ledger, snapshot, policy).map_err(BootstrapError::Validation)?;
        if ledger.is_unchanged_by(&validated) {
            return Ok(BootstrapCommit { ledger, validated });
        }
        let staged = ledger
            .stage_validated_generation(&validated, committed_at)
            .map_err(BootstrapError::Staging)?;
        self.store.commit(&self.codec, &staged)?;
        let validated = validated.bound_to(staged.current_generation());
        Ok(BootstrapCommit {
            ledger: staged,
            validated,
        })
    }
}

/// Opens stores of a substrate only by validated key.
pub struct AllocationSession<S> {
    substrate: S,
    validated: ValidatedAllocations,
}

/// Why a session refused to open a store.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AllocationSessionError {
    /// The key was not among the validated declarations.
    #[error("stable key {stable_key} was not validated for this session")]
    StableKeyNotValidated {
        /// The key.
        stable_key: StableKey,
    },
}

/// A substrate that can open a store on a slot.
pub trait AllocationSubstrate {
    /// The handle it opens.
    type Handle;
    /// Opens `slot`. Only called with a validated slot.
    fn open_slot(&self, slot: &AllocationSlotDescriptor) -> Self::Handle;
}

impl<S: AllocationSubstrate> AllocationSession<S> {
    /// A session over `substrate` for `validated`.
    pub fn new(substrate: S, validated: ValidatedAllocations) -> Self {
        Self { substrate, validated }
    }

    /// Opens the store of `key` on its validated slot.
    ///
    /// # Errors
    /// [`AllocationSessionError::StableKeyNotValidated`].
    pub fn open(&self, key: &StableKey) -> Result<S::Handle, AllocationSessionError> {
        let slot =
            self.validated
                .slot_for(key)
                .ok_or_else(|| AllocationSessionError::StableKeyNotValidated {
                    stable_key: key.clone(),
                })?;
        Ok(self.substrate.open_slot(slot))
    }

    /// The validated declarations.
    pub fn validated(&self) -> &ValidatedAllocations {
        &self.validated
    }
}

#[cfg(test)]
mod tests {
    use ic_stable_structures::VectorMemory;

    use super::*;
    use crate::validate::AcceptAllPolicy;
    use crate::{AllocationDeclaration, AllocationLedger};

    struct SlotNames;

    impl AllocationSubstrate for SlotNames {
        type Handle = String;
        fn open_slot(&self, slot: &AllocationSlotDescriptor) -> String {
            slot.to_string()
        }
    }

    fn snapshot(entries: &[(&str, u8)]) -> DeclarationSnapshot {
        DeclarationSnapshot::new(
            entries
                .iter()
                .map(|(key, id)| AllocationDeclaration::memory_manager(key, *id, "L").unwrap())
                .collect(),
        )
        .unwrap()
    }

    #[test]
    fn bootstrap_commits_then_a_session_opens_only_validated_keys() {
        let mut store = LedgerCommitStore::new(VectorMemory::default());
        let commit = AllocationBootstrap::new(&mut store)
            .validate_and_commit(snapshot(&[("a.users.v1", 10)]), &AcceptAllPolicy, Some(1))
            .unwrap();
        assert_eq!(commit.validated.generation(), 1);
        let session = AllocationSession::new(SlotNames, commit.validated);
        let users = StableKey::parse("a.users.v1").unwrap();
        assert_eq!(session.open(&users).unwrap(), "MemoryManager ID 10");
        let other = StableKey::parse("a.other.v1").unwrap();
        assert_eq!(
            session.open(&other),
            Err(AllocationSessionError::StableKeyNotValidated { stable_key: other })
        );
    }

    #[test]
    fn reservation_then_retirement_commit_generations_and_refusals_write_nothing() {
        let memory = VectorMemory::default();
        let mut store = LedgerCommitStore::new(memory.clone());
        let mut bootstrap = AllocationBootstrap::new(&mut store);
        bootstrap
            .validate_and_commit(snapshot(&[("a.users.v1", 10)]), &AcceptAllPolicy, None)
            .unwrap();
        let reserved = AllocationDeclaration::memory_manager("a.later.v1", 11, "L").unwrap();
        let ledger = bootstrap
            .reserve_and_commit(&[reserved], &AcceptAllPolicy, None)
            .unwrap();
        assert_eq!(ledger.current_generation(), 2);
        let before = memory.borrow().clone();
        let wrong_slot = AllocationRetirement::new(
            "a.users.v1",
            AllocationSlotDescriptor::memory_manager(11).unwrap(),
        )
        .unwrap();
        let err = bootstrap
            .retire_and_commit::<std::convert::Infallible>(&wrong_slot, None)
            .unwrap_err();
        assert!(matches!(
            err,
            BootstrapError::Retirement(AllocationRetirementError::SlotMismatch { .. })
        ));
        assert_eq!(*memory.borrow(), before);
        let retirement = AllocationRetirement::new(
            "a.users.v1",
            AllocationSlotDescriptor::memory_manager(10).unwrap(),
        )
        .unwrap();
        let ledger = bootstrap
            .retire_and_commit::<std::convert::Infallible>(&retirement, None)
            .unwrap();
        assert_eq!(ledger.current_generation(), 3);
        let err = AllocationBootstrap::new(&mut store)
            .initialize_validate_and_commit(
                &AllocationLedger::genesis(),
                snapshot(&[("a.users.v1", 10)]),
                &AcceptAllPolicy,
                None,
            )
            .unwrap_err();
        assert!(matches!(
            err,
            BootstrapError::Validation(AllocationValidationError::RetiredAllocation {
                retired_generation: 3,
                ..
            })
        ));
    }
}
