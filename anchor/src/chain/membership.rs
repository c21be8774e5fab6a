//! A DDC cluster as the chain records it: the cluster's parameters
//! (`DdcClusters.Clusters`), its nodes (`DdcClusters.ClustersNodes`) and
//! each node's host and ports (`DdcNodes.StorageNodes`).
//!
//! Values are decoded with the runtime's own types (from its metadata) and
//! read by field name, so a runtime that reorders or adds fields still reads.
//! Keys: `Clusters` and `StorageNodes` are `Blake2_128Concat` maps;
//! `ClustersNodes` is a double map keyed by the cluster id and the node's
//! `NodePubKey` (`0x00 | 32-byte key` for a storage node), listed with
//! `state_getKeysPaged` under the cluster's prefix.

use scale_value::{Composite, Value, ValueDef};

use super::events::{as_bytes, as_u128};
use super::metadata::Metadata;
use super::rpc::Rpc;
use super::{blake2_128_concat, storage_key, ChainError};

/// One storage node of a cluster, as registered with `DdcNodes.create_node`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainNode {
    /// The node's ed25519 public key (`StoragePubKey`).
    pub pub_key: [u8; 32],
    pub host: String,
    pub http_port: u16,
    pub grpc_port: u16,
    pub p2p_port: u16,
    /// The node's state in the cluster (`AwaitsValidation`, `ValidationSucceeded`, `ValidationFailed`).
    pub status: String,
}

/// A cluster's parameters and nodes. Parameters the chain leaves at 0 are 0 here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainCluster {
    pub erasure_coding_required: u32,
    pub erasure_coding_total: u32,
    pub replication_total: u32,
    /// Sorted by public key.
    pub nodes: Vec<ChainNode>,
}

fn field<'a>(value: &'a Value<u32>, name: &str) -> Option<&'a Value<u32>> {
    match &value.value {
        ValueDef::Composite(Composite::Named(fields)) => fields.iter().find(|(n, _)| n == name).map(|(_, v)| v),
        // A newtype wrapper around the struct.
        ValueDef::Composite(Composite::Unnamed(fields)) if fields.len() == 1 => field(&fields[0], name),
        _ => None,
    }
}

fn variant_name(value: &Value<u32>) -> Option<String> {
    match &value.value {
        ValueDef::Variant(v) => Some(v.name.clone()),
        _ => None,
    }
}

fn number(value: &Value<u32>, what: &str) -> Result<u128, ChainError> {
    as_u128(value).ok_or_else(|| ChainError::Metadata(format!("{what} is not a number")))
}

async fn value(
    rpc: &Rpc,
    metadata: &Metadata,
    pallet: &str,
    entry: &str,
    key: &[u8],
) -> Result<Option<Value<u32>>, ChainError> {
    let (prefix, ty) = metadata.storage_value_type(pallet, entry)?;
    let mut full = storage_key(&prefix, entry);
    full.extend_from_slice(key);
    let Some(bytes) = rpc.storage(&full, None).await? else { return Ok(None) };
    let mut input = &bytes[..];
    let v = scale_value::scale::decode_as_type(&mut input, ty, &metadata.registry)
        .map_err(|e| ChainError::Metadata(format!("{pallet}.{entry}: {e}")))?;
    Ok(Some(v))
}

/// Read cluster `cluster_id` from the chain's current state.
pub async fn read_cluster(rpc: &Rpc, metadata: &Metadata, cluster_id: &[u8; 20]) -> Result<ChainCluster, ChainError> {
    let cid = hex::encode(cluster_id);
    let cluster = value(rpc, metadata, "DdcClusters", "Clusters", &blake2_128_concat(cluster_id))
        .await?
        .ok_or_else(|| ChainError::Metadata(format!("cluster 0x{cid} is not on chain")))?;
    let props = field(&cluster, "props").ok_or_else(|| ChainError::Metadata("Cluster has no props".into()))?;
    let param = |name: &str| -> Result<u32, ChainError> {
        let v = field(props, name).ok_or_else(|| ChainError::Metadata(format!("ClusterProps has no {name}")))?;
        u32::try_from(number(v, name)?).map_err(|_| ChainError::Metadata(format!("{name} out of range")))
    };
    let (k, n, replication) =
        (param("erasure_coding_required")?, param("erasure_coding_total")?, param("replication_total")?);

    let (prefix, _) = metadata.storage_value_type("DdcClusters", "ClustersNodes")?;
    let mut members_prefix = storage_key(&prefix, "ClustersNodes");
    members_prefix.extend_from_slice(&blake2_128_concat(cluster_id));
    let mut keys = Vec::new();
    let mut start: Option<Vec<u8>> = None;
    loop {
        let page = rpc.keys_paged(&members_prefix, 1000, start.as_deref()).await?;
        let done = page.len() < 1000;
        start = page.last().cloned();
        keys.extend(page);
        if done {
            break;
        }
    }
    let mut nodes = Vec::new();
    for key in keys {
        // prefix | blake2_128(NodePubKey) | NodePubKey (variant 0 StoragePubKey: 0x00 | 32 bytes)
        let suffix = &key[members_prefix.len()..];
        if suffix.len() != 16 + 33 || suffix[16] != 0 {
            continue; // another kind of node key: not a storage node
        }
        let mut pub_key = [0u8; 32];
        pub_key.copy_from_slice(&suffix[17..]);
        let state =
            value(rpc, metadata, "DdcClusters", "ClustersNodes", suffix_with_cluster(cluster_id, suffix).as_slice())
                .await?;
        let status = state.as_ref().and_then(|s| field(s, "status")).and_then(variant_name).unwrap_or_default();
        let node =
            value(rpc, metadata, "DdcNodes", "StorageNodes", &blake2_128_concat(&pub_key)).await?.ok_or_else(|| {
                ChainError::Metadata(format!(
                    "node 0x{} of cluster 0x{cid} has no StorageNodes entry",
                    hex::encode(pub_key)
                ))
            })?;
        let props = field(&node, "props").ok_or_else(|| ChainError::Metadata("StorageNode has no props".into()))?;
        let host_bytes = field(props, "host").and_then(as_bytes).unwrap_or_default();
        let host = String::from_utf8(host_bytes).map_err(|_| ChainError::Metadata("node host is not UTF-8".into()))?;
        let port = |name: &str| -> Result<u16, ChainError> {
            let v = field(props, name).ok_or_else(|| ChainError::Metadata(format!("node props have no {name}")))?;
            u16::try_from(number(v, name)?).map_err(|_| ChainError::Metadata(format!("{name} out of range")))
        };
        nodes.push(ChainNode {
            pub_key,
            host,
            http_port: port("http_port")?,
            grpc_port: port("grpc_port")?,
            p2p_port: port("p2p_port")?,
            status,
        });
    }
    nodes.sort_by_key(|n| n.pub_key);
    Ok(ChainCluster { erasure_coding_required: k, erasure_coding_total: n, replication_total: replication, nodes })
}

/// The double map's key after the entry prefix: the cluster's hashed key, then the node's.
fn suffix_with_cluster(cluster_id: &[u8; 20], node_suffix: &[u8]) -> Vec<u8> {
    let mut key = blake2_128_concat(cluster_id);
    key.extend_from_slice(node_suffix);
    key
}
