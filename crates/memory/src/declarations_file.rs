//! The declarations file: a build's layout as people write and read it, and
//! as `holdfast check` re-checks it offline.
//!
//! A [`DeclaredLayout`] is what the default runtime's bootstrap starts from:
//! every registered declaration with the crate that declared it, every
//! registered MemoryManager ID range, and an optional runtime fingerprint.
//! Its file form (format tag [`DECLARATIONS_FORMAT`]) is compact JSON:
//!
//! ```json
//! {
//!   "format": "holdfast-declarations/1",
//!   "runtime_fingerprint": "build-1234",
//!   "declarations": [
//!     {"key": "app.users.v1", "id": 100, "label": "Users", "schema_version": 2,
//!      "schema_fingerprint": "sha256:ab", "declared_by": "my_canister"}
//!   ],
//!   "ranges": [
//!     {"start": 100, "end": 109, "declared_by": "my_canister", "mode": "reserved",
//!      "purpose": "user stores"}
//!   ]
//! }
//! ```
//!
//! `format`, `declarations` and, in each entry, `key`, `id`, `declared_by`
//! (and `start`, `end`, `mode` of a range) are required; every other field
//! may be absent or null. The ledger's own declaration (`ic_memory.ledger.v1`
//! on ID 0) is not listed: every boot adds it, so listing it is a duplicate,
//! as registering it would be. [`DeclarationsFile`] also reads the older
//! snapshot form ([`DeclarationSnapshot::to_json`]).
//!
//! Reading is strict and never panics: the text is parsed into a JSON tree
//! that keeps duplicate fields (serde_json's own recursion limit bounds its
//! depth), then walked by hand, so every refusal is a
//! [`DeclarationsFileError`] naming the field by its path
//! (`declarations[2].id`): unknown and duplicate fields, a wrong format tag,
//! wrong types, and every rule a declaration, a range or a name must meet.
//! Conflicts *between* entries (two declarations on one ID, overlapping
//! ranges, a declaration outside its crate's range) are not the file's
//! business: they are what a boot refuses, and `MemoryRuntime::plan_layout`
//! reports them exactly as the boot would. This module never touches memory
//! or history.

use std::fmt;

use serde::Serialize;
use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

use crate::authority::{MemoryManagerIdRange, MemoryManagerRangeAuthorityError, MemoryManagerRangeMode};
use crate::declaration::{
    AllocationDeclaration, DeclarationSnapshot, DeclarationSnapshotError, SchemaMetadata,
};
use crate::key::StableKey;
use crate::slot::{AllocationSlotDescriptor, is_printable_ascii};

/// The `format` tag of the compact declarations file.
pub const DECLARATIONS_FORMAT: &str = "holdfast-declarations/1";

/// The longest crate name or range purpose, in bytes.
pub const DECLARED_NAME_MAX_LEN: usize = 256;

/// The longest piece of a file quoted back in an error, in characters.
const QUOTE_MAX_CHARS: usize = 64;

/// One declaration and the crate that declared it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeclaredAllocation {
    declaration: AllocationDeclaration,
    declared_by: String,
}

/// One MemoryManager ID range and the crate that owns it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeclaredRange {
    range: MemoryManagerIdRange,
    declared_by: String,
    mode: MemoryManagerRangeMode,
    purpose: Option<String>,
}

/// A build's layout: declarations with their declaring crates, ranges and
/// an optional runtime fingerprint. See the module docs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeclaredLayout {
    runtime_fingerprint: Option<String>,
    declarations: Vec<DeclaredAllocation>,
    ranges: Vec<DeclaredRange>,
}

/// Why a declared entry cannot be built.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DeclaredLayoutError {
    /// A crate name or a range purpose is empty, too long or not printable
    /// ASCII.
    #[error("{what} {name:?} must be 1..=256 bytes of printable ASCII")]
    InvalidName {
        /// `declaring crate` or `purpose`.
        what: &'static str,
        /// The text found (at most 64 characters of it).
        name: String,
    },
    /// The declaration is not on a MemoryManager slot (the file names IDs).
    #[error("{stable_key} is declared on {slot}, not on a MemoryManager ID")]
    NotMemoryManagerSlot {
        /// The key.
        stable_key: StableKey,
        /// Its slot.
        slot: AllocationSlotDescriptor,
    },
}

/// Why a declarations file is refused. Each variant names the field.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DeclarationsFileError {
    /// The text is not JSON.
    #[error("not JSON: {reason}")]
    Json {
        /// serde_json's message, with line and column.
        reason: String,
    },
    /// `format` names a format this version does not read.
    #[error("`format` is {found}; this version reads {DECLARATIONS_FORMAT:?}")]
    UnknownFormat {
        /// The value found, as JSON text (at most 64 characters of it).
        found: String,
    },
    /// A required field is absent.
    #[error("`{field}` is missing")]
    MissingField {
        /// Its path.
        field: String,
    },
    /// A field this format does not have.
    #[error("`{field}` is not a field of this format; the fields here are {expected}")]
    UnknownField {
        /// Its path (the name quoted, at most 64 characters of it).
        field: String,
        /// The fields allowed where it was found.
        expected: &'static str,
    },
    /// A field given twice in one object.
    #[error("`{field}` is given twice")]
    DuplicateField {
        /// Its path.
        field: String,
    },
    /// A field of the wrong type or out of range.
    #[error("`{field}` must be {expected}")]
    InvalidValue {
        /// Its path.
        field: String,
        /// What it must be.
        expected: &'static str,
    },
    /// A declaration breaks a declaration rule (key grammar, label, schema,
    /// the sentinel ID, the runtime fingerprint).
    #[error("`{field}`: {error}")]
    Declaration {
        /// The path of the field at fault.
        field: String,
        /// The rule.
        error: DeclarationSnapshotError,
    },
    /// A range is not a range.
    #[error("`{field}`: {error}")]
    Range {
        /// The range's path.
        field: String,
        /// The rule.
        error: MemoryManagerRangeAuthorityError,
    },
    /// A crate name or purpose breaks its rule.
    #[error("`{field}`: {error}")]
    Entry {
        /// The path of the field at fault.
        field: String,
        /// The rule.
        error: DeclaredLayoutError,
    },
    /// A file in the snapshot form (no `format` field) that is not a valid
    /// snapshot.
    #[error("{0} (read as the snapshot form, since it has no \"format\" field)")]
    Snapshot(DeclarationSnapshotError),
}

fn check_name(what: &'static str, name: &str) -> Result<(), DeclaredLayoutError> {
    if is_printable_ascii(name, DECLARED_NAME_MAX_LEN) {
        Ok(())
    } else {
        Err(DeclaredLayoutError::InvalidName {
            what,
            name: name.chars().take(QUOTE_MAX_CHARS).collect(),
        })
    }
}

impl DeclaredAllocation {
    /// `declaration`, declared by the crate `declared_by`.
    ///
    /// # Errors
    /// [`DeclaredLayoutError::NotMemoryManagerSlot`] for another substrate's
    /// slot; [`DeclaredLayoutError::InvalidName`] for a crate name that is
    /// empty, longer than 256 bytes or not printable ASCII.
    pub fn new(
        declaration: AllocationDeclaration,
        declared_by: impl Into<String>,
    ) -> Result<Self, DeclaredLayoutError> {
        let declared_by = declared_by.into();
        if declaration.slot().memory_manager_id().is_none() {
            return Err(DeclaredLayoutError::NotMemoryManagerSlot {
                stable_key: declaration.stable_key().clone(),
                slot: declaration.slot().clone(),
            });
        }
        check_name("declaring crate", &declared_by)?;
        Ok(Self {
            declaration,
            declared_by,
        })
    }

    /// As [`Self::new`] without the name rule: the static registry accepts
    /// any non-empty crate name, and the default runtime must boot exactly
    /// what was registered.
    pub(crate) fn registered(declaration: AllocationDeclaration, declared_by: String) -> Self {
        Self {
            declaration,
            declared_by,
        }
    }

    /// The declaration.
    pub fn declaration(&self) -> &AllocationDeclaration {
        &self.declaration
    }

    /// The crate that declared it.
    pub fn declared_by(&self) -> &str {
        &self.declared_by
    }
}

impl DeclaredRange {
    /// `range`, owned by the crate `declared_by` in `mode`.
    ///
    /// # Errors
    /// [`DeclaredLayoutError::InvalidName`] for a crate name or purpose that
    /// is empty, longer than 256 bytes or not printable ASCII.
    pub fn new(
        range: MemoryManagerIdRange,
        declared_by: impl Into<String>,
        mode: MemoryManagerRangeMode,
        purpose: Option<String>,
    ) -> Result<Self, DeclaredLayoutError> {
        let declared_by = declared_by.into();
        check_name("declaring crate", &declared_by)?;
        if let Some(purpose) = &purpose {
            check_name("purpose", purpose)?;
        }
        Ok(Self {
            range,
            declared_by,
            mode,
            purpose,
        })
    }

    /// As [`Self::new`] without the name rules (see
    /// [`DeclaredAllocation::registered`]); also the file reader's, which
    /// checks them itself to name the field at fault.
    pub(crate) fn registered(
        range: MemoryManagerIdRange,
        declared_by: String,
        mode: MemoryManagerRangeMode,
        purpose: Option<String>,
    ) -> Self {
        Self {
            range,
            declared_by,
            mode,
            purpose,
        }
    }

    /// The IDs.
    pub fn range(&self) -> MemoryManagerIdRange {
        self.range
    }

    /// The owning crate.
    pub fn declared_by(&self) -> &str {
        &self.declared_by
    }

    /// Who may declare inside it.
    pub fn mode(&self) -> MemoryManagerRangeMode {
        self.mode
    }

    /// Why it exists.
    pub fn purpose(&self) -> Option<&str> {
        self.purpose.as_deref()
    }
}

impl DeclaredLayout {
    /// A layout of `declarations` and `ranges`, in the order given (the
    /// order a boot checks them in), with no runtime fingerprint. Conflicts
    /// between entries are left to the boot.
    pub fn new(declarations: Vec<DeclaredAllocation>, ranges: Vec<DeclaredRange>) -> Self {
        Self {
            runtime_fingerprint: None,
            declarations,
            ranges,
        }
    }

    /// The same layout with a runtime fingerprint (for example a build hash).
    ///
    /// # Errors
    /// [`DeclarationSnapshotError::InvalidRuntimeFingerprint`] for a
    /// fingerprint that is empty, longer than 256 bytes or not printable
    /// ASCII (the snapshot's rule).
    pub fn with_runtime_fingerprint(
        mut self,
        fingerprint: impl Into<String>,
    ) -> Result<Self, DeclarationSnapshotError> {
        let fingerprint = fingerprint.into();
        if !crate::declaration::is_valid_runtime_fingerprint(&fingerprint) {
            return Err(DeclarationSnapshotError::InvalidRuntimeFingerprint);
        }
        self.runtime_fingerprint = Some(fingerprint);
        Ok(self)
    }

    /// The declarations, in order.
    pub fn declarations(&self) -> &[DeclaredAllocation] {
        &self.declarations
    }

    /// The ranges, in order.
    pub fn ranges(&self) -> &[DeclaredRange] {
        &self.ranges
    }

    /// The runtime fingerprint, if any.
    pub fn runtime_fingerprint(&self) -> Option<&str> {
        self.runtime_fingerprint.as_deref()
    }

    /// The layout in the compact file form, pretty-printed; absent optional
    /// fields are left out. [`Self::from_json`] reads it back equal.
    pub fn to_json(&self) -> String {
        let file = FileOut {
            format: DECLARATIONS_FORMAT,
            runtime_fingerprint: self.runtime_fingerprint.as_deref(),
            declarations: self
                .declarations
                .iter()
                .map(|entry| {
                    let declaration = &entry.declaration;
                    DeclarationOut {
                        key: declaration.stable_key().as_str(),
                        id: declaration
                            .slot()
                            .memory_manager_id()
                            .expect("a declared allocation is on a MemoryManager slot"),
                        label: declaration.label(),
                        schema_version: declaration.schema().schema_version(),
                        schema_fingerprint: declaration.schema().schema_fingerprint(),
                        declared_by: &entry.declared_by,
                    }
                })
                .collect(),
            ranges: self
                .ranges
                .iter()
                .map(|range| RangeOut {
                    start: range.range.start(),
                    end: range.range.end(),
                    declared_by: &range.declared_by,
                    mode: mode_name(range.mode),
                    purpose: range.purpose.as_deref(),
                })
                .collect(),
        };
        serde_json::to_string_pretty(&file).expect("the file form has only string keys and plain values")
    }

    /// Reads the compact file form.
    ///
    /// Complexity: linear in the text; the caller bounds its size (the CLI
    /// reads at most 4 MiB).
    ///
    /// # Errors
    /// The first [`DeclarationsFileError`] found, naming its field.
    pub fn from_json(text: &str) -> Result<Self, DeclarationsFileError> {
        let root: Json = serde_json::from_str(text).map_err(|err| DeclarationsFileError::Json {
            reason: err.to_string(),
        })?;
        Self::from_tree(root)
    }

    fn from_tree(root: Json) -> Result<Self, DeclarationsFileError> {
        let mut file = Fields::new(root, "")?;
        match file.take("format") {
            None => return Err(missing("format")),
            Some(Json::String(tag)) if tag == DECLARATIONS_FORMAT => {}
            Some(Json::String(tag)) => {
                return Err(DeclarationsFileError::UnknownFormat { found: quote(&tag) });
            }
            Some(_) => {
                return Err(DeclarationsFileError::InvalidValue {
                    field: "format".into(),
                    expected: "the string \"holdfast-declarations/1\"",
                });
            }
        }
        let runtime_fingerprint = optional_string(file.take("runtime_fingerprint"), "runtime_fingerprint")?;
        let declarations =
            array(file.take("declarations"), "declarations")?.ok_or_else(|| missing("declarations"))?;
        let ranges = array(file.take("ranges"), "ranges")?.unwrap_or_default();
        file.finish("format, runtime_fingerprint, declarations, ranges")?;
        let declarations = declarations
            .into_iter()
            .enumerate()
            .map(|(index, entry)| declaration_from(entry, &format!("declarations[{index}]")))
            .collect::<Result<Vec<_>, _>>()?;
        let ranges = ranges
            .into_iter()
            .enumerate()
            .map(|(index, entry)| range_from(entry, &format!("ranges[{index}]")))
            .collect::<Result<Vec<_>, _>>()?;
        let layout = Self::new(declarations, ranges);
        match runtime_fingerprint {
            None => Ok(layout),
            Some(fingerprint) => layout.with_runtime_fingerprint(fingerprint).map_err(|error| {
                DeclarationsFileError::Declaration {
                    field: "runtime_fingerprint".into(),
                    error,
                }
            }),
        }
    }
}

/// A declarations file in either form `holdfast check` reads.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DeclarationsFile {
    /// The compact form ([`DECLARATIONS_FORMAT`]): declaring crates and
    /// ranges included, so per-crate range ownership is checked too.
    Layout(DeclaredLayout),
    /// The snapshot form ([`DeclarationSnapshot::to_json`]): declarations
    /// only, all counted as the application's.
    Snapshot(DeclarationSnapshot),
}

impl DeclarationsFile {
    /// Reads `text`: a JSON object with a `format` field is the compact form,
    /// anything else the snapshot form.
    ///
    /// # Errors
    /// [`DeclarationsFileError`] for the compact form;
    /// [`DeclarationsFileError::Snapshot`] for the snapshot form.
    pub fn from_json(text: &str) -> Result<Self, DeclarationsFileError> {
        match serde_json::from_str::<Json>(text) {
            Ok(Json::Object(fields)) if fields.iter().any(|(name, _)| name == "format") => {
                DeclaredLayout::from_tree(Json::Object(fields)).map(Self::Layout)
            }
            _ => DeclarationSnapshot::from_json(text)
                .map(Self::Snapshot)
                .map_err(DeclarationsFileError::Snapshot),
        }
    }
}

fn mode_name(mode: MemoryManagerRangeMode) -> &'static str {
    match mode {
        MemoryManagerRangeMode::Reserved => "reserved",
        MemoryManagerRangeMode::Allowed => "allowed",
    }
}

#[derive(Serialize)]
struct FileOut<'a> {
    format: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    runtime_fingerprint: Option<&'a str>,
    declarations: Vec<DeclarationOut<'a>>,
    ranges: Vec<RangeOut<'a>>,
}

#[derive(Serialize)]
struct DeclarationOut<'a> {
    key: &'a str,
    id: u8,
    #[serde(skip_serializing_if = "Option::is_none")]
    label: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    schema_version: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    schema_fingerprint: Option<&'a str>,
    declared_by: &'a str,
}

#[derive(Serialize)]
struct RangeOut<'a> {
    start: u8,
    end: u8,
    declared_by: &'a str,
    mode: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    purpose: Option<&'a str>,
}

fn declaration_from(entry: Json, path: &str) -> Result<DeclaredAllocation, DeclarationsFileError> {
    let mut fields = Fields::new(entry, path)?;
    let field = |name: &str| format!("{path}.{name}");
    let key = required_string(fields.take("key"), &field("key"))?;
    let id = required_integer(fields.take("id"), &field("id"), 255, "an integer 0..=254")?;
    let label = optional_string(fields.take("label"), &field("label"))?;
    let schema_version = match fields.take("schema_version") {
        None | Some(Json::Null) => None,
        Some(Json::Unsigned(version)) => {
            Some(
                u32::try_from(version).map_err(|_| DeclarationsFileError::InvalidValue {
                    field: field("schema_version"),
                    expected: "an integer 1..=4294967295",
                })?,
            )
        }
        Some(_) => {
            return Err(DeclarationsFileError::InvalidValue {
                field: field("schema_version"),
                expected: "an integer 1..=4294967295",
            });
        }
    };
    let schema_fingerprint =
        optional_string(fields.take("schema_fingerprint"), &field("schema_fingerprint"))?;
    let declared_by = required_string(fields.take("declared_by"), &field("declared_by"))?;
    fields.finish("key, id, label, schema_version, schema_fingerprint, declared_by")?;
    let at = |name: &str| {
        let field = field(name);
        move |error| DeclarationsFileError::Declaration { field, error }
    };
    let schema = SchemaMetadata::new(schema_version, schema_fingerprint).map_err(|error| {
        let name = if schema_version == Some(0) {
            "schema_version"
        } else {
            "schema_fingerprint"
        };
        at(name)(error)
    })?;
    let id = u8::try_from(id).expect("required_integer bounds the id by 255");
    let slot = AllocationSlotDescriptor::memory_manager(id).map_err(|error| at("id")(error.into()))?;
    let declaration = AllocationDeclaration::new(key, slot, label, schema).map_err(|error| match error {
        DeclarationSnapshotError::InvalidLabel { .. } => at("label")(error),
        other => at("key")(other),
    })?;
    DeclaredAllocation::new(declaration, declared_by).map_err(|error| DeclarationsFileError::Entry {
        field: field("declared_by"),
        error,
    })
}

fn range_from(entry: Json, path: &str) -> Result<DeclaredRange, DeclarationsFileError> {
    let mut fields = Fields::new(entry, path)?;
    let field = |name: &str| format!("{path}.{name}");
    let start = required_integer(fields.take("start"), &field("start"), 255, "an integer 0..=254")?;
    let end = required_integer(fields.take("end"), &field("end"), 255, "an integer 0..=254")?;
    let declared_by = required_string(fields.take("declared_by"), &field("declared_by"))?;
    let mode = match fields.take("mode") {
        None => return Err(missing(&field("mode"))),
        Some(Json::String(mode)) if mode == "reserved" => MemoryManagerRangeMode::Reserved,
        Some(Json::String(mode)) if mode == "allowed" => MemoryManagerRangeMode::Allowed,
        Some(_) => {
            return Err(DeclarationsFileError::InvalidValue {
                field: field("mode"),
                expected: "\"reserved\" or \"allowed\"",
            });
        }
    };
    let purpose = optional_string(fields.take("purpose"), &field("purpose"))?;
    fields.finish("start, end, declared_by, mode, purpose")?;
    let (start, end) = (
        u8::try_from(start).expect("required_integer bounds start by 255"),
        u8::try_from(end).expect("required_integer bounds end by 255"),
    );
    let range = MemoryManagerIdRange::new(start, end).map_err(|error| DeclarationsFileError::Range {
        field: path.to_owned(),
        error,
    })?;
    let at = |name: &str| {
        let field = field(name);
        move |error| DeclarationsFileError::Entry { field, error }
    };
    check_name("declaring crate", &declared_by).map_err(at("declared_by"))?;
    if let Some(purpose) = &purpose {
        check_name("purpose", purpose).map_err(at("purpose"))?;
    }
    Ok(DeclaredRange::registered(range, declared_by, mode, purpose))
}

fn missing(field: &str) -> DeclarationsFileError {
    DeclarationsFileError::MissingField {
        field: field.to_owned(),
    }
}

/// At most [`QUOTE_MAX_CHARS`] characters of `text`, as a JSON string
/// (escaped, so control characters stay visible).
fn quote(text: &str) -> String {
    let cut: String = text.chars().take(QUOTE_MAX_CHARS).collect();
    let mut quoted = serde_json::to_string(&cut).expect("a string always serializes");
    if cut.len() < text.len() {
        quoted.push('…');
    }
    quoted
}

fn required_string(value: Option<Json>, field: &str) -> Result<String, DeclarationsFileError> {
    optional_string(value, field)?.ok_or_else(|| missing(field))
}

fn optional_string(value: Option<Json>, field: &str) -> Result<Option<String>, DeclarationsFileError> {
    match value {
        None | Some(Json::Null) => Ok(None),
        Some(Json::String(text)) => Ok(Some(text)),
        Some(_) => Err(DeclarationsFileError::InvalidValue {
            field: field.to_owned(),
            expected: "a string",
        }),
    }
}

fn required_integer(
    value: Option<Json>,
    field: &str,
    max: u64,
    expected: &'static str,
) -> Result<u64, DeclarationsFileError> {
    match value {
        None | Some(Json::Null) => Err(missing(field)),
        Some(Json::Unsigned(number)) if number <= max => Ok(number),
        Some(_) => Err(DeclarationsFileError::InvalidValue {
            field: field.to_owned(),
            expected,
        }),
    }
}

fn array(value: Option<Json>, field: &str) -> Result<Option<Vec<Json>>, DeclarationsFileError> {
    match value {
        None => Ok(None),
        Some(Json::Array(items)) => Ok(Some(items)),
        Some(_) => Err(DeclarationsFileError::InvalidValue {
            field: field.to_owned(),
            expected: "an array",
        }),
    }
}

/// The fields of one JSON object, taken one by one; whatever is left at
/// [`Fields::finish`] is unknown.
struct Fields {
    path: String,
    entries: Vec<(String, Json)>,
}

impl Fields {
    /// The object at `path` (empty for the top level), refusing a
    /// non-object and a field given twice.
    fn new(value: Json, path: &str) -> Result<Self, DeclarationsFileError> {
        let Json::Object(entries) = value else {
            return Err(DeclarationsFileError::InvalidValue {
                field: if path.is_empty() {
                    "(the file)".into()
                } else {
                    path.to_owned()
                },
                expected: "a JSON object",
            });
        };
        let fields = Self {
            path: path.to_owned(),
            entries,
        };
        for (index, (name, _)) in fields.entries.iter().enumerate() {
            if fields.entries[..index].iter().any(|(earlier, _)| earlier == name) {
                return Err(DeclarationsFileError::DuplicateField {
                    field: fields.path_of(name),
                });
            }
        }
        Ok(fields)
    }

    /// The path of the field `name`: a plain name as it is, anything else
    /// quoted (escaped and cut short: it is the input's text).
    fn path_of(&self, name: &str) -> String {
        let plain = !name.is_empty()
            && name.len() <= QUOTE_MAX_CHARS
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        let name = if plain { name.to_owned() } else { quote(name) };
        if self.path.is_empty() {
            name
        } else {
            format!("{}.{name}", self.path)
        }
    }

    fn take(&mut self, name: &str) -> Option<Json> {
        let index = self.entries.iter().position(|(field, _)| field == name)?;
        Some(self.entries.swap_remove(index).1)
    }

    fn finish(self, expected: &'static str) -> Result<(), DeclarationsFileError> {
        match self.entries.first() {
            None => Ok(()),
            Some((name, _)) => Err(DeclarationsFileError::UnknownField {
                field: self.path_of(name),
                expected,
            }),
        }
    }
}

/// A JSON value that keeps every field of an object, duplicates included,
/// in file order. Numbers are kept only as far as this format needs them.
enum Json {
    Null,
    Bool,
    Unsigned(u64),
    OtherNumber,
    String(String),
    Array(Vec<Self>),
    Object(Vec<(String, Self)>),
}

impl<'de> Deserialize<'de> for Json {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(JsonVisitor)
    }
}

struct JsonVisitor;

impl<'de> Visitor<'de> for JsonVisitor {
    type Value = Json;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_unit<E: de::Error>(self) -> Result<Json, E> {
        Ok(Json::Null)
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Json, E> {
        Ok(Json::Bool)
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<Json, E> {
        Ok(Json::Unsigned(value))
    }

    fn visit_i64<E: de::Error>(self, value: i64) -> Result<Json, E> {
        Ok(u64::try_from(value).map_or(Json::OtherNumber, Json::Unsigned))
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Json, E> {
        Ok(Json::OtherNumber)
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<Json, E> {
        Ok(Json::String(value.to_owned()))
    }

    fn visit_string<E: de::Error>(self, value: String) -> Result<Json, E> {
        Ok(Json::String(value))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json, A::Error> {
        // No preallocation from a size hint: the length is the input's word.
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Json::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json, A::Error> {
        let mut entries = Vec::new();
        while let Some((name, value)) = map.next_entry::<String, Json>()? {
            entries.push((name, value));
        }
        Ok(Json::Object(entries))
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn layout() -> DeclaredLayout {
        let schema = SchemaMetadata::new(Some(2), Some("sha256:ab".into())).unwrap();
        DeclaredLayout::new(
            vec![
                DeclaredAllocation::new(
                    AllocationDeclaration::memory_manager_with_schema("app.users.v1", 100, "Users", schema)
                        .unwrap(),
                    "my_canister",
                )
                .unwrap(),
                DeclaredAllocation::new(
                    AllocationDeclaration::memory_manager_unlabeled("lib.cache.v1", 120).unwrap(),
                    "cache_lib",
                )
                .unwrap(),
            ],
            vec![
                DeclaredRange::new(
                    MemoryManagerIdRange::new(100, 109).unwrap(),
                    "my_canister",
                    MemoryManagerRangeMode::Reserved,
                    Some("user stores".into()),
                )
                .unwrap(),
                DeclaredRange::new(
                    MemoryManagerIdRange::new(120, 129).unwrap(),
                    "cache_lib",
                    MemoryManagerRangeMode::Allowed,
                    None,
                )
                .unwrap(),
            ],
        )
        .with_runtime_fingerprint("build-7")
        .unwrap()
    }

    #[test]
    fn the_compact_form_is_written_as_documented_and_reads_back_equal() {
        let layout = layout();
        let json = layout.to_json();
        let expected = r#"{
  "format": "holdfast-declarations/1",
  "runtime_fingerprint": "build-7",
  "declarations": [
    {
      "key": "app.users.v1",
      "id": 100,
      "label": "Users",
      "schema_version": 2,
      "schema_fingerprint": "sha256:ab",
      "declared_by": "my_canister"
    },
    {
      "key": "lib.cache.v1",
      "id": 120,
      "declared_by": "cache_lib"
    }
  ],
  "ranges": [
    {
      "start": 100,
      "end": 109,
      "declared_by": "my_canister",
      "mode": "reserved",
      "purpose": "user stores"
    },
    {
      "start": 120,
      "end": 129,
      "declared_by": "cache_lib",
      "mode": "allowed"
    }
  ]
}"#;
        assert_eq!(json, expected);
        assert_eq!(DeclaredLayout::from_json(&json).unwrap(), layout);
        assert_eq!(
            DeclarationsFile::from_json(&json).unwrap(),
            DeclarationsFile::Layout(layout)
        );
    }

    #[test]
    fn nulls_stand_for_absent_optional_fields_and_ranges_may_be_left_out() {
        let text = r#"{"format": "holdfast-declarations/1", "runtime_fingerprint": null,
            "declarations": [{"key": "a.v1", "id": 10, "label": null, "schema_version": null,
                              "schema_fingerprint": null, "declared_by": "c"}]}"#;
        let layout = DeclaredLayout::from_json(text).unwrap();
        assert_eq!(layout.runtime_fingerprint(), None);
        assert!(layout.ranges().is_empty());
        let entry = &layout.declarations()[0];
        assert_eq!(entry.declared_by(), "c");
        assert_eq!(entry.declaration().label(), None);
        assert!(entry.declaration().schema().is_empty());
    }

    #[test]
    fn the_snapshot_form_is_still_read() {
        let snapshot = DeclarationSnapshot::new(vec![
            AllocationDeclaration::memory_manager("app.users.v1", 100, "Users").unwrap(),
        ])
        .unwrap();
        assert_eq!(
            DeclarationsFile::from_json(&snapshot.to_json()).unwrap(),
            DeclarationsFile::Snapshot(snapshot)
        );
        let error = DeclarationsFile::from_json("{ not json").unwrap_err();
        assert!(
            matches!(
                &error,
                DeclarationsFileError::Snapshot(DeclarationSnapshotError::Json(_))
            ),
            "{error:?}"
        );
        assert!(error.to_string().contains("no \"format\" field"), "{error}");
    }

    fn refusal(text: &str) -> DeclarationsFileError {
        let error = DeclaredLayout::from_json(text).unwrap_err();
        assert_eq!(
            DeclarationsFile::from_json(text).unwrap_err(),
            error,
            "both readers agree"
        );
        error
    }

    const ENTRY: &str = r#""key": "app.a.v1", "id": 100, "declared_by": "c""#;

    fn with_entry(entry: &str) -> String {
        format!(r#"{{"format": "holdfast-declarations/1", "declarations": [{{{ENTRY}}}, {{{entry}}}]}}"#)
    }

    #[test]
    fn every_malformed_file_is_refused_with_the_field_it_names() {
        let field = |field: &str| field.to_owned();
        let cases: Vec<(String, DeclarationsFileError)> = vec![
            (
                r#"{"format": "holdfast-declarations/2", "declarations": []}"#.into(),
                DeclarationsFileError::UnknownFormat {
                    found: "\"holdfast-declarations/2\"".into(),
                },
            ),
            (
                r#"{"format": 1, "declarations": []}"#.into(),
                DeclarationsFileError::InvalidValue {
                    field: field("format"),
                    expected: "the string \"holdfast-declarations/1\"",
                },
            ),
            (
                r#"{"format": "holdfast-declarations/1"}"#.into(),
                DeclarationsFileError::MissingField {
                    field: field("declarations"),
                },
            ),
            (
                r#"{"format": "holdfast-declarations/1", "declarations": [], "extra": 1}"#.into(),
                DeclarationsFileError::UnknownField {
                    field: field("extra"),
                    expected: "format, runtime_fingerprint, declarations, ranges",
                },
            ),
            (
                r#"{"format": "holdfast-declarations/1", "declarations": [], "declarations": []}"#.into(),
                DeclarationsFileError::DuplicateField {
                    field: field("declarations"),
                },
            ),
            (
                with_entry(r#""key": "app.b.v1", "id": 101, "lable": "x", "declared_by": "c""#),
                DeclarationsFileError::UnknownField {
                    field: field("declarations[1].lable"),
                    expected: "key, id, label, schema_version, schema_fingerprint, declared_by",
                },
            ),
            (
                with_entry(r#""key": "app.b.v1", "id": 101, "id": 102, "declared_by": "c""#),
                DeclarationsFileError::DuplicateField {
                    field: field("declarations[1].id"),
                },
            ),
            (
                with_entry(r#""key": "app.b.v1", "declared_by": "c""#),
                DeclarationsFileError::MissingField {
                    field: field("declarations[1].id"),
                },
            ),
            (
                with_entry(r#""key": "app.b.v1", "id": 256, "declared_by": "c""#),
                DeclarationsFileError::InvalidValue {
                    field: field("declarations[1].id"),
                    expected: "an integer 0..=254",
                },
            ),
            (
                with_entry(r#""key": "app.b.v1", "id": 10.5, "declared_by": "c""#),
                DeclarationsFileError::InvalidValue {
                    field: field("declarations[1].id"),
                    expected: "an integer 0..=254",
                },
            ),
            (
                with_entry(r#""key": "app.b.v1", "id": -1, "declared_by": "c""#),
                DeclarationsFileError::InvalidValue {
                    field: field("declarations[1].id"),
                    expected: "an integer 0..=254",
                },
            ),
            (
                with_entry(r#""key": "app.b.v1", "id": 101"#),
                DeclarationsFileError::MissingField {
                    field: field("declarations[1].declared_by"),
                },
            ),
            (
                with_entry(r#""key": 7, "id": 101, "declared_by": "c""#),
                DeclarationsFileError::InvalidValue {
                    field: field("declarations[1].key"),
                    expected: "a string",
                },
            ),
            (
                with_entry(
                    r#""key": "app.b.v1", "id": 101, "schema_version": 4294967296, "declared_by": "c""#,
                ),
                DeclarationsFileError::InvalidValue {
                    field: field("declarations[1].schema_version"),
                    expected: "an integer 1..=4294967295",
                },
            ),
            (
                r#"{"format": "holdfast-declarations/1", "declarations": {}}"#.into(),
                DeclarationsFileError::InvalidValue {
                    field: field("declarations"),
                    expected: "an array",
                },
            ),
            (
                r#"{"format": "holdfast-declarations/1", "declarations": [7]}"#.into(),
                DeclarationsFileError::InvalidValue {
                    field: field("declarations[0]"),
                    expected: "a JSON object",
                },
            ),
            (
                r#"["format"]"#.into(),
                DeclarationsFileError::InvalidValue {
                    field: field("(the file)"),
                    expected: "a JSON object",
                },
            ),
        ];
        for (text, expected) in cases {
            let error = DeclaredLayout::from_json(&text).unwrap_err();
            assert_eq!(error, expected, "{text}");
            if text.starts_with('{') {
                assert_eq!(
                    DeclarationsFile::from_json(&text).unwrap_err(),
                    expected,
                    "{text}"
                );
            }
        }
    }

    #[test]
    fn declaration_and_range_rules_are_refused_at_the_field_that_breaks_them() {
        let at = |error: DeclarationsFileError| match error {
            DeclarationsFileError::Declaration { field, error } => (field, error.to_string()),
            DeclarationsFileError::Range { field, error } => (field, error.to_string()),
            DeclarationsFileError::Entry { field, error } => (field, error.to_string()),
            other => panic!("unexpected {other:?}"),
        };
        let (field, message) = at(refusal(&with_entry(
            r#""key": "App.B.v1", "id": 101, "declared_by": "c""#,
        )));
        assert_eq!(field, "declarations[1].key");
        assert!(message.contains("invalid character"), "{message}");
        let (field, message) = at(refusal(&with_entry(
            r#""key": "app.b.v1", "id": 255, "declared_by": "c""#,
        )));
        assert_eq!(field, "declarations[1].id");
        assert!(message.contains("sentinel"), "{message}");
        let (field, _) = at(refusal(&with_entry(
            r#""key": "app.b.v1", "id": 101, "label": "", "declared_by": "c""#,
        )));
        assert_eq!(field, "declarations[1].label");
        let (field, _) = at(refusal(&with_entry(
            r#""key": "app.b.v1", "id": 101, "schema_version": 0, "declared_by": "c""#,
        )));
        assert_eq!(field, "declarations[1].schema_version");
        let (field, _) = at(refusal(&with_entry(
            r#""key": "app.b.v1", "id": 101, "schema_fingerprint": "tab\there", "declared_by": "c""#,
        )));
        assert_eq!(field, "declarations[1].schema_fingerprint");
        let (field, message) = at(refusal(&with_entry(
            r#""key": "app.b.v1", "id": 101, "declared_by": "\u001b[31m""#,
        )));
        assert_eq!(field, "declarations[1].declared_by");
        assert!(
            !message.contains('\u{1b}'),
            "control characters are quoted: {message}"
        );
        let (field, _) = at(refusal(
            r#"{"format": "holdfast-declarations/1", "runtime_fingerprint": "", "declarations": []}"#,
        ));
        assert_eq!(field, "runtime_fingerprint");
        let ranges = |range: &str| {
            format!(r#"{{"format": "holdfast-declarations/1", "declarations": [], "ranges": [{range}]}}"#)
        };
        let (field, message) = at(refusal(&ranges(
            r#"{"start": 20, "end": 10, "declared_by": "c", "mode": "reserved"}"#,
        )));
        assert_eq!(field, "ranges[0]");
        assert!(message.contains("20..=10 is invalid"), "{message}");
        let (field, _) = at(refusal(&ranges(
            r#"{"start": 10, "end": 20, "declared_by": "c", "mode": "reserved", "purpose": ""}"#,
        )));
        assert_eq!(field, "ranges[0].purpose");
        assert_eq!(
            refusal(&ranges(
                r#"{"start": 10, "end": 20, "declared_by": "c", "mode": "Reserved"}"#
            )),
            DeclarationsFileError::InvalidValue {
                field: "ranges[0].mode".into(),
                expected: "\"reserved\" or \"allowed\"",
            }
        );
        assert_eq!(
            refusal(&ranges(r#"{"start": 10, "end": 20, "declared_by": "c"}"#)),
            DeclarationsFileError::MissingField {
                field: "ranges[0].mode".into(),
            }
        );
    }

    #[test]
    fn hostile_names_are_quoted_short_and_escaped_in_errors() {
        let long = "x".repeat(10_000);
        let text = format!(r#"{{"format": "{long}\u001b", "declarations": []}}"#);
        let message = refusal(&text).to_string();
        assert!(message.len() < 200, "{message}");
        assert!(!message.contains('\u{1b}'));
        let text =
            format!(r#"{{"format": "holdfast-declarations/1", "declarations": [], "\u001b[2J{long}": 1}}"#);
        let message = refusal(&text).to_string();
        assert!(message.len() < 300, "{message}");
        assert!(!message.contains('\u{1b}'), "{message}");
        assert!(message.contains("\\u001b[2J"), "{message}");
    }

    #[test]
    fn deep_nesting_and_huge_numbers_are_refused_without_a_panic() {
        let deep = format!(
            r#"{{"format": "holdfast-declarations/1", "declarations": {}{}}}"#,
            "[".repeat(100_000),
            "]".repeat(100_000)
        );
        assert!(matches!(
            DeclarationsFile::from_json(&deep),
            Err(DeclarationsFileError::Snapshot(_) | DeclarationsFileError::Json { .. })
        ));
        assert!(matches!(
            DeclaredLayout::from_json(&deep),
            Err(DeclarationsFileError::Json { reason }) if reason.contains("recursion limit")
        ));
        for id in ["1e400", "18446744073709551616", "1.0", "-1"] {
            let text = with_entry(&format!(r#""key": "app.b.v1", "id": {id}, "declared_by": "c""#));
            let error = DeclaredLayout::from_json(&text).unwrap_err();
            assert!(
                matches!(
                    &error,
                    DeclarationsFileError::InvalidValue { field, .. } if field == "declarations[1].id"
                ) || matches!(&error, DeclarationsFileError::Json { .. }),
                "{id}: {error:?}"
            );
        }
    }

    #[test]
    fn conflicts_between_entries_are_left_to_the_boot() {
        let text = with_entry(r#""key": "app.a.v1", "id": 100, "declared_by": "c""#);
        let layout = DeclaredLayout::from_json(&text).unwrap();
        assert_eq!(layout.declarations().len(), 2);
    }

    #[test]
    fn a_programmatic_entry_must_be_on_a_memory_manager_id_and_name_its_crate() {
        let named = AllocationDeclaration::new(
            "app.a.v1",
            AllocationSlotDescriptor::new(
                crate::slot::AllocationSlot::NamedPartition("p".into()),
                "other",
                1,
            )
            .unwrap(),
            None,
            SchemaMetadata::none(),
        )
        .unwrap();
        assert!(matches!(
            DeclaredAllocation::new(named, "c"),
            Err(DeclaredLayoutError::NotMemoryManagerSlot { .. })
        ));
        let users = AllocationDeclaration::memory_manager("app.a.v1", 100, "A").unwrap();
        assert_eq!(
            DeclaredAllocation::new(users, ""),
            Err(DeclaredLayoutError::InvalidName {
                what: "declaring crate",
                name: String::new(),
            })
        );
    }

    fn arb_name() -> impl Strategy<Value = String> {
        "[a-z][a-z0-9_-]{0,20}"
    }

    fn arb_layout() -> impl Strategy<Value = DeclaredLayout> {
        let declaration = (
            "[a-z][a-z0-9_]{0,8}\\.[a-z][a-z0-9_]{0,8}\\.v[1-9][0-9]{0,2}",
            0u8..=254,
            proptest::option::of("[ -~]{1,40}"),
            proptest::option::of(1u32..),
            proptest::option::of("[!-~]{1,30}"),
            arb_name(),
        )
            .prop_map(|(key, id, label, version, fingerprint, by)| {
                let schema = SchemaMetadata::new(version, fingerprint).unwrap();
                let slot = AllocationSlotDescriptor::memory_manager(id).unwrap();
                DeclaredAllocation::new(AllocationDeclaration::new(key, slot, label, schema).unwrap(), by)
                    .unwrap()
            });
        let range = (
            0u8..=254,
            0u8..=254,
            arb_name(),
            any::<bool>(),
            proptest::option::of("[ -~]{1,40}"),
        )
            .prop_map(|(a, b, by, reserved, purpose)| {
                let mode = if reserved {
                    MemoryManagerRangeMode::Reserved
                } else {
                    MemoryManagerRangeMode::Allowed
                };
                DeclaredRange::new(
                    MemoryManagerIdRange::new(a.min(b), a.max(b)).unwrap(),
                    by,
                    mode,
                    purpose,
                )
                .unwrap()
            });
        (
            proptest::collection::vec(declaration, 0..12),
            proptest::collection::vec(range, 0..6),
            proptest::option::of("[ -~]{1,60}"),
        )
            .prop_map(|(declarations, ranges, fingerprint)| {
                let layout = DeclaredLayout::new(declarations, ranges);
                match fingerprint {
                    Some(f) => layout.with_runtime_fingerprint(f).unwrap(),
                    None => layout,
                }
            })
    }

    proptest! {
        #[test]
        fn every_layout_reads_back_equal(layout in arb_layout()) {
            let json = layout.to_json();
            prop_assert_eq!(DeclaredLayout::from_json(&json).unwrap(), layout.clone());
            prop_assert_eq!(DeclarationsFile::from_json(&json).unwrap(), DeclarationsFile::Layout(layout));
        }

        #[test]
        fn any_edit_of_a_valid_file_is_read_or_refused_without_a_panic(
            layout in arb_layout(),
            cut in any::<prop::sample::Index>(),
            insert in "[\\[\\]{}\",:0-9a-z\\\\ -]{0,6}",
            remove in 0usize..6,
        ) {
            let json = layout.to_json();
            let at = cut.index(json.len() + 1);
            let at = (0..=at).rev().find(|&i| json.is_char_boundary(i)).unwrap_or(0);
            let end = (at + remove..=json.len()).find(|&i| json.is_char_boundary(i)).unwrap_or(json.len());
            let edited = format!("{}{insert}{}", &json[..at], &json[end..]);
            let _ = DeclaredLayout::from_json(&edited);
            let _ = DeclarationsFile::from_json(&edited);
        }
    }
}
