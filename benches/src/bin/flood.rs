//! `flood`: hostile load against a running `shard-server`, for measuring what
//! an attack costs the node (RSS) and its well-behaved clients (throughput).
//!
//! This is an attack generator, not a client: every connection it opens
//! misbehaves in one way, chosen by `--mode`, and keeps doing so until
//! `--duration` ends:
//!
//! - `idle`: connect and send nothing (holds a connection slot);
//! - `garbage`: connect, send random bytes, read until the server closes, repeat;
//! - `drip`: send a valid frame header announcing `--frame-bytes`, then one payload byte
//!   per second (slowloris);
//! - `stall`: send a header announcing `--frame-bytes` and nothing after it;
//! - `slow-reader`: pipeline 1 MiB fetches of a stream it filled first and never read a
//!   byte of the answers;
//! - `reconnect`: connect and close at once, as fast as possible;
//! - `mixed`: the connections split evenly over all of the above.
//!
//! It prints one JSON line at the end: connections attempted, established, refused at
//! connect, and closed by the server. `scripts/flood-bench.sh` runs it next to
//! `ddc bench` and samples the node's RSS (docs/RELIABILITY.md).

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ddc_formats::batch::encode_records;
use ddc_formats::frame::FRAME_HEADER_BYTES;
use ddc_formats::message::{encode_request_frame, Request};
use ddc_formats::wire::AckLevel;
use flatbuffers::FlatBufferBuilder;

const USAGE: &str = "usage: flood --server ADDR [--mode idle|garbage|drip|stall|slow-reader|reconnect|mixed] \
[--connections N] [--duration SECS] [--frame-bytes N] [--stream NAME]";

#[derive(Clone, Copy, Debug, PartialEq)]
enum Mode {
    Idle,
    Garbage,
    Drip,
    Stall,
    SlowReader,
    Reconnect,
}

const ALL_MODES: [Mode; 6] = [Mode::Idle, Mode::Garbage, Mode::Drip, Mode::Stall, Mode::SlowReader, Mode::Reconnect];

struct Args {
    server: SocketAddr,
    modes: Vec<Mode>,
    connections: usize,
    duration: Duration,
    frame_bytes: u32,
    stream: String,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        server: "127.0.0.1:7400".parse().expect("literal"),
        modes: ALL_MODES.to_vec(),
        connections: 1000,
        duration: Duration::from_secs(10),
        frame_bytes: 1 << 20,
        stream: "flood-target".into(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value\n{USAGE}"));
        match flag.as_str() {
            "--server" => args.server = value()?.parse().map_err(|e| format!("--server: {e}"))?,
            "--mode" => {
                args.modes = match value()?.as_str() {
                    "idle" => vec![Mode::Idle],
                    "garbage" => vec![Mode::Garbage],
                    "drip" => vec![Mode::Drip],
                    "stall" => vec![Mode::Stall],
                    "slow-reader" => vec![Mode::SlowReader],
                    "reconnect" => vec![Mode::Reconnect],
                    "mixed" => ALL_MODES.to_vec(),
                    other => return Err(format!("--mode {other:?}: unknown\n{USAGE}")),
                }
            }
            "--connections" => args.connections = value()?.parse().map_err(|e| format!("--connections: {e}"))?,
            "--duration" => {
                let secs: f64 = value()?.parse().map_err(|e| format!("--duration: {e}"))?;
                args.duration = Duration::from_secs_f64(secs);
            }
            "--frame-bytes" => args.frame_bytes = value()?.parse().map_err(|e| format!("--frame-bytes: {e}"))?,
            "--stream" => args.stream = value()?,
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    Ok(args)
}

#[derive(Default)]
struct Tally {
    attempted: AtomicU64,
    established: AtomicU64,
    connect_failed: AtomicU64,
    closed_by_server: AtomicU64,
    bytes_sent: AtomicU64,
}

fn request_frame(id: u64, request: &Request<'_>) -> Vec<u8> {
    let mut fbb = FlatBufferBuilder::new();
    let mut out = Vec::new();
    encode_request_frame(&mut fbb, id, request, &mut out);
    out
}

/// A valid frame header (magic, version 1) announcing `len` payload bytes.
fn header_announcing(len: u32) -> [u8; FRAME_HEADER_BYTES] {
    let mut h = [0u8; FRAME_HEADER_BYTES];
    h[0..4].copy_from_slice(b"DDCF");
    h[4] = 1;
    h[8..12].copy_from_slice(&len.to_le_bytes());
    h
}

/// A small deterministic generator for garbage bytes (no dependency needed).
fn xorshift(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

fn connect(args: &Args, tally: &Tally) -> Option<TcpStream> {
    tally.attempted.fetch_add(1, Ordering::Relaxed);
    match TcpStream::connect_timeout(&args.server, Duration::from_secs(2)) {
        Ok(s) => {
            tally.established.fetch_add(1, Ordering::Relaxed);
            Some(s)
        }
        Err(_) => {
            tally.connect_failed.fetch_add(1, Ordering::Relaxed);
            None
        }
    }
}

/// True once the server has closed `s` (a read returns 0 or an error other than "would block").
fn closed_by_server(s: &mut TcpStream) -> bool {
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == ErrorKind::WouldBlock => return false,
            Err(_) => return true,
        }
    }
}

/// Connections that each hold a slot and misbehave slowly: idle, drip, stall.
fn hold(args: &Args, mode: Mode, count: usize, tally: &Tally, stop: &AtomicBool) {
    let mut conns: Vec<TcpStream> = Vec::new();
    let header = header_announcing(args.frame_bytes);
    let mut last_drip = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        // Top up: a closed connection is replaced, so the pressure stays on.
        while conns.len() < count && !stop.load(Ordering::Relaxed) {
            let Some(mut s) = connect(args, tally) else { break };
            if mode != Mode::Idle && s.write_all(&header).is_err() {
                tally.closed_by_server.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            let _ = s.set_nonblocking(true);
            conns.push(s);
        }
        let drip = mode == Mode::Drip && last_drip.elapsed() >= Duration::from_secs(1);
        if drip {
            last_drip = Instant::now();
        }
        conns.retain_mut(|s| {
            if drip && s.write(&[0x5a]).is_err() {
                tally.closed_by_server.fetch_add(1, Ordering::Relaxed);
                return false;
            }
            if closed_by_server(s) {
                tally.closed_by_server.fetch_add(1, Ordering::Relaxed);
                return false;
            }
            true
        });
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Connect, send random bytes (half the time inside a valid frame header), read until closed.
fn garbage(args: &Args, tally: &Tally, stop: &AtomicBool, seed: u64) {
    let mut state = seed | 1;
    while !stop.load(Ordering::Relaxed) {
        let Some(mut s) = connect(args, tally) else {
            std::thread::sleep(Duration::from_millis(10));
            continue;
        };
        let len = (xorshift(&mut state) % 4096) as usize + 1;
        let mut junk: Vec<u8> = (0..len).map(|_| xorshift(&mut state) as u8).collect();
        if xorshift(&mut state).is_multiple_of(2) {
            let mut framed = header_announcing(junk.len() as u32).to_vec();
            framed.append(&mut junk);
            junk = framed;
        }
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        if s.write_all(&junk).is_ok() {
            tally.bytes_sent.fetch_add(junk.len() as u64, Ordering::Relaxed);
        }
        let _ = s.shutdown(std::net::Shutdown::Write);
        let mut sink = Vec::new();
        if s.read_to_end(&mut sink).is_ok() {
            tally.closed_by_server.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Pipeline large fetches and never read the answers.
fn slow_readers(args: &Args, count: usize, tally: &Tally, stop: &AtomicBool) {
    // Fill the target stream with 8 MiB once, so every fetch has 1 MiB to answer.
    if let Some(mut s) = connect(args, tally) {
        let record = vec![0xabu8; 64 << 10];
        let records: Vec<&[u8]> = vec![&record; 16];
        let body = encode_records(records.iter().copied());
        for id in 1..=8u64 {
            let frame = request_frame(
                id,
                &Request::Produce {
                    stream: &args.stream,
                    records: &body,
                    record_count: records.len() as u32,
                    ack: AckLevel::WrittenNotSynced,
                },
            );
            if s.write_all(&frame).is_err() {
                break;
            }
        }
        // Wait for the produces to be answered before fetching.
        let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
        let mut buf = [0u8; 4096];
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut got = 0usize;
        while got < 8 * 40 && Instant::now() < deadline {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => got += n,
            }
        }
    }
    let fetches: Vec<Vec<u8>> = (0..64u64)
        .map(|i| {
            request_frame(
                i + 1,
                &Request::Fetch { stream: &args.stream, offset: (i % 8) * 16, max_bytes: 1 << 20, max_wait_ms: 0 },
            )
        })
        .collect();
    let mut conns: Vec<TcpStream> = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        while conns.len() < count && !stop.load(Ordering::Relaxed) {
            let Some(s) = connect(args, tally) else { break };
            let _ = s.set_nonblocking(true);
            conns.push(s);
        }
        conns.retain_mut(|s| {
            for f in &fetches {
                match s.write(f) {
                    Ok(n) => {
                        tally.bytes_sent.fetch_add(n as u64, Ordering::Relaxed);
                        if n < f.len() {
                            break; // the server stopped reading: backpressure works
                        }
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(_) => {
                        tally.closed_by_server.fetch_add(1, Ordering::Relaxed);
                        return false;
                    }
                }
            }
            true
        });
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn reconnect(args: &Args, tally: &Tally, stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        if connect(args, tally).is_none() {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

fn main() {
    let args = match parse_args() {
        Ok(a) => Arc::new(a),
        Err(e) => {
            eprintln!("flood: {e}");
            std::process::exit(2);
        }
    };
    let tally = Arc::new(Tally::default());
    let stop = Arc::new(AtomicBool::new(false));
    let per_mode = (args.connections / args.modes.len()).max(1);
    let mut threads = Vec::new();
    for (i, &mode) in args.modes.iter().enumerate() {
        let (args, tally, stop) = (args.clone(), tally.clone(), stop.clone());
        threads.push(std::thread::spawn(move || match mode {
            Mode::Idle | Mode::Drip | Mode::Stall => hold(&args, mode, per_mode, &tally, &stop),
            Mode::Garbage => garbage(&args, &tally, &stop, 0x9e37_79b9_7f4a_7c15 ^ i as u64),
            Mode::SlowReader => slow_readers(&args, per_mode, &tally, &stop),
            Mode::Reconnect => reconnect(&args, &tally, &stop),
        }));
    }
    std::thread::sleep(args.duration);
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        let _ = t.join();
    }
    let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
    println!(
        "{{\"modes\":\"{:?}\",\"connections\":{},\"attempted\":{},\"established\":{},\"connect_failed\":{},\
         \"closed_by_server\":{},\"bytes_sent\":{}}}",
        args.modes,
        args.connections,
        get(&tally.attempted),
        get(&tally.established),
        get(&tally.connect_failed),
        get(&tally.closed_by_server),
        get(&tally.bytes_sent),
    );
}
