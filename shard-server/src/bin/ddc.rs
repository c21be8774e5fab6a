//! `ddc`: the command-line client of the DDC storage node.

use std::io::{BufRead, BufWriter, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, CommandFactory, Parser, Subcommand, ValueEnum};

use ddc_auth::account::{Account, Keypair};
use ddc_auth::encryption::{decrypt_record, encrypt_record, BucketKey};
use ddc_auth::grant::{Grant, GrantChain, GrantTerms, Operations};
use ddc_auth::usage::UsageReport;
use ddc_cluster::membership::NodeId;
use ddc_formats::batch::push_record;
use ddc_formats::client::{Client, ClientError};
use ddc_formats::message::Request;
use ddc_formats::wire::AckLevel;
use shard_server::access::now_ms;
use shard_server::bench::{self, BenchSpec, Identity};
use shard_server::cluster_cli::{self, local, repair, status, ClusterSource};
use shard_server::progress;

/// `ddc`'s exit codes, all of them (docs/CLI.md, "Exit codes"). Scripts and
/// tests rely on them: a code's meaning never changes.
mod exit {
    /// The command did what it was asked.
    pub const OK: i32 = 0;
    /// The command failed: no connection to the node, a refusal by the node, bad input or
    /// key files, a proof that does not verify, a repair that left work undone, a failed
    /// bench request. The reason is on stderr, as `ddc: ...`.
    pub const FAILED: i32 = 1;
    /// The command line is wrong (unknown flag, missing argument): clap's message is on stderr.
    pub const USAGE: i32 = 2;
    /// `ddc cluster status`: degraded, but every segment still readable.
    pub const DEGRADED: i32 = shard_server::cluster_cli::EXIT_DEGRADED;
    /// `ddc cluster status`: a segment is unreadable, or no node answered.
    pub const UNREADABLE: i32 = shard_server::cluster_cli::EXIT_UNREADABLE;
    // The status codes are defined next to the report that computes them; pin them here.
    const _: () = assert!(DEGRADED == 3 && UNREADABLE == 4);
}

/// Command-line client for a DDC shard server, and the tools to run and check a cluster of them.
///
/// Examples:
///   ddc produce orders < records.txt
///   ddc bucket-key secrets.bucket-key && ddc produce secrets --key secrets.bucket-key < records.txt
///   ddc cluster up --nodes 3 --data-dir ./local-cluster
///   ddc cluster status --data-dir ./local-cluster
///
/// Exit codes: 0 success, 1 the command failed (no connection, server refusal, bad input, a
/// proof that does not verify, repair incomplete), 2 usage error. `ddc cluster status` also
/// exits 3 when the cluster is degraded but every segment is still readable (a node down, a
/// shard missing or corrupt, shard state unknown), and 4 when a segment is unreadable (fewer
/// than k healthy shards) or no node answers.
///
/// Progress bars (bench, repair, produce --file) appear on stderr only when it is a terminal;
/// --quiet turns them off. Shell completions: ddc completions --help. Every command: docs/CLI.md.
#[derive(Parser, Debug)]
#[command(version, verbatim_doc_comment)]
struct Cli {
    /// Server address
    #[arg(long, global = true, default_value = "127.0.0.1:7400", env = "DDC_SERVER")]
    server: String,
    /// Authenticate to the node as the account of this key file (made by `ddc keygen`); every frame
    /// is then tagged. Not used by the cluster, repair and seal commands.
    #[arg(long, global = true, value_name = "FILE", env = "DDC_IDENTITY")]
    identity: Option<PathBuf>,
    /// With --identity: talk only to the node with this account (SS58 or hex).
    #[arg(long, global = true, value_name = "ACCOUNT", env = "DDC_NODE_ACCOUNT", value_parser = parse_account)]
    node_account: Option<Account>,
    /// With --identity: present this grant chain (made by `ddc grant issue`) on the connection.
    /// May be given once per bucket.
    #[arg(long = "grant", global = true, value_name = "FILE")]
    grants: Vec<PathBuf>,
    /// No progress bars or progress lines on stderr (results and errors are still printed).
    #[arg(long, short, global = true)]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

fn parse_account(text: &str) -> Result<Account, String> {
    Account::parse(text).map_err(|e| e.to_string())
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Append records to a stream: one record per input line (stdin or --file).
    ///
    /// With --key, each record is encrypted with the bucket key before it leaves this process
    /// (XChaCha20-Poly1305, bound to the stream name; docs/FORMATS.md): the node stores ciphertext.
    ///
    /// Examples:
    ///   printf 'a\nb\n' | ddc produce orders
    ///   ddc produce orders --key orders.bucket-key --file records.txt
    #[command(verbatim_doc_comment)]
    Produce {
        stream: String,
        /// Read records from this file instead of stdin.
        #[arg(long)]
        file: Option<PathBuf>,
        /// Encrypt every record with this bucket key file (made by `ddc bucket-key`).
        #[arg(long, value_name = "FILE")]
        key: Option<PathBuf>,
        /// Records per request.
        #[arg(long, default_value_t = 1000)]
        batch: usize,
        /// When the server acknowledges: after fdatasync (durable) or after the write (written).
        #[arg(long, value_enum, default_value_t = Ack::Durable)]
        ack: Ack,
    },
    /// Print records, one per line, from an offset.
    ///
    /// With --key, each record is decrypted with the bucket key; a record that does not decrypt
    /// (another key, another stream, changed bytes, not encrypted) stops the command with an error
    /// naming its offset, exit code 1. Without --key, encrypted records print as the ciphertext.
    ///
    /// Examples:
    ///   ddc consume orders --from 0 --count 10
    ///   ddc consume orders --follow
    ///   ddc consume orders --key orders.bucket-key
    #[command(verbatim_doc_comment)]
    Consume {
        stream: String,
        /// Decrypt every record with this bucket key file.
        #[arg(long, value_name = "FILE")]
        key: Option<PathBuf>,
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
    ///
    /// Example: ddc create orders
    #[command(verbatim_doc_comment)]
    Create { stream: String },
    /// List streams.
    ///
    /// Example: ddc streams
    #[command(verbatim_doc_comment)]
    Streams,
    /// Show a stream's offsets and segments.
    ///
    /// Example: ddc info orders --json
    #[command(verbatim_doc_comment)]
    Info {
        stream: String,
        #[arg(long)]
        json: bool,
    },
    /// Check that the server answers.
    ///
    /// Example: ddc --server 127.0.0.1:7401 ping
    #[command(verbatim_doc_comment)]
    Ping,
    /// Create an account key (ed25519, mode 0600) and print its SS58 address (prefix 54, Cere).
    ///
    /// Never overwrites an existing file. With --show, print the address of an existing key file.
    ///
    /// Examples:
    ///   ddc keygen ~/.ddc/me.key
    ///   ddc keygen ~/.ddc/me.key --show
    #[command(verbatim_doc_comment)]
    Keygen {
        key_file: PathBuf,
        /// Print the account of an existing key file instead of creating one.
        #[arg(long)]
        show: bool,
    },
    /// Create a bucket key (32 random bytes, mode 0600) for encrypting records; print its key id.
    ///
    /// Never overwrites an existing file. Hand the file to the bucket's readers yourself (out of
    /// band): nodes never see it. Every encrypted record names the id of its key, so a reader with
    /// the wrong key is told which key it needs. With --show, print the id of an existing key file.
    ///
    /// Examples:
    ///   ddc bucket-key ~/.ddc/orders.bucket-key
    ///   ddc bucket-key ~/.ddc/orders.bucket-key --show
    #[command(verbatim_doc_comment)]
    BucketKey {
        key_file: PathBuf,
        /// Print the key id of an existing key file instead of creating one.
        #[arg(long)]
        show: bool,
    },
    /// Issue and inspect grants: signed, expiring rights on a bucket (docs/SECURITY.md).
    ///
    /// Examples:
    ///   ddc --identity owner.key grant issue --bucket 7 --to 6Qs... --ops read --expires 1h --out alice.grant
    ///   ddc --identity alice.key grant issue --parent alice.grant --to 6Rb... --ops read --expires 10m --out bob.grant
    ///   ddc grant show bob.grant
    ///   ddc --identity bob.key --grant bob.grant consume b7.orders
    #[command(verbatim_doc_comment)]
    Grant {
        #[command(subcommand)]
        command: GrantCommand,
    },
    /// Show the usage the node accounted: per bucket, and for the node (a signed report).
    ///
    /// The node signs the report; `ddc usage` checks the signature (and, with --node-account,
    /// that the report is that node's). Bucket owners see their bucket; cluster members see all.
    ///
    /// Examples:
    ///   ddc usage
    ///   ddc --identity owner.key usage 7 --json
    ///   ddc usage --export usage.report
    #[command(verbatim_doc_comment)]
    Usage {
        /// Only this bucket.
        bucket: Option<u64>,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
        /// Also write the signed report's bytes to this file (docs/FORMATS.md "Usage report").
        #[arg(long, value_name = "FILE")]
        export: Option<PathBuf>,
    },
    /// Get an inclusion proof from the node: a record's segment (or a bucket's usage) under an
    /// anchored era's root, with where the era's record is on chain (docs/ANCHORING.md).
    ///
    /// Examples:
    ///   ddc proof --stream b1.orders --offset 42 --out orders-42.proof
    ///   ddc --identity owner.key proof --bucket 1 --out usage-1.proof
    #[command(verbatim_doc_comment)]
    Proof {
        /// The stream of the record.
        #[arg(long, required_unless_present = "bucket", conflicts_with = "bucket")]
        stream: Option<String>,
        /// The record's offset.
        #[arg(long, default_value_t = 0)]
        offset: u64,
        /// Prove this bucket's latest anchored usage record instead.
        #[arg(long)]
        bucket: Option<u64>,
        /// Write the proof here (it is also summarized on stdout).
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Check a proof against the chain, trusting no node: reads the block and extrinsic the
    /// proof names, checks it is a successful System.remark_with_event signed by the node
    /// that signed the record, and checks the leaf under the record's root. Exit 0 if valid, 1 if not.
    ///
    /// Example: ddc verify orders-42.proof --chain ws://127.0.0.1:9944
    #[command(verbatim_doc_comment)]
    Verify {
        proof: PathBuf,
        /// WebSocket JSON-RPC endpoint of a Cere node.
        #[arg(long, value_name = "URL")]
        chain: String,
        /// Seconds to wait for the chain.
        #[arg(long, default_value_t = 30)]
        timeout_s: u64,
        /// Also require the record to be signed by this node account (SS58 or hex); without it,
        /// the proof is valid for whichever node signed it, which is printed.
        #[arg(long = "node", value_name = "ACCOUNT", value_parser = parse_account)]
        expected_node: Option<Account>,
    },
    /// Seal a stream's open segment now (if it holds records); prints the sealed base offset.
    ///
    /// The node seals, and in a cluster then erasure-codes, the segment as if it had reached
    /// its size limit. Any node of a cluster takes it (the stream's leader seals).
    ///
    /// Example: ddc --server 127.0.0.1:7401 seal orders
    #[command(verbatim_doc_comment)]
    Seal {
        /// The stream to seal.
        stream: String,
        /// Seconds to wait for the answer.
        #[arg(long, default_value_t = 60)]
        timeout_s: u64,
    },
    /// Run and inspect a cluster of shard servers.
    ///
    /// Examples:
    ///   ddc cluster up --nodes 3 --data-dir ./local-cluster
    ///   ddc cluster status --data-dir ./local-cluster
    ///   ddc cluster down --data-dir ./local-cluster
    #[command(verbatim_doc_comment)]
    Cluster {
        #[command(subcommand)]
        command: ClusterCommand,
    },
    /// Ask every cluster member to repair the sealed segments it leads; prints the summed report.
    ///
    /// Each up node checks the shards of the segments it leads and rebuilds missing or corrupt
    /// ones. Exits 1 if any node reported an error, failed, or was down (the segments it leads
    /// were then not repaired).
    ///
    /// Examples:
    ///   ddc repair --data-dir ./local-cluster
    ///   ddc repair --cluster /etc/ddc/cluster.toml --stream orders
    #[command(verbatim_doc_comment)]
    Repair {
        /// Only this stream's segments.
        #[arg(long)]
        stream: Option<String>,
        #[command(flatten)]
        target: Target,
        /// Seconds to wait for each node's report (0: no limit).
        #[arg(long, default_value_t = 3600)]
        timeout_s: u64,
    },
    /// Load generator: throughput and latency percentiles against a running server.
    ///
    /// On a terminal a progress bar shows records and rate (not with --json or --quiet).
    ///
    /// Examples:
    ///   ddc bench produce --connections 4 --record-size 1024 --batch 64 --duration 10
    ///   ddc bench consume --connections 4 --json
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
    /// Print a shell completion script for ddc on stdout.
    ///
    /// Examples:
    ///   ddc completions bash > ~/.local/share/bash-completion/completions/ddc
    ///   ddc completions zsh > ~/.zfunc/_ddc      # with fpath+=(~/.zfunc) before compinit in ~/.zshrc
    ///   ddc completions fish > ~/.config/fish/completions/ddc.fish
    ///   source <(ddc completions bash)            # this shell only
    #[command(verbatim_doc_comment)]
    Completions {
        #[arg(value_enum)]
        shell: CompletionShell,
    },
}

/// Shells `ddc completions` writes scripts for.
#[derive(ValueEnum, Clone, Copy, Debug)]
enum CompletionShell {
    Bash,
    Zsh,
    Fish,
    Elvish,
    #[value(name = "powershell")]
    PowerShell,
}

#[derive(Subcommand, Debug)]
enum GrantCommand {
    /// Sign a grant with --identity and write the chain to --out.
    ///
    /// Without --parent the signer must own the bucket; with --parent the signer must be the
    /// subject of the parent chain's last grant, which must allow delegation. Nodes refuse any
    /// chain that widens operations or outlives its parent.
    ///
    /// Examples:
    ///   ddc --identity owner.key grant issue --bucket 7 --to 6Qs... --ops read,write --expires 24h --delegate --out a.grant
    ///   ddc --identity alice.key grant issue --parent a.grant --to 6Rb... --ops read --expires 1h --out b.grant
    #[command(verbatim_doc_comment)]
    Issue {
        /// The bucket (taken from --parent when given).
        #[arg(long)]
        bucket: Option<u64>,
        /// The account receiving the rights (SS58 or hex).
        #[arg(long, value_parser = parse_account)]
        to: Account,
        /// Comma-separated operations: read, write.
        #[arg(long, value_parser = parse_operations)]
        ops: Operations,
        /// How long from now the grant is valid: 90s, 10m, 24h, 7d (or Unix ms with --expires-at).
        #[arg(long, value_parser = parse_duration, required_unless_present = "expires_at")]
        expires: Option<Duration>,
        /// Absolute expiry in Unix milliseconds.
        #[arg(long, conflicts_with = "expires")]
        expires_at: Option<u64>,
        /// Let the subject issue grants of its own on this one.
        #[arg(long)]
        delegate: bool,
        /// The chain this grant extends (the signer's own grant).
        #[arg(long, value_name = "FILE")]
        parent: Option<PathBuf>,
        /// Where to write the chain (never overwritten).
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Print each grant of a chain: bucket, issuer, subject, operations, validity and id.
    ///
    /// The id is what goes into the bucket registry's `revoked_grants` to take a grant back.
    ///
    /// Example: ddc grant show bob.grant
    #[command(verbatim_doc_comment)]
    Show { chain: PathBuf },
}

fn parse_operations(text: &str) -> Result<Operations, String> {
    let mut ops = Operations::NONE;
    for name in text.split(',').map(str::trim) {
        ops = ops
            | match name {
                "read" => Operations::READ,
                "write" => Operations::WRITE,
                other => return Err(format!("unknown operation {other:?}: use read, write or read,write")),
            };
    }
    Ok(ops)
}

/// `90s`, `10m`, `24h`, `7d`.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let n: u64 = digits.parse().map_err(|_| format!("{text:?} is not a duration such as 90s, 10m, 24h or 7d"))?;
    let seconds = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("{text:?}: give a unit, s, m, h or d")),
    };
    n.checked_mul(seconds).map(Duration::from_secs).ok_or_else(|| format!("{text:?} is too long"))
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

/// Which cluster a command works on.
#[derive(Args, Debug)]
#[group(required = true, multiple = false)]
struct Target {
    /// A cluster directory made by `ddc cluster up`.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Any cluster file (see docs/OPERATIONS.md).
    #[arg(long)]
    cluster: Option<PathBuf>,
}

impl Target {
    fn source(self) -> ClusterSource {
        match (self.data_dir, self.cluster) {
            (Some(dir), _) => ClusterSource::DataDir(dir),
            (None, Some(file)) => ClusterSource::File(file),
            // clap's group makes one of them required.
            (None, None) => ClusterSource::DataDir(PathBuf::from(".")),
        }
    }
}

#[derive(Subcommand, Debug)]
enum ClusterCommand {
    /// Start a cluster of N local shard-server processes under one directory.
    ///
    /// Creates DIR/cluster.toml, and per node `DIR/node-<i>/{node.key, config.toml, data/}`,
    /// starts `shard-server --config DIR/node-<i>/config.toml` detached (its output in
    /// `DIR/node-<i>/server.log`), waits until every node answers a ping and records the pids
    /// in DIR/cluster-state.json. Node i listens on `127.0.0.1:<base-port + i>`.
    ///
    /// A DIR from an earlier `up` is reused as it is (same keys, ports and data): that is how a
    /// stopped cluster is restarted. Flags that contradict it are refused.
    ///
    /// Code parameters: with 6 nodes or more the chain defaults k=4 n=6 replication=3
    /// min-insync=2; with 3 to 5 nodes n = nodes and k = ceil(2n/3) (at most n-1).
    ///
    /// Examples:
    ///   ddc cluster up --nodes 3 --data-dir ./local-cluster
    ///   ddc cluster up --nodes 6 --data-dir /tmp/c6 --base-port 9001 --k 3 --n 5
    #[command(verbatim_doc_comment)]
    Up {
        /// Number of nodes (at least 3).
        #[arg(long)]
        nodes: usize,
        /// Directory of the cluster (created if missing).
        #[arg(long)]
        data_dir: PathBuf,
        /// Node i listens on 127.0.0.1:<base-port + i> [default: 7401]
        #[arg(long)]
        base_port: Option<u16>,
        /// Executors per node [default: 1]
        #[arg(long)]
        cores: Option<usize>,
        /// Segment roll size of every node, e.g. 8MiB, 65536, 1G [default: 8MiB]
        #[arg(long, value_parser = parse_bytes)]
        segment_bytes: Option<u64>,
        /// Data shards per sealed segment (erasure_coding_required).
        #[arg(long)]
        k: Option<u8>,
        /// Data plus parity shards (erasure_coding_total).
        #[arg(long)]
        n: Option<u8>,
        /// Copies of an open segment (replication_total).
        #[arg(long)]
        replication: Option<u8>,
        /// Copies that must hold a batch before an acks=all produce is acknowledged.
        #[arg(long)]
        min_insync: Option<u8>,
        /// The shard-server binary [default: the one next to ddc]
        #[arg(long, env = "DDC_SHARD_SERVER")]
        server_bin: Option<PathBuf>,
        /// Seconds each node may take to answer its first ping.
        #[arg(long, default_value_t = 20)]
        start_timeout_s: u64,
    },
    /// Stop every node of a local cluster: SIGTERM, then SIGKILL after the timeout.
    ///
    /// Keys, configuration and data stay; `ddc cluster up` on the same directory restarts it.
    ///
    /// Example: ddc cluster down --data-dir ./local-cluster
    #[command(verbatim_doc_comment)]
    Down {
        /// Directory of the cluster (made by `ddc cluster up`).
        #[arg(long)]
        data_dir: PathBuf,
        /// Seconds to wait after SIGTERM before SIGKILL.
        #[arg(long, default_value_t = 10)]
        timeout_s: u64,
    },
    /// Start one stopped node of a local cluster and wait until it answers.
    ///
    /// Example: ddc cluster start-node --data-dir ./local-cluster --node 1
    #[command(verbatim_doc_comment)]
    StartNode {
        /// Directory of the cluster (made by `ddc cluster up`).
        #[arg(long)]
        data_dir: PathBuf,
        /// The node's index (the i of `node-<i>`).
        #[arg(long)]
        node: usize,
        /// The shard-server binary [default: the one `up` used]
        #[arg(long, env = "DDC_SHARD_SERVER")]
        server_bin: Option<PathBuf>,
        /// Seconds the node may take to answer its first ping.
        #[arg(long, default_value_t = 20)]
        start_timeout_s: u64,
    },
    /// Stop one node of a local cluster (SIGTERM, or SIGKILL with --kill), to try failures by hand.
    ///
    /// Examples:
    ///   ddc cluster stop-node --data-dir ./local-cluster --node 1
    ///   ddc cluster stop-node --data-dir ./local-cluster --node 1 --kill
    #[command(verbatim_doc_comment)]
    StopNode {
        /// Directory of the cluster (made by `ddc cluster up`).
        #[arg(long)]
        data_dir: PathBuf,
        /// The node's index (the i of `node-<i>`).
        #[arg(long)]
        node: usize,
        /// SIGKILL at once, as a crash would.
        #[arg(long)]
        kill: bool,
        /// Seconds to wait after SIGTERM before SIGKILL.
        #[arg(long, default_value_t = 10)]
        timeout_s: u64,
    },
    /// Create a node key file (ed25519, mode 0600) and print the node's id for the cluster file.
    ///
    /// Never overwrites an existing file. Run it on the node's host; the key stays there.
    ///
    /// Example: ddc cluster keygen /etc/ddc/node.key
    #[command(verbatim_doc_comment)]
    Keygen {
        /// Where to write the key.
        key_file: PathBuf,
    },
    /// Print the id (public key) of a node key file.
    ///
    /// Example: ddc cluster node-id /etc/ddc/node.key
    #[command(verbatim_doc_comment)]
    NodeId { key_file: PathBuf },
    /// Show where a stream lives: its leader and followers, or a sealed segment's shard holders.
    ///
    /// Computed from the cluster file alone (rendezvous hashing, as the nodes do).
    ///
    /// Examples:
    ///   ddc cluster placement orders --data-dir ./local-cluster
    ///   ddc cluster placement orders --segment 0 --cluster /etc/ddc/cluster.toml
    #[command(verbatim_doc_comment)]
    Placement {
        stream: String,
        /// Base offset of a sealed segment: print its shard holders instead.
        #[arg(long)]
        segment: Option<u64>,
        #[command(flatten)]
        target: Target,
        /// One line per node: role, label, address (for scripts).
        #[arg(long)]
        plain: bool,
    },
    /// Show which members are up and how redundant every sealed segment is.
    ///
    /// Per node: up/down (ping, 1 s deadline), address, version, shards listed. Per sealed
    /// segment: healthy shards of n, and the indexes that are missing (`i?`: unknown, its
    /// holder did not list its shards), corrupt, or on a holder that is down.
    ///
    /// Exit codes: 0 every node up and every segment fully redundant; 3 degraded but every
    /// segment readable (or something could not be checked); 4 a segment has fewer than k
    /// healthy shards, or no node answered; 1 error (such as an unreadable cluster file).
    ///
    /// Examples:
    ///   ddc cluster status --data-dir ./local-cluster
    ///   ddc cluster status --cluster /etc/ddc/cluster.toml --json
    #[command(verbatim_doc_comment)]
    Status {
        #[command(flatten)]
        target: Target,
        /// Print one JSON object instead of tables.
        #[arg(long)]
        json: bool,
        /// Milliseconds each up node may take to list its shards.
        #[arg(long, default_value_t = 10_000)]
        list_timeout_ms: u64,
    },
}

/// `8MiB`, `64KiB`, `1G`, `65536`: binary units (K = KiB = 1024).
fn parse_bytes(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let number: u64 = digits.parse().map_err(|_| format!("{text:?} is not a size such as 8MiB or 65536"))?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kib" => 10,
        "m" | "mib" => 20,
        "g" | "gib" => 30,
        other => return Err(format!("unknown size unit {other:?}: use K/KiB, M/MiB or G/GiB")),
    };
    number.checked_mul(1 << shift).ok_or_else(|| format!("{text:?} is too large"))
}

/// Where the single-node commands connect, and as whom.
struct NodeLink {
    server: String,
    identity: Option<PathBuf>,
    node_account: Option<Account>,
    grants: Vec<PathBuf>,
    /// --quiet: no progress bars.
    quiet: bool,
}

impl NodeLink {
    /// The identity to authenticate with, read from its key file. Read only
    /// when a command talks to the node: `ddc keygen` must work while
    /// DDC_IDENTITY names the file it is about to create.
    fn identity(&self) -> anyhow::Result<Option<Arc<Identity>>> {
        match (&self.identity, self.node_account) {
            (Some(path), expected_node) => {
                let key = Keypair::read(path).with_context(|| format!("identity {}", path.display()))?;
                Ok(Some(Arc::new(Identity { key, expected_node })))
            }
            (None, Some(_)) => anyhow::bail!("--node-account (DDC_NODE_ACCOUNT) needs --identity (DDC_IDENTITY)"),
            (None, None) => Ok(None),
        }
    }

    /// Connect, authenticating when there is an identity; returns the node's account if so.
    fn connect_to_node(&self) -> anyhow::Result<(Client, Option<Account>)> {
        let identity = self.identity()?;
        let server = &self.server;
        bench::connect(server, identity.as_deref()).map_err(|e| {
            // A node that answered and refused needs no hint that it may be down.
            let unreachable = matches!(e.downcast_ref::<ClientError>(), Some(ClientError::Io(_)))
                || e.downcast_ref::<std::io::Error>().is_some();
            if unreachable {
                e.context(format!("connect to {server} (is shard-server running?)"))
            } else {
                e.context(format!("connect to {server}"))
            }
        })
    }

    fn connect(&self) -> anyhow::Result<Client> {
        Ok(self.connect_with_grants()?.0)
    }

    /// Connect, then present every --grant chain.
    fn connect_with_grants(&self) -> anyhow::Result<(Client, Option<Account>)> {
        if !self.grants.is_empty() && self.identity.is_none() {
            anyhow::bail!("--grant needs --identity: a grant is for the account that proves its key");
        }
        let (mut client, node) = self.connect_to_node()?;
        for path in &self.grants {
            let chain = std::fs::read(path).with_context(|| format!("read grant chain {}", path.display()))?;
            client.present_grants(&chain).with_context(|| format!("grant chain {}", path.display()))?;
        }
        Ok((client, node))
    }
}

fn main() {
    // Behave like other Unix tools when the reader goes away (`ddc consume s | head`):
    // die quietly of SIGPIPE instead of panicking in println!.
    // SAFETY: restoring the default disposition of a signal, before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // --help and --version print on stdout and succeed; a wrong command line is a usage error.
            let code = if e.use_stderr() { exit::USAGE } else { exit::OK };
            let _ = e.print();
            std::process::exit(code);
        }
    };
    let code = match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("ddc: {e:#}");
            exit::FAILED
        }
    };
    std::process::exit(code);
}

/// Run a command; returns the exit code (errors exit [`exit::FAILED`]).
fn run(cli: Cli) -> anyhow::Result<i32> {
    match cli.command {
        Command::Cluster { command } => cluster(command),
        Command::Repair { stream, target, timeout_s } => {
            let timeout = (timeout_s > 0).then(|| Duration::from_secs(timeout_s));
            repair_cluster(target.source(), stream.as_deref(), timeout, cli.quiet)
        }
        Command::Completions { shell } => {
            let shell = match shell {
                CompletionShell::Bash => clap_complete::Shell::Bash,
                CompletionShell::Zsh => clap_complete::Shell::Zsh,
                CompletionShell::Fish => clap_complete::Shell::Fish,
                CompletionShell::Elvish => clap_complete::Shell::Elvish,
                CompletionShell::PowerShell => clap_complete::Shell::PowerShell,
            };
            clap_complete::generate(shell, &mut Cli::command(), "ddc", &mut std::io::stdout());
            Ok(exit::OK)
        }
        Command::Seal { stream, timeout_s } => {
            match repair::seal(&cli.server, &stream, Duration::from_secs(timeout_s))? {
                Some(base_offset) => println!("sealed {stream}: segment at base offset {base_offset}"),
                None => println!("{stream}: the open segment holds no records; nothing sealed"),
            }
            Ok(exit::OK)
        }
        command => {
            let link = NodeLink {
                server: cli.server,
                identity: cli.identity,
                node_account: cli.node_account,
                grants: cli.grants,
                quiet: cli.quiet,
            };
            run_client(&link, command).map(|()| exit::OK)
        }
    }
}

fn cluster(command: ClusterCommand) -> anyhow::Result<i32> {
    let mut stderr = std::io::stderr();
    match command {
        ClusterCommand::Up {
            nodes,
            data_dir,
            base_port,
            cores,
            segment_bytes,
            k,
            n,
            replication,
            min_insync,
            server_bin,
            start_timeout_s,
        } => {
            let opts = local::UpOptions {
                data_dir,
                nodes,
                base_port,
                cores,
                segment_bytes,
                params: local::ParamOverrides { k, n, replication, min_insync },
                server_bin,
                start_timeout: Duration::from_secs(start_timeout_s),
            };
            let state = local::up(&opts, &mut stderr)?;
            let rows: Vec<Vec<String>> = state
                .nodes
                .iter()
                .map(|n| {
                    vec![
                        format!("node-{}", n.index),
                        n.short_id().to_owned(),
                        n.address.to_string(),
                        n.http.map_or("-".to_owned(), |h| h.to_string()),
                        n.pid.map_or("-".to_owned(), |p| p.to_string()),
                    ]
                })
                .collect();
            print!("{}", cluster_cli::table(&["NODE", "ID", "ADDRESS", "HTTP", "PID"], &rows));
            let dir = local::Layout::at(&cluster_cli::absolute(&opts.data_dir)?);
            eprintln!(
                "cluster is up. logs: {}/node-<i>/server.log   status: ddc cluster status --data-dir {}",
                dir.root().display(),
                dir.root().display()
            );
            Ok(exit::OK)
        }
        ClusterCommand::Down { data_dir, timeout_s } => {
            let report = local::down(&data_dir, Duration::from_secs(timeout_s))?;
            let mut stuck = 0;
            for (node, outcome) in &report {
                println!("node-{} {}: {outcome}", node.index, node.address);
                if matches!(outcome, cluster_cli::process::StopOutcome::StillRunning { .. }) {
                    stuck += 1;
                }
            }
            if stuck > 0 {
                anyhow::bail!("{stuck} node(s) are still running");
            }
            Ok(exit::OK)
        }
        ClusterCommand::StartNode { data_dir, node, server_bin, start_timeout_s } => {
            let started = local::start_node(
                &data_dir,
                node,
                server_bin.as_deref(),
                Duration::from_secs(start_timeout_s),
                &mut stderr,
            )?;
            println!(
                "node-{} {} {} started, pid {}",
                started.index,
                started.short_id(),
                started.address,
                started.pid.map_or("-".to_owned(), |p| p.to_string())
            );
            Ok(exit::OK)
        }
        ClusterCommand::StopNode { data_dir, node, kill, timeout_s } => {
            let outcome = local::stop_node(&data_dir, node, kill, Duration::from_secs(timeout_s))?;
            println!("node-{node}: {outcome}");
            if matches!(outcome, cluster_cli::process::StopOutcome::StillRunning { .. }) {
                anyhow::bail!("node-{node} is still running");
            }
            Ok(exit::OK)
        }
        ClusterCommand::Keygen { key_file } => {
            let id = cluster_cli::keygen(&key_file)?;
            println!("{id}");
            eprintln!("wrote {}; add the id above to the cluster file as this node's `id`", key_file.display());
            Ok(exit::OK)
        }
        ClusterCommand::NodeId { key_file } => {
            println!("{}", cluster_cli::node_id(&key_file)?);
            Ok(exit::OK)
        }
        ClusterCommand::Placement { stream, segment, target, plain } => {
            let cluster = target.source().load()?;
            let m = &cluster.membership;
            let rows: Vec<(String, NodeId)> = match segment {
                Some(base) => m
                    .shard_holders(&stream, base)
                    .into_iter()
                    .enumerate()
                    .map(|(i, id)| (format!("shard-{i}"), id))
                    .collect(),
                None => m
                    .replicas(&stream)
                    .into_iter()
                    .enumerate()
                    .map(|(i, id)| (if i == 0 { "leader".to_owned() } else { "follower".to_owned() }, id))
                    .collect(),
            };
            let rows: Vec<Vec<String>> = rows
                .into_iter()
                .map(|(role, id)| {
                    let member = cluster.member(&id);
                    vec![
                        role,
                        member.map_or_else(|| id.short(), |m| m.label.clone()),
                        id.short(),
                        member.map_or_else(String::new, |m| m.address.to_string()),
                    ]
                })
                .collect();
            if plain {
                for r in rows {
                    println!("{} {} {}", r[0], r[1], r[3]);
                }
            } else {
                print!("{}", cluster_cli::table(&["ROLE", "NODE", "ID", "ADDRESS"], &rows));
            }
            Ok(exit::OK)
        }
        ClusterCommand::Status { target, json, list_timeout_ms } => {
            let cluster = target.source().load()?;
            let report = status::gather(&cluster, Duration::from_millis(list_timeout_ms));
            if json {
                println!("{}", report.to_json());
            } else {
                print!("{}", report.render_text());
            }
            let code = report.exit_code();
            assert!([exit::OK, exit::DEGRADED, exit::UNREADABLE].contains(&code), "status exit code {code}");
            Ok(code)
        }
    }
}

fn repair_cluster(
    source: ClusterSource,
    stream: Option<&str>,
    timeout: Option<Duration>,
    quiet: bool,
) -> anyhow::Result<i32> {
    let cluster = source.load()?;
    if !quiet {
        eprintln!(
            "repairing {} on {} nodes",
            stream.map_or("all streams".to_owned(), |s| format!("stream {s}")),
            cluster.members.len()
        );
    }
    // Nodes finish in any order; the bar counts those that have.
    let members = cluster.members.len() as u64;
    let bar = progress::bar(progress::wanted(quiet), Some(members), progress::COUNT_TEMPLATE, "repair");
    bar.set_message("nodes done");
    let (_, total) = repair::repair(&cluster, stream, timeout, |event| match event {
        repair::RepairEvent::Started(m) if !quiet => {
            progress::note(&bar, &format!("{} {} {}: repairing...", m.label, m.id.short(), m.address))
        }
        repair::RepairEvent::Started(_) => {}
        repair::RepairEvent::Finished(r) => {
            bar.inc(1);
            if !quiet {
                progress::note(&bar, &repair::describe(r));
            }
        }
    });
    bar.finish_and_clear();
    println!(
        "total: {} segments checked, {} shards missing, {} shards corrupt, {} shards rebuilt, {} errors",
        total.segments_checked,
        total.shards_missing,
        total.shards_corrupt,
        total.shards_rebuilt,
        total.errors.len()
    );
    for e in &total.errors {
        println!("error: {e}");
    }
    Ok(if total.errors.is_empty() { exit::OK } else { exit::FAILED })
}

/// The single-node client commands.
fn run_client(link: &NodeLink, command: Command) -> anyhow::Result<()> {
    let server = link.server.as_str();
    match command {
        Command::Produce { stream, file, key, batch, ack } => {
            let key = key.as_deref().map(BucketKey::read).transpose()?;
            produce(link, &stream, file, key.as_ref(), batch.max(1), ack.into())
        }
        Command::Consume { stream, key, from, count, follow, offsets } => {
            let key = key.as_deref().map(BucketKey::read).transpose()?;
            consume(link, &stream, key.as_ref(), from, count, follow, offsets)
        }
        Command::Create { stream } => {
            let created = link.connect()?.create_stream(&stream)?;
            println!("{}", if created { format!("created {stream}") } else { format!("{stream} already exists") });
            Ok(())
        }
        Command::Streams => {
            for s in link.connect()?.list_streams()? {
                println!("{s}");
            }
            Ok(())
        }
        Command::Info { stream, json } => {
            let info = link.connect()?.stream_info(&stream)?;
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
        Command::Keygen { key_file, show } => {
            let key = if show {
                ddc_auth::account::Keypair::read(&key_file)?
            } else {
                let key = ddc_auth::account::Keypair::generate();
                key.write_new(&key_file)?;
                eprintln!("wrote {} (mode 0600)", key_file.display());
                key
            };
            println!("{}", key.account());
            Ok(())
        }
        Command::BucketKey { key_file, show } => {
            let key = if show {
                BucketKey::read(&key_file)?
            } else {
                let key = BucketKey::generate();
                key.write_new(&key_file)?;
                eprintln!("wrote {} (mode 0600); give it to the bucket's readers out of band", key_file.display());
                key
            };
            println!("{}", key.id());
            Ok(())
        }
        Command::Grant { command } => grant(link, command),
        Command::Usage { bucket, json, export } => usage(link, bucket, json, export.as_deref()),
        Command::Proof { stream, offset, bucket, out } => {
            let bytes = link.connect()?.proof(stream.as_deref(), offset, bucket.unwrap_or(0))?;
            let proof = ddc_anchor::era::AnchorProof::decode(&bytes).map_err(anyhow::Error::msg)?;
            std::fs::write(&out, &bytes).with_context(|| format!("write {}", out.display()))?;
            let f = &proof.proof.record.fields;
            println!(
                "era {} of node {}: {:?} leaf, on chain in block {} (0x{}), extrinsic {}",
                f.era,
                proof.proof.record.node,
                proof.proof.tree,
                proof.receipt.block_number,
                hex::encode(proof.receipt.block_hash),
                proof.receipt.extrinsic_index
            );
            eprintln!("wrote {} ({} bytes)", out.display(), bytes.len());
            Ok(())
        }
        Command::Verify { proof, chain, timeout_s, expected_node } => {
            verify(&proof, &chain, Duration::from_secs(timeout_s), expected_node)
        }
        Command::Ping => {
            let t0 = std::time::Instant::now();
            let (mut client, node) = link.connect_to_node()?;
            let version = client.ping()?;
            match node {
                Some(node) => println!("{server} answered in {:?} (version {version}, node {node})", t0.elapsed()),
                None => println!("{server} answered in {:?} (version {version})", t0.elapsed()),
            }
            Ok(())
        }
        Command::Cluster { .. } | Command::Repair { .. } | Command::Seal { .. } | Command::Completions { .. } => {
            anyhow::bail!("internal error: a cluster command reached the single-node client")
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
                server: server.to_owned(),
                connections: connections.max(1),
                record_bytes: record_size,
                batch_records: batch.max(1),
                in_flight: in_flight.max(1),
                duration,
                count,
                stream_prefix,
                ack: ack.into(),
                fetch_bytes,
                progress: !json && progress::wanted(link.quiet),
                identity: link.identity()?,
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

/// Send batches of lines (each encrypted first if there is a `key`), keeping a few requests in flight.
fn produce(
    link: &NodeLink,
    stream: &str,
    file: Option<PathBuf>,
    key: Option<&BucketKey>,
    batch: usize,
    ack: AckLevel,
) -> anyhow::Result<()> {
    // A bar over the file's bytes, for files large enough to take a while.
    const PROGRESS_FILE_BYTES_MIN: u64 = 8 << 20;
    let mut bar = progress::bar(false, None, progress::BYTES_TEMPLATE, "");
    let input: Box<dyn BufRead> = match &file {
        Some(path) => {
            let opened = std::fs::File::open(path).with_context(|| format!("open {}", path.display()))?;
            let bytes = opened.metadata().map(|m| m.len()).unwrap_or(0);
            let show = progress::wanted(link.quiet) && bytes >= PROGRESS_FILE_BYTES_MIN;
            bar = progress::bar(show, Some(bytes), progress::BYTES_TEMPLATE, &format!("produce {stream}"));
            Box::new(std::io::BufReader::with_capacity(1 << 20, bar.wrap_read(opened)))
        }
        None => Box::new(std::io::stdin().lock()),
    };
    let mut client = link.connect()?;
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
            match key {
                Some(key) => push_record(&mut body, &encrypt_record(key, stream, &line)),
                None => push_record(&mut body, &line),
            }
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
    bar.finish_and_clear();
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

/// Print records from `from`, until `count` or the end (or forever with `follow`), decrypting
/// each one if there is a `key`.
fn consume(
    link: &NodeLink,
    stream: &str,
    key: Option<&BucketKey>,
    from: u64,
    count: Option<u64>,
    follow: bool,
    offsets: bool,
) -> anyhow::Result<()> {
    let mut client = link.connect()?;
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
            let decrypted = match key {
                Some(key) => match decrypt_record(key, stream, record) {
                    Ok(plaintext) => Some(plaintext),
                    Err(e) => {
                        // Whatever decrypted before this record still reaches the reader.
                        out.flush()?;
                        anyhow::bail!("record at offset {o} of {stream} does not decrypt: {e}");
                    }
                },
                None => None,
            };
            if offsets {
                write!(out, "{o}\t")?;
            }
            out.write_all(decrypted.as_deref().unwrap_or(record))?;
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
    for refusal in client.flush_usage_acks()? {
        eprintln!("ddc: warning: the node refused a usage acknowledgment: {refusal}");
    }
    Ok(())
}

fn verify(
    path: &std::path::Path,
    chain: &str,
    timeout: Duration,
    expected_node: Option<Account>,
) -> anyhow::Result<()> {
    let bytes = std::fs::read(path).with_context(|| format!("read {}", path.display()))?;
    let proof = ddc_anchor::era::AnchorProof::decode(&bytes).map_err(anyhow::Error::msg)?;
    if let Some(node) = expected_node {
        if proof.proof.record.node != node {
            anyhow::bail!("the record is signed by {}, not by {node}", proof.proof.record.node);
        }
    }
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let remark = runtime.block_on(async {
        let rpc = ddc_anchor::chain::rpc::Rpc::connect(chain, timeout).await?;
        ddc_anchor::chain::submit::read_remark(&rpc, &proof.receipt, &proof.proof.record.node).await
    })?;
    proof.proof.verify_against(&remark).context("the proof does not match the record on chain")?;
    let f = &proof.proof.record.fields;
    println!(
        "valid: {:?} leaf of era {} (node {}), anchored in block {} extrinsic {}",
        proof.proof.tree, f.era, proof.proof.record.node, proof.receipt.block_number, proof.receipt.extrinsic_index
    );
    Ok(())
}

fn grant(link: &NodeLink, command: GrantCommand) -> anyhow::Result<()> {
    match command {
        GrantCommand::Issue { bucket, to, ops, expires, expires_at, delegate, parent, out } => {
            let Some(identity) = &link.identity else {
                anyhow::bail!("grant issue signs with --identity (DDC_IDENTITY): the owner's or delegate's key");
            };
            let signer = Keypair::read(identity).with_context(|| format!("identity {}", identity.display()))?;
            let chain = match &parent {
                Some(path) => {
                    let bytes = std::fs::read(path).with_context(|| format!("read {}", path.display()))?;
                    GrantChain::decode(&bytes).with_context(|| format!("grant chain {}", path.display()))?
                }
                None => GrantChain::empty(),
            };
            let bucket = match (chain.links().last(), bucket) {
                (Some(last), Some(b)) if b != last.bucket => {
                    anyhow::bail!("--bucket {b} differs from the parent chain's bucket {}", last.bucket)
                }
                (Some(last), _) => {
                    if last.subject != signer.account() {
                        anyhow::bail!(
                            "the parent chain is for {}, not for the signer {}: only its subject may extend it",
                            last.subject,
                            signer.account()
                        );
                    }
                    last.bucket
                }
                (None, Some(b)) => b,
                (None, None) => anyhow::bail!("give --bucket (or --parent)"),
            };
            if ops.is_empty() {
                anyhow::bail!("--ops names no operation");
            }
            let expires_ms = match (expires, expires_at) {
                (_, Some(at)) => at,
                (Some(d), None) => now_ms().saturating_add(d.as_millis() as u64),
                (None, None) => anyhow::bail!("give --expires or --expires-at"),
            };
            let terms = GrantTerms {
                bucket,
                subject: to,
                operations: ops,
                not_before_ms: 0,
                expires_ms,
                may_delegate: delegate,
            };
            let grant = Grant::issue(&signer, terms);
            let chain = chain.extended(grant).context("extend the chain")?;
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&out)
                .with_context(|| format!("create {} (never overwritten)", out.display()))?;
            file.write_all(&chain.encode())?;
            file.sync_all()?;
            eprintln!("wrote {} ({} grant(s)); give it to {to}", out.display(), chain.len());
            println!("{}", grant.id());
            Ok(())
        }
        GrantCommand::Show { chain } => {
            let bytes = std::fs::read(&chain).with_context(|| format!("read {}", chain.display()))?;
            let chain = GrantChain::decode(&bytes).with_context(|| format!("grant chain {}", chain.display()))?;
            let now = now_ms();
            for (i, g) in chain.links().iter().enumerate() {
                let state = if !g.signature_is_valid() {
                    "BAD SIGNATURE"
                } else if now >= g.expires_ms {
                    "expired"
                } else if now < g.not_before_ms {
                    "not yet valid"
                } else {
                    "valid"
                };
                println!("grant {} of {}: {state}", i + 1, chain.len());
                println!("  bucket      {}", g.bucket);
                println!("  issuer      {}", g.issuer);
                println!("  subject     {}", g.subject);
                println!("  operations  {}", g.operations);
                println!("  delegate    {}", g.may_delegate);
                println!("  expires_ms  {} ({}s from now)", g.expires_ms, (g.expires_ms as i128 - now as i128) / 1000);
                println!("  id          {}", g.id());
            }
            Ok(())
        }
    }
}

fn usage(link: &NodeLink, bucket: Option<u64>, json: bool, export: Option<&std::path::Path>) -> anyhow::Result<()> {
    let (mut client, node) = link.connect_with_grants()?;
    let bytes = client.usage(bucket)?;
    let report = UsageReport::decode(&bytes).context("the node's usage report does not verify")?;
    if let Some(node) = node {
        if report.node != node {
            anyhow::bail!("the usage report is signed by {}, not by the node we authenticated, {node}", report.node);
        }
    }
    if let Some(path) = export {
        std::fs::write(path, &bytes).with_context(|| format!("write {}", path.display()))?;
        eprintln!("wrote the signed report to {} ({} bytes)", path.display(), bytes.len());
    }
    if json {
        let row = |u: &ddc_auth::usage::CustomerUsage| {
            serde_json::json!({
                "transferred_bytes": u.transferred_bytes, "stored_bytes": u.stored_bytes,
                "number_of_puts": u.number_of_puts, "number_of_gets": u.number_of_gets,
            })
        };
        let buckets: serde_json::Map<String, serde_json::Value> =
            report.buckets.iter().map(|(b, u)| (b.to_string(), row(u))).collect();
        let n = &report.node_usage;
        println!(
            "{}",
            serde_json::json!({
                "node": report.node.to_string(), "generated_ms": report.generated_ms, "buckets": buckets,
                "node_usage": {
                    "transferred_bytes": n.transferred_bytes, "stored_bytes": n.stored_bytes,
                    "number_of_puts": n.number_of_puts, "number_of_gets": n.number_of_gets,
                },
                "acks": report.acks.len(),
            })
        );
        return Ok(());
    }
    let mut rows: Vec<Vec<String>> = report
        .buckets
        .iter()
        .map(|(b, u)| {
            let acked: u64 = report.acks.iter().filter(|a| a.bucket == *b).map(|a| a.cumulative_bytes).sum();
            vec![
                b.to_string(),
                u.transferred_bytes.to_string(),
                u.stored_bytes.to_string(),
                u.number_of_puts.to_string(),
                u.number_of_gets.to_string(),
                acked.to_string(),
            ]
        })
        .collect();
    let n = &report.node_usage;
    rows.push(vec![
        "node".into(),
        n.transferred_bytes.to_string(),
        n.stored_bytes.to_string(),
        n.number_of_puts.to_string(),
        n.number_of_gets.to_string(),
        report.acks.iter().map(|a| a.cumulative_bytes).sum::<u64>().to_string(),
    ]);
    println!("node {} (report signed, verified)", report.node);
    print!("{}", cluster_cli::table(&["BUCKET", "TRANSFERRED", "STORED", "PUTS", "GETS", "ACKED_BYTES"], &rows));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every command and subcommand shows at least one example in its `--help`.
    #[test]
    fn every_command_has_an_example() {
        fn walk(command: &clap::Command, path: &str, missing: &mut Vec<String>) {
            let help = command.get_long_about().or(command.get_about()).map(|h| h.to_string()).unwrap_or_default();
            if !help.contains("Example") {
                missing.push(path.to_owned());
            }
            for sub in command.get_subcommands() {
                walk(sub, &format!("{path} {}", sub.get_name()), missing);
            }
        }
        // clap's own consistency checks (duplicate flags such as a second -q), in release builds too.
        Cli::command().debug_assert();
        let mut missing = Vec::new();
        walk(&Cli::command(), "ddc", &mut missing);
        assert!(missing.is_empty(), "no example in the help of: {missing:?}");
    }

    #[test]
    fn completions_cover_subcommands_and_flags() {
        for shell in [clap_complete::Shell::Bash, clap_complete::Shell::Zsh, clap_complete::Shell::Fish] {
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "ddc", &mut script);
            let script = String::from_utf8(script).unwrap();
            for word in ["start-node", "bucket-key", "segment-bytes", "completions"] {
                assert!(script.contains(word), "{shell:?} completions lack {word}");
            }
        }
    }

    #[test]
    fn help_and_version_succeed_and_bad_command_lines_are_usage_errors() {
        let help = Cli::try_parse_from(["ddc", "repair", "--help"]).unwrap_err();
        assert!(!help.use_stderr());
        let wrong = Cli::try_parse_from(["ddc", "repair", "--no-such-flag"]).unwrap_err();
        assert!(wrong.use_stderr());
        assert_eq!(wrong.exit_code(), exit::USAGE, "clap's own code for usage errors is ours");
    }

    #[test]
    fn identity_and_node_account_are_global_options() {
        let node = Keypair::generate().account();
        let cli =
            Cli::try_parse_from(["ddc", "ping", "--identity", "me.key", "--node-account", node.to_ss58().as_str()])
                .unwrap();
        assert_eq!(cli.identity, Some(PathBuf::from("me.key")));
        assert_eq!(cli.node_account, Some(node));
        let cli = Cli::try_parse_from(["ddc", "--node-account", node.to_hex().as_str(), "streams"]).unwrap();
        assert_eq!(cli.node_account, Some(node));
        assert!(Cli::try_parse_from(["ddc", "ping", "--node-account", "not-an-account"]).is_err());
    }

    #[test]
    fn the_identity_is_read_only_by_commands_that_connect() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("me.key");
        let link = NodeLink {
            server: "127.0.0.1:1".into(),
            identity: Some(missing.clone()),
            node_account: None,
            grants: vec![],
            quiet: true,
        };
        // `ddc keygen` may create the very file DDC_IDENTITY names.
        run_client(&link, Command::Keygen { key_file: missing.clone(), show: false }).unwrap();
        let identity = link.identity().unwrap().unwrap();
        assert_eq!(identity.key.account(), Keypair::read(&missing).unwrap().account());
        let orphan = NodeLink {
            server: "127.0.0.1:1".into(),
            identity: None,
            node_account: Some(identity.key.account()),
            grants: vec![],
            quiet: true,
        };
        assert!(orphan.identity().is_err());
    }
}
