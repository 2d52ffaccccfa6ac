//! `holdfast-compute` hosts *daemons*: small, synchronous, stateful event
//! processors with a cryptographic identity. The runtime owns each daemon's
//! identity, causal output chain, snapshots and lifecycle, so that its state
//! survives a code reload (`stop_with_snapshot` then `spawn_from_snapshot`
//! under a new kind), an upgrade (the snapshot encoding is stable and
//! validated) and, in milestone 2, a move to another node.
//!
//! The map of the crate:
//!
//! | module | owns |
//! |---|---|
//! | [`identity`] | Ed25519 identities, entity ids and origin hashes |
//! | [`causal`] | chain links, events, the observed horizon and the chain validator |
//! | [`snapshot`] | [`StateSnapshot`] and its byte format |
//! | [`capabilities`] | capability tags and the spawn requirements filter |
//! | [`mesh`] | the local node: identity, PSK, a bound listener, the migration-handler slot |
//! | [`compute`] | the [`MeshDaemon`] trait and the [`DaemonRuntime`] that hosts daemons |
//! | [`core`] | the error a daemon itself returns ([`CoreDaemonError`]) |
//!
//! # Example
//!
//! ```
//! use holdfast_compute::{
//!     Bytes, CapabilityFilter, CausalEvent, CausalLink, CoreDaemonError, DaemonHostConfig,
//!     DaemonRuntime, Identity, MeshBuilder, MeshDaemon,
//! };
//! use std::sync::Arc;
//!
//! struct Echo;
//! impl MeshDaemon for Echo {
//!     fn name(&self) -> &str { "echo" }
//!     fn requirements(&self) -> CapabilityFilter { CapabilityFilter::default() }
//!     fn process(&mut self, event: &CausalEvent) -> Result<Vec<Bytes>, CoreDaemonError> {
//!         Ok(vec![event.payload.clone()])
//!     }
//! }
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let mesh = MeshBuilder::new("127.0.0.1:0", &[7; 32]).unwrap().build().await.unwrap();
//! let runtime = DaemonRuntime::new(Arc::new(mesh));
//! runtime.register_factory("echo", || Box::new(Echo)).unwrap();
//! runtime.start().await.unwrap();
//!
//! let identity = Identity::from_seed([0; 32]);
//! let handle = runtime.spawn("echo", identity, DaemonHostConfig::default()).await.unwrap();
//! let input = CausalEvent {
//!     link: CausalLink { origin_hash: 1, sequence: 1, ..CausalLink::default() },
//!     payload: Bytes::from_static(b"ping"),
//!     received_at: 0,
//! };
//! let outputs = runtime.deliver(handle.origin_hash, &input).unwrap();
//! assert_eq!(outputs[0].link.sequence, 1);
//! assert_eq!(outputs[0].payload, Bytes::from_static(b"ping"));
//! # });
//! ```
#![forbid(unsafe_code)]

pub mod capabilities;
pub mod causal;
#[cfg(feature = "compute")]
pub mod compute;
pub mod core;
pub mod identity;
pub mod mesh;
pub mod snapshot;

pub use bytes::Bytes;
pub use capabilities::{CapabilityFilter, CapabilitySet};
pub use causal::{CausalEvent, CausalLink, ChainError, ChainValidator, MAX_SEQUENCE, ObservedHorizon};
#[cfg(feature = "compute")]
pub use compute::{
    DaemonControl, DaemonError, DaemonHandle, DaemonHealth, DaemonHostConfig, DaemonRuntime, DaemonStats,
    Lifecycle, MeshDaemon,
};
pub use core::DaemonError as CoreDaemonError;
pub use identity::{EntityId, EntityKeypair, Identity, IdentityError, Signature};
pub use mesh::{Mesh, MeshBuilder, MeshError, MeshNode};
pub use snapshot::{SnapshotError, StateSnapshot};
