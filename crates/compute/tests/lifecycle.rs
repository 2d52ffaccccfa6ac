//! The lifecycle state machine (spec §4.1) and the origin-table rules of
//! §4.2 that do not need concurrency: shutdown, start, the mesh handler slot,
//! placeholders, and `NotFound` for unknown origins.
#![cfg(feature = "compute")]

mod common;

use std::sync::Arc;

use common::{Calls, ControlRecorder, Echo, event, mesh, ready_runtime, register_counted};
use holdfast_compute::{
    CoreDaemonError, DaemonControl, DaemonError, DaemonHostConfig, DaemonRuntime, Identity, Lifecycle,
};

fn already_registered(origin: u64) -> DaemonError {
    DaemonError::Core(CoreDaemonError::ProcessFailed(format!(
        "daemon {origin:#018x} already registered"
    )))
}

#[tokio::test]
async fn shutdown_idempotent() {
    let runtime = ready_runtime().await;
    let seen = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let recorder_seen = Arc::clone(&seen);
    runtime
        .register_factory("recorder", move || {
            Box::new(ControlRecorder {
                seen: Arc::clone(&recorder_seen),
            })
        })
        .unwrap();
    let identity = Identity::from_seed([1; 32]);
    let handle = runtime
        .spawn("recorder", identity, DaemonHostConfig::default())
        .await
        .unwrap();

    assert_eq!(runtime.shutdown().await, Ok(()));
    assert_eq!(runtime.shutdown().await, Ok(()));
    assert_eq!(runtime.lifecycle(), Lifecycle::ShuttingDown);
    assert!(!runtime.is_ready());
    assert_eq!(runtime.daemon_count(), 0);
    assert_eq!(*seen.lock(), vec![DaemonControl::Stopping]);
    assert_eq!(
        handle.stats(),
        Err(DaemonError::Core(CoreDaemonError::NotFound(handle.origin_hash)))
    );
    assert!(!runtime.mesh().inner().has_migration_handler());
}

#[tokio::test]
async fn start_after_shutdown_installs_nothing() {
    let runtime = DaemonRuntime::new(mesh().await);
    runtime.register_factory("echo", || Box::new(Echo)).unwrap();
    runtime.shutdown().await.unwrap();
    assert_eq!(runtime.start().await, Err(DaemonError::ShuttingDown));
    assert!(!runtime.mesh().inner().has_migration_handler());
    assert_eq!(runtime.lifecycle(), Lifecycle::ShuttingDown);
    // The lifecycle check comes first: even an unknown kind is ShuttingDown.
    let spawned = runtime
        .spawn(
            "no-such-kind",
            Identity::from_seed([1; 32]),
            DaemonHostConfig::default(),
        )
        .await;
    assert_eq!(spawned.unwrap_err(), DaemonError::ShuttingDown);
    assert_eq!(
        runtime.register_factory("late", || Box::new(Echo)),
        Err(DaemonError::ShuttingDown)
    );
    assert!(runtime.registered_kinds().is_empty());
}

#[tokio::test]
async fn spawn_before_start_is_not_ready() {
    let runtime = DaemonRuntime::new(mesh().await);
    assert_eq!(runtime.lifecycle(), Lifecycle::Registering);
    let spawned = runtime
        .spawn(
            "no-such-kind",
            Identity::from_seed([1; 32]),
            DaemonHostConfig::default(),
        )
        .await;
    assert_eq!(spawned.unwrap_err(), DaemonError::NotReady);
    runtime.start().await.unwrap();
    assert_eq!(runtime.start().await, Ok(()));
    let spawned = runtime
        .spawn(
            "no-such-kind",
            Identity::from_seed([1; 32]),
            DaemonHostConfig::default(),
        )
        .await;
    assert_eq!(
        spawned.unwrap_err(),
        DaemonError::FactoryNotFound("no-such-kind".into())
    );
}

#[tokio::test]
async fn second_runtime_same_mesh_is_mesh_in_use() {
    let mesh = mesh().await;
    let first = DaemonRuntime::new(Arc::clone(&mesh));
    let second = DaemonRuntime::new(Arc::clone(&mesh));
    first.start().await.unwrap();
    assert_eq!(second.start().await, Err(DaemonError::MeshInUse));
    assert_eq!(second.lifecycle(), Lifecycle::Registering);
    assert!(mesh.inner().has_migration_handler());
    // The loser's failed start did not clear the winner's handler.
    first.shutdown().await.unwrap();
    assert!(!mesh.inner().has_migration_handler());
    assert_eq!(second.start().await, Ok(()));
    assert!(second.is_ready());
}

#[tokio::test]
async fn drop_runtime_clears_handler() {
    let mesh = mesh().await;
    let runtime = DaemonRuntime::new(Arc::clone(&mesh));
    runtime.start().await.unwrap();
    let clone = runtime.clone();
    drop(runtime);
    assert!(
        mesh.inner().has_migration_handler(),
        "a live clone keeps the handler"
    );
    drop(clone);
    assert!(!mesh.inner().has_migration_handler());
    let next = DaemonRuntime::new(Arc::clone(&mesh));
    assert_eq!(next.start().await, Ok(()));
}

#[tokio::test]
async fn unknown_origin_is_not_found() {
    let unstarted = DaemonRuntime::new(mesh().await);
    let runtime = ready_runtime().await;
    let origin = Identity::from_seed([9; 32]).origin_hash();
    let not_found = DaemonError::Core(CoreDaemonError::NotFound(origin));
    for runtime in [&unstarted, &runtime] {
        assert_eq!(
            runtime.deliver(origin, &event(1, 1, b"x")),
            Err(not_found.clone())
        );
        assert_eq!(runtime.stop(origin).await, Err(not_found.clone()));
        assert_eq!(runtime.stop_with_snapshot(origin).await, Err(not_found.clone()));
        assert_eq!(runtime.snapshot(origin).await, Err(not_found.clone()));
        assert_eq!(runtime.latest_snapshot(origin), Err(not_found.clone()));
        assert_eq!(runtime.replay(origin, 0), Err(not_found.clone()));
        assert!(runtime.handle(origin).is_none());
    }
    assert_eq!(not_found.to_string(), format!("daemon {origin:#018x} not found"));
}

#[tokio::test]
async fn expect_migration_unknown_kind() {
    let runtime = ready_runtime().await;
    assert_eq!(
        runtime.expect_migration("nope", 7, DaemonHostConfig::default()),
        Err(DaemonError::FactoryNotFound("nope".into()))
    );
    // Placeholders may be created before start.
    let unstarted = DaemonRuntime::new(mesh().await);
    unstarted.register_factory("echo", || Box::new(Echo)).unwrap();
    assert_eq!(
        unstarted.expect_migration("echo", 7, DaemonHostConfig::default()),
        Ok(())
    );
}

#[tokio::test]
async fn expect_migration_after_shutdown() {
    let runtime = ready_runtime().await;
    runtime.shutdown().await.unwrap();
    assert_eq!(
        runtime.expect_migration("nope", 7, DaemonHostConfig::default()),
        Err(DaemonError::ShuttingDown)
    );
}

#[tokio::test]
async fn placeholder_blocks_spawn() {
    let runtime = ready_runtime().await;
    let calls = register_counted(&runtime, "counted", || Box::new(Echo));
    let identity = Identity::from_seed([4; 32]);
    let origin = identity.origin_hash();
    runtime
        .expect_migration("counted", origin, DaemonHostConfig::default())
        .unwrap();

    let refused = runtime
        .spawn("counted", identity.clone(), DaemonHostConfig::default())
        .await
        .unwrap_err();
    assert_eq!(refused, already_registered(origin));
    assert_eq!(
        refused.to_string(),
        format!("process failed: daemon {origin:#018x} already registered")
    );
    assert_eq!(calls.get(), 0);
    assert_eq!(runtime.daemon_count(), 0);
    assert_eq!(
        runtime.stop(origin).await,
        Err(DaemonError::Core(CoreDaemonError::NotFound(origin)))
    );
    assert_eq!(
        runtime.expect_migration("counted", origin, DaemonHostConfig::default()),
        Err(already_registered(origin))
    );
    // The refused calls left the placeholder in place.
    assert!(runtime.cancel_expected_migration(origin));
}

#[tokio::test]
async fn cancel_expected_migration() {
    let runtime = ready_runtime().await;
    let identity = Identity::from_seed([5; 32]);
    let origin = identity.origin_hash();
    runtime
        .expect_migration("echo", origin, DaemonHostConfig::default())
        .unwrap();
    assert!(runtime.cancel_expected_migration(origin));
    assert!(!runtime.cancel_expected_migration(origin));
    runtime
        .spawn("echo", identity, DaemonHostConfig::default())
        .await
        .unwrap();
    // A hosted origin is not a placeholder: cancelling leaves it running.
    assert!(!runtime.cancel_expected_migration(origin));
    assert_eq!(runtime.daemon_count(), 1);
    assert_eq!(runtime.deliver(origin, &event(1, 1, b"x")).unwrap().len(), 1);
}

#[tokio::test]
async fn shutdown_sweeps_placeholders_and_kinds() {
    let runtime = ready_runtime().await;
    runtime
        .expect_migration("echo", 11, DaemonHostConfig::default())
        .unwrap();
    runtime
        .spawn("echo", Identity::from_seed([6; 32]), DaemonHostConfig::default())
        .await
        .unwrap();
    assert_eq!(
        runtime.registered_kinds(),
        vec!["counter".to_owned(), "echo".to_owned()]
    );
    runtime.shutdown().await.unwrap();
    assert!(runtime.registered_kinds().is_empty());
    assert_eq!(runtime.daemon_count(), 0);
    assert!(
        !runtime.cancel_expected_migration(11),
        "the placeholder was swept"
    );
}

#[tokio::test]
async fn duplicate_kind_keeps_the_incumbent() {
    let runtime = ready_runtime().await;
    let calls = Calls::default();
    let counted = calls.clone();
    let second = runtime.register_factory("echo", move || {
        counted.bump();
        Box::new(Echo)
    });
    assert_eq!(second, Err(DaemonError::FactoryAlreadyRegistered("echo".into())));
    runtime
        .spawn("echo", Identity::from_seed([6; 32]), DaemonHostConfig::default())
        .await
        .unwrap();
    assert_eq!(calls.get(), 0, "the first factory is the one that runs");
}

/// Raises its flag when dropped.
struct DropFlag(Arc<std::sync::atomic::AtomicBool>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// An echo daemon that owns a drop flag.
struct Droppable {
    _flag: DropFlag,
}

impl holdfast_compute::MeshDaemon for Droppable {
    fn name(&self) -> &str {
        "droppable"
    }
    fn requirements(&self) -> holdfast_compute::CapabilityFilter {
        holdfast_compute::CapabilityFilter::default()
    }
    fn process(
        &mut self,
        event: &holdfast_compute::CausalEvent,
    ) -> Result<Vec<holdfast_compute::Bytes>, CoreDaemonError> {
        Ok(vec![event.payload.clone()])
    }
}

#[tokio::test]
async fn stop_drops_the_daemon_at_once_even_while_handles_exist() {
    let runtime = ready_runtime().await;
    let dropped = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = Arc::clone(&dropped);
    runtime
        .register_factory("droppable", move || {
            Box::new(Droppable {
                _flag: DropFlag(Arc::clone(&flag)),
            })
        })
        .unwrap();
    let identity = Identity::from_seed([0xd7; 32]);
    let origin = identity.origin_hash();
    let handle = runtime
        .spawn("droppable", identity.clone(), DaemonHostConfig::default())
        .await
        .unwrap();
    runtime.deliver(origin, &event(1, 1, b"x")).unwrap();
    runtime.stop(origin).await.unwrap();
    assert!(
        dropped.load(std::sync::atomic::Ordering::SeqCst),
        "the daemon outlived stop"
    );
    assert!(runtime.handle(origin).is_none());
    assert_eq!(
        handle.head(),
        Err(DaemonError::Core(CoreDaemonError::NotFound(origin)))
    );
    assert_eq!(runtime.daemon_count(), 0);
    // The same identity is hosted again at once, and only the new run answers.
    runtime
        .spawn("echo", identity, DaemonHostConfig::default())
        .await
        .unwrap();
    assert_eq!(runtime.handle(origin).unwrap().kind(), "echo");
    assert_eq!(
        runtime.deliver(origin, &event(1, 2, b"y")).unwrap()[0]
            .link
            .sequence,
        1
    );
}
