//! The era cycle: every `anchor.era_ms` the node commits what it stored and
//! served since the last era, and a background thread puts each committed
//! era on the Cere chain, in order (docs/ANCHORING.md).
//!
//! Core 0 builds eras. It asks every core (through the mesh, as any request
//! would) for its streams' sealed segments, the shards it holds and its
//! usage, keeps the data leaves no earlier era anchored and the usage added
//! since, and commits them to the era store (`ddc_anchor::era`) with a
//! record signed by the node key. An era with nothing new is skipped.
//!
//! The submitter runs on its own thread with a single-threaded tokio runtime
//! (jsonrpsee), so anchoring never blocks a core. It takes the first
//! committed era without a receipt, submits its record as
//! `System.remark_with_event`, waits for the block and the events, and writes
//! the receipt. Any error (chain down, refused, not included in time) is
//! logged and retried with exponential backoff from `anchor.retry_initial_ms`
//! to `anchor.retry_max_ms`; eras wait, committed on disk, and go out in
//! order when the chain is back.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ddc_anchor::chain::rpc::Rpc;
use ddc_anchor::chain::submit::anchor_remark;
use ddc_anchor::era::{data_key, AnchorProof, EraStore};
use ddc_anchor::merkle::{DataLeaf, DataLeafKind, LeafTree, UsageLeaf};
use ddc_anchor::record::{AnchorFields, AnchorRecord};
use ddc_auth::account::Keypair;
use ddc_auth::usage::{CustomerUsage, NodeUsage, UsageReport};
use ddc_formats::message::{Request, Response};
use ddc_formats::wire::ErrorCode;

use crate::access::now_ms;
use crate::config::AnchorSection;
use crate::dispatch::{error_response, CoreState};
use crate::router::Router;

/// The node's anchoring state, shared by core 0 and the submitter thread.
pub struct Anchoring {
    pub store: Mutex<EraStore>,
    pub settings: AnchorSection,
    pub cluster_id: [u8; 20],
}

impl Anchoring {
    pub fn open(data_dir: &Path, settings: AnchorSection) -> Result<Anchoring, String> {
        let cluster_id = settings.cluster_id_bytes()?;
        let dir = data_dir.join("anchor");
        let store = EraStore::open(&dir).map_err(|e| format!("anchor state: {e}"))?;
        Ok(Anchoring { store: Mutex::new(store), settings, cluster_id })
    }

    fn store(&self) -> std::sync::MutexGuard<'_, EraStore> {
        // A panic while holding the lock leaves the store as it was on disk: keep going.
        self.store.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// When the next era ends (Unix ms): one era after the last one's end, or now + era for the first.
    pub fn next_era_end(&self, now_ms: u64) -> u64 {
        match self.store().next_era().1 {
            Some(last_end) => last_end + self.settings.era_ms,
            None => now_ms + self.settings.era_ms,
        }
    }
}

/// Ask the cores (`None` stream: all of them; else the stream's owner) a question.
async fn ask(state: &CoreState, router: &Router, request: &Request<'_>) -> Response {
    let mut payload = Vec::new();
    ddc_formats::message::encode_request_frame(&mut flatbuffers::FlatBufferBuilder::new(), 0, request, &mut payload);
    let payload = payload.split_off(ddc_formats::frame::FRAME_HEADER_BYTES);
    crate::conn::serve_on_cores(state, router, request, false, &payload).await
}

/// Build and commit the era ending now, if anything is new. Returns the era committed.
pub async fn build_era(state: &CoreState, router: &Router, anchoring: &Arc<Anchoring>) -> Result<Option<u64>, String> {
    let Some(identity) = state.identity.clone() else { return Err("the node has no key".into()) };
    let (anchored, anchored_usage, anchored_acks, (era, start)) = {
        let store = anchoring.store();
        let usage = store.anchored_usage().map_err(|e| e.to_string())?;
        (store.anchored_data(), usage, store.anchored_acks(), store.next_era())
    };
    let end_ms = now_ms();
    let start_ms = start.unwrap_or(end_ms.saturating_sub(anchoring.settings.era_ms)).min(end_ms.saturating_sub(1));

    // Data: sealed segments of every stream, and every shard held.
    let mut data = Vec::new();
    let streams = match ask(state, router, &Request::ListStreams).await {
        Response::ListStreams { streams } => streams,
        other => return Err(format!("list streams: {other:?}")),
    };
    for stream in &streams {
        match ask(state, router, &Request::StreamInfo { stream }).await {
            Response::StreamInfo(info) => {
                for s in info.segments.iter().filter(|s| s.sealed) {
                    let Some(root) = s.root else { continue };
                    data.push(DataLeaf {
                        kind: DataLeafKind::Segment,
                        stream: stream.clone(),
                        base_offset: s.base_offset,
                        next_offset: s.next_offset,
                        index: 0,
                        root,
                    });
                }
            }
            // Gone between the two questions (dropped after coding): nothing to anchor here.
            Response::Error { code: ErrorCode::UnknownStream, .. } => {}
            other => return Err(format!("stream info {stream}: {other:?}")),
        }
    }
    if state.cluster.is_some() {
        match ask(state, router, &Request::ListShards { stream: None, verify: false }).await {
            Response::ListShards { shards } => {
                for entry in shards.iter().filter(|e| e.healthy) {
                    let Ok(h) = ddc_formats::shard::ShardHeader::decode(&entry.header) else { continue };
                    data.push(DataLeaf {
                        kind: DataLeafKind::Shard,
                        stream: h.stream.clone(),
                        base_offset: h.base_offset,
                        next_offset: h.next_offset,
                        index: h.index,
                        root: h.body_hash,
                    });
                }
            }
            other => return Err(format!("list shards: {other:?}")),
        }
    }
    data.retain(|leaf| !anchored.contains(&data_key(leaf)));

    // Usage: what each bucket added since the anchored totals, and acknowledgments not anchored yet.
    let report = match ask(state, router, &Request::Usage { bucket: None }).await {
        Response::Usage { report } => UsageReport::decode(&report).map_err(|e| format!("usage report: {e}"))?,
        other => return Err(format!("usage: {other:?}")),
    };
    let mut usage = Vec::new();
    let mut node = NodeUsage::default();
    for (bucket, total) in &report.buckets {
        let before = anchored_usage.get(bucket).copied().unwrap_or_default();
        // Lower than anchored only after a power loss took the journal's unsynced tail (the
        // anchored era counted it): anchor nothing more for it until the counters catch up.
        let delta = difference(total, &before).unwrap_or_else(|| {
            tracing::warn!(bucket, "usage is below what was anchored (journal tail lost?); no delta this era");
            saturating_difference(total, &before)
        });
        if delta != CustomerUsage::default() {
            node = node.add(&as_node(&delta)).map_err(|e| e.to_string())?;
            usage.push(UsageLeaf::Bucket { bucket: *bucket, usage: delta });
        }
    }
    for ack in &report.acks {
        if !anchored_acks.contains(&(ack.bucket, ack.consumer.0, ack.session_nonce, ack.request_seq)) {
            usage.push(UsageLeaf::Ack(*ack));
        }
    }
    if data.is_empty() && usage.is_empty() {
        return Ok(None);
    }
    usage.push(UsageLeaf::Node { usage: node });
    let data = LeafTree::build(data).map_err(|e| e.to_string())?;
    let usage = LeafTree::build(usage).map_err(|e| e.to_string())?;
    let fields = AnchorFields {
        cluster_id: anchoring.cluster_id,
        era,
        start_ms,
        end_ms,
        data_root: data.root(),
        usage_root: usage.root(),
        data_leaves: data.leaf_count(),
        usage_leaves: usage.leaf_count(),
        totals: node,
    };
    fields.check().map_err(|e| e.to_string())?;
    let record = AnchorRecord::sign(&identity, fields);
    // Writing and syncing the era's files is blocking I/O: off the reactor, so the core keeps serving.
    let anchoring = anchoring.clone();
    glommio::executor()
        .spawn_blocking(move || anchoring.store().commit(era, record, data, usage))
        .await
        .map_err(|e| e.to_string())?;
    Ok(Some(era))
}

fn difference(a: &CustomerUsage, b: &CustomerUsage) -> Option<CustomerUsage> {
    Some(CustomerUsage {
        transferred_bytes: a.transferred_bytes.checked_sub(b.transferred_bytes)?,
        stored_bytes: a.stored_bytes.checked_sub(b.stored_bytes)?,
        number_of_puts: a.number_of_puts.checked_sub(b.number_of_puts)?,
        number_of_gets: a.number_of_gets.checked_sub(b.number_of_gets)?,
    })
}

fn saturating_difference(a: &CustomerUsage, b: &CustomerUsage) -> CustomerUsage {
    CustomerUsage {
        transferred_bytes: a.transferred_bytes.saturating_sub(b.transferred_bytes),
        stored_bytes: a.stored_bytes.saturating_sub(b.stored_bytes),
        number_of_puts: a.number_of_puts.saturating_sub(b.number_of_puts),
        number_of_gets: a.number_of_gets.saturating_sub(b.number_of_gets),
    }
}

fn as_node(u: &CustomerUsage) -> NodeUsage {
    NodeUsage {
        transferred_bytes: u.transferred_bytes,
        stored_bytes: u.stored_bytes,
        number_of_puts: u.number_of_puts,
        number_of_gets: u.number_of_gets,
    }
}

/// `Proof`, served by core 0.
pub fn serve_proof(state: &CoreState, stream: Option<&str>, offset: u64, bucket: u64) -> Response {
    let Some(anchoring) = &state.anchoring else {
        return error_response(ErrorCode::BadRequest, "this node does not anchor (anchor.chain_url is not set)");
    };
    let store = anchoring.store();
    let proof: Option<AnchorProof> = match stream {
        Some(s) => store.data_proof(s, offset),
        None => store.usage_proof(bucket),
    };
    match proof {
        Some(p) => Response::Proof { proof: p.encode() },
        None => {
            let what = match stream {
                Some(s) => format!("offset {offset} of {s:?} is not in a sealed segment of an anchored era yet"),
                None => format!("bucket {bucket} has no anchored usage yet"),
            };
            error_response(ErrorCode::NotFound, what)
        }
    }
}

/// Start the submitter thread. It stops when `stop` is set.
pub fn spawn_submitter(
    anchoring: Arc<Anchoring>,
    key: Keypair,
    stop: Arc<AtomicBool>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new().name("anchor".into()).spawn(move || {
        let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "anchor: cannot start its runtime; nothing will be anchored");
                return;
            }
        };
        runtime.block_on(submit_loop(&anchoring, &key, &stop));
    })
}

async fn submit_loop(anchoring: &Anchoring, key: &Keypair, stop: &AtomicBool) {
    let s = &anchoring.settings;
    let Some(url) = s.chain_url.clone() else { return };
    let timeout = Duration::from_millis(s.submit_timeout_ms);
    let mut backoff = Duration::from_millis(s.retry_initial_ms);
    let mut rpc: Option<(Rpc, ddc_anchor::chain::metadata::Metadata)> = None;
    let mut failures: BTreeMap<u64, u32> = BTreeMap::new();
    while !stop.load(Ordering::Relaxed) {
        let pending = anchoring.store().first_pending().map(|(era, e)| (era, e.record.encode()));
        let Some((era, record)) = pending else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        let attempt = async {
            if rpc.is_none() {
                let client = Rpc::connect(&url, timeout).await?;
                let metadata = client.metadata().await?;
                rpc = Some((client, metadata));
            }
            let (client, metadata) = rpc.as_ref().expect("connected above");
            anchor_remark(client, metadata, key, &record, timeout).await
        };
        match attempt.await {
            Ok(receipt) => {
                let written = anchoring.store().set_receipt(era, receipt);
                if let Err(e) = written {
                    tracing::error!(era, error = %e, "anchor: receipt not written; will anchor again");
                    tokio::time::sleep(backoff).await;
                    continue;
                }
                tracing::info!(era, block = receipt.block_number, index = receipt.extrinsic_index, "era anchored");
                failures.remove(&era);
                backoff = Duration::from_millis(s.retry_initial_ms);
            }
            Err(e) => {
                let n = failures.entry(era).or_default();
                *n += 1;
                tracing::warn!(era, attempt = *n, error = %e, retry_in_ms = backoff.as_millis() as u64, "anchor failed; retrying");
                // A connection error may have left the client unusable; the metadata may be stale.
                rpc = None;
                let mut slept = Duration::ZERO;
                while slept < backoff && !stop.load(Ordering::Relaxed) {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    slept += Duration::from_millis(100);
                }
                backoff = (backoff * 2).min(Duration::from_millis(s.retry_max_ms));
            }
        }
    }
}
