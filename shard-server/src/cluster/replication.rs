//! Replication of open segments: the leader pushes leader-durable batches to
//! each follower, followers append them at the same offsets and fsync, and a
//! produce with acks=all is acknowledged once every in-sync copy has it.
//!
//! **Invariant:** a follower's log is always a prefix of its leader's durable
//! log. The leader only sends batches that are durable on its own disk (its
//! high watermark), in order, and a follower appends a batch only at its own
//! next offset. So copies never diverge, and nothing acknowledged exists on
//! fewer than `min_insync_replicas` disks.
//!
//! A follower is *in sync* while its connection works and it has been caught
//! up with the leader's high watermark within `replica_lag_max_ms`. A produce
//! waits for every in-sync follower; one that falls out of sync stops being
//! waited for, and when fewer than `min_insync_replicas` copies (the leader's
//! included) remain, produces are refused with `NotEnoughReplicas`.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::{Duration, Instant};

use ddc_cluster::membership::NodeId;
use ddc_engine::signal::Signal;
use ddc_engine::storage::dma::DmaStorage;
use ddc_engine::{EngineError, Stream};
use ddc_formats::batch::batches;
use ddc_formats::message::{Request, Response};
use ddc_formats::wire::{AckLevel, ErrorCode};

use super::ClusterCore;
use crate::config::ReplicaRetention;
use crate::dispatch::{engine_error, error_response, CoreState};
use crate::peer::{Peer, PeerError};

/// Batches per replication request, at most.
const REPLICATE_BYTES: u32 = 4 << 20;
/// Room for a Replicate's envelope inside a frame.
const REPLICATE_OVERHEAD_BYTES: u32 = 64 << 10;
/// Replicate requests in flight per follower and stream.
const PUSH_DEPTH: usize = 4;
/// An idle follower is probed this often (keeps it in sync and detects loss).
const HEARTBEAT: Duration = Duration::from_millis(500);

/// The leader's view of one follower.
pub struct Follower {
    pub id: NodeId,
    /// The follower's next offset as it last reported it (all below is durable there).
    pub acked: Cell<Option<u64>>,
    caught_up_at: Cell<Option<Instant>>,
    connected: Cell<bool>,
    /// Answered at least once since this replicator started.
    heard: Cell<bool>,
    pub last_error: RefCell<Option<String>>,
}

impl Follower {
    fn in_sync(&self, high_watermark: u64, lag_max: Duration) -> bool {
        self.connected.get()
            && match (self.acked.get(), self.caught_up_at.get()) {
                (Some(acked), _) if acked >= high_watermark => true,
                (Some(_), Some(at)) => at.elapsed() <= lag_max,
                _ => false,
            }
    }
}

/// Replication state of one stream this node leads.
pub struct Replicator {
    pub stream: Rc<Stream<DmaStorage>>,
    pub followers: Vec<Rc<Follower>>,
    changed: Signal,
    /// Bumped on every change, so a waiter can tell it was woken by one.
    generation: Cell<u64>,
    min_insync: usize,
    lag_max: Duration,
    /// Set when a follower reported more data than this leader holds (this
    /// node's data directory was replaced): writes are refused, they would
    /// reuse offsets the followers already hold.
    behind: Cell<Option<(NodeId, u64)>>,
    stopped: Cell<bool>,
}

/// One follower as its leader sees it (for the admin endpoint).
#[derive(Debug, Clone)]
pub struct FollowerState {
    pub id: NodeId,
    /// Its next offset as it last reported it; None until it answers.
    pub acked: Option<u64>,
    pub in_sync: bool,
    pub connected: bool,
    pub last_error: Option<String>,
}

impl Replicator {
    /// Every follower's state, now.
    pub fn follower_states(&self) -> Vec<FollowerState> {
        let hw = self.stream.high_watermark();
        self.followers
            .iter()
            .map(|f| FollowerState {
                id: f.id,
                acked: f.acked.get(),
                in_sync: f.in_sync(hw, self.lag_max),
                connected: f.connected.get(),
                last_error: f.last_error.borrow().clone(),
            })
            .collect()
    }

    pub fn stop(&self) {
        self.stopped.set(true);
        self.notify();
    }

    fn notify(&self) {
        self.generation.set(self.generation.get() + 1);
        self.changed.notify();
    }

    /// Wait for the next change, or `at_most` (in-sync status also changes with time).
    async fn next_change(&self, at_most: Duration) {
        let seen = self.generation.get();
        self.changed.wait_for_timeout(|| (self.generation.get() != seen).then_some(()), at_most).await;
    }

    fn in_sync_followers(&self) -> usize {
        let hw = self.stream.high_watermark();
        self.followers.iter().filter(|f| f.in_sync(hw, self.lag_max)).count()
    }

    /// True when a follower holds more of the stream than this leader.
    pub fn is_behind(&self) -> bool {
        self.behind.get().is_some()
    }

    fn behind_error(&self) -> Option<Response> {
        self.behind.get().map(|(node, next)| {
            error_response(
                ErrorCode::Unavailable,
                format!(
                    "stream {:?}: follower {} holds offsets up to {next} but this leader only {}; \
                     the leader's data directory was replaced, so it refuses writes (reads still work)",
                    self.stream.name,
                    node.short(),
                    self.stream.next_offset()
                ),
            )
        })
    }

    /// Before an append: wait up to the lag limit for enough in-sync copies.
    /// A refusal here has no side effect.
    pub async fn wait_ready(&self) -> Result<(), Response> {
        let deadline = Instant::now() + self.lag_max;
        loop {
            if let Some(e) = self.behind_error() {
                return Err(e);
            }
            // An empty log here may mean this node's data directory was replaced, with the
            // followers holding data it lacks: the first write waits until every follower
            // has said how much it holds.
            let all_heard = self.followers.iter().all(|f| f.heard.get());
            let copies = 1 + self.in_sync_followers();
            if copies >= self.min_insync && (all_heard || self.stream.next_offset() > 0) {
                return Ok(());
            }
            if !all_heard && self.stream.next_offset() == 0 && Instant::now() >= deadline {
                return Err(error_response(
                    ErrorCode::Unavailable,
                    format!(
                        "stream {:?} is empty on its leader: its first write waits until every replica has \
                         answered, in case they hold data this node lost; nothing was written{}",
                        self.stream.name,
                        self.follower_errors()
                    ),
                ));
            }
            if Instant::now() >= deadline {
                return Err(error_response(
                    ErrorCode::NotEnoughReplicas,
                    format!(
                        "stream {:?}: {copies} of the {} copies are in sync, min_insync_replicas is {}; nothing was written{}",
                        self.stream.name,
                        self.followers.len() + 1,
                        self.min_insync,
                        self.follower_errors()
                    ),
                ));
            }
            self.next_change(Duration::from_millis(50)).await;
        }
    }

    /// Each follower's state, for error messages.
    fn follower_errors(&self) -> String {
        let states: Vec<String> = self
            .followers
            .iter()
            .map(|f| {
                let state = match (f.connected.get(), f.acked.get()) {
                    (false, _) => "unreachable".to_owned(),
                    (true, None) => "connecting".to_owned(),
                    (true, Some(a)) => format!(
                        "has offsets below {a}, caught up {}",
                        f.caught_up_at
                            .get()
                            .map_or("never".to_owned(), |t| format!("{} ms ago", t.elapsed().as_millis()))
                    ),
                };
                match f.last_error.borrow().as_ref() {
                    Some(e) => format!("{}: {state}, last error: {e}", f.id.short()),
                    None => format!("{}: {state}", f.id.short()),
                }
            })
            .collect();
        format!(" (followers: {})", states.join("; "))
    }

    /// After an append ending at `end`: wait until every in-sync follower has
    /// it durably, with at least `min_insync_replicas` copies in all.
    pub async fn wait_acked(&self, base: u64, end: u64) -> Result<(), Response> {
        loop {
            let hw = self.stream.high_watermark();
            let mut have = 1;
            let mut waiting = 0;
            for f in &self.followers {
                if f.acked.get().is_some_and(|a| a >= end) {
                    have += 1;
                } else if f.in_sync(hw, self.lag_max) {
                    waiting += 1;
                }
            }
            if waiting == 0 && have >= self.min_insync {
                return Ok(());
            }
            if have + waiting < self.min_insync || self.stopped.get() {
                return Err(error_response(
                    ErrorCode::NotEnoughReplicas,
                    format!(
                        "stream {:?}: offsets {base}..{end} were appended on the leader but only {have} copies hold them \
                         and min_insync_replicas is {}; NOT acknowledged (they will reach the followers when they return){}",
                        self.stream.name,
                        self.min_insync,
                        self.follower_errors()
                    ),
                ));
            }
            self.next_change(Duration::from_millis(50)).await;
        }
    }
}

/// The replicator of a stream this node leads, started on first use.
pub fn replicator(cluster: &Rc<ClusterCore>, stream: &Rc<Stream<DmaStorage>>) -> Rc<Replicator> {
    if let Some(r) = cluster.replicators.borrow().get(&stream.name) {
        return r.clone();
    }
    let replicas = cluster.membership.replicas(&stream.name);
    let followers: Vec<Rc<Follower>> = replicas[1..]
        .iter()
        .map(|id| {
            Rc::new(Follower {
                id: *id,
                acked: Cell::new(None),
                caught_up_at: Cell::new(None),
                connected: Cell::new(false),
                heard: Cell::new(false),
                last_error: RefCell::new(None),
            })
        })
        .collect();
    let r = Rc::new(Replicator {
        stream: stream.clone(),
        followers,
        changed: Signal::default(),
        generation: Cell::new(0),
        min_insync: usize::from(cluster.membership.min_insync_replicas),
        lag_max: Duration::from_millis(cluster.settings.replica_lag_max_ms),
        behind: Cell::new(None),
        stopped: Cell::new(false),
    });
    for f in &r.followers {
        if let Some(peer) = cluster.peers.get(&f.id) {
            glommio::spawn_local(push_to_follower(cluster.clone(), r.clone(), f.clone(), peer)).detach();
        }
    }
    cluster.replicators.borrow_mut().insert(stream.name.clone(), r.clone());
    r
}

type Push = glommio::Task<(u64, Result<Response, PeerError>)>;

/// One follower's replication loop on the leader: keeps up to
/// `PUSH_DEPTH` requests in flight (the follower applies them in order), each
/// with the leader-durable batches after the previous one.
async fn push_to_follower(cluster: Rc<ClusterCore>, r: Rc<Replicator>, f: Rc<Follower>, peer: Rc<Peer>) {
    let stream = r.stream.clone();
    let mut backoff = Duration::from_millis(100);
    let chunk = replicate_bytes(&cluster);
    'connection: while !r.stopped.get() && !cluster.closing.get() {
        // Learn where the follower is.
        let mut cursor = match r.answer(&f, push(&cluster, &stream, &peer, 0, Vec::new()).await) {
            Answer::At(c) => c,
            other => {
                pause_after(other, &mut backoff).await;
                continue 'connection;
            }
        };
        backoff = Duration::from_millis(100);
        let mut sent = cursor;
        let mut in_flight: std::collections::VecDeque<Push> = std::collections::VecDeque::new();
        while !r.stopped.get() && !cluster.closing.get() {
            // Fill the window with what is durable here and not yet sent.
            while in_flight.len() < PUSH_DEPTH && sent < stream.high_watermark() {
                let bytes = match stream.read(sent, chunk).await {
                    Ok(out) => out.batches,
                    Err(e) => {
                        *f.last_error.borrow_mut() = Some(format!("leader cannot read offset {sent} for it: {e}"));
                        tracing::warn!(stream = %stream.name, follower = %f.id.short(), error = %e, "cannot read data a follower needs");
                        break;
                    }
                };
                let Some(end) =
                    ddc_formats::batch::batches(&bytes).filter_map(Result::ok).last().map(|b| b.header.next_offset())
                else {
                    break;
                };
                in_flight.push_back(push(&cluster, &stream, &peer, sent, bytes));
                sent = end;
            }
            let Some(oldest) = in_flight.pop_front() else {
                // Idle: wait for data, or probe the follower now and then.
                if !stream.wait_for_data(sent, HEARTBEAT).await {
                    in_flight.push_back(push(&cluster, &stream, &peer, sent, Vec::new()));
                }
                continue;
            };
            match r.answer(&f, oldest.await) {
                Answer::At(c) => {
                    cursor = c;
                    if cursor < sent && in_flight.is_empty() {
                        sent = cursor; // the follower fell behind what was sent: resend from where it is
                    }
                }
                other => {
                    pause_after(other, &mut backoff).await;
                    continue 'connection;
                }
            }
        }
    }
}

/// Largest batches payload of one Replicate: it must fit in the follower's
/// frame with room for the envelope.
fn replicate_bytes(cluster: &ClusterCore) -> u32 {
    REPLICATE_BYTES.min(cluster.frame_bytes_max.saturating_sub(REPLICATE_OVERHEAD_BYTES)).max(1)
}

/// Send one Replicate; resolves to the leader's high watermark when it was sent and the outcome.
fn push(
    cluster: &Rc<ClusterCore>,
    stream: &Rc<Stream<DmaStorage>>,
    peer: &Rc<Peer>,
    base: u64,
    bytes: Vec<u8>,
) -> Push {
    let (cluster, stream, peer) = (cluster.clone(), stream.clone(), peer.clone());
    // A task, so it is sent now and runs while later ones are prepared.
    glommio::spawn_local(async move {
        let hw_sent = stream.high_watermark().max(base);
        let coded_offset = super::shards::coded_offset(&cluster, &stream);
        let leader = cluster.me.0;
        let request = Request::Replicate {
            stream: &stream.name,
            base_offset: base,
            batches: &bytes,
            leader: &leader,
            coded_offset,
        };
        tracing::trace!(stream = %stream.name, follower = %peer.id.short(), base, bytes = bytes.len(), "replicating");
        (hw_sent, peer.call(&request, false, cluster.peer_timeout()).await)
    })
}

/// What a follower's answer means for its push loop.
enum Answer {
    /// Continue from this offset.
    At(u64),
    /// It holds more than this leader: stop for a while.
    Behind,
    /// No usable answer: reconnect after a back-off.
    Failed,
}

/// How long a leader that is behind a follower waits before asking again.
const BEHIND_RETRY: Duration = Duration::from_secs(5);

/// Wait before reconnecting after an answer that stops the push loop.
async fn pause_after(answer: Answer, backoff: &mut Duration) {
    match answer {
        Answer::Behind => glommio::timer::sleep(BEHIND_RETRY).await,
        Answer::Failed | Answer::At(_) => {
            glommio::timer::sleep(*backoff).await;
            *backoff = (*backoff * 2).min(Duration::from_secs(2));
        }
    }
}

impl Replicator {
    /// Record a push's outcome (the leader's high watermark when it was sent, and the answer).
    fn answer(&self, f: &Follower, (hw_sent, outcome): (u64, Result<Response, PeerError>)) -> Answer {
        match outcome {
            Ok(Response::Replicate { next_offset }) => match self.follower_answered(f, next_offset, hw_sent) {
                Some(c) => Answer::At(c),
                None => Answer::Behind,
            },
            other => {
                self.follower_failed(f, other);
                Answer::Failed
            }
        }
    }

    /// A follower reported its next offset. Returns where to continue, or
    /// None when the follower holds more than this leader (writes are then refused).
    fn follower_answered(&self, f: &Follower, next_offset: u64, hw_sent: u64) -> Option<u64> {
        *f.last_error.borrow_mut() = None;
        f.heard.set(true);
        if next_offset > self.stream.next_offset() {
            self.behind.set(Some((f.id, next_offset)));
            f.connected.set(false);
            tracing::error!(stream = %self.stream.name, follower = %f.id.short(), next_offset, leader_next = self.stream.next_offset(),
                "follower holds more than this leader: refusing writes to the stream");
            self.notify();
            return None;
        }
        f.connected.set(true);
        f.acked.set(Some(next_offset));
        if next_offset >= hw_sent {
            f.caught_up_at.set(Some(Instant::now()));
        }
        self.notify();
        Some(next_offset)
    }

    fn follower_failed(&self, f: &Follower, outcome: Result<Response, PeerError>) {
        let reason = match outcome {
            Ok(Response::Error { code, message }) => format!("{code:?}: {message}"),
            Ok(other) => format!("unexpected answer {other:?}"),
            Err(e) => e.to_string(),
        };
        if f.connected.replace(false) {
            tracing::warn!(stream = %self.stream.name, follower = %f.id.short(), %reason, "follower out of sync");
        }
        *f.last_error.borrow_mut() = Some(reason);
        // Until it answers again nothing is known about what it holds.
        f.acked.set(None);
        self.notify();
    }
}

/// Produce on the leader: append locally, then wait for the in-sync copies.
pub async fn produce(
    state: &CoreState,
    cluster: &Rc<ClusterCore>,
    name: &str,
    records: &[u8],
    record_count: u32,
    ack: AckLevel,
) -> Response {
    if let Err(e) = ddc_formats::batch::validate_records(records, record_count) {
        return engine_error(&EngineError::InvalidRecords(e.to_string()));
    }
    let need = records.len() + ddc_formats::batch::BATCH_HEADER_BYTES;
    if need > cluster.frame_bytes_max.saturating_sub(REPLICATE_OVERHEAD_BYTES) as usize {
        return engine_error(&EngineError::InvalidRecords(format!(
            "a batch of {need} bytes cannot be replicated: in a cluster a batch must leave {REPLICATE_OVERHEAD_BYTES} bytes \
             of a frame (server.frame_bytes_max {}) for the replication envelope",
            cluster.frame_bytes_max
        )));
    }
    let stream = match state.engine.stream_or_create(name) {
        Ok((s, _)) => s,
        Err(e) => return engine_error(&e),
    };
    let r = replicator(cluster, &stream);
    if let Err(refused) = r.wait_ready().await {
        return refused;
    }
    let base = match stream.append(records, record_count, ack).await {
        Ok(b) => b,
        Err(e) => return engine_error(&e),
    };
    let end = base + u64::from(record_count);
    if ack == AckLevel::Durable {
        if let Err(refused) = r.wait_acked(base, end).await {
            return refused;
        }
    }
    Response::Produce { base_offset: base, record_count }
}

/// A follower receiving batches from the stream's leader.
pub async fn apply(
    state: &CoreState,
    cluster: &ClusterCore,
    name: &str,
    base_offset: u64,
    bytes: &[u8],
    leader: &[u8],
    coded_offset: u64,
) -> Response {
    let expected = cluster.membership.leader(name);
    if leader != expected.0 {
        return error_response(
            ErrorCode::BadRequest,
            format!("stream {name:?} is led by {} in this node's membership, not by the sender", expected.short()),
        );
    }
    if expected == cluster.me {
        return error_response(ErrorCode::BadRequest, format!("this node leads stream {name:?}"));
    }
    if bytes.is_empty() && matches!(state.engine.stream(name), Err(EngineError::UnknownStream(_))) {
        // A probe: answer without creating the stream (an empty copy would
        // look like a caught-up one to readers).
        return Response::Replicate { next_offset: 0 };
    }
    let stream = match state.engine.stream_or_create(name) {
        Ok((s, _)) => s,
        Err(e) => return engine_error(&e),
    };
    let mut next = stream.next_offset();
    let mut appends = Vec::new();
    for batch in batches(bytes) {
        let batch = match batch {
            Ok(b) => b,
            Err(e) => {
                return error_response(ErrorCode::Corrupted, format!("replicated batch at or after {base_offset}: {e}"))
            }
        };
        if batch.header.next_offset() <= next {
            continue; // already here (a retry)
        }
        if batch.header.base_offset != next {
            break; // a gap: answer with our next offset and the leader resends from there
        }
        appends.push(stream.append_at(next, batch.body, batch.header.record_count, AckLevel::Durable));
        next = batch.header.next_offset();
    }
    tracing::debug!(stream = name, base_offset, batches = appends.len(), next, "follower appending");
    for result in futures::future::join_all(appends).await {
        if let Err(e) = result {
            return engine_error(&e);
        }
    }
    if coded_offset > 0 {
        let mut hints = cluster.coded_hint.borrow_mut();
        let hint = hints.entry(name.to_owned()).or_insert(0);
        *hint = (*hint).max(coded_offset);
    }
    if coded_offset > 0 && cluster.settings.replica_retention == ReplicaRetention::Leader {
        match stream.drop_sealed_below(coded_offset).await {
            Ok(0) => {}
            Ok(dropped) => {
                tracing::info!(stream = name, dropped, coded_offset, "dropped replica segments now erasure-coded")
            }
            Err(e) => tracing::warn!(stream = name, error = %e, "could not drop coded replica segments"),
        }
    }
    tracing::debug!(stream = name, hw = stream.high_watermark(), "follower appended");
    Response::Replicate { next_offset: stream.high_watermark() }
}
