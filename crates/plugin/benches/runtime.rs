//! Criterion benchmarks of the plugin runtime against the targets of spec
//! §11 and issue 14 (polyplug 0.1.3's figures come from
//! `scripts/bench-vs-polyplug.sh`, measured beside these rows):
//!
//! - `dispatch/direct`: an `#[inline(never)]` Rust `u64 -> u64` through
//!   `black_box` (baseline);
//! - `dispatch/raw_ffi`: a function of the v1 fixture looked up with
//!   libloading's `get`, no runtime (its exported `holdfast_abi_version`,
//!   an `extern "C" fn() -> u32` like the contract's);
//! - `dispatch/cached`: `CachedContract::get` under a guard held for the
//!   batch, then `functions[0]` (target ≤ direct + 1.0 ns);
//! - `load_bundle/full` and `load_bundle/open`: a whole load of the reload
//!   fixture (unload untimed), and its shadow copy + open + ABI checks
//!   alone (target ≤ polyplug's load);
//! - `reload/commit`: `ReloadStats::commit` summed (target ≤ 10 µs);
//! - `reload/total`: a whole reload, the old image unmapped between
//!   iterations (target ≤ polyplug's reload); `reload/total_c_plugin`
//!   the same for the 15 KB C fixture, `reload/total_without_shadow_copy`
//!   the Rust fixture opened in place, `reload/floor_copy_and_dlopen` the
//!   image's bytes read and one `dlopen` alone (the least any reload that
//!   keeps a private copy can cost), `reload/floor_dlopen` the `dlopen`
//!   alone;
//! - `dispatch_while_reloading/{quiet,paced,back_to_back}`: calls from 2
//!   threads (pin per 1,024 calls) without reloads, with the main thread
//!   reloading (and reclaiming) once per millisecond against a deadline, and
//!   with it reloading back to back (target: paced ≥ 0.95 × quiet);
//!   `dispatch_while_reloading/paced_floor_dlopen` the paced row with each
//!   round only a `dlopen` and `dlclose` of a private copy of the image
//!   (what any reload that unmaps the old image costs the callers).
//!
//! scripts/bench-vs-polyplug.sh runs `dispatch/{direct,cached}`,
//! `load_bundle/full`, `reload/total` and `dispatch_while_reloading/*` beside
//! the same rows measured through polyplug 0.1.3 (a change to how one of
//! them measures must be made on both sides), and the two `reload/floor_*`
//! rows, which it prints against polyplug's reload.

#[path = "../tests/common/mod.rs"]
mod common;

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use holdfast_plugin::{CachedContract, ManifestData, NativeLoader, Runtime, epoch};
use holdfast_plugin_abi::{GuestContractId, GuestContractInterface, RuntimeConfig};

const RELOAD_TEST: u64 = GuestContractId::new("reload.test", 1).id();
/// Calls per pin in the threaded benchmark.
const CALLS_PER_PIN: u64 = 1_024;

#[inline(never)]
fn direct(value: u64) -> u64 {
    value.wrapping_mul(3).wrapping_add(1)
}

/// `functions[0]` of a native interface with at least one function (the
/// runtime checked both at registration), read the way a host's hot loop
/// would: no re-validation per call.
#[inline]
fn first_function(interface: &GuestContractInterface) -> extern "C" fn() -> u32 {
    // SAFETY: the caller resolved `interface` under a guard it still holds;
    // registration checked it is native with a non-null table of one entry.
    let function = unsafe { *interface.dispatch.native.functions };
    // SAFETY: reload.test's function 0 is `extern "C" fn() -> u32`.
    unsafe { std::mem::transmute::<*const (), extern "C" fn() -> u32>(function) }
}

fn bundle(name: &str) -> PathBuf {
    common::bundle_dir(name)
}

fn runtime() -> std::sync::Arc<Runtime> {
    Runtime::builder()
        .config(RuntimeConfig {
            hot_reload_enabled: true,
            ..Default::default()
        })
        .loader(common::TestNativeLoader::new())
        .build()
        .expect("the default runtime builds")
}

fn dispatch(c: &mut Criterion) {
    let mut group = c.benchmark_group("dispatch");
    group.bench_function("direct", |b| b.iter(|| direct(black_box(7))));

    let v1 = bundle("reload-v1");
    let manifest = ManifestData::from_dir(&v1).expect("fixture manifest");
    // SAFETY: the fixture is trusted test code.
    let library = unsafe { libloading::Library::new(manifest.library_path()) }.expect("fixture opens");
    // SAFETY: the symbol's ABI type.
    let raw: libloading::Symbol<'_, unsafe extern "C" fn() -> u32> =
        unsafe { library.get(b"holdfast_abi_version\0") }.expect("exported");
    let raw = *raw;
    // SAFETY: the library stays open for the benchmark.
    group.bench_function("raw_ffi", |b| b.iter(|| unsafe { raw() }));

    let runtime = runtime();
    runtime.load_bundle(&v1).expect("v1 loads");
    let handle = runtime
        .find_guest_contract(RELOAD_TEST, 0)
        .expect("v1 provides it");
    let mut cached = CachedContract::new(&runtime, handle);
    group.bench_function("cached", |b| {
        let guard = epoch::pin();
        b.iter(|| first_function(cached.get(&guard).expect("loaded"))());
    });
    group.finish();
    drop(library);
}

fn load(c: &mut Criterion) {
    let mut group = c.benchmark_group("load_bundle");
    let runtime = runtime();
    let v1 = bundle("reload-v1");
    group.bench_function("full", |b| {
        b.iter_custom(|iters| {
            let mut spent = Duration::ZERO;
            for _ in 0..iters {
                let started = Instant::now();
                let id = runtime.load_bundle(&v1).expect("v1 loads");
                spent += started.elapsed();
                runtime.unload_bundle(id).expect("v1 unloads");
                runtime.reclaim();
            }
            spent
        });
    });
    let loader = NativeLoader::new();
    let manifest = ManifestData::from_dir(&v1).expect("fixture manifest");
    group.bench_function("open", |b| {
        b.iter_custom(|iters| {
            let mut spent = Duration::ZERO;
            for _ in 0..iters {
                let started = Instant::now();
                let module = loader.open(&manifest).expect("v1 opens");
                spent += started.elapsed();
                drop(module);
            }
            spent
        });
    });
    group.finish();
}

fn reload(c: &mut Criterion) {
    let mut group = c.benchmark_group("reload");
    let runtime = runtime();
    let dirs = [bundle("reload-v2"), bundle("reload-v1")];
    runtime.load_bundle(&dirs[1]).expect("v1 loads");
    let mut next = 0;
    let mut reload_once = |runtime: &Runtime| {
        runtime.reload_bundle(&dirs[next]).expect("reload succeeds");
        next ^= 1;
    };
    group.bench_function("commit", |b| {
        b.iter_custom(|iters| {
            let mut spent = Duration::ZERO;
            for _ in 0..iters {
                reload_once(&runtime);
                spent += runtime.last_reload_stats().expect("just reloaded").commit;
                runtime.reclaim();
            }
            spent
        });
    });
    group.bench_function("total", |b| {
        b.iter_custom(|iters| {
            let mut spent = Duration::ZERO;
            for _ in 0..iters {
                let started = Instant::now();
                reload_once(&runtime);
                spent += started.elapsed();
                // Unmap the replaced image, so every reload opens afresh.
                runtime.reclaim();
            }
            spent
        });
    });
    // The same with the 15 KB C fixture: what the runtime itself costs when
    // copying and mapping the image is cheap (the Rust fixture is 270 KB,
    // most of it std).
    let small = bundle("c-plugin");
    runtime.load_bundle(&small).expect("the C plugin loads");
    group.bench_function("total_c_plugin", |b| {
        b.iter_custom(|iters| {
            let mut spent = Duration::ZERO;
            for _ in 0..iters {
                let started = Instant::now();
                runtime.reload_bundle(&small).expect("reload succeeds");
                spent += started.elapsed();
                runtime.reclaim();
            }
            spent
        });
    });
    // The least a reload that keeps a private copy can cost, whoever
    // implements it: the image's bytes read into memory already mapped (as
    // the shadow copy reads them) and one `dlopen`, with nothing else (no
    // manifest, no ABI checks, no registration); and the `dlopen` alone,
    // which polyplug's reload pays too. The library is a copy of v1 at a
    // path nothing else in this process opens, so every `dlopen` maps it
    // afresh (checked: the image is gone once closed).
    let (_floor_dir, floor_library) = private_copy_of_library(&dirs[1]);
    let mut bytes = std::fs::read(&floor_library).expect("readable");
    group.bench_function("floor_copy_and_dlopen", |b| {
        b.iter_custom(|iters| {
            time_dlopen(&floor_library, iters, || {
                std::fs::File::open(&floor_library)
                    .and_then(|mut file| std::io::Read::read_exact(&mut file, &mut bytes))
                    .expect("the image reads");
                black_box(&bytes);
            })
        });
    });
    group.bench_function("floor_dlopen", |b| {
        b.iter_custom(|iters| time_dlopen(&floor_library, iters, || ()));
    });
    // Without shadow copies (v1 and v2 are different files, and the old
    // image is unmapped before the next reload opens it again): what the
    // private copy costs.
    let unshadowed = Runtime::builder()
        .config(RuntimeConfig {
            hot_reload_enabled: true,
            ..Default::default()
        })
        .loader(NativeLoader::with_shadow_dir(None))
        .build()
        .expect("the runtime builds");
    unshadowed.load_bundle(&dirs[1]).expect("v1 loads");
    let mut next = 0;
    group.bench_function("total_without_shadow_copy", |b| {
        b.iter_custom(|iters| {
            let mut spent = Duration::ZERO;
            for _ in 0..iters {
                let started = Instant::now();
                unshadowed.reload_bundle(&dirs[next]).expect("reload succeeds");
                spent += started.elapsed();
                next ^= 1;
                unshadowed.reclaim();
            }
            spent
        });
    });
    group.finish();
}

/// A copy of `bundle`'s library in a new scratch directory (returned, to
/// be kept while the copy is used), at a canonical path (as
/// /proc/self/maps names the mapped file) nothing else opens.
fn private_copy_of_library(bundle: &Path) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("a scratch directory");
    let library = dir
        .path()
        .canonicalize()
        .expect("the scratch directory resolves")
        .join("libfloor.so");
    let source = ManifestData::from_dir(bundle)
        .expect("fixture manifest")
        .library_path();
    std::fs::copy(&source, &library).expect("the fixture copies");
    (dir, library)
}

/// `dlopen`s `library`, a copy of a fixture, for a floor row.
fn open_floor_image(library: &Path) -> libloading::Library {
    // SAFETY: the fixture is trusted test code and only its initializers
    // run: the floor rows call nothing of it and drop the handle before
    // the next open.
    unsafe { libloading::Library::new(library) }.expect("it opens")
}

/// The time of `iters` rounds of `before` and a `dlopen` of `library`; each
/// image is closed, and checked unmapped, untimed.
fn time_dlopen(library: &Path, iters: u64, mut before: impl FnMut()) -> Duration {
    let mut spent = Duration::ZERO;
    for _ in 0..iters {
        let started = Instant::now();
        before();
        let image = open_floor_image(library);
        spent += started.elapsed();
        drop(image);
        assert!(!is_mapped(library), "dlclose unmapped the image");
    }
    spent
}

/// Whether `library` is mapped in this process.
fn is_mapped(library: &Path) -> bool {
    let maps = std::fs::read_to_string("/proc/self/maps").expect("readable");
    let name = library.to_str().expect("a UTF-8 path");
    maps.lines().any(|line| line.ends_with(name))
}

/// What each of the main thread's rounds does.
#[derive(Clone, Copy)]
enum Round {
    /// Reloads the fixture (alternately v2 and v1) and reclaims.
    Reload,
    /// Opens and closes a private copy of the image, nothing else.
    DlopenOnly,
}

/// How the main thread paces its rounds while the workers call.
#[derive(Clone, Copy)]
enum Reloads {
    None,
    /// One reload per millisecond, against a deadline (not a sleep after
    /// each reload, which would stretch the period by the reload's time).
    Paced,
    BackToBack,
}

/// Runs `calls` dispatches on each of 2 threads (a pin per 1,024 calls),
/// meanwhile running `round` (a reload and reclaim, or a floor's work) as
/// `reloads` paces it; returns the wall time and how many rounds ran.
/// scripts/bench-vs-polyplug/harness/benches/polyplug.rs measures polyplug
/// the same way: keep the two alike.
fn threaded_dispatch(
    runtime: &Runtime,
    calls: u64,
    reloads: Reloads,
    mut round: impl FnMut(),
) -> (Duration, u64) {
    let handle = runtime.find_guest_contract(RELOAD_TEST, 0).expect("loaded");
    let started = Instant::now();
    let mut done = 0_u64;
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..2)
            .map(|_| {
                scope.spawn(|| {
                    let mut cached = CachedContract::new(runtime, handle);
                    let mut remaining = calls;
                    while remaining > 0 {
                        let batch = remaining.min(CALLS_PER_PIN);
                        let guard = epoch::pin();
                        for _ in 0..batch {
                            black_box(first_function(cached.get(&guard).expect("loaded"))());
                        }
                        remaining -= batch;
                    }
                })
            })
            .collect();
        if matches!(reloads, Reloads::None) {
            return;
        }
        while !workers.iter().all(|worker| worker.is_finished()) {
            round();
            done += 1;
            if matches!(reloads, Reloads::Paced) {
                let due = started + Duration::from_millis(done);
                if let Some(wait) = due.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
            }
        }
    });
    (started.elapsed(), done)
}

fn dispatch_while_reloading(c: &mut Criterion) {
    let mut group = c.benchmark_group("dispatch_while_reloading");
    group.throughput(Throughput::Elements(2));
    let runtime = runtime();
    let dirs = [bundle("reload-v2"), bundle("reload-v1")];
    runtime.load_bundle(&dirs[1]).expect("v1 loads");
    // The floor of the paced row: the same pace, but each round only
    // opens and closes a private copy of the image, which any reload that
    // unmaps the old one pays (the runtime is not touched, so the workers'
    // cached contracts stay valid).
    let (_floor_dir, floor_library) = private_copy_of_library(&dirs[1]);
    let mut next = 0;
    let mut round = |what: Round| match what {
        Round::Reload => {
            runtime.reload_bundle(&dirs[next]).expect("reload succeeds");
            runtime.reclaim();
            next ^= 1;
        }
        // That closing unmaps it, the floor rows of `reload` check.
        Round::DlopenOnly => drop(open_floor_image(&floor_library)),
    };
    let modes = [
        ("quiet", Reloads::None, Round::Reload),
        ("paced", Reloads::Paced, Round::Reload),
        ("back_to_back", Reloads::BackToBack, Round::Reload),
        ("paced_floor_dlopen", Reloads::Paced, Round::DlopenOnly),
    ];
    for (name, reloads, what) in modes {
        let (mut wall, mut count) = (Duration::ZERO, 0_u64);
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let (spent, reloaded) = threaded_dispatch(&runtime, iters, reloads, || round(what));
                wall += spent;
                count += reloaded;
                spent
            });
        });
        // The achieved pace, so a reader can check "one per millisecond".
        if count > 0 {
            eprintln!(
                "dispatch_while_reloading/{name}: {count} reloads in {:.2} s of dispatch ({:.0} per second)",
                wall.as_secs_f64(),
                count as f64 / wall.as_secs_f64()
            );
        }
    }
    group.finish();
}

criterion_group!(benches, dispatch, load, reload, dispatch_while_reloading);
criterion_main!(benches);
