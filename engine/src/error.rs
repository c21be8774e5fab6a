//! The engine's error type.

use std::io;

/// Why an engine operation failed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    #[error("invalid stream name: {0}")]
    InvalidStreamName(String),
    #[error("stream {0:?} does not exist")]
    UnknownStream(String),
    #[error("invalid records: {0}")]
    InvalidRecords(String),
    #[error("offset {offset} is outside [{log_start}, {next}] of stream {stream:?}")]
    OffsetOutOfRange { stream: String, offset: u64, log_start: u64, next: u64 },
    #[error("stream {stream:?} segment {segment_base}: stored bytes at [{position}, {end}) are corrupted: {reason}")]
    Corrupted { stream: String, segment_base: u64, position: u64, end: u64, reason: String },
    #[error("stream {stream:?} refuses writes until the node restarts and recovers it: {reason}")]
    WritesFenced { stream: String, reason: String, storage_full: bool },
    #[error("no space left in the data directory: {0}")]
    StorageFull(String),
    #[error("stream {stream:?}: batch for offset {expected} does not continue the log, whose next offset is {next}")]
    OffsetMismatch { stream: String, expected: u64, next: u64 },
    #[error("shutting down")]
    ShuttingDown,
    #[error("I/O error: {0}")]
    Io(String),
}

impl EngineError {
    pub(crate) fn io(context: impl std::fmt::Display, e: &io::Error) -> EngineError {
        if e.raw_os_error() == Some(libc::ENOSPC) {
            EngineError::StorageFull(format!("{context}: {e}"))
        } else {
            EngineError::Io(format!("{context}: {e}"))
        }
    }
}

pub type Result<T, E = EngineError> = std::result::Result<T, E>;
