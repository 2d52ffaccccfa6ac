//! [`DaemonRuntime`]: the lifecycle state machine (spec §4.1), every
//! operation with its checks in precedence order (§4.2), and the fences of §5
//! that keep concurrent operations from leaving partial state.
//!
//! The lifecycle is one atomic changed only by compare-and-swap (start) or an
//! atomic swap (shutdown). Every insertion re-reads it afterwards and removes
//! exactly what it inserted if a shutdown began meanwhile (fence F3); RAII
//! guards roll back reservations and handler installs when a future is
//! dropped at an await point or user code panics (G5). No lock guard is held
//! across an `.await`, so every future is `Send`.

use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use super::handle::DaemonHandle;
use super::host::{ChainHead, Instance};
use super::table::{Factory, KindTable, OriginTable, Placeholder};
use super::{DaemonError, DaemonHostConfig, Lifecycle, MeshDaemon};
use crate::causal::CausalEvent;
use crate::core::DaemonError as CoreDaemonError;
use crate::identity::Identity;
use crate::mesh::{HandlerEntry, Mesh, MigrationHandler};
use crate::snapshot::{StateSnapshot, chain_inconsistency, check_sequence_ceiling};

const REGISTERING: u8 = 0;
const READY: u8 = 1;
const SHUTTING_DOWN: u8 = 2;

/// Tokens that tell runtimes (handler owners) and instances apart.
static NEXT_RUNTIME_TOKEN: AtomicU64 = AtomicU64::new(1);

/// Test hooks (G6): each is a delay in milliseconds, 0 for none.
#[derive(Default)]
struct Stalls {
    spawn: AtomicU64,
    start: AtomicU64,
    register: AtomicU64,
}

struct RuntimeInner {
    token: u64,
    mesh: Arc<Mesh>,
    lifecycle: AtomicU8,
    kinds: KindTable,
    origins: OriginTable,
    next_instance_id: AtomicU64,
    stalls: Stalls,
    /// Serialises shutdown sweeps, so that every concurrent `shutdown`
    /// returns only after the sweep is complete.
    sweep: tokio::sync::Mutex<()>,
}

impl RuntimeInner {
    fn lifecycle(&self) -> Lifecycle {
        match self.lifecycle.load(Ordering::Acquire) {
            REGISTERING => Lifecycle::Registering,
            READY => Lifecycle::Ready,
            _ => Lifecycle::ShuttingDown,
        }
    }

    fn is_shutting_down(&self) -> bool {
        self.lifecycle.load(Ordering::Acquire) == SHUTTING_DOWN
    }
}

impl Drop for RuntimeInner {
    fn drop(&mut self) {
        self.mesh.inner().clear_handler(self.token);
    }
}

/// The handler a runtime installs in its mesh; it holds the runtime weakly.
struct RuntimeHandler {
    runtime: Weak<RuntimeInner>,
}

impl MigrationHandler for RuntimeHandler {
    fn is_ready(&self) -> bool {
        self.runtime
            .upgrade()
            .is_some_and(|runtime| runtime.lifecycle() == Lifecycle::Ready)
    }
}

/// How a new instance's chain and state begin.
enum StartFrom {
    Genesis,
    Snapshot(StateSnapshot),
}

/// Removes a spawn's own origin entry unless the spawn completed (rollback on
/// error, cancellation or a panicking factory).
struct Reservation<'a> {
    origins: &'a OriginTable,
    origin_hash: u64,
    instance_id: u64,
    completed: bool,
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if !self.completed {
            self.origins.remove_instance(self.origin_hash, self.instance_id);
        }
    }
}

/// Clears this runtime's handler if `start` does not reach Ready (an error,
/// a lost race with `shutdown`, or the future dropped in the start stall).
struct HandlerInstall<'a> {
    inner: &'a RuntimeInner,
}

impl Drop for HandlerInstall<'_> {
    fn drop(&mut self) {
        if self.inner.lifecycle() != Lifecycle::Ready {
            self.inner.mesh.inner().clear_handler(self.inner.token);
        }
    }
}

fn already_registered(origin_hash: u64) -> DaemonError {
    CoreDaemonError::ProcessFailed(format!("daemon {origin_hash:#018x} already registered")).into()
}

/// Refuses a snapshot that belongs to another entity, contradicts itself or
/// stands past the sequence ceiling (checked before any table is touched).
fn check_restorable(snapshot: &StateSnapshot, identity: &Identity) -> Result<(), DaemonError> {
    if snapshot.entity_id != *identity.entity_id() {
        return Err(DaemonError::SnapshotIdentityMismatch {
            snapshot: snapshot.entity_id,
            identity: *identity.entity_id(),
        });
    }
    let inconsistency = chain_inconsistency(
        snapshot.through_seq,
        &snapshot.chain_link,
        snapshot.head_hash,
        identity.origin_hash(),
    );
    if let Some(rule) = inconsistency {
        return Err(CoreDaemonError::RestoreFailed(format!("inconsistent snapshot: {rule}")).into());
    }
    check_sequence_ceiling(snapshot.through_seq).map_err(DaemonError::InvalidSnapshot)
}

async fn stall(hook: &AtomicU64) {
    let ms = hook.load(Ordering::Acquire);
    if ms > 0 {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
}

/// Hosts daemons on one [`Mesh`]. Cloning shares the runtime; when the last
/// clone is dropped, its migration handler is cleared from the mesh.
///
/// Lifecycle: created `Registering`; [`start`](Self::start) makes it `Ready`
/// (only then can daemons be spawned); [`shutdown`](Self::shutdown) makes it
/// `ShuttingDown` for good and stops every daemon. Any number of runtimes may
/// share a mesh, but only one at a time can be started on it.
///
/// Async methods must run inside a Tokio runtime; `deliver`, `replay`,
/// `latest_snapshot`, `handle` and the synchronous handle methods need none.
/// `stop`, `stop_with_snapshot` and `shutdown` wait (blocking the thread) for
/// a `process` call already running on the daemons they stop.
#[derive(Clone)]
pub struct DaemonRuntime {
    inner: Arc<RuntimeInner>,
}

impl DaemonRuntime {
    /// A runtime on `mesh`, in `Registering`.
    pub fn new(mesh: Arc<Mesh>) -> Self {
        Self {
            inner: Arc::new(RuntimeInner {
                token: NEXT_RUNTIME_TOKEN.fetch_add(1, Ordering::Relaxed),
                mesh,
                lifecycle: AtomicU8::new(REGISTERING),
                kinds: KindTable::default(),
                origins: OriginTable::new(),
                next_instance_id: AtomicU64::new(1),
                stalls: Stalls::default(),
                sweep: tokio::sync::Mutex::new(()),
            }),
        }
    }

    /// The mesh this runtime runs on.
    pub fn mesh(&self) -> &Arc<Mesh> {
        &self.inner.mesh
    }

    /// The current lifecycle state.
    pub fn lifecycle(&self) -> Lifecycle {
        self.inner.lifecycle()
    }

    /// Whether the runtime is `Ready`.
    pub fn is_ready(&self) -> bool {
        self.lifecycle() == Lifecycle::Ready
    }

    /// The number of hosted instances (placeholders excluded).
    pub fn daemon_count(&self) -> usize {
        self.inner.origins.hosted_count()
    }

    /// The registered kinds, sorted.
    pub fn registered_kinds(&self) -> Vec<String> {
        self.inner.kinds.names()
    }

    fn check_ready(&self) -> Result<(), DaemonError> {
        match self.lifecycle() {
            Lifecycle::Registering => Err(DaemonError::NotReady),
            Lifecycle::Ready => Ok(()),
            Lifecycle::ShuttingDown => Err(DaemonError::ShuttingDown),
        }
    }

    fn check_not_shutting_down(&self) -> Result<(), DaemonError> {
        if self.inner.is_shutting_down() {
            Err(DaemonError::ShuttingDown)
        } else {
            Ok(())
        }
    }

    fn stall_thread(&self) {
        let ms = self.inner.stalls.register.load(Ordering::Acquire);
        if ms > 0 {
            std::thread::sleep(Duration::from_millis(ms));
        }
    }

    fn next_instance_id(&self) -> u64 {
        self.inner.next_instance_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Registers the factory of daemon kind `kind`. A kind can be registered
    /// once; to reload code, register a new kind (for example `counter@2`).
    ///
    /// # Errors
    /// `ShuttingDown` (checked first, and again after inserting);
    /// `FactoryAlreadyRegistered(kind)`, leaving the incumbent in place.
    pub fn register_factory<F>(&self, kind: &str, factory: F) -> Result<(), DaemonError>
    where
        F: Fn() -> Box<dyn MeshDaemon> + Send + Sync + 'static,
    {
        self.check_not_shutting_down()?;
        self.stall_thread();
        let factory: Factory = Arc::new(factory);
        if self.inner.kinds.insert(kind, Arc::clone(&factory)).is_err() {
            return Err(DaemonError::FactoryAlreadyRegistered(kind.to_owned()));
        }
        if self.inner.is_shutting_down() {
            self.inner.kinds.remove_own(kind, &factory);
            return Err(DaemonError::ShuttingDown);
        }
        Ok(())
    }

    /// Installs the migration handler in the mesh, then becomes `Ready`.
    /// Starting a `Ready` runtime does nothing.
    ///
    /// # Errors
    /// `ShuttingDown` if shut down (before or during the call; nothing stays
    /// installed); `MeshInUse` if another runtime's handler occupies the mesh.
    pub async fn start(&self) -> Result<(), DaemonError> {
        match self.lifecycle() {
            Lifecycle::Ready => return Ok(()),
            Lifecycle::ShuttingDown => return Err(DaemonError::ShuttingDown),
            Lifecycle::Registering => {}
        }
        let handler: Arc<dyn MigrationHandler> = Arc::new(RuntimeHandler {
            runtime: Arc::downgrade(&self.inner),
        });
        let entry = Arc::new(HandlerEntry {
            owner: self.inner.token,
            handler,
        });
        let node = self.inner.mesh.inner();
        node.install_handler(Arc::clone(&entry))
            .map_err(|_| DaemonError::MeshInUse)?;
        let install = HandlerInstall { inner: &self.inner };
        stall(&self.inner.stalls.start).await;
        // A concurrent start of this runtime that was cancelled in its stall
        // may have cleared the slot: publish Ready only with the handler in.
        node.install_handler(entry).map_err(|_| DaemonError::MeshInUse)?;
        let outcome = match self.inner.lifecycle.compare_exchange(
            REGISTERING,
            READY,
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            Ok(_) | Err(READY) => Ok(()),
            Err(_) => Err(DaemonError::ShuttingDown),
        };
        drop(install);
        outcome
    }

    /// Shuts down for good: clears the handler, removes every kind,
    /// placeholder and instance, and stops each instance as `stop` does.
    /// Idempotent; concurrent calls all return after the sweep. The mesh is
    /// not closed.
    ///
    /// # Errors
    /// None in milestone 1; the `Result` leaves room for migration aborts.
    pub async fn shutdown(&self) -> Result<(), DaemonError> {
        self.inner.lifecycle.swap(SHUTTING_DOWN, Ordering::AcqRel);
        self.inner.mesh.inner().clear_handler(self.inner.token);
        let _sweeping = self.inner.sweep.lock().await;
        self.inner.kinds.clear();
        for instance in self.inner.origins.sweep() {
            instance.stop();
        }
        Ok(())
    }

    /// Spawns a new instance of `kind` at the start of its chain.
    ///
    /// # Errors
    /// In order: `NotReady` / `ShuttingDown`; `FactoryNotFound`;
    /// `Core(ProcessFailed("daemon 0x… already registered"))` when the origin
    /// is in use (the incumbent is untouched; the factory is not called);
    /// `ShuttingDown` if a shutdown began meanwhile; `RequirementsNotMet`.
    /// Every failure after the reservation removes exactly what this call
    /// inserted.
    pub async fn spawn(
        &self,
        kind: &str,
        identity: Identity,
        config: DaemonHostConfig,
    ) -> Result<DaemonHandle, DaemonError> {
        self.spawn_instance(kind, identity, config, StartFrom::Genesis)
            .await
    }

    /// Spawns `kind` restored from `snapshot`: the chain continues at
    /// `snapshot.through_seq + 1` with parent `snapshot.head_hash`, the
    /// horizon carries over, statistics start at zero, and the daemon is told
    /// `Restored { through_seq }`.
    ///
    /// # Errors
    /// As [`spawn`](Self::spawn), plus, before any table is touched:
    /// `SnapshotIdentityMismatch` unless all 32 bytes of the entity ids
    /// match, `Core(RestoreFailed)` for an inconsistent snapshot, and
    /// `InvalidSnapshot(SequenceBeyondCeiling)` for one whose `through_seq`
    /// is past [`MAX_SEQUENCE`](crate::causal::MAX_SEQUENCE); and `Core(e)`
    /// if the daemon's `restore` fails.
    pub async fn spawn_from_snapshot(
        &self,
        kind: &str,
        identity: Identity,
        snapshot: StateSnapshot,
        config: DaemonHostConfig,
    ) -> Result<DaemonHandle, DaemonError> {
        self.spawn_instance(kind, identity, config, StartFrom::Snapshot(snapshot))
            .await
    }

    async fn spawn_instance(
        &self,
        kind: &str,
        identity: Identity,
        config: DaemonHostConfig,
        start_from: StartFrom,
    ) -> Result<DaemonHandle, DaemonError> {
        self.check_ready()?;
        // The factory found here is the one used: a shutdown during the stall
        // empties the kind table, and the caller must see `ShuttingDown`.
        let (kind, factory) = self
            .inner
            .kinds
            .get(kind)
            .ok_or_else(|| DaemonError::FactoryNotFound(kind.to_owned()))?;
        if let StartFrom::Snapshot(snapshot) = &start_from {
            check_restorable(snapshot, &identity)?;
        }
        stall(&self.inner.stalls.spawn).await;

        let origin_hash = identity.origin_hash();
        let instance_id = self.next_instance_id();
        if self.inner.origins.reserve(origin_hash, instance_id).is_err() {
            return Err(already_registered(origin_hash));
        }
        let mut reservation = Reservation {
            origins: &self.inner.origins,
            origin_hash,
            instance_id,
            completed: false,
        };
        self.check_not_shutting_down()?;

        let mut daemon = factory();
        let missing = daemon.requirements().missing(self.inner.mesh.capabilities());
        if !missing.is_empty() {
            return Err(DaemonError::RequirementsNotMet {
                kind: kind.to_string(),
                missing,
            });
        }
        let chain = match start_from {
            StartFrom::Genesis => ChainHead::genesis(origin_hash),
            StartFrom::Snapshot(mut snapshot) => {
                let chain = ChainHead::of_snapshot(&mut snapshot);
                daemon.restore(snapshot.state)?;
                daemon.on_control(super::DaemonControl::Restored {
                    through_seq: snapshot.through_seq,
                });
                chain
            }
        };
        let instance = Arc::new(Instance::new(
            instance_id,
            *identity.entity_id(),
            origin_hash,
            kind,
            daemon,
            chain,
            &config,
        ));
        if !self.inner.origins.publish(&instance) || self.inner.is_shutting_down() {
            drop(reservation);
            instance.stop();
            return Err(DaemonError::ShuttingDown);
        }
        reservation.completed = true;
        Ok(DaemonHandle::of(&instance))
    }

    fn hosted(&self, origin_hash: u64) -> Result<Arc<Instance>, CoreDaemonError> {
        self.inner
            .origins
            .hosted(origin_hash)
            .ok_or(CoreDaemonError::NotFound(origin_hash))
    }

    /// Stops the instance of `origin_hash`: removes it, waits for a running
    /// `process` to return, tells the daemon `Stopping` and drops it. After
    /// this returns, `process` is never called on that instance again.
    ///
    /// # Errors
    /// `Core(NotFound)` if the origin is not hosted (reserved and expected
    /// origins included).
    pub async fn stop(&self, origin_hash: u64) -> Result<(), DaemonError> {
        let instance = self
            .inner
            .origins
            .remove_hosted(origin_hash)
            .ok_or(CoreDaemonError::NotFound(origin_hash))?;
        instance.stop();
        Ok(())
    }

    /// Takes a final snapshot and stops the instance under one hold of its
    /// mutex, so no event is processed between the two. A stateless daemon
    /// without state gets empty state, so its chain head still carries over.
    ///
    /// # Errors
    /// `Core(NotFound)`; `Core(SnapshotFailed)` if a stateful daemon returns
    /// no state, in which case the daemon keeps running.
    pub async fn stop_with_snapshot(&self, origin_hash: u64) -> Result<StateSnapshot, DaemonError> {
        let instance = self.hosted(origin_hash)?;
        let snapshot = instance.stop_with_snapshot(|| {
            self.inner.origins.remove_instance(origin_hash, instance.id);
        })?;
        Ok(snapshot)
    }

    /// Takes a snapshot of the instance now; it becomes its latest snapshot.
    ///
    /// # Errors
    /// `Core(NotFound)`; `Core(SnapshotFailed)` if a stateful daemon returns
    /// no state (a stateless one gives `Ok(None)`).
    pub async fn snapshot(&self, origin_hash: u64) -> Result<Option<StateSnapshot>, DaemonError> {
        Ok(self.hosted(origin_hash)?.snapshot()?)
    }

    /// The latest snapshot the instance produced (explicit or automatic).
    ///
    /// # Errors
    /// `Core(NotFound)`.
    pub fn latest_snapshot(&self, origin_hash: u64) -> Result<Option<StateSnapshot>, DaemonError> {
        Ok(self.hosted(origin_hash)?.latest_snapshot()?)
    }

    /// Feeds `event` to the daemon of `origin_hash` and returns its outputs,
    /// each linked into the daemon's chain. Callable from any thread; the
    /// inbound link is not validated.
    ///
    /// # Errors
    /// `Core(NotFound)` if the origin is not hosted or its instance stopped;
    /// `Core(e)` if `process` fails (counted in `errors`; the chain is
    /// unchanged); `Core(SequenceExhausted)` if the outputs would take the
    /// chain past [`MAX_SEQUENCE`](crate::causal::MAX_SEQUENCE) (`process`
    /// has run, its outputs are discarded, counted in `errors`; the chain is
    /// unchanged).
    pub fn deliver(&self, origin_hash: u64, event: &CausalEvent) -> Result<Vec<CausalEvent>, DaemonError> {
        let delivered = self
            .inner
            .origins
            .with_hosted(origin_hash, |instance| instance.deliver(event));
        Ok(delivered.ok_or(CoreDaemonError::NotFound(origin_hash))??)
    }

    /// The retained outputs with sequence ≥ `from_seq` (0 reads as 1), in
    /// order; empty if `from_seq` is past the head.
    ///
    /// # Errors
    /// `Core(NotFound)`; `Core(Stale(first))` if outputs before the oldest
    /// retained one (`first`) are asked for.
    pub fn replay(&self, origin_hash: u64, from_seq: u64) -> Result<Vec<CausalEvent>, DaemonError> {
        Ok(self.hosted(origin_hash)?.replay(from_seq)?)
    }

    /// A handle to the current instance of `origin_hash`, if one is hosted.
    pub fn handle(&self, origin_hash: u64) -> Option<DaemonHandle> {
        self.inner
            .origins
            .hosted(origin_hash)
            .map(|instance| DaemonHandle::of(&instance))
    }

    /// Reserves `origin_hash` for an inbound migration of `kind` (milestone
    /// 2). The placeholder blocks spawns of that origin, is not counted by
    /// `daemon_count`, and is removed by `shutdown` or
    /// [`cancel_expected_migration`](Self::cancel_expected_migration).
    ///
    /// # Errors
    /// `ShuttingDown`; `FactoryNotFound`; `Core(ProcessFailed("… already
    /// registered"))` if the origin has an entry (left untouched).
    pub fn expect_migration(
        &self,
        kind: &str,
        origin_hash: u64,
        config: DaemonHostConfig,
    ) -> Result<(), DaemonError> {
        self.check_not_shutting_down()?;
        if !self.inner.kinds.contains(kind) {
            return Err(DaemonError::FactoryNotFound(kind.to_owned()));
        }
        self.stall_thread();
        let token = self.next_instance_id();
        let placeholder = Placeholder {
            token,
            kind: kind.to_owned(),
            config,
        };
        if self.inner.origins.expect(origin_hash, placeholder).is_err() {
            return Err(already_registered(origin_hash));
        }
        if self.inner.is_shutting_down() {
            self.inner.origins.remove_placeholder(origin_hash, Some(token));
            return Err(DaemonError::ShuttingDown);
        }
        Ok(())
    }

    /// Removes the placeholder of `origin_hash`; returns whether there was
    /// one. Hosted instances are not touched.
    pub fn cancel_expected_migration(&self, origin_hash: u64) -> bool {
        self.inner.origins.remove_placeholder(origin_hash, None)
    }

    /// Test hook: `spawn` and `spawn_from_snapshot` sleep this long between
    /// their checks and the reservation.
    #[doc(hidden)]
    pub fn set_spawn_stall_ms(&self, ms: u64) {
        self.inner.stalls.spawn.store(ms, Ordering::Release);
    }

    /// Test hook: `start` sleeps this long between installing the handler and
    /// becoming Ready.
    #[doc(hidden)]
    pub fn set_start_stall_ms(&self, ms: u64) {
        self.inner.stalls.start.store(ms, Ordering::Release);
    }

    /// Test hook: `register_factory` and `expect_migration` block the calling
    /// thread this long before inserting.
    #[doc(hidden)]
    pub fn set_register_stall_ms(&self, ms: u64) {
        self.inner.stalls.register.store(ms, Ordering::Release);
    }
}

impl std::fmt::Debug for DaemonRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DaemonRuntime")
            .field("lifecycle", &self.lifecycle())
            .field("daemons", &self.daemon_count())
            .field("kinds", &self.registered_kinds())
            .finish()
    }
}
