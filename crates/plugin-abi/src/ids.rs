//! Identifiers: FNV-1a-64 hashes of bundle names and of contract references
//! (`name@major`). Everything here is `const`, so IDs can be computed in
//! `static` initializers; nothing here checks a name's grammar (the manifest
//! does).

use core::fmt;

const FNV_OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// FNV-1a-64 over `bytes`.
///
/// ```
/// assert_eq!(holdfast_plugin_abi::fnv1a_64(b"a"), 0xaf63dc4c8601ec8c);
/// ```
pub const fn fnv1a_64(bytes: &[u8]) -> u64 {
    fnv1a_64_continue(FNV_OFFSET_BASIS, bytes)
}

/// Continues an FNV-1a-64 hash from `hash` over `bytes`.
const fn fnv1a_64_continue(mut hash: u64, bytes: &[u8]) -> u64 {
    let mut i = 0;
    while i < bytes.len() {
        hash ^= bytes[i] as u64;
        hash = hash.wrapping_mul(FNV_PRIME);
        i += 1;
    }
    hash
}

/// Continues an FNV-1a-64 hash over the decimal digits of `value` (no
/// leading zeros).
const fn fnv1a_64_decimal(hash: u64, value: u32) -> u64 {
    let mut digits = [0u8; 10];
    let mut count = 0;
    let mut rest = value;
    loop {
        digits[count] = b'0' + (rest % 10) as u8;
        count += 1;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    let mut hash = hash;
    while count > 0 {
        count -= 1;
        hash ^= digits[count] as u64;
        hash = hash.wrapping_mul(FNV_PRIME);
    }
    hash
}

/// A bundle's ID: `fnv1a_64(name)`.
#[repr(transparent)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BundleId(pub u64);

impl BundleId {
    /// The ID of the bundle named `name`.
    pub const fn new(name: &str) -> Self {
        Self(fnv1a_64(name.as_bytes()))
    }

    /// The ID with this raw value.
    pub const fn from_u64(raw: u64) -> Self {
        Self(raw)
    }

    /// The raw value.
    pub const fn id(self) -> u64 {
        self.0
    }
}

/// A contract's ID: `fnv1a_64("guest_contract:{name}@{major}")`. One ID names
/// one major version.
#[repr(transparent)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GuestContractId(pub u64);

impl GuestContractId {
    /// The ID of contract `name` at major version `major`.
    ///
    /// ```
    /// use holdfast_plugin_abi::GuestContractId;
    /// static RELOAD_TEST: GuestContractId = GuestContractId::new("reload.test", 1);
    /// assert_eq!(RELOAD_TEST.id(), 0x439b95e8e420050a);
    /// ```
    pub const fn new(name: &str, major: u32) -> Self {
        let hash = fnv1a_64_continue(FNV_OFFSET_BASIS, b"guest_contract:");
        let hash = fnv1a_64_continue(hash, name.as_bytes());
        let hash = fnv1a_64_continue(hash, b"@");
        Self(fnv1a_64_decimal(hash, major))
    }

    /// The ID with this raw value.
    pub const fn from_u64(raw: u64) -> Self {
        Self(raw)
    }

    /// The raw value.
    pub const fn id(self) -> u64 {
        self.0
    }
}

impl fmt::Display for BundleId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#018x}", self.0)
    }
}

impl fmt::Display for GuestContractId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#018x}", self.0)
    }
}
