//! Segment files other than batches: `SegmentHeader::decode` (start of a
//! `.log`), `SealManifest::decode` (`.seal`) and `decode_index` (`.idx`) on
//! arbitrary bytes. Each checks its own magic, so all three run on every input.
//!
//! Invariants checked: no panic; whatever decodes is canonical — encoding the
//! decoded value gives back exactly the bytes it was decoded from (for the
//! segment header, the first 64 bytes; batches follow it in a real file) —
//! and decoding that again gives the same value.
#![no_main]

use ddc_formats::segment::{decode_index, encode_index, SealManifest, SegmentHeader, SEGMENT_HEADER_BYTES};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(header) = SegmentHeader::decode(data) {
        let again = header.encode();
        assert_eq!(SegmentHeader::decode(&again), Ok(header), "segment header value changed across a re-encode");
        assert_eq!(&again[..], &data[..SEGMENT_HEADER_BYTES], "segment header does not re-encode to the same bytes");
    }

    if let Ok(seal) = SealManifest::decode(data) {
        let again = seal.encode();
        assert_eq!(SealManifest::decode(&again), Ok(seal), "seal manifest value changed across a re-encode");
        assert_eq!(&again[..], data, "seal manifest does not re-encode to the same bytes");
    }

    if let Ok(entries) = decode_index(data) {
        let again = encode_index(&entries);
        assert_eq!(decode_index(&again).as_ref(), Ok(&entries), "index entries changed across a re-encode");
        assert_eq!(again.as_slice(), data, "index does not re-encode to the same bytes");
    }
});
