//! What the streams and the object store carry: output-stream entries and
//! the plaintext of a sealed snapshot.
//!
//! Both are CBOR. Decoding never panics; bytes that do not decode are a
//! typed refusal for the caller to report, never a default.

use bytes::Bytes;
use minicbor::{Decode, Encode};

/// An entry on a daemon's output subject.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub enum OutputEntry {
    /// An output of the daemon's chain.
    #[n(0)]
    Output(#[n(0)] OutputEvent),
    /// A node took ownership in `epoch`: appended before its first output,
    /// so an older owner's next append fails its expected sequence (the
    /// fence that holds even when the old owner has not noticed yet).
    #[n(1)]
    Claim {
        /// The new epoch.
        #[n(0)]
        epoch: u64,
        /// The claiming node.
        #[n(1)]
        node: String,
        /// The chain sequence of the last output appended before the claim
        /// (0: none). The subject's last entry is always kept by the
        /// retention limit, so a later owner learns from it how far the
        /// chain went even when every output before it was dropped.
        /// Absent in claims written before retention existed.
        #[n(2)]
        through: Option<u64>,
    },
}

/// One output of a daemon's chain, as stored.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct OutputEvent {
    /// The chain link (`CausalLink::to_bytes`).
    #[n(0)]
    #[cbor(with = "minicbor::bytes")]
    pub link: [u8; 32],
    /// The output's payload.
    #[n(1)]
    #[cbor(with = "minicbor::bytes")]
    pub payload: Vec<u8>,
    /// When the input that produced it was received (Unix ms).
    #[n(2)]
    pub received_at: u64,
    /// The input-stream sequence that produced it.
    #[n(3)]
    pub input_seq: u64,
    /// The epoch of the node that appended it.
    #[n(4)]
    pub epoch: u64,
    /// The node that appended it.
    #[n(5)]
    pub node: String,
}

/// The plaintext inside a sealed snapshot.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct SnapshotPayload {
    /// The daemon's identity seed.
    #[n(0)]
    #[cbor(with = "minicbor::bytes")]
    pub seed: [u8; 32],
    /// Its kind.
    #[n(1)]
    pub kind: String,
    /// The kind's `major.minor` that wrote the state.
    #[n(2)]
    pub kind_version: String,
    /// The compute snapshot (`StateSnapshot::to_bytes`).
    #[n(3)]
    #[cbor(with = "minicbor::bytes")]
    pub state: Vec<u8>,
}

/// A [`SnapshotPayload`] decoded with its state borrowed from the
/// plaintext instead of copied: the same encoding.
#[derive(Debug, Decode)]
pub(crate) struct SnapshotPayloadView<'a> {
    #[n(0)]
    #[cbor(with = "minicbor::bytes")]
    pub seed: [u8; 32],
    #[n(1)]
    pub kind: String,
    /// Decoded so that a payload without it is refused, as the owned form
    /// refuses it; the restore does not use it.
    #[n(2)]
    pub _kind_version: String,
    #[b(3)]
    #[cbor(with = "minicbor::bytes")]
    pub state: &'a [u8],
}

/// Encodes any wire value.
pub fn encode<T: Encode<()>>(value: &T) -> Bytes {
    Bytes::from(minicbor::to_vec(value).expect("encoding into a Vec cannot fail"))
}

/// Appends the encoding of a wire value to `buffer` (sized by the caller:
/// a snapshot's megabytes would otherwise be copied at every doubling of a
/// growing buffer).
pub fn encode_into<T: Encode<()>>(value: &T, buffer: &mut Vec<u8>) {
    minicbor::encode(value, buffer).expect("encoding into a Vec cannot fail");
}

/// Decodes any wire value.
///
/// # Errors
/// The decoder's message.
pub fn decode<T: for<'b> Decode<'b, ()>>(bytes: &[u8]) -> Result<T, String> {
    minicbor::decode(bytes).map_err(|error| error.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An output entry as binaries before retention wrote it: a claim had
    /// no `through`.
    #[derive(Encode)]
    enum EntryBeforeRetention {
        #[n(1)]
        Claim {
            #[n(0)]
            epoch: u64,
            #[n(1)]
            node: String,
        },
    }

    #[test]
    fn a_claim_written_before_retention_decodes_without_through() {
        let old = encode(&EntryBeforeRetention::Claim {
            epoch: 4,
            node: "n1".into(),
        });
        let decoded: OutputEntry = decode(&old).expect("decodes");
        assert_eq!(
            decoded,
            OutputEntry::Claim {
                epoch: 4,
                node: "n1".into(),
                through: None
            }
        );
        let new = OutputEntry::Claim {
            epoch: 5,
            node: "n2".into(),
            through: Some(17),
        };
        assert_eq!(decode::<OutputEntry>(&encode(&new)), Ok(new));
    }
}
