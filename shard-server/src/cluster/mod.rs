//! Cluster mode: where a request is served, replication of open segments,
//! erasure coding of sealed ones, degraded reads and repair.
//!
//! Every core has its own [`ClusterCore`]: its own connections to the other
//! nodes and the cluster state of the streams it owns (a stream's replicas,
//! shards and placement records live on the core that owns the stream, as its
//! log does). Nothing here is shared across cores.
//!
//! Roles, from the membership (docs/ARCHITECTURE.md "Cluster"):
//! - a stream's **leader** (first in its rendezvous ranking) takes its
//!   produces and pushes leader-durable batches to the **followers** (the
//!   next `replication_total - 1`), see [`replication`];
//! - when the leader seals a segment it codes it into `n` shards stored on the
//!   segment's `n` **holders**, records the placement, and followers may drop
//!   their copy, see [`shards`].

pub mod chain_source;
pub mod replication;
pub mod shards;

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Duration;

use ddc_cluster::erasure::{Code, STRIPE_BYTES_DEFAULT};
use ddc_cluster::membership::{Membership, MembershipSource, NodeId, NodeKey, TomlFile};
use ddc_cluster::placement::PlacementRecord;
use ddc_formats::message::{Request, Response};
use ddc_formats::wire::ErrorCode;

use crate::config::{ClusterSection, NodeConfig};
use crate::dispatch::{error_response, CoreState};
use crate::peer::{PeerError, Peers};

pub use replication::Replicator;
pub use shards::ShardStore;

/// The membership and this node's identity, loaded once at start.
#[derive(Clone)]
pub struct ClusterSetup {
    pub membership: Membership,
    pub me: NodeId,
}

impl ClusterSetup {
    /// Load the membership and the node key named in the configuration, and
    /// check that this node is a member and that shards fit in frames.
    pub fn load(config: &NodeConfig) -> anyhow::Result<Option<ClusterSetup>> {
        let Some(key) = &config.cluster.node_key_file else { return Ok(None) };
        let (membership, described) = match config.cluster.membership_source {
            crate::config::MembershipSourceKind::Chain => chain_source::load(config)?,
            crate::config::MembershipSourceKind::File => {
                let Some(file) = &config.cluster.membership_file else { return Ok(None) };
                let source = TomlFile::new(file);
                (source.load()?, source.describe())
            }
        };
        let me = NodeKey::read(key)?.id();
        let Some(member) = membership.member(&me) else {
            anyhow::bail!("this node's key ({}) is not a member of {described}; its public key is {me}", key.display());
        };
        if member.address.port() != config.listen.port() {
            tracing::warn!(listen = %config.listen, member = %member.address, "the cluster file lists this node at another port");
        }
        let k = u64::from(membership.erasure_coding_required);
        let shard_bytes = config.log.segment_bytes_max.div_ceil(k) + (STRIPE_BYTES_DEFAULT as u64) * 2 + 4096;
        if shard_bytes > u64::from(config.server.frame_bytes_max) {
            anyhow::bail!(
                "invalid configuration: a shard of a {}-byte segment (log.segment_bytes_max / erasure_coding_required {k}) \
                 does not fit in one frame of server.frame_bytes_max {}: raise server.frame_bytes_max (at most 67108864) \
                 or lower log.segment_bytes_max",
                config.log.segment_bytes_max,
                config.server.frame_bytes_max
            );
        }
        tracing::info!(node = %me, members = membership.nodes.len(), k, n = membership.erasure_coding_total,
            replication = membership.replication_total, "cluster membership loaded from {described}");
        Ok(Some(ClusterSetup { membership, me }))
    }
}

/// One core's view of the cluster.
pub struct ClusterCore {
    pub membership: Rc<Membership>,
    pub me: NodeId,
    /// Connections for the cluster's own traffic (replication, shards, repair).
    pub peers: Peers,
    /// Separate connections for client requests passed on to other nodes, so
    /// long-polling fetches cannot take the in-flight slots replication needs.
    pub forward_peers: Peers,
    pub settings: ClusterSection,
    /// `server.frame_bytes_max`: node-to-node messages must fit in the peer's frames.
    pub frame_bytes_max: u32,
    pub code: Code,
    pub store: ShardStore,
    /// Replicators of the streams this core owns and this node leads.
    pub replicators: RefCell<HashMap<String, Rc<Replicator>>>,
    /// Placement records of coded segments of led streams, by stream and base offset.
    pub placed: RefCell<HashMap<String, BTreeMap<u64, PlacementRecord>>>,
    placement_dir: PathBuf,
    /// Followed streams: the leader's coded offset, from its last Replicate
    /// (offsets below it can be rebuilt from shards even if this copy lacks them).
    pub coded_hint: RefCell<HashMap<String, u64>>,
    /// Segments rebuilt from shards for reads, most recent last.
    pub decoded: RefCell<Vec<Rc<shards::DecodedSegment>>>,
    pub closing: Cell<bool>,
    /// A coding round is running on this core (one at a time).
    pub coding_busy: Cell<bool>,
    /// A scrub and repair round is running on this core (one at a time; it
    /// runs beside coding, so a long, rate-limited scrub does not hold up
    /// the coding of new segments).
    pub scrub_busy: Cell<bool>,
    /// One repair pass at a time per core (background or asked for).
    pub repair_lock: Rc<glommio::sync::Semaphore>,
    pub last_scrub: Cell<Option<std::time::Instant>>,
    /// Per coded segment of a led stream: healthy shards after the last repair pass (admin endpoint).
    pub segment_health: RefCell<BTreeMap<(String, u64), shards::SegmentHealth>>,
}

impl ClusterCore {
    pub async fn open(
        setup: &ClusterSetup,
        config: &NodeConfig,
        core: usize,
        cores: usize,
        identity: Option<Rc<ddc_auth::account::Keypair>>,
    ) -> anyhow::Result<ClusterCore> {
        let m = &setup.membership;
        let code = Code::new(m.erasure_coding_required, m.erasure_coding_total, STRIPE_BYTES_DEFAULT)?;
        let others = || m.nodes.iter().filter(|n| n.id != setup.me).map(|n| (n.id, n.address));
        // With auth.required, this node proves its identity to every peer it calls.
        let auth = identity.filter(|_| config.auth.required);
        let (peers, forward_peers) = (Peers::new(others(), auth.clone()), Peers::new(others(), auth));
        let store = ShardStore::new(config.data_dir.join("shards"), core, cores);
        store.load().await?;
        let placement_dir = config.data_dir.join("placement");
        let placed = shards::load_placements(&placement_dir, core, cores).await?;
        Ok(ClusterCore {
            membership: Rc::new(m.clone()),
            me: setup.me,
            peers,
            forward_peers,
            settings: config.cluster.clone(),
            frame_bytes_max: config.server.frame_bytes_max,
            code,
            store,
            replicators: RefCell::new(HashMap::new()),
            placed: RefCell::new(placed),
            placement_dir,
            coded_hint: RefCell::new(HashMap::new()),
            decoded: RefCell::new(Vec::new()),
            closing: Cell::new(false),
            coding_busy: Cell::new(false),
            scrub_busy: Cell::new(false),
            repair_lock: Rc::new(glommio::sync::Semaphore::new(1)),
            // The first scrub comes one interval after start, not during it.
            last_scrub: Cell::new(Some(std::time::Instant::now())),
            segment_health: RefCell::new(BTreeMap::new()),
        })
    }

    pub fn peer_timeout(&self) -> Duration {
        Duration::from_millis(self.settings.peer_timeout_ms)
    }

    /// True when `node` failed or timed out recently on either of this core's
    /// connections to it: reads, which other nodes can serve, skip it (see
    /// [`crate::peer::Peer::recently_failed`]).
    pub fn suspect(&self, node: &NodeId) -> bool {
        [&self.peers, &self.forward_peers].iter().any(|p| p.get(node).is_some_and(|peer| peer.recently_failed()))
    }

    pub fn leads(&self, stream: &str) -> bool {
        self.membership.leader(stream) == self.me
    }

    /// Stop background work (replication tasks notice and exit).
    pub fn close(&self) {
        self.closing.set(true);
        for r in self.replicators.borrow().values() {
            r.stop();
        }
    }
}

fn unavailable(e: &PeerError, what: &str) -> Response {
    error_response(ErrorCode::Unavailable, format!("{what}: {e}"))
}

/// Decide which node serves a client request. Returns `Some(response)` when
/// another node served it (or nobody could), `None` when this node serves it
/// (then the usual per-core routing applies).
pub async fn route(cluster: &ClusterCore, request: &Request<'_>, forwarded: bool) -> Option<Response> {
    if forwarded {
        return None; // passed on once already: served here, whatever this node's view
    }
    match *request {
        Request::Produce { stream, .. } | Request::CreateStream { stream } | Request::Seal { stream } => {
            let leader = cluster.membership.leader(stream);
            if leader == cluster.me {
                return None;
            }
            let peer = cluster.forward_peers.get(&leader)?;
            Some(match peer.call(request, true, cluster.peer_timeout()).await {
                Ok(r) => r,
                Err(e) => unavailable(
                    &e,
                    &format!("the leader of stream {stream:?} cannot be reached, so it takes no writes now"),
                ),
            })
        }
        // Reads: the leader has the newest data, but a follower will do when it is down.
        Request::Fetch { stream, .. } | Request::StreamInfo { stream } => {
            let replicas = cluster.membership.replicas(stream);
            if replicas[0] == cluster.me {
                return None;
            }
            // The leader has the newest data; then any follower; then this node
            // (which rebuilds sealed segments from shards if it holds no copy).
            for node in &replicas {
                if *node == cluster.me {
                    return None;
                }
                let Some(peer) = cluster.forward_peers.get(node) else { continue };
                if cluster.suspect(node) {
                    tracing::debug!(stream, node = %node.short(), "replica failed or timed out recently; not asked for a read");
                    continue;
                }
                match peer.call(request, true, cluster.peer_timeout() + fetch_wait(request)).await {
                    // A replica without the stream (its data directory was replaced) or one
                    // that refuses reads: the next may have it.
                    Ok(Response::Error { code: ErrorCode::UnknownStream | ErrorCode::Unavailable, message }) => {
                        tracing::debug!(stream, %message, "replica cannot serve a read; trying the next");
                    }
                    Ok(r) => return Some(r),
                    Err(e) => tracing::debug!(stream, error = %e, "replica unreachable for a read; trying the next"),
                }
            }
            None
        }
        _ => None,
    }
}

fn fetch_wait(request: &Request<'_>) -> Duration {
    match request {
        Request::Fetch { max_wait_ms, .. } => Duration::from_millis(u64::from(*max_wait_ms)),
        _ => Duration::ZERO,
    }
}

/// Periodic cluster work of one core: keep replicators for led streams, code
/// sealed segments, scrub and repair. Runs from the housekeeping loop.
pub async fn tick(state: &Rc<CoreState>, cluster: &Rc<ClusterCore>) {
    for name in state.engine.list() {
        if cluster.leads(&name) {
            if let Ok(stream) = state.engine.stream(&name) {
                replication::replicator(cluster, &stream);
            }
        }
    }
    if !cluster.coding_busy.replace(true) {
        let (state, cluster) = (state.clone(), cluster.clone());
        glommio::spawn_local(async move {
            shards::code_sealed_segments(&state, &cluster).await;
            cluster.coding_busy.set(false);
        })
        .detach();
    }
    let due = cluster
        .last_scrub
        .get()
        .is_none_or(|t| t.elapsed() >= Duration::from_millis(cluster.settings.scrub_interval_ms));
    if due && !cluster.scrub_busy.replace(true) {
        cluster.last_scrub.set(Some(std::time::Instant::now()));
        let (state, cluster) = (state.clone(), cluster.clone());
        glommio::spawn_local(async move {
            let damaged = cluster.store.scrub(cluster.settings.repair_bytes_per_s).await;
            state.counters.scrubbed(damaged);
            let report = shards::repair_pass(&state, &cluster, None, false).await;
            if report.shards_rebuilt > 0 || !report.errors.is_empty() {
                tracing::info!(?report, "scrub and repair pass");
            }
            cluster.scrub_busy.set(false);
        })
        .detach();
    }
}
