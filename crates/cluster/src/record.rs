//! The records nodes keep in the engine's key-value buckets: who owns each
//! daemon (`HF_C_OWNERS`) and which nodes are alive (`HF_C_NODES`).
//!
//! Every record is an envelope: magic, kind, a CBOR body, the writer's
//! Ed25519 key and signature, and a MAC under the cluster PSK. A record is
//! believed only when all of it checks out, in this order: bounds, magic,
//! kind, length, MAC (written by a member), signature (by the key it
//! names), body, and the body naming its own signer as writer. Reading never
//! panics on any bytes (the engine is outside the trust boundary) and never
//! repairs a record: a refused record stays as it is for a person to see.

use holdfast_compute::{EntityId, Identity, Signature};
use minicbor::{Decode, Encode};

use crate::error::RecordError;
use crate::seal::ClusterKeys;

/// The first bytes of every record.
pub const RECORD_MAGIC: [u8; 8] = *b"HFREC1\0\0";

/// The largest record accepted, in bytes.
pub const MAX_RECORD_BYTES: usize = 64 * 1024;

const SIGNER_BYTES: usize = 32;
const SIGNATURE_BYTES: usize = 64;
const MAC_BYTES: usize = 32;
const HEADER_BYTES: usize = RECORD_MAGIC.len() + 1 + 4;
const TRAILER_BYTES: usize = SIGNER_BYTES + SIGNATURE_BYTES + MAC_BYTES;
const SIGNING_DOMAIN: &[u8] = b"holdfast-cluster record v1\0";

/// What a record says, so one kind can never be read as another.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum RecordKind {
    /// An [`OwnerRecord`].
    Owner = 1,
    /// A [`NodeEntry`].
    Node = 2,
}

/// Where a daemon's latest snapshot is and what it covers.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct SnapshotRef {
    /// The object's name in `HF_C_SNAPSHOTS`.
    #[n(0)]
    pub object: String,
    /// SHA-256 of the sealed object.
    #[n(1)]
    #[cbor(with = "minicbor::bytes")]
    pub digest: [u8; 32],
    /// The epoch it was sealed in (part of its associated data).
    #[n(2)]
    pub sealed_epoch: u64,
    /// The last input-stream sequence it covers (0: none).
    #[n(3)]
    pub input_seq: u64,
    /// The last output-stream sequence on the daemon's subject when it was
    /// taken (0: none).
    #[n(4)]
    pub output_stream_seq: u64,
    /// The chain sequence of the last output it covers.
    #[n(5)]
    pub output_seq: u64,
    /// The sealed object's length.
    #[n(6)]
    pub bytes: u64,
}

/// Who owns a daemon, in which epoch, and where it resumes from.
///
/// Changed only by compare-and-set on the key's revision; the epoch grows by
/// one with every change of owner.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct OwnerRecord {
    /// The daemon's origin (also the key).
    #[n(0)]
    pub origin: u64,
    /// Its kind.
    #[n(1)]
    pub kind: String,
    /// The kind's `major.minor` that wrote the snapshot.
    #[n(2)]
    pub kind_version: String,
    /// The owning node's id (64 hex digits).
    #[n(3)]
    pub node: String,
    /// The ownership epoch.
    #[n(4)]
    pub epoch: u64,
    /// The latest snapshot.
    #[n(5)]
    pub snapshot: SnapshotRef,
    /// Why the daemon is stopped for good (e.g. nondeterministic replay).
    #[n(6)]
    pub halted: Option<String>,
    /// How many times ownership changed.
    #[n(7)]
    pub moves: u64,
    /// The node that wrote this record (must be its signer).
    #[n(8)]
    pub writer: String,
}

/// A live node, as it announces itself; expires unless refreshed.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct NodeEntry {
    /// The node's id (64 hex digits, its Ed25519 key; also the key).
    #[n(0)]
    pub node: String,
    /// Where its HTTP API answers.
    #[n(1)]
    pub http: String,
    /// The daemon kinds it can host.
    #[n(2)]
    pub kinds: Vec<String>,
    /// Its capability tags.
    #[n(3)]
    pub capabilities: Vec<String>,
    /// How many daemons it hosts.
    #[n(4)]
    pub hosted: u64,
    /// Whether it is handing its daemons away before it exits.
    #[n(5)]
    pub draining: bool,
    /// When it started (Unix ms).
    #[n(6)]
    pub started_at_ms: u64,
}

/// A node id as records show it: the key's 64 lower-case hex digits.
pub fn node_id_text(id: &EntityId) -> String {
    id.as_bytes().iter().map(|byte| format!("{byte:02x}")).collect()
}

/// Encodes and signs `body` as a record of `kind` written by `writer`.
pub fn seal_record<T: Encode<()>>(
    kind: RecordKind,
    body: &T,
    writer: &Identity,
    keys: &ClusterKeys,
) -> Vec<u8> {
    let encoded = minicbor::to_vec(body).expect("encoding into a Vec cannot fail");
    let mut bytes = Vec::with_capacity(HEADER_BYTES + encoded.len() + TRAILER_BYTES);
    bytes.extend_from_slice(&RECORD_MAGIC);
    bytes.push(kind as u8);
    let length = u32::try_from(encoded.len()).expect("a record body is far below 4 GiB");
    bytes.extend_from_slice(&length.to_be_bytes());
    bytes.extend_from_slice(&encoded);
    bytes.extend_from_slice(writer.entity_id().as_bytes());
    let signature = writer.keypair().sign(&signed_message(&bytes));
    bytes.extend_from_slice(&signature.to_bytes());
    let mac = keys.record_mac(&bytes);
    bytes.extend_from_slice(&mac);
    bytes
}

/// A record read back: its body and who signed it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Opened<T> {
    /// The decoded body.
    pub body: T,
    /// The signer's node id.
    pub signer: EntityId,
}

/// Checks and decodes a record of `kind`.
///
/// # Errors
/// `TooLarge`, `Truncated`, `NotARecord` (no magic), `WrongKind`,
/// `LengthMismatch`, `NotFromAMember` (MAC fails: another PSK, or changed),
/// `BadSignature`, `Malformed` (the body does not decode).
pub fn open_record<T: for<'b> Decode<'b, ()>>(
    kind: RecordKind,
    bytes: &[u8],
    keys: &ClusterKeys,
) -> Result<Opened<T>, RecordError> {
    if bytes.len() > MAX_RECORD_BYTES {
        return Err(RecordError::TooLarge {
            found: bytes.len(),
            maximum: MAX_RECORD_BYTES,
        });
    }
    let minimum = HEADER_BYTES + TRAILER_BYTES;
    if bytes.len() < minimum {
        if bytes.len() >= RECORD_MAGIC.len() && bytes[..RECORD_MAGIC.len()] != RECORD_MAGIC {
            return Err(RecordError::NotARecord);
        }
        return Err(RecordError::Truncated {
            found: bytes.len(),
            minimum,
        });
    }
    if bytes[..RECORD_MAGIC.len()] != RECORD_MAGIC {
        return Err(RecordError::NotARecord);
    }
    let found_kind = bytes[RECORD_MAGIC.len()];
    if found_kind != kind as u8 {
        return Err(RecordError::WrongKind {
            expected: kind as u8,
            found: found_kind,
        });
    }
    let length_at = RECORD_MAGIC.len() + 1;
    let mut length = [0u8; 4];
    length.copy_from_slice(&bytes[length_at..length_at + 4]);
    let body_len = u32::from_be_bytes(length) as usize;
    if HEADER_BYTES + body_len + TRAILER_BYTES != bytes.len() {
        return Err(RecordError::LengthMismatch {
            declared: body_len,
            total: bytes.len(),
        });
    }
    let (signed_part, mac) = bytes.split_at(bytes.len() - MAC_BYTES);
    let mac: &[u8; MAC_BYTES] = mac.try_into().expect("split at MAC_BYTES from the end");
    if !keys.record_mac_matches(signed_part, mac) {
        return Err(RecordError::NotFromAMember);
    }
    let body_end = HEADER_BYTES + body_len;
    let mut signer = [0u8; SIGNER_BYTES];
    signer.copy_from_slice(&bytes[body_end..body_end + SIGNER_BYTES]);
    let signer = EntityId::from_bytes(signer);
    let mut signature = [0u8; SIGNATURE_BYTES];
    signature.copy_from_slice(&bytes[body_end + SIGNER_BYTES..body_end + SIGNER_BYTES + SIGNATURE_BYTES]);
    let signature = Signature::from_bytes(&signature);
    signer
        .verify(&signed_message(&bytes[..body_end + SIGNER_BYTES]), &signature)
        .map_err(|_| RecordError::BadSignature {
            signer: node_id_text(&signer),
        })?;
    let body = minicbor::decode(&bytes[HEADER_BYTES..body_end]).map_err(|error| RecordError::Malformed {
        reason: error.to_string(),
    })?;
    Ok(Opened { body, signer })
}

/// Checks and decodes an ownership record, which must name its signer as
/// its writer and `origin` as its origin.
///
/// # Errors
/// As [`open_record`], plus `WriterMismatch` and `OriginMismatch`.
pub fn open_owner(origin: u64, bytes: &[u8], keys: &ClusterKeys) -> Result<OwnerRecord, RecordError> {
    let opened: Opened<OwnerRecord> = open_record(RecordKind::Owner, bytes, keys)?;
    let signer = node_id_text(&opened.signer);
    if opened.body.writer != signer {
        return Err(RecordError::WriterMismatch {
            writer: opened.body.writer,
            signer,
        });
    }
    if opened.body.origin != origin {
        return Err(RecordError::OriginMismatch {
            key: origin,
            record: opened.body.origin,
        });
    }
    Ok(opened.body)
}

/// Checks and decodes a node entry, which must be signed by the node it
/// describes.
///
/// # Errors
/// As [`open_record`], plus `WriterMismatch`.
pub fn open_node(bytes: &[u8], keys: &ClusterKeys) -> Result<NodeEntry, RecordError> {
    let opened: Opened<NodeEntry> = open_record(RecordKind::Node, bytes, keys)?;
    let signer = node_id_text(&opened.signer);
    if opened.body.node != signer {
        return Err(RecordError::WriterMismatch {
            writer: opened.body.node,
            signer,
        });
    }
    Ok(opened.body)
}

fn signed_message(prefix: &[u8]) -> Vec<u8> {
    let mut message = Vec::with_capacity(SIGNING_DOMAIN.len() + prefix.len());
    message.extend_from_slice(SIGNING_DOMAIN);
    message.extend_from_slice(prefix);
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> ClusterKeys {
        ClusterKeys::derive(&[5; 32]).expect("long enough")
    }

    fn owner(writer: &Identity) -> OwnerRecord {
        OwnerRecord {
            origin: 9,
            kind: "counter".into(),
            kind_version: "1.0".into(),
            node: node_id_text(writer.entity_id()),
            epoch: 2,
            snapshot: SnapshotRef {
                object: "0000000000000009.2.10".into(),
                digest: [3; 32],
                sealed_epoch: 2,
                input_seq: 10,
                output_stream_seq: 4,
                output_seq: 10,
                bytes: 100,
            },
            halted: None,
            moves: 1,
            writer: node_id_text(writer.entity_id()),
        }
    }

    /// Recomputes the MAC, as a member of the cluster could.
    fn remac(bytes: &mut [u8], keys: &ClusterKeys) {
        let at = bytes.len() - MAC_BYTES;
        let mac = keys.record_mac(&bytes[..at]);
        bytes[at..].copy_from_slice(&mac);
    }

    #[test]
    fn an_owner_record_round_trips() {
        let writer = Identity::from_seed([1; 32]);
        let bytes = seal_record(RecordKind::Owner, &owner(&writer), &writer, &keys());
        assert_eq!(open_owner(9, &bytes, &keys()).expect("valid"), owner(&writer));
    }

    #[test]
    fn a_record_from_outside_the_cluster_is_refused() {
        let writer = Identity::from_seed([1; 32]);
        let other = ClusterKeys::derive(&[6; 32]).expect("long enough");
        let bytes = seal_record(RecordKind::Owner, &owner(&writer), &writer, &other);
        assert_eq!(open_owner(9, &bytes, &keys()), Err(RecordError::NotFromAMember));
    }

    #[test]
    fn an_unsigned_or_resigned_record_is_refused_even_with_a_valid_mac() {
        let writer = Identity::from_seed([1; 32]);
        let mut bytes = seal_record(RecordKind::Owner, &owner(&writer), &writer, &keys());
        let signature_at = bytes.len() - MAC_BYTES - SIGNATURE_BYTES;
        bytes[signature_at..signature_at + SIGNATURE_BYTES].fill(0);
        remac(&mut bytes, &keys());
        assert!(matches!(
            open_owner(9, &bytes, &keys()),
            Err(RecordError::BadSignature { .. })
        ));
        // A plain CBOR body with no envelope at all.
        let plain = minicbor::to_vec(owner(&writer)).expect("encodes");
        assert!(matches!(
            open_owner(9, &plain, &keys()),
            Err(RecordError::NotARecord | RecordError::Truncated { .. })
        ));
    }

    #[test]
    fn a_record_signed_by_one_node_naming_another_writer_is_refused() {
        let writer = Identity::from_seed([1; 32]);
        let impostor = Identity::from_seed([2; 32]);
        let bytes = seal_record(RecordKind::Owner, &owner(&writer), &impostor, &keys());
        assert!(matches!(
            open_owner(9, &bytes, &keys()),
            Err(RecordError::WriterMismatch { .. })
        ));
        assert!(matches!(
            open_owner(
                10,
                &seal_record(RecordKind::Owner, &owner(&writer), &writer, &keys()),
                &keys()
            ),
            Err(RecordError::OriginMismatch { key: 10, record: 9 })
        ));
    }

    #[test]
    fn a_node_entry_is_not_an_owner_record() {
        let writer = Identity::from_seed([1; 32]);
        let entry = NodeEntry {
            node: node_id_text(writer.entity_id()),
            http: "127.0.0.1:1".into(),
            kinds: vec!["counter".into()],
            capabilities: vec![],
            hosted: 0,
            draining: false,
            started_at_ms: 1,
        };
        let bytes = seal_record(RecordKind::Node, &entry, &writer, &keys());
        assert_eq!(open_node(&bytes, &keys()).expect("valid"), entry);
        assert!(matches!(
            open_owner(9, &bytes, &keys()),
            Err(RecordError::WrongKind {
                expected: 1,
                found: 2
            })
        ));
    }

    proptest::proptest! {
        /// Structure-aware: mutate any byte or length of a valid record and
        /// re-seal its MAC; the reader answers with a typed error or the
        /// unchanged record, never a panic.
        #[test]
        fn mutated_records_with_a_valid_mac_never_panic(
            at in 0usize..400, value in proptest::num::u8::ANY, cut in 0usize..40, resign in proptest::bool::ANY,
        ) {
            let writer = Identity::from_seed([1; 32]);
            let keys = keys();
            let original = seal_record(RecordKind::Owner, &owner(&writer), &writer, &keys);
            let mut bytes = original.clone();
            let body_end = bytes.len() - TRAILER_BYTES;
            let at = at % body_end;
            bytes[at] = value;
            if resign {
                // Re-sign the mutated body so the decoder itself is attacked.
                let signature = writer.keypair().sign(&signed_message(&bytes[..body_end + SIGNER_BYTES]));
                bytes[body_end + SIGNER_BYTES..body_end + SIGNER_BYTES + SIGNATURE_BYTES]
                    .copy_from_slice(&signature.to_bytes());
            }
            let keep = bytes.len().saturating_sub(cut);
            bytes.truncate(keep);
            if bytes.len() >= MAC_BYTES {
                remac(&mut bytes, &keys);
            }
            let opened = open_owner(9, &bytes, &keys);
            if !resign {
                // Without a new signature only the untouched record opens.
                proptest::prop_assert_eq!(opened.is_ok(), bytes == original);
            }
            if let Ok(record) = opened {
                proptest::prop_assert_eq!(record.origin, 9);
            }
        }
    }
}
