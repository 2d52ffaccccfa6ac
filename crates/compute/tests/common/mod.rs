//! Daemons and helpers shared by the integration tests.
#![allow(dead_code, reason = "each test binary uses a different subset")]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use holdfast_compute::{
    Bytes, CapabilityFilter, CausalEvent, CausalLink, CoreDaemonError, DaemonControl, DaemonHandle,
    DaemonHostConfig, DaemonRuntime, Identity, Mesh, MeshBuilder, MeshDaemon,
};

/// Returns every payload back unchanged.
pub(crate) struct Echo;

impl MeshDaemon for Echo {
    fn name(&self) -> &str {
        "echo"
    }
    fn requirements(&self) -> CapabilityFilter {
        CapabilityFilter::default()
    }
    fn process(&mut self, event: &CausalEvent) -> Result<Vec<Bytes>, CoreDaemonError> {
        Ok(vec![event.payload.clone()])
    }
}

/// Counts events; state and output are the count as a little-endian `u64`.
#[derive(Default)]
pub(crate) struct Counter {
    pub(crate) count: u64,
}

impl MeshDaemon for Counter {
    fn name(&self) -> &str {
        "counter"
    }
    fn requirements(&self) -> CapabilityFilter {
        CapabilityFilter::default()
    }
    fn process(&mut self, _event: &CausalEvent) -> Result<Vec<Bytes>, CoreDaemonError> {
        self.count += 1;
        Ok(vec![Bytes::copy_from_slice(&self.count.to_le_bytes())])
    }
    fn snapshot(&self) -> Option<Bytes> {
        Some(Bytes::copy_from_slice(&self.count.to_le_bytes()))
    }
    fn is_stateful(&self) -> bool {
        true
    }
    fn restore(&mut self, state: Bytes) -> Result<(), CoreDaemonError> {
        let bytes: [u8; 8] = state
            .as_ref()
            .try_into()
            .map_err(|_| CoreDaemonError::RestoreFailed(format!("counter state is {} bytes", state.len())))?;
        self.count = u64::from_le_bytes(bytes);
        Ok(())
    }
}

/// Records `on_control` notices into a shared list.
pub(crate) struct ControlRecorder {
    pub(crate) seen: Arc<parking_lot::Mutex<Vec<DaemonControl>>>,
}

impl MeshDaemon for ControlRecorder {
    fn name(&self) -> &str {
        "control-recorder"
    }
    fn requirements(&self) -> CapabilityFilter {
        CapabilityFilter::default()
    }
    fn process(&mut self, _event: &CausalEvent) -> Result<Vec<Bytes>, CoreDaemonError> {
        Ok(Vec::new())
    }
    fn on_control(&mut self, control: DaemonControl) {
        self.seen.lock().push(control);
    }
}

/// A factory-call counter usable from a `Fn` factory.
#[derive(Clone, Default)]
pub(crate) struct Calls(Arc<AtomicUsize>);

impl Calls {
    pub(crate) fn bump(&self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
    pub(crate) fn get(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

/// Registers `kind` with a factory that builds `make()` and counts its calls.
pub(crate) fn register_counted(
    runtime: &DaemonRuntime,
    kind: &str,
    make: fn() -> Box<dyn MeshDaemon>,
) -> Calls {
    let calls = Calls::default();
    let counted = calls.clone();
    runtime
        .register_factory(kind, move || {
            counted.bump();
            make()
        })
        .unwrap();
    calls
}

/// An input event from `origin` with `sequence` and `payload`.
pub(crate) fn event(origin_hash: u64, sequence: u64, payload: &'static [u8]) -> CausalEvent {
    CausalEvent {
        link: CausalLink {
            origin_hash,
            horizon_encoded: 0,
            sequence,
            parent_hash: 0,
        },
        payload: Bytes::from_static(payload),
        received_at: 0,
    }
}

/// Spawns `kind` as the identity with seed `[seed; 32]`; returns its origin
/// hash and handle.
pub(crate) async fn spawn_seeded(
    runtime: &DaemonRuntime,
    kind: &str,
    seed: u8,
    config: DaemonHostConfig,
) -> (u64, DaemonHandle) {
    let handle = runtime
        .spawn(kind, Identity::from_seed([seed; 32]), config)
        .await
        .unwrap();
    (handle.origin_hash, handle)
}

/// Delivers events 1..=`count` from origin 1 to `origin`; returns every
/// output in order.
pub(crate) fn deliver_from_one(runtime: &DaemonRuntime, origin: u64, count: u64) -> Vec<CausalEvent> {
    (1..=count)
        .flat_map(|sequence| runtime.deliver(origin, &event(1, sequence, b"x")).unwrap())
        .collect()
}

pub(crate) const PSK: [u8; 32] = [0x42; 32];

pub(crate) async fn mesh() -> Arc<Mesh> {
    Arc::new(
        MeshBuilder::new("127.0.0.1:0", &PSK)
            .unwrap()
            .build()
            .await
            .unwrap(),
    )
}

/// A started runtime with `echo` and `counter` registered.
pub(crate) async fn ready_runtime() -> DaemonRuntime {
    let runtime = DaemonRuntime::new(mesh().await);
    runtime.register_factory("echo", || Box::new(Echo)).unwrap();
    runtime
        .register_factory("counter", || Box::new(Counter::default()))
        .unwrap();
    runtime.start().await.unwrap();
    runtime
}
