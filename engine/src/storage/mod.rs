//! The seam between the log and the disk.
//!
//! The log does all file I/O through [`Storage`] and [`StorageFile`], chosen at
//! construction. [`dma::DmaStorage`] is the real thing (glommio `DmaFile`,
//! O_DIRECT, io_uring); [`sim::SimStorage`] is an in-memory disk that models
//! what a crash leaves behind and injects faults, for tests only.
//!
//! **Invariant:** writes are whole aligned blocks at aligned positions
//! (`alignment()`), as O_DIRECT requires; the log never writes unaligned.

#![allow(async_fn_in_trait, reason = "single-threaded executor: futures need not be Send")]

pub mod dma;
pub mod sim;

use std::io;
use std::path::Path;
use std::rc::Rc;

/// A buffer the storage can write from with direct I/O.
pub trait IoBuf: 'static {
    fn as_slice(&self) -> &[u8];
    fn as_mut_slice(&mut self) -> &mut [u8];
    /// Shrink the visible length (only ever down).
    fn trim(&mut self, len: usize);
}

/// A directory tree of files.
pub trait Storage: Clone + 'static {
    type File: StorageFile<Buf = Self::Buf>;
    type Buf: IoBuf;

    /// Called once per executor before any file in `data_dir` is opened.
    async fn init(&self, _data_dir: &Path) -> io::Result<()> {
        Ok(())
    }
    /// An aligned buffer of `len` bytes (a multiple of the alignment). Its
    /// contents are unspecified: the log zeroes the padding it writes.
    fn alloc_buf(&self, len: usize) -> Self::Buf;
    /// Create a new file; fails if it exists.
    async fn create_file(&self, path: &Path) -> io::Result<Self::File>;
    /// Open an existing file for reading and writing.
    async fn open_file(&self, path: &Path) -> io::Result<Self::File>;
    async fn remove_file(&self, path: &Path) -> io::Result<()>;
    async fn create_dir_all(&self, path: &Path) -> io::Result<()>;
    /// Make the directory's entries (creations, renames, removals) durable.
    async fn sync_dir(&self, path: &Path) -> io::Result<()>;
    /// Names of the entries of a directory; empty if it does not exist.
    async fn list_dir(&self, path: &Path) -> io::Result<Vec<String>>;
    /// A small file's bytes, or None if it does not exist.
    async fn read_small(&self, path: &Path) -> io::Result<Option<Vec<u8>>>;
    /// Replace a small file atomically and durably (temp file, fsync, rename, directory fsync).
    async fn write_small_durably(&self, path: &Path, bytes: &[u8]) -> io::Result<()>;
}

/// One open file.
pub trait StorageFile: 'static {
    type Buf: IoBuf;

    /// Required alignment of write positions and lengths.
    fn alignment(&self) -> u64;
    /// Write the whole buffer at `pos`.
    async fn write_at(&self, buf: Rc<Self::Buf>, pos: u64) -> io::Result<()>;
    /// Read up to `len` bytes at `pos` (fewer at end of file).
    async fn read_at(&self, pos: u64, len: usize) -> io::Result<Vec<u8>>;
    /// fdatasync: everything written so far survives power loss once this returns Ok.
    async fn sync_data(&self) -> io::Result<()>;
    async fn truncate(&self, len: u64) -> io::Result<()>;
    /// Reserve space up to `len` without changing the file size.
    async fn preallocate(&self, len: u64) -> io::Result<()>;
    async fn size(&self) -> io::Result<u64>;
}

pub(crate) fn align_up(v: u64, alignment: u64) -> u64 {
    debug_assert!(alignment.is_power_of_two());
    (v + alignment - 1) & !(alignment - 1)
}

pub(crate) fn align_down(v: u64, alignment: u64) -> u64 {
    debug_assert!(alignment.is_power_of_two());
    v & !(alignment - 1)
}
