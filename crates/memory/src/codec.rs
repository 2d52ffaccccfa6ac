//! The ledger codec: an [`AllocationLedger`] to and from bytes.
//!
//! The built-in [`CborLedgerCodec`] writes a versioned envelope around compact
//! CBOR: fixed-length arrays instead of field names, byte-minimal integers,
//! text only where the value is text. Decoding is strict: definite lengths
//! only, exact array lengths, no trailing bytes, and every integer, length
//! and count in its shortest form, so the bytes are the canonical encoding of
//! what they decode to (two different byte strings never decode to the same
//! ledger; the fuzzing entry point asserts exactly that). Decoded ledgers pass the same integrity
//! checks as constructed ones. Every list count read from input is bounded by
//! what the input still unread can hold (the count times the smallest
//! encoding of one item), and what is preallocated for a list is capped
//! besides, so arbitrary bytes cannot make the decoder allocate more than a
//! small multiple of their own size. The layout is in docs/FORMAT.md and
//! locked by a golden test below.

use compact_str::CompactString;
use minicbor::data::Type;
use minicbor::{Decoder, Encoder};

use crate::declaration::SchemaMetadata;
use crate::key::{StableKey, StableKeyError};
use crate::ledger::{
    AllocationHistory, AllocationLedger, AllocationRecord, AllocationState, GenerationRecord,
    LedgerIntegrityError, SchemaMetadataRecord,
};
use crate::slot::{AllocationSlot, AllocationSlotDescriptor, AllocationSlotError};

/// The first bytes of every encoded ledger.
pub const LEDGER_ENVELOPE_MAGIC: [u8; 4] = *b"HFLG";
/// The envelope format version this build writes and reads.
pub const LEDGER_ENVELOPE_VERSION: u16 = 1;
/// Envelope: magic (4) + version (2, LE) + CBOR length (4, LE).
pub const LEDGER_ENVELOPE_LEN: usize = 4 + 2 + 4;
/// The largest encoded ledger this build accepts (3 MiB), far above any real
/// history (a record is under 1 KiB, a generation under 300 bytes). With the
/// default bucket size (128 pages, 8 MiB) both commit slots fit in ID 0's
/// first MemoryManager bucket; with smaller buckets ID 0 grows into more,
/// which the commit store handles like any other grow.
pub const MAX_ENCODED_LEDGER_LEN: usize = 3 << 20;

/// The fewest bytes an allocation record that decodes can take: the 8-field
/// array head, the shortest stable key (`a.v1`, 5 bytes with its head), a
/// MemoryManager slot (3) and five one-byte fields (state, first and last
/// generation, no retirement, no label) and an empty schema history (1).
const MIN_ENCODED_RECORD_LEN: usize = 1 + 5 + 3 + 5 + 1;
/// The fewest bytes a generation record takes: its head and five one-byte
/// fields.
const MIN_ENCODED_GENERATION_LEN: usize = 1 + 5;
/// The fewest bytes a schema-history entry takes: its head and three
/// one-byte fields.
const MIN_ENCODED_SCHEMA_ENTRY_LEN: usize = 1 + 3;
/// The most items preallocated for one list, whatever its count claims. A
/// real list longer than this grows as it is decoded, so the memory it takes
/// is paid for by bytes that really decoded; a crafted count over garbage
/// costs at most this many items (a record is about 200 bytes in memory).
const MAX_PREALLOCATED_ITEMS: usize = 1024;

/// Turns ledgers into bytes and back.
pub trait LedgerCodec {
    /// Encodes `ledger`.
    fn encode(&self, ledger: &AllocationLedger) -> Vec<u8>;
    /// Decodes bytes produced by [`Self::encode`], refusing anything else.
    ///
    /// # Errors
    /// A [`LedgerDecodeError`] naming what was found.
    fn decode(&self, bytes: &[u8]) -> Result<AllocationLedger, LedgerDecodeError>;
}

/// The built-in codec (see the module docs and docs/FORMAT.md).
#[derive(Clone, Copy, Debug, Default)]
pub struct CborLedgerCodec;

/// Why bytes are not an encoded ledger.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LedgerDecodeError {
    /// Fewer bytes than the envelope.
    #[error("encoded ledger is {len} bytes, shorter than its {LEDGER_ENVELOPE_LEN}-byte envelope")]
    Truncated {
        /// Bytes found.
        len: usize,
    },
    /// The envelope magic is wrong.
    #[error("encoded ledger starts with {found:02x?}, not the magic {LEDGER_ENVELOPE_MAGIC:02x?}")]
    BadMagic {
        /// The first four bytes.
        found: [u8; 4],
    },
    /// An envelope version this build cannot read.
    #[error(
        "ledger envelope version {found} is not supported (this build reads {supported}); upgrade holdfast"
    )]
    UnsupportedVersion {
        /// Version found.
        found: u16,
        /// Version supported.
        supported: u16,
    },
    /// The envelope length disagrees with the bytes present.
    #[error("ledger envelope declares {declared} bytes of CBOR but {actual} follow")]
    LengthMismatch {
        /// Declared length.
        declared: u32,
        /// Bytes present.
        actual: usize,
    },
    /// The CBOR is malformed or has the wrong shape.
    #[error("ledger CBOR is malformed at byte {position}: {reason}")]
    Malformed {
        /// Offset in the CBOR.
        position: usize,
        /// What was wrong.
        reason: String,
    },
    /// Bytes after the ledger.
    #[error("{count} trailing bytes after the ledger")]
    TrailingBytes {
        /// How many.
        count: usize,
    },
    /// Valid CBOR but not the canonical encoding of its value.
    #[error("ledger CBOR is not in canonical form")]
    NonCanonical,
    /// A stable key in the ledger breaks the grammar.
    #[error("ledger holds an invalid stable key: {0}")]
    InvalidStableKey(#[from] StableKeyError),
    /// A slot in the ledger is unusable.
    #[error("ledger holds an invalid slot: {0}")]
    InvalidSlot(#[from] AllocationSlotError),
    /// Schema metadata in the ledger breaks its rules.
    #[error("ledger holds invalid schema metadata")]
    InvalidSchema,
    /// The decoded ledger breaks an invariant.
    #[error("decoded ledger breaks an invariant: {0}")]
    Integrity(#[from] LedgerIntegrityError),
}

impl LedgerCodec for CborLedgerCodec {
    fn encode(&self, ledger: &AllocationLedger) -> Vec<u8> {
        let history = ledger.allocation_history();
        // Typical sizes (a record ~60 bytes, a generation ~30): one allocation.
        let estimate = 16 + history.records().len() * 96 + history.generations().len() * 40;
        let mut out = Vec::with_capacity(LEDGER_ENVELOPE_LEN + estimate);
        out.extend_from_slice(&LEDGER_ENVELOPE_MAGIC);
        out.extend_from_slice(&LEDGER_ENVELOPE_VERSION.to_le_bytes());
        out.extend_from_slice(&[0; 4]); // the CBOR length, patched below
        let mut e = Encoder::new(out);
        write_ledger(&mut e, ledger).expect("writing to a Vec cannot fail");
        let mut out = e.into_writer();
        let len = u32::try_from(out.len() - LEDGER_ENVELOPE_LEN).expect("a ledger is far below 4 GiB");
        out[6..LEDGER_ENVELOPE_LEN].copy_from_slice(&len.to_le_bytes());
        out
    }

    fn decode(&self, bytes: &[u8]) -> Result<AllocationLedger, LedgerDecodeError> {
        let body = open_envelope(bytes)?;
        let mut d = Reader::new(body);
        let ledger = decode_ledger(&mut d).map_err(|err| err.at(d.position()))?;
        let rest = body.len() - d.position();
        if rest != 0 {
            return Err(LedgerDecodeError::TrailingBytes { count: rest });
        }
        Ok(ledger)
    }
}

fn open_envelope(bytes: &[u8]) -> Result<&[u8], LedgerDecodeError> {
    let Some((header, body)) = bytes.split_at_checked(LEDGER_ENVELOPE_LEN) else {
        return Err(LedgerDecodeError::Truncated { len: bytes.len() });
    };
    let magic: [u8; 4] = header[0..4].try_into().expect("4-byte range");
    if magic != LEDGER_ENVELOPE_MAGIC {
        return Err(LedgerDecodeError::BadMagic { found: magic });
    }
    let version = u16::from_le_bytes(header[4..6].try_into().expect("2-byte range"));
    if version != LEDGER_ENVELOPE_VERSION {
        return Err(LedgerDecodeError::UnsupportedVersion {
            found: version,
            supported: LEDGER_ENVELOPE_VERSION,
        });
    }
    let declared = u32::from_le_bytes(header[6..10].try_into().expect("4-byte range"));
    if declared as usize != body.len() || body.len() > MAX_ENCODED_LEDGER_LEN {
        return Err(LedgerDecodeError::LengthMismatch {
            declared,
            actual: body.len(),
        });
    }
    Ok(body)
}

// ---- encoding -------------------------------------------------------------

const SLOT_MEMORY_MANAGER: u8 = 0;
const SLOT_OTHER_ID: u8 = 1;
const SLOT_NAMED_PARTITION: u8 = 2;
const SLOT_CUSTOM: u8 = 3;

type EncodeResult = Result<(), minicbor::encode::Error<std::convert::Infallible>>;

fn write_ledger(e: &mut Encoder<Vec<u8>>, ledger: &AllocationLedger) -> EncodeResult {
    let history = ledger.allocation_history();
    e.array(5)?
        .u32(ledger.ledger_schema_version())?
        .u32(ledger.physical_format_id())?
        .u64(ledger.current_generation())?;
    e.array(history.records().len() as u64)?;
    for record in history.records() {
        write_record(e, record)?;
    }
    e.array(history.generations().len() as u64)?;
    for generation in history.generations() {
        write_generation(e, generation)?;
    }
    Ok(())
}

fn write_generation(e: &mut Encoder<Vec<u8>>, generation: &GenerationRecord) -> EncodeResult {
    e.array(5)?
        .u64(generation.generation())?
        .u64(generation.parent_generation())?;
    write_opt_str(e, generation.runtime_fingerprint())?;
    e.u32(generation.declaration_count())?;
    write_opt_u64(e, generation.committed_at())?;
    Ok(())
}

fn write_record(e: &mut Encoder<Vec<u8>>, record: &AllocationRecord) -> EncodeResult {
    e.array(8)?.str(record.stable_key().as_str())?;
    write_slot(e, record.slot())?;
    e.u8(record.state().code())?
        .u64(record.first_generation())?
        .u64(record.last_seen_generation())?;
    write_opt_u64(e, record.retired_generation())?;
    write_opt_str(e, record.label())?;
    e.array(record.schema_history().len() as u64)?;
    for entry in record.schema_history() {
        e.array(3)?.u64(entry.generation())?;
        write_opt_u32(e, entry.schema().schema_version())?;
        write_opt_str(e, entry.schema().schema_fingerprint())?;
    }
    Ok(())
}

fn write_slot(e: &mut Encoder<Vec<u8>>, slot: &AllocationSlotDescriptor) -> EncodeResult {
    if let Some(id) = slot.memory_manager_id() {
        e.array(2)?.u8(SLOT_MEMORY_MANAGER)?.u8(id)?;
        return Ok(());
    }
    match slot.slot() {
        AllocationSlot::MemoryManagerId(id) => {
            e.array(4)?.u8(SLOT_OTHER_ID)?;
            e.str(slot.substrate())?.u32(slot.descriptor_version())?.u8(*id)?;
        }
        AllocationSlot::NamedPartition(name) => {
            e.array(4)?.u8(SLOT_NAMED_PARTITION)?;
            e.str(slot.substrate())?
                .u32(slot.descriptor_version())?
                .str(name)?;
        }
        AllocationSlot::Custom { kind, version, value } => {
            e.array(6)?.u8(SLOT_CUSTOM)?;
            e.str(slot.substrate())?.u32(slot.descriptor_version())?;
            e.str(kind)?.u32(*version)?.str(value)?;
        }
    }
    Ok(())
}

fn write_opt_u64(e: &mut Encoder<Vec<u8>>, value: Option<u64>) -> EncodeResult {
    match value {
        Some(v) => e.u64(v)?,
        None => e.null()?,
    };
    Ok(())
}

fn write_opt_u32(e: &mut Encoder<Vec<u8>>, value: Option<u32>) -> EncodeResult {
    write_opt_u64(e, value.map(u64::from))
}

fn write_opt_str(e: &mut Encoder<Vec<u8>>, value: Option<&str>) -> EncodeResult {
    match value {
        Some(v) => e.str(v)?,
        None => e.null()?,
    };
    Ok(())
}

// ---- decoding -------------------------------------------------------------

/// A decode failure before its position is known.
enum Failure {
    Shape(String),
    NonCanonical,
    Typed(LedgerDecodeError),
}

impl Failure {
    fn at(self, position: usize) -> LedgerDecodeError {
        match self {
            Self::Shape(reason) => LedgerDecodeError::Malformed { position, reason },
            Self::NonCanonical => LedgerDecodeError::NonCanonical,
            Self::Typed(err) => err,
        }
    }
}

/// A CBOR reader that accepts only the shortest encoding of every head
/// (integer, length, count), so the canonical form is enforced while
/// decoding: two different byte strings never decode to the same ledger,
/// without the cost of encoding the ledger again to compare.
struct Reader<'b> {
    d: Decoder<'b>,
}

impl<'b> Reader<'b> {
    fn new(bytes: &'b [u8]) -> Self {
        Self {
            d: Decoder::new(bytes),
        }
    }

    fn position(&self) -> usize {
        self.d.position()
    }

    fn remaining(&self) -> usize {
        self.d.input().len() - self.d.position()
    }

    /// Fails unless the item that started at `start` used the shortest head
    /// for `argument`, followed by `payload` bytes.
    fn require_shortest_head(&self, start: usize, argument: u64, payload: usize) -> Result<(), Failure> {
        let head = match argument {
            0..=23 => 1,
            24..=0xff => 2,
            0x100..=0xffff => 3,
            0x1_0000..=0xffff_ffff => 5,
            _ => 9,
        };
        if self.d.position() - start == head + payload {
            Ok(())
        } else {
            Err(Failure::NonCanonical)
        }
    }

    fn u64(&mut self) -> Result<u64, Failure> {
        let start = self.d.position();
        let value = self.d.u64()?;
        self.require_shortest_head(start, value, 0)?;
        Ok(value)
    }

    fn u32(&mut self) -> Result<u32, Failure> {
        let value = self.u64()?;
        u32::try_from(value).map_err(|_| Failure::Shape(format!("{value} does not fit in 32 bits")))
    }

    fn u8(&mut self) -> Result<u8, Failure> {
        let value = self.u64()?;
        u8::try_from(value).map_err(|_| Failure::Shape(format!("{value} does not fit in 8 bits")))
    }

    fn str(&mut self) -> Result<&'b str, Failure> {
        let start = self.d.position();
        let text = self.d.str()?;
        self.require_shortest_head(start, text.len() as u64, text.len())?;
        Ok(text)
    }

    fn array(&mut self) -> Result<Option<u64>, Failure> {
        let start = self.d.position();
        let count = self.d.array()?;
        if let Some(count) = count {
            self.require_shortest_head(start, count, 0)?;
        }
        Ok(count)
    }

    fn is_null(&mut self) -> Result<bool, Failure> {
        if self.d.datatype()? == Type::Null {
            self.d.null()?;
            return Ok(true);
        }
        Ok(false)
    }
}

impl From<minicbor::decode::Error> for Failure {
    fn from(err: minicbor::decode::Error) -> Self {
        Self::Shape(err.to_string())
    }
}

fn typed<T: Into<LedgerDecodeError>>(err: T) -> Failure {
    Failure::Typed(err.into())
}

/// Reads a definite array header of exactly `expected` items.
fn fixed_array(d: &mut Reader<'_>, expected: u64, what: &str) -> Result<(), Failure> {
    match d.array()? {
        Some(found) if found == expected => Ok(()),
        Some(found) => Err(Failure::Shape(format!(
            "{what} has {found} fields, expected {expected}"
        ))),
        None => Err(Failure::Shape(format!("{what} uses an indefinite length"))),
    }
}

/// A list's count and what may be preallocated for it.
struct ListHead {
    count: usize,
    capacity: usize,
}

/// Reads a definite array header whose items each take at least
/// `min_item_len` bytes, and refuses a count the bytes left cannot hold. The
/// capacity is the count capped at [`MAX_PREALLOCATED_ITEMS`].
fn bounded_array(d: &mut Reader<'_>, min_item_len: usize, what: &str) -> Result<ListHead, Failure> {
    let Some(count) = d.array()? else {
        return Err(Failure::Shape(format!("{what} uses an indefinite length")));
    };
    let remaining = d.remaining();
    let fits = (remaining / min_item_len) as u64;
    if count > fits {
        return Err(Failure::Shape(format!(
            "{what} claims {count} items of at least {min_item_len} bytes with {remaining} bytes left"
        )));
    }
    let count = usize::try_from(count).expect("bounded by a slice length");
    Ok(ListHead {
        count,
        capacity: count.min(MAX_PREALLOCATED_ITEMS),
    })
}

fn opt_u64(d: &mut Reader<'_>) -> Result<Option<u64>, Failure> {
    Ok(if d.is_null()? { None } else { Some(d.u64()?) })
}

fn opt_u32(d: &mut Reader<'_>) -> Result<Option<u32>, Failure> {
    Ok(if d.is_null()? { None } else { Some(d.u32()?) })
}

fn opt_compact(d: &mut Reader<'_>) -> Result<Option<CompactString>, Failure> {
    Ok(if d.is_null()? {
        None
    } else {
        Some(CompactString::new(d.str()?))
    })
}

fn opt_string(d: &mut Reader<'_>) -> Result<Option<String>, Failure> {
    Ok(if d.is_null()? {
        None
    } else {
        Some(d.str()?.to_owned())
    })
}

fn decode_ledger(d: &mut Reader<'_>) -> Result<AllocationLedger, Failure> {
    fixed_array(d, 5, "ledger")?;
    let schema_version = d.u32()?;
    let physical_format_id = d.u32()?;
    let current_generation = d.u64()?;
    let list = bounded_array(d, MIN_ENCODED_RECORD_LEN, "record list")?;
    let mut records = Vec::with_capacity(list.capacity);
    for _ in 0..list.count {
        records.push(decode_record(d)?);
    }
    let list = bounded_array(d, MIN_ENCODED_GENERATION_LEN, "generation list")?;
    let mut generations = Vec::with_capacity(list.capacity);
    for _ in 0..list.count {
        fixed_array(d, 5, "generation record")?;
        let generation = d.u64()?;
        let parent = d.u64()?;
        let fingerprint = opt_compact(d)?;
        let declaration_count = d.u32()?;
        let committed_at = opt_u64(d)?;
        generations.push(GenerationRecord::with_compact_fingerprint(
            generation,
            parent,
            fingerprint,
            declaration_count,
            committed_at,
        ));
    }
    AllocationLedger::new_committed(
        schema_version,
        physical_format_id,
        current_generation,
        AllocationHistory::new(records, generations),
    )
    .map_err(typed)
}

fn decode_record(d: &mut Reader<'_>) -> Result<AllocationRecord, Failure> {
    fixed_array(d, 8, "allocation record")?;
    let key = StableKey::parse(d.str()?).map_err(typed)?;
    let slot = decode_slot(d)?;
    let code = d.u8()?;
    let state = AllocationState::from_code(code)
        .ok_or_else(|| Failure::Shape(format!("allocation state {code} is unknown")))?;
    let first = d.u64()?;
    let last_seen = d.u64()?;
    let retired = opt_u64(d)?;
    let label = opt_compact(d)?;
    let list = bounded_array(d, MIN_ENCODED_SCHEMA_ENTRY_LEN, "schema history")?;
    let mut schema_history = Vec::with_capacity(list.capacity);
    for _ in 0..list.count {
        fixed_array(d, 3, "schema entry")?;
        let generation = d.u64()?;
        let version = opt_u32(d)?;
        let fingerprint = opt_string(d)?;
        let schema =
            SchemaMetadata::new(version, fingerprint).map_err(|_| typed(LedgerDecodeError::InvalidSchema))?;
        schema_history.push(SchemaMetadataRecord::new(generation, schema));
    }
    AllocationRecord::with_compact_label(
        key,
        slot,
        state,
        [first, last_seen],
        retired,
        label,
        schema_history,
    )
    .map_err(typed)
}

fn decode_slot(d: &mut Reader<'_>) -> Result<AllocationSlotDescriptor, Failure> {
    let len = d.array()?;
    let tag = d.u8()?;
    let expected = match tag {
        SLOT_MEMORY_MANAGER => 2,
        SLOT_OTHER_ID | SLOT_NAMED_PARTITION => 4,
        SLOT_CUSTOM => 6,
        other => return Err(Failure::Shape(format!("slot kind {other} is unknown"))),
    };
    if len != Some(expected) {
        return Err(Failure::Shape(format!(
            "slot kind {tag} has {len:?} fields, expected {expected}"
        )));
    }
    if tag == SLOT_MEMORY_MANAGER {
        return AllocationSlotDescriptor::memory_manager(d.u8()?).map_err(typed);
    }
    let substrate = d.str()?.to_owned();
    let version = d.u32()?;
    let slot = match tag {
        SLOT_OTHER_ID => AllocationSlot::MemoryManagerId(d.u8()?),
        SLOT_NAMED_PARTITION => AllocationSlot::NamedPartition(d.str()?.to_owned()),
        _ => AllocationSlot::Custom {
            kind: d.str()?.to_owned(),
            version: d.u32()?,
            value: d.str()?.to_owned(),
        },
    };
    let descriptor = AllocationSlotDescriptor::new(slot, substrate, version).map_err(typed)?;
    if descriptor.is_standard_memory_manager() {
        // The standard MemoryManager slot has exactly one encoding (kind 0).
        return Err(typed(LedgerDecodeError::NonCanonical));
    }
    Ok(descriptor)
}

/// Entry points for fuzzers and property tests.
#[doc(hidden)]
pub mod fuzzing {
    use super::{CborLedgerCodec, LedgerCodec};

    /// Decodes arbitrary bytes; when they decode, asserts they are exactly
    /// the encoding of what they decoded to.
    pub fn decode_ledger_bytes(bytes: &[u8]) {
        let codec = CborLedgerCodec;
        if let Ok(ledger) = codec.decode(bytes) {
            assert_eq!(
                codec.encode(&ledger),
                bytes,
                "decoded bytes must re-encode identically"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::declaration::{AllocationDeclaration, DeclarationSnapshot};
    use crate::validate::{AcceptAllPolicy, validate_allocations};

    /// The ledger of docs/FORMAT.md: one boot declaring the ledger's own
    /// store and `app.users.v1` on ID 100, committed at time 7.
    fn fixture_ledger() -> AllocationLedger {
        let snapshot = DeclarationSnapshot::new(vec![
            AllocationDeclaration::memory_manager("ic_memory.ledger.v1", 0, "MemoryLayoutLedger").unwrap(),
            AllocationDeclaration::memory_manager("app.users.v1", 100, "Users").unwrap(),
        ])
        .unwrap()
        .with_runtime_fingerprint("b1")
        .unwrap();
        let genesis = AllocationLedger::genesis();
        let validated = validate_allocations(&genesis, snapshot, &AcceptAllPolicy).unwrap();
        genesis.stage_validated_generation(&validated, Some(7)).unwrap()
    }

    /// The exact bytes documented in docs/FORMAT.md. If this changes, the
    /// format changed: bump `LEDGER_ENVELOPE_VERSION` and keep a reader for
    /// the old bytes instead of editing this constant.
    const FIXTURE_HEX: &str = "48464c47 0100 5b000000 \
        85 01 01 01 \
        82 \
        88 73 69635f6d656d6f72792e6c65646765722e7631 82 00 00 01 01 01 f6 72 4d656d6f72794c61796f75744c6564676572 80 \
        88 6c 6170702e75736572732e7631 82 00 1864 01 01 01 f6 65 5573657273 80 \
        81 85 01 00 62 6231 02 07";

    fn fixture_bytes() -> Vec<u8> {
        let hex: String = FIXTURE_HEX.chars().filter(|c| !c.is_whitespace()).collect();
        (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn encoding_of_the_documented_ledger_is_locked() {
        let bytes = CborLedgerCodec.encode(&fixture_ledger());
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(bytes, fixture_bytes(), "encoding changed; got {hex}");
        assert_eq!(CborLedgerCodec.decode(&bytes).unwrap(), fixture_ledger());
    }

    fn encoded<T>(write: impl FnOnce(&mut Encoder<Vec<u8>>, &T) -> EncodeResult, item: &T) -> Vec<u8> {
        let mut e = Encoder::new(Vec::new());
        write(&mut e, item).unwrap();
        e.into_writer()
    }

    /// The list bounds refuse a count the bytes left cannot hold; they are
    /// only sound if nothing that decodes is shorter than they assume.
    #[test]
    fn the_smallest_items_encode_to_exactly_the_lengths_the_list_bounds_assume() {
        // "a.v1" is the shortest key: a version segment and one before it.
        for shorter in ["a.v", "v1", ".v1", "av1"] {
            assert!(StableKey::parse(shorter).is_err(), "{shorter} parses");
        }
        let record = |last_seen, schema_history| {
            AllocationRecord::new(
                StableKey::parse("a.v1").unwrap(),
                AllocationSlotDescriptor::memory_manager(10).unwrap(),
                AllocationState::Active,
                1,
                last_seen,
                None,
                None,
                schema_history,
            )
            .unwrap()
        };
        assert_eq!(
            encoded(write_record, &record(1, vec![])).len(),
            MIN_ENCODED_RECORD_LEN
        );
        // An empty schema is the smallest entry; a history cannot start
        // with one, so it follows a version-1 entry of the same size.
        let version_1 = SchemaMetadataRecord::new(1, SchemaMetadata::new(Some(1), None).unwrap());
        let empty_schema = SchemaMetadataRecord::new(2, SchemaMetadata::new(None, None).unwrap());
        assert_eq!(
            encoded(write_record, &record(2, vec![version_1, empty_schema])).len(),
            MIN_ENCODED_RECORD_LEN + 2 * MIN_ENCODED_SCHEMA_ENTRY_LEN
        );
        let generation = GenerationRecord::new(1, 0, None, 0, None);
        assert_eq!(
            encoded(write_generation, &generation).len(),
            MIN_ENCODED_GENERATION_LEN
        );
    }

    #[test]
    fn a_list_count_the_bytes_left_cannot_hold_is_refused_before_anything_is_reserved() {
        // Ledger header, then a record list claiming 2 records with 29 bytes
        // left: two smallest records need 30.
        let mut cbor = vec![0x85, 0x01, 0x01, 0x00, 0x82];
        cbor.resize(5 + 2 * MIN_ENCODED_RECORD_LEN - 1, 0xf6);
        let mut bytes = LEDGER_ENVELOPE_MAGIC.to_vec();
        bytes.extend_from_slice(&LEDGER_ENVELOPE_VERSION.to_le_bytes());
        bytes.extend_from_slice(&(cbor.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&cbor);
        assert_eq!(
            CborLedgerCodec.decode(&bytes),
            Err(LedgerDecodeError::Malformed {
                position: 5,
                reason: "record list claims 2 items of at least 15 bytes with 29 bytes left".into()
            })
        );
    }

    #[test]
    fn non_canonical_trailing_or_truncated_bytes_are_refused() {
        let good = fixture_bytes();
        let mut trailing = good.clone();
        trailing.push(0);
        assert!(matches!(
            CborLedgerCodec.decode(&trailing),
            Err(LedgerDecodeError::LengthMismatch { .. })
        ));
        // Same value, non-minimal integer: schema version 1 as 0x18 0x01.
        let mut wide = good.clone();
        wide.splice(11..12, [0x18, 0x01]);
        let len = (wide.len() - LEDGER_ENVELOPE_LEN) as u32;
        wide[6..10].copy_from_slice(&len.to_le_bytes());
        assert_eq!(
            CborLedgerCodec.decode(&wide),
            Err(LedgerDecodeError::NonCanonical)
        );
        assert!(matches!(
            CborLedgerCodec.decode(&good[..5]),
            Err(LedgerDecodeError::Truncated { len: 5 })
        ));
        let mut version = good.clone();
        version[4] = 2;
        assert_eq!(
            CborLedgerCodec.decode(&version),
            Err(LedgerDecodeError::UnsupportedVersion {
                found: 2,
                supported: 1
            })
        );
    }
}
