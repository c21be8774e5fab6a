//! Criterion benchmarks of the DDC storage node, and the helpers they share.
//!
//! Each file under `benches/benches/` measures one subsystem (criterion 0.5,
//! `harness = false`; every figure is a throughput in bytes per second):
//!
//! | bench            | what it measures |
//! |------------------|------------------|
//! | `batch`          | record batch encode (`BatchHeader::new` with its body CRC, `encode`, copy of header and body into an output buffer, as the append path does), building a body from records, `validate_records`, and decode/verify of back-to-back batches with [`ddc_formats::batch::batches`] (header CRC, body CRC, record walk); for 64 × 1 KiB records per batch and a few other shapes. |
//! | `checksums`      | `crc32fast::hash` and single-threaded `blake3::hash` over a 1 MiB and a 128 MiB (segment-sized) buffer, plus BLAKE3 fed incrementally in 512 KiB updates as the engine hashes a segment. |
//! | `engine_append`  | **the key ratio**: the engine's durable append path against raw direct I/O writing the same bytes to the same disk. Raw: glommio `DmaStreamWriter` (1 MiB buffers, 8 write-behind) with one fdatasync at the end (the streaming ceiling), and `DmaFile::write_at` of each group of 8 batches followed by one fdatasync (what the engine's group commit does with 8 appenders; the fair baseline for durable acks). Engine: `Engine::open(DmaStorage::new(), LogConfig::new(dir), 0, 1)`, one stream, 8 appender tasks each awaiting its own `append` of 64 × 1 KiB records with `AckLevel::Durable`. |
//! | `engine_read`    | catch-up read of a pre-written, sealed 128 MiB stream through `Stream::read` (1 MiB `max_bytes`) against raw sequential `DmaFile::read_at_aligned` of the same segment file in 128 KiB and 1 MiB chunks. |
//!
//! Run all of them (a few minutes on a 2-core VM), one, or one case:
//!
//! ```text
//! cargo bench -p ddc-benches
//! cargo bench -p ddc-benches --bench engine_append
//! cargo bench -p ddc-benches --bench engine_append -- 'append/engine'
//! cargo bench -p ddc-benches --no-run        # compile only
//! ```
//!
//! Environment:
//! - `DDC_BENCH_DIR`: directory the disk benches write their temporary files
//!   in (default: the workspace `target/`). It must be on the disk you want to
//!   measure; `/dev/shm` and other tmpfs mounts do not support O_DIRECT.
//! - `DDC_BENCH_MIB`: bytes written or read per iteration by the disk benches
//!   (default 128).
//! - `DDC_BENCH_SWEEP=1`: `engine_append` also runs the engine with other
//!   appender counts, batch sizes and with `AckLevel::WrittenNotSynced`, to
//!   see where its time goes.
//! - `DDC_BENCH_IO_MEMORY_KIB`: registered io_uring memory per executor
//!   (default 1024, as the engine's tests use; keep it under `ulimit -l`).
//! - `DDC_BENCH_PAIRED=N`: `engine_append` skips criterion and runs N
//!   interleaved rounds of raw stream / raw groups / engine, printing the
//!   median ratios (steadier than criterion estimates on a shared machine).
//!
//! The disk benches time only the I/O part of each iteration (criterion's
//! `iter_custom`): the glommio executor, temporary directory, `Engine::open`
//! and file creation happen outside the timed region. At the end they print,
//! per case, what the block device did meanwhile (from `/proc/diskstats`):
//! write requests, average write size and cache flushes per MiB, which shows
//! how many fdatasyncs a case really issued.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ddc_formats::batch::{push_record, BatchHeader, BATCH_HEADER_BYTES, RECORD_LEN_BYTES};

/// Default registered io_uring memory per executor; `ulimit -l` is small
/// (8 MiB) on the machines this runs on. Buffers that do not fit in it come
/// from the heap (a fresh mmap for each 1 MiB buffer, page faults on first
/// touch, munmap when dropped).
pub const IO_MEMORY_BYTES: usize = 1 << 20;

/// Registered memory for the benches' executors: `$DDC_BENCH_IO_MEMORY_KIB` KiB, else [`IO_MEMORY_BYTES`].
pub fn io_memory_bytes() -> usize {
    std::env::var("DDC_BENCH_IO_MEMORY_KIB")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .map_or(IO_MEMORY_BYTES, |kib| kib << 10)
}

/// Directory for the disk benches' temporary files: `$DDC_BENCH_DIR`, else the workspace `target/`.
pub fn bench_root() -> PathBuf {
    match std::env::var_os("DDC_BENCH_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("target"),
    }
}

/// A fresh temporary directory under [`bench_root`], removed when dropped.
pub fn bench_tempdir() -> tempfile::TempDir {
    let root = bench_root();
    std::fs::create_dir_all(&root).expect("create bench root");
    tempfile::Builder::new().prefix("ddc-bench-").tempdir_in(&root).expect("tempdir in bench root")
}

/// Bytes per iteration of the disk benches: `$DDC_BENCH_MIB` MiB, default 128 MiB.
pub fn bench_bytes() -> u64 {
    let mib = std::env::var("DDC_BENCH_MIB").ok().and_then(|v| v.parse::<u64>().ok()).unwrap_or(128);
    mib.max(1) << 20
}

/// Whether `DDC_BENCH_SWEEP` asks for the extra engine cases.
pub fn sweep_enabled() -> bool {
    std::env::var("DDC_BENCH_SWEEP").is_ok_and(|v| !v.is_empty() && v != "0")
}

/// Run `f` on a fresh glommio executor (its own thread) and return its output.
pub fn run_local<T, Fut>(f: impl FnOnce() -> Fut + Send + 'static) -> T
where
    T: Send + 'static,
    Fut: Future<Output = T> + 'static,
{
    // The same allocator settings as the shard-server binary, for the raw
    // baselines and the engine alike.
    static TUNE: std::sync::Once = std::sync::Once::new();
    TUNE.call_once(ddc_engine::tune_allocator);
    glommio::LocalExecutorBuilder::default()
        .io_memory(io_memory_bytes())
        .spawn(f)
        .expect("spawn glommio executor")
        .join()
        .expect("glommio executor panicked")
}

/// Deterministic, incompressible-looking bytes (xorshift64*).
pub fn pseudo_random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        out.extend_from_slice(&state.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// `count` records of `record_len` bytes each.
pub fn make_records(count: usize, record_len: usize) -> Vec<Vec<u8>> {
    (0..count).map(|i| pseudo_random_bytes(record_len, 0x9e37_79b9_7f4a_7c15 ^ i as u64)).collect()
}

/// A batch body (length-prefixed records) of `count` records of `record_len` bytes.
pub fn make_body(count: usize, record_len: usize) -> Vec<u8> {
    let mut body = Vec::with_capacity(count * (RECORD_LEN_BYTES + record_len));
    for record in make_records(count, record_len) {
        push_record(&mut body, &record);
    }
    body
}

/// Bytes one batch of `count` records of `record_len` bytes takes on disk.
pub fn batch_bytes(count: usize, record_len: usize) -> usize {
    BATCH_HEADER_BYTES + count * (RECORD_LEN_BYTES + record_len)
}

/// A whole batch (header then body).
pub fn encode_batch(base_offset: u64, record_count: u32, body: &[u8]) -> Vec<u8> {
    let mut out = BatchHeader::new(base_offset, record_count, body, 0).encode().to_vec();
    out.extend_from_slice(body);
    out
}

/// Back-to-back batches of `count` records of `record_len` bytes, at least `min_bytes` in all.
pub fn make_batch_run(count: usize, record_len: usize, min_bytes: usize) -> (Vec<u8>, usize) {
    let body = make_body(count, record_len);
    let mut out = Vec::with_capacity(min_bytes + batch_bytes(count, record_len));
    let mut base = 0u64;
    let mut batches = 0usize;
    while out.len() < min_bytes || batches == 0 {
        out.extend_from_slice(&encode_batch(base, count as u32, &body));
        base += count as u64;
        batches += 1;
    }
    (out, batches)
}

/// Counters of one block device from `/proc/diskstats`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DiskCounters {
    pub writes: u64,
    pub sectors_written: u64,
    pub reads: u64,
    pub sectors_read: u64,
    /// Cache flush requests completed (kernels ≥ 5.5); each fdatasync that
    /// reaches a write-back cache shows up here (more than one if the
    /// journal commits too).
    pub flushes: u64,
}

impl DiskCounters {
    /// The counters of the device holding `path`, if they can be read.
    pub fn of(path: &Path) -> Option<DiskCounters> {
        use std::os::unix::fs::MetadataExt;
        let dev = std::fs::metadata(path).ok()?.dev();
        // glibc's encoding of dev_t.
        let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
        let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
        let stats = std::fs::read_to_string("/proc/diskstats").ok()?;
        for line in stats.lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 14 || f[0].parse::<u64>().ok()? != major || f[1].parse::<u64>().ok()? != minor {
                continue;
            }
            let n = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
            return Some(DiskCounters {
                reads: n(3),
                sectors_read: n(5),
                writes: n(7),
                sectors_written: n(9),
                flushes: n(18),
            });
        }
        None
    }

    fn minus(self, before: DiskCounters) -> DiskCounters {
        DiskCounters {
            writes: self.writes.saturating_sub(before.writes),
            sectors_written: self.sectors_written.saturating_sub(before.sectors_written),
            reads: self.reads.saturating_sub(before.reads),
            sectors_read: self.sectors_read.saturating_sub(before.sectors_read),
            flushes: self.flushes.saturating_sub(before.flushes),
        }
    }
}

/// Time the calling thread spent on a CPU and waiting for one, from
/// `/proc/thread-self/schedstat` (nanosecond resolution).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ThreadTimes {
    pub on_cpu: Duration,
    /// Runnable but waiting for a CPU (other processes, or glommio's own threads).
    pub runqueue_wait: Duration,
}

impl ThreadTimes {
    pub fn now() -> Option<ThreadTimes> {
        let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
        let mut f = s.split_whitespace().map(|v| v.parse::<u64>().ok());
        Some(ThreadTimes { on_cpu: Duration::from_nanos(f.next()??), runqueue_wait: Duration::from_nanos(f.next()??) })
    }
}

/// Measures one timed region: wall time, and what the executor thread and the
/// device holding `dir` did meanwhile. Start it on the executor thread, right
/// before the work; [`Probe::stop`] records the figures under a case id for
/// [`print_io_report`] and returns the wall time for criterion.
pub struct Probe {
    dir: PathBuf,
    disk: Option<DiskCounters>,
    thread: Option<ThreadTimes>,
    start: Instant,
}

impl Probe {
    pub fn start(dir: &Path) -> Probe {
        let disk = DiskCounters::of(dir);
        let thread = ThreadTimes::now();
        Probe { dir: dir.to_owned(), disk, thread, start: Instant::now() }
    }

    /// End the region: `bytes` is the payload it moved.
    pub fn stop(self, id: &str, bytes: u64) -> Duration {
        let wall = self.start.elapsed();
        let thread = match (self.thread, ThreadTimes::now()) {
            (Some(b), Some(a)) => ThreadTimes {
                on_cpu: a.on_cpu.saturating_sub(b.on_cpu),
                runqueue_wait: a.runqueue_wait.saturating_sub(b.runqueue_wait),
            },
            _ => ThreadTimes::default(),
        };
        let disk = match (self.disk, DiskCounters::of(&self.dir)) {
            (Some(b), Some(a)) => a.minus(b),
            _ => DiskCounters::default(),
        };
        let mut all = TALLIES.lock().unwrap_or_else(|e| e.into_inner());
        let t = all.entry(id.to_owned()).or_default();
        t.iterations += 1;
        t.bytes += bytes;
        t.wall += wall;
        t.on_cpu += thread.on_cpu;
        t.runqueue_wait += thread.runqueue_wait;
        t.disk.writes += disk.writes;
        t.disk.sectors_written += disk.sectors_written;
        t.disk.reads += disk.reads;
        t.disk.sectors_read += disk.sectors_read;
        t.disk.flushes += disk.flushes;
        wall
    }
}

#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    iterations: u64,
    bytes: u64,
    wall: Duration,
    on_cpu: Duration,
    runqueue_wait: Duration,
    disk: DiskCounters,
}

static TALLIES: Mutex<BTreeMap<String, Tally>> = Mutex::new(BTreeMap::new());

/// Print, per case, the mean throughput over every timed iteration (warm-up
/// included); the share of wall time the executor thread was on a CPU and
/// waiting for one; and what the device did per MiB of payload: requests in
/// the dominant direction (writes, or reads if it read more), their mean size,
/// and cache flushes (≈ fdatasyncs). Device counters are device-wide, so
/// other programs writing to the same disk inflate them.
pub fn print_io_report() {
    let all = TALLIES.lock().unwrap_or_else(|e| e.into_inner());
    if all.is_empty() {
        return;
    }
    const MIB: f64 = (1u64 << 20) as f64;
    println!("\nI/O report (every timed iteration, warm-up included; executor thread from schedstat; device from /proc/diskstats):");
    println!(
        "{:<48} {:>5} {:>9} {:>6} {:>6} {:>8} {:>8} {:>9} {:>9}",
        "case", "iters", "MiB/s", "cpu%", "runq%", "req/MiB", "KiB/req", "flush/MiB", "KiB/flush"
    );
    for (id, t) in all.iter() {
        let mib = t.bytes as f64 / MIB;
        let secs = t.wall.as_secs_f64().max(1e-9);
        let (reqs, sectors) = if t.disk.sectors_written >= t.disk.sectors_read {
            (t.disk.writes, t.disk.sectors_written)
        } else {
            (t.disk.reads, t.disk.sectors_read)
        };
        let kib_per_req = if reqs > 0 { sectors as f64 * 512.0 / 1024.0 / reqs as f64 } else { 0.0 };
        let kib_per_flush = if t.disk.flushes > 0 { t.bytes as f64 / 1024.0 / t.disk.flushes as f64 } else { 0.0 };
        println!(
            "{:<48} {:>5} {:>9.1} {:>6.1} {:>6.1} {:>8.2} {:>8.1} {:>9.2} {:>9.1}",
            id,
            t.iterations,
            mib / secs,
            100.0 * t.on_cpu.as_secs_f64() / secs,
            100.0 * t.runqueue_wait.as_secs_f64() / secs,
            reqs as f64 / mib,
            kib_per_req,
            t.disk.flushes as f64 / mib,
            kib_per_flush,
        );
    }
}
