//! The errors of this crate, one enum per boundary: the contract registry
//! ([`RegistryError`]), reading a bundle's manifest ([`ManifestError`]),
//! opening its library ([`LoaderError`]), checking what its init registered
//! ([`ValidationError`]), the runtime's lifecycle and instance
//! operations ([`RuntimeError`]), which wraps the others, and calls into
//! daemon kinds ([`DaemonCallError`]).

use std::path::PathBuf;

use holdfast_plugin_abi::{BundleId, GuestContractId, InstanceHandle, Version};

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
    /// The epoch guard passed in is not pinned on crossbeam-epoch's default
    /// collector, the one the registry defers its frees on (or is
    /// `unprotected`), so it would not keep the resolved interface alive.
    #[error(
        "the epoch guard is not pinned on the default collector (`holdfast_plugin::epoch::pin()`), which the runtime defers on"
    )]
    ForeignGuard,
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
    /// The private shadow directory the loader created is not what it asked
    /// for (another owner, group or other permissions, or not a directory):
    /// nothing is copied into it.
    #[error("the shadow directory {path} is not private to this user: {reason}")]
    ShadowDirNotPrivate {
        /// The directory.
        path: PathBuf,
        /// What differs.
        reason: String,
    },
    /// The library's bytes changed after the runtime verified the bundle's
    /// signature and before the loader opened or compiled them: nothing of
    /// it was opened.
    #[error("{path} changed after its signature was verified; it was not opened")]
    ChangedAfterVerification {
        /// The bundle's library.
        path: PathBuf,
    },
    /// The dynamic loader refused the library.
    #[error("opening {path} failed: {message}")]
    Open {
        /// The bundle's library (the message names the shadow copy opened).
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
    /// A pointer the plugin returned is not aligned for its type.
    #[error("bundle {bundle} returned a misaligned {what} pointer")]
    MisalignedPointer {
        /// The bundle.
        bundle: String,
        /// Which pointer (`"layout table"`, `"layout entries"`).
        what: &'static str,
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
    /// The file the manifest names is of the other loader's kind (a
    /// WebAssembly module for `loader = "native"`, anything else for
    /// `loader = "wasm"`); it was not opened, compiled or run.
    #[error("{path} is {found}, which the {loader:?} loader does not open")]
    WrongLoader {
        /// The library file.
        path: PathBuf,
        /// The manifest's loader.
        loader: &'static str,
        /// What the file is (`"a WebAssembly module"`, `"not a WebAssembly module"`).
        found: &'static str,
    },
    /// wasmtime refused the module (invalid bytes, a failed validation or
    /// compilation).
    #[error("bundle {bundle}: the WebAssembly module is invalid: {message}")]
    InvalidWasm {
        /// The bundle.
        bundle: String,
        /// wasmtime's message.
        message: String,
    },
    /// The module file is larger than the loader reads (nothing of it was
    /// compiled).
    #[error("{path} is larger than {max} bytes, the most a WebAssembly module may be")]
    ModuleTooLarge {
        /// The module file.
        path: PathBuf,
        /// `wasm::MAX_MODULE_BYTES`.
        max: u64,
    },
    /// The module imports something the sandbox does not provide (only the
    /// `holdfast` functions of the guest ABI exist).
    #[error("bundle {bundle}: the module imports {module}::{name}, which the sandbox does not provide")]
    ForbiddenImport {
        /// The bundle.
        bundle: String,
        /// The import's module name.
        module: String,
        /// The import's field name.
        name: String,
    },
    /// An export the guest ABI requires is missing or has another type.
    #[error("bundle {bundle}: the module does not export {name} as {expected}")]
    MissingExport {
        /// The bundle.
        bundle: String,
        /// The export.
        name: &'static str,
        /// What the guest ABI requires (`"func(i32) -> i32"`, `"a memory"`).
        expected: &'static str,
    },
    /// The module's memory (or table) starts larger than the sandbox allows.
    #[error(
        "bundle {bundle}: the module declares {declared_bytes} bytes of memory at start; the limit is {limit_bytes}"
    )]
    WasmMemoryTooLarge {
        /// The bundle.
        bundle: String,
        /// The declared minimum, in bytes.
        declared_bytes: u64,
        /// `WasmConfig::max_memory_bytes`.
        limit_bytes: u64,
    },
    /// `hf_abi_version` returned another guest ABI version.
    #[error("bundle {bundle} speaks WASM guest ABI version {found}; this host speaks {expected}")]
    WasmAbiVersionMismatch {
        /// The bundle.
        bundle: String,
        /// `WASM_GUEST_ABI_VERSION`.
        expected: i32,
        /// The module's.
        found: i32,
    },
    /// A contract the module declared has another function count than the
    /// manifest gives it.
    #[error(
        "bundle {bundle}: the module declares {declared} functions for {contract}; the manifest says {manifest}"
    )]
    WasmFunctionCount {
        /// The bundle.
        bundle: String,
        /// The contract, `name@major`.
        contract: String,
        /// The manifest's count.
        manifest: u32,
        /// The module's.
        declared: u32,
    },
    /// The module faulted (trapped, ran out of fuel or memory, misused an
    /// import) while being instantiated or initialized: nothing of it was
    /// registered.
    #[error("bundle {bundle}: {stage} failed: {fault}")]
    WasmFault {
        /// The bundle.
        bundle: String,
        /// `"instantiate"`, `"hf_abi_version"` or `"hf_init"`.
        stage: &'static str,
        /// What went wrong.
        fault: WasmFault,
    },
}

/// What went wrong inside one call into a WebAssembly module. The sandbox
/// ends the call and reports it; the host, the module's other instances and
/// every other plugin keep running.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WasmFault {
    /// The call used up its fuel (an endless or too long computation).
    #[error("the call ran out of fuel (budget {budget})")]
    OutOfFuel {
        /// `WasmConfig::fuel_per_call`.
        budget: u64,
    },
    /// The module tried to grow its memory (or a table) past the limit.
    #[error("the module asked for {requested_bytes} bytes of memory; the limit is {limit_bytes}")]
    MemoryLimit {
        /// The size it asked for.
        requested_bytes: u64,
        /// `WasmConfig::max_memory_bytes`.
        limit_bytes: u64,
    },
    /// A load or store outside the module's memory.
    #[error("out-of-bounds memory access")]
    MemoryOutOfBounds,
    /// The module executed `unreachable` (a Rust guest's panic).
    #[error("the module executed `unreachable`")]
    Unreachable,
    /// The module's call stack overflowed.
    #[error("the module's call stack overflowed")]
    StackOverflow,
    /// Any other trap (division by zero, a bad indirect call, ...).
    #[error("the module trapped: {reason}")]
    Trap {
        /// wasmtime's description.
        reason: String,
    },
    /// The module passed a host function a range outside its memory, or
    /// called one where the guest ABI does not allow it.
    #[error("the module misused the host function {import}: {reason}")]
    ImportMisuse {
        /// The host function.
        import: &'static str,
        /// What was wrong.
        reason: String,
    },
    /// The module's reply (output, state or message) is longer than the
    /// sandbox accepts.
    #[error("the module's reply is {len} bytes; the limit is {max}")]
    ReplyTooLarge {
        /// Its length.
        len: u64,
        /// `WasmConfig::max_reply_bytes`.
        max: u64,
    },
    /// The module answered with an error status.
    #[error("the module returned code {code}: {message}")]
    Guest {
        /// The status it returned.
        code: u32,
        /// Its reply, lossily decoded (at most 4 KiB).
        message: String,
    },
    /// The module broke the guest ABI (an allocator that returned a range
    /// outside its memory, an instance id of 0, ...).
    #[error("the module broke the guest ABI: {reason}")]
    Protocol {
        /// What it did.
        reason: String,
    },
}

/// Why [`Runtime::call_wasm`](crate::Runtime::call_wasm) failed.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WasmCallError {
    /// The instance is not tracked (destroyed, or its bundle unloaded).
    #[error("instance {instance:?} does not exist")]
    InstanceGone {
        /// The instance.
        instance: InstanceHandle,
    },
    /// The instance's contract is not served by the WASM loader.
    #[error("instance {instance:?} is not an instance of a WebAssembly contract")]
    NotWasm {
        /// The instance.
        instance: InstanceHandle,
    },
    /// The instance's bundle is being reloaded or unloaded.
    #[error("bundle {bundle} is being reloaded or unloaded")]
    BundleBusy {
        /// The bundle.
        bundle: String,
    },
    /// The function index is past the contract's declared function count.
    #[error("contract {contract} has {count} functions; there is no function {function}")]
    NoSuchFunction {
        /// The contract, `name@major`.
        contract: String,
        /// The index asked for.
        function: u32,
        /// The declared count.
        count: u32,
    },
    /// The call faulted inside the module.
    #[error("calling function {function} of {contract}: {fault}")]
    Fault {
        /// The contract, `name@major`.
        contract: String,
        /// The function index.
        function: u32,
        /// What went wrong.
        fault: WasmFault,
    },
}

/// Why what a bundle's init registered was refused (spec §6.3, §6.4). The
/// load or reload fails with the first one, even if init returned success.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValidationError {
    /// Init registered a contract the manifest does not list in `provides`.
    #[error("contract {contract} was registered but is not in the manifest's `provides`")]
    ContractNotInManifest {
        /// The contract, `name@major`.
        contract: String,
    },
    /// The manifest lists a contract init did not register (strict mode).
    #[error("contract {contract} is in the manifest's `provides` but init did not register it")]
    ContractNotRegistered {
        /// The contract, `name@major`.
        contract: String,
    },
    /// The registered function table has another length than the manifest says.
    #[error("contract {contract}: the manifest says {manifest} functions, init registered {registered}")]
    FunctionCountMismatch {
        /// The contract, `name@major`.
        contract: String,
        /// The manifest's `function_count`.
        manifest: u32,
        /// The registered table's length.
        registered: u32,
    },
    /// The interface's `contract_id` is not the hash of its name and major.
    #[error("contract {contract}: contract_id is {found}, but its name and major hash to {expected}")]
    ContractIdMismatch {
        /// The contract, `name@major`.
        contract: String,
        /// `GuestContractId::new(name, major)`.
        expected: GuestContractId,
        /// What the interface carried.
        found: GuestContractId,
    },
    /// The ID is already held by a contract of another name.
    #[error("contract ID {id} is held by {existing} and cannot also name {new}")]
    ContractIdCollision {
        /// The ID.
        id: GuestContractId,
        /// The registered contract's name.
        existing: String,
        /// The new contract's name.
        new: String,
    },
    /// Init registered the same contract twice.
    #[error("contract {contract} was registered twice")]
    DuplicateContract {
        /// The contract, `name@major`.
        contract: String,
    },
    /// The interface uses a dispatch type this runtime cannot call.
    #[error("contract {contract} uses dispatch type {dispatch_type}, which this runtime does not support")]
    UnsupportedDispatch {
        /// The contract, `name@major`.
        contract: String,
        /// The raw dispatch type.
        dispatch_type: u32,
    },
    /// An entry of the function table is null.
    #[error("contract {contract}: function {index} is null")]
    NullFunction {
        /// The contract, `name@major`.
        contract: String,
        /// The entry.
        index: u32,
    },
    /// The descriptor or interface is malformed (null, absent, not UTF-8,
    /// too long, a null constructor, an oversized table).
    #[error("invalid registration: {reason}")]
    InvalidDescriptor {
        /// What is wrong.
        reason: String,
    },
    /// `state` points to hooks of which one is null.
    #[error("contract {contract}: state hooks must have both save_state and restore_state")]
    InvalidStateHooks {
        /// The contract, `name@major`.
        contract: String,
    },
}

/// Why a runtime operation was refused or failed. Every refusal leaves the
/// runtime as it was: the registry, the loaded bundles and their instances.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// Reloading needs `RuntimeConfig::hot_reload_enabled`.
    #[error("hot reload is disabled in this runtime's configuration")]
    HotReloadDisabled,
    /// A lifecycle call from inside a lifecycle operation of the same
    /// runtime on the same thread (a callback, init, a state hook).
    #[error("{operation} was called from inside a lifecycle operation of the same runtime")]
    ReentrantLifecycle {
        /// `"load"`, `"reload"` or `"unload"`.
        operation: &'static str,
    },
    /// No loaded bundle has this ID.
    #[error("bundle {bundle} is not loaded")]
    BundleNotLoaded {
        /// The bundle (its name, or its ID in hex when only the ID is known).
        bundle: String,
    },
    /// The bundle is already loaded; reload it instead.
    #[error("bundle {bundle} is already loaded")]
    BundleAlreadyLoaded {
        /// The bundle.
        bundle: String,
    },
    /// Another loaded bundle's name hashes to the same ID.
    #[error("bundle {new} has the same ID as the loaded bundle {existing}")]
    BundleIdCollision {
        /// The loaded bundle.
        existing: String,
        /// The refused bundle.
        new: String,
    },
    /// Other loaded bundles need this one.
    #[error("bundle {bundle} is needed by {dependents:?}")]
    BundleInUse {
        /// The bundle.
        bundle: String,
        /// The bundles that need it, by name.
        dependents: Vec<String>,
    },
    /// The bundle is being reloaded or unloaded.
    #[error("bundle {bundle} is being reloaded or unloaded")]
    BundleBusy {
        /// The bundle.
        bundle: String,
    },
    /// A bundle or contract the manifest needs is not loaded.
    #[error("bundle {bundle} needs {dependency}, which is not loaded")]
    MissingDependency {
        /// The bundle.
        bundle: String,
        /// The bundle name or contract (`name@major.minor`) missing.
        dependency: String,
    },
    /// The plugin directories' bundles depend on each other in a cycle.
    #[error("the bundles {bundles:?} depend on each other in a cycle")]
    DependencyCycle {
        /// The bundles of the cycle, by name.
        bundles: Vec<String>,
    },
    /// The reload would remove or downgrade a contract other bundles need.
    #[error("reloading {bundle} would leave {dependents:?} without {contract}")]
    DependencyWouldBreak {
        /// The bundle being reloaded.
        bundle: String,
        /// The contract, `name@major.minor`.
        contract: String,
        /// The bundles that need it.
        dependents: Vec<String>,
    },
    /// No registered loader has the manifest's `loader` name.
    #[error("bundle {bundle} needs loader {loader:?}, which is not registered")]
    NoLoader {
        /// The bundle.
        bundle: String,
        /// The manifest's `loader`.
        loader: String,
    },
    /// Two loaders were registered under one name.
    #[error("two loaders are named {loader:?}")]
    DuplicateLoader {
        /// The name.
        loader: String,
    },
    /// The path is a file, but not the library the manifest names.
    #[error("{path} is not the bundle's library {expected}")]
    LibraryNotInManifest {
        /// The file given.
        path: PathBuf,
        /// The manifest's library for this platform.
        expected: PathBuf,
    },
    /// The bundle's manifest was refused.
    #[error("the manifest of {path} was refused: {error}")]
    Manifest {
        /// The bundle path given.
        path: PathBuf,
        /// Why.
        #[source]
        error: ManifestError,
    },
    /// The bundle's signature was refused under `SignaturePolicy::Require`
    /// (docs/PLUGINS.md, "Signed bundles"). Checked before the loader runs:
    /// nothing of the bundle was opened, compiled or run, and nothing
    /// changed.
    #[error("the signature of {path} was refused: {error}")]
    Signature {
        /// The bundle path given.
        path: PathBuf,
        /// Why.
        #[source]
        error: crate::signature::SignatureError,
    },
    /// The library could not be opened, failed the ABI checks or its init.
    #[error(transparent)]
    Loader(#[from] LoaderError),
    /// What init registered was refused.
    #[error("bundle {bundle}: {error}")]
    Validation {
        /// The bundle.
        bundle: String,
        /// Why.
        #[source]
        error: ValidationError,
    },
    /// A registry lookup failed.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// A state hook or the new constructor failed while migrating an instance.
    #[error(
        "bundle {bundle}, contract {contract}: migrating instance {instance:?} failed at {stage} \
         with code {code}: {message}"
    )]
    StateMigration {
        /// The bundle.
        bundle: String,
        /// The contract, `name@major`.
        contract: String,
        /// The instance being migrated.
        instance: InstanceHandle,
        /// `"save"`, `"create"` or `"restore"`.
        stage: &'static str,
        /// The raw error code.
        code: u32,
        /// The plugin's or the runtime's message.
        message: String,
    },
    /// The instance handle is stale, null or unknown.
    #[error("instance {instance:?} does not exist (destroyed, or dropped by a reload)")]
    InstanceGone {
        /// The handle.
        instance: InstanceHandle,
    },
    /// `create_instance` returned an instance of another contract.
    #[error("creating an instance of {contract} failed")]
    InstanceCreateFailed {
        /// The contract, `name@major` (or its ID when the name is unknown).
        contract: String,
    },
    /// A reload failed and was rolled back; the old version still answers.
    #[error("reloading bundle {bundle} failed and was rolled back: {source}")]
    ReloadRolledBack {
        /// The bundle.
        bundle: String,
        /// Why the reload failed.
        #[source]
        source: Box<Self>,
    },
    /// The reload ran past the runtime's time limit
    /// ([`crate::RuntimeBuilder::reload_time_limit`]) and was rolled back.
    #[error(
        "reloading {bundle} took {elapsed:?}, over its limit of {limit:?} \
         ({migrated} of {total} instances migrated)"
    )]
    ReloadTooSlow {
        /// The bundle.
        bundle: String,
        /// The limit.
        limit: std::time::Duration,
        /// How long it had run when it was stopped.
        elapsed: std::time::Duration,
        /// Instances migrated by then.
        migrated: usize,
        /// Instances to migrate.
        total: usize,
    },
    /// The bundle's own reload committed, but reloading some dependents
    /// failed (each was rolled back alone).
    #[error("bundle {bundle} reloaded, but dependents failed: {failures:?}")]
    CascadeFailed {
        /// The bundle reloaded.
        bundle: String,
        /// Each failed dependent with its error.
        failures: Vec<(String, Self)>,
    },
    /// The file watcher could not be started or could not watch a directory.
    #[error("file watcher: {message}")]
    Watch {
        /// The watcher's message.
        message: String,
    },
}

/// Why a call into a daemon kind ([`crate::daemon`]) failed. Every variant
/// names the kind (`counter` for contract `daemon.counter@1`).
///
/// Who acts: the variants up to `CreateFailed` are about what is loaded (a
/// bundle must provide the kind, or finish reloading); `InstanceGone` and
/// `KindGone` mean the daemon's code went away under it (its bundle was
/// unloaded, or a reload dropped the kind): make it again from its last
/// state once the kind is back; the rest are the daemon's own answers (or
/// a plugin breaking the daemon contract), with the plugin's code and
/// message where it gave one.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum DaemonCallError {
    /// No loaded bundle provides `daemon.<kind>`.
    #[error("no loaded bundle provides daemon kind {kind:?}")]
    KindNotProvided {
        /// The kind asked for (`counter` or `counter@2`).
        kind: String,
    },
    /// The contract is named like a daemon contract but does not follow the
    /// daemon convention.
    #[error("{contract} is not a daemon contract: {reason}")]
    NotADaemonContract {
        /// The kind.
        kind: String,
        /// The contract, `daemon.<kind>@major`.
        contract: String,
        /// What is missing.
        reason: &'static str,
    },
    /// The bundle providing the kind is being reloaded or unloaded.
    #[error("daemon kind {kind}: bundle {bundle} is being reloaded or unloaded")]
    BundleBusy {
        /// The kind.
        kind: String,
        /// The bundle.
        bundle: String,
    },
    /// The runtime could not make an instance (the constructor failed or
    /// panicked, or the instance table is full).
    #[error("creating a daemon of kind {kind} failed: {error}")]
    CreateFailed {
        /// The kind.
        kind: String,
        /// The runtime's error (boxed: it is large, and this is a rare
        /// path).
        #[source]
        error: Box<RuntimeError>,
    },
    /// The daemon's instance no longer exists: its bundle was unloaded, a
    /// reload dropped its kind, or it was destroyed through the runtime.
    #[error("the daemon of kind {kind} (instance {instance:?}) no longer exists")]
    InstanceGone {
        /// The kind.
        kind: String,
        /// The instance's handle.
        instance: InstanceHandle,
    },
    /// The kind's contract is no longer provided, though the instance
    /// still exists (its provider was removed through the store).
    #[error("daemon kind {kind} is no longer provided")]
    KindGone {
        /// The kind.
        kind: String,
    },
    /// `process` returned an error (a panic in a Rust daemon comes back as
    /// code 17, `Internal`, "daemon process panicked").
    #[error("daemon kind {kind}: process failed with code {code}: {message}")]
    ProcessFailed {
        /// The kind.
        kind: String,
        /// The plugin's raw code.
        code: u32,
        /// The plugin's message (at most 4 KiB, lossily decoded).
        message: String,
    },
    /// An output was larger than the call's limit; it was refused, and so
    /// was every later output of the call.
    #[error("daemon kind {kind}: an output of {len} bytes exceeds the limit of {max}")]
    OutputTooLarge {
        /// The kind.
        kind: String,
        /// The output's length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The call emitted more outputs than its limit allows.
    #[error("daemon kind {kind}: more than {max} outputs for one event")]
    TooManyOutputs {
        /// The kind.
        kind: String,
        /// The limit.
        max: usize,
    },
    /// The plugin emitted a null payload with a non-zero length.
    #[error("daemon kind {kind}: an output with a null pointer and a non-zero length")]
    MalformedOutput {
        /// The kind.
        kind: String,
    },
    /// `save_state` returned an error (a Rust daemon's panic: code 17,
    /// "daemon save panicked").
    #[error("daemon kind {kind}: save failed with code {code}: {message}")]
    SaveFailed {
        /// The kind.
        kind: String,
        /// The plugin's raw code.
        code: u32,
        /// The plugin's message (at most 4 KiB, lossily decoded).
        message: String,
    },
    /// A state blob is larger than `RuntimeConfig::max_state_bytes`.
    #[error("daemon kind {kind}: a state of {len} bytes exceeds max_state_bytes ({max})")]
    StateTooLarge {
        /// The kind.
        kind: String,
        /// The blob's length.
        len: u64,
        /// `max_state_bytes`.
        max: u64,
    },
    /// `save_state` returned a non-null blob of length 0, which cannot have
    /// come from the host's allocator.
    #[error("daemon kind {kind}: save returned a non-null state of length 0")]
    MalformedState {
        /// The kind.
        kind: String,
    },
    /// A WASM kind's call faulted in its sandbox (a trap, an endless loop,
    /// a memory blow-up, ...): the node and every other daemon keep running.
    #[error("daemon kind {kind}: {fault}")]
    Fault {
        /// The kind.
        kind: String,
        /// What went wrong inside the module.
        fault: WasmFault,
    },
    /// `restore_state` refused the state (a Rust daemon's panic: code 17,
    /// "daemon restore panicked"). The instance made for it was destroyed.
    #[error(
        "daemon kind {kind}: restoring a state saved by version {from} failed with code {code}: {message}"
    )]
    RestoreFailed {
        /// The kind.
        kind: String,
        /// The contract version that saved the state.
        from: Version,
        /// The plugin's raw code.
        code: u32,
        /// The plugin's message (at most 4 KiB, lossily decoded).
        message: String,
    },
}
