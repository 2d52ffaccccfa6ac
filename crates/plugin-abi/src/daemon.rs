//! Daemon kinds: the `daemon.<kind>` contract convention (spec/host.md §3).
//!
//! A bundle provides a daemon *kind* by registering a contract named
//! `daemon.<kind>` (`daemon.counter@1`). Such a contract
//!
//! - has state hooks ([`StateHooks`]): `save_state` is the daemon's snapshot
//!   and `restore_state(from_version, blob)` rebuilds a daemon from a
//!   snapshot written by contract version `from_version`, so one state format
//!   per kind serves a hot reload, a restart and a move alike;
//! - accepts null `args` in `create_instance` (a fresh daemon, as at
//!   genesis; the runtime migrates with null arguments too);
//! - has at least [`DAEMON_MIN_FUNCTIONS`] functions; function
//!   [`DAEMON_PROCESS_INDEX`] is a [`DaemonProcessFn`], which handles one
//!   event and hands each output payload to the host through a
//!   [`DaemonSink`].
//!
//! Kinds are versioned by the contract's `major.minor`: a minor version may
//! only append functions, and new code converts old state in `restore`.
//!
//! These types are part of the daemon contract's convention, like any
//! contract's function signatures (spec/plugin.md §3.4): the loader never
//! reads them, so they are not in the layout table. Their layouts are
//! asserted here and in the C header, and changing them bumps
//! `HOLDFAST_ABI_VERSION`.
//!
//! # Writing a kind in Rust
//!
//! Implement [`Daemon`] and export it with [`export_daemon!`](crate::export_daemon)
//! (then register it from your init with [`register_daemon`]) or, for a
//! bundle with one kind, [`export_daemon_plugin!`](crate::export_daemon_plugin),
//! which also exports the plugin symbols. The generated functions catch
//! every panic and return it as an `Internal` error: no unwinding crosses
//! the boundary (a plugin built with `panic = "abort"` aborts instead).
//!
//! ```
//! use holdfast_plugin_abi::daemon::{Daemon, DaemonFailure, Outputs};
//! use holdfast_plugin_abi::{AbiErrorCode, Version};
//!
//! /// Counts events; each output is the new count (8 bytes, little-endian).
//! struct Counter {
//!     count: u64,
//! }
//!
//! impl Daemon for Counter {
//!     fn new() -> Self {
//!         Self { count: 0 }
//!     }
//!
//!     fn process(&mut self, _event: &[u8], out: &mut Outputs<'_>) -> Result<(), DaemonFailure> {
//!         self.count += 1;
//!         out.emit(&self.count.to_le_bytes())
//!     }
//!
//!     fn save(&self) -> Vec<u8> {
//!         self.count.to_le_bytes().to_vec()
//!     }
//!
//!     fn restore(from: Version, state: &[u8]) -> Result<Self, DaemonFailure> {
//!         let bytes: [u8; 8] = state
//!             .try_into()
//!             .map_err(|_| DaemonFailure::new(AbiErrorCode::StateError, "a counter state is 8 bytes"))?;
//!         if from.major != 1 {
//!             return Err(DaemonFailure::new(AbiErrorCode::StateError, "unknown state version"));
//!         }
//!         Ok(Self { count: u64::from_le_bytes(bytes) })
//!     }
//! }
//!
//! holdfast_plugin_abi::export_daemon_plugin!(
//!     Counter,
//!     name = "daemon.counter",
//!     major = 1,
//!     version = (1, 0, 0),
//!     provider = "counter",
//! );
//!
//! fn main() {
//!     // A daemon can be exercised without a host:
//!     let mut counter = Counter::new();
//!     let (result, outputs) = Outputs::capture(|out| counter.process(b"event", out));
//!     assert_eq!(result, Ok(()));
//!     assert_eq!(outputs, [1u64.to_le_bytes().to_vec()]);
//! }
//! ```
//!
//! The bundle's manifest provides `daemon.counter@1` with a function count
//! of 1 (docs/PLUGINS.md).
//!
//! # Rules for daemon code
//!
//! A daemon must be deterministic in (state, event): the node replays
//! journaled events after a crash and compares the outputs. `save` must not
//! change the daemon. A failed `process` may have changed the daemon (the
//! node decides what to do with it); a panic is reported like a failure.

use alloc::borrow::Cow;
use alloc::string::String;
use alloc::vec::Vec;
use core::ffi::c_void;

#[cfg(doc)]
use crate::guest::StateHooks;
use crate::guest::{GuestContractHandle, GuestContractInterface, PluginDescriptor};
use crate::host::HostApi;
use crate::types::{AbiError, AbiErrorCode, StringView, Version};

/// Every daemon contract's name starts with this (`daemon.counter`).
pub const DAEMON_CONTRACT_PREFIX: &str = "daemon.";

/// The index of `process` ([`DaemonProcessFn`]) in a daemon contract's
/// function table.
pub const DAEMON_PROCESS_INDEX: u32 = 0;

/// The fewest functions a daemon contract's table may have.
pub const DAEMON_MIN_FUNCTIONS: u32 = 1;

/// Hands one output payload to the host. The host copies the `len` bytes at
/// `payload` before returning; a non-ok result means the host refused the
/// output (too large, too many), and the daemon should stop and return an
/// error.
pub type DaemonEmitFn = unsafe extern "C" fn(ctx: *mut c_void, payload: *const u8, len: usize) -> AbiError;

/// Where a daemon's outputs go during one `process` call.
///
/// The plugin calls `emit(ctx, payload, len)` once per output, in order, on
/// the thread running `process` and only until `process` returns: the sink
/// and its `ctx` are valid for that call only.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct DaemonSink {
    /// The host's context, passed back to `emit` unchanged.
    pub ctx: *mut c_void,
    /// Takes one output.
    pub emit: DaemonEmitFn,
}

/// Function [`DAEMON_PROCESS_INDEX`] of a daemon contract: handles one
/// event (`event_len` bytes at `event`, borrowed for the call; null only
/// when `event_len` is 0) for the instance whose data is `data`, passing
/// each output to `sink`. A non-ok result means the event failed; its
/// message stays valid until the host's next call into the plugin.
pub type DaemonProcessFn = unsafe extern "C" fn(
    data: *mut c_void,
    event: *const u8,
    event_len: usize,
    sink: *const DaemonSink,
) -> AbiError;

/// Whether `name` is a daemon contract name: [`DAEMON_CONTRACT_PREFIX`]
/// followed by a non-empty kind.
pub const fn is_daemon_contract_name(name: &str) -> bool {
    let name = name.as_bytes();
    let prefix = DAEMON_CONTRACT_PREFIX.as_bytes();
    if name.len() <= prefix.len() {
        return false;
    }
    let mut i = 0;
    while i < prefix.len() {
        if name[i] != prefix[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// A daemon kind written in Rust; export it with
/// [`export_daemon!`](crate::export_daemon) (see the [module
/// documentation](self) for an example).
pub trait Daemon: Sized + 'static {
    /// A fresh daemon, as at genesis.
    fn new() -> Self;

    /// Handles one event, passing each output to `out` in order.
    ///
    /// # Errors
    /// Why the event failed (the node reports it; it may keep or discard the
    /// outputs already emitted and the change made to the daemon).
    fn process(&mut self, event: &[u8], out: &mut Outputs<'_>) -> Result<(), DaemonFailure>;

    /// The daemon's state blob; must not change the daemon.
    fn save(&self) -> Vec<u8>;

    /// A daemon rebuilt from `state`, which contract version `from` saved
    /// (an older version's format, this one's, or a newer minor's when a
    /// reload goes back).
    ///
    /// # Errors
    /// Why the state cannot be used; during a reload this rolls the whole
    /// reload back.
    fn restore(from: Version, state: &[u8]) -> Result<Self, DaemonFailure>;
}

/// Why a daemon refused an event or a state: a code (an [`AbiErrorCode`]
/// value or the plugin's own, never 0) and a message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DaemonFailure {
    code: u32,
    message: Cow<'static, str>,
}

impl DaemonFailure {
    /// A failure with a known code and a static message.
    pub const fn new(code: AbiErrorCode, message: &'static str) -> Self {
        Self::with_code(code as u32, message)
    }

    /// A failure with a raw code (0, which means success, becomes
    /// `Internal`) and a static message.
    pub const fn with_code(code: u32, message: &'static str) -> Self {
        Self {
            code: if code == 0 {
                AbiErrorCode::Internal as u32
            } else {
                code
            },
            message: Cow::Borrowed(message),
        }
    }

    /// A failure with a known code and a message built at run time.
    pub fn owned(code: AbiErrorCode, message: String) -> Self {
        Self {
            code: if code == AbiErrorCode::Ok {
                AbiErrorCode::Internal as u32
            } else {
                code as u32
            },
            message: Cow::Owned(message),
        }
    }

    /// The raw code (never 0).
    pub fn code(&self) -> u32 {
        self.code
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl core::fmt::Display for DaemonFailure {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "code {}: {}", self.code, self.message)
    }
}

impl core::error::Error for DaemonFailure {}

/// The outputs of one `process` call: each [`Outputs::emit`] hands one
/// payload to the host, which copies it.
pub struct Outputs<'a> {
    sink: &'a DaemonSink,
    emitted: usize,
}

impl core::fmt::Debug for Outputs<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Outputs")
            .field("emitted", &self.emitted)
            .finish_non_exhaustive()
    }
}

impl<'a> Outputs<'a> {
    /// Outputs that go to `sink`.
    ///
    /// # Safety
    /// `sink.emit` must be safe to call with `sink.ctx` and any payload for
    /// as long as the returned value lives (the host's sink is, during the
    /// `process` call it was passed to).
    pub unsafe fn new(sink: &'a DaemonSink) -> Self {
        Self { sink, emitted: 0 }
    }

    /// Hands `payload` to the host.
    ///
    /// # Errors
    /// The host refused the output (too large, too many); return the error
    /// from `process`.
    pub fn emit(&mut self, payload: &[u8]) -> Result<(), DaemonFailure> {
        // SAFETY: `new`'s contract: the sink may be called while `self`
        // lives; the payload is borrowed for the call and copied by the host.
        let status = unsafe { (self.sink.emit)(self.sink.ctx, payload.as_ptr(), payload.len()) };
        if status.is_ok() {
            self.emitted += 1;
            Ok(())
        } else {
            Err(DaemonFailure::with_code(
                status.code,
                "the host refused an output",
            ))
        }
    }

    /// How many outputs the host has accepted so far.
    pub fn emitted(&self) -> usize {
        self.emitted
    }

    /// Runs `f` with outputs collected in memory, and returns its result and
    /// the outputs: for testing a [`Daemon`] without a host.
    pub fn capture<R>(f: impl FnOnce(&mut Outputs<'_>) -> R) -> (R, Vec<Vec<u8>>) {
        unsafe extern "C" fn collect(ctx: *mut c_void, payload: *const u8, len: usize) -> AbiError {
            // SAFETY: `ctx` is the vector `capture` lent for this call, and
            // the payload is `len` readable bytes (a slice's pointer).
            unsafe {
                let outputs = &mut *ctx.cast::<Vec<Vec<u8>>>();
                outputs.push(core::slice::from_raw_parts(payload, len).to_vec());
            }
            AbiError::ok()
        }
        let mut outputs: Vec<Vec<u8>> = Vec::new();
        let sink = DaemonSink {
            ctx: (&raw mut outputs).cast(),
            emit: collect,
        };
        let result = {
            // SAFETY: `collect` only pushes to `outputs`, which outlives
            // `out`; nothing else touches `outputs` until `f` has returned.
            let mut out = unsafe { Outputs::new(&sink) };
            f(&mut out)
        };
        (result, outputs)
    }
}

/// Registers the daemon kind `T` exported with
/// [`export_daemon!`](crate::export_daemon): call it from your init.
///
/// # Errors
/// The host's refusal (`NotInInit`, `Undeclared` when the manifest does not
/// provide the contract, `AlreadyRegistered`, …).
///
/// # Safety
/// `host` must be the table the runtime passed to this bundle's init, and
/// the call made during that init.
pub unsafe fn register_daemon<T: ExportedDaemon>(host: &HostApi) -> Result<GuestContractHandle, AbiError> {
    let interface = T::interface();
    let descriptor = PluginDescriptor {
        name: StringView::from_static_str(T::PROVIDER),
        contract_name: StringView::from_static_str(T::CONTRACT_NAME),
        version: interface.contract_version,
    };
    // SAFETY: the caller vouches for the table and the init scope; the
    // interface and its tables are statics of this image.
    unsafe { host.register(&descriptor, interface) }
}

/// A [`Daemon`] exported by [`export_daemon!`](crate::export_daemon), with
/// its contract's static interface.
///
/// # Safety
/// Implemented only by the macro: `interface()` must be a daemon interface
/// whose functions and hooks treat instance data as made by its own
/// `create_instance`.
pub unsafe trait ExportedDaemon: Daemon {
    /// The contract name (`daemon.counter`).
    const CONTRACT_NAME: &'static str;
    /// The provider's name, for the descriptor.
    const PROVIDER: &'static str;
    /// The interface registered for the contract.
    fn interface() -> &'static GuestContractInterface;
}

/// The glue [`export_daemon!`](crate::export_daemon) expands to: the
/// extern functions' bodies without the panic catching (which needs `std`,
/// and so lives in the macro). Not for direct use.
#[doc(hidden)]
pub mod glue {
    use alloc::borrow::Cow;
    use alloc::boxed::Box;
    use alloc::string::String;
    use core::ffi::c_void;

    use super::{Daemon, DaemonFailure, DaemonSink, Outputs};
    use crate::guest::{GuestContractInstance, StateBlob};
    use crate::host::HostApi;
    use crate::ids::GuestContractId;
    use crate::types::{AbiError, AbiErrorCode, StringView, Version};

    /// What a process panic comes back as.
    pub const PROCESS_PANICKED: AbiError = AbiError::new(AbiErrorCode::Internal, "daemon process panicked");
    /// What a save panic comes back as.
    pub const SAVE_PANICKED: AbiError = AbiError::new(AbiErrorCode::Internal, "daemon save panicked");
    /// What a restore panic comes back as.
    pub const RESTORE_PANICKED: AbiError = AbiError::new(AbiErrorCode::Internal, "daemon restore panicked");

    /// A table of native functions in static memory.
    pub struct FunctionTable<const N: usize>(pub [*const (); N]);

    // SAFETY: the table holds function addresses, which are immutable.
    unsafe impl<const N: usize> Sync for FunctionTable<N> {}

    /// The instance data: the daemon and the buffer its last failure's
    /// message is kept in (valid until the host's next call, as the ABI
    /// asks).
    struct DaemonCell<T> {
        daemon: T,
        message: String,
    }

    impl<T> DaemonCell<T> {
        fn fail(&mut self, failure: DaemonFailure) -> AbiError {
            let message = match failure.message {
                Cow::Borrowed(message) => StringView::from_static_str(message),
                Cow::Owned(message) => {
                    self.message = message;
                    StringView::borrowed(&self.message)
                }
            };
            AbiError {
                code: failure.code,
                message,
            }
        }
    }

    const fn invalid(message: &'static str) -> AbiError {
        AbiError::new(AbiErrorCode::InvalidArgument, message)
    }

    /// The bytes of a pointer and length the host passed; `None` when the
    /// pointer is null but the length is not 0.
    ///
    /// # Safety
    /// A non-null `ptr` must be valid for reads of `len` bytes for `'a`.
    unsafe fn bytes<'a>(ptr: *const u8, len: usize) -> Option<&'a [u8]> {
        if ptr.is_null() || len == 0 {
            return (len == 0).then_some(&[]);
        }
        // SAFETY: non-null, and the caller guarantees `len` readable bytes.
        Some(unsafe { core::slice::from_raw_parts(ptr, len) })
    }

    /// `create_instance`: a fresh daemon.
    pub fn create<T: Daemon>(contract_id: GuestContractId) -> GuestContractInstance {
        let cell = Box::new(DaemonCell {
            daemon: T::new(),
            message: String::new(),
        });
        GuestContractInstance {
            data: Box::into_raw(cell).cast(),
            contract_id,
        }
    }

    /// What `create_instance` returns when `T::new` panicked: no data, and
    /// an ID that is neither the contract's nor 0, so the runtime reports
    /// `InstanceCreateFailed`.
    pub const fn failed_instance(contract_id: GuestContractId) -> GuestContractInstance {
        let id = contract_id.id();
        GuestContractInstance {
            data: core::ptr::null_mut(),
            contract_id: GuestContractId::from_u64(if id <= 1 { id + 2 } else { id ^ 1 }),
        }
    }

    /// `destroy_instance`.
    ///
    /// # Safety
    /// `instance` was made by [`create`] with the same `T` (or is null) and
    /// is destroyed once.
    pub unsafe fn destroy<T: Daemon>(instance: GuestContractInstance) {
        if !instance.data.is_null() {
            // SAFETY: made by `Box::into_raw` in `create::<T>`, freed once.
            drop(unsafe { Box::from_raw(instance.data.cast::<DaemonCell<T>>()) });
        }
    }

    /// Function 0, `process`.
    ///
    /// # Safety
    /// `data` was made by [`create`] with the same `T` and is not used
    /// elsewhere during the call; `event` is valid for `event_len` bytes;
    /// `sink` is a valid sink for the call.
    pub unsafe fn process<T: Daemon>(
        data: *mut c_void,
        event: *const u8,
        event_len: usize,
        sink: *const DaemonSink,
    ) -> AbiError {
        if data.is_null() || sink.is_null() {
            return invalid("process needs an instance and a sink");
        }
        // SAFETY: the caller guarantees the event bytes.
        let Some(event) = (unsafe { bytes(event, event_len) }) else {
            return invalid("a null event with a non-zero length");
        };
        // SAFETY: `data` is this instance's cell, exclusively ours for the
        // call; the sink is valid for the call, which `out` does not outlive.
        let (cell, mut out) = unsafe { (&mut *data.cast::<DaemonCell<T>>(), Outputs::new(&*sink)) };
        match cell.daemon.process(event, &mut out) {
            Ok(()) => AbiError::ok(),
            Err(failure) => cell.fail(failure),
        }
    }

    /// `save_state`.
    ///
    /// # Safety
    /// `host` is the runtime's table; `instance` was made by [`create`] with
    /// the same `T`; `out` is writable.
    pub unsafe fn save<T: Daemon>(
        host: *const HostApi,
        instance: GuestContractInstance,
        out: *mut StateBlob,
    ) -> AbiError {
        if host.is_null() || instance.data.is_null() || out.is_null() {
            return invalid("save_state needs a host, an instance and an out-parameter");
        }
        // SAFETY: the caller guarantees all three.
        let (host, cell) = unsafe { (&*host, &*instance.data.cast::<DaemonCell<T>>()) };
        let state = cell.daemon.save();
        // SAFETY: `host` is the runtime's table.
        match unsafe { host.alloc_state(&state) } {
            Ok(blob) => {
                // SAFETY: the caller guarantees `out` is writable.
                unsafe { out.write(blob) };
                AbiError::ok()
            }
            Err(error) => error,
        }
    }

    /// `restore_state`: replaces the fresh daemon with the restored one.
    ///
    /// # Safety
    /// `instance` was made by [`create`] with the same `T`; `state` is
    /// readable for the call.
    pub unsafe fn restore<T: Daemon>(
        instance: GuestContractInstance,
        from: Version,
        state: StateBlob,
    ) -> AbiError {
        if instance.data.is_null() {
            return invalid("restore_state needs an instance");
        }
        // SAFETY: the caller guarantees the state bytes for the call.
        let Some(state) = (unsafe { bytes(state.ptr.cast_const(), state.len) }) else {
            return invalid("a null state with a non-zero length");
        };
        // SAFETY: the instance's cell, not used elsewhere during the call.
        let cell = unsafe { &mut *instance.data.cast::<DaemonCell<T>>() };
        match T::restore(from, state) {
            Ok(daemon) => {
                cell.daemon = daemon;
                AbiError::ok()
            }
            Err(failure) => cell.fail(failure),
        }
    }
}

/// Exports a [`Daemon`] as a daemon kind: defines its `create_instance`,
/// `destroy_instance`, `process`, `save_state` and `restore_state` (each
/// catching panics: a panic in `process`, `save` or `restore` comes back
/// as `Internal` with "daemon process panicked", "daemon save panicked" or
/// "daemon restore panicked"; in `new`, as a failed creation), the static
/// interface with state hooks, and implements
/// [`ExportedDaemon`](crate::daemon::ExportedDaemon) so that init can
/// call [`register_daemon::<T>`](crate::daemon::register_daemon).
///
/// ```text
/// export_daemon!(Type, name = "daemon.kind", [major = M,] version = (M, m, p), provider = "text");
/// ```
///
/// `name` must start with `daemon.`; the contract is `name@M`, at contract
/// version `M.m.p`; `major`, if given, must equal `M` (checked at compile
/// time). Needs `std` (for `catch_unwind`).
#[macro_export]
macro_rules! export_daemon {
    (
        $daemon:ty,
        name = $name:expr,
        $(major = $major:expr,)?
        version = ($vmajor:expr, $vminor:expr, $vpatch:expr),
        provider = $provider:expr $(,)?
    ) => {
        const _: () = {
            const CONTRACT_NAME: &str = $name;
            const VERSION: $crate::Version = $crate::Version::new($vmajor, $vminor, $vpatch);
            const CONTRACT_ID: $crate::GuestContractId = $crate::GuestContractId::new(CONTRACT_NAME, VERSION.major);
            const _: () = ::core::assert!(
                $crate::daemon::is_daemon_contract_name(CONTRACT_NAME),
                "a daemon contract's name is `daemon.` followed by the kind"
            );
            $(const _: () = ::core::assert!(
                $major == VERSION.major,
                "`major` must equal the major of `version`"
            );)?

            unsafe extern "C" fn create(
                _host: *const $crate::HostApi,
                _args: *const (),
            ) -> $crate::GuestContractInstance {
                ::std::panic::catch_unwind(|| $crate::daemon::glue::create::<$daemon>(CONTRACT_ID))
                    .unwrap_or($crate::daemon::glue::failed_instance(CONTRACT_ID))
            }

            unsafe extern "C" fn destroy(_host: *const $crate::HostApi, instance: $crate::GuestContractInstance) {
                // SAFETY: the runtime destroys an instance this interface
                // made, once.
                let _ = ::std::panic::catch_unwind(::std::panic::AssertUnwindSafe(|| unsafe {
                    $crate::daemon::glue::destroy::<$daemon>(instance)
                }));
            }

            unsafe extern "C" fn process(
                data: *mut ::core::ffi::c_void,
                event: *const u8,
                event_len: usize,
                sink: *const $crate::daemon::DaemonSink,
            ) -> $crate::AbiError {
                // SAFETY: the host calls `process` with an instance of this
                // interface, the event bytes and a sink valid for the call.
                ::std::panic::catch_unwind(::std::panic::AssertUnwindSafe(|| unsafe {
                    $crate::daemon::glue::process::<$daemon>(data, event, event_len, sink)
                }))
                .unwrap_or($crate::daemon::glue::PROCESS_PANICKED)
            }

            unsafe extern "C" fn save(
                host: *const $crate::HostApi,
                instance: $crate::GuestContractInstance,
                out: *mut $crate::StateBlob,
            ) -> $crate::AbiError {
                // SAFETY: the runtime passes its table, an instance of this
                // interface and a writable out-parameter.
                ::std::panic::catch_unwind(::std::panic::AssertUnwindSafe(|| unsafe {
                    $crate::daemon::glue::save::<$daemon>(host, instance, out)
                }))
                .unwrap_or($crate::daemon::glue::SAVE_PANICKED)
            }

            unsafe extern "C" fn restore(
                _host: *const $crate::HostApi,
                instance: $crate::GuestContractInstance,
                from: $crate::Version,
                state: $crate::StateBlob,
            ) -> $crate::AbiError {
                // SAFETY: the runtime passes a fresh instance of this
                // interface and lends the state for the call.
                ::std::panic::catch_unwind(::std::panic::AssertUnwindSafe(|| unsafe {
                    $crate::daemon::glue::restore::<$daemon>(instance, from, state)
                }))
                .unwrap_or($crate::daemon::glue::RESTORE_PANICKED)
            }

            static FUNCTIONS: $crate::daemon::glue::FunctionTable<1> =
                $crate::daemon::glue::FunctionTable([process as *const ()]);
            static HOOKS: $crate::StateHooks = $crate::StateHooks {
                save_state: save,
                restore_state: restore,
            };
            static INTERFACE: $crate::GuestContractInterface = $crate::GuestContractInterface::native(
                CONTRACT_ID,
                VERSION,
                create,
                destroy,
                FUNCTIONS.0.as_ptr(),
                $crate::daemon::DAEMON_MIN_FUNCTIONS,
            )
            .with_state(&HOOKS);

            // SAFETY: the interface above is a daemon interface whose
            // functions all treat instance data as `create::<$daemon>` made it.
            unsafe impl $crate::daemon::ExportedDaemon for $daemon {
                const CONTRACT_NAME: &'static str = CONTRACT_NAME;
                const PROVIDER: &'static str = $provider;
                fn interface() -> &'static $crate::GuestContractInterface {
                    &INTERFACE
                }
            }
        };
    };
}

/// [`export_daemon!`](crate::export_daemon) for a bundle that provides
/// this one kind and nothing else: also exports the plugin symbols
/// ([`export_plugin!`](crate::export_plugin)) with an init that registers
/// the kind. Same arguments as [`export_daemon!`](crate::export_daemon).
#[macro_export]
macro_rules! export_daemon_plugin {
    ($daemon:ty, $($arguments:tt)*) => {
        $crate::export_daemon!($daemon, $($arguments)*);

        const _: () = {
            fn init(
                host: &$crate::HostApi,
                _ctx: &$crate::BundleInitContext,
            ) -> ::core::result::Result<(), $crate::AbiError> {
                // SAFETY: `export_plugin!` calls this from the bundle's init
                // with the table the runtime passed.
                unsafe { $crate::daemon::register_daemon::<$daemon>(host) }.map(|_| ())
            }
            $crate::export_plugin!(init = init);
        };
    };
}
