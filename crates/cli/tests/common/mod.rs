//! Helpers shared by the `holdfast` binary's integration tests: running the
//! real binary while proving it left the image it names untouched, reading
//! its output, opening an image file as stable memory, and the ic-memory
//! 0.5.1 history several tests inspect. Nothing here decides what a test
//! expects; each test states its own exit codes and messages.
#![allow(dead_code, reason = "each test binary uses a different subset")]

#[path = "../../../memory/tests/common/ic_memory.rs"]
pub(crate) mod ic_images;

use std::fs::OpenOptions;
use std::path::Path;
use std::process::{Command, Output};

use holdfast_memory::stable_structures::{FileMemory, VectorMemory};
use serde_json::Value;
use sha2::{Digest, Sha256};

use ic_images::{decl, decl_schema, ic_boot, ic_reserve, ic_retire};

/// The image file at `path` as stable memory, created empty if missing.
pub(crate) fn file_memory(path: &Path) -> FileMemory {
    FileMemory::new(
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .expect("open the image file"),
    )
}

/// The SHA-256 of the file at `path`, or `None` when it cannot be read (a
/// test may name a missing image on purpose).
pub(crate) fn sha256(path: &Path) -> Option<Vec<u8>> {
    std::fs::read(path)
        .ok()
        .map(|bytes| Sha256::digest(bytes).to_vec())
}

/// Runs the binary with `args` and asserts the image it names is unchanged
/// and that it did not panic.
pub(crate) fn holdfast(args: &[&str], image: &Path) -> Output {
    let before = sha256(image);
    let output = Command::new(env!("CARGO_BIN_EXE_holdfast"))
        .args(args)
        .output()
        .expect("run holdfast");
    assert_eq!(sha256(image), before, "holdfast {args:?} changed the image");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !stderr.contains("panicked") && !stderr.contains("RUST_BACKTRACE"),
        "{stderr}"
    );
    output
}

/// Asserts the run exited with `code`, showing its stderr when it did not.
pub(crate) fn assert_exit(output: &Output, code: i32) {
    assert_eq!(
        output.status.code(),
        Some(code),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

pub(crate) fn stdout(output: &Output) -> String {
    String::from_utf8(output.stdout.clone()).expect("holdfast writes UTF-8")
}

pub(crate) fn stderr(output: &Output) -> String {
    String::from_utf8(output.stderr.clone()).expect("holdfast writes UTF-8")
}

/// The run's stdout as JSON.
pub(crate) fn json(output: &Output) -> Value {
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|err| panic!("{err}: {}", String::from_utf8_lossy(&output.stdout)))
}

/// Writes to `path` five generations by the published ic-memory 0.5.1: a
/// boot, a reservation, a boot that changes a schema and activates the
/// reservation, a retirement, a boot.
pub(crate) fn ic_memory_image(path: &Path) {
    let memory = VectorMemory::default();
    ic_boot(
        &memory,
        &[
            decl("app.users.v1", 10),
            decl_schema("app.orders.v1", 11, 1, Some("o1")),
        ],
        Some("build-1"),
        None,
    )
    .expect("boot 1");
    ic_reserve(&memory, &[decl("app.audit.v1", 12)]).expect("reserve");
    let later = [
        decl("app.users.v1", 10),
        decl_schema("app.orders.v1", 11, 2, Some("o2")),
        decl("app.audit.v1", 12),
    ];
    ic_boot(&memory, &later, Some("build-2"), None).expect("boot 3");
    ic_retire(&memory, "app.users.v1", 10).expect("retire");
    ic_boot(&memory, &later[1..], Some("build-2"), None).expect("boot 5");
    std::fs::write(path, memory.borrow().as_slice()).expect("write the image");
}
