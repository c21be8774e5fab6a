//! Signed extrinsics for the Cere chain (format version 4), built from the
//! runtime's metadata.
//!
//! ```text
//! extrinsic = Compact<u32>(len) | body
//! body      = 0x84 (signed, version 4)
//!           | MultiAddress::Id      = 0x00 | account (32)
//!           | MultiSignature::Ed25519 = 0x00 | signature (64)
//!           | extra   (each signed extension's data, in metadata order)
//!           | call    = pallet index | call index | arguments
//! signed    = call | extra | additional (each extension's signed-only data)
//!             signed as is, or its BLAKE2b-256 when longer than 256 bytes
//! ```
//!
//! The extensions are read from the metadata, in its order. Those that carry
//! data are encoded by identifier (below); any other extension must carry no
//! data (zero-sized types), or building refuses with its name: guessing
//! would produce an extrinsic the chain rejects as a bad signature.
//!
//! | identifier | extra | additional signed |
//! | --- | --- | --- |
//! | CheckSpecVersion | | `u32` spec_version |
//! | CheckTxVersion | | `u32` transaction_version |
//! | CheckGenesis | | genesis hash |
//! | CheckMortality, CheckEra | `0x00` (immortal) | genesis hash |
//! | CheckNonce | `Compact<u32>` nonce | |
//! | ChargeTransactionPayment | `Compact<u128>` tip | |
//! | ChargeAssetTxPayment | `Compact<u128>` tip, `0x00` (no asset) | |
//! | CheckMetadataHash | `0x00` (mode disabled) | `0x00` (no hash) |
//! | anything zero-sized (CheckNonZeroSender, CheckWeight, ...) | | |

use blake2::digest::consts::U32;
use blake2::{Blake2b, Digest};
use ddc_auth::account::{Account, Keypair};
use parity_scale_codec::{Compact, Decode, Encode};

use super::metadata::Metadata;
use super::ChainError;

/// What the signed payload commits to besides the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChainState {
    pub genesis_hash: [u8; 32],
    pub spec_version: u32,
    pub transaction_version: u32,
}

const SIGNED_V4: u8 = 0x84;
const MULTI_ADDRESS_ID: u8 = 0;
const MULTI_SIGNATURE_ED25519: u8 = 0;

pub fn blake2_256(data: &[u8]) -> [u8; 32] {
    Blake2b::<U32>::digest(data).into()
}

/// The call `System.remark_with_event(remark)`.
pub fn remark_with_event(metadata: &Metadata, remark: &[u8]) -> Result<Vec<u8>, ChainError> {
    let mut call = metadata.call_index("System", "remark_with_event")?.to_vec();
    remark.to_vec().encode_to(&mut call);
    Ok(call)
}

/// The extra and additional bytes of every signed extension, in order.
fn extensions(
    metadata: &Metadata,
    state: &ChainState,
    nonce: u32,
    tip: u128,
) -> Result<(Vec<u8>, Vec<u8>), ChainError> {
    let mut extra = Vec::new();
    let mut additional = Vec::new();
    for ext in &metadata.extensions {
        match ext.identifier.as_str() {
            "CheckSpecVersion" => state.spec_version.encode_to(&mut additional),
            "CheckTxVersion" => state.transaction_version.encode_to(&mut additional),
            "CheckGenesis" => additional.extend_from_slice(&state.genesis_hash),
            "CheckMortality" | "CheckEra" => {
                extra.push(0x00);
                additional.extend_from_slice(&state.genesis_hash);
            }
            "CheckNonce" => Compact(nonce).encode_to(&mut extra),
            "ChargeTransactionPayment" => Compact(tip).encode_to(&mut extra),
            "ChargeAssetTxPayment" => {
                Compact(tip).encode_to(&mut extra);
                extra.push(0x00);
            }
            "CheckMetadataHash" => {
                extra.push(0x00);
                additional.push(0x00);
            }
            other => {
                if !(metadata.is_zero_sized(ext.ty)? && metadata.is_zero_sized(ext.additional)?) {
                    return Err(ChainError::UnsupportedExtension(other.to_owned()));
                }
            }
        }
    }
    Ok((extra, additional))
}

/// Build and sign an extrinsic carrying `call`, from `signer`, immortal.
pub fn sign(
    metadata: &Metadata,
    state: &ChainState,
    signer: &Keypair,
    nonce: u32,
    tip: u128,
    call: &[u8],
) -> Result<Vec<u8>, ChainError> {
    let (extra, additional) = extensions(metadata, state, nonce, tip)?;
    let mut payload = Vec::with_capacity(call.len() + extra.len() + additional.len());
    payload.extend_from_slice(call);
    payload.extend_from_slice(&extra);
    payload.extend_from_slice(&additional);
    let signature = if payload.len() > 256 { signer.sign(&blake2_256(&payload)) } else { signer.sign(&payload) };
    let mut body = Vec::with_capacity(1 + 33 + 65 + extra.len() + call.len());
    body.push(SIGNED_V4);
    body.push(MULTI_ADDRESS_ID);
    body.extend_from_slice(&signer.account().0);
    body.push(MULTI_SIGNATURE_ED25519);
    body.extend_from_slice(&signature);
    body.extend_from_slice(&extra);
    body.extend_from_slice(call);
    let mut out = Compact(body.len() as u32).encode();
    out.extend_from_slice(&body);
    Ok(out)
}

/// A signed extrinsic taken apart: who signed it and its call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodedExtrinsic {
    /// The signer, when the address is an account id (None: unsigned, or another address kind).
    pub signer: Option<Account>,
    pub call: Vec<u8>,
}

/// Take apart an extrinsic as found in a block, skipping the extras with the
/// metadata's types (so any runtime's extensions are understood).
pub fn decode(metadata: &Metadata, bytes: &[u8]) -> Result<DecodedExtrinsic, ChainError> {
    let bad = |what: &str| ChainError::Extrinsic(what.to_owned());
    let mut input = bytes;
    let len = Compact::<u32>::decode(&mut input).map_err(|_| bad("no length prefix"))?.0 as usize;
    if input.len() != len {
        return Err(bad("the length prefix does not match"));
    }
    let (&version, mut rest) = input.split_first().ok_or_else(|| bad("empty"))?;
    if version & 0x7f != 4 {
        return Err(ChainError::Extrinsic(format!("extrinsic version {} is not 4", version & 0x7f)));
    }
    if version & 0x80 == 0 {
        return Ok(DecodedExtrinsic { signer: None, call: rest.to_vec() });
    }
    let take = |rest: &mut &[u8], n: usize| -> Result<Vec<u8>, ChainError> {
        if rest.len() < n {
            return Err(bad("truncated"));
        }
        let (a, b) = rest.split_at(n);
        *rest = b;
        Ok(a.to_vec())
    };
    let address_kind = take(&mut rest, 1)?[0];
    let signer = match address_kind {
        0 => {
            let id = take(&mut rest, 32)?;
            let mut a = [0u8; 32];
            a.copy_from_slice(&id);
            Some(Account(a))
        }
        _ => return Err(ChainError::Extrinsic(format!("address kind {address_kind} is not an account id"))),
    };
    let signature_len = match take(&mut rest, 1)?[0] {
        0 | 1 => 64,
        2 => 65,
        other => return Err(ChainError::Extrinsic(format!("signature kind {other} unknown"))),
    };
    take(&mut rest, signature_len)?;
    for ext in &metadata.extensions {
        scale_value::scale::decode_as_type(&mut rest, ext.ty, &metadata.registry)
            .map_err(|e| ChainError::Extrinsic(format!("extension {}: {e}", ext.identifier)))?;
    }
    Ok(DecodedExtrinsic { signer, call: rest.to_vec() })
}

/// The remark of a `System.remark_with_event` call, or None for any other call.
pub fn remark_of(metadata: &Metadata, call: &[u8]) -> Result<Option<Vec<u8>>, ChainError> {
    let index = metadata.call_index("System", "remark_with_event")?;
    if call.len() < 2 || call[..2] != index {
        return Ok(None);
    }
    let mut args = &call[2..];
    let remark = Vec::<u8>::decode(&mut args).map_err(|e| ChainError::Extrinsic(format!("remark: {e}")))?;
    if !args.is_empty() {
        return Err(ChainError::Extrinsic("bytes after the remark".into()));
    }
    Ok(Some(remark))
}
