//! What a plugin registers during init (spec §6.3): its descriptor and
//! interface are read through private mirror types whose function fields are
//! `Option`s, every pointer checked for null and alignment, every string for
//! UTF-8 and length, and the result staged in the bundle's [`Staging`]
//! transaction.
//!
//! This module validates and stages; it must never publish (the lifecycle
//! commits or discards a staging) and never call into the plugin.

use std::thread::ThreadId;

use holdfast_plugin_abi::{
    AbiErrorCode, CreateInstanceFn, DestroyInstanceFn, DispatchMechanisms, DispatchType, GuestContractHandle,
    GuestContractId, GuestContractInterface, NativeDispatch, PluginDescriptor, RestoreStateFn, SaveStateFn,
    StateHooks, StringView, Version, VmCallFn, VmDispatch,
};
use rustc_hash::{FxHashMap, FxHashSet};

use super::Runtime;
use crate::error::ValidationError;
use crate::manifest::{ContractRef, ManifestData, is_contract_name};

/// The longest provider name a descriptor may carry.
const MAX_PROVIDER_NAME: usize = 256;
/// The longest function table an interface may declare.
const MAX_FUNCTION_COUNT: u32 = 65_536;

/// A plugin's `GuestContractInterface` as it may really be: every function
/// may be null, and the dispatch type any number.
#[repr(C)]
#[derive(Clone, Copy)]
struct RawInterface {
    contract_id: u64,
    contract_version: Version,
    dispatch_type: u32,
    create_instance: Option<CreateInstanceFn>,
    destroy_instance: Option<DestroyInstanceFn>,
    dispatch: RawDispatch,
    state: *const RawStateHooks,
}

/// `DispatchMechanisms` as a plugin may write it; `dispatch_type` says which
/// member to read.
#[repr(C)]
#[derive(Clone, Copy)]
union RawDispatch {
    native: RawNativeDispatch,
    vm: RawVmDispatch,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct RawNativeDispatch {
    function_count: u32,
    functions: *const *const (),
}

#[repr(C)]
#[derive(Clone, Copy)]
struct RawVmDispatch {
    call: Option<VmCallFn>,
    loader_data: *mut std::ffi::c_void,
}

/// A plugin's `StateHooks`, with nullable functions.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct RawStateHooks {
    pub(crate) save_state: Option<SaveStateFn>,
    pub(crate) restore_state: Option<RestoreStateFn>,
}

const _: () = {
    assert!(size_of::<RawInterface>() == size_of::<GuestContractInterface>());
    assert!(align_of::<RawInterface>() == align_of::<GuestContractInterface>());
    assert!(
        std::mem::offset_of!(RawInterface, dispatch)
            == std::mem::offset_of!(GuestContractInterface, dispatch)
    );
    assert!(std::mem::offset_of!(RawInterface, state) == std::mem::offset_of!(GuestContractInterface, state));
    assert!(size_of::<RawStateHooks>() == size_of::<StateHooks>());
    assert!(size_of::<RawDispatch>() == size_of::<DispatchMechanisms>());
    assert!(size_of::<RawVmDispatch>() == size_of::<VmDispatch>());
};

/// Both state hooks of a validated interface, or `None` if it has none.
///
/// # Safety
/// `interface` must have passed registration (its `state` is null or points
/// to hooks in an image that is still open).
pub(crate) unsafe fn state_hooks(
    interface: &GuestContractInterface,
) -> Option<(SaveStateFn, RestoreStateFn)> {
    let hooks = interface.state.cast::<RawStateHooks>();
    // SAFETY: registration checked the pointer (null or aligned, in the
    // image); the caller guarantees the image is open.
    let hooks = unsafe { hooks.as_ref() }?;
    Some((hooks.save_state?, hooks.restore_state?))
}

/// A registration staged during init, committed or discarded by the
/// lifecycle operation.
#[derive(Debug)]
pub(crate) struct StagedRegistration {
    pub(crate) contract: ContractRef,
    pub(crate) provider_name: String,
    pub(crate) interface: GuestContractInterface,
    pub(crate) handle: GuestContractHandle,
    /// Whether `handle` is a slot reserved for this registration (else the
    /// previous image's slot, swapped at commit).
    pub(crate) reserved: bool,
}

/// One bundle's staging transaction, open while its loader runs.
#[derive(Debug)]
pub(crate) struct Staging {
    thread: ThreadId,
    provides: FxHashMap<u64, ContractRef>,
    /// What the new manifest lets init look up.
    declared: FxHashSet<u64>,
    /// Slots of the previous image, by contract ID (empty on a first load).
    existing: FxHashMap<u64, GuestContractHandle>,
    pub(crate) registrations: Vec<StagedRegistration>,
    pub(crate) first_failure: Option<ValidationError>,
}

impl Staging {
    /// A transaction for `manifest`, on the calling thread.
    pub(crate) fn new(manifest: &ManifestData, existing: FxHashMap<u64, GuestContractHandle>) -> Self {
        Self {
            thread: std::thread::current().id(),
            provides: manifest
                .provides
                .iter()
                .map(|contract| (contract.id().id(), contract.clone()))
                .collect(),
            declared: declared_contracts(manifest),
            existing,
            registrations: Vec::new(),
            first_failure: None,
        }
    }

    /// Whether the transaction was opened on the calling thread (only the
    /// init thread may register).
    pub(super) fn is_on_current_thread(&self) -> bool {
        self.thread == std::thread::current().id()
    }

    /// Whether the new manifest lets init look up `contract_id`.
    pub(super) fn declares(&self, contract_id: u64) -> bool {
        self.declared.contains(&contract_id)
    }

    /// The previous image's slots, by contract ID.
    pub(crate) fn existing(&self) -> &FxHashMap<u64, GuestContractHandle> {
        &self.existing
    }

    /// The reserved slots, to release on rollback.
    pub(crate) fn reserved_slots(&self) -> Vec<u32> {
        self.registrations
            .iter()
            .filter(|staged| staged.reserved)
            .map(|staged| staged.handle.index)
            .collect()
    }
}

/// The contracts a manifest lets its bundle look up: those it provides and
/// those it declares as dependencies.
pub(super) fn declared_contracts(manifest: &ManifestData) -> FxHashSet<u64> {
    manifest
        .provides
        .iter()
        .map(ContractRef::id)
        .chain(
            manifest
                .dependencies
                .iter()
                .map(|dependency| dependency.contract.id()),
        )
        .map(GuestContractId::id)
        .collect()
}

// ---- registration (spec §6.3) ----

/// A refused registration: the code for the plugin and, where the load must
/// fail for it, the validation error to record.
pub(super) struct Refusal {
    pub(super) code: AbiErrorCode,
    pub(super) error: ValidationError,
}

fn refuse(code: AbiErrorCode, error: ValidationError) -> Refusal {
    Refusal { code, error }
}

fn invalid(code: AbiErrorCode, reason: impl Into<String>) -> Refusal {
    refuse(
        code,
        ValidationError::InvalidDescriptor {
            reason: reason.into(),
        },
    )
}

/// A descriptor string: present, UTF-8, at most `max` bytes.
///
/// # Safety
/// The view must be readable for the call.
unsafe fn descriptor_text(view: StringView, what: &str, max: usize) -> Result<String, Refusal> {
    // SAFETY: the caller guarantees the view is readable.
    match unsafe { view.to_str() } {
        Ok(Some(text)) if text.len() <= max => Ok(text.to_owned()),
        Ok(Some(_)) => Err(invalid(
            AbiErrorCode::InvalidArgument,
            format!("{what} is longer than {max} bytes"),
        )),
        Ok(None) => Err(invalid(
            AbiErrorCode::InvalidArgument,
            format!("{what} is absent"),
        )),
        Err(_) => Err(invalid(AbiErrorCode::InvalidUtf8, format!("{what} is not UTF-8"))),
    }
}

/// Reads and checks a plugin's interface (every check of spec §6.3 that
/// needs only the interface and its name).
///
/// # Safety
/// `interface` must be non-null and readable as a `GuestContractInterface`
/// for the call; its tables readable as declared (the plugin's duty).
unsafe fn checked_interface(
    contract_name: &str,
    interface: *const GuestContractInterface,
) -> Result<GuestContractInterface, Refusal> {
    if !interface.cast::<RawInterface>().is_aligned() {
        return Err(invalid(
            AbiErrorCode::InvalidArgument,
            "the interface pointer is misaligned",
        ));
    }
    // SAFETY: non-null, aligned, readable (caller); the mirror has the same
    // layout and admits every bit pattern a plugin may write in its
    // function fields.
    let raw = unsafe { interface.cast::<RawInterface>().read() };
    let contract = format!("{contract_name}@{}", raw.contract_version.major);
    let (Some(create_instance), Some(destroy_instance)) = (raw.create_instance, raw.destroy_instance) else {
        return Err(invalid(
            AbiErrorCode::InvalidArgument,
            format!("{contract}: create_instance and destroy_instance must not be null"),
        ));
    };
    let (dispatch_type, dispatch) = match raw.dispatch_type {
        vm if vm == DispatchType::Vm.0 => {
            // SAFETY: the dispatch type says the plugin wrote `vm`.
            let dispatch = unsafe { checked_vm_dispatch(&contract, &raw) }?;
            (DispatchType::Vm, dispatch)
        }
        native if native == DispatchType::Native.0 => {
            // SAFETY: the dispatch type says the plugin wrote `native`; its
            // table is readable as declared (the caller's guarantee).
            let dispatch = unsafe { checked_native_dispatch(&contract, &raw) }?;
            (DispatchType::Native, dispatch)
        }
        other => {
            return Err(refuse(
                AbiErrorCode::Unsupported,
                ValidationError::UnsupportedDispatch {
                    contract,
                    dispatch_type: other,
                },
            ));
        }
    };
    // SAFETY: the caller's guarantee covers the state hooks pointer.
    unsafe {
        finish_interface(
            contract_name,
            &contract,
            &raw,
            create_instance,
            destroy_instance,
            dispatch_type,
            dispatch,
        )
    }
}

/// The `vm` member of a VM-dispatched interface, checked: a null `call` is
/// refused.
///
/// # Safety
/// `raw.dispatch_type` must be `Vm` (the plugin wrote the `vm` member).
unsafe fn checked_vm_dispatch(contract: &str, raw: &RawInterface) -> Result<DispatchMechanisms, Refusal> {
    // SAFETY: the caller's guarantee; the mirror admits a null `call`.
    let RawVmDispatch { call, loader_data } = unsafe { raw.dispatch.vm };
    let Some(call) = call else {
        return Err(refuse(
            AbiErrorCode::InvalidArgument,
            ValidationError::NullFunction {
                contract: contract.to_owned(),
                index: 0,
            },
        ));
    };
    Ok(DispatchMechanisms {
        vm: VmDispatch {
            call: Some(call),
            loader_data,
        },
    })
}

/// The `native` member of a natively dispatched interface, checked: a
/// bounded count, a non-null aligned table when there are functions, and
/// no null entry.
///
/// # Safety
/// `raw.dispatch_type` must be `Native` (the plugin wrote the `native`
/// member), and its table readable as declared.
unsafe fn checked_native_dispatch(contract: &str, raw: &RawInterface) -> Result<DispatchMechanisms, Refusal> {
    // SAFETY: the caller's guarantee.
    let RawNativeDispatch {
        function_count,
        functions,
    } = unsafe { raw.dispatch.native };
    if function_count > MAX_FUNCTION_COUNT {
        return Err(invalid(
            AbiErrorCode::InvalidArgument,
            format!("{contract}: {function_count} functions exceed the limit of {MAX_FUNCTION_COUNT}"),
        ));
    }
    if function_count > 0 {
        if functions.is_null() || !functions.is_aligned() {
            return Err(invalid(
                AbiErrorCode::InvalidArgument,
                format!("{contract}: the function table is null or misaligned"),
            ));
        }
        // SAFETY: non-null and aligned; the plugin declares this many
        // entries in its static memory.
        let table = unsafe { std::slice::from_raw_parts(functions, function_count as usize) };
        if let Some(index) = table.iter().position(|function| function.is_null()) {
            return Err(refuse(
                AbiErrorCode::InvalidArgument,
                ValidationError::NullFunction {
                    contract: contract.to_owned(),
                    index: index as u32,
                },
            ));
        }
    }
    Ok(DispatchMechanisms {
        native: NativeDispatch {
            function_count,
            functions,
        },
    })
}

/// The checks common to every dispatch type (the contract ID, the state
/// hooks), then the validated interface.
///
/// # Safety
/// As [`checked_interface`]: a non-null `raw.state` is readable when aligned.
unsafe fn finish_interface(
    contract_name: &str,
    contract: &str,
    raw: &RawInterface,
    create_instance: CreateInstanceFn,
    destroy_instance: DestroyInstanceFn,
    dispatch_type: DispatchType,
    dispatch: DispatchMechanisms,
) -> Result<GuestContractInterface, Refusal> {
    let contract = contract.to_owned();
    let expected = GuestContractId::new(contract_name, raw.contract_version.major);
    if raw.contract_id != expected.id() {
        return Err(refuse(
            AbiErrorCode::IdMismatch,
            ValidationError::ContractIdMismatch {
                contract,
                expected,
                found: GuestContractId::from_u64(raw.contract_id),
            },
        ));
    }
    if !raw.state.is_null() {
        let hooks_ok = raw.state.is_aligned() && {
            // SAFETY: non-null and aligned; the plugin points it at hooks in
            // its static memory.
            let hooks = unsafe { raw.state.read() };
            hooks.save_state.is_some() && hooks.restore_state.is_some()
        };
        if !hooks_ok {
            return Err(refuse(
                AbiErrorCode::InvalidArgument,
                ValidationError::InvalidStateHooks { contract },
            ));
        }
    }
    Ok(GuestContractInterface {
        contract_id: expected,
        contract_version: raw.contract_version,
        dispatch_type,
        create_instance,
        destroy_instance,
        dispatch,
        state: raw.state.cast::<StateHooks>(),
    })
}

/// Stages one registration in `staging` (spec §6.3, after the thread check).
///
/// # Safety
/// Non-null pointers must be readable as their types for the call.
pub(super) unsafe fn stage_registration(
    runtime: &Runtime,
    staging: &mut Staging,
    descriptor: *const PluginDescriptor,
    interface: *const GuestContractInterface,
) -> Result<GuestContractHandle, Refusal> {
    if descriptor.is_null() || interface.is_null() || !descriptor.is_aligned() {
        return Err(invalid(
            AbiErrorCode::InvalidArgument,
            "null or misaligned descriptor or interface",
        ));
    }
    // SAFETY: non-null and aligned; `PluginDescriptor` holds only plain data.
    let descriptor = unsafe { descriptor.read() };
    // SAFETY: the plugin vouches for the views it passes.
    let provider_name = unsafe { descriptor_text(descriptor.name, "the provider name", MAX_PROVIDER_NAME) }?;
    // SAFETY: as above.
    let contract_name = unsafe { descriptor_text(descriptor.contract_name, "the contract name", 128) }?;
    if !is_contract_name(&contract_name) {
        return Err(invalid(
            AbiErrorCode::InvalidArgument,
            format!("{contract_name:?} is not a contract name"),
        ));
    }
    // SAFETY: non-null (checked above) and readable (caller).
    let interface = unsafe { checked_interface(&contract_name, interface) }?;
    let contract = ContractRef {
        name: contract_name,
        major: interface.contract_version.major,
    };
    let id = interface.contract_id;
    if staging.provides.get(&id.id()) != Some(&contract) {
        return Err(refuse(
            AbiErrorCode::Undeclared,
            ValidationError::ContractNotInManifest {
                contract: contract.to_string(),
            },
        ));
    }
    if staging
        .registrations
        .iter()
        .any(|staged| staged.interface.contract_id == id)
    {
        return Err(refuse(
            AbiErrorCode::AlreadyRegistered,
            ValidationError::DuplicateContract {
                contract: contract.to_string(),
            },
        ));
    }
    if let Some(existing) = runtime
        .store
        .name_holding(id)
        .filter(|name| *name != contract.name)
    {
        return Err(refuse(
            AbiErrorCode::IdMismatch,
            ValidationError::ContractIdCollision {
                id,
                existing,
                new: contract.name,
            },
        ));
    }
    let (handle, reserved) = match staging.existing.get(&id.id()) {
        Some(&handle) => (handle, false),
        None => {
            let handle = runtime
                .store
                .reserve_slot()
                .map_err(|error| invalid(AbiErrorCode::OutOfMemory, error.to_string()))?;
            (handle, true)
        }
    };
    staging.registrations.push(StagedRegistration {
        contract,
        provider_name,
        interface,
        handle,
        reserved,
    });
    Ok(handle)
}
