//! The load generator behind `ddc bench`: real TCP connections to a running
//! node, pipelined requests, throughput and latency percentiles.
//!
//! Each connection runs on its own OS thread with the blocking reference
//! client and keeps up to `in_flight` requests outstanding. Latency is
//! measured per request (send to response), so for produce it is the time to
//! a durable acknowledgment of a whole batch.
//!
//! With an [`Identity`] every connection runs the handshake first and then
//! tags every frame, so the same run with and without `--identity` measures
//! what authentication costs.

use std::collections::HashMap;
use std::net::ToSocketAddrs;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use ddc_auth::account::{Account, Keypair};
use ddc_formats::batch::{batches, encode_records};
use ddc_formats::client::{Client, ClientError};
use ddc_formats::message::{Request, Response};
use ddc_formats::wire::AckLevel;
use serde::Serialize;

use crate::progress;

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
    /// Draw a progress bar on stderr (`ddc` sets it only when stderr is a terminal).
    pub progress: bool,
    /// Authenticate every connection as this account (None: unauthenticated).
    pub identity: Option<Arc<Identity>>,
}

/// Who a client is when it authenticates to a node, and (optionally) which
/// node it insists on talking to.
#[derive(Debug)]
pub struct Identity {
    pub key: Keypair,
    pub expected_node: Option<Account>,
}

/// How long connecting, and each handshake read, may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Connect to `server` (host:port), running the handshake when there is an
/// identity; returns the client and, if authenticated, the node's account.
/// Each resolved address is tried in turn.
pub fn connect(server: &str, identity: Option<&Identity>) -> anyhow::Result<(Client, Option<Account>)> {
    let Some(identity) = identity else {
        return Ok((Client::connect(server)?, None));
    };
    let mut last_error = None;
    for addr in server.to_socket_addrs().with_context(|| format!("resolve {server}"))? {
        match Client::connect_authenticated(&addr, CONNECT_TIMEOUT, &identity.key, identity.expected_node.as_ref()) {
            Ok((client, node)) => return Ok((client, Some(node))),
            // Only a failure to reach the address is worth another try; a refusal is final.
            Err(ClientError::Io(e)) => last_error = Some(ClientError::Io(e)),
            Err(e) => return Err(e.into()),
        }
    }
    Err(last_error.map_or_else(|| anyhow::anyhow!("{server} resolves to no address"), anyhow::Error::from))
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
    /// Whether the connections ran the handshake and tagged every frame.
    pub authenticated: bool,
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
        authenticated: spec.identity.is_some(),
    }
}

/// Until the run stops: a bar over the duration, or over the record count,
/// or a spinner, with the records done and the rate over the last second.
fn progress_loop(shared: &Shared, start: Instant, label: &str, spec: &BenchSpec) {
    let (len, template) = match (spec.duration, spec.count) {
        (Some(d), _) => (Some(d.as_millis() as u64), progress::TIME_TEMPLATE),
        (None, Some(count)) => (Some(count), progress::COUNT_TEMPLATE),
        (None, None) => (None, progress::SPINNER_TEMPLATE),
    };
    let bar = progress::bar(true, len, template, label);
    let mut last = (0u64, start, 0.0f64);
    while !shared.stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(100));
        let now = Instant::now();
        let records = shared.records.load(Ordering::Relaxed);
        if now.duration_since(last.1) >= Duration::from_secs(1) {
            let rate = (records - last.0) as f64 / now.duration_since(last.1).as_secs_f64();
            last = (records, now, rate);
        }
        match (spec.duration, spec.count) {
            (Some(_), _) => bar.set_position(now.duration_since(start).as_millis() as u64),
            (None, Some(_)) => bar.set_position(records),
            (None, None) => {}
        }
        bar.set_message(format!("{records} records, {:.0} rec/s", last.2));
    }
    bar.finish_and_clear();
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
            let (mut client, _) = connect(&spec.server, spec.identity.as_deref())?;
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
                            eprintln!("server error {code:?}: {message}");
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
            let (mut client, _) = connect(&spec.server, spec.identity.as_deref())?;
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
        let (label, spec) = (format!("bench {mode}"), spec.clone());
        std::thread::spawn(move || progress_loop(&shared, start, &label, &spec))
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

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};

    use ddc_auth::handshake::{NodeHandshake, TAG_BYTES};
    use ddc_formats::frame::{encode_frame_into, FrameHeader, FRAME_HEADER_BYTES};
    use ddc_formats::message::{decode_request, encode_response_frame};

    use super::*;

    fn read_frame(stream: &mut TcpStream) -> Option<Vec<u8>> {
        let mut header = [0u8; FRAME_HEADER_BYTES];
        stream.read_exact(&mut header).ok()?;
        let parsed = FrameHeader::decode(&header, 1 << 20).unwrap();
        let mut payload = vec![0u8; parsed.payload_len as usize];
        stream.read_exact(&mut payload).unwrap();
        parsed.verify_payload(&header, &payload).unwrap();
        Some(payload)
    }

    fn write_frame(stream: &mut TcpStream, payload: &[u8]) {
        let mut out = Vec::new();
        encode_frame_into(payload, &mut out);
        stream.write_all(&out).unwrap();
    }

    /// A node that authenticates each connection and acknowledges every
    /// produce (checking both directions' tags); returns how many records
    /// it acknowledged once all `connections` have closed.
    fn fake_node(node: Keypair, connections: usize) -> (String, std::thread::JoinHandle<u64>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let node = Arc::new(node);
        let thread = std::thread::spawn(move || {
            let serve = |mut stream: TcpStream, node: Arc<Keypair>| {
                let (state, hello) = NodeHandshake::answer(&read_frame(&mut stream).unwrap(), &node).unwrap();
                write_frame(&mut stream, &hello);
                let (_, mut session) = state.finish(&read_frame(&mut stream).unwrap()).unwrap();
                let mut acknowledged = 0u64;
                while let Some(mut payload) = read_frame(&mut stream) {
                    let tag: [u8; TAG_BYTES] = payload.split_off(payload.len() - TAG_BYTES).try_into().unwrap();
                    session.open(&payload, &tag).unwrap();
                    let (id, request) = decode_request(&payload).unwrap();
                    let Request::Produce { record_count, .. } = request else { panic!("{request:?}") };
                    let mut frame = Vec::new();
                    let response = Response::Produce { base_offset: acknowledged, record_count };
                    encode_response_frame(&mut flatbuffers::FlatBufferBuilder::new(), id, &response, &mut frame);
                    let mut message = frame.split_off(FRAME_HEADER_BYTES);
                    let tag = session.seal(&message);
                    message.extend_from_slice(&tag);
                    write_frame(&mut stream, &message);
                    acknowledged += u64::from(record_count);
                }
                acknowledged
            };
            let handles: Vec<_> = (0..connections)
                .map(|_| {
                    let (stream, _) = listener.accept().unwrap();
                    let node = node.clone();
                    std::thread::spawn(move || serve(stream, node))
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).sum()
        });
        (addr, thread)
    }

    #[test]
    fn produce_bench_authenticates_every_connection() {
        let node = Keypair::generate();
        let expected_node = Some(node.account());
        let (server, thread) = fake_node(node, 2);
        let spec = BenchSpec {
            server,
            connections: 2,
            record_bytes: 16,
            batch_records: 4,
            in_flight: 3,
            duration: None,
            count: Some(80),
            stream_prefix: "bench".into(),
            ack: AckLevel::Durable,
            fetch_bytes: 1 << 20,
            progress: false,
            identity: Some(Arc::new(Identity { key: Keypair::generate(), expected_node })),
        };
        let summary = produce(&spec).unwrap();
        assert!(summary.authenticated);
        assert_eq!(summary.records, 80);
        assert_eq!(summary.errors, 0);
        assert_eq!(thread.join().unwrap(), 80);
    }
}
