//! Paths of the fixture bundles (spec §10.1), for test binaries that declare
//! `#[macro_use] mod fixtures;`.
#![allow(
    dead_code,
    unreachable_pub,
    reason = "each test binary uses a different subset; the helpers are pub for the external compatibility suite (spec §10.1)"
)]

use std::path::PathBuf;

/// The bundle directory of `reload-plugin` 1.0.0 (answers 100).
pub const RELOAD_V1_DIR: &str = concat!(
    env!("CARGO_TARGET_TMPDIR"),
    "/holdfast-fixtures/bundles/reload-v1"
);
/// The bundle directory of `reload-plugin` 2.0.0 (answers 200).
pub const RELOAD_V2_DIR: &str = concat!(
    env!("CARGO_TARGET_TMPDIR"),
    "/holdfast-fixtures/bundles/reload-v2"
);

fn library_in(dir: &str, stem: &str) -> PathBuf {
    PathBuf::from(dir).join(format!(
        "{}{stem}{}",
        std::env::consts::DLL_PREFIX,
        std::env::consts::DLL_SUFFIX
    ))
}

/// The v1 library inside its bundle.
pub fn v1_so_path() -> PathBuf {
    library_in(RELOAD_V1_DIR, "reload_plugin_v1")
}

/// The v2 library inside its bundle.
pub fn v2_so_path() -> PathBuf {
    library_in(RELOAD_V2_DIR, "reload_plugin_v2")
}

/// Strict, hot reload on, no C callback, null user data.
pub fn hot_reload_config() -> holdfast_plugin_abi::RuntimeConfig {
    holdfast_plugin_abi::RuntimeConfig {
        hot_reload_enabled: true,
        ..Default::default()
    }
}

/// A runtime with hot reload on and the fixtures built.
pub fn make_hot_reload_runtime() -> std::sync::Arc<holdfast_plugin::Runtime> {
    holdfast_plugin::Runtime::builder()
        .config(hot_reload_config())
        .loader(crate::common::TestNativeLoader::new())
        .build()
        .expect("a runtime with the default configuration builds")
}

/// `reload.test`'s function (`functions[0]`) of the provider of
/// `contract_id`: pins, finds with minor 0, resolves, reads the table.
///
/// The pointer is read under a pin that ends on return; callers call it
/// only while no reload can retire its image.
pub fn resolve_version_fn(
    runtime: &holdfast_plugin::Runtime,
    contract_id: u64,
) -> Option<extern "C" fn() -> u32> {
    let guard = holdfast_plugin::epoch::pin();
    let handle = runtime.find_guest_contract(contract_id, 0).ok()?;
    let interface = runtime.resolve_guest_contract(handle).ok()?;
    // SAFETY: resolved under `guard`, pinned before the resolve.
    let functions = unsafe { (*interface).native_functions() }?;
    let first = *functions.first()?;
    drop(guard);
    // SAFETY: the contract's first function has this signature (§10.1).
    Some(unsafe { std::mem::transmute::<*const (), extern "C" fn() -> u32>(first) })
}

/// A native interface for `$id` (a `GuestContractId`) at `$version` (a
/// `Version`) with a no-op constructor and destructor, no functions and no
/// state hooks; usable in a `static`.
#[macro_export]
macro_rules! make_interface {
    ($id:expr, $version:expr) => {
        ::holdfast_plugin_abi::GuestContractInterface::native(
            $id,
            $version,
            {
                unsafe extern "C" fn create(
                    _: *const ::holdfast_plugin_abi::HostApi,
                    _: *const (),
                ) -> ::holdfast_plugin_abi::GuestContractInstance {
                    ::holdfast_plugin_abi::GuestContractInstance::null()
                }
                create
            },
            {
                unsafe extern "C" fn destroy(
                    _: *const ::holdfast_plugin_abi::HostApi,
                    _: ::holdfast_plugin_abi::GuestContractInstance,
                ) {
                }
                destroy
            },
            ::core::ptr::null(),
            0,
        )
    };
}
