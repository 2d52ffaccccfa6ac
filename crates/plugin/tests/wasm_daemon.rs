//! A WASM daemon kind (`daemon.wasmcounter@1`) runs through the daemon API
//! exactly like a native one: it counts and emits what its code says, its
//! state is saved, restored and carried across a hot reload; a module whose
//! `process` traps or loops is a typed `DaemonCallError::Fault` and the
//! daemon answers again afterwards.
#![cfg(feature = "wasm")]

#[path = "common/wasm.rs"]
mod wasm_support;

use std::sync::Arc;

use holdfast_plugin::daemon::OutputLimits;
use holdfast_plugin::{DaemonCallError, Runtime, WasmConfig, WasmFault};
use holdfast_plugin_abi::Version;
use wasm_support::{Wat, daemon_bundle, wat_bundle};

fn runtime() -> Arc<Runtime> {
    wasm_support::runtime_with(WasmConfig {
        fuel_per_call: 5_000_000,
        ..Default::default()
    })
}

fn process(daemon: &holdfast_plugin::DaemonInstance, event: &[u8]) -> Result<Vec<Vec<u8>>, DaemonCallError> {
    let mut outputs = Vec::new();
    daemon.process(event, &mut |output| outputs.push(output.to_vec()))?;
    Ok(outputs)
}

fn count(value: u64) -> Vec<Vec<u8>> {
    vec![value.to_le_bytes().to_vec()]
}

#[test]
fn a_wasm_daemon_counts_saves_restores_and_keeps_its_state_across_a_reload() {
    let runtime = runtime();
    let bundle = daemon_bundle();
    runtime.load_bundle(bundle.path()).unwrap();
    let kinds = runtime.daemon_kinds();
    assert_eq!(kinds.len(), 1);
    assert_eq!(
        (kinds[0].kind.as_str(), kinds[0].bundle.as_str()),
        ("wasmcounter", "wasm-daemon-counter")
    );

    let daemon = runtime.create_daemon("wasmcounter").unwrap();
    assert_eq!(process(&daemon, b"a").unwrap(), count(1));
    assert_eq!(process(&daemon, b"b").unwrap(), count(2));
    assert_eq!(daemon.save().unwrap(), 2u64.to_le_bytes());

    runtime.reload_bundle(bundle.path()).unwrap();
    assert_eq!(
        process(&daemon, b"c").unwrap(),
        count(3),
        "the reload carried the count"
    );

    let copy = runtime
        .restore_daemon("wasmcounter", Version::new(1, 0, 0), &40u64.to_le_bytes())
        .unwrap();
    assert_eq!(process(&copy, b"d").unwrap(), count(41));
    assert!(matches!(
        runtime.restore_daemon("wasmcounter", Version::new(1, 0, 0), b"short"),
        Err(DaemonCallError::RestoreFailed { code: 15, .. })
    ));

    let limits = OutputLimits {
        max_output_bytes: 4,
        ..OutputLimits::default()
    };
    assert!(matches!(
        daemon.process_with_limits(b"e", limits, &mut |_| {}),
        Err(DaemonCallError::OutputTooLarge { len: 8, max: 4, .. })
    ));
}

#[test]
fn a_trapping_or_looping_wasm_daemon_is_a_typed_fault_and_answers_again() {
    let runtime = runtime();
    // process: an empty event traps, "loop" loops, anything else emits "ok".
    let module = Wat {
        init: "(drop (call $register (i32.const 64) (i32.const 14) (i32.const 1) (i32.const 0) (i32.const 0) (i32.const 1) (i32.const 1))) (i32.const 0)",
        call: r#"
            (if (i32.eqz (local.get $len)) (then unreachable))
            (if (i32.eq (local.get $len) (i32.const 4)) (then (loop $spin (br $spin))))
            (call $emit (i32.const 80) (i32.const 2))
            (i32.const 0)"#,
        extra: r#"(data (i32.const 64) "daemon.fragile") (data (i32.const 80) "ok")"#,
        ..Wat::default()
    };
    let bundle = wat_bundle("fragile", "1.0.0", &module.text(), &[("daemon.fragile@1", 1)]);
    runtime.load_bundle(bundle.path()).unwrap();
    let daemon = runtime.create_daemon("fragile").unwrap();
    assert!(matches!(
        process(&daemon, b""),
        Err(DaemonCallError::Fault { kind, fault: WasmFault::Unreachable }) if kind == "fragile"
    ));
    assert!(matches!(
        process(&daemon, b"loop"),
        Err(DaemonCallError::Fault {
            fault: WasmFault::OutOfFuel { budget: 5_000_000 },
            ..
        })
    ));
    assert_eq!(process(&daemon, b"event").unwrap(), vec![b"ok".to_vec()]);
}
