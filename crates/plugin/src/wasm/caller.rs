//! [`WasmCaller`]: the fast path for calling one tracked WASM instance
//! repeatedly, as [`CachedContract`](crate::CachedContract) is for native
//! dispatch. It remembers what a call needs of the instance (the module, the
//! guest's id, the declared function count) and the instance table's write
//! count it read them under; while that count is unchanged, a call skips the
//! table and goes straight to the module's store.
//!
//! The count is re-read with the store locked, never before: whatever
//! migrates or destroys an instance first opens the table for writing
//! (bumping the count) and only then locks the module's store to save or
//! destroy it. So a call that finds the count unchanged under the store lock
//! runs before that save or destroy, on the instance it will carry; a call
//! that finds it changed falls back to [`Runtime::call_wasm`]'s path, which
//! reads the table. This module must never call a remembered module without
//! that check.

use std::sync::Arc;

use holdfast_plugin_abi::InstanceHandle;

use crate::error::WasmCallError;
use crate::runtime::Runtime;
use crate::wasm::dispatch::fault_in;
use crate::wasm::module::Shared;

/// Calls functions of one tracked WASM instance, remembering between calls
/// what [`Runtime::call_wasm`] looks up on each.
///
/// Results are exactly those of `call_wasm`: a call during a reload or
/// unload of the instance's bundle is refused (`BundleBusy`), a call after
/// a reload runs the new code on the migrated state, a call after the
/// instance is destroyed is `InstanceGone`. What a cached call does not do
/// is hold the instance table while it runs: the table is skipped whenever
/// nothing has opened it for writing since the caller's last call (any
/// instance created or destroyed, any bundle reloaded or unloaded, sends
/// the next call through the table once).
///
/// A caller keeps the module it last called alive, even after a reload
/// replaced it, until its next call or its drop: keep callers for
/// instances in use, not for the runtime's whole life.
///
/// ```no_run
/// # fn demo(runtime: &holdfast_plugin::Runtime, instance: holdfast_plugin::abi::InstanceHandle) {
/// let mut counter = runtime.wasm_caller(instance);
/// for amount in 1..=3u64 {
///     let outputs = counter.call(0, &amount.to_le_bytes()).expect("the counter adds");
/// #   let _ = outputs;
/// }
/// # }
/// ```
#[derive(Debug)]
pub struct WasmCaller<'rt> {
    runtime: &'rt Runtime,
    instance: InstanceHandle,
    target: Option<Target>,
}

/// What a call needs, as of instance table version `version`.
#[derive(Debug)]
struct Target {
    version: u64,
    module: Arc<Shared>,
    guest_id: i32,
    function_count: u32,
    label: Arc<str>,
    /// The bundle's host table (kept for the runtime's whole life; held
    /// here so that the caller can be sent to another thread).
    host: Arc<crate::runtime::HostTable>,
}

impl Runtime {
    /// A [`WasmCaller`] for the tracked instance `instance`; nothing is
    /// looked up until its first call.
    pub fn wasm_caller(&self, instance: InstanceHandle) -> WasmCaller<'_> {
        WasmCaller {
            runtime: self,
            instance,
            target: None,
        }
    }
}

impl WasmCaller<'_> {
    /// The instance this caller calls.
    pub fn instance(&self) -> InstanceHandle {
        self.instance
    }

    /// Calls function `function` of the instance with `input`; the outputs
    /// it emitted, in order.
    ///
    /// # Errors
    /// As [`Runtime::call_wasm`]: `InstanceGone`, `NotWasm`, `BundleBusy`,
    /// `NoSuchFunction`, or `Fault`.
    pub fn call(&mut self, function: u32, input: &[u8]) -> Result<Vec<Vec<u8>>, WasmCallError> {
        // A function past the count takes the table's path, which names the
        // first thing wrong (the instance may be gone, too).
        if let Some(target) = self
            .target
            .as_ref()
            .filter(|target| function < target.function_count)
        {
            let runtime = self.runtime;
            let unchanged = || runtime.instances_version() == target.version;
            if let Some(outcome) =
                target
                    .module
                    .call_if(unchanged, target.host.api(), target.guest_id, function, input)
            {
                return outcome.map_err(|fault| fault_in(&target.label, function, fault));
            }
        }
        self.call_through_table(function, input)
    }

    /// `call_wasm`'s path, remembering the target for the next call (a
    /// target kept from before is harmless: its version no longer matches).
    #[cold]
    fn call_through_table(&mut self, function: u32, input: &[u8]) -> Result<Vec<Vec<u8>>, WasmCallError> {
        let runtime = self.runtime;
        let instance = self.instance;
        runtime.with_tracked(instance, |tracked, busy| {
            let record = runtime.callable_record(instance, tracked, busy, function)?;
            let bundle = tracked.expect("a callable record is tracked").bundle;
            self.target = Some(Target {
                // Unchanged while the table is held for reading.
                version: runtime.instances_version(),
                module: Arc::clone(&record.module),
                guest_id: record.guest_id,
                function_count: record.function_count,
                label: Arc::clone(&record.label),
                host: runtime.table_of(bundle),
            });
            record.call(function, input)
        })
    }
}
