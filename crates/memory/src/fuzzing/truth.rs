//! What the bytes of a governed image say, read independently of the code
//! under test: the oracle a case's outcomes are judged against.
//!
//! It follows docs/FORMAT.md's recovery rules step by step with its own
//! reading of the store header, both slot headers and the high-water mark
//! (sharing only the format's public constants and the codec, whose
//! canonical decoding defines what a payload says). It is read from the
//! image after the store-level mutations and before any MemoryManager
//! damage: damage to the MemoryManager header must never change what is
//! recovered, only whether it is. It assumes a MemoryManager header that
//! `MemoryManager::init` can load, which the caller guarantees.

use ic_stable_structures::Memory;
use ic_stable_structures::memory_manager::{MemoryId, MemoryManager};

use super::memory::FuzzMemory;
use super::mutate::{SlotHeader, high_water_record};
use crate::codec::{CborLedgerCodec, LedgerCodec};
use crate::image::{
    MM_BUCKET_TABLE_OFFSET, MM_LAYOUT_VERSION, MM_MAGIC, MM_MAX_BUCKETS, MM_MAX_MEMORIES, MM_SIZES_OFFSET,
    WASM_PAGE_SIZE,
};
use crate::ledger::AllocationLedger;
use crate::physical::{DATA_OFFSET, HIGH_WATER_LEN, HIGH_WATER_OFFSETS, STORE_LAYOUT_VERSION, STORE_MAGIC};
use crate::slot::MEMORY_MANAGER_LEDGER_ID;

/// What recovery must make of an image.
#[derive(Clone, Debug)]
pub(crate) enum Truth {
    /// Slot `slot` is authoritative at `generation` and its payload decodes:
    /// recovery returns exactly the ledger `payload` encodes, or refuses.
    Ledger {
        slot: usize,
        generation: u64,
        payload: Vec<u8>,
        ledger: AllocationLedger,
    },
    /// Slot `slot` is authoritative but its payload is not a ledger at its
    /// generation: recovery refuses (the commit diagnostic still names it).
    Undecodable {
        slot: usize,
        generation: u64,
        reason: String,
    },
    /// No committed generation. Genesis is right only when no other memory
    /// holds data (otherwise history would start over beside stores).
    Empty { genesis_allowed: bool },
    /// The store is refused before any payload is read.
    Refused { reason: &'static str },
}

impl Truth {
    /// The ledger a boot starts from, when the bytes allow one.
    pub(crate) fn ledger(&self) -> Option<AllocationLedger> {
        match self {
            Self::Ledger { ledger, .. } => Some(ledger.clone()),
            Self::Empty {
                genesis_allowed: true,
            } => Some(AllocationLedger::genesis()),
            _ => None,
        }
    }

    /// Why no ledger may be recovered, when none may: the rule (what a
    /// finding's signature names) and the case's particulars.
    pub(crate) fn refusal(&self) -> Option<(&'static str, String)> {
        match self {
            Self::Ledger { .. }
            | Self::Empty {
                genesis_allowed: true,
            } => None,
            Self::Undecodable { reason, .. } => {
                Some(("the authoritative payload does not decode", reason.clone()))
            }
            Self::Empty {
                genesis_allowed: false,
            } => Some((
                "no generation was committed while other memories hold data",
                String::new(),
            )),
            Self::Refused { reason } => Some((reason, String::new())),
        }
    }
}

/// Reads what `image`'s ledger store says. PRECONDITION: its MemoryManager
/// header is one `MemoryManager::init` loads without panicking.
pub(crate) fn read_truth(image: &FuzzMemory) -> Truth {
    let others_in_use = (1..=254u64).any(|id| {
        let mut size = [0u8; 8];
        image.read(MM_SIZES_OFFSET + 8 * id, &mut size);
        u64::from_le_bytes(size) > 0
    });
    let manager = MemoryManager::init(image.clone());
    let id0 = manager.get(MemoryId::new(MEMORY_MANAGER_LEDGER_ID));
    let size = id0.size() * WASM_PAGE_SIZE;
    if size == 0 {
        // ID 0 never allocated: a memory that was never governed.
        return Truth::Empty {
            genesis_allowed: true,
        };
    }
    if size < DATA_OFFSET {
        return Truth::Refused {
            reason: "ID 0 is shorter than the store header",
        };
    }
    let mut store = [0u8; 9];
    id0.read(0, &mut store);
    if store[..8] != STORE_MAGIC || store[8] != STORE_LAYOUT_VERSION {
        // A prefix of the store header then zeros is a first commit cut
        // short (docs/FORMAT.md), whatever byte the cut stopped at.
        return if !others_in_use && holds_only_a_store_header_prefix(&id0) {
            Truth::Empty {
                genesis_allowed: true,
            }
        } else if store[..8] == STORE_MAGIC {
            Truth::Refused {
                reason: "the store layout version is unknown",
            }
        } else {
            Truth::Refused {
                reason: "ID 0 holds bytes that are not a ledger store",
            }
        };
    }
    let mut valid = Vec::new();
    for slot in 0..2 {
        let header = SlotHeader::read(&id0, slot);
        if !header.present() {
            continue;
        }
        let Some(payload) = header.payload(&id0).filter(|_| header.offset() >= DATA_OFFSET) else {
            return Truth::Refused {
                reason: "a present slot's payload lies outside the payload area",
            };
        };
        if header.checksum_of(&payload) != header.stored_checksum() {
            return Truth::Refused {
                reason: "a present slot fails its checksum",
            };
        }
        valid.push((slot, header.generation(), payload));
    }
    let authoritative = match <[_; 2]>::try_from(valid) {
        Ok([first, second]) if first.1 == second.1 => {
            if first.2 != second.2 {
                return Truth::Refused {
                    reason: "both slots claim one generation with different payloads",
                };
            }
            Some(first)
        }
        Ok([first, second]) => Some(if first.1 > second.1 { first } else { second }),
        Err(mut fewer) => fewer.pop(),
    };
    let high_water = HIGH_WATER_OFFSETS
        .iter()
        .filter_map(|&at| {
            let mut copy = [0u8; HIGH_WATER_LEN as usize];
            id0.read(at, &mut copy);
            let generation = u64::from_le_bytes(copy[..8].try_into().expect("8-byte range"));
            (copy != [0; HIGH_WATER_LEN as usize] && copy == high_water_record(generation))
                .then_some(generation)
        })
        .max();
    let generation = authoritative.as_ref().map_or(0, |(_, generation, _)| *generation);
    if high_water.is_some_and(|mark| generation < mark) {
        return Truth::Refused {
            reason: "the high-water mark records a newer commit than any slot holds",
        };
    }
    let Some((slot, generation, payload)) = authoritative else {
        return Truth::Empty {
            genesis_allowed: !others_in_use,
        };
    };
    match CborLedgerCodec.decode(&payload) {
        Ok(ledger) if ledger.current_generation() == generation => Truth::Ledger {
            slot,
            generation,
            payload,
            ledger,
        },
        Ok(ledger) => Truth::Undecodable {
            slot,
            generation,
            reason: format!("it holds generation {}", ledger.current_generation()),
        },
        Err(error) => Truth::Undecodable {
            slot,
            generation,
            reason: error.to_string(),
        },
    }
}

/// Whether ID 0 holds a prefix of the store header followed by zeros to its
/// end: what a first commit cut short leaves.
fn holds_only_a_store_header_prefix<M: Memory>(id0: &M) -> bool {
    is_store_header_prefix_then_zeros(id0.size() * WASM_PAGE_SIZE, |offset, chunk| {
        id0.read(offset, chunk);
    })
}

fn is_store_header_prefix_then_zeros(size: u64, mut read: impl FnMut(u64, &mut [u8])) -> bool {
    let mut header = [0u8; 32];
    header[..8].copy_from_slice(&STORE_MAGIC);
    header[8] = STORE_LAYOUT_VERSION;
    let mut chunk = vec![0u8; WASM_PAGE_SIZE as usize];
    let mut offset = 0;
    while offset < size {
        let len = (size - offset).min(WASM_PAGE_SIZE) as usize;
        read(offset, &mut chunk[..len]);
        let skip = if offset == 0 {
            chunk.iter().zip(&header).take_while(|(a, b)| a == b).count()
        } else {
            0
        };
        if chunk[skip..len].iter().any(|&b| b != 0) {
            return false;
        }
        offset += len as u64;
    }
    true
}

/// Whether the image, after damage to its MemoryManager header or size,
/// reads as a memory that holds no ledger by the format's own rules, so
/// genesis is a right answer whatever the image held before: size 0; one
/// page that is a prefix of a fresh MemoryManager then zeros; ID 0 never
/// grown (size 0, no bucket below the allocated count, and no bucket of
/// its past the count that begins with the store magic, which a torn grow
/// never leaves); or, with no other memory in use, ID 0 holding only a
/// prefix of the store header then zeros.
///
/// Reads the MemoryManager layout itself (a damaged header must not be
/// loaded), through positioned reads inside the image only.
pub(crate) fn reads_as_fresh(image: &FuzzMemory) -> bool {
    let raw_size = image.size() * WASM_PAGE_SIZE;
    let table_end = MM_BUCKET_TABLE_OFFSET + MM_MAX_BUCKETS as u64;
    if raw_size == 0 {
        return true;
    }
    if raw_size < table_end {
        return false;
    }
    let mut page = vec![0u8; WASM_PAGE_SIZE as usize];
    image.read(0, &mut page);
    if image.size() == 1 && is_prefix_of_fresh_manager(&page) {
        return true;
    }
    if page[0..3] != MM_MAGIC || page[3] != MM_LAYOUT_VERSION {
        return false;
    }
    let allocated = u64::from(u16::from_le_bytes([page[4], page[5]]));
    let bucket_bytes = u64::from(u16::from_le_bytes([page[6], page[7]])) * WASM_PAGE_SIZE;
    if bucket_bytes == 0 {
        return false;
    }
    let size_of = |id: usize| {
        let at = MM_SIZES_OFFSET as usize + 8 * id;
        u64::from_le_bytes(page[at..at + 8].try_into().expect("8-byte range"))
    };
    let table = &page[MM_BUCKET_TABLE_OFFSET as usize..table_end as usize];
    let id0_buckets: Vec<u64> = (0..MM_MAX_BUCKETS as u64)
        .filter(|&index| table[index as usize] == MEMORY_MANAGER_LEDGER_ID)
        .collect();
    let bucket_start = |index: u64| WASM_PAGE_SIZE + index * bucket_bytes;
    let id0_pages = size_of(0);
    if id0_pages == 0 {
        return id0_buckets.iter().all(|&index| {
            let start = bucket_start(index);
            let mut magic = [0u8; 8];
            index >= allocated
                && (start + 8 > raw_size || {
                    image.read(start, &mut magic);
                    magic != STORE_MAGIC
                })
        });
    }
    let others_in_use = (1..MM_MAX_MEMORIES).any(|id| size_of(id) > 0);
    let id0_bytes = id0_pages.saturating_mul(WASM_PAGE_SIZE);
    let buckets_needed = id0_bytes.div_ceil(bucket_bytes);
    if others_in_use
        || (id0_buckets.len() as u64) < buckets_needed
        || id0_buckets
            .iter()
            .take(buckets_needed as usize)
            .any(|&index| bucket_start(index) + bucket_bytes > raw_size)
    {
        return false;
    }
    is_store_header_prefix_then_zeros(id0_bytes, |offset, chunk| {
        // Chunks are at most a page and pages never straddle buckets.
        let bucket = id0_buckets[(offset / bucket_bytes) as usize];
        image.read(bucket_start(bucket) + offset % bucket_bytes, chunk);
    })
}

/// Whether `page` is a strict prefix of what `MemoryManager::init` writes
/// on an empty memory (default bucket size), followed by zeros.
fn is_prefix_of_fresh_manager(page: &[u8]) -> bool {
    let mut fresh = vec![0u8; page.len()];
    fresh[0..3].copy_from_slice(&MM_MAGIC);
    fresh[3] = MM_LAYOUT_VERSION;
    fresh[6..8].copy_from_slice(&128u16.to_le_bytes());
    let table = MM_BUCKET_TABLE_OFFSET as usize;
    fresh[table..table + MM_MAX_BUCKETS].fill(255);
    let written = page.iter().zip(&fresh).take_while(|(a, b)| a == b).count();
    written < table + MM_MAX_BUCKETS && page[written..].iter().all(|&b| b == 0)
}
