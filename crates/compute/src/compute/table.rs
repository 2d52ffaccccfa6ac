//! The runtime's tables: the sharded origin table (one entry per origin hash:
//! reserved, hosted or expected) and the kind table (kind name → factory).
//!
//! Every insertion is a single atomic insert-if-absent under one exclusive
//! shard guard (guarantee G3), and every removal made on behalf of a rollback
//! names the instance or placeholder token it removes, so that a loser never
//! deletes the incumbent (fence F4). No method here calls user code, and no
//! guard outlives a method call.
//!
//! Deliveries must not contend on a shared lock word (G1). A read lock would
//! still write its lock word, so each of the 256 shards also publishes a
//! read-only view of its hosted instances through `arc-swap`: the delivery
//! path loads that view (touching only its own thread's arc-swap slot) and
//! uses the instance through that guard, without touching its reference
//! count. A guard is not a lock: writers never wait for it, so daemon code may
//! run while one is held. A publication changes the authoritative map and
//! then republishes the view, both under the shard's write lock, so the view
//! never shows an instance before the map does. Only publication republishes
//! (a copy of one shard's view, about `daemons / 256` entries, plus
//! arc-swap's check that no reader holds the old one). Removal does not: a
//! removed instance is stopped and stays in the view as a husk that every
//! reader sees as stopped, until the shard's next publication prunes it. So
//! `stop` costs a map removal, and a spawn pays for at most the husks of its
//! own shard. A husk holds nothing that grows with use: stopping frees the
//! daemon, its output log, its horizon and its latest snapshot, and leaves
//! the instance's fixed-size fields and its name (about 400 bytes; bounded
//! by `tests/stop_memory.rs`) until the shard's next spawn.
//!
//! Milestone 2 adds two entry states, *receiving* and *moved*; they are
//! local to this table.

use std::collections::hash_map::Entry;
use std::sync::Arc;

use arc_swap::ArcSwap;
use parking_lot::{RwLock, RwLockWriteGuard};
use rustc_hash::FxHashMap;

use super::host::Instance;
use super::{DaemonHostConfig, MeshDaemon};

/// A registered daemon factory.
pub(super) type Factory = Arc<dyn Fn() -> Box<dyn MeshDaemon> + Send + Sync>;

const SHARD_BITS: u32 = 8;
const SHARD_COUNT: usize = 1 << SHARD_BITS;

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
    #[expect(dead_code, reason = "read by milestone 2's inbound path")]
    pub(super) kind: String,
    /// The configuration the inbound instance will run with.
    #[expect(dead_code, reason = "read by milestone 2's inbound path")]
    pub(super) config: DaemonHostConfig,
}

/// The origin already has an entry; it was left untouched.
pub(super) struct OriginTaken;

type HostedView = FxHashMap<u64, Arc<Instance>>;

/// One shard, on its own cache line.
#[repr(align(64))]
struct Shard {
    /// Authoritative; changed only under the write lock.
    entries: RwLock<FxHashMap<u64, OriginEntry>>,
    /// The hosted entries of `entries`, republished after every change to
    /// them while the write lock is held.
    hosted: ArcSwap<HostedView>,
}

impl Shard {
    /// Applies `change` to the view of hosted instances. The caller holds
    /// `entries`' write lock (`_proof`), so views are published in the order
    /// of the changes they reflect.
    fn republish(
        &self,
        _proof: &RwLockWriteGuard<'_, FxHashMap<u64, OriginEntry>>,
        change: impl FnOnce(&mut HostedView),
    ) {
        let mut view = HostedView::clone(&self.hosted.load());
        change(&mut view);
        self.hosted.store(Arc::new(view));
    }
}

/// Origin hash → entry, in 256 shards.
pub(super) struct OriginTable {
    shards: Box<[Shard]>,
}

impl OriginTable {
    pub(super) fn new() -> Self {
        // Every shard starts from the same empty view: one allocation, not
        // one per shard.
        let empty = Arc::new(HostedView::default());
        let shard = || Shard {
            entries: RwLock::default(),
            hosted: ArcSwap::new(Arc::clone(&empty)),
        };
        Self {
            shards: (0..SHARD_COUNT).map(|_| shard()).collect(),
        }
    }

    fn shard(&self, origin_hash: u64) -> &Shard {
        // The top bits: the maps themselves hash the low ones.
        &self.shards[(origin_hash >> (64 - SHARD_BITS)) as usize]
    }

    /// The live instance of `origin_hash`, if one is hosted. Takes no lock.
    pub(super) fn hosted(&self, origin_hash: u64) -> Option<Arc<Instance>> {
        let view = self.shard(origin_hash).hosted.load();
        view.get(&origin_hash)
            .filter(|instance| !instance.is_stopped())
            .cloned()
    }

    /// Runs `visit` on the live instance of `origin_hash`, if one is hosted,
    /// without taking a lock or cloning the instance's `Arc` (the delivery
    /// path: two atomic operations fewer per event).
    pub(super) fn with_hosted<R>(&self, origin_hash: u64, visit: impl FnOnce(&Instance) -> R) -> Option<R> {
        let view = self.shard(origin_hash).hosted.load();
        view.get(&origin_hash).map(|instance| visit(instance))
    }

    /// Reserves `origin_hash` for instance `id` if it has no entry.
    pub(super) fn reserve(&self, origin_hash: u64, id: u64) -> Result<(), OriginTaken> {
        match self.shard(origin_hash).entries.write().entry(origin_hash) {
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
        let origin_hash = instance.origin_hash;
        let shard = self.shard(origin_hash);
        let mut entries = shard.entries.write();
        match entries.get_mut(&origin_hash) {
            Some(entry @ OriginEntry::Reserved { .. }) if entry.belongs_to(instance.id) => {
                *entry = OriginEntry::Hosted(Arc::clone(instance));
            }
            _ => return false,
        }
        shard.republish(&entries, |view| {
            view.retain(|_, held| !held.is_stopped());
            view.insert(origin_hash, Arc::clone(instance));
        });
        true
    }

    /// Removes the entry of `origin_hash` if instance `id` owns it (reserved
    /// or hosted); anything else is left. The caller stops a removed hosted
    /// instance: until the next publication it stays in the read view.
    pub(super) fn remove_instance(&self, origin_hash: u64, id: u64) -> bool {
        let mut entries = self.shard(origin_hash).entries.write();
        if !entries
            .get(&origin_hash)
            .is_some_and(|entry| entry.belongs_to(id))
        {
            return false;
        }
        entries.remove(&origin_hash);
        true
    }

    /// Removes and returns the hosted instance of `origin_hash`; reserved and
    /// expected entries are left. The caller stops the instance (see
    /// [`OriginTable::remove_instance`]).
    pub(super) fn remove_hosted(&self, origin_hash: u64) -> Option<Arc<Instance>> {
        let mut entries = self.shard(origin_hash).entries.write();
        if !matches!(entries.get(&origin_hash), Some(OriginEntry::Hosted(_))) {
            return None;
        }
        match entries.remove(&origin_hash) {
            Some(OriginEntry::Hosted(instance)) => Some(instance),
            _ => unreachable!("the entry was just seen hosted under the same guard"),
        }
    }

    /// Inserts a placeholder if `origin_hash` has no entry.
    pub(super) fn expect(&self, origin_hash: u64, placeholder: Placeholder) -> Result<(), OriginTaken> {
        match self.shard(origin_hash).entries.write().entry(origin_hash) {
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
        let mut entries = self.shard(origin_hash).entries.write();
        let removable = matches!(
            entries.get(&origin_hash),
            Some(OriginEntry::Expected(placeholder)) if token.is_none_or(|token| placeholder.token == token)
        );
        if removable {
            entries.remove(&origin_hash);
        }
        removable
    }

    /// Empties every shard and returns the instances that were hosted.
    pub(super) fn sweep(&self) -> Vec<Arc<Instance>> {
        let mut hosted = Vec::new();
        for shard in self.shards.iter() {
            let mut entries = shard.entries.write();
            let drained: Vec<OriginEntry> = entries.drain().map(|(_, entry)| entry).collect();
            shard.republish(&entries, HostedView::clear);
            drop(entries);
            hosted.extend(drained.into_iter().filter_map(|entry| match entry {
                OriginEntry::Hosted(instance) => Some(instance),
                _ => None,
            }));
        }
        hosted
    }

    /// The number of hosted instances (placeholders and reservations excluded).
    pub(super) fn hosted_count(&self) -> usize {
        let hosted_in = |shard: &Shard| {
            shard
                .entries
                .read()
                .values()
                .filter(|entry| matches!(entry, OriginEntry::Hosted(_)))
                .count()
        };
        self.shards.iter().map(hosted_in).sum()
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
