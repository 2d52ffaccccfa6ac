//! Tracked instances (spec §2, §8): objects made through the runtime, named
//! by generational `InstanceHandle`s, carried across reloads. The table also
//! marks bundles busy while they are reloaded or unloaded, so creating or
//! destroying their instances is refused then (`BundleBusy`).
//!
//! [`InstanceTable`] only keeps records and never calls plugin code. The
//! `Runtime` methods at the end create and destroy tracked instances: they
//! call constructors and destructors outside the table's lock, pinned so
//! that the image running them cannot close meanwhile.

use holdfast_plugin_abi::{
    BundleId, GuestContractHandle, GuestContractInstance, GuestContractInterface, InstanceHandle,
};

use rustc_hash::FxHashSet;

use crate::error::RuntimeError;

/// One live tracked instance.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Tracked {
    pub(crate) bundle: BundleId,
    pub(crate) instance: GuestContractInstance,
    /// The interface that made it, so it is destroyed by the same code.
    pub(crate) interface: GuestContractInterface,
    /// Creation order, the order migration follows.
    pub(crate) created: u64,
}

#[derive(Debug)]
struct Slot {
    generation: u32,
    entry: Option<Tracked>,
}

/// Every tracked instance of a runtime, and the busy bundles.
#[derive(Debug, Default)]
pub(crate) struct InstanceTable {
    slots: Vec<Slot>,
    free: Vec<u32>,
    busy: FxHashSet<BundleId>,
    next_created: u64,
}

impl InstanceTable {
    pub(crate) fn is_busy(&self, bundle: BundleId) -> bool {
        // Nothing is busy almost always; a call path asks on every call.
        !self.busy.is_empty() && self.busy.contains(&bundle)
    }

    pub(crate) fn set_busy(&mut self, bundle: BundleId) {
        self.busy.insert(bundle);
    }

    pub(crate) fn clear_busy(&mut self, bundle: BundleId) {
        self.busy.remove(&bundle);
    }

    /// Records a new instance and returns its handle (`None` when every
    /// index is used).
    pub(crate) fn insert(
        &mut self,
        bundle: BundleId,
        instance: GuestContractInstance,
        interface: GuestContractInterface,
    ) -> Option<InstanceHandle> {
        let index = match self.free.pop() {
            Some(index) => index,
            None => {
                let index = u32::try_from(self.slots.len())
                    .ok()
                    .filter(|&index| index != u32::MAX)?;
                self.slots.push(Slot {
                    generation: 1,
                    entry: None,
                });
                index
            }
        };
        let created = self.next_created;
        self.next_created += 1;
        let slot = &mut self.slots[index as usize];
        slot.entry = Some(Tracked {
            bundle,
            instance,
            interface,
            created,
        });
        Some(InstanceHandle {
            index,
            generation: slot.generation,
        })
    }

    /// The live instance `handle` names.
    pub(crate) fn get(&self, handle: InstanceHandle) -> Option<&Tracked> {
        let slot = self.slots.get(handle.index as usize)?;
        (slot.generation == handle.generation && !handle.is_null())
            .then_some(slot.entry.as_ref())
            .flatten()
    }

    /// Forgets the instance; the handle (and every copy) goes stale.
    pub(crate) fn remove(&mut self, handle: InstanceHandle) -> Option<Tracked> {
        self.get(handle)?;
        let slot = &mut self.slots[handle.index as usize];
        let entry = slot.entry.take();
        // An exhausted slot stays empty for good.
        if let Some(next) = slot.generation.checked_add(1) {
            slot.generation = next;
            self.free.push(handle.index);
        }
        entry
    }

    /// Points a migrated instance at its new data and interface; its handle
    /// keeps index and generation.
    pub(crate) fn replace(
        &mut self,
        handle: InstanceHandle,
        instance: GuestContractInstance,
        interface: GuestContractInterface,
    ) {
        if let Some(slot) = self.slots.get_mut(handle.index as usize)
            && slot.generation == handle.generation
            && let Some(entry) = &mut slot.entry
        {
            entry.instance = instance;
            entry.interface = interface;
        }
    }

    /// The bundle's live instances in creation order.
    pub(crate) fn of_bundle(&self, bundle: BundleId) -> Vec<(InstanceHandle, Tracked)> {
        let mut found: Vec<_> = self
            .slots
            .iter()
            .enumerate()
            .filter_map(|(index, slot)| {
                let entry = slot.entry.filter(|entry| entry.bundle == bundle)?;
                Some((
                    InstanceHandle {
                        index: index as u32,
                        generation: slot.generation,
                    },
                    entry,
                ))
            })
            .collect();
        found.sort_by_key(|(_, entry)| entry.created);
        found
    }
}

impl super::Runtime {
    /// The table to pass to a provider's constructor and destructor: its
    /// bundle's, or the host's own for providers registered directly in the
    /// store.
    pub(crate) fn table_of(&self, bundle: BundleId) -> std::sync::Arc<super::host::HostTable> {
        super::lock(&self.hosts)
            .get(&bundle)
            .cloned()
            .unwrap_or_else(|| self.own_host.clone())
    }

    /// [`super::Runtime::create_guest_instance`].
    ///
    /// # Safety
    /// `args` must be what the contract's constructor expects.
    pub(crate) unsafe fn create_tracked(
        &self,
        handle: GuestContractHandle,
        args: *const (),
    ) -> Result<InstanceHandle, RuntimeError> {
        // Pinned throughout: the provider's image cannot close before the
        // instance is either recorded or destroyed again.
        let guard = crate::epoch::pin();
        let provider = self.store.provider(handle, &guard)?;
        let bundle = provider.bundle_id;
        let interface = *provider.interface;
        // Named only when creation fails: no allocation on the way in.
        let create_failed = || RuntimeError::InstanceCreateFailed {
            contract: format!("{}@{}", provider.contract_name, interface.contract_version.major),
        };
        let busy = || RuntimeError::BundleBusy {
            bundle: self.bundle_label(bundle),
        };
        if self.instances_read().is_busy(bundle) {
            return Err(busy());
        }
        let host = self.table_of(bundle);
        // SAFETY: the provider's image is live under `guard`; the caller
        // vouches for `args`.
        let mut instance = unsafe { (interface.create_instance)(host.api(), args) };
        let destroy = |instance| {
            // SAFETY: made by this very interface, whose image is live.
            unsafe { (interface.destroy_instance)(host.api(), instance) }
        };
        if instance.contract_id.id() == 0 {
            instance.contract_id = interface.contract_id;
        }
        if instance.contract_id != interface.contract_id {
            destroy(instance);
            return Err(create_failed());
        }
        let mut table = self.instances_write();
        // A reload that committed meanwhile would not have migrated this
        // instance: refuse rather than keep one made by a retired image.
        let unchanged = self
            .store
            .provider(handle, &guard)
            .is_ok_and(|now| std::sync::Arc::ptr_eq(&now.interface, &provider.interface));
        if table.is_busy(bundle) || !unchanged {
            drop(table);
            destroy(instance);
            return Err(busy());
        }
        match table.insert(bundle, instance, interface) {
            Some(tracked) => Ok(tracked),
            None => {
                drop(table);
                destroy(instance);
                Err(create_failed())
            }
        }
    }

    /// [`super::Runtime::destroy_guest_instance`].
    pub(crate) fn destroy_tracked(&self, instance: InstanceHandle) -> Result<(), RuntimeError> {
        let _guard = crate::epoch::pin();
        let tracked = {
            let mut table = self.instances_write();
            let tracked = *table
                .get(instance)
                .ok_or(RuntimeError::InstanceGone { instance })?;
            if table.is_busy(tracked.bundle) {
                return Err(RuntimeError::BundleBusy {
                    bundle: self.bundle_label(tracked.bundle),
                });
            }
            table.remove(instance);
            tracked
        };
        let host = self.table_of(tracked.bundle);
        // SAFETY: the image that made it is live: a reload would have
        // switched the record to the new image's instance, and this thread
        // was pinned before the record was removed.
        unsafe { (tracked.interface.destroy_instance)(host.api(), tracked.instance) };
        Ok(())
    }
}
