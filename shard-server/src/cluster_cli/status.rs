//! `ddc cluster status`: which members are up, and how redundant each sealed
//! segment still is.
//!
//! Every member is pinged (deadline [`super::PING_TIMEOUT`]); every member
//! that answers is asked for the shards it holds (`ListShards`, no
//! verification: the answer comes from what the node already knows). The
//! answers are grouped by segment, `(stream, base_offset)`, and each shard
//! index `0..n` of a segment is classified:
//!
//! - **healthy**: some node reports it healthy;
//! - **corrupt**: reported, but by no node as healthy;
//! - **holder down**: not reported, and the node placement puts it on is down;
//! - **unknown**: not reported, and that node is up but did not list its shards;
//! - **missing**: not reported, although that node is up and listed its shards.
//!
//! A segment with `n` healthy shards is fully redundant, with `k..n` degraded
//! but readable, below `k` unreadable. A segment every holder of which is down
//! is reported by nobody and so does not appear at all: the node lines say
//! which nodes could not be asked.

use std::collections::BTreeMap;
use std::time::Duration;

use ddc_cluster::membership::NodeId;
use ddc_cluster::placement::{rank, segment_key};
use ddc_formats::message::{Request, Response, ShardEntry};
use ddc_formats::shard::ShardHeader;

use super::{index_list, table, Cluster, ClusterMember, EXIT_DEGRADED, EXIT_HEALTHY, EXIT_UNREADABLE, PING_TIMEOUT};

/// What one member said.
#[derive(Debug, Clone)]
pub struct NodeStatus {
    pub member: ClusterMember,
    /// The server's version; `None` if the node did not answer a ping.
    pub version: Option<String>,
    /// Why the node counts as down.
    pub down_reason: Option<String>,
    pub shards: ShardListing,
}

/// The answer to `ListShards`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShardListing {
    /// The node is down: not asked.
    NotAsked,
    /// The node listed this many shards.
    Listed(usize),
    /// The node is up but did not list its shards (an error, or a server that
    /// does not implement `ListShards` yet).
    Failed(String),
}

impl NodeStatus {
    pub fn is_up(&self) -> bool {
        self.version.is_some()
    }
}

/// How redundant a segment is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Health {
    /// All `n` shards healthy.
    Redundant,
    /// At least `k`, fewer than `n`.
    Degraded,
    /// Fewer than `k`: the segment cannot be rebuilt from what answered.
    Unreadable,
}

impl Health {
    pub fn name(self) -> &'static str {
        match self {
            Health::Redundant => "redundant",
            Health::Degraded => "degraded",
            Health::Unreadable => "unreadable",
        }
    }
}

/// One sealed segment as the cluster reported it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentStatus {
    pub stream: String,
    pub base_offset: u64,
    pub next_offset: u64,
    pub segment_bytes: u64,
    pub k: u8,
    pub n: u8,
    /// Shard indexes in each class (see the module documentation); together they are `0..n`.
    pub healthy: Vec<u8>,
    pub corrupt: Vec<u8>,
    pub holders_down: Vec<u8>,
    pub unknown: Vec<u8>,
    pub missing: Vec<u8>,
}

impl SegmentStatus {
    pub fn health(&self) -> Health {
        let healthy = self.healthy.len();
        if healthy >= usize::from(self.n) {
            Health::Redundant
        } else if healthy >= usize::from(self.k) {
            Health::Degraded
        } else {
            Health::Unreadable
        }
    }
}

/// Everything `ddc cluster status` prints.
#[derive(Debug, Clone)]
pub struct StatusReport {
    pub nodes: Vec<NodeStatus>,
    /// Sorted by stream, then base offset.
    pub segments: Vec<SegmentStatus>,
    /// Details worth a line each: corrupt shards, undecodable answers.
    pub notes: Vec<String>,
}

/// Counts behind the summary line and the exit code.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    pub nodes: usize,
    pub nodes_up: usize,
    /// Up nodes whose shard listing failed.
    pub listing_failed: usize,
    pub segments: usize,
    pub redundant: usize,
    pub degraded: usize,
    pub unreadable: usize,
}

/// Ask every member, in parallel; `list_timeout` bounds each `ListShards`.
pub fn gather(cluster: &Cluster, list_timeout: Duration) -> StatusReport {
    let answers: Vec<(NodeStatus, Vec<ShardEntry>)> = std::thread::scope(|scope| {
        let handles: Vec<_> =
            cluster.members.iter().map(|m| scope.spawn(move || ask(m.clone(), list_timeout))).collect();
        handles
            .into_iter()
            .zip(&cluster.members)
            .map(|(h, m)| {
                h.join().unwrap_or_else(|_| {
                    let status = NodeStatus {
                        member: m.clone(),
                        version: None,
                        down_reason: Some("the status thread panicked".into()),
                        shards: ShardListing::NotAsked,
                    };
                    (status, Vec::new())
                })
            })
            .collect()
    });
    classify(cluster, answers)
}

fn ask(member: ClusterMember, list_timeout: Duration) -> (NodeStatus, Vec<ShardEntry>) {
    let (mut client, version) = match super::ping(member.address, PING_TIMEOUT) {
        Ok(answer) => answer,
        Err(e) => {
            let reason = super::explain(&e, Some(PING_TIMEOUT));
            let status =
                NodeStatus { member, version: None, down_reason: Some(reason), shards: ShardListing::NotAsked };
            return (status, Vec::new());
        }
    };
    let listed = client
        .set_read_timeout(Some(list_timeout))
        .and_then(|()| client.call(&Request::ListShards { stream: None, verify: false }));
    let (shards, entries) = match listed {
        Ok(Response::ListShards { shards }) => (ShardListing::Listed(shards.len()), shards),
        Ok(other) => (ShardListing::Failed(format!("unexpected answer {other:?}")), Vec::new()),
        Err(e) => (ShardListing::Failed(super::explain(&e, Some(list_timeout))), Vec::new()),
    };
    (NodeStatus { member, version: Some(version), down_reason: None, shards }, entries)
}

/// What the answers say about one segment, before classification.
struct Seen {
    header: ShardHeader,
    /// Per shard index: (node label, healthy).
    reports: BTreeMap<u8, Vec<(String, bool)>>,
}

/// Group the answers by segment and classify every shard index.
pub fn classify(cluster: &Cluster, answers: Vec<(NodeStatus, Vec<ShardEntry>)>) -> StatusReport {
    let mut notes = Vec::new();
    let mut seen: BTreeMap<(String, u64), Seen> = BTreeMap::new();
    let mut nodes = Vec::with_capacity(answers.len());
    for (status, entries) in answers {
        let label = status.member.label.clone();
        for entry in entries {
            let header = match ShardHeader::decode(&entry.header) {
                Ok(h) => h,
                Err(e) => {
                    notes.push(format!("{label}: a listed shard header does not decode: {e}"));
                    continue;
                }
            };
            let key = (header.stream.clone(), header.base_offset);
            let segment = seen.entry(key).or_insert_with(|| Seen { header: header.clone(), reports: BTreeMap::new() });
            let first = &segment.header;
            let agrees = (first.next_offset, first.segment_bytes, first.segment_root, first.k, first.n)
                == (header.next_offset, header.segment_bytes, header.segment_root, header.k, header.n);
            if !agrees {
                notes.push(format!(
                    "{}@{} shard {} on {label}: its header describes another coding of the segment \
                     (k={} n={} next_offset={}); counted as corrupt",
                    header.stream, header.base_offset, header.index, header.k, header.n, header.next_offset
                ));
            }
            let healthy = entry.healthy && agrees;
            if !entry.healthy {
                notes.push(format!(
                    "{}@{} shard {} on {label} is not healthy: {}",
                    header.stream,
                    header.base_offset,
                    header.index,
                    if entry.detail.is_empty() { "(no detail)" } else { &entry.detail }
                ));
            }
            segment.reports.entry(header.index).or_default().push((label.clone(), healthy));
        }
        nodes.push(status);
    }
    let state_of = |id: &NodeId| nodes.iter().find(|n| &n.member.id == id);
    let ids: Vec<NodeId> = cluster.membership.nodes.iter().map(|m| m.id).collect();
    let mut segments = Vec::with_capacity(seen.len());
    for ((stream, base_offset), segment) in seen {
        let h = &segment.header;
        let holders = rank(&ids, &segment_key(&stream, base_offset));
        let mut s = SegmentStatus {
            stream,
            base_offset,
            next_offset: h.next_offset,
            segment_bytes: h.segment_bytes,
            k: h.k,
            n: h.n,
            healthy: Vec::new(),
            corrupt: Vec::new(),
            holders_down: Vec::new(),
            unknown: Vec::new(),
            missing: Vec::new(),
        };
        for index in 0..h.n {
            match segment.reports.get(&index) {
                Some(reports) if reports.iter().any(|(_, healthy)| *healthy) => s.healthy.push(index),
                Some(_) => s.corrupt.push(index),
                None => match holders.get(usize::from(index)).and_then(state_of) {
                    Some(holder) if !holder.is_up() => s.holders_down.push(index),
                    Some(holder) if matches!(holder.shards, ShardListing::Failed(_)) => s.unknown.push(index),
                    _ => s.missing.push(index),
                },
            }
        }
        debug_assert_eq!(
            s.healthy.len() + s.corrupt.len() + s.holders_down.len() + s.unknown.len() + s.missing.len(),
            usize::from(s.n)
        );
        segments.push(s);
    }
    StatusReport { nodes, segments, notes }
}

impl StatusReport {
    pub fn summary(&self) -> Summary {
        let mut s = Summary { nodes: self.nodes.len(), segments: self.segments.len(), ..Summary::default() };
        for n in &self.nodes {
            if n.is_up() {
                s.nodes_up += 1;
            }
            if matches!(n.shards, ShardListing::Failed(_)) {
                s.listing_failed += 1;
            }
        }
        for seg in &self.segments {
            match seg.health() {
                Health::Redundant => s.redundant += 1,
                Health::Degraded => s.degraded += 1,
                Health::Unreadable => s.unreadable += 1,
            }
        }
        s
    }

    /// [`EXIT_HEALTHY`], [`EXIT_DEGRADED`] or [`EXIT_UNREADABLE`]. Anything the
    /// tool could not verify (a node down, a listing that failed, an answer
    /// that did not decode) counts as degraded, never as healthy.
    pub fn exit_code(&self) -> i32 {
        let s = self.summary();
        if s.nodes_up == 0 || s.unreadable > 0 {
            EXIT_UNREADABLE
        } else if s.nodes_up < s.nodes || s.listing_failed > 0 || s.degraded > 0 || !self.notes.is_empty() {
            EXIT_DEGRADED
        } else {
            EXIT_HEALTHY
        }
    }

    /// The human-readable report: node table, segment table, notes, summary.
    pub fn render_text(&self) -> String {
        let s = self.summary();
        let mut out = format!("nodes: {} of {} up\n", s.nodes_up, s.nodes);
        let rows: Vec<Vec<String>> = self
            .nodes
            .iter()
            .map(|n| {
                let (state, version, shards, note) = match (&n.version, &n.shards) {
                    (None, _) => ("down", "-".to_owned(), "-".to_owned(), n.down_reason.clone().unwrap_or_default()),
                    (Some(v), ShardListing::Listed(count)) => ("up", v.clone(), count.to_string(), String::new()),
                    (Some(v), ShardListing::Failed(e)) => {
                        ("up", v.clone(), "?".to_owned(), format!("shards unknown: {e}"))
                    }
                    (Some(v), ShardListing::NotAsked) => ("up", v.clone(), "?".to_owned(), String::new()),
                };
                vec![
                    n.member.label.clone(),
                    n.member.id.short(),
                    n.member.address.to_string(),
                    state.to_owned(),
                    version,
                    shards,
                    note,
                ]
            })
            .collect();
        out.push_str(&table(&["NODE", "ID", "ADDRESS", "STATE", "VERSION", "SHARDS", "NOTE"], &rows));
        out.push('\n');
        if self.segments.is_empty() {
            if s.nodes_up > 0 && s.listing_failed == s.nodes_up {
                out.push_str("sealed segments: unknown (no up node listed its shards)\n");
            } else {
                out.push_str("sealed segments: none reported\n");
            }
        } else {
            out.push_str(&format!("sealed segments: {}\n", self.segments.len()));
            let rows: Vec<Vec<String>> = self
                .segments
                .iter()
                .map(|seg| {
                    let mut missing = index_list(&seg.missing);
                    if !seg.unknown.is_empty() {
                        let unknown: Vec<String> = seg.unknown.iter().map(|i| format!("{i}?")).collect();
                        missing = if seg.missing.is_empty() {
                            unknown.join(",")
                        } else {
                            format!("{missing},{}", unknown.join(","))
                        };
                    }
                    vec![
                        seg.stream.clone(),
                        seg.base_offset.to_string(),
                        seg.next_offset.to_string(),
                        seg.segment_bytes.to_string(),
                        format!("{}/{}", seg.healthy.len(), seg.n),
                        missing,
                        index_list(&seg.corrupt),
                        index_list(&seg.holders_down),
                        seg.health().name().to_owned(),
                    ]
                })
                .collect();
            out.push_str(&table(
                &["STREAM", "BASE", "NEXT", "BYTES", "HEALTHY", "MISSING", "CORRUPT", "HOLDERS DOWN", "STATE"],
                &rows,
            ));
        }
        for note in &self.notes {
            out.push_str(&format!("note: {note}\n"));
        }
        out.push('\n');
        out.push_str(&format!(
            "summary: {}/{} nodes up; {} sealed segments: {} fully redundant, {} degraded, {} unreadable",
            s.nodes_up, s.nodes, s.segments, s.redundant, s.degraded, s.unreadable
        ));
        if s.listing_failed > 0 {
            out.push_str(&format!("; shard state unknown on {} up node(s)", s.listing_failed));
        }
        out.push('\n');
        out
    }

    /// The same facts as one JSON object (`ddc cluster status --json`).
    pub fn to_json(&self) -> serde_json::Value {
        let s = self.summary();
        let nodes: Vec<_> = self
            .nodes
            .iter()
            .map(|n| {
                let (shards, shards_error) = match &n.shards {
                    ShardListing::Listed(count) => (Some(*count), None),
                    ShardListing::Failed(e) => (None, Some(e.clone())),
                    ShardListing::NotAsked => (None, None),
                };
                serde_json::json!({
                    "node": n.member.label, "id": n.member.id.to_hex(), "address": n.member.address.to_string(),
                    "up": n.is_up(), "version": n.version, "error": n.down_reason,
                    "shards": shards, "shards_error": shards_error,
                })
            })
            .collect();
        let segments: Vec<_> = self
            .segments
            .iter()
            .map(|seg| {
                serde_json::json!({
                    "stream": seg.stream, "base_offset": seg.base_offset, "next_offset": seg.next_offset,
                    "segment_bytes": seg.segment_bytes, "k": seg.k, "n": seg.n,
                    "healthy": seg.healthy, "missing": seg.missing, "unknown": seg.unknown,
                    "corrupt": seg.corrupt, "holders_down": seg.holders_down, "state": seg.health().name(),
                })
            })
            .collect();
        serde_json::json!({
            "nodes": nodes,
            "segments": segments,
            "notes": self.notes,
            "summary": {
                "nodes": s.nodes, "nodes_up": s.nodes_up, "shard_listing_failed": s.listing_failed,
                "segments": s.segments, "redundant": s.redundant, "degraded": s.degraded, "unreadable": s.unreadable,
            },
            "exit_code": self.exit_code(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ddc_cluster::membership::{Member, Membership};

    fn cluster(nodes: u8) -> Cluster {
        let members: Vec<Member> = (1..=nodes)
            .map(|i| Member {
                id: NodeId([i; 32]),
                address: format!("127.0.0.1:{}", 7400 + u16::from(i)).parse().unwrap(),
            })
            .collect();
        let membership = Membership {
            cluster_id: "t".into(),
            erasure_coding_required: 2,
            erasure_coding_total: 3,
            replication_total: 3,
            min_insync_replicas: 2,
            nodes: members.clone(),
        };
        let members = members
            .iter()
            .enumerate()
            .map(|(i, m)| ClusterMember { label: format!("node-{i}"), id: m.id, address: m.address })
            .collect();
        Cluster { membership, members }
    }

    fn shard(index: u8) -> Vec<u8> {
        let k = 2;
        let stripe_bytes = 4096;
        let segment_bytes = 10_000;
        ShardHeader {
            stream: "orders".into(),
            base_offset: 100,
            next_offset: 200,
            segment_bytes,
            segment_root: [7; 32],
            k,
            n: 3,
            index,
            stripe_bytes,
            body_bytes: ddc_formats::shard::body_bytes_for(segment_bytes, k, stripe_bytes).unwrap(),
            body_hash: [9; 32],
        }
        .encode()
        .to_vec()
    }

    fn up(c: &Cluster, i: usize, shards: Vec<(u8, bool)>) -> (NodeStatus, Vec<ShardEntry>) {
        let entries: Vec<ShardEntry> = shards
            .into_iter()
            .map(|(index, healthy)| ShardEntry { header: shard(index), healthy, detail: "body hash differs".into() })
            .collect();
        let status = NodeStatus {
            member: c.members[i].clone(),
            version: Some("0.1.0".into()),
            down_reason: None,
            shards: ShardListing::Listed(entries.len()),
        };
        (status, entries)
    }

    fn down(c: &Cluster, i: usize) -> (NodeStatus, Vec<ShardEntry>) {
        let status = NodeStatus {
            member: c.members[i].clone(),
            version: None,
            down_reason: Some("connection refused".into()),
            shards: ShardListing::NotAsked,
        };
        (status, Vec::new())
    }

    /// The node placement puts shard `index` of the test segment on.
    fn holder(c: &Cluster, index: usize) -> usize {
        let ids: Vec<NodeId> = c.membership.nodes.iter().map(|m| m.id).collect();
        let id = rank(&ids, &segment_key("orders", 100))[index];
        c.members.iter().position(|m| m.id == id).unwrap()
    }

    #[test]
    fn every_index_lands_in_exactly_one_class() {
        let c = cluster(3);
        let all = |h: usize| (0..3u8).find(|&i| holder(&c, usize::from(i)) == h).unwrap();
        let answers = (0..3).map(|node| up(&c, node, vec![(all(node), true)])).collect();
        let report = classify(&c, answers);
        assert_eq!(report.segments.len(), 1);
        assert_eq!(report.segments[0].health(), Health::Redundant);
        assert_eq!(report.exit_code(), EXIT_HEALTHY);

        // One holder down, one shard corrupt: 1 healthy < k = 2.
        let (a, b, d) = (holder(&c, 0), holder(&c, 1), holder(&c, 2));
        let answers = vec![up(&c, a, vec![(0, true)]), up(&c, b, vec![(1, false)]), down(&c, d)];
        let report = classify(&c, answers);
        let seg = &report.segments[0];
        assert_eq!((seg.healthy.clone(), seg.corrupt.clone(), seg.holders_down.clone()), (vec![0], vec![1], vec![2]));
        assert_eq!(seg.health(), Health::Unreadable);
        assert_eq!(report.exit_code(), EXIT_UNREADABLE);
        assert!(report.notes.iter().any(|n| n.contains("body hash differs")), "{:?}", report.notes);
        let text = report.render_text();
        assert!(text.contains("unreadable"), "{text}");

        // A holder that is up but lists nothing: missing, readable, degraded.
        let answers = vec![up(&c, a, vec![(0, true)]), up(&c, b, vec![(1, true)]), up(&c, d, vec![])];
        let report = classify(&c, answers);
        assert_eq!(report.segments[0].missing, vec![2]);
        assert_eq!(report.exit_code(), EXIT_DEGRADED);
    }

    #[test]
    fn a_server_without_list_shards_is_up_with_unknown_shards() {
        let c = cluster(3);
        let answers = (0..3)
            .map(|i| {
                let (mut status, _) = up(&c, i, vec![]);
                status.shards = ShardListing::Failed("server refused the request".into());
                (status, Vec::new())
            })
            .collect();
        let report = classify(&c, answers);
        assert_eq!(report.exit_code(), EXIT_DEGRADED);
        let text = report.render_text();
        assert!(text.contains("sealed segments: unknown"), "{text}");
        assert_eq!(report.to_json()["summary"]["shard_listing_failed"], 3);
        let nobody = classify(&c, (0..3).map(|i| down(&c, i)).collect());
        assert_eq!(nobody.exit_code(), EXIT_UNREADABLE);
    }
}
