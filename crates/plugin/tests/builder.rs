//! Building a runtime (spec §5.2, §6.9): plugin directories loaded
//! providers first, a dependency cycle refused, duplicate loaders refused,
//! and the public types' thread-safety.

mod common;

use std::path::Path;

use common::{TestNativeLoader, bundle_dir, call_u32, manifest_text};
use holdfast_plugin::{NativeLoader, Runtime, RuntimeError, RuntimeStore};
use holdfast_plugin_abi::{BundleId, GuestContractId};

const fn assert_send_sync<T: Send + Sync>() {}
const _: () = {
    assert_send_sync::<Runtime>();
    assert_send_sync::<RuntimeStore>();
    assert_send_sync::<NativeLoader>();
    assert_send_sync::<RuntimeError>();
};

/// Copies bundle `source` into `plugins/<dir_name>` with `manifest`.
fn install(plugins: &Path, dir_name: &str, source: &str, manifest: &str) {
    let dest = plugins.join(dir_name);
    std::fs::create_dir_all(&dest).unwrap();
    for entry in std::fs::read_dir(bundle_dir(source)).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dest.join(entry.file_name())).unwrap();
    }
    std::fs::write(dest.join("manifest.toml"), manifest).unwrap();
}

fn dependent_manifest(dependency_optional: bool) -> String {
    manifest_text(
        "dependent",
        "1.0.0",
        "probe_plugin",
        &[("probe.test@1", 6)],
        "",
        &format!("[[dependency]]\ncontract = \"reload.test@1\"\noptional = {dependency_optional}\n"),
    )
}

#[test]
fn plugin_directories_load_providers_first() {
    let plugins = tempfile::tempdir().unwrap();
    // "a-dependent" sorts first by name but needs the provider.
    install(plugins.path(), "a-dependent", "probe", &dependent_manifest(false));
    install(
        plugins.path(),
        "z-provider",
        "reload-v1",
        &std::fs::read_to_string(bundle_dir("reload-v1").join("manifest.toml")).unwrap(),
    );
    std::fs::create_dir(plugins.path().join("not-a-bundle")).unwrap();
    let runtime = Runtime::builder()
        .loader(TestNativeLoader::new())
        .plugin_dir(plugins.path())
        .build()
        .unwrap();
    let mut names: Vec<String> = runtime.bundles().into_iter().map(|bundle| bundle.name).collect();
    names.sort();
    assert_eq!(names, ["dependent", "reload-plugin"]);
    assert_eq!(runtime.revision(), 2);
    assert_eq!(
        call_u32(&runtime, GuestContractId::new("reload.test", 1).id(), 0),
        Some(100)
    );
    // The dependent saw its provider during init (declared lookup: found).
    assert_eq!(
        call_u32(&runtime, GuestContractId::new("probe.test", 1).id(), 5),
        Some(0)
    );
}

#[test]
fn a_dependency_cycle_in_plugin_directories_is_refused() {
    let plugins = tempfile::tempdir().unwrap();
    install(plugins.path(), "dependent", "probe", &dependent_manifest(false));
    let provider = manifest_text(
        "reload-plugin",
        "1.0.0",
        "reload_plugin_v1",
        &[("reload.test@1", 1)],
        "bundle_dependencies = [\"dependent\"]\n",
        "",
    );
    install(plugins.path(), "provider", "reload-v1", &provider);
    let outcome = Runtime::builder()
        .loader(TestNativeLoader::new())
        .plugin_dir(plugins.path())
        .build();
    match outcome {
        Err(RuntimeError::DependencyCycle { bundles }) => assert_eq!(bundles, ["dependent", "reload-plugin"]),
        other => panic!("{other:?}"),
    }
}

#[test]
fn two_loaders_with_one_name_are_refused() {
    let outcome = Runtime::builder()
        .loader(TestNativeLoader::new())
        .loader(NativeLoader::new())
        .build();
    assert!(matches!(outcome, Err(RuntimeError::DuplicateLoader { loader }) if loader == "native"));
}

#[test]
fn bundle_summaries_describe_what_is_loaded() {
    let runtime = Runtime::builder()
        .loader(TestNativeLoader::new())
        .build()
        .unwrap();
    let dir = bundle_dir("reload-v1");
    let id = runtime
        .load_bundle(&dir.join(common::library_file_name("reload_plugin_v1")))
        .unwrap();
    assert_eq!(id, BundleId::new("reload-plugin"));
    let summary = runtime.bundles().pop().unwrap();
    assert_eq!(summary.name, "reload-plugin");
    assert_eq!(summary.version.to_string(), "1.0.0");
    assert_eq!(summary.dir, dir.canonicalize().unwrap());
    assert_eq!(summary.contracts.len(), 1);
    assert_eq!(summary.contracts[0].0, "reload.test@1");
    assert_eq!(summary.loaded_at_revision, 1);
    assert!(matches!(
        runtime.load_bundle(&dir),
        Err(RuntimeError::BundleAlreadyLoaded { bundle }) if bundle == "reload-plugin"
    ));
    let copy = common::copy_bundle("reload-v2");
    let stranger = copy.path().join("stranger.so");
    std::fs::write(&stranger, b"not the manifest's library").unwrap();
    assert!(matches!(
        runtime.load_bundle(&stranger),
        Err(RuntimeError::LibraryNotInManifest { path, .. }) if path == stranger
    ));
}
