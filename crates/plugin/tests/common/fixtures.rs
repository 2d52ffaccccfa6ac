//! Paths of the fixture bundles (spec §10.1), for test binaries that declare
//! `#[macro_use] mod fixtures;`.
#![allow(
    dead_code,
    unreachable_pub,
    reason = "each test binary uses a different subset; the helpers are pub for the external compatibility suite (spec §10.1)"
)]

use std::path::PathBuf;

/// The bundle directory of `reload-plugin` 1.0.0 (answers 100).
pub const RELOAD_V1_DIR: &str = concat!(
    env!("CARGO_TARGET_TMPDIR"),
    "/holdfast-fixtures/bundles/reload-v1"
);
/// The bundle directory of `reload-plugin` 2.0.0 (answers 200).
pub const RELOAD_V2_DIR: &str = concat!(
    env!("CARGO_TARGET_TMPDIR"),
    "/holdfast-fixtures/bundles/reload-v2"
);

fn library_in(dir: &str, stem: &str) -> PathBuf {
    PathBuf::from(dir).join(format!(
        "{}{stem}{}",
        std::env::consts::DLL_PREFIX,
        std::env::consts::DLL_SUFFIX
    ))
}

/// The v1 library inside its bundle.
pub fn v1_so_path() -> PathBuf {
    library_in(RELOAD_V1_DIR, "reload_plugin_v1")
}

/// The v2 library inside its bundle.
pub fn v2_so_path() -> PathBuf {
    library_in(RELOAD_V2_DIR, "reload_plugin_v2")
}
