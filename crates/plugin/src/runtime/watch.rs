//! The file watcher (feature `watch`, spec §6.10): one notify watcher behind
//! notify-debouncer-mini, and one thread that turns each debounced batch
//! into reloads. The thread holds only a `Weak<Runtime>`, and a batch
//! counts only for a loaded bundle's library, manifest or signature file
//! (`bundle.sig`) whose library's length or modification time changed since
//! its last load or reload. The signature file counts so that a new library
//! refused under `SignaturePolicy::Require` (its signature not written yet)
//! is retried when its signature arrives. A bundle whose watched reload
//! failed is not retried until its library, manifest or signature file
//! changes again: the failed attempt's own reads of those files raise
//! events too (inotify reports opens), which would otherwise retry it every
//! debounce period for as long as it stays broken.
//!
//! This module never reloads anything itself: it calls
//! `Runtime::reload_bundle_by_id`, so a watched reload is an ordinary
//! reload with its events and its rollback.

use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, channel};
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;

use holdfast_plugin_abi::{BundleId, LogLevel};
use notify_debouncer_mini::notify::{RecommendedWatcher, RecursiveMode};
use notify_debouncer_mini::{DebounceEventResult, Debouncer, new_debouncer};
use rustc_hash::FxHashMap;

use super::builder::WatchConfig;
use super::lifecycle::{LibraryStamp, library_stamp};
use super::{Runtime, lock};
use crate::error::RuntimeError;

/// The running watcher of one runtime.
pub(crate) struct Watcher {
    /// Dropped first: that ends the notify thread and closes the channel,
    /// which ends `thread`.
    debouncer: Option<Debouncer<RecommendedWatcher>>,
    /// Watched directories, with how many loaded bundles live in each.
    watched: FxHashMap<PathBuf, usize>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Watcher {
    fn drop(&mut self) {
        drop(self.debouncer.take());
        if let Some(thread) = self.thread.take() {
            // The runtime may be dropped by the watcher thread itself (it
            // held the last strong reference for a moment): never join it
            // from there.
            if thread.thread().id() != std::thread::current().id() {
                let _ = thread.join();
            }
        }
    }
}

impl Runtime {
    /// Starts the watcher thread.
    pub(crate) fn start_watcher(&self, config: &WatchConfig) -> Result<(), RuntimeError> {
        let (sender, receiver) = channel();
        let debouncer = new_debouncer(config.debounce, sender).map_err(|error| RuntimeError::Watch {
            message: error.to_string(),
        })?;
        let runtime = self.this.clone();
        let thread = std::thread::Builder::new()
            .name("holdfast-plugin-watch".into())
            .spawn(move || watch_loop(&runtime, &receiver))
            .map_err(|error| RuntimeError::Watch {
                message: error.to_string(),
            })?;
        *lock(&self.watcher) = Some(Watcher {
            debouncer: Some(debouncer),
            watched: FxHashMap::default(),
            thread: Some(thread),
        });
        Ok(())
    }

    /// Stops the watcher (dropping the runtime does this).
    pub(crate) fn stop_watcher(&self) {
        let watcher = lock(&self.watcher).take();
        drop(watcher);
    }

    /// Watches a bundle directory (non-recursively) if a watcher runs.
    pub(crate) fn watch_dir(&self, dir: &Path) {
        let mut guard = lock(&self.watcher);
        let Some(watcher) = guard.as_mut() else {
            return;
        };
        let count = watcher.watched.entry(dir.to_path_buf()).or_default();
        *count += 1;
        if *count == 1
            && let Some(debouncer) = watcher.debouncer.as_mut()
            && let Err(error) = debouncer.watcher().watch(dir, RecursiveMode::NonRecursive)
        {
            self.logger.log(
                LogLevel::Warn,
                &format!("cannot watch {}: {error}", dir.display()),
            );
        }
    }

    /// Stops watching a directory no loaded bundle lives in any more.
    pub(crate) fn unwatch_dir(&self, dir: &Path) {
        let mut guard = lock(&self.watcher);
        let Some(watcher) = guard.as_mut() else {
            return;
        };
        let Some(count) = watcher.watched.get_mut(dir) else {
            return;
        };
        *count -= 1;
        if *count == 0 {
            watcher.watched.remove(dir);
            if let Some(debouncer) = watcher.debouncer.as_mut() {
                let _ = debouncer.watcher().unwatch(dir);
            }
        }
    }

    /// The loaded bundles a changed path belongs to whose library changed
    /// since it was last loaded.
    fn changed_bundles(&self, paths: &[PathBuf]) -> Vec<BundleId> {
        let bundles = lock(&self.bundles);
        bundles
            .iter()
            .filter(|(_, bundle)| {
                let files = bundle.manifest.bundle_files();
                let touched = paths
                    .iter()
                    .any(|path| files.iter().any(|file| same_file(path, file)));
                touched && library_stamp(&bundle.manifest.library_path()) != bundle.stamp
            })
            .map(|(&id, _)| id)
            .collect()
    }
}

/// Whether a watcher event's path names `file`. Events carry the watched
/// directory as given (canonical), but a platform may report another
/// spelling of it, so the parent is compared canonicalized as a fallback.
fn same_file(event: &Path, file: &Path) -> bool {
    if event == file {
        return true;
    }
    let same_name = event.file_name() == file.file_name();
    let canonical_parent = event.parent().and_then(|parent| parent.canonicalize().ok());
    same_name && canonical_parent.as_deref() == file.parent()
}

/// The length and modification time of a bundle's library, manifest and
/// signature file, as they were when a watched reload of it failed.
type FailedStamps = [Option<LibraryStamp>; 3];

fn bundle_stamps(runtime: &Runtime, bundle: BundleId) -> Option<FailedStamps> {
    let bundles = lock(&runtime.bundles);
    let files = bundles.get(&bundle)?.manifest.bundle_files();
    Some(files.map(|file| library_stamp(&file)))
}

/// The watcher thread: one batch of debounced events at a time.
fn watch_loop(runtime: &Weak<Runtime>, events: &Receiver<DebounceEventResult>) {
    let mut failed: FxHashMap<BundleId, FailedStamps> = FxHashMap::default();
    while let Ok(batch) = events.recv() {
        let Some(runtime) = runtime.upgrade() else {
            return;
        };
        match batch {
            Ok(events) => {
                let paths: Vec<PathBuf> = events.into_iter().map(|event| event.path).collect();
                for bundle in runtime.changed_bundles(&paths) {
                    let stamps = bundle_stamps(&runtime, bundle);
                    if stamps.is_some() && failed.get(&bundle) == stamps.as_ref() {
                        continue;
                    }
                    match runtime.reload_bundle_by_id(bundle) {
                        Ok(()) => {
                            failed.remove(&bundle);
                        }
                        Err(error) => {
                            runtime.logger.log(
                                LogLevel::Warn,
                                &format!("watched reload of {bundle} failed: {error}"),
                            );
                            if let Some(stamps) = stamps {
                                failed.insert(bundle, stamps);
                            }
                        }
                    }
                }
                runtime.reclaim();
            }
            Err(error) => runtime
                .logger
                .log(LogLevel::Warn, &format!("file watcher error: {error}")),
        }
        drop::<Arc<Runtime>>(runtime);
    }
}
