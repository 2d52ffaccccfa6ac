//! The daemon contract's Rust side (spec/host.md §3): the sink's layout, the
//! name rule, failures that never read as success, and what
//! `export_daemon!` generates: an interface with state hooks whose
//! functions run the trait and turn every panic into an error code instead
//! of unwinding across the boundary.

use std::ffi::c_void;

use holdfast_plugin_abi::daemon::{
    DAEMON_CONTRACT_PREFIX, DAEMON_MIN_FUNCTIONS, DAEMON_PROCESS_INDEX, Daemon, DaemonFailure,
    DaemonProcessFn, DaemonSink, ExportedDaemon, Outputs, is_daemon_contract_name,
};
use holdfast_plugin_abi::{
    AbiError, AbiErrorCode, GuestContractId, GuestContractInstance, StateBlob, StateHooks, Version,
};

/// Counts events; panics on the event `panic`, in `new` when asked to, and
/// in `restore` on the state `[7]`.
struct Probe {
    count: u64,
}

impl Daemon for Probe {
    fn new() -> Self {
        Self { count: 0 }
    }

    fn process(&mut self, event: &[u8], out: &mut Outputs<'_>) -> Result<(), DaemonFailure> {
        match event {
            b"panic" => panic!("probe asked to panic"),
            b"fail" => Err(DaemonFailure::owned(
                AbiErrorCode::InvalidArgument,
                format!("refusing event {} after {} events", "fail", self.count),
            )),
            _ => {
                self.count += 1;
                out.emit(&self.count.to_le_bytes())?;
                out.emit(event)
            }
        }
    }

    fn save(&self) -> Vec<u8> {
        self.count.to_le_bytes().to_vec()
    }

    fn restore(from: Version, state: &[u8]) -> Result<Self, DaemonFailure> {
        if state == [7] {
            panic!("probe asked to panic in restore");
        }
        let bytes: [u8; 8] = state
            .try_into()
            .map_err(|_| DaemonFailure::new(AbiErrorCode::StateError, "a probe state is 8 bytes"))?;
        if from.major != 1 {
            return Err(DaemonFailure::with_code(1000, "a probe reads major 1 only"));
        }
        Ok(Self {
            count: u64::from_le_bytes(bytes),
        })
    }
}

holdfast_plugin_abi::export_daemon!(
    Probe,
    name = "daemon.probe",
    major = 1,
    version = (1, 2, 3),
    provider = "probe",
);

fn message(error: &AbiError) -> String {
    // SAFETY: the plugin's messages are valid until its next call.
    unsafe { error.message.to_str() }
        .expect("UTF-8")
        .unwrap_or_default()
        .to_owned()
}

/// The generated functions, read from the exported interface.
struct Generated {
    create: holdfast_plugin_abi::CreateInstanceFn,
    destroy: holdfast_plugin_abi::DestroyInstanceFn,
    process: DaemonProcessFn,
    hooks: StateHooks,
}

fn generated() -> Generated {
    let interface = Probe::interface();
    // SAFETY: the interface is a static of this binary.
    let functions = unsafe { interface.native_functions() }.expect("a native table");
    assert_eq!(functions.len(), DAEMON_MIN_FUNCTIONS as usize);
    // SAFETY: function 0 of a daemon contract is its `process`.
    let process = unsafe {
        std::mem::transmute::<*const (), DaemonProcessFn>(functions[DAEMON_PROCESS_INDEX as usize])
    };
    // SAFETY: the macro points `state` at static hooks.
    let hooks = unsafe { *interface.state };
    Generated {
        create: interface.create_instance,
        destroy: interface.destroy_instance,
        process,
        hooks,
    }
}

/// Runs the generated `process` on `instance`, collecting outputs.
fn process(generated: &Generated, instance: GuestContractInstance, event: &[u8]) -> (AbiError, Vec<Vec<u8>>) {
    unsafe extern "C" fn collect(ctx: *mut c_void, payload: *const u8, len: usize) -> AbiError {
        // SAFETY: `ctx` is the vector below; the payload is `len` bytes.
        unsafe { (*ctx.cast::<Vec<Vec<u8>>>()).push(std::slice::from_raw_parts(payload, len).to_vec()) };
        AbiError::ok()
    }
    let mut outputs: Vec<Vec<u8>> = Vec::new();
    let sink = DaemonSink {
        ctx: (&raw mut outputs).cast(),
        emit: collect,
    };
    // SAFETY: an instance the generated constructor made, the event bytes
    // and a sink valid for the call.
    let status = unsafe { (generated.process)(instance.data, event.as_ptr(), event.len(), &sink) };
    (status, outputs)
}

#[test]
fn the_sink_has_the_layout_the_header_asserts() {
    assert_eq!(size_of::<DaemonSink>(), 16);
    assert_eq!(align_of::<DaemonSink>(), 8);
    assert_eq!(std::mem::offset_of!(DaemonSink, ctx), 0);
    assert_eq!(std::mem::offset_of!(DaemonSink, emit), 8);
    assert_eq!(DAEMON_CONTRACT_PREFIX, "daemon.");
    assert_eq!((DAEMON_PROCESS_INDEX, DAEMON_MIN_FUNCTIONS), (0, 1));
}

#[test]
fn a_daemon_contract_name_is_the_prefix_and_a_kind() {
    assert!(is_daemon_contract_name("daemon.counter"));
    assert!(is_daemon_contract_name("daemon.a"));
    assert!(!is_daemon_contract_name("daemon."));
    assert!(!is_daemon_contract_name("daemon"));
    assert!(!is_daemon_contract_name("demo.Counter"));
    assert!(!is_daemon_contract_name("Daemon.counter"));
}

#[test]
fn a_failure_never_carries_the_success_code() {
    assert_eq!(
        DaemonFailure::with_code(0, "x").code(),
        AbiErrorCode::Internal as u32
    );
    assert_eq!(
        DaemonFailure::owned(AbiErrorCode::Ok, "x".into()).code(),
        AbiErrorCode::Internal as u32
    );
    let failure = DaemonFailure::new(AbiErrorCode::StateError, "bad state");
    assert_eq!((failure.code(), failure.message()), (15, "bad state"));
    assert_eq!(failure.to_string(), "code 15: bad state");
}

#[test]
fn outputs_capture_collects_what_a_daemon_emits() {
    let mut probe = Probe::new();
    let (result, outputs) = Outputs::capture(|out| {
        let result = probe.process(b"hello", out);
        assert_eq!(out.emitted(), 2);
        result
    });
    assert_eq!(result, Ok(()));
    assert_eq!(outputs, [1u64.to_le_bytes().to_vec(), b"hello".to_vec()]);
}

#[test]
fn the_exported_interface_is_a_daemon_contract_with_state_hooks() {
    let interface = Probe::interface();
    assert_eq!(interface.contract_id, GuestContractId::new("daemon.probe", 1));
    assert_eq!(interface.contract_version, Version::new(1, 2, 3));
    assert!(!interface.state.is_null());
    assert_eq!(<Probe as ExportedDaemon>::CONTRACT_NAME, "daemon.probe");
    assert_eq!(<Probe as ExportedDaemon>::PROVIDER, "probe");
}

#[test]
fn generated_functions_create_process_restore_and_destroy() {
    let generated = generated();
    // SAFETY: daemon constructors take null arguments and ignore the host.
    let instance = unsafe { (generated.create)(std::ptr::null(), std::ptr::null()) };
    assert_eq!(instance.contract_id, GuestContractId::new("daemon.probe", 1));
    assert!(!instance.data.is_null());

    let (status, outputs) = process(&generated, instance, b"one");
    assert!(status.is_ok());
    assert_eq!(outputs, [1u64.to_le_bytes().to_vec(), b"one".to_vec()]);
    let (status, outputs) = process(&generated, instance, b"");
    assert!(status.is_ok());
    assert_eq!(outputs, [2u64.to_le_bytes().to_vec(), Vec::new()]);

    // A failure's built message is kept in the instance until the next call.
    let (status, outputs) = process(&generated, instance, b"fail");
    assert_eq!(status.code, AbiErrorCode::InvalidArgument as u32);
    assert_eq!(message(&status), "refusing event fail after 2 events");
    assert!(outputs.is_empty());

    let state = 41u64.to_le_bytes();
    let blob = StateBlob {
        ptr: state.as_ptr().cast_mut(),
        len: state.len(),
    };
    // SAFETY: an instance of this interface; the blob is lent for the call.
    let restored =
        unsafe { (generated.hooks.restore_state)(std::ptr::null(), instance, Version::new(1, 0, 0), blob) };
    assert!(restored.is_ok());
    let (_, outputs) = process(&generated, instance, b"x");
    assert_eq!(outputs[0], 42u64.to_le_bytes());

    // SAFETY: as above.
    let refused =
        unsafe { (generated.hooks.restore_state)(std::ptr::null(), instance, Version::new(2, 0, 0), blob) };
    assert_eq!(
        (refused.code, message(&refused)),
        (1000, "a probe reads major 1 only".to_owned())
    );
    let empty = StateBlob::empty();
    // SAFETY: as above; the empty blob is null with length 0.
    let refused =
        unsafe { (generated.hooks.restore_state)(std::ptr::null(), instance, Version::new(1, 0, 0), empty) };
    assert_eq!(refused.code, AbiErrorCode::StateError as u32);
    // A refused restore leaves the daemon as it was.
    let (_, outputs) = process(&generated, instance, b"x");
    assert_eq!(outputs[0], 43u64.to_le_bytes());

    // SAFETY: made by this interface, destroyed once.
    unsafe { (generated.destroy)(std::ptr::null(), instance) };
}

#[test]
fn panics_in_generated_functions_come_back_as_internal_errors() {
    let generated = generated();
    // SAFETY: as in the test above.
    let instance = unsafe { (generated.create)(std::ptr::null(), std::ptr::null()) };
    let (status, outputs) = process(&generated, instance, b"panic");
    assert_eq!(status.code, AbiErrorCode::Internal as u32);
    assert_eq!(message(&status), "daemon process panicked");
    assert!(outputs.is_empty());

    let state = [7u8];
    let blob = StateBlob {
        ptr: state.as_ptr().cast_mut(),
        len: 1,
    };
    // SAFETY: as above.
    let status =
        unsafe { (generated.hooks.restore_state)(std::ptr::null(), instance, Version::new(1, 0, 0), blob) };
    assert_eq!(status.code, AbiErrorCode::Internal as u32);
    assert_eq!(message(&status), "daemon restore panicked");

    // The daemon still works after both.
    let (status, outputs) = process(&generated, instance, b"after");
    assert!(status.is_ok());
    assert_eq!(outputs[0], 1u64.to_le_bytes());
    // SAFETY: as above.
    unsafe { (generated.destroy)(std::ptr::null(), instance) };
}

#[test]
fn generated_functions_refuse_null_instances_and_malformed_arguments() {
    let generated = generated();
    let sink = DaemonSink {
        ctx: std::ptr::null_mut(),
        emit: {
            unsafe extern "C" fn refuse(_: *mut c_void, _: *const u8, _: usize) -> AbiError {
                AbiError::new(AbiErrorCode::InvalidArgument, "refused")
            }
            refuse
        },
    };
    // SAFETY: the generated function checks its pointers before using them.
    let status = unsafe { (generated.process)(std::ptr::null_mut(), b"x".as_ptr(), 1, &sink) };
    assert_eq!(status.code, AbiErrorCode::InvalidArgument as u32);
    // SAFETY: as in the tests above.
    let instance = unsafe { (generated.create)(std::ptr::null(), std::ptr::null()) };
    // SAFETY: a null event with a length is refused before it is read.
    let status = unsafe { (generated.process)(instance.data, std::ptr::null(), 4, &sink) };
    assert_eq!(message(&status), "a null event with a non-zero length");
    // A refused output comes back to the daemon as an error it returns.
    // SAFETY: a valid event and sink.
    let status = unsafe { (generated.process)(instance.data, b"x".as_ptr(), 1, &sink) };
    assert_eq!(
        (status.code, message(&status)),
        (
            AbiErrorCode::InvalidArgument as u32,
            "the host refused an output".to_owned()
        )
    );
    let mut out = StateBlob::empty();
    // SAFETY: a null host is refused before it is used.
    let status = unsafe { (generated.hooks.save_state)(std::ptr::null(), instance, &mut out) };
    assert_eq!(status.code, AbiErrorCode::InvalidArgument as u32);
    // SAFETY: made by this interface, destroyed once; null data is a no-op.
    unsafe {
        (generated.destroy)(std::ptr::null(), instance);
        (generated.destroy)(std::ptr::null(), GuestContractInstance::null());
    }
}
