//! The names a cluster uses in JetStream: streams, subjects, buckets.
//!
//! These names are part of the on-engine format (docs/FORMAT.md): two
//! binaries that spell them differently do not share a cluster. This module
//! only names things; it never talks to the server.

use crate::error::ClusterError;

/// The longest cluster name accepted (it appears in every subject).
pub const MAX_CLUSTER_NAME: usize = 32;

/// The engine objects of one cluster named `C` (cluster.md §3).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    name: String,
}

impl Layout {
    /// The layout of the cluster `name`.
    ///
    /// # Errors
    /// `InvalidClusterName` unless `name` is 1 to 32 characters of
    /// `[A-Za-z0-9_-]` (it becomes a subject token and part of stream names,
    /// where `.`, `*`, `>` and spaces have meaning).
    pub fn new(name: &str) -> Result<Self, ClusterError> {
        let valid = !name.is_empty()
            && name.len() <= MAX_CLUSTER_NAME
            && name
                .bytes()
                .all(|byte| byte.is_ascii_alphanumeric() || byte == b'_' || byte == b'-');
        if !valid {
            return Err(ClusterError::InvalidClusterName {
                name: name.to_owned(),
            });
        }
        Ok(Self {
            name: name.to_owned(),
        })
    }

    /// The cluster's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The stream of accepted inputs, `HF_C_IN`.
    pub fn inputs_stream(&self) -> String {
        format!("HF_{}_IN", self.name)
    }

    /// The stream of outputs, `HF_C_OUT`.
    pub fn outputs_stream(&self) -> String {
        format!("HF_{}_OUT", self.name)
    }

    /// The input subject of one daemon, `hf.C.in.<origin>`.
    pub fn input_subject(&self, origin: u64) -> String {
        format!("hf.{}.in.{origin:016x}", self.name)
    }

    /// The subject the server republishes one daemon's stored inputs on,
    /// `hf.C.live.<origin>` (the inputs stream's republish destination;
    /// the owner subscribes to it instead of keeping a consumer).
    pub fn live_input_subject(&self, origin: u64) -> String {
        format!("hf.{}.live.{origin:016x}", self.name)
    }

    /// The inputs stream's republish destination, mapping
    /// `hf.C.in.<origin>` to [`live_input_subject`](Self::live_input_subject).
    pub fn all_live_inputs(&self) -> String {
        format!("hf.{}.live.{{{{wildcard(1)}}}}", self.name)
    }

    /// The output subject of one daemon, `hf.C.out.<origin>`.
    pub fn output_subject(&self, origin: u64) -> String {
        format!("hf.{}.out.{origin:016x}", self.name)
    }

    /// Every input subject (the inputs stream's filter).
    pub fn all_inputs(&self) -> String {
        format!("hf.{}.in.*", self.name)
    }

    /// Every output subject (the outputs stream's filter).
    pub fn all_outputs(&self) -> String {
        format!("hf.{}.out.*", self.name)
    }

    /// The control subject a node answers requests on (moves asked of the
    /// owner by another node), `hf.C.ctl.<node>`.
    pub fn control_subject(&self, node: &str) -> String {
        format!("hf.{}.ctl.{node}", self.name)
    }

    /// The subject a node receives the snapshots of planned moves to it
    /// on, handed over directly by their old owner, `hf.C.handoff.<node>`.
    pub fn handoff_subject(&self, node: &str) -> String {
        format!("hf.{}.handoff.{node}", self.name)
    }

    /// The ownership bucket, `HF_C_OWNERS`.
    pub fn owners_bucket(&self) -> String {
        format!("HF_{}_OWNERS", self.name)
    }

    /// The live-nodes bucket, `HF_C_NODES`.
    pub fn nodes_bucket(&self) -> String {
        format!("HF_{}_NODES", self.name)
    }

    /// The snapshot object store, `HF_C_SNAPSHOTS`.
    pub fn snapshots_bucket(&self) -> String {
        format!("HF_{}_SNAPSHOTS", self.name)
    }
}

/// An origin as keys and the API show it: 16 lower-case hex digits.
pub fn origin_key(origin: u64) -> String {
    format!("{origin:016x}")
}

/// Parses [`origin_key`]'s form back.
pub fn parse_origin_key(key: &str) -> Option<u64> {
    (key.len() == 16)
        .then(|| u64::from_str_radix(key, 16).ok())
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_format() {
        let layout = Layout::new("prod-1").expect("valid");
        assert_eq!(layout.inputs_stream(), "HF_prod-1_IN");
        assert_eq!(layout.input_subject(0xab), "hf.prod-1.in.00000000000000ab");
        assert_eq!(layout.output_subject(1), "hf.prod-1.out.0000000000000001");
        assert_eq!(layout.live_input_subject(0xab), "hf.prod-1.live.00000000000000ab");
        assert_eq!(layout.all_live_inputs(), "hf.prod-1.live.{{wildcard(1)}}");
        assert_eq!(layout.handoff_subject("ab12"), "hf.prod-1.handoff.ab12");
        assert_eq!(layout.owners_bucket(), "HF_prod-1_OWNERS");
        assert_eq!(layout.snapshots_bucket(), "HF_prod-1_SNAPSHOTS");
    }

    #[test]
    fn names_with_subject_syntax_are_refused() {
        for bad in ["", "a.b", "a*", "a>", "a b", &"x".repeat(33)] {
            assert!(
                matches!(Layout::new(bad), Err(ClusterError::InvalidClusterName { .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn origin_keys_round_trip() {
        assert_eq!(parse_origin_key(&origin_key(u64::MAX)), Some(u64::MAX));
        assert_eq!(parse_origin_key("12"), None);
        assert_eq!(parse_origin_key("zzzzzzzzzzzzzzzz"), None);
    }
}
