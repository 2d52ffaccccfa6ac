//! The `extern "C"` side of WASM contracts: the functions a registered
//! `GuestContractInterface` points to (a constructor per contract slot, the
//! destructor, the state hooks and the VM entry point of
//! `VmDispatch { call, loader_data }`), and [`Runtime::call_wasm`], the safe
//! way to call a function of a tracked instance.
//!
//! `create_instance` receives no loader data (spec §3.4), so each
//! registered contract gets one of [`MAX_WASM_CONTRACTS`] constructor
//! trampolines, each reading its own slot of a process-wide table; a slot is
//! freed when its module is. Instance data is a host-side record (the
//! module, the contract, the guest's instance id), never guest memory.
//!
//! Every function here catches panics and reports faults as `AbiError`
//! codes with a message (the typed [`WasmFault`] travels in [`WasmReply`]);
//! nothing unwinds into the caller. These functions must never trust an
//! instance whose interface is not one of this module's (callers check
//! [`is_wasm_interface`] first).

use std::cell::RefCell;
use std::ffi::c_void;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, PoisonError, RwLock, Weak};

use holdfast_plugin_abi::{
    AbiError, AbiErrorCode, CreateInstanceFn, DispatchMechanisms, DispatchType, GuestContractId,
    GuestContractInstance, GuestContractInterface, HostApi, InstanceHandle, LogLevel, PluginDescriptor,
    StateBlob, StateHooks, StringView, Version, VmDispatch,
};

use crate::error::{LoaderError, WasmCallError, WasmFault};
use crate::manifest::{ContractRef, ManifestData};
use crate::runtime::{Runtime, Tracked};
use crate::wasm::guest_abi::Declared;
use crate::wasm::module::Shared;

/// How many WASM contracts can be registered in the process at once
/// (including those of replaced images not yet closed).
pub const MAX_WASM_CONTRACTS: usize = 256;

/// The input of a WASM contract call: `args` of `VmDispatch.call` points to
/// one of these.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct WasmCallArgs {
    /// The input bytes (null when empty).
    pub input: *const u8,
    /// Their length.
    pub input_len: usize,
}

/// Where a WASM contract call puts its outcome: `ret` of `VmDispatch.call`
/// points to an initialised one of these (a Rust type: only Rust callers can
/// make and read it; an outcome already in it is dropped and replaced).
#[derive(Debug, Default)]
pub struct WasmReply {
    /// The outputs, or what went wrong; `None` until a call filled it.
    pub outcome: Option<Result<Vec<Vec<u8>>, WasmFault>>,
}

/// What one constructor slot makes instances of.
#[derive(Clone, Debug)]
struct SlotTarget {
    module: Weak<Shared>,
    contract: u32,
    contract_id: GuestContractId,
    function_count: u32,
    label: Arc<str>,
}

/// The constructor slots; a slot is `Some` while its module lives.
static SLOTS: RwLock<Vec<Option<SlotTarget>>> = RwLock::new(Vec::new());

/// A tracked WASM instance's data.
#[derive(Debug)]
pub(crate) struct InstanceRecord {
    pub(crate) module: Arc<Shared>,
    pub(crate) guest_id: i32,
    pub(crate) function_count: u32,
    pub(crate) label: Arc<str>,
    /// The bundle's `HostApi` the constructor was given: a bundle's table
    /// outlives every image of it (spec §3.5), so it outlives the record,
    /// and `Runtime::call_wasm` need not look it up per call.
    host: *const HostApi,
}

/// The id a failed constructor returns: never a real contract's (the
/// runtime then reports `InstanceCreateFailed`).
const FAILED_CONTRACT: GuestContractId = GuestContractId::from_u64(u64::MAX);

thread_local! {
    /// Backs the message of the last `AbiError` this thread returned: valid
    /// until its next call into a WASM contract (spec §3.3).
    static LAST_MESSAGE: RefCell<String> = const { RefCell::new(String::new()) };
}

/// An error whose message stays valid until this thread's next call here.
fn abi_error(code: AbiErrorCode, message: String) -> AbiError {
    LAST_MESSAGE.with(|last| {
        let mut last = last.borrow_mut();
        *last = message;
        let view = StringView::borrowed(&last);
        AbiError {
            code: code as u32,
            message: view,
        }
    })
}

/// The code a fault is reported with.
fn fault_code(fault: &WasmFault) -> AbiErrorCode {
    match fault {
        WasmFault::Guest { code, .. } => AbiErrorCode::from_u32(*code).unwrap_or(AbiErrorCode::Internal),
        WasmFault::MemoryLimit { .. } => AbiErrorCode::OutOfMemory,
        _ => AbiErrorCode::Internal,
    }
}

fn log(host: *const HostApi, level: LogLevel, message: &str) {
    if host.is_null() {
        return;
    }
    // SAFETY: a non-null `host` is the bundle's live table (the runtime
    // passes it to every interface function).
    unsafe { (*host).log_str(level, message) };
}

macro_rules! constructors {
    ($($slot:literal)*) => {
        /// One constructor per slot.
        static CONSTRUCTORS: [CreateInstanceFn; MAX_WASM_CONTRACTS] = [$(create_at::<$slot>),*];
    };
}

constructors!(0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28 29 30 31 32 33 34 35 36 37 38 39 40 41 42 43 44 45 46 47 48 49 50 51 52 53 54 55 56 57 58 59 60 61 62 63 64 65 66 67 68 69 70 71 72 73 74 75 76 77 78 79 80 81 82 83 84 85 86 87 88 89 90 91 92 93 94 95 96 97 98 99 100 101 102 103 104 105 106 107 108 109 110 111 112 113 114 115 116 117 118 119 120 121 122 123 124 125 126 127 128 129 130 131 132 133 134 135 136 137 138 139 140 141 142 143 144 145 146 147 148 149 150 151 152 153 154 155 156 157 158 159 160 161 162 163 164 165 166 167 168 169 170 171 172 173 174 175 176 177 178 179 180 181 182 183 184 185 186 187 188 189 190 191 192 193 194 195 196 197 198 199 200 201 202 203 204 205 206 207 208 209 210 211 212 213 214 215 216 217 218 219 220 221 222 223 224 225 226 227 228 229 230 231 232 233 234 235 236 237 238 239 240 241 242 243 244 245 246 247 248 249 250 251 252 253 254 255);

/// The constructor of a declaration the runtime is certain to refuse (not
/// in the manifest, or declared twice): it takes no slot, and makes nothing
/// if it is ever called.
unsafe extern "C" fn create_nothing(_host: *const HostApi, _args: *const ()) -> GuestContractInstance {
    GuestContractInstance {
        data: std::ptr::null_mut(),
        contract_id: FAILED_CONTRACT,
    }
}

/// The constructor of slot `SLOT`.
unsafe extern "C" fn create_at<const SLOT: usize>(
    host: *const HostApi,
    args: *const (),
) -> GuestContractInstance {
    create_in(SLOT, host, args)
}

fn create_in(slot: usize, host: *const HostApi, args: *const ()) -> GuestContractInstance {
    let failed = GuestContractInstance {
        data: std::ptr::null_mut(),
        contract_id: FAILED_CONTRACT,
    };
    let made = catch_unwind(AssertUnwindSafe(|| {
        let target = SLOTS
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(slot)
            .cloned()
            .flatten()?;
        if !args.is_null() {
            log(
                host,
                LogLevel::Warn,
                &format!("{}: WASM constructors take no arguments", target.label),
            );
            return None;
        }
        let module = target.module.upgrade()?;
        match module.create(host, target.contract) {
            Ok(guest_id) => {
                let record = Box::new(InstanceRecord {
                    module,
                    guest_id,
                    function_count: target.function_count,
                    label: Arc::clone(&target.label),
                    host,
                });
                Some(GuestContractInstance {
                    data: Box::into_raw(record).cast(),
                    contract_id: target.contract_id,
                })
            }
            Err(fault) => {
                log(
                    host,
                    LogLevel::Warn,
                    &format!("{}: hf_create failed: {fault}", target.label),
                );
                None
            }
        }
    }));
    made.ok().flatten().unwrap_or(failed)
}

/// The instance's record.
///
/// # Safety
/// `instance` must come from one of this module's constructors and not be
/// destroyed yet.
unsafe fn record<'a>(instance: &GuestContractInstance) -> Option<&'a InstanceRecord> {
    // SAFETY: the caller guarantees the data is a live `InstanceRecord`
    // (or null, for a failed constructor).
    unsafe { instance.data.cast::<InstanceRecord>().as_ref() }
}

/// `destroy_instance` of every WASM interface.
unsafe extern "C" fn destroy_instance(host: *const HostApi, instance: GuestContractInstance) {
    if instance.data.is_null() {
        return;
    }
    // Everything, the record's drop included (it may drop the module's last
    // reference, and with it the store), runs inside the catch: nothing may
    // unwind out of an `extern "C"` function.
    let _ = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: the runtime destroys each instance once, with the
        // interface that made it: the data is a record boxed by `create_in`.
        let record = unsafe { Box::from_raw(instance.data.cast::<InstanceRecord>()) };
        if let Err(fault) = record.module.destroy(host, record.guest_id) {
            log(
                host,
                LogLevel::Warn,
                &format!("{}: hf_destroy failed: {fault}", record.label),
            );
        }
    }));
}

/// `save_state` of every stateful WASM interface.
unsafe extern "C" fn save_state(
    host: *const HostApi,
    instance: GuestContractInstance,
    out: *mut StateBlob,
) -> AbiError {
    // SAFETY: the runtime passes instances of this interface only.
    let Some(record) = (unsafe { record(&instance) }) else {
        return AbiError::new(AbiErrorCode::InvalidArgument, "a null WASM instance");
    };
    if out.is_null() || !out.is_aligned() || host.is_null() {
        return AbiError::new(AbiErrorCode::InvalidArgument, "null or misaligned arguments");
    }
    let saved = catch_unwind(AssertUnwindSafe(|| record.module.save(host, record.guest_id)));
    let state = match saved {
        Ok(Ok(state)) => state,
        Ok(Err(fault)) => return abi_error(fault_code(&fault), format!("hf_save: {fault}")),
        Err(_) => return AbiError::new(AbiErrorCode::Internal, "the host panicked saving WASM state"),
    };
    // SAFETY: `host` is the bundle's live table.
    match unsafe { (*host).alloc_state(&state) } {
        Ok(blob) => {
            // SAFETY: non-null and aligned (checked above); the caller's
            // out-parameter.
            unsafe { out.write(blob) };
            AbiError::ok()
        }
        Err(error) => error,
    }
}

/// `restore_state` of every stateful WASM interface.
unsafe extern "C" fn restore_state(
    host: *const HostApi,
    instance: GuestContractInstance,
    from_version: Version,
    state: StateBlob,
) -> AbiError {
    // SAFETY: the runtime passes instances of this interface only.
    let Some(record) = (unsafe { record(&instance) }) else {
        return AbiError::new(AbiErrorCode::InvalidArgument, "a null WASM instance");
    };
    // SAFETY: the host lends `len` readable bytes for the call (spec §8).
    let bytes = match unsafe { lent_bytes(state.ptr, state.len, "a state longer than isize::MAX") } {
        Ok(bytes) => bytes,
        Err(refused) => return refused,
    };
    let restored = catch_unwind(AssertUnwindSafe(|| {
        record.module.restore(host, record.guest_id, from_version, bytes)
    }));
    match restored {
        Ok(Ok(())) => AbiError::ok(),
        Ok(Err(fault)) => abi_error(fault_code(&fault), format!("hf_restore: {fault}")),
        Err(_) => AbiError::new(AbiErrorCode::Internal, "the host panicked restoring WASM state"),
    }
}

/// The `len` bytes at `ptr` a caller lends for one call: empty for a null
/// pointer or length 0, refused with `too_long` when longer than a slice
/// can be.
///
/// # Safety
/// A non-null `ptr` must be readable for `len` bytes for `'a`.
unsafe fn lent_bytes<'a>(ptr: *const u8, len: usize, too_long: &'static str) -> Result<&'a [u8], AbiError> {
    if ptr.is_null() || len == 0 {
        Ok(&[])
    } else if len > isize::MAX as usize {
        Err(AbiError::new(AbiErrorCode::InvalidArgument, too_long))
    } else {
        // SAFETY: non-null and within a slice's bounds; readable (caller).
        Ok(unsafe { std::slice::from_raw_parts(ptr, len) })
    }
}

/// The state hooks every stateful WASM interface points to.
static STATE_HOOKS: StateHooks = StateHooks {
    save_state,
    restore_state,
};

/// `VmDispatch.call` of every WASM interface: `args` is a
/// [`WasmCallArgs`], `ret` a [`WasmReply`].
unsafe extern "C" fn vm_call(
    host: *const HostApi,
    _loader_data: *mut c_void,
    instance: GuestContractInstance,
    function_index: u32,
    args: *const c_void,
    ret: *mut c_void,
) -> AbiError {
    // SAFETY: the caller passes an instance of this interface.
    let Some(record) = (unsafe { record(&instance) }) else {
        return AbiError::new(AbiErrorCode::InvalidArgument, "a null WASM instance");
    };
    let (args, ret) = (args.cast::<WasmCallArgs>(), ret.cast::<WasmReply>());
    if args.is_null() || ret.is_null() || !args.is_aligned() || !ret.is_aligned() {
        return AbiError::new(AbiErrorCode::InvalidArgument, "null or misaligned call arguments");
    }
    if function_index >= record.function_count {
        return AbiError::new(AbiErrorCode::InvalidArgument, "no such function");
    }
    // SAFETY: non-null and aligned; the caller lends a `WasmCallArgs`.
    let args = unsafe { args.read() };
    // SAFETY: the caller lends `input_len` readable bytes for the call.
    let input = match unsafe { lent_bytes(args.input, args.input_len, "an input longer than isize::MAX") } {
        Ok(bytes) => bytes,
        Err(refused) => return refused,
    };
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        record.module.call(host, record.guest_id, function_index, input)
    }));
    let Ok(outcome) = outcome else {
        return AbiError::new(
            AbiErrorCode::Internal,
            "the host panicked calling a WASM function",
        );
    };
    let code = match &outcome {
        Ok(_) => AbiError::ok(),
        Err(fault) => abi_error(fault_code(fault), fault.to_string()),
    };
    // SAFETY: non-null and aligned; the caller's initialised `WasmReply`
    // (its contract: an earlier outcome in it is dropped here), not
    // otherwise touched during the call.
    unsafe { (*ret).outcome = Some(outcome) };
    code
}

/// Whether `interface` is one this module registered (so its instances'
/// data are host-side instance records).
pub fn is_wasm_interface(interface: &GuestContractInterface) -> bool {
    if interface.dispatch_type != DispatchType::Vm {
        return false;
    }
    // SAFETY: the dispatch type says `vm` is the member written.
    let vm = unsafe { interface.dispatch.vm };
    vm.call
        .is_some_and(|call| std::ptr::fn_addr_eq(call, vm_call as VmCallFnPtr))
}

/// The function count a WASM interface's module declared, if `interface`
/// is one of this module's and its module is still loaded.
pub fn function_count(interface: &GuestContractInterface) -> Option<u32> {
    if !is_wasm_interface(interface) {
        return None;
    }
    let slot = CONSTRUCTORS
        .iter()
        .position(|&create| std::ptr::fn_addr_eq(create, interface.create_instance))?;
    let slots = SLOTS.read().unwrap_or_else(PoisonError::into_inner);
    slots.get(slot)?.as_ref().map(|target| target.function_count)
}

type VmCallFnPtr = unsafe extern "C" fn(
    *const HostApi,
    *mut c_void,
    GuestContractInstance,
    u32,
    *const c_void,
    *mut c_void,
) -> AbiError;

/// Takes a free slot for a contract of `shared`.
fn claim_slot(target: SlotTarget) -> Option<usize> {
    let mut slots = SLOTS.write().unwrap_or_else(PoisonError::into_inner);
    if let Some(free) = slots.iter().position(Option::is_none) {
        slots[free] = Some(target);
        return Some(free);
    }
    if slots.len() < MAX_WASM_CONTRACTS {
        slots.push(Some(target));
        return Some(slots.len() - 1);
    }
    None
}

/// Frees a slot (its module is gone).
pub(crate) fn release_slot(slot: usize) {
    let mut slots = SLOTS.write().unwrap_or_else(PoisonError::into_inner);
    if let Some(entry) = slots.get_mut(slot) {
        *entry = None;
    }
}

/// Registers every contract `hf_init` declared through the bundle's table,
/// stopping at the first the runtime refuses: it records why and fails the
/// load with it (spec §6.4), as for a native plugin. A declaration the
/// manifest does not provide, or a second of one contract, is registered
/// without a constructor slot (the runtime refuses it before anything could
/// call it), so a module cannot hold slots — there are 256 for the whole
/// process — with contracts it may not provide.
///
/// # Errors
/// `WasmFunctionCount` when a declaration's function count differs from the
/// manifest's; `Other` when every constructor slot is taken.
pub(crate) fn register_all(
    shared: &Arc<Shared>,
    manifest: &ManifestData,
    host: *const HostApi,
    declared: Vec<Declared>,
) -> Result<(), LoaderError> {
    let mut slotted = std::collections::HashSet::new();
    for (index, declaration) in declared.into_iter().enumerate() {
        let contract = ContractRef {
            name: declaration.name.clone(),
            major: declaration.version.major,
        };
        if let Some(&expected) = manifest.function_count.get(&contract)
            && expected != declaration.function_count
        {
            return Err(LoaderError::WasmFunctionCount {
                bundle: manifest.name.clone(),
                contract: contract.to_string(),
                manifest: expected,
                declared: declaration.function_count,
            });
        }
        let contract_id = contract.id();
        let certain_refusal = !manifest.provides.contains(&contract) || !slotted.insert(contract_id);
        let create_instance = if certain_refusal {
            create_nothing
        } else {
            let slot = claim_slot(SlotTarget {
                module: Arc::downgrade(shared),
                contract: index as u32,
                contract_id,
                function_count: declaration.function_count,
                label: format!("{}: {contract}", manifest.name).into(),
            })
            .ok_or_else(|| LoaderError::Other {
                bundle: manifest.name.clone(),
                message: format!("all {MAX_WASM_CONTRACTS} WASM contract slots are in use"),
            })?;
            shared.keep_slot(slot);
            CONSTRUCTORS[slot]
        };
        let interface = GuestContractInterface {
            contract_id,
            contract_version: declaration.version,
            dispatch_type: DispatchType::Vm,
            create_instance,
            destroy_instance,
            dispatch: DispatchMechanisms {
                vm: VmDispatch {
                    call: Some(vm_call),
                    loader_data: Arc::as_ptr(shared).cast_mut().cast(),
                },
            },
            state: if declaration.stateful {
                &STATE_HOOKS
            } else {
                std::ptr::null()
            },
        };
        let descriptor = PluginDescriptor {
            name: StringView::borrowed(&manifest.name),
            contract_name: StringView::borrowed(&declaration.name),
            version: manifest.version,
        };
        // SAFETY: `host` is the bundle's table during its load; the
        // interface's functions are this module's statics and its
        // `loader_data` lives as long as the adopted module.
        if unsafe { (*host).register(&descriptor, &interface) }.is_err() {
            break;
        }
    }
    Ok(())
}

impl Runtime {
    /// Calls function `function` of the tracked WASM instance `instance`
    /// with `input`; the outputs it emitted, in order.
    ///
    /// The call holds the runtime's instance table for reading, so a reload
    /// or unload of the instance's bundle waits for it, and a call made while
    /// one is under way is refused (`BundleBusy`) rather than run against
    /// half-migrated instances.
    ///
    /// # Errors
    /// `InstanceGone`, `NotWasm`, `BundleBusy`, `NoSuchFunction`, or `Fault`
    /// with what went wrong inside the module (the host and every other
    /// plugin keep running; the module's other instances stay usable).
    pub fn call_wasm(
        &self,
        instance: InstanceHandle,
        function: u32,
        input: &[u8],
    ) -> Result<Vec<Vec<u8>>, WasmCallError> {
        self.with_tracked(instance, |tracked, busy| {
            let record = self.callable_record(instance, tracked, busy, function)?;
            record.call(function, input)
        })
    }

    /// The record of `tracked` (the instance `instance` names) if function
    /// `function` of it may be called now.
    ///
    /// # Errors
    /// `InstanceGone`, `NotWasm`, `BundleBusy` or `NoSuchFunction`.
    pub(crate) fn callable_record<'t>(
        &self,
        instance: InstanceHandle,
        tracked: Option<&'t Tracked>,
        busy: bool,
        function: u32,
    ) -> Result<&'t InstanceRecord, WasmCallError> {
        let tracked = tracked.ok_or(WasmCallError::InstanceGone { instance })?;
        if !is_wasm_interface(&tracked.interface) {
            return Err(WasmCallError::NotWasm { instance });
        }
        // SAFETY: the interface is one of this module's, so the data is a
        // live record; the caller holds the instance table for reading,
        // which keeps it from being migrated or destroyed meanwhile.
        let record = unsafe { record(&tracked.instance) }.ok_or(WasmCallError::NotWasm { instance })?;
        if busy {
            return Err(WasmCallError::BundleBusy {
                bundle: self.bundle_label(tracked.bundle),
            });
        }
        record.check_function(function)?;
        Ok(record)
    }
}

impl InstanceRecord {
    /// Refuses a function index past the contract's declared count.
    fn check_function(&self, function: u32) -> Result<(), WasmCallError> {
        if function < self.function_count {
            return Ok(());
        }
        Err(WasmCallError::NoSuchFunction {
            contract: contract_of(&self.label),
            function,
            count: self.function_count,
        })
    }

    /// Calls function `function` (already checked) of this instance.
    pub(crate) fn call(&self, function: u32, input: &[u8]) -> Result<Vec<Vec<u8>>, WasmCallError> {
        self.module
            .call(self.host, self.guest_id, function, input)
            .map_err(|fault| fault_in(&self.label, function, fault))
    }
}

/// A fault of function `function` of the contract whose slot label is
/// `label`, named for the person reading it.
pub(crate) fn fault_in(label: &str, function: u32, fault: WasmFault) -> WasmCallError {
    WasmCallError::Fault {
        contract: contract_of(label),
        function,
        fault,
    }
}

/// The `name@major` part of a slot label (`bundle: name@major`).
fn contract_of(label: &str) -> String {
    label
        .split_once(": ")
        .map_or(label, |(_, contract)| contract)
        .to_owned()
}
