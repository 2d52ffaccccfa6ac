//! The CLI's one error type: every way a command can fail, each saying what
//! was found and what to do, and the exit code it maps to (1 for a refused
//! layout or bundle signature, 2 for an image, key or file that cannot be
//! read).

use std::convert::Infallible;
use std::io;
use std::path::PathBuf;

use holdfast_memory::{
    AdoptionError, CommitRecoveryError, LedgerStoreError, MemoryImageError, RuntimeBootstrapError,
};

/// Exit code of a successful command or an accepted layout.
pub const EXIT_OK: u8 = 0;
/// Exit code of a refused layout (drift).
pub const EXIT_REFUSED: u8 = 1;
/// Exit code of an image or input that cannot be read.
pub const EXIT_UNREADABLE: u8 = 2;

/// Why a command could not produce its report.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CliError {
    /// The file cannot be opened.
    #[error("cannot open {}: {source}. Check the path and its permissions.", path.display())]
    Open {
        /// The path.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// A read failed midway.
    #[error("cannot read {len} bytes at offset {offset} of {}: {source}", path.display())]
    Read {
        /// The path.
        path: PathBuf,
        /// Where.
        offset: u64,
        /// How much.
        len: usize,
        /// Why.
        source: io::Error,
    },
    /// Something tried to write to an image opened for reading (a bug).
    #[error(
        "internal error: a write at offset {offset} was attempted on a read-only image; nothing was written"
    )]
    WriteAttempted {
        /// Where.
        offset: u64,
    },
    /// The image is smaller than one page.
    #[error(
        "{} is {bytes} bytes, smaller than one 64 KiB stable-memory page: it is not a stable-memory image. \
         Download the image again (for example with `dfx canister snapshot download`)."
        , path.display()
    )]
    TooSmall {
        /// The path.
        path: PathBuf,
        /// Its size.
        bytes: u64,
    },
    /// The image is not a usable MemoryManager image.
    #[error("{} is not a readable MemoryManager image: {error}", path.display())]
    NotMemoryManager {
        /// The path.
        path: PathBuf,
        /// What was found.
        error: MemoryImageError,
    },
    /// The MemoryManager header was only partly written.
    #[error(
        "{} holds a MemoryManager header that was only partly written (its first initialisation was \
         interrupted): nothing has been stored in it yet", path.display()
    )]
    InterruptedInitialization {
        /// The path.
        path: PathBuf,
    },
    /// No holdfast ledger at ID 0.
    #[error(
        "{} holds a MemoryManager but no allocation ledger at ID 0: it was never booted with \
         holdfast-memory, so it has no layout history to show or check against. Boot it once with \
         holdfast-memory to start its history.", path.display()
    )]
    NoLedger {
        /// The path.
        path: PathBuf,
    },
    /// ID 0 holds something that is not a ledger, or the ledger does not recover.
    #[error(
        "the allocation ledger of {} cannot be recovered: {reason}. holdfast never repairs a ledger: \
         restore the image from a backup (`holdfast inspect` shows both commit slots).", path.display()
    )]
    Ledger {
        /// The path.
        path: PathBuf,
        /// What was found.
        reason: String,
    },
    /// ID 0 holds a ledger written by ic-memory 0.5 that cannot be adopted.
    #[error(
        "{} holds a ledger written by ic-memory 0.5 that holdfast-memory cannot adopt: {error}. Nothing was \
         changed; a boot under holdfast-memory would be refused the same way.", path.display()
    )]
    IcMemory {
        /// The path.
        path: PathBuf,
        /// Why it cannot be adopted.
        error: AdoptionError,
    },
    /// The declarations file cannot be read or parsed.
    #[error(
        "cannot use the declarations file {}: {reason}. Produce it from the build you will deploy with \
         holdfast_memory::write_static_declarations_json (see docs/CLI.md).", path.display()
    )]
    Declarations {
        /// The path.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// An output file (`inspect --html`) cannot be written.
    #[error("cannot write {}: {reason}", path.display())]
    Output {
        /// The path.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The declarations or ranges of a declarations file conflict among
    /// themselves: every boot of that build would be refused before reading
    /// memory.
    #[error(
        "every boot of the build in {} would be refused before it reads memory: {reason}", path.display()
    )]
    LayoutRefused {
        /// The declarations file.
        path: PathBuf,
        /// The boot's refusal.
        reason: String,
    },
    /// The demo failed.
    #[error("{0}")]
    Demo(String),
    /// A client command could not reach its node or read its answer.
    #[error("{0}")]
    Client(String),
    /// The node refused a client command (its `code: message`).
    #[error("the node refused: {0}")]
    Refused(String),
    /// The node could not be opened or stopped cleanly.
    #[error(transparent)]
    Node(#[from] holdfast_host::NodeError),
    /// `bundle verify`: the bundle would be refused by a runtime that
    /// requires signatures and trusts the given key.
    #[error("bundle {} refused: {error}", dir.display())]
    SignatureRefused {
        /// The bundle directory.
        dir: PathBuf,
        /// Why.
        error: holdfast_plugin::signature::SignatureError,
    },
    /// A key file cannot be read, is not a key of the expected kind, or
    /// cannot be created.
    #[error("{0}.{hint}", hint = crate::bundle::key_hint(.0))]
    KeyFile(holdfast_plugin::signature::KeyError),
    /// A bundle's manifest or files cannot be read (or, for `sign`, the
    /// manifest is invalid, so no runtime would load the bundle).
    #[error("cannot use the bundle {}: {reason}", dir.display())]
    BundleUnreadable {
        /// The bundle directory.
        dir: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

impl CliError {
    /// The process exit code for this error: [`EXIT_UNREADABLE`] for
    /// input that cannot be read (a refused layout is a report, not an
    /// error), [`EXIT_REFUSED`] for a node that refused or cannot be
    /// reached, and the node's own code when it cannot open its data.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Refused(_)
            | Self::Client(_)
            | Self::LayoutRefused { .. }
            | Self::SignatureRefused { .. } => EXIT_REFUSED,
            Self::Node(error) => u8::try_from(error.exit_code()).unwrap_or(EXIT_UNREADABLE),
            _ => EXIT_UNREADABLE,
        }
    }

    /// Maps a recovery failure of the runtime to the message for `path`.
    pub(crate) fn from_recovery(path: PathBuf, error: RuntimeBootstrapError<Infallible>) -> Self {
        match error {
            RuntimeBootstrapError::StableCellLedger(LedgerStoreError::Image(error)) => {
                Self::NotMemoryManager { path, error }
            }
            RuntimeBootstrapError::StableCellLedger(LedgerStoreError::LedgerMissing { .. }) => {
                Self::NoLedger { path }
            }
            RuntimeBootstrapError::StableCellLedger(LedgerStoreError::IcMemory(error)) => {
                Self::IcMemory { path, error }
            }
            other => Self::Ledger {
                path,
                reason: recovery_reason(&other),
            },
        }
    }
}

fn recovery_reason(error: &RuntimeBootstrapError<Infallible>) -> String {
    match error {
        RuntimeBootstrapError::StableCellLedger(LedgerStoreError::Store(err))
        | RuntimeBootstrapError::LedgerCommit(holdfast_memory::LedgerCommitError::Recovery(err)) => {
            commit_recovery_reason(err)
        }
        other => other.to_string(),
    }
}

/// What a failed ledger recovery found, in words for an image's owner.
pub(crate) fn commit_recovery_reason(error: &CommitRecoveryError) -> String {
    match error {
        CommitRecoveryError::ForeignStore { first_bytes } => format!(
            "ID 0 holds bytes of another store (starting {first_bytes:02x?}), not a ledger; \
             some store was opened on the ledger's slot"
        ),
        other => other.to_string(),
    }
}
