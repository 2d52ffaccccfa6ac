//! Staging: generation N+1 from generation N, and what it would change.
//!
//! This module owns the three ways to stage a new generation — a validated
//! boot, a reservation, a retirement — and the comparison a boot makes first
//! (is anything changing? what?). Staging is pure: it returns a new ledger and
//! never touches memory, and it can only produce ledgers that pass
//! [`AllocationLedger::check_integrity`] from ledgers that do. It sits above
//! both [`crate::ledger`] (the model and its integrity rules) and
//! [`crate::validate`] (declarations against history), so neither of those
//! depends on the other's staging needs.

use compact_str::CompactString;
use rustc_hash::FxHashSet as HashSet;
use serde::Serialize;

use crate::declaration::{AllocationDeclaration, SchemaMetadata, check_unique};
use crate::key::StableKey;
use crate::ledger::{
    AllocationLedger, AllocationRetirement, AllocationState, GenerationRecord, governance_violation,
};
use crate::slot::AllocationSlotDescriptor;
use crate::validate::{
    AllocationPolicy, AllocationReservationError, AllocationRetirementError, ValidatedAllocations,
};

/// Why generation N+1 cannot be staged from a validated set.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AllocationStagingError {
    /// The validated set is bound to another generation than the ledger's current one.
    #[error(
        "allocations validated at generation {validated_generation} cannot be staged on a ledger \
         at generation {current_generation}"
    )]
    StaleValidatedGeneration {
        /// The generation the set was validated against.
        validated_generation: u64,
        /// The ledger's current generation.
        current_generation: u64,
    },
    /// The generation counter would overflow.
    #[error("generation {current_generation} is the last one a u64 can count")]
    GenerationOverflow {
        /// The current generation.
        current_generation: u64,
    },
}

impl AllocationLedger {
    /// Whether committing `validated` would change nothing: the same keys on
    /// the same slots, all active and last seen at the current generation,
    /// with the same labels, schemas and runtime fingerprint. A boot for which
    /// this holds binds to the current generation and writes nothing.
    pub fn is_unchanged_by(&self, validated: &ValidatedAllocations) -> bool {
        let Some(current) = self.current_generation_record() else {
            return false;
        };
        if current.runtime_fingerprint() != validated.runtime_fingerprint() {
            return false;
        }
        let live = self
            .allocation_history()
            .records()
            .iter()
            .filter(|r| {
                r.state() == AllocationState::Active && r.last_seen_generation() == self.current_generation()
            })
            .count();
        if live != validated.declarations().len() {
            return false;
        }
        let positions = self.allocation_history().positions_by_key();
        let records = &self.allocation_history().records();
        validated.declarations().iter().all(|declaration| {
            positions.get(declaration.stable_key()).is_some_and(|&position| {
                let record = &records[position];
                record.state() == AllocationState::Active
                    && record.last_seen_generation() == self.current_generation()
                    && record.slot() == declaration.slot()
                    && record.label() == declaration.label()
                    && record.has_current_schema(declaration.schema())
            })
        })
    }

    /// What committing `validated` would change, in declaration order, then
    /// the records it omits (kept untouched in history). Empty exactly when
    /// [`Self::is_unchanged_by`] holds and the fingerprint is the same.
    pub fn changes_for(&self, validated: &ValidatedAllocations) -> Vec<LayoutChange> {
        let positions = self.allocation_history().positions_by_key();
        let records = &self.allocation_history().records();
        let mut changes = Vec::new();
        let previous_fingerprint = self
            .current_generation_record()
            .and_then(GenerationRecord::runtime_fingerprint);
        if self.current_generation() > 0 && previous_fingerprint != validated.runtime_fingerprint() {
            changes.push(LayoutChange::RuntimeFingerprintChanged {
                from: previous_fingerprint.map(str::to_owned),
                to: validated.runtime_fingerprint().map(str::to_owned),
            });
        }
        for declaration in validated.declarations() {
            let stable_key = declaration.stable_key().clone();
            let slot = declaration.slot().clone();
            let Some(&position) = positions.get(declaration.stable_key()) else {
                changes.push(LayoutChange::NewAllocation { stable_key, slot });
                continue;
            };
            let record = &records[position];
            if record.state() == AllocationState::Reserved {
                changes.push(LayoutChange::ActivatedReservation {
                    stable_key: stable_key.clone(),
                    slot,
                });
            } else if record.last_seen_generation() != self.current_generation() {
                changes.push(LayoutChange::Redeclared {
                    stable_key: stable_key.clone(),
                    slot,
                    last_seen_generation: record.last_seen_generation(),
                });
            }
            if record.label() != declaration.label() {
                changes.push(LayoutChange::LabelChanged {
                    stable_key: stable_key.clone(),
                    from: record.label().map(str::to_owned),
                    to: declaration.label().map(str::to_owned),
                });
            }
            if !record.has_current_schema(declaration.schema()) {
                changes.push(LayoutChange::SchemaChanged {
                    stable_key,
                    from: record.current_schema(),
                    to: declaration.schema().clone(),
                });
            }
        }
        let declared: HashSet<&StableKey> = validated.declarations().iter().map(|d| d.stable_key()).collect();
        changes.extend(
            records
                .iter()
                .filter(|r| r.state() != AllocationState::Retired && !declared.contains(r.stable_key()))
                .map(|r| LayoutChange::OmittedKept {
                    stable_key: r.stable_key().clone(),
                    slot: r.slot().clone(),
                    state: r.state(),
                }),
        );
        changes
    }

    /// Stages generation N+1 in which every validated declaration is active.
    ///
    /// New keys get a record; known keys are marked seen, their label updated
    /// and a schema-history entry appended when the schema changed; reserved
    /// keys become active. Keys the binary omits stay untouched.
    ///
    /// # Errors
    /// [`AllocationStagingError::StaleValidatedGeneration`] when `validated`
    /// was validated against another generation (invariant 8);
    /// [`AllocationStagingError::GenerationOverflow`] (invariant 9).
    pub fn stage_validated_generation(
        &self,
        validated: &ValidatedAllocations,
        committed_at: Option<u64>,
    ) -> Result<Self, AllocationStagingError> {
        self.clone().into_validated_generation(validated, committed_at)
    }

    /// As [`Self::stage_validated_generation`], consuming the ledger instead
    /// of copying it (a boot has no further use for generation N).
    ///
    /// # Errors
    /// As [`Self::stage_validated_generation`].
    pub fn into_validated_generation(
        mut self,
        validated: &ValidatedAllocations,
        committed_at: Option<u64>,
    ) -> Result<Self, AllocationStagingError> {
        if validated.generation() != self.current_generation() {
            return Err(AllocationStagingError::StaleValidatedGeneration {
                validated_generation: validated.generation(),
                current_generation: self.current_generation(),
            });
        }
        let next = self
            .next_generation()
            .ok_or(AllocationStagingError::GenerationOverflow {
                current_generation: self.current_generation(),
            })?;
        self.record_declarations(validated.declarations(), next, AllocationState::Active);
        self.push_generation(
            next,
            validated.runtime_fingerprint().map(CompactString::new),
            validated.declarations().len(),
            committed_at,
        );
        Ok(self)
    }

    /// Stages generation N+1 in which `reservations` are reserved.
    ///
    /// The whole batch is checked before anything is staged: duplicates in the
    /// batch, the governance key, then for each reservation in order the
    /// policy key, the policy reserved slot, the governance range, and history (a known key on
    /// another slot; its own slot's state; a slot held by another key).
    /// Re-reserving a reserved key on its slot refreshes it.
    ///
    /// # Errors
    /// The first [`AllocationReservationError`].
    pub fn stage_reservation_generation<P: AllocationPolicy>(
        &self,
        reservations: &[AllocationDeclaration],
        policy: &P,
        committed_at: Option<u64>,
    ) -> Result<Self, AllocationReservationError<P::Error>> {
        check_unique(reservations).map_err(AllocationReservationError::Batch)?;
        for reservation in reservations {
            self.check_reservation(reservation, policy)?;
        }
        let next = self
            .next_generation()
            .ok_or(AllocationReservationError::GenerationOverflow {
                current_generation: self.current_generation(),
            })?;
        let mut staged = self.clone();
        staged.record_declarations(reservations, next, AllocationState::Reserved);
        staged.push_generation(next, None, reservations.len(), committed_at);
        Ok(staged)
    }

    /// Stages generation N+1 in which `retirement`'s key is retired.
    ///
    /// # Errors
    /// [`AllocationRetirementError::GovernanceAllocation`] for the ledger's
    /// own key; `UnknownStableKey`; `SlotMismatch` (checked before the state,
    /// so also for a retired key); `AlreadyRetired`; `GenerationOverflow`.
    pub fn stage_retirement_generation(
        &self,
        retirement: &AllocationRetirement,
        committed_at: Option<u64>,
    ) -> Result<Self, AllocationRetirementError> {
        if retirement.stable_key().is_ic_memory_key() {
            return Err(AllocationRetirementError::GovernanceAllocation {
                stable_key: retirement.stable_key().clone(),
            });
        }
        let record = self
            .allocation_history()
            .record(retirement.stable_key())
            .ok_or_else(|| AllocationRetirementError::UnknownStableKey {
                stable_key: retirement.stable_key().clone(),
            })?;
        if record.slot() != retirement.slot() {
            return Err(AllocationRetirementError::SlotMismatch {
                stable_key: retirement.stable_key().clone(),
                recorded_slot: record.slot().clone(),
                requested_slot: retirement.slot().clone(),
            });
        }
        if record.state() == AllocationState::Retired {
            return Err(AllocationRetirementError::AlreadyRetired {
                stable_key: retirement.stable_key().clone(),
                retired_generation: record.retired_generation().unwrap_or_default(),
            });
        }
        let next = self
            .next_generation()
            .ok_or(AllocationRetirementError::GenerationOverflow {
                current_generation: self.current_generation(),
            })?;
        let mut staged = self.clone();
        staged.retire_record(retirement.stable_key(), next);
        staged.push_generation(next, None, 1, committed_at);
        Ok(staged)
    }

    fn check_reservation<P: AllocationPolicy>(
        &self,
        reservation: &AllocationDeclaration,
        policy: &P,
    ) -> Result<(), AllocationReservationError<P::Error>> {
        let key = reservation.stable_key();
        if key.is_ic_memory_key() {
            return Err(AllocationReservationError::GovernanceAllocation {
                stable_key: key.clone(),
            });
        }
        policy
            .validate_key(key)
            .map_err(AllocationReservationError::Policy)?;
        policy
            .validate_reserved_slot(key, reservation.slot())
            .map_err(AllocationReservationError::Policy)?;
        // Same rule as integrity's (the key itself was checked above): a
        // reserved record there would be refused by recovery.
        if governance_violation(
            key,
            reservation.slot(),
            AllocationState::Reserved,
            reservation.label(),
            usize::from(!reservation.schema().is_empty()),
        )
        .is_some()
        {
            return Err(AllocationReservationError::GovernanceSlot {
                stable_key: key.clone(),
                slot: reservation.slot().clone(),
            });
        }
        if let Some(record) = self.allocation_history().record(key) {
            if record.slot() != reservation.slot() {
                return Err(AllocationReservationError::StableKeySlotConflict {
                    stable_key: key.clone(),
                    recorded_slot: record.slot().clone(),
                    requested_slot: reservation.slot().clone(),
                });
            }
            return match record.state() {
                AllocationState::Reserved => Ok(()),
                AllocationState::Active => Err(AllocationReservationError::ActiveAllocation {
                    stable_key: key.clone(),
                    slot: record.slot().clone(),
                }),
                AllocationState::Retired => Err(AllocationReservationError::RetiredAllocation {
                    stable_key: key.clone(),
                    slot: record.slot().clone(),
                    retired_generation: record.retired_generation().unwrap_or_default(),
                }),
            };
        }
        if let Some(holder) = self.allocation_history().record_on_slot(reservation.slot()) {
            return Err(AllocationReservationError::SlotStableKeyConflict {
                slot: reservation.slot().clone(),
                recorded_stable_key: holder.stable_key().clone(),
                requested_stable_key: key.clone(),
                recorded_state: holder.state(),
            });
        }
        Ok(())
    }
}

/// One thing a boot would change in history, as `holdfast check` reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum LayoutChange {
    /// A key history has never seen gets its slot.
    NewAllocation {
        /// The key.
        stable_key: StableKey,
        /// Its slot.
        slot: AllocationSlotDescriptor,
    },
    /// A reserved key is declared and becomes active.
    ActivatedReservation {
        /// The key.
        stable_key: StableKey,
        /// Its slot.
        slot: AllocationSlotDescriptor,
    },
    /// A key omitted by the last generation is declared again on its slot.
    Redeclared {
        /// The key.
        stable_key: StableKey,
        /// Its slot.
        slot: AllocationSlotDescriptor,
        /// The last generation that declared it.
        last_seen_generation: u64,
    },
    /// A key's schema metadata changes (appends a schema-history entry).
    SchemaChanged {
        /// The key.
        stable_key: StableKey,
        /// The recorded schema.
        from: SchemaMetadata,
        /// The declared schema.
        to: SchemaMetadata,
    },
    /// A key's label changes.
    LabelChanged {
        /// The key.
        stable_key: StableKey,
        /// The recorded label.
        from: Option<String>,
        /// The declared label.
        to: Option<String>,
    },
    /// A key the binary omits; it stays in history untouched.
    OmittedKept {
        /// The key.
        stable_key: StableKey,
        /// Its slot.
        slot: AllocationSlotDescriptor,
        /// Its state, unchanged.
        state: AllocationState,
    },
    /// The binary's runtime fingerprint differs from the last generation's.
    RuntimeFingerprintChanged {
        /// The recorded fingerprint.
        from: Option<String>,
        /// The declared fingerprint.
        to: Option<String>,
    },
}
