//! Reed-Solomon coding of a sealed segment on one core: our
//! `ddc_cluster::erasure::Code` against Intel ISA-L in the same run.
//!
//! A 32 MiB segment, codes 4+2 and 10+4, stripe size `STRIPE_BYTES_DEFAULT`.
//! Throughput is segment bytes per second in every case.
//!
//! - `encode/<code>/ours_with_hashes`: `Code::encode_with_hashes`, the
//!   product's path: code, BLAKE3 of each body, check of the segment root.
//! - `encode/<code>/ours`: `Code::encode`, coding only.
//! - `encode/<code>/isal`: ISA-L `ec_encode_data` over the segment cut into
//!   `k` contiguous shards, into preallocated parity buffers (the kernel
//!   alone: no allocation, no copies, no hashing).
//! - `encode/<code>/isal_with_hashes`: the same, plus BLAKE3 of each shard
//!   and of the segment (what hashing adds to the kernel).
//! - `reconstruct/<code>/ours`: `Code::reconstruct` with data shards 0 and 1
//!   missing: the whole segment back.
//! - `reconstruct/<code>/ours_verified`: `Code::assemble_verified` offered
//!   `k` shards (data 2.. and the first two parity): body hashes, decoding,
//!   root check.
//! - `reconstruct/<code>/isal`: ISA-L with data shards 0 and 1 missing:
//!   invert the decode matrix, copy the surviving data shards into a
//!   preallocated segment buffer and decode the two missing ones into place.
//!
//! With `DDC_BENCH_SWEEP=1` it also runs `stripe/<code>/<KiB>/<case>`:
//! `encode_with_hashes`, `encode` and `reconstruct` at 8 to 256 KiB stripes,
//! the measurement behind `STRIPE_BYTES_DEFAULT` (several minutes more).
//!
//! On a busy machine, `DDC_BENCH_PAIRED=N` replaces the criterion run with N
//! interleaved rounds of every case and prints median throughputs and the
//! median per-round ratio of each case to ISA-L.
//!
//! **Needs ISA-L** (`apt-get install libisal-dev`) to build: the baseline is
//! linked from the system's `libisal`. Only this bench links it; `cargo test`
//! and `cargo build` of the workspace do not build benches.
//!
//! ```text
//! cargo bench -p ddc-benches --bench erasure
//! DDC_BENCH_SWEEP=1 cargo bench -p ddc-benches --bench erasure -- stripe
//! DDC_BENCH_PAIRED=9 cargo bench -p ddc-benches --bench erasure
//! DDC_BENCH_PAIRED=7 DDC_BENCH_SWEEP=1 cargo bench -p ddc-benches --bench erasure
//! ```

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use ddc_benches::{pseudo_random_bytes, sweep_enabled};
use ddc_cluster::erasure::{Code, STRIPE_BYTES_DEFAULT};

const SEGMENT_BYTES: usize = 32 << 20;
const CODES: [(u8, u8); 2] = [(4, 6), (10, 14)];
/// Data shards lost in the reconstruct cases.
const MISSING: [usize; 2] = [0, 1];

/// Bench-only baseline: the few ISA-L functions the cases call, linked from
/// the system's `libisal` (Debian `libisal-dev`). Not used by the product.
mod isal {
    use std::os::raw::{c_int, c_uchar};

    #[link(name = "isal")]
    extern "C" {
        fn gf_gen_cauchy1_matrix(a: *mut c_uchar, m: c_int, k: c_int);
        fn gf_invert_matrix(input: *mut c_uchar, output: *mut c_uchar, n: c_int) -> c_int;
        fn ec_init_tables(k: c_int, rows: c_int, a: *mut c_uchar, gftbls: *mut c_uchar);
        fn ec_encode_data(
            len: c_int,
            k: c_int,
            rows: c_int,
            gftbls: *mut c_uchar,
            data: *mut *mut c_uchar,
            coding: *mut *mut c_uchar,
        );
    }

    /// ISA-L's systematic Cauchy code: an `n x k` matrix, identity on top.
    pub fn cauchy_matrix(k: usize, n: usize) -> Vec<u8> {
        let mut a = vec![0u8; n * k];
        // SAFETY: `a` holds the n*k bytes the function writes.
        unsafe { gf_gen_cauchy1_matrix(a.as_mut_ptr(), n as c_int, k as c_int) };
        a
    }

    /// The inverse of the `size x size` matrix `m`, or `None` if singular.
    pub fn invert(mut m: Vec<u8>, size: usize) -> Option<Vec<u8>> {
        assert_eq!(m.len(), size * size);
        let mut out = vec![0u8; size * size];
        // SAFETY: both buffers hold size*size bytes; `m` may be clobbered, as documented.
        let rc = unsafe { gf_invert_matrix(m.as_mut_ptr(), out.as_mut_ptr(), size as c_int) };
        (rc == 0).then_some(out)
    }

    /// Expanded multiplication tables for a `rows x k` coefficient matrix.
    pub fn init_tables(k: usize, rows: usize, coefficients: &[u8]) -> Vec<u8> {
        assert_eq!(coefficients.len(), rows * k);
        let mut a = coefficients.to_vec();
        let mut tables = vec![0u8; 32 * k * rows];
        // SAFETY: `a` holds rows*k coefficients and `tables` the 32*k*rows bytes the function writes.
        unsafe { ec_init_tables(k as c_int, rows as c_int, a.as_mut_ptr(), tables.as_mut_ptr()) };
        tables
    }

    /// `outputs[r] = sum over j of coefficient(r, j) * inputs[j]`, with the
    /// coefficients expanded into `tables` by [`init_tables`].
    pub fn encode(tables: &mut [u8], inputs: &[&[u8]], outputs: &mut [&mut [u8]]) {
        let len = inputs[0].len();
        assert!(inputs.iter().all(|i| i.len() == len) && outputs.iter().all(|o| o.len() == len));
        assert_eq!(tables.len(), 32 * inputs.len() * outputs.len());
        // ISA-L's prototype takes `unsigned char **` for its read-only inputs too.
        let mut in_ptrs: Vec<*mut c_uchar> = inputs.iter().map(|i| i.as_ptr().cast_mut()).collect();
        let mut out_ptrs: Vec<*mut c_uchar> = outputs.iter_mut().map(|o| o.as_mut_ptr()).collect();
        // SAFETY: every pointer addresses `len` valid bytes, the outputs are
        // distinct and not aliased by any input, and ISA-L only reads the inputs.
        unsafe {
            ec_encode_data(
                c_int::try_from(len).expect("shard fits c_int"),
                inputs.len() as c_int,
                outputs.len() as c_int,
                tables.as_mut_ptr(),
                in_ptrs.as_mut_ptr(),
                out_ptrs.as_mut_ptr(),
            )
        };
    }
}

/// ISA-L coding of one segment cut into `k` contiguous shards (the last
/// zero-padded, which the setup does outside the timed region).
struct IsalCase {
    k: usize,
    n: usize,
    matrix: Vec<u8>,
    encode_tables: Vec<u8>,
    /// The segment, padded to `k * shard_len` bytes.
    padded: Vec<u8>,
    shard_len: usize,
}

impl IsalCase {
    fn new(k: usize, n: usize, segment: &[u8]) -> IsalCase {
        let matrix = isal::cauchy_matrix(k, n);
        let encode_tables = isal::init_tables(k, n - k, &matrix[k * k..]);
        // Shards of a whole number of 64-byte vectors, ISA-L's best case.
        let shard_len = segment.len().div_ceil(k).next_multiple_of(64);
        let mut padded = segment.to_vec();
        padded.resize(k * shard_len, 0);
        IsalCase { k, n, matrix, encode_tables, padded, shard_len }
    }

    /// `n - k` buffers of one shard each.
    fn parity_buffers(&self) -> Vec<Vec<u8>> {
        vec![vec![0u8; self.shard_len]; self.n - self.k]
    }

    /// The `k` data shards.
    fn data_shards(&self) -> impl Iterator<Item = &[u8]> {
        self.padded.chunks_exact(self.shard_len)
    }

    /// Parity of the segment into `parity`.
    fn encode(&mut self, parity: &mut [Vec<u8>]) {
        let inputs: Vec<&[u8]> = self.padded.chunks_exact(self.shard_len).collect();
        let mut outputs: Vec<&mut [u8]> = parity.iter_mut().map(|p| &mut p[..]).collect();
        isal::encode(&mut self.encode_tables, &inputs, &mut outputs);
    }

    /// The segment into `out` from the shards other than `MISSING`: copy the
    /// surviving data shards into place, decode the missing ones into place.
    fn reconstruct(&self, shards: &[Vec<u8>], out: &mut [u8]) {
        let (k, len) = (self.k, shards[0].len());
        let survivors: Vec<usize> = (0..self.n).filter(|i| !MISSING.contains(i)).take(k).collect();
        let mut sub = Vec::with_capacity(k * k);
        for &row in &survivors {
            sub.extend_from_slice(&self.matrix[row * k..(row + 1) * k]);
        }
        let inverse = isal::invert(sub, k).expect("Cauchy submatrices are invertible");
        let mut decode_rows = Vec::with_capacity(MISSING.len() * k);
        for &row in &MISSING {
            decode_rows.extend_from_slice(&inverse[row * k..(row + 1) * k]);
        }
        let mut tables = isal::init_tables(k, MISSING.len(), &decode_rows);
        let mut chunks: Vec<&mut [u8]> = out.chunks_exact_mut(len).collect();
        for &i in survivors.iter().filter(|&&i| i < k) {
            chunks[i].copy_from_slice(&shards[i]);
        }
        let inputs: Vec<&[u8]> = survivors.iter().map(|&i| &shards[i][..]).collect();
        let mut outputs: Vec<&mut [u8]> = Vec::new();
        for (i, chunk) in chunks.into_iter().enumerate() {
            if MISSING.contains(&i) {
                outputs.push(chunk);
            }
        }
        isal::encode(&mut tables, &inputs, &mut outputs);
    }
}

/// One measured operation: `run` does one iteration's work.
struct Case<'a> {
    name: &'static str,
    run: Box<dyn FnMut() + 'a>,
}

/// The cases of one criterion group, e.g. `encode/4+2`.
struct Group<'a> {
    name: String,
    cases: Vec<Case<'a>>,
}

fn case<'a>(name: &'static str, run: impl FnMut() + 'a) -> Case<'a> {
    Case { name, run: Box::new(run) }
}

/// BLAKE3 of each shard and of the segment, as `encode_with_hashes` computes them.
fn hash_all(shards: &[&[u8]], segment: &[u8]) -> (Vec<blake3::Hash>, blake3::Hash) {
    (shards.iter().map(|s| blake3::hash(s)).collect(), blake3::hash(segment))
}

fn encode_group(segment: &[u8], root: [u8; 32], k: u8, n: u8) -> Group<'_> {
    let code = Code::new(k, n, STRIPE_BYTES_DEFAULT).expect("valid code");
    let plain = code.clone();
    let mut isal = IsalCase::new(usize::from(k), usize::from(n), segment);
    let mut parity = isal.parity_buffers();
    let mut isal_hashed = IsalCase::new(usize::from(k), usize::from(n), segment);
    let mut parity_hashed = isal_hashed.parity_buffers();
    let cases = vec![
        case("ours_with_hashes", move || {
            black_box(code.encode_with_hashes("bench", 0, 1, black_box(segment), root).expect("encode"));
        }),
        case("ours", move || {
            black_box(plain.encode(black_box(segment)).expect("encode"));
        }),
        case("isal", move || isal.encode(black_box(&mut parity))),
        case("isal_with_hashes", move || {
            isal_hashed.encode(black_box(&mut parity_hashed));
            let mut all: Vec<&[u8]> = isal_hashed.data_shards().collect();
            all.extend(parity_hashed.iter().map(|p| &p[..]));
            black_box(hash_all(&all, segment));
        }),
    ];
    Group { name: format!("encode/{k}+{}", n - k), cases }
}

fn reconstruct_group(segment: &[u8], root: [u8; 32], k: u8, n: u8) -> Group<'static> {
    let code = Code::new(k, n, STRIPE_BYTES_DEFAULT).expect("valid code");
    let coded = code.encode_with_hashes("bench", 0, 1, segment, root).expect("encode");
    let shards: Vec<Option<Vec<u8>>> =
        coded.iter().enumerate().map(|(i, (_, body))| (!MISSING.contains(&i)).then(|| body.clone())).collect();
    let offered: Vec<_> =
        coded.into_iter().filter(|(h, _)| !MISSING.contains(&usize::from(h.index))).take(usize::from(k)).collect();
    assert_eq!(code.reconstruct(&shards, segment.len() as u64).expect("reconstruct"), segment);
    assert_eq!(code.assemble_verified(root, &offered).expect("assemble").segment, segment);

    let mut isal = IsalCase::new(usize::from(k), usize::from(n), segment);
    let mut parity = isal.parity_buffers();
    isal.encode(&mut parity);
    let mut isal_shards: Vec<Vec<u8>> = isal.data_shards().map(<[u8]>::to_vec).collect();
    isal_shards.extend(parity);
    for &i in &MISSING {
        isal_shards[i].fill(0);
    }
    let mut out = vec![0u8; isal.padded.len()];
    isal.reconstruct(&isal_shards, &mut out);
    assert!(out == isal.padded, "ISA-L baseline decodes its own shards");

    let verifying = code.clone();
    let cases = vec![
        case("ours", move || {
            black_box(code.reconstruct(black_box(&shards), SEGMENT_BYTES as u64).expect("reconstruct"));
        }),
        case("ours_verified", move || {
            black_box(verifying.assemble_verified(root, black_box(&offered)).expect("assemble"));
        }),
        case("isal", move || isal.reconstruct(black_box(&isal_shards), &mut out)),
    ];
    Group { name: format!("reconstruct/{k}+{}", n - k), cases }
}

/// `encode_with_hashes`, `encode` and `reconstruct` at each stripe size.
fn stripe_groups(segment: &[u8], root: [u8; 32]) -> Vec<Group<'_>> {
    let mut groups = Vec::new();
    for (k, n) in CODES {
        for kib in [8u32, 16, 32, 64, 128, 256] {
            let code = Code::new(k, n, kib << 10).expect("valid code");
            let plain = code.clone();
            let decoding = code.clone();
            let coded = code.encode(segment).expect("encode");
            let shards: Vec<Option<Vec<u8>>> =
                coded.into_iter().enumerate().map(|(i, body)| (!MISSING.contains(&i)).then_some(body)).collect();
            let cases = vec![
                case("encode_with_hashes", move || {
                    black_box(code.encode_with_hashes("bench", 0, 1, black_box(segment), root).expect("encode"));
                }),
                case("encode", move || {
                    black_box(plain.encode(black_box(segment)).expect("encode"));
                }),
                case("reconstruct", move || {
                    black_box(decoding.reconstruct(black_box(&shards), SEGMENT_BYTES as u64).expect("reconstruct"));
                }),
            ];
            groups.push(Group { name: format!("stripe/{k}+{}/{kib}KiB", n - k), cases });
        }
    }
    groups
}

fn all_groups(segment: &[u8], root: [u8; 32]) -> Vec<Group<'_>> {
    let mut groups = if sweep_enabled() { stripe_groups(segment, root) } else { Vec::new() };
    for (k, n) in CODES {
        groups.push(encode_group(segment, root, k, n));
        groups.push(reconstruct_group(segment, root, k, n));
    }
    groups
}

fn criterion_run(segment: &[u8], root: [u8; 32]) {
    let mut c = Criterion::default().configure_from_args();
    for mut group in all_groups(segment, root) {
        let mut g = c.benchmark_group(&group.name);
        g.throughput(Throughput::Bytes(SEGMENT_BYTES as u64));
        g.sample_size(10).warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2));
        for case in &mut group.cases {
            g.bench_function(case.name, |b| b.iter(&mut case.run));
        }
        g.finish();
    }
    c.final_summary();
}

/// `DDC_BENCH_PAIRED=N`: instead of criterion, run every case once per round
/// (the best of three calls), N rounds, and print median throughputs and the
/// median of the per-round ratios to ISA-L. On a shared machine the cases of
/// one round see about the same interference, so these ratios are steadier
/// than ratios of criterion estimates taken minutes apart.
fn paired_run(rounds: usize, segment: &[u8], root: [u8; 32]) {
    let mut groups = all_groups(segment, root);
    let mut seconds: Vec<Vec<Vec<f64>>> =
        groups.iter().map(|g| vec![Vec::with_capacity(rounds); g.cases.len()]).collect();
    for _ in 0..rounds {
        for (group, times) in groups.iter_mut().zip(&mut seconds) {
            for (case, times) in group.cases.iter_mut().zip(times.iter_mut()) {
                let best = (0..3)
                    .map(|_| {
                        let start = Instant::now();
                        (case.run)();
                        start.elapsed().as_secs_f64()
                    })
                    .fold(f64::MAX, f64::min);
                times.push(best);
            }
        }
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let gib = (SEGMENT_BYTES as f64) / f64::from(1u32 << 30);
    println!(
        "{rounds} interleaved rounds; GiB/s of segment bytes, median; (ratio to isal, median of per-round ratios)"
    );
    for (group, times) in groups.iter().zip(&seconds) {
        let position = |name: &str| group.cases.iter().position(|c| c.name == name);
        let ratio_to = |t: &[f64], baseline: usize| -> f64 {
            median(t.iter().zip(&times[baseline]).map(|(ours, base)| base / ours).collect())
        };
        for (case, t) in group.cases.iter().zip(times) {
            let mut ratio = String::new();
            if let Some(i) = position("isal").filter(|_| case.name != "isal") {
                ratio = format!(" ({:.2}", ratio_to(t, i));
                // Our path with hashing against ISA-L doing the same hashing.
                if let Some(j) = position("isal_with_hashes").filter(|_| case.name == "ours_with_hashes") {
                    ratio += &format!("; {:.2} of isal_with_hashes", ratio_to(t, j));
                }
                ratio += ")";
            }
            println!("{:<40} {:>6.2}{ratio}", format!("{}/{}", group.name, case.name), gib / median(t.clone()));
        }
    }
}

fn main() {
    // The shard server's allocator settings: large buffers are reused from
    // malloc's arena instead of being mapped and faulted in on every call.
    ddc_engine::tune_allocator();
    let segment = pseudo_random_bytes(SEGMENT_BYTES, 7);
    let root = *blake3::hash(&segment).as_bytes();
    match std::env::var("DDC_BENCH_PAIRED").ok().and_then(|v| v.parse::<usize>().ok()).filter(|&n| n > 0) {
        Some(rounds) => paired_run(rounds, &segment, root),
        None => criterion_run(&segment, root),
    }
}
