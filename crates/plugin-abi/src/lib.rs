//! `holdfast-plugin-abi`: the `repr(C)` types, IDs and C header shared by the
//! plugin host and native plugin bundles.
//!
//! Status: not built yet. The specification is `shared/spec/plugin.md` §3; this
//! crate exists so that the workspace layout is the one the specification maps.
//! It exports nothing until the ABI is implemented, so no code can depend on a
//! half-made contract.
