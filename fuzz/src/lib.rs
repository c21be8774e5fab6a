//! Helpers shared by the fuzz targets in `fuzz_targets/`.

use std::ops::Range;
use std::sync::OnceLock;

/// Whether re-encoding must be byte-identical everywhere. Version 1 readers
/// refuse nonzero reserved bytes (and a batch's nonzero `attributes` byte), so
/// this is the default; `DDC_FUZZ_STRICT_RESERVED=0` relaxes it to ignore
/// those bytes and the checksum covering them.
pub fn strict_reserved() -> bool {
    static STRICT: OnceLock<bool> = OnceLock::new();
    *STRICT.get_or_init(|| std::env::var_os("DDC_FUZZ_STRICT_RESERVED").is_none_or(|v| v != "0"))
}

/// Assert that `again` (the re-encoding of a value decoded from `input`) is
/// byte-identical to `input`, except that bytes in `ignored` (reserved fields
/// readers do not check) and in `crc` (the checksum that covers them) may
/// differ when `input` has nonzero bytes in `ignored` and strict mode is off.
#[track_caller]
pub fn assert_reencodes(what: &str, again: &[u8], input: &[u8], ignored: &[Range<usize>], crc: Range<usize>) {
    assert_eq!(again.len(), input.len(), "{what}: re-encoding has a different length");
    let in_ignored = |i: usize| ignored.iter().any(|r| r.contains(&i));
    let reserved_zero = ignored.iter().all(|r| input[r.clone()].iter().all(|&b| b == 0));
    if strict_reserved() || reserved_zero {
        assert_eq!(again, input, "{what} does not re-encode to the same bytes");
        return;
    }
    for (i, (a, b)) in again.iter().zip(input).enumerate() {
        if !in_ignored(i) && !crc.contains(&i) {
            assert_eq!(a, b, "{what}: re-encoding differs at byte {i} (not a reserved byte)");
        }
    }
    for r in ignored {
        assert!(again[r.clone()].iter().all(|&b| b == 0), "{what}: encoder wrote nonzero reserved bytes {r:?}");
    }
}
