//! The sandboxed WASM loader (issue 14): a `loader = "wasm"` bundle's
//! contracts register through the VM-dispatch path like native ones; calls
//! return exactly what the Rust guest computes; state crosses a reload to
//! code with another state format, and a failing save or restore rolls the
//! reload back with the old code answering; a trap, an out-of-bounds
//! access, an endless loop or a memory blow-up is a typed fault while every
//! other instance and plugin keeps answering; hostile modules (invalid
//! bytes, huge memories, forbidden imports, traps in init) are refused at
//! load with typed errors, nothing registered and the running set unchanged.
#![cfg(feature = "wasm")]

#[path = "common/wasm.rs"]
mod wasm_support;

use std::path::Path;
use std::sync::Arc;

use holdfast_plugin::wasm::{WasmCallArgs, WasmReply};
use holdfast_plugin::{
    LoaderError, Runtime, RuntimeError, ValidationError, WasmCallError, WasmConfig, WasmFault, WasmLoader,
};
use holdfast_plugin_abi::{BundleId, DispatchType, GuestContractHandle, GuestContractId, InstanceHandle};
use wasm_support::{BASIC_IMPORTS, COUNTER_BUNDLE, Wat, counter_bundle, wat_bundle};

const FUEL: u64 = 5_000_000;
const MEMORY: u64 = 4 << 20;

fn counter_id() -> GuestContractId {
    GuestContractId::new("demo.counter", 1)
}

fn runtime() -> Arc<Runtime> {
    wasm_support::runtime_with(WasmConfig {
        fuel_per_call: FUEL,
        max_memory_bytes: MEMORY,
        ..Default::default()
    })
}

fn counter_handle(runtime: &Runtime) -> GuestContractHandle {
    runtime.find_guest_contract(counter_id().id(), 0).unwrap()
}

fn new_instance(runtime: &Runtime) -> InstanceHandle {
    // SAFETY: WASM constructors take null arguments.
    unsafe { runtime.create_guest_instance(counter_handle(runtime), std::ptr::null()) }.unwrap()
}

fn add(runtime: &Runtime, instance: InstanceHandle, amount: u64) -> u64 {
    let outputs = runtime.call_wasm(instance, 0, &amount.to_le_bytes()).unwrap();
    assert_eq!(outputs.len(), 1);
    u64::from_le_bytes(outputs[0].as_slice().try_into().unwrap())
}

fn get(runtime: &Runtime, instance: InstanceHandle, function: u32) -> u64 {
    let outputs = runtime.call_wasm(instance, function, &[]).unwrap();
    assert_eq!(outputs.len(), 1);
    u64::from_le_bytes(outputs[0].as_slice().try_into().unwrap())
}

/// What the running set looks like: names, versions, revision.
fn running_set(runtime: &Runtime) -> (Vec<(String, String)>, u64) {
    let bundles = runtime
        .bundles()
        .into_iter()
        .map(|bundle| (bundle.name, bundle.version.to_string()))
        .collect();
    (bundles, runtime.revision())
}

fn load(runtime: &Runtime, dir: &Path) -> BundleId {
    runtime.load_bundle(dir).unwrap()
}

fn loader_error(result: Result<BundleId, RuntimeError>) -> LoaderError {
    match result {
        Err(RuntimeError::Loader(error)) => error,
        other => panic!("expected a loader error, got {other:?}"),
    }
}

#[test]
fn a_wasm_contract_registers_through_vm_dispatch_and_answers_like_the_guest_computes() {
    let runtime = runtime();
    let v1 = counter_bundle(1);
    let id = load(&runtime, v1.path());
    assert_eq!(id, BundleId::new(COUNTER_BUNDLE));
    let handle = counter_handle(&runtime);
    let dispatch = runtime
        .with_guest_contract(handle, |interface| {
            (
                interface.dispatch_type,
                interface.contract_version,
                !interface.state.is_null(),
            )
        })
        .unwrap();
    assert_eq!(
        dispatch,
        (DispatchType::Vm, holdfast_plugin_abi::Version::new(1, 0, 0), true)
    );

    let first = new_instance(&runtime);
    let second = new_instance(&runtime);
    assert_eq!(add(&runtime, first, 5), 5);
    assert_eq!(add(&runtime, first, 7), 12);
    assert_eq!(add(&runtime, second, 1), 1);
    assert_eq!(get(&runtime, first, 1), 12);

    // A guest error status is the guest's code and message.
    assert_eq!(
        runtime.call_wasm(first, 0, b"short"),
        Err(WasmCallError::Fault {
            contract: "demo.counter@1".into(),
            function: 0,
            fault: WasmFault::Guest {
                code: 1,
                message: "add takes 8 bytes".into(),
            },
        })
    );
    assert_eq!(
        runtime.call_wasm(first, 3, &[]),
        Err(WasmCallError::NoSuchFunction {
            contract: "demo.counter@1".into(),
            function: 3,
            count: 3,
        })
    );

    // The raw VmDispatch entry point gives the same answers.
    let data = runtime.resolve_guest_instance(first).unwrap();
    let input = 3u64.to_le_bytes();
    let args = WasmCallArgs {
        input: input.as_ptr(),
        input_len: input.len(),
    };
    let mut reply = WasmReply::default();
    let guard = holdfast_plugin::epoch::pin();
    let interface = runtime.resolve_guest_contract(handle).unwrap();
    // SAFETY: resolved under `guard`; the dispatch type is Vm.
    let vm = unsafe { (*interface).dispatch.vm };
    let host = runtime.host_api();
    // SAFETY: the interface's own entry point with its loader data, an
    // instance it made, and the argument and reply types it documents.
    let status = unsafe {
        (vm.call.unwrap())(
            host,
            vm.loader_data,
            data,
            0,
            (&raw const args).cast(),
            (&raw mut reply).cast(),
        )
    };
    drop(guard);
    assert!(status.is_ok());
    assert_eq!(reply.outcome, Some(Ok(vec![15u64.to_le_bytes().to_vec()])));

    runtime.destroy_guest_instance(first).unwrap();
    assert_eq!(
        runtime.call_wasm(first, 1, &[]),
        Err(WasmCallError::InstanceGone { instance: first })
    );
    assert_eq!(get(&runtime, second, 1), 1);
}

#[test]
fn state_crosses_a_reload_to_code_with_another_state_format() {
    let runtime = runtime();
    let (v1, v2) = (counter_bundle(1), counter_bundle(2));
    load(&runtime, v1.path());
    let handle = counter_handle(&runtime);
    let instance = new_instance(&runtime);
    assert_eq!(add(&runtime, instance, 40), 40);
    assert_eq!(add(&runtime, instance, 2), 42);

    runtime.reload_bundle(v2.path()).unwrap();
    assert_eq!(counter_handle(&runtime), handle, "a reload keeps the handle");
    assert_eq!(get(&runtime, instance, 1), 42, "v2 converted v1's count");
    assert_eq!(get(&runtime, instance, 3), 0, "format 1 carries no add count");
    assert_eq!(add(&runtime, instance, 1), 43);
    assert_eq!(get(&runtime, instance, 3), 1);

    // v2 to v2: format 2 carries both numbers.
    runtime.reload_bundle(v2.path()).unwrap();
    assert_eq!(get(&runtime, instance, 1), 43);
    assert_eq!(get(&runtime, instance, 3), 1);
}

/// A `WasmCaller` primed before a reload: while the reload runs (at its
/// `Preparing` event, the bundle marked busy, nothing saved yet) a call
/// through it is refused exactly as `call_wasm` refuses it; after the reload
/// it runs v2's code on the migrated count (never the retired module); a bad
/// index and a destroyed instance get `call_wasm`'s errors.
#[test]
fn a_cached_caller_is_refused_during_a_reload_and_follows_its_instance_to_the_new_code() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Mutex, mpsc};

    use holdfast_plugin_abi::{ReloadPhaseType, RuntimeConfig};

    let armed = Arc::new(AtomicBool::new(false));
    let (preparing, at_preparing) = mpsc::channel::<()>();
    let (resume, resumed) = mpsc::channel::<()>();
    let resumed = Mutex::new(resumed);
    let runtime = Runtime::builder()
        .config(RuntimeConfig {
            hot_reload_enabled: true,
            ..Default::default()
        })
        .loader(WasmLoader::new(WasmConfig {
            fuel_per_call: FUEL,
            max_memory_bytes: MEMORY,
            ..Default::default()
        }))
        .on_reload({
            let armed = Arc::clone(&armed);
            move |_, phase| {
                if phase.phase_type == ReloadPhaseType::Preparing && armed.load(Ordering::SeqCst) {
                    preparing.send(()).unwrap();
                    resumed.lock().unwrap().recv().unwrap();
                }
            }
        })
        .build()
        .unwrap();
    let (v1, v2) = (counter_bundle(1), counter_bundle(2));
    load(&runtime, v1.path());
    let instance = new_instance(&runtime);
    let mut caller = runtime.wasm_caller(instance);
    assert_eq!(caller.instance(), instance);
    let count = |outputs: Vec<Vec<u8>>| u64::from_le_bytes(outputs[0].as_slice().try_into().unwrap());
    assert_eq!(count(caller.call(0, &40u64.to_le_bytes()).unwrap()), 40);

    armed.store(true, Ordering::SeqCst);
    std::thread::scope(|scope| {
        let reload = scope.spawn(|| runtime.reload_bundle(v2.path()));
        at_preparing.recv().unwrap();
        let during = caller.call(0, &1u64.to_le_bytes());
        resume.send(()).unwrap();
        reload.join().unwrap().unwrap();
        match during {
            Err(WasmCallError::BundleBusy { bundle }) => assert_eq!(bundle, COUNTER_BUNDLE),
            other => panic!("expected BundleBusy during the reload, got {other:?}"),
        }
    });

    assert_eq!(
        count(caller.call(1, &[]).unwrap()),
        40,
        "v2 reads the migrated count"
    );
    assert_eq!(count(caller.call(0, &2u64.to_le_bytes()).unwrap()), 42);
    assert_eq!(
        get(&runtime, instance, 1),
        42,
        "the caller's add reached the new module"
    );
    assert_eq!(
        get(&runtime, instance, 3),
        1,
        "v2 counted one add since the reload"
    );
    match caller.call(99, &[]) {
        Err(WasmCallError::NoSuchFunction {
            contract,
            function,
            count,
        }) => {
            assert_eq!((contract.as_str(), function), ("demo.counter@1", 99));
            assert!(count < 99, "the declared count is {count}");
        }
        other => panic!("expected NoSuchFunction, got {other:?}"),
    }

    runtime.destroy_guest_instance(instance).unwrap();
    assert!(matches!(
        caller.call(0, &1u64.to_le_bytes()),
        Err(WasmCallError::InstanceGone { instance: gone }) if gone == instance
    ));
}

/// The reload error's inner migration failure: (stage, code).
fn rolled_back_migration(error: RuntimeError) -> (&'static str, u32, String) {
    let RuntimeError::ReloadRolledBack { bundle, source } = error else {
        panic!("expected a rolled-back reload, got {error:?}");
    };
    assert_eq!(bundle, COUNTER_BUNDLE);
    match *source {
        RuntimeError::StateMigration {
            stage, code, message, ..
        } => (stage, code, message),
        other => panic!("expected a state migration failure, got {other:?}"),
    }
}

#[test]
fn a_trap_in_restore_rolls_the_reload_back_and_the_old_code_keeps_answering() {
    let runtime = runtime();
    let v1 = counter_bundle(1);
    load(&runtime, v1.path());
    let instance = new_instance(&runtime);
    assert_eq!(add(&runtime, instance, 9), 9);
    let before = running_set(&runtime);

    let trapping = Wat {
        restore: "(unreachable)",
        ..Wat::default()
    };
    let hostile = wat_bundle(
        COUNTER_BUNDLE,
        "3.0.0",
        &trapping.text(),
        &[("demo.counter@1", 3)],
    );
    let error = runtime.reload_bundle(hostile.path()).unwrap_err();
    let (stage, code, message) = rolled_back_migration(error);
    assert_eq!((stage, code), ("restore", 17));
    assert_eq!(message, "hf_restore: the module executed `unreachable`");
    assert_eq!(running_set(&runtime).0, before.0);
    assert_eq!(add(&runtime, instance, 1), 10, "v1 answers with its state");

    // A restore that refuses with a status is reported with its code.
    let refusing = Wat {
        restore: "(i32.const 15)",
        ..Wat::default()
    };
    let hostile = wat_bundle(
        COUNTER_BUNDLE,
        "3.0.0",
        &refusing.text(),
        &[("demo.counter@1", 3)],
    );
    let (stage, code, _) = rolled_back_migration(runtime.reload_bundle(hostile.path()).unwrap_err());
    assert_eq!((stage, code), ("restore", 15));
    assert_eq!(get(&runtime, instance, 1), 10);
}

#[test]
fn a_trap_in_save_rolls_the_reload_back_and_the_old_code_keeps_answering() {
    let runtime = runtime();
    let trapping_save = Wat {
        save: "(unreachable)",
        call: "(call $emit (i32.const 16) (i32.const 4)) (i32.const 0)",
        ..Wat::default()
    };
    let v1 = wat_bundle(
        COUNTER_BUNDLE,
        "1.0.0",
        &trapping_save.text(),
        &[("demo.counter@1", 3)],
    );
    load(&runtime, v1.path());
    let instance = new_instance(&runtime);
    let v2 = counter_bundle(2);
    let (stage, code, message) = rolled_back_migration(runtime.reload_bundle(v2.path()).unwrap_err());
    assert_eq!((stage, code), ("save", 17));
    assert_eq!(message, "hf_save: the module executed `unreachable`");
    assert_eq!(
        runtime.call_wasm(instance, 0, &[]).unwrap(),
        vec![b"demo".to_vec()]
    );
    assert_eq!(runtime.bundles()[0].version.to_string(), "1.0.0");
}

/// A module whose `hf_call` misbehaves by function: 0 answers "ok", 1
/// executes `unreachable`, 2 loops forever, 3 grows memory until refused,
/// 4 reads past the end of memory, 5 recurses without end, 6 emits a range
/// outside the memory.
const HOSTILE_CALL: &str = r#"
    (block $f6 (block $f5 (block $f4 (block $f3 (block $f2 (block $f1 (block $f0
        (br_table $f0 $f1 $f2 $f3 $f4 $f5 $f6 (local.get $function)))
        (call $emit (i32.const 16) (i32.const 2)) (return (i32.const 0)))
        unreachable)
        (loop $spin (br $spin)) (return (i32.const 0)))
        (loop $grow (br_if $grow (i32.ne (memory.grow (i32.const 16)) (i32.const -1)))) (return (i32.const 0)))
        (drop (i32.load (i32.const 0x7ffffff0))) (return (i32.const 0)))
        (return (call $recurse (i32.const 0))))
    (call $emit (i32.const 0x7ffffff0) (i32.const 64))
    (i32.const 0)
"#;

const RECURSE: &str =
    r#"(func $recurse (param $n i32) (result i32) (call $recurse (i32.add (local.get $n) (i32.const 1))))"#;

#[test]
fn traps_loops_blow_ups_and_bad_pointers_are_typed_faults_and_every_other_plugin_keeps_answering() {
    let runtime = runtime();
    let counter = counter_bundle(1);
    load(&runtime, counter.path());
    let counting = new_instance(&runtime);
    assert_eq!(add(&runtime, counting, 1), 1);

    let hostile_wat = Wat {
        init: "(drop (call $register (i32.const 48) (i32.const 12) (i32.const 1) (i32.const 0) (i32.const 0) (i32.const 7) (i32.const 0))) (i32.const 0)",
        call: HOSTILE_CALL,
        extra: &format!("(data (i32.const 48) \"demo.hostile\") {RECURSE}"),
        ..Wat::default()
    };
    let hostile = wat_bundle("hostile", "1.0.0", &hostile_wat.text(), &[("demo.hostile@1", 7)]);
    load(&runtime, hostile.path());
    let handle = runtime
        .find_guest_contract(GuestContractId::new("demo.hostile", 1).id(), 0)
        .unwrap();
    // SAFETY: WASM constructors take null arguments.
    let bad = unsafe { runtime.create_guest_instance(handle, std::ptr::null()) }.unwrap();
    assert_eq!(runtime.call_wasm(bad, 0, &[]).unwrap(), vec![b"de".to_vec()]);

    let fault = |function| match runtime.call_wasm(bad, function, &[]) {
        Err(WasmCallError::Fault {
            contract,
            function: reported,
            fault,
        }) => {
            assert_eq!((contract.as_str(), reported), ("demo.hostile@1", function));
            fault
        }
        other => panic!("function {function}: expected a fault, got {other:?}"),
    };
    assert_eq!(fault(1), WasmFault::Unreachable);
    assert_eq!(fault(2), WasmFault::OutOfFuel { budget: FUEL });
    assert_eq!(
        fault(3),
        WasmFault::MemoryLimit {
            // One page at start, 16 more per grow: 49 pages pass, 65 do not.
            requested_bytes: 65 * 65536,
            limit_bytes: MEMORY,
        }
    );
    assert_eq!(fault(4), WasmFault::MemoryOutOfBounds);
    assert_eq!(fault(5), WasmFault::StackOverflow);
    assert!(matches!(
        fault(6),
        WasmFault::ImportMisuse { import: "emit", reason } if reason == format!("64 bytes at {} lie outside the module's memory", 0x7fff_fff0_u32)
    ));

    // After every fault the module itself, the other bundle and the other
    // instance still answer.
    assert_eq!(runtime.call_wasm(bad, 0, &[]).unwrap(), vec![b"de".to_vec()]);
    assert_eq!(add(&runtime, counting, 2), 3);
    // The Rust guest's panic is a trap too, and its other calls go on.
    assert!(matches!(
        runtime.call_wasm(counting, 2, &[]),
        Err(WasmCallError::Fault {
            fault: WasmFault::Unreachable,
            ..
        })
    ));
    assert_eq!(get(&runtime, counting, 1), 3);
}

/// Function 0 calls `error_message` with 4 KiB for ever, 1 does the same
/// with `log`; each counts its host calls in `$talks`, and 2 emits the
/// count.
const TALKING_CALL: &str = r#"
    (block $f2 (block $f1 (block $f0
        (br_table $f0 $f1 $f2 (local.get $function)))
        (loop $talk
            (call $error_message (i32.const 0) (i32.const 4096))
            (global.set $talks (i32.add (global.get $talks) (i32.const 1)))
            (br $talk))
        (return (i32.const 0)))
        (loop $talk
            (call $log (i32.const 2) (i32.const 0) (i32.const 4096))
            (global.set $talks (i32.add (global.get $talks) (i32.const 1)))
            (br $talk))
        (return (i32.const 0)))
    (i32.store (i32.const 8192) (global.get $talks))
    (global.set $talks (i32.const 0))
    (call $emit (i32.const 8192) (i32.const 4))
    (i32.const 0)
"#;

#[test]
fn host_calls_are_paid_from_the_call_fuel_so_a_loop_on_them_ends_within_budget() {
    let runtime = runtime();
    let imports = format!(
        r#"{BASIC_IMPORTS}
        (import "holdfast" "error_message" (func $error_message (param i32 i32)))
        (import "holdfast" "log" (func $log (param i32 i32 i32)))"#
    );
    let talking = Wat {
        imports: &imports,
        init: "(drop (call $register (i32.const 48) (i32.const 12) (i32.const 1) (i32.const 0) (i32.const 0) (i32.const 3) (i32.const 0))) (i32.const 0)",
        call: TALKING_CALL,
        extra: r#"(data (i32.const 48) "demo.talking") (global $talks (mut i32) (i32.const 0))"#,
        ..Wat::default()
    };
    let bundle = wat_bundle("talking", "1.0.0", &talking.text(), &[("demo.talking@1", 3)]);
    load(&runtime, bundle.path());
    let handle = runtime
        .find_guest_contract(GuestContractId::new("demo.talking", 1).id(), 0)
        .unwrap();
    // SAFETY: WASM constructors take null arguments.
    let instance = unsafe { runtime.create_guest_instance(handle, std::ptr::null()) }.unwrap();
    let talks_until_out_of_fuel = |function| {
        assert!(matches!(
            runtime.call_wasm(instance, function, &[]),
            Err(WasmCallError::Fault {
                fault: WasmFault::OutOfFuel { budget: FUEL },
                ..
            })
        ));
        let reply = runtime.call_wasm(instance, 2, &[]).unwrap();
        u64::from(u32::from_le_bytes(reply[0].as_slice().try_into().unwrap()))
    };
    // Each call pays 64 units and one per byte read: 4 KiB messages stop the
    // loop within budget / 4,160 calls (unpaid, it ran about budget / 8).
    let messages = talks_until_out_of_fuel(0);
    assert!((1..=FUEL / 4160).contains(&messages), "{messages} calls");
    // Log lines past the call's cap are dropped unread and cost 64 units.
    let lines = talks_until_out_of_fuel(1);
    assert!((65..=FUEL / 64).contains(&lines), "{lines} calls");
}

/// Loads `dir` into a runtime that already runs the counter; returns the
/// refusal and checks that nothing changed.
fn refused_load(dir: &Path) -> LoaderError {
    let runtime = runtime();
    let counter = counter_bundle(1);
    load(&runtime, counter.path());
    let instance = new_instance(&runtime);
    assert_eq!(add(&runtime, instance, 4), 4);
    let before = running_set(&runtime);
    let error = loader_error(runtime.load_bundle(dir));
    assert_eq!(running_set(&runtime), before, "the running set is unchanged");
    assert_eq!(
        runtime
            .find_guest_contract(GuestContractId::new("demo.other", 1).id(), 0)
            .ok(),
        None,
        "nothing of the refused bundle is registered"
    );
    assert_eq!(get(&runtime, instance, 1), 4);
    error
}

/// Registers `demo.other@1` (name at offset 64) with 1 function.
const REGISTER_OTHER: &str = "(drop (call $register (i32.const 64) (i32.const 10) (i32.const 1) (i32.const 0) (i32.const 0) (i32.const 1) (i32.const 0))) (i32.const 0)";
const OTHER_NAME: &str = "(data (i32.const 64) \"demo.other\")";

fn other_bundle(wat: &Wat<'_>) -> tempfile::TempDir {
    wat_bundle("other", "1.0.0", &wat.text(), &[("demo.other@1", 1)])
}

#[test]
fn hostile_modules_are_refused_at_load_with_typed_errors_and_nothing_registered() {
    let path_of = |dir: &tempfile::TempDir, file: &str| dir.path().canonicalize().unwrap().join(file);

    let garbage = wasm_support::bundle_of(
        "module.wasm",
        b"\0asm\x01\0\0\0\xff\xff\xff",
        &wasm_support::wasm_manifest("other", "1.0.0", "module.wasm", &[("demo.other@1", 1)]),
    );
    assert!(matches!(
        refused_load(garbage.path()),
        LoaderError::InvalidWasm { bundle, .. } if bundle == "other"
    ));

    let not_wasm = wasm_support::bundle_of(
        "module.wasm",
        b"\x7fELF\x02\x01\x01\0",
        &wasm_support::wasm_manifest("other", "1.0.0", "module.wasm", &[("demo.other@1", 1)]),
    );
    assert_eq!(
        refused_load(not_wasm.path()),
        LoaderError::WrongLoader {
            path: path_of(&not_wasm, "module.wasm"),
            loader: "wasm",
            found: "not a WebAssembly module",
        }
    );

    let huge = other_bundle(&Wat {
        pages: 1000,
        init: REGISTER_OTHER,
        extra: OTHER_NAME,
        ..Wat::default()
    });
    assert_eq!(
        refused_load(huge.path()),
        LoaderError::WasmMemoryTooLarge {
            bundle: "other".into(),
            declared_bytes: 1000 * 65536,
            limit_bytes: MEMORY,
        }
    );

    let wasi = other_bundle(&Wat {
        imports: &format!(
            "{BASIC_IMPORTS} (import \"wasi_snapshot_preview1\" \"fd_write\" (func (param i32 i32 i32 i32) (result i32)))"
        ),
        init: REGISTER_OTHER,
        extra: OTHER_NAME,
        ..Wat::default()
    });
    assert_eq!(
        refused_load(wasi.path()),
        LoaderError::ForbiddenImport {
            bundle: "other".into(),
            module: "wasi_snapshot_preview1".into(),
            name: "fd_write".into(),
        }
    );

    let trap_in_init = other_bundle(&Wat {
        init: "(drop (call $register (i32.const 64) (i32.const 10) (i32.const 1) (i32.const 0) (i32.const 0) (i32.const 1) (i32.const 0))) unreachable",
        extra: OTHER_NAME,
        ..Wat::default()
    });
    assert_eq!(
        refused_load(trap_in_init.path()),
        LoaderError::WasmFault {
            bundle: "other".into(),
            stage: "hf_init",
            fault: WasmFault::Unreachable,
        }
    );

    let loop_in_init = other_bundle(&Wat {
        init: "(loop $spin (br $spin)) (i32.const 0)",
        ..Wat::default()
    });
    assert_eq!(
        refused_load(loop_in_init.path()),
        LoaderError::WasmFault {
            bundle: "other".into(),
            stage: "hf_init",
            fault: WasmFault::OutOfFuel { budget: FUEL },
        }
    );

    let trap_in_start = other_bundle(&Wat {
        extra: "(func $start unreachable) (start $start)",
        ..Wat::default()
    });
    assert_eq!(
        refused_load(trap_in_start.path()),
        LoaderError::WasmFault {
            bundle: "other".into(),
            stage: "instantiate",
            fault: WasmFault::Unreachable,
        }
    );

    let init_error = other_bundle(&Wat {
        imports: &format!(
            "{BASIC_IMPORTS} (import \"holdfast\" \"error_message\" (func $message (param i32 i32)))"
        ),
        init: "(call $message (i32.const 64) (i32.const 10)) (i32.const 14)",
        extra: OTHER_NAME,
        ..Wat::default()
    });
    assert_eq!(
        refused_load(init_error.path()),
        LoaderError::InitFailed {
            bundle: "other".into(),
            code: 14,
            message: "demo.other".into(),
        }
    );

    // A module speaking another guest ABI version.
    let version_two = Wat::default().text().replace(
        "(func (export \"hf_abi_version\") (result i32) (i32.const 1))",
        "(func (export \"hf_abi_version\") (result i32) (i32.const 2))",
    );
    let version_two = wat_bundle("other", "1.0.0", &version_two, &[("demo.other@1", 1)]);
    assert_eq!(
        refused_load(version_two.path()),
        LoaderError::WasmAbiVersionMismatch {
            bundle: "other".into(),
            expected: 1,
            found: 2,
        }
    );

    let no_save = Wat::default().text().replace("(export \"hf_save\")", "");
    let no_save = wat_bundle("other", "1.0.0", &no_save, &[("demo.other@1", 1)]);
    assert_eq!(
        refused_load(no_save.path()),
        LoaderError::MissingExport {
            bundle: "other".into(),
            name: "hf_save",
            expected: "func(i32) -> i32",
        }
    );

    let miscounted = wat_bundle(
        "other",
        "1.0.0",
        &Wat {
            init: REGISTER_OTHER,
            extra: OTHER_NAME,
            ..Wat::default()
        }
        .text(),
        &[("demo.other@1", 2)],
    );
    assert_eq!(
        refused_load(miscounted.path()),
        LoaderError::WasmFunctionCount {
            bundle: "other".into(),
            contract: "demo.other@1".into(),
            manifest: 2,
            declared: 1,
        }
    );
}

#[test]
fn a_module_that_registers_an_undeclared_contract_is_refused_with_nothing_registered() {
    let runtime = runtime();
    let before = running_set(&runtime);
    // Registers demo.counter@1 while the manifest provides demo.other@1.
    let wrong = wat_bundle("other", "1.0.0", &Wat::default().text(), &[("demo.other@1", 1)]);
    let error = runtime.load_bundle(wrong.path()).unwrap_err();
    assert!(
        matches!(
            &error,
            RuntimeError::Validation { bundle, error: ValidationError::ContractNotInManifest { contract } }
                if bundle == "other" && contract == "demo.counter@1"
        ),
        "{error:?}"
    );
    assert_eq!(running_set(&runtime), before);
    assert!(runtime.find_guest_contract(counter_id().id(), 0).is_err());
}

#[test]
fn undeclared_registrations_take_no_constructor_slot_so_later_modules_still_load() {
    let runtime = runtime();
    // 300 registrations of demo.counter@1, which the manifest does not
    // provide; the 256 constructor slots are shared by the whole process.
    let greedy = Wat {
        init: "(loop $again
            (drop (call $register (i32.const 16) (i32.const 12) (i32.const 1) (i32.const 0) (i32.const 0) (i32.const 3) (i32.const 1)))
            (global.set $n (i32.add (global.get $n) (i32.const 1)))
            (br_if $again (i32.lt_u (global.get $n) (i32.const 300))))
            (i32.const 0)",
        extra: "(global $n (mut i32) (i32.const 0))",
        ..Wat::default()
    };
    let greedy = wat_bundle("other", "1.0.0", &greedy.text(), &[("demo.other@1", 3)]);
    let refused = runtime.load_bundle(greedy.path()).unwrap_err();
    assert!(
        matches!(
            &refused,
            RuntimeError::Validation { error: ValidationError::ContractNotInManifest { contract }, .. }
                if contract == "demo.counter@1"
        ),
        "{refused:?}"
    );
    // Still within the refused module's grace period: a module that does
    // provide its contract loads and answers.
    let counter = counter_bundle(1);
    load(&runtime, counter.path());
    let instance = new_instance(&runtime);
    assert_eq!(add(&runtime, instance, 5), 5);
}

#[test]
fn a_reply_over_the_limit_is_a_typed_fault() {
    let runtime = Runtime::builder()
        .loader(WasmLoader::new(WasmConfig {
            max_reply_bytes: 100,
            max_outputs: 3,
            ..Default::default()
        }))
        .build()
        .unwrap();
    // Function 0 emits one 128-byte output; function 1 emits 4 of 1 byte.
    let module = Wat {
        init: "(drop (call $register (i32.const 16) (i32.const 12) (i32.const 1) (i32.const 0) (i32.const 0) (i32.const 2) (i32.const 1))) (i32.const 0)",
        call: r#"
            (if (i32.eqz (local.get $function)) (then (call $emit (i32.const 0) (i32.const 128)) (return (i32.const 0))))
            (call $emit (i32.const 0) (i32.const 1)) (call $emit (i32.const 0) (i32.const 1))
            (call $emit (i32.const 0) (i32.const 1)) (call $emit (i32.const 0) (i32.const 1))
            (i32.const 0)"#,
        ..Wat::default()
    };
    let bundle = wat_bundle("replies", "1.0.0", &module.text(), &[("demo.counter@1", 2)]);
    runtime.load_bundle(bundle.path()).unwrap();
    let instance = new_instance(&runtime);
    let fault = |function| match runtime.call_wasm(instance, function, &[]) {
        Err(WasmCallError::Fault { fault, .. }) => fault,
        other => panic!("expected a fault, got {other:?}"),
    };
    assert_eq!(fault(0), WasmFault::ReplyTooLarge { len: 128, max: 100 });
    assert_eq!(
        fault(1),
        WasmFault::Protocol {
            reason: "more than 3 outputs in one call".into()
        }
    );
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]

    /// Damaged modules (bytes of the Rust counter overwritten) and arbitrary
    /// bytes behind the magic load or fail with a loader or validation
    /// error; none panics, and a refused one leaves the running set as it
    /// was.
    #[test]
    fn damaged_or_arbitrary_modules_never_panic_and_a_refusal_changes_nothing(
        edits in proptest::collection::vec((0usize..20_000, proptest::prelude::any::<u8>()), 1..6),
        noise in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..256),
        arbitrary in proptest::prelude::any::<bool>(),
    ) {
        let runtime = runtime();
        // A plugin already running, so "nothing changed" is not the empty set.
        let other = other_bundle(&Wat {
            init: REGISTER_OTHER,
            extra: OTHER_NAME,
            ..Wat::default()
        });
        load(&runtime, other.path());
        let before = running_set(&runtime);
        let mut bytes = std::fs::read(wasm_support::built_guests().join("wasm_counter_v1.wasm")).unwrap();
        if arbitrary {
            bytes.truncate(8);
            bytes.extend_from_slice(&noise);
        } else {
            for (at, value) in edits {
                let len = bytes.len();
                bytes[at % len] = value;
            }
        }
        let manifest = wasm_support::wasm_manifest(COUNTER_BUNDLE, "1.0.0", "counter.wasm", &[("demo.counter@1", 3)]);
        let bundle = wasm_support::bundle_of("counter.wasm", &bytes, &manifest);
        match runtime.load_bundle(bundle.path()) {
            Ok(_) => {
                // Whatever the damage, making an instance and calling it
                // answers or fails with a typed error.
                // (A damaged init may register nothing: then there is no
                // contract to call.)
                if let Ok(handle) = runtime.find_guest_contract(counter_id().id(), 0) {
                    // SAFETY: WASM constructors take null arguments.
                    if let Ok(instance) = unsafe { runtime.create_guest_instance(handle, std::ptr::null()) } {
                        let answered = runtime.call_wasm(instance, 0, &1u64.to_le_bytes());
                        proptest::prop_assert!(
                            matches!(answered, Ok(_) | Err(WasmCallError::Fault { .. })),
                            "{answered:?}"
                        );
                    }
                }
            }
            Err(RuntimeError::Loader(_) | RuntimeError::Validation { .. }) => {
                proptest::prop_assert_eq!(running_set(&runtime), before);
            }
            Err(other) => proptest::prop_assert!(false, "unexpected error {other:?}"),
        }
    }
}

#[test]
fn a_refusal_is_sticky_and_unchanged_bytes_load_again_from_the_loaders_cache() {
    let runtime = runtime();
    let wasi = other_bundle(&Wat {
        imports: &format!(
            "{BASIC_IMPORTS} (import \"wasi_snapshot_preview1\" \"clock_time_get\" (func (param i32 i64 i32) (result i32)))"
        ),
        init: REGISTER_OTHER,
        extra: OTHER_NAME,
        ..Wat::default()
    });
    let refused = LoaderError::ForbiddenImport {
        bundle: "other".into(),
        module: "wasi_snapshot_preview1".into(),
        name: "clock_time_get".into(),
    };
    assert_eq!(loader_error(runtime.load_bundle(wasi.path())), refused);
    assert_eq!(loader_error(runtime.load_bundle(wasi.path())), refused);

    // The same bytes twice (the second from the cache) behave the same.
    let counter = counter_bundle(1);
    for round in 0..2 {
        let id = load(&runtime, counter.path());
        let instance = new_instance(&runtime);
        assert_eq!(add(&runtime, instance, 5), 5, "round {round}");
        runtime.unload_bundle(id).unwrap();
    }
}

#[test]
fn a_logger_that_calls_back_into_the_logging_module_does_not_deadlock() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Mutex, OnceLock, Weak};

    // The module logs on every call; the runtime's logger, on the first
    // line, calls the same instance again. Lines are delivered after the
    // call with the module's store unlocked, so the nested call runs.
    let target: Arc<OnceLock<(Weak<Runtime>, InstanceHandle)>> = Arc::default();
    let lines: Arc<Mutex<Vec<String>>> = Arc::default();
    let nested = Arc::new(AtomicBool::new(false));
    let runtime = {
        let (target, lines, nested) = (target.clone(), lines.clone(), nested.clone());
        Runtime::builder()
            .loader(WasmLoader::new(WasmConfig {
                fuel_per_call: FUEL,
                max_memory_bytes: MEMORY,
                ..Default::default()
            }))
            .logger(move |_, message| {
                lines.lock().unwrap().push(message.to_owned());
                if message.contains("hello from wasm") && !nested.swap(true, Ordering::AcqRel) {
                    let (runtime, instance) = target.get().expect("set before the first call");
                    let runtime = runtime.upgrade().expect("the runtime is alive");
                    assert_eq!(runtime.call_wasm(*instance, 0, &[]), Ok(Vec::new()));
                }
            })
            .build()
            .unwrap()
    };
    let logging = Wat {
        imports: &format!("{BASIC_IMPORTS} (import \"holdfast\" \"log\" (func $log (param i32 i32 i32)))"),
        call: "(call $log (i32.const 0) (i32.const 200) (i32.const 15)) (i32.const 0)",
        extra: "(data (i32.const 200) \"hello from wasm\")",
        ..Wat::default()
    };
    let bundle = wat_bundle("logging", "1.0.0", &logging.text(), &[("demo.counter@1", 3)]);
    load(&runtime, bundle.path());
    let instance = new_instance(&runtime);
    target
        .set((Arc::downgrade(&runtime), instance))
        .expect("set once");

    assert_eq!(runtime.call_wasm(instance, 0, &[]), Ok(Vec::new()));
    let lines = lines.lock().unwrap();
    let hellos = lines
        .iter()
        .filter(|line| line.contains("hello from wasm"))
        .count();
    assert_eq!(
        hellos, 2,
        "the outer and the nested call each logged once: {lines:?}"
    );
}

#[test]
fn a_module_file_over_the_size_limit_is_refused_unread_past_the_limit() {
    let runtime = runtime();
    let manifest = wasm_support::wasm_manifest("huge", "1.0.0", "module.wasm", &[("demo.counter@1", 3)]);
    let bundle = wasm_support::bundle_of("module.wasm", b"\0asm\x01\0\0\0", &manifest);
    let module = bundle.path().join("module.wasm");
    // Sparse: one byte over the limit costs no disk.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&module)
        .unwrap()
        .set_len(holdfast_plugin::wasm::MAX_MODULE_BYTES + 1)
        .unwrap();
    assert_eq!(
        loader_error(runtime.load_bundle(bundle.path())),
        LoaderError::ModuleTooLarge {
            path: bundle.path().canonicalize().unwrap().join("module.wasm"),
            max: holdfast_plugin::wasm::MAX_MODULE_BYTES,
        }
    );
    assert_eq!(running_set(&runtime), (Vec::new(), 0));
}
