//! Reading a DDC cluster from the real runtime (54113 under chopsticks): the
//! genesis cluster's four nodes, and a cluster whose nodes this test
//! registers with extrinsics. Skipped, with a message, without the chain spec.

#[path = "support/chopsticks.rs"]
mod chopsticks;
#[path = "support/ddc_registry.rs"]
mod ddc_registry;

use std::time::Duration;

use ddc_anchor::chain::membership::read_cluster;
use ddc_anchor::chain::rpc::Rpc;
use ddc_auth::account::Keypair;

use chopsticks::Chopsticks;
use ddc_registry::CERE;

#[test]
fn clusters_and_their_nodes_read_from_chain_storage() {
    let Some(chain) = Chopsticks::start() else { return };
    let manager = Keypair::generate();
    let nodes: Vec<Keypair> = (0..3).map(|_| Keypair::generate()).collect();
    chain.fund(&manager.account().0, 100 * CERE);
    for n in &nodes {
        chain.fund(&n.account().0, 100 * CERE);
    }
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
        let rpc = Rpc::connect(&chain.ws_url, Duration::from_secs(60)).await.unwrap();
        let md = rpc.metadata().await.unwrap();

        // Genesis: cluster 0x…01, parameters left at 0, four nodes.
        let mut genesis_id = [0u8; 20];
        genesis_id[19] = 1;
        let genesis = read_cluster(&rpc, &md, &genesis_id).await.unwrap();
        assert_eq!(
            (genesis.erasure_coding_required, genesis.erasure_coding_total, genesis.replication_total),
            (0, 0, 0)
        );
        let hosts: Vec<(&str, u16)> = genesis.nodes.iter().map(|n| (n.host.as_str(), n.grpc_port)).collect();
        assert_eq!(genesis.nodes.len(), 4, "{hosts:?}");
        assert!(hosts.contains(&("192.168.100.12", 9092)), "{hosts:?}");

        // A new cluster, registered with extrinsics signed by ed25519 keys.
        let cluster_id = [0xaa; 20];
        ddc_registry::create_cluster(&rpc, &md, &manager, cluster_id, 2, 3, 3).await;
        for (i, n) in nodes.iter().enumerate() {
            ddc_registry::add_node(&rpc, &md, &manager, cluster_id, n, "127.0.0.1", 7700 + i as u16).await;
        }
        let cluster = read_cluster(&rpc, &md, &cluster_id).await.unwrap();
        assert_eq!(
            (cluster.erasure_coding_required, cluster.erasure_coding_total, cluster.replication_total),
            (2, 3, 3)
        );
        let mut expected: Vec<[u8; 32]> = nodes.iter().map(|n| n.account().0).collect();
        expected.sort();
        assert_eq!(cluster.nodes.iter().map(|n| n.pub_key).collect::<Vec<_>>(), expected);
        assert!(
            cluster.nodes.iter().all(|n| n.host == "127.0.0.1" && n.status == "ValidationSucceeded"),
            "{cluster:?}"
        );
        // An unknown cluster is an error naming it.
        let err = read_cluster(&rpc, &md, &[0x42; 20]).await.unwrap_err().to_string();
        assert!(err.contains("4242"), "{err}");
    });
}
