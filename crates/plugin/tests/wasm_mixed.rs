//! Native and WASM bundles side by side: a bundle whose loader does not
//! match its file (`loader = "wasm"` naming a native library,
//! `loader = "native"` naming a WebAssembly module) is refused with
//! `LoaderError::WrongLoader` before anything of it runs, the running set
//! unchanged; a fault in a WASM plugin leaves the native plugin answering.
#![cfg(feature = "wasm")]

mod common;
#[macro_use]
#[path = "common/fixtures.rs"]
mod fixtures;
#[path = "common/wasm.rs"]
mod wasm_support;

use std::sync::Arc;

use common::TestNativeLoader;
use holdfast_plugin::{LoaderError, Runtime, RuntimeError, WasmCallError, WasmConfig, WasmFault, WasmLoader};
use holdfast_plugin_abi::{BundleId, GuestContractId, RuntimeConfig};

fn runtime() -> Arc<Runtime> {
    Runtime::builder()
        .config(RuntimeConfig {
            hot_reload_enabled: true,
            ..Default::default()
        })
        .loader(TestNativeLoader::new())
        .loader(WasmLoader::new(WasmConfig::default()))
        .build()
        .unwrap()
}

/// A runtime with the native reload plugin v1 and the WASM counter v1
/// loaded (keep the counter's directory alive).
fn native_and_wasm_loaded() -> (Arc<Runtime>, tempfile::TempDir) {
    let runtime = runtime();
    runtime
        .load_bundle(std::path::Path::new(fixtures::RELOAD_V1_DIR))
        .unwrap();
    let counter = wasm_support::counter_bundle(1);
    runtime.load_bundle(counter.path()).unwrap();
    (runtime, counter)
}

fn reload_test_id() -> u64 {
    GuestContractId::new("reload.test", 1).id()
}

fn loader_error(result: Result<BundleId, RuntimeError>) -> LoaderError {
    match result {
        Err(RuntimeError::Loader(error)) => error,
        other => panic!("expected a loader error, got {other:?}"),
    }
}

fn manifest(loader: &str, file: &str) -> String {
    format!(
        "loader = \"{loader}\"\nname = \"mixed\"\nid = \"{}\"\nversion = \"1.0.0\"\nfile = \"{file}\"\nprovides = [\"reload.test@1\"]\n\n[function_count]\n\"reload.test@1\" = 1\n",
        BundleId::new("mixed")
    )
}

#[test]
fn a_bundle_whose_loader_does_not_match_its_file_is_refused_and_nothing_changes() {
    let (runtime, _counter) = native_and_wasm_loaded();
    let before: Vec<_> = runtime.bundles().into_iter().map(|bundle| bundle.name).collect();
    let revision = runtime.revision();

    let library = std::fs::read(fixtures::v1_so_path()).unwrap();
    let wasm_naming_so = wasm_support::bundle_of("plugin.so", &library, &manifest("wasm", "plugin.so"));
    let refused = loader_error(runtime.load_bundle(wasm_naming_so.path()));
    assert_eq!(
        refused,
        LoaderError::WrongLoader {
            path: wasm_naming_so.path().canonicalize().unwrap().join("plugin.so"),
            loader: "wasm",
            found: "not a WebAssembly module",
        }
    );

    let module = std::fs::read(wasm_support::built_guests().join("wasm_counter_v1.wasm")).unwrap();
    let native_naming_wasm =
        wasm_support::bundle_of("counter.wasm", &module, &manifest("native", "counter.wasm"));
    let refused = loader_error(runtime.load_bundle(native_naming_wasm.path()));
    assert_eq!(
        refused,
        LoaderError::WrongLoader {
            path: native_naming_wasm
                .path()
                .canonicalize()
                .unwrap()
                .join("counter.wasm"),
            loader: "native",
            found: "a WebAssembly module",
        }
    );

    let after: Vec<_> = runtime.bundles().into_iter().map(|bundle| bundle.name).collect();
    assert_eq!((after, runtime.revision()), (before, revision));
    let version = fixtures::resolve_version_fn(&runtime, reload_test_id()).unwrap();
    assert_eq!(version(), 100);
}

#[test]
fn a_fault_in_a_wasm_plugin_leaves_the_native_plugin_answering() {
    let (runtime, _counter) = native_and_wasm_loaded();
    let handle = runtime
        .find_guest_contract(GuestContractId::new("demo.counter", 1).id(), 0)
        .unwrap();
    // SAFETY: WASM constructors take null arguments.
    let instance = unsafe { runtime.create_guest_instance(handle, std::ptr::null()) }.unwrap();
    assert_eq!(
        runtime.call_wasm(instance, 2, &[]),
        Err(WasmCallError::Fault {
            contract: "demo.counter@1".into(),
            function: 2,
            fault: WasmFault::Unreachable,
        })
    );
    let version = fixtures::resolve_version_fn(&runtime, reload_test_id()).unwrap();
    assert_eq!(version(), 100);
    assert_eq!(
        runtime.call_wasm(instance, 1, &[]).unwrap(),
        vec![0u64.to_le_bytes().to_vec()]
    );
}

#[test]
fn call_wasm_on_a_native_instance_is_not_wasm() {
    let (runtime, _counter) = native_and_wasm_loaded();
    let handle = runtime.find_guest_contract(reload_test_id(), 0).unwrap();
    // SAFETY: the native fixture's constructor ignores its arguments.
    let native = unsafe { runtime.create_guest_instance(handle, std::ptr::null()) }.unwrap();
    assert_eq!(
        runtime.call_wasm(native, 0, &[]),
        Err(WasmCallError::NotWasm { instance: native })
    );
}
