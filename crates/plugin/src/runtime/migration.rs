//! State migration on reload (spec §8): every tracked instance of the
//! bundle is saved with the old image's hooks, made again by the new image
//! and restored from that state, within the runtime's reload time limit.
//!
//! This module makes and destroys instances and switches the instance table
//! over; it must never publish to the registry or retire an image (the
//! lifecycle does both, after migration succeeded), and it must leave no new
//! instance behind when it fails.

use std::time::Instant;

use holdfast_plugin_abi::{
    AbiErrorCode, GuestContractInstance, GuestContractInterface, InstanceHandle, StateBlob,
};

use super::Runtime;
use super::host::HostTable;
use super::instances::Tracked;
use super::registration::{StagedRegistration, Staging, state_hooks};
use crate::error::RuntimeError;
use crate::loader::plugin_message;
use crate::manifest::ManifestData;

/// One instance carried to the new image, made but not yet switched to.
pub(super) struct Migrated {
    handle: InstanceHandle,
    instance: GuestContractInstance,
    interface: GuestContractInterface,
}
impl Runtime {
    /// `ReloadTooSlow` once a reload has run past the runtime's time limit.
    pub(super) fn check_reload_time(
        &self,
        manifest: &ManifestData,
        started: Instant,
        migrated: usize,
        total: usize,
    ) -> Result<(), RuntimeError> {
        let elapsed = started.elapsed();
        match self.reload_time_limit {
            Some(limit) if elapsed > limit => Err(RuntimeError::ReloadTooSlow {
                bundle: manifest.name.clone(),
                limit,
                elapsed,
                migrated,
                total,
            }),
            _ => Ok(()),
        }
    }

    /// Step 6 of spec §6.5 (section 8): for each tracked instance of the
    /// bundle, in creation order, save with the old hooks, create with the
    /// new constructor, restore with the new hooks. Returns the migrated
    /// instances (not yet switched to) and the handles to drop. On failure
    /// every new instance is destroyed with the new code.
    pub(super) fn migrate(
        &self,
        manifest: &ManifestData,
        host: &HostTable,
        staging: &Staging,
        started: Instant,
    ) -> Result<(Vec<Migrated>, Vec<InstanceHandle>), RuntimeError> {
        let tracked = self.instances_read().of_bundle(manifest.id);
        let total = tracked.len();
        let mut migrated: Vec<Migrated> = Vec::new();
        let mut dropped = Vec::new();
        for (handle, old) in tracked {
            if let Err(error) = self.check_reload_time(manifest, started, migrated.len(), total) {
                self.destroy_new_instances(migrated, host);
                return Err(error);
            }
            let new = staging
                .registrations
                .iter()
                .find(|staged| staged.interface.contract_id == old.interface.contract_id);
            // SAFETY: both interfaces passed registration and their images
            // are open (the old one is live, the new one staged).
            let hooks =
                new.and_then(|new| unsafe { state_hooks(&old.interface).zip(state_hooks(&new.interface)) });
            let (Some(new), Some(((save, _), (_, restore)))) = (new, hooks) else {
                dropped.push(handle);
                continue;
            };
            match self.migrate_one(manifest, host, handle, &old, new, save, restore) {
                Ok(instance) => migrated.push(Migrated {
                    handle,
                    instance,
                    interface: new.interface,
                }),
                Err(error) => {
                    self.destroy_new_instances(migrated, host);
                    return Err(error);
                }
            }
        }
        if let Err(error) = self.check_reload_time(manifest, started, migrated.len(), total) {
            self.destroy_new_instances(migrated, host);
            return Err(error);
        }
        Ok((migrated, dropped))
    }

    #[expect(
        clippy::too_many_arguments,
        reason = "one migration step needs both images' entry points"
    )]
    fn migrate_one(
        &self,
        manifest: &ManifestData,
        host: &HostTable,
        handle: InstanceHandle,
        old: &Tracked,
        new: &StagedRegistration,
        save: holdfast_plugin_abi::SaveStateFn,
        restore: holdfast_plugin_abi::RestoreStateFn,
    ) -> Result<GuestContractInstance, RuntimeError> {
        let failed = |stage: &'static str, code: u32, message: String| RuntimeError::StateMigration {
            bundle: manifest.name.clone(),
            contract: new.contract.to_string(),
            instance: handle,
            stage,
            code,
            message,
        };
        let mut blob = StateBlob::empty();
        // SAFETY: the old image is open and made this instance; `blob` is a
        // live out-parameter.
        let saved = unsafe { save(host.api(), old.instance, &mut blob) };
        if !saved.is_ok() {
            // SAFETY: the message is valid until the next call into the plugin.
            return Err(failed("save", saved.code, unsafe {
                plugin_message(saved.message)
            }));
        }
        let blob = OwnedBlob::take(blob, host);
        if blob.len() as u64 > self.config.max_state_bytes {
            return Err(failed(
                "save",
                AbiErrorCode::StateError as u32,
                format!(
                    "the saved state is {} bytes; max_state_bytes is {}",
                    blob.len(),
                    self.config.max_state_bytes
                ),
            ));
        }
        if blob.is_malformed() {
            return Err(failed(
                "save",
                AbiErrorCode::StateError as u32,
                "save_state returned a non-null blob of length 0".into(),
            ));
        }
        // SAFETY: the staged image is open; stateful contracts accept null
        // arguments (spec §8).
        let mut instance = unsafe { (new.interface.create_instance)(host.api(), std::ptr::null()) };
        if instance.contract_id.id() == 0 {
            instance.contract_id = new.interface.contract_id;
        }
        if instance.contract_id != new.interface.contract_id {
            return Err(failed(
                "create",
                AbiErrorCode::IdMismatch as u32,
                format!(
                    "create_instance returned an instance of contract {}",
                    instance.contract_id
                ),
            ));
        }
        // SAFETY: the staged image is open and made `instance`; the blob is
        // lent for the call and freed by the host afterwards.
        let restored = unsafe { restore(host.api(), instance, old.interface.contract_version, blob.view()) };
        if !restored.is_ok() {
            // SAFETY: valid until the next call into the plugin.
            let message = unsafe { plugin_message(restored.message) };
            // SAFETY: the staged image made this instance and is open.
            unsafe { (new.interface.destroy_instance)(host.api(), instance) };
            return Err(failed("restore", restored.code, message));
        }
        Ok(instance)
    }

    /// Destroys instances made by a staged image that is being discarded,
    /// with that image's code.
    pub(super) fn destroy_new_instances(&self, migrated: Vec<Migrated>, host: &HostTable) {
        for made in migrated {
            // SAFETY: made by the staged image, which is still open (it is
            // retired only after this).
            unsafe { (made.interface.destroy_instance)(host.api(), made.instance) };
        }
    }

    /// Points migrated instances at their new data and forgets dropped ones;
    /// returns the old instances to destroy with the old code.
    pub(super) fn switch_instances(
        &self,
        migrated: Vec<Migrated>,
        dropped: &[InstanceHandle],
    ) -> Vec<Tracked> {
        let mut table = self.instances_write();
        let mut old = Vec::with_capacity(migrated.len() + dropped.len());
        for instance in migrated {
            if let Some(previous) = table.get(instance.handle).copied() {
                old.push(previous);
                table.replace(instance.handle, instance.instance, instance.interface);
            }
        }
        for &handle in dropped {
            old.extend(table.remove(handle));
        }
        old
    }
}

/// A state blob the host owns from `save_state` on: freed on drop.
struct OwnedBlob<'h> {
    blob: StateBlob,
    host: &'h HostTable,
}

impl<'h> OwnedBlob<'h> {
    fn take(blob: StateBlob, host: &'h HostTable) -> Self {
        Self { blob, host }
    }

    fn len(&self) -> usize {
        self.blob.len
    }

    /// A non-null pointer with length 0 cannot have come from `alloc`.
    fn is_malformed(&self) -> bool {
        !self.blob.ptr.is_null() && self.blob.len == 0
    }

    fn view(&self) -> StateBlob {
        self.blob
    }
}

impl Drop for OwnedBlob<'_> {
    fn drop(&mut self) {
        if !self.blob.ptr.is_null() && self.blob.len > 0 {
            self.host.free_blob(self.blob);
        }
    }
}
