//! Chain anchoring for the DDC storage node (to be built in its own issue).
//!
//! This crate will own everything that talks to the Cere chain: era Merkle
//! roots over sealed segments and usage records, the signed
//! `System.remark_with_event` extrinsic that carries them (SCALE-encoded,
//! signed extensions read from the runtime metadata), submission and
//! inclusion tracking through jsonrpsee, receipts and inclusion proofs.
//!
//! **Boundary:** the only crate that talks to the chain. It is empty on
//! purpose today: nothing else in the workspace depends on it yet.
