//! The polyplug 0.1.3 side of scripts/bench-vs-polyplug.sh: the rows of
//! holdfast-plugin's `runtime` bench, with the same names, measured the same
//! way through polyplug's public API (see docs/BENCHMARKS.md,
//! "Side by side with polyplug 0.1.3", for what each row does on each side):
//!
//! - `dispatch/direct`: an `#[inline(never)]` `u64 -> u64` through
//!   `black_box` (the machine baseline, identical code on both sides);
//! - `dispatch/cached`: the caller's cache check (an acquire load of the
//!   registry revision, compared with the one it resolved at; what polyplug's
//!   generated callers do), then function 0 of `reload.test@1`, under an epoch
//!   guard held for the batch;
//! - `load_bundle/full`: a whole `load_bundle` of the v1 fixture; unload and
//!   unmapping the image untimed;
//! - `reload/total`: a whole `reload_bundle`, v1 and v2 alternately, the
//!   replaced image unmapped (untimed) before the next reload;
//! - `dispatch_while_reloading/{quiet,paced,back_to_back}`: 2 threads call
//!   through their own cached caller, pinning once per 1,024 calls; the main
//!   thread reloads v1 <-> v2 (from distinct copies, see `COPIES`) and
//!   reclaims after each reload, either one
//!   reload per millisecond (paced against a deadline) or back to back.
//!
//! polyplug 0.1.3's native loaders keep every superseded library mapped for
//! the loader's life, so the loader here (dlopen, ABI check, init, as its
//! test loader does) unmaps a replaced image itself: after the runtime has
//! published the replacement, once an epoch grace period has passed — what
//! holdfast's `Runtime::reclaim` does.
//!
//! The fixture libraries come from `POLYPLUG_FIXTURES` (the directory holding
//! `libpolyplug_reload_v{1,2}.so`); bundle directories are written under
//! `POLYPLUG_BUNDLES`.

use std::collections::HashMap;
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use crossbeam_epoch as epoch;
use libloading::Library;
use polyplug::Runtime;
use polyplug::error::LoaderError;
use polyplug::loader::{BundleLoader, BundleSource, ManifestData};
use polyplug_abi::types::AbiErrorCode;
use polyplug_abi::{
    AbiError, BundleInitContext, GuestContractHandle, GuestContractInstance, GuestContractInterface, HostApi,
    POLYPLUG_ABI_VERSION, RuntimeConfig, StringView, SupportedLanguage,
};
use polyplug_utils::{BundleId, GuestContractId};

/// The bundle name both fixture versions share.
const BUNDLE: &str = "reload-bench";
/// Calls per pin in the threaded benchmark (holdfast's `CALLS_PER_PIN`).
const CALLS_PER_PIN: u64 = 1_024;

type DispatchFn = unsafe extern "C" fn(GuestContractInstance, *const (), *mut (), *mut AbiError);

#[inline(never)]
fn direct(value: u64) -> u64 {
    value.wrapping_mul(3).wrapping_add(1)
}

/// A replaced library waiting for its grace period.
struct Waiting {
    path: PathBuf,
    /// Held only so the image stays mapped until this is dropped.
    _image: Library,
    ready: Arc<AtomicBool>,
}

#[derive(Default)]
struct LoaderState {
    open: Mutex<HashMap<BundleId, (PathBuf, Library)>>,
    /// Replaced or unloaded, not yet past a publication the harness saw.
    superseded: Mutex<Vec<(PathBuf, Library)>>,
    waiting: Mutex<Vec<Waiting>>,
    /// Opens of a library whose previous image was still mapped (dlopen
    /// then shares that image instead of mapping the file afresh).
    warm_opens: AtomicU64,
}

/// polyplug `BundleLoader` for native libraries that unmaps a replaced image
/// in `reclaim`, once no thread pinned before the replacement is still
/// pinned.
#[derive(Clone, Default)]
struct UnmappingLoader(Arc<LoaderState>);

impl UnmappingLoader {
    fn open(&self, manifest: &ManifestData, runtime: &Runtime) -> Result<(), LoaderError> {
        let failed = |error: String| LoaderError::InitFailed {
            bundle: manifest.name.clone(),
            error,
        };
        let path = manifest.path.join(&manifest.file);
        // Unmap the replaced images whose grace period has passed, as a
        // holdfast lifecycle operation does for those retired before it.
        self.0
            .waiting
            .lock()
            .expect("not poisoned")
            .retain(|image| !image.ready.load(Ordering::Acquire));
        if self.is_mapped(&path) {
            self.0.warm_opens.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: the fixture is trusted code built by the script.
        let library = unsafe { Library::new(&path) }.map_err(|e| failed(e.to_string()))?;
        // SAFETY: the symbol's type in polyplug's ABI.
        let abi_version = unsafe { library.get::<unsafe extern "C" fn() -> u32>(b"polyplug_abi_version\0") }
            .map_err(|e| failed(e.to_string()))?;
        // SAFETY: as above; the function takes no arguments.
        if unsafe { abi_version() } != POLYPLUG_ABI_VERSION {
            return Err(failed("ABI version mismatch".into()));
        }
        type Init = unsafe extern "C" fn(*const HostApi, *const BundleInitContext) -> AbiError;
        // SAFETY: the symbol's type in polyplug's ABI.
        let init = *unsafe { library.get::<Init>(b"polyplug_init\0") }.map_err(|e| failed(e.to_string()))?;
        let dir = manifest.path.as_os_str().as_encoded_bytes();
        let bundle_id = BundleId::new(&manifest.name);
        let context = BundleInitContext {
            bundle_id: bundle_id.id(),
            bundle_path: StringView {
                ptr: dir.as_ptr(),
                len: dir.len(),
            },
        };
        runtime.push_init_bundle_id(bundle_id.id());
        // SAFETY: the runtime's host table and a context that outlive the call.
        let result = unsafe { init(runtime.host_abi(), &context) };
        runtime.pop_init_bundle_id();
        if result.code != AbiErrorCode::Ok as u32 {
            return Err(failed(format!("init returned {}", result.code)));
        }
        if let Some(replaced) = self
            .0
            .open
            .lock()
            .expect("not poisoned")
            .insert(bundle_id, (path, library))
        {
            self.0.superseded.lock().expect("not poisoned").push(replaced);
        }
        Ok(())
    }

    /// Whether an image of `path` is still mapped: replaced, but not yet
    /// unmapped.
    fn is_mapped(&self, path: &Path) -> bool {
        self.0
            .superseded
            .lock()
            .expect("not poisoned")
            .iter()
            .any(|(old, _)| old == path)
            || self
                .0
                .waiting
                .lock()
                .expect("not poisoned")
                .iter()
                .any(|image| image.path == path)
    }

    fn warm_opens(&self) -> u64 {
        self.0.warm_opens.load(Ordering::Relaxed)
    }

    /// Call after the operation that replaced or unloaded an image returned:
    /// starts the grace period of every image superseded since the last call,
    /// advances the epoch and unmaps those whose grace period has passed.
    /// Returns how many are still mapped.
    fn reclaim(&self) -> usize {
        let superseded = std::mem::take(&mut *self.0.superseded.lock().expect("not poisoned"));
        let mut waiting = self.0.waiting.lock().expect("not poisoned");
        for (path, library) in superseded {
            let ready = Arc::new(AtomicBool::new(false));
            let flag = Arc::clone(&ready);
            epoch::pin().defer(move || flag.store(true, Ordering::Release));
            waiting.push(Waiting {
                path,
                _image: library,
                ready,
            });
        }
        for _ in 0..4 {
            epoch::pin().flush();
        }
        waiting.retain(|image| !image.ready.load(Ordering::Acquire));
        waiting.len()
    }
}

impl BundleLoader for UnmappingLoader {
    fn loader_name(&self) -> &'static str {
        "native"
    }

    fn loader_language(&self) -> SupportedLanguage {
        SupportedLanguage::Rust
    }

    fn supports_hot_reload(&self) -> bool {
        true
    }

    fn load(
        &self,
        manifest: &ManifestData,
        _source: &BundleSource,
        runtime: &Runtime,
    ) -> Result<(), LoaderError> {
        self.open(manifest, runtime)
    }

    fn reload(&self, manifest: &ManifestData, runtime: &Runtime) -> Result<(), LoaderError> {
        self.open(manifest, runtime)
    }

    fn unload(&self, bundle_id: BundleId, _runtime: &Runtime) -> Result<(), LoaderError> {
        if let Some(opened) = self.0.open.lock().expect("not poisoned").remove(&bundle_id) {
            self.0.superseded.lock().expect("not poisoned").push(opened);
        }
        Ok(())
    }
}

/// A caller that resolves `reload.test@1` once and again only when the
/// registry's revision moved: an acquire load and a compare per call.
struct CachedCaller<'rt> {
    runtime: &'rt Runtime,
    revision: &'rt AtomicU64,
    seen: u64,
    interface: *const GuestContractInterface,
}

impl<'rt> CachedCaller<'rt> {
    fn new(runtime: &'rt Runtime) -> Self {
        // SAFETY: the registry's revision is an AtomicU64 living as long as
        // the runtime (RuntimeStore::revision_ptr's contract).
        let revision = unsafe { &*runtime.registry().revision_ptr().cast::<AtomicU64>() };
        Self {
            runtime,
            revision,
            seen: u64::MAX,
            interface: std::ptr::null(),
        }
    }

    /// The current interface, valid while `_guard` is held.
    #[inline]
    fn get<'g>(&mut self, _guard: &'g epoch::Guard) -> &'g GuestContractInterface {
        let now = self.revision.load(Ordering::Acquire);
        if now != self.seen {
            self.refresh(now);
        }
        // SAFETY: resolved under a pin of the collector the registry defers
        // on, and the caller's guard is held while the reference lives.
        unsafe { &*self.interface }
    }

    #[cold]
    fn refresh(&mut self, now: u64) {
        let contract = GuestContractId::new("reload.test", 1).id();
        let handle: GuestContractHandle = self
            .runtime
            .find_guest_contract(contract, 0)
            .expect("reload.test is provided");
        self.interface = self
            .runtime
            .resolve_guest_contract(handle)
            .expect("the handle resolves");
        self.seen = now;
    }
}

/// Function 0 of `reload.test@1`.
#[inline]
fn call(interface: &GuestContractInterface) -> u32 {
    // SAFETY: the fixture registers a native interface with one function of
    // polyplug's native dispatch type.
    let function =
        unsafe { std::mem::transmute::<*const (), DispatchFn>(*interface.dispatch.native.functions) };
    let mut out = 0_u32;
    let mut error = AbiError::ok();
    // SAFETY: the function ignores its instance and arguments and writes a u32.
    unsafe {
        function(
            GuestContractInstance::null(),
            std::ptr::null(),
            (&raw mut out).cast(),
            &raw mut error,
        );
    }
    out
}

struct Fixture {
    v1: PathBuf,
    v2: PathBuf,
    /// Bundle directories for the threaded rows, v2 and v1 alternately, each
    /// with its own copy of the library, ending with `v1`.
    cycle: Vec<PathBuf>,
}

/// Copies of each version in `Fixture::cycle`. polyplug opens a library in
/// place, and dlopen of a file whose previous image is still mapped (its
/// grace period not over, which can take several milliseconds while two threads
/// dispatch) shares that image instead of mapping it afresh; cycling through
/// distinct files keeps the threaded rows' reloads as cold as `reload/total`'s
/// (holdfast opens a fresh private copy on every reload).
const COPIES: usize = 16;

/// Writes the bundle directories (manifest and library) polyplug loads.
fn fixture() -> Fixture {
    let libraries = PathBuf::from(std::env::var_os("POLYPLUG_FIXTURES").expect("POLYPLUG_FIXTURES is set"));
    let bundles = PathBuf::from(std::env::var_os("POLYPLUG_BUNDLES").expect("POLYPLUG_BUNDLES is set"));
    let write = |version: u32, copy: usize| {
        let dir = bundles.join(format!("v{version}-{copy}"));
        std::fs::create_dir_all(&dir).expect("bundle directory");
        let file = format!("libpolyplug_reload_v{version}.so");
        std::fs::copy(libraries.join(&file), dir.join(&file)).expect("fixture library copied");
        let manifest = format!(
            "id = {}\nname = \"{BUNDLE}\"\nloader = \"native\"\nfile = \"{file}\"\nversion = \"1.0.{version}\"\n\
             provides = [\"reload.test\"]\nfunction_count = {{ \"reload.test@1\" = 1 }}\n",
            BundleId::new(BUNDLE).id()
        );
        std::fs::write(dir.join("manifest.toml"), manifest).expect("manifest written");
        dir
    };
    let mut cycle: Vec<PathBuf> = (1..COPIES)
        .flat_map(|copy| [write(1, copy), write(2, copy)])
        .collect();
    let (v1, v2) = (write(1, 0), write(2, 0));
    cycle.insert(0, v2.clone());
    cycle.push(v1.clone());
    Fixture { v1, v2, cycle }
}

fn runtime(loader: &UnmappingLoader) -> Arc<Runtime> {
    Runtime::builder()
        .config(RuntimeConfig {
            hot_reload_enabled: true,
            ..RuntimeConfig::default()
        })
        .loader(loader.clone())
        .build()
        .expect("the runtime builds")
}

/// How many mappings of a fixture library the process has.
fn mapped_fixture_images() -> usize {
    let maps = std::fs::read_to_string("/proc/self/maps").expect("/proc/self/maps");
    let mut images: Vec<&str> = maps
        .lines()
        .filter_map(|line| line.split_whitespace().nth(5))
        .filter(|path| path.contains("libpolyplug_reload_v"))
        .collect();
    images.sort_unstable();
    images.dedup();
    images.len()
}

/// Checks, before measuring, that a reload runs the other version's code and
/// that `reclaim` leaves only that image mapped: the rows below measure what
/// they claim.
fn check_fixture(fixture: &Fixture) {
    let loader = UnmappingLoader::default();
    let runtime = runtime(&loader);
    runtime.load_bundle(&fixture.v1).expect("v1 loads");
    let mut caller = CachedCaller::new(&runtime);
    assert_eq!(call(caller.get(&epoch::pin())), 100);
    runtime.reload_bundle(&fixture.v2).expect("reload to v2");
    assert_eq!(call(caller.get(&epoch::pin())), 200);
    assert_eq!(loader.reclaim(), 0, "the replaced image is released");
    assert_eq!(mapped_fixture_images(), 1, "only v2 stays mapped");
    runtime.reload_bundle(&fixture.v1).expect("reload to v1");
    for (at, dir) in fixture.cycle.iter().enumerate() {
        runtime.reload_bundle(dir).expect("reload through the cycle");
        let expected = if at % 2 == 0 { 200 } else { 100 };
        assert_eq!(call(caller.get(&epoch::pin())), expected, "{}", dir.display());
        assert_eq!(loader.reclaim(), 0);
        assert_eq!(mapped_fixture_images(), 1);
    }
    runtime.unload_bundle(BundleId::new(BUNDLE)).expect("unloads");
    assert_eq!(loader.reclaim(), 0);
    assert_eq!(mapped_fixture_images(), 0, "nothing stays mapped");
}

fn dispatch(c: &mut Criterion, fixture: &Fixture) {
    let mut group = c.benchmark_group("dispatch");
    group.bench_function("direct", |b| b.iter(|| direct(black_box(7))));
    let loader = UnmappingLoader::default();
    let runtime = runtime(&loader);
    runtime.load_bundle(&fixture.v1).expect("v1 loads");
    let mut caller = CachedCaller::new(&runtime);
    group.bench_function("cached", |b| {
        let guard = epoch::pin();
        b.iter(|| call(caller.get(&guard)));
    });
    group.finish();
}

fn load(c: &mut Criterion, fixture: &Fixture) {
    let mut group = c.benchmark_group("load_bundle");
    let loader = UnmappingLoader::default();
    let runtime = runtime(&loader);
    group.bench_function("full", |b| {
        b.iter_custom(|iters| {
            let mut spent = Duration::ZERO;
            for _ in 0..iters {
                let started = Instant::now();
                runtime.load_bundle(&fixture.v1).expect("v1 loads");
                spent += started.elapsed();
                runtime.unload_bundle(BundleId::new(BUNDLE)).expect("v1 unloads");
                assert_eq!(loader.reclaim(), 0, "the image is unmapped");
            }
            spent
        });
    });
    group.finish();
}

fn reload(c: &mut Criterion, fixture: &Fixture) {
    let mut group = c.benchmark_group("reload");
    let loader = UnmappingLoader::default();
    let runtime = runtime(&loader);
    runtime.load_bundle(&fixture.v1).expect("v1 loads");
    let dirs = [&fixture.v2, &fixture.v1];
    let mut next = 0;
    group.bench_function("total", |b| {
        b.iter_custom(|iters| {
            let mut spent = Duration::ZERO;
            for _ in 0..iters {
                let started = Instant::now();
                runtime.reload_bundle(dirs[next]).expect("reload succeeds");
                spent += started.elapsed();
                next ^= 1;
                // Unmap the replaced image, so every reload opens afresh.
                assert_eq!(loader.reclaim(), 0, "the replaced image is unmapped");
            }
            spent
        });
    });
    assert_eq!(loader.warm_opens(), 0, "every reload mapped its image afresh");
    group.finish();
}

#[derive(Clone, Copy)]
enum Reloads {
    None,
    /// One per millisecond, against a deadline.
    Paced,
    BackToBack,
}

/// Runs `calls` dispatches on each of 2 threads while the main thread
/// reloads as `reloads` says; returns the wall time and the reload count.
fn threaded_dispatch(
    runtime: &Runtime,
    loader: &UnmappingLoader,
    dirs: &[&Path],
    calls: u64,
    reloads: Reloads,
) -> (Duration, u64) {
    let started = Instant::now();
    let mut done = 0_u64;
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..2)
            .map(|_| {
                scope.spawn(|| {
                    let mut caller = CachedCaller::new(runtime);
                    let mut remaining = calls;
                    while remaining > 0 {
                        let batch = remaining.min(CALLS_PER_PIN);
                        let guard = epoch::pin();
                        for _ in 0..batch {
                            black_box(call(caller.get(&guard)));
                        }
                        remaining -= batch;
                    }
                })
            })
            .collect();
        if matches!(reloads, Reloads::None) {
            return;
        }
        let mut next = 0;
        while !workers.iter().all(|worker| worker.is_finished()) {
            runtime.reload_bundle(dirs[next]).expect("reload succeeds");
            loader.reclaim();
            next = (next + 1) % dirs.len();
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

fn dispatch_while_reloading(c: &mut Criterion, fixture: &Fixture) {
    let mut group = c.benchmark_group("dispatch_while_reloading");
    group.throughput(Throughput::Elements(2));
    let loader = UnmappingLoader::default();
    let runtime = runtime(&loader);
    runtime.load_bundle(&fixture.v1).expect("v1 loads");
    let dirs: Vec<&Path> = fixture.cycle.iter().map(PathBuf::as_path).collect();
    for (name, reloads) in [
        ("quiet", Reloads::None),
        ("paced", Reloads::Paced),
        ("back_to_back", Reloads::BackToBack),
    ] {
        let (mut wall, mut count, warm_before) = (Duration::ZERO, 0_u64, loader.warm_opens());
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let (spent, reloaded) = threaded_dispatch(&runtime, &loader, &dirs, iters, reloads);
                wall += spent;
                count += reloaded;
                spent
            });
        });
        if count > 0 {
            // A reload that found the other version still mapped (its grace
            // period not over) shares that image instead of mapping afresh.
            eprintln!(
                "dispatch_while_reloading/{name}: {count} reloads in {:.2} s of dispatch ({:.0} per second; \
                 {} found their image still mapped)",
                wall.as_secs_f64(),
                count as f64 / wall.as_secs_f64(),
                loader.warm_opens() - warm_before
            );
        }
    }
    group.finish();
}

fn benches(c: &mut Criterion) {
    let fixture = fixture();
    check_fixture(&fixture);
    dispatch(c, &fixture);
    load(c, &fixture);
    reload(c, &fixture);
    dispatch_while_reloading(c, &fixture);
}

criterion_group!(polyplug_benches, benches);
criterion_main!(polyplug_benches);
