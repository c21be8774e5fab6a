//! Anchor proofs (ddc-anchor `era::AnchorProof`, the body of a `Proof`
//! response): `AnchorProof::decode` on arbitrary bytes.
//!
//! Invariants checked: the decoder never panics; a proof that decodes
//! re-encodes to exactly its bytes; its receipt re-encodes to bytes 8..96;
//! `verify_against` its own record never panics, and holds exactly when the
//! proof's leaf count is the record's and the leaf leads to the root.
#![no_main]

use ddc_anchor::era::AnchorProof;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(anchor) = AnchorProof::decode(data) else { return };
    assert_eq!(anchor.encode(), data, "anchor proof does not re-encode to its bytes");
    assert_eq!(&anchor.receipt.encode()[..], &data[8..96]);
    let bundle = &anchor.proof;
    let holds = bundle.proof.leaf_count() == u64::from(bundle.record.leaves(bundle.tree))
        && bundle.proof.verify(&bundle.record.root(bundle.tree), &bundle.leaf);
    assert_eq!(bundle.verify_against(&bundle.record.encode()).is_ok(), holds);
});
