//! Shard headers (docs/FORMATS.md "Shards"): `ShardHeader::decode` and
//! `verify_body` on arbitrary bytes.
//!
//! Invariants checked:
//! - the decoder never panics, whatever the bytes;
//! - a header that decodes passes `check()` and re-encodes to exactly the
//!   512 bytes it was read from (readers refuse nonzero unused bytes);
//! - `verify_body` on the rest of the input never panics, and accepts it only
//!   if it has the header's length and BLAKE3.
#![no_main]

use ddc_formats::shard::{ShardHeader, SHARD_HEADER_BYTES};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(header) = ShardHeader::decode(data) else { return };
    assert!(header.check().is_ok(), "a decoded header breaks the rules: {header:?}");
    assert_eq!(&header.encode()[..], &data[..SHARD_HEADER_BYTES], "shard header does not re-encode to its bytes");
    let body = &data[SHARD_HEADER_BYTES..];
    if header.verify_body(body).is_ok() {
        assert_eq!(body.len() as u64, header.body_bytes);
        assert_eq!(*blake3::hash(body).as_bytes(), header.body_hash);
    }
});
