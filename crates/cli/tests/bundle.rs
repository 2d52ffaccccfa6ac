//! `holdfast bundle keygen | sign | verify`, run as the real binary: keygen
//! writes a private secret key and never overwrites one; a signed bundle
//! verifies (exit 0); a changed library, an edited manifest, a missing
//! signature or another key is refused (exit 1) with the reason on stderr;
//! keys and bundles that cannot be read exit 2. No run changes the bundle's
//! library (the library is the "image" the shared runner hashes).

mod common;

use std::path::{Path, PathBuf};

use common::{assert_exit, holdfast, stderr, stdout};
use holdfast_plugin::abi::BundleId;

/// A bundle `demo` whose library is plain bytes: signing and verifying read
/// files and never open a library, so no real plugin is needed.
fn demo_bundle() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let library = dir.path().join("libdemo.so");
    std::fs::write(&library, b"\x7fELF stands in for a plugin library").unwrap();
    let manifest = format!(
        "name = \"demo\"\nid = \"{}\"\nversion = \"1.0.0\"\nfile = \"libdemo.so\"\n",
        BundleId::new("demo")
    );
    std::fs::write(dir.path().join("manifest.toml"), manifest).unwrap();
    (dir, library)
}

fn keygen(dir: &Path, name: &str) -> PathBuf {
    let key = dir.join(name);
    // The shared runner checks that a file it names is unchanged; keygen
    // writes `key`, so it watches a path nothing writes.
    let output = holdfast(
        &["bundle", "keygen", "--out", path_str(&key)],
        &dir.join("untouched"),
    );
    assert_exit(&output, 0);
    key
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("temporary paths are UTF-8")
}

fn sign(key: &Path, bundle: &Path, library: &Path) {
    let output = holdfast(
        &["bundle", "sign", "--key", path_str(key), path_str(bundle)],
        library,
    );
    assert_exit(&output, 0);
    assert!(
        stdout(&output).starts_with("signed bundle demo with key "),
        "{}",
        stdout(&output)
    );
}

fn verify(public: &Path, bundle: &Path, library: &Path) -> std::process::Output {
    holdfast(
        &["bundle", "verify", "--key", path_str(public), path_str(bundle)],
        library,
    )
}

#[cfg(unix)]
#[test]
fn keygen_writes_a_secret_key_only_its_owner_can_read_and_never_overwrites_it() {
    use std::os::unix::fs::PermissionsExt;
    let keys = tempfile::tempdir().unwrap();
    let key = keygen(keys.path(), "release.key");
    let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let secret = std::fs::read_to_string(&key).unwrap();
    let public = std::fs::read_to_string(keys.path().join("release.key.pub")).unwrap();
    assert!(secret.starts_with("holdfast-bundle-secret-key v1\n"));
    assert!(public.starts_with("holdfast-bundle-public-key v1\n"));
    assert_eq!(secret.len(), "holdfast-bundle-secret-key v1\n".len() + 65);

    let again = holdfast(&["bundle", "keygen", "--out", path_str(&key)], &key);
    assert_exit(&again, 2);
    assert!(stderr(&again).contains("never overwritten"), "{}", stderr(&again));
    assert_eq!(std::fs::read_to_string(&key).unwrap(), secret);
}

#[test]
fn a_signed_bundle_verifies_with_exit_0() {
    let keys = tempfile::tempdir().unwrap();
    let key = keygen(keys.path(), "release.key");
    let (bundle, library) = demo_bundle();
    sign(&key, bundle.path(), &library);
    assert!(bundle.path().join("bundle.sig").is_file());
    let output = verify(&keys.path().join("release.key.pub"), bundle.path(), &library);
    assert_exit(&output, 0);
    assert!(
        stdout(&output).starts_with("bundle demo is valid: signed by "),
        "{}",
        stdout(&output)
    );
}

#[test]
fn a_changed_library_is_refused_with_exit_1_naming_the_file() {
    let keys = tempfile::tempdir().unwrap();
    let key = keygen(keys.path(), "release.key");
    let (bundle, library) = demo_bundle();
    sign(&key, bundle.path(), &library);
    std::fs::write(&library, b"\x7fELF stands in for a plugin library, patched").unwrap();
    let output = verify(&keys.path().join("release.key.pub"), bundle.path(), &library);
    assert_exit(&output, 1);
    let message = stderr(&output);
    assert!(message.starts_with("holdfast: bundle "), "{message}");
    assert!(
        message.contains("libdemo.so changed after bundle demo was signed"),
        "{message}"
    );
}

#[test]
fn an_edited_manifest_is_refused_with_exit_1() {
    let keys = tempfile::tempdir().unwrap();
    let key = keygen(keys.path(), "release.key");
    let (bundle, library) = demo_bundle();
    sign(&key, bundle.path(), &library);
    let manifest = bundle.path().join("manifest.toml");
    let text = std::fs::read_to_string(&manifest).unwrap();
    std::fs::write(&manifest, text.replace("1.0.0", "1.0.1")).unwrap();
    let output = verify(&keys.path().join("release.key.pub"), bundle.path(), &library);
    assert_exit(&output, 1);
    assert!(
        stderr(&output).contains("manifest.toml was edited after bundle demo was signed"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn another_key_is_refused_with_exit_1_naming_the_signer() {
    let keys = tempfile::tempdir().unwrap();
    let key = keygen(keys.path(), "release.key");
    let other = keygen(keys.path(), "other.key");
    let (bundle, library) = demo_bundle();
    sign(&key, bundle.path(), &library);
    let signer = std::fs::read_to_string(keys.path().join("release.key.pub")).unwrap();
    let signer_hex = signer.lines().nth(1).unwrap();
    let output = verify(
        &PathBuf::from(format!("{}.pub", other.display())),
        bundle.path(),
        &library,
    );
    assert_exit(&output, 1);
    assert!(
        stderr(&output).contains(&format!("is signed by key {signer_hex}, which is not trusted")),
        "{}",
        stderr(&output)
    );
}

#[test]
fn an_unsigned_bundle_is_refused_with_exit_1() {
    let keys = tempfile::tempdir().unwrap();
    keygen(keys.path(), "release.key");
    let (bundle, library) = demo_bundle();
    let output = verify(&keys.path().join("release.key.pub"), bundle.path(), &library);
    assert_exit(&output, 1);
    assert!(
        stderr(&output).contains("has no signature file"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn unreadable_keys_and_bundles_exit_2() {
    let keys = tempfile::tempdir().unwrap();
    let key = keygen(keys.path(), "release.key");
    let (bundle, library) = demo_bundle();
    sign(&key, bundle.path(), &library);
    // The secret key where the public one belongs.
    let output = verify(&key, bundle.path(), &library);
    assert_exit(&output, 2);
    assert!(
        stderr(&output).contains("is not a public key file"),
        "{}",
        stderr(&output)
    );
    // No bundle there.
    let missing = keys.path().join("no-such-bundle");
    let output = verify(&keys.path().join("release.key.pub"), &missing, &library);
    assert_exit(&output, 2);
    assert!(
        stderr(&output).contains("cannot use the bundle"),
        "{}",
        stderr(&output)
    );
    // No key there.
    let output = holdfast(
        &[
            "bundle",
            "sign",
            "--key",
            path_str(&keys.path().join("absent.key")),
            path_str(bundle.path()),
        ],
        &library,
    );
    assert_exit(&output, 2);
}
