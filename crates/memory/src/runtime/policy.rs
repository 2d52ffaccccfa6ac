//! The policy stack every boot validates with, in order: `ic_memory.*` keys
//! only from the governance owner, MemoryManager ID ranges by declaring crate
//! (the governance range 0..=9 always; user ranges when registered), then the
//! caller's own [`AllocationPolicy`]. It decides; it never reads or writes
//! memory.

use rustc_hash::FxHashMap as HashMap;

use super::error::RuntimePolicyError;
use crate::authority::{
    MemoryManagerRangeAuthority, MemoryManagerRangeAuthorityError, memory_manager_governance_range,
};
use crate::declaration::AllocationDeclaration;
use crate::key::StableKey;
use crate::slot::{AllocationSlotDescriptor, IC_MEMORY_AUTHORITY_OWNER};
use crate::validate::AllocationPolicy;

pub(super) fn governance_authority() -> MemoryManagerRangeAuthority {
    let mut authority = MemoryManagerRangeAuthority::new();
    authority
        .reserve(
            memory_manager_governance_range(),
            IC_MEMORY_AUTHORITY_OWNER,
            Some("allocation governance".into()),
        )
        .expect("an empty table has no overlap");
    authority
}

/// The policy stack: governance keys, range authority, then the caller's.
pub(super) struct RuntimePolicy<'a, P> {
    authority: &'a MemoryManagerRangeAuthority,
    declaring_crates: HashMap<StableKey, String>,
    user: &'a P,
}

impl<'a, P: AllocationPolicy> RuntimePolicy<'a, P> {
    pub(super) fn new(
        authority: &'a MemoryManagerRangeAuthority,
        declarations: &[AllocationDeclaration],
        authorities: &[String],
        user: &'a P,
    ) -> Self {
        let declaring_crates = declarations
            .iter()
            .map(|declaration| declaration.stable_key().clone())
            .zip(authorities.iter().cloned())
            .collect();
        Self {
            authority,
            declaring_crates,
            user,
        }
    }

    fn declaring_crate(&self, key: &StableKey) -> Result<&str, RuntimePolicyError<P::Error>> {
        self.declaring_crates.get(key).map(String::as_str).ok_or_else(|| {
            RuntimePolicyError::MissingDeclarationMetadata {
                stable_key: key.clone(),
            }
        })
    }

    fn check_range(
        &self,
        key: &StableKey,
        slot: &AllocationSlotDescriptor,
    ) -> Result<(), RuntimePolicyError<P::Error>> {
        let declaring_crate = self.declaring_crate(key)?;
        let Some(id) = slot.memory_manager_id() else {
            return Err(RuntimePolicyError::Range(
                MemoryManagerRangeAuthorityError::NotMemoryManagerSlot { slot: slot.clone() },
            ));
        };
        if self.authority.has_user_ranges() || self.authority.authority_for_id(id).is_some() {
            self.authority
                .validate_id_authority(id, declaring_crate)
                .map_err(RuntimePolicyError::Range)?;
        }
        Ok(())
    }
}

impl<P: AllocationPolicy> AllocationPolicy for RuntimePolicy<'_, P> {
    type Error = RuntimePolicyError<P::Error>;

    fn validate_key(&self, key: &StableKey) -> Result<(), Self::Error> {
        let declaring_crate = self.declaring_crate(key)?;
        if key.is_ic_memory_key() && declaring_crate != IC_MEMORY_AUTHORITY_OWNER {
            return Err(RuntimePolicyError::ReservedStableKeyAuthority {
                stable_key: key.clone(),
                declaring_crate: declaring_crate.to_owned(),
            });
        }
        self.user.validate_key(key).map_err(RuntimePolicyError::Custom)
    }

    fn validate_slot(&self, key: &StableKey, slot: &AllocationSlotDescriptor) -> Result<(), Self::Error> {
        self.check_range(key, slot)?;
        self.user
            .validate_slot(key, slot)
            .map_err(RuntimePolicyError::Custom)
    }

    fn validate_reserved_slot(
        &self,
        key: &StableKey,
        slot: &AllocationSlotDescriptor,
    ) -> Result<(), Self::Error> {
        self.check_range(key, slot)?;
        self.user
            .validate_reserved_slot(key, slot)
            .map_err(RuntimePolicyError::Custom)
    }
}
