//! `holdfast-host`: the node (`holdfast run`, spec/host.md). A node hosts
//! stateful daemons (holdfast-compute) whose code comes from plugin bundles
//! (holdfast-plugin), journals every accepted event in an embedded database
//! (redb) before acknowledging it, and serves an HTTP API and a status page.
//! A daemon survives a hot reload of its bundle, a crash of the node
//! (`kill -9` included) and an upgrade of the node binary, with every
//! acknowledged event processed exactly once and its chain unbroken.
//!
//! | module | owns |
//! |---|---|
//! | [`cluster`] | cluster mode: the node's daemons live in a NATS JetStream cluster |
//! | [`config`] | [`NodeConfig`] and its defaults |
//! | [`error`] | [`NodeError`] (open, run) and [`RequestError`] (one request) |
//! | [`store`] | the database: tables, format version, record layouts |
//! | `kind` | the daemon-kind adapter over plugin contracts, and the reload gate |
//! | `engine` | the thread that journals, processes, snapshots and commits |
//! | [`node`] | [`Node`]: open, spawn, send, outputs, reload, drain |
//! | [`http`] | the HTTP API and its error contract |
//! | [`page`] | the status page |
//! | [`samples`] | sample bundles built from the source tree (demo, tests) |
//!
//! Daemons must be deterministic in (state, event): a restart replays the
//! journal after the latest snapshot, and a daemon whose replay differs
//! from what it produced before is halted as `nondeterministic`.
#![forbid(unsafe_code)]

pub mod cluster;
pub mod config;
mod engine;
pub mod error;
pub mod http;
mod kind;
mod metrics;
pub mod node;
pub mod page;
pub mod samples;
pub mod store;

pub use config::NodeConfig;
pub use error::{NodeError, RequestError};
pub use node::{BundleView, DaemonStatus, DaemonView, Node, NodeInfo, Output, ReloadReport, Spawned};
