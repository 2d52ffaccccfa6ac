//! The public surface as downstream users rely on it (spec §3): module
//! paths, trait bounds, `Send` futures, and the everyday flow of spawn,
//! deliver, snapshot, restore and stop, including the identity check on two
//! identities whose origin hashes collide in their low 32 bits.
#![cfg(feature = "compute")]

mod common;

use std::sync::Arc;

use common::{Calls, Counter, Echo, event, mesh, ready_runtime, register_counted};
use holdfast_compute::causal::{CausalEvent as PathEvent, CausalLink as PathLink};
use holdfast_compute::compute::{
    DaemonError as ComputeError, DaemonHandle, DaemonRuntime as PathRuntime, MeshDaemon as PathDaemon,
    StateSnapshot as ComputeSnapshot,
};
use holdfast_compute::{
    Bytes, ChainValidator, CoreDaemonError, DaemonError, DaemonHostConfig, DaemonRuntime, Identity, Mesh,
    StateSnapshot,
};

fn assert_send<T: Send>(_: &T) {}
fn assert_bounds<T: Clone + Send + Sync + 'static>() {}
fn assert_error<T: std::error::Error + std::fmt::Debug + Clone + PartialEq + Eq + Send + Sync + 'static>() {}
fn assert_shared<T: Send + Sync>() {}

#[test]
fn types_have_the_promised_bounds_and_paths() {
    assert_bounds::<DaemonRuntime>();
    assert_shared::<Mesh>();
    assert_shared::<Identity>();
    assert_error::<DaemonError>();
    assert_error::<CoreDaemonError>();
    assert_error::<holdfast_compute::core::DaemonError>();
    assert_error::<holdfast_compute::SnapshotError>();
    assert_error::<holdfast_compute::ChainError>();
    assert_error::<holdfast_compute::IdentityError>();
    fn is_error<T: std::error::Error + Send + Sync + 'static>() {}
    is_error::<holdfast_compute::MeshError>();
    // The paths name the same items as the root.
    let _: fn(Arc<Mesh>) -> PathRuntime = DaemonRuntime::new;
    let _: Option<ComputeError> = None::<DaemonError>;
    let _: Option<PathEvent> = None::<holdfast_compute::CausalEvent>;
    let _: Option<PathLink> = None::<holdfast_compute::CausalLink>;
    let _: Option<&dyn PathDaemon> = None::<&dyn holdfast_compute::MeshDaemon>;
    let _: Option<ComputeSnapshot> = None::<StateSnapshot>;
    assert_eq!(holdfast_compute::CausalLink::LEN, 32);
}

#[tokio::test]
async fn async_methods_return_send_futures() {
    let runtime = ready_runtime().await;
    let identity = Identity::from_seed([1; 32]);
    let origin = identity.origin_hash();
    let snapshot = {
        runtime
            .spawn("counter", identity.clone(), DaemonHostConfig::default())
            .await
            .unwrap();
        runtime.stop_with_snapshot(origin).await.unwrap()
    };
    assert_send(&runtime.start());
    assert_send(&runtime.shutdown());
    assert_send(&runtime.spawn("echo", identity.clone(), DaemonHostConfig::default()));
    assert_send(&runtime.spawn_from_snapshot(
        "counter",
        identity.clone(),
        snapshot,
        DaemonHostConfig::default(),
    ));
    assert_send(&runtime.stop(origin));
    assert_send(&runtime.stop_with_snapshot(origin));
    assert_send(&runtime.snapshot(origin));
    let handle = runtime
        .spawn("echo", identity, DaemonHostConfig::default())
        .await
        .unwrap();
    assert_send(&handle.snapshot());
    assert_send(
        &holdfast_compute::MeshBuilder::new("127.0.0.1:0", &[1; 32])
            .unwrap()
            .build(),
    );
    // And they really run on another task.
    let moved = runtime.clone();
    tokio::spawn(async move { moved.stop(origin).await })
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn spawn_deliver_stop_round_trip() {
    let runtime = ready_runtime().await;
    let identity = Identity::from_seed([2; 32]);
    let origin = identity.origin_hash();
    let handle: DaemonHandle = runtime
        .spawn("echo", identity.clone(), DaemonHostConfig::default())
        .await
        .unwrap();
    assert_eq!(
        (handle.origin_hash, handle.entity_id),
        (origin, *identity.entity_id())
    );
    assert_eq!((handle.kind(), handle.name()), ("echo", "echo"));
    assert_eq!(runtime.daemon_count(), 1);
    let printed = format!("{handle:?}");
    assert!(
        printed.contains(&format!("{origin:#018x}")) && printed.contains("echo"),
        "{printed}"
    );

    let outputs = runtime.deliver(origin, &event(5, 1, b"hello")).unwrap();
    assert_eq!(outputs.len(), 1);
    assert_eq!(outputs[0].payload, Bytes::from_static(b"hello"));
    assert_eq!(outputs[0].link.origin_hash, origin);
    let same = runtime.handle(origin).expect("hosted");
    assert_eq!(same.stats().unwrap().events_processed, 1);

    runtime.stop(origin).await.unwrap();
    assert_eq!(runtime.daemon_count(), 0);
    let gone = DaemonError::Core(CoreDaemonError::NotFound(origin));
    assert_eq!(runtime.deliver(origin, &event(5, 2, b"x")), Err(gone.clone()));
    assert_eq!(handle.head(), Err(gone.clone()));
    // A handle never comes back to life, even when the identity is respawned.
    runtime
        .spawn("echo", identity, DaemonHostConfig::default())
        .await
        .unwrap();
    assert_eq!(handle.stats(), Err(gone));
    assert_eq!(
        runtime.handle(origin).unwrap().stats().unwrap().events_processed,
        0
    );
}

#[tokio::test]
async fn snapshot_round_trip_through_bytes_restores_state_and_chain() {
    let runtime = ready_runtime().await;
    let identity = Identity::from_seed([3; 32]);
    let origin = identity.origin_hash();
    runtime
        .spawn("counter", identity.clone(), DaemonHostConfig::default())
        .await
        .unwrap();
    let mut validator = ChainValidator::new(origin);
    for sequence in 1..=4 {
        for output in runtime.deliver(origin, &event(8, sequence, b"x")).unwrap() {
            validator.push(&output).unwrap();
        }
    }
    let snapshot = runtime.stop_with_snapshot(origin).await.unwrap();
    // Across a process boundary the snapshot travels as bytes.
    let carried = StateSnapshot::decode(snapshot.to_bytes()).unwrap();
    assert_eq!(carried, snapshot);
    runtime
        .spawn_from_snapshot("counter", identity, carried, DaemonHostConfig::default())
        .await
        .unwrap();
    let next = runtime.deliver(origin, &event(8, 5, b"x")).unwrap();
    assert_eq!(next[0].payload, Bytes::copy_from_slice(&5u64.to_le_bytes()));
    validator.push(&next[0]).unwrap();
}

fn counter_seed(i: u64) -> [u8; 32] {
    let mut seed = [0u8; 32];
    seed[..8].copy_from_slice(&i.to_le_bytes());
    seed
}

#[tokio::test]
async fn identity_check_uses_the_full_entity_id_not_a_truncated_hash() {
    let a = Identity::from_seed(counter_seed(8_709));
    let b = Identity::from_seed(counter_seed(77_369));
    assert_eq!(
        a.origin_hash() as u32,
        b.origin_hash() as u32,
        "the pair collides in 32 bits"
    );
    assert_ne!(a.entity_id(), b.entity_id());

    let runtime = ready_runtime().await;
    runtime
        .spawn("counter", a.clone(), DaemonHostConfig::default())
        .await
        .unwrap();
    runtime.deliver(a.origin_hash(), &event(1, 1, b"x")).unwrap();
    let snapshot = runtime.snapshot(a.origin_hash()).await.unwrap().unwrap();
    let refused = runtime
        .spawn_from_snapshot("counter", b.clone(), snapshot, DaemonHostConfig::default())
        .await;
    assert_eq!(
        refused.unwrap_err(),
        DaemonError::SnapshotIdentityMismatch {
            snapshot: *a.entity_id(),
            identity: *b.entity_id()
        }
    );
    // Both can be hosted side by side: their full origin hashes differ.
    runtime
        .spawn("counter", b, DaemonHostConfig::default())
        .await
        .unwrap();
    assert_eq!(runtime.daemon_count(), 2);
}

#[tokio::test]
async fn duplicate_spawn_is_atomic_and_leaves_the_incumbent_running() {
    let runtime = ready_runtime().await;
    let calls = register_counted(&runtime, "counted", || Box::new(Counter::default()));
    let identity = Identity::from_seed([4; 32]);
    let origin = identity.origin_hash();
    runtime
        .spawn("counted", identity.clone(), DaemonHostConfig::default())
        .await
        .unwrap();
    runtime.deliver(origin, &event(1, 1, b"x")).unwrap();
    let second = runtime
        .spawn("counted", identity.clone(), DaemonHostConfig::default())
        .await
        .unwrap_err();
    assert_eq!(
        second.to_string(),
        format!("process failed: daemon {origin:#018x} already registered")
    );
    let snapshot = runtime.snapshot(origin).await.unwrap().unwrap();
    let third = runtime
        .spawn_from_snapshot("counted", identity, snapshot, DaemonHostConfig::default())
        .await;
    assert!(third.unwrap_err().to_string().contains("already registered"));
    assert_eq!(calls.get(), 1, "the factory runs only for the winning spawn");
    let next = runtime.deliver(origin, &event(1, 2, b"x")).unwrap();
    assert_eq!(
        next[0].payload,
        Bytes::copy_from_slice(&2u64.to_le_bytes()),
        "the incumbent kept its state"
    );
}

#[tokio::test]
async fn factories_are_called_once_per_spawn() {
    let runtime = DaemonRuntime::new(mesh().await);
    let calls = Calls::default();
    let counted = calls.clone();
    // A closure returning `Box<Concrete>` coerces to the factory bound.
    runtime
        .register_factory("echo", move || {
            counted.bump();
            Box::new(Echo)
        })
        .unwrap();
    assert_eq!(calls.get(), 0, "registering does not call the factory");
    runtime.start().await.unwrap();
    for seed in 10..15 {
        runtime
            .spawn(
                "echo",
                Identity::from_seed([seed; 32]),
                DaemonHostConfig::default(),
            )
            .await
            .unwrap();
    }
    assert_eq!(calls.get(), 5);
    assert_eq!(runtime.daemon_count(), 5);
}
