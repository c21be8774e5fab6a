//! The era cycle against the real Cere runtime (chopsticks, spec 54113): a
//! node with a short era anchors what it sealed and served; the remark on
//! chain decodes to the roots the node computed; `ddc verify` accepts a proof
//! by asking the chain alone and refuses a tampered one; with the chain
//! paused and the node SIGKILLed meanwhile, nothing committed is lost and the
//! backlog is anchored in order when the chain is back. Skipped, with a
//! message, when the chain spec file is absent.

mod common;

#[path = "../../anchor/tests/support/chopsticks.rs"]
mod chopsticks;
#[path = "../../anchor/tests/support/ddc_registry.rs"]
mod ddc_registry;

use std::time::Duration;

use ddc_anchor::era::AnchorProof;
use ddc_auth::account::Keypair;
use ddc_formats::client::Client;
use ddc_formats::message::Request;

use chopsticks::Chopsticks;
use common::{wait_until, Node};

const CERE: u128 = 10_000_000_000;
const WAIT: Duration = Duration::from_secs(120);

fn anchored_node(chain: &Chopsticks) -> (Node, Keypair) {
    let mut node = Node::new();
    node.keep_port = true;
    std::fs::create_dir_all(&node.data_dir).unwrap();
    let key = Keypair::generate();
    key.write_new(&node.data_dir.join("node.key")).unwrap();
    chain.fund(&key.account().0, 1_000 * CERE);
    node.set_config(Some(&format!(
        "data_dir = {:?}\nlisten = \"{}\"\ncores = 2\n[server]\nio_memory_bytes = 1048576\n\
         [anchor]\nchain_url = \"{}\"\nera_ms = 1000\nsubmit_timeout_ms = 5000\n\
         retry_initial_ms = 200\nretry_max_ms = 1000\n",
        node.data_dir, node.addr, chain.ws_url
    )));
    node.launch();
    (node, key)
}

/// Wait until the node can prove `offset` of `stream`; returns the proof bytes.
fn wait_for_proof(node: &Node, stream: &str, offset: u64) -> Vec<u8> {
    let mut proof = None;
    wait_until(&format!("{stream}@{offset} anchored"), WAIT, || {
        proof = node.client().proof(Some(stream), offset, 0).ok();
        proof.is_some()
    });
    proof.unwrap()
}

fn produce_and_seal(client: &mut Client, stream: &str, records: usize) {
    let body: Vec<Vec<u8>> = (0..records).map(|i| format!("{stream}-{i}").into_bytes()).collect();
    let refs: Vec<&[u8]> = body.iter().map(Vec::as_slice).collect();
    client.produce(stream, &refs).unwrap();
    client.call(&Request::Seal { stream }).unwrap();
}

#[test]
fn eras_are_anchored_proofs_verify_against_the_chain_and_outages_lose_nothing() {
    let Some(chain) = Chopsticks::start() else { return };
    let (mut node, key) = anchored_node(&chain);
    let mut client = node.client();
    produce_and_seal(&mut client, "b1.orders", 50);
    client.fetch("b1.orders", 0, 1 << 20, 0).unwrap();

    // The segment's proof, checked by `ddc verify` against the chain alone.
    let bytes = wait_for_proof(&node, "b1.orders", 7);
    let proof = AnchorProof::decode(&bytes).unwrap();
    assert_eq!(proof.proof.record.node, key.account(), "signed by the node key");
    // The admin endpoint lists the anchor with its block and a link to it.
    let (code, body) = common::http_get(node.http_addr, "/status.json");
    assert_eq!(code, 200);
    let status: serde_json::Value = serde_json::from_str(&body).unwrap();
    let hash = format!("0x{}", hex::encode(proof.receipt.block_hash));
    let listed = status["anchoring"]["recent"].as_array().unwrap().iter().find(|e| e["block_hash"] == hash.as_str());
    let listed = listed.unwrap_or_else(|| panic!("anchor in block {hash} not on the status page: {body}"));
    assert_eq!(listed["block_number"], proof.receipt.block_number);
    let link = listed["explorer_url"].as_str().unwrap();
    assert!(link.ends_with(&format!("#/explorer/query/{hash}")) && link.contains("rpc=ws%3A%2F%2F"), "{link}");
    let (_, page) = common::http_get(node.http_addr, "/");
    assert!(page.contains(&format!("href=\"{link}\"")), "status page links the block: {page}");
    let file = node.dir().join("orders-7.proof");
    std::fs::write(&file, &bytes).unwrap();
    let me = key.account().to_ss58();
    let out = node.ddc(&["verify", file.to_str().unwrap(), "--chain", &chain.ws_url, "--node", &me], b"");
    assert!(out.status.success(), "verify: {}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("valid"), "{}", String::from_utf8_lossy(&out.stdout));
    // Required to be another node's: refused.
    let other = Keypair::generate().account().to_ss58();
    let out = node.ddc(&["verify", file.to_str().unwrap(), "--chain", &chain.ws_url, "--node", &other], b"");
    assert_eq!(out.status.code(), Some(1));
    // `ddc proof` writes the same kind of file.
    let via_cli = node.dir().join("cli.proof");
    node.ddc_ok(&["proof", "--stream", "b1.orders", "--offset", "49", "--out", via_cli.to_str().unwrap()], b"");
    let out = node.ddc(&["verify", via_cli.to_str().unwrap(), "--chain", &chain.ws_url], b"");
    assert!(out.status.success(), "verify: {}", String::from_utf8_lossy(&out.stderr));

    // Tampered: a byte of the leaf (its stream name) changed. Refused, exit 1.
    let mut tampered = bytes.clone();
    let at = tampered.windows(9).position(|w| w == b"b1.orders").expect("the leaf names the stream");
    tampered[at + 3] ^= 0x01;
    let bad = node.dir().join("tampered.proof");
    std::fs::write(&bad, &tampered).unwrap();
    let out = node.ddc(&["verify", bad.to_str().unwrap(), "--chain", &chain.ws_url], b"");
    assert_eq!(out.status.code(), Some(1), "a tampered proof was accepted: {}", String::from_utf8_lossy(&out.stdout));

    // The bucket's usage is anchored too, and its proof verifies.
    let mut usage = None;
    wait_until("usage anchored", WAIT, || {
        usage = node.client().proof(None, 0, 1).ok();
        usage.is_some()
    });
    let usage_file = node.dir().join("usage.proof");
    std::fs::write(&usage_file, usage.unwrap()).unwrap();
    let out = node.ddc(&["verify", usage_file.to_str().unwrap(), "--chain", &chain.ws_url], b"");
    assert!(out.status.success(), "usage verify: {}", String::from_utf8_lossy(&out.stderr));

    // Outage: the chain stops answering. The node keeps serving and keeps committing eras.
    // SAFETY: signalling a child process we started.
    unsafe { libc::kill(chain.pid() as i32, libc::SIGSTOP) };
    for round in 0..3 {
        produce_and_seal(&mut client, &format!("b1.late{round}"), 10);
        std::thread::sleep(Duration::from_millis(1200));
    }
    // The admin endpoint counts the eras that wait.
    wait_until("an anchor backlog in the metrics", WAIT, || {
        let (_, metrics) = common::http_get(node.http_addr, "/metrics");
        metrics.lines().any(|l| l.strip_prefix("ddc_anchor_backlog_eras ").is_some_and(|v| v != "0"))
    });
    // And it is SIGKILLed while eras wait: they are on disk.
    node.kill();
    node.launch();
    let mut client = node.client();
    assert_eq!(client.fetch("b1.late2", 0, 1 << 20, 0).unwrap().records.len(), 10);
    unsafe { libc::kill(chain.pid() as i32, libc::SIGCONT) };
    let proofs: Vec<AnchorProof> = (0..3)
        .map(|round| AnchorProof::decode(&wait_for_proof(&node, &format!("b1.late{round}"), 0)).unwrap())
        .collect();
    // The backlog went out in era order, each in a later block than the one before.
    for pair in proofs.windows(2) {
        let (a, b) = (&pair[0], &pair[1]);
        assert!(a.proof.record.fields.era <= b.proof.record.fields.era);
        if a.proof.record.fields.era < b.proof.record.fields.era {
            assert!(a.receipt.block_number < b.receipt.block_number, "eras anchored out of order");
        }
    }
    for (round, p) in proofs.iter().enumerate() {
        let file = node.dir().join(format!("late{round}.proof"));
        std::fs::write(&file, p.encode()).unwrap();
        let out = node.ddc(&["verify", file.to_str().unwrap(), "--chain", &chain.ws_url], b"");
        assert!(out.status.success(), "late{round}: {}", String::from_utf8_lossy(&out.stderr));
    }

    // The chain is killed (connections refused) while eras are committed; a chain comes back
    // on the same address (a new one: genesis again, so the node's account is funded again).
    let port = chain.port;
    drop(chain);
    produce_and_seal(&mut client, "b1.after-kill", 10);
    std::thread::sleep(Duration::from_millis(2500));
    assert!(node.client().proof(Some("b1.after-kill"), 0, 0).is_err(), "anchored with no chain");
    let chain = Chopsticks::start_on(port).expect("the spec was there a moment ago");
    chain.fund(&key.account().0, 1_000 * CERE);
    let bytes = wait_for_proof(&node, "b1.after-kill", 3);
    let file = node.dir().join("after-kill.proof");
    std::fs::write(&file, &bytes).unwrap();
    let out = node.ddc(&["verify", file.to_str().unwrap(), "--chain", &chain.ws_url], b"");
    assert!(out.status.success(), "after kill: {}", String::from_utf8_lossy(&out.stderr));
    node.assert_alive();
}

#[test]
fn a_cluster_whose_membership_comes_from_the_chain_serves() {
    let Some(chain) = Chopsticks::start() else { return };
    let manager = Keypair::generate();
    chain.fund(&manager.account().0, 100 * CERE);
    let mut nodes: Vec<(Node, Keypair)> = (0..3)
        .map(|_| {
            let node = Node::new();
            std::fs::create_dir_all(&node.data_dir).unwrap();
            let key = Keypair::generate();
            key.write_new(&node.data_dir.join("node.key")).unwrap();
            chain.fund(&key.account().0, 100 * CERE);
            (node, key)
        })
        .collect();
    let cluster_id = [0xbb; 20];
    // Registered with extrinsics: the cluster (k 2, n 3, replication 3), then each node at its address.
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
        let rpc = ddc_anchor::chain::rpc::Rpc::connect(&chain.ws_url, WAIT).await.unwrap();
        let md = rpc.metadata().await.unwrap();
        ddc_registry::create_cluster(&rpc, &md, &manager, cluster_id, 2, 3, 3).await;
        for (node, key) in &nodes {
            ddc_registry::add_node(&rpc, &md, &manager, cluster_id, key, "127.0.0.1", node.addr.port()).await;
        }
    });
    for (node, _) in &mut nodes {
        node.set_config(Some(&format!(
            "data_dir = {:?}\nlisten = \"{}\"\ncores = 1\n[server]\nio_memory_bytes = 1048576\n\
             [log]\nsegment_bytes_max = 1048576\n[cluster]\nnode_key_file = {:?}\nmembership_source = \"chain\"\n\
             [anchor]\nchain_url = \"{}\"\ncluster_id = \"0x{}\"\n",
            node.data_dir,
            node.addr,
            node.data_dir.join("node.key"),
            chain.ws_url,
            hex::encode(cluster_id)
        )));
        node.spawn();
    }
    for (node, _) in &mut nodes {
        node.wait_ready();
    }
    // Written through one member, read through another: they agree on placement, so on membership.
    let mut writer = nodes[0].0.client();
    let records: Vec<Vec<u8>> = (0..100).map(|i| format!("member-{i}").into_bytes()).collect();
    let refs: Vec<&[u8]> = records.iter().map(Vec::as_slice).collect();
    writer.produce("b1.members", &refs).unwrap();
    let fetched = nodes[2].0.client().fetch("b1.members", 0, 1 << 20, 0).unwrap();
    assert_eq!(fetched.records.into_iter().map(|(_, r)| r).collect::<Vec<_>>(), records);
    assert!(nodes[1].0.log().contains("cluster membership loaded from cluster 0xbbbb"), "{}", nodes[1].0.log());
}
