//! State-preserving reload (spec §8, §10.2 test 11): a counter keeps its
//! count across a reload to new code, a failing restore rolls everything
//! back, instances of a contract without hooks go stale, and tracked
//! instances cannot be made while their bundle is being reloaded.

mod common;

use std::ffi::c_void;
use std::sync::{Arc, Mutex, OnceLock, Weak};

use common::{TestNativeLoader, bundle_dir, recording_runtime};
use holdfast_plugin::{Runtime, RuntimeError};
use holdfast_plugin_abi::{
    GuestContractHandle, GuestContractId, InstanceHandle, ReloadPhaseType, RuntimeConfig,
};

const COUNTER: u64 = GuestContractId::new("demo.Counter", 1).id();
const RELOAD_TEST: u64 = GuestContractId::new("reload.test", 1).id();

/// Calls counter function `index` (0 increment, 1 get) on `instance`.
fn counter_call(runtime: &Runtime, instance: InstanceHandle, index: usize) -> u64 {
    let data = runtime.resolve_guest_instance(instance).unwrap().data;
    let guard = holdfast_plugin::epoch::pin();
    let handle = runtime.find_guest_contract(COUNTER, 0).unwrap();
    let interface = runtime.store().resolve_pinned(handle, &guard).unwrap();
    // SAFETY: resolved under `guard`, held across the call.
    let function = unsafe { interface.native_functions() }.unwrap()[index];
    // SAFETY: the counter's functions take the instance data.
    let function = unsafe { std::mem::transmute::<*const (), extern "C" fn(*mut c_void) -> u64>(function) };
    function(data)
}

fn counter_counted_to_five(runtime: &Runtime) -> InstanceHandle {
    runtime.load_bundle(&bundle_dir("counter-v1")).unwrap();
    let handle = runtime.find_guest_contract(COUNTER, 0).unwrap();
    // SAFETY: the counter's constructor takes null arguments.
    let instance = unsafe { runtime.create_guest_instance(handle, std::ptr::null()) }.unwrap();
    for expected in 1..=5 {
        assert_eq!(counter_call(runtime, instance, 0), expected);
    }
    instance
}

#[test]
fn a_counter_keeps_its_count_across_a_reload_to_new_code() {
    let (runtime, events) = recording_runtime();
    let instance = counter_counted_to_five(&runtime);
    runtime.reload_bundle(&bundle_dir("counter-v2")).unwrap();
    assert_eq!(
        events.take_phases(),
        [ReloadPhaseType::Preparing, ReloadPhaseType::Reloaded]
    );
    assert_eq!(counter_call(&runtime, instance, 1), 5, "restored");
    assert_eq!(counter_call(&runtime, instance, 0), 15, "v2 adds 10");
    let stats = runtime.last_reload_stats().unwrap();
    assert_eq!((stats.instances_migrated, stats.instances_dropped), (1, 0));
    runtime.destroy_guest_instance(instance).unwrap();
    assert!(matches!(
        runtime.resolve_guest_instance(instance),
        Err(RuntimeError::InstanceGone { .. })
    ));
}

#[test]
fn a_failing_restore_rolls_the_whole_reload_back() {
    let (runtime, events) = recording_runtime();
    let instance = counter_counted_to_five(&runtime);
    let revision = runtime.revision();
    let error = runtime
        .reload_bundle(&bundle_dir("counter-v2-reject"))
        .unwrap_err();
    let RuntimeError::ReloadRolledBack { source, .. } = error else {
        panic!("{error:?}");
    };
    match *source {
        RuntimeError::StateMigration {
            stage,
            instance: failed,
            ref message,
            ..
        } => {
            assert_eq!(stage, "restore");
            assert_eq!(failed, instance);
            assert_eq!(message, "this counter refuses every state");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        events.take_phases(),
        [ReloadPhaseType::Preparing, ReloadPhaseType::Failed]
    );
    assert_eq!(runtime.revision(), revision);
    assert_eq!(
        counter_call(&runtime, instance, 1),
        5,
        "the old instance is untouched"
    );
    assert_eq!(counter_call(&runtime, instance, 0), 6, "v1 code still counts");
}

#[test]
fn state_larger_than_the_limit_rolls_back_at_save() {
    let runtime = Runtime::builder()
        .config(RuntimeConfig {
            hot_reload_enabled: true,
            max_state_bytes: 4,
            ..Default::default()
        })
        .loader(TestNativeLoader::new())
        .build()
        .unwrap();
    let instance = counter_counted_to_five(&runtime);
    let error = runtime.reload_bundle(&bundle_dir("counter-v2")).unwrap_err();
    let RuntimeError::ReloadRolledBack { source, .. } = error else {
        panic!("{error:?}");
    };
    assert!(
        matches!(*source, RuntimeError::StateMigration { stage: "save", .. }),
        "{source:?}"
    );
    assert_eq!(counter_call(&runtime, instance, 0), 6);
}

#[test]
fn instances_of_a_contract_without_hooks_go_stale() {
    let (runtime, _events) = recording_runtime();
    runtime.load_bundle(&bundle_dir("reload-v1")).unwrap();
    let handle = runtime.find_guest_contract(RELOAD_TEST, 0).unwrap();
    // SAFETY: reload.test's constructor ignores its arguments.
    let instance = unsafe { runtime.create_guest_instance(handle, std::ptr::null()) }.unwrap();
    runtime.resolve_guest_instance(instance).unwrap();
    runtime.reload_bundle(&bundle_dir("reload-v2")).unwrap();
    assert!(matches!(
        runtime.resolve_guest_instance(instance),
        Err(RuntimeError::InstanceGone { .. })
    ));
    let stats = runtime.last_reload_stats().unwrap();
    assert_eq!((stats.instances_migrated, stats.instances_dropped), (0, 1));
}

/// What the Preparing callback creates an instance of.
type Target = (Weak<Runtime>, GuestContractHandle);

#[test]
fn creating_an_instance_during_preparing_is_busy() {
    let outcome: Arc<Mutex<Option<Result<InstanceHandle, RuntimeError>>>> = Arc::default();
    let slot: Arc<OnceLock<Target>> = Arc::default();
    let (sink, target) = (outcome.clone(), slot.clone());
    let runtime = Runtime::builder()
        .config(RuntimeConfig {
            hot_reload_enabled: true,
            ..Default::default()
        })
        .loader(TestNativeLoader::new())
        .on_reload(move |_, phase| {
            if phase.phase_type == ReloadPhaseType::Preparing {
                let (runtime, handle) = target.get().unwrap().clone();
                let runtime = runtime.upgrade().unwrap();
                // SAFETY: the counter's constructor takes null arguments.
                *sink.lock().unwrap() =
                    Some(unsafe { runtime.create_guest_instance(handle, std::ptr::null()) });
            }
        })
        .build()
        .unwrap();
    runtime.load_bundle(&bundle_dir("counter-v1")).unwrap();
    let handle = runtime.find_guest_contract(COUNTER, 0).unwrap();
    slot.set((Arc::downgrade(&runtime), handle)).unwrap();
    runtime.reload_bundle(&bundle_dir("counter-v2")).unwrap();
    let outcome = outcome.lock().unwrap().take().unwrap();
    assert!(
        matches!(&outcome, Err(RuntimeError::BundleBusy { bundle }) if bundle == "counter-plugin"),
        "{outcome:?}"
    );
    // SAFETY: as above.
    unsafe { runtime.create_guest_instance(handle, std::ptr::null()) }.expect("not busy after Reloaded");
}
