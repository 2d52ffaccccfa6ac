//! The host side of the ABI (spec §3.5, §6.3) driven by a scripted loader
//! instead of a native library: every registration check with its typed
//! error, arbitrary interface bytes (property-tested) never panicking the
//! host, the module protocol (`adopt`, `NothingAdopted`, `before_close` in
//! fini scope), and the host's own table.

use std::ffi::c_void;
use std::sync::{Arc, Mutex};

use holdfast_plugin::{
    BundleLoader, LoadContext, LoadedModule, LoaderError, ManifestData, Runtime, RuntimeError,
    ValidationError,
};
use holdfast_plugin_abi::{
    AbiErrorCode, BundleId, GuestContractHandle, GuestContractId, GuestContractInstance,
    GuestContractInterface, HostApi, PluginDescriptor, RuntimeConfig, StringView, Version,
};
use proptest::prelude::*;

unsafe extern "C" fn create(_: *const HostApi, _: *const ()) -> GuestContractInstance {
    GuestContractInstance::null()
}
unsafe extern "C" fn destroy(_: *const HostApi, _: GuestContractInstance) {}
extern "C" fn answer() -> u32 {
    42
}
unsafe extern "C" fn save(
    _: *const HostApi,
    _: GuestContractInstance,
    _: *mut holdfast_plugin_abi::StateBlob,
) -> holdfast_plugin_abi::AbiError {
    holdfast_plugin_abi::AbiError::ok()
}

/// A plugin's interface as raw bytes may have it: nullable functions, any
/// dispatch type.
#[repr(C)]
#[derive(Clone, Copy)]
struct RawInterface {
    contract_id: u64,
    contract_version: Version,
    dispatch_type: u32,
    create_instance: Option<unsafe extern "C" fn(*const HostApi, *const ()) -> GuestContractInstance>,
    destroy_instance: Option<unsafe extern "C" fn(*const HostApi, GuestContractInstance)>,
    function_count: u32,
    functions: *const *const (),
    state: *const RawHooks,
}

// SAFETY: plain addresses of static data, never written.
unsafe impl Send for RawInterface {}
// SAFETY: as above.
unsafe impl Sync for RawInterface {}

#[repr(C)]
struct RawHooks {
    save_state: *const (),
    restore_state: *const (),
}
// SAFETY: function addresses, immutable.
unsafe impl Sync for RawHooks {}

struct Table<const N: usize>([*const (); N]);
// SAFETY: function addresses (or null), immutable.
unsafe impl<const N: usize> Sync for Table<N> {}

static ONE: Table<1> = Table([answer as *const ()]);
static WITH_NULL: Table<3> = Table([answer as *const (), std::ptr::null(), answer as *const ()]);
static WITH_ANSWERS: Table<3> = Table([answer as *const (), answer as *const (), answer as *const ()]);
static HALF_HOOKS: RawHooks = RawHooks {
    save_state: save as *const (),
    restore_state: std::ptr::null(),
};

const fn valid(name_major: (&str, u32)) -> RawInterface {
    RawInterface {
        contract_id: GuestContractId::new(name_major.0, name_major.1).id(),
        contract_version: Version::new(name_major.1, 0, 0),
        dispatch_type: 0,
        create_instance: Some(create),
        destroy_instance: Some(destroy),
        function_count: 1,
        functions: ONE.0.as_ptr(),
        state: std::ptr::null(),
    }
}

/// One call of `register_guest_contract` a scripted init makes.
#[derive(Clone, Copy)]
struct Registration {
    provider: &'static [u8],
    contract: &'static [u8],
    interface: RawInterface,
}

fn registration(contract: &'static str, interface: RawInterface) -> Registration {
    Registration {
        provider: b"scripted",
        contract: contract.as_bytes(),
        interface,
    }
}

/// Records what the runtime does with an adopted module.
#[derive(Default)]
struct Observed {
    codes: Vec<u32>,
    closed_with_find_code: Vec<u32>,
}

struct Module(Arc<Mutex<Observed>>);

impl LoadedModule for Module {
    fn before_close(&mut self, host: *const HostApi) {
        let mut handle = GuestContractHandle::NULL;
        // SAFETY: the runtime passes the bundle's live table.
        let code = unsafe { ((*host).find_guest_contract)(host, 1, 0, &mut handle) }.code;
        self.0.lock().unwrap().closed_with_find_code.push(code);
    }
}

/// A loader whose "init" makes the scripted registrations.
struct Scripted {
    registrations: Vec<Registration>,
    adopt: bool,
    observed: Arc<Mutex<Observed>>,
}

impl BundleLoader for Scripted {
    fn loader_name(&self) -> &'static str {
        "scripted"
    }

    fn load(&self, _manifest: &ManifestData, ctx: &mut LoadContext<'_>) -> Result<(), LoaderError> {
        if self.adopt {
            ctx.adopt(Box::new(Module(self.observed.clone())));
        }
        let host = ctx.host_api();
        for registration in &self.registrations {
            let descriptor = PluginDescriptor {
                name: StringView {
                    ptr: registration.provider.as_ptr(),
                    len: registration.provider.len(),
                },
                contract_name: StringView {
                    ptr: registration.contract.as_ptr(),
                    len: registration.contract.len(),
                },
                version: Version::new(1, 0, 0),
            };
            let interface = (&raw const registration.interface).cast::<GuestContractInterface>();
            let mut handle = GuestContractHandle::NULL;
            // SAFETY: the table the runtime handed over, live pointers.
            let outcome =
                unsafe { ((*host).register_guest_contract)(host, &descriptor, interface, &mut handle) };
            self.observed.lock().unwrap().codes.push(outcome.code);
        }
        Ok(())
    }
}

fn manifest(dir: &std::path::Path, provides: &[(&str, u32)]) {
    let contracts: Vec<String> = provides.iter().map(|(name, _)| format!("{name:?}")).collect();
    let counts: Vec<String> = provides
        .iter()
        .map(|(name, count)| format!("{name:?} = {count}"))
        .collect();
    let text = format!(
        "loader = \"scripted\"\nname = \"scripted\"\nid = \"{}\"\nversion = \"1.0.0\"\nfile = \"lib.bin\"\nprovides = [{}]\n[function_count]\n{}\n",
        BundleId::new("scripted"),
        contracts.join(", "),
        counts.join("\n")
    );
    std::fs::write(dir.join("manifest.toml"), text).unwrap();
    std::fs::write(dir.join("lib.bin"), b"scripted").unwrap();
}

/// Loads a scripted bundle providing `provides`; returns the outcome, the
/// codes init saw, and the runtime.
fn load(
    provides: &[(&str, u32)],
    registrations: Vec<Registration>,
) -> (Result<BundleId, RuntimeError>, Vec<u32>, Arc<Runtime>) {
    load_with(RuntimeConfig::default(), provides, registrations)
}

/// As `load`, with `config`.
fn load_with(
    config: RuntimeConfig,
    provides: &[(&str, u32)],
    registrations: Vec<Registration>,
) -> (Result<BundleId, RuntimeError>, Vec<u32>, Arc<Runtime>) {
    let dir = tempfile::tempdir().unwrap();
    manifest(dir.path(), provides);
    let observed = Arc::new(Mutex::new(Observed::default()));
    let runtime = Runtime::builder()
        .config(config)
        .loader(Scripted {
            registrations,
            adopt: true,
            observed: observed.clone(),
        })
        .build()
        .unwrap();
    let outcome = runtime.load_bundle(dir.path());
    let codes = observed.lock().unwrap().codes.clone();
    (outcome, codes, runtime)
}

fn validation_error(outcome: Result<BundleId, RuntimeError>) -> ValidationError {
    match outcome {
        Err(RuntimeError::Validation { error, .. }) => error,
        other => panic!("{other:?}"),
    }
}

const TEST: (&str, u32) = ("scripted.test", 1);

#[test]
fn a_valid_registration_is_published() {
    let (outcome, codes, runtime) = load(
        &[("scripted.test@1", 1)],
        vec![registration("scripted.test", valid(TEST))],
    );
    outcome.unwrap();
    assert_eq!(codes, [0]);
    assert_eq!(runtime.store().len(), 1);
}

/// An interface, the code registration must answer, and a check of the
/// validation error the load must fail with.
type RegistrationCase = (RawInterface, AbiErrorCode, fn(&ValidationError) -> bool);

#[test]
fn each_registration_check_has_its_code_and_validation_error() {
    let cases: [RegistrationCase; 6] = [
        (
            RawInterface {
                create_instance: None,
                ..valid(TEST)
            },
            AbiErrorCode::InvalidArgument,
            |error| matches!(error, ValidationError::InvalidDescriptor { .. }),
        ),
        (
            // 0 (native) and 1 (VM) are the dispatch types there are.
            RawInterface {
                dispatch_type: 2,
                ..valid(TEST)
            },
            AbiErrorCode::Unsupported,
            |error| {
                matches!(
                    error,
                    ValidationError::UnsupportedDispatch { dispatch_type: 2, .. }
                )
            },
        ),
        (
            RawInterface {
                function_count: 3,
                functions: WITH_NULL.0.as_ptr(),
                ..valid(TEST)
            },
            AbiErrorCode::InvalidArgument,
            |error| matches!(error, ValidationError::NullFunction { index: 1, .. }),
        ),
        (
            RawInterface {
                function_count: 70_000,
                ..valid(TEST)
            },
            AbiErrorCode::InvalidArgument,
            |error| matches!(error, ValidationError::InvalidDescriptor { reason } if reason.contains("70000")),
        ),
        (
            RawInterface {
                contract_id: 12_345,
                ..valid(TEST)
            },
            AbiErrorCode::IdMismatch,
            |error| matches!(error, ValidationError::ContractIdMismatch { found, .. } if found.id() == 12_345),
        ),
        (
            RawInterface {
                state: &HALF_HOOKS,
                ..valid(TEST)
            },
            AbiErrorCode::InvalidArgument,
            |error| matches!(error, ValidationError::InvalidStateHooks { .. }),
        ),
    ];
    for (index, (interface, code, expected)) in cases.into_iter().enumerate() {
        let (outcome, codes, runtime) = load(
            &[("scripted.test@1", 1)],
            vec![registration("scripted.test", interface)],
        );
        assert_eq!(codes, [code as u32], "case {index}");
        let error = validation_error(outcome);
        assert!(expected(&error), "case {index}: {error:?}");
        assert_eq!(runtime.store().len(), 0, "case {index}");
    }
}

#[test]
fn undeclared_duplicate_and_malformed_registrations_are_refused() {
    let provides = [("scripted.test@1", 1)];
    let (outcome, codes, _) = load(
        &provides,
        vec![registration("other.test", valid(("other.test", 1)))],
    );
    assert_eq!(codes, [AbiErrorCode::Undeclared as u32]);
    assert_eq!(
        validation_error(outcome),
        ValidationError::ContractNotInManifest {
            contract: "other.test@1".into()
        }
    );

    let twice = registration("scripted.test", valid(TEST));
    let (outcome, codes, runtime) = load(&provides, vec![twice, twice]);
    assert_eq!(codes, [0, AbiErrorCode::AlreadyRegistered as u32]);
    assert!(matches!(
        validation_error(outcome),
        ValidationError::DuplicateContract { .. }
    ));
    assert_eq!(
        runtime.store().len(),
        0,
        "the first registration was never published"
    );

    let bad_utf8 = Registration {
        contract: b"scripted.\xfftest",
        ..twice
    };
    let (outcome, codes, _) = load(&provides, vec![bad_utf8]);
    assert_eq!(codes, [AbiErrorCode::InvalidUtf8 as u32]);
    assert!(matches!(
        validation_error(outcome),
        ValidationError::InvalidDescriptor { .. }
    ));

    let (outcome, codes, _) = load(&provides, vec![]);
    assert_eq!(codes, []);
    assert_eq!(
        validation_error(outcome),
        ValidationError::ContractNotRegistered {
            contract: "scripted.test@1".into()
        }
    );
}

#[test]
fn an_id_held_by_another_contract_name_is_a_collision() {
    let dir = tempfile::tempdir().unwrap();
    manifest(dir.path(), &[("scripted.test@1", 1)]);
    let observed = Arc::new(Mutex::new(Observed::default()));
    let runtime = Runtime::builder()
        .loader(Scripted {
            registrations: vec![registration("scripted.test", valid(TEST))],
            adopt: true,
            observed: observed.clone(),
        })
        .build()
        .unwrap();
    static SQUATTER: GuestContractInterface = GuestContractInterface::native(
        GuestContractId::new("scripted.test", 1),
        Version::new(1, 0, 0),
        create,
        destroy,
        std::ptr::null(),
        0,
    );
    let descriptor = PluginDescriptor {
        name: StringView::from_static_str("squatter"),
        contract_name: StringView::from_static_str("squatter"),
        version: Version::new(1, 0, 0),
    };
    // SAFETY: static strings and interface.
    unsafe {
        runtime.store().register_guest_contract(
            descriptor,
            &SQUATTER,
            "squatter".into(),
            BundleId::from_u64(9),
        )
    }
    .unwrap();
    let error = validation_error(runtime.load_bundle(dir.path()));
    assert!(
        matches!(&error, ValidationError::ContractIdCollision { existing, new, .. } if existing == "squatter" && new == "scripted.test"),
        "{error:?}"
    );
    assert_eq!(observed.lock().unwrap().codes, [AbiErrorCode::IdMismatch as u32]);
}

#[test]
fn a_loader_that_adopts_nothing_fails_and_a_module_closes_in_fini_scope() {
    let dir = tempfile::tempdir().unwrap();
    manifest(dir.path(), &[]);
    let observed = Arc::new(Mutex::new(Observed::default()));
    let runtime = Runtime::builder()
        .loader(Scripted {
            registrations: vec![],
            adopt: false,
            observed: observed.clone(),
        })
        .build()
        .unwrap();
    assert!(matches!(
        runtime.load_bundle(dir.path()),
        Err(RuntimeError::Loader(LoaderError::NothingAdopted { bundle })) if bundle == "scripted"
    ));

    let runtime = Runtime::builder()
        .loader(Scripted {
            registrations: vec![],
            adopt: true,
            observed: observed.clone(),
        })
        .build()
        .unwrap();
    let id = runtime.load_bundle(dir.path()).unwrap();
    runtime.unload_bundle(id).unwrap();
    assert_eq!(runtime.pending_closes(), 1);
    // Other test threads may be pinned for a moment: retry for up to 5 s.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while runtime.reclaim() > 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    assert_eq!(runtime.pending_closes(), 0);
    assert_eq!(
        observed.lock().unwrap().closed_with_find_code,
        [AbiErrorCode::Unsupported as u32],
        "only alloc, free and log work during fini"
    );
}

#[test]
fn the_host_table_answers_the_host() {
    let (outcome, _, runtime) = load(
        &[("scripted.test@1", 1)],
        vec![registration("scripted.test", valid(TEST))],
    );
    let id = outcome.unwrap();
    let host = runtime.host_api();
    // SAFETY: the runtime's own table, live while `runtime` is.
    let api = unsafe { &*host };
    assert_eq!(api.struct_size, 160);
    let mut handle = GuestContractHandle::NULL;
    // SAFETY: as above; every out-pointer is a live local.
    unsafe {
        assert_eq!(
            (api.find_guest_contract)(
                host,
                GuestContractId::new("scripted.test", 1).id(),
                0,
                &mut handle
            )
            .code,
            0
        );
        (api.pin)(host);
        let interface = (api.resolve_guest_contract)(host, handle);
        assert_eq!((*interface).contract_version, Version::new(1, 0, 0));
        (api.unpin)(host);
        (api.unpin)(host); // An unmatched unpin is ignored.
        assert_eq!((api.revision_counter)(host), 1);
        let mut infos = [std::mem::zeroed::<holdfast_plugin_abi::BundleInfo>(); 2];
        assert_eq!((api.list_bundles)(host, infos.as_mut_ptr(), 2), 1);
        assert_eq!(infos[0].name.to_str().unwrap(), Some("scripted"));
        assert_eq!(infos[0].contract_count, 1);

        let missing = (api.find_guest_contract)(host, 77, 0, &mut handle);
        assert_eq!(missing.code, AbiErrorCode::NotFound as u32);
        let last = (api.get_last_error)(host);
        assert_eq!(last.to_str().unwrap(), missing.message.to_str().unwrap());

        let mut instance = holdfast_plugin_abi::InstanceHandle::NULL;
        assert_eq!(
            (api.create_guest_instance)(host, handle, std::ptr::null(), &mut instance).code,
            0
        );
        let mut resolved = GuestContractInstance::null();
        assert_eq!(
            (api.resolve_guest_instance)(host, instance, &mut resolved).code,
            0
        );
        assert_eq!(resolved.contract_id, GuestContractId::new("scripted.test", 1));
        assert_eq!((api.destroy_guest_instance)(host, instance).code, 0);
        let gone = (api.resolve_guest_instance)(host, instance, &mut resolved);
        assert_eq!(gone.code, AbiErrorCode::NotFound as u32);

        let unknown = (api.unload_bundle)(host, 5);
        assert_eq!(unknown.code, AbiErrorCode::NotFound as u32);
        assert_eq!((api.unload_bundle)(host, id.id()).code, 0);
        assert!((api.resolve_guest_contract)(host, handle).is_null());

        assert!((api.alloc)(host, 0, 8).is_null());
        assert!((api.alloc)(host, 16, 8192).is_null());
        assert!((api.alloc)(host, 16, 3).is_null());
        let block = (api.alloc)(host, 16, 8);
        assert!(!block.is_null());
        (api.free)(host, block, 16, 8);
        (api.free)(host, std::ptr::null_mut::<c_void>(), 16, 8);
        let registration =
            (api.register_guest_contract)(host, std::ptr::null(), std::ptr::null(), &mut handle);
        assert_eq!(registration.code, AbiErrorCode::NotInInit as u32);
    }
}

#[test]
fn lenient_mode_accepts_a_missing_contract_and_a_longer_table_with_warnings() {
    let dir = tempfile::tempdir().unwrap();
    manifest(dir.path(), &[("scripted.test@1", 1), ("scripted.extra@1", 1)]);
    let logged = Arc::new(Mutex::new(Vec::new()));
    let sink = logged.clone();
    let longer = RawInterface {
        function_count: 3,
        functions: WITH_ANSWERS.0.as_ptr(),
        ..valid(TEST)
    };
    let runtime = Runtime::builder()
        .config(RuntimeConfig {
            compatibility: holdfast_plugin_abi::Compatibility::Lenient,
            ..Default::default()
        })
        .logger(move |level, message| sink.lock().unwrap().push((level, message.to_owned())))
        .loader(Scripted {
            registrations: vec![registration("scripted.test", longer)],
            adopt: true,
            observed: Arc::default(),
        })
        .build()
        .unwrap();
    runtime.load_bundle(dir.path()).unwrap();
    let warnings: Vec<String> = logged
        .lock()
        .unwrap()
        .iter()
        .filter(|(level, _)| *level == holdfast_plugin_abi::LogLevel::Warn)
        .map(|(_, message)| message.clone())
        .collect();
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    assert!(warnings[0].contains("scripted.extra@1"), "{warnings:?}");
    assert!(warnings[1].contains("scripted.test@1"), "{warnings:?}");

    let shorter = RawInterface {
        function_count: 0,
        ..valid(TEST)
    };
    let lenient = RuntimeConfig {
        compatibility: holdfast_plugin_abi::Compatibility::Lenient,
        ..Default::default()
    };
    let (outcome, _, _) = load_with(
        lenient,
        &[("scripted.test@1", 1)],
        vec![registration("scripted.test", shorter)],
    );
    assert!(matches!(
        validation_error(outcome),
        ValidationError::FunctionCountMismatch {
            manifest: 1,
            registered: 0,
            ..
        }
    ));
}

#[test]
fn plugin_log_lines_are_capped_at_4_kib_and_levels_above_trace_count_as_trace() {
    let logged = Arc::new(Mutex::new(Vec::new()));
    let sink = logged.clone();
    let runtime = Runtime::builder()
        .config(RuntimeConfig {
            log_level: holdfast_plugin_abi::LogLevel::Trace,
            ..Default::default()
        })
        .logger(move |level, message| sink.lock().unwrap().push((level, message.to_owned())))
        .build()
        .unwrap();
    let host = runtime.host_api();
    let long = "x".repeat(10_000);
    // SAFETY: the runtime's own table; the view borrows `long` for the call.
    unsafe { ((*host).log)(host, 9, StringView::borrowed(&long)) };
    let logged = logged.lock().unwrap();
    let (level, message) = logged.last().unwrap();
    assert_eq!(*level, holdfast_plugin_abi::LogLevel::Trace);
    assert_eq!(message.len(), 4096);
}

/// A loader whose load panics.
struct Panicking;

impl BundleLoader for Panicking {
    fn loader_name(&self) -> &'static str {
        "scripted"
    }

    fn load(&self, _manifest: &ManifestData, _ctx: &mut LoadContext<'_>) -> Result<(), LoaderError> {
        panic!("a loader bug");
    }
}

#[test]
fn a_missing_or_panicking_loader_is_a_typed_error() {
    let dir = tempfile::tempdir().unwrap();
    manifest(dir.path(), &[]);
    let native_only = Runtime::builder().build().unwrap();
    assert!(matches!(
        native_only.load_bundle(dir.path()),
        Err(RuntimeError::NoLoader { bundle, loader }) if bundle == "scripted" && loader == "scripted"
    ));
    let panicking = Runtime::builder().loader(Panicking).build().unwrap();
    assert!(matches!(
        panicking.load_bundle(dir.path()),
        Err(RuntimeError::Loader(LoaderError::Other { message, .. })) if message == "the loader panicked"
    ));
    assert!(panicking.bundles().is_empty());
}

unsafe extern "C" fn create_other_contract(_: *const HostApi, _: *const ()) -> GuestContractInstance {
    GuestContractInstance {
        data: std::ptr::null_mut(),
        contract_id: GuestContractId::from_u64(999),
    }
}

#[test]
fn a_constructor_returning_another_contract_is_refused() {
    let interface = RawInterface {
        create_instance: Some(create_other_contract),
        ..valid(TEST)
    };
    let (outcome, _, runtime) = load(
        &[("scripted.test@1", 1)],
        vec![registration("scripted.test", interface)],
    );
    outcome.unwrap();
    let handle = runtime
        .find_guest_contract(GuestContractId::new("scripted.test", 1).id(), 0)
        .unwrap();
    // SAFETY: the constructor ignores its arguments.
    let created = unsafe { runtime.create_guest_instance(handle, std::ptr::null()) };
    assert!(
        matches!(&created, Err(RuntimeError::InstanceCreateFailed { contract }) if contract == "scripted.test@1"),
        "{created:?}"
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Whatever a plugin writes into its interface, registration answers
    /// with a code, the load either succeeds or fails with a typed error,
    /// and nothing is published on failure.
    #[test]
    fn arbitrary_interfaces_never_panic_the_host(
        id_is_right in any::<bool>(),
        raw_id in any::<u64>(),
        major in 0u32..3,
        minor in any::<u32>(),
        dispatch_type in prop_oneof![Just(0u32), Just(1u32), any::<u32>()],
        has_create in any::<bool>(),
        has_destroy in any::<bool>(),
        table in 0u8..3,
        count in 0u8..3,
        huge_count in 65_537u32..,
        hooks in 0u8..2,
        contract in prop_oneof![Just("scripted.test"), Just("Bad Name"), Just(""), Just("x")],
    ) {
        let id = if id_is_right { GuestContractId::new(contract, major).id() } else { raw_id };
        let interface = RawInterface {
            contract_id: id,
            contract_version: Version::new(major, minor, 0),
            dispatch_type,
            create_instance: has_create.then_some(create as _),
            destroy_instance: has_destroy.then_some(destroy as _),
            // A count a table cannot hold would be the plugin's memory bug;
            // counts over the limit are refused before the table is read.
            function_count: match (count, table) {
                (0, _) | (1, 0) => 0,
                (1, 1) => 1,
                (1, _) => 3,
                _ => huge_count,
            },
            functions: match table { 0 => std::ptr::null(), 1 => ONE.0.as_ptr(), _ => WITH_NULL.0.as_ptr() },
            state: if hooks == 0 { std::ptr::null() } else { &HALF_HOOKS },
        };
        let (outcome, codes, runtime) = load(&[("scripted.test@1", 1)], vec![registration(contract, interface)]);
        prop_assert_eq!(codes.len(), 1);
        match outcome {
            Ok(_) => {
                prop_assert_eq!(codes[0], 0);
                prop_assert_eq!(runtime.store().len(), 1);
            }
            Err(error) => {
                prop_assert!(matches!(error, RuntimeError::Validation { .. }), "{:?}", error);
                prop_assert_eq!(runtime.store().len(), 0);
            }
        }
    }
}
