//! Put a remark on chain and prove it is there.

use std::time::{Duration, Instant};

use ddc_auth::account::{Account, Keypair};

use super::events::{as_bytes, Event};
use super::extrinsic::{self, blake2_256};
use super::metadata::Metadata;
use super::rpc::Rpc;
use super::ChainError;

/// Where an anchored remark is: enough for anyone to find it again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Receipt {
    pub block_hash: [u8; 32],
    pub block_number: u32,
    pub extrinsic_index: u32,
    /// BLAKE2-256 of the whole extrinsic (what `author_submitExtrinsic` returned).
    pub tx_hash: [u8; 32],
    /// The fee the signer paid, from `TransactionPayment.TransactionFeePaid` (0 if the
    /// runtime emits no such event).
    pub fee: u128,
}

/// How often to look for the extrinsic in new blocks.
const POLL: Duration = Duration::from_millis(200);

/// Sign `System.remark_with_event(remark)` as `signer`, submit it, and wait
/// (up to `timeout`) until it is in a block whose events show
/// `System.Remarked` by `signer` with the remark's hash and
/// `System.ExtrinsicSuccess`, both at its index.
pub async fn anchor_remark(
    rpc: &Rpc,
    metadata: &Metadata,
    signer: &Keypair,
    remark: &[u8],
    timeout: Duration,
) -> Result<Receipt, ChainError> {
    let call = extrinsic::remark_with_event(metadata, remark)?;
    let (mut receipt, events) = submit_call(rpc, metadata, signer, &call, timeout).await?;
    receipt.fee = check_events(&events, &receipt, &signer.account(), remark)?;
    Ok(receipt)
}

/// Sign `call` as `signer` with its next nonce, submit it, and wait (up to
/// `timeout`) for the block that holds it. Returns where it is and that
/// block's events; fails if the events say `System.ExtrinsicFailed` at its
/// index, and sets the receipt's fee from `TransactionFeePaid`.
pub async fn submit_call(
    rpc: &Rpc,
    metadata: &Metadata,
    signer: &Keypair,
    call: &[u8],
    timeout: Duration,
) -> Result<(Receipt, Vec<Event>), ChainError> {
    let state = rpc.chain_state().await?;
    let nonce = rpc.next_nonce(&signer.account()).await?;
    let xt = extrinsic::sign(metadata, &state, signer, nonce, 0, call)?;
    let from = rpc.head_number().await?;
    let tx_hash = rpc.submit(&xt).await?;
    if tx_hash != blake2_256(&xt) {
        return Err(ChainError::Extrinsic("the node reports another transaction hash than ours".into()));
    }
    let deadline = Instant::now() + timeout;
    let mut next = from + 1;
    loop {
        let head = rpc.head_number().await?;
        while next <= head {
            if let Some(hash) = rpc.block_hash(next).await? {
                if let Some((number, extrinsics)) = rpc.block(&hash).await? {
                    if let Some(index) = extrinsics.iter().position(|x| *x == xt) {
                        let mut receipt = Receipt {
                            block_hash: hash,
                            block_number: number,
                            extrinsic_index: index as u32,
                            tx_hash,
                            fee: 0,
                        };
                        let events = rpc.events(metadata, &hash).await?;
                        receipt.fee = outcome(&events, &receipt)?;
                        return Ok((receipt, events));
                    }
                }
            }
            next += 1;
        }
        if Instant::now() >= deadline {
            return Err(ChainError::NotIncluded(timeout));
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The outcome of the extrinsic at `receipt`: the fee it paid
/// (`TransactionPayment.TransactionFeePaid`, 0 if absent), or its failure.
fn outcome(events: &[Event], receipt: &Receipt) -> Result<u128, ChainError> {
    let mine: Vec<&Event> = events.iter().filter(|e| e.extrinsic == Some(receipt.extrinsic_index)).collect();
    if let Some(failed) = mine.iter().find(|e| e.pallet == "System" && e.name == "ExtrinsicFailed") {
        return Err(ChainError::Failed { block_number: receipt.block_number, error: format!("{:?}", failed.fields) });
    }
    if !mine.iter().any(|e| e.pallet == "System" && e.name == "ExtrinsicSuccess") {
        return Err(ChainError::Events(format!(
            "no System.ExtrinsicSuccess at extrinsic {} of block {}",
            receipt.extrinsic_index, receipt.block_number
        )));
    }
    Ok(mine
        .iter()
        .find(|e| e.pallet == "TransactionPayment" && e.name == "TransactionFeePaid")
        .and_then(|e| e.field("actual_fee", 1))
        .and_then(super::events::as_u128)
        .unwrap_or(0))
}

/// Check that the block's events say the remark at `receipt` succeeded, by
/// `sender`. Returns the fee paid (`TransactionPayment.TransactionFeePaid`, 0 if absent).
pub fn check_events(events: &[Event], receipt: &Receipt, sender: &Account, remark: &[u8]) -> Result<u128, ChainError> {
    let fee = outcome(events, receipt)?;
    let mine: Vec<&Event> = events.iter().filter(|e| e.extrinsic == Some(receipt.extrinsic_index)).collect();
    let remarked = mine.iter().any(|e| {
        e.pallet == "System"
            && e.name == "Remarked"
            && e.field("sender", 0).and_then(as_bytes).as_deref() == Some(&sender.0[..])
            && e.field("hash", 1).and_then(as_bytes).as_deref() == Some(&blake2_256(remark)[..])
    });
    if !remarked {
        return Err(ChainError::Events(format!(
            "no System.Remarked by {sender} with the remark's hash at extrinsic {} of block {}",
            receipt.extrinsic_index, receipt.block_number
        )));
    }
    Ok(fee)
}

/// Read an anchored remark back from the chain, trusting nothing but the
/// chain: the extrinsic at the receipt's place must be a successful
/// `System.remark_with_event` signed by `expected_sender`. Returns the remark.
pub async fn read_remark(rpc: &Rpc, receipt: &Receipt, expected_sender: &Account) -> Result<Vec<u8>, ChainError> {
    // The metadata of the runtime that built that block: the runtime may have been upgraded since.
    let metadata = rpc.metadata_at(&receipt.block_hash).await?;
    let (number, extrinsics) = rpc.block(&receipt.block_hash).await?.ok_or_else(|| {
        ChainError::Extrinsic(format!("block 0x{} is unknown to the chain", hex::encode(receipt.block_hash)))
    })?;
    if number != receipt.block_number {
        return Err(ChainError::Extrinsic(format!(
            "this chain does not have the receipt's block 0x{} (it answers with block {number}; the receipt says {})",
            hex::encode(receipt.block_hash),
            receipt.block_number
        )));
    }
    let xt = extrinsics
        .get(receipt.extrinsic_index as usize)
        .ok_or_else(|| ChainError::Extrinsic(format!("block {number} has no extrinsic {}", receipt.extrinsic_index)))?;
    let decoded = extrinsic::decode(&metadata, xt)?;
    if decoded.signer.as_ref() != Some(expected_sender) {
        return Err(ChainError::Extrinsic(format!(
            "extrinsic {} of block {number} is not signed by {expected_sender}",
            receipt.extrinsic_index
        )));
    }
    let remark = extrinsic::remark_of(&metadata, &decoded.call)?.ok_or_else(|| {
        ChainError::Extrinsic(format!(
            "extrinsic {} of block {number} is not System.remark_with_event",
            receipt.extrinsic_index
        ))
    })?;
    check_events(&rpc.events(&metadata, &receipt.block_hash).await?, receipt, expected_sender, &remark)?;
    Ok(remark)
}
