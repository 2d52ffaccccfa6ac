//! The snapshot format (spec §7): the golden vector, round trips, one test
//! per error variant, and property tests that decoding never panics, never
//! accepts a flipped bit or a prefix, and round-trips every valid snapshot.
#![cfg(feature = "compute")]

mod common;

use common::{event, ready_runtime};
use holdfast_compute::{
    Bytes, CausalEvent, CausalLink, DaemonHostConfig, EntityId, Identity, MAX_SEQUENCE, ObservedHorizon,
    SnapshotError, StateSnapshot,
};
use proptest::prelude::*;

const GOLDEN_HEX: &str = concat!(
    "484643534e415000010000003b6a27bcceb6a42d62a3a8d02a6f0d73653215771de243a63ac048a18b59da29",
    "0100000000000000af5efc965636ed7613e6841358c2309301000000000000002ed8ef2d19e433cd7d7b70d6",
    "638b82170068e5cf8b01000001000000af5efc965636ed760100000000000000080000000000000001000000",
    "00000000b0c02885f4300e49",
);

fn unhex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect()
}

/// A valid snapshot of a fresh chain with `outputs` outputs of `payload`.
fn valid_snapshot(seed: u8, outputs: u64, horizon: &[(u64, u64)], state: &[u8]) -> StateSnapshot {
    let identity = Identity::from_seed([seed; 32]);
    let origin = identity.origin_hash();
    let mut head = CausalLink::genesis(origin);
    let mut head_hash = CausalEvent {
        link: head,
        payload: Bytes::new(),
        received_at: 0,
    }
    .hash();
    for sequence in 1..=outputs {
        head = CausalLink {
            origin_hash: origin,
            horizon_encoded: 0,
            sequence,
            parent_hash: head_hash,
        };
        head_hash = CausalEvent {
            link: head,
            payload: Bytes::from_static(b"o"),
            received_at: 0,
        }
        .hash();
    }
    let mut observed = ObservedHorizon::new();
    for &(origin, sequence) in horizon {
        observed.observe(origin, sequence);
    }
    StateSnapshot {
        entity_id: *identity.entity_id(),
        through_seq: outputs,
        chain_link: head,
        head_hash,
        horizon: observed,
        state: Bytes::copy_from_slice(state),
        created_at: 1_700_000_000_000,
    }
}

/// Re-seals `bytes` with a correct checksum after a test edited a field.
fn reseal(mut bytes: Vec<u8>) -> Vec<u8> {
    let body = bytes.len() - 8;
    let checksum = xxhash_rust::xxh3::xxh3_64(&bytes[..body]);
    bytes[body..].copy_from_slice(&checksum.to_le_bytes());
    bytes
}

#[tokio::test]
async fn snapshot_golden_bytes() {
    let runtime = ready_runtime().await;
    let identity = Identity::from_seed([0; 32]);
    let origin = identity.origin_hash();
    runtime
        .spawn("counter", identity, DaemonHostConfig::default())
        .await
        .unwrap();
    let output = runtime.deliver(origin, &event(origin, 1, b"tick")).unwrap();
    assert_eq!(output[0].payload, Bytes::copy_from_slice(&1u64.to_le_bytes()));
    let mut snapshot = runtime
        .snapshot(origin)
        .await
        .unwrap()
        .expect("a counter has state");
    snapshot.created_at = 1_700_000_000_000;
    assert_eq!(snapshot.head_hash, 0x1782_8b63_d670_7b7d);

    let golden = unhex(GOLDEN_HEX);
    assert_eq!(golden.len(), 144);
    assert_eq!(snapshot.encoded_len(), 144);
    assert_eq!(snapshot.to_bytes().as_ref(), golden.as_slice());
    assert_eq!(
        u64::from_le_bytes(golden[136..].try_into().unwrap()),
        0x490e_30f4_8528_c0b0
    );
    assert_eq!(StateSnapshot::from_bytes(&golden), Ok(snapshot.clone()));
    assert_eq!(StateSnapshot::decode(Bytes::from(golden)), Ok(snapshot));
}

#[test]
fn decode_shares_the_input_buffer_and_from_bytes_copies() {
    let snapshot = valid_snapshot(1, 3, &[(5, 9)], &[0xab; 64]);
    let encoded = snapshot.to_bytes();
    let state_start = 104 + 16 + 8;
    let decoded = StateSnapshot::decode(encoded.clone()).unwrap();
    assert_eq!(decoded, snapshot);
    assert_eq!(decoded.state.as_ptr(), encoded[state_start..].as_ptr());
    let copied = StateSnapshot::from_bytes(&encoded).unwrap();
    assert_eq!(copied, snapshot);
    assert_ne!(copied.state.as_ptr(), encoded[state_start..].as_ptr());
    assert_eq!(snapshot.origin_hash(), snapshot.chain_link.origin_hash);
}

#[test]
fn short_input_is_truncated() {
    assert_eq!(
        StateSnapshot::from_bytes(b"HFCSNAP"),
        Err(SnapshotError::Truncated {
            needed: 12,
            available: 7
        })
    );
    let encoded = valid_snapshot(1, 0, &[], b"").to_bytes();
    assert_eq!(
        StateSnapshot::from_bytes(&encoded[..119]),
        Err(SnapshotError::Truncated {
            needed: 120,
            available: 119
        })
    );
}

#[test]
fn wrong_magic_is_bad_magic() {
    let mut encoded = valid_snapshot(1, 0, &[], b"").to_bytes().to_vec();
    encoded[7] = b'!';
    assert_eq!(StateSnapshot::from_bytes(&encoded), Err(SnapshotError::BadMagic));
}

#[test]
fn other_version_is_unsupported() {
    let mut encoded = valid_snapshot(1, 0, &[], b"").to_bytes().to_vec();
    encoded[8..10].copy_from_slice(&2u16.to_le_bytes());
    assert_eq!(
        StateSnapshot::from_bytes(&encoded),
        Err(SnapshotError::UnsupportedVersion(2))
    );
}

#[test]
fn set_flags_are_reserved() {
    let mut encoded = valid_snapshot(1, 0, &[], b"").to_bytes().to_vec();
    encoded[10..12].copy_from_slice(&0x0100u16.to_le_bytes());
    assert_eq!(
        StateSnapshot::from_bytes(&encoded),
        Err(SnapshotError::ReservedFlags(0x0100))
    );
}

#[test]
fn edited_state_is_checksum_mismatch() {
    let snapshot = valid_snapshot(1, 2, &[(3, 4)], b"state");
    let mut encoded = snapshot.to_bytes().to_vec();
    let stored = u64::from_le_bytes(encoded[encoded.len() - 8..].try_into().unwrap());
    encoded[104 + 16 + 8] ^= 0x20;
    match StateSnapshot::from_bytes(&encoded) {
        Err(SnapshotError::ChecksumMismatch {
            stored: found,
            computed,
        }) => {
            assert_eq!(found, stored);
            assert_ne!(computed, stored);
        }
        other => panic!("expected a checksum mismatch, got {other:?}"),
    }
}

#[test]
fn extra_bytes_are_trailing() {
    let mut encoded = valid_snapshot(1, 0, &[], b"").to_bytes().to_vec();
    encoded.extend_from_slice(&[0, 0, 0]);
    assert_eq!(
        StateSnapshot::from_bytes(&encoded),
        Err(SnapshotError::TrailingBytes(3))
    );
}

#[test]
fn contradicting_fields_are_inconsistent() {
    let valid = valid_snapshot(1, 2, &[(3, 4), (8, 1)], b"s").to_bytes().to_vec();
    let inconsistent = |edit: &dyn Fn(&mut Vec<u8>)| {
        let mut bytes = valid.clone();
        edit(&mut bytes);
        StateSnapshot::from_bytes(&reseal(bytes))
    };
    // through_seq (offset 44) differs from the head's sequence (offset 68).
    assert!(matches!(
        inconsistent(&|bytes| bytes[44] = 9),
        Err(SnapshotError::Inconsistent(rule)) if rule.contains("through_seq")
    ));
    // The head's origin (offset 52) is not the entity's.
    assert!(matches!(
        inconsistent(&|bytes| bytes[52] ^= 1),
        Err(SnapshotError::Inconsistent(rule)) if rule.contains("origin")
    ));
    // Horizon entries out of order: swap the two entries (104.., 120..).
    assert!(matches!(
        inconsistent(&|bytes| {
            let (first, second) = (bytes[104..120].to_vec(), bytes[120..136].to_vec());
            bytes[104..120].copy_from_slice(&second);
            bytes[120..136].copy_from_slice(&first);
        }),
        Err(SnapshotError::Inconsistent(rule)) if rule.contains("ascending")
    ));
    // A snapshot at sequence 0 with a non-genesis head hash (offset 84).
    let genesis = valid_snapshot(1, 0, &[], b"").to_bytes().to_vec();
    let mut edited = genesis.clone();
    edited[84] ^= 1;
    assert!(matches!(
        StateSnapshot::from_bytes(&reseal(edited)),
        Err(SnapshotError::Inconsistent(rule)) if rule.contains("genesis")
    ));
}

#[test]
fn a_chain_position_past_the_ceiling_is_refused_with_the_position() {
    let valid = valid_snapshot(1, 2, &[(3, 4)], b"s").to_bytes().to_vec();
    // Moves through_seq (offset 44) and the head's sequence (offset 52 + 16)
    // together, so that only the ceiling rule can object.
    let at = |sequence: u64| {
        let mut bytes = valid.clone();
        bytes[44..52].copy_from_slice(&sequence.to_le_bytes());
        bytes[68..76].copy_from_slice(&sequence.to_le_bytes());
        assert_ne!(bytes, valid, "could not move the chain position");
        reseal(bytes)
    };
    for through_seq in [MAX_SEQUENCE + 1, u64::MAX] {
        let expected = SnapshotError::SequenceBeyondCeiling {
            through_seq,
            ceiling: MAX_SEQUENCE,
        };
        assert_eq!(StateSnapshot::from_bytes(&at(through_seq)), Err(expected.clone()));
        assert_eq!(StateSnapshot::decode(Bytes::from(at(through_seq))), Err(expected));
    }
    let at_ceiling = StateSnapshot::from_bytes(&at(MAX_SEQUENCE)).unwrap();
    assert_eq!(at_ceiling.through_seq, MAX_SEQUENCE);
    assert_eq!(at_ceiling.chain_link.sequence, MAX_SEQUENCE);
    assert_eq!(
        SnapshotError::SequenceBeyondCeiling {
            through_seq: u64::MAX,
            ceiling: MAX_SEQUENCE
        }
        .to_string(),
        "snapshot through_seq 18446744073709551615 is beyond the sequence ceiling 9223372036854775807"
    );
}

#[test]
fn huge_declared_lengths_are_truncated_without_overflow() {
    let mut bytes = valid_snapshot(1, 0, &[], b"").to_bytes().to_vec();
    bytes[100..104].copy_from_slice(&u32::MAX.to_le_bytes());
    assert_eq!(
        StateSnapshot::from_bytes(&bytes),
        Err(SnapshotError::Truncated {
            needed: 104 + 16 * u64::from(u32::MAX),
            available: 120
        })
    );
    let mut bytes = valid_snapshot(1, 0, &[], b"").to_bytes().to_vec();
    bytes[104..112].copy_from_slice(&u64::MAX.to_le_bytes());
    assert_eq!(
        StateSnapshot::from_bytes(&bytes),
        Err(SnapshotError::Truncated {
            needed: u64::MAX,
            available: 120
        })
    );
}

fn arbitrary_snapshot() -> impl Strategy<Value = StateSnapshot> {
    (
        any::<u8>(),
        0u64..6,
        proptest::collection::vec((any::<u64>(), any::<u64>()), 0..6),
        proptest::collection::vec(any::<u8>(), 0..64),
    )
        .prop_map(|(seed, outputs, horizon, state)| valid_snapshot(seed, outputs, &horizon, &state))
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
        let _ = StateSnapshot::from_bytes(&bytes);
        let _ = StateSnapshot::decode(Bytes::from(bytes));
    }

    #[test]
    fn arbitrary_bytes_behind_a_valid_header_never_panic(
        tail in proptest::collection::vec(any::<u8>(), 0..512),
    ) {
        let mut bytes = b"HFCSNAP\0\x01\x00\x00\x00".to_vec();
        bytes.extend_from_slice(&tail);
        let _ = StateSnapshot::from_bytes(&bytes);
    }

    #[test]
    fn valid_snapshots_round_trip(snapshot in arbitrary_snapshot()) {
        let encoded = snapshot.to_bytes();
        prop_assert_eq!(encoded.len(), snapshot.encoded_len());
        prop_assert_eq!(StateSnapshot::from_bytes(&encoded), Ok(snapshot.clone()));
        prop_assert_eq!(StateSnapshot::decode(encoded), Ok(snapshot));
    }

    #[test]
    fn every_single_bit_flip_is_refused(snapshot in arbitrary_snapshot()) {
        let encoded = snapshot.to_bytes().to_vec();
        for bit in 0..encoded.len() * 8 {
            let mut flipped = encoded.clone();
            flipped[bit / 8] ^= 1 << (bit % 8);
            prop_assert!(StateSnapshot::from_bytes(&flipped).is_err(), "bit {} accepted", bit);
        }
    }

    #[test]
    fn every_proper_prefix_is_truncated(snapshot in arbitrary_snapshot()) {
        let encoded = snapshot.to_bytes();
        for len in 0..encoded.len() {
            let refused = StateSnapshot::from_bytes(&encoded[..len]);
            prop_assert!(
                matches!(refused, Err(SnapshotError::Truncated { available, .. }) if available == len as u64),
                "prefix {} gave {:?}", len, refused
            );
        }
    }
}

#[test]
fn entity_ids_print_as_hex() {
    let id = EntityId::from_bytes([0xab; 32]);
    assert_eq!(format!("{id}"), "ab".repeat(32));
    assert_eq!(format!("{id:?}"), "ab".repeat(32));
}
