//! Node-to-node connections: one pipelined connection per (core, peer).
//!
//! Each core talks to each other node over its own TCP connection (no state
//! shared across cores). A call writes one request frame and waits for the
//! response with the same request id; a reader task matches responses to
//! callers, so many calls share the connection at once. A connection that
//! fails every call waiting on it; the next call reconnects, except
//! within `RETRY_AFTER` of a connect that timed out, when calls fail at once
//! so an unresponsive peer costs nothing but an error.
//!
//! A peer that let a call time out is *suspect* for `SUSPECT_TIMEOUTS` times
//! that timeout (or until it answers any call): [`Peer::recently_failed`] says so, and
//! reads, which can be served elsewhere, skip it instead of waiting out the
//! timeout again on every request. Calls themselves still go out, so the
//! replication heartbeats keep probing it.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use flatbuffers::FlatBufferBuilder;
use futures::channel::oneshot;
use futures_lite::io::{AsyncReadExt, AsyncWriteExt, WriteHalf};
use glommio::net::TcpStream;
use glommio::sync::Semaphore;

use ddc_auth::account::{Account, Keypair};
use ddc_auth::handshake::{ClientHandshake, Session};
use ddc_cluster::membership::NodeId;
use ddc_formats::client::RESPONSE_BYTES_MAX;
use ddc_formats::frame::{encode_frame_into, FrameHeader, FRAME_HEADER_BYTES};
use ddc_formats::message::{decode_response, encode_request_frame_envelope, Request, Response};
use ddc_formats::session::{open_payload, seal_frame};

/// After a connect timed out, calls fail without trying again for this long.
const RETRY_AFTER: Duration = Duration::from_millis(500);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// After a call timed out, the peer is suspect for this many times that
/// timeout. More than two: a read that waited out one timeout on this peer
/// and then another on the next replica (which was itself waiting on this
/// peer) must still find it suspect when it turns to the shard holders.
const SUSPECT_TIMEOUTS: u32 = 3;

/// Why a call to a peer got no response.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PeerError {
    #[error("node {node} at {address} is unreachable: {reason}")]
    Unreachable { node: String, address: SocketAddr, reason: String },
    #[error("node {node} at {address} did not answer within {timeout:?}")]
    Timeout { node: String, address: SocketAddr, timeout: Duration },
}

struct Conn {
    writer: RefCell<Option<WriteHalf<TcpStream>>>,
    write_lock: Semaphore,
    pending: RefCell<HashMap<u64, oneshot::Sender<Response>>>,
    dead: Cell<bool>,
    reason: RefCell<String>,
    /// The authenticated session, when the node runs with `auth.required`.
    session: RefCell<Option<Session>>,
}

/// One peer as seen from one core.
pub struct Peer {
    pub id: NodeId,
    pub address: SocketAddr,
    conn: RefCell<Option<Rc<Conn>>>,
    connect_lock: Semaphore,
    failed_at: RefCell<Option<(Instant, String)>>,
    /// Set when a call timed out: until then, [`Peer::recently_failed`] is true.
    suspect_until: Cell<Option<Instant>>,
    next_id: Cell<u64>,
    fbb: RefCell<FlatBufferBuilder<'static>>,
    /// This node's key, to authenticate to the peer (None: plain connections).
    identity: Option<Rc<Keypair>>,
}

impl Peer {
    pub fn new(id: NodeId, address: SocketAddr, identity: Option<Rc<Keypair>>) -> Rc<Peer> {
        Rc::new(Peer {
            id,
            address,
            conn: RefCell::new(None),
            connect_lock: Semaphore::new(1),
            failed_at: RefCell::new(None),
            suspect_until: Cell::new(None),
            next_id: Cell::new(1),
            fbb: RefCell::new(FlatBufferBuilder::new()),
            identity,
        })
    }

    fn unreachable(&self, reason: impl Into<String>) -> PeerError {
        PeerError::Unreachable { node: self.id.short(), address: self.address, reason: reason.into() }
    }

    /// True if the last attempt to reach the peer failed recently, or a call
    /// to it timed out less than `SUSPECT_TIMEOUTS` of that call's timeouts
    /// ago and it has not answered since.
    pub fn recently_failed(&self) -> bool {
        matches!(&*self.failed_at.borrow(), Some((at, _)) if at.elapsed() < RETRY_AFTER)
            || self.suspect_until.get().is_some_and(|until| Instant::now() < until)
    }

    async fn connection(&self) -> Result<Rc<Conn>, PeerError> {
        if let Some(c) = self.conn.borrow().as_ref().filter(|c| !c.dead.get()) {
            return Ok(c.clone());
        }
        let _guard = self.connect_lock.acquire_permit(1).await.map_err(|_| self.unreachable("shutting down"))?;
        if let Some(c) = self.conn.borrow().as_ref().filter(|c| !c.dead.get()) {
            return Ok(c.clone());
        }
        if let Some((at, reason)) = self.failed_at.borrow().clone() {
            if at.elapsed() < RETRY_AFTER {
                return Err(self.unreachable(reason));
            }
        }
        let connect = async { TcpStream::connect(self.address).await.map_err(|e| (e.to_string(), false)) };
        let deadline = async {
            glommio::timer::sleep(CONNECT_TIMEOUT).await;
            Err((format!("connect timed out after {CONNECT_TIMEOUT:?}"), true))
        };
        let stream = match futures_lite::future::or(connect, deadline).await {
            Ok(s) => s,
            Err((reason, slow)) => {
                // Only slow failures (timeouts) are remembered: a refused
                // connect costs nothing to retry, and the peer may be back.
                if slow {
                    *self.failed_at.borrow_mut() = Some((Instant::now(), reason.clone()));
                }
                return Err(self.unreachable(reason));
            }
        };
        self.failed_at.borrow_mut().take();
        let _ = stream.set_nodelay(true);
        let (mut reader, mut writer) = futures_lite::io::split(stream);
        let session = match &self.identity {
            Some(me) => Some(self.authenticate(me, &mut reader, &mut writer).await?),
            None => None,
        };
        let conn = Rc::new(Conn {
            writer: RefCell::new(Some(writer)),
            write_lock: Semaphore::new(1),
            pending: RefCell::new(HashMap::new()),
            dead: Cell::new(false),
            reason: RefCell::new(String::new()),
            session: RefCell::new(session),
        });
        glommio::spawn_local(read_responses(reader, conn.clone())).detach();
        *self.conn.borrow_mut() = Some(conn.clone());
        Ok(conn)
    }

    /// Run the client side of the handshake (docs/SECURITY.md), expecting the peer's own key.
    async fn authenticate(
        &self,
        me: &Keypair,
        reader: &mut futures_lite::io::ReadHalf<TcpStream>,
        writer: &mut WriteHalf<TcpStream>,
    ) -> Result<Session, PeerError> {
        let work = async {
            let (pending, hello) = ClientHandshake::start();
            let mut frame = Vec::new();
            encode_frame_into(&hello, &mut frame);
            writer.write_all(&frame).await.map_err(|e| e.to_string())?;
            writer.flush().await.map_err(|e| e.to_string())?;
            let mut header = [0u8; FRAME_HEADER_BYTES];
            reader.read_exact(&mut header).await.map_err(|e| e.to_string())?;
            let parsed = FrameHeader::decode(&header, RESPONSE_BYTES_MAX).map_err(|e| e.to_string())?;
            let mut payload = vec![0u8; parsed.payload_len as usize];
            reader.read_exact(&mut payload).await.map_err(|e| e.to_string())?;
            parsed.verify_payload(&header, &payload).map_err(|e| e.to_string())?;
            if let Ok((_, Response::Error { message, .. })) = decode_response(&payload) {
                return Err(format!("refused the handshake: {message}"));
            }
            let expected = Account(self.id.0);
            let (auth, _, session) = pending.finish(&payload, me, Some(&expected)).map_err(|e| e.to_string())?;
            frame.clear();
            encode_frame_into(&auth, &mut frame);
            writer.write_all(&frame).await.map_err(|e| e.to_string())?;
            writer.flush().await.map_err(|e| e.to_string())?;
            Ok(session)
        };
        let deadline = async {
            glommio::timer::sleep(CONNECT_TIMEOUT).await;
            Err(format!("handshake not done within {CONNECT_TIMEOUT:?}"))
        };
        futures_lite::future::or(work, deadline).await.map_err(|reason| self.unreachable(reason))
    }

    /// Send `request` and wait up to `timeout` for its response. `forwarded`
    /// marks a client request passed on to the node that serves it.
    pub async fn call(&self, request: &Request<'_>, forwarded: bool, timeout: Duration) -> Result<Response, PeerError> {
        let conn = self.connection().await?;
        let id = self.next_id.get();
        self.next_id.set(id + 1);
        let mut frame = Vec::new();
        encode_request_frame_envelope(&mut self.fbb.borrow_mut(), id, forwarded, request, &mut frame);
        let (tx, rx) = oneshot::channel();
        conn.pending.borrow_mut().insert(id, tx);
        let written = {
            let _lock = conn.write_lock.acquire_permit(1).await.map_err(|_| self.unreachable("shutting down"))?;
            // Tags follow the order frames are written in, so they are made under the lock.
            if let Some(session) = conn.session.borrow_mut().as_mut() {
                seal_frame(session, &mut frame, 0);
            }
            let writer = conn.writer.borrow_mut().take();
            match writer {
                Some(mut w) => {
                    let r = async {
                        w.write_all(&frame).await?;
                        w.flush().await
                    }
                    .await;
                    *conn.writer.borrow_mut() = Some(w);
                    r.map_err(|e| e.to_string())
                }
                None => Err("connection closed".to_owned()),
            }
        };
        tracing::trace!(peer = %self.address, id, ok = written.is_ok(), "request written");
        if let Err(reason) = written {
            conn.pending.borrow_mut().remove(&id);
            kill(&conn, &reason);
            return Err(self.unreachable(reason));
        }
        let deadline = async {
            glommio::timer::sleep(timeout).await;
            None
        };
        match futures_lite::future::or(async { Some(rx.await) }, deadline).await {
            Some(Ok(response)) => {
                self.suspect_until.set(None);
                Ok(response)
            }
            Some(Err(_)) => Err(self.unreachable(conn.reason.borrow().clone())),
            None => {
                conn.pending.borrow_mut().remove(&id);
                self.suspect_until.set(Some(Instant::now() + timeout * SUSPECT_TIMEOUTS));
                Err(PeerError::Timeout { node: self.id.short(), address: self.address, timeout })
            }
        }
    }
}

fn kill(conn: &Conn, reason: &str) {
    if !conn.dead.replace(true) {
        *conn.reason.borrow_mut() = reason.to_owned();
    }
    // Dropping the senders wakes every waiting caller with an error.
    conn.pending.borrow_mut().clear();
    conn.writer.borrow_mut().take();
}

async fn read_responses(mut reader: futures_lite::io::ReadHalf<TcpStream>, conn: Rc<Conn>) {
    let mut header = [0u8; FRAME_HEADER_BYTES];
    let reason = loop {
        if conn.dead.get() {
            break "connection closed".to_owned();
        }
        if let Err(e) = reader.read_exact(&mut header).await {
            break format!("connection lost: {e}");
        }
        let parsed = match FrameHeader::decode(&header, RESPONSE_BYTES_MAX) {
            Ok(h) => h,
            Err(e) => break format!("bad response frame: {e}"),
        };
        let mut payload = vec![0u8; parsed.payload_len as usize];
        if let Err(e) = reader.read_exact(&mut payload).await {
            break format!("connection lost: {e}");
        }
        if let Err(e) = parsed.verify_payload(&header, &payload) {
            break format!("bad response frame: {e}");
        }
        if let Some(session) = conn.session.borrow_mut().as_mut() {
            if let Err(e) = open_payload(session, &mut payload) {
                break format!("response failed its session tag: {e}");
            }
        }
        match decode_response(&payload) {
            Ok((id, response)) => {
                if let Some(tx) = conn.pending.borrow_mut().remove(&id) {
                    let _ = tx.send(response);
                }
            }
            Err(e) => break format!("undecodable response: {e}"),
        }
    };
    tracing::debug!(%reason, "peer connection closed");
    kill(&conn, &reason);
}

/// This core's connections to every other member.
pub struct Peers {
    peers: HashMap<NodeId, Rc<Peer>>,
}

impl Peers {
    pub fn new(members: impl IntoIterator<Item = (NodeId, SocketAddr)>, identity: Option<Rc<Keypair>>) -> Peers {
        Peers { peers: members.into_iter().map(|(id, addr)| (id, Peer::new(id, addr, identity.clone()))).collect() }
    }

    pub fn get(&self, id: &NodeId) -> Option<Rc<Peer>> {
        self.peers.get(id).cloned()
    }

    pub fn all(&self) -> impl Iterator<Item = &Rc<Peer>> {
        self.peers.values()
    }
}
