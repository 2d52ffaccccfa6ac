//! Statistics, configuration fields (spec §8), daemon hooks (§4.3) and the
//! mesh builder: every field has its effect and a test.
#![cfg(feature = "compute")]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use common::{
    ControlRecorder, Counter, PSK, deliver_from_one, event, mesh, ready_runtime, register_counted,
    spawn_seeded,
};
use holdfast_compute::{
    Bytes, CapabilityFilter, CapabilitySet, CausalEvent, CausalLink, CoreDaemonError, DaemonControl,
    DaemonError, DaemonHealth, DaemonHostConfig, DaemonRuntime, DaemonStats, Identity, MeshBuilder,
    MeshDaemon, MeshError,
};

fn config(auto_snapshot_interval: u64, max_log_entries: usize) -> DaemonHostConfig {
    DaemonHostConfig {
        auto_snapshot_interval,
        max_log_entries,
    }
}

fn stats(processed: u64, emitted: u64, errors: u64, snapshots: u64) -> DaemonStats {
    let mut stats = DaemonStats::default();
    stats.events_processed = processed;
    stats.events_emitted = emitted;
    stats.errors = errors;
    stats.snapshots_taken = snapshots;
    stats
}

/// Fails on the payload `bad`, and keeps no state although it says it does
/// when `stateful`.
struct Picky {
    stateful: bool,
}

impl MeshDaemon for Picky {
    fn name(&self) -> &str {
        "picky"
    }
    fn requirements(&self) -> CapabilityFilter {
        CapabilityFilter::default()
    }
    fn process(&mut self, event: &CausalEvent) -> Result<Vec<Bytes>, CoreDaemonError> {
        if event.payload.as_ref() == b"bad" {
            return Err(CoreDaemonError::ProcessFailed("bad payload".into()));
        }
        Ok(vec![event.payload.clone(), event.payload.clone()])
    }
    fn is_stateful(&self) -> bool {
        self.stateful
    }
}

#[test]
fn default_config_is_off_and_256() {
    assert_eq!(DaemonHostConfig::default(), config(0, 256));
}

#[tokio::test]
async fn stats_semantics() {
    let runtime = ready_runtime().await;
    runtime
        .register_factory("picky", || Box::new(Picky { stateful: false }))
        .unwrap();
    let (origin, handle) = spawn_seeded(&runtime, "picky", 0x51, DaemonHostConfig::default()).await;
    assert_eq!(handle.stats().unwrap(), DaemonStats::default());
    runtime.deliver(origin, &event(1, 1, b"ok")).unwrap();
    runtime.deliver(origin, &event(1, 2, b"bad")).unwrap_err();
    runtime.deliver(origin, &event(1, 3, b"ok")).unwrap();
    assert_eq!(handle.stats().unwrap(), stats(2, 4, 1, 0));
    assert_eq!(handle.name(), "picky");
    assert_eq!(handle.kind(), "picky");
}

#[tokio::test]
async fn snapshots_taken_counts_every_path() {
    let runtime = ready_runtime().await;
    let identity = Identity::from_seed([0x52; 32]);
    let origin = identity.origin_hash();
    let handle = runtime
        .spawn("counter", identity.clone(), config(2, 256))
        .await
        .unwrap();
    assert_eq!(handle.latest_snapshot().unwrap(), None);
    runtime.deliver(origin, &event(1, 1, b"x")).unwrap();
    let explicit = runtime.snapshot(origin).await.unwrap().unwrap();
    assert_eq!(runtime.latest_snapshot(origin).unwrap(), Some(explicit.clone()));
    let through_handle = handle.snapshot().await.unwrap().unwrap();
    assert_eq!(through_handle.through_seq, 1);
    runtime.deliver(origin, &event(1, 2, b"x")).unwrap(); // the automatic one
    assert_eq!(handle.stats().unwrap().snapshots_taken, 3);
    assert_eq!(handle.latest_snapshot().unwrap().unwrap().through_seq, 2);

    // The final snapshot of a stop is produced and returned as well; the
    // restored instance starts with fresh counters and no latest snapshot.
    let last = runtime.stop_with_snapshot(origin).await.unwrap();
    let restored = runtime
        .spawn_from_snapshot("counter", identity, last, config(0, 256))
        .await
        .unwrap();
    assert_eq!(restored.stats().unwrap(), DaemonStats::default());
    assert_eq!(restored.latest_snapshot().unwrap(), None);
}

#[tokio::test]
async fn auto_snapshot_every_n() {
    let runtime = ready_runtime().await;
    let (origin, handle) = spawn_seeded(&runtime, "counter", 0x53, config(3, 256)).await;
    deliver_from_one(&runtime, origin, 7);
    assert_eq!(handle.stats().unwrap().snapshots_taken, 2);
    let latest = handle.latest_snapshot().unwrap().unwrap();
    assert_eq!(latest.through_seq, 6);
    assert_eq!(latest.state, Bytes::copy_from_slice(&6u64.to_le_bytes()));
}

#[tokio::test]
async fn auto_snapshot_counts_only_successful_process_calls() {
    let runtime = ready_runtime().await;
    runtime
        .register_factory("picky", || Box::new(Picky { stateful: false }))
        .unwrap();
    let (origin, handle) = spawn_seeded(&runtime, "picky", 0x54, config(2, 256)).await;
    runtime.deliver(origin, &event(1, 1, b"ok")).unwrap();
    runtime.deliver(origin, &event(1, 2, b"bad")).unwrap_err();
    runtime.deliver(origin, &event(1, 3, b"ok")).unwrap();
    // Stateless without state: the second success produced nothing to keep.
    assert_eq!(handle.stats().unwrap(), stats(2, 4, 1, 0));
    assert_eq!(handle.latest_snapshot().unwrap(), None);
}

#[tokio::test]
async fn auto_snapshot_zero_is_off() {
    let runtime = ready_runtime().await;
    let (origin, handle) = spawn_seeded(&runtime, "counter", 0x55, config(0, 256)).await;
    deliver_from_one(&runtime, origin, 10);
    assert_eq!(handle.stats().unwrap().snapshots_taken, 0);
    assert_eq!(handle.latest_snapshot().unwrap(), None);
}

#[tokio::test]
async fn auto_snapshot_stateless_counts_nothing() {
    let runtime = ready_runtime().await;
    let (origin, handle) = spawn_seeded(&runtime, "echo", 0x56, config(1, 256)).await;
    deliver_from_one(&runtime, origin, 3);
    assert_eq!(handle.stats().unwrap(), stats(3, 3, 0, 0));
    assert_eq!(handle.latest_snapshot().unwrap(), None);
}

#[tokio::test]
async fn auto_snapshot_of_stateful_without_state_counts_an_error() {
    let runtime = ready_runtime().await;
    runtime
        .register_factory("liar", || Box::new(Picky { stateful: true }))
        .unwrap();
    let (origin, handle) = spawn_seeded(&runtime, "liar", 0x57, config(1, 256)).await;
    assert_eq!(runtime.deliver(origin, &event(1, 1, b"ok")).unwrap().len(), 2);
    assert_eq!(handle.stats().unwrap(), stats(1, 2, 1, 0));
}

#[tokio::test]
async fn output_log_bound() {
    let runtime = ready_runtime().await;
    let identity = Identity::from_seed([0x58; 32]);
    let origin = identity.origin_hash();
    runtime.spawn("counter", identity, config(0, 4)).await.unwrap();
    let outputs = deliver_from_one(&runtime, origin, 10);
    assert_eq!(
        runtime.replay(origin, 1),
        Err(DaemonError::Core(CoreDaemonError::Stale(7)))
    );
    assert_eq!(
        runtime.replay(origin, 6),
        Err(DaemonError::Core(CoreDaemonError::Stale(7)))
    );
    assert_eq!(runtime.replay(origin, 7).unwrap(), outputs[6..].to_vec());
    assert_eq!(runtime.replay(origin, 9).unwrap(), outputs[8..].to_vec());
    assert_eq!(runtime.replay(origin, 11).unwrap(), Vec::new());
    assert_eq!(
        runtime.handle(origin).unwrap().replay(10).unwrap(),
        outputs[9..].to_vec()
    );
}

#[tokio::test]
async fn output_log_replays_everything_retained_from_zero() {
    let runtime = ready_runtime().await;
    let identity = Identity::from_seed([0x59; 32]);
    let origin = identity.origin_hash();
    runtime
        .spawn("counter", identity, DaemonHostConfig::default())
        .await
        .unwrap();
    let outputs = deliver_from_one(&runtime, origin, 3);
    assert_eq!(runtime.replay(origin, 0).unwrap(), outputs);
}

#[tokio::test]
async fn output_log_zero() {
    let runtime = ready_runtime().await;
    let identity = Identity::from_seed([0x5a; 32]);
    let origin = identity.origin_hash();
    runtime.spawn("counter", identity, config(0, 0)).await.unwrap();
    deliver_from_one(&runtime, origin, 3);
    assert_eq!(
        runtime.replay(origin, 1),
        Err(DaemonError::Core(CoreDaemonError::Stale(4)))
    );
    assert_eq!(runtime.replay(origin, 4).unwrap(), Vec::new());
}

#[tokio::test]
async fn stateful_none_is_snapshot_failed() {
    let runtime = ready_runtime().await;
    runtime
        .register_factory("liar", || Box::new(Picky { stateful: true }))
        .unwrap();
    let identity = Identity::from_seed([0x5b; 32]);
    let origin = identity.origin_hash();
    runtime
        .spawn("liar", identity, DaemonHostConfig::default())
        .await
        .unwrap();
    let failed = DaemonError::Core(CoreDaemonError::SnapshotFailed(
        "stateful daemon returned no state".into(),
    ));
    assert_eq!(runtime.snapshot(origin).await, Err(failed.clone()));
    assert_eq!(runtime.stop_with_snapshot(origin).await, Err(failed));
    // The refused stop left the daemon running.
    assert_eq!(runtime.daemon_count(), 1);
    assert_eq!(runtime.deliver(origin, &event(1, 1, b"ok")).unwrap().len(), 2);
}

#[tokio::test]
async fn stateless_snapshot_is_none_but_its_final_snapshot_carries_the_head() {
    let runtime = ready_runtime().await;
    let identity = Identity::from_seed([0x5c; 32]);
    let origin = identity.origin_hash();
    runtime
        .spawn("echo", identity.clone(), DaemonHostConfig::default())
        .await
        .unwrap();
    let output = runtime.deliver(origin, &event(1, 1, b"x")).unwrap();
    assert_eq!(runtime.snapshot(origin).await, Ok(None));
    let last = runtime.stop_with_snapshot(origin).await.unwrap();
    assert_eq!(last.state, Bytes::new());
    assert_eq!(
        (last.through_seq, last.chain_link, last.head_hash),
        (1, output[0].link, output[0].hash())
    );
    let handle = runtime
        .spawn_from_snapshot("echo", identity, last, DaemonHostConfig::default())
        .await
        .unwrap();
    assert_eq!(handle.head().unwrap(), output[0].link);
}

#[tokio::test]
async fn default_restore_rejects_nonempty() {
    let runtime = ready_runtime().await;
    let identity = Identity::from_seed([0x5d; 32]);
    let origin = identity.origin_hash();
    runtime
        .spawn("counter", identity.clone(), DaemonHostConfig::default())
        .await
        .unwrap();
    runtime.deliver(origin, &event(1, 1, b"x")).unwrap();
    let counter_state = runtime.stop_with_snapshot(origin).await.unwrap();
    // Echo does not implement restore: 8 bytes of counter state are refused
    // rather than silently dropped, and the origin stays free.
    let refused = runtime
        .spawn_from_snapshot(
            "echo",
            identity.clone(),
            counter_state.clone(),
            DaemonHostConfig::default(),
        )
        .await;
    assert_eq!(
        refused.unwrap_err(),
        DaemonError::Core(CoreDaemonError::RestoreFailed(
            "daemon 'echo' does not implement restore".into()
        ))
    );
    assert_eq!(runtime.daemon_count(), 0);
    let mut empty = counter_state;
    empty.state = Bytes::new();
    runtime
        .spawn_from_snapshot("echo", identity, empty, DaemonHostConfig::default())
        .await
        .unwrap();
}

#[tokio::test]
async fn inconsistent_snapshot_is_refused_before_the_factory_runs() {
    let runtime = ready_runtime().await;
    let calls = register_counted(&runtime, "counted", || Box::new(Counter::default()));
    let identity = Identity::from_seed([0x5e; 32]);
    let origin = identity.origin_hash();
    runtime
        .spawn("counter", identity.clone(), DaemonHostConfig::default())
        .await
        .unwrap();
    runtime.deliver(origin, &event(1, 1, b"x")).unwrap();
    let good = runtime.stop_with_snapshot(origin).await.unwrap();

    let mut skipped = good.clone();
    skipped.through_seq = 2;
    let mut foreign_head = good.clone();
    foreign_head.chain_link.origin_hash ^= 1;
    let mut fake_genesis = good.clone();
    fake_genesis.through_seq = 0;
    fake_genesis.chain_link = CausalLink {
        sequence: 0,
        ..good.chain_link
    };
    for snapshot in [skipped, foreign_head, fake_genesis] {
        let refused =
            runtime.spawn_from_snapshot("counted", identity.clone(), snapshot, DaemonHostConfig::default());
        assert!(matches!(
            refused.await,
            Err(DaemonError::Core(CoreDaemonError::RestoreFailed(_)))
        ));
    }
    assert_eq!(calls.get(), 0);
    runtime
        .spawn_from_snapshot("counted", identity, good, DaemonHostConfig::default())
        .await
        .unwrap();
}

/// Reports the health and saturation the test sets.
struct Reporting {
    saturation_bits: Arc<AtomicU32>,
}

impl MeshDaemon for Reporting {
    fn name(&self) -> &str {
        "reporting"
    }
    fn requirements(&self) -> CapabilityFilter {
        CapabilityFilter::default()
    }
    fn process(&mut self, _event: &CausalEvent) -> Result<Vec<Bytes>, CoreDaemonError> {
        Ok(Vec::new())
    }
    fn health(&self) -> DaemonHealth {
        DaemonHealth::Degraded {
            reason: "disk almost full".into(),
        }
    }
    fn saturation(&self) -> f32 {
        f32::from_bits(self.saturation_bits.load(Ordering::SeqCst))
    }
}

#[tokio::test]
async fn health_and_saturation_reported() {
    let runtime = ready_runtime().await;
    let bits = Arc::new(AtomicU32::new(0.5f32.to_bits()));
    let shared = Arc::clone(&bits);
    runtime
        .register_factory("reporting", move || {
            Box::new(Reporting {
                saturation_bits: Arc::clone(&shared),
            })
        })
        .unwrap();
    let handle = runtime
        .spawn(
            "reporting",
            Identity::from_seed([0x5f; 32]),
            DaemonHostConfig::default(),
        )
        .await
        .unwrap();
    assert_eq!(
        handle.health().unwrap(),
        DaemonHealth::Degraded {
            reason: "disk almost full".into()
        }
    );
    for (reported, seen) in [
        (0.5f32, 0.5f32),
        (7.0, 1.0),
        (-1.0, 0.0),
        (f32::NAN, 1.0),
        (f32::INFINITY, 1.0),
    ] {
        bits.store(reported.to_bits(), Ordering::SeqCst);
        assert_eq!(handle.saturation().unwrap(), seen, "reported {reported}");
    }
    let echo = runtime
        .spawn(
            "echo",
            Identity::from_seed([0x60; 32]),
            DaemonHostConfig::default(),
        )
        .await
        .unwrap();
    assert_eq!(
        (echo.health().unwrap(), echo.saturation().unwrap()),
        (DaemonHealth::Healthy, 0.0)
    );
}

#[tokio::test]
async fn on_control_sequence() {
    let runtime = ready_runtime().await;
    let seen = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let shared = Arc::clone(&seen);
    runtime
        .register_factory("recorder", move || {
            Box::new(ControlRecorder {
                seen: Arc::clone(&shared),
            })
        })
        .unwrap();
    let identity = Identity::from_seed([0x61; 32]);
    let origin = identity.origin_hash();
    runtime
        .spawn("echo", identity.clone(), DaemonHostConfig::default())
        .await
        .unwrap();
    deliver_from_one(&runtime, origin, 3);
    let snapshot = runtime.stop_with_snapshot(origin).await.unwrap();
    let mut empty = snapshot;
    empty.state = Bytes::new();
    runtime
        .spawn_from_snapshot("recorder", identity, empty, DaemonHostConfig::default())
        .await
        .unwrap();
    assert_eq!(*seen.lock(), vec![DaemonControl::Restored { through_seq: 3 }]);
    runtime.stop(origin).await.unwrap();
    assert_eq!(
        *seen.lock(),
        vec![
            DaemonControl::Restored { through_seq: 3 },
            DaemonControl::Stopping
        ]
    );
}

/// Requires the `gpu` capability.
struct NeedsGpu;

impl MeshDaemon for NeedsGpu {
    fn name(&self) -> &str {
        "needs-gpu"
    }
    fn requirements(&self) -> CapabilityFilter {
        CapabilityFilter::default().require("gpu").require("cuda")
    }
    fn process(&mut self, _event: &CausalEvent) -> Result<Vec<Bytes>, CoreDaemonError> {
        Ok(Vec::new())
    }
}

#[tokio::test]
async fn requirements_not_met_rolls_back() {
    let runtime = ready_runtime().await;
    runtime.register_factory("gpu", || Box::new(NeedsGpu)).unwrap();
    let identity = Identity::from_seed([0x62; 32]);
    let refused = runtime
        .spawn("gpu", identity.clone(), DaemonHostConfig::default())
        .await
        .unwrap_err();
    assert_eq!(
        refused,
        DaemonError::RequirementsNotMet {
            kind: "gpu".into(),
            missing: vec!["cuda".into(), "gpu".into()]
        }
    );
    assert_eq!(runtime.daemon_count(), 0);
    runtime
        .spawn("echo", identity, DaemonHostConfig::default())
        .await
        .unwrap();

    let capable = MeshBuilder::new("127.0.0.1:0", &PSK)
        .unwrap()
        .capabilities(CapabilitySet::new().with_tag("gpu").with_tag("cuda"))
        .build()
        .await
        .unwrap();
    let runtime = DaemonRuntime::new(Arc::new(capable));
    runtime.register_factory("gpu", || Box::new(NeedsGpu)).unwrap();
    runtime.start().await.unwrap();
    runtime
        .spawn(
            "gpu",
            Identity::from_seed([0x62; 32]),
            DaemonHostConfig::default(),
        )
        .await
        .unwrap();
}

#[test]
fn mesh_rejects_bad_addr() {
    for address in [
        "localhost:4000",
        "not an address",
        "127.0.0.1",
        "127.0.0.1:99999",
        "",
    ] {
        assert!(
            matches!(MeshBuilder::new(address, &PSK), Err(MeshError::InvalidBindAddr(given)) if given == address),
            "{address:?} was accepted"
        );
    }
    assert!(MeshBuilder::new("[::1]:0", &PSK).is_ok());
}

#[test]
fn mesh_rejects_zero_psk() {
    assert!(matches!(
        MeshBuilder::new("127.0.0.1:0", &[0; 32]),
        Err(MeshError::WeakPsk)
    ));
    let mut one_bit = [0; 32];
    one_bit[31] = 1;
    assert!(MeshBuilder::new("127.0.0.1:0", &one_bit).is_ok());
    assert!(MeshBuilder::new("127.0.0.1:0", &[0x42; 32]).is_ok());
}

#[tokio::test]
async fn mesh_binds_real_port() {
    let node = Identity::from_seed([0x63; 32]);
    let mesh = MeshBuilder::new("127.0.0.1:0", &PSK)
        .unwrap()
        .identity(node.clone())
        .build()
        .await
        .unwrap();
    let address = mesh.local_addr();
    assert_ne!(address.port(), 0);
    assert_eq!(mesh.inner().local_addr(), address);
    assert_eq!(mesh.node_id(), node.entity_id());
    assert_eq!(mesh.identity().origin_hash(), node.origin_hash());
    std::net::TcpStream::connect(address).expect("the listener accepts into its backlog");

    // The port is really taken: a second bind fails with the OS error.
    let taken = MeshBuilder::new(&address.to_string(), &PSK)
        .unwrap()
        .build()
        .await;
    assert!(matches!(taken, Err(MeshError::Bind(_))));
    // The PSK is 0x42 repeated: neither its decimal nor its hex spelling
    // may show (a run of four bytes, so a port such as 42429 does not
    // count).
    let printed = format!("{mesh:?}");
    assert!(
        !printed.contains("66, 66") && !printed.contains("42424242"),
        "{printed}"
    );
    drop(mesh);
    assert!(
        std::net::TcpStream::connect(address).is_err(),
        "dropping the mesh closes the listener"
    );
}

#[tokio::test]
async fn generated_identities_differ() {
    let first = mesh().await;
    let second = mesh().await;
    assert_ne!(first.node_id(), second.node_id());
    assert_ne!(Identity::generate().entity_id(), Identity::generate().entity_id());
}
