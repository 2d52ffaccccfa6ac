//! The node's Prometheus metrics (`GET /metrics`, spec/host.md §5), kept
//! with prometheus-client. Counters are bumped where things happen; the
//! per-kind daemon counts are computed when the page is scraped.
//!
//! This module only counts and renders; it never decides anything.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// The label of the per-kind gauge.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct KindLabel {
    pub(crate) kind: String,
    pub(crate) status: String,
}

/// Every metric of a node.
#[derive(Default)]
pub(crate) struct Metrics {
    pub(crate) events_accepted: Counter,
    pub(crate) events_processed: Counter,
    pub(crate) process_errors: Counter,
    pub(crate) duplicates: Counter,
    pub(crate) commits: Counter,
    pub(crate) snapshot_bytes: Counter,
    pub(crate) reloads: Counter,
    pub(crate) reloads_rolled_back: Counter,
    pub(crate) journal_depth: Gauge,
    pub(crate) daemons: Family<KindLabel, Gauge>,
}

impl Metrics {
    /// The registry that renders them.
    pub(crate) fn registry(&self) -> Registry {
        let mut registry = Registry::with_prefix("holdfast");
        registry.register(
            "events_accepted",
            "Events journaled durably and acknowledged",
            self.events_accepted.clone(),
        );
        registry.register(
            "events_processed",
            "Events processed by their daemon",
            self.events_processed.clone(),
        );
        registry.register(
            "process_errors",
            "Events whose daemon returned an error",
            self.process_errors.clone(),
        );
        registry.register(
            "duplicate_events",
            "Events answered from an idempotency key instead of journaled again",
            self.duplicates.clone(),
        );
        registry.register("commits", "Database commits", self.commits.clone());
        registry.register(
            "snapshot_bytes",
            "Bytes of daemon snapshots written",
            self.snapshot_bytes.clone(),
        );
        registry.register("reloads", "Successful bundle reloads", self.reloads.clone());
        registry.register(
            "reloads_rolled_back",
            "Bundle reloads that failed and were rolled back",
            self.reloads_rolled_back.clone(),
        );
        registry.register(
            "journal_depth",
            "Journaled events not yet covered by a snapshot",
            self.journal_depth.clone(),
        );
        registry.register("daemons", "Daemons by kind and status", self.daemons.clone());
        registry
    }

    /// The Prometheus text exposition.
    pub(crate) fn render(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry())
            .expect("writing metrics into a String cannot fail");
        out
    }
}
