//! The daemon host: the [`MeshDaemon`] trait a daemon implements, and the
//! [`DaemonRuntime`] that spawns, feeds, snapshots, restores and stops
//! daemons, with [`DaemonHandle`]s onto single instances.
//!
//! Submodules: `runtime` (lifecycle, the operations and their error
//! precedence, the fences of spec §5), `table` (the sharded origin table and
//! the kind table), `host` (one hosted instance: its daemon behind a mutex,
//! chain head, horizon, output log and statistics) and `handle`.
//!
//! The runtime never calls user code (a factory or a daemon method) while it
//! holds a table lock, and the delivery path takes no runtime-wide lock.

mod handle;
mod host;
mod runtime;
mod table;

use bytes::Bytes;

use crate::capabilities::CapabilityFilter;
pub use crate::causal::{CausalEvent, CausalLink};
use crate::core::DaemonError as CoreDaemonError;
use crate::identity::EntityId;
use crate::snapshot::SnapshotError;
pub use crate::snapshot::StateSnapshot;

pub use handle::DaemonHandle;
pub use runtime::DaemonRuntime;

/// A synchronous, stateful event processor hosted by a [`DaemonRuntime`].
///
/// A daemon turns one inbound event into zero or more output payloads; the
/// runtime wraps each payload in the daemon's causal chain. Every method runs
/// under the instance's mutex, so calls never overlap. A daemon must not call
/// [`DaemonRuntime::deliver`] for its own origin from inside `process`: that
/// deadlocks.
pub trait MeshDaemon: Send + Sync {
    /// A human-readable name, captured once at spawn.
    fn name(&self) -> &str;

    /// The capability tags the hosting node must have.
    fn requirements(&self) -> CapabilityFilter;

    /// Processes one event. An `Err` leaves the chain, horizon and output log
    /// unchanged and counts in [`DaemonStats::errors`].
    ///
    /// # Errors
    /// Whatever the daemon reports; it is returned to the caller as
    /// [`DaemonError::Core`].
    fn process(&mut self, event: &CausalEvent) -> Result<Vec<Bytes>, CoreDaemonError>;

    /// The daemon's state, or `None` if it keeps none.
    fn snapshot(&self) -> Option<Bytes> {
        None
    }

    /// Whether the daemon keeps state; a stateful daemon whose `snapshot`
    /// returns `None` makes snapshots fail instead of being skipped.
    fn is_stateful(&self) -> bool {
        false
    }

    /// Restores state produced by [`MeshDaemon::snapshot`].
    ///
    /// The default accepts empty state and refuses anything else, so that
    /// state is never dropped without notice.
    ///
    /// # Errors
    /// `RestoreFailed` when the state cannot be restored.
    fn restore(&mut self, state: Bytes) -> Result<(), CoreDaemonError> {
        if state.is_empty() {
            Ok(())
        } else {
            Err(CoreDaemonError::RestoreFailed(format!(
                "daemon '{}' does not implement restore",
                self.name()
            )))
        }
    }

    /// The daemon's health, reported through [`DaemonHandle::health`].
    fn health(&self) -> DaemonHealth {
        DaemonHealth::Healthy
    }

    /// How loaded the daemon is, 0.0 to 1.0 (clamped by the handle).
    fn saturation(&self) -> f32 {
        0.0
    }

    /// Told of lifecycle events: `Restored` after a successful restore,
    /// `Stopping` before removal.
    fn on_control(&mut self, control: DaemonControl) {
        let _ = control;
    }
}

/// A daemon's own view of its health.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DaemonHealth {
    /// Working normally.
    Healthy,
    /// Working with reduced capacity or quality.
    Degraded {
        /// Why.
        reason: String,
    },
    /// Not working.
    Unhealthy,
}

/// A lifecycle notice the runtime gives a daemon through
/// [`MeshDaemon::on_control`].
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DaemonControl {
    /// The daemon was restored from a snapshot taken through this sequence.
    Restored {
        /// The snapshot's `through_seq`.
        through_seq: u64,
    },
    /// The daemon is about to be removed; `process` will not be called again.
    Stopping,
}

/// Per-instance settings, fixed at spawn.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DaemonHostConfig {
    /// Take a snapshot after every N-th successful `process` call (0: never).
    pub auto_snapshot_interval: u64,
    /// How many recent outputs [`DaemonRuntime::replay`] can return (0: none).
    pub max_log_entries: usize,
}

impl Default for DaemonHostConfig {
    fn default() -> Self {
        Self {
            auto_snapshot_interval: 0,
            max_log_entries: 256,
        }
    }
}

/// Counters of one instance; they start at zero on spawn and on restore.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DaemonStats {
    /// Successful `process` calls.
    pub events_processed: u64,
    /// Outputs produced.
    pub events_emitted: u64,
    /// Failed `process` calls, deliveries refused because their outputs
    /// would pass [`MAX_SEQUENCE`](crate::causal::MAX_SEQUENCE), and
    /// automatic snapshots a stateful daemon could not produce.
    pub errors: u64,
    /// Snapshots produced (explicit, automatic and final).
    pub snapshots_taken: u64,
}

/// The runtime's lifecycle: `Registering → Ready → ShuttingDown`, and
/// `ShuttingDown` is terminal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lifecycle {
    /// Kinds can be registered; daemons cannot be spawned yet.
    Registering,
    /// Started: daemons can be spawned.
    Ready,
    /// Shut down; nothing can be spawned or registered again.
    ShuttingDown,
}

/// Why a runtime operation was refused.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DaemonError {
    /// The runtime has not been started.
    #[error("the daemon runtime is not started")]
    NotReady,
    /// The runtime is shutting down or has shut down.
    #[error("the daemon runtime is shutting down")]
    ShuttingDown,
    /// A factory for this kind is already registered on this runtime.
    #[error("a factory for kind '{0}' is already registered")]
    FactoryAlreadyRegistered(String),
    /// No factory is registered for this kind.
    #[error("no factory is registered for kind '{0}'")]
    FactoryNotFound(String),
    /// The snapshot belongs to another entity than the identity given.
    #[error("snapshot of entity {snapshot} cannot be restored as entity {identity}")]
    SnapshotIdentityMismatch {
        /// The snapshot's entity id.
        snapshot: EntityId,
        /// The identity's entity id.
        identity: EntityId,
    },
    /// The mesh lacks capabilities the daemon requires.
    #[error("kind '{kind}' requires capabilities the mesh lacks: {missing:?}")]
    RequirementsNotMet {
        /// The kind that was spawned.
        kind: String,
        /// The missing tags, sorted.
        missing: Vec<String>,
    },
    /// Another runtime's migration handler occupies the mesh.
    #[error("another daemon runtime owns this mesh's migration handler")]
    MeshInUse,
    /// `spawn_from_snapshot` was given a snapshot built in memory that the
    /// decoder would refuse with this error (a decoded snapshot never gets
    /// here). Chain fields that contradict each other stay
    /// `Core(RestoreFailed)`, as before; today the one error reported here is
    /// [`SnapshotError::SequenceBeyondCeiling`].
    #[error("snapshot cannot be restored: {0}")]
    InvalidSnapshot(SnapshotError),
    /// An error of a daemon or of one origin.
    #[error(transparent)]
    Core(#[from] CoreDaemonError),
}
