//! Adoption of an ic-memory 0.5 ledger, measured beside ic-memory 0.5.1's
//! own boot of the same image in the same run.
//!
//! The image: 1,000 boots by the published ic-memory 0.5.1 (its own code,
//! as its runtime runs it) of 100 stores on IDs 10..=109, each boot a new
//! build fingerprint, so the ledger holds 1,000 generations.
//!
//! - `adoption_100x1000/ic_memory_boot`: the baseline — ic-memory 0.5.1
//!   boots the same 100 declarations (build 1000) over the image: preflight,
//!   `Cell::init`, recover, validate, stage, commit both slots, `Cell::set`.
//! - `adoption_100x1000/holdfast_adopting_boot`: holdfast-memory boots the
//!   same declarations over the same image: decode and convert the ic-memory
//!   ledger, validate, write the converted store past the `Cell`, flip byte
//!   0, commit generation 1,001. Target: not slower than the baseline.
//! - `adoption_100x1000/holdfast_later_boot`: a boot after adoption that
//!   changes the build (commits generation 1,002), as `boot/*` in
//!   benches/ledger.rs measures holdfast's own.
//! - `adoption_100x1000/holdfast_unchanged_reboot`: the same declarations
//!   again after adoption (nothing written).
//!
//! Each measured boot runs over a fresh copy of its image (the copy is not
//! timed).

#[path = "../tests/common/ic_memory.rs"]
mod ic_images;

use std::cell::RefCell;
use std::rc::Rc;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use holdfast_memory::stable_structures::VectorMemory;
use holdfast_memory::{AcceptAllPolicy, DeclarationCollector, DeclarationSnapshot, MemoryRuntime};
use ic_images::{IcDecl, decl, ic_boot};

const STORES: u8 = 100;
const GENERATIONS: usize = 1000;

fn ic_declarations() -> Vec<IcDecl> {
    (0..STORES)
        .map(|i| decl(&format!("bench.store{i}.v1"), 10 + i))
        .collect()
}

fn holdfast_declarations(build: usize) -> DeclarationSnapshot {
    let mut collector = DeclarationCollector::new();
    for i in 0..STORES {
        collector = collector
            .with_memory_manager(format!("bench.store{i}.v1"), 10 + i, "Store")
            .expect("valid declaration");
    }
    collector
        .seal()
        .expect("unique declarations")
        .with_runtime_fingerprint(format!("build-{build}"))
        .expect("valid fingerprint")
}

fn copy(image: &[u8]) -> VectorMemory {
    Rc::new(RefCell::new(image.to_vec()))
}

fn benches(c: &mut Criterion) {
    let memory = VectorMemory::default();
    let declarations = ic_declarations();
    for build in 0..GENERATIONS {
        ic_boot(&memory, &declarations, Some(&format!("build-{build}")), None).expect("ic-memory boots");
    }
    let ic_image = memory.borrow().clone();
    let adopted = copy(&ic_image);
    MemoryRuntime::bootstrap(
        adopted.clone(),
        holdfast_declarations(GENERATIONS),
        &AcceptAllPolicy,
    )
    .expect("holdfast adopts");
    let adopted_image = adopted.borrow().clone();
    let cell = holdfast_memory::diagnostic_export_of(&copy(&ic_image))
        .expect("exports")
        .ic_memory
        .expect("an ic-memory ledger")
        .adoption;
    let store = holdfast_memory::commit_recovery_diagnostic_of(&adopted).expect("diagnoses");
    eprintln!(
        "ic-memory Cell value: {} bytes (both slots); holdfast store after adoption starts at byte {} of ID 0, \
         slots {:?} / {:?}",
        cell.cell_value_bytes, cell.forward_offset, store.slot0, store.slot1
    );

    let mut group = c.benchmark_group("adoption_100x1000");
    group.bench_function("ic_memory_boot", |b| {
        b.iter_batched(
            || copy(&ic_image),
            |memory| {
                ic_boot(
                    &memory,
                    &declarations,
                    Some(&format!("build-{GENERATIONS}")),
                    None,
                )
                .expect("ic-memory boots")
            },
            BatchSize::LargeInput,
        )
    });
    let adopting = holdfast_declarations(GENERATIONS);
    group.bench_function("holdfast_adopting_boot", |b| {
        b.iter_batched(
            || copy(&ic_image),
            |memory| MemoryRuntime::bootstrap(memory, adopting.clone(), &AcceptAllPolicy).expect("adopts"),
            BatchSize::LargeInput,
        )
    });
    let later = holdfast_declarations(GENERATIONS + 1);
    group.bench_function("holdfast_later_boot", |b| {
        b.iter_batched(
            || copy(&adopted_image),
            |memory| MemoryRuntime::bootstrap(memory, later.clone(), &AcceptAllPolicy).expect("boots"),
            BatchSize::LargeInput,
        )
    });
    let unchanged = copy(&adopted_image);
    group.bench_function("holdfast_unchanged_reboot", |b| {
        b.iter(|| {
            MemoryRuntime::bootstrap(unchanged.clone(), adopting.clone(), &AcceptAllPolicy).expect("boots")
        })
    });
    group.finish();
}

criterion_group! {
    name = adoption;
    config = Criterion::default().sample_size(30);
    targets = benches
}
criterion_main!(adoption);
