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
//! - `raw/stream_sync_at_end`: glommio `DmaStreamWriter`, 1 MiB buffers, 8
//!   buffers of write-behind, fed one 65 840-byte batch at a time, one
//!   fdatasync at the end. The device's streaming ceiling; nothing is durable
//!   before the end, so no durable-ack log can reach it.
//! - `raw/groups_of_8_fdatasync`: the I/O a perfect group commit would do for
//!   8 appenders that each wait for their previous append: for every group of
//!   8 batches (514 KiB), one `DmaFile::write_at` of exactly the new bytes
//!   (from the start of the partial last block, which is written again, as the
//!   engine does), then one fdatasync, into a file preallocated with
//!   `fallocate` like an engine segment. No checksums, no copies beyond
//!   filling the buffer. This is the fair baseline for durable acks.
//!   (`DmaStreamWriter::sync` is not used for it: it rewrites its whole
//!   partial buffer from the buffer's start on every sync, writing ~1.5× the
//!   bytes at this group size; see the sweep case `raw/stream_sync_every_8`.)
//! - `engine/durable/8tasks_64x1KiB`: `Engine::open(DmaStorage::new(),
//!   LogConfig::new(dir), 0, 1)`, one stream, 8 `glommio::spawn_local` tasks
//!   each appending one batch at a time with `AckLevel::Durable` until the
//!   bytes are written. Default config: 128 MiB segments (one roll and seal
//!   per 128 MiB, inside the timed region), 1 MiB write buffers.
//!
//! With `DDC_BENCH_SWEEP=1` (use a smaller `DDC_BENCH_MIB`, e.g. 64), also:
//! the engine with 1, 2 and 32 appenders, with `AckLevel::WrittenNotSynced`
//! (ended by one durable append, so everything is still synced inside the
//! timed region), and with 16 and 256 records per batch; raw groups of 1 and
//! 32 batches, groups into a plain (not preallocated) file and into a file
//! pre-filled with zeros (so an fdatasync needs no journal commit), groups
//! from 1 MiB heap buffers as the engine's write buffers are (they do not fit
//! in 1 MiB of registered io_memory), the same plus BLAKE3 of each durable
//! group (together: the engine's I/O and its two biggest CPU costs, without
//! the engine), and `DmaStreamWriter` with `sync()` every 8 batches.
//!
//! Every executor first opens a non-empty file (`DmaStorage::init`): glommio
//! 0.9 probes the first `DmaFile` an executor opens to decide whether disk
//! I/O uses the io_uring poll ring, and a new empty file wrongly passes, after
//! which the executor busy-polls that ring (many times the CPU per MiB, and
//! a distorted baseline).
//!
//! Only the writes are timed: executor start, `Engine::open`, the stream's
//! first append (which creates its directory and segment file), file
//! creation and preallocation, close and removal are not. Each criterion
//! sample is one iteration (flat sampling), so criterion's "unable to
//! complete 10 samples in 2.0s" warning is expected. The report printed at
//! the end shows, per case, the executor thread's CPU share and the fdatasyncs
//! (device cache flushes) per MiB.
//!
//! On a busy machine, `DDC_BENCH_PAIRED=N` replaces the criterion run with N
//! interleaved rounds of the three default cases (plus, with
//! `DDC_BENCH_SWEEP=1`, the heap-buffer, heap-buffer + BLAKE3 and zero-filled
//! raw variants) and prints per-round and median engine/raw ratios.

use std::cell::Cell;
use std::path::Path;
use std::rc::Rc;
use std::time::Duration;

use criterion::{criterion_group, BenchmarkId, Criterion, SamplingMode, Throughput};
use ddc_benches::{batch_bytes, bench_bytes, bench_tempdir, encode_batch, make_body, run_local, sweep_enabled, Probe};
use ddc_engine::storage::dma::DmaStorage;
use ddc_engine::storage::Storage;
use ddc_engine::{Engine, LogConfig};
use ddc_formats::wire::AckLevel;
use futures_lite::AsyncWriteExt;
use glommio::io::{DmaStreamWriterBuilder, OpenOptions};

const RECORD_LEN: usize = 1024;

/// How the raw file is prepared before the timed writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Prep {
    /// A new, empty file: every fdatasync also commits the size change.
    Plain,
    /// `fallocate` (unwritten extents, size kept), as the engine prepares a segment:
    /// every fdatasync also commits the extents' conversion to written.
    Fallocate,
    /// Written with zeros and synced: later fdatasyncs need only a cache flush.
    Zeroed,
}

#[derive(Clone, Copy, Debug)]
enum RawCase {
    /// `DmaStreamWriter` (1 MiB buffers, 8 write-behind), `sync()` after every this many batches, and at the end.
    Stream { sync_every: Option<u64> },
    /// One `write_at` of exactly the new bytes, then fdatasync, per group of this many batches.
    /// Buffers come from the executor's registered io_memory when they fit, or from the
    /// heap (`heap`: always, as the engine's 1 MiB write buffers do with 1 MiB of io_memory).
    /// `blake3`: after each fdatasync, feed the group to a BLAKE3 hasher, as the engine
    /// hashes each durable group for the segment's seal manifest.
    Groups { batches: u64, prep: Prep, heap: bool, blake3: bool },
}

#[derive(Clone, Copy, Debug)]
struct EngineCase {
    tasks: usize,
    records: usize,
    ack: AckLevel,
}

const BLOCK: u64 = 4096;

/// Write `batches` copies of `batch` as `case` says; time from the first write to the final fdatasync.
async fn raw_write(id: &str, dir: &Path, batch: Rc<Vec<u8>>, batches: u64, case: RawCase) -> Duration {
    let path = dir.join("raw.log");
    let file =
        OpenOptions::new().read(true).write(true).create_new(true).dma_open(&path).await.expect("create raw file");
    let total = batch.len() as u64 * batches;
    match case {
        RawCase::Stream { sync_every } => {
            let mut writer = DmaStreamWriterBuilder::new(file).with_buffer_size(1 << 20).with_write_behind(8).build();
            let probe = Probe::start(dir);
            for i in 1..=batches {
                writer.write_all(&batch).await.expect("write");
                if sync_every.is_some_and(|g| i % g == 0) {
                    writer.sync().await.expect("fdatasync");
                }
            }
            writer.sync().await.expect("final fdatasync");
            let elapsed = probe.stop(id, total);
            writer.close().await.expect("close");
            elapsed
        }
        RawCase::Groups { batches: group, prep, heap, blake3: hash } => {
            let reserve = total.next_multiple_of(BLOCK) + BLOCK;
            match prep {
                Prep::Plain => {}
                Prep::Fallocate => file.pre_allocate(reserve, true).await.expect("fallocate"),
                Prep::Zeroed => {
                    let mut pos = 0;
                    while pos < reserve {
                        let len = (1u64 << 20).min(reserve - pos) as usize;
                        let mut zeros = file.alloc_dma_buffer(len);
                        zeros.as_bytes_mut().fill(0);
                        file.write_at(zeros, pos).await.expect("zero fill");
                        pos += len as u64;
                    }
                    file.fdatasync().await.expect("fdatasync zeros");
                }
            }
            let probe = Probe::start(dir);
            let mut hasher = blake3::Hasher::new();
            let mut end = 0u64;
            let mut carry: Vec<u8> = Vec::new();
            let mut left = batches;
            while left > 0 {
                let n = group.min(left);
                left -= n;
                let start = end - carry.len() as u64;
                let len = carry.len() + n as usize * batch.len();
                let cap = (len as u64).next_multiple_of(BLOCK) as usize;
                let mut buf = if heap {
                    // As the engine does: a 1 MiB buffer, trimmed to what is written.
                    let mut b = glommio::allocate_dma_buffer_global(cap.max(1 << 20));
                    b.trim_to_size(cap);
                    b
                } else {
                    file.alloc_dma_buffer(cap)
                };
                let bytes = buf.as_bytes_mut();
                bytes[..carry.len()].copy_from_slice(&carry);
                let mut at = carry.len();
                for _ in 0..n {
                    bytes[at..at + batch.len()].copy_from_slice(&batch);
                    at += batch.len();
                }
                bytes[len..].fill(0);
                end = start + len as u64;
                let tail = (end - end / BLOCK * BLOCK) as usize;
                carry.clear();
                carry.extend_from_slice(&bytes[len - tail..len]);
                let buf = Rc::new(buf);
                let written = file.write_rc_at(buf.clone(), start).await.expect("write");
                assert!(written >= len, "short write");
                file.fdatasync().await.expect("fdatasync");
                if hash {
                    let new_from = (len - n as usize * batch.len()).min(len);
                    hasher.update(&buf.as_bytes()[new_from..len]);
                }
            }
            std::hint::black_box(hasher.finalize());
            let elapsed = probe.stop(id, total);
            file.close().await.expect("close");
            elapsed
        }
    }
}

/// Append `batches` batches of `body` with `case.tasks` concurrent appenders; time until the last is durable.
async fn engine_append(id: &str, dir: &Path, body: Rc<Vec<u8>>, batches: u64, case: EngineCase) -> Duration {
    let engine = Engine::open(DmaStorage::new(), LogConfig::new(dir), 0, 1).await.expect("open engine");
    let (stream, _) = engine.stream_or_create("bench").expect("stream");
    let records = case.records as u32;
    // Creates the stream's directory and first segment file, outside the timed region.
    stream.append(&body, records, AckLevel::Durable).await.expect("first append");
    let issued = Rc::new(Cell::new(0u64));
    let probe = Probe::start(dir);
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
    let batch_len = (ddc_formats::batch::BATCH_HEADER_BYTES + body.len()) as u64;
    let elapsed = probe.stop(id, batch_len * batches);
    engine.close().await;
    elapsed
}

/// Run `iters` iterations on one executor, each in a fresh temporary directory; sum their timed parts.
fn timed<F, Fut>(iters: u64, f: F) -> Duration
where
    F: Fn(std::path::PathBuf) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Duration> + 'static,
{
    run_local(move || async move {
        // glommio 0.9 decides per executor thread, by probing the first DmaFile it opens,
        // whether disk I/O goes to the io_uring poll ring. A new, empty file passes the
        // probe wrongly, and the executor then busy-polls a device that cannot be polled.
        // `DmaStorage::init` opens a non-empty file first (the engine calls it in `open`).
        let probe_dir = bench_tempdir();
        DmaStorage::new().init(probe_dir.path()).await.expect("direct-I/O probe");
        drop(probe_dir);
        let mut total = Duration::ZERO;
        for _ in 0..iters {
            let dir = bench_tempdir();
            total += f(dir.path().to_owned()).await;
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
        ("stream_sync_at_end", RawCase::Stream { sync_every: None }),
        ("groups_of_8_fdatasync", RawCase::Groups { batches: 8, prep: Prep::Fallocate, heap: false, blake3: false }),
    ];
    let mut engine_cases = vec![EngineCase { tasks: 8, records, ack: AckLevel::Durable }];
    if sweep_enabled() {
        raw_cases.extend([
            (
                "groups_of_1_fdatasync",
                RawCase::Groups { batches: 1, prep: Prep::Fallocate, heap: false, blake3: false },
            ),
            (
                "groups_of_32_fdatasync",
                RawCase::Groups { batches: 32, prep: Prep::Fallocate, heap: false, blake3: false },
            ),
            (
                "groups_of_8_fdatasync_plain_file",
                RawCase::Groups { batches: 8, prep: Prep::Plain, heap: false, blake3: false },
            ),
            (
                "groups_of_8_fdatasync_zeroed_file",
                RawCase::Groups { batches: 8, prep: Prep::Zeroed, heap: false, blake3: false },
            ),
            (
                "groups_of_8_fdatasync_heap_buffers",
                RawCase::Groups { batches: 8, prep: Prep::Fallocate, heap: true, blake3: false },
            ),
            (
                "groups_of_8_fdatasync_heap_buffers_blake3",
                RawCase::Groups { batches: 8, prep: Prep::Fallocate, heap: true, blake3: true },
            ),
            ("stream_sync_every_8", RawCase::Stream { sync_every: Some(8) }),
        ]);
        for tasks in [1, 2, 32] {
            engine_cases.push(EngineCase { tasks, records, ack: AckLevel::Durable });
        }
        engine_cases.push(EngineCase { tasks: 8, records, ack: AckLevel::WrittenNotSynced });
    }

    for (name, case) in raw_cases {
        let id = format!("append/raw/{name}");
        let batch = batch.clone();
        g.bench_function(BenchmarkId::new("raw", name), move |b| {
            b.iter_custom(|iters| {
                let batch = batch.clone();
                let id = id.clone();
                timed(iters, move |dir| {
                    let (id, batch) = (id.clone(), Rc::new(batch.clone()));
                    async move { raw_write(&id, &dir, batch, batches, case).await }
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
                let id = id.clone();
                timed(iters, move |dir| {
                    let (id, body) = (id.clone(), Rc::new(body.clone()));
                    async move { engine_append(&id, &dir, body, batches, case).await }
                })
            })
        });
    }
    g.finish();

    if sweep_enabled() {
        // Batch size at 8 appenders: same bytes, different records per append.
        let mut g = c.benchmark_group("append_batch_size");
        g.sample_size(10)
            .sampling_mode(SamplingMode::Flat)
            .warm_up_time(Duration::from_millis(1))
            .measurement_time(Duration::from_secs(2));
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
                    let id = id.clone();
                    timed(iters, move |dir| {
                        let (id, body) = (id.clone(), Rc::new(body.clone()));
                        async move { engine_append(&id, &dir, body, batches, case).await }
                    })
                })
            });
            let batch = encode_batch(0, records as u32, &make_body(records, RECORD_LEN));
            let name = format!("groups_of_8_fdatasync_{records}x1KiB");
            let id = format!("append_batch_size/raw/{name}");
            g.bench_function(BenchmarkId::new("raw", name), move |b| {
                b.iter_custom(|iters| {
                    let batch = batch.clone();
                    let id = id.clone();
                    timed(iters, move |dir| {
                        let (id, batch) = (id.clone(), Rc::new(batch.clone()));
                        let case = RawCase::Groups { batches: 8, prep: Prep::Fallocate, heap: false, blake3: false };
                        async move { raw_write(&id, &dir, batch, batches, case).await }
                    })
                })
            });
        }
        g.finish();
    }
}

criterion_group!(benches, bench_append);

/// `DDC_BENCH_PAIRED=N`: instead of criterion, run N rounds of the default
/// cases back to back (with `DDC_BENCH_SWEEP=1`, also raw groups from heap
/// buffers and into a zero-filled file) and print each round's throughputs and
/// the median ratios to the engine. On a machine shared with other work the
/// cases of one round see about the same interference, so these ratios are
/// steadier than ratios of criterion estimates measured minutes apart.
fn paired(rounds: usize) {
    let records = 64usize;
    let one_batch = batch_bytes(records, RECORD_LEN) as u64;
    let batches = (bench_bytes() / one_batch).max(1);
    let bytes = batches * one_batch;
    let batch = encode_batch(0, records as u32, &make_body(records, RECORD_LEN));
    let body = make_body(records, RECORD_LEN);
    let mib_s = |d: Duration| bytes as f64 / (1u64 << 20) as f64 / d.as_secs_f64();
    let mut raw: Vec<(&str, RawCase)> = vec![
        ("stream_sync_at_end", RawCase::Stream { sync_every: None }),
        ("groups_of_8_fdatasync", RawCase::Groups { batches: 8, prep: Prep::Fallocate, heap: false, blake3: false }),
    ];
    if sweep_enabled() {
        raw.push((
            "groups_of_8_fdatasync_heap_buffers",
            RawCase::Groups { batches: 8, prep: Prep::Fallocate, heap: true, blake3: false },
        ));
        raw.push((
            "groups_of_8_fdatasync_heap_buffers_blake3",
            RawCase::Groups { batches: 8, prep: Prep::Fallocate, heap: true, blake3: true },
        ));
        raw.push((
            "groups_of_8_fdatasync_zeroed_file",
            RawCase::Groups { batches: 8, prep: Prep::Zeroed, heap: false, blake3: false },
        ));
    }
    let engine_case = EngineCase { tasks: 8, records, ack: AckLevel::Durable };
    println!("paired rounds, {} MiB each; MiB/s (engine = engine/durable/8tasks_64x1KiB):", bytes >> 20);
    let mut header = format!("{:>6} {:>9}", "round", "engine");
    for (name, _) in &raw {
        header += &format!(" {:>34}", format!("raw/{name} (eng/raw)"));
    }
    println!("{header}");
    let mut rows: Vec<Vec<f64>> = Vec::new();
    for round in 0..rounds {
        let mut row = Vec::new();
        let bd = body.clone();
        let engine = timed(1, move |dir| {
            let bd = Rc::new(bd.clone());
            async move { engine_append("paired/engine/durable/8tasks_64x1KiB", &dir, bd, batches, engine_case).await }
        });
        row.push(mib_s(engine));
        for (name, case) in &raw {
            let (b, case, id) = (batch.clone(), *case, format!("paired/raw/{name}"));
            let took = timed(1, move |dir| {
                let (b, id) = (Rc::new(b.clone()), id.clone());
                async move { raw_write(&id, &dir, b, batches, case).await }
            });
            row.push(mib_s(took));
        }
        let mut line = format!("{round:>6} {:>9.1}", row[0]);
        for v in &row[1..] {
            line += &format!(" {:>34}", format!("{v:.1} ({:.2})", row[0] / v));
        }
        println!("{line}");
        rows.push(row);
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let mut line = format!("{:>6} {:>9.1}", "median", median(rows.iter().map(|r| r[0]).collect()));
    for i in 1..=raw.len() {
        let m = median(rows.iter().map(|r| r[i]).collect());
        let ratio = median(rows.iter().map(|r| r[0] / r[i]).collect());
        line += &format!(" {:>34}", format!("{m:.1} ({ratio:.2})"));
    }
    println!("{line}");
}

fn main() {
    if let Some(rounds) =
        std::env::var("DDC_BENCH_PAIRED").ok().and_then(|v| v.parse::<usize>().ok()).filter(|&n| n > 0)
    {
        paired(rounds);
    } else {
        benches();
        Criterion::default().configure_from_args().final_summary();
    }
    ddc_benches::print_io_report();
}
