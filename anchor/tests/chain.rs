//! Against the real Cere runtime (spec 54113, run by chopsticks): a node key
//! signs `System.remark_with_event` with the signed extensions the metadata
//! lists; the extrinsic lands in a block with `System.Remarked` and
//! `System.ExtrinsicSuccess`; reading it back trusting only the chain gives
//! the same bytes; an anchor record goes on chain and a proof checks against
//! it. Skipped, with a message, when the chain spec file is absent.

#[path = "support/chopsticks.rs"]
mod chopsticks;

use std::time::Duration;

use ddc_anchor::chain::extrinsic;
use ddc_anchor::chain::rpc::Rpc;
use ddc_anchor::chain::submit::{anchor_remark, read_remark};
use ddc_anchor::chain::ChainError;
use ddc_anchor::merkle::{DataLeaf, DataLeafKind, LeafTree, Tree};
use ddc_anchor::record::{AnchorFields, AnchorRecord, RecordProof};
use ddc_auth::account::Keypair;
use ddc_auth::usage::NodeUsage;

use chopsticks::Chopsticks;

const CERE: u128 = 10_000_000_000;
const TIMEOUT: Duration = Duration::from_secs(120);

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

#[test]
fn remarks_land_with_their_events_and_read_back_from_the_chain_alone() {
    let Some(chain) = Chopsticks::start() else { return };
    let node = Keypair::generate();
    chain.fund(&node.account().0, 1_000 * CERE);
    runtime().block_on(async {
        let rpc = Rpc::connect(&chain.ws_url, TIMEOUT).await.unwrap();
        let metadata = rpc.metadata().await.unwrap();
        let names: Vec<&str> = metadata.extensions.iter().map(|e| e.identifier.as_str()).collect();
        // The 54113 runtime's list, read from its metadata (not hard-coded in the builder).
        assert_eq!(
            names,
            [
                "CheckNonZeroSender",
                "CheckSpecVersion",
                "CheckTxVersion",
                "CheckGenesis",
                "CheckMortality",
                "CheckNonce",
                "CheckWeight",
                "ChargeTransactionPayment"
            ]
        );
        let state = rpc.chain_state().await.unwrap();
        assert_eq!((state.spec_version, state.transaction_version), (54113, 19));

        let first = anchor_remark(&rpc, &metadata, &node, b"ddc: first remark", TIMEOUT).await.unwrap();
        assert_eq!(read_remark(&rpc, &first, &node.account()).await.unwrap(), b"ddc: first remark");
        // The nonce advances: a second remark from the same key lands in a later block.
        let long = vec![0xab; 600]; // a signed payload over 256 bytes is signed through BLAKE2-256
        let second = anchor_remark(&rpc, &metadata, &node, &long, TIMEOUT).await.unwrap();
        assert!(second.block_number > first.block_number);
        assert_eq!(read_remark(&rpc, &second, &node.account()).await.unwrap(), long);
        assert_eq!(chain.next_nonce(&node.account().0), 2);

        // Reading back refuses a receipt that points elsewhere or at another signer.
        let stranger = Keypair::generate().account();
        assert!(read_remark(&rpc, &first, &stranger).await.is_err());
        let mut moved = first;
        moved.extrinsic_index += 1;
        assert!(read_remark(&rpc, &moved, &node.account()).await.is_err());

        // An account that cannot pay is refused by the pool, with the reason.
        let poor = Keypair::generate();
        match anchor_remark(&rpc, &metadata, &poor, b"x", TIMEOUT).await {
            Err(ChainError::Refused(message)) => assert!(message.to_lowercase().contains("pay"), "{message}"),
            other => panic!("an unfunded account's remark: {other:?}"),
        }

        // What one anchor costs on this runtime: the fee the events report, and the balance it took.
        let before = chain.free_balance(&node.account().0).unwrap();
        let record = anchor_remark(&rpc, &metadata, &node, &[7; 252], TIMEOUT).await.unwrap();
        let after = chain.free_balance(&node.account().0).unwrap();
        let call = extrinsic::remark_with_event(&metadata, &[7; 252]).unwrap();
        let xt = extrinsic::sign(&metadata, &state, &node, 0, 0, &call).unwrap();
        eprintln!(
            "fee for a 252-byte anchor record: {} plancks ({} CERE), extrinsic {} bytes",
            record.fee,
            record.fee as f64 / CERE as f64,
            xt.len()
        );
        assert!(record.fee > 0);
        assert_eq!(before - after, record.fee, "the fee event is what the account paid");
    });
}

#[test]
fn an_anchor_record_on_chain_verifies_a_proof_and_refuses_a_tampered_one() {
    let Some(chain) = Chopsticks::start() else { return };
    let node = Keypair::generate();
    chain.fund(&node.account().0, 1_000 * CERE);
    let leaves: Vec<DataLeaf> = (0..5)
        .map(|i| DataLeaf {
            kind: DataLeafKind::Segment,
            stream: "b1.orders".into(),
            base_offset: i * 100,
            next_offset: i * 100 + 100,
            index: 0,
            root: [i as u8; 32],
        })
        .collect();
    let data = LeafTree::build(leaves).unwrap();
    let usage: LeafTree<ddc_anchor::merkle::UsageLeaf> = LeafTree::build(Vec::new()).unwrap();
    let mut cluster_id = [0u8; 20];
    cluster_id[19] = 1;
    let fields = AnchorFields {
        cluster_id,
        era: 1,
        start_ms: 1_000,
        end_ms: 2_000,
        data_root: data.root(),
        usage_root: usage.root(),
        data_leaves: data.leaf_count(),
        usage_leaves: usage.leaf_count(),
        totals: NodeUsage::default(),
    };
    let record = AnchorRecord::sign(&node, fields);
    runtime().block_on(async {
        let rpc = Rpc::connect(&chain.ws_url, TIMEOUT).await.unwrap();
        let metadata = rpc.metadata().await.unwrap();
        let receipt = anchor_remark(&rpc, &metadata, &node, &record.encode(), TIMEOUT).await.unwrap();
        let on_chain = read_remark(&rpc, &receipt, &node.account()).await.unwrap();
        let proof = RecordProof::new(record, &data, 3);
        proof.verify_against(&on_chain).unwrap();
        // A proof for a leaf that is not in the anchored tree fails.
        let mut tampered = RecordProof::decode(&proof.encode()).unwrap();
        let last = tampered.leaf.len() - 1;
        tampered.leaf[last] ^= 1;
        assert!(tampered.verify_against(&on_chain).is_err());
        assert_eq!(proof.tree, Tree::Data);
    });
}
