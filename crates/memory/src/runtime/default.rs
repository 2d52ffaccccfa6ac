//! The process-wide default runtime: the canister's `DefaultMemoryImpl`
//! (natively, one per thread), declarations and ranges from the static
//! registry, bootstrapped once and published. It adds only the process-wide
//! state (the bootstrapped flag, the published allocations and the thread
//! that owns them, eager-init hooks) to [`MemoryRuntime`]'s boot.

use std::cell::RefCell;
use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};
use std::thread::ThreadId;

use ic_stable_structures::DefaultMemoryImpl;
use ic_stable_structures::memory_manager::VirtualMemory;

use super::error::{RuntimeBootstrapError, RuntimeOpenError};
use super::memory_runtime::MemoryRuntime;
use crate::diagnostics::{
    DiagnosticExport, RuntimeDiagnosticError, commit_recovery_diagnostic_of, diagnostic_export_of,
};
use crate::physical::CommitStoreDiagnostic;
use crate::registry::{self, StaticMemoryDeclarationError};
use crate::validate::{AcceptAllPolicy, AllocationPolicy, ValidatedAllocations};

thread_local! {
    static DEFAULT_MEMORY: RefCell<DefaultMemoryImpl> = RefCell::new(DefaultMemoryImpl::default());
    static DEFAULT_RUNTIME: RefCell<Option<MemoryRuntime<DefaultMemoryImpl>>> = const { RefCell::new(None) };
}

static BOOTSTRAPPED: AtomicBool = AtomicBool::new(false);
static BOOTSTRAP_LOCK: Mutex<()> = Mutex::new(());
static PUBLISHED: Mutex<Option<(ThreadId, ValidatedAllocations)>> = Mutex::new(None);

/// Serializes tests that bootstrap the process-wide default runtime.
#[cfg(feature = "test-support")]
pub static TEST_RUNTIME_LOCK: Mutex<()> = Mutex::new(());

/// Clears the registry, the eager-init queue, the published allocations and
/// this thread's runtime, and gives the default runtime a fresh, empty memory.
#[cfg(feature = "test-support")]
pub fn reset_for_tests() {
    let _bootstrap = BOOTSTRAP_LOCK.lock().unwrap_or_else(PoisonError::into_inner);
    *registry::registry() = registry::Registry::default();
    *PUBLISHED.lock().unwrap_or_else(PoisonError::into_inner) = None;
    BOOTSTRAPPED.store(false, Ordering::SeqCst);
    DEFAULT_RUNTIME.with(|runtime| *runtime.borrow_mut() = None);
    DEFAULT_MEMORY.with(|memory| *memory.borrow_mut() = DefaultMemoryImpl::default());
}

/// As [`reset_for_tests`], then makes `memory` this thread's default memory
/// (natively a shared `VectorMemory`), so that a test can boot the default
/// runtime over an image it wrote — one written by ic-memory, for example.
#[cfg(feature = "test-support")]
pub fn reset_for_tests_with_memory(memory: DefaultMemoryImpl) {
    reset_for_tests();
    DEFAULT_MEMORY.with(|default| *default.borrow_mut() = memory);
}

/// Bootstraps the default runtime with no extra policy.
///
/// # Errors
/// As [`bootstrap_default_memory_manager_with_policy`].
pub fn bootstrap_default_memory_manager() -> Result<ValidatedAllocations, RuntimeBootstrapError<Infallible>> {
    bootstrap_default_memory_manager_with_policy(&AcceptAllPolicy)
}

/// Bootstraps the default runtime: runs eager-init hooks, seals the registry,
/// and boots the registered layout with [`MemoryRuntime::bootstrap_layout`]
/// (which builds the range table and the snapshot before touching memory,
/// then recovers, validates and commits); then publishes. Idempotent once it
/// succeeded.
///
/// # Errors
/// [`RuntimeBootstrapError`]; as for [`MemoryRuntime::bootstrap`], every
/// refusal writes nothing, and a failed grow leaves the authoritative
/// generation untouched.
pub fn bootstrap_default_memory_manager_with_policy<P: AllocationPolicy>(
    policy: &P,
) -> Result<ValidatedAllocations, RuntimeBootstrapError<P::Error>> {
    let _bootstrap = BOOTSTRAP_LOCK.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some((_, validated)) = PUBLISHED.lock().unwrap_or_else(PoisonError::into_inner).as_ref() {
        return Ok(validated.clone());
    }
    run_eager_init_hooks();
    let (entries, ranges) = {
        let mut registry = registry::registry();
        registry.sealed = true;
        if let Some(err) = registry.deferred_errors.first() {
            return Err(RuntimeBootstrapError::Registry(err.clone()));
        }
        (registry.declarations.clone(), registry.ranges.clone())
    };
    // Registration already refused every malformed entry, so building the
    // layout cannot fail in practice; if it did, a bad range keeps the
    // `Range` variant it has always had.
    let layout = registry::static_layout(&entries, &ranges).map_err(|err| match err {
        StaticMemoryDeclarationError::Range(err) => RuntimeBootstrapError::Range(err),
        other => RuntimeBootstrapError::Registry(other),
    })?;
    let memory = DEFAULT_MEMORY.with(|memory| memory.borrow().clone());
    let runtime = MemoryRuntime::bootstrap_layout(memory, &layout, policy)?;
    let validated = runtime.validated().clone();
    DEFAULT_RUNTIME.with(|slot| *slot.borrow_mut() = Some(runtime));
    *PUBLISHED.lock().unwrap_or_else(PoisonError::into_inner) =
        Some((std::thread::current().id(), validated.clone()));
    BOOTSTRAPPED.store(true, Ordering::SeqCst);
    Ok(validated)
}

fn run_eager_init_hooks() {
    loop {
        let hooks = std::mem::take(&mut registry::registry().eager_init);
        if hooks.is_empty() {
            return;
        }
        for hook in hooks {
            hook();
        }
    }
}

/// Opens the memory of `stable_key` on `id` from the default runtime.
///
/// # Errors
/// `NotBootstrapped`, `WrongThread`, or the errors of [`MemoryRuntime::open`].
pub fn open_default_memory_manager_memory(
    stable_key: &str,
    id: u8,
) -> Result<VirtualMemory<DefaultMemoryImpl>, RuntimeOpenError> {
    if !BOOTSTRAPPED.load(Ordering::SeqCst) {
        return Err(RuntimeOpenError::NotBootstrapped);
    }
    let owner = PUBLISHED
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .as_ref()
        .map(|(thread, _)| *thread);
    if owner != Some(std::thread::current().id()) {
        return Err(RuntimeOpenError::WrongThread);
    }
    DEFAULT_RUNTIME.with(|runtime| match runtime.borrow().as_ref() {
        Some(runtime) => runtime.open(stable_key, id),
        None => Err(RuntimeOpenError::NotBootstrapped),
    })
}

/// The published validated allocations.
///
/// # Errors
/// [`RuntimeOpenError::NotBootstrapped`].
pub fn validated_allocations() -> Result<ValidatedAllocations, RuntimeOpenError> {
    PUBLISHED
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .as_ref()
        .map(|(_, validated)| validated.clone())
        .ok_or(RuntimeOpenError::NotBootstrapped)
}

/// Whether the default runtime has bootstrapped successfully.
pub fn is_default_memory_manager_bootstrapped() -> bool {
    BOOTSTRAPPED.load(Ordering::SeqCst)
}

/// Queues `hook` to run at the start of bootstrap, before the registry is
/// sealed (a hook may register declarations).
///
/// # Panics
/// With a message containing "after runtime bootstrap" when called after
/// bootstrap: the hook could no longer run before sealing.
pub fn defer_eager_init(hook: fn()) {
    assert!(
        !BOOTSTRAPPED.load(Ordering::SeqCst),
        "defer_eager_init called after runtime bootstrap: eager-init hooks must be queued before bootstrap"
    );
    registry::registry().eager_init.push(hook);
}

/// The default runtime's diagnostics (read-only; also before bootstrap).
///
/// # Errors
/// [`RuntimeDiagnosticError`].
pub fn default_memory_manager_diagnostic_export() -> Result<DiagnosticExport, RuntimeDiagnosticError> {
    let memory = DEFAULT_MEMORY.with(|memory| memory.borrow().clone());
    diagnostic_export_of(&memory)
}

/// The default memory's commit diagnostic, even when bootstrap failed.
///
/// # Errors
/// [`RuntimeDiagnosticError::Image`] when the memory is not a MemoryManager.
pub fn default_memory_manager_commit_recovery_diagnostic()
-> Result<CommitStoreDiagnostic, RuntimeDiagnosticError> {
    let memory = DEFAULT_MEMORY.with(|memory| memory.borrow().clone());
    commit_recovery_diagnostic_of(&memory)
}
