//! `holdfast-plugin`: loads native plugin bundles and hot-reloads them in a
//! running process without crashes, overlapping reloads or lost plugin state.
//!
//! Status: not built yet. The specification is `shared/spec/plugin.md`; this
//! crate exists so that the workspace layout is the one the specification maps.
//! It exports nothing until the loader is implemented.
