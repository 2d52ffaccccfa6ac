//! Human and JSON output of the reports. Tables come from comfy-table;
//! colour (only the verdict words and warnings) is used only when stdout is a
//! terminal and `NO_COLOR` is unset. Nothing here decides anything: it only
//! shows what `inspect` and `check` found.

use std::fmt::Write as _;
use std::io::IsTerminal;

use comfy_table::presets::ASCII_BORDERS_ONLY_CONDENSED;
use comfy_table::{Cell, CellAlignment, Table};
use serde::Serialize;

use crate::check::CheckReport;
use crate::inspect::{IcMemoryView, InspectReport};

/// Whether to colour output.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Colour {
    /// ANSI colours for verdicts and warnings.
    Ansi,
    /// Plain text.
    Plain,
}

impl Colour {
    /// Colour when stdout is a terminal and `NO_COLOR` is not set.
    pub fn for_stdout() -> Self {
        if std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none() {
            Self::Ansi
        } else {
            Self::Plain
        }
    }

    fn paint(self, code: &str, text: &str) -> String {
        match self {
            Self::Ansi => format!("\u{1b}[{code}m{text}\u{1b}[0m"),
            Self::Plain => text.to_owned(),
        }
    }

    fn good(self, text: &str) -> String {
        self.paint("1;32", text)
    }

    fn bad(self, text: &str) -> String {
        self.paint("1;31", text)
    }

    fn warn(self, text: &str) -> String {
        self.paint("33", text)
    }
}

/// `value` as pretty JSON.
pub fn json<T: Serialize>(value: &T) -> String {
    serde_json::to_string_pretty(value).expect("reports have string keys and plain values")
}

fn table(header: &[&str]) -> Table {
    let mut table = Table::new();
    table
        .load_preset(ASCII_BORDERS_ONLY_CONDENSED)
        .set_header(header.to_vec());
    table
}

fn right(value: impl ToString) -> Cell {
    Cell::new(value.to_string()).set_alignment(CellAlignment::Right)
}

fn opt(value: Option<impl ToString>) -> String {
    value.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

/// The human form of an inspect report.
pub fn inspect_human(report: &InspectReport, colour: Colour) -> String {
    let mut out = String::new();
    let mm = &report.memory_manager;
    let _ = writeln!(
        out,
        "image {} ({} bytes, {} read)",
        report.image.path, report.image.bytes, report.image.bytes_read
    );
    let _ = writeln!(
        out,
        "\nMemoryManager: layout v{}, bucket size {} pages, {} buckets allocated",
        mm.layout_version, mm.bucket_size_in_pages, mm.allocated_buckets
    );
    let mut memories = table(&["id", "pages", "bytes", "buckets"]);
    for memory in &mm.memories {
        memories.add_row(vec![
            right(memory.id),
            right(memory.pages),
            right(memory.bytes),
            right(memory.buckets),
        ]);
    }
    let _ = writeln!(out, "{memories}");

    if let Some(ic_memory) = &report.ic_memory {
        ic_memory_section(&mut out, report, ic_memory);
    }
    let commit = &report.commit_store;
    let adoption_pending = report.ic_memory.as_ref().is_some_and(|ic| ic.state == "pending");
    let _ = writeln!(
        out,
        "\nledger commit store:{}",
        if adoption_pending {
            " none yet (the adopting boot writes it)"
        } else {
            ""
        }
    );
    let mut slots = table(&["slot", "state", "generation", "payload bytes", "note"]);
    for slot in &commit.slots {
        let note = match (commit.authoritative_slot == Some(slot.slot), &slot.corruption) {
            (_, Some(corruption)) => corruption.clone(),
            (true, None) => "authoritative".to_owned(),
            (false, None) => String::new(),
        };
        slots.add_row(vec![
            right(slot.slot),
            Cell::new(slot.state),
            right(opt(slot.generation)),
            right(opt(slot.payload_bytes)),
            Cell::new(note),
        ]);
    }
    if !adoption_pending {
        let _ = writeln!(out, "{slots}");
    }

    match (&report.ledger, &report.ledger_error) {
        (Some(ledger), _) => {
            let _ = writeln!(out, "\nallocations at generation {}:", ledger.current_generation);
            let mut records = table(&[
                "stable key",
                "slot",
                "state",
                "first",
                "last seen",
                "retired",
                "schema",
                "label",
                "live bytes",
            ]);
            for record in &ledger.records {
                let schema = match (record.schema_version, &record.schema_fingerprint) {
                    (None, None) => "-".to_owned(),
                    (version, fingerprint) => format!(
                        "{}{}",
                        version.map_or(String::new(), |v| format!("v{v} ")),
                        fingerprint.as_deref().unwrap_or("")
                    )
                    .trim()
                    .to_owned(),
                };
                records.add_row(vec![
                    Cell::new(&record.stable_key),
                    Cell::new(
                        record
                            .memory_id
                            .map_or_else(|| record.slot.clone(), |id| id.to_string()),
                    ),
                    Cell::new(record.state),
                    right(record.first_generation),
                    right(record.last_seen_generation),
                    right(opt(record.retired_generation)),
                    Cell::new(schema),
                    Cell::new(record.label.as_deref().unwrap_or("-")),
                    right(opt(record.live_bytes)),
                ]);
            }
            let _ = writeln!(out, "{records}");
            let _ = writeln!(
                out,
                "\ngenerations: {} committed; the latest {}:",
                ledger.generation_count,
                ledger.recent_generations.len()
            );
            let mut generations = table(&[
                "generation",
                "parent",
                "fingerprint",
                "declarations",
                "committed at (ns)",
            ]);
            for generation in &ledger.recent_generations {
                generations.add_row(vec![
                    right(generation.generation),
                    right(generation.parent),
                    Cell::new(generation.runtime_fingerprint.as_deref().unwrap_or("-")),
                    right(generation.declaration_count),
                    right(opt(generation.committed_at)),
                ]);
            }
            let _ = writeln!(out, "{generations}");
        }
        (None, Some(error)) => {
            let _ = writeln!(out, "\n{} {error}", colour.bad("no ledger to show:"));
        }
        (None, None) => {}
    }
    if report.warnings.is_empty() {
        let _ = writeln!(out, "\nno warnings");
    } else {
        let _ = writeln!(
            out,
            "\n{}",
            colour.warn(&format!("{} warnings:", report.warnings.len()))
        );
        for warning in &report.warnings {
            let _ = writeln!(out, "  - [{}] {}", warning.kind, warning.message);
        }
    }
    out
}

/// What an image whose ID 0 holds an ic-memory 0.5 ledger says about it: the
/// adoption, ic-memory's own slots and the full schema history (the records
/// and generations follow in the usual tables).
fn ic_memory_section(out: &mut String, report: &InspectReport, ic_memory: &IcMemoryView) {
    let _ = writeln!(
        out,
        "\nic-memory 0.5 ledger ({}): {}",
        ic_memory.state, ic_memory.message
    );
    if !ic_memory.slots.is_empty() {
        let mut slots = table(&["ic-memory slot", "state", "generation", "payload bytes"]);
        for slot in &ic_memory.slots {
            slots.add_row(vec![
                right(slot.slot),
                Cell::new(slot.state),
                right(opt(slot.generation)),
                right(opt(slot.payload_bytes)),
            ]);
        }
        let _ = writeln!(out, "{slots}");
    }
    let Some(ledger) = &report.ledger else {
        return;
    };
    let mut history = table(&[
        "stable key",
        "from generation",
        "schema version",
        "schema fingerprint",
    ]);
    for record in &ledger.records {
        for entry in &record.schema_history {
            history.add_row(vec![
                Cell::new(&record.stable_key),
                right(entry.generation),
                right(opt(entry.schema_version)),
                Cell::new(entry.schema_fingerprint.as_deref().unwrap_or("-")),
            ]);
        }
    }
    let _ = writeln!(out, "schema history:\n{history}");
}

/// The human form of a check report.
pub fn check_human(report: &CheckReport, colour: Colour) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "image {} at generation {}; declarations {} ({} form)",
        report.image.path, report.current_generation, report.declarations, report.declarations_form
    );
    if let Some(adoption) = &report.adoption {
        let _ = writeln!(
            out,
            "ID 0 holds a ledger written by ic-memory 0.5: an accepted boot {adoption}, then commits as usual"
        );
    }
    if report.accepted() {
        let next = report.next_generation.map_or_else(
            || "nothing changes: the boot commits no generation and writes nothing".to_owned(),
            |generation| format!("the boot commits generation {generation}"),
        );
        let _ = writeln!(out, "{}: {next}", colour.good("ACCEPTED"));
        if !report.changes.is_empty() {
            let mut changes = table(&["change", "stable key", "slot", "detail"]);
            for change in &report.changes {
                changes.add_row(vec![
                    Cell::new(change.kind),
                    Cell::new(change.stable_key.as_deref().unwrap_or("-")),
                    Cell::new(change.slot.as_deref().unwrap_or("-")),
                    Cell::new(&change.message),
                ]);
            }
            let _ = writeln!(out, "{changes}");
        }
        return out;
    }
    let _ = writeln!(
        out,
        "{}: {} conflicts; a boot of this build would be refused and write nothing",
        colour.bad("REFUSED"),
        report.conflicts.len()
    );
    for (index, conflict) in report.conflicts.iter().enumerate() {
        let _ = writeln!(out, "{}. [{}] {}", index + 1, conflict.kind, conflict.message);
        if let Some(recorded) = &conflict.recorded {
            let _ = writeln!(
                out,
                "   history: {} on {} ({}, generations {}..={}{})",
                recorded.stable_key,
                recorded.slot,
                recorded.state,
                recorded.first_generation,
                recorded.last_seen_generation,
                recorded
                    .retired_generation
                    .map_or_else(String::new, |g| format!(", retired at {g}"))
            );
        }
    }
    out
}
