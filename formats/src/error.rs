//! The one error type of this crate: what can be wrong with outside bytes.

/// Why bytes from disk or the network were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FormatError {
    #[error("{what}: need {needed} bytes, have {available}")]
    Truncated { what: &'static str, needed: usize, available: usize },
    #[error("{what}: bad magic {found:02x?}")]
    BadMagic { what: &'static str, found: [u8; 4] },
    #[error("{what}: unsupported version {found}")]
    UnsupportedVersion { what: &'static str, found: u8 },
    #[error("{what}: checksum mismatch, expected {expected:#010x}, actual {actual:#010x}")]
    ChecksumMismatch { what: &'static str, expected: u32, actual: u32 },
    #[error("frame of {len} bytes exceeds the maximum of {max}")]
    FrameTooLarge { len: u32, max: u32 },
    #[error("{what}: {reason}")]
    Invalid { what: &'static str, reason: String },
    #[error("message failed the flatbuffers verifier: {0}")]
    Malformed(String),
}
