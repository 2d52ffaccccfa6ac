//! [`RuntimeStore`]: the contract registry. Slots hold providers (a bundle's
//! interface for one contract); handles name slots by index and generation.
//!
//! Readers never block: the registry is one immutable snapshot (slots,
//! generations, registration sequence numbers, and an index from contract ID
//! to slots) behind a crossbeam-epoch pointer of the default collector.
//! Every change builds a new snapshot under a writer mutex, publishes it with
//! one atomic swap and defers freeing the old one until every thread pinned
//! at that moment has unpinned. So a pointer from
//! [`RuntimeStore::resolve_guest_contract`], and everything reached through
//! it, stays valid while the calling thread holds a guard pinned *before* the
//! resolve. This module never loads libraries or calls plugin code.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crossbeam_epoch::{self as epoch, Atomic, Guard, Owned};
use holdfast_plugin_abi::{
    BundleId, GuestContractHandle, GuestContractId, GuestContractInterface, PluginDescriptor,
};
use rustc_hash::FxHashMap;

use crate::error::RegistryError;

/// The longest provider or contract name a descriptor may carry.
const MAX_DESCRIPTOR_NAME: usize = 256;

/// One bundle's provision of one contract.
#[derive(Debug)]
pub(crate) struct Provider {
    pub(crate) interface: Arc<GuestContractInterface>,
    pub(crate) bundle_id: BundleId,
    pub(crate) provider_name: String,
    pub(crate) contract_name: String,
    /// Registration order; kept across swaps, so "earliest" is stable.
    sequence: u64,
}

/// A provider staged by the runtime, published by [`RuntimeStore::commit`].
#[derive(Debug)]
pub(crate) struct StagedProvider {
    pub(crate) interface: Arc<GuestContractInterface>,
    pub(crate) bundle_id: BundleId,
    pub(crate) provider_name: String,
    pub(crate) contract_name: String,
}

/// One change of a committed batch. Swaps and vacates name the slot by
/// handle, so a slot the host emptied through the public API (and that may
/// since hold someone else's provider) is never touched.
#[derive(Debug)]
pub(crate) enum Change {
    /// Replace the interface of a live slot, keeping generation and order;
    /// fails if the handle is no longer live.
    Swap {
        handle: GuestContractHandle,
        provider: StagedProvider,
    },
    /// Make a reserved slot live.
    Publish { index: u32, provider: StagedProvider },
    /// Remove a live provider (its generation moves on); nothing if the
    /// handle is no longer live.
    Vacate { handle: GuestContractHandle },
}

impl StagedProvider {
    fn with_sequence(self, sequence: u64) -> Provider {
        Provider {
            interface: self.interface,
            bundle_id: self.bundle_id,
            provider_name: self.provider_name,
            contract_name: self.contract_name,
            sequence,
        }
    }
}

#[derive(Clone, Debug)]
enum SlotState {
    Vacant,
    /// Held for a staged registration: readers see it as vacant.
    Reserved,
    Live(Arc<Provider>),
    /// The generation is exhausted: never reused.
    Retired,
}

#[derive(Clone, Debug)]
struct Slot {
    state: SlotState,
    generation: u32,
}

/// A live slot in the index, with its provider's minor version, so a
/// lookup reads neither the provider nor its interface.
#[derive(Clone, Copy, Debug)]
struct IndexEntry {
    slot: u32,
    minor: u32,
}

/// One published state of the registry.
#[derive(Clone, Debug, Default)]
struct Snapshot {
    slots: Vec<Slot>,
    /// Contract ID → live slots, in registration order.
    index: FxHashMap<u64, Vec<IndexEntry>>,
    /// Vacant slots, reused before new ones are appended.
    free: Vec<u32>,
    next_sequence: u64,
    /// Moves on with every publication, so two snapshots never share one.
    version: u64,
}

impl Snapshot {
    /// The live provider named by `handle`, or why there is none.
    fn live(&self, handle: GuestContractHandle) -> Result<&Provider, RegistryError> {
        let GuestContractHandle { index, generation } = handle;
        let slot = match self.slots.get(index as usize) {
            Some(slot) if !handle.is_null() => slot,
            _ => return Err(RegistryError::InvalidHandle { index }),
        };
        if slot.generation != generation {
            return Err(RegistryError::StaleHandle { index, generation });
        }
        match &slot.state {
            SlotState::Live(provider) => Ok(provider),
            SlotState::Vacant | SlotState::Reserved | SlotState::Retired => {
                Err(RegistryError::SlotVacant { index })
            }
        }
    }

    fn matches(
        &self,
        contract_id: GuestContractId,
        min_minor: u32,
    ) -> impl Iterator<Item = GuestContractHandle> + '_ {
        self.index
            .get(&contract_id.id())
            .into_iter()
            .flatten()
            .filter(move |entry| entry.minor >= min_minor)
            .map(|entry| GuestContractHandle {
                index: entry.slot,
                generation: self.slots[entry.slot as usize].generation,
            })
    }

    fn insert(&mut self, provider: Provider) -> Result<GuestContractHandle, RegistryError> {
        let handle = self.reserve()?;
        self.make_live(handle.index, provider);
        Ok(handle)
    }

    /// Takes a vacant slot (or appends one) and marks it reserved.
    fn reserve(&mut self) -> Result<GuestContractHandle, RegistryError> {
        let index = match self.free.pop() {
            Some(index) => index,
            None => {
                let index = u32::try_from(self.slots.len())
                    .ok()
                    .filter(|&index| index != u32::MAX)
                    .ok_or(RegistryError::CapacityExceeded)?;
                self.slots.push(Slot {
                    state: SlotState::Vacant,
                    generation: 1,
                });
                index
            }
        };
        let slot = &mut self.slots[index as usize];
        slot.state = SlotState::Reserved;
        Ok(GuestContractHandle {
            index,
            generation: slot.generation,
        })
    }

    fn make_live(&mut self, index: u32, provider: Provider) {
        let contract_id = provider.interface.contract_id.id();
        let minor = provider.interface.contract_version.minor;
        self.slots[index as usize].state = SlotState::Live(Arc::new(provider));
        self.index
            .entry(contract_id)
            .or_default()
            .push(IndexEntry { slot: index, minor });
        self.sort_index(contract_id);
    }

    /// Puts `provider` in the live slot `index` in place of its provider
    /// (same contract ID), keeping generation and registration order.
    fn replace_live(&mut self, index: u32, provider: Provider) {
        let contract_id = provider.interface.contract_id.id();
        let minor = provider.interface.contract_version.minor;
        self.slots[index as usize].state = SlotState::Live(Arc::new(provider));
        if let Some(entry) = self
            .index
            .get_mut(&contract_id)
            .and_then(|entries| entries.iter_mut().find(|entry| entry.slot == index))
        {
            entry.minor = minor;
        }
    }

    fn apply(&mut self, change: Change) -> Result<(), RegistryError> {
        match change {
            Change::Vacate { handle } => {
                if self.live(handle).is_ok() {
                    self.vacate(handle.index);
                }
            }
            Change::Swap { handle, provider } => {
                let sequence = self.live(handle)?.sequence;
                self.replace_live(handle.index, provider.with_sequence(sequence));
            }
            Change::Publish { index, provider } => {
                match self.slots.get(index as usize) {
                    Some(slot) if matches!(slot.state, SlotState::Reserved) => {}
                    _ => return Err(RegistryError::SlotVacant { index }),
                }
                let sequence = self.next_sequence();
                self.make_live(index, provider.with_sequence(sequence));
            }
        }
        Ok(())
    }

    fn next_sequence(&mut self) -> u64 {
        let sequence = self.next_sequence;
        self.next_sequence += 1;
        sequence
    }

    /// Keeps the slots of `contract_id` in registration order (a reused slot
    /// may have a lower index than an older registration).
    fn sort_index(&mut self, contract_id: u64) {
        let slots = &self.slots;
        if let Some(indices) = self.index.get_mut(&contract_id) {
            indices.sort_by_key(|entry| match &slots[entry.slot as usize].state {
                SlotState::Live(provider) => provider.sequence,
                SlotState::Vacant | SlotState::Reserved | SlotState::Retired => u64::MAX,
            });
        }
    }

    fn vacate(&mut self, index: u32) {
        let slot = &mut self.slots[index as usize];
        let SlotState::Live(provider) = std::mem::replace(&mut slot.state, SlotState::Vacant) else {
            return;
        };
        let contract_id = provider.interface.contract_id.id();
        if let Some(indices) = self.index.get_mut(&contract_id) {
            indices.retain(|held| held.slot != index);
            if indices.is_empty() {
                self.index.remove(&contract_id);
            }
        }
        self.move_generation_on(index);
    }

    /// Frees a vacated slot for reuse under the next generation, or retires
    /// it for good when its generations are used up.
    fn move_generation_on(&mut self, index: u32) {
        let slot = &mut self.slots[index as usize];
        slot.state = SlotState::Vacant;
        match slot.generation.checked_add(1) {
            Some(next) => {
                slot.generation = next;
                self.free.push(index);
            }
            None => slot.state = SlotState::Retired,
        }
    }
}

/// The contract registry (see the module documentation for its concurrency
/// contract).
#[derive(Debug)]
pub struct RuntimeStore {
    current: Atomic<Snapshot>,
    /// The version of `current`, stored after the swap and before the old
    /// snapshot is deferred: a reader pinned when it sees a version `v`
    /// keeps the snapshot of version `v` alive (see `CachedContract`).
    version: AtomicU64,
    writer: Mutex<()>,
}

impl Default for RuntimeStore {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for RuntimeStore {
    fn drop(&mut self) {
        // SAFETY: `&mut self` proves no other thread can reach the store, and
        // readers' pointers are only valid while they borrow it; the snapshot
        // is freed exactly once here.
        unsafe {
            let current = self.current.load(Ordering::Acquire, epoch::unprotected());
            if !current.is_null() {
                drop(current.into_owned());
            }
        }
    }
}

/// Reads a descriptor string: present, UTF-8, at most 256 bytes.
///
/// # Safety
/// The view must be readable for the call.
unsafe fn descriptor_string(
    view: holdfast_plugin_abi::StringView,
    what: &str,
) -> Result<String, RegistryError> {
    // SAFETY: the caller guarantees the view is readable.
    let text = unsafe { view.to_str() };
    match text {
        Ok(Some(text)) if text.len() <= MAX_DESCRIPTOR_NAME => Ok(text.to_owned()),
        Ok(Some(_)) => Err(RegistryError::InvalidDescriptor {
            reason: format!("{what} is longer than 256 bytes"),
        }),
        Ok(None) => Err(RegistryError::InvalidDescriptor {
            reason: format!("{what} is absent"),
        }),
        Err(_) => Err(RegistryError::InvalidDescriptor {
            reason: format!("{what} is not UTF-8"),
        }),
    }
}

/// Refuses a guard that does not protect what the registry defers: every
/// deferral here (and in the runtime) goes to crossbeam-epoch's default
/// collector, and a guard of another collector, or an `unprotected` one,
/// does not hold that collector's epoch back.
#[inline]
pub(crate) fn check_guard(guard: &Guard) -> Result<(), RegistryError> {
    if guard.collector() == Some(epoch::default_collector()) {
        Ok(())
    } else {
        Err(RegistryError::ForeignGuard)
    }
}

impl RuntimeStore {
    /// An empty registry.
    pub fn new() -> Self {
        Self {
            current: Atomic::new(Snapshot::default()),
            version: AtomicU64::new(0),
            writer: Mutex::new(()),
        }
    }

    fn lock_writer(&self) -> MutexGuard<'_, ()> {
        // The snapshot is replaced atomically, so a panic while holding the
        // lock leaves nothing half-written.
        self.writer.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn snapshot<'g>(&self, guard: &'g Guard) -> &'g Snapshot {
        let shared = self.current.load(Ordering::Acquire, guard);
        // SAFETY: the pointer is never null (set in `new`, replaced only by
        // `publish`), and the snapshot it names is freed only after every
        // guard pinned before its replacement is dropped, `guard` included.
        unsafe { shared.deref() }
    }

    /// Runs `read` on the current snapshot. A thread that is already pinned
    /// (callers of `resolve` must be, to use its result) reads under its own
    /// pin instead of pinning again, which halves the cost of a lookup.
    fn read<R>(&self, read: impl FnOnce(&Snapshot) -> R) -> R {
        if epoch::is_pinned() {
            // SAFETY: this thread holds a guard of the default collector for
            // the whole call (it cannot be dropped from another thread), so
            // no snapshot it can load now is freed before the call returns;
            // `unprotected` only skips taking a second guard.
            let guard = unsafe { epoch::unprotected() };
            read(self.snapshot(guard))
        } else {
            let guard = epoch::pin();
            read(self.snapshot(&guard))
        }
    }

    /// Applies `change` to a copy of the current snapshot and publishes it.
    fn publish<T>(
        &self,
        change: impl FnOnce(&mut Snapshot) -> Result<T, RegistryError>,
    ) -> Result<T, RegistryError> {
        let _writer = self.lock_writer();
        let guard = epoch::pin();
        let old = self.current.load(Ordering::Acquire, &guard);
        // SAFETY: as in `snapshot`: non-null and protected by `guard`.
        let mut next = unsafe { old.deref() }.clone();
        let outcome = change(&mut next)?;
        next.version += 1;
        let version = next.version;
        let previous = self.current.swap(Owned::new(next), Ordering::AcqRel, &guard);
        self.version.store(version, Ordering::SeqCst);
        // SAFETY: `previous` is unreachable from the store from now on, and
        // crossbeam frees it only after every thread pinned now has unpinned.
        unsafe { guard.defer_destroy(previous) };
        guard.flush();
        Ok(outcome)
    }

    /// Registers `interface` as `bundle_id`'s provider of its contract and
    /// publishes it at once. The provider name (from `descriptor`) and the
    /// interface are copied. The contract ID is not checked against the
    /// name (the runtime does that for plugins).
    ///
    /// # Errors
    /// `InvalidDescriptor` for absent or non-UTF-8 descriptor strings;
    /// `DuplicateContract` if the bundle already provides the contract;
    /// `CapacityExceeded` when no slot index is left.
    ///
    /// # Safety
    /// The descriptor's strings must be readable during the call, and the
    /// code and tables `interface` points to must stay valid while the slot
    /// lives.
    pub unsafe fn register_guest_contract(
        &self,
        descriptor: PluginDescriptor,
        interface: &'static GuestContractInterface,
        contract_name: String,
        bundle_id: BundleId,
    ) -> Result<GuestContractHandle, RegistryError> {
        // SAFETY: the caller guarantees the descriptor's strings are readable.
        let provider_name = unsafe { descriptor_string(descriptor.name, "the provider name") }?;
        // SAFETY: as above.
        unsafe { descriptor_string(descriptor.contract_name, "the contract name") }?;
        let interface = Arc::new(*interface);
        self.publish(|snapshot| {
            let contract_id = interface.contract_id.id();
            let duplicate = snapshot.matches(interface.contract_id, 0).any(|handle| {
                matches!(&snapshot.slots[handle.index as usize].state,
                    SlotState::Live(provider) if provider.bundle_id == bundle_id)
            });
            if duplicate {
                return Err(RegistryError::DuplicateContract {
                    contract_id,
                    bundle_id: bundle_id.id(),
                });
            }
            let sequence = snapshot.next_sequence();
            snapshot.insert(Provider {
                interface,
                bundle_id,
                provider_name,
                contract_name,
                sequence,
            })
        })
    }

    /// Removes the provider `handle` names; its slot's generation moves on,
    /// so the handle (and every copy) goes stale.
    ///
    /// # Errors
    /// `InvalidHandle`, `StaleHandle` or `SlotVacant`.
    pub fn unregister_guest_contract(&self, handle: GuestContractHandle) -> Result<(), RegistryError> {
        self.publish(|snapshot| {
            snapshot.live(handle)?;
            snapshot.vacate(handle.index);
            Ok(())
        })
    }

    /// Replaces the interface of the live slot `index`, keeping its
    /// generation and registration order: handles stay valid. The new
    /// interface must be for the same contract ID (another major with the
    /// same ID is accepted).
    ///
    /// # Errors
    /// `InvalidHandle` (no such slot), `SlotVacant`, `ContractIdMismatch`.
    pub fn swap_guest_contract_interface(
        &self,
        index: u32,
        interface: Arc<GuestContractInterface>,
    ) -> Result<(), RegistryError> {
        self.publish(|snapshot| {
            let slot = snapshot
                .slots
                .get(index as usize)
                .ok_or(RegistryError::InvalidHandle { index })?;
            let SlotState::Live(provider) = &slot.state else {
                return Err(RegistryError::SlotVacant { index });
            };
            let expected = provider.interface.contract_id;
            if interface.contract_id != expected {
                return Err(RegistryError::ContractIdMismatch {
                    index,
                    expected,
                    found: interface.contract_id,
                });
            }
            let replacement = Provider {
                interface,
                bundle_id: provider.bundle_id,
                provider_name: provider.provider_name.clone(),
                contract_name: provider.contract_name.clone(),
                sequence: provider.sequence,
            };
            snapshot.replace_live(index, replacement);
            Ok(())
        })
    }

    /// The earliest-registered provider of `contract_id` whose minor version
    /// is at least `min_minor` (0 accepts any).
    ///
    /// # Errors
    /// `NotFound`.
    pub fn find_guest_contract(
        &self,
        contract_id: GuestContractId,
        min_minor: u32,
    ) -> Result<GuestContractHandle, RegistryError> {
        self.read(|snapshot| snapshot.matches(contract_id, min_minor).next())
            .ok_or(RegistryError::NotFound {
                contract_id: contract_id.id(),
                min_minor,
            })
    }

    /// Writes up to `out.len()` matching handles in registration order and
    /// returns the total number of matches.
    pub fn find_all_guest_contracts(
        &self,
        contract_id: GuestContractId,
        min_minor: u32,
        out: &mut [GuestContractHandle],
    ) -> usize {
        self.read(|snapshot| {
            let mut total = 0;
            for handle in snapshot.matches(contract_id, min_minor) {
                if let Some(place) = out.get_mut(total) {
                    *place = handle;
                }
                total += 1;
            }
            total
        })
    }

    /// The current interface of `handle`'s provider.
    ///
    /// The pointer (and the code and tables it leads to) is valid only while
    /// the calling thread holds an epoch guard pinned **before** this call
    /// (`crossbeam_epoch::pin()`), and for no longer: once the guard drops, a
    /// reload may free it. Prefer a guard-scoped accessor where one exists.
    ///
    /// # Errors
    /// `InvalidHandle`, `StaleHandle` or `SlotVacant`.
    pub fn resolve_guest_contract(
        &self,
        handle: GuestContractHandle,
    ) -> Result<*const GuestContractInterface, RegistryError> {
        self.read(|snapshot| {
            snapshot
                .live(handle)
                .map(|provider| Arc::as_ptr(&provider.interface))
        })
    }

    /// Resolves `handle` under `guard`: the reference lives as long as the
    /// guard, which is what keeps it valid. The guard must be pinned on the
    /// default collector (`holdfast_plugin::epoch::pin()`), the one the
    /// registry defers its frees on.
    ///
    /// # Errors
    /// `ForeignGuard` for a guard of another collector (or an unprotected
    /// one); otherwise as [`RuntimeStore::resolve_guest_contract`].
    pub fn resolve_pinned<'g>(
        &self,
        handle: GuestContractHandle,
        guard: &'g Guard,
    ) -> Result<&'g GuestContractInterface, RegistryError> {
        check_guard(guard)?;
        self.snapshot(guard)
            .live(handle)
            .map(|provider| &*provider.interface)
    }

    /// The number of live providers.
    pub fn len(&self) -> usize {
        self.read(|snapshot| {
            snapshot
                .slots
                .iter()
                .filter(|slot| matches!(slot.state, SlotState::Live(_)))
                .count()
        })
    }

    /// Whether no provider is live.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The number of allocated slots, live, vacant or retired.
    pub fn slot_count(&self) -> usize {
        self.read(|snapshot| snapshot.slots.len())
    }
    // The runtime's staging and commit operations (spec §6.2, §6.5 step 7).

    /// Holds a slot for a staged registration. Readers see it as vacant
    /// until [`RuntimeStore::commit`] publishes it; the returned handle is
    /// the one it will have.
    pub(crate) fn reserve_slot(&self) -> Result<GuestContractHandle, RegistryError> {
        self.publish(Snapshot::reserve)
    }

    /// Gives reserved slots back with their generation moved on, so the
    /// handles handed out for them never become valid.
    pub(crate) fn release_reserved(&self, indices: &[u32]) {
        if indices.is_empty() {
            return;
        }
        let released: Result<(), RegistryError> = self.publish(|snapshot| {
            for &index in indices {
                if matches!(snapshot.slots.get(index as usize), Some(slot) if matches!(slot.state, SlotState::Reserved))
                {
                    snapshot.move_generation_on(index);
                }
            }
            Ok(())
        });
        released.expect("releasing reservations cannot fail");
    }

    /// Applies every change in one publication: readers see all of them or
    /// none. Vacates go first, then swaps, then publications in the order
    /// given (which becomes their registration order).
    ///
    /// # Errors
    /// `StaleHandle` or `SlotVacant` if a swap names a slot that is no longer
    /// live, `SlotVacant` if a publication names one that is not reserved;
    /// nothing is published then.
    pub(crate) fn commit(&self, changes: Vec<Change>) -> Result<(), RegistryError> {
        self.publish(|snapshot| {
            let (mut vacates, mut others): (Vec<_>, Vec<_>) = changes
                .into_iter()
                .partition(|change| matches!(change, Change::Vacate { .. }));
            others.sort_by_key(|change| matches!(change, Change::Publish { .. }));
            vacates.append(&mut others);
            for change in vacates {
                snapshot.apply(change)?;
            }
            Ok(())
        })
    }

    /// The live provider `handle` names, under `guard`.
    pub(crate) fn provider<'g>(
        &self,
        handle: GuestContractHandle,
        guard: &'g Guard,
    ) -> Result<&'g Provider, RegistryError> {
        self.snapshot(guard).live(handle)
    }

    /// The name of a contract of another name already holding `contract_id`,
    /// if any (spec §6.3: one ID names one contract).
    pub(crate) fn name_holding(&self, contract_id: GuestContractId) -> Option<String> {
        self.read(|snapshot| {
            snapshot.matches(contract_id, 0).next().and_then(|handle| {
                match &snapshot.slots[handle.index as usize].state {
                    SlotState::Live(provider) => Some(provider.contract_name.clone()),
                    _ => None,
                }
            })
        })
    }

    /// The bundles providing `contract_id` at `min_minor` or later.
    pub(crate) fn providing_bundles(&self, contract_id: GuestContractId, min_minor: u32) -> Vec<BundleId> {
        self.read(|snapshot| {
            snapshot
                .matches(contract_id, min_minor)
                .filter_map(|handle| match &snapshot.slots[handle.index as usize].state {
                    SlotState::Live(provider) => Some(provider.bundle_id),
                    _ => None,
                })
                .collect()
        })
    }

    /// The version of the current snapshot (each publication makes a new
    /// one; versions are never reused). A thread pinned before this load
    /// keeps the snapshot of the returned version alive: the version moves
    /// on before a replaced snapshot is deferred.
    #[inline]
    pub(crate) fn version(&self) -> u64 {
        self.version.load(Ordering::SeqCst)
    }

    /// Resolves `handle` in the snapshot current under `guard`, with that
    /// snapshot's version.
    pub(crate) fn resolve_versioned<'g>(
        &self,
        handle: GuestContractHandle,
        guard: &'g Guard,
    ) -> (u64, Result<&'g GuestContractInterface, RegistryError>) {
        let snapshot = self.snapshot(guard);
        let resolved = snapshot.live(handle).map(|provider| &*provider.interface);
        (snapshot.version, resolved)
    }
}
