//! Stream names: what is allowed and why.
//!
//! A stream name becomes a directory name on every node, so it is limited to
//! a portable alphabet and may not start with '.' (no hidden files, no `..`).

use crate::FormatError;

/// Longest stream name in bytes. Leaves room under the 255-byte file name limit.
pub const STREAM_NAME_BYTES_MAX: usize = 200;

/// Check a stream name: 1..=200 bytes of `[A-Za-z0-9._-]`, not starting with '.'.
pub fn validate_stream_name(name: &str) -> Result<(), FormatError> {
    let invalid =
        |reason: &str| Err(FormatError::Invalid { what: "stream name", reason: format!("{name:?}: {reason}") });
    if name.is_empty() {
        return invalid("empty");
    }
    if name.len() > STREAM_NAME_BYTES_MAX {
        return invalid("longer than 200 bytes");
    }
    if name.starts_with('.') {
        return invalid("starts with '.'");
    }
    if let Some(c) = name.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))) {
        return invalid(&format!("character {c:?} is not one of [A-Za-z0-9._-]"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_and_refuses() {
        for ok in ["a", "orders", "my-stream_1.v2", &"x".repeat(200)] {
            assert!(validate_stream_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", ".", "..", ".hidden", "a/b", "a b", "é", &"x".repeat(201), "a\0"] {
            assert!(validate_stream_name(bad).is_err(), "{bad:?}");
        }
    }
}
