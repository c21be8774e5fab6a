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

/// The bucket a stream lives in: a stream named `b<id>.<rest>` (for example
/// `b7.orders`) is in bucket `id`, written in canonical decimal (no sign, no
/// leading zero, fits a `u64`), at least 1 (Cere's bucket ids start at 1, and
/// 0 stands for "no bucket" in usage records), and followed by a non-empty
/// rest. Any other name is in no bucket, which only nodes without
/// `auth.required` accept.
/// The bucket is part of the name so that every layer below authorization
/// (engine, replication, shards) stays unaware of buckets.
pub fn bucket_of(name: &str) -> Option<u64> {
    let rest = name.strip_prefix('b')?;
    let (digits, tail) = rest.split_once('.')?;
    if tail.is_empty() || digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if digits.len() > 1 && digits.starts_with('0') {
        return None;
    }
    digits.parse().ok().filter(|&id| id != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_prefix() {
        assert_eq!(bucket_of("b7.orders"), Some(7));
        assert_eq!(bucket_of("b18446744073709551615.x.y"), Some(u64::MAX));
        for none in [
            "b0.x",
            "orders",
            "b7",
            "b7.",
            "b.x",
            "b07.x",
            "b18446744073709551616.x",
            "B7.x",
            "b-7.x",
            "b+7.x",
            "xb7.y",
        ] {
            assert_eq!(bucket_of(none), None, "{none}");
        }
    }

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
