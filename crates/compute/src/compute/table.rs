//! The runtime's tables: the sharded origin table (one entry per origin hash:
//! reserved, hosted or expected) and the kind table (kind name → factory).
//!
//! Every insertion is a single atomic insert-if-absent under one exclusive
//! shard guard (guarantee G3), and every removal made on behalf of a rollback
//! names the instance or placeholder token it removes, so that a loser never
//! deletes the incumbent (fence F4). The origin table is split into 64
//! cache-line-aligned shards chosen by origin-hash bits, so that deliveries
//! to different daemons do not contend on one lock word (G1). No method here
//! calls user code, and no guard outlives a method call.
//!
//! Milestone 2 adds two entry states, *receiving* and *moved*; they are
//! local to this table.

use std::collections::hash_map::Entry;
use std::sync::Arc;

use parking_lot::RwLock;
use rustc_hash::FxHashMap;

use super::host::Instance;
use super::{DaemonHostConfig, MeshDaemon};

/// A registered daemon factory.
pub(super) type Factory = Arc<dyn Fn() -> Box<dyn MeshDaemon> + Send + Sync>;

const SHARD_COUNT: usize = 64;

/// An origin's entry.
enum OriginEntry {
    /// A spawn of instance `id` is between reservation and publication.
    Reserved { id: u64 },
    /// A live instance.
    Hosted(Arc<Instance>),
    /// A placeholder created by `expect_migration`.
    /// Boxed: placeholders are rare, and the box keeps every entry at 16
    /// bytes, which is most of an idle daemon's footprint in the table.
    Expected(Box<Placeholder>),
}

/// What `expect_migration` recorded for an inbound migration.
pub(super) struct Placeholder {
    pub(super) token: u64,
    /// The kind the inbound daemon will be restored as.
    #[cfg_attr(
        not(feature = "migration"),
        expect(dead_code, reason = "read by milestone 2's inbound path")
    )]
    pub(super) kind: String,
    /// The configuration the inbound instance will run with.
    #[cfg_attr(
        not(feature = "migration"),
        expect(dead_code, reason = "read by milestone 2's inbound path")
    )]
    pub(super) config: DaemonHostConfig,
}

/// The origin already has an entry; it was left untouched.
pub(super) struct OriginTaken;

// Each shard on its own cache lines, so that readers of different shards
// never write to a shared line.
#[repr(align(128))]
#[derive(Default)]
struct Shard(RwLock<FxHashMap<u64, OriginEntry>>);

/// Origin hash → entry, in 64 shards.
pub(super) struct OriginTable {
    shards: Box<[Shard]>,
}

impl OriginTable {
    pub(super) fn new() -> Self {
        Self {
            shards: (0..SHARD_COUNT).map(|_| Shard::default()).collect(),
        }
    }

    fn shard(&self, origin_hash: u64) -> &RwLock<FxHashMap<u64, OriginEntry>> {
        // The top bits: the map itself hashes the low ones.
        &self.shards[(origin_hash >> 58) as usize].0
    }

    /// The live instance of `origin_hash`, if one is hosted.
    pub(super) fn hosted(&self, origin_hash: u64) -> Option<Arc<Instance>> {
        match self.shard(origin_hash).read().get(&origin_hash) {
            Some(OriginEntry::Hosted(instance)) => Some(Arc::clone(instance)),
            _ => None,
        }
    }

    /// Reserves `origin_hash` for instance `id` if it has no entry.
    pub(super) fn reserve(&self, origin_hash: u64, id: u64) -> Result<(), OriginTaken> {
        match self.shard(origin_hash).write().entry(origin_hash) {
            Entry::Occupied(_) => Err(OriginTaken),
            Entry::Vacant(slot) => {
                slot.insert(OriginEntry::Reserved { id });
                Ok(())
            }
        }
    }

    /// Turns instance's own reservation into a hosted entry; `false` if the
    /// reservation is gone (swept by a shutdown).
    pub(super) fn publish(&self, instance: &Arc<Instance>) -> bool {
        let mut shard = self.shard(instance.origin_hash).write();
        match shard.get_mut(&instance.origin_hash) {
            Some(entry @ OriginEntry::Reserved { .. }) if entry.belongs_to(instance.id) => {
                *entry = OriginEntry::Hosted(Arc::clone(instance));
                true
            }
            _ => false,
        }
    }

    /// Removes the entry of `origin_hash` if instance `id` owns it (reserved
    /// or hosted); anything else is left.
    pub(super) fn remove_instance(&self, origin_hash: u64, id: u64) -> bool {
        let mut shard = self.shard(origin_hash).write();
        if shard.get(&origin_hash).is_some_and(|entry| entry.belongs_to(id)) {
            shard.remove(&origin_hash);
            return true;
        }
        false
    }

    /// Removes and returns the hosted instance of `origin_hash`; reserved and
    /// expected entries are left.
    pub(super) fn remove_hosted(&self, origin_hash: u64) -> Option<Arc<Instance>> {
        let mut shard = self.shard(origin_hash).write();
        if !matches!(shard.get(&origin_hash), Some(OriginEntry::Hosted(_))) {
            return None;
        }
        match shard.remove(&origin_hash) {
            Some(OriginEntry::Hosted(instance)) => Some(instance),
            _ => unreachable!("the entry was just seen hosted under the same guard"),
        }
    }

    /// Inserts a placeholder if `origin_hash` has no entry.
    pub(super) fn expect(&self, origin_hash: u64, placeholder: Placeholder) -> Result<(), OriginTaken> {
        match self.shard(origin_hash).write().entry(origin_hash) {
            Entry::Occupied(_) => Err(OriginTaken),
            Entry::Vacant(slot) => {
                slot.insert(OriginEntry::Expected(Box::new(placeholder)));
                Ok(())
            }
        }
    }

    /// Removes the placeholder of `origin_hash` if it carries `token` (or any
    /// placeholder when `token` is `None`); returns whether one was removed.
    pub(super) fn remove_placeholder(&self, origin_hash: u64, token: Option<u64>) -> bool {
        let mut shard = self.shard(origin_hash).write();
        let removable = matches!(
            shard.get(&origin_hash),
            Some(OriginEntry::Expected(placeholder)) if token.is_none_or(|token| placeholder.token == token)
        );
        if removable {
            shard.remove(&origin_hash);
        }
        removable
    }

    /// Empties every shard and returns the instances that were hosted.
    pub(super) fn sweep(&self) -> Vec<Arc<Instance>> {
        let mut hosted = Vec::new();
        for shard in self.shards.iter() {
            let drained: Vec<OriginEntry> = shard.0.write().drain().map(|(_, entry)| entry).collect();
            hosted.extend(drained.into_iter().filter_map(|entry| match entry {
                OriginEntry::Hosted(instance) => Some(instance),
                _ => None,
            }));
        }
        hosted
    }

    /// The number of hosted instances (placeholders and reservations excluded).
    pub(super) fn hosted_count(&self) -> usize {
        self.shards
            .iter()
            .map(|shard| {
                shard
                    .0
                    .read()
                    .values()
                    .filter(|entry| matches!(entry, OriginEntry::Hosted(_)))
                    .count()
            })
            .sum()
    }
}

impl OriginEntry {
    fn belongs_to(&self, id: u64) -> bool {
        match self {
            Self::Reserved { id: owner } => *owner == id,
            Self::Hosted(instance) => instance.id == id,
            Self::Expected(_) => false,
        }
    }
}

/// Kind name → factory. A kind is registered at most once per runtime.
#[derive(Default)]
pub(super) struct KindTable {
    factories: RwLock<FxHashMap<Arc<str>, Factory>>,
}

/// The kind was already registered; the incumbent factory was kept.
pub(super) struct KindTaken;

impl KindTable {
    pub(super) fn get(&self, kind: &str) -> Option<(Arc<str>, Factory)> {
        self.factories
            .read()
            .get_key_value(kind)
            .map(|(name, factory)| (Arc::clone(name), Arc::clone(factory)))
    }

    pub(super) fn insert(&self, kind: &str, factory: Factory) -> Result<(), KindTaken> {
        match self.factories.write().entry(Arc::from(kind)) {
            Entry::Occupied(_) => Err(KindTaken),
            Entry::Vacant(slot) => {
                slot.insert(factory);
                Ok(())
            }
        }
    }

    pub(super) fn contains(&self, kind: &str) -> bool {
        self.factories.read().contains_key(kind)
    }

    /// Removes `kind` only if it still maps to `factory` (a rollback never
    /// removes another caller's registration).
    pub(super) fn remove_own(&self, kind: &str, factory: &Factory) {
        let mut factories = self.factories.write();
        if factories.get(kind).is_some_and(|held| Arc::ptr_eq(held, factory)) {
            factories.remove(kind);
        }
    }

    pub(super) fn clear(&self) {
        // Dropping factories can run user code (their captures), so it
        // happens after the guard is released.
        let removed = std::mem::take(&mut *self.factories.write());
        drop(removed);
    }

    /// The registered kinds, sorted.
    pub(super) fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .factories
            .read()
            .keys()
            .map(|name| name.to_string())
            .collect();
        names.sort_unstable();
        names
    }
}
