//! holdfast-cluster: many holdfast nodes on one NATS JetStream deployment.
//!
//! Daemons run on exactly one node at a time; they move on request, when
//! nodes join or leave, when a node drains, and when a node dies, and after
//! every move each accepted input is processed once, the output chain goes
//! on without gap or duplicate, and the state is the state it had
//! (spec/cluster.md). holdfast builds no consensus of its own: inputs and
//! outputs are JetStream streams, ownership is a key-value record changed by
//! compare-and-set, and snapshots are objects sealed under the cluster PSK.
#![forbid(unsafe_code)]

pub mod config;
mod engine;
pub mod error;
mod handoff;
pub mod layout;
pub mod node;
pub mod placement;
pub mod record;
mod restore;
pub mod seal;
#[cfg(feature = "testing")]
pub mod testing;
pub mod version;
pub mod wire;

pub use config::{ClusterConfig, NatsAuth};
pub use error::{ClusterError, RecordError, SealError};
pub use layout::Layout;
pub use node::{
    Cluster, ClusterOutput, DaemonPlacement, DrainReport, KindSource, MigrationReport, MoveRecord, NodeInfo,
    RestoreCounts, SpawnedDaemon,
};
pub use seal::ClusterKeys;

/// Locks a mutex whose contents are only ever replaced whole, never left
/// half-changed (the node's tables, the handoff inbox): a guard poisoned by
/// a panic elsewhere is taken back rather than spreading the panic.
fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
