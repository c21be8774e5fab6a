//! A cluster of real `shard-server` processes on this machine, all under one
//! directory (`ddc cluster up/down/start-node/stop-node`).
//!
//! ```text
//! <dir>/cluster.toml          the cluster file every node reads
//! <dir>/cluster-state.json    what was started: per node its pid, address and files
//! <dir>/node-<i>/node.key     the node's ed25519 key (mode 0600)
//! <dir>/node-<i>/config.toml  the node's configuration (kept across `up`s, edits too)
//! <dir>/node-<i>/server.log   its stdout and stderr, appended across starts
//! <dir>/node-<i>/data/        its data directory
//! ```
//!
//! Node `i` listens on `127.0.0.1:<base_port + i>`, and serves its admin HTTP
//! endpoint (metrics, status page) on that port plus [`HTTP_PORT_OFFSET`]. A directory that already
//! holds a cluster is reused by `up` as it is: same keys, same ports, data
//! kept. That is how a stopped cluster is restarted.
//!
//! The servers run detached, in their own session, so they outlive the `ddc`
//! that started them and a Ctrl-C in its terminal; a recorded pid is only
//! signalled while it is still that node's server (see [`super::process`]).

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use anyhow::Context;
use ddc_cluster::membership::{Member, Membership, MembershipSource, NodeId, NodeKey, TomlFile};
use serde::{Deserialize, Serialize};

use super::absolute;
use super::process::{is_server_for, log_tail, spawn_server, stop_pids, StopOutcome, KILL_WAIT};
use crate::config::NodeConfig;

pub const CLUSTER_FILE: &str = "cluster.toml";
pub const STATE_FILE: &str = "cluster-state.json";
pub const BASE_PORT_DEFAULT: u16 = 7401;
/// Node i's admin HTTP endpoint listens on its client port plus this (7401 -> 7481), clear of
/// the client ports of up to [`NODES_MAX`] nodes.
pub const HTTP_PORT_OFFSET: u16 = 80;
pub const CORES_DEFAULT: usize = 1;
/// Small segments, so that a local cluster seals (and codes) them soon.
pub const SEGMENT_BYTES_DEFAULT: u64 = 8 << 20;
/// Registered DMA memory per core of each local node: small, so that every
/// node stays well under a `ulimit -l` of 8 MiB.
pub const IO_MEMORY_BYTES: usize = 1 << 20;
/// How long a started node may take to answer its first ping.
pub const START_TIMEOUT_DEFAULT: Duration = Duration::from_secs(20);
/// A cluster needs distinct nodes for at least 2 data shards and 1 parity shard.
pub const NODES_MIN: usize = 3;
/// Enough for any local experiment; keeps `n` within its u8.
pub const NODES_MAX: usize = 64;
/// The cluster id written into the cluster file of a local cluster.
pub const LOCAL_CLUSTER_ID: &str = "local";
/// How long a port probe waits for a connection (loopback answers at once).
const PORT_PROBE_TIMEOUT: Duration = Duration::from_millis(300);

/// The paths of a local cluster directory.
#[derive(Debug, Clone)]
pub struct Layout {
    root: PathBuf,
}

impl Layout {
    /// The layout under `root` (taken as given; make it absolute first if it
    /// is going into files that processes elsewhere read).
    pub fn at(root: &Path) -> Layout {
        Layout { root: root.to_owned() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn cluster_file(&self) -> PathBuf {
        self.root.join(CLUSTER_FILE)
    }

    pub fn state_file(&self) -> PathBuf {
        self.root.join(STATE_FILE)
    }

    pub fn node_dir(&self, index: usize) -> PathBuf {
        self.root.join(format!("node-{index}"))
    }

    pub fn key_file(&self, index: usize) -> PathBuf {
        self.node_dir(index).join("node.key")
    }

    pub fn config_file(&self, index: usize) -> PathBuf {
        self.node_dir(index).join("config.toml")
    }

    pub fn log_file(&self, index: usize) -> PathBuf {
        self.node_dir(index).join("server.log")
    }

    pub fn data_dir(&self, index: usize) -> PathBuf {
        self.node_dir(index).join("data")
    }
}

/// The code and replication parameters of a cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CodeParams {
    /// Data shards per sealed segment (`erasure_coding_required`).
    pub k: u8,
    /// Data plus parity shards (`erasure_coding_total`).
    pub n: u8,
    /// Copies of an open segment (`replication_total`).
    pub replication: u8,
    /// Copies that must hold a batch before an acks=all produce is acknowledged (`min_insync_replicas`).
    pub min_insync: u8,
}

/// Parameters the user asked for; `None` takes the chosen default.
#[derive(Debug, Clone, Copy, Default)]
pub struct ParamOverrides {
    pub k: Option<u8>,
    pub n: Option<u8>,
    pub replication: Option<u8>,
    pub min_insync: Option<u8>,
}

/// The parameters for a cluster of `nodes` nodes, and a sentence saying why.
///
/// With 6 nodes or more: the chain defaults (k=4, n=6, replication 3,
/// min_insync 2). With 3 to 5: one shard per node (n = nodes) and
/// k = ceil(2n/3), at most n-1, so that a segment survives losing at least
/// one node. Overrides replace single values; the result must pass
/// [`Membership::validate`].
pub fn choose_params(nodes: usize, overrides: &ParamOverrides) -> anyhow::Result<(CodeParams, String)> {
    check_node_count(nodes)?;
    let (mut params, mut why) = if nodes >= usize::from(ddc_cluster::membership::ERASURE_CODING_TOTAL_DEFAULT) {
        let p = CodeParams {
            k: ddc_cluster::membership::ERASURE_CODING_REQUIRED_DEFAULT,
            n: ddc_cluster::membership::ERASURE_CODING_TOTAL_DEFAULT,
            replication: ddc_cluster::membership::REPLICATION_TOTAL_DEFAULT,
            min_insync: ddc_cluster::membership::MIN_INSYNC_REPLICAS_DEFAULT,
        };
        (p, format!("the chain defaults: any {} of {} shards rebuild a segment", p.k, p.n))
    } else {
        // Fits: check_node_count bounds nodes by NODES_MAX.
        let n = nodes as u8;
        let k = (2 * n).div_ceil(3).min(n - 1);
        let p = CodeParams { k, n, replication: 3, min_insync: 2 };
        let why = format!(
            "{nodes} nodes are fewer than the {} shards of the chain default, so n = {n} (one shard per node) \
             and k = ceil(2n/3) = {k}: any {k} of {n} shards rebuild a segment, which survives losing {} node(s)",
            ddc_cluster::membership::ERASURE_CODING_TOTAL_DEFAULT,
            n - k
        );
        (p, why)
    };
    let mut given = Vec::new();
    if let Some(k) = overrides.k {
        params.k = k;
        given.push("--k");
    }
    if let Some(n) = overrides.n {
        params.n = n;
        given.push("--n");
    }
    if let Some(r) = overrides.replication {
        params.replication = r;
        given.push("--replication");
    }
    if let Some(m) = overrides.min_insync {
        params.min_insync = m;
        given.push("--min-insync");
    }
    if !given.is_empty() {
        why = format!("{} as given, the rest by default ({why})", given.join(", "));
    }
    // Validate against stand-in members: the real ids do not change the outcome.
    let stand_in: Vec<Member> = (0..nodes)
        .map(|i| Member { id: NodeId([i as u8; 32]), address: SocketAddr::from(([127, 0, 0, 1], 1 + i as u16)) })
        .collect();
    membership(params, stand_in).validate().with_context(|| {
        format!(
            "cannot run {nodes} nodes with k={} n={} replication={} min_insync={}",
            params.k, params.n, params.replication, params.min_insync
        )
    })?;
    Ok((params, why))
}

fn check_node_count(nodes: usize) -> anyhow::Result<()> {
    if nodes < NODES_MIN {
        anyhow::bail!(
            "--nodes must be at least {NODES_MIN} (got {nodes}): a sealed segment is cut into n > k shards \
             on n distinct nodes, and the smallest code that survives losing a node is k=2, n=3"
        );
    }
    if nodes > NODES_MAX {
        anyhow::bail!("--nodes must be at most {NODES_MAX} for a local cluster (got {nodes})");
    }
    Ok(())
}

fn membership(params: CodeParams, mut nodes: Vec<Member>) -> Membership {
    nodes.sort_by_key(|m| m.id);
    Membership {
        cluster_id: LOCAL_CLUSTER_ID.to_owned(),
        erasure_coding_required: params.k,
        erasure_coding_total: params.n,
        replication_total: params.replication,
        min_insync_replicas: params.min_insync,
        nodes,
    }
}

/// What `ddc cluster` started, kept in `<dir>/cluster-state.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterState {
    /// The `shard-server` binary the nodes run (`start-node` uses it again).
    pub server_bin: PathBuf,
    pub nodes: Vec<NodeState>,
}

/// One local node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeState {
    pub index: usize,
    /// The node's id (ed25519 public key), 64 hex digits.
    pub id: String,
    pub address: SocketAddr,
    /// Its admin HTTP endpoint (`[http] listen` of its config); `None` when disabled
    /// (and in state files written before the endpoint existed).
    #[serde(default)]
    pub http: Option<SocketAddr>,
    /// The process last started for this node; `None` once it is known stopped.
    pub pid: Option<u32>,
    pub config: PathBuf,
    pub log: PathBuf,
    pub data_dir: PathBuf,
}

impl NodeState {
    /// The pid, if that process is still this node's server.
    pub fn running_pid(&self) -> Option<u32> {
        self.pid.filter(|&pid| is_server_for(pid, &self.config))
    }

    /// The first 8 hex digits of the id.
    pub fn short_id(&self) -> &str {
        self.id.get(..8).unwrap_or(&self.id)
    }
}

impl ClusterState {
    /// The state file of `layout`, if there is one.
    pub fn read(layout: &Layout) -> anyhow::Result<Option<ClusterState>> {
        let path = layout.state_file();
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("read {}", path.display())),
        };
        let state = serde_json::from_str(&text).with_context(|| format!("parse {}", path.display()))?;
        Ok(Some(state))
    }

    /// The state file of `layout`; an error that says what to do if there is none.
    pub fn read_required(layout: &Layout) -> anyhow::Result<ClusterState> {
        ClusterState::read(layout)?.with_context(|| {
            format!(
                "{} does not exist: nothing was started in {} (run `ddc cluster up --data-dir {}` first)",
                layout.state_file().display(),
                layout.root().display(),
                layout.root().display()
            )
        })
    }

    /// Replace the state file (write a temporary file, then rename it over).
    pub fn write(&self, layout: &Layout) -> anyhow::Result<()> {
        let path = layout.state_file();
        let tmp = layout.root().join(format!(".{STATE_FILE}.tmp"));
        let text = serde_json::to_string_pretty(self)?;
        std::fs::write(&tmp, text + "\n").with_context(|| format!("write {}", tmp.display()))?;
        std::fs::rename(&tmp, &path).with_context(|| format!("rename {} to {}", tmp.display(), path.display()))
    }

    /// The node with this index, or an error naming the valid ones.
    pub fn node_mut(&mut self, index: usize) -> anyhow::Result<&mut NodeState> {
        let count = self.nodes.len();
        self.nodes.iter_mut().find(|n| n.index == index).with_context(|| {
            format!("there is no node {index}: this cluster has nodes 0..={}", count.saturating_sub(1))
        })
    }
}

/// What `ddc cluster up` is asked to do.
#[derive(Debug, Clone)]
pub struct UpOptions {
    pub data_dir: PathBuf,
    pub nodes: usize,
    /// Node i listens on 127.0.0.1:<base_port + i> ([`BASE_PORT_DEFAULT`] when `None`).
    pub base_port: Option<u16>,
    /// Executors per node ([`CORES_DEFAULT`] when `None`).
    pub cores: Option<usize>,
    /// `log.segment_bytes_max` of every node ([`SEGMENT_BYTES_DEFAULT`] when `None`).
    pub segment_bytes: Option<u64>,
    pub params: ParamOverrides,
    /// The `shard-server` binary; `None`: the one next to the running executable.
    pub server_bin: Option<PathBuf>,
    pub start_timeout: Duration,
}

/// Create (or reuse) a local cluster in `opts.data_dir`, start every node and
/// wait until each answers a ping. Progress goes to `out`.
///
/// Refuses a directory where a node of an earlier `up` is still running, a
/// non-empty directory that holds no cluster, a port in use, and flags that
/// contradict the cluster a directory already holds. If a node does not come
/// up, every node started here is stopped again and the error carries the end
/// of that node's log.
pub fn up(opts: &UpOptions, out: &mut dyn Write) -> anyhow::Result<ClusterState> {
    check_node_count(opts.nodes)?;
    let root = absolute(&opts.data_dir)?;
    let layout = Layout::at(&root);
    if let Some(state) = ClusterState::read(&layout)? {
        let running: Vec<String> = state
            .nodes
            .iter()
            .filter_map(|n| n.running_pid().map(|pid| format!("node-{} pid {pid}", n.index)))
            .collect();
        if !running.is_empty() {
            anyhow::bail!(
                "{} already holds a running cluster ({}): run `ddc cluster down --data-dir {}` first, \
                 or `ddc cluster start-node` for a stopped node",
                root.display(),
                running.join(", "),
                root.display()
            );
        }
    }
    let server_bin = resolve_server_bin(opts.server_bin.as_deref())?;
    let nodes = if layout.cluster_file().exists() {
        prepare_existing(&layout, opts, out)?
    } else {
        prepare_new(&layout, opts, out)?
    };
    let mut state = ClusterState { server_bin, nodes };
    let all: Vec<usize> = state.nodes.iter().map(|n| n.index).collect();
    start(&layout, &mut state, &all, opts.start_timeout, out)?;
    Ok(state)
}

/// A fresh directory: keys, configs, cluster file. Nothing is written before
/// the parameters and the ports have been checked.
fn prepare_new(layout: &Layout, opts: &UpOptions, out: &mut dyn Write) -> anyhow::Result<Vec<NodeState>> {
    let root = layout.root();
    let (params, why) = choose_params(opts.nodes, &opts.params)?;
    if root.exists() {
        let mut entries = std::fs::read_dir(root).with_context(|| format!("read directory {}", root.display()))?;
        if entries.next().is_some() {
            anyhow::bail!(
                "{} is not empty and holds no {CLUSTER_FILE}: give `ddc cluster up` a new or empty directory",
                root.display()
            );
        }
    }
    let base_port = opts.base_port.unwrap_or(BASE_PORT_DEFAULT);
    let addresses = local_addresses(base_port, opts.nodes)?;
    let http: Vec<SocketAddr> = addresses.iter().map(|a| http_address(*a)).collect::<anyhow::Result<_>>()?;
    let numbered: Vec<(usize, SocketAddr)> =
        addresses.iter().copied().enumerate().chain(http.iter().copied().enumerate()).collect();
    check_ports_free(&numbered, "pick another --base-port")?;
    writeln!(
        out,
        "new cluster of {} nodes in {}: k={} n={} replication={} min_insync={} ({why})",
        opts.nodes,
        root.display(),
        params.k,
        params.n,
        params.replication,
        params.min_insync
    )?;
    let cores = opts.cores.unwrap_or(CORES_DEFAULT);
    let segment_bytes = opts.segment_bytes.unwrap_or(SEGMENT_BYTES_DEFAULT);
    let mut members = Vec::with_capacity(opts.nodes);
    let mut nodes = Vec::with_capacity(opts.nodes);
    for (index, &address) in addresses.iter().enumerate() {
        let data_dir = layout.data_dir(index);
        std::fs::create_dir_all(&data_dir).with_context(|| format!("create {}", data_dir.display()))?;
        let key = NodeKey::generate();
        let key_file = layout.key_file(index);
        key.write_new(&key_file).with_context(|| format!("write {}", key_file.display()))?;
        write_config(layout, index, address, http[index], cores, segment_bytes)?;
        members.push(Member { id: key.id(), address });
        nodes.push(node_state(layout, index, key.id(), address, Some(http[index])));
    }
    let membership = membership(params, members);
    membership.validate().context("the new cluster file")?;
    // Written last: a directory with a cluster file is complete enough to reuse.
    let cluster_file = layout.cluster_file();
    std::fs::write(&cluster_file, membership.to_toml()).with_context(|| format!("write {}", cluster_file.display()))?;
    Ok(nodes)
}

/// A directory from an earlier `up`: the same keys, ports and data; flags
/// must agree with what it holds.
fn prepare_existing(layout: &Layout, opts: &UpOptions, out: &mut dyn Write) -> anyhow::Result<Vec<NodeState>> {
    let root = layout.root();
    let membership = TomlFile::new(layout.cluster_file()).load()?;
    let count = membership.nodes.len();
    let start_over = format!("or remove {} to start over", root.display());
    if opts.nodes != count {
        anyhow::bail!(
            "{} already holds a cluster of {count} nodes: run `ddc cluster up --nodes {count}`, {start_over}",
            root.display()
        );
    }
    let held = [
        ("--k", opts.params.k, membership.erasure_coding_required),
        ("--n", opts.params.n, membership.erasure_coding_total),
        ("--replication", opts.params.replication, membership.replication_total),
        ("--min-insync", opts.params.min_insync, membership.min_insync_replicas),
    ];
    for (flag, asked, has) in held {
        if asked.is_some_and(|a| a != has) {
            anyhow::bail!(
                "{} already holds a cluster with {flag} {has}: leave the flag out, {start_over}",
                root.display()
            );
        }
    }
    let mut nodes = Vec::with_capacity(count);
    for index in 0..count {
        let key_file = layout.key_file(index);
        let key = NodeKey::read(&key_file)?;
        let member = membership.member(&key.id()).with_context(|| {
            format!("the key in {} belongs to no member of {}", key_file.display(), layout.cluster_file().display())
        })?;
        if let Some(base) = opts.base_port {
            let expected = u32::from(base) + index as u32;
            if u32::from(member.address.port()) != expected {
                anyhow::bail!(
                    "node-{index} of the cluster in {} listens on {}, not port {expected}: leave --base-port out, {start_over}",
                    root.display(),
                    member.address
                );
            }
        }
        let config_file = layout.config_file(index);
        let http = if config_file.exists() {
            add_http_section(&config_file, http_address(member.address)?, out)?;
            let config = read_config(&config_file)?;
            if opts.cores.is_some_and(|c| c != config.cores) {
                anyhow::bail!(
                    "{} has cores = {}: edit it or leave --cores out, {start_over}",
                    config_file.display(),
                    config.cores
                );
            }
            if opts.segment_bytes.is_some_and(|b| b != config.log.segment_bytes_max) {
                anyhow::bail!(
                    "{} has log.segment_bytes_max = {}: edit it or leave --segment-bytes out, {start_over}",
                    config_file.display(),
                    config.log.segment_bytes_max
                );
            }
            config.http.enabled.then_some(config.http.listen)
        } else {
            let data_dir = layout.data_dir(index);
            std::fs::create_dir_all(&data_dir).with_context(|| format!("create {}", data_dir.display()))?;
            let http = http_address(member.address)?;
            write_config(
                layout,
                index,
                member.address,
                http,
                opts.cores.unwrap_or(CORES_DEFAULT),
                opts.segment_bytes.unwrap_or(SEGMENT_BYTES_DEFAULT),
            )?;
            Some(http)
        };
        nodes.push(node_state(layout, index, key.id(), member.address, http));
    }
    let numbered: Vec<(usize, SocketAddr)> =
        nodes.iter().flat_map(|n| std::iter::once((n.index, n.address)).chain(n.http.map(|h| (n.index, h)))).collect();
    check_ports_free(&numbered, "stop it first: the cluster's ports are fixed in its cluster file")?;
    writeln!(
        out,
        "reusing the cluster in {}: {count} nodes, k={} n={} replication={} min_insync={}; keys, ports and data kept",
        root.display(),
        membership.erasure_coding_required,
        membership.erasure_coding_total,
        membership.replication_total,
        membership.min_insync_replicas
    )?;
    Ok(nodes)
}

fn node_state(layout: &Layout, index: usize, id: NodeId, address: SocketAddr, http: Option<SocketAddr>) -> NodeState {
    NodeState {
        index,
        id: id.to_hex(),
        address,
        http,
        pid: None,
        config: layout.config_file(index),
        log: layout.log_file(index),
        data_dir: layout.data_dir(index),
    }
}

fn local_addresses(base_port: u16, nodes: usize) -> anyhow::Result<Vec<SocketAddr>> {
    (0..nodes)
        .map(|i| {
            let port = u16::try_from(usize::from(base_port) + i)
                .ok()
                .filter(|&p| p != 0)
                .with_context(|| format!("--base-port {base_port} leaves no port for node {i}: ports end at 65535"))?;
            Ok(SocketAddr::from(([127, 0, 0, 1], port)))
        })
        .collect()
}

/// Where a node listening on `address` serves its admin HTTP endpoint.
fn http_address(address: SocketAddr) -> anyhow::Result<SocketAddr> {
    let port = address.port().checked_add(HTTP_PORT_OFFSET).with_context(|| {
        format!("{address} leaves no admin HTTP port (port + {HTTP_PORT_OFFSET}): pick a lower --base-port")
    })?;
    Ok(SocketAddr::new(address.ip(), port))
}

/// A configuration written before the admin endpoint existed has no `[http]`
/// table, and every node would take the default port: give it one.
fn add_http_section(path: &Path, http: SocketAddr, out: &mut dyn Write) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
    let table: toml::Table = toml::from_str(&text).with_context(|| format!("config {}", path.display()))?;
    if table.contains_key("http") {
        return Ok(());
    }
    let added = format!(
        "{}\n# Added by `ddc cluster up`: this node's admin HTTP endpoint (metrics, status page).\n[http]\nlisten = \"{http}\"\n",
        text.trim_end()
    );
    std::fs::write(path, added).with_context(|| format!("write {}", path.display()))?;
    writeln!(out, "added [http] listen = \"{http}\" to {}", path.display())?;
    Ok(())
}

/// A TOML string literal (quoted and escaped) for a path.
fn toml_path(path: &Path) -> anyhow::Result<String> {
    let text = path.to_str().with_context(|| format!("path {} is not UTF-8", path.display()))?;
    Ok(toml::Value::String(text.to_owned()).to_string())
}

fn write_config(
    layout: &Layout,
    index: usize,
    address: SocketAddr,
    http: SocketAddr,
    cores: usize,
    segment_bytes: u64,
) -> anyhow::Result<()> {
    let text = format!(
        "# Node {index} of the local cluster in {root}, written by `ddc cluster up`.\n\
         # Every key is in docs/CONFIG.md. Edits stay: `ddc cluster up` on this directory reuses this file.\n\
         data_dir = {data_dir}\n\
         listen = \"{address}\"\n\
         cores = {cores}\n\
         \n\
         [log]\n\
         segment_bytes_max = {segment_bytes}\n\
         \n\
         [server]\n\
         # Small, so that many nodes on one machine each stay under `ulimit -l`.\n\
         io_memory_bytes = {IO_MEMORY_BYTES}\n\
         \n\
         [cluster]\n\
         membership_file = {membership_file}\n\
         node_key_file = {node_key_file}\n\
         \n\
         [http]\n\
         # The admin endpoint: /metrics, /health, /ready, status page at /.\n\
         listen = \"{http}\"\n",
        root = layout.root().display(),
        data_dir = toml_path(&layout.data_dir(index))?,
        membership_file = toml_path(&layout.cluster_file())?,
        node_key_file = toml_path(&layout.key_file(index))?,
    );
    // Check our own output the way the server will read it, before anything runs on it.
    let parsed = NodeConfig::from_toml(&text).context("the generated node configuration")?;
    parsed.validate().context("the generated node configuration")?;
    debug_assert_eq!(parsed.listen, address);
    debug_assert_eq!(parsed.http.listen, http);
    let path = layout.config_file(index);
    std::fs::write(&path, text).with_context(|| format!("write {}", path.display()))
}

fn read_config(path: &Path) -> anyhow::Result<NodeConfig> {
    let text = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
    NodeConfig::from_toml(&text).with_context(|| format!("config {}", path.display()))
}

/// Fail if something already listens on one of the node addresses.
///
/// A connect probe, not a bind: after a node is killed, its port keeps
/// TIME_WAIT connections that make a plain bind fail for a minute, while the
/// server itself (SO_REUSEPORT) can listen there again at once.
fn check_ports_free(nodes: &[(usize, SocketAddr)], advice: &str) -> anyhow::Result<()> {
    for &(index, address) in nodes {
        if TcpStream::connect_timeout(&address, PORT_PROBE_TIMEOUT).is_ok() {
            anyhow::bail!("{address} (node-{index}) is in use: something already listens there; {advice}");
        }
    }
    Ok(())
}

/// The `shard-server` to run: the one given, else the one next to this executable.
pub fn resolve_server_bin(explicit: Option<&Path>) -> anyhow::Result<PathBuf> {
    let path = match explicit {
        Some(p) => absolute(p)?,
        None => {
            let exe = std::env::current_exe().context("find the running executable")?;
            exe.parent().context("the running executable has no directory")?.join("shard-server")
        }
    };
    if !path.is_file() {
        anyhow::bail!(
            "cannot find the shard-server binary at {}: pass --server-bin PATH or set DDC_SHARD_SERVER",
            path.display()
        );
    }
    Ok(path)
}

/// Start the listed nodes, record their pids, and wait until each answers a
/// ping. On failure every node started here is stopped again.
fn start(
    layout: &Layout,
    state: &mut ClusterState,
    indexes: &[usize],
    timeout: Duration,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let server_bin = state.server_bin.clone();
    let mut children: Vec<(usize, Child)> = Vec::with_capacity(indexes.len());
    let mut spawned = Ok(());
    for &index in indexes {
        let node = state.node_mut(index)?;
        match spawn_server(&server_bin, &node.config, &node.log, &format!("node-{index}")) {
            Ok(child) => {
                node.pid = Some(child.id());
                children.push((index, child));
            }
            Err(e) => {
                spawned = Err(e);
                break;
            }
        }
    }
    // Recorded at once, so that `down` finds the processes whatever happens next.
    state.write(layout)?;
    let outcome = spawned.and_then(|()| wait_ready(state, &mut children, timeout));
    if outcome.is_ok() {
        for node in state.nodes.iter().filter(|n| indexes.contains(&n.index)) {
            if let Some(http) = node.http {
                writeln!(out, "node-{} admin: http://{http}/ (status page), http://{http}/metrics", node.index)?;
            }
        }
    }
    if let Err(e) = outcome {
        let stopped: Vec<(u32, PathBuf)> = children
            .iter()
            .filter_map(|(i, c)| state.nodes.iter().find(|n| n.index == *i).map(|n| (c.id(), n.config.clone())))
            .collect();
        let outcomes = stop_pids(&stopped, libc::SIGTERM, KILL_WAIT);
        for (index, child) in &mut children {
            // Our own children: reap them (they are gone or as good as gone).
            let _ = child.try_wait();
            if let Ok(node) = state.node_mut(*index) {
                node.pid = None;
            }
        }
        if outcomes.iter().any(|o| matches!(o, StopOutcome::StillRunning { .. })) {
            writeln!(out, "warning: some nodes did not stop: {outcomes:?}")?;
        }
        state.write(layout)?;
        return Err(e.context("the nodes started were stopped again"));
    }
    Ok(())
}

/// Wait until every child answers a ping; the first one that exits or times
/// out fails the wait, with the end of its log.
fn wait_ready(state: &ClusterState, children: &mut [(usize, Child)], timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    let mut pending: Vec<usize> = (0..children.len()).collect();
    let node = |index: usize| state.nodes.iter().find(|n| n.index == index);
    while !pending.is_empty() {
        let mut still = Vec::with_capacity(pending.len());
        for slot in pending {
            let (index, child) = &mut children[slot];
            let Some(n) = node(*index) else { continue };
            if let Some(status) = child.try_wait()? {
                anyhow::bail!("node-{index} exited during start with {status}\n{}", log_tail(&n.log));
            }
            if super::ping(n.address, Duration::from_millis(500)).is_err() {
                still.push(slot);
            }
        }
        pending = still;
        if pending.is_empty() {
            break;
        }
        if Instant::now() >= deadline {
            let (index, _) = &children[pending[0]];
            let log = node(*index).map(|n| log_tail(&n.log)).unwrap_or_default();
            anyhow::bail!("node-{index} did not answer a ping within {timeout:?}\n{log}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// Start one stopped node of the cluster in `data_dir` and wait until it answers.
pub fn start_node(
    data_dir: &Path,
    index: usize,
    server_bin: Option<&Path>,
    timeout: Duration,
    out: &mut dyn Write,
) -> anyhow::Result<NodeState> {
    let layout = Layout::at(&absolute(data_dir)?);
    let mut state = ClusterState::read_required(&layout)?;
    let node = state.node_mut(index)?;
    if let Some(pid) = node.running_pid() {
        anyhow::bail!("node-{index} is already running (pid {pid})");
    }
    let ports: Vec<(usize, SocketAddr)> = std::iter::once(node.address).chain(node.http).map(|a| (index, a)).collect();
    check_ports_free(&ports, "stop it first: the node's ports are fixed in the cluster file and its config")?;
    if let Some(bin) = server_bin {
        state.server_bin = resolve_server_bin(Some(bin))?;
    } else if !state.server_bin.is_file() {
        anyhow::bail!(
            "the recorded shard-server {} is gone: pass --server-bin PATH or set DDC_SHARD_SERVER",
            state.server_bin.display()
        );
    }
    start(&layout, &mut state, &[index], timeout, out)?;
    Ok(state.node_mut(index)?.clone())
}

/// Stop one node: SIGTERM (SIGKILL after `timeout`), or SIGKILL at once with `kill`.
pub fn stop_node(data_dir: &Path, index: usize, kill: bool, timeout: Duration) -> anyhow::Result<StopOutcome> {
    let layout = Layout::at(&absolute(data_dir)?);
    let mut state = ClusterState::read_required(&layout)?;
    let node = state.node_mut(index)?;
    let signal = if kill { libc::SIGKILL } else { libc::SIGTERM };
    let outcome = match node.running_pid() {
        Some(pid) => stop_pids(&[(pid, node.config.clone())], signal, timeout)[0],
        None => StopOutcome::NotRunning,
    };
    if !matches!(outcome, StopOutcome::StillRunning { .. }) {
        node.pid = None;
    }
    state.write(&layout)?;
    Ok(outcome)
}

/// Stop every node of the cluster in `data_dir` (SIGTERM, SIGKILL after `timeout`).
pub fn down(data_dir: &Path, timeout: Duration) -> anyhow::Result<Vec<(NodeState, StopOutcome)>> {
    let layout = Layout::at(&absolute(data_dir)?);
    let mut state = ClusterState::read_required(&layout)?;
    let running: Vec<(usize, u32, PathBuf)> =
        state.nodes.iter().filter_map(|n| n.running_pid().map(|pid| (n.index, pid, n.config.clone()))).collect();
    let pids: Vec<(u32, PathBuf)> = running.iter().map(|(_, pid, config)| (*pid, config.clone())).collect();
    let outcomes = stop_pids(&pids, libc::SIGTERM, timeout);
    let mut report = Vec::with_capacity(state.nodes.len());
    for node in &mut state.nodes {
        let outcome = running
            .iter()
            .position(|(index, _, _)| *index == node.index)
            .map_or(StopOutcome::NotRunning, |slot| outcomes[slot]);
        if !matches!(outcome, StopOutcome::StillRunning { .. }) {
            node.pid = None;
        }
        report.push((node.clone(), outcome));
    }
    state.write(&layout)?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_clusters_get_one_shard_per_node() {
        let none = ParamOverrides::default();
        let pick = |nodes| {
            let (p, _) = choose_params(nodes, &none).unwrap();
            (p.k, p.n, p.replication, p.min_insync)
        };
        assert_eq!(pick(3), (2, 3, 3, 2));
        assert_eq!(pick(4), (3, 4, 3, 2));
        assert_eq!(pick(5), (4, 5, 3, 2));
        assert_eq!(pick(6), (4, 6, 3, 2));
        assert_eq!(pick(20), (4, 6, 3, 2));
    }

    #[test]
    fn refusals_name_the_problem() {
        let e = choose_params(2, &ParamOverrides::default()).unwrap_err().to_string();
        assert!(e.contains("at least 3"), "{e}");
        let bad = ParamOverrides { k: Some(3), n: Some(3), ..Default::default() };
        let e = format!("{:#}", choose_params(3, &bad).unwrap_err());
        assert!(e.contains("erasure_coding_required (3)"), "{e}");
        let bad = ParamOverrides { n: Some(5), ..Default::default() };
        let e = format!("{:#}", choose_params(4, &bad).unwrap_err());
        assert!(e.contains("exceeds the 4 nodes"), "{e}");
        let (p, why) = choose_params(7, &ParamOverrides { k: Some(5), ..Default::default() }).unwrap();
        assert_eq!((p.k, p.n), (5, 6));
        assert!(why.contains("--k as given"), "{why}");
    }

    #[test]
    fn ports_past_65535_are_refused() {
        assert!(local_addresses(65534, 3).is_err());
        assert_eq!(local_addresses(7401, 3).unwrap()[2].port(), 7403);
        assert!(http_address("127.0.0.1:65500".parse().unwrap()).is_err());
    }

    #[test]
    fn an_old_config_gets_an_http_section_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(&path, "listen = \"127.0.0.1:7402\"\n[server]\nio_memory_bytes = 1048576\n").unwrap();
        let mut out = Vec::new();
        add_http_section(&path, "127.0.0.1:7482".parse().unwrap(), &mut out).unwrap();
        add_http_section(&path, "127.0.0.1:7482".parse().unwrap(), &mut out).unwrap();
        let c = read_config(&path).unwrap();
        assert_eq!(c.http.listen.port(), 7482);
        assert_eq!(c.server.io_memory_bytes, 1 << 20);
        assert_eq!(String::from_utf8(out).unwrap().lines().count(), 1);
    }

    #[test]
    fn generated_config_is_accepted_by_the_server_parser() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::at(dir.path());
        std::fs::create_dir_all(layout.node_dir(0)).unwrap();
        let http = http_address("127.0.0.1:7401".parse().unwrap()).unwrap();
        assert_eq!(http.port(), 7481);
        write_config(&layout, 0, "127.0.0.1:7401".parse().unwrap(), http, 1, SEGMENT_BYTES_DEFAULT).unwrap();
        let c = read_config(&layout.config_file(0)).unwrap();
        assert_eq!(c.http.listen, http);
        assert_eq!(c.cluster.membership_file, Some(layout.cluster_file()));
        assert_eq!(c.server.io_memory_bytes, IO_MEMORY_BYTES);
        assert_eq!(c.data_dir, layout.data_dir(0));
    }
}
