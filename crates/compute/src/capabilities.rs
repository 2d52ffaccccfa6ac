//! Capability tags a node advertises ([`CapabilitySet`]) and the tags a daemon
//! requires ([`CapabilityFilter`]). This is the whole of placement in
//! milestone 1: a spawn is refused when the mesh lacks a required tag. It
//! never schedules, discovers or ranks nodes.

use std::collections::BTreeSet;

/// The capability tags of a node, kept sorted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CapabilitySet {
    tags: BTreeSet<String>,
}

impl CapabilitySet {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// The set with `tag` added (builder style).
    pub fn with_tag(mut self, tag: impl Into<String>) -> Self {
        self.insert(tag);
        self
    }

    /// Adds `tag`; returns whether it was new.
    pub fn insert(&mut self, tag: impl Into<String>) -> bool {
        self.tags.insert(tag.into())
    }

    /// Whether `tag` is in the set.
    pub fn contains(&self, tag: &str) -> bool {
        self.tags.contains(tag)
    }

    /// The tags in ascending order.
    pub fn iter(&self) -> impl Iterator<Item = &str> + '_ {
        self.tags.iter().map(String::as_str)
    }
}

/// The tags a daemon requires of the node that hosts it. The default filter
/// requires nothing and matches every set.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CapabilityFilter {
    required: BTreeSet<String>,
}

impl CapabilityFilter {
    /// The filter that also requires `tag`.
    pub fn require(mut self, tag: impl Into<String>) -> Self {
        self.required.insert(tag.into());
        self
    }

    /// Whether `set` has every required tag.
    pub fn matches(&self, set: &CapabilitySet) -> bool {
        self.required.iter().all(|tag| set.contains(tag))
    }

    /// The required tags `set` lacks, sorted.
    pub fn missing(&self, set: &CapabilitySet) -> Vec<String> {
        self.required
            .iter()
            .filter(|tag| !set.contains(tag))
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_filter_matches_the_empty_set() {
        assert!(CapabilityFilter::default().matches(&CapabilitySet::new()));
    }

    #[test]
    fn missing_lists_absent_tags_sorted() {
        let filter = CapabilityFilter::default()
            .require("gpu")
            .require("disk")
            .require("net");
        let set = CapabilitySet::new().with_tag("net");
        assert!(!filter.matches(&set));
        assert_eq!(filter.missing(&set), vec!["disk".to_owned(), "gpu".to_owned()]);
        assert!(filter.matches(&set.with_tag("gpu").with_tag("disk")));
    }
}
