//! Booting and planning a [`DeclaredLayout`]: declarations with their
//! declaring crates, plus MemoryManager ID ranges — what the default
//! runtime's static registry holds, and what a declarations file carries.
//!
//! [`MemoryRuntime::bootstrap_layout`] is the boot the default runtime runs
//! (`bootstrap_default_memory_manager` builds the layout from the registry
//! and calls it), and [`MemoryRuntime::plan_layout`] is the same boot on a
//! read-only view, so `holdfast check` on an exported layout gives exactly
//! the verdict the build's own bootstrap would. Both prepare the layout the
//! same way, before memory is touched: the range table (the governance range
//! `0..=9` first, then each range in order; an overlap is
//! `RuntimeBootstrapError::Range`), then the snapshot with the ledger's own
//! declaration first (a duplicate — including any entry on ID 0 or with the
//! ledger's key — is `RuntimeBootstrapError::Registry`). Validation then
//! uses the one policy stack of `policy.rs`. This module adds no rule of its
//! own and never writes outside the boot's commit.

use ic_stable_structures::Memory;

use super::error::RuntimeBootstrapError;
use super::memory_runtime::{LayoutPlan, MemoryRuntime};
use super::policy::governance_authority;
use crate::authority::{MemoryManagerAuthorityRecord, MemoryManagerRangeAuthority};
use crate::declaration::DeclarationSnapshot;
use crate::declarations_file::DeclaredLayout;
use crate::registry::{StaticMemoryDeclarationError, snapshot_with_authorities};
use crate::validate::AllocationPolicy;

/// A layout ready for validation: the snapshot (ledger's own declaration
/// first), the declaring crate of each of its declarations, and the range
/// table.
struct PreparedLayout {
    snapshot: DeclarationSnapshot,
    authorities: Vec<String>,
    authority: MemoryManagerRangeAuthority,
}

impl<M: Memory + Clone> MemoryRuntime<M> {
    /// Boots `layout` over `memory` exactly as the default runtime boots its
    /// registry: the ledger's own declaration and the governance range are
    /// added, `ic_memory.*` keys are accepted only from the governance owner,
    /// and when any range is declared every declaration must lie in a range
    /// its own crate may use (an ID outside every range is
    /// `Policy(Range(UnclaimedId))`); then `policy`.
    ///
    /// ```
    /// use holdfast_memory::stable_structures::VectorMemory;
    /// use holdfast_memory::{
    ///     AcceptAllPolicy, AllocationDeclaration, DeclaredAllocation, DeclaredLayout, DeclaredRange,
    ///     MemoryManagerIdRange, MemoryManagerRangeMode, MemoryRuntime,
    /// };
    ///
    /// let users = AllocationDeclaration::memory_manager("app.users.v1", 100, "Users").unwrap();
    /// let layout = DeclaredLayout::new(
    ///     vec![DeclaredAllocation::new(users, "my_canister").unwrap()],
    ///     vec![DeclaredRange::new(
    ///         MemoryManagerIdRange::new(100, 109).unwrap(),
    ///         "my_canister",
    ///         MemoryManagerRangeMode::Reserved,
    ///         None,
    ///     )
    ///     .unwrap()],
    /// );
    /// let runtime = MemoryRuntime::bootstrap_layout(VectorMemory::default(), &layout, &AcceptAllPolicy).unwrap();
    /// assert_eq!(runtime.validated().generation(), 1);
    /// ```
    ///
    /// # Errors
    /// `Range(..)` for overlapping ranges and `Registry(Declaration(..))`
    /// for duplicate declarations, both before memory is read; otherwise as
    /// [`Self::bootstrap`]. A refusal writes nothing.
    pub fn bootstrap_layout<P: AllocationPolicy>(
        memory: M,
        layout: &DeclaredLayout,
        policy: &P,
    ) -> Result<Self, RuntimeBootstrapError<P::Error>> {
        let prepared = prepare(layout)?;
        Self::boot(
            memory,
            prepared.snapshot,
            prepared.authorities,
            &prepared.authority,
            policy,
        )
    }

    /// What [`Self::bootstrap_layout`] of `layout` would do, on a read-only
    /// view (nothing is written): the same preparation, recovery and policy
    /// stack, reported as [`Self::plan`] reports it.
    ///
    /// # Errors
    /// The preparation errors of [`Self::bootstrap_layout`] (the boot would
    /// refuse before reading memory), then the recovery errors of
    /// [`Self::bootstrap`].
    pub fn plan_layout<P: AllocationPolicy>(
        memory: &M,
        layout: &DeclaredLayout,
        policy: &P,
    ) -> Result<LayoutPlan<P::Error>, RuntimeBootstrapError<P::Error>> {
        let prepared = prepare(layout)?;
        Self::plan_prepared(
            memory,
            prepared.snapshot,
            prepared.authorities,
            &prepared.authority,
            policy,
        )
    }
}

/// The range table, then the snapshot, in the order the default runtime has
/// always checked them.
fn prepare<P>(layout: &DeclaredLayout) -> Result<PreparedLayout, RuntimeBootstrapError<P>> {
    let mut authority = governance_authority();
    for range in layout.ranges() {
        let record = MemoryManagerAuthorityRecord::new(
            range.range(),
            range.declared_by(),
            range.mode(),
            range.purpose().map(str::to_owned),
        );
        // One record at a time, so an overlap names the earlier range as
        // `existing` and this one as `requested`.
        authority = MemoryManagerRangeAuthority::from_records(
            authority.authorities().iter().cloned().chain([record]),
        )
        .map_err(RuntimeBootstrapError::Range)?;
    }
    let (snapshot, authorities) =
        snapshot_with_authorities(layout.declarations()).map_err(RuntimeBootstrapError::Registry)?;
    let snapshot = match layout.runtime_fingerprint() {
        Some(fingerprint) => snapshot
            .with_runtime_fingerprint(fingerprint)
            .map_err(|err| RuntimeBootstrapError::Registry(StaticMemoryDeclarationError::Declaration(err)))?,
        None => snapshot,
    };
    Ok(PreparedLayout {
        snapshot,
        authorities,
        authority,
    })
}
