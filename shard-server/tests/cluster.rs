//! A real cluster: six `shard-server` processes on loopback, each with its own
//! key, data directory and port. Replication with acks=all, erasure coding of
//! sealed segments, reads with nodes killed (SIGKILL) or shards damaged on
//! disk, repair after damage and after a node's data directory is wiped, and
//! no acknowledged record lost when the leader is killed under load.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ddc_auth::account::{Account, Keypair};
use ddc_cluster::membership::{Member, Membership, NodeId, NodeKey};
use ddc_formats::batch::encode_records;
use ddc_formats::client::Client;
use ddc_formats::message::{RepairReport, Request, Response};
use ddc_formats::wire::{AckLevel, ErrorCode};

use common::free_port;
use common::process::{add_healthy_shards, ServerProcess};

struct ClusterNode {
    id: NodeId,
    process: ServerProcess,
    /// Set when the cluster runs with auth.required: clients authenticate as this account.
    identity: Option<std::sync::Arc<Keypair>>,
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
    fn client(&self) -> Client {
        let c = match &self.identity {
            Some(me) => {
                Client::connect_authenticated(&self.addr, Duration::from_secs(10), me, Some(&Account(self.id.0)))
                    .map(|(c, _)| c)
            }
            None => Client::connect(self.addr),
        }
        .unwrap_or_else(|e| panic!("connect {}: {e}", self.addr));
        c.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        c
    }
}

struct Cluster {
    _dir: tempfile::TempDir,
    nodes: Vec<ClusterNode>,
    membership: Membership,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            n.kill();
        }
    }
}

impl Cluster {
    fn start(count: usize, extra: &str) -> Cluster {
        let dir = tempfile::Builder::new().prefix("ddc-cluster-").tempdir().unwrap();
        // With auth required, the test client is one account that owns bucket 1.
        let client_identity = extra.contains("required = true").then(|| std::sync::Arc::new(Keypair::generate()));
        let mut extra = extra.to_owned();
        if let Some(me) = &client_identity {
            let buckets = dir.path().join("buckets.toml");
            std::fs::write(&buckets, format!("[[bucket]]\nid = 1\nowner = \"{}\"\n", me.account())).unwrap();
            extra.push_str(&format!("buckets_file = {buckets:?}\n"));
        }
        let mut nodes = Vec::new();
        let mut members = Vec::new();
        for i in 0..count {
            let ndir = dir.path().join(format!("node-{i}"));
            std::fs::create_dir_all(&ndir).unwrap();
            let key = NodeKey::generate();
            key.write_new(&ndir.join("node.key")).unwrap();
            let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
            members.push(Member { id: key.id(), address: addr });
            nodes.push(ClusterNode {
                id: key.id(),
                process: ServerProcess::new(addr, ndir),
                identity: client_identity.clone(),
            });
        }
        members.sort_by_key(|m| m.id);
        let membership = Membership {
            cluster_id: "0x01".into(),
            erasure_coding_required: 4,
            erasure_coding_total: 6,
            replication_total: 3,
            min_insync_replicas: 2,
            nodes: members,
        };
        membership.validate().unwrap();
        let cluster_file = dir.path().join("cluster.toml");
        std::fs::write(&cluster_file, membership.to_toml()).unwrap();
        for n in &nodes {
            // Each node's admin endpoint on a port of its own (the default, 7480, is one for all).
            let config = format!(
                "data_dir = {:?}\nlisten = \"{}\"\ncores = 1\n\
                 [http]\nlisten = \"127.0.0.1:{}\"\n\
                 [server]\nio_memory_bytes = 1048576\n\
                 [log]\nsegment_bytes_max = 262144\n\
                 [cluster]\nmembership_file = {:?}\nnode_key_file = {:?}\n\
                 replica_lag_max_ms = 1000\ncoding_interval_ms = 100\npeer_timeout_ms = 3000\n{extra}",
                n.data_dir(),
                n.addr,
                free_port(),
                cluster_file,
                n.dir.join("node.key"),
            );
            std::fs::write(&n.config, config).unwrap();
        }
        let mut cluster = Cluster { _dir: dir, nodes, membership };
        for n in &mut cluster.nodes {
            n.start();
        }
        for n in &mut cluster.nodes {
            n.wait_ready();
        }
        cluster
    }

    fn index_of(&self, id: NodeId) -> usize {
        self.nodes.iter().position(|n| n.id == id).unwrap()
    }

    fn leader(&self, stream: &str) -> usize {
        self.index_of(self.membership.leader(stream))
    }

    fn replicas(&self, stream: &str) -> Vec<usize> {
        self.membership.replicas(stream).into_iter().map(|id| self.index_of(id)).collect()
    }

    fn running(&self) -> impl Iterator<Item = &ClusterNode> {
        self.nodes.iter().filter(|n| n.child.is_some())
    }

    /// Healthy shard indexes per segment base, over the running nodes (a fresh check with `verify`).
    fn shard_health(&self, stream: &str, verify: bool) -> BTreeMap<u64, Vec<u8>> {
        let mut out: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
        for n in self.running() {
            let mut c = n.client();
            match c.call(&Request::ListShards { stream: Some(stream), verify }).unwrap() {
                Response::ListShards { shards } => {
                    add_healthy_shards(&mut out, &shards);
                }
                other => panic!("{other:?}"),
            }
        }
        out
    }

    /// Wait until the leader's log is sealed up to `end`.
    fn wait_sealed(&self, stream: &str, end: u64) {
        let leader = &self.nodes[self.leader(stream)];
        let deadline = Instant::now() + Duration::from_secs(30);
        while leader
            .client()
            .stream_info(stream)
            .unwrap()
            .segments
            .iter()
            .filter(|s| s.sealed)
            .map(|s| s.next_offset)
            .max()
            != Some(end)
        {
            assert!(Instant::now() < deadline, "not sealed up to {end}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Wait until every sealed segment of the leader's log has all six shards.
    fn wait_coded(&self, stream: &str) -> usize {
        let leader = &self.nodes[self.leader(stream)];
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let info = leader.client().stream_info(stream).unwrap();
            let sealed: Vec<u64> = info.segments.iter().filter(|s| s.sealed).map(|s| s.base_offset).collect();
            let health = self.shard_health(stream, false);
            if !sealed.is_empty() && sealed.iter().all(|b| health.get(b).is_some_and(|h| h.len() == 6)) {
                return sealed.len();
            }
            assert!(Instant::now() < deadline, "segments {sealed:?} not coded: {health:?}\n{}", leader.log());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn logs(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("==== node {} ({}) ====\n{}", n.addr, n.id.short(), n.log()))
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn repair_all(&self) -> RepairReport {
        let mut total = RepairReport::default();
        for n in self.running() {
            match n.client().call(&Request::Repair { stream: None }).unwrap() {
                Response::Repair(r) => total.add(r),
                other => panic!("{other:?}"),
            }
        }
        total
    }
}

fn record(i: u64) -> Vec<u8> {
    format!("rec-{i:08}-{}", "z".repeat((i * 7 % 200) as usize)).into_bytes()
}

fn produce_range(cluster: &Cluster, via: usize, stream: &str, from: u64, to: u64, per_batch: u64) {
    let mut c = cluster.nodes[via].client();
    let mut i = from;
    while i < to {
        let end = (i + per_batch).min(to);
        let recs: Vec<Vec<u8>> = (i..end).map(record).collect();
        let body = encode_records(recs.iter().map(|r| r.as_slice()));
        let base = c
            .produce_body(stream, &body, (end - i) as u32, AckLevel::Durable)
            .unwrap_or_else(|e| panic!("produce {i}..{end}: {e}\n{}", cluster.logs()));
        assert_eq!(base, i);
        i = end;
    }
}

/// Read `[0, to)` through `node`, checking every record byte for byte.
fn consume_all(cluster: &Cluster, via: usize, stream: &str, to: u64) {
    let node = &cluster.nodes[via];
    let mut c = node.client();
    let mut offset = 0;
    while offset < to {
        let fetched = c
            .fetch(stream, offset, 1 << 20, 0)
            .unwrap_or_else(|e| panic!("fetch {offset} via {}: {e}\n{}", node.addr, cluster.logs()));
        assert!(
            !fetched.records.is_empty(),
            "no records at {offset} via {} (hw {})\n{}",
            node.addr,
            fetched.high_watermark,
            cluster.logs()
        );
        for (o, r) in fetched.records {
            assert_eq!(o, offset);
            assert_eq!(r, record(o), "record {o} differs");
            offset += 1;
            if offset == to {
                break;
            }
        }
    }
}

fn flip_byte(path: &Path, at: u64) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new().read(true).write(true).open(path).unwrap();
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, at).unwrap();
    b[0] ^= 0x5a;
    f.write_all_at(&b, at).unwrap();
    f.sync_all().unwrap();
}

fn shard_files(node: &ClusterNode, stream: &str) -> Vec<PathBuf> {
    let dir = node.data_dir().join("shards").join(stream);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|d| d.flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|x| x == "shard")).collect())
        .unwrap_or_default();
    files.sort();
    files
}

#[test]
fn six_nodes_replicate_code_survive_damage_and_repair() {
    let mut cluster = Cluster::start(6, "scrub_interval_ms = 600000\n");
    let stream = "orders";
    let leader = cluster.leader(stream);
    let replicas = cluster.replicas(stream);
    let non_replica = (0..6).find(|i| !replicas.contains(i)).unwrap();

    // Produce through a node that does not hold the stream: it forwards to the leader.
    let total = 12_000;
    produce_range(&cluster, non_replica, stream, 0, total, 100);
    match cluster.nodes[leader].client().call(&Request::Seal { stream }).unwrap() {
        Response::Seal { sealed_base_offset } => assert!(sealed_base_offset.is_some()),
        other => panic!("{other:?}"),
    }
    cluster.wait_sealed(stream, total);
    let sealed = cluster.wait_coded(stream);
    assert!(sealed >= 3, "only {sealed} sealed segments");

    // Followers drop their full copies of coded segments (replica_retention = leader).
    let follower = replicas[1];
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let info =
            cluster.nodes[follower].client().call(&Request::Fetch { stream, offset: 0, max_bytes: 1, max_wait_ms: 0 });
        let dropped = std::fs::read_dir(cluster.nodes[follower].data_dir().join("streams").join(stream))
            .unwrap()
            .flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "log"))
            .count()
            <= 1;
        if dropped {
            assert!(info.is_ok(), "a forwarded fetch works: {info:?}");
            break;
        }
        assert!(Instant::now() < deadline, "follower kept its coded segments");
        std::thread::sleep(Duration::from_millis(100));
    }

    // Damage one shard of every segment on one holder; kill the leader: reads
    // through a follower rebuild sealed segments from the five remaining
    // holders, skipping the damaged shards (their BLAKE3 does not match).
    let victim = (0..6).find(|i| *i != leader && *i != follower).unwrap();
    let damaged = shard_files(&cluster.nodes[victim], stream);
    assert!(!damaged.is_empty());
    for f in &damaged {
        flip_byte(f, 512 + 100);
    }
    cluster.nodes[leader].kill();
    consume_all(&cluster, follower, stream, total);

    // Writes to a stream whose leader is down are refused, clearly.
    let err = cluster.nodes[follower].client().produce(stream, &[b"x"]).unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::Unavailable), "{err}");

    // The leader returns; repair finds the damaged shards and rebuilds them.
    cluster.nodes[leader].start();
    cluster.nodes[leader].wait_ready();

    let report = cluster.repair_all();
    assert_eq!(report.shards_corrupt, damaged.len() as u64, "{report:?}\n{}", cluster.logs());
    assert_eq!(report.shards_rebuilt, damaged.len() as u64, "{report:?}");
    assert!(report.errors.is_empty(), "{report:?}");
    let health = cluster.shard_health(stream, true);
    assert!(health.values().all(|h| h.len() == 6), "{health:?}");

    // Replace a node: wipe its data directory; repair restores its shards.
    let wiped = victim;
    cluster.nodes[wiped].kill();
    std::fs::remove_dir_all(cluster.nodes[wiped].data_dir()).unwrap();
    cluster.nodes[wiped].start();
    cluster.nodes[wiped].wait_ready();
    let report = cluster.repair_all();
    assert_eq!(report.segments_checked, sealed as u64, "{report:?}");
    assert_eq!(report.shards_missing, sealed as u64, "{report:?}\n{}", cluster.logs());
    assert_eq!(report.shards_rebuilt, sealed as u64, "{report:?}\n{}", cluster.logs());
    let health = cluster.shard_health(stream, true);
    assert!(health.values().all(|h| h.len() == 6), "{health:?}");

    // Replace the leader's data directory: it refuses writes (its followers hold
    // offsets it lacks) and reads still return everything, from the followers.
    cluster.nodes[leader].kill();
    std::fs::remove_dir_all(cluster.nodes[leader].data_dir()).unwrap();
    cluster.nodes[leader].start();
    cluster.nodes[leader].wait_ready();
    consume_all(&cluster, non_replica, stream, total);
    let err = match cluster.nodes[non_replica].client().produce(stream, &[b"after the wipe"]) {
        Ok(offset) => panic!("a wiped leader took a write at {offset}\n{}", cluster.logs()),
        Err(e) => e,
    };
    assert_eq!(err.code(), Some(ErrorCode::Unavailable), "{err}");
    assert!(err.to_string().contains("holds offsets up to"), "{err}");
    consume_all(&cluster, non_replica, stream, total);
    // Asked directly, the wiped leader refuses reads too, and says where to read.
    let err = cluster.nodes[leader].client().fetch(stream, 0, 1 << 20, 0).unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::Unavailable), "{err}");

    // Kill any two nodes, here the leader and a follower (the worst pair:
    // one copy of the open segment left, sealed ones only as shards).
    cluster.nodes[leader].kill();
    cluster.nodes[follower].kill();
    let survivor = replicas[2];
    consume_all(&cluster, survivor, stream, total);
    consume_all(&cluster, non_replica, stream, total);
}

#[test]
fn leader_killed_under_acks_all_load_loses_no_acknowledged_record() {
    let mut cluster = Cluster::start(6, "");
    let stream = "payments";
    let leader = cluster.leader(stream);
    let replicas = cluster.replicas(stream);
    let entry = (0..6).find(|i| !replicas.contains(i)).unwrap();
    let acked: Arc<Mutex<Vec<(u64, u64)>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let producers: Vec<_> = (0..2)
        .map(|p| {
            let (acked, stop, addr) = (acked.clone(), stop.clone(), cluster.nodes[entry].addr);
            std::thread::spawn(move || {
                let mut c = Client::connect(addr).unwrap();
                c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let tag = p * 1_000_000 + n;
                    let recs = [record(tag)];
                    let body = encode_records(recs.iter().map(|r| r.as_slice()));
                    match c.produce_body(stream, &body, 1, AckLevel::Durable) {
                        Ok(base) => acked.lock().unwrap().push((base, tag)),
                        Err(_) => std::thread::sleep(Duration::from_millis(20)),
                    }
                    n += 1;
                }
            })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    while acked.lock().unwrap().len() < 300 {
        assert!(Instant::now() < deadline, "producers made no progress\n{}", cluster.nodes[leader].log());
        std::thread::sleep(Duration::from_millis(20));
    }
    cluster.nodes[leader].kill();
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    for p in producers {
        p.join().unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    let check = |node: &ClusterNode| {
        let mut c = node.client();
        for (offset, tag) in &acked {
            let f =
                c.fetch(stream, *offset, 4096, 0).unwrap_or_else(|e| panic!("fetch {offset} via {}: {e}", node.addr));
            let got = f.records.iter().find(|(o, _)| o == offset).map(|(_, r)| r.clone());
            assert_eq!(got, Some(record(*tag)), "acknowledged offset {offset} lost or altered via {}", node.addr);
        }
    };
    // Every acknowledged record is on the followers, with the leader dead...
    check(&cluster.nodes[replicas[1]]);
    check(&cluster.nodes[replicas[2]]);
    // ...and on the leader after it recovers.
    cluster.nodes[leader].start();
    cluster.nodes[leader].wait_ready();
    check(&cluster.nodes[leader]);
    // With both followers gone the leader refuses (no false ack), without writing.
    let before = cluster.nodes[leader].client().stream_info(stream).unwrap().next_offset;
    cluster.nodes[replicas[1]].kill();
    cluster.nodes[replicas[2]].kill();
    // Once the leader has noticed (heartbeats every 500 ms, replica_lag_max_ms = 1000), a produce is
    // refused before anything is written. (Within that window it may be appended and then refused.)
    std::thread::sleep(Duration::from_millis(1500));
    let err = cluster.nodes[leader].client().produce(stream, &[b"lonely"]).unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::NotEnoughReplicas), "{err}");
    assert_eq!(cluster.nodes[leader].client().stream_info(stream).unwrap().next_offset, before);
}

#[test]
fn scrubber_finds_and_repairs_bitrot_by_itself() {
    let cluster = Cluster::start(6, "scrub_interval_ms = 500\n");
    let stream = "audit";
    let leader = cluster.leader(stream);
    produce_range(&cluster, leader, stream, 0, 4000, 200);
    cluster.nodes[leader].client().call(&Request::Seal { stream }).unwrap();
    cluster.wait_sealed(stream, 4000);
    cluster.wait_coded(stream);
    let victim = (0..6).find(|i| *i != leader).unwrap();
    let file = shard_files(&cluster.nodes[victim], stream).into_iter().next().expect("victim holds a shard");
    let before = std::fs::read(&file).unwrap();
    flip_byte(&file, before.len() as u64 - 1);
    // The victim's scrubber notices (its listing reports the shard damaged) and
    // the leader's repair pass rebuilds it; no request asks for either.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen_damaged = false;
    loop {
        let health = cluster.shard_health(stream, false);
        seen_damaged |= health.values().any(|h| h.len() < 6);
        if std::fs::read(&file).unwrap_or_default() == before {
            break;
        }
        assert!(Instant::now() < deadline, "not repaired (damage seen: {seen_damaged})\n{}", cluster.logs());
        std::thread::sleep(Duration::from_millis(100));
    }
    let health = cluster.shard_health(stream, true);
    assert!(health.values().all(|h| h.len() == 6), "{health:?}");
    consume_all(&cluster, victim, stream, 4000);
}

#[test]
fn with_auth_required_nodes_authenticate_to_each_other_and_refuse_strangers() {
    let cluster = Cluster::start(6, "\n[auth]\nrequired = true\n");
    let stream = "b1.guarded";
    let leader = cluster.leader(stream);
    let replicas = cluster.replicas(stream);
    let non_replica = (0..6).find(|i| !replicas.contains(i)).unwrap();
    // Forwarded produce, replication and coding all run over authenticated node-to-node connections.
    produce_range(&cluster, non_replica, stream, 0, 3000, 100);
    cluster.nodes[leader].client().call(&Request::Seal { stream }).unwrap();
    cluster.wait_sealed(stream, 3000);
    cluster.wait_coded(stream);
    consume_all(&cluster, non_replica, stream, 3000);
    // An authenticated client that is not a member cannot send node-to-node requests.
    let follower = &cluster.nodes[replicas[1]];
    let err = follower
        .client()
        .call(&Request::Replicate {
            stream,
            base_offset: 3000,
            batches: &[],
            leader: &cluster.nodes[leader].id.0,
            coded_offset: 0,
        })
        .unwrap_err();
    assert!(err.to_string().contains("not a member of this cluster"), "{err}");
    // And an unauthenticated one is refused outright.
    let err = Client::connect(follower.addr).unwrap().ping().unwrap_err();
    assert!(err.to_string().contains("requires authentication"), "{err}");
}
