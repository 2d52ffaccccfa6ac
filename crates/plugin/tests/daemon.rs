//! Daemon kinds provided by bundles (spec/host.md §3), through the safe API
//! of `holdfast_plugin::daemon`: daemons count and emit exactly what their
//! code says; their state survives a save and restore and a hot reload to
//! code with another state format; a reload whose restore fails for any
//! daemon, or whose library has the wrong layout, rolls back with every
//! count unchanged and the old code serving; plugin panics come back as
//! typed errors; a C kind works like the Rust one; limits on outputs and
//! state are enforced.

mod common;
#[macro_use]
#[path = "common/fixtures.rs"]
mod fixtures;

use std::sync::{Arc, Mutex, OnceLock, Weak};

use common::{TestNativeLoader, bundle_dir, recording_runtime};
use holdfast_plugin::daemon::{DaemonInstance, DaemonKindInfo, OutputLimits};
use holdfast_plugin::{DaemonCallError, LoaderError, Runtime, RuntimeError};
use holdfast_plugin_abi::{
    AbiErrorCode, BundleId, GuestContractId, GuestContractInterface, InstanceHandle, PluginDescriptor,
    ReloadPhaseType, RuntimeConfig, StringView, Version,
};

const COUNTER: &str = "daemon_counter_v1";
const COUNTER_V2: &str = "daemon_counter_v2";
const COUNTER_V3_BROKEN: &str = "daemon_counter_v3_broken";
const COUNTER_RESTORE_FAILS_ONE: &str = "daemon_counter_restore_fails_one";
const COUNTER_BAD_LAYOUT: &str = "daemon_counter_bad_layout";
const PANICKY: &str = "daemon_panicky";
const NONDET: &str = "daemon_nondet";
const C_COUNTER: &str = "c_counter_daemon";

const STATE_ERROR: u32 = AbiErrorCode::StateError as u32;
const INTERNAL: u32 = AbiErrorCode::Internal as u32;

/// What counter v1 (and the C counter, and panicky) emits for `count`.
fn v1_output(count: u64) -> Vec<u8> {
    count.to_le_bytes().to_vec()
}

/// What counter v2 emits for `count`: the count and the marker byte 2.
fn v2_output(count: u64) -> Vec<u8> {
    let mut output = count.to_le_bytes().to_vec();
    output.push(2);
    output
}

/// Processes `event` and returns what the daemon emitted.
fn process(daemon: &DaemonInstance, event: &[u8]) -> Vec<Vec<u8>> {
    let mut outputs = Vec::new();
    daemon
        .process(event, &mut |output| outputs.push(output.to_vec()))
        .unwrap_or_else(|error| panic!("{error}"));
    outputs
}

/// Processes `events` one-byte events.
fn count_to(daemon: &DaemonInstance, events: u64) {
    for _ in 0..events {
        process(daemon, b"e");
    }
}

/// The count in a counter's saved state (its first 8 bytes).
fn saved_count(daemon: &DaemonInstance) -> u64 {
    let state = daemon.save().unwrap();
    u64::from_le_bytes(state[..8].try_into().unwrap())
}

/// `error` is the plugin's refusal to restore, with exactly these values.
fn assert_restore_failed(error: DaemonCallError, kind: &str, from: Version, code: u32, message: &str) {
    match error {
        DaemonCallError::RestoreFailed {
            kind: got_kind,
            from: got_from,
            code: got_code,
            message: got_message,
        } => assert_eq!(
            (got_kind.as_str(), got_from, got_code, got_message.as_str()),
            (kind, from, code, message)
        ),
        other => panic!("{other:?}"),
    }
}

/// `error` is the rollback of a reload of bundle `counter` whose new code
/// refused to restore `instance` with a state error and `message`.
fn assert_restore_rolled_back(error: RuntimeError, instance: InstanceHandle, message: &str) {
    let RuntimeError::ReloadRolledBack { bundle, source } = error else {
        panic!("{error:?}");
    };
    assert_eq!(bundle, "counter");
    match *source {
        RuntimeError::StateMigration {
            stage,
            instance: failed,
            code,
            message: ref got,
            ref contract,
            ..
        } => assert_eq!(
            (stage, failed, code, got.as_str(), contract.as_str()),
            ("restore", instance, STATE_ERROR, message, "daemon.counter@1")
        ),
        ref other => panic!("{other:?}"),
    }
}

fn runtime_with(config: RuntimeConfig) -> Arc<Runtime> {
    Runtime::builder()
        .config(config)
        .loader(TestNativeLoader::new())
        .build()
        .unwrap()
}

/// `count` daemons of counter v1, the i-th counted to `counts[i]`.
fn counters(runtime: &Arc<Runtime>, counts: &[u64]) -> Vec<DaemonInstance> {
    counts
        .iter()
        .map(|&count| {
            let daemon = runtime.create_daemon("counter").unwrap();
            count_to(&daemon, count);
            daemon
        })
        .collect()
}

/// Every daemon still counts with v1 code from where it was.
fn assert_v1_serves_every_count(daemons: &[DaemonInstance], counts: &[u64]) {
    for (daemon, &count) in daemons.iter().zip(counts) {
        assert_eq!(daemon.version().unwrap(), Version::new(1, 0, 0));
        assert_eq!(
            process(daemon, b"e"),
            [v1_output(count + 1)],
            "v1 serves from {count}"
        );
    }
}

#[test]
fn daemon_instances_are_send_and_sync() {
    fn send_and_sync<T: Send + Sync>() {}
    send_and_sync::<DaemonInstance>();
    send_and_sync::<DaemonCallError>();
}

#[test]
fn a_counter_daemon_counts_and_emits_each_count_as_eight_bytes() {
    let (runtime, _events) = recording_runtime();
    runtime.load_bundle(&bundle_dir(COUNTER)).unwrap();
    let daemon = runtime.create_daemon("counter").unwrap();
    assert_eq!(daemon.kind(), "counter");
    assert_eq!(daemon.version().unwrap(), Version::new(1, 0, 0));
    assert_eq!(
        daemon.contract(),
        runtime
            .find_guest_contract(GuestContractId::new("daemon.counter", 1).id(), 0)
            .unwrap()
    );
    assert_eq!(process(&daemon, b"a"), [v1_output(1)]);
    assert_eq!(process(&daemon, b""), [v1_output(2)]);
    assert_eq!(process(&daemon, &[0u8; 4096]), [v1_output(3)]);
    assert_eq!(daemon.save().unwrap(), v1_output(3));
}

#[test]
fn a_saved_state_restores_into_a_new_daemon_that_continues_the_count() {
    let (runtime, _events) = recording_runtime();
    runtime.load_bundle(&bundle_dir(COUNTER)).unwrap();
    let original = runtime.create_daemon("counter").unwrap();
    count_to(&original, 5);
    let state = original.save().unwrap();
    assert_eq!(state, 5u64.to_le_bytes());
    let copy = runtime
        .restore_daemon("counter", Version::new(1, 0, 0), &state)
        .unwrap();
    assert_ne!(copy.instance(), original.instance());
    assert_eq!(process(&copy, b"e"), [v1_output(6)]);
    assert_eq!(process(&copy, b"e"), [v1_output(7)]);
    // The two are independent daemons.
    assert_eq!(process(&original, b"e"), [v1_output(6)]);
    // A kind may name its major.
    let by_major = runtime
        .restore_daemon("counter@1", Version::new(1, 0, 0), &state)
        .unwrap();
    assert_eq!(by_major.kind(), "counter");
    assert_eq!(process(&by_major, b"e"), [v1_output(6)]);
}

#[test]
fn a_restore_the_daemon_refuses_is_a_typed_error_with_the_plugins_message() {
    let (runtime, _events) = recording_runtime();
    runtime.load_bundle(&bundle_dir(COUNTER)).unwrap();
    let live = runtime.store().len();
    let error = runtime
        .restore_daemon("counter", Version::new(1, 0, 0), b"short")
        .unwrap_err();
    assert_restore_failed(
        error,
        "counter",
        Version::new(1, 0, 0),
        STATE_ERROR,
        "a counter state of version 1.0.0 cannot be 5 bytes",
    );
    let error = runtime
        .restore_daemon("counter", Version::new(2, 0, 0), &[0; 8])
        .unwrap_err();
    assert!(
        matches!(&error, DaemonCallError::RestoreFailed { message, .. }
            if message == "counter v1 reads states of daemon.counter@1 only"),
        "{error:?}"
    );
    assert_eq!(runtime.store().len(), live);
}

#[test]
fn a_reload_to_v2_carries_every_daemons_count_and_v2_marks_its_outputs() {
    let (runtime, events) = recording_runtime();
    runtime.load_bundle(&bundle_dir(COUNTER)).unwrap();
    let counts = [2, 4, 6];
    let daemons = counters(&runtime, &counts);
    let handles: Vec<_> = daemons.iter().map(DaemonInstance::instance).collect();

    runtime.reload_bundle(&bundle_dir(COUNTER_V2)).unwrap();
    assert_eq!(
        events.take_phases(),
        [ReloadPhaseType::Preparing, ReloadPhaseType::Reloaded]
    );
    let stats = runtime.last_reload_stats().unwrap();
    assert_eq!((stats.instances_migrated, stats.instances_dropped), (3, 0));
    for ((daemon, &count), handle) in daemons.iter().zip(&counts).zip(&handles) {
        assert_eq!(daemon.instance(), *handle, "the same tracked instance");
        assert_eq!(daemon.version().unwrap(), Version::new(1, 1, 0));
        assert_eq!(process(daemon, b"abc"), [v2_output(count + 1)]);
        // v2's own format: the count, then the length of the events v2
        // processed (v1's state had none).
        let mut expected = (count + 1).to_le_bytes().to_vec();
        expected.extend_from_slice(&3u64.to_le_bytes());
        assert_eq!(daemon.save().unwrap(), expected);
    }

    // And back: v1 reads the count at the front of v2's state.
    runtime.reload_bundle(&bundle_dir(COUNTER)).unwrap();
    for (daemon, &count) in daemons.iter().zip(&counts) {
        assert_eq!(daemon.version().unwrap(), Version::new(1, 0, 0));
        assert_eq!(process(daemon, b"e"), [v1_output(count + 2)]);
    }
}

#[test]
fn a_reload_to_code_that_refuses_every_state_rolls_back_and_v1_keeps_counting() {
    let (runtime, events) = recording_runtime();
    runtime.load_bundle(&bundle_dir(COUNTER)).unwrap();
    let counts = [1, 2, 3];
    let daemons = counters(&runtime, &counts);
    let revision = runtime.revision();

    let error = runtime.reload_bundle(&bundle_dir(COUNTER_V3_BROKEN)).unwrap_err();
    assert_restore_rolled_back(error, daemons[0].instance(), "counter v3 refuses every state");
    assert_eq!(
        events.take_phases(),
        [ReloadPhaseType::Preparing, ReloadPhaseType::Failed]
    );
    assert_eq!(runtime.revision(), revision);
    assert_v1_serves_every_count(&daemons, &counts);
}

#[test]
fn a_restore_that_fails_for_one_daemon_among_many_rolls_the_whole_reload_back() {
    let (runtime, events) = recording_runtime();
    runtime.load_bundle(&bundle_dir(COUNTER)).unwrap();
    // Migrated in creation order: the first two are restored by the new
    // code before the third (count 13) fails.
    let counts = [11, 12, 13, 14, 15];
    let daemons = counters(&runtime, &counts);

    let error = runtime
        .reload_bundle(&bundle_dir(COUNTER_RESTORE_FAILS_ONE))
        .unwrap_err();
    assert_restore_rolled_back(
        error,
        daemons[2].instance(),
        "counter v2.1 (refuses 13) refuses the state with count 13",
    );
    assert_eq!(
        events.take_phases(),
        [ReloadPhaseType::Preparing, ReloadPhaseType::Failed]
    );
    assert_v1_serves_every_count(&daemons, &counts);

    // Without a daemon at 13 (the second one is there now), the same code
    // takes every state.
    let mut daemons = daemons;
    drop(daemons.remove(1));
    runtime
        .reload_bundle(&bundle_dir(COUNTER_RESTORE_FAILS_ONE))
        .unwrap();
    assert_eq!(runtime.last_reload_stats().unwrap().instances_migrated, 4);
    for (daemon, count) in daemons.iter().zip([12, 14, 15, 16]) {
        assert_eq!(daemon.version().unwrap(), Version::new(1, 1, 1));
        assert_eq!(process(daemon, b"e"), [v2_output(count + 1)]);
    }
}

#[test]
fn a_bundle_with_a_layout_mismatch_is_refused_at_load_and_at_reload() {
    let (fresh, _events) = recording_runtime();
    let error = fresh.load_bundle(&bundle_dir(COUNTER_BAD_LAYOUT)).unwrap_err();
    assert!(
        matches!(
            &error,
            RuntimeError::Loader(LoaderError::LayoutMismatch {
                bundle,
                type_name: "StateBlob",
                expected_size: 16,
                expected_align: 8,
                found_size: 24,
                found_align: 8,
            }) if bundle == "counter"
        ),
        "{error:?}"
    );
    assert_eq!(fresh.daemon_kinds(), []);
    assert!(matches!(
        fresh.create_daemon("counter"),
        Err(DaemonCallError::KindNotProvided { kind }) if kind == "counter"
    ));

    let (runtime, events) = recording_runtime();
    runtime.load_bundle(&bundle_dir(COUNTER)).unwrap();
    let counts = [2, 5];
    let daemons = counters(&runtime, &counts);
    let error = runtime
        .reload_bundle(&bundle_dir(COUNTER_BAD_LAYOUT))
        .unwrap_err();
    let RuntimeError::ReloadRolledBack { source, .. } = error else {
        panic!("{error:?}");
    };
    assert!(
        matches!(
            *source,
            RuntimeError::Loader(LoaderError::LayoutMismatch {
                type_name: "StateBlob",
                ..
            })
        ),
        "{source:?}"
    );
    assert_eq!(
        events.take_phases(),
        [ReloadPhaseType::Preparing, ReloadPhaseType::Failed]
    );
    assert_v1_serves_every_count(&daemons, &counts);
}

#[test]
fn a_panic_in_process_comes_back_as_a_typed_error_and_the_daemon_keeps_counting() {
    let (runtime, _events) = recording_runtime();
    runtime.load_bundle(&bundle_dir(PANICKY)).unwrap();
    let daemon = runtime.create_daemon("panicky").unwrap();
    assert_eq!(process(&daemon, b"tick"), [v1_output(1)]);
    let mut emitted = 0;
    let error = daemon.process(b"panic", &mut |_| emitted += 1).unwrap_err();
    match error {
        DaemonCallError::ProcessFailed { kind, code, message } => {
            assert_eq!((kind.as_str(), code), ("panicky", INTERNAL));
            assert_eq!(message, "daemon process panicked");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(emitted, 0);
    assert_eq!(process(&daemon, b"tick"), [v1_output(2)]);
}

#[test]
fn a_panic_in_restore_comes_back_as_a_typed_error_and_rolls_a_reload_back() {
    let (runtime, events) = recording_runtime();
    runtime.load_bundle(&bundle_dir(PANICKY)).unwrap();
    let error = runtime
        .restore_daemon("panicky", Version::new(1, 0, 0), &7u64.to_le_bytes())
        .unwrap_err();
    assert_restore_failed(
        error,
        "panicky",
        Version::new(1, 0, 0),
        INTERNAL,
        "daemon restore panicked",
    );
    let restored = runtime
        .restore_daemon("panicky", Version::new(1, 0, 0), &8u64.to_le_bytes())
        .unwrap();
    assert_eq!(process(&restored, b"tick"), [v1_output(9)]);

    // A reload of the bundle onto itself migrates through the same restore:
    // the daemon at 7 makes it panic, and the whole reload rolls back.
    let at_six = runtime.create_daemon("panicky").unwrap();
    count_to(&at_six, 6);
    let at_seven = runtime.create_daemon("panicky").unwrap();
    count_to(&at_seven, 7);
    events.take();
    let error = runtime.reload_bundle(&bundle_dir(PANICKY)).unwrap_err();
    let RuntimeError::ReloadRolledBack { source, .. } = error else {
        panic!("{error:?}");
    };
    assert!(
        matches!(
            &*source,
            RuntimeError::StateMigration { stage: "restore", instance, code, message, .. }
                if *instance == at_seven.instance() && *code == INTERNAL && message == "daemon restore panicked"
        ),
        "{source:?}"
    );
    assert_eq!(
        events.take_phases(),
        [ReloadPhaseType::Preparing, ReloadPhaseType::Failed]
    );
    assert_eq!(process(&restored, b"tick"), [v1_output(10)]);
    assert_eq!(process(&at_six, b"tick"), [v1_output(7)]);
    assert_eq!(process(&at_seven, b"tick"), [v1_output(8)]);
}

#[test]
fn the_c_kind_works_like_counter_v1() {
    let (runtime, events) = recording_runtime();
    runtime.load_bundle(&bundle_dir(C_COUNTER)).unwrap();
    let daemon = runtime.create_daemon("ccounter").unwrap();
    assert_eq!(daemon.version().unwrap(), Version::new(1, 0, 0));
    assert_eq!(process(&daemon, b"a"), [v1_output(1)]);
    assert_eq!(process(&daemon, b""), [v1_output(2)]);
    assert_eq!(process(&daemon, b"abc"), [v1_output(3)]);
    let state = daemon.save().unwrap();
    assert_eq!(state, 3u64.to_le_bytes());

    let copy = runtime
        .restore_daemon("ccounter", Version::new(1, 0, 0), &state)
        .unwrap();
    assert_eq!(process(&copy, b"e"), [v1_output(4)]);
    let error = runtime
        .restore_daemon("ccounter", Version::new(1, 0, 0), b"short")
        .unwrap_err();
    assert!(
        matches!(&error, DaemonCallError::RestoreFailed { code, message, .. }
            if *code == STATE_ERROR && message == "a ccounter state is 8 bytes"),
        "{error:?}"
    );

    // The C code's hooks carry the count across a reload.
    runtime.reload_bundle(&bundle_dir(C_COUNTER)).unwrap();
    assert_eq!(
        events.take_phases(),
        [ReloadPhaseType::Preparing, ReloadPhaseType::Reloaded]
    );
    assert_eq!(process(&daemon, b"e"), [v1_output(4)]);
    assert_eq!(process(&copy, b"e"), [v1_output(5)]);
}

#[test]
fn daemon_kinds_lists_each_kind_with_its_version_and_bundle() {
    let (runtime, _events) = recording_runtime();
    for dir in [COUNTER, PANICKY, C_COUNTER, "reload-v1"] {
        runtime.load_bundle(&bundle_dir(dir)).unwrap();
    }
    let handle = |name: &str| {
        runtime
            .find_guest_contract(GuestContractId::new(name, 1).id(), 0)
            .unwrap()
    };
    let kind = |kind: &str, version: Version, bundle: &str| DaemonKindInfo {
        kind: kind.to_owned(),
        contract: handle(&format!("daemon.{kind}")),
        version,
        bundle: bundle.to_owned(),
    };
    assert_eq!(
        runtime.daemon_kinds(),
        [
            kind("ccounter", Version::new(1, 0, 0), "ccounter"),
            kind("counter", Version::new(1, 0, 0), "counter"),
            kind("panicky", Version::new(1, 0, 0), "panicky"),
        ],
        "reload.test is not a daemon kind"
    );
    runtime.reload_bundle(&bundle_dir(COUNTER_V2)).unwrap();
    let counter = runtime
        .daemon_kinds()
        .into_iter()
        .find(|info| info.kind == "counter")
        .unwrap();
    assert_eq!(counter, kind("counter", Version::new(1, 1, 0), "counter"));
}

#[test]
fn an_output_over_the_limit_is_refused_with_a_typed_error() {
    let (runtime, _events) = recording_runtime();
    runtime.load_bundle(&bundle_dir(COUNTER)).unwrap();
    let daemon = runtime.create_daemon("counter").unwrap();
    let mut emitted = Vec::new();
    let tight = OutputLimits {
        max_output_bytes: 7,
        ..OutputLimits::default()
    };
    let error = daemon
        .process_with_limits(b"e", tight, &mut |output| emitted.push(output.to_vec()))
        .unwrap_err();
    assert!(
        matches!(&error, DaemonCallError::OutputTooLarge { kind, len: 8, max: 7 } if kind == "counter"),
        "{error:?}"
    );
    assert!(emitted.is_empty(), "the refused output never reaches the caller");
    let none = OutputLimits {
        max_outputs: 0,
        ..OutputLimits::default()
    };
    let error = daemon
        .process_with_limits(b"e", none, &mut |output| emitted.push(output.to_vec()))
        .unwrap_err();
    assert!(
        matches!(&error, DaemonCallError::TooManyOutputs { max: 0, .. }),
        "{error:?}"
    );
    assert!(emitted.is_empty());
    // An output exactly at the limit passes. (The refused calls still
    // counted: the daemon decides what a failed event changes.)
    let exact = OutputLimits {
        max_output_bytes: 8,
        max_outputs: 1,
    };
    daemon
        .process_with_limits(b"e", exact, &mut |output| emitted.push(output.to_vec()))
        .unwrap();
    assert_eq!(emitted, [v1_output(3)]);
    assert_eq!(OutputLimits::default().max_output_bytes, 1 << 20);
}

#[test]
fn a_state_over_max_state_bytes_is_refused_both_ways() {
    let runtime = runtime_with(RuntimeConfig {
        hot_reload_enabled: true,
        max_state_bytes: 4,
        ..Default::default()
    });
    runtime.load_bundle(&bundle_dir(COUNTER)).unwrap();
    let daemon = runtime.create_daemon("counter").unwrap();
    count_to(&daemon, 1);
    let error = daemon.save().unwrap_err();
    assert!(
        matches!(&error, DaemonCallError::StateTooLarge { kind, len: 8, max: 4 } if kind == "counter"),
        "{error:?}"
    );
    let error = runtime
        .restore_daemon("counter", Version::new(1, 0, 0), &[0; 8])
        .unwrap_err();
    assert!(
        matches!(&error, DaemonCallError::StateTooLarge { len: 8, max: 4, .. }),
        "{error:?}"
    );
    // The refused save changed nothing.
    assert_eq!(process(&daemon, b"e"), [v1_output(2)]);
}

static HOOKLESS: GuestContractInterface =
    make_interface!(GuestContractId::new("daemon.hookless", 1), Version::new(1, 0, 0));

#[test]
fn kinds_that_are_missing_or_break_the_convention_are_named_in_the_error() {
    let (runtime, _events) = recording_runtime();
    runtime.load_bundle(&bundle_dir(COUNTER)).unwrap();
    for missing in ["nope", "counter@2", "counter@x", "@1", ""] {
        let error = runtime.create_daemon(missing).unwrap_err();
        assert!(
            matches!(&error, DaemonCallError::KindNotProvided { kind } if kind == missing),
            "{missing:?}: {error:?}"
        );
    }
    let descriptor = PluginDescriptor {
        name: StringView::from_static_str("hookless"),
        contract_name: StringView::from_static_str("daemon.hookless"),
        version: Version::new(1, 0, 0),
    };
    // SAFETY: the descriptor's strings and the interface are statics.
    unsafe {
        runtime.store().register_guest_contract(
            descriptor,
            &HOOKLESS,
            "daemon.hookless".into(),
            BundleId::new("host"),
        )
    }
    .unwrap();
    let error = runtime.create_daemon("hookless@1").unwrap_err();
    assert!(
        matches!(
            &error,
            DaemonCallError::NotADaemonContract { kind, contract, reason }
                if kind == "hookless" && contract == "daemon.hookless@1"
                    && *reason == "its function table has no `process`"
        ),
        "{error:?}"
    );
}

/// A daemon kind written here and registered straight in the store, whose
/// functions break the convention on purpose: `process` emits a null
/// payload with a length on the event `null`, and otherwise fails with an
/// unknown code and a 5000-byte message; `save` returns a non-null blob of
/// length 0; `restore` fails with an unknown code.
mod scripted {
    use std::ffi::c_void;

    use holdfast_plugin_abi::daemon::DaemonSink;
    use holdfast_plugin_abi::{
        AbiError, GuestContractId, GuestContractInstance, GuestContractInterface, HostApi, StateBlob,
        StateHooks, StringView, Version,
    };

    static LONG_MESSAGE: [u8; 5000] = [b'x'; 5000];

    unsafe extern "C" fn process(
        _: *mut c_void,
        event: *const u8,
        len: usize,
        sink: *const DaemonSink,
    ) -> AbiError {
        // SAFETY: the host passes the event bytes and a live sink.
        let (event, sink) = unsafe { (std::slice::from_raw_parts(event, len), &*sink) };
        if event == b"null" {
            // SAFETY: the sink's contract; the host must refuse this output.
            return unsafe { (sink.emit)(sink.ctx, std::ptr::null(), 4) };
        }
        AbiError {
            code: 4242,
            message: StringView::from_static(&LONG_MESSAGE),
        }
    }

    unsafe extern "C" fn save(_: *const HostApi, _: GuestContractInstance, out: *mut StateBlob) -> AbiError {
        // SAFETY: `out` is the host's live out-parameter.
        unsafe {
            out.write(StateBlob {
                ptr: std::ptr::NonNull::dangling().as_ptr(),
                len: 0,
            })
        };
        AbiError::ok()
    }

    unsafe extern "C" fn restore(
        _: *const HostApi,
        _: GuestContractInstance,
        _: Version,
        _: StateBlob,
    ) -> AbiError {
        AbiError::with_code(777, "scripted restore refuses")
    }

    unsafe extern "C" fn create(_: *const HostApi, _: *const ()) -> GuestContractInstance {
        GuestContractInstance::null()
    }

    unsafe extern "C" fn destroy(_: *const HostApi, _: GuestContractInstance) {}

    struct Table([*const (); 1]);
    // SAFETY: function addresses only.
    unsafe impl Sync for Table {}

    static FUNCTIONS: Table = Table([process as *const ()]);
    static HOOKS: StateHooks = StateHooks {
        save_state: save,
        restore_state: restore,
    };
    pub(crate) static INTERFACE: GuestContractInterface = GuestContractInterface::native(
        GuestContractId::new("daemon.scripted", 1),
        Version::new(1, 0, 0),
        create,
        destroy,
        FUNCTIONS.0.as_ptr(),
        1,
    )
    .with_state(&HOOKS);
}

#[test]
fn plugins_that_break_the_daemon_convention_get_typed_errors() {
    let (runtime, _events) = recording_runtime();
    let descriptor = PluginDescriptor {
        name: StringView::from_static_str("scripted"),
        contract_name: StringView::from_static_str("daemon.scripted"),
        version: Version::new(1, 0, 0),
    };
    // SAFETY: the descriptor's strings and the interface are statics.
    unsafe {
        runtime.store().register_guest_contract(
            descriptor,
            &scripted::INTERFACE,
            "daemon.scripted".into(),
            BundleId::new("host"),
        )
    }
    .unwrap();
    let daemon = runtime.create_daemon("scripted@1").unwrap();
    let mut emitted = 0;
    let error = daemon.process(b"null", &mut |_| emitted += 1).unwrap_err();
    assert!(
        matches!(&error, DaemonCallError::MalformedOutput { kind } if kind == "scripted"),
        "{error:?}"
    );
    assert_eq!(emitted, 0);
    match daemon.process(b"other", &mut |_| emitted += 1).unwrap_err() {
        DaemonCallError::ProcessFailed { code, message, .. } => {
            assert_eq!(code, 4242, "unknown codes are kept");
            assert_eq!(message, "x".repeat(4096), "messages are copied up to 4 KiB");
        }
        other => panic!("{other:?}"),
    }
    let error = daemon.save().unwrap_err();
    assert!(
        matches!(&error, DaemonCallError::MalformedState { kind } if kind == "scripted"),
        "{error:?}"
    );
    let error = runtime
        .restore_daemon("scripted@1", Version::new(1, 0, 0), b"")
        .unwrap_err();
    assert!(
        matches!(&error, DaemonCallError::RestoreFailed { code: 777, message, .. }
            if message == "scripted restore refuses"),
        "{error:?}"
    );

    // With its provider removed through the store, the daemon's kind is gone.
    runtime
        .store()
        .unregister_guest_contract(daemon.contract())
        .unwrap();
    let error = daemon.process(b"other", &mut |_| {}).unwrap_err();
    assert!(
        matches!(&error, DaemonCallError::KindGone { kind } if kind == "scripted"),
        "{error:?}"
    );
}

#[test]
fn a_daemon_whose_bundle_was_unloaded_reports_its_instance_gone() {
    let (runtime, _events) = recording_runtime();
    let bundle = runtime.load_bundle(&bundle_dir(COUNTER)).unwrap();
    let daemon = runtime.create_daemon("counter").unwrap();
    count_to(&daemon, 2);
    runtime.unload_bundle(bundle).unwrap();
    let gone = |error: DaemonCallError| {
        matches!(error, DaemonCallError::InstanceGone { kind, instance }
            if kind == "counter" && instance == daemon.instance())
    };
    assert!(gone(daemon.process(b"e", &mut |_| {}).unwrap_err()));
    assert!(gone(daemon.save().unwrap_err()));
    assert!(gone(daemon.version().unwrap_err()));
    assert!(matches!(
        runtime.create_daemon("counter"),
        Err(DaemonCallError::KindNotProvided { .. })
    ));
    // Once the kind is back, the daemon is made again from its state.
    runtime.load_bundle(&bundle_dir(COUNTER)).unwrap();
    let again = runtime
        .restore_daemon("counter", Version::new(1, 0, 0), &2u64.to_le_bytes())
        .unwrap();
    assert_eq!(process(&again, b"e"), [v1_output(3)]);
}

#[test]
fn dropping_a_daemon_destroys_its_instance() {
    let (runtime, _events) = recording_runtime();
    runtime.load_bundle(&bundle_dir(COUNTER)).unwrap();
    let daemon = runtime.create_daemon("counter").unwrap();
    let instance = daemon.instance();
    runtime.resolve_guest_instance(instance).unwrap();
    drop(daemon);
    assert!(matches!(
        runtime.resolve_guest_instance(instance),
        Err(RuntimeError::InstanceGone { .. })
    ));
}

/// What the `Preparing` callback tries to create.
type Outcome = Arc<Mutex<Option<Result<DaemonInstance, DaemonCallError>>>>;

#[test]
fn creating_a_daemon_while_its_bundle_reloads_is_refused_as_busy() {
    let outcome: Outcome = Arc::default();
    let slot: Arc<OnceLock<Weak<Runtime>>> = Arc::default();
    let (sink, target) = (outcome.clone(), slot.clone());
    let runtime = Runtime::builder()
        .config(RuntimeConfig {
            hot_reload_enabled: true,
            ..Default::default()
        })
        .loader(TestNativeLoader::new())
        .on_reload(move |_, phase| {
            if phase.phase_type == ReloadPhaseType::Preparing {
                let runtime = target.get().unwrap().upgrade().unwrap();
                *sink.lock().unwrap() = Some(runtime.create_daemon("counter"));
            }
        })
        .build()
        .unwrap();
    slot.set(Arc::downgrade(&runtime)).unwrap();
    runtime.load_bundle(&bundle_dir(COUNTER)).unwrap();
    runtime.reload_bundle(&bundle_dir(COUNTER_V2)).unwrap();
    let outcome = outcome.lock().unwrap().take().unwrap();
    assert!(
        matches!(&outcome, Err(DaemonCallError::BundleBusy { kind, bundle })
            if kind == "counter" && bundle == "counter"),
        "{outcome:?}"
    );
    let daemon = runtime.create_daemon("counter").unwrap();
    assert_eq!(process(&daemon, b"e"), [v2_output(1)]);
}

#[test]
fn calls_on_one_daemon_from_many_threads_are_serialized() {
    let (runtime, _events) = recording_runtime();
    runtime.load_bundle(&bundle_dir(COUNTER)).unwrap();
    let daemon = Arc::new(runtime.create_daemon("counter").unwrap());
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let daemon = Arc::clone(&daemon);
            std::thread::spawn(move || {
                let mut seen = Vec::new();
                for _ in 0..250 {
                    for output in process(&daemon, b"e") {
                        seen.push(u64::from_le_bytes(output.try_into().unwrap()));
                    }
                }
                seen
            })
        })
        .collect();
    let mut all = Vec::new();
    for thread in threads {
        let seen = thread.join().unwrap();
        assert!(
            seen.windows(2).all(|pair| pair[0] < pair[1]),
            "each thread sees its counts rise"
        );
        all.extend(seen);
    }
    all.sort_unstable();
    assert_eq!(all, (1..=1000).collect::<Vec<u64>>(), "every count exactly once");
    assert_eq!(saved_count(&daemon), 1000);
}

#[test]
fn a_panic_in_the_callers_emit_is_resumed_in_the_caller_and_the_daemon_stays_usable() {
    let (runtime, _events) = recording_runtime();
    runtime.load_bundle(&bundle_dir(COUNTER)).unwrap();
    let daemon = runtime.create_daemon("counter").unwrap();
    let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        daemon.process(b"e", &mut |_| panic!("the host's emit gave up"))
    }))
    .unwrap_err();
    assert_eq!(panicked.downcast_ref::<&str>(), Some(&"the host's emit gave up"));
    // The daemon counted that event before its output was refused.
    assert_eq!(process(&daemon, b"e"), [v1_output(2)]);
}

#[test]
fn the_nondeterministic_kind_gives_different_outputs_for_the_same_events() {
    let (runtime, _events) = recording_runtime();
    runtime.load_bundle(&bundle_dir(NONDET)).unwrap();
    let first = runtime.create_daemon("nondet").unwrap();
    let second = runtime.create_daemon("nondet").unwrap();
    let (a, b) = (process(&first, b"same"), process(&second, b"same"));
    assert_eq!((a[0].len(), b[0].len()), (16, 16));
    assert_eq!(a[0][..8], b[0][..8], "both counted one event");
    assert_ne!(a[0][8..], b[0][8..], "but their outputs differ");
    assert_eq!(saved_count(&first), 1);
}
