//! Cluster membership read from the Cere chain (`cluster.membership_source =
//! "chain"`): the cluster `anchor.cluster_id` in `DdcClusters`, its nodes'
//! keys and `host`:`grpc_port` from `DdcNodes` (docs/ANCHORING.md,
//! "Membership from the chain").
//!
//! Parameters the chain leaves at 0 take the chain's defaults (k 4, n 6,
//! replication 3); `min_insync_replicas` is not on chain and is 2 (at most
//! the replication). Nodes whose validation failed are left out. A host that
//! does not resolve refuses the start, naming the node: placement must be
//! the same on every node, so no member may be skipped.

use std::net::ToSocketAddrs;
use std::time::Duration;

use ddc_anchor::chain::membership::read_cluster;
use ddc_anchor::chain::rpc::Rpc;
use ddc_cluster::membership::{
    Member, Membership, NodeId, ERASURE_CODING_REQUIRED_DEFAULT, ERASURE_CODING_TOTAL_DEFAULT,
    MIN_INSYNC_REPLICAS_DEFAULT, REPLICATION_TOTAL_DEFAULT,
};

use crate::config::NodeConfig;

/// Read and validate the membership; also returns a description for logs.
pub fn load(config: &NodeConfig) -> anyhow::Result<(Membership, String)> {
    let Some(url) = &config.anchor.chain_url else {
        anyhow::bail!("cluster.membership_source = \"chain\" needs anchor.chain_url");
    };
    let cluster_id = config.anchor.cluster_id_bytes().map_err(anyhow::Error::msg)?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let timeout = Duration::from_millis(config.anchor.submit_timeout_ms);
    let cluster = runtime.block_on(async {
        let rpc = Rpc::connect(url, timeout).await?;
        let metadata = rpc.metadata().await?;
        read_cluster(&rpc, &metadata, &cluster_id).await
    })?;
    let or_default = |v: u32, d: u8| if v == 0 { Ok(d) } else { u8::try_from(v) };
    let erasure_coding_required = or_default(cluster.erasure_coding_required, ERASURE_CODING_REQUIRED_DEFAULT)?;
    let erasure_coding_total = or_default(cluster.erasure_coding_total, ERASURE_CODING_TOTAL_DEFAULT)?;
    let replication_total = or_default(cluster.replication_total, REPLICATION_TOTAL_DEFAULT)?;
    let mut nodes = Vec::new();
    for node in cluster.nodes.iter().filter(|n| n.status != "ValidationFailed") {
        let where_ = format!("{}:{}", node.host, node.grpc_port);
        let address = where_.to_socket_addrs().ok().and_then(|mut a| a.next()).ok_or_else(|| {
            anyhow::anyhow!("node 0x{} of the chain's cluster: {where_} does not resolve", hex::encode(node.pub_key))
        })?;
        nodes.push(Member { id: NodeId(node.pub_key), address });
    }
    nodes.sort_by_key(|m| m.id);
    let membership = Membership {
        cluster_id: format!("0x{}", hex::encode(cluster_id)),
        erasure_coding_required,
        erasure_coding_total,
        replication_total,
        min_insync_replicas: MIN_INSYNC_REPLICAS_DEFAULT.min(replication_total),
        nodes,
    };
    membership.validate().map_err(|e| anyhow::anyhow!("the chain's cluster 0x{}: {e}", hex::encode(cluster_id)))?;
    Ok((membership, format!("cluster 0x{} on {url}", hex::encode(cluster_id))))
}
