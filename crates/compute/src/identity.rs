//! Identities: an Ed25519 keypair ([`Identity`], [`EntityKeypair`]), its
//! public key as the [`EntityId`], and the 64-bit *origin hash* derived from
//! it, which routes every runtime call.
//!
//! The origin hash is only a routing key: two identities are equal exactly
//! when their full 32-byte entity ids are equal, and nothing in the crate
//! decides identity on the hash. Secret keys never appear in `Debug` output
//! and are zeroized on drop (ed25519-dalek's `zeroize` feature).

use std::fmt;

use blake2::Blake2sMac256;
use blake2::digest::{KeyInit, Mac};
use ed25519_dalek::{Signer, SigningKey, VerifyingKey};

pub use ed25519_dalek::Signature;

/// The key of the keyed BLAKE2s that derives origin hashes; changing it
/// changes every origin hash, so it is versioned.
const ORIGIN_HASH_KEY: &[u8] = b"holdfast-compute/origin-hash/v1";

/// Why a signature check failed.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    /// The entity id is not a valid Ed25519 public key.
    #[error("entity id is not a valid Ed25519 public key")]
    InvalidPublicKey,
    /// The signature does not verify (strictly) for this message and key.
    #[error("signature does not verify for this entity")]
    BadSignature,
}

/// An entity's 32-byte Ed25519 public key. `Debug` and `Display` print 64
/// lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EntityId([u8; 32]);

impl EntityId {
    /// The entity id with these public-key bytes (not checked to be a valid
    /// curve point; [`EntityId::verify`] checks).
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The public-key bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The origin hash: the first 8 bytes, little-endian, of
    /// BLAKE2s-256-MAC keyed with `holdfast-compute/origin-hash/v1` over the
    /// entity id. Identities cache it; this recomputes it.
    pub fn origin_hash(&self) -> u64 {
        let mut mac = <Blake2sMac256 as KeyInit>::new_from_slice(ORIGIN_HASH_KEY)
            .expect("a 31-byte key is within BLAKE2s's 32-byte limit");
        mac.update(&self.0);
        let digest = mac.finalize().into_bytes();
        let mut first = [0u8; 8];
        first.copy_from_slice(&digest[..8]);
        u64::from_le_bytes(first)
    }

    /// Verifies `sig` over `msg` with `verify_strict` (no malleable or
    /// small-order signatures).
    ///
    /// # Errors
    /// `InvalidPublicKey` if the id is not a curve point, `BadSignature` if
    /// the signature does not verify.
    pub fn verify(&self, msg: &[u8], sig: &Signature) -> Result<(), IdentityError> {
        let key = VerifyingKey::from_bytes(&self.0).map_err(|_| IdentityError::InvalidPublicKey)?;
        key.verify_strict(msg, sig)
            .map_err(|_| IdentityError::BadSignature)
    }
}

impl fmt::Display for EntityId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|byte| write!(f, "{byte:02x}"))
    }
}

impl fmt::Debug for EntityId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A signing key with its entity id and origin hash computed once.
/// `Debug` never prints the secret.
#[derive(Clone)]
pub struct EntityKeypair {
    signing: SigningKey,
    entity_id: EntityId,
    origin_hash: u64,
}

impl EntityKeypair {
    fn from_signing_key(signing: SigningKey) -> Self {
        let entity_id = EntityId(signing.verifying_key().to_bytes());
        let origin_hash = entity_id.origin_hash();
        Self {
            signing,
            entity_id,
            origin_hash,
        }
    }

    /// The public key.
    pub fn entity_id(&self) -> &EntityId {
        &self.entity_id
    }

    /// The cached origin hash of the entity id.
    pub fn origin_hash(&self) -> u64 {
        self.origin_hash
    }

    /// Signs `msg` (plain Ed25519).
    pub fn sign(&self, msg: &[u8]) -> Signature {
        self.signing.sign(msg)
    }
}

impl fmt::Debug for EntityKeypair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EntityKeypair")
            .field("entity_id", &self.entity_id)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// A daemon's or node's identity. `Debug` prints the entity id only.
#[derive(Clone)]
pub struct Identity {
    keypair: EntityKeypair,
}

impl Identity {
    /// A fresh identity from 32 bytes of operating-system randomness.
    ///
    /// # Panics
    /// If the operating system's random source fails: there is no safe
    /// identity to fall back to.
    pub fn generate() -> Self {
        let mut seed = zeroize::Zeroizing::new([0u8; 32]);
        getrandom::fill(seed.as_mut()).expect("the operating system's random source failed");
        Self::from_seed(*seed)
    }

    /// The identity whose RFC 8032 secret key is `seed`.
    pub fn from_seed(seed: [u8; 32]) -> Self {
        Self {
            keypair: EntityKeypair::from_signing_key(SigningKey::from_bytes(&seed)),
        }
    }

    /// The keypair.
    pub fn keypair(&self) -> &EntityKeypair {
        &self.keypair
    }

    /// The public key.
    pub fn entity_id(&self) -> &EntityId {
        &self.keypair.entity_id
    }

    /// The cached origin hash.
    pub fn origin_hash(&self) -> u64 {
        self.keypair.origin_hash
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("entity_id", self.entity_id())
            .finish()
    }
}
