//! Anchor records and proof bundles (ddc-anchor `record`):
//! `AnchorRecord::decode`, `RecordProof::decode` and
//! `RecordProof::verify_against` on arbitrary bytes.
//!
//! Input: a proof bundle, optionally followed by "remark bytes read from the
//! chain". The bundle's own fields say where it ends (header and record 260
//! bytes, then the leaf length it states, then the inclusion proof, whose
//! sibling count is its byte 16), so the split needs no framing. With nothing
//! after the bundle, the chain bytes are the bundle's own record, the honest
//! case. The whole input is also tried as a record and as a bundle.
//!
//! The record's signature covers all of it, so the fuzzer reaches past a
//! record only from seeds (records signed by `fixed::NODE`); the leaf and the
//! inclusion proof are not signed and are fuzzed freely.
//!
//! Invariants checked:
//! - no decoder panics, nor `verify_against`;
//! - a record or bundle that decodes re-encodes to exactly its bytes; a
//!   decoded record's signature is valid and its fields pass `check`; a
//!   decoded bundle's leaf decodes as a leaf of its tree;
//! - `verify_against` accepts only chain bytes that decode to the bundled
//!   record, when the proof's leaf count is the record's and the proof
//!   leads from the leaf to the record's root; chain bytes that decode to
//!   another record give `RecordMismatch`.
#![no_main]

use ddc_anchor::merkle::{DataLeaf, Tree, UsageLeaf, PROOF_HEADER_BYTES};
use ddc_anchor::record::{AnchorRecord, RecordProof, RECORD_BYTES, RECORD_PROOF_HEADER_BYTES};
use ddc_anchor::AnchorError;
use libfuzzer_sys::fuzz_target;

const LEAF_AT: usize = RECORD_PROOF_HEADER_BYTES + RECORD_BYTES;

fuzz_target!(|data: &[u8]| {
    if let Ok(record) = AnchorRecord::decode(data) {
        assert_eq!(record.encode(), data, "anchor record does not re-encode to its bytes");
        assert!(record.signature_is_valid());
        record.fields.check().expect("a decoded record's fields pass check");
    }

    let (bundle_bytes, chain) = split(data);
    if bundle_bytes.len() != data.len() {
        // The whole input is a bundle with trailing bytes: refused.
        assert!(RecordProof::decode(data).is_err(), "a bundle with trailing bytes decoded");
    }
    let Ok(bundle) = RecordProof::decode(bundle_bytes) else { return };
    assert_eq!(bundle.encode(), bundle_bytes, "record proof does not re-encode to its bytes");
    assert_eq!(bundle.record.encode(), &bundle_bytes[RECORD_PROOF_HEADER_BYTES..LEAF_AT]);
    match bundle.tree {
        Tree::Data => assert!(DataLeaf::decode(&bundle.leaf).is_ok()),
        Tree::Usage => assert!(UsageLeaf::decode(&bundle.leaf).is_ok()),
    }

    let chain = chain.unwrap_or(&bundle_bytes[RECORD_PROOF_HEADER_BYTES..LEAF_AT]);
    let verdict = bundle.verify_against(chain);
    let on_chain = AnchorRecord::decode(chain);
    let root = bundle.record.root(bundle.tree);
    let holds = bundle.proof.leaf_count() == u64::from(bundle.record.leaves(bundle.tree))
        && bundle.proof.verify(&root, &bundle.leaf);
    match &on_chain {
        Ok(record) if *record == bundle.record => {
            assert_eq!(verdict.is_ok(), holds, "verify_against disagrees with the proof: {verdict:?}");
        }
        Ok(_) => assert_eq!(verdict, Err(AnchorError::RecordMismatch)),
        Err(error) => assert_eq!(verdict.as_ref(), Err(error)),
    }
});

/// The bundle at the start of `data` and the bytes after it, if any; all of
/// `data` if it is too short to say where a bundle ends.
fn split(data: &[u8]) -> (&[u8], Option<&[u8]>) {
    let Some(&[lo, hi]) = data.get(RECORD_PROOF_HEADER_BYTES - 2..RECORD_PROOF_HEADER_BYTES) else {
        return (data, None);
    };
    let proof_at = LEAF_AT + usize::from(u16::from_le_bytes([lo, hi]));
    let Some(&siblings) = data.get(proof_at + PROOF_HEADER_BYTES - 1) else { return (data, None) };
    let end = proof_at + PROOF_HEADER_BYTES + 32 * usize::from(siblings);
    match data.len().cmp(&end) {
        std::cmp::Ordering::Greater => (&data[..end], Some(&data[end..])),
        _ => (data, None),
    }
}
