//! The causal chain: [`CausalLink`] (32 bytes that place an event in its
//! origin's chain), [`CausalEvent`] (a link plus payload), the
//! [`ObservedHorizon`] (the highest inbound sequence seen per origin), the
//! [`ChainValidator`] that checks a chain link by link, and [`MAX_SEQUENCE`],
//! the ceiling no chain passes.
//!
//! Hashes here are content hashes for ordering, not authentication:
//! `xxh3_64` over the link bytes and the payload, computed with the streaming
//! hasher so that hashing never allocates. This module never validates
//! *inbound* links on delivery; that is a non-goal (spec §12).

use bytes::Bytes;
use xxhash_rust::xxh3::{Xxh3Default, xxh3_64};

/// The highest sequence a daemon's chain may reach: 2⁶³ − 1 (`i64::MAX`).
///
/// No real daemon gets near it: at a billion outputs a second it takes 292
/// years. The ceiling lets the runtime compute `head + outputs` without
/// overflow, and keeps every sequence representable as a signed 64-bit
/// integer, for stores that have no unsigned one. A snapshot past it is
/// refused when decoded ([`SnapshotError::SequenceBeyondCeiling`]) and when
/// restored; a delivery whose outputs would pass it is refused with
/// [`CoreDaemonError::SequenceExhausted`], leaving the chain unchanged.
///
/// [`SnapshotError::SequenceBeyondCeiling`]: crate::snapshot::SnapshotError::SequenceBeyondCeiling
/// [`CoreDaemonError::SequenceExhausted`]: crate::core::DaemonError::SequenceExhausted
pub const MAX_SEQUENCE: u64 = u64::MAX >> 1;

/// One event's place in its origin's chain. The genesis link of an origin is
/// `{ origin_hash, 0, 0, 0 }`; output *n* has `sequence` *n* and
/// `parent_hash` equal to the hash of output *n − 1*.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct CausalLink {
    /// The origin hash of the daemon that produced the event.
    pub origin_hash: u64,
    /// The producer's [`ObservedHorizon::encoded`] when it produced the event.
    pub horizon_encoded: u64,
    /// 1, 2, … up to [`MAX_SEQUENCE`] for outputs; 0 for the genesis link.
    pub sequence: u64,
    /// The hash of the previous event of this origin.
    pub parent_hash: u64,
}

impl CausalLink {
    /// The length of [`CausalLink::to_bytes`].
    pub const LEN: usize = 32;

    /// The genesis link of `origin_hash`.
    pub fn genesis(origin_hash: u64) -> Self {
        Self {
            origin_hash,
            ..Self::default()
        }
    }

    /// The four fields in declaration order, each a little-endian `u64`.
    pub fn to_bytes(&self) -> [u8; 32] {
        let mut out = [0u8; 32];
        let fields = [
            self.origin_hash,
            self.horizon_encoded,
            self.sequence,
            self.parent_hash,
        ];
        for (chunk, field) in out.chunks_exact_mut(8).zip(fields) {
            chunk.copy_from_slice(&field.to_le_bytes());
        }
        out
    }

    /// The inverse of [`CausalLink::to_bytes`]; every 32-byte value is a link.
    pub fn from_bytes(bytes: &[u8; 32]) -> Self {
        let field = |index: usize| {
            let mut word = [0u8; 8];
            word.copy_from_slice(&bytes[index * 8..index * 8 + 8]);
            u64::from_le_bytes(word)
        };
        Self {
            origin_hash: field(0),
            horizon_encoded: field(1),
            sequence: field(2),
            parent_hash: field(3),
        }
    }
}

/// An event: where it sits in its origin's chain, its payload, and when it was
/// received (copied from input to output unchanged).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CausalEvent {
    /// Its place in the producer's chain.
    pub link: CausalLink,
    /// Opaque payload bytes.
    pub payload: Bytes,
    /// A caller-defined timestamp; the runtime copies it from input to outputs.
    pub received_at: u64,
}

impl CausalEvent {
    /// `xxh3_64(link bytes ‖ payload)`, streamed without allocating.
    pub fn hash(&self) -> u64 {
        hash_link_and_payload(&self.link, &self.payload)
    }
}

/// The event hash of `link` with `payload`; see [`CausalEvent::hash`].
#[inline]
pub(crate) fn hash_link_and_payload(link: &CausalLink, payload: &[u8]) -> u64 {
    let mut hasher = Xxh3Default::new();
    hasher.update(&link.to_bytes());
    hasher.update(payload);
    hasher.digest()
}

/// The hash of the genesis event of `origin_hash` (genesis link, empty payload).
pub(crate) fn genesis_hash(origin_hash: u64) -> u64 {
    hash_link_and_payload(&CausalLink::genesis(origin_hash), &[])
}

/// For each inbound origin, the highest sequence processed, with an
/// order-independent digest ([`ObservedHorizon::encoded`]) kept up to date
/// incrementally.
///
/// Entries are a vector sorted by origin: lookups are a binary search, and
/// memory is allocated only when a new origin appears.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ObservedHorizon {
    entries: Vec<(u64, u64)>,
    digest: u64,
}

fn entry_hash(origin_hash: u64, sequence: u64) -> u64 {
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&origin_hash.to_le_bytes());
    bytes[8..].copy_from_slice(&sequence.to_le_bytes());
    xxh3_64(&bytes)
}

impl ObservedHorizon {
    /// An empty horizon (encoded as 0).
    pub fn new() -> Self {
        Self::default()
    }

    /// Records that `sequence` of `origin_hash` was processed; keeps the
    /// maximum per origin.
    pub fn observe(&mut self, origin_hash: u64, sequence: u64) {
        match self
            .entries
            .binary_search_by_key(&origin_hash, |&(origin, _)| origin)
        {
            Ok(index) => {
                let seen = &mut self.entries[index].1;
                if sequence > *seen {
                    self.digest ^= entry_hash(origin_hash, *seen) ^ entry_hash(origin_hash, sequence);
                    *seen = sequence;
                }
            }
            Err(index) => {
                self.entries.insert(index, (origin_hash, sequence));
                self.digest ^= entry_hash(origin_hash, sequence);
            }
        }
    }

    /// The highest sequence processed from `origin_hash`, if any.
    pub fn get(&self, origin_hash: u64) -> Option<u64> {
        self.entries
            .binary_search_by_key(&origin_hash, |&(origin, _)| origin)
            .ok()
            .map(|index| self.entries[index].1)
    }

    /// The number of origins seen.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no origin was seen.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// `(origin, max sequence)` pairs in ascending origin order.
    pub fn iter(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.entries.iter().copied()
    }

    /// The XOR over all entries of `xxh3_64(origin_le ‖ max_seq_le)`; 0 when
    /// empty.
    pub fn encoded(&self) -> u64 {
        self.digest
    }

    /// Builds a horizon from entries already known to be strictly ascending
    /// by origin (the snapshot decoder checks this first).
    pub(crate) fn from_sorted_entries(entries: Vec<(u64, u64)>) -> Self {
        debug_assert!(entries.windows(2).all(|pair| pair[0].0 < pair[1].0));
        let digest = entries
            .iter()
            .fold(0, |digest, &(origin, seq)| digest ^ entry_hash(origin, seq));
        Self { entries, digest }
    }
}

/// Why an event does not continue the chain a [`ChainValidator`] expects.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    /// The event belongs to another origin.
    #[error("event of origin {found:#018x} in the chain of {expected:#018x}")]
    WrongOrigin {
        /// The chain's origin.
        expected: u64,
        /// The event's origin.
        found: u64,
    },
    /// The sequence is not the previous one plus one.
    #[error("expected sequence {expected}, found {found}")]
    SequenceGap {
        /// The next sequence of the chain.
        expected: u64,
        /// The event's sequence.
        found: u64,
    },
    /// The parent hash is not the hash of the previous event.
    #[error("event {sequence} names parent {found:#018x}, but the previous event hashes to {expected:#018x}")]
    ParentMismatch {
        /// The event's sequence.
        sequence: u64,
        /// The hash of the previous event.
        expected: u64,
        /// The event's parent hash.
        found: u64,
    },
}

/// Checks that events form one chain: right origin, consecutive sequences,
/// each parent the hash of the event before.
#[derive(Clone, Debug)]
pub struct ChainValidator {
    origin_hash: u64,
    next_sequence: u64,
    expected_parent: u64,
}

impl ChainValidator {
    /// A validator for a fresh chain: expects sequence 1 whose parent is the
    /// genesis hash.
    pub fn new(origin_hash: u64) -> Self {
        Self {
            origin_hash,
            next_sequence: 1,
            expected_parent: genesis_hash(origin_hash),
        }
    }

    /// A validator that continues after `head` whose event hash is `head_hash`.
    pub fn resume(head: CausalLink, head_hash: u64) -> Self {
        Self {
            origin_hash: head.origin_hash,
            next_sequence: head.sequence.saturating_add(1),
            expected_parent: head_hash,
        }
    }

    /// A validator that continues where `snapshot` left the chain.
    pub fn from_snapshot(snapshot: &crate::snapshot::StateSnapshot) -> Self {
        Self::resume(snapshot.chain_link, snapshot.head_hash)
    }

    /// Accepts `event` as the next link, or says why it is not.
    ///
    /// # Errors
    /// In order: `WrongOrigin`, `SequenceGap`, `ParentMismatch`. A refused
    /// event leaves the validator unchanged.
    pub fn push(&mut self, event: &CausalEvent) -> Result<(), ChainError> {
        let link = &event.link;
        if link.origin_hash != self.origin_hash {
            return Err(ChainError::WrongOrigin {
                expected: self.origin_hash,
                found: link.origin_hash,
            });
        }
        if link.sequence != self.next_sequence {
            return Err(ChainError::SequenceGap {
                expected: self.next_sequence,
                found: link.sequence,
            });
        }
        if link.parent_hash != self.expected_parent {
            return Err(ChainError::ParentMismatch {
                sequence: link.sequence,
                expected: self.expected_parent,
                found: link.parent_hash,
            });
        }
        self.expected_parent = event.hash();
        self.next_sequence += 1;
        Ok(())
    }

    /// The sequence of the last accepted event (the resumed head at first).
    pub fn head_seq(&self) -> u64 {
        self.next_sequence - 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_bytes_round_trip_in_declaration_order() {
        let link = CausalLink {
            origin_hash: 1,
            horizon_encoded: 2,
            sequence: 3,
            parent_hash: 4,
        };
        let bytes = link.to_bytes();
        assert_eq!(bytes[0], 1);
        assert_eq!(bytes[8], 2);
        assert_eq!(bytes[16], 3);
        assert_eq!(bytes[24], 4);
        assert_eq!(CausalLink::from_bytes(&bytes), link);
    }

    #[test]
    fn horizon_digest_is_order_independent_and_keeps_the_maximum() {
        let mut forward = ObservedHorizon::new();
        forward.observe(1, 5);
        forward.observe(2, 7);
        let mut backward = ObservedHorizon::new();
        backward.observe(2, 3);
        backward.observe(2, 7);
        backward.observe(1, 5);
        backward.observe(1, 4);
        assert_eq!(forward, backward);
        assert_eq!(backward.get(1), Some(5));
        assert_eq!(
            ObservedHorizon::from_sorted_entries(vec![(1, 5), (2, 7)]).encoded(),
            forward.encoded()
        );
    }
}
