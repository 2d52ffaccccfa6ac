//! Slots: where a logical store physically lives.
//!
//! A slot is named by an [`AllocationSlot`] and qualified by the substrate it
//! belongs to ([`AllocationSlotDescriptor`]). The first-class substrate is
//! ic-stable-structures' `MemoryManager`, whose slots are virtual-memory IDs.
//! This module owns the slot vocabulary and the MemoryManager ID rules; it
//! never decides whether a key may claim a slot (that is history's job).

use std::borrow::Cow;
use std::fmt;

use rustc_hash::FxHashMap as HashMap;
use serde::{Deserialize, Serialize};

/// The lowest usable MemoryManager ID.
pub const MEMORY_MANAGER_MIN_ID: u8 = 0;
/// The highest usable MemoryManager ID.
pub const MEMORY_MANAGER_MAX_ID: u8 = 254;
/// The MemoryManager's "unallocated bucket" sentinel; never a valid slot.
pub const MEMORY_MANAGER_INVALID_ID: u8 = 255;
/// The ID that holds the allocation ledger itself.
pub const MEMORY_MANAGER_LEDGER_ID: u8 = 0;
/// The last ID of the governance range `0..=9`, owned by this crate.
pub const MEMORY_MANAGER_GOVERNANCE_MAX_ID: u8 = 9;
/// The stable key of the ledger's own store.
pub const IC_MEMORY_LEDGER_STABLE_KEY: &str = "ic_memory.ledger.v1";
/// The label of the ledger's own store.
pub const IC_MEMORY_LEDGER_LABEL: &str = "MemoryLayoutLedger";
/// The authority (owner) name of the governance range.
pub const IC_MEMORY_AUTHORITY_OWNER: &str = "ic-memory";
/// The substrate name of ic-stable-structures' MemoryManager.
pub const MEMORY_MANAGER_SUBSTRATE: &str = "ic-stable-structures.memory_manager";
/// The descriptor version of MemoryManager slot descriptors.
pub const MEMORY_MANAGER_DESCRIPTOR_VERSION: u32 = 1;

/// A physical allocation unit.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum AllocationSlot {
    /// A MemoryManager virtual memory, ID 0..=254.
    MemoryManagerId(u8),
    /// A named partition of some other substrate.
    NamedPartition(String),
    /// Any other substrate's slot, described by kind, version and value.
    Custom {
        /// What kind of slot this is.
        kind: String,
        /// The version of that kind's encoding.
        version: u32,
        /// The slot's value in that encoding.
        value: String,
    },
}

/// A slot together with the substrate it belongs to.
///
/// Two descriptors denote the same slot only when substrate, version and slot
/// are all equal.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "RawSlotDescriptor")]
pub struct AllocationSlotDescriptor {
    slot: AllocationSlot,
    // Borrowed for the standard MemoryManager substrate: most descriptors in
    // a ledger are that one, and decoding them allocates nothing for it.
    substrate: Cow<'static, str>,
    descriptor_version: u32,
}

/// Why a slot descriptor is unusable.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AllocationSlotError {
    /// ID 255 is the MemoryManager's unallocated sentinel.
    #[error("MemoryManager ID {id} is the unallocated sentinel and can never hold a store")]
    SentinelMemoryManagerId {
        /// The ID found.
        id: u8,
    },
    /// A substrate, partition or kind name that is empty or too long.
    #[error("slot field {field} must be 1..=256 bytes of printable ASCII")]
    InvalidName {
        /// Which field.
        field: &'static str,
    },
}

impl AllocationSlotDescriptor {
    /// A MemoryManager slot.
    ///
    /// # Errors
    /// [`AllocationSlotError::SentinelMemoryManagerId`] for ID 255.
    pub fn memory_manager(id: u8) -> Result<Self, AllocationSlotError> {
        if id == MEMORY_MANAGER_INVALID_ID {
            return Err(AllocationSlotError::SentinelMemoryManagerId { id });
        }
        Ok(Self {
            slot: AllocationSlot::MemoryManagerId(id),
            substrate: Cow::Borrowed(MEMORY_MANAGER_SUBSTRATE),
            descriptor_version: MEMORY_MANAGER_DESCRIPTOR_VERSION,
        })
    }

    /// A slot of another substrate.
    ///
    /// # Errors
    /// [`AllocationSlotError`] when a name is empty, too long or not printable
    /// ASCII, or when a MemoryManager slot uses the sentinel ID.
    pub fn new(
        slot: AllocationSlot,
        substrate: impl Into<String>,
        descriptor_version: u32,
    ) -> Result<Self, AllocationSlotError> {
        let substrate = substrate.into();
        check_name("substrate", &substrate)?;
        match &slot {
            AllocationSlot::MemoryManagerId(id) if *id == MEMORY_MANAGER_INVALID_ID => {
                return Err(AllocationSlotError::SentinelMemoryManagerId { id: *id });
            }
            AllocationSlot::MemoryManagerId(_) => {}
            AllocationSlot::NamedPartition(name) => check_name("partition", name)?,
            AllocationSlot::Custom { kind, value, .. } => {
                check_name("kind", kind)?;
                check_name("value", value)?;
            }
        }
        let substrate = if substrate == MEMORY_MANAGER_SUBSTRATE {
            Cow::Borrowed(MEMORY_MANAGER_SUBSTRATE)
        } else {
            Cow::Owned(substrate)
        };
        Ok(Self {
            slot,
            substrate,
            descriptor_version,
        })
    }

    /// The slot.
    pub fn slot(&self) -> &AllocationSlot {
        &self.slot
    }

    /// The substrate name.
    pub fn substrate(&self) -> &str {
        &self.substrate
    }

    /// The descriptor version.
    pub fn descriptor_version(&self) -> u32 {
        self.descriptor_version
    }

    /// The MemoryManager ID, when this is a standard MemoryManager slot.
    pub fn memory_manager_id(&self) -> Option<u8> {
        match self.slot {
            AllocationSlot::MemoryManagerId(id) if self.is_standard_memory_manager() => Some(id),
            _ => None,
        }
    }

    pub(crate) fn is_standard_memory_manager(&self) -> bool {
        // Every constructor borrows the substrate name exactly when it is the
        // MemoryManager's, so no string comparison is needed here.
        matches!(self.slot, AllocationSlot::MemoryManagerId(_))
            && matches!(self.substrate, Cow::Borrowed(_))
            && self.descriptor_version == MEMORY_MANAGER_DESCRIPTOR_VERSION
    }
}

impl fmt::Display for AllocationSlotDescriptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.slot, self.is_standard_memory_manager()) {
            (AllocationSlot::MemoryManagerId(id), true) => write!(f, "MemoryManager ID {id}"),
            (AllocationSlot::MemoryManagerId(id), false) => {
                write!(f, "{} v{} ID {id}", self.substrate, self.descriptor_version)
            }
            (AllocationSlot::NamedPartition(name), _) => {
                write!(
                    f,
                    "{} v{} partition {name:?}",
                    self.substrate, self.descriptor_version
                )
            }
            (AllocationSlot::Custom { kind, version, value }, _) => write!(
                f,
                "{} v{} {kind} v{version} {value:?}",
                self.substrate, self.descriptor_version
            ),
        }
    }
}

/// The unchecked wire shape of a descriptor; only [`AllocationSlotDescriptor::new`]
/// turns it into a descriptor.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSlotDescriptor {
    slot: AllocationSlot,
    substrate: String,
    descriptor_version: u32,
}

impl TryFrom<RawSlotDescriptor> for AllocationSlotDescriptor {
    type Error = AllocationSlotError;
    fn try_from(raw: RawSlotDescriptor) -> Result<Self, Self::Error> {
        Self::new(raw.slot, raw.substrate, raw.descriptor_version)
    }
}

/// The slots seen so far, each with what claimed it: a table for standard
/// MemoryManager IDs (nearly every slot) and a map for the rest.
pub(crate) struct SlotSet<'a, K> {
    memory_manager: [Option<&'a K>; 256],
    other: HashMap<&'a AllocationSlotDescriptor, &'a K>,
}

impl<K> Default for SlotSet<'_, K> {
    fn default() -> Self {
        Self {
            memory_manager: [None; 256],
            other: HashMap::default(),
        }
    }
}

impl<'a, K> SlotSet<'a, K> {
    /// Adds `slot` for `key`; returns the key already there, if any.
    pub(crate) fn insert(&mut self, slot: &'a AllocationSlotDescriptor, key: &'a K) -> Option<&'a K> {
        match slot.memory_manager_id() {
            Some(id) => self.memory_manager[usize::from(id)].replace(key),
            None => self.other.insert(slot, key),
        }
    }
}

pub(crate) fn check_name(field: &'static str, text: &str) -> Result<(), AllocationSlotError> {
    if is_printable_ascii(text, 256) {
        Ok(())
    } else {
        Err(AllocationSlotError::InvalidName { field })
    }
}

/// Non-empty, at most `max` bytes, every byte printable ASCII (space included).
pub(crate) fn is_printable_ascii(text: &str, max: usize) -> bool {
    !text.is_empty() && text.len() <= max && text.bytes().all(|b| (0x20..0x7f).contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sentinel_id_is_rejected_everywhere() {
        assert_eq!(
            AllocationSlotDescriptor::memory_manager(255),
            Err(AllocationSlotError::SentinelMemoryManagerId { id: 255 })
        );
        assert_eq!(
            AllocationSlotDescriptor::new(AllocationSlot::MemoryManagerId(255), "x", 1),
            Err(AllocationSlotError::SentinelMemoryManagerId { id: 255 })
        );
        assert_eq!(
            AllocationSlotDescriptor::memory_manager(254)
                .unwrap()
                .memory_manager_id(),
            Some(254)
        );
    }

    #[test]
    fn foreign_substrate_is_not_a_memory_manager_slot() {
        let slot = AllocationSlotDescriptor::new(AllocationSlot::MemoryManagerId(3), "other", 1).unwrap();
        assert_eq!(slot.memory_manager_id(), None);
        assert_ne!(slot, AllocationSlotDescriptor::memory_manager(3).unwrap());
    }
}
