//! Record batches: `batches`, `BatchHeader::decode`, `validate_records` and
//! `records` on arbitrary bytes.
//!
//! The whole input is walked as back-to-back batches (a fetch response or a
//! segment's data). Independently, the first byte is taken as a record count
//! and the rest as a batch body for `validate_records` and `records`.
//!
//! Invariants checked:
//! - no decoder or iterator panics (offset arithmetic included);
//! - every batch that verifies re-encodes (`BatchHeader::encode()` followed by
//!   the body) to exactly the bytes it was read from (readers refuse nonzero
//!   `attributes` and reserved bytes; `DDC_FUZZ_STRICT_RESERVED=0` relaxes this);
//! - `batches` yields at most one error, as its last item, and its position
//!   only moves forward over whole batches;
//! - a body that `validate_records` accepts holds exactly that many records
//!   under `records`, which cover it and re-encode to it.
#![no_main]

use ddc_formats::batch::{
    batches, encode_records, records, validate_records, BatchHeader, BATCH_HEADER_BYTES, RECORD_LEN_BYTES,
};
use ddc_fuzz::assert_reencodes;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    walk_batches(data);
    if let Some((&count, body)) = data.split_first() {
        check_records(body, u32::from(count));
    }
    // Whatever the body, plain iteration stays in bounds and stops.
    let mut covered = 0usize;
    for r in records(data) {
        covered += RECORD_LEN_BYTES + r.len();
    }
    assert!(covered <= data.len());
});

fn walk_batches(data: &[u8]) {
    let _ = BatchHeader::decode(data);

    let mut iter = batches(data);
    let mut collected: Vec<(u64, &[u8])> = Vec::new();
    let mut errors = 0;
    loop {
        let start = iter.position();
        let Some(item) = iter.next() else { break };
        match item {
            Ok(view) => {
                assert_eq!(errors, 0, "batches yielded a batch after an error");
                let end = iter.position();
                assert_eq!(end - start, view.header.batch_len());
                assert_eq!(view.body.len(), view.header.body_len as usize);
                let bytes = &data[start..end];

                let mut again = view.header.encode().to_vec();
                again.extend_from_slice(view.body);
                assert_reencodes(&format!("verified batch at byte {start}"), &again, bytes, &[5..6, 36..44], 44..48);
                assert_eq!(BatchHeader::decode(&again[..BATCH_HEADER_BYTES]), Ok(view.header));

                let _ = view.header.next_offset();
                collected.extend(view.records());
            }
            Err(_) => errors += 1,
        }
    }
    assert!(errors <= 1);
    assert!(iter.next().is_none(), "batches resumed after stopping");
    std::hint::black_box(collected);
}

fn check_records(body: &[u8], count: u32) {
    let Ok(()) = validate_records(body, count) else {
        return;
    };
    let all: Vec<&[u8]> = records(body).collect();
    assert_eq!(all.len(), count as usize, "validate_records and records disagree on the count");
    assert_eq!(encode_records(all.iter().copied()), body, "records do not re-encode to the body");
}
