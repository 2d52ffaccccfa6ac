//! The generation timeline of a recovered ledger: for every committed
//! generation, the key events the ledger itself records as having happened
//! in it.
//!
//! A ledger keeps, per key, the generation that first recorded it, the last
//! generation that declared (or reserved) it, the generation that retired
//! it and every schema change with its generation; per generation, its
//! parent, runtime fingerprint, declaration count and commit time. The
//! timeline regroups exactly those facts by generation. It never guesses:
//! the ledger does not record the generation at which a reservation became
//! active, nor the boots that declared a key between its first and last
//! generations, so no event claims either (the store table shows each key's
//! current state and last-declared generation instead). This module only
//! reads a ledger recovery accepted; it never touches an image.

use std::collections::BTreeMap;

use holdfast_memory::{AllocationRecord, AllocationState, GenerationRecord, SchemaMetadata};
use serde::Serialize;

use crate::inspect::{GenerationView, generation_view};

/// One committed generation and what the ledger records as happening in it.
/// Field names are part of the JSON contract (docs/CLI.md).
#[derive(Debug, Serialize)]
pub struct TimelineGeneration {
    /// The generation record.
    #[serde(flatten)]
    pub generation: GenerationView,
    /// The key events of this generation, in the ledger's record order
    /// (first-commit order).
    pub events: Vec<TimelineEvent>,
}

/// One event of one key.
#[derive(Debug, Serialize)]
pub struct TimelineEvent {
    /// `appeared`, `reserved`, `reserved_again`, `schema_changed` or
    /// `retired` (docs/CLI.md).
    pub kind: &'static str,
    /// The key.
    pub stable_key: String,
    /// Its MemoryManager ID (null for other substrates).
    pub memory_id: Option<u8>,
    /// Its slot as text.
    pub slot: String,
    /// In words.
    pub detail: String,
}

/// The timeline of a ledger's `generations`, oldest first, with the events
/// of `records` attached to the generation they name.
///
/// Complexity: O(records + schema entries + generations · log generations).
/// An event naming a generation without a record cannot come from a ledger
/// recovery accepted (records never name a generation past the current one
/// and generations form the chain 1..=N); should one appear, it is kept on
/// the nearest later generation (or the last) rather than dropped.
pub fn timeline<'a>(
    records: impl IntoIterator<Item = &'a AllocationRecord>,
    generations: &[GenerationRecord],
) -> Vec<TimelineGeneration> {
    let mut by_generation: BTreeMap<u64, Vec<TimelineEvent>> = BTreeMap::new();
    for record in records {
        for (generation, event) in record_events(record) {
            by_generation.entry(generation).or_default().push(event);
        }
    }
    let mut timeline: Vec<TimelineGeneration> = generations
        .iter()
        .map(|record| TimelineGeneration {
            generation: generation_view(record),
            events: Vec::new(),
        })
        .collect();
    for (generation, events) in by_generation {
        let index = timeline
            .partition_point(|entry| entry.generation.generation < generation)
            .min(timeline.len().saturating_sub(1));
        if let Some(entry) = timeline.get_mut(index) {
            entry.events.extend(events);
        }
    }
    timeline
}

/// Every event `record` names, with the generation it names.
fn record_events(record: &AllocationRecord) -> Vec<(u64, TimelineEvent)> {
    let event = |kind: &'static str, detail: String| TimelineEvent {
        kind,
        stable_key: record.stable_key().to_string(),
        memory_id: record.slot().memory_manager_id(),
        slot: record.slot().to_string(),
        detail,
    };
    let first = record.first_generation();
    let history = record.schema_history();
    let initial_schema = history
        .first()
        .filter(|entry| entry.generation() == first)
        .map(|entry| entry.schema());
    let mut events = Vec::new();
    let place = where_slot(record);
    if record.state() == AllocationState::Reserved {
        events.push((
            first,
            event(
                "reserved",
                format!("reserved {place}{}", schema_suffix(initial_schema)),
            ),
        ));
        if record.last_seen_generation() > first {
            events.push((
                record.last_seen_generation(),
                event("reserved_again", format!("reservation {place} refreshed")),
            ));
        }
    } else {
        events.push((
            first,
            event(
                "appeared",
                format!("first recorded {place}{}", schema_suffix(initial_schema)),
            ),
        ));
    }
    let mut previous = initial_schema;
    for entry in history.iter().skip(usize::from(initial_schema.is_some())) {
        events.push((
            entry.generation(),
            event(
                "schema_changed",
                format!(
                    "schema {} → {}",
                    describe_schema(previous),
                    describe_schema(Some(entry.schema()))
                ),
            ),
        ));
        previous = Some(entry.schema());
    }
    if let Some(retired) = record.retired_generation() {
        events.push((
            retired,
            event(
                "retired",
                format!("retired; {} is never used by another key", record.slot()),
            ),
        ));
    }
    events
}

fn where_slot(record: &AllocationRecord) -> String {
    match record.slot().memory_manager_id() {
        Some(id) => format!("on ID {id}"),
        None => format!("on {}", record.slot()),
    }
}

fn schema_suffix(schema: Option<&SchemaMetadata>) -> String {
    match schema {
        Some(schema) if !schema.is_empty() => format!(" with schema {}", describe_schema(Some(schema))),
        _ => String::new(),
    }
}

/// A schema in words: `v2 (sha256:ab)`, `v2`, `sha256:ab` or `none`.
pub fn describe_schema(schema: Option<&SchemaMetadata>) -> String {
    let Some(schema) = schema else {
        return "none".to_owned();
    };
    match (schema.schema_version(), schema.schema_fingerprint()) {
        (None, None) => "none".into(),
        (Some(v), None) => format!("v{v}"),
        (None, Some(f)) => f.to_owned(),
        (Some(v), Some(f)) => format!("v{v} ({f})"),
    }
}

#[cfg(test)]
mod tests {
    use holdfast_memory::{AllocationSlotDescriptor, SchemaMetadataRecord, StableKey};

    use super::*;

    fn record(
        key: &str,
        state: AllocationState,
        [first, last, retired]: [u64; 3],
        schemas: &[(u64, u32)],
    ) -> AllocationRecord {
        AllocationRecord::new(
            StableKey::parse(key).unwrap(),
            AllocationSlotDescriptor::memory_manager(100).unwrap(),
            state,
            first,
            last,
            (retired > 0).then_some(retired),
            None,
            schemas
                .iter()
                .map(|&(g, v)| SchemaMetadataRecord::new(g, SchemaMetadata::new(Some(v), None).unwrap()))
                .collect(),
        )
        .unwrap()
    }

    fn generations(count: u64) -> Vec<GenerationRecord> {
        (1..=count)
            .map(|g| GenerationRecord::new(g, g - 1, None, 1, None))
            .collect()
    }

    fn summary(timeline: &[TimelineGeneration]) -> Vec<(u64, Vec<(&str, &str)>)> {
        timeline
            .iter()
            .map(|entry| {
                (
                    entry.generation.generation,
                    entry.events.iter().map(|e| (e.kind, e.detail.as_str())).collect(),
                )
            })
            .collect()
    }

    #[test]
    fn events_land_on_the_generations_the_ledger_names() {
        let records = [
            record("app.kept.v1", AllocationState::Reserved, [2, 4, 0], &[]),
            record("app.typed.v1", AllocationState::Active, [1, 3, 0], &[(3, 1)]),
            record("app.gone.v1", AllocationState::Retired, [1, 1, 4], &[(1, 7)]),
        ];
        let timeline = timeline(&records, &generations(4));
        assert_eq!(
            summary(&timeline),
            [
                (
                    1,
                    vec![
                        ("appeared", "first recorded on ID 100"),
                        ("appeared", "first recorded on ID 100 with schema v7"),
                    ]
                ),
                (2, vec![("reserved", "reserved on ID 100")]),
                (3, vec![("schema_changed", "schema none → v1")]),
                (
                    4,
                    vec![
                        ("reserved_again", "reservation on ID 100 refreshed"),
                        (
                            "retired",
                            "retired; MemoryManager ID 100 is never used by another key"
                        ),
                    ]
                ),
            ]
        );
    }

    #[test]
    fn a_generation_without_events_is_still_listed() {
        let records = [record("app.a.v1", AllocationState::Active, [1, 3, 0], &[])];
        let timeline = timeline(&records, &generations(3));
        assert_eq!(
            summary(&timeline),
            [
                (1, vec![("appeared", "first recorded on ID 100")]),
                (2, vec![]),
                (3, vec![]),
            ]
        );
    }
}
