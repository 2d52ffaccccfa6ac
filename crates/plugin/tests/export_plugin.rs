//! `holdfast_plugin_abi::export_plugin!` and the `HostApi` helpers, driven
//! through the recording host of `common`: init registers through the table,
//! null arguments and panics become typed errors, fini runs, and state is
//! copied into host memory. The macro defines `#[no_mangle]` symbols, so this
//! file is its own test binary.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};

use common::recording_host;
use holdfast_plugin_abi::{
    AbiError, AbiErrorCode, BundleInitContext, GuestContractId, GuestContractInstance,
    GuestContractInterface, HOLDFAST_ABI_VERSION, HostApi, LogLevel, PluginDescriptor, StringView, Version,
};

static PANIC_IN_INIT: AtomicBool = AtomicBool::new(false);
static FINI_RAN: AtomicBool = AtomicBool::new(false);

unsafe extern "C" fn make(_: *const HostApi, _: *const ()) -> GuestContractInstance {
    GuestContractInstance::null()
}
unsafe extern "C" fn unmake(_: *const HostApi, _: GuestContractInstance) {}

const ANSWER: GuestContractId = GuestContractId::new("demo.answer", 1);
static INTERFACE: GuestContractInterface =
    GuestContractInterface::native(ANSWER, Version::new(1, 0, 0), make, unmake, std::ptr::null(), 0);

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

    let host = recording_host::table();
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
    let registered = recording_host::take_registered();
    assert_eq!(
        registered
            .iter()
            .map(|interface| interface.contract_id)
            .collect::<Vec<_>>(),
        [ANSWER]
    );
    assert_eq!(
        recording_host::take_logged(),
        [(LogLevel::Info as u32, "init of bundle 0xabc".to_owned())]
    );

    PANIC_IN_INIT.store(true, Ordering::SeqCst);
    // SAFETY: both pointers are live for the call.
    let panicked = unsafe { holdfast_plugin_init(&host, &ctx) };
    assert_eq!(panicked.known_code(), Some(AbiErrorCode::Internal));
    // SAFETY: the message is a static string.
    let message = unsafe { panicked.message.to_str() };
    assert_eq!(message, Ok(Some("plugin init panicked")));
    assert!(
        recording_host::take_registered().is_empty(),
        "the panicking init registered nothing"
    );

    // SAFETY: the table is live for the call.
    unsafe { holdfast_plugin_fini(&host) };
    assert!(FINI_RAN.load(Ordering::SeqCst));
}

#[test]
fn host_helpers_copy_state_into_host_memory_and_report_refusals() {
    let host = recording_host::table();
    // SAFETY: the table is live; the blob is freed with the layout it was
    // allocated with.
    unsafe {
        let blob = host.alloc_state(b"state!").unwrap();
        assert_eq!(std::slice::from_raw_parts(blob.ptr, blob.len), b"state!");
        (host.free)(&host, blob.ptr.cast(), blob.len, 1);
        assert!(host.alloc_state(b"").unwrap().ptr.is_null());
        let refused = host.find(GuestContractId::new("x", 1), 0).unwrap_err();
        assert_eq!(refused.known_code(), Some(AbiErrorCode::NotFound));
    }
}
