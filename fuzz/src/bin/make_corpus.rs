//! Writes the seed corpus: a few valid inputs per fuzz target, built with the
//! ddc-formats, ddc-auth and ddc-anchor encoders, into
//! `fuzz/corpus/<target>/seed-*`. Signed seeds use the fixed keys of
//! `ddc_fuzz::fixed`; some are validly signed but break one rule the signature
//! does not cover, so the targets reach the checks after a signature.
//!
//! Run from anywhere: `cargo run --manifest-path fuzz/Cargo.toml --bin make_corpus`
//! (or `cargo run --bin make_corpus` inside fuzz/). Deterministic: running it
//! again rewrites the same files with the same bytes. Files it did not write
//! (inputs libFuzzer found, crash reproducers) are left alone.

use std::fs;
use std::path::{Path, PathBuf};

use ddc_formats::batch::{encode_records, BatchHeader};
use ddc_formats::frame::{encode_frame_into, FRAME_HEADER_BYTES};
use ddc_formats::message::{encode_request_frame, encode_response_frame, Request, Response, SegmentInfo, StreamInfo};
use ddc_formats::segment::{encode_index, IndexEntry, SealManifest, SegmentHeader};
use ddc_formats::shard::ShardHeader;
use ddc_formats::wire::{AckLevel, ErrorCode};
use flatbuffers::FlatBufferBuilder;

use ddc_anchor::chain::submit::Receipt;
use ddc_anchor::era::AnchorProof;
use ddc_anchor::merkle::{
    empty_root, DataLeaf, DataLeafKind, DataTree, MerkleTree, UsageLeaf, UsageTree, STREAM_NAME_BYTES_MAX,
};
use ddc_anchor::record::{AnchorFields, AnchorRecord, RecordProof, RECORD_BYTES};
use ddc_auth::account::Keypair;
use ddc_auth::encryption::decrypt_record;
use ddc_auth::grant::{verify_chain, Bucket, Grant, GrantChain, GrantId, GrantTerms, Operations};
use ddc_auth::handshake::{CLIENT_AUTH_BYTES, CLIENT_HELLO_BYTES, NODE_HELLO_BYTES};
use ddc_auth::usage::{
    ConsumerAck, CustomerUsage, NodeUsage, UsageReport, USAGE_REPORT_MAGIC, USAGE_REPORT_SIGNING_DOMAIN,
};
use ddc_fuzz::fixed;

fn main() {
    let root = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus"));
    let mut written = 0usize;
    let mut put = |target: &str, name: &str, bytes: &[u8]| {
        let dir = root.join(target);
        fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
        let path = dir.join(format!("seed-{name}"));
        fs::write(&path, bytes).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        written += 1;
    };

    // --- request / response payloads (unframed) and whole frames -----------
    let records = encode_records([b"hello".as_slice(), b"".as_slice(), b"world!".as_slice()]);
    let run0 = batch_run(&[(0, &[b"a", b"bb"])]);
    let requests = [
        ("produce", Request::Produce { stream: "orders", records: &records, record_count: 3, ack: AckLevel::Durable }),
        (
            "produce-unsynced",
            Request::Produce { stream: "s", records: &records[..9], record_count: 1, ack: AckLevel::WrittenNotSynced },
        ),
        ("fetch", Request::Fetch { stream: "orders", offset: 42, max_bytes: 1 << 20, max_wait_ms: 250 }),
        ("create", Request::CreateStream { stream: "my-stream_1.v2" }),
        ("list", Request::ListStreams),
        ("info", Request::StreamInfo { stream: "orders" }),
        ("ping", Request::Ping { nonce: 0x0123_4567_89ab_cdef }),
        ("seal", Request::Seal { stream: "orders" }),
        (
            "replicate",
            Request::Replicate { stream: "orders", base_offset: 0, batches: &run0, leader: &[9; 32], coded_offset: 0 },
        ),
        ("put-shard", Request::PutShard { header: &[1; 512], body: &[2; 64] }),
        ("get-shard", Request::GetShard { stream: "orders", base_offset: 0, index: 3 }),
        ("list-shards", Request::ListShards { stream: None, verify: true }),
        ("repair", Request::Repair { stream: Some("orders") }),
        ("present-grants", Request::PresentGrants { chain: &[1, 0, 0, 0, 7] }),
        ("usage-ack", Request::UsageAck { ack: &[1; 184] }),
        ("usage", Request::Usage { bucket: Some(7) }),
        ("usage-all", Request::Usage { bucket: None }),
        ("proof", Request::Proof { stream: Some("b1.orders"), offset: 7, bucket: 0 }),
        ("proof-usage", Request::Proof { stream: None, offset: 0, bucket: 1 }),
    ];
    let run = batch_run(&[(0, &[b"a", b"bb"]), (2, &[b"ccc"])]);
    let responses = [
        ("produce", Response::Produce { base_offset: 7, record_count: 3 }),
        ("fetch", Response::Fetch { batches: run.clone(), high_watermark: 3, log_start_offset: 0 }),
        ("fetch-empty", Response::Fetch { batches: Vec::new(), high_watermark: 0, log_start_offset: 0 }),
        ("create", Response::CreateStream { created: true }),
        ("list", Response::ListStreams { streams: vec!["a".into(), "orders".into()] }),
        (
            "info",
            Response::StreamInfo(StreamInfo {
                stream: "orders".into(),
                first_offset: 0,
                next_offset: 10,
                high_watermark: 9,
                segments: vec![
                    SegmentInfo { base_offset: 0, next_offset: 5, size_bytes: 4096, sealed: true, root: Some([3; 32]) },
                    SegmentInfo { base_offset: 5, next_offset: 10, size_bytes: 512, sealed: false, root: None },
                ],
                core: 1,
                fenced_reason: Some("fsync failed".into()),
            }),
        ),
        ("ping", Response::Ping { nonce: 9, server_version: "0.1.0".into() }),
        ("error", Response::Error { code: ErrorCode::UnknownStream, message: "no such stream".into() }),
        ("seal", Response::Seal { sealed_base_offset: Some(0) }),
        ("replicate", Response::Replicate { next_offset: 3 }),
        ("put-shard", Response::PutShard),
        ("get-shard", Response::GetShard { header: vec![1; 512], body: vec![2; 64] }),
        (
            "list-shards",
            Response::ListShards {
                shards: vec![ddc_formats::message::ShardEntry {
                    header: vec![1; 512],
                    healthy: false,
                    detail: "bitrot".into(),
                }],
            },
        ),
        (
            "repair",
            Response::Repair(ddc_formats::message::RepairReport {
                segments_checked: 2,
                shards_missing: 1,
                shards_corrupt: 0,
                shards_rebuilt: 1,
                errors: vec!["x".into()],
            }),
        ),
        ("present-grants", Response::PresentGrants { bucket: 7, operations: 1, expires_ms: 1_800_000_000_000 }),
        ("usage-ack", Response::UsageAck),
        ("usage", Response::Usage { report: vec![b'D', b'D', b'C', b'U', 1, 0, 0, 0] }),
        ("proof", Response::Proof { proof: vec![b'D', b'D', b'C', b'X', 1, 0, 0, 0] }),
    ];

    let mut fbb = FlatBufferBuilder::new();
    let mut all_frames = Vec::new();
    for (i, (name, request)) in requests.iter().enumerate() {
        let mut frame = Vec::new();
        encode_request_frame(&mut fbb, i as u64 + 1, request, &mut frame);
        put("request", name, &frame[FRAME_HEADER_BYTES..]);
        if matches!(*name, "produce" | "ping") {
            put("frame", &format!("request-{name}"), &frame);
        }
        all_frames.extend_from_slice(&frame);
    }
    for (i, (name, response)) in responses.iter().enumerate() {
        let mut frame = Vec::new();
        encode_response_frame(&mut fbb, i as u64 + 100, response, &mut frame);
        put("response", name, &frame[FRAME_HEADER_BYTES..]);
        if matches!(*name, "fetch" | "error") {
            put("frame", &format!("response-{name}"), &frame);
        }
    }

    // --- frame: empty payload, several frames back to back, a partial frame -
    let mut empty = Vec::new();
    encode_frame_into(b"", &mut empty);
    put("frame", "empty", &empty);
    put("frame", "stream-of-requests", &all_frames);
    put("frame", "partial", &all_frames[..all_frames.len() - 3]);

    // --- batch: batch runs, and (first byte = count) + body for validate_records
    put("batch", "one", &batch_run(&[(0, &[b"hello"])]));
    put("batch", "two", &run);
    put("batch", "three-with-empty-record", &batch_run(&[(10, &[b"x"]), (11, &[b"", b"yz"]), (13, &[b"last"])]));
    let mut counted = vec![3u8];
    counted.extend_from_slice(&records);
    put("batch", "count-and-body", &counted);
    put("batch", "count-one-empty-record", &[1, 0, 0, 0, 0]);

    // --- segment files -------------------------------------------------------
    let mut log = SegmentHeader { base_offset: 0, created_ms: 1_700_000_000_000 }.encode().to_vec();
    put("segment_files", "segment-header", &log);
    log.extend_from_slice(&run);
    put("segment_files", "segment-header-and-batches", &log);
    put("segment_files", "segment-header-high-base", &SegmentHeader { base_offset: 1 << 40, created_ms: 5 }.encode());
    let seal = SealManifest {
        base_offset: 0,
        next_offset: 3,
        data_len: log.len() as u64,
        batch_count: 2,
        sealed_ms: 1_700_000_000_500,
        // The decoder does not check the root against any data; any 32 bytes do.
        root: [0xa5; 32],
    };
    put("segment_files", "seal", &seal.encode());
    put("segment_files", "index-empty", &encode_index(&[]));
    put(
        "segment_files",
        "index",
        &encode_index(&[
            IndexEntry { offset: 0, position: 64 },
            IndexEntry { offset: 100, position: 8192 },
            IndexEntry { offset: 250, position: 20000 },
        ]),
    );

    // --- shard headers, with and without a matching body --------------------
    let body = vec![7u8; 1024];
    let shard = ShardHeader {
        stream: "orders".into(),
        base_offset: 0,
        next_offset: 2,
        segment_bytes: 130,
        segment_root: [0xb2; 32],
        k: 4,
        n: 6,
        index: 4,
        stripe_bytes: 1024,
        body_bytes: 1024,
        body_hash: *blake3::hash(&body).as_bytes(),
    };
    let mut with_body = shard.encode().to_vec();
    with_body.extend_from_slice(&body);
    put("shard_header", "header", &shard.encode());
    put("shard_header", "header-and-body", &with_body);

    grants(&mut put);
    usage(&mut put);
    handshake(&mut put);
    encrypted_records(&mut put);
    anchoring(&mut put);

    println!("wrote {written} seed files under {}", root.display());
}

/// Back-to-back batches, each `(base_offset, records)`.
fn batch_run(batches: &[(u64, &[&[u8]])]) -> Vec<u8> {
    let mut out = Vec::new();
    for &(base, recs) in batches {
        let body = encode_records(recs.iter().copied());
        out.extend_from_slice(&BatchHeader::new(base, recs.len() as u32, &body, 1_700_000_000_123).encode());
        out.extend_from_slice(&body);
    }
    out
}

/// Where seeds go: `put(target, name, bytes)` writes `corpus/<target>/seed-<name>`.
type Put<'a> = dyn FnMut(&str, &str, &[u8]) + 'a;

// --- ddc-auth ----------------------------------------------------------------

const HOUR_MS: u64 = 3_600_000;

/// Terms valid at `fixed::NOW_MS`, on `fixed::BUCKET`.
fn terms(subject: &Keypair, operations: Operations, may_delegate: bool) -> GrantTerms {
    GrantTerms {
        bucket: fixed::BUCKET,
        subject: subject.account(),
        operations,
        not_before_ms: fixed::NOW_MS - HOUR_MS,
        expires_ms: fixed::NOW_MS + 24 * HOUR_MS,
        may_delegate,
    }
}

fn chain(links: Vec<Grant>) -> Vec<u8> {
    GrantChain::new(links).expect("seed chains have at most 8 links").encode()
}

fn grants(put: &mut Put) {
    let (owner, delegate, reader, stranger) = (&*fixed::OWNER, &*fixed::DELEGATE, &*fixed::READER, &*fixed::STRANGER);
    let issue = |issuer: &Keypair, terms: GrantTerms, nonce: u8| Grant::issue_with_nonce(issuer, terms, [nonce; 16]);
    let to_delegate = issue(owner, terms(delegate, Operations::ALL, true), 1);
    let to_reader = issue(delegate, terms(reader, Operations::READ, false), 2);
    let owner_to_reader = issue(owner, terms(reader, Operations::READ | Operations::WRITE, false), 3);

    put("grant", "grant", &to_delegate.encode());
    put("grant", "chain-empty", &chain(vec![]));
    put("grant", "chain-one", &chain(vec![owner_to_reader]));
    put("grant", "chain-two", &chain(vec![to_delegate, to_reader]));
    // Eight links, alternating between the delegate and the reader.
    let mut links = vec![to_delegate];
    for i in 1..8u8 {
        let (issuer, subject) = if i % 2 == 1 { (delegate, reader) } else { (reader, delegate) };
        links.push(issue(issuer, terms(subject, Operations::READ, true), 0x20 + i));
    }
    put("grant", "chain-eight", &chain(links));

    // Validly signed chains that each break one rule verify_chain checks
    // after the signature; the seed name is the rule, and the check below
    // keeps it so.
    let bucket = Bucket { id: fixed::BUCKET, owner: owner.account(), public: false };
    let mut broken = |name: &str, links: Vec<Grant>| {
        let revoked = |id: &GrantId| links.iter().any(|g| g.nonce[0] == fixed::REVOKED_NONCE_BYTE && g.id() == *id);
        let chain_bytes = chain(links.clone());
        let decoded = GrantChain::decode(&chain_bytes).expect("a seed chain decodes");
        let verdict = verify_chain(&bucket, &decoded, fixed::NOW_MS, &revoked).map(|_| ());
        refused_as(&verdict, name);
        put("grant", name, &chain_bytes);
    };
    broken("issuer-not-owner", vec![issue(stranger, terms(reader, Operations::READ, false), 4)]);
    broken(
        "wrong-bucket",
        vec![issue(owner, GrantTerms { bucket: fixed::BUCKET + 1, ..terms(reader, Operations::READ, false) }, 5)],
    );
    broken("broken-chain", vec![to_delegate, issue(stranger, terms(reader, Operations::READ, false), 6)]);
    broken("delegation-not-allowed", vec![issue(owner, terms(delegate, Operations::ALL, false), 7), to_reader]);
    broken(
        "widens-operations",
        vec![
            issue(owner, terms(delegate, Operations::READ, true), 8),
            issue(delegate, terms(reader, Operations::ALL, false), 9),
        ],
    );
    broken(
        "extends-expiry",
        vec![
            to_delegate,
            issue(
                delegate,
                GrantTerms { expires_ms: fixed::NOW_MS + 48 * HOUR_MS, ..terms(reader, Operations::READ, false) },
                10,
            ),
        ],
    );
    broken(
        "not-yet-valid",
        vec![issue(
            owner,
            GrantTerms { not_before_ms: fixed::NOW_MS + 1, ..terms(reader, Operations::READ, false) },
            11,
        )],
    );
    broken(
        "expired",
        vec![issue(owner, GrantTerms { expires_ms: fixed::NOW_MS, ..terms(reader, Operations::READ, false) }, 12)],
    );
    broken("revoked", vec![issue(owner, terms(reader, Operations::READ, false), fixed::REVOKED_NONCE_BYTE)]);
    let no_operations = chain(vec![issue(owner, terms(reader, Operations::NONE, false), 13)]);
    put("grant", "no-operations", &no_operations);
}

/// An acknowledgment by `fixed::READER` of what `node` served in session `nonce`.
fn ack(node: &Keypair, nonce: u8, request_seq: u64, bytes: u64, gets: u64) -> ConsumerAck {
    ConsumerAck::sign(&fixed::READER, fixed::BUCKET, node.account(), [nonce; 16], request_seq, bytes, gets)
}

fn concat(acks: &[ConsumerAck]) -> Vec<u8> {
    acks.iter().flat_map(|a| a.encode()).collect()
}

/// A usage report laid out by hand and signed by `node`, so that a seed can
/// break a rule `UsageReport::sign` would refuse.
fn signed_report(node: &Keypair, buckets: &[(u64, CustomerUsage)], node_usage: NodeUsage, acks: &[Vec<u8>]) -> Vec<u8> {
    let mut out = USAGE_REPORT_MAGIC.to_vec();
    out.push(UsageReport::VERSION);
    out.extend_from_slice(&[0; 3]);
    out.extend_from_slice(&node.account().0);
    out.extend_from_slice(&fixed::NOW_MS.to_le_bytes());
    out.extend_from_slice(&(buckets.len() as u32).to_le_bytes());
    out.extend_from_slice(&(acks.len() as u32).to_le_bytes());
    for (id, usage) in buckets {
        out.extend_from_slice(&id.to_le_bytes());
        out.extend_from_slice(&usage.encode());
    }
    out.extend_from_slice(&node_usage.encode());
    for ack in acks {
        out.extend_from_slice(ack);
    }
    let mut message = USAGE_REPORT_SIGNING_DOMAIN.to_vec();
    message.extend_from_slice(&out);
    out.extend_from_slice(&node.sign(&message));
    out
}

fn usage(put: &mut Put) {
    let (node, stranger) = (&*fixed::NODE, &*fixed::STRANGER);

    // --- usage_ack: one acknowledgment, usage records, runs for the ledger -
    let first = ack(node, 9, 1, 1000, 1);
    put("usage_ack", "ack", &first.encode());
    let usage = CustomerUsage { transferred_bytes: 4096, stored_bytes: 1 << 30, number_of_puts: 12, number_of_gets: 3 };
    put("usage_ack", "usage-record", &usage.encode());
    put("usage_ack", "run", &concat(&[first, ack(node, 9, 2, 2000, 2), ack(node, 9, 3, 4096, 3)]));
    put("usage_ack", "two-sessions", &concat(&[first, ack(node, 10, 1, 10, 1), ack(node, 9, 2, 2000, 2)]));
    put("usage_ack", "replayed", &concat(&[first, ack(node, 9, 2, 2000, 2), ack(node, 9, 2, 2000, 2)]));
    put("usage_ack", "bytes-decrease", &concat(&[ack(node, 9, 1, 2000, 1), ack(node, 9, 2, 1000, 2)]));
    put("usage_ack", "gets-decrease", &concat(&[ack(node, 9, 1, 1000, 2), ack(node, 9, 2, 2000, 1)]));
    put("usage_ack", "exceeds-served", &ack(node, 9, 1, fixed::SERVED_BYTES + 1, 1).encode());
    put("usage_ack", "exceeds-served-gets", &ack(node, 9, 1, 1, fixed::SERVED_GETS + 1).encode());
    put("usage_ack", "wrong-node", &ack(stranger, 9, 1, 1000, 1).encode());
    let mut bad_signature = first.encode();
    bad_signature[150] ^= 1;
    put("usage_ack", "bad-signature", &bad_signature);

    // --- usage_report: signed reports, valid and each breaking one rule ----
    let acks = vec![ack(node, 9, 3, 4096, 3), ack(node, 10, 1, 10, 1)];
    let buckets = vec![(fixed::BUCKET, usage), (9, CustomerUsage { stored_bytes: 512, ..CustomerUsage::default() })];
    let report = UsageReport::sign(node, fixed::NOW_MS, buckets.clone(), acks.clone()).expect("a valid report");
    let ack_bytes: Vec<Vec<u8>> = report.acks.iter().map(|a| a.encode().to_vec()).collect();
    let total = report.node_usage;
    assert_eq!(
        signed_report(node, &report.buckets, total, &ack_bytes),
        report.encode(),
        "signed_report lays a report out as UsageReport::encode does"
    );
    put("usage_report", "report", &report.encode());
    let empty = UsageReport::sign(node, fixed::NOW_MS, vec![], vec![]).expect("an empty report");
    put("usage_report", "empty", &empty.encode());
    let one = UsageReport::sign(node, fixed::NOW_MS, vec![(0, usage)], vec![]).expect("a one-bucket report");
    put("usage_report", "one-bucket", &one.encode());

    // Reports signed by the node that each break one rule the decoder checks
    // after the signature; the seed name is the rule, and the check keeps it so.
    let mut put = |target: &str, name: &str, bytes: &[u8]| {
        refused_as(&UsageReport::decode(bytes).map(|_| ()), name);
        put(target, name, bytes);
    };
    let reversed: Vec<(u64, CustomerUsage)> = report.buckets.iter().rev().copied().collect();
    put("usage_report", "buckets-out-of-order", &signed_report(node, &reversed, total, &ack_bytes));
    let twice = [(fixed::BUCKET, usage), (fixed::BUCKET, usage)];
    let twice_total = NodeUsage {
        transferred_bytes: 2 * usage.transferred_bytes,
        stored_bytes: 2 * usage.stored_bytes,
        number_of_puts: 2 * usage.number_of_puts,
        number_of_gets: 2 * usage.number_of_gets,
    };
    put("usage_report", "duplicate-bucket", &signed_report(node, &twice, twice_total, &[]));
    let off_by_one = NodeUsage { number_of_gets: total.number_of_gets + 1, ..total };
    put("usage_report", "node-usage-mismatch", &signed_report(node, &report.buckets, off_by_one, &ack_bytes));
    let huge = CustomerUsage { transferred_bytes: u64::MAX, ..CustomerUsage::default() };
    let overflow = [(1, huge), (2, huge)];
    put("usage_report", "overflow", &signed_report(node, &overflow, NodeUsage::default(), &[]));
    let foreign = vec![ack(stranger, 9, 1, 1, 1).encode().to_vec()];
    put("usage_report", "wrong-node", &signed_report(node, &[], NodeUsage::default(), &foreign));
    put("usage_report", "bad-signature", &signed_report(node, &[], NodeUsage::default(), &[bad_signature.to_vec()]));
    let mut version_two = first.encode();
    version_two[0] = 2;
    put("usage_report", "unknown-version", &signed_report(node, &[], NodeUsage::default(), &[version_two.to_vec()]));
    let reversed_acks: Vec<Vec<u8>> = ack_bytes.iter().rev().cloned().collect();
    put("usage_report", "acks-out-of-order", &signed_report(node, &[], NodeUsage::default(), &reversed_acks));
    let repeated = vec![ack_bytes[0].clone(), ack_bytes[0].clone()];
    put("usage_report", "duplicate-ack", &signed_report(node, &[], NodeUsage::default(), &repeated));
}

fn handshake(put: &mut Put) {
    let (node, client) = (&*fixed::NODE, &*fixed::READER);
    // The X25519 base point (u = 9) is a valid public key; all zeros is of low order.
    let mut base_point = [0u8; 32];
    base_point[0] = 9;
    let mut client_hello = b"DDH1".to_vec();
    client_hello.extend_from_slice(&base_point);
    assert_eq!(client_hello.len(), CLIENT_HELLO_BYTES);
    put("handshake", "client-hello", &client_hello);
    let mut low_order = b"DDH1".to_vec();
    low_order.extend_from_slice(&[0; 32]);
    put("handshake", "client-hello-low-order", &low_order);

    // Signatures over a transcript no live handshake has: right shape, never accepted.
    let mut node_hello = b"DDH2".to_vec();
    node_hello.extend_from_slice(&node.account().0);
    node_hello.extend_from_slice(&base_point);
    node_hello.extend_from_slice(&node.sign(b"ddc node auth v1 seed"));
    assert_eq!(node_hello.len(), NODE_HELLO_BYTES);
    put("handshake", "node-hello", &node_hello);
    let mut client_auth = b"DDH3".to_vec();
    client_auth.extend_from_slice(&client.account().0);
    client_auth.extend_from_slice(&client.sign(b"ddc client auth v1 seed"));
    assert_eq!(client_auth.len(), CLIENT_AUTH_BYTES);
    put("handshake", "client-auth", &client_auth);
    let mut hello_then_auth = client_hello.clone();
    hello_then_auth.extend_from_slice(&client_auth);
    put("handshake", "client-hello-then-auth", &hello_then_auth);
}

/// A record sealed as docs/FORMATS.md "Encrypted records (client-side)" says,
/// with a chosen nonce (`encrypt_record` always draws a random one).
fn seal(key_bytes: [u8; 32], stream: &str, plaintext: &[u8], nonce: [u8; 24]) -> Vec<u8> {
    use chacha20poly1305::aead::AeadInPlace;
    use chacha20poly1305::{KeyInit, XChaCha20Poly1305, XNonce};

    let mut sealed = vec![1u8];
    sealed.extend_from_slice(&blake3::derive_key("ddc bucket key id v1", &key_bytes)[..8]);
    sealed.extend_from_slice(&nonce);
    let mut aad = b"ddc record v1".to_vec();
    aad.extend_from_slice(&sealed);
    aad.extend_from_slice(stream.as_bytes());
    let mut body = plaintext.to_vec();
    let tag = XChaCha20Poly1305::new(&key_bytes.into())
        .encrypt_in_place_detached(XNonce::from_slice(&nonce), &aad, &mut body)
        .expect("a short plaintext seals");
    sealed.extend_from_slice(&body);
    sealed.extend_from_slice(&tag);
    sealed
}

fn encrypted_records(put: &mut Put) {
    let key = fixed::bucket_key();
    let mut sealed = |name: &str, plaintext: &[u8], nonce: u8| {
        let record = seal(fixed::BUCKET_KEY_BYTES, fixed::STREAM, plaintext, [nonce; 24]);
        assert_eq!(
            decrypt_record(&key, fixed::STREAM, &record).expect("a seed sealed by the spec opens"),
            plaintext,
            "seal() and ddc-auth disagree on the format"
        );
        put("encrypted_record", name, &record);
    };
    sealed("hello", b"order 1: 3 apples", 1);
    sealed("empty", b"", 2);
    sealed("long", &(0..=255u8).cycle().take(700).collect::<Vec<u8>>(), 3);
    // Refused, each for one reason.
    put("encrypted_record", "other-stream", &seal(fixed::BUCKET_KEY_BYTES, "b7.invoices", b"order 1", [4; 24]));
    put("encrypted_record", "other-key", &seal([0x44; 32], fixed::STREAM, b"order 1", [5; 24]));
    let mut version_two = seal(fixed::BUCKET_KEY_BYTES, fixed::STREAM, b"order 1", [6; 24]);
    version_two[0] = 2;
    put("encrypted_record", "version-two", &version_two);
    put("encrypted_record", "too-short", &seal(fixed::BUCKET_KEY_BYTES, fixed::STREAM, b"", [7; 24])[..48]);
}

// --- ddc-anchor --------------------------------------------------------------

fn anchoring(put: &mut Put) {
    let node = &*fixed::NODE;
    let segment = |stream: &str, base_offset: u64, next_offset: u64, root: u8| DataLeaf {
        kind: DataLeafKind::Segment,
        stream: stream.to_string(),
        base_offset,
        next_offset,
        index: 0,
        root: [root; 32],
    };
    let data_leaves = vec![
        segment(fixed::STREAM, 0, 100, 0xa1),
        segment(fixed::STREAM, 100, 250, 0xa2),
        DataLeaf { kind: DataLeafKind::Shard, index: 4, ..segment(fixed::STREAM, 0, 100, 0xa3) },
        segment("x", 5, 5, 0xa4),
        segment(&"s".repeat(STREAM_NAME_BYTES_MAX), 0, 1, 0xa5),
    ];
    let bucket_usage =
        CustomerUsage { transferred_bytes: 4096, stored_bytes: 1 << 20, number_of_puts: 7, number_of_gets: 3 };
    let totals = NodeUsage { transferred_bytes: 8192, stored_bytes: 2 << 20, number_of_puts: 14, number_of_gets: 6 };
    let usage_leaves = vec![
        UsageLeaf::Bucket { bucket: 0, usage: bucket_usage },
        UsageLeaf::Bucket { bucket: fixed::BUCKET, usage: bucket_usage },
        UsageLeaf::Node { usage: totals },
        UsageLeaf::Ack(ack(node, 9, 3, 4096, 3)),
    ];
    for leaf in &data_leaves {
        put("merkle_leaves", &format!("data-{:?}-{}", leaf.kind, leaf.stream.len()).to_lowercase(), &leaf.encode());
    }
    for leaf in &usage_leaves {
        put("merkle_leaves", &format!("usage-{:?}", leaf.kind()).to_lowercase(), &leaf.encode());
    }
    for (count, index) in [(1u64, 0usize), (2, 1), (3, 2), (5, 0), (5, 4), (8, 3), (64, 63)] {
        let leaves: Vec<[u8; 8]> = (0..count).map(u64::to_le_bytes).collect();
        put(
            "merkle_leaves",
            &format!("proof-{index}-of-{count}"),
            &MerkleTree::from_leaves(&leaves).proof(index).encode(),
        );
    }

    let data_tree = DataTree::build(data_leaves).expect("valid data leaves");
    let usage_tree = UsageTree::build(usage_leaves).expect("valid usage leaves");
    let mut cluster_id = [0u8; 20];
    cluster_id[19] = 1;
    let fields = AnchorFields {
        cluster_id,
        era: 42,
        start_ms: fixed::NOW_MS,
        end_ms: fixed::NOW_MS + HOUR_MS,
        data_root: data_tree.root(),
        usage_root: usage_tree.root(),
        data_leaves: data_tree.leaf_count(),
        usage_leaves: usage_tree.leaf_count(),
        totals,
    };
    let record = AnchorRecord::sign(node, fields);
    let empty = AnchorRecord::sign(
        node,
        AnchorFields {
            era: 43,
            data_root: empty_root(),
            usage_root: empty_root(),
            data_leaves: 0,
            usage_leaves: 0,
            totals: NodeUsage::default(),
            ..fields
        },
    );
    put("anchor_record", "record", &record.encode());
    put("anchor_record", "record-empty-era", &empty.encode());

    let receipt = Receipt {
        block_hash: [0xbb; 32],
        block_number: 1234,
        extrinsic_index: 2,
        tx_hash: [0xcc; 32],
        fee: 1_000_000_000,
    };
    let mut bundles = Vec::new();
    for index in [0, 2, 4] {
        bundles.push((format!("data-{index}"), RecordProof::new(record, &data_tree, index)));
    }
    for index in [0, 2, 3] {
        bundles.push((format!("usage-{index}"), RecordProof::new(record, &usage_tree, index)));
    }
    for (name, bundle) in &bundles {
        let bytes = bundle.encode();
        put("anchor_record", &format!("bundle-{name}"), &bytes);
        put("anchor_proof", name, &AnchorProof { receipt, proof: bundle.clone() }.encode());
    }
    // A bundle followed by the chain's remark bytes: the bundled record, another record, a broken one.
    let bundle = bundles[0].1.encode();
    let mut then = |name: &str, chain: &[u8]| {
        let mut bytes = bundle.clone();
        bytes.extend_from_slice(chain);
        put("anchor_record", &format!("bundle-then-{name}"), &bytes);
    };
    then("own-record", &record.encode());
    then("other-record", &empty.encode());
    let mut flipped = record.encode();
    flipped[RECORD_BYTES - 1] ^= 1;
    then("bad-signature", &flipped);
}

/// Assert that `verdict` is an error whose variant is `name` in CamelCase
/// (`"wrong-bucket"` for `WrongBucket { .. }`).
fn refused_as<E: std::fmt::Debug>(verdict: &Result<(), E>, name: &str) {
    let variant: String = name
        .split('-')
        .map(|word| {
            let mut chars = word.chars();
            chars.next().map(|c| c.to_ascii_uppercase()).into_iter().chain(chars).collect::<String>()
        })
        .collect();
    match verdict {
        Err(error) if format!("{error:?}").starts_with(&variant) => {}
        other => panic!("seed {name}: expected a {variant} refusal, got {other:?}"),
    }
}
