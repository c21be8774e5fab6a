//! Segment files other than batches: `SegmentHeader::decode` (start of a
//! `.log`), `SealManifest::decode` (`.seal`) and `decode_index` (`.idx`) on
//! arbitrary bytes. Each checks its own magic, so all three run on every input.
//!
//! Invariants checked: no panic; whatever decodes re-encodes to the same value
//! and to exactly the bytes it was decoded from (for the segment header, the
//! first 64 bytes; batches follow it in a real file). Readers refuse nonzero
//! reserved bytes; `DDC_FUZZ_STRICT_RESERVED=0` relaxes the check.
#![no_main]

use ddc_formats::segment::{decode_index, encode_index, SealManifest, SegmentHeader, SEGMENT_HEADER_BYTES};
use ddc_fuzz::assert_reencodes;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(header) = SegmentHeader::decode(data) {
        let again = header.encode();
        assert_eq!(SegmentHeader::decode(&again), Ok(header), "segment header value changed across a re-encode");
        assert_reencodes("segment header", &again, &data[..SEGMENT_HEADER_BYTES], &[5..8, 24..60], 60..64);
    }

    if let Ok(seal) = SealManifest::decode(data) {
        let again = seal.encode();
        assert_eq!(SealManifest::decode(&again), Ok(seal), "seal manifest value changed across a re-encode");
        assert_reencodes("seal manifest", &again, data, &[5..8, 80..92], 92..96);
    }

    if let Ok(entries) = decode_index(data) {
        let again = encode_index(&entries);
        assert_eq!(decode_index(&again).as_ref(), Ok(&entries), "index entries changed across a re-encode");
        #[allow(clippy::single_range_in_vec_init, reason = "a list of ranges, of which the index has one")]
        assert_reencodes("index", &again, data, &[5..8], 12..16);
    }
});
