//! Reloads under concurrency (spec §10.2 tests 7, 8 and 9, and the stress
//! test the issue asks for): handles across swaps and unloads, 100
//! alternating reloads, events that never nest, reloaders racing each
//! other, and dispatchers that keep calling (through a pinned resolve or a
//! `CachedContract`) while another thread reloads back to back.

mod common;
#[macro_use]
#[path = "common/fixtures.rs"]
mod fixtures;

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};

use common::{EventLog, TestNativeLoader, call_u32, copy_bundle, reclaim_all, recording_runtime};
use fixtures::{RELOAD_V1_DIR, RELOAD_V2_DIR, hot_reload_config, make_hot_reload_runtime, v2_so_path};
use holdfast_plugin::{CachedContract, RegistryError, Runtime, RuntimeError, epoch};
use holdfast_plugin_abi::{
    GuestContractHandle, GuestContractId, GuestContractInterface, PluginDescriptor, ReloadPhaseType,
    StringView, Version,
};

const RELOAD_TEST: u64 = GuestContractId::new("reload.test", 1).id();

fn v1() -> &'static Path {
    Path::new(RELOAD_V1_DIR)
}

fn v2() -> &'static Path {
    Path::new(RELOAD_V2_DIR)
}

/// Calls `functions[0]` of `interface` (an `extern "C" fn() -> u32`).
fn call_first(interface: &GuestContractInterface) -> u32 {
    // SAFETY: the caller holds the guard `interface` was resolved under.
    let function = unsafe { interface.native_functions() }.expect("native")[0];
    // SAFETY: reload.test's function 0 has this signature.
    let function = unsafe { std::mem::transmute::<*const (), extern "C" fn() -> u32>(function) };
    function()
}

static SWAPPED_A: GuestContractInterface =
    make_interface!(GuestContractId::new("swap.test", 1), Version::new(1, 0, 0));
static SWAPPED_B: GuestContractInterface =
    make_interface!(GuestContractId::new("swap.test", 1), Version::new(1, 3, 0));

/// Registers `interface` for `contract` straight in the runtime's store, as
/// a host may, under a made-up bundle ID.
fn register_in_store(
    runtime: &Runtime,
    contract: &'static str,
    interface: &'static GuestContractInterface,
) -> GuestContractHandle {
    let descriptor = PluginDescriptor {
        name: StringView::from_static_str("host"),
        contract_name: StringView::from_static_str(contract),
        version: Version::new(1, 0, 0),
    };
    // SAFETY: static strings and a static interface.
    unsafe {
        runtime.store().register_guest_contract(
            descriptor,
            interface,
            contract.into(),
            holdfast_plugin_abi::BundleId::from_u64(7),
        )
    }
    .unwrap()
}

#[test]
fn direct_swaps_keep_the_handle_and_change_what_it_resolves_to() {
    let runtime = make_hot_reload_runtime();
    let handle = register_in_store(&runtime, "swap.test", &SWAPPED_A);
    for round in 0..50 {
        let next = if round % 2 == 0 { &SWAPPED_B } else { &SWAPPED_A };
        runtime
            .store()
            .swap_guest_contract_interface(handle.index, Arc::new(*next))
            .unwrap();
        let minor = runtime
            .with_guest_contract(handle, |interface| interface.contract_version.minor)
            .unwrap();
        assert_eq!(minor, next.contract_version.minor);
        let id = GuestContractId::new("swap.test", 1).id();
        assert_eq!(
            runtime.find_guest_contract(id, minor),
            Ok(handle),
            "lookups see the new minor"
        );
        assert!(runtime.find_guest_contract(id, minor + 1).is_err());
    }
    assert_eq!(
        runtime.find_guest_contract(GuestContractId::new("swap.test", 1).id(), 0),
        Ok(handle)
    );
}

#[test]
fn one_hundred_alternating_reloads_answer_their_version_and_fire_one_reloaded_each() {
    let (runtime, events) = recording_runtime();
    runtime.load_bundle(v1()).unwrap();
    let handle = runtime.find_guest_contract(RELOAD_TEST, 0).unwrap();
    for round in 0..100 {
        let (dir, expected) = if round % 2 == 0 { (v2(), 200) } else { (v1(), 100) };
        runtime.reload_bundle(dir).unwrap();
        assert_eq!(
            call_u32(&runtime, RELOAD_TEST, 0),
            Some(expected),
            "round {round}"
        );
        assert_eq!(
            runtime.find_guest_contract(RELOAD_TEST, 0),
            Ok(handle),
            "the handle survives"
        );
        let fired = events.take();
        assert_eq!(fired.len(), 2, "round {round}: {fired:?}");
        assert_eq!(fired[0].0, ReloadPhaseType::Preparing);
        assert_eq!(fired[1].0, ReloadPhaseType::Reloaded);
        assert_eq!(fired[1].1, "reload-plugin");
    }
    assert_eq!(runtime.revision(), 101);
    assert_eq!(reclaim_all(&runtime), 0);
}

#[test]
fn handles_go_stale_after_unload_and_a_reloaded_bundle_gets_a_new_generation() {
    let runtime = make_hot_reload_runtime();
    let id = runtime.load_bundle(v1()).unwrap();
    let first = runtime.find_guest_contract(RELOAD_TEST, 0).unwrap();
    runtime.unload_bundle(id).unwrap();
    assert_eq!(
        runtime.resolve_guest_contract(first),
        Err(RegistryError::StaleHandle {
            index: first.index,
            generation: first.generation
        })
    );
    runtime.load_bundle(v2()).unwrap();
    let second = runtime.find_guest_contract(RELOAD_TEST, 0).unwrap();
    assert_eq!(second.index, first.index, "the vacated slot is reused");
    assert_eq!(second.generation, first.generation + 1);
    assert!(runtime.resolve_guest_contract(first).is_err());
    for bad in [
        GuestContractHandle::NULL,
        GuestContractHandle {
            index: 0,
            generation: 0,
        },
    ] {
        assert!(runtime.resolve_guest_contract(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn two_reloader_threads_interleave_without_panics() {
    let runtime = make_hot_reload_runtime();
    runtime.load_bundle(v1()).unwrap();
    std::thread::scope(|scope| {
        for dir in [v1(), v2()] {
            let runtime = &runtime;
            scope.spawn(move || {
                for _ in 0..25 {
                    runtime.reload_bundle(dir).unwrap();
                }
            });
        }
    });
    let answer = call_u32(&runtime, RELOAD_TEST, 0).unwrap();
    assert!(answer == 100 || answer == 200);
    assert_eq!(runtime.revision(), 51);
}

#[test]
fn four_synchronized_reloaders_never_overlap_and_the_contract_always_resolves() {
    let in_flight = Arc::new(AtomicI32::new(0));
    let peak = Arc::new(AtomicI32::new(0));
    let (inside, highest) = (in_flight.clone(), peak.clone());
    let runtime = Runtime::builder()
        .config(hot_reload_config())
        .loader(TestNativeLoader::new())
        .on_reload(move |_, phase| match phase.phase_type {
            ReloadPhaseType::Preparing => {
                let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
                highest.fetch_max(now, Ordering::SeqCst);
            }
            ReloadPhaseType::Reloaded | ReloadPhaseType::Failed => {
                inside.fetch_sub(1, Ordering::SeqCst);
            }
            ReloadPhaseType::Unloading => {}
        })
        .build()
        .unwrap();
    runtime.load_bundle(v1()).unwrap();
    let barrier = Barrier::new(4);
    for _round in 0..10 {
        std::thread::scope(|scope| {
            for thread in 0..4 {
                let (runtime, barrier) = (&runtime, &barrier);
                scope.spawn(move || {
                    barrier.wait();
                    runtime
                        .reload_bundle(if thread % 2 == 0 { v1() } else { v2() })
                        .unwrap();
                });
            }
        });
        assert!(runtime.find_guest_contract(RELOAD_TEST, 0).is_ok());
        assert_eq!(in_flight.load(Ordering::SeqCst), 0);
    }
    assert_eq!(peak.load(Ordering::SeqCst), 1, "Preparing never nests");
}

/// Four dispatchers call the contract while the main thread reloads;
/// `dispatch` makes one call and returns its answer.
fn dispatch_during_reloads(reloads: usize, dispatch: impl Fn(&Runtime) -> Option<u32> + Sync) {
    let runtime = make_hot_reload_runtime();
    runtime.load_bundle(v1()).unwrap();
    let stop = AtomicBool::new(false);
    let calls = AtomicU64::new(0);
    std::thread::scope(|scope| {
        for _ in 0..4 {
            scope.spawn(|| {
                while !stop.load(Ordering::Relaxed) {
                    let answer = dispatch(&runtime).expect("the contract resolves at every instant");
                    assert!(answer == 100 || answer == 200, "answer {answer}");
                    calls.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
        for round in 0..reloads {
            runtime
                .reload_bundle(if round % 2 == 0 { v2() } else { v1() })
                .unwrap();
            runtime.reclaim();
        }
        stop.store(true, Ordering::Relaxed);
    });
    assert!(calls.load(Ordering::Relaxed) > 0);
    assert_eq!(reclaim_all(&runtime), 0, "every replaced image was closed");
}

#[test]
fn four_threads_dispatch_with_a_pinned_resolve_during_100_reloads() {
    dispatch_during_reloads(100, |runtime| {
        let guard = epoch::pin();
        let handle = runtime.find_guest_contract(RELOAD_TEST, 0).ok()?;
        let interface = runtime.resolve_guest_contract(handle).ok()?;
        // SAFETY: resolved under `guard`, pinned before the resolve and held
        // across the call.
        let answer = call_first(unsafe { &*interface });
        drop(guard);
        Some(answer)
    });
}

#[test]
fn cached_contracts_see_only_the_old_or_the_new_version_during_back_to_back_reloads() {
    dispatch_during_reloads(300, |runtime| {
        let handle = runtime.find_guest_contract(RELOAD_TEST, 0).ok()?;
        let mut cached = CachedContract::new(runtime, handle);
        let guard = epoch::pin();
        let mut last = 0;
        for _ in 0..64 {
            last = call_first(cached.get(&guard).ok()?);
        }
        Some(last)
    });
}

#[test]
fn reloading_a_library_replaced_at_the_same_path_runs_the_new_code() {
    let copy = copy_bundle("reload-v1");
    let runtime = make_hot_reload_runtime();
    runtime.load_bundle(copy.path()).unwrap();
    assert_eq!(call_u32(&runtime, RELOAD_TEST, 0), Some(100));
    let library = copy.path().join(common::library_file_name("reload_plugin_v1"));
    std::fs::write(&library, std::fs::read(v2_so_path()).unwrap()).unwrap();
    runtime.reload_bundle(&library).unwrap();
    assert_eq!(call_u32(&runtime, RELOAD_TEST, 0), Some(200));
}

#[test]
fn reload_refusals_before_preparing_fire_no_event() {
    let events = EventLog::default();
    let runtime = Runtime::builder()
        .config(hot_reload_config())
        .loader(TestNativeLoader::new())
        .on_reload(events.callback())
        .build()
        .unwrap();
    assert!(matches!(
        runtime.reload_bundle(v1()),
        Err(RuntimeError::BundleNotLoaded { .. })
    ));
    let disabled = Runtime::builder()
        .loader(TestNativeLoader::new())
        .build()
        .unwrap();
    disabled.load_bundle(v1()).unwrap();
    assert!(matches!(
        disabled.reload_bundle(v2()),
        Err(RuntimeError::HotReloadDisabled)
    ));
    assert_eq!(call_u32(&disabled, RELOAD_TEST, 0), Some(100));
    assert_eq!(events.take(), []);
}

static INTRUDER: GuestContractInterface =
    make_interface!(GuestContractId::new("intruder.test", 1), Version::new(1, 0, 0));

#[test]
fn a_slot_emptied_through_the_store_is_neither_swapped_nor_vacated_by_the_runtime() {
    let runtime = make_hot_reload_runtime();
    let id = runtime.load_bundle(v1()).unwrap();
    let handle = runtime.find_guest_contract(RELOAD_TEST, 0).unwrap();
    runtime.store().unregister_guest_contract(handle).unwrap();
    let intruder = register_in_store(&runtime, "intruder.test", &INTRUDER);
    assert_eq!(intruder.index, handle.index, "the emptied slot was reused");

    let error = runtime.reload_bundle(v2()).unwrap_err();
    let RuntimeError::ReloadRolledBack { source, .. } = error else {
        panic!("{error:?}");
    };
    assert!(
        matches!(*source, RuntimeError::Registry(RegistryError::StaleHandle { .. })),
        "{source:?}"
    );
    runtime.unload_bundle(id).unwrap();
    assert!(
        runtime.resolve_guest_contract(intruder).is_ok(),
        "someone else's provider is untouched"
    );
    runtime.load_bundle(v2()).unwrap();
    assert_eq!(call_u32(&runtime, RELOAD_TEST, 0), Some(200));
    assert_eq!(reclaim_all(&runtime), 0);
}

#[test]
fn reload_by_id_uses_the_recorded_directory_and_refuses_a_renamed_manifest() {
    let copy = copy_bundle("reload-v1");
    let runtime = make_hot_reload_runtime();
    let id = runtime.load_bundle(copy.path()).unwrap();
    let library = copy.path().join(common::library_file_name("reload_plugin_v1"));
    std::fs::write(&library, std::fs::read(v2_so_path()).unwrap()).unwrap();
    runtime.reload_bundle_by_id(id).unwrap();
    assert_eq!(call_u32(&runtime, RELOAD_TEST, 0), Some(200));

    let renamed = common::manifest_text(
        "renamed",
        "1.0.0",
        "reload_plugin_v1",
        &[("reload.test@1", 1)],
        "",
        "",
    );
    std::fs::write(copy.path().join("manifest.toml"), renamed).unwrap();
    let error = runtime.reload_bundle_by_id(id).unwrap_err();
    assert!(
        matches!(&error, RuntimeError::BundleNotLoaded { bundle } if *bundle == id.to_string()),
        "{error:?}"
    );
    assert_eq!(call_u32(&runtime, RELOAD_TEST, 0), Some(200));
    assert_eq!(runtime.bundles().len(), 1);
}
