//! Checking and opening a sealed snapshot before a daemon starts from it.
//!
//! A snapshot reaches a node two ways: read from the object store, or handed
//! over directly by the old owner of a planned move ([`crate::handoff`]).
//! Both pass the same checks against the signed ownership record that names
//! the snapshot: its length and SHA-256, its seal (cluster, origin, epoch,
//! input sequence), the payload's encoding and kind, the identity's origin
//! and the compute snapshot's own checks. The record-independent part
//! ([`open_sealed`]) can run before the record is known; the comparison with
//! the record ([`OpenedSnapshot::check_against`]) decides.
//!
//! This module never talks to the server and never panics on any bytes.

use holdfast_compute::{Identity, StateSnapshot};
use sha2::{Digest, Sha256};

use crate::error::ClusterError;
use crate::record::OwnerRecord;
use crate::seal::{ClusterKeys, SealContext};
use crate::wire::SnapshotPayloadView;

/// Where a sealed snapshot says it belongs: the object it was stored as and
/// its seal's epoch and input sequence.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SealedPlace {
    /// The object's name in `HF_C_SNAPSHOTS`.
    pub object: String,
    /// The epoch it was sealed in.
    pub sealed_epoch: u64,
    /// The last input sequence it covers.
    pub input_seq: u64,
}

/// A sealed snapshot that opened: its identity and state, and what it must
/// match in a record before a daemon starts from it.
#[derive(Debug)]
pub(crate) struct OpenedSnapshot {
    /// Where it was sealed for.
    pub place: SealedPlace,
    /// The sealed bytes' length.
    pub bytes: u64,
    /// The sealed bytes' SHA-256.
    pub digest: [u8; 32],
    /// The daemon's identity seed inside it.
    pub seed: [u8; 32],
    /// The kind it holds.
    pub kind: String,
    /// The compute snapshot inside it (its state a view of the plaintext).
    pub state: StateSnapshot,
}

impl OpenedSnapshot {
    /// Accepts this snapshot for `record`: the same object, length, digest,
    /// seal place and kind.
    ///
    /// # Errors
    /// `BadSnapshot` naming the first difference.
    pub(crate) fn check_against(self, record: &OwnerRecord) -> Result<Self, ClusterError> {
        let reference = &record.snapshot;
        let bad = |problem: String| ClusterError::BadSnapshot {
            origin: record.origin,
            object: reference.object.clone(),
            problem,
        };
        if self.place.object != reference.object {
            return Err(bad(format!("was handed over as object {:?}", self.place.object)));
        }
        check_length_and_digest(record, self.bytes, &self.digest)?;
        if self.place.sealed_epoch != reference.sealed_epoch || self.place.input_seq != reference.input_seq {
            return Err(bad(format!(
                "is sealed for epoch {} input {}; its record says epoch {} input {}",
                self.place.sealed_epoch, self.place.input_seq, reference.sealed_epoch, reference.input_seq
            )));
        }
        if self.kind != record.kind {
            return Err(bad(format!(
                "holds kind {:?}, its record kind {:?}",
                self.kind, record.kind
            )));
        }
        Ok(self)
    }
}

/// Checks the snapshot `sealed` (read from the object store) against the
/// record that names it and opens it. The cheap checks (length, digest)
/// come before the seal is opened.
///
/// # Errors
/// `BadSnapshot` naming the first check that failed.
pub(crate) fn check_snapshot(
    keys: &ClusterKeys,
    cluster: &str,
    record: &OwnerRecord,
    sealed: Vec<u8>,
) -> Result<OpenedSnapshot, ClusterError> {
    let reference = &record.snapshot;
    let digest: [u8; 32] = Sha256::digest(&sealed).into();
    check_length_and_digest(record, sealed.len() as u64, &digest)?;
    let place = SealedPlace {
        object: reference.object.clone(),
        sealed_epoch: reference.sealed_epoch,
        input_seq: reference.input_seq,
    };
    open_sealed(keys, cluster, record.origin, place, sealed, digest)?.check_against(record)
}

/// Opens `sealed`, whose SHA-256 is `digest`, as daemon `origin`'s snapshot
/// sealed at `place`, without a record to compare it with: the seal, the
/// payload's encoding, the identity's origin and the compute snapshot.
/// Decrypted in place; the state is a view of that buffer, not a copy.
///
/// # Errors
/// `BadSnapshot` naming the first check that failed.
pub(crate) fn open_sealed(
    keys: &ClusterKeys,
    cluster: &str,
    origin: u64,
    place: SealedPlace,
    sealed: Vec<u8>,
    digest: [u8; 32],
) -> Result<OpenedSnapshot, ClusterError> {
    let bad = |problem: String| ClusterError::BadSnapshot {
        origin,
        object: place.object.clone(),
        problem,
    };
    let context = SealContext {
        cluster,
        origin,
        epoch: place.sealed_epoch,
        input_seq: place.input_seq,
    };
    let bytes = sealed.len() as u64;
    let plain = keys
        .open_in_place(&context, sealed)
        .map_err(|error| bad(error.to_string()))?;
    let payload: SnapshotPayloadView<'_> =
        minicbor::decode(&plain).map_err(|error| bad(format!("does not decode: {error}")))?;
    let identity = Identity::from_seed(payload.seed);
    if identity.origin_hash() != origin {
        return Err(bad("holds the identity of another daemon".into()));
    }
    let state = StateSnapshot::decode(plain.slice_ref(payload.state))
        .map_err(|error| bad(format!("holds bad state: {error}")))?;
    if state.entity_id != *identity.entity_id() {
        return Err(bad("holds state of another entity than its identity".into()));
    }
    Ok(OpenedSnapshot {
        place,
        bytes,
        digest,
        seed: payload.seed,
        kind: payload.kind,
        state,
    })
}

fn check_length_and_digest(record: &OwnerRecord, bytes: u64, digest: &[u8; 32]) -> Result<(), ClusterError> {
    let reference = &record.snapshot;
    let bad = |problem: String| ClusterError::BadSnapshot {
        origin: record.origin,
        object: reference.object.clone(),
        problem,
    };
    if bytes != reference.bytes {
        return Err(bad(format!(
            "is {bytes} bytes; its ownership record says {} (truncated or replaced)",
            reference.bytes
        )));
    }
    if *digest != reference.digest {
        return Err(bad("does not match the digest its ownership record holds".into()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::node::genesis_snapshot;
    use crate::record::SnapshotRef;
    use crate::wire::{self, SnapshotPayload};

    fn sealed_for(keys: &ClusterKeys, payload: &SnapshotPayload, origin: u64) -> (OwnerRecord, Vec<u8>) {
        let context = SealContext {
            cluster: "c",
            origin,
            epoch: 2,
            input_seq: 7,
        };
        let sealed = keys.seal(&context, &wire::encode(payload));
        let record = OwnerRecord {
            origin,
            kind: "counter".into(),
            kind_version: "1.0".into(),
            node: "n".into(),
            epoch: 3,
            snapshot: SnapshotRef {
                object: "o".into(),
                digest: Sha256::digest(&sealed).into(),
                sealed_epoch: 2,
                input_seq: 7,
                output_stream_seq: 0,
                output_seq: 0,
                bytes: sealed.len() as u64,
            },
            halted: None,
            moves: 0,
            writer: "n".into(),
        };
        (record, sealed)
    }

    fn payload(seed: [u8; 32]) -> SnapshotPayload {
        let identity = Identity::from_seed(seed);
        SnapshotPayload {
            seed,
            kind: "counter".into(),
            kind_version: "1.0".into(),
            state: StateSnapshot {
                // Fixed, so two payloads of one seed are equal.
                created_at: 1,
                ..genesis_snapshot(&identity, Bytes::from_static(b"state"))
            }
            .to_bytes()
            .to_vec(),
        }
    }

    #[test]
    fn a_valid_snapshot_opens_with_its_identity_and_state() {
        let keys = ClusterKeys::derive(&[1; 32]).expect("long enough");
        let origin = Identity::from_seed([5; 32]).origin_hash();
        let (record, sealed) = sealed_for(&keys, &payload([5; 32]), origin);
        let opened = check_snapshot(&keys, "c", &record, sealed).expect("valid");
        let expected = payload([5; 32]);
        assert_eq!((opened.seed, opened.kind.as_str()), (expected.seed, "counter"));
        assert_eq!(opened.state.to_bytes().as_ref(), expected.state.as_slice());
        assert_eq!(opened.state.state.as_ref(), b"state");
    }

    #[test]
    fn a_snapshot_holding_another_daemons_identity_is_refused() {
        let keys = ClusterKeys::derive(&[1; 32]).expect("long enough");
        let origin = Identity::from_seed([5; 32]).origin_hash();
        // Sealed correctly for `origin`, but the seed inside is another's.
        let (record, sealed) = sealed_for(&keys, &payload([6; 32]), origin);
        match check_snapshot(&keys, "c", &record, sealed) {
            Err(ClusterError::BadSnapshot { problem, .. }) => {
                assert!(problem.contains("identity of another daemon"))
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_handed_over_snapshot_is_accepted_only_for_the_object_and_place_its_record_names() {
        let keys = ClusterKeys::derive(&[1; 32]).expect("long enough");
        let origin = Identity::from_seed([5; 32]).origin_hash();
        let (record, sealed) = sealed_for(&keys, &payload([5; 32]), origin);
        let open = |object: &str| {
            let place = SealedPlace {
                object: object.into(),
                sealed_epoch: 2,
                input_seq: 7,
            };
            let digest = Sha256::digest(&sealed).into();
            open_sealed(&keys, "c", origin, place, sealed.clone(), digest).expect("opens")
        };
        assert!(open("o").check_against(&record).is_ok());
        let problem = |result: Result<OpenedSnapshot, ClusterError>| match result {
            Err(ClusterError::BadSnapshot { problem, .. }) => problem,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            problem(open("o.older").check_against(&record)),
            "was handed over as object \"o.older\""
        );
        let mut later = record.clone();
        later.snapshot.input_seq = 8;
        assert_eq!(
            problem(open("o").check_against(&later)),
            "is sealed for epoch 2 input 7; its record says epoch 2 input 8"
        );
        let mut other_kind = record;
        other_kind.kind = "blob".into();
        assert_eq!(
            problem(open("o").check_against(&other_kind)),
            "holds kind \"counter\", its record kind \"blob\""
        );
    }

    proptest::proptest! {
        /// Structure-aware: the plaintext is mutated, then sealed again
        /// under the right key and recorded with its digest and length, so
        /// the payload decoder and the compute snapshot decoder themselves
        /// are attacked. Every outcome is the untouched payload or a typed
        /// refusal; nothing panics.
        #[test]
        fn resealed_mutated_snapshots_open_unchanged_or_are_refused(
            at in 0usize..4096, value in proptest::num::u8::ANY, cut in 0usize..64,
        ) {
            let keys = ClusterKeys::derive(&[1; 32]).expect("long enough");
            let origin = Identity::from_seed([5; 32]).origin_hash();
            let original = wire::encode(&payload([5; 32])).to_vec();
            let mut plain = original.clone();
            let at = at % plain.len();
            plain[at] = value;
            plain.truncate(plain.len().saturating_sub(cut));
            let context = SealContext { cluster: "c", origin, epoch: 2, input_seq: 7 };
            let sealed = keys.seal(&context, &plain);
            let (mut record, _) = sealed_for(&keys, &payload([5; 32]), origin);
            record.snapshot.digest = Sha256::digest(&sealed).into();
            record.snapshot.bytes = sealed.len() as u64;
            match check_snapshot(&keys, "c", &record, sealed.clone()) {
                Ok(opened) => {
                    // Only a mutation the encoding does not see can pass,
                    // and then it must decode to a consistent snapshot.
                    proptest::prop_assert_eq!(Identity::from_seed(opened.seed).origin_hash(), origin);
                }
                Err(ClusterError::BadSnapshot { .. }) => {}
                Err(other) => proptest::prop_assert!(false, "untyped refusal {other:?}"),
            }
            if plain == original {
                proptest::prop_assert!(check_snapshot(&keys, "c", &record, sealed).is_ok());
            }
        }
    }
}
