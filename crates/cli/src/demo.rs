//! The demo: first the node's story (a daemon through a hot reload, a
//! crash and a broken release, in `demo_node`), then three releases of a
//! sample application over one file-backed stable memory, governed by
//! holdfast-memory, and `inspect` of the result. It owns nothing durable
//! beyond what it creates in its directory.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use holdfast_memory::stable_structures::{FileMemory, StableBTreeMap};
use holdfast_memory::{AcceptAllPolicy, DeclarationCollector, DeclarationSnapshot, MemoryRuntime};
use sha2::{Digest, Sha256};

use crate::error::CliError;
use crate::render::Colour;

const V1: &[(&str, u8, &str)] = &[("demo.users.v1", 100, "Users"), ("demo.orders.v1", 101, "Orders")];
const V2: &[(&str, u8, &str)] = &[
    ("demo.users.v1", 100, "Users"),
    ("demo.orders.v1", 101, "Orders"),
    ("demo.audit.v1", 102, "Audit"),
];
const V3_SWAPPED: &[(&str, u8, &str)] = &[
    ("demo.users.v1", 101, "Users"),
    ("demo.orders.v1", 100, "Orders"),
    ("demo.audit.v1", 102, "Audit"),
];
const V3_FIXED: &[(&str, u8, &str)] = &[
    ("demo.users.v1", 100, "Users"),
    ("demo.orders.v1", 101, "Orders"),
    ("demo.audit.v1", 102, "Audit"),
    ("demo.sessions.v1", 103, "Sessions"),
];

type Store =
    StableBTreeMap<u64, u64, holdfast_memory::stable_structures::memory_manager::VirtualMemory<FileMemory>>;

/// Runs the demo in `dir` (or a fresh temporary directory), printing one
/// line per step and the final inspection.
///
/// # Errors
/// [`CliError::Demo`] when a step does not behave as governance promises
/// (which would be a bug), or the directory cannot be used.
pub fn run(dir: Option<PathBuf>, colour: Colour) -> Result<(), CliError> {
    play(dir, colour).map_err(CliError::Demo)
}

fn play(dir: Option<PathBuf>, colour: Colour) -> Result<(), String> {
    let dir = dir.unwrap_or_else(fresh_temp_dir);
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let image = dir.join("stable_memory.bin");
    if image.exists() {
        return Err(format!(
            "{} already exists; choose an empty --dir",
            image.display()
        ));
    }
    crate::demo_node::play(&crate::demo_node::node_dir(&dir))?;
    println!("== 2. A new binary that would open another store's bytes is refused ==");
    println!("image: {}", image.display());

    let v1 = boot(&image, V1)?;
    let mut users: Store = StableBTreeMap::init(open(&v1, "demo.users.v1", 100)?);
    let mut orders: Store = StableBTreeMap::init(open(&v1, "demo.orders.v1", 101)?);
    for (user, balance) in [(1, 100), (2, 250), (3, 75)] {
        users.insert(user, balance);
    }
    orders.insert(9001, 1);
    orders.insert(9002, 3);
    println!(
        "v1  accepted at generation {}: users → 100, orders → 101; wrote {} users and {} orders",
        v1.validated().generation(),
        users.len(),
        orders.len()
    );
    drop((users, orders, v1));

    let v2 = boot(&image, V2)?;
    let users: Store = StableBTreeMap::init(open(&v2, "demo.users.v1", 100)?);
    let orders: Store = StableBTreeMap::init(open(&v2, "demo.orders.v1", 101)?);
    println!(
        "v2  accepted at generation {}: audit → 102 added; v1's records read back: users {:?}, orders {:?}",
        v2.validated().generation(),
        users.iter().map(|entry| entry.into_pair()).collect::<Vec<_>>(),
        orders.iter().map(|entry| entry.into_pair()).collect::<Vec<_>>()
    );
    drop((users, orders, v2));

    let before = sha256(&image)?;
    match boot(&image, V3_SWAPPED) {
        Ok(_) => return Err("v3 swapped two IDs and was accepted: governance failed".into()),
        Err(reason) => println!("v3  refused: {reason}"),
    }
    let after = sha256(&image)?;
    println!("    image sha256 before {before}");
    println!(
        "    image sha256 after  {after} ({})",
        if before == after { "unchanged" } else { "CHANGED" }
    );
    if before != after {
        return Err("the refused release changed the image".into());
    }

    let v3 = boot(&image, V3_FIXED)?;
    let users: Store = StableBTreeMap::init(open(&v3, "demo.users.v1", 100)?);
    println!(
        "v3' accepted at generation {}: IDs restored, sessions → 103 added; user 2 still has balance {:?}",
        v3.validated().generation(),
        users.get(&2)
    );
    drop(users);

    drop(v3);
    println!("\nholdfast inspect {}", image.display());
    let report = crate::inspect::inspect(&image).map_err(|e| e.to_string())?;
    print!("{}", crate::render::inspect_human(&report, colour));
    Ok(())
}

fn snapshot(entries: &[(&str, u8, &str)]) -> Result<DeclarationSnapshot, String> {
    let mut collector = DeclarationCollector::new();
    for (key, id, label) in entries {
        collector = collector
            .with_memory_manager(key, *id, *label)
            .map_err(|e| e.to_string())?;
    }
    collector.seal().map_err(|e| e.to_string())
}

fn boot(image: &Path, entries: &[(&str, u8, &str)]) -> Result<MemoryRuntime<FileMemory>, String> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(image)
        .map_err(|e| format!("cannot open {}: {e}", image.display()))?;
    MemoryRuntime::bootstrap(FileMemory::new(file), snapshot(entries)?, &AcceptAllPolicy)
        .map_err(|e| e.to_string())
}

fn open(
    runtime: &MemoryRuntime<FileMemory>,
    key: &str,
    id: u8,
) -> Result<holdfast_memory::stable_structures::memory_manager::VirtualMemory<FileMemory>, String> {
    runtime.open(key, id).map_err(|e| e.to_string())
}

fn sha256(path: &Path) -> Result<String, String> {
    let mut file = File::open(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher).map_err(|e| e.to_string())?;
    Ok(hasher.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

fn fresh_temp_dir() -> PathBuf {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    std::env::temp_dir().join(format!("holdfast-demo-{}-{nanos}", std::process::id()))
}
