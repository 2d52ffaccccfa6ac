//! The native loader: copies a bundle's library to a private shadow file,
//! opens it, and runs the ABI checks of spec §3.7 (version symbol, version,
//! layout symbol, layout table, every entry, init symbol) before anything of
//! the plugin is called beyond those two exported functions.
//!
//! A fresh shadow file per image defeats the platform loaders' caching by
//! path, so reopening a library replaced at the same path runs the new code.
//! This module never calls `holdfast_plugin_init` and never decides when an
//! image may be closed; the runtime does (spec §6.8). A [`NativeModule`]
//! closes its library and deletes its shadow file when dropped.
//!
//! Trust: opening a native library runs its constructors with the host's
//! rights; the checks here catch mistakes (a plugin built against other
//! headers), not malice (spec §9).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use holdfast_plugin_abi::{
    ABI_LAYOUT_ENTRIES, AbiLayout, AbiLayoutFn, AbiVersionFn, HOLDFAST_ABI_VERSION, LAYOUT_TYPE_NAMES,
    PluginFiniFn, PluginInitFn, SYMBOL_ABI_LAYOUT, SYMBOL_ABI_VERSION, SYMBOL_PLUGIN_FINI,
    SYMBOL_PLUGIN_INIT,
};
use libloading::Library;

use crate::error::LoaderError;
use crate::manifest::ManifestData;

/// Distinguishes shadow copies across every loader of the process.
static SHADOW_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Opens native bundles, through shadow copies by default.
#[derive(Clone, Debug)]
pub struct NativeLoader {
    shadow_dir: Option<PathBuf>,
}

impl Default for NativeLoader {
    fn default() -> Self {
        Self::new()
    }
}

/// An opened library and its shadow file; dropping it closes the one and
/// then deletes the other.
#[derive(Debug)]
struct OpenImage {
    library: Option<Library>,
    shadow: Option<PathBuf>,
}

impl Drop for OpenImage {
    fn drop(&mut self) {
        // Close before deleting: some platforms refuse to delete a mapped file.
        drop(self.library.take());
        if let Some(shadow) = self.shadow.take() {
            let _ = std::fs::remove_file(shadow);
        }
    }
}

/// The entry points the ABI checks found.
struct EntryPoints {
    init: PluginInitFn,
    fini: Option<PluginFiniFn>,
    layout: *const AbiLayout,
}

/// An opened, checked image. Dropping it closes the library and deletes its
/// shadow file: the runtime drops it only after the grace period.
#[derive(Debug)]
pub struct NativeModule {
    bundle: String,
    image: OpenImage,
    init: PluginInitFn,
    fini: Option<PluginFiniFn>,
    layout: *const AbiLayout,
}

// SAFETY: the module owns the library handle (which may be closed from any
// thread) and plain function and data addresses inside it; it is never
// shared, only moved.
unsafe impl Send for NativeModule {}

impl NativeModule {
    /// The bundle's name.
    pub fn bundle(&self) -> &str {
        &self.bundle
    }

    /// `holdfast_plugin_init` of this image; valid while the module lives.
    pub fn init_fn(&self) -> PluginInitFn {
        self.init
    }

    /// `holdfast_plugin_fini` of this image, if exported.
    pub fn fini_fn(&self) -> Option<PluginFiniFn> {
        self.fini
    }

    /// The image's layout table (inside the image: valid while the module
    /// lives).
    pub fn layout(&self) -> *const AbiLayout {
        self.layout
    }

    /// The shadow file the image was opened from, if shadow copies are on.
    pub fn shadow_path(&self) -> Option<&Path> {
        self.image.shadow.as_deref()
    }
}

/// The symbol's name without its NUL terminator, for messages.
fn symbol_name(symbol: &'static [u8]) -> &'static str {
    let name = symbol.strip_suffix(b"\0").unwrap_or(symbol);
    std::str::from_utf8(name).expect("the ABI's symbol names are ASCII")
}

/// Looks up an exported function.
///
/// # Safety
/// `T` must be the function-pointer type the ABI gives `symbol`.
unsafe fn exported<T: Copy>(library: &Library, symbol: &'static [u8]) -> Option<T> {
    // SAFETY: the caller names the symbol's ABI type; a missing symbol is an
    // `Err`, not undefined behaviour.
    unsafe { library.get::<T>(symbol) }.ok().map(|found| *found)
}

impl NativeLoader {
    /// A loader whose shadow copies go to `<temp>/holdfast-shadow-<pid>`.
    pub fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("holdfast-shadow-{}", std::process::id()));
        Self {
            shadow_dir: Some(dir),
        }
    }

    /// A loader with shadow copies in `dir`, or none (`None`: the original
    /// file is opened, and reloading a path whose previous image is still
    /// open reuses that image).
    pub fn with_shadow_dir(dir: Option<PathBuf>) -> Self {
        Self { shadow_dir: dir }
    }

    /// The name this loader is registered under.
    pub fn loader_name(&self) -> &'static str {
        "native"
    }

    /// Copies, opens and checks the library of `manifest` (spec §6.3 steps
    /// 1–3). Init is not called.
    ///
    /// # Errors
    /// `ShadowCopy`, `Open`, then the checks of spec §3.7 in order:
    /// `MissingSymbol` (version), `AbiVersionMismatch`, `MissingSymbol`
    /// (layout), `NullLayout`, `AbiVersionMismatch` (the table's),
    /// `LayoutTableMismatch`, `LayoutMismatch` (the first type that
    /// differs), `MissingSymbol` (init).
    pub fn open(&self, manifest: &ManifestData) -> Result<NativeModule, LoaderError> {
        let original = manifest.library_path();
        let path = match &self.shadow_dir {
            Some(dir) => shadow_copy(&original, dir, manifest)?,
            None => original.clone(),
        };
        let library = open_library(&path).map_err(|message| {
            if path != original {
                let _ = std::fs::remove_file(&path);
            }
            LoaderError::Open {
                path: path.clone(),
                message,
            }
        })?;
        let shadow = (path != original).then_some(path);
        // From here the image owns the library and the shadow file, so every
        // refusal below closes and deletes both.
        let image = OpenImage {
            library: Some(library),
            shadow,
        };
        let entry = check_abi(&manifest.name, image.library.as_ref().expect("just opened"))?;
        Ok(NativeModule {
            bundle: manifest.name.clone(),
            image,
            init: entry.init,
            fini: entry.fini,
            layout: entry.layout,
        })
    }
}

fn shadow_copy(original: &Path, dir: &Path, manifest: &ManifestData) -> Result<PathBuf, LoaderError> {
    let failed = |error: std::io::Error| LoaderError::ShadowCopy {
        path: original.to_path_buf(),
        message: error.to_string(),
    };
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir).map_err(failed)?;
    let extension = original
        .extension()
        .and_then(|extension| extension.to_str())
        .unwrap_or("lib");
    let counter = SHADOW_COUNTER.fetch_add(1, Ordering::Relaxed);
    let shadow = dir.join(format!("{:016x}-{counter}.{extension}", manifest.id.id()));
    std::fs::copy(original, &shadow).map_err(failed)?;
    Ok(shadow)
}

fn open_library(path: &Path) -> Result<Library, String> {
    #[cfg(unix)]
    {
        use libloading::os::unix::{Library as UnixLibrary, RTLD_LOCAL, RTLD_NOW};
        // SAFETY: opening runs the library's constructors; bundles are trusted
        // native code (spec §9), and the path was checked to lie inside the
        // bundle (or is its private shadow copy).
        unsafe { UnixLibrary::open(Some(path), RTLD_NOW | RTLD_LOCAL) }
            .map(Library::from)
            .map_err(|error| error.to_string())
    }
    #[cfg(not(unix))]
    {
        // SAFETY: as above.
        unsafe { Library::new(path) }.map_err(|error| error.to_string())
    }
}

/// The checks of spec §3.7, in order; returns the entry points they found.
fn check_abi(bundle: &str, library: &Library) -> Result<EntryPoints, LoaderError> {
    let bundle = bundle.to_owned();
    let missing = |symbol: &'static [u8]| LoaderError::MissingSymbol {
        bundle: bundle.clone(),
        symbol: symbol_name(symbol),
    };
    // SAFETY: `AbiVersionFn` is the ABI type of this symbol.
    let version_fn = unsafe { exported::<AbiVersionFn>(library, SYMBOL_ABI_VERSION) }
        .ok_or_else(|| missing(SYMBOL_ABI_VERSION))?;
    // SAFETY: a plugin's version function takes nothing and only returns.
    let found = unsafe { version_fn() };
    if found != HOLDFAST_ABI_VERSION {
        return Err(LoaderError::AbiVersionMismatch {
            bundle,
            expected: HOLDFAST_ABI_VERSION,
            found,
        });
    }
    // SAFETY: `AbiLayoutFn` is the ABI type of this symbol.
    let layout_fn = unsafe { exported::<AbiLayoutFn>(library, SYMBOL_ABI_LAYOUT) }
        .ok_or_else(|| missing(SYMBOL_ABI_LAYOUT))?;
    // SAFETY: as for the version function.
    let layout = unsafe { layout_fn() };
    // SAFETY: non-null layouts point to the image's static table, which stays
    // mapped while `library` is open.
    let table = unsafe { layout.as_ref() }.ok_or_else(|| LoaderError::NullLayout {
        bundle: bundle.clone(),
    })?;
    if table.abi_version != HOLDFAST_ABI_VERSION {
        return Err(LoaderError::AbiVersionMismatch {
            bundle,
            expected: HOLDFAST_ABI_VERSION,
            found: table.abi_version,
        });
    }
    let expected_entries = ABI_LAYOUT_ENTRIES.len() as u32;
    if table.entry_count != expected_entries {
        return Err(LoaderError::LayoutTableMismatch {
            bundle,
            expected_entries,
            found_entries: table.entry_count,
        });
    }
    if table.entries.is_null() {
        return Err(LoaderError::NullLayout { bundle });
    }
    // SAFETY: the table declares `entry_count` (checked to be 16) entries at
    // a non-null address in the image's static memory.
    let entries = unsafe { std::slice::from_raw_parts(table.entries, ABI_LAYOUT_ENTRIES.len()) };
    for (index, (found, expected)) in entries.iter().zip(ABI_LAYOUT_ENTRIES.iter()).enumerate() {
        if (found.size, found.align) != (expected.size, expected.align) || found.type_id != expected.type_id {
            return Err(LoaderError::LayoutMismatch {
                bundle,
                type_name: LAYOUT_TYPE_NAMES[index],
                expected_size: expected.size,
                expected_align: expected.align,
                found_size: found.size,
                found_align: found.align,
            });
        }
    }
    // SAFETY: `PluginInitFn` is the ABI type of this symbol.
    let init = unsafe { exported::<PluginInitFn>(library, SYMBOL_PLUGIN_INIT) }
        .ok_or_else(|| missing(SYMBOL_PLUGIN_INIT))?;
    // SAFETY: `PluginFiniFn` is the ABI type of this symbol.
    let fini = unsafe { exported::<PluginFiniFn>(library, SYMBOL_PLUGIN_FINI) };
    Ok(EntryPoints { init, fini, layout })
}
