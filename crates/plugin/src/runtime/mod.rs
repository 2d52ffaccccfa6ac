//! [`Runtime`]: loads, reloads and unloads bundles (spec §6), keeps their
//! tracked instances and migrates their state (§8), and answers lookups
//! without locks through its [`RuntimeStore`].
//!
//! Lifecycle operations (load, reload with its cascade, unload) are
//! serialized by one mutex per runtime and refuse reentry from their own
//! thread. Readers never take that mutex. Images are never closed on the
//! spot: they are retired after the publication that removed them, and
//! [`Runtime::reclaim`] closes them once every thread pinned at the start of
//! their grace period (the first reclaim after retirement) has unpinned.
//!
//! Submodules: `events` (log and reload-event delivery), `host` (the
//! `HostApi` tables plugins call), `registration` (validating and staging
//! what a plugin registers), `instances` (the tracked-instance table),
//! `lifecycle` (load, reload, cascade, unload), `migration` (state carried
//! across a reload), `retire` (retirement and reclaim of images), `builder`
//! ([`RuntimeBuilder`], plugin directories), `cached` ([`CachedContract`])
//! and, with feature `watch`, the file watcher.

mod builder;
mod cached;
mod events;
mod host;
mod instances;
mod lifecycle;
mod migration;
mod registration;
mod retire;
#[cfg(feature = "watch")]
mod watch;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard, Weak};
use std::time::Duration;

pub use builder::{RuntimeBuilder, WatchConfig};
pub use cached::CachedContract;
use holdfast_plugin_abi::{
    BundleId, BundleInfo, GuestContractHandle, GuestContractId, GuestContractInstance,
    GuestContractInterface, HostApi, InstanceHandle, RuntimeConfig, StringView, Version,
};
use rustc_hash::FxHashMap;

use self::events::{Logger, ReloadEvents};
pub(crate) use self::host::HostTable;
use self::instances::InstanceTable;
pub(crate) use self::instances::Tracked;
use self::lifecycle::Bundle;
use self::retire::Retired;
use crate::epoch;
use crate::error::{RegistryError, RuntimeError};
use crate::loader::BundleLoader;
use crate::runtime_store::RuntimeStore;

/// One loaded bundle, as [`Runtime::bundles`] reports it.
#[derive(Clone, Debug)]
pub struct BundleSummary {
    /// The bundle's ID.
    pub id: BundleId,
    /// The bundle's name.
    pub name: String,
    /// The manifest's version.
    pub version: Version,
    /// The bundle directory the current image came from.
    pub dir: PathBuf,
    /// The library file, inside `dir`.
    pub library: PathBuf,
    /// Each provided contract (`name@major`) with its handle.
    pub contracts: Vec<(String, GuestContractHandle)>,
    /// The revision after the load or reload that made the current image.
    pub loaded_at_revision: u64,
}

/// Timings of the last successful reload.
#[derive(Clone, Copy, Debug)]
pub struct ReloadStats {
    /// The bundle reloaded.
    pub bundle: BundleId,
    /// Shadow copy and open, until the loader adopted the image.
    pub open: Duration,
    /// The ABI checks and the plugin's init, and validation.
    pub init: Duration,
    /// Saving and restoring tracked instances' state.
    pub migrate: Duration,
    /// Publication, revision, instance switch-over and retirement.
    pub commit: Duration,
    /// The whole reload, from `Preparing` to `Reloaded`.
    pub total: Duration,
    /// Instances carried to the new image.
    pub instances_migrated: u32,
    /// Instances destroyed because their contract has no state hooks or is
    /// gone.
    pub instances_dropped: u32,
}

/// A plugin runtime. Build one with [`Runtime::builder`]; it is shared as
/// `Arc<Runtime>` and every method takes `&self`.
///
/// Lifecycle calls made from inside a lifecycle operation of the same
/// runtime on the same thread (a reload callback, plugin init, a state hook)
/// return [`RuntimeError::ReentrantLifecycle`]. A callback that *waits* for
/// another thread which itself calls a lifecycle method deadlocks; that is
/// not detected.
pub struct Runtime {
    config: RuntimeConfig,
    store: RuntimeStore,
    loaders: Vec<Box<dyn BundleLoader>>,
    /// `reload_serialize` of spec §6.1: held for a whole lifecycle operation.
    lifecycle: Mutex<()>,
    bundles: Mutex<BTreeMap<BundleId, Bundle>>,
    revision: AtomicU64,
    /// Lifecycle operations started so far (retired images remember theirs).
    operations: AtomicU64,
    instances: RwLock<InstanceTable>,
    /// Counts write accesses to `instances` (bumped with the write lock
    /// held, before anything is changed): a caller that saw a count can
    /// tell, with one load, that no instance was migrated, destroyed or
    /// marked busy since (see `crate::wasm::caller`).
    instances_version: AtomicU64,
    retired: Mutex<Vec<Retired>>,
    /// Each bundle's host table, kept until the runtime drops.
    hosts: Mutex<FxHashMap<BundleId, Arc<HostTable>>>,
    own_host: Arc<HostTable>,
    logger: Arc<Logger>,
    events: ReloadEvents,
    last_stats: Mutex<Option<ReloadStats>>,
    /// See [`RuntimeBuilder::reload_time_limit`].
    reload_time_limit: Option<Duration>,
    /// See [`RuntimeBuilder::trusted_keys`].
    trusted_keys: RwLock<crate::signature::TrustedKeys>,
    #[cfg(feature = "watch")]
    watcher: Mutex<Option<watch::Watcher>>,
    this: Weak<Self>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("revision", &self.revision())
            .field("bundles", &self.bundles().len())
            .field("pending_closes", &self.pending_closes())
            .finish_non_exhaustive()
    }
}

/// Locks a mutex whose data is consistent at every unlock, so poisoning
/// (a panic elsewhere) is recovered rather than spread.
impl Drop for Runtime {
    /// Stops the watcher, unloads every bundle (dependents first, without
    /// callbacks), then closes every retired image at once: with the last
    /// `Arc<Runtime>` gone, no thread can hold a pointer from it.
    fn drop(&mut self) {
        #[cfg(feature = "watch")]
        self.stop_watcher();
        while let Some(id) = self.next_to_unload() {
            self.remove_bundle(id);
        }
        self.close_all_retired();
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Runtime {
    /// A builder with the default configuration.
    pub fn builder() -> RuntimeBuilder {
        RuntimeBuilder::new()
    }

    /// The configuration the runtime was built with.
    pub fn config(&self) -> &RuntimeConfig {
        &self.config
    }

    /// The keys bundle signatures are checked against (see
    /// [`RuntimeBuilder::trusted_keys`]).
    pub fn trusted_keys(&self) -> crate::signature::TrustedKeys {
        self.trusted_keys
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Replaces the trusted and revoked keys. Bundles already loaded stay
    /// loaded; every later load and reload (including the cascade and the
    /// watcher's) is checked against `keys`. Waits for a signature check in
    /// progress.
    pub fn set_trusted_keys(&self, keys: crate::signature::TrustedKeys) {
        *self.trusted_keys.write().unwrap_or_else(PoisonError::into_inner) = keys;
    }

    /// The contract registry.
    #[inline]
    pub fn store(&self) -> &RuntimeStore {
        &self.store
    }

    /// The host's own table (no bundle; lookups unrestricted), valid while
    /// the runtime lives.
    pub fn host_api(&self) -> *const HostApi {
        self.own_host.api()
    }

    /// Incremented once by every successful load, reload and unload; 0
    /// before the first. It tells that something changed, nothing more.
    pub fn revision(&self) -> u64 {
        self.revision.load(Ordering::Acquire)
    }

    /// The earliest-registered provider of `contract_id` with at least
    /// `min_minor`. Never blocks.
    ///
    /// # Errors
    /// `NotFound`.
    pub fn find_guest_contract(
        &self,
        contract_id: u64,
        min_minor: u32,
    ) -> Result<GuestContractHandle, RegistryError> {
        self.store
            .find_guest_contract(GuestContractId::from_u64(contract_id), min_minor)
    }

    /// Writes up to `out.len()` matching handles in registration order and
    /// returns how many match in all. Never blocks.
    pub fn find_all_guest_contracts(
        &self,
        contract_id: u64,
        min_minor: u32,
        out: &mut [GuestContractHandle],
    ) -> usize {
        self.store
            .find_all_guest_contracts(GuestContractId::from_u64(contract_id), min_minor, out)
    }

    /// The current interface of `handle`'s provider.
    ///
    /// The pointer, the function pointers read from it and the image's
    /// static memory are valid only while the calling thread holds an
    /// epoch guard (`holdfast_plugin::epoch::pin()`) taken **before** this
    /// call. Without one a concurrent reload may close the image under you.
    /// [`Runtime::with_guest_contract`] and [`CachedContract::get`] tie the
    /// reference to a guard for you.
    ///
    /// # Errors
    /// `InvalidHandle`, `StaleHandle` or `SlotVacant`.
    pub fn resolve_guest_contract(
        &self,
        handle: GuestContractHandle,
    ) -> Result<*const GuestContractInterface, RegistryError> {
        self.store.resolve_guest_contract(handle)
    }

    /// Runs `f` on the current interface of `handle`'s provider, pinned for
    /// the duration of the call.
    ///
    /// # Errors
    /// As [`Runtime::resolve_guest_contract`].
    pub fn with_guest_contract<R>(
        &self,
        handle: GuestContractHandle,
        f: impl FnOnce(&GuestContractInterface) -> R,
    ) -> Result<R, RegistryError> {
        let guard = epoch::pin();
        self.store.resolve_pinned(handle, &guard).map(f)
    }

    /// Creates a tracked instance of `handle`'s contract with its provider's
    /// constructor. Tracked instances are carried across reloads when the
    /// contract has state hooks (spec §8).
    ///
    /// # Errors
    /// `Registry` for a bad handle, `BundleBusy` while the provider is being
    /// reloaded or unloaded, `InstanceCreateFailed` if the constructor
    /// returns an instance of another contract.
    ///
    /// # Safety
    /// `args` must be what the contract's constructor expects.
    pub unsafe fn create_guest_instance(
        &self,
        handle: GuestContractHandle,
        args: *const (),
    ) -> Result<InstanceHandle, RuntimeError> {
        // SAFETY: the caller's promise about `args` is passed on.
        unsafe { self.create_tracked(handle, args) }
    }

    /// The instance's current contract instance (after a reload that
    /// migrated it: the new data).
    ///
    /// # Errors
    /// `InstanceGone` for a stale, null or unknown handle.
    pub fn resolve_guest_instance(
        &self,
        instance: InstanceHandle,
    ) -> Result<GuestContractInstance, RuntimeError> {
        self.instances_read()
            .get(instance)
            .map(|tracked| tracked.instance)
            .ok_or(RuntimeError::InstanceGone { instance })
    }

    /// Destroys a tracked instance with its provider's destructor.
    ///
    /// # Errors
    /// `InstanceGone`, or `BundleBusy` while its bundle is being reloaded or
    /// unloaded.
    pub fn destroy_guest_instance(&self, instance: InstanceHandle) -> Result<(), RuntimeError> {
        self.destroy_tracked(instance)
    }

    /// Every loaded bundle, in ID order. Takes a short internal lock, never
    /// the lifecycle lock.
    pub fn bundles(&self) -> Vec<BundleSummary> {
        lock(&self.bundles)
            .iter()
            .map(|(&id, bundle)| bundle.summary(id))
            .collect()
    }

    /// Timings of the last successful reload.
    pub fn last_reload_stats(&self) -> Option<ReloadStats> {
        *lock(&self.last_stats)
    }

    /// The number of retired images not yet closed.
    pub fn pending_closes(&self) -> usize {
        lock(&self.retired).len()
    }

    fn instances_read(&self) -> RwLockReadGuard<'_, InstanceTable> {
        self.instances.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn instances_write(&self) -> RwLockWriteGuard<'_, InstanceTable> {
        let table = self.instances.write().unwrap_or_else(PoisonError::into_inner);
        self.instances_version.fetch_add(1, Ordering::Release);
        table
    }

    /// How many times the instance table has been opened for writing. It
    /// cannot change while the caller holds the table for reading.
    pub(crate) fn instances_version(&self) -> u64 {
        self.instances_version.load(Ordering::Acquire)
    }

    /// The bundle's host table, made at its first load.
    fn host_for(&self, id: BundleId, name: &str) -> Arc<HostTable> {
        lock(&self.hosts)
            .entry(id)
            .or_insert_with(|| HostTable::for_bundle(self.this.clone(), self.logger.clone(), name))
            .clone()
    }

    /// The name of a bundle that has been loaded (its table keeps a copy
    /// for the runtime's whole life, which is what C views point to).
    fn bundle_name_view(&self, id: BundleId) -> StringView {
        lock(&self.hosts)
            .get(&id)
            .map_or(StringView::absent(), |table| table.name_view())
    }

    /// `list_bundles` for the host table.
    fn bundle_infos(&self) -> Vec<BundleInfo> {
        let summaries = self.bundles();
        summaries
            .iter()
            .map(|summary| BundleInfo {
                bundle_id: summary.id.id(),
                name: self.bundle_name_view(summary.id),
                version: summary.version,
                contract_count: summary.contracts.len() as u32,
            })
            .collect()
    }

    /// Runs `f` with a tracked instance — its bundle, data and the
    /// interface that made it, or `None` when it is gone — and whether its
    /// bundle is being reloaded or unloaded, holding the instance table for
    /// reading throughout: no reload or unload can migrate or destroy the
    /// instance while `f` runs (for callers, such as the WASM loader, whose
    /// calls are bounded and never re-enter the lifecycle).
    #[cfg(feature = "wasm")]
    pub(crate) fn with_tracked<R>(
        &self,
        instance: InstanceHandle,
        f: impl FnOnce(Option<&Tracked>, bool) -> R,
    ) -> R {
        let table = self.instances_read();
        match table.get(instance) {
            Some(tracked) => f(Some(tracked), table.is_busy(tracked.bundle)),
            None => f(None, false),
        }
    }

    pub(crate) fn bundle_label(&self, id: BundleId) -> String {
        lock(&self.bundles)
            .get(&id)
            .map_or_else(|| id.to_string(), |bundle| bundle.manifest.name.clone())
    }
}
