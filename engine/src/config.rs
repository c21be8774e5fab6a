//! Tunables of the log, with the defaults a fresh node uses.

use std::path::PathBuf;

/// How a core's log is laid out and flushed.
#[derive(Debug, Clone)]
pub struct LogConfig {
    /// Root of the data directory; streams live in `<data_dir>/streams/<name>/`.
    pub data_dir: PathBuf,
    /// A segment rolls before a batch would take it past this size.
    pub segment_bytes_max: u64,
    /// A non-empty open segment older than this rolls at the next tick.
    pub segment_age_max_ms: u64,
    /// One sparse index entry per this many bytes of batches.
    pub index_interval_bytes: u64,
    /// Size of each direct-I/O write buffer a stream fills before handing it to the flusher.
    pub write_buffer_bytes: usize,
    /// Appends wait (backpressure) while this many bytes are appended but not yet durable.
    pub unflushed_bytes_max: usize,
    /// Largest batch (header and body) an append may carry. The server sets it
    /// from its frame limit; it bounds the flush window below.
    pub batch_bytes_max: usize,
    /// Largest single direct-I/O read; bigger reads are split.
    pub read_chunk_bytes: usize,
    /// Reserve `segment_bytes_max` on disk when a segment is created.
    pub preallocate: bool,
}

impl LogConfig {
    pub fn new(data_dir: impl Into<PathBuf>) -> LogConfig {
        LogConfig {
            data_dir: data_dir.into(),
            segment_bytes_max: 128 << 20,
            segment_age_max_ms: 60 * 60 * 1000,
            index_interval_bytes: 16 << 10,
            write_buffer_bytes: 1 << 20,
            unflushed_bytes_max: 16 << 20,
            batch_bytes_max: (16 << 20) + ddc_formats::batch::BATCH_HEADER_BYTES,
            read_chunk_bytes: 256 << 10,
            preallocate: true,
        }
    }

    /// The most bytes that can be written but not yet covered by an fdatasync
    /// at any moment: one flush writes what was appended and not yet durable
    /// (admission keeps it under `unflushed_bytes_max`, but always admits one
    /// batch into an empty pipeline, so up to `batch_bytes_max` more) plus the
    /// partial block rewritten at its start. Recovery uses it, together with
    /// the stream's recovery point, to tell a torn tail (never acknowledged)
    /// from damage to synced data.
    pub fn flush_window_bytes(&self) -> u64 {
        (self.unflushed_bytes_max + self.batch_bytes_max) as u64 + crate::stream::BLOCK_BYTES
    }

    pub fn streams_dir(&self) -> PathBuf {
        self.data_dir.join("streams")
    }
}
