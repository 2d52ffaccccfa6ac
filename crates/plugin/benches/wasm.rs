//! Criterion benchmarks of the WASM loader (issue 14), in one run:
//!
//! - `wasm_call/bare_wasmtime`: the Rust counter's `hf_call(add, 8 bytes)`
//!   called directly through wasmtime (same engine settings as the sandbox:
//!   fuel metering on; the input written once, the output collected by an
//!   `emit` import like the sandbox's, the memory handle kept in the store);
//! - `wasm_call/bare_wasmtime_fresh_input`: the same, writing each call's
//!   own input (the iteration's number) into guest memory first, as an
//!   embedding that calls with new input must;
//! - `wasm_call/runtime`: the same call through `Runtime::call_wasm`
//!   (instance table, fresh fuel budget, input copied in, outputs out;
//!   target ≤ 1.5 × bare), with the iteration's number as input like the
//!   fresh-input row;
//! - `wasm_call/runtime_caller`: the same through a `WasmCaller`, which
//!   skips the instance table while nothing has opened it for writing;
//! - `wasm_reload/with_state/{1,100}`: a whole `reload_bundle` of the
//!   counter v2 over itself with 1 and 100 tracked instances whose state is
//!   saved and restored (the module comes from the loader's cache);
//! - `wasm_reload/with_state_compiled/1`: the same with 1 instance, each
//!   reload to a fresh byte-different copy of v2 (an extra custom section
//!   numbering the iteration) so that every reload compiles, as an upgrade
//!   does.

#[path = "../tests/common/wasm.rs"]
mod wasm_support;

use std::hint::black_box;
use std::sync::Arc;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use holdfast_plugin::Runtime;
use holdfast_plugin_abi::{GuestContractId, InstanceHandle, RuntimeConfig};
use wasmtime::{Caller, Config, Engine, Linker, Module, Store, TypedFunc};

fn runtime() -> Arc<Runtime> {
    Runtime::builder()
        .config(RuntimeConfig {
            hot_reload_enabled: true,
            ..Default::default()
        })
        .build()
        .expect("a runtime with the default loaders builds")
}

fn new_instance(runtime: &Runtime) -> InstanceHandle {
    let handle = runtime
        .find_guest_contract(GuestContractId::new("demo.counter", 1).id(), 0)
        .expect("the counter is loaded");
    // SAFETY: WASM constructors take null arguments.
    unsafe { runtime.create_guest_instance(handle, std::ptr::null()) }.expect("the counter makes instances")
}

/// The bare baseline's store data: the memory (set once instantiated, so
/// `emit` need not look it up by name) and the outputs `emit` collected.
struct Bare {
    memory: Option<wasmtime::Memory>,
    outputs: Vec<Vec<u8>>,
}

fn wasm_call(c: &mut Criterion) {
    let module_bytes = std::fs::read(wasm_support::built_guests().join("wasm_counter_v1.wasm"))
        .expect("the counter module was built");
    let mut group = c.benchmark_group("wasm_call");

    let mut config = Config::new();
    config
        .consume_fuel(true)
        .wasm_multi_memory(false)
        .wasm_memory64(false);
    let engine = Engine::new(&config).expect("the engine starts");
    let module = Module::new(&engine, &module_bytes).expect("the module compiles");
    let mut linker = Linker::new(&engine);
    linker
        .func_wrap(
            "holdfast",
            "register",
            |_: Caller<'_, Bare>, _: i32, _: i32, _: i32, _: i32, _: i32, _: i32, _: i32| 0i32,
        )
        .expect("define register");
    linker
        .func_wrap(
            "holdfast",
            "emit",
            |mut caller: Caller<'_, Bare>, ptr: i32, len: i32| {
                let memory = caller.data().memory.expect("set after instantiation");
                let (start, len) = (ptr as u32 as usize, len as u32 as usize);
                let bytes = memory.data(&caller)[start..start + len].to_vec();
                caller.data_mut().outputs.push(bytes);
            },
        )
        .expect("define emit");
    linker
        .func_wrap(
            "holdfast",
            "error_message",
            |_: Caller<'_, Bare>, _: i32, _: i32| {},
        )
        .expect("define error_message");
    let mut store = Store::new(
        &engine,
        Bare {
            memory: None,
            outputs: Vec::new(),
        },
    );
    store.set_fuel(u64::MAX / 2).expect("fuel is on");
    let instance = linker
        .instantiate(&mut store, &module)
        .expect("the module instantiates");
    let init: TypedFunc<(), i32> = instance.get_typed_func(&mut store, "hf_init").expect("hf_init");
    assert_eq!(init.call(&mut store, ()).expect("init runs"), 0);
    let create: TypedFunc<i32, i32> = instance
        .get_typed_func(&mut store, "hf_create")
        .expect("hf_create");
    let id = create.call(&mut store, 0).expect("create runs");
    let alloc: TypedFunc<i32, i32> = instance.get_typed_func(&mut store, "hf_alloc").expect("hf_alloc");
    let input = alloc.call(&mut store, 8).expect("alloc runs");
    let memory = instance.get_memory(&mut store, "memory").expect("memory");
    store.data_mut().memory = Some(memory);
    memory
        .write(&mut store, input as u32 as usize, &1u64.to_le_bytes())
        .expect("the input fits");
    let call: TypedFunc<(i32, i32, i32, i32), i32> =
        instance.get_typed_func(&mut store, "hf_call").expect("hf_call");
    group.bench_function("bare_wasmtime", |b| {
        b.iter(|| {
            let status = call.call(&mut store, (id, 0, input, 8)).expect("the call runs");
            black_box((status, std::mem::take(&mut store.data_mut().outputs)))
        });
    });
    let mut round = 0u64;
    group.bench_function("bare_wasmtime_fresh_input", |b| {
        b.iter(|| {
            round += 1;
            memory
                .write(&mut store, input as u32 as usize, &black_box(round).to_le_bytes())
                .expect("the input fits");
            let status = call.call(&mut store, (id, 0, input, 8)).expect("the call runs");
            black_box((status, std::mem::take(&mut store.data_mut().outputs)))
        });
    });

    let runtime = runtime();
    let bundle = wasm_support::counter_bundle(1);
    runtime.load_bundle(bundle.path()).expect("the counter loads");
    let instance = new_instance(&runtime);
    let mut round = 0u64;
    group.bench_function("runtime", |b| {
        b.iter(|| {
            round += 1;
            black_box(
                runtime
                    .call_wasm(instance, 0, &black_box(round).to_le_bytes())
                    .expect("the call runs"),
            )
        });
    });
    let mut caller = runtime.wasm_caller(instance);
    group.bench_function("runtime_caller", |b| {
        b.iter(|| {
            round += 1;
            black_box(
                caller
                    .call(0, &black_box(round).to_le_bytes())
                    .expect("the call runs"),
            )
        });
    });
    group.finish();
}

fn wasm_reload(c: &mut Criterion) {
    let mut group = c.benchmark_group("wasm_reload");
    group.sample_size(20);
    for instances in [1usize, 100] {
        let runtime = runtime();
        let (v1, v2) = (wasm_support::counter_bundle(1), wasm_support::counter_bundle(2));
        runtime.load_bundle(v1.path()).expect("v1 loads");
        let made: Vec<_> = (0..instances).map(|_| new_instance(&runtime)).collect();
        for (index, &instance) in made.iter().enumerate() {
            runtime
                .call_wasm(instance, 0, &(index as u64).to_le_bytes())
                .expect("add runs");
        }
        runtime
            .reload_bundle(v2.path())
            .expect("v1 -> v2 converts the state");
        group.bench_with_input(BenchmarkId::new("with_state", instances), &instances, |b, _| {
            b.iter(|| {
                runtime
                    .reload_bundle(v2.path())
                    .expect("v2 -> v2 carries the state")
            });
        });
        let last = runtime.call_wasm(made[instances - 1], 1, &[]).expect("get runs");
        assert_eq!(
            last,
            vec![(instances as u64 - 1).to_le_bytes().to_vec()],
            "the state survived"
        );
    }
    let runtime = runtime();
    let v2 = wasm_support::counter_bundle(2);
    let mut bytes = std::fs::read(v2.path().join("counter.wasm")).expect("v2's module");
    // A custom section (id 0) named "x" with one byte: same code, new bytes.
    bytes.extend_from_slice(&[0, 3, 1, b'x', 0]);
    let manifest = std::fs::read_to_string(v2.path().join("manifest.toml")).expect("v2's manifest");
    let v2_other = wasm_support::bundle_of("counter.wasm", &bytes, &manifest);
    runtime.load_bundle(v2.path()).expect("v2 loads");
    let instance = new_instance(&runtime);
    runtime
        .call_wasm(instance, 0, &7u64.to_le_bytes())
        .expect("add runs");
    // A fresh copy per iteration (made untimed) keeps every reload
    // compiling.
    let mut round = 0u64;
    group.bench_function(BenchmarkId::new("with_state_compiled", 1), |b| {
        b.iter_batched(
            || {
                round += 1;
                let mut fresh = bytes.clone();
                fresh.extend_from_slice(&[0, 10, 1, b'r']);
                fresh.extend_from_slice(&round.to_le_bytes());
                wasm_support::bundle_of("counter.wasm", &fresh, &manifest)
            },
            |dir| {
                runtime
                    .reload_bundle(dir.path())
                    .expect("the reload carries the state");
                dir
            },
            criterion::BatchSize::PerIteration,
        );
    });
    runtime.reload_bundle(v2_other.path()).expect("the copy loads");
    assert_eq!(
        runtime.call_wasm(instance, 1, &[]).expect("get runs"),
        vec![7u64.to_le_bytes().to_vec()],
        "the state survived"
    );
    group.finish();
}

criterion_group!(benches, wasm_call, wasm_reload);
criterion_main!(benches);
