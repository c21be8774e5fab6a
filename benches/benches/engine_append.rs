//! The engine's durable append path against raw direct I/O of the same bytes.
//!
//! Every case writes the same number of bytes per iteration: `DDC_BENCH_MIB`
//! (default 128 MiB) rounded down to whole batches of 64 × 1 KiB records
//! (65 840 bytes on disk each: a 48-byte header, then 64 × (4-byte length +
//! 1 KiB)). Throughput is in those bytes, so `engine / raw` is the ratio of
//! the two figures. Files go to a temporary directory under `DDC_BENCH_DIR`
//! (default: the workspace `target/`), on the disk being measured.
//!
//! Cases (group `append`):
//! - `raw/sync_at_end`: glommio `DmaStreamWriter`, 1 MiB buffers, 8 buffers of
//!   write-behind, fed one 65 840-byte batch at a time, one fdatasync at the
//!   end. The device's streaming ceiling; nothing is durable until the end.
//! - `raw/fdatasync_every_8_batches`: the same writer, `sync()` (pad and write
//!   the partial buffer, wait for every write, fdatasync) after every 8
//!   batches (514 KiB). That is what the engine's group commit does with 8
//!   appenders that each wait for their previous append to be acknowledged:
//!   every group holds one batch per appender. The fair "durable acks" baseline.
//! - `engine/durable/8tasks_64x1KiB`: `Engine::open(DmaStorage::new(),
//!   LogConfig::new(dir), 0, 1)`, one stream, 8 `glommio::spawn_local` tasks
//!   each appending one batch at a time with `AckLevel::Durable` until the
//!   bytes are written. Default config: 128 MiB segments (one roll and seal
//!   per 128 MiB, inside the timed region), 1 MiB write buffers.
//!
//! With `DDC_BENCH_SWEEP=1`, also: other appender counts and batch sizes,
//! `AckLevel::WrittenNotSynced` (ended by one durable append, so everything is
//! still synced inside the timed region), and raw variants that fdatasync
//! after every batch or write into a preallocated file as the engine does.
//!
//! Only the writes are timed: executor start, `Engine::open`, the stream's
//! first append (which creates its directory and segment file), file
//! creation, close and removal are not.

use std::cell::Cell;
use std::path::Path;
use std::rc::Rc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, BenchmarkId, Criterion, SamplingMode, Throughput};
use ddc_benches::{batch_bytes, bench_bytes, bench_tempdir, encode_batch, make_body, run_local, sweep_enabled, tally, DiskCounters};
use ddc_engine::storage::dma::DmaStorage;
use ddc_engine::{Engine, LogConfig};
use ddc_formats::wire::AckLevel;
use futures_lite::AsyncWriteExt;
use glommio::io::{DmaStreamWriterBuilder, OpenOptions};

const RECORD_LEN: usize = 1024;

#[derive(Clone, Copy, Debug)]
struct RawCase {
    /// fdatasync after every this many batches (None: once at the end).
    sync_every: Option<u64>,
    /// fallocate the whole file first (unwritten extents), as the engine does for a segment.
    preallocate: bool,
}

#[derive(Clone, Copy, Debug)]
struct EngineCase {
    tasks: usize,
    records: usize,
    ack: AckLevel,
}

/// Write `batches` copies of `batch` through a `DmaStreamWriter`; time from the first write to the final fdatasync.
async fn raw_write(dir: &Path, batch: Rc<Vec<u8>>, batches: u64, case: RawCase) -> Duration {
    let path = dir.join("raw.log");
    let file = OpenOptions::new().write(true).create_new(true).dma_open(&path).await.expect("create raw file");
    if case.preallocate {
        file.pre_allocate(batch.len() as u64 * batches + (1 << 20), true).await.expect("preallocate");
    }
    let mut writer = DmaStreamWriterBuilder::new(file).with_buffer_size(1 << 20).with_write_behind(8).build();
    let start = Instant::now();
    for i in 1..=batches {
        writer.write_all(&batch).await.expect("write");
        if case.sync_every.is_some_and(|g| i % g == 0) {
            writer.sync().await.expect("fdatasync");
        }
    }
    writer.sync().await.expect("final fdatasync");
    let elapsed = start.elapsed();
    writer.close().await.expect("close");
    elapsed
}

/// Append `batches` batches of `body` with `case.tasks` concurrent appenders; time until the last is durable.
async fn engine_append(dir: &Path, body: Rc<Vec<u8>>, batches: u64, case: EngineCase) -> Duration {
    let engine = Engine::open(DmaStorage::new(), LogConfig::new(dir), 0, 1).await.expect("open engine");
    let (stream, _) = engine.stream_or_create("bench").expect("stream");
    let records = case.records as u32;
    // Creates the stream's directory and first segment file, outside the timed region.
    stream.append(&body, records, AckLevel::Durable).await.expect("first append");
    let issued = Rc::new(Cell::new(0u64));
    let start = Instant::now();
    let appenders: Vec<_> = (0..case.tasks)
        .map(|_| {
            let (stream, body, issued) = (stream.clone(), body.clone(), issued.clone());
            glommio::spawn_local(async move {
                loop {
                    let i = issued.get();
                    if i >= batches {
                        break;
                    }
                    issued.set(i + 1);
                    stream.append(&body, records, case.ack).await.expect("append");
                }
            })
        })
        .collect();
    for a in appenders {
        a.await;
    }
    if case.ack != AckLevel::Durable {
        // Everything written so far is durable once this is.
        stream.append(&body, records, AckLevel::Durable).await.expect("closing durable append");
    }
    let elapsed = start.elapsed();
    engine.close().await;
    elapsed
}

/// Run `iters` timed iterations, each in a fresh temporary directory on one executor.
fn timed<F, Fut>(id: String, iters: u64, bytes: u64, f: F) -> Duration
where
    F: Fn(std::path::PathBuf) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Duration> + 'static,
{
    run_local(move || async move {
        let mut total = Duration::ZERO;
        for _ in 0..iters {
            let dir = bench_tempdir();
            let before = DiskCounters::of(dir.path());
            let elapsed = f(dir.path().to_owned()).await;
            tally(&id, dir.path(), before, bytes, elapsed);
            total += elapsed;
        }
        total
    })
}

fn bench_append(c: &mut Criterion) {
    let records = 64usize;
    let one_batch = batch_bytes(records, RECORD_LEN) as u64;
    let batches = (bench_bytes() / one_batch).max(1);
    let bytes = batches * one_batch;

    let mut g = c.benchmark_group("append");
    g.sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_millis(1))
        .measurement_time(Duration::from_secs(2))
        .throughput(Throughput::Bytes(bytes));

    let body = make_body(records, RECORD_LEN);
    let batch = encode_batch(0, records as u32, &body);
    assert_eq!(batch.len() as u64, one_batch);

    let mut raw_cases = vec![
        ("sync_at_end".to_owned(), RawCase { sync_every: None, preallocate: false }),
        ("fdatasync_every_8_batches".to_owned(), RawCase { sync_every: Some(8), preallocate: false }),
    ];
    let mut engine_cases = vec![EngineCase { tasks: 8, records, ack: AckLevel::Durable }];
    if sweep_enabled() {
        raw_cases.push(("fdatasync_every_8_batches_prealloc".to_owned(), RawCase { sync_every: Some(8), preallocate: true }));
        raw_cases.push(("fdatasync_every_batch".to_owned(), RawCase { sync_every: Some(1), preallocate: false }));
        raw_cases.push(("fdatasync_every_32_batches".to_owned(), RawCase { sync_every: Some(32), preallocate: false }));
        for tasks in [1, 2, 32] {
            engine_cases.push(EngineCase { tasks, records, ack: AckLevel::Durable });
        }
        engine_cases.push(EngineCase { tasks: 8, records, ack: AckLevel::WrittenNotSynced });
    }

    for (name, case) in raw_cases {
        let id = format!("append/raw/{name}");
        let batch = batch.clone();
        g.bench_function(BenchmarkId::new("raw", &name), move |b| {
            b.iter_custom(|iters| {
                let batch = batch.clone();
                timed(id.clone(), iters, bytes, move |dir| {
                    let batch = Rc::new(batch.clone());
                    async move { raw_write(&dir, batch, batches, case).await }
                })
            })
        });
    }
    for case in engine_cases {
        let ack = if case.ack == AckLevel::Durable { "durable" } else { "written_not_synced" };
        let name = format!("{ack}/{}tasks_{}x1KiB", case.tasks, case.records);
        let id = format!("append/engine/{name}");
        let body = body.clone();
        g.bench_function(BenchmarkId::new("engine", &name), move |b| {
            b.iter_custom(|iters| {
                let body = body.clone();
                timed(id.clone(), iters, bytes, move |dir| {
                    let body = Rc::new(body.clone());
                    async move { engine_append(&dir, body, batches, case).await }
                })
            })
        });
    }
    g.finish();

    if sweep_enabled() {
        // Batch size at 8 appenders: same bytes, different records per append.
        let mut g = c.benchmark_group("append_batch_size");
        g.sample_size(10).sampling_mode(SamplingMode::Flat).warm_up_time(Duration::from_millis(1)).measurement_time(Duration::from_secs(2));
        for records in [16usize, 256] {
            let one_batch = batch_bytes(records, RECORD_LEN) as u64;
            let batches = (bench_bytes() / one_batch).max(1);
            let bytes = batches * one_batch;
            g.throughput(Throughput::Bytes(bytes));
            let body = make_body(records, RECORD_LEN);
            let case = EngineCase { tasks: 8, records, ack: AckLevel::Durable };
            let name = format!("durable/8tasks_{records}x1KiB");
            let id = format!("append_batch_size/engine/{name}");
            g.bench_function(BenchmarkId::new("engine", &name), move |b| {
                b.iter_custom(|iters| {
                    let body = body.clone();
                    timed(id.clone(), iters, bytes, move |dir| {
                        let body = Rc::new(body.clone());
                        async move { engine_append(&dir, body, batches, case).await }
                    })
                })
            });
            let batch = encode_batch(0, records as u32, &make_body(records, RECORD_LEN));
            let id = format!("append_batch_size/raw/fdatasync_every_8_batches_of_{records}x1KiB");
            g.bench_function(BenchmarkId::new("raw", format!("fdatasync_every_8_batches_of_{records}x1KiB")), move |b| {
                b.iter_custom(|iters| {
                    let batch = batch.clone();
                    timed(id.clone(), iters, bytes, move |dir| {
                        let batch = Rc::new(batch.clone());
                        async move { raw_write(&dir, batch, batches, RawCase { sync_every: Some(8), preallocate: false }).await }
                    })
                })
            });
        }
        g.finish();
    }
}

criterion_group!(benches, bench_append);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    ddc_benches::print_io_report();
}
