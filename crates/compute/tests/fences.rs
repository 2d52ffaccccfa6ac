//! The concurrency fences of spec §5, each made deterministic with the
//! runtime's stall hooks or with a daemon that blocks inside `process` until
//! the test releases it. The only timing assumption is that a stall of 300 ms
//! outlasts a 20 ms sleep.
#![cfg(feature = "compute")]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use common::{Counter, Echo, event, mesh, ready_runtime, register_counted};
use holdfast_compute::{
    Bytes, CapabilityFilter, CausalEvent, CoreDaemonError, DaemonError, DaemonHostConfig, DaemonRuntime,
    Identity, Lifecycle, MeshDaemon,
};

const STALL_MS: u64 = 300;
const INSIDE_STALL: Duration = Duration::from_millis(20);

fn not_found(origin: u64) -> DaemonError {
    DaemonError::Core(CoreDaemonError::NotFound(origin))
}

/// A counter whose `process` announces itself and then waits to be released.
struct Blocking {
    count: u64,
    entered: mpsc::SyncSender<()>,
    release: Arc<parking_lot::Mutex<mpsc::Receiver<()>>>,
    journal: Arc<parking_lot::Mutex<Vec<&'static str>>>,
}

impl MeshDaemon for Blocking {
    fn name(&self) -> &str {
        "blocking"
    }
    fn requirements(&self) -> CapabilityFilter {
        CapabilityFilter::default()
    }
    fn process(&mut self, _event: &CausalEvent) -> Result<Vec<Bytes>, CoreDaemonError> {
        self.count += 1;
        self.entered.send(()).expect("the test waits for entry");
        self.release.lock().recv().expect("the test releases the daemon");
        self.journal.lock().push("process returned");
        Ok(vec![Bytes::copy_from_slice(&self.count.to_le_bytes())])
    }
    fn snapshot(&self) -> Option<Bytes> {
        Some(Bytes::copy_from_slice(&self.count.to_le_bytes()))
    }
    fn is_stateful(&self) -> bool {
        true
    }
}

struct BlockingRig {
    entered: mpsc::Receiver<()>,
    release: mpsc::Sender<()>,
    journal: Arc<parking_lot::Mutex<Vec<&'static str>>>,
}

/// A ready runtime with one `blocking` daemon spawned; returns its origin.
async fn runtime_with_blocking_daemon() -> (DaemonRuntime, u64, BlockingRig) {
    let runtime = ready_runtime().await;
    let (entered_tx, entered) = mpsc::sync_channel(16);
    let (release, release_rx) = mpsc::channel();
    let release_rx = Arc::new(parking_lot::Mutex::new(release_rx));
    let journal = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let daemon_journal = Arc::clone(&journal);
    runtime
        .register_factory("blocking", move || {
            Box::new(Blocking {
                count: 0,
                entered: entered_tx.clone(),
                release: Arc::clone(&release_rx),
                journal: Arc::clone(&daemon_journal),
            })
        })
        .unwrap();
    let identity = Identity::from_seed([0xb1; 32]);
    let origin = identity.origin_hash();
    runtime
        .spawn("blocking", identity, DaemonHostConfig::default())
        .await
        .unwrap();
    (
        runtime,
        origin,
        BlockingRig {
            entered,
            release,
            journal,
        },
    )
}

fn block_on<F: Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(future)
}

#[tokio::test]
async fn f1_handler_is_installed_before_ready_is_published() {
    let runtime = DaemonRuntime::new(mesh().await);
    runtime.set_start_stall_ms(STALL_MS);
    let starting = tokio::spawn({
        let runtime = runtime.clone();
        async move { runtime.start().await }
    });
    tokio::time::sleep(INSIDE_STALL).await;
    assert!(runtime.mesh().inner().has_migration_handler());
    assert!(!runtime.is_ready());
    assert_eq!(starting.await.unwrap(), Ok(()));
    assert!(runtime.is_ready());
}

#[tokio::test]
async fn f2_shutdown_during_start_stall_uninstalls() {
    let runtime = DaemonRuntime::new(mesh().await);
    runtime.set_start_stall_ms(STALL_MS);
    let starting = tokio::spawn({
        let runtime = runtime.clone();
        async move { runtime.start().await }
    });
    tokio::time::sleep(INSIDE_STALL).await;
    runtime.shutdown().await.unwrap();
    assert_eq!(starting.await.unwrap(), Err(DaemonError::ShuttingDown));
    assert!(!runtime.mesh().inner().has_migration_handler());
    assert_eq!(runtime.lifecycle(), Lifecycle::ShuttingDown);
}

#[tokio::test]
async fn start_cancelled_in_stall_uninstalls() {
    let runtime = DaemonRuntime::new(mesh().await);
    runtime.set_start_stall_ms(STALL_MS);
    let cancelled = tokio::time::timeout(Duration::from_millis(10), runtime.start()).await;
    assert!(cancelled.is_err(), "the start was still in its stall");
    assert!(!runtime.mesh().inner().has_migration_handler());
    assert_eq!(runtime.lifecycle(), Lifecycle::Registering);
    runtime.set_start_stall_ms(0);
    assert_eq!(runtime.start().await, Ok(()));
}

#[tokio::test]
async fn f3_shutdown_during_spawn_stall_leaves_nothing() {
    let runtime = ready_runtime().await;
    runtime.set_spawn_stall_ms(STALL_MS);
    let identity = Identity::from_seed([0xf3; 32]);
    let origin = identity.origin_hash();
    let spawning = tokio::spawn({
        let runtime = runtime.clone();
        async move { runtime.spawn("echo", identity, DaemonHostConfig::default()).await }
    });
    tokio::time::sleep(INSIDE_STALL).await;
    runtime.shutdown().await.unwrap();
    assert_eq!(spawning.await.unwrap().unwrap_err(), DaemonError::ShuttingDown);
    assert_eq!(runtime.daemon_count(), 0);
    assert!(runtime.handle(origin).is_none());
    assert_eq!(
        runtime.deliver(origin, &event(1, 1, b"x")),
        Err(not_found(origin))
    );
}

#[tokio::test]
async fn f3_shutdown_during_spawn_from_snapshot_stall_leaves_nothing() {
    let runtime = ready_runtime().await;
    let identity = Identity::from_seed([0xf4; 32]);
    let origin = identity.origin_hash();
    runtime
        .spawn("counter", identity.clone(), DaemonHostConfig::default())
        .await
        .unwrap();
    runtime.deliver(origin, &event(1, 1, b"x")).unwrap();
    let snapshot = runtime.stop_with_snapshot(origin).await.unwrap();

    runtime.set_spawn_stall_ms(STALL_MS);
    let spawning = tokio::spawn({
        let runtime = runtime.clone();
        async move {
            runtime
                .spawn_from_snapshot("counter", identity, snapshot, DaemonHostConfig::default())
                .await
        }
    });
    tokio::time::sleep(INSIDE_STALL).await;
    runtime.shutdown().await.unwrap();
    assert_eq!(spawning.await.unwrap().unwrap_err(), DaemonError::ShuttingDown);
    assert_eq!(runtime.daemon_count(), 0);
    assert!(runtime.handle(origin).is_none());
}

#[test]
fn f3_register_and_expect_racing_shutdown_leave_nothing() {
    let runtime = block_on(ready_runtime());
    runtime.set_register_stall_ms(STALL_MS);
    let registering = thread::spawn({
        let runtime = runtime.clone();
        move || runtime.register_factory("late", || Box::new(Echo))
    });
    let expecting = thread::spawn({
        let runtime = runtime.clone();
        move || runtime.expect_migration("echo", 0xe0, DaemonHostConfig::default())
    });
    thread::sleep(INSIDE_STALL);
    block_on(runtime.shutdown()).unwrap();
    assert_eq!(registering.join().unwrap(), Err(DaemonError::ShuttingDown));
    assert_eq!(expecting.join().unwrap(), Err(DaemonError::ShuttingDown));
    assert!(runtime.registered_kinds().is_empty());
    assert!(
        !runtime.cancel_expected_migration(0xe0),
        "the placeholder was rolled back"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn f4_one_identity_spawned_by_32_tasks_wins_once() {
    let runtime = ready_runtime().await;
    let calls = register_counted(&runtime, "counted", || Box::new(Echo));
    runtime.set_spawn_stall_ms(50);
    let identity = Identity::from_seed([0xf4; 32]);
    let tasks: Vec<_> = (0..32)
        .map(|_| {
            let runtime = runtime.clone();
            let identity = identity.clone();
            tokio::spawn(async move {
                runtime
                    .spawn("counted", identity, DaemonHostConfig::default())
                    .await
            })
        })
        .collect();
    let mut wins = 0;
    let mut collisions = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(_) => wins += 1,
            Err(error) if error.to_string().contains("already registered") => collisions += 1,
            Err(other) => panic!("unexpected error {other:?}"),
        }
    }
    assert_eq!((wins, collisions), (1, 31));
    assert_eq!(calls.get(), 1);
    assert_eq!(runtime.daemon_count(), 1);
    let origin = identity.origin_hash();
    assert_eq!(runtime.deliver(origin, &event(1, 1, b"x")).unwrap().len(), 1);
}

#[test]
fn f5_stop_waits_for_a_running_process() {
    let (runtime, origin, rig) = block_on(runtime_with_blocking_daemon());
    let delivering = thread::spawn({
        let runtime = runtime.clone();
        move || runtime.deliver(origin, &event(1, 1, b"x"))
    });
    rig.entered.recv().unwrap();
    let stopped = Arc::new(AtomicBool::new(false));
    let stopping = thread::spawn({
        let runtime = runtime.clone();
        let stopped = Arc::clone(&stopped);
        let journal = Arc::clone(&rig.journal);
        move || {
            let outcome = block_on(runtime.stop(origin));
            journal.lock().push("stop returned");
            stopped.store(true, Ordering::SeqCst);
            outcome
        }
    });
    thread::sleep(INSIDE_STALL);
    assert!(
        !stopped.load(Ordering::SeqCst),
        "stop returned while process was running"
    );
    rig.release.send(()).unwrap();
    assert_eq!(stopping.join().unwrap(), Ok(()));
    assert_eq!(
        delivering.join().unwrap().unwrap().len(),
        1,
        "the running event completed"
    );
    assert_eq!(*rig.journal.lock(), ["process returned", "stop returned"]);
    assert_eq!(
        runtime.deliver(origin, &event(1, 2, b"x")),
        Err(not_found(origin))
    );
    assert!(rig.entered.try_recv().is_err(), "process never ran again");
}

#[test]
fn f6_snapshot_during_process_includes_the_event() {
    let (runtime, origin, rig) = block_on(runtime_with_blocking_daemon());
    let delivering = thread::spawn({
        let runtime = runtime.clone();
        move || runtime.deliver(origin, &event(1, 1, b"x"))
    });
    rig.entered.recv().unwrap();
    let snapshotting = thread::spawn({
        let runtime = runtime.clone();
        move || block_on(runtime.snapshot(origin))
    });
    thread::sleep(INSIDE_STALL);
    rig.release.send(()).unwrap();
    let output = delivering.join().unwrap().unwrap();
    let snapshot = snapshotting.join().unwrap().unwrap().expect("stateful");
    assert_eq!(snapshot.through_seq, 1);
    assert_eq!(snapshot.chain_link, output[0].link);
    assert_eq!(snapshot.head_hash, output[0].hash());
    assert_eq!(snapshot.state, Bytes::copy_from_slice(&1u64.to_le_bytes()));
    assert_eq!(snapshot.horizon.get(1), Some(1));
}

#[test]
fn stop_with_snapshot_is_atomic() {
    let runtime = block_on(ready_runtime());
    let identity = Identity::from_seed([0xa7; 32]);
    let origin = identity.origin_hash();
    block_on(runtime.spawn("counter", identity, DaemonHostConfig::default())).unwrap();
    let accepted = Arc::new(AtomicU64::new(0));
    let senders: Vec<_> = (0..4u64)
        .map(|thread_index| {
            let runtime = runtime.clone();
            let accepted = Arc::clone(&accepted);
            thread::spawn(move || {
                for sequence in 1.. {
                    match runtime.deliver(origin, &event(thread_index, sequence, b"x")) {
                        Ok(_) => accepted.fetch_add(1, Ordering::SeqCst),
                        Err(error) => {
                            assert_eq!(error, not_found(origin));
                            return;
                        }
                    };
                }
            })
        })
        .collect();
    while accepted.load(Ordering::SeqCst) < 2_000 {
        thread::yield_now();
    }
    let snapshot = block_on(runtime.stop_with_snapshot(origin)).unwrap();
    for sender in senders {
        sender.join().unwrap();
    }
    let total = accepted.load(Ordering::SeqCst);
    assert_eq!(snapshot.state, Bytes::copy_from_slice(&total.to_le_bytes()));
    assert_eq!(snapshot.through_seq, total);
    assert_eq!(runtime.daemon_count(), 0);
}

#[tokio::test]
async fn identity_mismatch_touches_nothing() {
    let runtime = ready_runtime().await;
    let calls = register_counted(&runtime, "counted", || Box::new(Counter::default()));
    let a = Identity::from_seed([0xaa; 32]);
    let b = Identity::from_seed([0xbb; 32]);
    runtime
        .spawn("counter", a.clone(), DaemonHostConfig::default())
        .await
        .unwrap();
    let snapshot = runtime.stop_with_snapshot(a.origin_hash()).await.unwrap();

    let refused = runtime
        .spawn_from_snapshot("counted", b.clone(), snapshot, DaemonHostConfig::default())
        .await;
    assert_eq!(
        refused.unwrap_err(),
        DaemonError::SnapshotIdentityMismatch {
            snapshot: *a.entity_id(),
            identity: *b.entity_id()
        }
    );
    assert_eq!(calls.get(), 0);
    assert_eq!(runtime.daemon_count(), 0);
    runtime
        .spawn("counted", b, DaemonHostConfig::default())
        .await
        .unwrap();
    assert_eq!(calls.get(), 1);
}

#[tokio::test]
async fn spawn_cancelled_in_stall_rolls_back() {
    let runtime = ready_runtime().await;
    runtime.set_spawn_stall_ms(STALL_MS);
    let identity = Identity::from_seed([0xc4; 32]);
    let cancelled = tokio::time::timeout(
        Duration::from_millis(10),
        runtime.spawn("echo", identity.clone(), DaemonHostConfig::default()),
    )
    .await;
    assert!(cancelled.is_err(), "the spawn was still in its stall");
    runtime.set_spawn_stall_ms(0);
    assert_eq!(runtime.daemon_count(), 0);
    runtime
        .spawn("echo", identity, DaemonHostConfig::default())
        .await
        .unwrap();
    assert_eq!(runtime.daemon_count(), 1);
}

#[tokio::test]
async fn panicking_factory_rolls_back_its_reservation() {
    let runtime = ready_runtime().await;
    runtime
        .register_factory("panics", || panic!("factory failed"))
        .unwrap();
    let identity = Identity::from_seed([0xd1; 32]);
    let spawning = tokio::spawn({
        let runtime = runtime.clone();
        let identity = identity.clone();
        async move {
            runtime
                .spawn("panics", identity, DaemonHostConfig::default())
                .await
        }
    });
    assert!(spawning.await.unwrap_err().is_panic());
    runtime
        .spawn("echo", identity, DaemonHostConfig::default())
        .await
        .unwrap();
    assert_eq!(runtime.daemon_count(), 1);
}
