//! `holdfast-plugin`: loads native plugin bundles (Rust, C, C++) through the
//! C ABI of [`holdfast_plugin_abi`] and replaces them in a running process
//! without crashes, overlapping reloads or lost plugin state
//! (spec/plugin.md).
//!
//! - [`manifest`]: a bundle is a directory with `manifest.toml` and one
//!   library; [`ManifestData`] checks every rule of the format.
//! - [`loader`]: [`BundleLoader`] is how a bundle is opened;
//!   [`NativeLoader`] copies the library to a private shadow file, opens it,
//!   checks the ABI version and layout table, and runs the plugin's init.
//! - [`runtime_store`]: [`RuntimeStore`], the contract registry. Lookups
//!   never block and never take a lock.
//! - [`runtime`]: [`Runtime`] loads, reloads (with state migration and a
//!   cascade to dependents) and unloads bundles, one lifecycle operation at
//!   a time; a failed reload rolls back completely and the old version keeps
//!   answering. Replaced images are closed only after every thread that
//!   could still run their code has moved on.
//! - [`daemon`]: daemon kinds provided by bundles (`daemon.<kind>`
//!   contracts): a safe API to make, run, save and restore daemons that
//!   survive hot reloads ([`DaemonInstance`]).
//! - [`signature`]: signed bundles: the `bundle.sig` format, key files,
//!   and the check, run before any loader sees a bundle under
//!   [`SignaturePolicy`](abi::SignaturePolicy) `Warn` or `Require`, that a
//!   bundle is byte for byte what a trusted, unrevoked key signed.
//! - [`error`]: one error enum per boundary.
//!
//! ```no_run
//! use std::path::Path;
//! use holdfast_plugin::{CachedContract, Runtime, abi::{GuestContractId, RuntimeConfig}, epoch};
//!
//! let runtime = Runtime::builder()
//!     .config(RuntimeConfig { hot_reload_enabled: true, ..Default::default() })
//!     .on_reload(|_, phase| eprintln!("{:?} at revision {}", phase.phase_type, phase.revision))
//!     .build()?;
//! runtime.load_bundle(Path::new("plugins/greeter-v1"))?;
//! let handle = runtime.find_guest_contract(GuestContractId::new("demo.Greeter", 1).id(), 0)?;
//!
//! let mut greeter = CachedContract::new(&runtime, handle);
//! let guard = epoch::pin(); // hold it across calls, drop it now and then
//! let interface = greeter.get(&guard)?;
//! // ... call through interface.dispatch.native.functions ...
//! # let _ = interface;
//! drop(guard);
//!
//! runtime.reload_bundle(Path::new("plugins/greeter-v2"))?; // same handle, new code
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Safety model
//!
//! A pointer into a plugin (an interface, a function, static data) is valid
//! while the calling thread holds an epoch guard taken **before** it was
//! resolved: [`CachedContract::get`], [`Runtime::with_guest_contract`] and
//! [`RuntimeStore::resolve_pinned`] tie the reference to the guard; the
//! raw-pointer [`Runtime::resolve_guest_contract`] documents the same rule.
//! Instance data is not synchronized: between a bundle's `Preparing` and its
//! `Reloaded` or `Failed` event the host must not call into its instances.
//! A native plugin runs with all of the host's rights; the checks here
//! catch mistakes, not malice (spec §9).
//!
//! Features: `watch` (default) adds the debounced file watcher
//! ([`RuntimeBuilder::watch`]).

pub mod daemon;
pub mod error;
pub mod loader;
pub mod manifest;
pub mod runtime;
pub mod runtime_store;
mod shadow;
pub mod signature;
#[cfg(feature = "wasm")]
pub mod wasm;

pub use crossbeam_epoch as epoch;
pub use daemon::{DaemonInstance, DaemonKindInfo, OutputLimits};
pub use error::{
    DaemonCallError, LoaderError, ManifestError, RegistryError, RuntimeError, ValidationError, WasmCallError,
    WasmFault,
};
pub use holdfast_plugin_abi as abi;
pub use loader::{BundleLoader, LoadContext, LoadedModule, NativeLoader, NativeModule};
pub use manifest::{ContractRef, ManifestData, ManifestDependency};
pub use runtime::{BundleSummary, CachedContract, ReloadStats, Runtime, RuntimeBuilder, WatchConfig};
pub use runtime_store::RuntimeStore;
#[cfg(feature = "wasm")]
pub use wasm::{WasmCaller, WasmConfig, WasmLoader};
