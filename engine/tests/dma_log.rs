//! The log on the real direct-I/O storage: append, read, roll, seal, recover.

use ddc_engine::storage::dma::DmaStorage;
use ddc_engine::{Engine, EngineError, LogConfig};
use ddc_formats::batch::{batches, encode_records};
use ddc_formats::wire::AckLevel;

fn run<F: std::future::Future<Output = ()> + 'static>(f: impl FnOnce() -> F + Send + 'static) {
    glommio::LocalExecutorBuilder::default().io_memory(1 << 20).spawn(f).expect("executor").join().expect("join");
}

fn small_config(dir: &std::path::Path) -> LogConfig {
    let mut c = LogConfig::new(dir);
    c.segment_bytes_max = 16 << 10;
    c.index_interval_bytes = 1024;
    c.write_buffer_bytes = 8 << 10;
    c
}

fn record(i: u64) -> Vec<u8> {
    format!("record-{i}-{}", "x".repeat((i % 300) as usize)).into_bytes()
}

async fn read_all(engine: &Engine<DmaStorage>, name: &str, from: u64) -> Vec<(u64, Vec<u8>)> {
    let stream = engine.stream(name).unwrap();
    let mut out = Vec::new();
    let mut offset = from;
    while offset < stream.high_watermark() {
        let read = stream.read(offset, 8 << 10).await.unwrap();
        assert!(!read.batches.is_empty());
        for b in batches(&read.batches) {
            let b = b.unwrap();
            for (o, r) in b.records() {
                if o >= offset {
                    out.push((o, r.to_vec()));
                }
            }
            offset = b.header.next_offset();
        }
    }
    out
}

#[test]
fn append_roll_seal_recover_read_everything() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_owned();
    run(move || async move {
        let engine = Engine::open(DmaStorage::new(), small_config(&path), 0, 1).await.unwrap();
        let (stream, created) = engine.stream_or_create("s1").unwrap();
        assert!(created);
        let mut next = 0u64;
        for round in 0..200u64 {
            let recs: Vec<Vec<u8>> = (0..(round % 7 + 1)).map(|i| record(next + i)).collect();
            let body = encode_records(recs.iter().map(|r| r.as_slice()));
            let base = stream.append(&body, recs.len() as u32, AckLevel::Durable).await.unwrap();
            assert_eq!(base, next);
            next += recs.len() as u64;
        }
        assert_eq!(stream.high_watermark(), next);
        let info = stream.info(0);
        assert!(info.segments.len() > 3, "segments rolled: {}", info.segments.len());
        assert!(info.segments[..info.segments.len() - 1].iter().all(|s| s.sealed && s.root.is_some()), "{info:#?}");
        let all = read_all(&engine, "s1", 0).await;
        assert_eq!(all.len() as u64, next);
        for (o, r) in &all {
            assert_eq!(r, &record(*o));
        }
        // Reads from the middle start at the right record.
        let mid = read_all(&engine, "s1", next / 2).await;
        assert_eq!(mid.first().unwrap().0, next / 2);
        engine.close().await;

        // Recover: the same records, and appends continue at the same offset.
        let engine = Engine::open(DmaStorage::new(), small_config(&path), 0, 1).await.unwrap();
        let stream = engine.stream("s1").unwrap();
        assert_eq!(stream.high_watermark(), next);
        let again = read_all(&engine, "s1", 0).await;
        assert_eq!(again, all);
        let body = encode_records([b"after".as_slice()]);
        assert_eq!(stream.append(&body, 1, AckLevel::Durable).await.unwrap(), next);
        let roots: Vec<_> = stream.info(0).segments.iter().filter_map(|s| s.root).collect();
        assert!(!roots.is_empty());
        engine.close().await;
    });
}

#[test]
fn sealed_root_is_blake3_of_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_owned();
    run(move || async move {
        let engine = Engine::open(DmaStorage::new(), small_config(&path), 0, 1).await.unwrap();
        let (stream, _) = engine.stream_or_create("h").unwrap();
        for i in 0..20u64 {
            let body = encode_records([record(i).as_slice()]);
            stream.append(&body, 1, AckLevel::Durable).await.unwrap();
        }
        stream.roll_now();
        let body = encode_records([b"next".as_slice()]);
        stream.append(&body, 1, AckLevel::Durable).await.unwrap();
        let info = stream.info(0);
        let sealed = &info.segments[0];
        assert!(sealed.sealed);
        let file = std::fs::read(path.join("streams/h/00000000000000000000.log")).unwrap();
        let root = blake3::hash(&file[..sealed.size_bytes as usize]);
        assert_eq!(&sealed.root.unwrap(), root.as_bytes());
        engine.close().await;
    });
}

#[test]
fn bad_requests_are_refused_without_side_effects() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_owned();
    run(move || async move {
        let engine = Engine::open(DmaStorage::new(), small_config(&path), 0, 1).await.unwrap();
        assert!(matches!(engine.stream_or_create("../etc"), Err(EngineError::InvalidStreamName(_))));
        assert!(matches!(engine.stream("nope"), Err(EngineError::UnknownStream(_))));
        let (stream, _) = engine.stream_or_create("v").unwrap();
        assert!(matches!(
            stream.append(&[1, 0, 0, 0], 1, AckLevel::Durable).await,
            Err(EngineError::InvalidRecords(_))
        ));
        assert!(matches!(stream.append(&[], 0, AckLevel::Durable).await, Err(EngineError::InvalidRecords(_))));
        assert_eq!(stream.high_watermark(), 0);
        assert!(matches!(stream.read(1, 100).await, Err(EngineError::OffsetOutOfRange { .. })));
        assert!(stream.read(0, 100).await.unwrap().batches.is_empty());
        engine.close().await;
    });
}

/// Regression (found by the simulated-disk tests): a damaged batch in a sealed
/// segment made the intact batches after it unreadable up to the next index
/// entry, because the reader checked the body of every batch it stepped over.
#[test]
fn damaged_batch_hides_only_itself() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_owned();
    run(move || async move {
        let engine = Engine::open(DmaStorage::new(), small_config(&path), 0, 1).await.unwrap();
        let (stream, _) = engine.stream_or_create("d").unwrap();
        for i in 0..8u64 {
            let body = encode_records([format!("r{i}").as_bytes()]);
            stream.append(&body, 1, AckLevel::Durable).await.unwrap();
        }
        stream.roll_now();
        stream.append(&encode_records([b"next".as_slice()]), 1, AckLevel::Durable).await.unwrap();
        engine.close().await;

        // Flip one body byte of the batch holding offset 3.
        let file = path.join("streams/d/00000000000000000000.log");
        let mut bytes = std::fs::read(&file).unwrap();
        let mut pos = ddc_formats::segment::SEGMENT_HEADER_BYTES;
        for b in batches(&bytes[pos..]).take(3) {
            pos += b.unwrap().header.batch_len();
        }
        bytes[pos + ddc_formats::batch::BATCH_HEADER_BYTES + 2] ^= 0x40;
        std::fs::write(&file, &bytes).unwrap();

        let engine = Engine::open(DmaStorage::new(), small_config(&path), 0, 1).await.unwrap();
        let stream = engine.stream("d").unwrap();
        assert!(matches!(stream.read(3, 1 << 20).await, Err(EngineError::Corrupted { .. })));
        let after = stream.read(4, 1 << 20).await.unwrap();
        let first = batches(&after.batches).next().unwrap().unwrap();
        assert_eq!(first.header.base_offset, 4);
        assert_eq!(first.records().next().unwrap().1, b"r4");
        // Reading from before the damage returns the good prefix, then stops at it.
        let before = stream.read(0, 1 << 20).await.unwrap();
        assert_eq!(batches(&before.batches).count(), 3);
        engine.close().await;
    });
}

/// What a follower and the erasure coder need: appends at a given offset,
/// whole sealed segments checked against their root, and dropping sealed
/// segments whose data lives elsewhere, across a restart.
#[test]
fn append_at_read_sealed_and_drop_sealed_below() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_owned();
    run(move || async move {
        let engine = Engine::open(DmaStorage::new(), small_config(&path), 0, 1).await.unwrap();
        let (stream, _) = engine.stream_or_create("f").unwrap();
        let body = encode_records([b"one".as_slice(), b"two"]);
        match stream.append_at(5, &body, 2, AckLevel::Durable).await {
            Err(EngineError::OffsetMismatch { expected: 5, next: 0, .. }) => {}
            other => panic!("{other:?}"),
        }
        assert_eq!(stream.next_offset(), 0, "a refused append writes nothing");
        let mut next = 0;
        for i in 0..300u64 {
            let recs = [record(i)];
            let body = encode_records(recs.iter().map(|r| r.as_slice()));
            assert_eq!(stream.append_at(next, &body, 1, AckLevel::Durable).await.unwrap(), next);
            next += 1;
        }
        let sealed: Vec<_> = stream.info(0).segments.into_iter().filter(|s| s.sealed).collect();
        assert!(sealed.len() >= 3, "{sealed:?}");
        let (manifest, bytes) = stream.read_sealed(sealed[0].base_offset).await.unwrap();
        assert_eq!(bytes.len() as u64, manifest.data_len);
        assert_eq!(*blake3::hash(&bytes).as_bytes(), manifest.root);
        let cut = sealed[1].next_offset;
        assert_eq!(stream.drop_sealed_below(cut).await.unwrap(), 2);
        assert_eq!(stream.log_start_offset(), cut);
        assert!(matches!(stream.read(0, 100).await, Err(EngineError::OffsetOutOfRange { .. })));
        let kept = read_all(&engine, "f", cut).await;
        assert_eq!(kept.len() as u64, next - cut);
        engine.close().await;
        drop(engine);
        // The shortened log recovers as it was.
        let engine = Engine::open(DmaStorage::new(), small_config(&path), 0, 1).await.unwrap();
        let stream = engine.stream("f").unwrap();
        assert_eq!(stream.log_start_offset(), cut);
        assert_eq!(stream.high_watermark(), next);
        assert_eq!(read_all(&engine, "f", cut).await, kept);
        engine.close().await;
    });
}
