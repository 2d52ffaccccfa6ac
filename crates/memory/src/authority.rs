//! Range authority: which owner (crate) may use which MemoryManager IDs.
//!
//! A [`MemoryManagerRangeAuthority`] is a set of non-overlapping ID ranges,
//! each with an owner and a mode: `Reserved` (only the owner may declare
//! there) or `Allowed` (the owner claims it; others may use it too). The
//! runtime builds one from registered ranges plus the governance range
//! `0..=9` and consults it as policy. This module only answers questions
//! about IDs; it never reads history or memory.

use serde::Serialize;

use crate::slot::{
    AllocationSlotDescriptor, IC_MEMORY_AUTHORITY_OWNER, MEMORY_MANAGER_GOVERNANCE_MAX_ID,
    MEMORY_MANAGER_INVALID_ID, MEMORY_MANAGER_MAX_ID, MEMORY_MANAGER_MIN_ID,
};

/// An inclusive range of usable MemoryManager IDs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct MemoryManagerIdRange {
    start: u8,
    end: u8,
}

/// Who may declare inside a range.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum MemoryManagerRangeMode {
    /// Only the owner.
    Reserved,
    /// The owner and anyone else.
    Allowed,
}

/// One range with its owner.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct MemoryManagerAuthorityRecord {
    range: MemoryManagerIdRange,
    authority: String,
    mode: MemoryManagerRangeMode,
    purpose: Option<String>,
}

/// Why a range or an ID is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MemoryManagerRangeAuthorityError {
    /// `start > end`, or the range includes the sentinel 255.
    #[error(
        "MemoryManager ID range {start}..={end} is invalid (start must not exceed end; 255 is never usable)"
    )]
    InvalidRange {
        /// Start.
        start: u8,
        /// End.
        end: u8,
    },
    /// Two ranges overlap.
    #[error(
        "range {existing_start}..={existing_end} of {existing_authority} overlaps \
         {requested_start}..={requested_end} of {requested_authority}"
    )]
    OverlappingRanges {
        /// The first range's start.
        existing_start: u8,
        /// The first range's end.
        existing_end: u8,
        /// The first range's owner.
        existing_authority: String,
        /// The second range's start.
        requested_start: u8,
        /// The second range's end.
        requested_end: u8,
        /// The second range's owner.
        requested_authority: String,
    },
    /// An ID no range covers.
    #[error("MemoryManager ID {id} is not covered by any registered range")]
    UnclaimedId {
        /// The ID.
        id: u8,
    },
    /// An ID in a range reserved for another owner.
    #[error("MemoryManager ID {id} is reserved for {owner}, not {requested_by}")]
    ReservedForOtherAuthority {
        /// The ID.
        id: u8,
        /// The range's owner.
        owner: String,
        /// Who asked.
        requested_by: String,
    },
    /// An ID used in another mode than required.
    #[error("MemoryManager ID {id} is in {found:?} mode, not {expected:?}")]
    ModeMismatch {
        /// The ID.
        id: u8,
        /// Mode found.
        found: MemoryManagerRangeMode,
        /// Mode expected.
        expected: MemoryManagerRangeMode,
    },
    /// A slot that is not a MemoryManager slot.
    #[error("{slot} is not a MemoryManager slot")]
    NotMemoryManagerSlot {
        /// The slot.
        slot: AllocationSlotDescriptor,
    },
}

impl MemoryManagerIdRange {
    /// `start..=end`.
    ///
    /// # Errors
    /// [`MemoryManagerRangeAuthorityError::InvalidRange`].
    pub fn new(start: u8, end: u8) -> Result<Self, MemoryManagerRangeAuthorityError> {
        if start > end || end == MEMORY_MANAGER_INVALID_ID {
            return Err(MemoryManagerRangeAuthorityError::InvalidRange { start, end });
        }
        Ok(Self { start, end })
    }
    /// Every usable ID, `0..=254`.
    pub fn all_usable() -> Self {
        Self {
            start: MEMORY_MANAGER_MIN_ID,
            end: MEMORY_MANAGER_MAX_ID,
        }
    }
    /// First ID.
    pub fn start(&self) -> u8 {
        self.start
    }
    /// Last ID.
    pub fn end(&self) -> u8 {
        self.end
    }
    /// Whether `id` is inside.
    pub fn contains(&self, id: u8) -> bool {
        (self.start..=self.end).contains(&id)
    }
    fn overlaps(&self, other: &Self) -> bool {
        self.start <= other.end && other.start <= self.end
    }
}

/// The governance range `0..=9`, reserved for [`IC_MEMORY_AUTHORITY_OWNER`].
pub fn memory_manager_governance_range() -> MemoryManagerIdRange {
    MemoryManagerIdRange {
        start: MEMORY_MANAGER_MIN_ID,
        end: MEMORY_MANAGER_GOVERNANCE_MAX_ID,
    }
}

impl MemoryManagerAuthorityRecord {
    /// A range owned by `authority`.
    pub fn new(
        range: MemoryManagerIdRange,
        authority: impl Into<String>,
        mode: MemoryManagerRangeMode,
        purpose: Option<String>,
    ) -> Self {
        Self {
            range,
            authority: authority.into(),
            mode,
            purpose,
        }
    }
    /// The range.
    pub fn range(&self) -> MemoryManagerIdRange {
        self.range
    }
    /// The owner.
    pub fn authority(&self) -> &str {
        &self.authority
    }
    /// The mode.
    pub fn mode(&self) -> MemoryManagerRangeMode {
        self.mode
    }
    /// Why the range exists.
    pub fn purpose(&self) -> Option<&str> {
        self.purpose.as_deref()
    }
}

/// Non-overlapping ranges and their owners.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct MemoryManagerRangeAuthority {
    records: Vec<MemoryManagerAuthorityRecord>,
}

impl MemoryManagerRangeAuthority {
    /// No ranges.
    pub fn new() -> Self {
        Self::default()
    }

    /// A table from `records`, refusing overlaps.
    ///
    /// # Errors
    /// [`MemoryManagerRangeAuthorityError::OverlappingRanges`] for the first
    /// record that overlaps an earlier one.
    pub fn from_records(
        records: impl IntoIterator<Item = MemoryManagerAuthorityRecord>,
    ) -> Result<Self, MemoryManagerRangeAuthorityError> {
        let mut table = Self::new();
        for record in records {
            table.insert(record)?;
        }
        Ok(table)
    }

    /// Adds a range owned by `authority` in `Reserved` mode.
    ///
    /// # Errors
    /// [`MemoryManagerRangeAuthorityError::OverlappingRanges`].
    pub fn reserve(
        &mut self,
        range: MemoryManagerIdRange,
        authority: impl Into<String>,
        purpose: Option<String>,
    ) -> Result<&mut Self, MemoryManagerRangeAuthorityError> {
        self.insert(MemoryManagerAuthorityRecord::new(
            range,
            authority,
            MemoryManagerRangeMode::Reserved,
            purpose,
        ))?;
        Ok(self)
    }

    /// Adds `start..=end` owned by `authority` in `Reserved` mode.
    ///
    /// # Errors
    /// `InvalidRange` or `OverlappingRanges`.
    pub fn reserve_ids(
        &mut self,
        start: u8,
        end: u8,
        authority: impl Into<String>,
    ) -> Result<&mut Self, MemoryManagerRangeAuthorityError> {
        self.reserve(MemoryManagerIdRange::new(start, end)?, authority, None)
    }

    /// Adds `start..=end` owned by `authority` in `Allowed` mode.
    ///
    /// # Errors
    /// `InvalidRange` or `OverlappingRanges`.
    pub fn allow_ids(
        &mut self,
        start: u8,
        end: u8,
        authority: impl Into<String>,
    ) -> Result<&mut Self, MemoryManagerRangeAuthorityError> {
        self.insert(MemoryManagerAuthorityRecord::new(
            MemoryManagerIdRange::new(start, end)?,
            authority,
            MemoryManagerRangeMode::Allowed,
            None,
        ))?;
        Ok(self)
    }

    fn insert(
        &mut self,
        record: MemoryManagerAuthorityRecord,
    ) -> Result<(), MemoryManagerRangeAuthorityError> {
        if let Some(existing) = self.records.iter().find(|r| r.range.overlaps(&record.range)) {
            return Err(MemoryManagerRangeAuthorityError::OverlappingRanges {
                existing_start: existing.range.start,
                existing_end: existing.range.end,
                existing_authority: existing.authority.clone(),
                requested_start: record.range.start,
                requested_end: record.range.end,
                requested_authority: record.authority,
            });
        }
        self.records.push(record);
        self.records.sort_by_key(|r| r.range);
        Ok(())
    }

    /// Every record, by range.
    pub fn authorities(&self) -> &[MemoryManagerAuthorityRecord] {
        &self.records
    }

    /// The record covering `id`, if any.
    pub fn authority_for_id(&self, id: u8) -> Option<&MemoryManagerAuthorityRecord> {
        self.records.iter().find(|record| record.range.contains(id))
    }

    /// Whether `authority` may declare `id`: a range must cover it, and a
    /// `Reserved` range must be the requester's own.
    ///
    /// # Errors
    /// `UnclaimedId` or `ReservedForOtherAuthority`.
    pub fn validate_id_authority(
        &self,
        id: u8,
        authority: &str,
    ) -> Result<(), MemoryManagerRangeAuthorityError> {
        let record = self
            .authority_for_id(id)
            .ok_or(MemoryManagerRangeAuthorityError::UnclaimedId { id })?;
        if record.mode == MemoryManagerRangeMode::Reserved && record.authority != authority {
            return Err(MemoryManagerRangeAuthorityError::ReservedForOtherAuthority {
                id,
                owner: record.authority.clone(),
                requested_by: authority.to_owned(),
            });
        }
        Ok(())
    }

    /// As [`Self::validate_id_authority`] for a slot descriptor.
    ///
    /// # Errors
    /// `NotMemoryManagerSlot`, `UnclaimedId` or `ReservedForOtherAuthority`.
    pub fn validate_slot_authority(
        &self,
        slot: &AllocationSlotDescriptor,
        authority: &str,
    ) -> Result<(), MemoryManagerRangeAuthorityError> {
        let id = slot
            .memory_manager_id()
            .ok_or_else(|| MemoryManagerRangeAuthorityError::NotMemoryManagerSlot { slot: slot.clone() })?;
        self.validate_id_authority(id, authority)
    }

    /// Whether `id` is covered by a range in `mode`.
    ///
    /// # Errors
    /// `UnclaimedId` or `ModeMismatch`.
    pub fn validate_id_authority_mode(
        &self,
        id: u8,
        mode: MemoryManagerRangeMode,
    ) -> Result<(), MemoryManagerRangeAuthorityError> {
        let record = self
            .authority_for_id(id)
            .ok_or(MemoryManagerRangeAuthorityError::UnclaimedId { id })?;
        if record.mode != mode {
            return Err(MemoryManagerRangeAuthorityError::ModeMismatch {
                id,
                found: record.mode,
                expected: mode,
            });
        }
        Ok(())
    }

    /// Whether the ranges cover every usable ID `0..=254`.
    ///
    /// # Errors
    /// `UnclaimedId` naming the first uncovered ID.
    pub fn validate_complete_coverage(&self) -> Result<(), MemoryManagerRangeAuthorityError> {
        match (MEMORY_MANAGER_MIN_ID..=MEMORY_MANAGER_MAX_ID).find(|&id| self.authority_for_id(id).is_none())
        {
            Some(id) => Err(MemoryManagerRangeAuthorityError::UnclaimedId { id }),
            None => Ok(()),
        }
    }

    /// Whether any range belongs to someone other than the governance layer.
    pub(crate) fn has_user_ranges(&self) -> bool {
        self.records
            .iter()
            .any(|r| r.authority != IC_MEMORY_AUTHORITY_OWNER)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlapping_ranges_are_refused_with_both_owners() {
        let mut table = MemoryManagerRangeAuthority::new();
        table.reserve_ids(10, 19, "a").unwrap();
        let err = table.reserve_ids(15, 30, "b").unwrap_err();
        assert_eq!(
            err,
            MemoryManagerRangeAuthorityError::OverlappingRanges {
                existing_start: 10,
                existing_end: 19,
                existing_authority: "a".into(),
                requested_start: 15,
                requested_end: 30,
                requested_authority: "b".into(),
            }
        );
        assert_eq!(table.authorities().len(), 1);
    }

    #[test]
    fn reserved_range_refuses_other_owners_and_allowed_range_admits_them() {
        let mut table = MemoryManagerRangeAuthority::new();
        table
            .reserve_ids(10, 19, "a")
            .unwrap()
            .allow_ids(20, 29, "b")
            .unwrap();
        assert_eq!(table.validate_id_authority(12, "a"), Ok(()));
        assert_eq!(
            table.validate_id_authority(12, "b"),
            Err(MemoryManagerRangeAuthorityError::ReservedForOtherAuthority {
                id: 12,
                owner: "a".into(),
                requested_by: "b".into()
            })
        );
        assert_eq!(table.validate_id_authority(25, "a"), Ok(()));
        assert_eq!(
            table.validate_id_authority(30, "a"),
            Err(MemoryManagerRangeAuthorityError::UnclaimedId { id: 30 })
        );
        assert_eq!(
            table.validate_id_authority_mode(25, MemoryManagerRangeMode::Reserved),
            Err(MemoryManagerRangeAuthorityError::ModeMismatch {
                id: 25,
                found: MemoryManagerRangeMode::Allowed,
                expected: MemoryManagerRangeMode::Reserved
            })
        );
    }

    #[test]
    fn complete_coverage_names_the_first_gap() {
        let mut table = MemoryManagerRangeAuthority::new();
        table
            .reserve(memory_manager_governance_range(), IC_MEMORY_AUTHORITY_OWNER, None)
            .unwrap();
        assert_eq!(
            table.validate_complete_coverage(),
            Err(MemoryManagerRangeAuthorityError::UnclaimedId { id: 10 })
        );
        table.allow_ids(10, 254, "app").unwrap();
        assert_eq!(table.validate_complete_coverage(), Ok(()));
        assert_eq!(
            MemoryManagerIdRange::new(3, 255),
            Err(MemoryManagerRangeAuthorityError::InvalidRange { start: 3, end: 255 })
        );
    }
}
