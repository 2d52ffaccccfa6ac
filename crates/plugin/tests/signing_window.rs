//! The window between the runtime's signature check and the loader's read
//! (docs/PLUGINS.md, "Signed bundles"): under `SignaturePolicy::Require` the
//! loader checks the bytes it is about to open against the signed digest,
//! so a library replaced after the check is refused with
//! `ChangedAfterVerification` and never opened, and the running set is
//! unchanged. The replacement is made deterministic by a loader that swaps
//! the file in exactly that window.

mod common;
#[macro_use]
#[path = "common/fixtures.rs"]
mod fixtures;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::{TestNativeLoader, call_u32, copy_bundle};
use holdfast_plugin::signature::{SecretKey, TrustedKeys, sign_bundle, write_signature};
use holdfast_plugin::{BundleLoader, LoadContext, LoaderError, ManifestData, Runtime, RuntimeError};
use holdfast_plugin_abi::{GuestContractId, RuntimeConfig, SignaturePolicy};

const RELOAD_TEST: u64 = GuestContractId::new("reload.test", 1).id();

/// Overwrites the bundle's library with v2 (unsigned) after the runtime
/// verified the signature and before the native loader copies it, on every
/// load after the first `honest_loads`.
struct SwapsAfterVerification {
    inner: TestNativeLoader,
    honest_loads: AtomicUsize,
}

impl SwapsAfterVerification {
    fn after(honest_loads: usize) -> Self {
        Self {
            inner: TestNativeLoader::new(),
            honest_loads: AtomicUsize::new(honest_loads),
        }
    }
}

impl BundleLoader for SwapsAfterVerification {
    fn loader_name(&self) -> &'static str {
        self.inner.loader_name()
    }

    fn load(&self, manifest: &ManifestData, ctx: &mut LoadContext<'_>) -> Result<(), LoaderError> {
        let honest = self
            .honest_loads
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |left| left.checked_sub(1))
            .is_ok();
        if !honest {
            std::fs::copy(fixtures::v2_so_path(), manifest.library_path()).unwrap();
        }
        self.inner.load(manifest, ctx)
    }
}

fn runtime(loader: impl BundleLoader, key: &SecretKey) -> Arc<Runtime> {
    Runtime::builder()
        .config(RuntimeConfig {
            hot_reload_enabled: true,
            signature_policy: SignaturePolicy::Require,
            ..Default::default()
        })
        .loader(loader)
        .trusted_keys(TrustedKeys::new().trust(key.public_key()))
        .build()
        .expect("the runtime builds")
}

fn signed_copy(dir_name: &str, key: &SecretKey) -> tempfile::TempDir {
    let copy = copy_bundle(dir_name);
    let signature = sign_bundle(copy.path(), key).expect("the fixture bundle signs");
    write_signature(copy.path(), &signature).expect("the signature is written");
    copy
}

fn library(dir: &Path) -> std::path::PathBuf {
    ManifestData::from_dir(dir).unwrap().library_path()
}

#[test]
fn a_library_replaced_after_verification_is_never_opened() {
    let key = SecretKey::from_seed([7; 32]);
    let runtime = runtime(SwapsAfterVerification::after(0), &key);
    let bundle = signed_copy("reload-v1", &key);
    let error = runtime.load_bundle(bundle.path()).unwrap_err();
    let RuntimeError::Loader(error) = error else {
        panic!("expected a loader error, got {error:?}");
    };
    assert_eq!(
        error,
        LoaderError::ChangedAfterVerification {
            path: library(bundle.path())
        }
    );
    assert!(runtime.bundles().is_empty());
    assert_eq!(runtime.revision(), 0);
    assert_eq!(call_u32(&runtime, RELOAD_TEST, 0), None);
}

#[test]
fn a_reload_whose_library_is_replaced_after_verification_rolls_back() {
    let key = SecretKey::from_seed([7; 32]);
    let runtime = runtime(SwapsAfterVerification::after(1), &key);
    let bundle = signed_copy("reload-v1", &key);
    runtime.load_bundle(bundle.path()).unwrap();
    assert_eq!(call_u32(&runtime, RELOAD_TEST, 0), Some(100));
    let revision = runtime.revision();

    // Still validly signed as v1 when the runtime checks it; v2's code is
    // under it by the time the loader reads it.
    let refused = runtime.reload_bundle(bundle.path()).unwrap_err();
    let RuntimeError::ReloadRolledBack { bundle: name, source } = refused else {
        panic!("expected a rolled-back reload, got {refused:?}");
    };
    assert_eq!(name, "reload-plugin");
    let RuntimeError::Loader(error) = *source else {
        panic!("expected a loader error, got {source:?}");
    };
    assert_eq!(
        error,
        LoaderError::ChangedAfterVerification {
            path: library(bundle.path())
        }
    );
    assert_eq!(runtime.revision(), revision);
    assert_eq!(call_u32(&runtime, RELOAD_TEST, 0), Some(100));
}
