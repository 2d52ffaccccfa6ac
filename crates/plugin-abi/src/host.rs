//! [`HostApi`]: the function table the host hands each bundle (and keeps one
//! of its own), in self-passing style: every function takes the table it was
//! read from. Plus [`BundleInfo`], what `list_bundles` reports.
//!
//! The helper methods here are for Rust plugins; they assume the table is one
//! the runtime handed over and never validate it.

use core::ffi::c_void;

use crate::guest::{
    GuestContractHandle, GuestContractInstance, GuestContractInterface, InstanceHandle, PluginDescriptor,
    StateBlob,
};
use crate::ids::GuestContractId;
use crate::runtime::LogLevel;
use crate::types::{AbiError, AbiErrorCode, StringView, Version};

/// The host's function table (160 bytes; field offsets are part of the ABI).
#[allow(
    clippy::use_self,
    reason = "cbindgen generates the C header from these field types and does not resolve `Self`"
)]
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct HostApi {
    /// Equals `HOLDFAST_ABI_VERSION`.
    pub abi_version: u32,
    /// `size_of::<HostApi>()`.
    pub struct_size: u32,
    /// Opaque, runtime-owned: identifies the bundle.
    pub context: *mut c_void,
    /// Registers an interface; only during this bundle's init.
    pub register_guest_contract: unsafe extern "C" fn(
        host: *const HostApi,
        descriptor: *const PluginDescriptor,
        interface: *const GuestContractInterface,
        out_handle: *mut GuestContractHandle,
    ) -> AbiError,
    /// Allocates host memory that outlives any image (null on failure).
    pub alloc: unsafe extern "C" fn(host: *const HostApi, size: usize, align: usize) -> *mut c_void,
    /// Frees memory from `alloc` (same size and alignment).
    pub free: unsafe extern "C" fn(host: *const HostApi, ptr: *mut c_void, size: usize, align: usize),
    /// Finds the earliest-registered provider with at least `min_minor`.
    pub find_guest_contract: unsafe extern "C" fn(
        host: *const HostApi,
        contract_id: u64,
        min_minor: u32,
        out_handle: *mut GuestContractHandle,
    ) -> AbiError,
    /// Writes up to `capacity` matches; returns the total number of matches.
    pub find_all_guest_contracts: unsafe extern "C" fn(
        host: *const HostApi,
        contract_id: u64,
        min_minor: u32,
        out: *mut GuestContractHandle,
        capacity: usize,
    ) -> usize,
    /// The current interface, or null; valid while the caller is pinned.
    pub resolve_guest_contract: unsafe extern "C" fn(
        host: *const HostApi,
        handle: GuestContractHandle,
    ) -> *const GuestContractInterface,
    /// Creates a tracked instance.
    pub create_guest_instance: unsafe extern "C" fn(
        host: *const HostApi,
        handle: GuestContractHandle,
        args: *const (),
        out: *mut InstanceHandle,
    ) -> AbiError,
    /// Reads a tracked instance.
    pub resolve_guest_instance: unsafe extern "C" fn(
        host: *const HostApi,
        instance: InstanceHandle,
        out: *mut GuestContractInstance,
    ) -> AbiError,
    /// Destroys a tracked instance.
    pub destroy_guest_instance:
        unsafe extern "C" fn(host: *const HostApi, instance: InstanceHandle) -> AbiError,
    /// Writes up to `capacity` bundle summaries; returns the total.
    pub list_bundles:
        unsafe extern "C" fn(host: *const HostApi, out: *mut BundleInfo, capacity: usize) -> usize,
    /// Loads a bundle directory.
    pub load_bundle:
        unsafe extern "C" fn(host: *const HostApi, path: StringView, out_bundle_id: *mut u64) -> AbiError,
    /// Reloads a bundle directory.
    pub reload_bundle: unsafe extern "C" fn(host: *const HostApi, path: StringView) -> AbiError,
    /// Unloads a bundle.
    pub unload_bundle: unsafe extern "C" fn(host: *const HostApi, bundle_id: u64) -> AbiError,
    /// The message of this thread's last failed call through this table.
    pub get_last_error: unsafe extern "C" fn(host: *const HostApi) -> StringView,
    /// Logs through the runtime's logger (levels above 4 are Trace).
    pub log: unsafe extern "C" fn(host: *const HostApi, level: u32, message: StringView),
    /// The runtime's revision counter.
    pub revision_counter: unsafe extern "C" fn(host: *const HostApi) -> u64,
    /// Pushes an epoch pin on this thread.
    pub pin: unsafe extern "C" fn(host: *const HostApi),
    /// Pops an epoch pin of this thread.
    pub unpin: unsafe extern "C" fn(host: *const HostApi),
}

// SAFETY: the table is immutable after creation and its context is only read
// by the runtime's own functions, which are thread-safe.
unsafe impl Send for HostApi {}
// SAFETY: as for `Send`.
unsafe impl Sync for HostApi {}

fn result_of(error: AbiError) -> Result<(), AbiError> {
    if error.is_ok() { Ok(()) } else { Err(error) }
}

impl HostApi {
    /// Registers `interface` for the contract `descriptor` names.
    ///
    /// # Errors
    /// The host's refusal (`NotInInit`, `Undeclared`, `AlreadyRegistered`, …).
    ///
    /// # Safety
    /// `self` must be a table the runtime handed to this bundle, used during
    /// its init; the interface's pointers must live as long as the image.
    pub unsafe fn register(
        &self,
        descriptor: &PluginDescriptor,
        interface: &GuestContractInterface,
    ) -> Result<GuestContractHandle, AbiError> {
        let mut handle = GuestContractHandle::NULL;
        // SAFETY: the caller vouches for the table; every pointer passed is a
        // live reference for the duration of the call.
        let error = unsafe { (self.register_guest_contract)(self, descriptor, interface, &mut handle) };
        result_of(error).map(|()| handle)
    }

    /// Finds the provider of `contract` with at least `min_minor`.
    ///
    /// # Errors
    /// `NotFound`, or `Undeclared` for a contract the manifest does not name.
    ///
    /// # Safety
    /// `self` must be a table the runtime handed over, still live.
    pub unsafe fn find(
        &self,
        contract: GuestContractId,
        min_minor: u32,
    ) -> Result<GuestContractHandle, AbiError> {
        let mut handle = GuestContractHandle::NULL;
        // SAFETY: the caller vouches for the table; `handle` is a live local.
        let error = unsafe { (self.find_guest_contract)(self, contract.id(), min_minor, &mut handle) };
        result_of(error).map(|()| handle)
    }

    /// Copies `bytes` into host memory, for `save_state` to return.
    ///
    /// # Errors
    /// `OutOfMemory` when the host cannot allocate.
    ///
    /// # Safety
    /// `self` must be a table the runtime handed over, still live.
    pub unsafe fn alloc_state(&self, bytes: &[u8]) -> Result<StateBlob, AbiError> {
        if bytes.is_empty() {
            return Ok(StateBlob::empty());
        }
        // SAFETY: the caller vouches for the table.
        let ptr = unsafe { (self.alloc)(self, bytes.len(), 1) }.cast::<u8>();
        if ptr.is_null() {
            return Err(AbiError::new(
                AbiErrorCode::OutOfMemory,
                "host could not allocate state",
            ));
        }
        // SAFETY: `ptr` is a fresh allocation of `bytes.len()` bytes that
        // cannot overlap `bytes`.
        unsafe { core::ptr::copy_nonoverlapping(bytes.as_ptr(), ptr, bytes.len()) };
        Ok(StateBlob {
            ptr,
            len: bytes.len(),
        })
    }

    /// Logs `message` at `level`.
    ///
    /// # Safety
    /// `self` must be a table the runtime handed over, still live.
    pub unsafe fn log_str(&self, level: LogLevel, message: &str) {
        // SAFETY: the caller vouches for the table; the view borrows
        // `message` for the call only.
        unsafe { (self.log)(self, level as u32, StringView::borrowed(message)) }
    }
}

/// One loaded bundle, as `list_bundles` reports it.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct BundleInfo {
    /// The bundle's ID.
    pub bundle_id: u64,
    /// Its name (a runtime-owned copy, valid until the runtime is dropped).
    pub name: StringView,
    /// Its version.
    pub version: Version,
    /// How many contracts it provides.
    pub contract_count: u32,
}
