//! Soak (spec §10.2 test 16), alone in its binary so no other test shares
//! the process: load, call and unload `soak_plugin` up to 500 times or for
//! 60 s. Afterwards memory is flat, no image is mapped, the private shadow
//! directory is empty and the registry has not grown.
#![cfg(target_os = "linux")]

mod common;

use std::time::{Duration, Instant};

use common::{TestNativeLoader, bundle_dir, call_u32, reclaim_all};
use holdfast_plugin::Runtime;
use holdfast_plugin_abi::GuestContractId;

const RELOAD_TEST: u64 = GuestContractId::new("reload.test", 1).id();
const WARM_UP: usize = 50;
const CYCLES: usize = 500;

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|line| line.starts_with("VmRSS:")).unwrap();
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib * 1024
}

fn cycle(runtime: &Runtime, dir: &std::path::Path) {
    let id = runtime.load_bundle(dir).unwrap();
    assert_eq!(call_u32(runtime, RELOAD_TEST, 0), Some(700));
    runtime.unload_bundle(id).unwrap();
    assert_eq!(reclaim_all(runtime), 0);
}

#[test]
fn loading_and_unloading_500_times_leaves_memory_mappings_and_slots_flat() {
    let shadow = tempfile::tempdir().unwrap();
    let runtime = Runtime::builder()
        .loader(TestNativeLoader::with_shadow_dir(shadow.path().to_path_buf()))
        .build()
        .unwrap();
    let dir = bundle_dir("soak-plugin");
    for _ in 0..WARM_UP {
        cycle(&runtime, &dir);
    }
    let (rss_after_warm_up, slots_after_warm_up) = (rss_bytes(), runtime.store().slot_count());
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut cycles = WARM_UP;
    while cycles < CYCLES && Instant::now() < deadline {
        cycle(&runtime, &dir);
        cycles += 1;
    }
    let grown = rss_bytes().saturating_sub(rss_after_warm_up);
    assert!(grown <= 4 << 20, "RSS grew by {grown} bytes over {cycles} cycles");
    assert_eq!(runtime.store().slot_count(), slots_after_warm_up);
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    assert!(
        !maps.contains(shadow.path().to_str().unwrap()),
        "an image is still mapped"
    );
    assert_eq!(std::fs::read_dir(shadow.path()).unwrap().count(), 0);
}
