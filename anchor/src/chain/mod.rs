//! The Cere chain as the anchoring code sees it: runtime metadata, signed
//! extrinsics, events, and a JSON-RPC client (jsonrpsee over WebSocket).
//!
//! The submission flow ([`submit::anchor_remark`]): read the runtime version,
//! genesis hash and metadata, take the account's next nonce, sign
//! `System.remark_with_event(record)`, submit it, find it in a block, and
//! check that block's events for `System.Remarked` (sender and BLAKE2-256 of
//! the remark) and `System.ExtrinsicSuccess` at its index. The result is a
//! [`submit::Receipt`]: block hash and number, extrinsic index.

pub mod events;
pub mod extrinsic;
pub mod membership;
pub mod metadata;
pub mod rpc;
pub mod submit;

/// What talking to the chain can fail with. Each variant says which step.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ChainError {
    #[error("chain RPC {method}: {message}")]
    Rpc { method: String, message: String },
    #[error("cannot reach the chain at {url}: {message}")]
    Connect { url: String, message: String },
    #[error("runtime metadata: {0}")]
    Metadata(String),
    #[error("signed extension {0} carries data this code cannot fill in; update the anchor crate for this runtime")]
    UnsupportedExtension(String),
    #[error("extrinsic: {0}")]
    Extrinsic(String),
    #[error("events: {0}")]
    Events(String),
    /// The chain refused the transaction (invalid, bad nonce, cannot pay); retried later.
    #[error("the chain refused the extrinsic: {0}")]
    Refused(String),
    /// The extrinsic was included but failed.
    #[error("the extrinsic failed in block {block_number}: {error}")]
    Failed { block_number: u32, error: String },
    #[error("the extrinsic was not seen in a block within {0:?}")]
    NotIncluded(std::time::Duration),
}

/// `twox128(pallet prefix) ++ twox128(entry name)`: the key of a plain storage value.
pub fn storage_key(prefix: &str, entry: &str) -> Vec<u8> {
    let mut key = twox_128(prefix.as_bytes()).to_vec();
    key.extend_from_slice(&twox_128(entry.as_bytes()));
    key
}

/// Substrate's `twox_128`: XXH64 with seeds 0 and 1, little-endian, concatenated.
pub fn twox_128(data: &[u8]) -> [u8; 16] {
    let mut out = [0u8; 16];
    out[..8].copy_from_slice(&twox_hash::XxHash64::oneshot(0, data).to_le_bytes());
    out[8..].copy_from_slice(&twox_hash::XxHash64::oneshot(1, data).to_le_bytes());
    out
}

/// `blake2_128(data) ++ data`: the `Blake2_128Concat` map hasher.
pub fn blake2_128_concat(data: &[u8]) -> Vec<u8> {
    use blake2::digest::consts::U16;
    use blake2::{Blake2b, Digest};
    let mut out = Blake2b::<U16>::digest(data).to_vec();
    out.extend_from_slice(data);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn well_known_storage_keys() {
        // Published in every Substrate chain's storage: System.Events and System.Account's prefix.
        assert_eq!(
            hex::encode(storage_key("System", "Events")),
            "26aa394eea5630e07c48ae0c9558cef780d41e5e16056765bc8461851072c9d7"
        );
        assert_eq!(
            hex::encode(storage_key("System", "Account")),
            "26aa394eea5630e07c48ae0c9558cef7b99d880ec681799c0cf30e8886371da9"
        );
    }
}
