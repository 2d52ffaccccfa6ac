//! What a plugin provides: the descriptor and interface it registers per
//! contract, the instances its constructors make, the handles that name
//! registry slots, and the optional state hooks that carry an instance's
//! state across a reload.
//!
//! The interface and hooks a plugin writes are read by the host through a
//! validating mirror type; nothing here trusts their function pointers.

use core::ffi::c_void;
use core::fmt;

use crate::dispatch::{DispatchMechanisms, DispatchType, NativeDispatch};
use crate::host::HostApi;
use crate::ids::GuestContractId;
use crate::types::{AbiError, StringView, Version};

/// Makes an instance; `args` is contract-defined.
pub type CreateInstanceFn =
    unsafe extern "C" fn(host: *const HostApi, args: *const ()) -> GuestContractInstance;
/// Destroys an instance made by the same interface.
pub type DestroyInstanceFn = unsafe extern "C" fn(host: *const HostApi, instance: GuestContractInstance);
/// Writes the instance's state into `out` (allocated with `HostApi.alloc`);
/// must not change the instance.
pub type SaveStateFn = unsafe extern "C" fn(
    host: *const HostApi,
    instance: GuestContractInstance,
    out: *mut StateBlob,
) -> AbiError;
/// Restores state saved by an instance of `from_version`.
pub type RestoreStateFn = unsafe extern "C" fn(
    host: *const HostApi,
    instance: GuestContractInstance,
    from_version: Version,
    state: StateBlob,
) -> AbiError;
/// A VM's call entry point.
pub type VmCallFn = unsafe extern "C" fn(
    host: *const HostApi,
    loader_data: *mut c_void,
    instance: GuestContractInstance,
    function_index: u32,
    args: *const c_void,
    ret: *mut c_void,
) -> AbiError;

/// Who provides a contract: the provider's name (at most 256 bytes), the
/// contract name, and the provider's own version. The registry copies both
/// strings.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct PluginDescriptor {
    /// The provider's name (free text).
    pub name: StringView,
    /// The contract name (`name` of `name@major`).
    pub contract_name: StringView,
    /// The provider's implementation version (informational).
    pub version: Version,
}

// SAFETY: the views point to static or call-scoped strings; the descriptor is
// plain data and grants no access by being moved between threads.
unsafe impl Send for PluginDescriptor {}
// SAFETY: as for `Send`.
unsafe impl Sync for PluginDescriptor {}

/// The functions a bundle provides for one contract version.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct GuestContractInterface {
    /// The contract (`name@major`).
    pub contract_id: GuestContractId,
    /// The contract version implemented; a minor version only appends.
    pub contract_version: Version,
    /// Which member of `dispatch` is valid.
    pub dispatch_type: DispatchType,
    /// Makes an instance.
    pub create_instance: CreateInstanceFn,
    /// Destroys an instance.
    pub destroy_instance: DestroyInstanceFn,
    /// The function table or VM entry point.
    pub dispatch: DispatchMechanisms,
    /// State hooks in the image's static memory, or null.
    pub state: *const StateHooks,
}

// SAFETY: every pointer in an interface refers to an image's static, read-only
// data; the runtime keeps the image mapped while any thread can reach the
// interface (epoch-deferred close), so sharing it across threads is sound.
unsafe impl Send for GuestContractInterface {}
// SAFETY: as for `Send`: the interface is immutable data.
unsafe impl Sync for GuestContractInterface {}

impl GuestContractInterface {
    /// A native interface without state hooks.
    pub const fn native(
        contract_id: GuestContractId,
        contract_version: Version,
        create_instance: CreateInstanceFn,
        destroy_instance: DestroyInstanceFn,
        functions: *const *const (),
        function_count: u32,
    ) -> Self {
        Self {
            contract_id,
            contract_version,
            dispatch_type: DispatchType::Native,
            create_instance,
            destroy_instance,
            dispatch: DispatchMechanisms {
                native: NativeDispatch {
                    function_count,
                    functions,
                },
            },
            state: core::ptr::null(),
        }
    }

    /// The same interface with state hooks.
    pub const fn with_state(self, hooks: &'static StateHooks) -> Self {
        Self { state: hooks, ..self }
    }

    /// The native function table; `None` unless the dispatch type is
    /// `Native` and the table is non-null (or empty).
    ///
    /// # Safety
    /// For a native interface, `functions` must point to `function_count`
    /// pointers that stay valid for `'a` (the caller holds the pin that keeps
    /// the image mapped).
    #[inline]
    pub unsafe fn native_functions<'a>(&self) -> Option<&'a [*const ()]> {
        if self.dispatch_type != DispatchType::Native {
            return None;
        }
        // SAFETY: the dispatch type says `native` is the member written.
        let native = unsafe { self.dispatch.native };
        let count = native.function_count as usize;
        if count == 0 {
            return Some(&[]);
        }
        if native.functions.is_null() {
            return None;
        }
        // SAFETY: non-null, and the caller guarantees `count` valid entries
        // for `'a`.
        Some(unsafe { core::slice::from_raw_parts(native.functions, count) })
    }
}

impl fmt::Debug for GuestContractInterface {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut debug = f.debug_struct("GuestContractInterface");
        debug
            .field("contract_id", &self.contract_id)
            .field("contract_version", &self.contract_version)
            .field("dispatch_type", &self.dispatch_type);
        if self.dispatch_type == DispatchType::Native {
            // SAFETY: the dispatch type says `native` is the member written;
            // only its plain fields are printed, nothing is dereferenced.
            let native = unsafe { self.dispatch.native };
            debug.field("function_count", &native.function_count);
        }
        debug
            .field("has_state_hooks", &!self.state.is_null())
            .finish_non_exhaustive()
    }
}

/// An instance: opaque data (null is a legal stateless instance) and its
/// contract.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct GuestContractInstance {
    /// The plugin's instance data.
    pub data: *mut c_void,
    /// The contract the instance belongs to (0 from a constructor means
    /// "this interface's contract").
    pub contract_id: GuestContractId,
}

// SAFETY: the data pointer is opaque to the host and only handed back to the
// plugin's own functions; moving the pair grants no access.
unsafe impl Send for GuestContractInstance {}
// SAFETY: as for `Send`.
unsafe impl Sync for GuestContractInstance {}

impl GuestContractInstance {
    /// The null instance.
    pub const fn null() -> Self {
        Self {
            data: core::ptr::null_mut(),
            contract_id: GuestContractId(0),
        }
    }

    /// Whether `data` is null.
    pub const fn is_null(&self) -> bool {
        self.data.is_null()
    }
}

/// Names a contract registry slot. A reload that keeps the contract keeps the
/// generation; removing the provider bumps it.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct GuestContractHandle {
    /// The slot; `u32::MAX` for the null handle.
    pub index: u32,
    /// The slot's generation (from 1; ignored for the null handle).
    pub generation: u32,
}

/// Names a tracked instance.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct InstanceHandle {
    /// The slot; `u32::MAX` for the null handle.
    pub index: u32,
    /// The slot's generation (from 1; ignored for the null handle).
    pub generation: u32,
}

// The structs are written out above because cbindgen does not expand macros;
// their identical helper methods are generated here.
macro_rules! slot_handle_methods {
    ($name:ident) => {
        impl $name {
            /// The null handle.
            pub const NULL: Self = Self {
                index: u32::MAX,
                generation: 0,
            };

            /// The null handle.
            pub const fn null() -> Self {
                Self::NULL
            }

            /// Whether this is the null handle (any generation).
            pub const fn is_null(self) -> bool {
                self.index == u32::MAX
            }

            /// `generation << 32 | index`.
            pub const fn to_u64(self) -> u64 {
                (self.generation as u64) << 32 | self.index as u64
            }

            /// The inverse of [`Self::to_u64`].
            pub const fn from_u64(raw: u64) -> Self {
                Self {
                    index: raw as u32,
                    generation: (raw >> 32) as u32,
                }
            }
        }
    };
}

slot_handle_methods!(GuestContractHandle);
slot_handle_methods!(InstanceHandle);

/// Hooks that save and restore an instance's state across a reload.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct StateHooks {
    /// Saves the instance's state.
    pub save_state: SaveStateFn,
    /// Restores state into a fresh instance.
    pub restore_state: RestoreStateFn,
}

/// State bytes allocated with `HostApi.alloc(len, 1)`; null with length 0
/// is empty state.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct StateBlob {
    /// The bytes, or null for empty.
    pub ptr: *mut u8,
    /// The length.
    pub len: usize,
}

impl StateBlob {
    /// Empty state.
    pub const fn empty() -> Self {
        Self {
            ptr: core::ptr::null_mut(),
            len: 0,
        }
    }
}
