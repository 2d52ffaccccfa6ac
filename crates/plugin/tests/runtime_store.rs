//! The contract registry (spec §5.2, §7 and required test 9): handles across
//! swaps, stale and reused slots, lookups in registration order, descriptor
//! checks, and the epoch rule that a resolved pointer outlives a swap while
//! its reader stays pinned.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use holdfast_plugin::{RegistryError, RuntimeStore, epoch};
use holdfast_plugin_abi::{
    BundleId, GuestContractHandle, GuestContractId, GuestContractInstance, GuestContractInterface, HostApi,
    PluginDescriptor, StringView, Version,
};

unsafe extern "C" fn create(_: *const HostApi, _: *const ()) -> GuestContractInstance {
    GuestContractInstance::null()
}
unsafe extern "C" fn destroy(_: *const HostApi, _: GuestContractInstance) {}

const fn interface(id: GuestContractId, minor: u32) -> GuestContractInterface {
    GuestContractInterface::native(
        id,
        Version::new(1, minor, 0),
        create,
        destroy,
        std::ptr::null(),
        0,
    )
}

const LOG: GuestContractId = GuestContractId::new("log.Sink", 1);
const CLOCK: GuestContractId = GuestContractId::new("time.Clock", 1);
static LOG_V0: GuestContractInterface = interface(LOG, 0);
static LOG_V1: GuestContractInterface = interface(LOG, 1);
static LOG_V2: GuestContractInterface = interface(LOG, 2);
static CLOCK_V0: GuestContractInterface = interface(CLOCK, 0);

fn descriptor() -> PluginDescriptor {
    PluginDescriptor {
        name: StringView::from_static_str("provider"),
        contract_name: StringView::from_static_str("log.Sink"),
        version: Version::new(1, 0, 0),
    }
}

fn register(
    store: &RuntimeStore,
    interface: &'static GuestContractInterface,
    bundle: &str,
) -> GuestContractHandle {
    // SAFETY: the descriptor's strings are static, and so is the interface.
    unsafe {
        store.register_guest_contract(descriptor(), interface, "log.Sink".into(), BundleId::new(bundle))
    }
    .expect("registration succeeds")
}

fn minor_of(store: &RuntimeStore, handle: GuestContractHandle) -> Result<u32, RegistryError> {
    let guard = epoch::pin();
    store
        .resolve_pinned(handle, &guard)
        .map(|interface| interface.contract_version.minor)
}

#[test]
fn handles_stay_valid_across_50_swaps() {
    let store = RuntimeStore::new();
    let handle = register(&store, &LOG_V0, "a");
    for round in 0..50u32 {
        let next = if round % 2 == 0 { LOG_V1 } else { LOG_V2 };
        store
            .swap_guest_contract_interface(handle.index, Arc::new(next))
            .unwrap();
        assert_eq!(minor_of(&store, handle), Ok(next.contract_version.minor));
    }
    assert_eq!(store.find_guest_contract(LOG, 0), Ok(handle));
    assert_eq!((store.len(), store.slot_count()), (1, 1));
}

#[test]
fn unregistered_handles_go_stale_and_reused_slots_get_a_new_generation() {
    let store = RuntimeStore::new();
    let first = register(&store, &LOG_V0, "a");
    assert_eq!(first.generation, 1);
    store.unregister_guest_contract(first).unwrap();
    let stale = Err(RegistryError::StaleHandle {
        index: first.index,
        generation: first.generation,
    });
    assert_eq!(minor_of(&store, first), stale.clone());
    assert_eq!(store.unregister_guest_contract(first), stale.map(|_| ()));
    assert_eq!(
        store.find_guest_contract(LOG, 0),
        Err(RegistryError::NotFound {
            contract_id: LOG.id(),
            min_minor: 0
        })
    );
    assert!(store.is_empty());

    let reused = register(&store, &CLOCK_V0, "b");
    assert_eq!((reused.index, reused.generation), (first.index, 2));
    assert_eq!(
        minor_of(&store, first),
        Err(RegistryError::StaleHandle {
            index: first.index,
            generation: 1
        })
    );
    assert_eq!(minor_of(&store, reused), Ok(0));
    assert_eq!(store.slot_count(), 1);
}

#[test]
fn null_zero_and_unknown_handles_are_rejected() {
    let store = RuntimeStore::new();
    let live = register(&store, &LOG_V0, "a");
    assert_eq!(
        minor_of(&store, GuestContractHandle::NULL),
        Err(RegistryError::InvalidHandle { index: u32::MAX })
    );
    let zero = GuestContractHandle {
        index: 0,
        generation: 0,
    };
    assert_eq!(
        minor_of(&store, zero),
        Err(RegistryError::StaleHandle {
            index: 0,
            generation: 0
        })
    );
    let beyond = GuestContractHandle {
        index: 7,
        generation: 1,
    };
    assert_eq!(
        minor_of(&store, beyond),
        Err(RegistryError::InvalidHandle { index: 7 })
    );
    assert_eq!(
        store
            .resolve_guest_contract(live)
            .map(|pointer| pointer.is_null()),
        Ok(false)
    );
}

#[test]
fn swaps_check_the_slot_and_the_contract() {
    let store = RuntimeStore::new();
    let handle = register(&store, &LOG_V0, "a");
    assert_eq!(
        store.swap_guest_contract_interface(handle.index, Arc::new(CLOCK_V0)),
        Err(RegistryError::ContractIdMismatch {
            index: handle.index,
            expected: LOG,
            found: CLOCK
        })
    );
    assert_eq!(
        store.swap_guest_contract_interface(9, Arc::new(LOG_V1)),
        Err(RegistryError::InvalidHandle { index: 9 })
    );
    store.unregister_guest_contract(handle).unwrap();
    assert_eq!(
        store.swap_guest_contract_interface(handle.index, Arc::new(LOG_V1)),
        Err(RegistryError::SlotVacant { index: handle.index })
    );
    // Another major with the same ID is accepted: the ID is what names it.
    let handle = register(&store, &LOG_V0, "a");
    let mut other_major = LOG_V1;
    other_major.contract_version = Version::new(2, 0, 0);
    assert_eq!(
        store.swap_guest_contract_interface(handle.index, Arc::new(other_major)),
        Ok(())
    );
}

#[test]
fn lookups_follow_registration_order_and_minor_versions() {
    let store = RuntimeStore::new();
    let first = register(&store, &LOG_V0, "a");
    let second = register(&store, &LOG_V2, "b");
    let third = register(&store, &LOG_V1, "c");
    assert_eq!(store.find_guest_contract(LOG, 0), Ok(first));
    assert_eq!(store.find_guest_contract(LOG, 1), Ok(second));
    assert_eq!(
        store.find_guest_contract(LOG, 3),
        Err(RegistryError::NotFound {
            contract_id: LOG.id(),
            min_minor: 3
        })
    );
    let mut out = [GuestContractHandle::NULL; 2];
    assert_eq!(store.find_all_guest_contracts(LOG, 0, &mut out), 3);
    assert_eq!(out, [first, second]);
    assert_eq!(store.find_all_guest_contracts(LOG, 1, &mut out), 2);
    assert_eq!(out, [second, third]);

    // A slot reused by a later registration sorts after older ones.
    store.unregister_guest_contract(first).unwrap();
    let fourth = register(&store, &LOG_V0, "d");
    assert_eq!(fourth.index, first.index);
    let mut all = [GuestContractHandle::NULL; 3];
    assert_eq!(store.find_all_guest_contracts(LOG, 0, &mut all), 3);
    assert_eq!(all, [second, third, fourth]);
    // Swaps keep a provider's place.
    store
        .swap_guest_contract_interface(second.index, Arc::new(LOG_V0))
        .unwrap();
    assert_eq!(store.find_guest_contract(LOG, 0), Ok(second));
}

#[test]
fn registration_checks_descriptors_and_duplicates() {
    let store = RuntimeStore::new();
    register(&store, &LOG_V0, "a");
    // SAFETY: static strings and interface.
    let duplicate = unsafe {
        store.register_guest_contract(descriptor(), &LOG_V1, "log.Sink".into(), BundleId::new("a"))
    };
    assert_eq!(
        duplicate,
        Err(RegistryError::DuplicateContract {
            contract_id: LOG.id(),
            bundle_id: BundleId::new("a").id()
        })
    );
    let mut absent = descriptor();
    absent.name = StringView::absent();
    // SAFETY: as above.
    let refused =
        unsafe { store.register_guest_contract(absent, &LOG_V1, "log.Sink".into(), BundleId::new("b")) };
    assert_eq!(
        refused,
        Err(RegistryError::InvalidDescriptor {
            reason: "the provider name is absent".into()
        })
    );
    let mut invalid = descriptor();
    invalid.contract_name = StringView::from_static(&[0xff]);
    // SAFETY: as above.
    let refused =
        unsafe { store.register_guest_contract(invalid, &LOG_V1, "log.Sink".into(), BundleId::new("b")) };
    assert_eq!(
        refused,
        Err(RegistryError::InvalidDescriptor {
            reason: "the contract name is not UTF-8".into()
        })
    );
    assert_eq!(store.len(), 1);
}

#[test]
fn a_pointer_resolved_before_a_swap_lives_while_its_reader_is_pinned() {
    let store = RuntimeStore::new();
    let handle = register(&store, &LOG_V0, "a");
    let replaced = Arc::new(LOG_V1);
    let witness = Arc::downgrade(&replaced);
    store
        .swap_guest_contract_interface(handle.index, replaced)
        .unwrap();

    let guard = epoch::pin();
    let pointer = store.resolve_guest_contract(handle).unwrap();
    store
        .swap_guest_contract_interface(handle.index, Arc::new(LOG_V2))
        .unwrap();
    for _ in 0..64 {
        epoch::pin().flush();
    }
    assert!(
        witness.upgrade().is_some(),
        "the old interface was freed under a pinned reader"
    );
    // SAFETY: `guard` was pinned before the resolve and is still held.
    assert_eq!(unsafe { (*pointer).contract_version.minor }, 1);
    drop(guard);

    // Once nobody is pinned, the old snapshot (and its interface) is freed;
    // other test threads may be pinned for a moment, hence the retries.
    let deadline = Instant::now() + Duration::from_secs(5);
    while witness.upgrade().is_some() && Instant::now() < deadline {
        epoch::pin().flush();
        std::thread::yield_now();
    }
    assert!(witness.upgrade().is_none(), "the old interface was never freed");
}

#[test]
fn readers_see_only_whole_interfaces_while_another_thread_swaps() {
    const READERS: usize = 4;
    let store = Arc::new(RuntimeStore::new());
    let handle = register(&store, &LOG_V1, "a");
    let start = Arc::new(Barrier::new(READERS + 1));
    let done = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicU64::new(0));
    let readers: Vec<_> = (0..READERS)
        .map(|_| {
            let (store, start, done, reads) = (store.clone(), start.clone(), done.clone(), reads.clone());
            std::thread::spawn(move || {
                start.wait();
                while !done.load(Ordering::Acquire) {
                    let guard = epoch::pin();
                    let interface = store
                        .resolve_pinned(handle, &guard)
                        .expect("the contract always resolves");
                    let minor = interface.contract_version.minor;
                    assert!(minor == 1 || minor == 2, "saw minor {minor}");
                    assert_eq!(interface.contract_id, LOG);
                    reads.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    start.wait();
    for round in 0..1_000 {
        let next = if round % 2 == 0 { LOG_V2 } else { LOG_V1 };
        store
            .swap_guest_contract_interface(handle.index, Arc::new(next))
            .unwrap();
    }
    done.store(true, Ordering::Release);
    for reader in readers {
        reader.join().expect("no reader panicked");
    }
    assert!(reads.load(Ordering::Relaxed) > 0);
}

/// Issue 14: only a guard of the collector the registry defers on (the
/// default one) protects a resolved interface; any other is refused.
#[test]
fn resolve_pinned_refuses_a_guard_of_another_collector() {
    let store = RuntimeStore::new();
    let handle = register(&store, &LOG_V1, "guarded");
    let collector = epoch::Collector::new();
    let local = collector.register();
    let foreign = local.pin();
    assert_eq!(
        store.resolve_pinned(handle, &foreign).map(|_| ()),
        Err(RegistryError::ForeignGuard)
    );
    // The check comes first: an unknown handle under a foreign guard is
    // still a foreign guard.
    assert_eq!(
        store
            .resolve_pinned(GuestContractHandle::NULL, &foreign)
            .map(|_| ()),
        Err(RegistryError::ForeignGuard)
    );
    drop(foreign);
    let own = epoch::pin();
    let interface = store.resolve_pinned(handle, &own).unwrap();
    assert_eq!(interface.contract_version, Version::new(1, 1, 0));
}

#[test]
fn cached_contract_refuses_a_guard_of_another_collector_on_both_paths() {
    let runtime = holdfast_plugin::Runtime::builder().build().unwrap();
    let handle = register(runtime.store(), &LOG_V2, "cached");
    let mut cached = holdfast_plugin::CachedContract::new(&runtime, handle);
    let collector = epoch::Collector::new();
    let local = collector.register();
    {
        // Nothing resolved yet: the slow path refuses it.
        let foreign = local.pin();
        assert_eq!(cached.get(&foreign).map(|_| ()), Err(RegistryError::ForeignGuard));
    }
    {
        let own = epoch::pin();
        assert_eq!(cached.get(&own).unwrap().contract_version, Version::new(1, 2, 0));
    }
    // Resolved and current: the fast path refuses it too.
    let foreign = local.pin();
    assert_eq!(cached.get(&foreign).map(|_| ()), Err(RegistryError::ForeignGuard));
    drop(foreign);
    let own = epoch::pin();
    assert_eq!(cached.get(&own).unwrap().contract_version, Version::new(1, 2, 0));
}
