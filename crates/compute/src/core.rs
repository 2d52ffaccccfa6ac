//! The error a daemon returns from its own code ([`DaemonError`], re-exported
//! at the root as `CoreDaemonError`), which the runtime also uses for "not
//! hosted here" and "no longer retained". It is the one error type shared by
//! the daemon trait and the runtime; it never names runtime lifecycle states,
//! which belong to [`crate::compute::DaemonError`].

/// What went wrong inside a daemon, or with one origin on this runtime.
///
/// `ProcessFailed`, `SnapshotFailed` and `RestoreFailed` are returned by
/// daemon code and passed through unchanged; the runtime returns `NotFound`
/// and `Stale` itself, and uses `ProcessFailed` for an origin collision
/// (`daemon 0x… already registered`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DaemonError {
    /// `process` failed, or a spawn collided with an origin already in use.
    #[error("process failed: {0}")]
    ProcessFailed(String),
    /// A snapshot could not be produced.
    #[error("snapshot failed: {0}")]
    SnapshotFailed(String),
    /// Restoring state from a snapshot failed.
    #[error("restore failed: {0}")]
    RestoreFailed(String),
    /// The origin hash is not hosted on this runtime (or its instance stopped).
    #[error("daemon {0:#018x} not found")]
    NotFound(u64),
    /// The requested output is no longer retained; the value is the oldest
    /// sequence still available.
    #[error("requested outputs are no longer retained; oldest available is {0}")]
    Stale(u64),
}
