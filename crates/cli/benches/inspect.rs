//! Criterion benchmarks of `holdfast inspect` and `check` on a 4 GiB sparse
//! image (spec: under 100 ms), and of rendering its `--html` page. The image
//! is a real holdfast-memory image of 100 stores over 100 generations,
//! extended to 4 GiB with a sparse tail, so the figure shows that only the
//! needed pages are read.

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};

use criterion::{Criterion, criterion_group, criterion_main};
use holdfast_memory::stable_structures::FileMemory;
use holdfast_memory::{AcceptAllPolicy, DeclarationCollector, DeclarationSnapshot, MemoryRuntime};

const FOUR_GIB: u64 = 4 << 30;

fn snapshot(stores: u8, build: usize) -> DeclarationSnapshot {
    let mut collector = DeclarationCollector::new();
    for i in 0..stores {
        collector = collector
            .with_memory_manager(format!("bench.store{i}.v1"), 10 + i, "Store")
            .unwrap();
    }
    collector
        .seal()
        .unwrap()
        .with_runtime_fingerprint(format!("build-{build}"))
        .unwrap()
}

fn sparse_image(dir: &Path) -> (PathBuf, PathBuf) {
    std::fs::create_dir_all(dir).unwrap();
    let image = dir.join("stable_memory.bin");
    let open = || {
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&image)
            .unwrap()
    };
    for build in 0..100 {
        MemoryRuntime::bootstrap(FileMemory::new(open()), snapshot(100, build), &AcceptAllPolicy).unwrap();
    }
    open().set_len(FOUR_GIB).unwrap();
    let declarations = dir.join("declarations.json");
    std::fs::write(&declarations, snapshot(101, 100).to_json()).unwrap();
    (image, declarations)
}

fn benches(c: &mut Criterion) {
    let dir = std::env::temp_dir().join(format!("holdfast-bench-{}", std::process::id()));
    let (image, declarations) = sparse_image(&dir);
    let report = holdfast_cli::inspect(&image).unwrap();
    eprintln!(
        "inspect of a {} byte image read {} bytes",
        report.image.bytes, report.image.bytes_read
    );
    c.bench_function("inspect/4GiB-sparse", |b| {
        b.iter(|| holdfast_cli::inspect(&image).unwrap())
    });
    c.bench_function("check/4GiB-sparse", |b| {
        b.iter(|| holdfast_cli::check(&image, &declarations).unwrap())
    });
    eprintln!(
        "inspect --html page of that image: {} bytes",
        holdfast_cli::html::page(&report).len()
    );
    c.bench_function("inspect-html-page/4GiB-sparse", |b| {
        b.iter(|| holdfast_cli::html::page(&report))
    });
    std::fs::remove_dir_all(&dir).unwrap();
}

criterion_group! {
    name = cli;
    config = Criterion::default().sample_size(20);
    targets = benches
}
criterion_main!(cli);
