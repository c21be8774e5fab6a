//! The load generator behind `ddc bench`: real TCP connections to a running
//! node, pipelined requests, throughput and latency percentiles.
//!
//! Each connection runs on its own OS thread with the blocking reference
//! client and keeps up to `in_flight` requests outstanding. Latency is
//! measured per request (send to response), so for produce it is the time to
//! a durable acknowledgment of a whole batch.

use std::collections::HashMap;
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ddc_formats::batch::{batches, encode_records};
use ddc_formats::client::{Client, ClientError};
use ddc_formats::message::{Request, Response};
use ddc_formats::wire::AckLevel;
use serde::Serialize;

/// What to run.
#[derive(Debug, Clone)]
pub struct BenchSpec {
    pub server: String,
    pub connections: usize,
    pub record_bytes: usize,
    pub batch_records: usize,
    pub in_flight: usize,
    pub duration: Option<Duration>,
    /// Total records to produce (or consume), across connections.
    pub count: Option<u64>,
    pub stream_prefix: String,
    pub ack: AckLevel,
    /// Fetch size for consume.
    pub fetch_bytes: u32,
    pub progress: bool,
}

/// The summary `ddc bench --json` prints.
#[derive(Debug, Clone, Serialize)]
pub struct BenchSummary {
    pub mode: String,
    pub records: u64,
    pub bytes: u64,
    pub seconds: f64,
    pub records_per_s: f64,
    pub mb_per_s: f64,
    pub requests: u64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
    pub connections: usize,
    pub record_bytes: usize,
    pub batch_records: usize,
    pub in_flight: usize,
    pub errors: u64,
}

struct Shared {
    records: AtomicU64,
    bytes: AtomicU64,
    errors: AtomicU64,
    stop: AtomicBool,
}

fn percentile(sorted: &[u32], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * (sorted.len() as f64)).ceil() as usize;
    u64::from(sorted[rank.clamp(1, sorted.len()) - 1])
}

fn summarize(
    mode: &str,
    spec: &BenchSpec,
    shared: &Shared,
    mut latencies: Vec<u32>,
    elapsed: Duration,
) -> BenchSummary {
    latencies.sort_unstable();
    let records = shared.records.load(Ordering::Relaxed);
    let bytes = shared.bytes.load(Ordering::Relaxed);
    let seconds = elapsed.as_secs_f64().max(1e-9);
    BenchSummary {
        mode: mode.to_owned(),
        records,
        bytes,
        seconds,
        records_per_s: records as f64 / seconds,
        mb_per_s: bytes as f64 / seconds / 1e6,
        requests: latencies.len() as u64,
        p50_us: percentile(&latencies, 50.0),
        p99_us: percentile(&latencies, 99.0),
        p999_us: percentile(&latencies, 99.9),
        max_us: latencies.last().copied().map(u64::from).unwrap_or(0),
        connections: spec.connections,
        record_bytes: spec.record_bytes,
        batch_records: spec.batch_records,
        in_flight: spec.in_flight,
        errors: shared.errors.load(Ordering::Relaxed),
    }
}

fn progress_loop(shared: &Shared, start: Instant, label: &str) {
    let mut last = (0u64, start);
    while !shared.stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(250));
        let now = Instant::now();
        if now.duration_since(last.1) < Duration::from_secs(1) {
            continue;
        }
        let records = shared.records.load(Ordering::Relaxed);
        let rate = (records - last.0) as f64 / now.duration_since(last.1).as_secs_f64();
        eprint!(
            "\r{label}: {:>6.1}s  {records:>12} records  {rate:>12.0} rec/s   ",
            now.duration_since(start).as_secs_f64()
        );
        let _ = std::io::stderr().flush();
        last = (records, now);
    }
    eprintln!();
}

/// Produce load: each connection appends batches to its own stream.
pub fn produce(spec: &BenchSpec) -> anyhow::Result<BenchSummary> {
    let shared = Arc::new(Shared {
        records: AtomicU64::new(0),
        bytes: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        stop: AtomicBool::new(false),
    });
    let record = vec![b'r'; spec.record_bytes];
    let body = Arc::new(encode_records(std::iter::repeat_n(record.as_slice(), spec.batch_records)));
    let per_conn_limit = spec.count.map(|c| c.div_ceil(spec.connections as u64));
    let start = Instant::now();
    let deadline = spec.duration.map(|d| start + d);
    let mut threads = Vec::new();
    for conn in 0..spec.connections {
        let (spec, shared, body) = (spec.clone(), shared.clone(), body.clone());
        threads.push(std::thread::spawn(move || -> anyhow::Result<Vec<u32>> {
            let mut client = Client::connect(&spec.server)?;
            let stream = format!("{}-{conn}", spec.stream_prefix);
            let mut sent_at: HashMap<u64, Instant> = HashMap::new();
            let mut latencies = Vec::new();
            let mut produced = 0u64;
            let per_batch = spec.batch_records as u64;
            loop {
                let done_sending = shared.stop.load(Ordering::Relaxed)
                    || deadline.is_some_and(|d| Instant::now() >= d)
                    || per_conn_limit.is_some_and(|l| produced + (sent_at.len() as u64) * per_batch >= l);
                if !done_sending && sent_at.len() < spec.in_flight {
                    let id = client.send(&Request::Produce {
                        stream: &stream,
                        records: &body,
                        record_count: spec.batch_records as u32,
                        ack: spec.ack,
                    })?;
                    sent_at.insert(id, Instant::now());
                    continue;
                }
                if sent_at.is_empty() {
                    break;
                }
                let (id, response) = client.recv()?;
                let t0 = sent_at.remove(&id).ok_or_else(|| anyhow::anyhow!("response to unknown request {id}"))?;
                latencies.push(t0.elapsed().as_micros().min(u128::from(u32::MAX)) as u32);
                match response {
                    Response::Produce { record_count, .. } => {
                        produced += u64::from(record_count);
                        shared.records.fetch_add(u64::from(record_count), Ordering::Relaxed);
                        shared.bytes.fetch_add(u64::from(record_count) * spec.record_bytes as u64, Ordering::Relaxed);
                    }
                    Response::Error { code, message } => {
                        shared.errors.fetch_add(1, Ordering::Relaxed);
                        if shared.errors.load(Ordering::Relaxed) == 1 {
                            eprintln!("\nserver error {code:?}: {message}");
                        }
                    }
                    other => anyhow::bail!("unexpected response {other:?}"),
                }
            }
            Ok(latencies)
        }));
    }
    run_to_end("produce", spec, shared, start, threads)
}

/// Catch-up consume: each connection reads its stream from offset 0 to the
/// high watermark it finds at start (run `bench produce` first).
pub fn consume(spec: &BenchSpec) -> anyhow::Result<BenchSummary> {
    let shared = Arc::new(Shared {
        records: AtomicU64::new(0),
        bytes: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        stop: AtomicBool::new(false),
    });
    let start = Instant::now();
    let deadline = spec.duration.map(|d| start + d);
    let per_conn_limit = spec.count.map(|c| c.div_ceil(spec.connections as u64));
    let mut threads = Vec::new();
    for conn in 0..spec.connections {
        let (spec, shared) = (spec.clone(), shared.clone());
        threads.push(std::thread::spawn(move || -> anyhow::Result<Vec<u32>> {
            let mut client = Client::connect(&spec.server)?;
            let stream = format!("{}-{conn}", spec.stream_prefix);
            let end = match client.stream_info(&stream) {
                Ok(info) => info.high_watermark,
                Err(ClientError::Server { message, .. }) => anyhow::bail!("{message} (run `ddc bench produce` first)"),
                Err(e) => return Err(e.into()),
            };
            let end = per_conn_limit.map_or(end, |l| l.min(end));
            let mut latencies = Vec::new();
            let mut offset = 0u64;
            while offset < end && deadline.is_none_or(|d| Instant::now() < d) {
                let t0 = Instant::now();
                let (raw, _) = client.fetch_raw(&stream, offset, spec.fetch_bytes, 0)?;
                latencies.push(t0.elapsed().as_micros().min(u128::from(u32::MAX)) as u32);
                let mut records = 0u64;
                let mut bytes = 0u64;
                for batch in batches(&raw) {
                    let batch = batch?;
                    for (o, r) in batch.records() {
                        if o >= offset {
                            records += 1;
                            bytes += r.len() as u64;
                        }
                    }
                    offset = batch.header.next_offset();
                }
                if records == 0 {
                    anyhow::bail!("empty fetch at offset {offset} below the end {end}");
                }
                shared.records.fetch_add(records, Ordering::Relaxed);
                shared.bytes.fetch_add(bytes, Ordering::Relaxed);
            }
            Ok(latencies)
        }));
    }
    run_to_end("consume", spec, shared, start, threads)
}

fn run_to_end(
    mode: &str,
    spec: &BenchSpec,
    shared: Arc<Shared>,
    start: Instant,
    threads: Vec<std::thread::JoinHandle<anyhow::Result<Vec<u32>>>>,
) -> anyhow::Result<BenchSummary> {
    let progress = spec.progress.then(|| {
        let shared = shared.clone();
        let label = format!("bench {mode}");
        std::thread::spawn(move || progress_loop(&shared, start, &label))
    });
    let mut latencies = Vec::new();
    let mut first_error = None;
    for t in threads {
        match t.join() {
            Ok(Ok(l)) => latencies.extend(l),
            Ok(Err(e)) => first_error = first_error.or(Some(e)),
            Err(_) => first_error = first_error.or(Some(anyhow::anyhow!("bench thread panicked"))),
        }
    }
    let elapsed = start.elapsed();
    shared.stop.store(true, Ordering::Relaxed);
    if let Some(p) = progress {
        let _ = p.join();
    }
    if let Some(e) = first_error {
        return Err(e);
    }
    Ok(summarize(mode, spec, &shared, latencies, elapsed))
}
