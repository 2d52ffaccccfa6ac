//! How a contract's functions are reached: a native function table, or a
//! VM's call entry point. The dispatch type is a `u32` newtype, never a Rust
//! enum, because plugins write it.

use core::ffi::c_void;

use crate::guest::GuestContractInstance;
#[cfg(doc)]
use crate::guest::VmCallFn;
use crate::host::HostApi;
use crate::types::AbiError;

/// Which member of [`DispatchMechanisms`] is valid.
#[repr(transparent)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DispatchType(pub u32);

#[allow(
    non_upper_case_globals,
    reason = "the names mirror the C enumerators HF_DISPATCH_*"
)]
impl DispatchType {
    /// A native function table ([`NativeDispatch`]).
    pub const Native: Self = Self(0);
    /// A VM entry point ([`VmDispatch`]).
    pub const Vm: Self = Self(1);
}

/// A table of `function_count` native function pointers, whose signatures
/// the contract defines.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct NativeDispatch {
    /// The number of entries in `functions`.
    pub function_count: u32,
    /// The table (in the image's static memory).
    pub functions: *const *const (),
}

/// A VM's single entry point and its private data.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct VmDispatch {
    /// Calls function `function_index` of an instance (a nullable
    /// [`VmCallFn`], spelled out because cbindgen does not see through the
    /// alias inside `Option`).
    pub call: Option<
        unsafe extern "C" fn(
            host: *const HostApi,
            loader_data: *mut c_void,
            instance: GuestContractInstance,
            function_index: u32,
            args: *const c_void,
            ret: *mut c_void,
        ) -> AbiError,
    >,
    /// Passed back to `call` unchanged.
    pub loader_data: *mut c_void,
}

/// The dispatch data; [`DispatchType`] says which member is valid.
#[repr(C)]
#[derive(Clone, Copy)]
pub union DispatchMechanisms {
    /// Valid when the dispatch type is `Native`.
    pub native: NativeDispatch,
    /// Valid when the dispatch type is `Vm`.
    pub vm: VmDispatch,
}
