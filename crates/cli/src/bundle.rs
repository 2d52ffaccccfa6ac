//! `holdfast bundle keygen | sign | verify`: signing plugin bundles with the
//! format and checks of `holdfast_plugin::signature`, so that a bundle
//! verified here is exactly one a runtime under `SignaturePolicy::Require`
//! trusting the same key would load.
//!
//! This module only reads and writes key files and `bundle.sig`; it never
//! opens a bundle's library or runs anything from it. It decides nothing
//! about policy: `verify` answers with the runtime's own check.

use std::path::{Path, PathBuf};

use holdfast_plugin::ManifestData;
use holdfast_plugin::error::ManifestError;
use holdfast_plugin::signature::{
    self, KeyError, PublicKey, SecretKey, SignatureError, SignatureVerified, TrustedKeys,
};

use crate::error::CliError;

/// Creates a new signing key: the secret key at `out` (mode 0600, created
/// exclusively) and the public key at `out.pub`. Returns the public key and
/// its file.
///
/// # Errors
/// [`CliError::KeyFile`] when either file exists (nothing is overwritten),
/// cannot be written, or the OS has no randomness.
pub fn keygen(out: &Path) -> Result<(PublicKey, PathBuf), CliError> {
    let public = SecretKey::generate_files(out).map_err(CliError::KeyFile)?;
    Ok((public, signature::public_key_path(out)))
}

/// Signs the bundle in `dir` with the secret key file `key` and writes
/// `dir/bundle.sig`. Returns what was signed and where it was written.
///
/// # Errors
/// [`CliError::KeyFile`] for a key file that cannot be read or is not a
/// secret key; [`CliError::BundleUnreadable`] for a bundle whose manifest or
/// files cannot be read or are invalid (a bundle no runtime would load is
/// not signed).
pub fn sign(key: &Path, dir: &Path) -> Result<(signature::BundleSignature, PathBuf), CliError> {
    let key = SecretKey::read(key).map_err(CliError::KeyFile)?;
    let unreadable = |error: SignatureError| CliError::BundleUnreadable {
        dir: dir.to_path_buf(),
        reason: error.to_string(),
    };
    let signed = signature::sign_bundle(dir, &key).map_err(unreadable)?;
    let path = signature::write_signature(dir, &signed).map_err(unreadable)?;
    Ok((signed, path))
}

/// Checks the bundle in `dir` against the public key file `key` exactly as
/// a runtime under `SignaturePolicy::Require` trusting only that key would.
///
/// # Errors
/// [`CliError::SignatureRefused`] (exit 1) when the bundle would be refused,
/// with the reason; [`CliError::KeyFile`] or [`CliError::BundleUnreadable`]
/// (exit 2) when the key or the bundle cannot be read at all.
pub fn verify(key: &Path, dir: &Path) -> Result<SignatureVerified, CliError> {
    let key = PublicKey::read(key).map_err(CliError::KeyFile)?;
    let manifest = ManifestData::from_dir(dir).map_err(|error| match error {
        ManifestError::NotFound { .. } | ManifestError::Io { .. } => CliError::BundleUnreadable {
            dir: dir.to_path_buf(),
            reason: error.to_string(),
        },
        other => CliError::SignatureRefused {
            dir: dir.to_path_buf(),
            error: SignatureError::Manifest(other),
        },
    })?;
    signature::verify_bundle(&manifest, &TrustedKeys::new().trust(key)).map_err(|error| match error {
        SignatureError::Io { .. } => CliError::BundleUnreadable {
            dir: dir.to_path_buf(),
            reason: error.to_string(),
        },
        error => CliError::SignatureRefused {
            dir: dir.to_path_buf(),
            error,
        },
    })
}

/// Whether a key error is the caller's to fix by choosing another path
/// (the file exists) rather than a damaged key; used for the message.
pub(crate) fn key_hint(error: &KeyError) -> &'static str {
    match error {
        KeyError::Io {
            kind: std::io::ErrorKind::AlreadyExists,
            ..
        } => " Choose another --out path; existing keys are never overwritten.",
        KeyError::Malformed { .. } => {
            " Key files are written by `holdfast bundle keygen` (KEY holds the secret key, KEY.pub the public one)."
        }
        _ => "",
    }
}
