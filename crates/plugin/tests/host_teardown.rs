//! Issue 14: a plugin inside a host function while the host drops its last
//! `Arc<Runtime>` must not have the runtime torn down on its thread inside
//! its call. A scripted loader (no native library) provides a contract whose
//! function calls back into `create_guest_instance`; the constructor that
//! host function runs stalls on a barrier while the test drops the runtime.

use std::sync::{Arc, Barrier, Mutex};
use std::thread::ThreadId;
use std::time::{Duration, Instant};

use holdfast_plugin::{BundleLoader, LoadContext, LoadedModule, LoaderError, ManifestData, Runtime, epoch};
use holdfast_plugin_abi::{
    AbiErrorCode, BundleId, GuestContractHandle, GuestContractId, GuestContractInstance,
    GuestContractInterface, HostApi, InstanceHandle, PluginDescriptor, StringView, Version,
};

const CONTRACT: GuestContractId = GuestContractId::new("teardown.test", 1);

/// What happened, in order, and on which thread.
static EVENTS: Mutex<Vec<(&'static str, ThreadId)>> = Mutex::new(Vec::new());
/// The constructor has been entered (inside the host function).
static ENTERED: Barrier = Barrier::new(2);
/// The host has dropped its last handle; the constructor may return.
static RELEASED: Barrier = Barrier::new(2);
/// The bundle's host table, for the contract function to call back through.
static HOST: Mutex<usize> = Mutex::new(0);
/// The handle of the contract, for the callback.
static HANDLE: Mutex<Option<GuestContractHandle>> = Mutex::new(None);

fn record(event: &'static str) {
    EVENTS.lock().unwrap().push((event, std::thread::current().id()));
}

unsafe extern "C" fn create(_: *const HostApi, _: *const ()) -> GuestContractInstance {
    record("constructor entered");
    ENTERED.wait();
    RELEASED.wait();
    GuestContractInstance {
        data: std::ptr::null_mut(),
        contract_id: CONTRACT,
    }
}

unsafe extern "C" fn destroy(_: *const HostApi, _: GuestContractInstance) {
    record("instance destroyed");
}

/// The contract's function 0: calls back into the host and answers the code.
extern "C" fn call_back() -> u32 {
    let host = *HOST.lock().unwrap() as *const HostApi;
    let handle = HANDLE.lock().unwrap().expect("set before the call");
    let mut instance = InstanceHandle::NULL;
    // SAFETY: the bundle's live table (kept by the runtime, which the
    // teardown under test must not drop before this returns).
    let code = unsafe { ((*host).create_guest_instance)(host, handle, std::ptr::null(), &mut instance) }.code;
    record("host function returned");
    code
}

struct Functions([*const (); 1]);
// SAFETY: function addresses, immutable.
unsafe impl Sync for Functions {}
static FUNCTIONS: Functions = Functions([call_back as *const ()]);

struct Module;

impl LoadedModule for Module {
    fn before_close(&mut self, _host: *const HostApi) {
        record("image closed");
    }
}

struct Scripted;

impl BundleLoader for Scripted {
    fn loader_name(&self) -> &'static str {
        "scripted"
    }

    fn load(&self, _manifest: &ManifestData, ctx: &mut LoadContext<'_>) -> Result<(), LoaderError> {
        ctx.adopt(Box::new(Module));
        let host = ctx.host_api();
        *HOST.lock().unwrap() = host as usize;
        let descriptor = PluginDescriptor {
            name: StringView::from_static_str("scripted"),
            contract_name: StringView::from_static_str("teardown.test"),
            version: Version::new(1, 0, 0),
        };
        let interface = GuestContractInterface::native(
            CONTRACT,
            Version::new(1, 0, 0),
            create,
            destroy,
            FUNCTIONS.0.as_ptr(),
            1,
        );
        let mut handle = GuestContractHandle::NULL;
        // SAFETY: the table the runtime handed over; live locals (the host
        // copies the interface).
        let outcome =
            unsafe { ((*host).register_guest_contract)(host, &descriptor, &interface, &mut handle) };
        assert_eq!(outcome.code, 0);
        Ok(())
    }
}

#[test]
fn a_runtime_dropped_during_a_host_call_is_torn_down_after_the_call_on_another_thread() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("manifest.toml"),
        format!(
            "loader = \"scripted\"\nname = \"scripted\"\nid = \"{}\"\nversion = \"1.0.0\"\nfile = \"lib.bin\"\nprovides = [\"teardown.test@1\"]\n[function_count]\n\"teardown.test@1\" = 1\n",
            BundleId::new("scripted")
        ),
    )
    .unwrap();
    std::fs::write(dir.path().join("lib.bin"), b"scripted").unwrap();
    let runtime = Runtime::builder().loader(Scripted).build().unwrap();
    runtime.load_bundle(dir.path()).unwrap();
    let handle = runtime.find_guest_contract(CONTRACT.id(), 0).unwrap();
    *HANDLE.lock().unwrap() = Some(handle);
    let weak = Arc::downgrade(&runtime);

    // The caller resolves under a pin, as every caller must, and keeps no
    // `Arc<Runtime>`: the host's handle below is the last one.
    let guard = epoch::pin();
    let function = {
        let interface = runtime.store().resolve_pinned(handle, &guard).unwrap();
        // SAFETY: resolved under `guard`, which this thread holds.
        unsafe { interface.native_functions() }.unwrap()[0] as usize
    };
    drop(guard);
    let caller = std::thread::spawn(move || {
        let guard = epoch::pin();
        // SAFETY: the function is `extern "C" fn() -> u32`; the runtime (and
        // so the image) is alive until the host drops it below, after which
        // this pinned call must keep it mapped.
        let call: extern "C" fn() -> u32 = unsafe { std::mem::transmute(function as *const ()) };
        let code = call();
        record("plugin call returned");
        drop(guard);
        (code, std::thread::current().id())
    });

    ENTERED.wait();
    // The plugin is inside `create_guest_instance`, holding the upgraded
    // runtime: the host's handle is not the last one, so this drop does not
    // tear down.
    drop(runtime);
    record("host dropped its handle");
    assert!(
        EVENTS
            .lock()
            .unwrap()
            .iter()
            .all(|(event, _)| *event != "image closed")
    );
    RELEASED.wait();
    let (code, caller_thread) = caller.join().unwrap();
    assert_eq!(code, AbiErrorCode::Ok as u32);

    let deadline = Instant::now() + Duration::from_secs(10);
    while weak.strong_count() > 0
        || !EVENTS
            .lock()
            .unwrap()
            .iter()
            .any(|(event, _)| *event == "image closed")
    {
        assert!(Instant::now() < deadline, "the runtime was never torn down");
        std::thread::sleep(Duration::from_millis(1));
    }
    let events = EVENTS.lock().unwrap().clone();
    let names: Vec<&str> = events.iter().map(|(event, _)| *event).collect();
    assert_eq!(
        names,
        [
            "constructor entered",
            "host dropped its handle",
            "host function returned",
            "plugin call returned",
            "instance destroyed",
            "image closed",
        ]
    );
    // The teardown ran on neither the plugin's thread nor the host's.
    let teardown_thread = events[4].1;
    assert_eq!(events[5].1, teardown_thread);
    assert_ne!(teardown_thread, caller_thread);
    assert_ne!(teardown_thread, std::thread::current().id());
    assert_eq!(weak.upgrade().map(|_| ()), None);
}
