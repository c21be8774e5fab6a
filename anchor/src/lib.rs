//! Chain anchoring for the DDC storage node.
//!
//! This crate owns everything that talks to the Cere chain: era Merkle roots
//! over sealed segments and usage records ([`merkle`]), the signed anchor
//! record that carries them ([`record`]), the `System.remark_with_event`
//! extrinsic (SCALE-encoded, signed extensions read from the runtime
//! metadata), submission and inclusion tracking through jsonrpsee, receipts
//! and inclusion proofs. See docs/ANCHORING.md.
//!
//! **Boundary:** the only crate that talks to the chain.

#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod chain;
pub mod era;
pub mod merkle;
pub mod record;

pub use record::AnchorError;
