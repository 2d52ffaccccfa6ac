//! Shadow copies: the private copy of a bundle's library that the native
//! loader opens instead of the bundle's own file. A copy per image is what
//! makes a library rewritten in place or replaced at the same path run its
//! new code (the platform loader caches by path and file identity), and
//! what keeps a later write to the bundle's file from changing or crashing
//! an image that is running (an image maps its file: a write into that file
//! would land in its code).
//!
//! Three places a copy can live ([`ShadowPlace`]):
//! - **memory** (Linux, the default): an anonymous memory file
//!   (`memfd_create`) reachable only through this process's descriptor,
//!   opened as `/proc/self/fd/N`. Nothing touches the filesystem, so there
//!   is no directory another user could plant first. The memory files of
//!   closed images are kept in a small pool and rewritten for later images:
//!   allocating fresh pages is most of what a copy costs, and reusing them
//!   makes a reload's copy about a `memcpy`. A reused file is never made
//!   shorter (a page past its end would be SIGBUS for anything still
//!   mapping it, such as a backtrace symbolizer's cache); the platform
//!   loader ignores bytes after the library.
//! - **a private directory** (elsewhere, or when memory files are not
//!   available): a fresh `tempfile` directory, mode 0700, owner checked.
//! - **a directory the host chose**, created private when missing.
//!
//! This module owns where copies go and how they are released. It must never
//! open a library (the loader does), and never rewrite a memory file while
//! an image could still run from it: a file goes back to the pool only once
//! the platform loader confirms the image opened from it is gone. (A reader
//! that mapped the file itself, such as a symbolizer, may later see a newer
//! library's bytes there, never a missing page.)

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use crate::error::LoaderError;

/// Distinguishes shadow files across every loader of the process.
static SHADOW_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Where a loader puts its shadow copies.
#[derive(Clone, Debug)]
pub(crate) enum ShadowPlace {
    /// Memory files, recycled through a pool shared by the loader's clones.
    #[cfg(target_os = "linux")]
    Memory(Arc<memory::MemoryPool>),
    /// A fresh private directory, made on first use and shared by the
    /// loader's clones.
    PrivateDir(Arc<PrivateShadowDir>),
    /// A directory the caller chose.
    At(PathBuf),
}

impl ShadowPlace {
    /// The best private place this platform offers: memory files on Linux
    /// when `/proc/self/fd` can name them, else a private directory.
    pub(crate) fn private() -> Self {
        #[cfg(target_os = "linux")]
        if let Some(pool) = memory::MemoryPool::new() {
            return Self::Memory(Arc::new(pool));
        }
        Self::private_dir()
    }

    /// A fresh private directory, made on first use.
    pub(crate) fn private_dir() -> Self {
        Self::PrivateDir(Arc::default())
    }

    /// Copies `original` (the library of bundle `bundle_id`) to a new shadow
    /// copy.
    ///
    /// # Errors
    /// `ShadowCopy` when the copy cannot be made; `ShadowDirNotPrivate` when
    /// the private directory fails its check.
    pub(crate) fn copy(&self, original: &Path, bundle_id: u64) -> Result<ShadowCopy, LoaderError> {
        let failed = |error: std::io::Error| LoaderError::ShadowCopy {
            path: original.to_path_buf(),
            message: error.to_string(),
        };
        match self {
            #[cfg(target_os = "linux")]
            Self::Memory(pool) => memory::MemoryPool::copy(pool, original).map_err(failed),
            Self::PrivateDir(private) => {
                let dir = private.get(original)?;
                // Never re-created if it vanished: its name is known by then.
                let path = copy_into_dir(original, dir.path(), bundle_id, false).map_err(failed)?;
                Ok(ShadowCopy::File {
                    path,
                    _dir: Some(dir),
                })
            }
            Self::At(dir) => {
                let path = copy_into_dir(original, dir, bundle_id, true).map_err(failed)?;
                Ok(ShadowCopy::File { path, _dir: None })
            }
        }
    }
}

/// One image's shadow copy. The loader opens [`ShadowCopy::path`], and calls
/// [`ShadowCopy::release`] once the library opened from it is closed.
#[derive(Debug)]
pub(crate) enum ShadowCopy {
    /// A file in a directory; deleted on release.
    File {
        path: PathBuf,
        /// Keeps the private shadow directory until the file is deleted.
        _dir: Option<Arc<tempfile::TempDir>>,
    },
    /// A memory file; back to its pool on release.
    #[cfg(target_os = "linux")]
    Memory(memory::MemoryCopy),
}

impl ShadowCopy {
    /// The path the platform loader opens.
    pub(crate) fn path(&self) -> &Path {
        match self {
            Self::File { path, .. } => path,
            #[cfg(target_os = "linux")]
            Self::Memory(copy) => copy.path(),
        }
    }

    /// The SHA-256 of the library's bytes in the copy: exactly the bytes
    /// copied (a reused memory file may be longer, its tail left from an
    /// earlier, larger library that the platform loader ignores).
    pub(crate) fn digest(&self) -> std::io::Result<crate::signature::Sha256Digest> {
        match self {
            Self::File { path, .. } => crate::signature::sha256_of_file(path),
            #[cfg(target_os = "linux")]
            Self::Memory(copy) => Ok(copy.digest()),
        }
    }

    /// Lets the copy go. Call only after the library opened from it was
    /// closed (some platforms refuse to delete a mapped file, and a memory
    /// file must not be rewritten while mapped).
    pub(crate) fn release(self) {
        match self {
            Self::File { path, _dir } => {
                let _ = std::fs::remove_file(path);
            }
            #[cfg(target_os = "linux")]
            Self::Memory(copy) => copy.release(),
        }
    }
}

/// The default shadow directory where memory files are not available: made
/// by `tempfile` under the system's temporary directory with an
/// unpredictable name and mode 0700, then checked (owner and mode) before
/// anything is copied into it, so no other user can have made it first or
/// write into it. It is removed once the loader and every image copied into
/// it are gone (each copy holds the `Arc`).
#[derive(Debug, Default)]
pub(crate) struct PrivateShadowDir {
    dir: Mutex<Option<Arc<tempfile::TempDir>>>,
}

impl PrivateShadowDir {
    /// The directory, made and checked on the first call.
    fn get(&self, library: &Path) -> Result<Arc<tempfile::TempDir>, LoaderError> {
        let mut slot = self.dir.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(dir) = &*slot {
            return Ok(Arc::clone(dir));
        }
        let mut builder = tempfile::Builder::new();
        builder.prefix("holdfast-shadow-");
        #[cfg(unix)]
        builder.permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700));
        let dir = builder.tempdir().map_err(|error| LoaderError::ShadowCopy {
            path: library.to_path_buf(),
            message: error.to_string(),
        })?;
        // Dropping a refused directory removes it.
        check_private_dir(dir.path())?;
        let dir = Arc::new(dir);
        *slot = Some(Arc::clone(&dir));
        Ok(dir)
    }
}

/// Refuses `dir` unless it is a directory (not a symlink), owned by this
/// process's effective user, with mode exactly 0700.
#[cfg(unix)]
fn check_private_dir(dir: &Path) -> Result<(), LoaderError> {
    use std::os::unix::fs::MetadataExt;
    let refuse = |reason: String| LoaderError::ShadowDirNotPrivate {
        path: dir.to_path_buf(),
        reason,
    };
    let metadata = std::fs::symlink_metadata(dir).map_err(|error| refuse(error.to_string()))?;
    if !metadata.file_type().is_dir() {
        return Err(refuse("not a directory".into()));
    }
    // SAFETY: `geteuid` takes nothing, cannot fail and touches no memory.
    let uid = unsafe { libc::geteuid() };
    if metadata.uid() != uid {
        return Err(refuse(format!("owned by uid {}, not {uid}", metadata.uid())));
    }
    let mode = metadata.mode() & 0o7777;
    if mode != 0o700 {
        return Err(refuse(format!("mode {mode:o}, not 700")));
    }
    Ok(())
}

/// No owner or mode bits to check off Unix: the system's temporary
/// directory is per user there.
#[cfg(not(unix))]
fn check_private_dir(_dir: &Path) -> Result<(), LoaderError> {
    Ok(())
}

/// Copies the library to a new file in `dir` (made, private, when missing
/// and `create_dir`).
fn copy_into_dir(original: &Path, dir: &Path, bundle_id: u64, create_dir: bool) -> std::io::Result<PathBuf> {
    let extension = original
        .extension()
        .and_then(|extension| extension.to_str())
        .unwrap_or("lib");
    let counter = SHADOW_COUNTER.fetch_add(1, Ordering::Relaxed);
    let shadow = dir.join(format!("{bundle_id:016x}-{counter}.{extension}"));
    // The directory exists after the first copy; make it only when missing
    // (a directory created here is private to the user).
    match copy_to_new_file(original, &shadow) {
        Err(error) if create_dir && error.kind() == std::io::ErrorKind::NotFound && original.is_file() => {
            create_private_dir(dir)?;
            copy_to_new_file(original, &shadow)?;
        }
        copied => copied?,
    }
    Ok(shadow)
}

/// Copies `from` to `to`, which must not exist: `create_new` (`O_EXCL`)
/// refuses an existing file or a symlink planted at `to` instead of
/// following it. Only a regular file is copied, and only the length it had
/// when opened (a library growing while it is copied, or `/dev/zero`
/// swapped in for it, cannot fill the disk). A partial copy is deleted.
fn copy_to_new_file(from: &Path, to: &Path) -> std::io::Result<()> {
    let source = crate::signature::open_regular(from)?;
    let len = source.metadata()?.len();
    let mut source = source.take(len);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o700);
    let mut target = options.open(to)?;
    let copied = std::io::copy(&mut source, &mut target);
    if copied.is_err() {
        drop(target);
        let _ = std::fs::remove_file(to);
    }
    copied.map(drop)
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

/// Memory files and their pool (Linux).
#[cfg(target_os = "linux")]
mod memory {
    use std::ffi::CString;
    use std::fs::File;
    use std::io::Read;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    use std::os::unix::ffi::OsStrExt;
    use std::path::{Path, PathBuf};
    use std::sync::{Arc, Mutex, PoisonError};

    /// At most this many idle memory files are kept...
    const MAX_IDLE_FILES: usize = 8;
    /// ...holding at most this many bytes together; beyond, a released file
    /// is closed and its memory returned to the system.
    const MAX_IDLE_BYTES: u64 = 64 << 20;

    /// Memory files of images the platform loader kept after they were
    /// closed (a library linked "nodelete", or one whose thread-local
    /// destructors are still registered), with their `/proc/self/fd/N`
    /// paths. Their descriptors stay open until the image is really gone,
    /// in any pool: the platform loader knows an image by the path it was
    /// opened from, and would hand the old image back for a new file that
    /// got the same descriptor number.
    static STILL_LOADED: Mutex<Vec<(File, PathBuf)>> = Mutex::new(Vec::new());

    /// Memory files whose images are closed, ready to be rewritten.
    #[derive(Debug)]
    pub(crate) struct MemoryPool {
        idle: Mutex<Vec<MemoryFile>>,
    }

    /// A memory file and a writable shared mapping of all of it, kept for
    /// the file's life: a copy into a recycled file is then one `read` into
    /// pages already allocated and already mapped (a fresh mapping per copy
    /// took a page fault per page, and a copy through the descriptor a
    /// kernel round trip per chunk).
    #[derive(Debug)]
    struct MemoryFile {
        file: File,
        /// `None` while the file is empty (nothing to map).
        mapping: Option<memmap2::MmapMut>,
    }

    /// One image's memory file.
    #[derive(Debug)]
    pub(crate) struct MemoryCopy {
        memory: MemoryFile,
        /// How many bytes at the start of the file are the library.
        len: usize,
        /// `/proc/self/fd/N` for the file.
        path: PathBuf,
        pool: Arc<MemoryPool>,
    }

    impl MemoryFile {
        fn new() -> std::io::Result<Self> {
            Ok(Self {
                file: create_memory_file()?,
                mapping: None,
            })
        }

        /// The file's length (all of it is mapped).
        fn len(&self) -> u64 {
            self.mapping.as_ref().map_or(0, |mapping| mapping.len() as u64)
        }

        /// The first `len` bytes of the file, writable; the file grows to
        /// hold them, and is never made shorter: something other than the
        /// platform loader (a backtrace symbolizer caches mappings of the
        /// libraries it has read) may still map an earlier image's file,
        /// and a page past the end of a file is SIGBUS. The platform loader
        /// reads the library's own headers and ignores bytes after it.
        ///
        /// After an error the length no longer follows the mapping: the
        /// file must be dropped, never pooled (`MemoryPool::copy_from` drops it).
        fn first_bytes(&mut self, len: usize) -> std::io::Result<&mut [u8]> {
            if len == 0 {
                return Ok(&mut []);
            }
            if self.len() < len as u64 {
                self.mapping = None;
                self.file.set_len(len as u64)?;
                // SAFETY: memmap2 asks that nothing else change the file
                // while the mapping lives. The file is a memory file this
                // process made, reachable only through its descriptor; the
                // pool writes it only through this mapping and only while
                // no image runs from it, and the platform loader maps it
                // private (its own writes are copied, never written back).
                self.mapping = Some(unsafe { memmap2::MmapMut::map_mut(&self.file) }?);
            }
            let mapping = self
                .mapping
                .as_mut()
                .expect("mapped above, or earlier at this length or more");
            Ok(&mut mapping[..len])
        }
    }

    impl MemoryPool {
        /// A pool, if this process can make memory files and name them
        /// through `/proc/self/fd` (a container without `/proc`, or a
        /// seccomp policy refusing `memfd_create`, cannot).
        pub(crate) fn new() -> Option<Self> {
            if !Path::new("/proc/self/fd").is_dir() {
                return None;
            }
            let probe = MemoryFile::new().ok()?;
            Some(Self {
                idle: Mutex::new(vec![probe]),
            })
        }

        /// Copies `original` into an idle memory file (or a new one).
        pub(crate) fn copy(pool: &Arc<Self>, original: &Path) -> std::io::Result<super::ShadowCopy> {
            let source = crate::signature::open_regular(original)?;
            let len = usize::try_from(source.metadata()?.len())
                .map_err(|_| std::io::Error::new(std::io::ErrorKind::FileTooLarge, "larger than memory"))?;
            Self::copy_from(pool, source, len)
        }

        /// Copies the first `len` bytes of `source` (a library `len` bytes
        /// long when it was opened) into an idle memory file (or a new one).
        pub(super) fn copy_from(
            pool: &Arc<Self>,
            mut source: impl Read,
            len: usize,
        ) -> std::io::Result<super::ShadowCopy> {
            close_files_of_unloaded_images();
            let idle = pool.idle.lock().unwrap_or_else(PoisonError::into_inner).pop();
            let mut memory = match idle {
                Some(memory) => memory,
                None => MemoryFile::new()?,
            };
            // Written over from the start, so the pages an earlier image used
            // are reused, not freed and allocated again. A library that
            // shrinks while it is read fails the copy (`UnexpectedEof`); one
            // that grows is copied up to the length it had when opened.
            source.read_exact(memory.first_bytes(len)?)?;
            let path = PathBuf::from(format!("/proc/self/fd/{}", memory.file.as_raw_fd()));
            Ok(super::ShadowCopy::Memory(MemoryCopy {
                memory,
                len,
                path,
                pool: Arc::clone(pool),
            }))
        }

        /// How many memory files wait to be reused.
        #[cfg(test)]
        pub(crate) fn idle_count(&self) -> usize {
            self.idle.lock().unwrap_or_else(PoisonError::into_inner).len()
        }

        fn give_back(&self, memory: MemoryFile) {
            let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
            let held: u64 = idle.iter().map(MemoryFile::len).sum();
            if idle.len() < MAX_IDLE_FILES && held + memory.len() <= MAX_IDLE_BYTES {
                idle.push(memory);
            }
        }
    }

    impl MemoryCopy {
        pub(crate) fn path(&self) -> &Path {
            &self.path
        }

        /// The SHA-256 of the library's bytes, read from the kept mapping.
        pub(crate) fn digest(&self) -> crate::signature::Sha256Digest {
            use sha2::Digest;
            let library = self
                .memory
                .mapping
                .as_ref()
                .map_or(&[][..], |mapping| &mapping[..self.len]);
            sha2::Sha256::digest(library).into()
        }

        /// Back to the pool if the platform loader no longer holds an image
        /// of this file; otherwise kept open, never rewritten, until it
        /// does not (a library the loader keeps still maps the file's pages,
        /// and rewriting them would rewrite its code).
        pub(crate) fn release(self) {
            if is_still_loaded(&self.path) {
                STILL_LOADED
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push((self.memory.file, self.path));
                return;
            }
            self.pool.give_back(self.memory);
        }
    }

    /// Closes the kept files whose images the platform loader has let go.
    fn close_files_of_unloaded_images() {
        STILL_LOADED
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|(_, path)| is_still_loaded(path));
    }

    /// A new memory file, close-on-exec. The name only shows in
    /// `/proc/<pid>/maps` as `/memfd:holdfast-shadow (deleted)`.
    fn create_memory_file() -> std::io::Result<File> {
        let name = CString::new("holdfast-shadow").expect("no NUL in a literal");
        // SAFETY: `name` is a valid NUL-terminated string for the call; the
        // flags are defined for memfd_create.
        let fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `fd` was just returned by memfd_create and is owned by no
        // one else.
        Ok(File::from(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// Whether the platform loader still holds a library opened from
    /// `path`: `RTLD_NOLOAD` answers without loading anything.
    fn is_still_loaded(path: &Path) -> bool {
        let Ok(path) = CString::new(path.as_os_str().as_bytes()) else {
            return true;
        };
        // SAFETY: `path` is NUL-terminated; with RTLD_NOLOAD dlopen only
        // looks the library up (no constructor runs) and returns a handle
        // only if it is loaded.
        let handle = unsafe { libc::dlopen(path.as_ptr(), libc::RTLD_LAZY | libc::RTLD_NOLOAD) };
        if handle.is_null() {
            return false;
        }
        // SAFETY: the handle was just returned by dlopen; closing it drops
        // the reference the lookup took.
        unsafe { libc::dlclose(handle) };
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn only_a_private_directory_of_ours_passes_the_check() {
        use std::os::unix::fs::PermissionsExt;
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("dir");
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        assert_eq!(check_private_dir(&dir), Ok(()));

        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(
            check_private_dir(&dir),
            Err(LoaderError::ShadowDirNotPrivate {
                path: dir.clone(),
                reason: "mode 755, not 700".into(),
            })
        );

        let link = root.path().join("link");
        std::os::unix::fs::symlink(&dir, &link).unwrap();
        assert_eq!(
            check_private_dir(&link),
            Err(LoaderError::ShadowDirNotPrivate {
                path: link.clone(),
                reason: "not a directory".into(),
            })
        );
    }

    #[cfg(unix)]
    #[test]
    fn a_shadow_file_is_never_written_through_an_existing_path() {
        let root = tempfile::tempdir().unwrap();
        let source = root.path().join("source");
        std::fs::write(&source, b"library").unwrap();
        let victim = root.path().join("victim");
        std::fs::write(&victim, b"untouched").unwrap();
        let planted = root.path().join("planted");
        std::os::unix::fs::symlink(&victim, &planted).unwrap();
        let refused = copy_to_new_file(&source, &planted).unwrap_err();
        assert_eq!(refused.kind(), std::io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read(&victim).unwrap(), b"untouched");
        let refused = copy_to_new_file(&source, &victim).unwrap_err();
        assert_eq!(refused.kind(), std::io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read(&victim).unwrap(), b"untouched");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_memory_copy_is_reused_only_after_release_and_holds_the_new_bytes() {
        let root = tempfile::tempdir().unwrap();
        let long = root.path().join("long");
        let short = root.path().join("short");
        std::fs::write(&long, b"the first library, longer").unwrap();
        std::fs::write(&short, b"second").unwrap();
        let place = ShadowPlace::private();
        let ShadowPlace::Memory(pool) = &place else {
            panic!("memory files are available on Linux with /proc");
        };

        let first = place.copy(&long, 1).unwrap();
        // The source changes after the copy: the copy does not.
        std::fs::write(&long, b"rewritten in place").unwrap();
        assert_eq!(std::fs::read(first.path()).unwrap(), b"the first library, longer");
        // While the first copy is held, a second copy gets another file.
        let second = place.copy(&short, 1).unwrap();
        assert_ne!(first.path(), second.path());
        assert_eq!(std::fs::read(second.path()).unwrap(), b"second");

        let first_path = first.path().to_path_buf();
        first.release();
        assert_eq!(pool.idle_count(), 1);
        // The released file is rewritten from the start and never made
        // shorter: the tail of the longer library stays after the new one.
        let third = place.copy(&short, 1).unwrap();
        assert_eq!(third.path(), first_path);
        assert_eq!(std::fs::read(third.path()).unwrap(), b"secondrst library, longer");
        assert_eq!(pool.idle_count(), 0);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_library_that_shrinks_while_it_is_copied_fails_the_copy_and_its_file_is_not_pooled() {
        let place = ShadowPlace::private();
        let ShadowPlace::Memory(pool) = &place else {
            panic!("memory files are available on Linux with /proc");
        };
        assert_eq!(pool.idle_count(), 1, "a new pool holds the file it probed with");
        // 10 bytes were there when the library was opened; 6 are left.
        let shrunk: &[u8] = b"6bytes";
        let Err(refused) = memory::MemoryPool::copy_from(pool, shrunk, 10) else {
            panic!("a copy short of the opened length must fail");
        };
        assert_eq!(refused.kind(), std::io::ErrorKind::UnexpectedEof);
        // The file taken for the copy holds a partial library: dropped, so
        // the pool has one file fewer, never the half-written one.
        assert_eq!(pool.idle_count(), 0);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_recycled_memory_file_grows_and_is_mapped_again_for_a_longer_library() {
        let root = tempfile::tempdir().unwrap();
        let short = root.path().join("short");
        let long = root.path().join("long");
        std::fs::write(&short, b"v1").unwrap();
        // Longer than a page, so the grown file needs a mapping of its own.
        let long_bytes: Vec<u8> = (0..10_000u32).map(|index| (index % 251) as u8).collect();
        std::fs::write(&long, &long_bytes).unwrap();
        let place = ShadowPlace::private();

        let first = place.copy(&short, 1).unwrap();
        let path = first.path().to_path_buf();
        first.release();
        let grown = place.copy(&long, 1).unwrap();
        assert_eq!(grown.path(), path, "the released file is the one reused");
        assert_eq!(std::fs::read(grown.path()).unwrap(), long_bytes);
        grown.release();
        // Back to the short library: written over the start, the rest kept.
        let again = place.copy(&short, 1).unwrap();
        let mut expected = long_bytes.clone();
        expected[..2].copy_from_slice(b"v1");
        assert_eq!(std::fs::read(again.path()).unwrap(), expected);
        // What a signature is checked against is the library alone, not
        // the longer file's tail.
        use sha2::Digest;
        let short_digest: [u8; 32] = sha2::Sha256::digest(b"v1").into();
        assert_eq!(again.digest().unwrap(), short_digest);
    }
}
