//! JSON-RPC to a Substrate node (or chopsticks) over WebSocket, through jsonrpsee.

use std::time::Duration;

use ddc_auth::account::Account;
use jsonrpsee::core::client::ClientT;
use jsonrpsee::rpc_params;
use jsonrpsee::ws_client::{WsClient, WsClientBuilder};
use serde_json::Value;

use super::events::{self, Event};
use super::extrinsic::ChainState;
use super::metadata::Metadata;
use super::ChainError;

pub struct Rpc {
    client: WsClient,
    pub url: String,
}

fn hex_bytes(method: &str, value: &Value) -> Result<Vec<u8>, ChainError> {
    let text = value.as_str().ok_or_else(|| rpc_error(method, format!("expected a hex string, got {value}")))?;
    hex::decode(text.trim_start_matches("0x")).map_err(|e| rpc_error(method, format!("bad hex: {e}")))
}

fn hash32(method: &str, value: &Value) -> Result<[u8; 32], ChainError> {
    hex_bytes(method, value)?.try_into().map_err(|_| rpc_error(method, "expected a 32-byte hash".into()))
}

fn rpc_error(method: &str, message: String) -> ChainError {
    ChainError::Rpc { method: method.to_owned(), message }
}

/// Block numbers come as hex strings ("0x1a") in headers.
fn number(method: &str, value: &Value) -> Result<u32, ChainError> {
    match value {
        Value::String(s) => u32::from_str_radix(s.trim_start_matches("0x"), 16)
            .map_err(|e| rpc_error(method, format!("bad block number {s}: {e}"))),
        Value::Number(n) => n
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| rpc_error(method, format!("bad block number {n}"))),
        other => Err(rpc_error(method, format!("bad block number {other}"))),
    }
}

impl Rpc {
    pub async fn connect(url: &str, timeout: Duration) -> Result<Rpc, ChainError> {
        let client = WsClientBuilder::default()
            .connection_timeout(timeout)
            .request_timeout(timeout)
            .max_response_size(64 << 20)
            .build(url)
            .await
            .map_err(|e| ChainError::Connect { url: url.to_owned(), message: e.to_string() })?;
        Ok(Rpc { client, url: url.to_owned() })
    }

    async fn call(&self, method: &str, params: jsonrpsee::core::params::ArrayParams) -> Result<Value, ChainError> {
        self.client.request::<Value, _>(method, params).await.map_err(|e| match e {
            jsonrpsee::core::ClientError::Call(call) => {
                let data = call.data().map(|d| format!(" ({})", d.get())).unwrap_or_default();
                let message = format!("{}{data}", call.message());
                // 1010: invalid transaction (bad nonce, cannot pay, outdated); 1011-1014: pool refusals.
                if method.starts_with("author_") && (1010..=1014).contains(&call.code()) {
                    ChainError::Refused(message)
                } else {
                    rpc_error(method, message)
                }
            }
            other => rpc_error(method, other.to_string()),
        })
    }

    pub async fn metadata(&self) -> Result<Metadata, ChainError> {
        let raw = self.call("state_getMetadata", rpc_params![]).await?;
        Metadata::decode(&hex_bytes("state_getMetadata", &raw)?)
    }

    /// The metadata of the runtime that was in force at block `at`.
    pub async fn metadata_at(&self, at: &[u8; 32]) -> Result<Metadata, ChainError> {
        let raw = self.call("state_getMetadata", rpc_params![format!("0x{}", hex::encode(at))]).await?;
        Metadata::decode(&hex_bytes("state_getMetadata", &raw)?)
    }

    pub async fn chain_state(&self) -> Result<ChainState, ChainError> {
        let version = self.call("state_getRuntimeVersion", rpc_params![]).await?;
        let field = |name: &str| {
            version
                .get(name)
                .and_then(Value::as_u64)
                .and_then(|v| u32::try_from(v).ok())
                .ok_or_else(|| rpc_error("state_getRuntimeVersion", format!("no {name}")))
        };
        let genesis = self.call("chain_getBlockHash", rpc_params![0]).await?;
        Ok(ChainState {
            genesis_hash: hash32("chain_getBlockHash", &genesis)?,
            spec_version: field("specVersion")?,
            transaction_version: field("transactionVersion")?,
        })
    }

    /// The nonce the account's next extrinsic must carry (counts the transaction pool).
    pub async fn next_nonce(&self, account: &Account) -> Result<u32, ChainError> {
        let v = self.call("system_accountNextIndex", rpc_params![account.to_ss58()]).await?;
        v.as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| rpc_error("system_accountNextIndex", format!("bad nonce {v}")))
    }

    /// Submit; returns the transaction hash.
    pub async fn submit(&self, extrinsic: &[u8]) -> Result<[u8; 32], ChainError> {
        let v = self.call("author_submitExtrinsic", rpc_params![format!("0x{}", hex::encode(extrinsic))]).await?;
        hash32("author_submitExtrinsic", &v)
    }

    /// The best block's number.
    pub async fn head_number(&self) -> Result<u32, ChainError> {
        let header = self.call("chain_getHeader", rpc_params![]).await?;
        number("chain_getHeader", header.get("number").unwrap_or(&Value::Null))
    }

    pub async fn block_hash(&self, number: u32) -> Result<Option<[u8; 32]>, ChainError> {
        let v = self.call("chain_getBlockHash", rpc_params![number]).await?;
        if v.is_null() {
            return Ok(None);
        }
        hash32("chain_getBlockHash", &v).map(Some)
    }

    /// A block's number and extrinsics, or None if the node does not know the hash.
    pub async fn block(&self, hash: &[u8; 32]) -> Result<Option<(u32, Vec<Vec<u8>>)>, ChainError> {
        let v = self.call("chain_getBlock", rpc_params![format!("0x{}", hex::encode(hash))]).await?;
        if v.is_null() {
            return Ok(None);
        }
        let block = v.get("block").ok_or_else(|| rpc_error("chain_getBlock", "no block".into()))?;
        let n = number("chain_getBlock", block.pointer("/header/number").unwrap_or(&Value::Null))?;
        let extrinsics = block
            .get("extrinsics")
            .and_then(Value::as_array)
            .ok_or_else(|| rpc_error("chain_getBlock", "no extrinsics".into()))?
            .iter()
            .map(|x| hex_bytes("chain_getBlock", x))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Some((n, extrinsics)))
    }

    pub async fn storage(&self, key: &[u8], at: Option<&[u8; 32]>) -> Result<Option<Vec<u8>>, ChainError> {
        let key = format!("0x{}", hex::encode(key));
        let v = match at {
            Some(h) => self.call("state_getStorage", rpc_params![key, format!("0x{}", hex::encode(h))]).await?,
            None => self.call("state_getStorage", rpc_params![key]).await?,
        };
        if v.is_null() {
            return Ok(None);
        }
        hex_bytes("state_getStorage", &v).map(Some)
    }

    /// Up to `count` storage keys starting with `prefix`, after `start` (paging), at the best block.
    pub async fn keys_paged(
        &self,
        prefix: &[u8],
        count: u32,
        start: Option<&[u8]>,
    ) -> Result<Vec<Vec<u8>>, ChainError> {
        let prefix = format!("0x{}", hex::encode(prefix));
        let v = match start {
            Some(s) => {
                self.call("state_getKeysPaged", rpc_params![prefix, count, format!("0x{}", hex::encode(s))]).await?
            }
            None => self.call("state_getKeysPaged", rpc_params![prefix, count]).await?,
        };
        v.as_array()
            .ok_or_else(|| rpc_error("state_getKeysPaged", format!("expected a list, got {v}")))?
            .iter()
            .map(|k| hex_bytes("state_getKeysPaged", k))
            .collect()
    }

    /// The events of the block `at`.
    pub async fn events(&self, metadata: &Metadata, at: &[u8; 32]) -> Result<Vec<Event>, ChainError> {
        let (prefix, _) = metadata.storage_value_type("System", "Events")?;
        let key = super::storage_key(&prefix, "Events");
        match self.storage(&key, Some(at)).await? {
            Some(bytes) => events::decode(metadata, &bytes),
            None => Ok(Vec::new()),
        }
    }
}
