//! The file watcher (spec §6.10, §10.2 test 13): a library rewritten in
//! several chunks yields exactly one reload, and the new code answers.
#![cfg(feature = "watch")]

mod common;
#[macro_use]
#[path = "common/fixtures.rs"]
mod fixtures;

use std::io::Write;
use std::time::{Duration, Instant};

use common::{EventLog, TestNativeLoader, call_u32, copy_bundle, library_file_name};
use fixtures::{hot_reload_config, v2_so_path};
use holdfast_plugin::{Runtime, RuntimeError, WatchConfig};
use holdfast_plugin_abi::{GuestContractId, ReloadPhaseType};

const RELOAD_TEST: u64 = GuestContractId::new("reload.test", 1).id();

fn reloaded_count(events: &[ReloadPhaseType]) -> usize {
    events
        .iter()
        .filter(|phase| **phase == ReloadPhaseType::Reloaded)
        .count()
}

#[test]
fn a_library_written_in_chunks_is_reloaded_exactly_once() {
    let copy = copy_bundle("reload-v1");
    let events = EventLog::default();
    let runtime = Runtime::builder()
        .config(hot_reload_config())
        .loader(TestNativeLoader::new())
        .on_reload(events.callback())
        .watch(WatchConfig {
            debounce: Duration::from_millis(200),
        })
        .build()
        .unwrap();
    runtime.load_bundle(copy.path()).unwrap();
    assert_eq!(call_u32(&runtime, RELOAD_TEST, 0), Some(100));

    let new_code = std::fs::read(v2_so_path()).unwrap();
    let library = copy.path().join(library_file_name("reload_plugin_v1"));
    let mut file = std::fs::File::create(&library).unwrap();
    for chunk in new_code.chunks(new_code.len() / 4 + 1) {
        file.write_all(chunk).unwrap();
        file.flush().unwrap();
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(file);

    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while reloaded_count(&seen) == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        seen.extend(events.take_phases());
    }
    // Whatever else is pending arrives within a few debounce periods.
    std::thread::sleep(Duration::from_millis(1000));
    seen.extend(events.take_phases());
    assert_eq!(reloaded_count(&seen), 1, "{seen:?}");
    assert_eq!(call_u32(&runtime, RELOAD_TEST, 0), Some(200));
}

#[test]
fn a_watcher_needs_hot_reload() {
    let outcome = Runtime::builder()
        .loader(TestNativeLoader::new())
        .watch(WatchConfig::default())
        .build();
    assert!(matches!(outcome, Err(RuntimeError::HotReloadDisabled)));
}
