//! The allocation ledger: the durable history of which key lives in which slot.
//!
//! This module owns the ledger model and its integrity rules (invariants 4,
//! 8–11 of the specification), plus the few crate-private mutations staging
//! is built from ([`crate::staging`] decides what to stage; this module never
//! looks at declarations against policy). Every field is private; a ledger is
//! built only by [`AllocationLedger::genesis`], the checked constructors,
//! staging, or decoding (which runs the same checks), so an
//! `AllocationLedger` value always satisfies [`AllocationLedger::check_integrity`].

use compact_str::CompactString;
use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};
use serde::Serialize;

use crate::declaration::{AllocationDeclaration, SchemaMetadata};
use crate::key::StableKey;
use crate::slot::{AllocationSlotDescriptor, IC_MEMORY_LEDGER_STABLE_KEY, MEMORY_MANAGER_LEDGER_ID, SlotSet};

/// The ledger model version this crate writes and reads.
pub const CURRENT_LEDGER_SCHEMA_VERSION: u32 = 1;
/// The physical commit-store format this crate writes and reads.
pub const CURRENT_PHYSICAL_FORMAT_ID: u32 = 1;

/// The lifecycle state of an allocation record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum AllocationState {
    /// Staged by an operator; not yet declared by a binary.
    Reserved,
    /// Declared by a committed binary.
    Active,
    /// Tombstoned: neither the key nor the slot is ever used again.
    Retired,
}

/// One schema-history entry: the schema a key had from `generation` on.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct SchemaMetadataRecord {
    generation: u64,
    schema: SchemaMetadata,
}

impl SchemaMetadataRecord {
    /// An entry for `schema` first seen at `generation`.
    pub fn new(generation: u64, schema: SchemaMetadata) -> Self {
        Self { generation, schema }
    }
    /// The generation this schema was first committed at.
    pub fn generation(&self) -> u64 {
        self.generation
    }
    /// The schema.
    pub fn schema(&self) -> &SchemaMetadata {
        &self.schema
    }
}

/// The history of one stable key.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct AllocationRecord {
    stable_key: StableKey,
    slot: AllocationSlotDescriptor,
    state: AllocationState,
    first_generation: u64,
    last_seen_generation: u64,
    retired_generation: Option<u64>,
    // Inline up to 24 bytes: a ledger holds one label per record.
    label: Option<CompactString>,
    schema_history: Vec<SchemaMetadataRecord>,
}

/// One committed generation.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct GenerationRecord {
    generation: u64,
    parent_generation: u64,
    // Inline up to 24 bytes: a ledger holds one fingerprint per generation.
    runtime_fingerprint: Option<CompactString>,
    declaration_count: u32,
    committed_at: Option<u64>,
}

/// Every record and every committed generation.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize)]
pub struct AllocationHistory {
    records: Vec<AllocationRecord>,
    generations: Vec<GenerationRecord>,
}

/// The durable allocation ledger.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct AllocationLedger {
    ledger_schema_version: u32,
    physical_format_id: u32,
    current_generation: u64,
    allocation_history: AllocationHistory,
}

/// A ledger written by another version of the format.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LedgerCompatibility {
    /// The ledger model version is not the one this crate reads.
    #[error("ledger schema version {found} is not supported (this build reads {supported})")]
    UnsupportedLedgerSchemaVersion {
        /// Version found.
        found: u32,
        /// Version supported.
        supported: u32,
    },
    /// The physical format is not the one this crate reads.
    #[error("physical format id {found} is not supported (this build reads {supported})")]
    UnsupportedPhysicalFormat {
        /// Id found.
        found: u32,
        /// Id supported.
        supported: u32,
    },
}

/// A ledger that breaks one of its structural invariants.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LedgerIntegrityError {
    /// Two records for one key.
    #[error("stable key {stable_key} has two records")]
    DuplicateStableKey {
        /// The key.
        stable_key: StableKey,
    },
    /// Two records on one slot.
    #[error("{slot} is recorded for both {first} and {second}")]
    DuplicateSlot {
        /// The slot.
        slot: AllocationSlotDescriptor,
        /// The earlier record's key.
        first: StableKey,
        /// The later record's key.
        second: StableKey,
    },
    /// A retired record without a retired generation, or another with one.
    #[error("record {stable_key} in state {state:?} has retired generation {retired_generation:?}")]
    RetiredGenerationMismatch {
        /// The key.
        stable_key: StableKey,
        /// Its state.
        state: AllocationState,
        /// Its retired generation.
        retired_generation: Option<u64>,
    },
    /// Record generations out of order or beyond the current generation.
    #[error(
        "record {stable_key} has generations first={first} last_seen={last_seen} retired={retired:?} \
         outside 1..={current}"
    )]
    RecordGenerations {
        /// The key.
        stable_key: StableKey,
        /// First generation.
        first: u64,
        /// Last-seen generation.
        last_seen: u64,
        /// Retired generation.
        retired: Option<u64>,
        /// The ledger's current generation.
        current: u64,
    },
    /// Schema history not ordered by generation, or outside the record's life.
    #[error("record {stable_key} has a schema history out of order")]
    SchemaHistoryOrder {
        /// The key.
        stable_key: StableKey,
    },
    /// The generation records are not the chain 1..=current.
    #[error(
        "generation record #{index} is generation {found} with parent {parent}; expected generation {expected}"
    )]
    GenerationChainBroken {
        /// Position in the list.
        index: usize,
        /// The generation expected there.
        expected: u64,
        /// The generation found.
        found: u64,
        /// Its parent.
        parent: u64,
    },
    /// The current generation has no record (or there are records past it).
    #[error("current generation {current} but {recorded} generation records")]
    CurrentGenerationMissing {
        /// The current generation.
        current: u64,
        /// How many generation records there are.
        recorded: usize,
    },
    /// The governance ledger's own record is not active on ID 0.
    #[error("the governance record {IC_MEMORY_LEDGER_STABLE_KEY} must be active on ID 0")]
    GovernanceRecordAltered,
    /// A record's label is not printable ASCII.
    #[error("record {stable_key} has an invalid label")]
    InvalidLabel {
        /// The key.
        stable_key: StableKey,
    },
}

impl AllocationState {
    pub(crate) fn code(self) -> u8 {
        match self {
            Self::Reserved => 0,
            Self::Active => 1,
            Self::Retired => 2,
        }
    }
    pub(crate) fn from_code(code: u8) -> Option<Self> {
        match code {
            0 => Some(Self::Reserved),
            1 => Some(Self::Active),
            2 => Some(Self::Retired),
            _ => None,
        }
    }
}

impl AllocationRecord {
    /// A record, checked on its own (whole-ledger rules are checked when it
    /// joins a ledger).
    ///
    /// # Errors
    /// [`LedgerIntegrityError::RetiredGenerationMismatch`],
    /// [`LedgerIntegrityError::RecordGenerations`] (with `current` = `u64::MAX`),
    /// [`LedgerIntegrityError::SchemaHistoryOrder`].
    #[expect(
        clippy::too_many_arguments,
        reason = "mirrors the record's durable fields one to one"
    )]
    pub fn new(
        stable_key: StableKey,
        slot: AllocationSlotDescriptor,
        state: AllocationState,
        first_generation: u64,
        last_seen_generation: u64,
        retired_generation: Option<u64>,
        label: Option<String>,
        schema_history: Vec<SchemaMetadataRecord>,
    ) -> Result<Self, LedgerIntegrityError> {
        Self::with_compact_label(
            stable_key,
            slot,
            state,
            [first_generation, last_seen_generation],
            retired_generation,
            label.map(CompactString::from),
            schema_history,
        )
    }

    /// As [`Self::new`] with the label already compact (the decoder's path).
    pub(crate) fn with_compact_label(
        stable_key: StableKey,
        slot: AllocationSlotDescriptor,
        state: AllocationState,
        [first_generation, last_seen_generation]: [u64; 2],
        retired_generation: Option<u64>,
        label: Option<CompactString>,
        schema_history: Vec<SchemaMetadataRecord>,
    ) -> Result<Self, LedgerIntegrityError> {
        let record = Self {
            stable_key,
            slot,
            state,
            first_generation,
            last_seen_generation,
            retired_generation,
            label,
            schema_history,
        };
        record.check(u64::MAX)?;
        Ok(record)
    }

    /// The stable key.
    pub fn stable_key(&self) -> &StableKey {
        &self.stable_key
    }
    /// The slot.
    pub fn slot(&self) -> &AllocationSlotDescriptor {
        &self.slot
    }
    /// The state.
    pub fn state(&self) -> AllocationState {
        self.state
    }
    /// The generation that first recorded this key.
    pub fn first_generation(&self) -> u64 {
        self.first_generation
    }
    /// The last generation that declared (or reserved) this key.
    pub fn last_seen_generation(&self) -> u64 {
        self.last_seen_generation
    }
    /// The generation that retired this key, if retired.
    pub fn retired_generation(&self) -> Option<u64> {
        self.retired_generation
    }
    /// The latest label.
    pub fn label(&self) -> Option<&str> {
        self.label.as_deref()
    }
    /// Every schema this key has had, oldest first.
    pub fn schema_history(&self) -> &[SchemaMetadataRecord] {
        &self.schema_history
    }
    /// Whether the latest schema is `schema` (no history means the empty one).
    pub(crate) fn has_current_schema(&self, schema: &SchemaMetadata) -> bool {
        match self.schema_history.last() {
            Some(entry) => &entry.schema == schema,
            None => schema.is_empty(),
        }
    }

    /// The latest schema (empty when none was ever declared).
    pub fn current_schema(&self) -> SchemaMetadata {
        self.schema_history
            .last()
            .map(|entry| entry.schema.clone())
            .unwrap_or_default()
    }

    fn check(&self, current: u64) -> Result<(), LedgerIntegrityError> {
        let retired_ok = match self.state {
            AllocationState::Retired => self.retired_generation.is_some(),
            _ => self.retired_generation.is_none(),
        };
        if !retired_ok {
            return Err(LedgerIntegrityError::RetiredGenerationMismatch {
                stable_key: self.stable_key.clone(),
                state: self.state,
                retired_generation: self.retired_generation,
            });
        }
        let last = self
            .retired_generation
            .unwrap_or(0)
            .max(self.last_seen_generation);
        let ordered = 1 <= self.first_generation
            && self.first_generation <= self.last_seen_generation
            && self.retired_generation.is_none_or(|r| self.first_generation <= r)
            && last <= current;
        if !ordered {
            return Err(LedgerIntegrityError::RecordGenerations {
                stable_key: self.stable_key.clone(),
                first: self.first_generation,
                last_seen: self.last_seen_generation,
                retired: self.retired_generation,
                current,
            });
        }
        let schema_ordered = self
            .schema_history
            .windows(2)
            .all(|pair| pair[0].generation < pair[1].generation)
            && self.schema_history.iter().all(|entry| {
                entry.generation >= self.first_generation && entry.generation <= self.last_seen_generation
            });
        if !schema_ordered {
            return Err(LedgerIntegrityError::SchemaHistoryOrder {
                stable_key: self.stable_key.clone(),
            });
        }
        if let Some(label) = &self.label
            && !crate::slot::is_printable_ascii(label, crate::declaration::LABEL_MAX_LEN)
        {
            return Err(LedgerIntegrityError::InvalidLabel {
                stable_key: self.stable_key.clone(),
            });
        }
        Ok(())
    }

    fn is_governance_record(&self) -> bool {
        self.stable_key.as_str() == IC_MEMORY_LEDGER_STABLE_KEY
    }
}

impl GenerationRecord {
    /// A generation record.
    pub fn new(
        generation: u64,
        parent_generation: u64,
        runtime_fingerprint: Option<String>,
        declaration_count: u32,
        committed_at: Option<u64>,
    ) -> Self {
        Self::with_compact_fingerprint(
            generation,
            parent_generation,
            runtime_fingerprint.map(CompactString::from),
            declaration_count,
            committed_at,
        )
    }

    /// As [`Self::new`] with the fingerprint already compact (the decoder's
    /// path).
    pub(crate) fn with_compact_fingerprint(
        generation: u64,
        parent_generation: u64,
        runtime_fingerprint: Option<CompactString>,
        declaration_count: u32,
        committed_at: Option<u64>,
    ) -> Self {
        Self {
            generation,
            parent_generation,
            runtime_fingerprint,
            declaration_count,
            committed_at,
        }
    }
    /// This generation.
    pub fn generation(&self) -> u64 {
        self.generation
    }
    /// Its parent (always `generation - 1` in a valid ledger).
    pub fn parent_generation(&self) -> u64 {
        self.parent_generation
    }
    /// The runtime fingerprint of the binary that committed it.
    pub fn runtime_fingerprint(&self) -> Option<&str> {
        self.runtime_fingerprint.as_deref()
    }
    /// How many declarations, reservations or retirements it committed.
    pub fn declaration_count(&self) -> u32 {
        self.declaration_count
    }
    /// When it was committed (caller-defined clock; nanoseconds since the
    /// Unix epoch in the built-in runtime), if known.
    pub fn committed_at(&self) -> Option<u64> {
        self.committed_at
    }
}

impl AllocationHistory {
    /// A history from its parts (checked when it joins a ledger).
    pub fn new(records: Vec<AllocationRecord>, generations: Vec<GenerationRecord>) -> Self {
        Self { records, generations }
    }
    /// Every record, in the order keys were first committed.
    pub fn records(&self) -> &[AllocationRecord] {
        &self.records
    }
    /// Every committed generation, oldest first.
    pub fn generations(&self) -> &[GenerationRecord] {
        &self.generations
    }
    /// The record of `key`, if any.
    pub fn record(&self, key: &StableKey) -> Option<&AllocationRecord> {
        self.records.iter().find(|record| &record.stable_key == key)
    }
    /// The record on `slot`, if any.
    pub fn record_on_slot(&self, slot: &AllocationSlotDescriptor) -> Option<&AllocationRecord> {
        self.records.iter().find(|record| &record.slot == slot)
    }

    /// Position of each key's record: lookups in O(1) where a boot checks
    /// every declaration (keys are unique in a valid ledger).
    pub(crate) fn positions_by_key(&self) -> HashMap<&StableKey, usize> {
        self.records
            .iter()
            .enumerate()
            .map(|(position, record)| (&record.stable_key, position))
            .collect()
    }

    /// Position of each slot's record (slots are unique in a valid ledger).
    pub(crate) fn positions_by_slot(&self) -> HashMap<&AllocationSlotDescriptor, usize> {
        self.records
            .iter()
            .enumerate()
            .map(|(position, record)| (&record.slot, position))
            .collect()
    }
}

impl AllocationLedger {
    /// Generation 0: no records, no generations.
    pub fn genesis() -> Self {
        Self {
            ledger_schema_version: CURRENT_LEDGER_SCHEMA_VERSION,
            physical_format_id: CURRENT_PHYSICAL_FORMAT_ID,
            current_generation: 0,
            allocation_history: AllocationHistory::default(),
        }
    }

    /// A ledger of the current format at `generation` with `history`.
    ///
    /// # Errors
    /// [`LedgerIntegrityError`] when the history breaks an invariant.
    pub fn new(generation: u64, history: AllocationHistory) -> Result<Self, LedgerIntegrityError> {
        Self::new_committed(
            CURRENT_LEDGER_SCHEMA_VERSION,
            CURRENT_PHYSICAL_FORMAT_ID,
            generation,
            history,
        )
    }

    /// A ledger with explicit format ids (as decoded from storage). The format
    /// ids are checked by validation ([`LedgerCompatibility`]), not here.
    ///
    /// # Errors
    /// [`LedgerIntegrityError`] when the history breaks an invariant.
    pub fn new_committed(
        ledger_schema_version: u32,
        physical_format_id: u32,
        current_generation: u64,
        allocation_history: AllocationHistory,
    ) -> Result<Self, LedgerIntegrityError> {
        let ledger = Self {
            ledger_schema_version,
            physical_format_id,
            current_generation,
            allocation_history,
        };
        ledger.check_integrity()?;
        Ok(ledger)
    }

    /// The ledger model version.
    pub fn ledger_schema_version(&self) -> u32 {
        self.ledger_schema_version
    }
    /// The physical format id.
    pub fn physical_format_id(&self) -> u32 {
        self.physical_format_id
    }
    /// The current (last committed) generation.
    pub fn current_generation(&self) -> u64 {
        self.current_generation
    }
    /// The history.
    pub fn allocation_history(&self) -> &AllocationHistory {
        &self.allocation_history
    }
    /// The record of the current generation, if it is not genesis.
    pub fn current_generation_record(&self) -> Option<&GenerationRecord> {
        self.allocation_history.generations.last()
    }

    /// Whether this ledger's format is the one this build reads.
    ///
    /// # Errors
    /// The [`LedgerCompatibility`] variant naming the unsupported version.
    pub fn check_compatibility(&self) -> Result<(), LedgerCompatibility> {
        if self.ledger_schema_version != CURRENT_LEDGER_SCHEMA_VERSION {
            return Err(LedgerCompatibility::UnsupportedLedgerSchemaVersion {
                found: self.ledger_schema_version,
                supported: CURRENT_LEDGER_SCHEMA_VERSION,
            });
        }
        if self.physical_format_id != CURRENT_PHYSICAL_FORMAT_ID {
            return Err(LedgerCompatibility::UnsupportedPhysicalFormat {
                found: self.physical_format_id,
                supported: CURRENT_PHYSICAL_FORMAT_ID,
            });
        }
        Ok(())
    }

    /// Checks every structural invariant of a committed ledger.
    ///
    /// Complexity: O(records · log records + generations).
    ///
    /// # Errors
    /// The first [`LedgerIntegrityError`] found.
    pub fn check_integrity(&self) -> Result<(), LedgerIntegrityError> {
        let current = self.current_generation;
        let generations = &self.allocation_history.generations;
        if generations.len() as u64 != current {
            return Err(LedgerIntegrityError::CurrentGenerationMissing {
                current,
                recorded: generations.len(),
            });
        }
        for (index, record) in generations.iter().enumerate() {
            let expected = index as u64 + 1;
            if record.generation != expected || record.parent_generation != expected - 1 {
                return Err(LedgerIntegrityError::GenerationChainBroken {
                    index,
                    expected,
                    found: record.generation,
                    parent: record.parent_generation,
                });
            }
        }
        let mut keys =
            HashSet::with_capacity_and_hasher(self.allocation_history.records.len(), Default::default());
        let mut slots = SlotSet::default();
        for record in &self.allocation_history.records {
            record.check(current)?;
            if !keys.insert(&record.stable_key) {
                return Err(LedgerIntegrityError::DuplicateStableKey {
                    stable_key: record.stable_key.clone(),
                });
            }
            if let Some(first) = slots.insert(&record.slot, &record.stable_key) {
                return Err(LedgerIntegrityError::DuplicateSlot {
                    slot: record.slot.clone(),
                    first: first.clone(),
                    second: record.stable_key.clone(),
                });
            }
            if record.is_governance_record()
                && (record.state != AllocationState::Active
                    || record.slot.memory_manager_id() != Some(MEMORY_MANAGER_LEDGER_ID))
            {
                return Err(LedgerIntegrityError::GovernanceRecordAltered);
            }
        }
        Ok(())
    }

    /// The generation staging would commit next; None at the last one a u64
    /// can count (invariant 9).
    pub(crate) fn next_generation(&self) -> Option<u64> {
        self.current_generation.checked_add(1)
    }

    /// Marks `key`'s record retired at `generation`.
    /// PRECONDITION: the record exists and is not retired (staging checked).
    pub(crate) fn retire_record(&mut self, key: &StableKey, generation: u64) {
        let record = self
            .allocation_history
            .records
            .iter_mut()
            .find(|record| &record.stable_key == key)
            .expect("staging found this record in the same ledger");
        record.state = AllocationState::Retired;
        record.retired_generation = Some(generation);
    }

    /// Records each of `declarations` as seen at `generation` in `state`.
    /// PRECONDITION: the declarations are unique and were checked against
    /// history (same slot if known, not retired).
    pub(crate) fn record_declarations(
        &mut self,
        declarations: &[AllocationDeclaration],
        generation: u64,
        state: AllocationState,
    ) {
        let known: Vec<Option<usize>> = {
            let positions = self.allocation_history.positions_by_key();
            declarations
                .iter()
                .map(|declaration| positions.get(declaration.stable_key()).copied())
                .collect()
        };
        for (declaration, position) in declarations.iter().zip(known) {
            let schema = declaration.schema();
            let Some(position) = position else {
                self.allocation_history.records.push(AllocationRecord {
                    stable_key: declaration.stable_key().clone(),
                    slot: declaration.slot().clone(),
                    state,
                    first_generation: generation,
                    last_seen_generation: generation,
                    retired_generation: None,
                    label: declaration.label().map(CompactString::new),
                    schema_history: if schema.is_empty() {
                        Vec::new()
                    } else {
                        vec![SchemaMetadataRecord::new(generation, schema.clone())]
                    },
                });
                continue;
            };
            let record = &mut self.allocation_history.records[position];
            record.state = state;
            record.last_seen_generation = generation;
            if record.label.as_deref() != declaration.label() {
                record.label = declaration.label().map(CompactString::new);
            }
            if !record.has_current_schema(schema) {
                record
                    .schema_history
                    .push(SchemaMetadataRecord::new(generation, schema.clone()));
            }
        }
    }

    /// Appends the record of `generation` (child of the current one) and
    /// makes it current.
    pub(crate) fn push_generation(
        &mut self,
        generation: u64,
        runtime_fingerprint: Option<CompactString>,
        count: usize,
        committed_at: Option<u64>,
    ) {
        self.allocation_history.generations.push(GenerationRecord {
            generation,
            parent_generation: self.current_generation,
            runtime_fingerprint,
            declaration_count: u32::try_from(count).unwrap_or(u32::MAX),
            committed_at,
        });
        self.current_generation = generation;
    }
}

/// An operator's request to retire a key: it must name the key and the slot
/// history recorded for it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AllocationRetirement {
    stable_key: StableKey,
    slot: AllocationSlotDescriptor,
}

impl AllocationRetirement {
    /// A retirement of `stable_key` on `slot`.
    ///
    /// # Errors
    /// [`crate::StableKeyError`] when the key breaks the grammar.
    pub fn new(
        stable_key: impl AsRef<str>,
        slot: AllocationSlotDescriptor,
    ) -> Result<Self, crate::StableKeyError> {
        Ok(Self {
            stable_key: StableKey::parse(stable_key.as_ref())?,
            slot,
        })
    }
    /// The key to retire.
    pub fn stable_key(&self) -> &StableKey {
        &self.stable_key
    }
    /// The slot it must be recorded on.
    pub fn slot(&self) -> &AllocationSlotDescriptor {
        &self.slot
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::staging::AllocationStagingError;
    use crate::validate::{AcceptAllPolicy, AllocationReservationError, ValidatedAllocations};

    /// A ledger at the last generation a u64 can count. Such a ledger cannot
    /// pass the integrity check (it would need u64::MAX generation records),
    /// so it is built directly to reach the overflow guard.
    fn ledger_at_the_last_generation() -> AllocationLedger {
        AllocationLedger {
            current_generation: u64::MAX,
            ..AllocationLedger::genesis()
        }
    }

    /// Every constructor checks integrity, so only code inside this module
    /// can build a broken ledger; the commit store checks again anyway, so
    /// that nothing can write a ledger recovery would refuse.
    #[test]
    fn the_commit_store_refuses_a_ledger_recovery_would_refuse_and_writes_nothing() {
        use ic_stable_structures::{Memory, VectorMemory};

        use crate::codec::CborLedgerCodec;
        use crate::physical::{LedgerCommitError, LedgerCommitStore};

        let broken = AllocationLedger {
            current_generation: 1,
            ..AllocationLedger::genesis()
        };
        let memory = VectorMemory::default();
        let mut store = LedgerCommitStore::new(memory.clone());
        assert_eq!(
            store.commit(&CborLedgerCodec, &broken),
            Err(LedgerCommitError::Integrity(
                LedgerIntegrityError::CurrentGenerationMissing {
                    current: 1,
                    recorded: 0
                }
            ))
        );
        assert_eq!(memory.size(), 0);
    }

    #[test]
    fn invariant_9_generation_overflow_is_an_error_on_every_staging_path() {
        let ledger = ledger_at_the_last_generation();
        let validated = ValidatedAllocations::for_tests(u64::MAX);
        assert_eq!(
            ledger.stage_validated_generation(&validated, None),
            Err(AllocationStagingError::GenerationOverflow {
                current_generation: u64::MAX
            })
        );
        let reservation = AllocationDeclaration::memory_manager("a.v1", 10, "A").unwrap();
        assert_eq!(
            ledger.stage_reservation_generation(&[reservation], &AcceptAllPolicy, None),
            Err(AllocationReservationError::GenerationOverflow {
                current_generation: u64::MAX
            })
        );
    }

    #[test]
    fn record_invariants_are_checked_by_the_constructor() {
        let key = StableKey::parse("a.v1").unwrap();
        let slot = AllocationSlotDescriptor::memory_manager(10).unwrap();
        let record = |state, first, last, retired| {
            AllocationRecord::new(
                key.clone(),
                slot.clone(),
                state,
                first,
                last,
                retired,
                None,
                vec![],
            )
        };
        assert!(matches!(
            record(AllocationState::Active, 1, 1, Some(1)),
            Err(LedgerIntegrityError::RetiredGenerationMismatch { .. })
        ));
        assert!(matches!(
            record(AllocationState::Retired, 1, 1, None),
            Err(LedgerIntegrityError::RetiredGenerationMismatch { .. })
        ));
        assert!(matches!(
            record(AllocationState::Active, 2, 1, None),
            Err(LedgerIntegrityError::RecordGenerations { .. })
        ));
        assert!(matches!(
            record(AllocationState::Active, 0, 1, None),
            Err(LedgerIntegrityError::RecordGenerations { .. })
        ));
        assert!(record(AllocationState::Retired, 1, 1, Some(2)).is_ok());
        let out_of_order = vec![
            SchemaMetadataRecord::new(2, SchemaMetadata::new(Some(1), None).unwrap()),
            SchemaMetadataRecord::new(1, SchemaMetadata::new(Some(2), None).unwrap()),
        ];
        assert!(matches!(
            AllocationRecord::new(
                key.clone(),
                slot.clone(),
                AllocationState::Active,
                1,
                2,
                None,
                None,
                out_of_order
            ),
            Err(LedgerIntegrityError::SchemaHistoryOrder { .. })
        ));
    }

    #[test]
    fn a_ledger_with_duplicate_keys_slots_or_an_altered_governance_record_is_refused() {
        let generation = GenerationRecord::new(1, 0, None, 2, None);
        let active = |k: &str, id| {
            AllocationRecord::new(
                StableKey::parse(k).unwrap(),
                AllocationSlotDescriptor::memory_manager(id).unwrap(),
                AllocationState::Active,
                1,
                1,
                None,
                None,
                vec![],
            )
            .unwrap()
        };
        let ledger =
            |records| AllocationLedger::new(1, AllocationHistory::new(records, vec![generation.clone()]));
        assert!(matches!(
            ledger(vec![active("a.v1", 10), active("a.v1", 11)]),
            Err(LedgerIntegrityError::DuplicateStableKey { .. })
        ));
        assert!(matches!(
            ledger(vec![active("a.v1", 10), active("b.v1", 10)]),
            Err(LedgerIntegrityError::DuplicateSlot { .. })
        ));
        assert_eq!(
            ledger(vec![active("ic_memory.ledger.v1", 3)]),
            Err(LedgerIntegrityError::GovernanceRecordAltered)
        );
        assert!(matches!(
            ledger(vec![
                AllocationRecord::new(
                    StableKey::parse("a.v1").unwrap(),
                    AllocationSlotDescriptor::memory_manager(10).unwrap(),
                    AllocationState::Active,
                    1,
                    5,
                    None,
                    None,
                    vec![]
                )
                .unwrap()
            ]),
            Err(LedgerIntegrityError::RecordGenerations { current: 1, .. })
        ));
    }
}
