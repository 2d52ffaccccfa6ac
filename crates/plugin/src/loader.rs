//! Loaders: the [`BundleLoader`] protocol through which the runtime opens a
//! bundle ([`LoadContext`], [`LoadedModule`]), and the native loader, which
//! copies a bundle's library to a private shadow copy, opens it, runs the
//! ABI checks of spec §3.7 (version symbol, version, layout symbol, layout
//! table, every entry, init symbol) and only then calls the plugin's init.
//!
//! A fresh shadow copy per image (module `shadow`) defeats the platform
//! loaders' caching by path, so reopening a library replaced at the same
//! path runs the new code, and no later write to the bundle's file reaches
//! a running image.
//! A loader never decides when an image may be closed: it hands the opened
//! image to the runtime with [`LoadContext::adopt`] before calling anything
//! in it, and the runtime closes it after the grace period (spec §6.8). A
//! [`NativeModule`] closes its library and releases its shadow copy when
//! dropped.
//!
//! Trust: opening a native library runs its constructors with the host's
//! rights; the checks here catch mistakes (a plugin built against other
//! headers), not malice (spec §9).

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use holdfast_plugin_abi::{
    ABI_LAYOUT_ENTRIES, AbiError, AbiLayout, AbiLayoutFn, AbiVersionFn, BundleId, BundleInitContext,
    HOLDFAST_ABI_VERSION, HostApi, LAYOUT_TYPE_NAMES, LogLevel, PluginFiniFn, PluginInitFn,
    SYMBOL_ABI_LAYOUT, SYMBOL_ABI_VERSION, SYMBOL_PLUGIN_FINI, SYMBOL_PLUGIN_INIT, StringView,
};
use libloading::Library;

use crate::error::LoaderError;
use crate::manifest::ManifestData;
use crate::shadow::{ShadowCopy, ShadowPlace};
use crate::signature::{self, Sha256Digest};

/// The longest plugin message the host keeps (spec §3.3).
const MAX_PLUGIN_MESSAGE: usize = 4096;

/// Opens bundles of one kind (the manifest's `loader` names it).
///
/// `load` must hand whatever it opened to the runtime with
/// [`LoadContext::adopt`] before calling into it, then call the plugin's
/// init with [`LoadContext::host_api`] and [`LoadContext::init_context`].
/// Registrations made through that table are staged by the runtime and
/// validated after `load` returns.
pub trait BundleLoader: Send + Sync + 'static {
    /// The name manifests use to pick this loader.
    fn loader_name(&self) -> &'static str;

    /// Opens the bundle `manifest` describes and runs its init.
    ///
    /// # Errors
    /// Any [`LoaderError`]; the runtime still closes an adopted module
    /// (after the grace period), and returning `Ok` without adopting one is
    /// `NothingAdopted`.
    fn load(&self, manifest: &ManifestData, ctx: &mut LoadContext<'_>) -> Result<(), LoaderError>;
}

/// Something a loader opened: the runtime owns it from adoption on and drops
/// it only after every reader that could reach its code has moved on.
pub trait LoadedModule: Send + 'static {
    /// Called after the grace period, just before the module is dropped,
    /// with the bundle's host table (for a native module: runs
    /// `holdfast_plugin_fini` if the plugin exports it and init was called).
    fn before_close(&mut self, host: *const HostApi) {
        let _ = host;
    }
}

/// What the runtime gives a loader for one load or reload.
pub struct LoadContext<'a> {
    bundle_id: BundleId,
    bundle_dir: &'a Path,
    library_path: PathBuf,
    host: *const HostApi,
    init_context: BundleInitContext,
    /// Backs `init_context.bundle_path`.
    _bundle_path_text: Box<str>,
    /// The signed SHA-256 of the library, when the runtime verified the
    /// bundle's signature under `SignaturePolicy::Require`.
    verified_digest: Option<Sha256Digest>,
    adopted: Vec<Box<dyn LoadedModule>>,
    /// When the first module was adopted (the end of "open" in the stats).
    adopted_at: Option<std::time::Instant>,
    logger: &'a (dyn Fn(LogLevel, &str) + Sync),
}

impl std::fmt::Debug for LoadContext<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadContext")
            .field("bundle_id", &self.bundle_id)
            .field("bundle_dir", &self.bundle_dir)
            .field("library_path", &self.library_path)
            .field("adopted", &self.adopted.len())
            .finish_non_exhaustive()
    }
}

impl<'a> LoadContext<'a> {
    /// A context for loading `manifest`'s bundle with the bundle's `host`
    /// table.
    pub(crate) fn new(
        manifest: &'a ManifestData,
        verified_digest: Option<Sha256Digest>,
        host: *const HostApi,
        logger: &'a (dyn Fn(LogLevel, &str) + Sync),
    ) -> Self {
        let text: Box<str> = manifest.dir.to_string_lossy().into();
        let init_context = BundleInitContext {
            bundle_id: manifest.id.id(),
            bundle_path: StringView::borrowed(&text),
        };
        Self {
            bundle_id: manifest.id,
            bundle_dir: &manifest.dir,
            library_path: manifest.library_path(),
            host,
            init_context,
            _bundle_path_text: text,
            verified_digest,
            adopted: Vec::new(),
            adopted_at: None,
            logger,
        }
    }

    /// Checks that `digest`, the SHA-256 of the bytes the loader is about to
    /// open or compile, is the library the bundle's signature covers. The
    /// runtime verifies the signature before calling the loader; this closes
    /// the window between that check and the loader's own read, in which the
    /// file could be replaced. Does nothing when no signature was required.
    ///
    /// # Errors
    /// `ChangedAfterVerification` when the bytes are not the signed ones.
    pub fn check_verified_digest(&self, digest: Sha256Digest) -> Result<(), LoaderError> {
        match self.verified_digest {
            Some(signed) if digest != signed => Err(self.changed_after_verification()),
            _ => Ok(()),
        }
    }

    /// [`LoadContext::check_verified_digest`] for the file at `path` (a
    /// loader's private copy), read once.
    ///
    /// # Errors
    /// `ChangedAfterVerification`, or `ShadowCopy` when it cannot be read.
    pub fn check_verified_file(&self, path: &Path) -> Result<(), LoaderError> {
        if self.verified_digest.is_none() {
            return Ok(());
        }
        let digest = signature::sha256_of_file(path).map_err(|error| LoaderError::ShadowCopy {
            path: self.library_path.clone(),
            message: error.to_string(),
        })?;
        self.check_verified_digest(digest)
    }

    fn changed_after_verification(&self) -> LoaderError {
        LoaderError::ChangedAfterVerification {
            path: self.library_path.clone(),
        }
    }

    /// The bundle being loaded.
    pub fn bundle_id(&self) -> BundleId {
        self.bundle_id
    }

    /// The bundle directory (not a shadow copy).
    pub fn bundle_dir(&self) -> &Path {
        self.bundle_dir
    }

    /// The library file, absolute, inside the bundle.
    pub fn library_path(&self) -> &Path {
        &self.library_path
    }

    /// The bundle's host table, to pass to init.
    pub fn host_api(&self) -> *const HostApi {
        self.host
    }

    /// The init context to pass to init; valid while this context lives.
    pub fn init_context(&self) -> *const BundleInitContext {
        &self.init_context
    }

    /// Hands an opened module to the runtime, which closes it after the
    /// grace period whatever `load` returns. Adopting twice keeps both
    /// (closed in adoption order).
    pub fn adopt(&mut self, module: Box<dyn LoadedModule>) {
        self.adopted_at.get_or_insert_with(std::time::Instant::now);
        self.adopted.push(module);
    }

    /// When the loader first adopted a module.
    pub(crate) fn adopted_at(&self) -> Option<std::time::Instant> {
        self.adopted_at
    }

    /// Logs through the runtime's logger.
    pub fn log(&self, level: LogLevel, message: &str) {
        (self.logger)(level, message);
    }

    /// Takes the adopted modules out, for the runtime.
    pub(crate) fn take_adopted(&mut self) -> Vec<Box<dyn LoadedModule>> {
        std::mem::take(&mut self.adopted)
    }
}

/// Copies a message a plugin returned: at most 4 KiB, decoded lossily, and
/// empty when absent.
///
/// # Safety
/// The view must be readable (the ABI says it is until the host's next call
/// into the plugin).
pub(crate) unsafe fn plugin_message(view: StringView) -> String {
    // Only the kept prefix is touched, whatever length the plugin claims.
    let capped = StringView {
        ptr: view.ptr,
        len: view.len.min(MAX_PLUGIN_MESSAGE),
    };
    // SAFETY: the caller guarantees the view is readable; a prefix of it is.
    let bytes = unsafe { capped.as_bytes() }.unwrap_or_default();
    String::from_utf8_lossy(bytes).into_owned()
}

/// Opens native bundles, through shadow copies by default.
#[derive(Clone, Debug)]
pub struct NativeLoader {
    shadow: Option<ShadowPlace>,
    /// Where a loader without shadow copies copies a library whose
    /// signature is required: opened in place, the file could change
    /// between the check and the open. Made on first use.
    signed_copies: Arc<OnceLock<ShadowPlace>>,
}

impl Default for NativeLoader {
    fn default() -> Self {
        Self::new()
    }
}

/// An opened library and its shadow copy; dropping it closes the one and
/// then releases the other.
#[derive(Debug)]
struct OpenImage {
    library: Option<Library>,
    shadow: Option<ShadowCopy>,
}

impl Drop for OpenImage {
    fn drop(&mut self) {
        // Close before releasing: some platforms refuse to delete a mapped
        // file, and a memory file is rewritten only once nothing maps it.
        drop(self.library.take());
        if let Some(shadow) = self.shadow.take() {
            shadow.release();
        }
    }
}

/// The entry points the ABI checks found.
struct EntryPoints {
    init: PluginInitFn,
    fini: Option<PluginFiniFn>,
    layout: *const AbiLayout,
}

/// An opened, checked image. Dropping it closes the library and releases its
/// shadow copy: the runtime drops it only after the grace period.
#[derive(Debug)]
pub struct NativeModule {
    bundle: String,
    image: OpenImage,
    init: PluginInitFn,
    fini: Option<PluginFiniFn>,
    layout: *const AbiLayout,
    /// Fini pairs with init: it runs only if init was called.
    init_called: bool,
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

    /// The shadow copy the image was opened from, if shadow copies are on:
    /// a file in the shadow directory, or `/proc/self/fd/N` for a memory
    /// file (valid while the module lives).
    pub fn shadow_path(&self) -> Option<&Path> {
        self.image.shadow.as_ref().map(ShadowCopy::path)
    }
}

impl LoadedModule for NativeModule {
    #[expect(
        clippy::not_unsafe_ptr_arg_deref,
        reason = "the trait's contract: the runtime passes the bundle's own live table"
    )]
    fn before_close(&mut self, host: *const HostApi) {
        if let (Some(fini), true) = (self.fini, self.init_called) {
            // SAFETY: the image is still open (it closes when `self` drops),
            // `fini` has the ABI's type, and `host` is the bundle's table.
            unsafe { fini(host) };
        }
    }
}

/// An image that failed the ABI checks: nothing of it was called but the
/// version and layout functions, so closing it runs no fini.
impl LoadedModule for OpenImage {}

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
    /// A loader whose shadow copies are private to this process: on Linux,
    /// memory files reachable only through its descriptors (nothing on the
    /// filesystem; the memory of closed images is reused); elsewhere, or
    /// where memory files are unavailable, [`NativeLoader::with_private_shadow_dir`].
    pub fn new() -> Self {
        Self {
            shadow: Some(ShadowPlace::private()),
            signed_copies: Arc::default(),
        }
    }

    /// A loader whose shadow copies go to a fresh private directory
    /// `<temp>/holdfast-shadow-<random>` (made on the first load with mode
    /// 0700, its owner and mode checked, removed when the loader and its
    /// images are gone).
    pub fn with_private_shadow_dir() -> Self {
        Self {
            shadow: Some(ShadowPlace::private_dir()),
            signed_copies: Arc::default(),
        }
    }

    /// A loader with shadow copies in `dir`, or none (`None`: the original
    /// file is opened, and reloading a path whose previous image is still
    /// open reuses that image; except that a library whose signature is
    /// required is still copied, privately as by [`NativeLoader::new`], so
    /// that what was checked is what opens). A missing `dir` is created
    /// with mode 0700; an existing one is used as it is, so it must not be
    /// writable by anyone the host does not trust.
    pub fn with_shadow_dir(dir: Option<PathBuf>) -> Self {
        Self {
            shadow: dir.map(ShadowPlace::At),
            signed_copies: Arc::default(),
        }
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
        let image = self.open_image(manifest, None)?;
        let entry = check_abi(&manifest.name, image.library())?;
        Ok(NativeModule::new(&manifest.name, image, entry))
    }

    /// Makes the shadow copy, checks it against a required signature
    /// (`ctx`), and opens it (spec §6.3 steps 1–2).
    fn open_image(
        &self,
        manifest: &ManifestData,
        ctx: Option<&LoadContext<'_>>,
    ) -> Result<OpenImage, LoaderError> {
        let original = manifest.library_path();
        let required = ctx.filter(|ctx| ctx.verified_digest.is_some());
        let place = match (&self.shadow, required) {
            (Some(place), _) => Some(place),
            (None, Some(_)) => Some(self.signed_copies.get_or_init(ShadowPlace::private)),
            (None, None) => None,
        };
        let shadow = match place {
            Some(place) => Some(place.copy(&original, manifest.id.id())?),
            None => None,
        };
        let path = shadow.as_ref().map_or(original.as_path(), ShadowCopy::path);
        // The copy is what gets opened, so checking it leaves no window
        // (without a copy, the file could still change after this).
        if let Some(refused) = ctx.and_then(|ctx| check_what_opens(ctx, shadow.as_ref(), path).err()) {
            if let Some(shadow) = shadow {
                shadow.release();
            }
            return Err(refused);
        }
        match open_library(path) {
            // From here the image owns the library and the shadow copy:
            // dropping it closes the one and releases the other.
            Ok(library) => Ok(OpenImage {
                library: Some(library),
                shadow,
            }),
            Err(message) => {
                if let Some(shadow) = shadow {
                    shadow.release();
                }
                // Only on this failure path, so a good load reads nothing
                // more: a WebAssembly module is the other loader's file.
                if is_wasm_file(&original) {
                    return Err(LoaderError::WrongLoader {
                        path: original,
                        loader: "native",
                        found: "a WebAssembly module",
                    });
                }
                Err(LoaderError::Open {
                    path: original,
                    message,
                })
            }
        }
    }
}

impl BundleLoader for NativeLoader {
    fn loader_name(&self) -> &'static str {
        "native"
    }

    /// Shadow copy, open, adopt, the checks of spec §3.7, then init.
    fn load(&self, manifest: &ManifestData, ctx: &mut LoadContext<'_>) -> Result<(), LoaderError> {
        let image = self.open_image(manifest, Some(ctx))?;
        let entry = match check_abi(&manifest.name, image.library()) {
            Ok(entry) => entry,
            Err(error) => {
                ctx.adopt(Box::new(image));
                return Err(error);
            }
        };
        let mut module = NativeModule::new(&manifest.name, image, entry);
        let init = module.init;
        module.init_called = true;
        ctx.adopt(Box::new(module));
        // SAFETY: the image passed the ABI checks and stays open (the runtime
        // owns it now); the table and context outlive the call.
        let outcome: AbiError = unsafe { init(ctx.host_api(), ctx.init_context()) };
        if outcome.is_ok() {
            return Ok(());
        }
        Err(LoaderError::InitFailed {
            bundle: manifest.name.clone(),
            code: outcome.code,
            // SAFETY: the message stays valid until the next call into the
            // plugin, and there is none before this copy.
            message: unsafe { plugin_message(outcome.message) },
        })
    }
}

impl OpenImage {
    fn library(&self) -> &Library {
        self.library
            .as_ref()
            .expect("an open image holds its library until dropped")
    }
}

impl NativeModule {
    fn new(bundle: &str, image: OpenImage, entry: EntryPoints) -> Self {
        Self {
            bundle: bundle.to_owned(),
            image,
            init: entry.init,
            fini: entry.fini,
            layout: entry.layout,
            init_called: false,
        }
    }
}

/// Checks the bytes the platform loader will open against a required
/// signature: the shadow copy's own bytes when there is one, else the file
/// at `path`.
fn check_what_opens(
    ctx: &LoadContext<'_>,
    shadow: Option<&ShadowCopy>,
    path: &Path,
) -> Result<(), LoaderError> {
    match shadow {
        Some(copy) if ctx.verified_digest.is_some() => {
            let digest = copy.digest().map_err(|error| LoaderError::ShadowCopy {
                path: ctx.library_path.clone(),
                message: error.to_string(),
            })?;
            ctx.check_verified_digest(digest)
        }
        Some(_) => Ok(()),
        None => ctx.check_verified_file(path),
    }
}

/// Whether `path` starts with the WebAssembly binary magic.
fn is_wasm_file(path: &Path) -> bool {
    use std::io::Read;
    let mut magic = [0u8; 4];
    std::fs::File::open(path)
        .and_then(|mut file| file.read_exact(&mut magic))
        .is_ok_and(|()| &magic == b"\0asm")
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
    // SAFETY: a layout function returns null or its image's static table,
    // which stays mapped while `library` is open (spec §3.7).
    unsafe { check_layout_table(&bundle, layout) }?;
    // SAFETY: `PluginInitFn` is the ABI type of this symbol.
    let init = unsafe { exported::<PluginInitFn>(library, SYMBOL_PLUGIN_INIT) }
        .ok_or_else(|| missing(SYMBOL_PLUGIN_INIT))?;
    // SAFETY: `PluginFiniFn` is the ABI type of this symbol.
    let fini = unsafe { exported::<PluginFiniFn>(library, SYMBOL_PLUGIN_FINI) };
    Ok(EntryPoints { init, fini, layout })
}

/// The layout checks of spec §3.7: a non-null, aligned table of this ABI
/// version with 16 entries at a non-null, aligned address, each equal to the
/// host's. A misaligned pointer is `MisalignedPointer`, never read.
///
/// # Safety
/// A non-null, aligned `layout` must be readable as an `AbiLayout`, and its
/// non-null, aligned `entries` readable for `entry_count` entries.
unsafe fn check_layout_table(bundle: &str, layout: *const AbiLayout) -> Result<(), LoaderError> {
    let bundle = bundle.to_owned();
    if !layout.is_aligned() {
        return Err(LoaderError::MisalignedPointer {
            bundle,
            what: "layout table",
        });
    }
    // SAFETY: aligned (checked above); non-null layouts are readable (caller).
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
    if !table.entries.is_aligned() {
        return Err(LoaderError::MisalignedPointer {
            bundle,
            what: "layout entries",
        });
    }
    // SAFETY: the table declares `entry_count` (checked to be 16) entries at
    // a non-null, aligned address the caller guarantees readable.
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
    Ok(())
}

#[cfg(test)]
mod tests {
    use holdfast_plugin_abi::LayoutEntry;

    use super::*;

    fn table(entries: *const LayoutEntry) -> AbiLayout {
        AbiLayout {
            abi_version: HOLDFAST_ABI_VERSION,
            entry_count: ABI_LAYOUT_ENTRIES.len() as u32,
            entries,
        }
    }

    #[test]
    fn misaligned_layout_pointers_are_typed_errors_and_never_read() {
        let good = table(ABI_LAYOUT_ENTRIES.as_ptr());
        // SAFETY: `good` and the host's own entries are readable.
        assert_eq!(unsafe { check_layout_table("b", &good) }, Ok(()));

        // One byte past an aligned buffer: misaligned for `AbiLayout`.
        let buffer = [0u64; 8];
        let misaligned = buffer.as_ptr().cast::<u8>().wrapping_add(1).cast::<AbiLayout>();
        // SAFETY: the pointer is misaligned, so it is refused unread.
        let refused = unsafe { check_layout_table("b", misaligned) };
        assert_eq!(
            refused,
            Err(LoaderError::MisalignedPointer {
                bundle: "b".into(),
                what: "layout table",
            })
        );

        let entries = buffer.as_ptr().cast::<u8>().wrapping_add(1).cast::<LayoutEntry>();
        let bad_entries = table(entries);
        // SAFETY: the table is readable; its entries pointer is misaligned,
        // so it is refused unread.
        let refused = unsafe { check_layout_table("b", &bad_entries) };
        assert_eq!(
            refused,
            Err(LoaderError::MisalignedPointer {
                bundle: "b".into(),
                what: "layout entries",
            })
        );
    }
}
