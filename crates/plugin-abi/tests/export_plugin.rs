//! `export_plugin!` and the `HostApi` helpers, driven through a fake host
//! table: init registers through the table, null arguments and panics become
//! typed errors, fini runs, and state is copied into host memory. The macro
//! defines `#[no_mangle]` symbols, so this file is its own test binary.

use std::ffi::c_void;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use holdfast_plugin_abi::{
    AbiError, AbiErrorCode, BundleInfo, BundleInitContext, GuestContractHandle, GuestContractId,
    GuestContractInstance, GuestContractInterface, HOLDFAST_ABI_VERSION, HostApi, InstanceHandle, LogLevel,
    PluginDescriptor, StringView, Version,
};

static REGISTERED: AtomicU64 = AtomicU64::new(0);
static LOGGED: Mutex<Vec<(u32, String)>> = Mutex::new(Vec::new());
static PANIC_IN_INIT: AtomicBool = AtomicBool::new(false);
static FINI_RAN: AtomicBool = AtomicBool::new(false);

const UNSUPPORTED: AbiError = AbiError::new(AbiErrorCode::Unsupported, "not in this fake host");

unsafe extern "C" fn register(
    _host: *const HostApi,
    _descriptor: *const PluginDescriptor,
    interface: *const GuestContractInterface,
    out: *mut GuestContractHandle,
) -> AbiError {
    // SAFETY: the helper passes live references for the call.
    unsafe {
        REGISTERED.store((*interface).contract_id.id(), Ordering::SeqCst);
        *out = GuestContractHandle {
            index: 0,
            generation: 1,
        };
    }
    AbiError::ok()
}
unsafe extern "C" fn alloc(_: *const HostApi, size: usize, align: usize) -> *mut c_void {
    let Ok(layout) = std::alloc::Layout::from_size_align(size, align) else {
        return std::ptr::null_mut();
    };
    // SAFETY: the helper never asks for zero bytes.
    unsafe { std::alloc::alloc(layout).cast() }
}
unsafe extern "C" fn free(_: *const HostApi, ptr: *mut c_void, size: usize, align: usize) {
    let layout = std::alloc::Layout::from_size_align(size, align).expect("the layout alloc accepted");
    // SAFETY: `ptr` came from `alloc` with this layout.
    unsafe { std::alloc::dealloc(ptr.cast(), layout) }
}
unsafe extern "C" fn find(_: *const HostApi, _: u64, _: u32, _: *mut GuestContractHandle) -> AbiError {
    AbiError::new(AbiErrorCode::NotFound, "nothing registered")
}
unsafe extern "C" fn find_all(
    _: *const HostApi,
    _: u64,
    _: u32,
    _: *mut GuestContractHandle,
    _: usize,
) -> usize {
    0
}
unsafe extern "C" fn resolve(_: *const HostApi, _: GuestContractHandle) -> *const GuestContractInterface {
    std::ptr::null()
}
unsafe extern "C" fn create(
    _: *const HostApi,
    _: GuestContractHandle,
    _: *const (),
    _: *mut InstanceHandle,
) -> AbiError {
    UNSUPPORTED
}
unsafe extern "C" fn resolve_instance(
    _: *const HostApi,
    _: InstanceHandle,
    _: *mut GuestContractInstance,
) -> AbiError {
    UNSUPPORTED
}
unsafe extern "C" fn destroy(_: *const HostApi, _: InstanceHandle) -> AbiError {
    UNSUPPORTED
}
unsafe extern "C" fn list(_: *const HostApi, _: *mut BundleInfo, _: usize) -> usize {
    0
}
unsafe extern "C" fn load(_: *const HostApi, _: StringView, _: *mut u64) -> AbiError {
    UNSUPPORTED
}
unsafe extern "C" fn reload(_: *const HostApi, _: StringView) -> AbiError {
    UNSUPPORTED
}
unsafe extern "C" fn unload(_: *const HostApi, _: u64) -> AbiError {
    UNSUPPORTED
}
unsafe extern "C" fn last_error(_: *const HostApi) -> StringView {
    StringView::absent()
}
unsafe extern "C" fn log(_: *const HostApi, level: u32, message: StringView) {
    // SAFETY: the helper passes a view of a live `&str`.
    let text = unsafe { message.to_str() }.expect("UTF-8").expect("present");
    LOGGED.lock().unwrap().push((level, text.to_owned()));
}
unsafe extern "C" fn revision(_: *const HostApi) -> u64 {
    0
}
unsafe extern "C" fn pin(_: *const HostApi) {}

fn fake_host() -> HostApi {
    HostApi {
        abi_version: HOLDFAST_ABI_VERSION,
        struct_size: size_of::<HostApi>() as u32,
        context: std::ptr::null_mut(),
        register_guest_contract: register,
        alloc,
        free,
        find_guest_contract: find,
        find_all_guest_contracts: find_all,
        resolve_guest_contract: resolve,
        create_guest_instance: create,
        resolve_guest_instance: resolve_instance,
        destroy_guest_instance: destroy,
        list_bundles: list,
        load_bundle: load,
        reload_bundle: reload,
        unload_bundle: unload,
        get_last_error: last_error,
        log,
        revision_counter: revision,
        pin,
        unpin: pin,
    }
}

unsafe extern "C" fn make(_: *const HostApi, _: *const ()) -> GuestContractInstance {
    GuestContractInstance::null()
}
unsafe extern "C" fn unmake(_: *const HostApi, _: GuestContractInstance) {}

static INTERFACE: GuestContractInterface = GuestContractInterface::native(
    GuestContractId::new("demo.answer", 1),
    Version::new(1, 0, 0),
    make,
    unmake,
    std::ptr::null(),
    0,
);

fn init(host: &HostApi, ctx: &BundleInitContext) -> Result<(), AbiError> {
    assert!(!PANIC_IN_INIT.load(Ordering::SeqCst), "init was told to panic");
    let descriptor = PluginDescriptor {
        name: StringView::from_static_str("answer"),
        contract_name: StringView::from_static_str("demo.answer"),
        version: Version::new(1, 0, 0),
    };
    // SAFETY: `host` is the table passed to init.
    unsafe { host.log_str(LogLevel::Info, &format!("init of bundle {:#x}", ctx.bundle_id)) };
    // SAFETY: as above.
    unsafe { host.register(&descriptor, &INTERFACE) }.map(|_| ())
}

fn fini(_host: &HostApi) {
    FINI_RAN.store(true, Ordering::SeqCst);
}

holdfast_plugin_abi::export_plugin!(init = init, fini = fini);

#[test]
fn exported_symbols_report_the_abi_run_init_and_fini() {
    assert_eq!(holdfast_abi_version(), HOLDFAST_ABI_VERSION);
    assert_eq!(
        holdfast_abi_layout(),
        &holdfast_plugin_abi::ABI_LAYOUT as *const _
    );

    let host = fake_host();
    let ctx = BundleInitContext {
        bundle_id: 0xabc,
        bundle_path: StringView::from_static_str("/bundles/answer"),
    };
    // SAFETY: both pointers are live for the call.
    let refused = unsafe { holdfast_plugin_init(std::ptr::null(), &ctx) };
    assert_eq!(refused.known_code(), Some(AbiErrorCode::InvalidArgument));

    // SAFETY: both pointers are live for the call.
    let outcome = unsafe { holdfast_plugin_init(&host, &ctx) };
    assert!(outcome.is_ok());
    assert_eq!(
        REGISTERED.load(Ordering::SeqCst),
        GuestContractId::new("demo.answer", 1).id()
    );
    assert_eq!(
        *LOGGED.lock().unwrap(),
        [(LogLevel::Info as u32, "init of bundle 0xabc".to_owned())]
    );

    PANIC_IN_INIT.store(true, Ordering::SeqCst);
    // SAFETY: both pointers are live for the call.
    let panicked = unsafe { holdfast_plugin_init(&host, &ctx) };
    assert_eq!(panicked.known_code(), Some(AbiErrorCode::Internal));
    // SAFETY: the message is a static string.
    let message = unsafe { panicked.message.to_str() };
    assert_eq!(message, Ok(Some("plugin init panicked")));

    // SAFETY: the table is live for the call.
    unsafe { holdfast_plugin_fini(&host) };
    assert!(FINI_RAN.load(Ordering::SeqCst));

    // SAFETY: the table is live; the blob is freed with the layout it was
    // allocated with.
    unsafe {
        let blob = host.alloc_state(b"state!").unwrap();
        assert_eq!(std::slice::from_raw_parts(blob.ptr, blob.len), b"state!");
        (host.free)(&host, blob.ptr.cast(), blob.len, 1);
        assert!(host.alloc_state(b"").unwrap().ptr.is_null());
        assert_eq!(
            host.find(GuestContractId::new("x", 1), 0)
                .unwrap_err()
                .known_code(),
            Some(AbiErrorCode::NotFound)
        );
    }
}
