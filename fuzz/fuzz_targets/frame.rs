//! Frame codec: `decode_frame` and `FrameHeader::decode` on arbitrary bytes.
//!
//! Invariants checked:
//! - neither decoder panics;
//! - the two agree: a frame that decodes has a header that decodes, announcing
//!   exactly the payload returned;
//! - a frame that decodes is canonical: re-encoding its payload with
//!   `encode_frame_into` gives back exactly the bytes it consumed;
//! - a stream of back-to-back frames is walked to the end the same way a
//!   connection reader would.
#![no_main]

use ddc_formats::frame::{decode_frame, encode_frame_into, FrameHeader, FRAME_HEADER_BYTES};
use libfuzzer_sys::fuzz_target;

const MAX: u32 = 16 << 20;

fuzz_target!(|data: &[u8]| {
    let _ = FrameHeader::decode(data, MAX);

    let mut rest = data;
    loop {
        match decode_frame(rest, MAX) {
            Ok(Some((payload, consumed))) => {
                assert!(consumed >= FRAME_HEADER_BYTES && consumed <= rest.len());
                assert_eq!(consumed, FRAME_HEADER_BYTES + payload.len());
                let header =
                    FrameHeader::decode(rest, MAX).expect("decode_frame accepted a header FrameHeader refuses");
                assert_eq!(header.payload_len as usize, payload.len());
                header.verify_payload(rest, payload).expect("decode_frame accepted a payload verify_payload refuses");

                let mut again = Vec::new();
                encode_frame_into(payload, &mut again);
                assert_eq!(
                    again.as_slice(),
                    &rest[..consumed],
                    "re-encoded frame differs from the bytes it was decoded from"
                );

                if consumed == rest.len() {
                    break;
                }
                rest = &rest[consumed..];
            }
            Ok(None) => {
                // Needs more bytes: then the header (if whole) must be valid and announce more than is here.
                if rest.len() >= FRAME_HEADER_BYTES {
                    let header =
                        FrameHeader::decode(rest, MAX).expect("decode_frame asked for more bytes after a bad header");
                    assert!(FRAME_HEADER_BYTES + header.payload_len as usize > rest.len());
                }
                break;
            }
            Err(_) => break,
        }
    }
});
