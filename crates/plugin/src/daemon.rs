//! Daemon kinds provided by plugin bundles (spec/host.md §3), behind a safe
//! API for hosts that forbid `unsafe`.
//!
//! A bundle provides the kind `counter` by registering the contract
//! `daemon.counter@1`, which follows the convention of
//! [`holdfast_plugin_abi::daemon`]: state hooks, a constructor that accepts
//! null arguments, and `process` as function 0. [`Runtime::daemon_kinds`]
//! lists what is loaded; [`Runtime::create_daemon`] and
//! [`Runtime::restore_daemon`] make a [`DaemonInstance`], which is one
//! *tracked instance* of the runtime: a hot reload of its bundle carries its
//! state into the new code through the contract's `save_state` /
//! `restore_state` (spec/plugin.md §8), keeps its [`InstanceHandle`], and
//! rolls the whole reload back if any restore fails
//! ([`RuntimeError::ReloadRolledBack`] wrapping
//! [`RuntimeError::StateMigration`], whose `instance` is
//! [`DaemonInstance::instance`]).
//!
//! Every call resolves the instance data ([`Runtime::resolve_guest_instance`])
//! and the current interface (through the store) under one epoch guard held
//! for the whole call into the plugin, so the code it runs is never closed
//! under it, and the call after a reload runs the new code.
//!
//! # The host's part of the contract
//!
//! - Calls on one `DaemonInstance` are serialized by the instance itself (a
//!   mutex held for each call), so it may be shared between threads.
//! - No call may run on any daemon of a bundle between that bundle's
//!   `Preparing` event and its `Reloaded` or `Failed` event, nor after its
//!   `Unloading` event (spec/plugin.md §7 rule 8): during that window the
//!   runtime saves, replaces and destroys the instances' data without
//!   synchronizing with callers. The runtime offers no way to detect the
//!   window, so this crate cannot enforce it: the host pauses the kind's
//!   daemons on `Preparing` and resumes them on `Reloaded` or `Failed`.
//! - The `emit` closure passed to [`DaemonInstance::process`] must not call
//!   back into the same daemon (that call would wait for itself).
//! - Plugins are trusted code (spec/plugin.md §9): a plugin that breaks the
//!   daemon convention (a constructor that needs arguments, a `process` of
//!   another signature, outputs it lies about) is not contained.
//!
//! # Limits
//!
//! An output longer than [`OutputLimits::max_output_bytes`] or beyond
//! [`OutputLimits::max_outputs`] for one event is refused (the plugin is
//! told, and the call fails with a typed error); state blobs longer than
//! `RuntimeConfig::max_state_bytes` are refused both ways; plugin messages
//! are copied up to 4 KiB.

use std::any::Any;
use std::ffi::c_void;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use holdfast_plugin_abi::daemon::{
    DAEMON_CONTRACT_PREFIX, DAEMON_MIN_FUNCTIONS, DAEMON_PROCESS_INDEX, DaemonProcessFn, DaemonSink,
};
use holdfast_plugin_abi::{
    AbiError, AbiErrorCode, BundleId, GuestContractHandle, GuestContractInstance, GuestContractInterface,
    InstanceHandle, RestoreStateFn, SaveStateFn, StateBlob, Version,
};

use crate::epoch::{self, Guard};
use crate::error::{DaemonCallError, RuntimeError};
use crate::loader::plugin_message;
use crate::manifest::ContractRef;
use crate::runtime::Runtime;

/// The default limit on one output's length (1 MiB, the node's default
/// event size).
pub const MAX_OUTPUT_BYTES: usize = 1 << 20;

/// The default limit on the number of outputs of one event.
pub const MAX_OUTPUTS_PER_EVENT: usize = 65_536;

/// Limits on what one `process` call may emit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutputLimits {
    /// The longest output accepted, in bytes.
    pub max_output_bytes: usize,
    /// The most outputs accepted for one event.
    pub max_outputs: usize,
}

impl Default for OutputLimits {
    /// [`MAX_OUTPUT_BYTES`] and [`MAX_OUTPUTS_PER_EVENT`].
    fn default() -> Self {
        Self {
            max_output_bytes: MAX_OUTPUT_BYTES,
            max_outputs: MAX_OUTPUTS_PER_EVENT,
        }
    }
}

/// One daemon kind a loaded bundle provides, as [`Runtime::daemon_kinds`]
/// lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DaemonKindInfo {
    /// The kind: `counter` for the contract `daemon.counter@1`.
    pub kind: String,
    /// The contract's registry handle.
    pub contract: GuestContractHandle,
    /// The contract version the bundle implements (its major is the
    /// contract's).
    pub version: Version,
    /// The providing bundle's name.
    pub bundle: String,
}

impl Runtime {
    /// Every `daemon.*` contract of the loaded bundles, by kind, then major
    /// (highest first), then bundle. A contract listed here may still fail
    /// the daemon convention, which [`Runtime::create_daemon`] checks.
    pub fn daemon_kinds(&self) -> Vec<DaemonKindInfo> {
        let guard = epoch::pin();
        let mut kinds = Vec::new();
        for bundle in self.bundles() {
            for (contract, handle) in &bundle.contracts {
                let Some((kind, _major)) = contract
                    .strip_prefix(DAEMON_CONTRACT_PREFIX)
                    .and_then(|rest| rest.rsplit_once('@'))
                else {
                    continue;
                };
                let Ok(interface) = self.store().resolve_pinned(*handle, &guard) else {
                    continue;
                };
                kinds.push(DaemonKindInfo {
                    kind: kind.to_owned(),
                    contract: *handle,
                    version: interface.contract_version,
                    bundle: bundle.name.clone(),
                });
            }
        }
        kinds.sort_by(|a, b| {
            (a.kind.as_str(), b.version.major, a.bundle.as_str()).cmp(&(
                b.kind.as_str(),
                a.version.major,
                b.bundle.as_str(),
            ))
        });
        kinds
    }

    /// A fresh daemon of `kind`: a tracked instance made by the kind's
    /// constructor with null arguments. `kind` is `counter` (the highest
    /// major provided) or `counter@1` (that major); when several bundles
    /// provide the contract, the earliest registered serves.
    ///
    /// # Errors
    /// `KindNotProvided`; `NotADaemonContract` (no state hooks, or no
    /// `process`); `BundleBusy` while the providing bundle is being reloaded
    /// or unloaded; `CreateFailed` when the constructor fails.
    pub fn create_daemon(self: &Arc<Self>, kind: &str) -> Result<DaemonInstance, DaemonCallError> {
        let (kind, contract, handle) = self.daemon_contract(kind)?;
        let checked = self.with_guest_contract(handle, |interface| {
            // SAFETY: the interface was resolved under the pin
            // `with_guest_contract` holds for this closure.
            unsafe { daemon_convention(interface) }
        });
        match checked {
            Ok(Ok(())) => {}
            Ok(Err(reason)) => {
                return Err(DaemonCallError::NotADaemonContract {
                    kind,
                    contract: contract.to_string(),
                    reason,
                });
            }
            Err(_) => return Err(DaemonCallError::KindNotProvided { kind }),
        }
        // SAFETY: a daemon contract's constructor accepts null arguments
        // (the daemon convention; the runtime's own state migration relies
        // on it for every stateful contract, spec/plugin.md §8).
        let created = unsafe { self.create_guest_instance(handle, std::ptr::null()) };
        let instance = created.map_err(|error| match error {
            RuntimeError::BundleBusy { bundle } => DaemonCallError::BundleBusy {
                kind: kind.clone(),
                bundle,
            },
            RuntimeError::Registry(_) => DaemonCallError::KindNotProvided { kind: kind.clone() },
            error => DaemonCallError::CreateFailed {
                kind: kind.clone(),
                error: Box::new(error),
            },
        })?;
        Ok(DaemonInstance {
            runtime: Arc::clone(self),
            kind,
            contract: handle,
            instance,
            calls: Mutex::new(()),
        })
    }

    /// A daemon of `kind` rebuilt from `state`, which contract version
    /// `from` saved: created as by [`Runtime::create_daemon`], then given
    /// the state through `restore_state`. If the restore fails, the instance
    /// is destroyed.
    ///
    /// # Errors
    /// As [`Runtime::create_daemon`]; `StateTooLarge` when `state` exceeds
    /// `max_state_bytes`; `RestoreFailed` with the plugin's code and message.
    pub fn restore_daemon(
        self: &Arc<Self>,
        kind: &str,
        from: Version,
        state: &[u8],
    ) -> Result<DaemonInstance, DaemonCallError> {
        let max = self.config().max_state_bytes;
        if state.len() as u64 > max {
            return Err(DaemonCallError::StateTooLarge {
                kind: kind.to_owned(),
                len: state.len() as u64,
                max,
            });
        }
        let daemon = self.create_daemon(kind)?;
        daemon.restore(from, state)?;
        Ok(daemon)
    }

    /// The kind's bare name, its contract and the handle that serves it.
    fn daemon_contract(
        &self,
        kind: &str,
    ) -> Result<(String, ContractRef, GuestContractHandle), DaemonCallError> {
        let not_provided = || DaemonCallError::KindNotProvided {
            kind: kind.to_owned(),
        };
        let contract: ContractRef = if kind.contains('@') {
            format!("{DAEMON_CONTRACT_PREFIX}{kind}")
                .parse()
                .map_err(|_| not_provided())?
        } else {
            let major = self
                .daemon_kinds()
                .iter()
                .filter(|info| info.kind == kind)
                .map(|info| info.version.major)
                .max()
                .ok_or_else(not_provided)?;
            ContractRef {
                name: format!("{DAEMON_CONTRACT_PREFIX}{kind}"),
                major,
            }
        };
        let handle = self
            .find_guest_contract(contract.id().id(), 0)
            .map_err(|_| not_provided())?;
        let bare = contract.name[DAEMON_CONTRACT_PREFIX.len()..].to_owned();
        Ok((bare, contract, handle))
    }
}

/// One daemon: a tracked instance of a daemon kind's contract. Dropping it
/// destroys the instance.
///
/// `Send + Sync`; calls on one instance are serialized. See the [module
/// documentation](self) for what the host must not do during a reload.
pub struct DaemonInstance {
    runtime: Arc<Runtime>,
    kind: String,
    contract: GuestContractHandle,
    instance: InstanceHandle,
    /// Held for every call into the plugin: the daemon's data is not
    /// synchronized by the plugin.
    calls: Mutex<()>,
}

const _: () = {
    const fn send_and_sync<T: Send + Sync>() {}
    send_and_sync::<DaemonInstance>();
};

impl std::fmt::Debug for DaemonInstance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DaemonInstance")
            .field("kind", &self.kind)
            .field("contract", &self.contract)
            .field("instance", &self.instance)
            .finish_non_exhaustive()
    }
}

impl Drop for DaemonInstance {
    /// Destroys the instance with its current code. An instance already
    /// gone (its bundle unloaded, its kind dropped by a reload) needs
    /// nothing; one whose bundle is busy (dropped against the contract
    /// during a reload) stays tracked until its bundle is unloaded.
    fn drop(&mut self) {
        let _ = self.runtime.destroy_guest_instance(self.instance);
    }
}

/// What one call runs against, resolved under one guard.
struct Target<'g> {
    bundle: BundleId,
    interface: &'g GuestContractInterface,
    instance: GuestContractInstance,
}

impl DaemonInstance {
    /// The kind (`counter`).
    pub fn kind(&self) -> &str {
        &self.kind
    }

    /// The tracked instance's handle: what
    /// [`RuntimeError::StateMigration`] names when this daemon's state
    /// failed to migrate.
    pub fn instance(&self) -> InstanceHandle {
        self.instance
    }

    /// The kind's contract handle.
    pub fn contract(&self) -> GuestContractHandle {
        self.contract
    }

    /// The contract version of the code that backs the daemon now (it
    /// changes with a reload).
    ///
    /// # Errors
    /// `InstanceGone` or `KindGone`.
    pub fn version(&self) -> Result<Version, DaemonCallError> {
        let guard = epoch::pin();
        self.target(&guard)
            .map(|target| target.interface.contract_version)
    }

    /// Handles one event, passing each output to `emit` in order, with the
    /// default [`OutputLimits`].
    ///
    /// # Errors
    /// As [`DaemonInstance::process_with_limits`].
    pub fn process(&self, event: &[u8], emit: &mut dyn FnMut(&[u8])) -> Result<(), DaemonCallError> {
        self.process_with_limits(event, OutputLimits::default(), emit)
    }

    /// Handles one event, passing each output to `emit` in order (the
    /// bytes are borrowed for the call of `emit`). On an error, outputs
    /// already passed to `emit` belong to the failed event, and the daemon
    /// may have changed: the caller decides what to keep. A panic in `emit`
    /// is carried past the plugin and resumed here.
    ///
    /// # Errors
    /// `InstanceGone`, `KindGone`, `NotADaemonContract`; `OutputTooLarge`,
    /// `TooManyOutputs` or `MalformedOutput` when an output broke the limits
    /// (the plugin was told, and every later output of the call was
    /// refused); `ProcessFailed` with the plugin's code and message.
    pub fn process_with_limits(
        &self,
        event: &[u8],
        limits: OutputLimits,
        emit: &mut dyn FnMut(&[u8]),
    ) -> Result<(), DaemonCallError> {
        let _call = self.lock_calls();
        let guard = epoch::pin();
        let target = self.target(&guard)?;
        #[cfg(feature = "wasm")]
        if crate::wasm::dispatch::is_wasm_interface(target.interface) {
            drop(guard);
            return self.process_wasm(event, limits, emit);
        }
        // SAFETY: the interface was resolved under `guard`, held until the
        // call below returns.
        let process = unsafe { process_fn(target.interface) }
            .ok_or_else(|| self.not_a_daemon("its function table has no `process`"))?;
        let mut sink_state = SinkState {
            emit,
            limits,
            accepted: 0,
            refusal: None,
            panic: None,
        };
        let sink = DaemonSink {
            ctx: (&raw mut sink_state).cast(),
            emit: emit_output,
        };
        // SAFETY: `process` belongs to the interface the instance's data was
        // made by (the host does not call during a reload of its bundle, per
        // the module contract), its image is mapped while `guard` lives; the
        // event is borrowed for the call; the sink and its state outlive the
        // call and are used only by this thread during it; calls on this
        // instance are serialized by `_call`.
        let status = unsafe { process(target.instance.data, event.as_ptr(), event.len(), &sink) };
        // SAFETY: the message is valid until the next call into the plugin,
        // and this is the first thing done after the call.
        let message = (!status.is_ok()).then(|| unsafe { plugin_message(status.message) });
        if let Some(panic) = sink_state.panic.take() {
            resume_unwind(panic);
        }
        if let Some(refusal) = sink_state.refusal {
            let kind = self.kind.clone();
            return Err(match refusal {
                Refusal::TooLarge { len } => DaemonCallError::OutputTooLarge {
                    kind,
                    len,
                    max: limits.max_output_bytes,
                },
                Refusal::TooMany => DaemonCallError::TooManyOutputs {
                    kind,
                    max: limits.max_outputs,
                },
                Refusal::Malformed => DaemonCallError::MalformedOutput { kind },
            });
        }
        match message {
            None => Ok(()),
            Some(message) => Err(DaemonCallError::ProcessFailed {
                kind: self.kind.clone(),
                code: status.code,
                message,
            }),
        }
    }

    /// The daemon's state blob, from its `save_state`, copied out of the
    /// plugin's allocation (which is then freed).
    ///
    /// # Errors
    /// `InstanceGone`, `KindGone`, `NotADaemonContract`; `SaveFailed` with
    /// the plugin's code and message; `StateTooLarge` over
    /// `max_state_bytes`; `MalformedState` for a non-null blob of length 0
    /// (or a null one with a length).
    pub fn save(&self) -> Result<Vec<u8>, DaemonCallError> {
        let _call = self.lock_calls();
        let guard = epoch::pin();
        let target = self.target(&guard)?;
        // SAFETY: resolved under `guard`, held until the hook returns.
        let (save, _) = unsafe { state_hooks(target.interface) }
            .ok_or_else(|| self.not_a_daemon("it has no state hooks"))?;
        let host = self.runtime.table_of(target.bundle);
        let mut blob = StateBlob::empty();
        // SAFETY: the hook belongs to the interface that made the instance,
        // mapped while `guard` lives; `host` is the bundle's table; `blob`
        // is a live out-parameter; calls are serialized by `_call`.
        let status = unsafe { save(host.api(), target.instance, &mut blob) };
        if !status.is_ok() {
            return Err(DaemonCallError::SaveFailed {
                kind: self.kind.clone(),
                code: status.code,
                // SAFETY: valid until the next call into the plugin.
                message: unsafe { plugin_message(status.message) },
            });
        }
        let max = self.runtime.config().max_state_bytes;
        let copied = if blob.ptr.is_null() {
            if blob.len == 0 { Ok(Vec::new()) } else { Err(None) }
        } else if blob.len == 0 || blob.len > isize::MAX as usize {
            Err(None)
        } else if blob.len as u64 > max {
            Err(Some(blob.len as u64))
        } else {
            // SAFETY: a non-null blob from the host's `alloc(len, 1)`:
            // `len` (≤ isize::MAX) readable bytes, freed only below.
            Ok(unsafe { std::slice::from_raw_parts(blob.ptr, blob.len) }.to_vec())
        };
        if !blob.ptr.is_null() && blob.len > 0 {
            host.free_blob(blob);
        }
        copied.map_err(|too_large| match too_large {
            Some(len) => DaemonCallError::StateTooLarge {
                kind: self.kind.clone(),
                len,
                max,
            },
            None => DaemonCallError::MalformedState {
                kind: self.kind.clone(),
            },
        })
    }

    /// Gives a fresh instance `state` through `restore_state`.
    fn restore(&self, from: Version, state: &[u8]) -> Result<(), DaemonCallError> {
        let _call = self.lock_calls();
        let guard = epoch::pin();
        let target = self.target(&guard)?;
        // SAFETY: resolved under `guard`, held until the hook returns.
        let (_, restore) = unsafe { state_hooks(target.interface) }
            .ok_or_else(|| self.not_a_daemon("it has no state hooks"))?;
        let host = self.runtime.table_of(target.bundle);
        // The plugin gets a private copy: `StateBlob` is a mutable view.
        let mut copy = state.to_vec();
        let blob = if copy.is_empty() {
            StateBlob::empty()
        } else {
            StateBlob {
                ptr: copy.as_mut_ptr(),
                len: copy.len(),
            }
        };
        // SAFETY: the hook belongs to the interface that made the instance,
        // mapped while `guard` lives; the blob is lent for the call and
        // freed by us (the host), never by the plugin.
        let status = unsafe { restore(host.api(), target.instance, from, blob) };
        if status.is_ok() {
            return Ok(());
        }
        Err(DaemonCallError::RestoreFailed {
            kind: self.kind.clone(),
            from,
            code: status.code,
            // SAFETY: valid until the next call into the plugin (the
            // instance is destroyed only after this copy).
            message: unsafe { plugin_message(status.message) },
        })
    }

    /// `process` of a WASM kind: function 0 through
    /// [`Runtime::call_wasm`] (which refuses a call during a reload of the
    /// bundle), its outputs then checked against `limits` and passed on.
    #[cfg(feature = "wasm")]
    fn process_wasm(
        &self,
        event: &[u8],
        limits: OutputLimits,
        emit: &mut dyn FnMut(&[u8]),
    ) -> Result<(), DaemonCallError> {
        use crate::error::WasmCallError;
        let kind = || self.kind.clone();
        let outputs = self
            .runtime
            .call_wasm(self.instance, DAEMON_PROCESS_INDEX, event)
            .map_err(|error| match error {
                WasmCallError::InstanceGone { instance } => DaemonCallError::InstanceGone {
                    kind: kind(),
                    instance,
                },
                WasmCallError::BundleBusy { bundle } => DaemonCallError::BundleBusy { kind: kind(), bundle },
                WasmCallError::Fault { fault, .. } => DaemonCallError::Fault { kind: kind(), fault },
                WasmCallError::NotWasm { .. } | WasmCallError::NoSuchFunction { .. } => {
                    self.not_a_daemon("it declares no `process` function")
                }
            })?;
        if outputs.len() > limits.max_outputs {
            return Err(DaemonCallError::TooManyOutputs {
                kind: kind(),
                max: limits.max_outputs,
            });
        }
        if let Some(output) = outputs
            .iter()
            .find(|output| output.len() > limits.max_output_bytes)
        {
            return Err(DaemonCallError::OutputTooLarge {
                kind: kind(),
                len: output.len(),
                max: limits.max_output_bytes,
            });
        }
        for output in &outputs {
            emit(output);
        }
        Ok(())
    }

    fn lock_calls(&self) -> MutexGuard<'_, ()> {
        // The mutex guards no data; a panic resumed from `emit` poisons it
        // without leaving anything half-done.
        self.calls.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The instance's data and the interface that serves it now.
    fn target<'g>(&self, guard: &'g Guard) -> Result<Target<'g>, DaemonCallError> {
        let instance = self.runtime.resolve_guest_instance(self.instance).map_err(|_| {
            DaemonCallError::InstanceGone {
                kind: self.kind.clone(),
                instance: self.instance,
            }
        })?;
        let gone = || DaemonCallError::KindGone {
            kind: self.kind.clone(),
        };
        let provider = self
            .runtime
            .store()
            .provider(self.contract, guard)
            .map_err(|_| gone())?;
        if provider.interface.contract_id != instance.contract_id {
            return Err(gone());
        }
        Ok(Target {
            bundle: provider.bundle_id,
            interface: &provider.interface,
            instance,
        })
    }

    fn not_a_daemon(&self, reason: &'static str) -> DaemonCallError {
        DaemonCallError::NotADaemonContract {
            kind: self.kind.clone(),
            contract: format!("{DAEMON_CONTRACT_PREFIX}{}", self.kind),
            reason,
        }
    }
}

/// Whether `interface` follows the daemon convention; why not otherwise.
///
/// # Safety
/// `interface` must have been resolved under a guard the caller still holds.
unsafe fn daemon_convention(interface: &GuestContractInterface) -> Result<(), &'static str> {
    #[cfg(feature = "wasm")]
    if crate::wasm::dispatch::is_wasm_interface(interface) {
        // A WASM kind's `process` is function 0 of `hf_call`.
        if crate::wasm::dispatch::function_count(interface).unwrap_or(0) < DAEMON_MIN_FUNCTIONS {
            return Err("it declares no `process` function");
        }
        // SAFETY: as below.
        return match unsafe { state_hooks(interface) } {
            Some(_) => Ok(()),
            None => Err("it has no state hooks"),
        };
    }
    // SAFETY: the caller's guard keeps the image and its tables mapped.
    if unsafe { process_fn(interface) }.is_none() {
        return Err("its function table has no `process`");
    }
    // SAFETY: as above.
    if unsafe { state_hooks(interface) }.is_none() {
        return Err("it has no state hooks");
    }
    Ok(())
}

/// Function [`DAEMON_PROCESS_INDEX`], if the table has at least
/// [`DAEMON_MIN_FUNCTIONS`] entries.
///
/// # Safety
/// As [`daemon_convention`].
unsafe fn process_fn(interface: &GuestContractInterface) -> Option<DaemonProcessFn> {
    // SAFETY: registration checked the table (count, non-null entries); the
    // caller's guard keeps it mapped.
    let functions = unsafe { interface.native_functions() }?;
    if functions.len() < DAEMON_MIN_FUNCTIONS as usize {
        return None;
    }
    let process = *functions.get(DAEMON_PROCESS_INDEX as usize)?;
    if process.is_null() {
        return None;
    }
    // SAFETY: a non-null function pointer; the daemon convention gives
    // function 0 this signature (the ABI cannot check it, spec §9).
    Some(unsafe { std::mem::transmute::<*const (), DaemonProcessFn>(process) })
}

/// A plugin's `StateHooks`, read with nullable functions (spec §3.1 rule 3).
#[repr(C)]
struct RawStateHooks {
    save_state: Option<SaveStateFn>,
    restore_state: Option<RestoreStateFn>,
}

const _: () = assert!(size_of::<RawStateHooks>() == size_of::<holdfast_plugin_abi::StateHooks>());

/// Both state hooks, or `None` when the interface has none (or a null one).
///
/// # Safety
/// As [`daemon_convention`].
unsafe fn state_hooks(interface: &GuestContractInterface) -> Option<(SaveStateFn, RestoreStateFn)> {
    // SAFETY: `state` is null or points to hooks in the image's static
    // memory (checked aligned at registration), mapped under the caller's
    // guard; the mirror type reads null functions as `None`.
    let hooks = unsafe { interface.state.cast::<RawStateHooks>().as_ref() }?;
    Some((hooks.save_state?, hooks.restore_state?))
}

/// Why the sink refused an output; every later output of the call is
/// refused too.
#[derive(Clone, Copy, Debug)]
enum Refusal {
    TooLarge { len: usize },
    TooMany,
    Malformed,
}

/// What the sink's `ctx` points to during one `process` call.
struct SinkState<'a> {
    emit: &'a mut dyn FnMut(&[u8]),
    limits: OutputLimits,
    accepted: usize,
    refusal: Option<Refusal>,
    panic: Option<Box<dyn Any + Send>>,
}

impl SinkState<'_> {
    /// Checks one output against the limits and hands it to `emit`; never
    /// unwinds (a panic in `emit` is kept and resumed after the call).
    ///
    /// # Safety
    /// A non-null `payload` must be readable for `len` bytes for the call.
    unsafe fn accept(&mut self, payload: *const u8, len: usize) -> AbiError {
        if self.refusal.is_some() || self.panic.is_some() {
            return AbiError::new(AbiErrorCode::InvalidArgument, "an earlier output was refused");
        }
        if len > self.limits.max_output_bytes {
            self.refusal = Some(Refusal::TooLarge { len });
            return AbiError::new(
                AbiErrorCode::InvalidArgument,
                "the output exceeds the host's limit",
            );
        }
        if self.accepted >= self.limits.max_outputs {
            self.refusal = Some(Refusal::TooMany);
            return AbiError::new(AbiErrorCode::InvalidArgument, "too many outputs for one event");
        }
        if (payload.is_null() && len != 0) || len > isize::MAX as usize {
            self.refusal = Some(Refusal::Malformed);
            return AbiError::new(
                AbiErrorCode::InvalidArgument,
                "a null output with a non-zero length",
            );
        }
        let bytes = if len == 0 {
            &[][..]
        } else {
            // SAFETY: non-null, at most isize::MAX, and the caller
            // guarantees `len` readable bytes for the call.
            unsafe { std::slice::from_raw_parts(payload, len) }
        };
        match catch_unwind(AssertUnwindSafe(|| (self.emit)(bytes))) {
            Ok(()) => {
                self.accepted += 1;
                AbiError::ok()
            }
            Err(panic) => {
                self.panic = Some(panic);
                AbiError::new(AbiErrorCode::Internal, "the host's output handler panicked")
            }
        }
    }
}

/// The sink's `emit`.
///
/// # Safety
/// `ctx` is the `SinkState` of the `process` call in progress on this
/// thread; `payload` is readable for `len` bytes (the daemon convention).
unsafe extern "C" fn emit_output(ctx: *mut c_void, payload: *const u8, len: usize) -> AbiError {
    // SAFETY: `process_with_limits` passes its own `SinkState` as `ctx` and
    // does not touch it until the plugin's call returns; the plugin calls
    // the sink on that thread only, one output at a time.
    let state = unsafe { &mut *ctx.cast::<SinkState<'_>>() };
    // SAFETY: the plugin lends `len` readable bytes at `payload`.
    unsafe { state.accept(payload, len) }
}
