//! [`DaemonHandle`]: a caller's reference to one instance. It holds the
//! instance weakly, so it never keeps a stopped daemon alive, and once its
//! instance stops every method fails with `Core(NotFound)`, even if the same
//! identity is spawned again.

use std::fmt;
use std::sync::{Arc, Weak};

use super::host::Instance;
use super::{DaemonError, DaemonHealth, DaemonStats};
use crate::causal::{CausalEvent, CausalLink};
use crate::core::DaemonError as CoreDaemonError;
use crate::identity::EntityId;
use crate::snapshot::StateSnapshot;

/// A reference to one hosted instance. `Debug` prints the origin hash, the
/// entity id and the kind.
#[derive(Clone)]
pub struct DaemonHandle {
    /// The instance's origin hash (its routing key).
    pub origin_hash: u64,
    /// The instance's entity id.
    pub entity_id: EntityId,
    kind: Arc<str>,
    name: Arc<str>,
    instance: Weak<Instance>,
}

impl DaemonHandle {
    pub(super) fn of(instance: &Arc<Instance>) -> Self {
        Self {
            origin_hash: instance.origin_hash,
            entity_id: instance.entity_id,
            kind: Arc::clone(&instance.kind),
            name: Arc::clone(&instance.name),
            instance: Arc::downgrade(instance),
        }
    }

    fn instance(&self) -> Result<Arc<Instance>, CoreDaemonError> {
        self.instance
            .upgrade()
            .ok_or(CoreDaemonError::NotFound(self.origin_hash))
    }

    /// The kind the instance was spawned as.
    pub fn kind(&self) -> &str {
        &self.kind
    }

    /// The daemon's [`name`](super::MeshDaemon::name), captured at spawn.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The instance's counters.
    ///
    /// # Errors
    /// `Core(NotFound)` once the instance stopped.
    pub fn stats(&self) -> Result<DaemonStats, DaemonError> {
        Ok(self.instance()?.stats()?)
    }

    /// Takes a snapshot now (see [`DaemonRuntime::snapshot`](super::DaemonRuntime::snapshot)).
    ///
    /// # Errors
    /// `Core(NotFound)` once stopped; `Core(SnapshotFailed)` for a stateful
    /// daemon that returns no state.
    pub async fn snapshot(&self) -> Result<Option<StateSnapshot>, DaemonError> {
        Ok(self.instance()?.snapshot()?)
    }

    /// The latest snapshot produced by this instance, if any.
    ///
    /// # Errors
    /// `Core(NotFound)` once stopped.
    pub fn latest_snapshot(&self) -> Result<Option<StateSnapshot>, DaemonError> {
        Ok(self.instance()?.latest_snapshot()?)
    }

    /// Retained outputs from `from_seq` on (see
    /// [`DaemonRuntime::replay`](super::DaemonRuntime::replay)).
    ///
    /// # Errors
    /// `Core(NotFound)` once stopped; `Core(Stale(first))` for outputs no
    /// longer retained.
    pub fn replay(&self, from_seq: u64) -> Result<Vec<CausalEvent>, DaemonError> {
        Ok(self.instance()?.replay(from_seq)?)
    }

    /// The current chain head (the genesis link before any output).
    ///
    /// # Errors
    /// `Core(NotFound)` once stopped.
    pub fn head(&self) -> Result<CausalLink, DaemonError> {
        Ok(self.instance()?.head()?)
    }

    /// The daemon's reported health.
    ///
    /// # Errors
    /// `Core(NotFound)` once stopped.
    pub fn health(&self) -> Result<DaemonHealth, DaemonError> {
        Ok(self.instance()?.health()?)
    }

    /// The daemon's reported saturation, clamped to `[0, 1]` (NaN is 1.0).
    ///
    /// # Errors
    /// `Core(NotFound)` once stopped.
    pub fn saturation(&self) -> Result<f32, DaemonError> {
        Ok(self.instance()?.saturation()?)
    }
}

impl fmt::Debug for DaemonHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DaemonHandle")
            .field("origin_hash", &format_args!("{:#018x}", self.origin_hash))
            .field("entity_id", &self.entity_id)
            .field("kind", &self.kind)
            .finish()
    }
}
