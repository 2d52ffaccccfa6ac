//! The allocation ledger: the durable history of which key lives in which slot.
//!
//! This module owns the ledger model and its integrity rules (invariants 4,
//! 8–11 of the specification), plus the few crate-private mutations staging
//! is built from ([`crate::staging`] decides what to stage; this module never
//! looks at declarations against policy). Every field is private; a ledger is
//! built only by [`AllocationLedger::genesis`], the checked constructors,
//! staging, or decoding (which runs the same checks), so an
//! `AllocationLedger` value always satisfies [`AllocationLedger::check_integrity`].
//!
//! The rules are those of the ledgers staging can write, so recovery
//! refuses every ledger no runtime could have written (docs/FORMAT.md, "What
//! recovery accepts"). [`AllocationLedger::check_integrity`] holds for every
//! substrate and policy; [`AllocationLedger::check_memory_manager_integrity`]
//! adds what only a MemoryManager runtime's ledger at ID 0 satisfies (only
//! MemoryManager slots; every boot declared the ledger's own store). This
//! module never reads or writes memory.

use compact_str::CompactString;
use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};
use serde::Serialize;

use crate::declaration::{AllocationDeclaration, SchemaMetadata, is_valid_runtime_fingerprint};
use crate::key::StableKey;
use crate::slot::{
    AllocationSlotDescriptor, IC_MEMORY_LEDGER_LABEL, IC_MEMORY_LEDGER_STABLE_KEY,
    MEMORY_MANAGER_GOVERNANCE_MAX_ID, MEMORY_MANAGER_LEDGER_ID, SlotSet,
};

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
    // Whether the fingerprint is one a snapshot accepts, judged once when
    // the record is built (its only way to get a fingerprint): a function of
    // the fingerprint, so equality and hashing are unchanged, and integrity
    // checks, which run on every boot, need not rescan every fingerprint.
    #[serde(skip)]
    runtime_fingerprint_valid: bool,
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
    #[error(
        "the governance record {IC_MEMORY_LEDGER_STABLE_KEY} is {state:?} on {slot}; it must be active on \
         MemoryManager ID 0"
    )]
    GovernanceRecordAltered {
        /// Where the record puts it.
        slot: AllocationSlotDescriptor,
        /// Its state.
        state: AllocationState,
    },
    /// A record's label is not printable ASCII.
    #[error("record {stable_key} has an invalid label")]
    InvalidLabel {
        /// The key.
        stable_key: StableKey,
    },
    /// A key retired at or before the last generation that declared or
    /// reserved it: a retirement always commits a generation of its own,
    /// after every one that saw the key, and a retired key is never seen
    /// again.
    #[error(
        "record {stable_key} was retired at generation {retired}, not after its last-seen generation {last_seen}"
    )]
    RetiredBeforeLastSeen {
        /// The key.
        stable_key: StableKey,
        /// Its last-seen generation.
        last_seen: u64,
        /// Its retired generation.
        retired: u64,
    },
    /// Records not in the order their keys were first committed (each
    /// generation appends the keys it sees for the first time).
    #[error(
        "record {stable_key} (first generation {first_generation}) follows {previous} (first generation \
         {previous_first_generation}); records are kept in first-commit order"
    )]
    RecordsOutOfOrder {
        /// The key out of place.
        stable_key: StableKey,
        /// Its first generation.
        first_generation: u64,
        /// The record before it.
        previous: StableKey,
        /// That record's first generation.
        previous_first_generation: u64,
    },
    /// A schema history whose first entry records no schema (a key declared
    /// without schema has no entry until it declares one).
    #[error(
        "record {stable_key} has a schema history starting with an empty schema at generation {generation}"
    )]
    SchemaHistoryStartsEmpty {
        /// The key.
        stable_key: StableKey,
        /// The first entry's generation.
        generation: u64,
    },
    /// A schema-history entry equal to the one before it (an entry is
    /// appended only when the schema changes).
    #[error(
        "record {stable_key} has a schema-history entry at generation {generation} repeating the one before"
    )]
    SchemaHistoryRepeats {
        /// The key.
        stable_key: StableKey,
        /// The repeating entry's generation.
        generation: u64,
    },
    /// The governance record carries a label other than its own.
    #[error(
        "the governance record {IC_MEMORY_LEDGER_STABLE_KEY} is labelled {label:?}, not {IC_MEMORY_LEDGER_LABEL:?}"
    )]
    GovernanceRecordRelabelled {
        /// The label found (printable ASCII, checked before this rule).
        label: String,
    },
    /// The governance record carries schema metadata (its declaration has
    /// none).
    #[error(
        "the governance record {IC_MEMORY_LEDGER_STABLE_KEY} has {entries} schema-history entries; it has none"
    )]
    GovernanceRecordSchema {
        /// How many entries it has.
        entries: usize,
    },
    /// MemoryManager ID 0, where the ledger itself lives, recorded for
    /// another key.
    #[error(
        "MemoryManager ID 0 holds the ledger itself but is recorded for {stable_key}, not {IC_MEMORY_LEDGER_STABLE_KEY}"
    )]
    LedgerKeyRenamed {
        /// The key recorded on ID 0.
        stable_key: StableKey,
    },
    /// An `ic_memory.*` key other than the ledger's own: the prefix belongs
    /// to the governance layer, which has exactly one store.
    #[error(
        "record {stable_key} on {slot} uses the governance prefix ic_memory., which only {IC_MEMORY_LEDGER_STABLE_KEY} may"
    )]
    ReservedStableKey {
        /// The key.
        stable_key: StableKey,
        /// Its slot.
        slot: AllocationSlotDescriptor,
    },
    /// An application key on a MemoryManager ID of the governance range
    /// 1..=9.
    #[error("record {stable_key} is on MemoryManager ID {id}, in the governance range 0..=9")]
    GovernanceRangeSlot {
        /// The key.
        stable_key: StableKey,
        /// The ID.
        id: u8,
    },
    /// A generation's declaration count that does not match the records:
    /// a boot counts the keys it declared, a reservation the keys it
    /// reserved (each such key was seen at that generation), a retirement
    /// 1 (0 in histories ic-memory 0.5 wrote). At the current generation
    /// the count is exact; at earlier ones later generations may have
    /// moved a key's last-seen generation on, so it is a lower bound.
    #[error(
        "generation {generation} counts {declaration_count} declarations, but {recorded} records were \
         declared, reserved or retired at it"
    )]
    DeclarationCountMismatch {
        /// The generation.
        generation: u64,
        /// Its recorded declaration count.
        declaration_count: u32,
        /// How many records were seen or retired at it.
        recorded: u64,
    },
    /// A generation that retires a key and also retires or declares
    /// another (a retirement commits a generation of its own).
    #[error(
        "generation {generation} retires {retired} but also records {other}; a retirement is a generation of its own"
    )]
    RetirementGenerationShared {
        /// The generation.
        generation: u64,
        /// The key it retires.
        retired: StableKey,
        /// Another key retired, declared or reserved at it.
        other: StableKey,
    },
    /// A retirement generation with a runtime fingerprint (only boots carry
    /// one).
    #[error(
        "generation {generation} retires {retired} but carries a runtime fingerprint, which only boots record"
    )]
    RetirementWithFingerprint {
        /// The generation.
        generation: u64,
        /// The key it retires.
        retired: StableKey,
    },
    /// A reserved key last seen at a boot: a boot activates every key it
    /// declares, so its generation either carries a runtime fingerprint or
    /// activated another key at the same generation.
    #[error(
        "record {stable_key} is reserved, but generation {generation}, where it was last seen, was a boot"
    )]
    ReservedAtBoot {
        /// The key.
        stable_key: StableKey,
        /// Its last-seen generation.
        generation: u64,
    },
    /// A runtime fingerprint a declaration snapshot would refuse: empty,
    /// longer than [`crate::declaration::RUNTIME_FINGERPRINT_MAX_LEN`] or
    /// not printable ASCII (control characters would reach a terminal
    /// through `holdfast inspect`). The fingerprint itself is not shown.
    #[error(
        "generation {generation} has a runtime fingerprint of {len} bytes that is not 1..=256 bytes of printable ASCII"
    )]
    InvalidRuntimeFingerprint {
        /// The generation.
        generation: u64,
        /// The fingerprint's length in bytes.
        len: usize,
    },
    /// A slot other than a standard MemoryManager ID in a ledger read from
    /// a MemoryManager image ([`AllocationLedger::check_memory_manager_integrity`]).
    #[error("record {stable_key} is on {slot}, which is not a MemoryManager ID")]
    NotMemoryManagerSlot {
        /// The key.
        stable_key: StableKey,
        /// Its slot.
        slot: AllocationSlotDescriptor,
    },
    /// A boot that did not declare the governance record, in a ledger read
    /// from a MemoryManager image: every runtime boot declares it, so it is
    /// present from the first boot on and seen at every boot — the
    /// generations it spans (first to last seen) hold every boot
    /// ([`AllocationLedger::check_memory_manager_integrity`]). A boot is
    /// known by a key active since it or by a runtime fingerprint.
    #[error(
        "generation {generation} was a boot ({}) but the governance record {IC_MEMORY_LEDGER_STABLE_KEY} {}",
        boot_evidence(.active_key.as_ref()),
        governance_span(*.governance_generations)
    )]
    BootWithoutGovernanceRecord {
        /// The boot's generation.
        generation: u64,
        /// The key active since that boot; `None` when the evidence is the
        /// generation's runtime fingerprint.
        active_key: Option<StableKey>,
        /// The governance record's first and last-seen generations, if it
        /// is recorded at all.
        governance_generations: Option<(u64, u64)>,
    },
}

fn boot_evidence(active_key: Option<&StableKey>) -> String {
    match active_key {
        Some(key) => format!("{key} was last declared there and is active"),
        None => "it carries a runtime fingerprint".to_owned(),
    }
}

fn governance_span(generations: Option<(u64, u64)>) -> String {
    match generations {
        Some((first, last)) => format!("is recorded only from generation {first} to {last}"),
        None => "is not recorded".to_owned(),
    }
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
    /// [`LedgerIntegrityError::RetiredBeforeLastSeen`],
    /// [`LedgerIntegrityError::SchemaHistoryOrder`],
    /// [`LedgerIntegrityError::SchemaHistoryStartsEmpty`],
    /// [`LedgerIntegrityError::SchemaHistoryRepeats`],
    /// [`LedgerIntegrityError::InvalidLabel`].
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
        if let Some(retired) = self.retired_generation
            && retired <= self.last_seen_generation
        {
            return Err(LedgerIntegrityError::RetiredBeforeLastSeen {
                stable_key: self.stable_key.clone(),
                last_seen: self.last_seen_generation,
                retired,
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
        // Staging appends an entry only when the declared schema differs
        // from the current one, and "no history" means the empty schema.
        if let Some(first) = self.schema_history.first()
            && first.schema.is_empty()
        {
            return Err(LedgerIntegrityError::SchemaHistoryStartsEmpty {
                stable_key: self.stable_key.clone(),
                generation: first.generation,
            });
        }
        if let Some(pair) = self
            .schema_history
            .windows(2)
            .find(|pair| pair[0].schema == pair[1].schema)
        {
            return Err(LedgerIntegrityError::SchemaHistoryRepeats {
                stable_key: self.stable_key.clone(),
                generation: pair[1].generation,
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
        let runtime_fingerprint_valid = runtime_fingerprint
            .as_deref()
            .is_none_or(is_valid_runtime_fingerprint);
        Self {
            generation,
            parent_generation,
            runtime_fingerprint,
            declaration_count,
            committed_at,
            runtime_fingerprint_valid,
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

/// What one generation recorded, gathered from the records.
#[derive(Default)]
struct GenerationContents<'a> {
    /// Distinct records declared or reserved at it.
    declared: u64,
    /// The first of those, for the error message.
    first_declared: Option<&'a StableKey>,
    /// A record active since it (so it was a boot).
    activated: Option<&'a StableKey>,
    /// The record it retired.
    retired: Option<&'a StableKey>,
}

/// The governance rule a record with these fields breaks, if any. The
/// governance layer owns the `ic_memory.*` keys and MemoryManager IDs
/// 0..=9 and uses exactly one of each: its ledger, `ic_memory.ledger.v1`,
/// active on ID 0, labelled `MemoryLayoutLedger` (or unlabelled, as
/// ic-memory 0.5 records every key), without schema. Validation refuses a
/// declaration for which this is `Some`, so staging never writes one.
pub(crate) fn governance_violation(
    stable_key: &StableKey,
    slot: &AllocationSlotDescriptor,
    state: AllocationState,
    label: Option<&str>,
    schema_entries: usize,
) -> Option<LedgerIntegrityError> {
    let id = slot.memory_manager_id();
    if stable_key.as_str() == IC_MEMORY_LEDGER_STABLE_KEY {
        return if id != Some(MEMORY_MANAGER_LEDGER_ID) || state != AllocationState::Active {
            Some(LedgerIntegrityError::GovernanceRecordAltered {
                slot: slot.clone(),
                state,
            })
        } else if let Some(label) = label.filter(|label| *label != IC_MEMORY_LEDGER_LABEL) {
            Some(LedgerIntegrityError::GovernanceRecordRelabelled {
                label: label.to_owned(),
            })
        } else if schema_entries > 0 {
            Some(LedgerIntegrityError::GovernanceRecordSchema {
                entries: schema_entries,
            })
        } else {
            None
        };
    }
    match id {
        Some(MEMORY_MANAGER_LEDGER_ID) => Some(LedgerIntegrityError::LedgerKeyRenamed {
            stable_key: stable_key.clone(),
        }),
        _ if stable_key.is_ic_memory_key() => Some(LedgerIntegrityError::ReservedStableKey {
            stable_key: stable_key.clone(),
            slot: slot.clone(),
        }),
        Some(id) if id <= MEMORY_MANAGER_GOVERNANCE_MAX_ID => {
            Some(LedgerIntegrityError::GovernanceRangeSlot {
                stable_key: stable_key.clone(),
                id,
            })
        }
        _ => None,
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

    /// Checks every structural invariant of a committed ledger: the rules
    /// every generation staging can produce satisfies, whatever the
    /// substrate and the policy (docs/FORMAT.md, "What recovery accepts").
    ///
    /// In order: the generation chain 1..=current; each generation's
    /// runtime fingerprint (what a declaration snapshot accepts); each
    /// record on its own (state and retired generation, generations
    /// `1 <= first <= last_seen < retired`, all within `current`, schema
    /// history ordered within `first..=last_seen`, not starting empty, not
    /// repeating, label); unique keys and slots; the governance rules (see
    /// [`LedgerIntegrityError::GovernanceRecordAltered`] and the variants
    /// after it); records in first-commit order; then what each generation
    /// recorded against its declaration count, its retirement and its kind.
    ///
    /// Complexity: O(records + schema entries + generations), with O(1) per
    /// generation (its fingerprint was judged when its record was built).
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
            if !record.runtime_fingerprint_valid {
                return Err(LedgerIntegrityError::InvalidRuntimeFingerprint {
                    generation: record.generation,
                    len: record.runtime_fingerprint.as_ref().map_or(0, CompactString::len),
                });
            }
        }
        let records = &self.allocation_history.records;
        let mut keys = HashSet::with_capacity_and_hasher(records.len(), Default::default());
        let mut slots = SlotSet::default();
        let mut previous: Option<&AllocationRecord> = None;
        for record in records {
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
            if let Some(err) = governance_violation(
                &record.stable_key,
                &record.slot,
                record.state,
                record.label.as_deref(),
                record.schema_history.len(),
            ) {
                return Err(err);
            }
            if let Some(before) = previous
                && before.first_generation > record.first_generation
            {
                return Err(LedgerIntegrityError::RecordsOutOfOrder {
                    stable_key: record.stable_key.clone(),
                    first_generation: record.first_generation,
                    previous: before.stable_key.clone(),
                    previous_first_generation: before.first_generation,
                });
            }
            previous = Some(record);
        }
        self.check_generation_contents()
    }

    /// [`Self::check_integrity`] plus the rules of a ledger that a
    /// MemoryManager runtime (holdfast's, or ic-memory 0.5's, adopted) kept
    /// at ID 0 of a stable-memory image. Recovery from an image applies
    /// this; the generic model keeps other substrates' slots and boots
    /// that do not declare the ledger's own store, which only
    /// [`crate::AllocationBootstrap`] over a caller's own commit store can
    /// write.
    ///
    /// - every slot is a standard MemoryManager ID;
    /// - every boot declared the governance record: a generation with a
    ///   runtime fingerprint, and the last-seen generation of every active
    ///   key, lie within the governance record's first..=last-seen
    ///   generations. Before the first boot (reservations and retirements
    ///   on an empty memory) the record is legitimately absent.
    ///
    /// # Errors
    /// The first [`LedgerIntegrityError`] of [`Self::check_integrity`], then
    /// [`LedgerIntegrityError::NotMemoryManagerSlot`] and
    /// [`LedgerIntegrityError::BootWithoutGovernanceRecord`].
    pub fn check_memory_manager_integrity(&self) -> Result<(), LedgerIntegrityError> {
        self.check_integrity()?;
        self.check_memory_manager_rules()
    }

    /// Only the MemoryManager rules of
    /// [`Self::check_memory_manager_integrity`], for a ledger just decoded or
    /// converted: every constructor already ran [`Self::check_integrity`],
    /// so running it again on a boot's hot path checks nothing new.
    ///
    /// # Errors
    /// [`LedgerIntegrityError::NotMemoryManagerSlot`] and
    /// [`LedgerIntegrityError::BootWithoutGovernanceRecord`].
    pub(crate) fn check_memory_manager_rules(&self) -> Result<(), LedgerIntegrityError> {
        let records = &self.allocation_history.records;
        if let Some(record) = records.iter().find(|r| r.slot.memory_manager_id().is_none()) {
            return Err(LedgerIntegrityError::NotMemoryManagerSlot {
                stable_key: record.stable_key.clone(),
                slot: record.slot.clone(),
            });
        }
        let governance_generations = records
            .iter()
            .find(|record| record.is_governance_record())
            .map(|record| (record.first_generation, record.last_seen_generation));
        let declared_governance = |generation: u64| {
            governance_generations.is_some_and(|(first, last)| (first..=last).contains(&generation))
        };
        if let Some(record) = records.iter().find(|record| {
            record.state == AllocationState::Active && !declared_governance(record.last_seen_generation)
        }) {
            return Err(LedgerIntegrityError::BootWithoutGovernanceRecord {
                generation: record.last_seen_generation,
                active_key: Some(record.stable_key.clone()),
                governance_generations,
            });
        }
        if let Some(generation) = self.allocation_history.generations.iter().find(|generation| {
            generation.runtime_fingerprint.is_some() && !declared_governance(generation.generation)
        }) {
            return Err(LedgerIntegrityError::BootWithoutGovernanceRecord {
                generation: generation.generation,
                active_key: None,
                governance_generations,
            });
        }
        Ok(())
    }

    /// What each generation recorded, against its generation record.
    /// PRECONDITION: the chain and every record passed
    /// [`Self::check_integrity`]'s earlier rules, so every generation named
    /// by a record is in `1..=current` and has its generation record.
    fn check_generation_contents(&self) -> Result<(), LedgerIntegrityError> {
        let generations = &self.allocation_history.generations;
        let records = &self.allocation_history.records;
        let record_of = |generation: u64| {
            let at = usize::try_from(generation - 1).expect("a checked generation indexes its record");
            &generations[at]
        };
        // Only the generations some record names: O(records + schema
        // entries), however long the history (a boot re-checks the ledger
        // it validates against).
        let mut seen: HashMap<u64, GenerationContents<'_>> =
            HashMap::with_capacity_and_hasher(2 * records.len() + 1, Default::default());
        if self.current_generation > 0 {
            // The current generation's count is exact even when it recorded
            // nothing.
            seen.entry(self.current_generation).or_default();
        }
        for record in records {
            // The distinct generations known to have declared or reserved
            // this key: first <= schema entries (strictly increasing) <=
            // last seen, so equal neighbours are the only repeats.
            let declared_at = std::iter::once(record.first_generation)
                .chain(record.schema_history.iter().map(|entry| entry.generation))
                .chain(std::iter::once(record.last_seen_generation));
            let mut before = 0;
            for generation in declared_at {
                if generation != before {
                    let contents = seen.entry(generation).or_default();
                    contents.declared += 1;
                    contents.first_declared.get_or_insert(&record.stable_key);
                    before = generation;
                }
            }
            if record.state == AllocationState::Active {
                seen.entry(record.last_seen_generation)
                    .or_default()
                    .activated
                    .get_or_insert(&record.stable_key);
            }
            if let Some(retired_at) = record.retired_generation {
                let contents = seen.entry(retired_at).or_default();
                if let Some(retired) = contents.retired {
                    return Err(LedgerIntegrityError::RetirementGenerationShared {
                        generation: retired_at,
                        retired: retired.clone(),
                        other: record.stable_key.clone(),
                    });
                }
                contents.retired = Some(&record.stable_key);
            }
        }
        let mut in_order: Vec<(&u64, &GenerationContents<'_>)> = seen.iter().collect();
        in_order.sort_unstable_by_key(|(generation, _)| **generation);
        for (&generation, contents) in in_order {
            let generation_record = record_of(generation);
            let count = generation_record.declaration_count;
            if let Some(retired) = contents.retired {
                if let Some(other) = contents.first_declared {
                    return Err(LedgerIntegrityError::RetirementGenerationShared {
                        generation,
                        retired: retired.clone(),
                        other: other.clone(),
                    });
                }
                if generation_record.runtime_fingerprint.is_some() {
                    return Err(LedgerIntegrityError::RetirementWithFingerprint {
                        generation,
                        retired: retired.clone(),
                    });
                }
                // holdfast counts a retirement as 1; ic-memory 0.5 as 0, and
                // an adopted history keeps its counts.
                if count > 1 {
                    return Err(LedgerIntegrityError::DeclarationCountMismatch {
                        generation,
                        declaration_count: count,
                        recorded: 1,
                    });
                }
                continue;
            }
            let declared = contents.declared;
            let exact = generation == self.current_generation;
            if declared > u64::from(count) || (exact && declared != u64::from(count)) {
                return Err(LedgerIntegrityError::DeclarationCountMismatch {
                    generation,
                    declaration_count: count,
                    recorded: declared,
                });
            }
        }
        for record in records {
            if record.state != AllocationState::Reserved {
                continue;
            }
            let generation = record.last_seen_generation;
            let activated = seen.get(&generation).and_then(|contents| contents.activated);
            if record_of(generation).runtime_fingerprint.is_some() || activated.is_some() {
                return Err(LedgerIntegrityError::ReservedAtBoot {
                    stable_key: record.stable_key.clone(),
                    generation,
                });
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
        self.allocation_history
            .generations
            .push(GenerationRecord::with_compact_fingerprint(
                generation,
                self.current_generation,
                runtime_fingerprint,
                u32::try_from(count).unwrap_or(u32::MAX),
                committed_at,
            ));
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
            Err(LedgerIntegrityError::GovernanceRecordAltered {
                slot: AllocationSlotDescriptor::memory_manager(3).unwrap(),
                state: AllocationState::Active,
            })
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

    // ---- rules of ledgers no runtime can write -------------------------

    fn key(text: &str) -> StableKey {
        StableKey::parse(text).unwrap()
    }

    fn mm(id: u8) -> AllocationSlotDescriptor {
        AllocationSlotDescriptor::memory_manager(id).unwrap()
    }

    fn schema(version: u32) -> SchemaMetadata {
        SchemaMetadata::new(Some(version), None).unwrap()
    }

    fn boot(
        ledger: &AllocationLedger,
        declarations: Vec<AllocationDeclaration>,
        fingerprint: &str,
    ) -> AllocationLedger {
        let mut all = vec![crate::registry::ledger_declaration()];
        all.extend(declarations);
        let snapshot = crate::declaration::DeclarationSnapshot::new(all)
            .unwrap()
            .with_runtime_fingerprint(fingerprint)
            .unwrap();
        let validated = crate::validate::validate_allocations(ledger, snapshot, &AcceptAllPolicy).unwrap();
        ledger.stage_validated_generation(&validated, Some(7)).unwrap()
    }

    /// A history a MemoryManager runtime writes, through staging itself:
    /// 1 boot (ledger, a with schema 1, b), 2 reserve r, 3 boot (ledger, a
    /// with schema 2, r; b omitted), 4 retire b, 5 reserve s.
    fn written_history() -> AllocationLedger {
        let declare = |k: &str, id, version: Option<u32>| {
            AllocationDeclaration::memory_manager_with_schema(
                k,
                id,
                "Store",
                version.map(schema).unwrap_or_default(),
            )
            .unwrap()
        };
        let one = boot(
            &AllocationLedger::genesis(),
            vec![declare("app.a.v1", 10, Some(1)), declare("app.b.v1", 11, None)],
            "b1",
        );
        let two = one
            .stage_reservation_generation(&[declare("app.r.v1", 12, None)], &AcceptAllPolicy, None)
            .unwrap();
        let three = boot(
            &two,
            vec![declare("app.a.v1", 10, Some(2)), declare("app.r.v1", 12, None)],
            "b2",
        );
        let four = three
            .stage_retirement_generation(&AllocationRetirement::new("app.b.v1", mm(11)).unwrap(), None)
            .unwrap();
        four.stage_reservation_generation(&[declare("app.s.v1", 13, None)], &AcceptAllPolicy, None)
            .unwrap()
    }

    /// `written_history` changed by `change`, through the checked constructor.
    fn altered(
        change: impl FnOnce(&mut AllocationHistory),
    ) -> Result<AllocationLedger, LedgerIntegrityError> {
        let ledger = written_history();
        let mut history = ledger.allocation_history().clone();
        change(&mut history);
        AllocationLedger::new_committed(
            ledger.ledger_schema_version(),
            ledger.physical_format_id(),
            ledger.current_generation(),
            history,
        )
    }

    /// `record` with another fingerprint, built as every record is.
    fn with_fingerprint(record: &GenerationRecord, fingerprint: Option<&str>) -> GenerationRecord {
        GenerationRecord::new(
            record.generation,
            record.parent_generation,
            fingerprint.map(str::to_owned),
            record.declaration_count,
            record.committed_at,
        )
    }

    fn record_of<'h>(history: &'h mut AllocationHistory, stable_key: &str) -> &'h mut AllocationRecord {
        history
            .records
            .iter_mut()
            .find(|record| record.stable_key.as_str() == stable_key)
            .unwrap()
    }

    #[test]
    fn the_history_staging_writes_passes_every_rule() {
        let ledger = written_history();
        assert_eq!(ledger.current_generation(), 5);
        assert_eq!(ledger.check_integrity(), Ok(()));
        assert_eq!(ledger.check_memory_manager_integrity(), Ok(()));
        assert_eq!(altered(|_| {}), Ok(ledger));
    }

    #[test]
    fn a_key_retired_at_or_before_its_last_seen_generation_is_refused() {
        let refused = LedgerIntegrityError::RetiredBeforeLastSeen {
            stable_key: key("app.b.v1"),
            last_seen: 4,
            retired: 4,
        };
        assert_eq!(
            altered(|h| record_of(h, "app.b.v1").last_seen_generation = 4),
            Err(refused.clone())
        );
        assert_eq!(
            AllocationRecord::new(
                key("app.b.v1"),
                mm(11),
                AllocationState::Retired,
                1,
                4,
                Some(4),
                None,
                vec![]
            ),
            Err(refused)
        );
    }

    #[test]
    fn records_out_of_first_commit_order_are_refused() {
        // Records: ledger (1), a (1), b (1), r (2), s (5).
        assert_eq!(
            altered(|h| h.records.swap(2, 3)),
            Err(LedgerIntegrityError::RecordsOutOfOrder {
                stable_key: key("app.b.v1"),
                first_generation: 1,
                previous: key("app.r.v1"),
                previous_first_generation: 2,
            })
        );
    }

    #[test]
    fn a_schema_history_that_starts_empty_or_repeats_itself_is_refused() {
        assert_eq!(
            altered(|h| record_of(h, "app.b.v1").schema_history =
                vec![SchemaMetadataRecord::new(1, SchemaMetadata::none())]),
            Err(LedgerIntegrityError::SchemaHistoryStartsEmpty {
                stable_key: key("app.b.v1"),
                generation: 1
            })
        );
        assert_eq!(
            altered(|h| record_of(h, "app.a.v1").schema_history[1] = SchemaMetadataRecord::new(3, schema(1))),
            Err(LedgerIntegrityError::SchemaHistoryRepeats {
                stable_key: key("app.a.v1"),
                generation: 3
            })
        );
        // A schema dropped later is a change, recorded as an empty entry.
        assert!(
            altered(|h| record_of(h, "app.a.v1").schema_history[1] =
                SchemaMetadataRecord::new(3, SchemaMetadata::none()))
            .is_ok()
        );
    }

    #[test]
    fn a_relabelled_or_schemed_governance_record_is_refused_an_unlabelled_one_is_not() {
        assert_eq!(
            altered(|h| record_of(h, IC_MEMORY_LEDGER_STABLE_KEY).label = Some("Ledger".into())),
            Err(LedgerIntegrityError::GovernanceRecordRelabelled {
                label: "Ledger".into()
            })
        );
        assert_eq!(
            altered(|h| record_of(h, IC_MEMORY_LEDGER_STABLE_KEY).schema_history =
                vec![SchemaMetadataRecord::new(1, schema(1))]),
            Err(LedgerIntegrityError::GovernanceRecordSchema { entries: 1 })
        );
        // ic-memory 0.5 records no labels; an adopted ledger has none.
        assert!(altered(|h| record_of(h, IC_MEMORY_LEDGER_STABLE_KEY).label = None).is_ok());
    }

    #[test]
    fn a_boot_without_the_governance_record_is_refused_in_a_memory_manager_ledger_only() {
        let missing = altered(|h| {
            h.records.remove(0);
        })
        .unwrap();
        assert_eq!(missing.check_integrity(), Ok(()));
        assert_eq!(
            missing.check_memory_manager_integrity(),
            Err(LedgerIntegrityError::BootWithoutGovernanceRecord {
                generation: 3,
                active_key: Some(key("app.a.v1")),
                governance_generations: None,
            })
        );
        // Seen at the first boot only: the boot of generation 3 omitted it.
        let stale = altered(|h| record_of(h, IC_MEMORY_LEDGER_STABLE_KEY).last_seen_generation = 1).unwrap();
        assert_eq!(
            stale.check_memory_manager_integrity(),
            Err(LedgerIntegrityError::BootWithoutGovernanceRecord {
                generation: 3,
                active_key: Some(key("app.a.v1")),
                governance_generations: Some((1, 1)),
            })
        );
        // A boot known only by its fingerprint (it activated nothing).
        let empty_boot = AllocationLedger::new(
            1,
            AllocationHistory::new(
                vec![],
                vec![GenerationRecord::new(1, 0, Some("b1".into()), 0, None)],
            ),
        )
        .unwrap();
        assert_eq!(
            empty_boot.check_memory_manager_integrity(),
            Err(LedgerIntegrityError::BootWithoutGovernanceRecord {
                generation: 1,
                active_key: None,
                governance_generations: None,
            })
        );
        // Before the first boot the record is legitimately absent.
        let reserved = AllocationLedger::genesis()
            .stage_reservation_generation(
                &[AllocationDeclaration::memory_manager("app.r.v1", 12, "R").unwrap()],
                &AcceptAllPolicy,
                None,
            )
            .unwrap()
            .stage_retirement_generation(&AllocationRetirement::new("app.r.v1", mm(12)).unwrap(), None)
            .unwrap();
        assert_eq!(reserved.check_memory_manager_integrity(), Ok(()));
    }

    #[test]
    fn a_second_governance_key_an_application_key_on_ids_0_to_9_or_a_renamed_ledger_key_is_refused() {
        assert_eq!(
            altered(|h| record_of(h, "app.s.v1").stable_key = key("ic_memory.journal.v1")),
            Err(LedgerIntegrityError::ReservedStableKey {
                stable_key: key("ic_memory.journal.v1"),
                slot: mm(13),
            })
        );
        assert_eq!(
            altered(|h| record_of(h, "app.a.v1").slot = mm(3)),
            Err(LedgerIntegrityError::GovernanceRangeSlot {
                stable_key: key("app.a.v1"),
                id: 3
            })
        );
        for renamed in ["ic_memory.ledger.v2", "app.ledger.v1"] {
            assert_eq!(
                altered(|h| record_of(h, IC_MEMORY_LEDGER_STABLE_KEY).stable_key = key(renamed)),
                Err(LedgerIntegrityError::LedgerKeyRenamed {
                    stable_key: key(renamed)
                })
            );
        }
    }

    #[test]
    fn a_slot_of_another_substrate_is_refused_in_a_memory_manager_ledger_only() {
        let partition =
            AllocationSlotDescriptor::new(crate::slot::AllocationSlot::NamedPartition("s".into()), "disk", 1)
                .unwrap();
        let ledger = altered(|h| record_of(h, "app.s.v1").slot = partition.clone()).unwrap();
        assert_eq!(ledger.check_integrity(), Ok(()));
        assert_eq!(
            ledger.check_memory_manager_integrity(),
            Err(LedgerIntegrityError::NotMemoryManagerSlot {
                stable_key: key("app.s.v1"),
                slot: partition,
            })
        );
    }

    #[test]
    fn declaration_counts_that_do_not_match_the_records_are_refused() {
        let count = |generation: u64, count: u32| {
            altered(move |h| h.generations[generation as usize - 1].declaration_count = count)
        };
        let mismatch = |generation, declaration_count, recorded| {
            Err(LedgerIntegrityError::DeclarationCountMismatch {
                generation,
                declaration_count,
                recorded,
            })
        };
        // The current generation (reserved s) is exact.
        assert_eq!(count(5, 2), mismatch(5, 2, 1));
        assert_eq!(count(5, 0), mismatch(5, 0, 1));
        // An earlier one is at least what its records show (ledger, a, b).
        assert_eq!(count(1, 2), mismatch(1, 2, 3));
        assert!(
            count(3, 9).is_ok(),
            "records since seen later may have been declared at 3"
        );
        // A retirement counts 1, or 0 as ic-memory 0.5 counted it.
        assert_eq!(count(4, 2), mismatch(4, 2, 1));
        assert!(count(4, 0).is_ok());
    }

    #[test]
    fn a_retirement_shares_its_generation_with_nothing_and_carries_no_fingerprint() {
        assert_eq!(
            altered(|h| {
                let a = record_of(h, "app.a.v1");
                a.state = AllocationState::Retired;
                a.retired_generation = Some(4);
            }),
            Err(LedgerIntegrityError::RetirementGenerationShared {
                generation: 4,
                retired: key("app.a.v1"),
                other: key("app.b.v1"),
            })
        );
        assert_eq!(
            altered(|h| record_of(h, IC_MEMORY_LEDGER_STABLE_KEY).last_seen_generation = 4),
            Err(LedgerIntegrityError::RetirementGenerationShared {
                generation: 4,
                retired: key("app.b.v1"),
                other: key(IC_MEMORY_LEDGER_STABLE_KEY),
            })
        );
        assert_eq!(
            altered(|h| h.generations[3] = with_fingerprint(&h.generations[3], Some("b3"))),
            Err(LedgerIntegrityError::RetirementWithFingerprint {
                generation: 4,
                retired: key("app.b.v1"),
            })
        );
    }

    #[test]
    fn a_key_reserved_at_a_boot_is_refused() {
        let refused = Err(LedgerIntegrityError::ReservedAtBoot {
            stable_key: key("app.r.v1"),
            generation: 3,
        });
        assert_eq!(
            altered(|h| record_of(h, "app.r.v1").state = AllocationState::Reserved),
            refused
        );
        // Without its fingerprint, generation 3 is a boot by what it activated.
        assert_eq!(
            altered(|h| {
                record_of(h, "app.r.v1").state = AllocationState::Reserved;
                h.generations[2] = with_fingerprint(&h.generations[2], None);
            }),
            refused
        );
    }

    #[test]
    fn the_ledger_accepts_exactly_the_runtime_fingerprints_a_snapshot_accepts() {
        let samples = [
            String::new(),
            "b1".to_owned(),
            "\u{1b}[31mred".to_owned(),
            "tab\there".to_owned(),
            "caf\u{e9}".to_owned(),
            "x".repeat(256),
            "x".repeat(257),
            "x".repeat(1 << 20),
        ];
        for fingerprint in samples {
            let snapshot = crate::declaration::DeclarationSnapshot::new(vec![])
                .unwrap()
                .with_runtime_fingerprint(fingerprint.clone());
            let len = fingerprint.len();
            let ledger =
                altered(|h| h.generations[0] = with_fingerprint(&h.generations[0], Some(&fingerprint)));
            if snapshot.is_ok() {
                assert!(ledger.is_ok(), "{len} bytes: {ledger:?}");
            } else {
                assert_eq!(
                    ledger,
                    Err(LedgerIntegrityError::InvalidRuntimeFingerprint { generation: 1, len }),
                );
            }
        }
    }

    #[test]
    fn validation_and_reservation_refuse_what_the_governance_rules_refuse_whatever_the_policy() {
        use crate::declaration::DeclarationSnapshot;
        use crate::validate::{AllocationValidationError, validate_allocations};

        let genesis = AllocationLedger::genesis();
        let refused = |declaration: AllocationDeclaration| {
            let stable_key = declaration.stable_key().clone();
            let slot = declaration.slot().clone();
            assert_eq!(
                validate_allocations(
                    &genesis,
                    DeclarationSnapshot::new(vec![declaration]).unwrap(),
                    &AcceptAllPolicy
                ),
                Err(AllocationValidationError::GovernanceAllocation { stable_key, slot })
            );
        };
        refused(AllocationDeclaration::memory_manager("app.a.v1", 3, "A").unwrap());
        refused(AllocationDeclaration::memory_manager("app.a.v1", 0, "A").unwrap());
        refused(AllocationDeclaration::memory_manager("ic_memory.journal.v1", 20, "J").unwrap());
        refused(AllocationDeclaration::memory_manager(IC_MEMORY_LEDGER_STABLE_KEY, 0, "Other").unwrap());
        refused(
            AllocationDeclaration::memory_manager(IC_MEMORY_LEDGER_STABLE_KEY, 4, IC_MEMORY_LEDGER_LABEL)
                .unwrap(),
        );
        refused(
            AllocationDeclaration::memory_manager_with_schema(
                IC_MEMORY_LEDGER_STABLE_KEY,
                0,
                IC_MEMORY_LEDGER_LABEL,
                schema(1),
            )
            .unwrap(),
        );
        let own = DeclarationSnapshot::new(vec![crate::registry::ledger_declaration()]).unwrap();
        assert!(validate_allocations(&genesis, own, &AcceptAllPolicy).is_ok());
        assert_eq!(
            genesis.stage_reservation_generation(
                &[AllocationDeclaration::memory_manager("app.a.v1", 9, "A").unwrap()],
                &AcceptAllPolicy,
                None
            ),
            Err(AllocationReservationError::GovernanceSlot {
                stable_key: key("app.a.v1"),
                slot: mm(9),
            })
        );
    }
}
