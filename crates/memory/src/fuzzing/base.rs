//! The valid images cases start from, each written by the real runtime
//! through its public API (boots, reservations, retirements, stores that
//! hold data), so every mutation starts from bytes a deployed program could
//! have: a small image, a long history, several stores whose buckets
//! interleave, and a ledger near the 3 MiB payload bound.
//!
//! Stores that hold data carry sentinels (16 known bytes at the start of
//! each bucket-sized stretch and at the end), so a case can tell whether a
//! boot it accepted left every store's bytes where they were.

use std::sync::OnceLock;

use ic_stable_structures::memory_manager::{MemoryId, MemoryManager};
use ic_stable_structures::{Memory, VectorMemory};

use super::memory::{FuzzMemory, SparseImage};
use super::truth::{Truth, read_truth};
use crate::codec::{CborLedgerCodec, LedgerCodec, MAX_ENCODED_LEDGER_LEN};
use crate::declaration::{AllocationDeclaration, DeclarationSnapshot, SchemaMetadata};
use crate::image::WASM_PAGE_SIZE;
use crate::ledger::{AllocationLedger, AllocationRetirement};
use crate::runtime::MemoryRuntime;
use crate::slot::AllocationSlotDescriptor;
use crate::validate::AcceptAllPolicy;

/// The base images a campaign draws from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum BaseKind {
    /// One boot, one declared store without data: recovery's genesis rules
    /// apply when the ledger is lost.
    Small,
    /// 300 generations of 10 stores, with schema changes, a reservation and
    /// a retirement; two stores hold data.
    ManyGenerations,
    /// Five stores, four holding data in interleaved buckets (one spans two
    /// buckets, one is retired), and a reservation.
    MultiStore,
    /// 200 stores whose schema history brings the encoded ledger within
    /// about 100 KB of the 3 MiB bound (both slots near 3 MiB).
    NearBound,
}

impl BaseKind {
    /// Every base, in the order reports list them.
    pub const ALL: [Self; 4] = [
        Self::Small,
        Self::ManyGenerations,
        Self::MultiStore,
        Self::NearBound,
    ];

    /// The name reports use.
    pub fn name(self) -> &'static str {
        match self {
            Self::Small => "small",
            Self::ManyGenerations => "many-generations",
            Self::MultiStore => "multi-store",
            Self::NearBound => "near-bound",
        }
    }

    /// The base named `name`.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.name() == name)
    }

    /// Its share of a campaign's cases, per 1,000. The near-bound image
    /// costs a 3 MiB decode per call, so it gets few cases of its own; every
    /// other base exercises the same code at a fraction of the cost.
    pub fn weight(self) -> u64 {
        match self {
            Self::Small => 300,
            Self::ManyGenerations => 320,
            Self::MultiStore => 360,
            Self::NearBound => 20,
        }
    }

    /// The base image, built on first use (once per process).
    pub fn image(self) -> &'static BaseImage {
        static BASES: [OnceLock<BaseImage>; 4] = [const { OnceLock::new() }; 4];
        BASES[self as usize].get_or_init(|| build(self))
    }
}

/// A store that holds data in a base image.
#[derive(Clone, Debug)]
pub(crate) struct DataStore {
    pub(crate) key: String,
    pub(crate) id: u8,
    pub(crate) size_pages: u64,
    /// Whether the next boot declares it (a retired store is not).
    pub(crate) declared: bool,
}

/// A valid image and what a case needs to judge calls over it.
#[derive(Debug)]
pub struct BaseImage {
    pub(crate) kind: BaseKind,
    pub(crate) image: SparseImage,
    pub(crate) ledger: AllocationLedger,
    /// The authoritative slot's payload: what payload-level cases mutate.
    pub(crate) payload: Vec<u8>,
    /// The layout the last boot declared (a check of it is unchanged).
    pub(crate) declarations: DeclarationSnapshot,
    /// The layout of the next release: the same plus `new_store`.
    pub(crate) next: DeclarationSnapshot,
    pub(crate) new_store: (String, u8),
    pub(crate) stores: Vec<DataStore>,
    pub(crate) bucket_pages: u64,
}

impl BaseImage {
    /// Which base this is.
    pub fn kind(&self) -> BaseKind {
        self.kind
    }

    /// The image's bytes.
    pub fn image(&self) -> &SparseImage {
        &self.image
    }

    /// The ledger the image holds.
    pub fn ledger(&self) -> &AllocationLedger {
        &self.ledger
    }

    /// The authoritative slot's encoded ledger.
    pub fn payload(&self) -> &[u8] {
        &self.payload
    }
}

/// Bytes a sentinel takes.
pub(crate) const SENTINEL_LEN: u64 = 16;

/// The sentinel of memory `id` at `offset`.
pub(crate) fn sentinel(id: u8, offset: u64) -> [u8; SENTINEL_LEN as usize] {
    let mut bytes = [0u8; SENTINEL_LEN as usize];
    bytes[..4].copy_from_slice(b"HFFZ");
    bytes[4] = id;
    bytes[5..13].copy_from_slice(&offset.to_le_bytes());
    bytes[13..].copy_from_slice(&[0xA5, 0x5A, 0xC3]);
    bytes
}

/// Where a memory of `size_pages` keeps its sentinels: the start of every
/// bucket-sized stretch, and its last 16 bytes.
pub(crate) fn sentinel_offsets(size_pages: u64, bucket_pages: u64) -> Vec<u64> {
    let size = size_pages * WASM_PAGE_SIZE;
    if size < SENTINEL_LEN {
        return Vec::new();
    }
    let stride = bucket_pages.max(1) * WASM_PAGE_SIZE;
    let mut offsets: Vec<u64> = (0..size).step_by(stride as usize).collect();
    offsets.push(size - SENTINEL_LEN);
    offsets
}

fn declaration(key: &str, id: u8, label: &str, schema: SchemaMetadata) -> AllocationDeclaration {
    AllocationDeclaration::memory_manager_with_schema(key, id, label, schema)
        .expect("the base images declare valid keys, IDs and labels")
}

fn snapshot(declarations: Vec<AllocationDeclaration>, fingerprint: &str) -> DeclarationSnapshot {
    DeclarationSnapshot::new(declarations)
        .expect("the base images declare each key and ID once")
        .with_runtime_fingerprint(fingerprint)
        .expect("the base images' fingerprints are printable ASCII")
}

fn boot(memory: &VectorMemory, declarations: &DeclarationSnapshot) -> MemoryRuntime<VectorMemory> {
    MemoryRuntime::bootstrap(memory.clone(), declarations.clone(), &AcceptAllPolicy)
        .expect("every boot of a base image is accepted")
}

fn build(kind: BaseKind) -> BaseImage {
    let memory = VectorMemory::default();
    let (declarations, stores, new_store) = match kind {
        BaseKind::Small => small(&memory),
        BaseKind::ManyGenerations => many_generations(&memory),
        BaseKind::MultiStore => multi_store(&memory),
        BaseKind::NearBound => near_bound(&memory),
    };
    let manager = MemoryManager::init(memory.clone());
    let bucket_pages = 128;
    for store in &stores {
        let virtual_memory = manager.get(MemoryId::new(store.id));
        for offset in sentinel_offsets(store.size_pages, bucket_pages) {
            virtual_memory.write(offset, &sentinel(store.id, offset));
        }
    }
    drop(manager);
    let mut next_list = declarations.declarations().to_vec();
    next_list.push(declaration(
        &new_store.0,
        new_store.1,
        "Added",
        SchemaMetadata::none(),
    ));
    let next = snapshot(next_list, "next-release");
    let image = SparseImage::of(&memory);
    let view = FuzzMemory::new(&image);
    let Truth::Ledger { payload, ledger, .. } = read_truth(&view) else {
        panic!("the {} base image must hold a ledger", kind.name());
    };
    let (checked, _) =
        MemoryRuntime::check(&view, declarations.clone(), &AcceptAllPolicy).expect("a base image recovers");
    assert_eq!(
        checked, ledger,
        "the oracle reads what recovery reads on a valid image"
    );
    BaseImage {
        kind,
        image,
        ledger,
        payload,
        declarations,
        next,
        new_store,
        stores,
        bucket_pages,
    }
}

type Built = (DeclarationSnapshot, Vec<DataStore>, (String, u8));

fn small(memory: &VectorMemory) -> Built {
    let layout = snapshot(
        vec![declaration("app.users.v1", 100, "Users", SchemaMetadata::none())],
        "small-1",
    );
    boot(memory, &layout);
    (layout, Vec::new(), ("fuzz.added.v1".into(), 200))
}

fn many_generations(memory: &VectorMemory) -> Built {
    let stores: Vec<(String, u8)> = (0..10u8).map(|i| (format!("app.s{i}.v1"), 100 + i)).collect();
    let layout = |generation: u64, with_old: bool| {
        let mut list: Vec<AllocationDeclaration> = stores
            .iter()
            .enumerate()
            .map(|(i, (key, id))| {
                // Every 25 generations one store's schema changes.
                let changes = generation / 25;
                let version = (changes / 10 + u64::from(i as u64 <= changes % 10)) as u32;
                let schema = if version == 0 {
                    SchemaMetadata::none()
                } else {
                    SchemaMetadata::new(Some(version), Some(format!("schema-{i}-{version}")))
                        .expect("valid schema metadata")
                };
                declaration(key, *id, "Store", schema)
            })
            .collect();
        if with_old {
            list.push(declaration("app.old.v1", 151, "Old", SchemaMetadata::none()));
        }
        snapshot(list, &format!("build-{generation}"))
    };
    let mut last = layout(1, true);
    boot(memory, &last);
    for generation in 2..=300 {
        if generation == 50 {
            let reserved = declaration("app.reserved.v1", 150, "Reserved", SchemaMetadata::none());
            MemoryRuntime::reserve(memory.clone(), vec![reserved], &AcceptAllPolicy)
                .expect("the reservation is accepted");
            continue;
        }
        if generation == 60 {
            let old = AllocationRetirement::new(
                "app.old.v1",
                AllocationSlotDescriptor::memory_manager(151).expect("a usable ID"),
            )
            .expect("a valid key");
            MemoryRuntime::retire(memory.clone(), old).expect("the retirement is accepted");
            continue;
        }
        last = layout(generation, generation < 60);
        boot(memory, &last);
    }
    let runtime = boot(memory, &last);
    for (key, id) in &stores[..2] {
        runtime.open(key, *id).expect("declared").grow(1);
    }
    let data = stores[..2]
        .iter()
        .map(|(key, id)| DataStore {
            key: key.clone(),
            id: *id,
            size_pages: 1,
            declared: true,
        })
        .collect();
    (last, data, ("fuzz.added.v1".into(), 200))
}

fn multi_store(memory: &VectorMemory) -> Built {
    let first = snapshot(
        vec![
            declaration("app.users.v1", 100, "Users", SchemaMetadata::none()),
            declaration("app.orders.v1", 101, "Orders", SchemaMetadata::none()),
            declaration("app.index.v1", 102, "Index", SchemaMetadata::none()),
            declaration("app.legacy.v1", 103, "Legacy", SchemaMetadata::none()),
        ],
        "multi-1",
    );
    let runtime = boot(memory, &first);
    let open = |key: &str, id| runtime.open(key, id).expect("declared");
    // Interleaved buckets: the ledger 0, users 1, orders 2-3, users 4,
    // index 5, legacy 6.
    open("app.users.v1", 100).grow(1);
    open("app.orders.v1", 101).grow(130);
    open("app.users.v1", 100).grow(128);
    open("app.index.v1", 102).grow(1);
    open("app.legacy.v1", 103).grow(1);
    let schema = SchemaMetadata::new(Some(2), Some("users-2".into())).expect("valid schema metadata");
    let current = |fingerprint: &str| {
        snapshot(
            vec![
                declaration("app.users.v1", 100, "Users", schema.clone()),
                declaration("app.orders.v1", 101, "Orders", SchemaMetadata::none()),
                declaration("app.index.v1", 102, "Index", SchemaMetadata::none()),
            ],
            fingerprint,
        )
    };
    boot(memory, &current("multi-2"));
    let reserved = declaration("app.reserved.v1", 120, "Reserved", SchemaMetadata::none());
    MemoryRuntime::reserve(memory.clone(), vec![reserved], &AcceptAllPolicy).expect("accepted");
    let legacy = AllocationRetirement::new(
        "app.legacy.v1",
        AllocationSlotDescriptor::memory_manager(103).expect("a usable ID"),
    )
    .expect("a valid key");
    MemoryRuntime::retire(memory.clone(), legacy).expect("accepted");
    let last = current("multi-3");
    boot(memory, &last);
    let store = |key: &str, id, size_pages, declared| DataStore {
        key: key.into(),
        id,
        size_pages,
        declared,
    };
    let stores = vec![
        store("app.users.v1", 100, 129, true),
        store("app.orders.v1", 101, 130, true),
        store("app.index.v1", 102, 1, true),
        store("app.legacy.v1", 103, 1, false),
    ];
    (last, stores, ("fuzz.added.v1".into(), 200))
}

fn near_bound(memory: &VectorMemory) -> Built {
    let label = "L".repeat(256);
    let layout = |generation: u32| {
        let schema = SchemaMetadata::new(
            Some(generation),
            Some(format!("{generation:06}{}", "f".repeat(250))),
        )
        .expect("valid schema metadata");
        let list = (0..200u8)
            .map(|i| declaration(&format!("app.store{i}.v1"), 10 + i, &label, schema.clone()))
            .collect();
        snapshot(list, &format!("{generation:06}{}", "b".repeat(250)))
    };
    let mut generation = 1;
    let mut last = layout(generation);
    let mut len = CborLedgerCodec.encode(boot(memory, &last).ledger()).len();
    let mut growth = len;
    // Stop when two more generations could pass the bound: the image is as
    // near it as whole generations allow.
    while len + 2 * growth <= MAX_ENCODED_LEDGER_LEN {
        generation += 1;
        last = layout(generation);
        let next = CborLedgerCodec.encode(boot(memory, &last).ledger()).len();
        growth = next - len;
        len = next;
    }
    (last, Vec::new(), ("fuzz.added.v1".into(), 250))
}
