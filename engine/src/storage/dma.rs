//! The production storage: glommio `DmaFile` (O_DIRECT through io_uring).
//!
//! Data files use direct I/O; the rare metadata operations (directory
//! creation and fsync, small manifest files) run on glommio's blocking thread
//! pool so they never stall the executor.

use std::io;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use glommio::io::{DmaBuffer, DmaFile, OpenOptions};

use super::{IoBuf, Storage, StorageFile};

/// Direct-I/O storage on the local file system.
#[derive(Clone, Copy, Debug, Default)]
pub struct DmaStorage {
    /// Largest single read submitted to the kernel; bigger reads are split
    /// (some kernels hang on reads above the device's max_sectors).
    pub read_split_bytes: usize,
}

impl DmaStorage {
    pub fn new() -> DmaStorage {
        DmaStorage { read_split_bytes: 128 << 10 }
    }
}

impl IoBuf for DmaBuffer {
    fn as_slice(&self) -> &[u8] {
        self.as_bytes()
    }
    fn as_mut_slice(&mut self) -> &mut [u8] {
        self.as_bytes_mut()
    }
    fn trim(&mut self, len: usize) {
        assert!(len <= self.len());
        self.trim_to_size(len);
    }
}

pub struct DmaSegmentFile {
    file: DmaFile,
    read_split_bytes: usize,
}

/// The underlying `io::Error`, errno intact (ENOSPC must stay recognizable);
/// callers add the operation and path to the message themselves.
fn glommio_err(e: glommio::GlommioError<()>) -> io::Error {
    match e {
        glommio::GlommioError::IoError(e) | glommio::GlommioError::EnhancedIoError { source: e, .. } => e,
        other => io::Error::other(other.to_string()),
    }
}

async fn blocking<R: Send + 'static>(f: impl FnOnce() -> io::Result<R> + Send + 'static) -> io::Result<R> {
    glommio::executor().spawn_blocking(f).await
}

impl Storage for DmaStorage {
    type File = DmaSegmentFile;
    type Buf = DmaBuffer;

    /// glommio decides once per device whether reads may use the io_uring
    /// poll ring, by reading the first block of the first file it opens. If
    /// that file is empty the read "succeeds" at EOF, glommio wrongly picks
    /// the poll ring, and every later read fails with EOPNOTSUPP on devices
    /// without polling (virtio). So the first file opened is a non-empty one.
    async fn init(&self, data_dir: &Path) -> io::Result<()> {
        // One probe file per executor thread: cores start at the same moment.
        let probe = data_dir.join(format!(".direct-io-probe-{}-{:?}", std::process::id(), std::thread::current().id()));
        // Probe files of nodes that died mid-start: their pid no longer runs.
        let dir = data_dir.to_owned();
        blocking(move || {
            for entry in std::fs::read_dir(&dir)?.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                let pid = name.strip_prefix(".direct-io-probe-").and_then(|rest| rest.split('-').next());
                if let Some(pid) = pid {
                    if pid != std::process::id().to_string() && !Path::new("/proc").join(pid).exists() {
                        let _ = std::fs::remove_file(entry.path());
                    }
                }
            }
            Ok(())
        })
        .await
        .or_else(|e: io::Error| if e.kind() == io::ErrorKind::NotFound { Ok(()) } else { Err(e) })?;
        let path = probe.clone();
        blocking(move || {
            std::fs::create_dir_all(path.parent().unwrap_or(Path::new(".")))?;
            std::fs::write(&path, vec![0u8; 4096])
        })
        .await?;
        let file = DmaFile::open(&probe).await.map_err(glommio_err)?;
        let read = file.read_at(0, 512).await.map_err(glommio_err);
        let _ = file.close().await;
        let _ = std::fs::remove_file(&probe);
        read.map(|_| ())
    }

    fn alloc_buf(&self, len: usize) -> DmaBuffer {
        glommio::allocate_dma_buffer(len)
    }

    async fn create_file(&self, path: &Path) -> io::Result<DmaSegmentFile> {
        let file =
            OpenOptions::new().read(true).write(true).create_new(true).dma_open(path).await.map_err(glommio_err)?;
        Ok(DmaSegmentFile { file, read_split_bytes: self.read_split_bytes.max(4096) })
    }

    async fn open_file(&self, path: &Path) -> io::Result<DmaSegmentFile> {
        let file = OpenOptions::new().read(true).write(true).dma_open(path).await.map_err(glommio_err)?;
        Ok(DmaSegmentFile { file, read_split_bytes: self.read_split_bytes.max(4096) })
    }

    async fn remove_file(&self, path: &Path) -> io::Result<()> {
        let path = path.to_owned();
        blocking(move || std::fs::remove_file(path)).await
    }

    async fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        let path = path.to_owned();
        blocking(move || std::fs::create_dir_all(path)).await
    }

    async fn sync_dir(&self, path: &Path) -> io::Result<()> {
        let path = path.to_owned();
        blocking(move || std::fs::File::open(path)?.sync_all()).await
    }

    async fn list_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        let path = path.to_owned();
        blocking(move || {
            let entries = match std::fs::read_dir(&path) {
                Ok(e) => e,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
                Err(e) => return Err(e),
            };
            let mut names = Vec::new();
            for entry in entries {
                names.push(entry?.file_name().to_string_lossy().into_owned());
            }
            names.sort();
            Ok(names)
        })
        .await
    }

    async fn read_small(&self, path: &Path) -> io::Result<Option<Vec<u8>>> {
        let path = path.to_owned();
        blocking(move || match std::fs::read(path) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        })
        .await
    }

    async fn write_small_durably(&self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        let path = path.to_owned();
        let bytes = bytes.to_vec();
        blocking(move || write_small_durably_std(&path, &bytes)).await
    }
}

/// Temp file, fsync, rename over the target, fsync the directory.
pub(crate) fn write_small_durably_std(path: &Path, bytes: &[u8]) -> io::Result<()> {
    use std::io::Write;
    let tmp: PathBuf = path.with_extension("tmp");
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::File::open(dir)?.sync_all()
}

impl StorageFile for DmaSegmentFile {
    type Buf = DmaBuffer;

    fn alignment(&self) -> u64 {
        self.file.alignment().max(512)
    }

    async fn write_at(&self, buf: Rc<DmaBuffer>, pos: u64) -> io::Result<()> {
        let len = buf.len();
        debug_assert_eq!(pos % self.alignment(), 0);
        debug_assert_eq!(len as u64 % self.alignment(), 0);
        let written = self.file.write_rc_at(buf, pos).await.map_err(glommio_err)?;
        if written != len {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                format!("short direct write: {written} of {len} bytes at {pos}"),
            ));
        }
        Ok(())
    }

    async fn read_at(&self, pos: u64, len: usize) -> io::Result<Vec<u8>> {
        // Split into chunks the device accepts and keep them all in flight:
        // a virtio disk at queue depth 1 is several times slower.
        let split = self.read_split_bytes;
        let reads = (0..len).step_by(split).map(|at| self.file.read_at(pos + at as u64, split.min(len - at)));
        let results = futures::future::join_all(reads).await;
        let mut out = Vec::with_capacity(len);
        for (i, result) in results.into_iter().enumerate() {
            let got = result.map_err(glommio_err)?;
            out.extend_from_slice(&got);
            if got.len() < split.min(len - i * split) {
                break; // end of file
            }
        }
        Ok(out)
    }

    async fn sync_data(&self) -> io::Result<()> {
        self.file.fdatasync().await.map_err(glommio_err)
    }

    async fn truncate(&self, len: u64) -> io::Result<()> {
        self.file.truncate(len).await.map_err(glommio_err)
    }

    async fn preallocate(&self, len: u64) -> io::Result<()> {
        self.file.pre_allocate(len, true).await.map_err(glommio_err)
    }

    async fn size(&self) -> io::Result<u64> {
        self.file.file_size().await.map_err(glommio_err)
    }
}
