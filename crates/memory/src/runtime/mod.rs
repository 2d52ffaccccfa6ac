//! The runtime: recover → declare → validate → commit → only then open.
//!
//! [`MemoryRuntime`] runs that ordering over any `Memory` (a `FileMemory`, a
//! shared `VectorMemory`, a raw image) and is the only way to get a store's
//! `VirtualMemory` from it: `open` hands out a memory only for a key that was
//! validated on exactly that ID. The process-wide default runtime (the
//! functions of this module) does the same over the canister's
//! `DefaultMemoryImpl` with declarations from the static registry.
//!
//! A refused boot writes nothing anywhere in the memory: memory that does not
//! hold a MemoryManager is never initialised over, an empty memory gets its
//! MemoryManager header only after validation succeeded, and the ledger is
//! committed only after validation and staging succeeded.
//!
//! Natively the default memory is per thread (ic-stable-structures'
//! `MemoryManager` is neither `Send` nor `Sync`); the registry is per process.
//! Multi-threaded programs use `MemoryRuntime`.
//!
//! Submodules: [`error`] (the runtime's errors), `policy` (the policy stack),
//! `memory_runtime` ([`MemoryRuntime`], recovery and commit), `layout`
//! (booting and planning a declared layout: declarations with their
//! declaring crates, and ranges) and `default` (the process-wide runtime,
//! which boots the registry's layout; its functions are re-exported here).

mod default;
pub mod error;
mod layout;
mod memory_runtime;
mod policy;

pub use default::*;
pub use error::{LedgerStoreError, RuntimeBootstrapError, RuntimeOpenError, RuntimePolicyError};
pub use memory_runtime::{LayoutPlan, LayoutVerdict, MemoryRuntime};

/// The authority name of declarations given to [`MemoryRuntime`] directly.
pub const APPLICATION_AUTHORITY: &str = "application";
