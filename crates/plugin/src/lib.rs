//! `holdfast-plugin`: loads native plugin bundles (Rust, C, C++) through the
//! C ABI of [`holdfast_plugin_abi`] and is to hot-reload them in a running
//! process without crashes, overlapping reloads or lost plugin state
//! (spec/plugin.md).
//!
//! Status: the bundle [`manifest`] (format, every validation rule of spec
//! §4.3, and the filesystem checks) and the lock-free contract registry
//! ([`RuntimeStore`]) are built, and so is the opening half of the native
//! loader ([`NativeLoader::open`]: shadow copy, open, the ABI checks of
//! §3.7). Calling init through a host table, load / reload / unload and state
//! migration are not built yet; README.md's tour says where the crate
//! stands.

pub mod error;
pub mod loader;
pub mod manifest;
pub mod runtime;
pub mod runtime_store;

pub use crossbeam_epoch as epoch;
pub use error::{LoaderError, ManifestError, RegistryError, RuntimeError, ValidationError};
pub use holdfast_plugin_abi as abi;
pub use loader::{BundleLoader, LoadContext, LoadedModule, NativeLoader, NativeModule};
pub use manifest::{ContractRef, ManifestData, ManifestDependency};
pub use runtime::{BundleSummary, CachedContract, ReloadStats, Runtime, RuntimeBuilder, WatchConfig};
pub use runtime_store::RuntimeStore;
