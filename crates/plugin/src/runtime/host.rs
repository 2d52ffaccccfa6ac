//! The `HostApi` tables the runtime hands to plugins (spec §3.5): one per
//! bundle, created at its first load and kept until the runtime drops (so a
//! table outlives every image of its bundle), plus the host's own table.
//!
//! This module owns the tables and the `extern "C"` functions behind them.
//! Everything a plugin passes in is untrusted: pointers are checked for null
//! and alignment, strings for UTF-8 and length, and no panic crosses the
//! boundary (each function catches and answers `Internal`). What
//! `register_guest_contract` is given is validated and staged by
//! `registration`; nothing here publishes.

use std::cell::{Cell, RefCell};
use std::ffi::c_void;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError, RwLock, Weak};

use holdfast_plugin_abi::{
    AbiError, AbiErrorCode, BundleId, BundleInfo, GuestContractHandle, GuestContractInstance,
    GuestContractInterface, HOLDFAST_ABI_VERSION, HostApi, InstanceHandle, LogLevel, PluginDescriptor,
    StringView,
};
use rustc_hash::FxHashSet;

use super::Runtime;
use super::events::Logger;
use super::registration::{Refusal, Staging, declared_contracts, stage_registration};
use crate::epoch::{self, Guard};
use crate::error::RuntimeError;
use crate::manifest::ManifestData;

/// Largest alignment `alloc` accepts.
const MAX_ALIGN: usize = 4096;

thread_local! {
    /// The last error message per table on this thread (keyed by address).
    static LAST_ERRORS: RefCell<Vec<(usize, Box<str>)>> = const { RefCell::new(Vec::new()) };
    /// Guards pushed by `pin`, popped by `unpin`.
    static PINS: RefCell<Vec<Guard>> = const { RefCell::new(Vec::new()) };
    /// The table whose bundle's fini runs on this thread (0: none).
    static IN_FINI: Cell<usize> = const { Cell::new(0) };
}

/// What a bundle's table knows of its bundle.
#[derive(Debug)]
pub(crate) struct BundleScope {
    name: String,
    /// Contracts the bundle may look up: provided or declared dependencies.
    declared: RwLock<FxHashSet<u64>>,
    staging: Mutex<Option<Staging>>,
}

/// A `HostApi` with what its functions need. `api.context` points to the
/// table itself; tables live in an `Arc` and never move.
#[repr(C)]
pub(crate) struct HostTable {
    api: HostApi,
    runtime: Weak<Runtime>,
    logger: Arc<Logger>,
    bundle: Option<BundleScope>,
}

impl std::fmt::Debug for HostTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostTable")
            .field("bundle", &self.bundle)
            .finish_non_exhaustive()
    }
}

impl HostTable {
    /// The host's own table: no bundle, no lookup restriction.
    pub(crate) fn for_host(runtime: Weak<Runtime>, logger: Arc<Logger>) -> Arc<Self> {
        Self::shared(runtime, logger, None)
    }

    /// A bundle's table.
    pub(crate) fn for_bundle(runtime: Weak<Runtime>, logger: Arc<Logger>, name: &str) -> Arc<Self> {
        let scope = BundleScope {
            name: name.to_owned(),
            declared: RwLock::new(FxHashSet::default()),
            staging: Mutex::new(None),
        };
        Self::shared(runtime, logger, Some(scope))
    }

    fn shared(runtime: Weak<Runtime>, logger: Arc<Logger>, bundle: Option<BundleScope>) -> Arc<Self> {
        let mut table = Arc::new(Self {
            api: HostApi {
                abi_version: HOLDFAST_ABI_VERSION,
                struct_size: size_of::<HostApi>() as u32,
                context: std::ptr::null_mut(),
                register_guest_contract,
                alloc,
                free,
                find_guest_contract,
                find_all_guest_contracts,
                resolve_guest_contract,
                create_guest_instance,
                resolve_guest_instance,
                destroy_guest_instance,
                list_bundles,
                load_bundle,
                reload_bundle,
                unload_bundle,
                get_last_error,
                log,
                revision_counter,
                pin,
                unpin,
            },
            runtime,
            logger,
            bundle,
        });
        let address = Arc::as_ptr(&table);
        Arc::get_mut(&mut table)
            .expect("no other reference exists yet")
            .api
            .context = address.cast_mut().cast();
        table
    }

    /// The bundle's name as a view into this table's own copy (valid while
    /// the table lives, that is, as long as the runtime).
    pub(crate) fn name_view(&self) -> StringView {
        self.bundle
            .as_ref()
            .map_or(StringView::absent(), |scope| StringView::borrowed(&scope.name))
    }

    /// The table to hand to plugins.
    pub(crate) fn api(&self) -> *const HostApi {
        &self.api
    }

    /// Sets the contracts this bundle may look up (after each commit).
    pub(crate) fn declare(&self, manifest: &ManifestData) {
        if let Some(scope) = &self.bundle {
            *scope.declared.write().unwrap_or_else(PoisonError::into_inner) = declared_contracts(manifest);
        }
    }

    /// Opens the staging transaction; registrations on its thread now stage.
    pub(crate) fn open_staging(&self, staging: Staging) {
        if let Some(scope) = &self.bundle {
            *scope.staging.lock().unwrap_or_else(PoisonError::into_inner) = Some(staging);
        }
    }

    /// Closes the transaction and returns what was staged.
    pub(crate) fn close_staging(&self) -> Option<Staging> {
        self.bundle.as_ref().and_then(|scope| {
            scope
                .staging
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take()
        })
    }

    /// Runs `close` (a module's `before_close`) as this bundle's fini: while
    /// it runs, this thread's calls through the table get only `alloc`,
    /// `free` and `log`.
    /// The previous marker is restored even if `close` unwinds.
    pub(crate) fn run_as_fini(&self, close: impl FnOnce(*const HostApi)) {
        /// Puts the previous fini marker back when dropped.
        struct Restore(usize);
        impl Drop for Restore {
            fn drop(&mut self) {
                IN_FINI.with(|fini| fini.set(self.0));
            }
        }
        let _restore = Restore(IN_FINI.with(|fini| fini.replace(self as *const Self as usize)));
        close(self.api());
    }

    /// Frees a state blob a plugin allocated through `alloc(len, 1)`.
    pub(crate) fn free_blob(&self, blob: holdfast_plugin_abi::StateBlob) {
        // SAFETY: the ABI requires state blobs to come from `alloc(len, 1)`.
        unsafe { free(self.api(), blob.ptr.cast(), blob.len, 1) };
    }

    fn in_fini(&self) -> bool {
        IN_FINI.with(Cell::get) == self as *const Self as usize
    }

    fn runtime(&self) -> Result<Upgraded, AbiError> {
        self.runtime
            .upgrade()
            .map(|runtime| Upgraded(Some(runtime)))
            .ok_or_else(|| self.fail(AbiErrorCode::Unsupported, "the runtime is shutting down".into()))
    }

    /// Records `message` as this thread's last error for this table and
    /// returns an `AbiError` whose message points to it.
    fn fail(&self, code: AbiErrorCode, message: String) -> AbiError {
        let key = self as *const Self as usize;
        let message: Box<str> = message.into();
        let view = StringView::borrowed(&message);
        LAST_ERRORS.with(|errors| {
            let mut errors = errors.borrow_mut();
            match errors.iter_mut().find(|(table, _)| *table == key) {
                Some(entry) => entry.1 = message,
                None => errors.push((key, message)),
            }
        });
        AbiError {
            code: code as u32,
            message: view,
        }
    }

    fn last_error(&self) -> StringView {
        let key = self as *const Self as usize;
        LAST_ERRORS.with(|errors| {
            errors
                .borrow()
                .iter()
                .find(|(table, _)| *table == key)
                .map_or(StringView::absent(), |(_, message)| StringView::borrowed(message))
        })
    }

    /// Whether this table may look up `contract_id` (spec §3.5): declared
    /// by the committed manifest, or, during init, by the one being loaded.
    fn may_look_up(&self, contract_id: u64) -> bool {
        self.bundle.as_ref().is_none_or(|scope| {
            let committed = scope
                .declared
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .contains(&contract_id);
            committed
                || scope
                    .staging
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .as_ref()
                    .is_some_and(|staging| staging.declares(contract_id))
        })
    }

    pub(crate) fn log_line(&self, level: LogLevel, message: &str) {
        match &self.bundle {
            Some(scope) => self.logger.log(level, &format!("[{}] {message}", scope.name)),
            None => self.logger.log(level, message),
        }
    }
}

/// The runtime as a host function upgraded it from its table's `Weak`.
///
/// If the host drops its last `Arc<Runtime>` while a plugin is inside a host
/// function, this upgrade becomes the last strong reference, and dropping it
/// normally would run `Runtime::drop` on the plugin's thread, inside its
/// call: fini would run there and the images (the code the call returns
/// into) would close. So the last reference is never dropped here: it goes
/// to `tear_down_elsewhere`.
pub(crate) struct Upgraded(Option<Arc<Runtime>>);

impl std::ops::Deref for Upgraded {
    type Target = Runtime;

    fn deref(&self) -> &Runtime {
        self.0.as_deref().expect("taken only in drop")
    }
}

impl Drop for Upgraded {
    fn drop(&mut self) {
        // `Arc::into_inner` is `Some` for exactly one holder, atomically, so
        // two host calls finishing at once cannot both miss the last drop.
        if let Some(runtime) = self.0.take().and_then(Arc::into_inner) {
            tear_down_elsewhere(runtime);
        }
    }
}

/// Drops a runtime whose last reference a host function held, on a thread
/// of its own and only after an epoch grace period.
//
// Why this is the simplest sound hand-off: the teardown must not run on the
// plugin's thread (it is inside plugin code until its call returns), and
// must not close images while a caller is still executing them. Whoever
// called into the plugin holds an epoch guard of the default collector for
// the whole call (spec §7: interfaces are valid only under a pin), so a
// deferred flag set by the collector proves every such call has returned.
// A dedicated thread waits for that flag, then drops the runtime (fini,
// instance destructors, closing the images) outside every plugin call. A
// deferred-drop list would need a later host-side call that may never come;
// running the drop from the deferred closure itself would run it on
// whichever thread collects, possibly another plugin's. If the thread cannot
// be spawned the runtime is leaked: mapped forever, never freed under a
// caller.
fn tear_down_elsewhere(runtime: Runtime) {
    let logger = runtime.logger.clone();
    // `ManuallyDrop`: if `spawn` fails it drops the closure on this thread;
    // the runtime inside must then be leaked, not dropped here.
    let runtime = std::mem::ManuallyDrop::new(Box::new(runtime));
    let spawned = std::thread::Builder::new()
        .name("holdfast-teardown".into())
        .spawn(move || {
            wait_for_grace_period();
            drop(std::mem::ManuallyDrop::into_inner(runtime));
        });
    if spawned.is_err() {
        logger.log(
            LogLevel::Error,
            "could not spawn the teardown thread of a runtime dropped during a host call; it is leaked",
        );
    }
}

/// Returns once every thread pinned on the default collector when it was
/// called has unpinned.
fn wait_for_grace_period() {
    let passed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    {
        let guard = epoch::pin();
        let flag = passed.clone();
        // Only a flag is set, on whichever thread collects it.
        guard.defer(move || flag.store(true, std::sync::atomic::Ordering::Release));
        guard.flush();
    }
    let mut pause = std::time::Duration::from_micros(50);
    while !passed.load(std::sync::atomic::Ordering::Acquire) {
        epoch::pin().flush();
        std::thread::sleep(pause);
        pause = (pause * 2).min(std::time::Duration::from_millis(10));
    }
}

/// The table behind `host`, if `host` is one of ours.
///
/// # Safety
/// `host` must be null or a `HostApi` pointer the runtime handed out, still
/// live (tables live as long as their runtime).
unsafe fn table<'a>(host: *const HostApi) -> Option<&'a HostTable> {
    // SAFETY: the caller guarantees `host` is null or one of our tables.
    let api = unsafe { host.as_ref() }?;
    // SAFETY: our tables' context points to the boxed `HostTable` holding
    // them, which lives as long as the table.
    unsafe { api.context.cast::<HostTable>().cast_const().as_ref() }
}

/// Whether a host function works while the calling thread runs the
/// bundle's fini (spec §3.5: only `alloc`, `free` and `log` do).
#[derive(Clone, Copy, PartialEq, Eq)]
enum DuringFini {
    Works,
    Refused,
}

/// Runs a host function body: null tables, fini restrictions and panics
/// all become error answers.
fn guarded<T>(
    host: *const HostApi,
    during_fini: DuringFini,
    on_error: impl FnOnce(Option<AbiError>) -> T,
    body: impl FnOnce(&HostTable) -> Result<T, AbiError>,
) -> T {
    // SAFETY: plugins pass back the table they were given (ABI contract).
    let Some(table) = (unsafe { table(host) }) else {
        return on_error(None);
    };
    if during_fini == DuringFini::Refused && table.in_fini() {
        return on_error(Some(table.fail(
            AbiErrorCode::Unsupported,
            "only alloc, free and log work during fini".into(),
        )));
    }
    match catch_unwind(AssertUnwindSafe(|| body(table))) {
        Ok(Ok(value)) => value,
        Ok(Err(error)) => on_error(Some(error)),
        Err(_) => on_error(Some(
            table.fail(AbiErrorCode::Internal, "the host panicked".into()),
        )),
    }
}

/// The `AbiError` answer of a fallible host function.
fn answer(
    host: *const HostApi,
    during_fini: DuringFini,
    body: impl FnOnce(&HostTable) -> Result<(), AbiError>,
) -> AbiError {
    guarded(
        host,
        during_fini,
        |error| error.unwrap_or(AbiError::new(AbiErrorCode::InvalidArgument, "null host table")),
        |table| body(table).map(|()| AbiError::ok()),
    )
}

/// The ABI code and message for a runtime error (spec §3.5).
fn code_of(error: &RuntimeError) -> AbiErrorCode {
    match error {
        RuntimeError::ReentrantLifecycle { .. } => AbiErrorCode::Reentrant,
        RuntimeError::HotReloadDisabled => AbiErrorCode::HotReloadDisabled,
        RuntimeError::BundleNotLoaded { .. } | RuntimeError::InstanceGone { .. } => AbiErrorCode::NotFound,
        RuntimeError::BundleInUse { .. } => AbiErrorCode::InUse,
        RuntimeError::BundleBusy { .. } => AbiErrorCode::Busy,
        RuntimeError::Registry(crate::RegistryError::StaleHandle { .. }) => AbiErrorCode::StaleHandle,
        RuntimeError::Registry(_) => AbiErrorCode::NotFound,
        RuntimeError::Manifest { .. }
        | RuntimeError::Loader(_)
        | RuntimeError::Validation { .. }
        | RuntimeError::ReloadRolledBack { .. }
        | RuntimeError::CascadeFailed { .. }
        | RuntimeError::StateMigration { .. }
        | RuntimeError::InstanceCreateFailed { .. } => AbiErrorCode::InitFailed,
        _ => AbiErrorCode::Internal,
    }
}

fn runtime_failure(table: &HostTable, error: &RuntimeError) -> AbiError {
    table.fail(code_of(error), error.to_string())
}

/// A path argument: present UTF-8.
///
/// # Safety
/// The view must be readable for the call.
unsafe fn path_argument(table: &HostTable, path: StringView) -> Result<String, AbiError> {
    // SAFETY: the caller guarantees the view is readable.
    match unsafe { path.to_str() } {
        Ok(Some(text)) => Ok(text.to_owned()),
        Ok(None) => Err(table.fail(AbiErrorCode::InvalidArgument, "the path is absent".into())),
        Err(_) => Err(table.fail(AbiErrorCode::InvalidUtf8, "the path is not UTF-8".into())),
    }
}

unsafe extern "C" fn register_guest_contract(
    host: *const HostApi,
    descriptor: *const PluginDescriptor,
    interface: *const GuestContractInterface,
    out_handle: *mut GuestContractHandle,
) -> AbiError {
    answer(host, DuringFini::Refused, |table| {
        let not_in_init = || {
            table.fail(
                AbiErrorCode::NotInInit,
                "registration is only allowed during this bundle's init, on its thread".into(),
            )
        };
        let scope = table.bundle.as_ref().ok_or_else(not_in_init)?;
        let mut guard = scope.staging.lock().unwrap_or_else(PoisonError::into_inner);
        let staging = guard
            .as_mut()
            .filter(|staging| staging.is_on_current_thread())
            .ok_or_else(not_in_init)?;
        let runtime = table.runtime()?;
        // SAFETY: the plugin passes pointers readable for the call (ABI).
        match unsafe { stage_registration(&runtime, staging, descriptor, interface) } {
            Ok(handle) => {
                if !out_handle.is_null() && out_handle.is_aligned() {
                    // SAFETY: non-null, aligned, writable (the plugin's
                    // out-parameter).
                    unsafe { out_handle.write(handle) };
                }
                Ok(())
            }
            Err(Refusal { code, error }) => {
                let message = error.to_string();
                staging.first_failure.get_or_insert(error);
                Err(table.fail(code, message))
            }
        }
    })
}

// ---- memory ----

unsafe extern "C" fn alloc(_host: *const HostApi, size: usize, align: usize) -> *mut c_void {
    match std::alloc::Layout::from_size_align(size, align) {
        Ok(layout) if size > 0 && align <= MAX_ALIGN => {
            // SAFETY: the layout has a non-zero size.
            unsafe { std::alloc::alloc(layout) }.cast()
        }
        _ => std::ptr::null_mut(),
    }
}

unsafe extern "C" fn free(_host: *const HostApi, ptr: *mut c_void, size: usize, align: usize) {
    if ptr.is_null() {
        return;
    }
    if let Ok(layout) = std::alloc::Layout::from_size_align(size, align) {
        // SAFETY: the ABI requires `ptr` to come from `alloc` with this very
        // size and alignment.
        unsafe { std::alloc::dealloc(ptr.cast(), layout) };
    }
}

// ---- lookups ----

fn check_declared(table: &HostTable, contract_id: u64) -> Result<(), AbiError> {
    if table.may_look_up(contract_id) {
        Ok(())
    } else {
        Err(table.fail(
            AbiErrorCode::Undeclared,
            format!(
                "contract {contract_id:#018x} is neither provided nor a declared dependency of this bundle"
            ),
        ))
    }
}

unsafe extern "C" fn find_guest_contract(
    host: *const HostApi,
    contract_id: u64,
    min_minor: u32,
    out_handle: *mut GuestContractHandle,
) -> AbiError {
    answer(host, DuringFini::Refused, |table| {
        check_declared(table, contract_id)?;
        if out_handle.is_null() || !out_handle.is_aligned() {
            return Err(table.fail(AbiErrorCode::InvalidArgument, "out_handle is null".into()));
        }
        let handle = table
            .runtime()?
            .find_guest_contract(contract_id, min_minor)
            .map_err(|error| table.fail(AbiErrorCode::NotFound, error.to_string()))?;
        // SAFETY: non-null, aligned, writable (the plugin's out-parameter).
        unsafe { out_handle.write(handle) };
        Ok(())
    })
}

unsafe extern "C" fn find_all_guest_contracts(
    host: *const HostApi,
    contract_id: u64,
    min_minor: u32,
    out: *mut GuestContractHandle,
    capacity: usize,
) -> usize {
    guarded(
        host,
        DuringFini::Refused,
        |_| 0,
        |table| {
            check_declared(table, contract_id)?;
            let capacity = if out.is_null() || !out.is_aligned() {
                0
            } else {
                capacity
            };
            let runtime = table.runtime()?;
            let (total, found) = collect_up_to(capacity, |scratch| {
                runtime.find_all_guest_contracts(contract_id, min_minor, scratch)
            });
            if !found.is_empty() {
                // SAFETY: non-null and aligned (checked above), and the
                // plugin's buffer holds `capacity >= found.len()` handles.
                unsafe { std::ptr::copy_nonoverlapping(found.as_ptr(), out, found.len()) };
            }
            Ok(total)
        },
    )
}

/// Runs `find` (which writes up to `slice.len()` matches and returns their
/// total) until it has every match that fits in `capacity`, and returns the
/// last total with those matches: `found.len() == total.min(capacity)`, as
/// `find_all_guest_contracts` promises (spec §3.5). The buffer grows only to
/// the real number of matches, whatever capacity a plugin claims; it may
/// take another call when providers registered between two.
fn collect_up_to(
    capacity: usize,
    mut find: impl FnMut(&mut [GuestContractHandle]) -> usize,
) -> (usize, Vec<GuestContractHandle>) {
    let mut found = Vec::new();
    let mut total = find(&mut found);
    while found.len() < total.min(capacity) {
        found.resize(total.min(capacity), GuestContractHandle::NULL);
        total = find(&mut found);
    }
    found.truncate(total.min(capacity));
    (total, found)
}

unsafe extern "C" fn resolve_guest_contract(
    host: *const HostApi,
    handle: GuestContractHandle,
) -> *const GuestContractInterface {
    guarded(
        host,
        DuringFini::Refused,
        |_| std::ptr::null(),
        |table| {
            table
                .runtime()?
                .resolve_guest_contract(handle)
                .map_err(|error| table.fail(AbiErrorCode::StaleHandle, error.to_string()))
        },
    )
}

// ---- instances ----

unsafe extern "C" fn create_guest_instance(
    host: *const HostApi,
    handle: GuestContractHandle,
    args: *const (),
    out: *mut InstanceHandle,
) -> AbiError {
    answer(host, DuringFini::Refused, |table| {
        if out.is_null() || !out.is_aligned() {
            return Err(table.fail(AbiErrorCode::InvalidArgument, "out is null".into()));
        }
        // SAFETY: `args` is passed through to the contract's constructor,
        // whose convention the calling plugin follows.
        let instance = unsafe { table.runtime()?.create_guest_instance(handle, args) }
            .map_err(|error| runtime_failure(table, &error))?;
        // SAFETY: non-null, aligned, writable (the plugin's out-parameter).
        unsafe { out.write(instance) };
        Ok(())
    })
}

unsafe extern "C" fn resolve_guest_instance(
    host: *const HostApi,
    instance: InstanceHandle,
    out: *mut GuestContractInstance,
) -> AbiError {
    answer(host, DuringFini::Refused, |table| {
        if out.is_null() || !out.is_aligned() {
            return Err(table.fail(AbiErrorCode::InvalidArgument, "out is null".into()));
        }
        let resolved = table
            .runtime()?
            .resolve_guest_instance(instance)
            .map_err(|error| runtime_failure(table, &error))?;
        // SAFETY: non-null, aligned, writable (the plugin's out-parameter).
        unsafe { out.write(resolved) };
        Ok(())
    })
}

unsafe extern "C" fn destroy_guest_instance(host: *const HostApi, instance: InstanceHandle) -> AbiError {
    answer(host, DuringFini::Refused, |table| {
        table
            .runtime()?
            .destroy_guest_instance(instance)
            .map_err(|error| runtime_failure(table, &error))
    })
}

// ---- bundles and lifecycle ----

unsafe extern "C" fn list_bundles(host: *const HostApi, out: *mut BundleInfo, capacity: usize) -> usize {
    guarded(
        host,
        DuringFini::Refused,
        |_| 0,
        |table| {
            let infos = table.runtime()?.bundle_infos();
            if !out.is_null() && out.is_aligned() {
                let written = infos.len().min(capacity);
                // SAFETY: the plugin's buffer holds `capacity >= written` entries.
                unsafe { std::ptr::copy_nonoverlapping(infos.as_ptr(), out, written) };
            }
            Ok(infos.len())
        },
    )
}

unsafe extern "C" fn load_bundle(
    host: *const HostApi,
    path: StringView,
    out_bundle_id: *mut u64,
) -> AbiError {
    answer(host, DuringFini::Refused, |table| {
        // SAFETY: the plugin passes a readable view (ABI).
        let path = unsafe { path_argument(table, path) }?;
        let id = table
            .runtime()?
            .load_bundle(Path::new(&path))
            .map_err(|error| runtime_failure(table, &error))?;
        if !out_bundle_id.is_null() && out_bundle_id.is_aligned() {
            // SAFETY: non-null, aligned, writable (the plugin's out-parameter).
            unsafe { out_bundle_id.write(id.id()) };
        }
        Ok(())
    })
}

unsafe extern "C" fn reload_bundle(host: *const HostApi, path: StringView) -> AbiError {
    answer(host, DuringFini::Refused, |table| {
        // SAFETY: the plugin passes a readable view (ABI).
        let path = unsafe { path_argument(table, path) }?;
        table
            .runtime()?
            .reload_bundle(Path::new(&path))
            .map_err(|error| runtime_failure(table, &error))
    })
}

unsafe extern "C" fn unload_bundle(host: *const HostApi, bundle_id: u64) -> AbiError {
    answer(host, DuringFini::Refused, |table| {
        table
            .runtime()?
            .unload_bundle(BundleId::from_u64(bundle_id))
            .map_err(|error| runtime_failure(table, &error))
    })
}

// ---- diagnostics and pins ----

unsafe extern "C" fn get_last_error(host: *const HostApi) -> StringView {
    // SAFETY: plugins pass back the table they were given (ABI contract).
    match unsafe { table(host) } {
        Some(table) => table.last_error(),
        None => StringView::absent(),
    }
}

unsafe extern "C" fn log(host: *const HostApi, level: u32, message: StringView) {
    guarded(
        host,
        DuringFini::Works,
        |_| (),
        |table| {
            let level = match level {
                0 => LogLevel::Error,
                1 => LogLevel::Warn,
                2 => LogLevel::Info,
                3 => LogLevel::Debug,
                _ => LogLevel::Trace,
            };
            // SAFETY: the plugin passes a readable view (ABI).
            let text = unsafe { crate::loader::plugin_message(message) };
            table.log_line(level, &text);
            Ok(())
        },
    );
}

unsafe extern "C" fn revision_counter(host: *const HostApi) -> u64 {
    guarded(
        host,
        DuringFini::Refused,
        |_| 0,
        |table| Ok(table.runtime()?.revision()),
    )
}

unsafe extern "C" fn pin(host: *const HostApi) {
    guarded(
        host,
        DuringFini::Refused,
        |_| (),
        |_| {
            PINS.with(|pins| pins.borrow_mut().push(epoch::pin()));
            Ok(())
        },
    );
}

unsafe extern "C" fn unpin(host: *const HostApi) {
    guarded(
        host,
        DuringFini::Refused,
        |_| (),
        |table| {
            if PINS.with(|pins| pins.borrow_mut().pop()).is_none() {
                table.log_line(LogLevel::Warn, "unpin without a matching pin was ignored");
            }
            Ok(())
        },
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A registry of `matches` providers: `find` as `Runtime::find_all_guest_contracts` does it.
    fn registry(matches: usize) -> impl FnMut(&mut [GuestContractHandle]) -> usize {
        move |out| {
            for (index, slot) in out.iter_mut().take(matches).enumerate() {
                *slot = GuestContractHandle {
                    index: index as u32,
                    generation: 1,
                };
            }
            matches
        }
    }

    #[test]
    fn find_all_fills_the_whole_capacity_past_4096_and_returns_the_total() {
        for (capacity, written) in [
            (0, 0),
            (10, 10),
            (4096, 4096),
            (5000, 5000),
            (6000, 5000),
            (usize::MAX, 5000),
        ] {
            let (total, found) = collect_up_to(capacity, registry(5000));
            assert_eq!((total, found.len()), (5000, written), "capacity {capacity}");
            assert!(
                found
                    .iter()
                    .enumerate()
                    .all(|(index, handle)| handle.index == index as u32)
            );
        }
    }

    #[test]
    fn find_all_keeps_its_promise_when_providers_register_between_calls() {
        let mut calls = 0;
        let (total, found) = collect_up_to(5000, |out| {
            calls += 1;
            // 4097 matches at the first call, 4500 from the second on.
            registry(if calls == 1 { 4097 } else { 4500 })(out)
        });
        assert_eq!((total, found.len()), (4500, 4500));
        let (total, found) = collect_up_to(5000, |out| {
            calls += 1;
            // Fewer matches by the second call: only what is found is kept.
            registry(if calls == 4 { 4200 } else { 4100 })(out)
        });
        assert_eq!((total, found.len()), (4100, 4100));
    }

    #[test]
    fn a_panicking_fini_does_not_leave_the_thread_in_fini() {
        let logger = Arc::new(Logger::new(&Default::default(), None));
        let table = HostTable::for_host(Weak::new(), logger);
        let unwound = catch_unwind(AssertUnwindSafe(|| {
            table.run_as_fini(|_| {
                assert!(table.in_fini());
                panic!("fini panicked");
            });
        }));
        assert!(unwound.is_err());
        assert!(!table.in_fini());
    }
}
