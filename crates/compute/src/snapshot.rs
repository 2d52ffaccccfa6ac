//! [`StateSnapshot`]: a daemon's state bytes plus everything needed to
//! continue its chain exactly (head link, head hash, observed horizon), and
//! its stable byte format (spec §7, also in docs/FORMAT.md).
//!
//! Snapshots cross process and version boundaries, so decoding treats its
//! input as untrusted: every length is checked against the remaining input
//! with checked arithmetic before anything is allocated or sliced, the whole
//! encoding is covered by an `xxh3_64` checksum, and the decoded value must be
//! internally consistent. Decoding never panics and allocates at most in
//! proportion to its input. A decoded snapshot's chain position is at most
//! [`MAX_SEQUENCE`], so that a restored daemon can always compute its next
//! sequence. This module never decides whether a snapshot may be restored
//! under a given identity; the runtime does.
//!
//! Layout (little-endian):
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 8 | magic `HFCSNAP\0` |
//! | 8 | 2 | version = 1 |
//! | 10 | 2 | flags = 0 |
//! | 12 | 32 | entity id |
//! | 44 | 8 | `through_seq` |
//! | 52 | 32 | head link |
//! | 84 | 8 | head hash |
//! | 92 | 8 | `created_at` (Unix ms) |
//! | 100 | 4 | horizon entry count *n* |
//! | 104 | 16·*n* | `(origin, max_seq)`, strictly ascending by origin |
//! | 104+16*n* | 8 | state length *L* |
//! | 112+16*n* | *L* | state |
//! | 112+16*n*+*L* | 8 | `xxh3_64` of every preceding byte |

use std::ops::Range;

use bytes::Bytes;
use xxhash_rust::xxh3::xxh3_64;

use crate::causal::{CausalLink, MAX_SEQUENCE, ObservedHorizon, genesis_hash};
use crate::identity::EntityId;

/// Bytes before the horizon entries.
const HEADER_LEN: usize = 104;
/// One horizon entry.
const ENTRY_LEN: usize = 16;
/// The state-length field and the checksum.
const TRAILER_FIELDS_LEN: usize = 16;

/// Why bytes are not a valid snapshot. Variants are listed in the order the
/// decoder checks them.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    /// The input ends before a field it declares.
    #[error("snapshot truncated: {needed} bytes needed, {available} available")]
    Truncated {
        /// The input length the next field needs (saturated at `u64::MAX`).
        needed: u64,
        /// The input length.
        available: u64,
    },
    /// The first 8 bytes are not `HFCSNAP\0`.
    #[error("not a holdfast snapshot (bad magic)")]
    BadMagic,
    /// A format version this build cannot read.
    #[error("unsupported snapshot version {0}")]
    UnsupportedVersion(u16),
    /// Flags bits that this version reserves are set.
    #[error("reserved snapshot flags set: {0:#06x}")]
    ReservedFlags(u16),
    /// Bytes follow the checksum.
    #[error("{0} trailing bytes after the snapshot")]
    TrailingBytes(u64),
    /// The stored checksum does not match the bytes.
    #[error("snapshot checksum mismatch: stored {stored:#018x}, computed {computed:#018x}")]
    ChecksumMismatch {
        /// The checksum in the input.
        stored: u64,
        /// The checksum of the input's bytes.
        computed: u64,
    },
    /// The fields contradict each other (which rule is named).
    #[error("inconsistent snapshot: {0}")]
    Inconsistent(&'static str),
    /// The chain position is past [`MAX_SEQUENCE`], so a restored daemon
    /// could never emit (its next sequence would not exist). A snapshot
    /// exactly at the ceiling is accepted.
    #[error("snapshot through_seq {through_seq} is beyond the sequence ceiling {ceiling}")]
    SequenceBeyondCeiling {
        /// The snapshot's `through_seq` (and head sequence).
        through_seq: u64,
        /// [`MAX_SEQUENCE`].
        ceiling: u64,
    },
}

/// A daemon's state and the chain position it belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StateSnapshot {
    /// The daemon's entity id.
    pub entity_id: EntityId,
    /// The sequence of the last output covered (`chain_link.sequence`).
    pub through_seq: u64,
    /// The head of the chain when the snapshot was taken.
    pub chain_link: CausalLink,
    /// The hash of the head event.
    pub head_hash: u64,
    /// The inbound horizon when the snapshot was taken.
    pub horizon: ObservedHorizon,
    /// The daemon's state bytes.
    pub state: Bytes,
    /// Unix milliseconds (0 if the clock was before the epoch).
    pub created_at: u64,
}

impl StateSnapshot {
    /// The first 8 bytes of every encoding.
    pub const MAGIC: [u8; 8] = *b"HFCSNAP\0";
    /// The format version this build writes and reads.
    pub const VERSION: u16 = 1;

    /// The origin hash of the snapshot's entity id.
    pub fn origin_hash(&self) -> u64 {
        self.entity_id.origin_hash()
    }

    /// The exact length of [`StateSnapshot::to_bytes`].
    pub fn encoded_len(&self) -> usize {
        HEADER_LEN + ENTRY_LEN * self.horizon.len() + TRAILER_FIELDS_LEN + self.state.len()
    }

    /// The encoding; one allocation of exactly `encoded_len()` bytes.
    pub fn to_bytes(&self) -> Bytes {
        let mut out = Vec::with_capacity(self.encoded_len());
        out.extend_from_slice(&Self::MAGIC);
        out.extend_from_slice(&Self::VERSION.to_le_bytes());
        out.extend_from_slice(&0u16.to_le_bytes());
        out.extend_from_slice(self.entity_id.as_bytes());
        out.extend_from_slice(&self.through_seq.to_le_bytes());
        out.extend_from_slice(&self.chain_link.to_bytes());
        out.extend_from_slice(&self.head_hash.to_le_bytes());
        out.extend_from_slice(&self.created_at.to_le_bytes());
        let count = u32::try_from(self.horizon.len()).expect("a horizon has fewer than 2^32 origins");
        out.extend_from_slice(&count.to_le_bytes());
        for (origin, sequence) in self.horizon.iter() {
            out.extend_from_slice(&origin.to_le_bytes());
            out.extend_from_slice(&sequence.to_le_bytes());
        }
        out.extend_from_slice(&(self.state.len() as u64).to_le_bytes());
        out.extend_from_slice(&self.state);
        let checksum = xxh3_64(&out);
        out.extend_from_slice(&checksum.to_le_bytes());
        debug_assert_eq!(out.len(), self.encoded_len());
        Bytes::from(out)
    }

    /// Decodes `buf`, copying the state bytes.
    ///
    /// # Errors
    /// The first failing check of the format, as [`SnapshotError`].
    pub fn from_bytes(buf: &[u8]) -> Result<Self, SnapshotError> {
        let (fields, state) = parse(buf)?;
        Ok(fields.with_state(Bytes::copy_from_slice(&buf[state])))
    }

    /// Decodes `buf`; the state shares `buf`'s storage (no copy).
    ///
    /// # Errors
    /// The first failing check of the format, as [`SnapshotError`].
    pub fn decode(buf: Bytes) -> Result<Self, SnapshotError> {
        let (fields, state) = parse(&buf)?;
        Ok(fields.with_state(buf.slice(state)))
    }
}

/// Every field but the state, decoded and checked.
struct Fields {
    entity_id: EntityId,
    through_seq: u64,
    chain_link: CausalLink,
    head_hash: u64,
    horizon: ObservedHorizon,
    created_at: u64,
}

impl Fields {
    fn with_state(self, state: Bytes) -> StateSnapshot {
        StateSnapshot {
            entity_id: self.entity_id,
            through_seq: self.through_seq,
            chain_link: self.chain_link,
            head_hash: self.head_hash,
            horizon: self.horizon,
            state,
            created_at: self.created_at,
        }
    }
}

/// A cursor that never reads past its input: every read is bounds-checked
/// and a shortfall is `Truncated`.
struct Reader<'a> {
    buf: &'a [u8],
    offset: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, len: u64) -> Result<&'a [u8], SnapshotError> {
        let available = self.buf.len() as u64;
        let needed = (self.offset as u64).saturating_add(len);
        if needed > available {
            return Err(SnapshotError::Truncated { needed, available });
        }
        let end = usize::try_from(needed).expect("needed is at most the input length");
        let bytes = &self.buf[self.offset..end];
        self.offset = end;
        Ok(bytes)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], SnapshotError> {
        let bytes = self.take(N as u64)?;
        Ok(bytes.try_into().expect("take returned exactly N bytes"))
    }

    fn u16(&mut self) -> Result<u16, SnapshotError> {
        self.array().map(u16::from_le_bytes)
    }

    fn u32(&mut self) -> Result<u32, SnapshotError> {
        self.array().map(u32::from_le_bytes)
    }

    fn u64(&mut self) -> Result<u64, SnapshotError> {
        self.array().map(u64::from_le_bytes)
    }
}

/// The rule a snapshot's chain position breaks for a daemon of
/// `origin_hash`, if any: `through_seq` is the head's sequence, the head
/// belongs to the origin, and a snapshot at sequence 0 holds the genesis link
/// and hash. The decoder and `spawn_from_snapshot` both apply it.
pub(crate) fn chain_inconsistency(
    through_seq: u64,
    chain_link: &CausalLink,
    head_hash: u64,
    origin_hash: u64,
) -> Option<&'static str> {
    if through_seq != chain_link.sequence {
        return Some("through_seq differs from the head link's sequence");
    }
    if chain_link.origin_hash != origin_hash {
        return Some("head link's origin is not the entity id's origin hash");
    }
    let is_genesis =
        || *chain_link == CausalLink::genesis(origin_hash) && head_hash == genesis_hash(origin_hash);
    if through_seq == 0 && !is_genesis() {
        return Some("a snapshot at sequence 0 must hold the genesis link and hash");
    }
    None
}

/// Refuses a chain position past [`MAX_SEQUENCE`]. Checked after
/// [`chain_inconsistency`], so `through_seq` is also the head's sequence.
/// The decoder and `spawn_from_snapshot` both apply it.
pub(crate) fn check_sequence_ceiling(through_seq: u64) -> Result<(), SnapshotError> {
    if through_seq > MAX_SEQUENCE {
        return Err(SnapshotError::SequenceBeyondCeiling {
            through_seq,
            ceiling: MAX_SEQUENCE,
        });
    }
    Ok(())
}

/// Checks `buf` in the order of spec §7 and returns the fields and the range
/// of the state bytes.
fn parse(buf: &[u8]) -> Result<(Fields, Range<usize>), SnapshotError> {
    let mut reader = Reader { buf, offset: 0 };
    reader.take(12)?;
    if buf[..8] != StateSnapshot::MAGIC {
        return Err(SnapshotError::BadMagic);
    }
    reader.offset = 8;
    let version = reader.u16()?;
    if version != StateSnapshot::VERSION {
        return Err(SnapshotError::UnsupportedVersion(version));
    }
    let flags = reader.u16()?;
    if flags != 0 {
        return Err(SnapshotError::ReservedFlags(flags));
    }
    let entity_id = EntityId::from_bytes(reader.array()?);
    let through_seq = reader.u64()?;
    let chain_link = CausalLink::from_bytes(&reader.array()?);
    let head_hash = reader.u64()?;
    let created_at = reader.u64()?;
    let count = reader.u32()?;
    let entry_bytes = reader.take(u64::from(count) * ENTRY_LEN as u64)?;
    let state_len = reader.u64()?;
    let state_start = reader.offset;
    reader.take(state_len)?;
    let state = state_start..reader.offset;
    let checked_len = reader.offset;
    let stored = reader.u64()?;
    let trailing = buf.len() - reader.offset;
    if trailing != 0 {
        return Err(SnapshotError::TrailingBytes(trailing as u64));
    }
    let computed = xxh3_64(&buf[..checked_len]);
    if stored != computed {
        return Err(SnapshotError::ChecksumMismatch { stored, computed });
    }

    let mut entry_reader = Reader {
        buf: entry_bytes,
        offset: 0,
    };
    let entries = (0..count)
        .map(|_| Ok((entry_reader.u64()?, entry_reader.u64()?)))
        .collect::<Result<Vec<(u64, u64)>, SnapshotError>>()?;
    if !entries.windows(2).all(|pair| pair[0].0 < pair[1].0) {
        return Err(SnapshotError::Inconsistent(
            "horizon entries are not strictly ascending by origin",
        ));
    }
    if let Some(rule) = chain_inconsistency(through_seq, &chain_link, head_hash, entity_id.origin_hash()) {
        return Err(SnapshotError::Inconsistent(rule));
    }
    check_sequence_ceiling(through_seq)?;
    let fields = Fields {
        entity_id,
        through_seq,
        chain_link,
        head_hash,
        horizon: ObservedHorizon::from_sorted_entries(entries),
        created_at,
    };
    Ok((fields, state))
}
