//! Writes the seed corpus: a few valid inputs per fuzz target, built with the
//! ddc-formats encoders, into `fuzz/corpus/<target>/seed-*`.
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
