//! Era Merkle trees (ddc-anchor `merkle`): `DataLeaf::decode`,
//! `UsageLeaf::decode` and `InclusionProof::decode` on arbitrary bytes. Each
//! has its own length and kind rules, so all three run on every input.
//!
//! Invariants checked:
//! - no decoder panics;
//! - whatever decodes re-encodes to exactly its bytes and passes `check`;
//! - data and usage kinds are disjoint: no bytes decode as both;
//! - a decoded proof of leaf `i` of `n` (for `n` up to 64) verifies against
//!   the tree of `n` small leaves exactly when its siblings are the ones
//!   `MerkleTree::proof` gives, and never for another leaf's bytes.
#![no_main]

use ddc_anchor::merkle::{DataLeaf, InclusionProof, MerkleTree, UsageLeaf};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let data_leaf = DataLeaf::decode(data);
    if let Ok(leaf) = &data_leaf {
        assert_eq!(leaf.encode(), data, "data leaf does not re-encode to its bytes");
        leaf.check().expect("a decoded data leaf passes check");
    }
    let usage_leaf = UsageLeaf::decode(data);
    if let Ok(leaf) = &usage_leaf {
        assert_eq!(leaf.encode(), data, "usage leaf does not re-encode to its bytes");
        leaf.check().expect("a decoded usage leaf passes check");
    }
    assert!(data_leaf.is_err() || usage_leaf.is_err(), "bytes decode as a data leaf and a usage leaf");

    let Ok(proof) = InclusionProof::decode(data) else { return };
    assert_eq!(proof.encode(), data, "inclusion proof does not re-encode to its bytes");
    assert_eq!(proof.encoded_bytes(), data.len());
    assert!(proof.leaf_index() < proof.leaf_count());
    if proof.leaf_count() <= 64 {
        let leaves: Vec<[u8; 8]> = (0..proof.leaf_count()).map(u64::to_le_bytes).collect();
        let tree = MerkleTree::from_leaves(&leaves);
        let index = proof.leaf_index() as usize;
        let genuine = tree.proof(index);
        assert_eq!((genuine.leaf_index(), genuine.leaf_count()), (proof.leaf_index(), proof.leaf_count()));
        assert_eq!(genuine.siblings().len(), proof.siblings().len());
        let verifies = proof.verify(&tree.root(), &leaves[index]);
        assert_eq!(verifies, proof == genuine, "a proof verifies with siblings other than the tree's");
        assert!(!proof.verify(&tree.root(), b"not a leaf of the tree"));
    }
});
