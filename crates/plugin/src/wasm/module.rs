//! One instantiated module: its store (behind a mutex: a store runs one
//! call at a time), its typed exports, and the calls the guest ABI defines,
//! each run under a fresh fuel budget with the memory limiter armed.
//!
//! Every call returns `Result<_, WasmFault>`: nothing a module does can
//! panic or unwind here. This module never calls a guest export without
//! `Shared::enter`, which sets the budget and clears the last call's reply.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use holdfast_plugin_abi::{HostApi, StringView, Version};
use wasmtime::{Engine, Store, TypedFunc};

use crate::error::{LoaderError, WasmFault};
use crate::loader::LoadedModule;
use crate::wasm::WasmConfig;
use crate::wasm::guest_abi::{self, Declared};
use crate::wasm::sandbox::{self, HostState};

/// The guest ABI's exports, typed.
struct Exports {
    abi_version: TypedFunc<(), i32>,
    alloc: TypedFunc<i32, i32>,
    init: TypedFunc<(), i32>,
    create: TypedFunc<i32, i32>,
    destroy: TypedFunc<i32, ()>,
    call: TypedFunc<(i32, i32, i32, i32), i32>,
    save: TypedFunc<i32, i32>,
    restore: TypedFunc<(i32, i32, i32, i32, i32, i32), i32>,
}

/// The store and what lives in it.
struct Inner {
    store: Store<HostState>,
    exports: Exports,
    /// A buffer in guest memory the host reuses for input: (pointer, size).
    input: (u32, u32),
}

/// A module shared by its registry interfaces (through `loader_data`), its
/// instances and the [`WasmModule`] the runtime owns.
pub struct Shared {
    bundle: String,
    config: WasmConfig,
    inner: Mutex<Inner>,
    /// The constructor slots of its contracts, freed when it is dropped.
    slots: Mutex<Vec<usize>>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        let slots = self.slots.get_mut().unwrap_or_else(PoisonError::into_inner);
        for &slot in slots.iter() {
            crate::wasm::dispatch::release_slot(slot);
        }
    }
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("bundle", &self.bundle)
            .finish_non_exhaustive()
    }
}

impl Shared {
    /// Instantiates `module` in a fresh store with the sandbox's limits (its
    /// start function, if any, runs under the fuel budget).
    ///
    /// # Errors
    /// `WasmFault` (stage `"instantiate"`) for a fault in the start function
    /// or a refused memory; `InvalidWasm` when the linker refuses an import's
    /// type; `MissingExport` should the typed exports not match (checked
    /// before, so only on a wasmtime disagreement).
    pub(crate) fn instantiate(
        bundle: &str,
        engine: &Engine,
        module: &wasmtime::Module,
        config: WasmConfig,
    ) -> Result<Arc<Self>, LoaderError> {
        let invalid = |error: wasmtime::Error| LoaderError::InvalidWasm {
            bundle: bundle.to_owned(),
            message: format!("{error:#}"),
        };
        let linker = guest_abi::linker(engine).map_err(invalid)?;
        let mut store = Store::new(engine, HostState::new(config));
        store.limiter(|state| state);
        store.set_fuel(config.fuel_per_call).map_err(invalid)?;
        store.data_mut().begin();
        let instance = match linker.instantiate(&mut store, module) {
            Ok(instance) => instance,
            Err(error) => {
                let recorded = store.data_mut().take_fault();
                let is_trap = error.downcast_ref::<wasmtime::Trap>().is_some();
                if recorded.is_none() && !is_trap {
                    return Err(invalid(error));
                }
                return Err(LoaderError::WasmFault {
                    bundle: bundle.to_owned(),
                    stage: "instantiate",
                    fault: sandbox::classify(&error, recorded, config.fuel_per_call),
                });
            }
        };
        let missing = |name, expected| LoaderError::MissingExport {
            bundle: bundle.to_owned(),
            name,
            expected,
        };
        let memory = instance
            .get_memory(&mut store, "memory")
            .ok_or_else(|| missing("memory", "a memory"))?;
        store.data_mut().set_memory(memory);
        macro_rules! typed {
            ($name:literal, $params:ty, $results:ty, $spelled:literal) => {
                instance
                    .get_typed_func::<$params, $results>(&mut store, $name)
                    .map_err(|_| missing($name, $spelled))?
            };
        }
        let exports = Exports {
            abi_version: typed!("hf_abi_version", (), i32, "func() -> i32"),
            alloc: typed!("hf_alloc", i32, i32, "func(i32) -> i32"),
            init: typed!("hf_init", (), i32, "func() -> i32"),
            create: typed!("hf_create", i32, i32, "func(i32) -> i32"),
            destroy: typed!("hf_destroy", i32, (), "func(i32)"),
            call: typed!(
                "hf_call",
                (i32, i32, i32, i32),
                i32,
                "func(i32, i32, i32, i32) -> i32"
            ),
            save: typed!("hf_save", i32, i32, "func(i32) -> i32"),
            restore: typed!(
                "hf_restore",
                (i32, i32, i32, i32, i32, i32),
                i32,
                "func(i32, i32, i32, i32, i32, i32) -> i32"
            ),
        };
        // The start function ran with no bundle table to log to yet.
        drop(store.data_mut().take_logs());
        Ok(Arc::new(Self {
            bundle: bundle.to_owned(),
            config,
            inner: Mutex::new(Inner {
                store,
                exports,
                input: (0, 0),
            }),
            slots: Mutex::new(Vec::new()),
        }))
    }

    /// Remembers a constructor slot to free when the module is gone.
    pub(crate) fn keep_slot(&self, slot: usize) {
        self.slots
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(slot);
    }

    /// The store, for one call.
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic cannot leave the store half-changed in a way a later call
        // would trust: every call starts by resetting what it reads.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `body` as one call into the module: a fresh fuel budget, an
    /// empty reply, `host` reachable by the `log` import; what `body`
    /// returned and the outputs emitted, or the fault classified if it
    /// failed.
    fn enter<R>(
        &self,
        host: *const HostApi,
        body: impl FnOnce(&mut Inner) -> wasmtime::Result<R>,
    ) -> Result<(R, Vec<Vec<u8>>), WasmFault> {
        self.enter_locked(self.lock(), host, body)
    }

    /// [`Self::enter`] with the store already locked by the caller.
    fn enter_locked<R>(
        &self,
        mut inner: MutexGuard<'_, Inner>,
        host: *const HostApi,
        body: impl FnOnce(&mut Inner) -> wasmtime::Result<R>,
    ) -> Result<(R, Vec<Vec<u8>>), WasmFault> {
        let budget = self.config.fuel_per_call;
        if let Err(error) = inner.store.set_fuel(budget) {
            return Err(WasmFault::Trap {
                reason: format!("{error:#}"),
            });
        }
        inner.store.data_mut().begin();
        let outcome = body(&mut inner);
        let state = inner.store.data_mut();
        let recorded = state.take_fault();
        let outputs = state.take_outputs();
        let logs = state.take_logs();
        drop(inner);
        if !logs.is_empty() {
            deliver_logs(host, logs);
        }
        match outcome {
            Ok(value) => Ok((value, outputs)),
            Err(error) => Err(sandbox::classify(&error, recorded, budget)),
        }
    }

    /// `hf_abi_version()`.
    pub(crate) fn abi_version(&self, host: *const HostApi) -> Result<i32, WasmFault> {
        self.enter(host, |inner| inner.exports.abi_version.call(&mut inner.store, ()))
            .map(|(version, _)| version)
    }

    /// `hf_init()`, with `register` allowed; the contracts it declared.
    pub(crate) fn init(&self, host: *const HostApi) -> Result<Vec<Declared>, WasmFault> {
        let (declared, _) = self.enter(host, |inner| {
            inner.store.data_mut().start_declaring();
            let status = inner.exports.init.call(&mut inner.store, ());
            let declared = inner.store.data_mut().finish_declaring();
            inner.judge(status?)?;
            Ok(declared)
        })?;
        Ok(declared)
    }

    /// `hf_create(contract)`: the guest's instance id (never 0).
    pub(crate) fn create(&self, host: *const HostApi, contract: u32) -> Result<i32, WasmFault> {
        let (id, _) = self.enter(host, |inner| {
            inner.exports.create.call(&mut inner.store, contract as i32)
        })?;
        if id == 0 {
            return Err(WasmFault::Protocol {
                reason: format!("hf_create({contract}) returned 0"),
            });
        }
        Ok(id)
    }

    /// `hf_destroy(instance)`; a fault is logged by the caller, nothing else
    /// can be done about it.
    pub(crate) fn destroy(&self, host: *const HostApi, instance: i32) -> Result<(), WasmFault> {
        self.enter(host, |inner| {
            inner.exports.destroy.call(&mut inner.store, instance)
        })
        .map(drop)
    }

    /// `hf_call(instance, function, input)`: the outputs emitted.
    pub(crate) fn call(
        &self,
        host: *const HostApi,
        instance: i32,
        function: u32,
        input: &[u8],
    ) -> Result<Vec<Vec<u8>>, WasmFault> {
        self.call_locked(self.lock(), host, instance, function, input)
    }

    /// [`Self::call`] if `still_current()`, asked with the store locked,
    /// says yes; `None`, without calling, if it says no.
    ///
    /// The answer holds for the whole call: whatever migrates or destroys
    /// an instance of this module takes the store lock after it changed
    /// what `still_current` reads, so it waits for a call that found it
    /// unchanged, and a call that starts after it sees the change.
    pub(crate) fn call_if(
        &self,
        still_current: impl FnOnce() -> bool,
        host: *const HostApi,
        instance: i32,
        function: u32,
        input: &[u8],
    ) -> Option<Result<Vec<Vec<u8>>, WasmFault>> {
        let inner = self.lock();
        if !still_current() {
            return None;
        }
        Some(self.call_locked(inner, host, instance, function, input))
    }

    fn call_locked(
        &self,
        inner: MutexGuard<'_, Inner>,
        host: *const HostApi,
        instance: i32,
        function: u32,
        input: &[u8],
    ) -> Result<Vec<Vec<u8>>, WasmFault> {
        let ((), outputs) = self.enter_locked(inner, host, |inner| {
            let (ptr, len) = inner.lend(input)?;
            let status = inner
                .exports
                .call
                .call(&mut inner.store, (instance, function as i32, ptr, len))?;
            inner.judge(status)
        })?;
        Ok(outputs)
    }

    /// `hf_save(instance)`: the state (empty when nothing was emitted).
    pub(crate) fn save(&self, host: *const HostApi, instance: i32) -> Result<Vec<u8>, WasmFault> {
        let ((), mut outputs) = self.enter(host, |inner| {
            let status = inner.exports.save.call(&mut inner.store, instance)?;
            inner.judge(status)
        })?;
        match outputs.len() {
            0 => Ok(Vec::new()),
            1 => Ok(outputs.pop().expect("one output is there")),
            count => Err(WasmFault::Protocol {
                reason: format!("hf_save emitted {count} blobs; the state is at most one"),
            }),
        }
    }

    /// `hf_restore(instance, from, state)`.
    pub(crate) fn restore(
        &self,
        host: *const HostApi,
        instance: i32,
        from: Version,
        state: &[u8],
    ) -> Result<(), WasmFault> {
        self.enter(host, |inner| {
            let (ptr, len) = inner.lend(state)?;
            let args = (
                instance,
                from.major as i32,
                from.minor as i32,
                from.patch as i32,
                ptr,
                len,
            );
            let status = inner.exports.restore.call(&mut inner.store, args)?;
            inner.judge(status)
        })
        .map(drop)
    }
}

impl Inner {
    /// A status export's result: `Ok` for 0; else the guest's code and the
    /// message it gave during this call, recorded as the call's fault (which
    /// `Shared::enter` reports) and returned as the error that ends it.
    // One plain `Result` rather than a fault nested in the call's result:
    // the nested one was written in pieces and read back whole, which
    // stalled every call.
    fn judge(&mut self, status: i32) -> wasmtime::Result<()> {
        if status == 0 {
            return Ok(());
        }
        let message = self.store.data_mut().take_message();
        Err(self.fail(WasmFault::Guest {
            code: status as u32,
            message,
        }))
    }

    /// Copies `bytes` into the reused input buffer (grown through
    /// `hf_alloc` when too small); the pointer and length to pass.
    // Always inlined: returned through memory, the pair was written as two
    // 4-byte stores and read back as one 8-byte load, which stalled every
    // call.
    #[inline(always)]
    fn lend(&mut self, bytes: &[u8]) -> wasmtime::Result<(i32, i32)> {
        if bytes.is_empty() {
            return Ok((0, 0));
        }
        let len = u32::try_from(bytes.len()).map_err(|_| {
            self.protocol(format!(
                "{} bytes of input do not fit a 32-bit memory",
                bytes.len()
            ))
        })?;
        if len > self.input.1 {
            let size = len.max(self.input.1.saturating_mul(2)).max(256);
            let ptr = self.exports.alloc.call(&mut self.store, size as i32)? as u32;
            if ptr == 0 {
                return Err(self.protocol(format!("hf_alloc({size}) returned 0")));
            }
            self.input = (ptr, size);
        }
        let memory = self
            .store
            .data()
            .memory()
            .expect("set at instantiation, before any call");
        let ptr = self.input.0;
        if memory.write(&mut self.store, ptr as usize, bytes).is_err() {
            self.input = (0, 0);
            return Err(self.protocol(format!(
                "hf_alloc returned {ptr}, which with {len} bytes lies outside the memory"
            )));
        }
        Ok((ptr as i32, len as i32))
    }

    /// Records a protocol fault and returns the error that ends the call.
    fn protocol(&mut self, reason: String) -> wasmtime::Error {
        self.fail(WasmFault::Protocol { reason })
    }

    /// Records `fault` as the call's (unless one was recorded first) and
    /// returns the error that ends the call.
    fn fail(&mut self, fault: WasmFault) -> wasmtime::Error {
        let error = wasmtime::Error::msg(fault.to_string());
        self.store.data_mut().set_fault(fault);
        error
    }
}

/// What the runtime adopts for a WASM bundle: it keeps the module (and the
/// constructor slots its interfaces use) until the grace period is over.
pub struct WasmModule {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for WasmModule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WasmModule")
            .field("bundle", &self.shared.bundle)
            .finish()
    }
}

impl WasmModule {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }
}

impl LoadedModule for WasmModule {}

/// Hands the module's log lines to the bundle's table, after the call and
/// with the store unlocked.
fn deliver_logs(host: *const HostApi, logs: Vec<(u32, String)>) {
    if host.is_null() {
        return;
    }
    for (level, message) in logs {
        // SAFETY: `host` is the bundle's table, which the caller of the
        // call into the module lent for it and which outlives every image
        // of its bundle; the view borrows `message` for the call.
        unsafe { ((*host).log)(host, level, StringView::borrowed(&message)) };
    }
}
