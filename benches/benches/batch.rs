//! Record batch encode and decode/verify throughput (bytes of whole batches per second,
//! except `validate_records`).
//!
//! - `build_body`: records → length-prefixed body (`push_record`), what a client does.
//! - `validate_records`: the record walk `Stream::append` does before accepting a body
//!   (throughput in records per second: it reads only the length prefixes).
//! - `encode`: `BatchHeader::new` (body CRC) + `encode` (header CRC) + copy of header
//!   and body into a reused output buffer, as the append path copies into its DMA buffer.
//! - `verify`: walk ~1 MiB of back-to-back batches with `batches()` (header decode and
//!   CRC, body CRC), as a reader or recovery does.
//! - `verify_records`: `verify` plus iterating every record of every batch.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ddc_benches::{batch_bytes, make_batch_run, make_body, make_records};
use ddc_formats::batch::{batches, push_record, validate_records, BatchHeader, BATCH_HEADER_BYTES};

/// (records per batch, bytes per record).
const SHAPES: [(usize, usize); 4] = [(64, 1024), (16, 128), (1, 64 << 10), (256, 4096)];

fn label(count: usize, record_len: usize) -> String {
    if record_len >= 1024 {
        format!("{count}x{}KiB", record_len / 1024)
    } else {
        format!("{count}x{record_len}B")
    }
}

fn bench_batch(c: &mut Criterion) {
    let mut g = c.benchmark_group("batch");
    g.sample_size(30).warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2));
    for (count, record_len) in SHAPES {
        let id = label(count, record_len);
        let one_batch = batch_bytes(count, record_len) as u64;
        let records = make_records(count, record_len);
        let body = make_body(count, record_len);

        g.throughput(Throughput::Bytes(one_batch));
        g.bench_with_input(BenchmarkId::new("build_body", &id), &records, |b, records| {
            let mut out = Vec::with_capacity(body.len());
            b.iter(|| {
                out.clear();
                for r in records {
                    push_record(&mut out, r);
                }
                black_box(out.len())
            })
        });

        // A walk over record lengths: its cost is per record, not per byte.
        g.throughput(Throughput::Elements(count as u64));
        g.bench_with_input(BenchmarkId::new("validate_records", &id), &body, |b, body| {
            b.iter(|| validate_records(black_box(body), count as u32).expect("valid"))
        });

        g.throughput(Throughput::Bytes(one_batch));
        g.bench_with_input(BenchmarkId::new("encode", &id), &body, |b, body| {
            let mut out = vec![0u8; BATCH_HEADER_BYTES + body.len()];
            let mut base = 0u64;
            b.iter(|| {
                let header = BatchHeader::new(base, count as u32, black_box(body), 1_700_000_000_000);
                out[..BATCH_HEADER_BYTES].copy_from_slice(&header.encode());
                out[BATCH_HEADER_BYTES..].copy_from_slice(body);
                base += count as u64;
                black_box(&out);
            })
        });

        let (run, n) = make_batch_run(count, record_len, 1 << 20);
        g.throughput(Throughput::Bytes(run.len() as u64));
        g.bench_with_input(BenchmarkId::new("verify", &id), &run, |b, run| {
            b.iter(|| {
                let mut records = 0u64;
                for batch in batches(black_box(run)) {
                    records += u64::from(batch.expect("valid batch").header.record_count);
                }
                assert_eq!(records, (n * count) as u64);
                records
            })
        });
        g.bench_with_input(BenchmarkId::new("verify_records", &id), &run, |b, run| {
            b.iter(|| {
                let mut bytes = 0usize;
                for batch in batches(black_box(run)) {
                    for (_, r) in batch.expect("valid batch").records() {
                        bytes += r.len();
                    }
                }
                black_box(bytes)
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench_batch);
criterion_main!(benches);
