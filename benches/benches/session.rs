//! The cost of an authenticated session (auth/src/handshake.rs), one core:
//!
//! - `handshake`: a whole three-message handshake, both sides (two X25519,
//!   two ed25519 signatures, two verifications), once per connection;
//! - `frame_tag/<size>`: the per-frame tag (keyed BLAKE3 over sequence number
//!   and payload), sealing on one side and checking on the other, against the
//!   CRC-32 every frame already carries, over a produce-sized payload.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ddc_auth::account::Keypair;
use ddc_auth::handshake::{ClientHandshake, NodeHandshake};
use ddc_benches::pseudo_random_bytes;

fn sessions() -> (ddc_auth::handshake::Session, ddc_auth::handshake::Session) {
    let (client, node) = (Keypair::from_seed([1; 32]), Keypair::from_seed([2; 32]));
    let (c, hello) = ClientHandshake::start();
    let (n, node_hello) = NodeHandshake::answer(&hello, &node).expect("node hello");
    let (auth, _, cs) = c.finish(&node_hello, &client, None).expect("client finish");
    let (_, ns) = n.finish(&auth).expect("node finish");
    (cs, ns)
}

fn bench_session(c: &mut Criterion) {
    let mut g = c.benchmark_group("session");
    g.sample_size(30).warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(3));
    g.bench_function("handshake", |b| b.iter(|| black_box(sessions())));
    g.finish();

    for (label, len) in [("4KiB", 4usize << 10), ("64KiB", 64 << 10), ("1MiB", 1 << 20)] {
        let data = pseudo_random_bytes(len, 7);
        let mut g = c.benchmark_group(format!("frame_tag/{label}"));
        g.throughput(Throughput::Bytes(len as u64));
        g.sample_size(30).warm_up_time(Duration::from_millis(300)).measurement_time(Duration::from_secs(2));
        g.bench_with_input(BenchmarkId::from_parameter("crc32fast"), &data, |b, d| {
            b.iter(|| crc32fast::hash(black_box(d)))
        });
        let (mut cs, mut ns) = sessions();
        g.bench_with_input(BenchmarkId::from_parameter("seal_and_open"), &data, |b, d| {
            b.iter(|| {
                let tag = cs.seal(black_box(d));
                ns.open(black_box(d), &tag).expect("tag matches")
            })
        });
        g.finish();
    }
}

criterion_group!(benches, bench_session);
criterion_main!(benches);
