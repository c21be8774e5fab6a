//! Registering a DDC cluster and its storage nodes on a test chain with real
//! extrinsics (DdcClusters, DdcNodes, DdcStaking), each argument encoded with
//! the runtime's own types. The sequence that works on runtime 54113:
//! manager `create_cluster` + `bond_cluster`; per node, provider
//! `create_node` + `bond` + `store`; manager `add_node` + `validate_node`.
#![allow(dead_code, reason = "each test binary uses a different part of this module")]

use std::time::Duration;

use ddc_anchor::chain::metadata::Metadata;
use ddc_anchor::chain::rpc::Rpc;
use ddc_anchor::chain::submit::submit_call;
use ddc_auth::account::Keypair;
use scale_value::Value;

const TIMEOUT: Duration = Duration::from_secs(120);
pub const CERE: u128 = 10_000_000_000;

fn account(key: &Keypair) -> Value<()> {
    Value::from_bytes(key.account().0)
}

fn node_key(key: &Keypair) -> Value<()> {
    Value::unnamed_variant("StoragePubKey", [account(key)])
}

async fn call(rpc: &Rpc, md: &Metadata, signer: &Keypair, pallet: &str, name: &str, args: &[Value<()>]) {
    let encoded = md.encode_call(pallet, name, args).unwrap_or_else(|e| panic!("encode {pallet}.{name}: {e}"));
    if let Err(e) = submit_call(rpc, md, signer, &encoded, TIMEOUT).await {
        panic!("{pallet}.{name} by {}: {e}", signer.account());
    }
}

/// Create cluster `cluster_id` managed by `manager` with these parameters, and bond it.
pub async fn create_cluster(
    rpc: &Rpc,
    md: &Metadata,
    manager: &Keypair,
    cluster_id: [u8; 20],
    k: u32,
    n: u32,
    replication: u32,
) {
    let params = Value::named_composite([
        ("node_provider_auth_contract", Value::unnamed_variant("None", [])),
        ("erasure_coding_required", Value::u128(k.into())),
        ("erasure_coding_total", Value::u128(n.into())),
        ("replication_total", Value::u128(replication.into())),
    ]);
    let protocol = Value::named_composite([
        ("treasury_share", Value::u128(0)),
        ("validators_share", Value::u128(0)),
        ("cluster_reserve_share", Value::u128(0)),
        ("storage_bond_size", Value::u128(2 * CERE)),
        ("storage_chill_delay", Value::u128(1)),
        ("storage_unbonding_delay", Value::u128(1)),
        ("unit_per_mb_stored", Value::u128(1)),
        ("unit_per_mb_streamed", Value::u128(1)),
        ("unit_per_put_request", Value::u128(1)),
        ("unit_per_get_request", Value::u128(1)),
    ]);
    let cid = Value::from_bytes(cluster_id);
    call(rpc, md, manager, "DdcClusters", "create_cluster", &[cid.clone(), account(manager), params, protocol]).await;
    call(rpc, md, manager, "DdcStaking", "bond_cluster", &[cid]).await;
}

/// Register `node` (its own provider) at `host`:`port` and add it to the cluster.
pub async fn add_node(
    rpc: &Rpc,
    md: &Metadata,
    manager: &Keypair,
    cluster_id: [u8; 20],
    node: &Keypair,
    host: &str,
    port: u16,
) {
    let props = Value::named_composite([
        ("mode", Value::unnamed_variant("Full", [])),
        ("host", Value::from_bytes(host.as_bytes())),
        ("domain", Value::from_bytes(b"")),
        ("ssl", Value::bool(false)),
        ("http_port", Value::u128(port.into())),
        ("grpc_port", Value::u128(port.into())),
        ("p2p_port", Value::u128(port.into())),
    ]);
    let params = Value::unnamed_variant("StorageParams", [props]);
    call(rpc, md, node, "DdcNodes", "create_node", &[node_key(node), params]).await;
    let controller = Value::unnamed_variant("Id", [account(node)]);
    call(rpc, md, node, "DdcStaking", "bond", &[controller, node_key(node), Value::u128(5 * CERE)]).await;
    let cid = Value::from_bytes(cluster_id);
    call(rpc, md, node, "DdcStaking", "store", std::slice::from_ref(&cid)).await;
    call(
        rpc,
        md,
        manager,
        "DdcClusters",
        "add_node",
        &[cid.clone(), node_key(node), Value::unnamed_variant("External", [])],
    )
    .await;
    call(rpc, md, manager, "DdcClusters", "validate_node", &[cid, node_key(node), Value::bool(true)]).await;
}
