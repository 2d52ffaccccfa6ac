//! The native loader's opening half (spec §6.3 steps 1–3): shadow copies and
//! the ABI checks of §3.7 against the broken fixtures, a C and a C++ plugin
//! whose layouts come from their own compilers, and a library replaced at
//! the same path running its new code.

mod common;
#[macro_use]
#[path = "common/fixtures.rs"]
mod fixtures;

use common::{build_fixtures, bundle_dir, copy_bundle, recording_host};
use fixtures::{RELOAD_V1_DIR, RELOAD_V2_DIR};
use holdfast_plugin::{LoaderError, ManifestData, NativeLoader, NativeModule};
use holdfast_plugin_abi::{ABI_LAYOUT_ENTRIES, AbiErrorCode, BundleInitContext, StringView};

fn open(loader: &NativeLoader, dir: &std::path::Path) -> Result<NativeModule, LoaderError> {
    loader.open(&ManifestData::from_dir(dir).expect("fixture manifests are valid"))
}

/// Runs the module's init against the recording host and calls function 0
/// of the one contract it registers (an `extern "C" fn() -> u32`).
fn answer_of(module: &NativeModule) -> u32 {
    let host = recording_host::table();
    let ctx = BundleInitContext {
        bundle_id: 0,
        bundle_path: StringView::from_static_str("/fixture"),
    };
    // SAFETY: the module is open, and the table and context outlive the call.
    let outcome = unsafe { (module.init_fn())(&host, &ctx) };
    assert!(outcome.is_ok(), "init failed with code {}", outcome.code);
    let registered = recording_host::take_registered();
    assert_eq!(registered.len(), 1);
    // SAFETY: the interface's table lives in the image, which stays open
    // while `module` does.
    let functions = unsafe { registered[0].native_functions() }.expect("a native table");
    // SAFETY: the contract reload.test@1 defines function 0 as
    // `extern "C" fn() -> u32`.
    let answer: extern "C" fn() -> u32 = unsafe { std::mem::transmute(functions[0]) };
    answer()
}

#[test]
fn v1_and_v2_pass_the_checks_and_answer_through_their_tables() {
    build_fixtures();
    let shadow = tempfile::tempdir().unwrap();
    let loader = NativeLoader::with_shadow_dir(Some(shadow.path().to_path_buf()));
    let v1 = open(&loader, std::path::Path::new(RELOAD_V1_DIR)).unwrap();
    assert_eq!(v1.bundle(), "reload-plugin");
    assert!(v1.fini_fn().is_none());
    // SAFETY: the layout points into the open image.
    let layout = unsafe { &*v1.layout() };
    // SAFETY: the checks found 16 entries there.
    let entries = unsafe { std::slice::from_raw_parts(layout.entries, 16) };
    assert_eq!(entries, ABI_LAYOUT_ENTRIES);
    assert_eq!(answer_of(&v1), 100);
    let v2 = open(&loader, std::path::Path::new(RELOAD_V2_DIR)).unwrap();
    assert_eq!(answer_of(&v2), 200);
    // Null arguments reach the plugin's own guard, not a crash.
    // SAFETY: the export_plugin! init checks for null before anything else.
    let refused = unsafe { (v1.init_fn())(std::ptr::null(), std::ptr::null()) };
    assert_eq!(refused.known_code(), Some(AbiErrorCode::InvalidArgument));
}

#[test]
fn broken_fixtures_get_their_typed_errors() {
    let loader = NativeLoader::new();
    let bundle = || "reload-plugin".to_owned();
    assert_eq!(
        open(&loader, &bundle_dir("broken-abi-version")).unwrap_err(),
        LoaderError::AbiVersionMismatch {
            bundle: bundle(),
            expected: 1,
            found: 999
        }
    );
    assert_eq!(
        open(&loader, &bundle_dir("broken-no-layout")).unwrap_err(),
        LoaderError::MissingSymbol {
            bundle: bundle(),
            symbol: "holdfast_abi_layout"
        }
    );
    assert_eq!(
        open(&loader, &bundle_dir("broken-layout")).unwrap_err(),
        LoaderError::LayoutMismatch {
            bundle: bundle(),
            type_name: "GuestContractInterface",
            expected_size: 64,
            expected_align: 8,
            found_size: 56,
            found_align: 8,
        }
    );
    assert_eq!(
        open(&loader, &bundle_dir("broken-null-layout")).unwrap_err(),
        LoaderError::NullLayout { bundle: bundle() }
    );
    assert_eq!(
        open(&loader, &bundle_dir("broken-entry-count")).unwrap_err(),
        LoaderError::LayoutTableMismatch {
            bundle: bundle(),
            expected_entries: 16,
            found_entries: 15
        }
    );
    assert_eq!(
        open(&loader, &bundle_dir("broken-no-init")).unwrap_err(),
        LoaderError::MissingSymbol {
            bundle: bundle(),
            symbol: "holdfast_plugin_init"
        }
    );
}

#[test]
fn c_and_cpp_plugins_pass_the_layout_check_with_their_compilers_layouts() {
    let loader = NativeLoader::new();
    let c = open(&loader, &bundle_dir("c-plugin")).unwrap();
    assert_eq!(answer_of(&c), 300);
    let cpp = open(&loader, &bundle_dir("cpp-plugin")).unwrap();
    assert_eq!(answer_of(&cpp), 400);
}

#[test]
fn shadow_copies_are_private_fresh_per_image_and_deleted_on_close() {
    build_fixtures();
    let shadow = tempfile::tempdir().unwrap();
    let dir = shadow.path().join("shadows");
    let loader = NativeLoader::with_shadow_dir(Some(dir.clone()));
    let first = open(&loader, std::path::Path::new(RELOAD_V1_DIR)).unwrap();
    let second = open(&loader, std::path::Path::new(RELOAD_V1_DIR)).unwrap();
    assert_ne!(first.shadow_path(), second.shadow_path());
    assert_ne!(first.layout(), second.layout(), "two opens are two images");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
            0o700
        );
    }
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 2);
    drop(first);
    drop(second);
    assert_eq!(
        std::fs::read_dir(&dir).unwrap().count(),
        0,
        "shadow files outlived their images"
    );

    // A refused library leaves no shadow file behind either.
    let broken = open(&loader, &bundle_dir("broken-layout"));
    assert!(broken.is_err());
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
}

#[test]
fn a_library_replaced_at_the_same_path_runs_the_new_code() {
    for loader in [NativeLoader::new(), NativeLoader::with_private_shadow_dir()] {
        let bundle = copy_bundle("reload-v1");
        let old = open(&loader, bundle.path()).unwrap();
        assert_eq!(answer_of(&old), 100);
        // Rewrite the library in place (same file, same inode: `fs::copy`
        // truncates and writes), keeping the old image open, as a deploy
        // that overwrites the file does.
        let library = ManifestData::from_dir(bundle.path()).unwrap().library_path();
        std::fs::copy(fixtures::v2_so_path(), &library).unwrap();
        let new = open(&loader, bundle.path()).unwrap();
        assert_eq!(answer_of(&new), 200);
        assert_eq!(
            answer_of(&old),
            100,
            "the old image still answers until it is closed"
        );
    }
}

/// Function 0 of the one contract `module` registers, for calling after the
/// module is gone (only sound for an image the platform never unmaps).
#[cfg(target_os = "linux")]
fn first_function(module: &NativeModule) -> extern "C" fn() -> u32 {
    let host = recording_host::table();
    let ctx = BundleInitContext {
        bundle_id: 0,
        bundle_path: StringView::from_static_str("/fixture"),
    };
    // SAFETY: the module is open, and the table and context outlive the call.
    assert!(unsafe { (module.init_fn())(&host, &ctx) }.is_ok());
    let registered = recording_host::take_registered();
    // SAFETY: the table lives in the open image.
    let functions = unsafe { registered[0].native_functions() }.expect("a native table");
    // SAFETY: reload.test@1 defines function 0 as `extern "C" fn() -> u32`.
    unsafe { std::mem::transmute(functions[0]) }
}

#[cfg(target_os = "linux")]
fn inode_of(module: &NativeModule) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(module.shadow_path().expect("the default loader copies"))
        .unwrap()
        .ino()
}

#[cfg(target_os = "linux")]
#[test]
fn memory_copies_are_reused_after_close_but_never_while_the_platform_keeps_the_image() {
    build_fixtures();
    let loader = NativeLoader::new();

    // A closed image's memory file carries the next image.
    let first = open(&loader, std::path::Path::new(RELOAD_V1_DIR)).unwrap();
    let first_inode = inode_of(&first);
    drop(first);
    let second = open(&loader, std::path::Path::new(RELOAD_V2_DIR)).unwrap();
    assert_eq!(
        inode_of(&second),
        first_inode,
        "the closed image's file was not reused"
    );
    assert_eq!(answer_of(&second), 200);
    drop(second);

    // The C plugin linked "nodelete": closing it leaves it mapped, so its
    // memory file must never be rewritten.
    let bundle = copy_bundle("c-plugin");
    let library = ManifestData::from_dir(bundle.path()).unwrap().library_path();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let compiled = std::process::Command::new(std::env::var("CC").unwrap_or_else(|_| "cc".into()))
        .args(["-std=c11", "-O2", "-fPIC", "-shared", "-Wl,-z,nodelete", "-I"])
        .arg(root.join("crates/plugin-abi/include"))
        .arg(root.join("fixtures/plugins/c/reload_plugin.c"))
        .arg("-o")
        .arg(&library)
        .status()
        .unwrap();
    assert!(compiled.success());
    let kept = open(&loader, bundle.path()).unwrap();
    let kept_inode = inode_of(&kept);
    let answer = first_function(&kept);
    assert_eq!(answer(), 300);
    drop(kept);
    let next = open(&loader, std::path::Path::new(RELOAD_V1_DIR)).unwrap();
    assert_ne!(inode_of(&next), kept_inode, "a file still mapped was rewritten");
    assert_eq!(answer_of(&next), 100);
    // The kept image's code is untouched (a rewritten file would have put
    // the Rust library's bytes under it).
    assert_eq!(answer(), 300);
}

#[test]
fn an_unreadable_library_is_an_open_error() {
    let bundle = copy_bundle("reload-v1");
    let library = ManifestData::from_dir(bundle.path()).unwrap().library_path();
    std::fs::write(&library, b"this is not a shared object").unwrap();
    for loader in [NativeLoader::new(), NativeLoader::with_shadow_dir(None)] {
        assert!(matches!(
            open(&loader, bundle.path()),
            Err(LoaderError::Open { .. })
        ));
    }
}

#[test]
fn an_unusable_shadow_directory_is_a_shadow_copy_error() {
    build_fixtures();
    let blocker = tempfile::NamedTempFile::new().unwrap();
    // A regular file where the shadow directory should be.
    let loader = NativeLoader::with_shadow_dir(Some(blocker.path().to_path_buf()));
    let refused = open(&loader, std::path::Path::new(RELOAD_V1_DIR)).unwrap_err();
    assert!(
        matches!(&refused, LoaderError::ShadowCopy { path, .. } if *path == fixtures::v1_so_path()),
        "{refused:?}"
    );
}

/// The uid files this process creates get (the owner the loader checks).
#[cfg(unix)]
fn our_uid() -> u32 {
    use std::os::unix::fs::MetadataExt;
    tempfile::tempfile().unwrap().metadata().unwrap().uid()
}

/// Loads v1 with a default loader and checks its shadow directory is fresh,
/// private and ours, and not `taken`; returns that directory.
#[cfg(unix)]
fn load_past(taken: &std::path::Path) -> std::path::PathBuf {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let loader = NativeLoader::with_private_shadow_dir();
    let module = open(&loader, std::path::Path::new(RELOAD_V1_DIR)).unwrap();
    assert_eq!(answer_of(&module), 100);
    let shadow = module.shadow_path().unwrap().to_path_buf();
    let dir = shadow.parent().unwrap().to_path_buf();
    assert_ne!(dir, taken);
    assert_eq!(dir.parent(), Some(std::env::temp_dir().as_path()));
    let metadata = std::fs::symlink_metadata(&dir).unwrap();
    assert!(metadata.file_type().is_dir());
    assert_eq!(metadata.permissions().mode() & 0o7777, 0o700);
    assert_eq!(metadata.uid(), our_uid());
    // The directory outlives the loader while an image copied into it is
    // open, and goes with the last of them.
    drop(loader);
    assert!(shadow.exists());
    drop(module);
    assert!(!dir.exists(), "the shadow directory outlived its loader");
    dir
}

#[cfg(unix)]
#[test]
fn a_pre_created_shadow_directory_at_the_old_predictable_path_is_never_used() {
    use std::os::unix::fs::PermissionsExt;
    build_fixtures();
    let old = std::env::temp_dir().join(format!("holdfast-shadow-{}", std::process::id()));
    // The default loader's copies never touch the filesystem at all on Linux.
    #[cfg(target_os = "linux")]
    {
        let module = open(&NativeLoader::new(), std::path::Path::new(RELOAD_V1_DIR)).unwrap();
        assert!(module.shadow_path().unwrap().starts_with("/proc/self/fd"));
        assert_eq!(answer_of(&module), 100);
    }
    let _ = std::fs::remove_file(&old);
    let _ = std::fs::remove_dir_all(&old);

    // An attacker's world-writable directory, with a file planted in it.
    std::fs::create_dir(&old).unwrap();
    std::fs::set_permissions(&old, std::fs::Permissions::from_mode(0o777)).unwrap();
    std::fs::write(old.join("planted.so"), b"attacker").unwrap();
    let first = load_past(&old);
    let names: Vec<_> = std::fs::read_dir(&old)
        .unwrap()
        .map(|entry| entry.unwrap().file_name())
        .collect();
    assert_eq!(
        names,
        ["planted.so"],
        "the loader wrote into the attacker's directory"
    );
    std::fs::remove_dir_all(&old).unwrap();

    // A symlink there, to a directory the attacker controls.
    let elsewhere = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(elsewhere.path(), &old).unwrap();
    let second = load_past(&old);
    assert_eq!(std::fs::read_dir(elsewhere.path()).unwrap().count(), 0);
    std::fs::remove_file(&old).unwrap();

    assert_ne!(first, second, "each loader gets a fresh directory");
}
