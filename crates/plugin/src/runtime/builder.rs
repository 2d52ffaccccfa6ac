//! [`RuntimeBuilder`]: configuration, loaders, callbacks, plugin directories
//! (loaded at build, providers first: spec §6.9) and the file watcher.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::c_void;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use holdfast_plugin_abi::{ABI_FINGERPRINT, HOLDFAST_ABI_VERSION, LogLevel, ReloadPhase, RuntimeConfig};
use rustc_hash::FxHashMap;

use super::Runtime;
use super::events::{LogClosure, Logger, ReloadClosure, ReloadEvents};
use super::host::HostTable;
use super::instances::InstanceTable;
use crate::error::RuntimeError;
use crate::loader::{BundleLoader, NativeLoader};
use crate::manifest::{MANIFEST_FILE, ManifestData};
use crate::runtime_store::RuntimeStore;
use crate::signature::TrustedKeys;

/// How the file watcher debounces (feature `watch`).
#[derive(Clone, Debug)]
pub struct WatchConfig {
    /// The quiet period after the last change before a reload.
    pub debounce: Duration,
}

impl Default for WatchConfig {
    fn default() -> Self {
        Self {
            debounce: Duration::from_millis(250),
        }
    }
}

/// Builds a [`Runtime`].
///
/// ```no_run
/// use holdfast_plugin::{Runtime, abi::RuntimeConfig};
///
/// let runtime = Runtime::builder()
///     .config(RuntimeConfig { hot_reload_enabled: true, ..Default::default() })
///     .logger(|level, message| eprintln!("{level:?} {message}"))
///     .plugin_dir("plugins")
///     .build()?;
/// # Ok::<(), holdfast_plugin::RuntimeError>(())
/// ```
#[derive(Default)]
pub struct RuntimeBuilder {
    config: RuntimeConfig,
    loaders: Vec<Box<dyn BundleLoader>>,
    on_reload: Option<ReloadClosure>,
    logger: Option<LogClosure>,
    plugin_dirs: Vec<PathBuf>,
    watch: Option<WatchConfig>,
    reload_time_limit: Option<Duration>,
    trusted_keys: TrustedKeys,
}

impl std::fmt::Debug for RuntimeBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RuntimeBuilder")
            .field("config", &self.config)
            .field("plugin_dirs", &self.plugin_dirs)
            .field("watch", &self.watch)
            .finish_non_exhaustive()
    }
}

impl RuntimeBuilder {
    /// The default configuration, the native loader (and, with the feature
    /// `wasm`, the WASM loader with the default [`WasmConfig`](crate::WasmConfig)),
    /// no callbacks.
    pub fn new() -> Self {
        Self::default()
    }

    /// Rolls back a reload whose image swap and state migration would take
    /// longer than `limit` (counted from its `Preparing` event; checked
    /// before and after each instance is migrated). The error is
    /// `ReloadRolledBack` around `ReloadTooSlow`.
    pub fn reload_time_limit(mut self, limit: Duration) -> Self {
        self.reload_time_limit = Some(limit);
        self
    }

    /// The keys whose bundle signatures are accepted, and those refused
    /// even if trusted, under `config.signature_policy` `Warn` or `Require`
    /// (default: none). They live here rather than in the `repr(C)`,
    /// `Copy` [`RuntimeConfig`]; [`Runtime::set_trusted_keys`] replaces them
    /// later (key rotation, revocation).
    pub fn trusted_keys(mut self, keys: TrustedKeys) -> Self {
        self.trusted_keys = keys;
        self
    }

    /// Replaces the configuration.
    pub fn config(mut self, config: RuntimeConfig) -> Self {
        self.config = config;
        self
    }

    /// Adds a loader. One named `"native"` (or `"wasm"`) replaces the built-in one.
    pub fn loader(mut self, loader: impl BundleLoader) -> Self {
        self.loaders.push(Box::new(loader));
        self
    }

    /// Receives reload events (with `config.on_reload_user_data`) instead
    /// of `config.on_reload`. Runs on the thread doing the operation, inside
    /// the lifecycle lock; a panic is caught and logged.
    pub fn on_reload(mut self, callback: impl Fn(*mut c_void, ReloadPhase) + Send + Sync + 'static) -> Self {
        self.on_reload = Some(Box::new(callback));
        self
    }

    /// Receives log lines up to `config.log_level` instead of `config.log`.
    pub fn logger(mut self, logger: impl Fn(LogLevel, &str) + Send + Sync + 'static) -> Self {
        self.logger = Some(Box::new(logger));
        self
    }

    /// A directory whose bundle subdirectories are loaded at build; may be
    /// given several times.
    pub fn plugin_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.plugin_dirs.push(dir.into());
        self
    }

    /// Reloads bundles whose library changes on disk (needs hot reload).
    #[cfg(feature = "watch")]
    pub fn watch(mut self, config: WatchConfig) -> Self {
        self.watch = Some(config);
        self
    }

    /// Builds the runtime and loads the plugin directories' bundles,
    /// providers first.
    ///
    /// # Errors
    /// `DuplicateLoader`; `HotReloadDisabled` for a watcher without hot
    /// reload; `Watch` if the watcher cannot start; `Manifest`,
    /// `DependencyCycle` or any load error from a plugin directory (bundles
    /// already loaded are unloaded as the half-built runtime drops).
    pub fn build(self) -> Result<Arc<Runtime>, RuntimeError> {
        let mut loaders = self.loaders;
        let mut names = BTreeSet::new();
        for loader in &loaders {
            if !names.insert(loader.loader_name()) {
                return Err(RuntimeError::DuplicateLoader {
                    loader: loader.loader_name().to_owned(),
                });
            }
        }
        if !names.contains("native") {
            loaders.push(Box::new(NativeLoader::new()));
        }
        // The sandbox is the default for `loader = "wasm"`, as the native
        // loader is for native bundles: hosts get it without asking.
        #[cfg(feature = "wasm")]
        if !names.contains("wasm") {
            loaders.push(Box::new(crate::wasm::WasmLoader::default()));
        }
        if self.watch.is_some() && !self.config.hot_reload_enabled {
            return Err(RuntimeError::HotReloadDisabled);
        }
        let config = self.config;
        let logger = Arc::new(Logger::new(&config, self.logger));
        logger.log(
            LogLevel::Info,
            &format!("ABI version {HOLDFAST_ABI_VERSION}, layout fingerprint {ABI_FINGERPRINT:#018x}"),
        );
        let events = ReloadEvents::new(&config, self.on_reload);
        let runtime = Arc::new_cyclic(|this| Runtime {
            config,
            store: RuntimeStore::new(),
            loaders,
            lifecycle: Mutex::new(()),
            bundles: Mutex::new(BTreeMap::new()),
            revision: AtomicU64::new(0),
            operations: AtomicU64::new(0),
            instances: RwLock::new(InstanceTable::default()),
            instances_version: AtomicU64::new(0),
            retired: Mutex::new(Vec::new()),
            hosts: Mutex::new(FxHashMap::default()),
            own_host: HostTable::for_host(this.clone(), logger.clone()),
            logger,
            events,
            last_stats: Mutex::new(None),
            reload_time_limit: self.reload_time_limit,
            trusted_keys: RwLock::new(self.trusted_keys),
            #[cfg(feature = "watch")]
            watcher: Mutex::new(None),
            this: this.clone(),
        });
        #[cfg(feature = "watch")]
        if let Some(watch) = self.watch {
            runtime.start_watcher(&watch)?;
        }
        for dir in bundles_in_dependency_order(&self.plugin_dirs)? {
            runtime.load_bundle(&dir)?;
        }
        Ok(runtime)
    }
}

/// The bundle directories under `plugin_dirs`, providers before the bundles
/// that need them, ties by name (spec §6.9).
fn bundles_in_dependency_order(plugin_dirs: &[PathBuf]) -> Result<Vec<PathBuf>, RuntimeError> {
    let mut manifests: BTreeMap<String, ManifestData> = BTreeMap::new();
    for plugin_dir in plugin_dirs {
        let entries = std::fs::read_dir(plugin_dir).map_err(|error| RuntimeError::Manifest {
            path: plugin_dir.clone(),
            error: crate::error::ManifestError::Io {
                path: plugin_dir.clone(),
                message: error.to_string(),
            },
        })?;
        let mut dirs: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|entry| entry.path())
            .filter(|path| path.join(MANIFEST_FILE).is_file())
            .collect();
        dirs.sort();
        for dir in dirs {
            let manifest =
                ManifestData::from_dir(&dir).map_err(|error| RuntimeError::Manifest { path: dir, error })?;
            manifests.insert(manifest.name.clone(), manifest);
        }
    }
    // Edges: provider name -> dependent names.
    let needs: BTreeMap<&str, BTreeSet<&str>> = manifests
        .values()
        .map(|manifest| {
            let by_contract = manifest
                .dependencies
                .iter()
                .filter(|dependency| !dependency.optional)
                .flat_map(|dependency| {
                    manifests
                        .values()
                        .filter(|provider| {
                            provider.name != manifest.name && provider.provides.contains(&dependency.contract)
                        })
                        .map(|provider| provider.name.as_str())
                });
            let by_name = manifest
                .bundle_dependencies
                .iter()
                .map(String::as_str)
                .filter(|name| manifests.contains_key(*name));
            (manifest.name.as_str(), by_contract.chain(by_name).collect())
        })
        .collect();
    let mut ordered = Vec::with_capacity(manifests.len());
    let mut done: BTreeSet<&str> = BTreeSet::new();
    while done.len() < manifests.len() {
        let ready = needs.iter().find(|(name, needed)| {
            !done.contains(*name) && needed.iter().all(|needed| done.contains(needed))
        });
        match ready {
            Some((name, _)) => {
                done.insert(name);
                ordered.push(manifests[*name].dir.clone());
            }
            None => {
                return Err(RuntimeError::DependencyCycle {
                    bundles: needs
                        .keys()
                        .filter(|name| !done.contains(*name))
                        .map(|name| (*name).to_owned())
                        .collect(),
                });
            }
        }
    }
    Ok(ordered)
}
