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

/// The fixed keys and clock the seed corpus is built with and the `ddc-auth`
/// and `ddc-anchor` targets check against. Ed25519 signing is deterministic,
/// so seeds signed with these keys are the same bytes on every run, and a
/// target can tell a seed's valid signature from a broken one.
pub mod fixed {
    use std::sync::LazyLock;

    use ddc_auth::account::Keypair;
    use ddc_auth::encryption::BucketKey;

    /// Owns [`BUCKET`] and roots every seed grant chain.
    pub static OWNER: LazyLock<Keypair> = LazyLock::new(|| Keypair::from_seed([1; 32]));
    /// Gets a delegable grant from the owner.
    pub static DELEGATE: LazyLock<Keypair> = LazyLock::new(|| Keypair::from_seed([2; 32]));
    /// The last subject of the seed chains; also the consumer that signs acknowledgments.
    pub static READER: LazyLock<Keypair> = LazyLock::new(|| Keypair::from_seed([3; 32]));
    /// The storage node: signs usage reports, anchor records and its handshake hello.
    pub static NODE: LazyLock<Keypair> = LazyLock::new(|| Keypair::from_seed([4; 32]));
    /// An account with no rights anywhere.
    pub static STRANGER: LazyLock<Keypair> = LazyLock::new(|| Keypair::from_seed([5; 32]));

    /// The bucket the seed grants and acknowledgments are for.
    pub const BUCKET: u64 = 7;
    /// "Now" for grant checks, Unix ms; seed grants are valid from
    /// [`NOW_MS`]` - 1 h` to [`NOW_MS`]` + 1 day` unless a seed says otherwise.
    pub const NOW_MS: u64 = 1_750_000_000_000;
    /// What the node served in every session, for `AckLedger::accept`.
    pub const SERVED_BYTES: u64 = 1 << 20;
    /// Gets the node served in every session.
    pub const SERVED_GETS: u64 = 100;
    /// A grant whose nonce starts with this byte is in the targets' revocation set.
    pub const REVOKED_NONCE_BYTE: u8 = 0xee;

    /// The bytes of the bucket key encrypted-record seeds are sealed with.
    pub const BUCKET_KEY_BYTES: [u8; 32] = [0x42; 32];
    /// The stream encrypted-record seeds are sealed for.
    pub const STREAM: &str = "b7.orders";

    /// The bucket key encrypted-record seeds are sealed with.
    pub fn bucket_key() -> BucketKey {
        BucketKey::from_bytes(BUCKET_KEY_BYTES)
    }
}
