//! `shard-server`: the DDC storage node daemon.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;

use shard_server::config::NodeConfig;

/// The DDC storage node: durable, append-only streams over TCP.
///
/// Examples:
///   shard-server                                  # ./ddc-data, 127.0.0.1:7400, one core per CPU
///   shard-server --data-dir /srv/ddc --listen 0.0.0.0:7400 --cores 2 --http-listen 0.0.0.0:7480
///   shard-server --config /etc/ddc/node.toml
#[derive(Parser, Debug)]
#[command(version, verbatim_doc_comment)]
struct Args {
    /// TOML configuration file (see docs/CONFIG.md); flags override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Data directory [default: ./ddc-data]
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Listen address [default: 127.0.0.1:7400]
    #[arg(long)]
    listen: Option<std::net::SocketAddr>,
    /// Executors, one per core [default: number of CPUs]
    #[arg(long)]
    cores: Option<usize>,
    /// Admin HTTP address: /metrics, /health, /ready, status page [default: 127.0.0.1:7480; port 0: any free port]
    #[arg(long)]
    http_listen: Option<std::net::SocketAddr>,
    /// Log filter, e.g. info, debug, shard_server=debug [env: RUST_LOG]
    #[arg(long, default_value = "info")]
    log_level: String,
    /// Log as JSON lines instead of text.
    #[arg(long)]
    log_json: bool,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    ddc_engine::tune_allocator();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&args.log_level));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if args.log_json {
        builder.json().init();
    } else {
        builder.init();
    }
    let mut config = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
            NodeConfig::from_toml(&text).with_context(|| format!("config {}", path.display()))?
        }
        None => NodeConfig::default(),
    };
    if let Some(d) = args.data_dir {
        config.data_dir = d;
    }
    if let Some(l) = args.listen {
        config.listen = l;
    }
    if let Some(c) = args.cores {
        config.cores = c;
    }
    if let Some(h) = args.http_listen {
        // Naming an address asks for the endpoint, whatever the file says.
        config.http.listen = h;
        config.http.enabled = true;
    }
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(signal, stop.clone()).context("install signal handler")?;
    }
    shard_server::node::run(config, stop)
}
