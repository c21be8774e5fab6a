//! Serving one request on the core that owns its stream.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use ddc_engine::storage::dma::DmaStorage;
use ddc_engine::{Engine, EngineError};
use ddc_formats::message::{Request, Response};
use ddc_formats::wire::ErrorCode;

use crate::cluster::{replication, shards, ClusterCore};

/// What one core serves with.
pub struct CoreState {
    pub engine: Rc<Engine<DmaStorage>>,
    pub frame_bytes_max: u32,
    pub fetch_wait_max_ms: u32,
    /// See `server.frame_read_timeout_ms`.
    pub frame_read_timeout: Duration,
    /// Payload bytes this core may hold; see `server.core_payload_bytes_max`.
    pub payload_budget: Rc<glommio::sync::Semaphore>,
    /// This core's open connections and response memory (`server.connections_max`,
    /// `server.core_response_bytes_max`, `server.write_stall_timeout_ms`).
    pub connections: Rc<crate::connections::Connections>,
    /// Cluster mode; None when the node runs alone.
    pub cluster: Option<Rc<ClusterCore>>,
    /// This node's key, for connection handshakes (docs/SECURITY.md).
    pub identity: Option<Rc<ddc_auth::account::Keypair>>,
    /// `auth.required`: connections must authenticate; node-to-node requests must come from members.
    pub auth_required: bool,
    /// The bucket registry (`auth.buckets_file`), reloaded when it changes.
    pub buckets: crate::buckets::Buckets,
    /// This core's usage journals.
    pub usage: RefCell<crate::usage::CoreUsage>,
    /// Core 0 of a node that anchors: the era store (docs/ANCHORING.md).
    pub anchoring: Option<std::sync::Arc<crate::anchoring::Anchoring>>,
    /// This core's event counters, read by the admin endpoint.
    pub counters: std::sync::Arc<crate::admin::CoreCounters>,
}

pub fn error_response(code: ErrorCode, message: impl Into<String>) -> Response {
    Response::Error { code, message: message.into() }
}

pub fn engine_error(e: &EngineError) -> Response {
    let code = match e {
        EngineError::InvalidStreamName(_) => ErrorCode::InvalidStreamName,
        EngineError::UnknownStream(_) => ErrorCode::UnknownStream,
        EngineError::InvalidRecords(_) => ErrorCode::InvalidRecords,
        EngineError::OffsetOutOfRange { .. } => ErrorCode::OffsetOutOfRange,
        EngineError::Corrupted { .. } => ErrorCode::Corrupted,
        EngineError::WritesFenced { storage_full: true, .. } | EngineError::StorageFull(_) => ErrorCode::StorageFull,
        EngineError::WritesFenced { .. } => ErrorCode::WritesFenced,
        EngineError::ShuttingDown => ErrorCode::ShuttingDown,
        EngineError::OffsetMismatch { .. } => ErrorCode::OffsetMismatch,
        _ => ErrorCode::Internal,
    };
    error_response(code, e.to_string())
}

/// Serve a request whose stream this core owns (or that has no stream).
/// `forwarded`: another node passed it on (see [`crate::cluster::route`]).
pub async fn serve_local(state: &CoreState, request: &Request<'_>, forwarded: bool) -> Response {
    if let Some(cluster) = &state.cluster {
        if let Some(r) = serve_cluster(state, cluster, request, forwarded).await {
            return r;
        }
    }
    match serve(state, request).await {
        Ok(r) => r,
        Err(e) => engine_error(&e),
    }
}

/// The requests that cluster mode serves differently. None: serve as a single node.
async fn serve_cluster(
    state: &CoreState,
    cluster: &Rc<ClusterCore>,
    request: &Request<'_>,
    forwarded: bool,
) -> Option<Response> {
    Some(match *request {
        Request::Produce { stream, records, record_count, ack } => {
            if !cluster.leads(stream) {
                return Some(not_leader(cluster, stream));
            }
            replication::produce(state, cluster, stream, records, record_count, ack).await
        }
        Request::CreateStream { stream } | Request::Seal { stream } if !cluster.leads(stream) => {
            not_leader(cluster, stream)
        }
        Request::Fetch { stream, .. } | Request::StreamInfo { stream } if leader_is_behind(cluster, stream) => {
            error_response(
                ErrorCode::Unavailable,
                format!("this node leads stream {stream:?} but holds less of it than its followers; read from them"),
            )
        }
        Request::Fetch { stream, offset, .. } => {
            let local = serve(state, request).await;
            let local_hw = state.engine.stream(stream).map(|s| s.high_watermark()).unwrap_or(0);
            match local {
                // This copy lags (its data directory was replaced, or it is catching up) but
                // the leader said the offset is coded: rebuild it from shards.
                Ok(Response::Fetch { ref batches, high_watermark, .. })
                    if batches.is_empty()
                        && offset >= high_watermark
                        && cluster.coded_hint.borrow().get(stream).is_some_and(|&coded| offset < coded) =>
                {
                    shards::fetch_from_shards(cluster, stream, offset, fetch_max_bytes(state, request), local_hw).await
                }
                Ok(r) => r,
                // A replica asked by another node that has no copy says so; that node
                // tries the next replica, and rebuilds from shards only if none has it.
                Err(e @ EngineError::UnknownStream(_)) if forwarded => engine_error(&e),
                // Not (or no longer) here: rebuild from shards.
                Err(EngineError::UnknownStream(_)) => {
                    shards::fetch_from_shards(cluster, stream, offset, fetch_max_bytes(state, request), local_hw).await
                }
                Err(EngineError::OffsetOutOfRange { log_start, .. }) if offset < log_start => {
                    shards::fetch_from_shards(cluster, stream, offset, fetch_max_bytes(state, request), local_hw).await
                }
                Err(e) => engine_error(&e),
            }
        }
        Request::Replicate { stream, base_offset, batches, leader, coded_offset } => {
            replication::apply(state, cluster, stream, base_offset, batches, leader, coded_offset).await
        }
        Request::PutShard { .. } | Request::GetShard { .. } | Request::ListShards { .. } | Request::Repair { .. } => {
            return shards::serve(state, cluster, request).await
        }
        _ => return None,
    })
}

fn leader_is_behind(cluster: &ClusterCore, stream: &str) -> bool {
    cluster.replicators.borrow().get(stream).is_some_and(|r| r.is_behind())
}

fn fetch_max_bytes(state: &CoreState, request: &Request<'_>) -> u32 {
    match request {
        Request::Fetch { max_bytes, .. } => fetch_limit(state, *max_bytes),
        _ => 1,
    }
}

/// A fetch's byte limit, leaving room for the envelope inside the largest frame.
fn fetch_limit(state: &CoreState, max_bytes: u32) -> u32 {
    max_bytes.min(state.frame_bytes_max.saturating_sub(4096)).max(1)
}

fn not_leader(cluster: &ClusterCore, stream: &str) -> Response {
    let leader = cluster.membership.leader(stream);
    let address = cluster.membership.member(&leader).map(|m| m.address.to_string()).unwrap_or_default();
    error_response(
        ErrorCode::Unavailable,
        format!("this node does not lead stream {stream:?}; its leader is {} at {address}", leader.short()),
    )
}

async fn serve(state: &CoreState, request: &Request<'_>) -> Result<Response, EngineError> {
    let engine = &state.engine;
    Ok(match *request {
        Request::Produce { stream, records, record_count, ack } => {
            // Refuse bad records before the stream is created: a refused request has no side effect.
            ddc_formats::batch::validate_records(records, record_count)
                .map_err(|e| EngineError::InvalidRecords(e.to_string()))?;
            let (stream, _) = engine.stream_or_create(stream)?;
            let base_offset = stream.append(records, record_count, ack).await?;
            Response::Produce { base_offset, record_count }
        }
        Request::Fetch { stream, offset, max_bytes, max_wait_ms } => {
            let stream = engine.stream(stream)?;
            let max_bytes = fetch_limit(state, max_bytes);
            let mut out = stream.read(offset, max_bytes).await?;
            if out.batches.is_empty() && max_wait_ms > 0 {
                let wait = Duration::from_millis(u64::from(max_wait_ms.min(state.fetch_wait_max_ms)));
                if stream.wait_for_data(offset, wait).await {
                    out = stream.read(offset, max_bytes).await?;
                } else {
                    out.high_watermark = stream.high_watermark();
                }
            }
            stream.stats().fetched(&out.batches);
            Response::Fetch {
                batches: out.batches,
                high_watermark: out.high_watermark,
                log_start_offset: out.log_start_offset,
            }
        }
        Request::CreateStream { stream } => Response::CreateStream { created: engine.create_stream(stream).await? },
        Request::StreamInfo { stream } => {
            let stream = engine.stream(stream)?;
            Response::StreamInfo(stream.info(engine.core() as u16))
        }
        Request::ListStreams => Response::ListStreams { streams: engine.list() },
        Request::Ping { nonce } => Response::Ping { nonce, server_version: env!("CARGO_PKG_VERSION").to_owned() },
        Request::Seal { stream } => {
            let stream = engine.stream(stream)?;
            if let Some(reason) = stream.fenced_reason() {
                return Err(EngineError::WritesFenced { stream: stream.name.clone(), reason, storage_full: false });
            }
            let info = stream.info(engine.core() as u16);
            let active = info.segments.last().filter(|s| !s.sealed && stream.next_offset() > s.base_offset);
            let sealed_base_offset = active.map(|s| s.base_offset);
            stream.roll_now();
            Response::Seal { sealed_base_offset }
        }
        Request::Usage { bucket } => crate::usage::core_report(state, bucket),
        Request::Proof { stream, offset, bucket } => crate::anchoring::serve_proof(state, stream, offset, bucket),
        Request::PresentGrants { .. } | Request::UsageAck { .. } => {
            return Ok(error_response(ErrorCode::BadRequest, "grants and usage acks belong to a connection"))
        }
        Request::Replicate { .. }
        | Request::PutShard { .. }
        | Request::GetShard { .. }
        | Request::ListShards { .. }
        | Request::Repair { .. } => {
            return Ok(error_response(ErrorCode::BadRequest, "this node runs alone (no cluster.membership_file)"))
        }
    })
}
