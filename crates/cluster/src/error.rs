//! The errors of the cluster, one enum per boundary.
//!
//! [`ClusterError`] is what the public API returns; [`SealError`] and
//! [`RecordError`] are the refusals of untrusted bytes read from the engine
//! (snapshots and records), carried inside it so a person sees which daemon
//! and which object were refused.

use std::path::PathBuf;

/// Why a snapshot could not be sealed or opened, or the PSK not read.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    /// The cluster PSK is shorter than the minimum.
    #[error(
        "the cluster PSK has {found} bytes; at least {minimum} are needed (e.g. `head -c 32 /dev/urandom | base64 > psk`)"
    )]
    PskTooShort {
        /// Its length.
        found: usize,
        /// The minimum.
        minimum: usize,
    },
    /// The PSK file could not be read.
    #[error("cannot read the cluster PSK file {path}: {source}")]
    PskUnreadable {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Fewer bytes than the smallest sealed snapshot.
    #[error("the sealed snapshot is truncated: {found} bytes, at least {minimum} needed")]
    Truncated {
        /// Its length.
        found: usize,
        /// The smallest sealed snapshot.
        minimum: usize,
    },
    /// The bytes do not start with the sealed-snapshot magic.
    #[error("the object is not a sealed holdfast snapshot")]
    NotSealed,
    /// The authentication tag does not verify: sealed under another PSK,
    /// for another daemon, epoch or input sequence, or changed since.
    #[error(
        "the snapshot of daemon {origin:016x} does not authenticate: sealed with another PSK, for another place, or changed"
    )]
    Unauthentic {
        /// The daemon it was opened for.
        origin: u64,
    },
}

/// Why a record in the engine's buckets is not believed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// Larger than any record a node writes.
    #[error("the record has {found} bytes; records are at most {maximum}")]
    TooLarge {
        /// Its length.
        found: usize,
        /// The maximum.
        maximum: usize,
    },
    /// Shorter than an empty record's envelope.
    #[error("the record is truncated: {found} bytes, at least {minimum} needed")]
    Truncated {
        /// Its length.
        found: usize,
        /// The smallest envelope.
        minimum: usize,
    },
    /// No record magic: not written by a holdfast node (or not signed).
    #[error("the value is not a signed holdfast record")]
    NotARecord,
    /// A record of another kind.
    #[error("the record is of kind {found}, expected kind {expected}")]
    WrongKind {
        /// The kind asked for.
        expected: u8,
        /// The kind found.
        found: u8,
    },
    /// The declared body length contradicts the record's size.
    #[error("the record declares a {declared}-byte body but is {total} bytes long")]
    LengthMismatch {
        /// The declared body length.
        declared: usize,
        /// The record's length.
        total: usize,
    },
    /// The MAC under the cluster PSK does not verify.
    #[error(
        "the record was not written by a member of this cluster (its MAC does not verify), or was changed"
    )]
    NotFromAMember,
    /// The signature does not verify under the key the record names.
    #[error("the record's signature by node {signer} does not verify")]
    BadSignature {
        /// The node the record claims as signer.
        signer: String,
    },
    /// The body does not decode.
    #[error("the record's body is malformed: {reason}")]
    Malformed {
        /// The decoder's message.
        reason: String,
    },
    /// The body names a writer other than its signer.
    #[error("the record names {writer} as its writer but is signed by {signer}")]
    WriterMismatch {
        /// The writer the body names.
        writer: String,
        /// The signer.
        signer: String,
    },
    /// An ownership record stored under another daemon's key.
    #[error("the ownership record under key {key:016x} is daemon {record:016x}'s")]
    OriginMismatch {
        /// The key it was read from.
        key: u64,
        /// The origin it names.
        record: u64,
    },
}

/// What the cluster API refuses or fails with.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The cluster name cannot be used in subjects and stream names.
    #[error("cluster name {name:?} is not 1 to 32 characters of [A-Za-z0-9_-]")]
    InvalidClusterName {
        /// The name given.
        name: String,
    },
    /// A field of the configuration has a value the cluster cannot use.
    #[error("cluster configuration field {field}: {reason}")]
    InvalidConfig {
        /// The field.
        field: &'static str,
        /// Why its value is refused.
        reason: String,
    },
    /// The server is not one the cluster can run on.
    #[error(transparent)]
    Version(#[from] crate::version::VersionError),
    /// Connecting to NATS failed.
    #[error("cannot connect to NATS at {servers}: {reason}")]
    Connect {
        /// The servers tried.
        servers: String,
        /// The client's message.
        reason: String,
    },
    /// A JetStream request failed (the engine is unreachable or refused).
    #[error("the engine failed to {action}: {reason}")]
    Engine {
        /// What was being done.
        action: String,
        /// The client's message.
        reason: String,
    },
    /// The PSK or a snapshot's sealing.
    #[error(transparent)]
    Seal(#[from] SealError),
    /// A record in the engine is not believed.
    #[error("the {what} record {key} is refused: {error}")]
    Record {
        /// Owner or node.
        what: &'static str,
        /// Its key.
        key: String,
        /// Why.
        error: RecordError,
    },
    /// A daemon's snapshot object is not what its ownership record says.
    #[error("daemon {origin:016x}: snapshot {object} {problem}")]
    BadSnapshot {
        /// The daemon.
        origin: u64,
        /// The object.
        object: String,
        /// What is wrong with it.
        problem: String,
    },
    /// No daemon with this origin exists in the cluster.
    #[error("no daemon {origin:016x} in the cluster")]
    UnknownDaemon {
        /// The origin asked for.
        origin: u64,
    },
    /// No live node can host the kind.
    #[error("no live node can host kind {kind:?}")]
    NoNodeForKind {
        /// The kind.
        kind: String,
    },
    /// The kind is not provided by this node's bundles.
    #[error("kind {kind:?} is not present on this node")]
    UnknownKind {
        /// The kind.
        kind: String,
    },
    /// The named node is not alive in the cluster.
    #[error("node {node} is not a live member of the cluster")]
    UnknownNode {
        /// The node id given.
        node: String,
    },
    /// The named node is alive but cannot host the daemon's kind (or is
    /// draining).
    #[error("node {node} cannot host kind {kind:?} (it does not provide it, or it is draining)")]
    NodeCannotHost {
        /// The node id given.
        node: String,
        /// The daemon's kind.
        kind: String,
    },
    /// Another node changed the record first; this node lost the daemon.
    #[error("daemon {origin:016x}: this node lost its ownership (fenced): {reason}")]
    Fenced {
        /// The daemon.
        origin: u64,
        /// What showed it.
        reason: String,
    },
    /// The daemon is stopped for good.
    #[error("daemon {origin:016x} is halted: {reason}")]
    Halted {
        /// The daemon.
        origin: u64,
        /// Why.
        reason: String,
    },
    /// The node is draining or shut down.
    #[error("the node is draining")]
    Draining,
    /// Compute refused to host the daemon.
    #[error("daemon {origin:016x}: {reason}")]
    Compute {
        /// The daemon.
        origin: u64,
        /// Compute's message.
        reason: String,
    },
    /// A move did not finish in time.
    #[error("moving daemon {origin:016x} timed out: {reason}")]
    MoveTimedOut {
        /// The daemon.
        origin: u64,
        /// Where it stopped.
        reason: String,
    },
}

impl ClusterError {
    pub(crate) fn engine(action: impl Into<String>, error: impl std::fmt::Display) -> Self {
        Self::Engine {
            action: action.into(),
            reason: error.to_string(),
        }
    }
}
