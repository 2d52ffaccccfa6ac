//! The ledger commit store: two self-describing slots in the ledger's memory.
//!
//! This module owns the bytes of the ledger store (MemoryManager ID 0 in the
//! runtime, any `Memory` here) and the torn-write-safe commit protocol. It
//! knows nothing of what a ledger means: it stores the codec's bytes and
//! returns them. Recovery never writes; a commit writes only the slot that is
//! not authoritative.
//!
//! ```text
//! 0    store magic "HFLEDGER"                8 bytes   <- STORE_MAGIC
//! 8    store layout version (1)              1 byte    <- STORE_LAYOUT_VERSION
//! 9    reserved, zero                        23 bytes
//! 32   slot 0 header                         32 bytes  <- SLOT_HEADER_OFFSETS[0]
//! 64   slot 1 header                         32 bytes  <- SLOT_HEADER_OFFSETS[1]
//! 96   high-water mark, copy 0               16 bytes  <- HIGH_WATER_OFFSETS[0]
//! 112  high-water mark, copy 1               16 bytes  <- HIGH_WATER_OFFSETS[1]
//! 128  payload area (slot payloads)                    <- DATA_OFFSET
//!
//! slot header:
//! +0   presence marker: 0xC5 = present, anything else = absent   <- SLOT_PRESENT
//! +1   reserved, zero                        7 bytes
//! +8   generation                            u64 LE
//! +16  payload offset in this memory         u64 LE
//! +24  payload length                        u32 LE
//! +28  CRC-32C of header bytes +1..+28 followed by the payload
//!
//! high-water mark (all zero: none recorded yet):
//! +0   the highest generation ever committed u64 LE
//! +8   CRC-32C of "HFHW" followed by bytes +0..+8
//! +12  reserved, zero                        4 bytes
//! ```
//!
//! Commit of generation N+1 (N authoritative in slot A, target slot B):
//!
//! 1. write B's marker as absent;
//! 2. grow the memory if the payload needs it;
//! 3. write the payload where it overlaps neither the headers nor A's payload;
//! 4. write B's header bytes +1..+32;
//! 5. write B's marker as present;
//! 6. write the high-water mark N+1, copy 0 then copy 1.
//!
//! Cut anywhere before step 5 completes, B is absent and A is authoritative;
//! a torn marker is not the exact present value, so it is absent too.
//!
//! The presence marker lies outside the checksum (so that it can be the one
//! byte that completes a commit), which means one damaged marker byte would
//! make the newest slot absent and silently roll history back a generation.
//! The high-water mark closes that hole: recovery refuses an authoritative
//! generation below the highest valid copy (`RolledBack`). Two copies make a
//! cut during step 6 harmless (the other copy still holds N or N+1), and a
//! copy that fails its checksum is ignored, so the mark only ever refuses, it
//! never chooses what to recover.
//!
//! Recovery: both absent → no committed generation; a present slot whose
//! bounds or checksum fail → corrupt, fail closed (never fall back past a
//! commit that completed); one valid → it; two valid → the higher
//! generation; two valid at one generation → identical bytes recover
//! deterministically, different bytes are ambiguous and fail closed.

use std::cell::Cell;

use ic_stable_structures::Memory;
use serde::Serialize;

use crate::codec::{LedgerCodec, LedgerDecodeError, MAX_ENCODED_LEDGER_LEN};
use crate::image::WASM_PAGE_SIZE;
use crate::ledger::{AllocationLedger, LedgerIntegrityError};

/// The first bytes of a ledger store.
pub const STORE_MAGIC: [u8; 8] = *b"HFLEDGER";
/// The store layout version this build writes and reads.
pub const STORE_LAYOUT_VERSION: u8 = 1;
/// Size of the store header.
pub const STORE_HEADER_LEN: u64 = 32;
/// Size of one slot header.
pub const SLOT_HEADER_LEN: u64 = 32;
/// Where the two slot headers live.
pub const SLOT_HEADER_OFFSETS: [u64; 2] = [STORE_HEADER_LEN, STORE_HEADER_LEN + SLOT_HEADER_LEN];
/// Where payloads may start.
pub const DATA_OFFSET: u64 = HIGH_WATER_OFFSETS[1] + HIGH_WATER_LEN;
/// Where the two copies of the high-water mark live.
pub const HIGH_WATER_OFFSETS: [u64; 2] = [
    SLOT_HEADER_OFFSETS[1] + SLOT_HEADER_LEN,
    SLOT_HEADER_OFFSETS[1] + SLOT_HEADER_LEN + HIGH_WATER_LEN,
];
/// Size of one copy of the high-water mark.
pub const HIGH_WATER_LEN: u64 = 16;
const HIGH_WATER_TAG: &[u8; 4] = b"HFHW";
/// The one marker value that means "present".
pub const SLOT_PRESENT: u8 = 0xC5;
const SLOT_ABSENT: u8 = 0x00;

/// What the ledger memory holds, judged by its first bytes only.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum StoreClass {
    /// Size 0.
    Empty,
    /// Starts with the store magic.
    LedgerStore,
}

/// What one slot holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum SlotDiagnostic {
    /// The marker is not the present value.
    Absent,
    /// Present, in bounds, checksum correct.
    Valid {
        /// The generation in the header.
        generation: u64,
        /// Payload offset.
        payload_offset: u64,
        /// Payload length.
        payload_len: u32,
    },
    /// Present but unusable.
    Corrupt {
        /// Why.
        corruption: SlotCorruption,
    },
}

/// Why a present slot is unusable.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize)]
#[non_exhaustive]
pub enum SlotCorruption {
    /// The payload lies outside the memory or overlaps the headers.
    #[error(
        "payload at {offset} of {len} bytes lies outside the payload area of a {memory_bytes}-byte store"
    )]
    PayloadOutOfBounds {
        /// Offset.
        offset: u64,
        /// Length.
        len: u32,
        /// Size of the store memory.
        memory_bytes: u64,
    },
    /// The checksum does not match.
    #[error("checksum {stored:#010x} does not match the computed {computed:#010x}")]
    ChecksumMismatch {
        /// Stored checksum.
        stored: u32,
        /// Computed checksum.
        computed: u32,
    },
}

/// Both slots and what recovery makes of them. Serializable; produced even
/// when recovery fails.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CommitStoreDiagnostic {
    /// Slot 0.
    pub slot0: SlotDiagnostic,
    /// Slot 1.
    pub slot1: SlotDiagnostic,
    /// The generation recovery would return, if it succeeds.
    pub authoritative_generation: Option<u64>,
    /// Which slot that generation comes from.
    pub authoritative_slot: Option<usize>,
    /// The highest generation ever committed, by the high-water mark; None
    /// for a store written before the mark existed or when neither copy is
    /// intact.
    pub high_water_generation: Option<u64>,
    /// Why recovery fails, if it does.
    pub recovery_error: Option<String>,
}

/// Why the ledger store cannot be recovered. Recovery wrote nothing.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CommitRecoveryError {
    /// The memory holds bytes that are not a ledger store.
    #[error(
        "the ledger memory holds foreign bytes (starts with {first_bytes:02x?}), not a ledger store; \
         another store uses this slot, so nothing was written"
    )]
    ForeignStore {
        /// The first bytes found.
        first_bytes: Vec<u8>,
    },
    /// The memory holds the ledger ic-memory 0.5 writes (its `Cell`, adopted
    /// or not), which is not a store at offset 0: the runtimes read it and
    /// adopt it (docs/FORMAT.md, "Adopting an ic-memory 0.5 ledger").
    #[error(
        "the ledger memory holds a ledger written by ic-memory 0.5, not a holdfast store at its start; \
         boot it through MemoryRuntime or the default runtime, which adopt it"
    )]
    IcMemoryLedger,
    /// A store layout version this build does not read.
    #[error("ledger store layout version {found} is not supported (this build reads {STORE_LAYOUT_VERSION})")]
    UnsupportedStoreVersion {
        /// Version found.
        found: u8,
    },
    /// The memory is too small for the store header.
    #[error("ledger store is {size_bytes} bytes, too small for its header")]
    TruncatedStore {
        /// Size found.
        size_bytes: u64,
    },
    /// A present slot is corrupt.
    #[error("ledger commit slot {slot} is corrupt: {corruption}")]
    CorruptSlot {
        /// Which slot.
        slot: usize,
        /// Why.
        corruption: SlotCorruption,
    },
    /// Two valid slots at one generation with different bytes.
    #[error("both ledger commit slots claim generation {generation} with different contents")]
    AmbiguousSlots {
        /// The generation.
        generation: u64,
    },
    /// A slot's payload is not a ledger.
    #[error("ledger commit slot {slot} does not decode: {error}")]
    Decode {
        /// Which slot.
        slot: usize,
        /// Why.
        error: LedgerDecodeError,
    },
    /// The authoritative slot is older than a generation the store recorded
    /// as committed: a newer slot was lost (most likely its presence marker,
    /// which the checksum does not cover, was damaged). Recovering the older
    /// slot would silently undo a completed commit.
    #[error(
        "the ledger store committed generation {committed_generation}, but the newest readable slot holds          {authoritative_generation:?}: a newer commit slot was lost (a damaged presence marker?); refusing to          roll history back"
    )]
    RolledBack {
        /// The generation recovery would otherwise return (None: no slot).
        authoritative_generation: Option<u64>,
        /// The highest generation the high-water mark recorded.
        committed_generation: u64,
    },
    /// A slot's header generation differs from its ledger's generation.
    #[error(
        "ledger commit slot {slot} is generation {header_generation} but holds a ledger at generation {ledger_generation}"
    )]
    GenerationMismatch {
        /// Which slot.
        slot: usize,
        /// Generation in the header.
        header_generation: u64,
        /// Generation in the payload.
        ledger_generation: u64,
    },
}

/// Why a commit did not happen. Unless stated, nothing was written.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LedgerCommitError {
    /// The store does not recover, so there is no safe slot to write.
    #[error(transparent)]
    Recovery(#[from] CommitRecoveryError),
    /// Only generation current+1 may be committed.
    #[error("cannot commit generation {offered}: the authoritative generation is {authoritative}")]
    NonSequentialGeneration {
        /// The authoritative generation (0 when none).
        authoritative: u64,
        /// The generation offered.
        offered: u64,
    },
    /// The ledger breaks a rule recovery enforces, so committing it would
    /// leave a store that no later boot could read. Checked before anything
    /// is written, whatever built the ledger.
    #[error("refusing to commit a ledger recovery would refuse: {0}")]
    Integrity(LedgerIntegrityError),
    /// The encoded ledger exceeds the format's limit.
    #[error("encoded ledger is {len} bytes, above the {MAX_ENCODED_LEDGER_LEN}-byte limit")]
    LedgerTooLarge {
        /// Encoded size.
        len: usize,
    },
    /// The memory could not grow. The target slot may have been marked absent;
    /// the authoritative slot is untouched.
    #[error("the ledger memory could not grow by {pages} pages")]
    GrowFailed {
        /// Pages requested.
        pages: u64,
    },
}

/// The commit store over one memory. See the module docs for the layout.
///
/// Assumption: nothing else writes the memory while the store is alive, so
/// the slot layout verified by the last recovery or commit stays true and a
/// commit need not read and checksum both slots again.
pub struct LedgerCommitStore<M: Memory> {
    memory: M,
    verified: Cell<Option<SlotLayout>>,
}

/// Which slot is authoritative (slot, generation) and where each valid
/// slot's payload lies, as last verified.
#[derive(Clone, Copy)]
struct SlotLayout {
    authoritative: Option<(usize, u64)>,
    payload_ranges: [Option<(u64, u64)>; 2],
}

impl SlotLayout {
    const EMPTY: Self = Self {
        authoritative: None,
        payload_ranges: [None, None],
    };
}

impl<M: Memory> LedgerCommitStore<M> {
    /// A store over `memory`. Reads nothing yet.
    pub fn new(memory: M) -> Self {
        Self {
            memory,
            verified: Cell::new(None),
        }
    }

    /// The memory.
    pub fn memory(&self) -> &M {
        &self.memory
    }

    /// Gives the memory back.
    pub fn into_memory(self) -> M {
        self.memory
    }

    /// Classifies the memory by its first bytes.
    ///
    /// # Errors
    /// [`CommitRecoveryError::ForeignStore`],
    /// [`CommitRecoveryError::IcMemoryLedger`],
    /// [`CommitRecoveryError::UnsupportedStoreVersion`],
    /// [`CommitRecoveryError::TruncatedStore`].
    pub fn classify(&self) -> Result<StoreClass, CommitRecoveryError> {
        let size_bytes = self.size_bytes();
        if size_bytes == 0 {
            return Ok(StoreClass::Empty);
        }
        if size_bytes < DATA_OFFSET {
            return Err(CommitRecoveryError::TruncatedStore { size_bytes });
        }
        let mut header = [0u8; 9];
        self.memory.read(0, &mut header);
        if crate::adoption::is_ic_memory_cell(&header) {
            return Err(CommitRecoveryError::IcMemoryLedger);
        }
        if header[..8] != STORE_MAGIC {
            return Err(CommitRecoveryError::ForeignStore {
                first_bytes: header[..8].to_vec(),
            });
        }
        if header[8] != STORE_LAYOUT_VERSION {
            return Err(CommitRecoveryError::UnsupportedStoreVersion { found: header[8] });
        }
        Ok(StoreClass::LedgerStore)
    }

    /// Whether the memory holds nothing but a prefix of the store header
    /// followed by zeros: the trace of a first commit cut short after the
    /// memory grew and before its header was complete.
    pub fn holds_only_a_torn_store_header(&self) -> bool {
        let header = store_header();
        let size = self.size_bytes();
        let mut chunk = vec![0u8; WASM_PAGE_SIZE as usize];
        let mut offset = 0;
        while offset < size {
            let len = (size - offset).min(WASM_PAGE_SIZE) as usize;
            self.memory.read(offset, &mut chunk[..len]);
            let skip = if offset == 0 {
                chunk.iter().zip(&header).take_while(|(a, b)| a == b).count()
            } else {
                0
            };
            if chunk[skip..len].iter().any(|&b| b != 0) {
                return false;
            }
            offset += len as u64;
        }
        true
    }

    /// Recovers the authoritative ledger; `None` when nothing was ever
    /// committed. Never writes.
    ///
    /// # Errors
    /// A [`CommitRecoveryError`] naming the slot and what is wrong with it.
    pub fn recover<C: LedgerCodec>(
        &self,
        codec: &C,
    ) -> Result<Option<AllocationLedger>, CommitRecoveryError> {
        let (layout, bytes) = self.recover_physical()?;
        let Some((slot, generation)) = layout.authoritative else {
            return Ok(None);
        };
        let ledger = codec
            .decode(&bytes)
            .map_err(|error| CommitRecoveryError::Decode { slot, error })?;
        if ledger.current_generation() != generation {
            return Err(CommitRecoveryError::GenerationMismatch {
                slot,
                header_generation: generation,
                ledger_generation: ledger.current_generation(),
            });
        }
        Ok(Some(ledger))
    }

    /// Recovers the authoritative ledger, or returns `genesis` when nothing
    /// was ever committed. Never writes: the store is initialised by the
    /// first commit, after validation.
    ///
    /// # Errors
    /// As [`Self::recover`].
    pub fn recover_or_initialize<C: LedgerCodec>(
        &self,
        codec: &C,
        genesis: &AllocationLedger,
    ) -> Result<AllocationLedger, CommitRecoveryError> {
        Ok(self.recover(codec)?.unwrap_or_else(|| genesis.clone()))
    }

    /// Commits `ledger` as the next generation (see the module docs).
    ///
    /// # Errors
    /// [`LedgerCommitError`]; on every error but `GrowFailed` nothing was
    /// written, and on `GrowFailed` the authoritative slot is untouched.
    pub fn commit<C: LedgerCodec>(
        &mut self,
        codec: &C,
        ledger: &AllocationLedger,
    ) -> Result<(), LedgerCommitError> {
        let class = self.classify()?;
        self.commit_classified(codec, ledger, class)
    }

    /// Commits over a torn store header as if the memory were empty.
    /// PRECONDITION: [`Self::holds_only_a_torn_store_header`] holds and the
    /// caller proved no other store exists, so the bytes can only be the
    /// trace of an interrupted first commit.
    pub(crate) fn commit_over_interrupted_initialization<C: LedgerCodec>(
        &mut self,
        codec: &C,
        ledger: &AllocationLedger,
    ) -> Result<(), LedgerCommitError> {
        self.commit_classified(codec, ledger, StoreClass::Empty)
    }

    /// Writes a complete store over whatever the memory holds: the header,
    /// `ledger` in slot 0 (no slot for genesis), slot 1 absent and the
    /// high-water mark; the memory grows first. Used by adoption, for a
    /// ledger that starts at an ic-memory generation rather than at 1.
    /// PRECONDITION: no recovery reads this memory as a store until the
    /// caller publishes it afterwards (adoption flips ID 0's first byte), so
    /// the order of these writes does not matter.
    ///
    /// # Errors
    /// `Integrity` or `LedgerTooLarge` (nothing written), or `GrowFailed`.
    pub(crate) fn write_unpublished_store<C: LedgerCodec>(
        &mut self,
        codec: &C,
        ledger: &AllocationLedger,
    ) -> Result<(), LedgerCommitError> {
        ledger.check_integrity().map_err(LedgerCommitError::Integrity)?;
        let generation = ledger.current_generation();
        let payload = (generation > 0).then(|| codec.encode(ledger));
        let payload_len = payload.as_ref().map_or(0, Vec::len);
        if payload_len > MAX_ENCODED_LEDGER_LEN {
            return Err(LedgerCommitError::LedgerTooLarge { len: payload_len });
        }
        self.ensure_size(DATA_OFFSET + payload_len as u64)?;
        let mut head = [0u8; DATA_OFFSET as usize];
        head[..STORE_HEADER_LEN as usize].copy_from_slice(&store_header());
        if let Some(payload) = &payload {
            self.memory.write(DATA_OFFSET, payload);
            let slot = SLOT_HEADER_OFFSETS[0] as usize;
            head[slot..slot + SLOT_HEADER_LEN as usize].copy_from_slice(&slot_header(
                generation,
                DATA_OFFSET,
                payload,
            ));
            for offset in HIGH_WATER_OFFSETS {
                let offset = offset as usize;
                head[offset..offset + HIGH_WATER_LEN as usize]
                    .copy_from_slice(&high_water_record(generation));
            }
        }
        self.memory.write(0, &head);
        self.verified.set(Some(SlotLayout {
            authoritative: payload.as_ref().map(|_| (0, generation)),
            payload_ranges: [
                payload
                    .as_ref()
                    .map(|_| (DATA_OFFSET, DATA_OFFSET + payload_len as u64)),
                None,
            ],
        }));
        Ok(())
    }

    /// The length of the authoritative payload as last verified by a
    /// recovery or commit of this store; None before either, or when no
    /// generation is committed.
    pub fn authoritative_payload_len(&self) -> Option<u64> {
        let layout = self.verified.get()?;
        let (slot, _) = layout.authoritative?;
        layout.payload_ranges[slot].map(|(start, end)| end - start)
    }

    /// Both slots and what recovery makes of them. Never fails, never writes.
    pub fn physical(&self) -> CommitStoreDiagnostic {
        let mut diagnostic = CommitStoreDiagnostic {
            slot0: SlotDiagnostic::Absent,
            slot1: SlotDiagnostic::Absent,
            authoritative_generation: None,
            authoritative_slot: None,
            high_water_generation: None,
            recovery_error: None,
        };
        if let Err(err) = self.classify() {
            diagnostic.recovery_error = Some(err.to_string());
            return diagnostic;
        }
        if self.size_bytes() > 0 {
            diagnostic.slot0 = self.read_slot(0).0;
            diagnostic.slot1 = self.read_slot(1).0;
            diagnostic.high_water_generation = self.high_water();
        }
        match self.recover_physical() {
            Ok((
                SlotLayout {
                    authoritative: Some((slot, generation)),
                    ..
                },
                _,
            )) => {
                diagnostic.authoritative_generation = Some(generation);
                diagnostic.authoritative_slot = Some(slot);
            }
            Ok(_) => {}
            Err(err) => diagnostic.recovery_error = Some(err.to_string()),
        }
        diagnostic
    }

    fn size_bytes(&self) -> u64 {
        self.memory.size().saturating_mul(WASM_PAGE_SIZE)
    }

    fn commit_classified<C: LedgerCodec>(
        &mut self,
        codec: &C,
        ledger: &AllocationLedger,
        class: StoreClass,
    ) -> Result<(), LedgerCommitError> {
        let layout = match (class, self.verified.take()) {
            (StoreClass::Empty, _) => SlotLayout::EMPTY,
            (StoreClass::LedgerStore, Some(verified)) => verified,
            (StoreClass::LedgerStore, None) => self.recover_physical()?.0,
        };
        let authoritative = layout.authoritative.map_or(0, |(_, generation)| generation);
        if authoritative.checked_add(1) != Some(ledger.current_generation()) {
            return Err(LedgerCommitError::NonSequentialGeneration {
                authoritative,
                offered: ledger.current_generation(),
            });
        }
        ledger.check_integrity().map_err(LedgerCommitError::Integrity)?;
        let payload = codec.encode(ledger);
        if payload.len() > MAX_ENCODED_LEDGER_LEN {
            return Err(LedgerCommitError::LedgerTooLarge { len: payload.len() });
        }
        let (target, occupied) = match layout.authoritative {
            Some((slot, _)) => (1 - slot, layout.payload_ranges[slot]),
            None => (0, None),
        };
        let offset = place_payload(occupied, payload.len() as u64);
        if class == StoreClass::Empty {
            self.ensure_size(offset + payload.len() as u64)?;
            self.memory.write(0, &store_header());
        } else {
            self.memory.write(SLOT_HEADER_OFFSETS[target], &[SLOT_ABSENT]);
            self.ensure_size(offset + payload.len() as u64)?;
        }
        self.memory.write(offset, &payload);
        let header = slot_header(ledger.current_generation(), offset, &payload);
        self.memory.write(SLOT_HEADER_OFFSETS[target] + 1, &header[1..]);
        self.memory.write(SLOT_HEADER_OFFSETS[target], &[SLOT_PRESENT]);
        let high_water = high_water_record(ledger.current_generation());
        for offset in HIGH_WATER_OFFSETS {
            self.memory.write(offset, &high_water);
        }
        let mut payload_ranges = layout.payload_ranges;
        payload_ranges[target] = Some((offset, offset + payload.len() as u64));
        self.verified.set(Some(SlotLayout {
            authoritative: Some((target, ledger.current_generation())),
            payload_ranges,
        }));
        Ok(())
    }

    fn ensure_size(&self, bytes: u64) -> Result<(), LedgerCommitError> {
        let pages = bytes.div_ceil(WASM_PAGE_SIZE);
        let current = self.memory.size();
        if pages > current {
            let more = pages - current;
            if self.memory.grow(more) < 0 {
                return Err(LedgerCommitError::GrowFailed { pages: more });
            }
        }
        Ok(())
    }

    /// Reads and checks both slots; returns the layout (remembered for the
    /// next commit) and the authoritative payload.
    fn recover_physical(&self) -> Result<(SlotLayout, Vec<u8>), CommitRecoveryError> {
        if self.classify()? == StoreClass::Empty {
            return Ok((SlotLayout::EMPTY, Vec::new()));
        }
        let (slot0, bytes0) = self.read_slot(0);
        let (slot1, bytes1) = self.read_slot(1);
        let mut valid = Vec::new();
        let mut payload_ranges = [None, None];
        for (index, (diagnostic, bytes)) in [(slot0, bytes0), (slot1, bytes1)].into_iter().enumerate() {
            match diagnostic {
                SlotDiagnostic::Absent => {}
                SlotDiagnostic::Corrupt { corruption } => {
                    return Err(CommitRecoveryError::CorruptSlot {
                        slot: index,
                        corruption,
                    });
                }
                SlotDiagnostic::Valid {
                    generation,
                    payload_offset,
                    payload_len,
                } => {
                    payload_ranges[index] = Some((payload_offset, payload_offset + u64::from(payload_len)));
                    valid.push((index, generation, bytes));
                }
            }
        }
        let authoritative = match <[_; 2]>::try_from(valid) {
            Ok([first, second]) if first.1 == second.1 => {
                if first.2 != second.2 {
                    return Err(CommitRecoveryError::AmbiguousSlots { generation: first.1 });
                }
                Some(first)
            }
            Ok([first, second]) => Some(if first.1 > second.1 { first } else { second }),
            Err(mut fewer) => fewer.pop(),
        };
        let (authoritative, bytes) = match authoritative {
            Some((slot, generation, bytes)) => (Some((slot, generation)), bytes),
            None => (None, Vec::new()),
        };
        let authoritative_generation = authoritative.map(|(_, generation)| generation);
        if let Some(committed_generation) = self.high_water()
            && authoritative_generation.unwrap_or(0) < committed_generation
        {
            return Err(CommitRecoveryError::RolledBack {
                authoritative_generation,
                committed_generation,
            });
        }
        let layout = SlotLayout {
            authoritative,
            payload_ranges,
        };
        self.verified.set(Some(layout));
        Ok((layout, bytes))
    }

    /// The highest generation either intact copy of the high-water mark
    /// records; None when neither is intact (a store older than the mark, or
    /// damage, which only ever disables the check).
    fn high_water(&self) -> Option<u64> {
        HIGH_WATER_OFFSETS
            .into_iter()
            .filter_map(|offset| {
                let mut copy = [0u8; HIGH_WATER_LEN as usize];
                self.memory.read(offset, &mut copy);
                let generation = u64::from_le_bytes(copy[..8].try_into().expect("8-byte range"));
                (copy != [0; HIGH_WATER_LEN as usize] && copy == high_water_record(generation))
                    .then_some(generation)
            })
            .max()
    }

    /// Reads one slot; the bytes are the payload of a valid slot, else empty.
    fn read_slot(&self, slot: usize) -> (SlotDiagnostic, Vec<u8>) {
        let mut header = [0u8; SLOT_HEADER_LEN as usize];
        self.memory.read(SLOT_HEADER_OFFSETS[slot], &mut header);
        if header[0] != SLOT_PRESENT {
            return (SlotDiagnostic::Absent, Vec::new());
        }
        let generation = u64::from_le_bytes(header[8..16].try_into().expect("8-byte range"));
        let offset = u64::from_le_bytes(header[16..24].try_into().expect("8-byte range"));
        let len = u32::from_le_bytes(header[24..28].try_into().expect("4-byte range"));
        let stored = u32::from_le_bytes(header[28..32].try_into().expect("4-byte range"));
        let memory_bytes = self.size_bytes();
        let in_bounds = offset >= DATA_OFFSET
            && (len as usize) <= MAX_ENCODED_LEDGER_LEN
            && offset
                .checked_add(u64::from(len))
                .is_some_and(|end| end <= memory_bytes);
        if !in_bounds {
            let corruption = SlotCorruption::PayloadOutOfBounds {
                offset,
                len,
                memory_bytes,
            };
            return (SlotDiagnostic::Corrupt { corruption }, Vec::new());
        }
        let mut payload = vec![0u8; len as usize];
        self.memory.read(offset, &mut payload);
        let computed = checksum(&header[1..28], &payload);
        if computed != stored {
            let corruption = SlotCorruption::ChecksumMismatch { stored, computed };
            return (SlotDiagnostic::Corrupt { corruption }, Vec::new());
        }
        let diagnostic = SlotDiagnostic::Valid {
            generation,
            payload_offset: offset,
            payload_len: len,
        };
        (diagnostic, payload)
    }
}

/// Where a payload of `len` bytes goes: at the start of the payload area if
/// it ends before the authoritative payload, else just after it.
fn place_payload(occupied: Option<(u64, u64)>, len: u64) -> u64 {
    match occupied {
        Some((start, _)) if DATA_OFFSET + len <= start => DATA_OFFSET,
        Some((_, end)) => end.next_multiple_of(8),
        None => DATA_OFFSET,
    }
}

fn store_header() -> [u8; STORE_HEADER_LEN as usize] {
    let mut header = [0u8; STORE_HEADER_LEN as usize];
    header[..8].copy_from_slice(&STORE_MAGIC);
    header[8] = STORE_LAYOUT_VERSION;
    header
}

fn high_water_record(generation: u64) -> [u8; HIGH_WATER_LEN as usize] {
    let mut record = [0u8; HIGH_WATER_LEN as usize];
    record[..8].copy_from_slice(&generation.to_le_bytes());
    let crc = crc32c::crc32c_append(crc32c::crc32c(HIGH_WATER_TAG), &record[..8]);
    record[8..12].copy_from_slice(&crc.to_le_bytes());
    record
}

fn slot_header(generation: u64, offset: u64, payload: &[u8]) -> [u8; SLOT_HEADER_LEN as usize] {
    let mut header = [0u8; SLOT_HEADER_LEN as usize];
    header[0] = SLOT_PRESENT;
    header[8..16].copy_from_slice(&generation.to_le_bytes());
    header[16..24].copy_from_slice(&offset.to_le_bytes());
    let len = u32::try_from(payload.len()).expect("payload length was checked against the limit");
    header[24..28].copy_from_slice(&len.to_le_bytes());
    let crc = checksum(&header[1..28], payload);
    header[28..32].copy_from_slice(&crc.to_le_bytes());
    header
}

/// CRC-32C (Castagnoli) of `header` then `payload`; hardware-accelerated
/// where the CPU has it, because recovery checksums both payloads.
fn checksum(header: &[u8], payload: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(header), payload)
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::rc::Rc;

    use ic_stable_structures::{Memory, VectorMemory};

    use super::*;
    use crate::codec::CborLedgerCodec;
    use crate::declaration::DeclarationSnapshot;
    use crate::validate::{AcceptAllPolicy, validate_allocations};

    /// A memory that refuses to grow past `limit` pages.
    #[derive(Clone)]
    struct CappedMemory {
        inner: VectorMemory,
        limit: u64,
    }

    impl Memory for CappedMemory {
        fn size(&self) -> u64 {
            self.inner.size()
        }
        fn grow(&self, pages: u64) -> i64 {
            if self.inner.size() + pages > self.limit {
                return -1;
            }
            self.inner.grow(pages)
        }
        fn read(&self, offset: u64, dst: &mut [u8]) {
            self.inner.read(offset, dst)
        }
        fn write(&self, offset: u64, src: &[u8]) {
            self.inner.write(offset, src)
        }
    }

    /// `ledger` plus one generation declaring every recorded key and `key`,
    /// all with 200-byte labels (so a few dozen records fill a page).
    fn next(ledger: &AllocationLedger, key: &str, id: u8) -> AllocationLedger {
        let label = "L".repeat(200);
        let declarations = ledger
            .allocation_history()
            .records()
            .iter()
            .map(|r| {
                crate::AllocationDeclaration::memory_manager(
                    r.stable_key(),
                    r.slot().memory_manager_id().unwrap(),
                    &label,
                )
            })
            .chain([crate::AllocationDeclaration::memory_manager(key, id, &label)])
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let validated = validate_allocations(
            ledger,
            DeclarationSnapshot::new(declarations).unwrap(),
            &AcceptAllPolicy,
        )
        .unwrap();
        ledger.stage_validated_generation(&validated, None).unwrap()
    }

    #[test]
    fn a_memory_that_cannot_grow_refuses_the_first_commit_and_stays_empty() {
        let memory = CappedMemory {
            inner: Rc::new(RefCell::new(Vec::new())),
            limit: 0,
        };
        let mut store = LedgerCommitStore::new(memory.clone());
        let one = next(&AllocationLedger::genesis(), "a.v1", 10);
        assert_eq!(
            store.commit(&CborLedgerCodec, &one),
            Err(LedgerCommitError::GrowFailed { pages: 1 })
        );
        assert_eq!(memory.size(), 0);
    }

    #[test]
    fn a_failed_grow_leaves_the_authoritative_generation_readable() {
        let memory = CappedMemory {
            inner: Rc::new(RefCell::new(Vec::new())),
            limit: 1,
        };
        let mut store = LedgerCommitStore::new(memory.clone());
        let mut ledger = next(&AllocationLedger::genesis(), "a.v1", 10);
        store.commit(&CborLedgerCodec, &ledger).unwrap();
        // Grow the ledger until a commit needs a second page.
        let mut id = 11;
        let err = loop {
            let staged = next(&ledger, &format!("a.k{id}.v1"), id);
            match store.commit(&CborLedgerCodec, &staged) {
                Ok(()) => ledger = staged,
                Err(err) => break err,
            }
            id += 1;
        };
        assert_eq!(err, LedgerCommitError::GrowFailed { pages: 1 });
        let fresh = LedgerCommitStore::new(memory);
        assert_eq!(fresh.recover(&CborLedgerCodec).unwrap(), Some(ledger));
    }

    #[test]
    fn only_the_next_generation_may_be_committed() {
        let mut store = LedgerCommitStore::new(VectorMemory::default());
        let one = next(&AllocationLedger::genesis(), "a.v1", 10);
        let two = next(&one, "b.v1", 11);
        assert_eq!(
            store.commit(&CborLedgerCodec, &two),
            Err(LedgerCommitError::NonSequentialGeneration {
                authoritative: 0,
                offered: 2
            })
        );
        store.commit(&CborLedgerCodec, &one).unwrap();
        assert_eq!(
            store.commit(&CborLedgerCodec, &one),
            Err(LedgerCommitError::NonSequentialGeneration {
                authoritative: 1,
                offered: 1
            })
        );
        store.commit(&CborLedgerCodec, &two).unwrap();
        assert_eq!(
            LedgerCommitStore::new(store.into_memory())
                .recover(&CborLedgerCodec)
                .unwrap(),
            Some(two)
        );
    }
}
