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
}

const BUNDLES: &[BundleSpec] = &[
    BundleSpec {
        dir_name: "reload-v1",
        name: "reload-plugin",
        version: "1.0.0",
        library: "reload_plugin_v1",
        provides: &[("reload.test@1", 1)],
    },
    BundleSpec {
        dir_name: "reload-v2",
        name: "reload-plugin",
        version: "2.0.0",
        library: "reload_plugin_v2",
        provides: &[("reload.test@1", 1)],
    },
    BundleSpec {
        dir_name: "broken-abi-version",
        name: "reload-plugin",
        version: "3.0.0",
        library: "broken_abi_version",
        provides: &[],
    },
    BundleSpec {
        dir_name: "broken-no-layout",
        name: "reload-plugin",
        version: "3.0.0",
        library: "broken_no_layout",
        provides: &[],
    },
    BundleSpec {
        dir_name: "broken-layout",
        name: "reload-plugin",
        version: "3.0.0",
        library: "broken_layout",
        provides: &[],
    },
    BundleSpec {
        dir_name: "broken-no-init",
        name: "reload-plugin",
        version: "3.0.0",
        library: "broken_no_init",
        provides: &[],
    },
    BundleSpec {
        dir_name: "broken-null-layout",
        name: "reload-plugin",
        version: "3.0.0",
        library: "broken_null_layout",
        provides: &[],
    },
    BundleSpec {
        dir_name: "broken-entry-count",
        name: "reload-plugin",
        version: "3.0.0",
        library: "broken_entry_count",
        provides: &[],
    },
    BundleSpec {
        dir_name: "c-plugin",
        name: "c-plugin",
        version: "1.0.0",
        library: "c_reload_plugin",
        provides: &[("reload.test@1", 1)],
    },
    BundleSpec {
        dir_name: "cpp-plugin",
        name: "cpp-plugin",
        version: "1.0.0",
        library: "cpp_reload_plugin",
        provides: &[("reload.test@1", 1)],
    },
];

fn library_file_name(stem: &str) -> String {
    format!(
        "{}{stem}{}",
        std::env::consts::DLL_PREFIX,
        std::env::consts::DLL_SUFFIX
    )
}

/// A manifest for `spec` naming its library on this platform.
fn manifest(spec: &BundleSpec) -> String {
    let provides: Vec<String> = spec
        .provides
        .iter()
        .map(|(contract, _)| format!("{contract:?}"))
        .collect();
    let counts: Vec<String> = spec
        .provides
        .iter()
        .map(|(contract, count)| format!("{contract:?} = {count}"))
        .collect();
    format!(
        "name = {name:?}\nid = \"{id}\"\nversion = {version:?}\nfile = {{ {os} = {file:?} }}\nprovides = [{provides}]\n\n[function_count]\n{counts}\n",
        name = spec.name,
        id = BundleId::new(spec.name),
        version = spec.version,
        os = std::env::consts::OS,
        file = library_file_name(spec.library),
        provides = provides.join(", "),
        counts = counts.join("\n"),
    )
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
        let target = root.join("target");
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
            write_bundle(&root.join("bundles"), spec, &built);
        }
        lock.unlock().expect("the fixture lock");
    });
}

/// Writes one bundle directory atomically (a temporary directory renamed
/// into place), unless it already holds the same bytes.
fn write_bundle(bundles: &Path, spec: &BundleSpec, built: &Path) {
    let file = library_file_name(spec.library);
    let library = std::fs::read(built.join(&file)).unwrap();
    let manifest = manifest(spec);
    let dest = bundles.join(spec.dir_name);
    let unchanged = std::fs::read(dest.join(&file)).is_ok_and(|held| held == library)
        && std::fs::read_to_string(dest.join("manifest.toml")).is_ok_and(|held| held == manifest);
    if unchanged {
        return;
    }
    let staging = bundles.join(format!(".staging-{}-{}", spec.dir_name, std::process::id()));
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::create_dir_all(&staging).unwrap();
    std::fs::write(staging.join(&file), &library).unwrap();
    std::fs::write(staging.join("manifest.toml"), &manifest).unwrap();
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
