//! Response payloads: `decode_response` on arbitrary bytes (a frame's payload).
//!
//! Invariants checked: no panic; a response that decodes re-encodes with
//! `encode_response_frame` into a valid frame whose payload decodes to the
//! same request id and response.
#![no_main]

use ddc_formats::frame::decode_frame;
use ddc_formats::message::{decode_response, encode_response_frame};
use flatbuffers::FlatBufferBuilder;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok((id, response)) = decode_response(data) else {
        return;
    };

    let mut fbb = FlatBufferBuilder::new();
    let mut frame = Vec::new();
    encode_response_frame(&mut fbb, id, &response, &mut frame);
    let (payload, consumed) = decode_frame(&frame, u32::MAX)
        .expect("encode_response_frame wrote a frame decode_frame refuses")
        .expect("encode_response_frame wrote a partial frame");
    assert_eq!(consumed, frame.len());
    let again = decode_response(payload).expect("re-encoded response does not decode");
    assert_eq!(again, (id, response), "response changed across a re-encode");
});
