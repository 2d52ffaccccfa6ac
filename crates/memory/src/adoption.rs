//! Adopting an ic-memory 0.5 ledger: recognising the ledger that ic-memory
//! 0.5.x keeps at MemoryManager ID 0, converting it to an [`AllocationLedger`],
//! and moving ID 0 over to holdfast's commit store without a moment in which
//! neither ledger is readable.
//!
//! This module owns the bytes ic-memory wrote (an ic-stable-structures `Cell`
//! whose value is ic-memory's `StableCellLedgerRecord`, CBOR written by
//! serde), the marker that says they were adopted, and the offset of the
//! holdfast store that follows them. It decodes untrusted bytes with a bounded
//! decoder: every length is checked against the bytes that remain before
//! anything is allocated, and every failure is a typed [`AdoptionError`],
//! never a panic. A decoded ledger is converted record for record, state for
//! state, generation for generation and schema entry for schema entry; the
//! result must pass holdfast's own integrity checks, or it is refused. Reading
//! never writes. The only writes (`adopt`) happen after a boot or an
//! operator action was accepted, and they never touch a byte of the `Cell`
//! except its first, which is flipped last (docs/FORMAT.md, "Adopting an
//! ic-memory 0.5 ledger", has the byte layout and the crash table).
//!
//! ```text
//! ID 0 of an ic-memory 0.5 image (ic-stable-structures Cell, layout v1):
//! 0    magic "SCL"                           3 bytes   <- IC_MEMORY_CELL_MAGIC
//! 3    Cell layout version (1)               1 byte    <- IC_MEMORY_CELL_VERSION
//! 4    value length L                        u32 LE
//! 8    value: StableCellLedgerRecord, CBOR   L bytes   <- IC_MEMORY_CELL_HEADER_LEN
//!
//! ID 0 after adoption:
//! 0    ADOPTED_MARKER (0xAD)                 1 byte    (was 'S')
//! 1    "CL", version 1, L                    7 bytes   (untouched)
//! 8    the old value                         L bytes   (untouched, never read again)
//! F    holdfast ledger store (physical.rs)             F = align_up(8 + L, 64 KiB)
//! ```

use std::hash::Hasher;

use fnv::FnvHasher;
use ic_stable_structures::Memory;
use minicbor::Decoder;
use minicbor::data::Type;
use serde::Serialize;

use crate::codec::{LedgerCodec, MAX_ENCODED_LEDGER_LEN};
use crate::declaration::SchemaMetadata;
use crate::image::WASM_PAGE_SIZE;
use crate::key::{StableKey, StableKeyError};
use crate::ledger::{
    AllocationHistory, AllocationLedger, AllocationRecord, AllocationState, CURRENT_LEDGER_SCHEMA_VERSION,
    CURRENT_PHYSICAL_FORMAT_ID, GenerationRecord, LedgerIntegrityError, SchemaMetadataRecord,
};
use crate::physical::{LedgerCommitError, LedgerCommitStore};
use crate::slot::{AllocationSlotDescriptor, MEMORY_MANAGER_DESCRIPTOR_VERSION, MEMORY_MANAGER_SUBSTRATE};

/// The magic of an ic-stable-structures `Cell`.
pub const IC_MEMORY_CELL_MAGIC: [u8; 3] = *b"SCL";
/// The `Cell` layout version ic-memory 0.5 writes (and the only one read).
pub const IC_MEMORY_CELL_VERSION: u8 = 1;
/// Size of the `Cell` header; the value follows it.
pub const IC_MEMORY_CELL_HEADER_LEN: u64 = 8;
/// What byte 0 of ID 0 becomes once the ledger was adopted. Seven bits away
/// from the `'S'` it replaces, so no single flipped bit turns one into the
/// other.
pub const ADOPTED_MARKER: u8 = 0xAD;
const _: () = {
    assert!((ADOPTED_MARKER ^ IC_MEMORY_CELL_MAGIC[0]).count_ones() >= 2);
    assert!(ADOPTED_MARKER != crate::physical::STORE_MAGIC[0]);
};
/// The largest `Cell` value read (64 MiB). ic-memory's ledger grows by about
/// 700 bytes per boot (both slots), so this is tens of thousands of boots;
/// beyond it the image is refused rather than read into memory.
pub const MAX_IC_MEMORY_CELL_VALUE_LEN: u32 = 64 << 20;
/// The commit marker ic-memory 0.5 writes into every slot ("ICMEMCOM").
pub const IC_MEMORY_COMMIT_MARKER: u64 = 0x4943_4D45_4D43_4F4D;
/// The ledger schema version and physical format id ic-memory 0.5 writes.
pub const IC_MEMORY_LEDGER_FORMAT: (u32, u32) = (1, 1);

/// Why an ic-memory ledger at ID 0 cannot be adopted. Nothing was written.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AdoptionError {
    /// ID 0 holds a `Cell` of a layout version ic-memory 0.5 does not write.
    #[error("ID 0 holds an ic-stable-structures Cell of layout version {found}; only version 1 is adopted")]
    UnsupportedCellVersion {
        /// The version found.
        found: u8,
    },
    /// The `Cell` header claims more bytes than ID 0 holds.
    #[error(
        "the ic-memory Cell at ID 0 claims a {value_len}-byte value, but ID 0 holds only {memory_bytes} bytes"
    )]
    CellBeyondMemory {
        /// The value length in the header.
        value_len: u32,
        /// Size of ID 0.
        memory_bytes: u64,
    },
    /// The `Cell` value is larger than this build reads.
    #[error(
        "the ic-memory Cell at ID 0 holds a {value_len}-byte value, above the {MAX_IC_MEMORY_CELL_VALUE_LEN}-byte limit"
    )]
    CellTooLarge {
        /// The value length in the header.
        value_len: u32,
    },
    /// The `Cell` value is not the CBOR of ic-memory's `StableCellLedgerRecord`.
    #[error("the ic-memory Cell value is malformed at byte {position}: {reason}")]
    MalformedCell {
        /// Offset in the value.
        position: usize,
        /// What was wrong.
        reason: String,
    },
    /// The authoritative slot's payload is not the CBOR of an ic-memory ledger.
    #[error("the ic-memory ledger in slot {slot} is malformed at byte {position}: {reason}")]
    MalformedLedger {
        /// Which slot.
        slot: usize,
        /// Offset in the payload.
        position: usize,
        /// What was wrong.
        reason: String,
    },
    /// A present slot whose commit marker or checksum is wrong. ic-memory
    /// would fall back to the other slot; holdfast never falls back past a
    /// commit that may have completed.
    #[error(
        "ic-memory commit slot {slot} (generation {generation}) fails its commit marker or checksum; \
         refusing to fall back to the other slot"
    )]
    SlotDoesNotValidate {
        /// Which slot.
        slot: usize,
        /// The generation it claims.
        generation: u64,
    },
    /// Both slots claim one generation with different bytes.
    #[error("both ic-memory commit slots claim generation {generation} with different contents")]
    AmbiguousSlots {
        /// The generation.
        generation: u64,
    },
    /// A slot's generation differs from its ledger's.
    #[error(
        "ic-memory commit slot {slot} is generation {physical_generation} but holds a ledger at generation \
         {logical_generation}"
    )]
    GenerationMismatch {
        /// Which slot.
        slot: usize,
        /// Generation of the slot.
        physical_generation: u64,
        /// Generation of the ledger in it.
        logical_generation: u64,
    },
    /// A ledger schema version or physical format other than ic-memory 0.5's.
    #[error(
        "the ic-memory ledger has schema version {ledger_schema_version} and physical format \
         {physical_format_id}; only 1 and 1 (ic-memory 0.5) are adopted"
    )]
    UnsupportedLedgerFormat {
        /// Schema version found.
        ledger_schema_version: u32,
        /// Physical format found.
        physical_format_id: u32,
    },
    /// A record's stable key breaks the grammar.
    #[error("the ic-memory ledger holds an invalid stable key: {0}")]
    InvalidStableKey(StableKeyError),
    /// A record on a slot this crate cannot govern (not a MemoryManager ID
    /// of the standard substrate and descriptor version).
    #[error("ic-memory record {stable_key} is on {slot}, not a MemoryManager ID; it cannot be adopted")]
    UnsupportedSlot {
        /// The record's key.
        stable_key: StableKey,
        /// The slot, described.
        slot: String,
    },
    /// A record with no schema history (ic-memory always writes one entry
    /// when it first records a key).
    #[error("ic-memory record {stable_key} has no schema history")]
    EmptySchemaHistory {
        /// The record's key.
        stable_key: StableKey,
    },
    /// A schema history that does not start at the record's first
    /// generation (ic-memory records the first generation's schema, empty
    /// or not, when it first records a key).
    #[error(
        "ic-memory record {stable_key} (first generation {first_generation}) has a schema history starting at \
         generation {generation}"
    )]
    SchemaHistoryStart {
        /// The record's key.
        stable_key: StableKey,
        /// The record's first generation.
        first_generation: u64,
        /// The first entry's generation.
        generation: u64,
    },
    /// A schema history whose generations do not strictly increase, or
    /// with an entry equal to the one before (ic-memory adds an entry only
    /// when the schema changed).
    #[error(
        "ic-memory record {stable_key} has a schema history out of order or repeating itself at generation {generation}"
    )]
    SchemaHistoryOrder {
        /// The record's key.
        stable_key: StableKey,
        /// The generation of the offending entry.
        generation: u64,
    },
    /// A schema-history entry with invalid metadata.
    #[error("ic-memory record {stable_key} has invalid schema metadata at generation {generation}")]
    InvalidSchema {
        /// The record's key.
        stable_key: StableKey,
        /// The entry's generation.
        generation: u64,
    },
    /// A generation record whose runtime fingerprint is empty, too long or
    /// not printable ASCII.
    #[error("ic-memory generation {generation} has an invalid runtime fingerprint")]
    InvalidRuntimeFingerprint {
        /// The generation.
        generation: u64,
    },
    /// A generation record without a parent other than the first.
    #[error("ic-memory generation {generation} records no parent generation")]
    MissingParentGeneration {
        /// The generation.
        generation: u64,
    },
    /// The converted ledger breaks one of holdfast's invariants: no runtime
    /// could have written it (or ic-memory accepted a history holdfast
    /// refuses, such as a retired governance record).
    #[error("the converted ic-memory ledger breaks an invariant: {0}")]
    Integrity(LedgerIntegrityError),
    /// A holdfast store already sits past the `Cell` and holds a newer
    /// generation than the `Cell`: the adopted marker at byte 0 was damaged
    /// back into a `Cell` magic. Adopting again would roll history back.
    #[error(
        "ID 0 holds an ic-memory ledger at generation {cell_generation}, but the holdfast store that adopted \
         it already committed generation {store_generation} (byte 0 was damaged?); refusing to roll history back"
    )]
    ForwardedStoreAhead {
        /// Generation of the `Cell`.
        cell_generation: u64,
        /// Generation of the store past it.
        store_generation: u64,
    },
    /// ID 0 says its ledger was adopted, but no store lies past the `Cell`.
    #[error(
        "ID 0 is marked as an adopted ic-memory ledger, but no holdfast store lies at offset {forward_offset} \
         (ID 0 is {memory_bytes} bytes)"
    )]
    ForwardedStoreMissing {
        /// Where the store should start.
        forward_offset: u64,
        /// Size of ID 0.
        memory_bytes: u64,
    },
}

/// The header of the `Cell` at ID 0 (adopted or not).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct IcMemoryCellHeader {
    value_len: u32,
}

impl IcMemoryCellHeader {
    /// Length of the `Cell` value.
    pub fn value_len(&self) -> u32 {
        self.value_len
    }

    /// Where the holdfast store starts in ID 0: the first page boundary at
    /// or after the `Cell`'s last byte. Derived from the header alone, so
    /// recovery finds the store again from the bytes that adoption leaves
    /// untouched.
    pub fn forward_offset(&self) -> u64 {
        (IC_MEMORY_CELL_HEADER_LEN + u64::from(self.value_len)).next_multiple_of(WASM_PAGE_SIZE)
    }
}

/// One of ic-memory's two commit slots, as decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum IcMemorySlot {
    /// No generation was ever written to it.
    Absent,
    /// Marker and checksum correct.
    Valid {
        /// Its generation.
        generation: u64,
        /// Length of its ledger payload.
        payload_bytes: u64,
    },
}

/// An ic-memory ledger, decoded and converted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct IcMemoryLedger {
    slots: [IcMemorySlot; 2],
    authoritative_slot: Option<usize>,
    ledger: AllocationLedger,
}

impl IcMemoryLedger {
    /// Both commit slots.
    pub fn slots(&self) -> &[IcMemorySlot; 2] {
        &self.slots
    }
    /// The slot recovery uses; None when neither was ever written (ic-memory
    /// then starts from genesis, and so does adoption).
    pub fn authoritative_slot(&self) -> Option<usize> {
        self.authoritative_slot
    }
    /// The converted ledger: every record, state, generation and schema
    /// entry of the ic-memory ledger (see docs/FORMAT.md for the mapping).
    pub fn ledger(&self) -> &AllocationLedger {
        &self.ledger
    }
    /// The ledger, taken.
    pub fn into_ledger(self) -> AllocationLedger {
        self.ledger
    }
}

/// What ID 0 holds, judged by its first eight bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LedgerLocation {
    /// holdfast's own store at offset 0, or nothing yet, or foreign bytes:
    /// the commit store classifies them.
    Native,
    /// An ic-memory `Cell`, not adopted yet.
    IcMemoryCell(IcMemoryCellHeader),
    /// An adopted `Cell`; the store lies past it.
    Adopted(IcMemoryCellHeader),
}

/// Whether `first_bytes` (at least four) begin an ic-memory `Cell`,
/// adopted or not, of any layout version.
pub(crate) fn is_ic_memory_cell(first_bytes: &[u8]) -> bool {
    first_bytes
        .first()
        .is_some_and(|&first| first == IC_MEMORY_CELL_MAGIC[0] || first == ADOPTED_MARKER)
        && first_bytes.get(1..3) == Some(&IC_MEMORY_CELL_MAGIC[1..])
}

/// Classifies ID 0 by its first eight bytes. Never writes.
///
/// # Errors
/// [`AdoptionError::UnsupportedCellVersion`],
/// [`AdoptionError::CellBeyondMemory`] for a `Cell` (adopted or not) that
/// cannot be what ic-memory wrote.
pub(crate) fn locate_ledger<M: Memory>(memory: &M) -> Result<LedgerLocation, AdoptionError> {
    let memory_bytes = memory.size().saturating_mul(WASM_PAGE_SIZE);
    if memory_bytes < IC_MEMORY_CELL_HEADER_LEN {
        return Ok(LedgerLocation::Native);
    }
    let mut header = [0u8; IC_MEMORY_CELL_HEADER_LEN as usize];
    memory.read(0, &mut header);
    if !is_ic_memory_cell(&header) {
        return Ok(LedgerLocation::Native);
    }
    let adopted = header[0] == ADOPTED_MARKER;
    if header[3] != IC_MEMORY_CELL_VERSION {
        return Err(AdoptionError::UnsupportedCellVersion { found: header[3] });
    }
    let value_len = u32::from_le_bytes(header[4..8].try_into().expect("4-byte range"));
    if IC_MEMORY_CELL_HEADER_LEN + u64::from(value_len) > memory_bytes {
        return Err(AdoptionError::CellBeyondMemory {
            value_len,
            memory_bytes,
        });
    }
    let header = IcMemoryCellHeader { value_len };
    Ok(if adopted {
        LedgerLocation::Adopted(header)
    } else {
        LedgerLocation::IcMemoryCell(header)
    })
}

/// What an accepted boot over an ic-memory ledger does first (see the
/// module docs). Shown by `plan`, `check` and `inspect`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct IcMemoryAdoption {
    /// The generation of the ic-memory ledger, which the converted ledger
    /// keeps.
    pub generation: u64,
    /// Length of the `Cell` value at ID 0.
    pub cell_value_bytes: u32,
    /// Where in ID 0 the holdfast store will start.
    pub forward_offset: u64,
}

impl std::fmt::Display for IcMemoryAdoption {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "adopts an ic-memory 0.5 ledger at generation {} (its holdfast store will start at byte {} of ID 0)",
            self.generation, self.forward_offset
        )
    }
}

/// For an ic-memory `Cell` at ID 0: the ledger it holds, converted, and what
/// adopting it would write; None for holdfast's own store. For an adopted
/// `Cell`, checks that its store exists. Never writes.
///
/// # Errors
/// Every [`AdoptionError`] of reading and converting the `Cell`,
/// [`AdoptionError::ForwardedStoreAhead`] and
/// [`AdoptionError::ForwardedStoreMissing`].
pub(crate) fn read_ic_memory_ledger<M: Memory, C: LedgerCodec>(
    store: &LedgerCommitStore<ForwardedMemory<M>>,
    location: LedgerLocation,
    codec: &C,
) -> Result<Option<(IcMemoryAdoption, AllocationLedger)>, AdoptionError> {
    match location {
        LedgerLocation::Native => Ok(None),
        LedgerLocation::Adopted(header) => {
            if store.memory().size() == 0 {
                return Err(AdoptionError::ForwardedStoreMissing {
                    forward_offset: header.forward_offset(),
                    memory_bytes: store.memory().inner().size().saturating_mul(WASM_PAGE_SIZE),
                });
            }
            Ok(None)
        }
        LedgerLocation::IcMemoryCell(header) => {
            let ic_memory = read_cell(store.memory().inner(), header)?;
            check_not_adopted_already(store, codec, &ic_memory)?;
            let adoption = IcMemoryAdoption {
                generation: ic_memory.ledger.current_generation(),
                cell_value_bytes: header.value_len,
                forward_offset: header.forward_offset(),
            };
            Ok(Some((adoption, ic_memory.ledger)))
        }
    }
}

/// Reads and converts the `Cell` value under `header`. Never writes.
///
/// Complexity: reads the value once; O(value bytes).
///
/// # Errors
/// [`AdoptionError::CellTooLarge`] and every decoding and conversion error
/// of [`decode_ic_memory_cell_value`].
pub(crate) fn read_cell<M: Memory>(
    memory: &M,
    header: IcMemoryCellHeader,
) -> Result<IcMemoryLedger, AdoptionError> {
    if header.value_len > MAX_IC_MEMORY_CELL_VALUE_LEN {
        return Err(AdoptionError::CellTooLarge {
            value_len: header.value_len,
        });
    }
    let mut value = vec![0u8; header.value_len as usize];
    memory.read(IC_MEMORY_CELL_HEADER_LEN, &mut value);
    decode_ic_memory_cell_value(&value)
}

/// Decodes the value of ic-memory's `Cell` (its `StableCellLedgerRecord`),
/// selects the authoritative slot as ic-memory does (the higher valid
/// generation; equal generations must hold equal bytes) and converts its
/// ledger. Unlike ic-memory, a present slot that fails its marker or
/// checksum is refused instead of skipped.
///
/// # Errors
/// An [`AdoptionError`] naming what is wrong; never panics, whatever the
/// bytes.
pub fn decode_ic_memory_cell_value(value: &[u8]) -> Result<IcMemoryLedger, AdoptionError> {
    let mut cbor = Cbor::new(value, None);
    let [slot0, slot1] = read_record(&mut cbor)?;
    cbor.finish()?;
    let mut slots = [IcMemorySlot::Absent; 2];
    for (index, slot) in [&slot0, &slot1].into_iter().enumerate() {
        if let Some(slot) = slot {
            if !slot.validates() {
                return Err(AdoptionError::SlotDoesNotValidate {
                    slot: index,
                    generation: slot.generation,
                });
            }
            slots[index] = IcMemorySlot::Valid {
                generation: slot.generation,
                payload_bytes: slot.payload.len() as u64,
            };
        }
    }
    let authoritative = match (&slot0, &slot1) {
        (None, None) => None,
        (Some(_), None) => Some(0),
        (None, Some(_)) => Some(1),
        (Some(left), Some(right)) if left.generation == right.generation => {
            if left.payload != right.payload {
                return Err(AdoptionError::AmbiguousSlots {
                    generation: left.generation,
                });
            }
            Some(0)
        }
        (Some(left), Some(right)) => Some(if right.generation > left.generation { 1 } else { 0 }),
    };
    let Some(index) = authoritative else {
        return Ok(IcMemoryLedger {
            slots,
            authoritative_slot: None,
            ledger: AllocationLedger::genesis(),
        });
    };
    let slot = [&slot0, &slot1][index]
        .as_ref()
        .expect("the authoritative slot is present");
    let ledger = read_ledger(&slot.payload, index, slot.generation)?;
    Ok(IcMemoryLedger {
        slots,
        authoritative_slot: Some(index),
        ledger,
    })
}

/// ID 0 seen from `offset_pages` on: the memory a forwarded commit store
/// lives in. With offset 0 it is ID 0 itself (holdfast's own store).
///
/// Growing grows ID 0 (first up to the offset, then by what was asked);
/// reads and writes are shifted by the offset. PRECONDITION of reads and
/// writes, as for any `Memory`: within [`Memory::size`].
#[derive(Clone)]
pub(crate) struct ForwardedMemory<M: Memory> {
    inner: M,
    offset_pages: u64,
}

impl<M: Memory> ForwardedMemory<M> {
    /// `inner` from `offset_pages` on.
    pub(crate) fn new(inner: M, offset_pages: u64) -> Self {
        Self { inner, offset_pages }
    }

    /// The whole of ID 0.
    pub(crate) fn inner(&self) -> &M {
        &self.inner
    }

    fn offset_bytes(&self) -> u64 {
        self.offset_pages * WASM_PAGE_SIZE
    }
}

impl<M: Memory> Memory for ForwardedMemory<M> {
    fn size(&self) -> u64 {
        self.inner.size().saturating_sub(self.offset_pages)
    }

    fn grow(&self, pages: u64) -> i64 {
        let inner = self.inner.size();
        let before = inner.saturating_sub(self.offset_pages);
        let Some(more) = self.offset_pages.saturating_sub(inner).checked_add(pages) else {
            return -1;
        };
        if self.inner.grow(more) < 0 {
            return -1;
        }
        i64::try_from(before).unwrap_or(i64::MAX)
    }

    fn read(&self, offset: u64, dst: &mut [u8]) {
        self.inner.read(self.offset_bytes() + offset, dst);
    }

    fn write(&self, offset: u64, src: &[u8]) {
        self.inner.write(self.offset_bytes() + offset, src);
    }
}

/// The commit store for what ID 0 holds: at offset 0 for holdfast's own
/// store, past the `Cell` for an ic-memory ledger (adopted or about to be).
pub(crate) fn ledger_store<M: Memory>(
    id0: M,
    location: LedgerLocation,
) -> LedgerCommitStore<ForwardedMemory<M>> {
    let offset_pages = match location {
        LedgerLocation::Native => 0,
        LedgerLocation::IcMemoryCell(header) | LedgerLocation::Adopted(header) => {
            header.forward_offset() / WASM_PAGE_SIZE
        }
    };
    LedgerCommitStore::new(ForwardedMemory::new(id0, offset_pages))
}

/// Refuses a `Cell` that a holdfast store past it has already moved beyond
/// (see [`AdoptionError::ForwardedStoreAhead`]). A store there that does
/// not recover, or holds the `Cell`'s generation or an older one, is the
/// trace of an adoption cut short before its last byte and is rewritten by
/// the next adoption.
///
/// # Errors
/// [`AdoptionError::ForwardedStoreAhead`].
fn check_not_adopted_already<M: Memory, C: LedgerCodec>(
    store: &LedgerCommitStore<ForwardedMemory<M>>,
    codec: &C,
    ic_memory: &IcMemoryLedger,
) -> Result<(), AdoptionError> {
    let cell_generation = ic_memory.ledger.current_generation();
    if store.memory().size() == 0 {
        return Ok(());
    }
    match store.recover(codec) {
        Ok(Some(ledger)) if ledger.current_generation() > cell_generation => {
            Err(AdoptionError::ForwardedStoreAhead {
                cell_generation,
                store_generation: ledger.current_generation(),
            })
        }
        _ => Ok(()),
    }
}

/// Adopts the ic-memory ledger: writes a complete holdfast store holding
/// `converted` past the `Cell` (growing ID 0 first), then flips byte 0 of
/// ID 0 to [`ADOPTED_MARKER`]. Until that one byte lands, recovery still
/// reads the untouched `Cell` and adopts it again; after it, recovery reads
/// the store, and `next` (the action's own generation, committed by the
/// caller afterwards) goes on top of it. PRECONDITION: `store` is
/// [`ledger_store`] of an [`LedgerLocation::IcMemoryCell`], `converted` is
/// its converted ledger, and the action that writes was accepted.
///
/// # Errors
/// [`LedgerCommitError::Integrity`] or [`LedgerCommitError::LedgerTooLarge`]
/// for `converted` or `next` (checked before anything is written, so a
/// commit refused for them writes nothing), or
/// [`LedgerCommitError::GrowFailed`]; the `Cell` is untouched on every
/// error.
pub(crate) fn adopt<M: Memory, C: LedgerCodec>(
    store: &mut LedgerCommitStore<ForwardedMemory<M>>,
    codec: &C,
    converted: &AllocationLedger,
    next: Option<&AllocationLedger>,
) -> Result<(), LedgerCommitError> {
    if let Some(next) = next {
        next.check_integrity().map_err(LedgerCommitError::Integrity)?;
        let len = codec.encode(next).len();
        if len > MAX_ENCODED_LEDGER_LEN {
            return Err(LedgerCommitError::LedgerTooLarge { len });
        }
    }
    store.write_unpublished_store(codec, converted)?;
    store.memory().inner().write(0, &[ADOPTED_MARKER]);
    Ok(())
}

/// One decoded commit slot of ic-memory's `DualCommitStore`.
struct RawSlot {
    generation: u64,
    commit_marker: u64,
    checksum: u64,
    payload: Vec<u8>,
}

impl RawSlot {
    /// ic-memory's slot check: its marker, and FNV-1a (64-bit) over the
    /// generation, the marker and the payload length (each u64 LE) and then
    /// the payload.
    fn validates(&self) -> bool {
        let mut hash = FnvHasher::default();
        hash.write(&self.generation.to_le_bytes());
        hash.write(&self.commit_marker.to_le_bytes());
        hash.write(&(self.payload.len() as u64).to_le_bytes());
        hash.write(&self.payload);
        self.commit_marker == IC_MEMORY_COMMIT_MARKER && self.checksum == hash.finish()
    }
}

/// `{"store": {"physical": {"slot0": slot / null, "slot1": slot / null}}}`
fn read_record(cbor: &mut Cbor<'_>) -> Result<[Option<RawSlot>; 2], AdoptionError> {
    cbor.fields("StableCellLedgerRecord", ["store"], |cbor, _| {
        cbor.fields("LedgerCommitStore", ["physical"], |cbor, _| {
            let mut slots = [None, None];
            cbor.fields("DualCommitStore", ["slot0", "slot1"], |cbor, index| {
                slots[index] = match cbor.is_null()? {
                    true => None,
                    false => Some(read_slot(cbor)?),
                };
                Ok(())
            })?;
            Ok(slots)
        })
    })
}

fn read_slot(cbor: &mut Cbor<'_>) -> Result<RawSlot, AdoptionError> {
    let (mut generation, mut commit_marker, mut checksum, mut payload) = (0, 0, 0, Vec::new());
    cbor.fields(
        "CommittedGenerationBytes",
        ["generation", "commit_marker", "checksum", "payload"],
        |cbor, index| {
            match index {
                0 => generation = cbor.u64()?,
                1 => commit_marker = cbor.u64()?,
                2 => checksum = cbor.u64()?,
                _ => payload = cbor.byte_array()?,
            }
            Ok(())
        },
    )?;
    Ok(RawSlot {
        generation,
        commit_marker,
        checksum,
        payload,
    })
}

/// Decodes and converts the ledger in `payload` of slot `slot`, which claims
/// `physical_generation`.
fn read_ledger(
    payload: &[u8],
    slot: usize,
    physical_generation: u64,
) -> Result<AllocationLedger, AdoptionError> {
    let mut cbor = Cbor::new(payload, Some(slot));
    let (mut format, mut current_generation) = ((0, 0), 0);
    let mut history = (Vec::new(), Vec::new());
    cbor.fields(
        "AllocationLedger",
        [
            "ledger_schema_version",
            "physical_format_id",
            "current_generation",
            "allocation_history",
        ],
        |cbor, index| {
            match index {
                0 => format.0 = cbor.u32()?,
                1 => format.1 = cbor.u32()?,
                2 => current_generation = cbor.u64()?,
                _ => history = read_history(cbor)?,
            }
            Ok(())
        },
    )?;
    cbor.finish()?;
    if format != IC_MEMORY_LEDGER_FORMAT {
        return Err(AdoptionError::UnsupportedLedgerFormat {
            ledger_schema_version: format.0,
            physical_format_id: format.1,
        });
    }
    if current_generation != physical_generation {
        return Err(AdoptionError::GenerationMismatch {
            slot,
            physical_generation,
            logical_generation: current_generation,
        });
    }
    let (records, generations) = history;
    let records = records
        .into_iter()
        .map(convert_record)
        .collect::<Result<Vec<_>, _>>()?;
    let generations = generations
        .into_iter()
        .map(convert_generation)
        .collect::<Result<Vec<_>, _>>()?;
    let history = AllocationHistory::new(records, generations);
    // The formats are ic-memory 0.5's, whose numbers holdfast's format 1 has
    // the same meaning for: the converted ledger is written in holdfast's.
    debug_assert_eq!(
        IC_MEMORY_LEDGER_FORMAT,
        (CURRENT_LEDGER_SCHEMA_VERSION, CURRENT_PHYSICAL_FORMAT_ID)
    );
    AllocationLedger::new(current_generation, history).map_err(AdoptionError::Integrity)
}

/// A record as ic-memory stores it, before conversion.
struct RawRecord {
    stable_key: String,
    slot: RawSlotDescriptor,
    state: AllocationState,
    first_generation: u64,
    last_seen_generation: u64,
    retired_generation: Option<u64>,
    schema_history: Vec<(u64, Option<u32>, Option<String>)>,
}

/// A generation record as ic-memory stores it.
struct RawGeneration {
    generation: u64,
    parent_generation: Option<u64>,
    runtime_fingerprint: Option<String>,
    declaration_count: u32,
    committed_at: Option<u64>,
}

/// ic-memory's `AllocationSlotDescriptor`: the slot variant and, for a
/// MemoryManager ID, whether substrate and version are the standard ones.
enum RawSlotDescriptor {
    MemoryManager { id: u8, standard: bool },
    Other(String),
}

type RawHistory = (Vec<RawRecord>, Vec<RawGeneration>);

fn read_history(cbor: &mut Cbor<'_>) -> Result<RawHistory, AdoptionError> {
    let mut history = (Vec::new(), Vec::new());
    cbor.fields("AllocationHistory", ["records", "generations"], |cbor, index| {
        let len = cbor.array_len("records or generations")?;
        if index == 0 {
            history.0 = cbor.bounded_vec(len, read_raw_record)?;
        } else {
            history.1 = cbor.bounded_vec(len, read_raw_generation)?;
        }
        Ok(())
    })?;
    Ok(history)
}

fn read_raw_record(cbor: &mut Cbor<'_>) -> Result<RawRecord, AdoptionError> {
    let mut record = RawRecord {
        stable_key: String::new(),
        slot: RawSlotDescriptor::Other(String::new()),
        state: AllocationState::Active,
        first_generation: 0,
        last_seen_generation: 0,
        retired_generation: None,
        schema_history: Vec::new(),
    };
    cbor.fields(
        "AllocationRecord",
        [
            "stable_key",
            "slot",
            "state",
            "first_generation",
            "last_seen_generation",
            "retired_generation",
            "schema_history",
        ],
        |cbor, index| {
            match index {
                0 => record.stable_key = cbor.text()?.to_owned(),
                1 => record.slot = read_slot_descriptor(cbor)?,
                2 => {
                    record.state = match cbor.text()? {
                        "Reserved" => AllocationState::Reserved,
                        "Active" => AllocationState::Active,
                        "Retired" => AllocationState::Retired,
                        other => return Err(cbor.fail(format!("unknown allocation state {}", shown(other)))),
                    }
                }
                3 => record.first_generation = cbor.u64()?,
                4 => record.last_seen_generation = cbor.u64()?,
                5 => record.retired_generation = cbor.optional(Cbor::u64)?,
                _ => {
                    let len = cbor.array_len("schema_history")?;
                    record.schema_history = cbor.bounded_vec(len, read_schema_entry)?;
                }
            }
            Ok(())
        },
    )?;
    Ok(record)
}

fn read_schema_entry(cbor: &mut Cbor<'_>) -> Result<(u64, Option<u32>, Option<String>), AdoptionError> {
    let mut entry = (0, None, None);
    cbor.fields("SchemaMetadataRecord", ["generation", "schema"], |cbor, index| {
        if index == 0 {
            entry.0 = cbor.u64()?;
            return Ok(());
        }
        cbor.fields(
            "SchemaMetadata",
            ["schema_version", "schema_fingerprint"],
            |cbor, index| {
                if index == 0 {
                    entry.1 = cbor.optional(Cbor::u32)?;
                } else {
                    entry.2 = cbor.optional(|cbor| cbor.text().map(str::to_owned))?;
                }
                Ok(())
            },
        )
    })?;
    Ok(entry)
}

/// `{"slot": {"MemoryManagerId": id} / {"NamedPartition": text} /
/// {"Custom": {"kind", "version", "value": [bytes]}}, "substrate": text,
/// "descriptor_version": uint}`
fn read_slot_descriptor(cbor: &mut Cbor<'_>) -> Result<RawSlotDescriptor, AdoptionError> {
    enum Slot {
        MemoryManager(u8),
        Other(String),
    }
    let (mut slot, mut substrate, mut version) = (Slot::Other(String::new()), String::new(), 0);
    cbor.fields(
        "AllocationSlotDescriptor",
        ["slot", "substrate", "descriptor_version"],
        |cbor, index| {
            match index {
                0 => {
                    cbor.map_len(1, "AllocationSlot")?;
                    slot = match cbor.text()? {
                        "MemoryManagerId" => Slot::MemoryManager(cbor.u8()?),
                        "NamedPartition" => Slot::Other(format!("named partition {}", shown(cbor.text()?))),
                        "Custom" => {
                            let mut kind = String::new();
                            cbor.fields("Custom", ["kind", "version", "value"], |cbor, index| {
                                match index {
                                    0 => kind = shown(cbor.text()?),
                                    1 => {
                                        cbor.u32()?;
                                    }
                                    _ => {
                                        cbor.byte_array()?;
                                    }
                                }
                                Ok(())
                            })?;
                            Slot::Other(format!("custom slot of kind {kind}"))
                        }
                        other => return Err(cbor.fail(format!("unknown slot kind {}", shown(other)))),
                    };
                }
                1 => substrate = cbor.text()?.to_owned(),
                _ => version = cbor.u32()?,
            }
            Ok(())
        },
    )?;
    Ok(match slot {
        Slot::MemoryManager(id) => RawSlotDescriptor::MemoryManager {
            id,
            standard: substrate == MEMORY_MANAGER_SUBSTRATE && version == MEMORY_MANAGER_DESCRIPTOR_VERSION,
        },
        Slot::Other(description) => RawSlotDescriptor::Other(description),
    })
}

fn read_raw_generation(cbor: &mut Cbor<'_>) -> Result<RawGeneration, AdoptionError> {
    let mut generation = RawGeneration {
        generation: 0,
        parent_generation: None,
        runtime_fingerprint: None,
        declaration_count: 0,
        committed_at: None,
    };
    cbor.fields(
        "GenerationRecord",
        [
            "generation",
            "parent_generation",
            "runtime_fingerprint",
            "declaration_count",
            "committed_at",
        ],
        |cbor, index| {
            match index {
                0 => generation.generation = cbor.u64()?,
                1 => generation.parent_generation = cbor.optional(Cbor::u64)?,
                2 => generation.runtime_fingerprint = cbor.optional(|cbor| cbor.text().map(str::to_owned))?,
                3 => generation.declaration_count = cbor.u32()?,
                _ => generation.committed_at = cbor.optional(Cbor::u64)?,
            }
            Ok(())
        },
    )?;
    Ok(generation)
}

/// One ic-memory record as a holdfast record. ic-memory records no label
/// (the converted record has none until a boot declares one), and it opens
/// every schema history with the schema of the key's first generation even
/// when that schema is empty; holdfast records "no schema" as an empty
/// history, so a leading empty entry is the same fact and is not copied.
fn convert_record(raw: RawRecord) -> Result<AllocationRecord, AdoptionError> {
    let stable_key = StableKey::parse(&raw.stable_key).map_err(AdoptionError::InvalidStableKey)?;
    let slot = match raw.slot {
        RawSlotDescriptor::MemoryManager { id, standard: true } => {
            AllocationSlotDescriptor::memory_manager(id).ok()
        }
        RawSlotDescriptor::MemoryManager { .. } | RawSlotDescriptor::Other(_) => None,
    };
    let Some(slot) = slot else {
        let slot = match raw.slot {
            RawSlotDescriptor::MemoryManager { id, .. } => {
                format!("MemoryManager ID {id} of a non-standard substrate or descriptor version")
            }
            RawSlotDescriptor::Other(description) => description,
        };
        return Err(AdoptionError::UnsupportedSlot { stable_key, slot });
    };
    let Some(&(start, ..)) = raw.schema_history.first() else {
        return Err(AdoptionError::EmptySchemaHistory { stable_key });
    };
    if start != raw.first_generation {
        return Err(AdoptionError::SchemaHistoryStart {
            stable_key,
            first_generation: raw.first_generation,
            generation: start,
        });
    }
    let mut schema_history: Vec<SchemaMetadataRecord> = Vec::with_capacity(raw.schema_history.len());
    let mut previous: Option<(u64, SchemaMetadata)> = None;
    for (generation, version, fingerprint) in raw.schema_history {
        let schema = SchemaMetadata::new(version, fingerprint).map_err(|_| AdoptionError::InvalidSchema {
            stable_key: stable_key.clone(),
            generation,
        })?;
        if let Some((before, before_schema)) = &previous
            && (generation <= *before || schema == *before_schema)
        {
            return Err(AdoptionError::SchemaHistoryOrder {
                stable_key,
                generation,
            });
        }
        // The leading entry with an empty schema is not copied (see above).
        if previous.is_some() || !schema.is_empty() {
            schema_history.push(SchemaMetadataRecord::new(generation, schema.clone()));
        }
        previous = Some((generation, schema));
    }
    AllocationRecord::new(
        stable_key,
        slot,
        raw.state,
        raw.first_generation,
        raw.last_seen_generation,
        raw.retired_generation,
        None,
        schema_history,
    )
    .map_err(AdoptionError::Integrity)
}

/// One ic-memory generation record as a holdfast one. ic-memory may leave
/// the first generation's parent unrecorded; holdfast records it as 0, the
/// only parent generation 1 can have.
fn convert_generation(raw: RawGeneration) -> Result<GenerationRecord, AdoptionError> {
    let parent = match raw.parent_generation {
        Some(parent) => parent,
        None if raw.generation == 1 => 0,
        None => {
            return Err(AdoptionError::MissingParentGeneration {
                generation: raw.generation,
            });
        }
    };
    if let Some(fingerprint) = &raw.runtime_fingerprint
        && !crate::declaration::is_valid_runtime_fingerprint(fingerprint)
    {
        return Err(AdoptionError::InvalidRuntimeFingerprint {
            generation: raw.generation,
        });
    }
    Ok(GenerationRecord::new(
        raw.generation,
        parent,
        raw.runtime_fingerprint,
        raw.declaration_count,
        raw.committed_at,
    ))
}

/// Text from the input, shortened and escaped for an error message (it may
/// hold control characters that must not reach a terminal).
fn shown(text: &str) -> String {
    const SHOWN: usize = 40;
    match text.char_indices().nth(SHOWN) {
        Some((end, _)) => format!("{:?}…", &text[..end]),
        None => format!("{text:?}"),
    }
}

/// The bounded reader every decode above goes through: CBOR of serde's
/// default shape (structs as maps keyed by field name, definite lengths).
/// Every count read from the input is checked against the bytes that remain
/// before anything is allocated for it.
struct Cbor<'b> {
    decoder: Decoder<'b>,
    /// The slot whose payload is read; None for the `Cell` value itself.
    slot: Option<usize>,
}

impl<'b> Cbor<'b> {
    fn new(bytes: &'b [u8], slot: Option<usize>) -> Self {
        Self {
            decoder: Decoder::new(bytes),
            slot,
        }
    }

    fn fail(&self, reason: impl Into<String>) -> AdoptionError {
        let position = self.decoder.position();
        let reason = reason.into();
        match self.slot {
            None => AdoptionError::MalformedCell { position, reason },
            Some(slot) => AdoptionError::MalformedLedger {
                slot,
                position,
                reason,
            },
        }
    }

    fn cbor_error(&self, error: &minicbor::decode::Error) -> AdoptionError {
        self.fail(error.to_string())
    }

    fn remaining(&self) -> usize {
        self.decoder.input().len() - self.decoder.position()
    }

    fn finish(&self) -> Result<(), AdoptionError> {
        match self.remaining() {
            0 => Ok(()),
            count => Err(self.fail(format!("{count} trailing bytes"))),
        }
    }

    fn u8(&mut self) -> Result<u8, AdoptionError> {
        self.decoder.u8().map_err(|e| self.cbor_error(&e))
    }

    fn u32(&mut self) -> Result<u32, AdoptionError> {
        self.decoder.u32().map_err(|e| self.cbor_error(&e))
    }

    fn u64(&mut self) -> Result<u64, AdoptionError> {
        self.decoder.u64().map_err(|e| self.cbor_error(&e))
    }

    fn text(&mut self) -> Result<&'b str, AdoptionError> {
        self.decoder.str().map_err(|e| self.cbor_error(&e))
    }

    fn is_null(&mut self) -> Result<bool, AdoptionError> {
        let null = self.decoder.datatype().map_err(|e| self.cbor_error(&e))? == Type::Null;
        if null {
            self.decoder.null().map_err(|e| self.cbor_error(&e))?;
        }
        Ok(null)
    }

    fn optional<T>(
        &mut self,
        read: impl FnOnce(&mut Self) -> Result<T, AdoptionError>,
    ) -> Result<Option<T>, AdoptionError> {
        if self.is_null()? {
            Ok(None)
        } else {
            read(self).map(Some)
        }
    }

    /// A definite array header whose items (at least one byte each) fit in
    /// the bytes that remain.
    fn array_len(&mut self, what: &str) -> Result<usize, AdoptionError> {
        match self.decoder.array().map_err(|e| self.cbor_error(&e))? {
            None => Err(self.fail(format!("{what} has an indefinite length"))),
            Some(len) => match usize::try_from(len) {
                Ok(len) if len <= self.remaining() => Ok(len),
                _ => Err(self.fail(format!(
                    "{what} claims {len} items but only {} bytes remain",
                    self.remaining()
                ))),
            },
        }
    }

    /// A definite map header of exactly `len` entries.
    fn map_len(&mut self, len: u64, what: &str) -> Result<(), AdoptionError> {
        match self.decoder.map().map_err(|e| self.cbor_error(&e))? {
            Some(found) if found == len => Ok(()),
            Some(found) => Err(self.fail(format!("{what} has {found} fields, not {len}"))),
            None => Err(self.fail(format!("{what} has an indefinite length"))),
        }
    }

    /// `len` items read by `item`; `len` was bounded by [`Self::array_len`],
    /// so the capacity asked for is at most the input's length in items.
    fn bounded_vec<T>(
        &mut self,
        len: usize,
        mut item: impl FnMut(&mut Self) -> Result<T, AdoptionError>,
    ) -> Result<Vec<T>, AdoptionError> {
        let mut items = Vec::with_capacity(len);
        for _ in 0..len {
            items.push(item(self)?);
        }
        Ok(items)
    }

    /// A `Vec<u8>` as serde writes it: an array of unsigned integers.
    fn byte_array(&mut self) -> Result<Vec<u8>, AdoptionError> {
        let len = self.array_len("a byte array")?;
        let mut bytes = Vec::with_capacity(len);
        let input = self.decoder.input();
        let mut position = self.decoder.position();
        for _ in 0..len {
            // The two encodings serde writes for a byte, read directly;
            // anything else goes through the decoder (and its errors).
            match (input.get(position), input.get(position + 1)) {
                (Some(&byte), _) if byte < 0x18 => {
                    bytes.push(byte);
                    position += 1;
                }
                (Some(0x18), Some(&byte)) => {
                    bytes.push(byte);
                    position += 2;
                }
                _ => {
                    self.decoder.set_position(position);
                    bytes.push(self.u8()?);
                    position = self.decoder.position();
                }
            }
        }
        self.decoder.set_position(position);
        Ok(bytes)
    }

    /// A struct as serde writes it: a map of exactly `N` entries keyed by
    /// the field names, accepted in any order, each exactly once (unknown
    /// fields are refused). `field` reads the value of field `index`.
    fn fields<const N: usize, T: Default>(
        &mut self,
        what: &str,
        names: [&str; N],
        mut field: impl FnMut(&mut Self, usize) -> Result<T, AdoptionError>,
    ) -> Result<T, AdoptionError> {
        self.map_len(N as u64, what)?;
        let mut seen = [false; N];
        let mut last = T::default();
        for _ in 0..N {
            let name = self.text()?;
            let Some(index) = names.iter().position(|known| *known == name) else {
                return Err(self.fail(format!("{what} has an unknown field {}", shown(name))));
            };
            if std::mem::replace(&mut seen[index], true) {
                return Err(self.fail(format!("{what} has the field {name} twice")));
            }
            last = field(self, index)?;
        }
        Ok(last)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_forward_offset_is_the_first_page_boundary_after_the_cell() {
        let offset = |value_len| IcMemoryCellHeader { value_len }.forward_offset();
        assert_eq!(offset(0), WASM_PAGE_SIZE);
        assert_eq!(offset(65528), WASM_PAGE_SIZE);
        assert_eq!(offset(65529), 2 * WASM_PAGE_SIZE);
        assert_eq!(
            offset(u32::MAX),
            (8 + u64::from(u32::MAX)).next_multiple_of(WASM_PAGE_SIZE)
        );
    }

    #[test]
    fn a_byte_array_longer_than_its_input_is_refused_before_allocating() {
        // An array header claiming 2^32 items, then one byte.
        let bytes = [0x9a, 0xff, 0xff, 0xff, 0xff, 0x00];
        let mut cbor = Cbor::new(&bytes, None);
        assert!(matches!(
            cbor.byte_array(),
            Err(AdoptionError::MalformedCell { position: 5, .. })
        ));
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_cell_decoder() {
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        for len in 0..2000 {
            let bytes: Vec<u8> = (0..len % 97)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    (state >> 24) as u8
                })
                .collect();
            assert!(decode_ic_memory_cell_value(&bytes).is_err());
        }
    }
}
