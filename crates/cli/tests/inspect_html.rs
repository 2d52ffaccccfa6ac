//! `holdfast inspect --html` in a real browser: the real binary writes the
//! page for an image holdfast-memory built in the test through six
//! generations (stores added, reserved, retired, a schema change, a hostile
//! label and fingerprint) and for one the published ic-memory 0.5.1 wrote,
//! headless Chromium renders it, and the test reads the DOM it built. Skipped, with a printed reason, only when no `chromium`
//! is on PATH and `HOLDFAST_REQUIRE_BROWSER` is unset (CI installs Chromium
//! and sets it).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{assert_exit, file_memory, holdfast, ic_memory_image};
use holdfast_memory::stable_structures::Memory;
use holdfast_memory::{
    AcceptAllPolicy, AllocationDeclaration, AllocationRetirement, AllocationSlotDescriptor,
    DeclarationSnapshot, MemoryRuntime, SchemaMetadata,
};

const HOSTILE_LABEL: &str = "<script>document.title='pwned'</script><b>bold</b>";
const HOSTILE_FINGERPRINT: &str = "build-1\"><img src=x onerror=alert(1)>";

fn chromium() -> Option<String> {
    ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|name| {
            Command::new(name)
                .arg("--version")
                .output()
                .is_ok_and(|out| out.status.success())
        })
        .map(str::to_owned)
}

fn schema(version: u32, fingerprint: &str) -> SchemaMetadata {
    SchemaMetadata::new(Some(version), Some(fingerprint.to_owned())).unwrap()
}

fn snapshot(entries: Vec<AllocationDeclaration>, fingerprint: &str) -> DeclarationSnapshot {
    DeclarationSnapshot::new(entries)
        .unwrap()
        .with_runtime_fingerprint(fingerprint)
        .unwrap()
}

fn users(version: u32) -> AllocationDeclaration {
    AllocationDeclaration::memory_manager_with_schema(
        "app.users.v1",
        100,
        "Users",
        schema(version, &format!("sha256:u{version}")),
    )
    .unwrap()
}

fn orders() -> AllocationDeclaration {
    AllocationDeclaration::memory_manager("app.orders.v1", 101, HOSTILE_LABEL).unwrap()
}

fn mm(key: &str, id: u8) -> AllocationDeclaration {
    AllocationDeclaration::memory_manager(key, id, "Store").unwrap()
}

/// Six generations:
/// 1. users (schema v1, one page of data) and orders (hostile label), by a
///    build with a hostile fingerprint;
/// 2. audit added;
/// 3. future reserved;
/// 4. audit retired;
/// 5. users' schema v2, future declared (becomes active), audit omitted;
/// 6. later reserved (stays reserved).
fn history_image(path: &Path) {
    let v1 = MemoryRuntime::bootstrap(
        file_memory(path),
        snapshot(vec![users(1), orders()], HOSTILE_FINGERPRINT),
        &AcceptAllPolicy,
    )
    .unwrap();
    let store = v1.open("app.users.v1", 100).unwrap();
    store.grow(1);
    store.write(0, b"alice");
    drop((store, v1));
    MemoryRuntime::bootstrap(
        file_memory(path),
        snapshot(vec![users(1), orders(), mm("app.audit.v1", 102)], "build-2"),
        &AcceptAllPolicy,
    )
    .unwrap();
    let reserved = MemoryRuntime::reserve(
        file_memory(path),
        vec![mm("app.future.v1", 110)],
        &AcceptAllPolicy,
    )
    .unwrap();
    assert_eq!(reserved, 3);
    let retirement = AllocationRetirement::new(
        "app.audit.v1",
        AllocationSlotDescriptor::memory_manager(102).unwrap(),
    )
    .unwrap();
    assert_eq!(MemoryRuntime::retire(file_memory(path), retirement).unwrap(), 4);
    let v3 = MemoryRuntime::bootstrap(
        file_memory(path),
        snapshot(vec![users(2), orders(), mm("app.future.v1", 110)], "build-3"),
        &AcceptAllPolicy,
    )
    .unwrap();
    assert_eq!(v3.validated().generation(), 5);
    drop(v3);
    let reserved =
        MemoryRuntime::reserve(file_memory(path), vec![mm("app.later.v1", 111)], &AcceptAllPolicy).unwrap();
    assert_eq!(reserved, 6);
}

/// Runs `holdfast inspect IMAGE --html PAGE`, asserting it left the image
/// unchanged and did not panic.
fn inspect_html(image: &Path, page: &Path) -> Output {
    holdfast(
        &[
            "inspect",
            image.to_str().unwrap(),
            "--html",
            page.to_str().unwrap(),
        ],
        image,
    )
}

/// The DOM Chromium builds from `page`.
fn render(browser: &str, page: &Path) -> String {
    let profile = tempfile::tempdir().unwrap();
    let output = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--dump-dom",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(format!("file://{}", page.display()))
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// The text of `dom` from the first `start` to the next `end` (inclusive).
fn between<'a>(dom: &'a str, start: &str, end: &str) -> &'a str {
    let from = dom
        .find(start)
        .unwrap_or_else(|| panic!("{start:?} not in the DOM:\n{dom}"));
    let to = dom[from..]
        .find(end)
        .unwrap_or_else(|| panic!("{end:?} not after {start:?}:\n{dom}"));
    &dom[from..from + to + end.len()]
}

/// The value of the first attribute `name` in `element`.
fn attribute<'a>(element: &'a str, name: &str) -> &'a str {
    let start = element
        .find(&format!("{name}=\""))
        .unwrap_or_else(|| panic!("no {name} in {element}"))
        + name.len()
        + 2;
    let len = element[start..].find('"').unwrap();
    &element[start..start + len]
}

/// Generation `generation`'s timeline row.
fn timeline_row(dom: &str, generation: u64) -> &str {
    between(
        dom,
        &format!("<tr data-generation=\"{generation}\"><td class=\"num generation\">"),
        "</tr>",
    )
}

/// The events list of generation `generation`'s timeline row.
fn events_of(dom: &str, generation: u64) -> &str {
    between(timeline_row(dom, generation), "<td><", "</td></tr>")
}

fn browser_or_skip() -> Option<String> {
    let browser = chromium();
    if browser.is_none() {
        assert!(
            std::env::var_os("HOLDFAST_REQUIRE_BROWSER").is_none(),
            "HOLDFAST_REQUIRE_BROWSER is set but no chromium is on PATH"
        );
        println!("skipped: no chromium on PATH (set HOLDFAST_REQUIRE_BROWSER=1 to require it)");
    }
    browser
}

#[test]
fn the_html_page_shows_stores_timeline_schema_history_and_warnings_and_obeys_nothing_from_the_image() {
    let Some(browser) = browser_or_skip() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("image.bin");
    history_image(&image);
    let page = dir.path().join("history.html");
    let output = inspect_html(&image, &page);
    assert_exit(&output, 0);
    let stderr = String::from_utf8(output.stderr).unwrap();
    let written = std::fs::metadata(&page).unwrap().len();
    assert_eq!(stderr, format!("wrote {} ({written} bytes)\n", page.display()));
    assert!(
        String::from_utf8(output.stdout)
            .unwrap()
            .contains("allocations at generation 6"),
        "the text report is still printed"
    );
    let source = std::fs::read_to_string(&page).unwrap();
    for external in [
        "<script", "<link", "<img", "<iframe", " src=\"", " href=\"", "url(", "@import",
    ] {
        assert!(
            !source.contains(external),
            "the page must load nothing: {external}"
        );
    }

    let dom = render(&browser, &page);

    assert!(dom.contains("<title>holdfast inspect: "), "{dom}");
    assert!(dom.contains("<dd id=\"current-generation\">6</dd>"), "{dom}");
    assert!(dom.contains("<dd id=\"generation-count\">6</dd>"), "{dom}");
    assert!(dom.contains("<dd id=\"record-count\">6</dd>"), "{dom}");

    let stores = between(&dom, "<section id=\"stores\">", "</section>");
    assert!(stores.contains("<h2>Stores at generation 6</h2>"), "{stores}");
    let rows: Vec<&str> = stores
        .lines()
        .filter(|line| line.starts_with("<tr class="))
        .collect();
    assert_eq!(
        rows,
        [
            "<tr class=\"state-active\" data-key=\"ic_memory.ledger.v1\"><td class=\"key\">ic_memory.ledger.v1</td>\
             <td class=\"num id\">0</td><td class=\"state\">active</td><td class=\"num first\">1</td>\
             <td class=\"num last-seen\">5</td><td class=\"num retired\">-</td>\
             <td class=\"label\">MemoryLayoutLedger</td><td class=\"schema\">-</td>\
             <td class=\"num live-size\" data-bytes=\"65536\">64 KiB</td></tr>",
            "<tr class=\"state-active\" data-key=\"app.users.v1\"><td class=\"key\">app.users.v1</td>\
             <td class=\"num id\">100</td><td class=\"state\">active</td><td class=\"num first\">1</td>\
             <td class=\"num last-seen\">5</td><td class=\"num retired\">-</td><td class=\"label\">Users</td>\
             <td class=\"schema\">v2 sha256:u2</td>\
             <td class=\"num live-size\" data-bytes=\"65536\">64 KiB</td></tr>",
            "<tr class=\"state-active\" data-key=\"app.orders.v1\"><td class=\"key\">app.orders.v1</td>\
             <td class=\"num id\">101</td><td class=\"state\">active</td><td class=\"num first\">1</td>\
             <td class=\"num last-seen\">5</td><td class=\"num retired\">-</td>\
             <td class=\"label\">&lt;script&gt;document.title='pwned'&lt;/script&gt;&lt;b&gt;bold&lt;/b&gt;</td>\
             <td class=\"schema\">-</td><td class=\"num live-size\" data-bytes=\"0\">0 B</td></tr>",
            "<tr class=\"state-retired\" data-key=\"app.audit.v1\"><td class=\"key\">app.audit.v1</td>\
             <td class=\"num id\">102</td><td class=\"state\">retired</td><td class=\"num first\">2</td>\
             <td class=\"num last-seen\">2</td><td class=\"num retired\">4</td><td class=\"label\">Store</td>\
             <td class=\"schema\">-</td><td class=\"num live-size\" data-bytes=\"0\">0 B</td></tr>",
            "<tr class=\"state-active\" data-key=\"app.future.v1\"><td class=\"key\">app.future.v1</td>\
             <td class=\"num id\">110</td><td class=\"state\">active</td><td class=\"num first\">3</td>\
             <td class=\"num last-seen\">5</td><td class=\"num retired\">-</td><td class=\"label\">Store</td>\
             <td class=\"schema\">-</td><td class=\"num live-size\" data-bytes=\"0\">0 B</td></tr>",
            "<tr class=\"state-reserved\" data-key=\"app.later.v1\"><td class=\"key\">app.later.v1</td>\
             <td class=\"num id\">111</td><td class=\"state\">reserved</td><td class=\"num first\">6</td>\
             <td class=\"num last-seen\">6</td><td class=\"num retired\">-</td><td class=\"label\">Store</td>\
             <td class=\"schema\">-</td><td class=\"num live-size\" data-bytes=\"0\">0 B</td></tr>",
        ]
    );

    let timeline = between(&dom, "<section id=\"timeline\">", "</section>");
    assert!(timeline.contains("<h2>Generations (6)</h2>"), "{timeline}");
    let generations: Vec<&str> = timeline
        .match_indices("<tr data-generation=\"")
        .map(|(at, _)| attribute(&timeline[at..], "data-generation"))
        .collect();
    assert_eq!(generations, ["1", "2", "3", "4", "5", "6"]);
    assert_eq!(
        events_of(timeline, 1),
        "<td><ul class=\"events\">\
         <li class=\"event-appeared\" data-kind=\"appeared\" data-key=\"ic_memory.ledger.v1\">\
         <span class=\"key\">ic_memory.ledger.v1</span> first recorded on ID 0</li>\
         <li class=\"event-appeared\" data-kind=\"appeared\" data-key=\"app.users.v1\">\
         <span class=\"key\">app.users.v1</span> first recorded on ID 100 with schema v1 (sha256:u1)</li>\
         <li class=\"event-appeared\" data-kind=\"appeared\" data-key=\"app.orders.v1\">\
         <span class=\"key\">app.orders.v1</span> first recorded on ID 101</li></ul></td></tr>"
    );
    assert_eq!(
        events_of(timeline, 2),
        "<td><ul class=\"events\"><li class=\"event-appeared\" data-kind=\"appeared\" data-key=\"app.audit.v1\">\
         <span class=\"key\">app.audit.v1</span> first recorded on ID 102</li></ul></td></tr>"
    );
    assert_eq!(
        events_of(timeline, 3),
        "<td><ul class=\"events\"><li class=\"event-appeared\" data-kind=\"appeared\" data-key=\"app.future.v1\">\
         <span class=\"key\">app.future.v1</span> first recorded on ID 110</li></ul></td></tr>"
    );
    assert_eq!(
        events_of(timeline, 4),
        "<td><ul class=\"events\"><li class=\"event-retired\" data-kind=\"retired\" data-key=\"app.audit.v1\">\
         <span class=\"key\">app.audit.v1</span> retired; MemoryManager ID 102 is never used by another key</li>\
         </ul></td></tr>"
    );
    assert_eq!(
        events_of(timeline, 5),
        "<td><ul class=\"events\"><li class=\"event-schema_changed\" data-kind=\"schema_changed\" \
         data-key=\"app.users.v1\"><span class=\"key\">app.users.v1</span> schema v1 (sha256:u1) → \
         v2 (sha256:u2)</li></ul></td></tr>"
    );
    assert_eq!(
        events_of(timeline, 6),
        "<td><ul class=\"events\"><li class=\"event-reserved\" data-kind=\"reserved\" data-key=\"app.later.v1\">\
         <span class=\"key\">app.later.v1</span> reserved on ID 111</li></ul></td></tr>"
    );
    let first = between(timeline, "<tr data-generation=\"1\">", "</tr>");
    assert!(
        first.contains("<td class=\"fingerprint\">build-1\"&gt;&lt;img src=x onerror=alert(1)&gt;</td>"),
        "the hostile fingerprint is text: {first}"
    );
    assert!(first.contains("<td class=\"num declarations\">3</td>"), "{first}");
    let third = between(timeline, "<tr data-generation=\"3\">", "</tr>");
    assert!(third.contains("<td class=\"fingerprint\">-</td>"), "{third}");
    assert!(third.contains("<td class=\"committed\" data-ns=\""), "{third}");
    assert!(third.contains(" UTC</td>"), "{third}");

    let schemas = between(&dom, "<section id=\"schemas\">", "</section>");
    assert_eq!(
        schemas.matches("<div class=\"schema-history\"").count(),
        1,
        "{schemas}"
    );
    assert!(
        schemas.contains(
            "<tbody>\n<tr data-generation=\"1\"><td class=\"num generation\">1</td>\
             <td class=\"num version\">v1</td><td class=\"fingerprint\">sha256:u1</td></tr>\n\
             <tr data-generation=\"5\"><td class=\"num generation\">5</td>\
             <td class=\"num version\">v2</td><td class=\"fingerprint\">sha256:u2</td></tr>\n</tbody>"
        ),
        "{schemas}"
    );

    let warnings = between(&dom, "<section id=\"warnings\">", "</section>");
    let kinds: Vec<&str> = warnings
        .match_indices("<li class=\"warning\"")
        .map(|(at, _)| attribute(&warnings[at..], "data-kind"))
        .collect();
    assert_eq!(kinds, ["empty_record", "empty_record"], "{warnings}");
    assert!(warnings.contains("<h2>Warnings (2)</h2>"), "{warnings}");
    assert!(
        warnings.contains(
            "<li class=\"warning\" data-kind=\"empty_record\" data-memory-id=\"101\">\
             <span class=\"kind\">[empty_record]</span> app.orders.v1 is active but its memory is empty \
             (declared, never written)</li>"
        ),
        "{warnings}"
    );

    let memories = between(&dom, "<section id=\"memories\">", "</section>");
    assert!(
        memories.contains(
            "<tr data-memory-id=\"100\"><td class=\"num id\">100</td><td class=\"num pages\">1</td>\
             <td class=\"num size\" data-bytes=\"65536\">64 KiB</td><td class=\"num buckets\">1</td>\
             <td class=\"owner\"><span class=\"key\">app.users.v1</span></td></tr>"
        ),
        "{memories}"
    );
    let slots = between(&dom, "<section id=\"commit-store\">", "</section>");
    assert!(slots.contains("<td class=\"num generation\">6</td>"), "{slots}");
    assert!(slots.contains("authoritative"), "{slots}");

    // Nothing from the image became markup, and nothing ran.
    assert!(!dom.contains("<script"), "an injected script element exists");
    assert!(!dom.contains("<img"), "an injected image element exists");
    assert!(!dom.contains("<b>"), "an injected bold element exists");
    assert!(!dom.contains("pwned</title>"), "a script ran");
}

#[test]
fn the_html_page_of_an_unrecoverable_ledger_shows_why_and_exits_2() {
    let Some(browser) = browser_or_skip() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("image.bin");
    history_image(&image);
    let mut bytes = std::fs::read(&image).unwrap();
    // The newest commit slot's header generation byte: ID 0 starts at the
    // first bucket (offset 65536); slot 1's header begins 64 bytes in.
    let offset = 65536 + 72;
    let before = bytes[offset];
    bytes[offset] ^= 1;
    assert_ne!(bytes[offset], before, "the corruption happened");
    std::fs::write(&image, &bytes).unwrap();
    let page = dir.path().join("broken.html");
    let output = inspect_html(&image, &page);
    assert_eq!(output.status.code(), Some(2));
    let dom = render(&browser, &page);
    let error = between(&dom, "<section id=\"ledger-error\">", "</section>");
    assert!(error.contains("<h2>No ledger to show</h2>"), "{error}");
    assert!(error.contains("cannot be recovered"), "{error}");
    assert!(
        dom.contains("<dd id=\"current-generation\" class=\"error\">none</dd>"),
        "{dom}"
    );
    assert!(
        !dom.contains("<section id=\"stores\">"),
        "no stores without a ledger"
    );
}

#[test]
fn html_output_naming_the_image_is_refused_and_the_image_is_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("image.bin");
    history_image(&image);
    let link: PathBuf = dir.path().join("link.html");
    std::fs::hard_link(&image, &link).unwrap();
    for out in [&image, &link] {
        let output = inspect_html(&image, out);
        assert_eq!(output.status.code(), Some(2));
        let stderr = String::from_utf8(output.stderr).unwrap();
        assert!(
            stderr.contains("it is the image being inspected, which holdfast never writes"),
            "{stderr}"
        );
    }
    let output = inspect_html(&image, &dir.path().join("missing/dir/page.html"));
    assert_eq!(output.status.code(), Some(2));
    assert!(
        String::from_utf8(output.stderr).unwrap().contains("cannot write"),
        "an unwritable output is a typed error"
    );
}

#[test]
fn the_html_page_of_an_ic_memory_ledger_says_it_is_adopted_next_and_shows_its_history() {
    let Some(browser) = browser_or_skip() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("image.bin");
    ic_memory_image(&image);

    let page = dir.path().join("ic.html");
    let output = inspect_html(&image, &page);
    assert_exit(&output, 0);
    let dom = render(&browser, &page);
    let section = between(
        &dom,
        "<section id=\"ic-memory\" data-state=\"pending\">",
        "</section>",
    );
    assert!(
        section.contains("<h2>ic-memory 0.5 ledger (pending)</h2>"),
        "{section}"
    );
    assert!(section.contains("adopts it at the next boot"), "{section}");
    assert!(
        section.contains("<dd id=\"ic-memory-generation\">5</dd>"),
        "{section}"
    );
    assert_eq!(section.matches("<tr data-slot=").count(), 2, "{section}");
    assert!(
        dom.contains("<p class=\"note\" id=\"commit-store-pending\">"),
        "{dom}"
    );
    assert!(dom.contains("<dd id=\"current-generation\">5</dd>"), "{dom}");

    let timeline = between(&dom, "<section id=\"timeline\">", "</section>");
    let kinds_of = |generation: u64| -> Vec<String> {
        let row = timeline_row(timeline, generation);
        row.match_indices("<li class=\"event-")
            .map(|(at, _)| {
                let item = &row[at..];
                format!("{} {}", attribute(item, "data-kind"), attribute(item, "data-key"))
            })
            .collect()
    };
    assert_eq!(
        kinds_of(1),
        [
            "appeared ic_memory.ledger.v1",
            "appeared app.users.v1",
            "appeared app.orders.v1"
        ]
    );
    assert_eq!(kinds_of(2), ["appeared app.audit.v1"]);
    assert_eq!(kinds_of(3), ["schema_changed app.orders.v1"]);
    assert_eq!(kinds_of(4), ["retired app.users.v1"]);
    assert_eq!(kinds_of(5), Vec::<String>::new());
    assert!(
        timeline.contains("<span class=\"key\">app.orders.v1</span> schema v1 (o1) → v2 (o2)"),
        "{timeline}"
    );
    let schemas = between(&dom, "<section id=\"schemas\">", "</section>");
    assert!(
        schemas.contains("<div class=\"schema-history\" data-key=\"app.orders.v1\">"),
        "{schemas}"
    );
}
