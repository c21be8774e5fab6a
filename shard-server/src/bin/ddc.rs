//! `ddc`: the command-line client of the DDC storage node.

use std::io::{BufRead, BufWriter, Write};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};

use ddc_formats::batch::push_record;
use ddc_formats::client::Client;
use ddc_formats::message::Request;
use ddc_formats::wire::AckLevel;
use shard_server::bench::{self, BenchSpec};

/// Command-line client for a DDC shard server.
///
/// Exit codes: 0 success, 1 error (connection, server refusal, bad input), 2 usage error.
#[derive(Parser, Debug)]
#[command(version, verbatim_doc_comment)]
struct Cli {
    /// Server address
    #[arg(long, global = true, default_value = "127.0.0.1:7400", env = "DDC_SERVER")]
    server: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Append records to a stream: one record per input line (stdin or --file).
    ///
    /// Example: printf 'a\nb\n' | ddc produce orders
    #[command(verbatim_doc_comment)]
    Produce {
        stream: String,
        /// Read records from this file instead of stdin.
        #[arg(long)]
        file: Option<PathBuf>,
        /// Records per request.
        #[arg(long, default_value_t = 1000)]
        batch: usize,
        /// When the server acknowledges: after fdatasync (durable) or after the write (written).
        #[arg(long, value_enum, default_value_t = Ack::Durable)]
        ack: Ack,
    },
    /// Print records, one per line, from an offset.
    ///
    /// Example: ddc consume orders --from 0 --count 10
    ///          ddc consume orders --follow
    #[command(verbatim_doc_comment)]
    Consume {
        stream: String,
        /// First offset to print.
        #[arg(long, default_value_t = 0)]
        from: u64,
        /// Stop after this many records.
        #[arg(long)]
        count: Option<u64>,
        /// Keep waiting for new records at the tail.
        #[arg(long)]
        follow: bool,
        /// Prefix each line with its offset and a tab.
        #[arg(long)]
        offsets: bool,
    },
    /// Create a stream (streams are also created by their first produce).
    Create { stream: String },
    /// List streams.
    Streams,
    /// Show a stream's offsets and segments.
    Info {
        stream: String,
        #[arg(long)]
        json: bool,
    },
    /// Check that the server answers.
    Ping,
    /// Load generator: throughput and latency percentiles against a running server.
    ///
    /// Example: ddc bench produce --connections 4 --record-size 1024 --batch 64 --duration 10
    ///          ddc bench consume --connections 4 --json
    #[command(verbatim_doc_comment)]
    Bench {
        #[arg(value_enum)]
        mode: BenchMode,
        #[arg(long, default_value_t = 4)]
        connections: usize,
        /// Bytes per record.
        #[arg(long, default_value_t = 1024)]
        record_size: usize,
        /// Records per produce request.
        #[arg(long, default_value_t = 64)]
        batch: usize,
        /// Requests in flight per connection (pipelining).
        #[arg(long, default_value_t = 8)]
        in_flight: usize,
        /// Seconds to run (default 10 unless --count is given).
        #[arg(long)]
        duration: Option<f64>,
        /// Total records to produce or consume.
        #[arg(long)]
        count: Option<u64>,
        /// Streams are <prefix>-<connection>.
        #[arg(long, default_value = "bench")]
        stream_prefix: String,
        #[arg(long, value_enum, default_value_t = Ack::Durable)]
        ack: Ack,
        /// Bytes per fetch (consume).
        #[arg(long, default_value_t = 1 << 20)]
        fetch_bytes: u32,
        /// Print the summary as one JSON object.
        #[arg(long)]
        json: bool,
    },
}

#[derive(ValueEnum, Clone, Copy, Debug)]
enum Ack {
    Durable,
    Written,
}

impl From<Ack> for AckLevel {
    fn from(a: Ack) -> AckLevel {
        match a {
            Ack::Durable => AckLevel::Durable,
            Ack::Written => AckLevel::WrittenNotSynced,
        }
    }
}

#[derive(ValueEnum, Clone, Copy, Debug)]
enum BenchMode {
    Produce,
    Consume,
}

fn connect(server: &str) -> anyhow::Result<Client> {
    Client::connect(server).with_context(|| format!("connect to {server} (is shard-server running?)"))
}

fn main() {
    let cli = Cli::parse();
    if let Err(e) = run(cli) {
        eprintln!("ddc: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Produce { stream, file, batch, ack } => produce(&cli.server, &stream, file, batch.max(1), ack.into()),
        Command::Consume { stream, from, count, follow, offsets } => {
            consume(&cli.server, &stream, from, count, follow, offsets)
        }
        Command::Create { stream } => {
            let created = connect(&cli.server)?.create_stream(&stream)?;
            println!("{}", if created { format!("created {stream}") } else { format!("{stream} already exists") });
            Ok(())
        }
        Command::Streams => {
            for s in connect(&cli.server)?.list_streams()? {
                println!("{s}");
            }
            Ok(())
        }
        Command::Info { stream, json } => {
            let info = connect(&cli.server)?.stream_info(&stream)?;
            if json {
                let segments: Vec<_> = info
                    .segments
                    .iter()
                    .map(|s| {
                        serde_json::json!({
                            "base_offset": s.base_offset, "next_offset": s.next_offset, "size_bytes": s.size_bytes,
                            "sealed": s.sealed, "root": s.root.map(hex),
                        })
                    })
                    .collect();
                println!(
                    "{}",
                    serde_json::json!({
                        "stream": info.stream, "first_offset": info.first_offset, "next_offset": info.next_offset,
                        "high_watermark": info.high_watermark, "core": info.core, "fenced_reason": info.fenced_reason,
                        "segments": segments,
                    })
                );
            } else {
                println!("stream        {}", info.stream);
                println!("offsets       {} .. {} (next {})", info.first_offset, info.high_watermark, info.next_offset);
                println!("owning core   {}", info.core);
                if let Some(r) = &info.fenced_reason {
                    println!("WRITES FENCED {r}");
                }
                println!("segments      {}", info.segments.len());
                for s in &info.segments {
                    let state = if s.sealed { "sealed" } else { "open" };
                    let root = s.root.map(hex).unwrap_or_default();
                    println!(
                        "  {:>12} .. {:<12} {:>12} bytes  {state:<6} {root}",
                        s.base_offset, s.next_offset, s.size_bytes
                    );
                }
            }
            Ok(())
        }
        Command::Ping => {
            let t0 = std::time::Instant::now();
            let version = connect(&cli.server)?.ping()?;
            println!("{} answered in {:?} (version {version})", cli.server, t0.elapsed());
            Ok(())
        }
        Command::Bench {
            mode,
            connections,
            record_size,
            batch,
            in_flight,
            duration,
            count,
            stream_prefix,
            ack,
            fetch_bytes,
            json,
        } => {
            let duration = match (duration, count) {
                (Some(d), _) => Some(Duration::from_secs_f64(d)),
                (None, Some(_)) => None,
                (None, None) => Some(Duration::from_secs(10)),
            };
            let spec = BenchSpec {
                server: cli.server.clone(),
                connections: connections.max(1),
                record_bytes: record_size,
                batch_records: batch.max(1),
                in_flight: in_flight.max(1),
                duration,
                count,
                stream_prefix,
                ack: ack.into(),
                fetch_bytes,
                progress: !json,
            };
            let summary = match mode {
                BenchMode::Produce => bench::produce(&spec)?,
                BenchMode::Consume => bench::consume(&spec)?,
            };
            if json {
                println!("{}", serde_json::to_string(&summary)?);
            } else {
                println!(
                    "{}: {} records, {} bytes in {:.2}s\n  {:.0} records/s  {:.1} MB/s\n  latency per request: p50 {} us  p99 {} us  p999 {} us  max {} us\n  requests {}  errors {}",
                    summary.mode, summary.records, summary.bytes, summary.seconds, summary.records_per_s, summary.mb_per_s,
                    summary.p50_us, summary.p99_us, summary.p999_us, summary.max_us, summary.requests, summary.errors
                );
            }
            if summary.errors > 0 {
                anyhow::bail!("{} requests failed", summary.errors);
            }
            Ok(())
        }
    }
}

fn hex(bytes: [u8; 32]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Send batches of lines, keeping a few requests in flight.
fn produce(server: &str, stream: &str, file: Option<PathBuf>, batch: usize, ack: AckLevel) -> anyhow::Result<()> {
    let input: Box<dyn BufRead> = match &file {
        Some(path) => Box::new(std::io::BufReader::new(
            std::fs::File::open(path).with_context(|| format!("open {}", path.display()))?,
        )),
        None => Box::new(std::io::stdin().lock()),
    };
    let mut client = connect(server)?;
    let mut tally = Tally::default();
    let mut in_flight = 0usize;
    const IN_FLIGHT_MAX: usize = 4;
    let mut body = Vec::new();
    let mut count = 0u32;
    let mut lines = input.split(b'\n');
    loop {
        let line = lines.next().transpose().context("read input")?;
        let end_of_input = line.is_none();
        if let Some(mut line) = line {
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            push_record(&mut body, &line);
            count += 1;
        }
        if count > 0 && (count as usize >= batch || end_of_input) {
            if in_flight == IN_FLIGHT_MAX {
                tally.receive(&mut client)?;
                in_flight -= 1;
            }
            client.send(&Request::Produce { stream, records: &body, record_count: count, ack })?;
            in_flight += 1;
            body.clear();
            count = 0;
        }
        if end_of_input {
            break;
        }
    }
    while in_flight > 0 {
        tally.receive(&mut client)?;
        in_flight -= 1;
    }
    match tally.first {
        Some(first) => eprintln!("produced {} records to {stream}, offsets {first}..{}", tally.total, tally.last),
        None => eprintln!("no records on input"),
    }
    Ok(())
}

#[derive(Default)]
struct Tally {
    first: Option<u64>,
    last: u64,
    total: u64,
}

impl Tally {
    fn receive(&mut self, client: &mut Client) -> anyhow::Result<()> {
        match client.recv()?.1 {
            ddc_formats::message::Response::Produce { base_offset, record_count } => {
                self.first = Some(self.first.map_or(base_offset, |f| f.min(base_offset)));
                self.last = self.last.max(base_offset + u64::from(record_count));
                self.total += u64::from(record_count);
                Ok(())
            }
            ddc_formats::message::Response::Error { code, message } => {
                anyhow::bail!("server refused ({code:?}): {message}")
            }
            other => anyhow::bail!("unexpected response {other:?}"),
        }
    }
}

/// Print records from `from`, until `count` or the end (or forever with `follow`).
fn consume(
    server: &str,
    stream: &str,
    from: u64,
    count: Option<u64>,
    follow: bool,
    offsets: bool,
) -> anyhow::Result<()> {
    let mut client = connect(server)?;
    let stdout = std::io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    let mut offset = from;
    let mut printed = 0u64;
    loop {
        if count.is_some_and(|c| printed >= c) {
            break;
        }
        let wait_ms = if follow { 1000 } else { 0 };
        let fetched = match client.fetch(stream, offset, 1 << 20, wait_ms) {
            Ok(f) => f,
            // Following a stream that does not exist yet: wait for its first produce.
            Err(e) if follow && e.code() == Some(ddc_formats::wire::ErrorCode::UnknownStream) => {
                std::thread::sleep(Duration::from_millis(500));
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        for (o, record) in &fetched.records {
            if count.is_some_and(|c| printed >= c) {
                break;
            }
            if offsets {
                write!(out, "{o}\t")?;
            }
            out.write_all(record)?;
            out.write_all(b"\n")?;
            printed += 1;
        }
        offset = fetched.next_offset;
        if fetched.records.is_empty() {
            out.flush()?;
            if !follow {
                break;
            }
        }
        if !follow && offset >= fetched.high_watermark {
            break;
        }
    }
    out.flush()?;
    Ok(())
}
