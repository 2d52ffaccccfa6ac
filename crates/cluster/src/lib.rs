//! holdfast-cluster: many holdfast nodes on one NATS JetStream deployment.
#![forbid(unsafe_code)]

pub mod version;
