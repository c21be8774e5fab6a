//! The per-core durable log of the DDC storage node.
//!
//! Each glommio executor owns an [`Engine`]: the streams whose name hashes to
//! its core ([`owner_core`]). A stream is a sequence of segments; each segment
//! is one file written with direct I/O (aligned buffers, O_DIRECT, io_uring)
//! and preallocated to `segment_bytes_max`. Appends are acknowledged after an
//! fdatasync that covers them; concurrent appends to a stream share one
//! (group commit). A segment seals when it is full or old: its preallocation
//! is released, its sparse index and a manifest with its BLAKE3 root are
//! written. On start, [`recovery`] rebuilds every stream from its files.
//!
//! **Boundary:** this crate never touches the network. All disk access goes
//! through the [`storage::Storage`] seam so tests can inject faults.
//!
//! **Invariants:**
//! - nothing is acknowledged before an fdatasync covers it (unless the
//!   caller asked for `AckLevel::WrittenNotSynced`);
//! - readers never see bytes that no fdatasync covered;
//! - a failed write or fsync fences the stream until recovery;
//! - stored bytes that fail a checksum are reported as `Corrupted`, never
//!   returned as data, and never truncated away unless they are provably an
//!   unacknowledged torn tail.
//!
//! ```no_run
//! use ddc_engine::{Engine, LogConfig, storage::dma::DmaStorage};
//! use ddc_formats::{batch::encode_records, wire::AckLevel};
//! glommio::LocalExecutorBuilder::default().spawn(|| async {
//!     let engine = Engine::open(DmaStorage::new(), LogConfig::new("/tmp/ddc"), 0, 1).await.unwrap();
//!     let (stream, _) = engine.stream_or_create("orders").unwrap();
//!     let body = encode_records([b"hello".as_slice()]);
//!     let offset = stream.append(&body, 1, AckLevel::Durable).await.unwrap();
//!     let read = stream.read(offset, 1 << 20).await.unwrap();
//!     assert!(!read.batches.is_empty());
//!     engine.close().await;
//! }).unwrap().join().unwrap();
//! ```

#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod config;
pub mod engine;
pub mod error;
pub mod recovery;
pub mod segment;
pub mod signal;
pub mod stats;
pub mod storage;
pub mod stream;

pub use config::LogConfig;

/// Keep the direct-I/O write buffers (1 MiB by default) and request payloads
/// in malloc's heap instead of fresh mmaps: mapping, faulting in and
/// unmapping them on every flush cost a quarter of the CPU under load (TLB
/// shootdowns included). Call once at process start, before other threads.
pub fn tune_allocator() {
    // SAFETY: mallopt only adjusts glibc allocator parameters.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 64 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 256 << 20);
    }
}
pub use engine::{owner_core, Engine};
pub use error::{EngineError, Result};
pub use stream::{ReadOut, Stream};
