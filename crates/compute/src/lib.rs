//! `holdfast-compute`: stateful event-processing daemons with cryptographic
//! identities, snapshots, and migration between nodes without losing or
//! duplicating an event.
//!
//! Status: not built yet. The specification is `shared/spec/compute.md`; this
//! crate exists so that the workspace layout is the one the specification maps.
//! It exports nothing until the runtime is implemented.
#![forbid(unsafe_code)]
