//! Identity and causal-chain behaviour (spec §6): the known-answer vectors,
//! signatures, chain construction rules and the chain validator, including
//! continuity across `stop_with_snapshot` / `spawn_from_snapshot`.
#![cfg(feature = "compute")]

mod common;

use common::{Counter, event, ready_runtime, spawn_seeded};
use holdfast_compute::{
    Bytes, CapabilityFilter, CausalEvent, CausalLink, ChainError, ChainValidator, CoreDaemonError,
    DaemonError, DaemonHostConfig, EntityId, Identity, IdentityError, MeshDaemon, ObservedHorizon,
};

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

#[tokio::test]
async fn identity_chain_vectors() {
    let zero = Identity::from_seed([0; 32]);
    assert_eq!(
        hex(zero.entity_id().as_bytes()),
        "3b6a27bcceb6a42d62a3a8d02a6f0d73653215771de243a63ac048a18b59da29"
    );
    assert_eq!(zero.origin_hash(), 0x76ed_3656_96fc_5eaf);
    assert_eq!(zero.entity_id().origin_hash(), zero.origin_hash());
    let forty_two = Identity::from_seed([0x42; 32]);
    assert_eq!(
        forty_two.entity_id().to_string(),
        "2152f8d19b791d24453242e15f2eab6cb7cffa7b6a5ed30097960e069881db12"
    );
    assert_eq!(forty_two.origin_hash(), 0xc072_3e2f_33aa_f3f0);

    let origin = zero.origin_hash();
    let genesis = CausalEvent {
        link: CausalLink::genesis(origin),
        payload: Bytes::new(),
        received_at: 0,
    };
    assert_eq!(genesis.hash(), 0xcd33_e419_2def_d82e);
    let mut horizon = ObservedHorizon::new();
    horizon.observe(origin, 1);
    assert_eq!(horizon.encoded(), 0x9330_c258_1384_e613);
    let mut two = ObservedHorizon::new();
    two.observe(1, 5);
    two.observe(2, 7);
    assert_eq!(two.encoded(), 0xe431_d824_f088_43bc);

    let runtime = ready_runtime().await;
    let handle = runtime
        .spawn("echo", zero, DaemonHostConfig::default())
        .await
        .unwrap();
    let first = runtime.deliver(origin, &event(origin, 1, b"ping")).unwrap();
    assert_eq!(
        first[0].link,
        CausalLink {
            origin_hash: 0x76ed_3656_96fc_5eaf,
            horizon_encoded: 0x9330_c258_1384_e613,
            sequence: 1,
            parent_hash: 0xcd33_e419_2def_d82e
        }
    );
    assert_eq!(first[0].hash(), 0x603b_26ec_44f9_ff20);
    let second = runtime.deliver(origin, &event(origin, 2, b"pong")).unwrap();
    assert_eq!(second[0].link.horizon_encoded, 0x8f60_940a_5017_b8fb);
    assert_eq!(second[0].link.parent_hash, 0x603b_26ec_44f9_ff20);
    assert_eq!(second[0].hash(), 0xa538_8524_2a55_5366);
    assert_eq!(handle.head().unwrap(), second[0].link);
}

#[test]
fn debug_redacts_secret() {
    let seed = [0x42; 32];
    let identity = Identity::from_seed(seed);
    let secret_hex = hex(&seed);
    for printed in [
        format!("{identity:?}"),
        format!("{:?}", identity.keypair()),
        format!("{identity:#?}"),
    ] {
        assert!(!printed.contains(&secret_hex), "{printed}");
        assert!(!printed.contains("66, 66, 66"), "{printed}");
        assert!(printed.contains(&identity.entity_id().to_string()), "{printed}");
    }
}

#[test]
fn verify_strict_rejects_tampered() {
    let identity = Identity::from_seed([7; 32]);
    let signature = identity.keypair().sign(b"move origin to node b");
    assert_eq!(
        identity.entity_id().verify(b"move origin to node b", &signature),
        Ok(())
    );
    assert_eq!(
        identity.entity_id().verify(b"move origin to node c", &signature),
        Err(IdentityError::BadSignature)
    );
    let mut tampered = signature.to_bytes();
    tampered[5] ^= 1;
    let tampered = holdfast_compute::Signature::from_bytes(&tampered);
    assert_eq!(
        identity.entity_id().verify(b"move origin to node b", &tampered),
        Err(IdentityError::BadSignature)
    );
    let other = Identity::from_seed([8; 32]);
    assert_eq!(
        other.entity_id().verify(b"move origin to node b", &signature),
        Err(IdentityError::BadSignature)
    );
    // A y-coordinate that is not on the curve is not a public key.
    let not_a_point = EntityId::from_bytes([
        0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ]);
    assert_eq!(
        not_a_point.verify(b"x", &signature),
        Err(IdentityError::InvalidPublicKey)
    );
}

/// Emits `n` outputs per event, where `n` is the payload's first byte.
struct Fanout;

impl MeshDaemon for Fanout {
    fn name(&self) -> &str {
        "fanout"
    }
    fn requirements(&self) -> CapabilityFilter {
        CapabilityFilter::default()
    }
    fn process(&mut self, event: &CausalEvent) -> Result<Vec<Bytes>, CoreDaemonError> {
        match event.payload.first() {
            Some(0xff) => Err(CoreDaemonError::ProcessFailed("refused".into())),
            Some(&n) => Ok((0..n).map(|i| Bytes::from(vec![i])).collect()),
            None => Ok(Vec::new()),
        }
    }
}

#[tokio::test]
async fn multi_output_sequences() {
    let runtime = ready_runtime().await;
    runtime.register_factory("fanout", || Box::new(Fanout)).unwrap();
    let identity = Identity::from_seed([3; 32]);
    let origin = identity.origin_hash();
    runtime
        .spawn("fanout", identity, DaemonHostConfig::default())
        .await
        .unwrap();
    let mut validator = ChainValidator::new(origin);
    let first = runtime.deliver(origin, &event(9, 1, &[3])).unwrap();
    let second = runtime.deliver(origin, &event(9, 2, &[2])).unwrap();
    let sequences: Vec<u64> = first
        .iter()
        .chain(&second)
        .map(|output| output.link.sequence)
        .collect();
    assert_eq!(sequences, [1, 2, 3, 4, 5]);
    for output in first.iter().chain(&second) {
        validator.push(output).unwrap();
    }
    assert_eq!(validator.head_seq(), 5);
    // Outputs of one event share the horizon of that event.
    assert!(
        first
            .iter()
            .all(|output| output.link.horizon_encoded == first[0].link.horizon_encoded)
    );
    assert_ne!(first[0].link.horizon_encoded, second[0].link.horizon_encoded);
    assert_eq!(runtime.handle(origin).unwrap().stats().unwrap().events_emitted, 5);
}

#[tokio::test]
async fn zero_outputs_do_not_advance() {
    let runtime = ready_runtime().await;
    runtime.register_factory("fanout", || Box::new(Fanout)).unwrap();
    let (origin, handle) = spawn_seeded(&runtime, "fanout", 3, DaemonHostConfig::default()).await;
    let before = handle.head().unwrap();
    assert_eq!(before, CausalLink::genesis(origin));
    assert_eq!(runtime.deliver(origin, &event(9, 1, &[0])).unwrap(), Vec::new());
    assert_eq!(handle.head().unwrap(), before);
    // ...but the event was processed and observed.
    assert_eq!(handle.stats().unwrap().events_processed, 1);
    let next = runtime.deliver(origin, &event(9, 2, &[1])).unwrap();
    assert_eq!(next[0].link.sequence, 1);
    let mut horizon = ObservedHorizon::new();
    horizon.observe(9, 2);
    assert_eq!(next[0].link.horizon_encoded, horizon.encoded());
}

#[tokio::test]
async fn process_error_leaves_chain() {
    let runtime = ready_runtime().await;
    runtime.register_factory("fanout", || Box::new(Fanout)).unwrap();
    let (origin, handle) = spawn_seeded(&runtime, "fanout", 3, DaemonHostConfig::default()).await;
    let first = runtime.deliver(origin, &event(9, 1, &[1])).unwrap();
    let head = handle.head().unwrap();
    let refused = runtime.deliver(origin, &event(9, 7, &[0xff]));
    assert_eq!(
        refused,
        Err(DaemonError::Core(CoreDaemonError::ProcessFailed(
            "refused".into()
        )))
    );
    assert_eq!(handle.head().unwrap(), head);
    let stats = handle.stats().unwrap();
    assert_eq!(
        (stats.events_processed, stats.events_emitted, stats.errors),
        (1, 1, 1)
    );
    // The failed event's sequence was not observed: the next output's horizon
    // is the one of {9: 2}, not {9: 7}.
    let next = runtime.deliver(origin, &event(9, 2, &[1])).unwrap();
    let mut horizon = ObservedHorizon::new();
    horizon.observe(9, 2);
    assert_eq!(next[0].link.horizon_encoded, horizon.encoded());
    assert_eq!(handle.replay(1).unwrap(), vec![first[0].clone(), next[0].clone()]);
}

#[test]
fn validator_detects_gap_parent_origin() {
    let origin = 0x1234;
    let genesis = CausalEvent {
        link: CausalLink::genesis(origin),
        payload: Bytes::new(),
        received_at: 0,
    };
    let first = CausalEvent {
        link: CausalLink {
            origin_hash: origin,
            horizon_encoded: 0,
            sequence: 1,
            parent_hash: genesis.hash(),
        },
        payload: Bytes::from_static(b"a"),
        received_at: 0,
    };
    let mut validator = ChainValidator::new(origin);

    let foreign = CausalEvent {
        link: CausalLink {
            origin_hash: 99,
            ..first.link
        },
        ..first.clone()
    };
    assert_eq!(
        validator.push(&foreign),
        Err(ChainError::WrongOrigin {
            expected: origin,
            found: 99
        })
    );
    let gap = CausalEvent {
        link: CausalLink {
            sequence: 2,
            ..first.link
        },
        ..first.clone()
    };
    assert_eq!(
        validator.push(&gap),
        Err(ChainError::SequenceGap {
            expected: 1,
            found: 2
        })
    );
    let orphan = CausalEvent {
        link: CausalLink {
            parent_hash: 5,
            ..first.link
        },
        ..first.clone()
    };
    assert_eq!(
        validator.push(&orphan),
        Err(ChainError::ParentMismatch {
            sequence: 1,
            expected: genesis.hash(),
            found: 5
        })
    );
    // Refusals leave the validator where it was.
    assert_eq!(validator.head_seq(), 0);
    assert_eq!(validator.push(&first), Ok(()));
    assert_eq!(validator.head_seq(), 1);
    // A second event whose parent is the genesis again is refused.
    let fork = CausalEvent {
        link: CausalLink {
            sequence: 2,
            ..first.link
        },
        ..first.clone()
    };
    assert_eq!(
        validator.push(&fork),
        Err(ChainError::ParentMismatch {
            sequence: 2,
            expected: first.hash(),
            found: genesis.hash()
        })
    );
}

#[tokio::test]
async fn chain_continues_across_snapshot_restore() {
    let runtime = ready_runtime().await;
    runtime
        .register_factory("counter@2", || Box::new(Counter::default()))
        .unwrap();
    let identity = Identity::from_seed([0x11; 32]);
    let origin = identity.origin_hash();
    runtime
        .spawn("counter", identity.clone(), DaemonHostConfig::default())
        .await
        .unwrap();
    let mut validator = ChainValidator::new(origin);
    for sequence in 1..=5 {
        for output in runtime.deliver(origin, &event(77, sequence, b"x")).unwrap() {
            validator.push(&output).unwrap();
        }
    }
    let snapshot = runtime.stop_with_snapshot(origin).await.unwrap();
    assert_eq!(snapshot.through_seq, 5);
    assert_eq!(snapshot.horizon.get(77), Some(5));
    let resumed = ChainValidator::from_snapshot(&snapshot);
    assert_eq!(resumed.head_seq(), 5);

    let handle = runtime
        .spawn_from_snapshot(
            "counter@2",
            identity,
            snapshot.clone(),
            DaemonHostConfig::default(),
        )
        .await
        .unwrap();
    assert_eq!(handle.kind(), "counter@2");
    let after = runtime.deliver(origin, &event(77, 6, b"x")).unwrap();
    assert_eq!(after[0].link.sequence, 6);
    assert_eq!(after[0].link.parent_hash, snapshot.head_hash);
    assert_eq!(after[0].payload, Bytes::copy_from_slice(&6u64.to_le_bytes()));
    // The horizon carried over: {77: 6} is what the output was linked under.
    let mut horizon = snapshot.horizon.clone();
    horizon.observe(77, 6);
    assert_eq!(after[0].link.horizon_encoded, horizon.encoded());
    validator.push(&after[0]).unwrap();
    assert_eq!(validator.head_seq(), 6);
}

#[test]
fn collision_search_finds_the_documented_counters() {
    // Seeds with counter i in their first 8 bytes: the first pair whose
    // origin hashes share their low 32 bits (spec §6). The pair is what the
    // identity-mismatch tests use: equal truncated hashes, different ids.
    let mut seen = std::collections::HashMap::new();
    let collision = (0u64..300_000).find_map(|i| {
        let mut seed = [0u8; 32];
        seed[..8].copy_from_slice(&i.to_le_bytes());
        seen.insert(Identity::from_seed(seed).origin_hash() as u32, i)
            .map(|earlier| (earlier, i))
    });
    assert_eq!(collision, Some((8_709, 77_369)));
}

/// Panics on the payload `boom`, echoes anything else.
struct Fragile;

impl MeshDaemon for Fragile {
    fn name(&self) -> &str {
        "fragile"
    }
    fn requirements(&self) -> CapabilityFilter {
        CapabilityFilter::default()
    }
    fn process(&mut self, event: &CausalEvent) -> Result<Vec<Bytes>, CoreDaemonError> {
        assert_ne!(event.payload.as_ref(), b"boom", "the daemon panicked");
        Ok(vec![event.payload.clone()])
    }
}

#[tokio::test]
async fn panic_in_process_unwinds_and_leaves_records_consistent() {
    let runtime = ready_runtime().await;
    runtime.register_factory("fragile", || Box::new(Fragile)).unwrap();
    let (origin, handle) = spawn_seeded(&runtime, "fragile", 0x0f, DaemonHostConfig::default()).await;
    let first = runtime.deliver(origin, &event(9, 1, b"a")).unwrap();
    let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        runtime.deliver(origin, &event(9, 2, b"boom"))
    }));
    assert!(panicked.is_err());
    // Nothing was recorded for the panicking call, and the daemon still runs.
    assert_eq!(handle.head().unwrap(), first[0].link);
    assert_eq!(handle.stats().unwrap().events_processed, 1);
    let mut validator = ChainValidator::new(origin);
    validator.push(&first[0]).unwrap();
    let next = runtime.deliver(origin, &event(9, 3, b"b")).unwrap();
    validator.push(&next[0]).unwrap();
    assert_eq!(runtime.daemon_count(), 1);
}
