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
    /// Appends wait (backpressure) while this many bytes are buffered but not yet written.
    pub unflushed_bytes_max: usize,
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
            unflushed_bytes_max: 32 << 20,
            read_chunk_bytes: 256 << 10,
            preallocate: true,
        }
    }

    /// The most bytes that can be written but not yet covered by an fdatasync
    /// at any moment: recovery uses it to tell a torn tail (unacknowledged)
    /// from corruption of synced data. One flush writes what is buffered
    /// (at most `unflushed_bytes_max`) plus one batch of up to the largest frame.
    pub fn flush_window_bytes(&self) -> u64 {
        self.unflushed_bytes_max as u64 + u64::from(ddc_formats::batch::BATCH_BODY_BYTES_MAX) + self.write_buffer_bytes as u64
    }

    pub fn streams_dir(&self) -> PathBuf {
        self.data_dir.join("streams")
    }
}
