//! Raw stable-memory images: what is in a memory before anything is opened.
//!
//! ic-stable-structures' `MemoryManager::init` re-initialises memory whose
//! magic it does not recognise and panics on an unknown layout version or an
//! inconsistent header. This module reads the MemoryManager layout (v1)
//! itself, through positioned reads only, and refuses anything that
//! `MemoryManager::init` would destroy or panic on, so the runtime can open
//! the MemoryManager only over memory that is provably safe to load. Reading
//! never writes; the two writes it owns — clearing a torn bucket-table entry
//! and growing the raw memory ahead of a MemoryManager grow — happen only on
//! an accepted boot's path.
//!
//! MemoryManager layout v1 (owned by ic-stable-structures, read here):
//!
//! ```text
//! 0      magic "MGR"                       3 bytes   <- MM_MAGIC
//! 3      layout version (1)                1 byte
//! 4      allocated buckets                 u16 LE
//! 6      bucket size in pages              u16 LE
//! 8      reserved                          32 bytes
//! 40     size of memory 0..=254 in pages   255 × u64 LE   <- MM_SIZES_OFFSET
//! 2080   bucket owner table                32768 × u8 (255 = unallocated)  <- MM_BUCKET_TABLE_OFFSET
//! 65536  bucket 0, bucket 1, ...           bucket size × 64 KiB each
//! ```

use ic_stable_structures::Memory;
use serde::Serialize;

/// A WebAssembly page: the unit of stable-memory size.
pub const WASM_PAGE_SIZE: u64 = 65536;
/// The MemoryManager's magic.
pub const MM_MAGIC: [u8; 3] = *b"MGR";
/// The MemoryManager layout version this crate reads.
pub const MM_LAYOUT_VERSION: u8 = 1;
/// Number of virtual memories a MemoryManager can hold (IDs 0..=254).
pub const MM_MAX_MEMORIES: usize = 255;
/// Number of buckets a MemoryManager can allocate.
pub const MM_MAX_BUCKETS: usize = 32768;
/// Offset of the per-memory size table.
pub const MM_SIZES_OFFSET: u64 = 3 + 1 + 2 + 2 + 32;
/// Offset of the bucket owner table.
pub const MM_BUCKET_TABLE_OFFSET: u64 = MM_SIZES_OFFSET + 8 * MM_MAX_MEMORIES as u64;
/// Where bucket 0 starts.
pub const MM_BUCKETS_OFFSET: u64 = WASM_PAGE_SIZE;
const UNALLOCATED_BUCKET: u8 = 255;

/// A parsed and checked MemoryManager header.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MemoryManagerHeader {
    /// Layout version (always 1 here).
    pub layout_version: u8,
    /// Bucket size in pages.
    pub bucket_size_in_pages: u16,
    /// Buckets allocated so far.
    pub allocated_buckets: u16,
    /// Size in pages of each virtual memory, indexed by ID.
    pub memory_sizes_in_pages: Vec<u64>,
    /// Buckets owned by each virtual memory, indexed by ID.
    pub buckets_per_memory: Vec<u16>,
    /// The owner written in the bucket-table entry just past the allocated
    /// count: the trace of a grow cut short between writing the entry and
    /// saving the header. Not harmless once loaded: `MemoryManager` would
    /// list that bucket for its owner *and* hand it to the next memory that
    /// grows, so two memories would share it. An accepted boot clears the
    /// entry (see [`clear_interrupted_grows`]) before the MemoryManager
    /// it keeps is loaded; read-only calls report it.
    pub torn_bucket_allocation: Option<u8>,
    /// The last bucket the header counts, `(index, owner)`, when its owner's
    /// size does not need it and it holds only zeros: the trace of a grow cut
    /// while saving the header (the count landed, the size did not). Loaded
    /// as it is, the owner's next grow would take a second bucket and leave
    /// this one listed but unused, which later reads as a damaged size. An
    /// accepted boot clears its table entry (a hole in the count, never
    /// reused) before the MemoryManager it keeps is loaded.
    pub interrupted_grow_bucket: Option<(u16, u8)>,
    /// Size of the whole raw memory in pages.
    pub raw_size_in_pages: u64,
}

/// What a raw memory holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RawMemoryClass {
    /// Size 0: nothing was ever written.
    Empty,
    /// A consistent MemoryManager v1 image.
    MemoryManager(MemoryManagerHeader),
    /// One page whose bytes are a prefix of what `MemoryManager::init` writes
    /// on an empty memory, then zeros: the trace of a first initialisation
    /// cut short. Nothing but that initialisation can have written it.
    InterruptedInitialization,
}

/// Why a raw memory is not a MemoryManager image that can be safely loaded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize)]
#[non_exhaustive]
pub enum MemoryImageError {
    /// The memory does not start with the MemoryManager magic.
    #[error(
        "memory does not hold a MemoryManager (starts with {first_bytes:02x?}, not \"MGR\"); \
         refusing to initialise over existing bytes"
    )]
    NotMemoryManager {
        /// The first bytes found.
        first_bytes: Vec<u8>,
    },
    /// A MemoryManager layout version this build does not read.
    #[error("MemoryManager layout version {found} is not supported (this build reads {MM_LAYOUT_VERSION})")]
    UnsupportedLayoutVersion {
        /// Version found.
        found: u8,
    },
    /// The header is inconsistent: loading it would read out of bounds.
    #[error("MemoryManager header is inconsistent: {reason}")]
    Inconsistent {
        /// What is inconsistent.
        reason: String,
    },
    /// A memory owns more buckets than its size needs: its size field was
    /// damaged (ID 0 read as 0 pages would hide the ledger beside stores that
    /// hold data), since `MemoryManager` allocates exactly what a grow needs.
    #[error(
        "MemoryManager memory {id} is {pages} pages but owns {owned} buckets of {bucket_size_in_pages} pages: \
         its size field is damaged"
    )]
    MemoryOwnsUnusedBuckets {
        /// The memory.
        id: u8,
        /// Its size in the header.
        pages: u64,
        /// Buckets the table gives it.
        owned: u16,
        /// Bucket size.
        bucket_size_in_pages: u16,
    },
    /// The header counts more buckets than the image holds. `MemoryManager`
    /// grows the image before it saves a larger count, so this is damage;
    /// loading it would make the next grow fail inside ic-stable-structures.
    #[error(
        "MemoryManager header counts {allocated_buckets} buckets of {bucket_size_in_pages} pages, \
         which end at page {end_page}, but the image has {raw_pages} pages"
    )]
    BucketsBeyondImage {
        /// Allocated buckets in the header.
        allocated_buckets: u16,
        /// Bucket size.
        bucket_size_in_pages: u16,
        /// Where the allocated buckets end.
        end_page: u64,
        /// Pages in the image.
        raw_pages: u64,
    },
    /// The header counts fewer buckets than the image's size implies: a
    /// damaged bucket size or count. `MemoryManager` grows the image to
    /// exactly `1 + allocated × bucket size` pages (one bucket more while a
    /// grow is cut after its table write), so a bucket size read wrong would
    /// move every store but the first.
    #[error(
        "the image has {raw_pages} pages, but a MemoryManager with {allocated_buckets} buckets of \
         {bucket_size_in_pages} pages has {expected_pages}: the bucket size or count is damaged"
    )]
    ImageLargerThanBuckets {
        /// Pages in the image.
        raw_pages: u64,
        /// Pages the header implies.
        expected_pages: u64,
        /// Allocated buckets in the header.
        allocated_buckets: u16,
        /// Bucket size.
        bucket_size_in_pages: u16,
    },
    /// The table entry just past the count names a memory, but it is not
    /// what an interrupted grow leaves: the memory's size already needs that
    /// bucket (the count is short), or the bucket holds bytes (a grow's new
    /// bucket is zeros until the grow completes).
    #[error(
        "bucket {bucket} lies past the {bucket} allocated buckets but is marked for memory {owner}, which \
         {}: the header's count is damaged",
        if *.in_use { "already uses it" } else { "has written into it" }
    )]
    BucketPastCountInUse {
        /// The bucket (equal to the allocated count).
        bucket: u16,
        /// The memory the table names.
        owner: u8,
        /// True: the owner's size needs it; false: it holds bytes.
        in_use: bool,
    },
    /// The image is shorter than its header and bucket table.
    #[error("image is {size_bytes} bytes, too short for a MemoryManager header")]
    Truncated {
        /// Size found.
        size_bytes: u64,
    },
}

impl MemoryManagerHeader {
    /// Size in bytes of virtual memory `id`.
    pub fn memory_size_bytes(&self, id: u8) -> u64 {
        self.memory_sizes_in_pages
            .get(usize::from(id))
            .map_or(0, |pages| pages.saturating_mul(WASM_PAGE_SIZE))
    }

    /// IDs of virtual memories with a nonzero size.
    pub fn memories_in_use(&self) -> impl Iterator<Item = u8> + '_ {
        self.memory_sizes_in_pages
            .iter()
            .enumerate()
            .filter(|(_, pages)| **pages > 0)
            .map(|(id, _)| u8::try_from(id).expect("255 memories at most"))
    }
}

/// The default bucket size `MemoryManager::init` uses.
const MM_DEFAULT_BUCKET_SIZE_IN_PAGES: u16 = 128;

/// Whether page 0 is `k` bytes of a fresh MemoryManager's first page
/// followed by zeros, for some `k` short of the whole fresh page (a complete
/// one is an ordinary, empty MemoryManager).
fn is_prefix_of_fresh_initialization<M: Memory>(memory: &M) -> bool {
    let mut page = vec![0u8; WASM_PAGE_SIZE as usize];
    memory.read(0, &mut page);
    let mut fresh = vec![0u8; WASM_PAGE_SIZE as usize];
    fresh[0..3].copy_from_slice(&MM_MAGIC);
    fresh[3] = MM_LAYOUT_VERSION;
    fresh[6..8].copy_from_slice(&MM_DEFAULT_BUCKET_SIZE_IN_PAGES.to_le_bytes());
    let table = MM_BUCKET_TABLE_OFFSET as usize;
    fresh[table..table + MM_MAX_BUCKETS].fill(UNALLOCATED_BUCKET);
    let written = page.iter().zip(&fresh).take_while(|(a, b)| a == b).count();
    let fresh_len = table + MM_MAX_BUCKETS;
    written < fresh_len && page[written..].iter().all(|&b| b == 0)
}

/// Classifies `memory` and, for a MemoryManager image, checks every field
/// `MemoryManager::init` trusts.
///
/// Complexity: reads the header page only (about 35 KB).
///
/// # Errors
/// A [`MemoryImageError`] naming what was found.
pub fn classify_raw_memory<M: Memory>(memory: &M) -> Result<RawMemoryClass, MemoryImageError> {
    let raw_pages = memory.size();
    if raw_pages == 0 {
        return Ok(RawMemoryClass::Empty);
    }
    let size_bytes = raw_pages.saturating_mul(WASM_PAGE_SIZE);
    let mut header = vec![0u8; (MM_BUCKET_TABLE_OFFSET as usize) + MM_MAX_BUCKETS];
    if size_bytes < header.len() as u64 {
        return Err(MemoryImageError::Truncated { size_bytes });
    }
    memory.read(0, &mut header);
    if raw_pages == 1 && is_prefix_of_fresh_initialization(memory) {
        return Ok(RawMemoryClass::InterruptedInitialization);
    }
    if header[0..3] != MM_MAGIC {
        return Err(MemoryImageError::NotMemoryManager {
            first_bytes: header[0..8].to_vec(),
        });
    }
    if header[3] != MM_LAYOUT_VERSION {
        return Err(MemoryImageError::UnsupportedLayoutVersion { found: header[3] });
    }
    let allocated_buckets = u16::from_le_bytes([header[4], header[5]]);
    let bucket_size_in_pages = u16::from_le_bytes([header[6], header[7]]);
    let inconsistent = |reason: String| MemoryImageError::Inconsistent { reason };
    if bucket_size_in_pages == 0 {
        return Err(inconsistent("bucket size is 0 pages".into()));
    }
    if usize::from(allocated_buckets) > MM_MAX_BUCKETS {
        return Err(inconsistent(format!(
            "{allocated_buckets} buckets allocated, more than {MM_MAX_BUCKETS}"
        )));
    }
    let memory_sizes_in_pages: Vec<u64> = header[MM_SIZES_OFFSET as usize..MM_BUCKET_TABLE_OFFSET as usize]
        .chunks_exact(8)
        .map(|chunk| u64::from_le_bytes(chunk.try_into().expect("8-byte chunk")))
        .collect();
    let table = &header[MM_BUCKET_TABLE_OFFSET as usize..];
    // Entries past the allocated count (and one torn allocation) must be
    // unallocated; checked in bulk because it is most of the table.
    let in_use = (usize::from(allocated_buckets) + 1).min(MM_MAX_BUCKETS);
    let tail = &table[in_use..];
    // Compared 16 bytes at a time; the position is only searched on failure.
    let mut wide = tail.chunks_exact(16);
    let tail_unallocated = wide
        .by_ref()
        .all(|chunk| u128::from_ne_bytes(chunk.try_into().expect("16-byte chunk")) == u128::MAX)
        && wide.remainder().iter().all(|&owner| owner == UNALLOCATED_BUCKET);
    if let Some(offset) = (!tail_unallocated)
        .then(|| tail.iter().position(|&owner| owner != UNALLOCATED_BUCKET))
        .flatten()
    {
        let index = in_use + offset;
        return Err(inconsistent(format!(
            "bucket {index} is owned by memory {} but only {allocated_buckets} are allocated",
            table[index]
        )));
    }
    let bucket_pages = u64::from(bucket_size_in_pages);
    let end_page = 1 + u64::from(allocated_buckets) * bucket_pages;
    if end_page > raw_pages {
        return Err(MemoryImageError::BucketsBeyondImage {
            allocated_buckets,
            bucket_size_in_pages,
            end_page,
            raw_pages,
        });
    }
    let torn_entry = table
        .get(usize::from(allocated_buckets))
        .is_some_and(|&owner| owner != UNALLOCATED_BUCKET);
    let largest = end_page + if torn_entry { bucket_pages } else { 0 };
    if raw_pages != end_page && raw_pages != largest {
        return Err(MemoryImageError::ImageLargerThanBuckets {
            raw_pages,
            expected_pages: end_page,
            allocated_buckets,
            bucket_size_in_pages,
        });
    }
    let needed: Vec<u64> = memory_sizes_in_pages
        .iter()
        .map(|pages| pages.div_ceil(bucket_pages))
        .collect();
    let mut buckets_per_memory = vec![0u16; MM_MAX_MEMORIES];
    // The last bucket each memory's size needs: buckets are used in table
    // order, and only those are ever read.
    let mut last_needed_bucket = vec![None::<usize>; MM_MAX_MEMORIES];
    let mut torn_bucket_allocation = None;
    let mut interrupted_grow_bucket = None;
    // The last bucket the header counts, and its owner.
    let mut last_counted = None;
    for (index, &owner) in table[..in_use].iter().enumerate() {
        if owner == UNALLOCATED_BUCKET {
            continue;
        }
        if index == usize::from(allocated_buckets) {
            torn_bucket_allocation = Some(owner);
        } else {
            last_counted = Some((index, owner));
        }
        let owner = usize::from(owner);
        buckets_per_memory[owner] += 1;
        if u64::from(buckets_per_memory[owner]) <= needed[owner] {
            last_needed_bucket[owner] = Some(index);
        }
    }
    for (id, &pages) in memory_sizes_in_pages.iter().enumerate() {
        let owned = u64::from(buckets_per_memory[id]);
        if needed[id] > owned {
            return Err(inconsistent(format!(
                "memory {id} is {pages} pages but owns {owned} buckets of {bucket_pages} pages"
            )));
        }
        let id_u8 = u8::try_from(id).expect("255 memories at most");
        let torn_here = torn_bucket_allocation == Some(id_u8);
        if torn_here {
            // A grow cut after its table write: the size was not saved (it
            // does not need the bucket) and nothing was written into it.
            let bucket = allocated_buckets;
            let in_use = owned == needed[id];
            if in_use || !bucket_holds_only_zeros(memory, usize::from(bucket), bucket_pages, raw_pages) {
                return Err(MemoryImageError::BucketPastCountInUse {
                    bucket,
                    owner: id_u8,
                    in_use,
                });
            }
        }
        let extra = owned - needed[id] - u64::from(torn_here);
        // One extra bucket is what a grow leaves when it is cut while saving
        // the header (the count landed, the size did not): then it is the
        // last bucket counted, and nobody has written into it yet. Anything
        // else — in particular a bucket that holds bytes — means the size
        // field lies, and trusting it would hide what the bucket holds.
        let interrupted_grow = (extra == 1)
            .then_some(last_counted)
            .flatten()
            .filter(|&(index, owner)| {
                owner == id_u8 && bucket_holds_only_zeros(memory, index, bucket_pages, raw_pages)
            });
        if let Some((index, owner)) = interrupted_grow {
            interrupted_grow_bucket = Some((u16::try_from(index).expect("fewer than 32768 buckets"), owner));
        } else if extra > 0 {
            return Err(MemoryImageError::MemoryOwnsUnusedBuckets {
                id: u8::try_from(id).expect("255 memories at most"),
                pages,
                owned: buckets_per_memory[id],
                bucket_size_in_pages,
            });
        }
        if let Some(last) = last_needed_bucket[id] {
            let end_page = 1 + (last as u64 + 1) * bucket_pages;
            if end_page > raw_pages {
                return Err(inconsistent(format!(
                    "memory {id} uses bucket {last}, which ends at page {end_page} of a {raw_pages}-page image"
                )));
            }
        }
    }
    Ok(RawMemoryClass::MemoryManager(MemoryManagerHeader {
        layout_version: header[3],
        bucket_size_in_pages,
        allocated_buckets,
        memory_sizes_in_pages,
        buckets_per_memory,
        torn_bucket_allocation,
        interrupted_grow_bucket,
        raw_size_in_pages: raw_pages,
    }))
}

/// Whether bucket `index` (or the part of it inside the image) is all zeros.
/// Complexity: reads the bucket, 64 KiB at a time; only called for a bucket
/// a memory owns beyond its size, which a sound image does not have.
fn bucket_holds_only_zeros<M: Memory>(memory: &M, index: usize, bucket_pages: u64, raw_pages: u64) -> bool {
    let first_page = 1 + index as u64 * bucket_pages;
    let end_page = (first_page + bucket_pages).min(raw_pages);
    let mut page = vec![0u8; WASM_PAGE_SIZE as usize];
    (first_page..end_page).all(|number| {
        memory.read(number * WASM_PAGE_SIZE, &mut page);
        page.iter().all(|&b| b == 0)
    })
}

/// Clears the bucket-table entries interrupted grows left (writes the
/// unallocated marker back), so that a `MemoryManager` loaded afterwards
/// lists those buckets for nobody: the torn entry past the count is then
/// allocated normally by the next grow; the unused bucket inside the count
/// stays a hole nobody reuses (lowering the two-byte count instead could
/// tear it).
///
/// Neither bucket is reached by its owner's size or holds anything anyone
/// wrote (classification checked both), so clearing undoes the interrupted
/// grow's first write. One byte each, so a cut leaves each entry as it was
/// or cleared, both of which classify the same way. PRECONDITION: only
/// after a boot was accepted (a refused boot writes nothing), and before the
/// MemoryManager handed to stores is loaded.
pub(crate) fn clear_interrupted_grows<M: Memory>(memory: &M, header: &MemoryManagerHeader) {
    if header.torn_bucket_allocation.is_some() {
        let entry = MM_BUCKET_TABLE_OFFSET + u64::from(header.allocated_buckets);
        memory.write(entry, &[UNALLOCATED_BUCKET]);
    }
    if let Some((index, _)) = header.interrupted_grow_bucket {
        memory.write(MM_BUCKET_TABLE_OFFSET + u64::from(index), &[UNALLOCATED_BUCKET]);
    }
}

impl MemoryManagerHeader {
    /// Whether an interrupted grow left a bucket-table entry that an
    /// accepted boot clears before use (see [`clear_interrupted_grows`]).
    pub fn has_interrupted_grow(&self) -> bool {
        self.torn_bucket_allocation.is_some() || self.interrupted_grow_bucket.is_some()
    }
}

/// A MemoryManager virtual memory whose `grow` grows the raw memory first.
///
/// `MemoryManager`'s own grow writes the new buckets' table entries, then
/// grows the raw memory, and panics ("grow failed") when that fails — after
/// it wrote. Growing the raw memory here first means the MemoryManager never
/// has to, so a raw memory that cannot grow makes `grow` return -1 (the
/// `Memory` contract) with nothing written, and the commit store reports
/// `GrowFailed`. Reads and writes pass straight through.
#[derive(Clone)]
pub(crate) struct RawGrowingMemory<M: Memory> {
    raw: M,
    id: u8,
    virtual_memory: ic_stable_structures::memory_manager::VirtualMemory<M>,
}

impl<M: Memory + Clone> RawGrowingMemory<M> {
    /// Virtual memory `id` of a MemoryManager over `raw`.
    pub(crate) fn new(
        raw: M,
        id: u8,
        virtual_memory: ic_stable_structures::memory_manager::VirtualMemory<M>,
    ) -> Self {
        Self {
            raw,
            id,
            virtual_memory,
        }
    }

    /// The raw pages a grow of `pages` would need, or None when the
    /// MemoryManager would refuse it (too many buckets) or the header does
    /// not read.
    fn raw_pages_needed_for(&self, pages: u64) -> Option<u64> {
        let mut counts = [0u8; 4];
        self.raw.read(4, &mut counts);
        let allocated = u64::from(u16::from_le_bytes([counts[0], counts[1]]));
        let bucket_pages = u64::from(u16::from_le_bytes([counts[2], counts[3]]));
        if bucket_pages == 0 {
            return None;
        }
        let mut size = [0u8; 8];
        self.raw.read(MM_SIZES_OFFSET + 8 * u64::from(self.id), &mut size);
        let old = u64::from_le_bytes(size);
        let new = old.checked_add(pages)?;
        let buckets = allocated + new.div_ceil(bucket_pages) - old.div_ceil(bucket_pages);
        (buckets <= MM_MAX_BUCKETS as u64).then(|| 1 + bucket_pages * buckets)
    }
}

impl<M: Memory + Clone> Memory for RawGrowingMemory<M> {
    fn size(&self) -> u64 {
        self.virtual_memory.size()
    }

    fn grow(&self, pages: u64) -> i64 {
        if self.raw.size() == 0 {
            // No header to read: the MemoryManager over this memory is not
            // initialised, so its grow has nothing of ours to protect.
            return self.virtual_memory.grow(pages);
        }
        let Some(needed) = self.raw_pages_needed_for(pages) else {
            return -1;
        };
        let raw = self.raw.size();
        if needed > raw && self.raw.grow(needed - raw) < 0 {
            return -1;
        }
        self.virtual_memory.grow(pages)
    }

    fn read(&self, offset: u64, dst: &mut [u8]) {
        self.virtual_memory.read(offset, dst);
    }

    fn write(&self, offset: u64, src: &[u8]) {
        self.virtual_memory.write(offset, src);
    }
}
