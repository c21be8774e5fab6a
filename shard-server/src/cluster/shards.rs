//! Sealed segments as shards: coding on the leader, the holders' shard store,
//! reads rebuilt from shards, scrubbing and repair.
//!
//! A shard file is `<data>/shards/<stream>/<base:020>.<index:03>.shard`: the
//! 512-byte header of docs/FORMATS.md "Shards" then the body, written with
//! direct I/O and fsync'd before the holder answers. A shard is replaced by
//! removing the old file and writing a new one; a crash in between leaves a
//! missing or damaged shard, which every reader detects (BLAKE3 of the body)
//! and repair rebuilds.
//!
//! The leader records each coded segment's placement durably in
//! `<data>/placement/<stream>/<base:020>.place` once every holder confirmed
//! its shard; only then may followers drop their copies.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Duration;

use ddc_cluster::erasure::Code;
use ddc_cluster::membership::NodeId;
use ddc_cluster::placement::PlacementRecord;
use ddc_engine::storage::dma::DmaStorage;
use ddc_engine::storage::{IoBuf, Storage, StorageFile};
use ddc_engine::{owner_core, Stream};
use ddc_formats::batch::{BatchHeader, BATCH_HEADER_BYTES};
use ddc_formats::message::{RepairReport, Request, Response, ShardEntry};
use ddc_formats::segment::SEGMENT_HEADER_BYTES;
use ddc_formats::shard::{ShardHeader, SHARD_HEADER_BYTES};
use ddc_formats::wire::ErrorCode;

use super::ClusterCore;
use crate::dispatch::{error_response, CoreState};

const ALIGN: usize = 4096;

type ShardKey = (String, u64, u8);

/// The shards this core holds (of the streams it owns).
pub struct ShardStore {
    dir: PathBuf,
    core: usize,
    cores: usize,
    storage: DmaStorage,
    /// Result of the last check of each shard: None when healthy, else why not.
    damage: RefCell<HashMap<ShardKey, String>>,
}

fn shard_file_name(base: u64, index: u8) -> String {
    format!("{base:020}.{index:03}.shard")
}

fn parse_shard_file_name(name: &str) -> Option<(u64, u8)> {
    let rest = name.strip_suffix(".shard")?;
    let (base, index) = rest.split_once('.')?;
    if base.len() != 20 || index.len() != 3 {
        return None;
    }
    Some((base.parse().ok()?, index.parse().ok()?))
}

impl ShardStore {
    pub fn new(dir: PathBuf, core: usize, cores: usize) -> ShardStore {
        ShardStore { dir, core, cores, storage: DmaStorage::new(), damage: RefCell::new(HashMap::new()) }
    }

    pub async fn load(&self) -> anyhow::Result<()> {
        self.storage.create_dir_all(&self.dir).await?;
        Ok(())
    }

    fn owns(&self, stream: &str) -> bool {
        owner_core(stream, self.cores) == self.core
    }

    fn path(&self, stream: &str, base: u64, index: u8) -> PathBuf {
        self.dir.join(stream).join(shard_file_name(base, index))
    }

    /// Store a shard durably, replacing one with the same identity.
    pub async fn put(&self, header_bytes: &[u8], body: &[u8]) -> Result<(), Response> {
        let header = ShardHeader::decode(header_bytes)
            .map_err(|e| error_response(ErrorCode::BadRequest, format!("shard header: {e}")))?;
        header
            .verify_body(body)
            .map_err(|e| error_response(ErrorCode::Corrupted, format!("shard body does not match its header: {e}")))?;
        let io = |what: &str, e: std::io::Error| {
            let code =
                if e.raw_os_error() == Some(libc::ENOSPC) { ErrorCode::StorageFull } else { ErrorCode::Internal };
            error_response(code, format!("{what}: {e}"))
        };
        let dir = self.dir.join(&header.stream);
        self.storage.create_dir_all(&dir).await.map_err(|e| io("create shard directory", e))?;
        let path = self.path(&header.stream, header.base_offset, header.index);
        match self.storage.remove_file(&path).await {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io("remove old shard", e)),
        }
        let file = self.storage.create_file(&path).await.map_err(|e| io("create shard", e))?;
        let len = SHARD_HEADER_BYTES + body.len();
        let mut buf = self.storage.alloc_buf(len.div_ceil(ALIGN) * ALIGN);
        {
            let out = buf.as_mut_slice();
            out[..SHARD_HEADER_BYTES].copy_from_slice(&header.encode());
            out[SHARD_HEADER_BYTES..len].copy_from_slice(body);
            out[len..].fill(0);
        }
        file.write_at(Rc::new(buf), 0).await.map_err(|e| io("write shard", e))?;
        file.truncate(len as u64).await.map_err(|e| io("truncate shard", e))?;
        file.sync_data().await.map_err(|e| io("fsync shard", e))?;
        self.storage.sync_dir(&dir).await.map_err(|e| io("fsync shard directory", e))?;
        self.damage.borrow_mut().remove(&(header.stream.clone(), header.base_offset, header.index));
        Ok(())
    }

    async fn read_header(&self, path: &Path) -> Result<(ShardHeader, Vec<u8>), String> {
        let file = self.storage.open_file(path).await.map_err(|e| e.to_string())?;
        let bytes = file.read_at(0, SHARD_HEADER_BYTES).await.map_err(|e| e.to_string())?;
        let header = ShardHeader::decode(&bytes).map_err(|e| format!("header: {e}"))?;
        Ok((header, bytes))
    }

    /// A shard's header bytes and body, verified. A damaged shard is remembered as such.
    pub async fn get(&self, stream: &str, base: u64, index: u8) -> Result<(Vec<u8>, Vec<u8>), Response> {
        if let Err(e) = ddc_formats::name::validate_stream_name(stream) {
            return Err(error_response(ErrorCode::InvalidStreamName, e.to_string()));
        }
        let path = self.path(stream, base, index);
        let result = async {
            let file = self.storage.open_file(&path).await.map_err(|e| (ErrorCode::NotFound, e.to_string()))?;
            let size = file.size().await.map_err(|e| (ErrorCode::Internal, e.to_string()))?;
            let bytes = file.read_at(0, size as usize).await.map_err(|e| (ErrorCode::Internal, e.to_string()))?;
            let header = ShardHeader::decode(&bytes).map_err(|e| (ErrorCode::Corrupted, format!("header: {e}")))?;
            // A valid shard of another segment or index in this file (files swapped or copied
            // over each other) would pass every check of its own: its header must name this file.
            if header.stream != stream || header.base_offset != base || header.index != index {
                return Err((
                    ErrorCode::Corrupted,
                    format!(
                        "the file holds shard {} of {:?} segment {}, not this one",
                        header.index, header.stream, header.base_offset
                    ),
                ));
            }
            let body = &bytes[SHARD_HEADER_BYTES.min(bytes.len())..];
            header.verify_body(body).map_err(|e| (ErrorCode::Corrupted, e.to_string()))?;
            Ok((bytes[..SHARD_HEADER_BYTES].to_vec(), body.to_vec()))
        }
        .await;
        result.map_err(|(code, reason)| {
            if code == ErrorCode::Corrupted {
                self.damage.borrow_mut().insert((stream.to_owned(), base, index), reason.clone());
            }
            error_response(code, format!("shard {index} of {stream:?} segment {base}: {reason}"))
        })
    }

    async fn streams(&self, only: Option<&str>) -> Vec<String> {
        let mut names = match only {
            Some(s) => vec![s.to_owned()],
            None => self.storage.list_dir(&self.dir).await.unwrap_or_default(),
        };
        names.retain(|s| ddc_formats::name::validate_stream_name(s).is_ok() && self.owns(s));
        names
    }

    /// The shards held, with the result of their last check (or a fresh one with `verify`).
    pub async fn list(&self, only: Option<&str>, verify: bool) -> Vec<ShardEntry> {
        let mut out = Vec::new();
        for stream in self.streams(only).await {
            let dir = self.dir.join(&stream);
            let mut files = self.storage.list_dir(&dir).await.unwrap_or_default();
            files.sort();
            for name in files {
                let Some((base, index)) = parse_shard_file_name(&name) else { continue };
                if verify {
                    let _ = self.get(&stream, base, index).await;
                    glommio::yield_if_needed().await;
                }
                match self.read_header(&dir.join(&name)).await {
                    Ok((_, header)) => {
                        let damage = self.damage.borrow().get(&(stream.clone(), base, index)).cloned();
                        out.push(ShardEntry { header, healthy: damage.is_none(), detail: damage.unwrap_or_default() });
                    }
                    Err(reason) => {
                        tracing::warn!(stream, base, index, %reason, "unreadable shard header");
                    }
                }
            }
        }
        out
    }

    /// Re-read every local shard at no more than `bytes_per_s`, recording damage.
    /// Returns how many shards it found damaged.
    pub async fn scrub(&self, bytes_per_s: u64) -> u64 {
        let mut damaged = 0;
        for entry in self.list(None, false).await {
            let Ok(h) = ShardHeader::decode(&entry.header) else { continue };
            match self.get(&h.stream, h.base_offset, h.index).await {
                Ok(_) => {
                    self.damage.borrow_mut().remove(&(h.stream.clone(), h.base_offset, h.index));
                }
                Err(Response::Error { message, .. }) => {
                    damaged += 1;
                    tracing::warn!(stream = %h.stream, base = h.base_offset, index = h.index, %message, "scrub found a damaged shard")
                }
                Err(_) => {}
            }
            let pause = Duration::from_secs_f64(h.body_bytes as f64 / bytes_per_s.max(1) as f64);
            glommio::timer::sleep(pause).await;
        }
        damaged
    }

    /// How many shard files this core holds (a directory listing; no shard is read).
    pub async fn count(&self) -> u64 {
        let mut held = 0;
        for stream in self.streams(None).await {
            let files = self.storage.list_dir(&self.dir.join(&stream)).await.unwrap_or_default();
            held += files.iter().filter(|name| parse_shard_file_name(name).is_some()).count() as u64;
        }
        held
    }

    /// Shards whose last check failed: (stream, base offset, index, why).
    pub fn damaged(&self) -> Vec<(String, u64, u8, String)> {
        let mut out: Vec<_> = self
            .damage
            .borrow()
            .iter()
            .map(|((s, base, index), why)| (s.clone(), *base, *index, why.clone()))
            .collect();
        out.sort();
        out
    }
}

fn placement_path(dir: &Path, stream: &str, base: u64) -> PathBuf {
    dir.join(stream).join(format!("{base:020}.place"))
}

/// The placement records of the streams this core owns.
pub async fn load_placements(
    dir: &Path,
    core: usize,
    cores: usize,
) -> anyhow::Result<HashMap<String, BTreeMap<u64, PlacementRecord>>> {
    let storage = DmaStorage::new();
    storage.create_dir_all(dir).await?;
    let mut out: HashMap<String, BTreeMap<u64, PlacementRecord>> = HashMap::new();
    for stream in storage.list_dir(dir).await? {
        if ddc_formats::name::validate_stream_name(&stream).is_err() || owner_core(&stream, cores) != core {
            continue;
        }
        for name in storage.list_dir(&dir.join(&stream)).await? {
            if !name.ends_with(".place") {
                continue;
            }
            let path = dir.join(&stream).join(&name);
            let Some(bytes) = storage.read_small(&path).await? else { continue };
            match PlacementRecord::decode(&bytes) {
                Ok(r) => {
                    out.entry(stream.clone()).or_default().insert(r.base_offset, r);
                }
                Err(e) => tracing::warn!(path = %path.display(), error = %e,
                    "ignoring a damaged placement record; the segment will be coded again"),
            }
        }
    }
    Ok(out)
}

/// Offsets below this are coded with every shard confirmed: the end of the
/// longest run of coded segments from the start of the leader's log.
pub fn coded_offset(cluster: &ClusterCore, stream: &Stream<DmaStorage>) -> u64 {
    let placed = cluster.placed.borrow();
    let Some(records) = placed.get(&stream.name) else { return 0 };
    let mut end = 0;
    for seg in stream.info(0).segments {
        if !seg.sealed {
            break;
        }
        match records.get(&seg.base_offset) {
            Some(r) if r.next_offset == seg.next_offset => end = r.next_offset,
            _ => break,
        }
    }
    end
}

/// Store one shard on `holder` (this node or a peer).
async fn place_shard(
    state: &CoreState,
    cluster: &ClusterCore,
    holder: NodeId,
    header: &[u8],
    body: &[u8],
) -> Result<(), String> {
    if holder == cluster.me {
        let _ = state;
        return cluster.store.put(header, body).await.map_err(|r| format!("{r:?}"));
    }
    let peer = cluster.peers.get(&holder).ok_or_else(|| format!("{} is not a member", holder.short()))?;
    match peer.call(&Request::PutShard { header, body }, false, cluster.peer_timeout()).await {
        Ok(Response::PutShard) => Ok(()),
        Ok(Response::Error { code, message }) => Err(format!("{}: {code:?}: {message}", holder.short())),
        Ok(other) => Err(format!("{}: unexpected answer {other:?}", holder.short())),
        Err(e) => Err(e.to_string()),
    }
}

/// Code every sealed, not yet coded segment of the streams this core leads.
pub async fn code_sealed_segments(state: &CoreState, cluster: &ClusterCore) {
    for name in state.engine.list() {
        if !cluster.leads(&name) || cluster.closing.get() {
            continue;
        }
        let Ok(stream) = state.engine.stream(&name) else { continue };
        for seg in stream.info(0).segments {
            if !seg.sealed || seg.next_offset == seg.base_offset {
                continue;
            }
            if cluster.placed.borrow().get(&name).is_some_and(|p| p.contains_key(&seg.base_offset)) {
                continue;
            }
            match code_segment(state, cluster, &stream, seg.base_offset).await {
                Ok(()) => tracing::info!(stream = %name, base = seg.base_offset, "segment erasure-coded and placed"),
                Err(e) => {
                    tracing::warn!(stream = %name, base = seg.base_offset, error = %e, "coding a sealed segment failed; will retry");
                    break; // keep order: later segments wait for this one
                }
            }
        }
    }
}

async fn code_segment(
    state: &CoreState,
    cluster: &ClusterCore,
    stream: &Stream<DmaStorage>,
    base: u64,
) -> Result<(), String> {
    let (manifest, bytes) = stream.read_sealed(base).await.map_err(|e| e.to_string())?;
    let (name, next, root) = (stream.name.clone(), manifest.next_offset, manifest.root);
    // Coding is CPU work of tens of milliseconds per segment: off the reactor.
    let params = (cluster.code.k(), cluster.code.n(), cluster.code.stripe_bytes());
    let shards = off_reactor(params, move |code| {
        code.encode_with_hashes(&name, base, next, &bytes, root).map_err(|e| e.to_string())
    })
    .await?;
    let holders = cluster.membership.shard_holders(&stream.name, base);
    let puts = shards.iter().zip(&holders).map(|((header, body), holder)| async move {
        let header = header.encode();
        place_shard(state, cluster, *holder, &header, body).await
    });
    let results = futures::future::join_all(puts).await;
    let failed: Vec<String> = results.into_iter().filter_map(Result::err).collect();
    if !failed.is_empty() {
        return Err(format!("{} of {} shards not stored: {}", failed.len(), holders.len(), failed.join("; ")));
    }
    let record = PlacementRecord {
        base_offset: base,
        next_offset: manifest.next_offset,
        segment_bytes: manifest.data_len,
        segment_root: manifest.root,
        k: cluster.code.k(),
        holders,
    };
    let storage = DmaStorage::new();
    let dir = cluster.placement_dir.join(&stream.name);
    storage.create_dir_all(&dir).await.map_err(|e| e.to_string())?;
    storage
        .write_small_durably(&placement_path(&cluster.placement_dir, &stream.name, base), &record.encode())
        .await
        .map_err(|e| e.to_string())?;
    cluster.placed.borrow_mut().entry(stream.name.clone()).or_default().insert(base, record);
    Ok(())
}

/// Run coding work on glommio's blocking thread pool, so the core keeps
/// serving while a segment is encoded or rebuilt.
async fn off_reactor<R: Send + 'static>(
    (k, n, stripe): (u8, u8, u32),
    work: impl FnOnce(&Code) -> Result<R, String> + Send + 'static,
) -> Result<R, String> {
    glommio::executor()
        .spawn_blocking(move || {
            let code = Code::new(k, n, stripe).map_err(|e| e.to_string())?;
            work(&code)
        })
        .await
}

/// A segment rebuilt from shards, kept for the reads that follow.
pub struct DecodedSegment {
    pub stream: String,
    pub base_offset: u64,
    pub next_offset: u64,
    pub bytes: Vec<u8>,
}

/// Who holds which shard of one segment, from every reachable node's listing.
struct SegmentShards {
    header: ShardHeader,
    /// (holder, index, healthy as the holder last checked)
    holders: Vec<(NodeId, u8, bool)>,
}

/// List the shards of `stream` on every reachable node (this one included).
/// Nodes that failed or timed out within the last peer timeout are not asked
/// (their shards count as unreachable): a partitioned or very slow holder
/// costs one timeout, not one per read. But when the others cannot supply k
/// shards of some segment, the suspects are asked after all: a node whose own
/// network was down suspects every peer, and must not refuse reads once its
/// network is back just because its suspicions have not expired yet.
async fn directory(cluster: &ClusterCore, stream: &str, verify: bool) -> (BTreeMap<u64, SegmentShards>, Vec<String>) {
    let mut listings: Vec<(NodeId, Vec<ShardEntry>)> =
        vec![(cluster.me, cluster.store.list(Some(stream), verify).await)];
    let mut unreachable = Vec::new();
    let (suspects, trusted): (Vec<NodeId>, Vec<NodeId>) = cluster
        .membership
        .nodes
        .iter()
        .map(|m| m.id)
        .filter(|id| *id != cluster.me)
        .partition(|id| cluster.suspect(id));
    list_shards_on(cluster, &trusted, stream, verify, &mut listings, &mut unreachable).await;
    let mut out = group_listings(&listings, stream);
    if !suspects.is_empty() {
        let short = out.values().any(|seg| distinct_indices(seg) < usize::from(seg.header.k));
        if short {
            list_shards_on(cluster, &suspects, stream, verify, &mut listings, &mut unreachable).await;
            out = group_listings(&listings, stream);
        } else {
            for id in &suspects {
                unreachable.push(format!("{}: failed or timed out recently, not asked", id.short()));
            }
        }
    }
    (out, unreachable)
}

/// Ask `nodes` for their shards of `stream`; add what they list to `listings`
/// and why the others did not answer to `unreachable`.
async fn list_shards_on(
    cluster: &ClusterCore,
    nodes: &[NodeId],
    stream: &str,
    verify: bool,
    listings: &mut Vec<(NodeId, Vec<ShardEntry>)>,
    unreachable: &mut Vec<String>,
) {
    let calls = nodes.iter().filter_map(|id| cluster.peers.get(id)).map(|peer| async move {
        let r = peer.call(&Request::ListShards { stream: Some(stream), verify }, false, cluster.peer_timeout()).await;
        (peer.id, r)
    });
    for (id, result) in futures::future::join_all(calls).await {
        match result {
            Ok(Response::ListShards { shards }) => listings.push((id, shards)),
            Ok(other) => unreachable.push(format!("{}: {other:?}", id.short())),
            Err(e) => unreachable.push(e.to_string()),
        }
    }
}

/// How many different shards of a segment its holders offer.
fn distinct_indices(seg: &SegmentShards) -> usize {
    seg.holders.iter().map(|(_, index, _)| *index).collect::<std::collections::BTreeSet<_>>().len()
}

/// Group listings by segment and root; a segment's root is the one most
/// holders report (a damaged or lying header cannot steer the rebuild).
fn group_listings(listings: &[(NodeId, Vec<ShardEntry>)], stream: &str) -> BTreeMap<u64, SegmentShards> {
    let mut groups: BTreeMap<(u64, [u8; 32]), SegmentShards> = BTreeMap::new();
    for (id, entries) in listings {
        for e in entries {
            let Ok(h) = ShardHeader::decode(&e.header) else { continue };
            if h.stream != stream {
                continue;
            }
            groups
                .entry((h.base_offset, h.segment_root))
                .or_insert_with(|| SegmentShards { header: h.clone(), holders: Vec::new() })
                .holders
                .push((*id, h.index, e.healthy));
        }
    }
    let mut out: BTreeMap<u64, SegmentShards> = BTreeMap::new();
    for ((base, _), group) in groups {
        match out.get(&base) {
            Some(best) if best.holders.len() >= group.holders.len() => {}
            _ => {
                out.insert(base, group);
            }
        }
    }
    out
}

/// Fetch shard `index` of the segment `base` with root `root` from `holder`
/// and check it is that shard, intact. A holder may answer with another
/// shard (a damaged store, or a lying node): a shard whose header names
/// another segment, index or root is refused here, so it never takes the place
/// of one of the `k` shards a rebuild needs.
async fn fetch_shard(
    cluster: &ClusterCore,
    holder: NodeId,
    stream: &str,
    base: u64,
    index: u8,
    root: &[u8; 32],
) -> Result<(ShardHeader, Vec<u8>), String> {
    let (header, body) = if holder == cluster.me {
        cluster.store.get(stream, base, index).await.map_err(|r| format!("{r:?}"))?
    } else {
        let peer = cluster.peers.get(&holder).ok_or("not a member")?;
        match peer.call(&Request::GetShard { stream, base_offset: base, index }, false, cluster.peer_timeout()).await {
            Ok(Response::GetShard { header, body }) => (header, body),
            Ok(other) => return Err(format!("{}: {other:?}", holder.short())),
            Err(e) => return Err(e.to_string()),
        }
    };
    let header = ShardHeader::decode(&header).map_err(|e| e.to_string())?;
    if header.stream != stream || header.base_offset != base || header.index != index || &header.segment_root != root {
        return Err(format!(
            "asked {} for shard {index} of {stream:?} segment {base}, got shard {} of {:?} segment {} \
             (root {}); not used",
            holder.short(),
            header.index,
            header.stream,
            header.base_offset,
            blake3::Hash::from_bytes(header.segment_root).to_hex()
        ));
    }
    header.verify_body(&body).map_err(|e| format!("shard {index} from {}: {e}", holder.short()))?;
    Ok((header, body))
}

/// Gather `k` verified shards of a segment (data shards first) and rebuild it.
async fn rebuild_segment(cluster: &ClusterCore, seg: &SegmentShards) -> Result<Vec<u8>, String> {
    let k = usize::from(seg.header.k);
    let mut candidates = seg.holders.clone();
    candidates.sort_by_key(|(_, index, healthy)| (!healthy, *index));
    let mut got: Vec<(ShardHeader, Vec<u8>)> = Vec::new();
    let mut errors = Vec::new();
    let mut at = 0;
    while got.len() < k && at < candidates.len() {
        let want = k - got.len();
        let batch: Vec<_> = candidates[at..]
            .iter()
            .filter(|(_, i, _)| !got.iter().any(|(h, _)| h.index == *i))
            .take(want)
            .cloned()
            .collect();
        if batch.is_empty() {
            break;
        }
        at += batch.len();
        let fetched = futures::future::join_all(batch.iter().map(|(holder, index, _)| {
            fetch_shard(cluster, *holder, &seg.header.stream, seg.header.base_offset, *index, &seg.header.segment_root)
        }))
        .await;
        for r in fetched {
            match r {
                Ok((h, body)) if !got.iter().any(|(g, _)| g.index == h.index) => got.push((h, body)),
                Ok(_) => {}
                Err(e) => errors.push(e),
            }
        }
    }
    if got.len() < k {
        return Err(format!(
            "only {} of the {k} shards needed could be read ({})",
            got.len(),
            if errors.is_empty() { "too few holders reachable".to_owned() } else { errors.join("; ") }
        ));
    }
    let root = seg.header.segment_root;
    // The code the segment was written with, from its shards (the cluster's may have changed since).
    let params = (seg.header.k, seg.header.n, seg.header.stripe_bytes);
    let assembled =
        off_reactor(params, move |code| code.assemble_verified(root, &got).map_err(|e| e.to_string())).await?;
    Ok(assembled.segment)
}

/// Serve a fetch from shards: the stream's sealed segment holding `offset`,
/// rebuilt (or taken from the cache of rebuilt segments).
pub async fn fetch_from_shards(
    cluster: &ClusterCore,
    stream: &str,
    offset: u64,
    max_bytes: u32,
    local_hw: u64,
) -> Response {
    let cached = cluster
        .decoded
        .borrow()
        .iter()
        .find(|d| d.stream == stream && d.base_offset <= offset && offset < d.next_offset)
        .cloned();
    let segment = match cached {
        Some(d) => d,
        None => {
            let (dir, unreachable) = directory(cluster, stream, false).await;
            let end = dir.values().map(|s| s.header.next_offset).max().unwrap_or(0).max(local_hw);
            let start = dir.keys().next().copied().unwrap_or(0);
            let Some(seg) = dir.range(..=offset).next_back().map(|(_, s)| s).filter(|s| offset < s.header.next_offset)
            else {
                if dir.is_empty() && local_hw == 0 && unreachable.is_empty() {
                    return error_response(ErrorCode::UnknownStream, format!("stream {stream:?} does not exist"));
                }
                if dir.is_empty() && local_hw == 0 {
                    return error_response(
                        ErrorCode::Unavailable,
                        format!(
                            "stream {stream:?}: no copy and no shard of it is reachable{}",
                            join_errors(&unreachable)
                        ),
                    );
                }
                if offset == end {
                    return Response::Fetch { batches: Vec::new(), high_watermark: end, log_start_offset: start };
                }
                return error_response(
                    ErrorCode::OffsetOutOfRange,
                    format!("offset {offset} is outside the sealed segments [{start}, {end}) of stream {stream:?} found on reachable nodes"),
                );
            };
            let bytes = match rebuild_segment(cluster, seg).await {
                Ok(b) => b,
                Err(e) => {
                    return error_response(
                        ErrorCode::Unavailable,
                        format!("stream {stream:?} segment {}: {e}", seg.header.base_offset),
                    )
                }
            };
            let d = Rc::new(DecodedSegment {
                stream: stream.to_owned(),
                base_offset: seg.header.base_offset,
                next_offset: seg.header.next_offset,
                bytes,
            });
            let mut cache = cluster.decoded.borrow_mut();
            cache.push(d.clone());
            if cache.len() > 2 {
                cache.remove(0);
            }
            d
        }
    };
    let mut out = Vec::new();
    let mut pos = SEGMENT_HEADER_BYTES;
    let max_bytes = max_bytes.max(1) as usize;
    while pos + BATCH_HEADER_BYTES <= segment.bytes.len() {
        let header = match BatchHeader::decode(&segment.bytes[pos..]) {
            Ok(h) => h,
            Err(e) => {
                return error_response(ErrorCode::Corrupted, format!("rebuilt segment {}: {e}", segment.base_offset))
            }
        };
        let len = header.batch_len();
        if header.next_offset() > offset {
            if !out.is_empty() && out.len() + len > max_bytes {
                break;
            }
            out.extend_from_slice(&segment.bytes[pos..pos + len]);
            if out.len() >= max_bytes {
                break;
            }
        }
        pos += len;
    }
    Response::Fetch { batches: out, high_watermark: segment.next_offset.max(local_hw), log_start_offset: 0 }
}

fn join_errors(errors: &[String]) -> String {
    if errors.is_empty() {
        String::new()
    } else {
        format!(" ({})", errors.join("; "))
    }
}

/// One repair pass over the coded segments of streams this core owns and this
/// node leads: every shard the placement now picks must be on its holder and
/// healthy; missing or damaged ones are rebuilt from `k` healthy shards.
pub async fn repair_pass(state: &CoreState, cluster: &ClusterCore, only: Option<&str>, verify: bool) -> RepairReport {
    let mut report = RepairReport::default();
    let Ok(_one_at_a_time) = cluster.repair_lock.acquire_permit(1).await else {
        report.errors.push("shutting down".into());
        return report;
    };
    // The streams this node knows of (its logs, placement records, shards), or
    // the one named even if it knows nothing of it (a replaced leader).
    let mut streams: Vec<String> = match only {
        Some(name) => vec![name.to_owned()],
        None => {
            let mut all = state.engine.list();
            all.extend(cluster.placed.borrow().keys().cloned());
            all.extend(cluster.store.streams(None).await);
            all
        }
    };
    streams.sort();
    streams.dedup();
    streams.retain(|s| owner_core(s, state.engine.cores()) == state.engine.core() && cluster.leads(s));
    for stream in streams {
        let (dir, _unreachable) = directory(cluster, &stream, verify).await;
        // Segments this node still has to finish coding are the coder's, not repair's.
        let local_sealed: Vec<u64> = state
            .engine
            .stream(&stream)
            .map(|s| s.info(0).segments.iter().filter(|g| g.sealed).map(|g| g.base_offset).collect())
            .unwrap_or_default();
        for (base, seg) in &dir {
            let placed = cluster.placed.borrow().get(&stream).is_some_and(|p| p.contains_key(base));
            if !placed && local_sealed.contains(base) {
                continue;
            }
            report.segments_checked += 1;
            let holders = cluster.membership.shard_holders(&stream, *base);
            let mut healthy = 0u8;
            for (index, holder) in holders.iter().enumerate() {
                let index = index as u8;
                let status = seg.holders.iter().find(|(h, i, _)| h == holder && *i == index).map(|(_, _, ok)| *ok);
                match status {
                    Some(true) => {
                        healthy += 1;
                        continue;
                    }
                    Some(false) => report.shards_corrupt += 1,
                    None => report.shards_missing += 1,
                }
                match rebuild_shard(state, cluster, seg, index, *holder).await {
                    Ok(bytes) => {
                        healthy += 1;
                        report.shards_rebuilt += 1;
                        tracing::info!(stream, base, index, holder = %holder.short(), "rebuilt shard");
                        let pause =
                            Duration::from_secs_f64(bytes as f64 / cluster.settings.repair_bytes_per_s.max(1) as f64);
                        glommio::timer::sleep(pause).await;
                    }
                    Err(e) => {
                        report.errors.push(format!("{stream} segment {base} shard {index} on {}: {e}", holder.short()))
                    }
                }
            }
            let health =
                SegmentHealth { healthy, n: holders.len() as u8, k: seg.header.k, checked_ms: crate::access::now_ms() };
            cluster.segment_health.borrow_mut().insert((stream.clone(), *base), health);
        }
    }
    state.counters.repaired(&report);
    report
}

/// What the last repair pass found of one coded segment (shown by the admin endpoint).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHealth {
    /// Shards healthy on their holders after the pass (rebuilt ones included).
    pub healthy: u8,
    pub n: u8,
    pub k: u8,
    /// When the pass checked it, Unix ms.
    pub checked_ms: u64,
}

async fn rebuild_shard(
    state: &CoreState,
    cluster: &ClusterCore,
    seg: &SegmentShards,
    index: u8,
    holder: NodeId,
) -> Result<u64, String> {
    if usize::from(seg.header.n) != cluster.membership.shard_holders(&seg.header.stream, seg.header.base_offset).len() {
        return Err(format!(
            "coded with n = {} but the cluster now has erasure_coding_total = {}; not rebuilt",
            seg.header.n, cluster.membership.erasure_coding_total
        ));
    }
    // Rebuild the whole segment from k verified shards and check its root,
    // then encode it again: the new shard is right by construction, not
    // merely consistent with itself.
    let segment = rebuild_segment(cluster, seg).await?;
    let h = seg.header.clone();
    let params = (h.k, h.n, h.stripe_bytes);
    let (header, body) = off_reactor(params, move |code| {
        let mut shards = code
            .encode_with_hashes(&h.stream, h.base_offset, h.next_offset, &segment, h.segment_root)
            .map_err(|e| e.to_string())?;
        Ok(shards.swap_remove(usize::from(index)))
    })
    .await?;
    place_shard(state, cluster, holder, &header.encode(), &body).await?;
    Ok(body.len() as u64)
}

/// Serve the shard requests of a core.
pub async fn serve(state: &CoreState, cluster: &ClusterCore, request: &Request<'_>) -> Option<Response> {
    Some(match *request {
        Request::PutShard { header, body } => match cluster.store.put(header, body).await {
            Ok(()) => Response::PutShard,
            Err(e) => e,
        },
        Request::GetShard { stream, base_offset, index } => match cluster.store.get(stream, base_offset, index).await {
            Ok((header, body)) => Response::GetShard { header, body },
            Err(e) => e,
        },
        Request::ListShards { stream, verify } => {
            Response::ListShards { shards: cluster.store.list(stream, verify).await }
        }
        Request::Repair { stream } => Response::Repair(repair_pass(state, cluster, stream, true).await),
        _ => return None,
    })
}
