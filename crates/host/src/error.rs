//! The node's two error boundaries: [`NodeError`] for opening, running and
//! stopping a node (what an operator must fix), and [`RequestError`] for one
//! request to a running node (what its caller must fix, or retry).
//!
//! Every variant carries the values a person needs to act. Neither enum ever
//! wraps a panic: a plugin that panics or returns garbage surfaces as a
//! `RequestError` naming the daemon, and the node stays up.

use std::net::SocketAddr;
use std::path::PathBuf;

/// Why a node could not be opened, or stopped working.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// A configuration field has a value that cannot work.
    #[error("invalid configuration: {field} {reason}")]
    InvalidConfig {
        /// The field.
        field: &'static str,
        /// Why.
        reason: String,
    },
    /// The node would listen beyond loopback without a bearer token.
    #[error("listening on {listen} (not loopback) requires --token-file")]
    TokenRequired {
        /// The address asked for.
        listen: SocketAddr,
    },
    /// The token file is missing, unreadable or empty.
    #[error("token file {path}: {reason}")]
    TokenFile {
        /// The file.
        path: PathBuf,
        /// Why it cannot be used.
        reason: String,
    },
    /// The data directory or its database cannot be created or opened.
    #[error("data directory {path}: {reason}")]
    DataDir {
        /// The path.
        path: PathBuf,
        /// The underlying failure.
        reason: String,
    },
    /// The database was written by a newer holdfast; it is left untouched.
    #[error(
        "{path} has storage format {found}, newer than the {known} this binary knows; \
         run a newer holdfast (the data was not changed)"
    )]
    NewerFormat {
        /// The database file.
        path: PathBuf,
        /// The format recorded in it.
        found: u32,
        /// The newest format this binary knows.
        known: u32,
    },
    /// The database or a record in it is damaged; nothing was reset.
    #[error("{path} is damaged: {reason} (nothing was changed; restore it from a backup)")]
    Corrupt {
        /// The database file.
        path: PathBuf,
        /// What was found.
        reason: String,
    },
    /// Another process has the database open.
    #[error("{path} is in use by another holdfast process")]
    InUse {
        /// The database file.
        path: PathBuf,
    },
    /// A write to the database failed; the node refuses further writes.
    #[error("storage failed: {0}")]
    Storage(String),
    /// The plugin runtime could not be built or a bundle directory failed.
    #[error("plugins: {0}")]
    Plugins(String),
    /// Binding or serving the HTTP API failed.
    #[error("http: {0}")]
    Http(String),
    /// Joining or leaving the cluster failed (cluster mode).
    #[error("cluster: {0}")]
    Cluster(String),
}

impl NodeError {
    /// The process exit code `holdfast run` uses for this error: 2 when the
    /// data cannot be used as it is (newer format, damage, in use), 1
    /// otherwise.
    pub fn exit_code(&self) -> i32 {
        match self {
            Self::NewerFormat { .. } | Self::Corrupt { .. } | Self::InUse { .. } => 2,
            _ => 1,
        }
    }
}

/// Why one request to a running node was refused. Each variant has a stable
/// [`code`](Self::code) and an HTTP status (see [`crate::http`]).
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// The request itself is malformed.
    #[error("{0}")]
    Malformed(String),
    /// No daemon has this origin.
    #[error("no daemon has origin {origin}")]
    UnknownDaemon {
        /// The origin asked for.
        origin: String,
    },
    /// No loaded bundle provides this kind.
    #[error("no loaded bundle provides daemon kind '{kind}'")]
    UnknownKind {
        /// The kind asked for.
        kind: String,
    },
    /// No bundle by this name is loaded or in the plugins directory.
    #[error("no bundle named '{name}'")]
    UnknownBundle {
        /// The name asked for.
        name: String,
    },
    /// The event is larger than `max_event_bytes`.
    #[error("the event is {size} bytes; the limit is {max}")]
    EventTooLarge {
        /// The event's size.
        size: usize,
        /// `max_event_bytes`.
        max: usize,
    },
    /// The node hosts `max_daemons` already.
    #[error("the node hosts its maximum of {max} daemons")]
    TooManyDaemons {
        /// `max_daemons`.
        max: usize,
    },
    /// The daemon does not accept events in its current status.
    #[error("daemon {origin} is {status}: {reason}")]
    DaemonStopped {
        /// The daemon.
        origin: String,
        /// Its status.
        status: String,
        /// Why it stopped.
        reason: String,
    },
    /// The kind's code refused to start a daemon.
    #[error("kind '{kind}' could not start a daemon: {reason}")]
    SpawnFailed {
        /// The kind.
        kind: String,
        /// The plugin's or runtime's reason.
        reason: String,
    },
    /// A reload failed and was rolled back; the old code keeps serving.
    #[error("reload of {bundle} rolled back: {reason}")]
    ReloadRolledBack {
        /// The bundle.
        bundle: String,
        /// Why.
        reason: String,
    },
    /// A daemon could not be snapshotted before a reload, so the reload
    /// was refused (new code never runs without a durable base).
    #[error("daemon {origin} could not be snapshotted: {reason}")]
    SnapshotFailed {
        /// The daemon.
        origin: String,
        /// Why.
        reason: String,
    },
    /// The node is draining (shutting down) and accepts nothing new.
    #[error("the node is draining")]
    Draining,
    /// Storage failed; the node refuses writes until restarted.
    #[error("storage is unavailable: {0}")]
    StorageUnavailable(String),
    /// A cluster request on a node started without `--cluster`.
    #[error("this node is not part of a cluster (it was started without --cluster)")]
    NotClustered,
    /// No live node of the cluster has this id.
    #[error("node {node} is not a live member of the cluster")]
    UnknownNode {
        /// The node id asked for.
        node: String,
    },
    /// The node asked to take a daemon cannot host its kind (it does not
    /// provide it, or it is draining).
    #[error("node {node} cannot host daemon kind '{kind}' (it does not provide it, or it is draining)")]
    NodeCannotHost {
        /// The node id asked for.
        node: String,
        /// The daemon's kind.
        kind: String,
    },
    /// No live node of the cluster provides the kind.
    #[error("no live node of the cluster can host daemon kind '{kind}'")]
    NoNodeForKind {
        /// The kind asked for.
        kind: String,
    },
    /// Another node changed the daemon's ownership while this request ran;
    /// it was not carried out and may be retried.
    #[error("daemon {origin} changed owner while the request ran: {reason}")]
    OwnershipChanged {
        /// The daemon.
        origin: String,
        /// What showed it.
        reason: String,
    },
    /// The cluster's engine holds data for the daemon that is refused (a
    /// snapshot or record that does not check out) or compute could not
    /// host it; the daemon stays stopped.
    #[error("daemon {origin} cannot run: {reason}")]
    DaemonRefused {
        /// The daemon.
        origin: String,
        /// Why.
        reason: String,
    },
    /// The cluster's engine is unreachable, refused, or a move did not
    /// finish in time; retry later.
    #[error("the cluster is unavailable: {0}")]
    ClusterUnavailable(String),
}

impl RequestError {
    /// The stable, machine-readable code of this error.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Malformed(_) => "malformed",
            Self::UnknownDaemon { .. } => "unknown_daemon",
            Self::UnknownKind { .. } => "unknown_kind",
            Self::UnknownBundle { .. } => "unknown_bundle",
            Self::EventTooLarge { .. } => "event_too_large",
            Self::TooManyDaemons { .. } => "too_many_daemons",
            Self::DaemonStopped { .. } => "daemon_stopped",
            Self::SpawnFailed { .. } => "spawn_failed",
            Self::ReloadRolledBack { .. } => "reload_rolled_back",
            Self::SnapshotFailed { .. } => "snapshot_failed",
            Self::Draining => "draining",
            Self::StorageUnavailable(_) => "storage_unavailable",
            Self::NotClustered => "not_clustered",
            Self::UnknownNode { .. } => "unknown_node",
            Self::NoNodeForKind { .. } => "no_node_for_kind",
            Self::NodeCannotHost { .. } => "node_cannot_host",
            Self::OwnershipChanged { .. } => "ownership_changed",
            Self::DaemonRefused { .. } => "daemon_refused",
            Self::ClusterUnavailable(_) => "cluster_unavailable",
        }
    }
}
