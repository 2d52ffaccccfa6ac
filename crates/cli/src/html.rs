//! `holdfast inspect --html`: an [`InspectReport`] as one self-contained
//! HTML page — stores with their sizes, the generation timeline, schema
//! history per key, the MemoryManager memories, both commit slots and the
//! warnings the text output gives.
//!
//! Everything in an image is untrusted: labels and runtime fingerprints are
//! any printable ASCII (`<script>` included), messages quote them, and the
//! image path comes from the command line. Every such string reaches the
//! page only through [`Escaped`], which escapes HTML's five special
//! characters and shows control and bidirectional-formatting characters as
//! visible `\u{..}` text, so an ANSI escape or a `</td>` in a label is shown,
//! never obeyed. Attribute values are always double-quoted and escaped the
//! same way. The page loads nothing: the style is inline, there is no
//! script, and its Content-Security-Policy forbids every fetch, so even a
//! rendering bug could not make it reach out.
//!
//! The page is driven by the report: one function per part of the report
//! ([`page`] lists them in order; an ic-memory 0.5 ledger at ID 0 has its own
//! section), so a new report field is a new section function. This module decides nothing and never reads or writes an image;
//! [`write_page`] writes only the output file, and refuses when that file is
//! the image itself.

use std::fmt::{self, Display, Write as _};
use std::path::Path;

use crate::error::CliError;
use crate::inspect::{
    CommitStoreView, IcMemoryView, InspectReport, LedgerView, MemoryManagerView, RecordView, SchemaView,
    Warning,
};
use crate::timeline::TimelineGeneration;

/// `text`, escaped for HTML text and double-quoted attribute values.
///
/// `&`, `<`, `>`, `"` and `'` become character references; control
/// characters (C0, DEL, C1) and the bidirectional-formatting characters
/// (U+061C, U+200E, U+200F, U+202A..=U+202E, U+2066..=U+2069) become the
/// visible text `\u{hex}`. Everything else is kept.
#[derive(Clone, Copy, Debug)]
pub struct Escaped<'a>(pub &'a str);

impl Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for ch in self.0.chars() {
            match ch {
                '&' => f.write_str("&amp;")?,
                '<' => f.write_str("&lt;")?,
                '>' => f.write_str("&gt;")?,
                '"' => f.write_str("&quot;")?,
                '\'' => f.write_str("&#39;")?,
                c if c.is_control() || is_bidi_format(c) => write!(f, "\\u{{{:x}}}", u32::from(c))?,
                c => f.write_char(c)?,
            }
        }
        Ok(())
    }
}

fn is_bidi_format(c: char) -> bool {
    matches!(c, '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// `text` escaped (see [`Escaped`]).
pub fn escape(text: &str) -> String {
    Escaped(text).to_string()
}

const STYLE: &str = "\
body{font:14px/1.45 system-ui,sans-serif;margin:2rem auto;max-width:80rem;padding:0 1rem;color:#1d1d1f;background:#fff}\
h1{font-size:1.4rem;margin-bottom:.2rem}h2{font-size:1.1rem;margin-top:2rem;border-bottom:1px solid #ddd;padding-bottom:.2rem}\
h3{font-size:1rem;margin:1rem 0 .2rem}\
table{border-collapse:collapse;margin:.4rem 0}th,td{padding:.2rem .6rem;border-bottom:1px solid #eee;text-align:left;vertical-align:top}\
th{font-weight:600;background:#f6f6f6}td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}\
code,.key,.fingerprint,.label{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;overflow-wrap:anywhere}\
dl{display:grid;grid-template-columns:max-content auto;gap:.1rem 1rem}dt{color:#555}dd{margin:0}\
tr.state-active td.state{color:#116611}tr.state-reserved td.state{color:#8a6d00}tr.state-retired td{color:#777}\
ul.events{margin:0;padding-left:1.1rem}li.event-retired{color:#777}li.event-schema_changed{color:#1f4e99}\
.warning{color:#8a4b00}.error{color:#b00020}.none{color:#999}p.note{color:#555;max-width:60rem}";

/// The whole page for `report`.
pub fn page(report: &InspectReport) -> String {
    let mut out = String::with_capacity(16 * 1024);
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>holdfast inspect: {}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n",
        Escaped(&report.image.path)
    );
    summary(&mut out, report);
    ledger_error(&mut out, report.ledger_error.as_deref());
    warnings(&mut out, &report.warnings);
    if let Some(ic_memory) = &report.ic_memory {
        ic_memory_ledger(&mut out, ic_memory);
    }
    if let Some(ledger) = &report.ledger {
        stores(&mut out, ledger);
        generations(&mut out, ledger);
        schema_history(&mut out, &ledger.records);
    }
    memories(&mut out, &report.memory_manager, report.ledger.as_ref());
    let adoption_pending = report.ic_memory.as_ref().is_some_and(|ic| ic.state == "pending");
    commit_store(&mut out, &report.commit_store, adoption_pending);
    out.push_str("</body>\n</html>\n");
    out
}

/// Writes [`page`] of `report` to `out` and returns its size in bytes.
///
/// # Errors
/// [`CliError::Output`] when `out` is the image itself (the image is never
/// written, whatever name it is given) or cannot be written.
pub fn write_page(image: &Path, out: &Path, report: &InspectReport) -> Result<u64, CliError> {
    let fail = |reason: String| CliError::Output {
        path: out.to_owned(),
        reason,
    };
    if same_file(image, out) {
        return Err(fail(
            "it is the image being inspected, which holdfast never writes; choose another file".into(),
        ));
    }
    let page = page(report);
    std::fs::write(out, &page).map_err(|err| fail(err.to_string()))?;
    Ok(page.len() as u64)
}

/// Whether `a` and `b` name one file (through a symlink or a hard link too).
fn same_file(a: &Path, b: &Path) -> bool {
    let (Ok(a), Ok(b)) = (std::fs::metadata(a), std::fs::metadata(b)) else {
        return false;
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        a.dev() == b.dev() && a.ino() == b.ino()
    }
    #[cfg(not(unix))]
    {
        match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
            (Ok(a), Ok(b)) => a == b,
            _ => false,
        }
    }
}

fn summary(out: &mut String, report: &InspectReport) {
    let _ = write!(
        out,
        "<h1>Stable-memory image <code id=\"image-path\">{}</code></h1>\n<dl id=\"summary\">\n\
         <dt>size</dt><dd id=\"image-bytes\" data-bytes=\"{}\">{}</dd>\n\
         <dt>read to build this page</dt><dd id=\"bytes-read\" data-bytes=\"{}\">{}</dd>\n",
        Escaped(&report.image.path),
        report.image.bytes,
        human_bytes(report.image.bytes),
        report.image.bytes_read,
        human_bytes(report.image.bytes_read),
    );
    match &report.ledger {
        Some(ledger) => {
            let _ = write!(
                out,
                "<dt>current generation</dt><dd id=\"current-generation\">{}</dd>\n\
                 <dt>generations committed</dt><dd id=\"generation-count\">{}</dd>\n\
                 <dt>keys in history</dt><dd id=\"record-count\">{}</dd>\n",
                ledger.current_generation,
                ledger.generation_count,
                ledger.records.len()
            );
        }
        None => out.push_str("<dt>ledger</dt><dd id=\"current-generation\" class=\"error\">none</dd>\n"),
    }
    let _ = writeln!(
        out,
        "<dt>warnings</dt><dd id=\"warning-count\">{}</dd>\n</dl>",
        report.warnings.len()
    );
}

fn ledger_error(out: &mut String, error: Option<&str>) {
    if let Some(error) = error {
        let _ = writeln!(
            out,
            "<section id=\"ledger-error\">\n<h2>No ledger to show</h2>\n<p class=\"error\">{}</p>\n</section>",
            Escaped(error)
        );
    }
}

fn warnings(out: &mut String, warnings: &[Warning]) {
    let _ = writeln!(
        out,
        "<section id=\"warnings\">\n<h2>Warnings ({})</h2>",
        warnings.len()
    );
    if warnings.is_empty() {
        out.push_str("<p class=\"none\">no warnings</p>\n");
    } else {
        out.push_str("<ul>\n");
        for warning in warnings {
            let _ = write!(
                out,
                "<li class=\"warning\" data-kind=\"{}\"",
                Escaped(warning.kind)
            );
            if let Some(id) = warning.memory_id {
                let _ = write!(out, " data-memory-id=\"{id}\"");
            }
            let _ = writeln!(
                out,
                "><span class=\"kind\">[{}]</span> {}</li>",
                Escaped(warning.kind),
                Escaped(&warning.message)
            );
        }
        out.push_str("</ul>\n");
    }
    out.push_str("</section>\n");
}

/// ID 0 holds a ledger written by ic-memory 0.5: whether holdfast adopts it
/// at the next boot or already did, and ic-memory's own commit slots. The
/// stores, generations and schema history that follow are its converted
/// history.
fn ic_memory_ledger(out: &mut String, ic_memory: &IcMemoryView) {
    let _ = writeln!(
        out,
        "<section id=\"ic-memory\" data-state=\"{state}\">\n<h2>ic-memory 0.5 ledger ({state})</h2>\n\
         <p class=\"message\">{message}</p>\n<dl>\n\
         <dt>its generation</dt><dd id=\"ic-memory-generation\">{generation}</dd>\n\
         <dt>its Cell value at ID 0</dt><dd id=\"ic-memory-cell-bytes\" data-bytes=\"{cell}\">{cell_human}</dd>\n\
         <dt>holdfast's store in ID 0 from byte</dt><dd id=\"ic-memory-forward-offset\">{offset}</dd>\n</dl>",
        state = Escaped(ic_memory.state),
        message = Escaped(&ic_memory.message),
        generation = ic_memory
            .generation
            .map_or_else(|| "-".to_owned(), |g| g.to_string()),
        cell = ic_memory.cell_value_bytes,
        cell_human = human_bytes(u64::from(ic_memory.cell_value_bytes)),
        offset = ic_memory.forward_offset,
    );
    if !ic_memory.slots.is_empty() {
        out.push_str(
            "<table>\n<thead><tr><th class=\"num\">ic-memory slot</th><th>state</th>\
             <th class=\"num\">generation</th><th class=\"num\">payload bytes</th></tr></thead>\n<tbody>\n",
        );
        for slot in &ic_memory.slots {
            slot_row(
                out,
                slot.slot,
                slot.state,
                slot.generation,
                slot.payload_bytes,
                None,
            );
        }
        out.push_str("</tbody>\n</table>\n");
    }
    out.push_str("</section>\n");
}

fn stores(out: &mut String, ledger: &LedgerView) {
    let _ = writeln!(
        out,
        "<section id=\"stores\">\n<h2>Stores at generation {}</h2>\n<table>\n<thead><tr>\
         <th>stable key</th><th class=\"num\">ID</th><th>state</th><th class=\"num\">first</th>\
         <th class=\"num\">last declared</th><th class=\"num\">retired</th><th>label</th><th>schema</th>\
         <th class=\"num\">live size</th></tr></thead>\n<tbody>",
        ledger.current_generation
    );
    for record in &ledger.records {
        let _ = writeln!(
            out,
            "<tr class=\"state-{state}\" data-key=\"{key}\"><td class=\"key\">{key}</td>\
             <td class=\"num id\">{id}</td><td class=\"state\">{state}</td>\
             <td class=\"num first\">{first}</td><td class=\"num last-seen\">{last}</td>\
             <td class=\"num retired\">{retired}</td><td class=\"label\">{label}</td>\
             <td class=\"schema\">{schema}</td>{size}</tr>",
            key = Escaped(&record.stable_key),
            id = record
                .memory_id
                .map_or_else(|| escape(&record.slot), |id| id.to_string()),
            state = Escaped(record.state),
            first = record.first_generation,
            last = record.last_seen_generation,
            retired = record
                .retired_generation
                .map_or_else(|| "-".to_owned(), |g| g.to_string()),
            label = record.label.as_deref().map_or_else(|| "-".to_owned(), escape),
            schema = escape(&schema_text(
                record.schema_version,
                record.schema_fingerprint.as_deref()
            )),
            size = size_cell("num live-size", record.live_bytes),
        );
    }
    out.push_str("</tbody>\n</table>\n</section>\n");
}

fn generations(out: &mut String, ledger: &LedgerView) {
    let _ = writeln!(
        out,
        "<section id=\"timeline\">\n<h2>Generations ({})</h2>\n\
         <p class=\"note\">What the ledger records per generation: keys first recorded, reserved, \
         given a new schema or retired. The ledger does not record when a reservation became active \
         or which boots declared a key between its first and last generations; the store table shows \
         each key's state and the last generation that declared it.</p>\n<table>\n<thead><tr>\
         <th class=\"num\">generation</th><th class=\"num\">parent</th><th>committed</th>\
         <th>runtime fingerprint</th><th class=\"num\">declarations</th><th>events</th></tr></thead>\n<tbody>",
        ledger.timeline.len()
    );
    for entry in &ledger.timeline {
        timeline_row(out, entry);
    }
    out.push_str("</tbody>\n</table>\n</section>\n");
}

fn timeline_row(out: &mut String, entry: &TimelineGeneration) {
    let generation = &entry.generation;
    let committed = match generation.committed_at {
        Some(ns) => format!("<td class=\"committed\" data-ns=\"{ns}\">{}</td>", utc(ns)),
        None => "<td class=\"committed none\">unknown</td>".to_owned(),
    };
    let _ = write!(
        out,
        "<tr data-generation=\"{g}\"><td class=\"num generation\">{g}</td>\
         <td class=\"num parent\">{parent}</td>{committed}<td class=\"fingerprint\">{fingerprint}</td>\
         <td class=\"num declarations\">{count}</td><td>",
        g = generation.generation,
        parent = generation.parent,
        fingerprint = generation
            .runtime_fingerprint
            .as_deref()
            .map_or_else(|| "-".to_owned(), escape),
        count = generation.declaration_count,
    );
    if entry.events.is_empty() {
        out.push_str("<span class=\"none\">no key changes recorded</span>");
    } else {
        out.push_str("<ul class=\"events\">");
        for event in &entry.events {
            let _ = write!(
                out,
                "<li class=\"event-{kind}\" data-kind=\"{kind}\" data-key=\"{key}\">\
                 <span class=\"key\">{key}</span> {detail}</li>",
                kind = Escaped(event.kind),
                key = Escaped(&event.stable_key),
                detail = Escaped(&event.detail),
            );
        }
        out.push_str("</ul>");
    }
    out.push_str("</td></tr>\n");
}

fn schema_history(out: &mut String, records: &[RecordView]) {
    out.push_str("<section id=\"schemas\">\n<h2>Schema history</h2>\n");
    let with_history: Vec<&RecordView> = records.iter().filter(|r| !r.schema_history.is_empty()).collect();
    if with_history.is_empty() {
        out.push_str("<p class=\"none\">no key has declared a schema</p>\n");
    }
    for record in with_history {
        let _ = writeln!(
            out,
            "<div class=\"schema-history\" data-key=\"{key}\">\n<h3 class=\"key\">{key}</h3>\n<table>\n\
             <thead><tr><th class=\"num\">from generation</th><th class=\"num\">version</th>\
             <th>fingerprint</th></tr></thead>\n<tbody>",
            key = Escaped(&record.stable_key)
        );
        for entry in &record.schema_history {
            schema_row(out, entry);
        }
        out.push_str("</tbody>\n</table>\n</div>\n");
    }
    out.push_str("</section>\n");
}

fn schema_row(out: &mut String, entry: &SchemaView) {
    let _ = writeln!(
        out,
        "<tr data-generation=\"{g}\"><td class=\"num generation\">{g}</td><td class=\"num version\">{v}</td>\
         <td class=\"fingerprint\">{f}</td></tr>",
        g = entry.generation,
        v = entry
            .schema_version
            .map_or_else(|| "-".to_owned(), |v| format!("v{v}")),
        f = entry
            .schema_fingerprint
            .as_deref()
            .map_or_else(|| "-".to_owned(), escape),
    );
}

fn memories(out: &mut String, mm: &MemoryManagerView, ledger: Option<&LedgerView>) {
    let _ = writeln!(
        out,
        "<section id=\"memories\">\n<h2>MemoryManager memories</h2>\n\
         <p>layout v{}, bucket size {} pages, {} buckets allocated</p>\n<table>\n<thead><tr>\
         <th class=\"num\">ID</th><th class=\"num\">pages</th><th class=\"num\">size</th>\
         <th class=\"num\">buckets</th><th>store</th></tr></thead>\n<tbody>",
        mm.layout_version, mm.bucket_size_in_pages, mm.allocated_buckets
    );
    for memory in &mm.memories {
        let owner = ledger
            .and_then(|l| l.records.iter().find(|r| r.memory_id == Some(memory.id)))
            .map_or_else(
                || "<span class=\"none\">no record</span>".to_owned(),
                |r| format!("<span class=\"key\">{}</span>", Escaped(&r.stable_key)),
            );
        let _ = writeln!(
            out,
            "<tr data-memory-id=\"{id}\"><td class=\"num id\">{id}</td><td class=\"num pages\">{pages}</td>\
             {size}<td class=\"num buckets\">{buckets}</td><td class=\"owner\">{owner}</td></tr>",
            id = memory.id,
            pages = memory.pages,
            size = size_cell("num size", Some(memory.bytes)),
            buckets = memory.buckets,
        );
    }
    out.push_str("</tbody>\n</table>\n</section>\n");
}

fn commit_store(out: &mut String, commit: &CommitStoreView, adoption_pending: bool) {
    out.push_str("<section id=\"commit-store\">\n<h2>Ledger commit slots</h2>\n");
    if adoption_pending {
        out.push_str(
            "<p class=\"note\" id=\"commit-store-pending\">none yet: the boot that adopts the ic-memory \
             ledger writes them</p>\n</section>\n",
        );
        return;
    }
    out.push_str(
        "<table>\n<thead><tr>\
         <th class=\"num\">slot</th><th>state</th><th class=\"num\">generation</th>\
         <th class=\"num\">payload bytes</th><th>note</th></tr></thead>\n<tbody>\n",
    );
    for slot in &commit.slots {
        let note = match (&slot.corruption, commit.authoritative_slot == Some(slot.slot)) {
            (Some(corruption), _) => format!("<span class=\"error\">{}</span>", Escaped(corruption)),
            (None, true) => "authoritative".to_owned(),
            (None, false) => String::new(),
        };
        slot_row(
            out,
            slot.slot,
            slot.state,
            slot.generation,
            slot.payload_bytes.map(u64::from),
            Some(&note),
        );
    }
    out.push_str("</tbody>\n</table>\n");
    if let Some(error) = &commit.recovery_error {
        let _ = writeln!(out, "<p class=\"error\">{}</p>", Escaped(error));
    }
    out.push_str("</section>\n");
}

/// One commit slot's table row, holdfast's or ic-memory's: the same cells,
/// so both tables read alike; `note` (markup the caller escaped) adds a last
/// cell.
fn slot_row(
    out: &mut String,
    slot: usize,
    state: &str,
    generation: Option<u64>,
    payload_bytes: Option<u64>,
    note: Option<&str>,
) {
    let or_dash = |value: Option<u64>| value.map_or_else(|| "-".to_owned(), |v| v.to_string());
    let note = note.map_or_else(String::new, |note| format!("<td>{note}</td>"));
    let _ = writeln!(
        out,
        "<tr data-slot=\"{slot}\"><td class=\"num\">{slot}</td><td class=\"state\">{state}</td>\
         <td class=\"num generation\">{g}</td><td class=\"num\">{p}</td>{note}</tr>",
        state = Escaped(state),
        g = or_dash(generation),
        p = or_dash(payload_bytes),
    );
}

fn size_cell(class: &str, bytes: Option<u64>) -> String {
    match bytes {
        Some(bytes) => format!(
            "<td class=\"{class}\" data-bytes=\"{bytes}\">{}</td>",
            human_bytes(bytes)
        ),
        None => format!("<td class=\"{class}\">-</td>"),
    }
}

fn schema_text(version: Option<u32>, fingerprint: Option<&str>) -> String {
    match (version, fingerprint) {
        (None, None) => "-".to_owned(),
        (Some(v), None) => format!("v{v}"),
        (None, Some(f)) => f.to_owned(),
        (Some(v), Some(f)) => format!("v{v} {f}"),
    }
}

/// `bytes` for people: `512 B`, `64 KiB`, `1.5 MiB`.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut unit = 1024u64;
    let mut index = 0;
    while index + 1 < UNITS.len() && bytes / unit >= 1024 {
        unit *= 1024;
        index += 1;
    }
    if bytes.is_multiple_of(unit) {
        format!("{} {}", bytes / unit, UNITS[index])
    } else {
        // Whole tenths, rounded down, so a size is never shown larger than it is.
        let tenths = u128::from(bytes) * 10 / u128::from(unit);
        format!("{}.{} {}", tenths / 10, tenths % 10, UNITS[index])
    }
}

/// `ns` nanoseconds after the Unix epoch as `YYYY-MM-DD hh:mm:ss UTC`.
pub fn utc(ns: u64) -> String {
    let seconds = ns / 1_000_000_000;
    let (year, month, day) = civil_date(seconds / 86_400);
    let second_of_day = seconds % 86_400;
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        second_of_day / 3600,
        second_of_day % 3600 / 60,
        second_of_day % 60
    )
}

/// The proleptic Gregorian date `days` after 1970-01-01. The calendar
/// repeats every 400 years (146,097 days); counting from 0000-03-01 puts the
/// leap day at the end of each year, so month lengths follow the fixed
/// 153-days-per-5-months pattern.
fn civil_date(days: u64) -> (u64, u64, u64) {
    // Days from 0000-03-01 to 1970-01-01.
    let days = days + 719_468;
    let era = days / 146_097;
    let day_of_era = days % 146_097;
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let year = era * 400 + year_of_era + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_turns_markup_into_text_and_shows_control_characters() {
        assert_eq!(
            escape("<script>alert('x')</script> & \"q\""),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;q&quot;"
        );
        assert_eq!(escape("\u{1b}[31mred\u{1b}[0m"), "\\u{1b}[31mred\\u{1b}[0m");
        assert_eq!(escape("a\u{0}b\u{7f}c\u{85}d"), "a\\u{0}b\\u{7f}c\\u{85}d");
        assert_eq!(escape("left\u{202e}right\u{2066}"), "left\\u{202e}right\\u{2066}");
        assert_eq!(escape("app.users.v1 é 漢"), "app.users.v1 é 漢");
        assert_eq!(escape(""), "");
    }

    #[test]
    fn escaped_text_never_contains_a_markup_character() {
        let every_ascii: String = (0u8..=127).map(char::from).collect();
        let escaped = escape(&every_ascii);
        for forbidden in ['<', '>', '"', '\'', '\u{1b}', '\u{0}', '\n'] {
            assert!(!escaped.contains(forbidden), "{forbidden:?} in {escaped}");
        }
        // Every `&` starts one of the five references.
        for (index, _) in escaped.match_indices('&') {
            let rest = &escaped[index..];
            assert!(
                ["&amp;", "&lt;", "&gt;", "&quot;", "&#39;"]
                    .iter()
                    .any(|r| rest.starts_with(r)),
                "{rest}"
            );
        }
    }

    #[test]
    fn sizes_are_shown_in_binary_units_never_rounded_up() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1024), "1 KiB");
        assert_eq!(human_bytes(65536), "64 KiB");
        assert_eq!(human_bytes(1536 * 1024), "1.5 MiB");
        assert_eq!(human_bytes(2 * 1024 * 1024 - 1), "1.9 MiB");
        assert_eq!(human_bytes(4 << 30), "4 GiB");
        assert_eq!(human_bytes(u64::MAX), "16383.9 PiB");
    }

    #[test]
    fn commit_times_are_utc_dates() {
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(951_782_400 * 1_000_000_000), "2000-02-29 00:00:00 UTC");
        assert_eq!(utc(951_868_799 * 1_000_000_000 + 999), "2000-02-29 23:59:59 UTC");
        assert_eq!(utc(1_709_251_199 * 1_000_000_000), "2024-02-29 23:59:59 UTC");
        assert_eq!(utc(4_107_542_400 * 1_000_000_000), "2100-03-01 00:00:00 UTC");
        assert_eq!(utc(u64::MAX), "2554-07-21 23:34:33 UTC");
    }
}
