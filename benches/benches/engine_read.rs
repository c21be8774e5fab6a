//! Catch-up read through the engine against raw sequential direct-I/O reads of the same file.
//!
//! Setup (once, untimed): the engine writes a stream of `DDC_BENCH_MIB`
//! (default 128 MiB, capped to fit one 128 MiB segment) of 64 × 1 KiB record
//! batches, rolls it so the segment is sealed (truncated, indexed), and
//! closes. Files live in a temporary directory under `DDC_BENCH_DIR`
//! (default: the workspace `target/`). Reads use O_DIRECT, so they come from
//! the device, not the guest page cache.
//!
//! Cases (group `read`, throughput in bytes of batches read):
//! - `engine/read_1MiB`: from offset 0 to the high watermark with
//!   `Stream::read(offset, 1 MiB)`, finding the next offset by walking the
//!   returned batch headers. `Stream::read` verifies each batch's header and
//!   body CRC and copies the bytes into its `ReadOut`; `DmaStorage` splits each
//!   read into `read_split_bytes` (128 KiB) direct reads. One `Stream::read` is
//!   in flight at a time, as one catching-up consumer would issue them.
//! - `raw/read_at_aligned_128KiB`, `raw/read_at_aligned_1MiB`: the segment
//!   file read front to back with `DmaFile::read_at_aligned`, one read in
//!   flight, no checksum, no copy: the device at queue depth 1 with the
//!   engine's read size and with 1 MiB reads.
//! - `raw/stream_reader_1MiB_x4`: glommio `DmaStreamReader`, 1 MiB buffers,
//!   4 reads ahead: the device's streaming read ceiling.
//!
//! Only the reads are timed; executor start and `Engine::open` are not. The
//! first `DmaFile` a raw-read executor opens is made non-empty by calling
//! `DmaStorage::init` first (glommio 0.9 picks the io_uring poll ring by
//! probing the first file it opens, and an empty one breaks every later read
//! on devices without polling, such as virtio).

use std::cell::Cell;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, SamplingMode, Throughput};
use ddc_benches::{batch_bytes, bench_bytes, bench_tempdir, make_body, run_local, Probe};
use ddc_engine::storage::dma::DmaStorage;
use ddc_engine::storage::Storage;
use ddc_engine::{Engine, LogConfig};
use ddc_formats::batch::BatchHeader;
use ddc_formats::wire::AckLevel;
use futures_lite::AsyncReadExt;
use glommio::io::{DmaFile, DmaStreamReaderBuilder};

const RECORD_LEN: usize = 1024;
const RECORDS: usize = 64;
const STREAM: &str = "bench";

/// A sealed stream on disk, removed when dropped.
struct Fixture {
    dir: tempfile::TempDir,
    /// Bytes of batches in the stream.
    bytes: u64,
    /// Records in the stream (its high watermark).
    records: u64,
    /// Segment files in order, with the bytes each holds (block-aligned, as sealed).
    files: Vec<(PathBuf, u64)>,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = bench_tempdir();
        let one_batch = batch_bytes(RECORDS, RECORD_LEN) as u64;
        let limit = LogConfig::new(dir.path()).segment_bytes_max - (1 << 20);
        let batches = (bench_bytes().min(limit) / one_batch).max(1);
        let path = dir.path().to_owned();
        let records = run_local(move || async move {
            let engine = Engine::open(DmaStorage::new(), LogConfig::new(&path), 0, 1).await.expect("open engine");
            let (stream, _) = engine.stream_or_create(STREAM).expect("stream");
            let body = Rc::new(make_body(RECORDS, RECORD_LEN));
            let issued = Rc::new(Cell::new(0u64));
            let writers: Vec<_> = (0..8)
                .map(|_| {
                    let (stream, body, issued) = (stream.clone(), body.clone(), issued.clone());
                    glommio::spawn_local(async move {
                        while issued.get() < batches {
                            issued.set(issued.get() + 1);
                            stream.append(&body, RECORDS as u32, AckLevel::WrittenNotSynced).await.expect("append");
                        }
                    })
                })
                .collect();
            for w in writers {
                w.await;
            }
            let last = stream.append(&body, RECORDS as u32, AckLevel::Durable).await.expect("append");
            stream.roll_now();
            engine.close().await;
            last + RECORDS as u64
        });
        let total_batches = batches + 1;
        let stream_dir = dir.path().join("streams").join(STREAM);
        let mut files: Vec<(PathBuf, u64)> = std::fs::read_dir(&stream_dir)
            .expect("stream dir")
            .map(|e| e.expect("dir entry").path())
            .filter(|p| p.extension().is_some_and(|x| x == "log"))
            .map(|p| {
                let len = std::fs::metadata(&p).expect("segment size").len();
                (p, len)
            })
            .collect();
        files.sort();
        assert!(!files.is_empty(), "no segment files in {}", stream_dir.display());
        assert!(
            dir.path().join("streams").join(STREAM).join("00000000000000000000.seal").exists(),
            "segment was not sealed"
        );
        Fixture { dir, bytes: total_batches * one_batch, records, files }
    }
}

/// Read the whole stream with `Stream::read`; returns the bytes of batches read.
async fn engine_read_all(engine: &Engine<DmaStorage>, max_bytes: u32) -> u64 {
    let stream = engine.stream(STREAM).expect("stream");
    let end = stream.high_watermark();
    let mut offset = 0u64;
    let mut bytes = 0u64;
    while offset < end {
        let out = stream.read(offset, max_bytes).await.expect("read");
        assert!(!out.batches.is_empty(), "empty read at {offset} of {end}");
        let mut at = 0usize;
        while at < out.batches.len() {
            let header = BatchHeader::decode(&out.batches[at..]).expect("batch header");
            at += header.batch_len();
            offset = header.next_offset();
        }
        bytes += out.batches.len() as u64;
    }
    bytes
}

/// Read each file front to back, one `read_at_aligned` of `chunk` bytes at a time.
async fn raw_read_all(files: &[(PathBuf, u64)], chunk: usize) -> u64 {
    let mut bytes = 0u64;
    for (path, len) in files {
        let file = DmaFile::open(path).await.expect("open segment");
        let mut pos = 0u64;
        while pos < *len {
            let want = chunk.min((*len - pos) as usize);
            let got = file.read_at_aligned(pos, want).await.expect("read");
            assert!(!got.is_empty(), "short read at {pos} of {len}");
            pos += got.len() as u64;
        }
        bytes += pos;
        file.close().await.expect("close");
    }
    bytes
}

/// Read each file with a `DmaStreamReader` (1 MiB buffers, 4 ahead).
async fn raw_stream_read_all(files: &[(PathBuf, u64)]) -> u64 {
    let mut bytes = 0u64;
    let mut sink = vec![0u8; 1 << 20];
    for (path, _) in files {
        let file = DmaFile::open(path).await.expect("open segment");
        let mut reader = DmaStreamReaderBuilder::new(file).with_buffer_size(1 << 20).with_read_ahead(4).build();
        loop {
            let n = reader.read(&mut sink).await.expect("read");
            if n == 0 {
                break;
            }
            bytes += n as u64;
        }
        reader.close().await.expect("close");
    }
    bytes
}

#[derive(Clone, Copy)]
enum Case {
    Engine,
    Raw(usize),
    RawStream,
}

fn run_case(fx: &Fixture, id: &str, case: Case, iters: u64) -> Duration {
    let (dir, files, bytes, records) = (fx.dir.path().to_owned(), fx.files.clone(), fx.bytes, fx.records);
    let id = id.to_owned();
    run_local(move || async move {
        let mut total = Duration::ZERO;
        let engine = match case {
            Case::Engine => {
                let engine = Engine::open(DmaStorage::new(), LogConfig::new(&dir), 0, 1).await.expect("open engine");
                assert_eq!(engine.stream(STREAM).expect("stream").high_watermark(), records);
                Some(engine)
            }
            _ => {
                // The first DmaFile this executor opens must not be empty (glommio 0.9 poll-ring probe).
                DmaStorage::new().init(&dir).await.expect("direct-I/O probe");
                None
            }
        };
        for _ in 0..iters {
            let probe = Probe::start(&dir);
            let read = match case {
                Case::Engine => engine_read_all(engine.as_ref().expect("engine"), 1 << 20).await,
                Case::Raw(chunk) => raw_read_all(&files, chunk).await,
                Case::RawStream => raw_stream_read_all(&files).await,
            };
            let elapsed = probe.stop(&id, bytes);
            match case {
                Case::Engine => assert_eq!(read, bytes, "engine read every batch"),
                _ => assert!(read >= bytes, "raw read {read} < {bytes}"),
            }
            total += elapsed;
        }
        if let Some(engine) = engine {
            engine.close().await;
        }
        total
    })
}

fn bench_read(c: &mut Criterion, fx: &Fixture) {
    let mut g = c.benchmark_group("read");
    g.sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_millis(1))
        .measurement_time(Duration::from_secs(2))
        .throughput(Throughput::Bytes(fx.bytes));
    let cases = [
        ("engine", "read_1MiB", Case::Engine),
        ("raw", "read_at_aligned_128KiB", Case::Raw(128 << 10)),
        ("raw", "read_at_aligned_1MiB", Case::Raw(1 << 20)),
        ("raw", "stream_reader_1MiB_x4", Case::RawStream),
    ];
    for (kind, name, case) in cases {
        let id = format!("read/{kind}/{name}");
        g.bench_function(BenchmarkId::new(kind, name), |b| b.iter_custom(|iters| run_case(fx, &id, case, iters)));
    }
    g.finish();
}

fn benches() {
    let mut c = Criterion::default().configure_from_args();
    let fixture = Fixture::new();
    eprintln!(
        "read fixture: {} MiB of batches in {} segment file(s) under {}",
        fixture.bytes >> 20,
        fixture.files.len(),
        fixture.dir.path().display()
    );
    bench_read(&mut c, &fixture);
}

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    ddc_benches::print_io_report();
}
