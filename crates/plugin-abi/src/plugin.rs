//! What a plugin library exports and what the loader checks before calling
//! it: the ABI version, the layout table (size and alignment of every shared
//! type, so that a plugin compiled with other headers is refused before its
//! init runs), the init context, and the exported symbol names.

use crate::host::HostApi;
use crate::ids::fnv1a_64;
use crate::types::{AbiError, StringView};

/// The ABI version; it must match exactly. Any change to a type in the layout
/// table, to the `HostApi` fields or to a symbol's signature bumps it.
pub const HOLDFAST_ABI_VERSION: u32 = 1;

/// `holdfast_abi_version` (required).
pub const SYMBOL_ABI_VERSION: &[u8] = b"holdfast_abi_version\0";
/// `holdfast_abi_layout` (required).
pub const SYMBOL_ABI_LAYOUT: &[u8] = b"holdfast_abi_layout\0";
/// `holdfast_plugin_init` (required).
pub const SYMBOL_PLUGIN_INIT: &[u8] = b"holdfast_plugin_init\0";
/// `holdfast_plugin_fini` (optional).
pub const SYMBOL_PLUGIN_FINI: &[u8] = b"holdfast_plugin_fini\0";

/// Returns the plugin's ABI version.
pub type AbiVersionFn = unsafe extern "C" fn() -> u32;
/// Returns the plugin's layout table.
pub type AbiLayoutFn = unsafe extern "C" fn() -> *const AbiLayout;
/// Registers the plugin's contracts.
pub type PluginInitFn = unsafe extern "C" fn(host: *const HostApi, ctx: *const BundleInitContext) -> AbiError;
/// Runs once before the image is closed.
pub type PluginFiniFn = unsafe extern "C" fn(host: *const HostApi);

/// What init is told about its bundle.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct BundleInitContext {
    /// The bundle's ID.
    pub bundle_id: u64,
    /// The bundle directory (not the shadow copy), UTF-8.
    pub bundle_path: StringView,
}

/// The size and alignment of one shared type.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LayoutEntry {
    /// The type's index in [`LAYOUT_TYPE_NAMES`].
    pub type_id: u32,
    /// `size_of`.
    pub size: u32,
    /// `align_of`.
    pub align: u32,
}

/// A plugin's layout table.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct AbiLayout {
    /// The plugin's ABI version.
    pub abi_version: u32,
    /// The number of entries (16).
    pub entry_count: u32,
    /// The entries, in `type_id` order.
    pub entries: *const LayoutEntry,
}

// SAFETY: the table points to immutable static data.
unsafe impl Send for AbiLayout {}
// SAFETY: as for `Send`.
unsafe impl Sync for AbiLayout {}

/// The names of the types in the layout table, by `type_id`.
pub const LAYOUT_TYPE_NAMES: [&str; 16] = [
    "StringView",
    "Version",
    "PluginDescriptor",
    "GuestContractInterface",
    "NativeDispatch",
    "VmDispatch",
    "DispatchMechanisms",
    "GuestContractInstance",
    "GuestContractHandle",
    "InstanceHandle",
    "BundleInitContext",
    "AbiError",
    "HostApi",
    "StateHooks",
    "StateBlob",
    "BundleInfo",
];

const fn entry<T>(type_id: u32) -> LayoutEntry {
    LayoutEntry {
        type_id,
        size: size_of::<T>() as u32,
        align: align_of::<T>() as u32,
    }
}

const LAYOUT_ENTRIES: [LayoutEntry; 16] = [
    entry::<StringView>(0),
    entry::<crate::types::Version>(1),
    entry::<crate::guest::PluginDescriptor>(2),
    entry::<crate::guest::GuestContractInterface>(3),
    entry::<crate::dispatch::NativeDispatch>(4),
    entry::<crate::dispatch::VmDispatch>(5),
    entry::<crate::dispatch::DispatchMechanisms>(6),
    entry::<crate::guest::GuestContractInstance>(7),
    entry::<crate::guest::GuestContractHandle>(8),
    entry::<crate::guest::InstanceHandle>(9),
    entry::<BundleInitContext>(10),
    entry::<AbiError>(11),
    entry::<HostApi>(12),
    entry::<crate::guest::StateHooks>(13),
    entry::<crate::guest::StateBlob>(14),
    entry::<crate::host::BundleInfo>(15),
];

/// This build's layout table.
pub static ABI_LAYOUT_ENTRIES: [LayoutEntry; 16] = LAYOUT_ENTRIES;

/// This build's layout table, as `holdfast_abi_layout` returns it.
pub static ABI_LAYOUT: AbiLayout = AbiLayout {
    abi_version: HOLDFAST_ABI_VERSION,
    entry_count: 16,
    entries: ABI_LAYOUT_ENTRIES.as_ptr(),
};

/// FNV-1a-64 over each entry's `type_id`, `size` and `align` as
/// little-endian `u32`, in table order.
pub const fn layout_fingerprint(entries: &[LayoutEntry]) -> u64 {
    let mut bytes = [0u8; 12];
    let mut hash = fnv1a_64(&[]);
    let mut i = 0;
    while i < entries.len() {
        let fields = [entries[i].type_id, entries[i].size, entries[i].align];
        let mut f = 0;
        while f < 3 {
            let le = fields[f].to_le_bytes();
            bytes[f * 4] = le[0];
            bytes[f * 4 + 1] = le[1];
            bytes[f * 4 + 2] = le[2];
            bytes[f * 4 + 3] = le[3];
            f += 1;
        }
        let mut b = 0;
        while b < 12 {
            hash ^= bytes[b] as u64;
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
            b += 1;
        }
        i += 1;
    }
    hash
}

/// The fingerprint of this build's layout table: `0x43e658f97b85204d` for
/// the layouts of the specification (asserted at compile time).
pub const ABI_FINGERPRINT: u64 = layout_fingerprint(&LAYOUT_ENTRIES);

const _: () = assert!(ABI_FINGERPRINT == 0x43e6_58f9_7b85_204d, "the ABI layout changed");
