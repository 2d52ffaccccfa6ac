//! Criterion benchmarks of the contract registry (spec §11):
//!
//! - `resolve/{10,100,1000}`: `resolve_guest_contract` with N contracts
//!   registered, the caller's guard held for the batch (target ≤ 8 ns, and
//!   1000 within 1.5× of 10; polyplug 0.1.3: 9.24 ns);
//! - `resolve_pinned/{10,100,1000}`: the guard-scoped resolve;
//! - `find_resolve/{10,100,1000}`: find, then resolve (target ≤ 20 ns;
//!   polyplug: 25.7 ns);
//! - `resolve_unpinned/N` and `find_unpinned/N`: each call pins for itself,
//!   as polyplug's own registry benches call its store (for side-by-side
//!   runs on one machine).

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use holdfast_plugin::{RuntimeStore, epoch};
use holdfast_plugin_abi::{
    BundleId, GuestContractHandle, GuestContractId, GuestContractInstance, GuestContractInterface, HostApi,
    PluginDescriptor, StringView, Version,
};

unsafe extern "C" fn create(_: *const HostApi, _: *const ()) -> GuestContractInstance {
    GuestContractInstance::null()
}
unsafe extern "C" fn destroy(_: *const HostApi, _: GuestContractInstance) {}

/// A store with `count` contracts; returns it, the handle and ID of the
/// middle one.
fn store_with(count: u32) -> (RuntimeStore, GuestContractHandle, GuestContractId) {
    let store = RuntimeStore::new();
    let mut middle = None;
    for i in 0..count {
        let name = format!("bench.contract{i}");
        let id = GuestContractId::new(&name, 1);
        let interface: &'static GuestContractInterface = Box::leak(Box::new(GuestContractInterface::native(
            id,
            Version::new(1, 0, 0),
            create,
            destroy,
            std::ptr::null(),
            0,
        )));
        let descriptor = PluginDescriptor {
            name: StringView::from_static_str("bench"),
            contract_name: StringView::from_static_str("bench.contract"),
            version: Version::new(1, 0, 0),
        };
        // SAFETY: static descriptor strings; the interface is leaked, so it
        // lives as long as the store.
        let handle =
            unsafe { store.register_guest_contract(descriptor, interface, name, BundleId::new("bench")) }
                .expect("registration succeeds");
        if i == count / 2 {
            middle = Some((handle, id));
        }
    }
    let (handle, id) = middle.expect("count > 0");
    (store, handle, id)
}

fn registry(c: &mut Criterion) {
    for count in [10, 100, 1_000] {
        let (store, handle, id) = store_with(count);
        let guard = epoch::pin();
        c.bench_function(&format!("resolve/{count}"), |b| {
            b.iter(|| black_box(store.resolve_guest_contract(black_box(handle)).unwrap()))
        });
        c.bench_with_input(
            BenchmarkId::new("resolve_pinned", count),
            &handle,
            |b, &handle| {
                b.iter(|| {
                    black_box(
                        store
                            .resolve_pinned(black_box(handle), &guard)
                            .unwrap()
                            .contract_id,
                    )
                })
            },
        );
        c.bench_function(&format!("find_resolve/{count}"), |b| {
            b.iter(|| {
                let found = store.find_guest_contract(black_box(id), 0).unwrap();
                black_box(store.resolve_guest_contract(found).unwrap())
            })
        });
        drop(guard);
        // The same with no guard held by the caller: each call pins for
        // itself (how polyplug's registry benches call it).
        c.bench_function(&format!("resolve_unpinned/{count}"), |b| {
            b.iter(|| black_box(store.resolve_guest_contract(black_box(handle)).unwrap()))
        });
        c.bench_function(&format!("find_unpinned/{count}"), |b| {
            b.iter(|| black_box(store.find_guest_contract(black_box(id), 0).unwrap()))
        });
    }
}

criterion_group!(benches, registry);
criterion_main!(benches);
