//! WASM test support: builds the Rust guests of `fixtures/plugins/wasm` for
//! `wasm32-unknown-unknown` once per process (installing the target with
//! rustup when it is missing, and failing loudly when it cannot be had),
//! writes their bundles, and writes bundles of hand-written WAT modules.
#![allow(
    dead_code,
    unreachable_pub,
    reason = "each test binary uses a different subset"
)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use holdfast_plugin::{Runtime, WasmConfig, WasmLoader};
use holdfast_plugin_abi::{BundleId, RuntimeConfig};

/// A runtime with hot reload on whose `wasm` loader has `config`.
pub fn runtime_with(config: WasmConfig) -> std::sync::Arc<Runtime> {
    Runtime::builder()
        .config(RuntimeConfig {
            hot_reload_enabled: true,
            ..Default::default()
        })
        .loader(WasmLoader::new(config))
        .build()
        .expect("a runtime with the wasm loader builds")
}

/// The counter's bundle name (both versions).
pub const COUNTER_BUNDLE: &str = "wasm-counter";

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn output_of(command: &mut Command) -> std::process::Output {
    command
        .output()
        .unwrap_or_else(|error| panic!("{command:?} could not start: {error}"))
}

/// Builds the guests; the directory holding `wasm_counter_v1.wasm` and
/// `wasm_counter_v2.wasm`.
pub fn built_guests() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let root = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("holdfast-wasm-fixtures");
            std::fs::create_dir_all(&root).unwrap();
            let lock = std::fs::File::create(root.join(".lock")).unwrap();
            lock.lock().expect("the WASM fixture lock");
            let target = root.join("target");
            let build = || {
                output_of(
                    Command::new(env!("CARGO"))
                        .args(["build", "--release", "--quiet", "--target", "wasm32-unknown-unknown"])
                        .arg("--manifest-path")
                        .arg(workspace_root().join("fixtures/plugins/wasm/Cargo.toml"))
                        .arg("--target-dir")
                        .arg(&target),
                )
            };
            let mut output = build();
            if !output.status.success() {
                // Most often the target is missing: install it, then retry.
                let added = output_of(Command::new("rustup").args(["target", "add", "wasm32-unknown-unknown"]));
                assert!(
                    added.status.success(),
                    "the WASM fixtures need the wasm32-unknown-unknown target, and `rustup target add` failed:\n{}\n(the build said:\n{})",
                    String::from_utf8_lossy(&added.stderr),
                    String::from_utf8_lossy(&output.stderr)
                );
                output = build();
            }
            assert!(
                output.status.success(),
                "building the WASM fixtures failed:\n{}",
                String::from_utf8_lossy(&output.stderr)
            );
            lock.unlock().expect("the WASM fixture lock");
            target.join("wasm32-unknown-unknown/release")
        })
        .clone()
}

/// A manifest for a WASM bundle.
pub fn wasm_manifest(name: &str, version: &str, file: &str, provides: &[(&str, u32)]) -> String {
    let mut text = format!(
        "loader = \"wasm\"\nname = \"{name}\"\nid = \"{}\"\nversion = \"{version}\"\nfile = \"{file}\"\nprovides = [{}]\n\n[function_count]\n",
        BundleId::new(name),
        provides
            .iter()
            .map(|(contract, _)| format!("\"{contract}\""))
            .collect::<Vec<_>>()
            .join(", ")
    );
    for (contract, count) in provides {
        text.push_str(&format!("\"{contract}\" = {count}\n"));
    }
    text
}

/// A fresh bundle directory holding `bytes` as `file` under `manifest`.
pub fn bundle_of(file: &str, bytes: &[u8], manifest: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(file), bytes).unwrap();
    std::fs::write(dir.path().join("manifest.toml"), manifest).unwrap();
    dir
}

/// The Rust counter, version 1 (`demo.counter@1`, 3 functions) or 2 (4).
pub fn counter_bundle(version: u32) -> tempfile::TempDir {
    let (stem, bundle_version, functions) = match version {
        1 => ("wasm_counter_v1", "1.0.0", 3),
        2 => ("wasm_counter_v2", "2.0.0", 4),
        other => panic!("no counter version {other}"),
    };
    let bytes = std::fs::read(built_guests().join(format!("{stem}.wasm"))).unwrap();
    let manifest = wasm_manifest(
        COUNTER_BUNDLE,
        bundle_version,
        "counter.wasm",
        &[("demo.counter@1", functions)],
    );
    bundle_of("counter.wasm", &bytes, &manifest)
}

/// The WASM daemon kind `wasmcounter` (`daemon.wasmcounter@1`, bundle
/// `wasm-daemon-counter`), as a bundle directory.
pub fn daemon_bundle() -> tempfile::TempDir {
    let bytes = std::fs::read(built_guests().join("wasm_daemon_counter.wasm")).unwrap();
    let manifest = wasm_manifest(
        "wasm-daemon-counter",
        "1.0.0",
        "daemon.wasm",
        &[("daemon.wasmcounter@1", 1)],
    );
    bundle_of("daemon.wasm", &bytes, &manifest)
}

/// A bundle of the WAT module `wat` (compiled here) named `name`, providing
/// `provides`.
pub fn wat_bundle(name: &str, version: &str, wat: &str, provides: &[(&str, u32)]) -> tempfile::TempDir {
    let bytes = wat::parse_str(wat).unwrap_or_else(|error| panic!("the test's WAT does not parse: {error}"));
    bundle_of(
        "module.wasm",
        &bytes,
        &wasm_manifest(name, version, "module.wasm", provides),
    )
}

/// A complete guest in WAT: one memory of `pages` pages, the `holdfast`
/// imports it names, and every export of the guest ABI; `init`, `call`,
/// `save`, `restore` and `extra` are spliced in (the bodies of `hf_init`,
/// `hf_call`, `hf_save`, `hf_restore`, and extra module fields). The name
/// `"demo.counter"` is at offset 16 of the memory.
pub struct Wat<'a> {
    pub pages: u32,
    pub imports: &'a str,
    pub init: &'a str,
    pub call: &'a str,
    pub save: &'a str,
    pub restore: &'a str,
    pub extra: &'a str,
}

/// Imports `register` as `$register` and `emit` as `$emit`.
pub const BASIC_IMPORTS: &str = r#"
    (import "holdfast" "register" (func $register (param i32 i32 i32 i32 i32 i32 i32) (result i32)))
    (import "holdfast" "emit" (func $emit (param i32 i32)))
"#;

/// Registers `demo.counter@1.0.0` with 3 functions and state hooks.
pub const REGISTER_COUNTER: &str = "(drop (call $register (i32.const 16) (i32.const 12) (i32.const 1) (i32.const 0) (i32.const 0) (i32.const 3) (i32.const 1))) (i32.const 0)";

impl Default for Wat<'_> {
    fn default() -> Self {
        Self {
            pages: 1,
            imports: BASIC_IMPORTS,
            init: REGISTER_COUNTER,
            call: "(i32.const 0)",
            save: "(i32.const 0)",
            restore: "(i32.const 0)",
            extra: "",
        }
    }
}

impl Wat<'_> {
    /// The module text.
    pub fn text(&self) -> String {
        let Self {
            pages,
            imports,
            init,
            call,
            save,
            restore,
            extra,
        } = self;
        format!(
            r#"(module
    {imports}
    (memory (export "memory") {pages})
    (data (i32.const 16) "demo.counter")
    (global $next (mut i32) (i32.const 0))
    (func (export "hf_abi_version") (result i32) (i32.const 1))
    (func (export "hf_alloc") (param $size i32) (result i32) (i32.const 1024))
    (func (export "hf_init") (result i32) {init})
    (func (export "hf_create") (param $contract i32) (result i32)
        (global.set $next (i32.add (global.get $next) (i32.const 1)))
        (global.get $next))
    (func (export "hf_destroy") (param $instance i32))
    (func (export "hf_call") (param $instance i32) (param $function i32) (param $ptr i32) (param $len i32) (result i32) {call})
    (func (export "hf_save") (param $instance i32) (result i32) {save})
    (func (export "hf_restore") (param $instance i32) (param $major i32) (param $minor i32) (param $patch i32) (param $ptr i32) (param $len i32) (result i32) {restore})
    {extra}
)"#
        )
    }
}
