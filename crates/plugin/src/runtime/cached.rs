//! [`CachedContract`]: the fast path for calling one contract repeatedly. It
//! remembers the interface it resolved and the registry version it resolved
//! it in; while that version is still the current one, `get` returns the
//! remembered interface after one atomic load and one comparison.

use holdfast_plugin_abi::{GuestContractHandle, GuestContractInterface};

use super::Runtime;
use crate::epoch::Guard;
use crate::error::RegistryError;

/// A handle with its last resolution cached (spec §7 rule 7).
///
/// ```no_run
/// # fn demo(runtime: &holdfast_plugin::Runtime, handle: holdfast_plugin::abi::GuestContractHandle) {
/// use holdfast_plugin::{CachedContract, epoch};
///
/// let mut contract = CachedContract::new(runtime, handle);
/// let guard = epoch::pin();
/// for _ in 0..1024 {
///     let interface = contract.get(&guard).expect("the contract is loaded");
///     // call through interface.dispatch ...
/// #   let _ = interface;
/// }
/// # }
/// ```
pub struct CachedContract<'rt> {
    runtime: &'rt Runtime,
    handle: GuestContractHandle,
    /// The registry version `interface` was resolved in; `u64::MAX` (which
    /// the registry never reaches) until the first resolve.
    version: u64,
    interface: *const GuestContractInterface,
    /// The collector the store defers on, looked up once here rather than
    /// through its lazily initialised global on every `get`.
    collector: &'static crate::epoch::Collector,
}

impl std::fmt::Debug for CachedContract<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CachedContract")
            .field("handle", &self.handle)
            .finish_non_exhaustive()
    }
}

impl<'rt> CachedContract<'rt> {
    /// A cache for `handle`; nothing is resolved until the first `get`.
    pub fn new(runtime: &'rt Runtime, handle: GuestContractHandle) -> Self {
        Self {
            runtime,
            handle,
            version: u64::MAX,
            interface: std::ptr::null(),
            collector: crate::epoch::default_collector(),
        }
    }

    /// The handle this cache resolves.
    pub fn handle(&self) -> GuestContractHandle {
        self.handle
    }

    /// The current interface, valid as long as `guard`, which must be
    /// pinned on the default collector (`holdfast_plugin::epoch::pin()`).
    ///
    /// # Errors
    /// `ForeignGuard` for a guard of another collector (or an unprotected
    /// one); otherwise `InvalidHandle`, `StaleHandle` or `SlotVacant`, as a
    /// fresh resolve.
    #[inline]
    pub fn get<'g>(&mut self, guard: &'g Guard) -> Result<&'g GuestContractInterface, RegistryError> {
        // Checked on the fast path too: only a guard of the collector the
        // store defers on keeps the cached interface's snapshot alive.
        if guard.collector() != Some(self.collector) {
            return Err(RegistryError::ForeignGuard);
        }
        if self.version == self.runtime.store().version() {
            // SAFETY: the version matched, so `interface` was resolved (it
            // is non-null). Versions are never reused, and the store
            // publishes a version before deferring the snapshot it replaced;
            // so the snapshot this pointer was resolved in is current or was
            // replaced after `guard` was pinned, and is not freed while
            // `guard` (checked above to be of the default collector, which
            // the store defers on) lives.
            return Ok(unsafe { &*self.interface });
        }
        self.resolve(guard)
    }

    #[cold]
    fn resolve<'g>(&mut self, guard: &'g Guard) -> Result<&'g GuestContractInterface, RegistryError> {
        let (version, resolved) = self.runtime.store().resolve_versioned(self.handle, guard);
        let interface = resolved?;
        self.version = version;
        self.interface = interface;
        Ok(interface)
    }
}
