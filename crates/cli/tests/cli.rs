//! The real `holdfast` binary on images made by holdfast-memory in the test:
//! exact reports, exit codes 0/1/2, a clear message for every kind of bad
//! input, never a panic, and never a changed byte in the image.

mod common;

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{file_memory, holdfast, json, stderr, stdout};
use holdfast_memory::stable_structures::Memory;
use holdfast_memory::stable_structures::memory_manager::{MemoryId, MemoryManager};
use holdfast_memory::{AcceptAllPolicy, DeclarationCollector, DeclarationSnapshot, MemoryRuntime};

/// A fresh directory for one test.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("holdfast-cli-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn layout(entries: &[(&str, u8)]) -> DeclarationSnapshot {
    let mut collector = DeclarationCollector::new();
    for (key, id) in entries {
        collector = collector.with_memory_manager(key, *id, "Store").unwrap();
    }
    collector.seal().unwrap()
}

/// An image with two generations: users and orders, then audit added; users
/// holds one page of data.
fn governed_image(path: &Path) {
    let v1 = MemoryRuntime::bootstrap(
        file_memory(path),
        layout(&[("app.users.v1", 100), ("app.orders.v1", 101)]),
        &AcceptAllPolicy,
    )
    .unwrap();
    let users = v1.open("app.users.v1", 100).unwrap();
    users.grow(1);
    users.write(0, b"alice");
    drop((users, v1));
    MemoryRuntime::bootstrap(
        file_memory(path),
        layout(&[
            ("app.users.v1", 100),
            ("app.orders.v1", 101),
            ("app.audit.v1", 102),
        ]),
        &AcceptAllPolicy,
    )
    .unwrap();
}

#[test]
fn inspect_reports_header_slots_records_generations_and_warnings() {
    let scratch = Scratch::new("inspect");
    let image = scratch.path("image.bin");
    governed_image(&image);
    let s = |p: &Path| p.to_str().unwrap().to_owned();

    let output = holdfast(&["inspect", &s(&image), "--json"], &image);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let report = json(&output);
    assert_eq!(report["memory_manager"]["layout_version"], 1);
    assert_eq!(report["memory_manager"]["bucket_size_in_pages"], 128);
    let ids: Vec<u64> = report["memory_manager"]["memories"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, [0, 100]);
    assert_eq!(report["commit_store"]["authoritative_generation"], 2);
    assert_eq!(report["commit_store"]["slots"][0]["state"], "valid");
    assert_eq!(report["commit_store"]["slots"][0]["generation"], 1);
    assert_eq!(report["commit_store"]["slots"][1]["generation"], 2);
    assert_eq!(report["ledger"]["current_generation"], 2);
    assert_eq!(report["ledger"]["generation_count"], 2);
    let records = report["ledger"]["records"].as_array().unwrap();
    let keys: Vec<&str> = records
        .iter()
        .map(|r| r["stable_key"].as_str().unwrap())
        .collect();
    assert_eq!(
        keys,
        [
            "ic_memory.ledger.v1",
            "app.users.v1",
            "app.orders.v1",
            "app.audit.v1"
        ]
    );
    assert_eq!(records[1]["memory_id"], 100);
    assert_eq!(records[1]["state"], "active");
    assert_eq!(records[1]["live_bytes"], 65536);
    assert_eq!(records[3]["first_generation"], 2);
    let warnings: Vec<(&str, u64)> = report["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| (w["kind"].as_str().unwrap(), w["memory_id"].as_u64().unwrap()))
        .collect();
    assert_eq!(warnings, [("empty_record", 101), ("empty_record", 102)]);
    assert!(
        report["image"]["bytes_read"].as_u64().unwrap() < 300_000,
        "reads only the pages it needs"
    );

    let human = holdfast(&["inspect", &s(&image)], &image);
    assert_eq!(human.status.code(), Some(0));
    let text = stdout(&human);
    for needle in [
        "layout v1, bucket size 128 pages",
        "authoritative",
        "app.audit.v1",
        "generations: 2 committed",
        "[empty_record]",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in\n{text}");
    }
    assert!(
        !text.contains('\u{1b}'),
        "no colour when stdout is not a terminal"
    );
}

#[test]
fn inspect_warns_about_unowned_memories_the_governance_range_and_a_partial_page() {
    let scratch = Scratch::new("unowned");
    let image = scratch.path("image.bin");
    governed_image(&image);
    let manager = MemoryManager::init(file_memory(&image));
    manager.get(MemoryId::new(140)).grow(1);
    manager.get(MemoryId::new(5)).grow(1);
    drop(manager);
    let mut file = OpenOptions::new().append(true).open(&image).unwrap();
    std::io::Write::write_all(&mut file, b"tail").unwrap();
    drop(file);
    let output = holdfast(&["inspect", image.to_str().unwrap(), "--json"], &image);
    let kinds: Vec<(String, u64)> = json(&output)["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|w| Some((w["kind"].as_str()?.to_owned(), w["memory_id"].as_u64()?)))
        .collect();
    assert!(kinds.contains(&("unowned_memory".into(), 140)), "{kinds:?}");
    assert!(
        kinds.contains(&("governance_range_in_use".into(), 5)),
        "{kinds:?}"
    );
}

#[test]
fn check_accepts_reports_changes_and_refuses_with_every_conflict() {
    let scratch = Scratch::new("check");
    let image = scratch.path("image.bin");
    governed_image(&image);
    let declarations = scratch.path("next.json");
    let s = |p: &Path| p.to_str().unwrap().to_owned();

    std::fs::write(
        &declarations,
        layout(&[("app.users.v1", 100), ("app.orders.v1", 101), ("app.new.v1", 110)]).to_json(),
    )
    .unwrap();
    let output = holdfast(
        &["check", &s(&image), "--declarations", &s(&declarations), "--json"],
        &image,
    );
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let report = json(&output);
    assert_eq!(report["verdict"], "accepted");
    assert_eq!(report["next_generation"], 3);
    let changes: Vec<(&str, &str)> = report["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["kind"].as_str().unwrap(), c["stable_key"].as_str().unwrap()))
        .collect();
    assert_eq!(
        changes,
        [("new_allocation", "app.new.v1"), ("omitted_kept", "app.audit.v1")]
    );

    std::fs::write(
        &declarations,
        layout(&[
            ("app.users.v1", 100),
            ("app.orders.v1", 101),
            ("app.audit.v1", 102),
        ])
        .to_json(),
    )
    .unwrap();
    let output = holdfast(
        &["check", &s(&image), "--declarations", &s(&declarations)],
        &image,
    );
    assert_eq!(output.status.code(), Some(0));
    assert!(
        stdout(&output)
            .contains("ACCEPTED: nothing changes: the boot commits no generation and writes nothing"),
        "{}",
        stdout(&output)
    );

    std::fs::write(
        &declarations,
        layout(&[
            ("app.users.v1", 101),
            ("app.orders.v1", 100),
            ("app.audit.v1", 103),
        ])
        .to_json(),
    )
    .unwrap();
    let output = holdfast(
        &["check", &s(&image), "--declarations", &s(&declarations), "--json"],
        &image,
    );
    assert_eq!(output.status.code(), Some(1));
    let report = json(&output);
    assert_eq!(report["verdict"], "refused");
    let conflicts = report["conflicts"].as_array().unwrap();
    let summary: Vec<(&str, &str, &str, u64)> = conflicts
        .iter()
        .map(|c| {
            (
                c["kind"].as_str().unwrap(),
                c["stable_key"].as_str().unwrap(),
                c["recorded"]["stable_key"].as_str().unwrap(),
                c["recorded"]["memory_id"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("key_moved", "app.users.v1", "app.users.v1", 100),
            ("key_moved", "app.orders.v1", "app.orders.v1", 101),
            ("key_moved", "app.audit.v1", "app.audit.v1", 102),
        ]
    );
    let human = holdfast(
        &["check", &s(&image), "--declarations", &s(&declarations)],
        &image,
    );
    assert_eq!(human.status.code(), Some(1));
    let text = stdout(&human);
    assert!(text.contains("REFUSED: 3 conflicts"), "{text}");
    assert!(
        text.contains("history: app.users.v1 on MemoryManager ID 100 (active, generations 1..=2)"),
        "{text}"
    );
}

/// A declarations file that puts a key on ID 0, or the ledger's own key with
/// another label or ID, is refused like any other conflict (it used to panic).
#[test]
fn check_refuses_declarations_that_take_the_ledgers_key_or_id_without_panicking() {
    let scratch = Scratch::new("check-ledger-slot");
    let image = scratch.path("image.bin");
    governed_image(&image);
    let declarations = scratch.path("next.json");
    let s = |p: &Path| p.to_str().unwrap().to_owned();
    let cases: [(&str, u8, &str, &str); 3] = [
        ("app.users.v1", 0, "Users", "policy"),
        ("ic_memory.ledger.v1", 0, "Relabelled", "reserved_key"),
        ("ic_memory.ledger.v1", 7, "MemoryLayoutLedger", "reserved_key"),
    ];
    for (key, id, label, kind) in cases {
        let snapshot = DeclarationCollector::new()
            .with_memory_manager(key, id, label)
            .unwrap()
            .seal()
            .unwrap();
        std::fs::write(&declarations, snapshot.to_json()).unwrap();
        let output = holdfast(
            &["check", &s(&image), "--declarations", &s(&declarations), "--json"],
            &image,
        );
        assert_eq!(
            output.status.code(),
            Some(1),
            "{key} on {id}: {}",
            stderr(&output)
        );
        let report = json(&output);
        assert_eq!(report["verdict"], "refused");
        let kinds: Vec<&str> = report["conflicts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["kind"].as_str().unwrap())
            .collect();
        assert_eq!(kinds, [kind], "{key} on {id}");
    }
}

/// Deterministic noise for the corpus.
fn noise(len: usize, mut seed: u64) -> Vec<u8> {
    (0..len)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed as u8
        })
        .collect()
}

#[test]
fn every_unreadable_image_exits_2_with_its_own_message() {
    let scratch = Scratch::new("corpus");
    let good = scratch.path("good.bin");
    governed_image(&good);
    let good_bytes = std::fs::read(&good).unwrap();
    let mut cases: Vec<(&str, Option<Vec<u8>>, &str)> = vec![
        ("missing", None, "cannot open"),
        (
            "empty",
            Some(Vec::new()),
            "smaller than one 64 KiB stable-memory page",
        ),
        (
            "tiny",
            Some(good_bytes[..1000].to_vec()),
            "smaller than one 64 KiB stable-memory page",
        ),
        ("zeroed_page", Some(vec![0; 65536]), "partly written"),
        (
            "zeroed_image",
            Some(vec![0; 3 * 65536]),
            "does not hold a MemoryManager (starts with [00, 00",
        ),
        (
            "random",
            Some(noise(3 * 65536, 0x9e37_79b9_7f4a_7c15)),
            "does not hold a MemoryManager",
        ),
        (
            "not_memory_manager",
            Some([b"WAS here".as_slice(), &[7u8; 65528]].concat()),
            "does not hold a MemoryManager (starts with [57, 41, 53",
        ),
        (
            "truncated",
            Some(good_bytes[..2 * 65536].to_vec()),
            "which end at page 257, but the image has 2 pages",
        ),
    ];
    let mut wrong_version = good_bytes.clone();
    wrong_version[3] = 9;
    cases.push((
        "wrong_layout_version",
        Some(wrong_version),
        "layout version 9 is not supported",
    ));
    let mut corrupt = good_bytes.clone();
    // Slot 1 (generation 2) header generation byte, at ID 0 offset 64 + 8.
    corrupt[65536 + 72] ^= 1;
    cases.push((
        "corrupt_ledger",
        Some(corrupt),
        "ledger commit slot 1 is corrupt: checksum",
    ));
    let mut foreign = good_bytes.clone();
    foreign[65536..65536 + 8].copy_from_slice(b"app data");
    cases.push(("foreign_id0", Some(foreign), "ID 0 holds bytes of another store"));

    let no_ledger = scratch.path("no_ledger.bin");
    let manager = MemoryManager::init(file_memory(&no_ledger));
    manager.get(MemoryId::new(100)).grow(1);
    drop(manager);
    cases.push((
        "no_ledger",
        Some(std::fs::read(&no_ledger).unwrap()),
        "no allocation ledger at ID 0",
    ));

    let declarations = scratch.path("declarations.json");
    std::fs::write(&declarations, layout(&[("app.users.v1", 100)]).to_json()).unwrap();
    for (name, bytes, message) in cases {
        let path = scratch.path(&format!("{name}.bin"));
        if let Some(bytes) = &bytes {
            std::fs::write(&path, bytes).unwrap();
        }
        let p = path.to_str().unwrap();
        for args in [
            vec!["inspect", p],
            vec!["inspect", p, "--json"],
            vec!["check", p, "--declarations", declarations.to_str().unwrap()],
        ] {
            let output = holdfast(&args, &path);
            assert_eq!(
                output.status.code(),
                Some(2),
                "{name} {args:?}: {}\n{}",
                stdout(&output),
                stderr(&output)
            );
            assert!(
                stderr(&output).contains(message),
                "{name} {args:?}: expected {message:?} in {}",
                stderr(&output)
            );
        }
    }
}

#[test]
fn bad_declaration_files_exit_2_with_their_reason() {
    let scratch = Scratch::new("declarations");
    let image = scratch.path("image.bin");
    governed_image(&image);
    let declarations = scratch.path("d.json");
    let duplicate = r#"{"declarations":[
        {"stable_key":"a.v1","slot":{"slot":{"MemoryManagerId":100},"substrate":"ic-stable-structures.memory_manager","descriptor_version":1},"label":null},
        {"stable_key":"b.v1","slot":{"slot":{"MemoryManagerId":100},"substrate":"ic-stable-structures.memory_manager","descriptor_version":1},"label":null}]}"#;
    for (content, message) in [
        (None, "cannot use the declarations file"),
        (Some("{ not json"), "declaration snapshot JSON is malformed"),
        (Some(duplicate), "is declared twice"),
        (
            Some(
                r#"{"declarations":[{"stable_key":"Bad.v1","slot":{"slot":{"MemoryManagerId":100},"substrate":"x","descriptor_version":1},"label":null}]}"#,
            ),
            "invalid character",
        ),
    ] {
        match content {
            Some(text) => std::fs::write(&declarations, text).unwrap(),
            None => {
                let _ = std::fs::remove_file(&declarations);
            }
        }
        let output = holdfast(
            &[
                "check",
                image.to_str().unwrap(),
                "--declarations",
                declarations.to_str().unwrap(),
            ],
            &image,
        );
        assert_eq!(output.status.code(), Some(2));
        assert!(
            stderr(&output).contains(message),
            "expected {message:?} in {}",
            stderr(&output)
        );
    }
}

#[test]
fn every_command_has_help_with_examples() {
    for command in ["demo", "inspect", "check"] {
        let output = Command::new(env!("CARGO_BIN_EXE_holdfast"))
            .args([command, "--help"])
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(0));
        let text = stdout(&output);
        assert!(
            text.contains("Examples:") && text.contains(&format!("holdfast {command}")),
            "{text}"
        );
    }
}
