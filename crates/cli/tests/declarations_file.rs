//! `holdfast check` on declarations files in the compact form
//! (`holdfast-declarations/1`): the real binary against images booted with
//! declaring crates and ranges. A refusal is the one the build's own boot
//! gives (`MemoryRuntime::bootstrap_layout` over the same image, which is
//! what the default runtime runs), with the same exit code and message; a
//! malformed file exits 2 naming its field; the image is never changed.

mod common;

use std::path::Path;
use std::process::Output;

use common::{file_memory, holdfast, json, sha256, stderr};
use holdfast_memory::{
    AcceptAllPolicy, AllocationDeclaration, DeclaredAllocation, DeclaredLayout, DeclaredRange,
    MemoryManagerIdRange, MemoryManagerRangeMode, MemoryRuntime, RuntimeBootstrapError,
};

/// Runs `holdfast check IMAGE --declarations FILE [extra]`, asserting it
/// left the image unchanged and did not panic.
fn check(image: &Path, declarations: &Path, extra: &[&str]) -> Output {
    let image_arg = image.to_str().expect("utf-8 path");
    let declarations_arg = declarations.to_str().expect("utf-8 path");
    let args: Vec<&str> = ["check", image_arg, "--declarations", declarations_arg]
        .into_iter()
        .chain(extra.iter().copied())
        .collect();
    holdfast(&args, image)
}

fn range(start: u8, end: u8, by: &str) -> DeclaredRange {
    DeclaredRange::new(
        MemoryManagerIdRange::new(start, end).unwrap(),
        by,
        MemoryManagerRangeMode::Reserved,
        None,
    )
    .unwrap()
}

fn declared(key: &str, id: u8, by: &str) -> DeclaredAllocation {
    DeclaredAllocation::new(
        AllocationDeclaration::memory_manager(key, id, "Store").unwrap(),
        by,
    )
    .unwrap()
}

/// Generation 1 of an application `app` (IDs 100..=109) using a library
/// `cache_lib` (IDs 110..=119), each in its own range.
fn two_crate_image(dir: &Path) -> std::path::PathBuf {
    let image = dir.join("image.bin");
    let layout = DeclaredLayout::new(
        vec![
            declared("app.users.v1", 100, "app"),
            declared("cache_lib.entries.v1", 110, "cache_lib"),
        ],
        vec![range(100, 109, "app"), range(110, 119, "cache_lib")],
    );
    MemoryRuntime::bootstrap_layout(file_memory(&image), &layout, &AcceptAllPolicy).unwrap();
    image
}

/// The refusal `bootstrap_layout` of `text` gives over `image` (a copy, so
/// the test also sees that the refused boot wrote nothing).
fn boot_refusal(image: &Path, text: &str) -> RuntimeBootstrapError<std::convert::Infallible> {
    let copy = image.with_extension("boot-copy");
    std::fs::copy(image, &copy).unwrap();
    let layout = DeclaredLayout::from_json(text).unwrap();
    let error = MemoryRuntime::bootstrap_layout(file_memory(&copy), &layout, &AcceptAllPolicy).unwrap_err();
    assert_eq!(sha256(&copy), sha256(image), "the refused boot wrote nothing");
    std::fs::remove_file(copy).unwrap();
    error
}

const HEAD: &str = r#""format": "holdfast-declarations/1""#;
const RANGES: &str = r#""ranges": [
    {"start": 100, "end": 109, "declared_by": "app", "mode": "reserved", "purpose": "application stores"},
    {"start": 110, "end": 119, "declared_by": "cache_lib", "mode": "reserved"}
  ]"#;

#[test]
fn a_compact_file_written_by_hand_is_checked_with_its_crates_and_ranges() {
    let dir = tempfile::tempdir().unwrap();
    let image = two_crate_image(dir.path());
    let file = dir.path().join("next.json");
    std::fs::write(
        &file,
        format!(
            r#"{{
  {HEAD},
  "runtime_fingerprint": "build-2",
  "declarations": [
    {{"key": "app.users.v1", "id": 100, "label": "Store", "declared_by": "app"}},
    {{"key": "app.orders.v1", "id": 101, "label": "Orders", "schema_version": 1, "declared_by": "app"}},
    {{"key": "cache_lib.entries.v1", "id": 110, "label": "Store", "declared_by": "cache_lib"}}
  ],
  {RANGES}
}}"#
        ),
    )
    .unwrap();
    let output = check(&image, &file, &["--json"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let report = json(&output);
    assert_eq!(report["declarations_form"], "compact");
    assert_eq!(report["verdict"], "accepted");
    assert_eq!(report["next_generation"], 2);
    let changes: Vec<&str> = report["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["kind"].as_str().unwrap())
        .collect();
    assert_eq!(changes, ["runtime_fingerprint_change", "new_allocation"]);
    let human = check(&image, &file, &[]);
    assert!(
        String::from_utf8(human.stdout)
            .unwrap()
            .contains("(compact form)"),
        "the human report names the form"
    );
    // The boot agrees.
    let layout = DeclaredLayout::from_json(&std::fs::read_to_string(&file).unwrap()).unwrap();
    let runtime = MemoryRuntime::bootstrap_layout(file_memory(&image), &layout, &AcceptAllPolicy).unwrap();
    assert_eq!(runtime.validated().generation(), 2);
}

#[test]
fn a_declaration_outside_its_crates_range_is_refused_as_its_boot_refuses_it() {
    let dir = tempfile::tempdir().unwrap();
    let image = two_crate_image(dir.path());
    let file = dir.path().join("next.json");
    for (declaration, expected) in [
        (
            r#"{"key": "cache_lib.extra.v1", "id": 105, "declared_by": "cache_lib"}"#,
            "policy refused the declaration: MemoryManager ID 105 is reserved for app, not cache_lib",
        ),
        (
            r#"{"key": "app.far.v1", "id": 200, "declared_by": "app"}"#,
            "policy refused the declaration: MemoryManager ID 200 is not covered by any registered range",
        ),
        (
            r#"{"key": "ic_memory.mine.v1", "id": 102, "declared_by": "app"}"#,
            "policy refused the declaration: stable key ic_memory.mine.v1 is reserved for ic-memory, but app declared it",
        ),
    ] {
        let text = format!(
            r#"{{{HEAD}, "declarations": [
                {{"key": "app.users.v1", "id": 100, "label": "Store", "declared_by": "app"}},
                {{"key": "cache_lib.entries.v1", "id": 110, "label": "Store", "declared_by": "cache_lib"}},
                {declaration}], {RANGES}}}"#
        );
        std::fs::write(&file, &text).unwrap();
        let RuntimeBootstrapError::Validation(boot) = boot_refusal(&image, &text) else {
            panic!("the boot refuses in validation");
        };
        assert_eq!(boot.to_string(), expected);
        let output = check(&image, &file, &["--json"]);
        assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
        let report = json(&output);
        assert_eq!(report["verdict"], "refused");
        let conflicts = report["conflicts"].as_array().unwrap();
        assert_eq!(conflicts.len(), 1, "{conflicts:?}");
        assert_eq!(conflicts[0]["message"], expected);
        let human = check(&image, &file, &[]);
        assert_eq!(human.status.code(), Some(1));
        let text = String::from_utf8(human.stdout).unwrap();
        assert!(
            text.contains(&format!(
                "1. [{}] {expected}",
                conflicts[0]["kind"].as_str().unwrap()
            )),
            "{text}"
        );
    }
}

#[test]
fn the_same_file_in_the_snapshot_form_cannot_see_ranges_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let image = two_crate_image(dir.path());
    let file = dir.path().join("next.json");
    let snapshot = holdfast_memory::DeclarationSnapshot::new(vec![
        AllocationDeclaration::memory_manager("app.users.v1", 100, "Store").unwrap(),
        AllocationDeclaration::memory_manager("cache_lib.entries.v1", 110, "Store").unwrap(),
        AllocationDeclaration::memory_manager("cache_lib.extra.v1", 105, "Store").unwrap(),
    ])
    .unwrap();
    std::fs::write(&file, snapshot.to_json()).unwrap();
    let output = check(&image, &file, &["--json"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let report = json(&output);
    assert_eq!(report["declarations_form"], "snapshot");
    assert_eq!(report["verdict"], "accepted");
}

#[test]
fn declarations_that_conflict_among_themselves_exit_1_with_the_boots_refusal() {
    let dir = tempfile::tempdir().unwrap();
    let image = two_crate_image(dir.path());
    let file = dir.path().join("next.json");
    for (body, expected, hint) in [
        (
            r#""declarations": [{"key": "app.users.v1", "id": 0, "declared_by": "app"}]"#,
            "static memory registry: MemoryManager ID 0 is declared twice",
            "ID 0 holds the ledger (ic_memory.ledger.v1), which every boot declares itself",
        ),
        (
            r#""declarations": [{"key": "ic_memory.ledger.v1", "id": 5, "declared_by": "ic-memory"}]"#,
            "static memory registry: stable key ic_memory.ledger.v1 is declared twice",
            "ic_memory.ledger.v1 is the ledger's own key, which every boot declares itself",
        ),
        (
            r#""declarations": [{"key": "app.a.v1", "id": 100, "declared_by": "app"},
                                   {"key": "app.b.v1", "id": 100, "declared_by": "app"}]"#,
            "static memory registry: MemoryManager ID 100 is declared twice",
            "",
        ),
        (
            r#""declarations": [], "ranges": [
                    {"start": 100, "end": 109, "declared_by": "app", "mode": "reserved"},
                    {"start": 105, "end": 119, "declared_by": "cache_lib", "mode": "allowed"}]"#,
            "memory ranges: range 100..=109 of app overlaps 105..=119 of cache_lib",
            "",
        ),
    ] {
        let text = format!("{{{HEAD}, {body}}}");
        std::fs::write(&file, &text).unwrap();
        let boot = boot_refusal(&image, &text);
        assert_eq!(boot.to_string(), expected);
        for extra in [&[][..], &["--json"][..]] {
            let output = check(&image, &file, extra);
            assert_eq!(output.status.code(), Some(1), "{text}");
            let message = stderr(&output);
            assert!(
                message.starts_with(&format!(
                    "holdfast: every boot of the build in {} would be refused before it reads memory: {expected}",
                    file.display()
                )),
                "{message}"
            );
            assert!(message.contains(hint), "{message}");
            assert!(output.stdout.is_empty(), "no report on stdout");
        }
    }
}

#[test]
fn a_malformed_compact_file_exits_2_naming_its_field() {
    let dir = tempfile::tempdir().unwrap();
    let image = two_crate_image(dir.path());
    let file = dir.path().join("bad.json");
    let entry = r#"{"key": "app.users.v1", "id": 100, "declared_by": "app"}"#;
    for (text, message) in [
        (
            r#"{"format": "holdfast-declarations/9", "declarations": []}"#.to_owned(),
            r#"`format` is "holdfast-declarations/9"; this version reads "holdfast-declarations/1""#,
        ),
        (
            format!(r#"{{{HEAD}, "declarations": [{entry}], "range": []}}"#),
            "`range` is not a field of this format; the fields here are format, runtime_fingerprint, \
             declarations, ranges",
        ),
        (
            format!(
                r#"{{{HEAD}, "declarations": [{{"key": "app.users.v1", "id": 100, "lable": "x", "declared_by": "app"}}]}}"#
            ),
            "`declarations[0].lable` is not a field of this format",
        ),
        (
            format!(
                r#"{{{HEAD}, "declarations": [{{"key": "App.Users.v1", "id": 100, "declared_by": "app"}}]}}"#
            ),
            "`declarations[0].key`: stable key \"App.Users.v1\" has the invalid character 'A' at byte 0",
        ),
        (
            format!(
                r#"{{{HEAD}, "declarations": [{{"key": "app.users.v1", "id": 100, "id": 101, "declared_by": "app"}}]}}"#
            ),
            "`declarations[0].id` is given twice",
        ),
        (
            format!(
                r#"{{{HEAD}, "declarations": [{{"key": "app.users.v1", "id": 255, "declared_by": "app"}}]}}"#
            ),
            "`declarations[0].id`: MemoryManager ID 255 is the unallocated sentinel",
        ),
        (
            format!(r#"{{{HEAD}, "declarations": [{{"key": "app.users.v1", "id": 100}}]}}"#),
            "`declarations[0].declared_by` is missing",
        ),
        (
            format!(
                r#"{{{HEAD}, "declarations": [{entry}], "ranges": [{{"start": 9, "end": 3, "declared_by": "app", "mode": "reserved"}}]}}"#
            ),
            "`ranges[0]`: MemoryManager ID range 9..=3 is invalid",
        ),
    ] {
        std::fs::write(&file, &text).unwrap();
        let output = check(&image, &file, &[]);
        assert_eq!(output.status.code(), Some(2), "{text}");
        let stderr = stderr(&output);
        assert!(
            stderr.starts_with(&format!(
                "holdfast: cannot use the declarations file {}: ",
                file.display()
            )),
            "{stderr}"
        );
        assert!(stderr.contains(message), "expected {message:?} in {stderr}");
    }
}

#[test]
fn the_registry_exported_by_write_static_declarations_json_is_checked_offline() {
    use holdfast_memory::{register_static_memory_manager_declaration, register_static_memory_manager_range};

    let dir = tempfile::tempdir().unwrap();
    let image = two_crate_image(dir.path());
    register_static_memory_manager_range(100, 109, "app", MemoryManagerRangeMode::Reserved, None).unwrap();
    register_static_memory_manager_range(110, 119, "cache_lib", MemoryManagerRangeMode::Reserved, None)
        .unwrap();
    register_static_memory_manager_declaration(100, "app", "Store", "app.users.v1").unwrap();
    register_static_memory_manager_declaration(110, "cache_lib", "Store", "cache_lib.entries.v1").unwrap();
    register_static_memory_manager_declaration(111, "app", "Store", "app.sneaky.v1").unwrap();
    let file = dir.path().join("declarations.json");
    holdfast_memory::write_static_declarations_json(&file).unwrap();
    let output = check(&image, &file, &["--json"]);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let report = json(&output);
    assert_eq!(report["declarations_form"], "compact");
    assert_eq!(
        report["conflicts"][0]["message"],
        "policy refused the declaration: MemoryManager ID 111 is reserved for cache_lib, not app"
    );
}
