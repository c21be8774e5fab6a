//! A six-node cluster whose node-to-node traffic crosses fault-injecting
//! proxies (`common::faultnet`, a test tool): one [`Link`] per ordered pair of
//! nodes, so the test can cut, slow down or reset any node's traffic while the
//! processes themselves keep running.
//!
//! Each node gets its own cluster file: the same ids and parameters, but node
//! `j` is listed at the address of the link from this node to `j` (and this
//! node at its own listening address). Placement only depends on the ids, so
//! every node agrees on leaders and holders. The test's own clients connect
//! to the nodes directly, past the proxies: a partition here is one between
//! the nodes, with the test able to look at both sides.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use ddc_cluster::membership::{Member, Membership, NodeId, NodeKey};
use ddc_formats::batch::{batches, encode_records};
use ddc_formats::client::{Client, ClientError};
use ddc_formats::message::{RepairReport, Request, Response, StreamInfo};
use ddc_formats::wire::AckLevel;

use crate::common::faultnet::{Fault, Link, LinkStats};
use crate::common::free_port;
use crate::common::process::{add_healthy_shards, ServerProcess};

/// `cluster.peer_timeout_ms` of every node: the unit in which detection times are reported.
pub const PEER_TIMEOUT: Duration = Duration::from_millis(1000);
/// How long a test client waits for one answer before the test fails (liveness, not speed).
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(30);

pub struct ClusterNode {
    pub id: NodeId,
    /// The process; its `addr` is where the node listens (the test's clients connect
    /// there, past the proxies).
    pub process: ServerProcess,
}

impl std::ops::Deref for ClusterNode {
    type Target = ServerProcess;
    fn deref(&self) -> &ServerProcess {
        &self.process
    }
}

impl std::ops::DerefMut for ClusterNode {
    fn deref_mut(&mut self) -> &mut ServerProcess {
        &mut self.process
    }
}

impl ClusterNode {
    pub fn client(&self) -> Client {
        let c = Client::connect(self.addr).unwrap_or_else(|e| panic!("connect {}: {e}", self.addr));
        c.set_read_timeout(Some(CLIENT_TIMEOUT)).unwrap();
        c
    }

    /// Send `request` marked as already forwarded by another node, so this
    /// node serves it itself (from its own copy, or rebuilt from shards)
    /// instead of passing it to the stream's leader.
    pub fn call_served_here(&self, request: &Request<'_>) -> Response {
        let mut c = self.client();
        let id = c.send_envelope(request, true).unwrap_or_else(|e| panic!("send to {}: {e}", self.addr));
        let (got, response) = c.recv().unwrap_or_else(|e| panic!("answer from {}: {e}", self.addr));
        assert_eq!(got, id, "answer to another request");
        response
    }

    /// This node's own view of a stream (not the leader's).
    pub fn own_stream_info(&self, stream: &str) -> Option<StreamInfo> {
        match self.call_served_here(&Request::StreamInfo { stream }) {
            Response::StreamInfo(info) => Some(info),
            _ => None,
        }
    }

    pub fn shard_files(&self, stream: &str) -> Vec<PathBuf> {
        let dir = self.data_dir().join("shards").join(stream);
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .map(|d| d.flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|x| x == "shard")).collect())
            .unwrap_or_default();
        files.sort();
        files
    }

    /// Sealed segment files of the stream this node still keeps as full copies.
    pub fn log_files(&self, stream: &str) -> usize {
        std::fs::read_dir(self.data_dir().join("streams").join(stream))
            .map(|d| d.flatten().filter(|e| e.path().extension().is_some_and(|x| x == "log")).count())
            .unwrap_or(0)
    }
}

pub struct FaultCluster {
    pub nodes: Vec<ClusterNode>,
    /// `links[from][to]`: the proxy `from` goes through to reach `to` (None on the diagonal).
    links: Vec<Vec<Option<Link>>>,
    pub membership: Membership,
    _dir: tempfile::TempDir,
}

impl Drop for FaultCluster {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            n.kill();
        }
    }
}

impl FaultCluster {
    /// Six nodes, k = 4 of n = 6, three replicas with two in sync required;
    /// `extra` is appended to each node's `[cluster]` section.
    pub fn start(extra: &str) -> FaultCluster {
        let count = 6;
        let dir = tempfile::Builder::new().prefix("ddc-peer-faults-").tempdir().unwrap();
        let mut nodes = Vec::new();
        for i in 0..count {
            let ndir = dir.path().join(format!("node-{i}"));
            std::fs::create_dir_all(&ndir).unwrap();
            let key = NodeKey::generate();
            key.write_new(&ndir.join("node.key")).unwrap();
            let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
            nodes.push(ClusterNode { id: key.id(), process: ServerProcess::new(addr, ndir) });
        }
        let links: Vec<Vec<Option<Link>>> = (0..count)
            .map(|from| (0..count).map(|to| (from != to).then(|| Link::start(nodes[to].addr))).collect())
            .collect();
        let membership_as_seen_by = |me: usize| {
            let mut members: Vec<Member> = nodes
                .iter()
                .enumerate()
                .map(|(j, n)| Member { id: n.id, address: links[me][j].as_ref().map_or(n.addr, |link| link.address()) })
                .collect();
            members.sort_by_key(|m| m.id);
            let m = Membership {
                cluster_id: "0x01".into(),
                erasure_coding_required: 4,
                erasure_coding_total: 6,
                replication_total: 3,
                min_insync_replicas: 2,
                nodes: members,
            };
            m.validate().unwrap();
            m
        };
        for (i, n) in nodes.iter().enumerate() {
            let cluster_file = n.dir.join("cluster.toml");
            std::fs::write(&cluster_file, membership_as_seen_by(i).to_toml()).unwrap();
            let config = format!(
                "data_dir = {:?}\nlisten = \"{}\"\ncores = 1\n\
                 [server]\nio_memory_bytes = 1048576\n\
                 [http]\nlisten = \"127.0.0.1:0\"\n\
                 [log]\nsegment_bytes_max = 262144\n\
                 [cluster]\nmembership_file = {:?}\nnode_key_file = {:?}\n\
                 replica_lag_max_ms = 1000\ncoding_interval_ms = 100\npeer_timeout_ms = {}\n{extra}",
                n.data_dir(),
                n.addr,
                cluster_file,
                n.dir.join("node.key"),
                PEER_TIMEOUT.as_millis(),
            );
            std::fs::write(&n.config, config).unwrap();
        }
        // The canonical membership (direct addresses), for placement questions.
        let mut membership = membership_as_seen_by(0);
        for m in &mut membership.nodes {
            m.address = nodes.iter().find(|n| n.id == m.id).unwrap().addr;
        }
        let mut cluster = FaultCluster { nodes, links, membership, _dir: dir };
        for n in &mut cluster.nodes {
            n.start();
        }
        for n in &mut cluster.nodes {
            n.wait_ready();
        }
        cluster
    }

    /// Set the fault of every link into and out of node `x`.
    pub fn set_node_links(&self, x: usize, fault: Fault) {
        for (from, row) in self.links.iter().enumerate() {
            for (to, link) in row.iter().enumerate() {
                if from == x || to == x {
                    if let Some(link) = link {
                        link.set(fault);
                    }
                }
            }
        }
    }

    /// Cut node `x` off from every other node (both ways; bytes vanish, no reset).
    pub fn partition(&self, x: usize) {
        self.set_node_links(x, Fault::Drop);
    }

    pub fn heal(&self, x: usize) {
        self.set_node_links(x, Fault::Pass);
    }

    /// Traffic of the link from node `from` to node `to`.
    pub fn link_stats(&self, from: usize, to: usize) -> LinkStats {
        self.links[from][to].as_ref().expect("no link from a node to itself").stats()
    }

    /// Traffic of node `x`'s links, summed.
    pub fn node_link_stats(&self, x: usize) -> LinkStats {
        let mut total = LinkStats::default();
        for (from, row) in self.links.iter().enumerate() {
            for (to, link) in row.iter().enumerate() {
                if let Some(link) = link.as_ref().filter(|_| from == x || to == x) {
                    let s = link.stats();
                    total.connections += s.connections;
                    total.bytes_forwarded += s.bytes_forwarded;
                    total.bytes_dropped += s.bytes_dropped;
                    total.connections_reset += s.connections_reset;
                }
            }
        }
        total
    }

    pub fn index_of(&self, id: NodeId) -> usize {
        self.nodes.iter().position(|n| n.id == id).unwrap()
    }

    pub fn leader(&self, stream: &str) -> usize {
        self.index_of(self.membership.leader(stream))
    }

    pub fn replicas(&self, stream: &str) -> Vec<usize> {
        self.membership.replicas(stream).into_iter().map(|id| self.index_of(id)).collect()
    }

    /// The node holding shard `index` of the segment at `base`.
    pub fn holders(&self, stream: &str, base: u64) -> Vec<usize> {
        self.membership.shard_holders(stream, base).into_iter().map(|id| self.index_of(id)).collect()
    }

    pub fn logs(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("==== node {} ({}) ====\n{}", n.addr, n.id.short(), n.log()))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Healthy shard indexes per segment base, as the nodes in `asked` report them (with `verify`, freshly checked).
    pub fn shard_health(&self, stream: &str, verify: bool, asked: &[usize]) -> BTreeMap<u64, Vec<u8>> {
        let mut out: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
        for &i in asked {
            match self.nodes[i].client().call(&Request::ListShards { stream: Some(stream), verify }) {
                Ok(Response::ListShards { shards }) => {
                    add_healthy_shards(&mut out, &shards);
                }
                other => panic!("ListShards on node {i}: {other:?}"),
            }
        }
        out
    }

    pub fn all(&self) -> Vec<usize> {
        (0..self.nodes.len()).filter(|i| self.nodes[*i].child.is_some()).collect()
    }

    /// Seal the leader's open segment and wait until its log is sealed up to `end`.
    pub fn seal(&self, stream: &str, end: u64) {
        let leader = &self.nodes[self.leader(stream)];
        leader.client().call(&Request::Seal { stream }).unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let info = leader.client().stream_info(stream).unwrap();
            if info.segments.iter().filter(|s| s.sealed).map(|s| s.next_offset).max() == Some(end) {
                return;
            }
            assert!(Instant::now() < deadline, "not sealed up to {end}: {info:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The base offsets of the leader's sealed segments.
    pub fn sealed(&self, stream: &str) -> Vec<u64> {
        let info = self.nodes[self.leader(stream)].client().stream_info(stream).unwrap();
        info.segments.iter().filter(|s| s.sealed).map(|s| s.base_offset).collect()
    }

    /// Wait until every sealed segment of the leader has all six shards
    /// healthy on their holders and its placement record on the leader. (Shards
    /// alone are not enough: a coding round that failed on one holder is
    /// retried in full, rewriting every shard file.)
    pub fn wait_coded(&self, stream: &str, timeout: Duration) -> Vec<u64> {
        let deadline = Instant::now() + timeout;
        let placement = self.nodes[self.leader(stream)].data_dir().join("placement").join(stream);
        loop {
            let sealed = self.sealed(stream);
            let health = self.shard_health(stream, false, &self.all());
            let placed = |b: &u64| placement.join(format!("{b:020}.place")).exists();
            if !sealed.is_empty() && sealed.iter().all(|b| health.get(b).is_some_and(|h| h.len() == 6) && placed(b)) {
                return sealed;
            }
            assert!(Instant::now() < deadline, "segments {sealed:?} not coded: {health:?}\n{}", self.logs());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Ask every running node for a repair pass (with a fresh check of every shard).
    pub fn repair_all(&self) -> RepairReport {
        let mut total = RepairReport::default();
        for i in self.all() {
            match self.nodes[i].client().call(&Request::Repair { stream: None }) {
                Ok(Response::Repair(r)) => total.add(r),
                other => panic!("Repair on node {i}: {other:?}"),
            }
        }
        total
    }
}

pub fn record(i: u64) -> Vec<u8> {
    format!("rec-{i:08}-{}", "z".repeat((i * 7 % 200) as usize)).into_bytes()
}

/// Produce records `from..to` as one batch.
pub fn produce(c: &mut Client, stream: &str, from: u64, to: u64, ack: AckLevel) -> Result<u64, ClientError> {
    let recs: Vec<Vec<u8>> = (from..to).map(record).collect();
    let body = encode_records(recs.iter().map(|r| r.as_slice()));
    c.produce_body(stream, &body, (to - from) as u32, ack)
}

/// Produce `from..to` in batches of `per_batch` with acks=all, each acknowledged at its expected offset.
pub fn produce_range(cluster: &FaultCluster, via: usize, stream: &str, from: u64, to: u64, per_batch: u64) {
    let mut c = cluster.nodes[via].client();
    let mut i = from;
    while i < to {
        let end = (i + per_batch).min(to);
        let base = produce(&mut c, stream, i, end, AckLevel::Durable)
            .unwrap_or_else(|e| panic!("produce {i}..{end}: {e}\n{}", cluster.logs()));
        assert_eq!(base, i);
        i = end;
    }
}

/// Read `[0, to)` through node `via` and check every record byte for byte;
/// returns how long each fetch took. With `served_here`, every fetch is
/// marked forwarded, so `via` serves it itself (rebuilding from shards what it
/// has no copy of) instead of asking the leader.
pub fn consume_all(cluster: &FaultCluster, via: usize, stream: &str, to: u64, served_here: bool) -> Vec<Duration> {
    let node = &cluster.nodes[via];
    let mut c = node.client();
    let mut offset = 0;
    let mut took = Vec::new();
    while offset < to {
        let started = Instant::now();
        let request = Request::Fetch { stream, offset, max_bytes: 1 << 20, max_wait_ms: 0 };
        let raw = if served_here {
            match node.call_served_here(&request) {
                Response::Fetch { batches, .. } => batches,
                other => panic!("fetch {offset} served by {}: {other:?}\n{}", node.addr, cluster.logs()),
            }
        } else {
            c.fetch_raw(stream, offset, 1 << 20, 0)
                .unwrap_or_else(|e| panic!("fetch {offset} via {}: {e}\n{}", node.addr, cluster.logs()))
                .0
        };
        took.push(started.elapsed());
        let before = offset;
        for batch in batches(&raw) {
            let batch = batch.unwrap_or_else(|e| panic!("batch at {offset} via {}: {e}", node.addr));
            for (o, r) in batch.records() {
                if o < offset || offset >= to {
                    continue;
                }
                assert_eq!(o, offset, "offsets are not consecutive via {}", node.addr);
                assert_eq!(r, record(o).as_slice(), "record {o} differs via {}", node.addr);
                offset += 1;
            }
        }
        assert!(offset > before, "no records at {offset} via {}\n{}", node.addr, cluster.logs());
    }
    took
}

/// A duration in units of the peer timeout, for the reports.
pub fn in_timeouts(d: Duration) -> f64 {
    d.as_secs_f64() / PEER_TIMEOUT.as_secs_f64()
}
