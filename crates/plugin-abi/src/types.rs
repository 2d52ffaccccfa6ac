//! Plain data that crosses the boundary: [`StringView`] (borrowed UTF-8
//! without a terminator), [`Version`], and the error pair [`AbiError`] /
//! [`AbiErrorCode`].
//!
//! Error codes travel as raw `u32` so that a value written by a plugin is
//! never read as a Rust enum it might not be; [`AbiErrorCode::from_u32`] is
//! the only way in.

use core::fmt;
use core::str::FromStr;

/// A borrowed UTF-8 string: pointer and length, no NUL terminator.
///
/// A null `ptr` means *absent*, whatever `len` says; a non-null `ptr` with
/// `len == 0` is the empty string. Who owns the bytes and for how long is
/// stated wherever a view is passed.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct StringView {
    /// The first byte, or null for absent.
    pub ptr: *const u8,
    /// The length in bytes.
    pub len: usize,
}

// SAFETY: a view is plain data (an address and a length); when the bytes may
// be read is stated at each use, not implied by owning the view.
unsafe impl Send for StringView {}
// SAFETY: as for `Send`: sharing the address shares no access by itself.
unsafe impl Sync for StringView {}

impl Default for StringView {
    fn default() -> Self {
        Self::empty()
    }
}

impl StringView {
    /// The empty string (non-null, length 0).
    pub const fn empty() -> Self {
        Self::from_static(b"")
    }

    /// A view of bytes that live for the whole program.
    pub const fn from_static(bytes: &'static [u8]) -> Self {
        Self {
            ptr: bytes.as_ptr(),
            len: bytes.len(),
        }
    }

    /// A view of a string that lives for the whole program.
    pub const fn from_static_str(s: &'static str) -> Self {
        Self::from_static(s.as_bytes())
    }

    /// A view of `s`, valid only while `s` is.
    pub fn borrowed(s: &str) -> Self {
        Self {
            ptr: s.as_ptr(),
            len: s.len(),
        }
    }

    /// The absent string (null pointer).
    pub const fn absent() -> Self {
        Self {
            ptr: core::ptr::null(),
            len: 0,
        }
    }

    /// Whether the view is absent (null pointer).
    pub const fn is_absent(&self) -> bool {
        self.ptr.is_null()
    }

    /// The bytes, or `None` when the view is absent or its length exceeds
    /// `isize::MAX` (no valid slice is that long).
    ///
    /// # Safety
    /// If the view is present, `ptr` must be valid for reads of `len` bytes
    /// that are not written for the whole of `'a`.
    pub unsafe fn as_bytes<'a>(&self) -> Option<&'a [u8]> {
        if self.is_absent() || self.len > isize::MAX as usize {
            return None;
        }
        // SAFETY: `ptr` is non-null and the caller guarantees it is valid for
        // `len` (≤ isize::MAX) unchanging bytes for `'a`.
        Some(unsafe { core::slice::from_raw_parts(self.ptr, self.len) })
    }

    /// The string, `Ok(None)` when absent (or longer than `isize::MAX`).
    ///
    /// # Errors
    /// The UTF-8 error when the bytes are not UTF-8.
    ///
    /// # Safety
    /// As for [`StringView::as_bytes`].
    pub unsafe fn to_str<'a>(&self) -> Result<Option<&'a str>, core::str::Utf8Error> {
        // SAFETY: the caller's guarantee is passed through unchanged.
        match unsafe { self.as_bytes() } {
            None => Ok(None),
            Some(bytes) => core::str::from_utf8(bytes).map(Some),
        }
    }
}

/// A semantic version; only `major.minor` decides compatibility.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Version {
    /// Incompatible changes.
    pub major: u32,
    /// Functions appended.
    pub minor: u32,
    /// Fixes; ignored by every check.
    pub patch: u32,
}

impl Version {
    /// `major.minor.patch`.
    pub const fn new(major: u32, minor: u32, patch: u32) -> Self {
        Self { major, minor, patch }
    }

    /// Whether this version can serve a caller that requires `required`:
    /// equal majors and at least its minor.
    pub const fn satisfies(&self, required: &Self) -> bool {
        self.major == required.major && self.minor >= required.minor
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// Why a string is not a `major.minor[.patch]` version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VersionParseError {
    reason: &'static str,
}

impl fmt::Display for VersionParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid version: {}", self.reason)
    }
}

impl core::error::Error for VersionParseError {}

fn parse_component(text: &str) -> Result<u32, VersionParseError> {
    let refuse = |reason| Err(VersionParseError { reason });
    if text.is_empty() {
        return refuse("empty component");
    }
    if !text.bytes().all(|byte| byte.is_ascii_digit()) {
        return refuse("components are decimal digits only");
    }
    if text.len() > 1 && text.starts_with('0') {
        return refuse("leading zero");
    }
    text.parse()
        .or_else(|_| refuse("component does not fit in 32 bits"))
}

impl FromStr for Version {
    type Err = VersionParseError;

    /// Parses `major.minor` or `major.minor.patch`: decimal components
    /// without leading zeros, each fitting `u32`, nothing else.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let mut parts = text.split('.');
        let major = parse_component(parts.next().unwrap_or(""))?;
        let minor = parse_component(parts.next().ok_or(VersionParseError {
            reason: "expected major.minor[.patch]",
        })?)?;
        let patch = match parts.next() {
            Some(patch) => parse_component(patch)?,
            None => 0,
        };
        if parts.next().is_some() {
            return Err(VersionParseError {
                reason: "more than three components",
            });
        }
        Ok(Self { major, minor, patch })
    }
}

/// The known error codes. On the wire a code is a raw `u32`
/// ([`AbiError::code`]); unknown values are kept and shown as "code N".
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AbiErrorCode {
    /// Success.
    Ok = 0,
    /// An argument was null, out of range or malformed.
    InvalidArgument = 1,
    /// A string was not UTF-8.
    InvalidUtf8 = 2,
    /// Nothing by that ID or handle.
    NotFound = 3,
    /// The handle's slot was reused or retired.
    StaleHandle = 4,
    /// The contract is already provided.
    AlreadyRegistered = 5,
    /// An ID does not match what it must hash.
    IdMismatch = 6,
    /// Not supported here (or not during fini).
    Unsupported = 7,
    /// Registration outside the bundle's init.
    NotInInit = 8,
    /// The contract is not declared by the bundle's manifest.
    Undeclared = 9,
    /// A lifecycle call from inside a lifecycle operation.
    Reentrant = 10,
    /// Reload is disabled in this runtime.
    HotReloadDisabled = 11,
    /// Others still depend on it.
    InUse = 12,
    /// Allocation failed.
    OutOfMemory = 13,
    /// Loading or initialising a bundle failed.
    InitFailed = 14,
    /// Saving or restoring plugin state failed.
    StateError = 15,
    /// The owning bundle is being reloaded or unloaded.
    Busy = 16,
    /// A bug, or a panic caught at the boundary.
    Internal = 17,
}

impl AbiErrorCode {
    /// The code with this value, if it is known.
    pub const fn from_u32(code: u32) -> Option<Self> {
        Some(match code {
            0 => Self::Ok,
            1 => Self::InvalidArgument,
            2 => Self::InvalidUtf8,
            3 => Self::NotFound,
            4 => Self::StaleHandle,
            5 => Self::AlreadyRegistered,
            6 => Self::IdMismatch,
            7 => Self::Unsupported,
            8 => Self::NotInInit,
            9 => Self::Undeclared,
            10 => Self::Reentrant,
            11 => Self::HotReloadDisabled,
            12 => Self::InUse,
            13 => Self::OutOfMemory,
            14 => Self::InitFailed,
            15 => Self::StateError,
            16 => Self::Busy,
            17 => Self::Internal,
            _ => return None,
        })
    }
}

/// A result across the boundary: a raw code (0 is success) and a message.
///
/// A message returned by a plugin must stay valid until the host's next call
/// into that plugin; the host copies it at once.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct AbiError {
    /// An [`AbiErrorCode`] value, or an unknown one.
    pub code: u32,
    /// What went wrong; may be absent.
    pub message: StringView,
}

impl AbiError {
    /// Success with no message.
    pub const fn ok() -> Self {
        Self {
            code: AbiErrorCode::Ok as u32,
            message: StringView::absent(),
        }
    }

    /// An error with a known code.
    pub const fn new(code: AbiErrorCode, message: &'static str) -> Self {
        Self::with_code(code as u32, message)
    }

    /// An error with a raw code.
    pub const fn with_code(code: u32, message: &'static str) -> Self {
        Self {
            code,
            message: StringView::from_static_str(message),
        }
    }

    /// Whether the code is 0.
    pub const fn is_ok(&self) -> bool {
        self.code == AbiErrorCode::Ok as u32
    }

    /// The code, if it is a known one.
    pub fn known_code(&self) -> Option<AbiErrorCode> {
        AbiErrorCode::from_u32(self.code)
    }
}
