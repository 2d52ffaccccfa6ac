//! The sequence ceiling ([`MAX_SEQUENCE`]): a snapshot built in memory past it
//! is refused by `spawn_from_snapshot` before anything is touched, and a
//! daemon whose chain stands at (or next to) it refuses outputs that would
//! pass it with `SequenceExhausted`, leaving its chain, horizon and output
//! log unchanged, instead of overflowing `head + 1`. The decoder's side of
//! the rule is in `snapshot.rs`.
#![cfg(feature = "compute")]

mod common;

use common::{Counter, event, ready_runtime, register_counted};
use holdfast_compute::{
    Bytes, CapabilityFilter, CausalEvent, CausalLink, ChainValidator, CoreDaemonError, DaemonError,
    DaemonHostConfig, DaemonRuntime, Identity, MAX_SEQUENCE, MeshDaemon, ObservedHorizon, SnapshotError,
    StateSnapshot,
};

/// Emits one output per byte of the inbound payload (none for an empty one).
struct PerByte;

impl MeshDaemon for PerByte {
    fn name(&self) -> &str {
        "per-byte"
    }
    fn requirements(&self) -> CapabilityFilter {
        CapabilityFilter::default()
    }
    fn process(&mut self, event: &CausalEvent) -> Result<Vec<Bytes>, CoreDaemonError> {
        Ok((0..event.payload.len())
            .map(|i| event.payload.slice(i..=i))
            .collect())
    }
}

/// An in-memory snapshot whose chain stands at `sequence`, with a head hash
/// that no genesis rule constrains (sequence > 0).
fn snapshot_at(identity: &Identity, sequence: u64, state: Bytes) -> StateSnapshot {
    StateSnapshot {
        entity_id: *identity.entity_id(),
        through_seq: sequence,
        chain_link: CausalLink {
            origin_hash: identity.origin_hash(),
            horizon_encoded: 0,
            sequence,
            parent_hash: 0x1111_2222_3333_4444,
        },
        head_hash: 0x5555_6666_7777_8888,
        horizon: ObservedHorizon::new(),
        state,
        created_at: 0,
    }
}

fn counter_state(count: u64) -> Bytes {
    Bytes::copy_from_slice(&count.to_le_bytes())
}

async fn restore(runtime: &DaemonRuntime, kind: &str, snapshot: StateSnapshot) -> u64 {
    let identity = Identity::from_seed([0x5e; 32]);
    let origin = identity.origin_hash();
    runtime
        .spawn_from_snapshot(kind, identity, snapshot, DaemonHostConfig::default())
        .await
        .unwrap();
    origin
}

#[tokio::test]
async fn spawn_from_snapshot_past_the_ceiling_is_refused_before_anything_is_touched() {
    let runtime = ready_runtime().await;
    let calls = register_counted(&runtime, "counted-counter", || Box::new(Counter::default()));
    let identity = Identity::from_seed([0x5e; 32]);
    for through_seq in [MAX_SEQUENCE + 1, u64::MAX] {
        let refused = runtime
            .spawn_from_snapshot(
                "counted-counter",
                identity.clone(),
                snapshot_at(&identity, through_seq, counter_state(7)),
                DaemonHostConfig::default(),
            )
            .await;
        assert_eq!(
            refused.unwrap_err(),
            DaemonError::InvalidSnapshot(SnapshotError::SequenceBeyondCeiling {
                through_seq,
                ceiling: MAX_SEQUENCE,
            })
        );
    }
    assert_eq!(calls.get(), 0, "the factory ran for a refused snapshot");
    assert_eq!(runtime.daemon_count(), 0);
    assert!(runtime.handle(identity.origin_hash()).is_none());
    // The origin stays free: the same snapshot at the ceiling itself restores.
    runtime
        .spawn_from_snapshot(
            "counted-counter",
            identity.clone(),
            snapshot_at(&identity, MAX_SEQUENCE, counter_state(7)),
            DaemonHostConfig::default(),
        )
        .await
        .unwrap();
    assert_eq!(calls.get(), 1);
}

#[tokio::test]
async fn a_daemon_restored_at_the_ceiling_refuses_every_emitting_delivery_and_keeps_its_chain() {
    let runtime = ready_runtime().await;
    let identity = Identity::from_seed([0x5e; 32]);
    let restored = snapshot_at(&identity, MAX_SEQUENCE, counter_state(41));
    let origin = restore(&runtime, "counter", restored.clone()).await;
    let handle = runtime.handle(origin).unwrap();

    for attempt in 1..=2 {
        let refused = runtime.deliver(origin, &event(9, attempt, b"tick"));
        assert_eq!(
            refused,
            Err(DaemonError::Core(CoreDaemonError::SequenceExhausted {
                origin_hash: origin,
                head: MAX_SEQUENCE,
                outputs: 1,
            })),
            "attempt {attempt}"
        );
    }

    assert_eq!(handle.head().unwrap(), restored.chain_link);
    let stats = handle.stats().unwrap();
    assert_eq!(
        (stats.events_processed, stats.events_emitted, stats.errors),
        (0, 0, 2)
    );
    // Nothing was logged: the oldest retained output would be MAX_SEQUENCE + 1.
    assert_eq!(
        runtime.replay(origin, 1),
        Err(DaemonError::Core(CoreDaemonError::Stale(MAX_SEQUENCE + 1)))
    );
    assert_eq!(runtime.replay(origin, MAX_SEQUENCE + 1), Ok(Vec::new()));
    let after = runtime.snapshot(origin).await.unwrap().unwrap();
    assert_eq!(after.through_seq, MAX_SEQUENCE);
    assert_eq!(after.chain_link, restored.chain_link);
    assert_eq!(after.head_hash, restored.head_hash);
    assert!(after.horizon.is_empty(), "the refused events were observed");
    // `process` ran for both refused events (the runtime learns how many
    // outputs an event has only from it), so the counter's own state moved.
    assert_eq!(after.state, counter_state(43));
}

#[tokio::test]
async fn a_delivery_without_outputs_still_succeeds_at_the_ceiling() {
    let runtime = ready_runtime().await;
    runtime
        .register_factory("per-byte", || Box::new(PerByte))
        .unwrap();
    let identity = Identity::from_seed([0x5e; 32]);
    let origin = restore(
        &runtime,
        "per-byte",
        snapshot_at(&identity, MAX_SEQUENCE, Bytes::new()),
    )
    .await;

    assert_eq!(runtime.deliver(origin, &event(9, 3, b"")), Ok(Vec::new()));
    let handle = runtime.handle(origin).unwrap();
    assert_eq!(handle.head().unwrap().sequence, MAX_SEQUENCE);
    assert_eq!(handle.stats().unwrap().events_processed, 1);
    let last = runtime.stop_with_snapshot(origin).await.unwrap();
    assert_eq!(last.through_seq, MAX_SEQUENCE);
    assert_eq!(last.horizon.iter().collect::<Vec<_>>(), vec![(9, 3)]);
}

#[tokio::test]
async fn outputs_that_would_straddle_the_ceiling_are_refused_as_a_whole() {
    let runtime = ready_runtime().await;
    runtime
        .register_factory("per-byte", || Box::new(PerByte))
        .unwrap();
    let identity = Identity::from_seed([0x5e; 32]);
    let restored = snapshot_at(&identity, MAX_SEQUENCE - 1, Bytes::new());
    let origin = restore(&runtime, "per-byte", restored.clone()).await;
    let handle = runtime.handle(origin).unwrap();

    // Two outputs after MAX_SEQUENCE - 1 would need MAX_SEQUENCE + 1.
    assert_eq!(
        runtime.deliver(origin, &event(9, 1, b"ab")),
        Err(DaemonError::Core(CoreDaemonError::SequenceExhausted {
            origin_hash: origin,
            head: MAX_SEQUENCE - 1,
            outputs: 2,
        }))
    );
    assert_eq!(handle.head().unwrap(), restored.chain_link);

    // One output fits exactly, and continues the restored chain.
    let last = runtime.deliver(origin, &event(9, 2, b"a")).unwrap();
    assert_eq!(last.len(), 1);
    assert_eq!(last[0].link.sequence, MAX_SEQUENCE);
    let mut validator = ChainValidator::from_snapshot(&restored);
    validator.push(&last[0]).unwrap();
    assert_eq!(validator.head_seq(), MAX_SEQUENCE);

    // After it, nothing more can be emitted.
    assert_eq!(
        runtime.deliver(origin, &event(9, 3, b"a")),
        Err(DaemonError::Core(CoreDaemonError::SequenceExhausted {
            origin_hash: origin,
            head: MAX_SEQUENCE,
            outputs: 1,
        }))
    );
    assert_eq!(handle.head().unwrap(), last[0].link);
    assert_eq!(runtime.replay(origin, MAX_SEQUENCE).unwrap(), last);
    let stats = handle.stats().unwrap();
    assert_eq!(
        (stats.events_processed, stats.events_emitted, stats.errors),
        (1, 1, 2)
    );
}

#[test]
fn the_ceiling_is_the_largest_signed_64_bit_integer() {
    assert_eq!(MAX_SEQUENCE, i64::MAX.unsigned_abs());
    assert_eq!(
        CoreDaemonError::SequenceExhausted {
            origin_hash: 0xab,
            head: MAX_SEQUENCE,
            outputs: 1,
        }
        .to_string(),
        "daemon 0x00000000000000ab cannot emit 1 outputs after sequence 9223372036854775807: \
         its chain would pass the sequence ceiling 9223372036854775807"
    );
}
