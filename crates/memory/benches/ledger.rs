//! Criterion benchmarks of holdfast-memory's hot paths (spec §7).
//!
//! - `boot/{stores}x{generations}`: a full boot as the runtime does it over a
//!   memory holding `generations` of history — recover, validate, commit a
//!   changed layout (one store added), publish. Baseline: ic-memory 0.5.1,
//!   5.61 ms for 100 stores over 1000 generations on a 2-core x86-64.
//! - `unchanged_reboot/*`: the same declarations again (0 bytes written).
//! - `recover/*`: recovery alone (read, checksum, decode, integrity).
//! - `codec/*`: encode and decode of the ledger.
//!
//! Bytes added per changed generation are printed once per size.

use criterion::{BatchSize, BenchmarkId, Criterion, criterion_group, criterion_main};
use holdfast_memory::stable_structures::VectorMemory;
use holdfast_memory::{
    AcceptAllPolicy, AllocationLedger, CborLedgerCodec, DeclarationCollector, DeclarationSnapshot,
    LedgerCodec, MemoryRuntime,
};

fn snapshot(stores: usize, extra: Option<usize>, generation: usize) -> DeclarationSnapshot {
    let mut collector = DeclarationCollector::new();
    for i in 0..stores {
        collector = collector
            .with_memory_manager(format!("bench.store{i}.v1"), 10 + i as u8, "Store")
            .unwrap();
    }
    if let Some(i) = extra {
        collector = collector
            .with_memory_manager(format!("bench.store{i}.v1"), 10 + i as u8, "Store")
            .unwrap();
    }
    collector
        .seal()
        .unwrap()
        .with_runtime_fingerprint(format!("build-{generation}"))
        .unwrap()
}

/// A memory with `generations` committed generations over `stores` stores
/// (each generation a new build fingerprint, so each one commits).
fn history(stores: usize, generations: usize) -> (Vec<u8>, AllocationLedger) {
    let memory = VectorMemory::default();
    let mut ledger = None;
    for g in 0..generations {
        let runtime =
            MemoryRuntime::bootstrap(memory.clone(), snapshot(stores, None, g), &AcceptAllPolicy).unwrap();
        ledger = Some(runtime.ledger().clone());
    }
    let bytes = memory.borrow().clone();
    (bytes, ledger.unwrap())
}

fn benches(c: &mut Criterion) {
    let codec = CborLedgerCodec;
    for (stores, generations) in [(10, 1), (10, 100), (10, 1000), (100, 1000), (244, 1000)] {
        let (image, ledger) = history(stores, generations);
        let encoded = codec.encode(&ledger);
        let next = {
            let (_, longer) = history(stores, generations + 1);
            codec.encode(&longer).len()
        };
        eprintln!(
            "{stores} stores, {generations} generations: ledger {} bytes, {} bytes added by one more generation",
            encoded.len(),
            next - encoded.len()
        );
        let id = format!("{stores}x{generations}");
        // 244 stores use IDs 10..=253; the changed boot re-fingerprints instead.
        let changed = snapshot(stores, None, generations + 1);
        c.bench_with_input(BenchmarkId::new("boot", &id), &image, |b, image| {
            b.iter_batched(
                || std::rc::Rc::new(std::cell::RefCell::new(image.clone())),
                |memory| MemoryRuntime::bootstrap(memory, changed.clone(), &AcceptAllPolicy).unwrap(),
                BatchSize::LargeInput,
            )
        });
        let same = snapshot(stores, None, generations - 1);
        let memory: VectorMemory = std::rc::Rc::new(std::cell::RefCell::new(image.clone()));
        c.bench_function(&format!("unchanged_reboot/{id}"), |b| {
            b.iter(|| MemoryRuntime::bootstrap(memory.clone(), same.clone(), &AcceptAllPolicy).unwrap())
        });
        c.bench_function(&format!("recover/{id}"), |b| {
            b.iter(|| {
                MemoryRuntime::check(
                    &memory,
                    DeclarationSnapshot::new(vec![]).unwrap(),
                    &AcceptAllPolicy,
                )
                .unwrap()
            })
        });
        c.bench_function(&format!("codec/encode/{id}"), |b| {
            b.iter(|| codec.encode(&ledger))
        });
        c.bench_function(&format!("codec/decode/{id}"), |b| {
            b.iter(|| codec.decode(&encoded).unwrap())
        });
    }
}

criterion_group! {
    name = memory;
    config = Criterion::default().sample_size(20).measurement_time(std::time::Duration::from_secs(2)).warm_up_time(std::time::Duration::from_millis(500));
    targets = benches
}
criterion_main!(memory);
