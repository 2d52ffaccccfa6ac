//! `holdfast inspect` and `holdfast check` on an image written by the
//! published ic-memory 0.5.1: the ledger is recognised as ic-memory's (not
//! "bytes of another store … restore the image from a backup"), its
//! records, generations and schema history are shown with the news that the
//! next boot adopts it, `check` says the boot would adopt it, and neither
//! command changes a byte. After a holdfast boot, `inspect` says it was
//! adopted.

mod common;

use common::ic_images::{decl, ic_boot, ic_retire};
use common::{assert_exit, file_memory, holdfast, ic_memory_image, json, stdout};
use holdfast_memory::stable_structures::VectorMemory;
use holdfast_memory::{
    AcceptAllPolicy, AllocationDeclaration, DeclarationSnapshot, MemoryRuntime, SchemaMetadata,
};
use serde_json::Value;

fn declarations() -> DeclarationSnapshot {
    DeclarationSnapshot::new(vec![
        AllocationDeclaration::memory_manager_with_schema(
            "app.orders.v1",
            11,
            "Orders",
            SchemaMetadata::new(Some(2), Some("o2".into())).expect("valid"),
        )
        .expect("valid"),
        AllocationDeclaration::memory_manager("app.audit.v1", 12, "Audit").expect("valid"),
    ])
    .expect("unique")
}

#[test]
fn inspect_shows_an_ic_memory_ledger_and_that_the_next_boot_adopts_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let image = dir.path().join("image.bin");
    ic_memory_image(&image);
    let path = image.to_str().expect("utf-8 path");

    let output = holdfast(&["inspect", path], &image);
    assert_exit(&output, 0);
    let text = stdout(&output);
    assert!(
        text.contains("ic-memory 0.5 ledger (pending): ID 0 holds a ledger written by ic-memory 0.5"),
        "{text}"
    );
    assert!(text.contains("adopts it at the next boot"), "{text}");
    assert!(!text.contains("restore the image"), "{text}");
    assert!(text.contains("allocations at generation 5:"), "{text}");
    for key in [
        "ic_memory.ledger.v1",
        "app.users.v1",
        "app.orders.v1",
        "app.audit.v1",
    ] {
        assert!(text.contains(key), "{key} missing from {text}");
    }
    assert!(text.contains("schema history:"), "{text}");
    assert!(
        text.contains("ledger commit store: none yet (the adopting boot writes it)"),
        "{text}"
    );

    let report = json(&holdfast(&["inspect", path, "--json"], &image));
    assert_eq!(report["ic_memory"]["state"], "pending");
    assert_eq!(report["ic_memory"]["generation"], 5);
    assert_eq!(report["ic_memory"]["slots"][0]["generation"], 4);
    assert_eq!(report["ic_memory"]["slots"][1]["generation"], 5);
    assert_eq!(report["ledger_error"], Value::Null);
    assert_eq!(report["ledger"]["current_generation"], 5);
    assert_eq!(report["ledger"]["generation_count"], 5);
    let records = report["ledger"]["records"].as_array().expect("records");
    let record = |key: &str| {
        records
            .iter()
            .find(|r| r["stable_key"] == key)
            .unwrap_or_else(|| panic!("{key}"))
    };
    assert_eq!(record("app.users.v1")["state"], "retired");
    assert_eq!(record("app.users.v1")["retired_generation"], 4);
    assert_eq!(record("app.audit.v1")["state"], "active");
    assert_eq!(record("app.audit.v1")["first_generation"], 2);
    let orders_schema: Vec<(u64, u64, String)> = record("app.orders.v1")["schema_history"]
        .as_array()
        .expect("schema history")
        .iter()
        .map(|e| {
            (
                e["generation"].as_u64().expect("generation"),
                e["schema_version"].as_u64().expect("version"),
                e["schema_fingerprint"].as_str().expect("fingerprint").to_owned(),
            )
        })
        .collect();
    assert_eq!(orders_schema, [(1, 1, "o1".to_owned()), (3, 2, "o2".to_owned())]);
}

#[test]
fn check_says_the_boot_adopts_the_ic_memory_ledger_and_a_boot_does() {
    let dir = tempfile::tempdir().expect("temp dir");
    let image = dir.path().join("image.bin");
    ic_memory_image(&image);
    let declarations_path = dir.path().join("declarations.json");
    std::fs::write(&declarations_path, declarations().to_json()).expect("write declarations");
    let (path, declarations_arg) = (
        image.to_str().expect("utf-8 path"),
        declarations_path.to_str().expect("utf-8 path"),
    );

    let output = holdfast(&["check", path, "--declarations", declarations_arg], &image);
    assert_exit(&output, 0);
    let text = stdout(&output);
    assert!(
        text.contains("an accepted boot adopts an ic-memory 0.5 ledger at generation 5"),
        "{text}"
    );
    assert!(text.contains("ACCEPTED: the boot commits generation 6"), "{text}");
    let report = json(&holdfast(
        &["check", path, "--declarations", declarations_arg, "--json"],
        &image,
    ));
    assert_eq!(report["adoption"]["generation"], 5);
    assert_eq!(report["current_generation"], 5);

    MemoryRuntime::bootstrap(file_memory(&image), declarations(), &AcceptAllPolicy).expect("the boot adopts");
    let report = json(&holdfast(&["inspect", path, "--json"], &image));
    assert_eq!(report["ic_memory"]["state"], "adopted");
    assert_eq!(report["ic_memory"]["generation"], 5);
    assert_eq!(report["ledger"]["current_generation"], 6);
    assert_eq!(report["commit_store"]["authoritative_generation"], 6);
    let report = json(&holdfast(
        &["check", path, "--declarations", declarations_arg, "--json"],
        &image,
    ));
    assert_eq!(report["adoption"], Value::Null);
    assert_eq!(report["next_generation"], Value::Null);
}

#[test]
fn an_ic_memory_ledger_holdfast_cannot_adopt_exits_2_naming_why() {
    let dir = tempfile::tempdir().expect("temp dir");
    let image = dir.path().join("image.bin");
    let memory = VectorMemory::default();
    ic_boot(&memory, &[decl("app.users.v1", 10)], None, None).expect("boot");
    // ic-memory 0.5.1 accepts retiring its own ledger's key; holdfast's
    // integrity rules refuse that history.
    ic_retire(&memory, "ic_memory.ledger.v1", 0).expect("retire");
    std::fs::write(&image, memory.borrow().as_slice()).expect("write the image");
    let declarations_path = dir.path().join("declarations.json");
    std::fs::write(&declarations_path, declarations().to_json()).expect("write declarations");
    let path = image.to_str().expect("utf-8 path");
    for args in [
        vec!["inspect", path],
        vec![
            "check",
            path,
            "--declarations",
            declarations_path.to_str().expect("utf-8 path"),
        ],
    ] {
        let output = holdfast(&args, &image);
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        let all = format!("{}{}", stdout(&output), String::from_utf8_lossy(&output.stderr));
        assert!(
            all.contains("holds a ledger written by ic-memory 0.5 that holdfast-memory cannot adopt"),
            "{args:?}: {all}"
        );
        assert!(
            all.contains("must be active on MemoryManager ID 0"),
            "{args:?}: {all}"
        );
    }
}
