//! Request payloads: `decode_request` on arbitrary bytes (a frame's payload).
//!
//! Invariants checked: no panic; a request that decodes re-encodes with
//! `encode_request_frame` into a valid frame whose payload decodes to the same
//! request id and request.
#![no_main]

use ddc_formats::frame::decode_frame;
use ddc_formats::message::{decode_request, encode_request_frame};
use flatbuffers::FlatBufferBuilder;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok((id, request)) = decode_request(data) else {
        return;
    };
    let _ = request.stream();

    let mut fbb = FlatBufferBuilder::new();
    let mut frame = Vec::new();
    encode_request_frame(&mut fbb, id, &request, &mut frame);
    let (payload, consumed) = decode_frame(&frame, u32::MAX)
        .expect("encode_request_frame wrote a frame decode_frame refuses")
        .expect("encode_request_frame wrote a partial frame");
    assert_eq!(consumed, frame.len());
    let again = decode_request(payload).expect("re-encoded request does not decode");
    assert_eq!(again, (id, request), "request changed across a re-encode");
});
