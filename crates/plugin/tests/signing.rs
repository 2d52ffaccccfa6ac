//! Signed bundles (docs/PLUGINS.md, "Signed bundles"): a bundle signed by a
//! trusted key loads under `SignaturePolicy::Require`; a changed library, a
//! manifest edited after signing, an unknown or revoked key, a truncated or
//! missing signature file are each refused with their own variant before
//! the loader is called — nothing loaded, and on reload (direct or in a
//! cascade) the old version keeps answering at the same revision. `Warn`
//! logs and loads; `Off` never reads the signature. The signature file's
//! decoder is attacked structure-aware by a proptest that re-signs its
//! mutations, so the checks behind the signature are reached too.

mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use common::{TestNativeLoader, call_u32, copy_bundle, manifest_text, recording_runtime};
use holdfast_plugin::signature::{
    BundleSignature, KeyError, MAX_SIGNED_FILES, PublicKey, SIGNATURE_FILE, SecretKey, SignatureError,
    SignedFile, TrustedKeys, sign_bundle, verify_bundle, write_signature,
};
use holdfast_plugin::{
    BundleLoader, LoadContext, LoaderError, ManifestData, NativeLoader, Runtime, RuntimeError,
};
use holdfast_plugin_abi::{GuestContractId, LogLevel, RuntimeConfig, SignaturePolicy};
use proptest::prelude::*;

const RELOAD_TEST: u64 = GuestContractId::new("reload.test", 1).id();

fn signer() -> SecretKey {
    SecretKey::from_seed([7; 32])
}

fn stranger() -> SecretKey {
    SecretKey::from_seed([9; 32])
}

fn trusting_signer() -> TrustedKeys {
    TrustedKeys::new().trust(signer().public_key())
}

/// A copy of fixture bundle `dir_name`, signed by `key`.
fn signed_copy(dir_name: &str, key: &SecretKey) -> tempfile::TempDir {
    let copy = copy_bundle(dir_name);
    let signature = sign_bundle(copy.path(), key).expect("the fixture bundle signs");
    write_signature(copy.path(), &signature).expect("the signature is written");
    copy
}

/// The canonical path of `name` in `dir` (manifests record canonical
/// directories, so the errors name canonical paths).
fn canonical(dir: &Path, name: &str) -> PathBuf {
    dir.canonicalize().expect("the bundle exists").join(name)
}

fn library_of(dir: &Path) -> PathBuf {
    ManifestData::from_dir(dir)
        .expect("valid manifest")
        .library_path()
}

/// Flips one byte in the middle of `path`.
fn flip_a_byte(path: &Path) {
    let mut bytes = std::fs::read(path).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(path, bytes).unwrap();
}

/// Delegates to [`TestNativeLoader`] and counts the loads it was asked for,
/// to show a refused bundle never reaches its loader.
#[derive(Clone)]
struct CountingLoader {
    inner: Arc<TestNativeLoader>,
    loads: Arc<AtomicUsize>,
}

impl CountingLoader {
    fn new() -> Self {
        Self {
            inner: Arc::new(TestNativeLoader::new()),
            loads: Arc::new(AtomicUsize::new(0)),
        }
    }

    fn loads(&self) -> usize {
        self.loads.load(Ordering::SeqCst)
    }
}

impl BundleLoader for CountingLoader {
    fn loader_name(&self) -> &'static str {
        "native"
    }

    fn load(&self, manifest: &ManifestData, ctx: &mut LoadContext<'_>) -> Result<(), LoaderError> {
        self.loads.fetch_add(1, Ordering::SeqCst);
        self.inner.load(manifest, ctx)
    }
}

type Logged = Arc<Mutex<Vec<(LogLevel, String)>>>;

/// A hot-reload runtime with `policy` and `keys`, its counting loader, and
/// the lines it logs at `Warn` or above.
fn runtime_with(policy: SignaturePolicy, keys: TrustedKeys) -> (Arc<Runtime>, CountingLoader, Logged) {
    let loader = CountingLoader::new();
    let logged: Logged = Arc::default();
    let sink = logged.clone();
    let runtime = Runtime::builder()
        .config(RuntimeConfig {
            hot_reload_enabled: true,
            signature_policy: policy,
            ..Default::default()
        })
        .loader(loader.clone())
        .trusted_keys(keys)
        .logger(move |level, message| sink.lock().unwrap().push((level, message.to_owned())))
        .build()
        .expect("the runtime builds");
    (runtime, loader, logged)
}

fn require() -> (Arc<Runtime>, CountingLoader, Logged) {
    runtime_with(SignaturePolicy::Require, trusting_signer())
}

/// Loads `dir` under `Require`, expects a signature refusal, checks that
/// nothing was loaded or opened, and returns the signature error.
fn refused_load(runtime: &Runtime, loader: &CountingLoader, dir: &Path) -> SignatureError {
    let error = runtime.load_bundle(dir).unwrap_err();
    let RuntimeError::Signature { path, error } = error else {
        panic!("expected a signature refusal, got {error:?}");
    };
    assert_eq!(path, dir);
    assert_eq!(loader.loads(), 0, "the loader ran for a refused bundle");
    assert!(runtime.bundles().is_empty());
    assert_eq!(runtime.store().len(), 0);
    assert_eq!(runtime.revision(), 0);
    assert_eq!(call_u32(runtime, RELOAD_TEST, 0), None);
    error
}

// ---- load ----

#[test]
fn a_bundle_signed_by_a_trusted_key_loads_under_require() {
    let (runtime, loader, logged) = require();
    let bundle = signed_copy("reload-v1", &signer());
    runtime.load_bundle(bundle.path()).unwrap();
    assert_eq!(call_u32(&runtime, RELOAD_TEST, 0), Some(100));
    assert_eq!(loader.loads(), 1);
    assert!(logged.lock().unwrap().is_empty(), "{:?}", logged.lock().unwrap());
}

#[test]
fn a_changed_library_byte_is_refused_naming_the_library() {
    let (runtime, loader, _) = require();
    let bundle = signed_copy("reload-v1", &signer());
    let library = library_of(bundle.path());
    flip_a_byte(&library);
    let error = refused_load(&runtime, &loader, bundle.path());
    assert_eq!(
        error,
        SignatureError::FileChanged {
            bundle: "reload-plugin".to_owned(),
            path: library,
        }
    );
}

/// A signed file replaced by something endless is refused at once, not
/// read for ever while the runtime's lifecycle waits.
#[cfg(unix)]
#[test]
fn a_signed_file_replaced_by_a_device_is_refused_as_not_a_regular_file() {
    let (runtime, loader, _) = require();
    // Signed with a second platform's library, which this platform never
    // loads (and so no manifest check looks at) but verification hashes.
    let bundle = copy_bundle("reload-v1");
    let manifest = bundle.path().join("manifest.toml");
    let text = std::fs::read_to_string(&manifest).unwrap();
    std::fs::write(
        &manifest,
        text.replace(
            "file = { linux = \"libreload_plugin_v1.so\" }",
            "file = { linux = \"libreload_plugin_v1.so\", macos = \"libreload_plugin_v1.dylib\" }",
        ),
    )
    .unwrap();
    let other = bundle.path().join("libreload_plugin_v1.dylib");
    std::fs::write(&other, b"another platform's library").unwrap();
    let signature = sign_bundle(bundle.path(), &signer()).unwrap();
    write_signature(bundle.path(), &signature).unwrap();
    std::fs::remove_file(&other).unwrap();
    std::os::unix::fs::symlink("/dev/zero", &other).unwrap();
    let error = refused_load(&runtime, &loader, bundle.path());
    assert_eq!(
        error,
        SignatureError::Io {
            path: other,
            message: "not a regular file".to_owned(),
        }
    );
}

#[test]
fn a_manifest_edited_after_signing_is_refused_even_when_it_means_the_same() {
    let (runtime, loader, _) = require();
    let bundle = signed_copy("reload-v1", &signer());
    let manifest = bundle.path().join("manifest.toml");
    let mut text = std::fs::read_to_string(&manifest).unwrap();
    text.push_str("# a comment changes no field, but it changes the bytes\n");
    std::fs::write(&manifest, text).unwrap();
    let error = refused_load(&runtime, &loader, bundle.path());
    assert_eq!(
        error,
        SignatureError::ManifestChanged {
            bundle: "reload-plugin".to_owned(),
            path: canonical(bundle.path(), "manifest.toml"),
        }
    );
}

#[test]
fn a_bundle_signed_by_an_unknown_key_is_refused_naming_the_key() {
    let (runtime, loader, _) = require();
    let bundle = signed_copy("reload-v1", &stranger());
    let error = refused_load(&runtime, &loader, bundle.path());
    assert_eq!(
        error,
        SignatureError::UnknownKey {
            bundle: "reload-plugin".to_owned(),
            key: stranger().public_key(),
        }
    );
}

#[test]
fn a_revoked_key_is_refused_even_while_it_is_also_trusted() {
    let keys = trusting_signer().revoke(signer().public_key());
    let (runtime, loader, _) = runtime_with(SignaturePolicy::Require, keys);
    let bundle = signed_copy("reload-v1", &signer());
    let error = refused_load(&runtime, &loader, bundle.path());
    assert_eq!(
        error,
        SignatureError::RevokedKey {
            bundle: "reload-plugin".to_owned(),
            key: signer().public_key(),
        }
    );
}

#[test]
fn a_truncated_signature_file_is_refused_naming_the_missing_line() {
    let (runtime, loader, _) = require();
    let bundle = signed_copy("reload-v1", &signer());
    let signature_path = bundle.path().join(SIGNATURE_FILE);
    let bytes = std::fs::read(&signature_path).unwrap();
    let key_line = bytes
        .windows(4)
        .position(|window| window == b"key ")
        .expect("the signature file has a key line");
    std::fs::write(&signature_path, &bytes[..key_line + 10]).unwrap();
    let error = refused_load(&runtime, &loader, bundle.path());
    assert_eq!(
        error,
        SignatureError::Truncated {
            path: canonical(bundle.path(), SIGNATURE_FILE),
            expected: "key",
        }
    );
}

#[test]
fn a_bundle_without_a_signature_is_refused_under_require() {
    let (runtime, loader, _) = require();
    let bundle = copy_bundle("reload-v1");
    let error = refused_load(&runtime, &loader, bundle.path());
    assert_eq!(
        error,
        SignatureError::Missing {
            path: canonical(bundle.path(), SIGNATURE_FILE),
        }
    );
}

#[test]
fn a_signature_for_another_bundle_is_refused() {
    let (runtime, loader, _) = require();
    let bundle = copy_bundle("reload-v1");
    let other = signed_copy("counter-v1", &signer());
    std::fs::copy(
        other.path().join(SIGNATURE_FILE),
        bundle.path().join(SIGNATURE_FILE),
    )
    .unwrap();
    let error = refused_load(&runtime, &loader, bundle.path());
    let signed = sign_bundle(other.path(), &signer()).unwrap().bundle;
    assert_eq!(
        error,
        SignatureError::BundleMismatch {
            signed,
            found: "reload-plugin".to_owned(),
        }
    );
}

#[test]
fn refusals_are_sticky_and_the_same_runtime_then_loads_a_valid_bundle() {
    let (runtime, loader, _) = require();
    let bundle = signed_copy("reload-v1", &signer());
    flip_a_byte(&library_of(bundle.path()));
    let first = refused_load(&runtime, &loader, bundle.path());
    let second = refused_load(&runtime, &loader, bundle.path());
    assert_eq!(first, second);
    let valid = signed_copy("reload-v1", &signer());
    runtime.load_bundle(valid.path()).unwrap();
    assert_eq!(call_u32(&runtime, RELOAD_TEST, 0), Some(100));
}

#[test]
fn plugin_directories_at_build_are_checked_too() {
    let plugins = tempfile::tempdir().unwrap();
    let unsigned = copy_bundle("reload-v1");
    let target = plugins.path().join("reload");
    std::fs::create_dir(&target).unwrap();
    for entry in std::fs::read_dir(unsigned.path()).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), target.join(entry.file_name())).unwrap();
    }
    let build = |keys: TrustedKeys| {
        Runtime::builder()
            .config(RuntimeConfig {
                signature_policy: SignaturePolicy::Require,
                ..Default::default()
            })
            .loader(TestNativeLoader::new())
            .trusted_keys(keys)
            .plugin_dir(plugins.path())
            .build()
    };
    match build(trusting_signer()) {
        Err(RuntimeError::Signature {
            error: SignatureError::Missing { path },
            ..
        }) => assert_eq!(path, canonical(&target, SIGNATURE_FILE)),
        other => panic!("expected a missing signature, got {other:?}"),
    }
    write_signature(&target, &sign_bundle(&target, &signer()).unwrap()).unwrap();
    let runtime = build(trusting_signer()).expect("the signed directory loads");
    assert_eq!(call_u32(&runtime, RELOAD_TEST, 0), Some(100));
}

// ---- reload ----

/// A `Require` runtime answering 100 from a signed `reload-v1`, and the
/// revision after that load.
fn loaded_v1() -> (Arc<Runtime>, CountingLoader, tempfile::TempDir) {
    let (runtime, loader, _) = require();
    let v1 = signed_copy("reload-v1", &signer());
    runtime.load_bundle(v1.path()).unwrap();
    assert_eq!(call_u32(&runtime, RELOAD_TEST, 0), Some(100));
    (runtime, loader, v1)
}

/// Reloads from `dir`, expects a signature refusal with no other effect,
/// and returns the signature error.
fn refused_reload(runtime: &Runtime, loader: &CountingLoader, dir: &Path) -> SignatureError {
    let (revision, loads) = (runtime.revision(), loader.loads());
    let error = runtime.reload_bundle(dir).unwrap_err();
    let RuntimeError::Signature { error, .. } = error else {
        panic!("expected a signature refusal, got {error:?}");
    };
    assert_eq!(
        call_u32(runtime, RELOAD_TEST, 0),
        Some(100),
        "the old version stops answering"
    );
    assert_eq!(runtime.revision(), revision);
    assert_eq!(loader.loads(), loads, "the loader ran for a refused reload");
    error
}

#[test]
fn a_reload_to_a_signed_bundle_succeeds_under_require() {
    let (runtime, loader, _v1) = loaded_v1();
    let v2 = signed_copy("reload-v2", &signer());
    runtime.reload_bundle(v2.path()).unwrap();
    assert_eq!(call_u32(&runtime, RELOAD_TEST, 0), Some(200));
    assert_eq!(loader.loads(), 2);
}

#[test]
fn a_reload_to_a_changed_library_keeps_the_old_version_answering() {
    let (runtime, loader, _v1) = loaded_v1();
    let v2 = signed_copy("reload-v2", &signer());
    let library = library_of(v2.path());
    flip_a_byte(&library);
    let error = refused_reload(&runtime, &loader, v2.path());
    assert_eq!(
        error,
        SignatureError::FileChanged {
            bundle: "reload-plugin".to_owned(),
            path: library,
        }
    );
}

#[test]
fn a_reload_refused_for_each_reason_keeps_the_old_version_answering() {
    let (runtime, loader, _v1) = loaded_v1();
    let unsigned = copy_bundle("reload-v2");
    assert!(matches!(
        refused_reload(&runtime, &loader, unsigned.path()),
        SignatureError::Missing { .. }
    ));
    let foreign = signed_copy("reload-v2", &stranger());
    assert!(matches!(
        refused_reload(&runtime, &loader, foreign.path()),
        SignatureError::UnknownKey { key, .. } if key == stranger().public_key()
    ));
    let edited = signed_copy("reload-v2", &signer());
    let manifest = edited.path().join("manifest.toml");
    let text = std::fs::read_to_string(&manifest).unwrap();
    std::fs::write(
        &manifest,
        text.replace("version = \"2.0.0\"", "version = \"2.0.1\""),
    )
    .unwrap();
    assert!(matches!(
        refused_reload(&runtime, &loader, edited.path()),
        SignatureError::ManifestChanged { .. }
    ));
}

/// A recycled shadow memory file is never made shorter: a signed library
/// copied into the file of a longer one must be checked as itself, not
/// with the longer one's tail.
#[test]
fn a_signed_library_copied_into_a_longer_recycled_file_still_loads() {
    let (runtime, _, _) = require();
    let (rust, c) = (
        signed_copy("reload-v1", &signer()),
        signed_copy("c-plugin", &signer()),
    );
    let size = |dir: &tempfile::TempDir| std::fs::metadata(library_of(dir.path())).unwrap().len();
    assert!(size(&c) < size(&rust), "the C fixture's library is the shorter");
    let rust_id = runtime.load_bundle(rust.path()).unwrap();
    runtime.unload_bundle(rust_id).unwrap();
    // The Rust library's image is unmapped (by the unload, or here) and its
    // memory file pooled; the C library is copied into it next.
    runtime.reclaim();
    runtime.load_bundle(c.path()).unwrap();
    assert_eq!(call_u32(&runtime, RELOAD_TEST, 0), Some(300));
}

/// A loader told to open libraries in place still copies one whose
/// signature is required: the checked bytes are the bytes that run, and a
/// later write to the bundle's file does not reach the running image.
#[test]
fn a_required_signature_makes_a_loader_without_shadow_copies_copy_anyway() {
    let runtime = Runtime::builder()
        .config(RuntimeConfig {
            hot_reload_enabled: true,
            signature_policy: SignaturePolicy::Require,
            ..Default::default()
        })
        .loader(NativeLoader::with_shadow_dir(None))
        .trusted_keys(trusting_signer())
        .build()
        .expect("the runtime builds");
    let v1 = signed_copy("reload-v1", &signer());
    runtime.load_bundle(v1.path()).unwrap();
    assert_eq!(call_u32(&runtime, RELOAD_TEST, 0), Some(100));
    // v2's library written over v1's file, in place (same inode).
    let v2 = std::fs::read(library_of(&common::bundle_dir("reload-v2"))).unwrap();
    std::fs::write(library_of(v1.path()), v2).unwrap();
    assert_eq!(call_u32(&runtime, RELOAD_TEST, 0), Some(100));
}

#[test]
fn revoking_a_key_at_runtime_refuses_the_next_reload() {
    let (runtime, loader, v1) = loaded_v1();
    runtime.set_trusted_keys(trusting_signer().revoke(signer().public_key()));
    assert_eq!(
        refused_reload(&runtime, &loader, v1.path()),
        SignatureError::RevokedKey {
            bundle: "reload-plugin".to_owned(),
            key: signer().public_key(),
        }
    );
    runtime.set_trusted_keys(trusting_signer());
    runtime.reload_bundle(v1.path()).unwrap();
}

#[test]
fn a_refused_reload_fires_no_event() {
    let events = common::EventLog::default();
    let runtime = Runtime::builder()
        .config(RuntimeConfig {
            hot_reload_enabled: true,
            signature_policy: SignaturePolicy::Require,
            ..Default::default()
        })
        .loader(TestNativeLoader::new())
        .trusted_keys(trusting_signer())
        .on_reload(events.callback())
        .build()
        .unwrap();
    let v1 = signed_copy("reload-v1", &signer());
    runtime.load_bundle(v1.path()).unwrap();
    let v2 = signed_copy("reload-v2", &signer());
    flip_a_byte(&library_of(v2.path()));
    assert!(matches!(
        runtime.reload_bundle(v2.path()),
        Err(RuntimeError::Signature {
            error: SignatureError::FileChanged { .. },
            ..
        })
    ));
    assert_eq!(events.take_phases(), []);
}

#[test]
fn a_cascade_reload_of_a_changed_dependent_is_refused_and_the_dependent_keeps_its_image() {
    let (runtime, loader, _) = require();
    let v1 = signed_copy("reload-v1", &signer());
    runtime.load_bundle(v1.path()).unwrap();
    let manifest = manifest_text(
        "dependent",
        "1.0.0",
        "probe_plugin",
        &[("probe.test@1", 6)],
        "needs_reinit_on_dep_reload = true\n",
        "[[dependency]]\ncontract = \"reload.test@1\"\nmin_version = \"1.0\"\n",
    );
    let dependent = common::bundle_with_manifest("probe", &manifest);
    write_signature(
        dependent.path(),
        &sign_bundle(dependent.path(), &signer()).unwrap(),
    )
    .unwrap();
    runtime.load_bundle(dependent.path()).unwrap();
    let dependent_library = library_of(dependent.path());
    flip_a_byte(&dependent_library);
    let loads = loader.loads();
    let v2 = signed_copy("reload-v2", &signer());
    let error = runtime.reload_bundle(v2.path()).unwrap_err();
    let RuntimeError::CascadeFailed { bundle, failures } = error else {
        panic!("expected a failed cascade, got {error:?}");
    };
    assert_eq!(bundle, "reload-plugin");
    assert_eq!(failures.len(), 1);
    let (name, error) = &failures[0];
    assert_eq!(name, "dependent");
    assert!(
        matches!(
            error,
            RuntimeError::Signature { error: SignatureError::FileChanged { path, .. }, .. } if *path == dependent_library
        ),
        "{error:?}"
    );
    assert_eq!(
        loader.loads(),
        loads + 1,
        "only the provider's new image was loaded"
    );
    assert_eq!(call_u32(&runtime, RELOAD_TEST, 0), Some(200));
    assert_eq!(runtime.bundles().len(), 2);
}

/// A loader of another kind (`loader = "other"`) that only counts the calls
/// it gets and adopts nothing: the runtime then fails the load with
/// `NothingAdopted`, which shows the bundle got past the signature check.
struct OtherKindLoader(Arc<AtomicUsize>);

impl BundleLoader for OtherKindLoader {
    fn loader_name(&self) -> &'static str {
        "other"
    }

    fn load(&self, _: &ManifestData, _: &mut LoadContext<'_>) -> Result<(), LoaderError> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

#[test]
fn the_check_covers_the_file_of_any_loader_kind_before_that_loader_runs() {
    let calls = Arc::new(AtomicUsize::new(0));
    let runtime = Runtime::builder()
        .config(RuntimeConfig {
            signature_policy: SignaturePolicy::Require,
            ..Default::default()
        })
        .loader(OtherKindLoader(calls.clone()))
        .trusted_keys(trusting_signer())
        .build()
        .unwrap();
    let bundle = tempfile::tempdir().unwrap();
    let module = bundle.path().join("module.bin");
    std::fs::write(&module, b"bytes only the other loader understands").unwrap();
    let manifest = format!(
        "loader = \"other\"\nname = \"vm-bundle\"\nid = \"{}\"\nversion = \"1.0.0\"\nfile = \"module.bin\"\n",
        holdfast_plugin_abi::BundleId::new("vm-bundle")
    );
    std::fs::write(bundle.path().join("manifest.toml"), manifest).unwrap();
    write_signature(bundle.path(), &sign_bundle(bundle.path(), &signer()).unwrap()).unwrap();

    let error = runtime.load_bundle(bundle.path()).unwrap_err();
    assert!(
        matches!(&error, RuntimeError::Loader(LoaderError::NothingAdopted { bundle }) if bundle == "vm-bundle"),
        "{error:?}"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1);

    std::fs::write(&module, b"bytes only the other loader understands, changed").unwrap();
    let error = runtime.load_bundle(bundle.path()).unwrap_err();
    assert!(
        matches!(
            &error,
            RuntimeError::Signature { error: SignatureError::FileChanged { path, .. }, .. }
                if *path == canonical(bundle.path(), "module.bin")
        ),
        "{error:?}"
    );
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "the other loader ran for a refused bundle"
    );
}

#[cfg(feature = "watch")]
#[test]
fn the_watcher_retries_a_refused_library_once_when_its_signature_arrives() {
    use std::time::{Duration, Instant};
    let logged: Logged = Arc::default();
    let sink = logged.clone();
    let runtime = Runtime::builder()
        .config(RuntimeConfig {
            hot_reload_enabled: true,
            signature_policy: SignaturePolicy::Require,
            ..Default::default()
        })
        .loader(TestNativeLoader::new())
        .trusted_keys(trusting_signer())
        .logger(move |level, message| sink.lock().unwrap().push((level, message.to_owned())))
        .watch(holdfast_plugin::WatchConfig {
            debounce: Duration::from_millis(200),
        })
        .build()
        .unwrap();
    let bundle = signed_copy("reload-v1", &signer());
    runtime.load_bundle(bundle.path()).unwrap();
    let revision = runtime.revision();
    // The new library first: its reload is refused (the signature is v1's).
    let library = library_of(bundle.path());
    let v2_library = library_of(&common::bundle_dir("reload-v2"));
    std::fs::copy(&v2_library, &library).unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(call_u32(&runtime, RELOAD_TEST, 0), Some(100));
    assert_eq!(runtime.revision(), revision);
    let refusals = logged
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, line)| {
            line.contains("watched reload") && line.contains("changed after bundle reload-plugin was signed")
        })
        .count();
    // Refused once (twice if the copy was caught half written), then left
    // alone until a file changes: the refused attempt's own reads raise
    // events, which must not retry it every debounce period.
    assert!(
        (1..=2).contains(&refusals),
        "{refusals} refusals: {:?}",
        logged.lock().unwrap()
    );
    // Then its signature, made elsewhere (signing in place would read the
    // library, which the watcher may see as an event of its own): the
    // watcher reloads.
    let staging = copy_bundle("reload-v1");
    std::fs::copy(&v2_library, library_of(staging.path())).unwrap();
    write_signature(staging.path(), &sign_bundle(staging.path(), &signer()).unwrap()).unwrap();
    std::fs::copy(
        staging.path().join(SIGNATURE_FILE),
        bundle.path().join(SIGNATURE_FILE),
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while call_u32(&runtime, RELOAD_TEST, 0) != Some(200) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(call_u32(&runtime, RELOAD_TEST, 0), Some(200));
    assert_eq!(runtime.revision(), revision + 1);
}

// ---- Warn and Off ----

#[test]
fn warn_logs_each_refusal_and_loads_the_bundle() {
    let (runtime, loader, logged) = runtime_with(SignaturePolicy::Warn, trusting_signer());
    let unsigned = copy_bundle("reload-v1");
    runtime.load_bundle(unsigned.path()).unwrap();
    assert_eq!(call_u32(&runtime, RELOAD_TEST, 0), Some(100));
    let tampered = signed_copy("reload-v2", &signer());
    flip_a_byte(&library_of(tampered.path()));
    runtime.reload_bundle(tampered.path()).unwrap();
    assert_eq!(call_u32(&runtime, RELOAD_TEST, 0), Some(200));
    assert_eq!(loader.loads(), 2);
    let warnings: Vec<String> = logged
        .lock()
        .unwrap()
        .iter()
        .filter(|(level, _)| *level == LogLevel::Warn)
        .map(|(_, line)| line.clone())
        .collect();
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    assert!(warnings[0].contains("has no signature file"), "{}", warnings[0]);
    assert!(
        warnings[1].contains("changed after bundle reload-plugin was signed"),
        "{}",
        warnings[1]
    );
    assert!(
        warnings
            .iter()
            .all(|line| line.ends_with("loading it anyway (signature policy Warn)"))
    );
}

#[test]
fn off_never_reads_the_signature_file() {
    let (runtime, loader, logged) = runtime_with(SignaturePolicy::Off, TrustedKeys::new());
    let bundle = copy_bundle("reload-v1");
    std::fs::write(bundle.path().join(SIGNATURE_FILE), b"not a signature").unwrap();
    runtime.load_bundle(bundle.path()).unwrap();
    assert_eq!(call_u32(&runtime, RELOAD_TEST, 0), Some(100));
    assert_eq!(loader.loads(), 1);
    assert!(logged.lock().unwrap().is_empty());
    let (default_runtime, _) = recording_runtime();
    assert_eq!(default_runtime.config().signature_policy, SignaturePolicy::Off);
}

// ---- the signature file and key files ----

#[test]
fn a_signature_file_round_trips_and_names_every_signed_file() {
    let bundle = signed_copy("reload-v1", &signer());
    let bytes = std::fs::read(bundle.path().join(SIGNATURE_FILE)).unwrap();
    let decoded = BundleSignature::decode(&bytes, Path::new("bundle.sig")).unwrap();
    assert_eq!(decoded.encode(), bytes);
    assert_eq!(decoded.bundle, "reload-plugin");
    assert_eq!(decoded.key, signer().public_key());
    let library = library_of(bundle.path());
    let library_name = library.file_name().unwrap().to_str().unwrap().to_owned();
    assert_eq!(decoded.files.len(), 1);
    assert_eq!(decoded.files[0].path, library_name);
    let text = String::from_utf8(bytes).unwrap();
    assert!(text.starts_with("holdfast-bundle-signature v1\nbundle reload-plugin\nkey "));
}

#[test]
fn every_platform_file_the_manifest_names_is_signed_when_present() {
    let bundle = copy_bundle("reload-v1");
    let library = library_of(bundle.path());
    let library_name = library.file_name().unwrap().to_str().unwrap().to_owned();
    std::fs::write(bundle.path().join("plugin-arm.so"), b"another platform's build").unwrap();
    let manifest = bundle.path().join("manifest.toml");
    let text = std::fs::read_to_string(&manifest).unwrap();
    let os = std::env::consts::OS;
    let table = format!(
        "file = {{ {os} = {{ {arch} = {library_name:?}, riscv64 = \"plugin-arm.so\" }}, windows = \"absent.dll\" }}",
        arch = std::env::consts::ARCH,
    );
    let start = text.find("file = ").unwrap();
    let end = start + text[start..].find('\n').unwrap();
    std::fs::write(&manifest, format!("{}{table}{}", &text[..start], &text[end..])).unwrap();
    let signature = sign_bundle(bundle.path(), &signer()).unwrap();
    let mut paths: Vec<&str> = signature.files.iter().map(|file| file.path.as_str()).collect();
    paths.sort_unstable();
    let mut expected = vec![library_name.as_str(), "plugin-arm.so"];
    expected.sort_unstable();
    assert_eq!(paths, expected, "absent.dll does not exist and is not signed");
    write_signature(bundle.path(), &signature).unwrap();
    let manifest_data = ManifestData::from_dir(bundle.path()).unwrap();
    verify_bundle(&manifest_data, &trusting_signer()).unwrap();
    std::fs::write(
        bundle.path().join("plugin-arm.so"),
        b"another platform's build, changed",
    )
    .unwrap();
    assert_eq!(
        verify_bundle(&manifest_data, &trusting_signer()),
        Err(SignatureError::FileChanged {
            bundle: "reload-plugin".to_owned(),
            path: canonical(bundle.path(), "plugin-arm.so"),
        })
    );
}

#[test]
fn the_decoder_refuses_each_spelling_version_one_does_not_allow() {
    let bundle = signed_copy("reload-v1", &signer());
    let good = String::from_utf8(std::fs::read(bundle.path().join(SIGNATURE_FILE)).unwrap()).unwrap();
    let path = Path::new("bundle.sig");
    let malformed_line = |text: &str| match BundleSignature::decode(text.as_bytes(), path) {
        Err(SignatureError::Malformed { line, .. }) => line,
        other => panic!("expected Malformed for {text:?}, got {other:?}"),
    };
    assert_eq!(malformed_line(&good.replace("v1\n", "v2\n")), 1);
    assert_eq!(malformed_line(&good.replace("bundle ", "bundle  ")), 2);
    assert_eq!(malformed_line(&good.replacen("\nkey ", "\nKEY ", 1)), 3);
    assert_eq!(malformed_line(&good.replace("\n", "\r\n")), 1);
    let key_hex = signer().public_key().to_string();
    assert_eq!(
        malformed_line(&good.replace(&key_hex, &key_hex.to_uppercase())),
        3
    );
    assert_eq!(malformed_line(&format!("{good}\n")), 7);
    // A file line repeated: not strictly ascending.
    let file_line = good.lines().find(|line| line.starts_with("file ")).unwrap();
    assert_eq!(
        malformed_line(&good.replace(file_line, &format!("{file_line}\n{file_line}"))),
        6
    );
    // No file line at all.
    assert_eq!(malformed_line(&good.replace(&format!("{file_line}\n"), "")), 5);
    // A path leaving the bundle.
    let digest = &file_line[5..69];
    assert_eq!(
        malformed_line(&good.replace(file_line, &format!("file {digest} ../escape.so"))),
        5
    );
    assert!(matches!(
        BundleSignature::decode(&vec![b'a'; 200 * 1024], path),
        Err(SignatureError::TooLarge { .. })
    ));
    for cut in 0..good.len() {
        let error = BundleSignature::decode(&good.as_bytes()[..cut], path).unwrap_err();
        assert!(
            matches!(error, SignatureError::Truncated { .. }),
            "cut at {cut}: {error:?}"
        );
    }
}

#[test]
fn key_files_round_trip_and_are_parsed_strictly() {
    let key = signer();
    let path = Path::new("KEY");
    let secret = key.to_file_text();
    let public = key.public_key().to_file_text();
    assert!(secret.starts_with("holdfast-bundle-secret-key v1\n"));
    assert!(public.starts_with("holdfast-bundle-public-key v1\n"));
    assert_eq!(
        SecretKey::from_file_bytes(secret.as_bytes(), path)
            .unwrap()
            .public_key(),
        key.public_key()
    );
    assert_eq!(
        PublicKey::from_file_bytes(public.as_bytes(), path),
        Ok(key.public_key())
    );
    let malformed = |bytes: &[u8]| {
        matches!(
            PublicKey::from_file_bytes(bytes, path),
            Err(KeyError::Malformed { kind: "public", .. })
        )
    };
    assert!(malformed(public.trim_end().as_bytes()));
    assert!(malformed(format!("{public}\n").as_bytes()));
    assert!(malformed(public.to_uppercase().as_bytes()));
    assert!(
        malformed(secret.as_bytes()),
        "a secret key file is not a public one"
    );
    let mut identity = [0_u8; 32];
    identity[0] = 1;
    assert_eq!(
        PublicKey::from_file_bytes(PublicKey::from_bytes(identity).to_file_text().as_bytes(), path),
        Err(KeyError::WeakKey {
            path: path.to_path_buf()
        })
    );
}

#[cfg(unix)]
#[test]
fn generated_key_files_are_private_and_never_overwritten() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("signing");
    let public = SecretKey::generate_files(&path).unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert_eq!(PublicKey::read(&dir.path().join("signing.pub")), Ok(public));
    assert_eq!(SecretKey::read(&path).unwrap().public_key(), public);
    let before = std::fs::read(&path).unwrap();
    assert!(matches!(
        SecretKey::generate_files(&path),
        Err(KeyError::Io {
            kind: std::io::ErrorKind::AlreadyExists,
            ..
        })
    ));
    assert_eq!(std::fs::read(&path).unwrap(), before);
}

// ---- structure-aware attack on the signature file ----

/// A change to a valid signature file.
#[derive(Clone, Debug)]
enum Mutation {
    /// Another bundle name (re-signed).
    Bundle(String),
    /// One bit of the manifest digest (re-signed).
    ManifestDigest(u8, u8),
    /// One bit of the file digest (re-signed).
    FileDigest(u8, u8),
    /// Another signed path (re-signed).
    Path(String),
    /// An extra signed file (re-signed).
    ExtraFile(String, [u8; 32]),
    /// Signed by another key (trusted or not).
    OtherKey([u8; 32], bool),
    /// A field changed without re-signing.
    Unsigned(Box<Self>),
    /// The encoded bytes cut at a position.
    Truncate(usize),
    /// Bytes appended.
    Extend(Vec<u8>),
    /// One encoded byte replaced.
    Byte(usize, u8),
}

fn path_strategy() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z_./-]{1,24}",
        Just("../outside.so".to_owned()),
        Just("/etc/passwd".to_owned()),
        Just(String::new()),
        "\\PC{0,8}",
    ]
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let signed = prop_oneof![
        prop_oneof!["[A-Za-z0-9._-]{1,40}", "\\PC{0,10}"].prop_map(Mutation::Bundle),
        (0..32_u8, 0..8_u8).prop_map(|(byte, bit)| Mutation::ManifestDigest(byte, bit)),
        (0..32_u8, 0..8_u8).prop_map(|(byte, bit)| Mutation::FileDigest(byte, bit)),
        path_strategy().prop_map(Mutation::Path),
        (path_strategy(), any::<[u8; 32]>()).prop_map(|(path, digest)| Mutation::ExtraFile(path, digest)),
        (any::<[u8; 32]>(), any::<bool>()).prop_map(|(seed, trusted)| Mutation::OtherKey(seed, trusted)),
    ];
    prop_oneof![
        4 => signed.clone(),
        2 => signed.prop_map(|inner| Mutation::Unsigned(Box::new(inner))),
        1 => (0..2000_usize).prop_map(Mutation::Truncate),
        1 => proptest::collection::vec(any::<u8>(), 1..64).prop_map(Mutation::Extend),
        2 => (0..2000_usize, any::<u8>()).prop_map(|(at, byte)| Mutation::Byte(at, byte)),
    ]
}

/// Applies a field mutation; returns the keys to trust afterwards.
fn change_field(
    signature: &mut BundleSignature,
    mutation: &Mutation,
    keys: &mut TrustedKeys,
) -> Option<SecretKey> {
    match mutation {
        Mutation::Bundle(name) => signature.bundle = name.clone(),
        Mutation::ManifestDigest(byte, bit) => signature.manifest_digest[usize::from(*byte)] ^= 1 << bit,
        Mutation::FileDigest(byte, bit) => signature.files[0].digest[usize::from(*byte)] ^= 1 << bit,
        Mutation::Path(path) => signature.files[0].path = path.clone(),
        Mutation::ExtraFile(path, digest) => signature.files.push(SignedFile {
            path: path.clone(),
            digest: *digest,
        }),
        Mutation::OtherKey(seed, trusted) => {
            let key = SecretKey::from_seed(*seed);
            if *trusted {
                *keys = keys.clone().trust(key.public_key());
            }
            return Some(key);
        }
        _ => unreachable!("only field mutations change fields"),
    }
    None
}

/// What verification must answer for a re-signed field mutation whose
/// encoding decodes back to the same fields.
fn expected_for_resigned(
    mutation: &Mutation,
    original: &BundleSignature,
    mutated: &BundleSignature,
) -> &'static str {
    if mutated == original {
        return "accept";
    }
    match mutation {
        Mutation::Bundle(_) => "BundleMismatch",
        Mutation::ManifestDigest(..) => "ManifestChanged",
        Mutation::FileDigest(..) => "FileChanged",
        // The loaded library's path replaced: either a path the manifest
        // does not name, or (never here) another named one.
        Mutation::Path(_) | Mutation::ExtraFile(..) => "FileNotNamed",
        Mutation::OtherKey(_, true) => "accept",
        Mutation::OtherKey(_, false) => "UnknownKey",
        _ => unreachable!("only field mutations are re-signed"),
    }
}

fn variant_name(
    result: &Result<holdfast_plugin::signature::SignatureVerified, SignatureError>,
) -> &'static str {
    match result {
        Ok(_) => "accept",
        Err(SignatureError::Truncated { .. }) => "Truncated",
        Err(SignatureError::Malformed { .. }) => "Malformed",
        Err(SignatureError::TooLarge { .. }) => "TooLarge",
        Err(SignatureError::UnknownKey { .. }) => "UnknownKey",
        Err(SignatureError::RevokedKey { .. }) => "RevokedKey",
        Err(SignatureError::BadSignature { .. }) => "BadSignature",
        Err(SignatureError::BundleMismatch { .. }) => "BundleMismatch",
        Err(SignatureError::ManifestChanged { .. }) => "ManifestChanged",
        Err(SignatureError::FileChanged { .. }) => "FileChanged",
        Err(SignatureError::FileMissing { .. }) => "FileMissing",
        Err(SignatureError::FileNotNamed { .. }) => "FileNotNamed",
        Err(SignatureError::FileNotSigned { .. }) => "FileNotSigned",
        Err(other) => panic!("an unexpected refusal: {other:?}"),
    }
}

/// One signed bundle shared by every proptest case (only its signature
/// file is rewritten).
fn shared_bundle() -> &'static (tempfile::TempDir, BundleSignature, ManifestData) {
    static BUNDLE: std::sync::OnceLock<(tempfile::TempDir, BundleSignature, ManifestData)> =
        std::sync::OnceLock::new();
    BUNDLE.get_or_init(|| {
        let bundle = signed_copy("reload-v1", &signer());
        let signature = sign_bundle(bundle.path(), &signer()).unwrap();
        let manifest = ManifestData::from_dir(bundle.path()).unwrap();
        (bundle, signature, manifest)
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn any_bytes_decode_to_a_typed_refusal_or_re_encode_exactly(
        bytes in prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..512),
            // Lines that look like a signature file, in any order.
            proptest::collection::vec(
                prop_oneof![
                    Just("holdfast-bundle-signature v1".to_owned()),
                    "bundle [a-z.-]{0,12}",
                    "key [0-9a-f]{62,66}",
                    "manifest [0-9a-f]{64}",
                    "file [0-9a-f]{64} [a-z./]{0,12}",
                    "signature [0-9a-f]{126,130}",
                ],
                0..10,
            )
            .prop_map(|lines| lines.iter().map(|line| format!("{line}\n")).collect::<String>().into_bytes()),
        ]
    ) {
        holdfast_plugin::signature::fuzzing::decode_signature_file(&bytes);
    }

    #[test]
    fn a_mutated_signature_file_is_refused_with_a_typed_error_or_accepted_exactly(mutation in mutation()) {
        static LOCK: Mutex<()> = Mutex::new(());
        let _one_case_at_a_time = LOCK.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let (bundle, original, manifest) = shared_bundle();
        let mut keys = trusting_signer();
        let mut signature = original.clone();
        let (bytes, expected) = match &mutation {
            Mutation::Truncate(at) => {
                let bytes = original.encode();
                (bytes[..(*at).min(bytes.len())].to_vec(), None)
            }
            Mutation::Extend(extra) => {
                let mut bytes = original.encode();
                bytes.extend_from_slice(extra);
                (bytes, Some("Malformed"))
            }
            Mutation::Byte(at, byte) => {
                let mut bytes = original.encode();
                let at = *at % bytes.len();
                bytes[at] = *byte;
                (bytes, None)
            }
            Mutation::Unsigned(inner) => {
                let _ = change_field(&mut signature, inner, &mut keys);
                if let Mutation::OtherKey(seed, _) = **inner {
                    signature.key = SecretKey::from_seed(seed).public_key();
                }
                (signature.encode(), None)
            }
            field => {
                let key = change_field(&mut signature, field, &mut keys).unwrap_or_else(signer);
                signature.files.sort_by(|left, right| left.path.as_bytes().cmp(right.path.as_bytes()));
                signature.sign(&key);
                (signature.encode(), Some("resigned"))
            }
        };
        std::fs::write(bundle.path().join(SIGNATURE_FILE), &bytes).unwrap();
        let result = verify_bundle(manifest, &keys);
        let outcome = variant_name(&result);
        let decoded = BundleSignature::decode(&bytes, Path::new(SIGNATURE_FILE));
        if outcome == "accept" {
            // Only the original fields (or the same bundle re-signed by a
            // trusted key) are accepted.
            let mut unsigned = decoded.clone().expect("an accepted file decodes");
            unsigned.key = original.key;
            unsigned.signature = original.signature;
            prop_assert_eq!(&unsigned, original);
        }
        match expected {
            Some("Malformed") => prop_assert_eq!(outcome, "Malformed"),
            Some(_) => match decoded {
                Ok(decoded) if decoded == signature => {
                    prop_assert_eq!(outcome, expected_for_resigned(&mutation, original, &signature));
                }
                // The mutated fields have no valid spelling (a bad name or
                // path, too many files): the decoder refuses them.
                _ => prop_assert_eq!(outcome, "Malformed"),
            },
            None => {
                if let Mutation::Unsigned(_) | Mutation::Byte(..) = mutation {
                    if outcome != "accept" {
                        prop_assert!(
                            ["Truncated", "Malformed", "UnknownKey", "BadSignature"].contains(&outcome),
                            "{outcome}"
                        );
                    }
                } else {
                    prop_assert!(["Truncated", "accept"].contains(&outcome), "{outcome}");
                    prop_assert_eq!(outcome == "accept", bytes == original.encode());
                }
            }
        }
        prop_assert!(original.files.len() <= MAX_SIGNED_FILES);
    }
}

// ---- the refusals no other test reaches ----

/// A copy of reload-v1 whose manifest also names a macOS build, present.
fn two_platform_copy() -> tempfile::TempDir {
    let copy = copy_bundle("reload-v1");
    let manifest = std::fs::read_to_string(copy.path().join("manifest.toml")).unwrap();
    let manifest = manifest.replace(
        r#"file = { linux = "libreload_plugin_v1.so" }"#,
        r#"file = { linux = "libreload_plugin_v1.so", macos = "libreload_plugin_v1.dylib" }"#,
    );
    std::fs::write(copy.path().join("manifest.toml"), manifest).unwrap();
    std::fs::write(
        copy.path().join("libreload_plugin_v1.dylib"),
        b"another platform's build",
    )
    .unwrap();
    copy
}

#[test]
fn a_signed_file_deleted_after_signing_is_file_missing() {
    let (runtime, loader, _) = require();
    let bundle = two_platform_copy();
    let signature = sign_bundle(bundle.path(), &signer()).unwrap();
    assert_eq!(signature.files.len(), 2, "both platforms' files are signed");
    write_signature(bundle.path(), &signature).unwrap();
    std::fs::remove_file(bundle.path().join("libreload_plugin_v1.dylib")).unwrap();
    assert_eq!(
        refused_load(&runtime, &loader, bundle.path()),
        SignatureError::FileMissing {
            bundle: "reload-plugin".to_owned(),
            path: canonical(bundle.path(), "libreload_plugin_v1.dylib"),
        }
    );
}

#[test]
fn a_signature_that_leaves_out_the_loaded_file_is_file_not_signed() {
    let (runtime, loader, _) = require();
    let bundle = two_platform_copy();
    let mut signature = sign_bundle(bundle.path(), &signer()).unwrap();
    signature
        .files
        .retain(|file| file.path != "libreload_plugin_v1.so");
    signature.sign(&signer());
    write_signature(bundle.path(), &signature).unwrap();
    assert_eq!(
        refused_load(&runtime, &loader, bundle.path()),
        SignatureError::FileNotSigned {
            bundle: "reload-plugin".to_owned(),
            path: "libreload_plugin_v1.so".to_owned(),
        }
    );
}

#[test]
fn a_manifest_that_cannot_be_read_at_verification_is_an_io_error_not_a_change() {
    let bundle = signed_copy("reload-v1", &signer());
    let manifest = ManifestData::from_dir(bundle.path()).unwrap();
    // Between the runtime's read and the check, the manifest becomes
    // unreadable (a directory: root reads any file whatever its mode).
    let path = bundle.path().join("manifest.toml");
    std::fs::remove_file(&path).unwrap();
    std::fs::create_dir(&path).unwrap();
    let refused = verify_bundle(&manifest, &trusting_signer()).unwrap_err();
    assert!(
        matches!(&refused, SignatureError::Io { path: reported, .. } if reported == &manifest.dir.join("manifest.toml")),
        "{refused:?}"
    );
}
