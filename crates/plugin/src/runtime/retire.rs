//! Retirement and reclaim of images (spec §6.8): an image a lifecycle
//! operation unpublished is retired, and closed (its fini run, then its
//! modules dropped) only once every thread that could still run its code has
//! unpinned.
//!
//! This module owns the retired list and the grace periods. It must never
//! close an image on the spot, and never run plugin code from an epoch
//! callback: the grace period only sets a flag, and the close happens in
//! `reclaim` on the caller's thread.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use holdfast_plugin_abi::LogLevel;

use super::host::HostTable;
use super::{Runtime, lock};
use crate::epoch;
use crate::loader::LoadedModule;

/// A retired image, closed once its grace period is over.
pub(crate) struct Retired {
    /// The lifecycle operation that retired it.
    operation: u64,
    modules: Vec<Box<dyn LoadedModule>>,
    host: Arc<HostTable>,
    /// Set by the epoch when every thread pinned at the time of the first
    /// reclaim after retirement has unpinned; `None` until that reclaim.
    ready: Option<Arc<AtomicBool>>,
}

impl Retired {
    fn is_ready(&self) -> bool {
        self.ready
            .as_ref()
            .is_some_and(|ready| ready.load(Ordering::Acquire))
    }

    /// Runs the modules' `before_close` as the bundle's fini, then drops
    /// (closes) them.
    ///
    /// Panic-safe: a module whose `before_close` or drop panics (a custom
    /// loader's) is logged, and every other module still gets both.
    fn close(mut self) {
        let table = &self.host;
        table.run_as_fini(|host| {
            for module in &mut self.modules {
                if catch_unwind(AssertUnwindSafe(|| module.before_close(host))).is_err() {
                    table.log_line(LogLevel::Error, "a module panicked in before_close");
                }
            }
        });
        for module in std::mem::take(&mut self.modules) {
            if catch_unwind(AssertUnwindSafe(|| drop(module))).is_err() {
                self.host
                    .log_line(LogLevel::Error, "a module panicked while being closed");
            }
        }
    }
}

impl Runtime {
    /// Closes every retired image whose grace period is over (running its
    /// fini first) and returns how many still wait. Runs after every
    /// lifecycle operation; call it to close images sooner.
    pub fn reclaim(&self) -> usize {
        self.close_retired_before(u64::MAX)
    }

    /// `reclaim`, limited to images retired by lifecycle operations before
    /// `operation`. An operation ends with this for its own number, so an
    /// image it retired stays pending until a later `reclaim` (which is what
    /// lets a host observe, and tests check, the deferred close).
    pub(super) fn close_retired_before(&self, operation: u64) -> usize {
        self.start_grace_periods(operation);
        for _ in 0..4 {
            epoch::pin().flush();
        }
        let ready: Vec<Retired> = {
            let mut retired = lock(&self.retired);
            let (ready, waiting) = std::mem::take(&mut *retired)
                .into_iter()
                .partition(|image| image.operation < operation && image.is_ready());
            *retired = waiting;
            ready
        };
        for image in ready {
            image.close();
        }
        self.pending_closes()
    }

    /// Retires modules: `reclaim` closes them once every thread pinned at
    /// its first call after now has unpinned. Call only after the
    /// publication that removed every reference to them.
    pub(super) fn retire(&self, modules: Vec<Box<dyn LoadedModule>>, host: Arc<HostTable>) {
        if modules.is_empty() {
            return;
        }
        lock(&self.retired).push(Retired {
            operation: self.operations.load(Ordering::Acquire),
            modules,
            host,
            ready: None,
        });
    }

    /// Starts the grace period of every image retired before `operation`
    /// that has none yet. Starting it here rather than at retirement is
    /// later than needed, never earlier: it also waits for threads that
    /// pinned after the image was unpublished.
    fn start_grace_periods(&self, operation: u64) {
        let mut retired = lock(&self.retired);
        let guard = epoch::pin();
        for image in retired
            .iter_mut()
            .filter(|image| image.operation < operation && image.ready.is_none())
        {
            let ready = Arc::new(AtomicBool::new(false));
            image.ready = Some(ready.clone());
            // Only a flag is set when the grace period ends: no plugin code
            // runs, and no library closes, on whichever thread collects it.
            guard.defer(move || ready.store(true, Ordering::Release));
        }
        guard.flush();
    }

    /// Closes every retired image at once (the runtime is being dropped: no
    /// thread can hold a pointer from it any more).
    pub(crate) fn close_all_retired(&self) {
        let retired = std::mem::take(&mut *lock(&self.retired));
        for image in retired {
            image.close();
        }
    }
}
