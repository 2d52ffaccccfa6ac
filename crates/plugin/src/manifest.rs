//! Bundle manifests (spec §4): `manifest.toml` in a bundle directory names
//! the bundle, its version, its library for each platform, the contracts it
//! provides (with their function counts) and what it depends on.
//!
//! A manifest is untrusted input. [`ManifestData::parse`] applies rules 1–12
//! of spec §4.3 in order and stops at the first failure with its own
//! [`ManifestError`] variant; [`ManifestData::from_dir`] adds the filesystem
//! checks of rule 13. This module never opens the library or runs code from
//! the bundle.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use holdfast_plugin_abi::{BundleId, GuestContractId, Version};
use serde::Deserialize;

use crate::error::ManifestError;

/// The manifest's file name inside a bundle directory.
pub const MANIFEST_FILE: &str = "manifest.toml";
const MAX_NAME_LEN: usize = 128;
const MAX_LOADER_LEN: usize = 32;
const MAX_CONTRACT_NAME_LEN: usize = 128;
const MAX_PROVIDES: usize = 256;
const MAX_FUNCTION_COUNT: u64 = 65_536;

/// A contract reference, `name@major`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ContractRef {
    /// `.`-separated segments of `[A-Za-z_][A-Za-z0-9_]*`, at most 128 bytes.
    pub name: String,
    /// The major version.
    pub major: u32,
}

impl ContractRef {
    /// The contract's ID.
    pub fn id(&self) -> GuestContractId {
        GuestContractId::new(&self.name, self.major)
    }
}

impl fmt::Display for ContractRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.name, self.major)
    }
}

impl FromStr for ContractRef {
    type Err = ManifestError;

    /// Parses `name@major` (rule 8).
    fn from_str(value: &str) -> Result<Self, Self::Err> {
        let invalid = || ManifestError::InvalidContractRef {
            value: value.to_owned(),
        };
        let (name, major) = value.split_once('@').ok_or_else(invalid)?;
        if !is_contract_name(name) {
            return Err(invalid());
        }
        let major = parse_decimal(major).ok_or_else(invalid)?;
        Ok(Self {
            name: name.to_owned(),
            major,
        })
    }
}

/// A contract a bundle uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManifestDependency {
    /// The contract.
    pub contract: ContractRef,
    /// The lowest minor version accepted (0 when `min_version` is absent).
    pub min_minor: u32,
    /// Whether the bundle loads without a provider.
    pub optional: bool,
}

/// A validated manifest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManifestData {
    /// The loader that opens the bundle (`native` by default).
    pub loader: String,
    /// The bundle's name (its identity).
    pub name: String,
    /// `BundleId::new(name)`.
    pub id: BundleId,
    /// The bundle's version.
    pub version: Version,
    /// The library for this platform, relative to the bundle directory.
    pub file: PathBuf,
    /// The contracts the bundle's init must register.
    pub provides: Vec<ContractRef>,
    /// The native function count of each provided contract.
    pub function_count: BTreeMap<ContractRef, u32>,
    /// The contracts the bundle uses.
    pub dependencies: Vec<ManifestDependency>,
    /// Whether to reload this bundle when something it depends on reloads.
    pub needs_reinit_on_dep_reload: bool,
    /// Bundles that must be loaded first.
    pub bundle_dependencies: Vec<String>,
    /// The bundle directory (canonical when read by `from_dir`).
    pub dir: PathBuf,
}

/// The manifest as TOML gives it, before any rule but the types is checked.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManifest {
    loader: Option<String>,
    name: Option<String>,
    id: Option<String>,
    version: Option<String>,
    file: Option<RawFile>,
    #[serde(default)]
    provides: Vec<String>,
    #[serde(default)]
    function_count: BTreeMap<String, u64>,
    #[serde(default, rename = "dependency")]
    dependencies: Vec<RawDependency>,
    #[serde(default)]
    needs_reinit_on_dep_reload: bool,
    #[serde(default)]
    bundle_dependencies: Vec<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawFile {
    Path(String),
    ByOs(BTreeMap<String, RawOsFile>),
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawOsFile {
    Path(String),
    ByArch(BTreeMap<String, String>),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDependency {
    contract: Option<String>,
    min_version: Option<String>,
    #[serde(default)]
    optional: bool,
}

/// Decimal without leading zeros, fitting `u32`.
fn parse_decimal(text: &str) -> Option<u32> {
    let well_formed = !text.is_empty()
        && text.bytes().all(|byte| byte.is_ascii_digit())
        && (text.len() == 1 || !text.starts_with('0'));
    if well_formed { text.parse().ok() } else { None }
}

fn is_bundle_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    (1..=MAX_NAME_LEN).contains(&bytes.len())
        && bytes[0].is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|&byte| byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b'-'))
}

fn is_loader_name(loader: &str) -> bool {
    (1..=MAX_LOADER_LEN).contains(&loader.len())
        && loader
            .bytes()
            .all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'-')
}

pub(crate) fn is_contract_name(name: &str) -> bool {
    let is_segment = |segment: &str| {
        let mut bytes = segment.bytes();
        bytes
            .next()
            .is_some_and(|first| first.is_ascii_alphabetic() || first == b'_')
            && bytes.all(|byte| byte.is_ascii_alphanumeric() || byte == b'_')
    };
    (1..=MAX_CONTRACT_NAME_LEN).contains(&name.len()) && name.split('.').all(is_segment)
}

fn parse_id(value: &str) -> Result<BundleId, ManifestError> {
    let digits = value.strip_prefix("0x").filter(|digits| digits.len() == 16);
    digits
        .and_then(|digits| {
            digits
                .bytes()
                .all(|byte| byte.is_ascii_hexdigit())
                .then_some(digits)
        })
        .and_then(|digits| u64::from_str_radix(digits, 16).ok())
        .map(BundleId::from_u64)
        .ok_or_else(|| ManifestError::InvalidId {
            value: value.to_owned(),
        })
}

fn parse_version(field: &str, value: &str) -> Result<Version, ManifestError> {
    value.parse().map_err(|_| ManifestError::InvalidVersion {
        field: field.to_owned(),
        value: value.to_owned(),
    })
}

/// A `min_version`: exactly `major.minor`.
fn parse_min_version(value: &str) -> Result<Version, ManifestError> {
    let field = "dependency.min_version";
    if value.split('.').count() != 2 {
        return Err(ManifestError::InvalidVersion {
            field: field.to_owned(),
            value: value.to_owned(),
        });
    }
    parse_version(field, value)
}

/// Rule 7 for one path: non-empty, relative, inside the bundle. Checked on
/// the text with both separators, so that a manifest is judged the same on
/// every platform.
fn check_library_path(value: &str) -> Result<(), ManifestError> {
    let invalid = |reason| {
        Err(ManifestError::InvalidFile {
            value: value.to_owned(),
            reason,
        })
    };
    if value.is_empty() {
        return invalid("the path is empty");
    }
    let bytes = value.as_bytes();
    let has_drive = bytes.len() >= 2 && bytes[0].is_ascii_alphabetic() && bytes[1] == b':';
    if has_drive {
        return invalid("the path has a drive prefix");
    }
    if value.starts_with(['/', '\\']) {
        return invalid("the path is absolute");
    }
    if value.split(['/', '\\']).any(|segment| segment == "..") {
        return invalid("the path leaves the bundle with `..`");
    }
    Ok(())
}

/// Rule 7: checks every path of the file table, then picks this platform's.
fn library_for_this_platform(file: &RawFile) -> Result<PathBuf, ManifestError> {
    let (os, arch) = (std::env::consts::OS, std::env::consts::ARCH);
    let chosen = match file {
        RawFile::Path(path) => {
            check_library_path(path)?;
            Some(path)
        }
        RawFile::ByOs(table) => {
            for entry in table.values() {
                match entry {
                    RawOsFile::Path(path) => check_library_path(path)?,
                    RawOsFile::ByArch(by_arch) => {
                        by_arch.values().try_for_each(|path| check_library_path(path))?
                    }
                }
            }
            match table.get(os) {
                Some(RawOsFile::Path(path)) => Some(path),
                Some(RawOsFile::ByArch(by_arch)) => by_arch.get(arch),
                None => None,
            }
        }
    };
    chosen
        .map(PathBuf::from)
        .ok_or(ManifestError::NoFileForPlatform { os, arch })
}

fn required<T>(value: Option<T>, field: &'static str) -> Result<T, ManifestError> {
    value.ok_or(ManifestError::MissingField { field })
}

impl ManifestData {
    /// Parses and validates manifest text (rules 1–12 of spec §4.3) for a
    /// bundle in `dir`, which is kept as given.
    ///
    /// # Errors
    /// The first rule that fails, as its [`ManifestError`] variant.
    pub fn parse(text: &str, dir: &Path) -> Result<Self, ManifestError> {
        // Rule 1: TOML, types, no unknown keys.
        let raw: RawManifest = toml::from_str(text).map_err(|error| ManifestError::Syntax {
            message: error.message().to_owned(),
        })?;
        // Rule 2: required keys.
        let name = required(raw.name, "name")?;
        let id = required(raw.id, "id")?;
        let version = required(raw.version, "version")?;
        let file = required(raw.file, "file")?;
        let dependencies = raw
            .dependencies
            .into_iter()
            .map(|mut dependency| {
                Ok((
                    required(dependency.contract.take(), "dependency.contract")?,
                    dependency,
                ))
            })
            .collect::<Result<Vec<_>, ManifestError>>()?;
        // Rules 3 and 4: names.
        if !is_bundle_name(&name) {
            return Err(ManifestError::InvalidName { name });
        }
        let loader = raw.loader.unwrap_or_else(|| "native".to_owned());
        if !is_loader_name(&loader) {
            return Err(ManifestError::InvalidLoader { loader });
        }
        // Rule 5: the id is the name's hash.
        let found = parse_id(&id)?;
        let expected = BundleId::new(&name);
        if found != expected {
            return Err(ManifestError::IdMismatch {
                name,
                expected,
                found,
            });
        }
        // Rule 6: versions.
        let version = parse_version("version", &version)?;
        let min_versions = dependencies
            .iter()
            .map(|(_, dependency)| {
                dependency
                    .min_version
                    .as_deref()
                    .map(parse_min_version)
                    .transpose()
            })
            .collect::<Result<Vec<_>, _>>()?;
        // Rule 7: the library path.
        let file = library_for_this_platform(&file)?;
        // Rule 8: contract references.
        let provides = raw
            .provides
            .iter()
            .map(|value| value.parse())
            .collect::<Result<Vec<ContractRef>, _>>()?;
        let counts = raw
            .function_count
            .iter()
            .map(|(key, &count)| Ok((key.parse::<ContractRef>()?, count)))
            .collect::<Result<Vec<_>, ManifestError>>()?;
        let contracts = dependencies
            .iter()
            .map(|(contract, _)| contract.parse())
            .collect::<Result<Vec<ContractRef>, _>>()?;
        // Rule 9: provides is a set of at most 256.
        let mut provided = BTreeSet::new();
        for contract in &provides {
            if !provided.insert(contract) || provided.len() > MAX_PROVIDES {
                return Err(ManifestError::DuplicateProvides {
                    contract: contract.to_string(),
                });
            }
        }
        // Rule 10: one function count per provided contract.
        let function_count = check_function_counts(&provides, counts)?;
        // Rule 11: dependencies.
        let mut checked_dependencies = Vec::with_capacity(contracts.len());
        for ((contract, (_, raw_dependency)), min_version) in
            contracts.into_iter().zip(&dependencies).zip(min_versions)
        {
            if let Some(min_version) = min_version
                && min_version.major != contract.major
            {
                let min_version = raw_dependency.min_version.clone().unwrap_or_default();
                return Err(ManifestError::DependencyVersionMismatch {
                    contract: contract.to_string(),
                    min_version,
                });
            }
            if provided.contains(&contract) {
                return Err(ManifestError::SelfDependency {
                    contract: contract.to_string(),
                });
            }
            checked_dependencies.push(ManifestDependency {
                contract,
                min_minor: min_version.map_or(0, |version| version.minor),
                optional: raw_dependency.optional,
            });
        }
        // Rule 12: bundle dependencies.
        let mut seen = BTreeSet::new();
        for dependency in &raw.bundle_dependencies {
            if !is_bundle_name(dependency) || *dependency == name || !seen.insert(dependency) {
                return Err(ManifestError::InvalidBundleDependency {
                    name: dependency.clone(),
                });
            }
        }
        Ok(Self {
            loader,
            name,
            id: found,
            version,
            file,
            provides,
            function_count,
            dependencies: checked_dependencies,
            needs_reinit_on_dep_reload: raw.needs_reinit_on_dep_reload,
            bundle_dependencies: raw.bundle_dependencies,
            dir: dir.to_path_buf(),
        })
    }

    /// Reads `dir/manifest.toml` and validates it (rules 1–13): the library
    /// must be a regular file that resolves inside the canonical bundle
    /// directory, and the directory's path must be UTF-8. `dir` is
    /// canonicalized.
    ///
    /// # Errors
    /// The first rule that fails, as its [`ManifestError`] variant.
    pub fn from_dir(dir: &Path) -> Result<Self, ManifestError> {
        let manifest_path = dir.join(MANIFEST_FILE);
        let io_error = |path: &Path, error: std::io::Error| ManifestError::Io {
            path: path.to_path_buf(),
            message: error.to_string(),
        };
        let text = std::fs::read_to_string(&manifest_path).map_err(|error| match error.kind() {
            std::io::ErrorKind::NotFound => ManifestError::NotFound {
                path: manifest_path.clone(),
            },
            _ => io_error(&manifest_path, error),
        })?;
        let canonical_dir = canonical_dir(dir).map_err(|error| io_error(dir, error))?;
        let manifest = Self::parse(&text, &canonical_dir)?;
        let library = manifest.library_path();
        let metadata = std::fs::symlink_metadata(&library);
        let is_plain_file = metadata.as_ref().is_ok_and(|metadata| metadata.is_file());
        // A regular file (not a symlink) named by a single component of a
        // canonical directory lies inside it; anything else is resolved.
        if !is_plain_file || manifest.file.components().count() != 1 {
            if !std::fs::metadata(&library).is_ok_and(|metadata| metadata.is_file()) {
                return Err(ManifestError::LibraryMissing { path: library });
            }
            let resolved = library
                .canonicalize()
                .map_err(|error| io_error(&library, error))?;
            if !resolved.starts_with(&canonical_dir) {
                return Err(ManifestError::LibraryOutsideBundle { path: library });
            }
        }
        if canonical_dir.to_str().is_none() {
            return Err(ManifestError::NonUtf8Path { path: canonical_dir });
        }
        Ok(manifest)
    }

    /// The library's path: the bundle directory joined with `file`.
    pub fn library_path(&self) -> PathBuf {
        self.dir.join(&self.file)
    }

    /// Every file of the bundle whose change is a change of the bundle: the
    /// library, `manifest.toml` and the signature file (which may be
    /// absent). Watchers and directory scans compare exactly these.
    pub fn bundle_files(&self) -> [PathBuf; 3] {
        [
            self.library_path(),
            self.dir.join(MANIFEST_FILE),
            self.dir.join(crate::signature::SIGNATURE_FILE),
        ]
    }
}

/// `dir` with every symlink, `.` and `..` resolved. On Linux the kernel's
/// own name of an open descriptor of it (one open and one `readlink`, where
/// a realpath walk reads a link per component: a reload resolves its bundle
/// directory every time); elsewhere, or when that name is unusable (no
/// `/proc`, a directory that cannot be opened for reading, or one deleted
/// meanwhile), `canonicalize`.
fn canonical_dir(dir: &Path) -> std::io::Result<PathBuf> {
    #[cfg(target_os = "linux")]
    if let Some(path) = kernel_name_of_dir(dir) {
        return Ok(path);
    }
    dir.canonicalize()
}

#[cfg(target_os = "linux")]
fn kernel_name_of_dir(dir: &Path) -> Option<PathBuf> {
    use std::os::fd::AsRawFd;
    let opened = std::fs::File::open(dir).ok()?;
    let name = std::fs::read_link(format!("/proc/self/fd/{}", opened.as_raw_fd())).ok()?;
    // The kernel marks an unlinked directory with this suffix, and names one
    // outside this process's root without a leading slash.
    let deleted = name.as_os_str().as_encoded_bytes().ends_with(b" (deleted)");
    (name.is_absolute() && !deleted).then_some(name)
}

/// Rule 10: a count for every provided contract, none for others, each at
/// most 65 536.
fn check_function_counts(
    provides: &[ContractRef],
    counts: Vec<(ContractRef, u64)>,
) -> Result<BTreeMap<ContractRef, u32>, ManifestError> {
    let counts: BTreeMap<ContractRef, u64> = counts.into_iter().collect();
    if let Some(missing) = provides.iter().find(|contract| !counts.contains_key(contract)) {
        return Err(ManifestError::FunctionCountMissing {
            contract: missing.to_string(),
        });
    }
    let mut checked = BTreeMap::new();
    for (contract, count) in counts {
        if !provides.contains(&contract) {
            return Err(ManifestError::FunctionCountUnexpected {
                contract: contract.to_string(),
            });
        }
        if count > MAX_FUNCTION_COUNT {
            let count = u32::try_from(count).unwrap_or(u32::MAX);
            return Err(ManifestError::FunctionCountTooLarge {
                contract: contract.to_string(),
                count,
            });
        }
        checked.insert(contract, u32::try_from(count).expect("at most 65 536"));
    }
    Ok(checked)
}
