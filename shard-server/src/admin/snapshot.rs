//! What each core publishes for the admin endpoint, once a second, from its
//! housekeeping loop: its streams, the replication of the streams it leads,
//! its shards and (core 0 of a cluster node) how the other members answer.
//!
//! Built on the core from state it owns (no await while reading it, except
//! the shard directory listing, every 5 s, on the blocking pool), then
//! handed over whole ([`super::CoreSlot::publish`]).

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use ddc_formats::message::{Request, Response};

use super::{CorePhase, NodeView};
use crate::access::now_ms;
use crate::cluster::ClusterCore;
use crate::dispatch::CoreState;

/// Housekeeping ticks (100 ms) between snapshots.
const PUBLISH_EVERY_TICKS: u64 = 10;
/// Ticks between counts of the shard files (a directory listing per stream).
const SHARD_COUNT_EVERY_TICKS: u64 = 50;
/// Ticks between probes of the other members (core 0 only).
const PROBE_EVERY_TICKS: u64 = 20;
/// How long a probe waits for a member's answer.
pub const PROBE_TIMEOUT: Duration = Duration::from_millis(1500);
/// Coded segments listed per stream on the status page (the most recent; degraded ones always).
const SEGMENTS_LISTED_MAX: usize = 10;
/// Damaged shards listed per core.
const DAMAGED_LISTED_MAX: usize = 50;

/// One core's state, as of `taken_unix_ms`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CoreSnapshot {
    pub core: usize,
    /// 0 until the core published its first snapshot.
    pub taken_unix_ms: u64,
    pub streams: Vec<StreamView>,
    /// Why this core refuses produces (its usage journal failed), if it does.
    pub usage_journal_failure: Option<String>,
    /// Cluster mode only.
    pub shards: Option<ShardView>,
    /// Core 0 of a cluster node only: the other members as probes found them.
    pub peers: Vec<PeerView>,
}

/// One stream this core owns.
#[derive(Debug, Clone, Default, Serialize)]
pub struct StreamView {
    pub name: String,
    pub core: usize,
    pub first_offset: u64,
    pub high_watermark: u64,
    pub next_offset: u64,
    pub segments_open: u64,
    pub segments_sealed: u64,
    /// Durable bytes of its segments on this node.
    pub log_bytes: u64,
    /// Why writes are refused (a failed write or fsync, a full disk).
    pub writes_fenced: Option<String>,
    /// Why the stream failed recovery at start (it refuses every request).
    pub recovery_failed: Option<String>,
    /// "leader", "follower" or "" (alone, or a node that only holds shards of it).
    pub role: &'static str,
    /// Led streams: each follower.
    pub followers: Vec<FollowerView>,
    /// Led streams: coded segments (all shards stored and recorded).
    pub coded_segments: u64,
    /// Led streams: coded segments the last repair pass found with fewer than n healthy shards.
    pub degraded_segments: u64,
    /// Led streams: some coded segments, the most recent and every degraded one, up to a bound.
    pub redundancy: Vec<SegmentRedundancy>,
}

/// A follower of a led stream.
#[derive(Debug, Clone, Serialize)]
pub struct FollowerView {
    pub id: String,
    /// Its next offset as it last reported; None until it answered.
    pub acked: Option<u64>,
    /// The leader's high watermark minus `acked`, in records.
    pub lag_records: Option<u64>,
    pub in_sync: bool,
    pub connected: bool,
    pub last_error: Option<String>,
}

/// A coded segment's shards.
#[derive(Debug, Clone, Serialize)]
pub struct SegmentRedundancy {
    pub base_offset: u64,
    pub next_offset: u64,
    pub segment_bytes: u64,
    pub k: u8,
    pub n: u8,
    /// Healthy shards at the last repair pass; None when no pass has checked it since start
    /// (it had all n when it was placed).
    pub healthy: Option<u8>,
    pub checked_unix_ms: Option<u64>,
}

/// This core's shard store.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ShardView {
    /// Shard files held; None until first counted, just after start.
    pub held: Option<u64>,
    /// Local shards whose last check (store, read, scrub) failed.
    pub damaged: u64,
    pub damaged_listed: Vec<DamagedShard>,
    /// Shards of led segments not healthy at the last repair pass, rebuilt or not since.
    pub repair_backlog: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct DamagedShard {
    pub stream: String,
    pub base_offset: u64,
    pub index: u8,
    pub reason: String,
}

/// Another member, as this node's probes see it.
#[derive(Debug, Clone, Serialize)]
pub struct PeerView {
    pub id: String,
    pub address: String,
    /// Answered the last probe; None before the first probe finished.
    pub up: Option<bool>,
    pub last_ok_unix_ms: Option<u64>,
    pub last_error: Option<String>,
    pub last_error_unix_ms: Option<u64>,
    /// Round trip of the last answered probe.
    pub rtt_micros: Option<u64>,
    /// A connect to it timed out in the last 500 ms (calls to it fail at once meanwhile).
    pub recently_failed: bool,
}

/// Drives one core's part: publishes snapshots, counts shards, probes members.
pub struct CoreObserver {
    core: usize,
    view: Arc<NodeView>,
    ticks: Cell<u64>,
    shards_held: Rc<Cell<Option<u64>>>,
    counting: Rc<Cell<bool>>,
    peers: Rc<RefCell<BTreeMap<String, PeerView>>>,
    probing: Rc<Cell<bool>>,
}

impl CoreObserver {
    pub fn new(core: usize, view: Arc<NodeView>) -> CoreObserver {
        CoreObserver {
            core,
            view,
            ticks: Cell::new(0),
            shards_held: Rc::default(),
            counting: Rc::default(),
            peers: Rc::default(),
            probing: Rc::default(),
        }
    }

    /// The core serves: publish a first snapshot and tell /ready.
    pub fn serving(&self, state: &Rc<CoreState>) {
        self.publish(state);
        self.view.cores[self.core].set_state(CorePhase::Serving);
    }

    /// Called on every housekeeping tick (100 ms).
    pub fn tick(&self, state: &Rc<CoreState>) {
        let ticks = self.ticks.get() + 1;
        self.ticks.set(ticks);
        if let Some(cluster) = &state.cluster {
            if ticks % SHARD_COUNT_EVERY_TICKS == 1 && !self.counting.replace(true) {
                let (cluster, held, counting) = (cluster.clone(), self.shards_held.clone(), self.counting.clone());
                glommio::spawn_local(async move {
                    held.set(Some(cluster.store.count().await));
                    counting.set(false);
                })
                .detach();
            }
            if self.core == 0 && ticks.is_multiple_of(PROBE_EVERY_TICKS) && !cluster.closing.get() {
                self.probe_peers(cluster);
            }
        }
        if ticks.is_multiple_of(PUBLISH_EVERY_TICKS) {
            self.publish(state);
        }
    }

    fn publish(&self, state: &CoreState) {
        let snapshot = CoreSnapshot {
            core: self.core,
            taken_unix_ms: now_ms(),
            streams: streams(state),
            usage_journal_failure: state.usage.borrow().failure().map(|(reason, _)| reason.to_owned()),
            shards: state.cluster.as_ref().map(|c| shards(c, self.shards_held.get())),
            peers: self.peers.borrow().values().cloned().collect(),
        };
        self.view.cores[self.core].publish(snapshot);
    }

    /// Ping every other member at once (one round at a time); remember who answered.
    fn probe_peers(&self, cluster: &Rc<ClusterCore>) {
        if self.probing.replace(true) {
            return;
        }
        let (cluster, peers, probing) = (cluster.clone(), self.peers.clone(), self.probing.clone());
        glommio::spawn_local(async move {
            let probes = cluster.peers.all().map(|peer| async move {
                let started = Instant::now();
                let call = peer.call(&Request::Ping { nonce: 0 }, false, PROBE_TIMEOUT);
                // The call's own timeout starts after connecting; bound the whole probe.
                let deadline = async {
                    glommio::timer::sleep(PROBE_TIMEOUT + Duration::from_millis(500)).await;
                    Err(format!("no answer within {:?}", PROBE_TIMEOUT + Duration::from_millis(500)))
                };
                let outcome = futures_lite::future::or(async { call.await.map_err(|e| e.to_string()) }, deadline).await;
                (peer.id.to_hex(), peer.address.to_string(), outcome, started.elapsed(), peer.recently_failed())
            });
            let results = futures::future::join_all(probes).await;
            let now = now_ms();
            let mut peers = peers.borrow_mut();
            for (id, address, outcome, rtt, recently_failed) in results {
                let entry = peers.entry(id.clone()).or_insert_with(|| PeerView {
                    id,
                    address,
                    up: None,
                    last_ok_unix_ms: None,
                    last_error: None,
                    last_error_unix_ms: None,
                    rtt_micros: None,
                    recently_failed: false,
                });
                entry.recently_failed = recently_failed;
                match outcome {
                    // Any answer, a refusal included, shows the node is up and serving.
                    Ok(response) => {
                        entry.up = Some(true);
                        entry.last_ok_unix_ms = Some(now);
                        entry.rtt_micros = Some(rtt.as_micros() as u64);
                        if let Response::Error { message, .. } = response {
                            entry.last_error = Some(format!("answered with an error: {message}"));
                            entry.last_error_unix_ms = Some(now);
                        }
                    }
                    Err(reason) => {
                        entry.up = Some(false);
                        entry.last_error = Some(reason);
                        entry.last_error_unix_ms = Some(now);
                    }
                }
            }
            probing.set(false);
        })
        .detach();
    }
}

fn streams(state: &CoreState) -> Vec<StreamView> {
    let engine = &state.engine;
    let core = engine.core();
    let mut out = Vec::new();
    for name in engine.list() {
        let Ok(stream) = engine.stream(&name) else { continue };
        let info = stream.info(core as u16);
        let sealed = info.segments.iter().filter(|s| s.sealed).count() as u64;
        let mut view = StreamView {
            name: name.clone(),
            core,
            first_offset: info.first_offset,
            high_watermark: info.high_watermark,
            next_offset: info.next_offset,
            segments_open: info.segments.len() as u64 - sealed,
            segments_sealed: sealed,
            log_bytes: info.segments.iter().map(|s| s.size_bytes).sum(),
            writes_fenced: info.fenced_reason,
            ..Default::default()
        };
        if let Some(cluster) = &state.cluster {
            cluster_stream(cluster, &mut view);
        }
        out.push(view);
    }
    for (name, reason) in engine.unrecoverable() {
        out.push(StreamView { name, core, recovery_failed: Some(reason), ..Default::default() });
    }
    out
}

fn cluster_stream(cluster: &ClusterCore, view: &mut StreamView) {
    let replicas = cluster.membership.replicas(&view.name);
    view.role = if replicas.first() == Some(&cluster.me) {
        "leader"
    } else if replicas.contains(&cluster.me) {
        "follower"
    } else {
        ""
    };
    if let Some(r) = cluster.replicators.borrow().get(&view.name) {
        view.followers = r
            .follower_states()
            .into_iter()
            .map(|f| FollowerView {
                id: f.id.to_hex(),
                acked: f.acked,
                lag_records: f.acked.map(|a| view.high_watermark.saturating_sub(a)),
                in_sync: f.in_sync,
                connected: f.connected,
                last_error: f.last_error,
            })
            .collect();
    }
    let placed = cluster.placed.borrow();
    let Some(records) = placed.get(&view.name) else { return };
    let health = cluster.segment_health.borrow();
    view.coded_segments = records.len() as u64;
    let all: Vec<SegmentRedundancy> = records
        .values()
        .map(|r| {
            let checked = health.get(&(view.name.clone(), r.base_offset));
            SegmentRedundancy {
                base_offset: r.base_offset,
                next_offset: r.next_offset,
                segment_bytes: r.segment_bytes,
                k: r.k,
                n: r.holders.len() as u8,
                healthy: checked.map(|h| h.healthy),
                checked_unix_ms: checked.map(|h| h.checked_ms),
            }
        })
        .collect();
    let degraded = |s: &SegmentRedundancy| s.healthy.is_some_and(|h| h < s.n);
    view.degraded_segments = all.iter().filter(|s| degraded(s)).count() as u64;
    let recent_from = all.len().saturating_sub(SEGMENTS_LISTED_MAX);
    view.redundancy = all
        .into_iter()
        .enumerate()
        .filter(|(i, s)| *i >= recent_from || degraded(s))
        .map(|(_, s)| s)
        .take(SEGMENTS_LISTED_MAX * 5)
        .collect();
}

fn shards(cluster: &ClusterCore, held: Option<u64>) -> ShardView {
    let damaged = cluster.store.damaged();
    let repair_backlog =
        cluster.segment_health.borrow().values().map(|h| u64::from(h.n.saturating_sub(h.healthy))).sum();
    ShardView {
        held,
        damaged: damaged.len() as u64,
        damaged_listed: damaged
            .into_iter()
            .take(DAMAGED_LISTED_MAX)
            .map(|(stream, base_offset, index, reason)| DamagedShard { stream, base_offset, index, reason })
            .collect(),
        repair_backlog,
    }
}
