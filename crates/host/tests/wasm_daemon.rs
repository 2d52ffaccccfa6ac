//! A WASM daemon kind in the node (issue 14): the `wasmcounter` kind, a
//! Rust guest built for `wasm32-unknown-unknown`, runs in `holdfast run`
//! exactly like a native kind: every event is journaled and processed once,
//! its count survives a hot reload (state carried through its state hooks)
//! and a restart of the node (snapshot plus journal replay); a trap or an
//! endless loop in the module fails that event and the node goes on.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use common::{Dirs, all_outputs, count_of, feed, spawn};
use holdfast_plugin_abi::BundleId;

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Builds the WASM fixtures (installing the target with rustup when it is
/// missing; failing loudly when it cannot be had); the daemon's module.
fn daemon_module() -> Vec<u8> {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    let dir = BUILT.get_or_init(|| {
        let target = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("holdfast-wasm-fixtures-host");
        let build = || {
            Command::new(env!("CARGO"))
                .args([
                    "build",
                    "--release",
                    "--quiet",
                    "--target",
                    "wasm32-unknown-unknown",
                ])
                .arg("--manifest-path")
                .arg(workspace_root().join("fixtures/plugins/wasm/Cargo.toml"))
                .arg("--target-dir")
                .arg(&target)
                .output()
                .expect("cargo starts")
        };
        let mut output = build();
        if !output.status.success() {
            let added = Command::new("rustup")
                .args(["target", "add", "wasm32-unknown-unknown"])
                .output()
                .expect("rustup starts");
            assert!(
                added.status.success(),
                "the WASM fixtures need wasm32-unknown-unknown and `rustup target add` failed: {}",
                String::from_utf8_lossy(&added.stderr)
            );
            output = build();
        }
        assert!(
            output.status.success(),
            "building the WASM fixtures failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        target.join("wasm32-unknown-unknown/release")
    });
    std::fs::read(dir.join("wasm_daemon_counter.wasm")).unwrap()
}

/// Installs the WASM counter as the plugins directory's bundle `wasmcounter`.
fn install(dirs: &Dirs) {
    let dest = dirs.plugins().join("wasmcounter");
    std::fs::create_dir_all(&dest).unwrap();
    std::fs::write(dest.join("daemon.wasm"), daemon_module()).unwrap();
    let manifest = format!(
        "loader = \"wasm\"\nname = \"wasm-daemon-counter\"\nid = \"{}\"\nversion = \"1.0.0\"\nfile = \"daemon.wasm\"\nprovides = [\"daemon.wasmcounter@1\"]\n\n[function_count]\n\"daemon.wasmcounter@1\" = 1\n",
        BundleId::new("wasm-daemon-counter")
    );
    std::fs::write(dest.join("manifest.toml"), manifest).unwrap();
}

fn counts(node: &holdfast_host::Node, origin: &str) -> Vec<u64> {
    all_outputs(node, origin)
        .iter()
        .map(|output| count_of(&output.payload))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wasm_daemon_kind_runs_survives_a_reload_and_a_restart_with_its_count() {
    let dirs = Dirs::new(&[]);
    install(&dirs);
    let node = dirs.open().await;
    let spawned = node.spawn("wasmcounter", serde_json::Value::Null).await.unwrap();
    assert_eq!(
        (spawned.kind.as_str(), spawned.kind_version.as_str()),
        ("wasmcounter", "1.0")
    );
    let origin = spawned.origin;
    feed(&node, &origin, 3).await;
    assert_eq!(counts(&node, &origin), vec![1, 2, 3]);

    node.reload("wasm-daemon-counter").await.unwrap();
    feed(&node, &origin, 2).await;
    assert_eq!(
        counts(&node, &origin),
        vec![1, 2, 3, 4, 5],
        "the reload carried the count"
    );

    node.drain().await.unwrap();
    drop(node);
    let node = dirs.open().await;
    feed(&node, &origin, 1).await;
    assert_eq!(
        counts(&node, &origin),
        vec![1, 2, 3, 4, 5, 6],
        "the restart carried the count"
    );
    let other = spawn(&node, "wasmcounter").await;
    feed(&node, &other, 1).await;
    assert_eq!(counts(&node, &other), vec![1]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_trapping_or_looping_wasm_daemon_fails_its_event_and_the_node_goes_on() {
    let dirs = Dirs::new(&[]);
    install(&dirs);
    let node = dirs.open().await;
    let origin = spawn(&node, "wasmcounter").await;
    for event in ["tick", "trap", "spin", "tick"] {
        node.send(&origin, bytes::Bytes::from_static(event.as_bytes()), None)
            .await
            .unwrap();
    }
    common::wait_processed(&node, &origin, 4).await;
    let view = node.daemon(&origin).unwrap();
    assert_eq!(
        (view.events_failed, view.status),
        (2, holdfast_host::DaemonStatus::Running)
    );
    assert_eq!(counts(&node, &origin), vec![1, 2]);
}
