//! Helpers shared by the behaviour tests: declaration sets, memory images,
//! and a memory that can be cut short after a given number of written bytes.
#![allow(dead_code, reason = "each test binary uses a different subset")]

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use holdfast_memory::stable_structures::{Memory, VectorMemory};
use holdfast_memory::{AcceptAllPolicy, AllocationLedger, DeclarationSnapshot, MemoryRuntime};

/// A snapshot of labelled MemoryManager declarations.
pub(crate) fn layout(entries: &[(&str, u8)]) -> DeclarationSnapshot {
    let mut collector = holdfast_memory::DeclarationCollector::new();
    for (key, id) in entries {
        collector = collector
            .with_memory_manager(key, *id, "Store")
            .expect("valid test declaration");
    }
    collector.seal().expect("unique test declarations")
}

/// The bytes of a vector memory.
pub(crate) fn image(memory: &VectorMemory) -> Vec<u8> {
    memory.borrow().clone()
}

/// A vector memory holding `bytes`.
pub(crate) fn memory_from(bytes: &[u8]) -> VectorMemory {
    Rc::new(RefCell::new(bytes.to_vec()))
}

/// Boots `entries` over `memory` with no extra policy.
pub(crate) fn boot(
    memory: &VectorMemory,
    entries: &[(&str, u8)],
) -> Result<MemoryRuntime<VectorMemory>, holdfast_memory::RuntimeBootstrapError<std::convert::Infallible>> {
    MemoryRuntime::bootstrap(memory.clone(), layout(entries), &AcceptAllPolicy)
}

/// The ledger a boot over `memory` would start from (read-only).
pub(crate) fn recovered_ledger(memory: &VectorMemory) -> AllocationLedger {
    let before = image(memory);
    let (ledger, _) = MemoryRuntime::check(memory, layout(&[]), &AcceptAllPolicy).expect("memory recovers");
    assert_eq!(image(memory), before, "recovery must not write");
    ledger
}

/// A memory that writes at most `budget` bytes and then silently drops every
/// later write and grow, as a process killed right after its `budget`-th
/// written byte would. With no budget it only counts the bytes written.
#[derive(Clone)]
pub(crate) struct CutMemory {
    pub(crate) bytes: VectorMemory,
    budget: Rc<Cell<Option<u64>>>,
    pub(crate) written: Rc<Cell<u64>>,
}

impl CutMemory {
    pub(crate) fn new(bytes: &[u8], budget: Option<u64>) -> Self {
        Self {
            bytes: memory_from(bytes),
            budget: Rc::new(Cell::new(budget)),
            written: Rc::new(Cell::new(0)),
        }
    }
}

impl CutMemory {
    /// A counting view of `memory` (shared, not copied) that never cuts.
    pub(crate) fn counting(memory: &VectorMemory) -> Self {
        Self {
            bytes: memory.clone(),
            budget: Rc::new(Cell::new(None)),
            written: Rc::new(Cell::new(0)),
        }
    }
}

impl Memory for CutMemory {
    fn size(&self) -> u64 {
        self.bytes.size()
    }
    fn grow(&self, pages: u64) -> i64 {
        if self.budget.get() == Some(0) {
            return self.bytes.size() as i64;
        }
        self.bytes.grow(pages)
    }
    fn read(&self, offset: u64, dst: &mut [u8]) {
        self.bytes.read(offset, dst)
    }
    fn write(&self, offset: u64, src: &[u8]) {
        let allowed = match self.budget.get() {
            None => src.len(),
            Some(left) => {
                let n = left.min(src.len() as u64);
                self.budget.set(Some(left - n));
                n as usize
            }
        };
        self.written.set(self.written.get() + allowed as u64);
        if allowed > 0 {
            self.bytes.write(offset, &src[..allowed]);
        }
    }
}
