//! Load, reload and unload through `Runtime` (spec §6): broken bundles
//! refused with their typed errors both as loads and as reloads while the
//! old image keeps answering, deferred close after a partial registration,
//! reentrant lifecycle calls, the C and C++ plugins, the host table's
//! guards, and closing everything when the runtime drops.

mod common;
#[macro_use]
#[path = "common/fixtures.rs"]
mod fixtures;

use std::path::Path;
use std::sync::{Arc, Mutex};

use common::{TestNativeLoader, bundle_dir, call_u32, reclaim_all, recording_runtime};
use fixtures::{RELOAD_V1_DIR, RELOAD_V2_DIR, hot_reload_config, make_hot_reload_runtime};
use holdfast_plugin::{LoaderError, ManifestError, Runtime, RuntimeError, ValidationError, epoch};
use holdfast_plugin_abi::{AbiErrorCode, GuestContractId, ReloadPhaseType};

const RELOAD_TEST: u64 = GuestContractId::new("reload.test", 1).id();

fn answer(runtime: &Runtime) -> Option<u32> {
    call_u32(runtime, RELOAD_TEST, 0)
}

/// Checks a broken bundle's error as a load (on an empty runtime) and as a
/// reload of `reload-plugin` v1.
fn assert_refused(dir_name: &str, check: impl Fn(&RuntimeError), reload_fires_events: bool) {
    let dir = bundle_dir(dir_name);
    let (runtime, events) = recording_runtime();
    let error = runtime.load_bundle(&dir).unwrap_err();
    check(&error);
    assert_eq!(runtime.store().len(), 0, "{dir_name}: nothing was published");
    assert!(runtime.bundles().is_empty());

    runtime.load_bundle(Path::new(RELOAD_V1_DIR)).unwrap();
    let revision = runtime.revision();
    let error = runtime.reload_bundle(&dir).unwrap_err();
    if reload_fires_events {
        let RuntimeError::ReloadRolledBack { source, .. } = &error else {
            panic!("{dir_name}: expected a rollback, got {error:?}");
        };
        check(source);
        assert_eq!(
            events.take_phases(),
            [ReloadPhaseType::Preparing, ReloadPhaseType::Failed]
        );
    } else {
        check(&error);
        assert_eq!(events.take_phases(), []);
    }
    assert_eq!(
        answer(&runtime),
        Some(100),
        "{dir_name}: the old image still answers"
    );
    assert_eq!(runtime.revision(), revision);
    assert_eq!(runtime.store().len(), 1);
    assert_eq!(
        reclaim_all(&runtime),
        0,
        "{dir_name}: every refused image is closed"
    );
}

#[test]
fn broken_bundles_are_refused_with_typed_errors_and_the_old_image_keeps_answering() {
    let abi = |error: &RuntimeError| {
        assert!(
            matches!(
                error,
                RuntimeError::Loader(LoaderError::AbiVersionMismatch {
                    expected: 1,
                    found: 999,
                    ..
                })
            ),
            "{error:?}"
        );
    };
    assert_refused("broken-abi-version", abi, true);
    assert_refused(
        "broken-no-layout",
        |error| {
            assert!(
                matches!(
                    error,
                    RuntimeError::Loader(LoaderError::MissingSymbol {
                        symbol: "holdfast_abi_layout",
                        ..
                    })
                ),
                "{error:?}"
            );
        },
        true,
    );
    assert_refused(
        "broken-no-init",
        |error| {
            assert!(
                matches!(
                    error,
                    RuntimeError::Loader(LoaderError::MissingSymbol {
                        symbol: "holdfast_plugin_init",
                        ..
                    })
                ),
                "{error:?}"
            );
        },
        true,
    );
    assert_refused(
        "broken-layout",
        |error| {
            assert!(
                matches!(
                    error,
                    RuntimeError::Loader(LoaderError::LayoutMismatch {
                        type_name: "GuestContractInterface",
                        expected_size: 64,
                        found_size: 56,
                        ..
                    })
                ),
                "{error:?}"
            );
        },
        true,
    );
    assert_refused(
        "broken-init-error",
        |error| match error {
            RuntimeError::Loader(LoaderError::InitFailed { code, message, .. }) => {
                assert_eq!(
                    (*code, message.as_str()),
                    (AbiErrorCode::InitFailed as u32, "init refuses on purpose")
                );
            }
            other => panic!("{other:?}"),
        },
        true,
    );
    assert_refused(
        "broken-function-count",
        |error| match error {
            RuntimeError::Validation {
                error:
                    ValidationError::FunctionCountMismatch {
                        contract,
                        manifest,
                        registered,
                    },
                ..
            } => assert_eq!(
                (contract.as_str(), *manifest, *registered),
                ("reload.test@1", 2, 1)
            ),
            other => panic!("{other:?}"),
        },
        true,
    );
    assert_refused(
        "broken-undeclared",
        |error| match error {
            RuntimeError::Validation {
                error: ValidationError::ContractNotInManifest { contract },
                ..
            } => assert_eq!(contract, "reload.test@1"),
            other => panic!("{other:?}"),
        },
        true,
    );
}

#[test]
fn a_tampered_manifest_is_refused_before_any_event() {
    let copy = common::copy_bundle("reload-v2");
    let manifest = copy.path().join("manifest.toml");
    let text = std::fs::read_to_string(&manifest).unwrap();
    let tampered = text.replace(
        &holdfast_plugin_abi::BundleId::new("reload-plugin").to_string(),
        "0x0000000000000001",
    );
    std::fs::write(&manifest, tampered).unwrap();
    let check = |error: &RuntimeError| {
        assert!(
            matches!(
                error,
                RuntimeError::Manifest {
                    error: ManifestError::IdMismatch { .. },
                    ..
                }
            ),
            "{error:?}"
        );
    };
    let (runtime, events) = recording_runtime();
    check(&runtime.load_bundle(copy.path()).unwrap_err());
    runtime.load_bundle(Path::new(RELOAD_V1_DIR)).unwrap();
    check(&runtime.reload_bundle(copy.path()).unwrap_err());
    assert_eq!(events.take_phases(), []);
    assert_eq!(answer(&runtime), Some(100));
}

#[test]
fn after_refusals_the_runtime_loads_and_calls_v1() {
    let runtime = make_hot_reload_runtime();
    for broken in [
        "broken-abi-version",
        "broken-init-error",
        "broken-register-then-fail",
        "broken-undeclared",
    ] {
        runtime.load_bundle(&bundle_dir(broken)).unwrap_err();
    }
    runtime.load_bundle(Path::new(RELOAD_V1_DIR)).unwrap();
    assert_eq!(answer(&runtime), Some(100));
    assert_eq!(runtime.store().len(), 1);
    assert_eq!(reclaim_all(&runtime), 0);
}

#[test]
fn a_partially_registered_image_is_closed_only_after_the_grace_period() {
    let runtime = make_hot_reload_runtime();
    let error = runtime
        .load_bundle(&bundle_dir("broken-register-then-fail"))
        .unwrap_err();
    assert!(
        matches!(
            &error,
            RuntimeError::Loader(LoaderError::InitFailed { code: 17, .. })
        ),
        "{error:?}"
    );
    assert!(runtime.pending_closes() >= 1);
    assert!(
        runtime.find_guest_contract(RELOAD_TEST, 0).is_err(),
        "never findable"
    );
    {
        let _pinned = epoch::pin();
        assert!(runtime.reclaim() >= 1, "a pinned thread holds the image open");
    }
    assert_eq!(reclaim_all(&runtime), 0);
    assert!(runtime.find_guest_contract(RELOAD_TEST, 0).is_err());
    assert_eq!(runtime.store().len(), 0);
}

#[test]
fn lifecycle_calls_from_a_reload_callback_are_reentrant_errors() {
    let outcomes = Arc::new(Mutex::new(Vec::new()));
    let runtime_slot: Arc<Mutex<Option<std::sync::Weak<Runtime>>>> = Arc::new(Mutex::new(None));
    let (sink, slot) = (outcomes.clone(), runtime_slot.clone());
    let runtime = Runtime::builder()
        .config(hot_reload_config())
        .loader(TestNativeLoader::new())
        .on_reload(move |_, phase| {
            if phase.phase_type != ReloadPhaseType::Preparing {
                return;
            }
            let runtime = slot.lock().unwrap().as_ref().unwrap().upgrade().unwrap();
            let mut sink = sink.lock().unwrap();
            sink.push(runtime.reload_bundle(Path::new(RELOAD_V2_DIR)).unwrap_err());
            sink.push(runtime.load_bundle(&bundle_dir("c-plugin")).unwrap_err());
            sink.push(
                runtime
                    .unload_bundle(holdfast_plugin_abi::BundleId::new("reload-plugin"))
                    .unwrap_err(),
            );
        })
        .build()
        .unwrap();
    *runtime_slot.lock().unwrap() = Some(Arc::downgrade(&runtime));
    runtime.load_bundle(Path::new(RELOAD_V1_DIR)).unwrap();
    runtime.reload_bundle(Path::new(RELOAD_V2_DIR)).unwrap();
    let outcomes = outcomes.lock().unwrap();
    let operations: Vec<&str> = outcomes
        .iter()
        .map(|error| match error {
            RuntimeError::ReentrantLifecycle { operation } => *operation,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(operations, ["reload", "load", "unload"]);
    assert_eq!(answer(&runtime), Some(200), "the outer reload completed");
    assert_eq!(runtime.bundles().len(), 1);
}

#[test]
fn c_and_cpp_plugins_load_answer_and_reload() {
    let runtime = make_hot_reload_runtime();
    for (dir_name, expected) in [("c-plugin", 300), ("cpp-plugin", 400)] {
        let id = runtime.load_bundle(&bundle_dir(dir_name)).unwrap();
        assert_eq!(answer(&runtime), Some(expected));
        runtime.reload_bundle(&bundle_dir(dir_name)).unwrap();
        assert_eq!(answer(&runtime), Some(expected));
        runtime.unload_bundle(id).unwrap();
        assert_eq!(answer(&runtime), None);
    }
    assert_eq!(reclaim_all(&runtime), 0);
}

#[test]
fn the_host_table_guards_registration_and_lookups() {
    let runtime = make_hot_reload_runtime();
    runtime.load_bundle(&bundle_dir("probe")).unwrap();
    let probe = GuestContractId::new("probe.test", 1).id();
    let call = |index: usize| call_u32(&runtime, probe, index).unwrap();
    assert_eq!(call(0), 500);
    assert_eq!(call(1), AbiErrorCode::Undeclared as u32, "an undeclared lookup");
    assert_eq!(call(2), 1, "get_last_error returned the matching message");
    assert_eq!(
        call(3),
        AbiErrorCode::NotInInit as u32,
        "another thread during init"
    );
    assert_eq!(call(4), AbiErrorCode::NotInInit as u32, "outside init");
    assert_eq!(
        call(5),
        AbiErrorCode::NotFound as u32,
        "a declared dependency that is not loaded"
    );
}

#[test]
fn dropping_the_runtime_closes_every_image_and_deletes_every_shadow_file() {
    let shadow = tempfile::tempdir().unwrap();
    let runtime = Runtime::builder()
        .config(hot_reload_config())
        .loader(TestNativeLoader::with_shadow_dir(shadow.path().to_path_buf()))
        .build()
        .unwrap();
    runtime.load_bundle(Path::new(RELOAD_V1_DIR)).unwrap();
    runtime.reload_bundle(Path::new(RELOAD_V2_DIR)).unwrap();
    runtime.load_bundle(&bundle_dir("counter-v1")).unwrap();
    assert_eq!(reclaim_all(&runtime), 0, "v1's first image is closed");
    let _pinned = epoch::pin();
    runtime.reload_bundle(Path::new(RELOAD_V1_DIR)).unwrap();
    assert!(runtime.pending_closes() >= 1, "the pin keeps retired images open");
    // v2 (retired, held by the pin), counter v1 and the new v1 image.
    assert_eq!(std::fs::read_dir(shadow.path()).unwrap().count(), 3);
    drop(runtime);
    assert_eq!(std::fs::read_dir(shadow.path()).unwrap().count(), 0);
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    assert!(
        !maps.contains(shadow.path().to_str().unwrap()),
        "no image of the runtime is mapped"
    );
}
