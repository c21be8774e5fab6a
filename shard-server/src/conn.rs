//! One client connection: read frames, run requests concurrently, write
//! tagged responses as they complete.
//!
//! Backpressure: at most `in_flight_max` requests run per connection; past
//! that the reader stops reading, so TCP flow control pushes back on the
//! client. Frames are checked in this order: header (magic, version, length
//! against `frame_bytes_max`, *before* reading the payload), checksum,
//! flatbuffers verifier. A bad header or checksum gets an error response and
//! the connection is closed (its framing can no longer be trusted); a frame
//! that is intact but fails the verifier or makes no sense gets an error
//! response and the connection keeps serving.
//!
//! Logging: a connection runs inside an info-level `conn` span (`core`,
//! `conn`, `peer`) and each request inside a debug-level `request` span
//! (`request_id`, `stream`), so every log line about a request names both. The
//! request span costs nothing but a level check when debug is off.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::os::fd::AsRawFd;
use std::rc::Rc;

use futures_lite::io::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;
use glommio::sync::{Semaphore, StaticPermit};
use tracing::Instrument;

use ddc_auth::account::Account;
use ddc_auth::handshake::{NodeHandshake, Session, CLIENT_AUTH_BYTES, CLIENT_HELLO_BYTES};

use crate::access::ConnAccess;
use crate::admin::{AuthFailure, FrameRefusal};
use crate::connections::ConnHandle;
use ddc_engine::owner_core;
use ddc_engine::signal::Signal;
use ddc_formats::frame::{encode_frame_into, FrameHeader, FRAME_HEADER_BYTES};
use ddc_formats::message::{
    decode_request_envelope, encode_response_owned, peek_request_id, OwnedFrame, Request, Response,
};
use ddc_formats::session::{open_payload, seal_frame};
use ddc_formats::wire::ErrorCode;
use ddc_formats::FormatError;

use crate::dispatch::{error_response, serve_local, CoreState};
use crate::router::Router;

/// A response's reservation of memory: from its connection's budget and from its core's.
struct ResponseMemory {
    _connection: StaticPermit,
    _core: StaticPermit,
}

/// A request's in-flight slot and its response memory.
type HeldPermits = (StaticPermit, ResponseMemory);

/// Responses waiting to be written, already framed.
struct Outbox {
    /// Each frame keeps its request's in-flight slot and response-memory
    /// permit until it is written, so a client that sends but never reads
    /// stalls only itself, with bounded memory.
    frames: RefCell<VecDeque<(OwnedFrame, Option<HeldPermits>)>>,
    /// Buffers of written frames, reused for the next responses.
    spare: RefCell<Vec<Vec<u8>>>,
    closed: Cell<bool>,
    /// Set when the writer task has stopped; frames pushed after that are dropped.
    writer_gone: Cell<bool>,
    ready: Signal,
    /// The authenticated session, once the handshake is done: every frame
    /// read must carry its tag, and every frame written gets one (in write order).
    session: RefCell<Option<Session>>,
}

impl Outbox {
    fn new() -> Outbox {
        Outbox {
            frames: RefCell::default(),
            spare: RefCell::default(),
            closed: Cell::new(false),
            writer_gone: Cell::new(false),
            ready: Signal::default(),
            session: RefCell::new(None),
        }
    }

    fn push(&self, request_id: u64, response: &Response, permits: Option<HeldPermits>) {
        if self.writer_gone.get() {
            return; // nobody will write it; dropping `permits` releases them
        }
        let reuse = self.spare.borrow_mut().pop().unwrap_or_default();
        let frame = encode_response_owned(request_id, response, reuse);
        self.frames.borrow_mut().push_back((frame, permits));
        self.ready.notify();
    }

    /// A frame whose payload is given as is (a handshake message).
    fn push_raw(&self, payload: &[u8]) {
        if self.writer_gone.get() {
            return;
        }
        let mut buf = Vec::with_capacity(FRAME_HEADER_BYTES + payload.len());
        encode_frame_into(payload, &mut buf);
        self.frames.borrow_mut().push_back((OwnedFrame { buf, start: 0 }, None));
        self.ready.notify();
    }

    /// In a session, tag `frame` in place before it is written (tags follow write order).
    fn seal(&self, frame: &mut OwnedFrame) {
        if let Some(session) = self.session.borrow_mut().as_mut() {
            seal_frame(session, &mut frame.buf, frame.start);
        }
    }

    fn recycle(&self, buf: Vec<u8>) {
        let mut spare = self.spare.borrow_mut();
        // Keep a few small buffers (the answers to produces, pings, small fetches), and
        // none of the large ones: idle buffers are memory no budget accounts for, and
        // thousands of connections each keeping a few MiB add up to gigabytes.
        if spare.len() < 4 && buf.capacity() <= SPARE_BUFFER_BYTES_MAX {
            spare.push(buf);
        }
    }
}

fn frame_error_code(e: &FormatError) -> ErrorCode {
    match e {
        FormatError::FrameTooLarge { .. } => ErrorCode::FrameTooLarge,
        FormatError::ChecksumMismatch { .. } => ErrorCode::ChecksumMismatch,
        FormatError::Malformed(_) => ErrorCode::MalformedMessage,
        FormatError::Invalid { .. } => ErrorCode::BadRequest,
        _ => ErrorCode::UnsupportedVersion,
    }
}

/// How long a partly received frame may wait for payload budget.
const BUDGET_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// Largest written-response buffer a connection keeps for reuse.
const SPARE_BUFFER_BYTES_MAX: usize = 64 << 10;

/// Response bytes one connection may have waiting to be written.
const RESPONSE_BUDGET_BYTES: u64 = 80 << 20;

/// Write `bytes`, telling the connection registry while the write is in progress
/// (a write that makes no progress marks a client that stopped reading).
async fn write_tracked<W: futures_lite::io::AsyncWrite + Unpin>(
    writer: &mut W,
    bytes: &[u8],
    conn: Option<&ConnHandle>,
) -> bool {
    if let Some(c) = conn {
        c.write_started();
    }
    let ok = writer.write_all(bytes).await.is_ok();
    if let Some(c) = conn {
        c.write_done();
    }
    ok
}

thread_local! {
    /// Connections this core has accepted; with the core's number, a connection's id in logs.
    static CONNECTIONS: Cell<u64> = const { Cell::new(0) };
}

pub async fn serve_connection(stream: TcpStream, state: Rc<CoreState>, router: Rc<Router>, in_flight_max: usize) {
    let conn = CONNECTIONS.with(|n| {
        n.set(n.get() + 1);
        n.get()
    });
    let peer = stream.peer_addr().map(|a| a.to_string()).unwrap_or_default();
    let span = tracing::info_span!("conn", core = router.core, conn, peer = %peer);
    serve_in_span(stream, state, router, in_flight_max, peer).instrument(span).await
}

/// The connection's work, inside its `conn` span.
async fn serve_in_span(
    stream: TcpStream,
    state: Rc<CoreState>,
    router: Rc<Router>,
    in_flight_max: usize,
    peer: String,
) {
    let _ = stream.set_nodelay(true);
    let fd = stream.as_raw_fd();
    let (mut reader, mut writer) = futures_lite::io::split(stream);
    // Declared after `reader`, so it is dropped (leaves the registry) before the socket closes.
    let registration = state.connections.register(fd);
    let handle = registration.as_ref().ok().map(|r| r.handle.clone());
    let outbox = Rc::new(Outbox::new());
    let writer_task = {
        let outbox = outbox.clone();
        let handle = handle.clone();
        glommio::spawn_local(async move {
            let conn = handle.as_deref();
            // Small frames are coalesced into one write; large ones go out as they are.
            // Grows on first use: an idle connection pins no buffer.
            let mut small = Vec::new();
            'writing: loop {
                outbox
                    .ready
                    .wait_for(|| (!outbox.frames.borrow().is_empty() || outbox.closed.get()).then_some(()))
                    .await;
                let frames: Vec<_> = outbox.frames.borrow_mut().drain(..).collect();
                if frames.is_empty() {
                    break; // closed and drained
                }
                for (mut frame, _permits) in frames {
                    outbox.seal(&mut frame);
                    let bytes = frame.bytes();
                    if bytes.len() < 16 << 10 {
                        small.extend_from_slice(bytes);
                        outbox.recycle(frame.buf);
                        continue;
                    }
                    if !small.is_empty() && !write_tracked(&mut writer, &small, conn).await {
                        break 'writing;
                    }
                    small.clear();
                    if !write_tracked(&mut writer, bytes, conn).await {
                        break 'writing;
                    }
                    outbox.recycle(frame.buf);
                }
                if (!small.is_empty() && !write_tracked(&mut writer, &small, conn).await)
                    || writer.flush().await.is_err()
                {
                    break;
                }
                small.clear();
            }
            // Nothing more will be written: release what queued frames hold.
            if let Some(c) = conn {
                c.finish();
            }
            outbox.closed.set(true);
            outbox.writer_gone.set(true);
            outbox.frames.borrow_mut().clear();
            let _ = writer.close().await;
        })
    };
    if let Err(limit) = &registration {
        let reason = format!(
            "this node is at its connection limit ({limit} per core, server.connections_max); retry later or at another node"
        );
        tracing::debug!(%peer, "refusing a connection: at the connection limit");
        outbox.push(0, &error_response(ErrorCode::Overloaded, reason), None);
        outbox.closed.set(true);
        outbox.ready.notify();
        writer_task.await;
        return;
    }
    let permits = Rc::new(Semaphore::new(in_flight_max as u64));
    let response_budget = Rc::new(Semaphore::new(RESPONSE_BUDGET_BYTES));
    let frame_bytes_max = state.frame_bytes_max;
    let mut header = [0u8; FRAME_HEADER_BYTES];
    let mut first = true;
    let access = Rc::new(RefCell::new(ConnAccess::default()));
    loop {
        if outbox.closed.get() {
            break;
        }
        match reader.read_exact(&mut header).await {
            Ok(()) => {}
            Err(_) => break, // EOF or reset
        }
        let parsed = match FrameHeader::decode(&header, frame_bytes_max) {
            Ok(h) => h,
            Err(e) => {
                state.counters.frame_refused(FrameRefusal::of_header_error(&e));
                tracing::debug!(%peer, error = %e, "refusing frame; closing connection");
                outbox.push(0, &error_response(frame_error_code(&e), e.to_string()), None);
                break;
            }
        };
        // Hold the payload's bytes against the core's budget before allocating them.
        let Some((payload, memory)) =
            read_payload(&mut reader, parsed.payload_len as usize, &state.payload_budget, state.frame_read_timeout)
                .await
        else {
            state.counters.frame_refused(FrameRefusal::Incomplete);
            tracing::debug!(%peer, "payload not received in time or connection lost; closing");
            break;
        };
        if let Err(e) = parsed.verify_payload(&header, &payload) {
            state.counters.frame_refused(FrameRefusal::Checksum);
            tracing::debug!(%peer, error = %e, "frame checksum mismatch; closing connection");
            outbox.push(0, &error_response(frame_error_code(&e), e.to_string()), None);
            break;
        }
        tracing::trace!(%peer, bytes = payload.len(), "frame received");
        let mut payload = payload;
        if std::mem::take(&mut first) {
            if is_client_hello(&payload) {
                match handshake(&state, &mut reader, &outbox, &payload).await {
                    Ok((client, session)) => {
                        tracing::debug!(%peer, account = %client, "connection authenticated");
                        let node = state.identity.as_ref().map(|k| k.account());
                        access.borrow_mut().authenticated(client, session, node);
                        continue;
                    }
                    Err(reason) => {
                        state.counters.auth_failed(AuthFailure::Handshake);
                        tracing::info!(%peer, %reason, "handshake refused; closing connection");
                        outbox.push(0, &error_response(ErrorCode::BadRequest, reason), None);
                        break;
                    }
                }
            }
            if state.auth_required {
                state.counters.auth_failed(AuthFailure::HandshakeRequired);
                let reason =
                    "this node requires authentication: start the connection with a handshake (docs/SECURITY.md)";
                outbox.push(0, &error_response(ErrorCode::BadRequest, reason), None);
                break;
            }
        }
        if access.borrow().account().is_some() {
            let opened = match outbox.session.borrow_mut().as_mut() {
                Some(session) => open_payload(session, &mut payload).map_err(|e| e.to_string()),
                None => Ok(()),
            };
            if let Err(reason) = opened {
                state.counters.auth_failed(AuthFailure::SessionTag);
                tracing::warn!(%peer, %reason, "frame failed its session tag; closing connection");
                break;
            }
        }
        // Reserve the answer's memory *before* the request runs, here in the reader:
        // while a connection waits for memory it reads nothing more (TCP pushes back
        // on its client) and has one place in the core's queue, not one per request.
        let response_bytes = response_reservation(state.frame_bytes_max, &payload);
        let Some(connection_memory) =
            response_budget.clone().acquire_static_permit(response_bytes.min(RESPONSE_BUDGET_BYTES)).await.ok()
        else {
            break;
        };
        let Some(core_memory) = state.connections.reserve_response(response_bytes, handle.as_deref()).await else {
            break; // evicted, or its writer failed: nobody reads the answers
        };
        let held = ResponseMemory { _connection: connection_memory, _core: core_memory };
        let permit = match permits.clone().acquire_static_permit(1).await {
            Ok(p) => p,
            Err(_) => break,
        };
        let (state, router, outbox, access) = (state.clone(), router.clone(), outbox.clone(), access.clone());
        // Its field values are computed only when the span is enabled (debug).
        let span = tracing::debug_span!(
            "request",
            request_id = peek_request_id(&payload).unwrap_or(0),
            stream = tracing::field::Empty
        );
        let request = async move {
            let (id, response) = handle_payload(&state, &router, payload, &access).await;
            if let Response::Error { code, message } = &response {
                tracing::debug!(?code, reason = %message, "request refused");
            }
            drop(memory);
            state.counters.answered(&response);
            outbox.push(id, &response, Some((permit, held)));
        };
        glommio::spawn_local(request.instrument(span)).detach();
    }
    // Let running requests answer, then close.
    let _ = permits.acquire(in_flight_max as u64).await;
    outbox.closed.set(true);
    outbox.ready.notify();
    writer_task.await;
}

fn is_client_hello(payload: &[u8]) -> bool {
    payload.len() == CLIENT_HELLO_BYTES && payload.starts_with(b"DDH1")
}

/// The node's side of the handshake after the ClientHello: answer, then read
/// and check the ClientAuth. Returns the client's account and the session id;
/// the session is installed in the outbox, so every later frame is tagged both ways.
async fn handshake<R: futures_lite::io::AsyncRead + Unpin>(
    state: &CoreState,
    reader: &mut R,
    outbox: &Outbox,
    client_hello: &[u8],
) -> Result<(Account, [u8; ddc_auth::handshake::SESSION_ID_BYTES]), String> {
    let Some(identity) = &state.identity else {
        return Err("this node has no identity to authenticate with (auth.node_key_file)".into());
    };
    let (pending, node_hello) = NodeHandshake::answer(client_hello, identity).map_err(|e| e.to_string())?;
    outbox.push_raw(&node_hello);
    let mut header = [0u8; FRAME_HEADER_BYTES];
    let read = async {
        reader.read_exact(&mut header).await.map_err(|e| e.to_string())?;
        let parsed = FrameHeader::decode(&header, CLIENT_AUTH_BYTES as u32).map_err(|e| e.to_string())?;
        let mut payload = vec![0u8; parsed.payload_len as usize];
        reader.read_exact(&mut payload).await.map_err(|e| e.to_string())?;
        parsed.verify_payload(&header, &payload).map_err(|e| e.to_string())?;
        Ok::<_, String>(payload)
    };
    let deadline = async {
        glommio::timer::sleep(state.frame_read_timeout).await;
        Err("no ClientAuth in time".to_owned())
    };
    let client_auth = futures_lite::future::or(read, deadline).await?;
    let (client, session) = pending.finish(&client_auth).map_err(|e| e.to_string())?;
    let id = session.id();
    *outbox.session.borrow_mut() = Some(session);
    Ok((client, id))
}

/// Read a `len`-byte payload, charging the core's budget only for bytes that
/// have arrived (at most 128 KiB per connection go unaccounted), and giving
/// up after `timeout`: a client that announces a large frame and stalls pins
/// neither memory nor budget.
async fn read_payload<R: futures_lite::io::AsyncRead + Unpin>(
    reader: &mut R,
    len: usize,
    budget: &Rc<Semaphore>,
    timeout: std::time::Duration,
) -> Option<(Vec<u8>, Vec<StaticPermit>)> {
    const CHUNK_BYTES: usize = 64 << 10;
    let work = async {
        let mut payload = Vec::new();
        let mut permits = Vec::new();
        let mut accounted = 0usize;
        while payload.len() < len {
            // Read into the payload itself, growing it with what has arrived (4 KiB,
            // then doubling up to 64 KiB a read): a client that announces a large
            // frame and drips or stalls pins a few KiB, not the frame's size.
            let start = payload.len();
            let want = CHUNK_BYTES.min(len - start).min(start.max(4096));
            payload.resize(start + want, 0);
            let n = reader.read(&mut payload[start..]).await.ok()?;
            payload.truncate(start + n);
            if n == 0 {
                return None;
            }
            if payload.len() - accounted >= CHUNK_BYTES || payload.len() == len {
                let unaccounted = (payload.len() - accounted) as u64;
                // Partly received frames could spend the whole budget between
                // them and wait on each other forever; one that cannot get
                // budget soon gives up its connection so the others finish.
                let acquire = async { budget.clone().acquire_static_permit(unaccounted).await.ok() };
                let give_up = async {
                    glommio::timer::sleep(BUDGET_WAIT).await;
                    tracing::warn!("request payload budget exhausted; closing a connection mid-frame");
                    None
                };
                permits.push(futures_lite::future::or(acquire, give_up).await?);
                accounted = payload.len();
            }
        }
        Some((payload, permits))
    };
    let deadline = async {
        glommio::timer::sleep(timeout).await;
        None
    };
    futures_lite::future::or(work, deadline).await
}

/// Decode, route and serve one verified frame payload. The response's memory
/// is reserved from the connection's budget before the response is built, so
/// queued responses of a client that does not read stay within budget; the
/// permit travels with the response until it is written.
/// The response memory to reserve for the request in `payload`: a fetch's
/// `max_bytes` (capped by the frame limit), a whole frame for a shard, 4 KiB
/// for everything else (acknowledgments, errors, listings).
fn response_reservation(frame_bytes_max: u32, payload: &[u8]) -> u64 {
    match decode_request_envelope(payload) {
        Ok((_, _, Request::Fetch { max_bytes, .. })) => u64::from(max_bytes.min(frame_bytes_max)) + 4096,
        Ok((_, _, Request::GetShard { .. })) => u64::from(frame_bytes_max),
        _ => 4096,
    }
}

/// Decode, authorize, route and serve one verified frame payload. Its
/// response memory was reserved by the reader (see [`response_reservation`]).
async fn handle_payload(
    state: &CoreState,
    router: &Router,
    payload: Vec<u8>,
    access: &RefCell<ConnAccess>,
) -> (u64, Response) {
    let decoded = decode_request_envelope(&payload);
    let (id, forwarded, request) = match decoded {
        Ok(r) => r,
        Err(e) => {
            state.counters.frame_refused(FrameRefusal::InvalidMessage);
            let id = peek_request_id(&payload).unwrap_or(0);
            return (id, error_response(frame_error_code(&e), e.to_string()));
        }
    };
    if let Some(stream) = request.stream() {
        // A no-op unless the request span is enabled.
        tracing::Span::current().record("stream", stream);
    }
    // Authorized before anything is done: a refusal has no side effect.
    if let Err(refusal) = access.borrow().check(state, &request, forwarded) {
        return (id, refusal);
    }
    let mut response = match request {
        Request::PresentGrants { chain } => access.borrow_mut().present_grants(state, chain),
        Request::UsageAck { ack } => access.borrow_mut().usage_ack(state, ack),
        _ => serve_routed(state, router, &request, forwarded, &payload).await,
    };
    if let Response::ListStreams { streams } = &mut response {
        let access = access.borrow();
        streams.retain(|s| access.may_list(state, s));
    }
    access.borrow_mut().account_usage(state, &request, &response, forwarded);
    (id, response)
}

/// Serve an authorized request: on the stream's leader (cluster), its owner core, or here.
async fn serve_routed(
    state: &CoreState,
    router: &Router,
    request: &Request<'_>,
    forwarded: bool,
    payload: &[u8],
) -> Response {
    if let Some(cluster) = &state.cluster {
        if let Some(response) = crate::cluster::route(cluster, request, forwarded).await {
            return response;
        }
    }
    serve_on_cores(state, router, request, forwarded, payload).await
}

/// Serve a request on this node's cores: the core that owns its stream, every
/// core for the node-wide questions, core 0 for anchor proofs.
pub(crate) async fn serve_on_cores(
    state: &CoreState,
    router: &Router,
    request: &Request<'_>,
    forwarded: bool,
    payload: &[u8],
) -> Response {
    let stream = match request {
        // A shard is stored on the core that owns its stream, named in its header.
        Request::PutShard { header, .. } => match ddc_formats::shard::ShardHeader::decode(header) {
            Ok(h) => Some(h.stream),
            Err(e) => return error_response(ErrorCode::BadRequest, format!("shard header: {e}")),
        },
        other => other.stream().map(str::to_owned),
    };
    let owner = stream.map(|name| owner_core(&name, router.cores));
    match (owner, request) {
        (Some(core), _) if core != router.core => router.forward(core, payload.to_vec()).await,
        (None, Request::ListStreams) => list_all(state, router, payload).await,
        (None, Request::ListShards { .. }) | (None, Request::Repair { .. }) | (None, Request::Usage { .. }) => {
            gather_all_cores(state, router, request, payload).await
        }
        (None, Request::Proof { .. }) if router.core != 0 => router.forward(0, payload.to_vec()).await,
        _ => serve_local(state, request, forwarded).await,
    }
}

/// Shard listings and repair reports of every core, combined.
async fn gather_all_cores(state: &CoreState, router: &Router, request: &Request<'_>, payload: &[u8]) -> Response {
    let mut responses = vec![serve_local(state, request, false).await];
    for core in (0..router.cores).filter(|&c| c != router.core) {
        responses.push(router.forward(core, payload.to_vec()).await);
    }
    let mut shards = Vec::new();
    let mut report = ddc_formats::message::RepairReport::default();
    let mut usage = Vec::new();
    for r in responses {
        match r {
            Response::ListShards { shards: s } => shards.extend(s),
            Response::Repair(r) => report.add(r),
            Response::Usage { report } => usage.push(report),
            other => return other,
        }
    }
    match request {
        Request::Repair { .. } => Response::Repair(report),
        Request::Usage { .. } => crate::usage::merge_reports(state, &usage),
        _ => Response::ListShards { shards },
    }
}

async fn list_all(state: &CoreState, router: &Router, payload: &[u8]) -> Response {
    let mut all = match serve_local(state, &Request::ListStreams, false).await {
        Response::ListStreams { streams } => streams,
        other => return other,
    };
    for core in (0..router.cores).filter(|&c| c != router.core) {
        match router.forward(core, payload.to_vec()).await {
            Response::ListStreams { streams } => all.extend(streams),
            other => return other,
        }
    }
    all.sort();
    all.dedup();
    Response::ListStreams { streams: all }
}
