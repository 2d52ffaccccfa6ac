//! Declarations: what the current binary expects to find in stable memory.
//!
//! An [`AllocationDeclaration`] binds a stable key to a slot, with an optional
//! label and schema metadata. A [`DeclarationSnapshot`] is the sealed set of
//! one binary's declarations; it refuses duplicate slots (checked first) and
//! duplicate keys. Snapshots serialize to JSON so a build can export its
//! layout and have it checked offline (`holdfast check`). This module never
//! looks at history: a well-formed snapshot can still be refused by
//! `validate`.

use rustc_hash::FxHashSet as HashSet;
use serde::{Deserialize, Serialize};

use crate::key::{StableKey, StableKeyError};
use crate::slot::{AllocationSlotDescriptor, AllocationSlotError, SlotSet, is_printable_ascii};

/// The longest label, in bytes.
pub const LABEL_MAX_LEN: usize = 256;
/// The longest schema fingerprint, in bytes.
pub const SCHEMA_FINGERPRINT_MAX_LEN: usize = 256;
/// The longest runtime fingerprint, in bytes (ic-memory 0.5's bound too).
pub const RUNTIME_FINGERPRINT_MAX_LEN: usize = 256;

/// Whether `fingerprint` is a runtime fingerprint a snapshot accepts and a
/// ledger may record: 1..=[`RUNTIME_FINGERPRINT_MAX_LEN`] bytes of printable
/// ASCII. One rule for both, so recovery accepts exactly what boots write.
pub(crate) fn is_valid_runtime_fingerprint(fingerprint: &str) -> bool {
    is_printable_ascii(fingerprint, RUNTIME_FINGERPRINT_MAX_LEN)
}

/// Optional schema facts about a store, recorded in history.
///
/// Both fields are optional; a present `schema_version` is nonzero and a
/// present fingerprint is 1..=256 bytes of printable ASCII.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "RawSchemaMetadata")]
pub struct SchemaMetadata {
    schema_version: Option<u32>,
    schema_fingerprint: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSchemaMetadata {
    schema_version: Option<u32>,
    schema_fingerprint: Option<String>,
}

impl TryFrom<RawSchemaMetadata> for SchemaMetadata {
    type Error = DeclarationSnapshotError;
    fn try_from(raw: RawSchemaMetadata) -> Result<Self, Self::Error> {
        Self::new(raw.schema_version, raw.schema_fingerprint)
    }
}

impl SchemaMetadata {
    /// Schema metadata with the given fields.
    ///
    /// # Errors
    /// [`DeclarationSnapshotError::InvalidSchema`] for a zero version or a
    /// fingerprint that is empty, too long or not printable ASCII.
    pub fn new(
        schema_version: Option<u32>,
        schema_fingerprint: Option<String>,
    ) -> Result<Self, DeclarationSnapshotError> {
        if schema_version == Some(0) {
            return Err(DeclarationSnapshotError::InvalidSchema {
                reason: "schema_version must be nonzero",
            });
        }
        if let Some(fingerprint) = &schema_fingerprint
            && !is_printable_ascii(fingerprint, SCHEMA_FINGERPRINT_MAX_LEN)
        {
            return Err(DeclarationSnapshotError::InvalidSchema {
                reason: "schema_fingerprint must be 1..=256 bytes of printable ASCII",
            });
        }
        Ok(Self {
            schema_version,
            schema_fingerprint,
        })
    }

    /// Metadata with no facts.
    pub fn none() -> Self {
        Self::default()
    }

    /// The schema version, if declared.
    pub fn schema_version(&self) -> Option<u32> {
        self.schema_version
    }

    /// The schema fingerprint, if declared.
    pub fn schema_fingerprint(&self) -> Option<&str> {
        self.schema_fingerprint.as_deref()
    }

    /// Whether no fact is recorded.
    pub fn is_empty(&self) -> bool {
        self.schema_version.is_none() && self.schema_fingerprint.is_none()
    }
}

/// What a binary expects: this stable key lives in this slot.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "RawDeclaration")]
pub struct AllocationDeclaration {
    stable_key: StableKey,
    slot: AllocationSlotDescriptor,
    label: Option<String>,
    schema: SchemaMetadata,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDeclaration {
    stable_key: StableKey,
    slot: AllocationSlotDescriptor,
    label: Option<String>,
    #[serde(default)]
    schema: SchemaMetadata,
}

impl TryFrom<RawDeclaration> for AllocationDeclaration {
    type Error = DeclarationSnapshotError;
    fn try_from(raw: RawDeclaration) -> Result<Self, Self::Error> {
        Self::new(raw.stable_key, raw.slot, raw.label, raw.schema)
    }
}

impl AllocationDeclaration {
    /// A declaration of any slot.
    ///
    /// # Errors
    /// [`DeclarationSnapshotError::InvalidStableKey`] or
    /// [`DeclarationSnapshotError::InvalidLabel`].
    pub fn new(
        stable_key: impl AsRef<str>,
        slot: AllocationSlotDescriptor,
        label: Option<String>,
        schema: SchemaMetadata,
    ) -> Result<Self, DeclarationSnapshotError> {
        let stable_key = StableKey::parse(stable_key.as_ref())?;
        if let Some(text) = &label
            && !is_printable_ascii(text, LABEL_MAX_LEN)
        {
            return Err(DeclarationSnapshotError::InvalidLabel {
                stable_key,
                label: text.clone(),
            });
        }
        Ok(Self {
            stable_key,
            slot,
            label,
            schema,
        })
    }

    /// A labelled MemoryManager declaration.
    ///
    /// ```
    /// use holdfast_memory::AllocationDeclaration;
    /// let users = AllocationDeclaration::memory_manager("app.users.v1", 100, "Users").unwrap();
    /// assert_eq!(users.stable_key().as_str(), "app.users.v1");
    /// ```
    ///
    /// # Errors
    /// As [`AllocationDeclaration::new`], plus
    /// [`DeclarationSnapshotError::InvalidSlot`] for ID 255.
    pub fn memory_manager(
        stable_key: impl AsRef<str>,
        id: u8,
        label: impl Into<String>,
    ) -> Result<Self, DeclarationSnapshotError> {
        let slot = AllocationSlotDescriptor::memory_manager(id)?;
        Self::new(stable_key, slot, Some(label.into()), SchemaMetadata::none())
    }

    /// An unlabelled MemoryManager declaration.
    ///
    /// # Errors
    /// As [`AllocationDeclaration::memory_manager`].
    pub fn memory_manager_unlabeled(
        stable_key: impl AsRef<str>,
        id: u8,
    ) -> Result<Self, DeclarationSnapshotError> {
        let slot = AllocationSlotDescriptor::memory_manager(id)?;
        Self::new(stable_key, slot, None, SchemaMetadata::none())
    }

    /// A labelled MemoryManager declaration with schema metadata.
    ///
    /// # Errors
    /// As [`AllocationDeclaration::memory_manager`].
    pub fn memory_manager_with_schema(
        stable_key: impl AsRef<str>,
        id: u8,
        label: impl Into<String>,
        schema: SchemaMetadata,
    ) -> Result<Self, DeclarationSnapshotError> {
        let slot = AllocationSlotDescriptor::memory_manager(id)?;
        Self::new(stable_key, slot, Some(label.into()), schema)
    }

    /// The stable key.
    pub fn stable_key(&self) -> &StableKey {
        &self.stable_key
    }

    /// The slot.
    pub fn slot(&self) -> &AllocationSlotDescriptor {
        &self.slot
    }

    /// The label, if any.
    pub fn label(&self) -> Option<&str> {
        self.label.as_deref()
    }

    /// The schema metadata.
    pub fn schema(&self) -> &SchemaMetadata {
        &self.schema
    }
}

/// The sealed set of one binary's declarations.
///
/// Invariant: no two declarations share a slot or a key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawSnapshot")]
pub struct DeclarationSnapshot {
    declarations: Vec<AllocationDeclaration>,
    runtime_fingerprint: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSnapshot {
    declarations: Vec<AllocationDeclaration>,
    #[serde(default)]
    runtime_fingerprint: Option<String>,
}

impl TryFrom<RawSnapshot> for DeclarationSnapshot {
    type Error = DeclarationSnapshotError;
    fn try_from(raw: RawSnapshot) -> Result<Self, Self::Error> {
        let snapshot = Self::new(raw.declarations)?;
        match raw.runtime_fingerprint {
            Some(fingerprint) => snapshot.with_runtime_fingerprint(fingerprint),
            None => Ok(snapshot),
        }
    }
}

/// Why a declaration or a snapshot is malformed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DeclarationSnapshotError {
    /// Two declarations name the same key.
    #[error("stable key {0} is declared twice")]
    DuplicateStableKey(StableKey),
    /// Two declarations name the same slot.
    #[error("{0} is declared twice")]
    DuplicateSlot(AllocationSlotDescriptor),
    /// The key breaks the grammar.
    #[error(transparent)]
    InvalidStableKey(#[from] StableKeyError),
    /// The slot is unusable.
    #[error(transparent)]
    InvalidSlot(#[from] AllocationSlotError),
    /// The label is empty, too long or not printable ASCII.
    #[error("label {label:?} of {stable_key} must be 1..=256 bytes of printable ASCII")]
    InvalidLabel {
        /// The declaration's key.
        stable_key: StableKey,
        /// The label found.
        label: String,
    },
    /// Schema metadata breaks its rules.
    #[error("invalid schema metadata: {reason}")]
    InvalidSchema {
        /// Which rule.
        reason: &'static str,
    },
    /// The runtime fingerprint is empty, too long or not printable ASCII.
    #[error("runtime fingerprint must be 1..=256 bytes of printable ASCII")]
    InvalidRuntimeFingerprint,
    /// The JSON text is not a declaration snapshot.
    #[error("declaration snapshot JSON is malformed: {0}")]
    Json(String),
}

impl DeclarationSnapshot {
    /// Seals `declarations`.
    ///
    /// # Errors
    /// For each declaration in order: a slot already seen is
    /// [`DeclarationSnapshotError::DuplicateSlot`], else a key already seen is
    /// [`DeclarationSnapshotError::DuplicateStableKey`].
    pub fn new(declarations: Vec<AllocationDeclaration>) -> Result<Self, DeclarationSnapshotError> {
        check_unique(&declarations)?;
        Ok(Self {
            declarations,
            runtime_fingerprint: None,
        })
    }

    /// The same snapshot with a runtime fingerprint (for example a build hash).
    ///
    /// # Errors
    /// [`DeclarationSnapshotError::InvalidRuntimeFingerprint`].
    pub fn with_runtime_fingerprint(
        mut self,
        fingerprint: impl Into<String>,
    ) -> Result<Self, DeclarationSnapshotError> {
        let fingerprint = fingerprint.into();
        if !is_valid_runtime_fingerprint(&fingerprint) {
            return Err(DeclarationSnapshotError::InvalidRuntimeFingerprint);
        }
        self.runtime_fingerprint = Some(fingerprint);
        Ok(self)
    }

    /// The declarations, in the order given.
    pub fn declarations(&self) -> &[AllocationDeclaration] {
        &self.declarations
    }

    /// The runtime fingerprint, if any.
    pub fn runtime_fingerprint(&self) -> Option<&str> {
        self.runtime_fingerprint.as_deref()
    }

    /// The number of declarations.
    pub fn len(&self) -> usize {
        self.declarations.len()
    }

    /// Whether there are no declarations.
    pub fn is_empty(&self) -> bool {
        self.declarations.is_empty()
    }

    /// The snapshot as pretty JSON, the format `holdfast check` reads.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a snapshot has only string keys and plain values")
    }

    /// Parses a snapshot from JSON, applying every rule of [`Self::new`].
    ///
    /// # Errors
    /// [`DeclarationSnapshotError::Json`] naming what is malformed.
    pub fn from_json(text: &str) -> Result<Self, DeclarationSnapshotError> {
        serde_json::from_str(text).map_err(|err| DeclarationSnapshotError::Json(err.to_string()))
    }

    pub(crate) fn into_parts(self) -> (Vec<AllocationDeclaration>, Option<String>) {
        (self.declarations, self.runtime_fingerprint)
    }
}

pub(crate) fn check_unique(declarations: &[AllocationDeclaration]) -> Result<(), DeclarationSnapshotError> {
    let mut slots = SlotSet::default();
    let mut keys = HashSet::with_capacity_and_hasher(declarations.len(), Default::default());
    for declaration in declarations {
        if slots.insert(&declaration.slot, &declaration.stable_key).is_some() {
            return Err(DeclarationSnapshotError::DuplicateSlot(declaration.slot.clone()));
        }
        if !keys.insert(&declaration.stable_key) {
            return Err(DeclarationSnapshotError::DuplicateStableKey(
                declaration.stable_key.clone(),
            ));
        }
    }
    Ok(())
}

/// A consuming builder of a [`DeclarationSnapshot`].
///
/// ```
/// use holdfast_memory::DeclarationCollector;
/// let snapshot = DeclarationCollector::new()
///     .with_memory_manager("app.users.v1", 100, "Users").unwrap()
///     .with_memory_manager("app.orders.v1", 101, "Orders").unwrap()
///     .seal().unwrap();
/// assert_eq!(snapshot.len(), 2);
/// ```
#[derive(Clone, Debug, Default)]
pub struct DeclarationCollector {
    declarations: Vec<AllocationDeclaration>,
}

impl DeclarationCollector {
    /// An empty collector.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a declaration.
    pub fn declare(&mut self, declaration: AllocationDeclaration) -> &mut Self {
        self.declarations.push(declaration);
        self
    }

    /// Adds a labelled MemoryManager declaration.
    ///
    /// # Errors
    /// As [`AllocationDeclaration::memory_manager`].
    pub fn declare_memory_manager(
        &mut self,
        stable_key: impl AsRef<str>,
        id: u8,
        label: impl Into<String>,
    ) -> Result<&mut Self, DeclarationSnapshotError> {
        let declaration = AllocationDeclaration::memory_manager(stable_key, id, label)?;
        Ok(self.declare(declaration))
    }

    /// Consuming form of [`Self::declare_memory_manager`].
    ///
    /// # Errors
    /// As [`AllocationDeclaration::memory_manager`].
    pub fn with_memory_manager(
        mut self,
        stable_key: impl AsRef<str>,
        id: u8,
        label: impl Into<String>,
    ) -> Result<Self, DeclarationSnapshotError> {
        self.declare_memory_manager(stable_key, id, label)?;
        Ok(self)
    }

    /// Consuming form of [`Self::declare`].
    pub fn with_declaration(mut self, declaration: AllocationDeclaration) -> Self {
        self.declare(declaration);
        self
    }

    /// Seals the collected declarations into a snapshot.
    ///
    /// # Errors
    /// As [`DeclarationSnapshot::new`].
    pub fn seal(self) -> Result<DeclarationSnapshot, DeclarationSnapshotError> {
        DeclarationSnapshot::new(self.declarations)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mm(key: &str, id: u8) -> AllocationDeclaration {
        AllocationDeclaration::memory_manager(key, id, "L").unwrap()
    }

    #[test]
    fn duplicate_slot_is_reported_before_duplicate_key() {
        let err = DeclarationSnapshot::new(vec![mm("a.v1", 10), mm("a.v1", 10)]).unwrap_err();
        assert_eq!(
            err,
            DeclarationSnapshotError::DuplicateSlot(AllocationSlotDescriptor::memory_manager(10).unwrap())
        );
        let err = DeclarationSnapshot::new(vec![mm("a.v1", 10), mm("a.v1", 11)]).unwrap_err();
        assert_eq!(
            err,
            DeclarationSnapshotError::DuplicateStableKey(StableKey::parse("a.v1").unwrap())
        );
    }

    #[test]
    fn snapshot_round_trips_through_json() {
        let schema = SchemaMetadata::new(Some(3), Some("sha256:ab".into())).unwrap();
        let snapshot = DeclarationSnapshot::new(vec![
            mm("app.users.v1", 100),
            AllocationDeclaration::memory_manager_with_schema("app.orders.v1", 101, "Orders", schema)
                .unwrap(),
            AllocationDeclaration::memory_manager_unlabeled("app.audit.v1", 102).unwrap(),
        ])
        .unwrap()
        .with_runtime_fingerprint("build-7")
        .unwrap();
        let json = snapshot.to_json();
        assert_eq!(DeclarationSnapshot::from_json(&json).unwrap(), snapshot);
    }

    #[test]
    fn json_with_duplicates_or_sentinel_or_unknown_fields_is_refused() {
        let good = DeclarationSnapshot::new(vec![mm("app.users.v1", 100)])
            .unwrap()
            .to_json();
        let duplicate = good.replace(
            "\"declarations\": [",
            "\"declarations\": [{\"stable_key\":\"app.users.v1\",\"slot\":{\"slot\":{\"MemoryManagerId\":7},\"substrate\":\"x\",\"descriptor_version\":1},\"label\":null},",
        );
        let err = DeclarationSnapshot::from_json(&duplicate).unwrap_err();
        assert!(
            matches!(&err, DeclarationSnapshotError::Json(m) if m.contains("declared twice")),
            "{err}"
        );
        let sentinel = good.replace("100", "255");
        let err = DeclarationSnapshot::from_json(&sentinel).unwrap_err();
        assert!(
            matches!(&err, DeclarationSnapshotError::Json(m) if m.contains("sentinel")),
            "{err}"
        );
        let unknown = good.replacen('{', "{\"extra\": 1,", 1);
        let err = DeclarationSnapshot::from_json(&unknown).unwrap_err();
        assert!(
            matches!(&err, DeclarationSnapshotError::Json(m) if m.contains("unknown field")),
            "{err}"
        );
    }

    #[test]
    fn labels_and_schemas_are_validated() {
        assert!(matches!(
            AllocationDeclaration::memory_manager("a.v1", 10, ""),
            Err(DeclarationSnapshotError::InvalidLabel { .. })
        ));
        assert!(matches!(
            AllocationDeclaration::memory_manager("a.v1", 10, "x".repeat(257)),
            Err(DeclarationSnapshotError::InvalidLabel { .. })
        ));
        assert!(matches!(
            SchemaMetadata::new(Some(0), None),
            Err(DeclarationSnapshotError::InvalidSchema { .. })
        ));
        assert!(matches!(
            SchemaMetadata::new(None, Some("tab\there".into())),
            Err(DeclarationSnapshotError::InvalidSchema { .. })
        ));
    }
}
