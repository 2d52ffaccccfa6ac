//! The error a daemon returns from its own code ([`DaemonError`], re-exported
//! at the root as `CoreDaemonError`), which the runtime also uses for "not
//! hosted here", "no longer retained" and "chain exhausted". It is the one
//! error type shared by the daemon trait and the runtime; it never names
//! runtime lifecycle states, which belong to [`crate::compute::DaemonError`].

use crate::causal::MAX_SEQUENCE;

/// What went wrong inside a daemon, or with one origin on this runtime.
///
/// `ProcessFailed`, `SnapshotFailed` and `RestoreFailed` are returned by
/// daemon code and passed through unchanged; the runtime returns `NotFound`,
/// `Stale` and `SequenceExhausted` itself, and uses `ProcessFailed` for an
/// origin collision (`daemon 0x… already registered`).
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
    /// The outputs of one delivery would take the daemon's chain past
    /// [`MAX_SEQUENCE`]. The runtime learns how many outputs an event has
    /// only when `process` returns, so `process` has run; its outputs were
    /// discarded, and the chain, horizon, output log and `events_processed`
    /// are unchanged (the refusal counts in `errors`). A delivery without
    /// outputs still succeeds, because it does not extend the chain.
    #[error(
        "daemon {origin_hash:#018x} cannot emit {outputs} outputs after sequence {head}: \
         its chain would pass the sequence ceiling {MAX_SEQUENCE}"
    )]
    SequenceExhausted {
        /// The daemon's origin hash.
        origin_hash: u64,
        /// The sequence of the chain's head, which stays the head.
        head: u64,
        /// How many outputs `process` returned.
        outputs: u64,
    },
}
