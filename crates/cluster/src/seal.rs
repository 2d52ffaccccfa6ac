//! The cluster's pre-shared key and what it protects.
//!
//! Every key used on the engine is derived from the cluster PSK with keyed
//! BLAKE2s and a label, so one secret file serves all of them and no key is
//! used for two purposes:
//!
//! - snapshots (with the identity seed inside them) are sealed with
//!   XChaCha20-Poly1305; the cluster, origin, epoch and input sequence are
//!   the associated data, so the engine's operator can neither read a
//!   daemon's state nor substitute an old or foreign snapshot;
//! - records (ownership, live nodes) carry a BLAKE2s MAC under the PSK, so a
//!   record written by anything but a member is refused.
//!
//! This module never talks to the server and never holds a key longer than
//! the [`ClusterKeys`] that owns it (the keys are zeroized on drop).

use blake2::digest::{FixedOutput, KeyInit, Mac};
use blake2::{Blake2b512, Blake2sMac256, Digest};
use bytes::Bytes;
use chacha20poly1305::aead::AeadInPlace;
use chacha20poly1305::{Tag, XChaCha20Poly1305, XNonce};
use zeroize::{Zeroize, Zeroizing};

use crate::error::SealError;

/// The shortest PSK accepted, in bytes.
pub const MIN_PSK_BYTES: usize = 32;

/// The first bytes of every sealed snapshot.
pub const SEALED_MAGIC: [u8; 8] = *b"HFCSEAL1";

const NONCE_BYTES: usize = 24;
const TAG_BYTES: usize = 16;

/// The smallest sealed snapshot: magic, nonce and tag around nothing.
pub const MIN_SEALED_BYTES: usize = SEALED_MAGIC.len() + NONCE_BYTES + TAG_BYTES;

/// Where a sealed snapshot belongs; a snapshot opens only in its own place.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SealContext<'a> {
    /// The cluster's name.
    pub cluster: &'a str,
    /// The daemon's origin.
    pub origin: u64,
    /// The ownership epoch in which the snapshot was written.
    pub epoch: u64,
    /// The last input sequence the snapshot covers.
    pub input_seq: u64,
}

impl SealContext<'_> {
    fn associated_data(&self) -> Vec<u8> {
        let mut data = Vec::with_capacity(64);
        data.extend_from_slice(b"holdfast-cluster snapshot v1\0");
        data.extend_from_slice(&(self.cluster.len() as u64).to_be_bytes());
        data.extend_from_slice(self.cluster.as_bytes());
        data.extend_from_slice(&self.origin.to_be_bytes());
        data.extend_from_slice(&self.epoch.to_be_bytes());
        data.extend_from_slice(&self.input_seq.to_be_bytes());
        data
    }
}

/// The keys derived from one cluster PSK.
pub struct ClusterKeys {
    snapshot_key: Zeroizing<[u8; 32]>,
    record_key: Zeroizing<[u8; 32]>,
}

impl std::fmt::Debug for ClusterKeys {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("ClusterKeys(..)")
    }
}

impl ClusterKeys {
    /// Derives the keys from `psk`.
    ///
    /// # Errors
    /// `PskTooShort` for fewer than [`MIN_PSK_BYTES`] bytes.
    pub fn derive(psk: &[u8]) -> Result<Self, SealError> {
        if psk.len() < MIN_PSK_BYTES {
            return Err(SealError::PskTooShort {
                found: psk.len(),
                minimum: MIN_PSK_BYTES,
            });
        }
        // BLAKE2s takes keys of at most 32 bytes: compress a PSK of any
        // length first, then derive one key per label.
        let mut compressed = Zeroizing::new([0u8; 64]);
        compressed.copy_from_slice(&Blake2b512::digest(psk));
        let derive = |label: &[u8]| {
            let mut mac = <Blake2sMac256 as KeyInit>::new_from_slice(&compressed[..32])
                .expect("a 32-byte key is within BLAKE2s's limit");
            mac.update(label);
            let mut key = Zeroizing::new([0u8; 32]);
            key.copy_from_slice(&mac.finalize_fixed());
            key
        };
        Ok(Self {
            snapshot_key: derive(b"holdfast-cluster/snapshot-seal/v1"),
            record_key: derive(b"holdfast-cluster/record-mac/v1"),
        })
    }

    /// Reads a PSK file: its bytes, with one trailing newline removed.
    ///
    /// # Errors
    /// `PskUnreadable`, or `PskTooShort`.
    pub fn from_file(path: &std::path::Path) -> Result<Self, SealError> {
        let mut bytes = std::fs::read(path).map_err(|source| SealError::PskUnreadable {
            path: path.to_owned(),
            source,
        })?;
        while bytes.last().is_some_and(|byte| *byte == b'\n' || *byte == b'\r') {
            bytes.pop();
        }
        let keys = Self::derive(&bytes);
        bytes.zeroize();
        keys
    }

    /// Seals `plaintext` for `context` under a fresh random nonce.
    pub fn seal(&self, context: &SealContext<'_>, plaintext: &[u8]) -> Vec<u8> {
        self.seal_written(context, plaintext.len(), |buffer| {
            buffer.extend_from_slice(plaintext)
        })
    }

    /// Seals for `context` the plaintext that `write` appends to the buffer
    /// it is given (about `length` bytes; a hint for the buffer's size).
    ///
    /// A snapshot is megabytes, and every fresh buffer of that size costs
    /// its page faults on a move's critical path (about 0.7 ms per MiB
    /// measured on the project VM): the plaintext is written once, into the
    /// buffer that is then encrypted in place, instead of being encoded into
    /// one buffer and copied into another.
    pub fn seal_written(
        &self,
        context: &SealContext<'_>,
        length: usize,
        write: impl FnOnce(&mut Vec<u8>),
    ) -> Vec<u8> {
        let cipher = XChaCha20Poly1305::new(self.snapshot_key.as_ref().into());
        let mut nonce = [0u8; NONCE_BYTES];
        getrandom::fill(&mut nonce).expect("the operating system's random source is available");
        let aad = context.associated_data();
        let mut sealed = Vec::with_capacity(MIN_SEALED_BYTES + length);
        sealed.extend_from_slice(&SEALED_MAGIC);
        sealed.extend_from_slice(&nonce);
        let header = sealed.len();
        write(&mut sealed);
        let tag = cipher
            .encrypt_in_place_detached(XNonce::from_slice(&nonce), &aad, &mut sealed[header..])
            .expect("XChaCha20-Poly1305 seals any message below 256 GiB");
        sealed.extend_from_slice(&tag);
        sealed
    }

    /// Opens a snapshot sealed by [`seal`](Self::seal) for the same context.
    ///
    /// # Errors
    /// As [`open_in_place`](Self::open_in_place).
    pub fn open(&self, context: &SealContext<'_>, sealed: &[u8]) -> Result<Vec<u8>, SealError> {
        self.open_in_place(context, sealed.to_vec()).map(Vec::from)
    }

    /// Opens a snapshot sealed by [`seal`](Self::seal) for the same
    /// context, decrypting it where it lies: the plaintext is a view of
    /// `sealed`'s own buffer, not a copy.
    ///
    /// # Errors
    /// `Truncated` below the smallest sealed size, `NotSealed` without the
    /// magic, `Unauthentic` when the tag does not verify: sealed under
    /// another PSK, for another origin, epoch or input sequence, or changed.
    pub fn open_in_place(&self, context: &SealContext<'_>, mut sealed: Vec<u8>) -> Result<Bytes, SealError> {
        if sealed.len() < MIN_SEALED_BYTES {
            return Err(SealError::Truncated {
                found: sealed.len(),
                minimum: MIN_SEALED_BYTES,
            });
        }
        if sealed[..SEALED_MAGIC.len()] != SEALED_MAGIC {
            return Err(SealError::NotSealed);
        }
        let header = SEALED_MAGIC.len() + NONCE_BYTES;
        let body_end = sealed.len() - TAG_BYTES;
        let nonce = *XNonce::from_slice(&sealed[SEALED_MAGIC.len()..header]);
        let tag = *Tag::from_slice(&sealed[body_end..]);
        let cipher = XChaCha20Poly1305::new(self.snapshot_key.as_ref().into());
        let aad = context.associated_data();
        cipher
            .decrypt_in_place_detached(&nonce, &aad, &mut sealed[header..body_end], &tag)
            .map_err(|_| SealError::Unauthentic {
                origin: context.origin,
            })?;
        Ok(Bytes::from(sealed).slice(header..body_end))
    }

    /// The MAC of a record's bytes under the PSK.
    pub fn record_mac(&self, bytes: &[u8]) -> [u8; 32] {
        let mut mac = <Blake2sMac256 as KeyInit>::new_from_slice(self.record_key.as_ref())
            .expect("a 32-byte key is within BLAKE2s's limit");
        mac.update(bytes);
        mac.finalize_fixed().into()
    }

    /// Whether `tag` is the MAC of `bytes` (compared in constant time).
    pub fn record_mac_matches(&self, bytes: &[u8], tag: &[u8; 32]) -> bool {
        let mut mac = <Blake2sMac256 as KeyInit>::new_from_slice(self.record_key.as_ref())
            .expect("a 32-byte key is within BLAKE2s's limit");
        mac.update(bytes);
        mac.verify_slice(tag).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn context(origin: u64) -> SealContext<'static> {
        SealContext {
            cluster: "c",
            origin,
            epoch: 3,
            input_seq: 42,
        }
    }

    #[test]
    fn a_sealed_snapshot_opens_in_its_own_context_only() {
        let keys = ClusterKeys::derive(&[7; 32]).expect("long enough");
        let sealed = keys.seal(&context(1), b"state");
        assert_eq!(keys.open(&context(1), &sealed).expect("opens"), b"state");
        for other in [
            SealContext {
                origin: 2,
                ..context(1)
            },
            SealContext {
                epoch: 4,
                ..context(1)
            },
            SealContext {
                input_seq: 41,
                ..context(1)
            },
            SealContext {
                cluster: "d",
                ..context(1)
            },
        ] {
            assert!(matches!(
                keys.open(&other, &sealed),
                Err(SealError::Unauthentic { .. })
            ));
        }
    }

    #[test]
    fn another_psk_cannot_open_a_snapshot() {
        let ours = ClusterKeys::derive(&[7; 32]).expect("long enough");
        let theirs = ClusterKeys::derive(&[8; 40]).expect("long enough");
        let sealed = theirs.seal(&context(1), b"state");
        assert!(matches!(
            ours.open(&context(1), &sealed),
            Err(SealError::Unauthentic { origin: 1 })
        ));
    }

    #[test]
    fn truncated_and_unsealed_bytes_are_refused_by_name() {
        let keys = ClusterKeys::derive(&[7; 32]).expect("long enough");
        let sealed = keys.seal(&context(1), b"state");
        assert!(matches!(
            keys.open(&context(1), &sealed[..MIN_SEALED_BYTES - 1]),
            Err(SealError::Truncated { .. })
        ));
        let mut unsealed = sealed.clone();
        unsealed[0] ^= 1;
        assert!(matches!(
            keys.open(&context(1), &unsealed),
            Err(SealError::NotSealed)
        ));
        let mut cut = sealed;
        cut.pop();
        assert!(matches!(
            keys.open(&context(1), &cut),
            Err(SealError::Unauthentic { .. })
        ));
    }

    #[test]
    fn a_short_psk_is_refused() {
        assert!(matches!(
            ClusterKeys::derive(&[1; 31]),
            Err(SealError::PskTooShort {
                found: 31,
                minimum: 32
            })
        ));
    }

    #[test]
    fn record_macs_depend_on_the_psk() {
        let ours = ClusterKeys::derive(&[7; 32]).expect("long enough");
        let theirs = ClusterKeys::derive(&[9; 32]).expect("long enough");
        let tag = ours.record_mac(b"record");
        assert!(ours.record_mac_matches(b"record", &tag));
        assert!(!theirs.record_mac_matches(b"record", &tag));
        assert!(!ours.record_mac_matches(b"recore", &tag));
    }
}
