//! The errors of this crate, one enum per boundary. So far: the contract
//! registry ([`RegistryError`]), reading a bundle's manifest
//! ([`ManifestError`]) and opening its library ([`LoaderError`]).

use std::path::PathBuf;

use holdfast_plugin_abi::{BundleId, GuestContractId};

/// Why a registry lookup or change was refused.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    /// No provider of the contract with at least this minor version.
    #[error("no provider of contract {contract_id:#018x} with minor version >= {min_minor}")]
    NotFound {
        /// The contract.
        contract_id: u64,
        /// The minor version asked for.
        min_minor: u32,
    },
    /// The handle's provider was removed (its slot's generation moved on).
    #[error("stale handle: slot {index} generation {generation} was removed")]
    StaleHandle {
        /// The slot.
        index: u32,
        /// The handle's generation.
        generation: u32,
    },
    /// The null handle, or a slot that does not exist.
    #[error("invalid handle: slot {index} does not exist")]
    InvalidHandle {
        /// The slot.
        index: u32,
    },
    /// The slot holds no provider.
    #[error("slot {index} holds no provider")]
    SlotVacant {
        /// The slot.
        index: u32,
    },
    /// A swap offered an interface of another contract.
    #[error("slot {index} provides {expected}; the new interface is for {found}")]
    ContractIdMismatch {
        /// The slot.
        index: u32,
        /// The slot's contract.
        expected: GuestContractId,
        /// The new interface's contract.
        found: GuestContractId,
    },
    /// The bundle already provides this contract.
    #[error("bundle {bundle_id:#018x} already provides contract {contract_id:#018x}")]
    DuplicateContract {
        /// The contract.
        contract_id: u64,
        /// The bundle.
        bundle_id: u64,
    },
    /// The descriptor's strings are absent or not UTF-8.
    #[error("invalid descriptor: {reason}")]
    InvalidDescriptor {
        /// What is wrong.
        reason: String,
    },
    /// Every slot index is in use or retired.
    #[error("the registry has no free slot left")]
    CapacityExceeded,
}

/// Why a bundle's manifest was refused (spec §4.3; the rule each variant
/// belongs to is given). Every variant names the offending value.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    /// Rule 1: not TOML, a value of the wrong type, or an unknown key.
    #[error("manifest syntax: {message}")]
    Syntax {
        /// The parser's message.
        message: String,
    },
    /// Rule 2: a required key is missing.
    #[error("manifest is missing the required field `{field}`")]
    MissingField {
        /// The key.
        field: &'static str,
    },
    /// Rule 3: a bundle name is not 1–128 bytes of `[A-Za-z0-9._-]` starting
    /// with a letter or digit.
    #[error("invalid bundle name {name:?}")]
    InvalidName {
        /// The name.
        name: String,
    },
    /// Rule 4: a loader name is not 1–32 bytes of `[a-z0-9-]`.
    #[error("invalid loader name {loader:?}")]
    InvalidLoader {
        /// The loader name.
        loader: String,
    },
    /// Rule 5: `id` is not `0x` and 16 hex digits.
    #[error("invalid bundle id {value:?}: expected 0x and 16 hex digits")]
    InvalidId {
        /// The value.
        value: String,
    },
    /// Rule 5: `id` is not the hash of `name` (a tampered or stale manifest).
    #[error("bundle id {found} does not match name {name:?}, whose id is {expected}")]
    IdMismatch {
        /// The name.
        name: String,
        /// `BundleId::new(name)`.
        expected: BundleId,
        /// The manifest's id.
        found: BundleId,
    },
    /// Rule 6: a version is not `major.minor[.patch]` (a `min_version` is
    /// `major.minor`).
    #[error("invalid {field} {value:?}")]
    InvalidVersion {
        /// `version` or `dependency.min_version`.
        field: String,
        /// The value.
        value: String,
    },
    /// Rule 7: a library path is empty, absolute or leaves the bundle.
    #[error("invalid library path {value:?}: {reason}")]
    InvalidFile {
        /// The path.
        value: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Rule 7: the file table has no entry for this platform.
    #[error("the manifest names no library for {os}/{arch}")]
    NoFileForPlatform {
        /// `std::env::consts::OS`.
        os: &'static str,
        /// `std::env::consts::ARCH`.
        arch: &'static str,
    },
    /// Rule 8: a contract reference is not `name@major`.
    #[error("invalid contract reference {value:?}: expected name@major")]
    InvalidContractRef {
        /// The reference.
        value: String,
    },
    /// Rule 9: `provides` names a contract twice (or more than 256).
    #[error("`provides` lists {contract} more than once")]
    DuplicateProvides {
        /// The contract.
        contract: String,
    },
    /// Rule 10: a provided contract has no function count.
    #[error("`function_count` has no entry for provided contract {contract}")]
    FunctionCountMissing {
        /// The contract.
        contract: String,
    },
    /// Rule 10: a function count for a contract that is not provided.
    #[error("`function_count` has an entry for {contract}, which is not provided")]
    FunctionCountUnexpected {
        /// The contract.
        contract: String,
    },
    /// Rule 10: more than 65 536 functions.
    #[error("`function_count` of {contract} is {count}; at most 65536")]
    FunctionCountTooLarge {
        /// The contract.
        contract: String,
        /// The count (saturated at `u32::MAX`).
        count: u32,
    },
    /// Rule 11: a dependency's `min_version` has another major than its
    /// contract.
    #[error("dependency on {contract} has min_version {min_version} of another major")]
    DependencyVersionMismatch {
        /// The contract.
        contract: String,
        /// The `min_version`.
        min_version: String,
    },
    /// Rule 11: a bundle depends on a contract it provides.
    #[error("the bundle depends on {contract}, which it provides itself")]
    SelfDependency {
        /// The contract.
        contract: String,
    },
    /// Rule 12: a bundle dependency is invalid, the bundle itself, or
    /// repeated.
    #[error("invalid bundle dependency {name:?}")]
    InvalidBundleDependency {
        /// The dependency's name.
        name: String,
    },
    /// Rule 13: the directory has no `manifest.toml`.
    #[error("no manifest at {path}")]
    NotFound {
        /// The manifest path.
        path: PathBuf,
    },
    /// Rule 13: the manifest could not be read.
    #[error("reading {path}: {message}")]
    Io {
        /// The manifest path.
        path: PathBuf,
        /// The operating system's message.
        message: String,
    },
    /// Rule 13: the library is missing or not a regular file.
    #[error("the bundle's library {path} is missing or not a regular file")]
    LibraryMissing {
        /// The library path.
        path: PathBuf,
    },
    /// Rule 13: the library resolves (through symlinks) outside the bundle.
    #[error("the bundle's library {path} lies outside the bundle directory")]
    LibraryOutsideBundle {
        /// The library path.
        path: PathBuf,
    },
    /// Rule 13: the bundle path is not UTF-8.
    #[error("the bundle path {path} is not UTF-8")]
    NonUtf8Path {
        /// The bundle path.
        path: PathBuf,
    },
}

/// Why a bundle's library could not be opened or failed the ABI checks
/// (spec §3.7, §6.3). Bundles are named so that a person can find them.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoaderError {
    /// The shadow copy of the library could not be made.
    #[error("copying {path} to the shadow directory failed: {message}")]
    ShadowCopy {
        /// The library.
        path: PathBuf,
        /// The operating system's message.
        message: String,
    },
    /// The dynamic loader refused the library.
    #[error("opening {path} failed: {message}")]
    Open {
        /// The library (or its shadow copy).
        path: PathBuf,
        /// The dynamic loader's message.
        message: String,
    },
    /// A required symbol is not exported.
    #[error("bundle {bundle} does not export {symbol}")]
    MissingSymbol {
        /// The bundle.
        bundle: String,
        /// The symbol.
        symbol: &'static str,
    },
    /// The plugin was built for another ABI version.
    #[error("bundle {bundle} was built for ABI version {found}; this host speaks {expected}")]
    AbiVersionMismatch {
        /// The bundle.
        bundle: String,
        /// `HOLDFAST_ABI_VERSION`.
        expected: u32,
        /// The plugin's version.
        found: u32,
    },
    /// `holdfast_abi_layout` returned null (or a table without entries).
    #[error("bundle {bundle} returned no layout table")]
    NullLayout {
        /// The bundle.
        bundle: String,
    },
    /// The layout table has the wrong number of entries.
    #[error("bundle {bundle} lists {found_entries} layout entries; expected {expected_entries}")]
    LayoutTableMismatch {
        /// The bundle.
        bundle: String,
        /// 16.
        expected_entries: u32,
        /// The plugin's count.
        found_entries: u32,
    },
    /// A shared type has another size or alignment in the plugin.
    #[error(
        "bundle {bundle} was compiled with {type_name} of size {found_size} and alignment {found_align}; \
         this host has {expected_size} and {expected_align}"
    )]
    LayoutMismatch {
        /// The bundle.
        bundle: String,
        /// The type (from `LAYOUT_TYPE_NAMES`).
        type_name: &'static str,
        /// The host's size.
        expected_size: u32,
        /// The host's alignment.
        expected_align: u32,
        /// The plugin's size.
        found_size: u32,
        /// The plugin's alignment.
        found_align: u32,
    },
    /// The plugin's init returned an error.
    #[error("init of bundle {bundle} failed with code {code}: {message}")]
    InitFailed {
        /// The bundle.
        bundle: String,
        /// The raw code.
        code: u32,
        /// The plugin's message (copied, at most 4 KiB).
        message: String,
    },
    /// A loader returned success without adopting a module.
    #[error("the loader of bundle {bundle} adopted no module")]
    NothingAdopted {
        /// The bundle.
        bundle: String,
    },
    /// A custom loader's own failure.
    #[error("loading bundle {bundle} failed: {message}")]
    Other {
        /// The bundle.
        bundle: String,
        /// What went wrong.
        message: String,
    },
}
