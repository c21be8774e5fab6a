//! The admin HTTP endpoint: Prometheus metrics, health, readiness and a
//! read-only status page (docs/OPERATIONS.md, "Metrics"; docs/CONFIG.md, `[http]`).
//!
//! It runs on a thread of its own, never on a core: a slow or hostile HTTP
//! client costs that thread, not request latency. What it shows comes from
//! three places, none of which puts it on a core's request path:
//!
//! - **counters**, relaxed atomics each core (or each stream, in the engine)
//!   owns and alone writes ([`CoreCounters`], `ddc_engine::stats`); the
//!   admin thread sums them at scrape time;
//! - **snapshots** each core publishes from its housekeeping loop once a
//!   second ([`snapshot::CoreSnapshot`]: streams, replication, shards, peers),
//!   behind a mutex that core takes once a second and the admin thread once
//!   per request, for as long as it takes to clone an `Arc`;
//! - the anchoring state's own mutex, held only to copy a few numbers.
//!
//! **Boundary:** read-only. Nothing served here changes the node.

mod counters;
pub mod http;
pub mod metrics;
pub mod snapshot;
pub mod status;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

pub use counters::{get, AuthFailure, CoreCounters, FrameRefusal, ERROR_CODE_SLOTS};

use crate::config::NodeConfig;
use ddc_engine::stats::EngineStats;

/// Where a core is in its life, as /ready sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum CorePhase {
    /// Recovering its streams, opening its state, binding its listener.
    Starting = 0,
    /// Accepting connections and serving.
    Serving = 1,
    /// It failed to start or stopped with an error.
    Failed = 2,
    /// It has left its serving loop (the node is stopping).
    Stopped = 3,
}

/// What the admin thread knows of one core.
#[derive(Debug)]
pub struct CoreSlot {
    pub counters: Arc<CoreCounters>,
    state: AtomicU8,
    engine: OnceLock<Arc<EngineStats>>,
    snapshot: Mutex<Arc<snapshot::CoreSnapshot>>,
}

impl CoreSlot {
    fn new(core: usize) -> CoreSlot {
        CoreSlot {
            counters: Arc::default(),
            state: AtomicU8::new(CorePhase::Starting as u8),
            engine: OnceLock::new(),
            snapshot: Mutex::new(Arc::new(snapshot::CoreSnapshot { core, ..Default::default() })),
        }
    }

    pub fn set_state(&self, state: CorePhase) {
        self.state.store(state as u8, Ordering::SeqCst);
    }

    pub fn state(&self) -> CorePhase {
        match self.state.load(Ordering::SeqCst) {
            0 => CorePhase::Starting,
            1 => CorePhase::Serving,
            2 => CorePhase::Failed,
            _ => CorePhase::Stopped,
        }
    }

    /// The core's engine, once it is open: its per-stream counters.
    pub fn set_engine(&self, stats: Arc<EngineStats>) {
        let _ = self.engine.set(stats);
    }

    pub fn engine(&self) -> Option<&Arc<EngineStats>> {
        self.engine.get()
    }

    /// Replace the published snapshot (the core, once a second).
    pub fn publish(&self, snapshot: snapshot::CoreSnapshot) {
        let snapshot = Arc::new(snapshot);
        *self.snapshot.lock().unwrap_or_else(|p| p.into_inner()) = snapshot;
    }

    /// The last published snapshot.
    pub fn snapshot(&self) -> Arc<snapshot::CoreSnapshot> {
        self.snapshot.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// A cluster member, as listed in the membership.
#[derive(Debug, Clone)]
pub struct MemberInfo {
    pub id: String,
    pub address: SocketAddr,
    pub is_me: bool,
}

/// What does not change while the node runs.
#[derive(Debug, Clone)]
pub struct NodeInfo {
    pub version: &'static str,
    /// The node key's account (SS58), when it could be read.
    pub account: Option<String>,
    /// The cluster node id (hex public key), in cluster mode.
    pub node_id: Option<String>,
    pub listen: SocketAddr,
    /// Where the admin endpoint actually listens (port 0 resolved).
    pub http_listen: Option<SocketAddr>,
    pub cores: usize,
    pub data_dir: String,
    pub started_unix_ms: u64,
    pub members: Vec<MemberInfo>,
    /// Cluster code parameters (k, n, replication_total, min_insync), in cluster mode.
    pub code: Option<(u8, u8, u8, u8)>,
    pub chain_url: Option<String>,
    pub era_ms: u64,
    pub block_explorer_url: String,
    pub status_refresh_s: u32,
}

/// Everything the admin endpoint reads, shared by the cores and the admin thread.
pub struct NodeView {
    pub info: Mutex<NodeInfo>,
    pub cores: Vec<CoreSlot>,
    pub anchoring: Option<Arc<crate::anchoring::Anchoring>>,
    started: Instant,
    stop: Arc<AtomicBool>,
}

impl NodeView {
    pub fn new(
        config: &NodeConfig,
        cores: usize,
        cluster: Option<&crate::cluster::ClusterSetup>,
        anchoring: Option<Arc<crate::anchoring::Anchoring>>,
        stop: Arc<AtomicBool>,
    ) -> NodeView {
        let account = ddc_auth::account::Keypair::read(&config.identity_file()).ok().map(|k| k.account().to_string());
        let (members, node_id, code) = match cluster {
            Some(setup) => {
                let m = &setup.membership;
                let members = m
                    .nodes
                    .iter()
                    .map(|n| MemberInfo { id: n.id.to_hex(), address: n.address, is_me: n.id == setup.me })
                    .collect();
                let code =
                    (m.erasure_coding_required, m.erasure_coding_total, m.replication_total, m.min_insync_replicas);
                (members, Some(setup.me.to_hex()), Some(code))
            }
            None => (Vec::new(), None, None),
        };
        let info = NodeInfo {
            version: env!("CARGO_PKG_VERSION"),
            account,
            node_id,
            listen: config.listen,
            http_listen: None,
            cores,
            data_dir: config.data_dir.display().to_string(),
            started_unix_ms: crate::access::now_ms(),
            members,
            code,
            chain_url: config.anchor.chain_url.clone(),
            era_ms: config.anchor.era_ms,
            block_explorer_url: config.http.block_explorer_url.clone(),
            status_refresh_s: config.http.status_refresh_s,
        };
        NodeView {
            info: Mutex::new(info),
            cores: (0..cores).map(CoreSlot::new).collect(),
            anchoring,
            started: Instant::now(),
            stop,
        }
    }

    pub fn info(&self) -> NodeInfo {
        self.info.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn uptime(&self) -> std::time::Duration {
        self.started.elapsed()
    }

    /// Ok when every core serves and the node is not stopping; else why not.
    ///
    /// A stream whose writes are fenced, or a core whose usage journal failed,
    /// does not make the node unready: reads are still served there (a full
    /// disk keeps serving reads, docs/OPERATIONS.md), and taking the node out
    /// of rotation would lose them too. Those show on the status page and in
    /// `ddc_stream_writes_fenced` and `ddc_usage_journal_failed`.
    pub fn readiness(&self) -> Result<(), String> {
        if self.stop.load(Ordering::SeqCst) {
            return Err("shutting down".into());
        }
        for (core, slot) in self.cores.iter().enumerate() {
            match slot.state() {
                CorePhase::Serving => {}
                CorePhase::Starting => return Err(format!("core {core} is starting (recovering its streams)")),
                CorePhase::Failed => return Err(format!("core {core} failed")),
                CorePhase::Stopped => return Err(format!("core {core} has stopped")),
            }
        }
        Ok(())
    }
}

/// Bind the admin endpoint (unless `http.enabled` is false) and serve it on a thread of its own.
/// A bind failure is an error naming `http.listen`.
pub fn start(config: &NodeConfig, view: &Arc<NodeView>) -> anyhow::Result<Option<http::Server>> {
    if !config.http.enabled {
        return Ok(None);
    }
    let listener = std::net::TcpListener::bind(config.http.listen).map_err(|e| {
        anyhow::anyhow!(
            "http.listen {}: {e}: the admin HTTP endpoint cannot listen there; set http.listen (or --http-listen) \
             to a free address, or http.enabled = false",
            config.http.listen
        )
    })?;
    let address = listener.local_addr()?;
    view.info.lock().unwrap_or_else(|p| p.into_inner()).http_listen = Some(address);
    let routed = view.clone();
    let server = http::Server::spawn(listener, Arc::new(move |request: &http::Request| route(&routed, request)))
        .map_err(|e| anyhow::anyhow!("http.listen {address}: cannot start the admin HTTP thread: {e}"))?;
    tracing::info!(%address, "admin HTTP endpoint: http://{address}/ (/metrics, /health, /ready, /status.json)");
    Ok(Some(server))
}

/// Answer one admin request.
pub fn route(view: &Arc<NodeView>, request: &http::Request) -> http::Reply {
    use http::Reply;
    match request.path.as_str() {
        "/metrics" => Reply::new(200, metrics::CONTENT_TYPE, metrics::render(view)),
        "/health" => Reply::text(200, "ok\n"),
        "/ready" => match view.readiness() {
            Ok(()) => Reply::text(200, "ready\n"),
            Err(reason) => Reply::text(503, format!("not ready: {reason}\n")),
        },
        "/" => {
            let refresh = view.info().status_refresh_s;
            Reply::new(200, "text/html; charset=utf-8", status::html(&status::report(view), refresh))
        }
        "/status.json" => match serde_json::to_vec_pretty(&status::report(view)) {
            Ok(body) => Reply::new(200, "application/json", body),
            Err(e) => Reply::text(500, format!("status could not be encoded: {e}\n")),
        },
        _ => Reply::text(404, "not found; try /, /metrics, /health, /ready or /status.json\n"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_when_every_core_serves_and_not_stopping() {
        let stop = Arc::new(AtomicBool::new(false));
        let view = NodeView::new(&NodeConfig::default(), 2, None, None, stop.clone());
        assert!(view.readiness().unwrap_err().contains("core 0 is starting"));
        view.cores[0].set_state(CorePhase::Serving);
        assert!(view.readiness().unwrap_err().contains("core 1 is starting"));
        view.cores[1].set_state(CorePhase::Serving);
        view.readiness().unwrap();
        view.cores[1].set_state(CorePhase::Failed);
        assert!(view.readiness().unwrap_err().contains("core 1 failed"));
        view.cores[1].set_state(CorePhase::Serving);
        stop.store(true, Ordering::SeqCst);
        assert_eq!(view.readiness().unwrap_err(), "shutting down");
    }
}
