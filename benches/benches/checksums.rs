//! Checksum throughput on one core: CRC-32 (`crc32fast`, the batch checksums)
//! and BLAKE3 (`blake3::hash`, single-threaded, the sealed-segment root) over
//! a 1 MiB buffer and a 128 MiB (segment-sized) buffer. `blake3_512KiB_updates`
//! feeds one `Hasher` in 512 KiB pieces, `blake3_526720B_updates` in pieces of
//! one engine group commit (8 batches of 64 × 1 KiB records), unaligned to
//! BLAKE3's 1 KiB chunks, as the engine hashes a segment.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ddc_benches::pseudo_random_bytes;

fn bench_checksums(c: &mut Criterion) {
    for (label, len) in [("1MiB", 1usize << 20), ("128MiB", 128 << 20)] {
        let data = pseudo_random_bytes(len, 42);
        let mut g = c.benchmark_group(format!("checksums/{label}"));
        g.throughput(Throughput::Bytes(len as u64));
        if len > 1 << 20 {
            g.sample_size(10).warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(3));
        } else {
            g.sample_size(30).warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2));
        }
        g.bench_with_input(BenchmarkId::from_parameter("crc32fast"), &data, |b, d| {
            b.iter(|| crc32fast::hash(black_box(d)))
        });
        g.bench_with_input(BenchmarkId::from_parameter("blake3"), &data, |b, d| b.iter(|| blake3::hash(black_box(d))));
        g.bench_with_input(BenchmarkId::from_parameter("blake3_512KiB_updates"), &data, |b, d| {
            b.iter(|| {
                let mut h = blake3::Hasher::new();
                for piece in black_box(d).chunks(512 << 10) {
                    h.update(piece);
                }
                h.finalize()
            })
        });
        // The engine feeds each durable group: 8 batches of 64 x 1 KiB records, 526 720 bytes,
        // so pieces start at offsets that are not multiples of BLAKE3's 1 KiB chunk.
        g.bench_with_input(BenchmarkId::from_parameter("blake3_526720B_updates"), &data, |b, d| {
            b.iter(|| {
                let mut h = blake3::Hasher::new();
                for piece in black_box(d).chunks(526_720) {
                    h.update(piece);
                }
                h.finalize()
            })
        });
        g.finish();
    }
}

criterion_group!(benches, bench_checksums);
criterion_main!(benches);
