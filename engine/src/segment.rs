//! One segment of a stream: its files, what is durable in it, its sparse index.
//!
//! A segment is `<base_offset:020>.log` (segment header then batches),
//! plus, once sealed, `<base>.idx` (sparse index) and `<base>.seal` (the
//! manifest that marks it sealed and holds its BLAKE3 root).

use std::cell::{Cell, RefCell};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use ddc_formats::segment::{IndexEntry, SealManifest, SEGMENT_HEADER_BYTES};

use crate::error::{EngineError, Result};
use crate::storage::Storage;

pub(crate) fn log_path(dir: &Path, base: u64) -> PathBuf {
    dir.join(format!("{base:020}.log"))
}
pub(crate) fn index_path(dir: &Path, base: u64) -> PathBuf {
    dir.join(format!("{base:020}.idx"))
}
pub(crate) fn seal_path(dir: &Path, base: u64) -> PathBuf {
    dir.join(format!("{base:020}.seal"))
}
pub(crate) fn recovery_point_path(dir: &Path) -> PathBuf {
    dir.join("recovery-point")
}

/// Parse `<20 digits>.log` into its base offset.
pub(crate) fn parse_log_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".log")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Read-side state of a segment, shared by the writer and readers.
pub struct Segment<S: Storage> {
    pub base_offset: u64,
    pub path: PathBuf,
    /// One past the last durable offset (fsync'd, visible to readers).
    pub durable_next_offset: Cell<u64>,
    /// File bytes covered by the last fsync; readers never look past it.
    pub durable_len: Cell<u64>,
    /// Sparse index: the batch holding `offset` starts at or after `position`.
    pub index: RefCell<Vec<IndexEntry>>,
    pub seal: Cell<Option<SealManifest>>,
    pub created_ms: u64,
    file: RefCell<Option<Rc<S::File>>>,
    /// BLAKE3 state over the file's bytes `[0, hashed_to)`, fed as data is written.
    hash: RefCell<(blake3::Hasher, u64)>,
    /// Hash tasks spawned and not yet run; sealing waits for none.
    hash_pending: Cell<usize>,
    hash_idle: crate::signal::Signal,
}

impl<S: Storage> Segment<S> {
    pub fn new(dir: &Path, base_offset: u64, created_ms: u64) -> Segment<S> {
        Segment {
            base_offset,
            path: log_path(dir, base_offset),
            durable_next_offset: Cell::new(base_offset),
            durable_len: Cell::new(SEGMENT_HEADER_BYTES as u64),
            index: RefCell::new(Vec::new()),
            seal: Cell::new(None),
            created_ms,
            file: RefCell::new(None),
            hash: RefCell::new((blake3::Hasher::new(), 0)),
            hash_pending: Cell::new(0),
            hash_idle: crate::signal::Signal::default(),
        }
    }

    /// Hash written runs on a separate task, so the hashing overlaps the
    /// flusher's next fdatasync and writes instead of delaying them. The
    /// tasks never await, so they run whole and in spawn order.
    pub fn hash_in_background(self: &Rc<Self>, runs: Vec<(u64, Rc<S::Buf>, usize)>) {
        use crate::storage::IoBuf;
        self.hash_pending.set(self.hash_pending.get() + 1);
        let seg = self.clone();
        glommio::spawn_local(async move {
            seg.hash_written(runs.iter().map(|(start, buf, len)| (*start, &buf.as_slice()[..*len])));
            seg.hash_pending.set(seg.hash_pending.get() - 1);
            seg.hash_idle.notify();
        })
        .detach();
    }

    /// Wait until every spawned hash task has run.
    pub async fn hash_settled(&self) {
        self.hash_idle.wait_for(|| (self.hash_pending.get() == 0).then_some(())).await;
    }

    /// Feed newly durable bytes `(file position, bytes)` to the segment hash;
    /// bytes already hashed (the rewritten partial block) are skipped.
    pub fn hash_written<'a>(&self, runs: impl Iterator<Item = (u64, &'a [u8])>) {
        let mut hash = self.hash.borrow_mut();
        for (start, bytes) in runs {
            let end = start + bytes.len() as u64;
            if end <= hash.1 {
                continue;
            }
            assert!(start <= hash.1, "hash gap: run starts at {start}, hashed to {}", hash.1);
            let from = (hash.1 - start) as usize;
            hash.0.update(&bytes[from..]);
            hash.1 = end;
        }
    }

    /// Replace the hash state (recovery computed it by scanning).
    pub fn set_hash(&self, hasher: blake3::Hasher, hashed_to: u64) {
        *self.hash.borrow_mut() = (hasher, hashed_to);
    }

    /// The BLAKE3 root of the first `data_len` bytes.
    pub fn finish_hash(&self, data_len: u64) -> [u8; 32] {
        let hash = self.hash.borrow();
        assert_eq!(hash.1, data_len, "segment hash covers {} bytes, data is {data_len}", hash.1);
        *hash.0.finalize().as_bytes()
    }

    pub fn is_sealed(&self) -> bool {
        self.seal.get().is_some()
    }

    pub fn set_file(&self, file: Rc<S::File>) {
        *self.file.borrow_mut() = Some(file);
    }

    pub fn file(&self) -> Option<Rc<S::File>> {
        self.file.borrow().clone()
    }

    /// The open file, opening it on first use (sealed segments open lazily).
    pub async fn file_for_read(&self, storage: &S) -> Result<Rc<S::File>> {
        if let Some(f) = self.file() {
            return Ok(f);
        }
        let file = Rc::new(
            storage
                .open_file(&self.path)
                .await
                .map_err(|e| EngineError::io(format!("open {}", self.path.display()), &e))?,
        );
        // Another reader may have opened it meanwhile; either handle works.
        self.set_file(file.clone());
        Ok(file)
    }

    /// The file position to start scanning from to find `offset`, and the
    /// offset of the batch that starts there.
    pub fn position_for(&self, offset: u64) -> (u64, u64) {
        let index = self.index.borrow();
        let i = index.partition_point(|e| e.offset <= offset);
        if i == 0 {
            (SEGMENT_HEADER_BYTES as u64, self.base_offset)
        } else {
            (index[i - 1].position, index[i - 1].offset)
        }
    }

    /// Drop the open file handle (sealed segments reopen on demand).
    pub fn close_file(&self) {
        self.file.borrow_mut().take();
    }
}
