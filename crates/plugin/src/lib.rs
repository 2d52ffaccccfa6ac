//! `holdfast-plugin`: loads native plugin bundles (Rust, C, C++) through the
//! C ABI of [`holdfast_plugin_abi`] and is to hot-reload them in a running
//! process without crashes, overlapping reloads or lost plugin state
//! (spec/plugin.md).
//!
//! Status: the bundle [`manifest`] (format, every validation rule of spec
//! §4.3, and the filesystem checks) is built. The loader, the contract
//! registry, load / reload / unload and state migration are not built yet;
//! README.md's tour says where the crate stands.

pub mod error;
pub mod manifest;

pub use error::ManifestError;
pub use holdfast_plugin_abi as abi;
pub use manifest::{ContractRef, ManifestData, ManifestDependency};
