//! Host-only types of the runtime's configuration and reload events.
//! Plugins never see them, so they are not in the layout table, but they are
//! `repr(C)` for a later C embedding API.

use core::ffi::c_void;

use crate::types::StringView;

/// Called for every reload phase, on the thread running the operation.
pub type ReloadCallbackFn = unsafe extern "C" fn(user_data: *mut c_void, phase: ReloadPhase);
/// Receives the runtime's log lines.
pub type LogCallbackFn = unsafe extern "C" fn(user_data: *mut c_void, level: LogLevel, message: StringView);

/// Which phase of a lifecycle operation an event reports.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReloadPhaseType {
    /// A reload is about to swap the bundle.
    Preparing = 0,
    /// The reload committed.
    Reloaded = 1,
    /// The reload failed and was rolled back.
    Failed = 2,
    /// The bundle is being unloaded.
    Unloading = 3,
}

/// One reload event.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ReloadPhase {
    /// The phase.
    pub phase_type: ReloadPhaseType,
    /// The bundle's ID.
    pub bundle_id: u64,
    /// The bundle's name (runtime-owned, valid until the runtime is dropped).
    pub bundle_name: StringView,
    /// Why it failed (`Failed` only; valid during the callback).
    pub reason: StringView,
    /// The revision after the event's change.
    pub revision: u64,
}

// SAFETY: the views point to runtime-owned strings whose lifetimes are stated
// above; the event itself is plain data.
unsafe impl Send for ReloadPhase {}

/// How strictly a reload's contracts must match the old ones.
#[repr(u32)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Compatibility {
    /// The default.
    #[default]
    Strict = 0,
    /// Relaxed checks.
    Lenient = 1,
}

/// Log verbosity, ordered from least to most verbose.
#[repr(u32)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LogLevel {
    /// Errors.
    Error = 0,
    /// Warnings (the default threshold).
    #[default]
    Warn = 1,
    /// Information.
    Info = 2,
    /// Debugging.
    Debug = 3,
    /// Everything.
    Trace = 4,
}

/// What the runtime does with a bundle's signature (`bundle.sig`) before it
/// opens the bundle's library or compiles its module (holdfast-plugin's
/// `signature` module; docs/PLUGINS.md, "Signed bundles"). The keys it
/// trusts and revokes are given to `RuntimeBuilder::trusted_keys`, not
/// here: this struct stays `Copy` and free of allocation for a later C API.
#[repr(u32)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum SignaturePolicy {
    /// Signatures are not read (the default: nothing changes for unsigned
    /// bundles).
    #[default]
    Off = 0,
    /// Every refusal is logged at `Warn` and the bundle loads anyway.
    Warn = 1,
    /// A bundle loads or reloads only with a valid signature by a trusted,
    /// unrevoked key; otherwise the operation is refused and nothing changes.
    Require = 2,
}

/// The runtime's configuration. Hosts write it as a literal with
/// `..Default::default()`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct RuntimeConfig {
    /// Contract matching on reload.
    pub compatibility: Compatibility,
    /// Whether reload is allowed at all.
    pub hot_reload_enabled: bool,
    /// Reload events, if wanted.
    pub on_reload: Option<ReloadCallbackFn>,
    /// Passed to `on_reload` unchanged.
    pub on_reload_user_data: *mut c_void,
    /// Log lines, if wanted.
    pub log: Option<LogCallbackFn>,
    /// Passed to `log` unchanged.
    pub log_user_data: *mut c_void,
    /// The most verbose level passed to `log`.
    pub log_level: LogLevel,
    /// The largest state blob a reload carries (default 64 MiB).
    pub max_state_bytes: u64,
    /// Whether bundles must be signed (default `Off`).
    pub signature_policy: SignaturePolicy,
}

// SAFETY: the user-data pointers are only passed back to the host's own
// callbacks; a host that sets them asserts that its callbacks may be called
// from any thread with them.
unsafe impl Send for RuntimeConfig {}
// SAFETY: as for `Send`.
unsafe impl Sync for RuntimeConfig {}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            compatibility: Compatibility::Strict,
            hot_reload_enabled: false,
            on_reload: None,
            on_reload_user_data: core::ptr::null_mut(),
            log: None,
            log_user_data: core::ptr::null_mut(),
            log_level: LogLevel::Warn,
            max_state_bytes: 64 * 1024 * 1024,
            signature_policy: SignaturePolicy::Off,
        }
    }
}
