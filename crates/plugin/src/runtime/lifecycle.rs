//! Load, reload and its cascade, and unload (spec §6): reading a bundle
//! path, staging and validating the new image, and committing it as one
//! registry publication. State migration is in `migration`, retirement and
//! reclaim in `retire`.
//!
//! Every operation here runs under the runtime's lifecycle lock, taken by
//! [`Runtime::enter`], and either commits as one registry publication or
//! leaves the registry, the bundle records and the tracked instances as they
//! were. An operation never closes the images it unpublishes: it retires
//! them, and `reclaim` closes them after their grace period.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use holdfast_plugin_abi::{
    BundleId, Compatibility, DispatchType, GuestContractHandle, LogLevel, ReloadPhase, ReloadPhaseType,
    StringView,
};
use rustc_hash::FxHashMap;

use super::host::HostTable;
use super::instances::Tracked;
use super::registration::{StagedRegistration, Staging};
use super::{BundleSummary, ReloadStats, Runtime, lock};
use crate::error::{LoaderError, RuntimeError, ValidationError};
use crate::loader::{BundleLoader, LoadContext, LoadedModule};
use crate::manifest::{ContractRef, MANIFEST_FILE, ManifestData, ManifestDependency};
use crate::runtime_store::{Change, StagedProvider};
use crate::signature::{self, Sha256Digest};

thread_local! {
    /// Runtimes (by address) whose lifecycle operation this thread is inside.
    static ACTIVE: RefCell<Vec<usize>> = const { RefCell::new(Vec::new()) };
}

/// The library's length and modification time, as the watcher compares them.
pub(crate) type LibraryStamp = (u64, Option<SystemTime>);

pub(crate) fn library_stamp(path: &Path) -> Option<LibraryStamp> {
    let metadata = std::fs::metadata(path).ok()?;
    Some((metadata.len(), metadata.modified().ok()))
}

/// A loaded bundle's record.
pub(crate) struct Bundle {
    pub(crate) manifest: ManifestData,
    modules: Vec<Box<dyn LoadedModule>>,
    contracts: Vec<(ContractRef, GuestContractHandle)>,
    loaded_at_revision: u64,
    pub(crate) stamp: Option<LibraryStamp>,
}

impl Bundle {
    pub(crate) fn summary(&self, id: BundleId) -> BundleSummary {
        BundleSummary {
            id,
            name: self.manifest.name.clone(),
            version: self.manifest.version,
            dir: self.manifest.dir.clone(),
            library: self.manifest.library_path(),
            contracts: self
                .contracts
                .iter()
                .map(|(contract, handle)| (contract.to_string(), *handle))
                .collect(),
            loaded_at_revision: self.loaded_at_revision,
        }
    }

    /// Whether the bundle declares a dependency on one of `contracts`.
    fn depends_on_any(&self, contracts: &[ContractRef]) -> bool {
        self.manifest
            .dependencies
            .iter()
            .any(|dependency| contracts.contains(&dependency.contract))
    }
}

/// A bundle marked busy (its instances refused) until this is dropped, so a
/// panic in the operation that marked it cannot leave it busy for good.
struct Busy<'rt> {
    runtime: &'rt Runtime,
    bundle: BundleId,
}

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.runtime.instances_write().clear_busy(self.bundle);
    }
}

impl Runtime {
    fn mark_busy(&self, bundle: BundleId) -> Busy<'_> {
        self.instances_write().set_busy(bundle);
        Busy {
            runtime: self,
            bundle,
        }
    }
}

/// Proof that the current thread holds the lifecycle lock.
pub(crate) struct Lifecycle<'rt> {
    runtime: &'rt Runtime,
    /// This operation's number (operations are counted from 1).
    operation: u64,
    _lock: MutexGuard<'rt, ()>,
}

impl Drop for Lifecycle<'_> {
    fn drop(&mut self) {
        let address = self.runtime.address();
        ACTIVE.with(|active| active.borrow_mut().retain(|&held| held != address));
    }
}

/// What a loader staged and opened.
struct Staged {
    staging: Staging,
    modules: Vec<Box<dyn LoadedModule>>,
    open: Duration,
    init: Duration,
}

impl Runtime {
    fn address(&self) -> usize {
        self as *const Self as usize
    }

    /// Takes the lifecycle lock, refusing reentry from this thread.
    pub(crate) fn enter(&self, operation: &'static str) -> Result<Lifecycle<'_>, RuntimeError> {
        let address = self.address();
        if ACTIVE.with(|active| active.borrow().contains(&address)) {
            return Err(RuntimeError::ReentrantLifecycle { operation });
        }
        let guard = lock(&self.lifecycle);
        ACTIVE.with(|active| active.borrow_mut().push(address));
        Ok(Lifecycle {
            runtime: self,
            operation: self.operations.fetch_add(1, Ordering::AcqRel) + 1,
            _lock: guard,
        })
    }

    /// Loads the bundle at `path` (a bundle directory or the library inside
    /// one) and publishes its contracts (spec §6.2). No event fires.
    ///
    /// # Errors
    /// `ReentrantLifecycle`, `Manifest`, `LibraryNotInManifest`,
    /// `BundleAlreadyLoaded`, `BundleIdCollision`, `MissingDependency`,
    /// `NoLoader`, `Loader`, `Validation`. On every error nothing was
    /// published and any opened image is retired.
    pub fn load_bundle(&self, path: &Path) -> Result<BundleId, RuntimeError> {
        self.run_lifecycle("load", || self.load_locked(path))
    }

    /// Reloads the bundle named by the manifest at `path` (a bundle
    /// directory or the library inside one), which may be another directory
    /// than the one it was loaded from (spec §6.5), then reloads its
    /// dependents that asked for it (§6.6).
    ///
    /// # Errors
    /// `HotReloadDisabled`, `ReentrantLifecycle`, `Manifest`,
    /// `LibraryNotInManifest`, `BundleNotLoaded`, `MissingDependency`,
    /// `NoLoader` (all before any event); `ReloadRolledBack` when the new
    /// image failed and the old one still answers; `CascadeFailed` when the
    /// bundle reloaded but a dependent did not.
    pub fn reload_bundle(&self, path: &Path) -> Result<(), RuntimeError> {
        if !self.config.hot_reload_enabled {
            return Err(RuntimeError::HotReloadDisabled);
        }
        self.run_lifecycle("reload", || self.reload_locked(path, None))
    }

    /// Reloads a loaded bundle from the directory it was last loaded from.
    ///
    /// # Errors
    /// As [`Runtime::reload_bundle`]; `BundleNotLoaded` also when that
    /// directory's manifest now names another bundle.
    pub fn reload_bundle_by_id(&self, bundle: BundleId) -> Result<(), RuntimeError> {
        if !self.config.hot_reload_enabled {
            return Err(RuntimeError::HotReloadDisabled);
        }
        self.run_lifecycle("reload", || {
            let dir = lock(&self.bundles)
                .get(&bundle)
                .map(|record| record.manifest.dir.clone())
                .ok_or_else(|| RuntimeError::BundleNotLoaded {
                    bundle: bundle.to_string(),
                })?;
            self.reload_locked(&dir, Some(bundle))
        })
    }

    /// Unloads a bundle: destroys its tracked instances, unpublishes its
    /// contracts (their handles go stale) and retires its image (spec §6.7).
    ///
    /// # Errors
    /// `ReentrantLifecycle`, `BundleNotLoaded`, `BundleInUse`.
    pub fn unload_bundle(&self, bundle: BundleId) -> Result<(), RuntimeError> {
        self.run_lifecycle("unload", || self.unload_locked(bundle))
    }

    /// Runs `body` as one lifecycle operation, then closes the images that
    /// earlier operations retired and whose grace period is over.
    fn run_lifecycle<T>(
        &self,
        operation: &'static str,
        body: impl FnOnce() -> Result<T, RuntimeError>,
    ) -> Result<T, RuntimeError> {
        let (outcome, number) = {
            let lifecycle = self.enter(operation)?;
            (body(), lifecycle.operation)
        };
        self.close_retired_before(number);
        outcome
    }

    // ---- reading a bundle path ----

    /// The manifest of the bundle at `path` (directory or library file).
    fn read_manifest(path: &Path) -> Result<ManifestData, RuntimeError> {
        let (dir, file) = if path.is_file() {
            let dir = path.parent().unwrap_or(Path::new("."));
            (dir, Some(path))
        } else {
            (path, None)
        };
        let manifest = ManifestData::from_dir(dir).map_err(|error| RuntimeError::Manifest {
            path: path.to_path_buf(),
            error,
        })?;
        if let Some(file) = file {
            let expected = manifest.library_path();
            let same = match (file.canonicalize(), expected.canonicalize()) {
                (Ok(given), Ok(expected)) => given == expected,
                _ => false,
            };
            let is_manifest = file.file_name().is_some_and(|name| name == MANIFEST_FILE);
            if !same && !is_manifest {
                return Err(RuntimeError::LibraryNotInManifest {
                    path: file.to_path_buf(),
                    expected,
                });
            }
        }
        Ok(manifest)
    }

    /// Applies `config.signature_policy` to the bundle `manifest` was read
    /// from, before any loader sees it (docs/PLUGINS.md, "Signed bundles").
    /// Under `Warn` a refusal is logged and the bundle loads. Under
    /// `Require` returns the signed digest of the file to load, which the
    /// loader checks its own copy against before opening it.
    fn check_signature(
        &self,
        path: &Path,
        manifest: &ManifestData,
    ) -> Result<Option<Sha256Digest>, RuntimeError> {
        use holdfast_plugin_abi::SignaturePolicy;
        let policy = self.config.signature_policy;
        if policy == SignaturePolicy::Off {
            return Ok(None);
        }
        let keys = self.trusted_keys.read().unwrap_or_else(PoisonError::into_inner);
        match (signature::verify_bundle(manifest, &keys), policy) {
            (Ok(verified), _) => {
                self.logger.log(
                    LogLevel::Debug,
                    &format!(
                        "bundle {} is signed by trusted key {}",
                        verified.bundle(),
                        verified.key()
                    ),
                );
                Ok((policy == SignaturePolicy::Require).then(|| verified.loaded_file_digest()))
            }
            (Err(error), SignaturePolicy::Warn) => {
                self.logger.log(
                    LogLevel::Warn,
                    &format!(
                        "bundle {}: {error}; loading it anyway (signature policy Warn)",
                        manifest.name
                    ),
                );
                Ok(None)
            }
            (Err(error), _) => Err(RuntimeError::Signature {
                path: path.to_path_buf(),
                error,
            }),
        }
    }

    fn loader_for(&self, manifest: &ManifestData) -> Result<&dyn BundleLoader, RuntimeError> {
        self.loaders
            .iter()
            .find(|loader| loader.loader_name() == manifest.loader)
            .map(|loader| &**loader)
            .ok_or_else(|| RuntimeError::NoLoader {
                bundle: manifest.name.clone(),
                loader: manifest.loader.clone(),
            })
    }

    /// Every bundle dependency loaded and every non-optional contract
    /// dependency provided by some other bundle.
    fn check_dependencies(&self, manifest: &ManifestData) -> Result<(), RuntimeError> {
        let missing = |dependency: String| RuntimeError::MissingDependency {
            bundle: manifest.name.clone(),
            dependency,
        };
        {
            let bundles = lock(&self.bundles);
            for name in &manifest.bundle_dependencies {
                if !bundles.values().any(|bundle| bundle.manifest.name == *name) {
                    return Err(missing(name.clone()));
                }
            }
        }
        for dependency in manifest
            .dependencies
            .iter()
            .filter(|dependency| !dependency.optional)
        {
            let providers = self
                .store
                .providing_bundles(dependency.contract.id(), dependency.min_minor);
            if !providers.iter().any(|&provider| provider != manifest.id) {
                return Err(missing(format!(
                    "{}.{}",
                    dependency.contract, dependency.min_minor
                )));
            }
        }
        Ok(())
    }

    // ---- load ----

    fn load_locked(&self, path: &Path) -> Result<BundleId, RuntimeError> {
        let manifest = Self::read_manifest(path)?;
        let verified = self.check_signature(path, &manifest)?;
        let id = manifest.id;
        if let Some(existing) = lock(&self.bundles).get(&id) {
            return Err(if existing.manifest.name == manifest.name {
                RuntimeError::BundleAlreadyLoaded {
                    bundle: manifest.name.clone(),
                }
            } else {
                RuntimeError::BundleIdCollision {
                    existing: existing.manifest.name.clone(),
                    new: manifest.name.clone(),
                }
            });
        }
        self.check_dependencies(&manifest)?;
        let loader = self.loader_for(&manifest)?;
        let host = self.host_for(id, &manifest.name);
        let staged = self.stage(&manifest, verified, &host, loader, FxHashMap::default())?;
        if let Err(error) = self.validate(&manifest, &staged.staging) {
            self.discard(staged, host);
            return Err(error);
        }
        if let Err(error) = self.store.commit(publication(&staged.staging, id)) {
            self.discard(staged, host);
            return Err(error.into());
        }
        let revision = self.revision.fetch_add(1, Ordering::AcqRel) + 1;
        host.declare(&manifest);
        let replaced = self.record(manifest, staged, revision);
        debug_assert!(replaced.is_none(), "a load never replaces a loaded bundle");
        Ok(id)
    }

    /// Records a committed bundle, watches its directory, and returns the
    /// record it replaces (on a reload).
    fn record(&self, manifest: ManifestData, staged: Staged, revision: u64) -> Option<Bundle> {
        let id = manifest.id;
        let contracts = staged
            .staging
            .registrations
            .iter()
            .map(|staged| (staged.contract.clone(), staged.handle))
            .collect();
        let stamp = library_stamp(&manifest.library_path());
        #[cfg(feature = "watch")]
        self.watch_dir(&manifest.dir);
        lock(&self.bundles).insert(
            id,
            Bundle {
                manifest,
                modules: staged.modules,
                contracts,
                loaded_at_revision: revision,
                stamp,
            },
        )
    }

    /// Runs the loader inside a staging transaction (spec §6.2 step 4).
    /// On failure, everything staged is discarded before returning.
    fn stage(
        &self,
        manifest: &ManifestData,
        verified: Option<Sha256Digest>,
        host: &Arc<HostTable>,
        loader: &dyn BundleLoader,
        existing: FxHashMap<u64, GuestContractHandle>,
    ) -> Result<Staged, RuntimeError> {
        host.open_staging(Staging::new(manifest, existing));
        let logger = |level: LogLevel, message: &str| self.logger.log(level, message);
        let mut ctx = LoadContext::new(manifest, verified, host.api(), &logger);
        let started = Instant::now();
        let loaded = catch_unwind(AssertUnwindSafe(|| loader.load(manifest, &mut ctx)));
        let finished = Instant::now();
        let adopted_at = ctx.adopted_at().unwrap_or(finished);
        let modules = ctx.take_adopted();
        drop(ctx);
        let mut staging = host.close_staging().expect("the transaction was opened above");
        let bundle = manifest.name.clone();
        let outcome = match loaded {
            _ if staging.first_failure.is_some() => Err(RuntimeError::Validation {
                bundle,
                error: staging.first_failure.take().expect("checked just now"),
            }),
            Ok(Ok(())) if modules.is_empty() => Err(LoaderError::NothingAdopted { bundle }.into()),
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => Err(error.into()),
            Err(_) => Err(LoaderError::Other {
                bundle,
                message: "the loader panicked".into(),
            }
            .into()),
        };
        let staged = Staged {
            staging,
            modules,
            open: adopted_at.saturating_duration_since(started),
            init: finished.saturating_duration_since(adopted_at),
        };
        match outcome {
            Ok(()) => Ok(staged),
            Err(error) => {
                self.discard(staged, host.clone());
                Err(error)
            }
        }
    }

    /// Drops staged registrations (their reserved slots move to a new
    /// generation) and retires the opened image.
    fn discard(&self, staged: Staged, host: Arc<HostTable>) {
        self.store.release_reserved(&staged.staging.reserved_slots());
        self.retire(staged.modules, host);
    }

    /// The checks of spec §6.4 on what init registered.
    fn validate(&self, manifest: &ManifestData, staging: &Staging) -> Result<(), RuntimeError> {
        let strict = self.config.compatibility == Compatibility::Strict;
        let failed = |error: ValidationError| RuntimeError::Validation {
            bundle: manifest.name.clone(),
            error,
        };
        for contract in &manifest.provides {
            if !staging
                .registrations
                .iter()
                .any(|staged| staged.contract == *contract)
            {
                if strict {
                    return Err(failed(ValidationError::ContractNotRegistered {
                        contract: contract.to_string(),
                    }));
                }
                self.logger.log(
                    LogLevel::Warn,
                    &format!(
                        "bundle {}: {contract} is provided but was not registered",
                        manifest.name
                    ),
                );
            }
        }
        for staged in &staging.registrations {
            // A VM entry point carries no function count: its loader checks
            // the module's declarations against the manifest.
            if staged.interface.dispatch_type != DispatchType::Native {
                continue;
            }
            let expected = manifest
                .function_count
                .get(&staged.contract)
                .copied()
                .unwrap_or(0);
            // SAFETY: registration read the union's native arm (dispatch type
            // checked to be native).
            let registered = unsafe { staged.interface.dispatch.native.function_count };
            if registered == expected {
                continue;
            }
            let mismatch = ValidationError::FunctionCountMismatch {
                contract: staged.contract.to_string(),
                manifest: expected,
                registered,
            };
            if strict || registered < expected {
                return Err(failed(mismatch));
            }
            self.logger
                .log(LogLevel::Warn, &format!("bundle {}: {mismatch}", manifest.name));
        }
        Ok(())
    }

    /// On reload: no contract another bundle needs (and only this bundle
    /// satisfies) disappears or drops below the required minor.
    fn check_nothing_breaks(&self, manifest: &ManifestData, staging: &Staging) -> Result<(), RuntimeError> {
        let bundles = lock(&self.bundles);
        let mut broken: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for bundle in bundles
            .values()
            .filter(|bundle| bundle.manifest.id != manifest.id)
        {
            for dependency in bundle
                .manifest
                .dependencies
                .iter()
                .filter(|dependency| !dependency.optional)
            {
                let still_provided = staging.registrations.iter().any(|staged| {
                    staged.contract == dependency.contract
                        && staged.interface.contract_version.minor >= dependency.min_minor
                });
                if !still_provided && self.is_only_provider(manifest.id, dependency) {
                    broken
                        .entry(format!("{}.{}", dependency.contract, dependency.min_minor))
                        .or_default()
                        .push(bundle.manifest.name.clone());
                }
            }
        }
        match broken.into_iter().next() {
            Some((contract, dependents)) => Err(RuntimeError::DependencyWouldBreak {
                bundle: manifest.name.clone(),
                contract,
                dependents,
            }),
            None => Ok(()),
        }
    }

    /// Whether `bundle` is, right now, the only provider satisfying
    /// `dependency`.
    fn is_only_provider(&self, bundle: BundleId, dependency: &ManifestDependency) -> bool {
        let providers = self
            .store
            .providing_bundles(dependency.contract.id(), dependency.min_minor);
        !providers.is_empty() && providers.iter().all(|&provider| provider == bundle)
    }

    // ---- reload ----

    /// Reloads the bundle at `path` (spec §6.5), then its dependents (§6.6).
    /// `expected` is the bundle the caller named by ID, if it did.
    fn reload_locked(&self, path: &Path, expected: Option<BundleId>) -> Result<(), RuntimeError> {
        let (id, name, provided) = self.reload_from(path, expected)?;
        let failures = self.cascade(id, &name, provided);
        if failures.is_empty() {
            Ok(())
        } else {
            Err(RuntimeError::CascadeFailed {
                bundle: name,
                failures,
            })
        }
    }

    /// Steps 2–8 of spec §6.5 for the bundle the manifest at `path` names
    /// (which must be `expected` if given). Returns its ID, its name, and
    /// the contracts it provided before or provides after the reload.
    fn reload_from(
        &self,
        path: &Path,
        expected: Option<BundleId>,
    ) -> Result<(BundleId, String, Vec<ContractRef>), RuntimeError> {
        let manifest = Self::read_manifest(path)?;
        let verified = self.check_signature(path, &manifest)?;
        let id = manifest.id;
        if let Some(expected) = expected
            && expected != id
        {
            // The directory's manifest now names another bundle.
            return Err(RuntimeError::BundleNotLoaded {
                bundle: expected.to_string(),
            });
        }
        let mut provided: Vec<ContractRef> = lock(&self.bundles)
            .get(&id)
            .map(|bundle| bundle.manifest.provides.clone())
            .ok_or_else(|| RuntimeError::BundleNotLoaded {
                bundle: manifest.name.clone(),
            })?;
        self.check_dependencies(&manifest)?;
        let loader = self.loader_for(&manifest)?;
        let name = manifest.name.clone();
        provided.extend(manifest.provides.iter().cloned());
        self.reload_one(manifest, verified, loader)?;
        Ok((id, name, provided))
    }

    fn phase(&self, phase_type: ReloadPhaseType, id: BundleId, reason: StringView) -> ReloadPhase {
        ReloadPhase {
            phase_type,
            bundle_id: id.id(),
            bundle_name: self.bundle_name_view(id),
            reason,
            revision: self.revision(),
        }
    }

    fn fire(&self, phase: ReloadPhase) {
        self.events.fire(phase, &self.logger);
    }

    /// Steps 3–8 of spec §6.5 for one bundle: `Preparing`, then exactly one
    /// of `Reloaded` or `Failed`.
    fn reload_one(
        &self,
        manifest: ManifestData,
        verified: Option<Sha256Digest>,
        loader: &dyn BundleLoader,
    ) -> Result<(), RuntimeError> {
        let id = manifest.id;
        let name = manifest.name.clone();
        let started = Instant::now();
        let busy = self.mark_busy(id);
        self.fire(self.phase(ReloadPhaseType::Preparing, id, StringView::absent()));
        let outcome = self.replace_image(manifest, verified, loader, started);
        drop(busy);
        match outcome {
            Ok(stats) => {
                *lock(&self.last_stats) = Some(stats);
                self.fire(self.phase(ReloadPhaseType::Reloaded, id, StringView::absent()));
                Ok(())
            }
            Err(error) => {
                let reason = error.to_string();
                self.fire(self.phase(ReloadPhaseType::Failed, id, StringView::borrowed(&reason)));
                Err(RuntimeError::ReloadRolledBack {
                    bundle: name,
                    source: Box::new(error),
                })
            }
        }
    }

    /// Stages, validates and migrates the new image, then commits it; or
    /// rolls everything back and returns why.
    fn replace_image(
        &self,
        manifest: ManifestData,
        verified: Option<Sha256Digest>,
        loader: &dyn BundleLoader,
        started: Instant,
    ) -> Result<ReloadStats, RuntimeError> {
        let id = manifest.id;
        let host = self.host_for(id, &manifest.name);
        let existing: FxHashMap<u64, GuestContractHandle> = lock(&self.bundles)
            .get(&id)
            .map(|bundle| {
                bundle
                    .contracts
                    .iter()
                    .map(|(contract, handle)| (contract.id().id(), *handle))
                    .collect()
            })
            .unwrap_or_default();
        let staged = self.stage(&manifest, verified, &host, loader, existing)?;
        let checked = self
            .validate(&manifest, &staged.staging)
            .and_then(|()| self.check_nothing_breaks(&manifest, &staged.staging));
        if let Err(error) = checked {
            self.discard(staged, host);
            return Err(error);
        }
        let migrate_started = Instant::now();
        let (migrated, dropped) = match self.migrate(&manifest, &host, &staged.staging, started) {
            Ok(outcome) => outcome,
            Err(error) => {
                self.discard(staged, host);
                return Err(error);
            }
        };
        let migrate = migrate_started.elapsed();

        let commit_started = Instant::now();
        let instances_migrated = migrated.len() as u32;
        let instances_dropped = dropped.len() as u32;
        // Fails only if the host emptied one of the bundle's slots through
        // the public store API meanwhile: then nothing was published.
        if let Err(error) = self.store.commit(publication(&staged.staging, id)) {
            self.destroy_new_instances(migrated, &host);
            self.discard(staged, host);
            return Err(error.into());
        }
        let revision = self.revision.fetch_add(1, Ordering::AcqRel) + 1;
        for old in self.switch_instances(migrated, &dropped) {
            // SAFETY: the old image is not retired yet, so its destructor is
            // still mapped; the instance was made by that image.
            unsafe { (old.interface.destroy_instance)(host.api(), old.instance) };
        }
        host.declare(&manifest);
        let (open, init) = (staged.open, staged.init);
        if let Some(old) = self.record(manifest, staged, revision) {
            #[cfg(feature = "watch")]
            self.unwatch_dir(&old.manifest.dir);
            self.retire(old.modules, host.clone());
        }
        let commit = commit_started.elapsed();
        Ok(ReloadStats {
            bundle: id,
            open,
            init,
            migrate,
            commit,
            total: started.elapsed(),
            instances_migrated,
            instances_dropped,
        })
    }

    // ---- cascade (spec §6.6) ----

    /// Reloads, breadth first, every bundle that asked to be reloaded when
    /// something it depends on reloads; each at most once. Returns the
    /// dependents that failed (each rolled back alone).
    fn cascade(
        &self,
        root: BundleId,
        root_name: &str,
        provided: Vec<ContractRef>,
    ) -> Vec<(String, RuntimeError)> {
        let mut failures = Vec::new();
        let mut visited = BTreeSet::from([root]);
        let mut queue = VecDeque::from([(root_name.to_owned(), provided)]);
        while let Some((name, provided)) = queue.pop_front() {
            let dependents: Vec<(String, BundleId, PathBuf)> = {
                let bundles = lock(&self.bundles);
                let mut found: Vec<_> = bundles
                    .iter()
                    .filter(|(id, bundle)| {
                        !visited.contains(*id)
                            && bundle.manifest.needs_reinit_on_dep_reload
                            && (bundle.depends_on_any(&provided)
                                || bundle.manifest.bundle_dependencies.contains(&name))
                    })
                    .map(|(&id, bundle)| (bundle.manifest.name.clone(), id, bundle.manifest.dir.clone()))
                    .collect();
                found.sort();
                found
            };
            for (dependent, id, dir) in dependents {
                // Marked before it is tried: a dependent reloads (or fails)
                // at most once per call, whoever else depends on it.
                visited.insert(id);
                match self.reload_from(&dir, Some(id)) {
                    Ok((_, _, provided)) => queue.push_back((dependent, provided)),
                    Err(error) => failures.push((dependent, error)),
                }
            }
        }
        failures
    }

    // ---- unload (spec §6.7) ----

    fn unload_locked(&self, id: BundleId) -> Result<(), RuntimeError> {
        let name = {
            let bundles = lock(&self.bundles);
            let bundle = bundles.get(&id).ok_or_else(|| RuntimeError::BundleNotLoaded {
                bundle: id.to_string(),
            })?;
            bundle.manifest.name.clone()
        };
        let dependents = self.dependents_of(id, &name);
        if !dependents.is_empty() {
            return Err(RuntimeError::BundleInUse {
                bundle: name,
                dependents,
            });
        }
        let busy = self.mark_busy(id);
        self.fire(self.phase(ReloadPhaseType::Unloading, id, StringView::absent()));
        self.remove_bundle(id);
        drop(busy);
        Ok(())
    }

    /// Loaded bundles that need `id`: by name, or through a non-optional
    /// dependency only `id` satisfies.
    fn dependents_of(&self, id: BundleId, name: &str) -> Vec<String> {
        let bundles = lock(&self.bundles);
        bundles
            .iter()
            .filter(|(other, _)| **other != id)
            .filter(|(_, bundle)| {
                bundle
                    .manifest
                    .bundle_dependencies
                    .iter()
                    .any(|needed| needed == name)
                    || bundle
                        .manifest
                        .dependencies
                        .iter()
                        .any(|dependency| !dependency.optional && self.is_only_provider(id, dependency))
            })
            .map(|(_, bundle)| bundle.manifest.name.clone())
            .collect()
    }

    /// A loaded bundle no other loaded bundle needs (any bundle, if they
    /// need each other in a cycle), for unloading in reverse dependency
    /// order.
    pub(crate) fn next_to_unload(&self) -> Option<BundleId> {
        let loaded: Vec<(BundleId, String)> = lock(&self.bundles)
            .iter()
            .map(|(&id, bundle)| (id, bundle.manifest.name.clone()))
            .collect();
        let unneeded = loaded
            .iter()
            .find(|(id, name)| self.dependents_of(*id, name).is_empty());
        unneeded.or(loaded.first()).map(|(id, _)| *id)
    }

    /// Steps 4–5 of spec §6.7: destroys the bundle's tracked instances with
    /// its code, unpublishes its contracts, retires its image.
    pub(crate) fn remove_bundle(&self, id: BundleId) {
        let Some(bundle) = lock(&self.bundles).remove(&id) else {
            return;
        };
        let host = self.table_of(id);
        let instances: Vec<Tracked> = {
            let mut table = self.instances_write();
            let handles = table.of_bundle(id);
            handles
                .into_iter()
                .filter_map(|(handle, _)| table.remove(handle))
                .collect()
        };
        for tracked in instances {
            // SAFETY: the bundle's image is still mapped and made it.
            unsafe { (tracked.interface.destroy_instance)(host.api(), tracked.instance) };
        }
        let changes = bundle
            .contracts
            .iter()
            .map(|(_, handle)| Change::Vacate { handle: *handle })
            .collect();
        self.store
            .commit(changes)
            .expect("a batch of vacates cannot fail: a slot no longer ours is skipped");
        self.revision.fetch_add(1, Ordering::AcqRel);
        #[cfg(feature = "watch")]
        self.unwatch_dir(&bundle.manifest.dir);
        self.retire(bundle.modules, host);
    }
}

/// The registry changes that commit `staging` (spec §6.5 step 7): contracts
/// provided before and after are swapped in their slots, new ones published
/// in their reserved slots, and those no longer provided vacated.
fn publication(staging: &Staging, bundle_id: BundleId) -> Vec<Change> {
    let mut changes: Vec<Change> = staging
        .registrations
        .iter()
        .map(|registration| {
            let provider = provider_of(registration, bundle_id);
            if registration.reserved {
                Change::Publish {
                    index: registration.handle.index,
                    provider,
                }
            } else {
                Change::Swap {
                    handle: registration.handle,
                    provider,
                }
            }
        })
        .collect();
    changes.extend(
        staging
            .existing()
            .iter()
            .filter(|(contract_id, _)| {
                !staging
                    .registrations
                    .iter()
                    .any(|registration| registration.interface.contract_id.id() == **contract_id)
            })
            .map(|(_, handle)| Change::Vacate { handle: *handle }),
    );
    changes
}

fn provider_of(staged: &StagedRegistration, bundle_id: BundleId) -> StagedProvider {
    StagedProvider {
        interface: Arc::new(staged.interface),
        bundle_id,
        provider_name: staged.provider_name.clone(),
        contract_name: staged.contract.name.clone(),
    }
}
