//! Signed bundles: the signature file a bundle carries (`bundle.sig`, beside
//! `manifest.toml`), the key files of its signer, and the check that a
//! bundle on disk is, byte for byte, the bundle a trusted key signed.
//!
//! A signature is an Ed25519 signature ([RFC 8032], checked with
//! `verify_strict`) over a domain-separated message built from the decoded
//! fields: the bundle's name, the signer's public key, the SHA-256 digest of
//! `manifest.toml`'s exact bytes, and the path and SHA-256 digest of every
//! file the manifest's `file` key names that existed when the bundle was
//! signed (every platform's entry, sorted by path). Whatever loader opens
//! the bundle, the files it names are the ones signed, so this module knows
//! nothing about native libraries or WASM modules.
//!
//! This module reads files and computes digests; it never opens a library,
//! compiles a module or runs anything from the bundle, and it never decides
//! policy: [`verify_bundle`] answers "signed by a trusted key and unchanged"
//! or a typed [`SignatureError`], and the runtime decides what an error
//! means under its [`SignaturePolicy`](holdfast_plugin_abi::SignaturePolicy).
//! Every decoder here is bounded ([`MAX_SIGNATURE_FILE_BYTES`],
//! [`MAX_SIGNED_FILES`], [`MAX_SIGNED_PATH_BYTES`]), strict (one spelling
//! of every value: lowercase hex, single spaces, `\n` line ends, sorted
//! paths) and panic-free on any input.
//!
//! # The signature file, version 1
//!
//! ```text
//! holdfast-bundle-signature v1\n          <- SIGNATURE_HEADER
//! bundle <name>\n                          the manifest's `name`
//! key <64 hex digits>\n                    the signer's Ed25519 public key
//! manifest <64 hex digits>\n               SHA-256 of manifest.toml's bytes
//! file <64 hex digits> <path>\n            one per signed file, 1..=64,
//! ...                                      paths strictly ascending (bytes)
//! signature <128 hex digits>\n             Ed25519 over signed_message()
//! ```
//!
//! The signed message is not the text above but a binary encoding of the
//! same fields, so that no two different field values sign the same bytes:
//!
//! ```text
//! SIGNED_MESSAGE_DOMAIN                    "holdfast bundle signature v1\0"
//! u8 name length, name bytes
//! 32 bytes public key
//! 32 bytes manifest digest
//! u16 LE file count
//! per file: u16 LE path length, path bytes, 32 bytes digest
//! ```
//!
//! # What it protects and what it does not
//!
//! It refuses a bundle whose manifest or any signed file changed after
//! signing, a bundle signed by a key that is not trusted or is revoked, and
//! a bundle whose signature file is missing, truncated or malformed. It does
//! not make a signed plugin safe (native code runs with the host's rights),
//! does not survive a stolen signing key (revoke it), does not stop a
//! rollback to an older bundle that the same key signed, and verifies the
//! files before the loader reads them again (the window is described in
//! docs/PLUGINS.md, "Signed bundles").
//!
//! [RFC 8032]: https://www.rfc-editor.org/rfc/rfc8032

use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::error::ManifestError;
use crate::manifest::{MANIFEST_FILE, ManifestData};

/// The signature file's name inside a bundle directory.
pub const SIGNATURE_FILE: &str = "bundle.sig";
/// The first line of a version-1 signature file (without its `\n`).
pub const SIGNATURE_HEADER: &str = "holdfast-bundle-signature v1";
/// The first line of a secret key file.
pub const SECRET_KEY_HEADER: &str = "holdfast-bundle-secret-key v1";
/// The first line of a public key file.
pub const PUBLIC_KEY_HEADER: &str = "holdfast-bundle-public-key v1";
/// The prefix of every signed message; no other holdfast signature starts
/// with it, so a bundle signature cannot be replayed as anything else.
pub const SIGNED_MESSAGE_DOMAIN: &[u8] = b"holdfast bundle signature v1\0";
/// The largest signature file read (64 files at the longest path fit).
pub const MAX_SIGNATURE_FILE_BYTES: u64 = 128 * 1024;
/// The most files one signature covers.
pub const MAX_SIGNED_FILES: usize = 64;
/// The longest signed path, in bytes.
pub const MAX_SIGNED_PATH_BYTES: usize = 1024;
/// The longest bundle name (spec §4.3 rule 3).
const MAX_NAME_BYTES: usize = 128;
/// The largest manifest read for a digest; manifests are a few hundred bytes.
const MAX_MANIFEST_BYTES: u64 = 1024 * 1024;
/// The largest key file read.
const MAX_KEY_FILE_BYTES: u64 = 4096;

/// A SHA-256 digest.
pub type Sha256Digest = [u8; 32];

/// Why a bundle's signature was refused, or a bundle could not be signed.
/// Every variant names what is wrong; none is ever produced by a valid,
/// unchanged bundle signed by a trusted, unrevoked key.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// The bundle has no signature file (refused only under `Require`).
    #[error("the bundle has no signature file {}", path.display())]
    Missing {
        /// Where it was looked for.
        path: PathBuf,
    },
    /// The signature file ends before its `signature` line.
    #[error("the signature file {} is truncated: it ends before its {expected} line", path.display())]
    Truncated {
        /// The signature file.
        path: PathBuf,
        /// The line that is missing (`bundle`, `key`, …, `signature`).
        expected: &'static str,
    },
    /// A line of the signature file is not what version 1 allows.
    #[error("the signature file {} is malformed at line {line}: {reason}", path.display())]
    Malformed {
        /// The signature file.
        path: PathBuf,
        /// The line, from 1.
        line: usize,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The signature file is larger than [`MAX_SIGNATURE_FILE_BYTES`].
    #[error("the signature file {} is larger than {max} bytes", path.display())]
    TooLarge {
        /// The signature file.
        path: PathBuf,
        /// The bound.
        max: u64,
    },
    /// The signing key is neither trusted nor revoked.
    #[error("bundle {bundle} is signed by key {key}, which is not trusted")]
    UnknownKey {
        /// The bundle's name.
        bundle: String,
        /// The signer's key.
        key: PublicKey,
    },
    /// The signing key is revoked (whether or not it is also trusted).
    #[error("bundle {bundle} is signed by key {key}, which is revoked")]
    RevokedKey {
        /// The bundle's name.
        bundle: String,
        /// The signer's key.
        key: PublicKey,
    },
    /// The signature does not verify under the key the file names: the file
    /// was edited, or the key is not a valid Ed25519 point.
    #[error("the signature of bundle {bundle} does not verify under key {key}")]
    BadSignature {
        /// The bundle's name as the signature file gives it.
        bundle: String,
        /// The key the file names.
        key: PublicKey,
    },
    /// The signature is for a bundle of another name.
    #[error("the signature is for bundle {signed:?}, but the manifest names {found:?}")]
    BundleMismatch {
        /// The name that was signed.
        signed: String,
        /// The manifest's name.
        found: String,
    },
    /// `manifest.toml` changed after it was signed.
    #[error("{} was edited after bundle {bundle} was signed", path.display())]
    ManifestChanged {
        /// The bundle's name.
        bundle: String,
        /// The manifest.
        path: PathBuf,
    },
    /// A signed file's bytes changed after signing.
    #[error("{} changed after bundle {bundle} was signed (its digest differs)", path.display())]
    FileChanged {
        /// The bundle's name.
        bundle: String,
        /// The file.
        path: PathBuf,
    },
    /// A signed file is gone.
    #[error("{}, signed as part of bundle {bundle}, is missing", path.display())]
    FileMissing {
        /// The bundle's name.
        bundle: String,
        /// The file.
        path: PathBuf,
    },
    /// The signature covers a path the manifest's `file` key does not name.
    #[error("the signature of bundle {bundle} covers {path:?}, which the manifest does not name")]
    FileNotNamed {
        /// The bundle's name.
        bundle: String,
        /// The signed path.
        path: String,
    },
    /// The file this platform loads is not covered by the signature.
    #[error("bundle {bundle} loads {path:?}, which its signature does not cover")]
    FileNotSigned {
        /// The bundle's name.
        bundle: String,
        /// The manifest's path for this platform.
        path: String,
    },
    /// The manifest itself is invalid (signing validates it first).
    #[error("the bundle's manifest is invalid: {0}")]
    Manifest(#[from] ManifestError),
    /// A file could not be read (other than not existing).
    #[error("cannot read {}: {message}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS's message.
        message: String,
    },
}

/// Why a key file was refused or could not be made.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The key file is not the two lines its format allows.
    #[error("{} is not a {kind} key file: {reason}", path.display())]
    Malformed {
        /// The key file (empty when decoded from memory).
        path: PathBuf,
        /// `secret` or `public`.
        kind: &'static str,
        /// What is wrong.
        reason: &'static str,
    },
    /// The public key is not a usable Ed25519 point (not on the curve, or of
    /// small order: anyone could forge signatures for it).
    #[error("{} holds a public key that is not a usable Ed25519 point", path.display())]
    WeakKey {
        /// The key file (empty when decoded from memory).
        path: PathBuf,
    },
    /// The operating system's random source failed.
    #[error("the operating system's random source failed: {message}")]
    Random {
        /// Its message.
        message: String,
    },
    /// A key file could not be read or written.
    #[error("{}: {message}", path.display())]
    Io {
        /// The key file.
        path: PathBuf,
        /// The OS's message.
        message: String,
        /// The OS's error kind (`AlreadyExists` when keygen would
        /// overwrite a file).
        kind: io::ErrorKind,
    },
}

/// An Ed25519 public key that may sign bundles.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PublicKey([u8; 32]);

impl PublicKey {
    /// The key from its 32 bytes. Any bytes are accepted here; a key that
    /// is not a valid point can never verify a signature.
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The key's 32 bytes.
    pub const fn to_bytes(self) -> [u8; 32] {
        self.0
    }

    /// The key file's text: [`PUBLIC_KEY_HEADER`], `\n`, 64 lowercase hex
    /// digits, `\n`.
    pub fn to_file_text(self) -> String {
        format!("{PUBLIC_KEY_HEADER}\n{}\n", hex(&self.0))
    }

    /// Decodes a public key file's bytes (exactly the text
    /// [`to_file_text`](Self::to_file_text) writes).
    ///
    /// # Errors
    /// [`KeyError::Malformed`] for anything else; [`KeyError::WeakKey`] for
    /// a key that is not a usable Ed25519 point. `path` only names the file
    /// in the error.
    pub fn from_file_bytes(bytes: &[u8], path: &Path) -> Result<Self, KeyError> {
        let key = Self(decode_key_file(bytes, PUBLIC_KEY_HEADER, "public", path)?);
        match VerifyingKey::from_bytes(&key.0) {
            Ok(point) if !point.is_weak() => Ok(key),
            _ => Err(KeyError::WeakKey {
                path: path.to_path_buf(),
            }),
        }
    }

    /// Reads and decodes the public key file at `path`.
    ///
    /// # Errors
    /// As [`from_file_bytes`](Self::from_file_bytes), and [`KeyError::Io`].
    pub fn read(path: &Path) -> Result<Self, KeyError> {
        Self::from_file_bytes(&read_key_file(path)?, path)
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex(&self.0))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({self})")
    }
}

/// An Ed25519 signing key. Its bytes are zeroed when it drops and never
/// appear in `Debug` output.
pub struct SecretKey(SigningKey);

impl SecretKey {
    /// A new key from the operating system's random source.
    ///
    /// # Errors
    /// [`KeyError::Random`] when the OS cannot provide randomness.
    pub fn generate() -> Result<Self, KeyError> {
        let mut seed = Zeroizing::new([0_u8; 32]);
        getrandom::fill(seed.as_mut()).map_err(|error| KeyError::Random {
            message: error.to_string(),
        })?;
        Ok(Self::from_seed(*seed))
    }

    /// The key whose RFC 8032 seed is `seed` (for tests and key files).
    pub fn from_seed(seed: [u8; 32]) -> Self {
        Self(SigningKey::from_bytes(&seed))
    }

    /// The public half.
    pub fn public_key(&self) -> PublicKey {
        PublicKey(self.0.verifying_key().to_bytes())
    }

    /// The key file's text: [`SECRET_KEY_HEADER`], `\n`, the seed as 64
    /// lowercase hex digits, `\n`. The caller must write it to a file only
    /// its owner can read.
    pub fn to_file_text(&self) -> Zeroizing<String> {
        Zeroizing::new(format!("{SECRET_KEY_HEADER}\n{}\n", hex(self.0.as_bytes())))
    }

    /// Decodes a secret key file's bytes (exactly the text
    /// [`to_file_text`](Self::to_file_text) writes).
    ///
    /// # Errors
    /// [`KeyError::Malformed`] for anything else. `path` only names the file
    /// in the error.
    pub fn from_file_bytes(bytes: &[u8], path: &Path) -> Result<Self, KeyError> {
        let seed = Zeroizing::new(decode_key_file(bytes, SECRET_KEY_HEADER, "secret", path)?);
        Ok(Self::from_seed(*seed))
    }

    /// Reads and decodes the secret key file at `path`.
    ///
    /// # Errors
    /// As [`from_file_bytes`](Self::from_file_bytes), and [`KeyError::Io`].
    pub fn read(path: &Path) -> Result<Self, KeyError> {
        let bytes = Zeroizing::new(read_key_file(path)?);
        Self::from_file_bytes(&bytes, path)
    }

    /// Creates a new key pair at `path` (secret, mode 0600, created
    /// exclusively) and `path.pub` (public, mode 0644). Returns the public
    /// key.
    ///
    /// # Errors
    /// [`KeyError::Io`] with kind `AlreadyExists` when either file exists
    /// (nothing is overwritten; a secret file already written is removed
    /// when the public one cannot be created); [`KeyError::Random`].
    pub fn generate_files(path: &Path) -> Result<PublicKey, KeyError> {
        let public_path = public_key_path(path);
        let key = Self::generate()?;
        // Both files are created before either is written, so an existing
        // KEY.pub refuses the call before a secret exists anywhere.
        let secret = create_new_file(path, 0o600)?;
        let public = match create_new_file(&public_path, 0o644) {
            Ok(public) => public,
            Err(error) => {
                // Only the file this call created a moment ago is removed.
                let _ = std::fs::remove_file(path);
                return Err(error);
            }
        };
        let written = write_and_sync(secret, path, key.to_file_text().as_bytes())
            .and_then(|()| write_and_sync(public, &public_path, key.public_key().to_file_text().as_bytes()));
        if let Err(error) = written {
            // A half-written key would refuse every later keygen to KEY.
            let _ = std::fs::remove_file(path);
            let _ = std::fs::remove_file(&public_path);
            return Err(error);
        }
        Ok(key.public_key())
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretKey(public {})", self.public_key())
    }
}

/// Where [`SecretKey::generate_files`] puts the public key of `secret`:
/// the same path with `.pub` appended.
pub fn public_key_path(secret: &Path) -> PathBuf {
    let mut name = secret.as_os_str().to_owned();
    name.push(".pub");
    PathBuf::from(name)
}

/// The keys a runtime accepts signatures from, and the keys it refuses even
/// if trusted. Revocation wins: a key in both lists is refused as revoked.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TrustedKeys {
    trusted: Vec<PublicKey>,
    revoked: Vec<PublicKey>,
}

impl TrustedKeys {
    /// No key trusted, none revoked.
    pub fn new() -> Self {
        Self::default()
    }

    /// Also trusts `key`.
    pub fn trust(mut self, key: PublicKey) -> Self {
        if !self.trusted.contains(&key) {
            self.trusted.push(key);
        }
        self
    }

    /// Also revokes `key`.
    pub fn revoke(mut self, key: PublicKey) -> Self {
        if !self.revoked.contains(&key) {
            self.revoked.push(key);
        }
        self
    }

    /// The trusted keys, in the order given.
    pub fn trusted(&self) -> &[PublicKey] {
        &self.trusted
    }

    /// The revoked keys, in the order given.
    pub fn revoked(&self) -> &[PublicKey] {
        &self.revoked
    }

    /// Whether `key` may sign: trusted and not revoked.
    ///
    /// # Errors
    /// [`SignatureError::RevokedKey`] or [`SignatureError::UnknownKey`],
    /// naming `bundle`.
    fn admit(&self, key: PublicKey, bundle: &str) -> Result<(), SignatureError> {
        if self.revoked.contains(&key) {
            return Err(SignatureError::RevokedKey {
                bundle: bundle.to_owned(),
                key,
            });
        }
        if !self.trusted.contains(&key) {
            return Err(SignatureError::UnknownKey {
                bundle: bundle.to_owned(),
                key,
            });
        }
        Ok(())
    }
}

/// One signed file: its path as the manifest spells it and its digest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedFile {
    /// Relative to the bundle directory, exactly as in the manifest's `file`.
    pub path: String,
    /// SHA-256 of its bytes when signed.
    pub digest: Sha256Digest,
}

/// A decoded signature file. Decoding checks only the syntax; whether the
/// signature verifies and matches the bundle is [`verify_bundle`]'s job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BundleSignature {
    /// The bundle's name.
    pub bundle: String,
    /// The signer's public key.
    pub key: PublicKey,
    /// SHA-256 of `manifest.toml`'s bytes.
    pub manifest_digest: Sha256Digest,
    /// The signed files, strictly ascending by path, 1 to
    /// [`MAX_SIGNED_FILES`].
    pub files: Vec<SignedFile>,
    /// The Ed25519 signature of [`signed_message`](Self::signed_message).
    pub signature: [u8; 64],
}

impl BundleSignature {
    /// Signs the fields with `key`: sets [`key`](Self::key) to its public
    /// half and [`signature`](Self::signature) to the signature of the
    /// resulting [`signed_message`](Self::signed_message).
    pub fn sign(&mut self, key: &SecretKey) {
        self.key = key.public_key();
        self.signature = key.0.sign(&self.signed_message()).to_bytes();
    }

    /// The bytes the signature covers (layout in the module docs). Lengths
    /// are saturated into their fields; a decoded or well-formed signature
    /// never needs it, and a saturated length cannot verify as another value
    /// because the bytes that follow still differ.
    pub fn signed_message(&self) -> Vec<u8> {
        let mut message = Vec::with_capacity(
            SIGNED_MESSAGE_DOMAIN.len() + 1 + self.bundle.len() + 64 + 2 + self.files.len() * 64,
        );
        message.extend_from_slice(SIGNED_MESSAGE_DOMAIN);
        message.push(u8::try_from(self.bundle.len()).unwrap_or(u8::MAX));
        message.extend_from_slice(self.bundle.as_bytes());
        message.extend_from_slice(&self.key.0);
        message.extend_from_slice(&self.manifest_digest);
        message.extend_from_slice(&u16::try_from(self.files.len()).unwrap_or(u16::MAX).to_le_bytes());
        for file in &self.files {
            message.extend_from_slice(&u16::try_from(file.path.len()).unwrap_or(u16::MAX).to_le_bytes());
            message.extend_from_slice(file.path.as_bytes());
            message.extend_from_slice(&file.digest);
        }
        message
    }

    /// The signature file's bytes (layout in the module docs).
    pub fn encode(&self) -> Vec<u8> {
        let mut text = format!(
            "{SIGNATURE_HEADER}\nbundle {}\nkey {}\nmanifest {}\n",
            self.bundle,
            self.key,
            hex(&self.manifest_digest)
        );
        for file in &self.files {
            text.push_str(&format!("file {} {}\n", hex(&file.digest), file.path));
        }
        text.push_str(&format!("signature {}\n", hex(&self.signature)));
        text.into_bytes()
    }

    /// Decodes a signature file's bytes, strictly: exactly the text
    /// [`encode`](Self::encode) writes for some valid value, nothing more.
    /// `path` only names the file in errors.
    ///
    /// # Errors
    /// [`SignatureError::Truncated`] when the bytes end before the
    /// `signature` line is complete; [`SignatureError::TooLarge`];
    /// [`SignatureError::Malformed`] with the line and the rule it breaks.
    pub fn decode(bytes: &[u8], path: &Path) -> Result<Self, SignatureError> {
        if u64::try_from(bytes.len()).map_or(true, |len| len > MAX_SIGNATURE_FILE_BYTES) {
            return Err(SignatureError::TooLarge {
                path: path.to_path_buf(),
                max: MAX_SIGNATURE_FILE_BYTES,
            });
        }
        let mut lines = Lines::new(bytes, path);
        let header = lines.next_line("header")?;
        if header != SIGNATURE_HEADER.as_bytes() {
            return Err(lines.malformed("not a holdfast-bundle-signature v1 header"));
        }
        let bundle = lines.field("bundle")?;
        if !is_signed_name(bundle) {
            return Err(lines.malformed("the bundle name is not 1-128 bytes of [A-Za-z0-9._-]"));
        }
        let bundle = String::from_utf8(bundle.to_vec())
            .map_err(|_| lines.malformed("the bundle name is not UTF-8"))?;
        let key = PublicKey(lines.hex_field::<32>("key")?);
        let manifest_digest = lines.hex_field::<32>("manifest")?;
        let mut files: Vec<SignedFile> = Vec::new();
        let signature = loop {
            let (name, value) = lines.any_field(if files.is_empty() { "file" } else { "signature" })?;
            match name {
                b"file" => {
                    if files.len() == MAX_SIGNED_FILES {
                        return Err(lines.malformed("more than 64 signed files"));
                    }
                    let file = decode_file_line(value).map_err(|reason| lines.malformed(reason))?;
                    if files
                        .last()
                        .is_some_and(|last| last.path.as_bytes() >= file.path.as_bytes())
                    {
                        return Err(lines.malformed("signed paths are not strictly ascending"));
                    }
                    files.push(file);
                }
                b"signature" if !files.is_empty() => {
                    break decode_hex::<64>(value)
                        .ok_or_else(|| lines.malformed("the signature is not 128 lowercase hex digits"))?;
                }
                b"signature" => return Err(lines.malformed("the signature covers no file")),
                _ => return Err(lines.malformed("expected a `file` or `signature` line")),
            }
        };
        if !lines.at_end() {
            return Err(lines.malformed_next("bytes after the signature line"));
        }
        Ok(Self {
            bundle,
            key,
            manifest_digest,
            files,
            signature,
        })
    }
}

/// Proof that a bundle's signature was checked: produced only by
/// [`verify_bundle`], for the bundle it names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignatureVerified {
    bundle: String,
    key: PublicKey,
    files: usize,
    loaded_digest: Sha256Digest,
}

impl SignatureVerified {
    /// The bundle's name.
    pub fn bundle(&self) -> &str {
        &self.bundle
    }

    /// The key that signed it.
    pub fn key(&self) -> PublicKey {
        self.key
    }

    /// How many files besides the manifest the signature covers.
    pub fn file_count(&self) -> usize {
        self.files
    }

    /// The SHA-256 of the file this platform loads, as signed: a loader
    /// checks its copy against it before opening or compiling anything
    /// ([`LoadContext::check_verified_digest`](crate::LoadContext::check_verified_digest)).
    pub fn loaded_file_digest(&self) -> Sha256Digest {
        self.loaded_digest
    }
}

/// Checks that the bundle `manifest` was read from is exactly what a key in
/// `keys` signed: the signature file decodes, its key is trusted and not
/// revoked, the signature verifies, it names this bundle, `manifest.toml`'s
/// bytes have the signed digest and parse to `manifest` (so a manifest
/// swapped between the caller's read and this one is refused too), every
/// signed path is one the manifest's `file` key names, the file this
/// platform loads is among them, and every signed file has its signed
/// digest. Checks run in that order and stop at the first failure.
///
/// Cost: one read of the signature file and the manifest, one Ed25519
/// verification, and one read and SHA-256 of every signed file.
///
/// # Errors
/// The first check that fails, as its [`SignatureError`] variant.
pub fn verify_bundle(
    manifest: &ManifestData,
    keys: &TrustedKeys,
) -> Result<SignatureVerified, SignatureError> {
    let dir = &manifest.dir;
    let signature_path = dir.join(SIGNATURE_FILE);
    let bytes = match read_bounded(&signature_path, MAX_SIGNATURE_FILE_BYTES) {
        Ok(bytes) => bytes,
        Err(ReadError::NotFound) => return Err(SignatureError::Missing { path: signature_path }),
        Err(ReadError::TooLarge) => {
            return Err(SignatureError::TooLarge {
                path: signature_path,
                max: MAX_SIGNATURE_FILE_BYTES,
            });
        }
        Err(ReadError::Io(message)) => {
            return Err(SignatureError::Io {
                path: signature_path,
                message,
            });
        }
    };
    let signed = BundleSignature::decode(&bytes, &signature_path)?;
    keys.admit(signed.key, &signed.bundle)?;
    let bad_signature = || SignatureError::BadSignature {
        bundle: signed.bundle.clone(),
        key: signed.key,
    };
    let verifying = VerifyingKey::from_bytes(&signed.key.0).map_err(|_| bad_signature())?;
    verifying
        .verify_strict(
            &signed.signed_message(),
            &ed25519_dalek::Signature::from_bytes(&signed.signature),
        )
        .map_err(|_| bad_signature())?;
    if signed.bundle != manifest.name {
        return Err(SignatureError::BundleMismatch {
            signed: signed.bundle,
            found: manifest.name.clone(),
        });
    }
    let bundle = &manifest.name;
    let manifest_path = dir.join(MANIFEST_FILE);
    let manifest_changed = || SignatureError::ManifestChanged {
        bundle: bundle.clone(),
        path: manifest_path.clone(),
    };
    let manifest_bytes = read_bounded(&manifest_path, MAX_MANIFEST_BYTES)
        .map_err(|error| error.into_signature_error(&manifest_path))?;
    if Sha256::digest(&manifest_bytes).as_slice() != signed.manifest_digest {
        return Err(manifest_changed());
    }
    // The bytes just verified are the ones that must describe the bundle
    // being loaded; the caller parsed an earlier read of the same file.
    let text = std::str::from_utf8(&manifest_bytes).map_err(|_| manifest_changed())?;
    match ManifestData::parse(text, dir) {
        Ok(reparsed) if reparsed == *manifest => {}
        _ => return Err(manifest_changed()),
    }
    let named = named_files(text)?;
    if let Some(stray) = signed.files.iter().find(|file| !named.contains(&file.path)) {
        return Err(SignatureError::FileNotNamed {
            bundle: bundle.clone(),
            path: stray.path.clone(),
        });
    }
    let loaded = manifest.file.to_string_lossy();
    let Some(loaded_digest) = signed
        .files
        .iter()
        .find(|file| file.path == loaded)
        .map(|file| file.digest)
    else {
        return Err(SignatureError::FileNotSigned {
            bundle: bundle.clone(),
            path: loaded.into_owned(),
        });
    };
    for file in &signed.files {
        let path = dir.join(&file.path);
        match digest_file(&path) {
            Ok(digest) if digest == file.digest => {}
            Ok(_) => {
                return Err(SignatureError::FileChanged {
                    bundle: bundle.clone(),
                    path,
                });
            }
            Err(ReadError::NotFound) => {
                return Err(SignatureError::FileMissing {
                    bundle: bundle.clone(),
                    path,
                });
            }
            Err(error @ (ReadError::TooLarge | ReadError::Io(_))) => {
                return Err(error.into_signature_error(&path));
            }
        }
    }
    Ok(SignatureVerified {
        bundle: signed.bundle,
        key: signed.key,
        files: signed.files.len(),
        loaded_digest,
    })
}

/// Signs the bundle in `dir` with `key`: validates its manifest
/// ([`ManifestData::from_dir`]), then signs the manifest's bytes and every
/// file its `file` key names that exists as a regular file (every
/// platform's entry, so one signature serves every platform's build of the
/// bundle). Returns the signature; writing it is
/// [`write_signature`]'s job.
///
/// # Errors
/// [`SignatureError::Manifest`] for an invalid manifest;
/// [`SignatureError::Io`] for a file that exists but cannot be read;
/// [`SignatureError::Malformed`] (line 0) when the manifest names more than
/// [`MAX_SIGNED_FILES`] files or a path that version 1 cannot carry.
pub fn sign_bundle(dir: &Path, key: &SecretKey) -> Result<BundleSignature, SignatureError> {
    let manifest = ManifestData::from_dir(dir)?;
    let manifest_path = manifest.dir.join(MANIFEST_FILE);
    let manifest_bytes = read_bounded(&manifest_path, MAX_MANIFEST_BYTES)
        .map_err(|error| error.into_signature_error(&manifest_path))?;
    let text = std::str::from_utf8(&manifest_bytes).map_err(|_| SignatureError::Io {
        path: manifest_path.clone(),
        message: "changed while it was being signed (no longer UTF-8)".to_owned(),
    })?;
    if ManifestData::parse(text, &manifest.dir)? != manifest {
        return Err(SignatureError::Io {
            path: manifest_path,
            message: "changed while it was being signed".to_owned(),
        });
    }
    let unsignable = |reason| SignatureError::Malformed {
        path: manifest.dir.join(SIGNATURE_FILE),
        line: 0,
        reason,
    };
    let mut files = Vec::new();
    for path in named_files(text)? {
        if !is_signed_path(path.as_bytes()) {
            return Err(unsignable(
                "the manifest names a path a v1 signature cannot carry",
            ));
        }
        let full = manifest.dir.join(&path);
        if !std::fs::metadata(&full).is_ok_and(|metadata| metadata.is_file()) {
            continue;
        }
        let digest = digest_file(&full).map_err(|error| error.into_signature_error(&full))?;
        files.push(SignedFile { path, digest });
    }
    if files.len() > MAX_SIGNED_FILES {
        return Err(unsignable("the manifest names more than 64 files"));
    }
    let mut signature = BundleSignature {
        bundle: manifest.name,
        key: key.public_key(),
        manifest_digest: Sha256::digest(&manifest_bytes).into(),
        files,
        signature: [0; 64],
    };
    signature.sign(key);
    Ok(signature)
}

/// Writes `signature` to `dir/bundle.sig`, replacing any earlier one
/// atomically (a temporary file in `dir`, then a rename), and returns the
/// path.
///
/// # Errors
/// [`SignatureError::Io`].
pub fn write_signature(dir: &Path, signature: &BundleSignature) -> Result<PathBuf, SignatureError> {
    use std::io::Write;
    let path = dir.join(SIGNATURE_FILE);
    let io = |error: io::Error| SignatureError::Io {
        path: path.clone(),
        message: error.to_string(),
    };
    // An unpredictable name, created exclusively: a symlink planted in the
    // bundle directory is never followed.
    let mut temporary = tempfile::Builder::new()
        .prefix(".bundle.sig.")
        .tempfile_in(dir)
        .map_err(io)?;
    temporary.write_all(&signature.encode()).map_err(io)?;
    temporary.persist(&path).map_err(|error| io(error.error))?;
    Ok(path)
}

/// Every path the manifest's `file` key names (a string, or a table of OS
/// to a string or a table of ARCH to a string), sorted by bytes, without
/// duplicates. The manifest was validated already, so every value has one
/// of those shapes.
fn named_files(manifest_text: &str) -> Result<Vec<String>, SignatureError> {
    let table: toml::Table = toml::from_str(manifest_text).map_err(|error| {
        SignatureError::Manifest(ManifestError::Syntax {
            message: error.message().to_owned(),
        })
    })?;
    let mut paths = Vec::new();
    collect_paths(table.get("file"), 0, &mut paths);
    paths.sort_unstable_by(|left: &String, right| left.as_bytes().cmp(right.as_bytes()));
    paths.dedup();
    Ok(paths)
}

/// The string leaves of the `file` value, at most two tables deep (OS, then
/// ARCH), as spec §4.2 allows.
fn collect_paths(value: Option<&toml::Value>, depth: usize, paths: &mut Vec<String>) {
    match value {
        Some(toml::Value::String(path)) => paths.push(path.clone()),
        Some(toml::Value::Table(table)) if depth < 2 => {
            for entry in table.values() {
                collect_paths(Some(entry), depth + 1, paths);
            }
        }
        _ => {}
    }
}

/// A bundle name in a signature: what spec §4.3 rule 3 allows in a manifest.
fn is_signed_name(name: &[u8]) -> bool {
    (1..=MAX_NAME_BYTES).contains(&name.len())
        && name[0].is_ascii_alphanumeric()
        && name
            .iter()
            .all(|&byte| byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b'-'))
}

/// A signed path: 1 to [`MAX_SIGNED_PATH_BYTES`] bytes of UTF-8 without
/// control characters, relative, without `..` (spec §4.3 rule 7, which the
/// manifest already enforces; checked again because the signature file is
/// read on its own).
fn is_signed_path(path: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(path) else {
        return false;
    };
    let has_drive = path.len() >= 2 && path[0].is_ascii_alphabetic() && path[1] == b':';
    let leaves = text.split(['/', '\\']).any(|segment| segment == "..");
    (1..=MAX_SIGNED_PATH_BYTES).contains(&path.len())
        && !text.chars().any(char::is_control)
        && !text.starts_with(['/', '\\'])
        && !has_drive
        && !leaves
}

/// `<64 hex> <path>`.
fn decode_file_line(value: &[u8]) -> Result<SignedFile, &'static str> {
    let (Some(digest), Some(b' '), Some(path)) = (value.get(..64), value.get(64), value.get(65..)) else {
        return Err("a file line is not `file <64 hex digits> <path>`");
    };
    let digest = decode_hex::<32>(digest).ok_or("a file digest is not 64 lowercase hex digits")?;
    if !is_signed_path(path) {
        return Err(
            "a signed path is empty, too long, absolute, leaves the bundle or has control characters",
        );
    }
    let path = String::from_utf8(path.to_vec()).map_err(|_| "a signed path is not UTF-8")?;
    Ok(SignedFile { path, digest })
}

/// Walks a signature file line by line, remembering the line number for
/// errors. A line is the bytes before a `\n`; bytes after the last `\n`
/// are an incomplete line.
struct Lines<'a> {
    rest: &'a [u8],
    line: usize,
    path: &'a Path,
}

impl<'a> Lines<'a> {
    fn new(bytes: &'a [u8], path: &'a Path) -> Self {
        Self {
            rest: bytes,
            line: 0,
            path,
        }
    }

    fn at_end(&self) -> bool {
        self.rest.is_empty()
    }

    /// The next complete line; `Truncated` (naming `expected`) when the
    /// bytes end first.
    fn next_line(&mut self, expected: &'static str) -> Result<&'a [u8], SignatureError> {
        let Some(end) = self.rest.iter().position(|&byte| byte == b'\n') else {
            return Err(SignatureError::Truncated {
                path: self.path.to_path_buf(),
                expected,
            });
        };
        let (line, rest) = self.rest.split_at(end);
        self.rest = &rest[1..];
        self.line += 1;
        Ok(line)
    }

    /// The next line, split at its first space into a name and a value.
    fn any_field(&mut self, expected: &'static str) -> Result<(&'a [u8], &'a [u8]), SignatureError> {
        let line = self.next_line(expected)?;
        let Some(space) = line.iter().position(|&byte| byte == b' ') else {
            return Err(self.malformed("a line is not `<name> <value>`"));
        };
        Ok((&line[..space], &line[space + 1..]))
    }

    /// The value of the next line, which must be named `name`.
    fn field(&mut self, name: &'static str) -> Result<&'a [u8], SignatureError> {
        let (found, value) = self.any_field(name)?;
        if found != name.as_bytes() {
            return Err(self.malformed(match name {
                "bundle" => "expected the `bundle` line",
                "key" => "expected the `key` line",
                _ => "expected the `manifest` line",
            }));
        }
        Ok(value)
    }

    /// The next line's value as `N` bytes of lowercase hex.
    fn hex_field<const N: usize>(&mut self, name: &'static str) -> Result<[u8; N], SignatureError> {
        let value = self.field(name)?;
        decode_hex::<N>(value).ok_or_else(|| {
            self.malformed(match name {
                "key" => "the key is not 64 lowercase hex digits",
                _ => "the manifest digest is not 64 lowercase hex digits",
            })
        })
    }

    /// `Malformed` at the line just read.
    fn malformed(&self, reason: &'static str) -> SignatureError {
        SignatureError::Malformed {
            path: self.path.to_path_buf(),
            line: self.line,
            reason,
        }
    }

    /// `Malformed` at the line after the one just read.
    fn malformed_next(&self, reason: &'static str) -> SignatureError {
        SignatureError::Malformed {
            path: self.path.to_path_buf(),
            line: self.line + 1,
            reason,
        }
    }
}

/// Lowercase hex of `bytes`.
fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut text = String::with_capacity(bytes.len() * 2);
    for &byte in bytes {
        text.push(char::from(DIGITS[usize::from(byte >> 4)]));
        text.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
    }
    text
}

/// Exactly `2 * N` lowercase hex digits as `N` bytes.
fn decode_hex<const N: usize>(text: &[u8]) -> Option<[u8; N]> {
    fn nibble(digit: u8) -> Option<u8> {
        match digit {
            b'0'..=b'9' => Some(digit - b'0'),
            b'a'..=b'f' => Some(digit - b'a' + 10),
            _ => None,
        }
    }
    if text.len() != 2 * N {
        return None;
    }
    let mut bytes = [0_u8; N];
    for (byte, pair) in bytes.iter_mut().zip(text.chunks_exact(2)) {
        *byte = (nibble(pair[0])? << 4) | nibble(pair[1])?;
    }
    Some(bytes)
}

/// A key file: `header\n` then `2 * 32` lowercase hex digits then `\n`.
fn decode_key_file(
    bytes: &[u8],
    header: &str,
    kind: &'static str,
    path: &Path,
) -> Result<[u8; 32], KeyError> {
    let malformed = |reason| KeyError::Malformed {
        path: path.to_path_buf(),
        kind,
        reason,
    };
    let body = bytes
        .strip_prefix(header.as_bytes())
        .and_then(|rest| rest.strip_prefix(b"\n"))
        .ok_or_else(|| malformed("the first line is not its header"))?;
    let digits = body
        .strip_suffix(b"\n")
        .ok_or_else(|| malformed("the key line does not end with a newline"))?;
    decode_hex::<32>(digits).ok_or_else(|| malformed("the key is not 64 lowercase hex digits on one line"))
}

fn read_key_file(path: &Path) -> Result<Vec<u8>, KeyError> {
    read_bounded(path, MAX_KEY_FILE_BYTES).map_err(|error| {
        let (message, kind) = match error {
            ReadError::NotFound => ("no such file".to_owned(), io::ErrorKind::NotFound),
            ReadError::TooLarge => ("too large for a key file".to_owned(), io::ErrorKind::InvalidData),
            ReadError::Io(message) => (message, io::ErrorKind::Other),
        };
        KeyError::Io {
            path: path.to_path_buf(),
            message,
            kind,
        }
    })
}

/// Creates `path` (never replacing an existing file) with `mode` on Unix
/// and writes `bytes`.
fn create_new_file(path: &Path, mode: u32) -> Result<File, KeyError> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    options.open(path).map_err(|error| key_io_error(path, &error))
}

fn write_and_sync(mut file: File, path: &Path, bytes: &[u8]) -> Result<(), KeyError> {
    use std::io::Write;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(|error| key_io_error(path, &error))
}

fn key_io_error(path: &Path, error: &io::Error) -> KeyError {
    KeyError::Io {
        path: path.to_path_buf(),
        message: error.to_string(),
        kind: error.kind(),
    }
}

/// Why a bounded read failed.
enum ReadError {
    NotFound,
    TooLarge,
    Io(String),
}

impl ReadError {
    fn into_signature_error(self, path: &Path) -> SignatureError {
        SignatureError::Io {
            path: path.to_path_buf(),
            message: match self {
                Self::NotFound => "no such file".to_owned(),
                Self::TooLarge => "too large".to_owned(),
                Self::Io(message) => message,
            },
        }
    }
}

fn classify(error: &io::Error) -> ReadError {
    if error.kind() == io::ErrorKind::NotFound {
        ReadError::NotFound
    } else {
        ReadError::Io(error.to_string())
    }
}

/// The most bytes of one signed file that are hashed: beyond, the file is
/// refused as too large rather than read for ever.
pub const MAX_SIGNED_FILE_BYTES: u64 = 1 << 30;

/// Opens `path` for reading only if it is a regular file: a FIFO, a device
/// (`/dev/zero` behind a symlink) or a directory is refused at once instead
/// of blocking the open or feeding a read without end. Opening does not
/// wait (`O_NONBLOCK`), which changes nothing for a regular file.
pub(crate) fn open_regular(path: &Path) -> io::Result<File> {
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::custom_flags(&mut options, libc::O_NONBLOCK);
    let file = options.open(path)?;
    if !file.metadata()?.is_file() {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "not a regular file"));
    }
    Ok(file)
}

/// Reads at most `max` bytes of `path`; a longer file is `TooLarge`
/// (decided by what is read, not by a size the file could change after).
fn read_bounded(path: &Path, max: u64) -> Result<Vec<u8>, ReadError> {
    let file = open_regular(path).map_err(|error| classify(&error))?;
    let mut bytes = Vec::new();
    file.take(max.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|error| classify(&error))?;
    if u64::try_from(bytes.len()).map_or(true, |len| len > max) {
        return Err(ReadError::TooLarge);
    }
    Ok(bytes)
}

/// SHA-256 of the file at `path`, streamed.
fn digest_file(path: &Path) -> Result<Sha256Digest, ReadError> {
    sha256_of_file(path).map_err(|error| {
        if error.kind() == io::ErrorKind::FileTooLarge {
            ReadError::TooLarge
        } else {
            classify(&error)
        }
    })
}

/// The SHA-256 of the regular file at `path`, streamed (the digest a
/// signature records for each file).
///
/// # Errors
/// `FileTooLarge` past [`MAX_SIGNED_FILE_BYTES`], `InvalidInput` for what
/// is not a regular file, or the read's own error.
pub(crate) fn sha256_of_file(path: &Path) -> io::Result<Sha256Digest> {
    let file = open_regular(path)?;
    let mut hasher = Sha256::new();
    let hashed = io::copy(&mut file.take(MAX_SIGNED_FILE_BYTES + 1), &mut hasher)?;
    if hashed > MAX_SIGNED_FILE_BYTES {
        return Err(io::Error::new(
            io::ErrorKind::FileTooLarge,
            format!("more than {MAX_SIGNED_FILE_BYTES} bytes"),
        ));
    }
    Ok(hasher.finalize().into())
}

/// Entry points for fuzzers and property tests (not part of the API).
#[doc(hidden)]
pub mod fuzzing {
    use std::path::Path;

    use super::BundleSignature;

    /// Decodes `bytes` as a signature file; whatever it accepts must
    /// re-encode to exactly `bytes` (one spelling per value). Panics only
    /// when that property fails.
    pub fn decode_signature_file(bytes: &[u8]) {
        if let Ok(decoded) = BundleSignature::decode(bytes, Path::new("bundle.sig")) {
            assert_eq!(
                decoded.encode(),
                bytes,
                "an accepted signature file re-encodes differently"
            );
        }
    }
}
