//! The memories a case runs over: a base image shared by every case and
//! thread ([`SparseImage`], pages that are not all zero), and a
//! copy-on-write view of it that counts writes and grows ([`FuzzMemory`]).
//!
//! Images are tens of megabytes (each MemoryManager bucket is 8 MiB) but a
//! case touches a few pages, so a case copies only the pages it writes, and
//! a million cases cost no more than their mutations. Reads and writes out
//! of bounds panic as `VectorMemory`'s do (stable memory traps), so a call
//! that reads past the image shows up as a panic of that call.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;

use ic_stable_structures::Memory;

use crate::image::WASM_PAGE_SIZE;

const PAGE: usize = WASM_PAGE_SIZE as usize;
type Page = [u8; PAGE];

/// The most pages a [`FuzzMemory`] grows to: 512 GiB, about what a canister
/// may hold. A grow beyond it fails (returns -1) as stable memory's does, so
/// a header claiming more than any memory holds reaches the callers' grow
/// failure paths instead of exhausting the machine.
pub const MAX_FUZZ_PAGES: u64 = 1 << 23;

/// A read-only image: its size and the pages that are not all zero.
#[derive(Clone, Debug, Default)]
pub struct SparseImage {
    pages: HashMap<u64, Arc<Page>>,
    size_pages: u64,
}

impl SparseImage {
    /// The image of `memory`'s bytes.
    pub fn of<M: Memory>(memory: &M) -> Self {
        let size_pages = memory.size();
        let mut pages = HashMap::new();
        let mut page = Box::new([0u8; PAGE]);
        for index in 0..size_pages {
            memory.read(index * WASM_PAGE_SIZE, &mut page[..]);
            if page.iter().any(|&b| b != 0) {
                pages.insert(index, Arc::from(page.clone()));
            }
        }
        Self { pages, size_pages }
    }

    /// Size in pages.
    pub fn size_pages(&self) -> u64 {
        self.size_pages
    }

    /// The whole image as bytes (for writing it to a file).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut bytes = vec![0u8; (self.size_pages * WASM_PAGE_SIZE) as usize];
        for (&index, page) in &self.pages {
            let start = (index * WASM_PAGE_SIZE) as usize;
            bytes[start..start + PAGE].copy_from_slice(&page[..]);
        }
        bytes
    }
}

/// A copy-on-write memory over a [`SparseImage`] that counts what is
/// written. Clones share the same bytes and counters (as `VectorMemory`'s
/// clones share one vector); [`FuzzMemory::fork`] makes an independent copy.
#[derive(Clone)]
pub struct FuzzMemory {
    inner: Rc<Inner>,
}

struct Inner {
    pages: RefCell<HashMap<u64, Arc<Page>>>,
    size_pages: Cell<u64>,
    written_bytes: Cell<u64>,
    write_calls: Cell<u64>,
    grown_pages: Cell<u64>,
}

impl FuzzMemory {
    /// A fresh view of `image`, with zeroed counters.
    pub fn new(image: &SparseImage) -> Self {
        Self::from_parts(image.pages.clone(), image.size_pages)
    }

    fn from_parts(pages: HashMap<u64, Arc<Page>>, size_pages: u64) -> Self {
        Self {
            inner: Rc::new(Inner {
                pages: RefCell::new(pages),
                size_pages: Cell::new(size_pages),
                written_bytes: Cell::new(0),
                write_calls: Cell::new(0),
                grown_pages: Cell::new(0),
            }),
        }
    }

    /// An independent copy of the current bytes with zeroed counters.
    pub fn fork(&self) -> Self {
        Self::from_parts(self.inner.pages.borrow().clone(), self.inner.size_pages.get())
    }

    /// The current bytes as an image.
    pub fn image(&self) -> SparseImage {
        SparseImage {
            pages: self.inner.pages.borrow().clone(),
            size_pages: self.inner.size_pages.get(),
        }
    }

    /// Bytes written since creation.
    pub fn written_bytes(&self) -> u64 {
        self.inner.written_bytes.get()
    }

    /// Calls to `write` with at least one byte, since creation.
    pub fn write_calls(&self) -> u64 {
        self.inner.write_calls.get()
    }

    /// Pages added by `grow` since creation.
    pub fn grown_pages(&self) -> u64 {
        self.inner.grown_pages.get()
    }

    /// Sets the size to `pages` without counting it: the mutators' way of
    /// truncating or extending an image. Pages past the new end are dropped.
    pub fn resize_uncounted(&self, pages: u64) {
        self.inner.pages.borrow_mut().retain(|&index, _| index < pages);
        self.inner.size_pages.set(pages);
    }

    fn check_bounds(&self, offset: u64, len: usize, what: &str) {
        let end = offset.checked_add(len as u64);
        let size = self.inner.size_pages.get() * WASM_PAGE_SIZE;
        if end.is_none_or(|end| end > size) {
            panic!("{what}: out of bounds");
        }
    }
}

impl Memory for FuzzMemory {
    fn size(&self) -> u64 {
        self.inner.size_pages.get()
    }

    fn grow(&self, pages: u64) -> i64 {
        let old = self.inner.size_pages.get();
        match old.checked_add(pages) {
            Some(new) if new <= MAX_FUZZ_PAGES => {
                self.inner.size_pages.set(new);
                self.inner.grown_pages.set(self.inner.grown_pages.get() + pages);
                old as i64
            }
            _ => -1,
        }
    }

    fn read(&self, offset: u64, dst: &mut [u8]) {
        self.check_bounds(offset, dst.len(), "read");
        let pages = self.inner.pages.borrow();
        let mut done = 0;
        while done < dst.len() {
            let at = offset + done as u64;
            let (index, within) = (at / WASM_PAGE_SIZE, (at % WASM_PAGE_SIZE) as usize);
            let len = (PAGE - within).min(dst.len() - done);
            match pages.get(&index) {
                Some(page) => dst[done..done + len].copy_from_slice(&page[within..within + len]),
                None => dst[done..done + len].fill(0),
            }
            done += len;
        }
    }

    fn write(&self, offset: u64, src: &[u8]) {
        self.check_bounds(offset, src.len(), "write");
        if src.is_empty() {
            return;
        }
        self.inner.write_calls.set(self.inner.write_calls.get() + 1);
        self.inner
            .written_bytes
            .set(self.inner.written_bytes.get() + src.len() as u64);
        let mut pages = self.inner.pages.borrow_mut();
        let mut done = 0;
        while done < src.len() {
            let at = offset + done as u64;
            let (index, within) = (at / WASM_PAGE_SIZE, (at % WASM_PAGE_SIZE) as usize);
            let len = (PAGE - within).min(src.len() - done);
            let page = pages.entry(index).or_insert_with(|| Arc::new([0u8; PAGE]));
            Arc::make_mut(page)[within..within + len].copy_from_slice(&src[done..done + len]);
            done += len;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fork_copies_on_write_and_counts_only_its_own_writes() {
        let base = FuzzMemory::new(&SparseImage::default());
        assert_eq!(base.grow(2), 0);
        base.write(WASM_PAGE_SIZE - 2, &[1, 2, 3, 4]);
        let image = base.image();
        assert_eq!(image.pages.len(), 2, "the write spans two pages");
        let view = FuzzMemory::new(&image);
        let fork = view.fork();
        fork.write(0, &[9]);
        let mut byte = [0u8; 1];
        view.read(0, &mut byte);
        assert_eq!(byte, [0], "the fork's write is its own");
        let mut four = [0u8; 4];
        fork.read(WASM_PAGE_SIZE - 2, &mut four);
        assert_eq!(four, [1, 2, 3, 4]);
        assert_eq!(
            (fork.written_bytes(), fork.write_calls(), view.written_bytes()),
            (1, 1, 0)
        );
        assert_eq!(image.to_bytes().len(), 2 * PAGE);
        assert_eq!(fork.grow(MAX_FUZZ_PAGES), -1);
        let out_of_bounds = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            fork.read(2 * WASM_PAGE_SIZE, &mut [0u8; 1]);
        }));
        assert!(
            out_of_bounds.is_err(),
            "a read past the end panics as stable memory traps"
        );
    }
}
