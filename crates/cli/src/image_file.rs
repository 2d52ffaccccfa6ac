//! A stable-memory image file, read-only, through positioned reads.
//!
//! [`ImageFile`] implements ic-stable-structures' `Memory` over a file opened
//! read-only, so holdfast-memory's own recovery and diagnostics run on it
//! unchanged while reading only the pages they ask for (a multi-GiB image
//! costs a few dozen KiB of reads). It never writes: a write or grow request
//! — which recovery never makes — is recorded as an error, as is any I/O
//! failure, and the caller turns the record into a typed error instead of a
//! panic. Its size is the whole pages of the file; a trailing partial page
//! is ignored (and reported by `inspect`).

use std::cell::{Cell, RefCell};
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use holdfast_memory::stable_structures::Memory;

use crate::error::CliError;

const PAGE: u64 = 65536;

/// A read-only stable-memory image. Cheap to clone (shared handle).
#[derive(Clone)]
pub struct ImageFile {
    inner: Rc<Inner>,
}

struct Inner {
    path: PathBuf,
    file: File,
    len: u64,
    failure: RefCell<Option<ImageFailure>>,
    bytes_read: Cell<u64>,
}

/// What went wrong underneath a `Memory` call that cannot return an error.
#[derive(Debug)]
enum ImageFailure {
    Read {
        offset: u64,
        len: usize,
        source: io::Error,
    },
    WriteAttempted {
        offset: u64,
    },
}

impl ImageFile {
    /// Opens `path` read-only.
    ///
    /// # Errors
    /// [`CliError::Open`] when the file cannot be opened or is not a file.
    pub fn open(path: &Path) -> Result<Self, CliError> {
        let open_error = |source| CliError::Open {
            path: path.to_owned(),
            source,
        };
        let file = File::open(path).map_err(open_error)?;
        let metadata = file.metadata().map_err(open_error)?;
        if !metadata.is_file() {
            return Err(open_error(io::Error::other("not a regular file")));
        }
        Ok(Self {
            inner: Rc::new(Inner {
                path: path.to_owned(),
                file,
                len: metadata.len(),
                failure: RefCell::new(None),
                bytes_read: Cell::new(0),
            }),
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// The file's length in bytes.
    pub fn len_bytes(&self) -> u64 {
        self.inner.len
    }

    /// Bytes read so far (to prove that only the needed pages are read).
    pub fn bytes_read(&self) -> u64 {
        self.inner.bytes_read.get()
    }

    /// Fails if any read failed or a write was attempted since opening.
    ///
    /// # Errors
    /// [`CliError::Read`] or [`CliError::WriteAttempted`].
    pub fn check(&self) -> Result<(), CliError> {
        match self.inner.failure.borrow_mut().take() {
            None => Ok(()),
            Some(ImageFailure::Read { offset, len, source }) => Err(CliError::Read {
                path: self.inner.path.clone(),
                offset,
                len,
                source,
            }),
            Some(ImageFailure::WriteAttempted { offset }) => Err(CliError::WriteAttempted { offset }),
        }
    }

    fn record(&self, failure: ImageFailure) {
        let mut slot = self.inner.failure.borrow_mut();
        if slot.is_none() {
            *slot = Some(failure);
        }
    }
}

impl Memory for ImageFile {
    fn size(&self) -> u64 {
        self.inner.len / PAGE
    }

    fn grow(&self, _pages: u64) -> i64 {
        self.record(ImageFailure::WriteAttempted {
            offset: self.inner.len,
        });
        -1
    }

    fn read(&self, offset: u64, dst: &mut [u8]) {
        self.inner
            .bytes_read
            .set(self.inner.bytes_read.get() + dst.len() as u64);
        if let Err(source) = read_exact_at(&self.inner.file, dst, offset) {
            dst.fill(0);
            self.record(ImageFailure::Read {
                offset,
                len: dst.len(),
                source,
            });
        }
    }

    fn write(&self, offset: u64, _src: &[u8]) {
        self.record(ImageFailure::WriteAttempted { offset });
    }
}

#[cfg(unix)]
fn read_exact_at(file: &File, dst: &mut [u8], offset: u64) -> io::Result<()> {
    std::os::unix::fs::FileExt::read_exact_at(file, dst, offset)
}

#[cfg(windows)]
fn read_exact_at(file: &File, mut dst: &mut [u8], mut offset: u64) -> io::Result<()> {
    while !dst.is_empty() {
        match std::os::windows::fs::FileExt::seek_read(file, dst, offset)? {
            0 => return Err(io::ErrorKind::UnexpectedEof.into()),
            n => {
                dst = &mut dst[n..];
                offset += n as u64;
            }
        }
    }
    Ok(())
}
