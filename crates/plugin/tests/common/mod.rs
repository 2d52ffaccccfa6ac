//! Test support for holdfast-plugin (spec §10.1): builds the fixture plugins
//! from `fixtures/plugins` once per process, under a file lock so that
//! parallel test processes do not race, and writes each bundle directory
//! (library plus a manifest from a template) below
//! `$CARGO_TARGET_TMPDIR/holdfast-fixtures/bundles/`.
#![allow(
    dead_code,
    unreachable_pub,
    reason = "each test binary uses a different subset; the helpers are pub for the external compatibility suite (spec §10.1)"
)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use holdfast_plugin_abi::BundleId;

/// Where the fixtures are built and written.
pub fn fixtures_root() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("holdfast-fixtures")
}

/// The directory of the bundle written as `dir_name`, building the fixtures
/// first if this process has not yet.
pub fn bundle_dir(dir_name: &str) -> PathBuf {
    build_fixtures();
    fixtures_root().join("bundles").join(dir_name)
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// One bundle directory to write: which library, under which manifest.
struct BundleSpec {
    dir_name: &'static str,
    name: &'static str,
    version: &'static str,
    /// The library's file stem (`reload_plugin_v1` for `libreload_plugin_v1.so`).
    library: &'static str,
    provides: &'static [(&'static str, u32)],
    /// Extra TOML: top-level keys, then tables (`[[dependency]]`).
    extra_keys: &'static str,
    extra_tables: &'static str,
}

impl BundleSpec {
    const fn new(
        dir_name: &'static str,
        name: &'static str,
        version: &'static str,
        library: &'static str,
        provides: &'static [(&'static str, u32)],
    ) -> Self {
        Self {
            dir_name,
            name,
            version,
            library,
            provides,
            extra_keys: "",
            extra_tables: "",
        }
    }
}

const RELOAD_TEST: &[(&str, u32)] = &[("reload.test@1", 1)];
const COUNTER: &[(&str, u32)] = &[("demo.Counter@1", 2)];

const BUNDLES: &[BundleSpec] = &[
    BundleSpec::new(
        "reload-v1",
        "reload-plugin",
        "1.0.0",
        "reload_plugin_v1",
        RELOAD_TEST,
    ),
    BundleSpec::new(
        "reload-v2",
        "reload-plugin",
        "2.0.0",
        "reload_plugin_v2",
        RELOAD_TEST,
    ),
    BundleSpec::new(
        "broken-abi-version",
        "reload-plugin",
        "3.0.0",
        "broken_abi_version",
        &[],
    ),
    BundleSpec::new(
        "broken-no-layout",
        "reload-plugin",
        "3.0.0",
        "broken_no_layout",
        &[],
    ),
    BundleSpec::new("broken-layout", "reload-plugin", "3.0.0", "broken_layout", &[]),
    BundleSpec::new("broken-no-init", "reload-plugin", "3.0.0", "broken_no_init", &[]),
    BundleSpec::new(
        "broken-null-layout",
        "reload-plugin",
        "3.0.0",
        "broken_null_layout",
        &[],
    ),
    BundleSpec::new(
        "broken-entry-count",
        "reload-plugin",
        "3.0.0",
        "broken_entry_count",
        &[],
    ),
    BundleSpec::new(
        "broken-init-error",
        "reload-plugin",
        "3.0.0",
        "broken_init_error",
        &[],
    ),
    BundleSpec::new(
        "broken-register-then-fail",
        "reload-plugin",
        "3.0.0",
        "broken_register_then_fail",
        RELOAD_TEST,
    ),
    // The v1 library under manifests it contradicts.
    BundleSpec::new(
        "broken-function-count",
        "reload-plugin",
        "3.0.0",
        "reload_plugin_v1",
        &[("reload.test@1", 2)],
    ),
    BundleSpec::new(
        "broken-undeclared",
        "reload-plugin",
        "3.0.0",
        "reload_plugin_v1",
        &[],
    ),
    BundleSpec::new("c-plugin", "c-plugin", "1.0.0", "c_reload_plugin", RELOAD_TEST),
    BundleSpec::new(
        "cpp-plugin",
        "cpp-plugin",
        "1.0.0",
        "cpp_reload_plugin",
        RELOAD_TEST,
    ),
    BundleSpec::new("counter-v1", "counter-plugin", "1.0.0", "counter_v1", COUNTER),
    BundleSpec::new("counter-v2", "counter-plugin", "2.0.0", "counter_v2", COUNTER),
    BundleSpec::new(
        "counter-v2-reject",
        "counter-plugin",
        "2.1.0",
        "counter_v2_reject",
        COUNTER,
    ),
    BundleSpec::new("soak-plugin", "soak-plugin", "1.0.0", "soak_plugin", RELOAD_TEST),
    BundleSpec {
        extra_tables: "[[dependency]]\ncontract = \"reload.test@1\"\noptional = true\n",
        ..BundleSpec::new("probe", "probe", "1.0.0", "probe_plugin", &[("probe.test@1", 6)])
    },
];

/// The daemon-kind bundles (spec/host.md §3): directory, committed manifest
/// (relative to `fixtures/plugins`) and library stem. Their manifests are
/// the committed files, laid out unchanged, so the tests check them too.
const DAEMON_BUNDLES: &[(&str, &str, &str)] = &[
    (
        "daemon_counter_v1",
        "daemon_counter_v1/manifest.toml",
        "daemon_counter_v1",
    ),
    (
        "daemon_counter_v2",
        "daemon_counter_v2/manifest.toml",
        "daemon_counter_v2",
    ),
    (
        "daemon_counter_v3_broken",
        "daemon_counter_v3_broken/manifest.toml",
        "daemon_counter_v3_broken",
    ),
    (
        "daemon_counter_restore_fails_one",
        "daemon_counter_restore_fails_one/manifest.toml",
        "daemon_counter_restore_fails_one",
    ),
    (
        "daemon_counter_bad_layout",
        "daemon_counter_bad_layout/manifest.toml",
        "daemon_counter_bad_layout",
    ),
    ("daemon_panicky", "daemon_panicky/manifest.toml", "daemon_panicky"),
    ("daemon_nondet", "daemon_nondet/manifest.toml", "daemon_nondet"),
    (
        "c_counter_daemon",
        "c/counter_daemon.manifest.toml",
        "c_counter_daemon",
    ),
];

/// The library file name of `stem` on this platform.
pub fn library_file_name(stem: &str) -> String {
    format!(
        "{}{stem}{}",
        std::env::consts::DLL_PREFIX,
        std::env::consts::DLL_SUFFIX
    )
}

/// A manifest for bundle `name` naming library `stem`, providing
/// `provides` (contract, function count), with `extra_keys` (top-level TOML
/// lines) and `extra_tables` (`[[dependency]]` tables) appended.
pub fn manifest_text(
    name: &str,
    version: &str,
    stem: &str,
    provides: &[(&str, u32)],
    extra_keys: &str,
    extra_tables: &str,
) -> String {
    let contracts: Vec<String> = provides
        .iter()
        .map(|(contract, _)| format!("{contract:?}"))
        .collect();
    let counts: Vec<String> = provides
        .iter()
        .map(|(contract, count)| format!("{contract:?} = {count}"))
        .collect();
    format!(
        "name = {name:?}\nid = \"{id}\"\nversion = {version:?}\nfile = {{ {os} = {file:?} }}\nprovides = [{contracts}]\n{extra_keys}\n[function_count]\n{counts}\n\n{extra_tables}",
        id = BundleId::new(name),
        os = std::env::consts::OS,
        file = library_file_name(stem),
        contracts = contracts.join(", "),
        counts = counts.join("\n"),
    )
}

fn manifest(spec: &BundleSpec) -> String {
    manifest_text(
        spec.name,
        spec.version,
        spec.library,
        spec.provides,
        spec.extra_keys,
        spec.extra_tables,
    )
}

/// A copy of bundle `dir_name` whose manifest is replaced by `manifest`
/// (in a fresh temporary directory).
pub fn bundle_with_manifest(dir_name: &str, manifest: &str) -> tempfile::TempDir {
    let copy = copy_bundle(dir_name);
    std::fs::write(copy.path().join("manifest.toml"), manifest).unwrap();
    copy
}

fn run(command: &mut Command) {
    let output = command
        .output()
        .unwrap_or_else(|error| panic!("{command:?} could not start: {error}"));
    assert!(
        output.status.success(),
        "{command:?} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Builds every fixture library once per process (and, across processes,
/// once per change: cargo and the byte comparison below make it cheap).
pub fn build_fixtures() {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let root = fixtures_root();
        std::fs::create_dir_all(&root).unwrap();
        let lock = std::fs::File::create(root.join(".lock")).unwrap();
        lock.lock().expect("the fixture lock");
        let target = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("fixture-target");
        run(Command::new(env!("CARGO"))
            .args(["build", "--release", "--quiet", "--manifest-path"])
            .arg(workspace_root().join("fixtures/plugins/Cargo.toml"))
            .arg("--target-dir")
            .arg(&target));
        let built = target.join("release");
        let include = workspace_root().join("crates/plugin-abi/include");
        let compilers = [
            (
                std::env::var("CC").unwrap_or_else(|_| "cc".into()),
                "-std=c11",
                "c/reload_plugin.c",
                "c_reload_plugin",
            ),
            (
                std::env::var("CXX").unwrap_or_else(|_| "c++".into()),
                "-std=c++17",
                "cpp/reload_plugin.cpp",
                "cpp_reload_plugin",
            ),
            (
                std::env::var("CC").unwrap_or_else(|_| "cc".into()),
                "-std=c11",
                "c/counter_daemon.c",
                "c_counter_daemon",
            ),
        ];
        for (compiler, standard, source, stem) in compilers {
            run(Command::new(compiler)
                .args([
                    standard, "-Wall", "-Wextra", "-Werror", "-O2", "-fPIC", "-shared", "-I",
                ])
                .arg(&include)
                .arg(workspace_root().join("fixtures/plugins").join(source))
                .arg("-o")
                .arg(built.join(library_file_name(stem))));
        }
        for spec in BUNDLES {
            write_bundle(
                &root.join("bundles"),
                spec.dir_name,
                spec.library,
                &manifest(spec),
                &built,
            );
        }
        for (dir_name, manifest, stem) in DAEMON_BUNDLES {
            let manifest = std::fs::read_to_string(workspace_root().join("fixtures/plugins").join(manifest))
                .unwrap_or_else(|error| panic!("the committed manifest {manifest}: {error}"));
            write_bundle(&root.join("bundles"), dir_name, stem, &manifest, &built);
        }
        lock.unlock().expect("the fixture lock");
    });
}

/// Writes bundle directory `dir_name` (library `stem` under `manifest`)
/// atomically (a temporary directory renamed into place), unless it already
/// holds the same bytes.
fn write_bundle(bundles: &Path, dir_name: &str, stem: &str, manifest: &str, built: &Path) {
    let file = library_file_name(stem);
    let library = std::fs::read(built.join(&file)).unwrap();
    let dest = bundles.join(dir_name);
    let unchanged = std::fs::read(dest.join(&file)).is_ok_and(|held| held == library)
        && std::fs::read_to_string(dest.join("manifest.toml")).is_ok_and(|held| held == manifest);
    if unchanged {
        return;
    }
    let staging = bundles.join(format!(".staging-{dir_name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::create_dir_all(&staging).unwrap();
    std::fs::write(staging.join(&file), &library).unwrap();
    std::fs::write(staging.join("manifest.toml"), manifest).unwrap();
    let _ = std::fs::remove_dir_all(&dest);
    std::fs::rename(&staging, &dest).unwrap();
}

/// A copy of bundle `dir_name` in a fresh temporary directory, for tests
/// that change a bundle.
pub fn copy_bundle(dir_name: &str) -> tempfile::TempDir {
    let source = bundle_dir(dir_name);
    let copy = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(&source).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), copy.path().join(entry.file_name())).unwrap();
    }
    copy
}

/// A host table for calling a plugin's init without a runtime. It records
/// every interface registered and every line logged through it (per
/// thread), allocates with the global allocator, answers lookups with
/// `NotFound`, and refuses everything else with `Unsupported`.
pub mod recording_host {
    use std::alloc::Layout;
    use std::cell::RefCell;
    use std::ffi::c_void;

    use holdfast_plugin_abi::{
        AbiError, AbiErrorCode, BundleInfo, GuestContractHandle, GuestContractInstance,
        GuestContractInterface, HOLDFAST_ABI_VERSION, HostApi, InstanceHandle, PluginDescriptor, StringView,
    };

    thread_local! {
        static REGISTERED: RefCell<Vec<GuestContractInterface>> = const { RefCell::new(Vec::new()) };
        static LOGGED: RefCell<Vec<(u32, String)>> = const { RefCell::new(Vec::new()) };
    }

    const UNSUPPORTED: AbiError = AbiError::new(AbiErrorCode::Unsupported, "not in the recording host");

    unsafe extern "C" fn register(
        _: *const HostApi,
        _: *const PluginDescriptor,
        interface: *const GuestContractInterface,
        out: *mut GuestContractHandle,
    ) -> AbiError {
        // SAFETY: the plugin passes a live interface; `out` may be null.
        unsafe {
            REGISTERED.with(|registered| registered.borrow_mut().push(*interface));
            if let Some(out) = out.as_mut() {
                *out = GuestContractHandle {
                    index: 0,
                    generation: 1,
                };
            }
        }
        AbiError::ok()
    }
    unsafe extern "C" fn alloc(_: *const HostApi, size: usize, align: usize) -> *mut c_void {
        match Layout::from_size_align(size, align) {
            // SAFETY: the layout has a non-zero size.
            Ok(layout) if size > 0 => unsafe { std::alloc::alloc(layout).cast() },
            _ => std::ptr::null_mut(),
        }
    }
    unsafe extern "C" fn free(_: *const HostApi, ptr: *mut c_void, size: usize, align: usize) {
        if let (false, Ok(layout)) = (ptr.is_null(), Layout::from_size_align(size, align)) {
            // SAFETY: `ptr` came from `alloc` with this size and alignment.
            unsafe { std::alloc::dealloc(ptr.cast(), layout) }
        }
    }
    unsafe extern "C" fn find(_: *const HostApi, _: u64, _: u32, _: *mut GuestContractHandle) -> AbiError {
        AbiError::new(AbiErrorCode::NotFound, "the recording host provides nothing")
    }
    unsafe extern "C" fn find_all(
        _: *const HostApi,
        _: u64,
        _: u32,
        _: *mut GuestContractHandle,
        _: usize,
    ) -> usize {
        0
    }
    unsafe extern "C" fn resolve(_: *const HostApi, _: GuestContractHandle) -> *const GuestContractInterface {
        std::ptr::null()
    }
    unsafe extern "C" fn create(
        _: *const HostApi,
        _: GuestContractHandle,
        _: *const (),
        _: *mut InstanceHandle,
    ) -> AbiError {
        UNSUPPORTED
    }
    unsafe extern "C" fn resolve_instance(
        _: *const HostApi,
        _: InstanceHandle,
        _: *mut GuestContractInstance,
    ) -> AbiError {
        UNSUPPORTED
    }
    unsafe extern "C" fn destroy(_: *const HostApi, _: InstanceHandle) -> AbiError {
        UNSUPPORTED
    }
    unsafe extern "C" fn list(_: *const HostApi, _: *mut BundleInfo, _: usize) -> usize {
        0
    }
    unsafe extern "C" fn load(_: *const HostApi, _: StringView, _: *mut u64) -> AbiError {
        UNSUPPORTED
    }
    unsafe extern "C" fn reload(_: *const HostApi, _: StringView) -> AbiError {
        UNSUPPORTED
    }
    unsafe extern "C" fn unload(_: *const HostApi, _: u64) -> AbiError {
        UNSUPPORTED
    }
    unsafe extern "C" fn last_error(_: *const HostApi) -> StringView {
        StringView::absent()
    }
    unsafe extern "C" fn log(_: *const HostApi, level: u32, message: StringView) {
        // SAFETY: the plugin's view is readable for the call.
        let text = unsafe { message.as_bytes() }.map(|bytes| String::from_utf8_lossy(bytes).into_owned());
        LOGGED.with(|logged| logged.borrow_mut().push((level, text.unwrap_or_default())));
    }
    unsafe extern "C" fn revision(_: *const HostApi) -> u64 {
        0
    }
    unsafe extern "C" fn pin(_: *const HostApi) {}

    /// The table.
    pub fn table() -> HostApi {
        HostApi {
            abi_version: HOLDFAST_ABI_VERSION,
            struct_size: size_of::<HostApi>() as u32,
            context: std::ptr::null_mut(),
            register_guest_contract: register,
            alloc,
            free,
            find_guest_contract: find,
            find_all_guest_contracts: find_all,
            resolve_guest_contract: resolve,
            create_guest_instance: create,
            resolve_guest_instance: resolve_instance,
            destroy_guest_instance: destroy,
            list_bundles: list,
            load_bundle: load,
            reload_bundle: reload,
            unload_bundle: unload,
            get_last_error: last_error,
            log,
            revision_counter: revision,
            pin,
            unpin: pin,
        }
    }

    /// Takes the interfaces registered on this thread so far.
    pub fn take_registered() -> Vec<GuestContractInterface> {
        REGISTERED.with(|registered| std::mem::take(&mut *registered.borrow_mut()))
    }

    /// Takes the `(level, message)` lines logged on this thread so far.
    pub fn take_logged() -> Vec<(u32, String)> {
        LOGGED.with(|logged| std::mem::take(&mut *logged.borrow_mut()))
    }
}

/// The native loader, after building the fixtures (spec §10.1).
#[derive(Debug)]
pub struct TestNativeLoader {
    inner: holdfast_plugin::NativeLoader,
}

impl TestNativeLoader {
    /// Builds the fixtures (once per process), then wraps `NativeLoader::new()`.
    pub fn new() -> Self {
        build_fixtures();
        Self {
            inner: holdfast_plugin::NativeLoader::new(),
        }
    }

    /// As `new`, with shadow copies in `dir`.
    pub fn with_shadow_dir(dir: PathBuf) -> Self {
        build_fixtures();
        Self {
            inner: holdfast_plugin::NativeLoader::with_shadow_dir(Some(dir)),
        }
    }
}

impl Default for TestNativeLoader {
    fn default() -> Self {
        Self::new()
    }
}

impl holdfast_plugin::BundleLoader for TestNativeLoader {
    fn loader_name(&self) -> &'static str {
        "native"
    }

    fn load(
        &self,
        manifest: &holdfast_plugin::ManifestData,
        ctx: &mut holdfast_plugin::LoadContext<'_>,
    ) -> Result<(), holdfast_plugin::LoaderError> {
        self.inner.load(manifest, ctx)
    }
}

/// Retries `reclaim()` for up to 5 s (other test threads of the process may
/// be pinned for a moment) and returns what still waits.
pub fn reclaim_all(runtime: &holdfast_plugin::Runtime) -> usize {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let waiting = runtime.reclaim();
        if waiting == 0 || std::time::Instant::now() > deadline {
            return waiting;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// Reload events as they were delivered: (phase, bundle name).
#[derive(Clone, Debug, Default)]
pub struct EventLog(std::sync::Arc<std::sync::Mutex<Vec<(holdfast_plugin_abi::ReloadPhaseType, String)>>>);

impl EventLog {
    /// A callback for `RuntimeBuilder::on_reload` that appends to this log.
    pub fn callback(
        &self,
    ) -> impl Fn(*mut std::ffi::c_void, holdfast_plugin_abi::ReloadPhase) + Send + Sync + 'static {
        let log = self.0.clone();
        move |_, phase| {
            // SAFETY: the name points to a runtime-owned copy.
            let name = unsafe { phase.bundle_name.to_str() }
                .expect("bundle names are UTF-8")
                .unwrap_or_default()
                .to_owned();
            log.lock().unwrap().push((phase.phase_type, name));
        }
    }

    /// Takes every event so far.
    pub fn take(&self) -> Vec<(holdfast_plugin_abi::ReloadPhaseType, String)> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }

    /// Takes every event so far, phases only.
    pub fn take_phases(&self) -> Vec<holdfast_plugin_abi::ReloadPhaseType> {
        self.take().into_iter().map(|(phase, _)| phase).collect()
    }
}

/// A hot-reload runtime with the fixtures built, recording reload events.
pub fn recording_runtime() -> (std::sync::Arc<holdfast_plugin::Runtime>, EventLog) {
    let events = EventLog::default();
    let runtime = holdfast_plugin::Runtime::builder()
        .config(holdfast_plugin_abi::RuntimeConfig {
            hot_reload_enabled: true,
            ..Default::default()
        })
        .loader(TestNativeLoader::new())
        .on_reload(events.callback())
        .build()
        .expect("a runtime with the default configuration builds");
    (runtime, events)
}

/// Calls function `index` (an `extern "C" fn() -> u32`) of the first
/// provider of `contract_id`, pinned for the call.
pub fn call_u32(runtime: &holdfast_plugin::Runtime, contract_id: u64, index: usize) -> Option<u32> {
    let guard = holdfast_plugin::epoch::pin();
    let handle = runtime.find_guest_contract(contract_id, 0).ok()?;
    let interface = runtime.store().resolve_pinned(handle, &guard).ok()?;
    // SAFETY: resolved under `guard`, which is held across the call.
    let function = *unsafe { interface.native_functions() }?.get(index)?;
    // SAFETY: the fixtures' functions called this way are `fn() -> u32`.
    let function = unsafe { std::mem::transmute::<*const (), extern "C" fn() -> u32>(function) };
    Some(function())
}
